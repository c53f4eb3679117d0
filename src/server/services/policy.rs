//! `hkms.v1.PolicyService`: which policy is deciding (its SHA-256), and reloading it.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::node::Node;
use crate::policy::Policy;
use crate::proto;
use crate::proto::policy_service_server::PolicyService;

use super::super::pipeline::{unary, unary_once};

/// The policy service over one node.
pub struct PolicyApi {
    node: Arc<Node>,
}

impl PolicyApi {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> PolicyApi {
        PolicyApi { node }
    }
}

fn info(p: &Policy) -> proto::PolicyInfo {
    proto::PolicyInfo {
        sha256: p.sha256.clone(),
        origin: p.origin.clone(),
        key_types: p.catalogue.names().map(str::to_string).collect(),
        rules: p.rules.iter().map(|r| r.id.clone()).collect(),
        text: p.text.clone(),
    }
}

#[tonic::async_trait]
impl PolicyService for PolicyApi {
    async fn get_policy(
        &self,
        request: Request<proto::GetPolicyRequest>,
    ) -> Result<Response<proto::PolicyInfo>, Status> {
        let p = unary(&self.node, "GetPolicy", request, |n, req, _| {
            n.policies().get_policy(req)
        })
        .await?;
        Ok(p.map(|p| info(&p)).into_response())
    }

    async fn reload_policy(
        &self,
        request: Request<proto::ReloadPolicyRequest>,
    ) -> Result<Response<proto::PolicyInfo>, Status> {
        let p = unary_once(&self.node, "ReloadPolicy", request, |n, req, _| {
            let p = n.policies().reload_policy_by(req)?;
            Ok(info(&p))
        })
        .await?;
        Ok(p.into_response())
    }
}
