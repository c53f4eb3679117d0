//! The HSM layer through its seam, against a real SoftHSM2 token: the PKCS#11 token is held as
//! an `Arc<dyn Token>`, as the node core is to hold it, and keys made, derived and checked
//! through `&dyn Token` agree with the same computation in software. What its capability record
//! holds is asked from the token itself.
//!
//! A single test: it points SoftHSM2 at its token folder through the process environment.

mod support;

use std::sync::Arc;
use std::time::Duration;

use hkms::hierarchy::{Algorithm, Factor, Region, Usage};
use hkms::hsm::{
    HsmConfig, HsmErrorKind, Lifetime, PinSource, Pkcs11Token, SecretKeySpec, Token, TokenLocator,
};
use support::{aes_child, aes_kcv, make_token};

fn spec(label: &str, algorithm: Algorithm, usage: Usage, lifetime: Lifetime) -> SecretKeySpec {
    SecretKeySpec {
        algorithm,
        usage,
        exportable: false,
        label: label.into(),
        id: label.as_bytes().to_vec(),
        lifetime,
    }
}

/// Keys through a trait object: entry of a known key, derivation, generation, KCVs, clean-up.
fn keys_through(token: &dyn Token) {
    let root = [0x2bu8; 16];
    let kcv = token
        .import_clear_key(
            &spec(
                "hkms/seam-root",
                Algorithm::Aes128,
                Usage::Derive,
                Lifetime::Token,
            ),
            &root,
        )
        .expect("key entry");
    assert_eq!(kcv.to_hex(), aes_kcv(&root));
    assert_eq!(
        token.kcv("hkms/seam-root", Algorithm::Aes128).expect("kcv"),
        kcv
    );
    assert_eq!(
        token
            .component_kcv(Algorithm::Aes128, &root)
            .expect("component kcv")
            .to_hex(),
        aes_kcv(&root)
    );

    let region = Region::parse("440000").expect("region");
    let child = token
        .derive_key(
            "hkms/seam-root",
            Algorithm::Aes128,
            &Factor::from_region(&region),
            &spec(
                "hkms/seam-440000",
                Algorithm::Aes128,
                Usage::Mac,
                Lifetime::Token,
            ),
        )
        .expect("derive");
    assert_eq!(child.to_hex(), aes_kcv(&aes_child(&root, "440000")));

    let made = token
        .generate_key(&spec(
            "hkms/seam-generated",
            Algorithm::Aes256,
            Usage::Encrypt,
            Lifetime::Token,
        ))
        .expect("generate");
    assert_eq!(
        token
            .kcv("hkms/seam-generated", Algorithm::Aes256)
            .expect("kcv"),
        made
    );

    assert_eq!(
        token.secret_key_labels().expect("labels"),
        ["hkms/seam-440000", "hkms/seam-generated", "hkms/seam-root"]
    );
    for o in token.object_facts().expect("facts") {
        let v = hkms::hsm::attribute_audit::check(&o);
        assert!(v.is_empty(), "{v:?}");
    }
    assert_eq!(
        token.destroy_key("hkms/seam-generated").expect("destroy"),
        1
    );
    let gone = token
        .kcv("hkms/seam-generated", Algorithm::Aes256)
        .expect_err("destroyed");
    assert_eq!(gone.kind(), HsmErrorKind::NotFound, "{gone}");
}

#[test]
fn a_pkcs11_token_serves_as_a_dyn_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let softhsm = make_token(&dir.path().join("softhsm"), "seam");
    // SAFETY: the only test of this binary; set before anything loads the module.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &softhsm.conf) };
    let token: Arc<dyn Token> = Arc::new(
        Pkcs11Token::open(&HsmConfig {
            module: softhsm.module.clone(),
            locator: TokenLocator::by_label("seam"),
            pin: PinSource::File(softhsm.pin_file.clone()),
            sessions: 2,
            session_wait: Duration::from_secs(10),
        })
        .expect("open token"),
    );

    // The capability record, asked from the token: C_GetMechanismInfo says SoftHSM2 makes AES
    // keys of 16 to 32 bytes.
    let caps = token.capabilities();
    assert_eq!(caps.label, "seam");
    let sizes = caps
        .aes_key_sizes
        .expect("AES key sizes from C_GetMechanismInfo");
    assert!(sizes.fits_aes(16) && sizes.fits_aes(32), "{sizes:?}");
    assert!(!sizes.fits_aes(64), "{sizes:?}");
    assert!(caps.has(hkms::hsm::mechanisms::AES_KEY_GEN));
    assert!(caps.wrap_pad.is_some());
    assert_eq!(token.session_use(), (0, 2));
    token.check_alive().expect("alive");

    keys_through(token.as_ref());

    // Shared between threads as the node shares it.
    std::thread::scope(|scope| {
        for _ in 0..2 {
            let token = Arc::clone(&token);
            scope.spawn(move || {
                for _ in 0..5 {
                    token
                        .kcv("hkms/seam-root", Algorithm::Aes128)
                        .expect("kcv from a thread");
                }
            });
        }
    });

    // The signing pair of the ceremony log, and a card job's hold on the module.
    let point = token.signing_key("hkms/seam-audit", true).expect("make");
    assert_eq!(point.len(), 65);
    assert_eq!(
        token.signing_key("hkms/seam-audit", false).expect("read"),
        point
    );
    assert_eq!(
        token
            .sign_digest("hkms/seam-audit", &[7u8; 32])
            .expect("sign")
            .len(),
        64
    );
    {
        let _hold = token.hold_module();
        token.recycle_if_due();
    }
    token.recycle_if_due();
    token.check_alive().expect("alive after");
}
