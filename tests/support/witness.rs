//! Witnessing through the public API: a province on a fixed port and a city it witnesses,
//! requests that fill the city's log, and what each node shows of it (health, metrics, the
//! witness's records, a verified export).

use std::path::Path;
use std::time::{Duration, Instant};

use hkms::pki::{Validity, write_issued};
use hkms::policy::Identity;
use hkms::proto;
use rusqlite::params;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use super::{TestNode, make_test_token, node_config, scrape, stderr, stdout};

pub const AUDITOR_PROVINCE: &str = "hkms://auditor/provincial/440000/witness-auditor";
pub const AUDITOR_CITY: &str = "hkms://auditor/municipal/440100/city-auditor";

/// The province Guangdong, on a port that stays the same across restarts, with metrics.
pub fn province() -> TestNode {
    province_named("guangdong", "440000")
}

/// A province on a port that stays the same across restarts, with metrics.
pub fn province_named(name: &str, region: &str) -> TestNode {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = make_test_token(&dir.path().join("token"), "hkms-test");
    let config = dir.path().join("node.toml");
    let text =
        node_config(name, "provincial", region, &token) + "\n[metrics]\nlisten = \"127.0.0.1:0\"\n";
    std::fs::write(&config, text).expect("write config");
    let node = TestNode::start_in(dir, token, config);
    // Its next start listens where the nodes it witnesses look for it.
    let text = std::fs::read_to_string(&node.config).expect("config");
    let text = text.replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{}\"", node.addr),
        1,
    );
    std::fs::write(&node.config, text).expect("pin the port");
    node
}

/// The city Guangzhou (or another city of `region`) whose log `province` witnesses.
pub fn city_witnessed_by(province: &TestNode, region: &str) -> TestNode {
    witnessed_node("guangzhou", "municipal", region, &[("guangdong", province)])
}

/// A node whose log `witnesses` (name, node) witness: for each, a client certificate from the
/// witness's CA; checkpoints every 5 records or every second.
pub fn witnessed_node(
    name: &str,
    tier: &str,
    region: &str,
    witnesses: &[(&str, &TestNode)],
) -> TestNode {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = make_test_token(&dir.path().join("token"), "hkms-test");
    let mut text = node_config(name, tier, region, &token)
        + "\n[audit]\ncheckpoint_every = 5\ncheckpoint_interval_secs = 1\n";
    for (witness, node) in witnesses {
        let w = dir.path().join(format!("witness-{witness}"));
        std::fs::create_dir_all(&w).expect("mkdir");
        let id = Identity::from_uri(&format!("hkms://system/{tier}/{region}/{name}-node"))
            .expect("identity");
        let cert = node
            .ca
            .issue_client(Some(&id), Validity::days(1))
            .expect("issue");
        write_issued(&w, "client", &cert).expect("write client cert");
        std::fs::write(w.join("ca.pem"), node.ca.cert_pem()).expect("write ca");
        text += &format!(
            r#"
[[witnesses]]
name = "{witness}"
url = "{url}"
ca = "witness-{witness}/ca.pem"
cert = "witness-{witness}/client.pem"
key = "witness-{witness}/client.key"
retry_secs = 1
"#,
            url = node.url()
        );
    }
    let config = dir.path().join("node.toml");
    std::fs::write(&config, text).expect("write config");
    TestNode::start_in(dir, token, config)
}

/// Some requests, each one record in the city's log.
pub async fn busy(city: &TestNode, n: usize) {
    let mut client = city.client().await;
    for _ in 0..n {
        client
            .list_keys(proto::ListKeysRequest::default())
            .await
            .expect("list keys");
    }
}

pub async fn health(node: &TestNode, service: &str) -> ServingStatus {
    match HealthClient::new(node.channel().await)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
    {
        Ok(r) => r.into_inner().status(),
        Err(_) => ServingStatus::Unknown,
    }
}

/// Waits (at most 60 s) until `f` holds; a bound on the wait, not a timing assertion.
pub async fn wait_until<F, Fut>(what: &str, nodes: &[&TestNode], mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        if start.elapsed() > Duration::from_secs(60) {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let logs: Vec<String> = nodes
                .iter()
                .map(|n| format!("{}\n{}", n.log(), scrape(n)))
                .collect();
            panic!(
                "gave up waiting until {what}; the nodes' logs:\n{}",
                logs.join("\n----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The record lines of `node`'s log, through an auditor's export.
pub fn exported_records(node: &TestNode, auditor: &str) -> Vec<String> {
    let out = tempfile::tempdir().expect("tempdir");
    let bundle = out.path().join("bundle");
    let o = node.cli_as(
        auditor,
        &["audit", "export", "--out", bundle.to_str().expect("utf-8")],
    );
    assert!(o.status.success(), "export: {}", stderr(&o));
    std::fs::read_to_string(bundle.join("records.jsonl"))
        .expect("records")
        .lines()
        .map(str::to_string)
        .collect()
}

/// The witness's records of checkpoints of `node`, as (result code, params) pairs.
pub fn witness_records(province: &TestNode) -> Vec<(String, serde_json::Value)> {
    exported_records(province, AUDITOR_PROVINCE)
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r["rpc"] == "WitnessCheckpoint")
        .map(|r| {
            (
                r["result"]["code"].as_str().unwrap_or("").to_string(),
                r["params"].clone(),
            )
        })
        .collect()
}

/// Attack 2: the log cut back to its checkpoint at or before `keep`, as if nothing came after.
pub fn cut_back(city: &TestNode, keep: i64) -> i64 {
    let db = rusqlite::Connection::open(city.database()).expect("open registry");
    let at: i64 = db
        .query_row(
            "SELECT max(seq) FROM audit_checkpoints WHERE seq <= ?1",
            params![keep],
            |r| r.get(0),
        )
        .expect("a checkpoint to cut back to");
    db.execute("DELETE FROM audit_checkpoints WHERE seq > ?1", params![at])
        .expect("delete checkpoints");
    db.execute("DELETE FROM audit_log WHERE seq > ?1", params![at])
        .expect("delete records");
    at
}

pub fn refusals(province: &TestNode) -> u64 {
    scrape(province)
        .lines()
        .find(|l| l.starts_with("hkms_witness_refusals_total"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

pub fn backlog(city: &TestNode) -> Option<u64> {
    scrape(city)
        .lines()
        .find(|l| l.starts_with("hkms_witness_backlog_records{witness=\"guangdong\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

pub async fn cosigned(city: &TestNode) -> bool {
    cosigned_by(city, "guangdong").await
}

/// Whether `witness` has cosigned `node`'s newest checkpoint (health `witnessed/NAME`).
pub async fn cosigned_by(node: &TestNode, witness: &str) -> bool {
    health(node, &format!("witnessed/{witness}")).await == ServingStatus::Serving
}

/// The audit key SHA-256 a node logged at start.
pub fn audit_key_sha256(node: &TestNode) -> String {
    let log = node.log();
    let at = log
        .find("audit_key_sha256=")
        .expect("the node logs its audit key");
    log[at + "audit_key_sha256=".len()..]
        .chars()
        .take(64)
        .collect()
}

pub fn verify(bundle: &Path, node_key: &str, witness_key: &str) -> (bool, String) {
    let o = std::process::Command::new(super::hkms_bin())
        .args(["audit", "verify"])
        .arg(bundle)
        .args([
            "--expect-key-sha256",
            node_key,
            "--witness-key-sha256",
            witness_key,
        ])
        .output()
        .expect("run verify");
    (o.status.success(), format!("{}{}", stdout(&o), stderr(&o)))
}

/// An auditor of `node` exports its log and verifies it, pinning `node`'s key and `witness`'s.
pub fn export_and_verify(node: &TestNode, auditor: &str, witness: &TestNode) -> (bool, String) {
    let out = tempfile::tempdir().expect("tempdir");
    let bundle = out.path().join("bundle");
    let o = node.cli_as(
        auditor,
        &["audit", "export", "--out", bundle.to_str().expect("utf-8")],
    );
    assert!(o.status.success(), "export: {}", stderr(&o));
    verify(&bundle, &audit_key_sha256(node), &audit_key_sha256(witness))
}
