//! `hkms.v1.TransportService`: transport key cards and key packages.

use std::sync::Arc;

use secrecy::SecretString;
use tonic::{Request, Response, Status};

use crate::node::{InField, Node, NodeError, PageAsk, input};
use crate::proto;
use crate::proto::transport_service_server::TransportService;
use crate::transport::TransportKey;

use super::super::pipeline::{Batcher, unary, unary_once};
use super::keys::key_to_proto;
use super::paging::{Budget, Pager};
use super::times;

/// The transport service over one node.
pub struct TransportApi {
    node: Arc<Node>,
    exports: Batcher<proto::ExportKeyResponse>,
}

impl TransportApi {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> TransportApi {
        TransportApi {
            exports: Batcher::new(Arc::clone(&node), "ExportKey"),
            node,
        }
    }
}

fn info(t: &TransportKey) -> Result<proto::TransportKeyInfo, NodeError> {
    Ok(proto::TransportKeyInfo {
        card_id: t.card_id.clone(),
        region: t.region.to_string(),
        role: proto::TransportKeyRole::from(t.role).into(),
        kcv: t.kcv.clone(),
        ceremony_id: t.ceremony_id.clone().unwrap_or_default(),
        created_at: Some(times::stored(
            "a transport key's created_at",
            &t.created_at,
        )?),
    })
}

#[tonic::async_trait]
impl TransportService for TransportApi {
    async fn issue_card(
        &self,
        request: Request<proto::IssueCardRequest>,
    ) -> Result<Response<proto::TransportKeyInfo>, Status> {
        let row = unary_once(&self.node, "IssueCard", request, |n, req, mut r| {
            let pin = SecretString::from(std::mem::take(&mut r.card_pin));
            let ceremony = (!r.ceremony_id.is_empty()).then_some(r.ceremony_id.as_str());
            req.param("region", &r.region);
            req.param("card", &r.card_label);
            let region = input::region(&r.region).field("region")?;
            let row = n
                .transport()
                .issue_card(req, region, &r.card_label, &pin, ceremony)?;
            info(&row)
        })
        .await?;
        Ok(row.into_response())
    }

    async fn load_card(
        &self,
        request: Request<proto::LoadCardRequest>,
    ) -> Result<Response<proto::TransportKeyInfo>, Status> {
        let row = unary_once(&self.node, "LoadCard", request, |n, req, mut r| {
            let pin = SecretString::from(std::mem::take(&mut r.card_pin));
            let so_pin = SecretString::from(std::mem::take(&mut r.card_so_pin));
            let card = crate::node::CardAccess {
                label: &r.card_label,
                pin: &pin,
                so_pin: &so_pin,
            };
            let row = n
                .transport()
                .load_card(req, &card, &r.card_id, &r.expected_kcv)?;
            info(&row)
        })
        .await?;
        Ok(row.into_response())
    }

    async fn list_transport_keys(
        &self,
        request: Request<proto::ListTransportKeysRequest>,
    ) -> Result<Response<proto::ListTransportKeysResponse>, Status> {
        let page = unary(&self.node, "ListTransportKeys", request, |n, req, r| {
            let pager = Pager::new("ListTransportKeys", &[]);
            let asked = pager.ask(req, r.page_size, &r.page_token)?;
            let mut budget = Budget::new(n.max_answer_bytes());
            let page = n.transport().list_transport_keys(
                req,
                PageAsk {
                    size: asked.size,
                    after: asked.after,
                    fits: &mut |t| info(t).map_or(true, |t| budget.fits(&t)),
                },
            )?;
            Ok(proto::ListTransportKeysResponse {
                transport_keys: page.items.iter().map(info).collect::<Result<_, _>>()?,
                next_page_token: pager.token(page.next.as_ref())?,
            })
        })
        .await?;
        Ok(page.into_response())
    }

    async fn export_key(
        &self,
        request: Request<proto::ExportKeyRequest>,
    ) -> Result<Response<proto::ExportKeyResponse>, Status> {
        let package = self
            .exports
            .run_once(request, |n, req, r| {
                let card = (!r.card_id.is_empty()).then_some(r.card_id.as_str());
                req.param("key_id", &r.key_id);
                req.param("recipient_region", &r.recipient_region);
                let key_id = input::key_id(&r.key_id).field("key_id")?;
                let recipient = input::region(&r.recipient_region).field("recipient_region")?;
                let package = n.transport().export_key(req, &key_id, recipient, card)?;
                Ok(proto::ExportKeyResponse { package })
            })
            .await?;
        Ok(package.into_response())
    }

    async fn import_key(
        &self,
        request: Request<proto::ImportKeyRequest>,
    ) -> Result<Response<proto::ImportKeyResponse>, Status> {
        let key = unary_once(&self.node, "ImportKey", request, |n, req, r| {
            let key = n.transport().import_key(req, &r.package)?;
            Ok(proto::ImportKeyResponse {
                key: Some(key_to_proto(&key)?),
            })
        })
        .await?;
        Ok(key.into_response())
    }
}
