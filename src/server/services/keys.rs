//! `hkms.v1.KeyService`: the gRPC face of the node's key use cases.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::hierarchy::KeyRecord;
use crate::node::{Node, input};
use crate::proto;
use crate::proto::key_service_server::KeyService;

use super::super::pipeline::{Batcher, unary, unary_once};
use super::convert::as_node_str;

/// The key service over one node.
pub struct KeyApi {
    node: Arc<Node>,
    gets: Batcher<(KeyRecord, Option<crate::store::KeyOrigin>)>,
}

impl KeyApi {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> KeyApi {
        KeyApi {
            gets: Batcher::new(Arc::clone(&node), "GetKey"),
            node,
        }
    }
}

/// The wire form of a registry record.
pub fn key_to_proto(r: &KeyRecord) -> proto::Key {
    proto::Key {
        id: r.id.to_string(),
        key_type: r.key_type.as_str().to_string(),
        algorithm: proto::Algorithm::from(r.algorithm).into(),
        tier: proto::Tier::from(r.tier).into(),
        region: r.region.to_string(),
        parent_id: r
            .parent_id
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        factor: r.factor.as_ref().map(|f| f.to_hex()).unwrap_or_default(),
        kcv: r.kcv.to_hex(),
        kcv_method: proto::KcvMethod::from(r.kcv.method).into(),
        version: r.version,
        state: proto::KeyState::from(r.state).into(),
        created_at: r.created_at.clone(),
        updated_at: r.updated_at.clone(),
        origin: None,
    }
}

#[tonic::async_trait]
impl KeyService for KeyApi {
    async fn generate_key(
        &self,
        request: Request<proto::GenerateKeyRequest>,
    ) -> Result<Response<proto::GenerateKeyResponse>, Status> {
        let key = unary_once(&self.node, "GenerateKey", request, |n, req, r| {
            let key_type = req.read("key_type", &r.key_type, input::key_type)?;
            let k = n.keys().generate_key(req, &key_type)?;
            Ok(proto::GenerateKeyResponse {
                key: Some(key_to_proto(&k)),
            })
        })
        .await?;
        Ok(key.into_response())
    }

    async fn derive_sub_key(
        &self,
        request: Request<proto::DeriveSubKeyRequest>,
    ) -> Result<Response<proto::DeriveSubKeyResponse>, Status> {
        let key = unary_once(&self.node, "DeriveSubKey", request, |n, req, r| {
            req.param("parent_id", &r.parent_id);
            req.param("region", &r.region);
            let parent = input::key_id(&r.parent_id)?;
            let region = input::region(&r.region)?;
            let k = n.keys().derive_sub_key(req, &parent, region)?;
            Ok(proto::DeriveSubKeyResponse {
                key: Some(key_to_proto(&k)),
            })
        })
        .await?;
        Ok(key.into_response())
    }

    async fn get_key(
        &self,
        request: Request<proto::GetKeyRequest>,
    ) -> Result<Response<proto::GetKeyResponse>, Status> {
        let key = self
            .gets
            .run(request, |n, req, r| {
                let id = req.read("id", &r.id, input::key_id)?;
                n.keys().get_key(req, &id)
            })
            .await?;
        Ok(key
            .map(|(k, origin)| proto::GetKeyResponse {
                key: Some(proto::Key {
                    origin: origin.map(|o| proto::KeyOrigin {
                        issuer_node: o.origin_node,
                        issuer_key_id: o.origin_key_id,
                        package_id: o.package_id,
                        parent_kcv: o.parent_kcv,
                        card_id: o.card_id,
                    }),
                    ..key_to_proto(&k)
                }),
            })
            .into_response())
    }

    async fn list_keys(
        &self,
        request: Request<proto::ListKeysRequest>,
    ) -> Result<Response<proto::ListKeysResponse>, Status> {
        let keys = unary(&self.node, "ListKeys", request, |n, req, r| {
            // Enum fields arrive as numbers: an unknown one is refused here; UNSPECIFIED is
            // the empty word, no filter.
            let tier = as_node_str::<proto::Tier>(r.tier)?;
            let state = as_node_str::<proto::KeyState>(r.state)?;
            for (name, sent) in [
                ("tier", tier),
                ("region", r.region.as_str()),
                ("key_type", r.key_type.as_str()),
                ("state", state),
            ] {
                if !sent.is_empty() {
                    req.param(name, sent);
                }
            }
            let filter = input::key_filter(tier, &r.region, &r.key_type, state)?;
            n.keys().list_keys(req, &filter)
        })
        .await?;
        Ok(keys
            .map(|keys| proto::ListKeysResponse {
                keys: keys.iter().map(key_to_proto).collect(),
            })
            .into_response())
    }

    async fn change_key_state(
        &self,
        request: Request<proto::ChangeKeyStateRequest>,
    ) -> Result<Response<proto::ChangeKeyStateResponse>, Status> {
        let key = unary_once(&self.node, "ChangeKeyState", request, |n, req, r| {
            let state = as_node_str::<proto::KeyState>(r.state)?;
            let expected = as_node_str::<proto::KeyState>(r.expected_state)?;
            req.param("id", &r.id);
            req.param("state", state);
            if !expected.is_empty() {
                req.param("expected_state", expected);
            }
            let id = input::key_id(&r.id)?;
            let next = input::key_state("state", state)?;
            let expected = (!expected.is_empty())
                .then(|| input::key_state("expected state", expected))
                .transpose()?;
            let k = n.keys().change_key_state(req, &id, next, expected)?;
            Ok(proto::ChangeKeyStateResponse {
                key: Some(key_to_proto(&k)),
            })
        })
        .await?;
        Ok(key.into_response())
    }
}
