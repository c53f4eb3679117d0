//! How the CLI reaches a node: gRPC over mutual TLS with the caller's certificate. In a dev
//! checkout (`scripts/dev-up`), the dev officer's certificate under `.hkms/pki/` is the default.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use zeroize::Zeroizing;

use crate::proto::request_id::Mutating;
use crate::server::services::convert::{WireEnum, from_word};

/// Tries of a call that changes something: the first and two retries, all with one request
/// id, so that the node acts at most once.
const TRIES: u32 = 3;

/// The wait before the first retry; each later one waits as much more.
const RETRY_PAUSE: Duration = Duration::from_millis(300);

/// Where the dev PKI of `scripts/dev-up` lives, relative to the working directory.
pub const DEV_PKI: &str = ".hkms/pki";

/// Where the node is, who the caller is, and how to print.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The node's address (https://HOST:PORT or HOST:PORT).
    #[arg(long, env = "HKMS_SERVER", default_value = "https://127.0.0.1:50051")]
    server: String,
    /// The caller's certificate (PEM, with its hkms:// identity). Default: the dev officer's.
    #[arg(long, env = "HKMS_CERT")]
    cert: Option<PathBuf>,
    /// The caller's private key (PEM).
    #[arg(long, env = "HKMS_KEY")]
    key: Option<PathBuf>,
    /// The CA that issued the node's certificate (PEM).
    #[arg(long, env = "HKMS_CA")]
    ca: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl ClientArgs {
    /// The caller's certificate, key and CA, each as given or else from the dev PKI of
    /// `scripts/dev-up`. The certificate and its key come together or not at all: a
    /// certificate paired with the dev officer's key would fail later with an unreadable TLS
    /// error.
    fn credentials(&self) -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
        match (&self.cert, &self.key) {
            (Some(_), None) => anyhow::bail!(
                "--cert given without --key: pass the certificate's private key with --key (or \
                 HKMS_KEY), or neither to act as the dev officer"
            ),
            (None, Some(_)) => anyhow::bail!(
                "--key given without --cert: pass the key's certificate with --cert (or \
                 HKMS_CERT), or neither to act as the dev officer"
            ),
            _ => {}
        }
        // The dev files are looked for only in the working directory (a dev checkout's
        // root): anywhere else a missing flag is an error, never a file found by chance.
        let dev = Path::new(DEV_PKI);
        let pick =
            |given: &Option<PathBuf>, dev_file: &str, flag: &str| -> anyhow::Result<PathBuf> {
                match given {
                    Some(p) => Ok(p.clone()),
                    None if dev.join(dev_file).is_file() => Ok(dev.join(dev_file)),
                    None => {
                        let here = std::env::current_dir()
                            .map(|d| d.join(DEV_PKI).display().to_string())
                            .unwrap_or_else(|_| DEV_PKI.to_string());
                        anyhow::bail!(
                            "no {flag} given, and no dev PKI file {here}/{dev_file} to fall back \
                             on (only a dev checkout's root has one): pass --cert, --key and \
                             --ca (or HKMS_CERT, HKMS_KEY, HKMS_CA)"
                        )
                    }
                }
            };
        Ok((
            pick(&self.cert, "dev-officer.pem", "--cert")?,
            pick(&self.key, "dev-officer.key", "--key")?,
            pick(&self.ca, "ca.pem", "--ca")?,
        ))
    }

    fn url(&self) -> anyhow::Result<String> {
        if self.server.starts_with("http://") {
            anyhow::bail!("hkms serves only over TLS: use https:// in --server");
        }
        Ok(if self.server.starts_with("https://") {
            self.server.clone()
        } else {
            format!("https://{}", self.server)
        })
    }

    /// A connected channel.
    pub async fn channel(&self) -> anyhow::Result<Channel> {
        let (endpoint, url) = self.endpoint()?;
        connect(&endpoint, &url).await
    }

    /// Sends a request that changes something, with a fresh request id (a UUID). A try that
    /// could not reach the node, or that ended UNAVAILABLE or DEADLINE_EXCEEDED, is sent
    /// again with the same id, up to [`TRIES`] tries: the node answers a retry of a request
    /// that acted with that request's answer (docs/api.md), so a retry never acts twice.
    pub async fn send_once<Req, Resp, F, Fut>(
        &self,
        mut request: Req,
        call: F,
    ) -> anyhow::Result<Resp>
    where
        Req: Mutating,
        F: FnMut(Channel, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        request.set_request_id(uuid::Uuid::new_v4().to_string());
        let (endpoint, url) = self.endpoint()?;
        retrying(
            request,
            TRIES,
            RETRY_PAUSE,
            || connect(&endpoint, &url),
            call,
        )
        .await
    }

    /// The node's endpoint with the caller's TLS settings, and its URL.
    fn endpoint(&self) -> anyhow::Result<(Endpoint, String)> {
        let (cert, key, ca) = self.credentials()?;
        let read =
            |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        let cert_pem = read(&cert)?;
        let key_pem = Zeroizing::new(read(&key)?);
        let ca_pem = read(&ca)?;
        check_tls_files((&cert, &cert_pem), (&key, &key_pem), (&ca, &ca_pem))?;
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca_pem))
            .identity(Identity::from_pem(cert_pem, key_pem.as_slice()));
        let url = self.url()?;
        let endpoint = Endpoint::from_shared(url.clone())
            .with_context(|| format!("`{url}` is not a valid address"))?
            .tls_config(tls)
            .map_err(|e| anyhow::anyhow!("TLS settings refused: {e}"))?;
        Ok((endpoint, url))
    }
}

async fn connect(endpoint: &Endpoint, url: &str) -> anyhow::Result<Channel> {
    endpoint
        .connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach hkms at {url}: {e} (is `hkms serve` running?)"))
}

/// Whether a call that ended with `code` may have been cut short before the node answered,
/// and is worth sending again with the same request id.
fn worth_retrying(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
    )
}

/// Sends `request` over a channel from `connect` with `call`, up to `tries` times while the
/// connection fails or the answer is worth retrying, the same request (and request id) each
/// time, waiting `pause`, then twice that, ... between tries.
/// The copy of a request kept for its retries, whose secrets are wiped when it is dropped.
struct Kept<Req: Mutating>(Req);

impl<Req: Mutating> Drop for Kept<Req> {
    fn drop(&mut self) {
        self.0.wipe_secrets();
    }
}

async fn retrying<Req, Resp, Ch, C, CF, F, Fut>(
    request: Req,
    tries: u32,
    pause: Duration,
    mut connect: C,
    mut call: F,
) -> anyhow::Result<Resp>
where
    Req: Mutating,
    C: FnMut() -> CF,
    CF: Future<Output = anyhow::Result<Ch>>,
    F: FnMut(Ch, Req) -> Fut,
    Fut: Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
{
    let request = Kept(request);
    let mut attempt = 1;
    loop {
        let why = match connect().await {
            Ok(channel) => match call(channel, request.0.clone()).await {
                Ok(answer) => return Ok(answer.into_inner()),
                Err(s) if worth_retrying(s.code()) && attempt < tries => {
                    format!("{}: {}", canonical_code(s.code()), s.message())
                }
                Err(s) => return Err(status(s)),
            },
            Err(e) if attempt < tries => e.to_string(),
            Err(e) => return Err(e),
        };
        attempt += 1;
        eprintln!("{why}; sending it again with the same request id (try {attempt} of {tries})");
        tokio::time::sleep(pause * (attempt - 1)).await;
    }
}

/// Checks the caller's TLS files before the connection uses them, so that a wrong file is
/// named (the TLS library's own error says only "transport error"): each holds what it should,
/// and the key is the certificate's.
fn check_tls_files(
    (cert, cert_pem): (&Path, &[u8]),
    (key, key_pem): (&Path, &[u8]),
    (ca, ca_pem): (&Path, &[u8]),
) -> anyhow::Result<()> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = |path: &Path, pem: &[u8], what: &str| -> anyhow::Result<Vec<_>> {
        let all = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("{} is not a PEM {what}: {e}", path.display()))?;
        if all.is_empty() {
            anyhow::bail!("{} holds no PEM {what}", path.display());
        }
        Ok(all)
    };
    let chain = certs(cert, cert_pem, "certificate")?;
    certs(ca, ca_pem, "CA certificate")?;
    let private = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| anyhow::anyhow!("{} is not a PEM private key: {e}", key.display()))?;
    let provider = rustls::crypto::ring::default_provider();
    rustls::sign::CertifiedKey::from_der(chain, private, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => anyhow::anyhow!(
            "the key {} is not the key of the certificate {}",
            key.display(),
            cert.display()
        ),
        e => anyhow::anyhow!("{} with {}: {e}", cert.display(), key.display()),
    })?;
    Ok(())
}

/// The enum field for a word given to `arg` (`--tier municipal`): the node's words, and the
/// empty word for none (UNSPECIFIED), as the string fields took them before they were enums.
/// Another word is refused here, before anything is sent.
pub fn enum_arg<P: WireEnum>(arg: &str, word: &str) -> anyhow::Result<i32> {
    from_word::<P>(word)
        .map(Into::into)
        .map_err(|e| anyhow::anyhow!("{arg}: {e}"))
}

/// A gRPC status as a CLI error, with the code's canonical name (`FAILED_PRECONDITION`), as
/// the records, the metrics and the API's documentation write it.
pub fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", canonical_code(s.code()), s.message())
}

/// The canonical name of a gRPC status code: hkms's own answers by the node's one status
/// table ([`ErrorClass`](crate::node::ErrorClass)), the others (the gRPC library's: a
/// deadline, a cancelled call, an unknown method) by name here.
pub fn canonical_code(code: tonic::Code) -> &'static str {
    use tonic::Code;
    if let Some(class) = crate::node::ErrorClass::from_grpc_code(code as i32) {
        return class.code_name();
    }
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::DataLoss => "DATA_LOSS",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_tls_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        crate::pki::write_dev_pki(dir.path(), "test").unwrap();
        let ca = crate::pki::DevCa::from_pem(
            &std::fs::read_to_string(dir.path().join("ca.pem")).unwrap(),
            &std::fs::read_to_string(dir.path().join("ca.key")).unwrap(),
        )
        .unwrap();
        let issue = || {
            ca.issue_client(None, crate::pki::Validity::days(1))
                .unwrap()
        };
        let (a, b) = (issue(), issue());
        let ca_pem = ca.cert_pem();
        let (cert, key, ca_file) = (
            Path::new("me.pem"),
            Path::new("me.key"),
            Path::new("ca.pem"),
        );
        let check = |cert_pem: &str, key_pem: &str, ca_pem: &str| {
            check_tls_files(
                (cert, cert_pem.as_bytes()),
                (key, key_pem.as_bytes()),
                (ca_file, ca_pem.as_bytes()),
            )
            .map_err(|e| e.to_string())
        };
        assert_eq!(check(&a.cert_pem, &a.key_pem, ca_pem), Ok(()));
        let err = check("junk", &a.key_pem, ca_pem).unwrap_err();
        assert!(err.contains("me.pem holds no PEM certificate"), "{err}");
        let err = check(&a.cert_pem, &a.key_pem, "").unwrap_err();
        assert!(err.contains("ca.pem holds no PEM CA certificate"), "{err}");
        let err = check(&a.cert_pem, &a.cert_pem, ca_pem).unwrap_err();
        assert!(err.contains("me.key is not a PEM private key"), "{err}");
        let err = check(&a.cert_pem, &b.key_pem, ca_pem).unwrap_err();
        assert!(
            err.contains("the key me.key is not the key of the certificate me.pem"),
            "{err}"
        );
    }

    /// The request ids a scripted call saw, one per try.
    type Seen = std::sync::Arc<std::sync::Mutex<Vec<String>>>;
    /// What a scripted call answers.
    type Answered = std::future::Ready<Result<tonic::Response<u32>, tonic::Status>>;

    /// A call that answers from `script`, one item per try, counting the tries and the ids.
    fn scripted(
        script: Vec<Result<u32, tonic::Code>>,
    ) -> (
        Seen,
        impl FnMut((), crate::proto::GenerateKeyRequest) -> Answered,
    ) {
        let seen = Seen::default();
        let log = std::sync::Arc::clone(&seen);
        let mut script = script.into_iter();
        let call = move |(), r: crate::proto::GenerateKeyRequest| {
            log.lock().unwrap().push(r.request_id.clone());
            #[allow(clippy::disallowed_methods)] // a client's view of an answer
            let answer = match script.next().expect("a scripted answer") {
                Ok(v) => Ok(tonic::Response::new(v)),
                Err(code) => Err(tonic::Status::new(code, "scripted")),
            };
            std::future::ready(answer)
        };
        (seen, call)
    }

    fn request() -> crate::proto::GenerateKeyRequest {
        let mut r = crate::proto::GenerateKeyRequest::default();
        r.set_request_id("id-1".into());
        r
    }

    #[tokio::test]
    async fn an_unavailable_node_is_asked_again_with_the_same_request_id() {
        use tonic::Code;
        let (seen, call) = scripted(vec![
            Err(Code::Unavailable),
            Err(Code::DeadlineExceeded),
            Ok(7),
        ]);
        let connect = || std::future::ready(Ok(()));
        let got = retrying(request(), 3, Duration::ZERO, connect, call).await;
        assert_eq!(got.unwrap(), 7);
        assert_eq!(*seen.lock().unwrap(), ["id-1", "id-1", "id-1"]);
    }

    #[tokio::test]
    async fn retries_are_bounded_and_other_errors_are_not_retried() {
        use tonic::Code;
        let (seen, call) = scripted(vec![Err(Code::Unavailable); 3]);
        let connect = || std::future::ready(Ok(()));
        let err = retrying(request(), 3, Duration::ZERO, connect, call)
            .await
            .unwrap_err();
        assert!(
            err.to_string().starts_with("UNAVAILABLE: scripted"),
            "{err}"
        );
        assert_eq!(seen.lock().unwrap().len(), 3);

        let (seen, call) = scripted(vec![Err(Code::FailedPrecondition), Ok(1)]);
        let connect = || std::future::ready(Ok(()));
        let err = retrying(request(), 3, Duration::ZERO, connect, call)
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("FAILED_PRECONDITION"), "{err}");
        assert_eq!(
            seen.lock().unwrap().len(),
            1,
            "an answer of the node stands"
        );
    }

    #[tokio::test]
    async fn a_connection_that_fails_is_tried_again() {
        let (seen, call) = scripted(vec![Ok(5)]);
        let mut refusals = 2;
        let connect = move || {
            std::future::ready(if refusals > 0 {
                refusals -= 1;
                Err(anyhow::anyhow!("cannot reach hkms"))
            } else {
                Ok(())
            })
        };
        let got = retrying(request(), 3, Duration::ZERO, connect, call).await;
        assert_eq!(got.unwrap(), 5);
        assert_eq!(seen.lock().unwrap().len(), 1, "sent once it connected");

        let (seen, call) = scripted(vec![]);
        let connect = || std::future::ready(Err::<(), _>(anyhow::anyhow!("cannot reach hkms")));
        let err = retrying(request(), 3, Duration::ZERO, connect, call)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cannot reach hkms"), "{err}");
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn codes_print_by_their_canonical_names() {
        let e = status(tonic::Status::failed_precondition("needs a ceremony"));
        assert_eq!(e.to_string(), "FAILED_PRECONDITION: needs a ceremony");
        let e = status(tonic::Status::deadline_exceeded("too slow"));
        assert_eq!(e.to_string(), "DEADLINE_EXCEEDED: too slow");
        assert_eq!(canonical_code(tonic::Code::Unimplemented), "UNIMPLEMENTED");
        // The node's own names for the codes it answers with are the same.
        for class in crate::node::ErrorClass::all() {
            let code = tonic::Code::from_i32(class.grpc_code());
            assert_eq!(canonical_code(code), class.code_name());
        }
    }
}
