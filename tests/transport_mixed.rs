//! Transport between two PKCS#11 implementations: a ministry on SoftHSM2 issues Guangdong's
//! transport key card (a SoftHSM2 token) and sends Guangdong's sub-key to a province on
//! Kryoptic, which loads the card, imports the package and diversifies for Guangzhou; the KCVs
//! equal the software computation from the known national key. The way back, the province
//! issuing Guangzhou's card, is refused naming the province's token and what it lacks:
//! Kryoptic lets no one mark a key `CKA_TRUSTED`, and a transport key travels only under a
//! trusted key (docs/tokens.md).
//!
//! Needs Kryoptic built (`kryoptic-setup/install.sh`; `scripts/test` runs it), and fails saying
//! so without it, unless `HKMS_SKIP_KRYOPTIC_TESTS=1`. A single test: it plants the known
//! national key through the process environment.

mod support;

use hkms::proto::{self, transport_service_client::TransportServiceClient};
use hkms::store::SqliteStore;
use support::transport::{approve_card, export, import, issue, load};
use support::{
    PlantSpot, TestNode, TokenKind, USER_PIN, aes_child, aes_kcv, derive_as, make_token_of,
    node_config, stdout, with_so_pin,
};
use tonic::Code;

const GD_SYSTEM: &str = "hkms://system/provincial/440000/gd-kms";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_softhsm2_ministry_sends_a_sub_key_to_a_kryoptic_province() {
    if support::kryoptic_skipped() {
        return;
    }
    let root = hex::decode("00112233445566778899AABBCCDDEEFF").expect("hex");
    let gd_value = aes_child(&root, "440000");
    let gz_value = aes_child(&gd_value, "440100");

    let tokens = tempfile::tempdir().expect("tempdir");
    let softhsm = tokens.path().join("softhsm");
    let t_ministry = make_token_of(TokenKind::SoftHsm2, &softhsm, "ministry");
    let card_gd = make_token_of(TokenKind::SoftHsm2, &softhsm, "card-gd");
    make_token_of(TokenKind::SoftHsm2, &softhsm, "card-gz");
    let t_gd = make_token_of(
        TokenKind::Kryoptic,
        &tokens.path().join("kryoptic"),
        "guangdong",
    );
    let pkcs11 = support::init_pkcs11(&t_ministry);

    // The ministry, on SoftHSM2, with the known national key planted.
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("data/registry.sqlite")).expect("store");
    let at = PlantSpot {
        pkcs11: &pkcs11,
        token: &t_ministry.label,
        store: &store,
        region: "000000",
    };
    let root_id = support::plant_aes(&at, "card-master", &root).to_string();
    drop(store);
    let config = dir.path().join("node.toml");
    let text = with_so_pin(
        node_config("000000", "national", "000000", &t_ministry),
        &t_ministry,
    );
    std::fs::write(&config, text).expect("config");
    let ministry = TestNode::start_in(dir, t_ministry.clone(), config);

    // Guangdong, on Kryoptic; its transport key cards are SoftHSM2 tokens, so the node's
    // environment reaches both implementations.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("node.toml");
    let text = with_so_pin(node_config("440000", "provincial", "440000", &t_gd), &t_gd)
        + &format!(
            "\n[transport]\ncard_module = \"{}\"\n",
            card_gd.module.display()
        );
    std::fs::write(&config, text).expect("config");
    let mut gd_env = t_gd.clone();
    gd_env.env.extend(card_gd.env.iter().cloned());
    let mut guangdong = TestNode::start_in(dir, gd_env, config);

    // SoftHSM2 → Kryoptic: the card, the sub-key's package, the import.
    let gd_card = issue(&ministry, "440000", "card-gd").await;
    let gd_key = derive_as(&ministry, &ministry.officer, &root_id, "440000").await;
    assert_eq!(gd_key.kcv, aes_kcv(&gd_value));
    let package = export(&ministry, &gd_key.id, "440000").await;
    let loaded = load(&guangdong, GD_SYSTEM, "card-gd", &gd_card).await;
    assert_eq!(loaded.kcv, gd_card.kcv, "the card's KCV on Kryoptic");
    let imported = import(&guangdong, GD_SYSTEM, package)
        .await
        .expect("Guangdong imports on Kryoptic");
    assert_eq!(
        (imported.kcv.as_str(), imported.tier()),
        (gd_key.kcv.as_str(), proto::Tier::Provincial)
    );
    // Kryoptic diversifies the imported key as SoftHSM2 would.
    let gz_key = derive_as(&guangdong, GD_SYSTEM, &imported.id, "440100").await;
    assert_eq!(gz_key.kcv, aes_kcv(&gz_value));

    // A holder of Guangdong's user PIN, beside the node, cannot get the imported key's children
    // in clear (Kryoptic applies the derive template hkms set on the key), nor widen or copy it.
    cannot_get_children_out(&t_gd, &imported.id);

    // Kryoptic → onward: issuing Guangzhou's card is refused, naming the token and what it
    // lacks, and leaves no card behind.
    let ceremony = approve_card(&guangdong, "440100").await;
    let refused = TransportServiceClient::new(guangdong.channel().await)
        .issue_card(proto::IssueCardRequest {
            region: "440100".into(),
            card_label: "card-gz".into(),
            card_pin: USER_PIN.into(),
            ceremony_id: ceremony,
            ..Default::default()
        })
        .await
        .expect_err("a Kryoptic node cannot issue a card");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains(
            "token \"guangdong\" (Kryoptic Project v1) does not offer CKA_TRUSTED set by its \
             security officer on a wrapping key (issuing a transport key card needs it)"
        ),
        "{}",
        refused.message()
    );
    let cards = TransportServiceClient::new(guangdong.channel().await)
        .list_transport_keys(proto::ListTransportKeysRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("list cards")
        .into_inner()
        .transport_keys;
    assert_eq!(
        cards.iter().map(|c| c.card_id.as_str()).collect::<Vec<_>>(),
        [gd_card.card_id.as_str()],
        "only the loaded card"
    );

    // What Kryoptic holds follows hkms's attribute rules, and matches the registry.
    guangdong.stop();
    let out = guangdong.cli(&["token", "audit"]);
    let text = stdout(&out) + &support::stderr(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(": 0 violations"), "{text}");
    let out = guangdong.cli(&["keys", "orphans"]);
    assert!(out.status.success(), "{}", stdout(&out));
}

/// Attacks 1 and 3 of issue 17 on the imported key `id`, with a raw PKCS#11 session on the
/// Kryoptic token: derive a readable child; set or copy with other attributes. Each must fail.
fn cannot_get_children_out(token: &support::Token, id: &str) {
    use cryptoki::object::{Attribute, KeyType, ObjectClass};
    for (name, value) in &token.env {
        // SAFETY: the only test of this binary; the module reads it at its C_Initialize, next.
        unsafe { std::env::set_var(name, value) };
    }
    let pkcs11 = cryptoki::context::Pkcs11::new(&token.module).expect("Kryoptic");
    pkcs11
        .initialize(cryptoki::context::CInitializeArgs::new(
            cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
        ))
        .expect("init");
    let session = support::user_session(&pkcs11, &token.label);
    let label = hkms::hierarchy::KeyId::parse(id).expect("id").ck_label();
    let [key] = session
        .find_objects(&[Attribute::Label(label.into_bytes())])
        .expect("find")[..]
    else {
        panic!("one imported key");
    };
    let raw = hkms::hsm::raw::RawModule::load(&token.module).expect("raw");
    let child = raw.derive_encrypt_data(
        session.handle(),
        hkms::hsm::mechanisms::AES_ECB_ENCRYPT_DATA,
        key.handle(),
        &[0x44; 16],
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
            Attribute::ValueLen(16.into()),
        ],
        &[],
    );
    assert!(child.is_err(), "a readable child was derived: {child:?}");
    for change in [Attribute::Encrypt(true), Attribute::Derive(false)] {
        assert!(
            session
                .update_attributes(key, std::slice::from_ref(&change))
                .is_err(),
            "{change:?} was set"
        );
        assert!(
            session
                .copy_object(key, std::slice::from_ref(&change))
                .is_err(),
            "a copy with {change:?} was made"
        );
    }
}
