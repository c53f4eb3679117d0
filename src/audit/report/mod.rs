//! The ceremony report: what happened, for people (auditors, key custodians), from a bundle.
//!
//! [`verdict`] verifies the bundle as `hkms audit verify` does; [`model`] and [`keys`] work out
//! what the records say once; [`markdown`] and [`html`] render it. The HTML form is the one an
//! auditor hands in: one self-contained file.

pub mod html;
mod html_escape;
pub mod keys;
pub mod markdown;
pub mod model;
mod timeline;
pub mod verdict;

#[cfg(test)]
pub(crate) mod test_records;

pub use html::html_report;
pub use markdown::{ceremony_report, verified_report};
pub use verdict::{Verdict, Verification};

use super::record::AuditRecord;
use super::verify::{VerifyError, parse_record_line};

/// Parses record lines (as in `records.jsonl`) for the report; a line that is not a record is
/// named as the verifier names it ("records.jsonl line L").
pub fn parse_records(lines: &[String]) -> Result<Vec<AuditRecord>, VerifyError> {
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| parse_record_line(i + 1, line))
        .collect()
}
