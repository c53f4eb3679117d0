//! The dev PKI on disk: CA, server certificate and issued certificates as PEM files, keys with
//! mode 0600, each file written whole or not at all.

use std::fs::{self, DirBuilder};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use super::{DevCa, IssuedCert, PkiError, Validity};

/// How long the dev server certificate is valid (the longest that common TLS clients accept).
const SERVER_VALIDITY_DAYS: u32 = 825;

/// Mode of private key files: readable and writable by the owner only.
const KEY_MODE: u32 = 0o600;

/// Mode of certificate files (public; the umask still applies).
const CERT_MODE: u32 = 0o644;

/// Mode of a dev PKI directory this module creates.
const DIR_MODE: u32 = 0o700;

/// Where [`write_dev_pki`] put the dev PKI's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPkiPaths {
    /// The CA certificate, `ca.pem`: the trust anchor for servers and clients.
    pub ca_cert: PathBuf,
    /// The CA private key, `ca.key` (mode 0600): needed to issue more certificates.
    pub ca_key: PathBuf,
    /// The server certificate, `server.pem`, for `localhost`, `127.0.0.1` and `::1`.
    pub server_cert: PathBuf,
    /// The server private key, `server.key` (mode 0600).
    pub server_key: PathBuf,
}

/// Makes sure `dir` holds a dev PKI for the node `node_name`, and says where its files are.
///
/// Idempotent: an existing CA (`ca.pem` with `ca.key`) is loaded and kept, an existing server
/// certificate (`server.pem` with `server.key`) is kept; only what is missing is made. A new
/// CA is named `hkms dev CA <node_name>`; the server certificate, valid 825 days, has the
/// common name `localhost` and the subject alternative names DNS `localhost`, IP `127.0.0.1`
/// and IP `::1`. When a new CA is made, the server certificate is always issued anew so that
/// it chains to it. The directory is created (mode 0700) if missing.
pub fn write_dev_pki(dir: &Path, node_name: &str) -> Result<DevPkiPaths, PkiError> {
    ensure_dir(dir)?;
    let paths = DevPkiPaths {
        ca_cert: dir.join("ca.pem"),
        ca_key: dir.join("ca.key"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
    };
    let (ca, ca_is_new) = if exists(&paths.ca_cert)? {
        if !exists(&paths.ca_key)? {
            return Err(PkiError::Parse(format!(
                "{} exists without {}; restore ca.key, or remove ca.pem to make a new dev CA",
                paths.ca_cert.display(),
                paths.ca_key.display()
            )));
        }
        let cert_pem = read(&paths.ca_cert)?;
        let key_pem = zeroize::Zeroizing::new(read(&paths.ca_key)?);
        (DevCa::from_pem(&cert_pem, &key_pem)?, false)
    } else {
        if exists(&paths.ca_key)? {
            return Err(PkiError::Parse(format!(
                "{} exists without {}; restore ca.pem, or remove ca.key to make a new dev CA",
                paths.ca_key.display(),
                paths.ca_cert.display()
            )));
        }
        let ca = DevCa::create(&format!("hkms dev CA {node_name}"))?;
        // The key first: a ca.pem without its key would make the next call fail.
        write_atomic(&paths.ca_key, ca.key_pem().as_bytes(), KEY_MODE)?;
        write_atomic(&paths.ca_cert, ca.cert_pem().as_bytes(), CERT_MODE)?;
        (ca, true)
    };
    // Kept only when this CA signed it and the key is its own: a crash between writing the
    // key and the certificate, or a CA made anew, leaves a pair that TLS would refuse.
    let server_present = exists(&paths.server_cert)?
        && exists(&paths.server_key)?
        && ca.issued_pair_matches(
            &read(&paths.server_cert)?,
            &zeroize::Zeroizing::new(read(&paths.server_key)?),
        );
    if ca_is_new || !server_present {
        let server = ca.issue_server(
            &["localhost"],
            &[
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ],
            Validity::days(SERVER_VALIDITY_DAYS),
        )?;
        write_pair(&paths.server_cert, &paths.server_key, &server)?;
    }
    Ok(paths)
}

/// Writes `cert` to `dir/<stem>.pem` and its key to `dir/<stem>.key` (mode 0600), replacing
/// any files of those names, and returns the two paths (certificate, key).
pub fn write_issued(
    dir: &Path,
    stem: &str,
    cert: &IssuedCert,
) -> Result<(PathBuf, PathBuf), PkiError> {
    let cert_path = dir.join(format!("{stem}.pem"));
    let key_path = dir.join(format!("{stem}.key"));
    write_pair(&cert_path, &key_path, cert)?;
    Ok((cert_path, key_path))
}

fn write_pair(cert_path: &Path, key_path: &Path, cert: &IssuedCert) -> Result<(), PkiError> {
    write_atomic(key_path, cert.key_pem.as_bytes(), KEY_MODE)?;
    write_atomic(cert_path, cert.cert_pem.as_bytes(), CERT_MODE)
}

fn ensure_dir(dir: &Path) -> Result<(), PkiError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|e| PkiError::io(dir, e))
}

fn exists(path: &Path) -> Result<bool, PkiError> {
    path.try_exists().map_err(|e| PkiError::io(path, e))
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|e| PkiError::io(path, e))
}

/// Writes `bytes` to `path` whole or not at all ([`crate::durable::write_file`]).
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    crate::durable::write_file(path, bytes, mode).map_err(|e| PkiError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn write_dev_pki_is_idempotent() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let first = write_dev_pki(&dir, "node-a").unwrap();
        let ca = fs::read(&first.ca_cert).unwrap();
        let ca_key = fs::read(&first.ca_key).unwrap();
        let server = fs::read(&first.server_cert).unwrap();
        let second = write_dev_pki(&dir, "node-a").unwrap();
        assert_eq!(first, second);
        assert_eq!(fs::read(&second.ca_cert).unwrap(), ca);
        assert_eq!(fs::read(&second.ca_key).unwrap(), ca_key);
        assert_eq!(fs::read(&second.server_cert).unwrap(), server);
        let names: Vec<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 4, "no temporary files are left: {names:?}");
    }

    #[test]
    fn key_files_have_mode_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = write_dev_pki(tmp.path(), "node-a").unwrap();
        assert_eq!(mode(&paths.ca_key), 0o600);
        assert_eq!(mode(&paths.server_key), 0o600);
        let ca = DevCa::from_pem(
            &fs::read_to_string(&paths.ca_cert).unwrap(),
            &fs::read_to_string(&paths.ca_key).unwrap(),
        )
        .unwrap();
        let issued = ca.issue_client(None, Validity::days(1)).unwrap();
        let (cert, key) = write_issued(tmp.path(), "client", &issued).unwrap();
        assert_eq!(mode(&key), 0o600);
        assert_eq!(cert, tmp.path().join("client.pem"));
        assert_eq!(key, tmp.path().join("client.key"));
        assert_eq!(fs::read_to_string(&cert).unwrap(), issued.cert_pem);
        assert_eq!(fs::read_to_string(&key).unwrap(), *issued.key_pem);
    }

    #[test]
    fn a_missing_server_certificate_is_issued_by_the_existing_ca() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = write_dev_pki(tmp.path(), "node-a").unwrap();
        let ca = fs::read(&paths.ca_cert).unwrap();
        fs::remove_file(&paths.server_key).unwrap();
        write_dev_pki(tmp.path(), "node-a").unwrap();
        assert_eq!(fs::read(&paths.ca_cert).unwrap(), ca);
        assert!(paths.server_key.exists());

        let ca_der = x509_parser::pem::parse_x509_pem(&ca).unwrap().1.contents;
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let server = fs::read(&paths.server_cert).unwrap();
        let server_der = x509_parser::pem::parse_x509_pem(&server)
            .unwrap()
            .1
            .contents;
        let (_, server_cert) = x509_parser::parse_x509_certificate(&server_der).unwrap();
        assert_eq!(server_cert.issuer().as_raw(), ca_cert.subject().as_raw());
    }

    #[test]
    fn a_ca_file_without_its_partner_is_an_error_not_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = write_dev_pki(tmp.path(), "node-a").unwrap();
        let key = fs::read(&paths.ca_key).unwrap();
        fs::remove_file(&paths.ca_cert).unwrap();
        assert!(matches!(
            write_dev_pki(tmp.path(), "node-a"),
            Err(PkiError::Parse(_))
        ));
        assert_eq!(fs::read(&paths.ca_key).unwrap(), key);

        let tmp = tempfile::tempdir().unwrap();
        let paths = write_dev_pki(tmp.path(), "node-a").unwrap();
        fs::remove_file(&paths.ca_key).unwrap();
        assert!(matches!(
            write_dev_pki(tmp.path(), "node-a"),
            Err(PkiError::Parse(_))
        ));
    }

    #[test]
    fn a_missing_directory_is_an_io_error_with_its_path() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = DevCa::create("hkms test CA").unwrap();
        let issued = ca.issue_client(None, Validity::days(1)).unwrap();
        let missing = tmp.path().join("nope");
        match write_issued(&missing, "client", &issued) {
            Err(PkiError::Io { path, .. }) => assert!(path.starts_with(&missing)),
            other => panic!("expected an Io error, got {other:?}"),
        }
    }

    #[test]
    fn a_server_pair_a_crash_left_mismatched_is_issued_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let paths = write_dev_pki(&dir, "node-a").unwrap();
        let ca = DevCa::from_pem(
            &fs::read_to_string(&paths.ca_cert).unwrap(),
            &fs::read_to_string(&paths.ca_key).unwrap(),
        )
        .unwrap();
        let fits = || {
            ca.issued_pair_matches(
                &fs::read_to_string(&paths.server_cert).unwrap(),
                &fs::read_to_string(&paths.server_key).unwrap(),
            )
        };
        assert!(fits());
        // The key replaced, the certificate not yet: what a crash inside `write_pair` leaves.
        let other = ca.issue_client(None, Validity::days(1)).unwrap();
        fs::write(&paths.server_key, &other.key_pem).unwrap();
        assert!(!fits());
        write_dev_pki(&dir, "node-a").unwrap();
        assert!(fits());
        // A pair another CA (an earlier one of the same name) issued.
        let earlier = DevCa::create("hkms dev CA node-a").unwrap();
        let stale = earlier
            .issue_server(&["localhost"], &[], Validity::days(1))
            .unwrap();
        fs::write(&paths.server_cert, &stale.cert_pem).unwrap();
        fs::write(&paths.server_key, &stale.key_pem).unwrap();
        assert!(!fits());
        write_dev_pki(&dir, "node-a").unwrap();
        assert!(fits());
    }
}
