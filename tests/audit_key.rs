//! A node whose token no longer holds the key that sealed its ceremony log refuses to start,
//! instead of signing on with a new key that no auditor pinned.
//!
//! A single test: it loads the PKCS#11 module through the process environment.

mod support;

use cryptoki::object::{Attribute, ObjectClass};
use cryptoki::session::UserType;
use hkms::store::AuditLog;
use secrecy::SecretString;
use support::{TestNode, USER_PIN, stderr, try_spawn_server};

#[tokio::test]
async fn a_node_whose_audit_key_is_gone_refuses_to_start() {
    let mut node = TestNode::start("national", "000000");
    node.client()
        .await
        .list_keys(hkms::proto::ListKeysRequest::default())
        .await
        .expect("a request, recorded");
    node.stop(); // the shutdown checkpoint seals it

    // The token loses the audit-signing pair (a reset, a mistaken cleanup).
    let pkcs11 = support::init_pkcs11(&node.token);
    let session = pkcs11
        .open_rw_session(support::slot_of(&pkcs11, &node.token.label))
        .expect("session");
    session
        .login(UserType::User, Some(&SecretString::from(USER_PIN)))
        .expect("login");
    // Its public half is a private object too: a session that never logged in cannot see,
    // change or destroy it.
    let public_halves = session
        .find_objects(&[
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::Label(b"hkms/audit-signing".to_vec()),
            Attribute::Private(true),
            Attribute::Modifiable(false),
        ])
        .expect("find");
    assert_eq!(public_halves.len(), 1);
    let mut destroyed = 0;
    for class in [ObjectClass::PUBLIC_KEY, ObjectClass::PRIVATE_KEY] {
        for key in session
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(b"hkms/audit-signing".to_vec()),
            ])
            .expect("find")
        {
            session.destroy_object(key).expect("destroy");
            destroyed += 1;
        }
    }
    assert_eq!(destroyed, 2, "the pair");
    let sealed = hkms::store::SqliteStore::open(&node.database())
        .expect("registry")
        .checkpoints()
        .expect("checkpoints");
    assert!(!sealed.is_empty(), "the log is sealed");
    drop(session);
    drop(pkcs11);

    let refused = match try_spawn_server(&node.token, &node.config, node.dir.path()) {
        Ok(_) => panic!("the node started and would sign with a new key"),
        Err(out) => stderr(&out),
    };
    assert!(refused.contains("no audit-signing key"), "{refused}");
    assert!(refused.contains("restore the token"), "{refused}");
}
