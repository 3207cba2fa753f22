//! An in-process Raft cluster over [`LocalRouter`] for the cluster tests and the
//! commit benchmark. Waits on metrics with deadlines, never sleeps.
#![allow(dead_code)]

use openraft::{BasicNode, Config, ServerState, SnapshotPolicy};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use tern_raft_store::mem::MemStore;
use tern_raft_store::network::LocalRouter;
use tern_raft_store::{Applied, Error, NodeId, Raft, Request, StateHandle, propose, rocks};

/// Where members keep their log and state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    Rocks,
    Memory,
}

pub struct Member {
    pub raft: Raft,
    pub state: StateHandle,
}

pub struct Cluster {
    pub router: LocalRouter,
    pub members: BTreeMap<NodeId, Member>,
    pub config: Arc<Config>,
    storage: Storage,
    dir: TempDir,
    /// In-memory stores outlive their members, as disks do.
    mem_stores: BTreeMap<NodeId, MemStore>,
}

/// Timings for an in-process cluster; `snapshot_every` entries trigger a snapshot and
/// the log is purged right behind it.
pub fn config(snapshot_every: u64) -> Config {
    let c = Config {
        cluster_name: "tern-test".into(),
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(snapshot_every),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        max_payload_entries: 512,
        ..Config::default()
    };
    c.validate().expect("valid raft config")
}

pub fn node(id: NodeId) -> BasicNode {
    BasicNode::new(format!("node-{id}"))
}

impl Cluster {
    /// Starts `ids` as the voters of a new cluster and waits for a leader.
    pub async fn start(ids: &[NodeId], storage: Storage, config: Config) -> Self {
        let mut c = Cluster {
            router: LocalRouter::new(),
            members: BTreeMap::new(),
            config: Arc::new(config),
            storage,
            dir: tempfile::tempdir_in(bench_dir()).expect("tempdir"),
            mem_stores: BTreeMap::new(),
        };
        for &id in ids {
            c.add_member(id).await;
        }
        let voters: BTreeMap<NodeId, BasicNode> = ids.iter().map(|&id| (id, node(id))).collect();
        c.raft(ids[0]).initialize(voters).await.expect("initialize");
        c.leader(Duration::from_secs(10)).await;
        c
    }

    /// Starts member `id` on its storage: empty for a new member, what it left for a
    /// restarted one.
    pub async fn add_member(&mut self, id: NodeId) {
        let network = self.router.network(id);
        let (raft, state) = match self.storage {
            Storage::Rocks => {
                let (log, sm) = rocks::open(self.dir.path().join(format!("node-{id}"))).expect("open store");
                let state = sm.state();
                let raft = Raft::new(id, self.config.clone(), network, log, sm).await.expect("raft");
                (raft, state)
            }
            Storage::Memory => {
                let store = self.mem_stores.entry(id).or_default().clone();
                let (log, sm) = store.open();
                let raft = Raft::new(id, self.config.clone(), network, log, sm).await.expect("raft");
                (raft, store.state())
            }
        };
        self.router.add(id, raft.clone());
        self.members.insert(id, Member { raft, state });
    }

    pub fn raft(&self, id: NodeId) -> &Raft {
        &self.members[&id].raft
    }

    pub fn live(&self) -> BTreeSet<NodeId> {
        self.members.keys().copied().collect()
    }

    /// The member that is leader and that every live member it leads agrees on, waiting
    /// up to `timeout` for one.
    pub async fn leader(&self, timeout: Duration) -> NodeId {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            for (id, m) in &self.members {
                let metrics = m.raft.metrics().borrow().clone();
                if metrics.state == ServerState::Leader && metrics.current_leader == Some(*id) {
                    return *id;
                }
            }
            // Wait for any metrics change on the first live member, bounded by the deadline.
            let (_, first) = self.members.iter().next().expect("a live member");
            let mut rx = first.raft.metrics();
            let changed = tokio::time::timeout_at(deadline, rx.changed()).await;
            assert!(changed.is_ok(), "no leader within {timeout:?}");
        }
    }

    /// Proposes `request` to the leader, following leader changes (bounded attempts).
    pub async fn write(&self, request: Request) -> Result<Applied, Error> {
        let mut last = None;
        for _ in 0..10 {
            let leader = self.leader(Duration::from_secs(10)).await;
            match propose(self.raft(leader), request.clone()).await {
                Err(e @ (Error::NotLeader { .. } | Error::Unavailable(_))) => last = Some(e),
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| Error::Unavailable("no attempt".into())))
    }

    /// Crashes member `id`: unreachable at once, then its Raft task stops.
    pub async fn crash(&mut self, id: NodeId) {
        self.router.remove(id);
        if let Some(m) = self.members.remove(&id) {
            m.raft.shutdown().await.expect("shutdown");
        }
    }

    /// Waits until member `id` applied `index`.
    pub async fn wait_applied(&self, id: NodeId, index: u64, timeout: Duration) {
        self.raft(id)
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), format!("node {id} applies {index}"))
            .await
            .expect("applied in time");
    }

    pub async fn shutdown(mut self) {
        let ids: Vec<NodeId> = self.members.keys().copied().collect();
        for id in ids {
            self.crash(id).await;
        }
    }
}

/// Where temporary stores go: `$TERN_BENCH_DIR`, else the system temp dir.
pub fn bench_dir() -> std::path::PathBuf {
    std::env::var_os("TERN_BENCH_DIR").map(Into::into).unwrap_or_else(std::env::temp_dir)
}
