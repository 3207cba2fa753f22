//! The running agent's shared handle: Raft, the applied state, the hypervisor, the
//! peer channels, and writes that find the leader wherever they start.

use crate::config::Config;
use crate::convert;
use crate::raft_net::{decode, encode};
use crate::transport::Channels;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tern_cluster::Error;
use tern_hypervisor::Hypervisor;
use tern_proto::v1 as pb;
use tern_raft_store::{Command, Error as StoreError, NodeId, Outcome, Raft, Rejection, Request, StateHandle};

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
    /// Writes through `raft`, several concurrent ones to an entry (issue 18).
    pub batcher: tern_raft_store::Batcher,
    pub state: StateHandle,
    pub hypervisor: Arc<dyn Hypervisor>,
    pub channels: Channels,
    pub config: Arc<Config>,
    /// Time stamped on proposals (lease expiry, heartbeats); never read in apply.
    pub clock: Clock,
    /// The members' clocks as their heartbeats tell them (the leader's stamps).
    pub clock_check: Arc<crate::clock::ClockCheck>,
    /// The calls this agent refused (`ternctl audit --denied`).
    pub denied: Arc<crate::auth::DeniedLog>,
    /// Run password hashing inline (simulations), not on the blocking pool.
    pub inline_blocking: bool,
    /// Every background task of this agent: spawn with `tasks.spawn(..)` and end at
    /// `shutdown`; shutdown waits for them (within its deadline) before stopping Raft.
    pub tasks: tokio_util::task::TaskTracker,
    pub shutdown: tokio_util::sync::CancellationToken,
    /// HA-01: the failure detector; fed and consulted only while this member leads.
    pub detector: Arc<std::sync::Mutex<tern_ha::Detector>>,
    /// HA-02: each server's fence, by host (used while this member leads).
    pub fences: Arc<std::collections::BTreeMap<String, Arc<dyn tern_ha::Fence>>>,
    /// Where this leader's failovers stand (`ternctl ha status`).
    pub failover: tern_ha::failover::Report,
    /// What this leader's rebalancer measured last (`ternctl rebalance status`).
    pub rebalancer: Arc<std::sync::Mutex<crate::rebalance::Rounds>>,
    /// The DER of a call's TLS peer certificate, from its request extensions (the
    /// connection type differs between real TCP and turmoil; see [`crate::auth`]).
    pub peer_cert: crate::auth::PeerCert,
    /// `[tls] revoked`: certificates refused on every call.
    pub revoked: Arc<crate::auth::Revoked>,
    /// The identity this agent's server presents ([`Node::reload_tls`] replaces it).
    pub server_tls: Arc<crate::transport::ServerTls>,
    /// Counters and histograms of what this agent did (`/metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Wall-clock milliseconds since the Unix epoch: the time a proposer stamps on its
/// commands (the state machine itself never reads a clock). Use [`Node::clock`] in
/// agent code so that simulations can replace it.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Node {
    /// Reads this node's certificate, key and CA again (`SIGHUP`, issue 12) and, when
    /// they load as a whole ([`tern_tls::TlsFiles::load_node`]), presents them from the
    /// next handshake on, as server and as client; connections already up keep the
    /// identity they were made with. Files that do not load change nothing. Returns
    /// the serial of the certificate now presented.
    pub fn reload_tls(&self) -> Result<String, tern_tls::TlsError> {
        let tls = self.config.tls.files().load_node(&self.name)?;
        self.server_tls.set(&tls);
        self.channels.set_tls(tls.client);
        Ok(tls.serial)
    }

    /// Proposes `command` as `actor`, forwarding to the leader when this member is not it.
    pub async fn propose(&self, actor: &str, command: Command) -> Result<Outcome, Error> {
        let request = Request {
            proposed_at_ms: (self.clock)(),
            actor: actor.to_string(),
            from: crate::call_context::caller_addr(),
            command,
        };
        self.propose_request(request).await
    }

    /// Proposes an already stamped request (also the handler of forwarded writes).
    pub async fn propose_request(&self, request: Request) -> Result<Outcome, Error> {
        let mut hint: Option<String> = None;
        for _ in 0..FORWARD_HOPS_MAX {
            let target = match hint.take() {
                None => match self.propose_here(request.clone()).await {
                    Ok(applied) => return Ok(applied.outcome),
                    Err(StoreError::NotLeader { address: Some(addr), .. }) if addr != self.address => addr,
                    Err(e) => return Err(e.into()),
                },
                Some(addr) => addr,
            };
            match self.forward(&target, &request).await {
                Ok(outcome) => return Ok(outcome),
                Err(Error::NotLeader { leader: Some(next) }) => hint = Some(next),
                Err(e) => return Err(e),
            }
        }
        Err(Error::Unavailable(format!("the leader moved {FORWARD_HOPS_MAX} times while writing; retry")))
    }

    /// Writes `request` through this member's own Raft (a follower answers
    /// not-leader), counted in its metrics.
    pub async fn propose_here(&self, mut request: Request) -> Result<tern_raft_store::Applied, StoreError> {
        // Only the leader's stamp is applied (a follower answers not-leader): the
        // members' median clock (`crate::clock`), whoever stamped the request first.
        request.proposed_at_ms = self.stamp_ms().0;
        let before = self.read(|s| crate::metrics::Metrics::before(&request, s));
        let started = std::time::Instant::now();
        let result = self.batcher.propose(request.clone()).await;
        let took = started.elapsed();
        self.read(|s| self.metrics.proposed(&request, &before, &result, took, s));
        result
    }

    async fn forward(&self, addr: &str, request: &Request) -> Result<Outcome, Error> {
        let channel = self.channel(addr)?;
        let bytes = encode(request).map_err(|e| Error::Internal(format!("encoding request: {e}")))?;
        let resp = crate::limits::MessageLimits::with_message_limits(pb::cluster_client::ClusterClient::new(channel))
            .propose(self.channels.request(pb::ProposeRequest { request: bytes }))
            .await
            .map_err(convert::error)?
            .into_inner();
        let result: Result<Outcome, Rejection> =
            decode(&resp.response).map_err(|e| Error::Internal(format!("leader {addr} answered: {e}")))?;
        result.map_err(Error::Rejected)
    }

    /// The reused channel to the agent at `addr`.
    pub fn channel(&self, addr: &str) -> Result<tonic::transport::Channel, Error> {
        self.channels.get(addr).map_err(|e| Error::Unavailable(format!("{addr}: {e}")))
    }

    /// The failure detector (a poisoned lock is taken over: its state is plain data).
    pub fn detector(&self) -> std::sync::MutexGuard<'_, tern_ha::Detector> {
        self.detector.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether this member is the Raft leader now.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// The leader's id and address as this member knows them.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&id).map(|n| n.addr.clone())?;
        Some((id, addr))
    }

    /// Runs `task` (work a request started that outlives it: a migration, an
    /// evacuation) on the runtime, tracked by [`Node::tasks`], so shutdown waits for
    /// it within its deadline.
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// The proposer's time now.
    pub fn now_ms(&self) -> u64 {
        (self.clock)()
    }

    /// The time this member stamps a write with as leader, and whether the members'
    /// clocks confirmed it ([`crate::clock::ClockCheck::stamp`]).
    pub fn stamp_ms(&self) -> (u64, bool) {
        let interval = self.config.ha.heartbeat_interval_ms;
        let voters = self.raft.metrics().borrow().membership_config.membership().voter_ids().count();
        let fresh = interval.saturating_mul(crate::clock::FRESH_INTERVALS);
        self.clock_check.stamp(self.now_ms(), fresh, voters / 2 + 1, interval)
    }

    /// Runs `f` on the applied state.
    pub fn read<T>(&self, f: impl FnOnce(&tern_raft_store::State) -> T) -> T {
        self.state.read(f)
    }
}

/// A short pause that grows with the attempt, capped; jitter comes from the node id so
/// members do not retry in lockstep.
pub fn backoff(attempt: u32, id: NodeId) -> Duration {
    let base = 100u64.saturating_mul(1 << attempt.min(5));
    Duration::from_millis(base.min(2000) + id % 97)
}

#[tonic::async_trait]
impl tern_cluster::Cluster for Node {
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

    fn peers(&self) -> &dyn tern_cluster::Peers {
        self
    }

    async fn propose(&self, actor: &str, command: Command) -> Result<Outcome, Error> {
        Node::propose(self, actor, command).await
    }

    fn inline_blocking(&self) -> bool {
        self.inline_blocking
    }

    fn ticket_holder(&self, ticket: &tern_tls::Ticket, grant: &tern_tls::Grant<'_>) -> Result<String, Error> {
        let denied = |why: String| {
            Error::PermissionDenied(format!(
                "OP-04 the ticket to move {} is refused on {}: {why}",
                grant.domain, self.name
            ))
        };
        self.server_tls.tickets().verify(ticket, grant, (self.clock)()).map_err(denied)?;
        let caller = crate::auth::identify(self, &ticket.certificate).map_err(|(_, why)| denied(why))?;
        match &caller {
            crate::auth::Caller::User { name, .. } => {
                crate::auth::allows(crate::auth::Need::Management, &caller).map_err(denied)?;
                Ok(name.clone())
            }
            crate::auth::Caller::Node(n) => {
                Err(denied(format!("node {n}'s certificate signs no tickets; a user's does")))
            }
        }
    }
}
