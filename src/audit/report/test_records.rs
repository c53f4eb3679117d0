//! Records for the report's tests: drafts chained into records as the log writes them, and a
//! small history (a generate ceremony with a refused approval, a derivation, a denied read, a
//! cancelled ceremony).

use crate::audit::record::{
    AuditDraft, AuditRecord, DecisionEntry, GENESIS, KcvEntry, Outcome, line_hash,
};
use crate::audit::report::model::{APPROVE, CANCEL, ENTER, EXECUTE, OPEN};
use crate::audit::verify::fixture::{NODE, params as p};

pub const OPENER: &str = "hkms://officer/national/000000/alice";
pub const APPROVER_1: &str = "hkms://officer/national/000000/bob";
pub const APPROVER_2: &str = "hkms://officer/national/000000/carol";
pub const INTRUDER: &str = "hkms://operator/regional/000001/mallory";

pub fn ok() -> Outcome {
    Outcome {
        ok: true,
        code: "OK".into(),
        message: String::new(),
    }
}

pub fn denied() -> Outcome {
    Outcome {
        ok: false,
        code: "PERMISSION_DENIED".into(),
        message: "not allowed".into(),
    }
}

pub fn d(actor: &str, rpc: &str, ceremony: Option<&str>, outcome: Outcome) -> AuditDraft {
    AuditDraft {
        request_id: format!("req-{rpc}"),
        node: NODE.into(),
        actor: actor.into(),
        rpc: rpc.into(),
        ceremony: ceremony.map(str::to_string),
        outcome: Some(outcome),
        ..AuditDraft::default()
    }
}

pub fn chain(drafts: Vec<AuditDraft>) -> Vec<AuditRecord> {
    let mut prev = GENESIS.to_string();
    let mut out = Vec::new();
    for (i, draft) in drafts.iter().enumerate() {
        let seq = i as u64 + 1;
        let r =
            AuditRecord::from_draft(draft, seq, format!("2026-03-01T09:00:{seq:02}.000Z"), prev);
        prev = line_hash(&r.to_line().unwrap());
        out.push(r);
    }
    out
}

pub fn generate_ceremony() -> Vec<AuditRecord> {
    let mut open = d(OPENER, OPEN, Some("cer-1"), ok());
    open.operation = "generate".into();
    open.params = p(&[("key_type", "national-master"), ("region", "000000")]);
    let mut refused = d(INTRUDER, APPROVE, Some("cer-1"), denied());
    refused.decision = Some(DecisionEntry {
        allowed: false,
        rule: None,
        reason: "operators may not approve ceremonies".into(),
    });
    let mut exec = d(OPENER, EXECUTE, Some("cer-1"), ok());
    exec.key_ids = vec!["nat-master-1".into()];
    exec.kcvs = vec![KcvEntry {
        key_id: "nat-master-1".into(),
        kcv: "9F3A1C".into(),
        method: "aes-cmac".into(),
    }];
    let mut outside = d(APPROVER_1, "DeriveSubKey", None, ok());
    outside.key_ids = vec!["reg-1".into()];
    outside.kcvs = vec![KcvEntry {
        key_id: "reg-1".into(),
        kcv: "0B0B0B".into(),
        method: "aes-cmac".into(),
    }];
    let mut read = d(INTRUDER, "GetKey", None, denied());
    read.key_ids = vec!["nat-master-1".into()];
    chain(vec![
        open,
        d(APPROVER_1, APPROVE, Some("cer-1"), ok()),
        refused,
        d(APPROVER_2, APPROVE, Some("cer-1"), ok()),
        exec,
        outside,
        read,
        d(OPENER, OPEN, Some("cer-2"), ok()),
        d(OPENER, CANCEL, Some("cer-2"), ok()),
    ])
}

pub fn component(custodian: &str, n: u32, kcv: &str) -> AuditDraft {
    let mut c = d(custodian, ENTER, Some("cer-3"), ok());
    c.kcvs = vec![KcvEntry {
        key_id: format!("component-{n}"),
        kcv: kcv.into(),
        method: "aes-cmac".into(),
    }];
    c
}
