//! One hkms node: its identity (tier, region), its token, its registry and its key types, and
//! the use cases that tie them together. Everything here is synchronous; the gRPC layer runs it
//! on blocking threads.

mod error;
mod keys;
mod orphans;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub use error::{ErrorClass, NodeError};
pub use orphans::OrphanReport;

use crate::config::NodeConfig;
use crate::hierarchy::{KeyTypeSpec, Region, Tier};
use crate::hsm::Hsm;
use crate::policy::{Decision, Identity, Operation, Policy};
use crate::store::Store;

/// A running node's state.
pub struct Node {
    name: String,
    tier: Tier,
    region: Region,
    hsm: Hsm,
    store: Store,
    policy_path: PathBuf,
    /// The policy in force; a reload swaps the whole `Arc` at once.
    policy: RwLock<Arc<Policy>>,
    /// Serialises generation so that two keys of one type never get the same version number.
    generate_lock: std::sync::Mutex<()>,
}

impl Node {
    /// Loads the key types, opens the registry and logs in to the token. Any failure here means
    /// the node must not serve; the error says what to fix.
    pub fn open(config: &NodeConfig) -> Result<Node, NodeError> {
        let policy = load_policy(&config.policy)?;
        let store = Store::open(&config.database_path())?;
        let hsm = Hsm::open(&config.hsm)?;
        Ok(Node {
            name: config.name.clone(),
            tier: config.tier,
            region: config.region,
            hsm,
            store,
            policy_path: config.policy.clone(),
            policy: RwLock::new(Arc::new(policy)),
            generate_lock: std::sync::Mutex::new(()),
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
    pub fn store(&self) -> &Store {
        &self.store
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

    /// Re-reads the policy file and swaps it in atomically. A file that does not load leaves
    /// the old policy deciding and says why.
    pub fn reload_policy(&self) -> Result<Arc<Policy>, NodeError> {
        let new = Arc::new(load_policy(&self.policy_path)?);
        match self.policy.write() {
            Ok(mut p) => *p = Arc::clone(&new),
            Err(poisoned) => *poisoned.into_inner() = Arc::clone(&new),
        }
        tracing::info!(sha256 = %new.sha256, origin = %new.origin, "policy reloaded");
        Ok(new)
    }

    /// Asks the policy; a denial becomes [`NodeError::PermissionDenied`] with its reason.
    pub fn authorize(
        &self,
        caller: &Identity,
        op: Operation,
        key_type: Option<&str>,
        target: &Region,
    ) -> Result<Decision, NodeError> {
        let decision = self.policy().decide(caller, op, key_type, target);
        if decision.allowed {
            tracing::debug!(caller = %caller, reason = %decision.reason, "policy");
            Ok(decision)
        } else {
            tracing::warn!(caller = %caller, reason = %decision.reason, "policy");
            Err(NodeError::PermissionDenied(decision.reason))
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
