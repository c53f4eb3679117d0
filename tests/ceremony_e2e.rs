//! Ceremonies under dual control, end to end: 2-of-3 national key generation, approvals that
//! survive a restart, expiry, and key entry by components.

mod support;

use hkms::proto::{self, ceremony_service_client::CeremonyServiceClient};
use support::{TestNode, aes_kcv, key_count, key_id_in, start_with_extra_config};
use tonic::Code;
use tonic::transport::Channel;

async fn ceremonies(node: &TestNode, who: &str) -> CeremonyServiceClient<Channel> {
    CeremonyServiceClient::new(node.channel_as(who).await)
}

async fn open(node: &TestNode, params: &[(&str, &str)]) -> proto::CeremonyInfo {
    ceremonies(node, &node.officer.clone())
        .await
        .open_ceremony(proto::OpenCeremonyRequest {
            operation: hkms::proto::Operation::Generate.into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
        .await
        .expect("open")
        .into_inner()
}

async fn approve(
    node: &TestNode,
    who: &str,
    id: &str,
) -> Result<proto::CeremonyInfo, tonic::Status> {
    ceremonies(node, who)
        .await
        .approve_ceremony(proto::CeremonyId {
            id: id.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

#[tokio::test]
async fn a_huge_ceremony_id_is_refused_without_growing_the_log() {
    let node = TestNode::start("national", "000000");
    let huge = format!("c-{}", "a".repeat(1 << 20));
    let err = approve(&node, &node.officer, &huge)
        .await
        .expect_err("not a ceremony id");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().len() < 512, "{}", err.message());
    // Its record is there, and small.
    let mut stream = hkms::proto::audit_service_client::AuditServiceClient::new(
        node.channel_as("hkms://auditor/national/000000/auditor-1")
            .await,
    )
    .stream_records(proto::StreamRecordsRequest::default())
    .await
    .expect("stream")
    .into_inner();
    let mut approvals = 0;
    while let Some(line) = tokio_stream::StreamExt::next(&mut stream).await {
        let line = line.expect("record").line;
        assert!(line.len() < 2048, "a record of {} bytes", line.len());
        approvals += usize::from(line.contains("\"rpc\":\"ApproveCeremony\""));
    }
    assert_eq!(approvals, 1);
}

fn third_officer(node: &TestNode) -> String {
    node.officer.replace("/test-officer", "/third-officer")
}

#[tokio::test]
async fn a_national_key_needs_two_distinct_officers_of_three() {
    let node = TestNode::start("national", "000000");
    let opened = open(&node, &[("key_type", "card-master")]).await;
    assert_eq!(
        (opened.state(), opened.quorum, opened.approvals.len()),
        (proto::CeremonyState::Open, 2, 1)
    );

    // One approval is not enough: nothing is generated.
    assert_eq!(key_count(&node).await, 0);
    // The same officer approving again does not count.
    let err = approve(&node, &node.officer, &opened.id)
        .await
        .expect_err("twice");
    assert_eq!(err.code(), Code::AlreadyExists);
    assert!(
        err.message().contains("still needs 1 more"),
        "{}",
        err.message()
    );
    assert_eq!(key_count(&node).await, 0);
    // Someone who may not approve does not count either.
    let err = approve(&node, "hkms://window/municipal/440100/w1", &opened.id)
        .await
        .expect_err("window");
    assert_eq!(err.code(), Code::PermissionDenied);

    // The second officer completes the quorum: the key is made at once.
    let done = approve(&node, &node.second_officer(), &opened.id)
        .await
        .expect("second officer");
    assert_eq!(
        done.state(),
        hkms::proto::CeremonyState::Done,
        "{}",
        done.result
    );
    assert_eq!(done.approvals.len(), 2);
    let id = key_id_in(&done.result).expect("key id");
    let key = node
        .client()
        .await
        .get_key(proto::GetKeyRequest { id })
        .await
        .expect("get")
        .into_inner()
        .key
        .expect("key");
    assert!(done.result.contains(&key.kcv), "{}", done.result);
    assert_eq!(key_count(&node).await, 1);

    // A third approval after it ran changes nothing.
    let err = approve(&node, &third_officer(&node), &opened.id)
        .await
        .expect_err("after done");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(key_count(&node).await, 1);
}

#[tokio::test]
async fn approvals_survive_a_restart() {
    let mut node = TestNode::start("national", "000000");
    let opened = open(&node, &[("key_type", "pin-unblock")]).await;
    node.restart();
    let status = ceremonies(&node, &node.officer.clone())
        .await
        .get_ceremony(proto::CeremonyId {
            id: opened.id.clone(),
            ..Default::default()
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(
        (status.state(), status.approvals.len()),
        (proto::CeremonyState::Open, 1)
    );
    let done = approve(&node, &node.second_officer(), &opened.id)
        .await
        .expect("approve after restart");
    assert_eq!(
        done.state(),
        hkms::proto::CeremonyState::Done,
        "{}",
        done.result
    );
    assert_eq!(key_count(&node).await, 1);
}

#[tokio::test]
async fn an_expired_ceremony_cannot_run_and_a_cancelled_one_neither() {
    let node = start_with_extra_config("\n[ceremonies]\nttl_secs = 1\n");
    let opened = open(&node, &[("key_type", "card-master")]).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let err = approve(&node, &node.second_officer(), &opened.id)
        .await
        .expect_err("expired");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("expired"), "{}", err.message());
    let status = ceremonies(&node, &node.officer.clone())
        .await
        .get_ceremony(proto::CeremonyId {
            id: opened.id.clone(),
            ..Default::default()
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.state(), hkms::proto::CeremonyState::Expired);
    assert_eq!(key_count(&node).await, 0);
    // The approval that found it expired is recorded once, with the change it made.
    assert_eq!(
        ceremony_records(&node, &opened.id),
        vec![
            ("OpenCeremony".to_string(), "OK".to_string()),
            (
                "ApproveCeremony".to_string(),
                "FAILED_PRECONDITION".to_string()
            ),
        ]
    );

    let node = TestNode::start("national", "000000");
    let opened = open(&node, &[("key_type", "card-master")]).await;
    let cancelled = ceremonies(&node, &node.second_officer())
        .await
        .cancel_ceremony(proto::CeremonyId {
            id: opened.id.clone(),
            ..Default::default()
        })
        .await
        .expect("cancel")
        .into_inner();
    assert_eq!(cancelled.state(), hkms::proto::CeremonyState::Cancelled);
    let err = approve(&node, &third_officer(&node), &opened.id)
        .await
        .expect_err("cancelled");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(key_count(&node).await, 0);
    assert_eq!(
        ceremony_records(&node, &opened.id),
        vec![
            ("OpenCeremony".to_string(), "OK".to_string()),
            ("CancelCeremony".to_string(), "OK".to_string()),
            (
                "ApproveCeremony".to_string(),
                "FAILED_PRECONDITION".to_string()
            ),
        ]
    );
}

/// (rpc, result code) of the records about ceremony `id`, in order.
fn ceremony_records(node: &TestNode, id: &str) -> Vec<(String, String)> {
    let db = rusqlite::Connection::open(node.database()).expect("registry");
    let mut stmt = db
        .prepare(
            "SELECT json_extract(line, '$.rpc'), json_extract(line, '$.result.code') \
             FROM audit_log WHERE json_extract(line, '$.ceremony') = ?1 ORDER BY seq",
        )
        .expect("query");
    stmt.query_map([id], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("records")
        .collect::<Result<_, _>>()
        .expect("records")
}

#[tokio::test]
async fn a_key_entered_by_two_custodians_has_the_kcv_of_their_combined_components() {
    let node = TestNode::start("national", "000000");
    let c1 = hex::decode("0F1E2D3C4B5A69788796A5B4C3D2E1F0").expect("hex");
    let c2 = hex::decode("00112233445566778899AABBCCDDEEFF").expect("hex");
    let combined: Vec<u8> = c1.iter().zip(&c2).map(|(a, b)| a ^ b).collect();
    let opened = open(&node, &[("key_type", "card-master"), ("components", "2")]).await;
    assert!(
        opened.approvals.is_empty(),
        "custodians count by entering components"
    );

    let enter = |who: String, part: Vec<u8>, kcv: String| {
        let node = &node;
        let id = opened.id.clone();
        async move {
            ceremonies(node, &who)
                .await
                .enter_component(proto::EnterComponentRequest {
                    id,
                    component: part,
                    kcv,
                    ..Default::default()
                })
                .await
                .map(|r| r.into_inner())
        }
    };
    // A component whose KCV does not match the custodian's sheet is refused.
    let err = enter(node.officer.clone(), c1.clone(), "000000".into())
        .await
        .expect_err("bad kcv");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("re-check the component"),
        "{}",
        err.message()
    );
    // A component of the wrong length too.
    let err = enter(node.officer.clone(), c1[..8].to_vec(), aes_kcv(&c1))
        .await
        .expect_err("short");
    assert_eq!(err.code(), Code::InvalidArgument);

    let first = enter(node.officer.clone(), c1.clone(), aes_kcv(&c1))
        .await
        .expect("first component");
    assert_eq!(
        (first.state(), first.components_entered),
        (proto::CeremonyState::Open, 1)
    );
    // Split knowledge: a component of zeros, or one equal to another, would leave the key
    // to the other custodian alone.
    let zero = vec![0u8; 16];
    let err = enter(node.second_officer(), zero.clone(), aes_kcv(&zero))
        .await
        .expect_err("zeros");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    let err = enter(node.second_officer(), c1.clone(), aes_kcv(&c1))
        .await
        .expect_err("the same component");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("equals one"), "{}", err.message());
    let err = enter(node.officer.clone(), c2.clone(), aes_kcv(&c2))
        .await
        .expect_err("same custodian");
    assert_eq!(err.code(), Code::AlreadyExists);
    let done = enter(node.second_officer(), c2.clone(), aes_kcv(&c2))
        .await
        .expect("second component");
    assert_eq!(
        done.state(),
        hkms::proto::CeremonyState::Done,
        "{}",
        done.result
    );
    // Once done, the components are gone from memory; the count stays (each was an approval).
    assert_eq!(done.components_entered, 2);
    assert!(
        done.result.contains(&aes_kcv(&combined)),
        "{} vs {}",
        done.result,
        aes_kcv(&combined)
    );

    // No component reaches the registry, the log or the server's log lines.
    let mut haystacks = vec![node.log().into_bytes()];
    for name in ["registry.sqlite", "registry.sqlite-wal"] {
        if let Ok(b) = std::fs::read(node.dir.path().join("data").join(name)) {
            haystacks.push(b);
        }
    }
    for secret in [&c1, &c2, &combined] {
        for needle in [
            secret.to_vec(),
            hex::encode(secret).into_bytes(),
            hex::encode_upper(secret).into_bytes(),
        ] {
            for hay in &haystacks {
                assert!(
                    !hay.windows(needle.len()).any(|w| w == needle.as_slice()),
                    "a component leaked"
                );
            }
        }
    }
}

#[tokio::test]
async fn components_of_a_ceremony_that_lapsed_are_not_kept_and_too_few_are_refused() {
    // A policy that asks 3 approvals to generate: 2 components could never make them.
    let dir = tempfile::tempdir().expect("tempdir");
    let token = support::make_token(&dir.path().join("softhsm"), "hkms-test");
    let policy = dir.path().join("policy.toml");
    let text = std::fs::read_to_string(support::default_policy()).expect("policy");
    let text = text.replacen(
        "[ceremonies.generate]\nquorum = 2\n",
        "[ceremonies.generate]\nquorum = 3\n",
        1,
    );
    std::fs::write(&policy, text).expect("write policy");
    let config = dir.path().join("node.toml");
    let text = support::node_config("ministry", "national", "000000", &token).replace(
        &support::default_policy().display().to_string(),
        &policy.display().to_string(),
    ) + "\n[ceremonies]\nttl_secs = 2\n";
    std::fs::write(&config, text).expect("write config");
    let node = TestNode::start_in(dir, token, config);

    let err = ceremonies(&node, &node.officer.clone())
        .await
        .open_ceremony(proto::OpenCeremonyRequest {
            operation: hkms::proto::Operation::Generate.into(),
            params: [("key_type", "card-master"), ("components", "2")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        })
        .await
        .expect_err("2 components for 3 approvals");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("at least 3 components"),
        "{}",
        err.message()
    );

    // One custodian enters a component, then nobody comes back: it does not stay in memory.
    let opened = open(&node, &[("key_type", "card-master"), ("components", "3")]).await;
    let part = hex::decode("0F1E2D3C4B5A69788796A5B4C3D2E1F0").expect("hex");
    let first = ceremonies(&node, &node.officer.clone())
        .await
        .enter_component(proto::EnterComponentRequest {
            id: opened.id.clone(),
            component: part.clone(),
            kcv: aes_kcv(&part),
            ..Default::default()
        })
        .await
        .expect("a component")
        .into_inner();
    assert_eq!(first.components_entered, 1);
    // Swept within expiry (2 s) + grace (2 s) + one sweep period (2 s).
    let mut held = 1;
    for _ in 0..120 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        held = ceremonies(&node, &node.officer.clone())
            .await
            .get_ceremony(proto::CeremonyId {
                id: opened.id.clone(),
                ..Default::default()
            })
            .await
            .expect("status")
            .into_inner()
            .components_entered;
        if held == 0 {
            break;
        }
    }
    assert_eq!(held, 0, "the lapsed ceremony's component is still held");
}
