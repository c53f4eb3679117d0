//! Errors of the key registry. Each message says what happened and what to do.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// The database's own error, whichever backend raised it (SQLite's today). Boxed so that
/// [`StoreError`] names no driver type and a second backend can report its errors through the
/// same variants.
pub type DatabaseError = Box<dyn std::error::Error + Send + Sync + 'static>;

use crate::hierarchy::{HierarchyError, KeyId, KeyState, Region};

/// Everything that can go wrong reading or writing the key registry.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The folder for the database file could not be created.
    #[error(
        "cannot create the data folder {path}: {source}; create it by hand or give hkms write access to its parent"
    )]
    CreateFolder {
        /// The folder hkms tried to create.
        path: PathBuf,
        /// Why the system refused.
        source: std::io::Error,
    },
    /// The registry file or a journal beside it could not be made private.
    #[error(
        "cannot make {path} readable by hkms's user only (mode 0600): {source}; check who owns the data folder"
    )]
    PrivateFile {
        /// The file.
        path: PathBuf,
        /// Why the system refused.
        source: std::io::Error,
    },

    /// The database file could not be opened or configured.
    #[error(
        "cannot open the key registry at {path}: {source}; check that the data folder is writable by hkms \
         and that no other process holds the database"
    )]
    Open {
        /// The database file.
        path: PathBuf,
        /// The database's error.
        source: DatabaseError,
    },

    /// SQLite refused write-ahead logging, which hkms needs for crash safety.
    #[error(
        "the key registry at {path} cannot use write-ahead logging (journal mode is \"{mode}\"); \
         put the data folder on a local file system that supports WAL"
    )]
    WalUnavailable {
        /// The database file.
        path: PathBuf,
        /// The journal mode SQLite reported instead.
        mode: String,
    },

    /// A schema migration failed; the database stays at the previous version.
    #[error(
        "applying schema migration {version} failed: {source}; the database was left at version {}; \
         restore it from a backup or report this as a bug", version.saturating_sub(1)
    )]
    Migration {
        /// The schema version the migration would have produced.
        version: i64,
        /// The database's error.
        source: DatabaseError,
    },

    /// The database was written by a newer hkms.
    #[error(
        "database schema version {found} is newer than this hkms (knows {known}); upgrade hkms"
    )]
    SchemaTooNew {
        /// The `user_version` found in the file.
        found: i64,
        /// The newest version this build knows.
        known: i64,
    },

    /// The database carries a schema version hkms never writes.
    #[error(
        "database schema version {found} was not written by hkms; check that the data folder points at an hkms database"
    )]
    SchemaUnknown {
        /// The `user_version` found in the file.
        found: i64,
    },

    /// Any other failure of the database.
    #[error(
        "{context}: {source}; if the database is locked, another process may hold it; check the data folder"
    )]
    Database {
        /// What hkms was doing.
        context: &'static str,
        /// The database's error.
        source: DatabaseError,
    },

    /// A derived key for this parent and region already exists and is not destroyed.
    #[error(
        "a derived key for region {region} under parent {parent} already exists; use it, \
         or retire and destroy it before deriving again"
    )]
    AlreadyExists {
        /// The parent key.
        parent: KeyId,
        /// The region of the existing child.
        region: Region,
    },

    /// A key package is imported once: another request imported this one first.
    #[error("package {package_id} was imported already")]
    PackageImported {
        /// The package's id.
        package_id: String,
    },

    /// A client's request id is claimed by another request of the same caller, within the
    /// retention window: the change that came with it is not made.
    #[error(
        "request_id `{client_request_id}` is taken by request {request_id} of the same caller; \
         retry that request with it, or send a new request_id"
    )]
    RequestIdTaken {
        /// The client's request id.
        client_request_id: String,
        /// The node's id of the request that claimed it.
        request_id: String,
    },

    /// The id or the PKCS#11 label of a new record is already registered.
    #[error(
        "a key with id {id} or label \"{label}\" is already registered; create the key with a fresh id"
    )]
    Duplicate {
        /// The id of the new record.
        id: KeyId,
        /// Its PKCS#11 label.
        label: String,
    },

    /// The parent named by a new record is not in the registry.
    #[error(
        "key {id} names parent {parent}, which is not in the registry; register the parent first"
    )]
    ParentNotFound {
        /// The id of the new record.
        id: KeyId,
        /// The missing parent.
        parent: KeyId,
    },

    /// A record handed to the store breaks a registry rule.
    #[error("key record {id} is not valid: {what}; fix the caller")]
    InvalidRecord {
        /// The id of the record.
        id: KeyId,
        /// Which rule it breaks.
        what: String,
    },

    /// A witness's cosignature handed to the store cannot be stored as it is.
    #[error(
        "the cosignature of checkpoint {seq} by witness {witness} cannot be stored: {what}; \
         check what the witness sent (it is not stored)"
    )]
    InvalidCosignature {
        /// The witness's name, as the cosignature gives it.
        witness: String,
        /// The checkpoint it cosigns.
        seq: u64,
        /// What is wrong with it.
        what: String,
    },

    /// The key is not in the registry.
    #[error("key {id} is not in the registry; check the id (list keys to see which exist)")]
    NotFound {
        /// The id that was asked for.
        id: KeyId,
    },

    /// The key cannot be deleted because other keys name it as their parent.
    #[error("key {id} still has sub-keys in the registry; delete or keep the children first")]
    HasChildren {
        /// The key that was to be deleted.
        id: KeyId,
    },

    /// Compare-and-set failed: someone else changed the key's state first.
    #[error(
        "key {id} is {actual}, not {expected} as the request assumed; another request changed it first; \
         read the key again and retry"
    )]
    Conflict {
        /// The key.
        id: KeyId,
        /// The state the caller expected.
        expected: KeyState,
        /// The state found.
        actual: KeyState,
    },

    /// A row in the database does not hold what hkms wrote.
    #[error(
        "registry row for key {id} is corrupt: {what}; restore the database from a backup or repair the row by hand \
         (hkms will not guess)"
    )]
    Corrupt {
        /// The row's id as stored (may itself be malformed).
        id: String,
        /// What is wrong with it.
        what: String,
    },

    /// The commit that carried this write failed, so the write did not happen.
    #[error(
        "{context}: the registry commit failed ({reason}); nothing was changed; check the data \
         folder's disk space and permissions, then retry"
    )]
    CommitFailed {
        /// What was being written.
        context: &'static str,
        /// The database's error for the commit.
        reason: String,
    },

    /// A record would be longer than the log takes; the request is refused instead.
    #[error(
        "the {rpc} record would be {len} bytes, more than the ceremony log takes; the request \
         is refused; report this as a bug"
    )]
    RecordTooLong {
        /// The record's RPC.
        rpc: String,
        /// Its length.
        len: usize,
    },

    /// A write crashed inside hkms; its batch was rolled back.
    #[error("{context}: hkms failed inside the write and undid it; report this as a bug")]
    WritePanicked {
        /// What was being written.
        context: &'static str,
    },

    /// A thread panicked while holding the database lock.
    #[error("the key registry lock was poisoned by a thread that crashed; restart hkms")]
    Poisoned,

    /// The requested state change is not allowed by SP 800-57.
    #[error(transparent)]
    Transition(#[from] HierarchyError),
}

impl StoreError {
    /// Wraps a SQLite error with what hkms was doing.
    pub(crate) fn sqlite(context: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
        move |source| StoreError::Database {
            context,
            source: Box::new(source),
        }
    }

    /// Wraps a SQLite error met while opening or configuring the database at `path`.
    pub(crate) fn open(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + use<> {
        let path = path.to_path_buf();
        move |source| StoreError::Open {
            path: path.clone(),
            source: Box::new(source),
        }
    }

    /// Wraps a SQLite error met while applying the migration to schema `version`.
    pub(crate) fn migration(version: i64) -> impl FnOnce(rusqlite::Error) -> StoreError {
        move |source| StoreError::Migration {
            version,
            source: Box::new(source),
        }
    }
}
