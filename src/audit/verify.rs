//! The offline verifier: checks a bundle with nothing but its own files and, ideally, the
//! node's key fingerprint obtained independently (docs/audit-format.md, "Verification").
//!
//! It stops at the first broken place and names it exactly (record and line, or checkpoint,
//! line and seq), because an auditor's next step is to look at that place. The export
//! statement and the witnesses' cosignatures are checked last ([`witnessed`]).

mod witnessed;

use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};

use super::bundle::{
    BUNDLE_FORMAT, Bundle, CHECKPOINTS_FILE, MANIFEST_FILE, PUBLIC_KEY_FILE, RECORDS_FILE,
    public_key_point, spki_fingerprint, spki_sha256,
};
use super::record::{AuditRecord, Checkpoint, FORMAT_VERSION, GENESIS, line_hash};
pub use witnessed::{StatedHead, WitnessSummary};

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
    /// What the node stated about its head at export; `None` for a bundle without a statement.
    pub statement: Option<StatedHead>,
    /// Number of cosignatures in the bundle.
    pub cosignatures: usize,
    /// The witnesses that cosigned, by key; only pinned ones are trusted.
    pub witnesses: Vec<WitnessSummary>,
    /// Whether witness keys were pinned, so that the cosignatures were checked.
    pub witnesses_checked: bool,
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

/// Verifies `bundle` with no witness key pinned: key, record chain, checkpoints, seal of the
/// tail, manifest, and the export statement when there is one; the cosignatures are counted,
/// not checked. See [`verify_witnessed_bundle`].
pub fn verify_bundle(
    bundle: &Bundle,
    expect_sha256: Option<&str>,
) -> Result<VerifyReport, VerifyError> {
    verify_witnessed_bundle(bundle, expect_sha256, &[])
}

/// Verifies `bundle`: key, record chain, checkpoints, seal of the tail, manifest, export
/// statement, and the cosignatures of the witnesses whose key SHA-256s are `witness_keys`.
///
/// `expect_sha256` is the SHA-256 of the node's key (64 hex digits) as the auditor got it
/// independently (from the node's operators, a ceremony minute, ...); without it, a bundle
/// whose checkpoints were all re-signed with another key would also verify, and the report
/// says so. A 6-digit fingerprint is refused there: it names a key but cannot vouch for one.
///
/// `witness_keys` are the SHA-256s of witnesses' keys (64 hex digits each,
/// [`parse_witness_key_sha256`]), also got independently. The node's host can re-sign a
/// rewritten or cut log with the node's key, but cannot make a witness sign: with witness keys
/// pinned, a bundle without a statement, a pinned witness without a cosignature, or a
/// cosignature that disagrees with the records is broken.
pub fn verify_witnessed_bundle(
    bundle: &Bundle,
    expect_sha256: Option<&str>,
    witness_keys: &[String],
) -> Result<VerifyReport, VerifyError> {
    let pinned = witness_keys
        .iter()
        .map(|k| parse_witness_key_sha256(k))
        .collect::<Result<Vec<_>, _>>()?;
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

    // The node's statement of its head and the witnesses' cosignatures (doc steps 7 and 8).
    let log = witnessed::Verified {
        node: &manifest.node,
        key_der: &spki_der,
        key_sha256: &sha256,
        fingerprint: &fingerprint,
        first_seq,
        last_seq,
        hashes: &hashes,
    };
    let statement = witnessed::check_statement(
        bundle.statement.as_ref(),
        &log,
        !pinned.is_empty(),
        &mut notes,
    )?;
    let witnesses = witnessed::check_cosignatures(
        &bundle.cosignatures,
        &log,
        statement.as_ref(),
        &pinned,
        &mut notes,
    )?;

    Ok(VerifyReport {
        first_seq,
        last_seq,
        records: hashes.len(),
        checkpoints: bundle.checkpoints.len(),
        sealed_up_to,
        key_fingerprint: fingerprint,
        key_sha256: sha256,
        statement,
        cosignatures: bundle.cosignatures.len(),
        witnesses,
        witnesses_checked: !pinned.is_empty(),
        notes,
    })
}

/// A witness key's SHA-256 as the auditor typed it (`--witness-key-sha256`): exactly 64 hex
/// digits, either case, returned in upper case. Nothing shorter or longer, no separators: a
/// witness key is pinned whole or not at all.
pub fn parse_witness_key_sha256(given: &str) -> Result<String, VerifyError> {
    if given.len() == 64 && given.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(given.to_ascii_uppercase());
    }
    Err(VerifyError::new(
        "the witness key",
        format!(
            "\"{}\" is not the SHA-256 of a witness's key (64 hex digits, nothing else); ask \
             the witness's officers for it",
            crate::audit::record::cut(given, 80)
        ),
    ))
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
    use crate::audit::witness::{Cosignature, ExportStatement};

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

        /// The export statement of head `seq`/`head`, signed with this key.
        pub fn state(&self, seq: u64, head: &str) -> ExportStatement {
            let time = "2026-03-01T11:00:00.000Z".to_string();
            let msg = ExportStatement::message(NODE, seq, head, &time);
            let sig = self
                .pair
                .sign(&SystemRandom::new(), msg.as_bytes())
                .unwrap();
            ExportStatement {
                v: 1,
                node: NODE.into(),
                seq,
                head: head.to_string(),
                time,
                key_fingerprint: self.fingerprint.clone(),
                signature: hex::encode(sig.as_ref()),
            }
        }
    }

    /// A witness: its name and a fresh ring key, whose SHA-256 an auditor pins.
    pub struct TestWitness {
        pub name: String,
        pub pair: EcdsaKeyPair,
        /// The SPKI DER, hex, as cosignatures carry it.
        pub key_hex: String,
        /// SHA-256 of the SPKI DER, 64 uppercase hex digits.
        pub sha256: String,
    }

    impl TestWitness {
        pub fn new(name: &str) -> TestWitness {
            let key = TestKey::new();
            let (der, _) = public_key_point(&key.pem).unwrap();
            TestWitness {
                name: name.into(),
                key_hex: hex::encode(der),
                sha256: key.sha256,
                pair: key.pair,
            }
        }

        /// Its cosignature of `seq`/`head` of node `node`, whose key has `node_key_sha256`.
        pub fn cosign_as(
            &self,
            node: &str,
            node_key_sha256: &str,
            seq: u64,
            head: &str,
        ) -> Cosignature {
            let time = format!("2026-03-01T10:30:{:02}.000Z", seq % 60);
            let msg = Cosignature::message(node, seq, head, node_key_sha256, &self.name, &time);
            let sig = self
                .pair
                .sign(&SystemRandom::new(), msg.as_bytes())
                .unwrap();
            Cosignature {
                v: 1,
                node: node.into(),
                seq,
                head: head.into(),
                node_key_sha256: node_key_sha256.into(),
                witness: self.name.clone(),
                witness_key: self.key_hex.clone(),
                time,
                signature: hex::encode(sig.as_ref()),
            }
        }

        /// Its cosignature of record `seq` of `bundle` as the bundle has it, for the node
        /// whose key is `key`.
        pub fn cosign(&self, bundle: &Bundle, key: &TestKey, seq: u64) -> Cosignature {
            let head = line_hash(&bundle.record_lines[seq as usize - 1]);
            self.cosign_as(NODE, &key.sha256, seq, &head)
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

    /// The clean bundle and the key that signed it, with the node's statement of its head
    /// (record 20) and no cosignature.
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
            statement: Some(key.state(20, &line_hash(&record_lines[19]))),
            record_lines,
            checkpoints,
            public_key_pem: key.pem.clone(),
            cosignatures: Vec::new(),
        };
        (bundle, key)
    }

    /// [`clean`] with the cosignatures of `witness` of both checkpoints (10 and 20).
    pub fn witnessed(witness: &TestWitness) -> (Bundle, TestKey) {
        let (mut b, key) = clean();
        b.cosignatures = vec![witness.cosign(&b, &key, 10), witness.cosign(&b, &key, 20)];
        (b, key)
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
    use super::fixture::{TestKey, TestWitness, clean, lines, record, witnessed};
    use super::*;
    use crate::audit::bundle::{read_bundle, write_bundle};

    fn err(b: &Bundle, expect: Option<&str>) -> VerifyError {
        verify_bundle(b, expect).unwrap_err()
    }

    /// The verdict with `witnesses` pinned (and the node's key).
    fn with_witnesses(
        b: &Bundle,
        key: &TestKey,
        witnesses: &[&TestWitness],
    ) -> Result<VerifyReport, VerifyError> {
        let pins: Vec<String> = witnesses.iter().map(|w| w.sha256.clone()).collect();
        verify_witnessed_bundle(b, Some(&key.sha256), &pins)
    }

    /// What a host with the node's key does after changing records: chains every record from
    /// line `from` (0-based) on to the one before, re-signs every checkpoint on the new
    /// hashes and states the new head, so that steps 1 to 7 pass.
    fn rechain_and_resign(b: &mut Bundle, key: &TestKey, from: usize) {
        for i in from.max(1)..b.record_lines.len() {
            let mut r: AuditRecord = serde_json::from_str(&b.record_lines[i]).unwrap();
            r.prev = line_hash(&b.record_lines[i - 1]);
            b.record_lines[i] = r.to_line().unwrap();
        }
        let first = b.manifest.first_seq;
        let head = |b: &Bundle, seq: u64| line_hash(&b.record_lines[(seq - first) as usize]);
        b.checkpoints = b
            .checkpoints
            .iter()
            .map(|cp| key.sign(cp.seq, &head(b, cp.seq)))
            .collect();
        let last = b.manifest.last_seq;
        b.statement = Some(key.state(last, &head(b, last)));
    }

    #[test]
    fn a_witnessed_bundle_verifies_with_its_witness_pinned() {
        let w = TestWitness::new("guangdong");
        let (b, key) = witnessed(&w);
        let report = with_witnesses(&b, &key, &[&w]).unwrap();
        assert!(report.notes.is_empty(), "{:?}", report.notes);
        assert_eq!(report.statement.as_ref().map(|s| s.seq), Some(20));
        assert_eq!((report.cosignatures, report.witnesses_checked), (2, true));
        assert_eq!(
            report.witnesses,
            [WitnessSummary {
                witness: "guangdong".into(),
                key_sha256: w.sha256.clone(),
                pinned: true,
                cosignatures: 2,
                last_seq: 20,
            }]
        );
        // Pinned in lower case, it is the same key.
        verify_witnessed_bundle(&b, Some(&key.sha256), &[w.sha256.to_lowercase()]).unwrap();
        // Through its directory too.
        let tmp = tempfile::tempdir().unwrap();
        write_bundle(&tmp.path().join("b"), &b).unwrap();
        let back = read_bundle(&tmp.path().join("b")).unwrap();
        with_witnesses(&back, &key, &[&w]).unwrap();
    }

    #[test]
    fn a_witness_key_is_64_hex_digits_and_nothing_else() {
        let w = TestWitness::new("guangdong");
        assert_eq!(
            parse_witness_key_sha256(&w.sha256.to_lowercase()).unwrap(),
            w.sha256
        );
        let spaced: String = w.sha256.chars().flat_map(|c| [c, ' ']).collect();
        for bad in [
            &w.sha256[..6],
            &w.sha256[..63],
            &format!("{}0", w.sha256),
            &format!("{}G", &w.sha256[..63]),
            &format!("{}:{}", &w.sha256[..32], &w.sha256[32..]),
            spaced.trim(),
            "",
        ] {
            let e = parse_witness_key_sha256(bad).unwrap_err();
            assert_eq!(e.place, "the witness key", "{bad}");
            assert!(e.message.contains("64 hex digits"), "{bad}: {e}");
        }
        let (b, key) = witnessed(&w);
        let e = verify_witnessed_bundle(&b, Some(&key.sha256), &["ABC".into()]).unwrap_err();
        assert_eq!(e.place, "the witness key");
    }

    #[test]
    fn a_cosignature_whose_signature_does_not_verify_is_broken() {
        let w = TestWitness::new("guangdong");
        let (mut b, key) = witnessed(&w);
        // A cosignature changed after the witness signed it: another time.
        b.cosignatures[1].time = "2026-03-01T10:31:00.000Z".into();
        let e = with_witnesses(&b, &key, &[&w]).unwrap_err();
        assert_eq!(
            e.place,
            "cosignature 2 (cosignatures.jsonl line 2, seq 20, witness guangdong)"
        );
        assert!(
            e.message.starts_with(
                "the signature does not verify with the witness key the cosignature carries"
            ),
            "{e}"
        );
        // One made by another key that carries the pinned witness's key.
        let (mut b, key) = witnessed(&w);
        let mallory = TestWitness::new("guangdong");
        let mut forged = mallory.cosign(&b, &key, 20);
        forged.witness_key = w.key_hex.clone();
        b.cosignatures[1] = forged;
        let e = with_witnesses(&b, &key, &[&w]).unwrap_err();
        assert!(e.message.contains("forged"), "{e}");
    }

    #[test]
    fn a_cosignature_of_another_node_or_another_node_key_is_broken() {
        let w = TestWitness::new("guangdong");
        let (mut b, key) = witnessed(&w);
        let head = b.cosignatures[0].head.clone();
        b.cosignatures[0] = w.cosign_as("shenzhen", &key.sha256, 10, &head);
        let e = with_witnesses(&b, &key, &[&w]).unwrap_err();
        assert_eq!(
            e.place,
            "cosignature 1 (cosignatures.jsonl line 1, seq 10, witness guangdong)"
        );
        assert!(
            e.message
                .starts_with("the witness cosigned the log of node \"shenzhen\""),
            "{e}"
        );

        let (mut b, key) = witnessed(&w);
        let other = TestKey::new();
        b.cosignatures[0] = w.cosign_as(fixture::NODE, &other.sha256, 10, &head);
        let e = with_witnesses(&b, &key, &[&w]).unwrap_err();
        assert!(
            e.message.contains(&format!(
                "signed by the node key with SHA-256 {}, but the bundle's key is {}",
                other.sha256, key.sha256
            )),
            "{e}"
        );
    }

    #[test]
    fn a_node_key_replaced_everywhere_is_caught_by_a_pinned_witness_without_the_node_pin() {
        let w = TestWitness::new("guangdong");
        let (mut b, _) = witnessed(&w);
        // The forger's own key for every checkpoint and the statement, and a fixed manifest:
        // the bundle agrees with itself, but the witness vouched for the node's real key.
        let other = TestKey::new();
        b.public_key_pem = other.pem.clone();
        b.manifest.key_fingerprint = other.fingerprint.clone();
        rechain_and_resign(&mut b, &other, 1);
        verify_bundle(&b, None).unwrap();
        let e = verify_witnessed_bundle(&b, None, std::slice::from_ref(&w.sha256)).unwrap_err();
        assert!(
            e.message
                .contains("the bundle's log was re-signed with another key"),
            "{e}"
        );
    }

    #[test]
    fn a_log_rewritten_after_the_witness_saw_it_is_broken() {
        let w = TestWitness::new("guangdong");
        let (mut b, key) = witnessed(&w);
        // Record 15 says another officer acted; every later record is re-chained and every
        // checkpoint re-signed with the node's own key, as a host with its PIN can.
        let mut r = record(&b, 15);
        r.actor = "hkms://officer/national/000000/mallory".into();
        b.record_lines[14] = r.to_line().unwrap();
        rechain_and_resign(&mut b, &key, 15);
        // Steps 1 to 7 pass: the node's key vouches for the rewritten log.
        verify_bundle(&b, Some(&key.sha256)).unwrap();
        let e = with_witnesses(&b, &key, &[&w]).unwrap_err();
        assert_eq!(
            e.place,
            "cosignature 2 (cosignatures.jsonl line 2, seq 20, witness guangdong)"
        );
        assert!(
            e.message
                .starts_with("record 20 is not the one the witness cosigned"),
            "{e}"
        );
        assert!(
            e.message
                .ends_with("The log was rewritten after the witness saw it"),
            "{e}"
        );
    }

    #[test]
    fn a_log_cut_back_behind_a_cosigned_checkpoint_is_broken() {
        let w = TestWitness::new("guangdong");
        let (mut b, key) = witnessed(&w);
        // Records 16..20 and the checkpoint on 20 deleted; the node seals and states 15.
        b.record_lines.truncate(15);
        b.manifest.last_seq = 15;
        b.manifest.record_count = 15;
        b.checkpoints[1] = key.sign(15, &line_hash(&b.record_lines[14]));
        b.statement = Some(key.state(15, &line_hash(&b.record_lines[14])));
        verify_bundle(&b, Some(&key.sha256)).unwrap();
        let e = with_witnesses(&b, &key, &[&w]).unwrap_err();
        assert_eq!(
            e.place,
            "cosignature 2 (cosignatures.jsonl line 2, seq 20, witness guangdong)"
        );
        assert!(
            e.message.starts_with(
                "the head is behind a checkpoint the witness cosigned: it saw the log reach \
                 record 20"
            ),
            "{e}"
        );
        assert!(
            e.message.contains(
                "the bundle ends at record 15, and the node stated its head was record 15 at \
                 export. Records 16..20 are missing: the log was cut back"
            ),
            "{e}"
        );
    }

    #[test]
    fn a_missing_statement_is_broken_with_witnesses_pinned_and_noted_without() {
        let w = TestWitness::new("guangdong");
        let (mut b, key) = witnessed(&w);
        b.statement = None;
        let e = with_witnesses(&b, &key, &[&w]).unwrap_err();
        assert_eq!(e.place, "statement.json");
        assert!(
            e.message.starts_with("the bundle has no export statement"),
            "{e}"
        );
        let report = verify_bundle(&b, Some(&key.sha256)).unwrap();
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.starts_with("the bundle has no export statement")),
            "{report:?}"
        );
    }

    #[test]
    fn a_statement_whose_signature_does_not_verify_is_broken_pinned_or_not() {
        let w = TestWitness::new("guangdong");
        let (mut b, key) = witnessed(&w);
        let s = b.statement.as_mut().unwrap();
        s.time = "2026-03-01T11:00:01.000Z".into();
        for result in [verify_bundle(&b, None), with_witnesses(&b, &key, &[&w])] {
            let e = result.unwrap_err();
            assert_eq!(e.place, "statement.json");
            assert!(
                e.message.starts_with(
                    "the signature does not verify with the bundle's public key: the \
                     statement is forged"
                ),
                "{e}"
            );
        }
        // Signed by another key, under the bundle key's fingerprint.
        let other = TestKey::new();
        let mut forged = other.state(20, &b.checkpoints[1].head);
        forged.key_fingerprint = key.fingerprint.clone();
        b.statement = Some(forged);
        assert!(err(&b, None).message.contains("forged"));
    }

    #[test]
    fn a_statement_that_does_not_cover_the_bundle_is_broken() {
        let (mut b, key) = clean();
        let head_10 = b.checkpoints[0].head.clone();
        // A statement of an earlier head: the bundle goes on past it.
        b.statement = Some(key.state(10, &head_10));
        let e = err(&b, None);
        assert_eq!(e.place, "statement.json");
        assert!(
            e.message.starts_with(
                "the node stated that its head was record 10 at export, but the bundle goes on \
                 to record 20"
            ),
            "{e}"
        );
        // A head past the bundle's end: the bundle was cut.
        b.statement = Some(key.state(25, &"ab".repeat(32)));
        let e = err(&b, None);
        assert!(e.message.contains("records 21..25 are missing"), "{e}");
        // The right seq with another hash.
        b.statement = Some(key.state(20, &head_10));
        let e = err(&b, None);
        assert!(
            e.message
                .ends_with("the statement does not cover this bundle"),
            "{e}"
        );
        // Another node's statement.
        let mut s = key.state(20, &b.checkpoints[1].head);
        s.node = "guangzhou".into();
        b.statement = Some(s);
        assert!(err(&b, None).message.contains("the statement is of node"));
    }

    #[test]
    fn a_pinned_witness_without_a_cosignature_is_broken() {
        let w = TestWitness::new("guangdong");
        let absent = TestWitness::new("guangxi");
        let (b, key) = witnessed(&w);
        let e = with_witnesses(&b, &key, &[&w, &absent]).unwrap_err();
        assert_eq!(e.place, "cosignatures.jsonl");
        assert_eq!(
            e.message,
            format!(
                "no cosignature by the witness whose key SHA-256 is {}: the log in this bundle \
                 was not witnessed by it (or its cosignatures were removed)",
                absent.sha256
            )
        );
        // A witness that signs under the pinned witness's name is not that witness.
        let (mut b, key) = witnessed(&w);
        b.cosignatures = vec![TestWitness::new("guangdong").cosign(&b, &key, 20)];
        let e = with_witnesses(&b, &key, &[&w]).unwrap_err();
        assert!(
            e.message.starts_with("no cosignature by the witness"),
            "{e}"
        );
    }

    #[test]
    fn cosignatures_of_witnesses_not_pinned_are_listed_but_not_trusted() {
        let w = TestWitness::new("guangdong");
        let stranger = TestWitness::new("somewhere");
        let (mut b, key) = witnessed(&w);
        // The stranger claims the log went on to record 30: not trusted, so no verdict on it.
        b.cosignatures
            .push(stranger.cosign_as(fixture::NODE, &key.sha256, 30, &"ab".repeat(32)));
        let report = with_witnesses(&b, &key, &[&w]).unwrap();
        assert_eq!(report.cosignatures, 3);
        let listed: Vec<(&str, bool)> = report
            .witnesses
            .iter()
            .map(|x| (x.witness.as_str(), x.pinned))
            .collect();
        assert_eq!(listed, [("guangdong", true), ("somewhere", false)]);
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.contains("\"somewhere\"") && n.contains("not trusted")),
            "{report:?}"
        );
        // Pinned, the same cosignature says the log was cut back.
        let e = with_witnesses(&b, &key, &[&w, &stranger]).unwrap_err();
        assert!(e.message.starts_with("the head is behind"), "{e}");
    }

    #[test]
    fn without_witness_keys_the_cosignatures_are_counted_not_checked() {
        let w = TestWitness::new("guangdong");
        let (mut b, key) = witnessed(&w);
        b.cosignatures[0].signature = "3000".into();
        let report = verify_bundle(&b, Some(&key.sha256)).unwrap();
        assert_eq!((report.cosignatures, report.witnesses_checked), (2, false));
        assert!(
            report.notes.iter().any(|n| n
                == "2 cosignatures by 1 witness were not checked: no witness key was pinned \
                    (`hkms audit verify --witness-key-sha256`)"),
            "{report:?}"
        );
        assert!(with_witnesses(&b, &key, &[&w]).is_err());
    }

    #[test]
    fn a_bundle_made_before_witnesses_verifies_and_says_it_has_no_statement() {
        let w = TestWitness::new("guangdong");
        let (mut b, key) = clean();
        b.statement = None;
        let report = verify_bundle(&b, Some(&key.sha256)).unwrap();
        assert_eq!((report.statement.as_ref(), report.cosignatures), (None, 0));
        assert_eq!(report.notes.len(), 1, "{report:?}");
        assert!(report.notes[0].starts_with("the bundle has no export statement"));
        let e = with_witnesses(&b, &key, &[&w]).unwrap_err();
        assert_eq!(e.place, "statement.json");
    }

    #[test]
    fn a_cosignature_before_a_partial_exports_first_record_is_noted() {
        let w = TestWitness::new("guangdong");
        let (mut b, key) = witnessed(&w);
        b.record_lines.drain(..12);
        b.manifest.first_seq = 13;
        b.manifest.record_count = 8;
        let report = with_witnesses(&b, &key, &[&w]).unwrap();
        assert!(
            report.notes.iter().any(|n| n
                .starts_with("cosignature 1 covers record 10, before the bundle's first record")),
            "{report:?}"
        );
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
        b.statement = Some(other.state(20, &b.checkpoints[1].head));
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

    /// Writes a sample bundle, cosigned by witness `guangdong`, for trying docs/audit-format.md's
    /// openssl recipes by hand (its worked examples come from one):
    /// `HKMS_SAMPLE_BUNDLE=/tmp/sample cargo test -- --ignored write_a_sample_bundle`.
    #[test]
    #[ignore = "writes a sample bundle for the openssl recipe"]
    fn write_a_sample_bundle() {
        let dir = std::env::var("HKMS_SAMPLE_BUNDLE").unwrap_or("/tmp/hkms-sample-bundle".into());
        let w = TestWitness::new("guangdong");
        let (b, key) = witnessed(&w);
        write_bundle(std::path::Path::new(&dir), &b).unwrap();
        println!(
            "wrote {dir}, key fingerprint {}, SHA-256 {}; witness key SHA-256 {}",
            key.fingerprint, key.sha256, w.sha256
        );
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
