//! Local admin tools that open the node's token and registry directly: the orphan check and
//! the attribute audit. Run them on the node's host with its config.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;

use crate::config::NodeConfig;
use crate::hsm::{Pkcs11Token, attribute_audit};
use crate::node::{ExclusiveUse, Node, OrphanReport, reconcile};
use crate::store::SqliteStore;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Check every key object on the token against the docs/design.md §3.5 attribute rules
    /// (exit 0 none broken, 1 some object breaks one, 2 error).
    Audit {
        /// The node config file.
        #[arg(long, env = "HKMS_CONFIG")]
        config: std::path::PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Try the known PKCS#11 attacks (derive, unwrap or wrap a key into clear; change,
    /// copy, read or destroy a sealed key) on throw-away keys made with hkms's own templates,
    /// with the node's user PIN; one row per attack: LEAKS or HOLDS, and what holds it. Leaves
    /// no object on the token (exit 0 every attack holds, 1 some attack leaks, 2 error).
    Probe {
        /// The node config file.
        #[arg(long, env = "HKMS_CONFIG")]
        config: std::path::PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the token, the mechanisms hkms uses, and the token probe's verdict.
    Info {
        /// The node config file.
        #[arg(long, env = "HKMS_CONFIG")]
        config: std::path::PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

impl TokenCommand {
    /// Runs the command.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            TokenCommand::Audit { config, json } => {
                Ok(super::exit_2_on_error(audit(&config, json)))
            }
            TokenCommand::Probe { config, json } => {
                Ok(super::exit_2_on_error(probe(&config, json)))
            }
            TokenCommand::Info { config, json } => info(&config, json),
        }
    }
}

fn open_hsm(config: &Path) -> anyhow::Result<Pkcs11Token> {
    let config = NodeConfig::load(config)?;
    Ok(Pkcs11Token::open(&config.hsm)?)
}

fn audit(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let config = NodeConfig::load(config)?;
    // The token and registry alone, not the node: the audit must work on a token the node
    // refuses to start on.
    let token = Pkcs11Token::open(&config.hsm)?;
    let objects = token.object_facts()?;
    let violations: Vec<String> = objects
        .iter()
        .flat_map(attribute_audit::check)
        .map(|v| v.to_string())
        .collect();
    // The audit key's own token is checked too, with its own PIN: its pair is a key hkms
    // relies on as much as any other.
    let audit_token = match &config.audit_token {
        None => None,
        Some(hsm) => {
            let audit = Pkcs11Token::open(hsm).with_context(|| {
                format!(
                    "cannot open the audit token of [audit.token] ({}); it is checked with its \
                     own PIN: run this where that PIN can be read",
                    hsm.locator
                )
            })?;
            let objects = audit.object_facts()?;
            let violations: Vec<String> = objects
                .iter()
                .flat_map(attribute_audit::check)
                .map(|v| v.to_string())
                .collect();
            Some((
                audit.capabilities().label.clone(),
                objects.len(),
                violations,
            ))
        }
    };
    // A registered object that is gone breaks the node as surely as a weak one.
    let database = config.database_path();
    let report = if database.exists() {
        reconcile(&token, &SqliteStore::open(&database)?)?
    } else {
        OrphanReport::default()
    };
    let missing = missing_lines(&report);
    let label = &token.capabilities().label;
    let audit_violations = audit_token.as_ref().map_or(0, |(_, _, v)| v.len());
    if json {
        let audit_json = audit_token.as_ref().map(|(token, objects, violations)| {
            serde_json::json!({ "token": token, "objects": objects, "violations": violations })
        });
        println!(
            "{}",
            serde_json::json!({
                "token": label, "objects": objects.len(),
                "violations": violations, "missing": missing_json(&report),
                "audit_token": audit_json,
            })
        );
    } else {
        for v in &violations {
            println!("VIOLATION {v}");
        }
        for m in &missing {
            println!("MISSING {m}");
        }
        println!(
            "checked {} key objects on token {label}: {} violations",
            objects.len(),
            violations.len() + missing.len()
        );
        if let Some((audit_label, count, audit_violations)) = &audit_token {
            for v in audit_violations {
                println!("VIOLATION {v} (on the audit token {audit_label})");
            }
            println!(
                "checked {count} key objects on the audit token {audit_label}: {} violations",
                audit_violations.len()
            );
        }
    }
    Ok(
        if violations.is_empty() && missing.is_empty() && audit_violations == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

fn probe(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let hsm = open_hsm(config)?;
    let report = hsm.probe_attacks()?;
    if json {
        let attacks: Vec<_> = report
            .attacks
            .iter()
            .map(|a| {
                serde_json::json!({
                    "attack": a.name, "tried": a.tried, "token_did": a.token_did,
                    "verdict": a.verdict.as_str(), "held_by": a.held_by,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "token": hsm.capabilities().label, "sealed": report.sealed(),
                "attacks": attacks,
            })
        );
    } else {
        for a in &report.attacks {
            println!("{:<5}  {}", a.verdict.as_str(), a.name);
            println!("       tried:     {}", a.tried);
            println!("       token did: {}", a.token_did);
            println!("       held by:   {}", a.held_by);
        }
        println!("{}", probe_summary(&hsm.capabilities().label, &report));
    }
    Ok(if report.sealed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One line: how many attacks held on which token.
fn probe_summary(token: &str, report: &crate::hsm::ProbeReport) -> String {
    let leaks = report.leaks().len();
    if leaks == 0 {
        format!(
            "token {token}: all {} attacks hold (sealed)",
            report.attacks.len()
        )
    } else {
        format!(
            "token {token}: {leaks} of {} attacks leak (not sealed; docs/tokens.md)",
            report.attacks.len()
        )
    }
}

/// The mechanisms `token info` reports on.
const REPORTED_MECHANISMS: [crate::hsm::mechanisms::MechanismNumber; 6] = [
    crate::hsm::mechanisms::AES_ECB_ENCRYPT_DATA,
    crate::hsm::mechanisms::DES3_ECB_ENCRYPT_DATA,
    crate::hsm::mechanisms::AES_CMAC,
    crate::hsm::mechanisms::DES3_CMAC,
    crate::hsm::mechanisms::GENERIC_SECRET_KEY_GEN,
    crate::hsm::mechanisms::SHA256_HMAC,
];

fn info(config: &Path, json: bool) -> anyhow::Result<ExitCode> {
    use crate::hsm::mechanisms::mechanism_name;
    let hsm = open_hsm(config)?;
    let c = hsm.capabilities();
    let probe = hsm.probe_attacks()?;
    let leaks: Vec<&str> = probe.leaks().iter().map(|a| a.name.as_str()).collect();
    if json {
        let used: serde_json::Map<String, serde_json::Value> = REPORTED_MECHANISMS
            .iter()
            .map(|m| (mechanism_name(*m), c.has(*m).into()))
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "token": c.label, "manufacturer": c.manufacturer, "model": c.model,
                "serial": c.serial, "mechanisms": c.mechanisms.len(), "used": used,
                "wrap_pad": c.wrap_pad.map(mechanism_name),
                "derive_template": c.derive_template,
                "probe": {"sealed": probe.sealed(), "attacks": probe.attacks.len(), "leaks": leaks},
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("token:        {}", c.label);
    println!("manufacturer: {}", c.manufacturer);
    println!("model:        {}", c.model);
    println!("serial:       {}", c.serial);
    println!("mechanisms:   {}", c.mechanisms.len());
    for m in REPORTED_MECHANISMS {
        let name = mechanism_name(m);
        println!("  {name:<28} {}", if c.has(m) { "yes" } else { "no" });
    }
    match c.wrap_pad {
        Some(m) => println!("  RFC 5649 wrap: {}", mechanism_name(m)),
        None => println!("  RFC 5649 wrap: no"),
    }
    println!(
        "  CKA_DERIVE_TEMPLATE: {}",
        if c.derive_template {
            "taken (hkms sets it on every derive key)"
        } else {
            "not taken by this token"
        }
    );
    println!("probe:        {}", probe_summary(&c.label, &probe));
    for name in &leaks {
        println!("  LEAKS {name}  (hkms token probe says what was tried)");
    }
    Ok(ExitCode::SUCCESS)
}

/// `hkms keys orphans`: reports (and with `destroy`, removes) token keys without a live row,
/// and lists rows whose key is missing. Exits 1 when anything was found and left, 2 when it
/// could not look.
pub fn orphans(config: &Path, destroy: bool, json: bool) -> ExitCode {
    super::exit_2_on_error(find_orphans(config, destroy, json))
}

fn find_orphans(config: &Path, destroy: bool, json: bool) -> anyhow::Result<ExitCode> {
    let config = NodeConfig::load(config)?;
    // Destroying needs the node to itself: a key its server is making looks like an orphan.
    let _exclusive = destroy
        .then(|| ExclusiveUse::take(&config.data_dir, "destroying orphans"))
        .transpose()?;
    let node = Node::open(&config)?;
    let report = node.keys().find_orphans()?;
    let destroyed = if destroy && !report.orphans.is_empty() {
        Some(node.keys().destroy_orphans()?)
    } else {
        None
    };
    // What is left: destroyed orphans are gone, missing rows stay until an officer acts.
    let missing = missing_lines(&report);
    let clean = missing.is_empty() && (destroyed.is_some() || report.orphans.is_empty());
    if json {
        println!(
            "{}",
            serde_json::json!({
                "orphans": report.orphans, "missing": missing_json(&report), "destroyed": destroyed,
            })
        );
        return Ok(if clean {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    for label in &report.orphans {
        if label.is_empty() {
            println!(
                "ORPHAN  (no label)  (an empty secret key object: a crash cut its creation short)"
            );
        } else {
            println!("ORPHAN  {label}  (on the token, no live registry row)");
        }
    }
    for m in &missing {
        println!("MISSING {m}");
    }
    match destroyed {
        Some(n) => println!("destroyed {n} orphan objects"),
        None => println!(
            "{} orphans, {} missing",
            report.orphans.len(),
            missing.len()
        ),
    }
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// One line per registered key or card object missing from the token, for people and JSON.
fn missing_lines(report: &OrphanReport) -> Vec<String> {
    let keys = report.missing.iter().map(|r| {
        format!(
            "{}  ({} {}; row says {}, key not on the token)",
            r.id,
            r.key_type.as_str(),
            r.region,
            r.state
        )
    });
    let cards = report.missing_transport.iter().map(|m| {
        format!(
            "{}  (the {} of card {} for {}, {}; not on the token: issue a new card)",
            m.label,
            m.what,
            m.card.card_id,
            m.card.region,
            m.card.role.as_str()
        )
    });
    keys.chain(cards).collect()
}

/// The missing objects as JSON: `keys` (registry rows) and `card_objects` (transport cards).
fn missing_json(report: &OrphanReport) -> serde_json::Value {
    let keys: Vec<_> = report
        .missing
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.id.to_string(), "key_type": r.key_type.as_str(),
                "region": r.region.to_string(), "state": r.state.to_string(),
            })
        })
        .collect();
    let cards: Vec<_> = report
        .missing_transport
        .iter()
        .map(|m| {
            serde_json::json!({
                "label": m.label, "what": m.what, "card_id": m.card.card_id,
                "region": m.card.region.to_string(), "role": m.card.role.as_str(),
            })
        })
        .collect();
    serde_json::json!({ "keys": keys, "card_objects": cards })
}
