//! The ceremony log's record and checkpoint, exactly as written (docs/audit-format.md).
//!
//! A record is one line of compact JSON with its fields in the order below; its hash is the
//! SHA-256 of that line's UTF-8 bytes, and the next record's `prev` carries it. The line is
//! stored and exported as written, so a verifier hashes bytes, never re-serialises.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of the record format.
pub const FORMAT_VERSION: u32 = 1;
/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The KCV of a key a request made or used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KcvEntry {
    /// The key.
    pub key_id: String,
    /// 6 hex digits.
    pub kcv: String,
    /// How it was computed.
    pub method: String,
}

/// The policy's decision, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecisionEntry {
    /// Allowed or denied.
    pub allowed: bool,
    /// The rule that allowed it.
    pub rule: Option<String>,
    /// The sentence for people.
    pub reason: String,
}

/// How the request ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Whether it succeeded.
    pub ok: bool,
    /// The gRPC status code name ("OK", "PERMISSION_DENIED", ...).
    pub code: String,
    /// The error message (never a secret), empty on success.
    pub message: String,
}

/// What a request contributes to its record; the log adds `seq`, `time` and `prev`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AuditDraft {
    /// Request id, also in the service's log lines.
    pub request_id: String,
    /// The node's name.
    pub node: String,
    /// The caller's identity URI ("" when the caller was not authenticated).
    pub actor: String,
    /// The RPC ("GenerateKey", ...).
    pub rpc: String,
    /// The policy operation, when one was decided.
    pub operation: String,
    /// Request parameters without secrets.
    pub params: BTreeMap<String, String>,
    /// Keys made or used.
    pub key_ids: Vec<String>,
    /// Their KCVs.
    pub kcvs: Vec<KcvEntry>,
    /// The policy decision, if the request got that far.
    pub decision: Option<DecisionEntry>,
    /// SHA-256 of the policy that decided.
    pub policy_sha256: String,
    /// The ceremony this request belongs to.
    pub ceremony: Option<String>,
    /// How it ended (set before writing).
    pub outcome: Option<Outcome>,
    /// Not part of the record: the client's request id this request claims, which the
    /// registry keeps in the same transaction as the record (docs/api.md).
    pub retry: Option<RetryClaim>,
}

/// A client's `request_id` claimed by a request that acted: the registry keeps it beside the
/// request's record, written in the same transaction, so that a retry with the same id finds
/// what the first request did instead of acting again, even after a crash. The request's
/// caller (`actor`) and id (`request_id`) are the draft's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetryClaim {
    /// The id the client chose (1-64 of `[A-Za-z0-9._-]`, checked before it gets here).
    pub client_request_id: String,
    /// The RPC it came with: the same id at another RPC is another request.
    pub rpc: String,
    /// SHA-256 of the body, 64 hex digits (`proto::request_id::Mutating::body_sha256`).
    pub body_sha256: String,
    /// Unix seconds after which the id is free again (the retention window).
    pub expires_at: u64,
}

/// One record of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Format version.
    pub v: u32,
    /// 1, 2, 3, ... without gaps.
    pub seq: u64,
    /// RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Request id.
    pub request_id: String,
    /// Node name.
    pub node: String,
    /// Caller identity.
    pub actor: String,
    /// RPC name.
    pub rpc: String,
    /// Policy operation.
    pub operation: String,
    /// Parameters without secrets (sorted by name).
    pub params: BTreeMap<String, String>,
    /// Keys made or used.
    pub key_ids: Vec<String>,
    /// Their KCVs.
    pub kcvs: Vec<KcvEntry>,
    /// The decision.
    pub decision: Option<DecisionEntry>,
    /// The policy's hash.
    pub policy_sha256: String,
    /// The ceremony, if any.
    pub ceremony: Option<String>,
    /// How it ended.
    pub result: Outcome,
    /// SHA-256 (hex) of the previous record's line; [`GENESIS`] for the first.
    pub prev: String,
}

/// Longest outcome message kept in a record, in characters. Error messages may quote what the
/// caller sent; cut there, an oversized request cannot grow the log by more than this.
pub const MAX_MESSAGE: usize = 512;

/// `text` cut to `max` characters, marked as cut.
pub fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}…(cut)", &text[..end]),
        None => text.to_string(),
    }
}

impl AuditRecord {
    /// Builds the record that follows `prev` at `seq`.
    pub fn from_draft(draft: &AuditDraft, seq: u64, time: String, prev: String) -> AuditRecord {
        AuditRecord {
            v: FORMAT_VERSION,
            seq,
            time,
            request_id: draft.request_id.clone(),
            node: draft.node.clone(),
            actor: draft.actor.clone(),
            rpc: draft.rpc.clone(),
            operation: draft.operation.clone(),
            params: draft.params.clone(),
            key_ids: draft.key_ids.clone(),
            kcvs: draft.kcvs.clone(),
            decision: draft.decision.clone(),
            policy_sha256: draft.policy_sha256.clone(),
            // Ceremony ids are checked before they get here; this bounds any other way in.
            ceremony: draft.ceremony.as_deref().map(|c| cut(c, 64)),
            result: match &draft.outcome {
                Some(o) => Outcome {
                    ok: o.ok,
                    code: o.code.clone(),
                    message: cut(&o.message, MAX_MESSAGE),
                },
                None => Outcome {
                    ok: false,
                    code: "UNKNOWN".into(),
                    message: "the request ended without an outcome".into(),
                },
            },
            prev,
        }
    }

    /// The line as written: compact JSON, fields in declaration order.
    pub fn to_line(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

/// SHA-256 (lowercase hex) of a record line: the chain link to the next record.
pub fn line_hash(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

/// A signed statement that the log had `seq` records ending in `head` at `time`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Format version.
    pub v: u32,
    /// The last record covered.
    pub seq: u64,
    /// The hash of that record's line.
    pub head: String,
    /// When it was signed (RFC 3339 UTC).
    pub time: String,
    /// The node.
    pub node: String,
    /// Fingerprint of the signing key (first 3 bytes of SHA-256 of its SPKI, hex).
    pub key_fingerprint: String,
    /// ECDSA P-256 / SHA-256 signature over [`Checkpoint::message`], DER, hex.
    pub signature: String,
}

impl Checkpoint {
    /// The exact bytes that are signed.
    pub fn message(node: &str, seq: u64, head: &str, time: &str) -> String {
        format!("hkms-audit-checkpoint/v1 {node} {seq} {head} {time}")
    }

    /// The bytes this checkpoint's signature covers.
    pub fn signed_message(&self) -> String {
        Checkpoint::message(&self.node, self.seq, &self.head, &self.time)
    }
}

/// RFC 3339 UTC with milliseconds, for record times.
pub fn now_millis() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_line_round_trips_and_keeps_its_field_order() {
        let mut draft = AuditDraft {
            actor: "hkms://officer/national/000000/a".into(),
            rpc: "GenerateKey".into(),
            ..AuditDraft::default()
        };
        draft.params.insert("key_type".into(), "card-master".into());
        let r =
            AuditRecord::from_draft(&draft, 1, "2026-01-01T00:00:00.000Z".into(), GENESIS.into());
        let line = r.to_line().unwrap();
        assert!(line.starts_with("{\"v\":1,\"seq\":1,\"time\":"), "{line}");
        assert!(
            line.ends_with(&format!("\"prev\":\"{GENESIS}\"}}")),
            "{line}"
        );
        let back: AuditRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
        assert_eq!(line_hash(&line).len(), 64);
    }

    #[test]
    fn cut_keeps_short_text_and_marks_long_text_at_a_character_boundary() {
        assert_eq!(cut("abc", 3), "abc");
        assert_eq!(cut("abcd", 3), "abc…(cut)");
        assert_eq!(cut("区域代码", 2), "区域…(cut)");
        assert_eq!(cut("", 0), "");
    }

    #[test]
    fn an_oversized_outcome_message_is_cut_in_the_record() {
        let draft = AuditDraft {
            outcome: Some(Outcome {
                ok: false,
                code: "INVALID_ARGUMENT".into(),
                message: format!("bad key id `{}`", "x".repeat(4 << 20)),
            }),
            ..AuditDraft::default()
        };
        let r = AuditRecord::from_draft(&draft, 1, "t".into(), GENESIS.into());
        assert_eq!(r.result.code, "INVALID_ARGUMENT");
        assert!(r.result.message.starts_with("bad key id `xxx"));
        assert!(r.to_line().unwrap().len() < 2 * 1024);
    }

    #[test]
    fn the_checkpoint_message_is_fixed() {
        assert_eq!(
            Checkpoint::message("ministry", 7, "ab", "2026-01-01T00:00:00Z"),
            "hkms-audit-checkpoint/v1 ministry 7 ab 2026-01-01T00:00:00Z"
        );
    }
    #[test]
    fn record_times_are_rfc_3339_utc_with_milliseconds() {
        let t = now_millis();
        assert_eq!(t.len(), "2026-01-01T00:00:00.000Z".len(), "{t}");
        assert!(t.ends_with('Z'), "{t}");
        assert_eq!(&t[19..20], ".", "{t}");
        humantime::parse_rfc3339(&t).unwrap();
    }
}
