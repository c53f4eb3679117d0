//! The caller's identity, read from the client certificate that mTLS verified: exactly one SAN
//! URI `hkms://ROLE/TIER/REGION/NAME` (see [`crate::policy::Identity`]). A certificate without
//! one, or with two, is refused as UNAUTHENTICATED, with a reason a program can act on
//! (`CLIENT_CERTIFICATE_MISSING`, `IDENTITY_INVALID`, `CERTIFICATE_REVOKED`). With it goes the
//! SHA-256 of the certificate's public key, by which the policy's officer roster knows the
//! person.

use tonic::{Request, Status};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::details::refusal;
use crate::node::{Caller, Node, Reason};
use crate::policy::{CertificateKey, IDENTITY_SCHEME, Identity};

/// Every SAN URI of a DER certificate whose scheme is `hkms://`, in certificate order. The
/// scheme is matched without regard to case, so `HKMS://...` beside `hkms://...` makes the
/// certificate ambiguous rather than silently picking one. No signature or date is checked
/// here: the TLS layer has done that.
pub fn identity_uris(cert_der: &[u8]) -> Result<Vec<String>, String> {
    let (rest, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| format!("the client certificate cannot be parsed: {e}"))?;
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes follow the certificate; expected exactly one DER certificate",
            rest.len()
        ));
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("the subjectAltName extension is malformed: {e}"))?;
    Ok(san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) if has_scheme(u) => Some(u.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

fn has_scheme(uri: &str) -> bool {
    uri.get(..IDENTITY_SCHEME.len())
        .is_some_and(|head| head.eq_ignore_ascii_case(IDENTITY_SCHEME))
}

/// The identity in a DER certificate.
pub fn identity_from_cert(cert_der: &[u8]) -> Result<Identity, String> {
    let uris = identity_uris(cert_der)?;
    match uris.as_slice() {
        [one] => Identity::from_uri(one),
        [] => Err(format!(
            "the client certificate carries no hkms identity: it needs one subjectAltName URI \
             {IDENTITY_SCHEME}ROLE/TIER/REGION/NAME"
        )),
        many => Err(format!(
            "the client certificate carries {} hkms identities; it must carry exactly one",
            many.len()
        )),
    }
}

/// Why a request has no usable identity: the status to answer with, and for a revoked
/// certificate, what the record says of it.
#[derive(Debug)]
pub struct Refusal {
    /// UNAUTHENTICATED, with what to do.
    pub status: Status,
    /// A revoked certificate's identity (not authenticated: for the auditors) and serial.
    pub revoked: Option<(Identity, String)>,
}

impl From<Status> for Refusal {
    fn from(status: Status) -> Self {
        Refusal {
            status,
            revoked: None,
        }
    }
}

/// What a caller whose certificate was revoked is told.
pub const REVOKED: &str =
    "the client certificate has been revoked by its CA; ask the CA for a new one";

/// What a caller without a client certificate is told, by every service (health and
/// reflection included): nothing is served without mutual TLS.
pub const NO_CLIENT_CERTIFICATE: &str = "no client certificate: hkms serves only over mutual TLS; \
     present the certificate the programme CA issued you (`--cert`/`--key`)";

/// Refuses, before any service, a request on a connection whose client presented no
/// certificate (the TLS layer lets such a connection through only so that it can be told).
pub fn require_client_certificate(request: Request<()>) -> Result<Request<()>, Status> {
    match request.peer_certs() {
        Some(certs) if !certs.is_empty() => Ok(request),
        _ => Err(no_certificate(NO_CLIENT_CERTIFICATE)),
    }
}

/// The identity of a request's caller and their certificate's key (by which an officer roster
/// knows the person), unless a certificate of its chain is revoked on `node`: the handshake
/// checked the lists in force then, and a list loaded since may name it.
pub fn caller<T>(node: &Node, request: &Request<T>) -> Result<Caller, Refusal> {
    let certs = request
        .peer_certs()
        .ok_or_else(|| no_certificate(NO_CLIENT_CERTIFICATE))?;
    let leaf = certs
        .first()
        .ok_or_else(|| no_certificate("the client presented no certificate"))?;
    let invalid = |why: String| refusal(Reason::IdentityInvalid, why, Vec::new());
    let who = identity_from_cert(leaf.as_ref()).map_err(invalid)?;
    let key = CertificateKey::of_certificate(leaf.as_ref()).map_err(invalid)?;
    match node.revoked_in(&certs) {
        Some(serial) => Err(Refusal {
            status: refusal(
                Reason::CertificateRevoked,
                REVOKED,
                vec![("serial", serial.clone())],
            ),
            revoked: Some((who, serial)),
        }),
        None => Ok(Caller {
            identity: who,
            certificate_key: Some(key),
        }),
    }
}

/// UNAUTHENTICATED for a connection without a client certificate.
fn no_certificate(message: &str) -> Status {
    refusal(Reason::ClientCertificateMissing, message, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_is_matched_without_case() {
        assert!(has_scheme("hkms://officer/national/000000/a"));
        assert!(has_scheme("HKMS://x"));
        assert!(!has_scheme("https://example.com"));
        assert!(!has_scheme("hkms:/"));
        assert!(!has_scheme(""));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(identity_uris(b"not a certificate").is_err());
        assert!(identity_from_cert(b"").is_err());
    }
}
