//! What the store times, for whoever watches it (the agent's `/metrics`).
//!
//! The store stays free of any metrics library: it reports durations to a
//! [`StoreObserver`], and [`rocks::open_observed`](crate::rocks::open_observed) takes one.
//! Timings are read from a monotonic clock around I/O only; the state machine's apply
//! logic itself reads no clock.

use std::time::Duration;

/// One timed step of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timing {
    /// One group-commit sync of the write-ahead log (`flush_wal(true)`), shared by every
    /// append queued while the previous sync ran.
    WalSync,
    /// One synced write batch (votes, truncation, purge, applied rows, snapshots).
    BatchSync,
    /// One state-machine apply batch: the entries applied and their rows written synced.
    Apply,
    /// Building a snapshot and writing it synced.
    SnapshotBuild,
    /// Installing a snapshot received from the leader.
    SnapshotInstall,
}

impl Timing {
    pub const ALL: [Timing; 5] =
        [Timing::WalSync, Timing::BatchSync, Timing::Apply, Timing::SnapshotBuild, Timing::SnapshotInstall];
}

/// Receives the store's timings. Called on the store's threads: keep it cheap.
pub trait StoreObserver: Send + Sync + std::fmt::Debug {
    fn timed(&self, what: Timing, took: Duration);
}

/// Watches nothing (tests, tools).
#[derive(Debug, Default)]
pub struct Unobserved;

impl StoreObserver for Unobserved {
    fn timed(&self, _: Timing, _: Duration) {}
}
