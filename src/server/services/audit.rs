//! `hkms.v1.AuditService`: the ceremony log for auditors, records exactly as written.

use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::audit::AuditRecord;
use crate::audit::witness::ExportStatement;
use crate::card::IdNumber;
use crate::node::{LogItem, Node, NodeError, PageAsk, Reason, input};
use crate::proto;
use crate::proto::audit_service_server::AuditService;

use super::super::edge::details::refusal;
use super::super::pipeline::unary;
use super::paging::{Budget, Pager};
use super::times;

/// Records read from the registry per page while streaming.
const PAGE: usize = 512;

/// Room kept in the first page of a sealing `GetCheckpoints` for the export statement: a
/// statement is a few hundred bytes (a node name of at most 64 characters, a head, a time, a
/// signature and a key hash).
const STATEMENT_ROOM: usize = 2048;

/// The audit service over one node.
pub struct AuditApi {
    node: Arc<Node>,
}

impl AuditApi {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> AuditApi {
        AuditApi { node }
    }
}

/// The filters of a `StreamRecords` request, read: times as instants.
struct RecordFilter {
    from_seq: u64,
    to_seq: u64,
    since: Option<time::OffsetDateTime>,
    until: Option<time::OffsetDateTime>,
    key_id: String,
    actor: String,
    operation: String,
}

impl RecordFilter {
    /// Whether a record passes. Record times are RFC 3339 UTC to the millisecond; they are
    /// compared with the filter's Timestamps as instants, to the nanosecond (a filter at a
    /// whole second takes a record later in that second).
    fn matches(&self, line: &str) -> bool {
        let plain = self.since.is_none()
            && self.until.is_none()
            && self.key_id.is_empty()
            && self.actor.is_empty()
            && self.operation.is_empty();
        if plain {
            return true;
        }
        let Ok(r) = serde_json::from_str::<AuditRecord>(line) else {
            return false;
        };
        // Parsed once, and only when a time filter asks for it.
        let at = (self.since.is_some() || self.until.is_some())
            .then(|| input::instant(&r.time).ok())
            .flatten();
        (self
            .since
            .is_none_or(|since| at.is_some_and(|t| t >= since)))
            && (self.until.is_none_or(|until| at.is_some_and(|t| t < until)))
            && (self.key_id.is_empty() || r.key_ids.contains(&self.key_id))
            && (self.actor.is_empty() || r.actor == self.actor)
            && (self.operation.is_empty()
                || r.operation == self.operation
                || r.rpc == self.operation)
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    type StreamRecordsStream = ReceiverStream<Result<proto::AuditRecordLine, Status>>;

    async fn stream_records(
        &self,
        request: Request<proto::StreamRecordsRequest>,
    ) -> Result<Response<Self::StreamRecordsStream>, Status> {
        // The first page is read inside the audited, authorised request; later pages follow.
        let first = unary(&self.node, "StreamRecords", request, |n, req, f| {
            for (k, v) in [
                ("key_id", &f.key_id),
                ("actor", &f.actor),
                ("operation", &f.operation),
            ] {
                if !v.is_empty() {
                    req.param(k, v.clone());
                }
            }
            let filter = RecordFilter {
                since: times::sent(req, "since", f.since.as_ref())?,
                until: times::sent(req, "until", f.until.as_ref())?,
                from_seq: f.from_seq,
                to_seq: f.to_seq,
                key_id: f.key_id,
                actor: f.actor,
                operation: f.operation,
            };
            let to = if filter.to_seq == 0 {
                u64::MAX
            } else {
                filter.to_seq
            };
            let page = n
                .audit()
                .audit_lines(req, filter.from_seq.max(1), to, PAGE)?;
            Ok((filter, page))
        })
        .await?;
        let node = Arc::clone(&self.node);
        Ok(first
            .map(|(filter, page)| {
                let (tx, rx) = tokio::sync::mpsc::channel(64);
                tokio::spawn(stream_pages(node, filter, page, tx));
                ReceiverStream::new(rx)
            })
            .into_response())
    }

    async fn get_checkpoints(
        &self,
        request: Request<proto::GetCheckpointsRequest>,
    ) -> Result<Response<proto::GetCheckpointsResponse>, Status> {
        let answer = unary(&self.node, "GetCheckpoints", request, |n, req, r| {
            req.param("seal", r.seal.to_string());
            let pager = Pager::new("GetCheckpoints", &[("seal", &r.seal.to_string())]);
            let asked = pager.ask(req, r.page_size, &r.page_token)?;
            let mut budget = Budget::new(n.max_answer_bytes());
            if r.seal && asked.after.is_none() {
                // The first page of a seal carries the statement too.
                budget.take(STATEMENT_ROOM);
            }
            let log = n.audit().audit_checkpoints(
                req,
                r.seal,
                PageAsk {
                    size: asked.size,
                    after: asked.after,
                    fits: &mut |item| log_line(item).map_or(true, |l| budget.take(l.len())),
                },
            )?;
            let statement = log
                .statement
                .as_ref()
                .map(ExportStatement::to_line)
                .unwrap_or_default();
            let mut answer = proto::GetCheckpointsResponse {
                statement,
                next_page_token: pager.token(log.page.next.as_ref())?,
                ..Default::default()
            };
            for item in &log.page.items {
                match (item, log_line(item)?) {
                    (LogItem::Checkpoint(_), line) => answer.checkpoints.push(line),
                    (LogItem::Cosignature { .. }, line) => answer.cosignatures.push(line),
                }
            }
            Ok(answer)
        })
        .await?;
        Ok(answer.into_response())
    }

    async fn get_public_key(
        &self,
        request: Request<proto::GetPublicKeyRequest>,
    ) -> Result<Response<proto::PublicKeyInfo>, Status> {
        let signing = unary(&self.node, "GetPublicKey", request, |n, req, _| {
            n.audit().audit_public_key(req)
        })
        .await?;
        let node = self.node.name().to_string();
        Ok(signing
            .map(|s| proto::PublicKeyInfo {
                spki_pem: s.spki_pem,
                fingerprint: s.fingerprint,
                sha256: s.sha256,
                node,
            })
            .into_response())
    }

    async fn find_id_number(
        &self,
        request: Request<proto::FindIdNumberRequest>,
    ) -> Result<Response<proto::FindIdNumberResponse>, Status> {
        let found = unary(&self.node, "FindIdNumber", request, |n, req, mut r| {
            // The number leaves the message at once, into memory that is wiped on drop; the
            // record gets its MAC, never the number.
            let given = Zeroizing::new(std::mem::take(&mut r.id_number));
            let id = IdNumber::parse(&given, "looked-up")
                .map_err(|e| NodeError::invalid_field("id_number", e.to_string()))?;
            n.audit().find_id_number(req, &id, r.from_seq)
        })
        .await?;
        Ok(found
            .map(|f| proto::FindIdNumberResponse {
                id_mac: f.id_mac,
                seqs: f.seqs,
                more: f.more,
                legacy_searched: f.legacy_searched,
            })
            .into_response())
    }
}

/// The JSON line of an item of the checkpoint listing, as `checkpoints.jsonl` or
/// `cosignatures.jsonl` holds it.
fn log_line(item: &LogItem) -> Result<String, NodeError> {
    match item {
        LogItem::Checkpoint(cp) => serde_json::to_string(cp)
            .map_err(|e| NodeError::Internal(format!("checkpoint encoding: {e}"))),
        LogItem::Cosignature { cosignature, .. } => Ok(cosignature.to_line()),
    }
}

/// Sends the pages of the log after the first (`page`, read inside the recorded request) that
/// pass `filter`, until the range ends or the client goes away.
async fn stream_pages(
    node: Arc<Node>,
    filter: RecordFilter,
    mut page: Vec<(u64, String)>,
    tx: tokio::sync::mpsc::Sender<Result<proto::AuditRecordLine, Status>>,
) {
    let to = if filter.to_seq == 0 {
        u64::MAX
    } else {
        filter.to_seq
    };
    while let Some(last) = page.last().map(|(s, _)| *s) {
        let full = page.len() == PAGE;
        for (seq, line) in page {
            if filter.matches(&line)
                && tx
                    .send(Ok(proto::AuditRecordLine { seq, line }))
                    .await
                    .is_err()
            {
                return;
            }
        }
        if !full || last >= to {
            break;
        }
        let n = Arc::clone(&node);
        page = match tokio::task::spawn_blocking(move || {
            n.audit()
                .audit_lines_after_first(last.saturating_add(1), to, PAGE)
        })
        .await
        {
            Ok(Ok(p)) => p,
            _ => {
                let _ = tx
                    .send(Err(refusal(
                        Reason::RegistryFault,
                        "reading the ceremony log failed; read again from the last record \
                         received",
                        Vec::new(),
                    )))
                    .await;
                return;
            }
        };
    }
}
