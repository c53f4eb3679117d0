//! `hkms pki ...`: a dev and test PKI (a throw-away CA on disk). Production nodes use the
//! programme's real CA; see docs/identity-and-policy.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use crate::pki::{DevCa, Validity, write_dev_pki, write_issued};
use crate::policy::{CertificateKey, Identity};

#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Make (once) a dev CA, a server certificate for localhost, and a dev officer and admin
    /// certificate for a node of this region, in DIR.
    Init {
        /// The folder of the dev PKI.
        #[arg(long)]
        dir: PathBuf,
        /// The node's region; the dev officer and admin belong to it.
        #[arg(long, default_value = "000000")]
        region: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Issue a client certificate for an identity with the dev CA in DIR.
    Issue {
        /// The folder of the dev PKI (with ca.pem and ca.key).
        #[arg(long)]
        dir: PathBuf,
        /// hkms://ROLE/TIER/REGION/NAME
        #[arg(long)]
        identity: String,
        /// File stem: writes STEM.pem and STEM.key in DIR.
        #[arg(long)]
        out: String,
        /// Days of validity.
        #[arg(long, default_value_t = 365)]
        days: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the SHA-256 of each certificate's public key: how the policy's officer roster
    /// names a certificate (`[officers.NAME] certificates`). Works on any certificate.
    KeySha256 {
        /// A certificate (PEM); repeat for several.
        #[arg(long = "cert", required = true)]
        certs: Vec<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write a revocation list of the dev CA in DIR that revokes the given certificates, for a
    /// node's `[tls] client_crl` (send the node SIGHUP to apply it).
    Revoke {
        /// The folder of the dev PKI (with ca.pem and ca.key).
        #[arg(long)]
        dir: PathBuf,
        /// A certificate to revoke (PEM); repeat for several. The list holds exactly these.
        #[arg(long = "cert", required = true)]
        certs: Vec<PathBuf>,
        /// The list's number: higher than the one it replaces.
        #[arg(long)]
        number: u64,
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
        /// Days until the next list is due.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

impl PkiCommand {
    /// Runs the command.
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            PkiCommand::Init { dir, region, json } => {
                // A bad region is refused before anything is written.
                let parsed = crate::hierarchy::Region::parse(&region)?;
                let paths = write_dev_pki(&dir, &region)?;
                let mut issued = Vec::new();
                for (role, stem) in [("officer", "dev-officer"), ("admin", "dev-admin")] {
                    if dir.join(format!("{stem}.pem")).exists() {
                        continue;
                    }
                    let id = Identity::from_uri(&format!(
                        "hkms://{role}/{}/{parsed}/{stem}",
                        parsed.tier()
                    ))
                    .map_err(anyhow::Error::msg)?;
                    issued.push(issue(&dir, &id, stem, 365)?);
                }
                if json {
                    println!(
                        "{}",
                        serde_json::json!({
                            "dir": dir, "ca": paths.ca_cert, "server_cert": paths.server_cert,
                            "server_key": paths.server_key, "issued": issued,
                        })
                    );
                } else {
                    for i in &issued {
                        println!("{}: {} {}", i.identity, i.cert.display(), i.key.display());
                    }
                    println!(
                        "dev PKI in {}: CA {}",
                        dir.display(),
                        paths.ca_cert.display()
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            PkiCommand::Issue {
                dir,
                identity,
                out,
                days,
                json,
            } => {
                let id = Identity::from_uri(&identity)
                    .map_err(|e| anyhow::anyhow!("--identity: {e}"))?;
                let i = issue(&dir, &id, &out, days)?;
                if json {
                    println!("{}", serde_json::to_string(&i)?);
                } else {
                    println!("{}: {} {}", i.identity, i.cert.display(), i.key.display());
                }
                Ok(ExitCode::SUCCESS)
            }
            PkiCommand::KeySha256 { certs, json } => {
                let mut rows = Vec::new();
                for path in &certs {
                    let (key, identity) = certificate_key(path)?;
                    rows.push(serde_json::json!({
                        "cert": path, "key_sha256": key.as_str(), "identity": identity,
                    }));
                    if !json {
                        println!(
                            "{key}  {}  {}",
                            path.display(),
                            identity.as_deref().unwrap_or("(no hkms identity)")
                        );
                    }
                }
                if json {
                    println!("{}", serde_json::Value::from(rows));
                }
                Ok(ExitCode::SUCCESS)
            }
            PkiCommand::Revoke {
                dir,
                certs,
                number,
                out,
                days,
                json,
            } => {
                let pems = certs
                    .iter()
                    .map(|p| {
                        std::fs::read_to_string(p)
                            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))
                    })
                    .collect::<anyhow::Result<Vec<String>>>()?;
                let pems: Vec<&str> = pems.iter().map(String::as_str).collect();
                let crl = load_ca(&dir)?.revocation_list(&pems, number, i64::from(days))?;
                crate::durable::write_file(&out, crl.as_bytes(), 0o644)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))?;
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"out": out, "number": number, "revoked": certs})
                    );
                } else {
                    println!(
                        "{}: revocation list {number}, {} certificates",
                        out.display(),
                        pems.len()
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    }
}

/// The roster's name for the certificate in the PEM file `path` (the SHA-256 of its public key),
/// and the hkms identity it carries, if one.
fn certificate_key(path: &std::path::Path) -> anyhow::Result<(CertificateKey, Option<String>)> {
    let pem =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{} is not a PEM certificate: {e}", path.display()))?;
    let key = CertificateKey::of_certificate(&block.contents)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let identity = block.parse_x509().ok().and_then(|cert| {
        let san = cert.subject_alternative_name().ok().flatten()?;
        san.value.general_names.iter().find_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u)
                if u.starts_with(crate::policy::IDENTITY_SCHEME) =>
            {
                Some(crate::untrusted_text::escape(u).into_owned())
            }
            _ => None,
        })
    });
    Ok((key, identity))
}

/// The dev CA in `dir`.
fn load_ca(dir: &std::path::Path) -> anyhow::Result<DevCa> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .map(zeroize::Zeroizing::new)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot read {}: {e} (run `hkms pki init` first)",
                    dir.join(name).display()
                )
            })
    };
    Ok(DevCa::from_pem(&read("ca.pem")?, &read("ca.key")?)?)
}

/// A certificate `pki issue` (or `init`) wrote.
#[derive(serde::Serialize)]
struct Issued {
    identity: String,
    cert: PathBuf,
    key: PathBuf,
    /// The roster's name for the certificate (`pki key-sha256`).
    key_sha256: String,
}

fn issue(dir: &std::path::Path, id: &Identity, stem: &str, days: u32) -> anyhow::Result<Issued> {
    let ca = load_ca(dir)?;
    let cert = ca.issue_client(Some(id), Validity::days(days))?;
    let (written, key) = write_issued(dir, stem, &cert)?;
    let (key_sha256, _) = certificate_key(&written)?;
    Ok(Issued {
        identity: id.to_string(),
        cert: written,
        key,
        key_sha256: key_sha256.to_string(),
    })
}
