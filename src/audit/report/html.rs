//! The ceremony report as one self-contained HTML file, the form an auditor hands in: the
//! verification verdict and the pinned key first, then the key hierarchy as a tree, the
//! ceremony timeline (an inline SVG chart), the approvals per ceremony, each ceremony's
//! records, the key operations outside ceremonies, cards personalised and keys exported per
//! key, and every refused request by status code and caller.
//!
//! No script, no network, no external asset: the CSS is inline and allowed by its hash in a
//! Content-Security-Policy that forbids everything else, and `<details>` folds what is long.
//! Every value from a record goes through [`esc`]. The report has no witness section: the
//! witnesses' cosignatures are checked by `hkms audit verify --witness-key-sha256`, and the
//! verdict's notes say when a bundle's were not.

use base64::Engine;
use sha2::{Digest, Sha256};

use super::html_escape::{actor, code, esc};
use super::keys::{Key, KeyTree, Origin, key_tree};
use super::model::{self, Ceremony, CeremonyOutcome, EventKind};
use super::timeline::{legend, timeline_svg, what};
use super::verdict::{Verdict, Verification};
use crate::audit::record::AuditRecord;

/// The page's style sheet; the CSP allows it, and only it, by its SHA-256.
const STYLE: &str = include_str!("report.css");

/// The HTML report of a bundle whose verification is `v` and whose records are `records` (in
/// seq order); `generated_at` is when the report is made (RFC 3339). A bundle that does not
/// verify gets its verdict alone.
pub fn html_report(v: &Verification, records: &[AuditRecord], generated_at: &str) -> String {
    let span = model::span(records).filter(|_| v.verdict.records_hold());
    let title = match &span {
        Some(s) => format!(
            "Ceremony report: node {}, records {} to {}",
            v.node, s.first.seq, s.last.seq
        ),
        None => format!("Ceremony report: node {}", v.node),
    };
    let csp = format!(
        "default-src 'none'; style-src 'sha256-{}'; img-src 'none'; base-uri 'none'; \
         form-action 'none'",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(STYLE.as_bytes()))
    );
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"{csp}\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
        esc(&title)
    );
    out.push_str("<header>\n<h1>Ceremony report</h1>\n<p class=\"meta\">");
    out.push_str(&format!("Node {}", code(&v.node)));
    if let Some(s) = &span {
        let nodes: Vec<String> = s.nodes.iter().map(|n| code(n)).collect();
        out.push_str(&format!(
            " · records {} to {} ({} records) · {} to {} · nodes in the records: {}",
            s.first.seq,
            s.last.seq,
            s.count,
            esc(&s.first.time),
            esc(&s.last.time),
            nodes.join(", ")
        ));
    }
    out.push_str(&format!(
        "<br>Bundle exported at {} · report made by hkms at {}</p>\n</header>\n",
        esc(&v.exported_at),
        esc(generated_at)
    ));
    verdict_section(&mut out, v);
    if span.is_some() {
        out.push_str(
            "<nav><a href=\"#key-tree\">Key hierarchy</a> · <a href=\"#timeline\">Timeline</a> · \
             <a href=\"#approvals\">Approvals</a> · <a href=\"#ceremonies\">Ceremonies</a> · \
             <a href=\"#other-operations\">Other key operations</a> · \
             <a href=\"#personalisation\">Card personalisation</a> · \
             <a href=\"#exports\">Exports</a> · <a href=\"#refused\">Refused requests</a></nav>\n",
        );
        let ceremonies = model::ceremonies(records);
        tree_section(&mut out, &key_tree(records));
        timeline_section(&mut out, &ceremonies, records);
        approvals_section(&mut out, &ceremonies);
        ceremonies_section(&mut out, &ceremonies);
        others_section(&mut out, records);
        personalisation_section(&mut out, records);
        exports_section(&mut out, records);
        refused_section(&mut out, records);
    }
    out.push_str(
        "<footer>Made by <code>hkms audit report --html</code> from the bundle's records. It \
         tells what the records say; the verdict above says whether they are the node's. This \
         file is self-contained: no script, nothing loaded from anywhere.</footer>\n\
         </main>\n</body>\n</html>\n",
    );
    out
}

/// The verdict, large, with the keys it rests on.
fn verdict_section(out: &mut String, v: &Verification) {
    let class = v.verdict.word().to_ascii_lowercase();
    out.push_str(&format!(
        "<section id=\"verdict\" class=\"verdict {class}\">\n<p class=\"word\">{}</p>\n\
         <p>{}</p>\n<table class=\"facts\">\n",
        v.verdict.word(),
        esc(v.meaning())
    ));
    let row = |out: &mut String, name: &str, value: String| {
        out.push_str(&format!("<tr><th>{name}</th><td>{value}</td></tr>\n"));
    };
    match &v.verdict {
        Verdict::Broken(e) => {
            row(out, "broken at", code(&e.place));
            row(out, "what is wrong", esc(&e.message));
        }
        Verdict::Verified(r) | Verdict::Unpinned(r) => row(
            out,
            "verified",
            format!(
                "records {}..{} ({}), {} checkpoints, sealed up to record {}",
                r.first_seq, r.last_seq, r.records, r.checkpoints, r.sealed_up_to
            ),
        ),
    }
    row(
        out,
        "audit key fingerprint",
        format!("{} (from the manifest)", code(&v.manifest_fingerprint)),
    );
    row(
        out,
        "audit key SHA-256",
        match &v.key_sha256 {
            Some(s) => format!("{} (of the bundle's public-key.pem)", code(s)),
            None => "public-key.pem is not a P-256 public key".into(),
        },
    );
    row(
        out,
        "SHA-256 given",
        match (&v.expected_sha256, v.key_matches()) {
            (Some(g), Some(true)) => format!("{} <span class=\"ok\">matches</span>", code(g)),
            (Some(g), _) => format!("{} <span class=\"bad\">does not match</span>", code(g)),
            (None, _) => "<span class=\"warn\">none</span> (give it with \
                          <code>--expect-key-sha256</code>)"
                .into(),
        },
    );
    for n in v.notes() {
        row(out, "note", esc(n));
    }
    out.push_str("</table>\n</section>\n");
}

/// The key hierarchy, each key under its parent.
fn tree_section(out: &mut String, tree: &KeyTree<'_>) {
    out.push_str("<section id=\"key-tree\">\n<h2>Key hierarchy</h2>\n");
    out.push_str(
        "<p class=\"hint\">Every key the records show made (generated, entered by components, \
         derived, imported), under its parent, with its state after the state changes the \
         records hold. A key the records only name, made before them, is marked so.</p>\n",
    );
    if tree.roots.is_empty() {
        out.push_str("<p>No keys were made in these records.</p>\n</section>\n");
        return;
    }
    // Depth first, without recursion: a hostile bundle could chain many keys.
    enum Step {
        Open(usize),
        Close(bool),
    }
    let mut steps: Vec<Step> = tree.roots.iter().rev().map(|i| Step::Open(*i)).collect();
    out.push_str("<ul class=\"tree\">\n");
    while let Some(step) = steps.pop() {
        match step {
            Step::Open(i) => {
                let Some(key) = tree.keys.get(i) else {
                    continue;
                };
                out.push_str(&format!(
                    "<li data-key-id=\"{}\" data-tier=\"{}\">",
                    esc(key.id),
                    key.tier().unwrap_or("unknown")
                ));
                key_card(out, key);
                let nested = !key.children.is_empty();
                if nested {
                    out.push_str("\n<ul>\n");
                }
                steps.push(Step::Close(nested));
                steps.extend(key.children.iter().rev().map(|c| Step::Open(*c)));
            }
            Step::Close(nested) => {
                out.push_str(if nested { "</ul>\n</li>\n" } else { "</li>\n" });
            }
        }
    }
    out.push_str("</ul>\n</section>\n");
}

/// One key: tier, type, region and id; KCV, state and origin; its state changes.
fn key_card(out: &mut String, key: &Key<'_>) {
    let tier = key.tier().unwrap_or("unknown");
    let state = key.state().unwrap_or("unknown");
    let state_class: String = state
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    out.push_str(&format!(
        "<div class=\"key\"><div class=\"line\"><span class=\"tier {tier}\">{tier}</span> \
         <strong>{}</strong> <span class=\"region\">{}</span> {} \
         <span class=\"state s-{state_class}\">{}</span></div>",
        key.key_type.map_or("type not recorded".into(), esc),
        key.region
            .as_deref()
            .map_or("region not recorded".into(), |r| format!(
                "region {}",
                esc(r)
            )),
        code(key.id),
        esc(state)
    ));
    let kcv = key.kcv.map_or("KCV not recorded".into(), |k| {
        format!("KCV {} ({})", code(&k.kcv), esc(&k.method))
    });
    let origin = match &key.origin {
        Origin::Generated { ceremony: Some(c) } => {
            format!("generated in the HSM in ceremony {}", code(c))
        }
        Origin::Generated { ceremony: None } => "generated in the HSM".into(),
        Origin::Components { ceremony } => format!(
            "entered as components{}",
            ceremony.map_or(String::new(), |c| format!(" in ceremony {}", code(c)))
        ),
        Origin::Derived => format!(
            "derived from {}",
            key.parent.map_or("its parent".into(), code)
        ),
        Origin::Imported {
            issuer_node,
            package_id,
        } => format!(
            "imported from node {}, package {}",
            code(issuer_node),
            code(package_id)
        ),
        Origin::Earlier => "made before these records (named by them only)".into(),
    };
    let made = key.made.map_or(String::new(), |r| {
        format!(" · record {} at {}", r.seq, esc(&r.time))
    });
    out.push_str(&format!(
        "<div class=\"line detail\">{kcv} · {origin}{made}</div>"
    ));
    for c in &key.changes {
        out.push_str(&format!(
            "<div class=\"line detail\">→ {} by {} · record {} at {}</div>",
            esc(c.state),
            actor(&c.record.actor),
            c.record.seq,
            esc(&c.record.time)
        ));
    }
    out.push_str("</div>");
}

/// The timeline chart and its legend.
fn timeline_section(out: &mut String, ceremonies: &[Ceremony<'_>], records: &[AuditRecord]) {
    out.push_str("<section id=\"timeline\">\n<h2>Ceremony timeline</h2>\n");
    if ceremonies.is_empty() {
        out.push_str("<p>No ceremonies in these records.</p>\n</section>\n");
        return;
    }
    let last = records.last().map_or("", |r| r.time.as_str());
    let (svg, left_off) = timeline_svg(ceremonies, last);
    out.push_str(&format!(
        "<div class=\"chart\">{svg}</div>\n<ul class=\"legend\">"
    ));
    for (class, meaning) in legend() {
        out.push_str(&format!(
            "<li><span class=\"swatch {class}\"></span>{meaning}</li>"
        ));
    }
    out.push_str("</ul>\n");
    if !left_off.is_empty() {
        let ids: Vec<String> = left_off.iter().map(|c| code(c)).collect();
        out.push_str(&format!(
            "<p class=\"warn\">Not on the chart, a record's time is not a time: {}</p>\n",
            ids.join(", ")
        ));
    }
    out.push_str("</section>\n");
}

/// One row per ceremony: what it did, how it ended, who approved.
fn approvals_section(out: &mut String, ceremonies: &[Ceremony<'_>]) {
    out.push_str("<section id=\"approvals\">\n<h2>Approvals per ceremony</h2>\n");
    if ceremonies.is_empty() {
        out.push_str("<p>No ceremonies in these records.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<p class=\"hint\">As the node counted them: the opener's approval when the node counted \
         it, every allowed approval and component, or the approvers the ceremony's run names.\
         </p>\n<table>\n<thead><tr><th>ceremony</th><th>operation</th><th>outcome</th>\
         <th>approvals</th><th>approved by</th></tr></thead>\n<tbody>\n",
    );
    for c in ceremonies {
        let names: Vec<String> = c.approvers.iter().map(|a| actor(a)).collect();
        out.push_str(&format!(
            "<tr data-ceremony=\"{}\"><td>{}</td><td>{}</td>\
             <td><span class=\"badge {}\">{}</span></td><td class=\"num\">{}</td><td>{}</td></tr>\n",
            esc(c.id),
            code(c.id),
            esc(&what(c)),
            c.outcome.word(),
            c.outcome.word(),
            c.approvers.len(),
            if names.is_empty() {
                "none".into()
            } else {
                names.join("<br>")
            }
        ));
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

/// Each ceremony's records, folded.
fn ceremonies_section(out: &mut String, ceremonies: &[Ceremony<'_>]) {
    out.push_str("<section id=\"ceremonies\">\n<h2>Ceremonies</h2>\n");
    if ceremonies.is_empty() {
        out.push_str("<p>No ceremonies in these records.</p>\n");
    }
    for c in ceremonies {
        out.push_str(&format!(
            "<details class=\"ceremony\" data-ceremony=\"{}\" open>\n<summary>Ceremony {} · {} · \
             <span class=\"badge {}\">{}</span> · {} approval{}</summary>\n",
            esc(c.id),
            code(c.id),
            esc(&what(c)),
            c.outcome.word(),
            c.outcome.word(),
            c.approvers.len(),
            if c.approvers.len() == 1 { "" } else { "s" }
        ));
        if !c.opened {
            out.push_str("<p class=\"warn\">The opening is not in these records.</p>\n");
        }
        if let CeremonyOutcome::Executed(runs) = &c.outcome {
            for k in runs.iter().flat_map(|r| r.kcvs.iter()) {
                out.push_str(&format!(
                    "<p>Made {} with KCV {} ({})</p>\n",
                    code(&k.key_id),
                    code(&k.kcv),
                    esc(&k.method)
                ));
            }
        }
        out.push_str(
            "<table>\n<thead><tr><th>record</th><th>time</th><th>event</th><th>by</th>\
             <th>result</th><th>details</th></tr></thead>\n<tbody>\n",
        );
        for e in &c.events {
            let r = e.record;
            let event = match e.kind {
                EventKind::Open => "opened".to_string(),
                EventKind::Approve => "approval".into(),
                EventKind::Component => "component entered".into(),
                EventKind::Cancel => "cancelled".into(),
                EventKind::Expire => format!("expired, found by {}", esc(&r.rpc)),
                EventKind::Execute => format!("executed ({})", esc(&r.rpc)),
                EventKind::Other => esc(&r.rpc),
            };
            let mut details: Vec<String> = Vec::new();
            if e.kind == EventKind::Open {
                details.push(format!("operation {}", code(&r.operation)));
                details.extend(r.params.iter().map(|(k, v)| code(&format!("{k}={v}"))));
            }
            if e.kind == EventKind::Execute && !r.key_ids.is_empty() {
                let keys: Vec<String> = r.key_ids.iter().map(|k| code(k)).collect();
                details.push(format!("keys {}", keys.join(", ")));
            }
            details.extend(r.kcvs.iter().map(|k| {
                format!(
                    "KCV of {}: {} ({})",
                    code(&k.key_id),
                    code(&k.kcv),
                    esc(&k.method)
                )
            }));
            out.push_str(&format!(
                "<tr><td class=\"num\">{}</td><td class=\"time\">{}</td><td>{event}</td><td>{}</td><td>{}</td>\
                 <td>{}</td></tr>\n",
                r.seq,
                esc(&r.time),
                actor(&r.actor),
                result(r),
                details.join("<br>")
            ));
        }
        out.push_str("</tbody>\n</table>\n</details>\n");
    }
    out.push_str("</section>\n");
}

/// How a request ended: its code, message, and the policy's reason when it denied it.
fn result(r: &AuditRecord) -> String {
    let class = if r.result.ok { "ok" } else { "bad" };
    let mut s = format!("<span class=\"{class}\">{}</span>", esc(&r.result.code));
    if !r.result.message.is_empty() {
        s.push_str(&format!(" {}", code(&r.result.message)));
    }
    if let Some(d) = r.decision.as_ref().filter(|d| !d.allowed) {
        s.push_str(&format!("<br>denied by policy: {}", code(&d.reason)));
    }
    s
}

/// The successful key operations outside ceremonies, folded.
fn others_section(out: &mut String, records: &[AuditRecord]) {
    let others = model::other_key_operations(records);
    out.push_str(&format!(
        "<section id=\"other-operations\">\n<h2>Other key operations ({})</h2>\n",
        others.len()
    ));
    if others.is_empty() {
        out.push_str("<p>None.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<details>\n<summary>Every successful request outside ceremonies that made or used a \
         key</summary>\n<table>\n<thead><tr><th>record</th><th>time</th><th>by</th><th>RPC</th>\
         <th>keys</th><th>KCVs</th></tr></thead>\n<tbody>\n",
    );
    for r in others {
        let keys: Vec<String> = r.key_ids.iter().map(|k| code(k)).collect();
        let kcvs: Vec<String> = r
            .kcvs
            .iter()
            .map(|k| format!("{} {}", code(&k.key_id), code(&k.kcv)))
            .collect();
        out.push_str(&format!(
            "<tr><td class=\"num\">{}</td><td class=\"time\">{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>\n",
            r.seq,
            esc(&r.time),
            actor(&r.actor),
            code(&r.rpc),
            keys.join("<br>"),
            kcvs.join("<br>")
        ));
    }
    out.push_str("</tbody>\n</table>\n</details>\n</section>\n");
}

/// Cards personalised, one row per master key.
fn personalisation_section(out: &mut String, records: &[AuditRecord]) {
    out.push_str("<section id=\"personalisation\">\n<h2>Card personalisation</h2>\n");
    let per_master = model::personalised_per_master(records);
    if per_master.is_empty() {
        out.push_str("<p>None.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<table>\n<thead><tr><th>master key</th><th>cards</th><th>records</th></tr></thead>\n\
         <tbody>\n",
    );
    for (master, seqs) in per_master {
        out.push_str(&format!(
            "<tr><td>{}</td><td class=\"num\">{}</td><td>{} to {}</td></tr>\n",
            code(master),
            seqs.len(),
            seqs.first().copied().unwrap_or_default(),
            seqs.last().copied().unwrap_or_default()
        ));
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

/// Key packages made, one row per exported key.
fn exports_section(out: &mut String, records: &[AuditRecord]) {
    out.push_str("<section id=\"exports\">\n<h2>Key exports</h2>\n");
    let per_key = model::exports_per_key(records);
    if per_key.is_empty() {
        out.push_str("<p>None.</p>\n</section>\n");
        return;
    }
    out.push_str(
        "<table>\n<thead><tr><th>key</th><th>packages</th><th>for regions</th>\
         <th>transport cards</th><th>records</th></tr></thead>\n<tbody>\n",
    );
    for (key, exports) in per_key {
        let distinct = |name: &str| {
            let mut v: Vec<&str> = exports
                .iter()
                .filter_map(|r| r.params.get(name).map(String::as_str))
                .collect();
            v.sort_unstable();
            v.dedup();
            let v: Vec<String> = v.into_iter().map(code).collect();
            v.join(", ")
        };
        let seqs: Vec<u64> = exports.iter().map(|r| r.seq).collect();
        out.push_str(&format!(
            "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
            code(key),
            exports.len(),
            distinct("recipient_region"),
            distinct("card_id"),
            model::listed(&seqs).join(", ")
        ));
    }
    out.push_str("</tbody>\n</table>\n</section>\n");
}

/// Every refused request, by status code, then caller.
fn refused_section(out: &mut String, records: &[AuditRecord]) {
    let groups = model::refused(records);
    let total: usize = groups.iter().map(|g| g.total()).sum();
    out.push_str(&format!(
        "<section id=\"refused\">\n<h2>Refused requests ({total})</h2>\n"
    ));
    if groups.is_empty() {
        out.push_str("<p>None.</p>\n");
    }
    for g in groups {
        out.push_str(&format!(
            "<h3 data-code=\"{}\">{} ({}): {}</h3>\n<table>\n<thead><tr><th>caller</th>\
             <th>requests</th><th>RPCs</th><th>records</th></tr></thead>\n<tbody>\n",
            esc(g.code),
            code(g.code),
            g.total(),
            model::code_meaning(g.code)
        ));
        for c in &g.callers {
            let rpcs: Vec<String> = c.rpcs.iter().map(|r| code(r)).collect();
            out.push_str(&format!(
                "<tr><td>{}</td><td class=\"num\">{}</td><td>{}</td><td>{}</td></tr>\n",
                actor(c.actor),
                c.seqs.len(),
                rpcs.join(", "),
                model::listed(&c.seqs).join(", ")
            ));
        }
        out.push_str("</tbody>\n</table>\n");
    }
    out.push_str("</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{AuditDraft, DecisionEntry, KcvEntry};
    use crate::audit::report::model::{EXECUTE, OPEN};
    use crate::audit::report::test_records::*;
    use crate::audit::verify::fixture::{clean, params as p};
    use crate::audit::verify::{VerifyError, VerifyReport};

    const NOW: &str = "2026-03-02T10:00:00.000Z";

    fn verified() -> Verification {
        Verification {
            verdict: Verdict::Verified(VerifyReport {
                first_seq: 1,
                last_seq: 9,
                records: 9,
                checkpoints: 1,
                sealed_up_to: 9,
                key_fingerprint: "9643D4".into(),
                key_sha256: "9643D4".repeat(10) + "ABCD",
                statement: None,
                cosignatures: 0,
                witnesses: Vec::new(),
                witnesses_checked: false,
                notes: Vec::new(),
            }),
            node: "ministry".into(),
            exported_at: NOW.into(),
            manifest_fingerprint: "9643D4".into(),
            key_sha256: Some("9643D4".repeat(10) + "ABCD"),
            expected_sha256: Some("9643D4".repeat(10) + "ABCD"),
        }
    }

    /// The nesting depth of the element that `marker` starts (how many `<ul` are open).
    fn depth(html: &str, marker: &str) -> usize {
        let at = html
            .find(marker)
            .unwrap_or_else(|| panic!("{marker} in {html}"));
        let before = &html[..at];
        before.matches("<ul").count() - before.matches("</ul>").count()
    }

    #[test]
    fn hostile_text_from_records_is_shown_never_obeyed() {
        let mut records = generate_ceremony();
        records[0].actor = "hkms://officer/national/000000/<script>alert(1)</script>".into();
        records[0].result.message = "x\" onmouseover=\"alert(2)".into();
        records[0].params.insert(
            "region".into(),
            "</code><img src=x onerror=alert(3)>".into(),
        );
        records[2].actor = "Li \u{202E}ieW\n\u{1b}[31m".into();
        records[4].ceremony = Some("cer-1\" data-x=\"<b>".into());
        let page = html_report(&verified(), &records, NOW);
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(!page.contains("<b>"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{page}"
        );
        assert!(
            page.contains("x&quot; onmouseover=&quot;alert(2)"),
            "{page}"
        );
        assert!(
            page.contains("data-ceremony=\"cer-1&quot; data-x=&quot;&lt;b&gt;\""),
            "{page}"
        );
        assert!(page.contains("Li \\u{202e}ieW\\n\\u{1b}[31m"), "{page}");
        assert!(
            !page
                .chars()
                .any(|c| c != '\n' && crate::untrusted_text::is_invisible(c)),
            "an invisible character reached the page"
        );
    }

    #[test]
    fn the_page_allows_its_own_style_and_nothing_else() {
        let page = html_report(&verified(), &generate_ceremony(), NOW);
        let style = page
            .split("<style>")
            .nth(1)
            .and_then(|s| s.split("</style>").next())
            .unwrap();
        let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(style));
        assert!(
            page.contains(&format!(
                "content=\"default-src 'none'; style-src 'sha256-{hash}'; img-src 'none'"
            )),
            "{page}"
        );
        for outside in ["<script", "http://", "https://", "src=", "url(", "@import"] {
            assert!(!page.contains(outside), "{outside}");
        }
        // Witnesses are checked by `audit verify`: no witness section.
        assert!(!page.to_lowercase().contains("witness"));
    }

    #[test]
    fn approvals_are_counted_as_the_node_counted_them() {
        let mut records = generate_ceremony();
        records[0]
            .params
            .insert("opener_approved".into(), "true".into());
        let page = html_report(&verified(), &records, NOW);
        let approvals = page.split("<section id=\"approvals\">").nth(1).unwrap();
        let row = approvals
            .split("<tr data-ceremony=\"cer-1\">")
            .nth(1)
            .unwrap()
            .split("</tr>")
            .next()
            .unwrap();
        assert!(row.contains("<td class=\"num\">3</td>"), "{row}");
        for who in [OPENER, APPROVER_1, APPROVER_2] {
            assert!(row.contains(who), "{who}: {row}");
        }
        assert!(
            !row.contains(INTRUDER),
            "a refused approval does not count: {row}"
        );
        let cancelled = approvals
            .split("<tr data-ceremony=\"cer-2\">")
            .nth(1)
            .unwrap();
        assert!(
            cancelled.starts_with(
                "<td><code>cer-2</code></td><td>(no operation recorded)</td>\
                 <td><span class=\"badge cancelled\">"
            ),
            "{cancelled}"
        );
    }

    #[test]
    fn the_tree_nests_each_key_under_its_parent() {
        let mut root = d(OPENER, EXECUTE, Some("c-1"), ok());
        root.params = p(&[("key_type", "card-master"), ("region", "000000")]);
        root.key_ids = vec!["k-root".into()];
        let derive = |parent: &str, child: &str, region: &str| {
            let mut r = d(APPROVER_1, "DeriveSubKey", None, ok());
            r.params = p(&[("parent_id", parent), ("region", region)]);
            r.key_ids = vec![parent.into(), child.into()];
            r.kcvs = vec![KcvEntry {
                key_id: child.into(),
                kcv: "0B0B0B".into(),
                method: "aes-cmac".into(),
            }];
            r
        };
        let records = chain(vec![
            root,
            derive("k-root", "k-gd", "440000"),
            derive("k-gd", "k-gz", "440100"),
            derive("k-root", "k-gx", "450000"),
        ]);
        let page = html_report(&verified(), &records, NOW);
        let tree = page.split("<section id=\"key-tree\">").nth(1).unwrap();
        let tree = tree.split("</section>").next().unwrap();
        let base = depth(tree, "<li data-key-id=\"k-root\" data-tier=\"national\">");
        assert_eq!(base, 1);
        assert_eq!(
            depth(tree, "<li data-key-id=\"k-gd\" data-tier=\"provincial\">"),
            2
        );
        assert_eq!(
            depth(tree, "<li data-key-id=\"k-gz\" data-tier=\"municipal\">"),
            3
        );
        assert_eq!(
            depth(tree, "<li data-key-id=\"k-gx\" data-tier=\"provincial\">"),
            2
        );
        assert!(tree.find("k-gz").unwrap() < tree.find("data-key-id=\"k-gx\"").unwrap());
        assert!(
            tree.contains("generated in the HSM in ceremony <code>c-1</code>"),
            "{tree}"
        );
        assert!(tree.contains("derived from <code>k-gd</code>"), "{tree}");
        assert_eq!(tree.matches("<ul").count(), tree.matches("</ul>").count());
        assert_eq!(tree.matches("<li").count(), tree.matches("</li>").count());
    }

    #[test]
    fn every_refusal_is_grouped_by_code_then_caller() {
        let fail = |code: &str| crate::audit::Outcome {
            ok: false,
            code: code.into(),
            message: "m".into(),
        };
        let mut records: Vec<AuditDraft> = vec![
            d(INTRUDER, "GenerateKey", None, fail("FAILED_PRECONDITION")),
            d(APPROVER_1, "GetKey", None, fail("PERMISSION_DENIED")),
            d("", "ListKeys", None, fail("UNAUTHENTICATED")),
            d(INTRUDER, "DeriveSubKey", None, fail("FAILED_PRECONDITION")),
        ];
        records[1].decision = Some(DecisionEntry {
            allowed: false,
            rule: None,
            reason: "no rule".into(),
        });
        let page = html_report(&verified(), &chain(records), NOW);
        let refused = page.split("<section id=\"refused\">").nth(1).unwrap();
        assert!(
            refused.starts_with("\n<h2>Refused requests (4)</h2>"),
            "{refused}"
        );
        let at = |s: &str| refused.find(s).unwrap_or_else(|| panic!("{s}: {refused}"));
        assert!(at("data-code=\"PERMISSION_DENIED\"") < at("data-code=\"UNAUTHENTICATED\""));
        assert!(at("data-code=\"UNAUTHENTICATED\"") < at("data-code=\"FAILED_PRECONDITION\""));
        assert!(refused.contains(&format!(
            "<tr><td><code>{INTRUDER}</code></td><td class=\"num\">2</td>\
             <td><code>DeriveSubKey</code>, <code>GenerateKey</code></td><td>1, 4</td></tr>"
        )));
        assert!(refused.contains("(unauthenticated)"), "{refused}");
    }

    #[test]
    fn a_broken_bundle_gets_its_verdict_and_no_records() {
        let mut v = verified();
        v.verdict = Verdict::Broken(VerifyError {
            place: "record 3 (records.jsonl line 3)".into(),
            message: "prev does not match <record 2>".into(),
        });
        let page = html_report(&v, &generate_ceremony(), NOW);
        assert!(
            page.contains("<section id=\"verdict\" class=\"verdict broken\">"),
            "{page}"
        );
        assert!(page.contains("<p class=\"word\">BROKEN</p>"), "{page}");
        assert!(
            page.contains("prev does not match &lt;record 2&gt;"),
            "{page}"
        );
        for section in ["key-tree", "timeline", "approvals", "refused"] {
            assert!(!page.contains(&format!("id=\"{section}\"")), "{section}");
        }
        assert!(!page.contains(OPENER), "{page}");
    }

    #[test]
    fn an_unpinned_bundle_says_so_with_its_key() {
        let (b, _) = clean();
        let records = crate::audit::report::parse_records(&b.record_lines).unwrap();
        let v = Verification::of(&b, None);
        let page = html_report(&v, &records, NOW);
        assert!(page.contains("class=\"verdict unpinned\""), "{page}");
        assert!(page.contains(&format!("<code>{}</code>", v.key_sha256.clone().unwrap())));
        assert!(page.contains("<span class=\"warn\">none</span>"), "{page}");
        assert!(page.contains("records 1 to 20 (20 records)"), "{page}");
    }

    #[test]
    fn a_ceremony_run_without_an_opening_is_shown_and_its_keys_listed() {
        let mut made = d(APPROVER_2, EXECUTE, Some("cer-8"), ok());
        made.key_ids = vec!["k-8".into()];
        made.kcvs = vec![KcvEntry {
            key_id: "k-8".into(),
            kcv: "ABCDEF".into(),
            method: "aes-cmac".into(),
        }];
        let mut open = d(OPENER, OPEN, Some("cer-9"), ok());
        open.operation = "manage".into();
        open.params = p(&[("key_id", "k-8"), ("state", "retired")]);
        let page = html_report(&verified(), &chain(vec![made, open]), NOW);
        assert!(
            page.contains("The opening is not in these records."),
            "{page}"
        );
        assert!(
            page.contains("Made <code>k-8</code> with KCV <code>ABCDEF</code>"),
            "{page}"
        );
        assert!(
            page.contains("<g class=\"bar pending\" data-ceremony=\"cer-9\">"),
            "{page}"
        );
        assert!(page.contains("manage retired"), "{page}");
    }
}
