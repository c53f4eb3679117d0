//! What the token can do, read once at start (STYLE.md: one capability record per token,
//! not vendor checks scattered around). Everything here is asked from the token
//! (`C_GetMechanismList`, `C_GetMechanismInfo`); its manufacturer, model and label are kept
//! for messages only, and nothing is decided by them.

use super::HsmError;
use super::mechanisms::{self, MechanismNumber, mechanism_name};
use crate::hierarchy::{Algorithm, Usage};

/// The range of key sizes a token gives for a mechanism (`CK_MECHANISM_INFO`'s
/// `ulMinKeySize` and `ulMaxKeySize`), as the token said it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySizes {
    /// The smallest size.
    pub min: u64,
    /// The largest size.
    pub max: u64,
}

impl KeySizes {
    /// Whether a key of `bytes` bytes is in the range. PKCS#11 counts AES key sizes in bytes,
    /// but some tokens give bits: a minimum of 128 or more is read as bits (no AES key has
    /// 128 bytes).
    pub fn fits_aes(&self, bytes: usize) -> bool {
        let size = if self.min >= 128 {
            bytes as u64 * 8
        } else {
            bytes as u64
        };
        (self.min..=self.max).contains(&size)
    }
}

/// The token's identity and the mechanisms hkms cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Token label (trimmed); for messages and logs only.
    pub label: String,
    /// Token manufacturer (trimmed); for messages only, never to decide anything.
    pub manufacturer: String,
    /// Token model (trimmed); for messages only, never to decide anything.
    pub model: String,
    /// Token serial number (trimmed).
    pub serial: String,
    /// Every mechanism number the slot lists.
    pub mechanisms: Vec<MechanismNumber>,
    /// The RFC 5649 key-wrap mechanism number this token uses, if any.
    pub wrap_pad: Option<MechanismNumber>,
    /// The AES key sizes `CKM_AES_KEY_GEN` generates (`C_GetMechanismInfo`); `None` when the
    /// token lists no AES key generation or would not say.
    pub aes_key_sizes: Option<KeySizes>,
    /// Whether the token takes `CKA_DERIVE_TEMPLATE` in a key's template (SoftHSM2 2.6.1 does
    /// not: `CKR_ATTRIBUTE_TYPE_INVALID`); found by trying at start.
    pub derive_template: bool,
}

impl Capabilities {
    /// Whether the slot lists a mechanism.
    pub fn has(&self, mechanism: MechanismNumber) -> bool {
        self.mechanisms.contains(&mechanism)
    }

    /// Picks the padded key-wrap number the token offers (0x210A or 0x210B).
    pub fn pick_wrap_pad(mechanisms: &[MechanismNumber]) -> Option<MechanismNumber> {
        [mechanisms::AES_KEY_WRAP_PAD, mechanisms::AES_KEY_WRAP_KWP]
            .into_iter()
            .find(|m| mechanisms.contains(m))
    }

    /// The token as messages name it: `"label" (manufacturer model)`.
    pub fn describe(&self) -> String {
        format!("\"{}\" ({} {})", self.label, self.manufacturer, self.model)
    }

    /// The refusal of something this token lacks, naming the token.
    pub fn lacks(&self, what: impl Into<String>) -> HsmError {
        HsmError::TokenLacks {
            token: self.describe(),
            what: what.into(),
        }
    }

    fn require(&self, mechanism: MechanismNumber) -> Result<(), HsmError> {
        if self.has(mechanism) {
            Ok(())
        } else {
            Err(self.lacks(mechanism_name(mechanism)))
        }
    }

    /// Checks that a key of this algorithm and usage can be generated and its KCV computed.
    pub fn require_generate(&self, algorithm: Algorithm, usage: Usage) -> Result<(), HsmError> {
        self.require(match algorithm {
            Algorithm::Aes128 | Algorithm::Aes256 => mechanisms::AES_KEY_GEN,
            Algorithm::Des2 => mechanisms::DES2_KEY_GEN,
        })?;
        if let (Algorithm::Aes128 | Algorithm::Aes256, Some(sizes)) =
            (algorithm, self.aes_key_sizes)
            && !sizes.fits_aes(algorithm.key_len())
        {
            return Err(self.lacks(format!(
                "{}-byte keys with CKM_AES_KEY_GEN (it gives sizes {} to {})",
                algorithm.key_len(),
                sizes.min,
                sizes.max
            )));
        }
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
    /// exclusively (`Pkcs11Token::writing_session`), and the configured sessions serve the rest.
    pub fn session_limit(&self, configured: usize) -> usize {
        configured.max(1)
    }

    /// Checks that keys of this algorithm can be diversified here.
    pub fn require_derive(&self, algorithm: Algorithm) -> Result<(), HsmError> {
        self.require(mechanisms::derive_mechanism(algorithm))
    }

    /// Checks that the token can make and use the ID MAC key (`hsm::id_mac`): a generic
    /// secret generated in the token, and HMAC-SHA-256 with it.
    pub fn require_id_mac(&self) -> Result<(), HsmError> {
        self.require(mechanisms::GENERIC_SECRET_KEY_GEN)?;
        self.require(mechanisms::SHA256_HMAC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(mechanisms: Vec<MechanismNumber>) -> Capabilities {
        Capabilities {
            label: "t".into(),
            manufacturer: "m".into(),
            model: "x".into(),
            serial: "1".into(),
            wrap_pad: Capabilities::pick_wrap_pad(&mechanisms),
            mechanisms,
            aes_key_sizes: None,
            derive_template: false,
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
        let c = caps(vec![]);
        assert_eq!(c.session_limit(4), 4);
        assert_eq!(c.session_limit(0), 1);
    }

    #[test]
    fn no_answer_depends_on_the_token_s_name() {
        let list = vec![
            mechanisms::AES_KEY_GEN,
            mechanisms::AES_CMAC,
            mechanisms::AES_CMAC_GENERAL,
            mechanisms::AES_ECB_ENCRYPT_DATA,
            mechanisms::AES_KEY_WRAP_PAD,
        ];
        let named = |manufacturer: &str, model: &str, label: &str| Capabilities {
            manufacturer: manufacturer.into(),
            model: model.into(),
            label: label.into(),
            ..caps(list.clone())
        };
        let answers = |c: &Capabilities| {
            (
                c.session_limit(4),
                c.wrap_pad,
                c.require_generate(Algorithm::Aes256, Usage::Mac).is_ok(),
                c.require_generate(Algorithm::Des2, Usage::Mac).is_ok(),
                c.require_derive(Algorithm::Aes128).is_ok(),
                c.require_derive(Algorithm::Des2).is_ok(),
            )
        };
        let softhsm = answers(&named("SoftHSM project", "SoftHSM v2", "hkms-dev"));
        assert_eq!(
            softhsm,
            (
                4,
                Some(mechanisms::AES_KEY_WRAP_PAD),
                true,
                false,
                true,
                false
            )
        );
        for (manufacturer, model, label) in [
            ("Kryoptic", "v1", "hkms-dev"),
            ("A vendor", "HSM 9000", "SoftHSM"),
            ("", "", ""),
        ] {
            assert_eq!(
                answers(&named(manufacturer, model, label)),
                softhsm,
                "{manufacturer}"
            );
        }
    }

    #[test]
    fn aes_generation_follows_the_key_sizes_the_token_gives() {
        let list = vec![
            mechanisms::AES_KEY_GEN,
            mechanisms::AES_CMAC,
            mechanisms::AES_CMAC_GENERAL,
        ];
        let with = |sizes| Capabilities {
            aes_key_sizes: sizes,
            ..caps(list.clone())
        };
        // The token would not say: the mechanism list decides alone, as before.
        assert!(
            with(None)
                .require_generate(Algorithm::Aes256, Usage::Mac)
                .is_ok()
        );
        // In bytes, as PKCS#11 counts AES keys, and in bits, as some tokens do.
        for sizes in [
            KeySizes { min: 16, max: 32 },
            KeySizes { min: 128, max: 256 },
        ] {
            let c = with(Some(sizes));
            assert!(
                c.require_generate(Algorithm::Aes128, Usage::Mac).is_ok(),
                "{sizes:?}"
            );
            assert!(
                c.require_generate(Algorithm::Aes256, Usage::Mac).is_ok(),
                "{sizes:?}"
            );
        }
        // A token that makes AES-128 keys only.
        for sizes in [
            KeySizes { min: 16, max: 16 },
            KeySizes { min: 128, max: 128 },
        ] {
            let c = with(Some(sizes));
            assert!(
                c.require_generate(Algorithm::Aes128, Usage::Mac).is_ok(),
                "{sizes:?}"
            );
            let err = c
                .require_generate(Algorithm::Aes256, Usage::Mac)
                .unwrap_err()
                .to_string();
            assert!(err.contains("32-byte keys with CKM_AES_KEY_GEN"), "{err}");
        }
        // The AES range says nothing about 3DES.
        let mut c = with(Some(KeySizes { min: 16, max: 16 }));
        c.mechanisms.extend([
            mechanisms::DES2_KEY_GEN,
            mechanisms::DES3_CMAC,
            cryptoki_sys::CKM_DES3_CMAC_GENERAL,
        ]);
        assert!(c.require_generate(Algorithm::Des2, Usage::Mac).is_ok());
    }

    #[test]
    fn the_id_mac_needs_generic_secret_generation_and_hmac_sha256() {
        let both = caps(vec![
            mechanisms::GENERIC_SECRET_KEY_GEN,
            mechanisms::SHA256_HMAC,
        ]);
        assert!(both.require_id_mac().is_ok());
        let err = caps(vec![mechanisms::GENERIC_SECRET_KEY_GEN])
            .require_id_mac()
            .unwrap_err()
            .to_string();
        assert!(err.contains("CKM_SHA256_HMAC"), "{err}");
        let err = caps(vec![mechanisms::SHA256_HMAC])
            .require_id_mac()
            .unwrap_err()
            .to_string();
        assert!(err.contains("CKM_GENERIC_SECRET_KEY_GEN"), "{err}");
    }

    #[test]
    fn missing_des3_derive_is_reported_by_name() {
        let c = caps(vec![mechanisms::AES_ECB_ENCRYPT_DATA]);
        assert!(c.require_derive(Algorithm::Aes128).is_ok());
        let err = c.require_derive(Algorithm::Des2).unwrap_err().to_string();
        assert!(err.contains("CKM_DES3_ECB_ENCRYPT_DATA"), "{err}");
        assert!(err.contains("token \"t\" (m x)"), "{err}");
    }
}
