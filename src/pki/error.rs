//! What can go wrong while making, loading or writing dev certificates.

use std::path::PathBuf;

use thiserror::Error;

/// An error of the dev PKI.
#[derive(Debug, Error)]
pub enum PkiError {
    /// A key or certificate could not be made.
    #[error("could not make a dev certificate: {0}")]
    Generate(String),
    /// A certificate or key could not be read.
    #[error("could not read a certificate or key: {0}")]
    Parse(String),
    /// A file or directory of the dev PKI could not be read or written.
    #[error("{}: {source} (check the path, its directory and their permissions)", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
}

impl PkiError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> PkiError {
        PkiError::Io {
            path: path.into(),
            source,
        }
    }
}
