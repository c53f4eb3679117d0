//! `hkms audit ...`: export the ceremony log as a self-contained bundle (auditors), verify a
//! bundle offline with no HSM and no server, and turn a bundle into a ceremony report.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Subcommand;
use tokio_stream::StreamExt;

use crate::audit::bundle::{BUNDLE_FORMAT, Bundle, Manifest, read_bundle, write_bundle};
use crate::audit::report::{Verification, html_report, parse_records, verified_report};
use crate::audit::verify::{VerifyReport, parse_witness_key_sha256, verify_witnessed_bundle};
use crate::audit::witness::{Cosignature, ExportStatement};
use crate::proto;
use crate::proto::audit_service_client::AuditServiceClient;

use super::client::{ClientArgs, status};
use super::pages::{PAGE_SIZE, all_pages};
use super::secret::{read_secret, read_secret_file};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Export the whole log, sealed by a fresh checkpoint, into a new folder, with the
    /// witnesses' cosignatures and the node's signed statement of its head.
    Export {
        /// The bundle folder to create.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Verify a bundle offline; names the first broken place (exit 1). Without the node's key
    /// SHA-256 it checks only that the bundle agrees with itself (exit 3, UNPINNED); exit 2 is
    /// a question it cannot answer (no such folder, a mistyped SHA-256).
    Verify {
        /// The bundle folder.
        bundle: PathBuf,
        /// SHA-256 of the node's signing key (64 hex digits), as you got it from the node's
        /// officers or its ceremony minutes, not from the bundle.
        #[arg(long, alias = "expect-fingerprint", value_name = "SHA256")]
        expect_key_sha256: Option<String>,
        /// SHA-256 of a witness's audit key (64 hex digits), as you got it from the witness's
        /// officers; repeat for each witness. Then the bundle must carry the node's export
        /// statement and a cosignature by each, and every cosignature must agree with the
        /// records: a log rewritten or cut back after a witness saw it is BROKEN.
        #[arg(long, value_name = "SHA256")]
        witness_key_sha256: Vec<String>,
        /// Print the verdict as JSON (same exit codes).
        #[arg(long)]
        json: bool,
    },
    /// A readable ceremony report from a bundle, with the verdict of its verification at the
    /// top: Markdown on standard output, or one self-contained HTML file with --html. Exit 1
    /// when the bundle does not verify (the report then says where, and shows no record).
    Report {
        /// The bundle folder.
        bundle: PathBuf,
        /// SHA-256 of the node's signing key (64 hex digits), as for `audit verify`: without
        /// it the report says UNPINNED.
        #[arg(long, value_name = "SHA256")]
        expect_key_sha256: Option<String>,
        /// Write the report as one self-contained HTML file (no script, nothing loaded from
        /// the network) to FILE instead of Markdown to standard output.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Replace FILE when it exists (by default an existing file is never overwritten).
        #[arg(long, requires = "html")]
        force: bool,
    },
    /// Have the node compute an ID number's MAC and list the card service records that carry
    /// it. The number is asked for without echo, or read from standard input or --id-file;
    /// never from the command line. The lookup is recorded with the MAC, not the number.
    FindId {
        /// A file whose first line is the ID number (instead of standard input).
        #[arg(long, value_name = "FILE")]
        id_file: Option<PathBuf>,
        /// Records from this sequence number on (to go on after an answer that had more).
        #[arg(long, default_value_t = 0)]
        from_seq: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
}

impl AuditCommand {
    /// Runs the command.
    pub async fn run(self) -> anyhow::Result<ExitCode> {
        match self {
            AuditCommand::Export { out, client } => export(out, client).await,
            AuditCommand::Verify {
                bundle,
                expect_key_sha256,
                witness_key_sha256,
                json,
            } => verify(
                &bundle,
                expect_key_sha256.as_deref(),
                &witness_key_sha256,
                json,
            ),
            AuditCommand::FindId {
                id_file,
                from_seq,
                client,
            } => find_id(id_file, from_seq, client).await,
            AuditCommand::Report {
                bundle,
                expect_key_sha256,
                html,
                force,
            } => report(&bundle, expect_key_sha256.as_deref(), html, force),
        }
    }
}

/// `audit verify`: the verdict, its details and its exit status (0 OK, 1 BROKEN, 2 a question
/// it cannot answer, 3 UNPINNED).
fn verify(
    bundle: &Path,
    expect_key_sha256: Option<&str>,
    witness_keys: &[String],
    json: bool,
) -> anyhow::Result<ExitCode> {
    // A mistyped key is the auditor's slip, not a broken bundle: exit 2, not 1.
    if let Some(given) = expect_key_sha256
        && let Err(e) = crate::audit::verify::parse_expected_sha256(given)
    {
        eprintln!("hkms: --expect-key-sha256: {}", e.message);
        return Ok(ExitCode::from(2));
    }
    for given in witness_keys {
        if let Err(e) = parse_witness_key_sha256(given) {
            eprintln!(
                "hkms: --witness-key-sha256: {}",
                crate::untrusted_text::escape(&e.message)
            );
            return Ok(ExitCode::from(2));
        }
    }
    // No such folder is a wrong path (exit 2); a folder whose files are missing or
    // malformed is a broken bundle (exit 1), with the file named.
    if !bundle.is_dir() {
        eprintln!("hkms: {} is not a bundle folder", bundle.display());
        return Ok(ExitCode::from(2));
    }
    let verdict = match read_bundle(bundle) {
        Ok(b) => verify_witnessed_bundle(&b, expect_key_sha256, witness_keys),
        Err(e) => Err(crate::audit::verify::VerifyError {
            place: bundle.display().to_string(),
            message: e.to_string(),
        }),
    };
    // A forger re-signs with a key of their own and ships it in the bundle:
    // without the pin, consistency proves nothing about who signed.
    let pinned = expect_key_sha256.is_some();
    if json {
        let (text, code) = match &verdict {
            Ok(r) => (verified_json(r, pinned), if pinned { 0 } else { 3 }),
            Err(e) => (
                serde_json::json!({
                    "verdict": "BROKEN", "place": e.place, "message": e.message,
                }),
                1,
            ),
        };
        println!("{text}");
        return Ok(ExitCode::from(code));
    }
    let r = match verdict {
        Ok(r) => r,
        Err(e) => {
            // It may quote the bundle, which anyone could have written.
            let said = e.to_string();
            println!("BROKEN at {}", crate::untrusted_text::escape(&said));
            return Ok(ExitCode::FAILURE);
        }
    };
    println!(
        "{}: records {}..{} ({}), {} checkpoints, sealed up to {}, key {} (SHA-256 {})",
        if pinned { "OK" } else { "UNPINNED" },
        r.first_seq,
        r.last_seq,
        r.records,
        r.checkpoints,
        r.sealed_up_to,
        r.key_fingerprint,
        r.key_sha256
    );
    for line in witness_lines(&r) {
        println!("{}", crate::untrusted_text::escape(&line));
    }
    for n in &r.notes {
        println!("note: {}", crate::untrusted_text::escape(n));
    }
    if !pinned {
        println!(
            "the bundle agrees with itself, but it carries its own key: pass \
             --expect-key-sha256 with the SHA-256 the node's officers give \
             you, not the bundle"
        );
        return Ok(ExitCode::from(3));
    }
    Ok(ExitCode::SUCCESS)
}

/// The verdict of a bundle that verified, as `audit verify --json` prints it.
fn verified_json(r: &VerifyReport, pinned: bool) -> serde_json::Value {
    let witnesses: Vec<serde_json::Value> = r
        .witnesses
        .iter()
        .map(|w| {
            serde_json::json!({
                "witness": w.witness, "key_sha256": w.key_sha256, "pinned": w.pinned,
                "cosignatures": w.cosignatures, "last_seq": w.last_seq,
            })
        })
        .collect();
    serde_json::json!({
        "verdict": if pinned { "OK" } else { "UNPINNED" },
        "first_seq": r.first_seq, "last_seq": r.last_seq,
        "records": r.records, "checkpoints": r.checkpoints,
        "sealed_up_to": r.sealed_up_to,
        "key_fingerprint": r.key_fingerprint,
        "key_sha256": r.key_sha256,
        "statement": r.statement.as_ref().map(|s| serde_json::json!({
            "seq": s.seq, "head": s.head, "time": s.time,
        })),
        "cosignatures": r.cosignatures,
        "witnesses_checked": r.witnesses_checked,
        "witnesses": witnesses,
        "notes": r.notes,
    })
}

/// The lines after the verdict about the statement and each witness.
fn witness_lines(r: &VerifyReport) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(s) = &r.statement {
        lines.push(format!(
            "statement: the node stated at {} that its head was record {}, the bundle's last",
            s.time, s.seq
        ));
    }
    for w in &r.witnesses {
        let what = match (r.witnesses_checked, w.pinned) {
            (true, true) => "pinned; every cosignature agrees with the records",
            (true, false) => "not pinned: listed, not trusted",
            (false, _) => "not checked (no --witness-key-sha256)",
        };
        lines.push(format!(
            "witness {} (key SHA-256 {}): {} cosignature{}, the last of record {}; {what}",
            w.witness,
            w.key_sha256,
            w.cosignatures,
            if w.cosignatures == 1 { "" } else { "s" },
            w.last_seq
        ));
    }
    lines
}

/// `audit report`: verifies the bundle, then writes the report of its records.
fn report(
    bundle: &Path,
    expect_key_sha256: Option<&str>,
    html: Option<PathBuf>,
    force: bool,
) -> anyhow::Result<ExitCode> {
    if let Some(given) = expect_key_sha256
        && let Err(e) = crate::audit::verify::parse_expected_sha256(given)
    {
        eprintln!("hkms: --expect-key-sha256: {}", e.message);
        return Ok(ExitCode::from(2));
    }
    let b = read_bundle(bundle)?;
    let verification = Verification::of(&b, expect_key_sha256);
    // The records of a bundle that does not verify are not reported, and need not parse.
    let records = if verification.verdict.records_hold() {
        parse_records(&b.record_lines)?
    } else {
        Vec::new()
    };
    let code = if verification.verdict.records_hold() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    let Some(file) = html else {
        print!("{}", verified_report(&verification, &records));
        return Ok(code);
    };
    let now = crate::audit::record::now_millis();
    let page = html_report(&verification, &records, &now);
    // An auditor's earlier report is never replaced by mistake: --force to replace it.
    let written = if force {
        crate::durable::write_file(&file, page.as_bytes(), 0o644)
    } else {
        crate::durable::write_new_file(&file, page.as_bytes(), 0o644)
    };
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => anyhow::bail!(
            "{} exists: a report is not replaced unless you pass --force; choose another name \
             or remove it first",
            file.display()
        ),
        other => other.with_context(|| format!("writing the report to {}", file.display()))?,
    }
    // The verifier's message may quote a record: shown, never obeyed by the terminal.
    eprintln!(
        "{}; report written to {}",
        crate::untrusted_text::escape(&verification.summary()),
        file.display()
    );
    Ok(code)
}

async fn find_id(
    id_file: Option<PathBuf>,
    from_seq: u64,
    client: ClientArgs,
) -> anyhow::Result<ExitCode> {
    let mut id = match &id_file {
        Some(path) => read_secret_file("ID number", path)?,
        None => read_secret("ID number")?,
    };
    let request = proto::FindIdNumberRequest {
        // Moved, not copied: the only plain copy is the message's own.
        id_number: std::mem::take(&mut *id),
        from_seq,
    };
    let mut c = AuditServiceClient::new(client.channel().await?);
    let found = c
        .find_id_number(request)
        .await
        .map_err(status)?
        .into_inner();
    if client.json {
        println!(
            "{}",
            serde_json::json!({
                "id_mac": found.id_mac,
                "seqs": found.seqs,
                "more": found.more,
                "legacy_searched": found.legacy_searched,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!("ID MAC  {}", found.id_mac);
    if found.seqs.is_empty() {
        println!("no record from {} on carries it", from_seq.max(1));
    } else {
        let list: Vec<String> = found.seqs.iter().map(u64::to_string).collect();
        println!("records {}", list.join(" "));
    }
    if let (true, Some(last)) = (found.more, found.seqs.last()) {
        println!(
            "more records carry it: run again with --from-seq {}",
            last.saturating_add(1)
        );
    }
    if !found.legacy_searched {
        println!(
            "records made before ID MACs (cardholder_id_hash, agent_id_hash) were not searched: \
             this node has no id-salt (docs/card-commands.md §9)"
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn export(out: PathBuf, client: ClientArgs) -> anyhow::Result<ExitCode> {
    let mut c = AuditServiceClient::new(client.channel().await?);
    let key = c
        .get_public_key(proto::GetPublicKeyRequest {})
        .await
        .map_err(status)?
        .into_inner();
    // The first page seals the head and carries the statement; the pages after it list the
    // checkpoints and cosignatures the first one fixed.
    let pages = all_pages(|page_token| {
        let mut c = c.clone();
        let request = proto::GetCheckpointsRequest {
            seal: true,
            page_size: PAGE_SIZE,
            page_token,
        };
        async move {
            let page = c
                .get_checkpoints(request)
                .await
                .map_err(status)?
                .into_inner();
            let next = page.next_page_token;
            Ok((
                vec![(page.checkpoints, page.cosignatures, page.statement)],
                next,
            ))
        }
    })
    .await?;
    let stated = pages
        .first()
        .map(|(_, _, statement)| statement.clone())
        .unwrap_or_default();
    let (checkpoint_lines, cosignature_lines): (Vec<_>, Vec<_>) =
        pages.into_iter().map(|(cp, cos, _)| (cp, cos)).unzip();
    let checkpoints = checkpoint_lines
        .iter()
        .flatten()
        .map(|l| serde_json::from_str(l))
        .collect::<Result<Vec<crate::audit::Checkpoint>, _>>()
        .context("the node sent a malformed checkpoint")?;
    let cosignatures = cosignature_lines
        .iter()
        .flatten()
        .map(|l| Cosignature::from_line(l))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("the node sent a malformed cosignature: {e}"))?;
    let statement = (!stated.is_empty())
        .then(|| ExportStatement::from_line(&stated))
        .transpose()
        .map_err(|e| anyhow::anyhow!("the node sent a malformed export statement: {e}"))?;
    let Some(sealed) = checkpoints.last().map(|c| c.seq) else {
        anyhow::bail!("the node's log is empty: nothing to export");
    };
    let mut stream = c
        .stream_records(proto::StreamRecordsRequest {
            to_seq: sealed,
            ..Default::default()
        })
        .await
        .map_err(status)?
        .into_inner();
    let mut record_lines = Vec::new();
    let mut first = None;
    while let Some(item) = stream.next().await {
        let r = item.map_err(status)?;
        first.get_or_insert(r.seq);
        record_lines.push(r.line);
    }
    let bundle = Bundle {
        manifest: Manifest {
            format: BUNDLE_FORMAT.to_string(),
            node: key.node.clone(),
            exported_at: crate::audit::record::now_millis(),
            first_seq: first.unwrap_or(1),
            last_seq: sealed,
            record_count: record_lines.len() as u64,
            key_fingerprint: key.fingerprint.clone(),
        },
        record_lines,
        checkpoints,
        public_key_pem: key.spki_pem,
        cosignatures,
        statement,
    };
    write_bundle(&out, &bundle)?;
    let stated = bundle.statement.as_ref().map(|s| s.seq);
    if stated.is_none() {
        eprintln!(
            "hkms: the node signed no export statement of its head (its log was changed under \
             it, or it is an older hkms): `hkms audit verify --witness-key-sha256` will refuse \
             this bundle"
        );
    }
    if client.json {
        println!(
            "{}",
            serde_json::json!({
                "first_seq": bundle.manifest.first_seq, "last_seq": sealed, "node": key.node,
                "bundle": out, "key_fingerprint": key.fingerprint, "key_sha256": key.sha256,
                "statement_seq": stated, "cosignatures": bundle.cosignatures.len(),
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "exported records {}..{} of node {} to {} (key {}, SHA-256 {})",
        bundle.manifest.first_seq,
        sealed,
        key.node,
        out.display(),
        key.fingerprint,
        key.sha256
    );
    if let Some(seq) = stated {
        println!(
            "the node's statement of its head (record {seq}) ends the bundle, with {} \
             cosignature{} by its witnesses",
            bundle.cosignatures.len(),
            if bundle.cosignatures.len() == 1 {
                ""
            } else {
                "s"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
