//! A 3-member cluster in one process: it elects a leader, replicates commands, keeps
//! every committed command when it loses its leader, lets a crashed member restart
//! from its own storage, brings a new learner up to date through a snapshot, and
//! shares entries between concurrent writes (the [`Batcher`]).

#[path = "support/cluster.rs"]
mod cluster;
mod common;

use cluster::{Cluster, Storage, config, node};
use common::*;
use std::time::Duration;
use tern_raft_store::{Batcher, Command, Error, NodeId, Outcome, RejectCode, State};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_entries_and_each_caller_gets_its_own_answer() {
    // Goal: issue 18: writes that arrive while the leader's entries are in flight go
    // out several to an entry; each caller gets its own outcome or refusal, and every
    // member ends with the state of the writes one to an entry.
    let c = Cluster::start(&[1, 2, 3], Storage::Rocks, config(1_000)).await;
    let leader = c.leader(WAIT).await;
    let batcher = Batcher::start(c.raft(leader).clone(), "agent:test".into());
    let n = 200u64;
    let writes: Vec<_> = (0..n)
        .map(|i| {
            let b = batcher.clone();
            // Every fourth write removes a user that does not exist: refused alone.
            let command = match i % 4 {
                3 => Command::RemoveUser { name: format!("nobody{i}") },
                _ => register(i),
            };
            tokio::spawn(async move { (i, b.propose(req(1_000 + i, command)).await) })
        })
        .collect();
    let mut indexes = std::collections::BTreeSet::new();
    let mut last = 0;
    for w in writes {
        let (i, result) = w.await.expect("write task");
        match (i % 4, result) {
            (3, Err(Error::Rejected(r))) => {
                assert_eq!(r.code, RejectCode::UserUnknown, "write {i}: {r}");
                assert!(r.message.contains(&format!("nobody{i}")), "write {i} got another's refusal: {r}");
            }
            (3, other) => panic!("write {i} should be refused alone: {other:?}"),
            (_, Ok(applied)) => {
                assert_eq!(applied.outcome, Outcome::HostRegistered, "write {i}");
                indexes.insert(applied.log_id.index);
                last = last.max(applied.log_id.index);
            }
            (_, Err(e)) => panic!("write {i} failed: {e}"),
        }
    }
    assert!(indexes.len() < (n as usize) / 2, "{} writes took {} entries", n * 3 / 4, indexes.len());
    for id in c.live() {
        c.wait_applied(id, last, WAIT).await;
    }
    let s = states(&c);
    for (id, state) in &s {
        assert_eq!(state.hosts().len() as u64, n * 3 / 4, "node {id}");
        assert!(state == &s[0].1, "node {id} disagrees with node {}", s[0].0);
    }
    // One audit record per write, none for the batches that carried them.
    let records = s[0].1.audit();
    assert_eq!(records.values().filter(|r| r.actor == "test").count() as u64, n);
    assert_eq!(records.values().filter(|r| r.actor == "agent:test").count(), 0);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_batcher_refuses_a_batch_and_an_invalid_request_before_the_log() {
    // Goal: a caller cannot hand the batcher a batch of its own, and a request that
    // fails validation is refused without reaching the log.
    let c = Cluster::start(&[1, 2, 3], Storage::Memory, config(1_000)).await;
    let leader = c.leader(WAIT).await;
    let batcher = Batcher::start(c.raft(leader).clone(), "agent:test".into());
    let before = c.raft(leader).metrics().borrow().last_log_index;
    let batch = Command::Batch { requests: vec![req(1_000, register(1))] };
    let invalid = Command::RemoveUser { name: "x".repeat(10_000) };
    for command in [batch, invalid] {
        match batcher.propose(req(1_000, command)).await {
            Err(Error::Rejected(r)) => assert_eq!(r.code, RejectCode::InvalidRequest, "{r}"),
            other => panic!("expected a refusal: {other:?}"),
        }
    }
    assert_eq!(c.raft(leader).metrics().borrow().last_log_index, before, "nothing reached the log");
    c.shutdown().await;
}
