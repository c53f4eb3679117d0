//! Retries with a client's request id, through gRPC against a real node (docs/api.md,
//! "Retries and request ids"): the same request with the same `request_id` acts once and gets
//! the first answer again, recorded as a replay; another request with the id is refused;
//! duplicates that arrive together act once; ids are each caller's own; answers are kept
//! across a restart; a request that failed without acting acts when retried; and every
//! answer, an error too, carries the node's request id that its record carries.
//!
//! A city node: its officers generate `local-special` keys directly, and `pin-unblock` keys
//! under a 2-of-3 ceremony (the opener's approval counts once).

mod support;

use hkms::proto::{
    self, audit_service_client::AuditServiceClient, ceremony_service_client::CeremonyServiceClient,
    key_service_client::KeyServiceClient,
};
use serde_json::Value;
use support::TestNode;
use tonic::Code;
use tonic::metadata::MetadataMap;

const AUDITOR: &str = "hkms://auditor/municipal/440100/auditor-1";

fn city() -> TestNode {
    TestNode::start("municipal", "440100")
}

/// The node's request id an answer carries.
fn request_id_of(metadata: &MetadataMap) -> String {
    metadata
        .get("x-hkms-request-id")
        .expect("an x-hkms-request-id in the answer")
        .to_str()
        .expect("ASCII")
        .to_string()
}

/// The records of `rpc`, oldest first, as an auditor reads them.
async fn records(node: &TestNode, rpc: &str) -> Vec<Value> {
    let mut stream = AuditServiceClient::new(node.channel_as(AUDITOR).await)
        .stream_records(proto::StreamRecordsRequest {
            operation: rpc.into(),
            ..Default::default()
        })
        .await
        .expect("stream records")
        .into_inner();
    let mut out = Vec::new();
    while let Some(line) = tokio_stream::StreamExt::next(&mut stream).await {
        let line = line.expect("record").line;
        let record: Value = serde_json::from_str(&line).expect("a record");
        if record["rpc"] == rpc {
            out.push(record);
        }
    }
    out
}

/// The record whose request id is `id`.
fn record_of<'a>(records: &'a [Value], id: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["request_id"] == id)
        .unwrap_or_else(|| panic!("no record of request {id} in {records:?}"))
}

fn open_request(key_type: &str, request_id: &str) -> proto::OpenCeremonyRequest {
    proto::OpenCeremonyRequest {
        operation: proto::Operation::Generate.into(),
        params: [("key_type".to_string(), key_type.to_string())].into(),
        request_id: request_id.into(),
    }
}

async fn open_as(
    node: &TestNode,
    who: &str,
    request: proto::OpenCeremonyRequest,
) -> Result<tonic::Response<proto::CeremonyInfo>, tonic::Status> {
    CeremonyServiceClient::new(node.channel_as(who).await)
        .open_ceremony(request)
        .await
}

async fn open_ceremonies(node: &TestNode) -> Vec<proto::CeremonyInfo> {
    CeremonyServiceClient::new(node.channel().await)
        .list_ceremonies(proto::ListCeremoniesRequest::default())
        .await
        .expect("list ceremonies")
        .into_inner()
        .ceremonies
}

async fn keys_of_type(node: &TestNode, key_type: &str) -> Vec<proto::Key> {
    node.client()
        .await
        .list_keys(proto::ListKeysRequest {
            key_type: key_type.into(),
            ..Default::default()
        })
        .await
        .expect("list keys")
        .into_inner()
        .keys
}

fn generate_request(key_type: &str, request_id: &str) -> proto::GenerateKeyRequest {
    proto::GenerateKeyRequest {
        key_type: key_type.into(),
        request_id: request_id.into(),
    }
}

#[tokio::test]
async fn the_same_open_ceremony_twice_with_one_request_id_opens_one_ceremony() {
    let node = city();
    let officer = node.officer.clone();
    let first = open_as(&node, &officer, open_request("pin-unblock", "open-1"))
        .await
        .expect("open");
    let again = open_as(&node, &officer, open_request("pin-unblock", "open-1"))
        .await
        .expect("the retry");
    let (first_id, again_id) = (
        request_id_of(first.metadata()),
        request_id_of(again.metadata()),
    );
    assert_ne!(first_id, again_id, "the retry is a request of its own");
    let (first, again) = (first.into_inner(), again.into_inner());
    assert_eq!(first, again, "the retry gets the first answer");
    assert_eq!(open_ceremonies(&node).await.len(), 1, "one ceremony");

    let opened = records(&node, "OpenCeremony").await;
    assert_eq!(opened.len(), 2, "{opened:?}");
    let acted = record_of(&opened, &first_id);
    assert_eq!(acted["params"]["client_request_id"], "open-1");
    assert_eq!(acted["ceremony"], first.id.as_str());
    assert!(acted["params"].get("replay_of").is_none(), "{acted}");
    let replay = record_of(&opened, &again_id);
    assert_eq!(replay["params"]["client_request_id"], "open-1");
    assert_eq!(replay["params"]["replay_of"], first_id.as_str());
    assert_eq!(replay["result"]["code"], "OK");
}

#[tokio::test]
async fn the_same_request_id_with_another_body_is_refused_without_acting() {
    let node = city();
    let officer = node.officer.clone();
    let first = open_as(&node, &officer, open_request("pin-unblock", "job-7"))
        .await
        .expect("open");
    let first_id = request_id_of(first.metadata());

    let other = open_as(&node, &officer, open_request("pin-reload", "job-7"))
        .await
        .expect_err("another body with the id");
    assert_eq!(other.code(), Code::AlreadyExists, "{}", other.message());
    assert!(
        other.message().contains("request_id `job-7`"),
        "{}",
        other.message()
    );
    assert!(other.message().contains(&first_id), "{}", other.message());
    // The same id at another RPC is another request too.
    let elsewhere = node
        .client()
        .await
        .generate_key(generate_request("local-special", "job-7"))
        .await
        .expect_err("the id at another RPC");
    assert_eq!(elsewhere.code(), Code::AlreadyExists);
    assert!(keys_of_type(&node, "local-special").await.is_empty());
    let open = open_ceremonies(&node).await;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].params["key_type"], "pin-unblock");

    let opened = records(&node, "OpenCeremony").await;
    let refused = record_of(&opened, &request_id_of(other.metadata()));
    assert_eq!(refused["result"]["code"], "ALREADY_EXISTS");
    assert_eq!(refused["params"]["request_id_taken_by"], first_id.as_str());
}

#[tokio::test]
async fn two_identical_approvals_at_once_run_the_ceremony_once_and_get_one_answer() {
    let node = city();
    let officer = node.officer.clone();
    let opened = open_as(&node, &officer, open_request("pin-unblock", ""))
        .await
        .expect("open")
        .into_inner();
    let second = node.second_officer();
    let approval = proto::CeremonyId {
        id: opened.id.clone(),
        request_id: "approve-once".into(),
    };
    let mut a = CeremonyServiceClient::new(node.channel_as(&second).await);
    let mut b = CeremonyServiceClient::new(node.channel_as(&second).await);
    let (x, y) = tokio::join!(
        a.approve_ceremony(approval.clone()),
        b.approve_ceremony(approval)
    );
    let (x, y) = (x.expect("approve"), y.expect("approve"));
    let ids = [request_id_of(x.metadata()), request_id_of(y.metadata())];
    let (x, y) = (x.into_inner(), y.into_inner());
    assert_eq!(x, y, "both get the one answer");
    assert_eq!(x.state(), proto::CeremonyState::Done, "{}", x.result);
    assert_eq!(keys_of_type(&node, "pin-unblock").await.len(), 1, "one key");

    let runs = records(&node, "ExecuteCeremony").await;
    assert_eq!(runs.len(), 1, "the ceremony ran once: {runs:?}");
    let approvals = records(&node, "ApproveCeremony").await;
    assert_eq!(approvals.len(), 2, "{approvals:?}");
    let replays: Vec<&Value> = approvals
        .iter()
        .filter(|r| r["params"].get("replay_of").is_some())
        .collect();
    assert_eq!(replays.len(), 1, "{approvals:?}");
    let acted = approvals
        .iter()
        .find(|r| r["params"].get("replay_of").is_none())
        .expect("the approval that acted");
    assert_eq!(replays[0]["params"]["replay_of"], acted["request_id"]);
    assert_eq!(runs[0]["request_id"], acted["request_id"]);
    for id in &ids {
        record_of(&approvals, id);
    }
}

#[tokio::test]
async fn another_caller_with_the_same_request_id_acts_on_its_own() {
    let node = city();
    let (officer, second) = (node.officer.clone(), node.second_officer());
    let mine = open_as(&node, &officer, open_request("pin-unblock", "shared"))
        .await
        .expect("open")
        .into_inner();
    let theirs = open_as(&node, &second, open_request("pin-unblock", "shared"))
        .await
        .expect("open as another officer")
        .into_inner();
    assert_ne!(mine.id, theirs.id);
    assert_eq!(theirs.opener, second);
    assert_eq!(open_ceremonies(&node).await.len(), 2);
    let opened = records(&node, "OpenCeremony").await;
    assert!(
        opened
            .iter()
            .all(|r| r["params"].get("replay_of").is_none()),
        "{opened:?}"
    );
}

#[tokio::test]
async fn generate_key_retried_after_it_succeeded_returns_the_same_key_even_after_a_restart() {
    let mut node = city();
    let mut keys = node.client().await;
    let first = keys
        .generate_key(generate_request("local-special", "gen-1"))
        .await
        .expect("generate")
        .into_inner();
    let again = keys
        .generate_key(generate_request("local-special", "gen-1"))
        .await
        .expect("the retry")
        .into_inner();
    assert_eq!(first, again);
    node.restart();
    let after = node
        .client()
        .await
        .generate_key(generate_request("local-special", "gen-1"))
        .await
        .expect("the retry after a restart")
        .into_inner();
    assert_eq!(first, after, "the answer is kept in the registry");
    let made = keys_of_type(&node, "local-special").await;
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(Some(&made[0].id), first.key.as_ref().map(|k| &k.id));
    let generated = records(&node, "GenerateKey").await;
    let replays = generated
        .iter()
        .filter(|r| r["params"].get("replay_of").is_some())
        .count();
    assert_eq!((generated.len(), replays), (3, 2), "{generated:?}");
}

#[tokio::test]
async fn a_request_that_failed_without_acting_acts_when_retried() {
    let node = city();
    let mut keys = node.client().await;
    let key = keys
        .generate_key(generate_request("local-special", ""))
        .await
        .expect("generate")
        .into_inner()
        .key
        .expect("key");
    let activate = |id: &str| proto::ChangeKeyStateRequest {
        id: id.into(),
        state: proto::KeyState::Active.into(),
        expected_state: proto::KeyState::Suspended.into(),
        request_id: "activate-1".into(),
    };
    if key.state() != proto::KeyState::Active {
        keys.change_key_state(proto::ChangeKeyStateRequest {
            id: key.id.clone(),
            state: proto::KeyState::Active.into(),
            ..Default::default()
        })
        .await
        .expect("activate");
    }
    // Refused: the key is not suspended. Nothing changed, so nothing is remembered.
    let refused = keys
        .change_key_state(activate(&key.id))
        .await
        .expect_err("not suspended");
    assert_eq!(
        refused.code(),
        Code::FailedPrecondition,
        "{}",
        refused.message()
    );
    keys.change_key_state(proto::ChangeKeyStateRequest {
        id: key.id.clone(),
        state: proto::KeyState::Suspended.into(),
        ..Default::default()
    })
    .await
    .expect("suspend");
    // The same request with the same id now acts.
    let done = keys
        .change_key_state(activate(&key.id))
        .await
        .expect("the retry acts")
        .into_inner()
        .key
        .expect("key");
    assert_eq!(done.state(), proto::KeyState::Active);
    let changes = records(&node, "ChangeKeyState").await;
    assert!(
        changes
            .iter()
            .all(|r| r["params"].get("replay_of").is_none()),
        "{changes:?}"
    );
}

#[tokio::test]
async fn every_answer_carries_the_request_id_of_its_record() {
    let node = city();
    let mut keys = node.client().await;

    let made = keys
        .generate_key(generate_request("local-special", ""))
        .await
        .expect("generate");
    let made_id = request_id_of(made.metadata());
    assert!(made_id.starts_with("r-"), "{made_id}");
    let refused = keys
        .generate_key(generate_request("no-such-type", ""))
        .await
        .expect_err("an unknown key type");
    assert_eq!(refused.code(), Code::InvalidArgument);
    let refused_id = request_id_of(refused.metadata());
    let generated = records(&node, "GenerateKey").await;
    assert_eq!(record_of(&generated, &made_id)["result"]["code"], "OK");
    assert_eq!(
        record_of(&generated, &refused_id)["result"]["code"],
        "INVALID_ARGUMENT"
    );

    // A read, and a denied one.
    let listed = keys
        .list_keys(proto::ListKeysRequest::default())
        .await
        .expect("list");
    let listed_id = request_id_of(listed.metadata());
    record_of(&records(&node, "ListKeys").await, &listed_id);
    let denied = KeyServiceClient::new(node.channel_as(AUDITOR).await)
        .generate_key(generate_request("local-special", ""))
        .await
        .expect_err("auditors do not generate");
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied_record = records(&node, "GenerateKey").await;
    let denied_record = record_of(&denied_record, &request_id_of(denied.metadata()));
    assert_eq!(denied_record["result"]["code"], "PERMISSION_DENIED");

    // A stream's headers carry it too.
    let stream = AuditServiceClient::new(node.channel_as(AUDITOR).await)
        .stream_records(proto::StreamRecordsRequest::default())
        .await
        .expect("stream");
    let stream_id = request_id_of(stream.metadata());
    let streamed = records(&node, "StreamRecords").await;
    assert_eq!(record_of(&streamed, &stream_id)["result"]["code"], "OK");
}

#[tokio::test]
async fn a_malformed_request_id_is_invalid_argument_and_nothing_acts() {
    let node = city();
    let mut keys = node.client().await;
    for bad in ["two words", "a/b", &"x".repeat(65)] {
        let e = keys
            .generate_key(generate_request("local-special", bad))
            .await
            .expect_err("a malformed request id");
        assert_eq!(e.code(), Code::InvalidArgument, "{bad:?}: {}", e.message());
        assert!(e.message().starts_with("request_id "), "{}", e.message());
    }
    let ok = "0f8fad5b-d9cb-469f-a165-70867728950e";
    keys.generate_key(generate_request("local-special", ok))
        .await
        .expect("a UUID is a request id");
    assert_eq!(keys_of_type(&node, "local-special").await.len(), 1);
    let generated = records(&node, "GenerateKey").await;
    let refused: Vec<&Value> = generated
        .iter()
        .filter(|r| r["result"]["code"] == "INVALID_ARGUMENT")
        .collect();
    assert_eq!(refused.len(), 3, "{generated:?}");
    assert_eq!(refused[0]["params"]["client_request_id"], "two words");
}

#[tokio::test]
async fn the_command_line_sends_a_fresh_request_id_with_each_call_that_changes_something() {
    let node = city();
    for _ in 0..2 {
        let o = node.cli(&["keys", "generate", "--type", "local-special", "-q"]);
        assert!(o.status.success(), "{}", support::stderr(&o));
    }
    let generated = records(&node, "GenerateKey").await;
    let ids: Vec<&str> = generated
        .iter()
        .map(|r| {
            r["params"]["client_request_id"]
                .as_str()
                .expect("a request id")
        })
        .collect();
    assert_eq!(ids.len(), 2, "{generated:?}");
    assert_ne!(ids[0], ids[1], "one id per call");
    for id in &ids {
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }
    assert_eq!(keys_of_type(&node, "local-special").await.len(), 2);
}
