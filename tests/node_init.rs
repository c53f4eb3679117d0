//! `hkms node init`: a node set up in one command serves; a second run keeps every file; the
//! programme's TLS files are copied in and never replaced; what cannot be right is refused.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use support::{Token, hkms_bin, stderr, stdout, try_spawn_server};

fn node_init(cwd: &Path, args: &[&str]) -> Output {
    Command::new(hkms_bin())
        .args(["node", "init"])
        .args(args)
        .current_dir(cwd)
        .env_remove("SOFTHSM2_CONF")
        .stdin(Stdio::null())
        .output()
        .expect("run hkms node init")
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_node_made_by_node_init_serves_and_a_second_run_keeps_everything() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let args = [
        "--dir",
        "gd",
        "--region",
        "440000",
        "--dev-pki",
        "pki",
        "--listen",
        "127.0.0.1:0",
    ];
    let out = node_init(tmp.path(), &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let node = tmp.path().join("gd");
    let said = stdout(&out);
    assert!(
        said.contains("node node-440000 (provincial 440000)"),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "SOFTHSM2_CONF={}/softhsm/softhsm2.conf hkms serve --config {}/node.toml",
            node.display(),
            node.display()
        )),
        "{said}"
    );
    let pins = [node.join("softhsm/user.pin"), node.join("softhsm/so.pin")];
    for pin in &pins {
        assert_eq!(mode(pin), 0o600, "{}", pin.display());
        let value = String::from_utf8(read(pin)).expect("PIN text");
        assert_eq!(value.len(), 24, "a random PIN of 12 bytes in hex");
        assert!(!said.contains(&value) && !stderr(&out).contains(&value));
    }
    assert_ne!(read(&pins[0]), read(&pins[1]));
    assert_eq!(mode(&node.join("data")), 0o700);
    let config = std::fs::read_to_string(node.join("node.toml")).expect("config");
    for line in [
        "tier = \"provincial\"",
        "so_pin_file = \"softhsm/so.pin\"",
        "label = \"hkms-node-440000\"",
        "policy = \"policy.toml\"",
    ] {
        assert!(config.contains(line), "{line}: {config}");
    }

    // A second run makes nothing and changes nothing.
    let before: Vec<_> = [
        "node.toml",
        "softhsm/user.pin",
        "softhsm/so.pin",
        "policy.toml",
    ]
    .iter()
    .map(|f| read(&node.join(f)))
    .collect();
    let again = node_init(tmp.path(), &args);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(!stdout(&again).contains("  made "), "{}", stdout(&again));
    let after: Vec<_> = [
        "node.toml",
        "softhsm/user.pin",
        "softhsm/so.pin",
        "policy.toml",
    ]
    .iter()
    .map(|f| read(&node.join(f)))
    .collect();
    assert_eq!(before, after);
    // The config's token stays the node's token.
    let mut relabelled = args.to_vec();
    relabelled.extend(["--token-label", "hkms-other"]);
    let out = node_init(tmp.path(), &relabelled);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("uses the token `hkms-node-440000`"),
        "{}",
        stderr(&out)
    );

    // It serves, and a caller of its region reaches it.
    let token = made_token(&node, "hkms-node-440000", pins[0].clone());
    let (mut child, addr) = try_spawn_server(&token, &node.join("node.toml"), &node)
        .unwrap_or_else(|o| panic!("serve: {}", stderr(&o)));
    let pki = tmp.path().join("pki");
    let issued = Command::new(hkms_bin())
        .args(["pki", "issue", "--dir"])
        .arg(&pki)
        .args([
            "--identity",
            "hkms://officer/provincial/440000/gd-officer",
            "--out",
            "gd-officer",
        ])
        .output()
        .expect("pki issue");
    assert!(issued.status.success(), "{}", stderr(&issued));
    let listed = Command::new(hkms_bin())
        .args(["keys", "list", "--server", &addr.to_string(), "--cert"])
        .arg(pki.join("gd-officer.pem"))
        .arg("--key")
        .arg(pki.join("gd-officer.key"))
        .arg("--ca")
        .arg(pki.join("ca.pem"))
        .output()
        .expect("keys list");
    let _ = child.kill();
    let _ = child.wait();
    assert!(listed.status.success(), "{}", stderr(&listed));
}

#[test]
fn the_programmes_files_are_copied_in_and_never_replaced() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let pki = tmp.path().join("programme");
    hkms::pki::write_dev_pki(&pki, "programme").expect("a CA to stand for the programme's");
    let args = |cert: &str| {
        vec![
            "--dir".to_string(),
            "city".into(),
            "--region".into(),
            "440100".into(),
            "--ca".into(),
            "programme/ca.pem".into(),
            "--server-cert".into(),
            cert.into(),
            "--server-key".into(),
            "programme/server.key".into(),
            "--no-card-issuing".into(),
            "--listen".into(),
            "127.0.0.1:0".into(),
        ]
    };
    let first = args("programme/server.pem");
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    let out = node_init(tmp.path(), &first);
    assert!(out.status.success(), "{}", stderr(&out));
    let node = tmp.path().join("city");
    assert_eq!(
        read(&node.join("pki/server.pem")),
        read(&pki.join("server.pem"))
    );
    assert_eq!(mode(&node.join("pki/server.key")), 0o600);
    let config = std::fs::read_to_string(node.join("node.toml")).expect("config");
    assert!(config.contains("tier = \"municipal\""), "{config}");
    assert!(config.contains("client_ca = \"pki/ca.pem\""), "{config}");
    assert!(!config.contains("so_pin_file"), "{config}");
    assert!(stdout(&out).contains("does not issue transport key cards"));

    // Another certificate under the same name is not copied over the node's.
    std::fs::write(tmp.path().join("other.pem"), read(&pki.join("ca.pem"))).expect("write");
    let second = args("other.pem");
    let second: Vec<&str> = second.iter().map(String::as_str).collect();
    let out = node_init(tmp.path(), &second);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("pki/server.pem exists and differs"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        read(&node.join("pki/server.pem")),
        read(&pki.join("server.pem"))
    );

    // The folder of one region is not taken for another.
    let mut other_region = first.clone();
    other_region[3] = "440300";
    let out = node_init(tmp.path(), &other_region);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is the config of a node of region 440100, not 440300"),
        "{}",
        stderr(&out)
    );
    // Without a PKI there is no node.
    let out = node_init(tmp.path(), &["--dir", "x", "--region", "440100"]);
    assert!(!out.status.success());
    assert!(!tmp.path().join("x").exists());
}

#[test]
fn a_token_whose_pin_file_is_gone_is_not_given_a_new_pin() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let args = ["--dir", "m", "--region", "000000", "--dev-pki", "pki"];
    let out = node_init(tmp.path(), &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let pin = tmp.path().join("m/softhsm/user.pin");
    std::fs::remove_file(&pin).expect("remove");
    let out = node_init(tmp.path(), &args);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the token `hkms-ministry` exists but")
            && stderr(&out).contains("user.pin is missing"),
        "{}",
        stderr(&out)
    );
    assert!(!pin.exists());
}

#[test]
fn audit_token_puts_the_audit_key_on_a_second_token_with_its_own_pin() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let args = [
        "--dir",
        "m",
        "--region",
        "000000",
        "--dev-pki",
        "pki",
        "--listen",
        "127.0.0.1:0",
        "--audit-token",
    ];
    let out = node_init(tmp.path(), &args);
    assert!(out.status.success(), "{}", stderr(&out));
    let node = tmp.path().join("m");
    let said = stdout(&out);
    assert!(said.contains("made  token `hkms-ministry-audit`"), "{said}");
    assert!(
        said.contains("not to the holder of the application PIN"),
        "{said}"
    );
    let user = read(&node.join("softhsm/user.pin"));
    for pin in ["softhsm/audit-user.pin", "softhsm/audit-so.pin"] {
        let path = node.join(pin);
        assert_eq!(mode(&path), 0o600, "{pin}");
        let value = String::from_utf8(read(&path)).expect("PIN text");
        assert_eq!(value.len(), 24, "a random PIN of 12 bytes in hex");
        assert!(!said.contains(&value) && !stderr(&out).contains(&value));
        assert_ne!(read(&path), user, "{pin} is the application PIN");
    }
    let config = std::fs::read_to_string(node.join("node.toml")).expect("config");
    assert!(
        config.contains(
            "[audit.token]                     # the audit key's own token, with its own PIN\n\
             label = \"hkms-ministry-audit\"\npin_file = \"softhsm/audit-user.pin\"\n"
        ),
        "{config}"
    );

    // A second run keeps both tokens and every PIN.
    let again = node_init(tmp.path(), &args);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(!stdout(&again).contains("  made "), "{}", stdout(&again));
    assert!(
        stdout(&again).contains("kept  token `hkms-ministry-audit`"),
        "{}",
        stdout(&again)
    );

    // The node starts with its audit key on the audit token.
    let token = made_token(&node, "hkms-ministry", node.join("softhsm/user.pin"));
    let (mut child, _addr) = try_spawn_server(&token, &node.join("node.toml"), &node)
        .unwrap_or_else(|o| panic!("serve: {}", stderr(&o)));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    let log = std::fs::read_to_string(node.join("serve.log")).expect("serve.log");
    assert!(
        log.contains("the audit-signing key is on its own token")
            && log.contains("hkms-ministry-audit"),
        "{log}"
    );

    // A node set up without one does not get one later: its log's key is not moved.
    let plain = tmp.path().join("p");
    let out = node_init(
        tmp.path(),
        &["--dir", "p", "--region", "440000", "--dev-pki", "pki"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let before = read(&plain.join("node.toml"));
    let out = node_init(
        tmp.path(),
        &[
            "--dir",
            "p",
            "--region",
            "440000",
            "--dev-pki",
            "pki",
            "--audit-token",
        ],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("keeps the audit key on the token `hkms-node-440000`"),
        "{}",
        stderr(&out)
    );
    assert_eq!(read(&plain.join("node.toml")), before);
}

/// The SoftHSM2 token `label` that `node init` made in the node folder `node`, for the test
/// helpers that reach a token (its module is the one the node's config names).
fn made_token(node: &Path, label: &str, pin_file: PathBuf) -> Token {
    let conf = node.join("softhsm/softhsm2.conf");
    Token {
        kind: support::TokenKind::SoftHsm2,
        env: vec![("SOFTHSM2_CONF".into(), conf.display().to_string())],
        conf,
        module: "/unused".into(),
        label: label.into(),
        pin_file,
    }
}
