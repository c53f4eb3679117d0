//! A throw-away PKI for development and tests: a self-signed CA, client certificates that carry
//! an hkms identity (`hkms://ROLE/TIER/REGION/NAME` as a SAN URI), server certificates for
//! `localhost`, and files laid out for a dev node.
//!
//! This is a dev and test aid, not a production CA: keys are made in software and written to
//! disk as plain PKCS#8 PEM (mode 0600). Production nodes get their certificates from the
//! programme's real PKI.
//!
//! - [`DevCa`]: create or load the CA and issue client and server certificates with it.
//! - [`Validity`]: the validity period of an issued certificate (including an expired one).
//! - [`write_dev_pki`] and [`write_issued`]: the dev PKI on disk.

mod ca;
mod error;
mod files;
mod validity;

use std::fmt;

use zeroize::Zeroizing;

pub use ca::DevCa;
pub use error::PkiError;
pub use files::{DevPkiPaths, write_dev_pki, write_issued};
pub use validity::Validity;

/// A certificate issued by a [`DevCa`] together with its private key, both as PEM.
///
/// The key PEM is a secret: it is wiped from memory when this value is dropped, and `Debug`
/// does not show it.
pub struct IssuedCert {
    /// The certificate, PEM (`-----BEGIN CERTIFICATE-----`).
    pub cert_pem: String,
    /// The certificate's private key, PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`).
    pub key_pem: Zeroizing<String>,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[secret]")
            .finish()
    }
}
