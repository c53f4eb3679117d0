//! The ceremony log for auditors: its records, its checkpoints and the public key that signs
//! them. Every read is a `read-audit` decision at the node's region.

use crate::audit::Checkpoint;
use crate::policy::Operation;

use super::{Core, NodeError, Request, Signing};

/// The auditor's use cases, over the node's core.
pub struct Audit<'n> {
    pub(super) core: &'n Core,
}

impl Audit<'_> {
    /// Record lines for an auditor, `from..=to`, at most `limit`.
    pub fn audit_lines(
        &self,
        req: &mut Request,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, NodeError> {
        self.core.authorize_here(req, Operation::ReadAudit, None)?;
        Ok(self.core.store.audit_lines(from, to, limit)?)
    }

    /// The next page of a `StreamRecords` stream whose request ([`Audit::audit_lines`]) was
    /// authorised and recorded: its later pages are part of that one request.
    pub fn audit_lines_after_first(
        &self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, NodeError> {
        Ok(self.core.store.audit_lines(from, to, limit)?)
    }

    /// The public key that signs this node's checkpoints, for an auditor to pin.
    pub fn audit_public_key(&self, req: &mut Request) -> Result<Signing, NodeError> {
        self.core.authorize_here(req, Operation::ReadAudit, None)?;
        Ok(self.core.signing().clone())
    }

    /// Every checkpoint, for an auditor. With `seal`, the current head is sealed first, so
    /// that an export ends on a checkpoint.
    pub fn audit_checkpoints(
        &self,
        req: &mut Request,
        seal: bool,
    ) -> Result<Vec<Checkpoint>, NodeError> {
        self.core.authorize_here(req, Operation::ReadAudit, None)?;
        // A log changed under the node is exported as it is, without a new seal: the
        // auditor's verifier names where it breaks.
        if seal
            && let Err(e) = self.core.checkpoint()
            && !self.core.log_is_changed()
        {
            return Err(e);
        }
        Ok(self.core.store.checkpoints()?)
    }
}
