//! The gRPC server: the key service, gRPC health (token and registry) and server reflection
//! (so `grpcurl` works without the .proto files).

pub mod health;
pub mod keys;
pub mod status;

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::wrappers::TcpListenerStream;

use crate::config::NodeConfig;
use crate::node::{Node, NodeError};
use crate::proto;

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
    /// Reflection could not be built from the compiled descriptors.
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(String),
    /// Start-up was interrupted.
    #[error("start-up task failed: {0}")]
    Startup(String),
}

impl From<NodeError> for ServeError {
    fn from(e: NodeError) -> Self {
        ServeError::Node(e)
    }
}

/// Opens the node and serves until `shutdown` completes. Prints `hkms: listening on ADDR` on
/// standard output once the port is bound (port 0 picks a free one; tests read this line).
pub async fn serve(
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let cfg = config.clone();
    let node = tokio::task::spawn_blocking(move || Node::open(&cfg))
        .await
        .map_err(|e| ServeError::Startup(e.to_string()))??;
    let node = Arc::new(node);
    tracing::info!(
        node = node.name(),
        tier = %node.tier(),
        region = %node.region(),
        token = %node.hsm().capabilities().label,
        "node opened"
    );

    let (reporter, health_service) = tonic_health::server::health_reporter();
    health::check_once(&node, &reporter).await;
    let watcher = tokio::spawn(health::watch(
        Arc::clone(&node),
        reporter,
        Duration::from_secs(5),
    ));

    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
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
    tracing::info!(%addr, "listening (plaintext gRPC, loopback only)");
    let mut out = std::io::stdout().lock();
    // The line is how scripts and tests learn the port; failing to print it is not fatal.
    let _ = writeln!(out, "hkms: listening on {addr}").and_then(|_| out.flush());
    drop(out);

    let result = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(proto::key_service_server::KeyServiceServer::new(
            keys::KeyApi::new(Arc::clone(&node)),
        ))
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
        .await;
    watcher.abort();
    tracing::info!("server stopped");
    result.map_err(ServeError::Transport)
}
