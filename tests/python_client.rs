//! The API as another team's program meets it: examples/python/hkms_client.py, a Python client
//! built from server reflection alone (grpcio from PyPI, made by scripts/setup-python), runs an
//! officer's flow against a real node, with retries, paging and error reasons (docs/api.md).
//! `HKMS_SKIP_PYTHON_TESTS=1` skips it on a machine without Python.

mod support;

use std::process::Command;

use hkms::pki::{Validity, write_issued};
use hkms::policy::Identity;
use support::{TestNode, stderr, stdout};

/// The Python of scripts/setup-python's environment (it makes it when missing).
fn python() -> String {
    let o = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/setup-python"))
        .output()
        .expect("run scripts/setup-python");
    assert!(o.status.success(), "scripts/setup-python: {}", stderr(&o));
    stdout(&o).trim().to_string()
}

#[test]
fn a_python_client_from_reflection_runs_the_officer_flow() {
    if std::env::var("HKMS_SKIP_PYTHON_TESTS").as_deref() == Ok("1") {
        eprintln!("skipped: HKMS_SKIP_PYTHON_TESTS=1");
        return;
    }
    let python = python();
    let node = TestNode::start("national", "000000");
    let pki = node.dir.path().join("pki");
    for (stem, uri) in [
        ("officer-2", "hkms://officer/national/000000/second-officer"),
        ("auditor", "hkms://auditor/national/000000/python-auditor"),
    ] {
        let id = Identity::from_uri(uri).expect("identity");
        let cert = node
            .ca
            .issue_client(Some(&id), Validity::days(1))
            .expect("issue");
        write_issued(&pki, stem, &cert).expect("write cert");
    }
    let file = |n: &str| pki.join(n).display().to_string();
    let o = Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/python/hkms_client.py"
        ))
        .args(["--target", &node.addr.to_string(), "--ca", &file("ca.pem")])
        .args(["--officer", &file("officer.pem"), &file("officer.key")])
        .args([
            "--second-officer",
            &file("officer-2.pem"),
            &file("officer-2.key"),
        ])
        .args(["--auditor", &file("auditor.pem"), &file("auditor.key")])
        .output()
        .expect("run the Python client");
    assert!(
        o.status.success(),
        "the Python client's checks:\n{}\n{}",
        stdout(&o),
        stderr(&o)
    );
    assert!(stdout(&o).contains("every check held"), "{}", stdout(&o));
}
