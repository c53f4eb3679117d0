//! `hkms.v1.KeyService`: the gRPC face of the node's key use cases.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use crate::audit::{AuditDraft, Outcome};
use crate::node::{self, Node, NodeError};
use crate::policy::Identity;
use crate::proto;
use crate::proto::key_service_server::KeyService;
use crate::store::KeyRecord;

use super::batch::Batcher;
use super::identity::{Refusal, caller};
use super::metrics;
use super::status::to_status;

/// The key service over one node.
pub struct KeyApi {
    node: Arc<Node>,
    gets: Batcher<KeyRecord>,
}

impl KeyApi {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> KeyApi {
        KeyApi {
            gets: Batcher::new(Arc::clone(&node), "GetKey"),
            node,
        }
    }
}

/// Runs a (blocking) use case on a blocking thread for an authenticated caller and makes sure
/// the request leaves exactly one audit record, allowed or denied, before it is answered. A
/// request whose record cannot be written fails.
pub(crate) async fn run<R, T, F>(
    node: &Arc<Node>,
    rpc: &'static str,
    request: Request<R>,
    f: F,
) -> Result<T, Status>
where
    F: FnOnce(&Node, &mut node::Request, R) -> Result<T, NodeError> + Send + 'static,
    R: Send + 'static,
    T: Send + 'static,
{
    let (request_id, who) = authenticated(node, rpc, caller(node, &request)).await?;
    let body = request.into_inner();
    let node = Arc::clone(node);
    let name = who.to_string();
    let rid = request_id.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        execute(&node, who, rpc, &rid, |n, req| f(n, req, body))
    })
    .await
    .map_err(|e| Status::internal(format!("{rpc} did not finish: {e}")))?;
    answer(rpc, &request_id, &name, outcome)
}

/// Logs how a request ended and turns its error into the status to answer with.
pub(crate) fn answer<T>(
    rpc: &'static str,
    request_id: &str,
    caller: &str,
    outcome: Result<T, NodeError>,
) -> Result<T, Status> {
    match outcome {
        Ok(v) => {
            tracing::info!(%request_id, rpc, %caller, "ok");
            Ok(v)
        }
        Err(e) => {
            let status = to_status(&e);
            // The status's message: cut like the record's, however much the caller sent.
            let error = status.message();
            tracing::warn!(%request_id, rpc, %caller, code = ?status.code(), error, "refused");
            Err(status)
        }
    }
}

/// A new request's id, with its caller as [`caller`] found it. A request without a usable
/// identity is recorded and refused here.
pub(crate) async fn authenticated(
    node: &Arc<Node>,
    rpc: &'static str,
    caller: Result<Identity, Refusal>,
) -> Result<(String, Identity), Status> {
    let request_id = format!("r-{}", uuid::Uuid::new_v4().simple());
    match caller {
        Ok(who) => Ok((request_id, who)),
        Err(refusal) => Err(refuse_unauthenticated(node, rpc, &request_id, refusal).await),
    }
}

/// Records a request that carried no usable identity, and returns the status to answer with
/// (INTERNAL when even the record cannot be written). The actor stays empty: a revoked
/// certificate's identity goes in the parameters, for the auditors.
async fn refuse_unauthenticated(
    node: &Arc<Node>,
    rpc: &'static str,
    request_id: &str,
    refusal: Refusal,
) -> Status {
    let Refusal { status, revoked } = refusal;
    tracing::warn!(%request_id, rpc, error = %status.message(), "unauthenticated");
    let start = Instant::now();
    let mut draft = AuditDraft {
        request_id: request_id.to_string(),
        node: node.name().to_string(),
        rpc: rpc.to_string(),
        outcome: Some(Outcome {
            ok: false,
            code: code_name(status.code()).into(),
            message: status.message().to_string(),
        }),
        ..AuditDraft::default()
    };
    if let Some((who, serial)) = revoked {
        draft
            .params
            .insert("revoked_identity".into(), who.to_string());
        draft.params.insert("revoked_serial".into(), serial);
    }
    let n = Arc::clone(node);
    let answer = match tokio::task::spawn_blocking(move || n.record(&draft)).await {
        Ok(Ok(_)) => status,
        _ => Status::internal("the ceremony log cannot be written; request refused"),
    };
    metrics::request(rpc, code_name(answer.code()), start.elapsed());
    answer
}

/// Runs one use case for `who` and makes sure it leaves exactly one audit record (the use case
/// may have written it with its change); a record that cannot be written fails the request.
/// Blocking: call it on a blocking thread.
pub(crate) fn execute<T>(
    node: &Node,
    who: Identity,
    rpc: &'static str,
    request_id: &str,
    f: impl FnOnce(&Node, &mut node::Request) -> Result<T, NodeError>,
) -> Result<T, NodeError> {
    let mut ran = Unrecorded::new(rpc, 1);
    ran.run(node, who, request_id, f);
    ran.record(node)
        .pop()
        .unwrap_or_else(|| Err(NodeError::Internal(format!("{rpc} left no result"))))
}

/// Requests that ran on this thread, one after the other, but whose records are not written
/// yet. [`Unrecorded::record`] writes them together: a batch of requests costs one durable
/// wait instead of one each, and the caller can let go of what the use cases needed (an HSM
/// turn) before that wait.
pub(crate) struct Unrecorded<T> {
    rpc: &'static str,
    drafts: Vec<AuditDraft>,
    /// Each request's start, whether its record is among `drafts`, and its result.
    done: Vec<(Instant, bool, Result<T, NodeError>)>,
}

/// Runs a use case for each of `items`, all for `who` under one request id (the cards of a
/// stream). Blocking.
pub(crate) fn run_all<I, T>(
    node: &Node,
    who: &Identity,
    rpc: &'static str,
    request_id: &str,
    items: Vec<I>,
    f: impl Fn(&Node, &mut node::Request, I) -> Result<T, NodeError>,
) -> Unrecorded<T> {
    let mut ran = Unrecorded::new(rpc, items.len());
    for item in items {
        ran.run(node, who.clone(), request_id, |n, req| f(n, req, item));
    }
    ran
}

impl<T> Unrecorded<T> {
    /// Room for `capacity` requests to `rpc`.
    pub(crate) fn new(rpc: &'static str, capacity: usize) -> Unrecorded<T> {
        Unrecorded {
            rpc,
            drafts: Vec::with_capacity(capacity),
            done: Vec::with_capacity(capacity),
        }
    }

    /// Runs one use case for `who`; its record waits for [`Unrecorded::record`] unless the use
    /// case wrote it with its change. Blocking.
    pub(crate) fn run(
        &mut self,
        node: &Node,
        who: Identity,
        request_id: &str,
        f: impl FnOnce(&Node, &mut node::Request) -> Result<T, NodeError>,
    ) {
        let start = Instant::now();
        let mut req = node::Request::new(who, node.name(), self.rpc, request_id);
        // A use case that panics fails alone, with its record: the others of the batch stand.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(node, &mut req)))
            .unwrap_or_else(|_| {
                Err(NodeError::Internal(format!(
                    "{} stopped unexpectedly; the request is refused",
                    self.rpc
                )))
            });
        let pending = !req.is_logged();
        if pending {
            self.drafts.push(finished_draft(req, &result));
        }
        self.done.push((start, pending, result));
    }

    /// Writes the records in one commit. Each result stands only once its record is durable;
    /// when the commit fails, every request whose record was in it fails. Blocking.
    pub(crate) fn record(self, node: &Node) -> Vec<Result<T, NodeError>> {
        let failed = node.record_all(&self.drafts).err().map(|e| e.to_string());
        self.done
            .into_iter()
            .map(|(start, pending, result)| {
                let result = match (&failed, pending) {
                    (Some(e), true) => Err(unrecorded(e)),
                    _ => result,
                };
                count(self.rpc, &result, start);
                result
            })
            .collect()
    }
}

fn count<T>(rpc: &'static str, result: &Result<T, NodeError>, start: Instant) {
    let code = match result {
        Ok(_) => "OK",
        Err(e) => e.class().code_name(),
    };
    metrics::request(rpc, code, start.elapsed());
}

/// The record of a request whose use case did not write it with its change.
fn finished_draft<T>(req: node::Request, result: &Result<T, NodeError>) -> AuditDraft {
    req.into_record(result.as_ref().err())
}

/// The error of a request whose record could not be written.
fn unrecorded(e: impl std::fmt::Display) -> NodeError {
    NodeError::Internal(format!(
        "the request could not be written to the ceremony log ({e}); it is refused"
    ))
}

/// The canonical gRPC name of a status code, as recorded in the log.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The wire form of a registry record.
pub fn key_to_proto(r: &KeyRecord) -> proto::Key {
    proto::Key {
        id: r.id.to_string(),
        key_type: r.key_type.as_str().to_string(),
        algorithm: r.algorithm.as_str().to_string(),
        tier: r.tier.as_str().to_string(),
        region: r.region.to_string(),
        parent_id: r
            .parent_id
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        factor: r.factor.as_ref().map(|f| f.to_hex()).unwrap_or_default(),
        kcv: r.kcv.to_hex(),
        kcv_method: r.kcv.method.as_str().to_string(),
        version: r.version,
        state: r.state.as_str().to_string(),
        created_at: r.created_at.clone(),
        updated_at: r.updated_at.clone(),
    }
}

#[tonic::async_trait]
impl KeyService for KeyApi {
    async fn generate_key(
        &self,
        request: Request<proto::GenerateKeyRequest>,
    ) -> Result<Response<proto::GenerateKeyResponse>, Status> {
        let key = run(&self.node, "GenerateKey", request, |n, req, r| {
            n.generate_key(req, &r.key_type)
        })
        .await?;
        Ok(Response::new(proto::GenerateKeyResponse {
            key: Some(key_to_proto(&key)),
        }))
    }

    async fn derive_sub_key(
        &self,
        request: Request<proto::DeriveSubKeyRequest>,
    ) -> Result<Response<proto::DeriveSubKeyResponse>, Status> {
        let key = run(&self.node, "DeriveSubKey", request, |n, req, r| {
            n.derive_sub_key(req, &r.parent_id, &r.region)
        })
        .await?;
        Ok(Response::new(proto::DeriveSubKeyResponse {
            key: Some(key_to_proto(&key)),
        }))
    }

    async fn get_key(
        &self,
        request: Request<proto::GetKeyRequest>,
    ) -> Result<Response<proto::GetKeyResponse>, Status> {
        let key = self
            .gets
            .run(request, |n, req, r| n.get_key(req, &r.id))
            .await?;
        Ok(Response::new(proto::GetKeyResponse {
            key: Some(key_to_proto(&key)),
        }))
    }

    async fn list_keys(
        &self,
        request: Request<proto::ListKeysRequest>,
    ) -> Result<Response<proto::ListKeysResponse>, Status> {
        let keys = run(&self.node, "ListKeys", request, |n, req, r| {
            n.list_keys(req, &r.tier, &r.region, &r.key_type, &r.state)
        })
        .await?;
        Ok(Response::new(proto::ListKeysResponse {
            keys: keys.iter().map(key_to_proto).collect(),
        }))
    }

    async fn change_key_state(
        &self,
        request: Request<proto::ChangeKeyStateRequest>,
    ) -> Result<Response<proto::ChangeKeyStateResponse>, Status> {
        let key = run(&self.node, "ChangeKeyState", request, |n, req, r| {
            let expected = (!r.expected_state.is_empty()).then_some(r.expected_state.as_str());
            n.change_key_state(req, &r.id, &r.state, expected)
        })
        .await?;
        Ok(Response::new(proto::ChangeKeyStateResponse {
            key: Some(key_to_proto(&key)),
        }))
    }
}
