//! The API's lists as a program meets them (docs/api.md, "Paging and times"): page after page
//! in a stable order, with tokens that continue only the list and filters they came from, no
//! answer past its size, and times as google.protobuf.Timestamp. Real nodes, real tokens,
//! through gRPC.

mod support;

use std::collections::HashSet;

use hkms::proto::audit_service_client::AuditServiceClient;
use hkms::proto::ceremony_service_client::CeremonyServiceClient;
use hkms::proto::{self, key_service_client::KeyServiceClient};
use prost::Message;
use prost_types::Timestamp;
use support::{TestNode, stderr, stdout};
use tonic::Code;
use tonic::transport::Channel;

const AUDITOR: &str = "hkms://auditor/national/000000/auditor-1";

/// A province with `n` local-special keys and two local file keys, generated through the API.
async fn province_with_keys(n: usize) -> (TestNode, Vec<String>) {
    let node = TestNode::start("provincial", "440000");
    let mut c = node.client().await;
    let mut ids = Vec::new();
    for _ in 0..n {
        let key = c
            .generate_key(proto::GenerateKeyRequest {
                key_type: "local-special".into(),
                ..Default::default()
            })
            .await
            .expect("generate")
            .into_inner()
            .key
            .expect("key");
        ids.push(key.id);
    }
    for _ in 0..2 {
        c.generate_key(proto::GenerateKeyRequest {
            key_type: "local-file-key".into(),
            ..Default::default()
        })
        .await
        .expect("generate");
    }
    (node, ids)
}

fn local_special(page_size: i32, page_token: &str) -> proto::ListKeysRequest {
    proto::ListKeysRequest {
        key_type: "local-special".into(),
        page_size,
        page_token: page_token.into(),
        ..Default::default()
    }
}

/// Every page of `request`'s list, as the node gives them.
async fn pages(
    c: &mut KeyServiceClient<Channel>,
    request: proto::ListKeysRequest,
) -> Vec<proto::ListKeysResponse> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = c
            .list_keys(proto::ListKeysRequest {
                page_token: token,
                ..request.clone()
            })
            .await
            .expect("a page")
            .into_inner();
        token = page.next_page_token.clone();
        out.push(page);
        if token.is_empty() {
            return out;
        }
    }
}

/// A key's place in the listing order: (created_at, id).
fn place(k: &proto::Key) -> (i64, i32, String) {
    let t = k.created_at.expect("created_at");
    (t.seconds, t.nanos, k.id.clone())
}

#[tokio::test]
async fn keys_come_in_pages_that_hold_each_key_once_in_a_stable_order() {
    let (node, made) = province_with_keys(25).await;
    let mut c = node.client().await;

    let walk = pages(&mut c, local_special(10, "")).await;
    assert_eq!(
        walk.iter().map(|p| p.keys.len()).collect::<Vec<_>>(),
        [10, 10, 5]
    );
    assert!(walk[..2].iter().all(|p| !p.next_page_token.is_empty()));
    let listed: Vec<proto::Key> = walk.into_iter().flat_map(|p| p.keys).collect();
    let ids: Vec<String> = listed.iter().map(|k| k.id.clone()).collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 25, "no key twice");
    assert_eq!(
        ids.iter().collect::<HashSet<_>>(),
        made.iter().collect::<HashSet<_>>(),
        "none missing"
    );
    assert!(listed.iter().all(|k| k.key_type == "local-special"));
    // Oldest first, ties by id: the order the API documents, not the order of the ids.
    let places: Vec<_> = listed.iter().map(place).collect();
    let mut sorted = places.clone();
    sorted.sort();
    assert_eq!(places, sorted);

    // The same walk again, and one page of the default size, give the same order.
    let again: Vec<String> = pages(&mut c, local_special(10, ""))
        .await
        .into_iter()
        .flat_map(|p| p.keys)
        .map(|k| k.id)
        .collect();
    assert_eq!(again, ids);
    let whole = c
        .list_keys(local_special(0, ""))
        .await
        .expect("default page size")
        .into_inner();
    assert!(whole.next_page_token.is_empty());
    assert_eq!(
        whole.keys.iter().map(|k| k.id.clone()).collect::<Vec<_>>(),
        ids
    );

    // A page size past the most is taken as the most, not refused.
    let big = c
        .list_keys(local_special(5000, ""))
        .await
        .expect("clamped")
        .into_inner();
    assert_eq!(big.keys.len(), 25);
}

#[tokio::test]
async fn a_page_token_continues_only_the_list_and_filters_it_came_from() {
    let (node, _) = province_with_keys(3).await;
    let mut c = node.client().await;
    let first = c
        .list_keys(local_special(1, ""))
        .await
        .expect("first page")
        .into_inner();
    let token = first.next_page_token;
    assert!(!token.is_empty());

    let refused = |r: Result<tonic::Response<proto::ListKeysResponse>, tonic::Status>,
                   says: &str| {
        let status = r.expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(says), "{}", status.message());
    };
    // Other filters: another key type, a filter added, a filter dropped.
    refused(
        c.list_keys(proto::ListKeysRequest {
            key_type: "local-file-key".into(),
            ..local_special(1, &token)
        })
        .await,
        "other filters",
    );
    refused(
        c.list_keys(proto::ListKeysRequest {
            state: proto::KeyState::Active.into(),
            ..local_special(1, &token)
        })
        .await,
        "other filters",
    );
    refused(
        c.list_keys(proto::ListKeysRequest {
            page_token: token.clone(),
            ..Default::default()
        })
        .await,
        "other filters",
    );
    // Not a token, and a negative page size.
    refused(
        c.list_keys(local_special(1, "not-a-token")).await,
        "page_token",
    );
    refused(c.list_keys(local_special(-1, "")).await, "page_size -1");
    // Another list.
    let other = CeremonyServiceClient::new(node.channel().await)
        .list_ceremonies(proto::ListCeremoniesRequest {
            page_token: token.clone(),
            ..Default::default()
        })
        .await
        .expect_err("a key list's token");
    assert_eq!(other.code(), Code::InvalidArgument, "{other:?}");
    assert!(other.message().contains("continues ListKeys"), "{other:?}");

    // With its own filters the token still continues, after the first key.
    let second = c
        .list_keys(local_special(1, &token))
        .await
        .expect("second page")
        .into_inner();
    assert_eq!(second.keys.len(), 1);
    assert_ne!(second.keys[0].id, first.keys[0].id);
}

/// A ministry whose list answers hold at most 16 KiB, which signs a checkpoint after every
/// record, with `planted` more keys in its registry (rows only: listing is what is tested).
fn small_answer_node(planted: usize) -> TestNode {
    let mut node = support::start_with_extra_config(
        "\n[api]\nmax_answer_bytes = 16384\n\n[audit]\ncheckpoint_every = 1\n",
    );
    node.stop();
    {
        use hkms::hierarchy::{Algorithm, Kcv, KcvMethod, KeyId, KeyState, KeyTypeName, Region};
        use hkms::store::KeyRegistry;
        let store = hkms::store::SqliteStore::open(&node.database()).expect("store");
        for _ in 0..planted {
            let id = KeyId::new_random();
            let now = hkms::store::now_rfc3339();
            store
                .insert_key(&hkms::hierarchy::KeyRecord {
                    ck_label: id.ck_label(),
                    id,
                    key_type: KeyTypeName::parse("pin-unblock").expect("type"),
                    algorithm: Algorithm::Aes128,
                    tier: Region::NATIONAL.tier(),
                    region: Region::NATIONAL,
                    parent_id: None,
                    factor: None,
                    kcv: Kcv::from_hex("53E107", KcvMethod::AesCmac).expect("kcv"),
                    version: 1,
                    state: KeyState::Active,
                    created_at: now.clone(),
                    updated_at: now,
                })
                .expect("plant");
        }
    }
    node.start_again();
    node
}

#[tokio::test]
async fn no_list_answer_passes_its_size_and_the_pages_still_hold_everything() {
    const CAP: usize = 16384;
    let node = small_answer_node(400);
    let mut c = node.client().await;

    // Keys: the most a page may hold would be far past 16 KiB; each page stops before it.
    let walk = pages(
        &mut c,
        proto::ListKeysRequest {
            page_size: 1000,
            ..Default::default()
        },
    )
    .await;
    assert!(walk.len() >= 3, "{} pages", walk.len());
    for page in &walk {
        assert!(page.encoded_len() <= CAP, "{} bytes", page.encoded_len());
        assert!(page.keys.len() < 1000);
    }
    let ids: Vec<String> = walk
        .into_iter()
        .flat_map(|p| p.keys)
        .map(|k| k.id)
        .collect();
    assert_eq!(ids.len(), 400);
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 400);

    // Checkpoints: one per record, a few hundred bytes each; sixty requests make more than one
    // answer holds.
    for _ in 0..60 {
        c.list_keys(proto::ListKeysRequest {
            page_size: 1,
            ..Default::default()
        })
        .await
        .expect("a request to record");
    }
    let mut a = AuditServiceClient::new(node.channel_as(AUDITOR).await);
    let mut token = String::new();
    let mut checkpoints: Vec<u64> = Vec::new();
    let mut statements = Vec::new();
    let mut answers = 0;
    loop {
        let page = a
            .get_checkpoints(proto::GetCheckpointsRequest {
                seal: true,
                page_size: 1000,
                page_token: token,
            })
            .await
            .expect("checkpoints")
            .into_inner();
        answers += 1;
        assert!(page.encoded_len() <= CAP, "{} bytes", page.encoded_len());
        for line in &page.checkpoints {
            let cp: serde_json::Value = serde_json::from_str(line).expect("checkpoint");
            checkpoints.push(cp["seq"].as_u64().expect("seq"));
        }
        if !page.statement.is_empty() {
            statements.push((answers, page.statement));
        }
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert!(answers >= 2, "{answers} answers");
    let mut sorted = checkpoints.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(checkpoints, sorted, "by seq, each once");
    assert!(checkpoints.len() > 40, "{}", checkpoints.len());
    // The statement comes once, on the first page, and states the last checkpoint listed:
    // the pages after it hold none past what it fixed, though the node sealed more since.
    assert_eq!(statements.len(), 1);
    assert_eq!(statements[0].0, 1);
    let statement: serde_json::Value = serde_json::from_str(&statements[0].1).expect("statement");
    assert_eq!(statement["seq"].as_u64(), checkpoints.last().copied());

    // `hkms audit export` pages through the same way, and its bundle verifies.
    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("bundle");
    let export = node.cli_as(
        AUDITOR,
        &["audit", "export", "--out", &bundle.display().to_string()],
    );
    assert!(export.status.success(), "export: {}", stderr(&export));
    let key_sha256 = support::exported_key_sha256(&export);
    let verify = std::process::Command::new(support::hkms_bin())
        .args(["audit", "verify", &bundle.display().to_string()])
        .args(["--expect-key-sha256", &key_sha256])
        .output()
        .expect("run verify");
    assert!(verify.status.success(), "{}", stdout(&verify));
    let exported = std::fs::read_to_string(bundle.join("checkpoints.jsonl")).expect("read");
    assert!(exported.lines().count() > checkpoints.len());

    // `hkms keys list` pages through too: every key, however many answers it takes.
    let list = node.cli(&["keys", "list", "--quiet"]);
    assert!(list.status.success(), "{}", stderr(&list));
    assert_eq!(stdout(&list).lines().count(), 400);
}

#[tokio::test]
async fn times_are_timestamps_that_round_trip_through_every_answer() {
    let node = TestNode::start("provincial", "440000");
    let mut c = node.client().await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let key = c
        .generate_key(proto::GenerateKeyRequest {
            key_type: "local-special".into(),
            ..Default::default()
        })
        .await
        .expect("generate")
        .into_inner()
        .key
        .expect("key");
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let created = key.created_at.expect("created_at");
    assert!((before..=after).contains(&created.seconds), "{created:?}");
    assert_eq!(created.nanos, 0, "registry times are to the second");
    assert_eq!(key.updated_at, Some(created));

    // The same instants from GetKey and ListKeys.
    let got = c
        .get_key(proto::GetKeyRequest { id: key.id.clone() })
        .await
        .expect("get")
        .into_inner()
        .key
        .expect("key");
    assert_eq!(
        (got.created_at, got.updated_at),
        (key.created_at, key.updated_at)
    );
    let listed = c
        .list_keys(proto::ListKeysRequest::default())
        .await
        .expect("list")
        .into_inner()
        .keys;
    assert_eq!(listed[0].created_at, key.created_at);

    // A ceremony: opened, approved, expiring at its opening plus the node's ttl (a day).
    let done = node
        .ceremony(
            proto::Operation::Manage,
            &[("key_id", &key.id), ("state", "retired")],
        )
        .await;
    assert_eq!(done.state(), proto::CeremonyState::Done, "{}", done.result);
    let opened = done.created_at.expect("created_at");
    assert!(opened.seconds >= created.seconds);
    assert_eq!(
        done.expires_at,
        Some(Timestamp {
            seconds: opened.seconds + 86_400,
            nanos: 0
        })
    );
    assert_eq!(done.approvals.len(), 2);
    assert!(
        done.approvals
            .iter()
            .all(|a| a.approved_at.is_some_and(|t| t.seconds >= opened.seconds))
    );
    let listed = CeremonyServiceClient::new(node.channel().await)
        .list_ceremonies(proto::ListCeremoniesRequest::default())
        .await
        .expect("ceremonies")
        .into_inner()
        .ceremonies;
    assert_eq!(listed, std::slice::from_ref(&done));
    // The retirement moved the key's updated_at, not its created_at.
    let retired = c
        .get_key(proto::GetKeyRequest { id: key.id.clone() })
        .await
        .expect("get")
        .into_inner()
        .key
        .expect("key");
    assert_eq!(retired.created_at, key.created_at);
    assert!(retired.updated_at.expect("updated_at").seconds >= opened.seconds);

    // The command line shows them as RFC 3339 in UTC.
    let json = node.cli(&["keys", "show", &key.id, "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&stdout(&json)).expect("json");
    assert_eq!(shown["created_at"], created.to_string());
    assert!(created.to_string().ends_with('Z'), "{created}");
}

#[tokio::test]
async fn a_time_filter_that_names_no_time_is_refused_and_recorded_as_sent() {
    let node = TestNode::start("national", "000000");
    let mut a = AuditServiceClient::new(node.channel_as(AUDITOR).await);
    for (seconds, nanos) in [
        (1_772_356_563, 1_000_000_000),
        (-1, 0),
        (253_402_300_800, 0),
    ] {
        let err = a
            .stream_records(proto::StreamRecordsRequest {
                until: Some(Timestamp { seconds, nanos }),
                ..Default::default()
            })
            .await
            .expect_err("not a time");
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("until"), "{}", err.message());
    }
    // Each refusal has its record, which shows what came; a good time is recorded as RFC 3339.
    let mut stream = a
        .stream_records(proto::StreamRecordsRequest {
            since: Some(Timestamp {
                seconds: 1_772_356_563,
                nanos: 789_000_000,
            }),
            ..Default::default()
        })
        .await
        .expect("a time")
        .into_inner();
    while stream.message().await.expect("record").is_some() {}
    let mut all = a
        .stream_records(proto::StreamRecordsRequest::default())
        .await
        .expect("all")
        .into_inner();
    let mut params = Vec::new();
    while let Some(r) = all.message().await.expect("record") {
        let record: serde_json::Value = serde_json::from_str(&r.line).expect("record");
        if record["rpc"] == "StreamRecords" {
            params.push(record["params"].clone());
        }
    }
    assert_eq!(params[0]["until"], "seconds 1772356563 nanos 1000000000");
    assert_eq!(params[1]["until"], "seconds -1 nanos 0");
    assert_eq!(params[3]["since"], "2026-03-01T09:16:03.789Z");
}
