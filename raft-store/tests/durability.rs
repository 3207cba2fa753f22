//! Durability of the RocksDB store: what was acknowledged (an append whose callback
//! fired, a saved vote, an applied batch) is found again after the store is dropped
//! without a clean shutdown, and after a crash image of its files is reopened.
//!
//! The store flushes its write-ahead log by hand, so a write it did not sync is still
//! in the process, not in the files: a crash image taken right after a write returns
//! holds it only if the write was synced. These tests therefore fail when a sync is
//! missing (a scratch build whose `save_vote` wrote without syncing failed
//! `each_acknowledged_write_is_in_a_crash_image_taken_as_it_returns`).

mod common;

use common::*;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, EntryPayload, Membership, RaftLogReader};
use std::collections::BTreeSet;
use std::path::Path;
use tern_raft_store::{Entry, LogId, State, Vote, rocks};

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// A membership entry, then the commands that register two hosts, report a guest and
/// reserve it a place on the second host.
fn entries() -> Vec<Entry> {
    let commands = migration_reserved();
    let mut out = vec![Entry {
        log_id: log_id(1, 1),
        payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1, 2, 3])], None)),
    }];
    for (i, c) in commands.into_iter().enumerate() {
        out.push(Entry { log_id: log_id(1, i as u64 + 2), payload: EntryPayload::Normal(req(1_000 + i as u64, c)) });
    }
    out
}

/// Copies a live database directory: the files as a crash would leave them.
fn crash_image(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for f in std::fs::read_dir(from).expect("readdir") {
        let f = f.expect("entry");
        std::fs::copy(f.path(), to.join(f.file_name())).expect("copy");
    }
}

/// Writes a vote, appends and applies every entry, and returns the applied state.
async fn write_all(dir: &Path) -> (rocks::RocksLogStore, rocks::RocksStateMachine, State) {
    let (mut log, mut sm) = rocks::open(dir).expect("open");
    log.save_vote(&Vote::new_committed(1, 1)).await.expect("vote");
    let all = entries();
    // Two appends: acknowledged once blocking_append returns (the flush callback fired).
    log.blocking_append(all[..3].to_vec()).await.expect("append");
    log.blocking_append(all[3..].to_vec()).await.expect("append");
    let responses = sm.apply(all).await.expect("apply");
    assert!(responses.iter().all(Result::is_ok), "{responses:?}");
    let state = sm.state().snapshot();
    assert_eq!(state.reservations().len(), 1);
    (log, sm, state)
}

async fn check_reopened(dir: &Path, expected: &State) {
    let (mut log, mut sm) = rocks::open(dir).expect("reopen");
    assert_eq!(log.read_vote().await.expect("vote"), Some(Vote::new_committed(1, 1)));
    let all = entries();
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_log_id, Some(all[all.len() - 1].log_id));
    let found = log.try_get_log_entries(0..100).await.expect("entries");
    assert_eq!(found, all);
    let (applied, membership) = sm.applied_state().await.expect("applied");
    assert_eq!(applied, Some(all[all.len() - 1].log_id));
    assert_eq!(membership.log_id(), &Some(log_id(1, 1)));
    assert!(sm.state().snapshot() == *expected, "the applied state differs after reopening");
}

#[tokio::test]
async fn a_crash_image_holds_every_acknowledged_entry_and_the_applied_state() {
    // Goal: copying the files of a live store (a crash, no shutdown) and opening the
    // copy finds the vote, every acknowledged entry and the applied state.
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("live");
    let (log, sm, expected) = write_all(&live).await;
    let image = dir.path().join("image");
    crash_image(&live, &image);
    check_reopened(&image, &expected).await;
    drop((log, sm));
}

#[tokio::test]
async fn a_dropped_store_reopens_with_everything_it_acknowledged() {
    // Goal: dropping the store without any shutdown call loses nothing acknowledged.
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, sm, expected) = write_all(dir.path()).await;
    drop((log, sm));
    check_reopened(dir.path(), &expected).await;
}

#[tokio::test]
async fn purge_and_truncate_survive_reopening() {
    // Goal: a purge records last_purged and removes the prefix; a truncate removes the
    // suffix; both hold after a crash image is reopened.
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("live");
    let (mut log, _sm, _) = write_all(&live).await;
    log.purge(log_id(1, 3)).await.expect("purge");
    log.truncate(log_id(1, 6)).await.expect("truncate");
    let image = dir.path().join("image");
    crash_image(&live, &image);
    let (mut log2, _sm2) = rocks::open(&image).expect("reopen");
    let state = log2.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(1, 5)));
    let found: Vec<u64> =
        log2.try_get_log_entries(0..100).await.expect("entries").iter().map(|e| e.log_id.index).collect();
    assert_eq!(found, vec![4, 5]);
}

/// Opens a crash image of `live` taken now, in a fresh folder under `scratch`.
fn reopen_image(live: &Path, scratch: &Path, name: &str) -> (rocks::RocksLogStore, rocks::RocksStateMachine) {
    let image = scratch.join(name);
    crash_image(live, &image);
    rocks::open(&image).expect("reopen the crash image")
}

#[tokio::test]
async fn each_acknowledged_write_is_in_a_crash_image_taken_as_it_returns() {
    // Goal: a vote, an append, an apply, a truncate and a purge are each on disk the
    // moment they return: no later sync is needed to carry them.
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("live");
    let (mut log, mut sm) = rocks::open(&live).expect("open");
    let all = entries();

    log.save_vote(&Vote::new(2, 3)).await.expect("vote");
    let (mut l, _s) = reopen_image(&live, dir.path(), "after-vote");
    assert_eq!(l.read_vote().await.expect("vote"), Some(Vote::new(2, 3)), "the vote was not synced");

    log.blocking_append(all.clone()).await.expect("append");
    let (mut l, _s) = reopen_image(&live, dir.path(), "after-append");
    assert_eq!(l.try_get_log_entries(0..100).await.expect("entries"), all, "the flushed append was not synced");

    sm.apply(all.clone()).await.expect("apply");
    let expected = sm.state().snapshot();
    let (_l, mut s) = reopen_image(&live, dir.path(), "after-apply");
    assert_eq!(s.applied_state().await.expect("applied").0, Some(all[all.len() - 1].log_id));
    assert!(s.state().snapshot() == expected, "the applied rows were not synced");

    log.truncate(log_id(1, 6)).await.expect("truncate");
    let (mut l, _s) = reopen_image(&live, dir.path(), "after-truncate");
    assert_eq!(l.get_log_state().await.expect("state").last_log_id, Some(log_id(1, 5)), "the truncate was not synced");

    log.purge(log_id(1, 3)).await.expect("purge");
    let (mut l, _s) = reopen_image(&live, dir.path(), "after-purge");
    assert_eq!(
        l.get_log_state().await.expect("state").last_purged_log_id,
        Some(log_id(1, 3)),
        "the purge was not synced"
    );
}

#[tokio::test]
async fn a_crash_image_lacks_the_write_that_was_never_synced_and_a_clean_close_keeps_it() {
    // Goal: the crash image really models a crash: the commit mark, never synced by
    // itself, is missing from an image taken at once, and present after a clean close.
    let dir = tempfile::tempdir().expect("tempdir");
    let live = dir.path().join("live");
    let (mut log, sm, _) = write_all(&live).await;
    log.save_committed(Some(log_id(1, 4))).await.expect("commit mark");
    let (mut l, _s) = reopen_image(&live, dir.path(), "image");
    assert_eq!(l.read_committed().await.expect("committed"), None, "an unsynced write reached the files");
    drop((l, _s, log, sm));
    let (mut log, _sm) = rocks::open(&live).expect("reopen after a clean close");
    assert_eq!(log.read_committed().await.expect("committed"), Some(log_id(1, 4)));
}
