//! ID numbers in card service records, end to end: a city's window unblocks a PIN for a known
//! cardholder and agent; the record carries their ID MACs (HMAC-SHA-256 made in the token with
//! `hkms/id-mac`), not the numbers and not salted hashes; an auditor has the node compute the
//! MAC of a number, through the API and the CLI, and finds the record; a window may not. The
//! key is checked on the token through raw PKCS#11: sensitive, never extractable, HMAC only,
//! not modifiable. Records made before ID MACs (salted hashes, with the node's old `id-salt`)
//! are found too while the node keeps that file. A second object under the key's label, or a
//! key created from a known value, stops the node.
//!
//! This binary holds a single test: it points SoftHSM2 at its token through the process
//! environment.

mod support;

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeInfo, AttributeType, KeyType, ObjectClass};
use cryptoki::session::{Session, UserType};
use hkms::audit::AuditDraft;
use hkms::hsm::ID_MAC_LABEL;
use hkms::proto::{self, audit_service_client::AuditServiceClient};
use hkms::store::{AuditLog, SqliteStore};
use sha2::{Digest, Sha256};
use support::{PlantSpot, TestNode, USER_PIN, make_token, node_config, stdout};
use tonic::Code;

const CITY: &str = "440100";
const WINDOW: &str = "hkms://window/municipal/440100/counter-1";
const AUDITOR: &str = "hkms://auditor/municipal/440100/auditor-1";
const CARDHOLDER: &str = "44010619900101123X";
const AGENT: &str = "440106198001011234";
const SERIAL: &str = "1234567890ABCDEF";

fn unblock(cardholder: &str, agent: &str) -> proto::CardCommandRequest {
    proto::CardCommandRequest {
        card_serial: SERIAL.into(),
        challenge: "0011223344556677".into(),
        pin: "246810".into(),
        served_by: "Li Wei".into(),
        cardholder_id: cardholder.into(),
        agent_id: agent.into(),
        ..Default::default()
    }
}

fn find(id: &str) -> proto::FindIdNumberRequest {
    proto::FindIdNumberRequest {
        id_number: id.into(),
        from_seq: 0,
    }
}

/// The records of `rpc`, read as an auditor through the API: (seq, parsed, line as stored).
async fn records(node: &TestNode, rpc: &str) -> Vec<(u64, serde_json::Value, String)> {
    let mut c = AuditServiceClient::new(node.channel_as(AUDITOR).await);
    let mut s = c
        .stream_records(proto::StreamRecordsRequest {
            operation: rpc.into(),
            ..Default::default()
        })
        .await
        .expect("stream records")
        .into_inner();
    let mut out = Vec::new();
    while let Some(r) = s.message().await.expect("a record") {
        let parsed: serde_json::Value = serde_json::from_str(&r.line).expect("record JSON");
        out.push((r.seq, parsed, r.line));
    }
    out
}

/// The first 16 bytes of SHA-256(salt || id) in hex: what records carried before ID MACs.
fn salted_hash(salt: &[u8], id: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(id.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// A logged-in read-write session on the test token.
fn user_session(pkcs11: &cryptoki::context::Pkcs11, label: &str) -> Session {
    let session = pkcs11
        .open_rw_session(support::slot_of(pkcs11, label))
        .expect("session");
    session
        .login(UserType::User, Some(&secrecy::SecretString::from(USER_PIN)))
        .expect("login");
    session
}

fn id_mac_objects(s: &Session) -> Vec<cryptoki::object::ObjectHandle> {
    s.find_objects(&[Attribute::Label(ID_MAC_LABEL.as_bytes().to_vec())])
        .expect("find")
}

/// What the node must say when it refuses to start.
fn refused_start(node: &TestNode) -> String {
    match support::try_spawn_server(&node.token, &node.config, node.dir.path()) {
        Ok((mut child, addr)) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the node started on {addr}");
        }
        Err(out) => String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn id_numbers_are_recorded_as_token_macs_that_only_auditors_can_look_up() {
    // A city node with known pin masters (their values do not matter here).
    let dir = tempfile::tempdir().expect("tempdir");
    let token = make_token(&dir.path().join("softhsm"), "guangzhou");
    let pkcs11 = support::init_pkcs11(&token);
    let store = SqliteStore::open(&dir.path().join("data/registry.sqlite")).expect("store");
    let at = PlantSpot {
        pkcs11: &pkcs11,
        token: &token.label,
        store: &store,
        region: CITY,
    };
    support::plant_aes(&at, "pin-unblock", &[0x11; 16]);
    support::plant_aes(&at, "pin-reload", &[0x22; 16]);
    drop(store);
    let config = dir.path().join("node.toml");
    std::fs::write(&config, node_config(CITY, "municipal", CITY, &token)).expect("config");
    let mut node = TestNode::start_in(dir, token.clone(), config);
    let data = node.dir.path().join("data");
    assert!(
        !data.join("id-salt").exists(),
        "a new node makes no ID salt any more"
    );

    // The window unblocks a PIN for a cardholder with an agent.
    let mut window = AuditServiceClient::new(node.channel_as(WINDOW).await);
    let mut card =
        proto::card_service_client::CardServiceClient::new(node.channel_as(WINDOW).await);
    card.unblock_pin(unblock(CARDHOLDER, AGENT))
        .await
        .expect("unblock");

    // Its record carries the two MACs: whole HMAC-SHA-256 values, no number, no hash.
    let unblocks = records(&node, "UnblockPin").await;
    let [(unblock_seq, record, line)] = unblocks.as_slice() else {
        panic!("one unblock record: {unblocks:?}");
    };
    let params = &record["params"];
    let holder_mac = params["cardholder_id_mac"]
        .as_str()
        .expect("cardholder_id_mac")
        .to_string();
    let agent_mac = params["agent_id_mac"]
        .as_str()
        .expect("agent_id_mac")
        .to_string();
    for mac in [&holder_mac, &agent_mac] {
        assert_eq!(mac.len(), 64, "{mac}");
        assert!(mac.bytes().all(|b| b.is_ascii_hexdigit()), "{mac}");
    }
    assert_ne!(holder_mac, agent_mac);
    assert!(params.get("cardholder_id_hash").is_none(), "{line}");
    assert!(params.get("agent_id_hash").is_none(), "{line}");
    for clear in [CARDHOLDER, AGENT] {
        assert!(!line.contains(clear), "{clear} in the record: {line}");
        // Not an unsalted hash either (nor a salted one with no salt).
        assert!(!line.contains(&salted_hash(b"", clear)), "{line}");
        assert!(
            !line.contains(&hex::encode(Sha256::digest(clear.as_bytes()))),
            "{line}"
        );
    }

    // On the token: exactly one ID MAC key, sensitive, never extractable, HMAC only, fixed.
    let session = user_session(&pkcs11, &token.label);
    let keys = id_mac_objects(&session);
    let [key] = keys.as_slice() else {
        panic!("one {ID_MAC_LABEL} on the token, found {}", keys.len());
    };
    let attrs = session
        .get_attributes(
            *key,
            &[
                AttributeType::Class,
                AttributeType::KeyType,
                AttributeType::Token,
                AttributeType::Private,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
                AttributeType::Local,
                AttributeType::Modifiable,
                AttributeType::Sign,
                AttributeType::Verify,
                AttributeType::Encrypt,
                AttributeType::Decrypt,
                AttributeType::Derive,
                AttributeType::Wrap,
                AttributeType::Unwrap,
                AttributeType::Value,
            ],
        )
        .expect("attributes");
    for want in [
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::AlwaysSensitive(true),
        Attribute::NeverExtractable(true),
        Attribute::Local(true),
        Attribute::Modifiable(false),
        Attribute::Sign(true),
        Attribute::Verify(false),
        Attribute::Encrypt(false),
        Attribute::Decrypt(false),
        Attribute::Derive(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
    ] {
        assert!(attrs.contains(&want), "{want:?} in {attrs:?}");
    }
    assert!(
        !attrs.iter().any(|a| matches!(a, Attribute::Value(_))),
        "the key's value came back"
    );
    // C_GetAttributeValue(CKA_VALUE) answers CKR_ATTRIBUTE_SENSITIVE.
    let info = session
        .get_attribute_info(*key, &[AttributeType::Value])
        .expect("attribute info");
    assert!(
        matches!(info.as_slice(), [AttributeInfo::Sensitive]),
        "{info:?}"
    );
    // The record's MAC is this key's HMAC-SHA-256 of the documented input
    // (docs/card-commands.md): made in the token, by nothing else.
    let token_mac = |id: &str| {
        let input = [b"hkms-id-number-v1:".as_slice(), id.as_bytes()].concat();
        hex::encode(
            session
                .sign(&Mechanism::Sha256Hmac, *key, &input)
                .expect("HMAC in the token"),
        )
    };
    assert_eq!(token_mac(CARDHOLDER), holder_mac);
    assert_eq!(token_mac(AGENT), agent_mac);
    // It does nothing else, and nobody can make it.
    assert!(
        session.sign(&Mechanism::Sha1Hmac, *key, b"x").is_err(),
        "another MAC"
    );
    assert!(
        session
            .verify(
                &Mechanism::Sha256Hmac,
                *key,
                b"hkms-id-number-v1:1",
                &[0u8; 32]
            )
            .is_err_and(|e| !e.to_string().contains("SignatureInvalid")),
        "verify must be refused, not answered"
    );
    for change in [
        Attribute::Extractable(true),
        Attribute::Verify(true),
        Attribute::Derive(true),
        Attribute::Encrypt(true),
    ] {
        assert!(
            session
                .update_attributes(*key, std::slice::from_ref(&change))
                .is_err(),
            "{change:?} was accepted"
        );
    }
    let wrapping = session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::ValueLen(32.into()),
                Attribute::Wrap(true),
            ],
        )
        .expect("a wrapping key");
    assert!(
        session
            .wrap_key(&Mechanism::AesKeyWrapPad, wrapping, *key)
            .is_err(),
        "the ID MAC key was wrapped"
    );

    // An auditor has the node compute the MAC of a number and finds the record, whichever way
    // the check digit was typed; the agent's number finds it too.
    let mut auditor = AuditServiceClient::new(node.channel_as(AUDITOR).await);
    let found = auditor
        .find_id_number(find(CARDHOLDER))
        .await
        .expect("find the cardholder")
        .into_inner();
    assert_eq!(found.id_mac, holder_mac);
    assert_eq!(found.seqs, [*unblock_seq]);
    assert!(!found.more && !found.legacy_searched, "{found:?}");
    let lower = auditor
        .find_id_number(find(&CARDHOLDER.to_ascii_lowercase()))
        .await
        .expect("lower case")
        .into_inner();
    assert_eq!(lower.id_mac, holder_mac);
    let found = auditor
        .find_id_number(find(AGENT))
        .await
        .expect("find the agent")
        .into_inner();
    assert_eq!(
        (found.id_mac.as_str(), found.seqs.as_slice()),
        (agent_mac.as_str(), [*unblock_seq].as_slice())
    );
    let nobody = auditor
        .find_id_number(find("110101200001011234"))
        .await
        .expect("another number")
        .into_inner();
    assert!(nobody.seqs.is_empty(), "{nobody:?}");
    let later = auditor
        .find_id_number(proto::FindIdNumberRequest {
            id_number: CARDHOLDER.into(),
            from_seq: unblock_seq + 1,
        })
        .await
        .expect("from a later record")
        .into_inner();
    assert!(later.seqs.is_empty(), "{later:?}");

    // A window may not; neither may an officer. A malformed number is refused, unrepeated.
    let err = window
        .find_id_number(find(CARDHOLDER))
        .await
        .expect_err("a window looks up an ID");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    let mut officer = AuditServiceClient::new(node.channel().await);
    let err = officer
        .find_id_number(find(CARDHOLDER))
        .await
        .expect_err("an officer looks up an ID");
    assert_eq!(err.code(), Code::PermissionDenied, "{}", err.message());
    let err = auditor
        .find_id_number(find("4401-0619"))
        .await
        .expect_err("a malformed number");
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(!err.message().contains("4401-0619"), "{}", err.message());

    // Every lookup is recorded with the MAC, never the number; the refused ones too.
    let lookups = records(&node, "FindIdNumber").await;
    let by = |actor: &str| -> Vec<&serde_json::Value> {
        lookups
            .iter()
            .filter(|(_, r, _)| r["actor"] == actor)
            .map(|(_, r, _)| r)
            .collect()
    };
    let mine = by(AUDITOR);
    assert_eq!(mine.len(), 6, "{lookups:?}");
    assert_eq!(mine[0]["params"]["id_mac"], holder_mac.as_str());
    assert_eq!(mine[0]["operation"], "find-id");
    assert_eq!(mine[0]["decision"]["rule"], "auditors-find-id-numbers");
    assert_eq!(mine[0]["params"]["found"], "1");
    let refused = by(WINDOW);
    assert_eq!(refused.len(), 1, "{lookups:?}");
    assert_eq!(refused[0]["params"]["id_mac"], holder_mac.as_str());
    assert_eq!(refused[0]["result"]["code"], "PERMISSION_DENIED");
    for (_, _, line) in &lookups {
        for clear in [CARDHOLDER, AGENT, "4401-0619", "110101200001011234"] {
            assert!(
                !line.contains(clear),
                "{clear} in a lookup's record: {line}"
            );
        }
    }

    // The CLI: the number from standard input, or from a file; never on the command line.
    let out = node.cli_as_with_input(
        AUDITOR,
        &["audit", "find-id", "--json"],
        Some(&format!("{CARDHOLDER}\n")),
    );
    assert!(out.status.success(), "{}", support::stderr(&out));
    let said: serde_json::Value = serde_json::from_str(stdout(&out).trim()).expect("JSON");
    assert_eq!(said["id_mac"], holder_mac.as_str());
    assert_eq!(said["seqs"], serde_json::json!([unblock_seq]));
    let id_file = node.dir.path().join("agent-id");
    std::fs::write(&id_file, format!("{AGENT}\n")).expect("id file");
    let out = node.cli_as(
        AUDITOR,
        &[
            "audit",
            "find-id",
            "--id-file",
            id_file.to_str().expect("path"),
        ],
    );
    assert!(out.status.success(), "{}", support::stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("ID MAC  {agent_mac}")), "{text}");
    assert!(text.contains(&format!("records {unblock_seq}")), "{text}");
    let out = node.cli_as_with_input(WINDOW, &["audit", "find-id"], Some(&format!("{AGENT}\n")));
    assert!(!out.status.success());
    assert!(
        support::stderr(&out).contains("PERMISSION_DENIED"),
        "{}",
        support::stderr(&out)
    );

    // The node's own key is neither an orphan nor a violation.
    let orphans = node.cli(&["keys", "orphans"]);
    assert!(orphans.status.success(), "{}", stdout(&orphans));
    let audit = node.cli(&["token", "audit"]);
    assert!(audit.status.success(), "{}", stdout(&audit));

    // A node from before ID MACs: its id-salt and a record with a salted hash. The key is found
    // again at restart (the same MACs), and lookups find the old record as well.
    node.stop();
    let salt = [0x5Au8; 32];
    std::fs::write(data.join("id-salt"), salt).expect("salt");
    let old_seq = {
        let store = SqliteStore::open(&data.join("registry.sqlite")).expect("store");
        let mut old = AuditDraft {
            node: CITY.into(),
            actor: WINDOW.into(),
            rpc: "UnblockPin".into(),
            operation: "use".into(),
            ..AuditDraft::default()
        };
        old.params
            .insert("cardholder_id_hash".into(), salted_hash(&salt, CARDHOLDER));
        store.append_audit(&old).expect("an old record").seq
    };
    node.start_again();
    let mut auditor = AuditServiceClient::new(node.channel_as(AUDITOR).await);
    let found = auditor
        .find_id_number(find(CARDHOLDER))
        .await
        .expect("find after restart")
        .into_inner();
    assert_eq!(found.id_mac, holder_mac, "the same key after a restart");
    assert_eq!(found.seqs, [*unblock_seq, old_seq]);
    assert!(found.legacy_searched);
    // New records still carry MACs only, even with the salt there.
    let mut card =
        proto::card_service_client::CardServiceClient::new(node.channel_as(WINDOW).await);
    card.unblock_pin(unblock(CARDHOLDER, ""))
        .await
        .expect("unblock after restart");
    let unblocks = records(&node, "UnblockPin").await;
    let (_, newest, line) = unblocks.last().expect("records");
    assert_eq!(newest["params"]["cardholder_id_mac"], holder_mac.as_str());
    assert!(
        newest["params"].get("cardholder_id_hash").is_none(),
        "{line}"
    );
    assert!(!line.contains(&salted_hash(&salt, CARDHOLDER)), "{line}");

    // A second object under the key's label stops the node, whatever it is.
    node.stop();
    let twin = session
        .generate_key(
            &Mechanism::GenericSecretKeyGen,
            &hkms::hsm::templates::id_mac_template(ID_MAC_LABEL),
        )
        .expect("a second ID MAC key");
    let said = refused_start(&node);
    assert!(
        said.contains(&format!(
            "2 objects on the token carry label {ID_MAC_LABEL}"
        )),
        "{said}"
    );
    session.destroy_object(twin).expect("remove the twin");

    // A key created from a known value, otherwise as hkms makes it, is refused too: whoever
    // knows the value can MAC every ID number offline. The attribute audit names it.
    session.destroy_object(*key).expect("remove the node's key");
    let mut known = hkms::hsm::templates::id_mac_template(ID_MAC_LABEL);
    known.retain(|a| !matches!(a, Attribute::ValueLen(_)));
    known.push(Attribute::Value(vec![0x42; 32]));
    session.create_object(&known).expect("a key from a value");
    let said = refused_start(&node);
    assert!(said.contains(ID_MAC_LABEL), "{said}");
    assert!(said.contains("CKA_LOCAL=Some(false)"), "{said}");
    let audit = node.cli(&["token", "audit"]);
    let text = stdout(&audit);
    assert_eq!(audit.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "VIOLATION {ID_MAC_LABEL}: {}",
            hkms::hsm::attribute_audit::RULE_ID_MAC_IN_TOKEN
        )),
        "{text}"
    );
}
