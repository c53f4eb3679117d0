//! Velocity limits on card commands end to end (docs/card-commands.md §8): a city node on a
//! real SoftHSM2 token whose policy has low `[card_limits]`, windows asking over gRPC over
//! loopback. Over a limit the answer is RESOURCE_EXHAUSTED naming the limit, its value and when
//! it frees up; the refusal is in the ceremony log and the metrics, and the node's log has one
//! alert for it, not one per refusal. Another window is not affected, a card's limit holds
//! across windows, refused requests count nowhere, and a SIGHUP reload applies new limits over
//! the counts so far.
//!
//! Only day limits are used here (and minute limits far out of the way), so no assertion
//! depends on how fast the machine is. The minute limits and the clock are unit-tested in
//! src/node/limits.rs.
//!
//! This binary holds a single test: it plants master keys in its token through the process
//! environment.

mod support;

use hkms::proto::{self, card_service_client::CardServiceClient};
use support::{TestNode, make_token, node_config};
use tonic::Code;
use tonic::transport::Channel;

const WINDOW_A: &str = "hkms://window/municipal/440100/counter-a";
const WINDOW_B: &str = "hkms://window/municipal/440100/counter-b";
const WINDOW_C: &str = "hkms://window/municipal/440100/counter-c";
const PIN: &str = "246810";
const CARDHOLDER: &str = "44010619900101123X";
/// A card every window asks for (the per-card limit).
const SHARED_CARD: &str = "5A5A5A5A5A5A5A5A";

/// Low day limits; the minute limits out of the way.
fn limits(per_window_per_day: u32) -> String {
    format!(
        "per_window_per_minute = 1000\nper_window_per_day = {per_window_per_day}\n\
         per_card_per_day = 2\nper_node_per_minute = 1000\n"
    )
}

fn request(serial: &str, pin: &str) -> proto::CardCommandRequest {
    proto::CardCommandRequest {
        card_serial: serial.into(),
        challenge: "0011223344556677".into(),
        pin: pin.into(),
        served_by: "Li Wei".into(),
        cardholder_id: CARDHOLDER.into(),
        agent_id: String::new(),
        ..Default::default()
    }
}

/// Card `n` of window `w`: a serial of its own.
fn serial(w: u64, n: u64) -> String {
    format!("{:016X}", 0x7700_0000_0000_0000u64 + (w << 16) + n)
}

async fn unblock(
    window: &mut CardServiceClient<Channel>,
    serial: &str,
) -> Result<Vec<u8>, tonic::Status> {
    window
        .unblock_pin(request(serial, PIN))
        .await
        .map(|r| r.into_inner().apdu)
}

/// A refusal by `limit` whose value is `value`, saying when it frees up and no secret.
fn assert_limited(r: Result<Vec<u8>, tonic::Status>, limit: &str, value: u32) {
    let e = r.expect_err("over the limit");
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
    let m = e.message();
    assert!(
        m.contains(&format!("limit {limit} reached ({value} ")),
        "{m}"
    );
    assert!(m.contains("the next command is counted from "), "{m}");
    assert!(!m.contains(PIN) && !m.contains(CARDHOLDER), "{m}");
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test]
async fn card_commands_over_a_limit_are_refused_recorded_and_alerted_once() {
    let tokens = tempfile::tempdir().expect("tempdir");
    let token = make_token(&tokens.path().join("softhsm"), "guangzhou");
    let pkcs11 = support::init_pkcs11(&token);
    let dir = tempfile::tempdir().expect("tempdir");
    support::plant_card_masters(
        &pkcs11,
        &token,
        dir.path(),
        "440100",
        &[0x11; 16],
        &[0x22; 16],
    );
    let policy = support::policy_with_card_limits(dir.path(), &limits(4));
    let text = support::with_policy(
        node_config("440100", "municipal", "440100", &token),
        &policy,
    );
    let text = text + "\n[metrics]\nlisten = \"127.0.0.1:0\"\n";
    let config = dir.path().join("node.toml");
    std::fs::write(&config, text).expect("config");
    let node = TestNode::start_in(dir, token, config);
    let mut a = CardServiceClient::new(node.channel_as(WINDOW_A).await);
    let mut b = CardServiceClient::new(node.channel_as(WINDOW_B).await);
    let mut c = CardServiceClient::new(node.channel_as(WINDOW_C).await);

    // Bad input is refused for what it is and counts nowhere.
    for _ in 0..6 {
        let e = a
            .unblock_pin(request(&serial(1, 0), "12a456"))
            .await
            .expect_err("letters in the PIN");
        assert_eq!(e.code(), Code::InvalidArgument, "{}", e.message());
    }

    // Window A gets its 4 commands a day, then refusals that say which limit and when.
    for n in 1..=4 {
        assert_eq!(
            unblock(&mut a, &serial(1, n)).await.expect("within").len(),
            25
        );
    }
    for n in 5..=7 {
        assert_limited(
            unblock(&mut a, &serial(1, n)).await,
            "per_window_per_day",
            4,
        );
    }
    // Reload counts in the same budget.
    let e = a
        .reload_pin(request(&serial(1, 8), PIN))
        .await
        .expect_err("reload over the limit");
    assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());

    // Another window is not affected; a card's limit holds whoever asks.
    unblock(&mut b, SHARED_CARD).await.expect("B, card once");
    unblock(&mut b, SHARED_CARD).await.expect("B, card twice");
    assert_limited(unblock(&mut b, SHARED_CARD).await, "per_card_per_day", 2);
    assert_limited(unblock(&mut c, SHARED_CARD).await, "per_card_per_day", 2);
    // ... and its refusals did not eat C's budget: C still gets all 4 of its day.
    for n in 1..=4 {
        unblock(&mut c, &serial(3, n)).await.expect("C within");
    }
    assert_limited(
        unblock(&mut c, &serial(3, 5)).await,
        "per_window_per_day",
        4,
    );

    // The ceremony log has every refusal, with the limit, and no secret.
    let db = rusqlite::Connection::open(node.database()).expect("registry");
    let refused: Vec<(String, String, String, String)> = {
        let mut q = db
            .prepare(
                "SELECT json_extract(line, '$.actor'), json_extract(line, '$.rpc'), \
                 json_extract(line, '$.params.card_limit'), json_extract(line, '$.result.message') \
                 FROM audit_log WHERE json_extract(line, '$.result.code') = 'RESOURCE_EXHAUSTED' \
                 ORDER BY seq",
            )
            .expect("query");
        q.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    let of = |who: &str, limit: &str| {
        refused
            .iter()
            .filter(|(actor, _, l, _)| actor == who && l == limit)
            .count()
    };
    assert_eq!(of(WINDOW_A, "per_window_per_day"), 4, "{refused:?}");
    assert_eq!(of(WINDOW_B, "per_card_per_day"), 1, "{refused:?}");
    assert_eq!(of(WINDOW_C, "per_card_per_day"), 1, "{refused:?}");
    assert_eq!(of(WINDOW_C, "per_window_per_day"), 1, "{refused:?}");
    assert_eq!(refused.len(), 7, "{refused:?}");
    assert!(refused.iter().any(|(_, rpc, _, _)| rpc == "ReloadPin"));
    for (_, _, _, message) in &refused {
        assert!(
            message.contains("the next command is counted from"),
            "{message}"
        );
        assert!(!message.contains(PIN) && !message.contains(CARDHOLDER));
    }
    // The bad input was recorded as such, and the admitted commands as OK.
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).expect("count") };
    assert_eq!(
        count(
            "SELECT count(*) FROM audit_log WHERE json_extract(line, '$.result.code') = \
             'INVALID_ARGUMENT' AND json_extract(line, '$.actor') LIKE '%/counter-a'"
        ),
        6
    );
    assert_eq!(
        count(
            "SELECT count(*) FROM audit_log WHERE json_extract(line, '$.result.code') = 'OK' \
             AND json_extract(line, '$.rpc') IN ('UnblockPin', 'ReloadPin')"
        ),
        10
    );
    drop(db);

    // The metrics count each refusal by limit.
    let metrics = support::scrape(&node);
    let counter = |limit: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("hkms_card_limit_refusals_total")
                    && l.contains(&format!("limit=\"{limit}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    assert_eq!(counter("per_window_per_day"), Some(5), "{metrics}");
    assert_eq!(counter("per_card_per_day"), Some(2), "{metrics}");

    // The node's log: one alert per window and limit, not one line per refusal.
    let log = node.log();
    let alerts = |who: &str, limit: &str| {
        log.lines()
            .filter(|l| {
                l.contains("card command limit reached") && l.contains(who) && l.contains(limit)
            })
            .count()
    };
    assert_eq!(alerts(WINDOW_A, "per_window_per_day"), 1, "{log}");
    assert_eq!(alerts(WINDOW_B, "per_card_per_day"), 1, "{log}");
    assert_eq!(alerts(WINDOW_C, "per_card_per_day"), 1, "{log}");
    assert_eq!(alerts(WINDOW_C, "per_window_per_day"), 1, "{log}");
    // The pipeline's own line per refused request is a debug line for these.
    assert!(
        !log.lines()
            .any(|l| l.contains("refused") && l.contains("RESOURCE_EXHAUSTED")),
        "no warn line per refusal: {log}"
    );

    // SIGHUP with a higher limit: in force at once, over the counts made so far (A made 4).
    let policy_text = std::fs::read_to_string(&policy)
        .expect("policy")
        .replace("per_window_per_day = 4", "per_window_per_day = 6");
    std::fs::write(&policy, &policy_text).expect("write policy");
    node.hang_up();
    let want = sha256_hex(policy_text.as_bytes());
    let mut reader =
        hkms::proto::policy_service_client::PolicyServiceClient::new(node.channel().await);
    assert!(
        support::policy_in_force(&mut reader, &want).await,
        "SIGHUP did not reload the policy"
    );
    for n in 10..=11 {
        unblock(&mut a, &serial(1, n))
            .await
            .expect("A under the new limit");
    }
    assert_limited(
        unblock(&mut a, &serial(1, 12)).await,
        "per_window_per_day",
        6,
    );
}
