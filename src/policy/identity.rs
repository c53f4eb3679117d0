//! Who is calling: role, tier and region, read from the caller's mTLS certificate. The one
//! documented form is a SAN URI `hkms://ROLE/TIER/REGION/NAME`, for example
//! `hkms://officer/national/000000/alice` or `hkms://window/municipal/440100/counter-3`.

use std::fmt;
use std::str::FromStr;

use crate::hierarchy::{Region, Tier};

/// The scheme of identity URIs in certificates.
pub const IDENTITY_SCHEME: &str = "hkms://";

/// What kind of caller this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A key officer: key ceremonies, generation, derivation, approvals.
    Officer,
    /// A provincial or municipal system: requests and loads its sub-keys.
    System,
    /// A service window: card services (PIN unblock and reload).
    Window,
    /// An auditor: reads metadata and the ceremony log, changes nothing.
    Auditor,
    /// An administrator: manages the node (policy reloads), holds no key rights by default.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [
        Role::Officer,
        Role::System,
        Role::Window,
        Role::Auditor,
        Role::Admin,
    ];

    /// The name used in certificates and policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Officer => "officer",
            Role::System => "system",
            Role::Window => "window",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role `{s}` (roles: officer, system, window, auditor, admin)")
            })
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The caller's role.
    pub role: Role,
    /// The caller's tier; always the tier of `region`.
    pub tier: Tier,
    /// The caller's region.
    pub region: Region,
    /// A name for records (a person or a system), 1–64 characters of `[A-Za-z0-9._-]`.
    pub name: String,
}

impl Identity {
    /// Reads `hkms://ROLE/TIER/REGION/NAME`; every part is checked.
    pub fn from_uri(uri: &str) -> Result<Identity, String> {
        // Errors quote the URI; it comes from a certificate, so never raw, and never long.
        let cut: String = uri.chars().take(160).collect();
        let shown = crate::untrusted_text::escape(&cut);
        let rest = uri
            .strip_prefix(IDENTITY_SCHEME)
            .ok_or_else(|| format!("identity `{shown}` must start with {IDENTITY_SCHEME}"))?;
        let parts: Vec<&str> = rest.split('/').collect();
        let [role, tier, region, name] = parts.as_slice() else {
            return Err(format!(
                "identity `{shown}` must have four parts: {IDENTITY_SCHEME}ROLE/TIER/REGION/NAME"
            ));
        };
        let role: Role = role.parse().map_err(|_: String| {
            format!(
                "identity `{shown}`: unknown role (roles: officer, system, window, auditor, admin)"
            )
        })?;
        let tier: Tier = tier
            .parse()
            .map_err(|e| format!("identity `{shown}`: {e}"))?;
        let region = Region::parse(region).map_err(|e| format!("identity `{shown}`: {e}"))?;
        if region.tier() != tier {
            return Err(format!(
                "identity `{shown}`: region {region} is {} but the tier says {tier}",
                region.tier()
            ));
        }
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !valid_name {
            return Err(format!(
                "identity `{shown}`: the name must be 1-64 characters of letters, digits, '.', '_' or '-'"
            ));
        }
        Ok(Identity {
            role,
            tier,
            region,
            name: (*name).to_string(),
        })
    }

    /// The URI form, as it stands in the certificate.
    pub fn to_uri(&self) -> String {
        format!(
            "{IDENTITY_SCHEME}{}/{}/{}/{}",
            self.role, self.tier, self.region, self.name
        )
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_uri())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_uri_is_quoted_escaped_and_short() {
        for uri in [
            "hkms://officer/national/000000/a\nFAKE LOG LINE",
            "hkms://off\ticer/national/000000/a",
            "hkms://officer/national/000000/\u{202E}x",
            "nope\0://x",
        ] {
            let err = Identity::from_uri(uri).unwrap_err();
            assert!(!crate::untrusted_text::has_invisible(&err), "{err:?}");
        }
        let long = format!("hkms://officer/national/000000/{}", "a".repeat(100_000));
        assert!(Identity::from_uri(&long).unwrap_err().len() < 400);
    }

    #[test]
    fn reads_and_writes_the_uri_form() {
        let id = Identity::from_uri("hkms://window/municipal/440100/counter-3").unwrap();
        assert_eq!(id.role, Role::Window);
        assert_eq!(id.tier, Tier::Municipal);
        assert_eq!(id.region.as_str(), "440100");
        assert_eq!(id.to_uri(), "hkms://window/municipal/440100/counter-3");
        assert_eq!(id.to_string(), "hkms://window/municipal/440100/counter-3");
    }

    #[test]
    fn refuses_malformed_identities() {
        for bad in [
            "https://officer/national/000000/a",
            "hkms://officer/national/000000",
            "hkms://officer/national/000000/a/b",
            "hkms://king/national/000000/a",
            "hkms://officer/provincial/000000/a",
            "hkms://officer/national/000000/",
            "hkms://officer/national/000000/al ice",
            "hkms://officer/municipal/449900x/a",
        ] {
            assert!(Identity::from_uri(bad).is_err(), "{bad}");
        }
    }
}
