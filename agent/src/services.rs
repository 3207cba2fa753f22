//! The agent's gRPC services: Raft (peers), Cluster (membership, status, forwarded
//! writes), Inventory (ldm-style listings from the replicated state), and Migration,
//! Users and Hosts over `tern-migrate` and `tern-cluster`. Each handler converts its
//! request (`convert`), calls the library, and maps the seam's error to a status once.

use crate::auth::{self, authorize};
use crate::convert::{self, status};
use crate::membership;
use crate::node::Node;
use crate::raft_net::{decode, encode};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::Arc;
use tern_cluster::Error;
use tern_migrate::coordinator::{self, Registry};
use tern_migrate::{hosts, target};
use tern_proto::v1 as pb;
use tern_raft_store::{NodeId, Profile, Request, TypeConfig};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request as GrpcRequest, Response, Status};
use tracing::{Instrument, info, instrument};

fn bad_payload(e: String) -> Status {
    Status::invalid_argument(e)
}

fn reply<T: serde::Serialize>(value: &T) -> Result<Response<pb::RaftPayload>, Status> {
    let data = encode(value).map_err(|e| Status::internal(format!("encoding Raft reply: {e}")))?;
    Ok(Response::new(pb::RaftPayload { data }))
}

pub struct RaftService(pub Node);

impl RaftService {
    /// Refuses a message meant for another member id (this agent's disk was replaced
    /// and its old id is still in the membership): UNAVAILABLE, so the sender treats
    /// that member as unreachable.
    fn check_target<T>(&self, req: &GrpcRequest<T>, method: &str) -> Result<(), Status> {
        authorize(&self.0, req, method)?;
        let Some(value) = req.metadata().get(crate::raft_net::TARGET_ID_HEADER) else {
            return Err(Status::invalid_argument(format!(
                "a Raft message must name its target member ({} header)",
                crate::raft_net::TARGET_ID_HEADER
            )));
        };
        match value.to_str().ok().and_then(|v| v.parse::<NodeId>().ok()) {
            Some(target) if target == self.0.id => Ok(()),
            Some(target) => Err(Status::unavailable(format!(
                "member {target} is not here: {} is member {} now",
                self.0.address, self.0.id
            ))),
            None => Err(Status::invalid_argument("malformed Raft target id")),
        }
    }
}

#[tonic::async_trait]
impl pb::raft_server::Raft for RaftService {
    async fn append_entries(&self, req: GrpcRequest<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        self.check_target(&req, "/tern.v1.Raft/AppendEntries")?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&req.into_inner().data).map_err(bad_payload)?;
        reply(&self.0.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: GrpcRequest<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        self.check_target(&req, "/tern.v1.Raft/Vote")?;
        let rpc: VoteRequest<NodeId> = decode(&req.into_inner().data).map_err(bad_payload)?;
        reply(&self.0.raft.vote(rpc).await)
    }

    async fn install_snapshot(&self, req: GrpcRequest<pb::RaftPayload>) -> Result<Response<pb::RaftPayload>, Status> {
        self.check_target(&req, "/tern.v1.Raft/InstallSnapshot")?;
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(&req.into_inner().data).map_err(bad_payload)?;
        reply(&self.0.raft.install_snapshot(rpc).await)
    }
}

pub struct ClusterService(pub Node);

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterService {
    #[instrument(skip_all, fields(node = %self.0.name, joining = %req.get_ref().name))]
    async fn join(&self, req: GrpcRequest<pb::JoinRequest>) -> Result<Response<pb::JoinResponse>, Status> {
        let caller = authorize(&self.0, &req, "/tern.v1.Cluster/Join")?;
        let j = req.into_inner();
        // A node joins as the name its certificate carries, at the leader itself (a
        // forwarded join would carry the forwarder's identity, not the joiner's).
        if caller.node() != Some(j.name.as_str()) {
            return Err(Status::permission_denied(format!(
                "{} may not join as {:?}: a node joins under its certificate's name",
                caller.actor(),
                j.name
            )));
        }
        use crate::limits::{ADDRESS_BYTES_MAX, JOIN_NAME_BYTES_MAX};
        if j.node_id == 0
            || j.name.is_empty()
            || j.address.is_empty()
            || j.address.len() > ADDRESS_BYTES_MAX
            || j.name.len() > JOIN_NAME_BYTES_MAX
        {
            return Err(Status::invalid_argument(format!(
                "join needs a non-zero node_id, a name (<= {JOIN_NAME_BYTES_MAX}) and an address (<= {ADDRESS_BYTES_MAX})"
            )));
        }
        let node = &self.0;
        if node.raft.metrics().borrow().current_leader != Some(node.id) {
            return Err(status(Error::NotLeader { leader: node.leader().map(|(_, addr)| addr) }));
        }
        if let Some(refusal) = membership::removed_refusal(node, j.node_id, &j.name) {
            return Err(refusal);
        }
        membership::admit(node, j.node_id, &j.name, &j.address).await?;
        info!(node_id = j.node_id, address = %j.address, "admitted as learner");
        let members = self.status_members().await;
        Ok(Response::new(pb::JoinResponse { leader_id: node.id, members }))
    }

    async fn status(&self, req: GrpcRequest<pb::StatusRequest>) -> Result<Response<pb::ClusterStatus>, Status> {
        authorize(&self.0, &req, "/tern.v1.Cluster/Status")?;
        let node = &self.0;
        let m = node.raft.metrics().borrow().clone();
        let members = self.status_members().await;
        let commit_index = membership::commit_index(&m);
        Ok(Response::new(pb::ClusterStatus {
            node_id: node.id,
            node_name: node.name.clone(),
            leader_id: m.current_leader.unwrap_or(0),
            term: m.current_term,
            commit_index,
            applied_index: m.last_applied.map_or(0, |l| l.index),
            members,
            hypervisor: node.hypervisor.kind().to_string(),
        }))
    }

    async fn propose(&self, req: GrpcRequest<pb::ProposeRequest>) -> Result<Response<pb::ProposeResponse>, Status> {
        let caller = authorize(&self.0, &req, "/tern.v1.Cluster/Propose")?;
        let mut request: Request = decode(&req.into_inner().request).map_err(bad_payload)?;
        crate::telemetry::annotate("tern.command", request.command.name());
        crate::telemetry::annotate("tern.actor", request.actor.clone());
        forwarded_checked(&self.0, &caller, &request)?;
        // The leader stamps every write it takes (`Node::propose_here`, item 4 of the
        // trust rules): a member whose clock runs ahead cannot lapse leases early.
        // A member's own write comes from that member; a user's call it passes on
        // carries the user's address, as the member that took the call saw it.
        if request.from.is_empty() {
            request.from = crate::call_context::caller_addr();
        }
        // Only the leader takes forwarded writes: a follower answers with the hint, so a
        // write never bounces between followers.
        let (result, log_index) = match self.0.propose_here(request).await {
            Ok(applied) => (Ok(applied.outcome), applied.log_id.index),
            Err(tern_raft_store::Error::Rejected(r)) => (Err(r), 0),
            Err(e) => return Err(status(e.into())),
        };
        let result: Result<tern_raft_store::Outcome, tern_raft_store::Rejection> = result;
        let response = encode(&result).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ProposeResponse { response, log_index }))
    }

    async fn audit(&self, req: GrpcRequest<pb::AuditRequest>) -> Result<Response<pb::AuditResponse>, Status> {
        authorize(&self.0, &req, "/tern.v1.Cluster/Audit")?;
        Ok(Response::new(pb::AuditResponse { entries: self.audit_entries(req.get_ref()) }))
    }

    async fn remove_member(&self, req: GrpcRequest<pb::MemberRequest>) -> Result<Response<pb::MemberResponse>, Status> {
        let caller = authorize(&self.0, &req, "/tern.v1.Cluster/RemoveMember")?;
        let name = req.into_inner().name;
        membership::remove_member(&self.0, &caller.actor(), &name).await.map(Response::new).map_err(status)
    }

    async fn add_member(&self, req: GrpcRequest<pb::MemberRequest>) -> Result<Response<pb::MemberResponse>, Status> {
        let caller = authorize(&self.0, &req, "/tern.v1.Cluster/AddMember")?;
        let name = req.into_inner().name;
        membership::add_member(&self.0, &caller.actor(), &name).await.map(Response::new).map_err(status)
    }

    type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotChunk, Status>> + Send>>;

    async fn snapshot(&self, req: GrpcRequest<pb::SnapshotRequest>) -> Result<Response<Self::SnapshotStream>, Status> {
        authorize(&self.0, &req, "/tern.v1.Cluster/Snapshot")?;
        let node = &self.0;
        // Only the leader, once it has confirmed its leadership and applied everything
        // committed before the call: a snapshot never misses an acknowledged write.
        if !node.is_leader() {
            return Err(status(Error::NotLeader { leader: node.leader().map(|(_, addr)| addr) }));
        }
        node.raft
            .ensure_linearizable()
            .await
            .map_err(|e| status(Error::Unavailable(format!("confirming leadership: {e}"))))?;
        let image = node.state.image();
        let bytes = tern_raft_store::codec::encode_snapshot(&image).map_err(|e| Status::internal(e.to_string()))?;
        let (index, term) = image.last_applied.map_or((0, 0), |l| (l.index, l.leader_id.term));
        info!(node = %node.name, bytes = bytes.len(), index, "snapshot taken for a client");
        let total = bytes.len() as u64;
        let chunks: Vec<Result<pb::SnapshotChunk, Status>> = bytes
            .chunks(crate::limits::SNAPSHOT_CHUNK_BYTES_MAX as usize)
            .enumerate()
            .map(|(i, c)| {
                let first = i == 0;
                Ok(pb::SnapshotChunk {
                    data: c.to_vec(),
                    total_bytes: if first { total } else { 0 },
                    last_index: if first { index } else { 0 },
                    last_term: if first { term } else { 0 },
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn heartbeat(
        &self,
        req: GrpcRequest<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let caller = authorize(&self.0, &req, "/tern.v1.Cluster/Heartbeat")?;
        let pb::HeartbeatRequest { host, sent_at_ms, .. } = req.into_inner();
        auth::must_be(&caller, &host, "heartbeat")?;
        crate::ha::heard(&self.0, &host, sent_at_ms).map_err(status)?;
        Ok(Response::new(pb::HeartbeatResponse {}))
    }
}

/// A write a member forwards to the leader: it speaks for itself (its host's
/// registration and inventory, the operations it takes part in) or for a user it
/// serves, never for another member; `Expire` is the leader's own duty and is never
/// taken from outside.
fn forwarded_checked(node: &Node, caller: &auth::Caller, request: &Request) -> Result<(), Status> {
    use tern_raft_store::{Command, OperationKind};
    let me = caller.node().unwrap_or_default();
    let deny = |why: String| Err(Status::permission_denied(why));
    let as_agent = match request.actor.strip_prefix("agent:") {
        Some(agent) if agent != me => return deny(format!("node {me} may not propose as agent:{agent}")),
        Some(_) => true,
        None => false,
    };
    let host = match &request.command {
        Command::RegisterHost { host } => Some(host.name.as_str()),
        Command::UpdateHost { name, .. } => Some(name.as_str()),
        Command::ReportInventory { server } => Some(server.name.as_str()),
        Command::Expire { .. } => return deny("Expire is proposed by the leader only, with its own clock".into()),
        Command::Batch { .. } => return deny("a batch is formed by the leader only, from the writes it takes".into()),
        Command::RemoveMember { .. } | Command::ReadmitMember { .. } if as_agent => {
            return deny(format!("{} is an administrator's command, never an agent's", request.command.name()));
        }
        _ => None,
    };
    if let Some(h) = host.filter(|h| *h != me) {
        return deny(format!(
            "node {me} may not {} for host {h}: a node speaks only for itself",
            request.command.name()
        ));
    }
    if !as_agent {
        return Ok(()); // a user's command, which the member serves; the state machine judges it
    }
    // Another host's status: HA's verdicts (suspect, lost, fenced) are the leader's
    // own and never forwarded; maintenance and up only by the evacuation or restore
    // of that host this member runs (UC-1).
    if let Command::SetHostStatus { host, status, .. } = &request.command
        && host != me
    {
        use tern_raft_store::HostStatus;
        let evacuating = node.read(|s| {
            s.operations().values().any(|o| {
                !o.phase.is_terminal()
                    && o.actor == request.actor
                    && o.kind == OperationKind::Evacuation { host: host.clone() }
            })
        });
        if !matches!(status, HostStatus::Maintenance | HostStatus::Up) || !evacuating {
            return deny(format!(
                "node {me} may not set {host} {status}: HA verdicts are the leader's own, and another host's \
                 maintenance is set only by the evacuation or restore of it that the node runs"
            ));
        }
    }
    // The operation the command acts on, and whether `me` takes part in it: a
    // migration's source or target, an evacuation's coordinator, any member but the
    // lost host in a failover.
    let takes_part = |kind: &OperationKind, began_by: Option<&str>| match kind {
        OperationKind::Migration { source, target, .. } => source == me || target == me,
        OperationKind::Evacuation { .. } => began_by.is_none_or(|a| a == request.actor),
        OperationKind::Failover { host } => host != me,
        OperationKind::Resize { host, .. } => host == me,
    };
    let op_of = |s: &tern_raft_store::State, id: u64| s.operation(id).map(|o| (o.kind.clone(), o.actor.clone()));
    let acted_on = node.read(|s| match &request.command {
        Command::BeginOperation { kind } => Some((kind.clone(), None)),
        Command::Reserve { operation, .. }
        | Command::AdvanceOperation { operation, .. }
        | Command::CommitMigration { operation, .. }
        | Command::CommitRestart { operation, .. }
        | Command::CommitResize { operation, .. }
        | Command::CompleteOperation { operation, .. }
        | Command::AbortOperation { operation, .. } => op_of(s, *operation).map(|(k, a)| (k, Some(a))),
        Command::Renew { reservation, .. } | Command::Release { reservation, .. } => {
            s.reservation(*reservation).and_then(|r| op_of(s, r.operation)).map(|(k, a)| (k, Some(a)))
        }
        _ => None,
    });
    match acted_on {
        Some((OperationKind::Migration { source, .. }, None)) if source != me => {
            deny(format!("node {me} may not begin a migration from {source}: its source coordinates it"))
        }
        Some((kind, began_by)) if !takes_part(&kind, began_by.as_deref()) => {
            deny(format!("node {me} takes no part in this {} and may not {} it", kind.name(), request.command.name()))
        }
        _ => Ok(()),
    }
}

impl ClusterService {
    /// `Cluster.Audit` (see the proto).
    fn audit_entries(&self, r: &pb::AuditRequest) -> Vec<pb::AuditEntry> {
        let limit = match r.limit {
            0 => crate::limits::AUDIT_LISTED_MAX,
            n => n.min(crate::limits::AUDIT_LISTED_MAX),
        } as usize;
        if r.denied {
            return self
                .0
                .denied
                .recent(r.since_ms, &r.actor, limit)
                .into_iter()
                .map(|d| pb::AuditEntry {
                    index: 0,
                    at_ms: d.at_ms,
                    actor: d.actor,
                    from: d.from,
                    // Most reasons already begin with the method.
                    summary: match d.why.starts_with(&d.method) {
                        true => format!("refused call {}", d.why),
                        false => format!("refused call {}: {}", d.method, d.why),
                    },
                    outcome: "permission-denied".into(),
                })
                .collect();
        }
        self.0.read(|s| {
            s.audit()
                .values()
                .rev()
                .filter(|a| a.at_ms >= r.since_ms)
                .filter(|a| {
                    if r.actor.is_empty() { r.agents || !a.actor.starts_with("agent:") } else { a.actor == r.actor }
                })
                .take(limit)
                .map(|a| pb::AuditEntry {
                    index: a.index,
                    at_ms: a.at_ms,
                    actor: a.actor.clone(),
                    from: a.from.clone(),
                    summary: a.summary.clone(),
                    outcome: a.outcome.clone(),
                })
                .collect()
        })
    }

    async fn status_members(&self) -> Vec<pb::Member> {
        membership::members(&self.0)
    }
}

pub struct InventoryService(pub Node);

fn host_filter(h: &str) -> Option<&str> {
    (!h.is_empty()).then_some(h)
}

#[tonic::async_trait]
impl pb::inventory_server::Inventory for InventoryService {
    async fn list_domains(
        &self,
        req: GrpcRequest<pb::ListDomainsRequest>,
    ) -> Result<Response<pb::ListDomainsResponse>, Status> {
        authorize(&self.0, &req, "/tern.v1.Inventory/ListDomains")?;
        let r = req.into_inner();
        let domains = self.0.read(|state| {
            let known = host_filter(&r.host).is_none_or(|h| state.host(h).is_some());
            let out: Vec<pb::DomainInfo> = state
                .hosts()
                .values()
                .filter(|h| host_filter(&r.host).is_none_or(|f| f == h.name))
                .filter_map(|h| h.inventory.as_ref())
                .flat_map(|inv| convert::domains(state, inv, host_filter(&r.domain)))
                .collect();
            (known, out)
        });
        match domains {
            (false, _) => Err(Status::not_found(format!("no host named {:?} in the cluster", r.host))),
            (true, domains) => Ok(Response::new(pb::ListDomainsResponse { domains })),
        }
    }

    async fn list_devices(
        &self,
        req: GrpcRequest<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        authorize(&self.0, &req, "/tern.v1.Inventory/ListDevices")?;
        let r = req.into_inner();
        let now = self.0.now_ms();
        let hosts = self.0.read(|state| {
            state
                .hosts()
                .values()
                .filter(|h| host_filter(&r.host).is_none_or(|f| f == h.name))
                .filter_map(|h| {
                    h.inventory.as_ref().map(|inv| {
                        let mut d = convert::devices(inv, &state.reserved_on(&h.name, now), r.all);
                        d.reservations = state.active_reservations_on(&h.name, now).count() as u32;
                        d
                    })
                })
                .collect::<Vec<_>>()
        });
        if hosts.is_empty() && !r.host.is_empty() {
            return Err(Status::not_found(format!("no host named {:?} has reported an inventory", r.host)));
        }
        Ok(Response::new(pb::ListDevicesResponse { hosts }))
    }

    async fn list_services(
        &self,
        req: GrpcRequest<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        authorize(&self.0, &req, "/tern.v1.Inventory/ListServices")?;
        let r = req.into_inner();
        let hosts = self.0.read(|state| {
            state
                .hosts()
                .values()
                .filter(|h| host_filter(&r.host).is_none_or(|f| f == h.name))
                .filter_map(|h| h.inventory.as_ref().map(convert::services))
                .collect::<Vec<_>>()
        });
        if hosts.is_empty() && !r.host.is_empty() {
            return Err(Status::not_found(format!("no host named {:?} has reported an inventory", r.host)));
        }
        Ok(Response::new(pb::ListServicesResponse { hosts }))
    }
}

use crate::limits::{MIGRATION_EVENTS_QUEUE_MAX as EVENTS_QUEUE_MAX, MessageLimits, OPERATIONS_LISTED_MAX};

type Events<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Runs `work` to its end even if the client goes away (like ldm's migrations), with
/// its events converted by `to_pb` into the client's stream, and its error, if any,
/// as the stream's last item. It runs in the call's span, if traced, which so lasts
/// as long as the stream.
fn stream<E, P, W>(node: &Node, to_pb: fn(&E) -> P, work: W) -> Events<P>
where
    E: Send + 'static,
    P: Send + 'static,
    W: FnOnce(tokio::sync::mpsc::Sender<E>) -> futures_util::future::BoxFuture<'static, Result<(), Error>>,
{
    let (events_tx, mut events_rx) = tokio::sync::mpsc::channel::<E>(EVENTS_QUEUE_MAX);
    let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Result<P, Status>>(EVENTS_QUEUE_MAX);
    let run = work(events_tx);
    node.spawn(
        async move {
            let forward = async {
                while let Some(e) = events_rx.recv().await {
                    let _ = out_tx.send(Ok(to_pb(&e))).await;
                }
            };
            let (result, ()) = tokio::join!(run, forward);
            if let Err(e) = result {
                let _ = out_tx.send(Err(status(e))).await;
            }
        }
        .in_current_span(),
    );
    Box::pin(ReceiverStream::new(out_rx))
}

pub struct MigrationService {
    pub node: Node,
    pub registry: Arc<Registry>,
}

/// OP-04 by certificate, checked at the source before anything is begun (the target
/// checks again): a ticket comes instead of a login, from the user who signed it, for
/// exactly this migration. A member may pass a user's ticket on.
fn ticket_checked(
    node: &Node,
    caller: &auth::Caller,
    presented: &[u8],
    ticket: &tern_cluster::Ticket,
    req: &tern_cluster::MigrateRequest,
) -> Result<(), Status> {
    if !req.user.is_empty() || !req.password.is_empty() {
        return Err(Status::invalid_argument("OP-04 give a ticket or a user and password, not both"));
    }
    if matches!(caller, auth::Caller::User { .. }) && ticket.certificate != presented {
        return Err(Status::permission_denied(format!(
            "OP-04 the ticket is signed with another certificate than the one {} calls with",
            caller.actor()
        )));
    }
    tern_cluster::Cluster::ticket_holder(node, ticket, &req.grant()).map_err(convert::status)?;
    Ok(())
}

#[tonic::async_trait]
impl pb::migration_server::Migration for MigrationService {
    type MigrateStream = Events<pb::MigrateEvent>;

    async fn migrate(&self, req: GrpcRequest<pb::MigrateRequest>) -> Result<Response<Self::MigrateStream>, Status> {
        let caller = authorize(&self.node, &req, "/tern.v1.Migration/Migrate")?;
        let presented = (self.node.peer_cert)(req.extensions()).unwrap_or_default();
        let req = convert::migrate_request(req.into_inner());
        if req.domain.is_empty() || req.target.is_empty() {
            return Err(Status::invalid_argument("a migration needs a domain and a target"));
        }
        if let Some(ticket) = &req.ticket {
            ticket_checked(&self.node, &caller, &presented, ticket, &req)?;
        }
        let (node, registry) = (self.node.clone(), self.registry.clone());
        let events = stream(&self.node, convert::event_to_pb, move |tx| {
            Box::pin(coordinator::migrate(Arc::new(node), registry, req, tx))
        });
        Ok(Response::new(events))
    }

    async fn prepare(&self, req: GrpcRequest<pb::PrepareRequest>) -> Result<Response<pb::PrepareResponse>, Status> {
        let caller = authorize(&self.node, &req, "/tern.v1.Migration/Prepare")?;
        auth::must_be(&caller, &req.get_ref().source, "prepare a migration")?;
        let req = convert::prepare_request(req.into_inner()).map_err(status)?;
        let prepared = target::prepare(&self.node, req).await.map_err(status)?;
        Ok(Response::new(convert::prepared_to_pb(&prepared).map_err(status)?))
    }

    async fn finish(&self, req: GrpcRequest<pb::FinishRequest>) -> Result<Response<pb::FinishResponse>, Status> {
        let caller = authorize(&self.node, &req, "/tern.v1.Migration/Finish")?;
        let req = req.into_inner();
        let coordinator = caller.node().unwrap_or_default();
        target::finish(&self.node, coordinator, req.operation_id, &req.domain, req.committed).await.map_err(status)?;
        Ok(Response::new(pb::FinishResponse {}))
    }

    async fn cancel(&self, req: GrpcRequest<pb::CancelRequest>) -> Result<Response<pb::CancelResponse>, Status> {
        let caller = authorize(&self.node, &req, "/tern.v1.Migration/Cancel")?;
        let req = req.into_inner();
        if req.operation != "migration" {
            return Err(Status::invalid_argument(format!("cannot cancel {:?}; only \"migration\"", req.operation)));
        }
        // Item 3 of the trust rules: a member's cancel is a user's passed on to the
        // source, and names that user; a user's own names nobody else.
        let who = match &caller {
            auth::Caller::Node(node) => coordinator::Canceller::Relayed { node, user: &req.on_behalf_of },
            auth::Caller::User { name, .. } => coordinator::Canceller::User(name),
        };
        let id = coordinator::cancel(&self.node, &self.registry, &req.domain, who).await.map_err(status)?;
        Ok(Response::new(pb::CancelResponse { operation_id: id }))
    }

    async fn list_operations(
        &self,
        req: GrpcRequest<pb::ListOperationsRequest>,
    ) -> Result<Response<pb::ListOperationsResponse>, Status> {
        authorize(&self.node, &req, "/tern.v1.Migration/ListOperations")?;
        let limit = match req.into_inner().limit {
            0 => OPERATIONS_LISTED_MAX,
            n => n.min(OPERATIONS_LISTED_MAX),
        } as usize;
        let operations =
            self.node.read(|s| s.operations().values().rev().take(limit).map(convert::operation).collect());
        Ok(Response::new(pb::ListOperationsResponse { operations }))
    }
}

pub struct UsersService(pub Node);

#[tonic::async_trait]
impl pb::users_server::Users for UsersService {
    async fn add_user(&self, req: GrpcRequest<pb::AddUserRequest>) -> Result<Response<pb::AddUserResponse>, Status> {
        let caller = authorize(&self.0, &req, "/tern.v1.Users/AddUser")?;
        let r = req.into_inner();
        let profiles: BTreeSet<Profile> = r.profiles.iter().map(|p| Profile::parse(p)).collect();
        tern_cluster::users::add(&self.0, &caller.actor(), r.name, r.password, profiles, r.replace)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::AddUserResponse {}))
    }

    async fn remove_user(
        &self,
        req: GrpcRequest<pb::RemoveUserRequest>,
    ) -> Result<Response<pb::RemoveUserResponse>, Status> {
        let caller = authorize(&self.0, &req, "/tern.v1.Users/RemoveUser")?;
        tern_cluster::users::remove(&self.0, &caller.actor(), req.into_inner().name).await.map_err(status)?;
        Ok(Response::new(pb::RemoveUserResponse {}))
    }

    async fn list_users(
        &self,
        req: GrpcRequest<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        authorize(&self.0, &req, "/tern.v1.Users/ListUsers")?;
        let users = self.0.read(|s| {
            s.users()
                .values()
                .map(|u| pb::UserInfo {
                    name: u.name.clone(),
                    profiles: u.profiles.iter().map(|p| p.as_str().to_string()).collect(),
                })
                .collect()
        });
        Ok(Response::new(pb::ListUsersResponse { users }))
    }
}

pub struct HostsService {
    pub node: Node,
    pub registry: Arc<Registry>,
}

impl HostsService {
    fn run<F>(&self, req: pb::HostRequest, work: F) -> Result<Response<Events<pb::HostEvent>>, Status>
    where
        F: FnOnce(
                Arc<dyn tern_cluster::Cluster>,
                Arc<Registry>,
                hosts::HostRequest,
                hosts::HostEvents,
            ) -> futures_util::future::BoxFuture<'static, Result<(), Error>>
            + Send
            + 'static,
    {
        let req = convert::host_request(req);
        if req.host.is_empty() {
            return Err(Status::invalid_argument("name the host"));
        }
        let (node, registry) = (self.node.clone(), self.registry.clone());
        let events = stream(&self.node, convert::host_event_to_pb, move |tx| work(Arc::new(node), registry, req, tx));
        Ok(Response::new(events))
    }
}

#[tonic::async_trait]
impl pb::hosts_server::Hosts for HostsService {
    type EvacuateStream = Events<pb::HostEvent>;
    type RestoreStream = Events<pb::HostEvent>;

    async fn evacuate(&self, req: GrpcRequest<pb::HostRequest>) -> Result<Response<Self::EvacuateStream>, Status> {
        authorize(&self.node, &req, "/tern.v1.Hosts/Evacuate")?;
        self.run(req.into_inner(), |c, g, r, tx| Box::pin(hosts::evacuate(c, g, r, tx)))
    }

    async fn restore(&self, req: GrpcRequest<pb::HostRequest>) -> Result<Response<Self::RestoreStream>, Status> {
        authorize(&self.node, &req, "/tern.v1.Hosts/Restore")?;
        self.run(req.into_inner(), |c, g, r, tx| Box::pin(hosts::restore(c, g, r, tx)))
    }
}

/// HA (SPEC HA-*): the target side of a restart, the leader's view, admission, and
/// the admin's fence confirmation and priorities.
pub struct HaService(pub Node);

#[tonic::async_trait]
impl pb::ha_server::Ha for HaService {
    async fn restart(&self, req: GrpcRequest<pb::RestartRequest>) -> Result<Response<pb::RestartResponse>, Status> {
        authorize(&self.0, &req, "/tern.v1.Ha/Restart")?;
        let r = req.into_inner();
        let req = tern_cluster::RestartRequest {
            operation: r.operation_id,
            reservation: r.reservation_id,
            token: r.token,
            domain: r.domain,
        };
        // On a task of its own: a caller that gives up (its deadline) must not cut the
        // restart between starting the guest and recording or retracting it.
        let node = self.0.clone();
        let task = self.0.tasks.spawn(async move { tern_ha::failover::start_here(&node, req).await }.in_current_span());
        let started = task.await.map_err(|e| Status::internal(format!("the restart task failed: {e}")))?;
        let started = started.map_err(status)?;
        Ok(Response::new(pb::RestartResponse { started }))
    }

    async fn status(&self, req: GrpcRequest<pb::HaStatusRequest>) -> Result<Response<pb::HaStatusResponse>, Status> {
        authorize(&self.0, &req, "/tern.v1.Ha/Status")?;
        let node = &self.0;
        if !node.is_leader() {
            // The detector and the failover driver live on the leader: ask it.
            let (_, addr) = node.leader().ok_or_else(|| Status::unavailable("no leader is known yet; retry"))?;
            let mut client = pb::ha_client::HaClient::new(node.channel(&addr).map_err(status)?).with_message_limits();
            let forwarded = crate::transport::request_within(
                req.into_inner(),
                std::time::Duration::from_millis(tern_cluster::peer::CALL_DEADLINE_MS),
            );
            return client.status(forwarded).await;
        }
        Ok(Response::new(crate::ha::status(node)))
    }

    async fn check(&self, req: GrpcRequest<pb::HaCheckRequest>) -> Result<Response<pb::HaCheckResponse>, Status> {
        authorize(&self.0, &req, "/tern.v1.Ha/Check")?;
        Ok(Response::new(crate::ha::check(&self.0)))
    }

    async fn set_host(
        &self,
        req: GrpcRequest<pb::HaSetHostRequest>,
    ) -> Result<Response<pb::HaSetHostResponse>, Status> {
        let caller = authorize(&self.0, &req, "/tern.v1.Ha/SetHost")?;
        let r = req.into_inner();
        let status_now = crate::ha::set_host(&self.0, &caller.actor(), &r.host, &r.status).await.map_err(status)?;
        Ok(Response::new(pb::HaSetHostResponse { status: status_now.to_string() }))
    }

    async fn set_domain(
        &self,
        req: GrpcRequest<pb::HaSetDomainRequest>,
    ) -> Result<Response<pb::HaSetDomainResponse>, Status> {
        let caller = authorize(&self.0, &req, "/tern.v1.Ha/SetDomain")?;
        let r = req.into_inner();
        let ha_priority = match r.ha_priority.as_str() {
            "" => None,
            p => Some(p.parse::<tern_raft_store::HaPriority>().map_err(Status::invalid_argument)?),
        };
        if ha_priority.is_none() && r.affinity_group.is_none() && r.anti_affinity_group.is_none() {
            return Err(Status::invalid_argument(
                "nothing to set: give ha-priority, affinity-group or anti-affinity-group",
            ));
        }
        let command = tern_raft_store::Command::SetDomain {
            domain: r.domain,
            ha_priority,
            affinity_group: r.affinity_group,
            anti_affinity_group: r.anti_affinity_group,
        };
        self.0.propose(&caller.actor(), command).await.map_err(status)?;
        Ok(Response::new(pb::HaSetDomainResponse {}))
    }
}
