//! Card services: the bytes of the PIN UNBLOCK and PIN RELOAD commands that a locked card
//! accepts only with a MAC made from its own diversified key (docs/card-commands.md). This
//! module is pure: it lays out and checks bytes; the HSM encrypts and MACs.

use zeroize::Zeroizing;

mod id_number;

pub use id_number::{
    AGENT_ID_HASH, AGENT_ID_MAC, CARDHOLDER_ID_HASH, CARDHOLDER_ID_MAC, ID_MAC_CONTEXT, IdNumber,
    LEGACY_SALT_LEN,
};

/// AES block size.
pub const BLOCK: usize = 16;
/// Length of the card's GET CHALLENGE answer.
pub const CHALLENGE_LEN: usize = 8;
/// Length of the command MAC.
pub const MAC_LEN: usize = 4;

/// Which command, and so which master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardCommand {
    /// Unblock a locked PIN: carries the cardholder's current PIN; the card checks it and
    /// resets its try counter. Made with the `pin-unblock` key.
    Unblock,
    /// Reset a forgotten PIN: carries the new PIN; the card sets it and resets its try
    /// counter. Made with the `pin-reload` key.
    Reload,
}

impl CardCommand {
    /// The key type whose card key makes this command.
    pub fn key_type(self) -> &'static str {
        match self {
            CardCommand::Unblock => "pin-unblock",
            CardCommand::Reload => "pin-reload",
        }
    }

    /// CLA INS P1 P2 of the command (secure messaging class 0x84).
    pub fn header(self) -> [u8; 4] {
        match self {
            CardCommand::Unblock => [0x84, 0x24, 0x00, 0x00],
            CardCommand::Reload => [0x84, 0x5E, 0x00, 0x00],
        }
    }

    /// The name used in records and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            CardCommand::Unblock => "unblock",
            CardCommand::Reload => "reload",
        }
    }
}

/// Why card input is refused. Messages never contain the PIN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardError {
    /// The card serial is not 16 hex digits.
    #[error("the card serial must be 16 hex digits (the card's application serial number)")]
    Serial,
    /// The challenge is not 8 bytes of hex.
    #[error("the card challenge must be 16 hex digits (the 8 bytes GET CHALLENGE returned)")]
    Challenge,
    /// An ID number is not 1-32 ASCII letters or digits; says whose (`cardholder's`, ...).
    #[error("the {0} ID number must be 1-32 letters or digits")]
    IdNumber(&'static str),
    /// The PIN is not made of digits of an allowed length.
    #[error("the PIN must be {} digits", if min == max { format!("exactly {min}") } else { format!("{min} to {max}") })]
    Pin {
        /// Shortest allowed.
        min: usize,
        /// Longest allowed.
        max: usize,
    },
}

/// Checks a PIN: digits only, `min..=max` long (at most 12, the block's room).
pub fn check_pin(pin: &str, min: usize, max: usize) -> Result<(), CardError> {
    let max = max.min(12);
    if pin.len() < min || pin.len() > max || !pin.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CardError::Pin { min, max });
    }
    Ok(())
}

/// Reads the 8-byte challenge.
pub fn parse_challenge(hex_text: &str) -> Result<[u8; CHALLENGE_LEN], CardError> {
    let mut out = [0u8; CHALLENGE_LEN];
    hex::decode_to_slice(hex_text.trim(), &mut out).map_err(|_| CardError::Challenge)?;
    Ok(out)
}

/// The PIN block: `len || PIN (packed BCD, F-padded) || 80 00..`, one AES block.
pub fn pin_block(pin: &str) -> Zeroizing<[u8; BLOCK]> {
    let mut block = Zeroizing::new([0u8; BLOCK]);
    let digits: Zeroizing<Vec<u8>> =
        Zeroizing::new(pin.bytes().map(|b| b.wrapping_sub(b'0') & 0x0F).collect());
    block[0] = digits.len() as u8;
    let mut at = 1;
    for pair in digits.chunks(2) {
        let hi = pair.first().copied().unwrap_or(0x0F);
        let lo = pair.get(1).copied().unwrap_or(0x0F);
        if let Some(b) = block.get_mut(at) {
            *b = (hi << 4) | lo;
        }
        at += 1;
    }
    if let Some(b) = block.get_mut(at) {
        *b = 0x80;
    }
    block
}

/// Reads a PIN back out of a decrypted PIN block (the card's side; tests use it).
pub fn pin_from_block(block: &[u8; BLOCK]) -> Option<Zeroizing<String>> {
    let len = usize::from(block[0]);
    if !(1..=12).contains(&len) {
        return None;
    }
    let mut pin = Zeroizing::new(String::with_capacity(len));
    for i in 0..len {
        let byte = block.get(1 + i / 2)?;
        let nibble = if i % 2 == 0 { byte >> 4 } else { byte & 0x0F };
        if nibble > 9 {
            return None;
        }
        pin.push(char::from(b'0' + nibble));
    }
    let pad_at = 1 + len.div_ceil(2);
    if len % 2 == 1 && block.get(pad_at - 1).map(|b| b & 0x0F) != Some(0x0F) {
        return None;
    }
    if block.get(pad_at) != Some(&0x80) || block.iter().skip(pad_at + 1).any(|b| *b != 0) {
        return None;
    }
    Some(pin)
}

/// `Lc` of the command: the encrypted PIN block and the MAC.
pub const LC: u8 = (BLOCK + MAC_LEN) as u8;

/// The bytes the MAC covers, padded with `80 00..` to whole blocks: header || Lc || data.
pub fn mac_input(command: CardCommand, encrypted_block: &[u8; BLOCK]) -> Vec<u8> {
    let mut m = Vec::with_capacity(2 * BLOCK + BLOCK);
    m.extend_from_slice(&command.header());
    m.push(LC);
    m.extend_from_slice(encrypted_block);
    m.push(0x80);
    while m.len() % BLOCK != 0 {
        m.push(0x00);
    }
    m
}

/// The CBC-MAC IV: the challenge followed by zeros.
pub fn mac_iv(challenge: &[u8; CHALLENGE_LEN]) -> [u8; BLOCK] {
    let mut iv = [0u8; BLOCK];
    iv[..CHALLENGE_LEN].copy_from_slice(challenge);
    iv
}

/// The complete command APDU: header || Lc || encrypted PIN block || MAC (first 4 bytes of
/// the last CBC block).
pub fn apdu(command: CardCommand, encrypted_block: &[u8; BLOCK], mac: &[u8; MAC_LEN]) -> Vec<u8> {
    let mut a = Vec::with_capacity(5 + usize::from(LC));
    a.extend_from_slice(&command.header());
    a.push(LC);
    a.extend_from_slice(encrypted_block);
    a.extend_from_slice(mac);
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_block_layout() {
        let b = pin_block("123456");
        assert_eq!(
            b.as_slice(),
            &[6, 0x12, 0x34, 0x56, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        let b = pin_block("12345");
        assert_eq!(&b[..5], &[5, 0x12, 0x34, 0x5F, 0x80]);
        assert_eq!(pin_from_block(&b).unwrap().as_str(), "12345");
        assert_eq!(
            pin_from_block(&pin_block("987654321012")).unwrap().as_str(),
            "987654321012"
        );
    }

    #[test]
    fn a_damaged_block_has_no_pin() {
        let mut b = *pin_block("1234");
        b[3] = 0x81;
        assert!(pin_from_block(&b).is_none());
        let mut b = *pin_block("1234");
        b[15] = 1;
        assert!(pin_from_block(&b).is_none());
    }

    #[test]
    fn pins_are_digits_of_allowed_length() {
        assert!(check_pin("123456", 6, 12).is_ok());
        assert!(check_pin("12345", 6, 12).is_err());
        assert!(check_pin("12345a", 6, 12).is_err());
        assert!(check_pin("1234567890123", 6, 20).is_err());
        assert_eq!(
            check_pin("1", 6, 12).unwrap_err().to_string(),
            "the PIN must be 6 to 12 digits"
        );
    }

    #[test]
    fn mac_input_is_header_lc_data_and_padding() {
        let m = mac_input(CardCommand::Unblock, &[0xAA; 16]);
        assert_eq!(m.len(), 32);
        assert_eq!(&m[..5], &[0x84, 0x24, 0x00, 0x00, 0x14]);
        assert_eq!(m[21], 0x80);
        assert!(m[22..].iter().all(|b| *b == 0));
        assert_eq!(apdu(CardCommand::Reload, &[1; 16], &[9; 4]).len(), 25);
    }

    #[test]
    fn challenges_are_8_bytes() {
        assert!(parse_challenge("0011223344556677").is_ok());
        assert!(parse_challenge("00112233").is_err());
        assert!(parse_challenge("zz11223344556677").is_err());
    }
    #[test]
    fn each_command_has_its_own_key_type_header_and_name() {
        assert_eq!(CardCommand::Unblock.key_type(), "pin-unblock");
        assert_eq!(CardCommand::Reload.key_type(), "pin-reload");
        assert_eq!(CardCommand::Unblock.header(), [0x84, 0x24, 0x00, 0x00]);
        assert_eq!(CardCommand::Reload.header(), [0x84, 0x5E, 0x00, 0x00]);
        assert_eq!(CardCommand::Unblock.as_str(), "unblock");
        assert_eq!(CardCommand::Reload.as_str(), "reload");
    }

    #[test]
    fn pin_lengths_are_checked_at_both_ends() {
        assert!(check_pin("1234", 4, 12).is_ok());
        assert!(check_pin("123", 4, 12).is_err());
        assert!(check_pin("123456789012", 4, 12).is_ok());
        assert!(check_pin("1234567890123", 4, 12).is_err());
        assert!(check_pin("123456", 6, 6).is_ok());
        assert!(check_pin("1234567", 6, 6).is_err());
        assert_eq!(
            check_pin("12345", 6, 6).unwrap_err().to_string(),
            "the PIN must be exactly 6 digits"
        );
    }

    #[test]
    fn the_challenge_is_read_as_its_bytes() {
        assert_eq!(
            parse_challenge(" 0011223344556677\n"),
            Ok([0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77])
        );
        assert_eq!(
            parse_challenge("001122334455667788"),
            Err(CardError::Challenge)
        );
    }

    #[test]
    fn the_mac_iv_is_the_challenge_then_zeros() {
        assert_eq!(
            mac_iv(&[1, 2, 3, 4, 5, 6, 7, 8]),
            [1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn the_apdu_is_header_lc_block_and_mac() {
        let a = apdu(CardCommand::Unblock, &[0xAA; 16], &[1, 2, 3, 4]);
        let mut want = vec![0x84, 0x24, 0x00, 0x00, 0x14];
        want.extend_from_slice(&[0xAA; 16]);
        want.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(a, want);
        let m = mac_input(CardCommand::Reload, &[0x55; 16]);
        assert_eq!(&m[..5], &[0x84, 0x5E, 0x00, 0x00, 0x14]);
        assert_eq!(&m[5..21], &[0x55; 16]);
    }

    #[test]
    fn an_odd_pin_needs_its_f_pad_nibble() {
        let mut b = *pin_block("12345");
        assert_eq!(b[3], 0x5F);
        b[3] = 0x50;
        assert!(pin_from_block(&b).is_none());
        let mut b = *pin_block("123");
        b[2] = 0x30;
        assert!(pin_from_block(&b).is_none());
    }
}
