//! The attribute audit: reads every key object on the token and checks the docs/design.md §3.5 rules,
//! so that a key that could leave in clear is found even if something other than hkms made it.

use super::mechanisms::{MechanismNumber, SHA256_HMAC, mechanism_name, safe_for_derive_parent};
use super::templates::ID_MAC_LABEL;

/// The security-relevant attributes of one key object (`None`: the token did not say).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectFacts {
    /// `CKA_LABEL` (lossy UTF-8).
    pub label: String,
    /// "secret-key" or "private-key".
    pub class: String,
    /// `CKA_KEY_TYPE`, as its `CKK_*` name (`None`: the token did not say).
    pub key_type: Option<String>,
    /// `CKA_TOKEN`.
    pub token: Option<bool>,
    /// `CKA_PRIVATE` (a public object is usable without logging in).
    pub private: Option<bool>,
    /// `CKA_SENSITIVE`.
    pub sensitive: Option<bool>,
    /// `CKA_EXTRACTABLE`.
    pub extractable: Option<bool>,
    /// `CKA_ALWAYS_SENSITIVE`: the value was never readable, since the key was made.
    pub always_sensitive: Option<bool>,
    /// `CKA_NEVER_EXTRACTABLE`: the key could never be wrapped out, since it was made.
    pub never_extractable: Option<bool>,
    /// `CKA_LOCAL`: the key was generated in the token (not created from a value, unwrapped or
    /// derived).
    pub local: Option<bool>,
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
    /// `CKA_VERIFY`.
    pub verify: Option<bool>,
    /// `CKA_WRAP`.
    pub wrap: Option<bool>,
    /// `CKA_UNWRAP`.
    pub unwrap: Option<bool>,
    /// `CKA_ALLOWED_MECHANISMS`, when the object has it.
    pub allowed_mechanisms: Option<Vec<MechanismNumber>>,
    /// `CKA_MODIFIABLE`.
    pub modifiable: Option<bool>,
    /// `CKA_DESTROYABLE`.
    pub destroyable: Option<bool>,
    /// The flags of `CKA_UNWRAP_TEMPLATE` (`CKA_*` name, value), when the object has one.
    pub unwrap_template: Option<Vec<(String, bool)>>,
    /// The flags of `CKA_DERIVE_TEMPLATE`, when the object has one (a token that does not take
    /// the attribute, as SoftHSM2 2.6.1, never has one).
    pub derive_template: Option<Vec<(String, bool)>>,
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
/// Rule: no key can be changed: whoever holds the user PIN (and, for a public object, any
/// session) could otherwise turn on a usage hkms left out (encrypt on a derive key gives its
/// children in clear) or change its label.
pub const RULE_FIXED: &str = "every secret or private key has CKA_MODIFIABLE=false";
/// Rule: a public secret key cannot be destroyed: any session, logged in or not, may destroy a
/// public object that allows it, and cut the node off from a card.
pub const RULE_PUBLIC_UNDESTROYABLE: &str =
    "a public secret key (CKA_PRIVATE=false) has CKA_DESTROYABLE=false";
/// Rule: a derive key's `CKA_DERIVE_TEMPLATE`, where it has one, keeps its children secret.
pub const RULE_DERIVE_FIXES_CHILDREN: &str =
    "a CKA_DERIVE_TEMPLATE fixes CKA_SENSITIVE=true and CKA_MODIFIABLE=false";
/// Rule: a key that unwraps fixes what it unwraps: without `CKA_UNWRAP_TEMPLATE`, whoever holds
/// the user PIN unwraps any package (packages are not secret) into a key they can read.
pub const RULE_UNWRAP_FIXES_CHILDREN: &str = "a secret key with CKA_UNWRAP has a CKA_UNWRAP_TEMPLATE with CKA_SENSITIVE=true, CKA_EXTRACTABLE=false, and either CKA_DERIVE=false or CKA_ENCRYPT=false and CKA_DECRYPT=false";
/// Rule: only trusted transport keys wrap.
pub const RULE_WRAP_ONLY_TRUSTED: &str = "only a CKA_TRUSTED transport key has CKA_WRAP=true";
/// Rule: the ID MAC key was generated in the token and has never been readable or extractable:
/// a key created from a value, or ever readable (CKA_LOCAL, CKA_ALWAYS_SENSITIVE or
/// CKA_NEVER_EXTRACTABLE false), may be known to whoever made it, who could then test every ID
/// number against the log offline.
pub const RULE_ID_MAC_IN_TOKEN: &str = "the ID MAC key (hkms/id-mac) was generated in the token and never left it: CKA_LOCAL=true, CKA_EXTRACTABLE=false, CKA_NEVER_EXTRACTABLE=true, CKA_ALWAYS_SENSITIVE=true";
/// Rule: the ID MAC key computes HMAC-SHA-256 and nothing else. Verify would serve as well as
/// sign to test guessed ID numbers; encrypt, derive or wrap would let its value out.
pub const RULE_ID_MAC_SIGN_ONLY: &str = "the ID MAC key (hkms/id-mac) is a CKK_GENERIC_SECRET with CKA_SIGN only (no CKA_VERIFY, CKA_ENCRYPT, CKA_DECRYPT, CKA_DERIVE, CKA_WRAP, CKA_UNWRAP), limited by CKA_ALLOWED_MECHANISMS to CKM_SHA256_HMAC";
/// Rule: the ID MAC key is a private token object that nobody can change (no session can
/// turn another usage on).
pub const RULE_ID_MAC_FIXED: &str =
    "the ID MAC key (hkms/id-mac) is a private secret key with CKA_MODIFIABLE=false";

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
        if o.destroyable != Some(false) {
            fail(
                RULE_PUBLIC_UNDESTROYABLE,
                format!("CKA_DESTROYABLE={:?}", o.destroyable),
            );
        }
    }
    if o.modifiable != Some(false) {
        fail(RULE_FIXED, format!("CKA_MODIFIABLE={:?}", o.modifiable));
    }
    if o.class == "secret-key" && yes(o.unwrap) {
        check_unwrap_template(o, &mut fail);
    }
    if let Some(template) = &o.derive_template {
        let wrong = unfixed(
            template,
            &[("CKA_SENSITIVE", true), ("CKA_MODIFIABLE", false)],
        );
        if !wrong.is_empty() {
            fail(RULE_DERIVE_FIXES_CHILDREN, wrong);
        }
    }
    if yes(o.wrap) && !yes(o.trusted) {
        fail(
            RULE_WRAP_ONLY_TRUSTED,
            format!("CKA_TRUSTED={:?}", o.trusted),
        );
    }
    if o.label == ID_MAC_LABEL {
        check_id_mac_key(o, &mut fail);
    }
    out
}

/// A secret key that unwraps: what its template must fix.
fn check_unwrap_template(o: &ObjectFacts, fail: &mut impl FnMut(&'static str, String)) {
    let Some(template) = &o.unwrap_template else {
        fail(RULE_UNWRAP_FIXES_CHILDREN, "no CKA_UNWRAP_TEMPLATE".into());
        return;
    };
    // A child that cannot derive is a leaf; one that can must not encrypt its children's data.
    let mut wanted = vec![("CKA_SENSITIVE", true), ("CKA_EXTRACTABLE", false)];
    if !unfixed(template, &[("CKA_DERIVE", false)]).is_empty() {
        wanted.extend([("CKA_ENCRYPT", false), ("CKA_DECRYPT", false)]);
    }
    let wrong = unfixed(template, &wanted);
    if !wrong.is_empty() {
        fail(RULE_UNWRAP_FIXES_CHILDREN, wrong);
    }
}

/// Which of `wanted` (attribute, value) a template's flags do not fix, as "NAME not fixed, …"
/// (empty when it fixes them all).
fn unfixed(template: &[(String, bool)], wanted: &[(&str, bool)]) -> String {
    wanted
        .iter()
        .filter(|(name, want)| !template.iter().any(|(n, v)| n == name && v == want))
        .map(|(name, _)| format!("{name} not fixed"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The ID MAC key's own rules, on top of every key's.
fn check_id_mac_key(o: &ObjectFacts, fail: &mut impl FnMut(&'static str, String)) {
    let is = |v: Option<bool>, want: bool| v == Some(want);
    let wrong = |pairs: &[(&str, Option<bool>, bool)]| -> Vec<String> {
        pairs
            .iter()
            .filter(|(_, v, want)| !is(*v, *want))
            .map(|(n, v, _)| format!("{n}={v:?}"))
            .collect()
    };
    let found = wrong(&[
        ("CKA_LOCAL", o.local, true),
        ("CKA_EXTRACTABLE", o.extractable, false),
        ("CKA_NEVER_EXTRACTABLE", o.never_extractable, true),
        ("CKA_ALWAYS_SENSITIVE", o.always_sensitive, true),
    ]);
    if !found.is_empty() {
        fail(RULE_ID_MAC_IN_TOKEN, found.join(" "));
    }
    let mut found = wrong(&[
        ("CKA_SIGN", o.sign, true),
        ("CKA_VERIFY", o.verify, false),
        ("CKA_ENCRYPT", o.encrypt, false),
        ("CKA_DECRYPT", o.decrypt, false),
        ("CKA_DERIVE", o.derive, false),
        ("CKA_WRAP", o.wrap, false),
        ("CKA_UNWRAP", o.unwrap, false),
    ]);
    if o.key_type.as_deref() != Some("CKK_GENERIC_SECRET") {
        found.push(format!("CKA_KEY_TYPE={:?}", o.key_type));
    }
    match o.allowed_mechanisms.as_deref() {
        Some([SHA256_HMAC]) => {}
        Some(list) => found.push(format!(
            "CKA_ALLOWED_MECHANISMS=[{}]",
            list.iter()
                .map(|m| mechanism_name(*m))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        None => found.push("no CKA_ALLOWED_MECHANISMS".into()),
    }
    if !found.is_empty() {
        fail(RULE_ID_MAC_SIGN_ONLY, found.join(" "));
    }
    let mut found = wrong(&[
        ("CKA_MODIFIABLE", o.modifiable, false),
        ("CKA_PRIVATE", o.private, true),
        ("CKA_TOKEN", o.token, true),
    ]);
    if o.class != "secret-key" {
        found.push(format!("class {}", o.class));
    }
    if !found.is_empty() {
        fail(RULE_ID_MAC_FIXED, found.join(" "));
    }
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
            modifiable: Some(false),
            destroyable: None,
            unwrap_template: None,
            derive_template: None,
            key_type: Some("CKK_AES".into()),
            always_sensitive: Some(true),
            never_extractable: Some(true),
            local: Some(false),
            verify: Some(false),
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
            destroyable: Some(false),
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
            destroyable: Some(false),
            ..good_parent()
        };
        assert!(check(&wrap_only).is_empty());
        // The same key left modifiable could be turned back into one that unwraps.
        let changeable = ObjectFacts {
            modifiable: Some(true),
            ..wrap_only.clone()
        };
        assert_eq!(rules(&changeable), vec![RULE_FIXED]);
        // Or destroyed by a session that never logged in.
        let destroyable = ObjectFacts {
            destroyable: Some(true),
            ..wrap_only
        };
        assert_eq!(rules(&destroyable), vec![RULE_PUBLIC_UNDESTROYABLE]);
    }

    #[test]
    fn a_key_that_unwraps_must_fix_what_it_unwraps() {
        let flags =
            |pairs: &[(&str, bool)]| Some(pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect());
        let loaded = ObjectFacts {
            derive: Some(false),
            sign: Some(false),
            unwrap: Some(true),
            allowed_mechanisms: None,
            unwrap_template: flags(&[
                ("CKA_SENSITIVE", true),
                ("CKA_EXTRACTABLE", false),
                ("CKA_ENCRYPT", false),
                ("CKA_DECRYPT", false),
                ("CKA_DERIVE", true),
            ]),
            ..good_parent()
        };
        assert!(check(&loaded).is_empty(), "{:?}", check(&loaded));
        let none = ObjectFacts {
            unwrap_template: None,
            ..loaded.clone()
        };
        assert_eq!(rules(&none), vec![RULE_UNWRAP_FIXES_CHILDREN]);
        let loose = ObjectFacts {
            unwrap_template: flags(&[("CKA_SENSITIVE", true), ("CKA_ENCRYPT", true)]),
            ..loaded
        };
        let found = check(&loose);
        assert_eq!(found.len(), 1);
        assert!(
            found[0].found.contains("CKA_EXTRACTABLE not fixed")
                && found[0].found.contains("CKA_ENCRYPT not fixed"),
            "{}",
            found[0].found
        );
        // A derive template, where the token keeps one, must keep the children secret.
        let derives = ObjectFacts {
            derive_template: flags(&[("CKA_SENSITIVE", false), ("CKA_MODIFIABLE", false)]),
            ..good_parent()
        };
        assert_eq!(rules(&derives), vec![RULE_DERIVE_FIXES_CHILDREN]);
        let fixed = ObjectFacts {
            derive_template: flags(&[("CKA_SENSITIVE", true), ("CKA_MODIFIABLE", false)]),
            ..good_parent()
        };
        assert!(check(&fixed).is_empty());
        // A leaf (no derive) may encrypt.
        let leaves = ObjectFacts {
            unwrap_template: flags(&[
                ("CKA_SENSITIVE", true),
                ("CKA_EXTRACTABLE", false),
                ("CKA_DERIVE", false),
            ]),
            ..loose
        };
        assert!(check(&leaves).is_empty(), "{:?}", check(&leaves));
    }

    /// The ID MAC key as `hsm::id_mac` makes it.
    fn good_id_mac_key() -> ObjectFacts {
        ObjectFacts {
            label: ID_MAC_LABEL.into(),
            class: "secret-key".into(),
            key_type: Some("CKK_GENERIC_SECRET".into()),
            token: Some(true),
            private: Some(true),
            sensitive: Some(true),
            extractable: Some(false),
            always_sensitive: Some(true),
            never_extractable: Some(true),
            local: Some(true),
            wrap_with_trusted: Some(true),
            trusted: Some(false),
            derive: Some(false),
            encrypt: Some(false),
            decrypt: Some(false),
            sign: Some(true),
            verify: Some(false),
            wrap: Some(false),
            unwrap: Some(false),
            allowed_mechanisms: Some(vec![SHA256_HMAC]),
            modifiable: Some(false),
            destroyable: Some(true),
            unwrap_template: None,
            derive_template: None,
        }
    }

    #[test]
    fn the_id_mac_key_as_made_passes() {
        assert!(check(&good_id_mac_key()).is_empty());
    }

    #[test]
    fn an_id_mac_key_that_could_leave_or_was_ever_readable_is_flagged() {
        for o in [
            ObjectFacts {
                extractable: Some(true),
                ..good_id_mac_key()
            },
            ObjectFacts {
                never_extractable: Some(false),
                ..good_id_mac_key()
            },
            ObjectFacts {
                always_sensitive: Some(false),
                ..good_id_mac_key()
            },
            ObjectFacts {
                always_sensitive: None,
                ..good_id_mac_key()
            },
            // Created from a value: whoever had the value has the key.
            ObjectFacts {
                local: Some(false),
                ..good_id_mac_key()
            },
        ] {
            assert_eq!(rules(&o), vec![RULE_ID_MAC_IN_TOKEN], "{o:?}");
        }
        let o = ObjectFacts {
            sensitive: Some(false),
            always_sensitive: Some(false),
            ..good_id_mac_key()
        };
        assert_eq!(rules(&o), vec![RULE_SENSITIVE, RULE_ID_MAC_IN_TOKEN]);
    }

    #[test]
    fn an_id_mac_key_with_any_other_usage_is_flagged() {
        let with = |f: fn(&mut ObjectFacts)| {
            let mut o = good_id_mac_key();
            f(&mut o);
            o
        };
        for o in [
            with(|o| o.verify = Some(true)),
            with(|o| o.encrypt = Some(true)),
            with(|o| o.decrypt = Some(true)),
            with(|o| o.sign = Some(false)),
            with(|o| o.key_type = Some("CKK_AES".into())),
            with(|o| o.allowed_mechanisms = None),
            with(|o| o.allowed_mechanisms = Some(vec![SHA256_HMAC, cryptoki_sys::CKM_SHA_1_HMAC])),
        ] {
            assert_eq!(rules(&o), vec![RULE_ID_MAC_SIGN_ONLY], "{o:?}");
        }
        // Deriving or wrapping breaks the general rules as well.
        let o = with(|o| o.derive = Some(true));
        assert!(rules(&o).contains(&RULE_ID_MAC_SIGN_ONLY));
        let o = with(|o| o.wrap = Some(true));
        assert!(rules(&o).contains(&RULE_ID_MAC_SIGN_ONLY));
        let o = with(|o| o.unwrap = Some(true));
        assert!(rules(&o).contains(&RULE_ID_MAC_SIGN_ONLY));
    }

    #[test]
    fn a_changeable_or_public_id_mac_key_is_flagged() {
        let o = ObjectFacts {
            modifiable: Some(true),
            ..good_id_mac_key()
        };
        assert_eq!(rules(&o), vec![RULE_FIXED, RULE_ID_MAC_FIXED]);
        let o = ObjectFacts {
            token: Some(false),
            ..good_id_mac_key()
        };
        assert_eq!(rules(&o), vec![RULE_ID_MAC_FIXED]);
        // Public: open to any session, and so flagged by the general rule too.
        let o = ObjectFacts {
            private: Some(false),
            ..good_id_mac_key()
        };
        assert_eq!(
            rules(&o),
            vec![
                RULE_PUBLIC_ONLY_WRAPS,
                RULE_PUBLIC_UNDESTROYABLE,
                RULE_ID_MAC_FIXED
            ]
        );
    }

    #[test]
    fn the_id_mac_rules_apply_to_that_label_only() {
        let o = ObjectFacts {
            label: "hkms/k-other".into(),
            verify: Some(true),
            ..good_id_mac_key()
        };
        assert!(check(&o).is_empty());
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
