//! An in-memory log store and state machine, for simulations and tests.
//!
//! A [`MemStore`] is the "disk": it is shared through an `Arc`, so a simulation can
//! drop (crash) the Raft instance that used it and [`MemStore::open`] it again for the
//! restarted member, which then finds every entry, vote and applied state it had. Every
//! write is "durable" the moment it returns; it has no torn writes to simulate.
//!
//! [`MemStore::fail_writes`] makes the "disk" refuse every write (a full or failing
//! disk), so simulations can show what a member does when its storage fails.

use crate::sm::{self, Machine, StateHandle};
use crate::{Entry, LogId, Response, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{OptionalSend, RaftLogReader, RaftSnapshotBuilder};
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

#[derive(Debug, Default)]
struct LogData {
    entries: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

#[derive(Debug, Default)]
struct Shared {
    log: Mutex<LogData>,
    machine: StateHandle,
    snapshot: Mutex<Option<(SnapshotMeta, Vec<u8>)>>,
    snapshot_sequence: Mutex<u64>,
    /// Every write fails while set ([`MemStore::fail_writes`]).
    failing: std::sync::atomic::AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section below leaves the data consistent before it can panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
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

    /// A log store and a state machine over this storage, for `Raft::new`. Call again
    /// after the previous Raft instance is gone to "restart" the member.
    pub fn open(&self) -> (MemLogStore, MemStateMachine) {
        (MemLogStore { store: self.clone() }, MemStateMachine { store: self.clone() })
    }

    /// A read handle on the applied state.
    pub fn state(&self) -> StateHandle {
        self.shared.machine.clone()
    }

    /// From now on (`true`) every log append, vote, commit mark and apply fails with an
    /// I/O error, as on a full or failing disk; `false` repairs it. What was written
    /// before stays.
    pub fn fail_writes(&self, failing: bool) {
        self.shared.failing.store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    fn check_writable(&self) -> Result<(), std::io::Error> {
        if self.shared.failing.load(std::sync::atomic::Ordering::SeqCst) {
            Err(std::io::Error::other("simulated disk failure: no space left on device"))
        } else {
            Ok(())
        }
    }
}

/// The log half of a [`MemStore`].
#[derive(Clone, Debug)]
pub struct MemLogStore {
    store: MemStore,
}

impl MemLogStore {
    fn log(&self) -> MutexGuard<'_, LogData> {
        lock(&self.store.shared.log)
    }
}

impl RaftLogReader<TypeConfig> for MemLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.log().entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for MemLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let log = self.log();
        let last = log.entries.values().next_back().map(|e| e.log_id).or(log.last_purged);
        Ok(LogState { last_purged_log_id: log.last_purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.store.check_writable().map_err(|e| openraft::StorageIOError::write_vote(&e))?;
        self.log().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.log().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.store.check_writable().map_err(|e| openraft::StorageIOError::write_logs(&e))?;
        self.log().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.log().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.store.check_writable().map_err(|e| openraft::StorageIOError::write_logs(&e))?;
        {
            let mut log = self.log();
            for e in entries {
                log.entries.insert(e.log_id.index, e);
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.log().entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut log = self.log();
        log.last_purged = Some(log_id);
        let keep = log.entries.split_off(&(log_id.index.saturating_add(1)));
        log.entries = keep;
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
        let sequence = {
            let mut s = lock(&self.store.shared.snapshot_sequence);
            *s += 1;
            *s
        };
        let (meta, data) = sm::build_snapshot(&self.image, sequence)?;
        *lock(&self.store.shared.snapshot) = Some((meta.clone(), data.clone()));
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for MemStateMachine {
    type SnapshotBuilder = MemSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let m = self.store.shared.machine.lock_read();
        Ok((m.last_applied, m.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.store.check_writable().map_err(|e| openraft::StorageIOError::write_state_machine(&e))?;
        let mut m = self.store.shared.machine.lock_write();
        let responses = m.apply_entries(entries);
        // Nothing to persist: the rows live in memory; forget which ones changed.
        m.state.take_dirty();
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        let image = self.store.shared.machine.lock_read().image();
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
        *self.store.shared.machine.lock_write() = Machine::from_image(image);
        *lock(&self.store.shared.snapshot) = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        Ok(lock(&self.store.shared.snapshot)
            .as_ref()
            .map(|(meta, data)| Snapshot { meta: meta.clone(), snapshot: Box::new(Cursor::new(data.clone())) }))
    }
}
