//! The dual-control floor and the officer roster, as a host administrator would attack them and
//! as officers use them (issue 18, attacks 3 and 4): a policy file that weakens the policy in
//! force stays out of force on SIGHUP and on a restart, and only a reload-policy ceremony puts
//! it there; with a roster, approvals count persons, not certificates.

mod support;

use std::path::{Path, PathBuf};

use hkms::pki::{IssuedCert, Validity, write_issued};
use hkms::policy::Identity;
use hkms::proto::{
    self, ceremony_service_client::CeremonyServiceClient, key_service_client::KeyServiceClient,
    policy_service_client::PolicyServiceClient,
};
use sha2::{Digest, Sha256};
use support::{TestNode, make_token, node_config, policy_in_force, stdout, verified_records};
use tonic::Code;
use tonic::transport::Channel;
use x509_parser::prelude::{FromDer, X509Certificate};

const ADMIN: &str = "hkms://admin/national/000000/admin-1";
const AUDITOR: &str = "hkms://auditor/national/000000/auditor-1";
/// What the node logs when SIGHUP brings a weaker file.
const SIGHUP_REFUSED: &str = "SIGHUP: the policy file weakens the policy in force";

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The ministry's node on a copy of the default policy; the copy's path and text.
fn ministry() -> (TestNode, PathBuf, String) {
    let original = std::fs::read_to_string(support::default_policy()).expect("default policy");
    ministry_with(original)
}

/// The ministry's node on its own policy file with `original`; the file's path and text.
fn ministry_with(original: String) -> (TestNode, PathBuf, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = make_token(&dir.path().join("softhsm"), "hkms-test");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, &original).expect("copy policy");
    let config = dir.path().join("node.toml");
    let text = support::with_policy(
        node_config("ministry", "national", "000000", &token),
        &policy,
    );
    std::fs::write(&config, text).expect("config");
    (TestNode::start_in(dir, token, config), policy, original)
}

/// The default policy without its `[ceremonies.generate]` section.
fn without_generate_ceremony(original: &str) -> String {
    let start = original.find("[ceremonies.generate]").expect("section");
    let end = start + original[start..].find("\n\n").expect("section end") + 2;
    format!("{}{}", &original[..start], &original[end..])
}

/// The default policy with `[ceremonies.generate]` at `quorum` of 3.
fn generate_quorum(original: &str, quorum: u32) -> String {
    let text = original.replacen(
        "[ceremonies.generate]\nquorum = 2",
        &format!("[ceremonies.generate]\nquorum = {quorum}"),
        1,
    );
    assert_ne!(text, original);
    text
}

/// Sends SIGHUP and waits until the node's log has one more `line`.
fn hang_up_until(node: &TestNode, line: &str) {
    let before = node.log().matches(line).count();
    node.hang_up();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while node.log().matches(line).count() <= before {
        assert!(
            std::time::Instant::now() < deadline,
            "no {line:?} after SIGHUP: {}",
            node.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

async fn policy_client(node: &TestNode) -> PolicyServiceClient<Channel> {
    PolicyServiceClient::new(node.channel_as(ADMIN).await)
}

async fn sha_in_force(node: &TestNode) -> String {
    policy_client(node)
        .await
        .get_policy(proto::GetPolicyRequest {})
        .await
        .expect("get policy")
        .into_inner()
        .sha256
}

/// Opens a ceremony to generate `key_type` over `channel`.
async fn open_generate(
    channel: Channel,
    key_type: &str,
) -> Result<proto::CeremonyInfo, tonic::Status> {
    CeremonyServiceClient::new(channel)
        .open_ceremony(proto::OpenCeremonyRequest {
            operation: proto::Operation::Generate.into(),
            params: [("key_type".to_string(), key_type.to_string())]
                .into_iter()
                .collect(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

async fn approve(channel: Channel, id: &str) -> Result<proto::CeremonyInfo, tonic::Status> {
    CeremonyServiceClient::new(channel)
        .approve_ceremony(proto::CeremonyId {
            id: id.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// What one officer alone gets for a national card master: the direct request is refused as
/// dual control, and a ceremony the officer opens waits for a second approval.
async fn one_officer_cannot_make_a_card_master(node: &TestNode, quorum: u32) {
    let err = KeyServiceClient::new(node.channel().await)
        .generate_key(proto::GenerateKeyRequest {
            key_type: "card-master".into(),
            ..Default::default()
        })
        .await
        .expect_err("a card master made by one officer");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("dual control"), "{}", err.message());
    let opened = open_generate(node.channel().await, "card-master")
        .await
        .expect("open");
    assert_eq!(
        (opened.state(), opened.quorum, opened.approvals.len()),
        (proto::CeremonyState::Open, quorum, 1),
        "{}",
        opened.result
    );
}

/// The refusals of `refused` recorded in the node's log, by `actor`: each has both files'
/// SHA-256 and says a ceremony is needed.
fn refusals(node: &TestNode, actor: &str, in_force: &str, refused: &str) -> Vec<String> {
    let out = tempfile::tempdir().expect("tempdir");
    verified_records(node, AUDITOR, &out.path().join("bundle"))
        .into_iter()
        .filter(|r| {
            r["rpc"] == "ReloadPolicy"
                && r["actor"] == actor
                && r["result"]["ok"] == false
                && r["params"]["policy_sha256_in_force"] == in_force
                && r["params"]["policy_sha256_refused"] == refused
        })
        .map(|r| {
            let message = r["result"]["message"].as_str().unwrap_or_default();
            assert!(
                message.starts_with("a reload-policy ceremony is needed"),
                "{message}"
            );
            assert_eq!(r["policy_sha256"], in_force, "{r}");
            message.to_string()
        })
        .collect()
}

#[tokio::test]
async fn sighup_with_the_generate_ceremony_removed_keeps_the_policy_in_force() {
    let (node, policy, original) = ministry();
    let in_force = sha256_hex(original.as_bytes());
    let weaker = without_generate_ceremony(&original);
    std::fs::write(&policy, &weaker).expect("write");

    hang_up_until(&node, SIGHUP_REFUSED);
    assert!(
        policy_in_force(&mut policy_client(&node).await, &in_force).await,
        "the weaker policy was put in force"
    );
    let refused = refusals(
        &node,
        "host:SIGHUP",
        &in_force,
        &sha256_hex(weaker.as_bytes()),
    );
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].contains("generate card-master")
            && refused[0].contains("would need no ceremony"),
        "{}",
        refused[0]
    );
    one_officer_cannot_make_a_card_master(&node, 2).await;
}

#[tokio::test]
async fn sighup_with_a_quorum_of_one_keeps_the_policy_in_force() {
    let (node, policy, original) = ministry();
    let in_force = sha256_hex(original.as_bytes());
    let weaker = generate_quorum(&original, 1);
    std::fs::write(&policy, &weaker).expect("write");

    hang_up_until(&node, SIGHUP_REFUSED);
    assert_eq!(sha_in_force(&node).await, in_force);
    let refused = refusals(
        &node,
        "host:SIGHUP",
        &in_force,
        &sha256_hex(weaker.as_bytes()),
    );
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert!(
        refused[0].contains("would drop from 2 of 3 to 1 of 3"),
        "{}",
        refused[0]
    );
    assert!(node.log().contains("would drop from 2 of 3 to 1 of 3"));
    one_officer_cannot_make_a_card_master(&node, 2).await;
}

#[tokio::test]
async fn a_restart_with_a_weaker_file_keeps_the_policy_in_force() {
    let (mut node, policy, original) = ministry();
    let in_force = sha256_hex(original.as_bytes());
    let weaker = generate_quorum(&original, 1);
    std::fs::write(&policy, &weaker).expect("write");

    node.restart();
    assert_eq!(sha_in_force(&node).await, in_force);
    let info = policy_client(&node)
        .await
        .get_policy(proto::GetPolicyRequest {})
        .await
        .expect("get policy")
        .into_inner();
    assert_eq!(
        info.text, original,
        "the policy kept in the registry decides"
    );
    assert!(
        info.origin.contains("kept in the registry"),
        "{}",
        info.origin
    );
    let refused = refusals(
        &node,
        "host:start",
        &in_force,
        &sha256_hex(weaker.as_bytes()),
    );
    assert_eq!(refused.len(), 1, "{refused:?}");
    one_officer_cannot_make_a_card_master(&node, 2).await;

    // A second restart with the same file: refused again, and still the policy kept.
    node.restart();
    assert_eq!(sha_in_force(&node).await, in_force);
}

#[tokio::test]
async fn a_stronger_policy_loads_on_sighup_and_then_is_the_floor() {
    let (mut node, policy, original) = ministry();
    let stronger = generate_quorum(&original, 3);
    std::fs::write(&policy, &stronger).expect("write");
    node.hang_up();
    assert!(
        policy_in_force(
            &mut policy_client(&node).await,
            &sha256_hex(stronger.as_bytes())
        )
        .await,
        "SIGHUP did not load the stronger policy"
    );
    one_officer_cannot_make_a_card_master(&node, 3).await;

    // The raised quorum is what a restart compares with: the original file is weaker now.
    std::fs::write(&policy, &original).expect("write");
    node.restart();
    assert_eq!(sha_in_force(&node).await, sha256_hex(stronger.as_bytes()));
    one_officer_cannot_make_a_card_master(&node, 3).await;
}

#[tokio::test]
async fn a_reload_policy_ceremony_puts_the_weaker_policy_in_force() {
    let (mut node, policy, original) = ministry();
    let weaker = generate_quorum(&original, 1);
    std::fs::write(&policy, &weaker).expect("write");
    let sha256 = sha256_hex(weaker.as_bytes());

    // The host cannot, with SIGHUP; the admin alone cannot: a direct reload is dual control.
    hang_up_until(&node, SIGHUP_REFUSED);
    assert_eq!(sha_in_force(&node).await, sha256_hex(original.as_bytes()));
    let err = policy_client(&node)
        .await
        .reload_policy(proto::ReloadPolicyRequest {
            ..Default::default()
        })
        .await
        .expect_err("an admin alone reloads");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());

    let opened = open_reload(&node, &sha256).await;
    for officer in [node.officer.clone(), node.second_officer()] {
        approve(node.channel_as(&officer).await, &opened.id)
            .await
            .expect("approve");
    }
    let done = CeremonyServiceClient::new(node.channel_as(ADMIN).await)
        .get_ceremony(proto::CeremonyId {
            id: opened.id,
            ..Default::default()
        })
        .await
        .expect("ceremony")
        .into_inner();
    assert_eq!(done.state(), proto::CeremonyState::Done, "{}", done.result);
    assert_eq!(sha_in_force(&node).await, sha256);

    // In force, and the floor from now on: a file weaker still is refused.
    let weaker_still = without_generate_ceremony(&original);
    std::fs::write(&policy, &weaker_still).expect("write");
    hang_up_until(&node, SIGHUP_REFUSED);
    assert_eq!(sha_in_force(&node).await, sha256);

    // And kept: after a restart too, one approval (the opener's) is the quorum.
    std::fs::write(&policy, &weaker).expect("write");
    node.restart();
    assert_eq!(sha_in_force(&node).await, sha256);
    let alone = open_generate(node.channel().await, "card-master")
        .await
        .expect("open");
    assert_eq!(
        (alone.state(), alone.quorum),
        (proto::CeremonyState::Done, 1),
        "{}",
        alone.result
    );
}

#[tokio::test]
async fn a_direct_reload_cannot_weaken_the_policy_either() {
    // A policy that puts no quorum on reloading: an admin reloads directly.
    let default = std::fs::read_to_string(support::default_policy()).expect("default policy");
    let unguarded = default.replacen(
        "key_types = [\"*\", \"none\"]\ndescription = \"Retiring",
        "key_types = [\"*\"]\ndescription = \"Retiring",
        1,
    );
    assert_ne!(unguarded, default);
    let (node, policy, original) = ministry_with(unguarded);
    let in_force = sha256_hex(original.as_bytes());

    // A stronger file: reloaded.
    let stronger = generate_quorum(&original, 3);
    std::fs::write(&policy, &stronger).expect("write");
    let info = policy_client(&node)
        .await
        .reload_policy(proto::ReloadPolicyRequest {
            ..Default::default()
        })
        .await
        .expect("a stronger policy reloads")
        .into_inner();
    assert_eq!(info.sha256, sha256_hex(stronger.as_bytes()));

    // A weaker one: refused, naming what it weakens; the policy in force stays.
    std::fs::write(&policy, &original).expect("write");
    let err = policy_client(&node)
        .await
        .reload_policy(proto::ReloadPolicyRequest {
            ..Default::default()
        })
        .await
        .expect_err("a weaker policy reloads");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message()
            .starts_with("a reload-policy ceremony is needed")
            && err.message().contains("would drop from 3 of 3 to 2 of 3"),
        "{}",
        err.message()
    );
    assert_eq!(sha_in_force(&node).await, sha256_hex(stronger.as_bytes()));
    let refused = refusals(&node, ADMIN, &sha256_hex(stronger.as_bytes()), &in_force);
    assert_eq!(refused.len(), 1, "{refused:?}");
}

async fn open_reload(node: &TestNode, sha256: &str) -> proto::CeremonyInfo {
    CeremonyServiceClient::new(node.channel_as(ADMIN).await)
        .open_ceremony(proto::OpenCeremonyRequest {
            operation: proto::Operation::Manage.into(),
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
        .into_inner()
}

/// An officer's certificate, issued by the node's CA and written to the node's `pki/` folder.
struct Officer {
    cert: IssuedCert,
    path: PathBuf,
}

impl Officer {
    fn issue(node: &TestNode, name: &str) -> Officer {
        let id = Identity::from_uri(&format!("hkms://officer/national/000000/{name}"))
            .expect("identity");
        let cert = node
            .ca
            .issue_client(Some(&id), Validity::days(1))
            .expect("issue");
        let (path, _) = write_issued(&node.dir.path().join("pki"), name, &cert).expect("write");
        Officer { cert, path }
    }

    /// The SHA-256 of the certificate's public key, as `hkms pki key-sha256` prints it.
    fn key_sha256(&self, node: &TestNode) -> String {
        let out = node.cli(&[
            "pki",
            "key-sha256",
            "--cert",
            self.path.to_str().expect("path"),
        ]);
        assert!(out.status.success(), "{}", support::stderr(&out));
        let text = stdout(&out);
        let key = text.split_whitespace().next().expect("a key").to_string();
        // As anyone computes it: SHA-256 over the SubjectPublicKeyInfo's DER.
        let der = x509_parser::pem::parse_x509_pem(self.cert.cert_pem.as_bytes())
            .expect("pem")
            .1
            .contents;
        let (_, cert) = X509Certificate::from_der(&der).expect("der");
        assert_eq!(key, sha256_hex(cert.public_key().raw));
        key
    }

    async fn channel(&self, node: &TestNode) -> Channel {
        let tls = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(tonic::transport::Certificate::from_pem(node.ca.cert_pem()))
            .identity(tonic::transport::Identity::from_pem(
                self.cert.cert_pem.as_bytes(),
                self.cert.key_pem.as_bytes(),
            ));
        node.try_channel(tls).await.expect("connect")
    }
}

/// `[officers.NAME]` tables for these persons and their keys.
fn roster(people: &[(&str, &[&str])]) -> String {
    people
        .iter()
        .map(|(name, keys)| {
            let keys: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
            format!(
                "\n[officers.{name}]\ncertificates = [{}]\n",
                keys.join(", ")
            )
        })
        .collect()
}

/// Puts `text` in force with SIGHUP (a roster where there was none weakens nothing).
async fn put_in_force(node: &TestNode, policy: &Path, text: &str) {
    std::fs::write(policy, text).expect("write");
    node.hang_up();
    assert!(
        policy_in_force(&mut policy_client(node).await, &sha256_hex(text.as_bytes())).await,
        "SIGHUP did not load the policy with the roster"
    );
}

#[tokio::test]
async fn with_a_roster_one_person_with_two_certificates_counts_once() {
    let (mut node, policy, original) = ministry();
    let alice_laptop = Officer::issue(&node, "alice-laptop");
    let alice_card = Officer::issue(&node, "alice-card");
    let bob = Officer::issue(&node, "bob");
    let mallory = Officer::issue(&node, "mallory");
    let (a1, a2, b, m) = (
        alice_laptop.key_sha256(&node),
        alice_card.key_sha256(&node),
        bob.key_sha256(&node),
        mallory.key_sha256(&node),
    );
    let with_roster = format!(
        "{original}{}",
        roster(&[("alice", &[&a1, &a2]), ("bob", &[&b])])
    );
    put_in_force(&node, &policy, &with_roster).await;

    // Alice opens: her approval counts, as alice.
    let opened = open_generate(alice_laptop.channel(&node).await, "card-master")
        .await
        .expect("open");
    assert_eq!(
        (opened.state(), opened.approvals.len()),
        (proto::CeremonyState::Open, 1)
    );
    assert_eq!(opened.approvals[0].person, "alice");

    // Approvals count persons after a restart too.
    node.restart();

    // Alice again, with her other certificate: refused, and the ceremony still waits.
    let err = approve(alice_card.channel(&node).await, &opened.id)
        .await
        .expect_err("alice approves twice");
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(
        err.message().contains("already approved as alice"),
        "{}",
        err.message()
    );

    // An officer whose certificate is on no one's list: refused, naming the key.
    let err = approve(mallory.channel(&node).await, &opened.id)
        .await
        .expect_err("mallory approves");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    assert!(
        err.message().contains(&m) && err.message().contains("reload-policy ceremony"),
        "{}",
        err.message()
    );

    // Adding herself to the roster by SIGHUP is a weakening: refused.
    let mallory_added = format!("{with_roster}{}", roster(&[("mallory", &[&m])]));
    std::fs::write(&policy, &mallory_added).expect("write");
    hang_up_until(&node, SIGHUP_REFUSED);
    assert_eq!(
        sha_in_force(&node).await,
        sha256_hex(with_roster.as_bytes())
    );
    let err = approve(mallory.channel(&node).await, &opened.id)
        .await
        .expect_err("mallory approves");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());

    let waiting = CeremonyServiceClient::new(node.channel().await)
        .get_ceremony(proto::CeremonyId {
            id: opened.id.clone(),
            ..Default::default()
        })
        .await
        .expect("ceremony")
        .into_inner();
    assert_eq!(
        (waiting.state(), waiting.approvals.len()),
        (proto::CeremonyState::Open, 1)
    );

    // A second person completes it.
    let done = approve(bob.channel(&node).await, &opened.id)
        .await
        .expect("bob approves");
    assert_eq!(done.state(), proto::CeremonyState::Done, "{}", done.result);
    let persons: Vec<&str> = done.approvals.iter().map(|a| a.person.as_str()).collect();
    assert_eq!(persons, ["alice", "bob"]);
}
