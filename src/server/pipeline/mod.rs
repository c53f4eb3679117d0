//! The one path every RPC takes: authenticate the caller, run the use case (which asks the
//! policy, acts and fills the request's record), record, answer.
//!
//! A service file only translates between proto messages and use cases, and it cannot answer
//! without this module:
//! - the only ways to a `tonic::Response` are [`Answer::into_response`], which only this
//!   module makes once the request's record is durable, and a stream's [`StreamStart::respond`],
//!   whose items are each sent after their record (clippy's `disallowed-methods` refuses
//!   `tonic::Response::new` and `from_parts` anywhere else);
//! - a use case that changes something writes its record with the change
//!   (`node::Core::commit`); every other request is recorded here before its answer, and a
//!   request whose record cannot be written is refused.
//!
//! Unary RPCs go through [`unary`], or through a [`Batcher`] for those served in batches;
//! mutating ones through [`unary_once`] or [`Batcher::run_once`], which take the client's
//! `request_id` (`once.rs`); streams start with [`open_stream`] and record each item as it is
//! served. Every answer, a status included, carries the node's request id in the
//! [`REQUEST_ID_HEADER`] metadata: the id the request's records carry.

mod batch;
mod once;
mod record;
pub mod status;

use std::sync::Arc;
use std::time::Instant;

use tonic::{Request, Response, Status};

use crate::audit::{AuditDraft, Outcome};
use crate::node::{self, Caller, ErrorClass, Node, NodeError, Reason};

use super::edge::details;
use super::edge::identity::{Refusal, caller};
use super::edge::metrics;

pub(crate) use batch::Batcher;
pub(crate) use once::unary_once;
pub(crate) use record::{Unrecorded, execute, run_all};
pub use status::to_status;

/// The response metadata (a header, or a trailer of a status) that carries the node's id of
/// the request: the `request_id` of its records, for an operator or auditor to find them.
pub const REQUEST_ID_HEADER: &str = "x-hkms-request-id";

/// `status` with the node's request id in its metadata.
pub(crate) fn with_request_id(mut status: Status, request_id: &str) -> Status {
    if let Ok(value) = request_id.parse() {
        status.metadata_mut().insert(REQUEST_ID_HEADER, value);
    }
    status
}

/// `response` with the node's request id in its headers.
fn tagged<T>(mut response: Response<T>, request_id: &str) -> Response<T> {
    if let Ok(value) = request_id.parse() {
        response.metadata_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// What a request answers with, made only once its record is durable. A service turns it into
/// its reply with [`Answer::map`] and [`Answer::into_response`]; it has no other way to answer.
///
/// A service cannot make an answer of its own, so a new RPC cannot skip its record:
///
/// ```compile_fail
/// use hkms::server::pipeline::Answer;
/// // error[E0451]: field `value` of struct `Answer` is private
/// let answer = Answer { value: hkms::proto::PolicyInfo::default() };
/// let reply = answer.into_response();
/// ```
#[derive(Debug)]
#[must_use = "an answer is only given by turning it into the response"]
pub struct Answer<T> {
    value: T,
    /// The node's id of the request, which its reply carries ([`REQUEST_ID_HEADER`]).
    request_id: String,
}

impl<T> Answer<T> {
    /// Only the pipeline says a request is recorded.
    fn recorded(value: T, request_id: &str) -> Answer<T> {
        Answer {
            value,
            request_id: request_id.to_string(),
        }
    }

    /// The answer in another form (a use case's value in its proto message).
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Answer<U> {
        Answer {
            value: f(self.value),
            request_id: self.request_id,
        }
    }

    /// [`Answer::map`] with a conversion that can fail (the request is recorded already; the
    /// caller gets the error).
    pub fn try_map<U>(self, f: impl FnOnce(T) -> Result<U, Status>) -> Result<Answer<U>, Status> {
        let request_id = self.request_id;
        match f(self.value) {
            Ok(value) => Ok(Answer { value, request_id }),
            Err(status) => Err(with_request_id(status, &request_id)),
        }
    }

    /// The gRPC reply, with the node's request id in its headers.
    #[allow(clippy::disallowed_methods)] // the one place a reply is made
    pub fn into_response(self) -> Response<T> {
        tagged(Response::new(self.value), &self.request_id)
    }
}

/// An authenticated stream's start: its request id and caller. Each item of the stream is
/// recorded as it is served ([`run_all`], [`execute`]); its reply is only the channel.
pub(crate) struct StreamStart {
    /// The stream's request id, shared by the records of its items.
    pub request_id: String,
    /// The caller.
    pub who: Caller,
}

impl StreamStart {
    /// The reply of a stream: the channel its items are sent on, each after its record, with
    /// the stream's request id in its headers.
    #[allow(clippy::disallowed_methods)] // a stream's reply carries no result of its own
    pub fn respond<S: futures_util::Stream>(&self, stream: S) -> Response<S> {
        tagged(Response::new(stream), &self.request_id)
    }
}

/// Runs a (blocking) use case on a blocking thread for an authenticated caller and makes sure
/// the request leaves exactly one audit record, allowed or denied, before it is answered. A
/// request whose record cannot be written fails.
pub(crate) async fn unary<R, T, F>(
    node: &Arc<Node>,
    rpc: &'static str,
    request: Request<R>,
    f: F,
) -> Result<Answer<T>, Status>
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
    .map_err(|e| unfinished(rpc, &request_id, e))?;
    answer(rpc, &request_id, &name, outcome)
}

/// The status of a request whose blocking thread was lost.
fn unfinished(rpc: &str, request_id: &str, e: impl std::fmt::Display) -> Status {
    with_request_id(
        details::refusal(
            Reason::InternalError,
            format!("{rpc} did not finish: {e}"),
            Vec::new(),
        ),
        request_id,
    )
}

/// Authenticates the caller of a stream (recording and refusing one without a usable
/// identity).
pub(crate) async fn open_stream<R>(
    node: &Arc<Node>,
    rpc: &'static str,
    request: &Request<R>,
) -> Result<StreamStart, Status> {
    let (request_id, who) = authenticated(node, rpc, caller(node, request)).await?;
    Ok(StreamStart { request_id, who })
}

/// Logs how a recorded request ended and turns its error into the status to answer with.
/// `outcome` is the result of a request whose record is durable: [`execute`] and
/// [`Unrecorded::record`] give no other.
fn answer<T>(
    rpc: &'static str,
    request_id: &str,
    caller: &str,
    outcome: Result<T, NodeError>,
) -> Result<Answer<T>, Status> {
    match outcome {
        Ok(v) => {
            tracing::info!(%request_id, rpc, %caller, "ok");
            Ok(Answer::recorded(v, request_id))
        }
        Err(e) => {
            let status = to_status(&e);
            // The status's message: cut like the record's, however much the caller sent.
            let error = status.message();
            if matches!(e, NodeError::ResourceExhausted(_)) {
                // A flood over a limit must not flood the log: the limiter logs one alert per
                // caller and limit period; each refusal is in the ceremony log and the metrics.
                tracing::debug!(%request_id, rpc, %caller, code = e.class().code_name(), reason = %e.reason(), error, "refused");
            } else {
                tracing::warn!(%request_id, rpc, %caller, code = e.class().code_name(), reason = %e.reason(), error, "refused");
            }
            Err(with_request_id(status, request_id))
        }
    }
}

/// A new request's id, with its caller as [`caller`] found it. A request without a usable
/// identity is recorded and refused here.
async fn authenticated(
    node: &Arc<Node>,
    rpc: &'static str,
    caller: Result<Caller, Refusal>,
) -> Result<(String, Caller), Status> {
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
            code: ErrorClass::Unauthenticated.code_name().into(),
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
    let (answer, class) = match tokio::task::spawn_blocking(move || n.core().record(&draft)).await {
        Ok(Ok(_)) => (status, ErrorClass::Unauthenticated),
        _ => (
            details::refusal(
                Reason::AuditLogUnavailable,
                "the ceremony log cannot be written; request refused",
                Vec::new(),
            ),
            ErrorClass::Internal,
        ),
    };
    metrics::request(rpc, class.code_name(), start.elapsed());
    with_request_id(answer, request_id)
}
