//! Which token to use: a label, or an RFC 7512 `pkcs11:` URI (token, manufacturer, serial, model).

use super::HsmError;

/// The attributes a token must match. Empty fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenLocator {
    /// `CK_TOKEN_INFO.label`.
    pub token: Option<String>,
    /// `CK_TOKEN_INFO.manufacturerID`.
    pub manufacturer: Option<String>,
    /// `CK_TOKEN_INFO.serialNumber`.
    pub serial: Option<String>,
    /// `CK_TOKEN_INFO.model`.
    pub model: Option<String>,
}

impl TokenLocator {
    /// Matches the token with this label.
    pub fn by_label(label: &str) -> TokenLocator {
        TokenLocator {
            token: Some(label.to_string()),
            ..TokenLocator::default()
        }
    }

    /// Reads an RFC 7512 URI. Only token-identifying path attributes are taken; `pin-value` is
    /// refused (a PIN never sits in configuration), other query attributes are ignored.
    pub fn from_uri(uri: &str) -> Result<TokenLocator, HsmError> {
        let rest = uri
            .strip_prefix("pkcs11:")
            .ok_or_else(|| HsmError::BadUri("it must start with `pkcs11:`".into()))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, q),
            None => (rest, ""),
        };
        if query.split('&').any(|q| q.starts_with("pin-value=")) {
            return Err(HsmError::BadUri(
                "pin-value is refused: give the PIN through pin_env or pin_file".into(),
            ));
        }
        let mut loc = TokenLocator::default();
        for part in path.split(';').filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once('=')
                .ok_or_else(|| HsmError::BadUri(format!("attribute `{part}` has no `=`")))?;
            let value = Some(pct_decode(value)?);
            match name {
                "token" => loc.token = value,
                "manufacturer" => loc.manufacturer = value,
                "serial" => loc.serial = value,
                "model" => loc.model = value,
                // Object, library and slot attributes do not select a token here.
                "object"
                | "type"
                | "id"
                | "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer"
                | "slot-id" => {}
                other => {
                    return Err(HsmError::BadUri(format!("unknown attribute `{other}`")));
                }
            }
        }
        if loc == TokenLocator::default() {
            return Err(HsmError::BadUri(
                "it names no token (add token=LABEL or serial=...)".into(),
            ));
        }
        Ok(loc)
    }

    /// Whether a token with these (space-trimmed) fields matches.
    pub fn matches(&self, label: &str, manufacturer: &str, serial: &str, model: &str) -> bool {
        fn eq(want: &Option<String>, got: &str) -> bool {
            want.as_deref().is_none_or(|w| w == got.trim_end())
        }
        eq(&self.token, label)
            && eq(&self.manufacturer, manufacturer)
            && eq(&self.serial, serial)
            && eq(&self.model, model)
    }
}

impl std::fmt::Display for TokenLocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        for (name, value) in [
            ("token", &self.token),
            ("manufacturer", &self.manufacturer),
            ("serial", &self.serial),
            ("model", &self.model),
        ] {
            if let Some(v) = value {
                parts.push(format!("{name}={v}"));
            }
        }
        write!(f, "pkcs11:{}", parts.join(";"))
    }
}

fn pct_decode(s: &str) -> Result<String, HsmError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .ok_or_else(|| HsmError::BadUri(format!("truncated %-escape in `{s}`")))?;
            let v = u8::from_str_radix(hex, 16)
                .map_err(|_| HsmError::BadUri(format!("bad %-escape `%{hex}`")))?;
            out.push(v);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| HsmError::BadUri(format!("`{s}` is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_token_and_serial_with_escapes() {
        let loc =
            TokenLocator::from_uri("pkcs11:token=hkms%20dev;serial=33b3?module-path=/x").unwrap();
        assert_eq!(loc.token.as_deref(), Some("hkms dev"));
        assert_eq!(loc.serial.as_deref(), Some("33b3"));
        assert!(loc.matches("hkms dev   ", "SoftHSM", "33b3", "m"));
        assert!(!loc.matches("other", "SoftHSM", "33b3", "m"));
    }

    #[test]
    fn refuses_pin_value_and_bad_input() {
        assert!(TokenLocator::from_uri("pkcs11:token=a?pin-value=1234").is_err());
        assert!(TokenLocator::from_uri("token=a").is_err());
        assert!(TokenLocator::from_uri("pkcs11:").is_err());
        assert!(TokenLocator::from_uri("pkcs11:token=%4").is_err());
        assert!(TokenLocator::from_uri("pkcs11:colour=red").is_err());
    }

    #[test]
    fn display_round_trips() {
        let loc = TokenLocator::by_label("hkms-dev");
        assert_eq!(loc.to_string(), "pkcs11:token=hkms-dev");
    }
}
