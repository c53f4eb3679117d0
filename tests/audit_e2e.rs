//! The ceremony log end to end: an auditor exports a bundle through the API and verifies it
//! offline; every kind of tampering is found and named; no secret is in the log; and a SIGKILL
//! while requests are being logged (after 8 were acknowledged, before all were) loses no
//! acknowledged request.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use hkms::proto::{self, key_service_client::KeyServiceClient};
use hkms::store::AuditLog;
use support::{SO_PIN, TestNode, USER_PIN, stderr, stdout};
use tonic::transport::Channel;

const AUDITOR: &str = "hkms://auditor/national/000000/auditor-1";
const WINDOW: &str = "hkms://window/municipal/440100/w1";

/// Exports the log into `out`; the SHA-256 of the node's audit key, as the node gives it.
/// Every record's `prev` and every checkpoint's `head` is recomputed with `sha2`, not hkms.
fn export(node: &TestNode, out: &Path) -> String {
    let key_sha256 = export_as_is(node, out);
    support::chain_by_sha2(out);
    key_sha256
}

/// [`export`] of a log that may have been broken on purpose: no check of the chain.
fn export_as_is(node: &TestNode, out: &Path) -> String {
    let o = node.cli_as(
        AUDITOR,
        &["audit", "export", "--out", &out.display().to_string()],
    );
    assert!(o.status.success(), "export: {}", stderr(&o));
    support::exported_key_sha256(&o)
}

/// Verifies a bundle against the node's key (`key_sha256`).
fn verify(bundle: &Path, key_sha256: &str) -> (bool, String) {
    let o = std::process::Command::new(support::hkms_bin())
        .args(["audit", "verify", &bundle.display().to_string()])
        .args(["--expect-key-sha256", key_sha256])
        .output()
        .expect("run verify");
    (o.status.success(), stdout(&o))
}

fn copy_bundle(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for f in [
        "records.jsonl",
        "checkpoints.jsonl",
        "public-key.pem",
        "manifest.json",
    ] {
        std::fs::copy(from.join(f), to.join(f)).expect("copy");
    }
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .expect("read")
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(p: &Path, l: &[String]) {
    std::fs::write(p, l.iter().map(|x| format!("{x}\n")).collect::<String>()).expect("write");
}

/// A node with some history: a ceremony, derivations, a denial.
async fn busy_node() -> (TestNode, proto::Key) {
    let node = TestNode::start("national", "000000");
    let root = node.generate("card-master").await;
    let mut c = node.client().await;
    for region in ["440000", "450000", "110000"] {
        c.derive_sub_key(proto::DeriveSubKeyRequest {
            parent_id: root.id.clone(),
            region: region.into(),
            ..Default::default()
        })
        .await
        .expect("derive");
    }
    let mut window = node.client_as(WINDOW).await;
    let _ = window
        .generate_key(proto::GenerateKeyRequest {
            key_type: "card-master".into(),
            ..Default::default()
        })
        .await;
    (node, root)
}

#[tokio::test]
async fn an_auditor_exports_a_bundle_that_verifies_offline_and_reports_the_ceremony() {
    let (node, root) = busy_node().await;
    let dir = tempfile::tempdir().expect("tempdir");

    // Only auditors read the log.
    let o = node.cli(&[
        "audit",
        "export",
        "--out",
        &dir.path().join("x").display().to_string(),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("PERMISSION_DENIED"), "{}", stderr(&o));

    let bundle = dir.path().join("bundle");
    let key_sha256 = export(&node, &bundle);
    let (ok, out) = verify(&bundle, &key_sha256);
    assert!(ok, "{out}");
    assert!(out.starts_with("OK: records 1.."), "{out}");
    // Without the pin it checks only that the bundle agrees with itself: not a pass.
    let o = std::process::Command::new(support::hkms_bin())
        .args(["audit", "verify", &bundle.display().to_string()])
        .output()
        .expect("run verify");
    assert_eq!(o.status.code(), Some(3), "{}", stdout(&o));
    assert!(
        stdout(&o).starts_with("UNPINNED: records 1.."),
        "{}",
        stdout(&o)
    );

    // Pinning the node's key by the SHA-256 the node publishes (GetPublicKey, via export).
    let key = node.cli_as(
        AUDITOR,
        &[
            "audit",
            "export",
            "--out",
            &dir.path().join("b2").display().to_string(),
        ],
    );
    assert!(key.status.success());
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(bundle.join("manifest.json")).expect("manifest"),
    )
    .expect("json");
    let fp = manifest["key_fingerprint"].as_str().expect("fingerprint");
    let said = stdout(&key);
    let sha256 = said
        .split("SHA-256 ")
        .nth(1)
        .and_then(|rest| rest.get(..64))
        .expect("export prints the key's SHA-256");
    assert!(sha256.starts_with(fp), "{said}");
    let as_json = node.cli_as(
        AUDITOR,
        &[
            "audit",
            "export",
            "--json",
            "--out",
            &dir.path().join("b3").display().to_string(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&as_json)).expect("export --json");
    assert_eq!(v["key_sha256"], sha256);
    let verify_pinned = |expected: &str| {
        std::process::Command::new(support::hkms_bin())
            .args([
                "audit",
                "verify",
                &bundle.display().to_string(),
                "--expect-key-sha256",
                expected,
            ])
            .output()
            .expect("verify")
    };
    let o = verify_pinned(sha256);
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(stdout(&o).contains(sha256), "{}", stdout(&o));
    // The same verdict as JSON, for programs; the exit codes do not change.
    for (pin, verdict, code) in [(Some(sha256), "OK", 0), (None, "UNPINNED", 3)] {
        let mut args = vec!["audit", "verify", "--json"];
        let bundle_arg = bundle.display().to_string();
        args.push(&bundle_arg);
        if let Some(pin) = pin {
            args.extend(["--expect-key-sha256", pin]);
        }
        let o = std::process::Command::new(support::hkms_bin())
            .args(&args)
            .output()
            .expect("verify --json");
        assert_eq!(o.status.code(), Some(code), "{}", stdout(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
        assert_eq!(v["verdict"], verdict);
        assert_eq!(v["key_sha256"], sha256);
    }
    // The 6-digit fingerprint alone cannot vouch for the key: a usage error (2), not BROKEN.
    let o = verify_pinned(fp);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(
        support::stderr(&o).contains("short fingerprint"),
        "{}",
        support::stderr(&o)
    );

    // Every request is there, allowed or denied, with its decision and the policy's hash.
    let records: Vec<serde_json::Value> = lines(&bundle.join("records.jsonl"))
        .iter()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect();
    let denied = records
        .iter()
        .find(|r| r["actor"] == WINDOW && r["rpc"] == "GenerateKey")
        .expect("the window's denied request is recorded");
    assert_eq!(denied["result"]["code"], "PERMISSION_DENIED");
    assert_eq!(denied["decision"]["allowed"], false);
    assert_eq!(denied["policy_sha256"].as_str().map(str::len), Some(64));
    let made = records
        .iter()
        .find(|r| r["rpc"] == "ExecuteCeremony")
        .expect("the ceremony's execution is recorded");
    assert_eq!(made["key_ids"][0], root.id.as_str());
    assert_eq!(made["kcvs"][0]["kcv"], root.kcv.as_str());

    // The report names the ceremony's officers and the key's KCV.
    let o = std::process::Command::new(support::hkms_bin())
        .args(["audit", "report", &bundle.display().to_string()])
        .output()
        .expect("report");
    let report = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        report.contains(&node.officer) && report.contains(&node.second_officer()),
        "{report}"
    );
    assert!(report.contains(&root.kcv), "{report}");
    // A 2-of-2 ceremony: the opener's approval counts, as it did at the node.
    assert!(
        report.contains("**Outcome:** executed, 2 approvals"),
        "{report}"
    );
    let refused = report
        .split("## Refused requests")
        .nth(1)
        .expect("refusals");
    assert!(
        refused.contains("### `PERMISSION_DENIED`") && refused.contains(WINDOW),
        "{refused}"
    );

    // No PIN and no key value anywhere in the bundle, the registry or the log lines.
    let mut hay = Vec::new();
    for f in ["records.jsonl", "checkpoints.jsonl", "manifest.json"] {
        hay.push(std::fs::read(bundle.join(f)).expect("read"));
    }
    hay.push(node.log().into_bytes());
    for f in ["registry.sqlite", "registry.sqlite-wal"] {
        if let Ok(b) = std::fs::read(node.dir.path().join("data").join(f)) {
            hay.push(b);
        }
    }
    for secret in [USER_PIN, SO_PIN] {
        for h in &hay {
            assert!(
                !h.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a PIN leaked"
            );
        }
    }
}

#[tokio::test]
async fn every_kind_of_tampering_is_found_and_named() {
    let (node, _) = busy_node().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let clean = dir.path().join("clean");
    let key_sha256 = export(&node, &clean);
    assert!(verify(&clean, &key_sha256).0);
    let records = lines(&clean.join("records.jsonl"));
    let n = records.len();
    assert!(n >= 8, "{n} records");

    let case = |name: &str, edit: &dyn Fn(&Path)| -> String {
        let b: PathBuf = dir.path().join(name);
        copy_bundle(&clean, &b);
        edit(&b);
        let (ok, out) = verify(&b, &key_sha256);
        assert!(!ok, "{name}: tampering not found: {out}");
        out
    };
    let recs = |b: &Path| b.join("records.jsonl");

    // A manifest that names another node than its records and checkpoints.
    let out = case("another node", &|b| {
        let m = std::fs::read_to_string(b.join("manifest.json")).expect("manifest");
        let mut m: serde_json::Value = serde_json::from_str(&m).expect("json");
        m["node"] = serde_json::Value::from("guangzhou");
        std::fs::write(b.join("manifest.json"), m.to_string()).expect("write");
    });
    assert!(out.contains("logs of two nodes"), "{out}");
    // A node name with terminal controls reaches the auditor's terminal escaped.
    let out = case("hostile node name", &|b| {
        let m = std::fs::read_to_string(b.join("manifest.json")).expect("manifest");
        let mut m: serde_json::Value = serde_json::from_str(&m).expect("json");
        m["node"] = serde_json::Value::from("gz\u{1b}]0;owned\u{7}\u{1b}[2J");
        std::fs::write(b.join("manifest.json"), m.to_string()).expect("write");
    });
    assert!(
        out.contains("logs of two nodes") && !out.contains('\u{1b}') && !out.contains('\u{7}'),
        "{out:?}"
    );

    let out = case("changed", &|b| {
        let mut l = lines(&recs(b));
        l[2] = l[2].replacen("\"rpc\":\"", "\"rpc\":\"X", 1);
        write_lines(&recs(b), &l);
    });
    assert!(
        out.contains("record 4 (records.jsonl line 4)") && out.contains("record 3"),
        "{out}"
    );

    let out = case("deleted", &|b| {
        let mut l = lines(&recs(b));
        l.remove(2);
        write_lines(&recs(b), &l);
    });
    assert!(out.contains("record 3 is missing"), "{out}");

    let out = case("inserted", &|b| {
        let mut l = lines(&recs(b));
        let copy = l[2].clone();
        l.insert(3, copy);
        write_lines(&recs(b), &l);
    });
    assert!(out.contains("records.jsonl line 4"), "{out}");

    let out = case("swapped", &|b| {
        let mut l = lines(&recs(b));
        l.swap(3, 4);
        write_lines(&recs(b), &l);
    });
    assert!(
        out.contains("records.jsonl line 4") && out.contains("record 5"),
        "{out}"
    );

    let out = case("truncated", &|b| {
        let mut l = lines(&recs(b));
        l.truncate(n - 2);
        write_lines(&recs(b), &l);
    });
    assert!(out.contains("truncated tail"), "{out}");

    let out = case("forged-signature", &|b| {
        let p = b.join("checkpoints.jsonl");
        let mut l = lines(&p);
        let last = l.len() - 1;
        let mut cp: serde_json::Value = serde_json::from_str(&l[last]).expect("checkpoint");
        let sig = cp["signature"].as_str().expect("sig").to_string();
        let flipped = if sig.ends_with('0') { "1" } else { "0" };
        cp["signature"] = serde_json::Value::String(format!("{}{flipped}", &sig[..sig.len() - 1]));
        l[last] = cp.to_string();
        write_lines(&p, &l);
    });
    assert!(
        out.contains("checkpoint") && out.contains("does not verify"),
        "{out}"
    );

    let out = case("other-key", &|b| {
        use ring::rand::SystemRandom;
        use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("key");
        let other = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .expect("key");
        let p = b.join("checkpoints.jsonl");
        let mut l = lines(&p);
        let last = l.len() - 1;
        let cp: hkms::audit::Checkpoint = serde_json::from_str(&l[last]).expect("checkpoint");
        let sig = other
            .sign(&rng, cp.signed_message().as_bytes())
            .expect("sign");
        let forged = hkms::audit::Checkpoint {
            signature: hex::encode(sig.as_ref()),
            ..cp
        };
        l[last] = serde_json::to_string(&forged).expect("json");
        write_lines(&p, &l);
    });
    assert!(out.contains("does not verify"), "{out}");
}

/// Derives for `regions` in turn until one fails; counts each acknowledged one in `acks`.
async fn derive_until_killed(
    channel: Channel,
    parent: String,
    regions: Vec<&'static str>,
    acks: Arc<AtomicUsize>,
) -> Vec<String> {
    let mut c = KeyServiceClient::new(channel);
    let mut acknowledged = Vec::new();
    for region in regions {
        match c
            .derive_sub_key(proto::DeriveSubKeyRequest {
                parent_id: parent.clone(),
                region: region.into(),
                ..Default::default()
            })
            .await
        {
            Ok(r) => {
                acknowledged.push(r.into_inner().key.expect("key").id);
                acks.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => break,
        }
    }
    acknowledged
}

/// How many derivations must be acknowledged before the kill.
const ACKED_BEFORE_KILL: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_while_logging_loses_no_acknowledged_request() {
    let mut node = TestNode::start("national", "000000");
    let root = node.generate("card-master").await;
    let provinces = [
        "110000", "120000", "130000", "140000", "150000", "210000", "220000", "230000", "310000",
        "320000", "330000", "340000", "350000", "360000", "370000", "410000", "420000", "430000",
        "440000", "450000", "460000", "500000", "510000", "520000", "530000", "540000", "610000",
        "620000", "630000", "640000", "650000", "710000", "810000", "820000",
    ];
    // Two clients derive concurrently; the server is killed while they run, as soon as
    // ACKED_BEFORE_KILL derivations were acknowledged (not after a fixed time, which on a slow
    // run could come before the first one).
    let acks = Arc::new(AtomicUsize::new(0));
    let a = tokio::spawn(derive_until_killed(
        node.channel().await,
        root.id.clone(),
        provinces[..17].to_vec(),
        acks.clone(),
    ));
    let b = tokio::spawn(derive_until_killed(
        node.channel().await,
        root.id.clone(),
        provinces[17..].to_vec(),
        acks.clone(),
    ));
    for _ in 0..120_000 {
        if acks.load(Ordering::SeqCst) >= ACKED_BEFORE_KILL || (a.is_finished() && b.is_finished())
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    node.kill();
    let mut acknowledged = a.await.expect("client a");
    acknowledged.extend(b.await.expect("client b"));
    eprintln!(
        "{} of {} derivations were acknowledged before the kill",
        acknowledged.len(),
        provinces.len()
    );
    // The test tests something: requests were acknowledged before the kill, and the kill cut
    // the rest short.
    assert!(
        acknowledged.len() >= ACKED_BEFORE_KILL,
        "only {} derivations were acknowledged before the kill",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() < provinces.len(),
        "every derivation was acknowledged: the kill cut none"
    );

    node.start_again();
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("after-crash");
    let key_sha256 = export(&node, &bundle);
    let (ok, out) = verify(&bundle, &key_sha256);
    assert!(ok, "the chain does not verify after a crash: {out}");
    let logged: Vec<serde_json::Value> = lines(&bundle.join("records.jsonl"))
        .iter()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect();
    for id in &acknowledged {
        assert!(
            logged.iter().any(|r| r["result"]["ok"] == true
                && r["key_ids"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|x| x == id.as_str()))),
            "acknowledged key {id} is missing from the log"
        );
    }
    // Every acknowledged key is registered; token and registry agree (or the orphan check
    // reports the key a crash cut between the HSM and the registry).
    let mut c = node.client().await;
    for id in &acknowledged {
        c.get_key(proto::GetKeyRequest { id: id.clone() })
            .await
            .expect("acknowledged key is registered");
    }
    let o = node.cli(&["keys", "orphans"]);
    let text = stdout(&o);
    assert!(
        text.contains(" 0 missing") || text.contains("0 orphans, 0 missing"),
        "{text}"
    );
}

async fn checkpoints(node: &TestNode) -> Vec<hkms::audit::Checkpoint> {
    hkms::proto::audit_service_client::AuditServiceClient::new(node.channel_as(AUDITOR).await)
        .get_checkpoints(proto::GetCheckpointsRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("checkpoints")
        .into_inner()
        .checkpoints
        .iter()
        .map(|l| serde_json::from_str(l).expect("checkpoint"))
        .collect()
}

#[tokio::test]
async fn checkpoints_come_every_n_records_and_at_shutdown_and_records_filter() {
    let mut node = support::start_with_extra_config(
        "\n[audit]\ncheckpoint_every = 5\ncheckpoint_interval_secs = 3600\n",
    );
    let mut c = node.client().await;
    for _ in 0..12 {
        c.list_keys(proto::ListKeysRequest::default())
            .await
            .expect("list");
    }
    let seqs: Vec<u64> = checkpoints(&node).await.iter().map(|c| c.seq).collect();
    assert_eq!(&seqs[..2], &[5, 10], "{seqs:?}");

    // A graceful stop seals everything acknowledged.
    node.stop();
    let store = hkms::store::SqliteStore::open(&node.database()).expect("store");
    let (last, _) = store.audit_head().expect("head").expect("records");
    assert_eq!(
        store
            .checkpoints()
            .expect("checkpoints")
            .last()
            .map(|c| c.seq),
        Some(last)
    );
    drop(store);

    // Records can be filtered by actor and operation.
    node.start_again();
    let _ = node
        .client_as(WINDOW)
        .await
        .list_keys(proto::ListKeysRequest::default())
        .await;
    let mut a =
        hkms::proto::audit_service_client::AuditServiceClient::new(node.channel_as(AUDITOR).await);
    let mut stream = a
        .stream_records(proto::StreamRecordsRequest {
            actor: WINDOW.into(),
            ..Default::default()
        })
        .await
        .expect("stream")
        .into_inner();
    let mut got = Vec::new();
    while let Some(r) = tokio_stream::StreamExt::next(&mut stream).await {
        got.push(r.expect("record").line);
    }
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("\"rpc\":\"ListKeys\""), "{}", got[0]);
}

#[tokio::test]
async fn a_node_does_not_seal_a_log_changed_under_it() {
    let mut node = support::start_with_extra_config(
        "\n[audit]\ncheckpoint_every = 1000\ncheckpoint_interval_secs = 3600\n",
    );
    let mut c = node.client().await;
    for _ in 0..3 {
        c.list_keys(proto::ListKeysRequest::default())
            .await
            .expect("list");
    }
    node.stop(); // sealed up to record 3

    // Someone with the database rewrites the sealed record 3, hash column and all.
    {
        use sha2::Digest;
        let db = rusqlite::Connection::open(node.database()).expect("registry");
        let line: String = db
            .query_row("SELECT line FROM audit_log WHERE seq = 3", [], |r| r.get(0))
            .expect("record 3");
        let forged = line.replacen("\"rpc\":\"ListKeys\"", "\"rpc\":\"ListKeyz\"", 1);
        assert_ne!(forged, line);
        let hash = hex::encode(sha2::Sha256::digest(forged.as_bytes()));
        db.execute(
            "UPDATE audit_log SET line = ?1, hash = ?2 WHERE seq = 3",
            rusqlite::params![forged, hash],
        )
        .expect("rewrite");
    }
    node.start_again();
    node.client()
        .await
        .list_keys(proto::ListKeysRequest::default())
        .await
        .expect("requests are still served");
    // Sealing refuses: the node signs only what chains to its last checkpoint. An export
    // still gets the log as it is, and the verifier names where it breaks.
    let checkpoints =
        hkms::proto::audit_service_client::AuditServiceClient::new(node.channel_as(AUDITOR).await)
            .get_checkpoints(proto::GetCheckpointsRequest {
                seal: true,
                page_size: 1000,
                ..Default::default()
            })
            .await
            .expect("the checkpoints there are")
            .into_inner()
            .checkpoints;
    let last: serde_json::Value =
        serde_json::from_str(checkpoints.last().expect("one")).expect("checkpoint");
    assert_eq!(last["seq"], 3, "nothing sealed after the change");
    assert!(
        node.log().contains("changed outside hkms"),
        "{}",
        node.log()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("changed");
    let key_sha256 = export_as_is(&node, &bundle);
    let (ok, out) = verify(&bundle, &key_sha256);
    assert!(!ok, "{out}");
    assert!(out.starts_with("BROKEN"), "{out}");
}

#[tokio::test]
async fn time_filters_compare_instants_and_refuse_what_is_not_a_time() {
    use prost_types::Timestamp;
    use time::format_description::well_known::Rfc3339;
    let (node, _) = busy_node().await;
    let a =
        hkms::proto::audit_service_client::AuditServiceClient::new(node.channel_as(AUDITOR).await);
    // Each stream is itself recorded: the range is fixed to the records there at the start.
    let lines = |since: Option<Timestamp>, until: Option<Timestamp>, to_seq: u64| {
        let req = proto::StreamRecordsRequest {
            since,
            until,
            to_seq,
            ..Default::default()
        };
        let mut a = a.clone();
        async move {
            let mut stream = a.stream_records(req).await?.into_inner();
            let mut got = Vec::new();
            while let Some(r) = tokio_stream::StreamExt::next(&mut stream).await {
                got.push(r?.line);
            }
            Ok::<_, tonic::Status>(got)
        }
    };
    let stamp = |t: time::OffsetDateTime| {
        Some(Timestamp {
            seconds: t.unix_timestamp(),
            nanos: t.nanosecond() as i32,
        })
    };
    let all = lines(None, None, 0).await.expect("all");
    assert!(all.len() >= 5, "{all:?}");
    let last = all.len() as u64;
    // The third record's time, as the log writes it (UTC, milliseconds).
    let third: serde_json::Value = serde_json::from_str(&all[2]).expect("record");
    let at = third["time"].as_str().expect("time").to_string();
    let instant = time::OffsetDateTime::parse(&at, &Rfc3339).expect("RFC 3339");
    let from_third = lines(stamp(instant), None, last).await.expect("since");
    assert!(from_third.len() <= all.len() - 2 && !from_third.is_empty());
    assert_eq!(from_third[0], all[all.len() - from_third.len()]);
    assert!(from_third.contains(&all[2]), "since is inclusive");
    // The same instant written at +08:00, as a client reads it into a Timestamp, selects the
    // same records.
    let offset = instant
        .to_offset(time::UtcOffset::from_hms(8, 0, 0).expect("offset"))
        .format(&Rfc3339)
        .expect("format");
    assert!(offset.ends_with("+08:00"), "{offset}");
    let from_offset: Timestamp = offset.parse().expect("a Timestamp from RFC 3339");
    assert_eq!(Some(from_offset), stamp(instant));
    assert_eq!(
        lines(Some(from_offset), None, last).await.expect("offset"),
        from_third
    );
    // Sub-second precision is kept: the whole second the record falls in (…:03Z) is at or
    // before it, so the record at …:03.789 is in.
    let second = lines(
        stamp(instant.replace_nanosecond(0).expect("second")),
        None,
        last,
    )
    .await
    .expect("second");
    assert!(second.len() >= from_third.len() && second.contains(&all[2]));
    // `until` is exclusive: before and since split the range.
    let before = lines(None, stamp(instant), last).await.expect("until");
    assert_eq!(before.len() + from_third.len(), all.len());
    assert!(!before.contains(&all[2]));
    // Not a time: refused, not an empty answer.
    for (seconds, nanos) in [
        (0, -1),
        (0, 1_000_000_000),
        (-1, 0),
        (253_402_300_800, 0),
        (i64::MIN, 0),
    ] {
        let bad = Timestamp { seconds, nanos };
        for (since, until) in [(Some(bad), None), (None, Some(bad))] {
            let err = lines(since, until, last).await.expect_err("not a time");
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}: {err:?}");
            assert!(err.message().contains("is not a time"), "{}", err.message());
        }
    }
}
