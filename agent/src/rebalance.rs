//! The rebalancer in the agent (RB-01..RB-05): the leader's `rebalance` duty, one
//! [`tern_migrate::rebalance::round`] every `rebalance.interval_ms`, and the
//! `Rebalance` gRPC service (plan, apply, cancel, status, configure, and UC-2's resize).

use crate::auth::authorize;
use crate::convert::{self, status};
use crate::limits::MessageLimits;
use crate::node::Node;
use std::sync::Arc;
use tern_cluster::{Cluster, Error};
pub use tern_migrate::rebalance::Rounds;
use tern_migrate::rebalance::{self as rb, Approval, PlanRequest};
use tern_proto::v1 as pb;
use tokio_util::sync::CancellationToken;
use tonic::{Request as GrpcRequest, Response, Status};
use tracing::warn;

/// How often the leader drives an applying plan (a shown plan applied by a user
/// starts within this), whatever `rebalance.interval_ms`.
pub const DRIVE_EVERY_MS: u64 = 1000;

/// The leader duty: a full round every `rebalance.interval_ms` while this member
/// leads, and the applying plan driven every [`DRIVE_EVERY_MS`] in between.
pub(crate) async fn run(node: Node, term: CancellationToken) {
    let interval = node.config.rebalance.interval_ms;
    let every = DRIVE_EVERY_MS.min(interval);
    let mut ticks = tokio::time::interval(std::time::Duration::from_millis(every));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_measured: Option<u64> = None;
    loop {
        tokio::select! {
            () = term.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let now = node.now_ms();
        let measure = last_measured.is_none_or(|t| now.saturating_sub(t) + every / 2 >= interval);
        if measure {
            last_measured = Some(now);
        }
        // A move's migration is a call to its source's agent that lasts as long as the
        // migration; it runs on a task of its own, ended with the term (the source's
        // coordinator goes on regardless, and the next leader follows the operation).
        let spawn = |addr: String, req: tern_cluster::MigrateRequest| {
            let (node, term) = (node.clone(), term.clone());
            node.clone().spawn(async move {
                let domain = req.domain.clone();
                tokio::select! {
                    () = term.cancelled() => {}
                    r = node.peers().migrate(&addr, req) => {
                        if let Err(e) = r {
                            warn!(%domain, error = %e, "rebalance: the move's migration call failed");
                        }
                    }
                }
            });
        };
        if let Err(e) = rb::round(&node, &node.rebalancer, &spawn, measure).await {
            warn!(error = %e, "rebalance: round failed; trying again next round");
        }
    }
}

fn plan_pb(node: &Node, id: u64) -> Result<pb::RebalancePlan, Status> {
    node.read(|s| s.plan(id).map(|p| convert::plan_to_pb(p, &rb::move_states(s, p))))
        .ok_or_else(|| Status::not_found(format!("no rebalance plan {id}")))
}

pub struct RebalanceService {
    pub node: Node,
    pub registry: Arc<tern_migrate::coordinator::Registry>,
}

/// How long a resize passed on to the guest's host may take: its ldm steps, each with
/// its own deadline, and a few Raft writes.
const RESIZE_FORWARD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(120);

impl RebalanceService {
    /// The guest's host runs its resize; another member passes the call on.
    async fn forward_resize(&self, addr: &str, req: pb::ResizeRequest) -> Result<Response<pb::ResizeResponse>, Status> {
        let mut client =
            pb::rebalance_client::RebalanceClient::new(self.node.channel(addr).map_err(status)?).with_message_limits();
        let forwarded = crate::transport::request_within(req, RESIZE_FORWARD_DEADLINE);
        client.resize(forwarded).await
    }

    /// The leader's answer (rounds held live there), forwarded when this member is not it.
    async fn forward_status(
        &self,
        req: pb::RebalanceStatusRequest,
    ) -> Result<Response<pb::RebalanceStatusResponse>, Status> {
        let (_, addr) = self.node.leader().ok_or_else(|| Status::unavailable("no leader is known yet; retry"))?;
        let mut client =
            pb::rebalance_client::RebalanceClient::new(self.node.channel(&addr).map_err(status)?).with_message_limits();
        let forwarded = crate::transport::request_within(
            req,
            std::time::Duration::from_millis(tern_cluster::peer::CALL_DEADLINE_MS),
        );
        client.status(forwarded).await
    }
}

#[tonic::async_trait]
impl pb::rebalance_server::Rebalance for RebalanceService {
    async fn plan(
        &self,
        req: GrpcRequest<pb::RebalancePlanRequest>,
    ) -> Result<Response<pb::RebalancePlanResponse>, Status> {
        let caller = authorize(&self.node, &req, "/tern.v1.Rebalance/Plan")?;
        let r = req.into_inner();
        let level = match r.level {
            0 => None,
            l => Some(
                u8::try_from(l)
                    .ok()
                    .and_then(|l| tern_model::rebalance::Level::new(l).ok())
                    .ok_or_else(|| Status::invalid_argument(format!("level {l} is not 1 to 5")))?,
            ),
        };
        let growth = tern_model::rebalance::Growth {
            cores: (r.grow_cores != 0).then_some(r.grow_cores),
            memory: (r.grow_memory_bytes != 0).then_some(r.grow_memory_bytes),
        };
        let purpose = match (r.make_room_domain.is_empty(), r.make_room_target.is_empty(), r.grow_domain.is_empty()) {
            (true, true, true) => tern_raft_store::PlanPurpose::Balance,
            (false, false, true) => {
                tern_raft_store::PlanPurpose::MakeRoom { domain: r.make_room_domain, target: r.make_room_target }
            }
            (true, true, false) => tern_raft_store::PlanPurpose::Grow { domain: r.grow_domain, growth },
            (_, _, false) => return Err(Status::invalid_argument("a plan is either make-room or grow, not both")),
            _ => return Err(Status::invalid_argument("make-room needs both a domain and a target host")),
        };
        let node = &self.node;
        let (purpose, plan, digest) = rb::make_plan(node, &PlanRequest { level, purpose }).await.map_err(status)?;
        let id = rb::record(node, &caller.actor(), purpose, plan, digest).await.map_err(status)?;
        // Committed at the leader; this member may not have applied it yet.
        Ok(Response::new(pb::RebalancePlanResponse { plan: Some(wait_for_plan(node, id).await?) }))
    }

    async fn apply(
        &self,
        req: GrpcRequest<pb::RebalanceApplyRequest>,
    ) -> Result<Response<pb::RebalanceApplyResponse>, Status> {
        let caller = authorize(&self.node, &req, "/tern.v1.Rebalance/Apply")?;
        let id = req.into_inner().id;
        let node = &self.node;
        let approval = rb::approve(node, &caller.actor(), id).await.map_err(status)?;
        let (id, replanned, message) = match approval {
            Approval::Applying { id } => (id, false, format!("plan {id} is applying")),
            Approval::Replanned { stale, id } => (
                id,
                true,
                format!(
                    "the cluster changed since plan {stale} was made (RB-04); here is plan {id}, made now: apply it to run it"
                ),
            ),
        };
        // This member may not have applied the new record yet.
        let plan = wait_for_plan(node, id).await?;
        Ok(Response::new(pb::RebalanceApplyResponse { plan: Some(plan), replanned, message }))
    }

    async fn cancel(
        &self,
        req: GrpcRequest<pb::RebalanceCancelRequest>,
    ) -> Result<Response<pb::RebalancePlan>, Status> {
        let caller = authorize(&self.node, &req, "/tern.v1.Rebalance/Cancel")?;
        let id = req.into_inner().id;
        rb::cancel(&self.node, &caller.actor(), id).await.map_err(status)?;
        Ok(Response::new(wait_for_plan(&self.node, id).await?))
    }

    async fn status(
        &self,
        req: GrpcRequest<pb::RebalanceStatusRequest>,
    ) -> Result<Response<pb::RebalanceStatusResponse>, Status> {
        authorize(&self.node, &req, "/tern.v1.Rebalance/Status")?;
        let node = &self.node;
        if !node.is_leader() {
            return self.forward_status(req.into_inner()).await;
        }
        let limit = match req.into_inner().limit {
            0 => 10,
            n => n.min(tern_raft_store::limits::PLANS_KEPT_MAX as u32),
        } as usize;
        let now = node.now_ms();
        let rounds = node.rebalancer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let reply = node.read(|s| {
            let view = s.planning_view(now);
            pb::RebalanceStatusResponse {
                config: Some(convert::rebalance_config_to_pb(s.rebalance())),
                imbalance_ppm: tern_model::rebalance::imbalance_ppm(&view.input()),
                act_above_ppm: s.rebalance().level.act_above().map(|a| (a * 1_000_000.0).round() as u32),
                rounds_held: rounds.held,
                plans: s
                    .plans()
                    .values()
                    .rev()
                    .take(limit)
                    .map(|p| convert::plan_to_pb(p, &rb::move_states(s, p)))
                    .collect(),
                moves_in_flight: rb::moves_in_flight(s),
                leader: node.name.clone(),
            }
        });
        Ok(Response::new(reply))
    }

    async fn resize(&self, req: GrpcRequest<pb::ResizeRequest>) -> Result<Response<pb::ResizeResponse>, Status> {
        let caller = authorize(&self.node, &req, "/tern.v1.Rebalance/Resize")?;
        let r = req.into_inner();
        let home = self
            .node
            .read(|s| s.domain(&r.domain).map(|d| (d.host.clone(), s.host(&d.host).map(|h| h.address.clone()))));
        match home {
            // A member passes the call on once; a member's call is answered here.
            Some((host, Some(addr))) if host != self.node.name && caller.node().is_none() => {
                self.forward_resize(&addr, r).await
            }
            Some((host, None)) if host != self.node.name => {
                Err(Status::unavailable(format!("{} runs on {host}, whose address is unknown", r.domain)))
            }
            _ => {
                let req = convert::resize_request(r).map_err(status)?;
                let c: Arc<dyn Cluster> = Arc::new(self.node.clone());
                let report = tern_migrate::resize::resize(c, self.registry.clone(), req).await.map_err(status)?;
                Ok(Response::new(convert::resize_report_to_pb(&report)))
            }
        }
    }

    async fn configure(&self, req: GrpcRequest<pb::RebalanceConfig>) -> Result<Response<pb::RebalanceConfig>, Status> {
        let caller = authorize(&self.node, &req, "/tern.v1.Rebalance/Configure")?;
        let config = convert::rebalance_config(req.into_inner()).map_err(status)?;
        let command = tern_raft_store::Command::SetRebalance { config: config.clone() };
        self.node.propose(&caller.actor(), command).await.map_err(status)?;
        Ok(Response::new(convert::rebalance_config_to_pb(&config)))
    }
}

/// Plan `id` once this member has applied it (a few seconds at most).
async fn wait_for_plan(node: &Node, id: u64) -> Result<pb::RebalancePlan, Status> {
    let from = node.now_ms();
    loop {
        match plan_pb(node, id) {
            Ok(p) => return Ok(p),
            Err(_) if node.now_ms().saturating_sub(from) < 5_000 => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(_) => return Err(status(Error::Unavailable(format!("plan {id} is not applied here yet; ask again")))),
        }
    }
}
