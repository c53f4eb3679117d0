//! The ceremony log in the database: records appended inside the same transaction as the
//! change they describe, and the signed checkpoints.

use rusqlite::{Connection, OptionalExtension, params};

use super::CachedSql;
use super::{AuditLog, CosignatureMark, CosignaturesAfter, SqliteStore, StoreError};
use crate::audit::record::{AuditDraft, AuditRecord, Checkpoint, GENESIS, line_hash, now_millis};
use crate::audit::witness::Cosignature;

/// The longest record line the log takes, in bytes.
pub const MAX_LINE: usize = 64 * 1024;

/// Appends the record of `draft` inside `tx`, chained to the last one, with the client
/// request id the draft claims, if any (`retry::claim_in`): every write of a record, alone or
/// with its change, passes here.
pub(super) fn append_in(tx: &Connection, draft: &AuditDraft) -> Result<AuditRecord, StoreError> {
    if let Some(claim) = &draft.retry {
        super::retry::claim_in(tx, &draft.actor, &draft.request_id, claim)?;
    }
    let last: Option<(i64, String)> = tx
        .query_row_cached(
            "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(StoreError::sqlite("reading the head of the ceremony log"))?;
    let chained = next_record(draft, last)?;
    tx.execute_cached(
        "INSERT INTO audit_log (seq, line, hash) VALUES (?1, ?2, ?3)",
        params![chained.record.seq as i64, chained.line, chained.hash],
    )
    .map_err(StoreError::sqlite("appending to the ceremony log"))?;
    Ok(chained.record)
}

/// A record ready to be stored: the record, its line and the line's hash.
pub(super) struct Chained {
    pub(super) record: AuditRecord,
    pub(super) line: String,
    pub(super) hash: String,
}

/// The record of `draft` chained after `last` (the head's sequence number and hash as stored,
/// `None` for an empty log), with the line to store: the part of an append that does not
/// depend on the database. A backend calls it inside its append transaction, after taking the
/// lock that serialises appends and reading the head.
pub(super) fn next_record(
    draft: &AuditDraft,
    last: Option<(i64, String)>,
) -> Result<Chained, StoreError> {
    let (seq, prev) = match last {
        Some((seq, hash)) => (seq.saturating_add(1), hash),
        None => (1, GENESIS.to_string()),
    };
    let seq = u64::try_from(seq).map_err(|_| StoreError::Corrupt {
        id: "audit_log".into(),
        what: format!("sequence number {seq} is negative"),
    })?;
    let record = AuditRecord::from_draft(draft, seq, now_millis(), prev);
    let line = record.to_line().map_err(|e| StoreError::Corrupt {
        id: format!("audit record {seq}"),
        what: format!("cannot be serialised: {e}"),
    })?;
    // What a caller sends is cut before it reaches a record; this is the last bound, so that
    // no record can make the log unreadable to an export or a verifier.
    if line.len() > MAX_LINE {
        return Err(StoreError::RecordTooLong {
            rpc: crate::audit::record::cut(&draft.rpc, 40),
            len: line.len(),
        });
    }
    let hash = line_hash(&line);
    Ok(Chained { record, line, hash })
}

impl AuditLog for SqliteStore {
    fn append_audit(&self, draft: &AuditDraft) -> Result<AuditRecord, StoreError> {
        self.write("appending to the ceremony log", |tx| append_in(tx, draft))
    }

    fn append_audits(&self, drafts: &[AuditDraft]) -> Result<Vec<AuditRecord>, StoreError> {
        self.write("appending to the ceremony log", |tx| {
            drafts.iter().map(|d| append_in(tx, d)).collect()
        })
    }

    fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError> {
        let conn = self.lock()?;
        let head: Option<(i64, String)> = conn
            .query_row_cached(
                "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(StoreError::sqlite("reading the head of the ceremony log"))?;
        Ok(head.map(|(s, h)| (s.max(0) as u64, h)))
    }

    fn audit_lines(
        &self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached("SELECT seq, line FROM audit_log WHERE seq >= ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3")
            .map_err(StoreError::sqlite("reading the ceremony log"))?;
        let rows = stmt
            .query_map(
                params![
                    i64::try_from(from).unwrap_or(i64::MAX),
                    i64::try_from(to).unwrap_or(i64::MAX),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)),
            )
            .map_err(StoreError::sqlite("reading the ceremony log"))?;
        rows.map(|r| {
            r.map(|(s, l)| (s.max(0) as u64, l))
                .map_err(StoreError::sqlite("reading the ceremony log"))
        })
        .collect()
    }

    fn audit_lines_containing(
        &self,
        from: u64,
        to: u64,
        needles: &[&str],
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let needles: Vec<&str> = needles.iter().copied().filter(|n| !n.is_empty()).collect();
        if needles.is_empty() {
            return Ok(Vec::new());
        }
        let needles = serde_json::to_string(&needles).map_err(|e| StoreError::Corrupt {
            id: "search".into(),
            what: format!("cannot encode the search: {e}"),
        })?;
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, line FROM audit_log WHERE seq >= ?1 AND seq <= ?2 \
                 AND EXISTS (SELECT 1 FROM json_each(?3) WHERE instr(line, value) > 0) \
                 ORDER BY seq",
            )
            .map_err(StoreError::sqlite("searching the ceremony log"))?;
        let rows = stmt
            .query_map(
                params![
                    i64::try_from(from).unwrap_or(i64::MAX),
                    i64::try_from(to).unwrap_or(i64::MAX),
                    needles
                ],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)),
            )
            .map_err(StoreError::sqlite("searching the ceremony log"))?;
        rows.map(|r| {
            r.map(|(s, l)| (s.max(0) as u64, l))
                .map_err(StoreError::sqlite("searching the ceremony log"))
        })
        .collect()
    }

    fn insert_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError> {
        let line = serde_json::to_string(checkpoint).map_err(|e| StoreError::Corrupt {
            id: format!("checkpoint {}", checkpoint.seq),
            what: format!("cannot be serialised: {e}"),
        })?;
        self.write("storing a checkpoint", |tx| {
            tx.execute_cached(
                // Never over an earlier checkpoint: a seal once given stands.
                "INSERT INTO audit_checkpoints (seq, line) VALUES (?1, ?2)",
                params![checkpoint.seq as i64, line],
            )
            .map_err(StoreError::sqlite("storing a checkpoint"))?;
            Ok(())
        })
    }

    fn last_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError> {
        let conn = self.lock()?;
        let row: Option<(i64, String)> = conn
            .query_row_cached(
                "SELECT seq, line FROM audit_checkpoints ORDER BY seq DESC LIMIT 1",
                [],
                |row| Ok((row.get(0)?, row.get(1)?)),
            )
            .optional()
            .map_err(StoreError::sqlite("reading the last checkpoint"))?;
        row.map(|(seq, line)| parse_checkpoint(seq, &line))
            .transpose()
    }

    fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached("SELECT seq, line FROM audit_checkpoints ORDER BY seq")
            .map_err(StoreError::sqlite("reading checkpoints"))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(StoreError::sqlite("reading checkpoints"))?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, line) = row.map_err(StoreError::sqlite("reading checkpoints"))?;
            out.push(parse_checkpoint(seq, &line)?);
        }
        Ok(out)
    }

    fn checkpoints_page(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Checkpoint>, StoreError> {
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, line FROM audit_checkpoints WHERE seq > ?1 AND seq <= ?2 \
                 ORDER BY seq LIMIT ?3",
            )
            .map_err(StoreError::sqlite("reading checkpoints"))?;
        let rows = stmt
            .query_map(
                params![
                    as_i64(after),
                    as_i64(upto),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?)),
            )
            .map_err(StoreError::sqlite("reading checkpoints"))?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, line) = row.map_err(StoreError::sqlite("reading checkpoints"))?;
            out.push(parse_checkpoint(seq, &line)?);
        }
        Ok(out)
    }

    fn insert_cosignature(&self, cosignature: &Cosignature) -> Result<bool, StoreError> {
        self.store_cosignature(cosignature)
    }

    fn cosignatures(&self) -> Result<Vec<Cosignature>, StoreError> {
        self.read_cosignatures()
    }

    fn cosignature_mark(&self) -> Result<CosignatureMark, StoreError> {
        self.read_cosignature_mark()
    }

    fn cosignatures_page(
        &self,
        after: Option<&CosignaturesAfter>,
        upto: CosignatureMark,
        limit: usize,
    ) -> Result<Vec<(CosignaturesAfter, Cosignature)>, StoreError> {
        self.read_cosignatures_page(after, upto, limit)
    }

    fn last_cosigned_seq(&self, witness_key_sha256: &str) -> Result<Option<u64>, StoreError> {
        self.read_last_cosigned_seq(witness_key_sha256)
    }
}

/// A stored checkpoint line, or the row named as corrupt.
fn parse_checkpoint(seq: i64, line: &str) -> Result<Checkpoint, StoreError> {
    serde_json::from_str(line).map_err(|e| StoreError::Corrupt {
        id: format!("checkpoint {seq}"),
        what: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hierarchy::KeyState;
    use crate::store::test_support::root_record;
    use crate::store::{KeyRegistry, StoreHealth};

    fn draft(rpc: &str) -> AuditDraft {
        AuditDraft {
            rpc: rpc.into(),
            ..AuditDraft::default()
        }
    }

    #[test]
    fn pages_of_checkpoints_go_by_seq_up_to_a_bound() {
        let store = SqliteStore::open_in_memory().unwrap();
        for _ in 0..6 {
            store.append_audit(&draft("A")).unwrap();
        }
        for seq in [2, 4, 6] {
            store
                .insert_checkpoint(&Checkpoint {
                    v: 1,
                    seq,
                    head: "00".repeat(32),
                    time: "2026-03-01T09:00:00.000Z".into(),
                    node: "n".into(),
                    key_fingerprint: "ABCDEF".into(),
                    signature: "30".into(),
                })
                .unwrap();
        }
        let seqs = |after, upto, limit| -> Vec<u64> {
            store
                .checkpoints_page(after, upto, limit)
                .unwrap()
                .iter()
                .map(|c| c.seq)
                .collect()
        };
        assert_eq!(seqs(0, u64::MAX, 2), [2, 4]);
        assert_eq!(seqs(4, u64::MAX, 2), [6]);
        assert_eq!(seqs(0, 4, 10), [2, 4]);
        assert!(seqs(6, u64::MAX, 10).is_empty());
    }

    #[test]
    fn records_chain_from_genesis() {
        let store = SqliteStore::open_in_memory().unwrap();
        let a = store.append_audit(&draft("A")).unwrap();
        let b = store.append_audit(&draft("B")).unwrap();
        assert_eq!((a.seq, a.prev.as_str()), (1, GENESIS));
        let lines = store.audit_lines(1, u64::MAX, 10).unwrap();
        assert_eq!(lines.len(), 2);
        assert_eq!(b.prev, line_hash(&lines[0].1));
        assert_eq!(
            store.audit_head().unwrap().unwrap(),
            (2, line_hash(&lines[1].1))
        );
    }

    #[test]
    fn a_search_returns_the_lines_in_range_that_contain_a_needle() {
        let store = SqliteStore::open_in_memory().unwrap();
        for (rpc, value) in [("A", "aaaa"), ("B", "bbbb"), ("C", "aaaa"), ("D", "cccc")] {
            let mut d = draft(rpc);
            d.params.insert("p".into(), value.into());
            store.append_audit(&d).unwrap();
        }
        let seqs = |from, to, needles: &[&str]| -> Vec<u64> {
            store
                .audit_lines_containing(from, to, needles)
                .unwrap()
                .into_iter()
                .map(|(s, _)| s)
                .collect()
        };
        assert_eq!(seqs(1, u64::MAX, &["aaaa"]), [1, 3]);
        assert_eq!(seqs(1, u64::MAX, &["aaaa", "cccc"]), [1, 3, 4]);
        assert_eq!(seqs(2, 3, &["aaaa", "cccc"]), [3]);
        assert_eq!(seqs(1, u64::MAX, &["zzzz"]), Vec::<u64>::new());
        // An empty needle would match every line: it matches none.
        assert_eq!(seqs(1, u64::MAX, &[""]), Vec::<u64>::new());
        assert_eq!(seqs(1, u64::MAX, &[]), Vec::<u64>::new());
        let lines = store.audit_lines_containing(1, 1, &["aaaa"]).unwrap();
        assert_eq!(
            lines,
            store.audit_lines(1, 1, 1).unwrap(),
            "exactly as stored"
        );
    }

    #[test]
    fn a_record_longer_than_the_log_takes_is_refused_and_the_chain_goes_on() {
        let store = SqliteStore::open_in_memory().unwrap();
        let mut huge = draft("A");
        huge.params.insert("x".into(), "y".repeat(MAX_LINE));
        let err = store.append_audit(&huge).unwrap_err();
        assert!(matches!(err, StoreError::RecordTooLong { .. }), "{err}");
        let next = store.append_audit(&draft("B")).unwrap();
        assert_eq!((next.seq, next.prev.as_str()), (1, GENESIS));
    }

    #[test]
    fn a_batch_of_records_chains_in_one_commit() {
        let store = SqliteStore::open_in_memory().unwrap();
        store.append_audit(&draft("A")).unwrap();
        let commits = store.commit_stats().commits();
        let batch = store
            .append_audits(&[draft("B"), draft("C"), draft("D")])
            .unwrap();
        assert_eq!(store.commit_stats().commits(), commits + 1);
        let lines = store.audit_lines(1, u64::MAX, 10).unwrap();
        let seqs: Vec<u64> = batch.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [2, 3, 4]);
        for (r, before) in batch.iter().zip(&lines) {
            assert_eq!(
                r.prev,
                line_hash(&before.1),
                "record {} chains to the one before",
                r.seq
            );
        }
        assert!(store.append_audits(&[]).unwrap().is_empty());
        assert_eq!(store.audit_lines(1, u64::MAX, 10).unwrap().len(), 4);
    }

    #[test]
    fn a_refused_change_leaves_no_record() {
        let store = SqliteStore::open_in_memory().unwrap();
        let key = root_record("card-master");
        store
            .insert_key_audited(&key, &draft("GenerateKey"))
            .unwrap();
        // The same key again violates the primary key: neither row nor record is written.
        assert!(
            store
                .insert_key_audited(&key, &draft("GenerateKey"))
                .is_err()
        );
        assert_eq!(store.audit_lines(1, u64::MAX, 10).unwrap().len(), 1);
        let err =
            store.set_state_audited(&key.id, KeyState::Active, KeyState::Destroyed, &draft("X"));
        assert!(err.is_err());
        assert_eq!(store.audit_head().unwrap().unwrap().0, 1);
    }
}
