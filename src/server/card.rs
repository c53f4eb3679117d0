//! `hkms.v1.CardService`: PIN unblock and reload commands for the service windows.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use zeroize::Zeroizing;

use crate::card::CardCommand;
use crate::node::{CardRequest, Node};
use crate::proto;
use crate::proto::card_service_server::CardService;

use super::identity::caller;
use super::keys::{execute, refuse_unauthenticated, run};

/// Cards of one `PersonaliseCards` stream in the works at once. Their answers still leave in
/// the order of the requests; working ahead lets one card's HSM calls overlap the previous
/// card's audit commit, so the records of a stream share group commits.
const CARDS_IN_FLIGHT: usize = 4;

/// The card service over one node.
pub struct CardApi {
    node: Arc<Node>,
    /// Cards of all streams in the works at once: twice the HSM sessions, so that one card
    /// can use a session while another waits for its commit. Without it, 16 streams put 64
    /// cards on blocking threads that queue for 4 sessions, and their wake-ups cost more
    /// CPU than the queueing saves. A stream waits for a permit without holding a thread.
    cards_at_once: Arc<Semaphore>,
}

impl CardApi {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> CardApi {
        let (_, sessions) = node.hsm().session_use();
        CardApi {
            cards_at_once: Arc::new(Semaphore::new(2 * sessions.max(1))),
            node,
        }
    }

    async fn command(
        &self,
        rpc: &'static str,
        command: CardCommand,
        request: Request<proto::CardCommandRequest>,
    ) -> Result<Response<proto::CardCommandResponse>, Status> {
        let answer = run(&self.node, rpc, request, move |n, req, mut r| {
            // Secrets leave the message at once, into memory that is wiped on drop.
            let pin = Zeroizing::new(std::mem::take(&mut r.pin));
            let cardholder_id = Zeroizing::new(std::mem::take(&mut r.cardholder_id));
            let agent = Zeroizing::new(std::mem::take(&mut r.agent_id));
            let agent_id = (!agent.is_empty()).then_some(agent);
            n.card_command(
                req,
                CardRequest {
                    command,
                    serial: r.card_serial,
                    challenge: r.challenge,
                    pin,
                    served_by: r.served_by,
                    cardholder_id,
                    agent_id,
                },
            )
        })
        .await?;
        Ok(Response::new(proto::CardCommandResponse {
            apdu: answer.apdu,
            master_key_id: answer.master_key_id,
            master_version: answer.master_version,
        }))
    }
}

#[tonic::async_trait]
impl CardService for CardApi {
    type PersonaliseCardsStream = ReceiverStream<Result<proto::PersonaliseResponse, Status>>;

    async fn personalise_cards(
        &self,
        request: Request<Streaming<proto::PersonaliseRequest>>,
    ) -> Result<Response<Self::PersonaliseCardsStream>, Status> {
        let who = match caller(&request) {
            Ok(who) => who,
            Err(status) => {
                let rid = format!("r-{}", uuid::Uuid::new_v4().simple());
                return Err(
                    refuse_unauthenticated(&self.node, "PersonaliseCards", &rid, status).await,
                );
            }
        };
        let incoming = request.into_inner();
        // A small buffer: the client's pace bounds the server's memory.
        let (tx, rx) = tokio::sync::mpsc::channel(32);
        let node = Arc::clone(&self.node);
        let cards_at_once = Arc::clone(&self.cards_at_once);
        tokio::spawn(async move {
            let batch = format!("r-{}", uuid::Uuid::new_v4().simple());
            let (mut cards, mut failed, mut undelivered) = (0u64, 0u64, 0u64);
            let (n, w, rid) = (Arc::clone(&node), who.clone(), batch.clone());
            let mut answers = incoming
                .map(move |item| {
                    let (n, who, rid) = (Arc::clone(&n), w.clone(), rid.clone());
                    let cards_at_once = Arc::clone(&cards_at_once);
                    async move {
                        let msg = item?;
                        let serial = msg.card_serial.clone();
                        // The card is a task of its own, so that it takes its permit and gives
                        // it back whether or not this stream is polled: a client that stops
                        // reading its answers must not hold permits the other streams need.
                        let card = tokio::spawn(async move {
                            // Never closed, so acquiring cannot fail.
                            let permit = cards_at_once.acquire_owned().await.ok();
                            tokio::task::spawn_blocking(move || {
                                let _permit = permit;
                                execute(&n, who, "PersonaliseCards", &rid, |n, req| {
                                    n.personalise_card(req, &msg.bureau_card_id, &msg.card_serial)
                                })
                            })
                            .await
                        });
                        let done = card.await.unwrap_or_else(Err);
                        Ok::<_, Status>((serial, done))
                    }
                })
                .buffered(CARDS_IN_FLIGHT);
            while let Some(item) = answers.next().await {
                let (serial, done) = match item {
                    Ok(answer) => answer,
                    Err(e) => {
                        // A broken stream still gets its batch record below.
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                };
                cards += 1;
                if !matches!(done, Ok(Ok(_))) {
                    failed += 1;
                }
                let answer = match done {
                    Ok(Ok(packages)) => proto::PersonaliseResponse {
                        card_serial: serial,
                        packages: packages
                            .into_iter()
                            .map(|(key_type, package)| proto::CardPackage { key_type, package })
                            .collect(),
                        error: String::new(),
                    },
                    Ok(Err(e)) => proto::PersonaliseResponse {
                        card_serial: serial,
                        packages: Vec::new(),
                        error: e.to_string(),
                    },
                    Err(e) => proto::PersonaliseResponse {
                        card_serial: serial,
                        packages: Vec::new(),
                        error: format!("did not finish: {e}"),
                    },
                };
                // A client that went away still lets the cards in the works finish (each has
                // its record); they are counted as undelivered in the batch record.
                if undelivered > 0 || tx.send(Ok(answer)).await.is_err() {
                    undelivered += 1;
                }
            }
            // The stream itself is a request too: one record of the batch, even when it
            // carried no card at all.
            let n = Arc::clone(&node);
            let _ = tokio::task::spawn_blocking(move || {
                execute(&n, who, "PersonaliseCards", &batch, |_, req| {
                    req.param("batch_cards", cards.to_string());
                    req.param("batch_failed", failed.to_string());
                    req.param("batch_undelivered", undelivered.to_string());
                    Ok(())
                })
            })
            .await;
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn unblock_pin(
        &self,
        request: Request<proto::CardCommandRequest>,
    ) -> Result<Response<proto::CardCommandResponse>, Status> {
        self.command("UnblockPin", CardCommand::Unblock, request)
            .await
    }

    async fn reload_pin(
        &self,
        request: Request<proto::CardCommandRequest>,
    ) -> Result<Response<proto::CardCommandResponse>, Status> {
        self.command("ReloadPin", CardCommand::Reload, request)
            .await
    }
}
