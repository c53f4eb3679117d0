//! Key templates, written once and checked against docs/design.md §3.5:
//! every secret key is sensitive; a derive parent has no encrypt/decrypt; a key that may be
//! exported is extractable only together with `CKA_WRAP_WITH_TRUSTED`; every other key is
//! not extractable. `CKA_ALLOWED_MECHANISMS` narrows each key to its usage plus its own KCV.

use cryptoki::object::{Attribute, KeyType, ObjectClass};

use cryptoki_sys::CK_SESSION_HANDLE;

use super::mechanisms::{allowed_mechanisms, allowed_mechanisms_attribute};
use super::raw::{NestedTemplate, RawModule};
use crate::hierarchy::{Algorithm, Usage};

/// Whether a key lives on the token or only as long as the session that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// A held key (`CKA_TOKEN=true`).
    Token,
    /// A transient key, destroyed right after use (card keys).
    Session,
}

/// What hkms asks the token to create. The template is derived from it; callers never build
/// attribute lists themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretKeySpec {
    /// Algorithm and length.
    pub algorithm: Algorithm,
    /// The one usage of the key.
    pub usage: Usage,
    /// May be wrapped for transport (only by a trusted transport key).
    pub exportable: bool,
    /// `CKA_LABEL`, unique on the token.
    pub label: String,
    /// `CKA_ID`.
    pub id: Vec<u8>,
    /// Token or session object.
    pub lifetime: Lifetime,
}

/// The attribute list for `C_GenerateKey`, `C_DeriveKey`, `C_UnwrapKey` or `C_CreateObject` of
/// a secret key. It ends with `CKA_MODIFIABLE=false`: no session can widen the key's usage
/// afterwards (see [`sealed`]).
pub fn secret_key_template(spec: &SecretKeySpec) -> Vec<Attribute> {
    let derive = spec.usage == Usage::Derive;
    let encrypt = spec.usage == Usage::Encrypt;
    let mut attrs = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type(spec.algorithm)),
        Attribute::Token(spec.lifetime == Lifetime::Token),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(spec.exportable),
        Attribute::WrapWithTrusted(true),
        Attribute::Derive(derive),
        Attribute::Encrypt(encrypt),
        Attribute::Decrypt(encrypt),
        // Every key signs, restricted by CKA_ALLOWED_MECHANISMS to CMAC: that is its KCV.
        Attribute::Sign(true),
        Attribute::Verify(spec.usage == Usage::Mac),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Label(spec.label.as_bytes().to_vec()),
        Attribute::Id(spec.id.clone()),
        allowed_mechanisms_attribute(&allowed_mechanisms(spec.algorithm, spec.usage)),
    ];
    if let Some(len) = value_len(spec.algorithm) {
        attrs.push(Attribute::ValueLen(len.into()));
    }
    sealed(attrs)
}

/// What every key derived from an hkms derive key is, whatever it is for (a sub-key, a card
/// key, a package MAC key): sensitive, wrappable only under a trusted key, never a wrapping
/// key, unchangeable. As a parent's `CKA_DERIVE_TEMPLATE`, on a token that applies it, it
/// stops a user-PIN holder from deriving a child in clear (see `probe.rs`).
pub(crate) fn children_template() -> NestedTemplate {
    NestedTemplate {
        kind: cryptoki_sys::CKA_DERIVE_TEMPLATE,
        attributes: vec![
            Attribute::Sensitive(true),
            Attribute::WrapWithTrusted(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Modifiable(false),
        ],
    }
}

/// Whether the token takes a `CKA_DERIVE_TEMPLATE` in a key's template: tried on a throw-away
/// session key in `session`, destroyed at once. SoftHSM2 leaves an empty session object behind
/// a refused one: the caller closes `session` afterwards.
pub(crate) fn accepts_derive_template(raw: &RawModule, session: CK_SESSION_HANDLE) -> bool {
    let made = raw.generate_key(
        session,
        cryptoki_sys::CKM_AES_KEY_GEN,
        &[
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Derive(true),
            Attribute::ValueLen(16.into()),
        ],
        &[children_template()],
    );
    match made {
        Ok(key) => {
            let _ = raw.destroy_object(session, key);
            true
        }
        Err(_) => false,
    }
}

/// `attrs` with `CKA_COPYABLE=false` and, last, `CKA_MODIFIABLE=false`: whatever the token, a
/// key made modifiable could be given back the usages hkms left out, and a copy with other
/// attributes is the same (Kryoptic 1.5.4 ignores `CKA_MODIFIABLE` in `C_CopyObject`).
/// Modifiable last, because SoftHSM2 applies a derive or unwrap template in order and refuses
/// every attribute that comes after it.
pub fn sealed(mut attrs: Vec<Attribute>) -> Vec<Attribute> {
    attrs.retain(|a| !matches!(a, Attribute::Modifiable(_) | Attribute::Copyable(_)));
    attrs.push(Attribute::Copyable(false));
    attrs.push(Attribute::Modifiable(false));
    attrs
}

/// The template of a card's key, derived from a city's `pin-unblock` or `pin-reload` key with
/// the card's serial: always a session object, destroyed right after use. For a window's
/// command it can only encrypt (AES-ECB for the PIN block, AES-CBC for the MAC) and never
/// leave; for personalisation it may leave only wrapped by a trusted transport key (the
/// bureau's) and signs only its own KCV.
pub fn card_key_template(label: &str, for_export: bool) -> Vec<Attribute> {
    let allowed: &[cryptoki_sys::CK_MECHANISM_TYPE] = if for_export {
        &[super::mechanisms::AES_CMAC]
    } else {
        &[cryptoki_sys::CKM_AES_ECB, cryptoki_sys::CKM_AES_CBC]
    };
    sealed(vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::ValueLen(16.into()),
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(for_export),
        Attribute::WrapWithTrusted(true),
        Attribute::Derive(false),
        Attribute::Encrypt(!for_export),
        Attribute::Decrypt(false),
        Attribute::Sign(for_export),
        Attribute::Verify(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Label(label.as_bytes().to_vec()),
        allowed_mechanisms_attribute(allowed),
    ])
}

/// DER of the named curve P-256 (secp256r1, OID 1.2.840.10045.3.1.7) for `CKA_EC_PARAMS`.
pub const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Templates of the ECDSA P-256 key pair that signs the ceremony log's checkpoints: the private
/// half signs only, never leaves the token, and cannot be changed; the public half is exported
/// so that auditors can verify without any secret.
pub fn audit_signing_templates(label: &str, id: &[u8]) -> (Vec<Attribute>, Vec<Attribute>) {
    // Private and fixed: a public object may be destroyed or changed by any session of the
    // token, and a sealed node refuses to start without this key (the node reads it logged
    // in; auditors get it from GetPublicKey).
    let public = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Modifiable(false),
        Attribute::Verify(true),
        Attribute::EcParams(P256_PARAMS.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    let private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Derive(false),
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Modifiable(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    (public, private)
}

/// `CKA_LABEL` of the ID MAC key, one of the node's fixed objects (`hsm::id_mac`).
pub const ID_MAC_LABEL: &str = "hkms/id-mac";

/// Length of the ID MAC key in bytes: HMAC-SHA-256's block-size-independent strength is its
/// output length, and SoftHSM2 refuses HMAC-SHA-256 keys shorter than that.
pub const ID_MAC_KEY_LEN: u64 = 32;

/// The template of the ID MAC key (`hsm::id_mac`): a generic secret made in the token that can
/// compute HMAC-SHA-256 and nothing else. Whoever could read it, or verify, encrypt, derive or
/// wrap with it, could test the ~10^11 possible ID numbers against the log offline; so it is
/// sensitive, never extractable, signs only with `CKM_SHA256_HMAC`, and cannot be changed.
pub fn id_mac_template(label: &str) -> Vec<Attribute> {
    mac_only_key_template(
        KeyType::GENERIC_SECRET,
        ID_MAC_KEY_LEN,
        label,
        label.as_bytes(),
        super::mechanisms::SHA256_HMAC,
    )
}

/// A private token key that computes MACs with `mechanism` and does nothing else: no verify,
/// encrypt, decrypt, derive, wrap or unwrap; sensitive and never extractable (and wrappable
/// only under a trusted key, should that ever be got around), and never modifiable. The ID MAC
/// key and a card's package MAC key.
pub fn mac_only_key_template(
    key_type: KeyType,
    len: u64,
    label: &str,
    id: &[u8],
    mechanism: super::mechanisms::MechanismNumber,
) -> Vec<Attribute> {
    sealed(vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::ValueLen(len.into()),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::WrapWithTrusted(true),
        Attribute::Sign(true),
        Attribute::Verify(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Derive(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.to_vec()),
        allowed_mechanisms_attribute(&[mechanism]),
    ])
}

fn key_type(algorithm: Algorithm) -> KeyType {
    match algorithm {
        Algorithm::Aes128 | Algorithm::Aes256 => KeyType::AES,
        Algorithm::Des2 => KeyType::DES2,
    }
}

/// `CKA_VALUE_LEN` where the key type has a variable length (AES); DES2 has a fixed one and
/// SoftHSM2 refuses the attribute for it.
fn value_len(algorithm: Algorithm) -> Option<u64> {
    match algorithm {
        Algorithm::Aes128 | Algorithm::Aes256 => Some(algorithm.key_len() as u64),
        Algorithm::Des2 => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(usage: Usage, exportable: bool) -> SecretKeySpec {
        SecretKeySpec {
            algorithm: Algorithm::Aes128,
            usage,
            exportable,
            label: "hkms/test".into(),
            id: vec![1, 2],
            lifetime: Lifetime::Token,
        }
    }

    fn has(attrs: &[Attribute], want: &Attribute) -> bool {
        attrs.iter().any(|a| a == want)
    }

    #[test]
    fn every_key_is_sensitive() {
        for usage in [Usage::Derive, Usage::Encrypt, Usage::Mac] {
            for exportable in [false, true] {
                let t = secret_key_template(&spec(usage, exportable));
                assert!(has(&t, &Attribute::Sensitive(true)));
            }
        }
    }

    #[test]
    fn derive_parent_cannot_encrypt_or_decrypt() {
        let t = secret_key_template(&spec(Usage::Derive, false));
        assert!(has(&t, &Attribute::Derive(true)));
        assert!(has(&t, &Attribute::Encrypt(false)));
        assert!(has(&t, &Attribute::Decrypt(false)));
    }

    #[test]
    fn exportable_key_is_extractable_only_with_wrap_with_trusted() {
        let t = secret_key_template(&spec(Usage::Derive, true));
        assert!(has(&t, &Attribute::Extractable(true)));
        assert!(has(&t, &Attribute::WrapWithTrusted(true)));
        let t = secret_key_template(&spec(Usage::Derive, false));
        assert!(has(&t, &Attribute::Extractable(false)));
    }

    #[test]
    fn the_id_mac_key_signs_with_hmac_only_and_never_leaves() {
        let t = id_mac_template("hkms/id-mac");
        for want in [
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Modifiable(false),
            Attribute::Private(true),
            Attribute::Token(true),
            Attribute::Sign(true),
            Attribute::Verify(false),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Derive(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
        ] {
            assert!(has(&t, &want), "{want:?}");
        }
        assert!(has(
            &t,
            &allowed_mechanisms_attribute(&[crate::hsm::mechanisms::SHA256_HMAC])
        ));
    }

    #[test]
    fn des2_has_no_value_len() {
        let mut s = spec(Usage::Derive, false);
        s.algorithm = Algorithm::Des2;
        let t = secret_key_template(&s);
        assert!(!t.iter().any(|a| matches!(a, Attribute::ValueLen(_))));
        assert!(has(&t, &Attribute::KeyType(KeyType::DES2)));
    }
    #[test]
    fn aes_keys_state_their_length() {
        let t = secret_key_template(&spec(Usage::Derive, false));
        assert!(has(&t, &Attribute::KeyType(KeyType::AES)));
        assert!(has(&t, &Attribute::ValueLen(16.into())));
        let mut s = spec(Usage::Encrypt, false);
        s.algorithm = Algorithm::Aes256;
        assert!(has(
            &secret_key_template(&s),
            &Attribute::ValueLen(32.into())
        ));
    }

    #[test]
    fn every_held_key_ends_unmodifiable() {
        for usage in [Usage::Derive, Usage::Encrypt, Usage::Mac] {
            let t = secret_key_template(&spec(usage, true));
            assert_eq!(t.last(), Some(&Attribute::Modifiable(false)), "{usage:?}");
            let modifiable = t.iter().filter(|a| matches!(a, Attribute::Modifiable(_)));
            assert_eq!(modifiable.count(), 1);
        }
        let t = id_mac_template(ID_MAC_LABEL);
        assert_eq!(t.last(), Some(&Attribute::Modifiable(false)));
        let t = sealed(vec![Attribute::Modifiable(true), Attribute::Sign(true)]);
        assert_eq!(
            t,
            vec![
                Attribute::Sign(true),
                Attribute::Copyable(false),
                Attribute::Modifiable(false)
            ]
        );
    }

    #[test]
    fn a_window_card_key_only_encrypts_and_never_leaves() {
        let t = card_key_template("card/0011", false);
        for want in [
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(16.into()),
            Attribute::Token(false),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
            Attribute::Derive(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::Label(b"card/0011".to_vec()),
            allowed_mechanisms_attribute(&[cryptoki_sys::CKM_AES_ECB, cryptoki_sys::CKM_AES_CBC]),
        ] {
            assert!(has(&t, &want), "{want:?}");
        }
    }

    #[test]
    fn a_card_key_for_the_bureau_leaves_only_wrapped_and_signs_only_its_kcv() {
        let t = card_key_template("card/0011", true);
        for want in [
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::WrapWithTrusted(true),
            Attribute::Encrypt(false),
            Attribute::Decrypt(false),
            Attribute::Sign(true),
            Attribute::Derive(false),
            allowed_mechanisms_attribute(&[crate::hsm::mechanisms::AES_CMAC]),
        ] {
            assert!(has(&t, &want), "{want:?}");
        }
    }

    #[test]
    fn the_audit_signing_key_signs_only_and_never_leaves_or_changes() {
        let (public, private) = audit_signing_templates("hkms/audit", &[7, 8]);
        for want in [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Modifiable(false),
            Attribute::Verify(true),
            Attribute::EcParams(P256_PARAMS.to_vec()),
            Attribute::Label(b"hkms/audit".to_vec()),
            Attribute::Id(vec![7, 8]),
        ] {
            assert!(has(&public, &want), "public: {want:?}");
        }
        for want in [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Derive(false),
            Attribute::Decrypt(false),
            Attribute::Unwrap(false),
            Attribute::Modifiable(false),
            Attribute::Label(b"hkms/audit".to_vec()),
            Attribute::Id(vec![7, 8]),
        ] {
            assert!(has(&private, &want), "private: {want:?}");
        }
    }
}
