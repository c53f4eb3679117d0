//! Identity from mTLS certificates and the policy engine, end to end: real certificates, a real
//! server and token.

mod support;

use hkms::pki::{DevCa, Validity};
use hkms::proto::{
    self, audit_service_client::AuditServiceClient, card_service_client::CardServiceClient,
    ceremony_service_client::CeremonyServiceClient, key_service_client::KeyServiceClient,
    policy_service_client::PolicyServiceClient,
};
use sha2::{Digest, Sha256};
use support::{TestNode, client_tls, make_token, node_config, try_derive as derive};
use tonic::Code;
use tonic::transport::Channel;

const GD_SYSTEM: &str = "hkms://system/provincial/440000/gd-kms";
const GZ_WINDOW: &str = "hkms://window/municipal/440100/counter-1";
const AUDITOR: &str = "hkms://auditor/national/000000/auditor-1";
const ISSUANCE: &str = "hkms://system/municipal/440100/card-issuance";
const ADMIN: &str = "hkms://admin/national/000000/admin-1";

async fn generate(
    c: &mut KeyServiceClient<Channel>,
    key_type: &str,
) -> Result<proto::Key, tonic::Status> {
    c.generate_key(proto::GenerateKeyRequest {
        key_type: key_type.into(),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().key.expect("key"))
}

async fn list(c: &mut KeyServiceClient<Channel>) -> Vec<proto::Key> {
    c.list_keys(proto::ListKeysRequest::default())
        .await
        .expect("list")
        .into_inner()
        .keys
}

fn denied(r: Result<proto::Key, tonic::Status>, what: &str) -> String {
    let e = r.expect_err(what);
    assert_eq!(e.code(), Code::PermissionDenied, "{what}: {}", e.message());
    assert!(
        e.message().starts_with("denied: "),
        "{what}: {}",
        e.message()
    );
    e.message().to_string()
}

/// A refusal that says no more than a missing key would: NOT_FOUND, naming the caller's
/// rights and not the key's type or region.
fn hidden(r: Result<proto::Key, tonic::Status>, what: &str) -> String {
    let e = r.expect_err(what);
    assert_eq!(e.code(), Code::NotFound, "{what}: {}", e.message());
    assert!(
        e.message().starts_with("no key k-"),
        "{what}: {}",
        e.message()
    );
    assert!(
        !e.message().contains("card-master"),
        "{what}: {}",
        e.message()
    );
    e.message().to_string()
}

/// A ministry node with a card master key diversified for Guangdong and Guangxi.
async fn ministry() -> (TestNode, proto::Key, proto::Key, proto::Key) {
    let node = TestNode::start("national", "000000");
    let mut officer = node.client().await;
    let root = node.generate("card-master").await;
    let gd = derive(&mut officer, &root.id, "440000")
        .await
        .expect("derive 440000");
    let gx = derive(&mut officer, &root.id, "450000")
        .await
        .expect("derive 450000");
    (node, root, gd, gx)
}

#[tokio::test]
async fn provincial_system_derives_only_its_own_cities_and_sees_only_its_keys() {
    let (node, root, gd, gx) = ministry().await;
    let mut gd_system = node.client_as(GD_SYSTEM).await;
    let gz = derive(&mut gd_system, &gd.id, "440100")
        .await
        .expect("Guangzhou");
    assert_eq!(gz.region, "440100");
    // Keys the province may not derive from are answered as keys that do not exist.
    let why = hidden(
        derive(&mut gd_system, &gx.id, "450100").await,
        "Nanning is not Guangdong's",
    );
    let missing = format!("k-{}", "0".repeat(32));
    let none = hidden(
        derive(&mut gd_system, &missing, "450100").await,
        "a key that does not exist",
    );
    assert_eq!(why.replace(&gx.id, "K"), none.replace(&missing, "K"));
    hidden(
        derive(&mut gd_system, &root.id, "450000").await,
        "province cannot derive provinces",
    );
    denied(
        generate(&mut gd_system, "card-master").await,
        "province cannot generate national keys",
    );

    let mut seen: Vec<String> = list(&mut gd_system)
        .await
        .into_iter()
        .map(|k| k.region)
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        ["440000", "440100"],
        "a province sees its own keys and its cities' only"
    );
    let err = gd_system
        .get_key(proto::GetKeyRequest { id: gx.id.clone() })
        .await
        .expect_err("Guangxi's key");
    assert_eq!(err.code(), Code::NotFound, "{}", err.message());
    let none = gd_system
        .get_key(proto::GetKeyRequest {
            id: missing.clone(),
        })
        .await
        .expect_err("no such key");
    assert_eq!(
        (none.code(), none.message().replace(&missing, "K")),
        (err.code(), err.message().replace(&gx.id, "K"))
    );
}

#[tokio::test]
async fn municipal_window_cannot_generate_or_derive_national_keys() {
    let (node, root, gd, _) = ministry().await;
    let mut window = node.client_as(GZ_WINDOW).await;
    denied(
        generate(&mut window, "card-master").await,
        "window generates",
    );
    // A window may derive nothing: the same refusal for a key that exists and one that
    // does not, naming no key.
    let why = denied(
        derive(&mut window, &root.id, "440000").await,
        "window derives",
    );
    let missing = format!("k-{}", "0".repeat(32));
    let none = denied(derive(&mut window, &missing, "440000").await, "no such key");
    assert_eq!(why, none);
    assert!(
        why.contains("no rule of the policy lets hkms://window/municipal/440100/counter-1 derive"),
        "{why}"
    );
    denied(
        derive(&mut window, &gd.id, "440100").await,
        "window derives its own city",
    );
    assert_eq!(
        list(&mut node.client().await).await.len(),
        3,
        "nothing was made"
    );
}

#[tokio::test]
async fn auditor_lists_everything_and_changes_nothing() {
    let (node, root, gd, _) = ministry().await;
    let mut auditor = node.client_as(AUDITOR).await;
    assert_eq!(list(&mut auditor).await.len(), 3);
    denied(
        generate(&mut auditor, "card-master").await,
        "auditor generates",
    );
    denied(
        derive(&mut auditor, &gd.id, "440100").await,
        "auditor derives",
    );
    let err = auditor
        .change_key_state(proto::ChangeKeyStateRequest {
            id: root.id.clone(),
            state: proto::KeyState::Retired.into(),
            expected_state: proto::KeyState::Unspecified.into(),
            ..Default::default()
        })
        .await
        .expect_err("auditor retires");
    assert_eq!(err.code(), Code::PermissionDenied);
    let after = list(&mut node.client().await).await;
    assert_eq!(after.len(), 3);
    assert!(after.iter().all(|k| k.state() == proto::KeyState::Active));
}

#[tokio::test]
async fn foreign_expired_and_identityless_certificates_are_refused() {
    let (node, ..) = ministry().await;

    // A certificate from another CA: the TLS handshake is refused.
    let other = DevCa::create("someone else's CA").expect("ca");
    let mut tls = client_tls(
        &other,
        Some("hkms://officer/national/000000/mallory"),
        Validity::days(1),
    );
    tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(node.ca.cert_pem()));
    let refused = match node.try_channel(tls).await {
        Err(_) => true,
        Ok(ch) => KeyServiceClient::new(ch)
            .list_keys(proto::ListKeysRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "a foreign certificate was accepted");

    // An expired certificate from the right CA: refused too.
    let tls = client_tls(
        &node.ca,
        Some("hkms://officer/national/000000/late"),
        Validity::expired(),
    );
    let refused = match node.try_channel(tls).await {
        Err(_) => true,
        Ok(ch) => KeyServiceClient::new(ch)
            .list_keys(proto::ListKeysRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "an expired certificate was accepted");

    // A valid certificate with no hkms identity: UNAUTHENTICATED, with what is missing.
    let tls = client_tls(&node.ca, None, Validity::days(1));
    let ch = node
        .try_channel(tls)
        .await
        .expect("the TLS layer accepts it");
    let err = KeyServiceClient::new(ch)
        .list_keys(proto::ListKeysRequest::default())
        .await
        .expect_err("no identity");
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(
        err.message().contains("carries no hkms identity"),
        "{}",
        err.message()
    );

    // No client certificate at all: the caller is told so in gRPC terms, UNAUTHENTICATED
    // (not a broken connection, which would look retryable), by every service.
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(node.ca.cert_pem()));
    let ch = node.try_channel(tls).await.expect("a connection");
    let err = KeyServiceClient::new(ch.clone())
        .list_keys(proto::ListKeysRequest::default())
        .await
        .expect_err("no certificate");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(
        err.message().contains("no client certificate"),
        "{}",
        err.message()
    );
    let err = tonic_health::pb::health_client::HealthClient::new(ch)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect_err("health without a certificate");
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    let log = node.log();
    assert!(log.contains("TLS handshake refused"), "{log}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test]
async fn policy_reload_takes_effect_and_a_broken_file_keeps_the_old_policy() {
    let (node, policy_path, original) = ministry_with_own_policy();

    let mut admin = PolicyServiceClient::new(node.channel_as(ADMIN).await);
    let info = admin
        .get_policy(proto::GetPolicyRequest {})
        .await
        .expect("get")
        .into_inner();
    assert_eq!(info.sha256, sha256_hex(original.as_bytes()));
    assert!(
        info.rules
            .iter()
            .any(|r| r == "ministry-generates-national-keys")
    );

    // Officers cannot reload; admins may, under dual control: a ceremony approved by two
    // officers. A good change decides at once, without a restart.
    let mut officer_policy = PolicyServiceClient::new(node.channel().await);
    let err = officer_policy
        .reload_policy(proto::ReloadPolicyRequest {
            ..Default::default()
        })
        .await
        .expect_err("officer reloads");
    assert_eq!(err.code(), Code::PermissionDenied);
    let err = admin
        .reload_policy(proto::ReloadPolicyRequest {
            ..Default::default()
        })
        .await
        .expect_err("admin reloads alone");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("dual control"), "{}", err.message());

    let mut officer = node.client().await;
    // Allowed by the policy (so only dual control stops a direct request) ...
    allowed_but_guarded(generate(&mut officer, "legacy-card-master").await);
    let changed = original.replacen(
        ", \"legacy-card-master\"]\nregions = [\"self\"]",
        "]\nregions = [\"self\"]",
        1,
    );
    assert_ne!(changed, original);
    std::fs::write(&policy_path, &changed).expect("write");
    let done = reload_by_ceremony(&node, &policy_path).await;
    assert_eq!(
        done.state(),
        hkms::proto::CeremonyState::Done,
        "{}",
        done.result
    );
    assert!(
        done.result.contains(&sha256_hex(changed.as_bytes())),
        "{}",
        done.result
    );
    // ... and denied once the new policy is in force.
    denied(
        generate(&mut officer, "legacy-card-master").await,
        "removed by the new policy",
    );
    allowed_but_guarded(generate(&mut officer, "card-master").await);

    // A broken file is refused with where and why; the last good policy keeps deciding.
    std::fs::write(
        &policy_path,
        changed.replacen("roles = [\"window\"]", "roles = [\"windw\"]", 1),
    )
    .expect("write");
    let failed = reload_by_ceremony(&node, &policy_path).await;
    assert_eq!(failed.state(), hkms::proto::CeremonyState::Failed);
    assert!(
        failed.result.contains("policy.toml line"),
        "{}",
        failed.result
    );
    assert!(
        failed.result.contains("unknown role `windw`"),
        "{}",
        failed.result
    );
    let info = admin
        .get_policy(proto::GetPolicyRequest {})
        .await
        .expect("get")
        .into_inner();
    assert_eq!(info.sha256, sha256_hex(changed.as_bytes()));
    denied(
        generate(&mut officer, "legacy-card-master").await,
        "old policy still decides",
    );

    // The officers approve one file, by its hash: one put in its place before the last
    // approval is not loaded, and a ceremony for a file that is not there does not open.
    std::fs::write(&policy_path, &changed).expect("write");
    let approved = sha256_hex(changed.as_bytes());
    let swapped = reload_approved(&node, &approved, || {
        std::fs::write(&policy_path, &original).expect("swap the file")
    })
    .await;
    assert_eq!(
        swapped.state(),
        hkms::proto::CeremonyState::Failed,
        "{}",
        swapped.result
    );
    assert!(
        swapped
            .result
            .contains("changed after the ceremony was opened"),
        "{}",
        swapped.result
    );
    denied(
        generate(&mut officer, "legacy-card-master").await,
        "the approved policy still decides",
    );
    let err = CeremonyServiceClient::new(node.channel_as(ADMIN).await)
        .open_ceremony(proto::OpenCeremonyRequest {
            operation: hkms::proto::Operation::Manage.into(),
            params: [
                ("action".to_string(), "reload-policy".to_string()),
                ("policy_sha256".to_string(), approved.clone()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        })
        .await
        .expect_err("the file on the node is another");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());

    // SIGHUP (the host administrator's path) reloads too, a change that weakens nothing.
    // (Giving legacy-card-master back to the generate rule would widen a rule under dual
    // control, which only a ceremony may: tests/dual_control_floor.rs.)
    let described = changed.replacen(
        "description = \"Generating a national control key.\"",
        "description = \"National control keys.\"",
        1,
    );
    assert_ne!(described, changed);
    std::fs::write(&policy_path, &described).expect("write");
    node.hang_up();
    let want = sha256_hex(described.as_bytes());
    assert!(
        support::policy_in_force(&mut admin, &want).await,
        "SIGHUP did not reload the policy"
    );
    denied(
        generate(&mut officer, "legacy-card-master").await,
        "the reloaded policy decides",
    );
    allowed_but_guarded(generate(&mut officer, "card-master").await);
}

/// A direct request the policy allows but dual control stops.
fn allowed_but_guarded(r: Result<proto::Key, tonic::Status>) {
    let e = r.expect_err("national keys are generated by ceremony");
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    assert!(e.message().contains("dual control"), "{}", e.message());
}

#[tokio::test]
async fn a_ceremony_open_when_the_quorum_rose_needs_the_new_quorum() {
    let (node, policy_path, original) = ministry_with_own_policy();

    // Opened under 2 of 3: the opener's approval is the first.
    let opened = CeremonyServiceClient::new(node.channel().await)
        .open_ceremony(proto::OpenCeremonyRequest {
            operation: hkms::proto::Operation::Generate.into(),
            params: [("key_type".to_string(), "card-master".to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        })
        .await
        .expect("open")
        .into_inner();
    assert_eq!((opened.quorum, opened.approvals.len()), (2, 1));

    // The host administrator raises generation to 3 of 3.
    let raised = original.replacen(
        "[ceremonies.generate]\nquorum = 2",
        "[ceremonies.generate]\nquorum = 3",
        1,
    );
    assert_ne!(raised, original);
    std::fs::write(&policy_path, &raised).expect("write");
    hang_up(&node, "policy reloaded", 1);

    // A second approval no longer runs it; a third does.
    let approve = |who: String| {
        let node = &node;
        let id = opened.id.clone();
        async move {
            CeremonyServiceClient::new(node.channel_as(&who).await)
                .approve_ceremony(proto::CeremonyId {
                    id,
                    ..Default::default()
                })
                .await
                .expect("approve")
                .into_inner()
        }
    };
    let second = approve(node.second_officer()).await;
    assert_eq!(
        second.state(),
        hkms::proto::CeremonyState::Open,
        "{}",
        second.result
    );
    let third = approve(node.officer.replace("/test-officer", "/third-officer")).await;
    assert_eq!(
        third.state(),
        hkms::proto::CeremonyState::Done,
        "{}",
        third.result
    );
}

/// The ministry's node on a copy of the default policy: the node, the copy's path, its text.
fn ministry_with_own_policy() -> (TestNode, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = make_token(&dir.path().join("softhsm"), "hkms-test");
    let policy_path = dir.path().join("policy.toml");
    let original = std::fs::read_to_string(support::default_policy()).expect("default policy");
    std::fs::write(&policy_path, &original).expect("copy policy");
    let config = dir.path().join("node.toml");
    let text = node_config("ministry", "national", "000000", &token).replace(
        &support::default_policy().display().to_string(),
        &policy_path.display().to_string(),
    );
    std::fs::write(&config, text).expect("config");
    let node = TestNode::start_in(dir, token, config);
    (node, policy_path, original)
}

/// An admin opens a policy reload ceremony for the file at `policy`; two officers approve it.
async fn reload_by_ceremony(node: &TestNode, policy: &std::path::Path) -> proto::CeremonyInfo {
    let sha256 = sha256_hex(&std::fs::read(policy).expect("policy file"));
    reload_approved(node, &sha256, || {}).await
}

/// An admin opens a reload ceremony for the policy `sha256`; `meanwhile` runs between its
/// opening and the approvals of two officers.
async fn reload_approved(
    node: &TestNode,
    sha256: &str,
    meanwhile: impl FnOnce(),
) -> proto::CeremonyInfo {
    let mut admin = CeremonyServiceClient::new(node.channel_as(ADMIN).await);
    let opened = admin
        .open_ceremony(proto::OpenCeremonyRequest {
            operation: hkms::proto::Operation::Manage.into(),
            params: [
                ("action".to_string(), "reload-policy".to_string()),
                ("policy_sha256".to_string(), sha256.to_string()),
            ]
            .into_iter()
            .collect(),
            ..Default::default()
        })
        .await
        .expect("admin opens")
        .into_inner();
    meanwhile();
    assert!(opened.approvals.is_empty(), "an admin does not approve");
    for officer in [node.officer.clone(), node.second_officer()] {
        CeremonyServiceClient::new(node.channel_as(&officer).await)
            .approve_ceremony(proto::CeremonyId {
                id: opened.id.clone(),
                ..Default::default()
            })
            .await
            .expect("approve");
    }
    admin
        .get_ceremony(proto::CeremonyId {
            id: opened.id,
            ..Default::default()
        })
        .await
        .expect("status")
        .into_inner()
}

#[tokio::test]
async fn a_revoked_certificate_is_refused_at_the_handshake_and_the_others_go_on() {
    let mut node = TestNode::start("national", "000000");
    let auditor = hkms::policy::Identity::from_uri(AUDITOR).expect("identity");
    let stolen = node
        .ca
        .issue_client(Some(&auditor), Validity::days(1))
        .expect("issue");
    let spare = node
        .ca
        .issue_client(Some(&auditor), Validity::days(1))
        .expect("issue");
    lists_with(&node, &stolen).await.expect("before revocation");

    // The CA revokes the stolen certificate; the node reads its CRL at start.
    node.stop();
    write_crl(&node, &[&stolen], 1);
    use_crl(&node);
    node.start_again();

    lists_with(&node, &stolen)
        .await
        .expect_err("a revoked certificate");
    // The server logs the refusal once its side of the handshake has ended, which can be a
    // moment after the client saw it fail.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let log = node.log();
        if log.contains("TLS handshake refused") && log.contains("Revoked") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{log}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    lists_with(&node, &spare)
        .await
        .expect("the same identity with a certificate not revoked");
    node.client().await;
}

#[tokio::test]
async fn a_list_loaded_by_sighup_shuts_out_a_revoked_certificate_even_on_an_open_connection() {
    let mut node = TestNode::start("national", "000000");
    let auditor = hkms::policy::Identity::from_uri(AUDITOR).expect("identity");
    let issue = || {
        node.ca
            .issue_client(Some(&auditor), Validity::days(1))
            .expect("issue")
    };
    let (decoy, stolen, spare) = (issue(), issue(), issue());
    node.stop();
    write_crl(&node, &[&decoy], 1);
    use_crl(&node);
    node.start_again();
    let open = channel_with(&node, &stolen).await.expect("connect");
    lists_on(open.clone()).await.expect("not revoked yet");

    // The CA publishes a new list; the host administrator sends SIGHUP.
    write_crl(&node, &[&decoy, &stolen], 2);
    hang_up(&node, "TLS files reloaded", 1);
    let refused = lists_on(open.clone())
        .await
        .expect_err("revoked on the open connection");
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused.message().contains("revoked"),
        "{}",
        refused.message()
    );
    lists_with(&node, &stolen)
        .await
        .expect_err("revoked at the handshake");
    lists_with(&node, &spare).await.expect("not revoked");

    // A list that cannot be read is refused, and the one in force stays.
    let pki = node.dir.path().join("pki");
    std::fs::write(pki.join("revoked.crl"), "not a list").expect("write");
    hang_up(&node, "TLS reload refused", 1);
    lists_with(&node, &stolen).await.expect_err("still revoked");
    lists_on(open)
        .await
        .expect_err("still revoked on the open connection");
    lists_with(&node, &spare).await.expect("still served");

    // Both reloads are in the ceremony log, with the host as their actor, and so is the
    // request refused on the open connection.
    let mut stream = AuditServiceClient::new(node.channel_as(AUDITOR).await)
        .stream_records(proto::StreamRecordsRequest::default())
        .await
        .expect("stream")
        .into_inner();
    let mut records = Vec::new();
    while let Some(line) = tokio_stream::StreamExt::next(&mut stream).await {
        let line = line.expect("record").line;
        records.push(serde_json::from_str::<hkms::audit::AuditRecord>(&line).expect("record"));
    }
    let reloads: Vec<_> = records.iter().filter(|r| r.rpc == "ReloadTls").collect();
    assert_eq!(reloads.len(), 2, "{reloads:?}");
    assert!(reloads.iter().all(|r| r.actor == "host:SIGHUP"));
    assert!(reloads[0].result.ok && !reloads[1].result.ok, "{reloads:?}");
    assert_eq!(reloads[0].params["revoked_certificates"], "2");
    // Its actor stays empty (the certificate no longer authenticates anyone), and its
    // parameters name the identity and serial for the auditors.
    let refused: Vec<_> = records
        .iter()
        .filter(|r| r.result.code == "UNAUTHENTICATED" && r.result.message.contains("revoked"))
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused.iter().all(|r| r.actor.is_empty()
        && r.params["revoked_identity"] == AUDITOR
        && !r.params["revoked_serial"].is_empty()));
}

#[tokio::test]
async fn a_personalisation_stream_ends_when_its_certificate_is_revoked() {
    let mut node = TestNode::start("municipal", "440100");
    let issuance = hkms::policy::Identity::from_uri(ISSUANCE).expect("identity");
    let issue = || {
        node.ca
            .issue_client(Some(&issuance), Validity::days(1))
            .expect("issue")
    };
    let (decoy, system) = (issue(), issue());
    node.stop();
    write_crl(&node, &[&decoy], 1);
    use_crl(&node);
    node.start_again();

    let channel = channel_with(&node, &system).await.expect("connect");
    let (cards, queue) = tokio::sync::mpsc::channel(4);
    let mut answers = CardServiceClient::new(channel)
        .personalise_cards(tokio_stream::wrappers::ReceiverStream::new(queue))
        .await
        .expect("stream")
        .into_inner();
    let card = |serial: &str| proto::PersonaliseRequest {
        bureau_card_id: "card-440100-none".into(),
        card_serial: serial.into(),
    };
    cards.send(card("0000000000000001")).await.expect("send");
    // No such bureau card here: the card fails alone and the stream goes on.
    let first = answers.message().await.expect("answer").expect("one");
    assert!(!first.error.is_empty(), "{first:?}");

    write_crl(&node, &[&decoy, &system], 2);
    hang_up(&node, "TLS files reloaded", 1);
    cards.send(card("0000000000000002")).await.expect("send");
    let end = answers.message().await.expect_err("the stream ends");
    assert_eq!(end.code(), Code::Unauthenticated);
    assert!(end.message().contains("revoked"), "{}", end.message());
}

/// Writes `pki/revoked.crl` of the node's dev CA, listing exactly `certs`.
fn write_crl(node: &TestNode, certs: &[&hkms::pki::IssuedCert], number: u64) {
    let pki = node.dir.path().join("pki");
    let mut command = std::process::Command::new(support::hkms_bin());
    command.args(["pki", "revoke", "--dir"]).arg(&pki);
    for (i, cert) in certs.iter().enumerate() {
        let path = pki.join(format!("to-revoke-{i}.pem"));
        std::fs::write(&path, &cert.cert_pem).expect("write cert");
        command.arg("--cert").arg(path);
    }
    let out = command
        .args(["--number", &number.to_string(), "--out"])
        .arg(pki.join("revoked.crl"))
        .output()
        .expect("hkms pki revoke");
    assert!(out.status.success(), "{}", support::stderr(&out));
}

/// Names `pki/revoked.crl` in the node's `[tls]` section (the node must be stopped).
fn use_crl(node: &TestNode) {
    let mut config = std::fs::read_to_string(&node.config).expect("config");
    assert!(
        config.trim_end().ends_with("client_ca = \"pki/ca.pem\""),
        "[tls] comes last"
    );
    config.push_str("client_crl = \"pki/revoked.crl\"\n");
    std::fs::write(&node.config, config).expect("write config");
}

/// Sends SIGHUP and waits until the log says `line` for the `times`-th time after it.
fn hang_up(node: &TestNode, line: &str, times: usize) {
    let before = node.log().matches(line).count();
    node.hang_up();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while node.log().matches(line).count() < before + times {
        assert!(
            std::time::Instant::now() < deadline,
            "no {line:?} after SIGHUP: {}",
            node.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A channel that presents `cert`, or why the handshake failed.
async fn channel_with(node: &TestNode, cert: &hkms::pki::IssuedCert) -> Result<Channel, String> {
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(node.ca.cert_pem()))
        .identity(tonic::transport::Identity::from_pem(
            cert.cert_pem.as_bytes(),
            cert.key_pem.as_bytes(),
        ));
    node.try_channel(tls).await.map_err(|e| e.to_string())
}

/// Lists keys over `channel`.
async fn lists_on(channel: Channel) -> Result<(), tonic::Status> {
    KeyServiceClient::new(channel)
        .list_keys(proto::ListKeysRequest::default())
        .await
        .map(|_| ())
}

/// Lists keys over a new channel that presents `cert`.
async fn lists_with(node: &TestNode, cert: &hkms::pki::IssuedCert) -> Result<(), String> {
    lists_on(channel_with(node, cert).await?)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_newline_or_override_in_a_certificate_cannot_forge_a_log_line() {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
    let node = TestNode::start("national", "000000");
    // The node's CA signs certificates whose SAN URI no hkms tool would write.
    let (_, ca_pem) = x509_parser::pem::parse_x509_pem(node.ca.cert_pem().as_bytes()).expect("pem");
    let ca_cert = ca_pem.parse_x509().expect("CA certificate");
    let ca_name = ca_cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .expect("CA common name")
        .to_string();
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, ca_name);
    let issuer = Issuer::new(
        ca_params,
        KeyPair::from_pem(&node.ca.key_pem()).expect("CA key"),
    );
    for uri in [
        "hkms://officer/national/000000/x\nINFO FORGED: key exported",
        "hkms://officer/national/000000/x\u{1b}[2K\rFORGED",
        "hkms://officer/national/000000/x\0\tFORGED",
    ] {
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(uri.try_into().expect("IA5"))];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &issuer).expect("sign");
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(node.ca.cert_pem()))
            .identity(tonic::transport::Identity::from_pem(
                cert.pem(),
                key.serialize_pem(),
            ));
        let channel = node
            .try_channel(tls)
            .await
            .expect("TLS accepts the CA's certificate");
        let err = KeyServiceClient::new(channel)
            .get_key(proto::GetKeyRequest { id: "k-1".into() })
            .await
            .expect_err("not an identity");
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        assert!(
            !hkms::untrusted_text::has_invisible(err.message()),
            "{:?}",
            err.message()
        );
    }
    let log = node.log();
    assert!(log.contains("FORGED"), "the refusals are logged: {log}");
    for line in log.lines().filter(|l| l.contains("FORGED")) {
        assert!(line.contains("unauthenticated"), "a forged line: {line:?}");
        assert!(!hkms::untrusted_text::has_invisible(line), "{line:?}");
    }
}
