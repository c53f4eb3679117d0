//! The transport key card flow and key wrapping at the HSM layer, against real SoftHSM2 tokens:
//! a ministry token issues a card (security officer, trusted transport key, RSA-OAEP to the
//! card), a province token loads it, and a sub-key crosses wrapped with its MAC agreeing.
//!
//! A single test: it points SoftHSM2 at its token folder through the process environment.

mod support;

use std::time::Duration;

use hkms::hierarchy::{Algorithm, Factor, Region, Usage};
use hkms::hsm::transport::CardToken;
use hkms::hsm::{Hsm, HsmConfig, Lifetime, PinSource, SecretKeySpec, TokenLocator};
use secrecy::SecretString;
use support::{SO_PIN, USER_PIN, make_token};

fn open(token: &support::Token, label: &str) -> Hsm {
    Hsm::open(&HsmConfig {
        module: token.module.clone(),
        locator: TokenLocator::by_label(label),
        pin: PinSource::File(token.pin_file.clone()),
        sessions: 2,
        session_wait: Duration::from_secs(5),
    })
    .expect("open token")
}

fn spec(label: &str, exportable: bool) -> SecretKeySpec {
    SecretKeySpec {
        algorithm: Algorithm::Aes128,
        usage: Usage::Derive,
        exportable,
        label: label.into(),
        id: label.as_bytes().to_vec(),
        lifetime: Lifetime::Token,
    }
}

#[test]
fn a_card_carries_a_transport_key_and_a_sub_key_crosses_wrapped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let softhsm = dir.path().join("softhsm");
    let ministry_token = make_token(&softhsm, "ministry");
    make_token(&softhsm, "province");
    make_token(&softhsm, "card-440000");
    // SAFETY: the only test of this binary; set before anything loads the module.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &ministry_token.conf) };

    let ministry = open(&ministry_token, "ministry");
    let province = open(&ministry_token, "province");
    let user_pin = SecretString::from(USER_PIN);
    let so_pin = SecretString::from(SO_PIN);
    let card = CardToken::open(
        &ministry_token.module,
        &TokenLocator::by_label("card-440000"),
        &user_pin,
    )
    .expect("card");

    let (at_ministry, on_card) = ministry
        .issue_transport_key(&so_pin, &card, "card-0001")
        .expect("issue");
    assert_eq!(at_ministry, on_card);
    let (at_province, on_card2) = province
        .load_transport_key(&card, "card-0001")
        .expect("load");
    assert_eq!(at_province, at_ministry);
    assert_eq!(on_card2, on_card);

    // A wrong SO PIN is refused, and the node keeps working as the user afterwards.
    let err = ministry
        .issue_transport_key(&SecretString::from("wrong-so-pin"), &card, "card-0002")
        .expect_err("wrong SO PIN");
    assert!(err.to_string().contains("security officer PIN"), "{err}");
    ministry
        .generate_key(&spec("hkms/root", false))
        .expect("user session still works");

    // An exportable provincial sub-key, wrapped for the province.
    let factor = Factor::from_region(&Region::parse("440000").expect("region"));
    let kcv = ministry
        .derive_key(
            "hkms/root",
            Algorithm::Aes128,
            &factor,
            &spec("hkms/gd", true),
        )
        .expect("derive");
    let wrapped = ministry
        .wrap_for_transport("card-0001", "hkms/gd")
        .expect("wrap");
    let header = b"header bytes of a package";
    let mac = ministry
        .package_mac("card-0001", &[header.as_slice(), &wrapped].concat())
        .expect("mac");
    assert_eq!(mac.len(), 16);
    let mac_at_province = province
        .package_mac("card-0001", &[header.as_slice(), &wrapped].concat())
        .expect("mac at province");
    assert_eq!(mac, mac_at_province, "both ends derive the same MAC key");
    let imported = province
        .unwrap_from_transport("card-0001", &wrapped, &spec("hkms/gd-imported", false))
        .expect("unwrap");
    assert_eq!(imported, kcv, "the province holds the same key");

    // A non-exportable key cannot be wrapped, and the province cannot wrap at all.
    assert!(
        ministry
            .wrap_for_transport("card-0001", "hkms/root")
            .is_err()
    );
    assert!(
        province
            .wrap_for_transport("card-0001", "hkms/gd-imported")
            .is_err()
    );

    // Every key on both tokens still follows the attribute rules.
    for hsm in [&ministry, &province] {
        for o in hsm.object_facts().expect("facts") {
            let v = hkms::hsm::attribute_audit::check(&o);
            assert!(v.is_empty(), "{v:?}");
        }
    }
}
