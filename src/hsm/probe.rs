//! The token probe: the known PKCS#11 API attacks (the Clulow and Tookan family) tried, with
//! the node's user login, on throw-away keys made with hkms's own templates. It tells whether
//! the token keeps hkms's promise, key values never in clear, against whoever holds the user
//! PIN (it sits in a file on the node's host): a token that lets any attack through LEAKS.
//!
//! Everything happens in a session of its own, on session objects: closing the session at the
//! end takes every object the probe made with it, whatever went wrong, so the token is left as
//! it was found.

use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki_sys::CK_MECHANISM_TYPE;

use super::raw::NestedTemplate;
use super::templates::{Lifetime, SecretKeySpec, secret_key_template};
use super::{HsmError, Pkcs11Token, mechanisms};
use crate::hierarchy::{Algorithm, Usage};

/// What an attack came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The token stopped it.
    Holds,
    /// A key value came out in clear, or a key gained a use that gives one.
    Leaks,
}

impl Verdict {
    /// `HOLDS` or `LEAKS`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Holds => "HOLDS",
            Verdict::Leaks => "LEAKS",
        }
    }
}

/// One attack and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attack {
    /// A short stable name (`derive-to-clear/CKM_AES_ECB_ENCRYPT_DATA`).
    pub name: String,
    /// What was tried.
    pub tried: String,
    /// What the token did.
    pub token_did: String,
    /// The outcome.
    pub verdict: Verdict,
    /// What stopped it, or why nothing could.
    pub held_by: String,
}

/// Every attack the probe made.
#[derive(Debug, Clone, Default)]
pub struct ProbeReport {
    /// In the order they were made.
    pub attacks: Vec<Attack>,
}

impl ProbeReport {
    /// The attacks that leaked.
    pub fn leaks(&self) -> Vec<&Attack> {
        self.attacks
            .iter()
            .filter(|a| a.verdict == Verdict::Leaks)
            .collect()
    }

    /// Whether every attack held.
    pub fn sealed(&self) -> bool {
        self.leaks().is_empty()
    }
}

/// Derive mechanisms whose parameter is a byte string, tried for derive-to-clear when the
/// token lists them: hkms's own (ECB-encrypt-data) and the ones that combine the parent's
/// value with data (the classic way to read a key a byte at a time).
const STRING_DERIVES: [(CK_MECHANISM_TYPE, &str); 4] = [
    (mechanisms::AES_ECB_ENCRYPT_DATA, "CKM_AES_ECB_ENCRYPT_DATA"),
    (cryptoki_sys::CKM_XOR_BASE_AND_DATA, "CKM_XOR_BASE_AND_DATA"),
    (
        cryptoki_sys::CKM_CONCATENATE_BASE_AND_DATA,
        "CKM_CONCATENATE_BASE_AND_DATA",
    ),
    (
        cryptoki_sys::CKM_CONCATENATE_DATA_AND_BASE,
        "CKM_CONCATENATE_DATA_AND_BASE",
    ),
];

/// What an attacker asks a new key to be: a session key whose value can be read.
fn readable(key_type: KeyType) -> Vec<Attribute> {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(key_type),
        Attribute::Token(false),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
    ]
}

/// A handle the token just returned to the probe's session, for `cryptoki`'s calls.
fn object(handle: cryptoki_sys::CK_OBJECT_HANDLE) -> ObjectHandle {
    // SAFETY: the token made this handle in this session, which the probe alone uses; it is
    // only passed back to that session.
    unsafe { ObjectHandle::new_from_raw(handle) }
}

/// What the token did when a key was wrapped out under the attacker's key.
fn wrapped_out(read: bool) -> String {
    if read {
        "wrapped it, and read it back in clear".into()
    } else {
        "wrapped it (it can leave); the unwrapped copy stayed unreadable".into()
    }
}

/// The `CKR_*` a failed call returned, or its message.
fn refused(e: impl Into<HsmError>) -> String {
    match e.into() {
        HsmError::Pkcs11 { rv, .. } => format!("refused ({rv})"),
        other => format!("refused ({other})"),
    }
}

/// Whether `key`'s value can be read in clear.
fn value_readable(s: &Session, key: ObjectHandle) -> bool {
    matches!(
        s.get_attributes(key, &[AttributeType::Value]).as_deref(),
        Ok([Attribute::Value(v)]) if !v.is_empty()
    )
}

/// The probe's keys and what it needs to make them.
struct Lab<'a> {
    token: &'a Pkcs11Token,
    session: Session,
    tag: String,
}

impl Lab<'_> {
    fn spec(&self, name: &str, usage: Usage, exportable: bool) -> SecretKeySpec {
        SecretKeySpec {
            algorithm: Algorithm::Aes128,
            usage,
            exportable,
            label: format!("hkms/probe/{}/{name}", self.tag),
            id: Vec::new(),
            lifetime: Lifetime::Session,
        }
    }

    /// A session key made by `C_GenerateKey` from `template` (and `nested`).
    fn generate(
        &self,
        template: &[Attribute],
        nested: &[NestedTemplate],
    ) -> Result<ObjectHandle, HsmError> {
        let handle = self.token.inner.raw.generate_key(
            self.session.handle(),
            cryptoki_sys::CKM_AES_KEY_GEN,
            template,
            nested,
        )?;
        self.token.session_object_destroyed();
        Ok(object(handle))
    }

    /// A key as hkms makes it, as a session object.
    fn hkms_key(
        &self,
        name: &str,
        usage: Usage,
        exportable: bool,
    ) -> Result<ObjectHandle, HsmError> {
        self.generate(
            &secret_key_template(&self.spec(name, usage, exportable)),
            &self.token.children_template(usage),
        )
    }

    /// Derive-to-clear with `mechanism` from a derive parent made as hkms makes them.
    fn derive_to_clear(&self, mechanism: CK_MECHANISM_TYPE, name: &str) -> Attack {
        let tried = format!(
            "C_DeriveKey({name}) from a derive key made with hkms's template, into a key with \
             CKA_SENSITIVE=false, CKA_EXTRACTABLE=true; then read CKA_VALUE"
        );
        let attack = |token_did: String, verdict, held_by: &str| Attack {
            name: format!("derive-to-clear/{name}"),
            tried: tried.clone(),
            token_did,
            verdict,
            held_by: held_by.to_string(),
        };
        let parent = match self.hkms_key("derive-parent", Usage::Derive, true) {
            Ok(p) => p,
            Err(e) => {
                return attack(
                    format!("could not make the parent: {e}"),
                    Verdict::Holds,
                    "-",
                );
            }
        };
        let allowed = mechanisms::allowed_mechanisms(Algorithm::Aes128, Usage::Derive);
        let key_type = if mechanism == mechanisms::AES_ECB_ENCRYPT_DATA {
            KeyType::AES
        } else {
            KeyType::GENERIC_SECRET
        };
        let mut template = readable(key_type);
        template.push(Attribute::ValueLen(16.into()));
        let derived = self.token.inner.raw.derive_encrypt_data(
            self.session.handle(),
            mechanism,
            parent.handle(),
            &[0x5a; 16],
            &template,
            &[],
        );
        match derived {
            Err(e) => {
                let held_by = if allowed.contains(&mechanism) {
                    "the token refused the child's template (CKA_DERIVE_TEMPLATE)"
                } else {
                    "CKA_ALLOWED_MECHANISMS of hkms's derive keys"
                };
                attack(refused(e), Verdict::Holds, held_by)
            }
            Ok(child) => {
                let child = object(child);
                self.token.session_object_destroyed();
                if value_readable(&self.session, child) {
                    attack(
                        "derived the key, and its value was read".into(),
                        Verdict::Leaks,
                        "nothing: the token neither enforces CKA_DERIVE_TEMPLATE nor keeps a \
                         derived key as sensitive as its parent",
                    )
                } else {
                    attack(
                        "derived the key, but its value stayed unreadable".into(),
                        Verdict::Holds,
                        "the token kept the child sensitive",
                    )
                }
            }
        }
    }

    /// Unwrap-to-clear under a key made as a loaded transport key is (its unwrap template),
    /// with `CKA_WRAP` added so that the probe can make a package of its own.
    fn unwrap_to_clear(&self, wrap_pad: CK_MECHANISM_TYPE) -> Vec<Attack> {
        let label = format!("hkms/probe/{}/loaded", self.tag);
        let mut template = super::transport::transport_key_template(
            &label,
            "probe",
            wrap_pad,
            super::transport::TransportRole::Recipient,
        );
        for a in template.iter_mut() {
            match a {
                Attribute::Token(_) => *a = Attribute::Token(false),
                Attribute::Wrap(_) => *a = Attribute::Wrap(true),
                _ => {}
            }
        }
        template.insert(template.len() - 1, Attribute::ValueLen(32.into()));
        let mut nested = vec![super::transport::package_key_unwrap_template(
            super::transport::PackageKeys::SubKeys,
        )];
        nested.extend(self.token.children_template(Usage::Derive));
        let tried_base = "C_UnwrapKey under a key made with hkms's template for a loaded \
                          transport key, of a package the probe wrapped under it";
        let setup = (|| -> Result<(cryptoki_sys::CK_OBJECT_HANDLE, Vec<u8>), HsmError> {
            let loaded = self.generate(&template, &nested)?;
            let victim = self.generate(
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Token(false),
                    Attribute::Sensitive(true),
                    Attribute::Extractable(true),
                    Attribute::ValueLen(16.into()),
                ],
                &[],
            )?;
            let wrapped = self.token.inner.raw.wrap_key(
                self.session.handle(),
                wrap_pad,
                loaded.handle(),
                victim.handle(),
            )?;
            Ok((loaded.handle(), wrapped))
        })();
        let (loaded, wrapped) = match setup {
            Ok(made) => made,
            Err(e) => {
                return vec![Attack {
                    name: "unwrap-to-clear".into(),
                    tried: tried_base.into(),
                    token_did: format!("could not set up: {e}"),
                    verdict: Verdict::Holds,
                    held_by: "-".into(),
                }];
            }
        };
        let mut out = Vec::new();
        for (name, extra, what) in [
            (
                "unwrap-to-clear",
                vec![],
                "into a key with CKA_SENSITIVE=false, CKA_EXTRACTABLE=true; then read CKA_VALUE",
            ),
            (
                "unwrap-to-encrypt",
                vec![
                    Attribute::Sensitive(true),
                    Attribute::Extractable(false),
                    Attribute::Encrypt(true),
                ],
                "into a sensitive key with CKA_ENCRYPT=true (a sub-key that encrypts a region's \
                 data block gives that region's key)",
            ),
        ] {
            let mut t = readable(KeyType::AES);
            if !extra.is_empty() {
                t.truncate(3);
                t.extend(extra);
            }
            let tried = format!("{tried_base}, {what}");
            let result = self.token.inner.raw.unwrap_key(
                self.session.handle(),
                &super::raw::plain_mechanism(wrap_pad),
                loaded,
                &wrapped,
                &t,
                &[],
            );
            let (token_did, verdict) = match result {
                Err(e) => (refused(e), Verdict::Holds),
                Ok(h) => {
                    self.token.session_object_destroyed();
                    let h = object(h);
                    if name == "unwrap-to-clear" && !value_readable(&self.session, h) {
                        (
                            "unwrapped, but the value stayed unreadable".into(),
                            Verdict::Holds,
                        )
                    } else {
                        ("unwrapped it as asked".into(), Verdict::Leaks)
                    }
                }
            };
            out.push(Attack {
                name: name.into(),
                tried,
                held_by: if verdict == Verdict::Holds {
                    "CKA_UNWRAP_TEMPLATE of the loaded transport key".into()
                } else {
                    "nothing: the token does not enforce CKA_UNWRAP_TEMPLATE".into()
                },
                token_did,
                verdict,
            });
        }
        out
    }

    /// Wraps an exportable hkms key under an AES key the attacker generates (with `extra` on
    /// top of CKA_WRAP and CKA_UNWRAP), then unwraps the result into a readable key: `Ok(true)`
    /// when its value was read.
    fn wrap_out(
        &self,
        wrap_pad: CK_MECHANISM_TYPE,
        name: &str,
        extra: &[Attribute],
    ) -> Result<bool, HsmError> {
        let victim = self.hkms_key(name, Usage::Derive, true)?;
        let mut template = vec![
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Token(false),
            Attribute::Wrap(true),
            Attribute::Unwrap(true),
            Attribute::ValueLen(32.into()),
        ];
        template.extend_from_slice(extra);
        let own = self.generate(&template, &[])?;
        let wrapped = self.token.inner.raw.wrap_key(
            self.session.handle(),
            wrap_pad,
            own.handle(),
            victim.handle(),
        )?;
        let clear = self.token.inner.raw.unwrap_key(
            self.session.handle(),
            &super::raw::plain_mechanism(wrap_pad),
            own.handle(),
            &wrapped,
            &readable(KeyType::AES),
            &[],
        )?;
        self.token.session_object_destroyed();
        Ok(value_readable(&self.session, object(clear)))
    }

    /// Wraps an exportable hkms key under a key the attacker made, then unwraps it into a
    /// readable one with that same key.
    fn wrap_under_own_key(&self, wrap_pad: CK_MECHANISM_TYPE) -> Attack {
        let tried = "C_WrapKey of an exportable key made with hkms's template under an AES key \
                     the attacker generated (CKA_WRAP, CKA_UNWRAP), then C_UnwrapKey of the \
                     result into a readable key";
        let (token_did, verdict, held_by) = match self.wrap_out(wrap_pad, "exportable", &[]) {
            Ok(read) => (
                wrapped_out(read),
                Verdict::Leaks,
                "nothing: the token does not enforce CKA_WRAP_WITH_TRUSTED",
            ),
            Err(e) => (
                refused(e),
                Verdict::Holds,
                "CKA_WRAP_WITH_TRUSTED: only a key the security officer trusts wraps it",
            ),
        };
        Attack {
            name: "wrap-under-own-key".into(),
            tried: tried.into(),
            token_did,
            verdict,
            held_by: held_by.into(),
        }
    }

    /// Makes a wrapping key the attacker marks `CKA_TRUSTED` (only the security officer may),
    /// wraps an exportable hkms key under it and unwraps it into a readable one.
    fn self_trusted_key(&self, wrap_pad: CK_MECHANISM_TYPE) -> Attack {
        let tried = "C_GenerateKey, as the user, of an AES key with CKA_TRUSTED=true, CKA_WRAP and \
                     CKA_UNWRAP; C_WrapKey of an exportable key made with hkms's template under \
                     it; C_UnwrapKey of the result into a readable key";
        let made = self.wrap_out(wrap_pad, "exportable-trusted", &[Attribute::Trusted(true)]);
        let (token_did, verdict, held_by) = match made {
            Ok(read) => (
                wrapped_out(read),
                Verdict::Leaks,
                "nothing: the token lets the user set CKA_TRUSTED",
            ),
            Err(e) => (
                refused(e),
                Verdict::Holds,
                "only the security officer sets CKA_TRUSTED",
            ),
        };
        Attack {
            name: "self-trusted-key".into(),
            tried: tried.into(),
            token_did,
            verdict,
            held_by: held_by.into(),
        }
    }

    /// Wraps an exportable hkms key with AES-ECB under a key the attacker made able to wrap
    /// and decrypt, then decrypts the result: the wrapped bytes are the key.
    fn wrap_then_decrypt(&self) -> Attack {
        let tried = "C_WrapKey(CKM_AES_ECB) of an exportable key made with hkms's template under \
                     an AES key the attacker generated with CKA_WRAP and CKA_DECRYPT, then \
                     C_Decrypt(CKM_AES_ECB) of the result";
        let result = (|| -> Result<(), HsmError> {
            let victim = self.hkms_key("exportable-ecb", Usage::Derive, true)?;
            let own = self.generate(
                &[
                    Attribute::Class(ObjectClass::SECRET_KEY),
                    Attribute::KeyType(KeyType::AES),
                    Attribute::Token(false),
                    Attribute::Wrap(true),
                    Attribute::Decrypt(true),
                    Attribute::ValueLen(16.into()),
                ],
                &[],
            )?;
            let wrapped = self.token.inner.raw.wrap_key(
                self.session.handle(),
                cryptoki_sys::CKM_AES_ECB,
                own.handle(),
                victim.handle(),
            )?;
            self.session
                .decrypt(&cryptoki::mechanism::Mechanism::AesEcb, own, &wrapped)?;
            Ok(())
        })();
        let (token_did, verdict, held_by) = match result {
            Ok(()) => (
                "wrapped it and decrypted the result".to_string(),
                Verdict::Leaks,
                "nothing: the token does not enforce CKA_WRAP_WITH_TRUSTED",
            ),
            Err(e) => {
                let said = refused(e);
                let held_by = if said.contains("MechanismInvalid") {
                    "the token does not wrap with CKM_AES_ECB"
                } else {
                    "CKA_WRAP_WITH_TRUSTED: only a key the security officer trusts wraps it"
                };
                (said, Verdict::Holds, held_by)
            }
        };
        Attack {
            name: "wrap-then-decrypt".into(),
            tried: tried.into(),
            token_did,
            verdict,
            held_by: held_by.into(),
        }
    }

    /// Every change an attacker could make to a held key, in place and through a copy.
    fn change_attributes(&self) -> Vec<Attack> {
        let key = match self.hkms_key("held", Usage::Derive, false) {
            Ok(k) => k,
            Err(e) => {
                return vec![Attack {
                    name: "set-attribute".into(),
                    tried: "changing a key made with hkms's template".into(),
                    token_did: format!("could not make the key: {e}"),
                    verdict: Verdict::Holds,
                    held_by: "-".into(),
                }];
            }
        };
        let changes = [
            ("CKA_SENSITIVE=false", Attribute::Sensitive(false)),
            ("CKA_EXTRACTABLE=true", Attribute::Extractable(true)),
            ("CKA_ENCRYPT=true", Attribute::Encrypt(true)),
            ("CKA_DECRYPT=true", Attribute::Decrypt(true)),
            ("CKA_WRAP=true", Attribute::Wrap(true)),
            ("CKA_UNWRAP=true", Attribute::Unwrap(true)),
            (
                "CKA_LABEL",
                Attribute::Label(b"hkms/probe/renamed".to_vec()),
            ),
        ];
        let mut out = Vec::new();
        for (how, copy) in [("set-attribute", false), ("copy-object", true)] {
            let mut accepted = Vec::new();
            for (name, change) in &changes {
                let done = if copy {
                    self.session
                        .copy_object(key, std::slice::from_ref(change))
                        .map(|_| self.token.session_object_destroyed())
                } else {
                    self.session
                        .update_attributes(key, std::slice::from_ref(change))
                };
                if done.is_ok() {
                    accepted.push(*name);
                }
            }
            let tried = if copy {
                "C_CopyObject of a key made with hkms's template, the copy given each of \
                 CKA_SENSITIVE=false, CKA_EXTRACTABLE=true, CKA_ENCRYPT, CKA_DECRYPT, CKA_WRAP, \
                 CKA_UNWRAP, another CKA_LABEL"
            } else {
                "C_SetAttributeValue on a key made with hkms's template: CKA_SENSITIVE=false, \
                 CKA_EXTRACTABLE=true, CKA_ENCRYPT, CKA_DECRYPT, CKA_WRAP, CKA_UNWRAP, another \
                 CKA_LABEL, each alone"
            };
            out.push(if accepted.is_empty() {
                Attack {
                    name: how.into(),
                    tried: tried.into(),
                    token_did: "refused every change".into(),
                    verdict: Verdict::Holds,
                    held_by: if copy {
                        "CKA_COPYABLE=false and CKA_MODIFIABLE=false on every key hkms makes"
                    } else {
                        "CKA_MODIFIABLE=false on every key hkms makes"
                    }
                    .into(),
                }
            } else {
                Attack {
                    name: how.into(),
                    tried: tried.into(),
                    token_did: format!("accepted {}", accepted.join(", ")),
                    verdict: Verdict::Leaks,
                    held_by: if copy {
                        "nothing: the token enforces neither CKA_COPYABLE nor CKA_MODIFIABLE in a \
                         copy"
                    } else {
                        "nothing: the token does not enforce CKA_MODIFIABLE"
                    }
                    .into(),
                }
            });
        }
        out.push(if value_readable(&self.session, key) {
            Attack {
                name: "read-value".into(),
                tried: "C_GetAttributeValue(CKA_VALUE) of a key made with hkms's template".into(),
                token_did: "returned the value".into(),
                verdict: Verdict::Leaks,
                held_by: "nothing: the token does not enforce CKA_SENSITIVE".into(),
            }
        } else {
            Attack {
                name: "read-value".into(),
                tried: "C_GetAttributeValue(CKA_VALUE) of a key made with hkms's template".into(),
                token_did: "refused (CKR_ATTRIBUTE_SENSITIVE)".into(),
                verdict: Verdict::Holds,
                held_by: "CKA_SENSITIVE=true".into(),
            }
        });
        out
    }

    /// Destroying or changing a public key sealed as the issuer's transport key is, which any
    /// session may try, logged in or not.
    fn destroy_sealed_public_key(&self) -> Attack {
        let tried = "C_DestroyObject, then C_SetAttributeValue(CKA_UNWRAP=true), on a public \
                     key sealed as hkms seals an issuer's transport key (CKA_DESTROYABLE=false, \
                     CKA_MODIFIABLE=false)";
        let made = self.generate(
            &[
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Token(false),
                Attribute::Private(false),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Wrap(true),
                Attribute::Unwrap(false),
                Attribute::Derive(false),
                Attribute::ValueLen(32.into()),
                Attribute::Destroyable(false),
                Attribute::Modifiable(false),
            ],
            &[],
        );
        let key = match made {
            Ok(k) => k,
            Err(e) => {
                return Attack {
                    name: "destroy-sealed-public-key".into(),
                    tried: tried.into(),
                    token_did: format!("could not make the key: {e}"),
                    verdict: Verdict::Holds,
                    held_by: "-".into(),
                };
            }
        };
        let changed = self
            .session
            .update_attributes(key, &[Attribute::Unwrap(true)])
            .is_ok();
        let destroyed = self.session.destroy_object(key).is_ok();
        let (token_did, verdict, held_by) = match (destroyed, changed) {
            (false, false) => (
                "refused both".to_string(),
                Verdict::Holds,
                "CKA_DESTROYABLE=false and CKA_MODIFIABLE=false",
            ),
            (d, c) => (
                format!(
                    "{}{}",
                    if d { "destroyed it " } else { "" },
                    if c { "changed it" } else { "" }
                ),
                Verdict::Leaks,
                "nothing: the token does not enforce CKA_DESTROYABLE or CKA_MODIFIABLE",
            ),
        };
        Attack {
            name: "destroy-sealed-public-key".into(),
            tried: tried.into(),
            token_did,
            verdict,
            held_by: held_by.into(),
        }
    }
}

impl Pkcs11Token {
    /// Runs every attack on throw-away session keys, in a session of its own that is closed
    /// at the end (taking every object the probe made with it).
    pub fn probe_attacks(&self) -> Result<ProbeReport, HsmError> {
        let slot = *self.inner.recovery.slot()?;
        let session = self.inner.ctx.open_rw_session(slot)?;
        let lab = Lab {
            token: self,
            session,
            tag: uuid::Uuid::new_v4().simple().to_string(),
        };
        let mut report = ProbeReport::default();
        for (mechanism, name) in STRING_DERIVES {
            if self.inner.caps.has(mechanism) {
                report.attacks.push(lab.derive_to_clear(mechanism, name));
            }
        }
        // Every other mechanism the token lists for deriving: tried with a byte-string
        // parameter, which a token may refuse as a wrong parameter before anything else;
        // a derivation that works is found all the same.
        for &mechanism in &self.inner.caps.mechanisms {
            let derives = self
                .inner
                .raw
                .mechanism_info(slot.id(), mechanism)
                .is_ok_and(|info| info.flags & cryptoki_sys::CKF_DERIVE != 0);
            if derives && !STRING_DERIVES.iter().any(|(m, _)| *m == mechanism) {
                let name = mechanisms::mechanism_name(mechanism);
                report.attacks.push(lab.derive_to_clear(mechanism, &name));
            }
        }
        if let Some(wrap_pad) = self.inner.caps.wrap_pad {
            report.attacks.extend(lab.unwrap_to_clear(wrap_pad));
            report.attacks.push(lab.wrap_under_own_key(wrap_pad));
            report.attacks.push(lab.self_trusted_key(wrap_pad));
        }
        report.attacks.push(lab.wrap_then_decrypt());
        report.attacks.extend(lab.change_attributes());
        report.attacks.push(lab.destroy_sealed_public_key());
        // Closing the session destroys its objects, the undestroyable one included.
        drop(lab);
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attack(verdict: Verdict) -> Attack {
        Attack {
            name: "a".into(),
            tried: "t".into(),
            token_did: "d".into(),
            verdict,
            held_by: "h".into(),
        }
    }

    #[test]
    fn a_report_is_sealed_only_when_every_attack_holds() {
        let mut r = ProbeReport {
            attacks: vec![attack(Verdict::Holds), attack(Verdict::Holds)],
        };
        assert!(r.sealed() && r.leaks().is_empty());
        r.attacks.push(attack(Verdict::Leaks));
        assert!(!r.sealed());
        assert_eq!(r.leaks().len(), 1);
        assert_eq!(Verdict::Leaks.as_str(), "LEAKS");
    }
}
