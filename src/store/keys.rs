//! Reading and writing rows of the `keys` table.

use rusqlite::{Connection, ErrorCode, OptionalExtension, ffi, params, params_from_iter};

use super::CachedSql;
use super::audit::append_in;
use super::record::{COLUMNS, from_row};
use super::{KeyFilter, KeyRecord, KeyRegistry, KeysAfter, SqliteStore, StoreError, now_rfc3339};
use crate::audit::{AuditDraft, AuditRecord};
use crate::hierarchy::{KeyId, KeyState, KeyTypeName, Region};

/// What follows `FROM keys` in [`KeyRegistry::newest_active_key`] (?1 key type, ?2 region): its
/// condition, order and limit. Migration 4's index answers it without a sort. The rowid is the
/// order of registration: hkms deletes a row only to undo the key it has just created, and
/// never runs VACUUM.
pub(super) const NEWEST_ACTIVE: &str = "WHERE key_type = ?1 AND region = ?2 AND state = 'active' \
     ORDER BY version DESC, rowid DESC LIMIT 1";

impl KeyRegistry for SqliteStore {
    fn insert_key(&self, record: &KeyRecord) -> Result<(), StoreError> {
        self.write("registering a key", |tx| insert_in(tx, record))
    }

    fn insert_key_audited(
        &self,
        record: &KeyRecord,
        draft: &AuditDraft,
    ) -> Result<AuditRecord, StoreError> {
        self.write("registering a key", |tx| {
            insert_in(tx, record)?;
            append_in(tx, draft)
        })
    }

    fn get_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError> {
        let conn = self.lock()?;
        conn.query_row_cached(
            &format!("SELECT {COLUMNS} FROM keys WHERE id = ?1"),
            [id.as_str()],
            |row| Ok(from_row(row)),
        )
        .optional()
        .map_err(StoreError::sqlite("reading a key"))?
        .transpose()
    }

    fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<KeyRecord>, StoreError> {
        self.select_keys(filter, None, None)
    }

    fn list_keys_page(
        &self,
        filter: &KeyFilter,
        after: Option<&KeysAfter>,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        self.select_keys(filter, after, Some(limit))
    }

    fn newest_active_key(
        &self,
        key_type: &KeyTypeName,
        region: &Region,
    ) -> Result<Option<KeyRecord>, StoreError> {
        // Built once: every card request reads it.
        static SQL: std::sync::LazyLock<String> =
            std::sync::LazyLock::new(|| format!("SELECT {COLUMNS} FROM keys {NEWEST_ACTIVE}"));
        let mut found = self.query_records(&SQL, params![key_type.as_str(), region.as_str()])?;
        Ok(found.pop())
    }

    fn find_child(&self, parent: &KeyId, region: &Region) -> Result<Option<KeyRecord>, StoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM keys \
             WHERE parent_id = ?1 AND region = ?2 AND state <> 'destroyed'"
        );
        let mut found = self.query_records(&sql, params![parent.as_str(), region.as_str()])?;
        Ok(found.pop())
    }

    fn next_version(&self, key_type: &KeyTypeName, region: &Region) -> Result<u32, StoreError> {
        let conn = self.lock()?;
        let max: i64 = conn
            .query_row_cached(
                "SELECT COALESCE(MAX(version), 0) FROM keys WHERE key_type = ?1 AND region = ?2",
                [key_type.as_str(), region.as_str()],
                |row| row.get(0),
            )
            .map_err(StoreError::sqlite("reading the latest key version"))?;
        u32::try_from(max)
            .ok()
            .and_then(|v| v.checked_add(1))
            .ok_or_else(|| StoreError::Corrupt {
                id: format!("(a {key_type} key of region {region})"),
                what: format!("the highest version {max} is out of range"),
            })
    }

    fn set_state_audited(
        &self,
        id: &KeyId,
        expected: KeyState,
        next: KeyState,
        draft: &AuditDraft,
    ) -> Result<(KeyRecord, AuditRecord), StoreError> {
        self.write("changing a key's state", |tx| {
            let key = set_state_in(tx, id, expected, next)?;
            Ok((key, append_in(tx, draft)?))
        })
    }

    fn delete_key(&self, id: &KeyId) -> Result<(), StoreError> {
        let deleted = self.write("deleting a key", |conn| {
            conn.execute_cached("DELETE FROM keys WHERE id = ?1", [id.as_str()])
                .map_err(|e| match constraint(&e) {
                    Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY) => {
                        StoreError::HasChildren { id: id.clone() }
                    }
                    _ => StoreError::sqlite("deleting a key")(e),
                })
        })?;
        if deleted == 0 {
            return Err(StoreError::NotFound { id: id.clone() });
        }
        Ok(())
    }

    fn labels(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT ck_label FROM keys WHERE state <> 'destroyed' ORDER BY ck_label",
            )
            .map_err(StoreError::sqlite("listing key labels"))?;
        let labels = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
            .map_err(StoreError::sqlite("listing key labels"))?;
        Ok(labels)
    }
}

impl SqliteStore {
    /// Moves a key from `expected` to `next` if SP 800-57 allows it and nobody changed the key
    /// meanwhile (compare-and-set), without a ceremony-log record; returns the updated record.
    /// The node changes states with [`KeyRegistry::set_state_audited`].
    pub fn set_state(
        &self,
        id: &KeyId,
        expected: KeyState,
        next: KeyState,
    ) -> Result<KeyRecord, StoreError> {
        self.write("changing a key's state", |tx| {
            set_state_in(tx, id, expected, next)
        })
    }

    /// The keys `filter` selects, in the order (created_at, id), after `after` and at most
    /// `limit` of them when given. Migration 8's index answers the order and the bound without
    /// a sort.
    fn select_keys(
        &self,
        filter: &KeyFilter,
        after: Option<&KeysAfter>,
        limit: Option<usize>,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM keys WHERE 1 = 1");
        let mut args: Vec<&dyn rusqlite::ToSql> = Vec::new();
        let tier = filter.tier.map(|t| t.as_str());
        let region = filter.region.as_ref().map(Region::as_str);
        let key_type = filter.key_type.as_ref().map(KeyTypeName::as_str);
        let state = filter.state.map(|s| s.as_str());
        let conditions = [
            ("tier", &tier),
            ("region", &region),
            ("key_type", &key_type),
            ("state", &state),
        ];
        for (column, value) in conditions {
            if let Some(value) = value {
                sql.push_str(&format!(" AND {column} = ?"));
                args.push(value);
            }
        }
        if let Some(after) = after {
            sql.push_str(" AND (created_at, id) > (?, ?)");
            args.push(&after.created_at);
            args.push(&after.id);
        }
        sql.push_str(" ORDER BY created_at, id");
        let limit = limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        if let Some(limit) = &limit {
            sql.push_str(" LIMIT ?");
            args.push(limit);
        }
        self.query_records(&sql, params_from_iter(args))
    }

    fn query_records(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<KeyRecord>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached(sql)
            .map_err(StoreError::sqlite("listing keys"))?;
        let mut rows = stmt
            .query(args)
            .map_err(StoreError::sqlite("listing keys"))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(StoreError::sqlite("listing keys"))? {
            out.push(from_row(row)?);
        }
        Ok(out)
    }
}

/// Inserts a key row inside a transaction.
pub(super) fn insert_in(tx: &Connection, record: &KeyRecord) -> Result<(), StoreError> {
    record.check().map_err(|what| StoreError::InvalidRecord {
        id: record.id.clone(),
        what,
    })?;
    tx.execute_cached(
        &format!(
            "INSERT INTO keys ({COLUMNS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        ),
        params![
            record.id.as_str(),
            record.key_type.as_str(),
            record.algorithm.as_str(),
            record.tier.as_str(),
            record.region.as_str(),
            record.parent_id.as_ref().map(KeyId::as_str),
            record.factor.map(|f| f.to_hex()),
            record.kcv.to_hex(),
            record.kcv.method.as_str(),
            i64::from(record.version),
            record.state.as_str(),
            record.ck_label,
            record.created_at,
            record.updated_at,
        ],
    )
    .map_err(|e| insert_error(e, record))?;
    Ok(())
}

/// Compare-and-set of a key's state inside a transaction; returns the updated record.
fn set_state_in(
    tx: &Connection,
    id: &KeyId,
    expected: KeyState,
    next: KeyState,
) -> Result<KeyRecord, StoreError> {
    expected.transition(next)?;
    let current: Option<String> = tx
        .query_row_cached(
            "SELECT state FROM keys WHERE id = ?1",
            [id.as_str()],
            |row| row.get(0),
        )
        .optional()
        .map_err(StoreError::sqlite("reading a key's state"))?;
    let current = current.ok_or_else(|| StoreError::NotFound { id: id.clone() })?;
    let actual = current
        .parse::<KeyState>()
        .map_err(|e| StoreError::Corrupt {
            id: id.to_string(),
            what: e.to_string(),
        })?;
    if actual != expected {
        return Err(StoreError::Conflict {
            id: id.clone(),
            expected,
            actual,
        });
    }
    tx.execute_cached(
        "UPDATE keys SET state = ?1, updated_at = ?2 WHERE id = ?3 AND state = ?4",
        params![next.as_str(), now_rfc3339(), id.as_str(), expected.as_str()],
    )
    .map_err(|e| match constraint(&e) {
        Some(ffi::SQLITE_CONSTRAINT_UNIQUE) => StoreError::Corrupt {
            id: id.to_string(),
            what: "another live key has the same parent and region".to_owned(),
        },
        _ => StoreError::sqlite("changing a key's state")(e),
    })?;
    tx.query_row_cached(
        &format!("SELECT {COLUMNS} FROM keys WHERE id = ?1"),
        [id.as_str()],
        |row| Ok(from_row(row)),
    )
    .map_err(StoreError::sqlite("reading a key after its state change"))?
}

/// The extended constraint code of a constraint violation, if `e` is one.
pub(super) fn constraint(e: &rusqlite::Error) -> Option<i32> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == ErrorCode::ConstraintViolation => {
            Some(f.extended_code)
        }
        _ => None,
    }
}

/// Turns a failed INSERT into the error that names the broken rule.
fn insert_error(e: rusqlite::Error, record: &KeyRecord) -> StoreError {
    let message = match &e {
        rusqlite::Error::SqliteFailure(_, Some(m)) => m.as_str(),
        _ => "",
    };
    match (constraint(&e), &record.parent_id) {
        (Some(ffi::SQLITE_CONSTRAINT_UNIQUE), Some(parent))
            if message.contains("keys.parent_id") =>
        {
            StoreError::AlreadyExists {
                parent: parent.clone(),
                region: record.region,
            }
        }
        (Some(ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY), _) => {
            StoreError::Duplicate {
                id: record.id.clone(),
                label: record.ck_label.clone(),
            }
        }
        (Some(ffi::SQLITE_CONSTRAINT_FOREIGNKEY), Some(parent)) => StoreError::ParentNotFound {
            id: record.id.clone(),
            parent: parent.clone(),
        },
        _ => StoreError::sqlite("registering a key")(e),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{child_record, root_record};
    use super::*;
    use crate::hierarchy::{Factor, Tier};

    fn store() -> SqliteStore {
        SqliteStore::open_in_memory().unwrap()
    }

    fn name(s: &str) -> KeyTypeName {
        KeyTypeName::parse(s).unwrap()
    }

    fn region(s: &str) -> Region {
        Region::parse(s).unwrap()
    }

    #[test]
    fn insert_then_get_returns_the_same_record() {
        let s = store();
        let root = root_record("card-master");
        let child = child_record(&root, "440000");
        s.insert_key(&root).unwrap();
        s.insert_key(&child).unwrap();
        assert_eq!(s.get_key(&root.id).unwrap(), Some(root));
        assert_eq!(s.get_key(&child.id).unwrap(), Some(child));
        assert_eq!(s.get_key(&KeyId::new_random()).unwrap(), None);
    }

    #[test]
    fn newest_active_key_takes_the_highest_active_version_then_the_latest_registered() {
        let s = store();
        let national = Region::NATIONAL;
        assert_eq!(
            s.newest_active_key(&name("pin-unblock"), &national)
                .unwrap(),
            None
        );
        let v1 = root_record("pin-unblock");
        let mut v3_suspended = root_record("pin-unblock");
        v3_suspended.version = 3;
        v3_suspended.state = KeyState::Suspended;
        let mut v2 = root_record("pin-unblock");
        v2.version = 2;
        let mut v2_again = root_record("pin-unblock");
        v2_again.version = 2;
        let mut other_type = root_record("pin-reload");
        other_type.version = 9;
        for r in [&v1, &v3_suspended, &v2, &v2_again, &other_type] {
            s.insert_key(r).unwrap();
        }
        let newest = |t: &str| {
            s.newest_active_key(&name(t), &national)
                .unwrap()
                .map(|r| r.id)
        };
        assert_eq!(newest("pin-unblock"), Some(v2_again.id.clone()));
        assert_eq!(newest("pin-reload"), Some(other_type.id.clone()));
        assert_eq!(
            s.newest_active_key(&name("pin-unblock"), &region("440100"))
                .unwrap(),
            None
        );
    }

    #[test]
    fn list_filters_by_each_field_and_orders_by_creation() {
        let s = store();
        let mut root = root_record("card-master");
        root.created_at = "2025-01-01T00:00:00Z".into();
        let mut gd = child_record(&root, "440000");
        gd.created_at = "2025-01-02T00:00:00Z".into();
        let mut gz = child_record(&gd, "440100");
        gz.created_at = "2025-01-03T00:00:00Z".into();
        let mut pin = root_record("pin-unblock");
        pin.created_at = "2024-12-31T00:00:00Z".into();
        pin.state = KeyState::PreActive;
        for r in [&root, &gd, &gz, &pin] {
            s.insert_key(r).unwrap();
        }
        let ids = |f: KeyFilter| -> Vec<KeyId> {
            s.list_keys(&f).unwrap().into_iter().map(|r| r.id).collect()
        };

        assert_eq!(
            ids(KeyFilter::default()),
            [&pin.id, &root.id, &gd.id, &gz.id].map(Clone::clone)
        );
        assert_eq!(
            ids(KeyFilter {
                tier: Some(Tier::Provincial),
                ..Default::default()
            }),
            [gd.id.clone()]
        );
        assert_eq!(
            ids(KeyFilter {
                region: Some(region("440100")),
                ..Default::default()
            }),
            [gz.id.clone()]
        );
        assert_eq!(
            ids(KeyFilter {
                key_type: Some(name("pin-unblock")),
                ..Default::default()
            }),
            [pin.id.clone()]
        );
        assert_eq!(
            ids(KeyFilter {
                state: Some(KeyState::PreActive),
                ..Default::default()
            }),
            [pin.id.clone()]
        );
        assert_eq!(
            ids(KeyFilter {
                tier: Some(Tier::National),
                key_type: Some(name("card-master")),
                state: Some(KeyState::Active),
                region: Some(Region::NATIONAL),
            }),
            [root.id.clone()]
        );
        assert!(
            ids(KeyFilter {
                region: Some(region("110000")),
                ..Default::default()
            })
            .is_empty()
        );
    }

    #[test]
    fn pages_of_keys_follow_the_listing_order_with_the_limit_in_the_query() {
        let s = store();
        // Several keys per second, as a busy node makes them: ties go by id.
        let mut all = Vec::new();
        for i in 0..12 {
            let mut k = root_record(if i % 3 == 0 {
                "pin-unblock"
            } else {
                "card-master"
            });
            k.created_at = format!("2025-01-01T00:00:0{}Z", i / 4);
            s.insert_key(&k).unwrap();
            all.push(k);
        }
        all.sort_by(|a, b| (&a.created_at, &a.id).cmp(&(&b.created_at, &b.id)));
        let ids = |v: Vec<KeyRecord>| v.into_iter().map(|k| k.id).collect::<Vec<_>>();
        assert_eq!(
            ids(s.list_keys(&KeyFilter::default()).unwrap()),
            ids(all.clone())
        );
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = s
                .list_keys_page(&KeyFilter::default(), after.as_ref(), 5)
                .unwrap();
            assert!(page.len() <= 5);
            after = page.last().map(KeysAfter::of);
            let done = page.len() < 5;
            paged.extend(page);
            if done {
                break;
            }
        }
        assert_eq!(ids(paged), ids(all.clone()));
        // A filter holds across pages.
        let pins = KeyFilter {
            key_type: Some(name("pin-unblock")),
            ..Default::default()
        };
        let first = s.list_keys_page(&pins, None, 2).unwrap();
        let rest = s
            .list_keys_page(&pins, first.last().map(KeysAfter::of).as_ref(), 10)
            .unwrap();
        assert_eq!((first.len(), rest.len()), (2, 2));
        assert!(rest.iter().all(|k| k.key_type.as_str() == "pin-unblock"));
    }

    #[test]
    fn second_live_child_for_same_parent_and_region_is_refused() {
        let s = store();
        let root = root_record("card-master");
        s.insert_key(&root).unwrap();
        let first = child_record(&root, "440000");
        s.insert_key(&first).unwrap();
        let err = s.insert_key(&child_record(&root, "440000")).unwrap_err();
        match &err {
            StoreError::AlreadyExists { parent, region: r } => {
                assert_eq!((parent, *r), (&root.id, region("440000")));
            }
            other => panic!("expected AlreadyExists, got {other}"),
        }
        assert!(err.to_string().contains("440000") && err.to_string().contains(root.id.as_str()));
        // Another region under the same parent is fine.
        s.insert_key(&child_record(&root, "450000")).unwrap();
    }

    #[test]
    fn destroyed_child_frees_the_slot() {
        let s = store();
        let root = root_record("card-master");
        s.insert_key(&root).unwrap();
        let mut first = child_record(&root, "440000");
        first.state = KeyState::Destroyed;
        s.insert_key(&first).unwrap();
        assert_eq!(s.find_child(&root.id, &region("440000")).unwrap(), None);
        let second = child_record(&root, "440000");
        s.insert_key(&second).unwrap();
        assert_eq!(
            s.find_child(&root.id, &region("440000")).unwrap(),
            Some(second)
        );
        assert_eq!(s.find_child(&root.id, &region("450000")).unwrap(), None);
    }

    #[test]
    fn duplicate_id_or_label_is_refused() {
        let s = store();
        let root = root_record("card-master");
        s.insert_key(&root).unwrap();
        assert!(matches!(
            s.insert_key(&root),
            Err(StoreError::Duplicate { .. })
        ));
        let mut same_label = root_record("card-master");
        same_label.ck_label = root.ck_label.clone();
        assert!(matches!(
            s.insert_key(&same_label),
            Err(StoreError::Duplicate { .. })
        ));
    }

    #[test]
    fn unknown_parent_is_refused() {
        let s = store();
        let ghost = root_record("card-master");
        let err = s.insert_key(&child_record(&ghost, "440000")).unwrap_err();
        assert!(matches!(err, StoreError::ParentNotFound { parent, .. } if parent == ghost.id));
    }

    #[test]
    fn inconsistent_records_are_refused_before_sql() {
        let s = store();
        let mut r = root_record("card-master");
        r.tier = Tier::Municipal;
        assert!(matches!(
            s.insert_key(&r),
            Err(StoreError::InvalidRecord { .. })
        ));
        let mut r = root_record("card-master");
        r.factor = Some(Factor::from_region(&Region::NATIONAL));
        assert!(matches!(
            s.insert_key(&r),
            Err(StoreError::InvalidRecord { .. })
        ));
        let mut r = root_record("card-master");
        r.version = 0;
        assert!(matches!(
            s.insert_key(&r),
            Err(StoreError::InvalidRecord { .. })
        ));
    }

    #[test]
    fn versions_count_per_type_and_region_from_one() {
        let s = store();
        let cm = name("card-master");
        assert_eq!(s.next_version(&cm, &Region::NATIONAL).unwrap(), 1);
        let mut v1 = root_record("card-master");
        v1.state = KeyState::Destroyed;
        s.insert_key(&v1).unwrap();
        assert_eq!(
            s.next_version(&cm, &Region::NATIONAL).unwrap(),
            2,
            "destroyed keys still count"
        );
        let mut v5 = root_record("card-master");
        v5.version = 5;
        s.insert_key(&v5).unwrap();
        assert_eq!(s.next_version(&cm, &Region::NATIONAL).unwrap(), 6);
        assert_eq!(
            s.next_version(&name("pin-reload"), &Region::NATIONAL)
                .unwrap(),
            1
        );
        assert_eq!(s.next_version(&cm, &region("440000")).unwrap(), 1);
    }

    #[test]
    fn set_state_moves_and_bumps_updated_at() {
        let s = store();
        let mut root = root_record("card-master");
        root.updated_at = "2000-01-01T00:00:00Z".into();
        s.insert_key(&root).unwrap();
        let after = s
            .set_state(&root.id, KeyState::Active, KeyState::Suspended)
            .unwrap();
        assert_eq!(after.state, KeyState::Suspended);
        assert_ne!(after.updated_at, root.updated_at);
        assert_eq!(after.created_at, root.created_at);
        assert_eq!(s.get_key(&root.id).unwrap(), Some(after));
    }

    #[test]
    fn set_state_refuses_illegal_transition_and_leaves_row() {
        let s = store();
        let mut root = root_record("card-master");
        root.state = KeyState::Retired;
        s.insert_key(&root).unwrap();
        let err = s
            .set_state(&root.id, KeyState::Retired, KeyState::Active)
            .unwrap_err();
        assert!(matches!(err, StoreError::Transition(_)));
        assert_eq!(
            err.to_string(),
            "key is retired; a retired key cannot become active (SP 800-57 allows: destroyed)"
        );
        assert_eq!(s.get_key(&root.id).unwrap(), Some(root));
    }

    #[test]
    fn set_state_with_stale_expectation_is_a_conflict() {
        let s = store();
        let root = root_record("card-master");
        s.insert_key(&root).unwrap();
        s.set_state(&root.id, KeyState::Active, KeyState::Suspended)
            .unwrap();
        let err = s
            .set_state(&root.id, KeyState::Active, KeyState::Retired)
            .unwrap_err();
        assert!(matches!(
            err,
            StoreError::Conflict {
                expected: KeyState::Active,
                actual: KeyState::Suspended,
                ..
            }
        ));
        assert_eq!(
            s.get_key(&root.id).unwrap().unwrap().state,
            KeyState::Suspended
        );
    }

    #[test]
    fn set_state_on_missing_key_is_not_found() {
        let s = store();
        let err = s
            .set_state(&KeyId::new_random(), KeyState::Active, KeyState::Retired)
            .unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }));
    }

    #[test]
    fn reviving_a_destroyed_child_into_a_taken_slot_cannot_happen() {
        // destroyed → anything is illegal, so the unique index can never be hit by set_state.
        assert!(KeyState::Destroyed.transition(KeyState::Active).is_err());
    }

    #[test]
    fn delete_removes_only_the_row_and_refuses_parents() {
        let s = store();
        let root = root_record("card-master");
        let child = child_record(&root, "440000");
        s.insert_key(&root).unwrap();
        s.insert_key(&child).unwrap();
        assert!(matches!(
            s.delete_key(&root.id),
            Err(StoreError::HasChildren { .. })
        ));
        s.delete_key(&child.id).unwrap();
        assert_eq!(s.get_key(&child.id).unwrap(), None);
        assert!(matches!(
            s.delete_key(&child.id),
            Err(StoreError::NotFound { .. })
        ));
        s.delete_key(&root.id).unwrap();
    }

    #[test]
    fn labels_skip_destroyed_keys() {
        let s = store();
        let live = root_record("card-master");
        let mut gone = root_record("pin-reload");
        gone.state = KeyState::Destroyed;
        s.insert_key(&live).unwrap();
        s.insert_key(&gone).unwrap();
        assert_eq!(s.labels().unwrap(), std::slice::from_ref(&live.ck_label));
        assert!(live.ck_label.starts_with("hkms/k-"));
    }

    #[test]
    fn corrupt_rows_yield_corrupt_not_panic() {
        let s = store();
        let root = root_record("card-master");
        s.insert_key(&root).unwrap();
        let cases = [
            "UPDATE keys SET kcv = 'ZZZZZZ'",
            "UPDATE keys SET region = '440101'",
            "UPDATE keys SET key_type = 'Card Master'",
            "UPDATE keys SET region = '440000'", // tier no longer matches region
        ];
        for sql in cases {
            s.lock()
                .unwrap()
                .execute_batch(&format!("SAVEPOINT t; {sql};"))
                .unwrap();
            let err = s.get_key(&root.id).unwrap_err();
            assert!(
                matches!(&err, StoreError::Corrupt { id, .. } if id == root.id.as_str()),
                "{sql}: {err}"
            );
            assert!(matches!(
                s.list_keys(&KeyFilter::default()),
                Err(StoreError::Corrupt { .. })
            ));
            s.lock()
                .unwrap()
                .execute_batch("ROLLBACK TO t; RELEASE t;")
                .unwrap();
        }
        assert_eq!(s.get_key(&root.id).unwrap(), Some(root));
    }

    #[test]
    fn corrupt_id_is_reported_as_stored() {
        let s = store();
        let root = root_record("card-master");
        s.insert_key(&root).unwrap();
        s.lock()
            .unwrap()
            .execute_cached("UPDATE keys SET id = 'bogus'", [])
            .unwrap();
        let err = s.list_keys(&KeyFilter::default()).unwrap_err();
        assert!(
            matches!(&err, StoreError::Corrupt { id, .. } if id == "bogus"),
            "{err}"
        );
    }

    #[test]
    fn concurrent_writers_share_one_store() {
        let s = std::sync::Arc::new(store());
        let root = root_record("card-master");
        s.insert_key(&root).unwrap();
        let handles: Vec<_> = ["110000", "120000", "130000", "440000"]
            .into_iter()
            .map(|r| {
                let s = s.clone();
                let child = child_record(&root, r);
                std::thread::spawn(move || s.insert_key(&child))
            })
            .collect();
        for h in handles {
            h.join().unwrap().unwrap();
        }
        assert_eq!(s.list_keys(&KeyFilter::default()).unwrap().len(), 5);
    }
}
