//! `hkms policy ...`: check a policy file, explain a decision (both offline, for officers), and
//! show or reload the policy of a running node.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::hierarchy::Region;
use crate::policy::{Identity, Operation, Policy};
use crate::proto;
use crate::proto::policy_service_client::PolicyServiceClient;

use super::client::{ClientArgs, status};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check a policy file; errors name the file, the line and what to fix (exit 0 good,
    /// 1 refused).
    Check {
        /// The policy file.
        file: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Explain what the policy decides for one request (exit 0 allowed, 1 denied, 2 error).
    Explain {
        /// The caller, as in its certificate: hkms://ROLE/TIER/REGION/NAME.
        #[arg(long = "as")]
        identity: String,
        /// The operation: generate, derive, export, import, use, read, read-audit, approve, manage.
        #[arg(long)]
        op: String,
        /// The key type concerned, if any.
        #[arg(long)]
        key_type: Option<String>,
        /// The target region.
        #[arg(long)]
        region: String,
        /// The policy file (the node config's `[node] policy`).
        #[arg(long, env = "HKMS_POLICY")]
        policy: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the policy in force on a node (its SHA-256, key types, rules).
    Show {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Make a node re-read its policy file (admins); a bad file keeps the old policy.
    Reload {
        #[command(flatten)]
        client: ClientArgs,
    },
}

impl PolicyCommand {
    /// Runs the command.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            PolicyCommand::Check { file, json } => match Policy::load(&file) {
                Ok(p) if json => {
                    println!(
                        "{}",
                        serde_json::json!({
                            "ok": true, "file": file, "sha256": p.sha256,
                            "key_types": p.catalogue.names().count(), "rules": p.rules.len(),
                            "ceremonies": p.quorums.len(),
                            "card_limits": p.card_limits.describe(),
                        })
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Ok(p) => {
                    println!(
                        "policy OK: {} key types, {} rules, {} ceremonies, sha256 {}",
                        p.catalogue.names().count(),
                        p.rules.len(),
                        p.quorums.len(),
                        p.sha256
                    );
                    // Absent or not, the limits in force: the defaults are not "no limit".
                    println!("{}", p.card_limits.describe());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"ok": false, "file": file, "error": e.to_string()})
                        );
                    } else {
                        println!("policy refused: {e}");
                    }
                    Ok(ExitCode::FAILURE)
                }
            },
            PolicyCommand::Explain {
                identity,
                op,
                key_type,
                region,
                policy,
                json,
            } => {
                // 1 is the answer "denied"; a question that cannot be answered is 2.
                let decided = (|| -> anyhow::Result<_> {
                    let who = Identity::from_uri(&identity).map_err(anyhow::Error::msg)?;
                    let op: Operation = op.parse().map_err(anyhow::Error::msg)?;
                    let region = Region::parse(&region)?;
                    let policy = Policy::load(&policy)?;
                    let d = policy.decide(&who, op, key_type.as_deref(), &region);
                    Ok((d, policy.sha256))
                })();
                let (d, sha256) = match decided {
                    Ok(answer) => answer,
                    Err(e) => {
                        eprintln!("hkms: {e}");
                        return Ok(ExitCode::from(2));
                    }
                };
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "allowed": d.allowed, "rule": d.rule, "reason": d.reason,
                            "policy_sha256": sha256,
                        })
                    );
                } else {
                    println!("{}", d.reason);
                    println!("policy sha256 {sha256}");
                }
                Ok(if d.allowed {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
            PolicyCommand::Show { client } => {
                let mut c = PolicyServiceClient::new(client.channel().await?);
                let p = c
                    .get_policy(proto::GetPolicyRequest {})
                    .await
                    .map_err(status)?
                    .into_inner();
                print_info(&p, client.json)
            }
            PolicyCommand::Reload { client } => {
                let mut c = PolicyServiceClient::new(client.channel().await?);
                let p = c
                    .reload_policy(proto::ReloadPolicyRequest {})
                    .await
                    .map_err(status)?
                    .into_inner();
                print_info(&p, client.json)
            }
        }
    }
}

fn print_info(p: &proto::PolicyInfo, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!(
            "{}",
            serde_json::json!({
                "sha256": p.sha256, "origin": p.origin, "key_types": p.key_types, "rules": p.rules,
            })
        );
    } else {
        println!("policy  {}", p.origin);
        println!("sha256  {}", p.sha256);
        println!("types   {}", p.key_types.join(", "));
        println!("rules   {}", p.rules.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}
