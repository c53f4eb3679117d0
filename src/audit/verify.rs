//! The offline verifier: checks a bundle with nothing but its own files and, ideally, the
//! node's key fingerprint obtained independently (docs/audit-format.md, "Verification").
//!
//! It stops at the first broken place and names it exactly (record and line, or checkpoint,
//! line and seq), because an auditor's next step is to look at that place.

use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};

use super::bundle::{
    BUNDLE_FORMAT, Bundle, CHECKPOINTS_FILE, MANIFEST_FILE, PUBLIC_KEY_FILE, RECORDS_FILE,
    public_key_point, spki_fingerprint, spki_sha256,
};
use super::record::{AuditRecord, Checkpoint, FORMAT_VERSION, GENESIS, line_hash};

/// What a verified bundle proves: which records, sealed up to where, by which key, and what
/// could not be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Seq of the first record.
    pub first_seq: u64,
    /// Seq of the last record.
    pub last_seq: u64,
    /// Number of records.
    pub records: usize,
    /// Number of checkpoints.
    pub checkpoints: usize,
    /// Seq of the last record covered by a valid checkpoint (equals `last_seq` on success).
    pub sealed_up_to: u64,
    /// Fingerprint of the key that signed the checkpoints.
    pub key_fingerprint: String,
    /// SHA-256 of that key (SPKI DER), 64 hex digits.
    pub key_sha256: String,
    /// What the auditor should know but is not an error (a partial export, an unchecked key).
    pub notes: Vec<String>,
}

/// The first broken place in a bundle, and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {message}")]
pub struct VerifyError {
    /// Exactly where: "record 17 (records.jsonl line 17)",
    /// "checkpoint 3 (checkpoints.jsonl line 3, seq 40)", "public-key.pem", ...
    pub place: String,
    /// What is wrong there, and what it means.
    pub message: String,
}

impl VerifyError {
    fn new(place: impl Into<String>, message: impl Into<String>) -> VerifyError {
        VerifyError {
            place: place.into(),
            message: message.into(),
        }
    }
}

/// The place of the record with `seq` on `line` (1-based).
fn record_place(seq: u64, line: usize) -> String {
    format!("record {seq} ({RECORDS_FILE} line {line})")
}

/// The place of checkpoint `k` (1-based line) sealing `seq`.
fn checkpoint_place(k: usize, seq: u64) -> String {
    format!("checkpoint {k} ({CHECKPOINTS_FILE} line {k}, seq {seq})")
}

/// Parses one record line (`line` is 1-based), naming the line when it is not a record.
pub(crate) fn parse_record_line(line: usize, text: &str) -> Result<AuditRecord, VerifyError> {
    serde_json::from_str(text).map_err(|e| {
        VerifyError::new(
            format!("{RECORDS_FILE} line {line}"),
            format!("not a record of the ceremony log: {e}"),
        )
    })
}

/// Verifies `bundle`: key, record chain, checkpoints, seal of the tail, manifest.
///
/// `expect_sha256` is the SHA-256 of the node's key (64 hex digits) as the auditor got it
/// independently (from the node's operators, a ceremony minute, ...); without it, a bundle
/// whose checkpoints were all re-signed with another key would also verify, and the report
/// says so. A 6-digit fingerprint is refused there: it names a key but cannot vouch for one.
pub fn verify_bundle(
    bundle: &Bundle,
    expect_sha256: Option<&str>,
) -> Result<VerifyReport, VerifyError> {
    let mut notes = Vec::new();
    let manifest = &bundle.manifest;
    if manifest.format != BUNDLE_FORMAT {
        return Err(VerifyError::new(
            MANIFEST_FILE,
            format!(
                "format is \"{}\", this verifier reads \"{BUNDLE_FORMAT}\"",
                manifest.format
            ),
        ));
    }

    // 1. The key.
    let (spki_der, point) = public_key_point(&bundle.public_key_pem)
        .map_err(|e| VerifyError::new(PUBLIC_KEY_FILE, e.to_string()))?;
    let fingerprint = spki_fingerprint(&spki_der);
    if manifest.key_fingerprint != fingerprint {
        return Err(VerifyError::new(
            MANIFEST_FILE,
            format!(
                "key_fingerprint is {}, but {PUBLIC_KEY_FILE} has fingerprint {fingerprint}",
                manifest.key_fingerprint
            ),
        ));
    }
    let sha256 = spki_sha256(&spki_der);
    match expect_sha256.map(parse_expected_sha256).transpose()? {
        Some(expected) if expected != sha256 => {
            return Err(VerifyError::new(
                PUBLIC_KEY_FILE,
                format!(
                    "the bundle's key is not the node's key: its SHA-256 is {sha256}, expected \
                     {expected}"
                ),
            ));
        }
        Some(_) => {}
        None => notes.push(format!(
            "the key (SHA-256 {sha256}) was not compared with one obtained independently: a \
             bundle re-signed with another key would also verify"
        )),
    }
    let public_key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point);

    // 2. The records: each parses, seqs are consecutive, each prev is the previous hash.
    let mut hashes: Vec<String> = Vec::with_capacity(bundle.record_lines.len());
    let mut first_seq: u64 = 0;
    let mut last_seq: u64 = 0;
    for (i, text) in bundle.record_lines.iter().enumerate() {
        let line = i + 1;
        let record = parse_record_line(line, text)?;
        let here = record_place(record.seq, line);
        if record.v != FORMAT_VERSION {
            return Err(VerifyError::new(
                here,
                format!(
                    "format version {} is not supported (expected {FORMAT_VERSION})",
                    record.v
                ),
            ));
        }
        // One node's log: a record of another node was spliced in, or the manifest lies.
        if record.node != manifest.node {
            return Err(VerifyError::new(
                here,
                format!(
                    "the record is of node \"{}\", the bundle of node \"{}\": logs of two \
                     nodes were mixed",
                    crate::audit::record::cut(&record.node, 64),
                    crate::audit::record::cut(&manifest.node, 64)
                ),
            ));
        }
        match hashes.last() {
            None => {
                first_seq = record.seq;
                if record.seq == 0 {
                    return Err(VerifyError::new(here, "seq 0: the log starts at 1"));
                }
                if record.seq == 1 {
                    if record.prev != GENESIS {
                        return Err(VerifyError::new(
                            here,
                            "prev is not GENESIS (64 zeros), as the log's first record \
                             must be: records before it were removed, or it was changed",
                        ));
                    }
                } else {
                    notes.push(format!(
                        "partial export: the bundle starts at record {}, so its prev ({}) \
                         cannot be checked against an earlier record",
                        record.seq, record.prev
                    ));
                }
            }
            Some(prev_hash) => {
                let Some(expected) = last_seq.checked_add(1) else {
                    return Err(VerifyError::new(
                        here,
                        format!("record at line {line} follows seq {last_seq}, the largest seq"),
                    ));
                };
                if record.seq > expected {
                    let message = match find_seq(&bundle.record_lines, i + 1, expected) {
                        Some(later) => format!(
                            "record at line {line} has seq {}, expected {expected} (records \
                             were inserted, removed or reordered): record {expected} is at \
                             line {later}",
                            record.seq
                        ),
                        None => format!("record {expected} is missing after record {last_seq}"),
                    };
                    return Err(VerifyError::new(here, message));
                }
                if record.seq < expected {
                    return Err(VerifyError::new(
                        here,
                        format!(
                            "record at line {line} has seq {}, expected {expected} (records \
                             were inserted, removed or reordered)",
                            record.seq
                        ),
                    ));
                }
                if &record.prev != prev_hash {
                    return Err(VerifyError::new(
                        here,
                        format!(
                            "prev does not match record {last_seq}'s hash: record {last_seq} \
                             was changed, or a record was inserted or removed here"
                        ),
                    ));
                }
            }
        }
        last_seq = record.seq;
        hashes.push(line_hash(text));
    }
    if hashes.is_empty() {
        return Err(VerifyError::new(RECORDS_FILE, "the bundle has no records"));
    }

    // 3. The checkpoints.
    let mut sealed_up_to: Option<u64> = None;
    let mut previous: Option<u64> = None;
    for (i, cp) in bundle.checkpoints.iter().enumerate() {
        let k = i + 1;
        let here = checkpoint_place(k, cp.seq);
        check_checkpoint(cp, k, &here, first_seq, last_seq, &hashes, &fingerprint)?;
        if cp.node != manifest.node {
            return Err(VerifyError::new(
                here,
                format!(
                    "the checkpoint is of node \"{}\", the bundle of node \"{}\"",
                    crate::audit::record::cut(&cp.node, 64),
                    crate::audit::record::cut(&manifest.node, 64)
                ),
            ));
        }
        verify_signature(cp, k, &here, &public_key)?;
        if let Some(p) = previous
            && cp.seq <= p
        {
            return Err(VerifyError::new(
                here,
                format!(
                    "checkpoints are out of order: checkpoint {k} seals record {}, but \
                     checkpoint {} already sealed record {p}",
                    cp.seq, i
                ),
            ));
        }
        previous = Some(cp.seq);
        if cp.seq < first_seq {
            notes.push(format!(
                "checkpoint {k} seals record {}, before the bundle's first record: its \
                 signature is valid but its head cannot be checked",
                cp.seq
            ));
        } else {
            sealed_up_to = Some(cp.seq);
        }
    }

    // 4. The end of the log must be sealed.
    let sealed_up_to = match sealed_up_to {
        Some(s) if s >= last_seq => s,
        other => {
            let first_unsealed = other.map_or(first_seq, |s| s + 1);
            let line = usize::try_from(first_unsealed - first_seq + 1).unwrap_or(usize::MAX);
            let what = if first_unsealed == last_seq {
                format!("record {last_seq} is not sealed by any checkpoint")
            } else {
                format!("records {first_unsealed}..{last_seq} are not sealed by any checkpoint")
            };
            return Err(VerifyError::new(
                record_place(first_unsealed, line),
                format!("{what} (the tail may have been cut or extended)"),
            ));
        }
    };

    // 5. The manifest must describe these records.
    let count = u64::try_from(hashes.len()).unwrap_or(u64::MAX);
    for (field, claimed, actual) in [
        ("first_seq", manifest.first_seq, first_seq),
        ("last_seq", manifest.last_seq, last_seq),
        ("record_count", manifest.record_count, count),
    ] {
        if claimed != actual {
            return Err(VerifyError::new(
                MANIFEST_FILE,
                format!("{field} is {claimed}, but {RECORDS_FILE} has {actual}"),
            ));
        }
    }

    Ok(VerifyReport {
        first_seq,
        last_seq,
        records: hashes.len(),
        checkpoints: bundle.checkpoints.len(),
        sealed_up_to,
        key_fingerprint: fingerprint,
        key_sha256: sha256,
        notes,
    })
}

/// The auditor's expected SHA-256 in canonical form (64 uppercase hex digits); spaces and
/// colons between the digits are allowed. A 6-digit fingerprint is refused.
pub fn parse_expected_sha256(given: &str) -> Result<String, VerifyError> {
    let digits: String = given
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ':')
        .collect::<String>()
        .to_ascii_uppercase();
    let hex = digits.chars().all(|c| c.is_ascii_hexdigit());
    match digits.len() {
        64 if hex => Ok(digits),
        6 if hex => Err(VerifyError::new(
            "the expected key",
            format!(
                "{digits} is a short fingerprint (6 hex digits): another key with the same \
                 digits can be made in minutes, so it cannot show that the bundle's key is the \
                 node's. Give the key's whole SHA-256 (64 hex digits; `hkms audit export` and \
                 the node's start-up log print it)"
            ),
        )),
        _ => Err(VerifyError::new(
            "the expected key",
            "not a SHA-256 (64 hex digits) of the node's key",
        )),
    }
}

/// The 1-based line, at or after index `from`, of a record with `seq`: tells a reordering
/// from a removal.
fn find_seq(lines: &[String], from: usize, seq: u64) -> Option<usize> {
    lines
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, text)| serde_json::from_str::<AuditRecord>(text).is_ok_and(|r| r.seq == seq))
        .map(|(i, _)| i + 1)
}

/// A checkpoint's version, range, head and fingerprint (everything but the signature).
fn check_checkpoint(
    cp: &Checkpoint,
    k: usize,
    here: &str,
    first_seq: u64,
    last_seq: u64,
    hashes: &[String],
    fingerprint: &str,
) -> Result<(), VerifyError> {
    if cp.v != FORMAT_VERSION {
        return Err(VerifyError::new(
            here,
            format!(
                "format version {} is not supported (expected {FORMAT_VERSION})",
                cp.v
            ),
        ));
    }
    if cp.seq > last_seq {
        return Err(VerifyError::new(
            here,
            format!(
                "checkpoint seals record {}, but the bundle ends at record {last_seq}: records \
                 {}..{} were removed (truncated tail)",
                cp.seq,
                last_seq + 1,
                cp.seq
            ),
        ));
    }
    if cp.seq >= first_seq {
        let index = usize::try_from(cp.seq - first_seq).unwrap_or(usize::MAX);
        let line = index.saturating_add(1);
        let actual = hashes.get(index).ok_or_else(|| {
            VerifyError::new(here, format!("record {} is not in the bundle", cp.seq))
        })?;
        if &cp.head != actual {
            return Err(VerifyError::new(
                here,
                format!(
                    "record {} was changed after checkpoint {k} sealed it: the hash of \
                     {RECORDS_FILE} line {line} is {actual}, the checkpoint's head is {} (or the \
                     records before it were rewritten and re-chained)",
                    cp.seq, cp.head
                ),
            ));
        }
    }
    if cp.key_fingerprint != fingerprint {
        return Err(VerifyError::new(
            here,
            format!(
                "checkpoint {k} names signing key {}, but the bundle's key is {fingerprint}",
                cp.key_fingerprint
            ),
        ));
    }
    Ok(())
}

/// Whether a checkpoint's signature verifies with the public key `spki_pem` (the node's check
/// at start that its token still holds the key that sealed its log).
pub fn checkpoint_verifies(cp: &Checkpoint, spki_pem: &str) -> bool {
    let Ok((_, point)) = public_key_point(spki_pem) else {
        return false;
    };
    let key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point);
    verify_signature(cp, 1, "", &key).is_ok()
}

/// The checkpoint's signature over [`Checkpoint::signed_message`] with the bundle's key.
fn verify_signature(
    cp: &Checkpoint,
    k: usize,
    here: &str,
    public_key: &UnparsedPublicKey<Vec<u8>>,
) -> Result<(), VerifyError> {
    let signature = hex::decode(&cp.signature).map_err(|e| {
        VerifyError::new(
            here,
            format!("checkpoint {k}: the signature is not hex: {e}"),
        )
    })?;
    public_key
        .verify(cp.signed_message().as_bytes(), &signature)
        .map_err(|_| {
            VerifyError::new(
                here,
                format!(
                    "checkpoint {k}: the signature does not verify with the bundle's public key \
                     (forged, or signed by another key)"
                ),
            )
        })
}

#[cfg(test)]
pub(crate) mod fixture {
    //! A real bundle made in memory: 20 records chained from GENESIS, checkpoints at 10 and
    //! 20 signed with a fresh ring key.

    use std::collections::BTreeMap;

    use ring::rand::SystemRandom;
    use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

    use crate::audit::bundle::{
        BUNDLE_FORMAT, Bundle, Manifest, public_key_point, spki_fingerprint, spki_pem_from_point,
        spki_sha256,
    };
    use crate::audit::record::{
        AuditDraft, AuditRecord, Checkpoint, DecisionEntry, GENESIS, KcvEntry, Outcome, line_hash,
    };

    /// The node of the fixture.
    pub const NODE: &str = "ministry";

    /// A signing key and what the bundle says about it.
    pub struct TestKey {
        pub pair: EcdsaKeyPair,
        pub pem: String,
        pub fingerprint: String,
        pub sha256: String,
    }

    impl TestKey {
        pub fn new() -> TestKey {
            let rng = SystemRandom::new();
            let pkcs8 =
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
            let pair =
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
                    .unwrap();
            let pem = spki_pem_from_point(pair.public_key().as_ref()).unwrap();
            let (der, _) = public_key_point(&pem).unwrap();
            TestKey {
                pair,
                pem,
                fingerprint: spki_fingerprint(&der),
                sha256: spki_sha256(&der),
            }
        }

        /// A checkpoint over `seq`/`head`, signed with this key and naming `fingerprint`.
        pub fn sign_as(&self, fingerprint: &str, seq: u64, head: &str) -> Checkpoint {
            let time = format!("2026-03-01T10:00:{:02}Z", seq % 60);
            let msg = Checkpoint::message(NODE, seq, head, &time);
            let sig = self
                .pair
                .sign(&SystemRandom::new(), msg.as_bytes())
                .unwrap();
            Checkpoint {
                v: 1,
                seq,
                head: head.to_string(),
                time,
                node: NODE.into(),
                key_fingerprint: fingerprint.to_string(),
                signature: hex::encode(sig.as_ref()),
            }
        }

        /// A checkpoint signed with this key under its own fingerprint.
        pub fn sign(&self, seq: u64, head: &str) -> Checkpoint {
            self.sign_as(&self.fingerprint, seq, head)
        }
    }

    /// The draft of record `seq`: a mix of key operations, a ceremony and denials.
    pub fn draft(seq: u64) -> AuditDraft {
        let mut d = AuditDraft {
            request_id: format!("req-{seq}"),
            node: NODE.into(),
            actor: format!("hkms://officer/national/000000/officer-{}", seq % 3),
            rpc: "GetKey".into(),
            operation: "read".into(),
            key_ids: vec![format!("key-{seq}")],
            decision: Some(DecisionEntry {
                allowed: true,
                rule: Some("officers-read".into()),
                reason: "officers may read".into(),
            }),
            policy_sha256: "ab".repeat(32),
            outcome: Some(Outcome {
                ok: true,
                code: "OK".into(),
                message: String::new(),
            }),
            ..AuditDraft::default()
        };
        d.params.insert("seq".into(), seq.to_string());
        if seq.is_multiple_of(4) {
            d.rpc = "GenerateKey".into();
            d.kcvs = vec![KcvEntry {
                key_id: format!("key-{seq}"),
                kcv: "0A1B2C".into(),
                method: "aes-cmac".into(),
            }];
        }
        d
    }

    /// The record lines 1..=n, chained from GENESIS.
    pub fn lines(n: u64) -> Vec<String> {
        let mut prev = GENESIS.to_string();
        let mut out = Vec::new();
        for seq in 1..=n {
            let time = format!("2026-03-01T09:{:02}:00.000Z", seq % 60);
            let line = AuditRecord::from_draft(&draft(seq), seq, time, prev)
                .to_line()
                .unwrap();
            prev = line_hash(&line);
            out.push(line);
        }
        out
    }

    /// The clean bundle and the key that signed it.
    pub fn clean() -> (Bundle, TestKey) {
        let key = TestKey::new();
        let record_lines = lines(20);
        let checkpoints = [10u64, 20]
            .iter()
            .map(|&s| key.sign(s, &line_hash(&record_lines[s as usize - 1])))
            .collect();
        let bundle = Bundle {
            manifest: Manifest {
                format: BUNDLE_FORMAT.into(),
                node: NODE.into(),
                exported_at: "2026-03-01T11:00:00Z".into(),
                first_seq: 1,
                last_seq: 20,
                record_count: 20,
                key_fingerprint: key.fingerprint.clone(),
            },
            record_lines,
            checkpoints,
            public_key_pem: key.pem.clone(),
        };
        (bundle, key)
    }

    /// Record line `seq` (1-based) of `b` as a record.
    pub fn record(b: &Bundle, seq: usize) -> AuditRecord {
        serde_json::from_str(&b.record_lines[seq - 1]).unwrap()
    }

    /// Parameters for a record, as a map.
    pub fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{TestKey, clean, lines, record};
    use super::*;
    use crate::audit::bundle::{read_bundle, write_bundle};

    fn err(b: &Bundle, expect: Option<&str>) -> VerifyError {
        verify_bundle(b, expect).unwrap_err()
    }

    #[test]
    fn a_clean_bundle_verifies() {
        let (b, key) = clean();
        let report = verify_bundle(&b, Some(&key.sha256)).unwrap();
        assert_eq!(report.first_seq, 1);
        assert_eq!(report.last_seq, 20);
        assert_eq!(report.records, 20);
        assert_eq!(report.checkpoints, 2);
        assert_eq!(report.sealed_up_to, 20);
        assert_eq!(report.key_fingerprint, key.fingerprint);
        assert_eq!(report.key_sha256, key.sha256);
        assert!(report.key_sha256.starts_with(&key.fingerprint));
        assert!(report.notes.is_empty(), "{:?}", report.notes);
        // The expected SHA-256 may be typed in lowercase, in groups, or with colons.
        verify_bundle(&b, Some(&key.sha256.to_lowercase())).unwrap();
        let grouped: Vec<String> = key
            .sha256
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        verify_bundle(&b, Some(&grouped.join(":"))).unwrap();
        verify_bundle(&b, Some(&format!(" {} ", grouped.join(" ")))).unwrap();
    }

    #[test]
    fn a_clean_bundle_verifies_after_a_trip_through_its_directory() {
        let (b, key) = clean();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("bundle");
        write_bundle(&dir, &b).unwrap();
        let back = read_bundle(&dir).unwrap();
        verify_bundle(&back, Some(&key.sha256)).unwrap();
    }

    #[test]
    fn without_an_expected_fingerprint_the_report_says_the_key_was_not_checked() {
        let (b, _) = clean();
        let report = verify_bundle(&b, None).unwrap();
        assert!(report.notes.iter().any(|n| n.contains("not compared")));
    }

    #[test]
    fn a_changed_field_in_record_5_is_caught_by_record_6s_prev() {
        let (mut b, _) = clean();
        b.record_lines[4] = b.record_lines[4].replace("officer-2", "officer-9");
        let e = err(&b, None);
        assert_eq!(e.place, "record 6 (records.jsonl line 6)");
        assert!(
            e.message.starts_with("prev does not match record 5's hash"),
            "{e}"
        );
    }

    #[test]
    fn a_changed_field_in_the_last_record_is_caught_by_its_checkpoint() {
        let (mut b, _) = clean();
        b.record_lines[19] = b.record_lines[19].replace("\"ok\":true", "\"ok\":false");
        let e = err(&b, None);
        assert_eq!(e.place, "checkpoint 2 (checkpoints.jsonl line 2, seq 20)");
        assert!(
            e.message
                .starts_with("record 20 was changed after checkpoint 2 sealed it"),
            "{e}"
        );
    }

    #[test]
    fn a_deleted_record_is_named_at_the_gap() {
        let (mut b, _) = clean();
        b.record_lines.remove(6);
        let e = err(&b, None);
        assert_eq!(e.place, "record 8 (records.jsonl line 7)");
        assert_eq!(e.message, "record 7 is missing after record 6");
    }

    #[test]
    fn an_inserted_record_is_named_where_the_seqs_stop_following() {
        let (mut b, _) = clean();
        // A forged record 8 that chains correctly onto record 7.
        let mut forged = record(&b, 8);
        forged.actor = "hkms://officer/national/000000/mallory".into();
        forged.prev = line_hash(&b.record_lines[6]);
        b.record_lines.insert(7, forged.to_line().unwrap());
        let e = err(&b, None);
        assert_eq!(e.place, "record 8 (records.jsonl line 9)");
        assert!(e.message.contains("has seq 8, expected 9"), "{e}");
        assert!(e.message.contains("inserted, removed or reordered"), "{e}");
    }

    #[test]
    fn an_inserted_record_with_renumbered_followers_breaks_the_chain() {
        let (mut b, _) = clean();
        let mut forged = record(&b, 8);
        forged.actor = "hkms://officer/national/000000/mallory".into();
        forged.prev = line_hash(&b.record_lines[6]);
        b.record_lines.insert(7, forged.to_line().unwrap());
        for i in 8..b.record_lines.len() {
            let mut r: AuditRecord = serde_json::from_str(&b.record_lines[i]).unwrap();
            r.seq += 1;
            b.record_lines[i] = r.to_line().unwrap();
        }
        let e = err(&b, None);
        assert_eq!(e.place, "record 9 (records.jsonl line 9)");
        assert!(
            e.message.starts_with("prev does not match record 8's hash"),
            "{e}"
        );
    }

    #[test]
    fn swapped_records_are_named_at_the_first_out_of_place_line() {
        let (mut b, _) = clean();
        b.record_lines.swap(7, 8);
        let e = err(&b, None);
        assert_eq!(e.place, "record 9 (records.jsonl line 8)");
        assert!(e.message.starts_with("record at line 8 has seq 9, expected 8 (records were inserted, removed or reordered)"), "{e}");
        assert!(e.message.ends_with("record 8 is at line 9"), "{e}");
    }

    #[test]
    fn a_truncated_tail_is_named_by_the_checkpoint_that_sealed_it() {
        let (mut b, _) = clean();
        b.record_lines.truncate(17);
        let e = err(&b, None);
        assert_eq!(e.place, "checkpoint 2 (checkpoints.jsonl line 2, seq 20)");
        assert_eq!(
            e.message,
            "checkpoint seals record 20, but the bundle ends at record 17: records 18..20 were \
             removed (truncated tail)"
        );
    }

    #[test]
    fn a_forged_signature_is_named() {
        let (mut b, _) = clean();
        let sig = &mut b.checkpoints[0].signature;
        let last = sig.pop().unwrap();
        sig.push(if last == '0' { '1' } else { '0' });
        let e = err(&b, None);
        assert_eq!(e.place, "checkpoint 1 (checkpoints.jsonl line 1, seq 10)");
        assert!(e.message.contains("the signature does not verify"), "{e}");
    }

    #[test]
    fn a_checkpoint_re_signed_with_another_key_is_named() {
        let (mut b, key) = clean();
        let other = TestKey::new();
        let cp = &b.checkpoints[1];
        b.checkpoints[1] = other.sign_as(&key.fingerprint, cp.seq, &cp.head);
        let e = err(&b, None);
        assert_eq!(e.place, "checkpoint 2 (checkpoints.jsonl line 2, seq 20)");
        assert!(
            e.message.contains("(forged, or signed by another key)"),
            "{e}"
        );

        // Honest about the other key: caught by the fingerprint before the signature.
        b.checkpoints[1] = other.sign(cp_seq(&b, 1), &b.checkpoints[1].head.clone());
        let e = err(&b, None);
        assert_eq!(e.place, "checkpoint 2 (checkpoints.jsonl line 2, seq 20)");
        assert!(e.message.contains("names signing key"), "{e}");
    }

    fn cp_seq(b: &Bundle, i: usize) -> u64 {
        b.checkpoints[i].seq
    }

    #[test]
    fn a_replaced_key_is_caught_by_the_expected_fingerprint() {
        let (mut b, key) = clean();
        // The forger re-signs every checkpoint with their own key and fixes the manifest.
        let other = TestKey::new();
        b.checkpoints = b
            .checkpoints
            .iter()
            .map(|cp| other.sign(cp.seq, &cp.head))
            .collect();
        b.public_key_pem = other.pem.clone();
        b.manifest.key_fingerprint = other.fingerprint.clone();
        // Consistent in itself, so only the independent fingerprint exposes it.
        verify_bundle(&b, None).unwrap();
        let e = err(&b, Some(&key.sha256));
        assert_eq!(e.place, "public-key.pem");
        assert!(
            e.message
                .starts_with("the bundle's key is not the node's key"),
            "{e}"
        );
    }

    #[test]
    fn a_short_fingerprint_cannot_vouch_for_the_key() {
        let (b, key) = clean();
        // Even the right 6 digits are refused: a forged key with them takes minutes to find.
        let e = err(&b, Some(&key.fingerprint));
        assert_eq!(e.place, "the expected key");
        assert!(e.message.contains("short fingerprint"), "{e}");
        for bad in ["", "XYZ", &key.sha256[..63], &format!("{}0", key.sha256)] {
            let e = err(&b, Some(bad));
            assert!(e.message.starts_with("not a SHA-256"), "{bad}: {e}");
        }
    }

    #[test]
    fn every_digit_of_the_sha256_is_compared() {
        let (b, key) = clean();
        // A key that shares the first 6 digits (what a forger finds in minutes) differs later.
        let mut forged: Vec<u8> = key.sha256.clone().into_bytes();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == b'0' { b'1' } else { b'0' };
        let forged = String::from_utf8(forged).unwrap();
        assert!(forged.starts_with(&key.fingerprint));
        let e = err(&b, Some(&forged));
        assert!(
            e.message
                .starts_with("the bundle's key is not the node's key"),
            "{e}"
        );
    }

    #[test]
    fn a_key_that_does_not_match_the_manifest_is_named() {
        let (mut b, _) = clean();
        b.public_key_pem = TestKey::new().pem;
        let e = err(&b, None);
        assert_eq!(e.place, "manifest.json");
        assert!(e.message.contains("public-key.pem has fingerprint"), "{e}");
    }

    #[test]
    fn an_unsealed_tail_is_named_at_its_first_record() {
        let (mut b, _) = clean();
        b.record_lines = lines(21);
        b.manifest.last_seq = 21;
        b.manifest.record_count = 21;
        let e = err(&b, None);
        assert_eq!(e.place, "record 21 (records.jsonl line 21)");
        assert_eq!(
            e.message,
            "record 21 is not sealed by any checkpoint (the tail may have been cut or extended)"
        );
        b.record_lines = lines(23);
        let e = err(&b, None);
        assert!(
            e.message.starts_with("records 21..23 are not sealed"),
            "{e}"
        );
    }

    #[test]
    fn a_partial_export_verifies_with_a_note() {
        let (mut b, key) = clean();
        b.record_lines.drain(..5);
        b.manifest.first_seq = 6;
        b.manifest.record_count = 15;
        let report = verify_bundle(&b, Some(&key.sha256)).unwrap();
        assert_eq!(
            (report.first_seq, report.last_seq, report.records),
            (6, 20, 15)
        );
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.contains("starts at record 6")),
            "{report:?}"
        );
    }

    #[test]
    fn the_first_record_of_the_log_must_start_from_genesis() {
        let (mut b, _) = clean();
        let mut r = record(&b, 1);
        r.prev = "11".repeat(32);
        b.record_lines[0] = r.to_line().unwrap();
        let e = err(&b, None);
        assert_eq!(e.place, "record 1 (records.jsonl line 1)");
        assert!(e.message.starts_with("prev is not GENESIS"), "{e}");
    }

    #[test]
    fn a_line_that_is_not_a_record_is_named_by_its_line() {
        let (mut b, _) = clean();
        b.record_lines[2] = b.record_lines[2].replacen('{', "{\"extra\":1,", 1);
        let e = err(&b, None);
        assert_eq!(e.place, "records.jsonl line 3");
        assert!(e.message.contains("unknown field `extra`"), "{e}");
    }

    #[test]
    fn a_record_of_another_version_is_refused() {
        let (mut b, _) = clean();
        b.record_lines[0] = b.record_lines[0].replacen("\"v\":1", "\"v\":2", 1);
        let e = err(&b, None);
        assert_eq!(e.place, "record 1 (records.jsonl line 1)");
        assert!(e.message.contains("version 2"), "{e}");
    }

    #[test]
    fn checkpoints_out_of_order_are_named() {
        let (mut b, _) = clean();
        b.checkpoints.swap(0, 1);
        let e = err(&b, None);
        assert_eq!(e.place, "checkpoint 2 (checkpoints.jsonl line 2, seq 10)");
        assert!(e.message.contains("out of order"), "{e}");
    }

    #[test]
    fn a_manifest_that_claims_other_records_is_named() {
        let (mut b, _) = clean();
        b.manifest.record_count = 25;
        let e = err(&b, None);
        assert_eq!(e.place, "manifest.json");
        assert_eq!(e.message, "record_count is 25, but records.jsonl has 20");
    }

    #[test]
    fn an_empty_bundle_is_refused() {
        let (mut b, _) = clean();
        b.record_lines.clear();
        assert_eq!(err(&b, None).place, "records.jsonl");
    }

    /// Writes a sample bundle for trying docs/audit-format.md's openssl recipe by hand:
    /// `HKMS_SAMPLE_BUNDLE=/tmp/sample cargo test -- --ignored write_a_sample_bundle`.
    #[test]
    #[ignore = "writes a sample bundle for the openssl recipe"]
    fn write_a_sample_bundle() {
        let dir = std::env::var("HKMS_SAMPLE_BUNDLE").unwrap_or("/tmp/hkms-sample-bundle".into());
        let (b, key) = clean();
        write_bundle(std::path::Path::new(&dir), &b).unwrap();
        println!("wrote {dir}, key fingerprint {}", key.fingerprint);
    }
    #[test]
    fn a_checkpoint_before_a_partial_export_is_noted_and_one_on_its_first_record_seals_it() {
        let (mut b, key) = clean();
        b.record_lines.drain(..10);
        b.manifest.first_seq = 11;
        b.manifest.record_count = 10;
        let report = verify_bundle(&b, Some(&key.sha256)).unwrap();
        assert_eq!(report.sealed_up_to, 20);
        assert!(
            report
                .notes
                .iter()
                .any(|n| n
                    .starts_with("checkpoint 1 seals record 10, before the bundle's first record")),
            "{report:?}"
        );
        // A bundle of only record 20, sealed by the checkpoint on it.
        let (mut b, key) = clean();
        b.record_lines.drain(..19);
        b.checkpoints.remove(0);
        b.manifest.first_seq = 20;
        b.manifest.record_count = 1;
        let report = verify_bundle(&b, Some(&key.sha256)).unwrap();
        assert_eq!((report.first_seq, report.sealed_up_to), (20, 20));
        assert!(
            !report
                .notes
                .iter()
                .any(|n| n.contains("before the bundle's first record")),
            "{report:?}"
        );
    }

    #[test]
    fn an_expected_sha256_must_be_hex_digits() {
        for bad in [
            "G".repeat(64),
            "GGGGGG".into(),
            format!("{}x", "A".repeat(63)),
        ] {
            let e = parse_expected_sha256(&bad).unwrap_err();
            assert_eq!(e.place, "the expected key");
            assert!(e.message.starts_with("not a SHA-256"), "{bad}: {e}");
        }
        assert_eq!(
            parse_expected_sha256(&"ab".repeat(32)).unwrap(),
            "AB".repeat(32)
        );
    }

    #[test]
    fn a_checkpoint_verifies_only_with_the_key_that_signed_it() {
        let (b, key) = clean();
        let cp = &b.checkpoints[1];
        assert!(checkpoint_verifies(cp, &key.pem));
        assert!(!checkpoint_verifies(cp, &TestKey::new().pem));
        assert!(!checkpoint_verifies(cp, "not a key"));
        let mut changed = cp.clone();
        changed.seq -= 1;
        assert!(!checkpoint_verifies(&changed, &key.pem));
    }
}
