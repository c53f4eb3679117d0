//! Moving sub-keys between nodes: transport key cards and key packages.

mod key;
pub mod package;

pub use key::{TransportKey, TransportRole};
pub use package::{Package, PackageError, PackageHeader, wrapped_len};
