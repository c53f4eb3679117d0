//! Moving sub-keys between nodes: transport key cards and key packages.

pub mod package;

pub use package::{Package, PackageError, PackageHeader};
