//! A transport key as this node registers it: the card it travels on, the region it serves,
//! and whether this node issued it or loaded it. Pure values; the key itself is in the HSM.

use std::fmt;

use crate::hierarchy::Region;

/// Whether this node made the transport key (onto a card) or received it (from one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransportRole {
    /// Issued by this node onto a card for the card's region (ministry, province).
    Issued,
    /// Loaded from a card into this node's token (province, city).
    Loaded,
}

impl TransportRole {
    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportRole::Issued => "issued",
            TransportRole::Loaded => "loaded",
        }
    }

    /// Reads a stored name.
    pub fn parse(text: &str) -> Option<TransportRole> {
        [TransportRole::Issued, TransportRole::Loaded]
            .into_iter()
            .find(|r| r.as_str() == text)
    }
}

impl fmt::Display for TransportRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transport key this node issued onto a card or loaded from one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportKey {
    /// The card's id, also in the key's label `hkms/transport/<card_id>`.
    pub card_id: String,
    /// The recipient region of the card.
    pub region: Region,
    /// Issued here, or loaded here.
    pub role: TransportRole,
    /// KCV of the transport key (AES-CMAC, 6 hex digits).
    pub kcv: String,
    /// The ceremony that approved issuing it.
    pub ceremony_id: Option<String>,
    /// RFC 3339.
    pub created_at: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_reads_back_from_its_name() {
        for r in [TransportRole::Issued, TransportRole::Loaded] {
            assert_eq!(TransportRole::parse(r.as_str()), Some(r));
        }
        assert_eq!(TransportRole::parse("Issued"), None);
    }

    #[test]
    fn a_role_displays_as_its_stored_name() {
        assert_eq!(TransportRole::Issued.to_string(), "issued");
        assert_eq!(TransportRole::Loaded.to_string(), "loaded");
    }
}
