//! Known answers for the ceremony log format: a small audit bundle, made once by hkms (a
//! generate ceremony, two derivations and a denied request, 8 records and a checkpoint) and
//! frozen in tests/vectors/audit-bundle/, is checked the way docs/audit-format.md tells an
//! outside auditor to check one, without hkms's code:
//!
//! - every record's hash by the shell recipe of §10 (`sed -n 'Np' records.jsonl | tr -d '\n' |
//!   sha256sum`) and by the `sha2` crate following §2's words, which must agree;
//! - the chain (§2): record 1's `prev` is 64 zeros, every other `prev` is the hash of the line
//!   before; the checkpoint's `head` is its record's hash and its signature verifies with
//!   `ring` over the message of §3;
//! - the key (§4): the DER of the PEM is the fixed prefix and a point, its SHA-256 and
//!   fingerprint are the ones written down when the bundle was made.
//!
//! Then `hkms audit verify --expect-key-sha256` must accept the bundle. A change to how hkms
//! hashes or chains records (src/audit/record.rs) makes hkms refuse this bundle; a change to
//! the bundle makes the recipe's answers differ from the values written down here.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};
use support::stdout;

/// SHA-256 of the bundle's key, written down once from §4's recipe:
/// `openssl pkey -pubin -in public-key.pem -outform DER | sha256sum | tr a-f A-F`.
const KEY_SHA256: &str = "5E23259D73D8A729D7578CABE563049A2BC6240B4C8406A8AF287D4DAB5E0C36";
/// The hash of record 8 (the checkpoint's head), written down once from §10's recipe:
/// `sed -n '8p' records.jsonl | tr -d '\n' | sha256sum`.
const HEAD_8: &str = "d402b290a883f99cb81d65892c3b78adaf558abb666393898f00253877a191b5";
/// §4: the DER of every P-256 SPKI starts with this.
const SPKI_PREFIX: &str = "3059301306072a8648ce3d020106082a8648ce3d030107034200";

fn bundle() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/audit-bundle")
}

/// §10's shell recipe for the hash of line `n`.
fn shell_line_hash(n: usize) -> String {
    let o = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "sed -n '{n}p' records.jsonl | tr -d '\\n' | sha256sum"
        ))
        .current_dir(bundle())
        .output()
        .expect("run sh");
    assert!(o.status.success(), "sha256sum recipe failed");
    let out = stdout(&o);
    let hash = out.split_whitespace().next().expect("hash").to_string();
    assert_eq!(hash.len(), 64, "{out}");
    hash
}

#[test]
fn the_frozen_bundle_checks_by_the_documented_recipe_and_hkms_accepts_it() {
    let dir = bundle();
    let text = std::fs::read_to_string(dir.join("records.jsonl")).expect("records");
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    assert_eq!(lines.len(), 8);

    // §2 in the sha2 crate, and §10 in the shell, agree on every line.
    let hashes = support::chain_by_sha2(&dir);
    for (i, line) in lines.iter().enumerate() {
        let by_sha2 = hex::encode(Sha256::digest(line.as_bytes()));
        assert_eq!(by_sha2, hashes[i]);
        assert_eq!(shell_line_hash(i + 1), by_sha2, "line {}", i + 1);
        let record: serde_json::Value = serde_json::from_str(line).expect("record");
        let prev = record["prev"].as_str().expect("prev");
        if i == 0 {
            assert_eq!(prev, "0".repeat(64));
        } else {
            assert_eq!(prev, hashes[i - 1], "record {}", i + 1);
        }
    }
    assert_eq!(hashes[7], HEAD_8);

    // §4: the key's DER, SHA-256 and fingerprint.
    let pem = std::fs::read(dir.join("public-key.pem")).expect("pem");
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).expect("PEM");
    assert_eq!(pem.label, "PUBLIC KEY");
    assert_eq!(pem.contents.len(), 91);
    assert_eq!(hex::encode(&pem.contents[..26]), SPKI_PREFIX);
    let key_sha256 = hex::encode_upper(Sha256::digest(&pem.contents));
    assert_eq!(key_sha256, KEY_SHA256);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).expect("read"))
            .expect("manifest");
    assert_eq!(manifest["key_fingerprint"], &KEY_SHA256[..6]);
    assert_eq!(manifest["record_count"], 8);

    // §3: the checkpoint seals record 8 and its signature verifies over the documented message.
    let checkpoints = std::fs::read_to_string(dir.join("checkpoints.jsonl")).expect("read");
    let cp: serde_json::Value =
        serde_json::from_str(checkpoints.lines().last().expect("a checkpoint")).expect("json");
    assert_eq!(cp["seq"], 8);
    assert_eq!(cp["head"], HEAD_8);
    assert_eq!(cp["key_fingerprint"], &KEY_SHA256[..6]);
    let message = format!(
        "hkms-audit-checkpoint/v1 {} {} {} {}",
        cp["node"].as_str().expect("node"),
        cp["seq"],
        cp["head"].as_str().expect("head"),
        cp["time"].as_str().expect("time")
    );
    let signature = hex::decode(cp["signature"].as_str().expect("signature")).expect("hex");
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        &pem.contents[26..],
    )
    .verify(message.as_bytes(), &signature)
    .expect("the checkpoint's signature verifies");

    // And hkms's own verifier accepts it, pinned to the key written down.
    let o = Command::new(support::hkms_bin())
        .args(["audit", "verify", &dir.display().to_string()])
        .args(["--expect-key-sha256", KEY_SHA256])
        .output()
        .expect("run hkms audit verify");
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).starts_with("OK: records 1..8"), "{}", stdout(&o));
    // Made before witnesses: four files, and the verifier says it has no statement.
    assert!(
        stdout(&o).contains("note: the bundle has no export statement (statement.json)"),
        "{}",
        stdout(&o)
    );
}
