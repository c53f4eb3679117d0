//! The policy: the programme's key types and who may do what, loaded from a TOML file
//! (`policies/default.toml`) and decided by a pure function ([`engine::decide`]). No I/O here
//! but loading the file.

pub mod engine;
pub mod floor;
mod identity;
mod limits;
mod operation;
mod revoked;
mod roster;
mod rules;
mod scope;

use std::path::Path;

use sha2::{Digest, Sha256};

pub use engine::Decision;
pub use floor::{Weakening, weakenings};
pub use identity::{IDENTITY_SCHEME, Identity, Role};
pub use limits::CardLimits;
pub use operation::Operation;
pub use revoked::RevokedCerts;
pub use roster::{CertificateKey, Roster};
pub use rules::{ANY_KEY_TYPE, KeyTypes, NO_KEY_TYPE, PinRules, Quorum, Rule, TRANSPORT_KEY_TYPE};
pub use scope::RegionScope;

use crate::hierarchy::{HierarchyError, KeyTypeCatalogue, Region};

/// A policy that cannot be loaded: where, and what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{origin}{}: {message}", line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct PolicyError {
    /// The file.
    pub origin: String,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong and what to do.
    pub message: String,
}

impl From<HierarchyError> for PolicyError {
    fn from(e: HierarchyError) -> Self {
        match e {
            HierarchyError::PolicySyntax {
                origin,
                line,
                message,
            } => PolicyError {
                origin,
                line,
                message,
            },
            HierarchyError::PolicyRule {
                origin,
                line,
                key_type,
                reason,
            } => PolicyError {
                origin,
                line,
                message: format!("key type `{key_type}`: {reason}"),
            },
            other => PolicyError {
                origin: String::new(),
                line: None,
                message: other.to_string(),
            },
        }
    }
}

/// A loaded, checked policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The key types.
    pub catalogue: KeyTypeCatalogue,
    /// The allow rules.
    pub rules: Vec<Rule>,
    /// Dual-control requirements.
    pub quorums: Vec<Quorum>,
    /// Card PIN rules.
    pub pins: PinRules,
    /// Velocity limits on card commands (the defaults when the file has no `[card_limits]`).
    pub card_limits: CardLimits,
    /// The officers who approve ceremonies, as persons (`[officers.NAME]`); `None` when the
    /// file names none, and approvals then count certificate identities.
    pub roster: Option<Roster>,
    /// SHA-256 of the file's bytes, hex: tells auditors which policy decided.
    pub sha256: String,
    /// Where it was loaded from.
    pub origin: String,
    /// The file's text (policies are not secret).
    pub text: String,
}

/// The longest policy file hkms takes, in bytes. `GetPolicy` answers with the file's text, and
/// no answer of the API is bigger than 1 MiB (docs/api.md); real policies are a few KiB.
pub const MAX_POLICY_BYTES: usize = 256 * 1024;

impl Policy {
    /// Parses and checks a policy text.
    pub fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        if text.len() > MAX_POLICY_BYTES {
            return Err(PolicyError {
                origin: origin.to_string(),
                line: None,
                message: format!(
                    "the file is {} bytes; a policy is at most {MAX_POLICY_BYTES} bytes (256 KiB)",
                    text.len()
                ),
            });
        }
        let catalogue = KeyTypeCatalogue::from_toml_str(text, origin)?;
        let (rules, quorums) = rules::parse(text, origin, &catalogue)?;
        let pins = rules::parse_pins(text, origin)?;
        let card_limits = limits::parse_card_limits(text, origin)?;
        let roster = roster::parse_roster(text, origin)?;
        Ok(Policy {
            catalogue,
            rules,
            quorums,
            pins,
            card_limits,
            roster,
            sha256: hex::encode(Sha256::digest(text.as_bytes())),
            origin: origin.to_string(),
            text: text.to_string(),
        })
    }

    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            origin: origin.clone(),
            line: None,
            message: format!("cannot read the policy file: {e}"),
        })?;
        Policy::parse(&text, &origin)
    }

    /// Decides one request (see [`engine::decide`]).
    pub fn decide(
        &self,
        who: &Identity,
        op: Operation,
        key_type: Option<&str>,
        target: &Region,
    ) -> Decision {
        engine::decide(self, who, op, key_type, target)
    }

    /// Whether some rule lets `who`'s role and tier do `op` at all, whatever the key and
    /// region. A refusal on one key can then be answered like a missing key, so that a caller
    /// cannot learn which keys exist from the answers.
    pub fn may_ever(&self, who: &Identity, op: Operation) -> bool {
        self.rules.iter().any(|r| {
            r.operations.contains(&op) && r.roles.contains(&who.role) && r.tiers.contains(&who.tier)
        })
    }

    /// The quorum an operation on a key type needs, if it is a ceremony.
    pub fn quorum(&self, op: Operation, key_type: Option<&str>) -> Option<&Quorum> {
        self.quorums
            .iter()
            .find(|q| q.operation == op && q.key_types.covers(key_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: &str = include_str!("../../policies/default.toml");

    #[test]
    fn a_quorum_applies_to_its_own_operation_and_key_types_only() {
        let p = Policy::parse(DEFAULT, "default.toml").unwrap();
        let generate = p.quorum(Operation::Generate, Some("card-master")).unwrap();
        assert_eq!(generate.operation, Operation::Generate);
        // `[ceremonies.manage]` covers every key type, but not generation.
        assert!(
            p.quorum(Operation::Generate, Some("local-special"))
                .is_none()
        );
        // `[ceremonies.generate]` covers card-master, but not derivation.
        assert!(p.quorum(Operation::Derive, Some("card-master")).is_none());
        let manage = p.quorum(Operation::Manage, None).unwrap();
        assert_eq!(manage.operation, Operation::Manage);
    }

    #[test]
    fn a_policy_file_past_its_size_is_refused_with_the_size() {
        // Comment lines keep the policy what it was: only the size differs.
        let mut big = DEFAULT.to_string();
        while big.len() <= MAX_POLICY_BYTES {
            big.push_str("# padding to pass the size a policy may have\n");
        }
        let err = Policy::parse(&big, "big.toml").unwrap_err();
        assert!(
            err.message.contains("at most 262144 bytes"),
            "{}",
            err.message
        );
        big.truncate(MAX_POLICY_BYTES - 64);
        big.truncate(big.rfind('\n').unwrap() + 1);
        assert!(Policy::parse(&big, "big.toml").is_ok());
    }
}
