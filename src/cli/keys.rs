//! `hkms keys ...`: a gRPC client of a running node.

use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use tonic::transport::Channel;

use crate::proto;
use crate::proto::key_service_client::KeyServiceClient;

use super::client::{ClientArgs, enum_arg, status};
use super::output::{print_key, print_keys};
use super::pages::{PAGE_SIZE, all_pages};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Generate a key of a policy key type at the node's tier and region.
    Generate {
        /// The key type, e.g. card-master.
        #[arg(long = "type")]
        key_type: String,
        /// Print only the new key's id (for scripts).
        #[arg(short, long, conflicts_with = "json")]
        quiet: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Diversify a key for a child region (national -> provincial -> municipal).
    Derive {
        /// The parent key's id.
        #[arg(long)]
        parent: String,
        /// The child region code, e.g. 440000.
        #[arg(long)]
        region: String,
        /// Print only the new key's id (for scripts).
        #[arg(short, long, conflicts_with = "json")]
        quiet: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List keys, optionally filtered.
    List {
        /// Only this tier.
        #[arg(long, default_value = "")]
        tier: String,
        /// Only this region.
        #[arg(long, default_value = "")]
        region: String,
        /// Only this key type.
        #[arg(long = "type", default_value = "")]
        key_type: String,
        /// Only this state.
        #[arg(long, default_value = "")]
        state: String,
        /// Show the hierarchy as a tree (national → provincial → municipal).
        #[arg(long, conflicts_with = "json")]
        tree: bool,
        /// Print only the keys' ids, one a line (for scripts).
        #[arg(short, long, conflicts_with_all = ["json", "tree"])]
        quiet: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one key.
    Show {
        /// The key id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Move a key through its lifecycle (active, suspended, retired, destroyed).
    State {
        /// The key id.
        id: String,
        /// The new state.
        state: String,
        /// Refuse unless the key is in this state now.
        #[arg(long)]
        expect: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Compare token and registry (local admin: opens them directly; see docs/architecture.md):
    /// exit 0 they agree, 1 orphans or missing keys found (and left), 2 error.
    Orphans {
        /// The node config file.
        #[arg(long, env = "HKMS_CONFIG")]
        config: std::path::PathBuf,
        /// Destroy the orphan keys found on the token.
        #[arg(long)]
        destroy: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

impl KeysCommand {
    /// Runs the command.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            KeysCommand::Generate {
                key_type,
                quiet,
                client,
            } => {
                let request = proto::GenerateKeyRequest {
                    key_type,
                    ..Default::default()
                };
                let r = client
                    .send_once(request, |ch, r| async move {
                        KeyServiceClient::new(ch).generate_key(r).await
                    })
                    .await?;
                show_new(r.key, client.json, quiet)
            }
            KeysCommand::Derive {
                parent,
                region,
                quiet,
                client,
            } => {
                let request = proto::DeriveSubKeyRequest {
                    parent_id: parent,
                    region,
                    ..Default::default()
                };
                let r = client
                    .send_once(request, |ch, r| async move {
                        KeyServiceClient::new(ch).derive_sub_key(r).await
                    })
                    .await?;
                show_new(r.key, client.json, quiet)
            }
            KeysCommand::List {
                tier,
                region,
                key_type,
                state,
                tree,
                quiet,
                client,
            } => {
                let tier = enum_arg::<proto::Tier>("--tier", &tier)?;
                let state = enum_arg::<proto::KeyState>("--state", &state)?;
                let c = connect(&client).await?;
                let keys = all_pages(|page_token| {
                    let mut c = c.clone();
                    let request = proto::ListKeysRequest {
                        tier,
                        region: region.clone(),
                        key_type: key_type.clone(),
                        state,
                        page_size: PAGE_SIZE,
                        page_token,
                    };
                    async move {
                        let page = c.list_keys(request).await.map_err(status)?.into_inner();
                        Ok((page.keys, page.next_page_token))
                    }
                })
                .await?;
                if quiet {
                    for k in &keys {
                        println!("{}", k.id);
                    }
                } else if tree {
                    print!("{}", super::output::key_tree(&keys));
                } else {
                    print_keys(&keys, client.json)?;
                }
                Ok(ExitCode::SUCCESS)
            }
            KeysCommand::Show { id, client } => {
                let mut c = connect(&client).await?;
                let r = c
                    .get_key(proto::GetKeyRequest { id })
                    .await
                    .map_err(status)?;
                show(r.into_inner().key, client.json)
            }
            KeysCommand::State {
                id,
                state,
                expect,
                client,
            } => {
                let state = enum_arg::<proto::KeyState>("state", &state)?;
                let expected_state =
                    enum_arg::<proto::KeyState>("--expect", &expect.unwrap_or_default())?;
                let request = proto::ChangeKeyStateRequest {
                    id,
                    state,
                    expected_state,
                    ..Default::default()
                };
                let r = client
                    .send_once(request, |ch, r| async move {
                        KeyServiceClient::new(ch).change_key_state(r).await
                    })
                    .await?;
                show(r.key, client.json)
            }
            KeysCommand::Orphans {
                config,
                destroy,
                json,
            } => Ok(super::admin::orphans(&config, destroy, json)),
        }
    }
}

async fn connect(args: &ClientArgs) -> anyhow::Result<KeyServiceClient<Channel>> {
    Ok(KeyServiceClient::new(args.channel().await?))
}

/// A key the command made: shown, or with `quiet` only its id.
fn show_new(key: Option<proto::Key>, json: bool, quiet: bool) -> anyhow::Result<ExitCode> {
    if quiet {
        let key = key.context("the server answered without a key")?;
        println!("{}", key.id);
        return Ok(ExitCode::SUCCESS);
    }
    show(key, json)
}

fn show(key: Option<proto::Key>, json: bool) -> anyhow::Result<ExitCode> {
    let key = key.context("the server answered without a key")?;
    print_key(&key, json)?;
    Ok(ExitCode::SUCCESS)
}
