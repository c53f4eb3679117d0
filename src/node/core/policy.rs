//! The policy in force: held as one `Arc` that a reload swaps whole, so no decision sees half a
//! policy, and a file that does not load leaves the old one deciding. Kept in the registry too,
//! so that a restart decides by the policy that was in force, and compares the file with it:
//! a file that weakens it (the dual-control floor, `policy::floor`) stays out of force until a
//! `reload-policy` ceremony puts it there.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use crate::audit::{AuditDraft, AuditRecord, Outcome};
use crate::policy::{Policy, Weakening};
use crate::store::{Store, StoredPolicy};

use super::super::{ErrorClass, NodeError, Reason, Request};
use super::Core;

/// The policy file and the policy loaded from it.
pub(crate) struct PolicyCell {
    path: PathBuf,
    in_force: RwLock<Arc<Policy>>,
    /// Serialises reloads from reading the file to putting it in force, so the policy in force
    /// is the one the last reload record names.
    reload_lock: Mutex<()>,
}

impl PolicyCell {
    /// A cell for the policy file at `path`, with `in_force` deciding.
    pub(crate) fn new(path: &Path, in_force: Arc<Policy>) -> PolicyCell {
        PolicyCell {
            path: path.to_path_buf(),
            in_force: RwLock::new(in_force),
            reload_lock: Mutex::new(()),
        }
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
            NodeError::because(
                Reason::PolicyNotReloadable,
                format!("cannot read the policy file {}: {e}", self.path.display()),
            )
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
    Policy::load(path).map_err(|e| {
        NodeError::because(Reason::PolicyNotReloadable, format!("policy refused: {e}")).into()
    })
}

/// The registry's row for `p`.
pub(crate) fn stored(p: &Policy, origin: &Path) -> StoredPolicy {
    StoredPolicy {
        sha256: p.sha256.clone(),
        text: p.text.clone(),
        origin: origin.display().to_string(),
    }
}

/// Why a policy file stays out of force: it weakens the policy in force, and only a
/// `reload-policy` ceremony approved under the policy in force may do that. Its text says what
/// is weakened and what to do; the record of the refusal names both files by their SHA-256.
pub(crate) fn weaker_refused(
    in_force: &Policy,
    file: &Policy,
    weakened: &[Weakening],
) -> NodeError {
    let what: Vec<String> = weakened.iter().map(ToString::to_string).collect();
    NodeError::because(
        Reason::CeremonyRequired,
        format!(
            "a reload-policy ceremony is needed: the policy file {} (sha256 {}) weakens the \
             policy in force (sha256 {}): {}; the policy in force stays (open the ceremony with \
             `hkms ceremony open --op manage --action reload-policy --policy-sha256 {}`)",
            file.origin,
            file.sha256,
            in_force.sha256,
            what.join("; "),
            file.sha256
        ),
    )
    .with("operation", "manage")
    .with("action", "reload-policy")
    .with("policy_sha256", &file.sha256)
    .into()
}

/// Adds to a refusal's record the SHA-256 of the policy in force and of the refused file.
pub(crate) fn refusal_params(draft: &mut AuditDraft, in_force: &Policy, file: &Policy) {
    draft
        .params
        .insert("policy_sha256_in_force".into(), in_force.sha256.clone());
    draft
        .params
        .insert("policy_sha256_refused".into(), file.sha256.clone());
}

/// What a starting node does with its policy file, given the policy its registry kept.
pub(crate) enum AtStart {
    /// The registry keeps no policy yet: the file is in force, and is stored.
    First(Arc<Policy>),
    /// The file is the policy the registry keeps.
    Same(Arc<Policy>),
    /// The file changed while the node was down and weakens nothing: it is in force, recorded
    /// and stored.
    Changed(Arc<Policy>),
    /// The file weakens the policy the registry keeps, which stays in force; the refusal is
    /// recorded.
    Refused {
        /// The policy that stays in force.
        kept: Arc<Policy>,
        /// The refused file.
        file: Arc<Policy>,
        /// What it weakens.
        weakened: Vec<Weakening>,
    },
}

impl AtStart {
    /// Compares the policy file (loaded from `path`) with the policy the registry keeps.
    pub(crate) fn decide(
        path: &Path,
        store: &dyn Store,
        file: Policy,
    ) -> Result<AtStart, NodeError> {
        let Some(kept) = store.policy_in_force()? else {
            check_log_before_first_store(store, &file)?;
            return Ok(AtStart::First(Arc::new(file)));
        };
        if kept.sha256 == file.sha256 {
            return Ok(AtStart::Same(Arc::new(file)));
        }
        let origin = format!("{} (kept in the registry)", kept.origin);
        let kept_policy = Policy::parse(&kept.text, &origin).map_err(|e| {
            NodeError::FailedPrecondition(format!(
                "the policy in force kept in the registry does not load ({e}); restore the \
                 registry from a backup"
            ))
        })?;
        if kept_policy.sha256 != kept.sha256 {
            return Err(NodeError::FailedPrecondition(format!(
                "the policy in force kept in the registry has SHA-256 {} but its text hashes to \
                 {}: the registry was changed outside hkms; restore it from a backup",
                kept.sha256, kept_policy.sha256
            )));
        }
        let weakened = crate::policy::weakenings(&kept_policy, &file);
        if weakened.is_empty() {
            return Ok(AtStart::Changed(Arc::new(file)));
        }
        tracing::debug!(file = %path.display(), "the policy file weakens the kept policy");
        Ok(AtStart::Refused {
            kept: Arc::new(kept_policy),
            file: Arc::new(file),
            weakened,
        })
    }

    /// The policy that decides once the node serves.
    pub(crate) fn in_force(&self) -> Arc<Policy> {
        match self {
            AtStart::First(p) | AtStart::Same(p) | AtStart::Changed(p) => Arc::clone(p),
            AtStart::Refused { kept, .. } => Arc::clone(kept),
        }
    }
}

/// How many log lines a start reads at a time when it looks for the last policy in force.
const LOG_WINDOW: u64 = 512;

/// A registry that keeps no policy yet is a new one, or one from an hkms before the floor.
/// Either way its log, if it has one, names the policy that decided last: a file that is not
/// that policy is refused, so that removing the registry's row cannot put any file in force.
fn check_log_before_first_store(store: &dyn Store, file: &Policy) -> Result<(), NodeError> {
    let Some((head, _)) = store.audit_head()? else {
        return Ok(());
    };
    let mut to = head;
    while to >= 1 {
        let from = to.saturating_sub(LOG_WINDOW - 1).max(1);
        let lines = store.audit_lines(from, to, usize::MAX)?;
        for (seq, line) in lines.iter().rev() {
            let Some(sha) = policy_after(line) else {
                continue;
            };
            if sha.eq_ignore_ascii_case(&file.sha256) {
                return Ok(());
            }
            return Err(NodeError::FailedPrecondition(format!(
                "the registry keeps no policy in force, but its ceremony log shows the policy \
                 with SHA-256 {sha} in force at record {seq}, and the file {} has SHA-256 {}: \
                 put back the file with SHA-256 {sha} and start again, then change the policy \
                 by a reload-policy ceremony (or restore the registry from a backup)",
                file.origin, file.sha256
            )));
        }
        if from == 1 {
            break;
        }
        to = from - 1;
    }
    Ok(())
}

/// The SHA-256 of the policy in force after the record `line`, when the record tells: the
/// policy a successful reload put in force, or the one that decided the request.
fn policy_after(line: &str) -> Option<String> {
    let r: AuditRecord = serde_json::from_str(line).ok()?;
    let reloaded = r.result.ok
        && (r.rpc == "ReloadPolicy"
            || (r.rpc == "ExecuteCeremony"
                && r.params.get("action").is_some_and(|a| a == "reload-policy")));
    if reloaded && let Some(sha) = r.params.get("policy_sha256") {
        return Some(sha.clone());
    }
    (!r.policy_sha256.is_empty()).then_some(r.policy_sha256)
}

impl Core {
    /// The policy file's path.
    pub(crate) fn policy_path(&self) -> &Path {
        &self.policy.path
    }

    /// Puts in the registry, in one transaction, `draft`'s record of a reload and `p` as the
    /// policy in force; the caller swaps `p` in once this returns.
    pub(crate) fn record_policy(&self, draft: &AuditDraft, p: &Policy) -> Result<(), NodeError> {
        let r = self
            .store
            .put_policy_audited(&stored(p, self.policy_path()), draft)?;
        self.after_append(r.seq);
        Ok(())
    }

    /// [`Core::record_policy`] for a request: its record, as a success, with `p` stored.
    pub(crate) fn commit_policy(&self, req: &mut Request, p: &Policy) -> Result<(), NodeError> {
        let row = stored(p, self.policy_path());
        self.commit(req, None, |d| {
            self.store
                .put_policy_audited(&row, d)
                .map(|r| ((), Some(r.seq)))
        })
    }

    /// Keeps `p` as the policy in force after a reload whose record is durable already (a
    /// `reload-policy` ceremony's). A registry that does not take it is logged: the policy is
    /// in force (its record says so), but a restart would decide by the one kept before.
    pub(crate) fn keep_policy(&self, p: &Policy) {
        if let Err(e) = self.store.put_policy(&stored(p, self.policy_path())) {
            tracing::error!(
                error = %e,
                sha256 = %p.sha256,
                "cannot keep the reloaded policy in the registry: after a restart the policy kept \
                 before would decide; reload it again once the registry is writable"
            );
        }
    }

    /// Settles the policy at start, once the core can write records: stores the first policy,
    /// records and stores a changed one, records the refusal of a weaker file.
    pub(crate) fn settle_policy(&self, start: AtStart) -> Result<(), NodeError> {
        let path = self.policy_path().to_path_buf();
        match start {
            AtStart::Same(_) => Ok(()),
            AtStart::First(p) => Ok(self.store.put_policy(&stored(&p, &path))?),
            AtStart::Changed(p) => {
                let mut draft = start_draft(self.name(), None);
                draft.policy_sha256 = p.sha256.clone();
                draft
                    .params
                    .insert("policy_sha256".into(), p.sha256.clone());
                self.record_policy(&draft, &p)?;
                tracing::info!(sha256 = %p.sha256, "the policy file changed while the node was down; it is in force");
                Ok(())
            }
            AtStart::Refused {
                kept,
                file,
                weakened,
            } => {
                let refusal = weaker_refused(&kept, &file, &weakened);
                let mut draft = start_draft(self.name(), Some(&refusal));
                draft.policy_sha256 = kept.sha256.clone();
                refusal_params(&mut draft, &kept, &file);
                self.record(&draft)?;
                tracing::warn!(
                    in_force = %kept.sha256,
                    refused = %file.sha256,
                    error = %refusal,
                    "the policy file weakens the policy in force; the policy kept in the registry decides"
                );
                Ok(())
            }
        }
    }
}

/// The record of what a start did with a changed policy file: a reload by the host, refused
/// when `failure` is given.
fn start_draft(node: &str, failure: Option<&NodeError>) -> AuditDraft {
    host_draft(
        node,
        "host:start",
        "ReloadPolicy",
        failure.map(ToString::to_string).as_deref(),
    )
}

/// The record of a reload the host administrator asked for (`actor`: `host:SIGHUP`, or
/// `host:start` for a file changed while the node was down) by `rpc`, which `failure`, when
/// given, refused.
pub(crate) fn host_draft(node: &str, actor: &str, rpc: &str, failure: Option<&str>) -> AuditDraft {
    AuditDraft {
        request_id: format!("r-{}", uuid::Uuid::new_v4().simple()),
        node: node.to_string(),
        actor: actor.into(),
        rpc: rpc.into(),
        operation: crate::policy::Operation::Manage.as_str().into(),
        outcome: Some(match failure {
            None => Outcome {
                ok: true,
                code: "OK".into(),
                message: String::new(),
            },
            Some(why) => Outcome {
                ok: false,
                code: ErrorClass::FailedPrecondition.code_name().into(),
                message: crate::audit::record::cut(why, crate::audit::record::MAX_MESSAGE),
            },
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditLog, PolicyStore, SqliteStore};

    const DEFAULT: &str = include_str!("../../../policies/default.toml");

    fn policy(text: &str) -> Policy {
        Policy::parse(text, "p.toml").unwrap()
    }

    fn weaker() -> String {
        DEFAULT.replacen("quorum = 2\nofficers = 3", "quorum = 1\nofficers = 3", 1)
    }

    fn decide(store: &SqliteStore, text: &str) -> AtStart {
        AtStart::decide(Path::new("p.toml"), store, policy(text)).unwrap()
    }

    #[test]
    fn a_start_keeps_the_registry_s_policy_against_a_weaker_file() {
        let store = SqliteStore::open_in_memory().unwrap();
        assert!(matches!(decide(&store, DEFAULT), AtStart::First(_)));
        store
            .put_policy(&stored(&policy(DEFAULT), Path::new("p.toml")))
            .unwrap();
        assert!(matches!(decide(&store, DEFAULT), AtStart::Same(_)));
        let raised = DEFAULT.replacen("quorum = 2\nofficers = 3", "quorum = 3\nofficers = 3", 1);
        assert!(matches!(decide(&store, &raised), AtStart::Changed(_)));
        let AtStart::Refused {
            kept,
            file,
            weakened,
        } = decide(&store, &weaker())
        else {
            panic!("a weaker file is refused");
        };
        assert_eq!(kept.sha256, policy(DEFAULT).sha256);
        assert_eq!(file.sha256, policy(&weaker()).sha256);
        assert_eq!(weakened.len(), 1);
        assert!(
            kept.origin.contains("kept in the registry"),
            "{}",
            kept.origin
        );
    }

    #[test]
    fn a_kept_policy_whose_text_does_not_match_its_hash_is_refused() {
        let store = SqliteStore::open_in_memory().unwrap();
        let mut row = stored(&policy(DEFAULT), Path::new("p.toml"));
        row.text = weaker();
        store.put_policy(&row).unwrap();
        let err = AtStart::decide(Path::new("p.toml"), &store, policy(&weaker()))
            .err()
            .expect("refused");
        assert!(err.to_string().contains("changed outside hkms"), "{err}");
    }

    #[test]
    fn without_a_kept_policy_the_log_names_the_policy_that_decided_last() {
        let store = SqliteStore::open_in_memory().unwrap();
        let old = policy(DEFAULT);
        let mut draft = AuditDraft {
            rpc: "GetPolicy".into(),
            policy_sha256: old.sha256.clone(),
            ..AuditDraft::default()
        };
        store.append_audit(&draft).unwrap();
        // Records that name no policy are passed over.
        draft.policy_sha256.clear();
        for _ in 0..600 {
            store.append_audit(&draft).unwrap();
        }
        assert!(matches!(decide(&store, DEFAULT), AtStart::First(_)));
        let err = AtStart::decide(Path::new("p.toml"), &store, policy(&weaker()))
            .err()
            .expect("refused");
        assert!(
            err.to_string().contains(&format!(
                "shows the policy with SHA-256 {} in force at record 1",
                old.sha256
            )),
            "{err}"
        );
        // A reload record names the policy it put in force.
        let mut reload = AuditDraft {
            rpc: "ReloadPolicy".into(),
            policy_sha256: old.sha256.clone(),
            outcome: Some(crate::audit::Outcome {
                ok: true,
                code: "OK".into(),
                message: String::new(),
            }),
            ..AuditDraft::default()
        };
        reload
            .params
            .insert("policy_sha256".into(), policy(&weaker()).sha256);
        store.append_audit(&reload).unwrap();
        assert!(matches!(decide(&store, &weaker()), AtStart::First(_)));
    }
}
