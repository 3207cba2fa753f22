//! An in-memory log store and state machine, for simulations and tests: a disk with a
//! page cache in front of it.
//!
//! A [`MemStore`] is the disk and its cache, shared through an `Arc`, so a simulation
//! can drop (crash) the Raft instance that used it and [`MemStore::open`] it again for
//! the restarted member. Every write lands in the cache first, which the running member
//! reads, and reaches the disk only at a sync, as a RocksDB write reaches the
//! write-ahead log in the page cache and is durable only once the log is synced. The
//! store syncs where [`crate::rocks`] does:
//! - **vote**, **truncate**, **purge**, **apply**, snapshot **build** and **install**:
//!   synced before they return;
//! - **append**: in the cache at once; a flusher task syncs after the store's sync
//!   delay and only then reports the entries flushed (openraft counts an entry toward a
//!   quorum only after that report);
//! - the **committed** mark: never synced by itself; the next sync carries it.
//!
//! A sync makes every earlier write durable too (the log is one file, synced as a
//! prefix). [`MemStore::crash`] is a power loss: of the writes not yet synced, the
//! oldest `keep` reached the disk and the rest are lost, and the member restarts from
//! what the disk holds. A process that dies while its machine stays up loses nothing
//! (the cache survives): reopen without `crash`.
//!
//! Apply persists before it publishes, as with RocksDB: the batch is applied to the
//! cache's machine (the working copy), synced, and only then copied to the
//! [`StateHandle`] readers query.
//!
//! [`MemStore::fail_writes`] makes the disk refuse every write (a full or failing
//! disk), so simulations can show what a member does when its storage fails.
//! [`MemStore::votes_since`] lists every vote the member saved, in order, whatever a crash
//! later took back: what it may have told a candidate, for a checker of "one vote per
//! term".

use crate::sm::{self, Machine, StateHandle};
use crate::state::RowKey;
use crate::{Entry, LogId, Response, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{OptionalSend, RaftLogReader, RaftSnapshotBuilder, StorageIOError};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// What one copy (the cache or the disk) holds.
#[derive(Clone, Debug, Default)]
struct Image {
    entries: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
    machine: Machine,
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
}

/// One write, as it is replayed onto the disk at a sync or a crash.
#[derive(Clone, Debug)]
enum Write {
    Append(Vec<Entry>),
    Vote(Vote),
    Committed(Option<LogId>),
    Truncate(u64),
    Purge(LogId),
    Apply(Vec<Entry>),
    Install(Box<(SnapshotMeta, Vec<u8>, Machine)>),
    Snapshot(SnapshotMeta, Vec<u8>),
}

impl Image {
    /// Performs `w`; for an apply, the responses and the rows it changed.
    fn write(&mut self, w: &Write) -> (Vec<Response>, BTreeSet<RowKey>) {
        match w {
            Write::Append(entries) => {
                for e in entries {
                    self.entries.insert(e.log_id.index, e.clone());
                }
            }
            Write::Vote(v) => self.vote = Some(*v),
            Write::Committed(c) => self.committed = *c,
            Write::Truncate(index) => {
                self.entries.split_off(index);
            }
            Write::Purge(log_id) => {
                self.last_purged = Some(*log_id);
                self.entries = self.entries.split_off(&(log_id.index.saturating_add(1)));
            }
            Write::Apply(entries) => return self.machine.stage(entries.iter().cloned()),
            Write::Install(install) => {
                let (meta, data, machine) = &**install;
                self.machine = machine.clone();
                self.snapshot = Some((meta.clone(), data.clone()));
            }
            Write::Snapshot(meta, data) => self.snapshot = Some((meta.clone(), data.clone())),
        }
        (Vec::new(), BTreeSet::new())
    }
}

#[derive(Debug, Default)]
struct Pages {
    /// What the running member reads: the disk plus `unsynced`.
    cache: Image,
    /// What survives a power loss.
    disk: Image,
    /// Writes in the cache and not yet on the disk, oldest first.
    unsynced: Vec<Write>,
}

impl Pages {
    fn sync(&mut self) {
        for w in std::mem::take(&mut self.unsynced) {
            self.disk.write(&w);
        }
    }
}

#[derive(Default)]
struct Shared {
    pages: Mutex<Pages>,
    /// What readers see: the machine as last synced by apply.
    published: StateHandle,
    /// Append callbacks waiting for the flusher, in append order.
    flushing: Mutex<VecDeque<LogFlushed<TypeConfig>>>,
    /// How long the flusher takes to sync (zero: at the next turn of the runtime).
    sync_delay: Mutex<Duration>,
    /// Bumped by every crash: a flusher of a member that died does nothing.
    epoch: AtomicU64,
    snapshot_sequence: AtomicU64,
    /// Every vote saved, in order, crashes or not.
    votes: Mutex<Vec<Vote>>,
    /// Every write fails while set ([`MemStore::fail_writes`]).
    failing: AtomicBool,
}

impl Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemStore")
            .field("unsynced", &self.pages.try_lock().map(|p| p.unsynced.len()).ok())
            .field("flushing", &self.flushing.try_lock().map(|f| f.len()).ok())
            .field("failing", &self.failing)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section below leaves the data consistent before it can panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a [`MemStore::crash`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashLoss {
    /// Unsynced writes that reached the disk anyway.
    pub kept: usize,
    /// Unsynced writes lost.
    pub lost: usize,
}

/// One member's storage, kept outside the member so it outlives a simulated crash.
#[derive(Clone, Debug, Default)]
pub struct MemStore {
    shared: Arc<Shared>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store whose flusher takes `delay` to sync appended entries (simulated time in
    /// a simulation): the window in which a crash loses entries Raft has not yet been
    /// told are flushed.
    pub fn with_sync_delay(delay: Duration) -> Self {
        let store = Self::default();
        *lock(&store.shared.sync_delay) = delay;
        store
    }

    /// A log store and a state machine over this storage, for `Raft::new`. Call again
    /// after the previous Raft instance is gone to "restart" the member.
    pub fn open(&self) -> (MemLogStore, MemStateMachine) {
        (MemLogStore { store: self.clone() }, MemStateMachine { store: self.clone() })
    }

    /// A read handle on the applied state.
    pub fn state(&self) -> StateHandle {
        self.shared.published.clone()
    }

    /// From now on (`true`) every write (append, vote, commit mark, truncate, purge, apply, snapshot) fails with an
    /// I/O error, as on a full or failing disk; `false` repairs it. What was written
    /// before stays.
    pub fn fail_writes(&self, failing: bool) {
        self.shared.failing.store(failing, Ordering::SeqCst);
    }

    /// How many writes are in the cache and not yet on the disk.
    pub fn unsynced_writes(&self) -> usize {
        lock(&self.shared.pages).unsynced.len()
    }

    /// The machine loses power: the oldest `keep` unsynced writes reached the disk, the
    /// others are lost; the cache and the readers' state become what the disk holds.
    /// Call it once the member's Raft is gone, before reopening.
    pub fn crash(&self, keep: usize) -> CrashLoss {
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
        lock(&self.shared.flushing).clear();
        let mut pages = lock(&self.shared.pages);
        let unsynced = std::mem::take(&mut pages.unsynced);
        let kept = keep.min(unsynced.len());
        for w in &unsynced[..kept] {
            pages.disk.write(w);
        }
        pages.cache = pages.disk.clone();
        self.shared.published.replace(pages.disk.machine.clone());
        CrashLoss { kept, lost: unsynced.len() - kept }
    }

    /// The votes this member saved after its first `seen`, oldest first, including votes
    /// a crash took back (a checker passes how many it has already read).
    pub fn votes_since(&self, seen: usize) -> Vec<Vote> {
        lock(&self.shared.votes).get(seen..).map(<[Vote]>::to_vec).unwrap_or_default()
    }

    fn check_writable(&self) -> Result<(), std::io::Error> {
        if self.shared.failing.load(Ordering::SeqCst) {
            Err(std::io::Error::other("simulated disk failure: no space left on device"))
        } else {
            Ok(())
        }
    }

    /// Performs `w` in the cache and, when `synced`, syncs it (and everything before it).
    fn write(&self, w: Write, synced: bool) -> (Vec<Response>, BTreeSet<RowKey>) {
        let mut pages = lock(&self.shared.pages);
        let out = pages.cache.write(&w);
        pages.unsynced.push(w);
        if synced {
            pages.sync();
        }
        out
    }

    fn pages(&self) -> MutexGuard<'_, Pages> {
        lock(&self.shared.pages)
    }

    /// The flusher's turn: sync, then report every waiting append flushed, in order.
    fn flush(&self, epoch: u64) {
        if self.shared.epoch.load(Ordering::SeqCst) != epoch {
            return; // the member that appended died; its callbacks are gone
        }
        let result = self.check_writable();
        if result.is_ok() {
            self.pages().sync();
        }
        let waiting: Vec<_> = lock(&self.shared.flushing).drain(..).collect();
        for callback in waiting {
            callback.log_io_completed(result.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string())));
        }
    }
}

/// The log half of a [`MemStore`].
#[derive(Clone, Debug)]
pub struct MemLogStore {
    store: MemStore,
}

impl RaftLogReader<TypeConfig> for MemLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.store.pages().cache.entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for MemLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let pages = self.store.pages();
        let log = &pages.cache;
        let last = log.entries.values().next_back().map(|e| e.log_id).or(log.last_purged);
        Ok(LogState { last_purged_log_id: log.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.store.check_writable().map_err(|e| StorageIOError::write_vote(&e))?;
        self.store.write(Write::Vote(*vote), true);
        lock(&self.store.shared.votes).push(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.store.pages().cache.vote)
    }

    /// Not synced, as with RocksDB: losing it only makes a restarted member re-apply
    /// from its last applied id.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.store.check_writable().map_err(|e| StorageIOError::write_logs(&e))?;
        self.store.write(Write::Committed(committed), false);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.store.pages().cache.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.store.check_writable().map_err(|e| StorageIOError::write_logs(&e))?;
        self.store.write(Write::Append(entries.into_iter().collect()), false);
        lock(&self.store.shared.flushing).push_back(callback);
        let store = self.store.clone();
        let epoch = store.shared.epoch.load(Ordering::SeqCst);
        let delay = *lock(&store.shared.sync_delay);
        tokio::spawn(async move {
            if delay.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(delay).await;
            }
            store.flush(epoch);
        });
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.store.check_writable().map_err(|e| StorageIOError::write_logs(&e))?;
        self.store.write(Write::Truncate(log_id.index), true);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.store.check_writable().map_err(|e| StorageIOError::write_logs(&e))?;
        self.store.write(Write::Purge(log_id), true);
        Ok(())
    }
}

/// The state-machine half of a [`MemStore`].
#[derive(Clone, Debug)]
pub struct MemStateMachine {
    store: MemStore,
}

/// Builds a snapshot of the state as it was when the builder was made.
#[derive(Debug)]
pub struct MemSnapshotBuilder {
    store: MemStore,
    image: crate::codec::SnapshotImage,
}

impl RaftSnapshotBuilder<TypeConfig> for MemSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let sequence = self.store.shared.snapshot_sequence.fetch_add(1, Ordering::SeqCst) + 1;
        let (meta, data) = sm::build_snapshot(&self.image, sequence)?;
        self.store.check_writable().map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.store.write(Write::Snapshot(meta.clone(), data.clone()), true);
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for MemStateMachine {
    type SnapshotBuilder = MemSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let pages = self.store.pages();
        let m = &pages.cache.machine;
        Ok((m.last_applied, m.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.store.check_writable().map_err(|e| StorageIOError::write_state_machine(&e))?;
        let (responses, rows) = self.store.write(Write::Apply(entries.into_iter().collect()), true);
        // Synced: now readers may see it (only this half writes the machine).
        self.store.shared.published.publish(&self.store.pages().cache.machine, &rows);
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let image = self.store.pages().cache.machine.image();
        MemSnapshotBuilder { store: self.store.clone(), image }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let image = sm::read_snapshot(meta, &data)?;
        self.store.check_writable().map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        let machine = Machine::from_image(image);
        self.store.write(Write::Install(Box::new((meta.clone(), data, machine.clone()))), true);
        self.store.shared.published.replace(machine);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self
            .store
            .pages()
            .cache
            .snapshot
            .as_ref()
            .map(|(meta, data)| Snapshot { meta: meta.clone(), snapshot: Box::new(Cursor::new(data.clone())) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn blank(term: u64, index: u64) -> Entry {
        Entry { log_id: log_id(term, index), payload: EntryPayload::Blank }
    }

    #[tokio::test]
    async fn a_power_loss_takes_the_unsynced_commit_mark_and_keeps_the_synced_vote() {
        // Goal: what a sync covers survives a crash; what it does not cover is lost.
        let store = MemStore::new();
        let (mut log, _) = store.open();
        log.save_vote(&Vote::new(2, 1)).await.unwrap();
        log.save_committed(Some(log_id(2, 5))).await.unwrap();
        assert_eq!(store.unsynced_writes(), 1);
        assert_eq!(store.crash(0), CrashLoss { kept: 0, lost: 1 });
        let (mut log, _) = store.open();
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
        assert_eq!(log.read_committed().await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_power_loss_keeps_the_oldest_unsynced_writes_it_is_told_reached_the_disk() {
        // Goal: "in part" means a prefix of the unsynced writes, in the order they were made.
        let store = MemStore::new();
        let (mut log, _) = store.open();
        log.save_committed(Some(log_id(1, 3))).await.unwrap();
        log.save_committed(Some(log_id(1, 4))).await.unwrap();
        assert_eq!(store.crash(1), CrashLoss { kept: 1, lost: 1 });
        let (mut log, _) = store.open();
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 3)));
    }

    #[tokio::test]
    async fn a_sync_carries_every_earlier_write_to_the_disk() {
        // Goal: the log is one file synced as a prefix: a synced vote makes the commit mark before it durable.
        let store = MemStore::new();
        let (mut log, _) = store.open();
        log.save_committed(Some(log_id(1, 3))).await.unwrap();
        log.save_vote(&Vote::new(3, 2)).await.unwrap();
        assert_eq!(store.crash(0), CrashLoss { kept: 0, lost: 0 });
        let (mut log, _) = store.open();
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 3)));
    }

    #[tokio::test]
    async fn a_process_restart_without_power_loss_keeps_the_page_cache() {
        // Goal: reopening without `crash` (the agent died, its machine did not) loses nothing.
        let store = MemStore::new();
        let (mut log, _) = store.open();
        log.save_committed(Some(log_id(1, 7))).await.unwrap();
        drop(log);
        let (mut log, _) = store.open();
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 7)));
    }

    #[tokio::test]
    async fn an_apply_is_on_disk_before_readers_see_it() {
        // Goal: apply persists before it publishes: what a reader saw, a crash cannot take back.
        let store = MemStore::new();
        let (_, mut sm) = store.open();
        let readers = store.state();
        sm.apply([blank(1, 1), blank(1, 2)]).await.unwrap();
        assert_eq!(readers.last_applied(), Some(log_id(1, 2)));
        store.crash(0);
        assert_eq!(readers.last_applied(), Some(log_id(1, 2)));
        let (_, mut sm) = store.open();
        assert_eq!(sm.applied_state().await.unwrap().0, Some(log_id(1, 2)));
    }

    #[tokio::test]
    async fn the_vote_record_keeps_votes_a_power_loss_took_back() {
        // Goal: a checker of one vote per term sees every vote the member may have given.
        let store = MemStore::new();
        let (mut log, _) = store.open();
        log.save_vote(&Vote::new(4, 1)).await.unwrap();
        store.crash(0);
        let (mut log, _) = store.open();
        log.save_vote(&Vote::new(5, 3)).await.unwrap();
        assert_eq!(store.votes_since(0), vec![Vote::new(4, 1), Vote::new(5, 3)]);
        assert_eq!(store.votes_since(1), vec![Vote::new(5, 3)]);
    }

    #[tokio::test]
    async fn a_failing_disk_refuses_every_write_and_keeps_what_it_had() {
        // Goal: fail_writes is a full disk: errors, no change.
        let store = MemStore::new();
        let (mut log, mut sm) = store.open();
        log.save_vote(&Vote::new(1, 1)).await.unwrap();
        store.fail_writes(true);
        assert!(log.save_vote(&Vote::new(2, 2)).await.is_err());
        assert!(sm.apply([blank(1, 1)]).await.is_err());
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(1, 1)));
        assert_eq!(store.state().last_applied(), None);
    }
}
