//! The textbook ways an HSM connection dies, at the HSM layer against a real SoftHSM2 token:
//! every session closed under hkms (`CKR_SESSION_HANDLE_INVALID`), and the library finalized
//! under it (`CKR_CRYPTOKI_NOT_INITIALIZED`). The first call after the loss fails as
//! UNAVAILABLE; the next one finds the sessions rebuilt, with no new `Pkcs11Token`.
//!
//! The faults are made with the same SoftHSM2 library, loaded a second time in this process
//! (the dynamic loader hands back the one hkms uses), as another application on the token
//! would. A single test: it points SoftHSM2 at its token folder through the process
//! environment.

mod support;

use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use hkms::hierarchy::{Algorithm, Usage};
use hkms::hsm::{
    HsmConfig, HsmError, HsmErrorKind, Lifetime, PinSource, Pkcs11Token, SecretKeySpec,
    TokenLocator,
};
use support::make_token;

const LABEL: &str = "hkms/session-loss-key";

/// The failure right after the loss: UNAVAILABLE, saying the connection is re-established.
fn assert_lost(e: &HsmError, rv: &str) {
    assert!(e.is_session_lost(), "{e}");
    assert_eq!(e.kind(), HsmErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains(rv), "{e}");
    assert!(e.to_string().contains("re-establishing"), "{e}");
}

#[test]
fn closed_sessions_and_a_finalized_library_are_rebuilt_in_place() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = make_token(&dir.path().join("softhsm"), "loss");
    // SAFETY: the only test of this binary; set before anything loads the module.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &token.conf) };
    let hsm = Pkcs11Token::open(&HsmConfig {
        module: token.module.clone(),
        locator: TokenLocator::by_label("loss"),
        pin: PinSource::File(token.pin_file.clone()),
        sessions: 3,
        session_wait: Duration::from_secs(5),
    })
    .expect("open token");
    let kcv = hsm
        .generate_key(&SecretKeySpec {
            algorithm: Algorithm::Aes128,
            usage: Usage::Derive,
            exportable: false,
            label: LABEL.into(),
            id: LABEL.as_bytes().to_vec(),
            lifetime: Lifetime::Token,
        })
        .expect("generate");

    let other = Pkcs11::new(&token.module).expect("module");
    match other.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(())
        | Err(cryptoki::error::Error::Pkcs11(
            cryptoki::error::RvError::CryptokiAlreadyInitialized,
            _,
        )) => {}
        Err(e) => panic!("initialise: {e}"),
    }
    let slot = support::slot_of(&other, "loss");

    // Every session on the token closed under hkms (the login goes with them).
    // SAFETY: loading the module only takes another reference to the library already loaded
    // and initialised in this process; C_CloseAllSessions takes a slot id and no pointer.
    let rv = unsafe {
        cryptoki_sys::Pkcs11::new(&token.module)
            .expect("module")
            .C_CloseAllSessions(slot.id())
    };
    assert_eq!(rv, cryptoki_sys::CKR_OK, "C_CloseAllSessions");
    assert_lost(
        &hsm.kcv(LABEL, Algorithm::Aes128)
            .expect_err("a dead session"),
        "SessionHandleInvalid",
    );
    assert_eq!(hsm.kcv(LABEL, Algorithm::Aes128).expect("rebuilt"), kcv);
    hsm.check_alive().expect("healthy again");

    // The library finalized under hkms.
    other.clone().finalize().expect("finalize");
    assert_lost(
        &hsm.kcv(LABEL, Algorithm::Aes128)
            .expect_err("a finalized library"),
        "CryptokiNotInitialized",
    );
    assert_eq!(hsm.kcv(LABEL, Algorithm::Aes128).expect("rebuilt"), kcv);
    hsm.check_alive().expect("healthy again");
    assert_eq!(hsm.secret_key_labels().expect("labels"), [LABEL]);
}
