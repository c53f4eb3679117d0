//! Property tests for every parser an outsider can reach: random and mutated input gets a clear
//! error or a valid value, never a panic. (Issue 7 "bad input"; the key package parser has its
//! own in src/transport/package.rs.)

use hkms::audit::bundle::{Bundle, Manifest, read_bundle};
use hkms::audit::verify::verify_bundle;
use hkms::hierarchy::{Factor, KeyId, Region};
use hkms::policy::{Identity, Policy};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;

mod support;

const DEFAULT_POLICY: &str = include_str!("../policies/default.toml");

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        rng_seed: RngSeed::Fixed(support::test_seed("PROPTEST_RNG_SEED", 1)),
        ..ProptestConfig::default()
    })]

    #[test]
    fn region_codes_parse_or_refuse(code in ".{0,10}") {
        if let Ok(r) = Region::parse(&code) {
            prop_assert_eq!(r.as_str(), code.as_str());
            prop_assert_eq!(r.as_str().len(), 6);
        }
    }

    #[test]
    fn digit_region_codes_keep_their_hierarchy(code in "[0-9]{6}") {
        if let Ok(r) = Region::parse(&code)
            && let Some(p) = r.parent()
        {
            prop_assert!(r.is_child_of(&p));
        }
    }

    #[test]
    fn card_serials_parse_or_refuse(serial in ".{0,20}") {
        if let Ok(f) = Factor::from_card_serial(&serial) {
            prop_assert_eq!(f.to_hex(), serial.to_ascii_uppercase());
        }
    }

    #[test]
    fn pins_are_checked_without_panic(pin in ".{0,20}") {
        if hkms::card::check_pin(&pin, 6, 12).is_ok() {
            prop_assert!(pin.bytes().all(|b| b.is_ascii_digit()));
            let block = hkms::card::pin_block(&pin);
            let back = hkms::card::pin_from_block(&block).expect("a valid PIN block");
            prop_assert_eq!(back.as_str(), pin.as_str());
        }
    }

    #[test]
    fn identities_and_key_ids_parse_or_refuse(text in ".{0,80}") {
        let _ = Identity::from_uri(&text);
        let _ = Identity::from_uri(&format!("hkms://{text}"));
        let _ = KeyId::parse(&text);
    }

    #[test]
    fn mutated_policies_load_or_name_their_line(at in 0usize..20_000, byte in any::<u8>()) {
        let mut bytes = DEFAULT_POLICY.as_bytes().to_vec();
        let i = at % bytes.len();
        bytes[i] = byte;
        if let Ok(text) = String::from_utf8(bytes)
            && let Err(e) = Policy::parse(&text, "p.toml")
        {
            prop_assert!(e.to_string().starts_with("p.toml"), "{}", e);
        }
    }

    #[test]
    fn random_audit_bundles_never_panic(
        records in proptest::collection::vec(".{0,120}", 0..6),
        checkpoints in proptest::collection::vec(".{0,120}", 0..3),
        pem in ".{0,200}",
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let lines = |v: &[String]| v.iter().map(|l| format!("{}\n", l.replace('\n', " "))).collect::<String>();
        std::fs::write(d.join("records.jsonl"), lines(&records)).expect("write");
        std::fs::write(d.join("checkpoints.jsonl"), lines(&checkpoints)).expect("write");
        std::fs::write(d.join("public-key.pem"), &pem).expect("write");
        std::fs::write(d.join("manifest.json"), "{}").expect("write");
        let _ = read_bundle(d);
        let bundle = Bundle {
            manifest: Manifest {
                format: "hkms-audit-bundle/v1".into(),
                node: "n".into(),
                exported_at: "t".into(),
                first_seq: 1,
                last_seq: records.len() as u64,
                record_count: records.len() as u64,
                key_fingerprint: "ABCDEF".into(),
            },
            record_lines: records,
            checkpoints: Vec::new(),
            public_key_pem: pem,
            cosignatures: Vec::new(),
            statement: None,
        };
        prop_assert!(verify_bundle(&bundle, None).is_err());
    }
}
