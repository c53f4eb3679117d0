//! `hkms node init`: a ministry, provincial or municipal node set up in one folder, in one
//! command: its SoftHSM2 token with random PINs (with `--audit-token`, a second token with PINs
//! of its own for the ceremony log's signing key), its TLS files, its policy, its data folder and
//! its `node.toml`. Idempotent: each run makes what is missing and keeps what exists; it never
//! replaces a PIN, a token, a certificate or the config (docs/roles/operator.md).

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{ArgGroup, Args, Subcommand};
use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::config::NodeConfig;
use crate::hierarchy::{Region, Tier};
use crate::hsm::PinSource;

/// The default policy, written beside the config when `--policy` names none.
const DEFAULT_POLICY: &str = include_str!("../../policies/default.toml");

/// Where Debian and its derivatives install SoftHSM2's module (as softhsm-setup/install.sh).
const SOFTHSM_MODULES: &[&str] = &[
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
];

/// Random bytes in a generated PIN (printed as twice as many hex digits).
const PIN_BYTES: usize = 12;

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Set up a node in a folder: SoftHSM2 token with random PINs, TLS files, policy, data
    /// folder and node.toml; then print how to start it. Makes what is missing, keeps the rest.
    Init(InitArgs),
}

/// What `hkms node init` is told.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("pki").required(true).args(["dev_pki", "ca"])))]
pub struct InitArgs {
    /// The node's folder (made if missing): node.toml, softhsm/, data/, pki/ go in it.
    #[arg(long)]
    dir: PathBuf,
    /// The node's region (GB/T 2260): 000000 is the ministry, XX0000 a province, any other a
    /// city. The tier follows from it.
    #[arg(long)]
    region: String,
    /// A short name for logs and records (default: `ministry`, or `node-REGION`).
    #[arg(long)]
    name: Option<String>,
    /// Where the node serves gRPC over mutual TLS.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: String,
    /// The policy file the node loads (default: the built-in default policy, written to
    /// DIR/policy.toml).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Serve Prometheus metrics on this loopback address (default: no metrics port).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// The SoftHSM2 PKCS#11 module (default: where Debian installs it).
    #[arg(long)]
    module: Option<PathBuf>,
    /// The token's label (default: `hkms-NAME`).
    #[arg(long)]
    token_label: Option<String>,
    /// Leave `so_pin_file` out of the config: the node will not issue transport key cards
    /// (the SO PIN file is made all the same: it is the token's).
    #[arg(long)]
    no_card_issuing: bool,
    /// Keep the ceremony log's signing key on a second token of its own (`TOKEN-LABEL-audit`)
    /// with its own random PINs (softhsm/audit-user.pin, softhsm/audit-so.pin), and write
    /// `[audit.token]`: the application PIN then cannot sign the log. Only for a new node: a
    /// log's key is never moved.
    #[arg(long)]
    audit_token: bool,
    /// Use the dev PKI in this folder (made by `hkms pki init`, or made here if missing): its
    /// CA is the client CA, its `server.pem` for localhost the node's certificate.
    #[arg(long, conflicts_with_all = ["ca", "server_cert", "server_key", "crl"])]
    dev_pki: Option<PathBuf>,
    /// The programme CA that issues the callers' certificates (PEM); copied to DIR/pki/ca.pem.
    #[arg(long, requires_all = ["server_cert", "server_key"])]
    ca: Option<PathBuf>,
    /// The node's certificate chain (PEM), issued by the programme CA for the name clients
    /// dial; copied to DIR/pki/server.pem.
    #[arg(long, requires = "ca")]
    server_cert: Option<PathBuf>,
    /// The private key of --server-cert (PEM); copied to DIR/pki/server.key (mode 0600).
    #[arg(long, requires = "ca")]
    server_key: Option<PathBuf>,
    /// The programme CA's revocation list (PEM); copied to DIR/pki/ca.crl.
    #[arg(long, requires = "ca")]
    crl: Option<PathBuf>,
}

impl NodeCommand {
    /// Runs the command. Call it before any thread starts: it points this process's SoftHSM2
    /// at the node's token folder (`SOFTHSM2_CONF`).
    pub fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            NodeCommand::Init(args) => init(args),
        }
    }
}

/// What one run did, for the report.
#[derive(Default)]
struct Report {
    lines: Vec<String>,
}

impl Report {
    fn made(&mut self, what: impl AsRef<str>) {
        self.lines.push(format!("  made  {}", what.as_ref()));
    }
    fn kept(&mut self, what: impl AsRef<str>) {
        self.lines.push(format!("  kept  {}", what.as_ref()));
    }
    fn done(&mut self, made: bool, what: impl AsRef<str>) {
        if made {
            self.made(what)
        } else {
            self.kept(what)
        }
    }
}

fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let region = Region::parse(&args.region).map_err(|e| anyhow::anyhow!("--region: {e}"))?;
    let tier = region.tier();
    let name = args.name.clone().unwrap_or_else(|| match tier {
        Tier::National => "ministry".to_string(),
        _ => format!("node-{region}"),
    });
    let mut report = Report::default();
    let dir_made = !args.dir.exists();
    make_dir(&args.dir)?;
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", args.dir.display()))?;
    report.done(dir_made, format!("{} (the node's folder)", dir.display()));

    let config_path = dir.join("node.toml");
    let existing = if config_path.exists() {
        let config = NodeConfig::load(&config_path)?;
        if config.region != region {
            bail!(
                "{} is the config of a node of region {}, not {region}: give another --dir",
                config_path.display(),
                config.region
            );
        }
        Some(config)
    } else {
        None
    };

    let default_label = args
        .token_label
        .clone()
        .unwrap_or_else(|| format!("hkms-{name}"));
    let default_module = || match &args.module {
        Some(m) => Ok(m.clone()),
        None => SOFTHSM_MODULES
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .context(
                "SoftHSM2 is not installed (no libsofthsm2.so where Debian puts it): run \
                 softhsm-setup/install.sh or `apt-get install softhsm2`, or give --module",
            ),
    };
    // A node set up before keeps its token: the one its config names.
    let (label, module) = match &existing {
        None => (default_label, default_module()?),
        Some(config) => {
            let Some(label) = config.hsm.locator.token.clone() else {
                bail!(
                    "{} names its token by a URI without a label; node init checks tokens by \
                     label only",
                    config_path.display()
                );
            };
            if args.token_label.as_ref().is_some_and(|l| *l != label) {
                bail!(
                    "{} uses the token `{label}`: give --token-label {label}, or none",
                    config_path.display()
                );
            }
            (
                label,
                args.module.clone().unwrap_or(config.hsm.module.clone()),
            )
        }
    };

    // The token: SoftHSM2's configuration, the PINs, the token itself.
    let softhsm = dir.join("softhsm");
    let tokens = softhsm.join("tokens");
    make_dir(&softhsm)?;
    make_dir(&tokens)?;
    let conf = softhsm.join("softhsm2.conf");
    let conf_text = format!(
        "# SoftHSM2 configuration made by `hkms node init`\n\
         directories.tokendir = {}\n\
         objectstore.backend = file\n\
         log.level = ERROR\n\
         slots.removable = false\n",
        tokens.display()
    );
    let conf_made = write_new(&conf, conf_text.as_bytes(), 0o600)?;
    report.done(
        conf_made,
        format!(
            "{} (SoftHSM2, tokens in {})",
            conf.display(),
            tokens.display()
        ),
    );
    // SAFETY: `run` is called before the process starts any thread (see `cli::main`), so
    // nothing reads the environment meanwhile; SoftHSM2 reads this variable when loaded.
    unsafe {
        std::env::set_var("SOFTHSM2_CONF", &conf);
    }
    ensure_token(
        &module,
        &label,
        &TokenPins {
            user: softhsm.join("user.pin"),
            so: softhsm.join("so.pin"),
        },
        &mut report,
    )?;
    let audit_label = audit_token_label(&args, existing.as_ref(), &config_path, &label)?;
    if let Some(audit_label) = &audit_label {
        ensure_token(
            &module,
            audit_label,
            &TokenPins {
                user: softhsm.join(AUDIT_USER_PIN),
                so: softhsm.join("audit-so.pin"),
            },
            &mut report,
        )?;
    }

    let data = dir.join("data");
    let data_made = !data.exists();
    make_dir(&data)?;
    report.done(
        data_made,
        format!("{} (the registry, mode 0700)", data.display()),
    );

    let tls = tls_files(&args, &dir, &name, &mut report)?;
    let policy = match &args.policy {
        Some(p) => p
            .canonicalize()
            .with_context(|| format!("cannot read the policy file {}", p.display()))?,
        None => {
            let p = dir.join("policy.toml");
            let made = write_new(&p, DEFAULT_POLICY.as_bytes(), 0o644)?;
            report.done(made, format!("{} (the default policy)", p.display()));
            p
        }
    };
    crate::policy::Policy::load(&policy)?;

    if existing.is_some() {
        report.kept(format!("{} (not rewritten)", config_path.display()));
    } else {
        let text = config_text(&ConfigValues {
            dir: &dir,
            name: &name,
            tier,
            region,
            listen: &args.listen,
            policy: &policy,
            module: &module,
            label: &label,
            so_pin: !args.no_card_issuing,
            audit_label: audit_label.as_deref(),
            tls: &tls,
            metrics: args.metrics_listen.as_deref(),
        })?;
        // Checked before it is written: a bad --listen or --name is refused here.
        NodeConfig::parse(&text, &config_path, &dir)?;
        write_new(&config_path, text.as_bytes(), 0o644)?;
        report.made(format!("{} (the node config)", config_path.display()));
    }

    // The node would start: its TLS files load and its token opens with its PIN.
    let config = NodeConfig::load(&config_path)?;
    crate::server::tls::load(&config.tls)?;
    drop(crate::hsm::Pkcs11Token::open(&config.hsm)?);
    if let Some(audit) = &config.audit_token {
        drop(crate::hsm::Pkcs11Token::open(audit).with_context(|| {
            format!(
                "cannot open the audit token of [audit.token] ({})",
                audit.locator
            )
        })?);
    }

    println!(
        "node {} ({tier} {region}) in {}:",
        config.name,
        dir.display()
    );
    for line in &report.lines {
        println!("{line}");
    }
    if config.so_pin.is_none() {
        println!("It does not issue transport key cards (no so_pin_file in node.toml).");
    }
    if let Some(audit_label) = &audit_label {
        println!(
            "The ceremony log's signing key goes on the token `{audit_label}`, whose PINs are \
             {dir}/softhsm/{AUDIT_USER_PIN} and {dir}/softhsm/audit-so.pin: in production they \
             belong to whoever keeps the audit key, not to the holder of the application PIN \
             (docs/operations.md).",
            dir = dir.display()
        );
    }
    println!(
        "Start it with:\n  SOFTHSM2_CONF={} hkms serve --config {}",
        conf.display(),
        config_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The audit token's user PIN file, in the node's softhsm/ folder.
const AUDIT_USER_PIN: &str = "audit-user.pin";

/// The longest token label PKCS#11 holds (`CK_TOKEN_INFO.label`, 32 bytes).
const MAX_LABEL: usize = 32;

/// Where a token's PINs are kept.
struct TokenPins {
    user: PathBuf,
    so: PathBuf,
}

/// Makes the token `label` with random PINs in `pins`, unless the module has it; a token
/// that exists keeps its PINs, which must be there (node init never gives a token new ones).
fn ensure_token(
    module: &Path,
    label: &str,
    pins: &TokenPins,
    report: &mut Report,
) -> anyhow::Result<()> {
    if crate::hsm::token_init::token_exists(module, label)? {
        for pin in [&pins.user, &pins.so] {
            if !pin.exists() {
                bail!(
                    "the token `{label}` exists but {} is missing: restore it (node init never \
                     makes a new PIN for an existing token)",
                    pin.display()
                );
            }
        }
        report.kept(format!(
            "{}, {} (the PINs of token `{label}`)",
            pins.user.display(),
            pins.so.display()
        ));
        report.kept(format!("token `{label}`"));
    } else {
        if label.len() > MAX_LABEL {
            bail!(
                "the token label `{label}` is longer than {MAX_LABEL} bytes: give a shorter --token-label"
            );
        }
        let user_pin = pin_file(&pins.user, report, &format!("user PIN of `{label}`"))?;
        let so_pin = pin_file(
            &pins.so,
            report,
            &format!("security officer PIN of `{label}`"),
        )?;
        let serial = crate::hsm::token_init::init_token(module, label, &so_pin, &user_pin)?;
        report.made(format!("token `{label}` (serial {serial})"));
    }
    Ok(())
}

/// The label of the audit key's own token: the one an existing config names, or, with
/// `--audit-token` on a new node, `LABEL-audit`. An existing config that keeps the key on the
/// node's token is not changed: its log's key stays where it is.
fn audit_token_label(
    args: &InitArgs,
    existing: Option<&NodeConfig>,
    config_path: &Path,
    label: &str,
) -> anyhow::Result<Option<String>> {
    match existing {
        None => Ok(args.audit_token.then(|| format!("{label}-audit"))),
        Some(config) => match &config.audit_token {
            None if args.audit_token => bail!(
                "{} keeps the audit key on the token `{label}`, and node init never rewrites a \
                 config (nor moves a log's key): set up a new node folder with --audit-token",
                config_path.display()
            ),
            None => Ok(None),
            Some(audit) => match &audit.locator.token {
                Some(audit_label) => Ok(Some(audit_label.clone())),
                None => bail!(
                    "{} names its audit token by a URI without a label; node init checks tokens \
                     by label only",
                    config_path.display()
                ),
            },
        },
    }
}

/// The PIN in `path`, made (random, mode 0600) when the file is missing.
fn pin_file(path: &Path, report: &mut Report, what: &str) -> anyhow::Result<SecretString> {
    if path.exists() {
        report.kept(format!("{} (the {what})", path.display()));
        return Ok(PinSource::File(path.to_path_buf()).read()?);
    }
    let mut bytes = Zeroizing::new([0u8; PIN_BYTES]);
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), bytes.as_mut())
        .map_err(|_| anyhow::anyhow!("the system's random source failed"))?;
    let pin = hex::encode(bytes.as_ref());
    write_new(path, pin.as_bytes(), 0o600)?;
    report.made(format!("{} (a random {what}, mode 0600)", path.display()));
    Ok(SecretString::from(pin))
}

/// The node's TLS files, as config paths: the dev PKI's, or the programme's copied in.
struct TlsPaths {
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
    client_crl: Option<PathBuf>,
}

fn tls_files(
    args: &InitArgs,
    dir: &Path,
    name: &str,
    report: &mut Report,
) -> anyhow::Result<TlsPaths> {
    if let Some(dev) = &args.dev_pki {
        let had_ca = dev.join("ca.pem").exists();
        let paths = crate::pki::write_dev_pki(dev, name)?;
        let abs = |p: &Path| p.canonicalize().with_context(|| format!("{}", p.display()));
        report.done(
            !had_ca,
            format!(
                "{} (the dev PKI: its CA, and a server certificate for localhost)",
                abs(dev)?.display()
            ),
        );
        return Ok(TlsPaths {
            cert: abs(&paths.server_cert)?,
            key: abs(&paths.server_key)?,
            client_ca: abs(&paths.ca_cert)?,
            client_crl: None,
        });
    }
    let pki = dir.join("pki");
    make_dir(&pki)?;
    let mut copy = |from: &Option<PathBuf>, to: &str, mode: u32, what: &str| {
        let Some(from) = from else {
            return Ok::<_, anyhow::Error>(None);
        };
        let bytes = Zeroizing::new(
            std::fs::read(from).with_context(|| format!("cannot read {}", from.display()))?,
        );
        let target = pki.join(to);
        if target.exists() {
            let held = Zeroizing::new(
                std::fs::read(&target)
                    .with_context(|| format!("cannot read {}", target.display()))?,
            );
            if *held != *bytes {
                bail!(
                    "{} exists and differs from {}: node init never replaces it; put the new \
                     file there yourself and send the running node SIGHUP",
                    target.display(),
                    from.display()
                );
            }
            report.kept(format!("{} ({what})", target.display()));
        } else {
            write_new(&target, &bytes, mode)?;
            report.made(format!(
                "{} ({what}, from {})",
                target.display(),
                from.display()
            ));
        }
        Ok(Some(target))
    };
    let client_ca = copy(&args.ca, "ca.pem", 0o644, "the programme CA")?;
    let cert = copy(
        &args.server_cert,
        "server.pem",
        0o644,
        "the node's certificate",
    )?;
    let key = copy(&args.server_key, "server.key", 0o600, "its key, mode 0600")?;
    let client_crl = copy(&args.crl, "ca.crl", 0o644, "the CA's revocation list")?;
    match (cert, key, client_ca) {
        (Some(cert), Some(key), Some(client_ca)) => Ok(TlsPaths {
            cert,
            key,
            client_ca,
            client_crl,
        }),
        _ => bail!("give --dev-pki DIR, or --ca with --server-cert and --server-key"),
    }
}

/// What goes into a new node.toml.
struct ConfigValues<'a> {
    dir: &'a Path,
    name: &'a str,
    tier: Tier,
    region: Region,
    listen: &'a str,
    policy: &'a Path,
    module: &'a Path,
    label: &'a str,
    so_pin: bool,
    /// The audit key's own token, if it has one.
    audit_label: Option<&'a str>,
    tls: &'a TlsPaths,
    metrics: Option<&'a str>,
}

/// A path as a TOML string: relative to the node's folder when inside it.
fn toml_path(dir: &Path, path: &Path) -> anyhow::Result<String> {
    let shown = path.strip_prefix(dir).unwrap_or(path);
    let text = shown
        .to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))?;
    Ok(toml_string(text))
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_string()).to_string()
}

fn config_text(v: &ConfigValues<'_>) -> anyhow::Result<String> {
    let p = |path: &Path| toml_path(v.dir, path);
    let mut t = String::from(
        "# Made by `hkms node init`; every key is described in docs/roles/operator.md.\n",
    );
    t += &format!(
        "[node]\nname = {}\ntier = \"{}\"\nregion = \"{}\"\nlisten = {}\ndata_dir = \"data\"\n\
         policy = {}\n",
        toml_string(v.name),
        v.tier,
        v.region,
        toml_string(v.listen),
        p(v.policy)?
    );
    t += &format!(
        "\n[token]\nmodule = {}\nlabel = {}\npin_file = \"softhsm/user.pin\"\n",
        p(v.module)?,
        toml_string(v.label)
    );
    if v.so_pin {
        t += "so_pin_file = \"softhsm/so.pin\"          # this node issues transport key cards\n";
    }
    t += &format!(
        "\n[tls]\ncert = {}\nkey = {}\nclient_ca = {}\n",
        p(&v.tls.cert)?,
        p(&v.tls.key)?,
        p(&v.tls.client_ca)?
    );
    if let Some(crl) = &v.tls.client_crl {
        t += &format!("client_crl = {}\n", p(crl)?);
    }
    if let Some(audit_label) = v.audit_label {
        t += &format!(
            "\n[audit.token]                     # the audit key's own token, with its own PIN\n\
             label = {}\npin_file = \"softhsm/{AUDIT_USER_PIN}\"\n",
            toml_string(audit_label)
        );
    }
    if let Some(metrics) = v.metrics {
        t += &format!("\n[metrics]\nlisten = {}\n", toml_string(metrics));
    }
    Ok(t)
}

/// Makes `dir` (and its parents) with mode 0700 when missing.
fn make_dir(dir: &Path) -> anyhow::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot make the folder {}", dir.display()))
}

/// Writes `bytes` to `path` unless it exists; says whether it wrote.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<bool> {
    match crate::durable::write_new_file(path, bytes, mode) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(anyhow::anyhow!("cannot write {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_the_folder_are_relative_and_strings_are_toml_quoted() {
        let dir = Path::new("/srv/hkms/gd");
        assert_eq!(
            toml_path(dir, Path::new("/srv/hkms/gd/pki/ca.pem")).unwrap(),
            "\"pki/ca.pem\""
        );
        assert_eq!(
            toml_path(dir, Path::new("/etc/hkms/policy.toml")).unwrap(),
            "\"/etc/hkms/policy.toml\""
        );
        assert_eq!(toml_string("a\"b\\c"), r#"'a"b\c'"#);
    }
}
