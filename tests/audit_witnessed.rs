//! Witnessed bundles: the worked examples of docs/audit-format.md §7 and §8 check with openssl
//! alone, exactly as written there; and end to end, a real node's export carries a witness's
//! cosignature and its signed statement of its head, verifies with the witness pinned (and by
//! the documented openssl recipes), and, once the log is cut back in the database behind the
//! cosigned checkpoint, is BROKEN, named, although the node re-sealed the shorter log with its
//! own key and the node's pin alone still passes.
//!
//! No witness service sends the cosignature here: the test makes one with a key of its own and
//! stores it through the store's API, as the node's sending loop does with what it receives.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use hkms::audit::Checkpoint;
use hkms::audit::bundle::{public_key_point, spki_pem_from_point, spki_sha256};
use hkms::audit::witness::{Cosignature, ExportStatement};
use hkms::proto::{self, audit_service_client::AuditServiceClient};
use hkms::store::{AuditLog, SqliteStore};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use support::{TestNode, stderr, stdout};
use tonic::transport::Channel;

const AUDITOR: &str = "hkms://auditor/national/000000/auditor-1";

/// The format document whose commands are checked.
const DOC: &str = include_str!("../docs/audit-format.md");

/// The bodies of the code blocks that follow `<!-- doc-check: KIND -->` in the document.
fn doc_blocks(kind: &str) -> Vec<String> {
    let marker = format!("<!-- doc-check: {kind} -->\n");
    DOC.split(marker.as_str())
        .skip(1)
        .map(|rest| {
            let (fence, body) = rest
                .split_once('\n')
                .expect("a code block after the marker");
            assert!(fence.starts_with("```"), "{kind}: no code block: {fence}");
            let body = body.split("\n```").next().expect("a closing fence");
            format!("{body}\n")
        })
        .collect()
}

/// The one block of `kind`.
fn doc_block(kind: &str) -> String {
    let mut blocks = doc_blocks(kind);
    assert_eq!(blocks.len(), 1, "one {kind} block in docs/audit-format.md");
    blocks.remove(0)
}

/// Whether `tool` is on the PATH.
fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool} >/dev/null")])
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `script` with `sh -e` in `dir`.
fn sh(dir: &Path, script: &str) -> Output {
    Command::new("sh")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("run sh")
}

/// A witness with a key of the test's own: what the witness service will hold in its HSM.
struct Witness {
    name: String,
    pair: EcdsaKeyPair,
    key_hex: String,
    sha256: String,
}

impl Witness {
    fn new(name: &str) -> Witness {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .expect("a witness key");
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .expect("a witness key");
        let pem = spki_pem_from_point(pair.public_key().as_ref()).expect("SPKI");
        let (der, _) = public_key_point(&pem).expect("SPKI");
        Witness {
            name: name.into(),
            key_hex: hex::encode(&der),
            sha256: spki_sha256(&der),
            pair,
        }
    }

    /// Its cosignature of checkpoint `cp` of node `node`, whose key has `node_key_sha256`.
    fn cosign(&self, node: &str, node_key_sha256: &str, cp: &Checkpoint) -> Cosignature {
        let time = "2026-03-01T10:30:00.000Z".to_string();
        let message =
            Cosignature::message(node, cp.seq, &cp.head, node_key_sha256, &self.name, &time);
        let signature = self
            .pair
            .sign(&SystemRandom::new(), message.as_bytes())
            .expect("sign");
        Cosignature {
            v: 1,
            node: node.into(),
            seq: cp.seq,
            head: cp.head.clone(),
            node_key_sha256: node_key_sha256.into(),
            witness: self.name.clone(),
            witness_key: self.key_hex.clone(),
            time,
            signature: hex::encode(signature.as_ref()),
        }
    }
}

#[test]
fn the_worked_examples_check_with_openssl_alone() {
    if !["openssl", "xxd", "sha256sum"].iter().all(|t| have(t)) {
        eprintln!("skipped: openssl, xxd and sha256sum are needed to run the documented recipes");
        return;
    }
    let pem = doc_block("public-key.pem");
    let c = Cosignature::from_line(doc_block("cosignature").trim()).expect("the example line");
    let s = ExportStatement::from_line(&doc_block("statement")).expect("the example statement");

    // hkms agrees with the examples, and they are of one bundle: the witness cosigned the
    // head the node stated, and vouched for the node key shown.
    let (der, _) = public_key_point(&pem).expect("the example key");
    c.verify().expect("the example cosignature verifies");
    s.verify(&der).expect("the example statement verifies");
    assert_eq!(c.node_key_sha256, spki_sha256(&der));
    assert_eq!((&c.node, c.seq, &c.head), (&s.node, s.seq, &s.head));

    // The commands type exactly the values of the lines shown.
    let by_hand = doc_blocks("by-hand");
    assert_eq!(by_hand.len(), 2, "a cosignature and a statement");
    for needle in [&c.signed_message(), &c.witness_key, &c.signature] {
        assert!(by_hand[0].contains(needle.as_str()), "{needle}");
    }
    for needle in [&s.signed_message(), &s.signature] {
        assert!(by_hand[1].contains(needle.as_str()), "{needle}");
    }

    // Run as written, in a folder with the bundle's key.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("public-key.pem"), &pem).expect("write");
    for block in &by_hand {
        let o = sh(dir.path(), block);
        assert!(o.status.success(), "{block}\n{}{}", stdout(&o), stderr(&o));
        assert!(
            stdout(&o).contains("Verified OK"),
            "{block}\n{}",
            stdout(&o)
        );
    }
    let witness_sha = c.witness_key_sha256().expect("hex");
    let o = sh(dir.path(), &by_hand[0]);
    assert!(stdout(&o).starts_with(&witness_sha), "{}", stdout(&o));
    assert!(DOC.contains(&format!("```\n{witness_sha}\nVerified OK\n```")));

    // The recipe does check: one changed digit of the message and openssl refuses.
    let changed = by_hand[1].replacen(" 20 ", " 21 ", 1);
    assert_ne!(changed, by_hand[1]);
    let o = sh(dir.path(), &changed);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("Verification failure"),
        "{}",
        stdout(&o)
    );
}

/// Seals the node's head as an export does; the checkpoint it ends on. The statement the node
/// returns with it states that checkpoint, signed with the node's key.
async fn seal(audit: &mut AuditServiceClient<Channel>, key_pem: &str) -> Checkpoint {
    let answer = audit
        .get_checkpoints(proto::GetCheckpointsRequest {
            seal: true,
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("checkpoints")
        .into_inner();
    let last: Checkpoint =
        serde_json::from_str(answer.checkpoints.last().expect("a checkpoint")).expect("parse");
    let statement = ExportStatement::from_line(&answer.statement).expect("a statement");
    assert_eq!((statement.seq, &statement.head), (last.seq, &last.head));
    let (der, _) = public_key_point(key_pem).expect("the node's key");
    statement.verify(&der).expect("signed with the node's key");
    last
}

/// `hkms audit verify` of `bundle` pinned to the node's key and `witnesses`: exit code and
/// what it printed.
fn verify(bundle: &Path, key_sha256: &str, witnesses: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(support::hkms_bin());
    cmd.args(["audit", "verify", &bundle.display().to_string()])
        .args(["--expect-key-sha256", key_sha256]);
    for w in witnesses {
        cmd.args(["--witness-key-sha256", w]);
    }
    let o = cmd.output().expect("run verify");
    (o.status.code(), format!("{}{}", stdout(&o), stderr(&o)))
}

/// `hkms audit export` as the auditor into `out`; what it printed.
fn export(node: &TestNode, out: &Path) -> String {
    let o = node.cli_as(
        AUDITOR,
        &["audit", "export", "--out", &out.display().to_string()],
    );
    assert!(o.status.success(), "export: {}", stderr(&o));
    stdout(&o)
}

/// Runs the documented from-the-files recipes (§7 and §8) on a copy of `bundle`, whose one
/// cosignature is `witness`'s of record `seq`.
fn documented_recipes(bundle: &Path, witness: &Witness, seq: u64) {
    if !["openssl", "xxd", "jq", "sha256sum"]
        .iter()
        .all(|t| have(t))
    {
        eprintln!("the documented recipes were not run: openssl, xxd, jq and sha256sum are needed");
        return;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    for f in std::fs::read_dir(bundle).expect("bundle") {
        let f = f.expect("entry");
        std::fs::copy(f.path(), scratch.path().join(f.file_name())).expect("copy");
    }
    let blocks = doc_blocks("from-files");
    assert_eq!(blocks.len(), 2, "the cosignatures and the statement");
    let mut said = String::new();
    for block in &blocks {
        let o = sh(scratch.path(), block);
        assert!(o.status.success(), "{block}\n{}{}", stdout(&o), stderr(&o));
        said.push_str(&stdout(&o));
    }
    assert_eq!(said.matches("Verified OK").count(), 2, "{said}");
    assert!(
        said.contains(&format!(
            "{} cosigned record {seq} with key SHA-256 {}",
            witness.name, witness.sha256
        )),
        "{said}"
    );
    assert!(said.contains("the statement covers the bundle"), "{said}");
}

#[tokio::test]
async fn a_cosigned_export_verifies_and_a_log_cut_back_behind_the_cosignature_is_broken() {
    let mut node = TestNode::start("national", "000000");
    let mut keys = node.client().await;
    let mut audit = AuditServiceClient::new(node.channel_as(AUDITOR).await);
    let key = audit
        .get_public_key(proto::GetPublicKeyRequest {})
        .await
        .expect("the node's key")
        .into_inner();
    let list = || proto::ListKeysRequest::default();
    for _ in 0..3 {
        keys.list_keys(list()).await.expect("list");
    }
    let early = seal(&mut audit, &key.spki_pem).await;
    for _ in 0..20 {
        keys.list_keys(list()).await.expect("list");
    }
    let cosigned = seal(&mut audit, &key.spki_pem).await;
    assert!(
        cosigned.seq > early.seq + 20,
        "{} {}",
        early.seq,
        cosigned.seq
    );

    // The province cosigns the checkpoint; the node stores what it received.
    let witness = Witness::new("guangdong");
    let cosignature = witness.cosign(&key.node, &key.sha256, &cosigned);
    {
        let store = SqliteStore::open(&node.database()).expect("the node's registry");
        assert!(store.insert_cosignature(&cosignature).expect("stored"));
        assert_eq!(
            store.last_cosigned_seq(&witness.sha256).expect("read"),
            Some(cosigned.seq)
        );
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let bundle = dir.path().join("witnessed");
    let said = export(&node, &bundle);
    assert!(
        said.contains("with 1 cosignature by its witnesses"),
        "{said}"
    );
    assert_eq!(
        std::fs::read_to_string(bundle.join("cosignatures.jsonl")).expect("cosignatures"),
        format!("{}\n", cosignature.to_line())
    );
    let statement = ExportStatement::from_line(
        &std::fs::read_to_string(bundle.join("statement.json")).expect("statement"),
    )
    .expect("parse");
    assert!(statement.seq > cosigned.seq);

    let (code, out) = verify(&bundle, &key.sha256, &[&witness.sha256]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("OK: records 1.."), "{out}");
    assert!(
        out.contains(&format!(
            "statement: the node stated at {} that its head was record {}, the bundle's last",
            statement.time, statement.seq
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "witness guangdong (key SHA-256 {}): 1 cosignature, the last of record {}; pinned; \
             every cosignature agrees with the records",
            witness.sha256, cosigned.seq
        )),
        "{out}"
    );
    // Without the witness pinned, the cosignature is counted, not checked.
    let (code, out) = verify(&bundle, &key.sha256, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("1 cosignature by 1 witness was not checked"),
        "{out}"
    );
    // A witness pinned that cosigned nothing here.
    let absent = Witness::new("guangxi");
    let (code, out) = verify(&bundle, &key.sha256, &[&witness.sha256, &absent.sha256]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "BROKEN at cosignatures.jsonl: no cosignature by the witness whose key SHA-256 is {}: \
             the log in this bundle was not witnessed by it",
            absent.sha256
        )),
        "{out}"
    );
    // A witness key that is not 64 hex digits is the auditor's slip.
    let (code, out) = verify(&bundle, &key.sha256, &[&witness.sha256[..6]]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("--witness-key-sha256"), "{out}");
    documented_recipes(&bundle, &witness, cosigned.seq);

    // The host cuts the log back to the early checkpoint, as anyone with the database can:
    // the later records and checkpoints go; the node starts on the shorter log and seals it
    // with its own key.
    node.stop();
    {
        let db = rusqlite::Connection::open(node.database()).expect("registry");
        db.execute(
            "DELETE FROM audit_checkpoints WHERE seq > ?1",
            [early.seq as i64],
        )
        .expect("cut checkpoints");
        db.execute("DELETE FROM audit_log WHERE seq > ?1", [early.seq as i64])
            .expect("cut records");
    }
    node.start_again();
    let cut = dir.path().join("cut");
    let said = export(&node, &cut);
    assert!(
        said.contains("with 1 cosignature by its witnesses"),
        "{said}"
    );

    // Consistent, and sealed by the node's key: the node's pin alone passes it.
    let (code, out) = verify(&cut, &key.sha256, &[]);
    assert_eq!(code, Some(0), "{out}");
    // The witness saw record `cosigned.seq`, which the bundle no longer reaches.
    let (code, out) = verify(&cut, &key.sha256, &[&witness.sha256]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with(&format!(
            "BROKEN at cosignature 1 (cosignatures.jsonl line 1, seq {}, witness guangdong): the \
             head is behind a checkpoint the witness cosigned: it saw the log reach record {}",
            cosigned.seq, cosigned.seq
        )),
        "{out}"
    );
    assert!(
        out.contains("the log was cut back after the witness saw it"),
        "{out}"
    );
}
