//! This node as a witness of other nodes' logs: it checks that what a node sends extends what it
//! verified of that log before, records that in its own log, and cosigns the node's checkpoint
//! with its own audit key. A rewrite, fork or rollback is refused, recorded and logged as an
//! alert. A city is witnessed by its province, a province by the ministry, the ministry by
//! provinces. Formats: docs/audit-format.md §7.

use crate::audit::Checkpoint;
use crate::audit::bundle::{public_key_point, spki_sha256};
use crate::audit::consistency::{self, Inconsistency, Verified};
use crate::audit::record::{GENESIS, now_millis};
use crate::audit::verify::checkpoint_verifies;
use crate::audit::witness::{Cosignature, WITNESS_FORMAT_VERSION};
use crate::hierarchy::Region;
use crate::policy::Operation;

use super::{Core, NodeError, Reason, Request};

/// The most record lines one call may carry.
pub const MAX_WITNESS_LINES: usize = 1000;

/// The witness use case, over the node's core.
pub struct Witness<'n> {
    pub(super) core: &'n Core,
    /// Serialises witnessing, so two calls about one log never race on its state.
    pub(super) lock: &'n std::sync::Mutex<()>,
}

/// What a witness answers.
#[derive(Debug, Clone)]
pub struct Witnessed {
    /// How far the node's log is verified now.
    pub verified_seq: u64,
    /// The cosignature, once the lines reached the checkpoint.
    pub cosignature: Option<Cosignature>,
}

/// Whether a node at `witness` witnesses the log of a node at `node`: its parent, or, for the
/// ministry's log, a province.
pub fn witnesses(witness: &Region, node: &Region) -> bool {
    node.is_child_of(witness) || (*node == Region::NATIONAL && witness.is_child_of(node))
}

impl Witness<'_> {
    /// `WitnessCheckpoint`: checks `lines` (from `from_seq`) against what this witness verified
    /// of the checkpoint's node, records how far it got, and cosigns the checkpoint once the
    /// lines reach it.
    pub fn witness_checkpoint(
        &self,
        req: &mut Request,
        checkpoint_line: &str,
        node_key_pem: &str,
        from_seq: u64,
        lines: &[String],
    ) -> Result<Witnessed, NodeError> {
        let caller_region = req.caller.region;
        self.core
            .authorize(req, Operation::Witness, None, &caller_region)?;
        if !witnesses(&self.core.region(), &caller_region) {
            return Err(NodeError::because(
                Reason::NotWitnessedHere,
                format!(
                    "this node ({}) does not witness the logs of region {caller_region}: a node is \
                     witnessed by its parent, the ministry by provinces",
                    self.core.region()
                ),
            )
            .with("region", caller_region)
            .into());
        }
        let checkpoint: Checkpoint = serde_json::from_str(checkpoint_line).map_err(|e| {
            NodeError::invalid_field(
                "checkpoint",
                format!("checkpoint: not a checkpoint line: {e}"),
            )
        })?;
        req.param("node", checkpoint.node.clone());
        req.param("seq", checkpoint.seq.to_string());
        req.param("head", checkpoint.head.clone());
        req.param("from_seq", from_seq.to_string());
        req.param("lines", lines.len().to_string());
        if lines.len() > MAX_WITNESS_LINES {
            return Err(NodeError::invalid_field(
                "lines",
                format!(
                    "lines: {} lines in one call; send at most {MAX_WITNESS_LINES}",
                    lines.len()
                ),
            ));
        }
        let (der, _) = public_key_point(node_key_pem)
            .map_err(|e| NodeError::invalid_field("node_key_pem", format!("node_key_pem: {e}")))?;
        let key_sha256 = spki_sha256(&der);
        req.param("node_key_sha256", key_sha256.clone());
        if !checkpoint_verifies(&checkpoint, node_key_pem) {
            return Err(NodeError::invalid_field(
                "checkpoint",
                "checkpoint: its signature does not verify with node_key_pem",
            ));
        }
        let _one_at_a_time = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let state = self
            .core
            .store
            .witnessed(&checkpoint.node)?
            .unwrap_or_else(|| Verified {
                node_key_sha256: key_sha256.clone(),
                seq: 0,
                head: GENESIS.to_string(),
            });
        req.param("verified_before", state.seq.to_string());
        if state.node_key_sha256 != key_sha256 {
            return Err(alert(
                &checkpoint.node,
                format!(
                    "checkpoint {} of {} is signed by key {key_sha256}, but this witness knows that \
                     node's log by key {}: a log signed by another key is another log",
                    checkpoint.seq, checkpoint.node, state.node_key_sha256
                ),
            ));
        }
        let verified = match consistency::extend(&state, &checkpoint, from_seq, lines) {
            Ok(v) => v,
            Err(Inconsistency::NotExtending(why)) => {
                return Err(alert(
                    &checkpoint.node,
                    format!("{}: {why}", checkpoint.node),
                ));
            }
            Err(Inconsistency::Malformed(why)) => {
                return Err(NodeError::invalid_field("lines", format!("lines: {why}")));
            }
        };
        req.param("verified_seq", verified.seq.to_string());
        let cosignature = if verified.seq == checkpoint.seq && checkpoint.seq > 0 {
            Some(self.cosign(&checkpoint, &key_sha256)?)
        } else {
            None
        };
        req.param("cosigned", cosignature.is_some().to_string());
        let node = checkpoint.node.clone();
        self.core.commit(req, None, |d| {
            self.core
                .store
                .set_witnessed_audited(&node, &verified, d)
                .map(|r| ((), Some(r.seq)))
        })?;
        Ok(Witnessed {
            verified_seq: verified.seq,
            cosignature,
        })
    }

    fn cosign(
        &self,
        checkpoint: &Checkpoint,
        node_key_sha256: &str,
    ) -> Result<Cosignature, NodeError> {
        let time = now_millis();
        let witness = self.core.name().to_string();
        let message = Cosignature::message(
            &checkpoint.node,
            checkpoint.seq,
            &checkpoint.head,
            node_key_sha256,
            &witness,
            &time,
        );
        let signature = self.core.sign_audit(&message)?;
        let (der, _) = public_key_point(&self.core.signing().spki_pem)
            .map_err(|e| NodeError::Internal(format!("audit signing key: {e}")))?;
        Ok(Cosignature {
            v: WITNESS_FORMAT_VERSION,
            node: checkpoint.node.clone(),
            seq: checkpoint.seq,
            head: checkpoint.head.clone(),
            node_key_sha256: node_key_sha256.to_string(),
            witness,
            witness_key: hex::encode(der),
            time,
            signature: hex::encode(signature),
        })
    }
}

/// A checkpoint that does not extend what this witness saw: an alert in the server's log, and
/// a refusal that the pipeline records and the metrics count.
fn alert(node: &str, why: String) -> NodeError {
    tracing::error!(witnessed_node = %node, %why, "ALERT: witness refused a checkpoint");
    NodeError::because(
        Reason::CheckpointRefused,
        format!("witness refused the checkpoint: {why}"),
    )
    .with("node", node)
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_witness_children_and_provinces_the_ministry() {
        let r = |s: &str| s.parse::<Region>().unwrap();
        assert!(witnesses(&r("440000"), &r("440100")));
        assert!(witnesses(&Region::NATIONAL, &r("440000")));
        assert!(witnesses(&r("440000"), &Region::NATIONAL));
        assert!(!witnesses(&r("440000"), &r("450100")));
        assert!(!witnesses(&r("440100"), &r("440000")));
        assert!(!witnesses(&r("440100"), &r("440100")));
        assert!(!witnesses(&Region::NATIONAL, &r("440100")));
    }
}
