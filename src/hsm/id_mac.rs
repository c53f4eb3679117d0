//! The ID MAC key: a secret that lives in the token and keys the MAC under which card service
//! records carry ID numbers (docs/design.md §3.8). A resident ID number has 18 structured
//! digits, about 10^11 candidates: a plain or salted hash of one can be reversed offline by
//! trying them all, by anyone who has the log and the salt. An HMAC whose key never leaves the
//! token can only be computed by asking the token, through the node, one recorded request at a
//! time.
//!
//! The key is one of the node's fixed objects, like the log's signing pair: made once, the first
//! time the node opens a token without it, and found by every later start. A second object
//! under its label, or a key that breaks the attribute audit's rules (made outside hkms,
//! readable, or usable for more than HMAC-SHA-256), stops the node.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectHandle};
use cryptoki::session::Session;

use super::mechanisms::SHA256_HMAC;
use super::{HsmError, Pkcs11Token, attribute_audit, mechanisms, read_facts, templates};

pub use super::templates::ID_MAC_LABEL;

/// Length of an ID MAC (HMAC-SHA-256) in bytes.
pub const ID_MAC_LEN: usize = 32;

/// What the node found when it opened the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdMacKey {
    /// There was none: it was made now (a node's first start, or a node from before ID MACs).
    Made,
    /// It was there, and follows its rules.
    Found,
}

impl Pkcs11Token {
    /// Makes the ID MAC key unless the token has it; checks the one it has (or has just made)
    /// against the attribute audit's rules. Two objects under its label, or a key that breaks
    /// a rule, is an error: the node must not start on them.
    pub fn ensure_id_mac_key(&self) -> Result<IdMacKey, HsmError> {
        self.guarded(|| {
            self.inner.caps.require_id_mac()?;
            // Exclusive: a token object is created (see `Inner::token_lock`).
            let s = self.writing_session()?;
            let found = s.find_objects(&[Attribute::Label(ID_MAC_LABEL.as_bytes().to_vec())])?;
            match found.as_slice() {
                [] => {
                    let key = s.generate_key(
                        &Mechanism::GenericSecretKeyGen,
                        &templates::id_mac_template(ID_MAC_LABEL),
                    )?;
                    if let Err(e) = self.check_id_mac_key(&s, key) {
                        // The token did not make what it was asked for: leave nothing behind
                        // that a later start would find and refuse.
                        let _ = s.destroy_object(key);
                        return Err(e);
                    }
                    Ok(IdMacKey::Made)
                }
                [one] => {
                    self.check_id_mac_key(&s, *one)?;
                    Ok(IdMacKey::Found)
                }
                many => Err(HsmError::DuplicateLabel {
                    label: ID_MAC_LABEL.into(),
                    count: many.len(),
                }),
            }
        })
    }

    /// HMAC-SHA-256 of `data` under the ID MAC key, computed in the token. The data is only
    /// read; what the token keeps of it is its own business (a certified HSM wipes it).
    pub fn id_mac(&self, data: &[u8]) -> Result<[u8; ID_MAC_LEN], HsmError> {
        self.guarded(|| {
            self.inner.caps.require_id_mac()?;
            let s = self.session()?;
            let key = self.key_handle(&s, ID_MAC_LABEL)?;
            let mac = self
                .inner
                .raw
                .sign(s.handle(), SHA256_HMAC, key.handle(), data)?;
            let len = mac.len();
            mac.try_into().map_err(|_| HsmError::Unexpected {
                what: format!("HMAC-SHA-256 of {len} bytes"),
            })
        })
    }

    /// Refuses an ID MAC key that breaks a rule of the attribute audit.
    fn check_id_mac_key(&self, s: &Session, key: ObjectHandle) -> Result<(), HsmError> {
        let mut facts = read_facts(s, key, "secret-key")?;
        facts.class = object_class(s, key)?;
        facts.allowed_mechanisms = self
            .inner
            .raw
            .attribute_bytes(
                s.handle(),
                key.handle(),
                cryptoki_sys::CKA_ALLOWED_MECHANISMS,
            )?
            .map(|b| mechanisms::parse_allowed_mechanisms(&b));
        let broken = attribute_audit::check(&facts);
        if broken.is_empty() {
            return Ok(());
        }
        Err(HsmError::UnsafeKey {
            label: ID_MAC_LABEL.into(),
            broken: broken
                .iter()
                .map(|v| format!("{} (found: {})", v.rule, v.found))
                .collect::<Vec<_>>()
                .join("; "),
        })
    }
}

/// The object's class as the attribute audit names it: an object under the label that is not
/// a secret key at all breaks the key's rules.
fn object_class(s: &Session, object: ObjectHandle) -> Result<String, HsmError> {
    use cryptoki::object::{AttributeType, ObjectClass};
    let class = s
        .get_attributes(object, &[AttributeType::Class])?
        .into_iter()
        .find_map(|a| match a {
            Attribute::Class(c) => Some(c),
            _ => None,
        });
    Ok(match class {
        Some(ObjectClass::SECRET_KEY) => "secret-key".into(),
        Some(ObjectClass::PRIVATE_KEY) => "private-key".into(),
        Some(other) => other.to_string(),
        None => "unknown".into(),
    })
}
