//! The pipeline's recorder: runs use cases for authenticated callers and writes the record of
//! every request that did not write its own with a change, before any result is given out.

use std::time::Instant;

use crate::audit::AuditDraft;
use crate::node::{self, Caller, Node, NodeError, Reason};

use super::super::edge::metrics;

/// Runs one use case for `who` and makes sure it leaves exactly one audit record (the use case
/// may have written it with its change); a record that cannot be written fails the request.
/// Blocking: call it on a blocking thread.
pub(crate) fn execute<T>(
    node: &Node,
    who: Caller,
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

/// Runs a use case for each of `items`, all for `who` under one request id (the cards of a
/// stream). Blocking.
pub(crate) fn run_all<I, T>(
    node: &Node,
    who: &Caller,
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

/// Requests that ran on this thread, one after the other, but whose records are not written
/// yet. [`Unrecorded::record`] writes them together: a batch of requests costs one durable
/// wait instead of one each, and the caller can let go of what the use cases needed (an HSM
/// turn) before that wait. Their results are only given out by [`Unrecorded::record`].
pub(crate) struct Unrecorded<T> {
    rpc: &'static str,
    drafts: Vec<AuditDraft>,
    /// Each request's start, whether its record is among `drafts`, and its result.
    done: Vec<(Instant, bool, Result<T, NodeError>)>,
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
        who: Caller,
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
        let unwritten = req.into_unwritten_record(result.as_ref().err());
        let pending = unwritten.is_some();
        self.drafts.extend(unwritten);
        self.done.push((start, pending, result));
    }

    /// Writes the records in one commit. Each result stands only once its record is durable;
    /// when the commit fails, every request whose record was in it fails. Blocking.
    pub(crate) fn record(self, node: &Node) -> Vec<Result<T, NodeError>> {
        let failed = node
            .core()
            .record_all(&self.drafts)
            .err()
            .map(|e| e.to_string());
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
    if let Err(NodeError::ResourceExhausted(refusal)) = result {
        metrics::card_limit_refusal(refusal.limit.as_str());
    }
}

/// The error of a request whose record could not be written.
fn unrecorded(e: impl std::fmt::Display) -> NodeError {
    NodeError::because(
        Reason::AuditLogUnavailable,
        format!("the request could not be written to the ceremony log ({e}); it is refused"),
    )
    .into()
}
