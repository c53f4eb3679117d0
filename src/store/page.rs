//! Where the next page of a listing starts: the sort key of the last item of the page before,
//! in the listing's order. A page is read as "the next `limit` rows after this key", with the
//! limit in the query, so that serving one page never reads a long list whole, and the pages
//! of a list neither repeat nor skip an item that was there all along.
//!
//! Each listing's order is fixed (and unique, so a key names one place):
//! - keys: oldest first, by `created_at`, then id ([`KeysAfter`]);
//! - ceremonies: newest first, by `created_at` descending, then id ([`CeremoniesAfter`]);
//! - transport keys: newest first, in the order they were recorded ([`TransportKeysAfter`]);
//! - checkpoints: by sequence number (a plain `u64`);
//! - cosignatures: by sequence number, then witness, then witness key
//!   ([`CosignaturesAfter`]), only those stored up to a [`CosignatureMark`].
//!
//! The keys are plain values (serde) so that the API can carry them in its page tokens; what
//! a key holds is only ever bound as a query parameter.

use serde::{Deserialize, Serialize};

use crate::hierarchy::KeyRecord;

use super::CeremonyRow;

/// After this key, in the order (created_at, id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeysAfter {
    /// The last key's `created_at`, as stored.
    pub created_at: String,
    /// The last key's id.
    pub id: String,
}

impl KeysAfter {
    /// The place of `key` in the order.
    pub fn of(key: &KeyRecord) -> KeysAfter {
        KeysAfter {
            created_at: key.created_at.clone(),
            id: key.id.to_string(),
        }
    }
}

/// After this ceremony, in the order (created_at descending, id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CeremoniesAfter {
    /// The last ceremony's `created_at`, as stored.
    pub created_at: String,
    /// The last ceremony's id.
    pub id: String,
}

impl CeremoniesAfter {
    /// The place of `row` in the order.
    pub fn of(row: &CeremonyRow) -> CeremoniesAfter {
        CeremoniesAfter {
            created_at: row.created_at.clone(),
            id: row.id.clone(),
        }
    }
}

/// After this transport key, newest first: its place in the order rows were recorded (rows are
/// never deleted, and the registry is never vacuumed, so the place is stable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportKeysAfter {
    /// The last transport key's place.
    pub recorded: i64,
}

/// After this cosignature, in the order (seq, witness, witness key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CosignaturesAfter {
    /// The checkpoint it cosigns.
    pub seq: u64,
    /// The witness's name.
    pub witness: String,
    /// The SHA-256 of the witness's key, as stored.
    pub witness_key_sha256: String,
}

/// The cosignatures stored up to some moment: those whose place in the order of storing is at
/// most this. A listing that takes pages over time lists only what was there when it began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CosignatureMark(pub i64);
