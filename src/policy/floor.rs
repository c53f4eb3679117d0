//! The dual-control floor: what a new policy would weaken of the one in force.
//!
//! Why: dual control is only as strong as the way the policy changes. If the host's
//! administrator could put any file in force (a restart, SIGHUP), one person could drop a
//! quorum and then act alone. So the node compares every new policy with the one in force, and
//! puts a weaker one in force only through a `reload-policy` ceremony approved under the
//! policy in force. This module is the comparison: a pure function with its own table of
//! tests, which a reviewer can check against docs/identity-and-policy.md in one sitting.
//!
//! Weaker means any of:
//! - an operation on a key type (or on no key type) that needed a ceremony would need none;
//! - a quorum lowered: fewer approvals (M), or as many approvals out of more officers (N);
//! - a caller role, tier or region scope added among those who may approve ceremonies;
//! - a rule widened for an operation under a quorum: a role, tier or region scope that may
//!   now ask for it on a key type under that quorum and could not before;
//! - any change to the officer roster, or its removal (approvals would count certificates).
//!
//! Everything else (a new key type, a raised quorum, a removed rule, card limits, comments)
//! is not a weakening. Coverage is compared, not sections: moving a key type from one rule to
//! another, or renaming a rule, weakens nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::{Operation, Policy, Quorum, RegionScope, Role, TRANSPORT_KEY_TYPE};
use crate::hierarchy::Tier;

/// Who a rule lets ask: a caller role and tier, and the target regions relative to theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Grant {
    /// The caller's role.
    pub role: Role,
    /// The caller's tier.
    pub tier: Tier,
    /// The target regions.
    pub regions: RegionScope,
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "role {} at the {} tier (regions {})",
            self.role, self.tier, self.regions
        )
    }
}

/// One way a new policy is weaker than the one in force, with the key types concerned
/// (`None`: requests about no key type, such as a policy reload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Weakening {
    /// These operations would need no ceremony any more.
    CeremonyRemoved {
        /// The operation.
        operation: Operation,
        /// The key types concerned.
        key_types: Vec<Option<String>>,
        /// The quorum (M, N) they need now.
        was: (u32, u32),
    },
    /// Their quorum would be lower.
    QuorumLowered {
        /// The operation.
        operation: Operation,
        /// The key types concerned.
        key_types: Vec<Option<String>>,
        /// The quorum (M, N) now.
        was: (u32, u32),
        /// The quorum (M, N) the new file sets.
        now: (u32, u32),
    },
    /// Callers who may not approve ceremonies now would be allowed to.
    ApproverAdded {
        /// Who would be added.
        grant: Grant,
    },
    /// A rule would let more callers ask for an operation under a quorum.
    RuleWidened {
        /// The operation.
        operation: Operation,
        /// Who would be added.
        grant: Grant,
        /// The key types concerned.
        key_types: Vec<Option<String>>,
    },
    /// The roster of officers would change.
    RosterChanged {
        /// What changes, person by person.
        changes: Vec<String>,
    },
    /// The roster would be removed: approvals would count certificates, not persons.
    RosterRemoved,
}

/// Key types as the weakenings name them (`None`: no key type).
type Subjects = Vec<Option<String>>;

/// A quorum as (M, N).
type MofN = (u32, u32);

fn subjects(list: &[Option<String>]) -> String {
    list.iter()
        .map(|k| {
            k.as_deref()
                .unwrap_or("(no key type: policy reloads, card issuing)")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

impl fmt::Display for Weakening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Weakening::CeremonyRemoved {
                operation,
                key_types,
                was,
            } => write!(
                f,
                "{operation} {} would need no ceremony (it needs {} of {} approvals)",
                subjects(key_types),
                was.0,
                was.1
            ),
            Weakening::QuorumLowered {
                operation,
                key_types,
                was,
                now,
            } => write!(
                f,
                "the quorum of {operation} {} would drop from {} of {} to {} of {}",
                subjects(key_types),
                was.0,
                was.1,
                now.0,
                now.1
            ),
            Weakening::ApproverAdded { grant } => {
                write!(f, "{grant} would be allowed to approve ceremonies")
            }
            Weakening::RuleWidened {
                operation,
                grant,
                key_types,
            } => write!(
                f,
                "{grant} would be allowed to {operation} {}, which is under dual control",
                subjects(key_types)
            ),
            Weakening::RosterChanged { changes } => {
                write!(f, "the officer roster would change: {}", changes.join(", "))
            }
            Weakening::RosterRemoved => f.write_str(
                "the officer roster would be removed: approvals would count certificates, not \
                 persons",
            ),
        }
    }
}

/// What `new` weakens of `old` (the policy in force); empty when `new` is as strong or
/// stronger. In a stable order: ceremonies and rules by operation, then approvers, then the
/// roster.
pub fn weakenings(old: &Policy, new: &Policy) -> Vec<Weakening> {
    let mut out = Vec::new();
    let all = key_types_of(old, new);
    for op in Operation::ALL {
        let mut removed: BTreeMap<MofN, Subjects> = BTreeMap::new();
        let mut lowered: BTreeMap<(MofN, MofN), Subjects> = BTreeMap::new();
        let mut widened: BTreeMap<Grant, Subjects> = BTreeMap::new();
        for k in &all {
            let Some(was) = old.quorum(op, k.as_deref()) else {
                continue;
            };
            match new.quorum(op, k.as_deref()) {
                None => removed.entry(m_of_n(was)).or_default().push(k.clone()),
                Some(now) if weaker(was, now) => lowered
                    .entry((m_of_n(was), m_of_n(now)))
                    .or_default()
                    .push(k.clone()),
                Some(_) => {}
            }
            let before = grants(old, op, k.as_deref());
            for g in grants(new, op, k.as_deref()) {
                if !covered(&g, &before) {
                    widened.entry(g).or_default().push(k.clone());
                }
            }
        }
        out.extend(
            removed
                .into_iter()
                .map(|(was, key_types)| Weakening::CeremonyRemoved {
                    operation: op,
                    key_types,
                    was,
                }),
        );
        out.extend(
            lowered
                .into_iter()
                .map(|((was, now), key_types)| Weakening::QuorumLowered {
                    operation: op,
                    key_types,
                    was,
                    now,
                }),
        );
        out.extend(
            widened
                .into_iter()
                .map(|(grant, key_types)| Weakening::RuleWidened {
                    operation: op,
                    grant,
                    key_types,
                }),
        );
    }
    // Who may approve matters once anything is under dual control.
    if !old.quorums.is_empty() {
        let before = grants(old, Operation::Approve, None);
        out.extend(
            grants(new, Operation::Approve, None)
                .into_iter()
                .filter(|g| !covered(g, &before))
                .map(|grant| Weakening::ApproverAdded { grant }),
        );
    }
    match (&old.roster, &new.roster) {
        (Some(was), Some(now)) if was != now => out.push(Weakening::RosterChanged {
            changes: now.changes_from(was),
        }),
        (Some(_), None) => out.push(Weakening::RosterRemoved),
        // A roster where there was none counts persons where certificates counted: stronger.
        _ => {}
    }
    out
}

/// Every key type either policy knows, transport keys, and no key type.
fn key_types_of(old: &Policy, new: &Policy) -> Vec<Option<String>> {
    let named: BTreeSet<&str> = old.catalogue.names().chain(new.catalogue.names()).collect();
    std::iter::once(None)
        .chain(std::iter::once(Some(TRANSPORT_KEY_TYPE.to_string())))
        .chain(named.into_iter().map(|k| Some(k.to_string())))
        .collect()
}

fn m_of_n(q: &Quorum) -> MofN {
    (q.approvals, q.officers)
}

/// Fewer approvals, or as many out of more officers.
fn weaker(was: &Quorum, now: &Quorum) -> bool {
    now.approvals < was.approvals || (now.approvals == was.approvals && now.officers > was.officers)
}

/// Who the rules of `policy` let ask for `op` on `key_type`.
fn grants(policy: &Policy, op: Operation, key_type: Option<&str>) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for r in policy
        .rules
        .iter()
        .filter(|r| r.operations.contains(&op) && r.key_types.covers(key_type))
    {
        for role in &r.roles {
            for tier in &r.tiers {
                for regions in &r.regions {
                    out.insert(Grant {
                        role: *role,
                        tier: *tier,
                        regions: *regions,
                    });
                }
            }
        }
    }
    out
}

/// Whether `g` was already granted: same role and tier, over regions that include its own.
fn covered(g: &Grant, before: &BTreeSet<Grant>) -> bool {
    before
        .iter()
        .any(|b| b.role == g.role && b.tier == g.tier && includes(b.regions, g.regions))
}

fn includes(wide: RegionScope, narrow: RegionScope) -> bool {
    wide == narrow
        || wide == RegionScope::Any
        || (wide == RegionScope::Descendants && narrow == RegionScope::Children)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = include_str!("../../policies/default.toml");

    fn parse(text: &str) -> Policy {
        Policy::parse(text, "p.toml").unwrap()
    }

    /// The weakenings of `text` against the default policy, as sentences.
    fn against_default(text: &str) -> Vec<String> {
        assert_ne!(text, DEFAULT, "the edit did not apply");
        weakenings(&parse(DEFAULT), &parse(text))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn roster(people: &[(&str, &[char])]) -> String {
        people
            .iter()
            .map(|(name, keys)| {
                let keys: Vec<String> = keys
                    .iter()
                    .map(|c| format!("\"{}\"", c.to_string().repeat(64)))
                    .collect();
                format!(
                    "\n[officers.{name}]\ncertificates = [{}]\n",
                    keys.join(", ")
                )
            })
            .collect()
    }

    #[test]
    fn the_same_policy_weakens_nothing() {
        assert!(weakenings(&parse(DEFAULT), &parse(DEFAULT)).is_empty());
    }

    #[test]
    fn a_removed_ceremony_section_is_a_weakening() {
        let text = DEFAULT.replacen(
            "[ceremonies.generate]\nquorum = 2\nofficers = 3\nkey_types = [\"card-master\", \"pin-unblock\", \"pin-reload\", \"external-auth\", \"legacy-card-master\"]\ndescription = \"Generating a national control key.\"\n",
            "",
            1,
        );
        let w = against_default(&text);
        assert_eq!(w.len(), 1, "{w:?}");
        assert_eq!(
            w[0],
            "generate card-master, external-auth, legacy-card-master, pin-reload, pin-unblock \
             would need no ceremony (it needs 2 of 3 approvals)"
        );
    }

    #[test]
    fn narrowing_a_ceremony_s_key_types_is_a_weakening() {
        let text = DEFAULT.replacen(
            "key_types = [\"card-master\", \"pin-unblock\", \"pin-reload\", \"external-auth\", \"legacy-card-master\"]\ndescription = \"Generating",
            "key_types = [\"pin-unblock\", \"pin-reload\", \"external-auth\", \"legacy-card-master\"]\ndescription = \"Generating",
            1,
        );
        let w = against_default(&text);
        assert_eq!(
            w,
            vec!["generate card-master would need no ceremony (it needs 2 of 3 approvals)"]
        );
        // Manage of no key type (policy reloads) taken out of [ceremonies.manage].
        let text = DEFAULT.replacen(
            "key_types = [\"*\", \"none\"]\ndescription = \"Retiring",
            "key_types = [\"*\"]\ndescription = \"Retiring",
            1,
        );
        let w = against_default(&text);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].starts_with("manage (no key type"), "{w:?}");
    }

    #[test]
    fn a_lowered_quorum_is_a_weakening_and_a_raised_one_is_not() {
        let with = |m: u32, n: u32| {
            DEFAULT.replacen(
                "[ceremonies.generate]\nquorum = 2\nofficers = 3",
                &format!("[ceremonies.generate]\nquorum = {m}\nofficers = {n}"),
                1,
            )
        };
        let w = against_default(&with(1, 3));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("the quorum of generate card-master,")
                && w[0].ends_with("would drop from 2 of 3 to 1 of 3"),
            "{w:?}"
        );
        // As many approvals out of more officers: weaker.
        assert!(against_default(&with(2, 5))[0].ends_with("from 2 of 3 to 2 of 5"));
        // More approvals, or as many out of fewer officers: stronger.
        assert!(against_default(&with(3, 3)).is_empty());
        assert!(against_default(&with(2, 2)).is_empty());
        assert!(against_default(&with(3, 5)).is_empty());
    }

    #[test]
    fn an_added_approver_role_tier_or_region_is_a_weakening() {
        let add_approvers = |roles: &str, tiers: &str, regions: &str| {
            format!(
                "{DEFAULT}\n[[rules]]\nid = \"more-approvers\"\noperations = [\"approve\"]\n\
                 roles = [{roles}]\ntiers = [{tiers}]\nkey_types = [\"none\"]\nregions = [{regions}]\n"
            )
        };
        let w = against_default(&add_approvers("\"system\"", "\"national\"", "\"self\""));
        assert_eq!(
            w,
            vec![
                "role system at the national tier (regions self) would be allowed to approve \
                 ceremonies"
            ]
        );
        let w = against_default(&add_approvers(
            "\"officer\"",
            "\"provincial\"",
            "\"children\"",
        ));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("role officer at the provincial tier (regions children)"));
        // Officers already approve at their own node; approving for any region is more.
        let w = against_default(&add_approvers("\"officer\"", "\"national\"", "\"any\""));
        assert_eq!(w.len(), 1, "{w:?}");
        // What is already there adds nothing.
        assert!(
            against_default(&add_approvers("\"officer\"", "\"national\"", "\"self\"")).is_empty()
        );
    }

    #[test]
    fn a_rule_widened_for_a_dual_control_operation_is_a_weakening() {
        // The ministry's systems added to the rule that generates national keys.
        let text = DEFAULT.replacen(
            "operations = [\"generate\"]\nroles = [\"officer\"]\ntiers = [\"national\"]",
            "operations = [\"generate\"]\nroles = [\"officer\", \"system\"]\ntiers = [\"national\"]",
            1,
        );
        let w = against_default(&text);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(
                "role system at the national tier (regions self) would be allowed to generate card-master,"
            ) && w[0].ends_with("which is under dual control"),
            "{w:?}"
        );
        // A new rule that lets officers manage (retire, destroy) keys of any region.
        let text = format!(
            "{DEFAULT}\n[[rules]]\nid = \"manage-anywhere\"\noperations = [\"manage\"]\n\
             roles = [\"officer\"]\ntiers = [\"provincial\"]\nkey_types = [\"card-master\"]\nregions = [\"any\"]\n"
        );
        let w = against_default(&text);
        assert_eq!(
            w,
            vec![
                "role officer at the provincial tier (regions any) would be allowed to manage \
                 card-master, which is under dual control"
            ]
        );
        // Reloading the policy opened to officers.
        let text = DEFAULT.replacen(
            "operations = [\"manage\", \"read\"]\nroles = [\"admin\"]",
            "operations = [\"manage\", \"read\"]\nroles = [\"admin\", \"officer\"]",
            1,
        );
        let w = against_default(&text);
        assert!(
            w.iter().any(|s| s.starts_with(
                "role officer at the national tier (regions self) would be allowed to manage (no key type"
            )),
            "{w:?}"
        );
    }

    #[test]
    fn a_rule_widened_for_an_operation_no_ceremony_guards_is_not_a_weakening() {
        let text = DEFAULT.replacen(
            "operations = [\"derive\"]\nroles = [\"officer\", \"system\"]\ntiers = [\"provincial\"]",
            "operations = [\"derive\"]\nroles = [\"officer\", \"system\"]\ntiers = [\"provincial\", \"municipal\"]",
            1,
        );
        assert!(against_default(&text).is_empty());
    }

    #[test]
    fn any_change_to_the_roster_is_a_weakening() {
        let alice_bob = roster(&[("alice", &['a', 'b']), ("bob", &['c'])]);
        let old = parse(&format!("{DEFAULT}{alice_bob}"));
        for (other, says) in [
            (
                roster(&[("alice", &['a', 'b']), ("bob", &['c', 'd'])]),
                format!("certificate key {} added to bob", "d".repeat(64)),
            ),
            (
                roster(&[("alice", &['a']), ("bob", &['c'])]),
                format!("certificate key {} taken from alice", "b".repeat(64)),
            ),
            (
                roster(&[("alice", &['a', 'b']), ("bob", &['c']), ("carol", &['e'])]),
                "person carol added".to_string(),
            ),
            (
                roster(&[("alice", &['a', 'b'])]),
                "person bob removed".to_string(),
            ),
        ] {
            let w = weakenings(&old, &parse(&format!("{DEFAULT}{other}")));
            assert_eq!(w.len(), 1, "{w:?}");
            let s = w[0].to_string();
            assert!(s.starts_with("the officer roster would change: "), "{s}");
            assert!(s.contains(&says), "{s}");
        }
        let w = weakenings(&old, &parse(DEFAULT));
        assert_eq!(w, vec![Weakening::RosterRemoved]);
        assert!(w[0].to_string().contains("count certificates, not persons"));
        // A roster where there was none counts persons instead of certificates: stronger.
        assert!(weakenings(&parse(DEFAULT), &old).is_empty());
        // The same roster, written in another order: no change.
        let reordered = roster(&[("bob", &['c']), ("alice", &['b', 'a'])]);
        assert!(weakenings(&old, &parse(&format!("{DEFAULT}{reordered}"))).is_empty());
    }

    #[test]
    fn stronger_and_unrelated_changes_weaken_nothing() {
        // A new key type, with a rule for it.
        let new_type = DEFAULT.replacen(
            "[key_types.local-file-key]",
            "[key_types.city-extra]\nalgorithm = \"aes128\"\nusage = \"derive\"\nfamily = \"aes-ecb\"\n\
             generate_at = [\"provincial\", \"municipal\"]\ndescription = \"x\"\n\n[key_types.local-file-key]",
            1,
        )
        .replacen(
            "key_types = [\"local-special\", \"local-file-key\"]",
            "key_types = [\"local-special\", \"local-file-key\", \"city-extra\"]",
            1,
        );
        assert!(against_default(&new_type).is_empty());
        // A raised quorum.
        assert!(
            against_default(&DEFAULT.replacen(
                "quorum = 2\nofficers = 3",
                "quorum = 3\nofficers = 3",
                1
            ))
            .is_empty()
        );
        // A removed rule.
        let no_bureau = DEFAULT.replacen("id = \"bureau-card\"", "id = \"bureau-card-x\"", 1);
        let removed = {
            let start = no_bureau.find("[[rules]]\nid = \"bureau-card-x\"").unwrap();
            let end = start + no_bureau[start..].find("\n\n").unwrap() + 2;
            format!("{}{}", &no_bureau[..start], &no_bureau[end..])
        };
        assert!(against_default(&removed).is_empty());
        // A comment, a description, card limits.
        assert!(against_default(&format!("# a comment\n{DEFAULT}")).is_empty());
        assert!(
            against_default(&DEFAULT.replacen(
                "description = \"Generating a national control key.\"",
                "description = \"National control keys.\"",
                1
            ))
            .is_empty()
        );
        assert!(
            against_default(&DEFAULT.replacen("per_card_per_day = 10", "per_card_per_day = 20", 1))
                .is_empty()
        );
        // A key type moved to another rule with the same callers, under another id.
        let split = DEFAULT.replacen(
            ", \"legacy-card-master\"]\nregions = [\"self\"]",
            "]\nregions = [\"self\"]",
            1,
        );
        let split = format!(
            "{split}\n[[rules]]\nid = \"legacy\"\noperations = [\"generate\"]\nroles = [\"officer\"]\n\
             tiers = [\"national\"]\nkey_types = [\"legacy-card-master\"]\nregions = [\"self\"]\n"
        );
        assert!(against_default(&split).is_empty());
    }

    #[test]
    fn approvers_are_no_floor_while_nothing_is_under_dual_control() {
        let none = DEFAULT
            .split("[ceremonies.generate]")
            .next()
            .unwrap()
            .to_string();
        let more = format!(
            "{none}\n[[rules]]\nid = \"more-approvers\"\noperations = [\"approve\"]\n\
             roles = [\"system\"]\ntiers = [\"national\"]\nkey_types = [\"none\"]\nregions = [\"self\"]\n"
        );
        assert!(weakenings(&parse(&none), &parse(&more)).is_empty());
    }
}
