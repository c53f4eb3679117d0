//! `hkms.v1.KeyService`: the gRPC face of the node's key use cases.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::hierarchy::KeyRecord;
use crate::node::{InField, Node, NodeError, PageAsk, input};
use crate::proto;
use crate::proto::key_service_server::KeyService;

use super::super::pipeline::{Batcher, unary, unary_once};
use super::convert::as_node_str;
use super::paging::{Budget, Pager};
use super::times;

/// The key service over one node.
pub struct KeyApi {
    node: Arc<Node>,
    gets: Batcher<proto::Key>,
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
pub fn key_to_proto(r: &KeyRecord) -> Result<proto::Key, NodeError> {
    Ok(proto::Key {
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
        created_at: Some(times::stored("a key's created_at", &r.created_at)?),
        updated_at: Some(times::stored("a key's updated_at", &r.updated_at)?),
        origin: None,
    })
}

#[tonic::async_trait]
impl KeyService for KeyApi {
    async fn generate_key(
        &self,
        request: Request<proto::GenerateKeyRequest>,
    ) -> Result<Response<proto::GenerateKeyResponse>, Status> {
        let key = unary_once(&self.node, "GenerateKey", request, |n, req, r| {
            let key_type = req
                .read("key_type", &r.key_type, input::key_type)
                .field("key_type")?;
            let k = n.keys().generate_key(req, &key_type)?;
            Ok(proto::GenerateKeyResponse {
                key: Some(key_to_proto(&k)?),
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
            let parent = input::key_id(&r.parent_id).field("parent_id")?;
            let region = input::region(&r.region).field("region")?;
            let k = n.keys().derive_sub_key(req, &parent, region)?;
            Ok(proto::DeriveSubKeyResponse {
                key: Some(key_to_proto(&k)?),
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
                let id = req.read("id", &r.id, input::key_id).field("id")?;
                let (k, origin) = n.keys().get_key(req, &id)?;
                Ok(proto::Key {
                    origin: origin.map(|o| proto::KeyOrigin {
                        issuer_node: o.origin_node,
                        issuer_key_id: o.origin_key_id,
                        package_id: o.package_id,
                        parent_kcv: o.parent_kcv,
                        card_id: o.card_id,
                    }),
                    ..key_to_proto(&k)?
                })
            })
            .await?;
        Ok(key
            .map(|k| proto::GetKeyResponse { key: Some(k) })
            .into_response())
    }

    async fn list_keys(
        &self,
        request: Request<proto::ListKeysRequest>,
    ) -> Result<Response<proto::ListKeysResponse>, Status> {
        let page = unary(&self.node, "ListKeys", request, |n, req, r| {
            // Enum fields arrive as numbers: an unknown one is refused here; UNSPECIFIED is
            // the empty word, no filter.
            let tier = as_node_str::<proto::Tier>(r.tier).field("tier")?;
            let state = as_node_str::<proto::KeyState>(r.state).field("state")?;
            let filters = [
                ("tier", tier),
                ("region", r.region.as_str()),
                ("key_type", r.key_type.as_str()),
                ("state", state),
            ];
            for (name, sent) in filters {
                if !sent.is_empty() {
                    req.param(name, sent);
                }
            }
            let filter = input::key_filter(tier, &r.region, &r.key_type, state)?;
            let pager = Pager::new("ListKeys", &filters);
            let asked = pager.ask(req, r.page_size, &r.page_token)?;
            let mut budget = Budget::new(n.max_answer_bytes());
            let page = n.keys().list_keys(
                req,
                &filter,
                PageAsk {
                    size: asked.size,
                    after: asked.after,
                    fits: &mut |k| key_to_proto(k).map_or(true, |k| budget.fits(&k)),
                },
            )?;
            Ok(proto::ListKeysResponse {
                keys: page
                    .items
                    .iter()
                    .map(key_to_proto)
                    .collect::<Result<_, _>>()?,
                next_page_token: pager.token(page.next.as_ref())?,
            })
        })
        .await?;
        Ok(page.into_response())
    }

    async fn change_key_state(
        &self,
        request: Request<proto::ChangeKeyStateRequest>,
    ) -> Result<Response<proto::ChangeKeyStateResponse>, Status> {
        let key = unary_once(&self.node, "ChangeKeyState", request, |n, req, r| {
            let state = as_node_str::<proto::KeyState>(r.state).field("state")?;
            let expected =
                as_node_str::<proto::KeyState>(r.expected_state).field("expected_state")?;
            req.param("id", &r.id);
            req.param("state", state);
            if !expected.is_empty() {
                req.param("expected_state", expected);
            }
            let id = input::key_id(&r.id).field("id")?;
            let next = input::key_state("state", state).field("state")?;
            let expected = (!expected.is_empty())
                .then(|| input::key_state("expected state", expected))
                .transpose()
                .field("expected_state")?;
            let k = n.keys().change_key_state(req, &id, next, expected)?;
            Ok(proto::ChangeKeyStateResponse {
                key: Some(key_to_proto(&k)?),
            })
        })
        .await?;
        Ok(key.into_response())
    }
}
