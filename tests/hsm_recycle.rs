//! SoftHSM2 2.6.1 frees a destroyed session object only at `C_Finalize`, so the HSM layer
//! initialises the module again after a budget of card keys (session objects). This test runs
//! card commands from several threads across many such recycles, against a real SoftHSM2
//! token, and requires every command to succeed with the same answer as before. A single test:
//! it points SoftHSM2 at its token folder through the process environment.

mod support;

use std::sync::Arc;
use std::time::Duration;

use hkms::card::CardCommand;
use hkms::hierarchy::{Algorithm, Factor, Usage};
use hkms::hsm::{HsmConfig, Lifetime, PinSource, Pkcs11Token, SecretKeySpec, TokenLocator};
use support::make_token;

const MASTER: &str = "hkms/recycle-master";

#[test]
fn card_commands_go_on_across_module_recycles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = make_token(&dir.path().join("softhsm"), "recycle");
    // SAFETY: the only test of this binary; set before anything loads the module.
    unsafe { std::env::set_var("SOFTHSM2_CONF", &token.conf) };
    let hsm = Arc::new(
        Pkcs11Token::open(&HsmConfig {
            module: token.module.clone(),
            locator: TokenLocator::by_label("recycle"),
            pin: PinSource::File(token.pin_file.clone()),
            sessions: 2,
            session_wait: Duration::from_secs(10),
        })
        .expect("open token"),
    );
    let kcv = hsm
        .generate_key(&SecretKeySpec {
            algorithm: Algorithm::Aes128,
            usage: Usage::Derive,
            exportable: false,
            label: MASTER.into(),
            id: MASTER.as_bytes().to_vec(),
            lifetime: Lifetime::Token,
        })
        .expect("generate");
    let serial = Factor::from_card_serial("1234567890ABCDEF").expect("serial");
    let challenge = hkms::card::parse_challenge("0011223344556677").expect("challenge");
    let block = hkms::card::pin_block("123456");
    let command = |hsm: &Pkcs11Token| {
        hsm.card_command(CardCommand::Unblock, MASTER, &serial, &challenge, &block)
    };
    let expected = command(&hsm).expect("first command");
    let start = hsm.pool_generation();

    hsm.set_session_object_budget(5);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let hsm = Arc::clone(&hsm);
            let expected = expected.clone();
            scope.spawn(move || {
                for i in 0..12 {
                    let apdu = command(&hsm).unwrap_or_else(|e| panic!("command {i}: {e}"));
                    assert_eq!(apdu, expected, "command {i}");
                }
            });
        }
    });
    // 48 card keys with a budget of 5: the module was initialised again several times.
    let recycles = hsm.pool_generation() - start;
    assert!(recycles >= 3, "only {recycles} recycles");
    // While a card job holds the module, no recycle cuts it short; the next one comes after.
    let held = hsm.pool_generation();
    {
        let _card_job = hsm.hold_module();
        for i in 0..12 {
            assert_eq!(
                command(&hsm).expect("command under a hold"),
                expected,
                "{i}"
            );
        }
        assert_eq!(hsm.pool_generation(), held, "recycled under a card job");
    }
    // The card job's end runs the recycle it put off (a node does this when the job ends).
    hsm.recycle_if_due();
    assert_eq!(hsm.pool_generation(), held + 1, "the postponed recycle");
    command(&hsm).expect("command after the hold");
    assert_eq!(hsm.pool_generation(), held + 1, "not twice");
    // A session object that could not be destroyed: the next destroy closes every session,
    // even on a token with no budget (where no recycle would come otherwise).
    hsm.set_session_object_budget(0);
    let before = hsm.pool_generation();
    command(&hsm).expect("command without a budget");
    assert_eq!(hsm.pool_generation(), before, "no budget, no recycle");
    hsm.session_object_kept();
    command(&hsm).expect("command after a kept object");
    assert_eq!(
        hsm.pool_generation(),
        before + 1,
        "the sessions were closed"
    );
    command(&hsm).expect("command after that");
    assert_eq!(hsm.pool_generation(), before + 1, "once");
    // The token and the node's view of it are whole afterwards.
    assert_eq!(hsm.kcv(MASTER, Algorithm::Aes128).expect("kcv"), kcv);
    hsm.check_alive().expect("healthy");
    assert_eq!(hsm.secret_key_labels().expect("labels"), [MASTER]);
}
