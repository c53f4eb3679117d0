//! `hkms card unblock|reset`: a service window asks for the command that unblocks a locked PIN
//! or resets a forgotten one. The PIN is prompted without echo (or read from standard input).

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::proto;
use crate::proto::card_service_client::CardServiceClient;

use super::client::{ClientArgs, status};
use super::secret::read_secret;

/// The card and the people at the window.
#[derive(Debug, Args)]
pub struct CardArgs {
    /// The card's application serial number (16 hex digits).
    #[arg(long)]
    serial: String,
    /// The card's GET CHALLENGE answer (16 hex digits).
    #[arg(long)]
    challenge: String,
    /// The window operator serving the cardholder.
    #[arg(long)]
    served_by: String,
    /// The cardholder's ID number (recorded only as a salted hash).
    #[arg(long)]
    cardholder_id: String,
    /// The agent's ID number, when an agent acts for the cardholder.
    #[arg(long)]
    agent_id: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum CardCommand {
    /// PIN UNBLOCK for a locked card (asks for the cardholder's current PIN).
    Unblock(CardArgs),
    /// PIN RELOAD for a forgotten PIN (asks for the new PIN).
    Reset(CardArgs),
}

impl CardCommand {
    /// Runs the command; prints the APDU in hex.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let (unblock, a) = match self {
            CardCommand::Unblock(a) => (true, a),
            CardCommand::Reset(a) => (false, a),
        };
        let pin = read_secret(if unblock {
            "cardholder's PIN"
        } else {
            "new PIN"
        })?;
        let request = proto::CardCommandRequest {
            card_serial: a.serial,
            challenge: a.challenge,
            pin: pin.to_string(),
            served_by: a.served_by,
            cardholder_id: a.cardholder_id,
            agent_id: a.agent_id.unwrap_or_default(),
        };
        let mut c = CardServiceClient::new(a.client.channel().await?);
        let answer = if unblock {
            c.unblock_pin(request).await
        } else {
            c.reload_pin(request).await
        }
        .map_err(status)?
        .into_inner();
        if a.client.json {
            println!(
                "{}",
                serde_json::json!({
                    "apdu": hex::encode_upper(&answer.apdu),
                    "master_key_id": answer.master_key_id,
                    "master_version": answer.master_version,
                })
            );
        } else {
            println!("{}", hex::encode_upper(&answer.apdu));
        }
        Ok(ExitCode::SUCCESS)
    }
}
