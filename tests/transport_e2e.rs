//! Issue 4 end to end: three nodes on 127.0.0.1 — the ministry, Guangdong 440000, Guangzhou
//! 440100 — each with its own token, registry and PKI, and card tokens. The ministry issues a
//! card for Guangdong, exports Guangdong's sub-key; Guangdong imports it, derives Guangzhou's,
//! issues Guangzhou's card and exports; Guangzhou imports. The city's key KCV equals the software
//! computation from the known national test key. Then the tamper matrix.
//!
//! A single test: it plants the known national key through the process environment.

mod support;

use hkms::proto::{self, transport_service_client::TransportServiceClient};
use hkms::store::SqliteStore;
use support::transport::{approve_card, export, export_for, import, issue, load, try_load};
use support::{
    PlantSpot, SO_PIN, TestNode, USER_PIN, aes_child, aes_kcv, derive_as, key_count, make_token,
    node_config, stdout,
};
use tonic::Code;

const GD_SYSTEM: &str = "hkms://system/provincial/440000/gd-kms";
const GZ_SYSTEM: &str = "hkms://system/municipal/440100/gz-kms";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sub_key_travels_ministry_to_province_to_city_and_tampering_is_refused() {
    let root = hex::decode("00112233445566778899AABBCCDDEEFF").expect("hex");
    let gd_value = aes_child(&root, "440000");
    let gz_value = aes_child(&gd_value, "440100");

    let tokens = tempfile::tempdir().expect("tempdir");
    let softhsm = tokens.path().join("softhsm");
    let t_ministry = make_token(&softhsm, "ministry");
    let t_gd = make_token(&softhsm, "guangdong");
    let t_gz = make_token(&softhsm, "guangzhou");
    for card in ["card-gd", "card-gz", "card-gz-2"] {
        make_token(&softhsm, card);
    }
    let pkcs11 = support::init_pkcs11(&t_ministry);

    let start = |token: &support::Token, tier: &str, region: &str, so: bool, plant: bool| {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut root_id = None;
        if plant {
            let store = SqliteStore::open(&dir.path().join("data/registry.sqlite")).expect("store");
            let at = PlantSpot {
                pkcs11: &pkcs11,
                token: &token.label,
                store: &store,
                region,
            };
            root_id = Some(support::plant_aes(&at, "card-master", &root));
        }
        let mut text = node_config(region, tier, region, token);
        if so {
            text = support::with_so_pin(text, token);
        }
        let config = dir.path().join("node.toml");
        std::fs::write(&config, text).expect("config");
        (TestNode::start_in(dir, token.clone(), config), root_id)
    };
    let (ministry, root_id) = start(&t_ministry, "national", "000000", true, true);
    let (guangdong, _) = start(&t_gd, "provincial", "440000", true, false);
    let (guangzhou, _) = start(&t_gz, "municipal", "440100", false, false);
    let root_id = root_id.expect("planted root").to_string();

    // Ministry: Guangdong's card, Guangdong's sub-key, its package.
    let gd_card = issue(&ministry, "440000", "card-gd").await;
    assert_eq!(
        (gd_card.region.as_str(), gd_card.role()),
        ("440000", proto::TransportKeyRole::Issued)
    );
    let gd_key = derive_as(&ministry, &ministry.officer, &root_id, "440000").await;
    assert_eq!(gd_key.kcv, aes_kcv(&gd_value));
    let gd_package = export(&ministry, &gd_key.id, "440000").await;

    // Guangdong: a card whose key is not the issued one, or a wrong security officer PIN, is
    // refused, and the card keeps its key for the right load.
    let other_kcv = if gd_card.kcv == "000000" {
        "000001"
    } else {
        "000000"
    };
    let cases = [
        (
            other_kcv,
            SO_PIN,
            Code::FailedPrecondition,
            "not the card that was issued",
        ),
        ("12345", SO_PIN, Code::InvalidArgument, "6 hex digits"),
        (
            gd_card.kcv.as_str(),
            "wrong-so-pin",
            Code::FailedPrecondition,
            "security officer PIN",
        ),
        (
            gd_card.kcv.as_str(),
            "",
            Code::InvalidArgument,
            "no security officer PIN",
        ),
    ];
    for (kcv, so_pin, code, needle) in cases {
        let e = try_load(&guangdong, GD_SYSTEM, "card-gd", &gd_card, kcv, so_pin)
            .await
            .expect_err(needle);
        assert_eq!(e.code(), code, "{needle}: {}", e.message());
        assert!(e.message().contains(needle), "{needle}: {}", e.message());
        assert!(!e.message().contains("wrong-so-pin"), "{}", e.message());
    }
    // Load the card (same KCV as issued), import, derive Guangzhou's key.
    let loaded = load(&guangdong, GD_SYSTEM, "card-gd", &gd_card).await;
    assert_eq!(
        loaded.kcv, gd_card.kcv,
        "the officers compare the card's KCV"
    );
    let gd_imported = import(&guangdong, GD_SYSTEM, gd_package.clone())
        .await
        .expect("Guangdong imports");
    assert_eq!(
        (gd_imported.kcv.as_str(), gd_imported.tier()),
        (gd_key.kcv.as_str(), proto::Tier::Provincial)
    );
    // `keys show` names where an imported key came from.
    let out = guangdong.cli_as(GD_SYSTEM, &["keys", "show", &gd_imported.id]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    let shown = stdout(&out);
    let header = hkms::transport::Package::decode(&gd_package)
        .expect("decode")
        .header;
    assert!(
        shown.contains(&format!("imported from node {}", header.issuer_node))
            && shown.contains(&gd_key.id)
            && shown.contains(&header.package_id)
            && shown.contains(&header.card_id),
        "{shown}"
    );
    let out = guangdong.cli_as(GD_SYSTEM, &["keys", "show", &gd_imported.id, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["origin"]["package_id"], header.package_id.as_str());
    let gz_key = derive_as(&guangdong, GD_SYSTEM, &gd_imported.id, "440100").await;
    let gz_card = issue(&guangdong, "440100", "card-gz").await;
    let gz_package = export(&guangdong, &gz_key.id, "440100").await;

    // Guangzhou: load its card; tampered packages are refused first, then the good one lands.
    // With the CLI, the two PINs as two lines on standard input, as a script gives them.
    let load_args = [
        "transport",
        "load-card",
        "--card",
        "card-gz",
        "--card-id",
        &gz_card.card_id,
        "--kcv",
        &gz_card.kcv,
    ];
    let one_line = format!("{USER_PIN}\n");
    let out = guangzhou.cli_as_with_input(GZ_SYSTEM, &load_args, Some(&one_line));
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        support::stderr(&out).contains("no card security officer PIN on standard input"),
        "{}",
        support::stderr(&out)
    );
    let both = format!("{USER_PIN}\n{SO_PIN}\n");
    let out = guangzhou.cli_as_with_input(GZ_SYSTEM, &load_args, Some(&both));
    assert!(out.status.success(), "{}", support::stderr(&out));
    assert!(
        stdout(&out).contains(&gz_card.card_id) && stdout(&out).contains("loaded"),
        "{}",
        stdout(&out)
    );
    let before = key_count(&guangzhou).await;
    let refused = |what: &'static str, bytes: Vec<u8>, code: Code, needle: &'static str| {
        let node = &guangzhou;
        async move {
            let err = import(node, GZ_SYSTEM, bytes).await.expect_err(what);
            assert_eq!(err.code(), code, "{what}: {}", err.message());
            assert!(err.message().contains(needle), "{what}: {}", err.message());
        }
    };
    let p = hkms::transport::Package::decode(&gz_package).expect("decode");
    let header_at = 10;
    let id_at = header_at
        + p.header_bytes
            .windows(2)
            .position(|w| w == b"p-")
            .expect("package id")
        + 5;
    let mut header_flip = gz_package.clone();
    header_flip[id_at] = if header_flip[id_at] == b'a' {
        b'b'
    } else {
        b'a'
    };
    refused(
        "header bit",
        header_flip,
        Code::InvalidArgument,
        "MAC does not verify",
    )
    .await;
    let wrapped_at = 12 + p.header_bytes.len();
    let mut payload_flip = gz_package.clone();
    payload_flip[wrapped_at + 3] ^= 0x01;
    refused(
        "payload bit",
        payload_flip,
        Code::InvalidArgument,
        "MAC does not verify",
    )
    .await;
    let mut mac_flip = gz_package.clone();
    let last = mac_flip.len() - 1;
    mac_flip[last] ^= 0x80;
    refused(
        "MAC bit",
        mac_flip,
        Code::InvalidArgument,
        "MAC does not verify",
    )
    .await;
    refused(
        "another region's package",
        gd_package.clone(),
        Code::InvalidArgument,
        "for region 440000",
    )
    .await;
    refused(
        "truncated",
        gz_package[..gz_package.len() - 7].to_vec(),
        Code::InvalidArgument,
        "truncated",
    )
    .await;
    // Wrapped under another card: Guangdong issues a second card for the city, not loaded there.
    let second = issue(&guangdong, "440100", "card-gz-2").await;
    let other_card_package = export_for(&guangdong, &gz_key.id, "440100", &second.card_id).await;
    refused(
        "another card",
        other_card_package,
        Code::FailedPrecondition,
        "is loaded here",
    )
    .await;
    assert_eq!(key_count(&guangzhou).await, before, "nothing was imported");

    let gz_imported = import(&guangzhou, GZ_SYSTEM, gz_package.clone())
        .await
        .expect("Guangzhou imports");
    assert_eq!(
        gz_imported.kcv,
        aes_kcv(&gz_value),
        "the city's key is the software computation"
    );
    assert_eq!(
        gz_imported.kcv, "687840",
        "tests/vectors/diversification.json"
    );
    assert_eq!(gz_imported.region, "440100");

    // Replays: the same package again, and a fresh package of the same (not newer) version.
    refused(
        "same package twice",
        gz_package,
        Code::AlreadyExists,
        "imported already",
    )
    .await;
    let again = export_for(&guangdong, &gz_key.id, "440100", &gz_card.card_id).await;
    refused(
        "a fresh package of a version not newer",
        again,
        Code::FailedPrecondition,
        "replay",
    )
    .await;
    assert_eq!(key_count(&guangzhou).await, before + 1);

    // An issue-card approval is spent by its card: it cannot issue a second one.
    let used = approve_card(&ministry, "440000").await;
    // A wrong card PIN or label is the caller's mistake to mend, and spends no approval.
    for (label, pin, code, needle) in [
        (
            "card-gd",
            "999999",
            Code::InvalidArgument,
            "refused its PIN",
        ),
        (
            "no-such-card",
            USER_PIN,
            Code::FailedPrecondition,
            "no card labelled",
        ),
    ] {
        let e = TransportServiceClient::new(ministry.channel().await)
            .issue_card(proto::IssueCardRequest {
                region: "440000".into(),
                card_label: label.into(),
                card_pin: pin.into(),
                ceremony_id: used.clone(),
                ..Default::default()
            })
            .await
            .expect_err(label);
        assert_eq!(e.code(), code, "{label}: {}", e.message());
        assert!(e.message().contains(needle), "{label}: {}", e.message());
        assert!(!e.message().contains("999999"), "{}", e.message());
    }
    let first = TransportServiceClient::new(ministry.channel().await)
        .issue_card(proto::IssueCardRequest {
            region: "440000".into(),
            card_label: "card-gd".into(),
            card_pin: USER_PIN.into(),
            ceremony_id: used.clone(),
            ..Default::default()
        })
        .await;
    assert!(first.is_ok(), "{first:?}");
    let again = TransportServiceClient::new(ministry.channel().await)
        .issue_card(proto::IssueCardRequest {
            region: "440000".into(),
            card_label: "card-gd".into(),
            card_pin: USER_PIN.into(),
            ceremony_id: used,
            ..Default::default()
        })
        .await
        .expect_err("the same ceremony twice");
    assert_eq!(again.code(), Code::FailedPrecondition);
    // Loading the same card twice is refused before the HSM is touched.
    let twice = TransportServiceClient::new(guangzhou.channel_as(GZ_SYSTEM).await)
        .load_card(proto::LoadCardRequest {
            card_label: "card-gz".into(),
            card_pin: USER_PIN.into(),
            card_id: gz_card.card_id.clone(),
            card_so_pin: SO_PIN.into(),
            expected_kcv: gz_card.kcv.clone(),
            ..Default::default()
        })
        .await
        .expect_err("loaded twice");
    assert_eq!(twice.code(), Code::AlreadyExists);

    // The orphan check knows transport keys; the CLI opens an issue-card ceremony too.
    for node in [&ministry, &guangdong, &guangzhou] {
        let out = node.cli(&["keys", "orphans"]);
        assert!(stdout(&out).contains("0 orphans"), "{}", stdout(&out));
    }
    let out = guangdong.cli(&[
        "ceremony",
        "open",
        "--op",
        "manage",
        "--action",
        "issue-card",
        "--region",
        "440300",
    ]);
    assert!(
        stdout(&out).contains("region=440300"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The CLI lists the city's card.
    let out = guangzhou.cli_as(GZ_SYSTEM, &["transport", "list"]);
    assert!(stdout(&out).contains(&gz_card.card_id), "{}", stdout(&out));

    // The province exports with the CLI, its credentials given as flags (not the environment);
    // --key is the caller's TLS key, --key-id the key to export.
    let pki = guangdong.dir.path().join("pki");
    let file = tokens.path().join("gz.pkg");
    let flag = |name: &str| pki.join(name).display().to_string();
    let (cert, key, ca) = (flag("officer.pem"), flag("officer.key"), flag("ca.pem"));
    let export_cli = |credentials: &[&str]| {
        std::process::Command::new(support::hkms_bin())
            .args([
                "package", "export", "--key-id", &gz_key.id, "--region", "440100",
            ])
            .arg("--out")
            .arg(&file)
            .args(["--server", &guangdong.url()])
            .args(credentials)
            // No dev PKI here to fall back on.
            .current_dir(tokens.path())
            .env_remove("HKMS_CERT")
            .env_remove("HKMS_KEY")
            .env_remove("HKMS_CA")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("hkms package export")
    };
    // A certificate alone is refused before connecting, naming what is missing.
    let out = export_cli(&["--cert", &cert]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        support::stderr(&out).contains("--cert given without --key"),
        "{}",
        support::stderr(&out)
    );
    assert!(!file.exists());
    let out = export_cli(&["--cert", &cert, "--key", &key, "--ca", &ca]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    assert!(stdout(&out).contains("gz.pkg"), "{}", stdout(&out));
    let exported =
        hkms::transport::Package::decode(&std::fs::read(&file).expect("read")).expect("a package");
    assert_eq!(exported.header.source_key_id, gz_key.id);
    assert_eq!(exported.header.recipient_region, "440100");

    // Offline inspection shows the header and nothing secret.
    let o = std::process::Command::new(support::hkms_bin())
        .args(["package", "inspect", &file.display().to_string()])
        .output()
        .expect("inspect");
    let text = stdout(&o);
    assert!(o.status.success(), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("recipient_region") && l.ends_with(" 440100"))
            && text.contains(&gz_key.kcv),
        "{text}"
    );
    let o = std::process::Command::new(support::hkms_bin())
        .args(["package", "inspect", "--json", &file.display().to_string()])
        .output()
        .expect("inspect --json");
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(v["header"]["recipient_region"], "440100");
    assert_eq!(v["header"]["kcv"], gz_key.kcv.as_str());
    // A file that is not there is named.
    let missing = file.with_file_name("missing.pkg");
    for cmd in ["inspect", "import"] {
        let o = std::process::Command::new(support::hkms_bin())
            .args(["package", cmd, &missing.display().to_string()])
            .output()
            .expect("run");
        assert!(!o.status.success());
        assert!(
            support::stderr(&o).contains(&missing.display().to_string()),
            "{cmd}: {}",
            support::stderr(&o)
        );
    }

    // Every key on every node's token follows the attribute rules; no registry holds key bytes.
    for node in [&ministry, &guangdong, &guangzhou] {
        let out = node.cli(&["token", "audit"]);
        assert!(out.status.success(), "{}", stdout(&out));
        for f in ["registry.sqlite", "registry.sqlite-wal"] {
            let bytes = std::fs::read(node.dir.path().join("data").join(f)).unwrap_or_default();
            for secret in [&root, &gd_value, &gz_value] {
                for needle in [
                    secret.to_vec(),
                    hex::encode(secret).into_bytes(),
                    hex::encode_upper(secret).into_bytes(),
                ] {
                    assert!(
                        !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                        "key bytes in a registry"
                    );
                }
            }
        }
    }
}
