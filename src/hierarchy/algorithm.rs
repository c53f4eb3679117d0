//! Key algorithms, their diversification family, and key check values (KCV).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::HierarchyError;

/// The algorithm of a key type (docs/design.md §3). AES-128 stands in for SM4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Algorithm {
    /// AES with a 16-byte key.
    #[serde(rename = "aes128")]
    Aes128,
    /// AES with a 32-byte key.
    #[serde(rename = "aes256")]
    Aes256,
    /// Two-key triple DES (legacy cards).
    #[serde(rename = "des2")]
    Des2,
}

impl Algorithm {
    /// All algorithms.
    pub const ALL: [Algorithm; 3] = [Algorithm::Aes128, Algorithm::Aes256, Algorithm::Des2];

    /// The name used in policies, the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Aes128 => "aes128",
            Algorithm::Aes256 => "aes256",
            Algorithm::Des2 => "des2",
        }
    }

    /// Key length in bytes (the `CKA_VALUE_LEN` of a derive template).
    pub fn key_len(self) -> usize {
        match self {
            Algorithm::Aes128 => 16,
            Algorithm::Aes256 => 32,
            Algorithm::Des2 => 16,
        }
    }

    /// How children of a key of this algorithm are diversified.
    pub fn family(self) -> DiversificationFamily {
        match self {
            Algorithm::Aes128 | Algorithm::Aes256 => DiversificationFamily::AesEcb,
            Algorithm::Des2 => DiversificationFamily::Des3Ecb,
        }
    }

    /// The KCV method hkms uses by default for this algorithm (CMAC, X9.24-1:2017).
    pub fn default_kcv_method(self) -> KcvMethod {
        match self {
            Algorithm::Aes128 | Algorithm::Aes256 => KcvMethod::AesCmac,
            Algorithm::Des2 => KcvMethod::Des3Cmac,
        }
    }
}

impl FromStr for Algorithm {
    type Err = HierarchyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| HierarchyError::UnknownAlgorithm {
                input: s.to_owned(),
            })
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The diversification construction of docs/design.md §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DiversificationFamily {
    /// `child = AES-ECB_parent(D || ~D)` (`CKM_AES_ECB_ENCRYPT_DATA`).
    #[serde(rename = "aes-ecb")]
    AesEcb,
    /// `child = 3DES-ECB_parent(D) || 3DES-ECB_parent(~D)` (`CKM_DES3_ECB_ENCRYPT_DATA`).
    #[serde(rename = "des3-ecb")]
    Des3Ecb,
}

impl DiversificationFamily {
    /// The name used in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            DiversificationFamily::AesEcb => "aes-ecb",
            DiversificationFamily::Des3Ecb => "des3-ecb",
        }
    }
}

impl FromStr for DiversificationFamily {
    type Err = HierarchyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            DiversificationFamily::AesEcb,
            DiversificationFamily::Des3Ecb,
        ]
        .into_iter()
        .find(|f| f.as_str() == s)
        .ok_or_else(|| HierarchyError::UnknownFamily {
            input: s.to_owned(),
        })
    }
}

impl fmt::Display for DiversificationFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a KCV was computed; stored beside the value because the value alone is ambiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KcvMethod {
    /// First 3 bytes of AES-CMAC over 16 zero bytes.
    #[serde(rename = "aes-cmac")]
    AesCmac,
    /// First 3 bytes of 3DES-CMAC over 8 zero bytes.
    #[serde(rename = "des3-cmac")]
    Des3Cmac,
    /// First 3 bytes of 3DES-ECB over 8 zero bytes (legacy).
    #[serde(rename = "des3-ecb")]
    Des3Ecb,
}

impl KcvMethod {
    /// All methods.
    pub const ALL: [KcvMethod; 3] = [KcvMethod::AesCmac, KcvMethod::Des3Cmac, KcvMethod::Des3Ecb];

    /// The name used in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            KcvMethod::AesCmac => "aes-cmac",
            KcvMethod::Des3Cmac => "des3-cmac",
            KcvMethod::Des3Ecb => "des3-ecb",
        }
    }
}

impl FromStr for KcvMethod {
    type Err = HierarchyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KcvMethod::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| HierarchyError::UnknownKcvMethod {
                input: s.to_owned(),
            })
    }
}

impl fmt::Display for KcvMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key check value: 3 bytes and the method that produced them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Kcv {
    /// The 3 bytes.
    pub value: [u8; 3],
    /// How they were computed.
    pub method: KcvMethod,
}

impl Kcv {
    /// Reads 6 hex digits (either case) with the method recorded beside them.
    pub fn from_hex(text: &str, method: KcvMethod) -> Result<Kcv, HierarchyError> {
        let bad = |reason: &str| HierarchyError::KcvHex {
            input: text.to_owned(),
            reason: reason.to_owned(),
        };
        if text.len() != 6 {
            return Err(bad("it is not 6 characters long"));
        }
        let mut value = [0u8; 3];
        hex::decode_to_slice(text, &mut value)
            .map_err(|_| bad("it contains a character that is not a hex digit (0-9, A-F)"))?;
        Ok(Kcv { value, method })
    }

    /// The value as 6 uppercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode_upper(self.value)
    }
}

impl fmt::Display for Kcv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.to_hex(), self.method)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_lengths_and_families() {
        assert_eq!(Algorithm::Aes128.key_len(), 16);
        assert_eq!(Algorithm::Aes256.key_len(), 32);
        assert_eq!(Algorithm::Des2.key_len(), 16);
        assert_eq!(Algorithm::Aes128.family(), DiversificationFamily::AesEcb);
        assert_eq!(Algorithm::Aes256.family(), DiversificationFamily::AesEcb);
        assert_eq!(Algorithm::Des2.family(), DiversificationFamily::Des3Ecb);
        for a in Algorithm::ALL {
            assert_eq!(a.as_str().parse::<Algorithm>(), Ok(a));
        }
        assert!("AES128".parse::<Algorithm>().is_err());
        assert!("sm4".parse::<Algorithm>().is_err());
    }

    #[test]
    fn family_and_method_names_round_trip() {
        for f in [
            DiversificationFamily::AesEcb,
            DiversificationFamily::Des3Ecb,
        ] {
            assert_eq!(f.as_str().parse::<DiversificationFamily>(), Ok(f));
        }
        for m in KcvMethod::ALL {
            assert_eq!(m.as_str().parse::<KcvMethod>(), Ok(m));
        }
        assert!("aes-ecb".parse::<KcvMethod>().is_err());
    }

    #[test]
    fn serde_names_match_as_str() {
        #[derive(Deserialize)]
        struct W {
            a: Algorithm,
            f: DiversificationFamily,
            m: KcvMethod,
        }
        let w: W = toml::from_str("a = \"des2\"\nf = \"des3-ecb\"\nm = \"des3-cmac\"").unwrap();
        assert_eq!(
            (w.a, w.f, w.m),
            (
                Algorithm::Des2,
                DiversificationFamily::Des3Ecb,
                KcvMethod::Des3Cmac
            )
        );
    }

    #[test]
    fn kcv_hex_round_trip_uppercase() {
        // Root KCV from shared/vectors/diversification.json.
        let kcv = Kcv::from_hex("53e107", KcvMethod::AesCmac).unwrap();
        assert_eq!(kcv.value, [0x53, 0xE1, 0x07]);
        assert_eq!(kcv.to_hex(), "53E107");
        assert_eq!(kcv.method, KcvMethod::AesCmac);
    }

    #[test]
    fn bad_kcv_hex_is_rejected() {
        for bad in ["", "53E10", "53E1077", "53E10G", " 53E10"] {
            assert!(matches!(
                Kcv::from_hex(bad, KcvMethod::AesCmac),
                Err(HierarchyError::KcvHex { .. })
            ));
        }
    }
}
