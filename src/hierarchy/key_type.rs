//! The key-type catalogue: which classes of key exist, their algorithm and usage, and
//! at which tiers they may be generated or derived to. The policy file embeds it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{Algorithm, DiversificationFamily, HierarchyError, Tier};

/// What a key of a type is for. A key has exactly one usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Usage {
    /// Parent of diversified sub-keys (`CKA_DERIVE`, never `CKA_ENCRYPT`).
    Derive,
    /// Encrypts data (e.g. local files).
    Encrypt,
    /// Computes MACs.
    Mac,
}

impl Usage {
    /// The name used in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Usage::Derive => "derive",
            Usage::Encrypt => "encrypt",
            Usage::Mac => "mac",
        }
    }
}

impl FromStr for Usage {
    type Err = HierarchyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Usage::Derive, Usage::Encrypt, Usage::Mac]
            .into_iter()
            .find(|u| u.as_str() == s)
            .ok_or_else(|| HierarchyError::UnknownUsage {
                input: s.to_owned(),
            })
    }
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated key type name: 1–40 lowercase ASCII letters, digits or `-`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyTypeName(String);

impl KeyTypeName {
    /// Checks `name` against the naming rule.
    pub fn parse(name: &str) -> Result<KeyTypeName, HierarchyError> {
        let bad = |reason: &str| HierarchyError::KeyTypeName {
            input: name.to_owned(),
            reason: reason.to_owned(),
        };
        if name.is_empty() || name.len() > 40 {
            return Err(bad("it must be 1 to 40 characters long"));
        }
        if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(bad("it must start with a lowercase letter"));
        }
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(bad("it contains a character other than a-z, 0-9 and '-'"));
        }
        Ok(KeyTypeName(name.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for KeyTypeName {
    type Err = HierarchyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyTypeName::parse(s)
    }
}

impl TryFrom<String> for KeyTypeName {
    type Error = HierarchyError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        KeyTypeName::parse(&s)
    }
}

impl From<KeyTypeName> for String {
    fn from(n: KeyTypeName) -> String {
        n.0
    }
}

impl fmt::Display for KeyTypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One declared key type, checked against the catalogue rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTypeSpec {
    /// The type's name (`card-master`, ...).
    pub name: KeyTypeName,
    /// The key algorithm.
    pub algorithm: Algorithm,
    /// What the key is for.
    pub usage: Usage,
    /// How sub-keys are diversified; always `algorithm.family()`.
    pub family: DiversificationFamily,
    /// Whether the key may leave its HSM wrapped under a trusted transport key.
    pub exportable: bool,
    /// Tiers at which a node may generate a key of this type.
    pub generate_at: Vec<Tier>,
    /// Tiers to which sub-keys of this type may be diversified (empty: none).
    pub derive_to: Vec<Tier>,
    /// A sentence for people reading the policy or the API.
    pub description: String,
}

impl KeyTypeSpec {
    /// True when a node of `tier` may generate a key of this type.
    pub fn may_generate_at(&self, tier: Tier) -> bool {
        self.generate_at.contains(&tier)
    }

    /// True when sub-keys of this type may be diversified for `tier`.
    pub fn may_derive_to(&self, tier: Tier) -> bool {
        self.derive_to.contains(&tier)
    }
}

/// All key types of a policy, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyTypeCatalogue {
    types: BTreeMap<String, KeyTypeSpec>,
}

/// The shape of one `[key_types.NAME]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeyType {
    algorithm: Algorithm,
    usage: Usage,
    family: DiversificationFamily,
    #[serde(default)]
    exportable: bool,
    generate_at: Vec<Tier>,
    #[serde(default)]
    derive_to: Vec<Tier>,
    description: String,
}

/// The part of a policy file the catalogue reads; other top-level tables are ignored.
#[derive(Deserialize)]
struct RawPolicy {
    #[serde(default)]
    key_types: BTreeMap<Spanned<String>, RawKeyType>,
}

impl KeyTypeCatalogue {
    /// Parses and checks the `[key_types.*]` tables of a policy file.
    ///
    /// `origin` names the source (usually the file path) in error messages.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<KeyTypeCatalogue, HierarchyError> {
        let raw: RawPolicy = toml::from_str(text).map_err(|e| HierarchyError::PolicySyntax {
            origin: origin.to_owned(),
            line: e.span().map(|s| line_of(text, s.start)),
            message: format!(
                "{}; fix the policy (see policies/default.toml for the documented fields)",
                e.message().trim_end()
            ),
        })?;
        if raw.key_types.is_empty() {
            return Err(HierarchyError::PolicySyntax {
                origin: origin.to_owned(),
                line: None,
                message: "no key types are declared; add at least one [key_types.NAME] table"
                    .to_owned(),
            });
        }
        let mut types = BTreeMap::new();
        for (name, entry) in raw.key_types {
            let line = Some(line_of(text, name.span().start));
            let name = name.into_inner();
            let spec = check(&name, entry).map_err(|reason| HierarchyError::PolicyRule {
                origin: origin.to_owned(),
                line,
                key_type: name.clone(),
                reason,
            })?;
            types.insert(name, spec);
        }
        Ok(KeyTypeCatalogue { types })
    }

    /// The key type called `name`, if declared.
    pub fn get(&self, name: &str) -> Option<&KeyTypeSpec> {
        self.types.get(name)
    }

    /// All key types, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &KeyTypeSpec> + '_ {
        self.types.values()
    }

    /// All key type names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.types.keys().map(String::as_str)
    }
}

/// Applies the catalogue rules to one entry; the error is the reason, with the fix.
fn check(name: &str, raw: RawKeyType) -> Result<KeyTypeSpec, String> {
    let name = KeyTypeName::parse(name).map_err(|e| e.to_string())?;
    if raw.family != raw.algorithm.family() {
        return Err(format!(
            "family \"{}\" does not match algorithm \"{}\"; set family = \"{}\"",
            raw.family,
            raw.algorithm,
            raw.algorithm.family()
        ));
    }
    if raw.generate_at.is_empty() {
        return Err("generate_at is empty; list at least one tier that may generate it".to_owned());
    }
    if let Some(t) = first_duplicate(&raw.generate_at) {
        return Err(format!(
            "generate_at lists \"{t}\" twice; list each tier once"
        ));
    }
    if let Some(t) = first_duplicate(&raw.derive_to) {
        return Err(format!(
            "derive_to lists \"{t}\" twice; list each tier once"
        ));
    }
    if !raw.derive_to.is_empty() && raw.usage != Usage::Derive {
        return Err(format!(
            "derive_to is set but usage is \"{}\"; only usage = \"derive\" keys have sub-keys, \
             so set usage = \"derive\" or remove derive_to",
            raw.usage
        ));
    }
    if let Some(t) = raw
        .derive_to
        .iter()
        .find(|t| !raw.generate_at.iter().any(|g| t.is_below(*g)))
    {
        return Err(format!(
            "derive_to lists \"{t}\", which is not below any tier in generate_at; \
             a sub-key can only be derived for a lower tier"
        ));
    }
    Ok(KeyTypeSpec {
        name,
        algorithm: raw.algorithm,
        usage: raw.usage,
        family: raw.family,
        exportable: raw.exportable,
        generate_at: raw.generate_at,
        derive_to: raw.derive_to,
        description: raw.description,
    })
}

fn first_duplicate(tiers: &[Tier]) -> Option<Tier> {
    tiers
        .iter()
        .enumerate()
        .find(|(i, t)| tiers.iter().skip(i + 1).any(|u| u == *t))
        .map(|(_, t)| *t)
}

/// 1-based line number of byte offset `at` in `text`.
pub(crate) fn line_of(text: &str, at: usize) -> usize {
    text.bytes().take(at).filter(|b| *b == b'\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = include_str!("../../policies/default.toml");

    fn one(body: &str) -> Result<KeyTypeCatalogue, HierarchyError> {
        KeyTypeCatalogue::from_toml_str(&format!("[key_types.t1]\n{body}"), "test.toml")
    }

    const OK_BODY: &str = "algorithm = \"aes128\"\nusage = \"derive\"\nfamily = \"aes-ecb\"\n\
                           generate_at = [\"national\"]\nderive_to = [\"provincial\"]\ndescription = \"x\"\n";

    fn rule_reason(err: HierarchyError) -> String {
        match err {
            HierarchyError::PolicyRule { reason, .. } => reason,
            other => panic!("expected a rule error, got {other}"),
        }
    }

    #[test]
    fn default_policy_parses_with_expected_types() {
        let cat = KeyTypeCatalogue::from_toml_str(DEFAULT, "policies/default.toml").unwrap();
        let names: Vec<&str> = cat.names().collect();
        assert_eq!(
            names,
            [
                "card-master",
                "external-auth",
                "legacy-card-master",
                "local-file-key",
                "local-special",
                "pin-reload",
                "pin-unblock"
            ]
        );
        let cm = cat.get("card-master").unwrap();
        assert_eq!(cm.algorithm, Algorithm::Aes128);
        assert_eq!(cm.usage, Usage::Derive);
        assert!(cm.exportable);
        assert!(cm.may_generate_at(Tier::National));
        assert!(!cm.may_generate_at(Tier::Municipal));
        assert!(cm.may_derive_to(Tier::Provincial) && cm.may_derive_to(Tier::Municipal));

        for n in ["pin-unblock", "pin-reload"] {
            let s = cat.get(n).unwrap();
            assert_eq!(s.generate_at, [Tier::National, Tier::Municipal]);
            assert_eq!(s.derive_to, [Tier::Provincial, Tier::Municipal]);
            assert!(s.exportable);
        }
        let legacy = cat.get("legacy-card-master").unwrap();
        assert_eq!(
            (legacy.algorithm, legacy.family),
            (Algorithm::Des2, DiversificationFamily::Des3Ecb)
        );
        let local = cat.get("local-special").unwrap();
        assert!(!local.exportable && local.derive_to.is_empty());
        assert_eq!(local.generate_at, [Tier::Provincial, Tier::Municipal]);
        let file = cat.get("local-file-key").unwrap();
        assert_eq!(
            (file.algorithm, file.usage),
            (Algorithm::Aes256, Usage::Encrypt)
        );
        assert!(!file.exportable);
        assert!(cat.get("transport").is_none());
        assert_eq!(cat.iter().count(), 7);
        assert!(cat.iter().all(|s| !s.description.is_empty()));
    }

    #[test]
    fn other_top_level_tables_are_ignored() {
        let text = format!("[rules]\nanything = 1\n\n[key_types.t1]\n{OK_BODY}");
        assert!(KeyTypeCatalogue::from_toml_str(&text, "p.toml").is_ok());
    }

    #[test]
    fn defaults_for_exportable_and_derive_to() {
        let cat = one(
            "algorithm = \"aes256\"\nusage = \"encrypt\"\nfamily = \"aes-ecb\"\n\
             generate_at = [\"municipal\"]\ndescription = \"x\"\n",
        )
        .unwrap();
        let s = cat.get("t1").unwrap();
        assert!(!s.exportable);
        assert!(s.derive_to.is_empty());
    }

    #[test]
    fn unknown_field_is_an_error_naming_origin_and_line() {
        let err = one(&format!("{OK_BODY}colour = \"red\"\n")).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, HierarchyError::PolicySyntax { line: Some(8), .. }),
            "{msg}"
        );
        assert!(msg.starts_with("test.toml line 8:"), "{msg}");
        assert!(msg.contains("colour"), "{msg}");
    }

    #[test]
    fn bad_value_names_the_line() {
        let err = one(&OK_BODY.replace("aes128", "sm4")).unwrap_err();
        assert!(
            matches!(err, HierarchyError::PolicySyntax { line: Some(2), .. }),
            "{err}"
        );
    }

    #[test]
    fn missing_required_field_is_an_error() {
        let err = one(&OK_BODY.replace("description = \"x\"\n", "")).unwrap_err();
        assert!(err.to_string().contains("description"), "{err}");
    }

    #[test]
    fn rule_errors_name_origin_line_and_key_type() {
        let text = format!(
            "# c\n\n[key_types.t1]\n{}",
            OK_BODY.replace("aes-ecb", "des3-ecb")
        );
        let err = KeyTypeCatalogue::from_toml_str(&text, "p.toml").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("p.toml line 3: key type \"t1\""), "{msg}");
        assert!(msg.contains("family = \"aes-ecb\""), "{msg}");
    }

    #[test]
    fn family_must_match_algorithm() {
        let err = one(&OK_BODY.replace("\"aes128\"", "\"des2\"")).unwrap_err();
        assert!(rule_reason(err).contains("does not match"));
    }

    #[test]
    fn generate_at_must_not_be_empty() {
        let err = one(&OK_BODY.replace("[\"national\"]", "[]")).unwrap_err();
        assert!(rule_reason(err).contains("generate_at is empty"));
    }

    #[test]
    fn derive_to_requires_usage_derive() {
        let err = one(&OK_BODY.replace("\"derive\"", "\"mac\"")).unwrap_err();
        assert!(rule_reason(err).contains("usage = \"derive\""));
    }

    #[test]
    fn derive_to_must_be_below_a_generating_tier() {
        let body = OK_BODY.replace("[\"national\"]", "[\"provincial\"]");
        let err = one(&body).unwrap_err();
        assert!(rule_reason(err).contains("not below"));
        let body = OK_BODY.replace("derive_to = [\"provincial\"]", "derive_to = [\"national\"]");
        assert!(one(&body).is_err());
    }

    #[test]
    fn duplicate_tiers_are_rejected() {
        let err =
            one(&OK_BODY.replace("[\"national\"]", "[\"national\", \"national\"]")).unwrap_err();
        assert!(rule_reason(err).contains("twice"));
        let err = one(&OK_BODY.replace("[\"provincial\"]", "[\"provincial\", \"provincial\"]"))
            .unwrap_err();
        assert!(rule_reason(err).contains("twice"));
    }

    #[test]
    fn bad_key_type_names_are_rejected() {
        let text = format!("[key_types.Card_Master]\n{OK_BODY}");
        let err = KeyTypeCatalogue::from_toml_str(&text, "p.toml").unwrap_err();
        assert!(rule_reason(err).contains("Card_Master"));
    }

    #[test]
    fn empty_catalogue_is_an_error() {
        let err = KeyTypeCatalogue::from_toml_str("[rules]\n", "p.toml").unwrap_err();
        assert!(err.to_string().contains("no key types"));
    }

    #[test]
    fn invalid_toml_is_an_error_with_line() {
        let err = KeyTypeCatalogue::from_toml_str("\n\n[key_types.t1\n", "p.toml").unwrap_err();
        assert!(
            matches!(err, HierarchyError::PolicySyntax { line: Some(3), .. }),
            "{err}"
        );
    }

    #[test]
    fn key_type_name_rules() {
        for ok in ["a", "card-master", "k9", &"a".repeat(40)] {
            assert!(KeyTypeName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "9abc",
            "-abc",
            "Card",
            "card_master",
            "card master",
            " card",
            &"a".repeat(41),
        ] {
            assert!(
                matches!(
                    KeyTypeName::parse(bad),
                    Err(HierarchyError::KeyTypeName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn usage_names_round_trip() {
        for u in [Usage::Derive, Usage::Encrypt, Usage::Mac] {
            assert_eq!(u.as_str().parse::<Usage>(), Ok(u));
        }
        assert!("sign".parse::<Usage>().is_err());
    }
}
