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
//!   has no name for a mechanism or makes other calls than the node, through the node's own
//!   `hkms::hsm::raw::RawModule` (`cryptoki-sys` and the module's function list). No gRPC, no
//!   TLS, no policy, no registry, no audit, no session pool, no locks.
//!
//! Each raw token holds what its node's token holds (the same keys, the audit-signing pair, the
//! same transport keys) and grows the same way (derived keys stay on both tokens). The calls
//! per operation are printed in the output's header. See docs/benchmarks.md.
//!
//! This file holds the settings, the sweep and the lines to measure; `setup.rs` makes the
//! tokens and nodes, `service.rs` drives the server over gRPC, `raw.rs` is the raw loop,
//! `bare.rs` the bare front-end, `report.rs` prints, `memory.rs` is the memory run.
//!
//! `cargo bench --bench throughput`; `HKMS_BENCH_QUICK=1` for a short run;
//! `HKMS_BENCH_CARDS=N` for the memory run (one PersonaliseCards stream of N cards, the server's
//! VmRSS sampled every second).

#[path = "../../tests/support/mod.rs"]
mod support;

/// The server's allocator (src/main.rs), so the bare front-end and the raw loop pay for the
/// wipe on free as the node does.
#[global_allocator]
static ALLOCATOR: hkms::wiping_alloc::WipeOnFree<mimalloc::MiMalloc> =
    hkms::wiping_alloc::WipeOnFree(mimalloc::MiMalloc);

mod bare;
mod calls;
mod memory;
mod raw;
mod report;
mod service;
mod setup;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptoki::session::Session;
use hkms::proto::{
    self, card_service_client::CardServiceClient, key_service_client::KeyServiceClient,
    transport_service_client::TransportServiceClient,
};
use tonic::transport::Channel;

use calls::{CARD_CALLS, DERIVE_CALLS, EXPORT_CALLS, UNBLOCK_CALLS};
use raw::{Raw, RawOp, drive_raw};
use report::{Best, CpuUse, LeaderTime, Outcome, Row, Run, print_table};
use service::{
    connect, drive_service, request_path_floor, scrape, service_cards, transport_floor,
    unblock_call,
};
use setup::{Bench, RAW_BUREAU_CARD, RAW_GD_CARD, object_count, token_strays};
use support::TestNode;

/// Concurrent clients (service) or threads with one session each (raw).
/// Concurrency levels of a sweep (`HKMS_BENCH_CLIENTS` picks some, e.g. `16` or `1,16`).
const LEVELS: [usize; 5] = [1, 2, 4, 8, 16];
/// The window that asks for PIN UNBLOCK commands at Guangzhou's node.
const WINDOW: &str = "hkms://window/municipal/440100/counter-1";
/// The city's card issuance system (PersonaliseCards).
const ISSUANCE: &str = "hkms://system/municipal/440100/card-issuance";
/// City codes XXYY00 used per province: YY = 01..=CITIES.
const CITIES: usize = 70;
/// The new PIN of every UnblockPin.
const PIN: &str = "246810";

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

impl Settings {
    /// The quick run (`quick`) or the full run, its shares longer by `HKMS_BENCH_SCALE`.
    fn from_env(quick: bool) -> Settings {
        // Longer shares for profiling (a share of the full run lasts about 0.1 s at 16 clients).
        let scale: usize = std::env::var("HKMS_BENCH_SCALE")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| (1..=1000).contains(n))
            .unwrap_or(1);
        if quick {
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
        }
    }
}

/// What every line of a run shares: its settings and its concurrency levels.
struct Sweep {
    settings: Settings,
    levels: Vec<usize>,
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
        memory::run(n);
        return;
    }
    let quick = std::env::var("HKMS_BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let only = std::env::var("HKMS_BENCH_ONLY").unwrap_or_default();
    let wanted = |operation: &str| {
        only.is_empty()
            || only
                .split(',')
                .any(|o| o.trim().eq_ignore_ascii_case(operation))
    };
    let sweep = Sweep {
        settings: Settings::from_env(quick),
        levels: chosen_levels(),
    };
    report::print_header(&sweep.settings, quick);
    let started = Instant::now();
    let max_clients = *sweep.levels.iter().max().expect("levels");
    let mut b = Bench::set_up(max_clients, started);

    let mut bests = Vec::new();
    if wanted("UnblockPin") {
        // The bare front-ends go on numbering UnblockPin's operations on both sides.
        let mut numbers = (1, 1_000_000);
        let (rows, best) = unblock_pin(&mut b, &sweep, &mut numbers);
        bests.extend(best);
        if wanted("UnblockPin-bare") {
            bests.extend(bare::lines(&mut b, &sweep, &mut numbers));
        }
        transport_floor(&b, &sweep, &rows);
        request_path_floor(&b, &sweep, &rows);
    }
    if wanted("ExportKey") {
        bests.extend(export_key(&mut b, &sweep));
    }
    if wanted("DeriveSubKey") {
        bests.extend(derive_sub_key(&mut b, &sweep));
    }
    if wanted("PersonaliseCards") {
        bests.extend(personalise_cards(&mut b, &sweep));
    }

    report::print_summary(&bests);
    println!("load average at the end: {}", report::load_average());
    println!("total time {:.1} s", started.elapsed().as_secs_f64());
    // Sessions, then the nodes, the module and the token folders (`Bench`'s field order).
    drop(b);
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

/// The serial of personalised card `i` (service and raw use different ranges).
fn personalise_serial(i: usize) -> String {
    format!("{:016X}", 0x7777_0000_0000_0000u64 + i as u64)
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

/// UnblockPin at Guangzhou's node against the raw loop on its twin, operations numbered from
/// `numbers` (service, raw); returns the rows (the floors compare with them) and the best line.
fn unblock_pin(
    b: &mut Bench,
    sweep: &Sweep,
    numbers: &mut (usize, usize),
) -> (Vec<Row>, Option<Best>) {
    let scraped = scrape(&b.city);
    let mut rows = Vec::new();
    let (next, next_raw) = numbers;
    for &c in &sweep.levels {
        let clients = connect(&b.rt, c, || async {
            CardServiceClient::new(b.city.channel_as(WINDOW).await)
        });
        let raw_op =
            |s: &Session, i: usize| b.raw.unblock(s, &b.raw_city_masters[0], i).map(|_| ());
        rows.push(measure_line(
            &b.rt,
            &sweep.settings,
            b.city_pid,
            Some((&b.city, "UnblockPin")),
            sweep.settings.unblock_ops,
            clients,
            unblock_call,
            &mut b.city_sessions,
            &raw_op,
            next,
            next_raw,
        ));
    }
    let best = print_table(
        "UnblockPin",
        "gRPC/mTLS to `hkms serve` (municipal 440100), clients hkms://window/...: policy, card_command, audit record (fsync) before the reply",
        UNBLOCK_CALLS,
        &rows,
        &[
            format!(
                "objects on the city's token / on its raw twin: {} / {}",
                object_count(&b.pkcs11, &b.city_token),
                object_count(&b.pkcs11, &b.raw_city)
            ),
            server_time_since(&scraped, &b.city, "UnblockPin"),
        ],
    );
    (rows, best)
}

/// The node's time per `rpc` request between `scraped` and now.
fn server_time_since(scraped: &str, node: &TestNode, rpc: &str) -> String {
    report::server_time(scraped, &scrape(node), rpc)
}

/// ExportKey: Guangdong's two province keys in turn, for Guangdong, under its card.
fn export_key(b: &mut Bench, sweep: &Sweep) -> Option<Best> {
    let scraped = scrape(&b.nation);
    let mut rows = Vec::new();
    let (mut next, mut next_raw) = (0, 0);
    for &c in &sweep.levels {
        let clients = connect(&b.rt, c, || async {
            TransportServiceClient::new(b.nation.channel().await)
        });
        let (keys, card) = (Arc::new(b.gd_keys.clone()), b.gd_card_id.clone());
        let service_op = move |mut client: TransportServiceClient<Channel>, i: usize| {
            let request = proto::ExportKeyRequest {
                key_id: keys[i % keys.len()].clone(),
                recipient_region: "440000".into(),
                card_id: card.clone(),
                ..Default::default()
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
        let raw_keys = &b.raw_gd_keys;
        let raw_op = |s: &Session, i: usize| {
            b.raw
                .export(
                    s,
                    RAW_GD_CARD,
                    &raw_keys[i % raw_keys.len()],
                    &b.export_header,
                )
                .map(|_| ())
        };
        rows.push(measure_line(
            &b.rt,
            &sweep.settings,
            b.nation_pid,
            Some((&b.nation, "ExportKey")),
            sweep.settings.export_ops,
            clients,
            service_op,
            &mut b.nation_sessions,
            &raw_op,
            &mut next,
            &mut next_raw,
        ));
    }
    print_table(
        "ExportKey",
        "gRPC/mTLS to `hkms serve` (national 000000), the ministry's officer: registry reads, policy, wrap + package MAC, audit record (fsync) before the reply",
        EXPORT_CALLS,
        &rows,
        &[
            format!(
                "objects on the ministry's token / on its raw twin: {} / {}",
                object_count(&b.pkcs11, &b.nation_token),
                object_count(&b.pkcs11, &b.raw_nation)
            ),
            server_time_since(&scraped, &b.nation, "ExportKey"),
        ],
    )
}

/// DeriveSubKey: distinct (province key, city) pairs, cities of all provinces interleaved; the
/// raw loop makes the same pairs from its own province keys, in the same order.
fn derive_sub_key(b: &mut Bench, sweep: &Sweep) -> Option<Best> {
    let settings = &sweep.settings;
    let scraped = scrape(&b.nation);
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
    let items = interleave(&b.provinces);
    let raw_items = interleave(&b.raw_provinces);
    let needed: usize = sweep
        .levels
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
    let objects = |b: &Bench| {
        (
            object_count(&b.pkcs11, &b.nation_token),
            object_count(&b.pkcs11, &b.raw_nation),
        )
    };
    let before = objects(b);
    let mut rows = Vec::new();
    let (mut next, mut next_raw) = (0, 0);
    Raw::reset_retries();
    for &c in &sweep.levels {
        let clients = connect(&b.rt, c, || async { b.nation.client().await });
        let service_items = Arc::clone(&items);
        let service_op = move |mut client: KeyServiceClient<Channel>, i: usize| {
            let (parent_id, region) = service_items[i].clone();
            async move {
                let request = proto::DeriveSubKeyRequest {
                    parent_id,
                    region,
                    ..Default::default()
                };
                let outcome = match client.derive_sub_key(request).await {
                    Ok(r) => match &r.get_ref().key {
                        Some(k) if k.tier() == proto::Tier::Municipal => Ok(()),
                        other => Err(format!("unexpected answer {other:?}")),
                    },
                    Err(s) => Err(format!("{:?}: {}", s.code(), s.message())),
                };
                (client, outcome)
            }
        };
        let raw_op = |s: &Session, i: usize| {
            let (parent, region) = &raw_items[i];
            b.raw.derive(s, parent, region).map(|_| ())
        };
        rows.push(measure_line(
            &b.rt,
            settings,
            b.nation_pid,
            None,
            settings.derive_ops,
            clients,
            service_op,
            &mut b.nation_sessions,
            &raw_op,
            &mut next,
            &mut next_raw,
        ));
    }
    let after = objects(b);
    let (unregistered, duplicated, other) =
        token_strays(&b.pkcs11, &b.nation_token, &b.nation.database());
    print_table(
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
            server_time_since(&scraped, &b.nation, "DeriveSubKey"),
            format!(
                "derivations retried after CKR_GENERAL_ERROR (warm-up included): node {}, raw {}",
                b.nation
                    .log()
                    .matches("derivation failed in the token; retrying")
                    .count(),
                Raw::retries()
            ),
        ],
    )
}

/// PersonaliseCards: cards/s through c streams at once against c threads.
fn personalise_cards(b: &mut Bench, sweep: &Sweep) -> Option<Best> {
    let settings = &sweep.settings;
    let scraped = scrape(&b.city);
    let mut rows = Vec::new();
    let (mut next, mut next_raw) = (0, 1usize << 40);
    let card_op = |s: &Session, i: usize| {
        b.raw
            .personalise(
                s,
                &b.raw_city_masters,
                &b.card_headers,
                RAW_BUREAU_CARD,
                &personalise_serial(i),
            )
            .map(|_| ())
    };
    for &c in &sweep.levels {
        let channels: Vec<Channel> =
            connect(&b.rt, c, || async { b.city.channel_as(ISSUANCE).await });
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
            let cpu = CpuUse::now(b.city_pid);
            let mut run = service_cards(&b.rt, &channels, &b.bureau, next, count);
            run.cpu = CpuUse::now(b.city_pid).since(cpu);
            next += count;
            let attempted = run.ops + run.errors;
            let cpu = CpuUse::now(b.city_pid);
            let mut r = drive_raw(&mut b.city_sessions, c, next_raw, attempted, cap, &card_op);
            r.cpu = CpuUse::now(b.city_pid).since(cpu);
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
    print_table(
        "PersonaliseCards (cards/s; two key packages per card)",
        "gRPC/mTLS to `hkms serve` (municipal 440100), one PersonaliseCards stream per client: per card registry reads, policy, 2 packages, one audit record (fsync)",
        CARD_CALLS,
        &rows,
        &[
            "service latencies are the stream's wall time per card (cards are pipelined), not per-card times; a share that does not split evenly over the streams sends fewer cards".to_string(),
            server_time_since(&scraped, &b.city, "PersonaliseCards"),
        ],
    )
}
