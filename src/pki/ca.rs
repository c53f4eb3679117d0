//! The dev CA: made fresh or loaded from PEM, it issues client and server certificates.

use std::fmt;
use std::net::IpAddr;

use rcgen::string::{BmpString, Ia5String, PrintableString, TeletexString, UniversalString};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType,
};
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::extensions::ParsedExtension;
use x509_parser::x509::X509Name;
use zeroize::Zeroizing;

use super::{IssuedCert, PkiError, Validity};
use crate::policy::Identity;

/// How long a new dev CA is valid.
const CA_VALIDITY_DAYS: i64 = 3650;

/// The common name of a client certificate made without an identity.
const NO_IDENTITY_CN: &str = "no-identity";

/// The common name of a server certificate that has no DNS name.
const SERVER_FALLBACK_CN: &str = "hkms-server";

/// A self-signed dev CA (ECDSA P-256) with its key, ready to sign certificates.
pub struct DevCa {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for DevCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Issuer`'s Debug shows its name and key usages but not the key.
        f.debug_struct("DevCa")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

impl DevCa {
    /// Makes a new self-signed CA named `common_name`: ECDSA P-256, basic constraints CA
    /// (no path length limit), key usages certificate sign and CRL sign, valid from one hour
    /// ago for 3650 days.
    pub fn create(common_name: &str) -> Result<DevCa, PkiError> {
        let key = new_key()?;
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(CA_VALIDITY_DAYS);
        let cert = params.self_signed(&key).map_err(|e| {
            PkiError::Generate(format!("self-signing the CA `{common_name}` failed: {e}"))
        })?;
        Ok(DevCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate PEM and its PKCS#8 private key PEM (as written by
    /// [`write_dev_pki`](super::write_dev_pki)). The certificate must be a CA certificate and
    /// the key must be its key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<DevCa, PkiError> {
        let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).map_err(|e| {
            PkiError::Parse(format!(
                "the CA certificate is not PEM ({e}); give the contents of ca.pem"
            ))
        })?;
        if pem.label != "CERTIFICATE" {
            return Err(PkiError::Parse(format!(
                "the CA certificate PEM is a `{}`, not a `CERTIFICATE`; give the contents of ca.pem",
                pem.label
            )));
        }
        let cert = pem.parse_x509().map_err(|e| {
            PkiError::Parse(format!(
                "the CA certificate PEM does not hold an X.509 certificate ({e}); give the contents of ca.pem"
            ))
        })?;
        if !cert.is_ca() {
            return Err(PkiError::Parse(format!(
                "`{}` is not a CA certificate (its basic constraints do not say CA); give the dev CA's ca.pem",
                cert.subject()
            )));
        }
        let key = KeyPair::from_pem(key_pem).map_err(|e| {
            PkiError::Parse(format!(
                "the CA key cannot be read ({e}); give the contents of ca.key, a PKCS#8 `PRIVATE KEY` PEM"
            ))
        })?;
        if key.public_key_raw() != cert.public_key().subject_public_key.data.as_ref() {
            return Err(PkiError::Parse(format!(
                "the CA key is not the key of `{}`; give the ca.key that belongs with this ca.pem",
                cert.subject()
            )));
        }
        let params = issuer_params(&cert)?;
        Ok(DevCa {
            cert_pem: cert_pem.to_string(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Whether `cert_pem` was signed by this CA and `key_pem` is its key. A pair that a crash
    /// left half replaced, or one an earlier CA issued, is not.
    pub fn issued_pair_matches(&self, cert_pem: &str, key_pem: &str) -> bool {
        use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};
        let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()) else {
            return false;
        };
        let Ok(cert) = pem.parse_x509() else {
            return false;
        };
        let Ok(key) = KeyPair::from_pem(key_pem) else {
            return false;
        };
        key.public_key_raw() == cert.public_key().subject_public_key.data.as_ref()
            && UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, self.issuer.key().public_key_raw())
                .verify(
                    cert.tbs_certificate.as_ref(),
                    cert.signature_value.data.as_ref(),
                )
                .is_ok()
    }

    /// A revocation list (PEM) signed by this CA that revokes the certificates `revoked` (PEM),
    /// numbered `number` (higher than the last one published), valid `days`. For the node's
    /// `[tls] client_crl`.
    pub fn revocation_list(
        &self,
        revoked: &[&str],
        number: u64,
        days: i64,
    ) -> Result<String, PkiError> {
        let now = OffsetDateTime::now_utc();
        let mut revoked_certs = Vec::with_capacity(revoked.len());
        for pem in revoked {
            let (_, parsed) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
                .map_err(|e| PkiError::Parse(format!("a certificate to revoke is not PEM: {e}")))?;
            let cert = parsed.parse_x509().map_err(|e| {
                PkiError::Parse(format!("a certificate to revoke is not X.509: {e}"))
            })?;
            revoked_certs.push(rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from_slice(cert.raw_serial()),
                revocation_time: now,
                reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                invalidity_date: None,
            });
        }
        let params = rcgen::CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(days),
            crl_number: rcgen::SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(|e| PkiError::Generate(format!("signing the revocation list failed: {e}")))?;
        crl.pem()
            .map_err(|e| PkiError::Generate(format!("encoding the revocation list failed: {e}")))
    }

    /// The CA certificate, PEM: the trust anchor that servers and clients are configured with.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key, PKCS#8 PEM; wiped from memory when dropped.
    pub fn key_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(self.issuer.key().serialize_pem())
    }

    /// Issues a client certificate (ECDSA P-256, extended key usage clientAuth).
    ///
    /// With `Some(identity)` the common name is the identity's name and the only subject
    /// alternative name is the URI `identity.to_uri()`. With `None` the common name is
    /// `no-identity` and the certificate has no subject alternative name at all, so a server
    /// finds no hkms identity in it (for tests of that refusal).
    pub fn issue_client(
        &self,
        identity: Option<&Identity>,
        validity: Validity,
    ) -> Result<IssuedCert, PkiError> {
        let (common_name, sans) = match identity {
            Some(identity) => {
                let uri = identity.to_uri();
                let uri = Ia5String::try_from(uri.as_str()).map_err(|e| {
                    PkiError::Generate(format!(
                        "the identity `{uri}` cannot stand in a certificate ({e}); use ASCII names"
                    ))
                })?;
                (identity.name.as_str(), vec![SanType::URI(uri)])
            }
            None => (NO_IDENTITY_CN, Vec::new()),
        };
        self.issue_leaf(
            common_name,
            sans,
            ExtendedKeyUsagePurpose::ClientAuth,
            validity,
        )
    }

    /// Issues a server certificate (ECDSA P-256, extended key usage serverAuth) for the given
    /// DNS names and IP addresses, which become its subject alternative names; the common name
    /// is the first DNS name. At least one name or address is needed.
    pub fn issue_server(
        &self,
        dns_names: &[&str],
        ips: &[IpAddr],
        validity: Validity,
    ) -> Result<IssuedCert, PkiError> {
        if dns_names.is_empty() && ips.is_empty() {
            return Err(PkiError::Generate(
                "a server certificate needs at least one DNS name or IP address".to_string(),
            ));
        }
        let mut sans = Vec::with_capacity(dns_names.len() + ips.len());
        for name in dns_names {
            let dns = Ia5String::try_from(*name).map_err(|e| {
                PkiError::Generate(format!(
                    "`{name}` is not a usable DNS name ({e}); use an ASCII (punycode) host name"
                ))
            })?;
            sans.push(SanType::DnsName(dns));
        }
        sans.extend(ips.iter().copied().map(SanType::IpAddress));
        let common_name = dns_names.first().copied().unwrap_or(SERVER_FALLBACK_CN);
        self.issue_leaf(
            common_name,
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            validity,
        )
    }

    fn issue_leaf(
        &self,
        common_name: &str,
        sans: Vec<SanType>,
        usage: ExtendedKeyUsagePurpose,
        validity: Validity,
    ) -> Result<IssuedCert, PkiError> {
        if validity.not_after <= validity.not_before {
            return Err(PkiError::Generate(format!(
                "the validity ends ({}) before it starts ({}); give a not_after later than not_before",
                validity.not_after, validity.not_before
            )));
        }
        let key = new_key()?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(common_name);
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let cert = params.signed_by(&key, &self.issuer).map_err(|e| {
            PkiError::Generate(format!(
                "signing the certificate for `{common_name}` failed: {e}"
            ))
        })?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key.serialize_pem()),
        })
    }
}

fn new_key() -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| PkiError::Generate(format!("making an ECDSA P-256 key failed: {e}")))
}

fn common_name_dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

/// What rcgen needs to sign as the CA `cert`: its subject exactly as encoded (so that issued
/// certificates name it byte for byte), its key usages and its subject key identifier (so
/// that their authority key identifier matches).
fn issuer_params(cert: &X509Certificate<'_>) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(cert.subject())?;
    params.key_usages = key_usages(cert)?;
    params.key_identifier_method = cert
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => {
                Some(KeyIdMethod::PreSpecified(id.0.to_vec()))
            }
            _ => None,
        })
        .unwrap_or(KeyIdMethod::Sha256);
    Ok(params)
}

fn key_usages(cert: &X509Certificate<'_>) -> Result<Vec<KeyUsagePurpose>, PkiError> {
    let usage = cert.key_usage().map_err(|e| {
        PkiError::Parse(format!(
            "the CA certificate's key usage cannot be read ({e}); make a new dev CA"
        ))
    })?;
    let Some(usage) = usage else {
        return Ok(Vec::new());
    };
    let ku = usage.value;
    Ok([
        (ku.digital_signature(), KeyUsagePurpose::DigitalSignature),
        (ku.non_repudiation(), KeyUsagePurpose::ContentCommitment),
        (ku.key_encipherment(), KeyUsagePurpose::KeyEncipherment),
        (ku.data_encipherment(), KeyUsagePurpose::DataEncipherment),
        (ku.key_agreement(), KeyUsagePurpose::KeyAgreement),
        (ku.key_cert_sign(), KeyUsagePurpose::KeyCertSign),
        (ku.crl_sign(), KeyUsagePurpose::CrlSign),
        (ku.encipher_only(), KeyUsagePurpose::EncipherOnly),
        (ku.decipher_only(), KeyUsagePurpose::DecipherOnly),
    ]
    .into_iter()
    .filter_map(|(set, purpose)| set.then_some(purpose))
    .collect())
}

/// `name` as rcgen writes it, keeping each attribute's string type so that the encoding is
/// the same.
fn distinguished_name(name: &X509Name<'_>) -> Result<DistinguishedName, PkiError> {
    let unsupported = |why: &str| {
        PkiError::Parse(format!(
            "the CA subject `{name}` cannot be reused for signing: {why}; make a new dev CA"
        ))
    };
    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attrs = rdn.iter();
        let (Some(attr), None) = (attrs.next(), attrs.next()) else {
            return Err(unsupported("it has an empty or multi-valued RDN"));
        };
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| unsupported("an attribute type is not a valid OID"))?
            .collect();
        let value = attr.attr_value();
        let data = value.data;
        let text = || std::str::from_utf8(data).map_err(|_| unsupported("a value is not text"));
        let bad = |e: rcgen::Error| unsupported(&e.to_string());
        let dn_value = match value.header.tag() {
            Tag::Utf8String => DnValue::Utf8String(text()?.to_string()),
            Tag::PrintableString => {
                DnValue::PrintableString(PrintableString::try_from(text()?).map_err(bad)?)
            }
            Tag::Ia5String => DnValue::Ia5String(Ia5String::try_from(text()?).map_err(bad)?),
            Tag::T61String => {
                DnValue::TeletexString(TeletexString::try_from(text()?).map_err(bad)?)
            }
            Tag::BmpString => {
                DnValue::BmpString(BmpString::from_utf16be(data.to_vec()).map_err(bad)?)
            }
            Tag::UniversalString => {
                DnValue::UniversalString(UniversalString::from_utf32be(data.to_vec()).map_err(bad)?)
            }
            _ => return Err(unsupported("a value has an unsupported string type")),
        };
        dn.push(DnType::from_oid(&oid), dn_value);
    }
    Ok(dn)
}

#[cfg(test)]
mod tests {
    use x509_parser::pem::parse_x509_pem;

    use super::*;
    use crate::server::edge::identity::identity_uris as identities_in_cert;

    fn der(pem: &str) -> Vec<u8> {
        parse_x509_pem(pem.as_bytes()).unwrap().1.contents
    }

    fn identity() -> Identity {
        Identity::from_uri("hkms://window/municipal/440100/counter-3").unwrap()
    }

    fn eku(cert: &X509Certificate<'_>) -> (bool, bool) {
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        (eku.client_auth, eku.server_auth)
    }

    #[test]
    fn a_new_ca_is_a_p256_ca_for_signing_certificates_and_crls() {
        let ca = DevCa::create("hkms test CA").unwrap();
        let der = der(ca.cert_pem());
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(cert.is_ca());
        assert_eq!(cert.subject().to_string(), "CN=hkms test CA");
        assert_eq!(cert.subject(), cert.issuer());
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert_eq!(
            cert.signature_algorithm.algorithm,
            x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256
        );
        let days = (cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp())
            / 86_400;
        assert_eq!(days, 3650);
    }

    #[test]
    fn a_client_cert_carries_exactly_the_uri_of_its_identity() {
        let ca = DevCa::create("hkms test CA").unwrap();
        let id = identity();
        let issued = ca.issue_client(Some(&id), Validity::days(1)).unwrap();
        let der = der(&issued.cert_pem);
        assert_eq!(identities_in_cert(&der).unwrap(), vec![id.to_uri()]);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let sans = &cert.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(sans.general_names.len(), 1);
        assert_eq!(cert.subject().to_string(), "CN=counter-3");
        assert_eq!(eku(&cert), (true, false));
        assert!(!cert.is_ca());
        assert!(KeyPair::from_pem(&issued.key_pem).is_ok());
    }

    #[test]
    fn a_client_cert_without_identity_has_no_hkms_uri() {
        let ca = DevCa::create("hkms test CA").unwrap();
        let issued = ca.issue_client(None, Validity::days(1)).unwrap();
        let der = der(&issued.cert_pem);
        assert!(identities_in_cert(&der).unwrap().is_empty());
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(cert.subject().to_string(), "CN=no-identity");
        assert_eq!(eku(&cert), (true, false));
    }

    #[test]
    fn an_expired_validity_yields_a_not_after_in_the_past() {
        let ca = DevCa::create("hkms test CA").unwrap();
        let issued = ca
            .issue_client(Some(&identity()), Validity::expired())
            .unwrap();
        let der = der(&issued.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let now = OffsetDateTime::now_utc().unix_timestamp();
        assert!(cert.validity().not_after.timestamp() < now);
        assert!(!cert.validity().is_valid());
    }

    #[test]
    fn validity_days_is_valid_now() {
        let ca = DevCa::create("hkms test CA").unwrap();
        let issued = ca.issue_client(None, Validity::days(30)).unwrap();
        let der = der(&issued.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert!(cert.validity().is_valid());
    }

    #[test]
    fn a_validity_that_ends_before_it_starts_is_refused() {
        let ca = DevCa::create("hkms test CA").unwrap();
        let v = Validity::days(1);
        let backwards = Validity {
            not_before: v.not_after,
            not_after: v.not_before,
        };
        assert!(matches!(
            ca.issue_client(None, backwards),
            Err(PkiError::Generate(_))
        ));
    }

    #[test]
    fn a_server_cert_names_its_hosts_and_is_for_server_auth() {
        let ca = DevCa::create("hkms test CA").unwrap();
        let ips = [IpAddr::from([127, 0, 0, 1]), "::1".parse().unwrap()];
        let issued = ca
            .issue_server(&["localhost"], &ips, Validity::days(1))
            .unwrap();
        let der = der(&issued.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(eku(&cert), (false, true));
        let sans = &cert.subject_alternative_name().unwrap().unwrap().value;
        let shown: Vec<String> = sans.general_names.iter().map(|n| n.to_string()).collect();
        assert_eq!(shown.len(), 3, "{shown:?}");
        assert!(shown[0].contains("localhost"), "{shown:?}");
        assert!(identities_in_cert(&der).unwrap().is_empty());
    }

    #[test]
    fn a_server_cert_needs_a_name_or_an_address() {
        let ca = DevCa::create("hkms test CA").unwrap();
        assert!(matches!(
            ca.issue_server(&[], &[], Validity::days(1)),
            Err(PkiError::Generate(_))
        ));
    }

    #[test]
    fn a_ca_round_trips_through_pem_and_still_issues_as_itself() {
        let ca = DevCa::create("hkms test CA").unwrap();
        let loaded = DevCa::from_pem(ca.cert_pem(), &ca.key_pem()).unwrap();
        assert_eq!(loaded.cert_pem(), ca.cert_pem());
        assert_eq!(*loaded.key_pem(), *ca.key_pem());

        let ca_der = der(loaded.cert_pem());
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let issued = loaded
            .issue_client(Some(&identity()), Validity::days(1))
            .unwrap();
        let leaf_der = der(&issued.cert_pem);
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
        assert_eq!(leaf.issuer().as_raw(), ca_cert.subject().as_raw());

        let ski = ca_cert
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            })
            .unwrap();
        let aki = leaf
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => {
                    aki.key_identifier.as_ref().map(|id| id.0.to_vec())
                }
                _ => None,
            })
            .unwrap();
        assert_eq!(aki, ski);
    }

    #[test]
    fn a_ca_key_that_does_not_match_its_certificate_is_refused() {
        let ca = DevCa::create("hkms test CA").unwrap();
        let other = DevCa::create("another CA").unwrap();
        let err = DevCa::from_pem(ca.cert_pem(), &other.key_pem()).unwrap_err();
        assert!(err.to_string().contains("not the key"), "{err}");
    }

    #[test]
    fn a_leaf_certificate_is_not_accepted_as_a_ca() {
        let ca = DevCa::create("hkms test CA").unwrap();
        let leaf = ca.issue_client(None, Validity::days(1)).unwrap();
        let err = DevCa::from_pem(&leaf.cert_pem, &leaf.key_pem).unwrap_err();
        assert!(err.to_string().contains("not a CA"), "{err}");
    }

    #[test]
    fn garbage_pem_is_a_parse_error() {
        let ca = DevCa::create("hkms test CA").unwrap();
        assert!(matches!(
            DevCa::from_pem("nonsense", &ca.key_pem()),
            Err(PkiError::Parse(_))
        ));
        assert!(matches!(
            DevCa::from_pem(ca.cert_pem(), "nonsense"),
            Err(PkiError::Parse(_))
        ));
    }

    #[test]
    fn debug_output_shows_no_key() {
        let ca = DevCa::create("hkms test CA").unwrap();
        let issued = ca.issue_client(None, Validity::days(1)).unwrap();
        assert!(!format!("{ca:?}").contains("PRIVATE KEY"));
        assert!(!format!("{issued:?}").contains("PRIVATE KEY"));
    }
}
