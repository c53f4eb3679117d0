//! The three tiers of the programme: the ministry, the provinces, the cities.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::HierarchyError;

/// Where a node or a key sits in the hierarchy (docs/design.md §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// The ministry (region `000000`).
    National,
    /// A province-level division (`XX0000`).
    Provincial,
    /// A city-level division (`XXYY00`).
    Municipal,
}

impl Tier {
    /// All tiers, top first.
    pub const ALL: [Tier; 3] = [Tier::National, Tier::Provincial, Tier::Municipal];

    /// The name used in policies, the database and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::National => "national",
            Tier::Provincial => "provincial",
            Tier::Municipal => "municipal",
        }
    }

    /// The tier directly below, or `None` for municipal (cards are not a tier).
    pub fn child(self) -> Option<Tier> {
        match self {
            Tier::National => Some(Tier::Provincial),
            Tier::Provincial => Some(Tier::Municipal),
            Tier::Municipal => None,
        }
    }

    /// The tier directly above, or `None` for national.
    pub fn parent(self) -> Option<Tier> {
        match self {
            Tier::National => None,
            Tier::Provincial => Some(Tier::National),
            Tier::Municipal => Some(Tier::Provincial),
        }
    }

    /// True when `self` is strictly lower in the hierarchy than `other`.
    pub fn is_below(self, other: Tier) -> bool {
        self.depth() > other.depth()
    }

    fn depth(self) -> u8 {
        match self {
            Tier::National => 0,
            Tier::Provincial => 1,
            Tier::Municipal => 2,
        }
    }
}

impl FromStr for Tier {
    type Err = HierarchyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| HierarchyError::UnknownTier {
                input: s.to_owned(),
            })
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in Tier::ALL {
            assert_eq!(t.as_str().parse::<Tier>(), Ok(t));
            assert_eq!(t.to_string(), t.as_str());
        }
    }

    #[test]
    fn unknown_and_miscased_names_are_rejected() {
        for bad in ["", "county", "National", " national", "national "] {
            assert!(matches!(
                bad.parse::<Tier>(),
                Err(HierarchyError::UnknownTier { .. })
            ));
        }
    }

    #[test]
    fn child_and_parent_are_inverse() {
        assert_eq!(Tier::National.child(), Some(Tier::Provincial));
        assert_eq!(Tier::Provincial.child(), Some(Tier::Municipal));
        assert_eq!(Tier::Municipal.child(), None);
        assert_eq!(Tier::National.parent(), None);
        for t in Tier::ALL {
            if let Some(c) = t.child() {
                assert_eq!(c.parent(), Some(t));
            }
        }
    }

    #[test]
    fn below_is_strict() {
        assert!(Tier::Municipal.is_below(Tier::National));
        assert!(Tier::Provincial.is_below(Tier::National));
        assert!(!Tier::National.is_below(Tier::National));
        assert!(!Tier::National.is_below(Tier::Municipal));
    }

    #[test]
    fn serde_uses_lowercase_names() {
        #[derive(Deserialize, Serialize)]
        struct W {
            t: Tier,
        }
        let w: W = toml::from_str("t = \"provincial\"").unwrap();
        assert_eq!(w.t, Tier::Provincial);
        assert!(toml::from_str::<W>("t = \"Provincial\"").is_err());
        assert_eq!(toml::to_string(&w).unwrap().trim(), "t = \"provincial\"");
    }
}
