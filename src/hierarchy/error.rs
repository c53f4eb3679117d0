//! Errors of the hierarchy module: bad codes, bad policy text, illegal state changes.

use thiserror::Error;

/// Everything that can be wrong with a tier, region, factor, key type, key id or key state.
///
/// Each message says what was wrong and what the caller should do instead.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HierarchyError {
    /// A tier name that is not `national`, `provincial` or `municipal`.
    #[error("unknown tier \"{input}\"; use one of: national, provincial, municipal")]
    UnknownTier {
        /// The text that was given.
        input: String,
    },

    /// A region code that is not six ASCII digits, or otherwise malformed.
    #[error("region code \"{input}\" is invalid: {reason}")]
    RegionFormat {
        /// The text that was given.
        input: String,
        /// What is wrong with it and how to fix it.
        reason: String,
    },

    /// A region code whose first two digits are not a GB/T 2260 province-level code.
    #[error(
        "region code \"{input}\" names province {province}, which is not a GB/T 2260 \
         province-level code; use a real province (11-15, 21-23, 31-37, 41-46, 50-54, 61-65, 71, 81, 82)"
    )]
    UnknownProvince {
        /// The text that was given.
        input: String,
        /// The two-digit province part.
        province: String,
    },

    /// A county-level code (last two digits not `00`).
    #[error(
        "region code \"{input}\" is a county-level code; the programme has no county tier, \
         use the municipal code (last two digits 00)"
    )]
    CountyLevel {
        /// The text that was given.
        input: String,
    },

    /// A card serial number that is not 16 hex digits.
    #[error(
        "card serial \"{input}\" is invalid: {reason}; give the card's 16-hex-digit application serial number"
    )]
    CardSerial {
        /// The text that was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A stored diversification factor that is not 16 hex digits.
    #[error("diversification factor \"{input}\" is invalid: {reason}; a factor is 16 hex digits")]
    FactorHex {
        /// The text that was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// An algorithm name hkms does not know.
    #[error("unknown algorithm \"{input}\"; use one of: aes128, aes256, des2")]
    UnknownAlgorithm {
        /// The text that was given.
        input: String,
    },

    /// A diversification family name hkms does not know.
    #[error("unknown diversification family \"{input}\"; use one of: aes-ecb, des3-ecb")]
    UnknownFamily {
        /// The text that was given.
        input: String,
    },

    /// A KCV method name hkms does not know.
    #[error("unknown KCV method \"{input}\"; use one of: aes-cmac, des3-cmac, des3-ecb")]
    UnknownKcvMethod {
        /// The text that was given.
        input: String,
    },

    /// A KCV that is not 6 hex digits.
    #[error("KCV \"{input}\" is invalid: {reason}; a KCV is 3 bytes written as 6 hex digits")]
    KcvHex {
        /// The text that was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A usage name hkms does not know.
    #[error("unknown key usage \"{input}\"; use one of: derive, encrypt, mac")]
    UnknownUsage {
        /// The text that was given.
        input: String,
    },

    /// A key type name that breaks the naming rule.
    #[error(
        "key type name \"{input}\" is invalid: {reason}; a name is 1-40 characters of \
         lowercase letters, digits and '-', starting with a letter"
    )]
    KeyTypeName {
        /// The text that was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The policy text is not valid TOML or does not have the expected shape.
    #[error("{origin}{}: {message}", line_suffix(*line))]
    PolicySyntax {
        /// The file (or other source) the text came from.
        origin: String,
        /// The 1-based line of the problem, when the parser knows it.
        line: Option<usize>,
        /// The parser's message plus a hint.
        message: String,
    },

    /// A key type declaration that parses but breaks a rule of the catalogue.
    #[error("{origin}{}: key type \"{key_type}\": {reason}", line_suffix(*line))]
    PolicyRule {
        /// The file (or other source) the text came from.
        origin: String,
        /// The 1-based line of the declaration, when known.
        line: Option<usize>,
        /// The key type whose declaration is wrong.
        key_type: String,
        /// Which rule it breaks and how to fix it.
        reason: String,
    },

    /// A key id that is not `k-` followed by 32 lowercase hex digits.
    #[error(
        "key id \"{input}\" is invalid: {reason}; a key id is \"k-\" followed by 32 lowercase hex digits"
    )]
    KeyIdFormat {
        /// The text that was given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A key state name hkms does not know.
    #[error(
        "unknown key state \"{input}\"; use one of: pre-active, active, suspended, retired, destroyed"
    )]
    UnknownKeyState {
        /// The text that was given.
        input: String,
    },

    /// A lifecycle change that SP 800-57 does not allow.
    #[error("key is {from}; a {from} key cannot become {to} (SP 800-57 allows: {allowed})")]
    IllegalTransition {
        /// The current state.
        from: String,
        /// The requested state.
        to: String,
        /// The states that are reachable from `from`, or a note that none are.
        allowed: String,
    },
}

fn line_suffix(line: Option<usize>) -> String {
    match line {
        Some(n) => format!(" line {n}"),
        None => String::new(),
    }
}
