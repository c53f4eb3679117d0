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
use std::time::Instant;

use tokio::sync::oneshot;
use tonic::{Request, Status};

use crate::node::{self, Caller, Node, NodeError};
use crate::proto::request_id::Mutating;
use crate::store::RetryAnswer;

use super::super::edge::{identity::caller, metrics};
use super::once::Once;
use super::{Answer, Unrecorded, answer, authenticated};

/// Most requests run before their records are committed; later ones wait for the next batch.
const MOST_PER_BATCH: usize = 32;

type UseCase<T> = Box<dyn FnOnce(&Node, &mut node::Request) -> Result<T, NodeError> + Send>;

/// What a request with a client request id keeps for its retries once it is recorded (given
/// its request id and result); it holds the caller's id until it is dropped.
type Keep<T> = Box<dyn Fn(&str, &Result<T, NodeError>) -> Option<RetryAnswer> + Send>;

struct Job<T> {
    /// When the request joined the queue.
    queued: Instant,
    who: Caller,
    request_id: String,
    use_case: UseCase<T>,
    reply: oneshot::Sender<Result<T, NodeError>>,
    /// For a mutating request: its answer for its retries (`once.rs`).
    keep: Option<Keep<T>>,
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

    /// What [`super::unary`] does for one request, in a batch: the caller's identity, the
    /// use case, exactly one durable audit record before the answer, and the log line.
    pub(crate) async fn run<R, F>(&self, request: Request<R>, f: F) -> Result<Answer<T>, Status>
    where
        F: FnOnce(&Node, &mut node::Request, R) -> Result<T, NodeError> + Send + 'static,
        R: Send + 'static,
    {
        let (request_id, who) =
            authenticated(&self.node, self.rpc, caller(&self.node, &request)).await?;
        let body = request.into_inner();
        let use_case: UseCase<T> = Box::new(move |n, req| f(n, req, body));
        self.serve(request_id, who, use_case, None).await
    }

    /// [`Batcher::run`] for a mutating RPC whose message carries a `request_id`, as
    /// [`super::unary_once`] does it: the use case answers with the reply message, which is
    /// kept for the request's retries, all of a batch's in one commit after their records.
    pub(crate) async fn run_once<R, F>(
        &self,
        request: Request<R>,
        f: F,
    ) -> Result<Answer<T>, Status>
    where
        F: FnOnce(&Node, &mut node::Request, R) -> Result<T, NodeError> + Send + 'static,
        R: Mutating + Send + 'static,
        T: prost::Message + Default,
    {
        let (request_id, who) =
            authenticated(&self.node, self.rpc, caller(&self.node, &request)).await?;
        let body = request.into_inner();
        // Waits here, holding no thread and no place in a batch, for the caller's id.
        let once = Arc::new(Once::read(&self.node, self.rpc, &who, &body).await);
        let running = Arc::clone(&once);
        let use_case: UseCase<T> =
            Box::new(move |n, req| running.run(n, req, |n, req| f(n, req, body)));
        let keep: Keep<T> = Box::new(move |rid, result| once.answer_to_keep(rid, result));
        self.serve(request_id, who, use_case, Some(keep)).await
    }

    /// Queues one authenticated request, leads a batch if none runs, and waits for its answer.
    async fn serve(
        &self,
        request_id: String,
        who: Caller,
        use_case: UseCase<T>,
        keep: Option<Keep<T>>,
    ) -> Result<Answer<T>, Status> {
        let name = who.to_string();
        let (reply, answered) = oneshot::channel();
        let job = Job {
            queued: Instant::now(),
            who,
            request_id: request_id.clone(),
            use_case,
            reply,
            keep,
        };
        let lead = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.jobs.push_back(job);
            !std::mem::replace(&mut queue.leading, true)
        };
        if lead {
            let (node, rpc) = (Arc::clone(&self.node), self.rpc);
            let lead = Lead {
                queue: Arc::clone(&self.queue),
                done: false,
            };
            tokio::task::spawn_blocking(move || serve_batches(&node, rpc, lead));
        }
        // A sender dropped without an answer: its batch's thread was lost (see `Lead`).
        let outcome = answered
            .await
            .unwrap_or_else(|_| Err(NodeError::Internal(format!("{} did not finish", self.rpc))));
        answer(self.rpc, &request_id, &name, outcome)
    }
}

/// Serves batches until the queue is empty. Blocking.
fn serve_batches<T>(node: &Node, rpc: &'static str, mut lead: Lead<T>) {
    loop {
        let batch: Vec<Job<T>> = {
            let mut q = lead.queue.lock().unwrap_or_else(PoisonError::into_inner);
            if q.jobs.is_empty() {
                q.leading = false;
                lead.done = true;
                return;
            }
            let n = q.jobs.len().min(MOST_PER_BATCH);
            q.jobs.drain(..n).collect()
        };
        metrics::batch(rpc, batch.len());
        let started = Instant::now();
        let mut ran = Unrecorded::new(rpc, batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for job in batch {
            metrics::batch_wait(rpc, job.queued.elapsed());
            ran.run(node, job.who, &job.request_id, job.use_case);
            replies.push((job.reply, job.request_id, job.keep));
        }
        // Requests that arrive during this commit form the next batch.
        let recording = Instant::now();
        let results = ran.record(node);
        metrics::batch_time(rpc, recording - started, recording.elapsed());
        let kept: Vec<RetryAnswer> = replies
            .iter()
            .zip(&results)
            .filter_map(|((_, rid, keep), result)| keep.as_ref().and_then(|k| k(rid, result)))
            .collect();
        if !kept.is_empty() {
            node.retries().keep(&kept);
        }
        for ((reply, _, keep), result) in replies.into_iter().zip(results) {
            // The caller's request id is free again once its answer is kept.
            drop(keep);
            // A client that went away still had its record written.
            let _ = reply.send(result);
        }
    }
}

/// The lead of a queue. Dropped other than by an empty queue (the blocking task never ran,
/// as when the runtime shuts down, or its thread panicked), it fails the requests still
/// queued (their senders are dropped) and hands the lead back, so that the next request
/// leads again instead of waiting for a leader that will never come.
struct Lead<T> {
    queue: Arc<Mutex<Queue<T>>>,
    /// Set when the queue was found empty and the lead handed back under its lock.
    done: bool,
}

impl<T> Drop for Lead<T> {
    fn drop(&mut self) {
        if !self.done {
            let mut q = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            q.jobs.clear();
            q.leading = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(queue: &Arc<Mutex<Queue<u32>>>) -> oneshot::Receiver<Result<u32, NodeError>> {
        let (reply, answered) = oneshot::channel();
        let who = crate::policy::Identity::from_uri("hkms://window/municipal/440100/counter-1")
            .unwrap()
            .into();
        let mut q = queue.lock().unwrap();
        q.jobs.push_back(Job {
            queued: Instant::now(),
            who,
            request_id: "r-1".into(),
            use_case: Box::new(|_, _| Ok(1)),
            reply,
            keep: None,
        });
        q.leading = true;
        answered
    }

    #[test]
    fn a_lead_lost_before_its_thread_ran_fails_the_queue_and_hands_the_lead_back() {
        let queue = Arc::new(Mutex::new(Queue {
            jobs: VecDeque::new(),
            leading: false,
        }));
        let mut answered = queued(&queue);
        // As when the runtime drops a blocking task that never started.
        drop(Lead {
            queue: Arc::clone(&queue),
            done: false,
        });
        assert!(
            answered.try_recv().is_err(),
            "the queued request is failed, not left waiting"
        );
        let q = queue.lock().unwrap();
        assert!(q.jobs.is_empty());
        assert!(!q.leading, "the next request leads again");
    }

    #[test]
    fn a_lead_handed_back_on_an_empty_queue_leaves_a_new_leaders_jobs_alone() {
        let queue = Arc::new(Mutex::new(Queue {
            jobs: VecDeque::new(),
            leading: false,
        }));
        let finished = Lead {
            queue: Arc::clone(&queue),
            done: true,
        };
        let mut answered = queued(&queue);
        drop(finished);
        assert!(matches!(
            answered.try_recv(),
            Err(oneshot::error::TryRecvError::Empty)
        ));
        assert_eq!(queue.lock().unwrap().jobs.len(), 1);
    }
}
