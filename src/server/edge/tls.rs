//! The TLS side of the server: TLS 1.3 only, client certificates mandatory and verified against
//! the programme CA configured on the node, and against its revocation lists. Handshakes run
//! beside the accept loop so that a slow or hostile client cannot hold up others; refused
//! handshakes are logged with their reason. SIGHUP reads the files again ([`Tls`]).

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use crate::config::TlsFiles;
use crate::policy::RevokedCerts;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("TLS: {0}")]
pub struct TlsError(pub String);

/// Every `item` (certificate, revocation list) in the PEM file `path`, the `what` of the node.
fn read_all<T: PemObject>(path: &Path, what: &str, item: &str) -> Result<Vec<T>, TlsError> {
    let all = T::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError(format!("cannot read the {what} {}: {e}", path.display())))?;
    if all.is_empty() {
        return Err(TlsError(format!(
            "the {what} {} holds no {item}",
            path.display()
        )));
    }
    Ok(all)
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    read_all(path, what, "certificate")
}

/// What the node's TLS files say: the rustls configuration, and the client certificates that
/// its revocation lists name (for the checks on every request).
pub struct Loaded {
    /// For the handshakes.
    pub config: Arc<ServerConfig>,
    /// For the requests (see [`crate::node::Node::set_revoked`]).
    pub revoked: RevokedCerts,
}

/// Reads the node's TLS files.
pub fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = read_certs(&files.cert, "server certificate")?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
        TlsError(format!(
            "cannot read the server key {}: {e}",
            files.key.display()
        ))
    })?;
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&files.client_ca, "client CA certificate")? {
        roots
            .add(ca)
            .map_err(|e| TlsError(format!("the client CA certificate is not usable: {e}")))?;
    }
    let mut verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider));
    let mut revoked = RevokedCerts::default();
    if let Some(path) = &files.client_crl {
        let crls: Vec<CertificateRevocationListDer<'static>> =
            read_all(path, "client CRL", "revocation list")?;
        revoked = RevokedCerts::from_crls(crls.iter().map(|c| c.as_ref()))
            .map_err(|e| TlsError(format!("the client CRL {}: {e}", path.display())))?;
        verifier = verifier.with_crls(crls);
    }
    // A certificate that is presented must verify (and not be revoked) for the handshake to
    // succeed. One that is missing lets the handshake through, so that the caller is told in
    // gRPC terms (UNAUTHENTICATED, `identity::require_client_certificate`) rather than with a
    // broken connection that looks like a retryable UNAVAILABLE.
    let verifier = verifier
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError(format!("cannot build the client verifier: {e}")))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsError(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|e| TlsError(format!("the server certificate and key do not fit: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Loaded {
        config: Arc::new(config),
        revoked,
    })
}

/// The TLS settings in force. Each handshake takes the configuration in force when it starts,
/// so a reload (new certificate, new revocation list) applies to every later connection.
pub struct Tls {
    files: TlsFiles,
    config: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Serves with `config`, read from `files`.
    pub fn new(files: TlsFiles, config: Arc<ServerConfig>) -> Tls {
        Tls {
            files,
            config: RwLock::new(config),
        }
    }

    /// The files to read again on reload.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The configuration for the next handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        // A panic while swapping cannot leave a half-written Arc.
        Arc::clone(&self.config.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Puts a configuration in force for the handshakes from now on.
    pub fn put_in_force(&self, config: Arc<ServerConfig>) {
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
    }
}

/// Accepts TCP connections and yields the ones whose TLS handshake succeeded.
pub fn incoming(
    listener: TcpListener,
    tls: Arc<Tls>,
) -> ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if tx.is_closed() {
                break;
            }
            // gRPC answers often leave in two writes (headers, then a body over h2's copy
            // threshold); with Nagle the second waits for the client's delayed ACK (~40 ms).
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, %peer, "cannot set TCP_NODELAY");
            }
            let acceptor = TlsAcceptor::from(tls.config());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::warn!(%peer, error = %e, "TLS handshake refused"),
                    Err(_) => tracing::warn!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
