//! This node's side of witnessing: a task per `[[witnesses]]` entry sends the newest checkpoint
//! of the log, with the records the witness has not verified yet, and keeps the cosignature it
//! gets back. A witness that cannot be reached only delays this: the node keeps serving, tries
//! again every `retry_secs`, and shows the records not yet cosigned in its metrics
//! (`hkms_witness_backlog_records`) and in health (`witnessed/NAME`).

use std::sync::Arc;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::audit::Checkpoint;
use crate::audit::witness::Cosignature;
use crate::config::WitnessConfig;
use crate::node::{MAX_WITNESS_LINES, Node};
use crate::proto;
use crate::proto::witness_service_client::WitnessServiceClient;

use super::edge::metrics;

/// At most this many bytes of record lines per call (a gRPC message stays under 4 MiB).
const MAX_WITNESS_BYTES: usize = 2 << 20;

/// How long one call to a witness may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Health service name of one witness's state: SERVING when it has cosigned the newest
/// checkpoint.
pub fn health_name(witness: &str) -> String {
    format!("witnessed/{witness}")
}

/// What sending to a witness found.
enum Sent {
    /// The witness cosigned the newest checkpoint (or had already).
    UpToDate,
    /// There is no checkpoint to send yet.
    NothingToSend,
}

/// Why a witness did not cosign this time.
#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("cannot reach the witness: {0}")]
    Unreachable(String),
    #[error("the witness refused the checkpoint ({code:?}): {message}")]
    Refused { code: tonic::Code, message: String },
    #[error("{0}")]
    Local(String),
}

/// Sends to `witness` until the process ends.
pub async fn send_forever(node: Arc<Node>, witness: WitnessConfig, reporter: HealthReporter) {
    let health = health_name(&witness.name);
    reporter
        .set_service_status(health.as_str(), ServingStatus::NotServing)
        .await;
    let mut client: Option<WitnessServiceClient<Channel>> = None;
    // The newest cosignature kept from this witness: where a restart takes up again.
    let mut last = {
        let n = Arc::clone(&node);
        let name = witness.name.clone();
        tokio::task::spawn_blocking(move || last_cosigned(&n, &name))
            .await
            .ok()
            .flatten()
    };
    loop {
        let outcome = match client.as_mut() {
            Some(c) => send_once(&node, &witness, c, &mut last).await,
            None => match connect(&witness) {
                Ok(c) => send_once(&node, &witness, client.insert(c), &mut last).await,
                Err(e) => Err(e),
            },
        };
        let caught_up = match outcome {
            Ok(Sent::UpToDate) => true,
            Ok(Sent::NothingToSend) => false,
            Err(e) => {
                match &e {
                    SendError::Refused { .. } => tracing::error!(
                        witness = %witness.name, error = %e,
                        "ALERT: a witness refused this node's checkpoint"
                    ),
                    _ => tracing::warn!(
                        witness = %witness.name, error = %e,
                        "checkpoint not witnessed yet; trying again later"
                    ),
                }
                if matches!(e, SendError::Unreachable(_)) {
                    client = None;
                }
                false
            }
        };
        let (backlog, unsealed) = backlog(&node, last.as_ref().map_or(0, |c| c.seq)).await;
        metrics::witness_backlog(&witness.name, backlog);
        let status = if caught_up && backlog <= unsealed {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status(health.as_str(), status).await;
        tokio::time::sleep(witness.retry).await;
    }
}

/// The newest cosignature this node keeps from the witness named `name`.
fn last_cosigned(node: &Node, name: &str) -> Option<Cosignature> {
    node.core()
        .store
        .cosignatures()
        .ok()?
        .into_iter()
        .filter(|c| c.witness == name)
        .max_by_key(|c| c.seq)
}

/// The records of the log after `cosigned` (the last record a witness cosigned), and those
/// after the newest checkpoint (which no witness can cosign before the next one).
async fn backlog(node: &Arc<Node>, cosigned: u64) -> (u64, u64) {
    let n = Arc::clone(node);
    tokio::task::spawn_blocking(move || {
        let store = &n.core().store;
        let head = store.audit_head().ok().flatten().map_or(0, |h| h.0);
        let sealed = store.last_checkpoint().ok().flatten().map_or(0, |c| c.seq);
        (head.saturating_sub(cosigned), head.saturating_sub(sealed))
    })
    .await
    .unwrap_or((0, u64::MAX))
}

fn connect(witness: &WitnessConfig) -> Result<WitnessServiceClient<Channel>, SendError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| SendError::Local(format!("cannot read {}: {e}", p.display())))
    };
    let key = zeroize::Zeroizing::new(read(&witness.key)?);
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&witness.ca)?))
        .identity(Identity::from_pem(read(&witness.cert)?, key.as_slice()));
    let channel = Endpoint::from_shared(witness.url.clone())
        .and_then(|e| e.tls_config(tls))
        .map_err(|e| SendError::Local(format!("witness {}: {e}", witness.url)))?
        .timeout(CALL_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    Ok(WitnessServiceClient::new(channel))
}

/// Sends the newest checkpoint and what the witness still needs of the log before it.
async fn send_once(
    node: &Arc<Node>,
    witness: &WitnessConfig,
    client: &mut WitnessServiceClient<Channel>,
    last: &mut Option<Cosignature>,
) -> Result<Sent, SendError> {
    let n = Arc::clone(node);
    let checkpoint = tokio::task::spawn_blocking(move || n.core().store.last_checkpoint())
        .await
        .map_err(|e| SendError::Local(e.to_string()))?;
    let Some(checkpoint) = checkpoint.map_err(|e| SendError::Local(e.to_string()))? else {
        return Ok(Sent::NothingToSend);
    };
    // Sent already; a log behind what was cosigned is sent anyway, for the witness to refuse.
    if last
        .as_ref()
        .is_some_and(|c| c.seq == checkpoint.seq && c.head == checkpoint.head)
    {
        return Ok(Sent::UpToDate);
    }
    let line = serde_json::to_string(&checkpoint).map_err(|e| SendError::Local(e.to_string()))?;
    let key_pem = node.core().signing().spki_pem.clone();
    // First: where the witness stands. Then the lines it needs, a chunk at a time.
    let mut answer = call(client, &line, &key_pem, 0, Vec::new()).await?;
    while answer.cosignature.is_empty() && answer.verified_seq < checkpoint.seq {
        let from = answer.verified_seq + 1;
        let lines = lines(node, from, checkpoint.seq).await?;
        if lines.is_empty() {
            return Err(SendError::Local(format!(
                "record {from} of the log is not there to send"
            )));
        }
        answer = call(client, &line, &key_pem, from, lines).await?;
    }
    if answer.cosignature.is_empty() {
        return Err(SendError::Local(format!(
            "the witness verified up to record {} but gave no cosignature of checkpoint {}",
            answer.verified_seq, checkpoint.seq
        )));
    }
    *last = Some(keep(node, witness, &checkpoint, &answer.cosignature).await?);
    tracing::info!(witness = %witness.name, seq = checkpoint.seq, "checkpoint cosigned");
    Ok(Sent::UpToDate)
}

async fn call(
    client: &mut WitnessServiceClient<Channel>,
    checkpoint: &str,
    key_pem: &str,
    from_seq: u64,
    lines: Vec<String>,
) -> Result<proto::WitnessCheckpointResponse, SendError> {
    let request = proto::WitnessCheckpointRequest {
        checkpoint: checkpoint.to_string(),
        node_key_pem: key_pem.to_string(),
        from_seq,
        lines,
    };
    match client.witness_checkpoint(request).await {
        Ok(r) => Ok(r.into_inner()),
        Err(s)
            if matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
            ) =>
        {
            Err(SendError::Unreachable(s.message().to_string()))
        }
        Err(s) => Err(SendError::Refused {
            code: s.code(),
            message: s.message().to_string(),
        }),
    }
}

/// Record lines `from..=to`, at most [`MAX_WITNESS_LINES`] and [`MAX_WITNESS_BYTES`].
async fn lines(node: &Arc<Node>, from: u64, to: u64) -> Result<Vec<String>, SendError> {
    let n = Arc::clone(node);
    let rows = tokio::task::spawn_blocking(move || {
        n.core().store.audit_lines(from, to, MAX_WITNESS_LINES)
    })
    .await
    .map_err(|e| SendError::Local(e.to_string()))?
    .map_err(|e| SendError::Local(e.to_string()))?;
    let mut out = Vec::new();
    let mut bytes = 0;
    for (_, line) in rows {
        bytes += line.len();
        if !out.is_empty() && bytes > MAX_WITNESS_BYTES {
            break;
        }
        out.push(line);
    }
    Ok(out)
}

/// Checks the cosignature covers the checkpoint sent and verifies, then keeps it (the export
/// puts it in the bundle).
async fn keep(
    node: &Arc<Node>,
    witness: &WitnessConfig,
    checkpoint: &Checkpoint,
    line: &str,
) -> Result<Cosignature, SendError> {
    let c = Cosignature::from_line(line)
        .map_err(|e| SendError::Local(format!("the witness's answer: {e}")))?;
    let ours = node.core().signing().sha256.clone();
    if c.node != checkpoint.node
        || c.seq != checkpoint.seq
        || c.head != checkpoint.head
        || c.node_key_sha256 != ours
    {
        return Err(SendError::Local(
            "the witness cosigned another checkpoint than the one sent".into(),
        ));
    }
    if c.witness != witness.name {
        return Err(SendError::Local(format!(
            "the witness signs as `{}`, but [[witnesses]] names it `{}`; make them agree",
            c.witness, witness.name
        )));
    }
    c.verify()
        .map_err(|e| SendError::Local(format!("the witness's cosignature: {e}")))?;
    let n = Arc::clone(node);
    let kept = c.clone();
    tokio::task::spawn_blocking(move || n.core().store.insert_cosignature(&kept))
        .await
        .map_err(|e| SendError::Local(e.to_string()))?
        .map_err(|e| SendError::Local(format!("cannot keep the cosignature: {e}")))?;
    Ok(c)
}
