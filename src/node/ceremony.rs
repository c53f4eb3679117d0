//! Ceremonies: operations the policy puts under dual control run only when enough distinct
//! officers approve them (M of N), before the ceremony expires. State lives in the registry, so
//! a restart keeps the approvals. Key entry by components is a generate ceremony whose
//! custodians each enter one clear component (checked by its own KCV); the components live only
//! in memory, zeroized, until the key is made.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use crate::audit::KcvEntry;
use crate::hierarchy::{KeyId, KeyTypeSpec};
use crate::hsm::{Lifetime, SecretKeySpec};
use crate::policy::{Identity, Operation, Policy};
use crate::store::{CeremonyRow, CeremonyStore, KeyRecord, KeyRegistry, now_rfc3339};

use super::keys::{needs_quorum_state, parse_state};
use super::{Node, NodeError, Request};

/// Where a ceremony stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CeremonyState {
    /// Waiting for approvals.
    Open,
    /// Its operation is running (a crash here leaves it so, and it is never re-run).
    Running,
    /// Its operation succeeded.
    Done,
    /// Its operation failed.
    Failed,
    /// Cancelled by an officer.
    Cancelled,
    /// Not approved in time.
    Expired,
    /// Done, and its approval spent (an issue-card ceremony approves one card).
    Used,
}

impl CeremonyState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            CeremonyState::Open => "open",
            CeremonyState::Running => "running",
            CeremonyState::Done => "done",
            CeremonyState::Failed => "failed",
            CeremonyState::Cancelled => "cancelled",
            CeremonyState::Expired => "expired",
            CeremonyState::Used => "used",
        }
    }

    fn parse(s: &str) -> Result<CeremonyState, NodeError> {
        [
            CeremonyState::Open,
            CeremonyState::Running,
            CeremonyState::Done,
            CeremonyState::Failed,
            CeremonyState::Cancelled,
            CeremonyState::Expired,
            CeremonyState::Used,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
        .ok_or_else(|| NodeError::Internal(format!("ceremony state `{s}` in the registry")))
    }
}

/// A ceremony as callers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ceremony {
    /// "c-" + 32 hex digits.
    pub id: String,
    /// The guarded operation.
    pub operation: Operation,
    /// Its parameters (key_type; key_id and state; action; components).
    pub params: BTreeMap<String, String>,
    /// Who opened it.
    pub opener: String,
    /// Approvals needed.
    pub quorum: u32,
    /// Distinct approvers so far, with times.
    pub approvals: Vec<(String, String)>,
    /// When it was opened.
    pub created_at: String,
    /// Unix seconds after which it cannot run.
    pub expires_at: u64,
    /// Where it stands.
    pub state: CeremonyState,
    /// What came of it (key id and KCV, or the error).
    pub result: String,
    /// Components entered so far (component ceremonies; in memory only).
    pub components_entered: usize,
}

/// One custodian's clear component, wiped on drop.
type Component = (String, Zeroizing<Vec<u8>>);

/// Clear components per ceremony, only in memory.
#[derive(Default)]
pub(crate) struct PendingComponents(Mutex<HashMap<String, Vec<Component>>>);

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
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

impl Node {
    /// Opens a ceremony for `operation` with `params`. The opener must be allowed the operation
    /// itself; the opener's approval counts once when the policy lets them approve.
    pub fn open_ceremony(
        &self,
        req: &mut Request,
        operation: &str,
        params: BTreeMap<String, String>,
    ) -> Result<Ceremony, NodeError> {
        req.param("operation", operation);
        // Every ceremony takes a handful; more is refused before the record lists them.
        const MAX_PARAMS: usize = 8;
        if params.len() > MAX_PARAMS {
            return Err(NodeError::InvalidArgument(format!(
                "{} ceremony parameters; a ceremony takes at most {MAX_PARAMS}",
                params.len()
            )));
        }
        for (k, v) in &params {
            req.param(k, v.clone());
        }
        let op: Operation = operation.parse().map_err(NodeError::InvalidArgument)?;
        let key_type = self.check_ceremony_request(req, op, &params)?;
        let policy = self.policy();
        let quorum = policy.quorum(op, key_type.as_deref()).ok_or_else(|| {
            NodeError::FailedPrecondition(format!(
                "{op} {} needs no ceremony under the current policy; call it directly",
                key_type.as_deref().unwrap_or("(node)")
            ))
        })?;
        // Custodians approve by entering components, so fewer components than approvals
        // needed would make a ceremony that can never run.
        if let Some(n) = params.get("components").and_then(|n| n.parse::<u32>().ok())
            && n < quorum.approvals
        {
            return Err(NodeError::InvalidArgument(format!(
                "{n} components cannot make the {} approvals the policy asks for {op} {}; ask for \
                 at least {} components",
                quorum.approvals,
                key_type.as_deref().unwrap_or("(node)"),
                quorum.approvals
            )));
        }
        let id = format!("c-{}", uuid::Uuid::new_v4().simple());
        req.audit.ceremony = Some(id.clone());
        let now = now_rfc3339();
        let opener = req.caller.to_uri();
        let components = params.contains_key("components");
        let mut approvals = Vec::new();
        // The opener counts once if they may approve; custodians count by entering components.
        if !components
            && policy
                .decide(&req.caller, Operation::Approve, None, &self.region)
                .allowed
        {
            approvals.push((opener.clone(), now.clone()));
        }
        let row = CeremonyRow {
            id: id.clone(),
            operation: op.as_str().to_string(),
            params: serde_json::to_string(&params)
                .map_err(|e| NodeError::Internal(format!("ceremony parameters: {e}")))?,
            opener,
            quorum: quorum.approvals,
            created_at: now,
            expires_at: now_secs().saturating_add(self.ceremony_ttl.as_secs()),
            state: CeremonyState::Open.as_str().into(),
            result: String::new(),
            approvals,
        };
        let logged = self
            .store
            .insert_ceremony_audited(&row, &req.success_record())?;
        req.mark_logged();
        self.after_append(logged.seq);
        self.run_if_ready(req, &id)
    }

    /// Checks the parameters of a ceremony request and that the caller may do the operation;
    /// returns the key type concerned.
    fn check_ceremony_request(
        &self,
        req: &mut Request,
        op: Operation,
        params: &BTreeMap<String, String>,
    ) -> Result<Option<String>, NodeError> {
        let get = |k: &str| params.get(k).map(String::as_str);
        let allowed: &[&str] = match op {
            Operation::Generate => &["key_type", "components"],
            Operation::Manage => &["key_id", "state", "action", "region", "policy_sha256"],
            other => {
                return Err(NodeError::InvalidArgument(format!(
                    "`{other}` is not run by ceremony; ceremonies run generate and manage"
                )));
            }
        };
        if let Some(k) = params.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(NodeError::InvalidArgument(format!(
                "unknown ceremony parameter `{k}` for {op} (known: {})",
                allowed.join(", ")
            )));
        }
        match op {
            Operation::Generate => {
                let kt = get("key_type").ok_or_else(|| {
                    NodeError::InvalidArgument("a generate ceremony needs key_type".into())
                })?;
                Self::key_type(&self.policy(), kt)?;
                if let Some(n) = get("components")
                    && !matches!(n, "2" | "3")
                {
                    return Err(NodeError::InvalidArgument(format!(
                        "components must be 2 or 3, not `{n}`"
                    )));
                }
                self.authorize(req, Operation::Generate, Some(kt), &self.region)?;
                Ok(Some(kt.to_string()))
            }
            _ => match (get("action"), get("key_id")) {
                (Some("reload-policy"), None) => {
                    self.authorize(req, Operation::Manage, None, &self.region)?;
                    // The officers approve one file, named by its hash, not whatever the file
                    // holds when the last of them approves.
                    let wanted = get("policy_sha256").unwrap_or_default();
                    if wanted.len() != 64 || !wanted.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(NodeError::InvalidArgument(
                            "a reload-policy ceremony needs policy_sha256: the SHA-256 (64 hex \
                             digits) of the policy file to put in force"
                                .into(),
                        ));
                    }
                    let actual = self.policy_file_sha256()?;
                    if !actual.eq_ignore_ascii_case(wanted) {
                        return Err(NodeError::InvalidArgument(format!(
                            "the policy file on this node has SHA-256 {actual}, not {wanted}; \
                             open the ceremony for the file that is there"
                        )));
                    }
                    Ok(None)
                }
                (Some("issue-card"), None) => {
                    let region = crate::hierarchy::Region::parse(get("region").unwrap_or_default())?;
                    self.authorize(req, Operation::Export, Some(super::transport::TRANSPORT), &region)?;
                    Ok(None)
                }
                (None, Some(key_id)) => {
                    let record = self.get_key_record(&KeyId::parse(key_id)?)?;
                    let state = parse_state(get("state").unwrap_or_default())?;
                    if !needs_quorum_state(state) {
                        return Err(NodeError::InvalidArgument(format!(
                            "a manage ceremony retires or destroys a key; `{state}` is done directly"
                        )));
                    }
                    record.state.transition(state)?;
                    req.key(&record);
                    self.authorize_key(req, Operation::Manage, &record)?;
                    Ok(Some(record.key_type.as_str().to_string()))
                }
                _ => Err(NodeError::InvalidArgument(
                    "a manage ceremony needs key_id and state, action = reload-policy, or action = \
                     issue-card with region"
                        .into(),
                )),
            },
        }
    }

    /// Approves a ceremony; when the quorum is met it runs at once.
    pub fn approve_ceremony(&self, req: &mut Request, id: &str) -> Result<Ceremony, NodeError> {
        let c = self.ceremony_for_action(req, id)?;
        let me = req.caller.to_uri();
        if c.params.contains_key("components") {
            return Err(NodeError::FailedPrecondition(
                "custodians approve a component ceremony by entering their component".into(),
            ));
        }
        if c.approvals.iter().any(|(who, _)| *who == me) {
            return Err(NodeError::AlreadyExists(format!(
                "{me} has already approved ceremony {id}; it still needs {} more approval(s) from \
                 other officers",
                c.quorum.saturating_sub(c.approvals.len() as u32)
            )));
        }
        self.record_approval(req, id, &me)
    }

    /// Enters one clear key component of a component ceremony; it counts as the custodian's
    /// approval. The component's KCV must match the one on the custodian's sheet.
    pub fn enter_component(
        &self,
        req: &mut Request,
        id: &str,
        component: Zeroizing<Vec<u8>>,
        kcv: &str,
    ) -> Result<Ceremony, NodeError> {
        let c = self.ceremony_for_action(req, id)?;
        let parts: usize = c
            .params
            .get("components")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| {
                NodeError::FailedPrecondition(format!("ceremony {id} takes no components"))
            })?;
        let spec = self.ceremony_key_type(&c)?;
        if component.len() != spec.algorithm.key_len() {
            return Err(NodeError::InvalidArgument(format!(
                "a component of a {} key is {} bytes, not {}",
                spec.algorithm.as_str(),
                spec.algorithm.key_len(),
                component.len()
            )));
        }
        // Split knowledge: a zero component gives the others the whole key.
        if component.iter().all(|b| *b == 0) {
            return Err(NodeError::InvalidArgument(
                "a component of all zeros is refused: each custodian's component must be random"
                    .into(),
            ));
        }
        let me = req.caller.to_uri();
        let entered = self.components_entered(id);
        if entered.contains(&me) {
            return Err(NodeError::AlreadyExists(format!(
                "{me} has already entered a component of ceremony {id}; another custodian enters the next"
            )));
        }
        if entered.len() >= parts {
            return Err(NodeError::FailedPrecondition(format!(
                "ceremony {id} has all {parts} components"
            )));
        }
        let got = self.hsm.component_kcv(spec.algorithm, &component)?;
        req.audit.kcvs.push(KcvEntry {
            key_id: format!("component-{}", entered.len() + 1),
            kcv: got.to_hex(),
            method: got.method.as_str().to_string(),
        });
        if !got.to_hex().eq_ignore_ascii_case(kcv.trim()) {
            return Err(NodeError::InvalidArgument(format!(
                "the component's KCV is {}, not {}: re-check the component with its custodian",
                got.to_hex(),
                kcv.trim()
            )));
        }
        {
            // Checked again under the lock: two entries racing for one place cannot both land.
            let mut all = self
                .components
                .0
                .lock()
                .map_err(|_| NodeError::Internal("component store poisoned".into()))?;
            let held = all.entry(id.to_string()).or_default();
            if held.iter().any(|(who, _)| *who == me) || held.len() >= parts {
                return Err(NodeError::AlreadyExists(format!(
                    "ceremony {id} already has this custodian's component, or all {parts}"
                )));
            }
            // Two equal components cancel out, leaving the key to the third custodian alone.
            if held.iter().any(|(_, other)| same_secret(other, &component)) {
                return Err(NodeError::InvalidArgument(
                    "this component equals one already entered; each custodian's component \
                     must be their own random value"
                        .into(),
                ));
            }
            held.push((me.clone(), component));
        }
        self.record_approval(req, id, &me).inspect_err(|_| {
            // Not recorded as an approval: not held either, so the custodian can enter it again.
            if !req.is_logged()
                && let Ok(mut all) = self.components.0.lock()
                && let Some(held) = all.get_mut(id)
            {
                held.retain(|(who, _)| *who != me);
            }
        })
    }

    /// Records `me`'s approval with the request's record, then runs the ceremony if that
    /// completed it.
    fn record_approval(
        &self,
        req: &mut Request,
        id: &str,
        me: &str,
    ) -> Result<Ceremony, NodeError> {
        let (_, logged) =
            self.store
                .approve_ceremony_audited(id, me, &now_rfc3339(), &req.success_record())?;
        req.mark_logged();
        self.after_append(logged.seq);
        self.run_if_ready(req, id)
    }

    /// Cancels an open ceremony (its opener or an officer who may approve).
    pub fn cancel_ceremony(&self, req: &mut Request, id: &str) -> Result<Ceremony, NodeError> {
        self.ceremony_for_action(req, id)?;
        // The change and its record in one commit; when it was not open any more, the
        // request's failure is recorded when it ends.
        let record = self.store.set_ceremony_state_audited(
            id,
            CeremonyState::Open.as_str(),
            CeremonyState::Cancelled.as_str(),
            &format!("cancelled by {}", req.caller),
            &req.success_record(),
        )?;
        let Some(record) = record else {
            return Err(NodeError::FailedPrecondition(format!(
                "ceremony {id} is no longer open"
            )));
        };
        req.mark_logged();
        self.after_append(record.seq);
        self.forget_components(id);
        self.ceremony(id)
    }

    /// One ceremony (officers and auditors).
    pub fn get_ceremony(&self, req: &mut Request, id: &str) -> Result<Ceremony, NodeError> {
        req.param("ceremony", id);
        self.authorize_ceremony_read(req)?;
        self.ceremony(id)
    }

    /// Ceremonies, newest first, optionally in one state.
    pub fn list_ceremonies(
        &self,
        req: &mut Request,
        state: &str,
    ) -> Result<Vec<Ceremony>, NodeError> {
        if !state.is_empty() {
            req.param("state", state);
            CeremonyState::parse(state).map_err(|_| {
                NodeError::InvalidArgument(format!(
                    "unknown ceremony state `{state}` (open, running, done, failed, cancelled, expired, used)"
                ))
            })?;
        }
        self.authorize_ceremony_read(req)?;
        self.store
            .list_ceremonies((!state.is_empty()).then_some(state))?
            .into_iter()
            .map(|r| self.to_ceremony(r))
            .collect()
    }

    fn authorize_ceremony_read(&self, req: &mut Request) -> Result<(), NodeError> {
        // Officers see ceremonies as approvers, auditors as readers of the log, others (an
        // admin following a policy reload) as readers of the node's own state.
        let policy = self.policy();
        let op = [Operation::Approve, Operation::ReadAudit]
            .into_iter()
            .find(|op| policy.decide(&req.caller, *op, None, &self.region).allowed)
            .unwrap_or(Operation::Read);
        self.authorize(req, op, None, &self.region).map(|_| ())
    }

    /// Loads an open, unexpired ceremony for approving, entering or cancelling.
    fn ceremony_for_action(&self, req: &mut Request, id: &str) -> Result<Ceremony, NodeError> {
        req.param("ceremony", id);
        check_ceremony_id(id)?;
        req.audit.ceremony = Some(id.to_string());
        self.authorize(req, Operation::Approve, None, &self.region)?;
        let c = self.ceremony(id)?;
        if c.state != CeremonyState::Open {
            return Err(NodeError::FailedPrecondition(format!(
                "ceremony {id} is {}; only an open ceremony can be approved or cancelled",
                c.state.as_str()
            )));
        }
        if now_secs() >= c.expires_at {
            let expired = NodeError::FailedPrecondition(format!(
                "ceremony {id} expired before it had its approvals; open a new one"
            ));
            // The request fails, but it moves the ceremony: both go in one commit.
            if let Some(record) = self.store.set_ceremony_state_audited(
                id,
                CeremonyState::Open.as_str(),
                CeremonyState::Expired.as_str(),
                "not approved in time",
                &req.failure_record(&expired),
            )? {
                req.mark_logged();
                self.after_append(record.seq);
                self.forget_components(id);
            }
            return Err(expired);
        }
        Ok(c)
    }

    pub(crate) fn ceremony(&self, id: &str) -> Result<Ceremony, NodeError> {
        check_ceremony_id(id)?;
        let row = self
            .store
            .get_ceremony(id)?
            .ok_or_else(|| NodeError::NotFound(format!("no ceremony {id} on this node")))?;
        self.to_ceremony(row)
    }

    fn to_ceremony(&self, r: CeremonyRow) -> Result<Ceremony, NodeError> {
        let params: BTreeMap<String, String> = serde_json::from_str(&r.params)
            .map_err(|e| NodeError::Internal(format!("ceremony {} parameters: {e}", r.id)))?;
        Ok(Ceremony {
            components_entered: self.components_entered(&r.id).len(),
            operation: r.operation.parse().map_err(NodeError::Internal)?,
            state: CeremonyState::parse(&r.state)?,
            id: r.id,
            params,
            opener: r.opener,
            quorum: r.quorum,
            approvals: r.approvals,
            created_at: r.created_at,
            expires_at: r.expires_at,
            result: r.result,
        })
    }

    fn components_entered(&self, id: &str) -> Vec<String> {
        self.components
            .0
            .lock()
            .map(|all| {
                all.get(id)
                    .map(|v| v.iter().map(|(who, _)| who.clone()).collect())
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }

    fn forget_components(&self, id: &str) {
        if let Ok(mut all) = self.components.0.lock() {
            all.remove(id);
        }
    }

    /// Drops the components of every ceremony that can no longer run (expired a sweep's period
    /// ago, cancelled, ended, or gone), so that a ceremony nobody comes back to does not keep
    /// clear components in memory. A running ceremony keeps them: its run is taking them. The
    /// server calls it now and then; returns how many ceremonies it cleared.
    pub fn forget_lapsed_components(&self) -> usize {
        let ids: Vec<String> = match self.components.0.lock() {
            Ok(all) => all.keys().cloned().collect(),
            Err(_) => return 0,
        };
        let now = now_secs();
        // The last component may come just before expiry; its run claims the ceremony soon after.
        let grace = self.component_sweep_every().as_secs();
        let open = CeremonyState::Open.as_str();
        let running = CeremonyState::Running.as_str();
        let lapsed: Vec<String> = ids
            .into_iter()
            .filter(|id| match self.store.get_ceremony(id) {
                Ok(Some(c)) if c.state == running => false,
                Ok(Some(c)) if c.state == open => now >= c.expires_at.saturating_add(grace),
                Ok(Some(_)) | Ok(None) => true,
                // Kept for now; the next sweep tries again.
                Err(_) => false,
            })
            .collect();
        for id in &lapsed {
            self.forget_components(id);
        }
        lapsed.len()
    }

    /// How often [`Node::forget_lapsed_components`] should run: often enough that components
    /// outlive their ceremony by little.
    pub fn component_sweep_every(&self) -> std::time::Duration {
        self.ceremony_ttl.clamp(
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(30),
        )
    }

    fn ceremony_key_type(&self, c: &Ceremony) -> Result<KeyTypeSpec, NodeError> {
        let kt = c
            .params
            .get("key_type")
            .map(String::as_str)
            .unwrap_or_default();
        Self::key_type(&self.policy(), kt)
    }

    /// The approvals a ceremony has under the policy in force, and the most it needs: its
    /// own quorum or the policy's, whichever is higher. A policy reloaded since it opened can
    /// raise the quorum or take an approver's right away; it never lowers what is needed.
    fn approvals_in_force(&self, c: &Ceremony) -> Result<(u32, u32), NodeError> {
        let policy = self.policy();
        let key_type = match c.params.get("key_id") {
            Some(id) => Some(
                self.get_key_record(&KeyId::parse(id)?)?
                    .key_type
                    .as_str()
                    .to_string(),
            ),
            None => c.params.get("key_type").cloned(),
        };
        let needed = policy
            .quorum(c.operation, key_type.as_deref())
            .map_or(c.quorum, |q| q.approvals.max(c.quorum));
        let valid = c
            .approvals
            .iter()
            .filter(|(who, _)| {
                Identity::from_uri(who).is_ok_and(|id| {
                    policy
                        .decide(&id, Operation::Approve, None, &self.region)
                        .allowed
                })
            })
            .count() as u32;
        Ok((valid, needed))
    }

    /// Runs the ceremony's operation once it has its approvals (and components).
    fn run_if_ready(&self, req: &Request, id: &str) -> Result<Ceremony, NodeError> {
        let c = self.ceremony(id)?;
        let parts: Option<usize> = c.params.get("components").and_then(|n| n.parse().ok());
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
        if !self.store.set_ceremony_state(
            id,
            CeremonyState::Open.as_str(),
            CeremonyState::Running.as_str(),
            "",
        )? {
            return self.ceremony(id);
        }
        let mut exec = Request::new(
            req.caller.clone(),
            &self.name,
            "ExecuteCeremony",
            &req.audit.request_id,
        );
        exec.audit.ceremony = Some(id.to_string());
        for (k, v) in &c.params {
            exec.param(k, v.clone());
        }
        exec.param("opener", c.opener.clone());
        exec.param(
            "approvers",
            c.approvals
                .iter()
                .map(|(a, _)| a.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        );
        let outcome = self.execute(&mut exec, &c);
        // Whatever happens from here, the components were for this one run.
        self.forget_components(id);
        let (state, result) = match &outcome {
            Ok(done) => (CeremonyState::Done, done.text.clone()),
            Err(e) => (CeremonyState::Failed, e.to_string()),
        };
        let (from, to) = (CeremonyState::Running.as_str(), state.as_str());
        if exec.is_logged() {
            // The operation wrote its record with its change (a new key).
            self.store.set_ceremony_state(id, from, to, &result)?;
        } else {
            // The ceremony's end and its record in one commit.
            let d = match &outcome {
                Ok(_) => exec.success_record(),
                Err(e) => exec.failure_record(e),
            };
            if let Some(record) = self
                .store
                .set_ceremony_state_audited(id, from, to, &result, &d)?
            {
                self.after_append(record.seq);
            }
        }
        // A policy a ceremony reloaded is in force once its record is durable.
        if let Ok(Executed {
            new_policy: Some((p, _reloading)),
            ..
        }) = &outcome
        {
            self.swap_policy(p);
        }
        self.ceremony(id)
    }

    fn execute(&self, exec: &mut Request, c: &Ceremony) -> Result<Executed<'_>, NodeError> {
        let get = |k: &str| c.params.get(k).map(String::as_str);
        match c.operation {
            Operation::Generate => {
                let spec = self.ceremony_key_type(c)?;
                let key = match get("components") {
                    None => self.generate_key_now(exec, &spec)?,
                    Some(_) => self.combine_components(exec, &c.id, &spec)?,
                };
                Ok(Executed::text(describe(&key)))
            }
            Operation::Manage => match get("action") {
                Some("reload-policy") => {
                    let reloading = self.reloading();
                    let p = self.load_new_policy()?;
                    let Some(approved) = get("policy_sha256") else {
                        return Err(NodeError::FailedPrecondition(
                            "this reload ceremony was opened without policy_sha256 (by an \
                             earlier hkms); open a new one for the file's SHA-256"
                                .into(),
                        ));
                    };
                    if !p.sha256.eq_ignore_ascii_case(approved) {
                        return Err(NodeError::FailedPrecondition(format!(
                            "the policy file changed after the ceremony was opened: it has \
                             SHA-256 {}, the officers approved {approved}; the policy in force \
                             stays",
                            p.sha256
                        )));
                    }
                    Ok(Executed {
                        text: format!("policy reloaded, sha256 {}", p.sha256),
                        new_policy: Some((p, reloading)),
                    })
                }
                Some("issue-card") => Ok(Executed::text(format!(
                    "approved: issue one transport key card for {} with \
                     `hkms transport issue-card --ceremony {}`",
                    get("region").unwrap_or_default(),
                    c.id
                ))),
                _ => {
                    let record =
                        self.get_key_record(&KeyId::parse(get("key_id").unwrap_or_default())?)?;
                    let state = parse_state(get("state").unwrap_or_default())?;
                    let key = self.change_key_state_now(exec, &record, state, None)?;
                    Ok(Executed::text(describe(&key)))
                }
            },
            other => Err(NodeError::Internal(format!("no ceremony runs {other}"))),
        }
    }

    /// XORs the components in zeroized host memory (SoftHSM2 and most tokens offer no XOR
    /// derive) and creates the key in the token, recording that the combination was on the host.
    fn combine_components(
        &self,
        exec: &mut Request,
        id: &str,
        spec: &KeyTypeSpec,
    ) -> Result<KeyRecord, NodeError> {
        let parts = {
            let mut all = self
                .components
                .0
                .lock()
                .map_err(|_| NodeError::Internal("component store poisoned".into()))?;
            all.remove(id).unwrap_or_default()
        };
        let wanted: usize = self
            .ceremony(id)?
            .params
            .get("components")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let mut custodians: Vec<&str> = parts.iter().map(|(who, _)| who.as_str()).collect();
        custodians.sort_unstable();
        custodians.dedup();
        // Each the key's length: a policy reloaded since may have changed the algorithm.
        let lengths_fit = parts
            .iter()
            .all(|(_, p)| p.len() == spec.algorithm.key_len());
        if wanted < 2 || parts.len() != wanted || custodians.len() != wanted || !lengths_fit {
            return Err(NodeError::FailedPrecondition(format!(
                "ceremony {id} holds {} components from {} custodians, not {wanted}; open a new \
                 ceremony and enter them again",
                parts.len(),
                custodians.len()
            )));
        }
        let mut value = Zeroizing::new(vec![0u8; spec.algorithm.key_len()]);
        for (_, part) in &parts {
            for (v, p) in value.iter_mut().zip(part.iter()) {
                *v ^= *p;
            }
        }
        drop(parts);
        if value.iter().all(|b| *b == 0) {
            return Err(NodeError::InvalidArgument(
                "the components cancel out (their XOR is all zeros); enter new components".into(),
            ));
        }
        exec.param(
            "combined_in",
            "host memory, zeroized (the token has no XOR derive)",
        );
        let _one_at_a_time = self
            .generate_lock
            .lock()
            .map_err(|_| NodeError::Internal("key generation lock poisoned".into()))?;
        let key_id = KeyId::new_random();
        let version = self.store.next_version(&spec.name, &self.region)?;
        let kcv = self.hsm.import_clear_key(
            &SecretKeySpec {
                algorithm: spec.algorithm,
                usage: spec.usage,
                exportable: false,
                label: key_id.ck_label(),
                id: key_id.ck_id(),
                lifetime: Lifetime::Token,
            },
            &value,
        )?;
        drop(value);
        let record = self.own_key_record(key_id, spec.name.clone(), spec.algorithm, kcv, version);
        self.register(exec, record)
    }
}

/// Whether two secrets are equal, in a time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// Refuses anything but a ceremony id as the node makes them (`c-` and 32 hex digits), before
/// it reaches a record or a query: a caller's megabyte-long "id" must not grow the log.
pub(crate) fn check_ceremony_id(id: &str) -> Result<(), NodeError> {
    let hex = id.strip_prefix("c-").unwrap_or_default();
    if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(());
    }
    Err(NodeError::InvalidArgument(format!(
        "`{}` is not a ceremony id (c- and 32 hex digits, as `hkms ceremony list` shows)",
        crate::audit::record::cut(id, 40)
    )))
}

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

#[cfg(test)]
mod id_tests {
    use super::check_ceremony_id;

    #[test]
    fn only_ids_the_node_makes_are_taken() {
        assert!(check_ceremony_id("c-0123456789abcdef0123456789ABCDEF").is_ok());
        for bad in [
            "",
            "c-",
            "c-123",
            "k-0123456789abcdef0123456789abcdef",
            "c-0123456789abcdef0123456789abcdeg",
        ] {
            assert!(check_ceremony_id(bad).is_err(), "{bad}");
        }
        let long = format!("c-{}", "a".repeat(100_000));
        let err = check_ceremony_id(&long).unwrap_err().to_string();
        assert!(err.len() < 200, "{}", err.len());
    }
}
