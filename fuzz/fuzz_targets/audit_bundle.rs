//! An audit bundle handed to an auditor: the verifier must name a broken place or accept, never
//! panic, whatever the record lines, checkpoint lines and public key hold. The input is split at
//! 0xFF bytes into records, checkpoints and the PEM text.
#![no_main]

use hkms::audit::bundle::{Bundle, Manifest, public_key_point};
use hkms::audit::verify::verify_bundle;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0xFF);
    let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
    let records: Vec<String> = text(parts.next()).lines().map(str::to_string).collect();
    let checkpoints: Vec<String> = text(parts.next()).lines().map(str::to_string).collect();
    let pem = text(parts.next());
    let _ = public_key_point(&pem);
    let checkpoints = checkpoints
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let bundle = Bundle {
        manifest: Manifest {
            format: "hkms-audit-bundle/v1".into(),
            node: "fuzz".into(),
            exported_at: "2026-01-01T00:00:00Z".into(),
            first_seq: 1,
            last_seq: records.len() as u64,
            record_count: records.len() as u64,
            key_fingerprint: String::new(),
        },
        record_lines: records,
        checkpoints,
        public_key_pem: pem,
    };
    let _ = verify_bundle(&bundle, None);
});
