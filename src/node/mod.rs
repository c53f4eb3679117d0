//! One hkms node: its identity (tier, region), its token, its registry and its policy, and the
//! use cases that tie them together. Everything here is synchronous; the gRPC layer runs it
//! on blocking threads.

mod audit;
mod card;
mod ceremony;
mod error;
mod exclusive;
mod keys;
mod orphans;
mod request;
mod transport;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use audit::{SIGNING_LABEL, Signing};
pub use card::{CardAnswer, CardPackages, CardRequest};
pub use ceremony::{Ceremony, CeremonyState};
pub use error::{ErrorClass, NodeError};
pub use exclusive::ExclusiveUse;
pub use orphans::OrphanReport;
pub use request::Request;
pub use transport::CardAccess;

use crate::config::NodeConfig;
use crate::hierarchy::{KeyTypeSpec, Region, Tier};
use crate::hsm::Hsm;
use crate::policy::{Decision, Operation, Policy, RevokedCerts};
use crate::store::{AuditLog, SqliteStore, StoreHealth};

/// A running node's state.
pub struct Node {
    name: String,
    tier: Tier,
    region: Region,
    hsm: Hsm,
    store: SqliteStore,
    policy_path: PathBuf,
    /// The policy in force; a reload swaps the whole `Arc` at once.
    policy: RwLock<Arc<Policy>>,
    /// Serialises generation so that two keys of one type never get the same version number.
    generate_lock: Mutex<()>,
    signing: Signing,
    /// The last sequence number sealed by a checkpoint; also serialises checkpointing.
    sealed: Mutex<u64>,
    checkpoint_every: u64,
    checkpoint_interval: Duration,
    ceremony_ttl: Duration,
    /// Salt of the ID-number hashes in card service records.
    id_salt: [u8; 32],
    /// The security officer PIN source (nodes that issue transport key cards).
    so_pin: Option<crate::hsm::PinSource>,
    /// The PKCS#11 module of transport key cards.
    card_module: PathBuf,
    /// How long a key package can be imported.
    package_ttl: Duration,
    /// Key components entered so far, per ceremony: only in memory, zeroized on drop.
    components: ceremony::PendingComponents,
    /// Serialises card work: two loads of one card must not both unwrap its key, and a card
    /// login (user, then SO) is the whole process's.
    card_lock: Mutex<()>,
    /// Serialises policy reloads from reading the file to putting it in force, so the policy in
    /// force is the one the last reload record names.
    reload_lock: Mutex<()>,
    /// Client certificates revoked by the lists the server loaded: refused on every request,
    /// also on connections opened before the list.
    revoked: RwLock<Arc<RevokedCerts>>,
    /// Set when the ceremony log was found changed outside hkms: nothing is sealed any more
    /// until a restart (and no request pays for the check again).
    log_changed: std::sync::OnceLock<String>,
}

impl Node {
    /// Loads the policy, opens the registry, logs in to the token and makes sure the log's
    /// signing key exists. Any failure here means the node must not serve; the error says what
    /// to fix.
    pub fn open(config: &NodeConfig) -> Result<Node, NodeError> {
        let policy = load_policy(&config.policy)?;
        let store = SqliteStore::open(&config.database_path())?;
        let hsm = Hsm::open(&config.hsm)?;
        // Before anything is served: a modifiable public transport key is open to any session.
        hsm.seal_issuer_keys()?;
        let last_checkpoint = store.last_checkpoint()?;
        let signing = Signing::load(&hsm, last_checkpoint.as_ref())?;
        let sealed = last_checkpoint.map_or(0, |c| c.seq);
        let id_salt = card::load_salt(&config.data_dir)?;
        Ok(Node {
            name: config.name.clone(),
            tier: config.tier,
            region: config.region,
            hsm,
            store,
            policy_path: config.policy.clone(),
            policy: RwLock::new(Arc::new(policy)),
            generate_lock: Mutex::new(()),
            signing,
            sealed: Mutex::new(sealed),
            checkpoint_every: config.checkpoint_every,
            checkpoint_interval: config.checkpoint_interval,
            ceremony_ttl: config.ceremony_ttl,
            components: ceremony::PendingComponents::default(),
            card_lock: Mutex::new(()),
            reload_lock: Mutex::new(()),
            revoked: RwLock::default(),
            log_changed: std::sync::OnceLock::new(),
            id_salt,
            so_pin: config.so_pin.clone(),
            card_module: config.card_module.clone(),
            package_ttl: config.package_ttl,
        })
    }

    /// The node's name from its config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's tier.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// The node's region.
    pub fn region(&self) -> Region {
        self.region
    }

    /// The node's token.
    pub fn hsm(&self) -> &Hsm {
        &self.hsm
    }

    /// The node's registry.
    pub fn store(&self) -> &SqliteStore {
        &self.store
    }

    /// How often checkpoints are signed when records are few.
    pub fn checkpoint_interval(&self) -> Duration {
        self.checkpoint_interval
    }

    /// Whether the token and the registry answer, for health reporting.
    pub fn health(&self) -> (Result<(), NodeError>, Result<(), NodeError>) {
        (
            self.hsm.check_alive().map_err(NodeError::from),
            self.store.ping().map_err(NodeError::from),
        )
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => Arc::clone(&p),
            // A panic while swapping cannot leave a half-written Arc; the old one is whole.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The SHA-256 (hex) of the policy file as it is on disk now, loadable or not.
    fn policy_file_sha256(&self) -> Result<String, NodeError> {
        use sha2::Digest;
        let bytes = std::fs::read(&self.policy_path).map_err(|e| {
            NodeError::FailedPrecondition(format!(
                "cannot read the policy file {}: {e}",
                self.policy_path.display()
            ))
        })?;
        Ok(hex::encode(sha2::Sha256::digest(&bytes)))
    }

    /// Re-reads the policy file, to swap in with [`Node::swap_policy`] once the reload's record
    /// is durable. A file that does not load leaves the old policy deciding and says why.
    fn load_new_policy(&self) -> Result<Arc<Policy>, NodeError> {
        Ok(Arc::new(load_policy(&self.policy_path)?))
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

    /// Records a reload of the server's TLS files asked for by SIGHUP, with how many client
    /// certificates the new lists revoke, or why the files were refused. The caller puts the
    /// new files in force only once this record is durable.
    pub fn record_tls_reload(&self, loaded: Result<usize, String>) -> Result<(), NodeError> {
        let mut draft = host_reload_draft(&self.name, "ReloadTls", loaded.as_ref().err());
        if let Ok(revoked) = loaded {
            draft
                .params
                .insert("revoked_certificates".into(), revoked.to_string());
        }
        self.record(&draft).map(|_| ())
    }

    /// Held by a reload from reading the file until the new policy is in force.
    fn reloading(&self) -> std::sync::MutexGuard<'_, ()> {
        // The lock guards no data: a poisoned one is as good as a sound one.
        self.reload_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts `new` in force (atomically for every later decision).
    fn swap_policy(&self, new: &Arc<Policy>) {
        match self.policy.write() {
            Ok(mut p) => *p = Arc::clone(new),
            Err(poisoned) => *poisoned.into_inner() = Arc::clone(new),
        }
        tracing::info!(sha256 = %new.sha256, origin = %new.origin, "policy reloaded");
    }

    /// A reload asked for by SIGHUP (the host administrator), recorded in the log like any
    /// request, with the host as its actor. The new policy is in force only once that record
    /// is durable.
    pub fn reload_policy_on_signal(&self) -> Result<Arc<Policy>, NodeError> {
        let _reloading = self.reloading();
        let result = self.load_new_policy();
        let failure = result.as_ref().err().map(ToString::to_string);
        let mut draft = host_reload_draft(&self.name, "ReloadPolicy", failure.as_ref());
        if let Ok(p) = &result {
            draft.policy_sha256 = p.sha256.clone();
        }
        self.record(&draft)?;
        let new = result?;
        self.swap_policy(&new);
        Ok(new)
    }

    /// `ReloadPolicy` by a caller: allowed by the policy, and not under dual control (then it
    /// is a `manage` ceremony with action `reload-policy`).
    pub fn reload_policy_by(&self, req: &mut Request) -> Result<Arc<Policy>, NodeError> {
        // First: a reload that just put reloading under dual control decides this one.
        let _reloading = self.reloading();
        self.authorize(req, Operation::Manage, None, &self.region)?;
        self.require_no_ceremony(Operation::Manage, None)?;
        let p = self.load_new_policy()?;
        req.param("policy_sha256", p.sha256.clone());
        // Recorded before it is in force: a reload the log cannot show does not happen.
        self.record(&req.success_record())?;
        req.mark_logged();
        self.swap_policy(&p);
        Ok(p)
    }

    /// Asks the policy and records the decision in the request's audit record; a denial
    /// becomes [`NodeError::PermissionDenied`] with its reason.
    pub fn authorize(
        &self,
        req: &mut Request,
        op: Operation,
        key_type: Option<&str>,
        target: &Region,
    ) -> Result<Decision, NodeError> {
        let policy = self.policy();
        let decision = policy.decide(&req.caller, op, key_type, target);
        req.decided(op, &decision, &policy.sha256);
        if decision.allowed {
            tracing::debug!(caller = %req.caller, reason = %decision.reason, "policy");
            Ok(decision)
        } else {
            tracing::warn!(caller = %req.caller, reason = %decision.reason, "policy");
            Err(NodeError::PermissionDenied(decision.reason))
        }
    }

    /// [`Node::authorize`] for an operation on a registered key: its type, its region.
    pub fn authorize_key(
        &self,
        req: &mut Request,
        op: Operation,
        key: &crate::store::KeyRecord,
    ) -> Result<Decision, NodeError> {
        self.authorize(req, op, Some(key.key_type.as_str()), &key.region)
    }

    /// Refuses a direct request for an operation the policy puts under dual control.
    fn require_no_ceremony(&self, op: Operation, key_type: Option<&str>) -> Result<(), NodeError> {
        match self.policy().quorum(op, key_type) {
            None => Ok(()),
            Some(q) => Err(NodeError::FailedPrecondition(format!(
                "{op} {} is under dual control: it needs a ceremony with {} approvals \
                 (`hkms ceremony open --op {op}{}`)",
                key_type.unwrap_or("(node)"),
                q.approvals,
                key_type
                    .map(|k| format!(" --key-type {k}"))
                    .unwrap_or_default()
            ))),
        }
    }

    fn key_type(policy: &Policy, name: &str) -> Result<KeyTypeSpec, NodeError> {
        policy.catalogue.get(name).cloned().ok_or_else(|| {
            NodeError::InvalidArgument(format!(
                "unknown key type `{name}`; the policy declares: {}",
                policy.catalogue.names().collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

/// Reads and checks the policy file.
pub fn load_policy(path: &Path) -> Result<Policy, NodeError> {
    Policy::load(path).map_err(|e| NodeError::FailedPrecondition(format!("policy refused: {e}")))
}

/// The record of a reload the host administrator asked for with SIGHUP (`rpc`), which
/// `failure`, when given, refused.
fn host_reload_draft(node: &str, rpc: &str, failure: Option<&String>) -> crate::audit::AuditDraft {
    crate::audit::AuditDraft {
        request_id: format!("r-{}", uuid::Uuid::new_v4().simple()),
        node: node.to_string(),
        actor: "host:SIGHUP".into(),
        rpc: rpc.into(),
        operation: Operation::Manage.as_str().into(),
        outcome: Some(match failure {
            None => crate::audit::Outcome {
                ok: true,
                code: "OK".into(),
                message: String::new(),
            },
            Some(why) => crate::audit::Outcome {
                ok: false,
                code: "FAILED_PRECONDITION".into(),
                message: crate::audit::record::cut(why, crate::audit::record::MAX_MESSAGE),
            },
        }),
        ..Default::default()
    }
}
