//! After the key flows, every object on the token is checked against docs/design.md §3 by the
//! project's own audit (`hkms token audit`), and the registry and token are reconciled.

mod support;

use hkms::proto;
use hkms::store::KeyRegistry;
use support::{TestNode, TokenKind, derive, stdout};

async fn generate(node: &TestNode, key_type: &str) -> proto::Key {
    node.client()
        .await
        .generate_key(proto::GenerateKeyRequest {
            key_type: key_type.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("generate {key_type}: {e}"))
        .into_inner()
        .key
        .expect("key")
}

#[tokio::test]
async fn every_key_on_the_token_follows_the_attribute_rules() {
    let mut ministry = TestNode::start("national", "000000");
    let mut made = 0;
    for key_type in [
        "card-master",
        "pin-unblock",
        "pin-reload",
        "external-auth",
        "legacy-card-master",
    ] {
        if key_type == "legacy-card-master" && ministry.token.kind == TokenKind::Kryoptic {
            // No 3DES on Kryoptic (tests/keys_e2e.rs checks the refusal).
            continue;
        }
        let root = ministry.generate(key_type).await;
        let province = derive(&ministry, &root.id, "440000").await;
        derive(&ministry, &province.id, "440100").await;
        derive(&ministry, &province.id, "440300").await;
        made += 4;
    }
    let mut city = TestNode::start("municipal", "440100");
    for key_type in [
        "local-special",
        "local-file-key",
        "pin-unblock",
        "pin-reload",
    ] {
        if key_type.starts_with("local") {
            generate(&city, key_type).await;
        } else {
            city.generate(key_type).await;
        }
    }

    ministry.stop();
    city.stop();
    // Each token also holds the ceremony log's signing key (a private key) and the ID MAC key.
    for (node, count) in [(&ministry, made + 2), (&city, 4 + 2)] {
        let out = node.cli(&["token", "audit"]);
        let text = stdout(&out);
        assert!(out.status.success(), "{text}");
        assert!(
            text.contains(&format!("checked {count} key objects")),
            "{text}"
        );
        assert!(text.contains(": 0 violations"), "{text}");
        let out = node.cli(&["keys", "orphans"]);
        assert!(out.status.success(), "{}", stdout(&out));
    }
}

#[tokio::test]
async fn orphan_check_finds_keys_without_rows_and_rows_without_keys() {
    let mut node = TestNode::start("national", "000000");
    let kept = node.generate("card-master").await;
    let lost_row = node.generate("pin-unblock").await;
    node.stop();

    // What a crash between the HSM step and the registry write leaves: a key with no row.
    let store = hkms::store::SqliteStore::open(&node.database()).expect("store");
    let id = hkms::hierarchy::KeyId::parse(&lost_row.id).expect("id");
    store.delete_key(&id).expect("drop the row");
    // And the opposite: a row whose key is not on the token.
    let mut ghost = store
        .get_key(&hkms::hierarchy::KeyId::parse(&kept.id).expect("id"))
        .expect("read")
        .expect("row");
    ghost.id = hkms::hierarchy::KeyId::new_random();
    ghost.ck_label = ghost.id.ck_label();
    ghost.version += 1;
    store.insert_key(&ghost).expect("ghost row");
    drop(store);

    let out = node.cli(&["keys", "orphans"]);
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!("ORPHAN  hkms/{}", lost_row.id)),
        "{text}"
    );
    assert!(text.contains(&format!("MISSING {}", ghost.id)), "{text}");
    assert!(!text.contains(&kept.id), "{text}");

    let out = node.cli(&["keys", "orphans", "--destroy"]);
    assert!(
        stdout(&out).contains("destroyed 1 orphan objects"),
        "{}",
        stdout(&out)
    );
    let out = node.cli(&["keys", "orphans"]);
    assert!(
        stdout(&out).contains("0 orphans, 1 missing"),
        "{}",
        stdout(&out)
    );
}
