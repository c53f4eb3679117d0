//! The node configuration file (TOML): who this node is (tier, region), where it listens, which
//! token it uses and where it keeps its data. Relative paths are taken from the file's folder.
//! No PIN and no key value is ever in it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::hierarchy::{Region, Tier, line_of};
use crate::hsm::{HsmConfig, PinSource, TokenLocator};

/// A configuration that cannot be used, with what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read node config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for a node config.
    #[error("node config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The values do not fit together.
    #[error("node config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What to fix.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    node: RawNode,
    token: RawToken,
    tls: Option<RawTls>,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    ceremonies: RawCeremonies,
    #[serde(default)]
    retries: RawRetries,
    #[serde(default)]
    transport: RawTransport,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    witnesses: Vec<RawWitness>,
    #[serde(default)]
    api: RawApi,
}

/// The most bytes of encoded message a list answer of the API holds (`[api]
/// max_answer_bytes`): its default, and the most it may be.
pub const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// The least `[api] max_answer_bytes` may be: room for the largest single item of any list,
/// with its page token and an export statement.
pub const MIN_ANSWER_BYTES: usize = 16 * 1024;

/// `[api]`: how the gRPC API answers.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawApi {
    max_answer_bytes: usize,
}

impl Default for RawApi {
    fn default() -> Self {
        RawApi {
            max_answer_bytes: MAX_ANSWER_BYTES,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWitness {
    name: String,
    url: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    #[serde(default = "default_witness_retry")]
    retry_secs: u64,
}

fn default_witness_retry() -> u64 {
    10
}

/// A node that witnesses this node's log (`[[witnesses]]`): where it listens, the CA of its
/// server certificate, and this node's client certificate and key at it (an identity
/// `hkms://system/TIER/REGION/NAME` of this node's region, issued by the witness's CA).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessConfig {
    /// A name for logs and metrics.
    pub name: String,
    /// `https://host:port`.
    pub url: String,
    /// The CA that signed the witness's server certificate (PEM).
    pub ca: PathBuf,
    /// This node's client certificate at the witness (PEM).
    pub cert: PathBuf,
    /// Its key (PEM).
    pub key: PathBuf,
    /// How long to wait before sending again after a failure, or to look for a new checkpoint.
    pub retry: Duration,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    #[serde(default)]
    json: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTransport {
    card_module: Option<PathBuf>,
    package_ttl_days: u64,
}

impl Default for RawTransport {
    fn default() -> Self {
        RawTransport {
            card_module: None,
            package_ttl_days: 30,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAudit {
    checkpoint_every: u64,
    checkpoint_interval_secs: u64,
    token: Option<RawAuditToken>,
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit {
            checkpoint_every: 1000,
            checkpoint_interval_secs: 60,
            token: None,
        }
    }
}

/// `[audit.token]`: the token of the audit-signing key, read as `[token]` is (no SO PIN: the
/// node never does security-officer work there).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuditToken {
    module: Option<PathBuf>,
    label: Option<String>,
    uri: Option<String>,
    pin_env: Option<String>,
    pin_file: Option<PathBuf>,
    #[serde(default = "default_audit_sessions")]
    sessions: usize,
    #[serde(default = "default_session_wait_ms")]
    session_wait_ms: u64,
}

/// The audit key signs a checkpoint now and then, an export or a cosignature: two sessions
/// are plenty.
fn default_audit_sessions() -> usize {
    2
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCeremonies {
    ttl_secs: u64,
}

impl Default for RawCeremonies {
    fn default() -> Self {
        RawCeremonies { ttl_secs: 86_400 }
    }
}

/// `[retries]`: how long a client's request id is remembered (docs/api.md).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRetries {
    window_secs: u64,
}

impl Default for RawRetries {
    fn default() -> Self {
        RawRetries {
            window_secs: 86_400,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
    #[serde(default)]
    client_crl: Option<PathBuf>,
}

/// The node's TLS files (PEM).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server certificate chain.
    pub cert: PathBuf,
    /// The server's private key.
    pub key: PathBuf,
    /// The programme CA that issues callers' certificates.
    pub client_ca: PathBuf,
    /// Revocation lists of that CA (PEM): a certificate listed there is refused at the
    /// handshake and on every request. Read at start and on SIGHUP.
    pub client_crl: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    tier: String,
    region: String,
    listen: String,
    data_dir: PathBuf,
    policy: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    module: PathBuf,
    label: Option<String>,
    uri: Option<String>,
    pin_env: Option<String>,
    pin_file: Option<PathBuf>,
    so_pin_env: Option<String>,
    so_pin_file: Option<PathBuf>,
    #[serde(default = "default_sessions")]
    sessions: usize,
    #[serde(default = "default_session_wait_ms")]
    session_wait_ms: u64,
    #[serde(default)]
    require_sealed: bool,
}

fn default_sessions() -> usize {
    4
}

fn default_session_wait_ms() -> u64 {
    10_000
}

/// A loaded, checked node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// A short name for logs and records (e.g. "ministry", "guangdong").
    pub name: String,
    /// This node's tier; always the tier of `region`.
    pub tier: Tier,
    /// This node's region.
    pub region: Region,
    /// Where the gRPC service listens.
    pub listen: SocketAddr,
    /// Folder of the SQLite registry.
    pub data_dir: PathBuf,
    /// The policy file (key types today; rules later).
    pub policy: PathBuf,
    /// How to reach the token.
    pub hsm: HsmConfig,
    /// The token of the ceremony log's signing key, when it is not `hsm` (`[audit.token]`):
    /// a token of its own with a PIN of its own, so that the application PIN cannot sign.
    pub audit_token: Option<HsmConfig>,
    /// The server's certificate and the CA of its callers.
    pub tls: TlsFiles,
    /// A checkpoint is signed after this many records...
    pub checkpoint_every: u64,
    /// ...or this long after the last one, whichever comes first (and at shutdown).
    pub checkpoint_interval: Duration,
    /// How long a ceremony stays open for approvals.
    pub ceremony_ttl: Duration,
    /// How long a client's request id is remembered: a retry with it within this window gets
    /// the first answer (`[retries] window_secs`, default 24 hours).
    pub retry_window: Duration,
    /// Where the security officer PIN comes from (nodes that issue transport key cards).
    pub so_pin: Option<PinSource>,
    /// The PKCS#11 module of the transport key cards (default: the token's module).
    pub card_module: PathBuf,
    /// How long a key package can be imported after it was made.
    pub package_ttl: Duration,
    /// Where Prometheus scrapes plain-HTTP `/metrics` (loopback only), if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    /// Log JSON lines (for a log shipper) instead of text.
    pub log_json: bool,
    /// Refuse to start on a token that lets any attack of the token probe through (the
    /// production setting; see docs/tokens.md).
    pub require_sealed: bool,
    /// The nodes that witness this node's log.
    pub witnesses: Vec<WitnessConfig>,
    /// The most bytes of encoded message one page of a list answer holds.
    pub max_answer_bytes: usize,
}

impl NodeConfig {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        NodeConfig::parse(&text, path, base)
    }

    /// Checks a config text; `base` resolves relative paths.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<NodeConfig, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: toml_error_message(text, &e),
        })?;
        let tier: Tier = raw
            .node
            .tier
            .parse()
            .map_err(|e| invalid(format!("[node] tier: {e}")))?;
        let region =
            Region::parse(&raw.node.region).map_err(|e| invalid(format!("[node] region: {e}")))?;
        if region.tier() != tier {
            return Err(invalid(format!(
                "[node] region {region} is a {} code but tier is {tier}; make them agree",
                region.tier()
            )));
        }
        let listen: SocketAddr = raw.node.listen.parse().map_err(|_| {
            invalid(format!(
                "[node] listen `{}` is not an address:port such as 127.0.0.1:50051",
                raw.node.listen
            ))
        })?;
        let tls = raw.tls.ok_or_else(|| {
            invalid(
                "no [tls] section: hkms serves only over mutual TLS; give cert, key and \
                 client_ca (for a dev PKI: `hkms pki init --dir DIR`)"
                    .into(),
            )
        })?;
        let t = raw.token;
        let t_require_sealed = t.require_sealed;
        let locator = token_locator("[token]", t.label, t.uri).map_err(&invalid)?;
        let pin = pin_source("[token]", t.pin_env, t.pin_file, base).map_err(&invalid)?;
        if raw.audit.checkpoint_every == 0 || raw.audit.checkpoint_interval_secs == 0 {
            return Err(invalid(
                "[audit] checkpoint_every and checkpoint_interval_secs must be at least 1".into(),
            ));
        }
        if !(MIN_ANSWER_BYTES..=MAX_ANSWER_BYTES).contains(&raw.api.max_answer_bytes) {
            return Err(invalid(format!(
                "[api] max_answer_bytes {} is outside {MIN_ANSWER_BYTES}..={MAX_ANSWER_BYTES} \
                 (16 KiB to 1 MiB)",
                raw.api.max_answer_bytes
            )));
        }
        if raw.ceremonies.ttl_secs == 0 {
            return Err(invalid("[ceremonies] ttl_secs must be at least 1".into()));
        }
        if raw.retries.window_secs == 0 {
            return Err(invalid(
                "[retries] window_secs must be at least 1 (a client's request id is remembered \
                 that long)"
                    .into(),
            ));
        }
        let so_pin = match (t.so_pin_env, t.so_pin_file) {
            (None, None) => None,
            (Some(var), None) => Some(PinSource::Env(var)),
            (None, Some(file)) => Some(PinSource::File(base.join(file))),
            _ => {
                return Err(invalid(
                    "[token] takes at most one of `so_pin_env` or `so_pin_file`".into(),
                ));
            }
        };
        let card_module = raw
            .transport
            .card_module
            .clone()
            .unwrap_or_else(|| t.module.clone());
        if raw.transport.package_ttl_days == 0 {
            return Err(invalid(
                "[transport] package_ttl_days must be at least 1".into(),
            ));
        }
        let metrics_listen = match &raw.metrics.listen {
            None => None,
            Some(text) => {
                let addr: SocketAddr = text.parse().map_err(|_| {
                    invalid(format!(
                        "[metrics] listen `{text}` is not an address:port such as 127.0.0.1:9464"
                    ))
                })?;
                if !addr.ip().is_loopback() {
                    return Err(invalid(format!(
                        "[metrics] listen `{text}` is not a loopback address: metrics are plain \
                         HTTP without authentication, so hkms serves them on 127.0.0.1 or ::1 \
                         only; put a scraper or proxy on this host"
                    )));
                }
                if addr == listen && addr.port() != 0 {
                    return Err(invalid(
                        "[metrics] listen must differ from [node] listen".into(),
                    ));
                }
                Some(addr)
            }
        };
        if t.sessions == 0 || t.sessions > 256 {
            return Err(invalid("[token] sessions must be between 1 and 256".into()));
        }
        let hsm = HsmConfig {
            module: t.module,
            locator,
            pin,
            sessions: t.sessions,
            session_wait: Duration::from_millis(t.session_wait_ms),
        };
        let audit_token = match raw.audit.token {
            None => None,
            Some(a) => Some(audit_token(a, &hsm, base).map_err(&invalid)?),
        };
        // The name goes into every record and into the checkpoints' signed message, whose
        // fields are separated by spaces.
        let name_ok = (1..=64).contains(&raw.node.name.len())
            && raw
                .node
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !name_ok {
            return Err(invalid(
                "[node] name must be 1 to 64 letters, digits, `-`, `_` or `.` (it is written \
                 into every record and checkpoint)"
                    .into(),
            ));
        }
        let mut witnesses = Vec::new();
        for w in raw.witnesses {
            if !(w.url.starts_with("https://") || w.url.starts_with("http://")) {
                return Err(invalid(format!(
                    "[[witnesses]] {}: url `{}` must be https://host:port",
                    w.name, w.url
                )));
            }
            if w.retry_secs == 0 {
                return Err(invalid(format!(
                    "[[witnesses]] {}: retry_secs must be at least 1",
                    w.name
                )));
            }
            witnesses.push(WitnessConfig {
                name: w.name,
                url: w.url,
                ca: base.join(w.ca),
                cert: base.join(w.cert),
                key: base.join(w.key),
                retry: Duration::from_secs(w.retry_secs),
            });
        }
        Ok(NodeConfig {
            name: raw.node.name,
            tier,
            region,
            listen,
            data_dir: base.join(raw.node.data_dir),
            policy: base.join(raw.node.policy),
            hsm,
            audit_token,
            tls: TlsFiles {
                cert: base.join(tls.cert),
                key: base.join(tls.key),
                client_ca: base.join(tls.client_ca),
                client_crl: tls.client_crl.map(|p| base.join(p)),
            },
            checkpoint_every: raw.audit.checkpoint_every,
            checkpoint_interval: Duration::from_secs(raw.audit.checkpoint_interval_secs),
            ceremony_ttl: Duration::from_secs(raw.ceremonies.ttl_secs),
            retry_window: Duration::from_secs(raw.retries.window_secs),
            so_pin,
            card_module,
            package_ttl: Duration::from_secs(raw.transport.package_ttl_days.saturating_mul(86_400)),
            metrics_listen,
            log_json: raw.log.json,
            require_sealed: t_require_sealed,
            witnesses,
            max_answer_bytes: raw.api.max_answer_bytes,
        })
    }

    /// The registry database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("registry.sqlite")
    }
}

/// Which token a section names: exactly one of `label` or `uri`.
fn token_locator(
    section: &str,
    label: Option<String>,
    uri: Option<String>,
) -> Result<TokenLocator, String> {
    match (label, uri) {
        (Some(label), None) => Ok(TokenLocator::by_label(&label)),
        (None, Some(uri)) => {
            TokenLocator::from_uri(&uri).map_err(|e| format!("{section} uri: {e}"))
        }
        _ => Err(format!("{section} needs exactly one of `label` or `uri`")),
    }
}

/// Where a section's user PIN comes from: exactly one of `pin_env` or `pin_file`.
fn pin_source(
    section: &str,
    env: Option<String>,
    file: Option<PathBuf>,
    base: &Path,
) -> Result<PinSource, String> {
    match (env, file) {
        (Some(var), None) => Ok(PinSource::Env(var)),
        (None, Some(file)) => Ok(PinSource::File(base.join(file))),
        _ => Err(format!(
            "{section} needs exactly one of `pin_env` or `pin_file` (the PIN itself never goes \
             in the config)"
        )),
    }
}

/// `[audit.token]` as an [`HsmConfig`]; its module defaults to `[token]`'s. A section naming
/// `[token]`'s own token is refused: the key would stay under the application PIN while the
/// config said otherwise.
fn audit_token(a: RawAuditToken, main: &HsmConfig, base: &Path) -> Result<HsmConfig, String> {
    const SECTION: &str = "[audit.token]";
    let locator = token_locator(SECTION, a.label, a.uri)?;
    let pin = pin_source(SECTION, a.pin_env, a.pin_file, base)?;
    if a.sessions == 0 || a.sessions > 256 {
        return Err(format!("{SECTION} sessions must be between 1 and 256"));
    }
    let module = a.module.unwrap_or_else(|| main.module.clone());
    if module == main.module && locator == main.locator {
        return Err(format!(
            "{SECTION} names the token of [token] ({locator}): the audit key needs a token of its \
             own with a PIN of its own; name that token, or leave {SECTION} out to keep the key \
             on [token]"
        ));
    }
    if pin == main.pin {
        return Err(format!(
            "{SECTION} reads its PIN from {pin}, as [token] does: the audit token's PIN must not \
             be the application PIN; give it its own pin_file or pin_env"
        ));
    }
    Ok(HsmConfig {
        module,
        locator,
        pin,
        sessions: a.sessions,
        session_wait: Duration::from_millis(a.session_wait_ms),
    })
}

/// A TOML error as "line N: message", without echoing the offending line: a misplaced secret
/// must not reach a log through an error message.
pub fn toml_error_message(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => format!("line {}: {}", line_of(text, span.start), e.message()),
        None => e.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
name = "ministry"
tier = "national"
region = "000000"
listen = "127.0.0.1:0"
data_dir = "data"
policy = "policy.toml"

[token]
module = "/usr/lib/softhsm/libsofthsm2.so"
label = "hkms-dev"
pin_file = "user.pin"

[tls]
cert = "pki/server.pem"
key = "pki/server.key"
client_ca = "pki/ca.pem"
"#;

    fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        NodeConfig::parse(
            text,
            Path::new("/etc/hkms/node.toml"),
            Path::new("/etc/hkms"),
        )
    }

    #[test]
    fn good_config_resolves_relative_paths() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.data_dir, Path::new("/etc/hkms/data"));
        assert_eq!(c.hsm.pin, PinSource::File("/etc/hkms/user.pin".into()));
        assert_eq!(c.hsm.sessions, 4);
    }

    #[test]
    fn request_ids_are_remembered_a_day_unless_configured() {
        assert_eq!(
            parse(GOOD).unwrap().retry_window,
            Duration::from_secs(86_400)
        );
        let hour = format!("{GOOD}\n[retries]\nwindow_secs = 3600\n");
        assert_eq!(
            parse(&hour).unwrap().retry_window,
            Duration::from_secs(3600)
        );
        let none = format!("{GOOD}\n[retries]\nwindow_secs = 0\n");
        let err = parse(&none).unwrap_err().to_string();
        assert!(
            err.contains("[retries] window_secs must be at least 1"),
            "{err}"
        );
    }

    #[test]
    fn tier_must_match_region() {
        let err = parse(&GOOD.replace("\"000000\"", "\"440000\"")).unwrap_err();
        assert!(err.to_string().contains("make them agree"), "{err}");
    }

    #[test]
    fn there_is_no_plaintext_listener() {
        let text = GOOD.split("[tls]").next().unwrap();
        let err = parse(text).unwrap_err();
        assert!(err.to_string().contains("only over mutual TLS"), "{err}");
        let c = parse(&GOOD.replace("127.0.0.1:0", "0.0.0.0:50051")).unwrap();
        assert_eq!(c.tls.client_ca, Path::new("/etc/hkms/pki/ca.pem"));
        assert_eq!(c.tls.client_crl, None);
        let with_crl = format!("{GOOD}client_crl = \"pki/revoked.crl\"\n");
        let c = parse(&with_crl).unwrap();
        assert_eq!(
            c.tls.client_crl.as_deref(),
            Some(Path::new("/etc/hkms/pki/revoked.crl"))
        );
    }

    #[test]
    fn a_node_name_that_would_break_a_record_or_checkpoint_is_refused() {
        for bad in ["", "two words", "tab\there", "sl/ash", &"n".repeat(65)] {
            let err = parse(&GOOD.replace("name = \"ministry\"", &format!("name = {bad:?}")))
                .unwrap_err();
            assert!(
                err.to_string().contains("[node] name must be"),
                "{bad:?}: {err}"
            );
        }
        for good in ["guangdong", "node-440100.a_1"] {
            let c =
                parse(&GOOD.replace("name = \"ministry\"", &format!("name = {good:?}"))).unwrap();
            assert_eq!(c.name, good);
        }
    }

    #[test]
    fn pin_in_config_or_two_sources_is_refused() {
        let err = parse(&GOOD.replace("pin_file = \"user.pin\"", "pin = \"1234\"")).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        assert!(!err.to_string().contains("1234"), "{err}");
        assert!(err.to_string().contains("line 13"), "{err}");
        let both = GOOD.replace(
            "pin_file = \"user.pin\"",
            "pin_file = \"a\"\npin_env = \"B\"",
        );
        assert!(parse(&both).is_err());
    }

    #[test]
    fn list_answers_are_capped_at_one_mib_unless_lowered() {
        assert_eq!(parse(GOOD).unwrap().max_answer_bytes, MAX_ANSWER_BYTES);
        let with = |n: usize| parse(&format!("{GOOD}\n[api]\nmax_answer_bytes = {n}\n"));
        assert_eq!(with(16384).unwrap().max_answer_bytes, 16384);
        for bad in [MIN_ANSWER_BYTES - 1, MAX_ANSWER_BYTES + 1] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.contains("[api] max_answer_bytes"), "{err}");
        }
    }

    #[test]
    fn unknown_field_names_the_line() {
        let err = parse(&GOOD.replace("name = \"ministry\"", "nmae = \"ministry\"")).unwrap_err();
        assert!(err.to_string().contains("line"), "{err}");
    }

    #[test]
    fn the_audit_key_stays_on_the_token_unless_audit_token_is_given() {
        assert!(parse(GOOD).unwrap().audit_token.is_none());
        let own = format!(
            "{GOOD}\n[audit]\ncheckpoint_every = 10\n\n[audit.token]\nlabel = \"hkms-audit\"\n\
             pin_file = \"audit.pin\"\n"
        );
        let c = parse(&own).unwrap();
        let a = c.audit_token.expect("[audit.token]");
        assert_eq!(a.locator, TokenLocator::by_label("hkms-audit"));
        assert_eq!(a.pin, PinSource::File("/etc/hkms/audit.pin".into()));
        assert_eq!(a.module, c.hsm.module, "the module defaults to [token]'s");
        assert_eq!(a.sessions, 2);
        assert_eq!(c.checkpoint_every, 10);
        let uri = format!(
            "{GOOD}\n[audit.token]\nmodule = \"/opt/hsm/lib.so\"\nuri = \"pkcs11:token=a\"\n\
             pin_env = \"AUDIT_PIN\"\n"
        );
        let a = parse(&uri).unwrap().audit_token.expect("[audit.token]");
        assert_eq!(a.module, Path::new("/opt/hsm/lib.so"));
        assert_eq!(a.pin, PinSource::Env("AUDIT_PIN".into()));
    }

    #[test]
    fn an_audit_token_that_is_the_main_token_or_shares_its_pin_is_refused() {
        let same = format!("{GOOD}\n[audit.token]\nlabel = \"hkms-dev\"\npin_file = \"a.pin\"\n");
        let err = parse(&same).unwrap_err().to_string();
        assert!(err.contains("names the token of [token]"), "{err}");
        let same_pin =
            format!("{GOOD}\n[audit.token]\nlabel = \"hkms-audit\"\npin_file = \"user.pin\"\n");
        let err = parse(&same_pin).unwrap_err().to_string();
        assert!(err.contains("must not be the application PIN"), "{err}");
        for bad in [
            "label = \"a\"\n",
            "pin_file = \"a.pin\"\n",
            "label = \"a\"\npin_file = \"a.pin\"\npin = \"1234\"\n",
            "label = \"a\"\npin_file = \"a.pin\"\nso_pin_file = \"so.pin\"\n",
            "label = \"a\"\npin_file = \"a.pin\"\nsessions = 0\n",
        ] {
            let err = parse(&format!("{GOOD}\n[audit.token]\n{bad}")).unwrap_err();
            assert!(!err.to_string().contains("1234"), "{err}");
            assert!(
                err.to_string().contains("[audit.token]") || err.to_string().contains("line"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn metrics_are_off_by_default_and_loopback_only() {
        assert_eq!(parse(GOOD).unwrap().metrics_listen, None);
        let on = parse(&format!("{GOOD}\n[metrics]\nlisten = \"127.0.0.1:9464\"\n")).unwrap();
        assert_eq!(on.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        let v6 = parse(&format!("{GOOD}\n[metrics]\nlisten = \"[::1]:9464\"\n")).unwrap();
        assert!(v6.metrics_listen.is_some());
        for bad in ["0.0.0.0:9464", "10.1.2.3:9464", "localhost:9464"] {
            let err = parse(&format!("{GOOD}\n[metrics]\nlisten = \"{bad}\"\n")).unwrap_err();
            assert!(err.to_string().contains("[metrics]"), "{bad}: {err}");
        }
    }
}
