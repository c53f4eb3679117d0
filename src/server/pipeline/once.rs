//! Mutating RPCs and the client's `request_id` (docs/api.md, "Retries and request ids"): a
//! retry with the same id and body gets the first answer instead of acting twice.
//!
//! The pipeline's part, around the node's (`node::Retries`): it reads the id and the body's
//! hash from the message, waits for the caller's id to be free ([`Once::read`]), looks it up
//! inside the request's use case, which acts or answers from the registry ([`Once::run`]),
//! and, once the request is recorded, keeps the encoded reply (or the status) for the retries
//! ([`Once::answer_to_keep`]). The reply is made on the blocking thread, so a client that
//! goes away while its request runs does not stop its answer from being kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use prost::Message;
use tonic::{Request, Status};

use crate::node::{
    self, CLIENT_REQUEST_ID, Caller, ClientRequestId, ErrorClass, Node, NodeError, Retry, RetryTurn,
};
use crate::proto::request_id::Mutating;
use crate::store::{KeptAnswer, RetryAnswer};

use super::super::edge::identity::caller;
use super::{Answer, answer, authenticated, execute, to_status, unfinished};

/// [`super::unary`] for a mutating RPC whose message carries a `request_id`: the use case
/// answers with the reply message itself, which is kept for the request's retries.
pub(crate) async fn unary_once<R, U, F>(
    node: &Arc<Node>,
    rpc: &'static str,
    request: Request<R>,
    f: F,
) -> Result<Answer<U>, Status>
where
    R: Mutating + Send + 'static,
    U: Message + Default + Send + 'static,
    F: FnOnce(&Node, &mut node::Request, R) -> Result<U, NodeError> + Send + 'static,
{
    let (request_id, who) = authenticated(node, rpc, caller(node, &request)).await?;
    let body = request.into_inner();
    let name = who.to_string();
    let once = Once::read(node, rpc, &who, &body).await;
    let node = Arc::clone(node);
    let rid = request_id.clone();
    let outcome = tokio::task::spawn_blocking(move || {
        let outcome = execute(&node, who, rpc, &rid, |n, req| {
            once.run(n, req, |n, req| f(n, req, body))
        });
        if let Some(kept) = once.answer_to_keep(&rid, &outcome) {
            node.retries().keep(&[kept]);
        }
        // The caller's id is free for the next request with it only now (`once` drops).
        outcome
    })
    .await
    .map_err(|e| unfinished(rpc, &request_id, e))?;
    answer(rpc, &request_id, &name, outcome)
}

/// What a mutating request sent as its `request_id`, and the hold on it while it runs.
pub(crate) struct Once {
    rpc: &'static str,
    /// The caller's identity URI: ids are the caller's own.
    actor: String,
    /// The id as sent.
    sent: String,
    /// The id, when one was sent and it is well-formed.
    id: Option<ClientRequestId>,
    /// SHA-256 of the body (hex), when an id was sent.
    body_sha256: String,
    /// Whether the request acted (it may then have claimed the id, and its answer is kept).
    acted: AtomicBool,
    /// Held until the request's answer is kept: another request with the id waits.
    _turn: Option<RetryTurn>,
}

impl Once {
    /// Reads `body`'s request id and, when it has one, waits until no other request of `who`
    /// holds it.
    pub(crate) async fn read<R: Mutating>(
        node: &Node,
        rpc: &'static str,
        who: &Caller,
        body: &R,
    ) -> Once {
        let actor = who.identity.to_uri();
        let sent = body.request_id().to_string();
        let id = ClientRequestId::parse(&sent).ok().flatten();
        let turn = match &id {
            Some(id) => Some(node.retries().turn(&actor, id).await),
            None => None,
        };
        Once {
            rpc,
            actor,
            body_sha256: id
                .as_ref()
                .map(|_| hex::encode(body.body_sha256()))
                .unwrap_or_default(),
            sent,
            id,
            acted: AtomicBool::new(false),
            _turn: turn,
        }
    }

    /// Runs the request's use case `act`, or answers as the first request with the id did:
    /// the use case of every request that carries an id. A malformed id is refused before
    /// anything else.
    pub(crate) fn run<U: Message + Default>(
        &self,
        n: &Node,
        req: &mut node::Request,
        act: impl FnOnce(&Node, &mut node::Request) -> Result<U, NodeError>,
    ) -> Result<U, NodeError> {
        let id = match (&self.id, ClientRequestId::parse(&self.sent)) {
            (_, Err(refused)) => {
                req.param(CLIENT_REQUEST_ID, self.sent.clone());
                return Err(refused);
            }
            (None, Ok(_)) => return act(n, req),
            (Some(id), Ok(_)) => id,
        };
        match n.retries().begin(req, id, self.rpc, &self.body_sha256)? {
            Retry::Act => {
                self.acted.store(true, Ordering::Relaxed);
                act(n, req)
            }
            Retry::Replay(KeptAnswer::Reply(bytes)) => U::decode(bytes.as_slice()).map_err(|e| {
                NodeError::Internal(format!(
                    "the answer kept for request_id `{id}` does not decode ({e}); send a new \
                     request_id"
                ))
            }),
            Retry::Replay(KeptAnswer::Status {
                code,
                message,
                details,
            }) => Err(NodeError::Replayed {
                class: ErrorClass::from_grpc_code(code).unwrap_or(ErrorClass::Internal),
                message,
                details,
            }),
        }
    }

    /// What to keep for the retries of a request that acted, now recorded: its reply, encoded,
    /// or its status. The registry keeps it only if the request claimed the id, which a
    /// request that failed without acting did not.
    pub(crate) fn answer_to_keep<U: Message>(
        &self,
        request_id: &str,
        outcome: &Result<U, NodeError>,
    ) -> Option<RetryAnswer> {
        let id = self.id.as_ref()?;
        if !self.acted.load(Ordering::Relaxed) {
            return None;
        }
        let answer = match outcome {
            Ok(reply) => KeptAnswer::Reply(reply.encode_to_vec()),
            Err(e) => {
                let status = to_status(e);
                KeptAnswer::Status {
                    code: status.code() as i32,
                    message: status.message().to_string(),
                    details: status.details().to_vec(),
                }
            }
        };
        Some(RetryAnswer {
            actor: self.actor.clone(),
            client_request_id: id.as_str().to_string(),
            request_id: request_id.to_string(),
            answer,
        })
    }
}
