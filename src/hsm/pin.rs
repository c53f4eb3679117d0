//! Where the user PIN comes from: an environment variable or a file, never the config itself.
//! The PIN is held as a [`SecretString`] (zeroized on drop) and never logged.

use std::path::PathBuf;

use secrecy::SecretString;
use zeroize::Zeroizing;

use super::HsmError;

/// The source of the token's user PIN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSource {
    /// Read from this environment variable.
    Env(String),
    /// Read from this file (one line; a trailing newline is dropped).
    File(PathBuf),
}

impl PinSource {
    /// Reads the PIN. Errors name the source, never the value.
    pub fn read(&self) -> Result<SecretString, HsmError> {
        let raw: Zeroizing<String> = match self {
            PinSource::Env(var) => Zeroizing::new(std::env::var(var).map_err(|_| {
                HsmError::PinSource(format!(
                    "environment variable {var} is not set (or not UTF-8)"
                ))
            })?),
            PinSource::File(path) => {
                Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                    HsmError::PinSource(format!("cannot read PIN file {}: {e}", path.display()))
                })?)
            }
        };
        let pin = raw.trim_end_matches(['\n', '\r']);
        if pin.is_empty() {
            return Err(HsmError::PinSource(format!("the PIN from {self} is empty")));
        }
        Ok(SecretString::from(pin.to_string()))
    }
}

impl std::fmt::Display for PinSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PinSource::Env(v) => write!(f, "environment variable {v}"),
            PinSource::File(p) => write!(f, "file {}", p.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn file_pin_drops_trailing_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "123456\n").unwrap();
        let pin = PinSource::File(path).read().unwrap();
        assert_eq!(pin.expose_secret(), "123456");
    }

    #[test]
    fn missing_or_empty_pin_is_an_error_without_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pin");
        std::fs::write(&path, "\n").unwrap();
        let err = PinSource::File(path).read().unwrap_err().to_string();
        assert!(err.contains("empty"));
        let err = PinSource::Env("HKMS_TEST_SURELY_UNSET_VAR".into())
            .read()
            .unwrap_err()
            .to_string();
        assert!(err.contains("HKMS_TEST_SURELY_UNSET_VAR"));
    }
}
