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

/// Moves the one token folder of a card made in `from` (its own SoftHSM2 folder) into `to`.
fn insert_card(from: &std::path::Path, to: &std::path::Path) -> std::path::PathBuf {
    let tokens = from.join("tokens");
    let folder = std::fs::read_dir(&tokens)
        .expect("card tokens")
        .next()
        .expect("one card token")
        .expect("entry")
        .file_name();
    let target = to.join("tokens").join(&folder);
    std::fs::rename(tokens.join(&folder), &target).expect("insert the card");
    target
}

/// A ministry issues cards one after the other: each is inserted (its token folder moved into
/// the node's), issued, and taken out again; the module still lists the one taken out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_taken_out_leaves_the_next_one_usable() {
    let tokens = tempfile::tempdir().expect("tempdir");
    let softhsm = tokens.path().join("softhsm");
    let ministry = start_on(
        &make_token(&softhsm, "ministry"),
        "national",
        "000000",
        true,
    );
    let pin = format!("{USER_PIN}\n");
    for (region, label) in [("440000", "card-gd"), ("450000", "card-gx")] {
        let made = make_token(&tokens.path().join(label), label);
        let card = insert_card(made.conf.parent().expect("card folder"), &softhsm);
        let approval = ministry
            .ceremony(
                hkms::proto::Operation::Manage,
                &[("action", "issue-card"), ("region", region)],
            )
            .await;
        let out = ministry.cli_as_with_input(
            &ministry.officer,
            &[
                "transport",
                "issue-card",
                "--region",
                region,
                "--card",
                label,
                "--ceremony",
                &approval.id,
            ],
            Some(&pin),
        );
        assert!(out.status.success(), "{label}: {}", stderr(&out));
        // Taken out of the reader, to the province.
        std::fs::rename(&card, tokens.path().join(label).join("gone")).expect("take out");
    }
}
