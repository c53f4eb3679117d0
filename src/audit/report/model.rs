//! What the ceremony report says, worked out once from the records for both of its forms
//! (Markdown, HTML): the range of records, each ceremony's events, approvers and outcome, the
//! key operations outside ceremonies, the cards personalised and the keys exported per key, and
//! the refused requests by status code and caller.
//!
//! Values stay as the records carry them (raw, untrusted text): each renderer escapes them for
//! its own format.

use std::collections::{BTreeMap, BTreeSet};

use crate::audit::record::AuditRecord;

/// RPC that opens a ceremony.
pub const OPEN: &str = "OpenCeremony";
/// RPC that approves a ceremony.
pub const APPROVE: &str = "ApproveCeremony";
/// RPC by which a custodian enters a key component (it counts as their approval).
pub const ENTER: &str = "EnterComponent";
/// RPC that cancels a ceremony.
pub const CANCEL: &str = "CancelCeremony";
/// RPC whose records (one per card) carry the card keys made for the personalisation bureau.
pub const PERSONALISE: &str = "PersonaliseCards";
/// RPC that wraps a key into a key package for another node.
pub const EXPORT: &str = "ExportKey";
/// The record the node writes when a ceremony's operation runs.
pub const EXECUTE: &str = "ExecuteCeremony";
/// Status code of a ceremony that ran out of time.
pub const EXPIRED_CODE: &str = "DEADLINE_EXCEEDED";
/// How many record numbers a list of records shows before it stops.
pub const MAX_LISTED: usize = 20;

/// The records a report covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span<'a> {
    /// The first record.
    pub first: &'a AuditRecord,
    /// The last record.
    pub last: &'a AuditRecord,
    /// How many records.
    pub count: usize,
    /// The node names the records carry, sorted, each once.
    pub nodes: Vec<&'a str>,
}

/// The range of `records` (in seq order); `None` when there are none.
pub fn span(records: &[AuditRecord]) -> Option<Span<'_>> {
    let (first, last) = (records.first()?, records.last()?);
    let mut nodes: Vec<&str> = records.iter().map(|r| r.node.as_str()).collect();
    nodes.sort_unstable();
    nodes.dedup();
    Some(Span {
        first,
        last,
        count: records.len(),
        nodes,
    })
}

/// What a record is to its ceremony.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The opening.
    Open,
    /// An approval (allowed or refused).
    Approve,
    /// A custodian's component.
    Component,
    /// A cancellation.
    Cancel,
    /// A request that found the ceremony expired.
    Expire,
    /// The ceremony's operation running.
    Execute,
    /// Anything else about the ceremony (a read).
    Other,
}

/// Classifies a ceremony's record. The node finds a ceremony expired when someone acts on it
/// too late: that request fails with a message saying so, and is the expiry's record.
pub fn event_kind(r: &AuditRecord) -> EventKind {
    let expired = r.rpc.contains("Expire")
        || r.result.code == EXPIRED_CODE
        || (!r.result.ok && r.result.message.contains("expired"));
    match r.rpc.as_str() {
        _ if expired => EventKind::Expire,
        OPEN => EventKind::Open,
        APPROVE => EventKind::Approve,
        ENTER => EventKind::Component,
        CANCEL => EventKind::Cancel,
        EXECUTE => EventKind::Execute,
        _ if !r.kcvs.is_empty() => EventKind::Execute,
        _ => EventKind::Other,
    }
}

/// One record of a ceremony, with what it is to the ceremony.
#[derive(Debug, Clone, Copy)]
pub struct Event<'a> {
    /// What it is.
    pub kind: EventKind,
    /// The record.
    pub record: &'a AuditRecord,
}

/// How a ceremony ended, as far as the records tell.
#[derive(Debug, Clone)]
pub enum CeremonyOutcome<'a> {
    /// Its operation ran; the records of the run, with the KCVs of what it made.
    Executed(Vec<&'a AuditRecord>),
    /// Cancelled.
    Cancelled,
    /// Ran out of time.
    Expired,
    /// Its operation ran and failed.
    Failed,
    /// No outcome in these records: still open, or the outcome is later in the log.
    Pending,
}

impl CeremonyOutcome<'_> {
    /// One word for it.
    pub fn word(&self) -> &'static str {
        match self {
            CeremonyOutcome::Executed(_) => "executed",
            CeremonyOutcome::Cancelled => "cancelled",
            CeremonyOutcome::Expired => "expired",
            CeremonyOutcome::Failed => "failed",
            CeremonyOutcome::Pending => "pending",
        }
    }
}

/// One ceremony from opening to outcome.
#[derive(Debug, Clone)]
pub struct Ceremony<'a> {
    /// Its id, as the records carry it.
    pub id: &'a str,
    /// Its records, in seq order.
    pub events: Vec<Event<'a>>,
    /// Whether its opening is in these records.
    pub opened: bool,
    /// Who approved, as the node counted: the opener when the node counted their approval,
    /// every allowed approval and component; replaced by the approvers the run names.
    /// Identity URIs as recorded ("" for an unauthenticated caller).
    pub approvers: Vec<&'a str>,
    /// How it ended.
    pub outcome: CeremonyOutcome<'a>,
    /// The record of that outcome (none while pending).
    pub ended: Option<&'a AuditRecord>,
}

impl<'a> Ceremony<'a> {
    /// The opening record, when it is in these records.
    pub fn opening(&self) -> Option<&'a AuditRecord> {
        self.events
            .iter()
            .find(|e| e.kind == EventKind::Open)
            .map(|e| e.record)
    }

    /// Its first record in these records.
    pub fn first(&self) -> Option<&'a AuditRecord> {
        self.events.first().map(|e| e.record)
    }
}

/// Every ceremony in `records`, in order of first appearance.
pub fn ceremonies(records: &[AuditRecord]) -> Vec<Ceremony<'_>> {
    let mut groups: Vec<(&str, Vec<&AuditRecord>)> = Vec::new();
    for r in records {
        let Some(id) = r.ceremony.as_deref() else {
            continue;
        };
        match groups.iter_mut().find(|(g, _)| *g == id) {
            Some((_, recs)) => recs.push(r),
            None => groups.push((id, vec![r])),
        }
    }
    groups
        .into_iter()
        .map(|(id, recs)| ceremony(id, &recs))
        .collect()
}

/// Works out one ceremony's approvers and outcome from its records.
fn ceremony<'a>(id: &'a str, recs: &[&'a AuditRecord]) -> Ceremony<'a> {
    let mut approvers: Vec<&str> = Vec::new();
    let mut executed: Vec<&AuditRecord> = Vec::new();
    let (mut cancelled, mut expired, mut failed) = (None, None, None);
    let mut events = Vec::with_capacity(recs.len());
    for r in recs.iter().copied() {
        let kind = event_kind(r);
        match kind {
            EventKind::Open => {
                // The node counts the opener's approval when they may approve (records name
                // it; older ones do not, and count only the approvals that follow).
                if r.result.ok && r.params.get("opener_approved").is_some_and(|v| v == "true") {
                    approvers.push(&r.actor);
                }
            }
            EventKind::Approve | EventKind::Component => {
                if r.result.ok {
                    approvers.push(&r.actor);
                }
            }
            EventKind::Cancel => {
                if r.result.ok {
                    cancelled = Some(r);
                }
            }
            EventKind::Expire => expired = Some(r),
            EventKind::Execute => {
                // The run names the approvals it ran on: they are the count.
                let named = approvers_named(r);
                if !named.is_empty() {
                    approvers = named;
                }
                if r.result.ok {
                    executed.push(r);
                } else {
                    failed = Some(r);
                }
            }
            EventKind::Other => {}
        }
        events.push(Event { kind, record: r });
    }
    let (outcome, ended) = if let Some(last) = executed.last().copied() {
        (CeremonyOutcome::Executed(executed), Some(last))
    } else if cancelled.is_some() {
        (CeremonyOutcome::Cancelled, cancelled)
    } else if expired.is_some() {
        (CeremonyOutcome::Expired, expired)
    } else if failed.is_some() {
        (CeremonyOutcome::Failed, failed)
    } else {
        (CeremonyOutcome::Pending, None)
    };
    Ceremony {
        id,
        opened: events.iter().any(|e| e.record.rpc == OPEN),
        events,
        approvers,
        outcome,
        ended,
    }
}

/// The approvers an `ExecuteCeremony` record names (`approver_1`, `approver_2`, …; older
/// records list them space-separated in `approvers`).
fn approvers_named(r: &AuditRecord) -> Vec<&str> {
    let mut numbered: Vec<(u32, &String)> = r
        .params
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("approver_")?.parse().ok()?, v)))
        .collect();
    numbered.sort();
    if numbered.is_empty() {
        r.params
            .get("approvers")
            .map(|all| all.split(' ').filter(|a| !a.is_empty()).collect())
            .unwrap_or_default()
    } else {
        numbered.into_iter().map(|(_, v)| v.as_str()).collect()
    }
}

/// The successful key operations outside ceremonies (card personalisation is summed apart).
pub fn other_key_operations(records: &[AuditRecord]) -> Vec<&AuditRecord> {
    records
        .iter()
        .filter(|r| r.ceremony.is_none() && r.result.ok && !r.key_ids.is_empty())
        .filter(|r| r.rpc != PERSONALISE)
        .collect()
}

/// Cards personalised, per master key their card keys were derived from (in key id order):
/// the records, one per card.
pub fn personalised_per_master(records: &[AuditRecord]) -> BTreeMap<&str, Vec<u64>> {
    let mut per_master: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r.rpc == PERSONALISE && r.result.ok && r.params.contains_key("card_serial"))
    {
        for key in &r.key_ids {
            per_master.entry(key.as_str()).or_default().push(r.seq);
        }
    }
    per_master
}

/// Key packages made, per exported key (in key id order): the `ExportKey` records that
/// succeeded, each with its recipient region, package and transport card in its parameters.
pub fn exports_per_key(records: &[AuditRecord]) -> BTreeMap<&str, Vec<&AuditRecord>> {
    let mut per_key: BTreeMap<&str, Vec<&AuditRecord>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.rpc == EXPORT && r.result.ok) {
        let key = r
            .params
            .get("key_id")
            .or_else(|| r.key_ids.first())
            .map_or("", String::as_str);
        per_key.entry(key).or_default().push(r);
    }
    per_key
}

/// One caller's refused requests of one status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedCaller<'a> {
    /// The caller's identity URI as recorded ("" for an unauthenticated caller).
    pub actor: &'a str,
    /// The records, in seq order.
    pub seqs: Vec<u64>,
    /// The RPCs refused.
    pub rpcs: BTreeSet<&'a str>,
}

/// The refused requests of one status code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedGroup<'a> {
    /// The gRPC status code name.
    pub code: &'a str,
    /// Its callers, in identity order.
    pub callers: Vec<RefusedCaller<'a>>,
}

impl RefusedGroup<'_> {
    /// How many requests.
    pub fn total(&self) -> usize {
        self.callers.iter().map(|c| c.seqs.len()).sum()
    }
}

/// Every request that did not succeed, grouped by status code (the policy's refusals, then
/// missing identities, then attempts that skip a rule such as dual control, then bad input,
/// then the rest), and within a code by caller.
pub fn refused(records: &[AuditRecord]) -> Vec<RefusedGroup<'_>> {
    let mut by_code: BTreeMap<(usize, &str), BTreeMap<&str, RefusedCaller<'_>>> = BTreeMap::new();
    for r in records.iter().filter(|r| !r.result.ok) {
        let code = r.result.code.as_str();
        let caller = by_code
            .entry((code_rank(code), code))
            .or_default()
            .entry(r.actor.as_str())
            .or_insert_with(|| RefusedCaller {
                actor: &r.actor,
                seqs: Vec::new(),
                rpcs: BTreeSet::new(),
            });
        caller.seqs.push(r.seq);
        caller.rpcs.insert(&r.rpc);
    }
    by_code
        .into_iter()
        .map(|((_, code), callers)| RefusedGroup {
            code,
            callers: callers.into_values().collect(),
        })
        .collect()
}

/// Where a status code's refusals stand in the report: what an auditor looks at first.
fn code_rank(code: &str) -> usize {
    const ORDER: [&str; 6] = [
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "FAILED_PRECONDITION",
        "RESOURCE_EXHAUSTED",
        "INVALID_ARGUMENT",
        "NOT_FOUND",
    ];
    ORDER.iter().position(|c| *c == code).unwrap_or(ORDER.len())
}

/// What a refusal with this code says about the caller's attempt.
pub fn code_meaning(code: &str) -> &'static str {
    match code {
        "PERMISSION_DENIED" => "refused by the policy",
        "UNAUTHENTICATED" => "no usable identity (certificate refused or revoked)",
        "FAILED_PRECONDITION" => {
            "not possible in the node's state, or an attempt to skip a rule such as dual control"
        }
        "RESOURCE_EXHAUSTED" => "over a card command limit",
        "INVALID_ARGUMENT" => "malformed or wrong input",
        "NOT_FOUND" => "no such key or ceremony, or one the caller may not see",
        "ALREADY_EXISTS" => "done already (a second approval, a package imported twice)",
        "DEADLINE_EXCEEDED" => "too late (a ceremony that expired)",
        "UNAVAILABLE" => "the node or its token was not available",
        "INTERNAL" => "a fault of the node",
        _ => "other",
    }
}

/// The first [`MAX_LISTED`] of `seqs` as text, then "…" when there are more.
pub fn listed(seqs: &[u64]) -> Vec<String> {
    let mut listed: Vec<String> = seqs.iter().take(MAX_LISTED).map(u64::to_string).collect();
    if seqs.len() > MAX_LISTED {
        listed.push("…".into());
    }
    listed
}
