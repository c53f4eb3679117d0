//! The policy in force as a feature: reading it, and reloading it (by a caller, by a
//! `reload-policy` ceremony through [`super::Ceremonies`], or by the host with SIGHUP). Every
//! reload is recorded before the new policy is in force, and kept in the registry with its
//! record. A file weaker than the policy in force (`policy::floor`) is refused except by the
//! ceremony. Also the record of a TLS reload.

use std::sync::Arc;

use crate::audit::AuditDraft;
use crate::policy::{Operation, Policy, weakenings};

use super::core::{host_draft, refusal_params, weaker_refused};
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

    /// `ReloadPolicy` by a caller: allowed by the policy, not under dual control (then it is a
    /// `manage` ceremony with action `reload-policy`), and not weaker than the policy in force
    /// (only that ceremony may weaken it).
    pub fn reload_policy_by(&self, req: &mut Request) -> Result<Arc<Policy>, NodeError> {
        // First: a reload that just put reloading under dual control decides this one.
        let _reloading = self.core.policy.reloading();
        self.core.authorize_here(req, Operation::Manage, None)?;
        self.core.require_no_ceremony(Operation::Manage, None)?;
        let p = self.core.policy.load_new()?;
        req.param("policy_sha256", p.sha256.clone());
        let in_force = self.core.policy();
        let weakened = weakenings(&in_force, &p);
        if !weakened.is_empty() {
            req.param("policy_sha256_in_force", in_force.sha256.clone());
            req.param("policy_sha256_refused", p.sha256.clone());
            let refusal = weaker_refused(&in_force, &p, &weakened);
            tracing::warn!(caller = %req.caller, error = %refusal, "policy reload refused");
            return Err(refusal);
        }
        // Recorded, and kept in the registry, before it is in force: a reload the log cannot
        // show does not happen.
        self.core.commit_policy(req, &p)?;
        self.core.policy.swap(&p);
        Ok(p)
    }

    /// A reload asked for by SIGHUP (the host administrator), recorded in the log like any
    /// request, with the host as its actor. The new policy is in force only once that record
    /// is durable, and only if it weakens nothing of the policy in force: a weaker file is
    /// refused (recorded with both files' SHA-256), and only a `reload-policy` ceremony can put
    /// it in force.
    pub fn reload_policy_on_signal(&self) -> Result<Arc<Policy>, NodeError> {
        let _reloading = self.core.policy.reloading();
        let new = match self.core.policy.load_new() {
            Ok(p) => p,
            Err(e) => {
                let why = e.to_string();
                self.core
                    .record(&sighup_draft(self.core.name(), Some(&why)))?;
                return Err(e);
            }
        };
        let in_force = self.core.policy();
        let weakened = weakenings(&in_force, &new);
        if !weakened.is_empty() {
            let refusal = weaker_refused(&in_force, &new, &weakened);
            let mut draft = sighup_draft(self.core.name(), Some(&refusal.to_string()));
            draft.policy_sha256 = in_force.sha256.clone();
            refusal_params(&mut draft, &in_force, &new);
            self.core.record(&draft)?;
            tracing::warn!(
                in_force = %in_force.sha256,
                refused = %new.sha256,
                error = %refusal,
                "SIGHUP: the policy file weakens the policy in force; it stays out of force"
            );
            return Err(refusal);
        }
        let mut draft = sighup_draft(self.core.name(), None);
        draft.policy_sha256 = new.sha256.clone();
        draft
            .params
            .insert("policy_sha256".into(), new.sha256.clone());
        self.core.record_policy(&draft, &new)?;
        self.core.policy.swap(&new);
        Ok(new)
    }

    /// Records a reload of the server's TLS files asked for by SIGHUP, with how many client
    /// certificates the new lists revoke, or why the files were refused. The caller puts the
    /// new files in force only once this record is durable.
    pub fn record_tls_reload(&self, loaded: Result<usize, String>) -> Result<(), NodeError> {
        let failure = loaded.as_ref().err().map(String::as_str);
        let mut draft = host_draft(self.core.name(), "host:SIGHUP", "ReloadTls", failure);
        if let Ok(revoked) = loaded {
            draft
                .params
                .insert("revoked_certificates".into(), revoked.to_string());
        }
        self.core.record(&draft).map(|_| ())
    }
}

/// The record of a policy reload asked for by SIGHUP, which `failure`, when given, refused.
fn sighup_draft(node: &str, failure: Option<&str>) -> AuditDraft {
    host_draft(node, "host:SIGHUP", "ReloadPolicy", failure)
}
