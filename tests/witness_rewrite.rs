//! Attack 1 of issue 18 against a witnessed city: its log rewritten and every checkpoint
//! re-signed with the city's own audit key (through its token, with its user PIN). The province
//! that witnesses it refuses the rewrite, and an auditor who pins the province's key sees it.
//! One test in its binary: it opens the city's token in this process.

mod support;

use rusqlite::params;
use sha2::{Digest, Sha256};
use support::TestNode;
use support::witness::*;

fn sha256_hex(line: &str) -> String {
    hex::encode(Sha256::digest(line.as_bytes()))
}

/// What an attacker holding the city's PIN does (attack 1 of issue 18): changes who acted in
/// record `seq`, re-chains every later record, and re-signs every checkpoint with the node's
/// own audit key, so that the log verifies against that key alone.
fn rewrite_and_resign(city: &TestNode, seq: i64) {
    let db = rusqlite::Connection::open(city.database()).expect("open registry");
    let rows: Vec<(i64, String)> = db
        .prepare("SELECT seq, line FROM audit_log ORDER BY seq")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let mut prev: Option<String> = None;
    let mut hashes = std::collections::HashMap::new();
    for (s, line) in rows {
        let mut v: serde_json::Value = serde_json::from_str(&line).expect("record");
        if s == seq {
            v["actor"] = serde_json::Value::from("hkms://officer/municipal/440100/someone-else");
        }
        if let Some(p) = &prev {
            v["prev"] = serde_json::Value::from(p.clone());
        }
        let new_line = if s >= seq {
            serde_json::to_string(&v).expect("line")
        } else {
            line
        };
        let hash = sha256_hex(&new_line);
        db.execute(
            "UPDATE audit_log SET line = ?1, hash = ?2 WHERE seq = ?3",
            params![new_line, hash, s],
        )
        .expect("update record");
        hashes.insert(s, hash.clone());
        prev = Some(hash);
    }
    for (name, value) in city.token.envs() {
        // SAFETY: the only test of this binary; no other thread reads the environment now.
        unsafe { std::env::set_var(name, value) };
    }
    let token = support::open_token(&city.token, "hkms-test");
    let checkpoints: Vec<(i64, String)> = db
        .prepare("SELECT seq, line FROM audit_checkpoints ORDER BY seq")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    for (s, line) in checkpoints {
        let mut cp: hkms::audit::Checkpoint = serde_json::from_str(&line).expect("checkpoint");
        cp.head = hashes[&s].clone();
        let digest: [u8; 32] = Sha256::digest(cp.signed_message().as_bytes()).into();
        let raw = token
            .sign_digest(hkms::node::SIGNING_LABEL, &digest)
            .expect("sign with the node's own key");
        cp.signature = hex::encode(hkms::audit::bundle::der_from_raw_signature(&raw).expect("der"));
        db.execute(
            "UPDATE audit_checkpoints SET line = ?1 WHERE seq = ?2",
            params![serde_json::to_string(&cp).expect("line"), s],
        )
        .expect("update checkpoint");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_province_cosigns_its_citys_log_and_refuses_it_rewritten() {
    let province = province();
    let mut city = city_witnessed_by(&province, "440100");
    busy(&city, 12).await;
    wait_until(
        "the province cosigned the city's newest checkpoint",
        &[&province, &city],
        || cosigned(&city),
    )
    .await;
    let seen = witness_records(&province);
    assert!(
        seen.iter()
            .any(|(code, p)| code == "OK" && p["node"] == "guangzhou" && p["cosigned"] == "true"),
        "the province's log shows what it cosigned: {seen:?}"
    );
    let before = refusals(&province);

    // The attacker rewrites record 3 and re-signs every checkpoint with the city's own key.
    city.stop();
    rewrite_and_resign(&city, 3);
    city.start_again();
    busy(&city, 8).await;
    wait_until(
        "the province refused the rewritten log",
        &[&province, &city],
        || async { refusals(&province) > before },
    )
    .await;
    let refused = witness_records(&province)
        .into_iter()
        .filter(|(code, _)| code == "FAILED_PRECONDITION")
        .count();
    assert!(refused > 0, "the refusal is in the province's log");
    assert!(
        province
            .log()
            .contains("ALERT: witness refused a checkpoint"),
        "the province alerts"
    );
    assert!(!cosigned(&city).await, "the rewritten log is not witnessed");
    assert!(
        city.log()
            .contains("ALERT: a witness refused this node's checkpoint"),
        "the city's own log says so too"
    );

    // The auditor who pins the province's key sees the rewrite.
    let (ok, said) = export_and_verify(&city, AUDITOR_CITY, &province);
    assert!(!ok, "a rewritten log must not verify: {said}");
    assert!(said.contains("BROKEN"), "{said}");
}
