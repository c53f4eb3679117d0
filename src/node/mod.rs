//! One hkms node: a small core (identity, token, registry, policy in force, ceremony log) and
//! one use-case type per feature that borrows it. Everything here is synchronous; the gRPC
//! layer runs it on blocking threads.
//!
//! ```text
//! Node ── core ───────────── Core: name/tier/region, token, registry, policy, log
//!      ├─ keys()        → Keys         generate, derive, read, list, change state, orphans
//!      ├─ ceremonies()  → Ceremonies   dual control; runs guarded operations through Keys
//!      ├─ transport()   → Transport    transport key cards, key packages (uses Ceremonies)
//!      ├─ cards()       → Cards        PIN commands at the window, card personalisation
//!      ├─ audit()       → Audit        the log for auditors
//!      ├─ policies()    → Policies     the policy in force, reloads, TLS reload records
//!      ├─ retries()     → Retries      clients' request ids: retries answered, not acted twice
//!      └─ witness()     → Witness      checks and cosigns other nodes' checkpoints
//! ```

mod audit;
mod cards;
mod ceremonies;
mod class;
mod core;
mod error;
mod exclusive;
pub mod input;
mod keys;
mod limits;
mod orphans;
mod paging;
mod policies;
mod reason;
mod request;
mod retries;
mod transport;
mod witness;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use audit::{Audit, CheckpointsAfter, IdNumberRecords, LogItem, LogPlace, SealedLog};
pub use cards::{CardAnswer, CardPackages, CardRequest, Cards};
pub use ceremonies::{Ceremonies, Ceremony, CeremonyAction, CeremonyId, CeremonyState};
pub use class::ErrorClass;
pub use core::{Core, SIGNING_LABEL, Signing};
pub use error::{Failure, InField, NodeError};
pub use exclusive::ExclusiveUse;
pub use keys::Keys;
pub use limits::{CardLimit, CardLimiter, LimitRefusal, MAX_TRACKED_CALLERS, MAX_TRACKED_CARDS};
pub use orphans::{MissingTransport, OrphanReport, reconcile};
pub use paging::{Page, PageAsk};
pub use policies::Policies;
pub use reason::Reason;
pub use request::{Caller, Request};
pub use retries::{
    CLIENT_REQUEST_ID, ClientRequestId, REPLAY_OF, Retries, Retry, RetryTurn, TAKEN_BY,
};
pub use transport::{CardAccess, Transport};
pub use witness::{MAX_WITNESS_LINES, Witness, Witnessed, witnesses};

use crate::config::NodeConfig;
use crate::policy::RevokedCerts;

/// A running node: its core, and what each feature keeps of its own.
pub struct Node {
    core: Core,
    /// Serialises generation so that two keys of one type never get the same version number.
    generating: Mutex<()>,
    /// Key components entered so far, per ceremony: only in memory, zeroized on drop.
    components: ceremonies::PendingComponents,
    ceremony_ttl: Duration,
    /// How transport key cards are reached, one card job at a time.
    cards: transport::CardSettings,
    /// How long a key package can be imported.
    package_ttl: Duration,
    /// The salt of the ID hashes in records made before ID MACs, if this node has one: only for
    /// auditors' lookups of those records; nothing new is hashed with it.
    legacy_salt: Option<zeroize::Zeroizing<[u8; crate::card::LEGACY_SALT_LEN]>>,
    /// Card commands counted against the policy's `[card_limits]`: only in memory (a restart
    /// starts them at zero), kept across policy reloads.
    card_limiter: CardLimiter,
    /// Client certificates revoked by the lists the server loaded: refused on every request,
    /// also on connections opened before the list.
    revoked: RwLock<Arc<RevokedCerts>>,
    /// One witnessing request at a time.
    witnessing: Mutex<()>,
    /// The most bytes of encoded message one page of a list answer holds (`[api]`).
    max_answer_bytes: usize,
    /// Clients' request ids held by the requests running now.
    retry_locks: retries::RetryLocks,
    /// How long a client's request id answers its retries.
    retry_window: Duration,
}

impl Node {
    /// Opens the core (policy, registry, token, log) and what the features need. Any failure
    /// here means the node must not serve; the error says what to fix.
    pub fn open(config: &NodeConfig) -> Result<Node, NodeError> {
        let core = Core::open(config)?;
        let legacy_salt = cards::load_legacy_salt(&config.data_dir)?;
        Ok(Node {
            core,
            generating: Mutex::new(()),
            witnessing: Mutex::new(()),
            components: ceremonies::PendingComponents::default(),
            ceremony_ttl: config.ceremony_ttl,
            cards: transport::CardSettings::new(
                config.so_pin.clone(),
                config.card_module.clone(),
                &config.hsm.module,
            ),
            package_ttl: config.package_ttl,
            legacy_salt,
            card_limiter: CardLimiter::default(),
            revoked: RwLock::default(),
            max_answer_bytes: config.max_answer_bytes,
            retry_locks: retries::RetryLocks::default(),
            retry_window: config.retry_window,
        })
    }

    /// The most bytes of encoded message one page of a list answer holds.
    pub fn max_answer_bytes(&self) -> usize {
        self.max_answer_bytes
    }

    /// The core every use case shares.
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// The node's name from its config.
    pub fn name(&self) -> &str {
        self.core.name()
    }

    /// Keys: generate, derive, read, list, change state, reconcile with the token.
    pub fn keys(&self) -> Keys<'_> {
        Keys {
            core: &self.core,
            generating: &self.generating,
        }
    }

    /// Ceremonies: operations under dual control.
    pub fn ceremonies(&self) -> Ceremonies<'_> {
        Ceremonies {
            core: &self.core,
            keys: self.keys(),
            components: &self.components,
            ttl: self.ceremony_ttl,
        }
    }

    /// Transport key cards and key packages.
    pub fn transport(&self) -> Transport<'_> {
        Transport {
            core: &self.core,
            ceremonies: self.ceremonies(),
            cards: &self.cards,
            package_ttl: self.package_ttl,
        }
    }

    /// Card services: PIN commands at the window, and card personalisation.
    pub fn cards(&self) -> Cards<'_> {
        Cards {
            core: &self.core,
            package_ttl: self.package_ttl,
            limiter: &self.card_limiter,
        }
    }

    /// The ceremony log for auditors.
    pub fn audit(&self) -> Audit<'_> {
        Audit {
            core: &self.core,
            legacy_salt: self.legacy_salt.as_deref(),
        }
    }

    /// This node as a witness of other nodes' logs.
    pub fn witness(&self) -> Witness<'_> {
        Witness {
            core: &self.core,
            lock: &self.witnessing,
        }
    }

    /// The policy in force and its reloads.
    pub fn policies(&self) -> Policies<'_> {
        Policies { core: &self.core }
    }

    /// Clients' request ids: what a retry gets instead of a second action.
    pub fn retries(&self) -> Retries<'_> {
        Retries {
            core: &self.core,
            locks: &self.retry_locks,
            window: self.retry_window,
        }
    }

    /// Puts a new set of revoked client certificates in force.
    pub fn set_revoked(&self, revoked: RevokedCerts) {
        let revoked = Arc::new(revoked);
        match self.revoked.write() {
            Ok(mut r) => *r = revoked,
            Err(poisoned) => *poisoned.into_inner() = revoked,
        }
    }

    /// The serial number (hex) of the first certificate of a client's chain (DER, leaf first)
    /// that a revocation list in force names, if any.
    pub fn revoked_in<C: AsRef<[u8]>>(&self, chain: &[C]) -> Option<String> {
        let revoked = match self.revoked.read() {
            Ok(r) => Arc::clone(&r),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        };
        chain
            .iter()
            .find_map(|cert| revoked.revoked_serial(cert.as_ref()))
    }
}
