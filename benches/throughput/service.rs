//! The service side: clients of the hkms server over gRPC/mTLS, the loops that drive them, the
//! requests of each operation, and the node's metrics.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hkms::proto::{
    self, card_service_client::CardServiceClient, key_service_client::KeyServiceClient,
};
use tonic::transport::Channel;
use tonic_health::pb::health_client::HealthClient;

use crate::report::{CpuUse, Outcome, Row, Run, print_floor_line};
use crate::setup::{Bench, card_request};
use crate::{Settings, Sweep, WINDOW, personalise_serial};

/// Runs `count` operations numbered `first..first + count` on tokio tasks, one per client,
/// each task handing its client to `op` and getting it back; stops early at `cap`.
pub async fn drive_service<C, F, Fut>(
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

/// `count` clients (or channels), each made by `make` on its own connection.
pub fn connect<C, Fut: Future<Output = C>>(
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
pub fn floor_line<C, F, Fut>(
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

/// The node's metrics text.
pub use crate::support::scrape;

/// One UnblockPin for card `i` through `client`, its APDU checked for length.
pub async fn unblock_call(
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

/// Sends `count` cards from `first` on one PersonaliseCards stream. The requests are made as
/// the stream pulls them and every answer is checked, counted and dropped, so the client holds
/// no more than the stream's buffers whatever `count` is. Returns (good cards, failed cards).
pub async fn stream_cards(
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
pub fn service_cards(
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

/// The transport floor: the gRPC health check over the same kind of mTLS connection, with no
/// identity, policy, HSM or audit behind it. No request can be served faster than this on this
/// machine; it shows how much of the gap to raw is the gRPC/TLS round trip itself.
pub fn transport_floor(b: &Bench, sweep: &Sweep, unblock_rows: &[Row]) {
    println!("\n== gRPC/mTLS floor (grpc.health.v1.Health/Check on the city node) ==");
    println!(
        "  clients |  ops/s   p50 ms   p99 ms | CPU µs per call: server client | UnblockPin \
         svc as share of the floor"
    );
    for (row, &c) in unblock_rows.iter().zip(sweep.levels.iter()) {
        let clients = connect(&b.rt, c, || async {
            HealthClient::new(b.city.channel_as(WINDOW).await)
        });
        let op = |mut client: HealthClient<Channel>, _: usize| async move {
            let outcome = client
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .map(|_| ())
                .map_err(|s| format!("{:?}", s.code()));
            (client, outcome)
        };
        let run = floor_line(&b.rt, &sweep.settings, b.city_pid, clients, op);
        print_floor_line(c, &run, row);
    }
}

/// The request path without PKCS#11: GetKey of a province key by the ministry's officer
/// (identity, policy, a registry read, the audit record and its commit).
pub fn request_path_floor(b: &Bench, sweep: &Sweep, unblock_rows: &[Row]) {
    println!(
        "\n== hkms request path without PKCS#11 (KeyService/GetKey on the ministry's node) =="
    );
    println!(
        "  clients |  ops/s   p50 ms   p99 ms | CPU µs per call: server client | UnblockPin \
         svc as share of this"
    );
    for (row, &c) in unblock_rows.iter().zip(sweep.levels.iter()) {
        let clients = connect(&b.rt, c, || async { b.nation.client().await });
        let id = b.gd_keys[0].clone();
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
        let run = floor_line(&b.rt, &sweep.settings, b.nation_pid, clients, op);
        print_floor_line(c, &run, row);
    }
}
