//! What the token can do, read once at start (STYLE.md: one capability record per token,
//! not vendor checks scattered around).

use cryptoki_sys::CK_MECHANISM_TYPE;

use super::HsmError;
use super::mechanisms::{self, mechanism_name};
use crate::hierarchy::{Algorithm, Usage};

/// Destroyed session objects between two initialisations of a SoftHSM2 module: at most about
/// 25 MB of its leak (see [`Capabilities::session_object_budget`]).
const DEFAULT_SESSION_OBJECT_BUDGET: u64 = 100_000;

/// The token's identity and the mechanisms hkms cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Token label (trimmed).
    pub label: String,
    /// Token manufacturer (trimmed).
    pub manufacturer: String,
    /// Token model (trimmed).
    pub model: String,
    /// Token serial number (trimmed).
    pub serial: String,
    /// Every mechanism number the slot lists.
    pub mechanisms: Vec<CK_MECHANISM_TYPE>,
    /// The RFC 5649 key-wrap mechanism number this token uses, if any.
    pub wrap_pad: Option<CK_MECHANISM_TYPE>,
}

impl Capabilities {
    /// Whether the slot lists a mechanism.
    pub fn has(&self, mechanism: CK_MECHANISM_TYPE) -> bool {
        self.mechanisms.contains(&mechanism)
    }

    /// Picks the padded key-wrap number the token offers (0x210A or 0x210B).
    pub fn pick_wrap_pad(mechanisms: &[CK_MECHANISM_TYPE]) -> Option<CK_MECHANISM_TYPE> {
        [mechanisms::AES_KEY_WRAP_PAD, mechanisms::AES_KEY_WRAP_KWP]
            .into_iter()
            .find(|m| mechanisms.contains(m))
    }

    fn require(&self, mechanism: CK_MECHANISM_TYPE) -> Result<(), HsmError> {
        if self.has(mechanism) {
            Ok(())
        } else {
            Err(HsmError::Unsupported {
                what: mechanism_name(mechanism),
            })
        }
    }

    /// Checks that a key of this algorithm and usage can be generated and its KCV computed.
    pub fn require_generate(&self, algorithm: Algorithm, usage: Usage) -> Result<(), HsmError> {
        self.require(match algorithm {
            Algorithm::Aes128 | Algorithm::Aes256 => mechanisms::AES_KEY_GEN,
            Algorithm::Des2 => mechanisms::DES2_KEY_GEN,
        })?;
        for m in mechanisms::allowed_mechanisms(algorithm, usage) {
            self.require(m)?;
        }
        Ok(())
    }

    /// How many sessions the node may use at once, given the `sessions` it was configured
    /// with. SoftHSM2 (2.6.1) fails a token-object creation now and then when other calls run
    /// on the token meanwhile (CKR_GENERAL_ERROR, CKR_TEMPLATE_INCONSISTENT,
    /// CKR_KEY_FUNCTION_NOT_PERMITTED on keys that allow the function, and an empty object
    /// left behind; softhsm/SoftHSMv2#573). A creation therefore takes the token lock
    /// exclusively (`Hsm::writing_session`), and the configured sessions serve the rest.
    pub fn session_limit(&self, configured: usize) -> usize {
        configured.max(1)
    }

    /// After how many destroyed session objects (card keys) the module should be initialised
    /// again. SoftHSM2 2.6.1 keeps every destroyed session object in memory until
    /// `C_Finalize` (its `SessionObjectStore::deleteObject` never frees it; fixed upstream
    /// later), about 250 bytes each: a million cards would otherwise cost the node 0.5 GB.
    pub fn session_object_budget(&self) -> Option<u64> {
        self.manufacturer
            .starts_with("SoftHSM")
            .then_some(DEFAULT_SESSION_OBJECT_BUDGET)
    }

    /// Checks that keys of this algorithm can be diversified here.
    pub fn require_derive(&self, algorithm: Algorithm) -> Result<(), HsmError> {
        self.require(mechanisms::derive_mechanism(algorithm))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(mechanisms: Vec<CK_MECHANISM_TYPE>) -> Capabilities {
        Capabilities {
            label: "t".into(),
            manufacturer: "m".into(),
            model: "x".into(),
            serial: "1".into(),
            wrap_pad: Capabilities::pick_wrap_pad(&mechanisms),
            mechanisms,
        }
    }

    #[test]
    fn picks_whichever_wrap_pad_number_the_token_has() {
        assert_eq!(
            caps(vec![mechanisms::AES_KEY_WRAP_KWP]).wrap_pad,
            Some(mechanisms::AES_KEY_WRAP_KWP)
        );
        assert_eq!(caps(vec![]).wrap_pad, None);
    }

    #[test]
    fn sessions_are_as_configured_and_at_least_one() {
        let mut c = caps(vec![]);
        assert_eq!(c.session_limit(4), 4);
        assert_eq!(c.session_limit(0), 1);
        c.manufacturer = "SoftHSM project".into();
        assert_eq!(c.session_limit(4), 4);
    }

    #[test]
    fn missing_des3_derive_is_reported_by_name() {
        let c = caps(vec![mechanisms::AES_ECB_ENCRYPT_DATA]);
        assert!(c.require_derive(Algorithm::Aes128).is_ok());
        let err = c.require_derive(Algorithm::Des2).unwrap_err().to_string();
        assert!(err.contains("CKM_DES3_ECB_ENCRYPT_DATA"), "{err}");
    }
}
