//! What hkms knows about one key: its metadata as the registry keeps it, never its bytes (those
//! live only in the HSM). Pure values: the store reads and writes them, the node and the API
//! pass them on.

use super::{Algorithm, Factor, Kcv, KeyId, KeyState, KeyTypeName, Region, Tier};

/// The metadata hkms keeps about one key. Never the key bytes: those live only in the HSM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Random opaque id; also gives the PKCS#11 `CKA_ID`.
    pub id: KeyId,
    /// The key type declared in the policy.
    pub key_type: KeyTypeName,
    /// The key algorithm.
    pub algorithm: Algorithm,
    /// The tier the key belongs to; always `region.tier()`.
    pub tier: Tier,
    /// The region the key belongs to.
    pub region: Region,
    /// The key it was diversified from; `None` for a generated key.
    pub parent_id: Option<KeyId>,
    /// The diversification factor; present exactly when `parent_id` is.
    pub factor: Option<Factor>,
    /// Key check value and its method.
    pub kcv: Kcv,
    /// Version within (key type, region), from 1.
    pub version: u32,
    /// Lifecycle state.
    pub state: KeyState,
    /// The PKCS#11 `CKA_LABEL` of the HSM object.
    pub ck_label: String,
    /// Creation time, RFC 3339 UTC to the second.
    pub created_at: String,
    /// Time of the last change, RFC 3339 UTC to the second.
    pub updated_at: String,
}

impl KeyRecord {
    /// Checks the rules that tie fields together; the error names the broken rule.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.tier != self.region.tier() {
            return Err(format!(
                "tier is {} but region {} is {}",
                self.tier,
                self.region,
                self.region.tier()
            ));
        }
        if self.parent_id.is_some() != self.factor.is_some() {
            return Err(
                "a derived key has both parent_id and factor, a generated key neither".to_owned(),
            );
        }
        if self.version == 0 {
            return Err("version starts at 1".to_owned());
        }
        Ok(())
    }
}

/// Which keys a listing returns (`KeyRegistry::list_keys`); `None` fields match all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFilter {
    /// Only keys of this tier.
    pub tier: Option<Tier>,
    /// Only keys of this region.
    pub region: Option<Region>,
    /// Only keys of this type.
    pub key_type: Option<KeyTypeName>,
    /// Only keys in this state.
    pub state: Option<KeyState>,
}
