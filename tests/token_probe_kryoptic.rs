//! The token probe on Kryoptic: it applies the `CKA_DERIVE_TEMPLATE` hkms sets there (so a
//! derive key's child stays sensitive) and refuses copies of hkms's keys (`CKA_COPYABLE`), but
//! lets a user mark a key of their own `CKA_TRUSTED` and wrap out any key that may leave. So
//! the probe says LEAKS for that one attack, and a node told to `require_sealed` refuses it.

mod support;

use support::{TestNode, TokenKind, make_token_of, node_config, stderr, stdout};

#[test]
fn kryoptic_holds_derive_to_clear_and_leaks_a_self_trusted_key() {
    if support::kryoptic_skipped() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let token = make_token_of(TokenKind::Kryoptic, &dir.path().join("kryoptic"), "probed");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        node_config("ministry", "national", "000000", &token),
    )
    .expect("config");
    let mut node = TestNode::start_in(dir, token.clone(), config.clone());
    node.stop();

    let out = node.cli(&["token", "probe", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let verdicts = support::probe_verdicts(&report);
    for (attack, verdict) in [
        ("derive-to-clear/CKM_AES_ECB_ENCRYPT_DATA", "HOLDS"),
        ("unwrap-to-clear", "HOLDS"),
        ("copy-object", "HOLDS"),
        ("set-attribute", "HOLDS"),
        ("self-trusted-key", "LEAKS"),
    ] {
        assert_eq!(
            verdicts.get(attack).map(String::as_str),
            Some(verdict),
            "{attack}: {report}"
        );
    }
    let out = node.cli(&["token", "info", "--json"]);
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(info["derive_template"], true, "{info}");

    // Told to require a sealed token, the node refuses Kryoptic and names the attack.
    let text = std::fs::read_to_string(&config).expect("config");
    std::fs::write(
        &config,
        text.replace("sessions = 4", "sessions = 4\nrequire_sealed = true"),
    )
    .expect("config");
    let out = std::process::Command::new(support::hkms_bin())
        .args(["serve", "--config", &config.display().to_string()])
        .envs(token.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("serve");
    assert!(!out.status.success(), "{}", stdout(&out));
    let said = stderr(&out);
    assert!(
        said.contains("require_sealed") && said.contains("self-trusted-key"),
        "{said}"
    );
}
