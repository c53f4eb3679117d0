//! Opaque random key identifiers, and the PKCS#11 `CKA_ID`/`CKA_LABEL` derived from them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::HierarchyError;

const PREFIX: &str = "k-";

/// A key's id: `k-` followed by the 32 lowercase hex digits of a random UUID.
///
/// Random and opaque on purpose: it reveals nothing about the key's type, region or order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId {
    text: String,
    uuid: Uuid,
}

impl KeyId {
    /// A fresh id from a version 4 UUID.
    pub fn new_random() -> KeyId {
        KeyId::from_uuid(Uuid::new_v4())
    }

    fn from_uuid(uuid: Uuid) -> KeyId {
        KeyId {
            text: format!("{PREFIX}{}", uuid.simple()),
            uuid,
        }
    }

    /// Reads an id; anything but `k-` + 32 lowercase hex digits is refused.
    pub fn parse(text: &str) -> Result<KeyId, HierarchyError> {
        let bad = |reason: &str| HierarchyError::KeyIdFormat {
            input: text.to_owned(),
            reason: reason.to_owned(),
        };
        let digits = text
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("it does not start with \"k-\""))?;
        if digits.len() != 32 {
            return Err(bad("it does not have exactly 32 hex digits after \"k-\""));
        }
        if !digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad("it contains a character other than 0-9 and a-f"));
        }
        let uuid = Uuid::try_parse(digits).map_err(|_| bad("it is not a UUID"))?;
        Ok(KeyId::from_uuid(uuid))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The 16 UUID bytes, used as the PKCS#11 `CKA_ID` of the key object.
    pub fn ck_id(&self) -> Vec<u8> {
        self.uuid.as_bytes().to_vec()
    }

    /// The PKCS#11 `CKA_LABEL`: `hkms/` + id, so hkms objects are easy to tell apart.
    pub fn ck_label(&self) -> String {
        format!("hkms/{}", self.text)
    }
}

impl FromStr for KeyId {
    type Err = HierarchyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyId::parse(s)
    }
}

impl TryFrom<String> for KeyId {
    type Error = HierarchyError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        KeyId::parse(&s)
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> String {
        id.text
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_have_the_documented_shape() {
        let id = KeyId::new_random();
        let s = id.as_str();
        assert!(s.starts_with("k-"));
        assert_eq!(s.len(), 34);
        assert!(
            s[2..]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert_ne!(KeyId::new_random(), id);
    }

    #[test]
    fn parse_round_trips_and_maps_to_pkcs11_attributes() {
        let id = KeyId::parse("k-00112233445566778899aabbccddeeff").unwrap();
        assert_eq!(id.to_string(), "k-00112233445566778899aabbccddeeff");
        assert_eq!(
            id.ck_id(),
            [
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
                0xee, 0xff
            ]
        );
        assert_eq!(id.ck_label(), "hkms/k-00112233445566778899aabbccddeeff");
        let fresh = KeyId::new_random();
        assert_eq!(KeyId::parse(fresh.as_str()).unwrap(), fresh);
    }

    #[test]
    fn strict_format() {
        for bad in [
            "",
            "k-",
            "00112233445566778899aabbccddeeff",
            "K-00112233445566778899aabbccddeeff",
            "k-00112233445566778899AABBCCDDEEFF",
            "k-00112233-4455-6677-8899-aabbccddeeff",
            "k-00112233445566778899aabbccddeef",
            "k-00112233445566778899aabbccddeeff0",
            "k-00112233445566778899aabbccddeefg",
            " k-00112233445566778899aabbccddeeff",
        ] {
            assert!(
                matches!(KeyId::parse(bad), Err(HierarchyError::KeyIdFormat { .. })),
                "{bad:?}"
            );
        }
    }
}
