//! What a ceremony runs once its quorum is met, as one typed value. On the wire, in the
//! registry and in records it is the guarded operation plus a small map of text parameters;
//! [`CeremonyAction::parse`] is the one place that map is read.

use std::collections::BTreeMap;

use crate::hierarchy::{KeyId, KeyState, KeyTypeName, Region};
use crate::policy::Operation;

use super::super::{InField, NodeError};

/// A guarded operation with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CeremonyAction {
    /// `generate`: make a key of `key_type`, or enter it as 2 or 3 clear components.
    Generate {
        /// The key type to make.
        key_type: KeyTypeName,
        /// How many custodians each enter one component (none: the HSM generates it).
        components: Option<u8>,
    },
    /// `manage` of a key: retire or destroy it.
    ChangeKeyState {
        /// The key.
        key_id: KeyId,
        /// `retired` or `destroyed`.
        state: KeyState,
    },
    /// `manage`, action `reload-policy`: put the policy file with this SHA-256 in force.
    ReloadPolicy {
        /// The approved file's SHA-256, as given (`None` only in ceremonies an hkms before
        /// the hash was required opened: they cannot run).
        sha256: Option<String>,
    },
    /// `manage`, action `issue-card`: approves issuing one transport key card for `region`.
    IssueCard {
        /// The region the card is for.
        region: Region,
    },
}

/// The parameters each operation takes.
fn known(op: Operation) -> Result<&'static [&'static str], NodeError> {
    match op {
        Operation::Generate => Ok(&["key_type", "components"]),
        Operation::Manage => Ok(&["key_id", "state", "action", "region", "policy_sha256"]),
        other => Err(NodeError::invalid_field(
            "operation",
            format!("`{other}` is not run by ceremony; ceremonies run generate and manage"),
        )),
    }
}

impl CeremonyAction {
    /// Reads an action from its operation and parameters, refusing unknown, missing or
    /// malformed ones. What the policy must also allow (the key type exists, the caller may)
    /// is checked by the ceremony when it opens.
    pub fn parse(op: Operation, params: &BTreeMap<String, String>) -> Result<Self, NodeError> {
        let allowed = known(op)?;
        if let Some(k) = params.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(NodeError::invalid_field(
                "params",
                format!(
                    "unknown ceremony parameter `{k}` for {op} (known: {})",
                    allowed.join(", ")
                ),
            ));
        }
        let get = |k: &str| params.get(k).map(String::as_str);
        if op == Operation::Generate {
            let key_type = get("key_type").ok_or_else(|| {
                NodeError::invalid_field("params.key_type", "a generate ceremony needs key_type")
            })?;
            let components = match get("components") {
                None => None,
                Some("2") => Some(2),
                Some("3") => Some(3),
                Some(n) => {
                    return Err(NodeError::invalid_field(
                        "params.components",
                        format!("components must be 2 or 3, not `{n}`"),
                    ));
                }
            };
            return Ok(CeremonyAction::Generate {
                key_type: KeyTypeName::parse(key_type)
                    .map_err(NodeError::from)
                    .field("params.key_type")?,
                components,
            });
        }
        match (get("action"), get("key_id")) {
            (Some("reload-policy"), None) => Ok(CeremonyAction::ReloadPolicy {
                sha256: get("policy_sha256").map(str::to_string),
            }),
            (Some("issue-card"), None) => Ok(CeremonyAction::IssueCard {
                region: Region::parse(get("region").unwrap_or_default())
                    .map_err(NodeError::from)
                    .field("params.region")?,
            }),
            (None, Some(key_id)) => Ok(CeremonyAction::ChangeKeyState {
                key_id: KeyId::parse(key_id)
                    .map_err(NodeError::from)
                    .field("params.key_id")?,
                state: get("state")
                    .unwrap_or_default()
                    .parse()
                    .map_err(|e| NodeError::invalid_field("params.state", format!("state: {e}")))?,
            }),
            _ => Err(NodeError::invalid_field(
                "params",
                "a manage ceremony needs key_id and state, action = reload-policy, or action = \
                 issue-card with region",
            )),
        }
    }

    /// [`CeremonyAction::parse`] for a ceremony being opened: also refuses a parameter the
    /// action does not use (a parameter the officers approve must be one the ceremony runs
    /// with). Stored ceremonies are read with `parse`, which leaves such extras out.
    pub fn parse_new(op: Operation, params: &BTreeMap<String, String>) -> Result<Self, NodeError> {
        let action = Self::parse(op, params)?;
        let used = action.params();
        if let Some(k) = params.keys().find(|k| !used.contains_key(*k)) {
            return Err(NodeError::invalid_field(
                "params",
                format!(
                    "ceremony parameter `{k}` is not used by this {op} ceremony (it takes: {})",
                    used.keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        Ok(action)
    }

    /// The guarded operation.
    pub fn operation(&self) -> Operation {
        match self {
            CeremonyAction::Generate { .. } => Operation::Generate,
            _ => Operation::Manage,
        }
    }

    /// The parameters as the wire, the registry and the records carry them.
    pub fn params(&self) -> BTreeMap<String, String> {
        let pairs: Vec<(&str, String)> = match self {
            CeremonyAction::Generate {
                key_type,
                components,
            } => std::iter::once(("key_type", key_type.as_str().to_string()))
                .chain(components.map(|n| ("components", n.to_string())))
                .collect(),
            CeremonyAction::ChangeKeyState { key_id, state } => {
                vec![("key_id", key_id.to_string()), ("state", state.to_string())]
            }
            CeremonyAction::ReloadPolicy { sha256 } => {
                std::iter::once(("action", "reload-policy".into()))
                    .chain(sha256.clone().map(|h| ("policy_sha256", h)))
                    .collect()
            }
            CeremonyAction::IssueCard { region } => vec![
                ("action", "issue-card".into()),
                ("region", region.to_string()),
            ],
        };
        pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }

    /// How many components custodians enter, for a component ceremony.
    pub fn components(&self) -> Option<usize> {
        match self {
            CeremonyAction::Generate { components, .. } => components.map(usize::from),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_action_reads_back_from_its_own_parameters() {
        let actions = [
            CeremonyAction::Generate {
                key_type: KeyTypeName::parse("card-master").unwrap(),
                components: None,
            },
            CeremonyAction::Generate {
                key_type: KeyTypeName::parse("card-master").unwrap(),
                components: Some(3),
            },
            CeremonyAction::ChangeKeyState {
                key_id: KeyId::new_random(),
                state: KeyState::Destroyed,
            },
            CeremonyAction::ReloadPolicy {
                sha256: Some("ab".repeat(32)),
            },
            CeremonyAction::IssueCard {
                region: Region::parse("440000").unwrap(),
            },
        ];
        for a in actions {
            assert_eq!(
                CeremonyAction::parse(a.operation(), &a.params()).unwrap(),
                a
            );
        }
    }

    #[test]
    fn unknown_missing_and_malformed_parameters_are_refused() {
        let refused = |op, pairs: &[(&str, &str)]| {
            CeremonyAction::parse(op, &map(pairs))
                .unwrap_err()
                .to_string()
        };
        assert!(
            refused(Operation::Generate, &[("key_type", "x"), ("foo", "1")])
                .contains("unknown ceremony parameter `foo`")
        );
        assert!(refused(Operation::Generate, &[]).contains("needs key_type"));
        assert!(
            refused(
                Operation::Generate,
                &[("key_type", "x"), ("components", "4")]
            )
            .contains("components must be 2 or 3")
        );
        assert!(refused(Operation::Manage, &[("state", "retired")]).contains("needs key_id"));
        assert!(refused(Operation::Manage, &[("action", "launch")]).contains("needs key_id"));
        assert!(refused(Operation::Read, &[]).contains("not run by ceremony"));
    }

    #[test]
    fn a_new_ceremony_takes_only_the_parameters_its_action_runs_with() {
        let reload = map(&[
            ("action", "reload-policy"),
            ("policy_sha256", &"ab".repeat(32)),
            ("region", "440000"),
        ]);
        // A stored one loads (its extra is left out); a new one is refused.
        assert!(CeremonyAction::parse(Operation::Manage, &reload).is_ok());
        let err = CeremonyAction::parse_new(Operation::Manage, &reload).unwrap_err();
        assert!(err.to_string().contains("`region` is not used"), "{err}");
        let card = map(&[("action", "issue-card"), ("region", "440000")]);
        assert!(CeremonyAction::parse_new(Operation::Manage, &card).is_ok());
    }
}
