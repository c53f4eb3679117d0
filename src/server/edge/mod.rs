//! Where a request meets the node: TLS and client certificates, the caller's identity, unknown
//! methods, the error details every status carries, the metrics endpoint and gRPC health.
//! Nothing here decides or records.

pub mod details;
pub mod health;
pub mod identity;
pub mod methods;
pub(crate) mod metrics;
pub mod tls;
