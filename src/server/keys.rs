//! `hkms.v1.KeyService`: the gRPC face of the node's key use cases.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::node::{Node, NodeError};
use crate::policy::Identity;
use crate::proto;
use crate::proto::key_service_server::KeyService;
use crate::store::KeyRecord;

use super::identity::caller;
use super::status::to_status;

/// The key service over one node.
pub struct KeyApi {
    node: Arc<Node>,
}

impl KeyApi {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> KeyApi {
        KeyApi { node }
    }
}

/// Runs a (blocking) use case on a blocking thread for an authenticated caller and logs its
/// outcome.
pub(crate) async fn run<R, T, F>(
    node: &Arc<Node>,
    op: &'static str,
    request: Request<R>,
    f: F,
) -> Result<T, Status>
where
    F: FnOnce(&Node, &Identity, R) -> Result<T, NodeError> + Send + 'static,
    R: Send + 'static,
    T: Send + 'static,
{
    let who = caller(&request).inspect_err(|s| {
        tracing::warn!(op, error = %s.message(), "unauthenticated");
    })?;
    let body = request.into_inner();
    let node = Arc::clone(node);
    let name = who.to_string();
    let outcome = tokio::task::spawn_blocking(move || f(&node, &who, body))
        .await
        .map_err(|e| Status::internal(format!("{op} did not finish: {e}")))?;
    match outcome {
        Ok(v) => {
            tracing::info!(op, caller = %name, "ok");
            Ok(v)
        }
        Err(e) => {
            let status = to_status(&e);
            tracing::warn!(op, caller = %name, code = ?status.code(), error = %e, "refused");
            Err(status)
        }
    }
}

/// The wire form of a registry record.
pub fn key_to_proto(r: &KeyRecord) -> proto::Key {
    proto::Key {
        id: r.id.to_string(),
        key_type: r.key_type.as_str().to_string(),
        algorithm: r.algorithm.as_str().to_string(),
        tier: r.tier.as_str().to_string(),
        region: r.region.to_string(),
        parent_id: r
            .parent_id
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        factor: r.factor.as_ref().map(|f| f.to_hex()).unwrap_or_default(),
        kcv: r.kcv.to_hex(),
        kcv_method: r.kcv.method.as_str().to_string(),
        version: r.version,
        state: r.state.as_str().to_string(),
        created_at: r.created_at.clone(),
        updated_at: r.updated_at.clone(),
    }
}

#[tonic::async_trait]
impl KeyService for KeyApi {
    async fn generate_key(
        &self,
        request: Request<proto::GenerateKeyRequest>,
    ) -> Result<Response<proto::GenerateKeyResponse>, Status> {
        let key = run(&self.node, "GenerateKey", request, |n, who, r| {
            n.generate_key(who, &r.key_type)
        })
        .await?;
        Ok(Response::new(proto::GenerateKeyResponse {
            key: Some(key_to_proto(&key)),
        }))
    }

    async fn derive_sub_key(
        &self,
        request: Request<proto::DeriveSubKeyRequest>,
    ) -> Result<Response<proto::DeriveSubKeyResponse>, Status> {
        let key = run(&self.node, "DeriveSubKey", request, |n, who, r| {
            n.derive_sub_key(who, &r.parent_id, &r.region)
        })
        .await?;
        Ok(Response::new(proto::DeriveSubKeyResponse {
            key: Some(key_to_proto(&key)),
        }))
    }

    async fn get_key(
        &self,
        request: Request<proto::GetKeyRequest>,
    ) -> Result<Response<proto::GetKeyResponse>, Status> {
        let key = run(&self.node, "GetKey", request, |n, who, r| {
            n.get_key(who, &r.id)
        })
        .await?;
        Ok(Response::new(proto::GetKeyResponse {
            key: Some(key_to_proto(&key)),
        }))
    }

    async fn list_keys(
        &self,
        request: Request<proto::ListKeysRequest>,
    ) -> Result<Response<proto::ListKeysResponse>, Status> {
        let keys = run(&self.node, "ListKeys", request, |n, who, r| {
            n.list_keys(who, &r.tier, &r.region, &r.key_type, &r.state)
        })
        .await?;
        Ok(Response::new(proto::ListKeysResponse {
            keys: keys.iter().map(key_to_proto).collect(),
        }))
    }

    async fn change_key_state(
        &self,
        request: Request<proto::ChangeKeyStateRequest>,
    ) -> Result<Response<proto::ChangeKeyStateResponse>, Status> {
        let key = run(&self.node, "ChangeKeyState", request, |n, who, r| {
            let expected = (!r.expected_state.is_empty()).then_some(r.expected_state.as_str());
            n.change_key_state(who, &r.id, &r.state, expected)
        })
        .await?;
        Ok(Response::new(proto::ChangeKeyStateResponse {
            key: Some(key_to_proto(&key)),
        }))
    }
}
