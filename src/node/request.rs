//! One request as the node sees it: who asks, and the audit record it is building. Every use
//! case fills the record (decision, keys, KCVs); a change is written with its record in one
//! transaction ([`super::Core::commit`]), and anything else (reads, refusals) is recorded by
//! the request pipeline when the request ends. Only the node marks a request recorded, and only
//! once its record is durable: there is no way to say "recorded" without writing.

use crate::audit::{AuditDraft, DecisionEntry, KcvEntry, Outcome};
use crate::hierarchy::Kcv;
use crate::hierarchy::KeyRecord;
use crate::policy::{CertificateKey, Decision, Identity, Operation};

use super::{ErrorClass, NodeError};

/// Longest parameter value kept in a record.
pub const MAX_PARAM: usize = 128;

/// `draft` with the outcome of a success (`None`) or of `error`.
fn with_outcome(mut draft: AuditDraft, error: Option<&NodeError>) -> AuditDraft {
    draft.outcome = Some(match error {
        None => Outcome {
            ok: true,
            code: "OK".into(),
            message: String::new(),
        },
        Some(e) => Outcome {
            ok: false,
            code: e.class().code_name().into(),
            // Errors quote what the caller sent; recorded escaped, as parameters are.
            message: crate::untrusted_text::escape(&e.to_string()).into_owned(),
        },
    });
    draft
}

/// Who asks: the identity their certificate carries, and the certificate's key, by which the
/// policy's officer roster knows the person behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The identity (role, tier, region, name).
    pub identity: Identity,
    /// The SHA-256 of the certificate's public key; `None` for the node's own requests.
    pub certificate_key: Option<CertificateKey>,
}

impl From<Identity> for Caller {
    fn from(identity: Identity) -> Caller {
        Caller {
            identity,
            certificate_key: None,
        }
    }
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.identity.fmt(f)
    }
}

/// The request context threaded through the node's use cases.
#[derive(Debug, Clone)]
pub struct Request {
    /// The authenticated caller.
    pub caller: Identity,
    /// The SHA-256 of the caller's certificate key, when the request came with a certificate.
    certificate_key: Option<CertificateKey>,
    /// The record being built; only this type's methods change it.
    audit: AuditDraft,
    recorded: bool,
}

impl Request {
    /// A request of `caller` to `rpc` on node `node`, with the pipeline's request id.
    pub fn new(caller: impl Into<Caller>, node: &str, rpc: &str, request_id: &str) -> Request {
        let Caller {
            identity,
            certificate_key,
        } = caller.into();
        Request {
            audit: AuditDraft {
                request_id: request_id.to_string(),
                node: node.to_string(),
                actor: identity.to_uri(),
                rpc: rpc.to_string(),
                ..AuditDraft::default()
            },
            caller: identity,
            certificate_key,
            recorded: false,
        }
    }

    /// The SHA-256 of the caller's certificate key, if the request came with a certificate.
    pub fn certificate_key(&self) -> Option<&CertificateKey> {
        self.certificate_key.as_ref()
    }

    /// The id every record of this request carries.
    pub fn request_id(&self) -> &str {
        &self.audit.request_id
    }

    /// Adds a request parameter to the record (never a secret). Values are cut to
    /// [`MAX_PARAM`] characters: the log records requests, it does not store what callers send.
    pub fn param(&mut self, name: &str, value: impl Into<String>) {
        // Recorded as the caller sent it, but never raw: a newline or a bidi override would
        // change how the record reads in a report.
        use crate::untrusted_text::escape;
        let value = crate::audit::record::cut(&escape(&value.into()), MAX_PARAM);
        let name: String = name.chars().take(64).collect();
        self.audit.params.insert(escape(&name).into_owned(), value);
    }

    /// Records a field as the caller sent it (as [`Request::param`]), then reads it with
    /// `read` (one of [`super::input`]'s readers): a malformed value is refused and the record
    /// still shows it.
    pub fn read<T>(
        &mut self,
        name: &str,
        sent: &str,
        read: impl FnOnce(&str) -> Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        self.param(name, sent);
        read(sent)
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

    /// Records the operation and policy of a request decided per item (a listing that leaves
    /// out what the caller may not see), which has no single decision.
    pub fn decided_per_item(&mut self, op: Operation, policy_sha256: &str) {
        self.audit.operation = op.as_str().to_string();
        self.audit.policy_sha256 = policy_sha256.to_string();
    }

    /// Claims the client's request id with the request's record: whichever write records this
    /// request (with its change, or alone once it succeeded) keeps the claim in the same
    /// transaction (`super::retries`).
    pub(super) fn claim_retry(&mut self, claim: crate::audit::RetryClaim) {
        self.audit.retry = Some(claim);
    }

    /// Records the ceremony the request acts on.
    pub fn ceremony(&mut self, id: &str) {
        self.audit.ceremony = Some(id.to_string());
    }

    /// Records a key the request made or used, with its KCV.
    pub fn key(&mut self, key: &KeyRecord) {
        self.key_id(&key.id.to_string());
        self.kcv(&key.id.to_string(), &key.kcv);
    }

    /// Records a key the request made: its id and KCV, and its type, region and parent as
    /// parameters, so that the log alone tells the key hierarchy (docs/audit-format.md §1).
    pub fn made_key(&mut self, key: &KeyRecord) {
        self.key(key);
        self.param("key_type", key.key_type.as_str());
        self.param("region", key.region.as_str());
        if let Some(parent) = &key.parent_id {
            self.param("parent_id", parent.to_string());
        }
    }

    /// Records the id of a key the request touched (a registry key or a transport card's).
    pub fn key_id(&mut self, id: &str) {
        if !self.audit.key_ids.iter().any(|k| k == id) {
            self.audit.key_ids.push(id.to_string());
        }
    }

    /// Records a KCV the HSM computed for `what` (a key id, a component, a card's key).
    pub fn kcv(&mut self, what: &str, kcv: &Kcv) {
        self.audit.kcvs.push(KcvEntry {
            key_id: what.to_string(),
            kcv: kcv.to_hex(),
            method: kcv.method.as_str().to_string(),
        });
    }

    /// The record as it stands, with a successful outcome or `error`'s: for writing with a
    /// change ([`super::Core::commit`]). Not public: a record leaves a request only to be written.
    pub(super) fn draft(&self, error: Option<&NodeError>) -> AuditDraft {
        with_outcome(self.audit.clone(), error)
    }

    /// The record of a second operation this request led to (`rpc`), which failed (`class`,
    /// `message`): written on its own, beside the request's.
    pub(super) fn side_draft(&self, rpc: &str, class: ErrorClass, message: &str) -> AuditDraft {
        let mut d = self.audit.clone();
        d.rpc = rpc.to_string();
        // The request's own record claims its request id, not this one.
        d.retry = None;
        d.outcome = Some(Outcome {
            ok: false,
            code: class.code_name().into(),
            message: message.to_string(),
        });
        d
    }

    /// Called by the node once this request's record is durable.
    pub(super) fn set_recorded(&mut self) {
        self.recorded = true;
    }

    /// Whether the request's record is durable already (written with its change).
    pub fn is_recorded(&self) -> bool {
        self.recorded
    }

    /// The record of the ended request, a success or `error`, for the pipeline to write.
    /// `None` when the record is durable already. A failed request whose record was not
    /// written with a change did not act: it claims no request id, so its retry acts.
    pub fn into_unwritten_record(mut self, error: Option<&NodeError>) -> Option<AuditDraft> {
        if error.is_some() {
            self.audit.retry = None;
        }
        (!self.recorded).then(|| with_outcome(self.audit, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_request_that_acted_claims_its_request_id() {
        let caller = Identity::from_uri("hkms://officer/national/000000/a").unwrap();
        let claimed = || {
            let mut req = Request::new(caller.clone(), "n", "GenerateKey", "r-1");
            req.claim_retry(crate::audit::RetryClaim {
                client_request_id: "x".into(),
                ..Default::default()
            });
            req
        };
        // A success written alone (nothing else recorded it) claims the id with its record.
        let ok = claimed().into_unwritten_record(None).unwrap();
        assert!(ok.retry.is_some());
        // A failure written alone changed nothing: its retry must act.
        let failed = claimed()
            .into_unwritten_record(Some(&NodeError::InvalidArgument("x".into())))
            .unwrap();
        assert_eq!(failed.retry, None);
        // A failure written with a change (`Core::commit`) keeps it: that request acted.
        let req = claimed();
        assert!(
            req.draft(Some(&NodeError::FailedPrecondition("expired".into())))
                .retry
                .is_some()
        );
        // A side record is not the request's own.
        let side = req.side_draft("DestroyKeyObject", ErrorClass::Internal, "m");
        assert_eq!(side.retry, None);
    }

    #[test]
    fn what_the_caller_sent_is_recorded_escaped() {
        let caller = Identity::from_uri("hkms://window/municipal/440100/counter-1").unwrap();
        let mut req = Request::new(caller, "n", "UnblockPin", "r-1");
        req.param("served_by", "Li \u{202E}ieW\nseq=7");
        req.param("na\tme", "x");
        let record = req
            .into_unwritten_record(Some(&NodeError::InvalidArgument("bad `a\u{2066}b`".into())))
            .unwrap();
        assert_eq!(record.params["served_by"], "Li \\u{202e}ieW\\nseq=7");
        assert_eq!(record.params["na\\tme"], "x");
        let outcome = record.outcome.unwrap();
        assert!(
            outcome.message.contains("bad `a\\u{2066}b`"),
            "{}",
            outcome.message
        );
    }
}
