//! Key states and the transitions between them (NIST SP 800-57 Part 1, §7).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::HierarchyError;

/// The lifecycle state of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyState {
    /// Created, not yet usable (e.g. waiting for a ceremony).
    PreActive,
    /// Usable for every operation its type allows.
    Active,
    /// Temporarily unusable; may become active again.
    Suspended,
    /// No longer used for new work; kept until destroyed (SP 800-57 "deactivated").
    Retired,
    /// Gone from the HSM; the registry row stays for the record.
    Destroyed,
}

impl KeyState {
    /// All states, in lifecycle order.
    pub const ALL: [KeyState; 5] = [
        KeyState::PreActive,
        KeyState::Active,
        KeyState::Suspended,
        KeyState::Retired,
        KeyState::Destroyed,
    ];

    /// The name used in the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::PreActive => "pre-active",
            KeyState::Active => "active",
            KeyState::Suspended => "suspended",
            KeyState::Retired => "retired",
            KeyState::Destroyed => "destroyed",
        }
    }

    /// The states reachable from `self` in one step.
    pub fn allowed_next(self) -> &'static [KeyState] {
        match self {
            KeyState::PreActive => &[KeyState::Active, KeyState::Destroyed],
            KeyState::Active => &[KeyState::Suspended, KeyState::Retired],
            KeyState::Suspended => &[KeyState::Active, KeyState::Retired],
            KeyState::Retired => &[KeyState::Destroyed],
            KeyState::Destroyed => &[],
        }
    }

    /// True when SP 800-57 allows going from `self` to `next` in one step.
    pub fn can_transition_to(self, next: KeyState) -> bool {
        self.allowed_next().contains(&next)
    }

    /// True when sub-keys may be derived from a key in this state (only `active`).
    pub fn may_derive(self) -> bool {
        self == KeyState::Active
    }

    /// Returns `next` if the step is allowed, otherwise an error that lists the allowed steps.
    pub fn transition(self, next: KeyState) -> Result<KeyState, HierarchyError> {
        if self.can_transition_to(next) {
            return Ok(next);
        }
        let allowed = match self.allowed_next() {
            [] => "nothing, it is final".to_owned(),
            states => states
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        };
        Err(HierarchyError::IllegalTransition {
            from: self.as_str().to_owned(),
            to: next.as_str().to_owned(),
            allowed,
        })
    }
}

impl FromStr for KeyState {
    type Err = HierarchyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeyState::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| HierarchyError::UnknownKeyState {
                input: s.to_owned(),
            })
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::KeyState::*;
    use super::*;

    #[test]
    fn exactly_the_sp800_57_transitions_are_allowed() {
        let allowed = [
            (PreActive, Active),
            (PreActive, Destroyed),
            (Active, Suspended),
            (Active, Retired),
            (Suspended, Active),
            (Suspended, Retired),
            (Retired, Destroyed),
        ];
        for from in KeyState::ALL {
            for to in KeyState::ALL {
                let expected = allowed.contains(&(from, to));
                assert_eq!(from.can_transition_to(to), expected, "{from} -> {to}");
                assert_eq!(from.transition(to).is_ok(), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn no_way_back_from_retired_or_destroyed() {
        for to in KeyState::ALL {
            assert!(!Destroyed.can_transition_to(to));
            assert!(to == Destroyed || !Retired.can_transition_to(to));
        }
    }

    #[test]
    fn only_active_keys_may_derive() {
        for s in KeyState::ALL {
            assert_eq!(s.may_derive(), s == Active);
        }
    }

    #[test]
    fn illegal_transition_message_lists_allowed_steps() {
        let err = Retired.transition(Active).unwrap_err().to_string();
        assert_eq!(
            err,
            "key is retired; a retired key cannot become active (SP 800-57 allows: destroyed)"
        );
        let err = Destroyed.transition(Active).unwrap_err().to_string();
        assert!(err.contains("nothing, it is final"), "{err}");
    }

    #[test]
    fn names_round_trip() {
        for s in KeyState::ALL {
            assert_eq!(s.as_str().parse::<KeyState>(), Ok(s));
            assert_eq!(s.to_string(), s.as_str());
        }
        assert!("deactivated".parse::<KeyState>().is_err());
        #[derive(Deserialize)]
        struct W {
            s: KeyState,
        }
        let w: W = toml::from_str("s = \"pre-active\"").unwrap();
        assert_eq!(w.s, PreActive);
    }
}
