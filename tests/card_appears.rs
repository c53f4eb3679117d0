//! A transport key card inserted while the node runs is found without a restart: SoftHSM2
//! reads its token folder only when its module is initialised, so the node initialises the
//! module again, once, when a card job does not find its card. A card that is truly absent is
//! still refused as such, and the approval that the request named is not spent on it.

mod support;

use support::{USER_PIN, make_token, start_on, stderr, stdout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_made_after_the_node_started_is_found_without_a_restart() {
    let tokens = tempfile::tempdir().expect("tempdir");
    let softhsm = tokens.path().join("softhsm");
    let ministry = start_on(
        &make_token(&softhsm, "ministry"),
        "national",
        "000000",
        true,
    );
    let approval = ministry
        .ceremony(
            hkms::proto::Operation::Manage,
            &[("action", "issue-card"), ("region", "440000")],
        )
        .await;
    assert_eq!(
        approval.state(),
        hkms::proto::CeremonyState::Done,
        "{}",
        approval.result
    );
    let issue = [
        "transport",
        "issue-card",
        "--region",
        "440000",
        "--card",
        "card-late",
        "--ceremony",
        &approval.id,
        "--quiet",
    ];
    let pin = format!("{USER_PIN}\n");

    // No such card anywhere: refused as absent, even after looking again.
    let out = ministry.cli_as_with_input(&ministry.officer, &issue, Some(&pin));
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stderr(&out)
            .contains("FAILED_PRECONDITION: no card labelled `card-late` is present; insert it"),
        "{}",
        stderr(&out)
    );

    // The card is made (inserted) now, in the token folder of the running node's module.
    make_token(&softhsm, "card-late");
    let out = ministry.cli_as_with_input(&ministry.officer, &issue, Some(&pin));
    assert!(out.status.success(), "{}", stderr(&out));
    let said = stdout(&out);
    let (card_id, kcv) = said
        .trim()
        .split_once(' ')
        .unwrap_or_else(|| panic!("`CARD_ID KCV` with --quiet: {said}"));
    assert!(card_id.starts_with("card-440000-"), "{said}");
    assert_eq!(kcv.len(), 6, "{said}");

    // The node kept serving through the module's re-initialisation.
    let out = ministry.cli(&["transport", "list", "--quiet"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), card_id);
    let out = ministry.cli(&["keys", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
}
