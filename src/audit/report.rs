//! The ceremony report: what happened, for people (auditors, key custodians), in Markdown.
//!
//! It reads records that [`super::verify::verify_bundle`] has already checked; it proves
//! nothing itself, it only tells the story: each ceremony from opening to outcome, the key
//! operations made outside ceremonies, and who was refused how, how often.

use std::collections::BTreeMap;

use super::record::{AuditRecord, Outcome};
use super::verify::{VerifyError, parse_record_line};

/// RPC that opens a ceremony.
const OPEN: &str = "OpenCeremony";
/// RPC that approves a ceremony.
const APPROVE: &str = "ApproveCeremony";
/// RPC by which a custodian enters a key component (it counts as their approval).
const ENTER: &str = "EnterComponent";
/// RPC that cancels a ceremony.
const CANCEL: &str = "CancelCeremony";
/// RPC whose records (one per card) carry the card keys made for the personalisation bureau.
const PERSONALISE: &str = "PersonaliseCards";
/// The record the node writes when a ceremony's operation runs.
const EXECUTE: &str = "ExecuteCeremony";
/// Status code of a ceremony that ran out of time.
const EXPIRED_CODE: &str = "DEADLINE_EXCEEDED";
/// How many record numbers a denied-requests line lists before it stops.
const MAX_LISTED: usize = 20;

/// Parses record lines (as in `records.jsonl`) for the report; a line that is not a record is
/// named as the verifier names it ("records.jsonl line L").
pub fn parse_records(lines: &[String]) -> Result<Vec<AuditRecord>, VerifyError> {
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| parse_record_line(i + 1, line))
        .collect()
}

/// The Markdown report of `records` (in seq order): every ceremony from opening to outcome, in
/// order of first appearance; the successful key operations outside ceremonies; every refused
/// request, by status code and caller.
pub fn ceremony_report(records: &[AuditRecord]) -> String {
    let mut out = String::from("# Ceremony report\n\n");
    match (records.first(), records.last()) {
        (Some(first), Some(last)) => {
            let mut nodes: Vec<&str> = records.iter().map(|r| r.node.as_str()).collect();
            nodes.sort_unstable();
            nodes.dedup();
            let nodes: Vec<String> = nodes.into_iter().map(code).collect();
            out.push_str(&format!(
                "Records {} to {} ({} records), {} to {}, node {}.\n",
                first.seq,
                last.seq,
                records.len(),
                first.time,
                last.time,
                nodes.join(", ")
            ));
        }
        _ => out.push_str("No records.\n"),
    }

    out.push_str("\n## Ceremonies\n");
    let ceremonies = group_ceremonies(records);
    if ceremonies.is_empty() {
        out.push_str("\nNo ceremonies in these records.\n");
    }
    for (id, recs) in &ceremonies {
        ceremony_section(&mut out, id, recs);
    }

    out.push_str("\n## Other key operations\n\n");
    let others: Vec<&AuditRecord> = records
        .iter()
        .filter(|r| r.ceremony.is_none() && r.result.ok && !r.key_ids.is_empty())
        .filter(|r| r.rpc != PERSONALISE)
        .collect();
    if others.is_empty() {
        out.push_str("None.\n");
    }
    for r in others {
        out.push_str(&format!(
            "- {} {} {} (record {}): keys {}{}\n",
            r.time,
            actor(r),
            code(&r.rpc),
            r.seq,
            list(&r.key_ids),
            kcvs_inline(r)
        ));
    }

    personalisation_section(&mut out, records);
    refused_section(&mut out, records);
    out
}

/// The records of each ceremony, ceremonies in order of first appearance.
fn group_ceremonies(records: &[AuditRecord]) -> Vec<(&str, Vec<&AuditRecord>)> {
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
}

/// What a record is to its ceremony.
enum Event {
    Open,
    Approve,
    Component,
    Cancel,
    Expire,
    Execute,
    Other,
}

/// Classifies a ceremony's record. The node finds a ceremony expired when someone acts on it
/// too late: that request fails with a message saying so, and is the expiry's record.
fn event(r: &AuditRecord) -> Event {
    let expired = r.rpc.contains("Expire")
        || r.result.code == EXPIRED_CODE
        || (!r.result.ok && r.result.message.contains("expired"));
    match r.rpc.as_str() {
        _ if expired => Event::Expire,
        OPEN => Event::Open,
        APPROVE => Event::Approve,
        ENTER => Event::Component,
        CANCEL => Event::Cancel,
        EXECUTE => Event::Execute,
        _ if !r.kcvs.is_empty() => Event::Execute,
        _ => Event::Other,
    }
}

/// One ceremony: its timeline, then its outcome in one sentence.
fn ceremony_section(out: &mut String, id: &str, recs: &[&AuditRecord]) {
    out.push_str(&format!("\n### Ceremony {}\n\n", code(id)));
    if !recs.iter().any(|r| r.rpc == OPEN) {
        out.push_str("- The opening is not in these records (an earlier part of the log).\n");
    }
    let mut approvers: Vec<String> = Vec::new();
    let mut executed: Vec<&AuditRecord> = Vec::new();
    let (mut cancelled, mut expired, mut failed) = (false, false, false);
    let kcv_lines = |out: &mut String, r: &AuditRecord| {
        for k in &r.kcvs {
            out.push_str(&format!(
                "  - KCV of {}: {} ({})\n",
                code(&k.key_id),
                code(&k.kcv),
                k.method
            ));
        }
    };
    for r in recs {
        let at = format!("at {} (record {})", r.time, r.seq);
        match event(r) {
            Event::Open => {
                // The node counts the opener's approval when they may approve (records name it;
                // older ones do not, and count only the approvals that follow).
                if r.result.ok && r.params.get("opener_approved").is_some_and(|v| v == "true") {
                    approvers.push(actor(r));
                }
                out.push_str(&format!(
                    "- **Opened** by {} {at}: {}\n",
                    actor(r),
                    result(&r.result, r)
                ));
                out.push_str(&format!("  - operation: {}\n", code(&r.operation)));
                out.push_str(&format!("  - parameters: {}\n", params(r)));
            }
            Event::Approve => {
                if r.result.ok {
                    approvers.push(actor(r));
                }
                out.push_str(&format!(
                    "- **Approval** by {} {at}: {}\n",
                    actor(r),
                    result(&r.result, r)
                ));
            }
            Event::Component => {
                if r.result.ok {
                    approvers.push(actor(r));
                }
                out.push_str(&format!(
                    "- **Component entered** by {} {at}: {}\n",
                    actor(r),
                    result(&r.result, r)
                ));
                kcv_lines(out, r);
            }
            Event::Cancel => {
                cancelled |= r.result.ok;
                out.push_str(&format!(
                    "- **Cancelled** by {} {at}: {}\n",
                    actor(r),
                    result(&r.result, r)
                ));
            }
            Event::Expire => {
                expired = true;
                out.push_str(&format!(
                    "- **Expired**, found by {} of {} {at}: {}\n",
                    code(&r.rpc),
                    actor(r),
                    result(&r.result, r)
                ));
            }
            Event::Execute => {
                // The run names the approvals it ran on: they are the count.
                let named = approvers_named(r);
                if !named.is_empty() {
                    approvers = named;
                }
                if r.result.ok {
                    executed.push(r);
                } else {
                    failed = true;
                }
                out.push_str(&format!(
                    "- **Executed** {} by {} {at}: {}\n",
                    code(&r.rpc),
                    actor(r),
                    result(&r.result, r)
                ));
                if !r.key_ids.is_empty() {
                    out.push_str(&format!("  - keys: {}\n", list(&r.key_ids)));
                }
                kcv_lines(out, r);
            }
            Event::Other => {
                out.push_str(&format!(
                    "- {} by {} {at}: {}\n",
                    code(&r.rpc),
                    actor(r),
                    result(&r.result, r)
                ));
            }
        }
    }
    let approvals = if approvers.is_empty() {
        "no approvals".to_string()
    } else {
        let plural = if approvers.len() == 1 { "" } else { "s" };
        format!(
            "{} approval{plural} ({})",
            approvers.len(),
            approvers.join(", ")
        )
    };
    let outcome = if !executed.is_empty() {
        let kcvs: Vec<String> = executed
            .iter()
            .flat_map(|r| r.kcvs.iter())
            .map(|k| format!("{} KCV {}", code(&k.key_id), code(&k.kcv)))
            .collect();
        if kcvs.is_empty() {
            format!("executed, {approvals}")
        } else {
            format!("executed, {approvals}: {}", kcvs.join(", "))
        }
    } else if cancelled {
        format!("cancelled, {approvals}")
    } else if expired {
        format!("expired, {approvals}")
    } else if failed {
        format!("failed, {approvals} (see above)")
    } else {
        format!("no outcome in these records (still open, or later in the log), {approvals}")
    };
    out.push_str(&format!("\n**Outcome:** {outcome}.\n"));
}

/// The approvers an `ExecuteCeremony` record names (`approver_1`, `approver_2`, …; older
/// records list them space-separated in `approvers`), as the report shows actors.
fn approvers_named(r: &AuditRecord) -> Vec<String> {
    let mut numbered: Vec<(u32, &String)> = r
        .params
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("approver_")?.parse().ok()?, v)))
        .collect();
    numbered.sort();
    let names: Vec<&str> = if numbered.is_empty() {
        r.params
            .get("approvers")
            .map(|all| all.split(' ').filter(|a| !a.is_empty()).collect())
            .unwrap_or_default()
    } else {
        numbered.into_iter().map(|(_, v)| v.as_str()).collect()
    };
    names.into_iter().map(actor_name).collect()
}

/// Cards personalised, per master key their card keys were derived from: one line per master,
/// not one per card.
fn personalisation_section(out: &mut String, records: &[AuditRecord]) {
    out.push_str("\n## Card personalisation\n\n");
    let mut per_master: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| r.rpc == PERSONALISE && r.result.ok && r.params.contains_key("card_serial"))
    {
        for key in &r.key_ids {
            per_master.entry(key.as_str()).or_default().push(r.seq);
        }
    }
    if per_master.is_empty() {
        out.push_str("None.\n");
    }
    for (master, seqs) in per_master {
        let (first, last) = (seqs.first().copied(), seqs.last().copied());
        out.push_str(&format!(
            "- master {}: {} card{} (records {} to {})\n",
            code(master),
            seqs.len(),
            if seqs.len() == 1 { "" } else { "s" },
            first.unwrap_or_default(),
            last.unwrap_or_default()
        ));
    }
}

/// Every request that did not succeed, grouped by status code (the policy's refusals, then
/// missing identities, then attempts that skip a rule such as dual control, then bad input,
/// then the rest), and within a code by caller.
fn refused_section(out: &mut String, records: &[AuditRecord]) {
    out.push_str("\n## Refused requests\n");
    let mut by_code: BTreeMap<(usize, &str), BTreeMap<&str, Vec<u64>>> = BTreeMap::new();
    for r in records.iter().filter(|r| !r.result.ok) {
        let code = r.result.code.as_str();
        by_code
            .entry((code_rank(code), code))
            .or_default()
            .entry(r.actor.as_str())
            .or_default()
            .push(r.seq);
    }
    if by_code.is_empty() {
        out.push_str("\nNone.\n");
    }
    for ((_, status), callers) in by_code {
        let total: usize = callers.values().map(Vec::len).sum();
        out.push_str(&format!(
            "\n### {} ({total}): {}\n\n",
            code(status),
            code_meaning(status)
        ));
        for (who, seqs) in callers {
            let mut listed: Vec<String> =
                seqs.iter().take(MAX_LISTED).map(u64::to_string).collect();
            if seqs.len() > MAX_LISTED {
                listed.push("…".into());
            }
            out.push_str(&format!(
                "- {}: {} (records {})\n",
                actor_name(who),
                seqs.len(),
                listed.join(", ")
            ));
        }
    }
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
fn code_meaning(code: &str) -> &'static str {
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

/// How a request ended, with its message and the policy's reason when it was denied. Both can
/// quote what a caller sent: code spans, so that no text can start a line of its own.
fn result(o: &Outcome, r: &AuditRecord) -> String {
    let mut s = code(&o.code);
    if !o.message.is_empty() {
        s.push_str(&format!(" ({})", code(&o.message)));
    }
    if let Some(d) = r.decision.as_ref().filter(|d| !d.allowed) {
        s.push_str(&format!(", denied by policy: {}", code(&d.reason)));
    }
    s
}

fn actor(r: &AuditRecord) -> String {
    actor_name(&r.actor)
}

fn actor_name(a: &str) -> String {
    if a.is_empty() {
        "(unauthenticated)".into()
    } else {
        code(a)
    }
}

fn params(r: &AuditRecord) -> String {
    if r.params.is_empty() {
        return "none".into();
    }
    let p: Vec<String> = r
        .params
        .iter()
        .map(|(k, v)| code(&format!("{k}={v}")))
        .collect();
    p.join(", ")
}

fn list(items: &[String]) -> String {
    let v: Vec<String> = items.iter().map(|s| code(s)).collect();
    v.join(", ")
}

fn kcvs_inline(r: &AuditRecord) -> String {
    if r.kcvs.is_empty() {
        return String::new();
    }
    let v: Vec<String> = r
        .kcvs
        .iter()
        .map(|k| format!("{} KCV {} ({})", code(&k.key_id), code(&k.kcv), k.method))
        .collect();
    format!("; {}", v.join(", "))
}

/// A Markdown code span that shows `s` as it is: invisible characters escaped, a fence longer
/// than any run of backticks inside (CommonMark), so a value cannot break the report's layout.
fn code(s: &str) -> String {
    if s.is_empty() {
        return "(empty)".into();
    }
    // Controls, bidi overrides and zero-width characters escaped: shown, never obeyed.
    let text = crate::untrusted_text::escape(s);
    let (mut longest, mut run) = (0, 0);
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    if text.starts_with('`') || text.ends_with('`') {
        format!("{fence} {text} {fence}")
    } else {
        format!("{fence}{text}{fence}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{AuditDraft, DecisionEntry, GENESIS, KcvEntry, line_hash};
    use crate::audit::verify::fixture::{NODE, clean, params as p};

    const OPENER: &str = "hkms://officer/national/000000/alice";
    const APPROVER_1: &str = "hkms://officer/national/000000/bob";
    const APPROVER_2: &str = "hkms://officer/national/000000/carol";
    const INTRUDER: &str = "hkms://operator/regional/000001/mallory";

    fn ok() -> Outcome {
        Outcome {
            ok: true,
            code: "OK".into(),
            message: String::new(),
        }
    }

    fn denied() -> Outcome {
        Outcome {
            ok: false,
            code: "PERMISSION_DENIED".into(),
            message: "not allowed".into(),
        }
    }

    fn d(actor: &str, rpc: &str, ceremony: Option<&str>, outcome: Outcome) -> AuditDraft {
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

    fn chain(drafts: Vec<AuditDraft>) -> Vec<AuditRecord> {
        let mut prev = GENESIS.to_string();
        let mut out = Vec::new();
        for (i, draft) in drafts.iter().enumerate() {
            let seq = i as u64 + 1;
            let r = AuditRecord::from_draft(
                draft,
                seq,
                format!("2026-03-01T09:00:{seq:02}.000Z"),
                prev,
            );
            prev = line_hash(&r.to_line().unwrap());
            out.push(r);
        }
        out
    }

    fn generate_ceremony() -> Vec<AuditRecord> {
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

    fn component(custodian: &str, n: u32, kcv: &str) -> AuditDraft {
        let mut c = d(custodian, ENTER, Some("cer-3"), ok());
        c.kcvs = vec![KcvEntry {
            key_id: format!("component-{n}"),
            kcv: kcv.into(),
            method: "aes-cmac".into(),
        }];
        c
    }

    #[test]
    fn components_count_as_approvals_and_show_their_kcvs() {
        let mut open = d(OPENER, OPEN, Some("cer-3"), ok());
        open.params = p(&[("components", "2"), ("key_type", "national-master")]);
        let mut exec = d(APPROVER_2, EXECUTE, Some("cer-3"), ok());
        exec.key_ids = vec!["nat-master-2".into()];
        exec.kcvs = vec![KcvEntry {
            key_id: "nat-master-2".into(),
            kcv: "C0FFEE".into(),
            method: "aes-cmac".into(),
        }];
        let report = ceremony_report(&chain(vec![
            open,
            component(APPROVER_1, 1, "111111"),
            component(APPROVER_2, 2, "222222"),
            exec,
        ]));
        assert!(
            report.contains(&format!("**Component entered** by `{APPROVER_1}`")),
            "{report}"
        );
        assert!(
            report.contains("KCV of `component-2`: `222222` (aes-cmac)"),
            "{report}"
        );
        assert!(
            report.contains(&format!("**Executed** `ExecuteCeremony` by `{APPROVER_2}`")),
            "{report}"
        );
        assert!(report.contains(&format!("**Outcome:** executed, 2 approvals (`{APPROVER_1}`, `{APPROVER_2}`): `nat-master-2` KCV `C0FFEE`.")), "{report}");
    }

    #[test]
    fn an_expired_or_failed_ceremony_says_so() {
        let late = Outcome {
            ok: false,
            code: "FAILED_PRECONDITION".into(),
            message: "ceremony cer-4 expired before it had its approvals; open a new one".into(),
        };
        let report = ceremony_report(&chain(vec![
            d(OPENER, OPEN, Some("cer-4"), ok()),
            d(APPROVER_1, APPROVE, Some("cer-4"), late),
            d(OPENER, OPEN, Some("cer-5"), ok()),
            d(APPROVER_1, APPROVE, Some("cer-5"), ok()),
            d(
                APPROVER_1,
                EXECUTE,
                Some("cer-5"),
                Outcome {
                    ok: false,
                    code: "FAILED_PRECONDITION".into(),
                    message: "the token is full".into(),
                },
            ),
        ]));
        assert!(
            report.contains(&format!(
                "**Expired**, found by `ApproveCeremony` of `{APPROVER_1}`"
            )),
            "{report}"
        );
        assert!(
            report.contains("**Outcome:** expired, no approvals."),
            "{report}"
        );
        assert!(
            report.contains("`FAILED_PRECONDITION` (`the token is full`)"),
            "{report}"
        );
        assert!(
            report.contains(&format!(
                "**Outcome:** failed, 1 approval (`{APPROVER_1}`) (see above)."
            )),
            "{report}"
        );
    }

    #[test]
    fn a_message_cannot_start_a_line_of_the_report() {
        let mut records = generate_ceremony();
        records[0].result.message = "x\r\n- **Approved** by `mallory`\r\n".into();
        let report = ceremony_report(&records);
        assert!(
            !report.contains("\n- **Approved** by `mallory`"),
            "{report}"
        );
        assert!(report.contains("\\r\\n"), "{report}");
    }

    #[test]
    fn a_ceremony_shows_its_opener_both_approvers_and_the_kcv() {
        let report = ceremony_report(&generate_ceremony());
        assert!(report.starts_with("# Ceremony report\n"), "{report}");
        let cer1 = report
            .split("### Ceremony `cer-1`")
            .nth(1)
            .unwrap()
            .split("### Ceremony")
            .next()
            .unwrap();
        assert!(
            cer1.contains(&format!(
                "**Opened** by `{OPENER}` at 2026-03-01T09:00:01.000Z (record 1): `OK`"
            )),
            "{cer1}"
        );
        assert!(cer1.contains("operation: `generate`"), "{cer1}");
        assert!(
            cer1.contains("`key_type=national-master`, `region=000000`"),
            "{cer1}"
        );
        assert!(
            cer1.contains(&format!(
                "**Approval** by `{APPROVER_1}` at 2026-03-01T09:00:02.000Z (record 2): `OK`"
            )),
            "{cer1}"
        );
        assert!(
            cer1.contains(&format!("**Approval** by `{APPROVER_2}`")),
            "{cer1}"
        );
        assert!(cer1.contains(&format!("**Approval** by `{INTRUDER}` at 2026-03-01T09:00:03.000Z (record 3): `PERMISSION_DENIED` (`not allowed`), denied by policy: `operators may not approve ceremonies`")), "{cer1}");
        assert!(
            cer1.contains("KCV of `nat-master-1`: `9F3A1C` (aes-cmac)"),
            "{cer1}"
        );
        assert!(cer1.contains(&format!("**Outcome:** executed, 2 approvals (`{APPROVER_1}`, `{APPROVER_2}`): `nat-master-1` KCV `9F3A1C`.")), "{cer1}");
    }

    #[test]
    fn the_openers_approval_and_the_approvers_the_run_names_are_counted() {
        let mut records = generate_ceremony();
        records[0]
            .params
            .insert("opener_approved".into(), "true".into());
        let mut again = Vec::new();
        for r in &records {
            again.push(AuditDraft {
                request_id: r.request_id.clone(),
                node: r.node.clone(),
                actor: r.actor.clone(),
                rpc: r.rpc.clone(),
                operation: r.operation.clone(),
                params: r.params.clone(),
                key_ids: r.key_ids.clone(),
                kcvs: r.kcvs.clone(),
                decision: r.decision.clone(),
                policy_sha256: r.policy_sha256.clone(),
                ceremony: r.ceremony.clone(),
                outcome: Some(r.result.clone()),
            });
        }
        let report = ceremony_report(&chain(again.clone()));
        assert!(
            report.contains(&format!(
                "**Outcome:** executed, 3 approvals (`{OPENER}`, `{APPROVER_1}`, `{APPROVER_2}`)"
            )),
            "{report}"
        );
        // The run's own list is the count (here, what a policy reload left in force).
        let exec = again.iter_mut().find(|d| d.rpc == EXECUTE).unwrap();
        exec.params.insert("approver_2".into(), APPROVER_2.into());
        exec.params.insert("approver_1".into(), OPENER.into());
        let report = ceremony_report(&chain(again));
        assert!(
            report.contains(&format!(
                "**Outcome:** executed, 2 approvals (`{OPENER}`, `{APPROVER_2}`)"
            )),
            "{report}"
        );
    }

    #[test]
    fn personalised_cards_are_summed_per_master_key() {
        let card = |n: u32| {
            let mut r = d(APPROVER_1, PERSONALISE, None, ok());
            r.params = p(&[("card_serial", &format!("{n:016X}"))]);
            r.key_ids = vec!["k-unblock".into(), "k-reload".into()];
            r
        };
        let report = ceremony_report(&chain(vec![card(1), card(2), card(3)]));
        let cards = report.split("## Card personalisation").nth(1).unwrap();
        assert!(
            cards.contains("- master `k-unblock`: 3 cards (records 1 to 3)"),
            "{cards}"
        );
        assert!(cards.contains("- master `k-reload`: 3 cards"), "{cards}");
        let others = report.split("## Other key operations").nth(1).unwrap();
        assert!(others.starts_with("\n\nNone."), "{others}");
    }

    #[test]
    fn every_class_of_refusal_is_listed_policy_refusals_first() {
        let mut records: Vec<AuditDraft> = Vec::new();
        let fail = |code: &str| Outcome {
            ok: false,
            code: code.into(),
            message: "m".into(),
        };
        records.push(d(
            INTRUDER,
            "GenerateKey",
            None,
            fail("FAILED_PRECONDITION"),
        ));
        records.push(d(INTRUDER, "DeriveSubKey", None, fail("INVALID_ARGUMENT")));
        records.push(d(APPROVER_1, "GetKey", None, fail("PERMISSION_DENIED")));
        records.push(d(INTRUDER, "UnblockPin", None, fail("RESOURCE_EXHAUSTED")));
        records.push(d(
            INTRUDER,
            "GenerateKey",
            None,
            fail("FAILED_PRECONDITION"),
        ));
        let report = ceremony_report(&chain(records));
        let refused = report.split("## Refused requests").nth(1).unwrap();
        let at = |what: &str| {
            refused
                .find(what)
                .unwrap_or_else(|| panic!("{what}: {refused}"))
        };
        assert!(at("### `PERMISSION_DENIED` (1)") < at("### `FAILED_PRECONDITION` (2)"));
        assert!(at("### `FAILED_PRECONDITION` (2)") < at("### `RESOURCE_EXHAUSTED` (1)"));
        assert!(at("### `RESOURCE_EXHAUSTED` (1)") < at("### `INVALID_ARGUMENT` (1)"));
        assert!(
            refused.contains(&format!("- `{INTRUDER}`: 2 (records 1, 5)")),
            "{refused}"
        );
        assert!(
            refused.contains("skip a rule such as dual control"),
            "{refused}"
        );
    }

    #[test]
    fn ceremonies_come_in_order_of_first_appearance_with_their_outcome() {
        let report = ceremony_report(&generate_ceremony());
        let one = report.find("### Ceremony `cer-1`").unwrap();
        let two = report.find("### Ceremony `cer-2`").unwrap();
        assert!(one < two);
        assert!(
            report.contains("**Outcome:** cancelled, no approvals."),
            "{report}"
        );
    }

    #[test]
    fn key_operations_outside_ceremonies_and_denials_are_listed() {
        let report = ceremony_report(&generate_ceremony());
        let others = report.split("## Other key operations").nth(1).unwrap();
        assert!(others.contains(&format!("`{APPROVER_1}` `DeriveSubKey` (record 6): keys `reg-1`; `reg-1` KCV `0B0B0B` (aes-cmac)")), "{others}");
        // The denied read is not a key operation that happened.
        assert!(
            !others
                .split("## Refused")
                .next()
                .unwrap()
                .contains("GetKey"),
            "{others}"
        );
        let refused = report.split("## Refused requests").nth(1).unwrap();
        let denied = refused.split("### `PERMISSION_DENIED` (2)").nth(1).unwrap();
        assert!(
            denied.contains(&format!("- `{INTRUDER}`: 2 (records 3, 7)")),
            "{refused}"
        );
    }

    #[test]
    fn no_records_make_a_short_report() {
        let report = ceremony_report(&[]);
        assert!(report.contains("No records."));
        assert!(report.contains("No ceremonies in these records."));
    }

    #[test]
    fn values_cannot_break_the_markdown() {
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`x"), "`` `x ``");
        assert_eq!(code("a\nb"), "`a\\nb`");
        assert_eq!(code(""), "(empty)");
    }

    #[test]
    fn parse_records_reads_a_bundle_and_names_a_bad_line() {
        let (mut b, _) = clean();
        let records = parse_records(&b.record_lines).unwrap();
        assert_eq!(records.len(), 20);
        assert!(ceremony_report(&records).contains("Records 1 to 20 (20 records)"));
        b.record_lines[3] = "{".into();
        let e = parse_records(&b.record_lines).unwrap_err();
        assert_eq!(e.place, "records.jsonl line 4");
    }
    #[test]
    fn a_ceremony_expires_by_its_rpc_or_its_deadline_code() {
        let deadline = Outcome {
            ok: false,
            code: EXPIRED_CODE.into(),
            message: String::new(),
        };
        let report = ceremony_report(&chain(vec![
            d(OPENER, OPEN, Some("cer-6"), ok()),
            d(OPENER, "ExpireCeremony", Some("cer-6"), ok()),
            d(OPENER, OPEN, Some("cer-7"), ok()),
            d(APPROVER_1, APPROVE, Some("cer-7"), deadline),
        ]));
        assert!(
            report.contains("**Expired**, found by `ExpireCeremony`"),
            "{report}"
        );
        assert!(
            report.contains(&format!(
                "**Expired**, found by `ApproveCeremony` of `{APPROVER_1}`"
            )),
            "{report}"
        );
        assert_eq!(
            report
                .matches("**Outcome:** expired, no approvals.")
                .count(),
            2,
            "{report}"
        );
    }

    #[test]
    fn a_denied_requests_line_lists_at_most_20_records() {
        let twenty = ceremony_report(&chain(
            (0..20)
                .map(|_| d(INTRUDER, "GetKey", None, denied()))
                .collect(),
        ));
        let want: Vec<String> = (1..=20).map(|s| s.to_string()).collect();
        assert!(
            twenty.contains(&format!(
                "- `{INTRUDER}`: 20 (records {})\n",
                want.join(", ")
            )),
            "{twenty}"
        );
        let more = ceremony_report(&chain(
            (0..21)
                .map(|_| d(INTRUDER, "GetKey", None, denied()))
                .collect(),
        ));
        assert!(
            more.contains(&format!(
                "- `{INTRUDER}`: 21 (records {}, …)\n",
                want.join(", ")
            )),
            "{more}"
        );
    }

    #[test]
    fn a_ceremony_record_with_kcvs_is_its_execution_and_others_are_listed_as_they_are() {
        let mut made = d(APPROVER_2, "GenerateKey", Some("cer-8"), ok());
        made.kcvs = vec![KcvEntry {
            key_id: "k-8".into(),
            kcv: "ABCDEF".into(),
            method: "aes-cmac".into(),
        }];
        let report = ceremony_report(&chain(vec![
            d(APPROVER_1, "GetCeremony", Some("cer-8"), ok()),
            made,
        ]));
        assert!(
            report.contains("- The opening is not in these records"),
            "{report}"
        );
        assert!(
            report.contains(&format!("- `GetCeremony` by `{APPROVER_1}` at ")),
            "{report}"
        );
        assert!(
            report.contains(&format!("**Executed** `GenerateKey` by `{APPROVER_2}`")),
            "{report}"
        );
        // No key ids on the record: no keys line.
        assert!(!report.contains("  - keys:"), "{report}");
        assert!(
            report.contains("**Outcome:** executed, no approvals: `k-8` KCV `ABCDEF`."),
            "{report}"
        );
    }

    #[test]
    fn an_opened_ceremony_does_not_say_its_opening_is_missing_and_shows_its_keys() {
        let report = ceremony_report(&generate_ceremony());
        assert!(
            !report.contains("opening is not in these records"),
            "{report}"
        );
        assert!(report.contains("  - keys: `nat-master-1`\n"), "{report}");
    }

    #[test]
    fn only_refused_requests_are_listed_as_refused() {
        let mut allowed = d(APPROVER_1, "GetKey", None, ok());
        allowed.decision = Some(DecisionEntry {
            allowed: true,
            rule: Some("read-own-and-below".into()),
            reason: "allowed".into(),
        });
        let mut refused = d(INTRUDER, "GetKey", None, denied());
        refused.decision = Some(DecisionEntry {
            allowed: false,
            rule: None,
            reason: "denied".into(),
        });
        let report = ceremony_report(&chain(vec![allowed.clone()]));
        let listed = report.split("## Refused requests").nth(1).unwrap();
        assert_eq!(listed, "\n\nNone.\n", "{report}");
        let report = ceremony_report(&chain(vec![allowed, refused]));
        let listed = report.split("## Refused requests").nth(1).unwrap();
        assert_eq!(
            listed,
            format!(
                "\n\n### `PERMISSION_DENIED` (1): refused by the policy\n\n- `{INTRUDER}`: 1 (records 2)\n"
            ),
            "{report}"
        );
    }
}
