//! The `[[rules]]` and `[ceremonies.*]` sections of the policy file: parsing and the checks
//! that make a policy loadable (every name known, nothing a key type forbids, no role given
//! rights its kind may never have).

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use toml::Spanned;

use super::{Operation, PolicyError, RegionScope, Role};
use crate::hierarchy::{KeyTypeCatalogue, Tier, Usage, line_of};

/// The `key_types` entry for every key type.
pub const ANY_KEY_TYPE: &str = "*";
/// The `key_types` entry for requests that concern no key type (the policy, the log).
pub const NO_KEY_TYPE: &str = "none";
/// The `key_types` entry for transport keys (issuing and loading transport key cards). `"*"`
/// does not cover it: a rule names it.
pub const TRANSPORT_KEY_TYPE: &str = "transport";

/// Which key types a rule covers: named ones, every one (`"*"`), and/or requests about no key
/// type at all (`"none"`: reading or reloading the policy, the ceremony log).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyTypes {
    /// `"*"` was listed.
    pub any: bool,
    /// `"none"` was listed.
    pub none: bool,
    /// `"transport"` was listed.
    pub transport: bool,
    /// Named key types.
    pub named: BTreeSet<String>,
}

impl KeyTypes {
    /// Whether a request about `key_type` (or about no key type) is covered.
    pub fn covers(&self, key_type: Option<&str>) -> bool {
        match key_type {
            Some(TRANSPORT_KEY_TYPE) => self.transport,
            Some(k) => self.any || self.named.contains(k),
            None => self.none,
        }
    }

    /// The entries as written in a policy.
    pub fn describe(&self) -> String {
        let mut parts: Vec<&str> = Vec::new();
        if self.any {
            parts.push(ANY_KEY_TYPE);
        }
        parts.extend(self.named.iter().map(String::as_str));
        if self.transport {
            parts.push(TRANSPORT_KEY_TYPE);
        }
        if self.none {
            parts.push(NO_KEY_TYPE);
        }
        parts.join(", ")
    }
}

/// One allow rule. Anything no rule allows is denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Unique name, quoted in decisions.
    pub id: String,
    /// Line of the rule in its file.
    pub line: usize,
    /// Operations it allows.
    pub operations: BTreeSet<Operation>,
    /// Roles it applies to.
    pub roles: BTreeSet<Role>,
    /// Caller tiers it applies to.
    pub tiers: BTreeSet<Tier>,
    /// Key types it covers.
    pub key_types: KeyTypes,
    /// Target regions, relative to the caller's.
    pub regions: BTreeSet<RegionScope>,
}

/// M-of-N dual control for an operation (used by the ceremony issue; checked now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quorum {
    /// The operation that becomes a ceremony.
    pub operation: Operation,
    /// Approvals needed (M).
    pub approvals: u32,
    /// Officers who may approve (N).
    pub officers: u32,
    /// Key types concerned.
    pub key_types: KeyTypes,
    /// Line in the file.
    pub line: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[allow(dead_code)]
    key_types: Option<toml::Value>,
    #[serde(default)]
    rules: Vec<Spanned<RawRule>>,
    #[serde(default)]
    ceremonies: BTreeMap<Spanned<String>, RawCeremony>,
    /// Read by [`parse_pins`].
    #[allow(dead_code)]
    card_pins: Option<toml::Value>,
    /// Read by [`super::limits::parse_card_limits`].
    #[allow(dead_code)]
    card_limits: Option<toml::Value>,
    /// Read by [`super::roster::parse_roster`].
    #[allow(dead_code)]
    officers: Option<toml::Value>,
}

/// Card PIN rules of the policy (`[card_pins]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinRules {
    /// Fewest digits.
    pub min_length: usize,
    /// Most digits (at most 12: the PIN block's room).
    pub max_length: usize,
}

impl Default for PinRules {
    fn default() -> Self {
        PinRules {
            min_length: 6,
            max_length: 12,
        }
    }
}

#[derive(Debug, Deserialize)]
struct PinsOnly {
    card_pins: Option<Spanned<PinRules>>,
}

/// The `[card_pins]` section (defaults 6 to 12 digits).
pub fn parse_pins(text: &str, origin: &str) -> Result<PinRules, PolicyError> {
    let raw: PinsOnly = toml::from_str(text).map_err(|e| PolicyError {
        origin: origin.into(),
        line: e.span().map(|s| line_of(text, s.start)),
        message: e.message().trim_end().to_string(),
    })?;
    let Some(p) = raw.card_pins else {
        return Ok(PinRules::default());
    };
    let line = line_of(text, p.span().start);
    let p = p.into_inner();
    if p.min_length < 4 || p.min_length > p.max_length || p.max_length > 12 {
        return Err(PolicyError {
            origin: origin.into(),
            line: Some(line),
            message: format!(
                "[card_pins] {}..{} digits is not usable: need 4 <= min_length <= max_length <= 12",
                p.min_length, p.max_length
            ),
        });
    }
    Ok(p)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    #[allow(dead_code)]
    description: Option<String>,
    operations: Vec<String>,
    roles: Vec<String>,
    tiers: Vec<String>,
    key_types: Vec<String>,
    regions: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCeremony {
    quorum: u32,
    officers: u32,
    key_types: Vec<String>,
    #[allow(dead_code)]
    description: Option<String>,
}

/// Parses and checks the rules and ceremonies of a policy text whose key types are `catalogue`.
pub fn parse(
    text: &str,
    origin: &str,
    catalogue: &KeyTypeCatalogue,
) -> Result<(Vec<Rule>, Vec<Quorum>), PolicyError> {
    let raw: RawPolicy = toml::from_str(text).map_err(|e| PolicyError {
        origin: origin.into(),
        line: e.span().map(|s| line_of(text, s.start)),
        message: e.message().trim_end().to_string(),
    })?;
    for reserved in [NO_KEY_TYPE, TRANSPORT_KEY_TYPE] {
        if catalogue.get(reserved).is_some() {
            return Err(PolicyError {
                origin: origin.into(),
                line: None,
                message: format!("the key type name `{reserved}` is reserved for rules; rename it"),
            });
        }
    }
    let mut rules: Vec<Rule> = Vec::new();
    for spanned in raw.rules {
        let line = line_of(text, spanned.span().start);
        let at = |message: String| PolicyError {
            origin: origin.into(),
            line: Some(line),
            message,
        };
        let r = spanned.into_inner();
        let rule = check_rule(r, line, catalogue).map_err(at)?;
        if let Some(first) = rules.iter().find(|x| x.id == rule.id) {
            return Err(at(format!(
                "rule id `{}` is already used on line {}; give each rule its own id",
                rule.id, first.line
            )));
        }
        rules.push(rule);
    }
    if rules.is_empty() {
        return Err(PolicyError {
            origin: origin.into(),
            line: None,
            message: "no [[rules]] are declared: everything would be denied; add rules".into(),
        });
    }
    let mut quorums = Vec::new();
    for (op, c) in raw.ceremonies {
        let line = line_of(text, op.span().start);
        let at = |message: String| PolicyError {
            origin: origin.into(),
            line: Some(line),
            message,
        };
        let operation: Operation = op.get_ref().parse().map_err(at)?;
        if !matches!(operation, Operation::Generate | Operation::Manage) {
            // A quorum nothing enforces would promise dual control that is not there.
            return Err(at(format!(
                "ceremony `{operation}`: only generate and manage run by ceremony; remove this \
                 section, or limit `{operation}` with [[rules]] instead"
            )));
        }
        if c.quorum == 0 || c.officers < c.quorum || c.officers > 16 {
            return Err(at(format!(
                "ceremony `{operation}`: quorum {} of {} is not a valid M-of-N (need 1 <= M <= N <= 16)",
                c.quorum, c.officers
            )));
        }
        let key_types = key_types(&c.key_types, catalogue)
            .map_err(|m| at(format!("ceremony `{operation}`: {m}")))?;
        quorums.push(Quorum {
            operation,
            approvals: c.quorum,
            officers: c.officers,
            key_types,
            line,
        });
    }
    Ok((rules, quorums))
}

fn names<T: std::str::FromStr<Err = String> + Ord>(
    what: &str,
    list: &[String],
) -> Result<BTreeSet<T>, String> {
    if list.is_empty() {
        return Err(format!("`{what}` is empty; list at least one"));
    }
    list.iter().map(|s| s.parse::<T>()).collect()
}

fn key_types(list: &[String], catalogue: &KeyTypeCatalogue) -> Result<KeyTypes, String> {
    if list.is_empty() {
        return Err(
            "`key_types` is empty; list key types, \"*\" (all) and/or \"none\" (requests about no key type)"
                .into(),
        );
    }
    let mut out = KeyTypes::default();
    for k in list {
        match k.as_str() {
            ANY_KEY_TYPE => out.any = true,
            NO_KEY_TYPE => out.none = true,
            TRANSPORT_KEY_TYPE => out.transport = true,
            _ if catalogue.get(k).is_some() => {
                out.named.insert(k.clone());
            }
            _ => {
                return Err(format!(
                    "unknown key type `{k}` (declared: {}; or \"*\", \"none\", \"transport\")",
                    catalogue.names().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    if out.any && !out.named.is_empty() {
        return Err("\"*\" already covers every key type; drop the named ones".into());
    }
    Ok(out)
}

fn check_rule(r: RawRule, line: usize, catalogue: &KeyTypeCatalogue) -> Result<Rule, String> {
    let id = r.id.trim().to_string();
    if id.is_empty() {
        return Err("a rule needs a non-empty `id`".into());
    }
    let ctx = |m: String| format!("rule `{id}`: {m}");
    let operations: BTreeSet<Operation> = names("operations", &r.operations).map_err(ctx)?;
    let roles: BTreeSet<Role> = names("roles", &r.roles).map_err(ctx)?;
    let tiers: BTreeSet<Tier> = if r.tiers.is_empty() {
        return Err(ctx("`tiers` is empty; list at least one".into()));
    } else {
        r.tiers
            .iter()
            .map(|t| t.parse::<Tier>().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()
            .map_err(ctx)?
    };
    let regions: BTreeSet<RegionScope> = names("regions", &r.regions).map_err(ctx)?;
    let key_types = key_types(&r.key_types, catalogue).map_err(ctx)?;

    // A role's kind bounds what any policy may give it.
    for role in &roles {
        let allowed: &[Operation] = match role {
            Role::Auditor => &[Operation::Read, Operation::ReadAudit, Operation::FindId],
            Role::Window => &[Operation::Use, Operation::Read],
            Role::Admin => &[Operation::Manage, Operation::Read, Operation::ReadAudit],
            Role::Officer | Role::System => &Operation::ALL,
        };
        if let Some(op) = operations.iter().find(|o| !allowed.contains(o)) {
            return Err(ctx(format!(
                "role {role} may never {op} (a {role} only: {}); remove it from this rule",
                allowed
                    .iter()
                    .map(|o| o.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    if operations.contains(&Operation::Generate) {
        if regions != BTreeSet::from([RegionScope::Own]) {
            return Err(ctx(
                "a node generates keys for its own region only; use regions = [\"self\"]".into(),
            ));
        }
        if key_types.any || key_types.none || key_types.transport {
            return Err(ctx(
                "a generate rule must name its key types, not \"*\", \"none\" or \"transport\" \
                 (transport keys are issued onto cards)"
                    .into(),
            ));
        }
        for k in &key_types.named {
            if let Some(spec) = catalogue.get(k)
                && let Some(t) = tiers.iter().find(|t| !spec.may_generate_at(**t))
            {
                return Err(ctx(format!(
                    "the {t} tier cannot hold a generated `{k}` (its generate_at is {}); \
                     remove the tier or the key type",
                    spec.generate_at
                        .iter()
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
    }
    if operations.contains(&Operation::Derive) {
        for k in &key_types.named {
            if let Some(spec) = catalogue.get(k)
                && (spec.usage != Usage::Derive || spec.derive_to.is_empty())
            {
                return Err(ctx(format!(
                    "key type `{k}` is never diversified (no derive_to); it cannot be derived"
                )));
            }
        }
        if regions.contains(&RegionScope::Own) && regions.len() == 1 {
            return Err(ctx(
                "a derived key is for a region below the caller's; `self` alone can never match"
                    .into(),
            ));
        }
    }
    Ok(Rule {
        id,
        line,
        operations,
        roles,
        tiers,
        key_types,
        regions,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::{KeyTypes, PinRules};
    use crate::policy::Policy;

    const DEFAULT: &str = include_str!("../../policies/default.toml");

    fn err(text: &str) -> String {
        Policy::parse(text, "p.toml").unwrap_err().to_string()
    }

    fn line_of(needle: &str, text: &str) -> usize {
        text.lines().position(|l| l.contains(needle)).unwrap() + 1
    }

    #[test]
    fn default_policy_loads_with_rules_and_quorums() {
        let p = Policy::parse(DEFAULT, "default.toml").unwrap();
        assert!(p.rules.len() >= 10);
        let q = p
            .quorum(crate::policy::Operation::Generate, Some("card-master"))
            .unwrap();
        assert_eq!((q.approvals, q.officers), (2, 3));
        assert_eq!(p.sha256.len(), 64);
    }

    #[test]
    fn unknown_role_is_reported_with_file_and_line() {
        let text = DEFAULT.replacen("roles = [\"window\"]", "roles = [\"windw\"]", 1);
        let e = err(&text);
        let line = line_of("id = \"pin-services\"", &text) - 1;
        assert!(e.starts_with(&format!("p.toml line {line}:")), "{e}");
        assert!(e.contains("unknown role `windw`"), "{e}");
    }

    #[test]
    fn unknown_key_type_and_operation_are_refused() {
        assert!(
            err(&DEFAULT.replacen("\"local-file-key\"]", "\"local-fiel-key\"]", 1))
                .contains("unknown key type `local-fiel-key`")
        );
        assert!(
            err(&DEFAULT.replacen("operations = [\"use\"]", "operations = [\"usee\"]", 1))
                .contains("unknown operation `usee`")
        );
        assert!(
            err(&DEFAULT.replacen("regions = [\"any\"]", "regions = [\"everywhere\"]", 1))
                .contains("unknown region scope")
        );
    }

    #[test]
    fn a_tier_that_cannot_hold_a_generated_key_type_is_a_contradiction() {
        let text = DEFAULT.replacen(
            "tiers = [\"national\"]\nkey_types = [\"card-master\", \"pin-unblock\"",
            "tiers = [\"national\", \"municipal\"]\nkey_types = [\"card-master\", \"pin-unblock\"",
            1,
        );
        assert_ne!(text, DEFAULT);
        let e = err(&text);
        assert!(
            e.contains("the municipal tier cannot hold a generated `card-master`"),
            "{e}"
        );
    }

    #[test]
    fn roles_cannot_get_rights_their_kind_never_has() {
        let text = DEFAULT.replacen(
            "operations = [\"read\", \"read-audit\"]",
            "operations = [\"read\", \"manage\"]",
            1,
        );
        assert!(err(&text).contains("role auditor may never manage"));
        let text = DEFAULT.replacen(
            "operations = [\"use\"]",
            "operations = [\"use\", \"derive\"]",
            1,
        );
        assert!(err(&text).contains("role window may never derive"));
        // Looking up ID numbers is an auditor's step, never a window's or an admin's.
        let text = DEFAULT.replacen(
            "operations = [\"use\"]",
            "operations = [\"use\", \"find-id\"]",
            1,
        );
        assert!(err(&text).contains("role window may never find-id"));
        let text = DEFAULT.replacen(
            "operations = [\"manage\", \"read\"]",
            "operations = [\"manage\", \"read\", \"find-id\"]",
            1,
        );
        assert_ne!(text, DEFAULT);
        assert!(err(&text).contains("role admin may never find-id"));
    }

    #[test]
    fn generate_rules_target_self_and_name_their_types() {
        let text = DEFAULT.replacen(
            "key_types = [\"local-special\", \"local-file-key\"]\nregions = [\"self\"]",
            "key_types = [\"local-special\", \"local-file-key\"]\nregions = [\"children\"]",
            1,
        );
        assert!(err(&text).contains("use regions = [\"self\"]"));
        let text = DEFAULT.replacen(
            "key_types = [\"local-special\", \"local-file-key\"]",
            "key_types = [\"*\"]",
            1,
        );
        assert!(err(&text).contains("must name its key types"));
        let text = DEFAULT.replacen(
            "key_types = [\"local-special\", \"local-file-key\"]",
            "key_types = [\"*\", \"local-special\"]",
            1,
        );
        assert!(err(&text).contains("already covers every key type"));
    }

    #[test]
    fn deriving_an_undiversified_type_is_refused() {
        let text = DEFAULT.replacen(
            "tiers = [\"provincial\"]\nkey_types = [\"*\"]",
            "tiers = [\"provincial\"]\nkey_types = [\"local-special\"]",
            1,
        );
        assert_ne!(text, DEFAULT);
        assert!(err(&text).contains("never diversified"));
    }

    #[test]
    fn duplicate_rule_ids_and_bad_quorums_are_refused() {
        let text = DEFAULT.replacen("id = \"windows-read-own\"", "id = \"pin-services\"", 1);
        assert!(err(&text).contains("already used on line"));
        let text = DEFAULT.replacen("quorum = 2\nofficers = 3", "quorum = 4\nofficers = 3", 1);
        assert!(err(&text).contains("not a valid M-of-N"));
        let text = DEFAULT.replacen("[ceremonies.manage]", "[ceremonies.dance]", 1);
        assert!(err(&text).contains("unknown operation `dance`"));
        // Only generate and manage run by ceremony: a quorum on another operation would
        // promise dual control that nothing enforces.
        for op in [
            "derive",
            "export",
            "import",
            "use",
            "read",
            "read-audit",
            "find-id",
            "approve",
        ] {
            let text = DEFAULT.replacen("[ceremonies.manage]", &format!("[ceremonies.{op}]"), 1);
            let e = err(&text);
            assert!(
                e.contains("only generate and manage run by ceremony"),
                "{op}: {e}"
            );
        }
    }

    #[test]
    fn unknown_fields_and_empty_lists_are_refused() {
        assert!(
            err(&DEFAULT.replacen("regions = [\"any\"]", "regions = [\"any\"]\ncolour = 1", 1))
                .contains("unknown field")
        );
        assert!(
            err(&DEFAULT.replacen("roles = [\"window\"]", "roles = []", 1))
                .contains("`roles` is empty")
        );
    }
    #[test]
    fn card_pin_rules_are_read_and_must_fit_the_pin_block() {
        let p = Policy::parse(DEFAULT, "p.toml").unwrap();
        assert_eq!(
            p.pins,
            PinRules {
                min_length: 6,
                max_length: 6
            }
        );
        let with = |min: usize, max: usize| {
            DEFAULT.replacen(
                "min_length = 6\nmax_length = 6",
                &format!("min_length = {min}\nmax_length = {max}"),
                1,
            )
        };
        for (min, max) in [(4, 12), (4, 4), (12, 12), (5, 9)] {
            let p = Policy::parse(&with(min, max), "p.toml").unwrap();
            assert_eq!((p.pins.min_length, p.pins.max_length), (min, max));
        }
        for (min, max) in [(3, 12), (3, 3), (7, 6), (6, 13), (13, 13)] {
            let e = err(&with(min, max));
            assert!(
                e.contains(&format!("[card_pins] {min}..{max} digits is not usable")),
                "{min}..{max}: {e}"
            );
        }
        // Without the section: 6 to 12 digits.
        let without = DEFAULT.replacen("[card_pins]\nmin_length = 6\nmax_length = 6\n", "", 1);
        assert_ne!(without, DEFAULT);
        let p = Policy::parse(&without, "p.toml").unwrap();
        assert_eq!((p.pins.min_length, p.pins.max_length), (6, 12));
    }

    #[test]
    fn key_types_are_described_as_a_policy_writes_them() {
        let k = KeyTypes {
            any: true,
            none: true,
            transport: true,
            named: BTreeSet::new(),
        };
        assert_eq!(k.describe(), "*, transport, none");
        let k = KeyTypes {
            named: BTreeSet::from(["pin-reload".to_string(), "card-master".to_string()]),
            ..KeyTypes::default()
        };
        assert_eq!(k.describe(), "card-master, pin-reload");
    }
    #[test]
    fn a_quorum_is_1_to_16_officers_and_at_most_all_of_them() {
        let with = |m: u32, n: u32| {
            DEFAULT.replacen(
                "quorum = 2\nofficers = 3",
                &format!("quorum = {m}\nofficers = {n}"),
                1,
            )
        };
        for (m, n) in [(1, 1), (2, 2), (16, 16), (1, 16)] {
            let p = Policy::parse(&with(m, n), "p.toml").unwrap();
            let q = p
                .quorum(crate::policy::Operation::Generate, Some("card-master"))
                .unwrap();
            assert_eq!((q.approvals, q.officers), (m, n));
        }
        for (m, n) in [(0, 3), (3, 2), (1, 17), (17, 17)] {
            let e = err(&with(m, n));
            assert!(
                e.contains(&format!("quorum {m} of {n} is not a valid M-of-N")),
                "{m} of {n}: {e}"
            );
        }
    }

    #[test]
    fn a_generate_rule_cannot_cover_no_key_type_or_transport_keys() {
        for entry in ["none", "transport"] {
            let text = DEFAULT.replacen(
                "key_types = [\"local-special\", \"local-file-key\"]",
                &format!("key_types = [\"{entry}\"]"),
                1,
            );
            assert_ne!(text, DEFAULT);
            assert!(err(&text).contains("must name its key types"), "{entry}");
        }
    }

    #[test]
    fn a_derive_rule_may_name_diversified_types_for_regions_below() {
        let named = DEFAULT.replacen(
            "tiers = [\"provincial\"]\nkey_types = [\"*\"]",
            "tiers = [\"provincial\"]\nkey_types = [\"card-master\", \"pin-unblock\"]",
            1,
        );
        assert_ne!(named, DEFAULT);
        Policy::parse(&named, "p.toml").unwrap();
        let own_only = DEFAULT.replacen(
            "key_types = [\"*\"]\nregions = [\"children\"]",
            "key_types = [\"*\"]\nregions = [\"self\"]",
            1,
        );
        assert_ne!(own_only, DEFAULT);
        assert!(err(&own_only).contains("`self` alone can never match"));
        let own_and_children = DEFAULT.replacen(
            "key_types = [\"*\"]\nregions = [\"children\"]",
            "key_types = [\"*\"]\nregions = [\"self\", \"children\"]",
            1,
        );
        Policy::parse(&own_and_children, "p.toml").unwrap();
    }
}
