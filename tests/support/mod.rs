//! Test harness: real tokens in temporary folders (SoftHSM2 by softhsm-setup/, Kryoptic by kryoptic-setup/), real
//! `hkms serve` processes on 127.0.0.1, and clients that use the public gRPC API or the CLI.
#![allow(dead_code)]

pub mod raw_codec;
pub mod shell;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use hkms::pki::{DevCa, Validity, write_dev_pki, write_issued};
use hkms::policy::Identity;
use hkms::proto::ceremony_service_client::CeremonyServiceClient;
use hkms::proto::key_service_client::KeyServiceClient;
use tempfile::TempDir;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

pub mod transport;
pub mod witness;

/// The user PIN every test token gets.
pub const USER_PIN: &str = "user-pin-4711";
/// The SO PIN every test token gets.
pub const SO_PIN: &str = "so-pin-0815";

/// The `hkms` binary under test.
pub fn hkms_bin() -> &'static str {
    env!("CARGO_BIN_EXE_hkms")
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The default policy of the repository.
pub fn default_policy() -> PathBuf {
    repo().join("policies/default.toml")
}

/// `[card_limits]` that no load test reaches: soaks and benchmarks measure the node, not its
/// limits (tests/card_limits.rs tests those).
pub const LOAD_CARD_LIMITS: &str = "per_window_per_minute = 4294967295
per_window_per_day = 4294967295
per_card_per_day = 4294967295
per_node_per_minute = 4294967295
";

/// The default policy with its `[card_limits]` section replaced by one whose body is `limits`,
/// written to `dir/policy.toml`; returns that path.
pub fn policy_with_card_limits(dir: &Path, limits: &str) -> PathBuf {
    let text = std::fs::read_to_string(default_policy()).expect("default policy");
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.starts_with('[') {
            skipping = line.trim() == "[card_limits]";
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str(&format!("\n[card_limits]\n{limits}\n"));
    let path = dir.join("policy.toml");
    std::fs::create_dir_all(dir).expect("policy folder");
    std::fs::write(&path, out).expect("write policy");
    path
}

/// A node config text (from [`node_config`]) that loads the policy at `policy` instead.
pub fn with_policy(text: String, policy: &Path) -> String {
    let default = format!("policy = \"{}\"", default_policy().display());
    assert!(text.contains(&default), "a config from node_config");
    text.replace(&default, &format!("policy = \"{}\"", policy.display()))
}

/// Set to 1 to skip the tests that need Kryoptic (`scripts/test` then does not build it).
pub const SKIP_KRYOPTIC: &str = "HKMS_SKIP_KRYOPTIC_TESTS";

/// Whether the tests that need Kryoptic are to be skipped ([`SKIP_KRYOPTIC`]); says so when
/// they are. Without it, such a test fails when Kryoptic is not built, saying to build it.
pub fn kryoptic_skipped() -> bool {
    let skip = std::env::var(SKIP_KRYOPTIC).is_ok_and(|v| v == "1");
    if skip {
        eprintln!("skipped: {SKIP_KRYOPTIC}=1");
    }
    skip
}

/// Which PKCS#11 implementation a test token is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// Debian's SoftHSM2 (softhsm-setup/).
    SoftHsm2,
    /// Kryoptic, built from its crate (kryoptic-setup/).
    Kryoptic,
}

/// Chooses the token of [`TestNode::start`] and [`make_test_token`]: `softhsm2` (the default)
/// or `kryoptic`.
pub const TEST_TOKEN: &str = "HKMS_TEST_TOKEN";

impl TokenKind {
    /// The kind [`TEST_TOKEN`] names; SoftHSM2 when it is unset. Any other value fails the
    /// test, rather than quietly running on SoftHSM2.
    pub fn from_env() -> TokenKind {
        match std::env::var(TEST_TOKEN).as_deref() {
            Err(_) | Ok("") | Ok("softhsm2") => TokenKind::SoftHsm2,
            Ok("kryoptic") => TokenKind::Kryoptic,
            Ok(other) => panic!("{TEST_TOKEN}={other}: use softhsm2 or kryoptic"),
        }
    }

    fn make_token_script(self) -> &'static str {
        match self {
            TokenKind::SoftHsm2 => "softhsm-setup/make-token.sh",
            TokenKind::Kryoptic => "kryoptic-setup/make-token.sh",
        }
    }
}

/// A token folder made by the project's own setup script for its kind.
#[derive(Debug, Clone)]
pub struct Token {
    /// The implementation.
    pub kind: TokenKind,
    /// The implementation's configuration file for this folder (SOFTHSM2_CONF, KRYOPTIC_CONF).
    pub conf: PathBuf,
    /// The environment a process needs to reach the folder's tokens, as the setup script
    /// printed it (its variables other than `HKMS_*`).
    pub env: Vec<(String, String)>,
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// Token label.
    pub label: String,
    /// File holding the user PIN.
    pub pin_file: PathBuf,
}

impl Token {
    /// The variables of [`Token::env`], for `Command::envs`.
    pub fn envs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.env.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// Makes a SoftHSM2 token in `dir` through the project's own setup script.
pub fn make_token(dir: &Path, label: &str) -> Token {
    make_token_of(TokenKind::SoftHsm2, dir, label)
}

/// Makes a token of the kind [`TEST_TOKEN`] names (SoftHSM2 by default) in `dir`.
pub fn make_test_token(dir: &Path, label: &str) -> Token {
    make_token_of(TokenKind::from_env(), dir, label)
}

/// Makes a token of `kind` in `dir` through the project's own setup script. Kryoptic must have
/// been built (`kryoptic-setup/install.sh`, which `scripts/test` runs): the test fails saying so
/// otherwise.
pub fn make_token_of(kind: TokenKind, dir: &Path, label: &str) -> Token {
    let script = kind.make_token_script();
    let out = Command::new(repo().join(script))
        .arg(dir)
        .arg(label)
        .env("HKMS_USER_PIN", USER_PIN)
        .env("HKMS_SO_PIN", SO_PIN)
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let exports: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let var = |name: &str| -> String {
        exports
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{script} printed no {name}: {text}"))
    };
    let env: Vec<(String, String)> = exports
        .iter()
        .filter(|(k, _)| !k.starts_with("HKMS_"))
        .cloned()
        .collect();
    let conf = env
        .first()
        .map(|(_, v)| PathBuf::from(v))
        .unwrap_or_else(|| panic!("{script} printed no configuration variable: {text}"));
    Token {
        kind,
        conf,
        env,
        module: var("HKMS_PKCS11_MODULE").into(),
        label: var("HKMS_TOKEN_LABEL"),
        pin_file: var("HKMS_PIN_FILE").into(),
    }
}

/// Makes a second SoftHSM2 token labelled `label` in the token folder of `token`, so that the
/// one module (and `SOFTHSM2_CONF`) of `token` sees both, with its own user PIN `pin` kept in
/// `FOLDER/LABEL.pin`; returns it (an audit token, `[audit.token]`).
pub fn add_softhsm_token(token: &Token, label: &str, pin: &str) -> Token {
    assert_eq!(token.kind, TokenKind::SoftHsm2, "SoftHSM2 tokens only");
    let folder = token.conf.parent().expect("the token folder");
    let pin_file = folder.join(format!("{label}.pin"));
    std::fs::write(&pin_file, pin).expect("write the PIN file");
    let out = Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label])
        .args(["--so-pin", SO_PIN, "--pin", pin])
        .env("SOFTHSM2_CONF", &token.conf)
        .output()
        .expect("run softhsm2-util");
    assert!(
        out.status.success(),
        "softhsm2-util --init-token {label}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Token {
        label: label.to_string(),
        pin_file,
        ..token.clone()
    }
}

/// A node config text (from [`node_config`]) that keeps the audit key on `audit`
/// (`[audit.token]`, the module of `[token]`).
pub fn with_audit_token(text: String, audit: &Token) -> String {
    format!(
        "{text}\n[audit.token]\nlabel = \"{}\"\npin_file = \"{}\"\n",
        audit.label,
        audit.pin_file.display()
    )
}

/// A node config text for a token, with its TLS files in `pki/` beside it.
pub fn node_config(name: &str, tier: &str, region: &str, token: &Token) -> String {
    format!(
        r#"[node]
name = "{name}"
tier = "{tier}"
region = "{region}"
listen = "127.0.0.1:0"
data_dir = "data"
policy = "{policy}"

[token]
module = "{module}"
label = "{label}"
pin_file = "{pin}"
sessions = 4

[tls]
cert = "pki/server.pem"
key = "pki/server.key"
client_ca = "pki/ca.pem"
"#,
        policy = default_policy().display(),
        module = token.module.display(),
        label = token.label,
        pin = token.pin_file.display(),
    )
}

/// Makes the dev PKI of a node folder (`DIR/pki`) and returns its CA.
pub fn make_pki(dir: &Path) -> DevCa {
    let pki = dir.join("pki");
    write_dev_pki(&pki, "test").expect("dev pki");
    let read = |n: &str| std::fs::read_to_string(pki.join(n)).expect("pki file");
    DevCa::from_pem(&read("ca.pem"), &read("ca.key")).expect("load CA")
}

/// TLS settings of a client with a fresh certificate for `identity` from `ca` (None: a
/// certificate without any hkms identity).
pub fn client_tls(ca: &DevCa, identity: Option<&str>, validity: Validity) -> ClientTlsConfig {
    let id = identity.map(|u| Identity::from_uri(u).expect("identity"));
    let cert = ca.issue_client(id.as_ref(), validity).expect("issue");
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.cert_pem()))
        .identity(tonic::transport::Identity::from_pem(
            cert.cert_pem.as_bytes(),
            cert.key_pem.as_bytes(),
        ))
}

/// A running `hkms serve` with its own token, registry, PKI and folder.
pub struct TestNode {
    pub dir: TempDir,
    pub token: Token,
    pub config: PathBuf,
    pub addr: SocketAddr,
    pub ca: DevCa,
    /// The node's own officer, used by `client()` and `cli()`.
    pub officer: String,
    child: Option<Child>,
}

impl TestNode {
    /// Starts a node of this tier and region with a fresh token.
    pub fn start(tier: &str, region: &str) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = make_test_token(&dir.path().join("token"), "hkms-test");
        let config = dir.path().join("node.toml");
        std::fs::write(&config, node_config(region, tier, region, &token)).expect("write config");
        TestNode::start_in(dir, token, config)
    }

    /// Starts a node on a prepared folder, token and config (the config's tier and region
    /// name the node's officer).
    pub fn start_in(dir: TempDir, token: Token, config: PathBuf) -> TestNode {
        let ca = make_pki(dir.path());
        let text = std::fs::read_to_string(&config).expect("config");
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} = \"")))
                .and_then(|v| v.strip_suffix('"'))
                .expect("field")
                .to_string()
        };
        let officer = format!(
            "hkms://officer/{}/{}/test-officer",
            field("tier"),
            field("region")
        );
        let id = Identity::from_uri(&officer).expect("identity");
        let cert = ca
            .issue_client(Some(&id), Validity::days(1))
            .expect("issue");
        write_issued(&dir.path().join("pki"), "officer", &cert).expect("write officer");
        let (child, addr) = spawn_server(&token, &config, dir.path());
        TestNode {
            dir,
            token,
            config,
            addr,
            ca,
            officer,
            child: Some(child),
        }
    }

    /// The registry file.
    pub fn database(&self) -> PathBuf {
        self.dir.path().join("data/registry.sqlite")
    }

    /// `https://addr` for clients.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A channel with these TLS settings; the error when the connection is refused.
    pub async fn try_channel(
        &self,
        tls: ClientTlsConfig,
    ) -> Result<Channel, tonic::transport::Error> {
        self.endpoint(tls).connect().await
    }

    fn endpoint(&self, tls: ClientTlsConfig) -> tonic::transport::Endpoint {
        Channel::from_shared(self.url())
            .expect("url")
            .tls_config(tls)
            .expect("tls")
    }

    /// A channel as `identity`, with a fresh certificate from the node's CA.
    pub async fn channel_as(&self, identity: &str) -> Channel {
        self.try_channel(client_tls(&self.ca, Some(identity), Validity::days(1)))
            .await
            .expect("connect")
    }

    /// A channel as `identity` whose streams accept only `window` bytes that the client has
    /// not read yet: a client that stops reading stalls the server's sends after that much.
    pub async fn channel_with_window(&self, identity: &str, window: u32) -> Channel {
        self.endpoint(client_tls(&self.ca, Some(identity), Validity::days(1)))
            .initial_stream_window_size(window)
            .connect()
            .await
            .expect("connect")
    }

    /// A channel as the node's officer.
    pub async fn channel(&self) -> Channel {
        self.channel_as(&self.officer).await
    }

    /// A key service client as the node's officer.
    pub async fn client(&self) -> KeyServiceClient<Channel> {
        KeyServiceClient::new(self.channel().await)
    }

    /// A key service client as `identity`.
    pub async fn client_as(&self, identity: &str) -> KeyServiceClient<Channel> {
        KeyServiceClient::new(self.channel_as(identity).await)
    }

    /// A second officer of the node's region, for dual control.
    pub fn second_officer(&self) -> String {
        self.officer.replace("/test-officer", "/second-officer")
    }

    /// Runs a ceremony opened by the node's officer and approved by a second officer; returns
    /// the finished ceremony.
    pub async fn ceremony(
        &self,
        operation: hkms::proto::Operation,
        params: &[(&str, &str)],
    ) -> hkms::proto::CeremonyInfo {
        let mut opener = CeremonyServiceClient::new(self.channel().await);
        let opened = opener
            .open_ceremony(hkms::proto::OpenCeremonyRequest {
                operation: operation.into(),
                params: params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Default::default()
            })
            .await
            .expect("open ceremony")
            .into_inner();
        let mut second = CeremonyServiceClient::new(self.channel_as(&self.second_officer()).await);
        second
            .approve_ceremony(hkms::proto::CeremonyId {
                id: opened.id,
                ..Default::default()
            })
            .await
            .expect("approve ceremony")
            .into_inner()
    }

    /// Generates a key under dual control (as the default policy asks for national keys).
    pub async fn generate(&self, key_type: &str) -> hkms::proto::Key {
        let done = self
            .ceremony(hkms::proto::Operation::Generate, &[("key_type", key_type)])
            .await;
        assert_eq!(
            done.state(),
            hkms::proto::CeremonyState::Done,
            "{}",
            done.result
        );
        let id = key_id_in(&done.result).expect("key id in the ceremony result");
        self.client()
            .await
            .get_key(hkms::proto::GetKeyRequest { id })
            .await
            .expect("get generated key")
            .into_inner()
            .key
            .expect("key")
    }

    /// Runs the `hkms` CLI against this node as its officer (server, certificate and token
    /// environment set).
    pub fn cli(&self, args: &[&str]) -> Output {
        let pki = self.dir.path().join("pki");
        Command::new(hkms_bin())
            .args(args)
            .env("HKMS_SERVER", self.url())
            .env("HKMS_CERT", pki.join("officer.pem"))
            .env("HKMS_KEY", pki.join("officer.key"))
            .env("HKMS_CA", pki.join("ca.pem"))
            .envs(self.token.envs())
            .env("HKMS_CONFIG", &self.config)
            .stdin(Stdio::null())
            .output()
            .expect("run hkms")
    }

    /// Runs the `hkms` CLI as `identity` (a certificate is issued for it on first use).
    pub fn cli_as(&self, identity: &str, args: &[&str]) -> Output {
        self.cli_as_with_input(identity, args, None)
    }

    /// [`TestNode::cli_as`], with `input` on standard input (secrets, as a script gives them).
    pub fn cli_as_with_input(&self, identity: &str, args: &[&str], input: Option<&str>) -> Output {
        let pki = self.dir.path().join("pki");
        let stem = format!("as-{:x}", {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            identity.hash(&mut h);
            h.finish()
        });
        if !pki.join(format!("{stem}.pem")).exists() {
            let id = Identity::from_uri(identity).expect("identity");
            let cert = self
                .ca
                .issue_client(Some(&id), Validity::days(1))
                .expect("issue");
            write_issued(&pki, &stem, &cert).expect("write cert");
        }
        let mut child = Command::new(hkms_bin())
            .args(args)
            .env("HKMS_SERVER", self.url())
            .env("HKMS_CERT", pki.join(format!("{stem}.pem")))
            .env("HKMS_KEY", pki.join(format!("{stem}.key")))
            .env("HKMS_CA", pki.join("ca.pem"))
            .envs(self.token.envs())
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run hkms");
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            use std::io::Write;
            stdin.write_all(text.as_bytes()).expect("write stdin");
        }
        child.wait_with_output().expect("run hkms")
    }

    /// Stops the server gracefully (SIGTERM) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            for _ in 0..100 {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server with SIGKILL (a crash) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same folder, token and config.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Starts the server after a `stop` or `kill`.
    pub fn start_again(&mut self) {
        let (child, addr) = spawn_server(&self.token, &self.config, self.dir.path());
        self.child = Some(child);
        self.addr = addr;
    }

    /// The server's process id (for signals).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends the server SIGHUP (reload the policy and TLS files), as a host administrator does.
    pub fn hang_up(&self) {
        let pid = self.pid().expect("the server is running").to_string();
        let sent = Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -HUP {pid}");
    }

    /// Whether the server process is still running (it has not exited or crashed).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("serve.log")).unwrap_or_default()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `hkms serve` to completion or until it reports its address; returns the process, or its
/// output when it exits first.
pub fn try_spawn_server(
    token: &Token,
    config: &Path,
    dir: &Path,
) -> Result<(Child, SocketAddr), Output> {
    let log = std::fs::File::create(dir.join("serve.log")).expect("log file");
    let mut child = Command::new(hkms_bin())
        .args(["serve", "--config"])
        .arg(config)
        .envs(token.envs())
        .env("HKMS_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn hkms serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("hkms: listening on ") {
                let _ = tx.send(addr.to_string());
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(addr) => Ok((child, addr.parse().expect("address"))),
        Err(_) => {
            let _ = child.kill();
            let status = child.wait().expect("wait");
            let stderr = std::fs::read(dir.join("serve.log")).unwrap_or_default();
            Err(Output {
                status,
                stdout: Vec::new(),
                stderr,
            })
        }
    }
}

fn spawn_server(token: &Token, config: &Path, dir: &Path) -> (Child, SocketAddr) {
    try_spawn_server(token, config, dir).unwrap_or_else(|out| {
        panic!(
            "hkms serve did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Text of a process's stdout.
/// The audit key's SHA-256 that `hkms audit export` printed (as the node publishes it through
/// GetPublicKey), to pin `hkms audit verify` to.
pub fn exported_key_sha256(export: &Output) -> String {
    let said = stdout(export);
    said.split("SHA-256 ")
        .nth(1)
        .and_then(|rest| rest.get(..64))
        .unwrap_or_else(|| panic!("export prints the key's SHA-256: {said}"))
        .to_string()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Text of a process's stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The first key id ("k-" + 32 hex) in a text.
pub fn key_id_in(text: &str) -> Option<String> {
    text.match_indices("k-").find_map(|(i, _)| {
        let id = text.get(i..i + 34)?;
        id[2..]
            .chars()
            .all(|c| c.is_ascii_hexdigit())
            .then(|| id.to_string())
    })
}

/// The KCV of an AES key computed in software (RustCrypto), independently of hkms: the first
/// 3 bytes of AES-CMAC over 16 zero bytes, uppercase hex.
pub fn aes_kcv(key: &[u8]) -> String {
    use cmac::{Cmac, Mac};
    let mut mac = <Cmac<aes::Aes128> as cipher::KeyInit>::new_from_slice(key).expect("cmac key");
    mac.update(&[0u8; 16]);
    hex::encode_upper(&mac.finalize().into_bytes()[..3])
}

/// Starts a national node whose config gets `extra` appended (e.g. a `[ceremonies]` section).
pub fn start_with_extra_config(extra: &str) -> TestNode {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = make_test_token(&dir.path().join("token"), "hkms-test");
    let config = dir.path().join("node.toml");
    let text = node_config("ministry", "national", "000000", &token) + extra;
    std::fs::write(&config, text).expect("write config");
    TestNode::start_in(dir, token, config)
}

/// Where a planted key goes.
pub struct PlantSpot<'a> {
    /// The initialised PKCS#11 module of this test process.
    pub pkcs11: &'a cryptoki::context::Pkcs11,
    /// The token's label.
    pub token: &'a str,
    /// The node's registry.
    pub store: &'a hkms::store::SqliteStore,
    /// The key's region (its tier follows).
    pub region: &'a str,
}

/// Creates a known key on a token with hkms's own template (so it follows docs/design.md §3) and
/// registers it, as a key carried over from an older system would be. The test process must
/// point its module at the token first ([`init_pkcs11`]).
pub fn plant(
    at: &PlantSpot<'_>,
    key_type: &str,
    algorithm: hkms::hierarchy::Algorithm,
    value: &[u8],
    kcv: hkms::hierarchy::Kcv,
) -> hkms::hierarchy::KeyId {
    use cryptoki::object::Attribute;
    use hkms::hierarchy::{KeyId, KeyState, KeyTypeName, Region, Usage};
    use hkms::hsm::{Lifetime, SecretKeySpec};
    use hkms::store::KeyRegistry;
    let slot = slot_of(at.pkcs11, at.token);
    let session = at.pkcs11.open_rw_session(slot).expect("session");
    let _ = session.login(
        cryptoki::session::UserType::User,
        Some(&secrecy::SecretString::from(USER_PIN)),
    );
    let id = KeyId::new_random();
    let mut template = hkms::hsm::templates::secret_key_template(&SecretKeySpec {
        algorithm,
        usage: Usage::Derive,
        exportable: false,
        label: id.ck_label(),
        id: id.ck_id(),
        lifetime: Lifetime::Token,
    });
    template.retain(|a| !matches!(a, Attribute::ValueLen(_)));
    template.push(Attribute::Value(value.to_vec()));
    session.create_object(&template).expect("create known key");
    let region = Region::parse(at.region).expect("region");
    let now = hkms::store::now_rfc3339();
    at.store
        .insert_key(&hkms::hierarchy::KeyRecord {
            ck_label: id.ck_label(),
            id: id.clone(),
            key_type: KeyTypeName::parse(key_type).expect("type"),
            algorithm,
            tier: region.tier(),
            region,
            parent_id: None,
            factor: None,
            kcv,
            version: 1,
            state: KeyState::Active,
            created_at: now.clone(),
            updated_at: now,
        })
        .expect("register known key");
    id
}

/// Opens token `label` of `token`'s folder as hkms's HSM layer does (its user PIN file, two
/// sessions, a 5 s session wait), for tests that drive the HSM layer directly.
pub fn open_token(token: &Token, label: &str) -> hkms::hsm::Pkcs11Token {
    hkms::hsm::Pkcs11Token::open(&hkms::hsm::HsmConfig {
        module: token.module.clone(),
        locator: hkms::hsm::TokenLocator::by_label(label),
        pin: hkms::hsm::PinSource::File(token.pin_file.clone()),
        sessions: 2,
        session_wait: Duration::from_secs(5),
    })
    .expect("open token")
}

/// Loads and initialises the PKCS#11 module in this test process for the token folder of
/// `token`. Only for test binaries that hold a single test (the token's environment is
/// process-wide, and a module reads it once, when first initialised).
pub fn init_pkcs11(token: &Token) -> cryptoki::context::Pkcs11 {
    for (name, value) in token.envs() {
        // SAFETY: called by the only test of its binary, before any other thread reads the env.
        unsafe { std::env::set_var(name, value) };
    }
    let pkcs11 = cryptoki::context::Pkcs11::new(&token.module).expect("module");
    pkcs11
        .initialize(cryptoki::context::CInitializeArgs::new(
            cryptoki::context::CInitializeFlags::OS_LOCKING_OK,
        ))
        .expect("init");
    pkcs11
}

/// The factor data block D || ~D of a region code, computed here without hkms (docs/design.md §3).
pub fn data_block(region: &str) -> [u8; 16] {
    let digits: Vec<u8> = region.bytes().map(|b| b - b'0').collect();
    let mut d = [0u8; 8];
    for i in 0..3 {
        d[5 + i] = (digits[2 * i] << 4) | digits[2 * i + 1];
    }
    factor_block(d)
}

/// D || ~D for an 8-byte factor.
pub fn factor_block(d: [u8; 8]) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&d);
    for i in 0..8 {
        out[8 + i] = !d[i];
    }
    out
}

/// AES-ECB of one block in software.
pub fn aes_ecb(key: &[u8], block: [u8; 16]) -> [u8; 16] {
    use cipher::{BlockCipherEncrypt, KeyInit};
    let cipher = aes::Aes128::new_from_slice(key).expect("aes key");
    let mut b = cipher::Array::from(block);
    cipher.encrypt_block(&mut b);
    b.into()
}

/// The AES-family child of `parent` for a region, in software.
pub fn aes_child(parent: &[u8], region: &str) -> Vec<u8> {
    aes_ecb(parent, data_block(region)).to_vec()
}

/// Plants a known AES-128 key, its KCV computed in software.
pub fn plant_aes(at: &PlantSpot<'_>, key_type: &str, value: &[u8]) -> hkms::hierarchy::KeyId {
    let kcv = hkms::hierarchy::Kcv::from_hex(&aes_kcv(value), hkms::hierarchy::KcvMethod::AesCmac)
        .expect("kcv");
    plant(at, key_type, hkms::hierarchy::Algorithm::Aes128, value, kcv)
}

/// Plants known `pin-unblock` and `pin-reload` masters of city `region` on `token` and in the
/// registry of the node folder `dir`, as a city node that imported them holds them.
pub fn plant_card_masters(
    pkcs11: &cryptoki::context::Pkcs11,
    token: &Token,
    dir: &Path,
    region: &str,
    unblock: &[u8],
    reload: &[u8],
) {
    let store =
        hkms::store::SqliteStore::open(&dir.join("data/registry.sqlite")).expect("registry");
    let at = PlantSpot {
        pkcs11,
        token: &token.label,
        store: &store,
        region,
    };
    plant_aes(&at, "pin-unblock", unblock);
    plant_aes(&at, "pin-reload", reload);
}

/// Waits (at most 5 s) until the node's policy in force has SHA-256 `want`: a SIGHUP reload
/// is done between requests. Whether it came.
pub async fn policy_in_force(
    client: &mut hkms::proto::policy_service_client::PolicyServiceClient<Channel>,
    want: &str,
) -> bool {
    for _ in 0..100 {
        let info = client
            .get_policy(hkms::proto::GetPolicyRequest {})
            .await
            .expect("get policy")
            .into_inner();
        if info.sha256 == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// DeriveSubKey through a client.
pub async fn try_derive(
    c: &mut KeyServiceClient<Channel>,
    parent: &str,
    region: &str,
) -> Result<hkms::proto::Key, tonic::Status> {
    c.derive_sub_key(hkms::proto::DeriveSubKeyRequest {
        parent_id: parent.into(),
        region: region.into(),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner().key.expect("key"))
}

/// DeriveSubKey as `who`, which must succeed.
pub async fn derive_as(node: &TestNode, who: &str, parent: &str, region: &str) -> hkms::proto::Key {
    try_derive(&mut node.client_as(who).await, parent, region)
        .await
        .unwrap_or_else(|e| panic!("derive {region}: {e}"))
}

/// DeriveSubKey as the node's officer, which must succeed.
pub async fn derive(node: &TestNode, parent: &str, region: &str) -> hkms::proto::Key {
    derive_as(node, &node.officer.clone(), parent, region).await
}

/// Every key `request` lists (its filters), page after page, the most a page holds each time.
pub async fn all_keys(
    client: &mut KeyServiceClient<Channel>,
    request: hkms::proto::ListKeysRequest,
) -> Result<Vec<hkms::proto::Key>, tonic::Status> {
    let mut keys = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_keys(hkms::proto::ListKeysRequest {
                page_size: 1000,
                page_token,
                ..request.clone()
            })
            .await?
            .into_inner();
        keys.extend(page.keys);
        if page.next_page_token.is_empty() {
            return Ok(keys);
        }
        page_token = page.next_page_token;
    }
}

/// Every transport key the node lists to `channel`'s caller, page after page.
pub async fn all_transport_keys(channel: Channel) -> Vec<hkms::proto::TransportKeyInfo> {
    let mut c = hkms::proto::transport_service_client::TransportServiceClient::new(channel);
    let mut cards = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = c
            .list_transport_keys(hkms::proto::ListTransportKeysRequest {
                page_size: 1000,
                page_token,
            })
            .await
            .expect("list transport keys")
            .into_inner();
        cards.extend(page.transport_keys);
        if page.next_page_token.is_empty() {
            return cards;
        }
        page_token = page.next_page_token;
    }
}

/// How many keys the node's officer sees.
pub async fn key_count(node: &TestNode) -> usize {
    all_keys(
        &mut node.client().await,
        hkms::proto::ListKeysRequest::default(),
    )
    .await
    .expect("list")
    .len()
}

/// A node config text with the token's SO PIN file added (nodes that issue transport cards).
pub fn with_so_pin(text: String, token: &Token) -> String {
    let so = token.pin_file.with_file_name("so.pin");
    text.replace(
        &format!("pin_file = \"{}\"", token.pin_file.display()),
        &format!(
            "pin_file = \"{}\"\nso_pin_file = \"{}\"",
            token.pin_file.display(),
            so.display()
        ),
    )
}

/// Starts a node of `tier`/`region` on an existing token in a fresh folder; with `so`, it
/// may issue transport key cards.
pub fn start_on(token: &Token, tier: &str, region: &str, so: bool) -> TestNode {
    start_on_with(token, tier, region, so, None)
}

/// [`start_on`] with the default policy's card limits out of a load test's way
/// ([`LOAD_CARD_LIMITS`]).
pub fn start_on_for_load(token: &Token, tier: &str, region: &str, so: bool) -> TestNode {
    start_on_with(token, tier, region, so, Some(LOAD_CARD_LIMITS))
}

fn start_on_with(
    token: &Token,
    tier: &str,
    region: &str,
    so: bool,
    card_limits: Option<&str>,
) -> TestNode {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut text = node_config(region, tier, region, token);
    if let Some(limits) = card_limits {
        text = with_policy(text, &policy_with_card_limits(dir.path(), limits));
    }
    if so {
        text = with_so_pin(text, token);
    }
    let config = dir.path().join("node.toml");
    std::fs::write(&config, text).expect("config");
    TestNode::start_in(dir, token.clone(), config)
}

/// Exports the node's log as `auditor` into `out` with the CLI, requires `hkms audit verify`
/// to pass on it, and returns its records.
pub fn verified_records(node: &TestNode, auditor: &str, out: &Path) -> Vec<serde_json::Value> {
    let o = node.cli_as(
        auditor,
        &["audit", "export", "--out", &out.display().to_string()],
    );
    assert!(o.status.success(), "audit export: {}", stderr(&o));
    let v = Command::new(hkms_bin())
        .args(["audit", "verify", &out.display().to_string()])
        .args(["--expect-key-sha256", &exported_key_sha256(&o)])
        .output()
        .expect("run hkms audit verify");
    assert!(
        v.status.success(),
        "the ceremony log does not verify: {}{}",
        stdout(&v),
        stderr(&v)
    );
    chain_by_sha2(out);
    std::fs::read_to_string(out.join("records.jsonl"))
        .expect("records.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("record"))
        .collect()
}

/// Recomputes every record hash of an exported bundle with the `sha2` crate, following the
/// words of docs/audit-format.md §2 rather than hkms's `line_hash`: a record's hash is the
/// SHA-256 of its line's bytes without the newline, as 64 lowercase hex digits; record 1's
/// `prev` is 64 zeros and every other record's `prev` is the hash of the line before it; every
/// checkpoint's `head` is the hash of its record. Returns the hashes in line order.
pub fn chain_by_sha2(bundle: &Path) -> Vec<String> {
    use sha2::{Digest, Sha256};
    let text = std::fs::read_to_string(bundle.join("records.jsonl")).expect("records.jsonl");
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "records.jsonl does not end with a newline"
    );
    let mut hashes: Vec<String> = Vec::new();
    let mut first_seq = None;
    for (i, line) in text.split_terminator('\n').enumerate() {
        let r: serde_json::Value = serde_json::from_str(line).expect("record");
        let seq = r["seq"].as_u64().expect("seq");
        let first = *first_seq.get_or_insert(seq);
        assert_eq!(seq, first + i as u64, "line {} holds record {seq}", i + 1);
        let prev = r["prev"].as_str().expect("prev");
        match hashes.last() {
            Some(h) => assert_eq!(
                prev, h,
                "record {seq}: prev is not the hash of the line before"
            ),
            None if seq == 1 => assert_eq!(prev, "0".repeat(64), "record 1: prev is not GENESIS"),
            // A partial export: the first prev points outside the bundle.
            None => {}
        }
        hashes.push(hex::encode(Sha256::digest(line.as_bytes())));
    }
    let checkpoints =
        std::fs::read_to_string(bundle.join("checkpoints.jsonl")).expect("checkpoints.jsonl");
    for line in checkpoints.lines() {
        let c: serde_json::Value = serde_json::from_str(line).expect("checkpoint");
        let seq = c["seq"].as_u64().expect("seq");
        if let Some(h) = first_seq
            .and_then(|f| seq.checked_sub(f))
            .and_then(|i| hashes.get(i as usize))
        {
            assert_eq!(
                c["head"],
                h.as_str(),
                "checkpoint {seq}: head is not its record's hash"
            );
        }
    }
    hashes
}

/// The slot of the token labelled `label`, as this process's PKCS#11 module sees it.
pub fn slot_of(pkcs11: &cryptoki::context::Pkcs11, label: &str) -> cryptoki::slot::Slot {
    pkcs11
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|s| {
            pkcs11
                .get_token_info(*s)
                .map(|i| i.label().trim_end() == label)
                .unwrap_or(false)
        })
        .unwrap_or_else(|| panic!("no token labelled {label}"))
}

/// Labels of the secret keys on a token, sorted, one per object (an empty one for an object
/// without a label), seen through this process's PKCS#11 module (logged in as the user, so
/// private objects count too).
pub fn token_secret_labels(pkcs11: &cryptoki::context::Pkcs11, label: &str) -> Vec<String> {
    use cryptoki::object::{Attribute, AttributeType, ObjectClass};
    let slot = slot_of(pkcs11, label);
    let session = pkcs11.open_ro_session(slot).expect("session");
    let _ = session.login(
        cryptoki::session::UserType::User,
        Some(&secrecy::SecretString::from(USER_PIN)),
    );
    let mut labels = Vec::new();
    for o in session
        .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY)])
        .expect("find")
    {
        for a in session
            .get_attributes(o, &[AttributeType::Label])
            .expect("label")
        {
            if let Attribute::Label(b) = a {
                labels.push(String::from_utf8_lossy(&b).into_owned());
            }
        }
    }
    let _ = session.logout();
    labels.sort();
    labels
}

/// The token labels the node's registry accounts for, read through the API as `reader` (who
/// must read every key): live key rows, plus each transport card's key and package MAC key,
/// plus the node's own ID MAC key (made at start, with no row).
pub async fn registered_labels(
    node: &TestNode,
    reader: &str,
) -> std::collections::BTreeSet<String> {
    let channel = node.channel_as(reader).await;
    let keys = all_keys(
        &mut KeyServiceClient::new(channel.clone()),
        hkms::proto::ListKeysRequest::default(),
    )
    .await
    .expect("list keys");
    let cards = all_transport_keys(channel).await;
    keys.iter()
        .filter(|k| k.state() != hkms::proto::KeyState::Destroyed)
        .map(|k| format!("hkms/{}", k.id))
        .chain(cards.iter().flat_map(|c| {
            [
                hkms::hsm::transport::transport_label(&c.card_id),
                hkms::hsm::transport::package_mac_label(&c.card_id),
            ]
        }))
        .chain([hkms::hsm::ID_MAC_LABEL.to_string()])
        .collect()
}

/// `hkms keys orphans` on the node: the labels it reports as orphans, sorted (an empty one for
/// each object without a label), how many rows it reports missing, and its output.
pub fn orphan_report(node: &TestNode) -> (Vec<String>, usize, String) {
    let o = node.cli(&["keys", "orphans"]);
    let text = stdout(&o);
    let mut orphans: Vec<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("ORPHAN  "))
        .map(|l| {
            if l.starts_with("(no label)") {
                String::new()
            } else {
                l.split_whitespace().next().unwrap_or_default().to_string()
            }
        })
        .collect();
    orphans.sort();
    let missing = text.lines().filter(|l| l.starts_with("MISSING ")).count();
    (orphans, missing, text + &stderr(&o))
}

/// Asks every seeded test (crash schedules, soak clients, property tests) for a new random
/// seed instead of its fixed one: `HKMS_RANDOM_SEEDS=1 cargo test`.
pub const RANDOM_SEEDS: &str = "HKMS_RANDOM_SEEDS";

/// The seed of a test: the number in `env` when it holds one (to repeat a run); a new one from
/// the clock when [`RANDOM_SEEDS`] is set; otherwise `fixed`, so that a normal run does the same
/// every time. The seed is printed either way, so that a failing run can be repeated.
pub fn test_seed(env: &str, fixed: u64) -> u64 {
    let seed = match std::env::var(env).ok().and_then(|s| s.parse().ok()) {
        Some(seed) => seed,
        None if std::env::var_os(RANDOM_SEEDS).is_some_and(|v| !v.is_empty() && v != "0") => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        }
        None => fixed,
    };
    eprintln!("seed: {env}={seed}");
    seed
}

/// A tiny seeded xorshift64* generator for random but reproducible test schedules.
pub struct XorShift(u64);

impl XorShift {
    /// Seeded by [`test_seed`]: `fixed` in a normal run, `env` to repeat a run, random when
    /// [`RANDOM_SEEDS`] asks for it.
    pub fn from_env(env: &str, fixed: u64) -> XorShift {
        XorShift(test_seed(env, fixed).max(1))
    }

    /// Seeded with `seed` (for one client of a seeded schedule).
    pub fn seeded(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// The node's metrics text (`/metrics` on the loopback port it logged at start; a node whose
/// config has `[metrics] listen = "127.0.0.1:0"`), or "" when it serves none.
pub fn scrape(node: &TestNode) -> String {
    use std::io::{Read, Write};
    let log = node.log();
    let Some(addr) = log
        .find("metrics on http://")
        .map(|i| &log[i + "metrics on http://".len()..])
        .and_then(|rest| rest.split('/').next())
    else {
        return String::new();
    };
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

/// A read-write session on the token labelled `label`, logged in as the user with the test
/// PIN: what an attacker holding the node's PIN file gets.
pub fn user_session(pkcs11: &cryptoki::context::Pkcs11, label: &str) -> cryptoki::session::Session {
    let session = pkcs11
        .open_rw_session(slot_of(pkcs11, label))
        .expect("session");
    session
        .login(
            cryptoki::session::UserType::User,
            Some(&secrecy::SecretString::from(USER_PIN)),
        )
        .expect("login");
    session
}

/// Each attack of a `hkms token probe --json` report with its verdict.
pub fn probe_verdicts(report: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    report["attacks"]
        .as_array()
        .expect("attacks")
        .iter()
        .map(|a| {
            (
                a["attack"].as_str().expect("name").to_string(),
                a["verdict"].as_str().expect("verdict").to_string(),
            )
        })
        .collect()
}
