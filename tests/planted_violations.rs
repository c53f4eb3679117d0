//! Planted violations: on a node's SoftHSM2 token, one key object is made (outside hkms, as a
//! careless tool or an attacker with the PIN could) for each attribute rule of
//! docs/design.md §3.5, breaking that rule and only that one. `hkms token audit` must exit
//! non-zero and name every planted object with its rule, and nothing else: the node's own keys
//! (one generated, the ceremony log's signing key and the ID MAC key) still pass.
//!
//! This checks the whole path an operator relies on: reading the attributes off a real token
//! (`object_facts`/`read_facts` in src/hsm/), the rules, and the CLI's output and exit status.
//! The tests that expect "0 violations" cannot see a reader that reports every key as fine.
//!
//! This binary holds a single test: it points SoftHSM2 at its own token through the process
//! environment before loading the module.

mod support;

use std::collections::BTreeSet;

use cryptoki::mechanism::MechanismType;
use cryptoki::object::{Attribute, KeyType, ObjectClass};
use hkms::hsm::attribute_audit::{
    RULE_DERIVE_NO_CIPHER, RULE_DERIVE_SIGN_LIMITED, RULE_EXTRACTABLE_TRUSTED_ONLY, RULE_FIXED,
    RULE_PUBLIC_ONLY_WRAPS, RULE_PUBLIC_UNDESTROYABLE, RULE_SENSITIVE, RULE_UNWRAP_FIXES_CHILDREN,
    RULE_WRAP_ONLY_TRUSTED,
};
use support::{TestNode, USER_PIN, make_token, node_config, stdout};

/// The attributes of a key that breaks no rule: private, sensitive, not extractable, no use,
/// not modifiable. Each planted object changes a few of them.
struct Flags {
    private: bool,
    sensitive: bool,
    extractable: bool,
    wrap_with_trusted: bool,
    derive: bool,
    encrypt: bool,
    wrap: bool,
    unwrap: bool,
    modifiable: bool,
    destroyable: bool,
    /// CKA_ALLOWED_MECHANISMS set to CMAC only (hkms's KCV mechanism).
    limited: bool,
}

const CLEAN: Flags = Flags {
    private: true,
    sensitive: true,
    extractable: false,
    wrap_with_trusted: true,
    derive: false,
    encrypt: false,
    wrap: false,
    unwrap: false,
    modifiable: false,
    destroyable: false,
    limited: false,
};

/// (label, flags, the one rule it breaks).
fn planted() -> Vec<(&'static str, Flags, &'static str)> {
    vec![
        (
            "planted/not-sensitive",
            Flags {
                sensitive: false,
                ..CLEAN
            },
            RULE_SENSITIVE,
        ),
        (
            "planted/extractable-untrusted",
            Flags {
                extractable: true,
                wrap_with_trusted: false,
                ..CLEAN
            },
            RULE_EXTRACTABLE_TRUSTED_ONLY,
        ),
        (
            "planted/derive-and-encrypt",
            Flags {
                derive: true,
                encrypt: true,
                limited: true,
                ..CLEAN
            },
            RULE_DERIVE_NO_CIPHER,
        ),
        (
            "planted/derive-unlimited",
            Flags {
                derive: true,
                ..CLEAN
            },
            RULE_DERIVE_SIGN_LIMITED,
        ),
        (
            "planted/public-derives",
            Flags {
                private: false,
                derive: true,
                limited: true,
                ..CLEAN
            },
            RULE_PUBLIC_ONLY_WRAPS,
        ),
        (
            "planted/public-destroyable",
            Flags {
                private: false,
                destroyable: true,
                ..CLEAN
            },
            RULE_PUBLIC_UNDESTROYABLE,
        ),
        (
            "planted/modifiable",
            Flags {
                modifiable: true,
                ..CLEAN
            },
            RULE_FIXED,
        ),
        (
            "planted/unwraps-unfixed",
            Flags {
                unwrap: true,
                ..CLEAN
            },
            RULE_UNWRAP_FIXES_CHILDREN,
        ),
        (
            "planted/wraps-untrusted",
            Flags {
                wrap: true,
                ..CLEAN
            },
            RULE_WRAP_ONLY_TRUSTED,
        ),
    ]
}

fn template(label: &str, f: &Flags, n: u8) -> Vec<Attribute> {
    let mut t = vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Value(vec![n; 16]),
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Private(f.private),
        Attribute::Sensitive(f.sensitive),
        Attribute::Extractable(f.extractable),
        Attribute::WrapWithTrusted(f.wrap_with_trusted),
        Attribute::Derive(f.derive),
        Attribute::Encrypt(f.encrypt),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Wrap(f.wrap),
        Attribute::Unwrap(f.unwrap),
        Attribute::Destroyable(f.destroyable),
        Attribute::Modifiable(f.modifiable),
    ];
    if f.limited {
        t.push(Attribute::AllowedMechanisms(vec![MechanismType::AES_CMAC]));
    }
    t
}

#[tokio::test]
async fn token_audit_names_every_planted_object_with_the_rule_it_breaks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = make_token(&dir.path().join("softhsm"), "hkms-test");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        node_config("ministry", "national", "000000", &token),
    )
    .expect("config");
    let objects = planted();
    {
        let pkcs11 = support::init_pkcs11(&token);
        let slot = support::slot_of(&pkcs11, "hkms-test");
        let session = pkcs11.open_rw_session(slot).expect("session");
        session
            .login(
                cryptoki::session::UserType::User,
                Some(&secrecy::SecretString::from(USER_PIN)),
            )
            .expect("login");
        for (n, (label, flags, _)) in objects.iter().enumerate() {
            session
                .create_object(&template(label, flags, n as u8 + 1))
                .unwrap_or_else(|e| panic!("plant {label}: {e}"));
        }
    }

    // The node's own keys, made through hkms, next to the planted ones.
    let mut node = TestNode::start_in(dir, token, config);
    let own = node.generate("card-master").await;
    node.stop();

    let out = node.cli(&["token", "audit"]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    // Each planted object, plus the generated key, the log's signing key and the ID MAC key.
    assert!(
        text.contains(&format!(
            "checked {} key objects on token hkms-test: {} violations",
            objects.len() + 3,
            objects.len()
        )),
        "{text}"
    );
    let found: BTreeSet<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("VIOLATION "))
        .map(|l| {
            let (label, rest) = l.split_once(": ").expect("label: rule");
            let rule = rest.split(" (found: ").next().expect("rule");
            (label.to_string(), rule.to_string())
        })
        .collect();
    let expected: BTreeSet<(String, String)> = objects
        .iter()
        .map(|(label, _, rule)| (label.to_string(), rule.to_string()))
        .collect();
    assert_eq!(found, expected, "{text}");
    assert!(!text.contains(&own.id), "{text}");
}
