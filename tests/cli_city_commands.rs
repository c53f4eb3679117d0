//! A city's commands through the built binary, as its people run them from a folder outside
//! the repository with their own certificate files (see tests/cli_every_command.rs): officers
//! make the card keys and the bureau's card, a service window unblocks and resets PINs, the card
//! issuance system personalises cards, an auditor finds a cardholder's records.

mod support;

use serde_json::json;
use support::shell::Shell;
use support::{USER_PIN, make_token, start_on};

const SERIAL: &str = "1234567890ABCDEF";
const CHALLENGE: &str = "0123456789ABCDEF";

#[test]
fn a_city_runs_card_commands_personalisation_and_id_lookups() {
    let tokens = tempfile::tempdir().expect("tempdir");
    let softhsm = tokens.path().join("softhsm");
    let t_city = make_token(&softhsm, "guangzhou");
    make_token(&softhsm, "bureau");
    let gz = &start_on(&t_city, "municipal", "440100", true);
    let sh = Shell::new();
    let officer = sh.caller(gz, "hkms://officer/municipal/440100/li-na", "li-na");
    let second = sh.caller(gz, "hkms://officer/municipal/440100/wang-wei", "wang-wei");
    let window = sh.caller(gz, "hkms://window/municipal/440100/counter-1", "counter-1");
    let system = sh.caller(gz, "hkms://system/municipal/440100/gz-cards", "gz-cards");
    let auditor = sh.caller(gz, "hkms://auditor/municipal/440100/chen-jie", "chen-jie");

    // The city's own PIN keys, each in a ceremony of two officers.
    let mut masters = Vec::new();
    for key_type in ["pin-unblock", "pin-reload"] {
        let open = format!("ceremony open --op generate --key-type {key_type} --json");
        let id = sh.client(gz, &officer, &open).json()["id"]
            .as_str()
            .expect("id")
            .to_string();
        let done = sh
            .client(gz, &second, &format!("ceremony approve {id} --json"))
            .json();
        masters.push(support::key_id_in(done["result"].as_str().expect("result")).expect("key id"));
    }

    // card unblock / reset at the window: the PIN on standard input, ID numbers from files.
    std::fs::write(sh.path("holder.txt"), "44010619900101123X\n").expect("write");
    let card = format!(
        "--serial {SERIAL} --challenge {CHALLENGE} --served-by Li-Wei --cardholder-id-file holder.txt"
    );
    let unblock = sh.client_input(gz, &window, &format!("card unblock {card}"), "123456\n");
    let apdu = unblock.ok().trim();
    assert!(
        apdu.starts_with("84240000") && apdu.len() == 50,
        "{unblock}"
    );
    let reset = sh
        .client_input(gz, &window, &format!("card reset {card} --json"), "654321")
        .json();
    assert!(
        reset["apdu"]
            .as_str()
            .is_some_and(|a| a.starts_with("845E0000")),
        "{reset}"
    );
    assert_eq!(reset["master_key_id"], masters[1].as_str());
    sh.client(gz, &window, &format!("card unblock {card}"))
        .fails(1, &["no cardholder's PIN on standard input"]);
    let bad_serial = card.replace(SERIAL, "12");
    sh.client_input(gz, &window, &format!("card unblock {bad_serial}"), "123456")
        .fails(1, &["INVALID_ARGUMENT", "serial"]);
    let no_file = card.replace("holder.txt", "nobody.txt");
    sh.client_input(gz, &window, &format!("card reset {no_file}"), "123456")
        .fails(1, &["nobody.txt", "No such file"]);
    sh.client_input(
        gz,
        &window,
        &format!("card reset {card} --cardholder-id 1"),
        "123456",
    )
    .fails(2, &["--cardholder-id"]);

    // The bureau's transport card, then card personalise by the card issuance system.
    let open = "ceremony open --op manage --action issue-card --region 440100 --json";
    let cid = sh.client(gz, &officer, open).json()["id"]
        .as_str()
        .expect("id")
        .to_string();
    sh.client(gz, &second, &format!("ceremony approve {cid}"))
        .ok();
    let issue =
        format!("transport issue-card --region 440100 --card bureau --ceremony {cid} --json");
    let bureau = sh.client_input(gz, &officer, &issue, USER_PIN).json();
    let bureau_id = bureau["card_id"].as_str().expect("card id");
    std::fs::write(
        sh.path("serials.txt"),
        "1111222233334444\n5555666677778888\n",
    )
    .expect("write");
    let personalise =
        format!("card personalise --serials serials.txt --bureau-card {bureau_id} --out pkgs");
    let done = sh
        .client(gz, &system, &format!("{personalise} --json"))
        .json();
    assert_eq!(
        (&done["personalised"], &done["skipped"], &done["failed"]),
        (&json!(2), &json!(0), &json!([])),
        "{done}"
    );
    assert!(sh.path("pkgs/1111222233334444.pin-unblock.pkg").is_file());
    let again = sh.client(gz, &system, &personalise);
    assert!(
        again
            .ok()
            .contains("personalised 0 cards, skipped 2 already done, 0 failed"),
        "{again}"
    );
    sh.client(gz, &system, &personalise.replace("serials.txt", "none.txt"))
        .fails(
            1,
            &["cannot read the serials file none.txt", "No such file"],
        );
    // A window may not: each card fails, named with the reason, and the exit code says so.
    sh.client(gz, &window, &personalise.replace("pkgs", "pkgs-2"))
        .fails(
            1,
            &[
                "1111222233334444: denied: role window",
                "5555666677778888: denied",
            ],
        );

    // audit find-id: the cardholder's records, by ID MAC.
    let found = sh
        .client(gz, &auditor, "audit find-id --id-file holder.txt --json")
        .json();
    let seqs = found["seqs"].as_array().map_or(0, Vec::len);
    assert!(seqs >= 2, "the unblock and the reset at least: {found}");
    let table = sh.client_input(gz, &auditor, "audit find-id", "44010619900101123X\n");
    assert!(
        table.ok().starts_with("ID MAC  ") && table.out.contains("records "),
        "{table}"
    );
    sh.client(gz, &auditor, "audit find-id")
        .fails(1, &["no ID number on standard input"]);
    sh.client(gz, &auditor, "audit find-id --id-file gone.txt")
        .fails(1, &["gone.txt"]);
    sh.client(gz, &window, "audit find-id --id-file holder.txt")
        .fails(1, &["PERMISSION_DENIED"]);
}
