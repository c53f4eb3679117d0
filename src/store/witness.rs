//! What this node, as a witness, verified of other nodes' logs (table `witnessed_logs`).

use rusqlite::{OptionalExtension, params};

use super::audit::append_in;
use super::{CachedSql, SqliteStore, StoreError, WitnessStore};
use crate::audit::consistency::Verified;
use crate::audit::record::{AuditDraft, AuditRecord, now_millis};

impl WitnessStore for SqliteStore {
    fn witnessed(&self, node: &str) -> Result<Option<Verified>, StoreError> {
        let conn = self.lock()?;
        let row: Option<(String, i64, String)> = conn
            .query_row_cached(
                "SELECT node_key_sha256, verified_seq, verified_head FROM witnessed_logs \
                 WHERE node = ?1",
                params![node],
                |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .map_err(StoreError::sqlite("reading what this witness verified"))?;
        Ok(row.map(|(node_key_sha256, seq, head)| Verified {
            node_key_sha256,
            seq: seq.max(0) as u64,
            head,
        }))
    }

    fn set_witnessed_audited(
        &self,
        node: &str,
        state: &Verified,
        draft: &AuditDraft,
    ) -> Result<AuditRecord, StoreError> {
        self.write("recording what this witness verified", |tx| {
            tx.execute_cached(
                "INSERT INTO witnessed_logs \
                 (node, node_key_sha256, verified_seq, verified_head, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (node) DO UPDATE SET node_key_sha256 = excluded.node_key_sha256, \
                 verified_seq = excluded.verified_seq, verified_head = excluded.verified_head, \
                 updated_at = excluded.updated_at",
                params![
                    node,
                    state.node_key_sha256,
                    i64::try_from(state.seq).unwrap_or(i64::MAX),
                    state.head,
                    now_millis()
                ],
            )
            .map_err(StoreError::sqlite("recording what this witness verified"))?;
            append_in(tx, draft)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::GENESIS;

    #[test]
    fn the_state_and_its_record_are_written_together() {
        let store = SqliteStore::open_in_memory().unwrap();
        assert!(store.witnessed("guangzhou").unwrap().is_none());
        let state = Verified {
            node_key_sha256: "AB".repeat(32),
            seq: 7,
            head: GENESIS.into(),
        };
        let draft = AuditDraft {
            rpc: "WitnessCheckpoint".into(),
            ..Default::default()
        };
        let r = store
            .set_witnessed_audited("guangzhou", &state, &draft)
            .unwrap();
        assert_eq!(r.seq, 1);
        assert_eq!(store.witnessed("guangzhou").unwrap(), Some(state));
    }
}
