//! The operations the policy decides on.

use std::fmt;
use std::str::FromStr;

/// One kind of request, as the policy names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operation {
    /// Generate a key in the HSM.
    Generate,
    /// Diversify a sub-key for a child region.
    Derive,
    /// Wrap a sub-key for transport to another node.
    Export,
    /// Load a key package from another node.
    Import,
    /// Use a key for card services (PIN unblock and reload).
    Use,
    /// Read key metadata (and the policy).
    Read,
    /// Read the ceremony log.
    ReadAudit,
    /// Have the node compute an ID number's MAC and find the card service records that carry
    /// it: a step past reading the log (which shows only MACs), so a rule of its own.
    FindId,
    /// Approve a ceremony.
    Approve,
    /// Change a key's state, reload the policy, other node management.
    Manage,
    /// Have this node check and cosign another node's ceremony log checkpoint (a witness).
    Witness,
}

impl Operation {
    /// Every operation.
    pub const ALL: [Operation; 11] = [
        Operation::Generate,
        Operation::Derive,
        Operation::Export,
        Operation::Import,
        Operation::Use,
        Operation::Read,
        Operation::ReadAudit,
        Operation::FindId,
        Operation::Approve,
        Operation::Manage,
        Operation::Witness,
    ];

    /// The name used in policy files.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Generate => "generate",
            Operation::Derive => "derive",
            Operation::Export => "export",
            Operation::Import => "import",
            Operation::Use => "use",
            Operation::Read => "read",
            Operation::ReadAudit => "read-audit",
            Operation::FindId => "find-id",
            Operation::Approve => "approve",
            Operation::Manage => "manage",
            Operation::Witness => "witness",
        }
    }

    /// Whether the operation only reads.
    pub fn is_read_only(self) -> bool {
        matches!(
            self,
            Operation::Read | Operation::ReadAudit | Operation::FindId
        )
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Operation {
    type Err = String;
    fn from_str(s: &str) -> Result<Operation, String> {
        Operation::ALL
            .into_iter()
            .find(|o| o.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown operation `{s}` (operations: {})",
                    Operation::ALL.map(|o| o.as_str()).join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_reads_are_read_only() {
        let read_only: Vec<Operation> = Operation::ALL
            .into_iter()
            .filter(|o| o.is_read_only())
            .collect();
        // Finding an ID number's records reads the log and has the token compute a MAC.
        assert_eq!(
            read_only,
            vec![Operation::Read, Operation::ReadAudit, Operation::FindId]
        );
    }
}
