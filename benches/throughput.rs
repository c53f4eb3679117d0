//! Throughput of the hkms service against an in-process HSM baseline, on SoftHSM2.
//!
//! For two operations, UnblockPin and DeriveSubKey, and 1, 2, 4, 8 and 16 concurrent clients,
//! this measures:
//!
//! - **service**: gRPC over mTLS to a real `hkms serve` process (one TLS connection per
//!   client), with policy checks and one durable (fsync'd) audit record per request before the
//!   reply;
//! - **baseline**: the same PKCS#11 call sequence made in this process through the public
//!   `hkms::hsm::Hsm` API (one logged-in token, a pool of 4 sessions as in the node config),
//!   from as many threads as there are clients: no gRPC, no TLS, no policy, no audit.
//!
//! Both run on tokens of the same kind (SoftHSM2, file backend) in one SoftHSM2 folder, on the
//! same machine, in the same run. See docs/benchmarks.md for how to read the output.
//!
//! `cargo bench --bench throughput`; `HKMS_BENCH_QUICK=1` for a short run.

#[path = "../tests/support/mod.rs"]
mod support;

use std::future::Future;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hkms::card::CardCommand;
use hkms::hierarchy::{Algorithm, Factor, Kcv, KeyId, Usage};
use hkms::hsm::{Hsm, HsmConfig, Lifetime, PinSource, SecretKeySpec, TokenLocator};
use hkms::proto::{
    self, card_service_client::CardServiceClient, key_service_client::KeyServiceClient,
};
use hkms::store::Store;
use support::{PlantSpot, TestNode, Token, aes_child, aes_kcv, make_token, node_config};
use tonic::transport::Channel;

/// Concurrent clients (service) or threads (baseline).
const LEVELS: [usize; 5] = [1, 2, 4, 8, 16];
/// Sessions of the baseline's pool: the same as the nodes' config (`sessions = 4`).
const BASELINE_SESSIONS: usize = 4;
/// The window that asks for PIN UNBLOCK commands at Guangzhou's node.
const WINDOW: &str = "hkms://window/municipal/440100/counter-1";
/// The 34 GB/T 2260 province codes.
const PROVINCES: [&str; 34] = [
    "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36", "37", "41",
    "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62", "63", "64", "65", "71",
    "81", "82",
];
/// City codes XXYY00 used per province: YY = 01..=CITIES.
const CITIES: usize = 70;
/// National card-master keys planted at the ministry's node; each gives 34 x 70 derivations.
const DERIVE_MASTERS: usize = 2;

/// How long a run is.
#[derive(Debug, Clone, Copy)]
struct Settings {
    /// Timed UnblockPin operations per line and side.
    unblock_ops: usize,
    /// Timed DeriveSubKey operations per line and side.
    derive_ops: usize,
    /// Untimed operations per client before each timed run.
    warm_per_client: usize,
    /// Each line alternates baseline and service this many times, a share of the operations
    /// each time, so that a change of load on the machine hits both sides alike.
    rounds: usize,
    /// A line stops after this long (per side) even if its operations are not all done.
    cap: Duration,
}

/// What one operation gave: `Err` carries the failure's text.
type Outcome = Result<(), String>;

/// One timed run. Throughput and latencies count successful operations only; failures are
/// counted apart (with the first failure's text).
struct Run {
    ops: usize,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn from(elapsed: Duration, outcomes: Vec<(Duration, Outcome)>) -> Run {
        let mut latencies = Vec::new();
        let mut errors = 0;
        let mut first_error = None;
        for (latency, outcome) in outcomes {
            match outcome {
                Ok(()) => latencies.push(latency),
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
        }
        latencies.sort();
        Run {
            ops: latencies.len(),
            errors,
            first_error,
            elapsed,
            latencies,
        }
    }

    /// Adds another run of the same line (its time adds up: the runs did not overlap).
    fn merge(&mut self, other: Run) {
        self.ops += other.ops;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.elapsed += other.elapsed;
        self.latencies.extend(other.latencies);
        self.latencies.sort();
    }

    fn ops_per_s(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency below which a fraction `q` of the successful operations finished, in ms.
    fn percentile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank =
            ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[rank - 1].as_secs_f64() * 1e3
    }
}

/// Runs `count` operations numbered `first..first + count` on tokio tasks, one per client,
/// each task handing its client to `op` and getting it back; stops early at `cap`.
async fn drive_service<C, F, Fut>(
    clients: Vec<C>,
    first: usize,
    count: usize,
    cap: Duration,
    op: F,
) -> (Run, Vec<C>)
where
    C: Send + 'static,
    F: Fn(C, usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = (C, Outcome)> + Send + 'static,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicUsize::new(first));
    let end = first + count;
    let start = Instant::now();
    let deadline = start + cap;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let (op, next) = (Arc::clone(&op), Arc::clone(&next));
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= end || Instant::now() >= deadline {
                        break;
                    }
                    let t = Instant::now();
                    let (back, outcome) = op(client, i).await;
                    client = back;
                    outcomes.push((t.elapsed(), outcome));
                }
                (client, outcomes)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut back = Vec::new();
    for task in tasks {
        let (client, outcomes) = task.await.expect("service worker");
        back.push(client);
        all.extend(outcomes);
    }
    (Run::from(start.elapsed(), all), back)
}

/// Runs `count` operations numbered `first..first + count` on `threads` threads; stops early
/// at `cap`.
fn drive_threads(
    threads: usize,
    first: usize,
    count: usize,
    cap: Duration,
    op: &(dyn Fn(usize) -> Outcome + Sync),
) -> Run {
    let next = AtomicUsize::new(first);
    let end = first + count;
    let start = Instant::now();
    let deadline = start + cap;
    let all = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let next = &next;
                s.spawn(move || {
                    let mut outcomes = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= end || Instant::now() >= deadline {
                            break;
                        }
                        let t = Instant::now();
                        let outcome = op(i);
                        outcomes.push((t.elapsed(), outcome));
                    }
                    outcomes
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("baseline worker"))
            .collect::<Vec<_>>()
    });
    Run::from(start.elapsed(), all)
}

/// One line of a table: the same concurrency on both sides.
struct Row {
    /// The number of clients, with a note when the line is a repeat.
    label: String,
    service: Run,
    baseline: Run,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.service.ops_per_s() / self.baseline.ops_per_s()
    }
}

fn print_table(title: &str, service: &str, baseline: &str, rows: &[Row], notes: &[String]) {
    println!();
    println!("== {title} ==");
    println!("  service:  {service}");
    println!("  baseline: {baseline}");
    println!(
        "  {:>7} | {:>9} {:>8} {:>8} {:>5} | {:>9} {:>8} {:>8} {:>5} | {:>8}",
        "clients",
        "svc op/s",
        "p50 ms",
        "p99 ms",
        "err",
        "base op/s",
        "p50 ms",
        "p99 ms",
        "err",
        "svc/base"
    );
    println!("  {}", "-".repeat(100));
    for r in rows {
        println!(
            "  {:>7} | {:>9.0} {:>8.2} {:>8.2} {:>5} | {:>9.0} {:>8.2} {:>8.2} {:>5} | {:>7.1}%",
            r.label,
            r.service.ops_per_s(),
            r.service.percentile_ms(0.50),
            r.service.percentile_ms(0.99),
            r.service.errors,
            r.baseline.ops_per_s(),
            r.baseline.percentile_ms(0.50),
            r.baseline.percentile_ms(0.99),
            r.baseline.errors,
            r.ratio() * 100.0,
        );
    }
    let ops: Vec<String> = rows
        .iter()
        .map(|r| format!("{}/{}", r.service.ops, r.baseline.ops))
        .collect();
    println!(
        "  successful timed ops (service/baseline) per line: {}",
        ops.join(", ")
    );
    // Repeated lines (`1 grown`) have another baseline: they are left out of the summary.
    let sweep: Vec<&Row> = rows
        .iter()
        .filter(|r| r.label.parse::<usize>().is_ok())
        .collect();
    if let Some(best) = sweep.iter().max_by(|a, b| a.ratio().total_cmp(&b.ratio())) {
        let svc = sweep
            .iter()
            .map(|r| r.service.ops_per_s())
            .fold(0.0, f64::max);
        let base = sweep
            .iter()
            .map(|r| r.baseline.ops_per_s())
            .fold(0.0, f64::max);
        println!(
            "  best ratio: {:.1}% (clients: {}); peak service {:.0} op/s vs peak baseline {:.0} op/s ({:.1}%)",
            best.ratio() * 100.0,
            best.label,
            svc,
            base,
            svc / base * 100.0
        );
    }
    for note in notes {
        println!("  {note}");
    }
    let sides = [
        (
            "service",
            rows.iter().map(|r| &r.service).collect::<Vec<_>>(),
        ),
        ("baseline", rows.iter().map(|r| &r.baseline).collect()),
    ];
    for (side, runs) in sides {
        let errors: usize = runs.iter().map(|r| r.errors).sum();
        if let Some(e) = runs.iter().find_map(|r| r.first_error.as_ref()) {
            println!("  {side}: {errors} failed operations in all; first: {e}");
        }
    }
}

/// One line of a sweep: `clients` clients on each side, warm-up first, then `rounds`
/// alternations of a baseline share and a service share of `ops` operations. Service
/// operations take their numbers from `next` (each number is used once); baseline ones from
/// `next_baseline`.
#[allow(clippy::too_many_arguments)]
fn measure_line<C, F, Fut>(
    rt: &tokio::runtime::Runtime,
    settings: &Settings,
    ops: usize,
    mut clients: Vec<C>,
    service_op: F,
    baseline_op: &(dyn Fn(usize) -> Outcome + Sync),
    next: &mut usize,
    next_baseline: &mut usize,
) -> (Run, Run)
where
    C: Send + 'static,
    F: Fn(C, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = (C, Outcome)> + Send + 'static,
{
    let c = clients.len();
    let warm = c * settings.warm_per_client;
    drive_threads(c, *next_baseline, warm, settings.cap, baseline_op);
    *next_baseline += warm;
    let (_, back) = rt.block_on(drive_service(
        clients,
        *next,
        warm,
        settings.cap,
        service_op.clone(),
    ));
    clients = back;
    *next += warm;
    let share = ops.div_ceil(settings.rounds);
    let cap = settings.cap / settings.rounds as u32;
    let mut service = Run::from(Duration::ZERO, Vec::new());
    let mut baseline = Run::from(Duration::ZERO, Vec::new());
    for _ in 0..settings.rounds {
        baseline.merge(drive_threads(c, *next_baseline, share, cap, baseline_op));
        *next_baseline += share;
        let (run, back) = rt.block_on(drive_service(
            clients,
            *next,
            share,
            cap,
            service_op.clone(),
        ));
        clients = back;
        service.merge(run);
        *next += share;
    }
    (service, baseline)
}

/// The median time of writing 4 KiB and `fdatasync`ing it in `dir`, in ms: what one durable
/// registry write costs on this disk at least.
fn fsync_probe(dir: &std::path::Path) -> f64 {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join("fsync-probe")).expect("probe file");
    let mut times: Vec<f64> = (0..50)
        .map(|_| {
            let t = Instant::now();
            f.write_all(&[0u8; 4096]).expect("write");
            f.sync_data().expect("fdatasync");
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let softhsm = Command::new("softhsm2-util")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    format!("nproc {cpus}, CPU {model}, SoftHSM2 {softhsm} (file object store)")
}

/// Plants a known AES-128 derive key of `key_type` for `region` on `token`, registered in
/// `store`; returns its id.
fn plant_known(
    pkcs11: &cryptoki::context::Pkcs11,
    token: &Token,
    store: &Store,
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
fn node_dir(token: &Token, tier: &str, region: &str) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(&dir.path().join("data/registry.sqlite")).expect("store");
    // Every bench node may issue cards (the city issues its bureau's).
    let so = token.pin_file.with_file_name("so.pin");
    let text = node_config(region, tier, region, token).replace(
        &format!("pin_file = \"{}\"", token.pin_file.display()),
        &format!(
            "pin_file = \"{}\"\nso_pin_file = \"{}\"",
            token.pin_file.display(),
            so.display()
        ),
    );
    std::fs::write(dir.path().join("node.toml"), text).expect("config");
    (dir, store)
}

fn start_node(dir: tempfile::TempDir, token: &Token) -> TestNode {
    let config = dir.path().join("node.toml");
    TestNode::start_in(dir, token.clone(), config)
}

/// PersonaliseCards: cards per second through the stream (one stream per client) against the
/// same PKCS#11 calls in process (per card and key type: C_DeriveKey of an exportable session
/// key, C_Sign CMAC for its KCV, C_WrapKey under the bureau's transport key, C_DestroyObject,
/// and C_Sign CMAC for the package MAC).
#[allow(clippy::too_many_arguments)]
fn personalise_section(
    rt: &tokio::runtime::Runtime,
    settings: &Settings,
    city: &TestNode,
    hsm: &Hsm,
    raw_unblock: &str,
    raw_token: &Token,
    bureau_card: &Token,
    raw_bureau_card: &Token,
) {
    use hkms::hsm::transport::CardToken;
    let pin = secrecy::SecretString::from(support::USER_PIN);
    // The city's officers approve and issue the bureau's card.
    let bureau_id = rt.block_on(async {
        let done = city
            .ceremony("manage", &[("action", "issue-card"), ("region", "440100")])
            .await;
        proto::transport_service_client::TransportServiceClient::new(city.channel().await)
            .issue_card(proto::IssueCardRequest {
                region: "440100".into(),
                card_label: bureau_card.label.clone(),
                card_pin: support::USER_PIN.into(),
                ceremony_id: done.id,
            })
            .await
            .expect("bureau card")
            .into_inner()
            .card_id
    });
    // The baseline token issues its own bureau card (its SO PIN is the test one).
    let raw_card = CardToken::open(
        &raw_token.module,
        &TokenLocator::by_label(&raw_bureau_card.label),
        &pin,
    )
    .expect("baseline bureau card");
    let raw_card_id = "card-440100-benchbaseline";
    hsm.issue_transport_key(
        &secrecy::SecretString::from(support::SO_PIN),
        &raw_card,
        raw_card_id,
    )
    .expect("baseline transport key");
    let baseline_card = |i: usize| -> Outcome {
        let serial =
            Factor::from_card_serial(&format!("{:016X}", 0x5555_0000_0000_0000u64 + i as u64))
                .map_err(|e| e.to_string())?;
        for _ in 0..2 {
            let (wrapped, _) = hsm
                .export_card_key(raw_unblock, &serial, raw_card_id)
                .map_err(|e| e.to_string())?;
            hsm.package_mac(raw_card_id, &wrapped)
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    };
    let per_level = (settings.unblock_ops / 2).max(16);
    let mut rows = Vec::new();
    let mut next = 0usize;
    for &c in &LEVELS {
        // Service: c streams, each sending its share of serials.
        let start = Instant::now();
        let counts = rt.block_on(async {
            let mut tasks = Vec::new();
            for k in 0..c {
                let channel = city
                    .channel_as("hkms://system/municipal/440100/card-issuance")
                    .await;
                let bureau = bureau_id.clone();
                let base = next + k * per_level / c;
                let share = per_level / c;
                tasks.push(tokio::spawn(async move {
                    use tokio_stream::StreamExt;
                    let mut client = CardServiceClient::new(channel);
                    let serials = (0..share).map(move |j| proto::PersonaliseRequest {
                        bureau_card_id: bureau.clone(),
                        card_serial: format!(
                            "{:016X}",
                            0x7777_0000_0000_0000u64 + (base + j) as u64
                        ),
                    });
                    let mut answers = client
                        .personalise_cards(tokio_stream::iter(serials))
                        .await
                        .expect("stream")
                        .into_inner();
                    let (mut ok, mut err) = (0usize, 0usize);
                    while let Some(a) = answers.next().await {
                        match a {
                            Ok(a) if a.error.is_empty() && a.packages.len() == 2 => ok += 1,
                            _ => err += 1,
                        }
                    }
                    (ok, err)
                }));
            }
            let mut total = (0, 0);
            for t in tasks {
                let (ok, err) = t.await.expect("stream task");
                total = (total.0 + ok, total.1 + err);
            }
            total
        });
        next += per_level;
        let service = Run::from(
            start.elapsed(),
            (0..counts.0)
                .map(|_| (start.elapsed() / counts.0.max(1) as u32, Ok(())))
                .chain((0..counts.1).map(|_| (Duration::ZERO, Err("card failed".to_string()))))
                .collect(),
        );
        let baseline = drive_threads(c, next * 10, per_level, settings.cap, &baseline_card);
        rows.push(Row {
            label: c.to_string(),
            service,
            baseline,
        });
    }
    print_table(
        "PersonaliseCards (cards/s; two key packages per card)",
        "gRPC/mTLS stream to `hkms serve` (municipal 440100), one stream per client: policy and one audit record (fsync) per card",
        "in-process HSM: per card 2x (Hsm::export_card_key + Hsm::package_mac)",
        &rows,
        &[
            "service latencies are stream averages (cards are pipelined), not per-card times"
                .to_string(),
        ],
    );
}

/// Card serial and challenge of operation `i` (all distinct).
fn card_of(i: usize) -> (String, String) {
    let i = i as u64;
    (
        format!("{:016X}", 0x1234_5678_0000_0000u64 + i),
        format!(
            "{:016X}",
            (i + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
        ),
    )
}

const PIN: &str = "246810";

fn card_request(i: usize) -> proto::CardCommandRequest {
    let (card_serial, challenge) = card_of(i);
    proto::CardCommandRequest {
        card_serial,
        challenge,
        pin: PIN.into(),
        served_by: "Li Wei".into(),
        cardholder_id: "44010619900101123X".into(),
        agent_id: String::new(),
    }
}

fn baseline_unblock(hsm: &Hsm, master_label: &str, i: usize) -> Result<Vec<u8>, String> {
    let (serial, challenge) = card_of(i);
    let serial = Factor::from_card_serial(&serial).expect("serial");
    let challenge = hkms::card::parse_challenge(&challenge).expect("challenge");
    let block = hkms::card::pin_block(PIN);
    hsm.card_command(
        CardCommand::Unblock,
        master_label,
        &serial,
        &challenge,
        &block,
    )
    .map_err(|e| e.to_string())
}

/// Time the baseline spent in `destroy_key` since it was last reset.
static DESTROY_NANOS: AtomicU64 = AtomicU64::new(0);

/// Derives `region` from `parent_label` as the node would (token object, exportable derive
/// key), then destroys the child (also after a failed derivation, in case the token left an
/// object behind); returns its KCV.
fn baseline_derive(hsm: &Hsm, parent_label: &str, region: &str) -> Result<Kcv, String> {
    let id = KeyId::new_random();
    let region = hkms::hierarchy::Region::parse(region).expect("region");
    let kcv = hsm
        .derive_key(
            parent_label,
            Algorithm::Aes128,
            &Factor::from_region(&region),
            &SecretKeySpec {
                algorithm: Algorithm::Aes128,
                usage: Usage::Derive,
                exportable: true,
                label: id.ck_label(),
                id: id.ck_id(),
                lifetime: Lifetime::Token,
            },
        )
        .map_err(|e| e.to_string());
    let t = Instant::now();
    let destroyed = hsm.destroy_key(&id.ck_label());
    DESTROY_NANOS.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    let kcv = kcv?;
    destroyed.map_err(|e| format!("destroy_key: {e}"))?;
    Ok(kcv)
}

fn main() {
    let quick = std::env::var("HKMS_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let settings = if quick {
        Settings {
            unblock_ops: 200,
            derive_ops: 60,
            warm_per_client: 1,
            rounds: 2,
            cap: Duration::from_secs(3),
        }
    } else {
        Settings {
            unblock_ops: 2000,
            derive_ops: 400,
            warm_per_client: 3,
            rounds: 4,
            cap: Duration::from_secs(12),
        }
    };
    println!(
        "hkms throughput bench ({} run: {} UnblockPin / {} DeriveSubKey timed ops per line and \
         side in {} alternating shares, {} warm-up ops per client, at most {:?} per line and side)",
        if quick { "quick" } else { "full" },
        settings.unblock_ops,
        settings.derive_ops,
        settings.rounds,
        settings.warm_per_client,
        settings.cap
    );
    println!("machine: {}", machine());
    println!(
        "load average at the start: {} (other work on the machine skews every number)",
        load_average()
    );
    let started = Instant::now();

    // Three tokens of one SoftHSM2 folder: the city's, the ministry's, the baseline's.
    let tokens = tempfile::tempdir().expect("tempdir");
    let softhsm = tokens.path().join("softhsm");
    let city_token = make_token(&softhsm, "bench-city");
    let nation_token = make_token(&softhsm, "bench-nation");
    let raw_token = make_token(&softhsm, "bench-raw");
    let bureau_card = make_token(&softhsm, "bench-bureau-card");
    let raw_bureau_card = make_token(&softhsm, "bench-raw-bureau-card");
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

    // Guangzhou's node: pin-unblock and pin-reload masters.
    let (city_dir, store) = node_dir(&city_token, "municipal", "440100");
    plant_known(
        &pkcs11,
        &city_token,
        &store,
        "440100",
        "pin-unblock",
        &gz_unblock,
    );
    plant_known(
        &pkcs11,
        &city_token,
        &store,
        "440100",
        "pin-reload",
        &gz_reload,
    );
    drop(store);

    // The ministry's node: card-master keys.
    let (nation_dir, store) = node_dir(&nation_token, "national", "000000");
    let masters: Vec<KeyId> = card_roots
        .iter()
        .map(|v| plant_known(&pkcs11, &nation_token, &store, "000000", "card-master", v))
        .collect();
    drop(store);

    // The baseline token: the same unblock master, and a province-level card-master.
    let raw_dir = tempfile::tempdir().expect("tempdir");
    let raw_store = Store::open(&raw_dir.path().join("registry.sqlite")).expect("store");
    let raw_unblock = plant_known(
        &pkcs11,
        &raw_token,
        &raw_store,
        "440100",
        "pin-unblock",
        &gz_unblock,
    )
    .ck_label();
    let gd_value = aes_child(&card_roots[0], "440000");
    let raw_parent = plant_known(
        &pkcs11,
        &raw_token,
        &raw_store,
        "440000",
        "card-master",
        &gd_value,
    )
    .ck_label();
    drop(raw_store);
    let hsm = Hsm::open(&HsmConfig {
        module: raw_token.module.clone(),
        locator: TokenLocator::by_label(&raw_token.label),
        pin: PinSource::File(raw_token.pin_file.clone()),
        sessions: BASELINE_SESSIONS,
        session_wait: Duration::from_secs(60),
    })
    .expect("open the baseline token");

    let city = start_node(city_dir, &city_token);
    let nation = start_node(nation_dir, &nation_token);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    // Known answers first: both sides make the same command, and the one the software model of
    // tests/card_services.rs expects.
    let apdu = rt.block_on(async {
        let mut window = CardServiceClient::new(city.channel_as(WINDOW).await);
        window
            .unblock_pin(card_request(0))
            .await
            .expect("UnblockPin")
            .into_inner()
            .apdu
    });
    assert_eq!(
        apdu,
        baseline_unblock(&hsm, &raw_unblock, 0).expect("in-process card_command"),
        "same APDU on both sides"
    );

    // The ministry derives every province from each master (setup, not timed).
    let provinces: Vec<(String, String)> = rt.block_on(async {
        let mut officer = nation.client().await;
        let mut out = Vec::new();
        for (m, master) in masters.iter().enumerate() {
            for p in PROVINCES {
                let region = format!("{p}0000");
                let key = officer
                    .derive_sub_key(proto::DeriveSubKeyRequest {
                        parent_id: master.to_string(),
                        region: region.clone(),
                    })
                    .await
                    .expect("derive a province")
                    .into_inner()
                    .key
                    .expect("key");
                assert_eq!(
                    key.kcv,
                    aes_kcv(&aes_child(&card_roots[m], &region)),
                    "province KCV"
                );
                out.push((key.id, p.to_string()));
            }
        }
        out
    });
    let baseline_kcv = baseline_derive(&hsm, &raw_parent, "440100").expect("in-process derive_key");
    assert_eq!(
        baseline_kcv.to_hex(),
        aes_kcv(&aes_child(&gd_value, "440100")),
        "baseline KCV"
    );
    // Distinct (province key, city) pairs, cities of all provinces interleaved.
    let items: Arc<Vec<(String, String)>> = Arc::new(
        (1..=CITIES)
            .flat_map(|yy| {
                provinces
                    .iter()
                    .map(move |(id, p)| (id.clone(), format!("{p}{yy:02}00")))
            })
            .collect(),
    );
    let needed: usize = LEVELS
        .iter()
        .chain([&1])
        .map(|c| {
            settings.derive_ops.div_ceil(settings.rounds) * settings.rounds
                + c * settings.warm_per_client
        })
        .sum();
    assert!(
        items.len() >= needed,
        "{} derivations, {needed} needed",
        items.len()
    );
    println!(
        "setup: 5 tokens (2 of them cards), 2 nodes, {} province keys, {} distinct city derivations available ({:.1} s)",
        provinces.len(),
        items.len(),
        started.elapsed().as_secs_f64()
    );

    // UnblockPin.
    let mut unblock_rows = Vec::new();
    let (mut next_card, mut next_card_baseline) = (1, 1_000_000);
    for &c in &LEVELS {
        let clients = rt.block_on(async {
            let mut clients = Vec::new();
            for _ in 0..c {
                clients.push(CardServiceClient::new(city.channel_as(WINDOW).await));
            }
            clients
        });
        let service_op = |mut client: CardServiceClient<Channel>, i: usize| async move {
            let outcome = match client.unblock_pin(card_request(i)).await {
                Ok(r) if r.get_ref().apdu.len() == 25 => Ok(()),
                Ok(r) => Err(format!("APDU of {} bytes", r.get_ref().apdu.len())),
                Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
            };
            (client, outcome)
        };
        let baseline_op = |i: usize| baseline_unblock(&hsm, &raw_unblock, i).map(|_| ());
        let (service, baseline) = measure_line(
            &rt,
            &settings,
            settings.unblock_ops,
            clients,
            service_op,
            &baseline_op,
            &mut next_card,
            &mut next_card_baseline,
        );
        unblock_rows.push(Row {
            label: c.to_string(),
            service,
            baseline,
        });
    }
    print_table(
        "UnblockPin",
        "gRPC/mTLS to `hkms serve` (municipal 440100): policy, card_command, audit record (fsync) before the reply",
        "in-process HSM: hkms::hsm::Hsm::card_command on a SoftHSM2 token (C_FindObjects, C_DeriveKey, 2x C_Encrypt, C_DestroyObject)",
        &unblock_rows,
        &[],
    );

    // DeriveSubKey. The last line repeats one client once the ministry's token has grown, with
    // the baseline on that same token.
    let mut derive_rows = Vec::new();
    let mut destroy_shares = Vec::new();
    let (mut next_item, mut next_baseline) = (0, 0);
    let derive_levels =
        LEVELS
            .iter()
            .map(|&c| (c, c.to_string(), false))
            .chain([(1, "1 grown".to_string(), true)]);
    let gd_key = &provinces
        .iter()
        .find(|(_, p)| p == "44")
        .expect("Guangdong")
        .0;
    let gd_label = KeyId::parse(gd_key).expect("key id").ck_label();
    let mut grown_keys = 0;
    for (c, label, grown) in derive_levels {
        let nation_hsm = grown.then(|| {
            grown_keys = provinces.len() + next_item;
            Hsm::open(&HsmConfig {
                module: nation_token.module.clone(),
                locator: TokenLocator::by_label(&nation_token.label),
                pin: PinSource::File(nation_token.pin_file.clone()),
                sessions: BASELINE_SESSIONS,
                session_wait: Duration::from_secs(60),
            })
            .expect("open the ministry's token in process")
        });
        let (baseline_hsm, baseline_parent) = match &nation_hsm {
            Some(h) => (h, &gd_label),
            None => (&hsm, &raw_parent),
        };
        let clients = rt.block_on(async {
            let mut clients = Vec::new();
            for _ in 0..c {
                clients.push(nation.client().await);
            }
            clients
        });
        let service_items = Arc::clone(&items);
        let service_op = move |mut client: KeyServiceClient<Channel>, i: usize| {
            let (parent_id, region) = service_items[i].clone();
            async move {
                let request = proto::DeriveSubKeyRequest { parent_id, region };
                let outcome = match client.derive_sub_key(request).await {
                    Ok(r) => match &r.get_ref().key {
                        Some(k) if k.tier == "municipal" => Ok(()),
                        other => Err(format!("unexpected answer {other:?}")),
                    },
                    Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
                };
                (client, outcome)
            }
        };
        // The baseline derives Guangdong's cities (01..70) again and again from one parent.
        let baseline_op = |i: usize| {
            let city = format!("44{:02}00", i % CITIES + 1);
            baseline_derive(baseline_hsm, baseline_parent, &city).map(|_| ())
        };
        DESTROY_NANOS.store(0, Ordering::Relaxed);
        let (service, baseline) = measure_line(
            &rt,
            &settings,
            settings.derive_ops,
            clients,
            service_op,
            &baseline_op,
            &mut next_item,
            &mut next_baseline,
        );
        let busy: f64 = baseline.latencies.iter().map(Duration::as_secs_f64).sum();
        destroy_shares.push(format!(
            "{:.0}%",
            DESTROY_NANOS.load(Ordering::Relaxed) as f64 / 1e9 / busy * 100.0
        ));
        derive_rows.push(Row {
            label,
            service,
            baseline,
        });
    }
    print_table(
        "DeriveSubKey",
        "gRPC/mTLS to `hkms serve` (national 000000), a city key from a province key: policy, C_DeriveKey + KCV, registry row + audit record in one fsync'd transaction",
        "in-process HSM: hkms::hsm::Hsm::derive_key (C_FindObjects, C_DeriveKey, C_Sign CMAC) + destroy_key (C_FindObjects, C_DestroyObject) so the baseline token stays small",
        &derive_rows,
        &[
            format!(
                "share of baseline time spent in destroy_key per line (warm-up included): {}",
                destroy_shares.join(", ")
            ),
            format!(
                "line `1 grown`: the ministry's token holds about {grown_keys} keys; its baseline \
                 runs in process on that same token (the node idle meanwhile), from Guangdong's key"
            ),
        ],
    );
    println!(
        "\nthe ministry's token now holds up to {} derived token keys (one per derivation, \
         fewer if some failed); the baseline token holds 2",
        provinces.len() + next_item
    );
    personalise_section(
        &rt,
        &settings,
        &city,
        &hsm,
        &raw_unblock,
        &raw_token,
        &bureau_card,
        &raw_bureau_card,
    );
    println!("load average at the end: {}", load_average());
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    drop(hsm);
    drop(city);
    drop(nation);
    drop(pkcs11);
}
