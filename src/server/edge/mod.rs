//! Where a request meets the node: TLS and client certificates, the caller's identity, the
//! metrics endpoint and gRPC health. Nothing here decides or records.

pub mod health;
pub mod identity;
pub(crate) mod metrics;
pub mod tls;
