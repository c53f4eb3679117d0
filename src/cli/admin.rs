//! Local admin tools that open the node's token and registry directly: the orphan check and
//! the attribute audit. Run them on the node's host with its config.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use crate::config::NodeConfig;
use crate::hsm::{Pkcs11Token, attribute_audit};
use crate::node::{ExclusiveUse, Node, OrphanReport, reconcile};
use crate::store::SqliteStore;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Check every key object on the token against the docs/design.md §3.5 attribute rules; exits 1
    /// if any object breaks one.
    Audit {
        /// The node config file.
        #[arg(long, env = "HKMS_CONFIG")]
        config: std::path::PathBuf,
    },
    /// Show the token and the mechanisms hkms uses.
    Info {
        /// The node config file.
        #[arg(long, env = "HKMS_CONFIG")]
        config: std::path::PathBuf,
    },
}

impl TokenCommand {
    /// Runs the command.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            TokenCommand::Audit { config } => audit(&config),
            TokenCommand::Info { config } => info(&config),
        }
    }
}

fn open_hsm(config: &Path) -> anyhow::Result<Pkcs11Token> {
    let config = NodeConfig::load(config)?;
    Ok(Pkcs11Token::open(&config.hsm)?)
}

fn audit(config: &Path) -> anyhow::Result<ExitCode> {
    let config = NodeConfig::load(config)?;
    // The token and registry alone, not the node: the audit must work on a token the node
    // refuses to start on.
    let token = Pkcs11Token::open(&config.hsm)?;
    let objects = token.object_facts()?;
    let mut violations = 0;
    for o in &objects {
        for v in attribute_audit::check(o) {
            violations += 1;
            println!("VIOLATION {v}");
        }
    }
    // A registered object that is gone breaks the node as surely as a weak one.
    let database = config.database_path();
    let report = if database.exists() {
        let store = SqliteStore::open(&database)?;
        reconcile(&token, &store)?
    } else {
        OrphanReport::default()
    };
    for m in &report.missing_transport {
        violations += 1;
        println!("MISSING {}", missing_transport_line(m));
    }
    for r in &report.missing {
        violations += 1;
        println!("MISSING {}", missing_key_line(r));
    }
    println!(
        "checked {} key objects on token {}: {} violations",
        objects.len(),
        token.capabilities().label,
        violations
    );
    Ok(if violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn info(config: &Path) -> anyhow::Result<ExitCode> {
    let hsm = open_hsm(config)?;
    let c = hsm.capabilities();
    println!("token:        {}", c.label);
    println!("manufacturer: {}", c.manufacturer);
    println!("model:        {}", c.model);
    println!("serial:       {}", c.serial);
    println!("mechanisms:   {}", c.mechanisms.len());
    for m in [
        crate::hsm::mechanisms::AES_ECB_ENCRYPT_DATA,
        crate::hsm::mechanisms::DES3_ECB_ENCRYPT_DATA,
        crate::hsm::mechanisms::AES_CMAC,
        crate::hsm::mechanisms::DES3_CMAC,
        crate::hsm::mechanisms::GENERIC_SECRET_KEY_GEN,
        crate::hsm::mechanisms::SHA256_HMAC,
    ] {
        let name = crate::hsm::mechanisms::mechanism_name(m);
        println!("  {name:<28} {}", if c.has(m) { "yes" } else { "no" });
    }
    match c.wrap_pad {
        Some(m) => println!(
            "  RFC 5649 wrap: {}",
            crate::hsm::mechanisms::mechanism_name(m)
        ),
        None => println!("  RFC 5649 wrap: no"),
    }
    Ok(ExitCode::SUCCESS)
}

/// `hkms keys orphans`: reports (and with `destroy`, removes) token keys without a live row,
/// and lists rows whose key is missing. Exits 1 when anything was found and left.
pub fn orphans(config: &Path, destroy: bool) -> anyhow::Result<ExitCode> {
    let config = NodeConfig::load(config)?;
    // Destroying needs the node to itself: a key its server is making looks like an orphan.
    let _exclusive = destroy
        .then(|| ExclusiveUse::take(&config.data_dir, "destroying orphans"))
        .transpose()?;
    let node = Node::open(&config)?;
    let report = node.keys().find_orphans()?;
    for label in &report.orphans {
        if label.is_empty() {
            println!(
                "ORPHAN  (no label)  (an empty secret key object: a crash cut its creation short)"
            );
        } else {
            println!("ORPHAN  {label}  (on the token, no live registry row)");
        }
    }
    for r in &report.missing {
        println!("MISSING {}", missing_key_line(r));
    }
    for m in &report.missing_transport {
        println!("MISSING {}", missing_transport_line(m));
    }
    let missing = report.missing.len() + report.missing_transport.len();
    if destroy && !report.orphans.is_empty() {
        let n = node.keys().destroy_orphans()?;
        println!("destroyed {n} orphan objects");
        return Ok(if missing == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    println!("{} orphans, {missing} missing", report.orphans.len());
    Ok(if report.orphans.is_empty() && missing == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn missing_key_line(r: &crate::hierarchy::KeyRecord) -> String {
    format!(
        "{}  ({} {}; row says {}, key not on the token)",
        r.id,
        r.key_type.as_str(),
        r.region,
        r.state
    )
}

fn missing_transport_line(m: &crate::node::MissingTransport) -> String {
    format!(
        "{}  (the {} of card {} for {}, {}; not on the token: issue a new card)",
        m.label,
        m.what,
        m.card.card_id,
        m.card.region,
        m.card.role.as_str()
    )
}
