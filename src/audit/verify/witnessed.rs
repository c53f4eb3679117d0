//! Steps 7 and 8 of the verification (docs/audit-format.md §6): the node's export statement
//! and its witnesses' cosignatures.
//!
//! A host that holds the node's audit key can rewrite or cut the log and re-sign every
//! checkpoint, and steps 1 to 6 pass. It holds no witness's key: a cosignature by a pinned
//! witness of a head the bundle does not have, or of a record past the bundle's end, shows the
//! rewrite or the cut. The statement ties the bundle's end to the node's head at export, so a
//! bundle cannot quietly stop short of what the node had.

use crate::audit::bundle::{COSIGNATURES_FILE, STATEMENT_FILE};
use crate::audit::record::cut;
use crate::audit::witness::{Cosignature, ExportStatement};

use super::VerifyError;

/// What the node stated about its log's head when the bundle was exported (checked: it is the
/// bundle's last record).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatedHead {
    /// The last record at export.
    pub seq: u64,
    /// Its hash.
    pub head: String,
    /// When the node signed the statement.
    pub time: String,
}

/// One witness's cosignatures in a bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessSummary {
    /// The witness's name, as its cosignatures give it (anyone could write it: the key is
    /// what identifies a witness).
    pub witness: String,
    /// SHA-256 of the witness's key (SPKI DER), 64 uppercase hex digits; a description instead
    /// when the key in the bundle is not hex.
    pub key_sha256: String,
    /// Whether the auditor pinned this key: only then are its cosignatures trusted.
    pub pinned: bool,
    /// How many cosignatures it gave.
    pub cosignatures: usize,
    /// The highest record it cosigned.
    pub last_seq: u64,
}

/// The verified log the witness checks run against (steps 1 to 6 passed).
pub(super) struct Verified<'a> {
    /// The node the manifest names.
    pub node: &'a str,
    /// The bundle's key: SPKI DER, SHA-256 and fingerprint.
    pub key_der: &'a [u8],
    pub key_sha256: &'a str,
    pub fingerprint: &'a str,
    /// Seq of the first and last record.
    pub first_seq: u64,
    pub last_seq: u64,
    /// The hash of each record, in order.
    pub hashes: &'a [String],
}

impl Verified<'_> {
    /// The hash of record `seq`, when the bundle holds it.
    fn hash_of(&self, seq: u64) -> Option<&str> {
        let index = usize::try_from(seq.checked_sub(self.first_seq)?).ok()?;
        self.hashes.get(index).map(String::as_str)
    }

    fn last_hash(&self) -> &str {
        self.hashes.last().map_or("", String::as_str)
    }
}

/// Step 7: the statement is the node's, signed with the bundle's key, and states exactly the
/// bundle's last record. A missing statement is an error when witnesses are pinned (the
/// auditor relies on the bundle covering the head) and a note otherwise.
pub(super) fn check_statement(
    statement: Option<&ExportStatement>,
    log: &Verified<'_>,
    witnesses_pinned: bool,
    notes: &mut Vec<String>,
) -> Result<Option<StatedHead>, VerifyError> {
    let Some(s) = statement else {
        if witnesses_pinned {
            return Err(VerifyError::new(
                STATEMENT_FILE,
                "the bundle has no export statement: nothing signed says that its last record \
                 was the node's head at export, so a log cut back could not be told from a \
                 whole one. The bundle was made by an hkms before export statements, or the \
                 file was removed; export it again",
            ));
        }
        notes.push(format!(
            "the bundle has no export statement ({STATEMENT_FILE}): nothing signed says that \
             its last record was the node's head at export (a bundle made by an hkms before \
             export statements)"
        ));
        return Ok(None);
    };
    let wrong = |message: String| Err(VerifyError::new(STATEMENT_FILE, message));
    if s.node != log.node {
        return wrong(format!(
            "the statement is of node \"{}\", the bundle of node \"{}\"",
            cut(&s.node, 64),
            cut(log.node, 64)
        ));
    }
    if s.key_fingerprint != log.fingerprint {
        return wrong(format!(
            "the statement names signing key {}, but the bundle's key is {}",
            cut(&s.key_fingerprint, 64),
            log.fingerprint
        ));
    }
    if let Err(e) = s.verify(log.key_der) {
        return wrong(format!(
            "{e} with the bundle's public key: the statement is forged, or signed by another \
             key"
        ));
    }
    if s.seq > log.last_seq {
        return wrong(format!(
            "the node stated that its head was record {} at export, but the bundle ends at \
             record {}: records {}..{} are missing (the bundle was cut)",
            s.seq,
            log.last_seq,
            log.last_seq + 1,
            s.seq
        ));
    }
    if s.seq < log.last_seq {
        return wrong(format!(
            "the node stated that its head was record {} at export, but the bundle goes on to \
             record {}: the statement does not cover the bundle (records were added after it, \
             or it belongs to another export)",
            s.seq, log.last_seq
        ));
    }
    if s.head != log.last_hash() {
        return wrong(format!(
            "the node stated that record {} had hash {} at export, but the bundle's record {} \
             has hash {}: the statement does not cover this bundle",
            s.seq,
            cut(&s.head, 64),
            log.last_seq,
            log.last_hash()
        ));
    }
    Ok(Some(StatedHead {
        seq: s.seq,
        head: s.head.clone(),
        time: s.time.clone(),
    }))
}

/// Step 8: with witness keys pinned (`pinned`, canonical SHA-256s), every cosignature is of
/// this node and its key and its signature verifies; a pinned witness's cosignatures agree
/// with the records, none is past the bundle's end, and every pinned witness has one. Without
/// pins the cosignatures are counted and listed, not checked.
pub(super) fn check_cosignatures(
    cosignatures: &[Cosignature],
    log: &Verified<'_>,
    stated: Option<&StatedHead>,
    pinned: &[String],
    notes: &mut Vec<String>,
) -> Result<Vec<WitnessSummary>, VerifyError> {
    let mut witnesses: Vec<WitnessSummary> = Vec::new();
    for (i, c) in cosignatures.iter().enumerate() {
        let k = i + 1;
        let here = format!(
            "cosignature {k} ({COSIGNATURES_FILE} line {k}, seq {}, witness {})",
            c.seq,
            cut(&c.witness, 64)
        );
        let key_sha256 = c.witness_key_sha256();
        let is_pinned = key_sha256.as_ref().is_ok_and(|sha| pinned.contains(sha));
        if !pinned.is_empty() {
            check_one(c, k, &here, log, stated, is_pinned, notes)?;
        }
        let key_sha256 = key_sha256.unwrap_or_else(|e| format!("(no key: {e})"));
        match witnesses.iter_mut().find(|w| w.key_sha256 == key_sha256) {
            Some(w) => {
                w.cosignatures += 1;
                w.last_seq = w.last_seq.max(c.seq);
            }
            None => witnesses.push(WitnessSummary {
                witness: cut(&c.witness, 64),
                key_sha256,
                pinned: is_pinned,
                cosignatures: 1,
                last_seq: c.seq,
            }),
        }
    }
    for key in pinned {
        if !witnesses.iter().any(|w| &w.key_sha256 == key) {
            return Err(VerifyError::new(
                COSIGNATURES_FILE,
                format!(
                    "no cosignature by the witness whose key SHA-256 is {key}: the log in this \
                     bundle was not witnessed by it (or its cosignatures were removed)"
                ),
            ));
        }
    }
    if pinned.is_empty() && !cosignatures.is_empty() {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        notes.push(format!(
            "{} by {} {} not checked: no witness key was pinned (`hkms audit verify \
             --witness-key-sha256`)",
            plural(cosignatures.len(), "cosignature", "cosignatures"),
            plural(witnesses.len(), "witness", "witnesses"),
            if cosignatures.len() == 1 {
                "was"
            } else {
                "were"
            }
        ));
    }
    for w in witnesses.iter().filter(|w| !w.pinned && !pinned.is_empty()) {
        notes.push(format!(
            "the cosignatures of witness \"{}\" (key SHA-256 {}) are valid but not trusted: \
             its key was not pinned",
            w.witness, w.key_sha256
        ));
    }
    Ok(witnesses)
}

/// One cosignature: its node, node key and signature; and for a pinned witness, its head.
fn check_one(
    c: &Cosignature,
    k: usize,
    here: &str,
    log: &Verified<'_>,
    stated: Option<&StatedHead>,
    is_pinned: bool,
    notes: &mut Vec<String>,
) -> Result<(), VerifyError> {
    let wrong = |message: String| Err(VerifyError::new(here, message));
    if let Err(e) = c.witness_key_sha256() {
        return wrong(e);
    }
    if c.node != log.node {
        return wrong(format!(
            "the witness cosigned the log of node \"{}\", the bundle is of node \"{}\"",
            cut(&c.node, 64),
            cut(log.node, 64)
        ));
    }
    if !c.node_key_sha256.eq_ignore_ascii_case(log.key_sha256) {
        return wrong(format!(
            "the witness cosigned a log signed by the node key with SHA-256 {}, but the \
             bundle's key is {}: the bundle's log was re-signed with another key",
            cut(&c.node_key_sha256, 64),
            log.key_sha256
        ));
    }
    if let Err(e) = c.verify() {
        return wrong(format!(
            "{e} with the witness key the cosignature carries: forged, or changed after the \
             witness signed it"
        ));
    }
    if !is_pinned {
        return Ok(());
    }
    if c.seq > log.last_seq {
        let stated = stated.map_or(String::new(), |s| {
            format!(
                ", and the node stated its head was record {} at export",
                s.seq
            )
        });
        return wrong(format!(
            "the head is behind a checkpoint the witness cosigned: it saw the log reach record \
             {} (head {}), but the bundle ends at record {}{stated}. Records {}..{} are \
             missing: the log was cut back after the witness saw it",
            c.seq,
            cut(&c.head, 64),
            log.last_seq,
            log.last_seq + 1,
            c.seq
        ));
    }
    match log.hash_of(c.seq) {
        Some(hash) if hash != c.head => wrong(format!(
            "record {} is not the one the witness cosigned: its hash is {hash}, the witness saw \
             {}. The log was rewritten after the witness saw it",
            c.seq,
            cut(&c.head, 64)
        )),
        Some(_) => Ok(()),
        None => {
            notes.push(format!(
                "cosignature {k} covers record {}, before the bundle's first record: its head \
                 cannot be checked",
                c.seq
            ));
            Ok(())
        }
    }
}
