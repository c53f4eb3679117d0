//! `hkms transport ...` (transport key cards) and `hkms package ...` (key packages).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::proto;
use crate::proto::transport_service_client::TransportServiceClient;
use crate::server::services::convert::word;
use crate::transport::Package;

use super::client::{ClientArgs, status};
use super::output::print_key;
use super::pages::{PAGE_SIZE, all_pages, time_text};
use super::secret::read_secret;

#[derive(Debug, Subcommand)]
pub enum TransportCommand {
    /// Issue a transport key for a region onto a card (asks for the card's PIN).
    IssueCard {
        /// The recipient region.
        #[arg(long)]
        region: String,
        /// The card token's label.
        #[arg(long)]
        card: String,
        /// The done `manage` ceremony (action issue-card) that approved it.
        #[arg(long)]
        ceremony: Option<String>,
        /// Print only the card id and the KCV, separated by a space: what the recipient needs
        /// to load the card (for scripts).
        #[arg(short, long, conflicts_with = "json")]
        quiet: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Load a card's transport key into this node (asks for the card's PIN, then its security
    /// officer PIN; scripted, give them as two lines on standard input).
    LoadCard {
        /// The card token's label.
        #[arg(long)]
        card: String,
        /// The card id printed when it was issued.
        #[arg(long)]
        card_id: String,
        /// The KCV printed when it was issued, as the issuer gave it to you.
        #[arg(long)]
        kcv: String,
        /// Print only the card id (for scripts).
        #[arg(short, long, conflicts_with = "json")]
        quiet: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Transport keys this node issued or loaded.
    List {
        /// Print only the card ids, one a line (for scripts).
        #[arg(short, long, conflicts_with = "json")]
        quiet: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum PackageCommand {
    /// Wrap a sub-key for its region into a package file.
    Export {
        /// The id of the key to export (`--key` names the caller's TLS key).
        #[arg(long)]
        key_id: String,
        /// The recipient region (the key's own region).
        #[arg(long)]
        region: String,
        /// The issued card to wrap for (default: the newest for the region).
        #[arg(long)]
        card_id: Option<String>,
        /// The package file to write.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Import a package file into this node.
    Import {
        /// The package file.
        file: PathBuf,
        /// Print only the imported key's id (for scripts).
        #[arg(short, long, conflicts_with = "json")]
        quiet: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a package's header (offline; nothing secret is shown or needed).
    Inspect {
        /// The package file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A package file's bytes; the error names the file.
fn read_package(file: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(file).with_context(|| format!("cannot read the package {}", file.display()))
}

/// A transport key as `--json` prints it.
fn transport_json(t: &proto::TransportKeyInfo) -> serde_json::Value {
    serde_json::json!({"card_id": t.card_id, "region": t.region,
        "role": word::<proto::TransportKeyRole>(t.role), "kcv": t.kcv,
        "ceremony_id": t.ceremony_id, "created_at": time_text(t.created_at.as_ref())})
}

fn show(t: &proto::TransportKeyInfo, json: bool) {
    if json {
        println!("{}", transport_json(t));
    } else {
        println!(
            "{}  {}  {}  KCV {}  {}",
            t.card_id,
            t.region,
            word::<proto::TransportKeyRole>(t.role),
            t.kcv,
            time_text(t.created_at.as_ref())
        );
    }
}

impl TransportCommand {
    /// Runs the command.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            TransportCommand::IssueCard {
                region,
                card,
                ceremony,
                quiet,
                client,
            } => {
                let mut pin = read_secret("card PIN")?;
                let request = proto::IssueCardRequest {
                    region,
                    card_label: card,
                    card_pin: std::mem::take(&mut *pin),
                    ceremony_id: ceremony.unwrap_or_default(),
                    ..Default::default()
                };
                let t = client
                    .send_once(request, |ch, r| async move {
                        TransportServiceClient::new(ch).issue_card(r).await
                    })
                    .await?;
                if quiet {
                    println!("{} {}", t.card_id, t.kcv);
                } else {
                    show(&t, client.json);
                }
            }
            TransportCommand::LoadCard {
                card,
                card_id,
                kcv,
                quiet,
                client,
            } => {
                let mut pin = read_secret("card PIN")?;
                let mut so_pin = read_secret("card security officer PIN")?;
                let request = proto::LoadCardRequest {
                    card_label: card,
                    card_pin: std::mem::take(&mut *pin),
                    card_id,
                    card_so_pin: std::mem::take(&mut *so_pin),
                    expected_kcv: kcv,
                    ..Default::default()
                };
                let t = client
                    .send_once(request, |ch, r| async move {
                        TransportServiceClient::new(ch).load_card(r).await
                    })
                    .await?;
                if quiet {
                    println!("{}", t.card_id);
                } else {
                    show(&t, client.json);
                }
            }
            TransportCommand::List { quiet, client } => {
                let c = TransportServiceClient::new(client.channel().await?);
                let transport_keys = all_pages(|page_token| {
                    let mut c = c.clone();
                    let request = proto::ListTransportKeysRequest {
                        page_size: PAGE_SIZE,
                        page_token,
                    };
                    async move {
                        let page = c
                            .list_transport_keys(request)
                            .await
                            .map_err(status)?
                            .into_inner();
                        Ok((page.transport_keys, page.next_page_token))
                    }
                })
                .await?;
                if quiet {
                    for t in &transport_keys {
                        println!("{}", t.card_id);
                    }
                } else if client.json {
                    // One array, `[]` when there is none, as `keys list --json` prints.
                    let all: Vec<_> = transport_keys.iter().map(transport_json).collect();
                    println!("{}", serde_json::Value::Array(all));
                } else {
                    for t in &transport_keys {
                        show(t, false);
                    }
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}

impl PackageCommand {
    /// Runs the command.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            PackageCommand::Export {
                key_id,
                region,
                card_id,
                out,
                client,
            } => {
                let request = proto::ExportKeyRequest {
                    key_id,
                    recipient_region: region,
                    card_id: card_id.unwrap_or_default(),
                    ..Default::default()
                };
                let p = client
                    .send_once(request, |ch, r| async move {
                        TransportServiceClient::new(ch).export_key(r).await
                    })
                    .await?
                    .package;
                // Whole or not at all, and never over an earlier package.
                crate::durable::write_new_file(&out, &p, 0o644)
                    .with_context(|| format!("cannot write {}", out.display()))?;
                if client.json {
                    // The header as `package inspect --json` shows it (package id, key, KCVs).
                    let header = Package::decode(&p).ok().map(|d| d.header);
                    println!(
                        "{}",
                        serde_json::json!({"out": out, "bytes": p.len(), "header": header})
                    );
                } else {
                    println!("wrote {} ({} bytes)", out.display(), p.len());
                }
            }
            PackageCommand::Import {
                file,
                quiet,
                client,
            } => {
                let bytes = read_package(&file)?;
                let request = proto::ImportKeyRequest {
                    package: bytes,
                    ..Default::default()
                };
                let key = client
                    .send_once(request, |ch, r| async move {
                        TransportServiceClient::new(ch).import_key(r).await
                    })
                    .await?
                    .key
                    .ok_or_else(|| anyhow::anyhow!("the server answered without a key"))?;
                if quiet {
                    println!("{}", key.id);
                } else {
                    print_key(&key, client.json)?;
                }
            }
            PackageCommand::Inspect { file, json } => {
                let bytes = read_package(&file)?;
                let p = Package::decode(&bytes)
                    .with_context(|| format!("{} is not a key package", file.display()))?;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "header": p.header, "wrapped_len": p.wrapped.len(),
                            "mac": hex::encode_upper(p.mac),
                        })
                    );
                } else {
                    let header = serde_json::to_value(&p.header)?;
                    if let Some(fields) = header.as_object() {
                        for (name, value) in fields {
                            let value = value
                                .as_str()
                                .map_or_else(|| value.to_string(), String::from);
                            println!("{name:<17} {value}");
                        }
                    }
                    println!(
                        "{:<17} {} bytes (RFC 5649)\n{:<17} {}",
                        "wrapped key",
                        p.wrapped.len(),
                        "mac",
                        hex::encode_upper(p.mac)
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    }
}
