//! Known answers for key packages (docs/key-package.md): from a fixed transport key and a fixed
//! sub-key, the RFC 5649 wrap, the package MAC key derivation and MAC, and one whole package
//! (the worked example's header of §4) are computed here in software with RustCrypto (`aes`,
//! `cmac`; RFC 5649 written out below, checked against the RFC's own vectors) and written down
//! as hex. The same keys are planted on SoftHSM2 tokens, and what hkms makes there must be
//! byte for byte the same:
//!
//! - the issuer's token wraps the sub-key under its trusted copy of the transport key
//!   (`wrap_for_transport`);
//! - a card carries the transport key to the recipient's token (`load_transport_key`), which
//!   derives the package MAC key itself, MACs the package bytes (`package_mac`) and unwraps
//!   the software-made package's key to the sub-key's KCV (`unwrap_from_transport`);
//! - hkms's encoder (`Package::header_bytes`, `signed_bytes`, `encode`, as the node's
//!   `seal_package` uses them) gives the software package's bytes, 478 of them as §4 says.
//!
//! A single test: it points SoftHSM2 at its token folder through the process environment.

mod support;

use cipher::{Array, BlockCipherEncrypt, KeyInit};
use cmac::{Cmac, Mac};
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use cryptoki::session::UserType;
use hkms::hierarchy::{Algorithm, Usage};
use hkms::hsm::mechanisms::{
    AES_CMAC, AES_KEY_WRAP_PAD, MechanismNumber, allowed_mechanisms_attribute,
};
use hkms::hsm::transport::{CardToken, PackageKeys, transport_label};
use hkms::hsm::{Lifetime, SecretKeySpec, TokenLocator};
use hkms::transport::{Package, PackageHeader};
use secrecy::SecretString;
use support::{SO_PIN, USER_PIN, aes_kcv, make_token, slot_of};

/// The transport key (AES-256) and the sub-key (AES-128) of this vector.
const TRANSPORT_KEY: &str = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F";
const SUB_KEY: &str = "00112233445566778899AABBCCDDEEFF";
const CARD_ID: &str = "card-440000-0123456789ab";
/// The header of docs/key-package.md §4, as written there.
const HEADER: &str = r#"{"package_id":"p-6f1c0e2a9b4d4e7f8a3b5c2d1e0f9a8b","key_type":"card-master","algorithm":"aes128","usage":"derive","kcv":"422347","kcv_method":"aes-cmac","parent_kcv":"53E107","issuer_node":"ministry","issuer_region":"000000","source_key_id":"k-3a7d2c9e5b8f4a1d9c6e0b2f7a4d8c1e","recipient_region":"440000","card_id":"card-440000-0123456789ab","version":1,"created_at":"2026-11-25T09:00:00Z","not_after":"2026-12-25T09:00:00Z"}"#;
/// The package MAC key, the wrapped sub-key and the MAC of the package: written down once from
/// the software computation below. K_MAC and WRAPPED agree with openssl
/// (`enc -aes-256-ecb -nopad` and `enc -id-aes256-wrap-pad -iv A65959A6`).
const K_MAC: &str = "73FF72CBF3F1E7B639E1D442DD4D3244";
const WRAPPED: &str = "AFC860015FFE2D75BEDF43C444FE58F4AD9D89C4EC71E23B";
const MAC: &str = "0C73B6433744248BDE75D6AE4CC6AE39";

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

/// One AES block encryption with a key of 16, 24 or 32 bytes.
fn aes_block(key: &[u8], block: [u8; 16]) -> [u8; 16] {
    fn with<C: KeyInit + BlockCipherEncrypt>(key: &[u8], block: [u8; 16]) -> [u8; 16] {
        let c = C::new_from_slice(key).expect("aes key");
        let mut b = Array::try_from(&block[..]).expect("16 bytes");
        c.encrypt_block(&mut b);
        b.as_slice().try_into().expect("16 bytes")
    }
    match key.len() {
        16 => with::<aes::Aes128>(key, block),
        24 => with::<aes::Aes192>(key, block),
        32 => with::<aes::Aes256>(key, block),
        n => panic!("no AES key of {n} bytes"),
    }
}

/// RFC 5649 (AES key wrap with padding): the alternative IV A65959A6 || 32-bit length, the key
/// padded with zeros to 8-byte blocks, then one AES block (one block of key) or RFC 3394's
/// six rounds.
fn rfc5649_wrap(kek: &[u8], key: &[u8]) -> Vec<u8> {
    let mut a = [0xA6, 0x59, 0x59, 0xA6, 0, 0, 0, 0];
    a[4..].copy_from_slice(&u32::try_from(key.len()).expect("length").to_be_bytes());
    let mut padded = key.to_vec();
    padded.resize(key.len().div_ceil(8) * 8, 0);
    let mut r: Vec<[u8; 8]> = padded
        .chunks(8)
        .map(|c| c.try_into().expect("8 bytes"))
        .collect();
    if r.len() == 1 {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&a);
        b[8..].copy_from_slice(&r[0]);
        return aes_block(kek, b).to_vec();
    }
    let n = r.len() as u64;
    for j in 0..6u64 {
        for (i, ri) in r.iter_mut().enumerate() {
            let mut b = [0u8; 16];
            b[..8].copy_from_slice(&a);
            b[8..].copy_from_slice(ri);
            let b = aes_block(kek, b);
            let t = n * j + i as u64 + 1;
            a = (u64::from_be_bytes(b[..8].try_into().expect("8")) ^ t).to_be_bytes();
            ri.copy_from_slice(&b[8..]);
        }
    }
    let mut out = a.to_vec();
    for ri in r {
        out.extend_from_slice(&ri);
    }
    out
}

/// docs/key-package.md §2: K_mac = AES-256-ECB(K_transport, "hkms-pkg-mac-v1.").
fn package_mac_key(transport: &[u8]) -> [u8; 16] {
    aes_block(transport, *b"hkms-pkg-mac-v1.")
}

fn cmac_aes128(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = <Cmac<aes::Aes128> as KeyInit>::new_from_slice(key).expect("cmac key");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn kcv_aes256(key: &[u8]) -> String {
    let mut mac = <Cmac<aes::Aes256> as KeyInit>::new_from_slice(key).expect("cmac key");
    mac.update(&[0u8; 16]);
    hex::encode_upper(&mac.finalize().into_bytes()[..3])
}

/// docs/key-package.md §1: magic, version, H, header, W, wrapped key, then the MAC over all
/// of that.
fn software_package(header: &[u8], wrapped: &[u8], mac_key: &[u8]) -> Vec<u8> {
    let mut out = b"HKMSPKG\x01".to_vec();
    out.extend_from_slice(&u16::try_from(header.len()).expect("H").to_be_bytes());
    out.extend_from_slice(header);
    out.extend_from_slice(&u16::try_from(wrapped.len()).expect("W").to_be_bytes());
    out.extend_from_slice(wrapped);
    let mac = cmac_aes128(mac_key, &out);
    out.extend_from_slice(&mac);
    out
}

/// Plants the fixed keys: the sub-key (exportable, hkms's template) and the issuer's trusted
/// copy of the transport key on the ministry's token, and the card's copy on the card, with
/// the attributes hkms gives them when it makes them itself.
fn plant(token: &support::Token, transport: &[u8], sub_key: &[u8], sub_label: &str) {
    let pkcs11 = support::init_pkcs11(token);
    let user = SecretString::from(USER_PIN);
    let so = SecretString::from(SO_PIN);
    let label = transport_label(CARD_ID);
    let mechanisms = |extra: &[MechanismNumber]| {
        let mut m = extra.to_vec();
        m.push(AES_CMAC);
        allowed_mechanisms_attribute(&m)
    };

    let ministry = pkcs11
        .open_rw_session(slot_of(&pkcs11, "ministry"))
        .expect("session");
    ministry.login(UserType::User, Some(&user)).expect("login");
    let mut t = hkms::hsm::templates::secret_key_template(&SecretKeySpec {
        algorithm: Algorithm::Aes128,
        usage: Usage::Derive,
        exportable: true,
        label: sub_label.into(),
        id: sub_label.as_bytes().to_vec(),
        lifetime: Lifetime::Token,
    });
    t.retain(|a| !matches!(a, Attribute::ValueLen(_)));
    t.push(Attribute::Value(sub_key.to_vec()));
    ministry.create_object(&t).expect("plant the sub-key");
    ministry.logout().expect("logout");
    // Only the security officer can make a key CKA_TRUSTED (the issuer's copy is public).
    ministry.login(UserType::So, Some(&so)).expect("SO login");
    ministry
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(transport.to_vec()),
            Attribute::Token(true),
            Attribute::Private(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::WrapWithTrusted(true),
            Attribute::Wrap(true),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
            Attribute::Verify(false),
            Attribute::Trusted(true),
            Attribute::Modifiable(false),
            Attribute::Label(label.as_bytes().to_vec()),
            Attribute::Id(CARD_ID.as_bytes().to_vec()),
            mechanisms(&[AES_KEY_WRAP_PAD]),
        ])
        .expect("plant the issuer's transport key");
    ministry.logout().expect("logout");

    let card = pkcs11
        .open_rw_session(slot_of(&pkcs11, "card-440000"))
        .expect("card session");
    card.login(UserType::User, Some(&user)).expect("card login");
    card.create_object(&[
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Value(transport.to_vec()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(true),
        Attribute::WrapWithTrusted(true),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Sign(true),
        mechanisms(&[]),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(CARD_ID.as_bytes().to_vec()),
    ])
    .expect("plant the card's transport key");
}

#[test]
fn packages_made_by_hkms_on_softhsm2_equal_the_software_known_answers() {
    let transport = unhex(TRANSPORT_KEY);
    let sub_key = unhex(SUB_KEY);

    // The software side first agrees with RFC 5649 §6's own vectors (192-bit KEK).
    let kek = unhex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8");
    assert_eq!(
        hex::encode(rfc5649_wrap(
            &kek,
            &unhex("c37b7e6492584340bed12207808941155068f738")
        )),
        "138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a"
    );
    assert_eq!(
        hex::encode(rfc5649_wrap(&kek, &unhex("466f7250617369"))),
        "afbeb0f07dfbf5419200f2ccb50bb24f"
    );

    // The known answers, in software.
    let k_mac = package_mac_key(&transport);
    let wrapped = rfc5649_wrap(&transport, &sub_key);
    let package = software_package(HEADER.as_bytes(), &wrapped, &k_mac);
    let mac = &package[package.len() - 16..];
    assert_eq!(hex::encode_upper(k_mac), K_MAC);
    assert_eq!(hex::encode_upper(&wrapped), WRAPPED);
    assert_eq!(hex::encode_upper(mac), MAC);
    assert_eq!(wrapped.len(), 24);
    assert_eq!(package.len(), 478);
    assert_eq!(&package[8..10], &[0x01, 0xAA]);

    // The same keys on SoftHSM2 tokens.
    let dir = tempfile::tempdir().expect("tempdir");
    let softhsm = dir.path().join("softhsm");
    let ministry_token = make_token(&softhsm, "ministry");
    make_token(&softhsm, "province");
    make_token(&softhsm, "card-440000");
    let sub_label = "hkms/kat-sub-key";
    plant(&ministry_token, &transport, &sub_key, sub_label);
    let ministry = support::open_token(&ministry_token, "ministry");
    let province = support::open_token(&ministry_token, "province");
    let card = CardToken::open(
        &ministry_token.module,
        &TokenLocator::by_label("card-440000"),
        &SecretString::from(USER_PIN),
    )
    .expect("card");

    // The wrap (issuer).
    let hkms_wrapped = ministry
        .wrap_for_transport(CARD_ID, sub_label)
        .expect("wrap");
    assert_eq!(hex::encode_upper(&hkms_wrapped), WRAPPED);

    // The card carries the transport key; the recipient derives its own MAC key.
    let (mine, theirs) = province
        .load_transport_key(
            &card,
            &SecretString::from(SO_PIN),
            CARD_ID,
            PackageKeys::SubKeys,
        )
        .expect("load the card");
    assert_eq!(hex::encode_upper(mine.value), kcv_aes256(&transport));
    assert_eq!(mine, theirs);

    // The whole package as the node seals it: hkms's encoder, the HSM's wrap and MAC.
    let header: PackageHeader = serde_json::from_str(HEADER).expect("header");
    let header_bytes = Package::header_bytes(&header).expect("header bytes");
    assert_eq!(header_bytes, HEADER.as_bytes());
    let signed = Package::signed_bytes(&header_bytes, &hkms_wrapped).expect("signed bytes");
    assert_eq!(signed, package[..package.len() - 16]);
    let hkms_mac = province.package_mac(CARD_ID, &signed).expect("mac");
    assert_eq!(hex::encode_upper(&hkms_mac), MAC);
    let made = Package {
        header: header.clone(),
        header_bytes,
        wrapped: hkms_wrapped,
        mac: hkms_mac.try_into().expect("16 bytes"),
    }
    .encode()
    .expect("encode");
    assert_eq!(made, package);

    // And the recipient opens the software-made package to the sub-key.
    let decoded = Package::decode(&package).expect("decode");
    assert_eq!(decoded.header, header);
    assert_eq!(decoded.wrapped, wrapped);
    let kcv = province
        .unwrap_from_transport(
            CARD_ID,
            &decoded.wrapped,
            &SecretKeySpec {
                algorithm: Algorithm::Aes128,
                usage: Usage::Derive,
                exportable: false,
                label: "hkms/kat-imported".into(),
                id: b"kat-imported".to_vec(),
                lifetime: Lifetime::Token,
            },
        )
        .expect("unwrap");
    assert_eq!(hex::encode_upper(kcv.value), aes_kcv(&sub_key));
}
