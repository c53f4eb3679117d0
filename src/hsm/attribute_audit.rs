//! The attribute audit: reads every key object on the token and checks the docs/design.md §3.5 rules,
//! so that a key that could leave in clear is found even if something other than hkms made it.

use super::mechanisms::{MechanismNumber, mechanism_name, safe_for_derive_parent};

/// The security-relevant attributes of one key object (`None`: the token did not say).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectFacts {
    /// `CKA_LABEL` (lossy UTF-8).
    pub label: String,
    /// "secret-key" or "private-key".
    pub class: String,
    /// `CKA_TOKEN`.
    pub token: Option<bool>,
    /// `CKA_PRIVATE` (a public object is usable without logging in).
    pub private: Option<bool>,
    /// `CKA_SENSITIVE`.
    pub sensitive: Option<bool>,
    /// `CKA_EXTRACTABLE`.
    pub extractable: Option<bool>,
    /// `CKA_WRAP_WITH_TRUSTED`.
    pub wrap_with_trusted: Option<bool>,
    /// `CKA_TRUSTED`.
    pub trusted: Option<bool>,
    /// `CKA_DERIVE`.
    pub derive: Option<bool>,
    /// `CKA_ENCRYPT`.
    pub encrypt: Option<bool>,
    /// `CKA_DECRYPT`.
    pub decrypt: Option<bool>,
    /// `CKA_SIGN`.
    pub sign: Option<bool>,
    /// `CKA_WRAP`.
    pub wrap: Option<bool>,
    /// `CKA_UNWRAP`.
    pub unwrap: Option<bool>,
    /// `CKA_ALLOWED_MECHANISMS`, when the object has it.
    pub allowed_mechanisms: Option<Vec<MechanismNumber>>,
    /// `CKA_MODIFIABLE`.
    pub modifiable: Option<bool>,
}

/// One broken rule on one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The object's label.
    pub label: String,
    /// The rule, in docs/design.md §3.5's words.
    pub rule: &'static str,
    /// What was found.
    pub found: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} (found: {})", self.label, self.rule, self.found)
    }
}

/// Rule: every secret or private key is sensitive.
pub const RULE_SENSITIVE: &str = "every secret key has CKA_SENSITIVE=true";
/// Rule: a derive parent cannot encrypt or decrypt.
pub const RULE_DERIVE_NO_CIPHER: &str = "a derive parent has no CKA_ENCRYPT/CKA_DECRYPT";
/// Rule: a derive parent is limited to the node's derivations and its KCV: without the list, a
/// token with XOR or concatenate derivation would let it make keys the node never meant.
pub const RULE_DERIVE_SIGN_LIMITED: &str = "a derive parent is limited by CKA_ALLOWED_MECHANISMS to ECB-encrypt-data derivation, CMAC and key wrap";
/// Rule: an extractable key needs `CKA_WRAP_WITH_TRUSTED`.
pub const RULE_EXTRACTABLE_TRUSTED_ONLY: &str = "an extractable key has CKA_WRAP_WITH_TRUSTED=true";
/// Rule: a public secret key (usable without login) can do nothing but wrap.
pub const RULE_PUBLIC_ONLY_WRAPS: &str = "a public secret key (CKA_PRIVATE=false) has no CKA_DERIVE, CKA_SIGN, CKA_UNWRAP, CKA_ENCRYPT or CKA_DECRYPT";
/// Rule: a public secret key cannot be changed: any session, logged in or not, may change a
/// modifiable public object, and turn its unwrapping or derivation back on.
pub const RULE_PUBLIC_FIXED: &str =
    "a public secret key (CKA_PRIVATE=false) has CKA_MODIFIABLE=false";
/// Rule: only trusted transport keys wrap.
pub const RULE_WRAP_ONLY_TRUSTED: &str = "only a CKA_TRUSTED transport key has CKA_WRAP=true";

/// Checks one object; an empty list means it follows every rule.
pub fn check(o: &ObjectFacts) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut fail = |rule, found: String| {
        out.push(Violation {
            label: o.label.clone(),
            rule,
            found,
        })
    };
    let yes = |v: Option<bool>| v == Some(true);
    if !yes(o.sensitive) {
        fail(RULE_SENSITIVE, format!("CKA_SENSITIVE={:?}", o.sensitive));
    }
    if yes(o.extractable) && !yes(o.wrap_with_trusted) {
        fail(
            RULE_EXTRACTABLE_TRUSTED_ONLY,
            format!("CKA_WRAP_WITH_TRUSTED={:?}", o.wrap_with_trusted),
        );
    }
    if yes(o.derive) {
        if yes(o.encrypt) || yes(o.decrypt) {
            fail(
                RULE_DERIVE_NO_CIPHER,
                format!("CKA_ENCRYPT={:?} CKA_DECRYPT={:?}", o.encrypt, o.decrypt),
            );
        }
        match &o.allowed_mechanisms {
            None => fail(RULE_DERIVE_SIGN_LIMITED, "no CKA_ALLOWED_MECHANISMS".into()),
            Some(list) if list.is_empty() => fail(
                RULE_DERIVE_SIGN_LIMITED,
                "empty CKA_ALLOWED_MECHANISMS".into(),
            ),
            Some(list) => {
                let unsafe_ones: Vec<String> = list
                    .iter()
                    .filter(|m| !safe_for_derive_parent(**m))
                    .map(|m| mechanism_name(*m))
                    .collect();
                if !unsafe_ones.is_empty() {
                    fail(RULE_DERIVE_SIGN_LIMITED, unsafe_ones.join(", "));
                }
            }
        }
    }
    if o.class == "secret-key" && o.private == Some(false) {
        let uses = [
            ("CKA_DERIVE", o.derive),
            ("CKA_SIGN", o.sign),
            ("CKA_UNWRAP", o.unwrap),
            ("CKA_ENCRYPT", o.encrypt),
            ("CKA_DECRYPT", o.decrypt),
        ];
        let found: Vec<&str> = uses
            .iter()
            .filter(|(_, v)| yes(*v))
            .map(|(n, _)| *n)
            .collect();
        if !found.is_empty() {
            fail(RULE_PUBLIC_ONLY_WRAPS, found.join(", "));
        }
        if o.modifiable != Some(false) {
            fail(
                RULE_PUBLIC_FIXED,
                format!("CKA_MODIFIABLE={:?}", o.modifiable),
            );
        }
    }
    if yes(o.wrap) && !yes(o.trusted) {
        fail(
            RULE_WRAP_ONLY_TRUSTED,
            format!("CKA_TRUSTED={:?}", o.trusted),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hsm::mechanisms::{AES_CMAC, AES_ECB_ENCRYPT_DATA};

    fn good_parent() -> ObjectFacts {
        ObjectFacts {
            label: "hkms/k".into(),
            class: "secret-key".into(),
            token: Some(true),
            sensitive: Some(true),
            extractable: Some(false),
            wrap_with_trusted: Some(true),
            trusted: Some(false),
            derive: Some(true),
            encrypt: Some(false),
            decrypt: Some(false),
            sign: Some(true),
            wrap: Some(false),
            unwrap: Some(false),
            private: Some(true),
            allowed_mechanisms: Some(vec![AES_ECB_ENCRYPT_DATA, AES_CMAC]),
            modifiable: Some(true),
        }
    }

    fn rules(o: &ObjectFacts) -> Vec<&'static str> {
        check(o).into_iter().map(|v| v.rule).collect()
    }

    #[test]
    fn a_correct_parent_passes() {
        assert!(check(&good_parent()).is_empty());
    }

    #[test]
    fn non_sensitive_key_is_flagged() {
        let o = ObjectFacts {
            sensitive: Some(false),
            ..good_parent()
        };
        assert_eq!(rules(&o), vec![RULE_SENSITIVE]);
        let o = ObjectFacts {
            sensitive: None,
            ..good_parent()
        };
        assert_eq!(rules(&o), vec![RULE_SENSITIVE]);
    }

    #[test]
    fn derive_parent_that_encrypts_is_flagged() {
        let o = ObjectFacts {
            encrypt: Some(true),
            ..good_parent()
        };
        assert_eq!(rules(&o), vec![RULE_DERIVE_NO_CIPHER]);
        let o = ObjectFacts {
            decrypt: Some(true),
            ..good_parent()
        };
        assert_eq!(rules(&o), vec![RULE_DERIVE_NO_CIPHER]);
    }

    #[test]
    fn extractable_without_wrap_with_trusted_is_flagged() {
        let o = ObjectFacts {
            extractable: Some(true),
            wrap_with_trusted: Some(false),
            ..good_parent()
        };
        assert_eq!(rules(&o), vec![RULE_EXTRACTABLE_TRUSTED_ONLY]);
    }

    #[test]
    fn signing_parent_without_mechanism_limit_is_flagged() {
        let o = ObjectFacts {
            allowed_mechanisms: None,
            ..good_parent()
        };
        assert_eq!(rules(&o), vec![RULE_DERIVE_SIGN_LIMITED]);
        let o = ObjectFacts {
            allowed_mechanisms: Some(vec![AES_ECB_ENCRYPT_DATA, cryptoki_sys::CKM_AES_MAC]),
            ..good_parent()
        };
        assert_eq!(rules(&o), vec![RULE_DERIVE_SIGN_LIMITED]);
        // A parent that cannot sign needs the limit too: XOR or concatenate derivation, where
        // a token has them, would otherwise be open to it.
        let o = ObjectFacts {
            sign: Some(false),
            allowed_mechanisms: None,
            ..good_parent()
        };
        assert_eq!(rules(&o), vec![RULE_DERIVE_SIGN_LIMITED]);
        let o = ObjectFacts {
            sign: Some(false),
            allowed_mechanisms: Some(vec![cryptoki_sys::CKM_XOR_BASE_AND_DATA]),
            ..good_parent()
        };
        assert_eq!(rules(&o), vec![RULE_DERIVE_SIGN_LIMITED]);
    }

    #[test]
    fn a_public_key_that_can_derive_or_unwrap_is_flagged() {
        let o = ObjectFacts {
            private: Some(false),
            modifiable: Some(false),
            ..good_parent()
        };
        assert_eq!(rules(&o), vec![RULE_PUBLIC_ONLY_WRAPS]);
        let wrap_only = ObjectFacts {
            private: Some(false),
            derive: Some(false),
            sign: Some(false),
            wrap: Some(true),
            trusted: Some(true),
            modifiable: Some(false),
            ..good_parent()
        };
        assert!(check(&wrap_only).is_empty());
        // The same key left modifiable could be turned back into one that unwraps.
        let changeable = ObjectFacts {
            modifiable: Some(true),
            ..wrap_only
        };
        assert_eq!(rules(&changeable), vec![RULE_PUBLIC_FIXED]);
    }

    #[test]
    fn untrusted_wrapping_key_is_flagged() {
        let o = ObjectFacts {
            wrap: Some(true),
            ..good_parent()
        };
        assert_eq!(rules(&o), vec![RULE_WRAP_ONLY_TRUSTED]);
    }
    #[test]
    fn a_key_that_cannot_leave_needs_no_wrap_with_trusted() {
        let o = ObjectFacts {
            extractable: Some(false),
            wrap_with_trusted: Some(false),
            ..good_parent()
        };
        assert!(check(&o).is_empty(), "{:?}", check(&o));
    }

    #[test]
    fn a_derive_parent_with_an_empty_mechanism_list_is_flagged() {
        let o = ObjectFacts {
            allowed_mechanisms: Some(vec![]),
            ..good_parent()
        };
        let v = check(&o);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].rule, RULE_DERIVE_SIGN_LIMITED);
        assert_eq!(v[0].found, "empty CKA_ALLOWED_MECHANISMS");
    }

    #[test]
    fn a_violation_reads_label_rule_and_finding() {
        let o = ObjectFacts {
            sensitive: Some(false),
            ..good_parent()
        };
        assert_eq!(
            check(&o)[0].to_string(),
            format!("hkms/k: {RULE_SENSITIVE} (found: CKA_SENSITIVE=Some(false))")
        );
    }
}
