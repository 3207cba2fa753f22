//! The durable log store and state machine, in one RocksDB database.
//!
//! Column families:
//!
//! | family | key | value |
//! |---|---|---|
//! | `log` | log index, u64 big-endian (byte order = numeric order) | encoded [`crate::Entry`] |
//! | `log_meta` | `vote`, `last_purged`, `committed` | encoded metadata |
//! | `sm` | state row keys (`h/<host>`, `r/<id BE>`, ...) | encoded rows |
//! | `sm_meta` | `last_applied`, `membership`, `snapshot_meta`, `snapshot_data` | encoded metadata, snapshot bytes |
//!
//! Durability, decision by decision:
//! - **append**: the entries go to RocksDB in one batch without waiting for the disk;
//!   the callback goes to a flusher thread, which syncs the write-ahead log
//!   (`flush_wal(true)`) and only then reports the entries flushed. All callbacks that
//!   queued during one sync share the next one (group commit), and they complete in
//!   order. Raft counts an entry toward a quorum only after its callback.
//! - **vote**: written with a synced write before `save_vote` returns: a member must
//!   never forget a vote it gave.
//! - **truncate** and **purge**: synced. A truncated entry that came back after a crash
//!   could be counted again; purge writes `last_purged` first in the same atomic batch
//!   as the range delete, so the log never has a hole that `last_purged` does not explain.
//! - **apply**: the batch of entries is applied to the state machine's private working
//!   copy; the rows it changed and `last_applied` go in one synced batch, so the stored
//!   state is always exactly the state at `last_applied`; only then are those rows
//!   published to readers (apply persists before it publishes: no query, preflight or
//!   reply ever shows state a crash could take back).
//! - **snapshot install**: the old rows are range-deleted and the snapshot's rows
//!   written in one synced batch with the new `last_applied`.
//!
//! Synced writes run on tokio's blocking pool, so a 3 ms fsync never stalls the runtime.
//!
//! The write-ahead log is flushed by hand (`manual_wal_flush`): a write that is not
//! synced stays in RocksDB's buffer, in the process, until the next sync. So a process
//! that dies (kill -9) loses exactly what a power loss would, whatever was never
//! synced, and a test that kills `ternd` or copies a live store's files shows a missing
//! sync as a lost write instead of hiding it in the OS page cache. A clean close syncs
//! the buffer.

use crate::codec::{self, Kind};
use crate::error::Error;
use crate::limits;
use crate::observe::{StoreObserver, Timing, Unobserved};
use crate::sm::{self, Machine, StateHandle};
use crate::state::{RowKey, State};
use crate::{Entry, LogId, Response, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig, Vote};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, RaftSnapshotBuilder, StorageIOError};
use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, DB, Direction, IteratorMode, Options, WriteBatch, WriteOptions};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::mpsc;

const CF_LOG: &str = "log";
const CF_LOG_META: &str = "log_meta";
const CF_SM: &str = "sm";
const CF_SM_META: &str = "sm_meta";

const KEY_VOTE: &[u8] = b"vote";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_APPLIED: &[u8] = b"last_applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_SNAPSHOT_META: &[u8] = b"snapshot_meta";
const KEY_SNAPSHOT_DATA: &[u8] = b"snapshot_data";

/// Appends waiting for the flusher; `append` waits when it is full.
const FLUSH_QUEUE_MAX: usize = 4096;
/// Largest metadata value read back (votes, log ids, memberships).
const META_BYTES_MAX: usize = 1 << 20;

type Io = std::io::Error;

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn index_of(key: &[u8]) -> Result<u64, Io> {
    <[u8; 8]>::try_from(key)
        .map(u64::from_be_bytes)
        .map_err(|_| Io::other(format!("log key of {} bytes, not 8", key.len())))
}

/// The open database, shared by the two halves.
#[derive(Debug)]
struct Db {
    db: DB,
    path: PathBuf,
    observer: Arc<dyn StoreObserver>,
}

impl Drop for Db {
    /// A clean close: what is only in the WAL buffer (a commit mark) goes to disk.
    fn drop(&mut self) {
        if let Err(e) = self.db.flush_wal(true) {
            tracing::error!(path = %self.path.display(), error = %e, "syncing the write-ahead log at close failed");
        }
    }
}

impl Db {
    fn cf(&self, name: &str) -> Result<&ColumnFamily, Io> {
        self.db
            .cf_handle(name)
            .ok_or_else(|| Io::other(format!("column family {name} is missing from {}", self.path.display())))
    }

    fn get_meta<T: DeserializeOwned>(&self, cf: &str, key: &[u8]) -> Result<Option<T>, Io> {
        match self.db.get_pinned_cf(self.cf(cf)?, key).map_err(Io::other)? {
            None => Ok(None),
            Some(bytes) => codec::decode(Kind::Meta, &bytes, META_BYTES_MAX).map(Some).map_err(Io::other),
        }
    }

    fn put_meta<T: Serialize>(&self, batch: &mut WriteBatch, cf: &str, key: &[u8], value: &T) -> Result<(), Io> {
        let bytes = codec::encode(Kind::Meta, value).map_err(Io::other)?;
        batch.put_cf(self.cf(cf)?, key, bytes);
        Ok(())
    }

    /// Writes `batch` and waits until it is on disk, off the async threads.
    async fn write_synced(self: &Arc<Self>, batch: WriteBatch) -> Result<(), Io> {
        let db = Arc::clone(self);
        tokio::task::spawn_blocking(move || db.write_synced_here(batch)).await.map_err(Io::other)?
    }

    /// Writes `batch` and returns once it is on disk; blocks the calling thread.
    fn write_synced_here(&self, batch: WriteBatch) -> Result<(), Io> {
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        let started = Instant::now();
        let written = self.db.write_opt(batch, &opts).map_err(Io::other);
        self.observer.timed(Timing::BatchSync, started.elapsed());
        written
    }
}

/// Opens (or creates) the database at `path` and returns its two halves for `Raft::new`.
pub fn open(path: impl AsRef<Path>) -> Result<(RocksLogStore, RocksStateMachine), Error> {
    open_observed(path, Arc::new(Unobserved))
}

/// [`open`], reporting the store's sync, apply and snapshot timings to `observer`.
pub fn open_observed(
    path: impl AsRef<Path>,
    observer: Arc<dyn StoreObserver>,
) -> Result<(RocksLogStore, RocksStateMachine), Error> {
    let path = path.as_ref().to_path_buf();
    let storage_err = |e: &dyn std::fmt::Display| Error::Storage { path: path.clone(), message: e.to_string() };
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    opts.set_max_background_jobs(2);
    opts.set_manual_wal_flush(true);
    let cfs = [CF_LOG, CF_LOG_META, CF_SM, CF_SM_META]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    let db = DB::open_cf_descriptors(&opts, &path, cfs).map_err(|e| storage_err(&e))?;
    let db = Arc::new(Db { db, path: path.clone(), observer });
    let machine = load_machine(&db).map_err(|e| storage_err(&e))?;
    let (tx, rx) = mpsc::channel(FLUSH_QUEUE_MAX);
    let flusher_db = Arc::clone(&db);
    let thread = std::thread::Builder::new()
        .name("tern-raft-flush".into())
        .spawn(move || flush_loop(flusher_db, rx))
        .map_err(|e| storage_err(&e))?;
    let log = RocksLogStore { db: Arc::clone(&db), flusher: Some(tx), flusher_thread: Some(thread) };
    let sm = RocksStateMachine {
        db,
        working: machine.clone(),
        machine: StateHandle::new(machine),
        snapshot_sequence: Arc::new(AtomicU64::new(0)),
    };
    Ok((log, sm))
}

/// Group commit: wait for one callback, take every other one already queued, sync the
/// WAL once, then report them all in order.
fn flush_loop(db: Arc<Db>, mut rx: mpsc::Receiver<LogFlushed<TypeConfig>>) {
    while let Some(first) = rx.blocking_recv() {
        let mut waiting = vec![first];
        while let Ok(next) = rx.try_recv() {
            waiting.push(next);
        }
        let started = Instant::now();
        let synced = db.db.flush_wal(true).map_err(|e| e.to_string());
        db.observer.timed(Timing::WalSync, started.elapsed());
        for callback in waiting {
            callback.log_io_completed(synced.clone().map_err(Io::other));
        }
    }
}

fn load_machine(db: &Db) -> Result<Machine, Io> {
    let mut rows = Vec::new();
    for item in db.db.iterator_cf(db.cf(CF_SM)?, IteratorMode::Start) {
        let (k, v) = item.map_err(Io::other)?;
        rows.push((k.into_vec(), v.into_vec()));
    }
    let state = State::from_rows(rows).map_err(Io::other)?;
    let last_applied: Option<LogId> = db.get_meta(CF_SM_META, KEY_LAST_APPLIED)?.flatten();
    let last_membership: StoredMembership = db.get_meta(CF_SM_META, KEY_MEMBERSHIP)?.unwrap_or_default();
    Ok(Machine { state, last_applied, last_membership })
}

// ---- log store ------------------------------------------------------------------

/// The log half: entries, vote, purge point.
///
/// Dropping it stops its flusher thread (after the syncs already queued); once the
/// state machine and every log reader are dropped too, the database is closed and the
/// directory may be opened again.
#[derive(Debug)]
pub struct RocksLogStore {
    db: Arc<Db>,
    flusher: Option<mpsc::Sender<LogFlushed<TypeConfig>>>,
    flusher_thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for RocksLogStore {
    fn drop(&mut self) {
        self.flusher = None; // closes the queue: the thread drains it and returns
        if let Some(t) = self.flusher_thread.take()
            && t.join().is_err()
        {
            tracing::error!(path = %self.db.path.display(), "the WAL flusher thread panicked");
        }
    }
}

/// Reads entries for replication while the log store appends.
#[derive(Clone, Debug)]
pub struct RocksLogReader {
    db: Arc<Db>,
}

fn read_entries<RB: RangeBounds<u64>>(db: &Db, range: RB) -> Result<Vec<Entry>, Io> {
    let start = match range.start_bound() {
        Bound::Included(&i) => i,
        Bound::Excluded(&i) => i.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let from = index_key(start);
    let mut out = Vec::new();
    for item in db.db.iterator_cf(db.cf(CF_LOG)?, IteratorMode::From(&from, Direction::Forward)) {
        let (k, v) = item.map_err(Io::other)?;
        let index = index_of(&k)?;
        if !range.contains(&index) {
            break;
        }
        out.push(codec::decode_entry(&v).map_err(Io::other)?);
    }
    Ok(out)
}

impl RaftLogReader<TypeConfig> for RocksLogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_entries(&self.db, range).map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RaftLogReader<TypeConfig> for RocksLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        read_entries(&self.db, range).map_err(|e| StorageIOError::read_logs(&e).into())
    }
}

impl RocksLogStore {
    fn last_entry_id(&self) -> Result<Option<LogId>, Io> {
        let cf = self.db.cf(CF_LOG)?;
        match self.db.db.iterator_cf(cf, IteratorMode::End).next() {
            None => Ok(None),
            Some(item) => {
                let (_, v) = item.map_err(Io::other)?;
                Ok(Some(codec::decode_entry(&v).map_err(Io::other)?.log_id))
            }
        }
    }

    fn write_err(e: Io) -> StorageError {
        StorageIOError::write_logs(&e).into()
    }
}

impl RaftLogStorage<TypeConfig> for RocksLogStore {
    type LogReader = RocksLogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let read = || -> Result<LogState<TypeConfig>, Io> {
            let last_purged: Option<LogId> = self.db.get_meta(CF_LOG_META, KEY_LAST_PURGED)?;
            let last = self.last_entry_id()?.or(last_purged);
            Ok(LogState { last_purged_log_id: last_purged, last_log_id: last })
        };
        read().map_err(|e| StorageIOError::read_logs(&e).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        RocksLogReader { db: Arc::clone(&self.db) }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        let write = async {
            self.db.put_meta(&mut batch, CF_LOG_META, KEY_VOTE, vote)?;
            self.db.write_synced(batch).await
        };
        write.await.map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.db.get_meta(CF_LOG_META, KEY_VOTE).map_err(|e| StorageIOError::read_vote(&e).into())
    }

    /// Not synced: losing it only makes a restarted member re-apply from its last
    /// applied id, which it does anyway.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        let write = || -> Result<(), Io> {
            self.db.put_meta(&mut batch, CF_LOG_META, KEY_COMMITTED, &committed)?;
            self.db.db.write(batch).map_err(Io::other)
        };
        write().map_err(|e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.db
            .get_meta::<Option<LogId>>(CF_LOG_META, KEY_COMMITTED)
            .map(Option::flatten)
            .map_err(|e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Read, e))
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        {
            let cf = self.db.cf(CF_LOG).map_err(Self::write_err)?;
            for entry in entries {
                let bytes =
                    codec::encode_entry(&entry).map_err(|e| StorageIOError::write_log_entry(entry.log_id, &e))?;
                if bytes.len() > limits::ENTRY_BYTES_MAX {
                    let e = Io::other(format!(
                        "entry {} encodes to {} bytes; the limit is {}",
                        entry.log_id,
                        bytes.len(),
                        limits::ENTRY_BYTES_MAX
                    ));
                    return Err(StorageIOError::write_log_entry(entry.log_id, &e).into());
                }
                batch.put_cf(cf, index_key(entry.log_id.index), bytes);
            }
        }
        // In the WAL and the memtable now; durable once the flusher has synced the WAL.
        self.db.db.write(batch).map_err(|e| Self::write_err(Io::other(e)))?;
        let stopped = || Self::write_err(Io::other("the WAL flusher thread has stopped"));
        let flusher = self.flusher.as_ref().ok_or_else(stopped)?;
        flusher.send(callback).await.map_err(|_| stopped())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        let cf = self.db.cf(CF_LOG).map_err(Self::write_err)?;
        batch.delete_range_cf(cf, index_key(log_id.index), index_key(u64::MAX));
        batch.delete_cf(cf, index_key(u64::MAX));
        self.db.write_synced(batch).await.map_err(Self::write_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        let write = async {
            // last_purged first: it explains the gap the delete leaves.
            self.db.put_meta(&mut batch, CF_LOG_META, KEY_LAST_PURGED, &log_id)?;
            let cf = self.db.cf(CF_LOG)?;
            batch.delete_range_cf(cf, index_key(0), index_key(log_id.index.saturating_add(1)));
            if log_id.index == u64::MAX {
                batch.delete_cf(cf, index_key(u64::MAX));
            }
            self.db.write_synced(batch).await
        };
        write.await.map_err(Self::write_err)
    }
}

// ---- state machine ------------------------------------------------------------------

/// The state-machine half: applied rows, last applied id, current snapshot.
#[derive(Debug)]
pub struct RocksStateMachine {
    db: Arc<Db>,
    /// Where apply runs; equal to `machine` between applies. After a failed write it is
    /// ahead of both disk and readers, and Raft has stopped (a storage error is fatal).
    working: Machine,
    /// What readers see: only what is on disk.
    machine: StateHandle,
    snapshot_sequence: Arc<AtomicU64>,
}

impl RocksStateMachine {
    /// A read handle on the applied state; take it before handing this to `Raft::new`.
    pub fn state(&self) -> StateHandle {
        self.machine.clone()
    }

    fn sm_write_err(e: Io) -> StorageError {
        StorageIOError::write_state_machine(&e).into()
    }
}

/// Builds a snapshot of the state as it was when the builder was made.
#[derive(Debug)]
pub struct RocksSnapshotBuilder {
    db: Arc<Db>,
    /// Taken by the one build (openraft builds once with each builder).
    image: Option<codec::SnapshotImage>,
    sequence: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for RocksSnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let started = Instant::now();
        let (db, sequence) = (Arc::clone(&self.db), self.sequence);
        let image = self.image.take().ok_or_else(|| {
            StorageIOError::write_snapshot(None, &Io::other("this snapshot builder was used already"))
        })?;
        // Encoding the whole state is CPU work: on the blocking pool, with its write.
        let built = tokio::task::spawn_blocking(move || -> Result<(SnapshotMeta, Vec<u8>), Box<StorageError>> {
            let (meta, data) = sm::build_snapshot(&image, sequence).map_err(Box::new)?;
            let mut batch = WriteBatch::default();
            let write = || {
                db.put_meta(&mut batch, CF_SM_META, KEY_SNAPSHOT_META, &meta)?;
                batch.put_cf(db.cf(CF_SM_META)?, KEY_SNAPSHOT_DATA, &data);
                db.write_synced_here(batch)
            };
            write().map_err(|e| Box::new(StorageIOError::write_snapshot(Some(meta.signature()), &e).into()))?;
            Ok((meta, data))
        });
        let (meta, data) =
            built.await.map_err(|e| StorageIOError::write_snapshot(None, &Io::other(e)))?.map_err(|e| *e)?;
        self.db.observer.timed(Timing::SnapshotBuild, started.elapsed());
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for RocksStateMachine {
    type SnapshotBuilder = RocksSnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.working.last_applied, self.working.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = Instant::now();
        let entries: Vec<Entry> = entries.into_iter().collect();
        let db = Arc::clone(&self.db);
        let mut working = std::mem::take(&mut self.working);
        // Applying, encoding the changed rows and the synced write are CPU and disk work
        // (milliseconds for a batch of Reserves): on the blocking pool, so that the
        // runtime's few workers go on serving Raft and the clients meanwhile (issue 18).
        // If that thread panics, `working` is lost with it: the error stops Raft, as
        // every storage error does, and a restart reloads the state from disk.
        let (working, staged) = tokio::task::spawn_blocking(move || {
            let staged = stage_and_store(&db, &mut working, entries);
            (working, staged)
        })
        .await
        .map_err(|e| Self::sm_write_err(Io::other(e)))?;
        self.working = working;
        let (responses, rows) = staged.map_err(Self::sm_write_err)?;
        self.machine.publish(&self.working, &rows);
        self.db.observer.timed(Timing::Apply, started.elapsed());
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        RocksSnapshotBuilder {
            db: Arc::clone(&self.db),
            image: Some(self.working.image()),
            sequence: self.snapshot_sequence.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let started = Instant::now();
        let data = snapshot.into_inner();
        let image = sm::read_snapshot(meta, &data)?;
        let machine = Machine::from_image(image);
        let write = async {
            let cf = self.db.cf(CF_SM)?;
            let mut batch = WriteBatch::default();
            // Every row key starts with an ASCII letter: [0x00, 0xff) covers them all.
            batch.delete_range_cf(cf, [0x00u8], [0xffu8]);
            // Deletes first, then the snapshot's rows: a batch applies in order.
            put_rows(&self.db, &machine, machine.state.all_rows(), &mut batch)?;
            self.db.put_meta(&mut batch, CF_SM_META, KEY_SNAPSHOT_META, meta)?;
            batch.put_cf(self.db.cf(CF_SM_META)?, KEY_SNAPSHOT_DATA, &data);
            self.db.write_synced(batch).await
        };
        write.await.map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), &e))?;
        self.working = machine.clone();
        self.machine.replace(machine);
        self.db.observer.timed(Timing::SnapshotInstall, started.elapsed());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let read = || -> Result<Option<Snapshot>, Io> {
            let Some(meta) = self.db.get_meta::<SnapshotMeta>(CF_SM_META, KEY_SNAPSHOT_META)? else {
                return Ok(None);
            };
            let data = self
                .db
                .db
                .get_cf(self.db.cf(CF_SM_META)?, KEY_SNAPSHOT_DATA)
                .map_err(Io::other)?
                .ok_or_else(|| Io::other("snapshot meta without snapshot data"))?;
            Ok(Some(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
        };
        read().map_err(|e| StorageIOError::read_snapshot(None, &e).into())
    }
}

/// Applies `entries` to `working` and writes the rows they changed, with the new
/// `last_applied`, in one synced batch; returns the responses and those rows (what
/// [`StateHandle::publish`] shows next). Blocks: call it on the blocking pool.
fn stage_and_store(
    db: &Db,
    working: &mut Machine,
    entries: Vec<Entry>,
) -> Result<(Vec<Response>, BTreeSet<RowKey>), Io> {
    let (responses, rows) = working.stage(entries);
    let mut batch = WriteBatch::default();
    put_rows(db, working, rows.iter().cloned(), &mut batch)?;
    db.write_synced_here(batch)?;
    Ok((responses, rows))
}

/// Adds to `batch` the rows `keys` as they stand in `machine` (deleting rows that are
/// gone), plus `last_applied` and the membership.
fn put_rows(
    db: &Db,
    machine: &Machine,
    keys: impl IntoIterator<Item = RowKey>,
    batch: &mut WriteBatch,
) -> Result<(), Io> {
    let cf = db.cf(CF_SM)?;
    for key in keys {
        match machine.state.encode_row(&key).map_err(Io::other)? {
            Some(value) => batch.put_cf(cf, key.encode(), value),
            None => batch.delete_cf(cf, key.encode()),
        }
    }
    db.put_meta(batch, CF_SM_META, KEY_LAST_APPLIED, &machine.last_applied)?;
    db.put_meta(batch, CF_SM_META, KEY_MEMBERSHIP, &machine.last_membership)
}
