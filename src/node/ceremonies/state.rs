//! A ceremony as callers and the registry see it: its state, its id, its approvals.

use std::time::{SystemTime, UNIX_EPOCH};

use super::super::NodeError;
use super::CeremonyAction;
use crate::store::ApprovalRow;

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
    /// Every state, in the order a ceremony can reach them.
    pub const ALL: [CeremonyState; 7] = [
        CeremonyState::Open,
        CeremonyState::Running,
        CeremonyState::Done,
        CeremonyState::Failed,
        CeremonyState::Cancelled,
        CeremonyState::Expired,
        CeremonyState::Used,
    ];

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

    pub(crate) fn parse(s: &str) -> Result<CeremonyState, NodeError> {
        CeremonyState::ALL
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
    /// What it runs when its quorum is met.
    pub action: CeremonyAction,
    /// Who opened it.
    pub opener: String,
    /// Approvals needed.
    pub quorum: u32,
    /// Distinct approvers so far, with times and, under an officer roster, their persons.
    pub approvals: Vec<ApprovalRow>,
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

/// Unix seconds now (0 if the clock is before 1970).
pub(super) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A ceremony's id: `c-` and 32 hex digits, as the node makes them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CeremonyId(String);

impl CeremonyId {
    /// Reads an id, refusing anything else before it reaches a record or a query.
    pub fn parse(text: &str) -> Result<CeremonyId, NodeError> {
        check_ceremony_id(text)?;
        Ok(CeremonyId(text.to_string()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for CeremonyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
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
