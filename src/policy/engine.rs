//! The decision: a pure function of the policy, the caller, the operation, the key type and the
//! target region. Deny by default; every answer carries a reason a person can read.

use super::{Identity, Operation, Policy, Rule};
use crate::hierarchy::Region;

/// The policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allowed or denied.
    pub allowed: bool,
    /// The rule that allowed it, if any.
    pub rule: Option<String>,
    /// A sentence for people and records.
    pub reason: String,
}

/// Decides one request.
pub fn decide(
    policy: &Policy,
    who: &Identity,
    op: Operation,
    key_type: Option<&str>,
    target: &Region,
) -> Decision {
    let what = match key_type {
        Some(k) => format!("{op} {k}"),
        None => op.to_string(),
    };
    let request = format!(
        "role {} at {} {{}} {what} for {target}",
        who.role, who.region
    );
    let checks = |r: &Rule| -> [Option<String>; 4] {
        let list = |v: Vec<&str>| v.join(", ");
        [
            (!r.roles.contains(&who.role)).then(|| {
                format!(
                    "roles {}",
                    list(r.roles.iter().map(|x| x.as_str()).collect())
                )
            }),
            (!r.tiers.contains(&who.tier)).then(|| {
                format!(
                    "tiers {}",
                    list(r.tiers.iter().map(|x| x.as_str()).collect())
                )
            }),
            (!r.key_types.covers(key_type))
                .then(|| format!("key types {}", r.key_types.describe())),
            (!r.regions.iter().any(|s| s.covers(&who.region, target))).then(|| {
                format!(
                    "regions {} of the caller's",
                    list(r.regions.iter().map(|x| x.as_str()).collect())
                )
            }),
        ]
    };
    let for_op = policy.rules.iter().filter(|r| r.operations.contains(&op));
    let mut closest: Option<(&Rule, usize, String)> = None;
    for rule in for_op {
        let failed: Vec<String> = checks(rule).into_iter().flatten().collect();
        if failed.is_empty() {
            return Decision {
                allowed: true,
                rule: Some(rule.id.clone()),
                reason: format!(
                    "allowed: {} (rule {}, line {})",
                    request.replace("{}", "may"),
                    rule.id,
                    rule.line
                ),
            };
        }
        if closest.as_ref().is_none_or(|(_, n, _)| failed.len() < *n) {
            let first = failed.first().cloned().unwrap_or_default();
            closest = Some((rule, failed.len(), first));
        }
    }
    let hint = match closest {
        Some((rule, _, why)) => format!(
            "no rule allows it; closest: rule {} (line {}) is for {why}",
            rule.id, rule.line
        ),
        None => format!("no rule allows {op} at all"),
    };
    Decision {
        allowed: false,
        rule: None,
        reason: format!("denied: {} ({hint})", request.replace("{}", "may not")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = include_str!("../../policies/default.toml");

    fn policy() -> Policy {
        Policy::parse(DEFAULT, "policies/default.toml").unwrap()
    }

    /// (caller, operation, key type, target region, allowed?)
    const CASES: &[(&str, &str, Option<&str>, &str, bool)] = &[
        // Generation: the ministry's officers, national key types, own region.
        (
            "officer/national/000000/a",
            "generate",
            Some("card-master"),
            "000000",
            true,
        ),
        (
            "officer/national/000000/a",
            "generate",
            Some("legacy-card-master"),
            "000000",
            true,
        ),
        (
            "officer/national/000000/a",
            "generate",
            Some("card-master"),
            "440000",
            false,
        ),
        (
            "system/national/000000/s",
            "generate",
            Some("card-master"),
            "000000",
            false,
        ),
        (
            "officer/national/000000/a",
            "generate",
            Some("local-special"),
            "000000",
            false,
        ),
        (
            "officer/provincial/440000/a",
            "generate",
            Some("card-master"),
            "440000",
            false,
        ),
        (
            "window/municipal/440100/w",
            "generate",
            Some("card-master"),
            "000000",
            false,
        ),
        (
            "window/municipal/440100/w",
            "generate",
            Some("pin-unblock"),
            "440100",
            false,
        ),
        (
            "officer/municipal/440100/a",
            "generate",
            Some("pin-unblock"),
            "440100",
            true,
        ),
        (
            "system/municipal/440100/s",
            "generate",
            Some("pin-unblock"),
            "440100",
            false,
        ),
        (
            "system/provincial/440000/s",
            "generate",
            Some("local-special"),
            "440000",
            true,
        ),
        (
            "officer/municipal/440100/a",
            "generate",
            Some("local-file-key"),
            "440100",
            true,
        ),
        (
            "auditor/national/000000/x",
            "generate",
            Some("card-master"),
            "000000",
            false,
        ),
        // Derivation down the hierarchy.
        (
            "officer/national/000000/a",
            "derive",
            Some("card-master"),
            "440000",
            true,
        ),
        (
            "system/national/000000/s",
            "derive",
            Some("pin-unblock"),
            "440100",
            true,
        ),
        (
            "system/provincial/440000/s",
            "derive",
            Some("card-master"),
            "440100",
            true,
        ),
        (
            "system/provincial/440000/s",
            "derive",
            Some("card-master"),
            "440300",
            true,
        ),
        (
            "system/provincial/440000/s",
            "derive",
            Some("card-master"),
            "450100",
            false,
        ),
        (
            "system/provincial/440000/s",
            "derive",
            Some("card-master"),
            "440000",
            false,
        ),
        (
            "system/provincial/440000/s",
            "derive",
            Some("card-master"),
            "000000",
            false,
        ),
        (
            "system/municipal/440100/s",
            "derive",
            Some("card-master"),
            "440100",
            false,
        ),
        (
            "window/municipal/440100/w",
            "derive",
            Some("card-master"),
            "440000",
            false,
        ),
        (
            "window/municipal/440100/w",
            "derive",
            Some("card-master"),
            "440100",
            false,
        ),
        (
            "auditor/national/000000/x",
            "derive",
            Some("card-master"),
            "440000",
            false,
        ),
        (
            "admin/national/000000/x",
            "derive",
            Some("card-master"),
            "440000",
            false,
        ),
        // Card services: a city's windows, its own keys.
        (
            "window/municipal/440100/w",
            "use",
            Some("pin-unblock"),
            "440100",
            true,
        ),
        (
            "window/municipal/440100/w",
            "use",
            Some("pin-reload"),
            "440100",
            true,
        ),
        (
            "window/municipal/440100/w",
            "use",
            Some("pin-unblock"),
            "440300",
            false,
        ),
        (
            "window/municipal/440100/w",
            "use",
            Some("card-master"),
            "440100",
            false,
        ),
        (
            "officer/municipal/440100/a",
            "use",
            Some("pin-unblock"),
            "440100",
            false,
        ),
        // Reading metadata.
        (
            "auditor/municipal/440100/x",
            "read",
            Some("card-master"),
            "000000",
            true,
        ),
        ("auditor/national/000000/x", "read", None, "000000", true),
        (
            "auditor/national/000000/x",
            "read-audit",
            None,
            "000000",
            true,
        ),
        (
            "officer/provincial/440000/a",
            "read",
            Some("card-master"),
            "440100",
            true,
        ),
        (
            "officer/provincial/440000/a",
            "read",
            Some("card-master"),
            "000000",
            false,
        ),
        (
            "system/provincial/440000/s",
            "read",
            Some("card-master"),
            "450000",
            false,
        ),
        (
            "window/municipal/440100/w",
            "read",
            Some("pin-unblock"),
            "440100",
            true,
        ),
        (
            "window/municipal/440100/w",
            "read",
            Some("pin-unblock"),
            "440000",
            false,
        ),
        (
            "officer/national/000000/a",
            "read-audit",
            None,
            "000000",
            false,
        ),
        // Transport.
        (
            "system/national/000000/s",
            "export",
            Some("card-master"),
            "440000",
            true,
        ),
        (
            "system/provincial/440000/s",
            "export",
            Some("card-master"),
            "440100",
            true,
        ),
        (
            "system/provincial/440000/s",
            "export",
            Some("card-master"),
            "450100",
            false,
        ),
        (
            "system/municipal/440100/s",
            "export",
            Some("card-master"),
            "440100",
            false,
        ),
        (
            "system/provincial/440000/s",
            "import",
            Some("card-master"),
            "440000",
            true,
        ),
        (
            "system/provincial/440000/s",
            "import",
            Some("card-master"),
            "440100",
            false,
        ),
        // Management and approvals.
        (
            "officer/national/000000/a",
            "manage",
            Some("card-master"),
            "440000",
            true,
        ),
        (
            "officer/provincial/440000/a",
            "manage",
            Some("card-master"),
            "000000",
            false,
        ),
        (
            "auditor/national/000000/x",
            "manage",
            Some("card-master"),
            "000000",
            false,
        ),
        ("admin/national/000000/x", "manage", None, "000000", true),
        (
            "admin/national/000000/x",
            "manage",
            Some("card-master"),
            "000000",
            false,
        ),
        ("officer/national/000000/a", "manage", None, "000000", false),
        ("officer/national/000000/a", "read", None, "000000", true),
        ("window/municipal/440100/w", "read", None, "440100", false),
        ("admin/provincial/440000/x", "manage", None, "000000", false),
        ("officer/national/000000/a", "approve", None, "000000", true),
        (
            "window/municipal/440100/w",
            "approve",
            None,
            "440100",
            false,
        ),
        // Looking up an ID number: auditors of the city and above it; nobody else.
        (
            "auditor/municipal/440100/x",
            "find-id",
            None,
            "440100",
            true,
        ),
        ("auditor/national/000000/x", "find-id", None, "440100", true),
        (
            "auditor/provincial/440000/x",
            "find-id",
            None,
            "440100",
            true,
        ),
        (
            "auditor/provincial/450000/x",
            "find-id",
            None,
            "440100",
            false,
        ),
        (
            "auditor/municipal/440300/x",
            "find-id",
            None,
            "440100",
            false,
        ),
        (
            "window/municipal/440100/w",
            "find-id",
            None,
            "440100",
            false,
        ),
        (
            "officer/municipal/440100/a",
            "find-id",
            None,
            "440100",
            false,
        ),
        ("admin/municipal/440100/a", "find-id", None, "440100", false),
    ];

    #[test]
    fn default_policy_decides_the_programme_table() {
        let p = policy();
        assert!(CASES.len() >= 30);
        for (who, op, key_type, target, want) in CASES {
            let who = Identity::from_uri(&format!("hkms://{who}")).unwrap();
            let op: Operation = op.parse().unwrap();
            let target = Region::parse(target).unwrap();
            let d = p.decide(&who, op, *key_type, &target);
            assert_eq!(
                d.allowed, *want,
                "{who} {op} {key_type:?} {target}: {}",
                d.reason
            );
            assert_eq!(d.rule.is_some(), *want);
            assert!(
                d.reason
                    .starts_with(if *want { "allowed: " } else { "denied: " })
            );
        }
    }

    #[test]
    fn denial_names_the_request_and_the_closest_rule() {
        let p = policy();
        let who = Identity::from_uri("hkms://window/municipal/440100/w1").unwrap();
        let d = p.decide(
            &who,
            Operation::Derive,
            Some("card-master"),
            &Region::parse("440000").unwrap(),
        );
        assert!(
            d.reason
                .starts_with("denied: role window at 440100 may not derive card-master for 440000"),
            "{}",
            d.reason
        );
        assert!(d.reason.contains("closest: rule"), "{}", d.reason);
    }

    #[test]
    fn allowance_names_its_rule_and_line() {
        let p = policy();
        let who = Identity::from_uri("hkms://officer/national/000000/a").unwrap();
        let d = p.decide(
            &who,
            Operation::Generate,
            Some("card-master"),
            &Region::NATIONAL,
        );
        assert_eq!(d.rule.as_deref(), Some("ministry-generates-national-keys"));
        assert!(d.reason.contains("line "), "{}", d.reason);
    }

    #[test]
    fn an_operation_no_rule_mentions_is_denied() {
        let text = DEFAULT.replace("operations = [\"use\"]", "operations = [\"read\"]");
        let p = Policy::parse(&text, "x.toml").unwrap();
        let who = Identity::from_uri("hkms://window/municipal/440100/w").unwrap();
        let d = p.decide(
            &who,
            Operation::Use,
            Some("pin-unblock"),
            &who.region.clone(),
        );
        assert!(!d.allowed);
        assert!(
            d.reason.contains("no rule allows use at all"),
            "{}",
            d.reason
        );
    }
    #[test]
    fn the_closest_rule_is_the_first_that_fails_fewest_checks() {
        // For an officer of the ministry using card-master: pin-services fails 3 checks
        // (roles, tiers, key types), use-a 2 (roles, tiers), use-b and use-c 1 (tiers) each.
        let mut text = DEFAULT.to_string();
        for (id, role, tier) in [
            ("use-a", "window", "municipal"),
            ("use-b", "officer", "municipal"),
            ("use-c", "officer", "provincial"),
        ] {
            text.push_str(&format!(
                "\n[[rules]]\nid = \"{id}\"\noperations = [\"use\"]\nroles = [\"{role}\"]\n\
                 tiers = [\"{tier}\"]\nkey_types = [\"card-master\"]\nregions = [\"self\"]\n"
            ));
        }
        let p = Policy::parse(&text, "x.toml").unwrap();
        let who = Identity::from_uri("hkms://officer/national/000000/a").unwrap();
        let d = p.decide(&who, Operation::Use, Some("card-master"), &Region::NATIONAL);
        assert!(!d.allowed);
        let line = text.lines().position(|l| l == "id = \"use-b\"").unwrap();
        assert!(
            d.reason.ends_with(&format!(
                "(no rule allows it; closest: rule use-b (line {line}) is for tiers municipal)"
            )),
            "{}",
            d.reason
        );
    }
}
