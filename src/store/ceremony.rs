//! Ceremonies and their approvals in the database. Every change is written together with the
//! audit record of the request that made it.

use rusqlite::{Connection, OptionalExtension, params};

use super::CachedSql;
use super::audit::append_in;
use super::{CeremoniesAfter, CeremonyStore, SqliteStore, StoreError};
use crate::audit::{AuditDraft, AuditRecord};

/// A ceremony row with its approvals, as stored (the node gives it meaning).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CeremonyRow {
    /// "c-" + 32 hex digits.
    pub id: String,
    /// The policy operation.
    pub operation: String,
    /// Parameters as JSON (an object of strings).
    pub params: String,
    /// The opener's identity URI.
    pub opener: String,
    /// Approvals needed.
    pub quorum: u32,
    /// RFC 3339.
    pub created_at: String,
    /// Unix seconds after which it cannot run.
    pub expires_at: u64,
    /// open, running, done, failed, cancelled, expired.
    pub state: String,
    /// What came of it.
    pub result: String,
    /// The approvals, in order.
    pub approvals: Vec<ApprovalRow>,
}

/// One approval of a ceremony, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRow {
    /// The approver's identity URI.
    pub approver: String,
    /// RFC 3339.
    pub approved_at: String,
    /// The person of the officer roster who approved (`None` when the policy had no roster):
    /// a ceremony holds one approval per person.
    pub person: Option<String>,
    /// The SHA-256 of the approver's certificate key, when known.
    pub certificate_key: Option<String>,
}

impl ApprovalRow {
    /// An approval by an identity, counted without a roster.
    pub fn by(approver: &str, approved_at: &str) -> ApprovalRow {
        ApprovalRow {
            approver: approver.to_string(),
            approved_at: approved_at.to_string(),
            person: None,
            certificate_key: None,
        }
    }
}

fn approvals_in(tx: &rusqlite::Connection, id: &str) -> Result<Vec<ApprovalRow>, StoreError> {
    let mut stmt = tx
        .prepare_cached(
            "SELECT approver, approved_at, person, certificate_key FROM ceremony_approvals \
             WHERE ceremony_id = ?1 ORDER BY approved_at, approver",
        )
        .map_err(StoreError::sqlite("reading approvals"))?;
    let rows = stmt
        .query_map([id], |r| {
            Ok(ApprovalRow {
                approver: r.get(0)?,
                approved_at: r.get(1)?,
                person: r.get(2)?,
                certificate_key: r.get(3)?,
            })
        })
        .map_err(StoreError::sqlite("reading approvals"))?;
    rows.map(|r| r.map_err(StoreError::sqlite("reading approvals")))
        .collect()
}

fn get_in(conn: &rusqlite::Connection, id: &str) -> Result<Option<CeremonyRow>, StoreError> {
    let row = conn
        .query_row_cached(
            "SELECT id, operation, params, opener, quorum, created_at, expires_at, state, result \
             FROM ceremonies WHERE id = ?1",
            [id],
            |r| {
                Ok(CeremonyRow {
                    id: r.get(0)?,
                    operation: r.get(1)?,
                    params: r.get(2)?,
                    opener: r.get(3)?,
                    quorum: r.get::<_, i64>(4)?.clamp(0, i64::from(u32::MAX)) as u32,
                    created_at: r.get(5)?,
                    expires_at: r.get::<_, i64>(6)?.max(0) as u64,
                    state: r.get(7)?,
                    result: r.get(8)?,
                    approvals: Vec::new(),
                })
            },
        )
        .optional()
        .map_err(StoreError::sqlite("reading a ceremony"))?;
    match row {
        Some(mut c) => {
            c.approvals = approvals_in(conn, &c.id)?;
            Ok(Some(c))
        }
        None => Ok(None),
    }
}

/// Adds an approval; `false` when this approver, or this person, approved already.
fn approve_in(tx: &Connection, id: &str, a: &ApprovalRow) -> Result<bool, StoreError> {
    let n = tx
        .execute_cached(
            "INSERT OR IGNORE INTO ceremony_approvals \
             (ceremony_id, approver, approved_at, person, certificate_key) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![id, a.approver, a.approved_at, a.person, a.certificate_key],
        )
        .map_err(StoreError::sqlite("recording an approval"))?;
    Ok(n == 1)
}

fn set_state_in(
    tx: &Connection,
    id: &str,
    from: &str,
    to: &str,
    result: &str,
) -> Result<bool, StoreError> {
    let n = tx
        .execute_cached(
            "UPDATE ceremonies SET state = ?1, result = ?2 WHERE id = ?3 AND state = ?4",
            params![to, result, id, from],
        )
        .map_err(StoreError::sqlite("changing a ceremony's state"))?;
    Ok(n == 1)
}

impl CeremonyStore for SqliteStore {
    fn insert_ceremony_audited(
        &self,
        c: &CeremonyRow,
        draft: &AuditDraft,
    ) -> Result<AuditRecord, StoreError> {
        self.write("opening a ceremony", |tx| {
            tx.execute_cached(
                "INSERT INTO ceremonies (id, operation, params, opener, quorum, created_at, expires_at, state, result) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    c.id,
                    c.operation,
                    c.params,
                    c.opener,
                    i64::from(c.quorum),
                    c.created_at,
                    i64::try_from(c.expires_at).unwrap_or(i64::MAX),
                    c.state,
                    c.result
                ],
            )
            .map_err(StoreError::sqlite("opening a ceremony"))?;
            for a in &c.approvals {
                approve_in(tx, &c.id, a)?;
            }
            append_in(tx, draft)
        })
    }

    fn get_ceremony(&self, id: &str) -> Result<Option<CeremonyRow>, StoreError> {
        // The row and its approvals from one snapshot.
        self.read_snapshot("reading a ceremony", |conn| get_in(conn, id))
    }

    fn list_ceremonies_page(
        &self,
        state: Option<&str>,
        after: Option<&CeremoniesAfter>,
        limit: usize,
    ) -> Result<Vec<CeremonyRow>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let (after_time, after_id) = match after {
            Some(a) => (Some(a.created_at.as_str()), a.id.as_str()),
            None => (None, ""),
        };
        let ids: Vec<String> = {
            let conn = self.lock()?;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT id FROM ceremonies WHERE (?1 IS NULL OR state = ?1) \
                     AND (?2 IS NULL OR created_at < ?2 OR (created_at = ?2 AND id > ?3)) \
                     ORDER BY created_at DESC, id LIMIT ?4",
                )
                .map_err(StoreError::sqlite("listing ceremonies"))?;
            let rows = stmt
                .query_map(params![state, after_time, after_id, limit], |r| r.get(0))
                .map_err(StoreError::sqlite("listing ceremonies"))?;
            rows.collect::<Result<_, _>>()
                .map_err(StoreError::sqlite("listing ceremonies"))?
        };
        let mut out = Vec::new();
        for id in ids {
            if let Some(c) = self.get_ceremony(&id)? {
                out.push(c);
            }
        }
        Ok(out)
    }

    fn approve_ceremony_audited(
        &self,
        id: &str,
        approval: &ApprovalRow,
        draft: &AuditDraft,
    ) -> Result<(bool, AuditRecord), StoreError> {
        self.write("recording an approval", |tx| {
            let added = approve_in(tx, id, approval)?;
            Ok((added, append_in(tx, draft)?))
        })
    }

    fn set_ceremony_state_audited(
        &self,
        id: &str,
        from: &str,
        to: &str,
        result: &str,
        draft: &AuditDraft,
    ) -> Result<Option<AuditRecord>, StoreError> {
        self.write("changing a ceremony's state", |tx| {
            if set_state_in(tx, id, from, to, result)? {
                append_in(tx, draft).map(Some)
            } else {
                Ok(None)
            }
        })
    }

    fn set_ceremony_state(
        &self,
        id: &str,
        from: &str,
        to: &str,
        result: &str,
    ) -> Result<bool, StoreError> {
        self.write("changing a ceremony's state", |tx| {
            set_state_in(tx, id, from, to, result)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AuditLog;

    fn row(id: &str) -> CeremonyRow {
        CeremonyRow {
            id: id.into(),
            operation: "generate".into(),
            params: "{}".into(),
            opener: "hkms://officer/national/000000/a".into(),
            quorum: 2,
            created_at: "2026-01-01T00:00:00Z".into(),
            expires_at: 10,
            state: "open".into(),
            result: String::new(),
            approvals: vec![ApprovalRow::by("hkms://officer/national/000000/a", "t1")],
        }
    }

    #[test]
    fn pages_of_ceremonies_go_newest_first_then_by_id() {
        let store = SqliteStore::open_in_memory().unwrap();
        for (id, at) in [
            ("c-b", "2026-01-01T00:00:00Z"),
            ("c-a", "2026-01-01T00:00:00Z"),
            ("c-c", "2026-01-02T00:00:00Z"),
            ("c-d", "2025-12-31T00:00:00Z"),
        ] {
            let mut r = row(id);
            r.created_at = at.into();
            store
                .insert_ceremony_audited(&r, &AuditDraft::default())
                .unwrap();
        }
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let page = store.list_ceremonies_page(None, after.as_ref(), 1).unwrap();
            let Some(c) = page.into_iter().next() else {
                break;
            };
            after = Some(CeremoniesAfter::of(&c));
            got.push(c.id);
        }
        assert_eq!(got, ["c-c", "c-a", "c-b", "c-d"]);
        assert_eq!(store.list_ceremonies_page(None, None, 3).unwrap().len(), 3);
    }

    #[test]
    fn approvals_count_each_approver_once_and_states_move_by_compare_and_set() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .insert_ceremony_audited(&row("c-1"), &AuditDraft::default())
            .unwrap();
        let (added, _) = store
            .approve_ceremony_audited(
                "c-1",
                &ApprovalRow::by("hkms://officer/national/000000/a", "t2"),
                &AuditDraft::default(),
            )
            .unwrap();
        assert!(!added);
        let (added, _) = store
            .approve_ceremony_audited(
                "c-1",
                &ApprovalRow::by("hkms://officer/national/000000/b", "t3"),
                &AuditDraft::default(),
            )
            .unwrap();
        assert!(added);
        assert_eq!(
            store.get_ceremony("c-1").unwrap().unwrap().approvals.len(),
            2
        );
        assert!(
            store
                .set_ceremony_state("c-1", "open", "running", "")
                .unwrap()
        );
        assert!(
            !store
                .set_ceremony_state("c-1", "open", "running", "")
                .unwrap()
        );
        assert_eq!(
            store
                .list_ceremonies_page(Some("running"), None, 10)
                .unwrap()
                .len(),
            1
        );
        assert!(
            store
                .list_ceremonies_page(Some("done"), None, 10)
                .unwrap()
                .is_empty()
        );
        assert_eq!(store.audit_head().unwrap().unwrap().0, 3);
    }

    #[test]
    fn a_person_approves_once_and_is_read_back_with_the_approval() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .insert_ceremony_audited(&row("c-1"), &AuditDraft::default())
            .unwrap();
        let by = |who: &str, person: &str, key: char| ApprovalRow {
            approver: who.into(),
            approved_at: "t2".into(),
            person: Some(person.into()),
            certificate_key: Some(key.to_string().repeat(64)),
        };
        let alice = by("hkms://officer/national/000000/alice-1", "alice", 'a');
        let (added, _) = store
            .approve_ceremony_audited("c-1", &alice, &AuditDraft::default())
            .unwrap();
        assert!(added);
        // The same person through another certificate: not a second approval.
        let (added, _) = store
            .approve_ceremony_audited(
                "c-1",
                &by("hkms://officer/national/000000/alice-2", "alice", 'b'),
                &AuditDraft::default(),
            )
            .unwrap();
        assert!(!added);
        let approvals = store.get_ceremony("c-1").unwrap().unwrap().approvals;
        assert_eq!(approvals.len(), 2);
        assert_eq!(approvals[1], alice);
    }

    #[test]
    fn an_audited_state_change_writes_its_record_only_when_it_moves() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .insert_ceremony_audited(&row("c-1"), &AuditDraft::default())
            .unwrap();
        let draft = AuditDraft {
            rpc: "CancelCeremony".into(),
            ..AuditDraft::default()
        };
        let record = store
            .set_ceremony_state_audited("c-1", "open", "cancelled", "by b", &draft)
            .unwrap()
            .expect("moved");
        assert_eq!(record.rpc, "CancelCeremony");
        let c = store.get_ceremony("c-1").unwrap().unwrap();
        assert_eq!((c.state.as_str(), c.result.as_str()), ("cancelled", "by b"));
        let head = store.audit_head().unwrap().unwrap().0;
        assert_eq!(head, 2);
        let line = &store.audit_lines(2, 2, 1).unwrap()[0].1;
        assert!(line.contains("\"rpc\":\"CancelCeremony\""), "{line}");
        // Not in `from` any more: nothing changes and nothing is recorded.
        let again = store
            .set_ceremony_state_audited("c-1", "open", "cancelled", "again", &draft)
            .unwrap();
        assert!(again.is_none());
        assert_eq!(store.audit_head().unwrap().unwrap().0, head);
        assert_eq!(store.get_ceremony("c-1").unwrap().unwrap().result, "by b");
    }
}
