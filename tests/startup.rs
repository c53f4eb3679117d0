//! The server refuses to start on a bad configuration and says why, without leaking secrets.

mod support;

use support::{Token, make_pki, make_token, node_config, stderr, try_spawn_server};

fn refuse(edit: impl FnOnce(&Token, String) -> String) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = make_token(&dir.path().join("softhsm"), "hkms-test");
    make_pki(dir.path());
    let config = dir.path().join("node.toml");
    let text = edit(
        &token,
        node_config("ministry", "national", "000000", &token),
    );
    std::fs::write(&config, text).expect("write config");
    match try_spawn_server(&token, &config, dir.path()) {
        Ok(_) => panic!("the server started on a bad configuration"),
        Err(out) => {
            assert!(!out.status.success());
            stderr(&out)
        }
    }
}

#[test]
fn wrong_pin_is_refused_at_start_up_without_echoing_it() {
    let err = refuse(|token, text| {
        let wrong = token.pin_file.with_file_name("wrong.pin");
        std::fs::write(&wrong, "not-the-pin-31337\n").expect("write pin");
        text.replace(
            &token.pin_file.display().to_string(),
            &wrong.display().to_string(),
        )
    });
    assert!(err.contains("refused the user PIN"), "{err}");
    assert!(!err.contains("not-the-pin-31337"), "{err}");
    assert!(!err.contains(support::USER_PIN), "{err}");
}

#[test]
fn missing_pin_file_is_named() {
    let err = refuse(|token, text| {
        text.replace(
            &token.pin_file.display().to_string(),
            "/nonexistent/user.pin",
        )
    });
    assert!(err.contains("/nonexistent/user.pin"), "{err}");
}

#[test]
fn unknown_token_lists_the_tokens_present() {
    let err = refuse(|_, text| text.replace("label = \"hkms-test\"", "label = \"no-such-token\""));
    assert!(
        err.contains("no token matches pkcs11:token=no-such-token"),
        "{err}"
    );
    assert!(err.contains("hkms-test"), "{err}");
}

#[test]
fn token_can_be_named_by_pkcs11_uri() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = make_token(&dir.path().join("softhsm"), "hkms-test");
    make_pki(dir.path());
    let config = dir.path().join("node.toml");
    let text = node_config("ministry", "national", "000000", &token).replace(
        "label = \"hkms-test\"",
        "uri = \"pkcs11:token=hkms-test;manufacturer=SoftHSM%20project\"",
    );
    std::fs::write(&config, text).expect("write config");
    let (mut child, _) = try_spawn_server(&token, &config, dir.path())
        .unwrap_or_else(|out| panic!("did not start: {}", stderr(&out)));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn wrong_module_path_says_what_to_do() {
    let err = refuse(|token, text| {
        text.replace(
            &token.module.display().to_string(),
            "/nonexistent/libpkcs11.so",
        )
    });
    assert!(err.contains("cannot load the PKCS#11 module"), "{err}");
}

#[test]
fn no_plaintext_listener_without_certificate_and_ca() {
    let err = refuse(|_, text| text.split("[tls]").next().unwrap_or_default().to_string());
    assert!(err.contains("only over mutual TLS"), "{err}");
    let err = refuse(|_, text| text.replace("pki/ca.pem", "pki/no-such-ca.pem"));
    assert!(err.contains("no-such-ca.pem"), "{err}");
    assert!(err.contains("client CA"), "{err}");
    let err = refuse(|_, text| text.replace("pki/server.key", "pki/ca.key"));
    assert!(err.contains("do not fit"), "{err}");
}

#[test]
fn tier_and_region_must_agree() {
    let err = refuse(|_, text| text.replace("region = \"000000\"", "region = \"440100\""));
    assert!(err.contains("make them agree"), "{err}");
}

#[test]
fn broken_policy_file_names_file_and_line() {
    let err = refuse(|token, text| {
        let policy = token.pin_file.with_file_name("policy.toml");
        std::fs::write(
            &policy,
            "[key_types.card-master]\nalgorithm = \"aes128\"\nusage = \"derive\"\nfamily = \"des3-ecb\"\nexportable = true\ngenerate_at = [\"national\"]\ndescription = \"x\"\n",
        )
        .expect("write policy");
        let default = support::default_policy().display().to_string();
        text.replace(&default, &policy.display().to_string())
    });
    assert!(err.contains("policy.toml"), "{err}");
    assert!(err.contains("line"), "{err}");
}

#[tokio::test]
async fn a_second_server_on_the_same_node_is_refused_and_the_first_serves_on() {
    let node = support::TestNode::start("national", "000000");
    let logs = tempfile::tempdir().expect("tempdir");
    match try_spawn_server(&node.token, &node.config, logs.path()) {
        Ok(_) => panic!("a second server started on the same data folder"),
        Err(out) => {
            let err = stderr(&out);
            assert!(!out.status.success());
            assert!(
                err.contains("another hkms process is using this node"),
                "{err}"
            );
        }
    }
    node.generate("card-master").await;
}

#[test]
fn the_server_raises_its_open_file_limit_and_writes_no_core_dump() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let token = make_token(&dir.path().join("softhsm"), "hkms-test");
    make_pki(dir.path());
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        node_config("ministry", "national", "000000", &token),
    )
    .expect("write config");
    // Started with a low soft limit, as many systems set it (1,024 or less).
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -S -n 256 && exec \"$0\" serve --config \"$1\"")
        .arg(support::hkms_bin())
        .arg(&config)
        .env("SOFTHSM2_CONF", &token.conf)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let listening = std::io::BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|l| l.starts_with("hkms: listening on "));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id()));
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening, "the server did not start");
    let limits = limits.expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers.len(), 2, "{line}");
    assert_eq!(numbers[0], numbers[1], "soft limit not raised: {line}");
    assert_ne!(numbers[0], "256", "{line}");
    // Key components and PINs pass through its memory: it writes no core dump.
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .expect("core file line");
    let numbers: Vec<&str> = core.split_whitespace().skip(4).take(2).collect();
    assert_eq!(numbers, ["0", "0"], "{core}");
}
