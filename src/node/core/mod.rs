//! The node core: what every use case shares and nothing more. The node's identity (name,
//! tier, region), its token, its registry, the policy in force, and the ceremony log with its
//! signing key. Use cases (`super::keys`, `super::ceremonies`, ...) borrow it; the core knows
//! none of them.

mod audit_key;
mod log;
mod policy;
mod registry;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

pub use log::{SIGNING_LABEL, Signing};
pub(crate) use policy::{PolicyCell, host_draft, refusal_params, weaker_refused};

use crate::card::IdNumber;
use crate::config::NodeConfig;
use crate::hierarchy::KeyRecord;
use crate::hierarchy::{KeyTypeSpec, Region, Tier};
use crate::hsm::{HsmError, ID_MAC_LABEL, IdMacKey, Pkcs11Token, ProbeReport, Token};
use crate::policy::{Decision, Operation, Policy};
use crate::store::{SqliteStore, Store};

use super::{NodeError, Reason, Request};

/// The node's shared state.
pub struct Core {
    name: String,
    tier: Tier,
    region: Region,
    pub(crate) token: Arc<dyn Token>,
    /// The token of the ceremony log's signing key: `token`, or one of its own.
    audit_key: audit_key::AuditKey,
    pub(crate) store: Arc<dyn Store>,
    /// The policy in force, and how a new one is put in force.
    pub(crate) policy: PolicyCell,
    signing: Signing,
    /// The last sequence number sealed by a checkpoint; also serialises checkpointing.
    sealed: Mutex<u64>,
    checkpoint_every: u64,
    checkpoint_interval: Duration,
    /// Set when the ceremony log was found changed outside hkms: nothing is sealed any more
    /// until a restart (and no request pays for the check again).
    log_changed: OnceLock<String>,
    /// The token probe's findings at start (`hsm::probe`).
    probe: ProbeReport,
}

/// Runs the token probe and says what it found; with `require_sealed`, a token that lets any
/// attack through is refused.
fn token_verdict(token: &dyn Token, require_sealed: bool) -> Result<ProbeReport, NodeError> {
    let report = token.probe_attacks()?;
    let leaks: Vec<String> = report
        .leaks()
        .iter()
        .map(|a| format!("{} ({})", a.name, a.token_did))
        .collect();
    if leaks.is_empty() {
        tracing::info!(
            attacks = report.attacks.len(),
            "token probe: every attack holds"
        );
    } else if require_sealed {
        return Err(NodeError::FailedPrecondition(format!(
            "the token lets {} of {} probed attacks through: {}; [token] require_sealed = true \
             refuses such a token (see docs/tokens.md, and `hkms token probe`)",
            leaks.len(),
            report.attacks.len(),
            leaks.join("; ")
        )));
    } else {
        tracing::warn!(
            leaks = %leaks.join("; "),
            "token probe: the token lets attacks through to whoever holds its user PIN; set \
             [token] require_sealed = true in production, on a token that stops them (docs/tokens.md)"
        );
    }
    Ok(report)
}

impl Core {
    /// Loads the policy, opens the registry, logs in to the token and makes sure the log's
    /// signing key exists. Any failure here means the node must not serve; the error says what
    /// to fix.
    pub(crate) fn open(config: &NodeConfig) -> Result<Core, NodeError> {
        let file = policy::load_policy(&config.policy)?;
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.database_path())?);
        // The registry's policy decides unless the file is as strong (the dual-control floor).
        let start = policy::AtStart::decide(&config.policy, store.as_ref(), file)?;
        let policy = PolicyCell::new(&config.policy, start.in_force());
        let token: Arc<dyn Token> = Arc::new(Pkcs11Token::open(&config.hsm)?);
        // Before anything is served: a modifiable public transport key is open to any session.
        let issued: Vec<String> = store
            .transport_keys()?
            .into_iter()
            .filter(|t| t.role == crate::transport::TransportRole::Issued)
            .map(|t| t.card_id)
            .collect();
        token.seal_issuer_keys(&issued)?;
        let probe = token_verdict(token.as_ref(), config.require_sealed)?;
        let last_checkpoint = store.last_checkpoint()?;
        let (audit_key, signing) =
            audit_key::AuditKey::open(config, &token, last_checkpoint.as_ref())?;
        ensure_id_mac_key(token.as_ref())?;
        let sealed = last_checkpoint.map_or(0, |c| c.seq);
        let core = Core {
            name: config.name.clone(),
            tier: config.tier,
            region: config.region,
            token,
            audit_key,
            store,
            policy,
            signing,
            sealed: Mutex::new(sealed),
            checkpoint_every: config.checkpoint_every,
            checkpoint_interval: config.checkpoint_interval,
            log_changed: OnceLock::new(),
            probe,
        };
        core.settle_policy(start)?;
        Ok(core)
    }

    /// What the token probe found at start.
    pub fn token_probe(&self) -> &ProbeReport {
        &self.probe
    }

    /// The node's name from its config.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's tier.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// The node's region.
    pub fn region(&self) -> Region {
        self.region
    }

    /// The node's token.
    pub fn token(&self) -> &dyn Token {
        self.token.as_ref()
    }

    /// The published key that signs the log's checkpoints.
    pub fn signing(&self) -> &Signing {
        &self.signing
    }

    /// How often checkpoints are signed when records are few.
    pub fn checkpoint_interval(&self) -> Duration {
        self.checkpoint_interval
    }

    /// Whether the token and the registry answer, for health reporting.
    pub fn health(&self) -> (Result<(), NodeError>, Result<(), NodeError>) {
        (
            self.token.check_alive().map_err(NodeError::from),
            self.store.ping().map_err(NodeError::from),
        )
    }

    /// Whether the audit key's token answers, for health reporting: its own token's check
    /// (which also drives the rebuild of its sessions), or the node's token's.
    pub fn audit_token_health(&self) -> Result<(), NodeError> {
        self.audit_key.check_alive().map_err(NodeError::from)
    }

    /// How the registry's group commit is doing, for metrics.
    pub fn commit_stats(&self) -> &crate::store::CommitStats {
        self.store.commit_stats()
    }

    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.current()
    }

    /// Asks the policy and records the decision in the request's audit record; a denial
    /// becomes PERMISSION_DENIED ([`Reason::PolicyDenied`]) with its reason.
    pub fn authorize(
        &self,
        req: &mut Request,
        op: Operation,
        key_type: Option<&str>,
        target: &Region,
    ) -> Result<Decision, NodeError> {
        let policy = self.policy();
        let decision = policy.decide(&req.caller, op, key_type, target);
        req.decided(op, &decision, &policy.sha256);
        if decision.allowed {
            tracing::debug!(caller = %req.caller, reason = %decision.reason, "policy");
            Ok(decision)
        } else {
            tracing::warn!(caller = %req.caller, reason = %decision.reason, "policy");
            Err(NodeError::because(Reason::PolicyDenied, decision.reason)
                .with("operation", op)
                .into())
        }
    }

    /// [`Core::authorize`] at the node's own region.
    pub fn authorize_here(
        &self,
        req: &mut Request,
        op: Operation,
        key_type: Option<&str>,
    ) -> Result<Decision, NodeError> {
        self.authorize(req, op, key_type, &self.region)
    }

    /// Reads the registered key `id` and asks the policy about `op` on it, for `target` (or
    /// the key's own region). A caller the policy refuses gets the answer a missing key gets,
    /// so answers tell no one which keys exist: NOT_FOUND when the policy lets them do `op` to
    /// some key, PERMISSION_DENIED naming no key when it never does. The record keeps the real
    /// decision and the server log its reason.
    pub(crate) fn authorize_on_key(
        &self,
        req: &mut Request,
        op: Operation,
        id: &crate::hierarchy::KeyId,
        target: Option<&Region>,
    ) -> Result<KeyRecord, NodeError> {
        let hidden = |req: &Request| {
            if self.policy().may_ever(&req.caller, op) {
                let target = target.map(|t| format!(" for {t}")).unwrap_or_default();
                NodeError::because(
                    Reason::KeyNotFound,
                    format!(
                        "no key {id} that {} may {op}{target} on this node",
                        req.caller
                    ),
                )
                .with("key_id", id)
                .into()
            } else {
                NodeError::because(
                    Reason::PolicyDenied,
                    format!(
                        "denied: no rule of the policy lets {} {op} any key on this node",
                        req.caller
                    ),
                )
                .with("operation", op)
                .into()
            }
        };
        let Some(record) = self.store.get_key(id)? else {
            return Err(hidden(req));
        };
        req.key(&record);
        let region = target.unwrap_or(&record.region);
        match self.authorize(req, op, Some(record.key_type.as_str()), region) {
            Ok(_) => Ok(record),
            Err(e) if e.reason() == Reason::PolicyDenied => Err(hidden(req)),
            Err(e) => Err(e),
        }
    }

    /// Refuses a direct request for an operation the policy puts under dual control.
    pub(crate) fn require_no_ceremony(
        &self,
        op: Operation,
        key_type: Option<&str>,
    ) -> Result<(), NodeError> {
        match self.policy().quorum(op, key_type) {
            None => Ok(()),
            Some(q) => {
                let needed = NodeError::because(
                    Reason::CeremonyRequired,
                    format!(
                        "{op} {} is under dual control: it needs a ceremony with {} approvals \
                         (`hkms ceremony open --op {op}{}`)",
                        key_type.unwrap_or("(node)"),
                        q.approvals,
                        key_type
                            .map(|k| format!(" --key-type {k}"))
                            .unwrap_or_default()
                    ),
                )
                .with("operation", op)
                .with("approvals", q.approvals);
                Err(match key_type {
                    Some(k) => needed.with("key_type", k),
                    None => needed,
                }
                .into())
            }
        }
    }

    /// The hex of `id`'s MAC (HMAC-SHA-256 under the token's ID MAC key, 64 digits): how a
    /// record carries an ID number, and what an auditor looks records up by.
    pub(crate) fn id_mac(&self, id: &IdNumber) -> Result<String, NodeError> {
        match self.token.id_mac(&id.mac_input()) {
            Ok(mac) => Ok(hex::encode(mac)),
            Err(HsmError::KeyNotFound { .. }) => Err(NodeError::because(
                Reason::TokenRefused,
                format!(
                    "the token has lost the ID MAC key {ID_MAC_LABEL} since the node started; \
                     restore the token (a restart would make a new key, and ID numbers \
                     recorded so far would no longer match new records)"
                ),
            )
            .into()),
            Err(e) => Err(e.into()),
        }
    }

    /// The key type `name` as the policy in force declares it.
    pub(crate) fn key_type(policy: &Policy, name: &str) -> Result<KeyTypeSpec, NodeError> {
        policy.catalogue.get(name).cloned().ok_or_else(|| {
            NodeError::because(
                Reason::UnknownKeyType,
                format!(
                    "unknown key type `{name}`; the policy declares: {}",
                    policy.catalogue.names().collect::<Vec<_>>().join(", ")
                ),
            )
            .with("key_type", name)
            .into()
        })
    }
}

/// Makes the ID MAC key on a token that has none, and refuses one that breaks its rules or
/// shares its label. A token without HMAC-SHA-256 still serves everything else: card
/// commands and ID lookups then fail, naming the mechanism.
fn ensure_id_mac_key(token: &dyn Token) -> Result<(), NodeError> {
    match token.ensure_id_mac_key() {
        Ok(IdMacKey::Made) => {
            tracing::info!(label = ID_MAC_LABEL, "made the ID MAC key in the token");
            Ok(())
        }
        Ok(IdMacKey::Found) => Ok(()),
        Err(HsmError::Unsupported { what } | HsmError::TokenLacks { what, .. }) => {
            tracing::warn!(
                missing = %what,
                "the token cannot make the ID MAC key: card commands and ID number lookups \
                 will be refused"
            );
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}
