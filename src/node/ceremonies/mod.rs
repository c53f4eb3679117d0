//! Ceremonies: operations the policy puts under dual control run only when enough distinct
//! officers approve them (M of N), before the ceremony expires. State lives in the registry, so
//! a restart keeps the approvals. Key entry by components is a generate ceremony whose
//! custodians each enter one clear component (checked by its own KCV); the components live only
//! in memory, zeroized, until the key is made.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::hierarchy::KeyRecord;
use crate::hierarchy::KeyTypeSpec;
use crate::policy::{CertificateKey, Identity, Operation, Policy, Roster};
use crate::store::{ApprovalRow, CeremoniesAfter, CeremonyRow, now_rfc3339};

mod action;
mod components;
mod state;

pub use action::CeremonyAction;
pub(crate) use components::PendingComponents;
pub(crate) use state::check_ceremony_id;
use state::now_secs;
pub use state::{Ceremony, CeremonyId, CeremonyState};

use super::keys::needs_quorum_state;
use super::paging::{self, Page, PageAsk};
use super::{Core, Keys, NodeError, Reason, Request};

/// The ceremony use cases, over the node's core.
pub struct Ceremonies<'n> {
    pub(super) core: &'n Core,
    /// What a ceremony runs when it completes.
    pub(super) keys: Keys<'n>,
    pub(super) components: &'n PendingComponents,
    /// How long a ceremony stays open.
    pub(super) ttl: std::time::Duration,
}

/// What a ceremony's operation did, and what waits until its record is durable.
struct Executed<'a> {
    /// The ceremony's result text.
    text: String,
    /// A reloaded policy, put in force after the record, with the reload lock held until then.
    new_policy: Option<(Arc<Policy>, std::sync::MutexGuard<'a, ()>)>,
}

impl Executed<'_> {
    fn text(text: String) -> Executed<'static> {
        Executed {
            text,
            new_policy: None,
        }
    }
}

impl Ceremonies<'_> {
    /// Opens a ceremony for `operation` with `params`. The opener must be allowed the operation
    /// itself; the opener's approval counts once when the policy lets them approve.
    pub fn open_ceremony(
        &self,
        req: &mut Request,
        action: CeremonyAction,
    ) -> Result<Ceremony, NodeError> {
        let op = action.operation();
        let key_type = self.check_ceremony_request(req, &action)?;
        let policy = self.core.policy();
        let quorum = policy.quorum(op, key_type.as_deref()).ok_or_else(|| {
            NodeError::because(
                Reason::CeremonyNotRequired,
                format!(
                    "{op} {} needs no ceremony under the current policy; call it directly",
                    key_type.as_deref().unwrap_or("(node)")
                ),
            )
            .with("operation", op)
        })?;
        // Custodians approve by entering components, so fewer components than approvals
        // needed would make a ceremony that can never run.
        if let Some(n) = action.components().map(|n| n as u32)
            && n < quorum.approvals
        {
            return Err(NodeError::invalid_field(
                "params.components",
                format!(
                    "{n} components cannot make the {} approvals the policy asks for {op} {}; \
                     ask for at least {} components",
                    quorum.approvals,
                    key_type.as_deref().unwrap_or("(node)"),
                    quorum.approvals
                ),
            ));
        }
        let id = format!("c-{}", uuid::Uuid::new_v4().simple());
        req.ceremony(&id);
        let now = now_rfc3339();
        let opener = req.caller.to_uri();
        let components = action.components().is_some();
        let mut approvals = Vec::new();
        // The opener counts once if they may approve (and, under a roster, if their certificate
        // names a person of it); custodians count by entering components.
        if !components
            && policy
                .decide(&req.caller, Operation::Approve, None, &self.core.region())
                .allowed
        {
            match approval_of(req, &[], &policy, &id) {
                Ok(a) => approvals.push(a),
                Err(e) => {
                    tracing::info!(caller = %req.caller, reason = %e, "the opener's approval does not count")
                }
            }
        }
        // The report counts the opener's approval from this, as the node did.
        req.param("opener_approved", (!approvals.is_empty()).to_string());
        if let Some(person) = approvals.first().and_then(|a| a.person.clone()) {
            req.param("opener_person", person);
        }
        let row = CeremonyRow {
            id: id.clone(),
            operation: op.as_str().to_string(),
            params: serde_json::to_string(&action.params())
                .map_err(|e| NodeError::Internal(format!("ceremony parameters: {e}")))?,
            opener,
            quorum: quorum.approvals,
            created_at: now,
            expires_at: now_secs().saturating_add(self.ttl.as_secs()),
            state: CeremonyState::Open.as_str().into(),
            result: String::new(),
            approvals,
        };
        self.core.commit(req, None, |d| {
            self.core
                .store
                .insert_ceremony_audited(&row, d)
                .map(|logged| ((), Some(logged.seq)))
        })?;
        self.run_if_ready(req, &id)
    }

    /// Checks what the policy must allow of a ceremony's action: its key type exists, the
    /// caller may do the operation, the policy file is the approved one; returns the key type
    /// concerned.
    fn check_ceremony_request(
        &self,
        req: &mut Request,
        action: &CeremonyAction,
    ) -> Result<Option<String>, NodeError> {
        match action {
            CeremonyAction::Generate { key_type, .. } => {
                let kt = key_type.as_str();
                Core::key_type(&self.core.policy(), kt)?;
                self.core
                    .authorize_here(req, Operation::Generate, Some(kt))?;
                Ok(Some(kt.to_string()))
            }
            CeremonyAction::ReloadPolicy { sha256 } => {
                self.core.authorize_here(req, Operation::Manage, None)?;
                // The officers approve one file, named by its hash, not whatever the file
                // holds when the last of them approves.
                let wanted = sha256.as_deref().unwrap_or_default();
                if wanted.len() != 64 || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(NodeError::invalid_field(
                        "params.policy_sha256",
                        "a reload-policy ceremony needs policy_sha256: the SHA-256 (64 hex \
                         digits) of the policy file to put in force",
                    ));
                }
                let actual = self.core.policy.file_sha256()?;
                if !actual.eq_ignore_ascii_case(wanted) {
                    return Err(NodeError::invalid_field(
                        "params.policy_sha256",
                        format!(
                            "the policy file on this node has SHA-256 {actual}, not {wanted}; \
                             open the ceremony for the file that is there"
                        ),
                    ));
                }
                Ok(None)
            }
            CeremonyAction::IssueCard { region } => {
                let transport = Some(crate::policy::TRANSPORT_KEY_TYPE);
                self.core
                    .authorize(req, Operation::Export, transport, region)?;
                Ok(None)
            }
            CeremonyAction::ChangeKeyState { key_id, state } => {
                if !needs_quorum_state(*state) {
                    return Err(NodeError::invalid_field(
                        "params.state",
                        format!(
                            "a manage ceremony retires or destroys a key; `{state}` is done \
                             directly"
                        ),
                    ));
                }
                // Allowed first: the key's state is no answer for a caller who may not see it.
                let record = self
                    .core
                    .authorize_on_key(req, Operation::Manage, key_id, None)?;
                record
                    .state
                    .transition(*state)
                    .map_err(|e| NodeError::invalid_field("params.state", e.to_string()))?;
                Ok(Some(record.key_type.as_str().to_string()))
            }
        }
    }

    /// Approves a ceremony; when the quorum is met it runs at once.
    pub fn approve_ceremony(
        &self,
        req: &mut Request,
        id: &CeremonyId,
    ) -> Result<Ceremony, NodeError> {
        let id = id.as_str();
        let c = self.ceremony_for_action(req, id)?;
        let me = req.caller.to_uri();
        if c.action.components().is_some() {
            return Err(NodeError::because(
                Reason::WrongCeremony,
                "custodians approve a component ceremony by entering their component",
            )
            .with("ceremony_id", id)
            .into());
        }
        if c.approvals.iter().any(|a| a.approver == me) {
            return Err(NodeError::because(
                Reason::AlreadyApproved,
                format!(
                    "{me} has already approved ceremony {id}; it still needs {} more \
                     approval(s) from other officers",
                    c.quorum.saturating_sub(c.approvals.len() as u32)
                ),
            )
            .with("ceremony_id", id)
            .into());
        }
        let approval = approval_of(req, &c.approvals, &self.core.policy(), id)?;
        self.record_approval(req, id, approval)
    }

    /// Records `approval` with the request's record, then runs the ceremony if that completed
    /// it.
    fn record_approval(
        &self,
        req: &mut Request,
        id: &str,
        approval: ApprovalRow,
    ) -> Result<Ceremony, NodeError> {
        if let Some(person) = &approval.person {
            req.param("approver_person", person.clone());
        }
        if let Some(key) = &approval.certificate_key {
            req.param("certificate_key_sha256", key.clone());
        }
        self.core.commit(req, None, |d| {
            self.core
                .store
                .approve_ceremony_audited(id, &approval, d)
                .map(|(_, logged)| ((), Some(logged.seq)))
        })?;
        self.run_if_ready(req, id)
    }

    /// Cancels an open ceremony (its opener or an officer who may approve).
    pub fn cancel_ceremony(
        &self,
        req: &mut Request,
        id: &CeremonyId,
    ) -> Result<Ceremony, NodeError> {
        let id = id.as_str();
        self.ceremony_for_action(req, id)?;
        // The change and its record in one commit; when it was not open any more, the
        // request's failure is recorded when it ends.
        let why = format!("cancelled by {}", req.caller);
        let cancelled = self.core.commit(req, None, |d| {
            self.core
                .store
                .set_ceremony_state_audited(
                    id,
                    CeremonyState::Open.as_str(),
                    CeremonyState::Cancelled.as_str(),
                    &why,
                    d,
                )
                .map(|record| (record.is_some(), record.map(|r| r.seq)))
        })?;
        if !cancelled {
            return Err(NodeError::because(
                Reason::CeremonyNotOpen,
                format!("ceremony {id} is no longer open"),
            )
            .with("ceremony_id", id)
            .into());
        }
        self.forget_components(id);
        self.ceremony(id)
    }

    /// One ceremony (officers and auditors).
    pub fn get_ceremony(&self, req: &mut Request, id: &CeremonyId) -> Result<Ceremony, NodeError> {
        self.authorize_ceremony_read(req)?;
        self.ceremony(id.as_str())
    }

    /// One page of the ceremonies, optionally in one state, newest first by `created_at`, then
    /// id.
    pub fn list_ceremonies(
        &self,
        req: &mut Request,
        state: Option<CeremonyState>,
        ask: PageAsk<'_, Ceremony, CeremoniesAfter>,
    ) -> Result<Page<Ceremony, CeremoniesAfter>, NodeError> {
        self.authorize_ceremony_read(req)?;
        let state = state.map(CeremonyState::as_str);
        paging::fill(
            ask,
            |after, n| {
                self.core
                    .store
                    .list_ceremonies_page(state, after, n)?
                    .into_iter()
                    .map(|r| self.to_ceremony(r))
                    .collect()
            },
            |c| CeremoniesAfter {
                created_at: c.created_at.clone(),
                id: c.id.clone(),
            },
            |_| true,
        )
    }

    fn authorize_ceremony_read(&self, req: &mut Request) -> Result<(), NodeError> {
        // Officers see ceremonies as approvers, auditors as readers of the log, others (an
        // admin following a policy reload) as readers of the node's own state.
        let policy = self.core.policy();
        let op = [Operation::Approve, Operation::ReadAudit]
            .into_iter()
            .find(|op| {
                policy
                    .decide(&req.caller, *op, None, &self.core.region())
                    .allowed
            })
            .unwrap_or(Operation::Read);
        self.core
            .authorize(req, op, None, &self.core.region())
            .map(|_| ())
    }

    /// Loads an open, unexpired ceremony for approving, entering or cancelling.
    fn ceremony_for_action(&self, req: &mut Request, id: &str) -> Result<Ceremony, NodeError> {
        req.ceremony(id);
        self.core
            .authorize(req, Operation::Approve, None, &self.core.region())?;
        let c = self.ceremony(id)?;
        if c.state != CeremonyState::Open {
            return Err(NodeError::because(
                Reason::CeremonyNotOpen,
                format!(
                    "ceremony {id} is {}; only an open ceremony can be approved or cancelled",
                    c.state.as_str()
                ),
            )
            .with("ceremony_id", id)
            .with("state", c.state.as_str())
            .into());
        }
        if now_secs() >= c.expires_at {
            let expired: NodeError = NodeError::because(
                Reason::CeremonyExpired,
                format!("ceremony {id} expired before it had its approvals; open a new one"),
            )
            .with("ceremony_id", id)
            .into();
            // The request fails, but it moves the ceremony: both go in one commit.
            let moved = self.core.commit(req, Some(&expired), |d| {
                self.core
                    .store
                    .set_ceremony_state_audited(
                        id,
                        CeremonyState::Open.as_str(),
                        CeremonyState::Expired.as_str(),
                        "not approved in time",
                        d,
                    )
                    .map(|record| (record.is_some(), record.map(|r| r.seq)))
            })?;
            if moved {
                self.forget_components(id);
            }
            return Err(expired);
        }
        Ok(c)
    }

    pub(crate) fn ceremony(&self, id: &str) -> Result<Ceremony, NodeError> {
        check_ceremony_id(id)?;
        let row = self.core.store.get_ceremony(id)?.ok_or_else(|| {
            NodeError::because(
                Reason::CeremonyNotFound,
                format!("no ceremony {id} on this node"),
            )
            .with("ceremony_id", id)
        })?;
        self.to_ceremony(row)
    }

    fn to_ceremony(&self, r: CeremonyRow) -> Result<Ceremony, NodeError> {
        let params: BTreeMap<String, String> = serde_json::from_str(&r.params)
            .map_err(|e| NodeError::Internal(format!("ceremony {} parameters: {e}", r.id)))?;
        let operation: Operation = r.operation.parse().map_err(NodeError::Internal)?;
        let action = CeremonyAction::parse(operation, &params)
            .map_err(|e| NodeError::Internal(format!("ceremony {} in the registry: {e}", r.id)))?;
        let state = CeremonyState::parse(&r.state)?;
        // Held in memory while open; after that, each custodian's entry is their approval.
        let components_entered = match (state, action.components()) {
            (CeremonyState::Open, _) | (_, None) => self.components_entered(&r.id).len(),
            (_, Some(_)) => r.approvals.len(),
        };
        Ok(Ceremony {
            components_entered,
            state,
            id: r.id,
            action,
            opener: r.opener,
            quorum: r.quorum,
            approvals: r.approvals,
            created_at: r.created_at,
            expires_at: r.expires_at,
            result: r.result,
        })
    }

    fn ceremony_key_type(&self, c: &Ceremony) -> Result<KeyTypeSpec, NodeError> {
        let kt = match &c.action {
            CeremonyAction::Generate { key_type, .. } => key_type.as_str(),
            _ => "",
        };
        Core::key_type(&self.core.policy(), kt)
    }

    /// The approvals a ceremony has under the policy in force, and the most it needs: its
    /// own quorum or the policy's, whichever is higher. A policy reloaded since it opened can
    /// raise the quorum or take an approver's right away; it never lowers what is needed.
    fn approvals_in_force(&self, c: &Ceremony) -> Result<(u32, u32), NodeError> {
        let policy = self.core.policy();
        let key_type = match &c.action {
            CeremonyAction::ChangeKeyState { key_id, .. } => {
                Some(self.core.key_record(key_id)?.key_type.as_str().to_string())
            }
            CeremonyAction::Generate { key_type, .. } => Some(key_type.as_str().to_string()),
            _ => None,
        };
        let needed = policy
            .quorum(c.action.operation(), key_type.as_deref())
            .map_or(c.quorum, |q| q.approvals.max(c.quorum));
        let allowed = c.approvals.iter().filter(|a| {
            Identity::from_uri(&a.approver).is_ok_and(|id| {
                policy
                    .decide(&id, Operation::Approve, None, &self.core.region())
                    .allowed
            })
        });
        // Under a roster, persons count, by the roster in force: one person's certificates
        // count once, and a certificate the roster no longer names not at all.
        let valid = match &policy.roster {
            None => allowed.count(),
            Some(roster) => allowed
                .filter_map(|a| person_now(roster, a))
                .collect::<BTreeSet<_>>()
                .len(),
        };
        Ok((u32::try_from(valid).unwrap_or(u32::MAX), needed))
    }

    /// Runs the ceremony's operation once it has its approvals (and components).
    fn run_if_ready(&self, req: &Request, id: &str) -> Result<Ceremony, NodeError> {
        let c = self.ceremony(id)?;
        let parts: Option<usize> = c.action.components();
        if c.state != CeremonyState::Open {
            // Cancelled or expired while a component was being entered: none is kept. A
            // running ceremony is another request's, which is about to take them.
            if c.state != CeremonyState::Running {
                self.forget_components(id);
            }
            return Ok(c);
        }
        let (approved, needed) = self.approvals_in_force(&c)?;
        // An expired ceremony never runs; the sweep marks it expired.
        let ready = approved >= needed
            && parts.is_none_or(|n| c.components_entered >= n)
            && now_secs() < c.expires_at;
        if !ready {
            return Ok(c);
        }
        // Claim it first: a crash from here on leaves it `running`, never run twice.
        if !self.core.store.set_ceremony_state(
            id,
            CeremonyState::Open.as_str(),
            CeremonyState::Running.as_str(),
            "",
        )? {
            return self.ceremony(id);
        }
        let mut exec = Request::new(
            req.caller.clone(),
            self.core.name(),
            "ExecuteCeremony",
            req.request_id(),
        );
        exec.ceremony(id);
        for (k, v) in c.action.params() {
            exec.param(&k, v);
        }
        exec.param("opener", c.opener.clone());
        // One parameter per approver: a joined list would be cut at the parameter limit.
        for (n, a) in c.approvals.iter().enumerate() {
            exec.param(&format!("approver_{}", n + 1), a.approver.clone());
            if let Some(person) = &a.person {
                exec.param(&format!("person_{}", n + 1), person.clone());
            }
        }
        let outcome = self.execute(&mut exec, &c);
        // Whatever happens from here, the components were for this one run.
        self.forget_components(id);
        let (state, result) = match &outcome {
            Ok(done) => (CeremonyState::Done, done.text.clone()),
            Err(e) => (CeremonyState::Failed, e.to_string()),
        };
        let (from, to) = (CeremonyState::Running.as_str(), state.as_str());
        if exec.is_recorded() {
            // The operation wrote its record with its change (a new key).
            self.core.store.set_ceremony_state(id, from, to, &result)?;
        } else {
            // The ceremony's end and its record in one commit.
            self.core.commit(&mut exec, outcome.as_ref().err(), |d| {
                self.core
                    .store
                    .set_ceremony_state_audited(id, from, to, &result, d)
                    .map(|record| ((), record.map(|r| r.seq)))
            })?;
        }
        // A policy a ceremony reloaded is in force once its record is durable, and kept for
        // restarts: the ceremony is the one path that may weaken the policy in force.
        if let Ok(Executed {
            new_policy: Some((p, _reloading)),
            ..
        }) = &outcome
        {
            self.core.keep_policy(p);
            self.core.policy.swap(p);
        }
        self.ceremony(id)
    }

    fn execute(&self, exec: &mut Request, c: &Ceremony) -> Result<Executed<'_>, NodeError> {
        match &c.action {
            CeremonyAction::Generate { components, .. } => {
                let spec = self.ceremony_key_type(c)?;
                let key = match components {
                    None => self.keys.generate_key_now(exec, &spec)?,
                    Some(_) => self.combine_components(exec, &c.id, &spec)?,
                };
                Ok(Executed::text(describe(&key)))
            }
            CeremonyAction::ReloadPolicy { sha256 } => {
                let reloading = self.core.policy.reloading();
                let p = self.core.policy.load_new()?;
                let Some(approved) = sha256 else {
                    return Err(NodeError::because(
                        Reason::PolicyNotReloadable,
                        "this reload ceremony was opened without policy_sha256 (by an \
                         earlier hkms); open a new one for the file's SHA-256",
                    )
                    .into());
                };
                if !p.sha256.eq_ignore_ascii_case(approved) {
                    return Err(NodeError::because(
                        Reason::PolicyNotReloadable,
                        format!(
                            "the policy file changed after the ceremony was opened: it has \
                             SHA-256 {}, the officers approved {approved}; the policy in force \
                             stays",
                            p.sha256
                        ),
                    )
                    .with("policy_sha256", &p.sha256)
                    .into());
                }
                Ok(Executed {
                    text: format!("policy reloaded, sha256 {}", p.sha256),
                    new_policy: Some((p, reloading)),
                })
            }
            CeremonyAction::IssueCard { region } => Ok(Executed::text(format!(
                "approved: issue one transport key card for {region} with \
                 `hkms transport issue-card --ceremony {}`",
                c.id
            ))),
            CeremonyAction::ChangeKeyState { key_id, state } => {
                let record = self.core.key_record(key_id)?;
                let key = self
                    .keys
                    .change_key_state_now(exec, &record, *state, None)?;
                Ok(Executed::text(describe(&key)))
            }
        }
    }
}

/// The approval `req`'s caller makes of ceremony `id`, which has `approvals`, under `policy`.
/// Without a roster, an identity approves. With one, a person does: the one the caller's
/// certificate key names (a key on no one's list is refused), and only once, whichever of
/// their certificates they use.
fn approval_of(
    req: &Request,
    approvals: &[ApprovalRow],
    policy: &Policy,
    id: &str,
) -> Result<ApprovalRow, NodeError> {
    let mut approval = ApprovalRow::by(&req.caller.to_uri(), &now_rfc3339());
    approval.certificate_key = req.certificate_key().map(|k| k.to_string());
    let Some(roster) = &policy.roster else {
        return Ok(approval);
    };
    let Some(key) = req.certificate_key() else {
        return Err(NodeError::because(
            Reason::NotOnRoster,
            format!(
                "{} has no certificate key the officer roster could name; only the persons of \
                 the roster approve ceremonies",
                req.caller
            ),
        )
        .into());
    };
    let person = roster.person_of(key).ok_or_else(|| {
        NodeError::because(
            Reason::NotOnRoster,
            format!(
                "the certificate of {} has key SHA-256 {key}, which is on no officer's list in \
                 the policy's roster: only the persons it names approve ceremonies; to approve, \
                 have the key added to your [officers.NAME] certificates by a reload-policy \
                 ceremony",
                req.caller
            ),
        )
        .with("certificate_key_sha256", key)
    })?;
    if let Some(earlier) = approvals
        .iter()
        .find(|a| person_now(roster, a) == Some(person))
    {
        return Err(NodeError::because(
            Reason::PersonAlreadyApproved,
            format!(
                "already approved as {person}: {person} approved ceremony {id} with the \
                 certificate of {}; a person approves once, whichever certificate they hold, so \
                 it needs approvals from other persons of the roster",
                earlier.approver
            ),
        )
        .with("ceremony_id", id)
        .with("person", person)
        .into());
    }
    approval.person = Some(person.to_string());
    Ok(approval)
}

/// The person of the roster in force who made approval `a`, by its certificate key.
fn person_now<'r>(roster: &'r Roster, a: &ApprovalRow) -> Option<&'r str> {
    let key = CertificateKey::parse(a.certificate_key.as_deref()?).ok()?;
    roster.person_of(&key)
}

/// A made or changed key as a ceremony's result text.
fn describe(key: &KeyRecord) -> String {
    format!(
        "key {} ({} {}) KCV {} ({}), state {}",
        key.id,
        key.key_type.as_str(),
        key.region,
        key.kcv.to_hex(),
        key.kcv.method.as_str(),
        key.state
    )
}
