//! Retried card commands (docs/api.md, "Retries and request ids"): `UnblockPin` is served in
//! batches, and a window that sends the same command again with the same `request_id` gets
//! the same APDU without the card's day limit counting it twice, also when both arrive at
//! once.
//!
//! This binary holds a single test: it plants master keys in its token through the process
//! environment.

mod support;

use hkms::proto::{self, card_service_client::CardServiceClient};
use support::{TestNode, make_token, node_config};
use tonic::Code;

const WINDOW: &str = "hkms://window/municipal/440100/counter-a";

fn unblock(serial: &str, request_id: &str) -> proto::CardCommandRequest {
    proto::CardCommandRequest {
        card_serial: serial.into(),
        challenge: "0011223344556677".into(),
        pin: "246810".into(),
        served_by: "Li Wei".into(),
        cardholder_id: "44010619900101123X".into(),
        agent_id: String::new(),
        request_id: request_id.into(),
    }
}

#[tokio::test]
async fn a_retried_card_command_gets_its_apdu_again_and_counts_once() {
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
    // One command per card and day.
    let limits = "per_window_per_minute = 1000\nper_window_per_day = 1000\n\
                  per_card_per_day = 1\nper_node_per_minute = 1000\n";
    let policy = support::policy_with_card_limits(dir.path(), limits);
    let text = support::with_policy(
        node_config("440100", "municipal", "440100", &token),
        &policy,
    );
    let config = dir.path().join("node.toml");
    std::fs::write(&config, text).expect("config");
    let node = TestNode::start_in(dir, token, config);
    let mut window = CardServiceClient::new(node.channel_as(WINDOW).await);

    // One after the other.
    let card = "7700000000000001";
    let first = window
        .unblock_pin(unblock(card, "u-1"))
        .await
        .expect("unblock")
        .into_inner();
    let again = window
        .unblock_pin(unblock(card, "u-1"))
        .await
        .expect("the retry is answered, not counted")
        .into_inner();
    assert_eq!(first, again);
    let next = window
        .unblock_pin(unblock(card, "u-2"))
        .await
        .expect_err("a new command for the card is over its limit");
    assert_eq!(next.code(), Code::ResourceExhausted, "{}", next.message());

    // At once: one batch, or two, either way one command.
    let card = "7700000000000002";
    let mut other = CardServiceClient::new(node.channel_as(WINDOW).await);
    let (x, y) = tokio::join!(
        window.unblock_pin(unblock(card, "u-3")),
        other.unblock_pin(unblock(card, "u-3"))
    );
    assert_eq!(
        x.expect("unblock").into_inner(),
        y.expect("its duplicate").into_inner()
    );
    let next = window
        .unblock_pin(unblock(card, "u-4"))
        .await
        .expect_err("counted once");
    assert_eq!(next.code(), Code::ResourceExhausted, "{}", next.message());
}
