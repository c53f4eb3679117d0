//! The HSM boundary tried as an attacker on a node's host would: with the token's user PIN (it
//! sits in a file there) or with no login at all, and a plain PKCS#11 program beside the
//! running nodes, after a ministry card-master was made, diversified for Guangdong, and sent to
//! Guangdong's node on a transport key card. Each attempt that hkms's templates stop is made
//! and must fail; a positive control shows the same call works with hkms's own template, so a
//! refusal is the template's doing. Then what the token cannot stop (destroying a private key
//! with the user PIN) must be found: `keys orphans`, `token audit` and ExportKey name it.
//!
//! Deriving a child in clear from a derive key (`C_DeriveKey` with a non-sensitive template)
//! is not here: SoftHSM2 does not enforce `CKA_DERIVE_TEMPLATE` (docs/design.md §9).
//!
//! A single test: the tokens share one SoftHSM2 folder, which this process opens through the
//! environment.

mod support;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use hkms::hierarchy::KeyId;
use hkms::transport::Package;
use secrecy::SecretString;
use support::transport::{export, import, issue, load};
use support::{USER_PIN, make_token, start_on, stderr, stdout};
use tonic::Code;

const GD_SYSTEM: &str = "hkms://system/provincial/440000/gd-kms";

fn find(session: &Session, label: &str) -> ObjectHandle {
    let found = session
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .expect("find");
    match found.as_slice() {
        [one] => *one,
        other => panic!("{} objects labelled {label}", other.len()),
    }
}

fn label_of(id: &str) -> String {
    KeyId::parse(id).expect("key id").ck_label()
}

/// Every way to widen a held key's use or rename it fails, in place or through a copy.
fn cannot_be_changed(session: &Session, label: &str) {
    let key = find(session, label);
    for attempt in [
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
        Attribute::Derive(false),
        Attribute::Label(b"hkms/renamed".to_vec()),
    ] {
        assert!(
            session
                .update_attributes(key, std::slice::from_ref(&attempt))
                .is_err(),
            "{label}: {attempt:?} was set"
        );
        assert!(
            session
                .copy_object(key, std::slice::from_ref(&attempt))
                .is_err(),
            "{label}: a copy with {attempt:?} was made"
        );
    }
    let modifiable = session
        .get_attributes(key, &[AttributeType::Modifiable])
        .expect("attributes");
    assert_eq!(modifiable, [Attribute::Modifiable(false)], "{label}");
}

/// An unwrap template as an attacker would write it: a session key with `extra` on top.
fn unwrap_template(extra: &[Attribute]) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Token(false),
    ];
    t.extend_from_slice(extra);
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_user_pin_holder_cannot_get_keys_out_or_change_them() {
    let tokens = tempfile::tempdir().expect("tempdir");
    let softhsm = tokens.path().join("softhsm");
    let t_ministry = make_token(&softhsm, "ministry");
    let t_gd = make_token(&softhsm, "guangdong");
    make_token(&softhsm, "card-gd");
    let pkcs11 = support::init_pkcs11(&t_ministry);

    let ministry = start_on(&t_ministry, "national", "000000", true);
    let guangdong = start_on(&t_gd, "provincial", "440000", false);
    let root = ministry.generate("card-master").await;
    let gd_key = support::derive(&ministry, &root.id, "440000").await;
    let card = issue(&ministry, "440000", "card-gd").await;
    let package = export(&ministry, &gd_key.id, "440000").await;
    load(&guangdong, GD_SYSTEM, "card-gd", &card).await;
    let imported = import(&guangdong, GD_SYSTEM, package.clone())
        .await
        .expect("Guangdong imports");
    let transport = format!("hkms/transport/{}", card.card_id);
    let package_mac = format!("hkms/package-mac/{}", card.card_id);

    let user = |slot: &str| support::user_session(&pkcs11, slot);

    // 2. Unwrapping a package (packages are not secret) under the loaded transport key into a
    // key the attacker can read, or one that encrypts (a sub-key that encrypts a region's data
    // block gives that region's key in clear): refused by the key's unwrap template.
    let at_gd = user("guangdong");
    let loaded = find(&at_gd, &transport);
    let wrapped = Package::decode(&package).expect("decode").wrapped;
    for attack in [
        vec![Attribute::Sensitive(false), Attribute::Extractable(true)],
        vec![Attribute::Sensitive(true), Attribute::Extractable(true)],
        vec![
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
        ],
    ] {
        assert!(
            at_gd
                .unwrap_key(
                    &Mechanism::AesKeyWrapPad,
                    loaded,
                    &wrapped,
                    &unwrap_template(&attack)
                )
                .is_err(),
            "unwrapped with {attack:?}"
        );
    }
    // Positive control: with the template hkms gives its own imports, the same unwrap works.
    let control = at_gd
        .unwrap_key(
            &Mechanism::AesKeyWrapPad,
            loaded,
            &wrapped,
            &unwrap_template(&[
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::WrapWithTrusted(true),
                Attribute::Wrap(false),
                Attribute::Unwrap(false),
                Attribute::Derive(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
                Attribute::Modifiable(false),
            ]),
        )
        .expect("the control unwrap");
    at_gd.destroy_object(control).expect("destroy the control");
    // Nor can the loaded key lose its template or gain a use.
    cannot_be_changed(&at_gd, &transport);

    // 3. Derived, generated and imported keys cannot be widened or renamed.
    let at_ministry = user("ministry");
    cannot_be_changed(&at_ministry, &label_of(&root.id));
    cannot_be_changed(&at_ministry, &label_of(&gd_key.id));
    cannot_be_changed(&at_gd, &label_of(&imported.id));
    drop(at_gd);

    // 5. A package whose MAC verifies but whose key is longer than its header says: made with
    // the ministry's user PIN (a 32-byte key wrapped under the issuer's trusted transport key,
    // MACed with the card's package MAC key), refused before anything is unwrapped.
    let long_key = at_ministry
        .create_object(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Value(vec![0x5a; 32]),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
        ])
        .expect("a 32-byte key");
    let long_wrapped = at_ministry
        .wrap_key(
            &Mechanism::AesKeyWrapPad,
            find(&at_ministry, &transport),
            long_key,
        )
        .expect("wrap under the issuer's key");
    assert_eq!(long_wrapped.len(), 40);
    let mut forged = Package::decode(&package).expect("decode");
    forged.header.package_id = "p-forged-long-key".into();
    forged.header_bytes = Package::header_bytes(&forged.header).expect("header");
    forged.wrapped = long_wrapped;
    let signed = Package::signed_bytes(&forged.header_bytes, &forged.wrapped).expect("signed");
    let mac = at_ministry
        .sign(
            &Mechanism::AesCMac,
            find(&at_ministry, &package_mac),
            &signed,
        )
        .expect("MAC with the package MAC key");
    forged.mac = mac.try_into().expect("16 bytes");
    let e = import(&guangdong, GD_SYSTEM, forged.encode().expect("encode"))
        .await
        .expect_err("a long key under an aes128 header");
    assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    assert!(
        e.message().contains("not the length its header says"),
        "{}",
        e.message()
    );

    // 4. A session that never logged in can neither change nor destroy the issuer's public
    // transport key.
    let anonymous = pkcs11
        .open_rw_session(support::slot_of(&pkcs11, "ministry"))
        .expect("session");
    // The login is the application's: end the user's so that this session is a public one.
    at_ministry.logout().expect("logout");
    let issuers = find(&anonymous, &transport);
    assert!(anonymous.destroy_object(issuers).is_err(), "destroyed");
    assert!(
        anonymous
            .update_attributes(issuers, &[Attribute::Unwrap(true)])
            .is_err(),
        "changed"
    );

    // What the user PIN can still do, destroy a private key, is found: the package MAC key.
    at_ministry
        .login(UserType::User, Some(&SecretString::from(USER_PIN)))
        .expect("login");
    at_ministry
        .destroy_object(find(&at_ministry, &package_mac))
        .expect("destroy the package MAC key");
    let e = hkms::proto::transport_service_client::TransportServiceClient::new(
        ministry.channel().await,
    )
    .export_key(hkms::proto::ExportKeyRequest {
        key_id: gd_key.id.clone(),
        recipient_region: "440000".into(),
        card_id: String::new(),
        ..Default::default()
    })
    .await
    .expect_err("export under a card whose MAC key is gone");
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    assert!(
        e.message().contains("package MAC key") && e.message().contains("issue a new card"),
        "{}",
        e.message()
    );
    let mut ministry = ministry;
    ministry.stop();
    for command in [["keys", "orphans"], ["token", "audit"]] {
        let out = ministry.cli(&command);
        let text = stdout(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{command:?}: {text}{}",
            stderr(&out)
        );
        assert!(
            text.contains(&format!("MISSING {package_mac}"))
                && text.contains(&card.card_id)
                && text.contains("issue a new card"),
            "{command:?}: {text}"
        );
    }
}
