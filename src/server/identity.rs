//! The caller's identity, read from the client certificate that mTLS verified: exactly one SAN
//! URI `hkms://ROLE/TIER/REGION/NAME` (see [`crate::policy::Identity`]). A certificate without
//! one, or with two, is refused as UNAUTHENTICATED.

use tonic::{Request, Status};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::node::Node;
use crate::policy::{IDENTITY_SCHEME, Identity};

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

/// The identity of a request's caller, unless its certificate is revoked on `node`.
pub fn caller<T>(node: &Node, request: &Request<T>) -> Result<Identity, Status> {
    let certs = request.peer_certs().ok_or_else(|| {
        Status::unauthenticated("no client certificate: hkms serves only over mutual TLS")
    })?;
    let leaf = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("the client presented no certificate"))?;
    let who = identity_from_cert(leaf.as_ref()).map_err(Status::unauthenticated)?;
    // The handshake checked the lists in force then; a list loaded since may name it.
    if node.is_revoked(leaf.as_ref()) {
        return Err(Status::unauthenticated(
            "the client certificate has been revoked by its CA; ask the CA for a new one",
        ));
    }
    Ok(who)
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
