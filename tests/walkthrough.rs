//! docs/walkthrough.md, run as written: its `sh` blocks, in order, in one `bash` with
//! `set -euo pipefail`, in an empty folder outside the repository, with the `hkms` under test
//! first on PATH and the nodes on free ports. Any failing command fails the test.

mod support;

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use support::{hkms_bin, stderr, stdout};

/// The `sh` blocks of a Markdown text, in order, each with the line it starts on.
fn shell_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in markdown.lines().enumerate() {
        match &mut current {
            None if line.trim_end() == "```sh" => current = Some((n + 1, String::new())),
            None => {}
            Some(_) if line.trim_end() == "```" => blocks.extend(current.take()),
            Some((_, text)) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    assert!(current.is_none(), "an unclosed ```sh block");
    blocks
}

#[test]
fn the_walkthrough_runs_as_written() {
    let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/walkthrough.md");
    let text = std::fs::read_to_string(&doc).expect("docs/walkthrough.md");
    let blocks = shell_blocks(&text);
    assert!(
        blocks.len() >= 10,
        "the walkthrough's sh blocks: {}",
        blocks.len()
    );
    let mut script = String::from("set -euo pipefail\n");
    for (line, block) in &blocks {
        script.push_str(&format!(
            "echo '--- docs/walkthrough.md, the block at line {line}' >&2\n{block}"
        ));
    }

    let folder = tempfile::tempdir().expect("tempdir");
    // Three free ports, held until the shell starts.
    let held: Vec<TcpListener> = (0..3)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let ports: Vec<String> = held
        .iter()
        .map(|l| l.local_addr().expect("addr").port().to_string())
        .collect();
    let bin_dir = Path::new(hkms_bin()).parent().expect("binary folder");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(&script)
        .current_dir(folder.path())
        .env("PATH", path)
        .env("MINISTRY_PORT", &ports[0])
        .env("PROVINCE_PORT", &ports[1])
        .env("CITY_PORT", &ports[2])
        .env_remove("SOFTHSM2_CONF")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: whatever it leaves running is stopped with it.
        .process_group(0);
    for var in [
        "HKMS_SERVER",
        "HKMS_CERT",
        "HKMS_KEY",
        "HKMS_CA",
        "HKMS_CONFIG",
    ] {
        command.env_remove(var);
    }
    drop(held);
    let child = command.spawn().expect("run bash");
    let group = child.id();
    let out = child.wait_with_output().expect("wait for bash");
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .stderr(Stdio::null())
        .status();
    assert!(
        out.status.success(),
        "the walkthrough failed ({}).\n--- stdout\n{}\n--- stderr\n{}\n--- node logs\n{}",
        out.status,
        stdout(&out),
        stderr(&out),
        ["ministry", "province", "city"]
            .iter()
            .map(
                |n| std::fs::read_to_string(folder.path().join(n).join("serve.log"))
                    .unwrap_or_default()
            )
            .collect::<Vec<_>>()
            .join("\n")
    );
    let said = stdout(&out);
    for needle in ["card-440000-", "card-440100-", "OK: records 1.."] {
        assert!(said.contains(needle), "{needle}: {said}");
    }
    // The report the auditor hands in: verified against the pinned key, with the ministry's
    // tree and timeline (the browser test looks at such a page; here its content).
    let html = std::fs::read_to_string(folder.path().join("report.html")).expect("report.html");
    for needle in ["VERIFIED", "id=\"key-tree\"", "id=\"timeline\"", "440000"] {
        assert!(html.contains(needle), "report.html lacks {needle}");
    }
}

#[test]
fn shell_blocks_are_taken_in_order_and_other_blocks_left_out() {
    let md =
        "a\n```sh\none\n```\n```\nnot run\n```\n```text\nnor this\n```\n```sh\ntwo\nthree\n```\n";
    assert_eq!(
        shell_blocks(md),
        vec![(2, "one\n".to_string()), (11, "two\nthree\n".to_string())]
    );
}
