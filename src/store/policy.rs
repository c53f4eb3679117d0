//! The policy in force, kept in the registry so that a restart keeps deciding by it: a file
//! put in its place while the node was down is compared with it, not taken on trust (the
//! dual-control floor, `policy::floor`).

use rusqlite::{OptionalExtension, params};

use super::CachedSql;
use super::audit::append_in;
use super::{PolicyStore, SqliteStore, StoreError, now_rfc3339};
use crate::audit::{AuditDraft, AuditRecord};

/// The policy in force, as stored: its text (policies are not secret) and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPolicy {
    /// SHA-256 of the text's bytes, 64 hex digits.
    pub sha256: String,
    /// The policy file's text.
    pub text: String,
    /// The file it was loaded from.
    pub origin: String,
}

fn put_in(tx: &rusqlite::Connection, p: &StoredPolicy) -> Result<(), StoreError> {
    tx.execute_cached(
        "INSERT INTO policy_in_force (id, sha256, text, origin, since) VALUES (1, ?1, ?2, ?3, ?4) \
         ON CONFLICT (id) DO UPDATE SET sha256 = ?1, text = ?2, origin = ?3, since = ?4",
        params![p.sha256, p.text, p.origin, now_rfc3339()],
    )
    .map_err(StoreError::sqlite("storing the policy in force"))?;
    Ok(())
}

impl PolicyStore for SqliteStore {
    fn policy_in_force(&self) -> Result<Option<StoredPolicy>, StoreError> {
        let conn = self.lock()?;
        conn.query_row_cached(
            "SELECT sha256, text, origin FROM policy_in_force WHERE id = 1",
            [],
            |r| {
                Ok(StoredPolicy {
                    sha256: r.get(0)?,
                    text: r.get(1)?,
                    origin: r.get(2)?,
                })
            },
        )
        .optional()
        .map_err(StoreError::sqlite("reading the policy in force"))
    }

    fn put_policy(&self, policy: &StoredPolicy) -> Result<(), StoreError> {
        self.write("storing the policy in force", |tx| put_in(tx, policy))
    }

    fn put_policy_audited(
        &self,
        policy: &StoredPolicy,
        draft: &AuditDraft,
    ) -> Result<AuditRecord, StoreError> {
        self.write("storing the policy in force", |tx| {
            put_in(tx, policy)?;
            append_in(tx, draft)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AuditLog;

    fn policy(c: char) -> StoredPolicy {
        StoredPolicy {
            sha256: c.to_string().repeat(64),
            text: format!("text {c}"),
            origin: "p.toml".into(),
        }
    }

    #[test]
    fn one_policy_is_in_force_and_the_last_put_wins() {
        let store = SqliteStore::open_in_memory().unwrap();
        assert_eq!(store.policy_in_force().unwrap(), None);
        store.put_policy(&policy('a')).unwrap();
        assert_eq!(store.policy_in_force().unwrap(), Some(policy('a')));
        let draft = AuditDraft {
            rpc: "ReloadPolicy".into(),
            ..AuditDraft::default()
        };
        let record = store.put_policy_audited(&policy('b'), &draft).unwrap();
        assert_eq!(record.rpc, "ReloadPolicy");
        assert_eq!(store.policy_in_force().unwrap(), Some(policy('b')));
        assert_eq!(store.audit_head().unwrap().unwrap().0, 1);
    }

    #[test]
    fn a_policy_whose_record_cannot_be_written_is_not_stored() {
        let store = SqliteStore::open_in_memory().unwrap();
        store.put_policy(&policy('a')).unwrap();
        let too_long = AuditDraft {
            rpc: "x".repeat(super::super::audit::MAX_LINE + 1),
            ..AuditDraft::default()
        };
        assert!(store.put_policy_audited(&policy('b'), &too_long).is_err());
        assert_eq!(store.policy_in_force().unwrap(), Some(policy('a')));
    }
}
