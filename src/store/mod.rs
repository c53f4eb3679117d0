//! The key registry: metadata about every key this node knows, its ceremonies, transport keys
//! and ceremony log.
//!
//! The store keeps key **metadata only** — never key bytes (docs/design.md §6, §9). What the rest of
//! hkms asks of it is the [`Store`] trait and its parts ([`KeyRegistry`], [`CeremonyStore`],
//! [`TransportStore`], [`AuditLog`], [`PolicyStore`], [`RetryStore`], [`StoreHealth`]; `traits.rs` says why
//! eight and what every implementation must guarantee). [`SqliteStore`] is the implementation: one SQLite file in
//! the node's data folder, opened in WAL mode with `synchronous=FULL`, so a committed record
//! survives a crash. One connection writes, with group commit (`group_commit.rs`); a second
//! one reads what is committed. SQLite's busy timeout (5 s) covers other processes.

mod audit;
mod ceremony;
mod cosignatures;
mod error;
mod group_commit;
mod keys;
mod migrations;
mod page;
mod policy;
mod record;
mod retry;
mod schema;
#[cfg(test)]
mod test_support;
mod traits;
mod transport;
mod witness;

use std::fmt;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use rusqlite::Connection;
use rusqlite::config::DbConfig;

// The key's record is a domain value; the store's modules take it from here.
use crate::hierarchy::{KeyFilter, KeyRecord};
pub use ceremony::{ApprovalRow, CeremonyRow};
pub use error::StoreError;
pub use group_commit::CommitStats;
use group_commit::GroupCommit;
pub use page::{
    CeremoniesAfter, CosignatureMark, CosignaturesAfter, KeysAfter, TransportKeysAfter,
};
pub use policy::StoredPolicy;
pub use retry::{ClientRequest, KeptAnswer, RetryAnswer};
pub use traits::{
    AuditLog, CeremonyStore, KeyRegistry, PolicyStore, RetryStore, Store, StoreHealth,
    TransportStore, WitnessStore,
};
pub use transport::KeyOrigin;

/// How long a statement waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The registry in one SQLite file: the [`Store`] hkms runs on today. `Send + Sync`: share it
/// between tasks behind an `Arc`.
pub struct SqliteStore {
    writer: GroupCommit,
    /// Reads only committed data, beside the writer; `None` for in-memory stores, which
    /// read through the writer's connection.
    reader: Option<Mutex<Connection>>,
    path: PathBuf,
}

/// `path` with `suffix` added to its file name (`registry.sqlite-wal`).
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

impl SqliteStore {
    /// Opens (or creates) the registry at `path`, creating its folder if needed, and brings
    /// the schema up to date. Refuses a database written by a newer hkms.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            crate::durable::private_dir(folder).map_err(|source| StoreError::CreateFolder {
                path: folder.to_path_buf(),
                source,
            })?;
        }
        // The registry and the journals SQLite makes beside it (same mode) are the owner's
        // alone, whatever the umask.
        for file in [
            path.to_path_buf(),
            sibling(path, "-wal"),
            sibling(path, "-shm"),
        ] {
            if file == path || file.exists() {
                crate::durable::private_file(&file).map_err(|source| StoreError::PrivateFile {
                    path: file.clone(),
                    source,
                })?;
            }
        }
        let open_err = StoreError::open(path);
        let conn = Connection::open(path).map_err(&open_err)?;
        let mut store = SqliteStore::setup(conn, path.to_path_buf(), true)?;
        let reader = Connection::open(path).map_err(&open_err)?;
        configure(&reader, path)?;
        reader
            .pragma_update(None, "query_only", "ON")
            .map_err(&open_err)?;
        store.reader = Some(Mutex::new(reader));
        Ok(store)
    }

    /// A private in-memory registry, for tests.
    pub fn open_in_memory() -> Result<SqliteStore, StoreError> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(StoreError::open(&path))?;
        SqliteStore::setup(conn, path, false)
    }

    fn setup(mut conn: Connection, path: PathBuf, wal: bool) -> Result<SqliteStore, StoreError> {
        let open_err = StoreError::open(&path);
        conn.busy_timeout(BUSY_TIMEOUT).map_err(&open_err)?;
        if wal {
            let mode: String = conn
                .query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))
                .map_err(&open_err)?;
            if !mode.eq_ignore_ascii_case("wal") {
                return Err(StoreError::WalUnavailable { path, mode });
            }
        }
        configure(&conn, &path)?;
        migrations::apply(&mut conn)?;
        Ok(SqliteStore {
            writer: GroupCommit::new(conn),
            reader: None,
            path,
        })
    }

    /// The file this store was opened from (`:memory:` for in-memory stores).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A connection for reading committed data, or `Poisoned` if a thread panicked while
    /// holding it.
    fn lock(&self) -> Result<ReadConnection<'_>, StoreError> {
        match &self.reader {
            Some(reader) => reader
                .lock()
                .map(ReadConnection::Reader)
                .map_err(|_| StoreError::Poisoned),
            None => self.writer.lock().map(ReadConnection::Writer),
        }
    }

    /// Runs several reads on one snapshot of committed data (a read transaction).
    fn read_snapshot<T>(
        &self,
        context: &'static str,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.lock()?;
        if !conn.is_autocommit() {
            // An in-memory store's open batch: its connection is already in a transaction.
            return f(&conn);
        }
        let tx = conn
            .unchecked_transaction()
            .map_err(StoreError::sqlite(context))?;
        let out = f(&tx);
        // Nothing was written; ending the read transaction either way releases the snapshot.
        let _ = tx.rollback();
        out
    }

    /// Runs `f` atomically and returns once it is durable: a change and its audit record
    /// land together or not at all. Concurrent writes share one commit (group commit).
    pub(crate) fn write<T>(
        &self,
        context: &'static str,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.writer.write(context, f)
    }
}

impl StoreHealth for SqliteStore {
    fn ping(&self) -> Result<(), StoreError> {
        self.lock()?
            .query_row("SELECT 1", [], |_| Ok(()))
            .map_err(StoreError::sqlite("pinging the key registry"))
    }

    fn commit_stats(&self) -> &CommitStats {
        self.writer.stats()
    }
}

/// Statements each connection keeps prepared: every statement the store runs fits.
const STATEMENT_CACHE: usize = 64;

/// Statements run through the connection's cache of prepared statements. On the request
/// path, parsing and planning a statement costs more than running it.
trait CachedSql {
    fn query_row_cached<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>;

    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
}

impl CachedSql for Connection {
    fn query_row_cached<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    fn execute_cached<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }
}

/// Per-connection settings: busy timeout, durable commits, foreign keys, statement cache.
fn configure(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let open_err = StoreError::open(path);
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // A plan that does not depend on bound values. Without it SQLite prepares a statement
    // again at every new value of a parameter it compared with a partial index's condition
    // (`state = ?` against `keys_one_live_child`), which defeats the statement cache.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map_err(&open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(&open_err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(&open_err)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(&open_err)
}

/// A locked connection for reads: the reader, or the writer's own for in-memory stores.
enum ReadConnection<'a> {
    Reader(MutexGuard<'a, Connection>),
    Writer(MutexGuard<'a, group_commit::State>),
}

impl Deref for ReadConnection<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match self {
            ReadConnection::Reader(conn) => conn,
            ReadConnection::Writer(state) => &state.conn,
        }
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The current time as RFC 3339 UTC to the second (`2025-01-31T08:00:00Z`), as stored in rows.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn store_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SqliteStore>();
    }

    #[test]
    fn ping_answers() {
        SqliteStore::open_in_memory().unwrap().ping().unwrap();
    }

    #[test]
    fn open_creates_folder_and_uses_wal_full_and_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/registry.db");
        let store = SqliteStore::open(&path).unwrap();
        assert!(path.exists());
        assert_eq!(store.path(), path);
        let conn = store.lock().unwrap();
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        let sync: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        let fk: i64 = conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!((mode.as_str(), sync, fk), ("wal", 2, 1));
    }

    #[test]
    fn the_registry_its_journals_and_its_folder_are_the_owners_alone() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("data");
        let path = folder.join("registry.sqlite");
        let store = SqliteStore::open(&path).unwrap();
        store.insert_key(&root_record("card-master")).unwrap();
        assert_eq!(mode(&folder), 0o700);
        for file in [path.clone(), sibling(&path, "-wal"), sibling(&path, "-shm")] {
            assert!(file.exists(), "{}", file.display());
            assert_eq!(mode(&file), 0o600, "{}", file.display());
        }
        drop(store);
        // Files and a folder left readable by an older version are tightened on open.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&folder, std::fs::Permissions::from_mode(0o755)).unwrap();
        let store = SqliteStore::open(&path).unwrap();
        store.insert_key(&root_record("pin-unblock")).unwrap();
        assert_eq!(mode(&folder), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&sibling(&path, "-wal")), 0o600);
    }

    #[test]
    fn reopen_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        let root = root_record("card-master");
        {
            let store = SqliteStore::open(&path).unwrap();
            store.insert_key(&root).unwrap();
        }
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.get_key(&root.id).unwrap(), Some(root));
    }

    #[test]
    fn schema_too_new_is_refused_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.db");
        drop(SqliteStore::open(&path).unwrap());
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 70)
            .unwrap();
        let err = SqliteStore::open(&path).unwrap_err();
        assert!(matches!(
            err,
            StoreError::SchemaTooNew { found: 70, known } if known == migrations::LATEST
        ));
        assert!(err.to_string().contains("upgrade hkms"), "{err}");
    }

    #[test]
    fn open_fails_clearly_when_folder_cannot_be_made() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"x").unwrap();
        let err = SqliteStore::open(&file.join("registry.db")).unwrap_err();
        assert!(matches!(err, StoreError::CreateFolder { .. }), "{err}");
    }

    #[test]
    fn poisoned_lock_is_an_error_not_a_panic() {
        let store = std::sync::Arc::new(SqliteStore::open_in_memory().unwrap());
        let clone = store.clone();
        let _ = std::thread::spawn(move || {
            let _guard = clone.writer.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(matches!(store.ping(), Err(StoreError::Poisoned)));
    }

    #[test]
    fn now_is_rfc3339_utc_seconds() {
        let now = now_rfc3339();
        assert_eq!(now.len(), 20, "{now}");
        assert!(now.ends_with('Z'));
        assert!(humantime::parse_rfc3339(&now).is_ok());
    }
}
