//! The diversification factor `D` of docs/design.md §3 and the data block `D || ~D` sent to the HSM.

use std::fmt;

use super::{HierarchyError, Region};

/// An 8-byte diversification factor.
///
/// Built from a region code (national → provincial → municipal sub-keys) or from a card's
/// application serial number (card keys). Not secret: it may be stored and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Factor([u8; 8]);

impl Factor {
    /// The factor of a region: its six digits packed as BCD, right-aligned, left-padded with
    /// `0x00` (`440100` → `00 00 00 00 00 44 01 00`).
    pub fn from_region(region: &Region) -> Factor {
        let mut out = [0u8; 8];
        let packed = region
            .as_str()
            .as_bytes()
            .chunks_exact(2)
            .map(|pair| pair.iter().fold(0u8, |acc, d| (acc << 4) | (d & 0x0f)));
        for (slot, byte) in out.iter_mut().skip(5).zip(packed) {
            *slot = byte;
        }
        Factor(out)
    }

    /// The factor of a card: its 16-hex-digit application serial number (either case).
    pub fn from_card_serial(serial: &str) -> Result<Factor, HierarchyError> {
        decode16(serial).map_err(|reason| HierarchyError::CardSerial {
            input: serial.to_owned(),
            reason,
        })
    }

    /// Reads back a factor written by [`Factor::to_hex`] (16 hex digits, either case).
    pub fn from_hex(text: &str) -> Result<Factor, HierarchyError> {
        decode16(text).map_err(|reason| HierarchyError::FactorHex {
            input: text.to_owned(),
            reason,
        })
    }

    /// The 8 bytes of `D`.
    pub fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }

    /// `D` as 16 uppercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode_upper(self.0)
    }

    /// `D || ~D`: the 16-byte block the parent key encrypts to produce the child.
    pub fn data_block(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        let bytes = self.0.iter().copied().chain(self.0.iter().map(|b| !b));
        for (slot, byte) in out.iter_mut().zip(bytes) {
            *slot = byte;
        }
        out
    }
}

impl fmt::Display for Factor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Decodes exactly 16 hex digits into 8 bytes, or says what is wrong.
fn decode16(text: &str) -> Result<Factor, String> {
    if text.len() != 16 {
        return Err(format!(
            "it has {} characters, expected 16 hex digits",
            text.chars().count()
        ));
    }
    let mut out = [0u8; 8];
    hex::decode_to_slice(text, &mut out)
        .map_err(|_| "it contains a character that is not a hex digit (0-9, A-F)".to_owned())?;
    Ok(Factor(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex16(s: &str) -> [u8; 16] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    // Vectors from shared/vectors/diversification.json.
    #[test]
    fn province_vector_440000() {
        let f = Factor::from_region(&Region::parse("440000").unwrap());
        assert_eq!(f.to_hex(), "0000000000440000");
        assert_eq!(f.data_block(), hex16("0000000000440000FFFFFFFFFFBBFFFF"));
    }

    #[test]
    fn city_vector_440100() {
        let f = Factor::from_region(&Region::parse("440100").unwrap());
        assert_eq!(f.as_bytes(), &[0, 0, 0, 0, 0, 0x44, 0x01, 0x00]);
        assert_eq!(f.to_hex(), "0000000000440100");
        assert_eq!(f.data_block(), hex16("0000000000440100FFFFFFFFFFBBFEFF"));
    }

    #[test]
    fn card_vector_serial() {
        let f = Factor::from_card_serial("1234567890ABCDEF").unwrap();
        assert_eq!(f.to_hex(), "1234567890ABCDEF");
        assert_eq!(
            Factor::from_card_serial("1234567890abcdef").unwrap(),
            f,
            "lowercase serial gives the same factor"
        );
    }

    #[test]
    fn national_factor_is_zero() {
        assert_eq!(Factor::from_region(&Region::NATIONAL).as_bytes(), &[0u8; 8]);
    }

    #[test]
    fn data_block_is_d_then_every_bit_inverted() {
        let f = Factor::from_card_serial("0123456789ABCDEF").unwrap();
        let block = f.data_block();
        for (d, inv) in block.iter().take(8).zip(block.iter().skip(8)) {
            assert_eq!(d ^ inv, 0xff);
        }
    }

    #[test]
    fn bad_card_serials_are_rejected() {
        for bad in [
            "",
            "1234567890ABCDE",
            "1234567890ABCDEF0",
            "1234567890ABCDEG",
            " 234567890ABCDEF",
            "１234567890ABCD",
        ] {
            assert!(
                matches!(
                    Factor::from_card_serial(bad),
                    Err(HierarchyError::CardSerial { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn hex_round_trip_and_bad_hex() {
        let f = Factor::from_region(&Region::parse("440100").unwrap());
        assert_eq!(Factor::from_hex(&f.to_hex()).unwrap(), f);
        assert!(matches!(
            Factor::from_hex("00"),
            Err(HierarchyError::FactorHex { .. })
        ));
    }
}
