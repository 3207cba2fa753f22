//! The running agent's shared handle: Raft, the applied state, the hypervisor, the
//! peer channels, and writes that find the leader wherever they start.

use crate::config::Config;
use crate::raft_net::{decode, encode};
use crate::transport::Channels;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tern_hypervisor::Hypervisor;
use tern_proto::v1 as pb;
use tern_raft_store::{Command, Error as StoreError, NodeId, Outcome, Raft, Request, StateHandle};
use tonic::{Code, Status};

/// How many times a write follows a leader hint before giving up.
pub const FORWARD_HOPS_MAX: usize = 3;

/// The proposer's clock: milliseconds since the Unix epoch. A seam, so that simulations
/// run on simulated time.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(now_ms)
}

/// Everything the services and background tasks share.
#[derive(Clone)]
pub struct Node {
    pub id: NodeId,
    pub name: String,
    /// host:port peers reach us at.
    pub address: String,
    pub raft: Raft,
    pub state: StateHandle,
    pub hypervisor: Arc<dyn Hypervisor>,
    pub channels: Channels,
    pub config: Arc<Config>,
    /// Time stamped on proposals (lease expiry, heartbeats); never read in apply.
    pub clock: Clock,
    /// Run password hashing inline (simulations), not on the blocking pool.
    pub inline_blocking: bool,
    /// Every background task of this agent: spawn with `tasks.spawn(..)` and end at
    /// `shutdown`; shutdown waits for them (within its deadline) before stopping Raft.
    pub tasks: tokio_util::task::TaskTracker,
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// Wall-clock milliseconds since the Unix epoch: the time a proposer stamps on its
/// commands (the state machine itself never reads a clock). Use [`Node::clock`] in
/// agent code so that simulations can replace it.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Node {
    /// Proposes `command` as `actor`, forwarding to the leader when this member is not it.
    pub async fn propose(&self, actor: &str, command: Command) -> Result<Outcome, Status> {
        let request = Request { proposed_at_ms: (self.clock)(), actor: actor.to_string(), command };
        self.propose_request(request).await
    }

    /// Proposes an already stamped request (also the handler of forwarded writes).
    pub async fn propose_request(&self, request: Request) -> Result<Outcome, Status> {
        let mut hint: Option<String> = None;
        for _ in 0..FORWARD_HOPS_MAX {
            let target = match hint.take() {
                None => match tern_raft_store::propose(&self.raft, request.clone()).await {
                    Ok(applied) => return Ok(applied.outcome),
                    Err(StoreError::NotLeader { address: Some(addr), .. }) if addr != self.address => addr,
                    Err(e) => return Err(store_status(e)),
                },
                Some(addr) => addr,
            };
            match self.forward(&target, &request).await {
                Ok(outcome) => return Ok(outcome),
                Err(s) if s.code() == Code::FailedPrecondition => match leader_hint(&s) {
                    Some(next) => hint = Some(next),
                    None => return Err(s),
                },
                Err(s) => return Err(s),
            }
        }
        Err(Status::unavailable(format!("the leader moved {FORWARD_HOPS_MAX} times while writing; retry")))
    }

    async fn forward(&self, addr: &str, request: &Request) -> Result<Outcome, Status> {
        let channel = self.channels.get(addr).map_err(|e| Status::unavailable(format!("leader {addr}: {e}")))?;
        let bytes = encode(request).map_err(|e| Status::internal(format!("encoding request: {e}")))?;
        let resp = crate::limits::MessageLimits::with_message_limits(pb::cluster_client::ClusterClient::new(channel))
            .propose(self.channels.settings().request(pb::ProposeRequest { request: bytes }))
            .await?
            .into_inner();
        let result: Result<Outcome, tern_raft_store::Rejection> =
            decode(&resp.response).map_err(|e| Status::internal(format!("leader {addr} answered: {e}")))?;
        result.map_err(|r| store_status(StoreError::Rejected(r)))
    }

    /// The leader's id and address as this member knows them.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id).map(|n| n.addr.clone())?;
        Some((id, addr))
    }

    /// The proposer's time now.
    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// Runs `f` on the applied state.
    pub fn read<T>(&self, f: impl FnOnce(&tern_raft_store::State) -> T) -> T {
        self.state.read(f)
    }
}

/// The gRPC status for a store error, with the code STYLE.md assigns.
pub fn store_status(e: StoreError) -> Status {
    match e {
        StoreError::NotLeader { leader, address } => {
            let hint = address.map(|a| format!(" leader={a}")).unwrap_or_default();
            Status::failed_precondition(format!("not the leader (leader id {leader:?});{hint}"))
        }
        StoreError::Rejected(r) => rejection_status(&r),
        StoreError::Unavailable(m) => Status::unavailable(m),
        StoreError::Storage { .. } | StoreError::Codec(_) => Status::internal(e.to_string()),
        StoreError::Password(m) => Status::invalid_argument(m),
    }
}

/// A state-machine rejection as a gRPC status: bad input is INVALID_ARGUMENT, a
/// missing thing NOT_FOUND, a conflict with the current state FAILED_PRECONDITION.
pub fn rejection_status(r: &tern_raft_store::Rejection) -> Status {
    use tern_raft_store::RejectCode as C;
    let msg = r.to_string();
    match r.code {
        C::HostUnknown | C::ReservationUnknown | C::OperationUnknown | C::UserUnknown | C::DomainUnknown => {
            Status::not_found(msg)
        }
        C::InvalidRequest | C::InventoryInvalid | C::BindingInvalid => Status::invalid_argument(msg),
        _ => Status::failed_precondition(msg),
    }
}

/// The `leader=host:port` hint in a FAILED_PRECONDITION message, if any.
pub fn leader_hint(s: &Status) -> Option<String> {
    s.message().split_whitespace().find_map(|w| w.strip_prefix("leader=")).map(str::to_string)
}

/// A short pause that grows with the attempt, capped; jitter comes from the node id so
/// members do not retry in lockstep.
pub fn backoff(attempt: u32, id: NodeId) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(5));
    Duration::from_millis(base.min(2000) + id % 97)
}

#[tonic::async_trait]
impl tern_migrate::Cluster for Node {
    fn host(&self) -> &str {
        &self.name
    }

    fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    fn state(&self) -> &StateHandle {
        &self.state
    }

    fn hypervisor(&self) -> &Arc<dyn Hypervisor> {
        &self.hypervisor
    }

    fn channel(&self, addr: &str) -> Result<tonic::transport::Channel, Status> {
        self.channels.get(addr).map_err(|e| Status::unavailable(format!("{addr}: {e}")))
    }

    async fn propose(&self, actor: &str, command: Command) -> Result<Outcome, Status> {
        Node::propose(self, actor, command).await
    }

    fn inline_blocking(&self) -> bool {
        self.inline_blocking
    }
}
