//! The gRPC services: each translates between its proto messages and the node's use cases,
//! through the request pipeline, and does nothing else.
//!
//! A reply is made only by the pipeline, once the request's record is durable: building one
//! here (`tonic::Response::new`) is refused by clippy, and this module forbids allowing it.

#![forbid(clippy::disallowed_methods)]

pub mod audit;
pub mod card;
pub mod ceremony;
pub mod convert;
pub mod keys;
pub mod policy;
pub mod transport;
