//! The audit bundle: the directory an auditor receives and verifies offline
//! (docs/audit-format.md, "Bundle").
//!
//! Reading and writing only: the record lines stay raw strings here, because their hashes are
//! over the exact bytes; parsing and checking them is [`super::verify`]'s job. The key helpers
//! ([`spki_pem_from_point`], [`der_from_raw_signature`]) are shared with the server, which gets
//! a bare EC point and raw `r || s` signatures from the HSM and must publish standard forms.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use x509_parser::oid_registry::{OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::record::Checkpoint;
use super::witness::{Cosignature, ExportStatement};

/// The `format` of a bundle this code writes and reads.
pub const BUNDLE_FORMAT: &str = "hkms-audit-bundle/v1";
/// The record lines, one per line, in seq order.
pub const RECORDS_FILE: &str = "records.jsonl";
/// The checkpoints, one JSON object per line, in seq order.
pub const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";
/// The signing key, SPKI PEM.
pub const PUBLIC_KEY_FILE: &str = "public-key.pem";
/// The manifest.
pub const MANIFEST_FILE: &str = "manifest.json";
/// The witnesses' cosignatures of the node's checkpoints, one JSON object per line, by seq.
pub const COSIGNATURES_FILE: &str = "cosignatures.jsonl";
/// The node's signed statement of its log's head at export, one JSON line.
pub const STATEMENT_FILE: &str = "statement.json";

/// DER of the SPKI of a P-256 key up to its point: SEQUENCE { SEQUENCE { id-ecPublicKey,
/// prime256v1 }, BIT STRING (66 bytes: no unused bits, then the 65-byte point) }.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];
/// Length of an uncompressed P-256 point: 0x04 || X || Y.
const P256_POINT_LEN: usize = 65;
/// Length of one P-256 scalar (r or s).
const P256_SCALAR_LEN: usize = 32;

/// What the exporter says about the bundle: which node, when, which records, which key.
///
/// The verifier checks every number here against the files, so a manifest cannot claim more
/// than the bundle holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// The node whose log this is.
    pub node: String,
    /// When the bundle was exported (RFC 3339 UTC).
    pub exported_at: String,
    /// Seq of the first record in `records.jsonl` (1 for a full export).
    pub first_seq: u64,
    /// Seq of the last record.
    pub last_seq: u64,
    /// Number of records.
    pub record_count: u64,
    /// [`spki_fingerprint`] of `public-key.pem`.
    pub key_fingerprint: String,
}

/// A bundle in memory, as read from or written to its directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// The manifest.
    pub manifest: Manifest,
    /// The record lines exactly as stored, without their `\n`; hashed as they are.
    pub record_lines: Vec<String>,
    /// The checkpoints, in file order.
    pub checkpoints: Vec<Checkpoint>,
    /// The signing key as SPKI PEM.
    pub public_key_pem: String,
    /// The witnesses' cosignatures of the checkpoints, in file order; none in a bundle made
    /// before witnesses (which has no `cosignatures.jsonl`).
    pub cosignatures: Vec<Cosignature>,
    /// The node's statement of its head at export; `None` in a bundle made before statements,
    /// or when the node signed none (its log was changed under it).
    pub statement: Option<ExportStatement>,
}

/// Why a bundle could not be read or written, or a key or signature could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A file of the bundle is not there.
    #[error("{file} is missing from the bundle {dir}")]
    Missing {
        /// The bundle directory.
        dir: PathBuf,
        /// The file's name.
        file: &'static str,
    },
    /// The file system refused.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing", ...).
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// `write_bundle` never mixes a bundle with other files.
    #[error("{dir} exists and is not empty: a bundle is written to a new or empty directory")]
    NotEmpty {
        /// The directory.
        dir: PathBuf,
    },
    /// A file is not UTF-8.
    #[error("{file}: not UTF-8 text")]
    NotUtf8 {
        /// The file's name.
        file: &'static str,
    },
    /// A line of a JSON-lines file, or the manifest, is not what the format says.
    #[error("{file} line {line}: {message}")]
    Malformed {
        /// The file's name.
        file: &'static str,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// Something could not be serialised for writing.
    #[error("{file}: cannot serialise: {source}")]
    Serialize {
        /// The file's name.
        file: &'static str,
        /// The cause.
        source: serde_json::Error,
    },
    /// The public key is not an ECDSA P-256 SPKI PEM.
    #[error("public key: {0}")]
    PublicKey(String),
    /// A raw signature cannot be converted.
    #[error("signature: {0}")]
    Signature(String),
}

/// Writes `bundle` into `dir`, creating it; refuses an existing directory that is not empty,
/// so an export never overwrites or mixes with an earlier one. A new folder appears with all
/// its files or not at all; an existing empty one gets each file whole, `manifest.json` last
/// ([`crate::durable::write_folder`]), so a bundle cut short by a crash has no manifest and
/// `read_bundle` says so. `cosignatures.jsonl` is written (empty when there is none) when the
/// bundle has a statement or cosignatures, `statement.json` when it has a statement: a bundle
/// with neither is the four files of a bundle made before witnesses.
pub fn write_bundle(dir: &Path, bundle: &Bundle) -> Result<(), BundleError> {
    let io_err = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| BundleError::Io {
            action,
            path,
            source,
        }
    };
    if dir.exists() {
        let mut entries = fs::read_dir(dir).map_err(io_err("reading", dir))?;
        if entries.next().is_some() {
            return Err(BundleError::NotEmpty {
                dir: dir.to_path_buf(),
            });
        }
    } else if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
    }

    let mut records = String::new();
    for (i, line) in bundle.record_lines.iter().enumerate() {
        if line.contains('\n') {
            return Err(BundleError::Malformed {
                file: RECORDS_FILE,
                line: i + 1,
                message: "a record line contains a newline".into(),
            });
        }
        records.push_str(line);
        records.push('\n');
    }
    let mut checkpoints = String::new();
    for cp in &bundle.checkpoints {
        let line = serde_json::to_string(cp).map_err(|source| BundleError::Serialize {
            file: CHECKPOINTS_FILE,
            source,
        })?;
        checkpoints.push_str(&line);
        checkpoints.push('\n');
    }
    let cosignatures: String = bundle
        .cosignatures
        .iter()
        .map(|c| format!("{}\n", c.to_line()))
        .collect();
    let statement = bundle
        .statement
        .as_ref()
        .map(|s| format!("{}\n", s.to_line()));
    let mut manifest = serde_json::to_string_pretty(&bundle.manifest).map_err(|source| {
        BundleError::Serialize {
            file: MANIFEST_FILE,
            source,
        }
    })?;
    manifest.push('\n');

    let mut files = vec![
        (RECORDS_FILE, records.as_bytes()),
        (CHECKPOINTS_FILE, checkpoints.as_bytes()),
        (PUBLIC_KEY_FILE, bundle.public_key_pem.as_bytes()),
    ];
    if statement.is_some() || !bundle.cosignatures.is_empty() {
        files.push((COSIGNATURES_FILE, cosignatures.as_bytes()));
    }
    if let Some(statement) = &statement {
        files.push((STATEMENT_FILE, statement.as_bytes()));
    }
    files.push((MANIFEST_FILE, manifest.as_bytes()));
    crate::durable::write_folder(dir, &files, 0o644).map_err(io_err("writing", dir))
}

/// Reads the bundle in `dir`. The record lines are returned raw (not parsed: the verifier
/// hashes their bytes); checkpoints and manifest are parsed, and a malformed line is reported
/// with its file and line number.
pub fn read_bundle(dir: &Path) -> Result<Bundle, BundleError> {
    let manifest_text = read_text(dir, MANIFEST_FILE)?;
    let manifest: Manifest =
        serde_json::from_str(&manifest_text).map_err(|e| BundleError::Malformed {
            file: MANIFEST_FILE,
            line: e.line(),
            message: e.to_string(),
        })?;

    let records_text = read_text(dir, RECORDS_FILE)?;
    let record_lines = split_lines(RECORDS_FILE, &records_text)?
        .into_iter()
        .map(str::to_string)
        .collect();

    let checkpoints_text = read_text(dir, CHECKPOINTS_FILE)?;
    let mut checkpoints = Vec::new();
    for (i, line) in split_lines(CHECKPOINTS_FILE, &checkpoints_text)?
        .into_iter()
        .enumerate()
    {
        let cp: Checkpoint = serde_json::from_str(line).map_err(|e| BundleError::Malformed {
            file: CHECKPOINTS_FILE,
            line: i + 1,
            message: format!("not a checkpoint: {e}"),
        })?;
        checkpoints.push(cp);
    }

    let public_key_pem = read_text(dir, PUBLIC_KEY_FILE)?;

    // Absent from bundles made before witnesses: the verifier says so.
    let mut cosignatures = Vec::new();
    if let Some(text) = read_optional_text(dir, COSIGNATURES_FILE)? {
        for (i, line) in split_lines(COSIGNATURES_FILE, &text)?
            .into_iter()
            .enumerate()
        {
            let c = Cosignature::from_line(line).map_err(|message| BundleError::Malformed {
                file: COSIGNATURES_FILE,
                line: i + 1,
                message,
            })?;
            cosignatures.push(c);
        }
    }
    let statement = read_optional_text(dir, STATEMENT_FILE)?
        .map(|text| read_statement(&text))
        .transpose()?;
    Ok(Bundle {
        manifest,
        record_lines,
        checkpoints,
        public_key_pem,
        cosignatures,
        statement,
    })
}

/// Parses `statement.json`: one line, ended by a newline.
fn read_statement(text: &str) -> Result<ExportStatement, BundleError> {
    let lines = split_lines(STATEMENT_FILE, text)?;
    let [line] = lines.as_slice() else {
        return Err(BundleError::Malformed {
            file: STATEMENT_FILE,
            line: lines.len().min(2),
            message: format!(
                "the statement is one line, the file has {} (it was edited)",
                lines.len()
            ),
        });
    };
    ExportStatement::from_line(line).map_err(|message| BundleError::Malformed {
        file: STATEMENT_FILE,
        line: 1,
        message,
    })
}

/// Reads a file that bundles made before witnesses lack: `None` when it is not there.
fn read_optional_text(dir: &Path, file: &'static str) -> Result<Option<String>, BundleError> {
    match read_text(dir, file) {
        Ok(text) => Ok(Some(text)),
        Err(BundleError::Missing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads one file of the bundle as UTF-8, naming it when it is missing or unreadable.
fn read_text(dir: &Path, file: &'static str) -> Result<String, BundleError> {
    let path = dir.join(file);
    match fs::read(&path) {
        Ok(bytes) => String::from_utf8(bytes).map_err(|_| BundleError::NotUtf8 { file }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(BundleError::Missing {
            dir: dir.to_path_buf(),
            file,
        }),
        Err(source) => Err(BundleError::Io {
            action: "reading",
            path,
            source,
        }),
    }
}

/// Splits a JSON-lines file whose every line ends in `\n`; a last line without one means the
/// file was cut or edited, and is refused.
fn split_lines<'a>(file: &'static str, text: &'a str) -> Result<Vec<&'a str>, BundleError> {
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(BundleError::Malformed {
            file,
            line: lines.len(),
            message: "the last line does not end with a newline (the file was cut or edited)"
                .into(),
        });
    }
    Ok(lines)
}

/// The key fingerprint used in manifests and checkpoints: the first 3 bytes of SHA-256 of the
/// SPKI DER, as 6 uppercase hex digits. Short enough to read aloud in a ceremony, which is
/// what it is for. It names a key but cannot vouch for one (another key with the same 6 digits
/// takes minutes to find): an auditor compares [`spki_sha256`].
pub fn spki_fingerprint(spki_der: &[u8]) -> String {
    let mut hex = spki_sha256(spki_der);
    hex.truncate(6);
    hex
}

/// SHA-256 of the SPKI DER, as 64 uppercase hex digits: what an auditor compares with the
/// value obtained independently of a bundle. Its first 6 digits are [`spki_fingerprint`].
pub fn spki_sha256(spki_der: &[u8]) -> String {
    hex::encode_upper(Sha256::digest(spki_der))
}

/// Reads an SPKI PEM ("PUBLIC KEY") and checks it is an ECDSA P-256 key with an uncompressed
/// point; returns the SPKI DER (for [`spki_fingerprint`]) and the 65-byte point (for
/// verifying signatures).
pub fn public_key_point(pem: &str) -> Result<(Vec<u8>, Vec<u8>), BundleError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| BundleError::PublicKey(format!("not PEM: {e}")))?;
    if pem.label != "PUBLIC KEY" {
        return Err(BundleError::PublicKey(format!(
            "the PEM block is \"{}\", expected \"PUBLIC KEY\" (SubjectPublicKeyInfo)",
            pem.label
        )));
    }
    let (rest, spki) = SubjectPublicKeyInfo::from_der(&pem.contents)
        .map_err(|e| BundleError::PublicKey(format!("not a SubjectPublicKeyInfo: {e}")))?;
    if !rest.is_empty() {
        return Err(BundleError::PublicKey(format!(
            "{} bytes after the SubjectPublicKeyInfo",
            rest.len()
        )));
    }
    if spki.algorithm.algorithm != OID_KEY_TYPE_EC_PUBLIC_KEY {
        return Err(BundleError::PublicKey(format!(
            "the key's algorithm is {}, expected id-ecPublicKey ({OID_KEY_TYPE_EC_PUBLIC_KEY})",
            spki.algorithm.algorithm
        )));
    }
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    if curve.as_ref() != Some(&OID_EC_P256) {
        return Err(BundleError::PublicKey(format!(
            "the curve is {}, expected P-256 ({OID_EC_P256})",
            curve.map_or_else(|| "not named".to_string(), |c| c.to_id_string())
        )));
    }
    let point = spki.subject_public_key.data.to_vec();
    check_point(&point)?;
    Ok((pem.contents.clone(), point))
}

/// Checks the shape of an uncompressed P-256 point (whether it is on the curve is left to the
/// signature check, which refuses one that is not).
fn check_point(point: &[u8]) -> Result<(), BundleError> {
    if point.len() != P256_POINT_LEN || point.first() != Some(&0x04) {
        return Err(BundleError::PublicKey(format!(
            "the point is {} bytes starting {}, expected an uncompressed P-256 point \
             (65 bytes: 0x04 || X || Y; a CKA_EC_POINT value wrapped in a DER OCTET STRING, \
             04 41 04 ..., must be unwrapped first)",
            point.len(),
            point
                .first()
                .map_or_else(|| "with nothing".to_string(), |b| format!("0x{b:02x}"))
        )));
    }
    Ok(())
}

/// Builds the SPKI PEM of a P-256 public key from its uncompressed point, as the HSM returns
/// it; the server publishes the checkpoint key this way (`public-key.pem`), so that auditors
/// can use it with any tool (openssl, ring, ...).
pub fn spki_pem_from_point(point: &[u8]) -> Result<String, BundleError> {
    check_point(point)?;
    let mut der = P256_SPKI_PREFIX.to_vec();
    der.extend_from_slice(point);
    let b64 = base64(&der);
    let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        // base64 output is ASCII, so every chunk is valid UTF-8.
        pem.push_str(&String::from_utf8_lossy(chunk));
        pem.push('\n');
    }
    pem.push_str("-----END PUBLIC KEY-----\n");
    Ok(pem)
}

/// Standard base64 with padding (RFC 4648 §4), for PEM.
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |i: u32| char::from(ALPHABET.get((i & 63) as usize).copied().unwrap_or(b'='));
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if chunk.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(n) } else { '=' });
    }
    out
}

/// Converts a raw ECDSA P-256 signature `r || s` (64 bytes, what PKCS#11 `CKM_ECDSA` returns)
/// to the DER form `SEQUENCE { INTEGER r, INTEGER s }` that checkpoints carry and that openssl
/// and ring's `*_ASN1` algorithms verify.
pub fn der_from_raw_signature(raw: &[u8]) -> Result<Vec<u8>, BundleError> {
    if raw.len() != 2 * P256_SCALAR_LEN {
        return Err(BundleError::Signature(format!(
            "a raw P-256 signature is 64 bytes (r || s), got {}",
            raw.len()
        )));
    }
    let (r, s) = raw
        .split_at_checked(P256_SCALAR_LEN)
        .ok_or_else(|| BundleError::Signature("cannot split r || s".into()))?;
    let r = der_integer(r, "r")?;
    let s = der_integer(s, "s")?;
    // At most 2 * (2 + 33) = 70 content bytes: the short length form always fits.
    let len = u8::try_from(r.len() + s.len())
        .map_err(|_| BundleError::Signature("signature too long".into()))?;
    let mut der = vec![0x30, len];
    der.extend_from_slice(&r);
    der.extend_from_slice(&s);
    Ok(der)
}

/// One DER INTEGER from an unsigned big-endian scalar: minimal (no leading zero bytes), with
/// a 0x00 in front when the high bit is set so that it stays positive.
fn der_integer(scalar: &[u8], name: &str) -> Result<Vec<u8>, BundleError> {
    let start = scalar.iter().position(|&b| b != 0).ok_or_else(|| {
        BundleError::Signature(format!("{name} is zero, which no valid signature has"))
    })?;
    let digits = scalar.get(start..).unwrap_or_default();
    let pad = digits.first().is_some_and(|&b| b & 0x80 != 0);
    let len = u8::try_from(digits.len() + usize::from(pad))
        .map_err(|_| BundleError::Signature(format!("{name} too long")))?;
    let mut out = vec![0x02, len];
    if pad {
        out.push(0x00);
    }
    out.extend_from_slice(digits);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{
        ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, ECDSA_P256_SHA256_FIXED_SIGNING,
        EcdsaKeyPair, KeyPair, UnparsedPublicKey,
    };

    fn key(alg: &'static ring::signature::EcdsaSigningAlgorithm) -> EcdsaKeyPair {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap()
    }

    fn sample() -> Bundle {
        let k = key(&ECDSA_P256_SHA256_ASN1_SIGNING);
        Bundle {
            manifest: Manifest {
                format: BUNDLE_FORMAT.into(),
                node: "ministry".into(),
                exported_at: "2026-01-01T00:00:00Z".into(),
                first_seq: 1,
                last_seq: 2,
                record_count: 2,
                key_fingerprint: "ABCDEF".into(),
            },
            record_lines: vec!["{\"a\":1}".into(), "{\"b\":2}".into()],
            checkpoints: vec![Checkpoint {
                v: 1,
                seq: 2,
                head: "00".into(),
                time: "2026-01-01T00:00:00Z".into(),
                node: "ministry".into(),
                key_fingerprint: "ABCDEF".into(),
                signature: "3000".into(),
            }],
            public_key_pem: spki_pem_from_point(k.public_key().as_ref()).unwrap(),
            cosignatures: Vec::new(),
            statement: None,
        }
    }

    /// [`sample`] as an exporter with witnesses makes it: a cosignature and a statement.
    fn witnessed() -> Bundle {
        let mut b = sample();
        b.cosignatures = vec![Cosignature {
            v: 1,
            node: "ministry".into(),
            seq: 2,
            head: "00".into(),
            node_key_sha256: "AB".repeat(32),
            witness: "guangdong".into(),
            witness_key: "3059".into(),
            time: "2026-01-01T00:00:01.000Z".into(),
            signature: "3000".into(),
        }];
        b.statement = Some(ExportStatement {
            v: 1,
            node: "ministry".into(),
            seq: 2,
            head: "00".into(),
            time: "2026-01-01T00:00:02.000Z".into(),
            key_fingerprint: "ABCDEF".into(),
            signature: "3000".into(),
        });
        b
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_witnessed_bundle_has_six_files_and_round_trips() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("export");
        let b = witnessed();
        write_bundle(&dir, &b).unwrap();
        assert_eq!(
            names(&dir),
            [
                CHECKPOINTS_FILE,
                COSIGNATURES_FILE,
                MANIFEST_FILE,
                PUBLIC_KEY_FILE,
                RECORDS_FILE,
                STATEMENT_FILE
            ]
        );
        let statement = fs::read_to_string(dir.join(STATEMENT_FILE)).unwrap();
        assert!(statement.starts_with("{\"v\":1,\"node\":\"ministry\",\"seq\":2,"));
        assert_eq!(statement.lines().count(), 1);
        assert!(statement.ends_with("}\n"));
        let cosignatures = fs::read_to_string(dir.join(COSIGNATURES_FILE)).unwrap();
        assert_eq!(cosignatures, format!("{}\n", b.cosignatures[0].to_line()));
        assert_eq!(read_bundle(&dir).unwrap(), b);

        // No cosignature yet: the file is there, empty.
        let mut none = witnessed();
        none.cosignatures.clear();
        let dir = tmp.path().join("none");
        write_bundle(&dir, &none).unwrap();
        assert_eq!(fs::read(dir.join(COSIGNATURES_FILE)).unwrap(), b"");
        assert_eq!(read_bundle(&dir).unwrap(), none);
    }

    #[test]
    fn a_bundle_made_before_witnesses_has_four_files_and_reads_with_none() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("old");
        write_bundle(&dir, &sample()).unwrap();
        assert_eq!(
            names(&dir),
            [
                CHECKPOINTS_FILE,
                MANIFEST_FILE,
                PUBLIC_KEY_FILE,
                RECORDS_FILE
            ]
        );
        let b = read_bundle(&dir).unwrap();
        assert!(b.cosignatures.is_empty());
        assert_eq!(b.statement, None);
    }

    #[test]
    fn a_malformed_cosignature_or_statement_is_named_by_file_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        let b = witnessed();
        write_bundle(&dir, &b).unwrap();
        let line = b.cosignatures[0].to_line();
        fs::write(
            dir.join(COSIGNATURES_FILE),
            format!("{line}\n{}\n", line.replace("\"v\":1", "\"v\":2")),
        )
        .unwrap();
        let err = read_bundle(&dir).unwrap_err().to_string();
        assert!(
            err.starts_with("cosignatures.jsonl line 2: cosignature format version 2"),
            "{err}"
        );
        fs::write(dir.join(COSIGNATURES_FILE), format!("{line}\n")).unwrap();

        let statement = b.statement.as_ref().unwrap().to_line();
        fs::write(
            dir.join(STATEMENT_FILE),
            format!("{statement}\n{statement}\n"),
        )
        .unwrap();
        let err = read_bundle(&dir).unwrap_err().to_string();
        assert!(
            err.starts_with("statement.json line 2: the statement is one line"),
            "{err}"
        );
        fs::write(
            dir.join(STATEMENT_FILE),
            statement.replace("\"v\":1", "\"w\":1") + "\n",
        )
        .unwrap();
        let err = read_bundle(&dir).unwrap_err().to_string();
        assert!(
            err.starts_with("statement.json line 1: not a statement"),
            "{err}"
        );
        fs::write(dir.join(STATEMENT_FILE), &statement).unwrap();
        let err = read_bundle(&dir).unwrap_err().to_string();
        assert!(err.contains("does not end with a newline"), "{err}");
    }

    #[test]
    fn a_bundle_round_trips_through_its_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("export");
        let b = sample();
        write_bundle(&dir, &b).unwrap();
        assert_eq!(
            fs::read_to_string(dir.join(RECORDS_FILE)).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n"
        );
        assert_eq!(read_bundle(&dir).unwrap(), b);
    }

    #[test]
    fn write_refuses_a_non_empty_directory_but_takes_an_empty_one() {
        let tmp = tempfile::tempdir().unwrap();
        write_bundle(tmp.path(), &sample()).unwrap();
        let err = write_bundle(tmp.path(), &sample()).unwrap_err();
        assert!(matches!(err, BundleError::NotEmpty { .. }), "{err}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        write_bundle(&dir, &sample()).unwrap();
        fs::remove_file(dir.join(CHECKPOINTS_FILE)).unwrap();
        let err = read_bundle(&dir).unwrap_err();
        assert!(
            err.to_string().starts_with("checkpoints.jsonl is missing"),
            "{err}"
        );
    }

    #[test]
    fn a_malformed_checkpoint_line_is_named_by_file_and_line() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        let mut b = sample();
        b.checkpoints.push(b.checkpoints[0].clone());
        write_bundle(&dir, &b).unwrap();
        let path = dir.join(CHECKPOINTS_FILE);
        let text = fs::read_to_string(&path).unwrap();
        let first = text.lines().next().unwrap();
        fs::write(&path, format!("{first}\n{{\"v\":1,\"extra\":true}}\n")).unwrap();
        let err = read_bundle(&dir).unwrap_err().to_string();
        assert!(
            err.starts_with("checkpoints.jsonl line 2: not a checkpoint"),
            "{err}"
        );
    }

    #[test]
    fn a_manifest_with_an_unknown_field_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        write_bundle(&dir, &sample()).unwrap();
        let path = dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, text.replacen('{', "{\"signed\": true,", 1)).unwrap();
        let err = read_bundle(&dir).unwrap_err().to_string();
        assert!(err.starts_with("manifest.json line 1:"), "{err}");
        assert!(err.contains("unknown field `signed`"), "{err}");
    }

    #[test]
    fn records_stay_raw_and_a_cut_last_line_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        write_bundle(&dir, &sample()).unwrap();
        let path = dir.join(RECORDS_FILE);
        fs::write(&path, "not json\n{\"b\":2}\n").unwrap();
        assert_eq!(read_bundle(&dir).unwrap().record_lines[0], "not json");
        fs::write(&path, "{\"a\":1}\n{\"b\":").unwrap();
        let err = read_bundle(&dir).unwrap_err().to_string();
        assert!(
            err.starts_with("records.jsonl line 2: the last line"),
            "{err}"
        );
    }

    #[test]
    fn the_pem_from_a_point_parses_back_to_the_same_point_and_matches_openssl_layout() {
        let k = key(&ECDSA_P256_SHA256_ASN1_SIGNING);
        let point = k.public_key().as_ref();
        let pem = spki_pem_from_point(point).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert!(pem.ends_with("\n-----END PUBLIC KEY-----\n"));
        assert!(pem.lines().all(|l| l.len() <= 64));
        let (der, back) = public_key_point(&pem).unwrap();
        assert_eq!(back, point);
        assert_eq!(der.len(), 91);
        assert_eq!(der[..26], P256_SPKI_PREFIX);
    }

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want);
        }
    }

    #[test]
    fn a_point_of_the_wrong_shape_is_refused() {
        assert!(spki_pem_from_point(&[0x04; 64]).is_err());
        let mut wrapped = vec![0x04, 0x41];
        wrapped.extend_from_slice(&[0x04; 65]);
        let err = spki_pem_from_point(&wrapped).unwrap_err().to_string();
        assert!(err.contains("OCTET STRING"), "{err}");
        let mut compressed = vec![0x02];
        compressed.extend_from_slice(&[1; 64]);
        assert!(spki_pem_from_point(&compressed).is_err());
    }

    #[test]
    fn a_key_that_is_not_p256_or_not_a_public_key_is_refused() {
        // An Ed25519 SPKI (RFC 8410 example).
        let ed = "-----BEGIN PUBLIC KEY-----\n\
                  MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=\n\
                  -----END PUBLIC KEY-----\n";
        let err = public_key_point(ed).unwrap_err().to_string();
        assert!(err.contains("expected id-ecPublicKey"), "{err}");
        // A P-384 key: same algorithm, other curve.
        let p384 = "-----BEGIN PUBLIC KEY-----\n\
            MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAESywlCIH592R5BX7OlkXRIbv7c0sbzZ2Z\n\
            p1BF6HeoDZKFamFv4tAkU7+//+6DmBvhCIwq8G/FoQUx3iO1B8LwspGLvq4hHPQf\n\
            2YOxvCcEjepJ3ux45BpoixWgaePcNbjf\n\
            -----END PUBLIC KEY-----\n";
        let err = public_key_point(p384).unwrap_err().to_string();
        assert!(err.contains("expected P-256"), "{err}");
        let err = public_key_point("hello").unwrap_err().to_string();
        assert!(err.contains("not PEM"), "{err}");
        let cert = "-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
        let err = public_key_point(cert).unwrap_err().to_string();
        assert!(err.contains("expected \"PUBLIC KEY\""), "{err}");
    }

    #[test]
    fn the_fingerprint_is_six_uppercase_hex_digits_of_the_spki_sha256() {
        let fp = spki_fingerprint(b"abc");
        // SHA-256("abc") = ba7816bf...
        assert_eq!(fp, "BA7816");
    }

    #[test]
    fn a_raw_signature_converted_to_der_verifies_with_the_asn1_algorithm() {
        let rng = SystemRandom::new();
        let k = key(&ECDSA_P256_SHA256_FIXED_SIGNING);
        let public = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, k.public_key().as_ref());
        // Many signatures, so that r and s with the high bit set (padding) and without both occur.
        let (mut padded, mut unpadded) = (0, 0);
        for i in 0..64u32 {
            let msg = format!("hkms-audit-checkpoint/v1 ministry {i} ab 2026-01-01T00:00:00Z");
            let raw = k.sign(&rng, msg.as_bytes()).unwrap();
            assert_eq!(raw.as_ref().len(), 64);
            let der = der_from_raw_signature(raw.as_ref()).unwrap();
            public.verify(msg.as_bytes(), &der).unwrap();
            if raw.as_ref()[0] & 0x80 != 0 {
                padded += 1;
            } else {
                unpadded += 1;
            }
        }
        assert!(padded > 0 && unpadded > 0);
    }

    #[test]
    fn der_integers_are_minimal_and_positive() {
        let mut raw = [0u8; 64];
        raw[31] = 0x01; // r = 1
        raw[32] = 0x80; // s has its high bit set
        let der = der_from_raw_signature(&raw).unwrap();
        let mut want = vec![0x30, 3 + 35, 0x02, 0x01, 0x01, 0x02, 0x21, 0x00, 0x80];
        want.extend_from_slice(&[0; 31]);
        assert_eq!(der, want);
        assert!(der_from_raw_signature(&[0u8; 64]).is_err());
        assert!(der_from_raw_signature(&[1u8; 63]).is_err());
    }
    #[test]
    fn write_creates_missing_parent_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("exports").join("2026").join("b");
        let b = sample();
        write_bundle(&dir, &b).unwrap();
        assert_eq!(read_bundle(&dir).unwrap(), b);
    }

    #[test]
    fn a_record_line_with_a_newline_is_named_by_its_line() {
        let tmp = tempfile::tempdir().unwrap();
        let mut b = sample();
        b.record_lines[1] = "{\"b\":\n2}".into();
        let err = write_bundle(&tmp.path().join("b"), &b).unwrap_err();
        assert!(
            matches!(
                err,
                BundleError::Malformed {
                    file: RECORDS_FILE,
                    line: 2,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn an_unreadable_file_is_an_io_error_not_a_missing_one() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("b");
        write_bundle(&dir, &sample()).unwrap();
        fs::remove_file(dir.join(MANIFEST_FILE)).unwrap();
        fs::create_dir(dir.join(MANIFEST_FILE)).unwrap();
        let err = read_bundle(&dir).unwrap_err();
        assert!(
            matches!(
                err,
                BundleError::Io {
                    action: "reading",
                    ..
                }
            ),
            "{err}"
        );
    }
}
