//! Card services end to end, against a software model of the card (not part of the service):
//! a locked card is unblocked, a forgotten PIN reloaded, and commands for another card, replayed
//! ones and ones made by another city's node are refused by the card. The APDU bytes are checked
//! against an independent software computation.
//!
//! This binary holds a single test: it plants known master keys in its tokens through the
//! process environment.

mod support;

use hkms::proto::{self, card_service_client::CardServiceClient};
use support::{TestNode, aes_child, aes_ecb, factor_block, make_test_token, node_config};
use tonic::Code;

/// What the card says to a command.
#[derive(Debug, PartialEq, Eq)]
enum CardSays {
    Ok,
    WrongPin { tries_left: u8 },
    Locked,
    NoChallenge,
    BadMac,
    BadBlock,
}

/// A software card: its keys derived from known masters (docs/design.md §3), a PIN try counter
/// that locks at three, GET CHALLENGE, and the UNBLOCK / RELOAD commands.
struct Card {
    unblock_key: [u8; 16],
    reload_key: [u8; 16],
    pin: String,
    tries_left: u8,
    challenge: Option<[u8; 8]>,
    next_challenge: u64,
}

impl Card {
    fn new(serial: &str, pin: &str, unblock_master: &[u8], reload_master: &[u8]) -> Card {
        let d: [u8; 8] = hex::decode(serial)
            .expect("serial")
            .try_into()
            .expect("8 bytes");
        Card {
            unblock_key: aes_ecb(unblock_master, factor_block(d)),
            reload_key: aes_ecb(reload_master, factor_block(d)),
            pin: pin.into(),
            tries_left: 3,
            challenge: None,
            next_challenge: 0x1122_3344_5566_7788,
        }
    }

    fn verify(&mut self, pin: &str) -> CardSays {
        if self.tries_left == 0 {
            return CardSays::Locked;
        }
        if pin == self.pin {
            self.tries_left = 3;
            CardSays::Ok
        } else {
            self.tries_left -= 1;
            CardSays::WrongPin {
                tries_left: self.tries_left,
            }
        }
    }

    fn get_challenge(&mut self) -> String {
        self.next_challenge = self
            .next_challenge
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1);
        let c = self.next_challenge.to_be_bytes();
        self.challenge = Some(c);
        hex::encode_upper(c)
    }

    fn process(&mut self, apdu: &[u8]) -> CardSays {
        // A challenge is good for one command.
        let Some(challenge) = self.challenge.take() else {
            return CardSays::NoChallenge;
        };
        if apdu.len() != 25 || apdu[4] != 0x14 {
            return CardSays::BadBlock;
        }
        let key = match (apdu[0], apdu[1]) {
            (0x84, 0x24) => self.unblock_key,
            (0x84, 0x5E) => self.reload_key,
            _ => return CardSays::BadBlock,
        };
        let (body, mac) = apdu.split_at(21);
        if card_mac(&key, &challenge, body) != mac {
            return CardSays::BadMac;
        }
        let block = aes_decrypt(&key, apdu[5..21].try_into().expect("16"));
        let Some(pin) = hkms::card::pin_from_block(&block) else {
            return CardSays::BadBlock;
        };
        if apdu[1] == 0x24 {
            if *pin != self.pin {
                return CardSays::WrongPin {
                    tries_left: self.tries_left,
                };
            }
        } else {
            self.pin = pin.to_string();
        }
        self.tries_left = 3;
        CardSays::Ok
    }
}

fn aes_decrypt(key: &[u8], block: [u8; 16]) -> [u8; 16] {
    use cipher::{BlockCipherDecrypt, KeyInit};
    let c = aes::Aes128::new_from_slice(key).expect("key");
    let mut b = cipher::Array::from(block);
    c.decrypt_block(&mut b);
    b.into()
}

/// CBC-MAC with IV = challenge || 00.., padding 80 00.., first 4 bytes of the last block.
fn card_mac(key: &[u8], challenge: &[u8; 8], body: &[u8]) -> Vec<u8> {
    let mut data = body.to_vec();
    data.push(0x80);
    while !data.len().is_multiple_of(16) {
        data.push(0);
    }
    let mut chain = [0u8; 16];
    chain[..8].copy_from_slice(challenge);
    for block in data.chunks(16) {
        let mut x = [0u8; 16];
        for i in 0..16 {
            x[i] = chain[i] ^ block[i];
        }
        chain = aes_ecb(key, x);
    }
    chain[..4].to_vec()
}

/// The whole command computed in software, for the known-answer check.
fn expected_apdu(ins: u8, key: &[u8; 16], challenge: &str, pin: &str) -> Vec<u8> {
    let enc = aes_ecb(key, *hkms::card::pin_block(pin));
    let mut body = vec![0x84, ins, 0x00, 0x00, 0x14];
    body.extend_from_slice(&enc);
    let ch: [u8; 8] = hex::decode(challenge).expect("hex").try_into().expect("8");
    let mac = card_mac(key, &ch, &body);
    body.extend_from_slice(&mac);
    body
}

/// docs/card-commands.md: PIN UNBLOCK for card 1234567890ABCDEF of Guangzhou, challenge
/// 0123456789ABCDEF, PIN 123456.
const DOC_EXAMPLE_APDU: &str = "84240000144A074C948CEC0B36ADA84B4F515D2BE01051D679";

const GZ_WINDOW: &str = "hkms://window/municipal/440100/counter-1";
const SZ_WINDOW: &str = "hkms://window/municipal/440300/counter-1";
const SERIAL: &str = "1234567890ABCDEF";
const OTHER_SERIAL: &str = "FEDCBA0987654321";

fn request(serial: &str, challenge: &str, pin: &str) -> proto::CardCommandRequest {
    proto::CardCommandRequest {
        card_serial: serial.into(),
        challenge: challenge.into(),
        pin: pin.into(),
        served_by: "Li Wei".into(),
        cardholder_id: "44010619900101123X".into(),
        agent_id: String::new(),
        ..Default::default()
    }
}

#[tokio::test]
async fn windows_unblock_and_reload_pins_that_only_the_right_card_accepts() {
    // Known masters: the ministry's roots diversified for Guangdong, then its two cities.
    let unblock_root = hex::decode("00112233445566778899AABBCCDDEEFF").expect("hex");
    let reload_root = hex::decode("FFEEDDCCBBAA99887766554433221100").expect("hex");
    let gz_unblock = aes_child(&aes_child(&unblock_root, "440000"), "440100");
    let gz_reload = aes_child(&aes_child(&reload_root, "440000"), "440100");
    let sz_unblock = aes_child(&aes_child(&unblock_root, "440000"), "440300");
    let sz_reload = aes_child(&aes_child(&reload_root, "440000"), "440300");

    // Two city nodes, each with its own token (one SoftHSM2 folder) and registry.
    let tokens = tempfile::tempdir().expect("tempdir");
    let gz_token = make_test_token(&tokens.path().join("softhsm"), "guangzhou");
    let sz_token = make_test_token(&tokens.path().join("softhsm"), "shenzhen");
    let pkcs11 = support::init_pkcs11(&gz_token);
    let mut nodes = Vec::new();
    for (token, region, masters) in [
        (&gz_token, "440100", [&gz_unblock, &gz_reload]),
        (&sz_token, "440300", [&sz_unblock, &sz_reload]),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        support::plant_card_masters(&pkcs11, token, dir.path(), region, masters[0], masters[1]);
        let config = dir.path().join("node.toml");
        std::fs::write(&config, node_config(region, "municipal", region, token)).expect("config");
        nodes.push(TestNode::start_in(dir, token.clone(), config));
    }
    let (gz, sz) = (&nodes[0], &nodes[1]);
    let mut gz_window = CardServiceClient::new(gz.channel_as(GZ_WINDOW).await);
    let mut sz_window = CardServiceClient::new(sz.channel_as(SZ_WINDOW).await);

    // Three wrong PINs lock the card.
    let mut card = Card::new(SERIAL, "246810", &gz_unblock, &gz_reload);
    assert_eq!(card.verify("111111"), CardSays::WrongPin { tries_left: 2 });
    assert_eq!(card.verify("222222"), CardSays::WrongPin { tries_left: 1 });
    assert_eq!(card.verify("333333"), CardSays::WrongPin { tries_left: 0 });
    assert_eq!(card.verify("246810"), CardSays::Locked);

    // The window asks hkms for the unblock command; the card accepts it and the PIN works.
    let challenge = card.get_challenge();
    let apdu = gz_window
        .unblock_pin(request(SERIAL, &challenge, "246810"))
        .await
        .expect("unblock")
        .into_inner()
        .apdu;
    let card_key = card.unblock_key;
    assert_eq!(
        apdu,
        expected_apdu(0x24, &card_key, &challenge, "246810"),
        "known answer"
    );
    assert_eq!(card.process(&apdu), CardSays::Ok);
    assert_eq!(card.verify("246810"), CardSays::Ok);

    // Replaying the same command later is refused: its challenge is spent.
    assert_eq!(card.process(&apdu), CardSays::NoChallenge);
    let _ = card.get_challenge();
    assert_eq!(card.process(&apdu), CardSays::BadMac);

    // A command made for another card is refused by this one.
    let challenge = card.get_challenge();
    let other = gz_window
        .unblock_pin(request(OTHER_SERIAL, &challenge, "246810"))
        .await
        .expect("other card")
        .into_inner()
        .apdu;
    assert_eq!(card.process(&other), CardSays::BadMac);

    // So is one made by another city's node for this card.
    let challenge = card.get_challenge();
    let foreign = sz_window
        .unblock_pin(request(SERIAL, &challenge, "246810"))
        .await
        .expect("Shenzhen's node makes it for its own keys")
        .into_inner()
        .apdu;
    assert_eq!(card.process(&foreign), CardSays::BadMac);
    // A window operator's name that would read backwards in a report is refused.
    for name in ["Li \u{202E}ieW", "Li\u{200B}Wei", "Li\nWei"] {
        let mut spoofed = request(SERIAL, "0011223344556677", "246810");
        spoofed.served_by = name.into();
        let err = gz_window
            .unblock_pin(spoofed)
            .await
            .expect_err("spoofed name");
        assert_eq!(err.code(), Code::InvalidArgument, "{name:?}: {err:?}");
        assert!(err.message().contains("served_by"), "{}", err.message());
    }

    // And a window cannot use another city's node at all.
    let mut sz_at_gz = CardServiceClient::new(gz.channel_as(SZ_WINDOW).await);
    let err = sz_at_gz
        .unblock_pin(request(SERIAL, "0011223344556677", "246810"))
        .await
        .expect_err("other city");
    assert_eq!(err.code(), Code::PermissionDenied);

    // A forgotten PIN: lock again, reload a new PIN with the reload key.
    for _ in 0..3 {
        card.verify("000000");
    }
    assert_eq!(card.verify("246810"), CardSays::Locked);
    let challenge = card.get_challenge();
    let reload = gz_window
        .reload_pin(request(SERIAL, &challenge, "135790"))
        .await
        .expect("reload")
        .into_inner()
        .apdu;
    assert_eq!(
        reload,
        expected_apdu(0x5E, &card.reload_key, &challenge, "135790"),
        "known answer"
    );
    assert_eq!(card.process(&reload), CardSays::Ok);
    assert_eq!(card.verify("135790"), CardSays::Ok);
    assert_eq!(card.verify("246810"), CardSays::WrongPin { tries_left: 2 });
    card.verify("135790");

    // The CLI does the same, reading the PIN from standard input.
    let challenge = card.get_challenge();
    let mut cli = std::process::Command::new(support::hkms_bin());
    let pki = gz.dir.path().join("pki");
    let window_cert = hkms::pki::DevCa::issue_client(
        &gz.ca,
        Some(&hkms::policy::Identity::from_uri(GZ_WINDOW).expect("id")),
        hkms::pki::Validity::days(1),
    )
    .expect("cert");
    hkms::pki::write_issued(&pki, "window", &window_cert).expect("write");
    // ID numbers from files, out of `ps`'s sight, as window software gives them.
    let ids = tempfile::tempdir().expect("tempdir");
    let (holder_file, agent_file) = (ids.path().join("holder"), ids.path().join("agent"));
    std::fs::write(&holder_file, "44010619900101123X\n").expect("write");
    std::fs::write(&agent_file, "440106198001011234\n").expect("write");
    let mut child = cli
        .args([
            "card",
            "unblock",
            "--serial",
            SERIAL,
            "--challenge",
            &challenge,
            "--served-by",
            "Li Wei",
            "--cardholder-id-file",
            holder_file.to_str().expect("path"),
            "--agent-id-file",
            agent_file.to_str().expect("path"),
        ])
        .env("HKMS_SERVER", gz.url())
        .env("HKMS_CERT", pki.join("window.pem"))
        .env("HKMS_KEY", pki.join("window.key"))
        .env("HKMS_CA", pki.join("ca.pem"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"135790\n")
            .expect("pin");
    }
    let out = child.wait_with_output().expect("cli");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let apdu = hex::decode(String::from_utf8_lossy(&out.stdout).trim()).expect("hex APDU");
    assert_eq!(card.process(&apdu), CardSays::Ok);
    // The node saw the same cardholder as in the gRPC requests: one ID MAC in every record.
    let bundle = ids.path().join("bundle");
    let records =
        support::verified_records(gz, "hkms://auditor/municipal/440100/auditor-1", &bundle);
    let macs: std::collections::BTreeSet<&str> = records
        .iter()
        .filter(|r| r["rpc"] == "UnblockPin" && r["result"]["ok"] == true)
        .filter_map(|r| r["params"]["cardholder_id_mac"].as_str())
        .collect();
    assert_eq!(macs.len(), 1, "{macs:?}");
    assert!(
        records
            .iter()
            .any(|r| r["rpc"] == "UnblockPin" && r["params"]["agent_id_mac"].is_string()),
        "the agent from the file is recorded"
    );

    // The worked example of docs/card-commands.md, byte for byte.
    let example = gz_window
        .unblock_pin(request(SERIAL, "0123456789ABCDEF", "123456"))
        .await
        .expect("example")
        .into_inner()
        .apdu;
    assert_eq!(hex::encode_upper(&example), DOC_EXAMPLE_APDU);

    // Bad input gets a clear status; only windows may ask.
    for (what, r) in [
        (
            "letters in the PIN",
            request(SERIAL, "0011223344556677", "12a456"),
        ),
        ("a short PIN", request(SERIAL, "0011223344556677", "12345")),
        (
            "a bad serial",
            request("1234", "0011223344556677", "246810"),
        ),
        ("a bad challenge", request(SERIAL, "00112233", "246810")),
    ] {
        let err = gz_window.unblock_pin(r).await.expect_err(what);
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{what}: {}",
            err.message()
        );
        assert!(
            !err.message().contains("12a456") && !err.message().contains("12345"),
            "{}",
            err.message()
        );
    }
    let mut officer = CardServiceClient::new(gz.channel().await);
    let err = officer
        .unblock_pin(request(SERIAL, "0011223344556677", "246810"))
        .await
        .expect_err("officer");
    assert_eq!(err.code(), Code::PermissionDenied);

    // Requests that arrive together are served in batches: each window still gets its own
    // card's command, and a refused request in a batch leaves the others alone.
    let mut burst = Vec::new();
    for w in 0..4u64 {
        let channel = gz
            .channel_as(&format!("hkms://window/municipal/440100/burst-{w}"))
            .await;
        for i in 0..8u64 {
            let serial = format!("{:016X}", 0x5555_0000_0000_0000 + w * 1000 + i);
            let challenge = format!("{:016X}", 0x0A0B_0C0D_0000_0000 + w * 100 + i);
            let bad = i == 5;
            let r = request(if bad { "12" } else { &serial }, &challenge, "246810");
            let mut window = CardServiceClient::new(channel.clone());
            burst.push(tokio::spawn(async move {
                (serial, challenge, bad, window.unblock_pin(r).await)
            }));
        }
    }
    for task in burst {
        let (serial, challenge, bad, answer) = task.await.expect("burst request");
        if bad {
            let err = answer.expect_err("a bad serial in a batch");
            assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
            continue;
        }
        let key = Card::new(&serial, "246810", &gz_unblock, &gz_reload).unblock_key;
        assert_eq!(
            answer.expect("burst unblock").into_inner().apdu,
            expected_apdu(0x24, &key, &challenge, "246810"),
            "the command for card {serial}"
        );
    }
    let db =
        rusqlite::Connection::open(gz.dir.path().join("data/registry.sqlite")).expect("registry");
    let (records, ids): (i64, i64) = db
        .query_row(
            "SELECT count(*), count(DISTINCT json_extract(line, '$.request_id')) FROM audit_log \
             WHERE json_extract(line, '$.rpc') = 'UnblockPin' \
             AND json_extract(line, '$.actor') LIKE '%/burst-_'",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .expect("count the burst's records");
    drop(db);
    assert_eq!(
        (records, ids),
        (32, 32),
        "one record per request, each its own id"
    );

    // The log names the card and the operator, never the PIN or the ID numbers in clear.
    let db = std::fs::read(gz.dir.path().join("data/registry.sqlite")).unwrap_or_default();
    let wal = std::fs::read(gz.dir.path().join("data/registry.sqlite-wal")).unwrap_or_default();
    let log = gz.log().into_bytes();
    let all = [db, wal, log].concat();
    let has = |needle: &str| all.windows(needle.len()).any(|w| w == needle.as_bytes());
    assert!(has(SERIAL), "the card serial is recorded");
    assert!(
        has("cardholder_id_mac") && has("agent_id_mac"),
        "the ID MACs are recorded"
    );
    assert!(
        !has("cardholder_id_hash") && !has("agent_id_hash"),
        "no salted hash is recorded any more"
    );
    for secret in [
        "246810",
        "135790",
        "44010619900101123X",
        "440106198001011234",
    ] {
        assert!(!has(secret), "{secret} leaked into the registry or the log");
    }
}
