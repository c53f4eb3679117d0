//! One request as the node sees it: who asks, and the audit record it is building. Every use
//! case fills the record (decision, keys, KCVs); the change and its record are written in one
//! transaction, and anything else (reads, refusals) is recorded when the request ends.

use crate::audit::{AuditDraft, DecisionEntry, KcvEntry, Outcome};
use crate::policy::{Decision, Identity, Operation};
use crate::store::KeyRecord;

/// Longest parameter value kept in a record.
pub const MAX_PARAM: usize = 128;

/// `draft` with the outcome of a success (`None`) or of `error`.
fn with_outcome(mut draft: AuditDraft, error: Option<&super::NodeError>) -> AuditDraft {
    draft.outcome = Some(match error {
        None => Outcome {
            ok: true,
            code: "OK".into(),
            message: String::new(),
        },
        Some(e) => Outcome {
            ok: false,
            code: e.class().code_name().into(),
            message: e.to_string(),
        },
    });
    draft
}

/// The request context threaded through the node's use cases.
#[derive(Debug, Clone)]
pub struct Request {
    /// The authenticated caller.
    pub caller: Identity,
    /// The record being built.
    pub audit: AuditDraft,
    logged: bool,
}

impl Request {
    /// A request of `caller` to `rpc` on node `node`, with a fresh request id.
    pub fn new(caller: Identity, node: &str, rpc: &str, request_id: &str) -> Request {
        Request {
            audit: AuditDraft {
                request_id: request_id.to_string(),
                node: node.to_string(),
                actor: caller.to_uri(),
                rpc: rpc.to_string(),
                ..AuditDraft::default()
            },
            caller,
            logged: false,
        }
    }

    /// Adds a request parameter to the record (never a secret). Values are cut to
    /// [`MAX_PARAM`] characters: the log records requests, it does not store what callers send.
    pub fn param(&mut self, name: &str, value: impl Into<String>) {
        let value = crate::audit::record::cut(&value.into(), MAX_PARAM);
        self.audit
            .params
            .insert(name.chars().take(64).collect(), value);
    }

    /// Records the policy decision.
    pub fn decided(&mut self, op: Operation, decision: &Decision, policy_sha256: &str) {
        self.audit.operation = op.as_str().to_string();
        self.audit.policy_sha256 = policy_sha256.to_string();
        self.audit.decision = Some(DecisionEntry {
            allowed: decision.allowed,
            rule: decision.rule.clone(),
            reason: decision.reason.clone(),
        });
    }

    /// Records a key the request made or used, with its KCV.
    pub fn key(&mut self, key: &KeyRecord) {
        let id = key.id.to_string();
        if !self.audit.key_ids.contains(&id) {
            self.audit.key_ids.push(id.clone());
        }
        self.audit.kcvs.push(KcvEntry {
            key_id: id,
            kcv: key.kcv.to_hex(),
            method: key.kcv.method.as_str().to_string(),
        });
    }

    /// The record as it stands with a successful outcome, for writing with the change.
    pub fn success_record(&self) -> AuditDraft {
        with_outcome(self.audit.clone(), None)
    }

    /// The record as it stands with `error` as its outcome: for a request that fails but still
    /// makes a change (it finds a ceremony expired), written with that change.
    pub fn failure_record(&self, error: &super::NodeError) -> AuditDraft {
        with_outcome(self.audit.clone(), Some(error))
    }

    /// The record of the ended request: a success, or `error`.
    pub fn into_record(self, error: Option<&super::NodeError>) -> AuditDraft {
        with_outcome(self.audit, error)
    }

    /// Marks the record as written with the change.
    pub fn mark_logged(&mut self) {
        self.logged = true;
    }

    /// Whether the record is already written.
    pub fn is_logged(&self) -> bool {
        self.logged
    }
}
