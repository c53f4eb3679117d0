//! One process at a time works on a node's token and registry behind its back: `serve` holds
//! an exclusive lock on the data folder for its whole life, and commands that change the token
//! outside the server (`keys orphans --destroy`) must take it too. A key the server is making
//! is on the token before its row commits; seen from outside, it looks like an orphan.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::NodeError;

/// The lock file in the node's data folder.
pub const LOCK_FILE: &str = "node.lock";

/// Held while this process uses the node alone; released when dropped or when the process
/// ends, however it ends.
#[derive(Debug)]
pub struct ExclusiveUse {
    _file: File,
}

impl ExclusiveUse {
    /// Takes the node in `data_dir` for `what`, or says who has it.
    pub fn take(data_dir: &Path, what: &str) -> Result<ExclusiveUse, NodeError> {
        crate::durable::private_dir(data_dir).map_err(|e| {
            NodeError::Internal(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let path = data_dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| NodeError::Internal(format!("cannot open {}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => Ok(ExclusiveUse { _file: file }),
            Err(TryLockError::WouldBlock) => Err(NodeError::FailedPrecondition(format!(
                "another hkms process is using this node ({} is locked: is its server \
                 running?); stop it before {what}",
                path.display()
            ))),
            Err(TryLockError::Error(e)) => Err(NodeError::Internal(format!(
                "cannot lock {}: {e}",
                path.display()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_taker_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = ExclusiveUse::take(dir.path(), "serving").unwrap();
        let err = ExclusiveUse::take(dir.path(), "destroying orphans").unwrap_err();
        assert!(matches!(err, NodeError::FailedPrecondition(_)), "{err}");
        assert!(
            err.to_string()
                .contains("stop it before destroying orphans")
        );
        drop(first);
        ExclusiveUse::take(dir.path(), "destroying orphans").unwrap();
    }
}
