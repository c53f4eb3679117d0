//! `hkms.v1.CeremonyService`: dual control over the gRPC API.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use crate::node::{Ceremony, InField, Node, NodeError, PageAsk, input};
use crate::proto;
use crate::proto::ceremony_service_server::CeremonyService;

use super::super::pipeline::{unary, unary_once};
use super::convert::as_node_str;
use super::paging::{Budget, Pager};
use super::times;

/// The ceremony service over one node.
pub struct CeremonyApi {
    node: Arc<Node>,
}

impl CeremonyApi {
    /// Serves `node`.
    pub fn new(node: Arc<Node>) -> CeremonyApi {
        CeremonyApi { node }
    }
}

/// Clears, now and then, the clear components of ceremonies that can no longer run. Runs until
/// aborted.
pub async fn sweep_components(node: Arc<Node>) {
    let mut every = tokio::time::interval(node.ceremonies().component_sweep_every());
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let n = Arc::clone(&node);
        if let Ok(cleared) =
            tokio::task::spawn_blocking(move || n.ceremonies().forget_lapsed_components()).await
            && cleared > 0
        {
            tracing::info!(
                ceremonies = cleared,
                "components of lapsed ceremonies cleared"
            );
        }
    }
}

/// The wire form of a ceremony.
pub fn ceremony_to_proto(c: &Ceremony) -> Result<proto::CeremonyInfo, NodeError> {
    Ok(proto::CeremonyInfo {
        id: c.id.clone(),
        operation: proto::Operation::from(c.action.operation()).into(),
        params: c.action.params().into_iter().collect(),
        opener: c.opener.clone(),
        quorum: c.quorum,
        approvals: c
            .approvals
            .iter()
            .map(|a| {
                Ok(proto::Approval {
                    approver: a.approver.clone(),
                    approved_at: Some(times::stored("an approval's time", &a.approved_at)?),
                    person: a.person.clone().unwrap_or_default(),
                })
            })
            .collect::<Result<_, NodeError>>()?,
        created_at: Some(times::stored("a ceremony's created_at", &c.created_at)?),
        expires_at: Some(times::of_unix_seconds(c.expires_at)),
        state: proto::CeremonyState::from(c.state).into(),
        result: c.result.clone(),
        components_entered: u32::try_from(c.components_entered).unwrap_or(u32::MAX),
    })
}

#[tonic::async_trait]
impl CeremonyService for CeremonyApi {
    async fn open_ceremony(
        &self,
        request: Request<proto::OpenCeremonyRequest>,
    ) -> Result<Response<proto::CeremonyInfo>, Status> {
        let c = unary_once(&self.node, "OpenCeremony", request, |n, req, r| {
            let operation = as_node_str::<proto::Operation>(r.operation).field("operation")?;
            let params = r.params.into_iter().collect();
            let action = input::ceremony_action(req, operation, &params)?;
            ceremony_to_proto(&n.ceremonies().open_ceremony(req, action)?)
        })
        .await?;
        Ok(c.into_response())
    }

    async fn approve_ceremony(
        &self,
        request: Request<proto::CeremonyId>,
    ) -> Result<Response<proto::CeremonyInfo>, Status> {
        let c = unary_once(&self.node, "ApproveCeremony", request, |n, req, r| {
            let id = req
                .read("ceremony", &r.id, input::ceremony_id)
                .field("id")?;
            ceremony_to_proto(&n.ceremonies().approve_ceremony(req, &id)?)
        })
        .await?;
        Ok(c.into_response())
    }

    async fn enter_component(
        &self,
        request: Request<proto::EnterComponentRequest>,
    ) -> Result<Response<proto::CeremonyInfo>, Status> {
        let c = unary_once(&self.node, "EnterComponent", request, |n, req, mut r| {
            let component = Zeroizing::new(std::mem::take(&mut r.component));
            let id = req
                .read("ceremony", &r.id, input::ceremony_id)
                .field("id")?;
            let c = n
                .ceremonies()
                .enter_component(req, &id, component, &r.kcv)?;
            ceremony_to_proto(&c)
        })
        .await?;
        Ok(c.into_response())
    }

    async fn cancel_ceremony(
        &self,
        request: Request<proto::CeremonyId>,
    ) -> Result<Response<proto::CeremonyInfo>, Status> {
        let c = unary_once(&self.node, "CancelCeremony", request, |n, req, r| {
            let id = req
                .read("ceremony", &r.id, input::ceremony_id)
                .field("id")?;
            ceremony_to_proto(&n.ceremonies().cancel_ceremony(req, &id)?)
        })
        .await?;
        Ok(c.into_response())
    }

    async fn get_ceremony(
        &self,
        request: Request<proto::CeremonyId>,
    ) -> Result<Response<proto::CeremonyInfo>, Status> {
        let c = unary(&self.node, "GetCeremony", request, |n, req, r| {
            let id = req
                .read("ceremony", &r.id, input::ceremony_id)
                .field("id")?;
            ceremony_to_proto(&n.ceremonies().get_ceremony(req, &id)?)
        })
        .await?;
        Ok(c.into_response())
    }

    async fn list_ceremonies(
        &self,
        request: Request<proto::ListCeremoniesRequest>,
    ) -> Result<Response<proto::ListCeremoniesResponse>, Status> {
        let page = unary(&self.node, "ListCeremonies", request, |n, req, r| {
            let state = as_node_str::<proto::CeremonyState>(r.state).field("state")?;
            if !state.is_empty() {
                req.param("state", state);
            }
            let pager = Pager::new("ListCeremonies", &[("state", state)]);
            let state = input::ceremony_state(state).field("state")?;
            let asked = pager.ask(req, r.page_size, &r.page_token)?;
            let mut budget = Budget::new(n.max_answer_bytes());
            let page = n.ceremonies().list_ceremonies(
                req,
                state,
                PageAsk {
                    size: asked.size,
                    after: asked.after,
                    fits: &mut |c| ceremony_to_proto(c).map_or(true, |c| budget.fits(&c)),
                },
            )?;
            Ok(proto::ListCeremoniesResponse {
                ceremonies: page
                    .items
                    .iter()
                    .map(ceremony_to_proto)
                    .collect::<Result<_, _>>()?,
                next_page_token: pager.token(page.next.as_ref())?,
            })
        })
        .await?;
        Ok(page.into_response())
    }
}
