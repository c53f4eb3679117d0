//! What an operator watches: Prometheus metrics on a loopback port of their own, and JSON log
//! lines whose request id is the one in the audit record.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use hkms::proto::{self, key_service_client::KeyServiceClient};
use support::{TestNode, stderr};

const WINDOW: &str = "hkms://window/municipal/440100/w1";
const AUDITOR: &str = "hkms://auditor/national/000000/auditor-1";

/// The metrics address the node logged at start.
fn metrics_addr(node: &TestNode) -> SocketAddr {
    let log = node.log();
    let at = log
        .find("metrics on http://")
        .map(|i| &log[i + "metrics on http://".len()..])
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"));
    at.parse().expect("metrics address")
}

/// A plain HTTP/1.1 GET; returns (status line, body).
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read");
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// The value of the sample whose name is `name` and whose labels include every `labels` pair.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{').unwrap_or((series, ""));
        let all = labels
            .iter()
            .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        (n == name && all).then(|| value.parse().ok()).flatten()
    })
}

fn metrics_node() -> TestNode {
    support::start_with_extra_config(
        "\n[metrics]\nlisten = \"127.0.0.1:0\"\n\n[log]\njson = true\n",
    )
}

#[tokio::test]
async fn metrics_count_requests_denials_latency_sessions_and_the_audit_queue() {
    let node = metrics_node();
    let addr = metrics_addr(&node);
    assert!(addr.ip().is_loopback());

    let mut officer = node.client().await;
    for _ in 0..3 {
        officer
            .list_keys(proto::ListKeysRequest::default())
            .await
            .expect("officer lists keys");
    }
    let mut window = node.client_as(WINDOW).await;
    let denied = window
        .generate_key(proto::GenerateKeyRequest {
            key_type: "card-master".into(),
            ..Default::default()
        })
        .await
        .expect_err("a window may not generate national keys");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    // A certificate without an hkms identity.
    let anonymous = node
        .try_channel(support::client_tls(
            &node.ca,
            None,
            hkms::pki::Validity::days(1),
        ))
        .await
        .expect("connect");
    let status = KeyServiceClient::new(anonymous)
        .list_keys(proto::ListKeysRequest::default())
        .await
        .expect_err("no identity");
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    let (status, body) = get(addr, "/metrics");
    assert!(status.contains("200"), "{status}\n{body}");
    let ok = [("rpc", "ListKeys"), ("code", "OK")];
    assert_eq!(
        sample(&body, "hkms_requests_total", &ok),
        Some(3.0),
        "{body}"
    );
    let refused = [("rpc", "GenerateKey"), ("code", "PERMISSION_DENIED")];
    assert_eq!(sample(&body, "hkms_requests_total", &refused), Some(1.0));
    let anon = [("rpc", "ListKeys"), ("code", "UNAUTHENTICATED")];
    assert_eq!(sample(&body, "hkms_requests_total", &anon), Some(1.0));
    assert_eq!(
        sample(
            &body,
            "hkms_policy_denials_total",
            &[("rpc", "GenerateKey")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            "hkms_request_duration_seconds_count",
            &[("rpc", "ListKeys")]
        ),
        Some(4.0)
    );
    assert!(
        sample(
            &body,
            "hkms_request_duration_seconds_bucket",
            &[("rpc", "ListKeys"), ("le", "+Inf")]
        ) == Some(4.0),
        "{body}"
    );
    // Nothing in flight now: the pool (4 sessions) is idle and the audit queue empty.
    assert_eq!(
        sample(&body, "hkms_hsm_sessions", &[("state", "idle")]),
        Some(4.0)
    );
    assert_eq!(
        sample(&body, "hkms_hsm_sessions", &[("state", "busy")]),
        Some(0.0)
    );
    assert_eq!(sample(&body, "hkms_audit_queue_depth", &[]), Some(0.0));
    let writes = sample(&body, "hkms_audit_writes_total", &[]).expect("writes");
    let commits = sample(&body, "hkms_audit_commits_total", &[]).expect("commits");
    assert!(
        writes >= 5.0 && commits >= 1.0 && commits <= writes,
        "{body}"
    );

    // The HSM calls a key generation makes are timed by call and mechanism.
    let key = node.generate("card-master").await;
    // GetKey is served in batches (`generate` made one GetKey too): each request's wait, and
    // each batch's time running and recording, are measured.
    for _ in 0..3 {
        officer
            .get_key(proto::GetKeyRequest { id: key.id.clone() })
            .await
            .expect("officer reads the key");
    }
    let (_, body) = get(addr, "/metrics");
    let gets = [("rpc", "GetKey")];
    assert_eq!(
        sample(&body, "hkms_batch_wait_seconds_count", &gets),
        Some(4.0),
        "{body}"
    );
    // One after the other: four batches of one.
    for name in [
        "hkms_batch_requests",
        "hkms_batch_run_seconds",
        "hkms_batch_record_seconds",
    ] {
        let count = format!("{name}_count");
        assert_eq!(sample(&body, &count, &gets), Some(4.0), "{body}");
    }
    assert!(
        sample(&body, "hkms_batch_record_seconds_sum", &gets).is_some_and(|s| s > 0.0),
        "a durable commit takes time: {body}"
    );
    assert!(
        sample(
            &body,
            "hkms_hsm_call_duration_seconds_count",
            &[("call", "C_GenerateKey")]
        )
        .is_some_and(|n| n >= 1.0),
        "{body}"
    );

    let (status, _) = get(addr, "/nothing-here");
    assert!(status.contains("404"), "{status}");
    assert!(!node.log().contains("panicked"));
}

#[tokio::test]
async fn json_log_lines_carry_the_request_id_of_the_audit_record() {
    let node = metrics_node();
    let mut officer = node.client().await;
    officer
        .list_keys(proto::ListKeysRequest::default())
        .await
        .expect("list");

    // Every log line is one JSON object.
    let log = node.log();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let answered = lines
        .iter()
        .find(|l| l["fields"]["rpc"] == "ListKeys" && l["fields"]["message"] == "ok")
        .unwrap_or_else(|| panic!("no log line for ListKeys:\n{log}"));
    let id = answered["fields"]["request_id"]
        .as_str()
        .expect("request id")
        .to_string();
    assert!(id.starts_with("r-"), "{id}");

    // The auditor finds the same id in the ceremony log.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("bundle");
    let o = node.cli_as(
        AUDITOR,
        &["audit", "export", "--out", &out.display().to_string()],
    );
    assert!(o.status.success(), "export: {}", stderr(&o));
    let records = std::fs::read_to_string(out.join("records.jsonl")).expect("records");
    let record: serde_json::Value = records
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("record"))
        .find(|r| r["request_id"] == id.as_str())
        .unwrap_or_else(|| panic!("request {id} is not in the ceremony log"));
    assert_eq!(record["rpc"], "ListKeys");
    assert_eq!(record["actor"], node.officer.as_str());
}

#[test]
fn a_metrics_port_off_loopback_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = support::make_token(&dir.path().join("softhsm"), "hkms-test");
    let config = dir.path().join("node.toml");
    let text = support::node_config("ministry", "national", "000000", &token)
        + "\n[metrics]\nlisten = \"0.0.0.0:0\"\n";
    std::fs::write(&config, text).expect("config");
    support::make_pki(dir.path());
    let Err(out) = support::try_spawn_server(&token, &config, dir.path()) else {
        panic!("the node must not start");
    };
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(
        err.contains("[metrics]") && err.contains("loopback"),
        "{err}"
    );
}
