//! Issue 7 soak: concurrent clients of every role on loopback for a bounded time, against the
//! ministry and Guangzhou. Ministry officers run generate ceremonies and derive; ministry
//! systems derive for cities and export Guangdong's sub-keys; the city's service windows
//! unblock and reload PINs; auditors read the log on both nodes; and some callers ask for what
//! they may not (a window generating at the ministry, a province deriving for another, an
//! auditor deriving, another city's window): exactly those, and nothing else, are refused.
//! At the end, on both nodes: every request made has its audit record (counted per actor, RPC
//! and status code), the log verifies, the registry's rows and the token's secret keys are the
//! same set (transport keys and their package MAC keys are registered in the transport table;
//! the audit signing key is a private key, not a secret key), and the orphan check is clean.
//!
//! Duration: 10 seconds of load in every `cargo test` (enough for every role to run each of its
//! requests many times); the long soak is `HKMS_SOAK_SECS` seconds, e.g.
//! `HKMS_SOAK_SECS=600 cargo test --test soak`.
//!
//! Seed: fixed (7) in a normal run, so the same clients make the same requests; the seed is
//! printed, `HKMS_SOAK_SEED=N` repeats a run and `HKMS_RANDOM_SEEDS=1` asks for a new one.
//!
//! A single test: it reads the tokens through this process's PKCS#11 module.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hkms::proto::{
    self, audit_service_client::AuditServiceClient, card_service_client::CardServiceClient,
    ceremony_service_client::CeremonyServiceClient, key_service_client::KeyServiceClient,
    transport_service_client::TransportServiceClient,
};
use hkms::server::pipeline::status::code_name;
use support::{
    TestNode, USER_PIN, XorShift, make_token, orphan_report, registered_labels,
    token_secret_labels, verified_records,
};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

const FINAL_AUDITOR: &str = "hkms://auditor/national/000000/final-auditor";
/// Every soak identity has this in its name; setup and final checks use others.
const SOAK: &str = "/soak-";

/// (actor, rpc, status code name) → how many.
type Counts = BTreeMap<(String, String, String), usize>;

/// What one client did.
#[derive(Default)]
struct Tally {
    counts: Counts,
    /// Requests that ended otherwise than the client expected.
    unexpected: Vec<String>,
    denied: usize,
}

impl Tally {
    /// Counts a request that must succeed; returns its value if it did.
    fn ok<T>(
        &mut self,
        actor: &str,
        rpc: &str,
        r: Result<tonic::Response<T>, Status>,
    ) -> Option<T> {
        let code = r.as_ref().err().map_or(Code::Ok, Status::code);
        *self
            .counts
            .entry((actor.into(), rpc.into(), code_name(code).into()))
            .or_default() += 1;
        match r {
            Ok(v) => Some(v.into_inner()),
            Err(e) => {
                self.unexpected.push(format!("{actor} {rpc}: {e:?}"));
                None
            }
        }
    }

    /// Counts a request that the policy must refuse.
    fn denied<T>(&mut self, actor: &str, rpc: &str, r: Result<tonic::Response<T>, Status>) {
        self.refused_with(Code::PermissionDenied, actor, rpc, r);
    }

    /// Counts a request on a key the policy keeps from the caller: refused as if the key
    /// did not exist.
    fn hidden<T>(&mut self, actor: &str, rpc: &str, r: Result<tonic::Response<T>, Status>) {
        self.refused_with(Code::NotFound, actor, rpc, r);
    }

    fn refused_with<T>(
        &mut self,
        expected: Code,
        actor: &str,
        rpc: &str,
        r: Result<tonic::Response<T>, Status>,
    ) {
        let code = r.as_ref().err().map_or(Code::Ok, Status::code);
        *self
            .counts
            .entry((actor.into(), rpc.into(), code_name(code).into()))
            .or_default() += 1;
        self.denied += 1;
        if code != expected {
            self.unexpected.push(format!(
                "{actor} {rpc} should be {expected:?}, got {code:?}"
            ));
        }
    }

    fn add(&mut self, other: Tally) {
        for (k, v) in other.counts {
            *self.counts.entry(k).or_default() += v;
        }
        self.unexpected.extend(other.unexpected);
        self.denied += other.denied;
    }
}

/// Keys made during the soak that other clients use.
#[derive(Default)]
struct Shared {
    /// National roots.
    roots: Vec<String>,
    /// Guangdong's sub-keys: exported again and again.
    guangdong: Vec<String>,
    /// Guangdong's sub-keys not yet diversified for its cities (each taken by one system).
    to_diversify: Vec<String>,
}

type SharedRef = Arc<Mutex<Shared>>;

fn id(n: &str, role: &str, tier: &str, region: &str) -> String {
    format!("hkms://{role}/{tier}/{region}/soak-{n}")
}

/// A ministry officer team: one opens a generate ceremony, the other approves; then the new
/// root is diversified for three provinces.
async fn officers(node: Chans, team: usize, until: Instant, shared: SharedRef) -> Tally {
    let opener = id(&format!("officer-a{team}"), "officer", "national", "000000");
    let approver = id(&format!("officer-b{team}"), "officer", "national", "000000");
    let mut open = CeremonyServiceClient::new(node.get(&opener).await);
    let mut approve = CeremonyServiceClient::new(node.get(&approver).await);
    let mut keys = KeyServiceClient::new(node.get(&opener).await);
    let mut t = Tally::default();
    for _ in 0..100_000 {
        if Instant::now() >= until {
            break;
        }
        let Some(c) = t.ok(
            &opener,
            "OpenCeremony",
            open.open_ceremony(proto::OpenCeremonyRequest {
                operation: hkms::proto::Operation::Generate.into(),
                params: [("key_type".to_string(), "card-master".to_string())].into(),
                ..Default::default()
            })
            .await,
        ) else {
            break;
        };
        let Some(done) = t.ok(
            &approver,
            "ApproveCeremony",
            approve
                .approve_ceremony(proto::CeremonyId {
                    id: c.id.clone(),
                    ..Default::default()
                })
                .await,
        ) else {
            break;
        };
        // The approval that completes the quorum runs the operation, recorded as the approver's.
        *t.counts
            .entry((approver.clone(), "ExecuteCeremony".into(), "OK".into()))
            .or_default() += 1;
        if done.state() != hkms::proto::CeremonyState::Done {
            t.unexpected.push(format!(
                "ceremony {}: {}",
                done.state().as_str_name(),
                done.result
            ));
            break;
        }
        let root = support::key_id_in(&done.result).expect("key id");
        shared.lock().expect("shared").roots.push(root.clone());
        for region in ["440000", "450000", "110000"] {
            let r = keys
                .derive_sub_key(proto::DeriveSubKeyRequest {
                    parent_id: root.clone(),
                    region: region.into(),
                    ..Default::default()
                })
                .await;
            if let Some(k) = t.ok(&opener, "DeriveSubKey", r)
                && region == "440000"
            {
                let k = k.key.expect("key").id;
                let mut s = shared.lock().expect("shared");
                s.guangdong.push(k.clone());
                s.to_diversify.push(k);
            }
        }
    }
    t
}

/// A ministry system: diversifies Guangdong's sub-keys for two of its cities, and exports
/// Guangdong's sub-keys as packages.
async fn system(node: Chans, n: usize, until: Instant, shared: SharedRef) -> Tally {
    let me = id(&format!("system-{n}"), "system", "national", "000000");
    let mut keys = KeyServiceClient::new(node.get(&me).await);
    let mut transport = TransportServiceClient::new(node.get(&me).await);
    let mut t = Tally::default();
    for i in 0..100_000usize {
        if Instant::now() >= until {
            break;
        }
        let (next, export) = {
            let mut s = shared.lock().expect("shared");
            let export =
                (!s.guangdong.is_empty()).then(|| s.guangdong[i % s.guangdong.len()].clone());
            (s.to_diversify.pop(), export)
        };
        if let Some(gd) = next {
            for city in ["440100", "440300"] {
                let r = keys
                    .derive_sub_key(proto::DeriveSubKeyRequest {
                        parent_id: gd.clone(),
                        region: city.into(),
                        ..Default::default()
                    })
                    .await;
                t.ok(&me, "DeriveSubKey", r);
            }
        }
        match export {
            Some(key_id) => {
                let r = transport
                    .export_key(proto::ExportKeyRequest {
                        key_id,
                        recipient_region: "440000".into(),
                        card_id: String::new(),
                        ..Default::default()
                    })
                    .await;
                t.ok(&me, "ExportKey", r);
            }
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    t
}

/// An auditor: reads new records, checkpoints, the public key and the key list.
async fn auditor(node: Chans, me: String, until: Instant) -> Tally {
    let ch = node.get(&me).await;
    let mut audit = AuditServiceClient::new(ch.clone());
    let mut keys = KeyServiceClient::new(ch);
    let mut t = Tally::default();
    let mut from = 1;
    for _ in 0..100_000 {
        if Instant::now() >= until {
            break;
        }
        let r = audit
            .stream_records(proto::StreamRecordsRequest {
                from_seq: from,
                ..Default::default()
            })
            .await;
        if let Some(mut s) = t.ok(&me, "StreamRecords", r) {
            for _ in 0..1_000_000 {
                match s.message().await {
                    Ok(Some(line)) => from = line.seq + 1,
                    Ok(None) => break,
                    Err(e) => {
                        t.unexpected.push(format!("{me} StreamRecords: {e:?}"));
                        break;
                    }
                }
            }
        }
        let r = audit
            .get_checkpoints(proto::GetCheckpointsRequest {
                seal: false,
                page_size: 1000,
                ..Default::default()
            })
            .await;
        t.ok(&me, "GetCheckpoints", r);
        let r = audit.get_public_key(proto::GetPublicKeyRequest {}).await;
        t.ok(&me, "GetPublicKey", r);
        let r = keys.list_keys(proto::ListKeysRequest::default()).await;
        t.ok(&me, "ListKeys", r);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t
}

/// A service window of Guangzhou: unblock and reload commands for random cards.
async fn window(node: Chans, n: usize, until: Instant, seed: u64) -> Tally {
    let me = id(&format!("window-{n}"), "window", "municipal", "440100");
    let mut cards = CardServiceClient::new(node.get(&me).await);
    let mut rng = XorShift::seeded(seed);
    let mut t = Tally::default();
    for i in 0..100_000 {
        if Instant::now() >= until {
            break;
        }
        let req = proto::CardCommandRequest {
            card_serial: format!("{:016X}", rng.next()),
            challenge: format!("{:016X}", rng.next()),
            pin: format!("{:06}", rng.next() % 1_000_000),
            served_by: format!("counter {n}"),
            cardholder_id: format!("{:018}", rng.next() % 1_000_000_000_000_000_000),
            agent_id: String::new(),
            ..Default::default()
        };
        if i % 2 == 0 {
            let r = cards.unblock_pin(req).await;
            t.ok(&me, "UnblockPin", r);
        } else {
            let r = cards.reload_pin(req).await;
            t.ok(&me, "ReloadPin", r);
        }
    }
    t
}

/// Callers asking the ministry for what the policy does not give them.
async fn denied_at_ministry(node: Chans, until: Instant, shared: SharedRef) -> Tally {
    let window = id("window-x", "window", "municipal", "440100");
    let guangxi = id("system-gx", "system", "provincial", "450000");
    let auditor = id("auditor-x", "auditor", "national", "000000");
    let mut as_window = KeyServiceClient::new(node.get(&window).await);
    let mut as_guangxi = KeyServiceClient::new(node.get(&guangxi).await);
    let mut as_auditor = KeyServiceClient::new(node.get(&auditor).await);
    let mut t = Tally::default();
    for i in 0..100_000usize {
        if Instant::now() >= until {
            break;
        }
        let root = {
            let s = shared.lock().expect("shared");
            s.roots[i % s.roots.len()].clone()
        };
        let r = as_window
            .generate_key(proto::GenerateKeyRequest {
                key_type: "card-master".into(),
                ..Default::default()
            })
            .await;
        t.denied(&window, "GenerateKey", r);
        // A province derives only for its own cities.
        let r = as_guangxi
            .derive_sub_key(proto::DeriveSubKeyRequest {
                parent_id: root.clone(),
                region: "440000".into(),
                ..Default::default()
            })
            .await;
        t.hidden(&guangxi, "DeriveSubKey", r);
        let r = as_auditor
            .derive_sub_key(proto::DeriveSubKeyRequest {
                parent_id: root,
                region: "320000".into(),
                ..Default::default()
            })
            .await;
        t.denied(&auditor, "DeriveSubKey", r);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t
}

/// Another city's window at Guangzhou.
async fn denied_at_city(node: Chans, until: Instant) -> Tally {
    let me = id("window-sz", "window", "municipal", "440300");
    let mut cards = CardServiceClient::new(node.get(&me).await);
    let mut t = Tally::default();
    for _ in 0..100_000 {
        if Instant::now() >= until {
            break;
        }
        let r = cards
            .unblock_pin(proto::CardCommandRequest {
                card_serial: "1234567890ABCDEF".into(),
                challenge: "0011223344556677".into(),
                pin: "246810".into(),
                served_by: "counter sz".into(),
                cardholder_id: "44030619900101123X".into(),
                agent_id: String::new(),
                ..Default::default()
            })
            .await;
        t.denied(&me, "UnblockPin", r);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    t
}

/// Issues channels to a node for identities (certificates from its CA).
#[derive(Clone)]
struct Chans {
    url: String,
    ca: Arc<hkms::pki::DevCa>,
}

impl Chans {
    fn of(node: &TestNode) -> Chans {
        Chans {
            url: node.url(),
            ca: Arc::new(
                hkms::pki::DevCa::from_pem(
                    &std::fs::read_to_string(node.dir.path().join("pki/ca.pem")).expect("ca"),
                    &std::fs::read_to_string(node.dir.path().join("pki/ca.key")).expect("ca key"),
                )
                .expect("CA"),
            ),
        }
    }

    async fn get(&self, identity: &str) -> Channel {
        Channel::from_shared(self.url.clone())
            .expect("url")
            .tls_config(support::client_tls(
                &self.ca,
                Some(identity),
                hkms::pki::Validity::days(1),
            ))
            .expect("tls")
            .connect()
            .await
            .expect("connect")
    }
}

/// The soak requests recorded in a node's log, per (actor, rpc, code).
fn logged(records: &[serde_json::Value]) -> Counts {
    let mut c = Counts::new();
    for r in records {
        let actor = r["actor"].as_str().unwrap_or_default();
        if actor.contains(SOAK) {
            *c.entry((
                actor.to_string(),
                r["rpc"].as_str().unwrap_or_default().to_string(),
                r["result"]["code"].as_str().unwrap_or_default().to_string(),
            ))
            .or_default() += 1;
        }
    }
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bounded_soak_of_every_role_ends_with_registry_log_and_token_in_agreement() {
    let secs: u64 = std::env::var("HKMS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut rng = XorShift::from_env("HKMS_SOAK_SEED", 7);
    let tokens = tempfile::tempdir().expect("tempdir");
    let softhsm = tokens.path().join("softhsm");
    let t_ministry = make_token(&softhsm, "ministry");
    let t_gz = make_token(&softhsm, "guangzhou");
    make_token(&softhsm, "card-gd");
    let pkcs11 = support::init_pkcs11(&t_ministry);
    // Windows here ask as fast as they can: the card limits would refuse them
    // (tests/card_limits.rs tests those).
    let start = support::start_on_for_load;
    let ministry = start(&t_ministry, "national", "000000", true);
    let guangzhou = start(&t_gz, "municipal", "440100", false);

    // Setup (not counted): Guangdong's transport card at the ministry, a first root, and the
    // city's PIN keys made under dual control.
    let approved = ministry
        .ceremony(
            hkms::proto::Operation::Manage,
            &[("action", "issue-card"), ("region", "440000")],
        )
        .await;
    TransportServiceClient::new(ministry.channel().await)
        .issue_card(proto::IssueCardRequest {
            region: "440000".into(),
            card_label: "card-gd".into(),
            card_pin: USER_PIN.into(),
            ceremony_id: approved.id,
            ..Default::default()
        })
        .await
        .expect("issue card");
    let first = ministry.generate("card-master").await;
    guangzhou.generate("pin-unblock").await;
    guangzhou.generate("pin-reload").await;
    let shared: SharedRef = Arc::new(Mutex::new(Shared {
        roots: vec![first.id],
        ..Shared::default()
    }));

    let until = Instant::now() + Duration::from_secs(secs);
    let (m, g) = (Chans::of(&ministry), Chans::of(&guangzhou));
    let mut at_ministry = Vec::new();
    let mut at_city = Vec::new();
    for team in 0..2 {
        at_ministry.push(tokio::spawn(officers(
            m.clone(),
            team,
            until,
            shared.clone(),
        )));
        at_ministry.push(tokio::spawn(system(m.clone(), team, until, shared.clone())));
        at_city.push(tokio::spawn(window(g.clone(), team, until, rng.next())));
    }
    at_ministry.push(tokio::spawn(auditor(
        m.clone(),
        id("auditor", "auditor", "national", "000000"),
        until,
    )));
    at_ministry.push(tokio::spawn(denied_at_ministry(
        m.clone(),
        until,
        shared.clone(),
    )));
    at_city.push(tokio::spawn(auditor(
        g.clone(),
        id("auditor", "auditor", "municipal", "440100"),
        until,
    )));
    at_city.push(tokio::spawn(denied_at_city(g.clone(), until)));

    let bundles = tempfile::tempdir().expect("tempdir");
    for (node, clients, name) in [
        (&ministry, at_ministry, "ministry"),
        (&guangzhou, at_city, "guangzhou"),
    ] {
        let mut t = Tally::default();
        for c in clients {
            t.add(
                tokio::time::timeout(Duration::from_secs(secs + 120), c)
                    .await
                    .expect("a client did not stop")
                    .expect("client"),
            );
        }
        let on_token = token_secret_labels(&pkcs11, &node.token.label);
        let twice: Vec<&String> = on_token
            .windows(2)
            .filter(|w| w[0] == w[1] && !w[0].is_empty())
            .map(|w| &w[0])
            .collect();
        assert!(
            t.unexpected.is_empty(),
            "{name}: requests that ended otherwise than expected: {:#?}\n\
             labels on the token twice: {twice:?}\nthe node's warnings: {}",
            t.unexpected,
            node.log()
                .lines()
                .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                .filter(|l| !l.contains("denied"))
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
        let total: usize = t.counts.values().sum();
        eprintln!(
            "{name}: {total} requests in {secs} s, {} denied as expected",
            t.denied
        );
        assert!(t.denied > 0, "{name}: no denial was tried");

        // Every request has its record, with the status the client saw.
        let records = verified_records(node, FINAL_AUDITOR, &bundles.path().join(name));
        let log = logged(&records);
        let differ: Vec<_> = log
            .keys()
            .chain(t.counts.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter(|k| log.get(*k) != t.counts.get(*k))
            .map(|k| (k, log.get(k), t.counts.get(k)))
            .collect();
        assert!(
            differ.is_empty(),
            "{name}: (actor, rpc, code), records in the log, requests made: {differ:#?}"
        );
        let refused = records
            .iter()
            .filter(|r| r["actor"].as_str().unwrap_or_default().contains(SOAK))
            .filter(|r| r["result"]["ok"] == false)
            .count();
        assert_eq!(
            refused, t.denied,
            "{name}: only the expected denials failed"
        );

        // Registry rows and the token's labelled secret keys are the same set. A key creation
        // the token fails can leave an empty, unlabelled object (SoftHSM2 did, under concurrent
        // calls, before hkms used it through one session): the orphan check must report
        // exactly those, and its cleanup must leave token and registry equal.
        let registered: Vec<String> = registered_labels(node, FINAL_AUDITOR)
            .await
            .into_iter()
            .collect();
        let (empty, labelled): (Vec<String>, Vec<String>) =
            token_secret_labels(&pkcs11, &node.token.label)
                .into_iter()
                .partition(String::is_empty);
        assert_eq!(labelled, registered, "{name}: token and registry differ");
        let (orphans, missing, text) = orphan_report(node);
        assert!(
            orphans == empty && missing == 0,
            "{name}: {} unlabelled objects on the token; orphan check: {text}",
            empty.len()
        );
        if !empty.is_empty() {
            eprintln!(
                "{name}: {} empty objects left by token errors, reported by the orphan check",
                empty.len()
            );
            node.cli(&["keys", "orphans", "--destroy"]);
            assert_eq!(token_secret_labels(&pkcs11, &node.token.label), registered);
        }
        let audit = node.cli(&["token", "audit"]);
        assert!(
            audit.status.success(),
            "{name}: {}",
            support::stdout(&audit)
        );
    }
}
