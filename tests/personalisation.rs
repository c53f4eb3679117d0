//! Batch personalisation end to end: a city node issues the bureau's transport key card, then
//! `hkms card personalise` streams card serials and writes each card's key packages; an
//! interrupted run resumes without making any card twice. The bureau's side (a token that loads
//! the bureau card) authenticates and unwraps the packages, and the card keys' KCVs equal the
//! software computation.
//!
//! A single test: it plants known masters through the process environment.

mod support;

use std::time::Duration;

use hkms::hierarchy::{Algorithm, Usage};
use hkms::hsm::transport::{CardToken, PackageKeys};
use hkms::hsm::{Lifetime, SecretKeySpec, TokenLocator};
use hkms::proto;
use hkms::store::SqliteStore;
use hkms::transport::Package;
use support::{
    PlantSpot, TestNode, USER_PIN, aes_child, aes_ecb, aes_kcv, factor_block, make_token,
    node_config, stdout, verified_records,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cards_are_personalised_for_the_bureau_and_a_run_resumes_without_duplicates() {
    let unblock_root = hex::decode("00112233445566778899AABBCCDDEEFF").expect("hex");
    let reload_root = hex::decode("FFEEDDCCBBAA99887766554433221100").expect("hex");
    let masters = [
        (
            "pin-unblock",
            aes_child(&aes_child(&unblock_root, "440000"), "440100"),
        ),
        (
            "pin-reload",
            aes_child(&aes_child(&reload_root, "440000"), "440100"),
        ),
    ];

    let tokens = tempfile::tempdir().expect("tempdir");
    let softhsm = tokens.path().join("softhsm");
    let t_city = make_token(&softhsm, "guangzhou");
    make_token(&softhsm, "bureau-card");
    make_token(&softhsm, "bureau-hsm");
    let pkcs11 = support::init_pkcs11(&t_city);

    let dir = tempfile::tempdir().expect("tempdir");
    {
        let store = SqliteStore::open(&dir.path().join("data/registry.sqlite")).expect("store");
        let at = PlantSpot {
            pkcs11: &pkcs11,
            token: "guangzhou",
            store: &store,
            region: "440100",
        };
        for (key_type, value) in &masters {
            support::plant_aes(&at, key_type, value);
        }
    }
    let text = support::with_so_pin(
        node_config("guangzhou", "municipal", "440100", &t_city),
        &t_city,
    );
    let config = dir.path().join("node.toml");
    std::fs::write(&config, text).expect("config");
    let city = TestNode::start_in(dir, t_city.clone(), config);

    // The city's officers approve and issue the bureau's card.
    let approved = city
        .ceremony(
            hkms::proto::Operation::Manage,
            &[("action", "issue-card"), ("region", "440100")],
        )
        .await;
    assert_eq!(
        approved.state(),
        hkms::proto::CeremonyState::Done,
        "{}",
        approved.result
    );
    let card = proto::transport_service_client::TransportServiceClient::new(city.channel().await)
        .issue_card(proto::IssueCardRequest {
            region: "440100".into(),
            card_label: "bureau-card".into(),
            card_pin: USER_PIN.into(),
            ceremony_id: approved.id,
            ..Default::default()
        })
        .await
        .expect("bureau card")
        .into_inner();

    // Thirty cards; the first run stops after twelve (an interrupted run).
    let serials: Vec<String> = (0..30u64)
        .map(|i| format!("{:016X}", 0x1234_5678_0000_0000 + i * 7919))
        .collect();
    let out = tokens.path().join("packages");
    let run = |n: usize| {
        let file = tokens.path().join(format!("serials-{n}.txt"));
        std::fs::write(&file, serials[..n].join("\n")).expect("serials");
        city.cli_as(
            "hkms://system/municipal/440100/card-issuance",
            &[
                "card",
                "personalise",
                "--serials",
                &file.display().to_string(),
                "--bureau-card",
                &card.card_id,
                "--out",
                &out.display().to_string(),
                "--quiet",
            ],
        )
    };
    let first = run(12);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(
        stdout(&first).contains("personalised 12 cards, skipped 0"),
        "{}",
        stdout(&first)
    );
    let second = run(30);
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        stdout(&second).contains("personalised 18 cards, skipped 12"),
        "{}",
        stdout(&second)
    );
    assert_eq!(
        std::fs::read_dir(&out).expect("out").count(),
        60,
        "two packages per card, no more"
    );

    // Cards are worked on ahead of the answers, yet the answers keep the requests' order.
    let more: Vec<String> = (0..16u64)
        .map(|i| format!("{:016X}", 0x2234_5678_0000_0000 + i * 104_729))
        .collect();
    let requests: Vec<proto::PersonaliseRequest> = more
        .iter()
        .map(|serial| proto::PersonaliseRequest {
            bureau_card_id: card.card_id.clone(),
            card_serial: serial.clone(),
        })
        .collect();
    let mut answers = proto::card_service_client::CardServiceClient::new(
        city.channel_as("hkms://system/municipal/440100/card-issuance")
            .await,
    )
    .personalise_cards(tokio_stream::iter(requests))
    .await
    .expect("stream")
    .into_inner();
    let mut order = Vec::new();
    while let Some(answer) = answers.message().await.expect("answer") {
        assert!(answer.error.is_empty(), "{}", answer.error);
        assert_eq!(answer.packages.len(), 2);
        order.push(answer.card_serial);
    }
    assert_eq!(order, more, "answers in request order, one per card");

    // The node works through the cards in batches and commits a batch's records together, yet
    // each card has a record of its own under the stream's request id (batches in the works
    // together may commit in either order), and the stream's own record counts them all.
    let records = verified_records(
        &city,
        "hkms://auditor/municipal/440100/auditor-1",
        &tokens.path().join("bundle"),
    );
    let stream_record = records
        .iter()
        .find(|r| r["rpc"] == "PersonaliseCards" && r["params"]["batch_cards"] == "16")
        .expect("the stream's record");
    let request_id = &stream_record["request_id"];
    let mut logged: Vec<&str> = records
        .iter()
        .filter(|r| r["request_id"] == *request_id && r["params"]["card_serial"].is_string())
        .map(|r| {
            assert_eq!(r["result"]["code"], "OK", "{r}");
            r["params"]["card_serial"].as_str().unwrap_or_default()
        })
        .collect();
    logged.sort_unstable();
    let mut sent: Vec<&str> = more.iter().map(String::as_str).collect();
    sent.sort_unstable();
    assert_eq!(logged, sent, "one record per card");

    // Streams whose clients stop reading their answers do not stop the others: eight clients
    // (more than the node's 4 HSM turns could serve if each held one) send 100 cards each
    // and read nothing, then another personalises 4 cards.
    let issuance = "hkms://system/municipal/440100/card-issuance";
    let stream_of = |first: u64, n: u64| {
        let card_id = card.card_id.clone();
        tokio_stream::iter((first..first + n).map(move |i| proto::PersonaliseRequest {
            bureau_card_id: card_id.clone(),
            card_serial: format!("{:016X}", 0x3234_5678_0000_0000 + i * 7_727),
        }))
    };
    let mut stalled = Vec::new();
    for k in 0..8u64 {
        let mut client = proto::card_service_client::CardServiceClient::new(
            city.channel_with_window(issuance, 4096).await,
        );
        let answers = client
            .personalise_cards(stream_of(k * 1000, 100))
            .await
            .expect("stalled stream")
            .into_inner();
        stalled.push((client, answers));
    }
    // Long enough for the stalled streams to fill their windows and answer queues.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut answers =
        proto::card_service_client::CardServiceClient::new(city.channel_as(issuance).await)
            .personalise_cards(stream_of(9000, 4))
            .await
            .expect("stream beside the stalled ones")
            .into_inner();
    let served = tokio::time::timeout(Duration::from_secs(60), async {
        let mut n = 0;
        while let Some(answer) = answers.message().await.expect("answer") {
            assert!(answer.error.is_empty(), "{}", answer.error);
            n += 1;
        }
        n
    })
    .await
    .expect("a stream beside clients that stopped reading is served");
    assert_eq!(served, 4);
    drop(stalled);

    // Windows may not personalise.
    let window = city.cli_as(
        "hkms://window/municipal/440100/counter-1",
        &[
            "card",
            "personalise",
            "--serials",
            &tokens.path().join("serials-12.txt").display().to_string(),
            "--bureau-card",
            &card.card_id,
            "--out",
            &tokens.path().join("w").display().to_string(),
            "--quiet",
        ],
    );
    assert!(!window.status.success());
    let err = String::from_utf8_lossy(&window.stderr);
    assert!(
        err.contains("denied: role window at 440100 may not export pin-unblock"),
        "{err}"
    );

    // The bureau loads its card into its own token, authenticates and unwraps every package.
    let bureau = support::open_token(&t_city, "bureau-hsm");
    let bureau_card = CardToken::open(
        &t_city.module,
        &TokenLocator::by_label("bureau-card"),
        &secrecy::SecretString::from(USER_PIN),
    )
    .expect("card");
    assert_eq!(
        bureau
            .card_transport_kcv(&bureau_card, &card.card_id)
            .expect("kcv on the card")
            .to_hex(),
        card.kcv
    );
    let (kcv, _) = bureau
        .load_transport_key(
            &bureau_card,
            &secrecy::SecretString::from(support::SO_PIN),
            &card.card_id,
            PackageKeys::CardKeys,
        )
        .expect("load");
    assert_eq!(kcv.to_hex(), card.kcv);
    for (i, serial) in serials.iter().enumerate().step_by(7) {
        for (key_type, master) in &masters {
            let bytes =
                std::fs::read(out.join(format!("{serial}.{key_type}.pkg"))).expect("package");
            let p = Package::decode(&bytes).expect("decode");
            assert_eq!(
                (p.header.card_serial.as_str(), p.header.key_type.as_str()),
                (serial.as_str(), *key_type)
            );
            let signed = Package::signed_bytes(&p.header_bytes, &p.wrapped).expect("signed");
            assert_eq!(
                bureau.package_mac(&card.card_id, &signed).expect("mac"),
                p.mac.to_vec()
            );
            let d: [u8; 8] = hex::decode(serial).expect("hex").try_into().expect("8");
            let card_key = aes_ecb(master, factor_block(d));
            assert_eq!(p.header.kcv, aes_kcv(&card_key));
            let label = format!("hkms/bureau/{i}/{key_type}");
            let unwrapped = bureau
                .unwrap_from_transport(
                    &card.card_id,
                    &p.wrapped,
                    &SecretKeySpec {
                        algorithm: Algorithm::Aes128,
                        usage: Usage::Encrypt,
                        exportable: false,
                        label,
                        id: vec![1],
                        lifetime: Lifetime::Session,
                    },
                )
                .expect("unwrap");
            assert_eq!(unwrapped.to_hex(), aes_kcv(&card_key));
        }
    }
}
