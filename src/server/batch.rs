//! Unary requests of one RPC that arrive while others are being served run back to back on
//! one blocking thread, and their audit records go to the log in one commit.
//!
//! Why: on SoftHSM2 a request's PKCS#11 calls cost less on a thread that makes them one after
//! the other than on many threads that take turns (the library serialises them anyway), and a
//! thread hand-off plus a durable wait per request cost as much CPU as the request itself.
//! The first request to find no batch running leads: it runs on a blocking thread, serves
//! every request queued meanwhile, and stops when the queue is empty. The others only wait
//! for their answer, without a thread. A quiet node therefore serves a lone request as before.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;
use tonic::{Request, Status};

use crate::node::{self, Node, NodeError};
use crate::policy::Identity;

use super::identity::caller;
use super::keys::{Unrecorded, answer, refuse_unauthenticated};

/// Most requests run before their records are committed; later ones wait for the next batch.
const MOST_PER_BATCH: usize = 32;

type UseCase<T> = Box<dyn FnOnce(&Node, &mut node::Request) -> Result<T, NodeError> + Send>;

struct Job<T> {
    who: Identity,
    request_id: String,
    use_case: UseCase<T>,
    reply: oneshot::Sender<Result<T, NodeError>>,
}

struct Queue<T> {
    jobs: VecDeque<Job<T>>,
    /// Whether a blocking thread is serving the queue.
    leading: bool,
}

/// The requests of one RPC, served in batches.
pub(crate) struct Batcher<T> {
    node: Arc<Node>,
    rpc: &'static str,
    queue: Arc<Mutex<Queue<T>>>,
}

impl<T: Send + 'static> Batcher<T> {
    /// Serves `rpc` on `node`.
    pub(crate) fn new(node: Arc<Node>, rpc: &'static str) -> Batcher<T> {
        Batcher {
            node,
            rpc,
            queue: Arc::new(Mutex::new(Queue {
                jobs: VecDeque::new(),
                leading: false,
            })),
        }
    }

    /// What [`super::keys::run`] does for one request, in a batch: the caller's identity, the
    /// use case, exactly one durable audit record before the answer, and the log line.
    pub(crate) async fn run<R, F>(&self, request: Request<R>, f: F) -> Result<T, Status>
    where
        F: FnOnce(&Node, &mut node::Request, R) -> Result<T, NodeError> + Send + 'static,
        R: Send + 'static,
    {
        let request_id = format!("r-{}", uuid::Uuid::new_v4().simple());
        let who = match caller(&request) {
            Ok(who) => who,
            Err(status) => {
                return Err(
                    refuse_unauthenticated(&self.node, self.rpc, &request_id, status).await,
                );
            }
        };
        let name = who.to_string();
        let body = request.into_inner();
        let (reply, answered) = oneshot::channel();
        let job = Job {
            who,
            request_id: request_id.clone(),
            use_case: Box::new(move |n, req| f(n, req, body)),
            reply,
        };
        let lead = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.jobs.push_back(job);
            !std::mem::replace(&mut queue.leading, true)
        };
        if lead {
            let (node, queue, rpc) = (Arc::clone(&self.node), Arc::clone(&self.queue), self.rpc);
            tokio::task::spawn_blocking(move || serve(&node, rpc, &queue));
        }
        // A sender dropped without an answer: its batch's thread panicked.
        let outcome = answered
            .await
            .unwrap_or_else(|_| Err(NodeError::Internal(format!("{} did not finish", self.rpc))));
        answer(self.rpc, &request_id, &name, outcome)
    }
}

/// Serves batches until the queue is empty. Blocking.
fn serve<T>(node: &Node, rpc: &'static str, queue: &Mutex<Queue<T>>) {
    let _leading = Leading(queue);
    loop {
        let batch: Vec<Job<T>> = {
            let mut q = queue.lock().unwrap_or_else(PoisonError::into_inner);
            if q.jobs.is_empty() {
                q.leading = false;
                return;
            }
            let n = q.jobs.len().min(MOST_PER_BATCH);
            q.jobs.drain(..n).collect()
        };
        super::metrics::batch(rpc, batch.len());
        let mut ran = Unrecorded::new(rpc, batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for job in batch {
            ran.run(node, job.who, &job.request_id, job.use_case);
            replies.push(job.reply);
        }
        // Requests that arrive during this commit form the next batch.
        for (reply, result) in replies.into_iter().zip(ran.record(node)) {
            // A client that went away still had its record written.
            let _ = reply.send(result);
        }
    }
}

/// Hands the lead back if the serving thread panics: the requests still queued fail (their
/// senders are dropped), and the next request leads again.
struct Leading<'a, T>(&'a Mutex<Queue<T>>);

impl<T> Drop for Leading<'_, T> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let mut q = self.0.lock().unwrap_or_else(PoisonError::into_inner);
            q.jobs.clear();
            q.leading = false;
        }
    }
}
