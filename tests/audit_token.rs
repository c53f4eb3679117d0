//! The audit key on a token of its own (`[audit.token]`): the node makes and uses its
//! checkpoint-signing pair there, with that token's own PIN, so that whoever holds the
//! application PIN cannot sign a rewritten log. A log sealed by a key on the node's token is
//! not moved; a wrong audit PIN, or a config that no longer names the audit token, stops the
//! start.
//!
//! Only the first test loads the PKCS#11 module in this process (its token environment is
//! process-wide); the others look through `hkms serve` alone.

mod support;

use std::path::Path;
use std::process::Command;

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::UserType;
use secrecy::SecretString;
use support::{
    TestNode, USER_PIN, add_softhsm_token, exported_key_sha256, hkms_bin, make_token, node_config,
    stderr, stdout, try_spawn_server, with_audit_token,
};

/// The audit token's own user PIN.
const AUDIT_PIN: &str = "audit-pin-2718";
/// Label of the audit token.
const AUDIT_LABEL: &str = "hkms-audit";
/// Who exports the log.
const AUDITOR: &str = "hkms://auditor/national/000000/auditor-1";
/// Label of the node's own token.
const MAIN_LABEL: &str = "hkms-test";

/// A node folder with its token and an audit token beside it (one SoftHSM2 folder), and the
/// config `with_audit` asks for.
fn folder(with_audit: bool) -> (tempfile::TempDir, support::Token, support::Token, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let main = make_token(&dir.path().join("token"), MAIN_LABEL);
    let audit = add_softhsm_token(&main, AUDIT_LABEL, AUDIT_PIN);
    let text = node_config("ministry", "national", "000000", &main);
    let text = if with_audit {
        with_audit_token(text, &audit)
    } else {
        text
    };
    (dir, main, audit, text)
}

fn start(with_audit: bool) -> (TestNode, support::Token) {
    let (dir, main, audit, text) = folder(with_audit);
    let config = dir.path().join("node.toml");
    std::fs::write(&config, text).expect("config");
    (TestNode::start_in(dir, main, config), audit)
}

/// One recorded request.
async fn a_request(node: &TestNode) {
    node.client()
        .await
        .list_keys(hkms::proto::ListKeysRequest::default())
        .await
        .expect("a request, recorded");
}

/// `hkms audit export` into `out`, then `hkms audit verify` pinned to `key`; returns the key
/// the export printed.
fn export_and_verify(node: &TestNode, out: &Path, key: Option<&str>) -> String {
    let o = node.cli_as(
        AUDITOR,
        &["audit", "export", "--out", &out.display().to_string()],
    );
    assert!(o.status.success(), "audit export: {}", stderr(&o));
    let exported = exported_key_sha256(&o);
    let pinned = key.unwrap_or(&exported);
    let v = Command::new(hkms_bin())
        .args(["audit", "verify", &out.display().to_string()])
        .args(["--expect-key-sha256", pinned])
        .output()
        .expect("run hkms audit verify");
    assert!(
        v.status.success() && stdout(&v).contains("OK"),
        "the ceremony log does not verify: {}{}",
        stdout(&v),
        stderr(&v)
    );
    exported
}

/// The SHA-256 of the SPKI of the P-256 public point `ec_point` (a DER OCTET STRING or bare).
fn key_sha256(ec_point: &[u8]) -> String {
    let point = match ec_point {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
        bare => bare,
    };
    let pem = hkms::audit::bundle::spki_pem_from_point(point).expect("P-256 point");
    let (der, _) = hkms::audit::bundle::public_key_point(&pem).expect("SPKI");
    hkms::audit::bundle::spki_sha256(&der)
}

#[tokio::test]
async fn the_audit_key_is_made_and_used_on_its_own_token_which_the_application_pin_cannot_open() {
    let (mut node, audit) = start(true);
    a_request(&node).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(node.channel().await);
    let audit_health = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "audit-token".into(),
        })
        .await
        .expect("health of the audit token")
        .into_inner();
    assert_eq!(
        audit_health.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let first = node.dir.path().join("bundle-1");
    let key = export_and_verify(&node, &first, None);
    assert!(
        node.log()
            .contains("the audit-signing key is on its own token"),
        "{}",
        node.log()
    );

    // Restarts keep the key: the new bundle verifies against the key pinned from the first.
    node.restart();
    a_request(&node).await;
    let second = node.dir.path().join("bundle-2");
    assert_eq!(export_and_verify(&node, &second, Some(&key)), key);
    node.restart();
    a_request(&node).await;
    let third = node.dir.path().join("bundle-3");
    assert_eq!(export_and_verify(&node, &third, Some(&key)), key);

    // The attribute audit checks the audit token's objects too, with its own PIN.
    let o = node.cli(&["token", "audit", "--json"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(report["token"], MAIN_LABEL, "{report}");
    assert_eq!(report["audit_token"]["token"], AUDIT_LABEL, "{report}");
    assert_eq!(
        report["audit_token"]["objects"], 1,
        "the private half: {report}"
    );
    assert_eq!(
        report["audit_token"]["violations"],
        serde_json::json!([]),
        "{report}"
    );
    node.stop();

    // What the holder of the application PIN gets: no audit key on the node's token...
    let pkcs11 = support::init_pkcs11(&node.token);
    let main = support::user_session(&pkcs11, MAIN_LABEL);
    let on_main = main
        .find_objects(&[Attribute::Label(b"hkms/audit-signing".to_vec())])
        .expect("C_FindObjects on the node's token");
    assert!(on_main.is_empty(), "the node's token holds the audit key");
    let private_keys = main
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .expect("C_FindObjects on the node's token");
    assert!(private_keys.is_empty(), "a private key on the node's token");
    drop(main);
    // ...and no way into the audit token: its PIN is refused there, and a session without a
    // login sees nothing of the pair.
    let slot = support::slot_of(&pkcs11, AUDIT_LABEL);
    let outside = pkcs11.open_rw_session(slot).expect("session");
    match outside.login(UserType::User, Some(&SecretString::from(USER_PIN))) {
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {}
        other => panic!("the application PIN opens the audit token: {other:?}"),
    }
    let seen = outside
        .find_objects(&[Attribute::Label(b"hkms/audit-signing".to_vec())])
        .expect("C_FindObjects without a login");
    assert!(seen.is_empty(), "the pair is visible without the audit PIN");
    drop(outside);

    // With the audit PIN, the pair is there, and its public half is the key auditors pinned.
    let keeper = pkcs11.open_ro_session(slot).expect("session");
    keeper
        .login(UserType::User, Some(&SecretString::from(AUDIT_PIN)))
        .expect("the audit PIN opens the audit token");
    assert_eq!(
        std::fs::read_to_string(&audit.pin_file).expect("pin"),
        AUDIT_PIN
    );
    let private = keeper
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"hkms/audit-signing".to_vec()),
        ])
        .expect("find");
    assert_eq!(private.len(), 1, "one private half");
    let public = keeper
        .find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(b"hkms/audit-signing".to_vec()),
        ])
        .expect("find");
    assert_eq!(public.len(), 1, "one public half");
    let point = keeper
        .get_attributes(public[0], &[AttributeType::EcPoint])
        .expect("CKA_EC_POINT")
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(p),
            _ => None,
        })
        .expect("an EC point");
    assert_eq!(
        key_sha256(&point),
        key,
        "the audit token's pair signed the log"
    );
}

#[test]
fn a_wrong_audit_pin_stops_the_start_and_the_error_shows_no_pin() {
    let (dir, main, audit, text) = folder(true);
    std::fs::write(&audit.pin_file, "wrong-audit-pin-9999").expect("pin");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, text).expect("config");
    support::make_pki(dir.path());
    let refused = match try_spawn_server(&main, &config, dir.path()) {
        Ok(_) => panic!("the node started with a wrong audit PIN"),
        Err(out) => stderr(&out),
    };
    assert!(
        refused.contains("cannot open the audit token of [audit.token]"),
        "{refused}"
    );
    assert!(refused.contains("CKR_PIN_INCORRECT"), "{refused}");
    assert!(
        refused.contains("not [token]'s application PIN"),
        "{refused}"
    );
    for pin in ["wrong-audit-pin-9999", AUDIT_PIN, USER_PIN] {
        assert!(!refused.contains(pin), "a PIN in the error: {refused}");
    }
}

#[tokio::test]
async fn a_log_sealed_by_the_key_on_the_nodes_token_is_not_moved_to_an_audit_token() {
    let (mut node, audit) = start(false);
    a_request(&node).await;
    node.stop(); // the shutdown checkpoint seals it with the key on the node's token
    let old = std::fs::read_to_string(&node.config).expect("config");
    std::fs::write(&node.config, with_audit_token(old.clone(), &audit)).expect("config");
    let refused = match try_spawn_server(&node.token, &node.config, node.dir.path()) {
        Ok(_) => panic!("the node moved its log's key to the audit token"),
        Err(out) => stderr(&out),
    };
    assert!(refused.contains("hkms does not move the key"), "{refused}");
    assert!(
        refused.contains("leaving [audit.token] out of the config"),
        "{refused}"
    );
    assert!(
        refused.contains("hkms node init --audit-token"),
        "{refused}"
    );
    // The old layout still starts, and its log still verifies.
    std::fs::write(&node.config, old).expect("config");
    node.start_again();
    a_request(&node).await;
    export_and_verify(&node, &node.dir.path().join("bundle"), None);
}

#[tokio::test]
async fn a_config_that_drops_the_audit_token_of_a_sealed_log_stops_the_start() {
    let (mut node, _audit) = start(true);
    a_request(&node).await;
    node.stop(); // sealed on the audit token
    let text = node_config("ministry", "national", "000000", &node.token);
    std::fs::write(&node.config, text).expect("config");
    let refused = match try_spawn_server(&node.token, &node.config, node.dir.path()) {
        Ok(_) => panic!("the node signs its log with a key on the node's token"),
        Err(out) => stderr(&out),
    };
    assert!(refused.contains("has no audit-signing key"), "{refused}");
    assert!(refused.contains("[audit.token]"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_key_signs_on_after_the_node_initialises_their_shared_module_again() {
    let (dir, main, _audit, text) = folder(true);
    let config = dir.path().join("node.toml");
    std::fs::write(&config, support::with_so_pin(text, &main)).expect("config");
    let node = TestNode::start_in(dir, main, config);
    a_request(&node).await;
    let key = export_and_verify(&node, &node.dir.path().join("before"), None);

    // A card job that does not find its card has the node's token initialise the module
    // again (SoftHSM2 reads its token folder only then): the audit token's sessions, in the
    // same module, are closed under it.
    let approval = node
        .ceremony(
            hkms::proto::Operation::Manage,
            &[("action", "issue-card"), ("region", "440000")],
        )
        .await;
    assert_eq!(approval.state(), hkms::proto::CeremonyState::Done);
    let issue = [
        "transport",
        "issue-card",
        "--region",
        "440000",
        "--card",
        "card-absent",
        "--ceremony",
        &approval.id,
    ];
    let out = node.cli_as_with_input(&node.officer, &issue, Some(&format!("{USER_PIN}\n")));
    assert!(
        !out.status.success() && stderr(&out).contains("no card labelled `card-absent`"),
        "{}",
        stderr(&out)
    );
    assert!(
        node.log()
            .contains("PKCS#11 module initialised again to find tokens"),
        "{}",
        node.log()
    );

    // The next seal still signs, with the same key.
    assert_eq!(
        export_and_verify(&node, &node.dir.path().join("after"), Some(&key)),
        key
    );
}
