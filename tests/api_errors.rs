//! Errors as a program meets them through the public gRPC API: each failure kind answers with
//! its gRPC code and a `google.rpc.ErrorInfo` (domain `hkms.v1`) whose reason tells it apart
//! from the others of its code, and a wrong field is named in a `google.rpc.BadRequest`. The
//! details are decoded from `grpc-status-details-bin` as any client would (tonic-types here;
//! `grpc_status` in Python). docs/api.md, "Errors", lists the reasons.

mod support;

use hkms::pki::Validity;
use hkms::proto::{
    self, ceremony_service_client::CeremonyServiceClient, key_service_client::KeyServiceClient,
};
use support::raw_codec::RawCodec;
use support::{TestNode, client_tls};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_types::{ErrorInfo, StatusExt};

const AUDITOR: &str = "hkms://auditor/national/000000/auditor-1";
const NO_SUCH_KEY: &str = "k-00000000000000000000000000000000";
const NO_SUCH_CEREMONY: &str = "c-00000000000000000000000000000000";

/// The status's `ErrorInfo`, which every error status carries, in the API's domain.
fn info(s: &Status) -> ErrorInfo {
    let info = s
        .get_details_error_info()
        .unwrap_or_else(|| panic!("no ErrorInfo in {s:?}"));
    assert_eq!(info.domain, "hkms.v1", "{s:?}");
    info
}

/// Asserts `s` has `code` and `reason`, and returns its metadata.
fn assert_reason(
    s: &Status,
    code: Code,
    reason: &str,
) -> std::collections::HashMap<String, String> {
    assert_eq!(s.code(), code, "{s:?}");
    assert!(!s.message().is_empty(), "{s:?}");
    let info = info(s);
    assert_eq!(info.reason, reason, "{s:?}");
    info.metadata
}

/// The one field a `BadRequest` names.
fn bad_field(s: &Status) -> String {
    let bad = s
        .get_details_bad_request()
        .unwrap_or_else(|| panic!("no BadRequest in {s:?}"));
    assert_eq!(bad.field_violations.len(), 1, "{s:?}");
    let v = &bad.field_violations[0];
    assert!(!v.description.is_empty(), "{s:?}");
    v.field.clone()
}

#[tokio::test]
async fn a_policy_denial_is_policy_denied() {
    let node = TestNode::start("national", "000000");
    let err = node
        .client_as(AUDITOR)
        .await
        .generate_key(proto::GenerateKeyRequest {
            key_type: "card-master".into(),
            ..Default::default()
        })
        .await
        .expect_err("an auditor generates nothing");
    let meta = assert_reason(&err, Code::PermissionDenied, "POLICY_DENIED");
    assert_eq!(meta.get("operation").map(String::as_str), Some("generate"));
}

#[tokio::test]
async fn a_direct_request_for_a_guarded_operation_is_ceremony_required() {
    let node = TestNode::start("national", "000000");
    let err = node
        .client()
        .await
        .generate_key(proto::GenerateKeyRequest {
            key_type: "card-master".into(),
            ..Default::default()
        })
        .await
        .expect_err("national keys are made by ceremony");
    let meta = assert_reason(&err, Code::FailedPrecondition, "CEREMONY_REQUIRED");
    assert_eq!(meta.get("operation").map(String::as_str), Some("generate"));
    assert_eq!(
        meta.get("key_type").map(String::as_str),
        Some("card-master")
    );
    assert_eq!(meta.get("approvals").map(String::as_str), Some("2"));
    // The node's log line of the refusal names the reason too.
    let log = node.log();
    assert!(
        log.lines()
            .any(|l| l.contains("refused") && l.contains("CEREMONY_REQUIRED")),
        "{log}"
    );
}

#[tokio::test]
async fn a_key_in_the_wrong_state_is_wrong_key_state_not_ceremony_required() {
    let node = TestNode::start("national", "000000");
    let root = node.generate("card-master").await;
    let mut c = node.client().await;
    c.change_key_state(proto::ChangeKeyStateRequest {
        id: root.id.clone(),
        state: proto::KeyState::Suspended.into(),
        ..Default::default()
    })
    .await
    .expect("suspend");

    // Diversifying a suspended key.
    let err = support::try_derive(&mut c, &root.id, "440000")
        .await
        .expect_err("a suspended key is not diversified");
    let meta = assert_reason(&err, Code::FailedPrecondition, "WRONG_KEY_STATE");
    assert_eq!(meta.get("key_id"), Some(&root.id));
    assert_eq!(meta.get("state").map(String::as_str), Some("suspended"));

    // A state change that assumed another state (compare-and-set).
    let err = c
        .change_key_state(proto::ChangeKeyStateRequest {
            id: root.id.clone(),
            state: proto::KeyState::Suspended.into(),
            expected_state: proto::KeyState::Active.into(),
            ..Default::default()
        })
        .await
        .expect_err("the key is not active");
    let meta = assert_reason(&err, Code::FailedPrecondition, "WRONG_KEY_STATE");
    assert_eq!(meta.get("key_id"), Some(&root.id));
    assert_eq!(meta.get("state").map(String::as_str), Some("suspended"));
    assert_eq!(
        meta.get("expected_state").map(String::as_str),
        Some("active")
    );

    // A move SP 800-57 does not allow.
    let err = c
        .change_key_state(proto::ChangeKeyStateRequest {
            id: root.id.clone(),
            state: proto::KeyState::Suspended.into(),
            ..Default::default()
        })
        .await
        .expect_err("suspended already");
    let meta = assert_reason(&err, Code::FailedPrecondition, "WRONG_KEY_STATE");
    assert_eq!(meta.get("key_id"), Some(&root.id));
    assert_eq!(meta.get("state").map(String::as_str), Some("suspended"));
}

#[tokio::test]
async fn an_unknown_key_is_key_not_found() {
    let node = TestNode::start("national", "000000");
    let err = node
        .client()
        .await
        .get_key(proto::GetKeyRequest {
            id: NO_SUCH_KEY.into(),
        })
        .await
        .expect_err("no such key");
    let meta = assert_reason(&err, Code::NotFound, "KEY_NOT_FOUND");
    assert_eq!(meta.get("key_id").map(String::as_str), Some(NO_SUCH_KEY));
}

#[tokio::test]
async fn a_wrong_field_is_named_in_a_bad_request() {
    let node = TestNode::start("national", "000000");
    let mut c = node.client().await;
    for (parent, region, field) in [
        ("not-a-key-id", "440000", "parent_id"),
        (NO_SUCH_KEY, "4400", "region"),
    ] {
        let err = support::try_derive(&mut c, parent, region)
            .await
            .expect_err("a malformed field");
        let meta = assert_reason(&err, Code::InvalidArgument, "INVALID_FIELD");
        assert_eq!(meta.get("field").map(String::as_str), Some(field));
        assert_eq!(bad_field(&err), field);
    }

    let err = c
        .list_keys(proto::ListKeysRequest {
            tier: 99,
            ..Default::default()
        })
        .await
        .expect_err("99 is no tier");
    assert_reason(&err, Code::InvalidArgument, "INVALID_FIELD");
    assert_eq!(bad_field(&err), "tier");

    // A ceremony parameter is named by its path in the request.
    let err = CeremonyServiceClient::new(node.channel().await)
        .open_ceremony(proto::OpenCeremonyRequest {
            operation: proto::Operation::Generate.into(),
            params: [("components".to_string(), "2".to_string())].into(),
            ..Default::default()
        })
        .await
        .expect_err("a generate ceremony needs key_type");
    assert_reason(&err, Code::InvalidArgument, "INVALID_FIELD");
    assert_eq!(bad_field(&err), "params.key_type");

    // A key type the policy does not declare is its own reason, with the name sent.
    let err = c
        .generate_key(proto::GenerateKeyRequest {
            key_type: "no-such-type".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown key type");
    let meta = assert_reason(&err, Code::InvalidArgument, "UNKNOWN_KEY_TYPE");
    assert_eq!(
        meta.get("key_type").map(String::as_str),
        Some("no-such-type")
    );
}

#[tokio::test]
async fn ceremony_refusals_have_their_reasons() {
    let node = TestNode::start("national", "000000");
    let mut opener = CeremonyServiceClient::new(node.channel().await);
    let opened = opener
        .open_ceremony(proto::OpenCeremonyRequest {
            operation: proto::Operation::Generate.into(),
            params: [("key_type".to_string(), "card-master".to_string())].into(),
            ..Default::default()
        })
        .await
        .expect("open")
        .into_inner();
    let id = proto::CeremonyId {
        id: opened.id.clone(),
        ..Default::default()
    };

    // The opener's approval counts already.
    let err = opener
        .approve_ceremony(id.clone())
        .await
        .expect_err("approved once");
    let meta = assert_reason(&err, Code::AlreadyExists, "ALREADY_APPROVED");
    assert_eq!(meta.get("ceremony_id"), Some(&opened.id));

    opener
        .cancel_ceremony(id.clone())
        .await
        .expect("cancel an open ceremony");
    let mut second = CeremonyServiceClient::new(node.channel_as(&node.second_officer()).await);
    let err = second
        .approve_ceremony(id)
        .await
        .expect_err("a cancelled ceremony");
    let meta = assert_reason(&err, Code::FailedPrecondition, "CEREMONY_NOT_OPEN");
    assert_eq!(meta.get("ceremony_id"), Some(&opened.id));
    assert_eq!(meta.get("state").map(String::as_str), Some("cancelled"));

    let err = second
        .get_ceremony(proto::CeremonyId {
            id: NO_SUCH_CEREMONY.into(),
            ..Default::default()
        })
        .await
        .expect_err("no such ceremony");
    assert_reason(&err, Code::NotFound, "CEREMONY_NOT_FOUND");

    // Suspending needs no ceremony: opening one for it is refused with its own reason.
    let err = opener
        .open_ceremony(proto::OpenCeremonyRequest {
            operation: proto::Operation::Manage.into(),
            params: [
                ("key_id".to_string(), NO_SUCH_KEY.to_string()),
                ("state".to_string(), "suspended".to_string()),
            ]
            .into(),
            ..Default::default()
        })
        .await
        .expect_err("suspending is done directly");
    assert_reason(&err, Code::InvalidArgument, "INVALID_FIELD");
    assert_eq!(bad_field(&err), "params.state");
}

/// Sends `body` to `path` as a unary call; the status the node answered with.
async fn raw_call(channel: &Channel, path: &'static str, body: Vec<u8>) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("the connection is up");
    grpc.unary::<_, Vec<u8>, _>(
        tonic::Request::new(body),
        PathAndQuery::from_static(path),
        RawCodec,
    )
    .await
    .expect_err("refused")
}

#[tokio::test]
async fn an_undecodable_body_is_invalid_argument_malformed_body() {
    let node = TestNode::start("national", "000000");
    // Field 1 with wire type 7, which protobuf does not have.
    let err = raw_call(
        &node.channel().await,
        "/hkms.v1.KeyService/GetKey",
        vec![0x0f, 0xff, 0xff],
    )
    .await;
    let meta = assert_reason(&err, Code::InvalidArgument, "MALFORMED_BODY");
    assert_eq!(
        meta.get("message").map(String::as_str),
        Some("hkms.v1.GetKeyRequest")
    );
}

#[tokio::test]
async fn an_unknown_method_is_unimplemented_and_named() {
    let node = TestNode::start("national", "000000");
    let ch = node.channel().await;
    let err = raw_call(&ch, "/hkms.v1.KeyService/Nope", Vec::new()).await;
    let meta = assert_reason(&err, Code::Unimplemented, "UNKNOWN_METHOD");
    assert!(err.message().contains("Nope"), "{}", err.message());
    assert!(err.message().contains("GetKey"), "{}", err.message());
    assert_eq!(
        meta.get("method").map(String::as_str),
        Some("/hkms.v1.KeyService/Nope")
    );

    let err = raw_call(&ch, "/hkms.v1.NoSuchService/GetKey", Vec::new()).await;
    assert_reason(&err, Code::Unimplemented, "UNKNOWN_METHOD");
    assert!(
        err.message().contains("hkms.v1.KeyService"),
        "{}",
        err.message()
    );

    let log = node.log();
    assert!(
        log.lines()
            .any(|l| l.contains("unknown method") && l.contains("/hkms.v1.KeyService/Nope")),
        "{log}"
    );

    // Served methods still are.
    KeyServiceClient::new(ch)
        .list_keys(proto::ListKeysRequest::default())
        .await
        .expect("a served method");
}

#[tokio::test]
async fn a_missing_or_unusable_client_certificate_is_unauthenticated() {
    let node = TestNode::start("national", "000000");

    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(node.ca.cert_pem()));
    let ch = node.try_channel(tls).await.expect("a connection");
    let err = KeyServiceClient::new(ch.clone())
        .list_keys(proto::ListKeysRequest::default())
        .await
        .expect_err("no certificate");
    assert_reason(&err, Code::Unauthenticated, "CLIENT_CERTIFICATE_MISSING");
    // Refused before anything else: an unknown method is not told apart without one.
    let err = raw_call(&ch, "/hkms.v1.KeyService/Nope", Vec::new()).await;
    assert_reason(&err, Code::Unauthenticated, "CLIENT_CERTIFICATE_MISSING");

    let tls = client_tls(&node.ca, None, Validity::days(1));
    let ch = node.try_channel(tls).await.expect("a connection");
    let err = KeyServiceClient::new(ch)
        .list_keys(proto::ListKeysRequest::default())
        .await
        .expect_err("no identity");
    assert_reason(&err, Code::Unauthenticated, "IDENTITY_INVALID");
}
