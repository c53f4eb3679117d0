//! `hkms card unblock|reset`: a service window asks for the command that unblocks a locked PIN
//! or resets a forgotten one. The PIN is prompted without echo (or read from standard input).

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::proto;
use crate::proto::card_service_client::CardServiceClient;

use super::client::{ClientArgs, status};
use super::secret::{read_secret, read_secret_file};

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
    /// The cardholder's ID number (recorded only as its ID MAC, made in the HSM). On the
    /// command line `ps` shows it to the host's other users: window software should use
    /// --cardholder-id-file or the API.
    #[arg(long, required_unless_present = "cardholder_id_file")]
    cardholder_id: Option<String>,
    /// A file whose first line is the cardholder's ID number (instead of --cardholder-id).
    #[arg(long, value_name = "FILE", conflicts_with = "cardholder_id")]
    cardholder_id_file: Option<std::path::PathBuf>,
    /// The agent's ID number, when an agent acts for the cardholder.
    #[arg(long)]
    agent_id: Option<String>,
    /// A file whose first line is the agent's ID number (instead of --agent-id).
    #[arg(long, value_name = "FILE", conflicts_with = "agent_id")]
    agent_id_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Subcommand)]
pub enum CardCommand {
    /// PIN UNBLOCK for a locked card (asks for the cardholder's current PIN).
    Unblock(CardArgs),
    /// PIN RELOAD for a forgotten PIN (asks for the new PIN).
    Reset(CardArgs),
    /// Batch personalisation: each card's keys as packages for the bureau. Resumable: cards
    /// whose packages are already in OUT are skipped, never made twice.
    Personalise {
        /// A file of card serials, one per line.
        #[arg(long)]
        serials: std::path::PathBuf,
        /// The bureau's transport key card id.
        #[arg(long)]
        bureau_card: String,
        /// The folder for the packages (SERIAL.KEY_TYPE.pkg).
        #[arg(long)]
        out: std::path::PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// The key types a personalised card gets, in the order the node answers.
const CARD_KEY_TYPES: [&str; 2] = ["pin-unblock", "pin-reload"];

fn package_path(out: &std::path::Path, serial: &str, key_type: &str) -> std::path::PathBuf {
    out.join(format!("{serial}.{key_type}.pkg"))
}

async fn personalise(
    serials: std::path::PathBuf,
    bureau_card: String,
    out: std::path::PathBuf,
    quiet: bool,
    client: ClientArgs,
) -> anyhow::Result<ExitCode> {
    use tokio_stream::StreamExt;
    let text = std::fs::read_to_string(&serials)
        .with_context(|| format!("cannot read the serials file {}", serials.display()))?;
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot create the package folder {}", out.display()))?;
    let mut all: Vec<String> = Vec::new();
    for s in text.lines().map(str::trim).filter(|s| !s.is_empty()) {
        let s = s.to_ascii_uppercase();
        if !all.contains(&s) {
            all.push(s);
        }
    }
    let todo: Vec<String> = all
        .iter()
        .filter(|s| {
            !CARD_KEY_TYPES
                .iter()
                .all(|k| package_path(&out, s, k).exists())
        })
        .cloned()
        .collect();
    let skipped = all.len() - todo.len();
    let bar = if quiet || client.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(todo.len() as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} cards {per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut c = CardServiceClient::new(client.channel().await?);
    let requests = tokio_stream::iter(todo.clone().into_iter().map(move |card_serial| {
        proto::PersonaliseRequest {
            bureau_card_id: bureau_card.clone(),
            card_serial,
        }
    }));
    let mut answers = c
        .personalise_cards(requests)
        .await
        .map_err(status)?
        .into_inner();
    let (mut done, mut failed) = (0usize, 0usize);
    let mut failures = Vec::new();
    while let Some(answer) = answers.next().await {
        let a = answer.map_err(status)?;
        if a.error.is_empty() {
            for p in &a.packages {
                let path = package_path(&out, &a.card_serial, &p.key_type);
                crate::durable::write_file(&path, &p.package, 0o644)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            done += 1;
        } else {
            failed += 1;
            bar.suspend(|| eprintln!("{}: {}", a.card_serial, a.error));
            failures.push(serde_json::json!({"serial": a.card_serial, "error": a.error}));
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    if client.json {
        println!(
            "{}",
            serde_json::json!({
                "personalised": done, "skipped": skipped, "failed": failures, "out": out,
            })
        );
    } else {
        println!("personalised {done} cards, skipped {skipped} already done, {failed} failed");
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

impl CardCommand {
    /// Runs the command; prints the APDU in hex.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        let (unblock, a) = match self {
            CardCommand::Unblock(a) => (true, a),
            CardCommand::Reset(a) => (false, a),
            CardCommand::Personalise {
                serials,
                bureau_card,
                out,
                quiet,
                client,
            } => return personalise(serials, bureau_card, out, quiet, client).await,
        };
        // ID numbers from files are read into wiped memory, as the PIN is.
        let mut cardholder_id = match (&a.cardholder_id_file, a.cardholder_id) {
            (Some(file), _) => read_secret_file("cardholder's ID number", file)?,
            (None, Some(id)) => zeroize::Zeroizing::new(id),
            (None, None) => anyhow::bail!("give --cardholder-id-file or --cardholder-id"),
        };
        let mut agent_id = match (&a.agent_id_file, a.agent_id) {
            (Some(file), _) => read_secret_file("agent's ID number", file)?,
            (None, id) => zeroize::Zeroizing::new(id.unwrap_or_default()),
        };
        let mut pin = read_secret(if unblock {
            "cardholder's PIN"
        } else {
            "new PIN"
        })?;
        let request = proto::CardCommandRequest {
            card_serial: a.serial,
            challenge: a.challenge,
            // Moved, not copied: the only plain copy is the message's own.
            pin: std::mem::take(&mut *pin),
            served_by: a.served_by,
            cardholder_id: std::mem::take(&mut *cardholder_id),
            agent_id: std::mem::take(&mut *agent_id),
            ..Default::default()
        };
        let answer = a
            .client
            .send_once(request, |ch, r| async move {
                let mut c = CardServiceClient::new(ch);
                if unblock {
                    c.unblock_pin(r).await
                } else {
                    c.reload_pin(r).await
                }
            })
            .await?;
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
