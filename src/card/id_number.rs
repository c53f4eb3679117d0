//! ID numbers (the cardholder's, an agent's) as card service records carry them: never in
//! clear, but as a MAC computed in the HSM with a key that never leaves it
//! (docs/card-commands.md §9). This module is pure: it checks an ID number, lays out the bytes
//! the HSM MACs, and computes the salted hash that records made before ID MACs carry.

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::CardError;

/// The record parameter of the cardholder's ID number: hex of its ID MAC.
pub const CARDHOLDER_ID_MAC: &str = "cardholder_id_mac";
/// The record parameter of an agent's ID number: hex of its ID MAC.
pub const AGENT_ID_MAC: &str = "agent_id_mac";
/// The parameter under which records made before ID MACs carry the cardholder's salted hash.
pub const CARDHOLDER_ID_HASH: &str = "cardholder_id_hash";
/// The parameter under which records made before ID MACs carry an agent's salted hash.
pub const AGENT_ID_HASH: &str = "agent_id_hash";

/// What the HSM MACs before the ID number: names the purpose and its version, so that the key
/// could serve another purpose, or this one change its input, without two meanings sharing a MAC.
pub const ID_MAC_CONTEXT: &[u8] = b"hkms-id-number-v1:";

/// Length of the `id-salt` of nodes from before ID MACs.
pub const LEGACY_SALT_LEN: usize = 32;

/// How many bytes of SHA-256 the salted hash of old records kept.
const LEGACY_HASH_LEN: usize = 16;

/// A checked ID number: 1-32 ASCII letters or digits, held in zeroized memory. Its `Debug`
/// shows nothing of it.
pub struct IdNumber(Zeroizing<String>);

impl IdNumber {
    /// Checks an ID number as given; `whose` names it in the error (`cardholder's`, `agent's`),
    /// which never contains the number.
    pub fn parse(given: &str, whose: &'static str) -> Result<IdNumber, CardError> {
        if !(1..=32).contains(&given.len()) || !given.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(CardError::IdNumber(whose));
        }
        Ok(IdNumber(Zeroizing::new(given.to_string())))
    }

    /// The bytes the HSM MACs: [`ID_MAC_CONTEXT`] and the number with its letters in upper
    /// case, so that `44010619900101123x` and `44010619900101123X` (the check digit of a
    /// resident ID, typed either way) are one person. Zeroized on drop.
    pub fn mac_input(&self) -> Zeroizing<Vec<u8>> {
        let mut input = Zeroizing::new(Vec::with_capacity(ID_MAC_CONTEXT.len() + self.0.len()));
        input.extend_from_slice(ID_MAC_CONTEXT);
        input.extend(self.0.bytes().map(|b| b.to_ascii_uppercase()));
        input
    }

    /// The salted hashes records made before ID MACs may carry for this number
    /// (`SHA-256(salt || ID)`, the first 16 bytes in hex): of the number as given, then in upper
    /// and lower case where those differ, since the window typed it as it came.
    pub fn legacy_hashes(&self, salt: &[u8; LEGACY_SALT_LEN]) -> Vec<String> {
        let variants = [
            Zeroizing::new(self.0.to_string()),
            Zeroizing::new(self.0.to_ascii_uppercase()),
            Zeroizing::new(self.0.to_ascii_lowercase()),
        ];
        let mut out: Vec<String> = Vec::with_capacity(variants.len());
        for v in &variants {
            let mut h = Sha256::new();
            h.update(salt);
            h.update(v.as_bytes());
            let hash = hex::encode(&h.finalize()[..LEGACY_HASH_LEN]);
            if !out.contains(&hash) {
                out.push(hash);
            }
        }
        out
    }
}

impl std::fmt::Debug for IdNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdNumber(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_number_is_1_to_32_ascii_letters_or_digits() {
        for good in ["44010619900101123X", "1", &"9".repeat(32), "ab12"] {
            assert!(IdNumber::parse(good, "cardholder's").is_ok(), "{good}");
        }
        for bad in [
            "",
            &"9".repeat(33),
            "4401 0619",
            "440106-1990",
            "４４０",
            "é1",
        ] {
            let err = IdNumber::parse(bad, "agent's").unwrap_err().to_string();
            assert_eq!(err, "the agent's ID number must be 1-32 letters or digits");
        }
    }

    #[test]
    fn the_mac_input_is_the_context_and_the_number_in_upper_case() {
        let lower = IdNumber::parse("44010619900101123x", "cardholder's").unwrap();
        let upper = IdNumber::parse("44010619900101123X", "cardholder's").unwrap();
        assert_eq!(
            lower.mac_input().as_slice(),
            b"hkms-id-number-v1:44010619900101123X"
        );
        assert_eq!(lower.mac_input(), upper.mac_input());
        let other = IdNumber::parse("44010619900101123", "cardholder's").unwrap();
        assert_ne!(other.mac_input(), upper.mac_input());
    }

    #[test]
    fn legacy_hashes_are_the_salted_sha256_old_records_carry() {
        let salt = [7u8; LEGACY_SALT_LEN];
        let id = IdNumber::parse("44010619900101123X", "cardholder's").unwrap();
        // docs/card-commands.md: (cat id-salt; printf %s ID) | sha256sum | cut -c1-32
        let mut h = Sha256::new();
        h.update(salt);
        h.update(b"44010619900101123X");
        let want = hex::encode(&h.finalize()[..16]);
        let got = id.legacy_hashes(&salt);
        assert_eq!(got.first(), Some(&want));
        // Digits and an upper-case letter: as given, and in lower case.
        assert_eq!(got.len(), 2);
        let lower = IdNumber::parse("44010619900101123x", "cardholder's").unwrap();
        assert!(lower.legacy_hashes(&salt).contains(&want));
        let digits = IdNumber::parse("440106199001011234", "cardholder's").unwrap();
        assert_eq!(digits.legacy_hashes(&salt).len(), 1);
    }

    #[test]
    fn debug_shows_nothing_of_the_number() {
        let id = IdNumber::parse("44010619900101123X", "cardholder's").unwrap();
        assert_eq!(format!("{id:?}"), "IdNumber(..)");
    }
}
