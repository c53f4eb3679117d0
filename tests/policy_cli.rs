//! `hkms policy check` and `hkms policy explain`, as an officer uses them.

mod support;

use std::process::Command;

use support::{default_policy, hkms_bin, stdout};

fn hkms(args: &[&str]) -> std::process::Output {
    Command::new(hkms_bin())
        .args(args)
        .output()
        .expect("run hkms")
}

#[test]
fn check_accepts_the_default_policy_and_names_the_line_of_a_mistake() {
    let policy = default_policy().display().to_string();
    let out = hkms(&["policy", "check", &policy]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains("policy OK"), "{}", stdout(&out));

    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(default_policy()).expect("read");
    std::fs::write(
        &bad,
        text.replacen("regions = [\"any\"]", "regions = [\"anywhere\"]", 1),
    )
    .expect("write");
    let out = hkms(&["policy", "check", &bad.display().to_string()]);
    assert!(!out.status.success());
    let msg = stdout(&out);
    assert!(msg.contains("bad.toml line"), "{msg}");
    assert!(msg.contains("unknown region scope `anywhere`"), "{msg}");
}

#[test]
fn explain_allows_a_province_its_cities_and_denies_another_province() {
    let policy = default_policy().display().to_string();
    let ask = |region: &str| {
        hkms(&[
            "policy",
            "explain",
            "--as",
            "hkms://system/provincial/440000/gd-kms",
            "--op",
            "derive",
            "--key-type",
            "card-master",
            "--region",
            region,
            "--policy",
            &policy,
        ])
    };
    let out = ask("440100");
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(stdout(&out).contains(
        "allowed: role system at 440000 may derive card-master for 440100 (rule province-diversifies-for-its-cities"
    ), "{}", stdout(&out));
    let out = ask("450100");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out)
            .contains("denied: role system at 440000 may not derive card-master for 450100"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn explain_exits_2_on_an_error_and_needs_the_policy_file_named() {
    let policy = default_policy().display().to_string();
    let base = [
        "policy",
        "explain",
        "--as",
        "hkms://system/provincial/440000/gd-kms",
        "--op",
        "derive",
        "--region",
    ];
    // No relative default that only works inside the repository: the file is named.
    let mut args = base.to_vec();
    args.push("440100");
    let out = std::process::Command::new(support::hkms_bin())
        .args(&args)
        .env_remove("HKMS_POLICY")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", support::stderr(&out));
    assert!(
        support::stderr(&out).contains("--policy"),
        "{}",
        support::stderr(&out)
    );
    // A region that is not one, or a missing file: an error (2), not a denial (1).
    for (region, file) in [
        ("44", policy.as_str()),
        ("440100", "/nonexistent/policy.toml"),
    ] {
        let mut args = base.to_vec();
        args.extend([region, "--policy", file]);
        let out = hkms(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{region} {file}: {}",
            stdout(&out)
        );
    }
    // JSON for programs.
    let mut args = base.to_vec();
    args.extend([
        "450100",
        "--key-type",
        "card-master",
        "--policy",
        &policy,
        "--json",
    ]);
    let out = hkms(&args);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["allowed"], false);
    assert_eq!(v["policy_sha256"].as_str().map(str::len), Some(64));
}

#[test]
fn check_warns_of_ceremonies_without_a_roster_and_names_what_a_file_weakens() {
    let policy = default_policy().display().to_string();
    let out = hkms(&["policy", "check", &policy]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(
            "warning: the policy puts operations under dual control but names no officer roster"
        ),
        "{}",
        stdout(&out)
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(default_policy()).expect("read");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    // With a roster: no warning, the persons named.
    let with_roster = write(
        "roster.toml",
        &format!(
            "{text}\n[officers.alice]\ncertificates = [\"{}\"]\n",
            "a".repeat(64)
        ),
    );
    let out = hkms(&["policy", "check", &with_roster]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("officers: 1 (alice)"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("warning:"), "{}", stdout(&out));

    // Against the policy in force: a lowered quorum is named, and what it takes.
    let weaker = write(
        "weaker.toml",
        &text.replacen("quorum = 2\nofficers = 3", "quorum = 1\nofficers = 3", 1),
    );
    let out = hkms(&["policy", "check", &weaker, "--against", &policy]);
    assert!(out.status.success(), "{}", stdout(&out));
    let said = stdout(&out);
    assert!(
        said.contains("weakens it; only a reload-policy ceremony"),
        "{said}"
    );
    assert!(
        said.contains("  - the quorum of generate card-master,")
            && said.contains("would drop from 2 of 3 to 1 of 3"),
        "{said}"
    );
    let out = hkms(&["policy", "check", &policy, "--against", &weaker, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("json");
    assert_eq!(v["against"]["weakens"], serde_json::json!([]), "{v}");
    // The roster added to a policy in force weakens nothing; dropped again, it does.
    let out = hkms(&["policy", "check", &policy, "--against", &with_roster]);
    assert!(
        stdout(&out).contains("the officer roster would be removed"),
        "{}",
        stdout(&out)
    );
    // An --against file that does not load: the question cannot be answered (2).
    let out = hkms(&["policy", "check", &policy, "--against", "/nonexistent.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
}
