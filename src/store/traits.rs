//! What the rest of hkms asks of the registry, apart from the database that answers it.
//!
//! [`SqliteStore`](super::SqliteStore) is the first implementation. These traits are the seam
//! where a second one plugs in: PostgreSQL, so that several hkms servers of one node can share
//! one database. The node core is to hold its store as `Arc<dyn Store>`, so every trait here is
//! object safe (no generic method, no `Self` in a signature) and speaks only hkms's own types:
//! rows as [`KeyRecord`], [`CeremonyRow`], [`TransportKey`], log records as
//! [`AuditDraft`] in and [`AuditRecord`] out, errors as [`StoreError`], whose database errors
//! are boxed.
//!
//! # Why eight traits
//!
//! The node uses about thirty operations; one trait of thirty methods is a list nobody reads.
//! They are grouped by what they read and change: [`KeyRegistry`] (the keys), [`CeremonyStore`]
//! (ceremonies and their approvals), [`TransportStore`] (transport key cards and where imported
//! keys came from), [`AuditLog`] (the ceremony log, its checkpoints and their witnesses'
//! cosignatures), [`WitnessStore`] (what this node verified of other nodes' logs),
//! [`PolicyStore`] (the policy in force), [`RetryStore`] (clients' request ids and the answers
//! kept for their retries) and [`StoreHealth`] (the health probe and the commit counters).
//! [`Store`] is all eight, and every type that implements the eight is a `Store`, so code holds
//! one `dyn Store` and calls any of them on it.
//!
//! The split is by concern, not a menu: a backend implements all eight over **one** database,
//! because the `*_audited` calls of the first three write their change and the change's
//! ceremony-log record in one transaction, which only one database can give.
//!
//! # The contract
//!
//! What [`SqliteStore`](super::SqliteStore) does today, and what any other implementation must
//! do, since the node relies on it (docs/adr/0002-audit-record-in-the-same-transaction.md,
//! docs/adr/0003-group-commit.md):
//!
//! 1. **All or nothing.** Every call that writes is one transaction: it commits whole or
//!    changes nothing. An error means nothing was written, also when the commit itself failed
//!    ([`StoreError::CommitFailed`]).
//! 2. **Durable when it returns.** A write returns `Ok` only once its transaction is durably
//!    committed (SQLite: WAL with `synchronous=FULL`; PostgreSQL: a synchronous commit). The
//!    node answers a request only afterwards, so no answer names a change that a crash can
//!    take back. Concurrent writes may share one commit (group commit), provided no caller
//!    returns before the commit that carries its write. (Only in-memory test stores are not
//!    durable.)
//! 3. **A change and its record together.** An `*_audited` call writes the change and the
//!    ceremony-log record of the request that made it in the same transaction. When the change
//!    does not happen (a compare-and-set that finds another state, a broken constraint), no
//!    record is written either.
//! 4. **One hash chain.** A node's ceremony log is one chain however many processes write it:
//!    sequence numbers 1, 2, 3, ... without gaps or forks, each record's `prev` the
//!    [`line_hash`](crate::audit::record::line_hash) of the line before it (the genesis hash
//!    for the first). A record gets its number inside the transaction that commits it, under a
//!    lock every writer of the database takes before it reads the head (SQLite: the one write
//!    lock; PostgreSQL would need one too, such as a row lock on the head or an advisory lock),
//!    so a write that rolls back leaves no gap. A line longer than the log takes (64 KiB,
//!    `MAX_LINE`) is refused ([`StoreError::RecordTooLong`]) together with its change. The
//!    part that needs no database (numbering, `prev`, the line, its hash, the bound) is
//!    `audit::next_record`, for every backend to call.
//! 5. **Reads see committed data only.** A read that returns rows belonging together (a
//!    ceremony and its approvals) takes them from one snapshot.
//! 6. **Compare-and-set, never overwrite.** A state change names the state it expects; if
//!    another writer got there first, it fails ([`StoreError::Conflict`] for keys) or reports
//!    that it did not move (`false`/`None` for ceremonies).
//! 7. **Errors by meaning.** Each method returns the [`StoreError`] variants its documentation
//!    names for the cases it names, whichever database answered, because the node turns them
//!    into gRPC statuses. Anything else from the database is [`StoreError::Database`].
//! 8. **A client's request id with the record.** A draft that carries a
//!    [`RetryClaim`](crate::audit::RetryClaim) claims its caller's request id in the
//!    transaction that appends its record (alone or with a change); while another request of
//!    the same caller holds that id unexpired, the write fails whole
//!    ([`StoreError::RequestIdTaken`]), change included.
//! 9. **Schema.** Opening a store brings its schema up to date, forward only, and refuses a
//!    database written by a newer hkms ([`StoreError::SchemaTooNew`]); see `schema.rs`.
//!
//! Calls block the calling thread; the server runs them on blocking threads.

use crate::transport::TransportKey;

use super::{
    ApprovalRow, CeremoniesAfter, CeremonyRow, ClientRequest, CommitStats, CosignatureMark,
    CosignaturesAfter, KeyFilter, KeyOrigin, KeyRecord, KeysAfter, RetryAnswer, StoreError,
    StoredPolicy, TransportKeysAfter,
};
use crate::audit::consistency::Verified;
use crate::audit::witness::Cosignature;
use crate::audit::{AuditDraft, AuditRecord, Checkpoint};
use crate::hierarchy::{KeyId, KeyState, KeyTypeName, Region};

/// The registry of keys: metadata only, never key bytes (those stay in the HSM).
pub trait KeyRegistry: Send + Sync {
    /// Registers a new key without a ceremony-log record: for tests and tools that plant a
    /// row; the node registers keys with [`insert_key_audited`](Self::insert_key_audited).
    ///
    /// One durable transaction. Refuses a record that breaks a registry rule
    /// ([`StoreError::InvalidRecord`]), an id or PKCS#11 label already registered
    /// ([`StoreError::Duplicate`]), a second live (not destroyed) child of one parent for one
    /// region ([`StoreError::AlreadyExists`]) and a parent that is not registered
    /// ([`StoreError::ParentNotFound`]).
    fn insert_key(&self, record: &KeyRecord) -> Result<(), StoreError>;

    /// Registers a new key and appends `draft`'s record in the same durable transaction; returns
    /// the record as chained. Refuses what [`insert_key`](Self::insert_key) refuses, and then
    /// writes no record.
    fn insert_key_audited(
        &self,
        record: &KeyRecord,
        draft: &AuditDraft,
    ) -> Result<AuditRecord, StoreError>;

    /// The key with this id, if registered. A row that does not hold what hkms wrote is
    /// [`StoreError::Corrupt`], never a guess.
    fn get_key(&self, id: &KeyId) -> Result<Option<KeyRecord>, StoreError>;

    /// The keys matching `filter` (its `None` fields match all), oldest first by `created_at`,
    /// ties by id.
    fn list_keys(&self, filter: &KeyFilter) -> Result<Vec<KeyRecord>, StoreError>;

    /// One page of [`list_keys`](Self::list_keys): at most `limit` keys, those after `after`
    /// (from the first without it), in the same order. A backend reads only the page, not the
    /// whole list.
    fn list_keys_page(
        &self,
        filter: &KeyFilter,
        after: Option<&KeysAfter>,
        limit: usize,
    ) -> Result<Vec<KeyRecord>, StoreError>;

    /// The newest active key of `key_type` in `region`: the highest version, and among equal
    /// versions the one registered last (in registration order, not by `created_at`, which
    /// has one-second steps). The key a city's card services use; read at every card request,
    /// so it must be one indexed lookup.
    fn newest_active_key(
        &self,
        key_type: &KeyTypeName,
        region: &Region,
    ) -> Result<Option<KeyRecord>, StoreError>;

    /// The live (not destroyed) key derived from `parent` for `region`, if any; there is at
    /// most one.
    fn find_child(&self, parent: &KeyId, region: &Region) -> Result<Option<KeyRecord>, StoreError>;

    /// The version a new key of `key_type` in `region` should get: the highest registered so
    /// far plus one (destroyed keys count), starting at 1. A read that reserves nothing: two
    /// callers at once get the same number, so the node serialises the creation of keys (and
    /// a backend shared by several processes needs that serialisation across them).
    fn next_version(&self, key_type: &KeyTypeName, region: &Region) -> Result<u32, StoreError>;

    /// Moves a key from `expected` to `next` and appends `draft`'s record, in one durable
    /// transaction; returns the updated key (its `updated_at` set to now) and the record.
    ///
    /// Refuses a move SP 800-57 does not allow ([`StoreError::Transition`]), a key that is not
    /// registered ([`StoreError::NotFound`]) and a key no longer in `expected`
    /// ([`StoreError::Conflict`], naming the state found); a refused move writes no record.
    fn set_state_audited(
        &self,
        id: &KeyId,
        expected: KeyState,
        next: KeyState,
        draft: &AuditDraft,
    ) -> Result<(KeyRecord, AuditRecord), StoreError>;

    /// Removes a key's row, in one durable transaction. Only to undo a registration whose HSM
    /// step failed (and in tests); a key that existed is destroyed with
    /// [`set_state_audited`](Self::set_state_audited) and keeps its row. Refuses a key that
    /// other keys name as parent ([`StoreError::HasChildren`]) and one that is not registered
    /// ([`StoreError::NotFound`]).
    fn delete_key(&self, id: &KeyId) -> Result<(), StoreError>;

    /// The PKCS#11 labels of every key that is not destroyed, sorted; the orphan check compares
    /// them with the objects on the token.
    fn labels(&self) -> Result<Vec<String>, StoreError>;
}

/// Ceremonies (operations that wait for a quorum of approvals) and their approvals, as stored;
/// the node gives the states and parameters their meaning.
pub trait CeremonyStore: Send + Sync {
    /// Records a new ceremony with the approvals it carries (the opener's, when it counts) and
    /// appends `draft`'s record, in one durable transaction; returns the record as chained.
    fn insert_ceremony_audited(
        &self,
        ceremony: &CeremonyRow,
        draft: &AuditDraft,
    ) -> Result<AuditRecord, StoreError>;

    /// A ceremony and its approvals (in order of approval time, then approver), read from one
    /// snapshot; `None` if there is no such ceremony.
    fn get_ceremony(&self, id: &str) -> Result<Option<CeremonyRow>, StoreError>;

    /// At most `limit` ceremonies, or only those in `state`, after `after` (from the first
    /// without it), newest first by `created_at` (ties by id); each with its approvals.
    fn list_ceremonies_page(
        &self,
        state: Option<&str>,
        after: Option<&CeremoniesAfter>,
        limit: usize,
    ) -> Result<Vec<CeremonyRow>, StoreError>;

    /// Adds `approval` and appends `draft`'s record, in one durable transaction. Returns
    /// whether the approval is new (`false` when this approver, or this person of the roster,
    /// had approved already: each counts once, and the record is still written) and the
    /// record.
    fn approve_ceremony_audited(
        &self,
        id: &str,
        approval: &ApprovalRow,
        draft: &AuditDraft,
    ) -> Result<(bool, AuditRecord), StoreError>;

    /// Moves a ceremony from `from` to `to` with `result` (compare-and-set) and appends
    /// `draft`'s record, in one durable transaction. `None`, with nothing changed and no
    /// record, when the ceremony was not in `from`.
    fn set_ceremony_state_audited(
        &self,
        id: &str,
        from: &str,
        to: &str,
        result: &str,
        draft: &AuditDraft,
    ) -> Result<Option<AuditRecord>, StoreError>;

    /// Moves a ceremony from `from` to `to` with `result` (compare-and-set), in one durable
    /// transaction without a record (the claim, the outcome, expiry: ADR 0002 says which
    /// moves). `false`, with nothing changed, when the ceremony was not in `from`.
    fn set_ceremony_state(
        &self,
        id: &str,
        from: &str,
        to: &str,
        result: &str,
    ) -> Result<bool, StoreError>;
}

/// Transport keys (issued onto or loaded from cards) and the origin of keys imported with them.
pub trait TransportStore: Send + Sync {
    /// Records a transport key and appends `draft`'s record, in one durable transaction;
    /// returns the record as chained. A row the registry does not take (a card id or a ceremony
    /// already recorded) is refused as [`StoreError::Corrupt`], naming the card, and then no
    /// record is written.
    fn insert_transport_key_audited(
        &self,
        row: &TransportKey,
        draft: &AuditDraft,
    ) -> Result<AuditRecord, StoreError>;

    /// Every transport key, newest (last recorded) first.
    fn transport_keys(&self) -> Result<Vec<TransportKey>, StoreError>;

    /// One page of [`transport_keys`](Self::transport_keys): at most `limit`, those after
    /// `after` (from the newest without it), each with its place in the order.
    fn transport_keys_page(
        &self,
        after: Option<TransportKeysAfter>,
        limit: usize,
    ) -> Result<Vec<(TransportKeysAfter, TransportKey)>, StoreError>;

    /// The transport key of one card, by exact id (no pattern), if recorded.
    fn transport_key(&self, card_id: &str) -> Result<Option<TransportKey>, StoreError>;

    /// Whether the package with this id was imported already.
    fn package_imported(&self, package_id: &str) -> Result<bool, StoreError>;

    /// Where an imported key came from (`None` for a key made on this node).
    fn key_origin(&self, key_id: &str) -> Result<Option<KeyOrigin>, StoreError>;

    /// Registers an imported key, where it came from and `draft`'s record, in one durable
    /// transaction; returns the record as chained. A package is imported once: a second import
    /// of the same package, even one racing the first, is [`StoreError::PackageImported`] and
    /// writes nothing. Refuses the key as [`insert_key`](KeyRegistry::insert_key) would.
    fn insert_imported_key_audited(
        &self,
        record: &KeyRecord,
        origin: &KeyOrigin,
        draft: &AuditDraft,
    ) -> Result<AuditRecord, StoreError>;
}

/// The ceremony log: one hash chain of records, sealed now and then by signed checkpoints, and
/// the cosignatures of those checkpoints that witnesses sent back. The `*_audited` calls of the
/// other traits append to the same chain.
pub trait AuditLog: Send + Sync {
    /// Appends `draft`'s record alone (for a request that changed nothing), chained to the last
    /// one, in its own durable transaction; returns the record.
    fn append_audit(&self, draft: &AuditDraft) -> Result<AuditRecord, StoreError>;

    /// Appends several records in one durable transaction, with consecutive numbers: all of
    /// them or none. Nothing is written for an empty slice.
    fn append_audits(&self, drafts: &[AuditDraft]) -> Result<Vec<AuditRecord>, StoreError>;

    /// The last record's sequence number and line hash; `None` for an empty log.
    fn audit_head(&self) -> Result<Option<(u64, String)>, StoreError>;

    /// The record lines with `from <= seq <= to`, in order, at most `limit` of them, each with
    /// its sequence number; exactly as stored, since the hashes are over these bytes.
    fn audit_lines(
        &self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, StoreError>;

    /// The record lines with `from <= seq <= to` whose text contains any of `needles` (empty
    /// ones are ignored; none at all finds nothing), in order, exactly as stored. For an
    /// auditor's search: the caller reads the lines to check where each needle stands, and
    /// keeps each range small, since this reads every line in it.
    fn audit_lines_containing(
        &self,
        from: u64,
        to: u64,
        needles: &[&str],
    ) -> Result<Vec<(u64, String)>, StoreError>;

    /// Stores a signed checkpoint, in one durable transaction. Never over an earlier one: a
    /// second checkpoint at the same sequence number, or one at a number the log does not
    /// hold, is refused.
    fn insert_checkpoint(&self, checkpoint: &Checkpoint) -> Result<(), StoreError>;

    /// The checkpoint with the highest sequence number, if any.
    fn last_checkpoint(&self) -> Result<Option<Checkpoint>, StoreError>;

    /// Every checkpoint, by sequence number.
    fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError>;

    /// At most `limit` checkpoints with `after < seq <= upto`, by sequence number.
    fn checkpoints_page(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Checkpoint>, StoreError>;

    /// Stores a witness's cosignature of one of this node's checkpoints, in one durable
    /// transaction, for exports to carry. One per witness key and sequence number: a retry, or
    /// a second cosignature of the same checkpoint by the same key, is not stored and returns
    /// `false` (the first stands); a new one returns `true`. The store does not check the
    /// signature, nor that the checkpoint is this node's: the caller does, before storing.
    /// Refuses a cosignature whose witness key is not hex or whose `seq` is 0
    /// ([`StoreError::InvalidCosignature`]). A cosignature stays when the checkpoint it covers
    /// is gone from the log.
    fn insert_cosignature(&self, cosignature: &Cosignature) -> Result<bool, StoreError>;

    /// Every stored cosignature, by sequence number, then witness name.
    fn cosignatures(&self) -> Result<Vec<Cosignature>, StoreError>;

    /// A mark of the cosignatures stored so far, for
    /// [`cosignatures_page`](Self::cosignatures_page) to list only those.
    fn cosignature_mark(&self) -> Result<CosignatureMark, StoreError>;

    /// At most `limit` of the cosignatures stored up to `upto`, after `after` (from the first
    /// without it), by sequence number, then witness name, then witness key; each with its
    /// place in that order.
    fn cosignatures_page(
        &self,
        after: Option<&CosignaturesAfter>,
        upto: CosignatureMark,
        limit: usize,
    ) -> Result<Vec<(CosignaturesAfter, Cosignature)>, StoreError>;

    /// The highest sequence number cosigned by the witness whose key has this SHA-256 (of its
    /// SPKI DER, 64 hex digits, either case); `None` when it cosigned none.
    fn last_cosigned_seq(&self, witness_key_sha256: &str) -> Result<Option<u64>, StoreError>;
}

/// What this node, as a witness of other nodes' logs, has verified of each: kept with the
/// records of the requests that advanced it, so a restart forgets nothing it cosigned.
pub trait WitnessStore: Send + Sync {
    /// How far the log of the node named `node` has been verified; `None` before first contact.
    fn witnessed(&self, node: &str) -> Result<Option<Verified>, StoreError>;

    /// Stores how far `node`'s log is verified, with the record of the request that got it
    /// there, in one durable transaction.
    fn set_witnessed_audited(
        &self,
        node: &str,
        state: &Verified,
        draft: &AuditDraft,
    ) -> Result<AuditRecord, StoreError>;
}

/// The policy in force, kept so that a restart decides by it and compares the file with it
/// (the dual-control floor): one policy at a time.
pub trait PolicyStore: Send + Sync {
    /// The policy in force, if one was stored.
    fn policy_in_force(&self) -> Result<Option<StoredPolicy>, StoreError>;

    /// Stores `policy` as the one in force, in one durable transaction, without a record: for
    /// the first policy a registry keeps, and for a policy whose record is durable already (a
    /// `reload-policy` ceremony's).
    fn put_policy(&self, policy: &StoredPolicy) -> Result<(), StoreError>;

    /// Stores `policy` as the one in force and appends `draft`'s record (the reload that puts
    /// it in force), in one durable transaction; returns the record as chained.
    fn put_policy_audited(
        &self,
        policy: &StoredPolicy,
        draft: &AuditDraft,
    ) -> Result<AuditRecord, StoreError>;
}

/// Clients' request ids (docs/api.md, "Retries and request ids"). A request claims one with
/// its record (contract point 8); these read what it did and keep its answer.
pub trait RetryStore: Send + Sync {
    /// The claim of `actor`'s `client_request_id`, unless it expired by `now` (unix seconds).
    fn client_request(
        &self,
        actor: &str,
        client_request_id: &str,
        now: u64,
    ) -> Result<Option<ClientRequest>, StoreError>;

    /// Keeps each answer whose request claimed its caller's request id and has no answer
    /// kept yet (the others are left: those requests did not act, so their retries act), all
    /// in one durable transaction; returns how many were kept.
    fn keep_answers(&self, answers: &[RetryAnswer]) -> Result<usize, StoreError>;

    /// Removes the claims expired by `now` (unix seconds), in one durable transaction;
    /// returns how many.
    fn forget_client_requests(&self, now: u64) -> Result<usize, StoreError>;
}

/// What the health service and the metrics read about the store itself.
pub trait StoreHealth: Send + Sync {
    /// Checks that the database answers a trivial query, for health probes.
    fn ping(&self) -> Result<(), StoreError>;

    /// Counters of durable commits and the writes they carried, for metrics. A backend that
    /// does not batch writes counts one commit per write.
    fn commit_stats(&self) -> &CommitStats;
}

/// The whole registry: keys, ceremonies, transport keys, the ceremony log, the policy in
/// force, clients' request ids and health, over one database. Implemented for every type that
/// implements the eight parts; hold it as `Arc<dyn Store>`.
pub trait Store:
    Send
    + Sync
    + KeyRegistry
    + CeremonyStore
    + TransportStore
    + AuditLog
    + WitnessStore
    + PolicyStore
    + RetryStore
    + StoreHealth
{
}

impl<T> Store for T where
    T: KeyRegistry
        + CeremonyStore
        + TransportStore
        + AuditLog
        + WitnessStore
        + PolicyStore
        + RetryStore
        + StoreHealth
{
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    // Only the trait object's own name: the methods below resolve through `dyn Store`, without
    // the six parts in scope, as they will in the node.
    use super::Store;
    use crate::audit::AuditDraft;
    use crate::audit::record::{GENESIS, line_hash};
    use crate::hierarchy::KeyFilter;
    use crate::store::SqliteStore;
    use crate::store::test_support::root_record;

    fn draft(rpc: &str) -> AuditDraft {
        AuditDraft {
            rpc: rpc.into(),
            ..AuditDraft::default()
        }
    }

    /// Uses the store only as `dyn Store`: no method of the concrete type.
    fn use_through_the_trait(store: &dyn Store) {
        store.ping().unwrap();
        assert_eq!(store.audit_head().unwrap(), None);

        let key = root_record("card-master");
        let record = store
            .insert_key_audited(&key, &draft("GenerateKey"))
            .unwrap();
        assert_eq!((record.seq, record.prev.as_str()), (1, GENESIS));
        assert_eq!(store.get_key(&key.id).unwrap(), Some(key.clone()));
        assert_eq!(
            store.list_keys(&KeyFilter::default()).unwrap(),
            std::slice::from_ref(&key)
        );
        assert_eq!(
            store.newest_active_key(&key.key_type, &key.region).unwrap(),
            Some(key.clone())
        );

        let more = store
            .append_audits(&[draft("ListKeys"), draft("GetKey")])
            .unwrap();
        assert_eq!(more.iter().map(|r| r.seq).collect::<Vec<_>>(), [2, 3]);

        let lines = store.audit_lines(1, u64::MAX, 10).unwrap();
        assert_eq!(lines.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(
            lines[0].1.contains("\"rpc\":\"GenerateKey\""),
            "{}",
            lines[0].1
        );
        for (next, before) in more.iter().zip(&lines) {
            assert_eq!(next.prev, line_hash(&before.1), "one chain");
        }
        assert_eq!(
            store.audit_head().unwrap(),
            Some((3, line_hash(&lines[2].1)))
        );
        // Two writing calls, one transaction each.
        assert_eq!(store.commit_stats().commits(), 2);
    }

    #[test]
    fn an_sqlite_store_serves_the_node_as_dyn_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/registry.sqlite");
        let shared: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
        use_through_the_trait(shared.as_ref());
        drop(shared);

        // What it wrote is on disk: a second opening reads the same log.
        let reopened: Box<dyn Store> = Box::new(SqliteStore::open(&path).unwrap());
        assert_eq!(reopened.audit_head().unwrap().map(|(seq, _)| seq), Some(3));
    }
}
