//! A card's application serial number: 16 hex digits, the factor of the card's keys.

use std::fmt;

use super::{Factor, HierarchyError};

/// A card's serial number, as 16 upper-case hex digits, with the factor it gives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CardSerial {
    text: String,
    factor: Factor,
}

impl CardSerial {
    /// Reads 16 hex digits (either case).
    pub fn parse(text: &str) -> Result<CardSerial, HierarchyError> {
        Ok(CardSerial {
            factor: Factor::from_card_serial(text)?,
            text: text.to_ascii_uppercase(),
        })
    }

    /// The serial as 16 upper-case hex digits.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The diversification factor of the card's keys.
    pub fn factor(&self) -> Factor {
        self.factor
    }
}

impl fmt::Display for CardSerial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_serial_is_16_hex_digits_kept_upper_case() {
        let s = CardSerial::parse("0123456789abcdef").unwrap();
        assert_eq!(s.as_str(), "0123456789ABCDEF");
        assert_eq!(
            s.factor(),
            Factor::from_card_serial("0123456789ABCDEF").unwrap()
        );
        for bad in ["", "0123", "0123456789abcdeg", "0123456789abcdef0"] {
            assert!(CardSerial::parse(bad).is_err(), "{bad}");
        }
    }
}
