//! Which target regions a rule covers, relative to the caller's own region.

use std::fmt;
use std::str::FromStr;

use crate::hierarchy::Region;

/// A region relation. `self` is the caller's region; `children` its direct children (a
/// province's cities, the ministry's provinces); `descendants` everything below it; `any`
/// everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegionScope {
    /// The caller's own region.
    Own,
    /// Direct children of the caller's region.
    Children,
    /// Every region below the caller's.
    Descendants,
    /// Every region.
    Any,
}

impl RegionScope {
    /// Every scope.
    pub const ALL: [RegionScope; 4] = [
        RegionScope::Own,
        RegionScope::Children,
        RegionScope::Descendants,
        RegionScope::Any,
    ];

    /// The name used in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            RegionScope::Own => "self",
            RegionScope::Children => "children",
            RegionScope::Descendants => "descendants",
            RegionScope::Any => "any",
        }
    }

    /// Whether `target` is in this scope of `caller`.
    pub fn covers(self, caller: &Region, target: &Region) -> bool {
        match self {
            RegionScope::Own => caller == target,
            RegionScope::Children => target.is_child_of(caller),
            RegionScope::Descendants => target.is_descendant_of(caller),
            RegionScope::Any => true,
        }
    }
}

impl fmt::Display for RegionScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RegionScope {
    type Err = String;
    fn from_str(s: &str) -> Result<RegionScope, String> {
        RegionScope::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown region scope `{s}` (scopes: self, children, descendants, any)")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Region {
        Region::parse(s).unwrap()
    }

    #[test]
    fn scopes_relate_regions_as_documented() {
        let (nation, gd, gz, gx) = (r("000000"), r("440000"), r("440100"), r("450000"));
        assert!(RegionScope::Own.covers(&gd, &gd));
        assert!(!RegionScope::Own.covers(&gd, &gz));
        assert!(RegionScope::Children.covers(&gd, &gz));
        assert!(RegionScope::Children.covers(&nation, &gd));
        assert!(!RegionScope::Children.covers(&nation, &gz));
        assert!(!RegionScope::Children.covers(&gd, &gd));
        assert!(RegionScope::Descendants.covers(&nation, &gz));
        assert!(!RegionScope::Descendants.covers(&gd, &gx));
        assert!(!RegionScope::Descendants.covers(&gz, &gd));
        assert!(RegionScope::Any.covers(&gz, &nation));
    }

    #[test]
    fn scopes_are_named_as_in_policy_files() {
        for scope in RegionScope::ALL {
            assert_eq!(scope.to_string().parse::<RegionScope>(), Ok(scope));
        }
        assert_eq!(RegionScope::Own.to_string(), "self");
    }
}
