//! A 3-member cluster in one process: it elects a leader, replicates commands, keeps
//! every committed command when it loses its leader, lets a crashed member restart
//! from its own storage, and brings a new learner up to date through a snapshot.

#[path = "support/cluster.rs"]
mod cluster;
mod common;

use cluster::{Cluster, Storage, config, node};
use common::*;
use std::time::Duration;
use tern_raft_store::{Command, NodeId, Outcome, State};

const WAIT: Duration = Duration::from_secs(20);

fn register(i: u64) -> Command {
    Command::RegisterHost { host: spec(&format!("h{i}")) }
}

/// Writes `n` RegisterHost commands from `first`; returns the last applied log index.
async fn register_hosts(c: &Cluster, first: u64, n: u64) -> u64 {
    let mut last = 0;
    for i in first..first + n {
        let applied = c.write(req(1_000 + i, register(i))).await.expect("write");
        assert_eq!(applied.outcome, Outcome::HostRegistered);
        last = applied.log_id.index;
    }
    last
}

fn states(c: &Cluster) -> Vec<(NodeId, State)> {
    c.members.iter().map(|(id, m)| (*id, m.state.snapshot())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_elect_replicate_and_survive_losing_the_leader() {
    // Goal: commands committed by the first leader are on every member; after the
    // leader crashes the other two elect a new one, keep those commands and go on.
    let mut c = Cluster::start(&[1, 2, 3], Storage::Rocks, config(1_000)).await;
    let first = c.leader(WAIT).await;
    let last = register_hosts(&c, 0, 5).await;
    for id in c.live() {
        c.wait_applied(id, last, WAIT).await;
    }
    for (id, s) in states(&c) {
        assert_eq!(s.hosts().len(), 5, "node {id}");
    }
    c.crash(first).await;
    let second = c.leader(WAIT).await;
    assert_ne!(first, second);
    let last = register_hosts(&c, 5, 5).await;
    for id in c.live() {
        c.wait_applied(id, last, WAIT).await;
    }
    let survivors = states(&c);
    assert_eq!(survivors.len(), 2);
    for (id, s) in &survivors {
        let names: Vec<&String> = s.hosts().keys().collect();
        assert_eq!(names.len(), 10, "node {id}: {names:?}");
    }
    assert!(survivors[0].1 == survivors[1].1, "survivors disagree");
    c.shutdown().await;
}

async fn crashed_member_restarts_from_its_storage(storage: Storage) {
    let mut c = Cluster::start(&[1, 2, 3], storage, config(1_000)).await;
    let leader = c.leader(WAIT).await;
    let follower = c.live().into_iter().find(|id| *id != leader).expect("a follower");
    let last = register_hosts(&c, 0, 3).await;
    c.wait_applied(follower, last, WAIT).await;
    c.crash(follower).await;
    let last = register_hosts(&c, 3, 3).await;
    c.add_member(follower).await;
    // It comes back with what it had, then catches up with what it missed.
    let had = c.members[&follower].state.snapshot();
    assert!(had.hosts().len() >= 3, "restarted member lost its state: {}", had.hosts().len());
    c.wait_applied(follower, last, WAIT).await;
    let s = c.members[&follower].state.snapshot();
    assert_eq!(s.hosts().len(), 6);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_rocksdb_member_restarts_from_its_own_disk() {
    // Goal: a member that crashed reopens its RocksDB store, keeps its state and catches up.
    crashed_member_restarts_from_its_storage(Storage::Rocks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_memory_member_restarts_from_its_kept_store() {
    // Goal: an in-memory store kept outside the crashed member (as a simulation keeps
    // it) is reopened by the restarted member, which keeps its state and catches up.
    crashed_member_restarts_from_its_storage(Storage::Memory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_learner_catches_up_through_a_snapshot() {
    // Goal: once the leader has snapshotted and purged its log, a new learner can only
    // be brought up to date by installing the snapshot; it then holds the same state.
    let c0 = Cluster::start(&[1, 2, 3], Storage::Rocks, config(10)).await;
    let mut c = c0;
    let last = register_hosts(&c, 0, 30).await;
    let leader = c.leader(WAIT).await;
    c.raft(leader)
        .wait(Some(WAIT))
        .metrics(|m| m.purged.is_some_and(|p| p.index >= 10), "leader snapshotted and purged its log")
        .await
        .expect("purged");
    c.add_member(4).await;
    c.raft(leader).add_learner(4, node(4), true).await.expect("learner added");
    let last = last.max(c.raft(leader).metrics().borrow().last_log_index.unwrap_or(0));
    c.wait_applied(4, last, WAIT).await;
    let m = c.raft(4).metrics().borrow().clone();
    let snapshot = m.snapshot.expect("the learner installed a snapshot");
    assert!(snapshot.index >= 10, "snapshot at {snapshot:?}");
    assert!(m.purged.is_some(), "the learner's log starts after the snapshot");
    let learner = c.members[&4].state.snapshot();
    let leader_state = c.members[&leader].state.snapshot();
    assert_eq!(learner.hosts().len(), 30);
    assert!(learner == leader_state, "learner and leader disagree");
    // And it keeps following: one more command reaches it.
    let last = register_hosts(&c, 30, 1).await;
    c.wait_applied(4, last, WAIT).await;
    c.shutdown().await;
}
