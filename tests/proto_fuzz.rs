//! Issue 7 "bad input" at the wire: random bytes, and mutations of valid encoded requests, sent
//! as the body of every gRPC method of the hkms services (through a raw-bytes codec), to one
//! running node. Each call must end in a gRPC status (never a dropped connection), the server
//! must stay healthy and never panic, and nothing may change: registry keys and their states,
//! the token's key objects, transport keys and finished ceremonies stay as they were (audit
//! records grow: every request is logged). Then random structured requests for the RPCs that
//! parse what callers send: each gets a clear error (a status that names the problem, never
//! INTERNAL or UNKNOWN).
//!
//! The node's officer sends everything, so most requests reach the parsers and the policy; the
//! valid requests that are mutated are ones that fail anyway (a suspended parent, no card
//! issued, a ceremony that does not exist), so no mutation can make a key.

mod support;

use hkms::proto;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use prost::Message;
use support::raw_codec::RawCodec;
use support::{TestNode, stdout};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

const AUDITOR: &str = "hkms://auditor/national/000000/fuzz-auditor";

/// How a method is called.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Unary,
    ServerStream,
    BidiStream,
}

/// Every method of the hkms services.
const METHODS: [(&str, Kind); 25] = [
    ("/hkms.v1.KeyService/GenerateKey", Kind::Unary),
    ("/hkms.v1.KeyService/DeriveSubKey", Kind::Unary),
    ("/hkms.v1.KeyService/GetKey", Kind::Unary),
    ("/hkms.v1.KeyService/ListKeys", Kind::Unary),
    ("/hkms.v1.KeyService/ChangeKeyState", Kind::Unary),
    ("/hkms.v1.PolicyService/GetPolicy", Kind::Unary),
    ("/hkms.v1.PolicyService/ReloadPolicy", Kind::Unary),
    ("/hkms.v1.CeremonyService/OpenCeremony", Kind::Unary),
    ("/hkms.v1.CeremonyService/ApproveCeremony", Kind::Unary),
    ("/hkms.v1.CeremonyService/EnterComponent", Kind::Unary),
    ("/hkms.v1.CeremonyService/CancelCeremony", Kind::Unary),
    ("/hkms.v1.CeremonyService/GetCeremony", Kind::Unary),
    ("/hkms.v1.CeremonyService/ListCeremonies", Kind::Unary),
    ("/hkms.v1.AuditService/StreamRecords", Kind::ServerStream),
    ("/hkms.v1.AuditService/GetCheckpoints", Kind::Unary),
    ("/hkms.v1.AuditService/GetPublicKey", Kind::Unary),
    ("/hkms.v1.AuditService/FindIdNumber", Kind::Unary),
    ("/hkms.v1.CardService/UnblockPin", Kind::Unary),
    ("/hkms.v1.CardService/ReloadPin", Kind::Unary),
    ("/hkms.v1.CardService/PersonaliseCards", Kind::BidiStream),
    ("/hkms.v1.TransportService/IssueCard", Kind::Unary),
    ("/hkms.v1.TransportService/LoadCard", Kind::Unary),
    ("/hkms.v1.TransportService/ListTransportKeys", Kind::Unary),
    ("/hkms.v1.TransportService/ExportKey", Kind::Unary),
    ("/hkms.v1.TransportService/ImportKey", Kind::Unary),
];

/// Sends `body` to `path`; the statuses the server answered with (a stream may end in one).
async fn call(channel: &Channel, path: &'static str, kind: Kind, body: Vec<u8>) -> Vec<Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("the connection is up");
    let path = PathAndQuery::from_static(path);
    let mut statuses = Vec::new();
    let stream = match kind {
        Kind::Unary => {
            if let Err(s) = grpc
                .unary::<_, Vec<u8>, _>(tonic::Request::new(body), path, RawCodec)
                .await
            {
                statuses.push(s);
            }
            None
        }
        Kind::ServerStream => Some(
            grpc.server_streaming(tonic::Request::new(body), path, RawCodec)
                .await,
        ),
        Kind::BidiStream => Some(
            grpc.streaming(
                tonic::Request::new(tokio_stream::iter(vec![body])),
                path,
                RawCodec,
            )
            .await,
        ),
    };
    match stream {
        None => {}
        Some(Err(s)) => statuses.push(s),
        Some(Ok(r)) => {
            let mut s = r.into_inner();
            // Bounded: the node's log and one batch are finite.
            for _ in 0..100_000 {
                match s.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(e) => {
                        statuses.push(e);
                        break;
                    }
                }
            }
        }
    }
    statuses
}

/// A status the server chose, as opposed to a dropped connection or a crash; never INTERNAL,
/// not even for a body that is not protobuf (that is the caller's error).
fn answered(s: &Status) -> Result<(), TestCaseError> {
    match s.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => Err(
            TestCaseError::fail(format!("no answer from the server: {s:?}")),
        ),
        Code::Internal => Err(TestCaseError::fail(format!(
            "INTERNAL for bad input: {s:?}"
        ))),
        _ => Ok(()),
    }
}

/// A clear refusal of a well-formed request with bad values.
fn clear_error(s: &Status) -> Result<(), TestCaseError> {
    prop_assert!(
        matches!(
            s.code(),
            Code::InvalidArgument
                | Code::NotFound
                | Code::PermissionDenied
                | Code::FailedPrecondition
                | Code::AlreadyExists
        ),
        "not a clear error: {:?}",
        s
    );
    prop_assert!(!s.message().trim().is_empty(), "an error without a reason");
    Ok(())
}

/// What must not change: keys with their states, the token's key objects (as the attribute
/// audit counts them), the orphan check's verdict, transport keys, finished ceremonies.
async fn state(node: &TestNode) -> (Vec<(String, i32)>, String, String, usize, usize) {
    let channel = node.channel().await;
    let mut keys: Vec<(String, i32)> =
        proto::key_service_client::KeyServiceClient::new(channel.clone())
            .list_keys(proto::ListKeysRequest::default())
            .await
            .expect("list")
            .into_inner()
            .keys
            .into_iter()
            .map(|k| (k.id, k.state))
            .collect();
    keys.sort();
    let audit = stdout(&node.cli(&["token", "audit"]));
    let objects = audit
        .lines()
        .find(|l| l.starts_with("checked "))
        .unwrap_or_else(|| panic!("token audit: {audit}"))
        .to_string();
    let orphans = stdout(&node.cli(&["keys", "orphans"]));
    let cards = proto::transport_service_client::TransportServiceClient::new(channel.clone())
        .list_transport_keys(proto::ListTransportKeysRequest {
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("transport keys")
        .into_inner()
        .transport_keys
        .len();
    let done = proto::ceremony_service_client::CeremonyServiceClient::new(channel)
        .list_ceremonies(proto::ListCeremoniesRequest {
            state: proto::CeremonyState::Done.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("ceremonies")
        .into_inner()
        .ceremonies
        .len();
    (keys, objects, orphans, cards, done)
}

/// The node is up and says so through gRPC health, and has not panicked.
async fn healthy(node: &TestNode) {
    let mut h = tonic_health::pb::health_client::HealthClient::new(node.channel().await);
    let r = h
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health")
        .into_inner();
    assert_eq!(
        r.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    assert!(!node.log().contains("panicked"), "{}", node.log());
}

/// A node with keys that the mutated requests name: an active root, its 440000 sub-key, and a
/// suspended root.
async fn fuzz_node() -> (TestNode, proto::Key, proto::Key, proto::Key) {
    let node = TestNode::start("national", "000000");
    let root = node.generate("card-master").await;
    let gd = support::derive(&node, &root.id, "440000").await;
    let suspended = node.generate("card-master").await;
    node.client()
        .await
        .change_key_state(proto::ChangeKeyStateRequest {
            id: suspended.id.clone(),
            state: proto::KeyState::Suspended.into(),
            expected_state: proto::KeyState::Unspecified.into(),
            ..Default::default()
        })
        .await
        .expect("suspend");
    (node, root, gd, suspended)
}

/// Valid encoded requests, one per method (by index in METHODS), that fail whatever is
/// mutated in them short of hitting another existing id.
fn valid_bodies(root: &proto::Key, gd: &proto::Key, suspended: &proto::Key) -> Vec<Vec<u8>> {
    let missing_key = "k-0123456789abcdef0123456789abcdef".to_string();
    let missing_ceremony = "c-0123456789abcdef0123456789abcdef".to_string();
    let card = proto::CardCommandRequest {
        card_serial: "1234567890ABCDEF".into(),
        challenge: "0011223344556677".into(),
        pin: "123456".into(),
        served_by: "fuzz".into(),
        cardholder_id: "44010619900101123X".into(),
        agent_id: String::new(),
        ..Default::default()
    };
    let package = sample_package(root, gd);
    vec![
        proto::GenerateKeyRequest {
            key_type: "card-master".into(),
            ..Default::default()
        }
        .encode_to_vec(),
        proto::DeriveSubKeyRequest {
            parent_id: suspended.id.clone(),
            region: "440000".into(),
            ..Default::default()
        }
        .encode_to_vec(),
        proto::GetKeyRequest {
            id: root.id.clone(),
        }
        .encode_to_vec(),
        proto::ListKeysRequest {
            tier: proto::Tier::Provincial.into(),
            region: "440000".into(),
            key_type: "card-master".into(),
            state: proto::KeyState::Active.into(),
            page_size: 10,
            page_token: String::new(),
        }
        .encode_to_vec(),
        proto::ChangeKeyStateRequest {
            id: missing_key.clone(),
            state: proto::KeyState::Suspended.into(),
            expected_state: proto::KeyState::Active.into(),
            ..Default::default()
        }
        .encode_to_vec(),
        proto::GetPolicyRequest {}.encode_to_vec(),
        proto::ReloadPolicyRequest {
            ..Default::default()
        }
        .encode_to_vec(),
        proto::OpenCeremonyRequest {
            operation: proto::Operation::Manage.into(),
            params: [
                ("key_id".to_string(), missing_key.clone()),
                ("state".to_string(), "retired".to_string()),
            ]
            .into(),
            ..Default::default()
        }
        .encode_to_vec(),
        proto::CeremonyId {
            id: missing_ceremony.clone(),
            ..Default::default()
        }
        .encode_to_vec(),
        proto::EnterComponentRequest {
            id: missing_ceremony.clone(),
            component: vec![0x11; 16],
            kcv: "ABCDEF".into(),
            ..Default::default()
        }
        .encode_to_vec(),
        proto::CeremonyId {
            id: missing_ceremony.clone(),
            ..Default::default()
        }
        .encode_to_vec(),
        proto::CeremonyId {
            id: missing_ceremony,
            ..Default::default()
        }
        .encode_to_vec(),
        proto::ListCeremoniesRequest {
            state: proto::CeremonyState::Open.into(),
            page_size: 10,
            page_token: String::new(),
        }
        .encode_to_vec(),
        proto::StreamRecordsRequest {
            from_seq: 1,
            to_seq: 3,
            key_id: root.id.clone(),
            ..Default::default()
        }
        .encode_to_vec(),
        proto::GetCheckpointsRequest {
            seal: false,
            page_size: 10,
            page_token: String::new(),
        }
        .encode_to_vec(),
        proto::GetPublicKeyRequest {}.encode_to_vec(),
        // The fuzzing officer may not look ID numbers up.
        proto::FindIdNumberRequest {
            id_number: "44010619900101123X".into(),
            from_seq: 0,
        }
        .encode_to_vec(),
        card.encode_to_vec(),
        card.encode_to_vec(),
        proto::PersonaliseRequest {
            bureau_card_id: "card-000000-0123456789ab".into(),
            card_serial: "1234567890ABCDEF".into(),
        }
        .encode_to_vec(),
        proto::IssueCardRequest {
            region: "440000".into(),
            card_label: "no-such-card".into(),
            card_pin: support::USER_PIN.into(),
            ceremony_id: "c-0123456789abcdef0123456789abcdef".into(),
            ..Default::default()
        }
        .encode_to_vec(),
        proto::LoadCardRequest {
            card_label: "no-such-card".into(),
            card_pin: support::USER_PIN.into(),
            card_id: "card-000000-0123456789ab".into(),
            card_so_pin: support::SO_PIN.into(),
            expected_kcv: "ABCDEF".into(),
            ..Default::default()
        }
        .encode_to_vec(),
        proto::ListTransportKeysRequest {
            page_size: 10,
            page_token: String::new(),
        }
        .encode_to_vec(),
        proto::ExportKeyRequest {
            key_id: gd.id.clone(),
            recipient_region: "440000".into(),
            card_id: String::new(),
            ..Default::default()
        }
        .encode_to_vec(),
        proto::ImportKeyRequest {
            package,
            ..Default::default()
        }
        .encode_to_vec(),
    ]
}

/// A well-formed key package for 440000 (its MAC is not right, and no card is loaded).
fn sample_package(root: &proto::Key, gd: &proto::Key) -> Vec<u8> {
    let header = hkms::transport::PackageHeader {
        package_id: "p-0123456789abcdef0123456789abcdef".into(),
        key_type: "card-master".into(),
        algorithm: "aes128".into(),
        usage: "derive".into(),
        kcv: gd.kcv.clone(),
        kcv_method: "aes-cmac".into(),
        parent_kcv: root.kcv.clone(),
        issuer_node: "000000".into(),
        issuer_region: "000000".into(),
        source_key_id: gd.id.clone(),
        recipient_region: "440000".into(),
        card_id: "card-440000-0123456789ab".into(),
        version: 1,
        created_at: "2026-01-01T00:00:00Z".into(),
        not_after: "2099-01-01T00:00:00Z".into(),
        card_serial: String::new(),
    };
    hkms::transport::Package {
        header_bytes: hkms::transport::Package::header_bytes(&header).expect("header"),
        header,
        wrapped: vec![0x5A; 40],
        mac: [0xA5; hkms::transport::package::MAC_LEN],
    }
    .encode()
    .expect("package")
}

/// One change to a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<usize>().prop_map(Mutation::Delete),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        match *m {
            Mutation::Flip(i, bit) if len > 0 => bytes[i % len] ^= 1 << bit,
            Mutation::Set(i, b) if len > 0 => bytes[i % len] = b,
            Mutation::Insert(i, b) => bytes.insert(i % (len + 1), b),
            Mutation::Delete(i) if len > 0 => {
                bytes.remove(i % len);
            }
            Mutation::Truncate(i) => bytes.truncate(i % (len + 1)),
            _ => {}
        }
    }
    bytes
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(support::test_seed("PROPTEST_RNG_SEED", 1)),
        ..Config::default()
    })
}

#[test]
fn random_and_mutated_bodies_to_every_method_get_a_status_and_change_nothing() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (node, root, gd, suspended) = rt.block_on(fuzz_node());
    let valid = valid_bodies(&root, &gd, &suspended);
    let before = rt.block_on(state(&node));
    let channel = rt.block_on(node.channel());

    // A body that is not protobuf (a field with wire type 7) is the caller's error.
    for (path, kind) in METHODS {
        for s in rt.block_on(call(&channel, path, kind, vec![0x0F, 0xFF, 0xFF])) {
            assert_eq!(s.code(), Code::InvalidArgument, "{path}: {s:?}");
            assert!(
                s.message().contains("not a valid hkms.v1."),
                "{path}: {s:?}"
            );
        }
    }

    let mut random = runner(128);
    random
        .run(
            &(
                0..METHODS.len(),
                proptest::collection::vec(any::<u8>(), 0..200),
            ),
            |(m, body)| {
                let (path, kind) = METHODS[m];
                for s in rt.block_on(call(&channel, path, kind, body)) {
                    answered(&s)?;
                }
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("random bodies: {e}"));
    rt.block_on(healthy(&node));

    let mut mutated = runner(128);
    mutated
        .run(
            &(
                0..METHODS.len(),
                proptest::collection::vec(mutation(), 1..5),
            ),
            |(m, mutations)| {
                let (path, kind) = METHODS[m];
                let body = mutate(valid[m].clone(), &mutations);
                for s in rt.block_on(call(&channel, path, kind, body)) {
                    answered(&s)?;
                }
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("mutated bodies: {e}"));
    rt.block_on(healthy(&node));

    // Unmutated, the valid bodies decode and are refused by the node itself.
    for (m, body) in valid.iter().enumerate() {
        let (path, kind) = METHODS[m];
        for s in rt.block_on(call(&channel, path, kind, body.clone())) {
            assert_ne!(s.code(), Code::Internal, "{path}: {s:?}");
        }
    }
    assert_eq!(rt.block_on(state(&node)), before, "bad input changed state");
    rt.block_on(healthy(&node));
}

/// Any text, including control characters and non-ASCII.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![".{0,48}", "[0-9]{0,8}", "k-[0-9a-f]{0,34}", "[a-z-]{0,20}"]
}

/// A time field: unset, a time near now, or any seconds and nanos at all (before 1970, past
/// 9999, nanos out of range).
fn timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    prop_oneof![
        Just(None),
        (1_700_000_000..1_900_000_000i64, 0..1_000_000_000i32)
            .prop_map(|(seconds, nanos)| Some(prost_types::Timestamp { seconds, nanos })),
        (any::<i64>(), any::<i32>())
            .prop_map(|(seconds, nanos)| Some(prost_types::Timestamp { seconds, nanos })),
    ]
}

/// An enum field's number: UNSPECIFIED, every value of the enums, the numbers just past them,
/// or any number at all (a newer client's value, or garbage).
fn number() -> impl Strategy<Value = i32> {
    prop_oneof![-2..12i32, any::<i32>()]
}

#[test]
fn random_structured_requests_get_clear_errors() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (node, root, gd, _suspended) = rt.block_on(fuzz_node());
    let package = sample_package(&root, &gd);
    let before = rt.block_on(state(&node));
    let channel = rt.block_on(node.channel());
    let auditor = rt.block_on(node.channel_as(AUDITOR));
    let keys = || proto::key_service_client::KeyServiceClient::new(channel.clone());
    let transport =
        || proto::transport_service_client::TransportServiceClient::new(channel.clone());

    runner(64)
        .run(
            &(prop_oneof![text(), Just(root.id.clone())], text()),
            |(parent, region)| {
                let r = rt.block_on(support::try_derive(&mut keys(), &parent, &region));
                clear_error(&r.expect_err("a random derivation"))
            },
        )
        .unwrap_or_else(|e| panic!("DeriveSubKey: {e}"));

    runner(64)
        .run(
            &(number(), text(), text(), number(), any::<i32>(), text()),
            |(tier, region, key_type, state, page_size, page_token)| {
                let r = rt.block_on(keys().list_keys(proto::ListKeysRequest {
                    tier,
                    region,
                    key_type,
                    state,
                    page_size,
                    page_token,
                }));
                match r {
                    Ok(_) => Ok(()),
                    Err(s) => clear_error(&s),
                }
            },
        )
        .unwrap_or_else(|e| panic!("ListKeys: {e}"));

    runner(64)
        .run(
            &(
                prop_oneof![text(), Just(root.id.clone())],
                // Any number but the one step the active root may take directly (suspended):
                // every other state change of it is refused, or needs a ceremony.
                number().prop_filter("not suspended", |n| {
                    *n != i32::from(proto::KeyState::Suspended)
                }),
                number(),
            ),
            |(id, state, expected_state)| {
                let r = rt.block_on(keys().change_key_state(proto::ChangeKeyStateRequest {
                    id,
                    state,
                    expected_state,
                    ..Default::default()
                }));
                clear_error(&r.expect_err("a random state change"))
            },
        )
        .unwrap_or_else(|e| panic!("ChangeKeyState: {e}"));

    runner(64)
        .run(
            &(
                prop_oneof![
                    number(),
                    Just(proto::Operation::Generate.into()),
                    Just(proto::Operation::Manage.into())
                ],
                proptest::collection::btree_map(text(), text(), 0..4),
            ),
            |(operation, params)| {
                let r = rt.block_on(
                    proto::ceremony_service_client::CeremonyServiceClient::new(channel.clone())
                        .open_ceremony(proto::OpenCeremonyRequest {
                            operation,
                            params: params.into_iter().collect(),
                            ..Default::default()
                        }),
                );
                match r {
                    // A well-formed ceremony is only opened: it needs a second officer.
                    Ok(c) => {
                        prop_assert_eq!(c.into_inner().state(), proto::CeremonyState::Open);
                        Ok(())
                    }
                    Err(s) => clear_error(&s),
                }
            },
        )
        .unwrap_or_else(|e| panic!("OpenCeremony: {e}"));

    runner(64)
        .run(
            &(prop_oneof![text(), Just(gd.id.clone())], text(), text()),
            |(key_id, recipient_region, card_id)| {
                let r = rt.block_on(transport().export_key(proto::ExportKeyRequest {
                    key_id,
                    recipient_region,
                    card_id,
                    ..Default::default()
                }));
                clear_error(&r.expect_err("a random export"))
            },
        )
        .unwrap_or_else(|e| panic!("ExportKey: {e}"));

    runner(64)
        .run(
            &prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..300),
                proptest::collection::vec(mutation(), 1..5)
                    .prop_map(move |m| mutate(package.clone(), &m)),
            ],
            |package| {
                let r = rt.block_on(transport().import_key(proto::ImportKeyRequest {
                    package,
                    ..Default::default()
                }));
                clear_error(&r.expect_err("a random package"))
            },
        )
        .unwrap_or_else(|e| panic!("ImportKey: {e}"));

    runner(64)
        .run(
            &(text(), text(), text(), text()),
            |(card_serial, challenge, pin, cardholder_id)| {
                let r = rt.block_on(
                    proto::card_service_client::CardServiceClient::new(channel.clone())
                        .unblock_pin(proto::CardCommandRequest {
                            card_serial,
                            challenge,
                            pin,
                            served_by: "fuzz".into(),
                            cardholder_id,
                            agent_id: String::new(),
                            ..Default::default()
                        }),
                );
                clear_error(&r.expect_err("a random card command"))
            },
        )
        .unwrap_or_else(|e| panic!("UnblockPin: {e}"));

    runner(64)
        .run(
            &(
                any::<u64>(),
                any::<u64>(),
                timestamp(),
                timestamp(),
                text(),
                text(),
                text(),
            ),
            |(from_seq, to_seq, since, until, key_id, actor, operation)| {
                let r = rt.block_on(async {
                    let mut s =
                        proto::audit_service_client::AuditServiceClient::new(auditor.clone())
                            .stream_records(proto::StreamRecordsRequest {
                                from_seq,
                                to_seq,
                                since,
                                until,
                                key_id,
                                actor,
                                operation,
                            })
                            .await?
                            .into_inner();
                    for _ in 0..100_000 {
                        if s.message().await?.is_none() {
                            break;
                        }
                    }
                    Ok::<(), Status>(())
                });
                match r {
                    Ok(()) => Ok(()),
                    Err(s) => clear_error(&s),
                }
            },
        )
        .unwrap_or_else(|e| panic!("StreamRecords: {e}"));

    assert_eq!(rt.block_on(state(&node)), before, "bad input changed state");
    rt.block_on(healthy(&node));
}
