//! Prometheus metrics, on their own plain-HTTP port that only loopback may use: requests by
//! RPC and status, their latency, HSM call latency by call and mechanism, session pool use,
//! the audit queue, policy denials and card command limit refusals. Names and labels are in
//! `docs/operations.md`.
//!
//! The rest of the code records through the `metrics` facade; without a recorder installed
//! (tests, CLI) those calls cost next to nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::node::Node;
use crate::server::ServeError;

/// Latency buckets in seconds: 100 µs to 10 s.
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Requests per batch: 1 to 32.
const BATCH_BUCKETS: [f64; 6] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0];

/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

/// Installs the process-wide recorder; its handle renders the text format.
pub(crate) fn install() -> Result<PrometheusHandle, ServeError> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
        .map_err(|e| ServeError::Metrics(e.to_string()))?
        .set_buckets_for_metric(Matcher::Full("hkms_batch_requests".into()), &BATCH_BUCKETS)
        .map_err(|e| ServeError::Metrics(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|_| ServeError::Metrics("a metrics recorder is already installed".into()))?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "hkms_requests_total",
        "Requests answered, by RPC and gRPC status code"
    );
    describe_histogram!(
        "hkms_request_duration_seconds",
        Unit::Seconds,
        "Time from a request's arrival to its durable audit record, by RPC"
    );
    describe_counter!(
        "hkms_policy_denials_total",
        "Requests the policy refused, by RPC"
    );
    describe_counter!(
        "hkms_card_limit_refusals_total",
        "Card commands refused by a velocity limit ([card_limits]), by limit"
    );
    describe_histogram!(
        "hkms_hsm_call_duration_seconds",
        Unit::Seconds,
        "PKCS#11 call latency, by call and mechanism"
    );
    describe_gauge!("hkms_hsm_sessions", "HSM sessions of the pool, by state");
    describe_gauge!(
        "hkms_token_probe_attacks",
        "Attacks of the token probe run at start, by verdict (holds, leaks); see docs/tokens.md"
    );
    describe_gauge!(
        "hkms_audit_queue_depth",
        "Writes (each with its audit record) waiting for their durable commit"
    );
    describe_counter!(
        "hkms_audit_commits_total",
        "Durable registry commits (group commits)"
    );
    describe_counter!("hkms_audit_writes_total", "Writes carried by those commits");
    describe_counter!(
        "hkms_witness_refusals_total",
        "Checkpoints of other nodes this witness refused: a log rewritten, forked or cut back"
    );
    describe_gauge!(
        "hkms_witness_backlog_records",
        "Records of this node's log that a witness has not cosigned yet, by witness"
    );
    describe_histogram!(
        "hkms_batch_requests",
        "Requests served back to back on one thread and committed together, by RPC"
    );
    describe_histogram!(
        "hkms_batch_wait_seconds",
        Unit::Seconds,
        "Time a request waited for its use case to start: for a batch, then for the requests before it in its batch; by RPC"
    );
    describe_histogram!(
        "hkms_batch_run_seconds",
        Unit::Seconds,
        "Time a batch's thread spent running its use cases, by RPC"
    );
    describe_histogram!(
        "hkms_batch_record_seconds",
        Unit::Seconds,
        "Time a batch's thread spent writing its records in one durable commit, by RPC"
    );
}

/// Counts one batch of `requests` requests to `rpc`.
pub(crate) fn batch(rpc: &'static str, requests: usize) {
    metrics::histogram!("hkms_batch_requests", "rpc" => rpc).record(requests as f64);
}

/// How long a request to `rpc` waited before its use case started: in the queue, then behind
/// the requests before it in its batch.
pub(crate) fn batch_wait(rpc: &'static str, waited: Duration) {
    metrics::histogram!("hkms_batch_wait_seconds", "rpc" => rpc).record(waited);
}

/// Where one batch's thread spent its time: the sum of both over a while, against that
/// while, is how busy the thread that serves `rpc` was.
pub(crate) fn batch_time(rpc: &'static str, running: Duration, recording: Duration) {
    metrics::histogram!("hkms_batch_run_seconds", "rpc" => rpc).record(running);
    metrics::histogram!("hkms_batch_record_seconds", "rpc" => rpc).record(recording);
}

/// Counts one answered request; called where its audit record is written.
pub(crate) fn request(rpc: &'static str, code: &'static str, elapsed: Duration) {
    metrics::counter!("hkms_requests_total", "rpc" => rpc, "code" => code).increment(1);
    metrics::histogram!("hkms_request_duration_seconds", "rpc" => rpc).record(elapsed);
    if code == "PERMISSION_DENIED" {
        metrics::counter!("hkms_policy_denials_total", "rpc" => rpc).increment(1);
    }
}

/// Counts one card command refused by the velocity limit `limit` (its `[card_limits]` field
/// name, or `tracked_windows` / `tracked_cards`); called where its audit record is written.
pub(crate) fn card_limit_refusal(limit: &'static str) {
    metrics::counter!("hkms_card_limit_refusals_total", "limit" => limit).increment(1);
}

/// Counts one checkpoint this node, as a witness, refused.
pub(crate) fn witness_refusal() {
    metrics::counter!("hkms_witness_refusals_total").increment(1);
}

/// How many records of this node's log `witness` has not cosigned yet.
pub(crate) fn witness_backlog(witness: &str, records: u64) {
    metrics::gauge!("hkms_witness_backlog_records", "witness" => witness.to_string())
        .set(records as f64);
}

/// Serves `GET /metrics` on `listener` until the process ends.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    handle: PrometheusHandle,
    node: Arc<Node>,
) {
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP);
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (handle, node) = (handle.clone(), Arc::clone(&node));
            async move {
                refresh_gauges(&node);
                handle.render()
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "the metrics listener stopped");
    }
}

/// Reads the gauges that are states rather than events.
fn refresh_gauges(node: &Node) {
    let (busy, size) = node.core().token().session_use();
    metrics::gauge!("hkms_hsm_sessions", "state" => "busy").set(busy as f64);
    metrics::gauge!("hkms_hsm_sessions", "state" => "idle").set(size.saturating_sub(busy) as f64);
    let probe = node.core().token_probe();
    let leaks = probe.leaks().len();
    metrics::gauge!("hkms_token_probe_attacks", "verdict" => "leaks").set(leaks as f64);
    metrics::gauge!("hkms_token_probe_attacks", "verdict" => "holds")
        .set(probe.attacks.len().saturating_sub(leaks) as f64);
    let stats = node.core().commit_stats();
    metrics::gauge!("hkms_audit_queue_depth").set(stats.pending() as f64);
    metrics::counter!("hkms_audit_commits_total").absolute(stats.commits());
    metrics::counter!("hkms_audit_writes_total").absolute(stats.writes());
}

/// Binds the metrics port, refusing anything but loopback (the config checks it too).
pub(crate) async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    if !addr.ip().is_loopback() {
        return Err(ServeError::Metrics(format!(
            "{addr} is not a loopback address; metrics are served on loopback only"
        )));
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}
