//! What a run measured and how the bench prints it: runs, their CPU figures, the tables, the
//! node's metrics, and the machine's description.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::Settings;
use crate::calls::{CARD_CALLS, DERIVE_CALLS, EXPORT_CALLS, NODE_EXTRA, UNBLOCK_CALLS};

/// What one operation gave: `Err` carries the failure's text.
pub type Outcome = Result<(), String>;

/// One timed run. Throughput and latencies count successful operations only; failures are
/// counted apart (with the first failure's text).
pub struct Run {
    pub ops: usize,
    pub errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// CPU time the bench process (clients, or the raw loop with SoftHSM2 in it) and the
    /// server process used meanwhile.
    pub cpu: CpuUse,
    /// For a service run of an RPC served in batches: the time the batches' thread spent
    /// meanwhile (node metrics).
    pub leader: Option<LeaderTime>,
}

/// Seconds a batch thread spent running use cases and writing their records.
#[derive(Debug, Default, Clone, Copy)]
pub struct LeaderTime {
    running: f64,
    recording: f64,
}

impl LeaderTime {
    /// The totals so far for `rpc`, from a node's metrics text; `None` when the node could not
    /// be read or has served no batch of `rpc` yet.
    pub fn scraped(text: &str, rpc: &str) -> Option<LeaderTime> {
        let with = format!("rpc=\"{rpc}\"");
        text.lines()
            .any(|l| l.starts_with("hkms_batch_run_seconds_sum") && l.contains(&with))
            .then(|| LeaderTime {
                running: metric_sum(text, "hkms_batch_run_seconds_sum", &with),
                recording: metric_sum(text, "hkms_batch_record_seconds_sum", &with),
            })
    }

    /// `self` plus the time between two readings.
    pub fn plus(self, before: LeaderTime, after: LeaderTime) -> LeaderTime {
        LeaderTime {
            running: self.running + after.running - before.running,
            recording: self.recording + after.recording - before.recording,
        }
    }
}

impl Run {
    pub fn from(elapsed: Duration, outcomes: Vec<(Duration, Outcome)>) -> Run {
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

    pub fn empty() -> Run {
        Run::from(Duration::ZERO, Vec::new())
    }

    /// Adds another run of the same line (its time adds up: the runs did not overlap).
    pub fn merge(&mut self, other: Run) {
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

    pub fn ops_per_s(&self) -> f64 {
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
pub struct CpuUse {
    bench: Duration,
    server: Duration,
}

impl CpuUse {
    /// CPU time so far of this process and of the server process `server`.
    pub fn now(server: u32) -> CpuUse {
        CpuUse {
            bench: cpu_clock(libc::CLOCK_PROCESS_CPUTIME_ID),
            server: server_cpu_clock(server).map_or(Duration::ZERO, cpu_clock),
        }
    }

    pub fn since(self, start: CpuUse) -> CpuUse {
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

/// One line of a table: the same concurrency on both sides.
pub struct Row {
    pub clients: usize,
    pub service: Run,
    pub raw: Run,
}

impl Row {
    fn ratio(&self) -> f64 {
        self.service.ops_per_s() / self.raw.ops_per_s()
    }
}

/// The best line of one operation, for the final summary.
pub struct Best {
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

/// One operation's table: its title, what the service side is, the raw loop's calls, a line
/// per concurrency level, CPU figures, `notes` and failures; returns its best line.
pub fn print_table(
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

/// One line of a floor table, beside the UnblockPin line `unblock` of the same concurrency.
pub fn print_floor_line(clients: usize, run: &Run, unblock: &Row) {
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
pub fn fsync_probe(dir: &std::path::Path) -> f64 {
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
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The machine: cores, CPU model and SoftHSM2's version.
pub fn machine() -> String {
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
pub fn server_time(before: &str, after: &str, rpc: &str) -> String {
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

/// The run's header: its size, the machine, and the PKCS#11 calls per operation.
pub fn print_header(settings: &Settings, quick: bool) {
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
}

/// The summary: the best line of each operation measured.
pub fn print_summary(bests: &[Best]) {
    println!();
    println!("== summary per operation (target: service >= 80% of raw at the best concurrency) ==");
    println!(
        "  {:<27} {:>13} {:>12} {:>12} {:>10}",
        "operation", "best line", "peak svc/s", "peak raw/s", "peak/peak"
    );
    for b in bests {
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
}
