//! The policy in force as a feature: reading it, and reloading it (by a caller, by a
//! `reload-policy` ceremony through [`super::Ceremonies`], or by the host with SIGHUP). Every
//! reload is recorded before the new policy is in force. Also the record of a TLS reload.

use std::sync::Arc;

use crate::audit::{AuditDraft, Outcome};
use crate::policy::{Operation, Policy};

use super::{Core, NodeError, Request};

/// The policy use cases, over the node's core.
pub struct Policies<'n> {
    pub(super) core: &'n Core,
}

impl Policies<'_> {
    /// `GetPolicy`: the policy in force, for a caller allowed to read.
    pub fn get_policy(&self, req: &mut Request) -> Result<Arc<Policy>, NodeError> {
        self.core.authorize_here(req, Operation::Read, None)?;
        Ok(self.core.policy())
    }

    /// `ReloadPolicy` by a caller: allowed by the policy, and not under dual control (then it
    /// is a `manage` ceremony with action `reload-policy`).
    pub fn reload_policy_by(&self, req: &mut Request) -> Result<Arc<Policy>, NodeError> {
        // First: a reload that just put reloading under dual control decides this one.
        let _reloading = self.core.policy.reloading();
        self.core.authorize_here(req, Operation::Manage, None)?;
        self.core.require_no_ceremony(Operation::Manage, None)?;
        let p = self.core.policy.load_new()?;
        req.param("policy_sha256", p.sha256.clone());
        // Recorded before it is in force: a reload the log cannot show does not happen.
        self.core.record_before(req)?;
        self.core.policy.swap(&p);
        Ok(p)
    }

    /// A reload asked for by SIGHUP (the host administrator), recorded in the log like any
    /// request, with the host as its actor. The new policy is in force only once that record
    /// is durable.
    pub fn reload_policy_on_signal(&self) -> Result<Arc<Policy>, NodeError> {
        let _reloading = self.core.policy.reloading();
        let result = self.core.policy.load_new();
        let failure = result.as_ref().err().map(ToString::to_string);
        let mut draft = host_reload_draft(self.core.name(), "ReloadPolicy", failure.as_ref());
        if let Ok(p) = &result {
            draft.policy_sha256 = p.sha256.clone();
        }
        self.core.record(&draft)?;
        let new = result?;
        self.core.policy.swap(&new);
        Ok(new)
    }

    /// Records a reload of the server's TLS files asked for by SIGHUP, with how many client
    /// certificates the new lists revoke, or why the files were refused. The caller puts the
    /// new files in force only once this record is durable.
    pub fn record_tls_reload(&self, loaded: Result<usize, String>) -> Result<(), NodeError> {
        let mut draft = host_reload_draft(self.core.name(), "ReloadTls", loaded.as_ref().err());
        if let Ok(revoked) = loaded {
            draft
                .params
                .insert("revoked_certificates".into(), revoked.to_string());
        }
        self.core.record(&draft).map(|_| ())
    }
}

/// The record of a reload the host administrator asked for with SIGHUP (`rpc`), which
/// `failure`, when given, refused.
fn host_reload_draft(node: &str, rpc: &str, failure: Option<&String>) -> AuditDraft {
    AuditDraft {
        request_id: format!("r-{}", uuid::Uuid::new_v4().simple()),
        node: node.to_string(),
        actor: "host:SIGHUP".into(),
        rpc: rpc.into(),
        operation: Operation::Manage.as_str().into(),
        outcome: Some(match failure {
            None => Outcome {
                ok: true,
                code: "OK".into(),
                message: String::new(),
            },
            Some(why) => Outcome {
                ok: false,
                code: super::ErrorClass::FailedPrecondition.code_name().into(),
                message: crate::audit::record::cut(why, crate::audit::record::MAX_MESSAGE),
            },
        }),
        ..Default::default()
    }
}
