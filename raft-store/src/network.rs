//! An in-process Raft network: members of one process call each other's `Raft`
//! directly. For tests and benchmarks; the agent speaks gRPC and the chaos crate
//! goes through turmoil.
//!
//! A [`LocalRouter`] knows every member; a member that is [`LocalRouter::isolate`]d
//! neither sends nor receives (a partition), and one that was
//! [`LocalRouter::remove`]d is simply unreachable (a crash). Every call honours
//! openraft's deadline (`RPCOption::hard_ttl`).

use crate::{Node, NodeId, Raft, TypeConfig};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::{RPCTypes, RaftNetwork, RaftNetworkFactory};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Default)]
struct Members {
    rafts: BTreeMap<NodeId, Raft>,
    isolated: BTreeSet<NodeId>,
}

/// Routes RPCs between the members of one process.
#[derive(Clone, Default)]
pub struct LocalRouter {
    members: Arc<Mutex<Members>>,
}

/// Why a call did not reach its target.
#[derive(Debug, thiserror::Error)]
#[error("node {target} is unreachable from node {from}")]
pub struct Unroutable {
    pub from: NodeId,
    pub target: NodeId,
}

impl LocalRouter {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Members) -> T) -> T {
        f(&mut self.members.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The network factory member `from` gives to `Raft::new`.
    pub fn network(&self, from: NodeId) -> LocalNetwork {
        LocalNetwork { from, router: self.clone() }
    }

    /// Makes `raft` reachable as member `id`.
    pub fn add(&self, id: NodeId, raft: Raft) {
        self.with(|m| m.rafts.insert(id, raft));
    }

    /// Makes member `id` unreachable and returns it (to shut it down: a crash).
    pub fn remove(&self, id: NodeId) -> Option<Raft> {
        self.with(|m| m.rafts.remove(&id))
    }

    /// Cuts member `id` off: it neither sends nor receives until [`LocalRouter::heal`].
    pub fn isolate(&self, id: NodeId) {
        self.with(|m| m.isolated.insert(id));
    }

    pub fn heal(&self, id: NodeId) {
        self.with(|m| m.isolated.remove(&id));
    }

    fn route(&self, from: NodeId, target: NodeId) -> Result<Raft, Unroutable> {
        self.with(|m| {
            if m.isolated.contains(&from) || m.isolated.contains(&target) {
                return None;
            }
            m.rafts.get(&target).cloned()
        })
        .ok_or(Unroutable { from, target })
    }
}

/// The factory one member uses.
#[derive(Clone)]
pub struct LocalNetwork {
    from: NodeId,
    router: LocalRouter,
}

impl RaftNetworkFactory<TypeConfig> for LocalNetwork {
    type Network = LocalConnection;

    async fn new_client(&mut self, target: NodeId, _node: &Node) -> Self::Network {
        LocalConnection { from: self.from, target, router: self.router.clone() }
    }
}

/// One member's channel to another.
pub struct LocalConnection {
    from: NodeId,
    target: NodeId,
    router: LocalRouter,
}

impl LocalConnection {
    /// Routes a call to the target with a deadline, mapping each failure to the
    /// `RPCError` openraft expects (unreachable, timeout, or the target's own error).
    async fn call<R, E, F, Fut>(
        &self,
        action: RPCTypes,
        option: &RPCOption,
        f: F,
    ) -> Result<R, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        E: std::error::Error,
        F: FnOnce(Raft) -> Fut,
        Fut: Future<Output = Result<R, RaftError<NodeId, E>>>,
    {
        let raft =
            self.router.route(self.from, self.target).map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let ttl = option.hard_ttl();
        match tokio::time::timeout(ttl, f(raft)).await {
            Err(_) => Err(RPCError::Timeout(Timeout { action, id: self.from, target: self.target, timeout: ttl })),
            Ok(Err(RaftError::Fatal(fatal))) => Err(RPCError::Network(NetworkError::new(&fatal))),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Ok(Ok(r)) => Ok(r),
        }
    }
}

impl RaftNetwork<TypeConfig> for LocalConnection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(RPCTypes::AppendEntries, &option, |raft| async move { raft.append_entries(rpc).await }).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId, InstallSnapshotError>>> {
        self.call(RPCTypes::InstallSnapshot, &option, |raft| async move { raft.install_snapshot(rpc).await }).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(RPCTypes::Vote, &option, |raft| async move { raft.vote(rpc).await }).await
    }
}
