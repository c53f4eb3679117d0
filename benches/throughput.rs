//! Throughput of the hkms service against a raw `cryptoki` loop making the same PKCS#11 calls,
//! on SoftHSM2.
//!
//! For UnblockPin, ExportKey (export of a key package), DeriveSubKey and PersonaliseCards, at
//! 1, 2, 4, 8 and 16 concurrent clients, this measures:
//!
//! - **service**: gRPC over mTLS to a real `hkms serve` process (one TLS connection per
//!   client), with policy checks and a durable (fsync'd) audit record per request before the
//!   reply;
//! - **raw**: a loop in this process on its own SoftHSM2 token, one PKCS#11 session per client
//!   thread (the user logged in once), making exactly the PKCS#11 calls the node makes for one
//!   request, in the same order, with the same templates, through `cryptoki` and, where cryptoki
//!   has no name for a mechanism or makes other calls than the node, through `cryptoki-sys` and
//!   the module's function list (module `raw` below). No gRPC, no TLS, no policy, no registry,
//!   no audit, no session pool, no locks.
//!
//! Each raw token holds what its node's token holds (the same keys, the audit-signing pair, the
//! same transport keys) and grows the same way (derived keys stay on both tokens). The calls
//! per operation are printed in the output's header. See docs/benchmarks.md.
//!
//! `cargo bench --bench throughput`; `HKMS_BENCH_QUICK=1` for a short run;
//! `HKMS_BENCH_CARDS=N` for the memory run (one PersonaliseCards stream of N cards, the server's
//! VmRSS sampled every second).

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "throughput/bare.rs"]
mod bare;

use std::future::Future;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use hkms::card::CardCommand;
use hkms::hierarchy::{Algorithm, Factor, KeyId, Usage};
use hkms::hsm::transport::CardToken;
use hkms::hsm::{Hsm, HsmConfig, Lifetime, PinSource, SecretKeySpec, TokenLocator};
use hkms::proto::{
    self, card_service_client::CardServiceClient, key_service_client::KeyServiceClient,
    transport_service_client::TransportServiceClient,
};
use hkms::store::{KeyRegistry, SqliteStore, TransportStore};
use hkms::transport::Package;
use support::{PlantSpot, TestNode, Token, aes_child, aes_kcv, make_token, node_config, slot_of};
use tonic::transport::Channel;

/// Concurrent clients (service) or threads with one session each (raw).
/// Concurrency levels of a sweep (`HKMS_BENCH_CLIENTS` picks some, e.g. `16` or `1,16`).
const LEVELS: [usize; 5] = [1, 2, 4, 8, 16];
/// The window that asks for PIN UNBLOCK commands at Guangzhou's node.
const WINDOW: &str = "hkms://window/municipal/440100/counter-1";
/// The city's card issuance system (PersonaliseCards).
const ISSUANCE: &str = "hkms://system/municipal/440100/card-issuance";
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
/// The card id of the raw city token's bureau transport key.
const RAW_BUREAU_CARD: &str = "card-440100-rawbaseline";
/// The card id of the raw national token's transport key for Guangdong.
const RAW_GD_CARD: &str = "card-440000-rawbaseline";

/// The PKCS#11 calls of one request, node and raw alike (read from `src/hsm/card.rs`,
/// `src/hsm/mod.rs` and `src/hsm/transport.rs`). "find X" is C_FindObjectsInit,
/// C_FindObjects and C_FindObjectsFinal with CKA_CLASS = CKO_SECRET_KEY and CKA_LABEL = X, made
/// only the first time X is used: node and raw loop both keep the handle (`src/hsm/handles.rs`).
const UNBLOCK_CALLS: &[&str] = &[
    "find the city's pin-unblock master (hkms/<id>)",
    "C_DeriveKey CKM_AES_ECB_ENCRYPT_DATA (serial D||~D) -> session card key, encrypt-only",
    "C_EncryptInit + C_Encrypt CKM_AES_ECB (PIN block)",
    "C_EncryptInit + C_Encrypt CKM_AES_CBC (IV from the challenge: the command MAC)",
    "C_DestroyObject (the card key)",
];
const EXPORT_CALLS: &[&str] = &[
    "find the transport key (hkms/transport/<card>)",
    "find the key (hkms/<id>)",
    "C_WrapKey RFC 5649 (the token's number: CKM_AES_KEY_WRAP_PAD 0x210A on SoftHSM2) twice: length, then bytes",
    "find the package MAC key (hkms/package-mac/<card>)",
    "C_SignInit + C_Sign CKM_AES_CMAC over the package's signed bytes (header JSON + wrapped key)",
];
const DERIVE_CALLS: &[&str] = &[
    "find the parent province key (hkms/<id>)",
    "C_DeriveKey CKM_AES_ECB_ENCRYPT_DATA (region D||~D) -> token key hkms/<new id> (the node's template: token, private, sensitive, exportable, derive-only); it stays on the token",
    "C_SignInit + C_Sign CKM_AES_CMAC over 16 zero bytes (KCV)",
    "only on CKR_GENERAL_ERROR: find by label + C_DestroyObject, then again (at most 3 attempts)",
];
const CARD_CALLS: &[&str] = &[
    "per card, for the pin-unblock master and then the pin-reload master:",
    "  find the master (hkms/<id>), find the bureau's transport key (hkms/transport/<card>)",
    "  C_DeriveKey CKM_AES_ECB_ENCRYPT_DATA (serial D||~D) -> exportable session card key",
    "  C_SignInit + C_Sign CKM_AES_CMAC (KCV)",
    "  C_WrapKey RFC 5649 twice (length, bytes) under the transport key",
    "  C_DestroyObject (the card key)",
    "  find the package MAC key, C_SignInit + C_Sign CKM_AES_CMAC over the package",
];
/// What the node does besides those calls (none of it in the raw loop).
const NODE_EXTRA: &str = "the node adds, outside PKCS#11: TLS, protobuf, identity and policy, \
registry reads (SQLite), the audit record (SQLite, synchronous=FULL) before the reply, and every \
1000 records a checkpoint (find the audit-signing private key + C_SignInit/C_Sign CKM_ECDSA), also \
every 60 s when records are few";

/// How long a run is.
#[derive(Debug, Clone, Copy)]
struct Settings {
    /// Timed UnblockPin operations per line and side.
    unblock_ops: usize,
    /// Timed ExportKey operations per line and side.
    export_ops: usize,
    /// Timed DeriveSubKey operations per line and side.
    derive_ops: usize,
    /// Timed PersonaliseCards cards per line and side.
    cards: usize,
    /// Alternations of raw and service per PersonaliseCards line (each service share is one
    /// stream per client, and every stream costs the node one more audit record: few rounds
    /// keep the streams long).
    card_rounds: usize,
    /// Untimed operations per client before each timed line.
    warm_per_client: usize,
    /// Each line alternates raw and service this many times, a share of the operations each
    /// time, so that a change of load on the machine hits both sides alike.
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
    /// CPU time the bench process (clients, or the raw loop with SoftHSM2 in it) and the
    /// server process used meanwhile.
    cpu: CpuUse,
    /// For a service run of an RPC served in batches: the time the batches' thread spent
    /// meanwhile (node metrics).
    leader: Option<LeaderTime>,
}

/// Seconds a batch thread spent running use cases and writing their records.
#[derive(Debug, Default, Clone, Copy)]
struct LeaderTime {
    running: f64,
    recording: f64,
}

impl LeaderTime {
    /// The totals so far for `rpc`, from a node's metrics text; `None` when the node could not
    /// be read or has served no batch of `rpc` yet.
    fn scraped(text: &str, rpc: &str) -> Option<LeaderTime> {
        let with = format!("rpc=\"{rpc}\"");
        text.lines()
            .any(|l| l.starts_with("hkms_batch_run_seconds_sum") && l.contains(&with))
            .then(|| LeaderTime {
                running: metric_sum(text, "hkms_batch_run_seconds_sum", &with),
                recording: metric_sum(text, "hkms_batch_record_seconds_sum", &with),
            })
    }

    /// `self` plus the time between two readings.
    fn plus(self, before: LeaderTime, after: LeaderTime) -> LeaderTime {
        LeaderTime {
            running: self.running + after.running - before.running,
            recording: self.recording + after.recording - before.recording,
        }
    }
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
            cpu: CpuUse::default(),
            leader: None,
        }
    }

    fn empty() -> Run {
        Run::from(Duration::ZERO, Vec::new())
    }

    /// Adds another run of the same line (its time adds up: the runs did not overlap).
    fn merge(&mut self, other: Run) {
        self.ops += other.ops;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.elapsed += other.elapsed;
        self.cpu.bench += other.cpu.bench;
        self.cpu.server += other.cpu.server;
        self.latencies.extend(other.latencies);
        self.latencies.sort();
    }

    /// CPU time `d` spread over the operations attempted, in µs per operation.
    fn us_per_op(&self, d: Duration) -> f64 {
        d.as_secs_f64() * 1e6 / (self.ops + self.errors).max(1) as f64
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

/// CPU time used by the two processes of a run.
#[derive(Debug, Default, Clone, Copy)]
struct CpuUse {
    bench: Duration,
    server: Duration,
}

impl CpuUse {
    /// CPU time so far of this process and of the server process `server`.
    fn now(server: u32) -> CpuUse {
        CpuUse {
            bench: cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID),
            server: server_cpu_clock(server).map_or(Duration::ZERO, cpu_clock),
        }
    }

    fn since(self, start: CpuUse) -> CpuUse {
        CpuUse {
            bench: self.bench.saturating_sub(start.bench),
            server: self.server.saturating_sub(start.server),
        }
    }
}

/// Another process's CPU-time clock (all its threads, user and system time).
fn server_cpu_clock(pid: u32) -> Option<libc::clockid_t> {
    let mut clock: libc::clockid_t = 0;
    // SAFETY: clock_getcpuclockid only writes the clock id into `clock`.
    let rv = unsafe { libc::clock_getcpuclockid(pid as libc::pid_t, &mut clock) };
    (rv == 0).then_some(clock)
}

fn cpu_clock(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes into `ts`.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
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

/// A raw operation: one request's PKCS#11 calls on the calling thread's session.
type RawOp<'a> = &'a (dyn Fn(&Session, usize) -> Outcome + Sync);

/// Runs `count` operations numbered `first..first + count` on `threads` threads, thread `k`
/// on session `k` of `sessions`; stops early at `cap`.
fn drive_raw(
    sessions: &mut Vec<Session>,
    threads: usize,
    first: usize,
    count: usize,
    cap: Duration,
    op: RawOp<'_>,
) -> Run {
    let next = AtomicUsize::new(first);
    let end = first + count;
    let mine: Vec<Session> = sessions.drain(..threads).collect();
    let start = Instant::now();
    let deadline = start + cap;
    let (back, all) = std::thread::scope(|s| {
        let workers: Vec<_> = mine
            .into_iter()
            .map(|session| {
                let next = &next;
                s.spawn(move || {
                    let mut outcomes = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= end || Instant::now() >= deadline {
                            break;
                        }
                        let t = Instant::now();
                        let outcome = op(&session, i);
                        outcomes.push((t.elapsed(), outcome));
                    }
                    (session, outcomes)
                })
            })
            .collect();
        let mut back = Vec::new();
        let mut all = Vec::new();
        for w in workers {
            let (session, outcomes) = w.join().expect("raw worker");
            back.push(session);
            all.extend(outcomes);
        }
        (back, all)
    });
    let run = Run::from(start.elapsed(), all);
    sessions.splice(0..0, back);
    run
}

/// One line of a table: the same concurrency on both sides.
struct Row {
    clients: usize,
    service: Run,
    raw: Run,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.service.ops_per_s() / self.raw.ops_per_s()
    }
}

/// The best line of one operation, for the final summary.
struct Best {
    operation: &'static str,
    ratio: f64,
    clients: usize,
    peak_service: f64,
    peak_raw: f64,
}

fn print_calls(title: &str, calls: &[&str]) {
    println!("  {title}:");
    for c in calls {
        println!("    - {c}");
    }
}

/// CPU per operation on each side, and how busy the machine's cores were: when both sides keep
/// every core busy, raw CPU ÷ service CPU is the ratio the service can reach at most.
fn print_cpu(rows: &[Row]) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let busy = |r: &Run| {
        100.0 * (r.cpu.bench + r.cpu.server).as_secs_f64()
            / (r.elapsed.as_secs_f64() * cores).max(f64::MIN_POSITIVE)
    };
    println!(
        "  CPU µs per operation (the server process; the bench process: clients, or the raw loop \
         with SoftHSM2), and the share of the {cores} cores both processes kept busy:"
    );
    println!(
        "  {:>7} | {:>7} {:>7} {:>7} {:>5} | {:>7} {:>5} | raw CPU ÷ svc CPU",
        "clients", "server", "client", "svc", "busy", "raw", "busy"
    );
    for r in rows {
        let server = r.service.us_per_op(r.service.cpu.server);
        let client = r.service.us_per_op(r.service.cpu.bench);
        let raw = r.raw.us_per_op(r.raw.cpu.bench + r.raw.cpu.server);
        println!(
            "  {:>7} | {:>7.0} {:>7.0} {:>7.0} {:>4.0}% | {:>7.0} {:>4.0}% | {:>5.1}%",
            r.clients,
            server,
            client,
            server + client,
            busy(&r.service),
            raw,
            busy(&r.raw),
            100.0 * raw / (server + client)
        );
    }
}

/// How busy the thread serving the batches was during each line's service shares.
fn print_leader(rows: &[Row]) {
    let lines: Vec<String> = rows
        .iter()
        .filter_map(|r| {
            let l = r.service.leader?;
            let wall = r.service.elapsed.as_secs_f64().max(1e-9);
            let served = (r.service.ops + r.service.errors).max(1) as f64;
            // A thread that did nothing but the use cases would serve this many per second.
            let ceiling = served / l.running.max(1e-9);
            Some(format!(
                "{} clients {:.0}% ({:.0}% + {:.0}%; {:.0} + {:.0} µs per request; use cases \
                 alone: {:.0} op/s, {:.0}% of raw)",
                r.clients,
                (l.running + l.recording) / wall * 100.0,
                l.running / wall * 100.0,
                l.recording / wall * 100.0,
                l.running / served * 1e6,
                l.recording / served * 1e6,
                ceiling,
                ceiling / r.raw.ops_per_s().max(1e-9) * 100.0
            ))
        })
        .collect();
    if !lines.is_empty() {
        println!(
            "  the batch thread (node metrics), busy share of the service's time (running use \
             cases + writing records), its time per request, and the most a thread running only \
             the use cases could serve:"
        );
        for line in lines {
            println!("    {line}");
        }
    }
}

fn print_table(
    operation: &'static str,
    service: &str,
    calls: &[&str],
    rows: &[Row],
    notes: &[String],
) -> Option<Best> {
    println!();
    println!("== {operation} ==");
    println!("  service: {service}");
    print_calls(
        "raw: one session per thread on the raw token, per operation",
        calls,
    );
    println!(
        "  {:>7} | {:>9} {:>8} {:>8} {:>5} | {:>9} {:>8} {:>8} {:>5} | {:>8}",
        "clients",
        "svc op/s",
        "p50 ms",
        "p99 ms",
        "err",
        "raw op/s",
        "p50 ms",
        "p99 ms",
        "err",
        "svc/raw"
    );
    println!("  {}", "-".repeat(100));
    for r in rows {
        println!(
            "  {:>7} | {:>9.0} {:>8.2} {:>8.2} {:>5} | {:>9.0} {:>8.2} {:>8.2} {:>5} | {:>7.1}%",
            r.clients,
            r.service.ops_per_s(),
            r.service.percentile_ms(0.50),
            r.service.percentile_ms(0.99),
            r.service.errors,
            r.raw.ops_per_s(),
            r.raw.percentile_ms(0.50),
            r.raw.percentile_ms(0.99),
            r.raw.errors,
            r.ratio() * 100.0,
        );
    }
    let ops: Vec<String> = rows
        .iter()
        .map(|r| format!("{}/{}", r.service.ops, r.raw.ops))
        .collect();
    println!(
        "  successful timed ops (service/raw) per line: {}",
        ops.join(", ")
    );
    print_cpu(rows);
    print_leader(rows);
    for note in notes {
        println!("  {note}");
    }
    let sides = [
        (
            "service",
            rows.iter().map(|r| &r.service).collect::<Vec<_>>(),
        ),
        ("raw", rows.iter().map(|r| &r.raw).collect()),
    ];
    for (side, runs) in sides {
        let errors: usize = runs.iter().map(|r| r.errors).sum();
        if let Some(e) = runs.iter().find_map(|r| r.first_error.as_ref()) {
            println!("  {side}: {errors} failed operations in all; first: {e}");
        }
    }
    let best = rows.iter().max_by(|a, b| a.ratio().total_cmp(&b.ratio()))?;
    let best = Best {
        operation,
        ratio: best.ratio(),
        clients: best.clients,
        peak_service: rows
            .iter()
            .map(|r| r.service.ops_per_s())
            .fold(0.0, f64::max),
        peak_raw: rows.iter().map(|r| r.raw.ops_per_s()).fold(0.0, f64::max),
    };
    println!(
        "  best ratio: {:.1}% (clients: {}); peak service {:.0} op/s vs peak raw {:.0} op/s ({:.1}%)",
        best.ratio * 100.0,
        best.clients,
        best.peak_service,
        best.peak_raw,
        best.peak_service / best.peak_raw * 100.0
    );
    Some(best)
}

/// One line of a sweep: `clients` clients on each side, a warm-up first, then `rounds`
/// alternations of a service share of `ops` operations and a raw share of as many operations
/// as the service share attempted (so that a share the time limit cut short does not let one
/// token grow faster than the other). Service operations take their numbers from `next` (each
/// number is used once); raw ones from `next_raw`. With `batched`, the node and RPC whose
/// batch thread's time to read around each service share.
#[allow(clippy::too_many_arguments)]
fn measure_line<C, F, Fut>(
    rt: &tokio::runtime::Runtime,
    settings: &Settings,
    server: u32,
    batched: Option<(&TestNode, &str)>,
    ops: usize,
    mut clients: Vec<C>,
    service_op: F,
    sessions: &mut Vec<Session>,
    raw_op: RawOp<'_>,
    next: &mut usize,
    next_raw: &mut usize,
) -> Row
where
    C: Send + 'static,
    F: Fn(C, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = (C, Outcome)> + Send + 'static,
{
    let c = clients.len();
    let share = ops.div_ceil(settings.rounds);
    let cap = settings.cap / settings.rounds as u32;
    let mut service = Run::empty();
    let mut raw = Run::empty();
    // The batch thread's time over the timed shares; `None` once a reading failed.
    let read_leader = |node: &TestNode, rpc: &str| LeaderTime::scraped(&scrape(node), rpc);
    let mut leader = batched.map(|_| LeaderTime::default());
    for round in 0..=settings.rounds {
        // Round 0 is the untimed warm-up.
        let (count, cap) = if round == 0 {
            (c * settings.warm_per_client, settings.cap)
        } else {
            (share, cap)
        };
        let before = batched
            .filter(|_| round > 0)
            .and_then(|(node, rpc)| read_leader(node, rpc));
        let cpu = CpuUse::now(server);
        let (mut run, back) = rt.block_on(drive_service(
            clients,
            *next,
            count,
            cap,
            service_op.clone(),
        ));
        run.cpu = CpuUse::now(server).since(cpu);
        if round > 0 {
            let after = batched.and_then(|(node, rpc)| read_leader(node, rpc));
            leader = leader
                .zip(before.zip(after))
                .map(|(sum, (b, a))| sum.plus(b, a));
        }
        clients = back;
        *next += count;
        let attempted = run.ops + run.errors;
        let cpu = CpuUse::now(server);
        let mut raw_run = drive_raw(sessions, c, *next_raw, attempted, cap, raw_op);
        raw_run.cpu = CpuUse::now(server).since(cpu);
        *next_raw += attempted;
        if round > 0 {
            service.merge(run);
            raw.merge(raw_run);
        }
    }
    service.leader = leader;
    Row {
        clients: c,
        service,
        raw,
    }
}

/// `count` clients (or channels), each made by `make` on its own connection.
fn connect<C, Fut: Future<Output = C>>(
    rt: &tokio::runtime::Runtime,
    count: usize,
    make: impl Fn() -> Fut,
) -> Vec<C> {
    rt.block_on(async {
        let mut clients = Vec::with_capacity(count);
        for _ in 0..count {
            clients.push(make().await);
        }
        clients
    })
}

/// A line of a floor table: warm-up, then `unblock_ops` calls of `op`, with the CPU used.
fn floor_line<C, F, Fut>(
    rt: &tokio::runtime::Runtime,
    settings: &Settings,
    server: u32,
    clients: Vec<C>,
    op: F,
) -> Run
where
    C: Clone + Send + 'static,
    F: Fn(C, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = (C, Outcome)> + Send + 'static,
{
    let warm = clients.len() * settings.warm_per_client;
    let _ = rt.block_on(drive_service(
        clients.clone(),
        0,
        warm,
        settings.cap,
        op.clone(),
    ));
    let cpu = CpuUse::now(server);
    let (mut run, _) = rt.block_on(drive_service(
        clients,
        0,
        settings.unblock_ops,
        settings.cap,
        op,
    ));
    run.cpu = CpuUse::now(server).since(cpu);
    run
}

fn print_floor_line(clients: usize, run: &Run, unblock: &Row) {
    println!(
        "  {clients:>7} | {:>6.0} {:>8.2} {:>8.2} | {:>22.0} {:>6.0} | {:.1}%{}",
        run.ops_per_s(),
        run.percentile_ms(0.5),
        run.percentile_ms(0.99),
        run.us_per_op(run.cpu.server),
        run.us_per_op(run.cpu.bench),
        100.0 * unblock.service.ops_per_s() / run.ops_per_s(),
        run.first_error
            .as_ref()
            .map(|e| format!(" ({} failed: {e})", run.errors))
            .unwrap_or_default()
    );
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

/// The PKCS#11 calls `cryptoki` either cannot express (`CKM_AES_ECB_ENCRYPT_DATA`) or makes
/// differently from the node (cryptoki's `sign` and `encrypt` first ask for the output length;
/// the node makes one call with a buffer large enough). Minimal: no pool, no checks beyond the
/// return value.
mod raw {
    use std::path::Path;

    use cryptoki::object::{Attribute, ObjectHandle};
    use cryptoki::session::Session;
    use cryptoki_sys::{
        CK_ATTRIBUTE, CK_FUNCTION_LIST, CK_KEY_DERIVATION_STRING_DATA, CK_MECHANISM,
        CK_MECHANISM_TYPE, CK_OBJECT_HANDLE, CK_RV, CK_ULONG, CKR_OK,
    };

    /// A failed call and its return value.
    #[derive(Debug)]
    pub struct Fail {
        pub call: &'static str,
        pub rv: CK_RV,
    }

    impl std::fmt::Display for Fail {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{} returned CKR {:#x}", self.call, self.rv)
        }
    }

    fn check(call: &'static str, rv: CK_RV) -> Result<(), Fail> {
        if rv == CKR_OK {
            Ok(())
        } else {
            Err(Fail { call, rv })
        }
    }

    /// The module's function list.
    pub struct Fns {
        // Keeps the library mapped while `list` is used.
        _lib: cryptoki_sys::Pkcs11,
        list: *const CK_FUNCTION_LIST,
    }

    // SAFETY: the function list is a static table of the loaded library, which `_lib` keeps
    // mapped, and is only read. The library was initialised with CKF_OS_LOCKING_OK, so its
    // functions may be called from any thread; each session is used by one thread at a time.
    unsafe impl Send for Fns {}
    // SAFETY: as above: shared references only read the table.
    unsafe impl Sync for Fns {}

    impl Fns {
        /// Takes another reference to a module this process has loaded and initialised.
        pub fn load(module: &Path) -> Fns {
            // SAFETY: the module is loaded and initialised already (through cryptoki); the
            // dynamic loader hands back the same library.
            let lib = unsafe { cryptoki_sys::Pkcs11::new(module) }.expect("load the module");
            let mut list: *mut CK_FUNCTION_LIST = std::ptr::null_mut();
            // SAFETY: C_GetFunctionList writes one pointer to the out-parameter.
            let rv = unsafe { lib.C_GetFunctionList(&mut list) };
            assert!(
                rv == CKR_OK && !list.is_null(),
                "C_GetFunctionList: {rv:#x}"
            );
            Fns { _lib: lib, list }
        }

        fn f(&self) -> &CK_FUNCTION_LIST {
            // SAFETY: non-null (checked in `load`), alive as long as `_lib`.
            unsafe { &*self.list }
        }

        /// `C_DeriveKey` with `CKM_AES_ECB_ENCRYPT_DATA` over one block.
        pub fn derive(
            &self,
            s: &Session,
            base: ObjectHandle,
            block: &[u8; 16],
            template: &[Attribute],
        ) -> Result<CK_OBJECT_HANDLE, Fail> {
            let f = self.f().C_DeriveKey.expect("C_DeriveKey");
            let mut data = *block;
            let mut params = CK_KEY_DERIVATION_STRING_DATA {
                pData: data.as_mut_ptr(),
                ulLen: data.len() as CK_ULONG,
            };
            let mut mech = CK_MECHANISM {
                mechanism: cryptoki_sys::CKM_AES_ECB_ENCRYPT_DATA,
                pParameter: (&mut params as *mut CK_KEY_DERIVATION_STRING_DATA).cast(),
                ulParameterLen: std::mem::size_of::<CK_KEY_DERIVATION_STRING_DATA>() as CK_ULONG,
            };
            let mut attrs: Vec<CK_ATTRIBUTE> = template.iter().map(CK_ATTRIBUTE::from).collect();
            let mut handle: CK_OBJECT_HANDLE = 0;
            // SAFETY: the mechanism, its parameter, the data and the template (whose values
            // borrow from `template`) outlive the call; `handle` receives one value.
            let rv = unsafe {
                f(
                    s.handle(),
                    &mut mech,
                    base.handle(),
                    attrs.as_mut_ptr(),
                    attrs.len() as CK_ULONG,
                    &mut handle,
                )
            };
            check("C_DeriveKey", rv)?;
            Ok(handle)
        }

        /// `C_SignInit` + one `C_Sign` with a parameterless mechanism (CMAC).
        pub fn sign(
            &self,
            s: &Session,
            mechanism: CK_MECHANISM_TYPE,
            key: CK_OBJECT_HANDLE,
            data: &[u8],
        ) -> Result<Vec<u8>, Fail> {
            let (init, sign) = (
                self.f().C_SignInit.expect("C_SignInit"),
                self.f().C_Sign.expect("C_Sign"),
            );
            let mut mech = CK_MECHANISM {
                mechanism,
                pParameter: std::ptr::null_mut(),
                ulParameterLen: 0,
            };
            // SAFETY: the mechanism has no parameter and outlives the call.
            check("C_SignInit", unsafe { init(s.handle(), &mut mech, key) })?;
            let mut input = data.to_vec();
            let mut out = vec![0u8; 64];
            let mut len = out.len() as CK_ULONG;
            // SAFETY: `input` and `out` outlive the call; `len` is `out`'s room (a CMAC fits).
            let rv = unsafe {
                sign(
                    s.handle(),
                    input.as_mut_ptr(),
                    input.len() as CK_ULONG,
                    out.as_mut_ptr(),
                    &mut len,
                )
            };
            check("C_Sign", rv)?;
            out.truncate(len as usize);
            Ok(out)
        }

        /// `C_EncryptInit` + one `C_Encrypt`, AES-ECB (no IV) or AES-CBC (IV), no padding.
        pub fn encrypt(
            &self,
            s: &Session,
            key: CK_OBJECT_HANDLE,
            iv: Option<&[u8; 16]>,
            data: &[u8],
        ) -> Result<Vec<u8>, Fail> {
            let (init, encrypt) = (
                self.f().C_EncryptInit.expect("C_EncryptInit"),
                self.f().C_Encrypt.expect("C_Encrypt"),
            );
            let mut iv = iv.copied();
            let mut mech = match iv.as_mut() {
                Some(iv) => CK_MECHANISM {
                    mechanism: cryptoki_sys::CKM_AES_CBC,
                    pParameter: iv.as_mut_ptr().cast(),
                    ulParameterLen: 16,
                },
                None => CK_MECHANISM {
                    mechanism: cryptoki_sys::CKM_AES_ECB,
                    pParameter: std::ptr::null_mut(),
                    ulParameterLen: 0,
                },
            };
            // SAFETY: the mechanism and its IV outlive the call.
            check("C_EncryptInit", unsafe { init(s.handle(), &mut mech, key) })?;
            let mut input = data.to_vec();
            let mut out = vec![0u8; data.len() + 16];
            let mut len = out.len() as CK_ULONG;
            // SAFETY: `input` and `out` outlive the call; `len` is `out`'s room.
            let rv = unsafe {
                encrypt(
                    s.handle(),
                    input.as_mut_ptr(),
                    input.len() as CK_ULONG,
                    out.as_mut_ptr(),
                    &mut len,
                )
            };
            check("C_Encrypt", rv)?;
            out.truncate(len as usize);
            Ok(out)
        }

        /// `C_WrapKey` with a parameterless mechanism: the length, then the bytes.
        pub fn wrap(
            &self,
            s: &Session,
            mechanism: CK_MECHANISM_TYPE,
            wrapping: ObjectHandle,
            key: CK_OBJECT_HANDLE,
        ) -> Result<Vec<u8>, Fail> {
            let f = self.f().C_WrapKey.expect("C_WrapKey");
            let mut mech = CK_MECHANISM {
                mechanism,
                pParameter: std::ptr::null_mut(),
                ulParameterLen: 0,
            };
            let mut len: CK_ULONG = 0;
            // SAFETY: a null output asks for the length only.
            let rv = unsafe {
                f(
                    s.handle(),
                    &mut mech,
                    wrapping.handle(),
                    key,
                    std::ptr::null_mut(),
                    &mut len,
                )
            };
            check("C_WrapKey", rv)?;
            let mut out = vec![0u8; len as usize];
            // SAFETY: `out` has the room the token asked for.
            let rv = unsafe {
                f(
                    s.handle(),
                    &mut mech,
                    wrapping.handle(),
                    key,
                    out.as_mut_ptr(),
                    &mut len,
                )
            };
            check("C_WrapKey", rv)?;
            out.truncate(len as usize);
            Ok(out)
        }

        /// `C_DestroyObject` of a handle `cryptoki` did not make.
        pub fn destroy(&self, s: &Session, object: CK_OBJECT_HANDLE) -> Result<(), Fail> {
            let f = self.f().C_DestroyObject.expect("C_DestroyObject");
            // SAFETY: plain handles.
            check("C_DestroyObject", unsafe { f(s.handle(), object) })
        }
    }
}

/// The raw side: the module's functions and the token's wrap mechanism.
struct Raw {
    fns: raw::Fns,
    wrap: cryptoki_sys::CK_MECHANISM_TYPE,
    /// Handles found by label, kept as the node keeps them (`src/hsm/handles.rs`): each key
    /// is searched once per process. Labels are unique across the two raw tokens.
    handles: std::sync::Mutex<std::collections::HashMap<String, ObjectHandle>>,
}

/// Derivations the raw loop retried after CKR_GENERAL_ERROR (the node retries the same way).
static RAW_RETRIES: AtomicUsize = AtomicUsize::new(0);

impl Raw {
    /// The handle of the secret key `label`: searched on first use, then remembered.
    fn find(&self, s: &Session, label: &str) -> Result<ObjectHandle, String> {
        if let Some(h) = self.handles.lock().expect("handles").get(label) {
            return Ok(*h);
        }
        let h = find(s, label)?;
        self.handles
            .lock()
            .expect("handles")
            .insert(label.to_string(), h);
        Ok(h)
    }
}

/// The one secret key with this label (CKA_CLASS + CKA_LABEL, as the node's `find_key`).
fn find(s: &Session, label: &str) -> Result<ObjectHandle, String> {
    let found = s
        .find_objects(&[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| format!("find {label}: {e}"))?;
    match found.as_slice() {
        [one] => Ok(*one),
        other => Err(format!("{} objects labelled {label}", other.len())),
    }
}

impl Raw {
    /// UnblockPin: the APDU for card `i` from the master `master`.
    fn unblock(&self, s: &Session, master: &str, i: usize) -> Result<Vec<u8>, String> {
        let (serial, challenge) = card_of(i);
        self.unblock_card(s, master, &serial, &challenge, PIN)
    }

    /// UnblockPin for one card: its serial, its challenge and the new PIN, as text.
    fn unblock_card(
        &self,
        s: &Session,
        master: &str,
        serial: &str,
        challenge: &str,
        pin: &str,
    ) -> Result<Vec<u8>, String> {
        let serial = Factor::from_card_serial(serial).map_err(|e| e.to_string())?;
        let challenge = hkms::card::parse_challenge(challenge).map_err(|e| e.to_string())?;
        let block = hkms::card::pin_block(pin);
        let master = self.find(s, master)?;
        let label = format!("hkms/card-key/{}", uuid::Uuid::new_v4().simple());
        let key = self
            .fns
            .derive(
                s,
                master,
                &serial.data_block(),
                &hkms::hsm::templates::card_key_template(&label, false),
            )
            .map_err(|e| e.to_string())?;
        let built = (|| -> Result<Vec<u8>, raw::Fail> {
            let encrypted: [u8; 16] = self
                .fns
                .encrypt(s, key, None, block.as_slice())?
                .try_into()
                .expect("one block");
            let cbc = self.fns.encrypt(
                s,
                key,
                Some(&hkms::card::mac_iv(&challenge)),
                &hkms::card::mac_input(CardCommand::Unblock, &encrypted),
            )?;
            let mac: [u8; hkms::card::MAC_LEN] = cbc[cbc.len() - 16..][..hkms::card::MAC_LEN]
                .try_into()
                .expect("MAC length");
            Ok(hkms::card::apdu(CardCommand::Unblock, &encrypted, &mac))
        })();
        let destroyed = self.fns.destroy(s, key);
        let apdu = built.map_err(|e| e.to_string())?;
        destroyed.map_err(|e| e.to_string())?;
        Ok(apdu)
    }

    /// DeriveSubKey: the child of `parent` for `region`, a token key that stays; its label and
    /// KCV.
    fn derive(&self, s: &Session, parent: &str, region: &str) -> Result<(String, [u8; 3]), String> {
        let region = hkms::hierarchy::Region::parse(region).map_err(|e| e.to_string())?;
        let block = Factor::from_region(&region).data_block();
        let parent = self.find(s, parent)?;
        let id = KeyId::new_random();
        let label = id.ck_label();
        let template = hkms::hsm::templates::secret_key_template(&SecretKeySpec {
            algorithm: Algorithm::Aes128,
            usage: Usage::Derive,
            exportable: true,
            label: label.clone(),
            id: id.ck_id(),
            lifetime: Lifetime::Token,
        });
        let mut attempt = 0;
        loop {
            attempt += 1;
            let made = self
                .fns
                .derive(s, parent, &block, &template)
                .and_then(|key| {
                    self.fns
                        .sign(s, cryptoki_sys::CKM_AES_CMAC, key, &[0u8; 16])
                        .inspect_err(|_| {
                            let _ = self.fns.destroy(s, key);
                        })
                });
            match made {
                Ok(mac) => return Ok((label, [mac[0], mac[1], mac[2]])),
                Err(e) if e.rv == cryptoki_sys::CKR_GENERAL_ERROR && attempt < 3 => {
                    RAW_RETRIES.fetch_add(1, Ordering::Relaxed);
                    if let Ok(found) =
                        s.find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
                    {
                        for o in found {
                            let _ = s.destroy_object(o);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5 * attempt));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    /// ExportKey: wraps `key` under the transport key of `card` and MACs header + wrapped key
    /// with the card's package MAC key; returns the wrapped key.
    fn export(&self, s: &Session, card: &str, key: &str, header: &[u8]) -> Result<Vec<u8>, String> {
        let transport = self.find(s, &hkms::hsm::transport::transport_label(card))?;
        let key = self.find(s, key)?;
        let wrapped = self
            .fns
            .wrap(s, self.wrap, transport, key.handle())
            .map_err(|e| e.to_string())?;
        self.package_mac(s, card, header, &wrapped)?;
        Ok(wrapped)
    }

    fn package_mac(
        &self,
        s: &Session,
        card: &str,
        header: &[u8],
        wrapped: &[u8],
    ) -> Result<Vec<u8>, String> {
        let signed = Package::signed_bytes(header, wrapped).map_err(|e| e.to_string())?;
        let mac_key = self.find(s, &hkms::hsm::transport::package_mac_label(card))?;
        self.fns
            .sign(s, cryptoki_sys::CKM_AES_CMAC, mac_key.handle(), &signed)
            .map_err(|e| e.to_string())
    }

    /// PersonaliseCards, one card: for each master, the card key wrapped for the bureau and
    /// its package MAC; returns the card keys' KCVs.
    fn personalise(
        &self,
        s: &Session,
        masters: &[String; 2],
        headers: &[Vec<u8>; 2],
        card: &str,
        serial: &str,
    ) -> Result<Vec<[u8; 3]>, String> {
        let factor = Factor::from_card_serial(serial).map_err(|e| e.to_string())?;
        let mut kcvs = Vec::new();
        for (master, header) in masters.iter().zip(headers) {
            let master = self.find(s, master)?;
            let transport = self.find(s, &hkms::hsm::transport::transport_label(card))?;
            let label = format!("hkms/card-export/{}", uuid::Uuid::new_v4().simple());
            let key = self
                .fns
                .derive(
                    s,
                    master,
                    &factor.data_block(),
                    &hkms::hsm::templates::card_key_template(&label, true),
                )
                .map_err(|e| e.to_string())?;
            let out = self
                .fns
                .sign(s, cryptoki_sys::CKM_AES_CMAC, key, &[0u8; 16])
                .and_then(|kcv| Ok((kcv, self.fns.wrap(s, self.wrap, transport, key)?)));
            let destroyed = self.fns.destroy(s, key);
            let (kcv, wrapped) = out.map_err(|e| e.to_string())?;
            destroyed.map_err(|e| e.to_string())?;
            self.package_mac(s, card, header, &wrapped)?;
            kcvs.push([kcv[0], kcv[1], kcv[2]]);
        }
        Ok(kcvs)
    }
}

/// `count` read-write sessions on a token, the user logged in once (on the first).
fn raw_sessions(pkcs11: &Pkcs11, token: &Token, count: usize) -> Vec<Session> {
    let slot = slot_of(pkcs11, &token.label);
    let sessions: Vec<Session> = (0..count)
        .map(|_| pkcs11.open_rw_session(slot).expect("open session"))
        .collect();
    sessions[0]
        .login(
            UserType::User,
            Some(&secrecy::SecretString::from(support::USER_PIN)),
        )
        .expect("log in");
    sessions
}

/// How many objects (of any class) the user sees on a token: a check that two tokens grew alike.
fn object_count(pkcs11: &Pkcs11, token: &Token) -> usize {
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
fn token_strays(
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

/// An in-process `Hsm` on a raw token for setup only (signing pair, transport keys): the same
/// objects the node makes on its token. Dropped before the raw sessions log in.
fn setup_hsm(token: &Token) -> Hsm {
    Hsm::open(&HsmConfig {
        module: token.module.clone(),
        locator: TokenLocator::by_label(&token.label),
        pin: PinSource::File(token.pin_file.clone()),
        sessions: 1,
        session_wait: Duration::from_secs(60),
    })
    .expect("open a raw token for setup")
}

/// Issues a transport key for `card_id` from a raw token onto `card` (setup).
fn raw_issue(hsm: &Hsm, card: &Token, card_id: &str) {
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
fn plant_known(
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
fn node_dir(token: &Token, tier: &str, region: &str) -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = SqliteStore::open(&dir.path().join("data/registry.sqlite")).expect("store");
    // Every bench node may issue cards (the city its bureau's, the ministry Guangdong's).
    let text = support::with_so_pin(node_config(region, tier, region, token), token);
    // Metrics on: the bench reads from them where the server's time goes.
    let text = text + "\n[metrics]\nlisten = \"127.0.0.1:0\"\n";
    std::fs::write(dir.path().join("node.toml"), text).expect("config");
    (dir, store)
}

/// The node's metrics text (`/metrics` on the loopback port it logged at start).
fn scrape(node: &TestNode) -> String {
    use std::io::{Read, Write};
    let log = node.log();
    let Some(addr) = log
        .find("metrics on http://")
        .map(|i| &log[i + "metrics on http://".len()..])
        .and_then(|rest| rest.split('/').next())
    else {
        return String::new();
    };
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

/// The sum of every sample named `name` whose labels contain `with`.
fn metric_sum(text: &str, name: &str, with: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = series.split_once('{').unwrap_or((series, ""));
            (n == name && labels.contains(with)).then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

/// Where the server's time went between two scrapes, for requests of `rpc`: its time per
/// request from the use case's start to the durable audit record, the PKCS#11 share of it,
/// requests per batch, and the group-commit batch size.
fn server_time(before: &str, after: &str, rpc: &str) -> String {
    let d = |name: &str, with: &str| metric_sum(after, name, with) - metric_sum(before, name, with);
    let with = format!("rpc=\"{rpc}\"");
    let count = d("hkms_request_duration_seconds_count", &with);
    if count < 1.0 {
        return "server time: no metrics".into();
    }
    let total = d("hkms_request_duration_seconds_sum", &with) / count * 1e3;
    let hsm = d("hkms_hsm_call_duration_seconds_sum", "") / count * 1e3;
    let batch = d("hkms_audit_writes_total", "") / d("hkms_audit_commits_total", "").max(1.0);
    let batched =
        d("hkms_batch_requests_sum", &with) / d("hkms_batch_requests_count", &with).max(1.0);
    format!(
        "server time per {rpc} (node metrics, whole sweep): {total:.2} ms from use case to durable record, \
         of which PKCS#11 calls {hsm:.2} ms; {batched:.1} requests per batch, {batch:.1} writes \
         per group commit; the rest of the client's latency is gRPC/TLS, queueing and the client \
         itself"
    )
}

fn start_node(dir: tempfile::TempDir, token: &Token) -> TestNode {
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
fn issue_card(rt: &tokio::runtime::Runtime, node: &TestNode, region: &str, card: &Token) -> String {
    rt.block_on(async {
        let done = node
            .ceremony("manage", &[("action", "issue-card"), ("region", region)])
            .await;
        TransportServiceClient::new(node.channel().await)
            .issue_card(proto::IssueCardRequest {
                region: region.into(),
                card_label: card.label.clone(),
                card_pin: support::USER_PIN.into(),
                ceremony_id: done.id,
            })
            .await
            .expect("issue card")
            .into_inner()
            .card_id
    })
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

/// One UnblockPin for card `i` through `client`, its APDU checked for length.
async fn unblock_call(
    mut client: CardServiceClient<Channel>,
    i: usize,
) -> (CardServiceClient<Channel>, Outcome) {
    let outcome = match client.unblock_pin(card_request(i)).await {
        Ok(r) if r.get_ref().apdu.len() == 25 => Ok(()),
        Ok(r) => Err(format!("APDU of {} bytes", r.get_ref().apdu.len())),
        Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
    };
    (client, outcome)
}

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

/// The serial of personalised card `i` (service and raw use different ranges).
fn personalise_serial(i: usize) -> String {
    format!("{:016X}", 0x7777_0000_0000_0000u64 + i as u64)
}

/// Sends `count` cards from `first` on one PersonaliseCards stream. The requests are made as
/// the stream pulls them and every answer is checked, counted and dropped, so the client holds
/// no more than the stream's buffers whatever `count` is. Returns (good cards, failed cards).
async fn stream_cards(
    channel: Channel,
    bureau: String,
    first: usize,
    count: usize,
    done: Arc<AtomicUsize>,
) -> (usize, usize) {
    use tokio_stream::StreamExt;
    let mut client = CardServiceClient::new(channel);
    let requests = (first..first + count).map(move |i| proto::PersonaliseRequest {
        bureau_card_id: bureau.clone(),
        card_serial: personalise_serial(i),
    });
    let mut answers = match client.personalise_cards(tokio_stream::iter(requests)).await {
        Ok(r) => r.into_inner(),
        Err(_) => return (0, count),
    };
    let (mut ok, mut failed) = (0, 0);
    while let Some(answer) = answers.next().await {
        match answer {
            Ok(a) if a.error.is_empty() && a.packages.len() == 2 => ok += 1,
            _ => failed += 1,
        }
        done.fetch_add(1, Ordering::Relaxed);
    }
    (ok, failed + count.saturating_sub(ok + failed))
}

/// `count` cards on `channels.len()` streams at once, split evenly; a `Run` whose latencies are
/// the stream average (cards are pipelined in a stream).
fn service_cards(
    rt: &tokio::runtime::Runtime,
    channels: &[Channel],
    bureau: &str,
    first: usize,
    count: usize,
) -> Run {
    let c = channels.len();
    let share = count / c;
    let start = Instant::now();
    let (ok, failed) = rt.block_on(async {
        let tasks: Vec<_> = channels
            .iter()
            .enumerate()
            .map(|(k, ch)| {
                tokio::spawn(stream_cards(
                    ch.clone(),
                    bureau.to_string(),
                    first + k * share,
                    share,
                    Arc::new(AtomicUsize::new(0)),
                ))
            })
            .collect();
        let mut total = (0, 0);
        for t in tasks {
            let (ok, failed) = t.await.expect("stream task");
            total = (total.0 + ok, total.1 + failed);
        }
        total
    });
    let elapsed = start.elapsed();
    let average = elapsed * c as u32 / ok.max(1) as u32;
    Run::from(
        elapsed,
        (0..ok)
            .map(|_| (average, Ok(())))
            .chain((0..failed).map(|_| (Duration::ZERO, Err("card failed".to_string()))))
            .collect(),
    )
}

/// The server process's resident set size in KiB.
fn vm_rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// `HKMS_BENCH_CARDS=N`: one PersonaliseCards stream of `n` cards against the city node, its
/// VmRSS sampled every second. No raw side.
fn memory_run(n: usize) {
    println!(
        "hkms memory run: one PersonaliseCards stream of {n} cards against the city node; the \
         server's VmRSS is sampled every second"
    );
    println!("machine: {}", machine());
    println!("load average at the start: {}", load_average());
    let tokens = tempfile::tempdir().expect("tempdir");
    let softhsm = tokens.path().join("softhsm");
    let city_token = make_token(&softhsm, "bench-city");
    let bureau_card = make_token(&softhsm, "bench-bureau-card");
    let pkcs11 = support::init_pkcs11(&city_token);
    let (city_dir, store) = node_dir(&city_token, "municipal", "440100");
    for (key_type, value) in [
        ("pin-unblock", "00112233445566778899AABBCCDDEEFF"),
        ("pin-reload", "FFEEDDCCBBAA99887766554433221100"),
    ] {
        let value = hex::decode(value).expect("hex");
        plant_known(&pkcs11, &city_token, &store, "440100", key_type, &value);
    }
    drop(store);
    let city = start_node(city_dir, &city_token);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let bureau = issue_card(&rt, &city, "440100", &bureau_card);
    let pid = city.pid().expect("server pid");
    let start_rss = vm_rss_kib(pid).unwrap_or(0);
    println!("server pid {pid}; VmRSS before the stream: {start_rss} KiB");

    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let sampler = {
        let (done, stop) = (Arc::clone(&done), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut peak = start_rss;
            let mut tick = 0u64;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                tick += 1;
                if let Some(rss) = vm_rss_kib(pid) {
                    peak = peak.max(rss);
                    if tick.is_multiple_of(10) {
                        let cards = done.load(Ordering::Relaxed);
                        println!(
                            "  {:>6} s: {cards} cards ({:.0} cards/s so far), VmRSS {rss} KiB, peak {peak} KiB",
                            tick,
                            cards as f64 / started.elapsed().as_secs_f64()
                        );
                    }
                }
            }
            peak
        })
    };
    let channel = rt.block_on(city.channel_as(ISSUANCE));
    let (ok, failed) = rt.block_on(stream_cards(channel, bureau, 0, n, Arc::clone(&done)));
    let elapsed = started.elapsed();
    // The stream's own batch record is written after its last card.
    std::thread::sleep(Duration::from_secs(1));
    let end_rss = vm_rss_kib(pid).unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().expect("sampler").max(end_rss);
    println!(
        "cards: {ok} good, {failed} failed in {:.1} s: {:.0} cards/s",
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64()
    );
    println!("server VmRSS: start {start_rss} KiB, peak {peak} KiB, end {end_rss} KiB");
    let size = |path: std::path::PathBuf| -> u64 {
        std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    println!(
        "on disk: the node's data folder (registry, WAL) {:.1} MiB, serve.log {:.1} MiB",
        size(city.dir.path().join("data")) as f64 / 1048576.0,
        std::fs::metadata(city.dir.path().join("serve.log")).map_or(0, |m| m.len()) as f64
            / 1048576.0
    );
    println!("load average at the end: {}", load_average());
    drop(city);
    drop(pkcs11);
}

/// The concurrency levels to sweep: `HKMS_BENCH_CLIENTS` (e.g. `16` or `1,4,16`), else all.
fn chosen_levels() -> Vec<usize> {
    let chosen: Vec<usize> = std::env::var("HKMS_BENCH_CLIENTS")
        .unwrap_or_default()
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .filter(|c| (1..=64).contains(c))
        .collect();
    if chosen.is_empty() {
        LEVELS.to_vec()
    } else {
        chosen
    }
}

fn main() {
    if let Some(n) = std::env::var("HKMS_BENCH_CARDS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        memory_run(n);
        return;
    }
    let quick = std::env::var("HKMS_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let levels = chosen_levels();
    let only = std::env::var("HKMS_BENCH_ONLY").unwrap_or_default();
    let wanted = |operation: &str| {
        only.is_empty()
            || only
                .split(',')
                .any(|o| o.trim().eq_ignore_ascii_case(operation))
    };
    // Longer shares for profiling (a share of the full run lasts about 0.1 s at 16 clients).
    let scale: usize = std::env::var("HKMS_BENCH_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| (1..=1000).contains(n))
        .unwrap_or(1);
    let settings = if quick {
        Settings {
            unblock_ops: 200,
            export_ops: 100,
            derive_ops: 40,
            cards: 128,
            card_rounds: 2,
            warm_per_client: 1,
            rounds: 2,
            cap: Duration::from_secs(2),
        }
    } else {
        Settings {
            unblock_ops: 2000 * scale,
            export_ops: 1000 * scale,
            derive_ops: 400,
            cards: 1000 * scale,
            card_rounds: 2,
            warm_per_client: 3,
            rounds: 4,
            cap: Duration::from_secs(12) * scale as u32,
        }
    };
    println!(
        "hkms throughput bench ({} run: timed ops per line and side: {} UnblockPin, {} ExportKey, \
         {} DeriveSubKey, {} PersonaliseCards cards; in {} alternating shares service/raw ({} for \
         cards) after {} warm-up ops per client; at most {:?} per line and side)",
        if quick { "quick" } else { "full" },
        settings.unblock_ops,
        settings.export_ops,
        settings.derive_ops,
        settings.cards,
        settings.rounds,
        settings.card_rounds,
        settings.warm_per_client,
        settings.cap
    );
    println!("machine: {}", machine());
    println!(
        "load average at the start: {} (other work on the machine skews every number)",
        load_average()
    );
    println!("PKCS#11 calls per operation, made by the node and by the raw loop alike:");
    for (name, calls) in [
        ("UnblockPin", UNBLOCK_CALLS),
        ("ExportKey", EXPORT_CALLS),
        ("DeriveSubKey", DERIVE_CALLS),
        ("PersonaliseCards", CARD_CALLS),
    ] {
        print_calls(name, calls);
    }
    println!("  ({NODE_EXTRA})");
    let started = Instant::now();

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
    let raw = Raw {
        fns: raw::Fns::load(&raw_city.module),
        wrap,
        handles: Default::default(),
    };
    let max_clients = *levels.iter().max().expect("levels");
    let mut city_sessions = raw_sessions(&pkcs11, &raw_city, max_clients);
    let mut nation_sessions = raw_sessions(&pkcs11, &raw_nation, max_clients);

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

    // Province keys: the ministry's node over gRPC, the raw loop on its twin (in the same order,
    // with the same calls), every KCV checked against software. Not timed.
    let provinces: Vec<(String, String)> = rt.block_on(async {
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
    });
    let mut raw_provinces: Vec<(String, String)> = Vec::new();
    for (m, master) in raw_masters.iter().enumerate() {
        for p in PROVINCES {
            let region = format!("{p}0000");
            let (label, kcv) = raw
                .derive(&nation_sessions[0], master, &region)
                .unwrap_or_else(|e| panic!("raw province {region}: {e}"));
            assert_eq!(
                hex::encode_upper(kcv),
                aes_kcv(&aes_child(&card_roots[m], &region)),
                "raw province KCV"
            );
            raw_provinces.push((label, p.to_string()));
        }
    }

    // Transport key cards: the city issues its bureau's, the ministry Guangdong's.
    let bureau = issue_card(&rt, &city, "440100", &bureau_card);
    let gd_card_id = issue_card(&rt, &nation, "440000", &gd_card);
    let gd_keys: Vec<String> = provinces
        .iter()
        .filter(|(_, p)| p == "44")
        .map(|(id, _)| id.clone())
        .collect();
    let raw_gd_keys: Vec<String> = raw_provinces
        .iter()
        .filter(|(_, p)| p == "44")
        .map(|(l, _)| l.clone())
        .collect();

    // Known answers: both sides make the same APDU (and the one tests/card_services.rs expects
    // from the software model), the same card-key KCVs, packages of the same shape.
    let apdu = rt.block_on(async {
        CardServiceClient::new(city.channel_as(WINDOW).await)
            .unblock_pin(card_request(0))
            .await
            .expect("UnblockPin")
            .into_inner()
            .apdu
    });
    assert_eq!(
        apdu,
        raw.unblock(&city_sessions[0], &raw_city_masters[0], 0)
            .expect("raw unblock"),
        "same APDU on both sides"
    );
    let export_package = rt.block_on(async {
        TransportServiceClient::new(nation.channel().await)
            .export_key(proto::ExportKeyRequest {
                key_id: gd_keys[0].clone(),
                recipient_region: "440000".into(),
                card_id: gd_card_id.clone(),
            })
            .await
            .expect("ExportKey")
            .into_inner()
            .package
    });
    let export_package = Package::decode(&export_package).expect("package");
    let export_header = export_package.header_bytes.clone();
    let raw_wrapped = raw
        .export(
            &nation_sessions[0],
            RAW_GD_CARD,
            &raw_gd_keys[0],
            &export_header,
        )
        .expect("raw export");
    assert_eq!(
        raw_wrapped.len(),
        export_package.wrapped.len(),
        "wrapped keys of one length"
    );
    let card_packages: Vec<Package> = rt.block_on(async {
        use tokio_stream::StreamExt;
        let mut answers = CardServiceClient::new(city.channel_as(ISSUANCE).await)
            .personalise_cards(tokio_stream::iter([proto::PersonaliseRequest {
                bureau_card_id: bureau.clone(),
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
    let card_headers: [Vec<u8>; 2] = [
        card_packages[0].header_bytes.clone(),
        card_packages[1].header_bytes.clone(),
    ];
    let raw_kcvs = raw
        .personalise(
            &city_sessions[0],
            &raw_city_masters,
            &card_headers,
            RAW_BUREAU_CARD,
            &personalise_serial(usize::MAX >> 20),
        )
        .expect("raw personalise");
    for (p, kcv) in card_packages.iter().zip(&raw_kcvs) {
        assert_eq!(p.header.kcv, hex::encode_upper(kcv), "card key KCV");
    }
    println!(
        "setup: 8 tokens (4 of them cards), 2 nodes, {} province keys on each national token, \
         known answers agree ({:.1} s)",
        provinces.len(),
        started.elapsed().as_secs_f64()
    );
    let mut bests = Vec::new();

    // UnblockPin.
    if wanted("UnblockPin") {
        let server_pid = city_pid;
        let scraped = scrape(&city);
        let mut rows = Vec::new();
        let (mut next, mut next_raw) = (1, 1_000_000);
        for &c in &levels {
            let clients = connect(&rt, c, || async {
                CardServiceClient::new(city.channel_as(WINDOW).await)
            });
            let raw_op =
                |s: &Session, i: usize| raw.unblock(s, &raw_city_masters[0], i).map(|_| ());
            rows.push(measure_line(
                &rt,
                &settings,
                server_pid,
                Some((&city, "UnblockPin")),
                settings.unblock_ops,
                clients,
                unblock_call,
                &mut city_sessions,
                &raw_op,
                &mut next,
                &mut next_raw,
            ));
        }
        bests.extend(print_table(
        "UnblockPin",
        "gRPC/mTLS to `hkms serve` (municipal 440100), clients hkms://window/...: policy, card_command, audit record (fsync) before the reply",
        UNBLOCK_CALLS,
        &rows,
        &[
            format!(
                "objects on the city's token / on its raw twin: {} / {}",
                object_count(&pkcs11, &city_token),
                object_count(&pkcs11, &raw_city)
            ),
            server_time(&scraped, &scrape(&city), "UnblockPin"),
        ],
    ));

        // The bare front-end: hkms's transport and the raw calls, nothing else between them.
        if wanted("UnblockPin-bare") {
            let bare_raw = Arc::new(Raw {
                fns: raw::Fns::load(&raw_city.module),
                wrap,
                handles: Default::default(),
            });
            let slot = slot_of(&pkcs11, &raw_city.label);
            let open = || pkcs11.open_rw_session(slot).expect("open session");
            let pki = city.dir.path().join("pki");
            let files = hkms::config::TlsFiles {
                cert: pki.join("server.pem"),
                key: pki.join("server.key"),
                client_ca: pki.join("ca.pem"),
                client_crl: None,
            };
            for mode in [
                bare::Mode::OneThread(open()),
                bare::Mode::PerRequest((0..max_clients).map(|_| open()).collect()),
            ] {
                let title = mode.title();
                let front = bare::start(
                    files.clone(),
                    Arc::clone(&bare_raw),
                    &raw_city_masters[0],
                    mode,
                );
                let url = format!("https://{}", front.addr);
                let mut bare_rows = Vec::new();
                for &c in &levels {
                    let clients = connect(&rt, c, || async {
                        let tls = support::client_tls(
                            &city.ca,
                            Some(WINDOW),
                            hkms::pki::Validity::days(1),
                        );
                        CardServiceClient::new(
                            Channel::from_shared(url.clone())
                                .expect("url")
                                .tls_config(tls)
                                .expect("tls")
                                .connect()
                                .await
                                .expect("connect to the bare front-end"),
                        )
                    });
                    let raw_op =
                        |s: &Session, i: usize| raw.unblock(s, &raw_city_masters[0], i).map(|_| ());
                    bare_rows.push(measure_line(
                        &rt,
                        &settings,
                        city_pid,
                        None,
                        settings.unblock_ops,
                        clients,
                        unblock_call,
                        &mut city_sessions,
                        &raw_op,
                        &mut next,
                        &mut next_raw,
                    ));
                }
                drop(front);
                bests.extend(print_table(
                    title,
                    "gRPC/mTLS as the node (hkms::server::tls), the raw calls behind it; no identity, policy, registry or audit",
                    UNBLOCK_CALLS,
                    &bare_rows,
                    &[],
                ));
            }
        }

        // The transport floor: the gRPC health check over the same kind of mTLS connection, with
        // no identity, policy, HSM or audit behind it. No request can be served faster than this on
        // this machine; it shows how much of the gap to raw is the gRPC/TLS round trip itself.
        println!("\n== gRPC/mTLS floor (grpc.health.v1.Health/Check on the city node) ==");
        println!(
            "  clients |  ops/s   p50 ms   p99 ms | CPU µs per call: server client | UnblockPin \
             svc as share of the floor"
        );
        for (row, &c) in rows.iter().zip(levels.iter()) {
            let clients = connect(&rt, c, || async {
                tonic_health::pb::health_client::HealthClient::new(city.channel_as(WINDOW).await)
            });
            let op = |mut client: tonic_health::pb::health_client::HealthClient<Channel>,
                      _: usize| async move {
                let outcome = client
                    .check(tonic_health::pb::HealthCheckRequest::default())
                    .await
                    .map(|_| ())
                    .map_err(|s| format!("{:?}", s.code()));
                (client, outcome)
            };
            let run = floor_line(&rt, &settings, city_pid, clients, op);
            print_floor_line(c, &run, row);
        }

        // The request path without PKCS#11: GetKey of a province key by the ministry's
        // officer (identity, policy, a registry read, the audit record and its commit).
        println!(
            "\n== hkms request path without PKCS#11 (KeyService/GetKey on the ministry's node) =="
        );
        println!(
            "  clients |  ops/s   p50 ms   p99 ms | CPU µs per call: server client | UnblockPin \
             svc as share of this"
        );
        for (row, &c) in rows.iter().zip(levels.iter()) {
            let clients = connect(&rt, c, || async { nation.client().await });
            let id = gd_keys[0].clone();
            let op = move |mut client: KeyServiceClient<Channel>, _: usize| {
                let request = proto::GetKeyRequest { id: id.clone() };
                async move {
                    let outcome = client
                        .get_key(request)
                        .await
                        .map(|_| ())
                        .map_err(|s| format!("{:?}: {}", s.code(), s.message()));
                    (client, outcome)
                }
            };
            let run = floor_line(&rt, &settings, nation_pid, clients, op);
            print_floor_line(c, &run, row);
        }
    }

    // ExportKey: Guangdong's two province keys in turn, for Guangdong, under its card.
    if wanted("ExportKey") {
        let server_pid = nation_pid;
        let scraped = scrape(&nation);
        let mut rows = Vec::new();
        let (mut next, mut next_raw) = (0, 0);
        for &c in &levels {
            let clients = connect(&rt, c, || async {
                TransportServiceClient::new(nation.channel().await)
            });
            let (keys, card) = (Arc::new(gd_keys.clone()), gd_card_id.clone());
            let service_op = move |mut client: TransportServiceClient<Channel>, i: usize| {
                let request = proto::ExportKeyRequest {
                    key_id: keys[i % keys.len()].clone(),
                    recipient_region: "440000".into(),
                    card_id: card.clone(),
                };
                async move {
                    let outcome = match client.export_key(request).await {
                        Ok(r) if !r.get_ref().package.is_empty() => Ok(()),
                        Ok(_) => Err("empty package".to_string()),
                        Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
                    };
                    (client, outcome)
                }
            };
            let raw_op = |s: &Session, i: usize| {
                raw.export(
                    s,
                    RAW_GD_CARD,
                    &raw_gd_keys[i % raw_gd_keys.len()],
                    &export_header,
                )
                .map(|_| ())
            };
            rows.push(measure_line(
                &rt,
                &settings,
                server_pid,
                Some((&nation, "ExportKey")),
                settings.export_ops,
                clients,
                service_op,
                &mut nation_sessions,
                &raw_op,
                &mut next,
                &mut next_raw,
            ));
        }
        bests.extend(print_table(
        "ExportKey",
        "gRPC/mTLS to `hkms serve` (national 000000), the ministry's officer: registry reads, policy, wrap + package MAC, audit record (fsync) before the reply",
        EXPORT_CALLS,
        &rows,
        &[
            format!(
                "objects on the ministry's token / on its raw twin: {} / {}",
                object_count(&pkcs11, &nation_token),
                object_count(&pkcs11, &raw_nation)
            ),
            server_time(&scraped, &scrape(&nation), "ExportKey"),
        ],
    ));
    }

    // DeriveSubKey: distinct (province key, city) pairs, cities of all provinces interleaved;
    if wanted("DeriveSubKey") {
        let server_pid = nation_pid;
        let scraped = scrape(&nation);
        // the raw loop makes the same pairs from its own province keys, in the same order.
        let interleave = |provinces: &[(String, String)]| -> Arc<Vec<(String, String)>> {
            Arc::new(
                (1..=CITIES)
                    .flat_map(|yy| {
                        provinces
                            .iter()
                            .map(move |(id, p)| (id.clone(), format!("{p}{yy:02}00")))
                    })
                    .collect(),
            )
        };
        let items = interleave(&provinces);
        let raw_items = interleave(&raw_provinces);
        let needed: usize = levels
            .iter()
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
        let before = (
            object_count(&pkcs11, &nation_token),
            object_count(&pkcs11, &raw_nation),
        );
        let mut rows = Vec::new();
        let (mut next, mut next_raw) = (0, 0);
        RAW_RETRIES.store(0, Ordering::Relaxed);
        for &c in &levels {
            let clients = connect(&rt, c, || async { nation.client().await });
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
            let raw_op = |s: &Session, i: usize| {
                let (parent, region) = &raw_items[i];
                raw.derive(s, parent, region).map(|_| ())
            };
            rows.push(measure_line(
                &rt,
                &settings,
                server_pid,
                None,
                settings.derive_ops,
                clients,
                service_op,
                &mut nation_sessions,
                &raw_op,
                &mut next,
                &mut next_raw,
            ));
        }
        let after = (
            object_count(&pkcs11, &nation_token),
            object_count(&pkcs11, &raw_nation),
        );
        let (unregistered, duplicated, other) =
            token_strays(&pkcs11, &nation_token, &nation.database());
        bests.extend(print_table(
        "DeriveSubKey",
        "gRPC/mTLS to `hkms serve` (national 000000), a city key from a province key: registry reads, policy, derive + KCV, registry row + audit record in one fsync'd transaction",
        DERIVE_CALLS,
        &rows,
        &[
            format!(
                "objects on the ministry's token / on its raw twin: {} / {} before the sweep, {} / {} after (derived keys stay on both)",
                before.0, before.1, after.0, after.1
            ),
            format!(
                "secret keys on the ministry's token: hkms labels without a registry row {:?}, \
                 labels on more than one key {:?}, keys with another label or none: {}",
                unregistered, duplicated, other
            ),
            server_time(&scraped, &scrape(&nation), "DeriveSubKey"),
            format!(
                "derivations retried after CKR_GENERAL_ERROR (warm-up included): node {}, raw {}",
                nation.log().matches("derivation failed in the token; retrying").count(),
                RAW_RETRIES.load(Ordering::Relaxed)
            ),
        ],
    ));
    }

    // PersonaliseCards: cards/s through c streams at once against c threads.
    if wanted("PersonaliseCards") {
        let scraped = scrape(&city);
        let mut rows = Vec::new();
        let (mut next, mut next_raw) = (0, 1usize << 40);
        let card_op = |s: &Session, i: usize| {
            raw.personalise(
                s,
                &raw_city_masters,
                &card_headers,
                RAW_BUREAU_CARD,
                &personalise_serial(i),
            )
            .map(|_| ())
        };
        for &c in &levels {
            let channels: Vec<Channel> =
                connect(&rt, c, || async { city.channel_as(ISSUANCE).await });
            let share = settings.cards.div_ceil(settings.card_rounds);
            let cap = settings.cap / settings.card_rounds as u32;
            let (mut service, mut raw_run) = (Run::empty(), Run::empty());
            for round in 0..=settings.card_rounds {
                // Round 0 is the untimed warm-up; then as in `measure_line`.
                let count = if round == 0 {
                    c * settings.warm_per_client
                } else {
                    share
                };
                let cpu = CpuUse::now(city_pid);
                let mut run = service_cards(&rt, &channels, &bureau, next, count);
                run.cpu = CpuUse::now(city_pid).since(cpu);
                next += count;
                let attempted = run.ops + run.errors;
                let cpu = CpuUse::now(city_pid);
                let mut r = drive_raw(&mut city_sessions, c, next_raw, attempted, cap, &card_op);
                r.cpu = CpuUse::now(city_pid).since(cpu);
                next_raw += attempted;
                if round > 0 {
                    service.merge(run);
                    raw_run.merge(r);
                }
            }
            rows.push(Row {
                clients: c,
                service,
                raw: raw_run,
            });
        }
        bests.extend(print_table(
        "PersonaliseCards (cards/s; two key packages per card)",
        "gRPC/mTLS to `hkms serve` (municipal 440100), one PersonaliseCards stream per client: per card registry reads, policy, 2 packages, one audit record (fsync)",
        CARD_CALLS,
        &rows,
        &[
            "service latencies are the stream's wall time per card (cards are pipelined), not per-card times; a share that does not split evenly over the streams sends fewer cards".to_string(),
            server_time(&scraped, &scrape(&city), "PersonaliseCards"),
        ],
    ));
    }

    println!();
    println!("== summary per operation (target: service >= 80% of raw at the best concurrency) ==");
    println!(
        "  {:<27} {:>13} {:>12} {:>12} {:>10}",
        "operation", "best line", "peak svc/s", "peak raw/s", "peak/peak"
    );
    for b in &bests {
        println!(
            "  {:<27} {:>6.1}% at {:>2} {:>12.0} {:>12.0} {:>9.1}%",
            b.operation.split(' ').next().unwrap_or(b.operation),
            b.ratio * 100.0,
            b.clients,
            b.peak_service,
            b.peak_raw,
            b.peak_service / b.peak_raw * 100.0
        );
    }
    println!(
        "  (best line: the highest svc/raw of one line, at that many clients; peak/peak: the \
         service's best line against the raw loop's best line, whatever their concurrency)"
    );
    if bests
        .iter()
        .any(|b| b.operation.starts_with("UnblockPin-bare"))
    {
        println!(
            "  (UnblockPin-bare-*: not hkms but the ceiling for it, the same PKCS#11 calls behind \
             the same gRPC/mTLS with nothing else)"
        );
    }
    println!("load average at the end: {}", load_average());
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    drop(city_sessions);
    drop(nation_sessions);
    drop(city);
    drop(nation);
    drop(pkcs11);
}
