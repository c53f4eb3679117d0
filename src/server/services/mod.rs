//! The gRPC services: each translates between its proto messages and the node's use cases,
//! through the request pipeline, and does nothing else. A field comes in as the caller sent
//! it: the service records it (`Request::param`) and reads it into the typed value the use
//! case takes (`node::input`), so a malformed one is refused with a record that shows it.
//!
//! A reply is made only by the pipeline, once the request's record is durable: building one
//! here (`tonic::Response::new`) is refused by clippy, and this module forbids allowing it.

#![forbid(clippy::disallowed_methods)]

pub mod audit;
pub mod card;
pub mod ceremony;
pub mod convert;
pub mod keys;
pub mod paging;
pub mod policy;
pub mod times;
pub mod transport;
pub mod witness;
