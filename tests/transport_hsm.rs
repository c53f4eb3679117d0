//! The transport key card flow and key wrapping at the HSM layer, against real SoftHSM2 tokens:
//! a ministry token issues a card (security officer, trusted transport key, RSA-OAEP to the
//! card), a province token loads it, and a sub-key crosses wrapped with its MAC agreeing.
//!
//! A single test: it points SoftHSM2 at its token folder through the process environment.

mod support;

use hkms::hierarchy::{Algorithm, Factor, Region, Usage};
use hkms::hsm::transport::{CardToken, PackageKeys};
use hkms::hsm::{Lifetime, SecretKeySpec, TokenLocator};
use secrecy::SecretString;
use support::{SO_PIN, USER_PIN, make_token};

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

    let ministry = support::open_token(&ministry_token, "ministry");
    let province = support::open_token(&ministry_token, "province");
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
    assert_eq!(
        province
            .card_transport_kcv(&card, "card-0001")
            .expect("kcv"),
        on_card
    );

    // The card and its user PIN are not enough to get the key out: no key the card's user can
    // make may wrap it (CKA_WRAP_WITH_TRUSTED).
    the_card_user_cannot_wrap_the_transport_key(&ministry_token, "card-440000", "card-0001");
    // Once its card is registered, the issuer's public copy is sealed: it can be turned to
    // nothing but wrapping, and not destroyed.
    ministry.seal_issuer_key("card-0001").expect("seal");
    the_issuers_copy_cannot_be_changed(&ministry_token, "ministry", "card-0001");

    // A wrong card security officer PIN is refused, and the card keeps its key.
    let err = province
        .load_transport_key(
            &card,
            &SecretString::from("wrong-so-pin"),
            "card-0001",
            PackageKeys::SubKeys,
        )
        .expect_err("wrong card SO PIN");
    assert!(err.to_string().contains("security officer PIN"), "{err}");
    let (at_province, on_card2) = province
        .load_transport_key(&card, &so_pin, "card-0001", PackageKeys::SubKeys)
        .expect("load");
    assert_eq!(at_province, at_ministry);
    assert_eq!(on_card2, on_card);
    // The card keeps its copy until the node has registered the load, then it is spent.
    province
        .spend_card_copy(&card, "card-0001")
        .expect("spend the card's copy");
    assert!(province.card_transport_kcv(&card, "card-0001").is_err());

    // A wrong SO PIN is refused, and the node keeps working as the user afterwards.
    let err = ministry
        .issue_transport_key(&SecretString::from("wrong-so-pin"), &card, "card-0002")
        .expect_err("wrong SO PIN");
    assert!(err.to_string().contains("security officer PIN"), "{err}");
    ministry
        .generate_key(&spec("hkms/root", false))
        .expect("user session still works");

    // A public key planted under the transport key's label, by any session of the token, is
    // not taken for it (the handles were forgotten after the security officer's work).
    let planted = plant_public_key(&ministry_token, "ministry", "hkms/transport/card-0001");

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

    planted
        .destroy_object(planted_key(&planted, "hkms/transport/card-0001"))
        .expect("remove the planted key");

    // An issuer's key that an earlier hkms left modifiable is sealed when the node starts.
    ministry
        .with_security_officer(&so_pin, |so| {
            so.generate_key(
                &cryptoki::mechanism::Mechanism::AesKeyGen,
                &[
                    cryptoki::object::Attribute::Token(true),
                    cryptoki::object::Attribute::Private(false),
                    cryptoki::object::Attribute::Sensitive(true),
                    cryptoki::object::Attribute::Extractable(false),
                    cryptoki::object::Attribute::Trusted(true),
                    cryptoki::object::Attribute::Wrap(true),
                    cryptoki::object::Attribute::Derive(false),
                    cryptoki::object::Attribute::Sign(false),
                    cryptoki::object::Attribute::ValueLen(32.into()),
                    cryptoki::object::Attribute::Label(b"hkms/transport/legacy".to_vec()),
                ],
            )?;
            Ok(())
        })
        .expect("a legacy issuer key");
    // Not registered: only stripped to wrapping, and left destroyable for the operator.
    assert_eq!(ministry.seal_issuer_keys(&[]).expect("strip"), 0);
    let registered = ["legacy".to_string()];
    assert_eq!(ministry.seal_issuer_keys(&registered).expect("seal"), 1);
    the_issuers_copy_cannot_be_changed(&ministry_token, "ministry", "legacy");
    assert_eq!(ministry.seal_issuer_keys(&registered).expect("again"), 0);

    // Every key on both tokens still follows the attribute rules.
    for hsm in [&ministry, &province] {
        for o in hsm.object_facts().expect("facts") {
            let v = hkms::hsm::attribute_audit::check(&o);
            assert!(v.is_empty(), "{v:?}");
        }
    }
}

/// A read-write session on the token labelled `slot`, through the module this process has
/// loaded already (the application's login state is shared).
fn raw_session(token: &support::Token, slot: &str) -> cryptoki::session::Session {
    let pkcs11 = cryptoki::context::Pkcs11::new(&token.module).expect("module");
    match pkcs11.initialize(cryptoki::context::CInitializeArgs::new(
        cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
    )) {
        Ok(()) => {}
        Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::CryptokiAlreadyInitialized,
            _,
        )) => {}
        Err(e) => panic!("C_Initialize: {e}"),
    }
    pkcs11
        .open_rw_session(support::slot_of(&pkcs11, slot))
        .expect("session")
}

/// A session on `slot` that made a public, readable AES key labelled `label` on the token.
fn plant_public_key(token: &support::Token, slot: &str, label: &str) -> cryptoki::session::Session {
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::Attribute;

    let session = raw_session(token, slot);
    session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Private(false),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
                Attribute::ValueLen(32.into()),
                Attribute::Label(label.as_bytes().to_vec()),
            ],
        )
        .expect("plant a public key");
    session
}

/// The public key labelled `label` that [`plant_public_key`] made.
fn planted_key(
    session: &cryptoki::session::Session,
    label: &str,
) -> cryptoki::object::ObjectHandle {
    use cryptoki::object::Attribute;
    let found = session
        .find_objects(&[
            Attribute::Private(false),
            Attribute::Trusted(false),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .expect("find");
    let [one] = found.as_slice() else {
        panic!("{} planted keys", found.len());
    };
    *one
}

/// Tries what any session of the issuing token could do to the issuer's copy of a transport
/// key, a public object: turn unwrapping, derivation or decryption back on, directly or in a
/// copy. All must fail; the key stays trusted.
fn the_issuers_copy_cannot_be_changed(token: &support::Token, slot: &str, card_id: &str) {
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};

    let session = raw_session(token, slot);
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(format!("hkms/transport/{card_id}").into_bytes()),
        ])
        .expect("find");
    let [key] = found.as_slice() else {
        panic!("one transport key, not {}", found.len());
    };
    for attempt in [
        Attribute::Unwrap(true),
        Attribute::Derive(true),
        Attribute::Decrypt(true),
    ] {
        assert!(
            session
                .update_attributes(*key, std::slice::from_ref(&attempt))
                .is_err(),
            "{attempt:?} was accepted"
        );
        assert!(
            session
                .copy_object(*key, std::slice::from_ref(&attempt))
                .is_err(),
            "a copy with {attempt:?} was made"
        );
    }
    assert!(
        session.destroy_object(*key).is_err(),
        "the issuer's transport key was destroyed"
    );
    let facts = session
        .get_attributes(
            *key,
            &[
                AttributeType::Modifiable,
                AttributeType::Destroyable,
                AttributeType::Trusted,
                AttributeType::Unwrap,
                AttributeType::Derive,
            ],
        )
        .expect("attributes");
    assert_eq!(
        facts,
        [
            Attribute::Modifiable(false),
            Attribute::Destroyable(false),
            Attribute::Trusted(true),
            Attribute::Unwrap(false),
            Attribute::Derive(false),
        ]
    );
}

/// Tries what a holder of the card and its user PIN could: wrap the card's transport key under
/// a key they make themselves (AES, readable) or import (RSA, untrusted). Both must fail.
fn the_card_user_cannot_wrap_the_transport_key(token: &support::Token, card: &str, card_id: &str) {
    use cryptoki::mechanism::Mechanism;
    use cryptoki::object::{Attribute, ObjectClass};
    use cryptoki::session::UserType;

    let session = raw_session(token, card);
    // The application is logged in already (the card is open); log in again if not.
    let _ = session.login(UserType::User, Some(&SecretString::from(USER_PIN)));
    let label = format!("hkms/transport/{card_id}");
    let found = session
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.into_bytes()),
        ])
        .expect("find");
    let transport = *found.first().expect("the card holds its transport key");
    // It can make its KCV (CMAC) and nothing else.
    let allowed = session
        .get_attributes(
            transport,
            &[cryptoki::object::AttributeType::AllowedMechanisms],
        )
        .expect("attributes");
    assert!(
        matches!(
            allowed.as_slice(),
            [Attribute::AllowedMechanisms(list)]
                if list == &[cryptoki::mechanism::MechanismType::AES_CMAC]
        ),
        "{allowed:?}"
    );
    let mine = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
                Attribute::Wrap(true),
                Attribute::ValueLen(32.into()),
            ],
        )
        .expect("a key of the card user's own");
    let err = session
        .wrap_key(&Mechanism::AesKeyWrapPad, mine, transport)
        .expect_err("wrapping the transport key under the user's own key");
    assert!(
        matches!(
            err,
            cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::KeyNotWrappable, _)
        ),
        "{err}"
    );
    let (public, _) = session
        .generate_key_pair(
            &Mechanism::RsaPkcsKeyPairGen,
            &[
                Attribute::Token(false),
                Attribute::Wrap(true),
                Attribute::ModulusBits(2048.into()),
                Attribute::PublicExponent(vec![1, 0, 1]),
            ],
            &[Attribute::Token(false)],
        )
        .expect("an RSA pair of the card user's own");
    let oaep = Mechanism::RsaPkcsOaep(cryptoki::mechanism::rsa::PkcsOaepParams::new(
        cryptoki::mechanism::MechanismType::SHA1,
        cryptoki::mechanism::rsa::PkcsMgfType::MGF1_SHA1,
        cryptoki::mechanism::rsa::PkcsOaepSource::empty(),
    ));
    let err = session
        .wrap_key(&oaep, public, transport)
        .expect_err("wrapping the transport key under an untrusted RSA key");
    assert!(
        matches!(
            err,
            cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::KeyNotWrappable, _)
        ),
        "{err}"
    );
    let _ = session.destroy_object(mine);
    let _ = session.destroy_object(public);
}
