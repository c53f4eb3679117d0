//! The ceremony log: one hash-chained record per request, allowed or denied; checkpoints signed
//! in the HSM; bundles that an auditor verifies offline with nothing but the public key.

pub mod bundle;
pub mod consistency;
pub mod record;
pub mod report;
pub mod verify;
pub mod witness;

pub use record::{
    AuditDraft, AuditRecord, Checkpoint, DecisionEntry, KcvEntry, Outcome, RetryClaim,
};
