//! Setting up a run: the SoftHSM2 tokens, the two nodes and their raw twins, the keys planted
//! and derived on both sides alike, the transport key cards, and the known answers both sides
//! must give before anything is timed.

use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::{Session, UserType};
use cryptoki_sys::CK_MECHANISM_TYPE;
use hkms::hierarchy::KeyId;
use hkms::hsm::transport::CardToken;
use hkms::hsm::{HsmConfig, PinSource, Pkcs11Token, TokenLocator};
use hkms::proto::{
    self, card_service_client::CardServiceClient, transport_service_client::TransportServiceClient,
};
use hkms::store::{KeyRegistry as _, SqliteStore, TransportStore as _};
use hkms::transport::Package;
use tempfile::TempDir;
use tokio::runtime::Runtime;

use crate::raw::{Raw, raw_sessions};
use crate::report::fsync_probe;
use crate::support::{
    self, PlantSpot, TestNode, Token, aes_child, aes_kcv, make_token, node_config, slot_of,
};
use crate::{ISSUANCE, PIN, WINDOW, card_of, personalise_serial};

/// The 34 GB/T 2260 province codes.
const PROVINCES: [&str; 34] = [
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41",
    "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65", "71",
    "81", "82",
];
/// National card-master keys planted at the ministry's node; each gives 34 x 70 derivations.
const DERIVE_MASTERS: usize = 2;
/// The card id of the raw city token's bureau transport key.
pub const RAW_BUREAU_CARD: &str = "card-440100-rawbaseline";
/// The card id of the raw national token's transport key for Guangdong.
pub const RAW_GD_CARD: &str = "card-440000-rawbaseline";

/// Everything a sweep uses: nodes, raw twins, sessions, and what setup made on both sides.
/// Fields drop in the order declared: sessions, nodes, the module, then the folders.
pub struct Bench {
    /// The raw loop's sessions on the city's raw twin, one per client at most.
    pub city_sessions: Vec<Session>,
    /// The raw loop's sessions on the ministry's raw twin.
    pub nation_sessions: Vec<Session>,
    /// Guangzhou's node (municipal, 440100).
    pub city: TestNode,
    /// The ministry's node (national, 000000).
    pub nation: TestNode,
    pub pkcs11: Pkcs11,
    pub rt: Runtime,
    pub raw: Raw,
    pub city_pid: u32,
    pub nation_pid: u32,
    pub city_token: Token,
    pub nation_token: Token,
    pub raw_city: Token,
    pub raw_nation: Token,
    /// The raw tokens' RFC 5649 wrap mechanism.
    pub wrap: CK_MECHANISM_TYPE,
    pub max_clients: usize,
    /// Labels of the raw city token's pin-unblock and pin-reload masters.
    pub raw_city_masters: [String; 2],
    /// Province keys on each side: (key id or label, province code).
    pub provinces: Vec<(String, String)>,
    pub raw_provinces: Vec<(String, String)>,
    /// The city's bureau card (PersonaliseCards).
    pub bureau: String,
    /// The ministry's card for Guangdong (ExportKey).
    pub gd_card_id: String,
    /// Guangdong's province keys on each side.
    pub gd_keys: Vec<String>,
    pub raw_gd_keys: Vec<String>,
    /// The header of the service's ExportKey package, MACed by the raw loop alike.
    pub export_header: Vec<u8>,
    /// The headers of the service's two PersonaliseCards packages, for the raw loop.
    pub card_headers: [Vec<u8>; 2],
    _raw_dir: TempDir,
    _tokens: TempDir,
}

impl Bench {
    /// Sets up everything for sweeps of at most `max_clients` clients, checks the known
    /// answers and prints the `setup:` line (with the time since `started`).
    pub fn set_up(max_clients: usize, started: Instant) -> Bench {
        // One SoftHSM2 folder: each node's token, its raw twin, and the card tokens.
        let tokens = tempfile::tempdir().expect("tempdir");
        let softhsm = tokens.path().join("softhsm");
        let city_token = make_token(&softhsm, "bench-city");
        let nation_token = make_token(&softhsm, "bench-nation");
        let raw_city = make_token(&softhsm, "bench-raw-city");
        let raw_nation = make_token(&softhsm, "bench-raw-nation");
        let bureau_card = make_token(&softhsm, "bench-bureau-card");
        let raw_bureau_card = make_token(&softhsm, "bench-raw-bureau-card");
        let gd_card = make_token(&softhsm, "bench-gd-card");
        let raw_gd_card = make_token(&softhsm, "bench-raw-gd-card");
        let pkcs11 = support::init_pkcs11(&city_token);
        println!(
            "disk: 4 KiB write + fdatasync in the token/registry folder, median {:.2} ms",
            fsync_probe(tokens.path())
        );

        // Known masters, as tests/card_services.rs plants them.
        let unblock_root = hex::decode("00112233445566778899AABBCCDDEEFF").expect("hex");
        let reload_root = hex::decode("FFEEDDCCBBAA99887766554433221100").expect("hex");
        let gz_unblock = aes_child(&aes_child(&unblock_root, "440000"), "440100");
        let gz_reload = aes_child(&aes_child(&reload_root, "440000"), "440100");
        let card_roots: Vec<Vec<u8>> = (0..DERIVE_MASTERS)
            .map(|m| {
                (0..16u8)
                    .map(|b| b.wrapping_mul(17).wrapping_add(m as u8))
                    .collect()
            })
            .collect();

        // Guangzhou's node and its raw twin: pin-unblock and pin-reload masters.
        let (city_dir, store) = node_dir(&city_token, "municipal", "440100");
        let raw_dir = tempfile::tempdir().expect("tempdir");
        let raw_store = SqliteStore::open(&raw_dir.path().join("registry.sqlite")).expect("store");
        let mut raw_city_masters = Vec::new();
        for (key_type, value) in [("pin-unblock", &gz_unblock), ("pin-reload", &gz_reload)] {
            plant_known(&pkcs11, &city_token, &store, "440100", key_type, value);
            let id = plant_known(&pkcs11, &raw_city, &raw_store, "440100", key_type, value);
            raw_city_masters.push(id.ck_label());
        }
        let raw_city_masters: [String; 2] = raw_city_masters.try_into().expect("two masters");
        drop(store);

        // The ministry's node and its raw twin: card-master keys.
        let (nation_dir, store) = node_dir(&nation_token, "national", "000000");
        let masters: Vec<KeyId> = card_roots
            .iter()
            .map(|v| plant_known(&pkcs11, &nation_token, &store, "000000", "card-master", v))
            .collect();
        let raw_masters: Vec<String> = card_roots
            .iter()
            .map(|v| {
                plant_known(&pkcs11, &raw_nation, &raw_store, "000000", "card-master", v).ck_label()
            })
            .collect();
        drop(store);
        drop(raw_store);

        // What a node makes on its token at start and when it issues a card, made on the raw
        // twins through the same code (setup, not timed).
        let wrap = {
            let hsm = setup_hsm(&raw_city);
            hsm.ensure_signing_key(hkms::node::SIGNING_LABEL)
                .expect("signing pair");
            raw_issue(&hsm, &raw_bureau_card, RAW_BUREAU_CARD);
            hsm.capabilities().wrap_pad.expect("RFC 5649 wrap")
        };
        {
            let hsm = setup_hsm(&raw_nation);
            hsm.ensure_signing_key(hkms::node::SIGNING_LABEL)
                .expect("signing pair");
            raw_issue(&hsm, &raw_gd_card, RAW_GD_CARD);
        }
        let raw = Raw::new(&raw_city.module, wrap);
        let city_sessions = raw_sessions(&pkcs11, &raw_city, max_clients);
        let nation_sessions = raw_sessions(&pkcs11, &raw_nation, max_clients);

        let city = start_node(city_dir, &city_token);
        let nation = start_node(nation_dir, &nation_token);
        let (city_pid, nation_pid) = (
            city.pid().expect("city server"),
            nation.pid().expect("ministry server"),
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");

        // Province keys: the ministry's node over gRPC, the raw loop on its twin (in the same
        // order, with the same calls), every KCV checked against software. Not timed.
        let provinces = service_provinces(&rt, &nation, &masters, &card_roots);
        let raw_provinces = raw_provinces(&raw, &nation_sessions[0], &raw_masters, &card_roots);

        // Transport key cards: the city issues its bureau's, the ministry Guangdong's.
        let bureau = issue_card(&rt, &city, "440100", &bureau_card);
        let gd_card_id = issue_card(&rt, &nation, "440000", &gd_card);
        let of_guangdong = |keys: &[(String, String)]| -> Vec<String> {
            keys.iter()
                .filter(|(_, p)| p == "44")
                .map(|(id, _)| id.clone())
                .collect()
        };
        let gd_keys = of_guangdong(&provinces);
        let raw_gd_keys = of_guangdong(&raw_provinces);

        let mut bench = Bench {
            city_sessions,
            nation_sessions,
            city,
            nation,
            pkcs11,
            rt,
            raw,
            city_pid,
            nation_pid,
            city_token,
            nation_token,
            raw_city,
            raw_nation,
            wrap,
            max_clients,
            raw_city_masters,
            provinces,
            raw_provinces,
            bureau,
            gd_card_id,
            gd_keys,
            raw_gd_keys,
            export_header: Vec::new(),
            card_headers: [Vec::new(), Vec::new()],
            _raw_dir: raw_dir,
            _tokens: tokens,
        };
        bench.check_known_answers();
        println!(
            "setup: 8 tokens (4 of them cards), 2 nodes, {} province keys on each national token, \
             known answers agree ({:.1} s)",
            bench.provinces.len(),
            started.elapsed().as_secs_f64()
        );
        bench
    }

    /// Known answers: both sides make the same APDU (and the one tests/card_services.rs
    /// expects from the software model), the same card-key KCVs, packages of the same shape.
    /// Keeps the service's package headers for the raw loop's package MACs.
    fn check_known_answers(&mut self) {
        let apdu = self.rt.block_on(async {
            CardServiceClient::new(self.city.channel_as(WINDOW).await)
                .unblock_pin(card_request(0))
                .await
                .expect("UnblockPin")
                .into_inner()
                .apdu
        });
        assert_eq!(
            apdu,
            self.raw
                .unblock(&self.city_sessions[0], &self.raw_city_masters[0], 0)
                .expect("raw unblock"),
            "same APDU on both sides"
        );
        let export_package = self.rt.block_on(async {
            TransportServiceClient::new(self.nation.channel().await)
                .export_key(proto::ExportKeyRequest {
                    key_id: self.gd_keys[0].clone(),
                    recipient_region: "440000".into(),
                    card_id: self.gd_card_id.clone(),
                    ..Default::default()
                })
                .await
                .expect("ExportKey")
                .into_inner()
                .package
        });
        let export_package = Package::decode(&export_package).expect("package");
        self.export_header = export_package.header_bytes.clone();
        let raw_wrapped = self
            .raw
            .export(
                &self.nation_sessions[0],
                RAW_GD_CARD,
                &self.raw_gd_keys[0],
                &self.export_header,
            )
            .expect("raw export");
        assert_eq!(
            raw_wrapped.len(),
            export_package.wrapped.len(),
            "wrapped keys of one length"
        );
        let card_packages: Vec<Package> = self.rt.block_on(async {
            use tokio_stream::StreamExt;
            let mut answers = CardServiceClient::new(self.city.channel_as(ISSUANCE).await)
                .personalise_cards(tokio_stream::iter([proto::PersonaliseRequest {
                    bureau_card_id: self.bureau.clone(),
                    card_serial: personalise_serial(usize::MAX >> 20),
                }]))
                .await
                .expect("PersonaliseCards")
                .into_inner();
            let answer = answers
                .next()
                .await
                .expect("an answer")
                .expect("a good answer");
            assert!(answer.error.is_empty(), "{}", answer.error);
            answer
                .packages
                .iter()
                .map(|p| Package::decode(&p.package).expect("package"))
                .collect()
        });
        self.card_headers = [
            card_packages[0].header_bytes.clone(),
            card_packages[1].header_bytes.clone(),
        ];
        let raw_kcvs = self
            .raw
            .personalise(
                &self.city_sessions[0],
                &self.raw_city_masters,
                &self.card_headers,
                RAW_BUREAU_CARD,
                &personalise_serial(usize::MAX >> 20),
            )
            .expect("raw personalise");
        for (p, kcv) in card_packages.iter().zip(&raw_kcvs) {
            assert_eq!(p.header.kcv, hex::encode_upper(kcv), "card key KCV");
        }
    }
}

/// The province keys of every master, derived by the ministry's node over gRPC, each KCV
/// checked against software: (key id, province code).
fn service_provinces(
    rt: &Runtime,
    nation: &TestNode,
    masters: &[KeyId],
    card_roots: &[Vec<u8>],
) -> Vec<(String, String)> {
    rt.block_on(async {
        let mut officer = nation.client().await;
        let mut out = Vec::new();
        for (m, master) in masters.iter().enumerate() {
            for p in PROVINCES {
                let region = format!("{p}0000");
                let key = support::try_derive(&mut officer, &master.to_string(), &region)
                    .await
                    .expect("derive a province");
                assert_eq!(
                    key.kcv,
                    aes_kcv(&aes_child(&card_roots[m], &region)),
                    "province KCV"
                );
                out.push((key.id, p.to_string()));
            }
        }
        out
    })
}

/// The same province keys, in the same order, made by the raw loop on the ministry's raw twin:
/// (label, province code).
fn raw_provinces(
    raw: &Raw,
    session: &Session,
    masters: &[String],
    card_roots: &[Vec<u8>],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (m, master) in masters.iter().enumerate() {
        for p in PROVINCES {
            let region = format!("{p}0000");
            let (label, kcv) = raw
                .derive(session, master, &region)
                .unwrap_or_else(|e| panic!("raw province {region}: {e}"));
            assert_eq!(
                hex::encode_upper(kcv),
                aes_kcv(&aes_child(&card_roots[m], &region)),
                "raw province KCV"
            );
            out.push((label, p.to_string()));
        }
    }
    out
}

/// How many objects (of any class) the user sees on a token: a check that two tokens grew alike.
pub fn object_count(pkcs11: &Pkcs11, token: &Token) -> usize {
    let s = pkcs11
        .open_ro_session(slot_of(pkcs11, &token.label))
        .expect("session");
    let _ = s.login(
        UserType::User,
        Some(&secrecy::SecretString::from(support::USER_PIN)),
    );
    s.find_objects(&[]).map(|v| v.len()).unwrap_or(0)
}

/// What is on a node's token beside what its registry explains: labels of hkms secret keys
/// (`hkms/...`) with no key row (what `hkms keys orphans` would report), labels that more than
/// one secret key carries, and how many secret keys carry any other label (or none).
pub fn token_strays(
    pkcs11: &Pkcs11,
    token: &Token,
    registry: &std::path::Path,
) -> (Vec<String>, Vec<String>, usize) {
    let store = SqliteStore::open(registry).expect("the node's registry");
    let mut live: std::collections::BTreeSet<String> =
        store.labels().expect("labels").into_iter().collect();
    for t in store.transport_keys().expect("transport keys") {
        live.insert(hkms::hsm::transport::transport_label(&t.card_id));
        live.insert(hkms::hsm::transport::package_mac_label(&t.card_id));
    }
    let s = pkcs11
        .open_ro_session(slot_of(pkcs11, &token.label))
        .expect("session");
    let _ = s.login(
        UserType::User,
        Some(&secrecy::SecretString::from(support::USER_PIN)),
    );
    let mut labels: std::collections::BTreeMap<String, usize> = Default::default();
    for key in s
        .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
        .unwrap_or_default()
    {
        let label = s
            .get_attributes(key, &[cryptoki::object::AttributeType::Label])
            .unwrap_or_default()
            .into_iter()
            .find_map(|a| match a {
                Attribute::Label(l) => Some(String::from_utf8_lossy(&l).into_owned()),
                _ => None,
            })
            .unwrap_or_default();
        *labels.entry(label).or_default() += 1;
    }
    let hkms = |l: &String| l.starts_with("hkms/") && l != "hkms/audit-signing";
    let unregistered = labels
        .keys()
        .filter(|l| hkms(l) && !live.contains(*l))
        .cloned()
        .collect();
    let duplicated = labels
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(l, n)| format!("{l} x{n}"))
        .collect();
    let other = labels
        .iter()
        .filter(|(l, _)| !hkms(l))
        .map(|(_, n)| n)
        .sum();
    (unregistered, duplicated, other)
}

/// An in-process `Pkcs11Token` on a raw token for setup only (signing pair, transport keys): the same
/// objects the node makes on its token. Dropped before the raw sessions log in.
fn setup_hsm(token: &Token) -> Pkcs11Token {
    Pkcs11Token::open(&HsmConfig {
        module: token.module.clone(),
        locator: TokenLocator::by_label(&token.label),
        pin: PinSource::File(token.pin_file.clone()),
        sessions: 1,
        session_wait: Duration::from_secs(60),
    })
    .expect("open a raw token for setup")
}

/// Issues a transport key for `card_id` from a raw token onto `card` (setup).
fn raw_issue(hsm: &Pkcs11Token, card: &Token, card_id: &str) {
    let pin = secrecy::SecretString::from(support::USER_PIN);
    let card = CardToken::open(&card.module, &TokenLocator::by_label(&card.label), &pin)
        .expect("raw card token");
    hsm.issue_transport_key(
        &secrecy::SecretString::from(support::SO_PIN),
        &card,
        card_id,
    )
    .expect("raw transport key");
}

/// Plants a known AES-128 key of `key_type` for `region` on `token`, registered in `store`;
/// returns its id.
pub fn plant_known(
    pkcs11: &Pkcs11,
    token: &Token,
    store: &SqliteStore,
    region: &str,
    key_type: &str,
    value: &[u8],
) -> KeyId {
    support::plant_aes(
        &PlantSpot {
            pkcs11,
            token: &token.label,
            store,
            region,
        },
        key_type,
        value,
    )
}

/// A node folder with a registry holding planted keys; the node is started afterwards.
pub fn node_dir(token: &Token, tier: &str, region: &str) -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("data/registry.sqlite")).expect("store");
    // Every bench node may issue cards (the city its bureau's, the ministry Guangdong's).
    let text = support::with_so_pin(node_config(region, tier, region, token), token);
    // One window asks for thousands of commands, for the same cards at every level: the card
    // limits would refuse them.
    let policy = support::policy_with_card_limits(dir.path(), support::LOAD_CARD_LIMITS);
    let text = support::with_policy(text, &policy);
    // Metrics on: the bench reads from them where the server's time goes.
    let text = text + "\n[metrics]\nlisten = \"127.0.0.1:0\"\n";
    std::fs::write(dir.path().join("node.toml"), text).expect("config");
    (dir, store)
}

/// Starts the node of `dir` on `token`; `HKMS_BENCH_SESSIONS=N` sets its session pool's size.
pub fn start_node(dir: tempfile::TempDir, token: &Token) -> TestNode {
    let config = dir.path().join("node.toml");
    if let Some(n) = std::env::var("HKMS_BENCH_SESSIONS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        // The pool size to try instead of the test config's 4.
        let text = std::fs::read_to_string(&config).expect("node config");
        let text = text.replace("sessions = 4", &format!("sessions = {n}"));
        std::fs::write(&config, text).expect("node config");
    }
    TestNode::start_in(dir, token.clone(), config)
}

/// Has `node` issue a transport key card for `region` onto `card` (an approved `issue-card`
/// ceremony, then IssueCard); returns the card id.
pub fn issue_card(
    rt: &tokio::runtime::Runtime,
    node: &TestNode,
    region: &str,
    card: &Token,
) -> String {
    rt.block_on(async {
        let done = node
            .ceremony(
                hkms::proto::Operation::Manage,
                &[("action", "issue-card"), ("region", region)],
            )
            .await;
        TransportServiceClient::new(node.channel().await)
            .issue_card(proto::IssueCardRequest {
                region: region.into(),
                card_label: card.label.clone(),
                card_pin: support::USER_PIN.into(),
                ceremony_id: done.id,
                ..Default::default()
            })
            .await
            .expect("issue card")
            .into_inner()
            .card_id
    })
}

/// The UnblockPin request for card `i` (window staff, a known cardholder).
pub fn card_request(i: usize) -> proto::CardCommandRequest {
    let (card_serial, challenge) = card_of(i);
    proto::CardCommandRequest {
        card_serial,
        challenge,
        pin: PIN.into(),
        served_by: "Li Wei".into(),
        cardholder_id: "44010619900101123X".into(),
        agent_id: String::new(),
        ..Default::default()
    }
}
