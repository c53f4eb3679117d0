//! `hkms ceremony ...`: open, approve, enter components, cancel, follow ceremonies.

use std::collections::HashMap;
use std::process::ExitCode;

use clap::Subcommand;
use zeroize::Zeroizing;

use crate::proto;
use crate::proto::ceremony_service_client::CeremonyServiceClient;
use crate::server::services::convert::word;

use super::client::{ClientArgs, enum_arg, status};
use super::pages::{PAGE_SIZE, all_pages, time_text};
use super::secret::read_secret;

#[derive(Debug, Subcommand)]
pub enum CeremonyCommand {
    /// Open a ceremony: `--op generate --key-type T [--components 2|3]`, `--op manage --key-id
    /// ID --state retired|destroyed`, `--op manage --action reload-policy`, or `--op manage
    /// --action issue-card --region R`.
    Open {
        /// generate or manage.
        #[arg(long)]
        op: String,
        /// The key type to generate.
        #[arg(long)]
        key_type: Option<String>,
        /// Key entry by this many clear components (2 or 3), one per custodian.
        #[arg(long)]
        components: Option<u8>,
        /// The key to retire or destroy.
        #[arg(long)]
        key_id: Option<String>,
        /// retired or destroyed.
        #[arg(long)]
        state: Option<String>,
        /// reload-policy, or issue-card (with --region).
        #[arg(long)]
        action: Option<String>,
        /// The recipient region of an issue-card ceremony.
        #[arg(long)]
        region: Option<String>,
        /// For reload-policy: the SHA-256 of the policy file to put in force (`sha256sum` of
        /// the node's file); the reload fails if the file differs when the ceremony runs.
        #[arg(long)]
        policy_sha256: Option<String>,
        /// Print only the new ceremony's id (for scripts).
        #[arg(short, long, conflicts_with = "json")]
        quiet: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Approve a ceremony (it runs when the quorum is met).
    Approve {
        /// The ceremony id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Enter your key component (prompted without echo, or one hex line on standard input).
    EnterComponent {
        /// The ceremony id.
        id: String,
        /// The component's KCV from your sheet (6 hex digits).
        #[arg(long)]
        kcv: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one ceremony (also `ceremony show`).
    #[command(visible_alias = "show")]
    Status {
        /// The ceremony id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Cancel an open ceremony.
    Cancel {
        /// The ceremony id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List ceremonies, newest first.
    List {
        /// Only this state (open, running, done, failed, cancelled, expired, used).
        #[arg(long, default_value = "")]
        state: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

impl CeremonyCommand {
    /// Runs the command.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            CeremonyCommand::Open {
                op,
                key_type,
                components,
                key_id,
                state,
                action,
                region,
                policy_sha256,
                quiet,
                client,
            } => {
                let mut params = HashMap::new();
                for (k, v) in [
                    ("key_type", key_type),
                    ("components", components.map(|c| c.to_string())),
                    ("key_id", key_id),
                    ("state", state),
                    ("action", action),
                    ("region", region),
                    ("policy_sha256", policy_sha256),
                ] {
                    if let Some(v) = v {
                        params.insert(k.to_string(), v);
                    }
                }
                let operation = enum_arg::<proto::Operation>("--op", &op)?;
                let request = proto::OpenCeremonyRequest {
                    operation,
                    params,
                    ..Default::default()
                };
                let info = client
                    .send_once(request, |ch, r| async move {
                        CeremonyServiceClient::new(ch).open_ceremony(r).await
                    })
                    .await?;
                if quiet {
                    println!("{}", info.id);
                    return Ok(ExitCode::SUCCESS);
                }
                show(&info, client.json)
            }
            CeremonyCommand::Approve { id, client } => {
                let request = proto::CeremonyId {
                    id,
                    ..Default::default()
                };
                let info = client
                    .send_once(request, |ch, r| async move {
                        CeremonyServiceClient::new(ch).approve_ceremony(r).await
                    })
                    .await?;
                show(&info, client.json)
            }
            CeremonyCommand::EnterComponent { id, kcv, client } => {
                let component = read_component()?;
                let request = proto::EnterComponentRequest {
                    id,
                    component: component.to_vec(),
                    kcv,
                    ..Default::default()
                };
                let info = client
                    .send_once(request, |ch, r| async move {
                        CeremonyServiceClient::new(ch).enter_component(r).await
                    })
                    .await?;
                show(&info, client.json)
            }
            CeremonyCommand::Status { id, client } => {
                let mut c = CeremonyServiceClient::new(client.channel().await?);
                let info = c
                    .get_ceremony(proto::CeremonyId {
                        id,
                        ..Default::default()
                    })
                    .await
                    .map_err(status)?
                    .into_inner();
                show(&info, client.json)
            }
            CeremonyCommand::Cancel { id, client } => {
                let request = proto::CeremonyId {
                    id,
                    ..Default::default()
                };
                let info = client
                    .send_once(request, |ch, r| async move {
                        CeremonyServiceClient::new(ch).cancel_ceremony(r).await
                    })
                    .await?;
                show(&info, client.json)
            }
            CeremonyCommand::List { state, client } => {
                let state = enum_arg::<proto::CeremonyState>("--state", &state)?;
                let c = CeremonyServiceClient::new(client.channel().await?);
                let ceremonies = all_pages(|page_token| {
                    let mut c = c.clone();
                    let request = proto::ListCeremoniesRequest {
                        state,
                        page_size: PAGE_SIZE,
                        page_token,
                    };
                    async move {
                        let page = c
                            .list_ceremonies(request)
                            .await
                            .map_err(status)?
                            .into_inner();
                        Ok((page.ceremonies, page.next_page_token))
                    }
                })
                .await?;
                if client.json {
                    // One array, `[]` when there is none, as `keys list --json` prints.
                    let all: Vec<_> = ceremonies.iter().map(ceremony_json).collect();
                    println!("{}", serde_json::Value::Array(all));
                    return Ok(ExitCode::SUCCESS);
                }
                for info in &ceremonies {
                    show(info, false)?;
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

/// The component as hex, without echo on a terminal; decoded into zeroized memory.
fn read_component() -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let text = read_secret("key component (hex)")?;
    let hex_text = text.as_str();
    let mut out = Zeroizing::new(vec![0u8; hex_text.len() / 2]);
    hex::decode_to_slice(hex_text, &mut out)
        .map_err(|_| anyhow::anyhow!("the component must be an even number of hex digits"))?;
    Ok(out)
}

/// A ceremony as `--json` prints it, enums as words.
fn ceremony_json(c: &proto::CeremonyInfo) -> serde_json::Value {
    let approvals: Vec<_> = c
        .approvals
        .iter()
        .map(|a| {
            serde_json::json!({
                "approver": a.approver, "approved_at": time_text(a.approved_at.as_ref()),
                "person": a.person,
            })
        })
        .collect();
    serde_json::json!({
        "id": c.id, "operation": word::<proto::Operation>(c.operation), "params": c.params,
        "opener": c.opener, "quorum": c.quorum, "approvals": approvals,
        "created_at": time_text(c.created_at.as_ref()),
        "expires_at": time_text(c.expires_at.as_ref()),
        "state": word::<proto::CeremonyState>(c.state), "result": c.result,
        "components_entered": c.components_entered,
    })
}

fn show(c: &proto::CeremonyInfo, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        println!("{}", ceremony_json(c));
        return Ok(ExitCode::SUCCESS);
    }
    let operation = word::<proto::Operation>(c.operation);
    let state = word::<proto::CeremonyState>(c.state);
    let mut params: Vec<_> = c.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    params.sort();
    println!("ceremony {}  {} {}", c.id, operation, params.join(" "));
    println!("  state     {}", state);
    println!(
        "  opened by {} at {}",
        c.opener,
        time_text(c.created_at.as_ref())
    );
    match c.params.get("components") {
        // Custodians approve by entering their component: the components are what it waits for.
        Some(parts) => println!(
            "  components {} of {parts} entered (each is its custodian's approval; the policy \
             asks at least {})",
            c.components_entered, c.quorum
        ),
        None => println!("  approvals {} of {}", c.approvals.len(), c.quorum),
    }
    for a in &c.approvals {
        if a.person.is_empty() {
            println!(
                "    {} at {}",
                a.approver,
                time_text(a.approved_at.as_ref())
            );
        } else {
            println!(
                "    {} ({}) at {}",
                a.person,
                a.approver,
                time_text(a.approved_at.as_ref())
            );
        }
    }
    if !c.result.is_empty() {
        println!("  result    {}", c.result);
    }
    Ok(ExitCode::SUCCESS)
}
