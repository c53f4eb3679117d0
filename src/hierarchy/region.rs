//! GB/T 2260 administrative codes, restricted to the three tiers of the programme.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{HierarchyError, Tier};

/// The 34 GB/T 2260 province-level codes (first two digits of a region code).
const PROVINCES: [&str; 34] = [
    "11", "12", "13", "14", "15", // North
    "21", "22", "23", // North-east
    "31", "32", "33", "34", "35", "36", "37", // East
    "41", "42", "43", "44", "45", "46", // Centre and south
    "50", "51", "52", "53", "54", // South-west
    "61", "62", "63", "64", "65", // North-west
    "71", // Taiwan
    "81", "82", // Hong Kong, Macao
];

/// A validated six-digit region code: `000000` (the ministry), `XX0000` (a province) or
/// `XXYY00` (a city of province `XX`).
///
/// Holding a `Region` proves the code is well formed and belongs to a real province, so
/// the rest of hkms never re-checks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Region([u8; 6]);

impl Region {
    /// The ministry.
    pub const NATIONAL: Region = Region(*b"000000");

    /// Checks `code` against the rules above. Surrounding whitespace is an error, not trimmed.
    pub fn parse(code: &str) -> Result<Region, HierarchyError> {
        let format = |reason: &str| HierarchyError::RegionFormat {
            input: code.to_owned(),
            reason: reason.to_owned(),
        };
        if code.trim() != code {
            return Err(format("it has surrounding whitespace; remove it"));
        }
        let digits: [u8; 6] = code
            .as_bytes()
            .try_into()
            .map_err(|_| format("a region code is exactly 6 digits, e.g. 440100"))?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(format("a region code has only the digits 0-9, e.g. 440100"));
        }
        let region = Region(digits);
        if region == Region::NATIONAL {
            return Ok(region);
        }
        let province = region.part(0);
        if !PROVINCES.contains(&province) {
            return Err(HierarchyError::UnknownProvince {
                input: code.to_owned(),
                province: province.to_owned(),
            });
        }
        if region.part(2) != "00" {
            return Err(HierarchyError::CountyLevel {
                input: code.to_owned(),
            });
        }
        Ok(region)
    }

    /// The code as six digits.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever stored, so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or("")
    }

    /// The tier the code belongs to.
    pub fn tier(&self) -> Tier {
        if *self == Region::NATIONAL {
            Tier::National
        } else if self.part(1) == "00" {
            Tier::Provincial
        } else {
            Tier::Municipal
        }
    }

    /// The region one tier up: city → its province, province → the ministry, ministry → none.
    pub fn parent(&self) -> Option<Region> {
        match self.tier() {
            Tier::National => None,
            Tier::Provincial => Some(Region::NATIONAL),
            Tier::Municipal => {
                let mut digits = self.0;
                if let Some(city) = digits.get_mut(2..4) {
                    city.copy_from_slice(b"00");
                }
                Some(Region(digits))
            }
        }
    }

    /// True when `self` is directly below `other` (a city of that province, a province of the ministry).
    pub fn is_child_of(&self, other: &Region) -> bool {
        self.parent().as_ref() == Some(other)
    }

    /// True when `self` is anywhere below `other` (not equal to it).
    pub fn is_descendant_of(&self, other: &Region) -> bool {
        let mut current = self.parent();
        while let Some(r) = current {
            if r == *other {
                return true;
            }
            current = r.parent();
        }
        false
    }

    /// Digit pair `index` (0 = province, 1 = city, 2 = county) as text.
    fn part(&self, index: usize) -> &str {
        let start = index * 2;
        self.as_str().get(start..start + 2).unwrap_or("")
    }
}

impl FromStr for Region {
    type Err = HierarchyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Region::parse(s)
    }
}

impl TryFrom<String> for Region {
    type Error = HierarchyError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        Region::parse(&s)
    }
}

impl From<Region> for String {
    fn from(r: Region) -> String {
        r.as_str().to_owned()
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Region {
        Region::parse(s).unwrap()
    }

    #[test]
    fn national_code_is_the_ministry() {
        assert_eq!(r("000000"), Region::NATIONAL);
        assert_eq!(Region::NATIONAL.tier(), Tier::National);
        assert_eq!(Region::NATIONAL.parent(), None);
    }

    #[test]
    fn all_34_province_codes_are_provincial() {
        assert_eq!(PROVINCES.len(), 34);
        for p in PROVINCES {
            let region = r(&format!("{p}0000"));
            assert_eq!(region.tier(), Tier::Provincial);
            assert_eq!(region.parent(), Some(Region::NATIONAL));
        }
    }

    #[test]
    fn non_province_prefixes_are_rejected() {
        for bad in [
            "100000", "160000", "200000", "240000", "300000", "380000", "470000", "490000",
            "550000", "660000", "700000", "720000", "800000", "830000", "990000", "000100",
        ] {
            assert!(
                matches!(
                    Region::parse(bad),
                    Err(HierarchyError::UnknownProvince { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn city_code_is_municipal_under_its_province() {
        let gz = r("440100");
        assert_eq!(gz.tier(), Tier::Municipal);
        assert_eq!(gz.parent(), Some(r("440000")));
        assert!(gz.is_child_of(&r("440000")));
        assert!(!gz.is_child_of(&Region::NATIONAL));
        assert!(gz.is_descendant_of(&Region::NATIONAL));
        assert!(gz.is_descendant_of(&r("440000")));
    }

    #[test]
    fn city_of_unknown_province_is_rejected() {
        assert!(matches!(
            Region::parse("990100"),
            Err(HierarchyError::UnknownProvince { .. })
        ));
    }

    #[test]
    fn county_code_is_rejected_with_no_county_tier_message() {
        let err = Region::parse("440103").unwrap_err();
        assert!(matches!(err, HierarchyError::CountyLevel { .. }));
        assert!(err.to_string().contains("no county tier"));
    }

    #[test]
    fn malformed_codes_are_rejected() {
        for bad in [
            "", "44010", "4401000", "44010a", "４40100", "+44010", " 440100", "440100 ", "440100\n",
        ] {
            assert!(
                matches!(Region::parse(bad), Err(HierarchyError::RegionFormat { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn whitespace_error_says_so() {
        let err = Region::parse(" 440000").unwrap_err().to_string();
        assert!(err.contains("whitespace"), "{err}");
    }

    #[test]
    fn relations_are_not_reflexive_and_not_across_provinces() {
        let gd = r("440000");
        assert!(!gd.is_child_of(&gd));
        assert!(!gd.is_descendant_of(&gd));
        assert!(!Region::NATIONAL.is_descendant_of(&gd));
        assert!(!r("440100").is_descendant_of(&r("450000")));
        assert!(!r("440100").is_child_of(&r("440200")));
    }

    #[test]
    fn display_from_str_and_serde_round_trip() {
        let gz: Region = "440100".parse().unwrap();
        assert_eq!(gz.to_string(), "440100");
        assert_eq!(gz.as_str(), "440100");
        #[derive(Deserialize, Serialize)]
        struct W {
            r: Region,
        }
        let w: W = toml::from_str("r = \"440100\"").unwrap();
        assert_eq!(w.r, gz);
        assert!(toml::from_str::<W>("r = \"440101\"").is_err());
        assert_eq!(toml::to_string(&w).unwrap().trim(), "r = \"440100\"");
    }

    #[test]
    fn ordering_is_numeric() {
        assert!(r("110000") < r("440000"));
        assert!(r("440000") < r("440100"));
    }
}
