//! The ECDSA P-256 key pair that signs checkpoints of the ceremony log. Made once in the token;
//! the public point is read back for publication.

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::{HsmError, Pkcs11Token, templates};

impl Pkcs11Token {
    /// Makes the signing pair under `label` unless it exists; returns the public point
    /// (uncompressed, 65 bytes: 0x04 || X || Y).
    pub fn ensure_signing_key(&self, label: &str) -> Result<Vec<u8>, HsmError> {
        self.signing_key(label, true)
    }

    /// The public point of the signing pair `label`; with `create`, the pair is made when the
    /// token has none (a node's first start), otherwise its absence is an error.
    pub fn signing_key(&self, label: &str, create: bool) -> Result<Vec<u8>, HsmError> {
        self.guarded(|| {
            let s = self.session()?;
            let public = match find(&s, ObjectClass::PUBLIC_KEY, label)? {
                Some(h) if find(&s, ObjectClass::PRIVATE_KEY, label)?.is_some() => h,
                Some(_) => {
                    return Err(HsmError::Unexpected {
                        what: format!("public key {label} without its private key"),
                    });
                }
                None if !create => {
                    return Err(HsmError::KeyNotFound {
                        label: label.to_string(),
                    });
                }
                None => {
                    let (pub_t, priv_t) =
                        templates::audit_signing_templates(label, label.as_bytes());
                    s.generate_key_pair(&Mechanism::EccKeyPairGen, &pub_t, &priv_t)?
                        .0
                }
            };
            let point = s
                .get_attributes(public, &[AttributeType::EcPoint])?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::EcPoint(p) => Some(p),
                    _ => None,
                })
                .ok_or_else(|| HsmError::Unexpected {
                    what: "EC public key without CKA_EC_POINT".into(),
                })?;
            unwrap_point(&point)
        })
    }

    /// Signs a SHA-256 digest with the signing key; returns r || s (64 bytes).
    pub fn sign_digest(&self, label: &str, digest: &[u8; 32]) -> Result<Vec<u8>, HsmError> {
        self.guarded(|| {
            let s = self.session()?;
            let key = find(&s, ObjectClass::PRIVATE_KEY, label)?.ok_or_else(|| {
                HsmError::KeyNotFound {
                    label: label.to_string(),
                }
            })?;
            let _timer = super::timing::CallTimer::with("C_Sign", cryptoki_sys::CKM_ECDSA);
            Ok(s.sign(&Mechanism::Ecdsa, key, digest)?)
        })
    }
}

fn find(s: &Session, class: ObjectClass, label: &str) -> Result<Option<ObjectHandle>, HsmError> {
    let found = s.find_objects(&[
        Attribute::Class(class),
        Attribute::Label(label.as_bytes().to_vec()),
    ])?;
    // A private object is hkms's; a public one anybody could have made under the label. Only
    // a node whose pair predates private public halves has no private one to prefer.
    let private = s.find_objects(&[
        Attribute::Class(class),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Private(true),
    ])?;
    let found = if private.is_empty() { found } else { private };
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        many => Err(HsmError::DuplicateLabel {
            label: label.to_string(),
            count: many.len(),
        }),
    }
}

/// `CKA_EC_POINT` is a DER OCTET STRING holding the point (some tokens give the bare point).
fn unwrap_point(value: &[u8]) -> Result<Vec<u8>, HsmError> {
    let point = match value {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
        bare if bare.len() == 65 => bare,
        _ => {
            return Err(HsmError::Unexpected {
                what: format!("CKA_EC_POINT of {} bytes for a P-256 key", value.len()),
            });
        }
    };
    if point.first() != Some(&0x04) {
        return Err(HsmError::Unexpected {
            what: "a compressed EC point".into(),
        });
    }
    Ok(point.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_read_with_or_without_their_der_wrapper() {
        let mut bare = vec![0x04];
        bare.extend([7u8; 64]);
        let mut wrapped = vec![0x04, 0x41];
        wrapped.extend(&bare);
        assert_eq!(unwrap_point(&wrapped).unwrap(), bare);
        assert_eq!(unwrap_point(&bare).unwrap(), bare);
        assert!(unwrap_point(&[0x04, 0x41, 1, 2]).is_err());
    }
}
