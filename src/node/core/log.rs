//! The ceremony log as the node writes it: appending records (alone, in batches, or with the
//! change they record), and signing checkpoints with the HSM's `audit-signing` key (on the
//! token `audit_key` says).

use sha2::{Digest, Sha256};

use crate::audit::bundle::{
    der_from_raw_signature, spki_fingerprint, spki_pem_from_point, spki_sha256,
};
use crate::audit::record::{FORMAT_VERSION, GENESIS, now_millis};
use crate::audit::witness::{ExportStatement, WITNESS_FORMAT_VERSION};
use crate::audit::{AuditDraft, AuditRecord, Checkpoint};
use crate::hsm::Token;

use super::super::{NodeError, Request};
use super::Core;

/// Label of the ECDSA P-256 pair that signs checkpoints.
pub const SIGNING_LABEL: &str = "hkms/audit-signing";

/// The published half of the signing key.
#[derive(Debug, Clone)]
pub struct Signing {
    /// SPKI PEM, for auditors and `openssl`.
    pub spki_pem: String,
    /// First 3 bytes of SHA-256 of the SPKI DER, hex: a KCV-like name to read aloud.
    pub fingerprint: String,
    /// SHA-256 of the SPKI DER, 64 hex digits: what auditors compare with a bundle's key.
    pub sha256: String,
}

impl Signing {
    /// Reads the pair's public half from `hsm` (`place` names it in errors: "the token", "the
    /// audit token ..."); makes the pair first when `sealed` is empty (the log has no
    /// checkpoint yet). Otherwise the last checkpoint must verify with the token's key: a node
    /// whose key was replaced (a token reset, another token) would sign on with a key no
    /// auditor pinned, and its log could not be verified as one any more.
    pub fn load(
        hsm: &dyn Token,
        sealed: Option<&Checkpoint>,
        place: &str,
    ) -> Result<Signing, NodeError> {
        let point = hsm
            .signing_key(SIGNING_LABEL, sealed.is_none())
            .map_err(|e| match e {
                crate::hsm::HsmError::KeyNotFound { .. } => NodeError::FailedPrecondition(format!(
                    "the ceremony log has checkpoints, but {place} has no audit-signing key: \
                     this is not the node's token, or its key was removed, or the config no \
                     longer names the token that holds it ([audit.token]); restore the token \
                     or the config (hkms will not sign the log with a new key)"
                )),
                other => other.into(),
            })?;
        let spki_pem = spki_pem_from_point(&point)
            .map_err(|e| NodeError::Internal(format!("audit signing key: {e}")))?;
        let (der, _) = crate::audit::bundle::public_key_point(&spki_pem)
            .map_err(|e| NodeError::Internal(format!("audit signing key: {e}")))?;
        if let Some(last) = sealed
            && !crate::audit::verify::checkpoint_verifies(last, &spki_pem)
        {
            return Err(NodeError::FailedPrecondition(format!(
                "checkpoint {} of the ceremony log was signed by key {}, not by the \
                 audit-signing key {} of {place}: this is not the node's token, or its key was \
                 replaced; restore the token (hkms will not sign the log with another key)",
                last.seq,
                last.key_fingerprint,
                spki_fingerprint(&der)
            )));
        }
        Ok(Signing {
            fingerprint: spki_fingerprint(&der),
            sha256: spki_sha256(&der),
            spki_pem,
        })
    }
}

impl Core {
    /// Appends a record on its own (reads, refusals); a checkpoint follows when due.
    pub fn record(&self, draft: &AuditDraft) -> Result<AuditRecord, NodeError> {
        let r = self.store.append_audit(draft)?;
        self.after_append(r.seq);
        Ok(r)
    }

    /// Writes a change together with `req`'s record in one transaction: `write` gets the
    /// record (a success, or `failure`'s outcome) and returns what it made and the record's
    /// sequence number, or `None` when it wrote nothing (a compare-and-set that found another
    /// state). Once this returns a written record, the request is recorded and the pipeline
    /// writes nothing more for it; a checkpoint follows when due.
    pub(crate) fn commit<T, E>(
        &self,
        req: &mut Request,
        failure: Option<&NodeError>,
        write: impl FnOnce(&AuditDraft) -> Result<(T, Option<u64>), E>,
    ) -> Result<T, NodeError>
    where
        NodeError: From<E>,
    {
        let (made, seq) = write(&req.draft(failure))?;
        if let Some(seq) = seq {
            req.set_recorded();
            self.after_append(seq);
        }
        Ok(made)
    }

    /// Appends the records of several requests in one commit (all or none); a checkpoint
    /// follows when due.
    pub fn record_all(&self, drafts: &[AuditDraft]) -> Result<(), NodeError> {
        if drafts.is_empty() {
            return Ok(());
        }
        let records = self.store.append_audits(drafts)?;
        if let Some(last) = records.last() {
            self.after_append(last.seq);
        }
        Ok(())
    }

    /// Signs a checkpoint when `checkpoint_every` records have passed since the last one. A
    /// failure is logged, not returned: the record itself is already durable.
    pub(crate) fn after_append(&self, seq: u64) {
        if self.log_changed.get().is_some() {
            return; // said once, when found; nothing is sealed until a restart
        }
        let due = match self.sealed.lock() {
            Ok(sealed) => seq.saturating_sub(*sealed) >= self.checkpoint_every,
            Err(_) => false,
        };
        if due && let Err(e) = self.checkpoint() {
            tracing::error!(error = %e, "cannot sign a checkpoint of the ceremony log");
        }
    }

    /// Whether the log was found changed outside hkms (then nothing is sealed until a restart).
    pub(crate) fn log_is_changed(&self) -> bool {
        self.log_changed.get().is_some()
    }

    /// Signs (seq, head, time) of the log's last record, unless it is sealed already.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, NodeError> {
        let mut sealed = self
            .sealed
            .lock()
            .map_err(|_| NodeError::Internal("checkpoint lock poisoned".into()))?;
        let Some((seq, head)) = self.store.audit_head()? else {
            return Ok(None);
        };
        if seq <= *sealed {
            return Ok(None);
        }
        if let Some(what) = self.log_changed.get() {
            return Err(log_changed_error(what));
        }
        if let Err(what) = self.check_unsealed_chain(seq, &head)? {
            tracing::error!(%what, "the ceremony log was changed outside hkms; it is not sealed any more");
            return Err(log_changed_error(self.log_changed.get_or_init(|| what)));
        }
        let time = now_millis();
        let der = self.sign_audit(&Checkpoint::message(&self.name, seq, &head, &time))?;
        let checkpoint = Checkpoint {
            v: FORMAT_VERSION,
            seq,
            head,
            time,
            node: self.name.clone(),
            key_fingerprint: self.signing.fingerprint.clone(),
            signature: hex::encode(der),
        };
        self.store.insert_checkpoint(&checkpoint)?;
        *sealed = seq;
        tracing::info!(seq, "ceremony log checkpoint signed");
        Ok(Some(checkpoint))
    }

    /// The node's signed statement that its log's head is record `seq` with hash `head` (the
    /// checkpoint an export ends on): what ties a bundle's end to the node's head, so that a
    /// bundle stopping short of it shows (docs/audit-format.md §8).
    pub fn export_statement(&self, seq: u64, head: &str) -> Result<ExportStatement, NodeError> {
        let time = now_millis();
        let der = self.sign_audit(&ExportStatement::message(&self.name, seq, head, &time))?;
        Ok(ExportStatement {
            v: WITNESS_FORMAT_VERSION,
            node: self.name.clone(),
            seq,
            head: head.to_string(),
            time,
            key_fingerprint: self.signing.fingerprint.clone(),
            signature: hex::encode(der),
        })
    }

    /// Signs `message` with the node's audit key in its token (the node's, or the audit
    /// token of `[audit.token]`; ECDSA P-256, SHA-256); returns the DER signature. Checkpoints,
    /// export statements and a witness's cosignatures.
    pub(crate) fn sign_audit(&self, message: &str) -> Result<Vec<u8>, NodeError> {
        let digest: [u8; 32] = Sha256::digest(message.as_bytes()).into();
        let raw = self.audit_key.sign_digest(&digest)?;
        der_from_raw_signature(&raw)
            .map_err(|e| NodeError::Internal(format!("audit signature: {e}")))
    }

    /// Checks that the records since the last checkpoint still chain to it and up to `head`
    /// (record `seq`): the node seals what it wrote, never a log changed under it. The inner
    /// error says where the log was changed.
    fn check_unsealed_chain(&self, seq: u64, head: &str) -> Result<Result<(), String>, NodeError> {
        let last = self.store.last_checkpoint()?;
        let (from, mut expected_prev) = match &last {
            Some(cp) => (cp.seq, None),
            None => (1, Some(GENESIS.to_string())),
        };
        let lines = self.store.audit_lines(from, seq, usize::MAX)?;
        let mut next = from;
        for (n, line) in &lines {
            if *n != next {
                return Ok(Err(format!("record {next} is missing")));
            }
            let hash = crate::audit::record::line_hash(line);
            match (&last, &expected_prev) {
                (Some(cp), None) if *n == cp.seq && hash != cp.head => {
                    return Ok(Err(format!("record {n} is not the one checkpointed")));
                }
                (_, Some(prev)) if record_prev(line) != Some(prev.as_str()) => {
                    return Ok(Err(format!(
                        "record {n} does not chain to record {}",
                        n - 1
                    )));
                }
                _ => {}
            }
            expected_prev = Some(hash);
            next = n + 1;
        }
        Ok(match expected_prev {
            Some(h) if next == seq + 1 && h == head => Ok(()),
            _ => Err(format!("the records up to {seq} are not all there")),
        })
    }
}

fn log_changed_error(what: &str) -> NodeError {
    NodeError::Internal(format!(
        "the ceremony log was changed outside hkms ({what}); the node does not seal it: restore \
         the registry from a backup and check it with `hkms audit verify`"
    ))
}

/// The `prev` of a record line as hkms writes it (the last field), without parsing the rest.
fn record_prev(line: &str) -> Option<&str> {
    let prev = line.strip_suffix("\"}")?.rsplit_once("\"prev\":\"")?.1;
    (prev.len() == 64 && prev.bytes().all(|b| b.is_ascii_hexdigit())).then_some(prev)
}
