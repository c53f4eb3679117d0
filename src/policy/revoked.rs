//! Client certificates their CA has revoked, read from its revocation lists (CRLs).
//!
//! The TLS layer refuses a listed certificate at the handshake. This set lets the node refuse
//! it on every request too, so that a list loaded by SIGHUP also shuts out connections opened
//! before it. A certificate is named by its issuer and serial number, as a CRL names it.
//!
//! The lists' signatures are checked by the TLS layer, not here: a list in the node's own
//! configuration can only take access away.

use std::collections::HashSet;

use x509_parser::prelude::{CertificateRevocationList, FromDer, X509Certificate};

/// The (issuer, serial) pairs of every revoked certificate, both as DER bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RevokedCerts {
    listed: HashSet<(Vec<u8>, Vec<u8>)>,
}

impl RevokedCerts {
    /// Every certificate on these lists (DER); an error names the list that cannot be read.
    pub fn from_crls<'a>(crls: impl IntoIterator<Item = &'a [u8]>) -> Result<RevokedCerts, String> {
        let mut listed = HashSet::new();
        for (n, der) in crls.into_iter().enumerate() {
            let (_, crl) = CertificateRevocationList::from_der(der)
                .map_err(|e| format!("revocation list {} cannot be parsed: {e}", n + 1))?;
            let issuer = crl.issuer().as_raw().to_vec();
            for revoked in crl.iter_revoked_certificates() {
                listed.insert((issuer.clone(), revoked.raw_serial().to_vec()));
            }
        }
        Ok(RevokedCerts { listed })
    }

    /// How many certificates are revoked.
    pub fn len(&self) -> usize {
        self.listed.len()
    }

    /// Whether no certificate is revoked.
    pub fn is_empty(&self) -> bool {
        self.listed.is_empty()
    }

    /// The serial number (hex) of the certificate (DER) if it is revoked. One that cannot be
    /// parsed is not listed; the identity check refuses it anyway.
    pub fn revoked_serial(&self, cert_der: &[u8]) -> Option<String> {
        if self.listed.is_empty() {
            return None;
        }
        let (_, cert) = X509Certificate::from_der(cert_der).ok()?;
        let serial = cert.raw_serial();
        self.listed
            .contains(&(cert.issuer().as_raw().to_vec(), serial.to_vec()))
            .then(|| hex::encode(serial))
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::CertificateRevocationListDer;
    use rustls::pki_types::pem::PemObject;

    use super::*;
    use crate::pki::{DevCa, Validity};
    use crate::policy::Identity;

    fn der(pem: &str) -> Vec<u8> {
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn a_listed_certificate_is_found_and_others_are_not() {
        let ca = DevCa::create("test").unwrap();
        let who = Identity::from_uri("hkms://auditor/national/000000/a").unwrap();
        let stolen = ca.issue_client(Some(&who), Validity::days(1)).unwrap();
        let spare = ca.issue_client(Some(&who), Validity::days(1)).unwrap();
        let crl_pem = ca
            .revocation_list(&[stolen.cert_pem.as_str()], 1, 30)
            .unwrap();
        let crl = CertificateRevocationListDer::from_pem_slice(crl_pem.as_bytes()).unwrap();
        let revoked = RevokedCerts::from_crls([crl.as_ref()]).unwrap();
        assert_eq!(revoked.len(), 1);
        let serial = revoked.revoked_serial(&der(&stolen.cert_pem)).unwrap();
        assert!(!serial.is_empty());
        assert_eq!(revoked.revoked_serial(&der(&spare.cert_pem)), None);
        // A certificate of another CA is not listed.
        let other = DevCa::create("other").unwrap();
        let foreign = other.issue_client(Some(&who), Validity::days(1)).unwrap();
        assert_eq!(revoked.revoked_serial(&der(&foreign.cert_pem)), None);
        assert_eq!(revoked.revoked_serial(b"not a certificate"), None);
    }

    #[test]
    fn an_unreadable_list_is_an_error_and_no_list_revokes_nothing() {
        let err = RevokedCerts::from_crls([b"garbage".as_slice()]).unwrap_err();
        assert!(err.contains("revocation list 1"), "{err}");
        let none = RevokedCerts::from_crls([]).unwrap();
        assert!(none.is_empty());
    }
    #[test]
    fn every_listed_certificate_is_counted() {
        let ca = DevCa::create("test").unwrap();
        let who = Identity::from_uri("hkms://auditor/national/000000/a").unwrap();
        let one = ca.issue_client(Some(&who), Validity::days(1)).unwrap();
        let two = ca.issue_client(Some(&who), Validity::days(1)).unwrap();
        let crl_pem = ca
            .revocation_list(&[one.cert_pem.as_str(), two.cert_pem.as_str()], 1, 30)
            .unwrap();
        let crl = CertificateRevocationListDer::from_pem_slice(crl_pem.as_bytes()).unwrap();
        let revoked = RevokedCerts::from_crls([crl.as_ref()]).unwrap();
        assert_eq!(revoked.len(), 2);
        assert!(!revoked.is_empty());
        assert!(revoked.revoked_serial(&der(&two.cert_pem)).is_some());
    }
}
