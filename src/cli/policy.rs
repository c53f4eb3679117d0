//! `hkms policy ...`: check a policy file, explain a decision (both offline, for officers), and
//! show or reload the policy of a running node.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::hierarchy::Region;
use crate::policy::{Identity, Operation, Policy, weakenings};
use crate::proto;
use crate::proto::policy_service_client::PolicyServiceClient;

use super::client::{ClientArgs, status};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check a policy file; errors name the file, the line and what to fix (exit 0 good,
    /// 1 refused, 2 the --against file does not load). With --against, also what it would
    /// weaken of that policy (the one in force), which only a reload-policy ceremony may do.
    Check {
        /// The policy file.
        file: PathBuf,
        /// The policy in force (as `hkms policy show --text` prints it): list what FILE would
        /// weaken of it.
        #[arg(long)]
        against: Option<PathBuf>,
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
    /// Show the policy in force on a node (its SHA-256, key types, rules), or its text.
    Show {
        /// Print the policy's text, as the node decides by it (for `policy check --against`).
        #[arg(long, conflicts_with = "json")]
        text: bool,
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
            PolicyCommand::Check {
                file,
                against,
                json,
            } => check(&file, against.as_deref(), json),
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
            PolicyCommand::Show { text, client } => {
                let mut c = PolicyServiceClient::new(client.channel().await?);
                let p = c
                    .get_policy(proto::GetPolicyRequest {})
                    .await
                    .map_err(status)?
                    .into_inner();
                if text {
                    print!("{}", p.text);
                    return Ok(ExitCode::SUCCESS);
                }
                print_info(&p, client.json)
            }
            PolicyCommand::Reload { client } => {
                let p = client
                    .send_once(proto::ReloadPolicyRequest::default(), |ch, r| async move {
                        PolicyServiceClient::new(ch).reload_policy(r).await
                    })
                    .await?;
                print_info(&p, client.json)
            }
        }
    }
}

/// `hkms policy check`: whether `file` loads, what it puts in force, what it warns of, and with
/// `against`, what it would weaken of that policy.
fn check(file: &Path, against: Option<&Path>, json: bool) -> anyhow::Result<ExitCode> {
    let p = match Policy::load(file) {
        Ok(p) => p,
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"ok": false, "file": file, "error": e.to_string()})
                );
            } else {
                println!("policy refused: {e}");
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let in_force = match against.map(Policy::load).transpose() {
        Ok(in_force) => in_force,
        Err(e) => {
            eprintln!("hkms: --against: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let warnings = warnings(&p);
    let weakened: Option<Vec<String>> = in_force.as_ref().map(|old| {
        weakenings(old, &p)
            .iter()
            .map(ToString::to_string)
            .collect()
    });
    let persons: Option<Vec<&str>> = p
        .roster
        .as_ref()
        .map(|r| r.persons().map(|(name, _)| name).collect());
    if json {
        println!(
            "{}",
            serde_json::json!({
                "ok": true, "file": file, "sha256": p.sha256,
                "key_types": p.catalogue.names().count(), "rules": p.rules.len(),
                "ceremonies": p.quorums.len(),
                "card_limits": p.card_limits.describe(),
                "officers": persons, "warnings": warnings,
                "against": in_force.as_ref().map(|o| serde_json::json!({
                    "file": against, "sha256": o.sha256, "weakens": weakened,
                })),
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "policy OK: {} key types, {} rules, {} ceremonies, sha256 {}",
        p.catalogue.names().count(),
        p.rules.len(),
        p.quorums.len(),
        p.sha256
    );
    // Absent or not, the limits in force: the defaults are not "no limit".
    println!("{}", p.card_limits.describe());
    if let Some(persons) = &persons {
        println!("officers: {} ({})", persons.len(), persons.join(", "));
    }
    for w in &warnings {
        println!("warning: {w}");
    }
    if let (Some(old), Some(weakened)) = (&in_force, &weakened) {
        if weakened.is_empty() {
            println!(
                "against {} (sha256 {}): weakens nothing; SIGHUP or a restart puts it in force",
                old.origin, old.sha256
            );
        } else {
            println!(
                "against {} (sha256 {}): weakens it; only a reload-policy ceremony approved under \
                 that policy puts it in force (SIGHUP, a restart and `hkms policy reload` refuse it):",
                old.origin, old.sha256
            );
            for w in weakened {
                println!("  - {w}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a loadable policy should make its writer think twice about.
fn warnings(p: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    if !p.quorums.is_empty() && p.roster.is_none() {
        out.push(
            "the policy puts operations under dual control but names no officer roster \
             ([officers.NAME]): approvals count certificates, not persons, so one person who \
             holds two officer certificates counts as two approvers"
                .to_string(),
        );
    }
    if p.quorums.is_empty() {
        out.push(
            "the policy puts nothing under dual control ([ceremonies.*]): one officer generates \
             national keys, and one admin reloads the policy"
                .to_string(),
        );
    }
    out
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
