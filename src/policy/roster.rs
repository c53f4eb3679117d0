//! The officer roster: the `[officers.NAME]` tables of the policy file, which name the persons
//! who approve ceremonies and the certificate keys each of them holds.
//!
//! Why: a certificate names a role, not a person. One person holding two officer certificates
//! would otherwise count as two approvers, and dual control would be one person's decision.
//! With a roster, approvals count persons: a certificate whose key is on no one's list does
//! not approve, and a person approves a ceremony once, whichever certificate they use.
//!
//! A certificate is named by the SHA-256 of its SubjectPublicKeyInfo (DER), which stays the
//! same when the CA renews the certificate for the same key and which anyone can compute with
//! openssl (docs/identity-and-policy.md shows how).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::PolicyError;
use crate::hierarchy::line_of;

/// The SHA-256 of a certificate's SubjectPublicKeyInfo (DER), as 64 lowercase hex digits: how
/// the roster names a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CertificateKey(String);

impl CertificateKey {
    /// Reads 64 hex digits (either case).
    pub fn parse(text: &str) -> Result<CertificateKey, String> {
        let t = text.trim();
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(CertificateKey(t.to_ascii_lowercase()))
        } else {
            Err(format!(
                "`{}` is not a certificate key SHA-256 (64 hex digits: the SHA-256 of the \
                 certificate's SubjectPublicKeyInfo, as `hkms pki key-sha256` prints it)",
                crate::untrusted_text::escape(&t.chars().take(80).collect::<String>())
            ))
        }
    }

    /// The key of a DER certificate. No signature or date is checked here: the TLS layer has
    /// done that for a client's certificate.
    pub fn of_certificate(der: &[u8]) -> Result<CertificateKey, String> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
        Ok(CertificateKey::of_spki(cert.public_key().raw))
    }

    /// The key of a SubjectPublicKeyInfo in DER.
    pub fn of_spki(spki_der: &[u8]) -> CertificateKey {
        CertificateKey(hex::encode(Sha256::digest(spki_der)))
    }

    /// The 64 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CertificateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The persons of the roster and the certificate keys each holds. A key belongs to one person.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Roster {
    persons: BTreeMap<String, Vec<CertificateKey>>,
    by_key: BTreeMap<CertificateKey, String>,
}

impl Roster {
    /// The person who holds `key`, if anyone on the roster does.
    pub fn person_of(&self, key: &CertificateKey) -> Option<&str> {
        self.by_key.get(key).map(String::as_str)
    }

    /// The persons, by name, with their certificate keys.
    pub fn persons(&self) -> impl Iterator<Item = (&str, &[CertificateKey])> {
        self.persons.iter().map(|(n, k)| (n.as_str(), k.as_slice()))
    }

    /// How many persons the roster names.
    pub fn len(&self) -> usize {
        self.persons.len()
    }

    /// Whether the roster names nobody (a parsed roster never does).
    pub fn is_empty(&self) -> bool {
        self.persons.is_empty()
    }

    /// What differs from `old`, one phrase per person added, removed or whose keys changed.
    pub fn changes_from(&self, old: &Roster) -> Vec<String> {
        let mut out = Vec::new();
        for (name, keys) in &old.persons {
            match self.persons.get(name) {
                None => out.push(format!("person {name} removed")),
                Some(now) => {
                    for k in now.iter().filter(|k| !keys.contains(k)) {
                        out.push(format!("certificate key {k} added to {name}"));
                    }
                    for k in keys.iter().filter(|k| !now.contains(k)) {
                        out.push(format!("certificate key {k} taken from {name}"));
                    }
                }
            }
        }
        for (name, keys) in &self.persons {
            if !old.persons.contains_key(name) {
                out.push(format!(
                    "person {name} added with {} certificate key(s)",
                    keys.len()
                ));
            }
        }
        out
    }
}

#[derive(Debug, Deserialize)]
struct RosterOnly {
    officers: Option<Spanned<BTreeMap<Spanned<String>, RawOfficer>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOfficer {
    certificates: Vec<Spanned<String>>,
    #[allow(dead_code)]
    description: Option<String>,
}

/// Reads the `[officers.NAME]` tables: `None` when the file has none (approvals then count
/// certificate identities). Errors name the file, the line and what to fix: a bad name, a
/// person without certificates, a key that is not 64 hex digits, a key listed twice.
pub fn parse_roster(text: &str, origin: &str) -> Result<Option<Roster>, PolicyError> {
    let at = |line: Option<usize>, message: String| PolicyError {
        origin: origin.into(),
        line,
        message,
    };
    let raw: RosterOnly = toml::from_str(text).map_err(|e| {
        at(
            e.span().map(|s| line_of(text, s.start)),
            format!(
                "[officers]: {}; each person is a table [officers.NAME] with certificates = \
                 [\"<SHA-256 of a certificate's public key>\", ...]",
                e.message().trim_end()
            ),
        )
    })?;
    let Some(table) = raw.officers else {
        return Ok(None);
    };
    let table_line = line_of(text, table.span().start);
    let table = table.into_inner();
    if table.is_empty() {
        return Err(at(
            Some(table_line),
            "[officers] names nobody: no approval would count; add [officers.NAME] tables, or \
             remove the section to count approvals by certificate"
                .into(),
        ));
    }
    let mut roster = Roster::default();
    let mut seen: BTreeMap<CertificateKey, (String, usize)> = BTreeMap::new();
    for (name, officer) in table {
        let line = line_of(text, name.span().start);
        let name = name.into_inner();
        if !valid_name(&name) {
            return Err(at(
                Some(line),
                format!(
                    "[officers.{}]: a person's name is 1-64 characters of letters, digits, \
                     '.', '_' or '-'",
                    crate::untrusted_text::escape(&name.chars().take(80).collect::<String>())
                ),
            ));
        }
        if officer.certificates.is_empty() {
            return Err(at(
                Some(line),
                format!(
                    "[officers.{name}] lists no certificates; list the SHA-256 of each \
                     certificate key {name} holds, or remove the person"
                ),
            ));
        }
        let mut keys = Vec::new();
        for c in officer.certificates {
            let key_line = line_of(text, c.span().start);
            let key = CertificateKey::parse(c.get_ref())
                .map_err(|e| at(Some(key_line), format!("[officers.{name}]: {e}")))?;
            if let Some((holder, first)) = seen.get(&key) {
                return Err(at(
                    Some(key_line),
                    format!(
                        "[officers.{name}]: certificate key {key} is already listed for \
                         {holder} (line {first}); a certificate belongs to one person"
                    ),
                ));
            }
            seen.insert(key.clone(), (name.clone(), key_line));
            roster.by_key.insert(key.clone(), name.clone());
            keys.push(key);
        }
        keys.sort();
        roster.persons.insert(name, keys);
    }
    Ok(Some(roster))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn roster(text: &str) -> Result<Option<Roster>, String> {
        parse_roster(text, "p.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn a_file_without_officers_has_no_roster() {
        assert_eq!(roster("[card_pins]\nmin_length = 6\n").unwrap(), None);
    }

    #[test]
    fn each_person_holds_their_keys_and_a_key_names_its_person() {
        let text = format!(
            "[officers.alice]\ncertificates = [\"{}\", \"{}\"]\n\n[officers.bob]\n\
             certificates = [\"{}\"]\ndescription = \"Bob\"\n",
            key('a'),
            key('B'),
            key('c')
        );
        let r = roster(&text).unwrap().unwrap();
        assert_eq!(r.len(), 2);
        let b = CertificateKey::parse(&key('b')).unwrap();
        assert_eq!(r.person_of(&b), Some("alice"));
        assert_eq!(
            r.person_of(&CertificateKey::parse(&key('c')).unwrap()),
            Some("bob")
        );
        assert_eq!(
            r.person_of(&CertificateKey::parse(&key('d')).unwrap()),
            None
        );
    }

    #[test]
    fn mistakes_are_refused_with_their_line() {
        let two = format!(
            "[officers.alice]\ncertificates = [\"{}\"]\n[officers.bob]\ncertificates = [\"{}\"]\n",
            key('a'),
            key('A')
        );
        let e = roster(&two).unwrap_err();
        assert!(e.starts_with("p.toml line 4:"), "{e}");
        assert!(e.contains("already listed for alice (line 2)"), "{e}");

        let e = roster("[officers.alice]\ncertificates = [\"abc\"]\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("64 hex digits"), "{e}");
        let e = roster("[officers.alice]\ncertificates = []\n").unwrap_err();
        assert!(e.contains("lists no certificates"), "{e}");
        let e = roster("[officers]\n").unwrap_err();
        assert!(e.contains("names nobody"), "{e}");
        let e = roster(&format!(
            "[officers.\"al ice\"]\ncertificates = [\"{}\"]\n",
            key('a')
        ))
        .unwrap_err();
        assert!(e.contains("a person's name"), "{e}");
        let e = roster(&format!(
            "[officers.alice]\ncertificates = [\"{}\"]\nrole = \"x\"\n",
            key('a')
        ))
        .unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn changes_are_named_person_by_person() {
        let old = roster(&format!(
            "[officers.alice]\ncertificates = [\"{}\"]\n[officers.bob]\ncertificates = [\"{}\"]\n",
            key('a'),
            key('b')
        ))
        .unwrap()
        .unwrap();
        let new = roster(&format!(
            "[officers.alice]\ncertificates = [\"{}\", \"{}\"]\n[officers.carol]\ncertificates = [\"{}\"]\n",
            key('a'),
            key('d'),
            key('c')
        ))
        .unwrap()
        .unwrap();
        let changes = new.changes_from(&old);
        assert_eq!(
            changes,
            vec![
                format!("certificate key {} added to alice", key('d')),
                "person bob removed".to_string(),
                "person carol added with 1 certificate key(s)".to_string(),
            ]
        );
        assert!(old.changes_from(&old).is_empty());
    }

    #[test]
    fn a_certificate_is_named_by_the_sha256_of_its_public_key() {
        let ca = crate::pki::DevCa::create("t").unwrap();
        let cert = ca
            .issue_client(None, crate::pki::Validity::days(1))
            .unwrap();
        let der = x509_parser::pem::parse_x509_pem(cert.cert_pem.as_bytes())
            .unwrap()
            .1
            .contents;
        let key = CertificateKey::of_certificate(&der).unwrap();
        let (_, parsed) = X509Certificate::from_der(&der).unwrap();
        assert_eq!(
            key.as_str(),
            hex::encode(Sha256::digest(parsed.public_key().raw))
        );
        assert!(CertificateKey::of_certificate(b"junk").is_err());
    }
}
