//! Retries with a client's request id (docs/api.md, "Retries and request ids").
//!
//! A client that did not get its answer (a deadline, a lost connection) cannot tell whether
//! its request acted. It sends the same request again with the same `request_id`, and the
//! node answers as it did the first time instead of acting twice:
//!
//! - the first request that acts **claims** the id: the claim is written with its record, in
//!   the transaction of its change (`store::RetryStore`, contract point 8), so no crash can
//!   leave a change whose id is not claimed;
//! - once that request's answer is made, the node **keeps** it beside the claim;
//! - a request that finds the id claimed with the same RPC and body gets the kept answer
//!   (a **replay**, recorded as such); with another body it is refused;
//! - a request that failed without acting (refused, bad input, an error before any change)
//!   claims nothing, so its retry acts.
//!
//! Two requests with one id at once must not both act: each waits for its caller's id
//! ([`RetryLocks`]) before it looks the id up, and holds it until its answer is kept; the
//! claim's unique key refuses the second of two writers all the same.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use crate::audit::RetryClaim;
use crate::store::{KeptAnswer, RetryAnswer};

use super::core::Core;
use super::{NodeError, Reason, Request};

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The record parameter that carries the client's request id.
pub const CLIENT_REQUEST_ID: &str = "client_request_id";
/// The record parameter of a replay: the node's id of the request whose answer it repeats.
pub const REPLAY_OF: &str = "replay_of";
/// The record parameter of a refused reuse: the node's id of the request that holds the id.
pub const TAKEN_BY: &str = "request_id_taken_by";

/// A client's request id, checked: 1 to 64 letters, digits, `.`, `_` or `-` (a UUID fits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequestId(String);

impl ClientRequestId {
    /// The id a request carries; `None` when it carries none (an empty field).
    pub fn parse(sent: &str) -> Result<Option<ClientRequestId>, NodeError> {
        if sent.is_empty() {
            return Ok(None);
        }
        let ok = sent.len() <= 64
            && sent
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(NodeError::invalid_field(
                "request_id",
                format!(
                    "request_id `{}` is not 1 to 64 letters, digits, `.`, `_` or `-`; send a UUID, \
                 or leave it empty for a request that is not retried",
                    crate::untrusted_text::escape(&sent.chars().take(80).collect::<String>())
                ),
            ));
        }
        Ok(Some(ClientRequestId(sent.to_string())))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ClientRequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a request with a client request id does.
#[derive(Debug)]
pub enum Retry {
    /// Act: nobody claimed the id (or the claim expired). The request's record claims it.
    Act,
    /// Answer as the request that claimed the id did, without acting.
    Replay(KeptAnswer),
}

/// The client request ids in use by requests running now, one request at a time per caller and
/// id. Only in memory: the registry's claims are what outlive a request.
#[derive(Debug, Default)]
pub(crate) struct RetryLocks {
    held: Mutex<HashMap<CallersId, Weak<tokio::sync::Mutex<()>>>>,
}

/// A caller (identity URI) and one of their request ids.
type CallersId = (String, String);

/// A caller's request id held by one request: the others with the same id wait for it.
/// Held from before the id is looked up until the request's answer is kept.
#[derive(Debug)]
pub struct RetryTurn {
    _held: tokio::sync::OwnedMutexGuard<()>,
}

impl RetryLocks {
    /// Waits until no other request of `actor` holds `id`, then holds it. A waiting request
    /// holds no thread (the one asynchronous step of the node).
    async fn turn(&self, actor: &str, id: &ClientRequestId) -> RetryTurn {
        let lock = {
            let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
            // Ids nobody holds or waits for any more go: the table is as big as what runs.
            held.retain(|_, lock| lock.strong_count() > 0);
            let key = (actor.to_string(), id.as_str().to_string());
            match held.get(&key).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    held.insert(key, Arc::downgrade(&lock));
                    lock
                }
            }
        };
        RetryTurn {
            _held: lock.lock_owned().await,
        }
    }
}

/// Clients' request ids: looked up before a request acts, kept with its answer after.
pub struct Retries<'a> {
    pub(super) core: &'a Core,
    pub(super) locks: &'a RetryLocks,
    /// How long a claimed id answers retries (`[retries] window_secs`).
    pub(super) window: Duration,
}

impl Retries<'_> {
    /// Holds `actor`'s `id` for one request (see [`RetryLocks`]).
    pub async fn turn(&self, actor: &str, id: &ClientRequestId) -> RetryTurn {
        self.locks.turn(actor, id).await
    }

    /// Looks `id` up for `req`'s caller (holding its [`RetryTurn`]) and says what the request
    /// does: acts, claiming the id with its record, or answers as the first request with the
    /// same `rpc` and body did. The same id with another RPC or body is refused
    /// (ALREADY_EXISTS), and so is a retry of a request that acted but whose answer was lost
    /// in a crash (FAILED_PRECONDITION): either way nothing acts. The record shows the id and
    /// the request it repeats or collides with.
    pub fn begin(
        &self,
        req: &mut Request,
        id: &ClientRequestId,
        rpc: &str,
        body_sha256: &str,
    ) -> Result<Retry, NodeError> {
        req.param(CLIENT_REQUEST_ID, id.as_str());
        let now = now_secs();
        let actor = req.caller.to_uri();
        let Some(first) = self.core.store.client_request(&actor, id.as_str(), now)? else {
            req.claim_retry(RetryClaim {
                client_request_id: id.as_str().to_string(),
                rpc: rpc.to_string(),
                body_sha256: body_sha256.to_string(),
                expires_at: now.saturating_add(self.window.as_secs()),
            });
            return Ok(Retry::Act);
        };
        if first.rpc != rpc || first.body_sha256 != body_sha256 {
            req.param(TAKEN_BY, first.request_id.clone());
            return Err(NodeError::because(
                Reason::RequestIdTaken,
                format!(
                    "request_id `{id}` came with another request of yours ({}, request {}) less \
                 than {} ago; a retry must repeat the request exactly; send a new request_id \
                 for a new request",
                    first.rpc,
                    first.request_id,
                    humantime::format_duration(self.window)
                ),
            )
            .with("request_id", first.request_id.as_str())
            .into());
        }
        req.param(REPLAY_OF, first.request_id.clone());
        match first.answer {
            Some(answer) => Ok(Retry::Replay(answer)),
            None => Err(NodeError::FailedPrecondition(format!(
                "request {} with request_id `{id}` acted, but the node stopped before it kept \
                 its answer; find what it did in the ceremony log (request {}) or read the \
                 resource again; do not send this request_id again",
                first.request_id, first.request_id
            ))),
        }
    }

    /// Keeps the answers of requests that ran with a request id (one commit for them all):
    /// their retries get them from now on. Nothing is kept for a request that claimed nothing
    /// (it did not act). A failure is logged, not returned: the requests' own answers stand,
    /// and a retry then finds its claim without an answer and is refused rather than acting
    /// again.
    pub fn keep(&self, answers: &[RetryAnswer]) {
        if let Err(e) = self.core.store.keep_answers(answers) {
            let requests: Vec<&str> = answers.iter().map(|a| a.request_id.as_str()).collect();
            tracing::error!(?requests, error = %e, "cannot keep the answers for the requests' retries");
        }
    }

    /// Forgets the ids whose window has passed; returns how many.
    pub fn forget_expired(&self) -> Result<usize, NodeError> {
        Ok(self.core.store.forget_client_requests(now_secs())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_is_1_to_64_safe_characters() {
        assert_eq!(ClientRequestId::parse("").unwrap(), None);
        for good in [
            "a",
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            "job.42_retry-1",
            &"x".repeat(64),
        ] {
            assert_eq!(
                ClientRequestId::parse(good).unwrap().unwrap().as_str(),
                good
            );
        }
        for bad in [&"x".repeat(65), "a b", "a/b", "é", "a\nb", "a\u{202e}b"] {
            let err = ClientRequestId::parse(bad).unwrap_err();
            assert_eq!(err.field(), Some("request_id"), "{bad:?}");
            let text = err.to_string();
            assert!(text.starts_with("request_id "), "{text}");
            assert!(!text.contains('\n') && !text.contains('\u{202e}'), "{text}");
        }
    }

    #[tokio::test]
    async fn one_request_at_a_time_holds_an_id_of_a_caller() {
        let locks = RetryLocks::default();
        let id = ClientRequestId::parse("x").unwrap().unwrap();
        let first = locks.turn("a", &id).await;
        // Another caller's id of the same name is another id.
        let other = locks.turn("b", &id).await;
        let waiting = locks.turn("a", &id);
        tokio::pin!(waiting);
        assert!(
            futures_util::FutureExt::now_or_never(waiting.as_mut()).is_none(),
            "the second request with the id waits"
        );
        drop(first);
        let _second = waiting.await;
        drop(other);
        // Only ids held or waited for stay in the table.
        let _third = locks.turn("c", &id).await;
        assert_eq!(locks.held.lock().unwrap().len(), 2);
    }
}
