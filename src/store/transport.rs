//! Transport key cards and the origin of imported keys, written with their audit records.

use rusqlite::{OptionalExtension, params};

use super::CachedSql;
use super::audit::append_in;
use super::keys::insert_in;
use super::{KeyRecord, SqliteStore, StoreError, TransportKeysAfter, TransportStore};
use crate::audit::{AuditDraft, AuditRecord};
use crate::hierarchy::Region;
use crate::transport::{TransportKey, TransportRole};

/// Where an imported key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOrigin {
    /// The issuing node.
    pub origin_node: String,
    /// The key's id there.
    pub origin_key_id: String,
    /// The package it came in (unique: a package is imported once).
    pub package_id: String,
    /// Its parent's KCV at the issuer.
    pub parent_kcv: String,
    /// The card whose transport key wrapped it.
    pub card_id: String,
}

/// The query for transport key rows, newest first, with a `WHERE` clause (or none): a literal,
/// so the request path builds no SQL text.
macro_rules! select_transport_keys {
    ($filter:literal) => {
        concat!(
            "SELECT card_id, region, role, kcv, ceremony_id, created_at FROM transport_keys ",
            $filter,
            " ORDER BY rowid DESC"
        )
    };
}

impl TransportStore for SqliteStore {
    fn insert_transport_key_audited(
        &self,
        row: &TransportKey,
        draft: &AuditDraft,
    ) -> Result<AuditRecord, StoreError> {
        self.write("recording a transport key", |tx| {
            tx.execute_cached(
                "INSERT INTO transport_keys (card_id, region, role, kcv, ceremony_id, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    row.card_id,
                    row.region.as_str(),
                    row.role.as_str(),
                    row.kcv,
                    row.ceremony_id,
                    row.created_at
                ],
            )
            .map_err(|e| match e.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::Corrupt {
                    id: row.card_id.clone(),
                    what: "this card id or ceremony is already recorded".into(),
                },
                _ => StoreError::sqlite("recording a transport key")(e),
            })?;
            append_in(tx, draft)
        })
    }

    fn transport_keys(&self) -> Result<Vec<TransportKey>, StoreError> {
        self.select_transport_keys(select_transport_keys!(""), [])
    }

    fn transport_keys_page(
        &self,
        after: Option<TransportKeysAfter>,
        limit: usize,
    ) -> Result<Vec<(TransportKeysAfter, TransportKey)>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let after = after.map(|a| a.recorded);
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached(
                "SELECT rowid, card_id, region, role, kcv, ceremony_id, created_at \
                 FROM transport_keys WHERE (?1 IS NULL OR rowid < ?1) \
                 ORDER BY rowid DESC LIMIT ?2",
            )
            .map_err(StoreError::sqlite("listing transport keys"))?;
        let rows = stmt
            .query_map(params![after, limit], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    (
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get(4)?,
                        r.get(5)?,
                        r.get(6)?,
                    ),
                ))
            })
            .map_err(StoreError::sqlite("listing transport keys"))?;
        rows.map(|r| {
            let (recorded, row) = r.map_err(StoreError::sqlite("listing transport keys"))?;
            Ok((TransportKeysAfter { recorded }, transport_key_of(row)?))
        })
        .collect()
    }

    fn transport_key(&self, card_id: &str) -> Result<Option<TransportKey>, StoreError> {
        Ok(self
            .select_transport_keys(select_transport_keys!("WHERE card_id = ?1"), [card_id])?
            .pop())
    }

    fn package_imported(&self, package_id: &str) -> Result<bool, StoreError> {
        let conn = self.lock()?;
        let found: Option<String> = conn
            .query_row_cached(
                "SELECT key_id FROM key_origins WHERE package_id = ?1",
                [package_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(StoreError::sqlite("reading key origins"))?;
        Ok(found.is_some())
    }

    fn key_origin(&self, key_id: &str) -> Result<Option<KeyOrigin>, StoreError> {
        let conn = self.lock()?;
        conn.query_row_cached(
            "SELECT origin_node, origin_key_id, package_id, parent_kcv, card_id \
             FROM key_origins WHERE key_id = ?1",
            [key_id],
            |r| {
                Ok(KeyOrigin {
                    origin_node: r.get(0)?,
                    origin_key_id: r.get(1)?,
                    package_id: r.get(2)?,
                    parent_kcv: r.get(3)?,
                    card_id: r.get(4)?,
                })
            },
        )
        .optional()
        .map_err(StoreError::sqlite("reading key origins"))
    }

    fn insert_imported_key_audited(
        &self,
        record: &KeyRecord,
        origin: &KeyOrigin,
        draft: &AuditDraft,
    ) -> Result<AuditRecord, StoreError> {
        self.write("registering an imported key", |tx| {
            insert_in(tx, record)?;
            tx.execute_cached(
                "INSERT INTO key_origins (key_id, origin_node, origin_key_id, package_id, parent_kcv, card_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    record.id.as_str(),
                    origin.origin_node,
                    origin.origin_key_id,
                    origin.package_id,
                    origin.parent_kcv,
                    origin.card_id
                ],
            )
            .map_err(|e| match super::keys::constraint(&e) {
                // Two imports of one package at once: the second finds the first's row.
                Some(rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
                    if e.to_string().contains("key_origins.package_id") =>
                {
                    StoreError::PackageImported {
                        package_id: origin.package_id.clone(),
                    }
                }
                _ => StoreError::sqlite("recording a key's origin")(e),
            })?;
            append_in(tx, draft)
        })
    }
}

impl SqliteStore {
    /// The transport key rows `sql` selects with `args`.
    fn select_transport_keys<P: rusqlite::Params>(
        &self,
        sql: &'static str,
        args: P,
    ) -> Result<Vec<TransportKey>, StoreError> {
        let conn = self.lock()?;
        let mut stmt = conn
            .prepare_cached(sql)
            .map_err(StoreError::sqlite("listing transport keys"))?;
        let rows = stmt
            .query_map(args, |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .map_err(StoreError::sqlite("listing transport keys"))?;
        rows.map(|r| transport_key_of(r.map_err(StoreError::sqlite("listing transport keys"))?))
            .collect()
    }
}

/// A transport key row's columns: card id, region, role, KCV, ceremony id, created at.
type TransportKeyColumns = (String, String, String, String, Option<String>, String);

/// The transport key a row holds; a row hkms did not write is [`StoreError::Corrupt`].
fn transport_key_of(
    (card_id, region, role, kcv, ceremony_id, created_at): TransportKeyColumns,
) -> Result<TransportKey, StoreError> {
    let corrupt = |what: String| StoreError::Corrupt {
        id: card_id.clone(),
        what,
    };
    Ok(TransportKey {
        region: Region::parse(&region).map_err(|e| corrupt(e.to_string()))?,
        role: TransportRole::parse(&role)
            .ok_or_else(|| corrupt(format!("transport key role `{role}`")))?,
        card_id,
        kcv,
        ceremony_id,
        created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditLog, KeyRegistry};

    fn card(card_id: &str, region: &str) -> TransportKey {
        TransportKey {
            card_id: card_id.into(),
            region: Region::parse(region).unwrap(),
            role: TransportRole::Issued,
            kcv: "ABCDEF".into(),
            ceremony_id: None,
            created_at: super::super::now_rfc3339(),
        }
    }

    #[test]
    fn a_transport_key_is_found_by_its_card_alone() {
        let store = SqliteStore::open_in_memory().unwrap();
        let (a, b) = (card("card-a", "440000"), card("card-b", "450000"));
        for row in [&a, &b] {
            store
                .insert_transport_key_audited(row, &AuditDraft::default())
                .unwrap();
        }
        assert_eq!(store.transport_key("card-a").unwrap(), Some(a.clone()));
        assert_eq!(store.transport_key("card-b").unwrap(), Some(b.clone()));
        assert_eq!(store.transport_key("card-c").unwrap(), None);
        // Not a pattern: SQL wildcards in an id match nothing.
        assert_eq!(store.transport_key("card-%").unwrap(), None);
        assert_eq!(store.transport_keys().unwrap(), vec![b.clone(), a.clone()]);
        // Pages: newest first too, each after the place of the last one.
        let first = store.transport_keys_page(None, 1).unwrap();
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].1, b);
        let rest = store.transport_keys_page(Some(first[0].0), 10).unwrap();
        assert_eq!(rest.into_iter().map(|(_, t)| t).collect::<Vec<_>>(), [a]);
        assert!(store.transport_keys_page(None, 0).unwrap().is_empty());
    }

    #[test]
    fn a_package_imported_twice_is_named_and_the_second_import_writes_nothing() {
        let store = SqliteStore::open_in_memory().unwrap();
        store
            .insert_transport_key_audited(&card("card-a", "440000"), &AuditDraft::default())
            .unwrap();
        let origin = KeyOrigin {
            origin_node: "ministry".into(),
            origin_key_id: "k-1".into(),
            package_id: "p-1".into(),
            parent_kcv: "ABCDEF".into(),
            card_id: "card-a".into(),
        };
        let first = crate::store::test_support::root_record("card-master");
        store
            .insert_imported_key_audited(&first, &origin, &AuditDraft::default())
            .unwrap();
        let head = store.audit_head().unwrap();
        // What a second request racing the first for the same package reaches.
        let second = crate::store::test_support::root_record("card-master");
        let err = store
            .insert_imported_key_audited(&second, &origin, &AuditDraft::default())
            .unwrap_err();
        assert!(
            matches!(&err, StoreError::PackageImported { package_id } if package_id == "p-1"),
            "{err}"
        );
        assert_eq!(store.get_key(&second.id).unwrap(), None);
        assert_eq!(store.audit_head().unwrap(), head);
        // The imported key's origin is found by its id; the refused one has none.
        assert_eq!(store.key_origin(first.id.as_str()).unwrap(), Some(origin));
        assert_eq!(store.key_origin(second.id.as_str()).unwrap(), None);
    }
}
