//! End-to-end: a real node on 127.0.0.1 with a real token (SoftHSM2, or Kryoptic with
//! `HKMS_TEST_TOKEN=kryoptic`), used through the public gRPC API and the CLI.

mod support;

use hkms::proto::{self, key_service_client::KeyServiceClient};
use support::{TestNode, TokenKind, stdout, try_derive as derive};
use tonic::Code;
use tonic::transport::Channel;

async fn list(c: &mut KeyServiceClient<Channel>, r: proto::ListKeysRequest) -> Vec<proto::Key> {
    c.list_keys(r).await.expect("list").into_inner().keys
}

fn all() -> proto::ListKeysRequest {
    proto::ListKeysRequest::default()
}

fn is_kcv(s: &str) -> bool {
    s.len() == 6 && s.chars().all(|c| c.is_ascii_hexdigit())
}

#[tokio::test]
async fn ministry_generates_and_derives_down_to_the_city() {
    let node = TestNode::start("national", "000000");
    let mut c = node.client().await;

    let root = node.generate("card-master").await;
    assert_eq!(root.tier(), proto::Tier::National);
    assert_eq!(root.region, "000000");
    assert_eq!(root.parent_id, "");
    assert_eq!(root.state(), proto::KeyState::Active);
    assert_eq!(root.kcv_method(), proto::KcvMethod::AesCmac);
    assert!(is_kcv(&root.kcv), "{}", root.kcv);

    let gd = derive(&mut c, &root.id, "440000")
        .await
        .expect("derive 440000");
    assert_eq!(gd.tier(), proto::Tier::Provincial);
    assert_eq!(gd.parent_id, root.id);
    assert_eq!(gd.factor, "0000000000440000");
    assert_eq!(gd.version, root.version);
    assert!(is_kcv(&gd.kcv));

    let gz = derive(&mut c, &gd.id, "440100")
        .await
        .expect("derive 440100");
    assert_eq!(gz.tier(), proto::Tier::Municipal);
    assert_eq!(gz.region, "440100");
    assert_eq!(gz.parent_id, gd.id);
    assert_eq!(gz.factor, "0000000000440100");
    assert_ne!(gz.kcv, gd.kcv);

    assert_eq!(list(&mut c, all()).await.len(), 3);
    let municipal = list(
        &mut c,
        proto::ListKeysRequest {
            tier: proto::Tier::Municipal.into(),
            ..all()
        },
    )
    .await;
    assert_eq!(
        municipal.iter().map(|k| &k.id).collect::<Vec<_>>(),
        [&gz.id]
    );
    let gd_only = list(
        &mut c,
        proto::ListKeysRequest {
            region: "440000".into(),
            key_type: "card-master".into(),
            state: proto::KeyState::Active.into(),
            ..all()
        },
    )
    .await;
    assert_eq!(gd_only.len(), 1);
    assert_eq!(gd_only[0].id, gd.id);
    let none = list(
        &mut c,
        proto::ListKeysRequest {
            key_type: "pin-unblock".into(),
            ..all()
        },
    )
    .await;
    assert!(none.is_empty());

    let got = c
        .get_key(proto::GetKeyRequest { id: gz.id.clone() })
        .await
        .expect("get")
        .into_inner()
        .key
        .expect("key");
    assert_eq!(got, gz);
}

#[tokio::test]
async fn legacy_3des_family_is_diversified_into_des2() {
    let node = TestNode::start("national", "000000");
    let mut c = node.client().await;
    if node.token.kind == TokenKind::Kryoptic {
        // Kryoptic has no 3DES: its mechanism list says so, and the ceremony fails naming the
        // token and the mechanism, with nothing made.
        let done = node
            .ceremony(
                proto::Operation::Generate,
                &[("key_type", "legacy-card-master")],
            )
            .await;
        assert_eq!(
            done.state(),
            proto::CeremonyState::Failed,
            "{}",
            done.result
        );
        assert!(
            done.result.contains(
                "token \"hkms-test\" (Kryoptic Project v1) does not offer CKM_DES2_KEY_GEN"
            ),
            "{}",
            done.result
        );
        assert!(list(&mut c, all()).await.is_empty());
        return;
    }
    let root = node.generate("legacy-card-master").await;
    assert_eq!(root.algorithm(), proto::Algorithm::Des2);
    assert_eq!(root.kcv_method(), proto::KcvMethod::Des3Cmac);
    let child = derive(&mut c, &root.id, "440000").await.expect("derive");
    assert_eq!(child.algorithm(), proto::Algorithm::Des2);
    assert!(is_kcv(&child.kcv));
}

#[tokio::test]
async fn bad_input_gets_a_clear_status_and_changes_nothing() {
    let node = TestNode::start("national", "000000");
    let mut c = node.client().await;
    let root = node.generate("card-master").await;
    let gd = derive(&mut c, &root.id, "440000").await.expect("derive");
    let before = list(&mut c, all()).await;

    let cases: Vec<(&str, String, &str, Code, &str)> = vec![
        (
            "unknown province",
            root.id.clone(),
            "990000",
            Code::InvalidArgument,
            "province",
        ),
        (
            "not six digits",
            root.id.clone(),
            "44",
            Code::InvalidArgument,
            "6 digits",
        ),
        (
            "county code",
            gd.id.clone(),
            "440106",
            Code::InvalidArgument,
            "county",
        ),
        (
            "city of another province",
            gd.id.clone(),
            "450100",
            Code::InvalidArgument,
            "450000",
        ),
        (
            "city from the national key",
            root.id.clone(),
            "440100",
            Code::InvalidArgument,
            "440000",
        ),
        (
            "unknown parent",
            "k-00000000000000000000000000000000".into(),
            "440000",
            Code::NotFound,
            "no key",
        ),
        (
            "malformed id",
            "not-an-id".into(),
            "440000",
            Code::InvalidArgument,
            "id",
        ),
        (
            "derived twice",
            root.id.clone(),
            "440000",
            Code::AlreadyExists,
            &gd.id,
        ),
    ];
    for (what, parent, region, code, needle) in cases {
        let err = derive(&mut c, &parent, region).await.expect_err(what);
        assert_eq!(err.code(), code, "{what}: {}", err.message());
        assert!(err.message().contains(needle), "{what}: {}", err.message());
    }

    let err = c
        .generate_key(proto::GenerateKeyRequest {
            key_type: "no-such-type".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown key type");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("card-master"), "{}", err.message());

    let err = c
        .generate_key(proto::GenerateKeyRequest {
            key_type: "local-special".into(),
            ..Default::default()
        })
        .await
        .expect_err("local key at the ministry");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());

    let err = c
        .list_keys(proto::ListKeysRequest {
            state: 99, // no KeyState: a newer client's, or garbage
            ..all()
        })
        .await
        .expect_err("bad filter");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("99"), "{}", err.message());

    // Deriving from a retired key is refused.
    let retired = node
        .ceremony(
            hkms::proto::Operation::Manage,
            &[("key_id", &gd.id), ("state", "retired")],
        )
        .await;
    assert_eq!(
        retired.state(),
        proto::CeremonyState::Done,
        "{}",
        retired.result
    );
    let err = derive(&mut c, &gd.id, "440100")
        .await
        .expect_err("retired parent");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("retired"), "{}", err.message());

    let after = list(&mut c, all()).await;
    assert_eq!(
        after.len(),
        before.len(),
        "no key was added by a refused request"
    );

    // Token and registry still agree: nothing half-made is left behind.
    let out = node.cli(&["keys", "orphans"]);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("0 orphans, 0 missing"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn lifecycle_follows_sp800_57_and_destroy_removes_the_hsm_key() {
    let node = TestNode::start("national", "000000");
    let mut c = node.client().await;
    let k = node.generate("pin-unblock").await;
    let state = |to: proto::KeyState, expect: proto::KeyState| {
        let mut c = c.clone();
        let id = k.id.clone();
        async move {
            c.change_key_state(proto::ChangeKeyStateRequest {
                id,
                state: to.into(),
                expected_state: expect.into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().key.expect("key"))
        }
    };
    use proto::KeyState::{Active, Retired, Suspended, Unspecified};
    // A new state is needed: UNSPECIFIED is refused, as an empty state string was.
    let err = state(Unspecified, Unspecified)
        .await
        .expect_err("no new state");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert_eq!(
        state(Suspended, Unspecified)
            .await
            .expect("suspend")
            .state(),
        Suspended
    );
    let err = state(Active, Active).await.expect_err("stale expectation");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(
        state(Active, Suspended).await.expect("resume").state(),
        Active
    );
    // Retiring and destroying are under dual control: refused directly, done by ceremony.
    let err = state(Retired, Unspecified)
        .await
        .expect_err("retire without a ceremony");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("dual control"), "{}", err.message());
    // An active key cannot be destroyed: such a ceremony is refused when it is opened.
    let mut ceremonies =
        hkms::proto::ceremony_service_client::CeremonyServiceClient::new(node.channel().await);
    let err = ceremonies
        .open_ceremony(proto::OpenCeremonyRequest {
            operation: proto::Operation::Manage.into(),
            params: [("key_id", k.id.as_str()), ("state", "destroyed")]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            ..Default::default()
        })
        .await
        .expect_err("active cannot be destroyed");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    let retired = node
        .ceremony(
            hkms::proto::Operation::Manage,
            &[("key_id", &k.id), ("state", "retired")],
        )
        .await;
    assert_eq!(
        retired.state(),
        proto::CeremonyState::Done,
        "{}",
        retired.result
    );
    let err = state(Active, Unspecified)
        .await
        .expect_err("no way back from retired");
    assert_eq!(err.code(), Code::FailedPrecondition);
    let destroyed = node
        .ceremony(
            hkms::proto::Operation::Manage,
            &[("key_id", &k.id), ("state", "destroyed")],
        )
        .await;
    assert_eq!(
        destroyed.state(),
        proto::CeremonyState::Done,
        "{}",
        destroyed.result
    );
    assert!(
        destroyed.result.contains("state destroyed"),
        "{}",
        destroyed.result
    );
    // The record stays, the HSM key is gone, and the registry agrees with the token.
    let kept = list(&mut c, all()).await;
    assert_eq!(kept.len(), 1);
    let audit = node.cli(&["token", "audit"]);
    assert!(
        stdout(&audit).contains("checked 2 key objects"),
        "{}",
        stdout(&audit)
    );
    let out = node.cli(&["keys", "orphans"]);
    assert!(
        stdout(&out).contains("0 orphans, 0 missing"),
        "{}",
        stdout(&out)
    );
}

#[tokio::test]
async fn provincial_node_generates_only_what_its_tier_may() {
    let node = TestNode::start("provincial", "440000");
    let mut c = node.client().await;
    let err = c
        .generate_key(proto::GenerateKeyRequest {
            key_type: "card-master".into(),
            ..Default::default()
        })
        .await
        .expect_err("national key at a province");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert!(
        err.message()
            .contains("denied: role officer at 440000 may not generate card-master"),
        "{}",
        err.message()
    );
    let local = c
        .generate_key(proto::GenerateKeyRequest {
            key_type: "local-special".into(),
            ..Default::default()
        })
        .await
        .expect("local key")
        .into_inner()
        .key
        .expect("key");
    assert_eq!(local.tier(), proto::Tier::Provincial);
    assert_eq!(local.region, "440000");
    let err = derive(&mut c, &local.id, "440100")
        .await
        .expect_err("local keys stay local");
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn cli_prints_tables_and_json() {
    let node = TestNode::start("national", "000000");
    // A national key is generated by ceremony: opened by one officer, approved by another.
    let out = node.cli(&["keys", "generate", "--type", "card-master"]);
    assert!(!out.status.success());
    assert!(
        support::stderr(&out).contains("dual control"),
        "{}",
        support::stderr(&out)
    );
    let out = node.cli(&[
        "ceremony",
        "open",
        "--op",
        "generate",
        "--key-type",
        "card-master",
        "--json",
    ]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    let opened: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(opened["state"], "open");
    assert_eq!(opened["approvals"].as_array().map(Vec::len), Some(1));
    let cid = opened["id"].as_str().expect("id").to_string();
    let out = node.cli(&["ceremony", "approve", &cid]);
    assert!(
        support::stderr(&out).contains("already approved"),
        "{}",
        support::stderr(&out)
    );
    let out = node.cli_as(&node.second_officer(), &["ceremony", "approve", &cid]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    assert!(stdout(&out).contains("state     done"), "{}", stdout(&out));
    let id = support::key_id_in(&stdout(&out)).expect("key id in the result");
    let out = node.cli(&["ceremony", "list", "--state", "done"]);
    assert!(stdout(&out).contains(&cid), "{}", stdout(&out));

    let out = node.cli(&["keys", "derive", "--parent", &id, "--region", "440000"]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    assert!(stdout(&out).contains("440000"));
    assert!(stdout(&out).contains("aes-cmac"));

    let out = node.cli(&["keys", "list"]);
    assert!(out.status.success());
    let table = stdout(&out);
    assert!(table.contains("KCV") && table.contains(&id), "{table}");

    let out = node.cli(&["keys", "list", "--tree"]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    let tree = stdout(&out);
    let lines: Vec<&str> = tree.lines().collect();
    assert!(
        lines[0].starts_with(&format!("000000 card-master {id}")),
        "{tree}"
    );
    assert!(lines[1].starts_with("└─ 440000 card-master k-"), "{tree}");

    let out = node.cli(&["keys", "list", "--tier", "provincial", "--json"]);
    let keys: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(keys.as_array().map(Vec::len), Some(1));
    assert_eq!(keys[0]["parent_id"], id.as_str());

    let out = node.cli(&["keys", "show", "k-00000000000000000000000000000000"]);
    assert!(!out.status.success());
    assert!(
        support::stderr(&out).contains("NOT_FOUND"),
        "{}",
        support::stderr(&out)
    );
}

#[tokio::test]
async fn health_reports_token_and_store_and_reflection_lists_the_api() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let node = TestNode::start("national", "000000");
    let mut health = HealthClient::new(node.channel().await);
    for service in ["", "token", "store", "hkms.v1.KeyService"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service}");
    }

    use tokio_stream::StreamExt;
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut reflection = ServerReflectionClient::new(node.channel().await);
    let ask = |message: MessageRequest| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    };
    let requests = [
        ask(MessageRequest::ListServices(String::new())),
        ask(MessageRequest::FileContainingSymbol(
            "hkms.v1.KeyService".into(),
        )),
        ask(MessageRequest::FileContainingSymbol(
            "hkms.v1.KeyState".into(),
        )),
        ask(MessageRequest::FileContainingSymbol(
            "google.protobuf.Timestamp".into(),
        )),
    ];
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter(requests))
        .await
        .expect("reflection")
        .into_inner();
    let response = stream.next().await.expect("one answer").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == "hkms.v1.KeyService"), "{names:?}");

    // The older v1alpha protocol, which the stock Python client speaks, lists the same.
    {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut old = ServerReflectionClient::new(node.channel().await);
        let mut stream = old
            .server_reflection_info(tokio_stream::iter([ServerReflectionRequest {
                host: String::new(),
                message_request: Some(MessageRequest::ListServices(String::new())),
            }]))
            .await
            .expect("v1alpha reflection")
            .into_inner();
        let response = stream.next().await.expect("one answer").expect("ok");
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected v1alpha reflection answer");
        };
        assert!(
            list.service.iter().any(|s| s.name == "hkms.v1.KeyService"),
            "{:?}",
            list.service
        );
    }

    // A gzip-compressed request is taken, and the answer compressed for a client that asks.
    let gzip = tonic::codec::CompressionEncoding::Gzip;
    let listed = hkms::proto::key_service_client::KeyServiceClient::new(node.channel().await)
        .send_compressed(gzip)
        .accept_compressed(gzip)
        .list_keys(hkms::proto::ListKeysRequest::default())
        .await
        .expect("a gzip request");
    assert_eq!(
        listed
            .metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip")
    );

    // A client without the .proto files (grpcurl) finds the service's file, the files it
    // imports for the enums and the times, and what they declare.
    /// The name and imports of a `google.protobuf.FileDescriptorProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    struct FileHead {
        #[prost(string, optional, tag = "1")]
        name: Option<String>,
        #[prost(string, repeated, tag = "3")]
        dependency: Vec<String>,
    }
    let mut file = async || {
        let response = stream.next().await.expect("an answer").expect("ok");
        let Some(MessageResponse::FileDescriptorResponse(files)) = response.message_response else {
            panic!("unexpected reflection answer");
        };
        let [file] = files.file_descriptor_proto.as_slice() else {
            panic!("{} files", files.file_descriptor_proto.len());
        };
        <FileHead as prost::Message>::decode(file.as_slice()).expect("a file descriptor")
    };
    let keys = file().await;
    assert_eq!(keys.name.as_deref(), Some("hkms/v1/keys.proto"));
    assert_eq!(
        keys.dependency,
        ["google/protobuf/timestamp.proto", "hkms/v1/types.proto"]
    );
    let types = file().await;
    assert_eq!(types.name.as_deref(), Some("hkms/v1/types.proto"));
    let timestamp = file().await;
    assert_eq!(
        timestamp.name.as_deref(),
        Some("google/protobuf/timestamp.proto")
    );
}

#[tokio::test]
async fn oversized_input_is_refused_with_a_short_status_and_a_short_record() {
    let node = TestNode::start("national", "000000");
    let mut c = node.client().await;
    // About 1 MiB of key id, within gRPC's 4 MiB message limit.
    let huge = format!("k-{}", "0".repeat(1 << 20));
    let err = c
        .get_key(proto::GetKeyRequest { id: huge.clone() })
        .await
        .expect_err("an oversized id");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().len() < 1024, "{} bytes", err.message().len());
    assert!(err.message().ends_with("…(cut)"), "{}", err.message());

    // A ceremony with many parameters is refused before the record lists them.
    let params = (0..10_000)
        .map(|i| (format!("p{i}"), "v".repeat(100)))
        .collect();
    let err =
        hkms::proto::ceremony_service_client::CeremonyServiceClient::new(node.channel().await)
            .open_ceremony(proto::OpenCeremonyRequest {
                operation: proto::Operation::Generate.into(),
                params,
                ..Default::default()
            })
            .await
            .expect_err("10,000 parameters");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().contains("at most 8"), "{}", err.message());

    // Both refusals are in the log, and no line of it comes near the input's size.
    let db = rusqlite::Connection::open(node.database()).expect("registry");
    let (refused, longest): (i64, i64) = db
        .query_row(
            "SELECT count(*) FILTER (WHERE json_extract(line, '$.rpc') IN \
             ('GetKey', 'OpenCeremony') AND json_extract(line, '$.result.code') = \
             'INVALID_ARGUMENT'), max(length(line)) FROM audit_log",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("read the log");
    assert_eq!(refused, 2);
    assert!(longest < 4096, "a record of {longest} bytes");
}
