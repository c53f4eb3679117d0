//! `hkms.v1.WitnessService`: this node checks and cosigns other nodes' log checkpoints.

use std::sync::Arc;

use tonic::{Code, Request, Response, Status};

use crate::node::Node;
use crate::proto;
use crate::proto::witness_service_server::WitnessService;

use super::super::edge::metrics;
use super::super::pipeline::unary;

/// The witness service over one node.
pub struct WitnessApi {
    node: Arc<Node>,
}

impl WitnessApi {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> WitnessApi {
        WitnessApi { node }
    }
}

#[tonic::async_trait]
impl WitnessService for WitnessApi {
    async fn witness_checkpoint(
        &self,
        request: Request<proto::WitnessCheckpointRequest>,
    ) -> Result<Response<proto::WitnessCheckpointResponse>, Status> {
        let answer = unary(&self.node, "WitnessCheckpoint", request, |n, req, body| {
            n.witness().witness_checkpoint(
                req,
                &body.checkpoint,
                &body.node_key_pem,
                body.from_seq,
                &body.lines,
            )
        })
        .await
        .inspect_err(|s| {
            // A checkpoint that does not extend what this witness saw.
            if s.code() == Code::FailedPrecondition {
                metrics::witness_refusal();
            }
        })?;
        Ok(answer
            .map(|w| proto::WitnessCheckpointResponse {
                verified_seq: w.verified_seq,
                cosignature: w.cosignature.map(|c| c.to_line()).unwrap_or_default(),
            })
            .into_response())
    }
}
