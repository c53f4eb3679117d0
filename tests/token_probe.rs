//! The token probe on SoftHSM2 as the node's operator meets it: `hkms token probe` names every
//! attack with its verdict, `token info` and the node's health carry the verdict, the probe
//! leaves the token as it found it, and a node told to `require_sealed` refuses SoftHSM2, which
//! lets a derive key's child out in clear (it does not enforce `CKA_DERIVE_TEMPLATE`).
//!
//! A single test: it counts the token's objects through this process's module.

mod support;

use cryptoki::session::UserType;
use secrecy::SecretString;
use support::{TestNode, USER_PIN, make_token, node_config, stderr, stdout};

/// Every object this process's module sees on the token, logged in: token objects, and the
/// session objects of this process.
fn object_count(pkcs11: &cryptoki::context::Pkcs11, label: &str) -> usize {
    let session = pkcs11
        .open_ro_session(support::slot_of(pkcs11, label))
        .expect("session");
    let _ = session.login(UserType::User, Some(&SecretString::from(USER_PIN)));
    session.find_objects(&[]).expect("find").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_names_what_leaks_and_a_sealed_node_refuses_softhsm2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = make_token(&dir.path().join("softhsm"), "probed");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        node_config("ministry", "national", "000000", &token),
    )
    .expect("config");
    let pkcs11 = support::init_pkcs11(&token);

    // A node ran the probe at start; its objects made, it is stopped.
    let mut node = TestNode::start_in(dir, token.clone(), config.clone());
    node.generate("card-master").await;
    node.stop();
    let before = object_count(&pkcs11, "probed");

    let out = node.cli(&["token", "probe", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["sealed"], false);
    let verdicts = support::probe_verdicts(&report);
    let want = |name: &str, verdict: &str| {
        assert_eq!(
            verdicts.get(name).map(String::as_str),
            Some(verdict),
            "{name}: {report}"
        );
    };
    want("derive-to-clear/CKM_AES_ECB_ENCRYPT_DATA", "LEAKS");
    for holds in [
        "unwrap-to-clear",
        "unwrap-to-encrypt",
        "wrap-under-own-key",
        "self-trusted-key",
        "wrap-then-decrypt",
        "set-attribute",
        "copy-object",
        "read-value",
        "destroy-sealed-public-key",
    ] {
        want(holds, "HOLDS");
    }
    // Every other derive mechanism SoftHSM2 lists (DES3 and CBC encrypt-data, concatenation,
    // …) is tried too, and refused: hkms's derive keys allow only their own.
    let others: Vec<_> = verdicts
        .iter()
        .filter(|(n, _)| {
            n.starts_with("derive-to-clear/") && !n.ends_with("CKM_AES_ECB_ENCRYPT_DATA")
        })
        .collect();
    assert!(!others.is_empty(), "{report}");
    assert!(others.iter().all(|(_, v)| *v == "HOLDS"), "{report}");
    assert_eq!(verdicts.len(), 10 + others.len(), "{report}");
    let leaks_line = format!("1 of {} attacks leak", verdicts.len());
    assert_eq!(
        object_count(&pkcs11, "probed"),
        before,
        "the CLI's probe left objects"
    );

    // In this process, where its session objects would be visible, it leaves none either.
    let hsm = support::open_token(&token, "probed");
    let in_process = hsm.probe_attacks().expect("probe");
    assert_eq!(in_process.leaks().len(), 1);
    assert_eq!(
        object_count(&pkcs11, "probed"),
        before,
        "the probe left objects"
    );
    drop(hsm);

    // The table, and `token info`'s summary.
    let out = node.cli(&["token", "probe"]);
    let text = stdout(&out);
    assert!(
        text.contains("LEAKS  derive-to-clear/CKM_AES_ECB_ENCRYPT_DATA")
            && text.contains("HOLDS  unwrap-to-clear")
            && text.contains("CKA_UNWRAP_TEMPLATE of the loaded transport key")
            && text.contains(&leaks_line),
        "{text}"
    );
    let out = node.cli(&["token", "info"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        text.contains(&leaks_line) && text.contains("LEAKS derive-to-clear"),
        "{text}"
    );
    // SoftHSM2 2.6.1 does not take CKA_DERIVE_TEMPLATE, so hkms sets none there.
    let out = node.cli(&["token", "info", "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(info["derive_template"], false, "{info}");
    assert_eq!(info["probe"]["sealed"], false, "{info}");

    // The node started with the dev default says so in its health; told to require a sealed
    // token, it refuses to start and names the attack.
    node.start_again();
    let mut health = tonic_health::pb::health_client::HealthClient::new(node.channel().await);
    let sealed = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "token-sealed".into(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        sealed.status(),
        tonic_health::pb::health_check_response::ServingStatus::NotServing
    );
    assert!(
        node.log()
            .contains("token probe: the token lets attacks through"),
        "{}",
        node.log()
    );
    node.stop();
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("sessions = 4", "sessions = 4\nrequire_sealed = true"),
    )
    .expect("config");
    let out = std::process::Command::new(support::hkms_bin())
        .args(["serve", "--config", &config.display().to_string()])
        .env("SOFTHSM2_CONF", &token.conf)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("serve");
    assert!(!out.status.success());
    let said = stderr(&out);
    assert!(
        said.contains("require_sealed")
            && said.contains("derive-to-clear/CKM_AES_ECB_ENCRYPT_DATA"),
        "{said}"
    );
}
