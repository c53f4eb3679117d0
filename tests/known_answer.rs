//! Known-answer test of diversification through the public API: with known parent keys planted
//! in a test token, the KCVs of the sub-keys that the server derives equal those computed
//! independently in software (RustCrypto) from docs/design.md §3, and the vectors in
//! tests/vectors/diversification.json. Also checks that no derived key byte reaches the
//! registry or the log.
//!
//! This binary holds a single test: it points SoftHSM2 at its own token through the process
//! environment before loading the module.

mod support;

use cipher::{Array, BlockCipherEncrypt, KeyInit};
use cmac::{Cmac, Mac};
use des::TdesEde2;
use hkms::hierarchy::{Algorithm, Kcv, KcvMethod};
use hkms::store::SqliteStore;
use support::{TestNode, aes_child, aes_kcv, data_block, derive, make_token, node_config};

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).expect("hex")
}

fn des_child(parent: &[u8], region: &str) -> Vec<u8> {
    let cipher = TdesEde2::new_from_slice(parent).expect("3des key");
    let data = data_block(region);
    let mut out = Vec::new();
    for half in data.chunks(8) {
        let mut block = Array::try_from(half).expect("8 bytes");
        cipher.encrypt_block(&mut block);
        out.extend_from_slice(&block);
    }
    out
}

fn des_kcv(key: &[u8]) -> String {
    let mut mac = <Cmac<TdesEde2> as KeyInit>::new_from_slice(key).expect("cmac key");
    mac.update(&[0u8; 8]);
    hex::encode_upper(&mac.finalize().into_bytes()[..3])
}

#[tokio::test]
async fn derived_kcvs_equal_the_software_computation() {
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("vectors/diversification.json")).expect("vectors");
    let root = unhex(vectors["root"]["key"].as_str().expect("root"));
    let des_root = unhex("0123456789ABCDEFFEDCBA9876543210");

    // The software side agrees with the published vectors before it judges the HSM.
    assert_eq!(aes_kcv(&root), vectors["root"]["kcv_cmac"]);
    let gd = aes_child(&root, "440000");
    let gz = aes_child(&gd, "440100");
    assert_eq!(hex::encode_upper(&gd), vectors["chain"][0]["child"]);
    assert_eq!(hex::encode_upper(&gz), vectors["chain"][1]["child"]);
    assert_eq!(
        hex::encode_upper(data_block("440100")),
        vectors["chain"][1]["data"]
    );
    let des_gd = des_child(&des_root, "440000");
    let des_gz = des_child(&des_gd, "440100");

    let dir = tempfile::tempdir().expect("tempdir");
    let token = make_token(&dir.path().join("softhsm"), "hkms-test");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        node_config("ministry", "national", "000000", &token),
    )
    .expect("config");
    let (aes_id, des_id) = {
        let pkcs11 = support::init_pkcs11(&token);
        let store = SqliteStore::open(&dir.path().join("data/registry.sqlite")).expect("store");
        let at = support::PlantSpot {
            pkcs11: &pkcs11,
            token: "hkms-test",
            store: &store,
            region: "000000",
        };
        let aes_kcv_bytes: [u8; 3] = unhex(&aes_kcv(&root)).try_into().expect("3");
        let des_kcv_bytes: [u8; 3] = unhex(&des_kcv(&des_root)).try_into().expect("3");
        let a = support::plant(
            &at,
            "card-master",
            Algorithm::Aes128,
            &root,
            Kcv {
                value: aes_kcv_bytes,
                method: KcvMethod::AesCmac,
            },
        );
        let d = support::plant(
            &at,
            "legacy-card-master",
            Algorithm::Des2,
            &des_root,
            Kcv {
                value: des_kcv_bytes,
                method: KcvMethod::Des3Cmac,
            },
        );
        (a, d)
    };

    let mut node = TestNode::start_in(dir, token, config);
    let p = derive(&node, aes_id.as_str(), "440000").await;
    let m = derive(&node, &p.id, "440100").await;
    assert_eq!(p.kcv, aes_kcv(&gd));
    assert_eq!(m.kcv, aes_kcv(&gz));
    assert_eq!(p.kcv, vectors["chain"][0]["kcv_cmac"]);
    assert_eq!(m.kcv, vectors["chain"][1]["kcv_cmac"]);

    let dp = derive(&node, des_id.as_str(), "440000").await;
    let dm = derive(&node, &dp.id, "440100").await;
    assert_eq!(
        (dp.kcv.as_str(), dp.kcv_method()),
        (des_kcv(&des_gd).as_str(), hkms::proto::KcvMethod::Des3Cmac)
    );
    assert_eq!(dm.kcv, des_kcv(&des_gz));

    // The planted keys and every derived key follow the attribute rules.
    let audit = node.cli(&["token", "audit"]);
    assert!(audit.status.success(), "{}", support::stdout(&audit));
    assert!(
        support::stdout(&audit).contains("checked 8 key objects"),
        "{}",
        support::stdout(&audit)
    );

    // No key byte, raw or in hex, is in the registry files or the log.
    node.stop();
    let mut haystacks = vec![node.log().into_bytes()];
    for name in ["registry.sqlite", "registry.sqlite-wal"] {
        if let Ok(bytes) = std::fs::read(node.dir.path().join("data").join(name)) {
            haystacks.push(bytes);
        }
    }
    for secret in [&root, &gd, &gz, &des_root, &des_gd, &des_gz] {
        for needle in [
            secret.clone(),
            hex::encode(secret).into_bytes(),
            hex::encode_upper(secret).into_bytes(),
        ] {
            for hay in &haystacks {
                assert!(
                    !hay.windows(needle.len()).any(|w| w == needle.as_slice()),
                    "a key value leaked into the registry or log"
                );
            }
        }
    }
}
