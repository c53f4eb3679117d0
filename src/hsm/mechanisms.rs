//! Every mechanism number hkms uses, in one place, including those `cryptoki` has no name for
//! (`CKM_AES_ECB_ENCRYPT_DATA`, `CKM_DES3_ECB_ENCRYPT_DATA`), and the per-usage lists written into
//! `CKA_ALLOWED_MECHANISMS`.

use cryptoki::object::{Attribute, AttributeType};

use crate::hierarchy::{Algorithm, Usage};

/// A PKCS#11 mechanism number (`CKM_*`). hkms names mechanisms by the standard's numbers,
/// whatever implements the token; this is `cryptoki-sys`'s `CK_MECHANISM_TYPE` under a name
/// that does not need it.
pub type MechanismNumber = std::ffi::c_ulong;

// The same type as `CK_MECHANISM_TYPE`: this fails to compile if the two ever differ.
const _: fn(cryptoki_sys::CK_MECHANISM_TYPE) -> MechanismNumber = |m| m;

/// PBOC-style diversification for the AES family: `child = AES-ECB_parent(D || ~D)`.
pub const AES_ECB_ENCRYPT_DATA: MechanismNumber = cryptoki_sys::CKM_AES_ECB_ENCRYPT_DATA;
/// Diversification for the 3DES family: `child = 3DES-ECB_parent(D || ~D)`, target `CKK_DES2`.
pub const DES3_ECB_ENCRYPT_DATA: MechanismNumber = cryptoki_sys::CKM_DES3_ECB_ENCRYPT_DATA;
/// AES-CMAC, used for the KCV of AES keys.
pub const AES_CMAC: MechanismNumber = cryptoki_sys::CKM_AES_CMAC;
/// AES-CMAC with a chosen MAC length.
pub const AES_CMAC_GENERAL: MechanismNumber = cryptoki_sys::CKM_AES_CMAC_GENERAL;
/// 3DES-CMAC, used for the KCV of 3DES keys.
pub const DES3_CMAC: MechanismNumber = cryptoki_sys::CKM_DES3_CMAC;
/// AES key generation.
pub const AES_KEY_GEN: MechanismNumber = cryptoki_sys::CKM_AES_KEY_GEN;
/// Double-length 3DES key generation.
pub const DES2_KEY_GEN: MechanismNumber = cryptoki_sys::CKM_DES2_KEY_GEN;
/// AES-CBC with PKCS#7 padding (data encryption keys).
pub const AES_CBC_PAD: MechanismNumber = cryptoki_sys::CKM_AES_CBC_PAD;
/// AES-GCM (data encryption keys).
pub const AES_GCM: MechanismNumber = cryptoki_sys::CKM_AES_GCM;
/// RFC 5649 padded key wrap, as SoftHSM2 numbers it (`CKM_AES_KEY_WRAP_PAD`).
pub const AES_KEY_WRAP_PAD: MechanismNumber = cryptoki_sys::CKM_AES_KEY_WRAP_PAD;
/// RFC 5649 padded key wrap, as PKCS#11 3.0 tokens such as Kryoptic number it.
pub const AES_KEY_WRAP_KWP: MechanismNumber = cryptoki_sys::CKM_AES_KEY_WRAP_KWP;
/// HMAC-SHA-256: the MAC of ID numbers in card service records (`hsm::id_mac`).
pub const SHA256_HMAC: MechanismNumber = cryptoki_sys::CKM_SHA256_HMAC;
/// Generation of a generic secret (`CKK_GENERIC_SECRET`): the ID MAC key.
pub const GENERIC_SECRET_KEY_GEN: MechanismNumber = cryptoki_sys::CKM_GENERIC_SECRET_KEY_GEN;

/// The derive mechanism of an algorithm's diversification family.
pub fn derive_mechanism(algorithm: Algorithm) -> MechanismNumber {
    match algorithm {
        Algorithm::Aes128 | Algorithm::Aes256 => AES_ECB_ENCRYPT_DATA,
        Algorithm::Des2 => DES3_ECB_ENCRYPT_DATA,
    }
}

/// The mechanisms a key may ever be used with. Every key may compute its own KCV (a CMAC over
/// zeros); a derive parent may do nothing else, so that no MAC or encrypt mechanism can turn
/// `D || ~D` into the child in clear.
pub fn allowed_mechanisms(algorithm: Algorithm, usage: Usage) -> Vec<MechanismNumber> {
    let cmac = match algorithm {
        Algorithm::Aes128 | Algorithm::Aes256 => AES_CMAC,
        Algorithm::Des2 => DES3_CMAC,
    };
    match usage {
        Usage::Derive => vec![derive_mechanism(algorithm), cmac],
        Usage::Encrypt => match algorithm {
            Algorithm::Aes128 | Algorithm::Aes256 => vec![AES_CBC_PAD, AES_GCM, cmac],
            Algorithm::Des2 => vec![cryptoki_sys::CKM_DES3_CBC_PAD, cmac],
        },
        Usage::Mac => match algorithm {
            Algorithm::Aes128 | Algorithm::Aes256 => vec![AES_CMAC, AES_CMAC_GENERAL],
            Algorithm::Des2 => vec![DES3_CMAC, cryptoki_sys::CKM_DES3_CMAC_GENERAL],
        },
    }
}

/// The mechanisms a derive parent may carry in `CKA_ALLOWED_MECHANISMS` without breaking the
/// "no child in clear" rule; the attribute audit checks parents against it.
pub fn safe_for_derive_parent(mechanism: MechanismNumber) -> bool {
    // Key wrap is listed for transport keys, which derive their package MAC key: wrapping
    // outputs only wrapped keys, and such keys have no CKA_ENCRYPT to misuse it for data.
    matches!(
        mechanism,
        AES_ECB_ENCRYPT_DATA
            | DES3_ECB_ENCRYPT_DATA
            | AES_CMAC
            | DES3_CMAC
            | AES_KEY_WRAP_PAD
            | AES_KEY_WRAP_KWP
    )
}

/// `CKA_ALLOWED_MECHANISMS` as an attribute. `cryptoki` can only express mechanisms it knows,
/// and it knows neither `*_ECB_ENCRYPT_DATA`, so the attribute is passed through its raw form.
pub fn allowed_mechanisms_attribute(mechanisms: &[MechanismNumber]) -> Attribute {
    let bytes = mechanisms.iter().flat_map(|m| m.to_ne_bytes()).collect();
    Attribute::VendorDefined((
        AttributeType::VendorDefined(cryptoki_sys::CKA_ALLOWED_MECHANISMS),
        bytes,
    ))
}

/// Parses the raw value of `CKA_ALLOWED_MECHANISMS`.
pub fn parse_allowed_mechanisms(bytes: &[u8]) -> Vec<MechanismNumber> {
    const W: usize = std::mem::size_of::<MechanismNumber>();
    bytes
        .chunks_exact(W)
        .filter_map(|c| <[u8; W]>::try_from(c).ok())
        .map(MechanismNumber::from_ne_bytes)
        .collect()
}

/// A fixed name for a mechanism as a metrics label; mechanisms hkms does not use are `other`,
/// so that the label set stays small.
pub fn metric_label(mechanism: MechanismNumber) -> &'static str {
    match mechanism {
        AES_ECB_ENCRYPT_DATA => "CKM_AES_ECB_ENCRYPT_DATA",
        DES3_ECB_ENCRYPT_DATA => "CKM_DES3_ECB_ENCRYPT_DATA",
        AES_CMAC => "CKM_AES_CMAC",
        AES_CMAC_GENERAL => "CKM_AES_CMAC_GENERAL",
        DES3_CMAC => "CKM_DES3_CMAC",
        AES_KEY_GEN => "CKM_AES_KEY_GEN",
        DES2_KEY_GEN => "CKM_DES2_KEY_GEN",
        AES_KEY_WRAP_PAD => "CKM_AES_KEY_WRAP_PAD",
        AES_KEY_WRAP_KWP => "CKM_AES_KEY_WRAP_KWP",
        SHA256_HMAC => "CKM_SHA256_HMAC",
        GENERIC_SECRET_KEY_GEN => "CKM_GENERIC_SECRET_KEY_GEN",
        cryptoki_sys::CKM_AES_ECB => "CKM_AES_ECB",
        cryptoki_sys::CKM_AES_CBC => "CKM_AES_CBC",
        cryptoki_sys::CKM_ECDSA => "CKM_ECDSA",
        cryptoki_sys::CKM_EC_KEY_PAIR_GEN => "CKM_EC_KEY_PAIR_GEN",
        cryptoki_sys::CKM_RSA_PKCS_KEY_PAIR_GEN => "CKM_RSA_PKCS_KEY_PAIR_GEN",
        cryptoki_sys::CKM_RSA_PKCS_OAEP => "CKM_RSA_PKCS_OAEP",
        _ => "other",
    }
}

/// A readable name for a mechanism number, for messages and reports.
pub fn mechanism_name(mechanism: MechanismNumber) -> String {
    let known = [
        (AES_ECB_ENCRYPT_DATA, "CKM_AES_ECB_ENCRYPT_DATA"),
        (DES3_ECB_ENCRYPT_DATA, "CKM_DES3_ECB_ENCRYPT_DATA"),
        (AES_CMAC, "CKM_AES_CMAC"),
        (AES_CMAC_GENERAL, "CKM_AES_CMAC_GENERAL"),
        (DES3_CMAC, "CKM_DES3_CMAC"),
        (AES_KEY_GEN, "CKM_AES_KEY_GEN"),
        (DES2_KEY_GEN, "CKM_DES2_KEY_GEN"),
        (AES_CBC_PAD, "CKM_AES_CBC_PAD"),
        (AES_GCM, "CKM_AES_GCM"),
        (AES_KEY_WRAP_PAD, "CKM_AES_KEY_WRAP_PAD"),
        (AES_KEY_WRAP_KWP, "CKM_AES_KEY_WRAP_KWP"),
        (SHA256_HMAC, "CKM_SHA256_HMAC"),
        (GENERIC_SECRET_KEY_GEN, "CKM_GENERIC_SECRET_KEY_GEN"),
    ];
    known
        .iter()
        .find(|(m, _)| *m == mechanism)
        .map(|(_, n)| (*n).to_string())
        .unwrap_or_else(|| format!("mechanism {mechanism:#x}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derive_parents_may_only_derive_and_compute_their_kcv() {
        for alg in [Algorithm::Aes128, Algorithm::Aes256, Algorithm::Des2] {
            let list = allowed_mechanisms(alg, Usage::Derive);
            assert!(list.iter().all(|m| safe_for_derive_parent(*m)), "{alg:?}");
            assert!(list.contains(&derive_mechanism(alg)));
        }
    }

    #[test]
    fn allowed_mechanisms_round_trip_through_raw_bytes() {
        let list = allowed_mechanisms(Algorithm::Aes128, Usage::Encrypt);
        let Attribute::VendorDefined((_, bytes)) = allowed_mechanisms_attribute(&list) else {
            panic!("wrong attribute kind");
        };
        assert_eq!(parse_allowed_mechanisms(&bytes), list);
    }
}
