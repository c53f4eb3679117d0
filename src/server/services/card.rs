//! `hkms.v1.CardService`: PIN unblock and reload commands for the service windows.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use zeroize::Zeroizing;

use crate::card::CardCommand;
use crate::node::{Caller, CardPackages, CardRequest, InField, Node, NodeError, Reason, input};
use crate::proto;
use crate::proto::card_service_server::CardService;

use super::super::edge::{details::refusal, identity::REVOKED, metrics};
use super::super::pipeline::{Batcher, execute, open_stream, run_all, to_status};

/// Most cards of one `PersonaliseCards` stream that one blocking thread works through in a
/// row before their records are committed together. A stream takes the cards that have
/// arrived, up to this many, so a client that sends one card at a time still gets each answer
/// at once.
const CARDS_PER_BATCH: usize = 8;

/// Batches of one stream in the works at once: one batch's HSM calls overlap the previous
/// batch's commit. Answers still leave in the order of the requests.
const BATCHES_IN_FLIGHT: usize = 2;

/// The card service over one node.
pub struct CardApi {
    node: Arc<Node>,
    /// Batches of all streams that run their HSM calls at once: one per HSM session, so that
    /// no batch waits inside the session pool. Without it, 16 streams put their cards on
    /// blocking threads that queue for 4 sessions, and their wake-ups and SoftHSM2's lock
    /// contention cost more CPU than the concurrency gains. A batch gives its turn back
    /// before its durable wait; a stream waits for a turn without holding a thread.
    hsm_turns: Arc<Semaphore>,
    unblock: Batcher<proto::CardCommandResponse>,
    reload: Batcher<proto::CardCommandResponse>,
}

impl CardApi {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> CardApi {
        let (_, sessions) = node.core().token().session_use();
        CardApi {
            hsm_turns: Arc::new(Semaphore::new(sessions.max(1))),
            unblock: Batcher::new(Arc::clone(&node), "UnblockPin"),
            reload: Batcher::new(Arc::clone(&node), "ReloadPin"),
            node,
        }
    }

    async fn command(
        &self,
        command: CardCommand,
        request: Request<proto::CardCommandRequest>,
    ) -> Result<Response<proto::CardCommandResponse>, Status> {
        let batcher = match command {
            CardCommand::Unblock => &self.unblock,
            CardCommand::Reload => &self.reload,
        };
        let answer = batcher
            .run_once(request, move |n, req, mut r| {
                // Secrets leave the message at once, into memory that is wiped on drop.
                let pin = Zeroizing::new(std::mem::take(&mut r.pin));
                let cardholder_id = Zeroizing::new(std::mem::take(&mut r.cardholder_id));
                let agent = Zeroizing::new(std::mem::take(&mut r.agent_id));
                let agent_id = (!agent.is_empty()).then_some(agent);
                req.param("command", command.as_str());
                req.param("card_serial", &r.card_serial);
                req.param("served_by", &r.served_by);
                req.param("agent", agent_id.is_some().to_string());
                let serial = input::card_serial(&r.card_serial).field("card_serial")?;
                let answer = n.cards().card_command(
                    req,
                    CardRequest {
                        command,
                        serial,
                        challenge: r.challenge,
                        pin,
                        served_by: r.served_by,
                        cardholder_id,
                        agent_id,
                    },
                )?;
                Ok(proto::CardCommandResponse {
                    apdu: answer.apdu,
                    master_key_id: answer.master_key_id,
                    master_version: answer.master_version,
                })
            })
            .await?;
        Ok(answer.into_response())
    }
}

#[tonic::async_trait]
impl CardService for CardApi {
    type PersonaliseCardsStream = ReceiverStream<Result<proto::PersonaliseResponse, Status>>;

    async fn personalise_cards(
        &self,
        request: Request<Streaming<proto::PersonaliseRequest>>,
    ) -> Result<Response<Self::PersonaliseCardsStream>, Status> {
        let started = open_stream(&self.node, "PersonaliseCards", &request).await?;
        let (batch, who) = (started.request_id.clone(), started.who.clone());
        // Checked again before every batch: a revocation list loaded meanwhile ends the stream.
        let chain = request.peer_certs().unwrap_or_default();
        let incoming = request.into_inner();
        // A small buffer: the client's pace bounds the server's memory.
        let (tx, rx) = tokio::sync::mpsc::channel(32);
        let node = Arc::clone(&self.node);
        let hsm_turns = Arc::clone(&self.hsm_turns);
        tokio::spawn(async move {
            let (mut cards, mut failed, mut undelivered) = (0u64, 0u64, 0u64);
            let mut revoked = None;
            let (n, w, rid) = (Arc::clone(&node), who.clone(), batch.clone());
            let mut answers = incoming
                .ready_chunks(CARDS_PER_BATCH)
                .map(move |chunk| {
                    let batch = Batch {
                        node: Arc::clone(&n),
                        who: w.clone(),
                        request_id: rid.clone(),
                        hsm_turns: Arc::clone(&hsm_turns),
                        chain: Arc::clone(&chain),
                    };
                    personalise_batch(batch, chunk)
                })
                .buffered(BATCHES_IN_FLIGHT);
            while let Some((cards_done, ended)) = answers.next().await {
                for (serial, result) in cards_done {
                    cards += 1;
                    failed += u64::from(result.is_err());
                    // A client that went away still lets the cards in the works finish (each
                    // has its record); they are counted as undelivered in the batch record.
                    if undelivered > 0 || tx.send(Ok(card_answer(serial, result))).await.is_err() {
                        undelivered += 1;
                    }
                }
                if let Some(end) = ended {
                    // A broken stream still gets its batch record below.
                    let status = match end {
                        Ended::Broken(e) => e,
                        Ended::Revoked(serial) => {
                            let status = refusal(
                                Reason::CertificateRevoked,
                                REVOKED,
                                vec![("serial", serial.clone())],
                            );
                            revoked = Some(serial);
                            status
                        }
                    };
                    let _ = tx.send(Err(status)).await;
                    break;
                }
            }
            // The stream itself is a request too: one record of the batch, even when it
            // carried no card at all.
            let n = Arc::clone(&node);
            let revoked_serial = revoked.clone();
            let recorded = tokio::task::spawn_blocking(move || {
                execute(&n, who, "PersonaliseCards", &batch, |_, req| {
                    req.param("batch_cards", cards.to_string());
                    req.param("batch_failed", failed.to_string());
                    req.param("batch_undelivered", undelivered.to_string());
                    match revoked_serial {
                        Some(serial) => {
                            req.param("revoked_serial", serial);
                            Err(NodeError::PermissionDenied(REVOKED.into()))
                        }
                        None => Ok(()),
                    }
                })
            })
            .await;
            // A stream whose own record cannot be written does not end as a success.
            let unrecorded = match recorded {
                Ok(Ok(())) => None,
                // The revocation, recorded and already answered.
                Ok(Err(NodeError::PermissionDenied(_))) if revoked.is_some() => None,
                Ok(Err(e)) => Some(to_status(&e)),
                Err(_) => Some(refusal(
                    Reason::AuditLogUnavailable,
                    "the stream's record could not be written; it is refused",
                    Vec::new(),
                )),
            };
            if let Some(status) = unrecorded {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(started.respond(ReceiverStream::new(rx)))
    }

    async fn unblock_pin(
        &self,
        request: Request<proto::CardCommandRequest>,
    ) -> Result<Response<proto::CardCommandResponse>, Status> {
        self.command(CardCommand::Unblock, request).await
    }

    async fn reload_pin(
        &self,
        request: Request<proto::CardCommandRequest>,
    ) -> Result<Response<proto::CardCommandResponse>, Status> {
        self.command(CardCommand::Reload, request).await
    }
}

/// What a batch of a stream works with.
struct Batch {
    node: Arc<Node>,
    who: Caller,
    request_id: String,
    hsm_turns: Arc<Semaphore>,
    /// The client's certificates (DER, leaf first), checked against the lists in force.
    chain: Arc<Vec<tonic::transport::CertificateDer<'static>>>,
}

/// Why a stream ends before its client closes it.
enum Ended {
    /// The client's stream failed; this is its error.
    Broken(Status),
    /// A certificate of the client's chain was revoked since the stream began (its serial).
    Revoked(String),
}

/// One batch of a `PersonaliseCards` stream: the cards that had arrived, up to the first
/// transport error (returned too, as the stream ends there). Each card's result comes back
/// once its record is durable. No card is made once the client's certificate is revoked.
async fn personalise_batch(
    batch: Batch,
    chunk: Vec<Result<proto::PersonaliseRequest, Status>>,
) -> (Vec<(String, Result<CardPackages, String>)>, Option<Ended>) {
    let Batch {
        node,
        who,
        request_id,
        hsm_turns,
        chain,
    } = batch;
    if let Some(serial) = node.revoked_in(&chain) {
        return (Vec::new(), Some(Ended::Revoked(serial)));
    }
    let mut broken = None;
    let mut msgs = Vec::with_capacity(chunk.len());
    for item in chunk {
        match item {
            Ok(msg) if broken.is_none() => msgs.push(msg),
            Ok(_) => {}
            Err(e) => {
                broken.get_or_insert(e);
            }
        }
    }
    let broken = broken.map(Ended::Broken);
    let serials: Vec<String> = msgs.iter().map(|m| m.card_serial.clone()).collect();
    if msgs.is_empty() {
        return (Vec::new(), broken);
    }
    metrics::batch("PersonaliseCards", msgs.len());
    // A task of its own, so that the batch takes its turn and gives it back whether or not
    // the stream is polled: a client that stops reading its answers must not hold turns the
    // other streams need.
    let work = tokio::spawn(async move {
        // Never closed, so acquiring cannot fail.
        let turn = hsm_turns.acquire_owned().await.ok();
        tokio::task::spawn_blocking(move || {
            let ran = run_all(
                &node,
                &who,
                "PersonaliseCards",
                &request_id,
                msgs,
                |n, req, m| {
                    req.param("card_serial", &m.card_serial);
                    req.param("bureau_card_id", &m.bureau_card_id);
                    let serial = input::card_serial(&m.card_serial).field("card_serial")?;
                    n.cards().personalise_card(req, &m.bureau_card_id, &serial)
                },
            );
            // The HSM's turn ends here; the durable wait needs none.
            drop(turn);
            ran.record(&node)
        })
        .await
    });
    let results: Vec<Result<CardPackages, String>> = match work.await.unwrap_or_else(Err) {
        Ok(results) => results
            .into_iter()
            .map(|r| r.map_err(|e| e.to_string()))
            .collect(),
        Err(e) => serials
            .iter()
            .map(|_| Err(format!("did not finish: {e}")))
            .collect(),
    };
    (serials.into_iter().zip(results).collect(), broken)
}

/// The stream's answer for one card.
fn card_answer(serial: String, result: Result<CardPackages, String>) -> proto::PersonaliseResponse {
    match result {
        Ok(packages) => proto::PersonaliseResponse {
            card_serial: serial,
            packages: packages
                .into_iter()
                .map(|(key_type, package)| proto::CardPackage { key_type, package })
                .collect(),
            error: String::new(),
        },
        Err(error) => proto::PersonaliseResponse {
            card_serial: serial,
            packages: Vec::new(),
            error,
        },
    }
}
