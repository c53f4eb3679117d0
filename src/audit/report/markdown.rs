//! The ceremony report in Markdown, for people (auditors, key custodians): what happened, as
//! [`super::model`] works it out from the records.
//!
//! It tells the story: each ceremony from opening to outcome, the key operations made outside
//! ceremonies, and who was refused how, how often. It proves nothing itself; the command
//! verifies the bundle first and puts the verdict at the top ([`super::verdict`]).

use super::model::{self, Ceremony, CeremonyOutcome, EventKind};
use super::verdict::Verification;
use crate::audit::record::{AuditRecord, Outcome};

/// The title every form of the report starts with.
const TITLE: &str = "# Ceremony report\n\n";

/// The report of a bundle: the verdict of its verification first, then, when it verifies,
/// [`ceremony_report`] of its records. A bundle that does not verify gets the verdict alone:
/// its records cannot be relied on.
pub fn verified_report(v: &Verification, records: &[AuditRecord]) -> String {
    let mut out = String::from(TITLE);
    out.push_str(&format!("**Verification: {}.** ", v.verdict.word()));
    out.push_str(v.meaning());
    out.push_str(&format!("\n\n- verifier: {}\n", code(&v.summary())));
    out.push_str(&format!(
        "- audit key: fingerprint {} (manifest), SHA-256 {}\n",
        code(&v.manifest_fingerprint),
        v.key_sha256.as_deref().map_or("unreadable".into(), code)
    ));
    out.push_str(&match (&v.expected_sha256, v.key_matches()) {
        (Some(given), Some(true)) => format!("- SHA-256 given: {}, matches\n", code(given)),
        (Some(given), _) => format!("- SHA-256 given: {}, does NOT match\n", code(given)),
        (None, _) => "- SHA-256 given: none (--expect-key-sha256)\n".to_string(),
    });
    for n in v.notes() {
        out.push_str(&format!("- note: {}\n", code(n)));
    }
    out.push('\n');
    if v.verdict.records_hold() {
        let report = ceremony_report(records);
        out.push_str(report.strip_prefix(TITLE).unwrap_or(&report));
    }
    out
}

/// The Markdown report of `records` (in seq order): every ceremony from opening to outcome, in
/// order of first appearance; the successful key operations outside ceremonies; every refused
/// request, by status code and caller.
pub fn ceremony_report(records: &[AuditRecord]) -> String {
    let mut out = String::from(TITLE);
    match model::span(records) {
        Some(span) => {
            let nodes: Vec<String> = span.nodes.into_iter().map(code).collect();
            out.push_str(&format!(
                "Records {} to {} ({} records), {} to {}, node {}.\n",
                span.first.seq,
                span.last.seq,
                span.count,
                span.first.time,
                span.last.time,
                nodes.join(", ")
            ));
        }
        None => out.push_str("No records.\n"),
    }

    out.push_str("\n## Ceremonies\n");
    let ceremonies = model::ceremonies(records);
    if ceremonies.is_empty() {
        out.push_str("\nNo ceremonies in these records.\n");
    }
    for c in &ceremonies {
        ceremony_section(&mut out, c);
    }

    out.push_str("\n## Other key operations\n\n");
    let others = model::other_key_operations(records);
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

/// One ceremony: its timeline, then its outcome in one sentence.
fn ceremony_section(out: &mut String, c: &Ceremony<'_>) {
    out.push_str(&format!("\n### Ceremony {}\n\n", code(c.id)));
    if !c.opened {
        out.push_str("- The opening is not in these records (an earlier part of the log).\n");
    }
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
    for e in &c.events {
        let r = e.record;
        let at = format!("at {} (record {})", r.time, r.seq);
        let (who, how) = (actor(r), result(&r.result, r));
        match e.kind {
            EventKind::Open => {
                out.push_str(&format!("- **Opened** by {who} {at}: {how}\n"));
                out.push_str(&format!("  - operation: {}\n", code(&r.operation)));
                out.push_str(&format!("  - parameters: {}\n", params(r)));
            }
            EventKind::Approve => {
                out.push_str(&format!("- **Approval** by {who} {at}: {how}\n"));
            }
            EventKind::Component => {
                out.push_str(&format!("- **Component entered** by {who} {at}: {how}\n"));
                kcv_lines(out, r);
            }
            EventKind::Cancel => {
                out.push_str(&format!("- **Cancelled** by {who} {at}: {how}\n"));
            }
            EventKind::Expire => {
                out.push_str(&format!(
                    "- **Expired**, found by {} of {who} {at}: {how}\n",
                    code(&r.rpc)
                ));
            }
            EventKind::Execute => {
                out.push_str(&format!(
                    "- **Executed** {} by {who} {at}: {how}\n",
                    code(&r.rpc)
                ));
                if !r.key_ids.is_empty() {
                    out.push_str(&format!("  - keys: {}\n", list(&r.key_ids)));
                }
                kcv_lines(out, r);
            }
            EventKind::Other => {
                out.push_str(&format!("- {} by {who} {at}: {how}\n", code(&r.rpc)));
            }
        }
    }
    let approvals = if c.approvers.is_empty() {
        "no approvals".to_string()
    } else {
        let plural = if c.approvers.len() == 1 { "" } else { "s" };
        let names: Vec<String> = c.approvers.iter().map(|a| actor_name(a)).collect();
        format!(
            "{} approval{plural} ({})",
            c.approvers.len(),
            names.join(", ")
        )
    };
    let outcome = match &c.outcome {
        CeremonyOutcome::Executed(runs) => {
            let kcvs: Vec<String> = runs
                .iter()
                .flat_map(|r| r.kcvs.iter())
                .map(|k| format!("{} KCV {}", code(&k.key_id), code(&k.kcv)))
                .collect();
            if kcvs.is_empty() {
                format!("executed, {approvals}")
            } else {
                format!("executed, {approvals}: {}", kcvs.join(", "))
            }
        }
        CeremonyOutcome::Cancelled => format!("cancelled, {approvals}"),
        CeremonyOutcome::Expired => format!("expired, {approvals}"),
        CeremonyOutcome::Failed => format!("failed, {approvals} (see above)"),
        CeremonyOutcome::Pending => {
            format!("no outcome in these records (still open, or later in the log), {approvals}")
        }
    };
    out.push_str(&format!("\n**Outcome:** {outcome}.\n"));
}

/// Cards personalised, per master key their card keys were derived from: one line per master,
/// not one per card.
fn personalisation_section(out: &mut String, records: &[AuditRecord]) {
    out.push_str("\n## Card personalisation\n\n");
    let per_master = model::personalised_per_master(records);
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

/// Every request that did not succeed, by status code and caller ([`model::refused`]).
fn refused_section(out: &mut String, records: &[AuditRecord]) {
    out.push_str("\n## Refused requests\n");
    let groups = model::refused(records);
    if groups.is_empty() {
        out.push_str("\nNone.\n");
    }
    for g in groups {
        out.push_str(&format!(
            "\n### {} ({}): {}\n\n",
            code(g.code),
            g.total(),
            model::code_meaning(g.code)
        ));
        for c in g.callers {
            out.push_str(&format!(
                "- {}: {} (records {})\n",
                actor_name(c.actor),
                c.seqs.len(),
                model::listed(&c.seqs).join(", ")
            ));
        }
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
    use crate::audit::record::{AuditDraft, DecisionEntry, KcvEntry};
    use crate::audit::report::model::{APPROVE, EXECUTE, EXPIRED_CODE, OPEN, PERSONALISE};
    use crate::audit::report::parse_records;
    use crate::audit::report::test_records::*;
    use crate::audit::verify::fixture::{clean, params as p};

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
                retry: None,
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

    #[test]
    fn the_verdict_comes_first_and_a_broken_bundle_shows_no_record() {
        let (b, _) = clean();
        let records = parse_records(&b.record_lines).unwrap();
        let v = crate::audit::report::Verification::of(&b, None);
        let report = verified_report(&v, &records);
        assert!(
            report.starts_with("# Ceremony report\n\n**Verification: UNPINNED.** "),
            "{report}"
        );
        assert!(report.contains("- SHA-256 given: none"), "{report}");
        assert!(
            report.contains("\nRecords 1 to 20 (20 records)"),
            "{report}"
        );
        let sha = v.key_sha256.clone().unwrap();
        let pinned = verified_report(
            &crate::audit::report::Verification::of(&b, Some(&sha)),
            &records,
        );
        assert!(pinned.contains("**Verification: VERIFIED.**"), "{pinned}");
        assert!(
            pinned.contains(&format!("- SHA-256 given: `{sha}`, matches")),
            "{pinned}"
        );
        let mut cut = b.clone();
        cut.record_lines.pop();
        let broken = verified_report(
            &crate::audit::report::Verification::of(&cut, Some(&sha)),
            &records,
        );
        assert!(broken.contains("**Verification: BROKEN.**"), "{broken}");
        assert!(!broken.contains("## Ceremonies"), "{broken}");
    }
}
