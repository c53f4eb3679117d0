//! The ceremony log for auditors: its records, its checkpoints and the public key that signs
//! them. Every read is a `read-audit` decision at the node's region; finding the records of one
//! ID number is a `find-id` decision.

use crate::audit::witness::{Cosignature, ExportStatement};
use crate::audit::{AuditRecord, Checkpoint};
use crate::card::{
    AGENT_ID_HASH, AGENT_ID_MAC, CARDHOLDER_ID_HASH, CARDHOLDER_ID_MAC, IdNumber, LEGACY_SALT_LEN,
};
use crate::policy::Operation;
use crate::store::{CosignatureMark, CosignaturesAfter};
use serde::{Deserialize, Serialize};

use super::paging::{self, Page, PageAsk};
use super::{Core, NodeError, Request, Signing};

/// The most sequence numbers one lookup returns; past it, the answer says there are more.
pub const MAX_ID_RECORDS: usize = 1000;

/// How many records a lookup reads per turn on the registry's reader, which card services
/// share: a long log is searched in turns, not in one go that would hold them up.
const SEARCH_TURN: u64 = 10_000;

/// The auditor's use cases, over the node's core.
pub struct Audit<'n> {
    pub(super) core: &'n Core,
    /// The salt of the ID hashes in records made before ID MACs, if the node has it.
    pub(super) legacy_salt: Option<&'n [u8; LEGACY_SALT_LEN]>,
}

/// What an auditor's lookup of one ID number found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdNumberRecords {
    /// Hex of the number's ID MAC (64 digits), as card service records carry it.
    pub id_mac: String,
    /// The sequence numbers of the records that carry it, as cardholder or agent, ascending;
    /// on a node that kept its `id-salt`, also of older records that carry its salted hash.
    pub seqs: Vec<u64>,
    /// More records carry it after the last one here: ask again from the next number.
    pub more: bool,
    /// Whether records made before ID MACs were searched too (the node has their salt).
    pub legacy_searched: bool,
}

/// One page of the log's checkpoints and their cosignatures for an auditor, and what else an
/// export carries.
#[derive(Debug, Clone)]
pub struct SealedLog {
    /// The checkpoints by sequence number, then the cosignatures by seq, then witness: as
    /// many as the page holds.
    pub page: Page<LogItem, CheckpointsAfter>,
    /// On the first page with `seal`, the node's signed statement that the last checkpoint's
    /// record is its head; `None` on later pages, without `seal`, for an empty log, or when
    /// the log was changed under the node.
    pub statement: Option<ExportStatement>,
}

/// An item of the checkpoint listing.
#[derive(Debug, Clone, PartialEq)]
pub enum LogItem {
    /// A signed checkpoint.
    Checkpoint(Checkpoint),
    /// A witness's cosignature of one, with its place among the cosignatures.
    Cosignature {
        /// Its place in the order (seq, witness, witness key).
        at: CosignaturesAfter,
        /// The cosignature.
        cosignature: Cosignature,
    },
}

/// Where the next page of the checkpoint listing starts, and what the listing covers: the
/// first page fixes it, so that the pages of one export agree with its statement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointsAfter {
    /// The last checkpoint there was when the first page was read (after its seal): the pages
    /// list none past it.
    pub upto_seq: u64,
    /// The cosignatures stored before the first page's seal: the pages list only those, so
    /// that none is past `upto_seq` unless the log was cut back under its witnesses.
    pub cosignatures_upto: CosignatureMark,
    /// The last item of the page before.
    pub at: LogPlace,
}

/// The place of an item of the checkpoint listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum LogPlace {
    /// The checkpoint of this sequence number.
    Checkpoint(u64),
    /// This cosignature (all checkpoints come before it).
    Cosignature(CosignaturesAfter),
}

impl Audit<'_> {
    /// Record lines for an auditor, `from..=to`, at most `limit`.
    pub fn audit_lines(
        &self,
        req: &mut Request,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, NodeError> {
        self.core.authorize_here(req, Operation::ReadAudit, None)?;
        Ok(self.core.store.audit_lines(from, to, limit)?)
    }

    /// The next page of a `StreamRecords` stream whose request ([`Audit::audit_lines`]) was
    /// authorised and recorded: its later pages are part of that one request.
    pub fn audit_lines_after_first(
        &self,
        from: u64,
        to: u64,
        limit: usize,
    ) -> Result<Vec<(u64, String)>, NodeError> {
        Ok(self.core.store.audit_lines(from, to, limit)?)
    }

    /// The public key that signs this node's checkpoints, for an auditor to pin.
    pub fn audit_public_key(&self, req: &mut Request) -> Result<Signing, NodeError> {
        self.core.authorize_here(req, Operation::ReadAudit, None)?;
        Ok(self.core.signing().clone())
    }

    /// One page of the checkpoints, for an auditor, then of the witnesses' cosignatures of
    /// them. On the first page (no `ask.after`), with `seal`, the current head is sealed first,
    /// so that an export ends on a checkpoint, and the node states, signed, that this
    /// checkpoint's record is its head: the export statement that ends the bundle
    /// (docs/audit-format.md §8). Later pages seal nothing and list what the first one fixed.
    pub fn audit_checkpoints(
        &self,
        req: &mut Request,
        seal: bool,
        ask: PageAsk<'_, LogItem, CheckpointsAfter>,
    ) -> Result<SealedLog, NodeError> {
        self.core.authorize_here(req, Operation::ReadAudit, None)?;
        let (upto_seq, cosignatures_upto, statement) = match &ask.after {
            Some(after) => (after.upto_seq, after.cosignatures_upto, None),
            None => self.seal_for_listing(req, seal)?,
        };
        let store = &self.core.store;
        let page = paging::fill(
            ask,
            |after, n| {
                let (checkpoints_after, cosignatures_after) = match after.map(|a| &a.at) {
                    None => (Some(0), None),
                    Some(LogPlace::Checkpoint(seq)) => (Some(*seq), None),
                    Some(LogPlace::Cosignature(at)) => (None, Some(at)),
                };
                let mut items: Vec<LogItem> = match checkpoints_after {
                    Some(from) => store
                        .checkpoints_page(from, upto_seq, n)?
                        .into_iter()
                        .map(LogItem::Checkpoint)
                        .collect(),
                    None => Vec::new(),
                };
                if items.len() < n {
                    let cosignatures = store.cosignatures_page(
                        cosignatures_after,
                        cosignatures_upto,
                        n - items.len(),
                    )?;
                    items.extend(
                        cosignatures
                            .into_iter()
                            .map(|(at, cosignature)| LogItem::Cosignature { at, cosignature }),
                    );
                }
                Ok(items)
            },
            |item| CheckpointsAfter {
                upto_seq,
                cosignatures_upto,
                at: match item {
                    LogItem::Checkpoint(cp) => LogPlace::Checkpoint(cp.seq),
                    LogItem::Cosignature { at, .. } => LogPlace::Cosignature(at.clone()),
                },
            },
            |_| true,
        )?;
        Ok(SealedLog { page, statement })
    }

    /// What the first page of a checkpoint listing fixes: the last checkpoint (after sealing
    /// the head, with `seal`), the cosignatures stored before the seal, and with `seal` the
    /// node's statement of its head.
    fn seal_for_listing(
        &self,
        req: &mut Request,
        seal: bool,
    ) -> Result<(u64, CosignatureMark, Option<ExportStatement>), NodeError> {
        // Before the seal, so that each cosignature listed covers a checkpoint already sealed,
        // at or before the one this export ends on; one past it means the log was cut back
        // under the witness, and stays for the auditor's verifier to name.
        let cosignatures_upto = self.core.store.cosignature_mark()?;
        // A log changed under the node is exported as it is, without a new seal or a
        // statement: the auditor's verifier names where it breaks.
        if seal
            && let Err(e) = self.core.checkpoint()
            && !self.core.log_is_changed()
        {
            return Err(e);
        }
        let last = self.core.store.last_checkpoint()?;
        let statement = match &last {
            Some(cp) if seal && !self.core.log_is_changed() => {
                req.param("stated_seq", cp.seq.to_string());
                Some(self.core.export_statement(cp.seq, &cp.head)?)
            }
            _ => None,
        };
        Ok((last.map_or(0, |cp| cp.seq), cosignatures_upto, statement))
    }

    /// Has the token compute `id`'s MAC and finds the records from `from_seq` on whose
    /// cardholder or agent carries it (or, where the node kept its salt, whose older record
    /// carries its salted hash). The request's own record carries the MAC, never the number.
    pub fn find_id_number(
        &self,
        req: &mut Request,
        id: &IdNumber,
        from_seq: u64,
    ) -> Result<IdNumberRecords, NodeError> {
        // Before the decision: a refused lookup still shows whose number was asked for.
        let id_mac = self.core.id_mac(id)?;
        req.param("id_mac", id_mac.clone());
        self.core.authorize_here(req, Operation::FindId, None)?;
        let legacy = self
            .legacy_salt
            .map(|salt| id.legacy_hashes(salt))
            .unwrap_or_default();
        let mut wanted: Vec<(&str, &str)> =
            vec![(CARDHOLDER_ID_MAC, &id_mac), (AGENT_ID_MAC, &id_mac)];
        for hash in &legacy {
            wanted.push((CARDHOLDER_ID_HASH, hash));
            wanted.push((AGENT_ID_HASH, hash));
        }
        let mut needles: Vec<&str> = vec![&id_mac];
        needles.extend(legacy.iter().map(String::as_str));
        let head = self.core.store.audit_head()?.map_or(0, |(seq, _)| seq);
        let mut seqs = Vec::new();
        let mut more = false;
        let mut from = from_seq.max(1);
        'turns: while from <= head {
            let to = from.saturating_add(SEARCH_TURN - 1).min(head);
            for (seq, line) in self.core.store.audit_lines_containing(from, to, &needles)? {
                if carries(&line, &wanted) {
                    if seqs.len() == MAX_ID_RECORDS {
                        more = true;
                        break 'turns;
                    }
                    seqs.push(seq);
                }
            }
            match to.checked_add(1) {
                Some(next) => from = next,
                None => break,
            }
        }
        req.param("from_seq", from_seq.to_string());
        req.param("found", seqs.len().to_string());
        req.param("legacy_searched", self.legacy_salt.is_some().to_string());
        Ok(IdNumberRecords {
            id_mac,
            seqs,
            more,
            legacy_searched: self.legacy_salt.is_some(),
        })
    }
}

/// Whether a record line carries one of `wanted` (parameter, value) exactly: the search only
/// found the value somewhere in the line.
fn carries(line: &str, wanted: &[(&str, &str)]) -> bool {
    serde_json::from_str::<AuditRecord>(line).is_ok_and(|r| {
        wanted
            .iter()
            .any(|(name, value)| r.params.get(*name).is_some_and(|v| v == value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditDraft;

    fn line(params: &[(&str, &str)]) -> String {
        let mut d = AuditDraft::default();
        for (k, v) in params {
            d.params.insert(k.to_string(), v.to_string());
        }
        AuditRecord::from_draft(&d, 1, "2026-01-01T00:00:00.000Z".into(), "0".repeat(64))
            .to_line()
            .unwrap()
    }

    #[test]
    fn a_record_carries_the_value_only_under_an_id_parameter() {
        let mac = "ab".repeat(32);
        let wanted = [
            (CARDHOLDER_ID_MAC, mac.as_str()),
            (AGENT_ID_MAC, mac.as_str()),
        ];
        assert!(carries(&line(&[(CARDHOLDER_ID_MAC, &mac)]), &wanted));
        assert!(carries(&line(&[(AGENT_ID_MAC, &mac)]), &wanted));
        // The value elsewhere in the record: a lookup's own record, a filter, a served_by.
        assert!(!carries(&line(&[("id_mac", &mac)]), &wanted));
        assert!(!carries(&line(&[("served_by", &mac)]), &wanted));
        // Another number's MAC.
        assert!(!carries(
            &line(&[(CARDHOLDER_ID_MAC, &"cd".repeat(32))]),
            &wanted
        ));
        assert!(!carries("not a record", &wanted));
    }
}
