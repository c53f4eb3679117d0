//! The verification verdict a report opens with: the same check as `hkms audit verify`
//! ([`verify_bundle`]), and the keys the bundle names and the auditor pinned.

use crate::audit::bundle::{Bundle, public_key_point, spki_sha256};
use crate::audit::verify::{VerifyError, VerifyReport, parse_expected_sha256, verify_bundle};

/// What the verifier found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The bundle verifies, against the key SHA-256 the auditor gave.
    Verified(VerifyReport),
    /// The bundle agrees with itself, but no key SHA-256 was given to compare its key with.
    Unpinned(VerifyReport),
    /// The first broken place.
    Broken(VerifyError),
}

impl Verdict {
    /// The verdict's word, as reports print it.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Verified(_) => "VERIFIED",
            Verdict::Unpinned(_) => "UNPINNED",
            Verdict::Broken(_) => "BROKEN",
        }
    }

    /// Whether the records may be reported: only those of a bundle that verifies.
    pub fn records_hold(&self) -> bool {
        !matches!(self, Verdict::Broken(_))
    }
}

/// A bundle's verdict with the keys it rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verification {
    /// What the verifier found.
    pub verdict: Verdict,
    /// The node the manifest names.
    pub node: String,
    /// When the manifest says the bundle was exported.
    pub exported_at: String,
    /// The key fingerprint the manifest names (6 hex digits).
    pub manifest_fingerprint: String,
    /// The SHA-256 of the bundle's public key, when `public-key.pem` is a P-256 key.
    pub key_sha256: Option<String>,
    /// The SHA-256 the auditor gave (`--expect-key-sha256`), in canonical form.
    pub expected_sha256: Option<String>,
}

impl Verification {
    /// Verifies `bundle` against `expected_sha256` (64 hex digits, as for `hkms audit
    /// verify`; a malformed value is a [`Verdict::Broken`] naming "the expected key").
    pub fn of(bundle: &Bundle, expected_sha256: Option<&str>) -> Verification {
        let expected = expected_sha256.map(parse_expected_sha256);
        let verdict = match (&expected, verify_bundle(bundle, expected_sha256)) {
            (Some(Err(e)), _) => Verdict::Broken(e.clone()),
            (_, Err(e)) => Verdict::Broken(e),
            (Some(Ok(_)), Ok(r)) => Verdict::Verified(r),
            (None, Ok(r)) => Verdict::Unpinned(r),
        };
        Verification {
            verdict,
            node: bundle.manifest.node.clone(),
            exported_at: bundle.manifest.exported_at.clone(),
            manifest_fingerprint: bundle.manifest.key_fingerprint.clone(),
            key_sha256: public_key_point(&bundle.public_key_pem)
                .ok()
                .map(|(der, _)| spki_sha256(&der)),
            expected_sha256: expected.and_then(Result::ok),
        }
    }

    /// Whether the bundle's key is the one the auditor gave: `None` when none was given (or
    /// the bundle's key cannot be read).
    pub fn key_matches(&self) -> Option<bool> {
        Some(self.expected_sha256.as_ref()? == self.key_sha256.as_ref()?)
    }

    /// The verdict in one line: what `hkms audit verify` prints, without its exit status.
    pub fn summary(&self) -> String {
        match &self.verdict {
            Verdict::Verified(r) | Verdict::Unpinned(r) => format!(
                "{}: records {}..{} ({}), {} checkpoints, sealed up to {}, key {} (SHA-256 {})",
                self.verdict.word(),
                r.first_seq,
                r.last_seq,
                r.records,
                r.checkpoints,
                r.sealed_up_to,
                r.key_fingerprint,
                r.key_sha256
            ),
            Verdict::Broken(e) => format!("BROKEN at {e}"),
        }
    }

    /// What the verdict means for the reader, in a sentence.
    pub fn meaning(&self) -> &'static str {
        match self.verdict {
            Verdict::Verified(_) => {
                "Every record is chained and sealed by a checkpoint signed with the key whose \
                 SHA-256 was given: the records below are the node's log as it signed it."
            }
            Verdict::Unpinned(_) => {
                "The bundle agrees with itself, but it carries its own key and no key SHA-256 \
                 was given to compare it with: a bundle re-signed with another key would also \
                 agree with itself. Run the report again with --expect-key-sha256 and the \
                 SHA-256 the node's officers give you."
            }
            Verdict::Broken(_) => {
                "The bundle does not verify: it was changed, cut or mixed after the node signed \
                 it, or it is not the node's. Nothing in it can be relied on, so this report \
                 shows none of its records; keep the bundle as evidence and investigate the \
                 broken place."
            }
        }
    }

    /// What the verifier noted beside the verdict (a partial export, an unpinned key).
    pub fn notes(&self) -> &[String] {
        match &self.verdict {
            Verdict::Verified(r) | Verdict::Unpinned(r) => &r.notes,
            Verdict::Broken(_) => &[],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::verify::fixture::clean;

    #[test]
    fn a_pinned_bundle_is_verified_an_unpinned_one_says_so_and_a_changed_one_is_broken() {
        let (b, _) = clean();
        let sha = Verification::of(&b, None).key_sha256.unwrap();
        let pinned = Verification::of(&b, Some(&sha));
        assert_eq!(pinned.verdict.word(), "VERIFIED");
        assert_eq!(pinned.key_matches(), Some(true));
        assert!(pinned.summary().starts_with("VERIFIED: records 1..20 (20)"));

        let unpinned = Verification::of(&b, None);
        assert_eq!(unpinned.verdict.word(), "UNPINNED");
        assert_eq!(unpinned.key_matches(), None);
        assert!(unpinned.verdict.records_hold());

        let other = "AB".repeat(32);
        let wrong = Verification::of(&b, Some(&other));
        assert_eq!(wrong.verdict.word(), "BROKEN");
        assert_eq!(wrong.key_matches(), Some(false));
        assert!(!wrong.verdict.records_hold());

        let mut changed = b.clone();
        changed.record_lines[4] = changed.record_lines[4].replace("\"seq\":5", "\"seq\":6");
        let broken = Verification::of(&changed, Some(&sha));
        assert!(
            broken.summary().starts_with("BROKEN at record 6"),
            "{}",
            broken.summary()
        );
    }

    #[test]
    fn a_short_fingerprint_is_not_a_pin() {
        let (b, _) = clean();
        let short = Verification::of(&b, Some("ABCDEF"));
        assert_eq!(short.verdict.word(), "BROKEN");
        assert!(
            short.summary().contains("the expected key"),
            "{}",
            short.summary()
        );
        assert_eq!(short.expected_sha256, None);
    }
}
