//! The gRPC server: its edge (TLS, caller identity, metrics, health), the request pipeline
//! every RPC goes through, and the services that translate between proto messages and the
//! node's use cases. Also gRPC health (token and registry) and server reflection (so
//! `grpcurl` works without the .proto files).

pub mod edge;
pub mod pipeline;
pub mod services;
pub mod witnessing;

pub use edge::tls;

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use crate::config::NodeConfig;
use crate::node::{ExclusiveUse, Node, NodeError};
use crate::proto;

use edge::{health, metrics};
use services::{audit, card, ceremony, keys, policy, transport, witness};

/// The one compression hkms speaks besides none.
const GZIP: tonic::codec::CompressionEncoding = tonic::codec::CompressionEncoding::Gzip;

/// Why the server did not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The node could not be opened (policy, registry, token, PIN).
    #[error("cannot start node: {0}")]
    Node(NodeError),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source} (is another hkms running there?)")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The gRPC transport failed.
    #[error("gRPC server failed: {0}")]
    Transport(tonic::transport::Error),
    /// The TLS files could not be used.
    #[error("cannot start node: {0}")]
    Tls(#[from] tls::TlsError),
    /// Reflection (or the list of served methods) could not be built from the compiled
    /// descriptors.
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(String),
    /// The metrics endpoint could not be set up.
    #[error("cannot serve metrics: {0}")]
    Metrics(String),
    /// Start-up was interrupted.
    #[error("start-up task failed: {0}")]
    Startup(String),
}

impl From<NodeError> for ServeError {
    fn from(e: NodeError) -> Self {
        ServeError::Node(e)
    }
}

/// How long a graceful shutdown waits for clients to close their connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// How often clients' request ids past their window are removed from the registry (a lookup
/// ignores them already; this bounds the table).
const FORGET_REQUEST_IDS_EVERY: Duration = Duration::from_secs(600);

/// Opens the node and serves until `shutdown` completes. Prints `hkms: listening on ADDR` on
/// standard output once the port is bound (port 0 picks a free one; tests read this line).
pub async fn serve(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    // TLS first: a node without its certificate and CA must not even open the token.
    let loaded = tls::load(&config.tls)?;
    let tls = Arc::new(tls::Tls::new(config.tls.clone(), loaded.config));
    // Held until the server returns: no second server, and no `orphans --destroy`, meanwhile.
    let _exclusive = ExclusiveUse::take(&config.data_dir, "serving it")?;
    let cfg = config.clone();
    let node = tokio::task::spawn_blocking(move || Node::open(&cfg))
        .await
        .map_err(|e| ServeError::Startup(e.to_string()))??;
    let node = Arc::new(node);
    node.set_revoked(loaded.revoked);
    tracing::info!(
        node = node.name(),
        tier = %node.core().tier(),
        region = %node.core().region(),
        token = %node.core().token().capabilities().label,
        audit_key = %node.core().signing().fingerprint,
        audit_key_sha256 = %node.core().signing().sha256,
        "node opened"
    );

    let (reporter, health_service) = tonic_health::server::health_reporter();
    health::check_once(&node, &reporter).await;
    let witnessing: Vec<_> = config
        .witnesses
        .iter()
        .map(|w| {
            tokio::spawn(witnessing::send_forever(
                Arc::clone(&node),
                w.clone(),
                reporter.clone(),
            ))
        })
        .collect();
    let watcher = tokio::spawn(health::watch(
        Arc::clone(&node),
        reporter,
        Duration::from_secs(5),
    ));
    let sweeper = tokio::spawn(ceremony::sweep_components(Arc::clone(&node)));

    // Both versions: grpcurl speaks v1, the stock Python and many other clients v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection = reflection()
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    // Every method served, from the descriptors reflection serves: anything else is answered
    // UNIMPLEMENTED with a message that names it.
    let served = edge::methods::Methods::from_descriptor_sets(&[
        proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
        tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
    ])
    .map_err(|e| ServeError::Reflection(e.to_string()))?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    tracing::info!(%addr, "listening (gRPC over TLS 1.3, client certificates required)");
    let metrics = match config.metrics_listen {
        Some(at) => {
            let handle = metrics::install()?;
            let listener = metrics::bind(at).await?;
            let addr = listener
                .local_addr()
                .map_err(|source| ServeError::Bind { addr: at, source })?;
            tracing::info!(%addr, "metrics on http://{addr}/metrics (loopback only)");
            announce(format_args!("metrics on {addr}"));
            Some(tokio::spawn(metrics::serve(
                listener,
                handle,
                Arc::clone(&node),
            )))
        }
        None => None,
    };
    // Listening before the port is announced: a SIGHUP that comes before the reloader first
    // runs waits for it, instead of ending the process (the signal's default action).
    let hangups = listen_for_hangups();
    announce(format_args!("listening on {addr}"));

    let reloader = tokio::spawn(reload_on_sighup(
        Arc::clone(&node),
        Arc::clone(&tls),
        hangups,
    ));
    let sealer = tokio::spawn(seal_periodically(Arc::clone(&node)));
    let forgetter = tokio::spawn(forget_request_ids_periodically(Arc::clone(&node)));
    // Graceful shutdown waits for open connections; a client that never lets go gets
    // SHUTDOWN_GRACE, then the node stops anyway (its requests end in an error, none half-done).
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    };
    let grace = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let server = tonic::transport::Server::builder()
        // A peer that vanished (a window PC switched off) is noticed within 40 s, and one
        // connection cannot open streams without end.
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .max_concurrent_streams(256)
        // Deny by default: no certificate, no service of any kind.
        .layer(tonic::service::InterceptorLayer::new(
            edge::identity::require_client_certificate,
        ))
        // Inside the certificate check: unknown methods, named (tonic's answer is empty).
        .layer(edge::methods::KnownMethodsLayer::new(served))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        // Each service takes gzip-compressed requests (the size limit applies to the
        // decompressed message) and compresses its answers for a client that asks.
        .add_service(
            proto::key_service_server::KeyServiceServer::new(keys::KeyApi::new(Arc::clone(&node)))
                .accept_compressed(GZIP)
                .send_compressed(GZIP),
        )
        .add_service(
            proto::policy_service_server::PolicyServiceServer::new(policy::PolicyApi::new(
                Arc::clone(&node),
            ))
            .accept_compressed(GZIP)
            .send_compressed(GZIP),
        )
        .add_service(
            proto::ceremony_service_server::CeremonyServiceServer::new(ceremony::CeremonyApi::new(
                Arc::clone(&node),
            ))
            .accept_compressed(GZIP)
            .send_compressed(GZIP),
        )
        .add_service(
            proto::audit_service_server::AuditServiceServer::new(audit::AuditApi::new(Arc::clone(
                &node,
            )))
            .accept_compressed(GZIP)
            .send_compressed(GZIP),
        )
        .add_service(
            proto::card_service_server::CardServiceServer::new(card::CardApi::new(Arc::clone(
                &node,
            )))
            .accept_compressed(GZIP)
            .send_compressed(GZIP),
        )
        .add_service(
            proto::transport_service_server::TransportServiceServer::new(
                transport::TransportApi::new(Arc::clone(&node)),
            )
            .accept_compressed(GZIP)
            .send_compressed(GZIP),
        )
        .add_service(
            proto::witness_service_server::WitnessServiceServer::new(witness::WitnessApi::new(
                Arc::clone(&node),
            ))
            .accept_compressed(GZIP)
            .send_compressed(GZIP),
        )
        .serve_with_incoming_shutdown(tls::incoming(listener, tls), signal);
    let result = tokio::select! {
        r = server => r,
        () = grace => {
            tracing::warn!("connections still open after the shutdown grace period; closing them");
            Ok(())
        }
    };
    watcher.abort();
    sweeper.abort();
    for w in &witnessing {
        w.abort();
    }
    reloader.abort();
    sealer.abort();
    forgetter.abort();
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    // The last checkpoint seals everything the node acknowledged.
    let n = Arc::clone(&node);
    match tokio::task::spawn_blocking(move || n.core().checkpoint()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cannot sign the shutdown checkpoint"),
        Err(e) => tracing::error!(error = %e, "shutdown checkpoint did not finish"),
    }
    tracing::info!("server stopped");
    result.map_err(ServeError::Transport)
}

/// Prints `hkms: WHAT` on standard output: how scripts and tests learn the ports. Failing to
/// print it is not fatal.
fn announce(what: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "hkms: {what}").and_then(|_| out.flush());
}

/// SIGHUPs to come, once the server listens for them (`None`: it cannot).
#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
/// No SIGHUP off Unix.
#[cfg(not(unix))]
type Hangups = ();

/// Starts listening for SIGHUP (inside the runtime).
fn listen_for_hangups() -> Hangups {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        signal(SignalKind::hangup())
            .inspect_err(|e| {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; use the ReloadPolicy RPC")
            })
            .ok()
    }
}

/// SIGHUP reloads the policy; a file that does not load, or that weakens the policy in force,
/// leaves the old policy in force.
async fn reload_on_sighup(node: Arc<Node>, tls: Arc<tls::Tls>, hangups: Hangups) {
    #[cfg(unix)]
    {
        let Some(mut hup) = hangups else {
            return;
        };
        while hup.recv().await.is_some() {
            let n = Arc::clone(&node);
            match tokio::task::spawn_blocking(move || n.policies().reload_policy_on_signal()).await
            {
                Ok(Ok(_)) => {}
                // A file refused is the host's to fix, not the server's fault: a warning
                // (the error says what is wrong; the ceremony log has it too).
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "SIGHUP: policy reload refused; the old policy stays in force")
                }
                Err(e) => tracing::error!(error = %e, "SIGHUP: policy reload did not finish"),
            }
            let (n, t) = (Arc::clone(&node), Arc::clone(&tls));
            match tokio::task::spawn_blocking(move || reload_tls(&n, &t)).await {
                Ok(Ok(revoked)) => {
                    tracing::info!(revoked_certificates = revoked, "SIGHUP: TLS files reloaded")
                }
                Ok(Err(e)) => tracing::error!(
                    error = %e,
                    "SIGHUP: TLS reload refused; the certificates and revocation lists in force stay"
                ),
                Err(e) => tracing::error!(error = %e, "SIGHUP: TLS reload did not finish"),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let () = hangups;
        std::future::pending::<()>().await;
    }
}

/// Reads the TLS files again and, once the reload is recorded, puts them in force: new
/// handshakes use them, and requests on open connections are checked against the new
/// revocation lists. Returns how many client certificates those lists revoke.
fn reload_tls(node: &Node, tls: &tls::Tls) -> Result<usize, String> {
    let loaded = tls::load(tls.files());
    let summary = loaded
        .as_ref()
        .map(|l| l.revoked.len())
        .map_err(ToString::to_string);
    if let Err(e) = node.policies().record_tls_reload(summary.clone()) {
        return Err(match summary {
            Ok(_) => format!("the reload could not be recorded: {e}"),
            Err(why) => format!("{why}; and the refusal could not be recorded: {e}"),
        });
    }
    let loaded = loaded.map_err(|e| e.to_string())?;
    let revoked = loaded.revoked.len();
    tls.put_in_force(loaded.config);
    node.set_revoked(loaded.revoked);
    Ok(revoked)
}

/// Removes clients' request ids whose window has passed, now and every
/// [`FORGET_REQUEST_IDS_EVERY`]. Runs until aborted.
async fn forget_request_ids_periodically(node: Arc<Node>) {
    let mut every = tokio::time::interval(FORGET_REQUEST_IDS_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let n = Arc::clone(&node);
        match tokio::task::spawn_blocking(move || n.retries().forget_expired()).await {
            Ok(Ok(0)) | Err(_) => {}
            Ok(Ok(forgotten)) => tracing::debug!(forgotten, "expired request ids forgotten"),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot forget expired request ids"),
        }
    }
}

/// Signs a checkpoint every `checkpoint_interval` when records came in meanwhile.
async fn seal_periodically(node: Arc<Node>) {
    let mut tick = tokio::time::interval(node.core().checkpoint_interval());
    tick.tick().await;
    loop {
        tick.tick().await;
        let n = Arc::clone(&node);
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || n.core().checkpoint()).await {
            tracing::error!(error = %e, "cannot sign a periodic checkpoint");
        }
    }
}
