//! The policy in force: held as one `Arc` that a reload swaps whole, so no decision sees half a
//! policy, and a file that does not load leaves the old one deciding.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use crate::policy::Policy;

use super::super::NodeError;

/// The policy file and the policy loaded from it.
pub(crate) struct PolicyCell {
    path: PathBuf,
    in_force: RwLock<Arc<Policy>>,
    /// Serialises reloads from reading the file to putting it in force, so the policy in force
    /// is the one the last reload record names.
    reload_lock: Mutex<()>,
}

impl PolicyCell {
    /// Loads and checks the policy file at `path`.
    pub(crate) fn load(path: &Path) -> Result<PolicyCell, NodeError> {
        Ok(PolicyCell {
            path: path.to_path_buf(),
            in_force: RwLock::new(Arc::new(load_policy(path)?)),
            reload_lock: Mutex::new(()),
        })
    }

    /// The policy in force now.
    pub(crate) fn current(&self) -> Arc<Policy> {
        match self.in_force.read() {
            Ok(p) => Arc::clone(&p),
            // A panic while swapping cannot leave a half-written Arc; the old one is whole.
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    /// The SHA-256 (hex) of the policy file as it is on disk now, loadable or not.
    pub(crate) fn file_sha256(&self) -> Result<String, NodeError> {
        use sha2::Digest;
        let bytes = std::fs::read(&self.path).map_err(|e| {
            NodeError::FailedPrecondition(format!(
                "cannot read the policy file {}: {e}",
                self.path.display()
            ))
        })?;
        Ok(hex::encode(sha2::Sha256::digest(&bytes)))
    }

    /// Re-reads the policy file, to swap in with [`PolicyCell::swap`] once the reload's record
    /// is durable. A file that does not load leaves the old policy deciding and says why.
    pub(crate) fn load_new(&self) -> Result<Arc<Policy>, NodeError> {
        Ok(Arc::new(load_policy(&self.path)?))
    }

    /// Held by a reload from reading the file until the new policy is in force.
    pub(crate) fn reloading(&self) -> MutexGuard<'_, ()> {
        // The lock guards no data: a poisoned one is as good as a sound one.
        self.reload_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Puts `new` in force (atomically for every later decision).
    pub(crate) fn swap(&self, new: &Arc<Policy>) {
        match self.in_force.write() {
            Ok(mut p) => *p = Arc::clone(new),
            Err(poisoned) => *poisoned.into_inner() = Arc::clone(new),
        }
        tracing::info!(sha256 = %new.sha256, origin = %new.origin, "policy reloaded");
    }
}

/// Reads and checks the policy file.
pub fn load_policy(path: &Path) -> Result<Policy, NodeError> {
    Policy::load(path).map_err(|e| NodeError::FailedPrecondition(format!("policy refused: {e}")))
}
