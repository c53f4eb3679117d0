//! The cosignatures this node received from its witnesses for its own checkpoints: what
//! others signed about its log, kept so that an export can carry them to an auditor
//! (docs/audit-format.md §7).
//!
//! No foreign key ties a cosignature to the checkpoint it covers: it is the witness's word,
//! and it must stay when the log is cut back under it, since that is how the cut shows.

use rusqlite::{OptionalExtension, params};

use super::CachedSql;
use super::{CosignatureMark, CosignaturesAfter, SqliteStore, StoreError};
use crate::audit::witness::Cosignature;

impl SqliteStore {
    /// [`AuditLog::insert_cosignature`](super::AuditLog::insert_cosignature).
    pub(super) fn store_cosignature(&self, c: &Cosignature) -> Result<bool, StoreError> {
        let key_sha256 = c
            .witness_key_sha256()
            .map_err(|what| invalid(c, &format!("witness_key: {what}")))?;
        let seq = i64::try_from(c.seq)
            .ok()
            .filter(|s| *s >= 1)
            .ok_or_else(|| invalid(c, "seq is not a record number (1 or more)"))?;
        let line = c.to_line();
        self.write("storing a cosignature", |tx| {
            // A retry of the same cosignature, or a second one by the same witness for the
            // same checkpoint, leaves the first as it was.
            let added = tx
                .execute_cached(
                    "INSERT INTO audit_cosignatures (witness_key_sha256, seq, witness, line) \
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT (witness_key_sha256, seq) DO NOTHING",
                    params![key_sha256, seq, c.witness, line],
                )
                .map_err(StoreError::sqlite("storing a cosignature"))?;
            Ok(added == 1)
        })
    }

    /// [`AuditLog::cosignatures`](super::AuditLog::cosignatures).
    pub(super) fn read_cosignatures(&self) -> Result<Vec<Cosignature>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, line FROM audit_cosignatures \
                 ORDER BY seq, witness, witness_key_sha256",
            )
            .map_err(StoreError::sqlite("reading cosignatures"))?;
        let rows = stmt
            .query_map([], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(StoreError::sqlite("reading cosignatures"))?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, line) = row.map_err(StoreError::sqlite("reading cosignatures"))?;
            out.push(
                Cosignature::from_line(&line).map_err(|what| StoreError::Corrupt {
                    id: format!("cosignature of checkpoint {seq}"),
                    what,
                })?,
            );
        }
        Ok(out)
    }

    /// [`AuditLog::cosignature_mark`](super::AuditLog::cosignature_mark): the place of the
    /// last cosignature stored (rows are never deleted, so places only grow), 0 for none.
    pub(super) fn read_cosignature_mark(&self) -> Result<CosignatureMark, StoreError> {
        let conn = self.lock()?;
        let mark: Option<i64> = conn
            .query_row_cached("SELECT max(rowid) FROM audit_cosignatures", [], |row| {
                row.get(0)
            })
            .map_err(StoreError::sqlite("reading cosignatures"))?;
        Ok(CosignatureMark(mark.unwrap_or(0)))
    }

    /// [`AuditLog::cosignatures_page`](super::AuditLog::cosignatures_page).
    pub(super) fn read_cosignatures_page(
        &self,
        after: Option<&CosignaturesAfter>,
        upto: CosignatureMark,
        limit: usize,
    ) -> Result<Vec<(CosignaturesAfter, Cosignature)>, StoreError> {
        let (seq, witness, key) = match after {
            Some(a) => (
                Some(i64::try_from(a.seq).unwrap_or(i64::MAX)),
                a.witness.as_str(),
                a.witness_key_sha256.as_str(),
            ),
            None => (None, "", ""),
        };
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT seq, witness, witness_key_sha256, line FROM audit_cosignatures \
                 WHERE rowid <= ?1 AND (?2 IS NULL OR (seq, witness, witness_key_sha256) > (?2, ?3, ?4)) \
                 ORDER BY seq, witness, witness_key_sha256 LIMIT ?5",
            )
            .map_err(StoreError::sqlite("reading cosignatures"))?;
        let rows = stmt
            .query_map(
                params![
                    upto.0,
                    seq,
                    witness,
                    key,
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                    ))
                },
            )
            .map_err(StoreError::sqlite("reading cosignatures"))?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, witness, witness_key_sha256, line) =
                row.map_err(StoreError::sqlite("reading cosignatures"))?;
            let c = Cosignature::from_line(&line).map_err(|what| StoreError::Corrupt {
                id: format!("cosignature of checkpoint {seq}"),
                what,
            })?;
            let at = CosignaturesAfter {
                seq: u64::try_from(seq).unwrap_or(0),
                witness,
                witness_key_sha256,
            };
            out.push((at, c));
        }
        Ok(out)
    }

    /// [`AuditLog::last_cosigned_seq`](super::AuditLog::last_cosigned_seq).
    pub(super) fn read_last_cosigned_seq(
        &self,
        witness_key_sha256: &str,
    ) -> Result<Option<u64>, StoreError> {
        let conn = self.lock()?;
        let seq: Option<i64> = conn
            .query_row_cached(
                "SELECT max(seq) FROM audit_cosignatures WHERE witness_key_sha256 = ?1",
                [witness_key_sha256.to_ascii_uppercase()],
                |row| row.get(0),
            )
            .optional()
            .map_err(StoreError::sqlite("reading the last cosigned checkpoint"))?
            .flatten();
        Ok(seq.map(|s| s.max(0) as u64))
    }
}

/// The error for a cosignature the store cannot take, naming its witness and checkpoint.
fn invalid(c: &Cosignature, what: &str) -> StoreError {
    StoreError::InvalidCosignature {
        witness: crate::audit::record::cut(&c.witness, 64),
        seq: c.seq,
        what: what.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::super::AuditLog;
    use super::*;

    /// A cosignature of checkpoint `seq` by `witness`, whose key is `key` (hex SPKI DER).
    fn cosig(witness: &str, key: &str, seq: u64) -> Cosignature {
        Cosignature {
            v: 1,
            node: "guangzhou".into(),
            seq,
            head: format!("{seq:064x}"),
            node_key_sha256: "CD".repeat(32),
            witness: witness.into(),
            witness_key: key.into(),
            time: "2026-03-01T09:00:00.000Z".into(),
            signature: "3006020101020101".into(),
        }
    }

    #[test]
    fn cosignatures_come_back_by_seq_then_witness() {
        let store = SqliteStore::open_in_memory().unwrap();
        let (a, b) = ("aa".repeat(91), "bb".repeat(91));
        for c in [
            cosig("shenzhen", &b, 20),
            cosig("guangdong", &a, 20),
            cosig("guangdong", &a, 10),
        ] {
            assert!(store.insert_cosignature(&c).unwrap());
        }
        let got: Vec<(u64, String)> = store
            .cosignatures()
            .unwrap()
            .into_iter()
            .map(|c| (c.seq, c.witness))
            .collect();
        assert_eq!(
            got,
            [
                (10, "guangdong".to_string()),
                (20, "guangdong".to_string()),
                (20, "shenzhen".to_string())
            ]
        );
    }

    #[test]
    fn pages_of_cosignatures_keep_the_order_and_stop_at_their_mark() {
        let store = SqliteStore::open_in_memory().unwrap();
        assert_eq!(store.cosignature_mark().unwrap(), CosignatureMark(0));
        let (a, b) = ("aa".repeat(91), "bb".repeat(91));
        for c in [
            cosig("shenzhen", &b, 20),
            cosig("guangdong", &a, 20),
            cosig("guangdong", &a, 10),
        ] {
            store.insert_cosignature(&c).unwrap();
        }
        let mark = store.cosignature_mark().unwrap();
        // Stored after the mark: not in pages read up to it.
        store
            .insert_cosignature(&cosig("guangdong", &a, 5))
            .unwrap();
        let mut got = Vec::new();
        let mut after: Option<CosignaturesAfter> = None;
        loop {
            let page = store.cosignatures_page(after.as_ref(), mark, 1).unwrap();
            let Some((at, c)) = page.into_iter().next() else {
                break;
            };
            got.push((c.seq, c.witness));
            after = Some(at);
        }
        assert_eq!(
            got,
            [
                (10, "guangdong".to_string()),
                (20, "guangdong".to_string()),
                (20, "shenzhen".to_string())
            ]
        );
        let now = store.cosignature_mark().unwrap();
        assert_eq!(store.cosignatures_page(None, now, 10).unwrap().len(), 4);
    }

    #[test]
    fn a_second_cosignature_for_one_witness_key_and_seq_leaves_the_first() {
        let store = SqliteStore::open_in_memory().unwrap();
        let key = "aa".repeat(91);
        let first = cosig("guangdong", &key, 20);
        assert!(store.insert_cosignature(&first).unwrap());
        assert!(!store.insert_cosignature(&first).unwrap(), "a retry");
        let mut later = first.clone();
        later.time = "2026-03-01T10:00:00.000Z".into();
        assert!(!store.insert_cosignature(&later).unwrap());
        assert_eq!(store.cosignatures().unwrap(), [first]);
    }

    #[test]
    fn the_last_cosigned_seq_is_per_witness_key() {
        let store = SqliteStore::open_in_memory().unwrap();
        let (a, b) = ("aa".repeat(91), "bb".repeat(91));
        for c in [
            cosig("guangdong", &a, 10),
            cosig("guangdong", &a, 30),
            cosig("shenzhen", &b, 20),
        ] {
            store.insert_cosignature(&c).unwrap();
        }
        let sha = |hex_key: &str| cosig("x", hex_key, 1).witness_key_sha256().unwrap();
        assert_eq!(store.last_cosigned_seq(&sha(&a)).unwrap(), Some(30));
        assert_eq!(
            store
                .last_cosigned_seq(&sha(&b).to_ascii_lowercase())
                .unwrap(),
            Some(20),
            "the SHA-256 may be given in lower case"
        );
        assert_eq!(store.last_cosigned_seq(&"EE".repeat(32)).unwrap(), None);
    }

    #[test]
    fn a_cosignature_whose_key_is_not_hex_or_whose_seq_is_0_is_refused() {
        let store = SqliteStore::open_in_memory().unwrap();
        let err = store
            .insert_cosignature(&cosig("guangdong", "zz", 20))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("the cosignature of checkpoint 20 by witness guangdong"),
            "{err}"
        );
        assert!(
            store
                .insert_cosignature(&cosig("guangdong", "aa", 0))
                .is_err()
        );
        assert!(store.cosignatures().unwrap().is_empty());
    }

    #[test]
    fn cosignatures_stay_when_the_log_is_cut_back_under_them() {
        let store = SqliteStore::open_in_memory().unwrap();
        // No checkpoint 20 in the log: the witness's word is kept all the same.
        store
            .insert_cosignature(&cosig("guangdong", &"aa".repeat(91), 20))
            .unwrap();
        assert_eq!(store.cosignatures().unwrap().len(), 1);
    }
}
