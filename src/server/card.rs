//! `hkms.v1.CardService`: PIN unblock and reload commands for the service windows.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::card::CardCommand;
use crate::node::{CardRequest, Node};
use crate::proto;
use crate::proto::card_service_server::CardService;

use super::keys::run;

/// The card service over one node.
pub struct CardApi {
    node: Arc<Node>,
}

impl CardApi {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> CardApi {
        CardApi { node }
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
