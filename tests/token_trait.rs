//! The HSM layer against a real SoftHSM2 token: what its capability record holds is asked
//! from the token itself.
//!
//! A single test: it points SoftHSM2 at its token folder through the process environment.

mod support;

use std::time::Duration;

use hkms::hsm::{Hsm, HsmConfig, PinSource, TokenLocator};
use support::make_token;

#[test]
fn the_capability_record_is_asked_from_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = make_token(&dir.path().join("softhsm"), "seam");
    // SAFETY: the only test of this binary; set before anything loads the module.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &token.conf) };
    let hsm = Hsm::open(&HsmConfig {
        module: token.module.clone(),
        locator: TokenLocator::by_label("seam"),
        pin: PinSource::File(token.pin_file.clone()),
        sessions: 2,
        session_wait: Duration::from_secs(10),
    })
    .expect("open token");

    // C_GetMechanismInfo: SoftHSM2 makes AES keys of 16 to 32 bytes.
    let caps = hsm.capabilities();
    let sizes = caps
        .aes_key_sizes
        .expect("AES key sizes from C_GetMechanismInfo");
    assert!(sizes.fits_aes(16) && sizes.fits_aes(32), "{sizes:?}");
    assert!(!sizes.fits_aes(64), "{sizes:?}");
    assert!(caps.has(hkms::hsm::mechanisms::AES_KEY_GEN));
    assert!(caps.wrap_pad.is_some());
}
