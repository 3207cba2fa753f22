//! What both state machines (RocksDB and in-memory) share: applying entries to the
//! [`State`], snapshot images, and the read handle the agent queries.

use crate::codec::{self, SnapshotImage};
use crate::state::{RowKey, State};
use crate::{Entry, LogId, Response, SnapshotMeta, StorageError, StoredMembership};
use openraft::{EntryPayload, StorageIOError};
use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The applied state with its position in the log.
#[derive(Clone, Debug, Default)]
pub(crate) struct Machine {
    pub(crate) state: State,
    pub(crate) last_applied: Option<LogId>,
    pub(crate) last_membership: StoredMembership,
}

impl Machine {
    /// Applies `entries` in order; one response per entry.
    pub(crate) fn apply_entries<I: IntoIterator<Item = Entry>>(&mut self, entries: I) -> Vec<Response> {
        let mut out = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Ok(crate::Outcome::Noop),
                EntryPayload::Normal(request) => self.state.apply(entry.log_id.index, &request),
                EntryPayload::Membership(m) => {
                    self.last_membership = StoredMembership::new(Some(entry.log_id), m);
                    Ok(crate::Outcome::Noop)
                }
            };
            out.push(response);
        }
        out
    }

    /// Applies `entries` to this machine, a state machine's private working copy, and
    /// returns the responses with the rows they changed: what the caller persists, then
    /// publishes ([`StateHandle::publish`]). Readers never see a batch before it is
    /// stored.
    pub(crate) fn stage<I: IntoIterator<Item = Entry>>(&mut self, entries: I) -> (Vec<Response>, BTreeSet<RowKey>) {
        let responses = self.apply_entries(entries);
        (responses, self.state.take_dirty())
    }

    pub(crate) fn image(&self) -> SnapshotImage {
        SnapshotImage {
            last_applied: self.last_applied,
            last_membership: self.last_membership.clone(),
            state: self.state.clone(),
        }
    }

    pub(crate) fn from_image(image: SnapshotImage) -> Self {
        Self { state: image.state, last_applied: image.last_applied, last_membership: image.last_membership }
    }
}

/// Encodes `image` as a snapshot; `sequence` keeps ids of rebuilt snapshots distinct.
#[allow(clippy::result_large_err)] // openraft's StorageError, returned as is by the traits
pub(crate) fn build_snapshot(image: &SnapshotImage, sequence: u64) -> Result<(SnapshotMeta, Vec<u8>), StorageError> {
    let data = codec::encode_snapshot(image).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
    let snapshot_id = match image.last_applied {
        Some(l) => format!("{}-{}-{sequence}", l.leader_id, l.index),
        None => format!("empty-{sequence}"),
    };
    let meta =
        SnapshotMeta { last_log_id: image.last_applied, last_membership: image.last_membership.clone(), snapshot_id };
    Ok((meta, data))
}

/// Decodes a received snapshot and checks it is the one `meta` describes.
#[allow(clippy::result_large_err)] // openraft's StorageError, returned as is by the traits
pub(crate) fn read_snapshot(meta: &SnapshotMeta, data: &[u8]) -> Result<SnapshotImage, StorageError> {
    let image = codec::decode_snapshot(data).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
    if image.last_applied != meta.last_log_id || image.last_membership != meta.last_membership {
        let e = std::io::Error::other(format!(
            "snapshot body stands at {:?}, its meta says {:?}",
            image.last_applied, meta.last_log_id
        ));
        return Err(StorageIOError::read_snapshot(Some(meta.signature()), &e).into());
    }
    Ok(image)
}

/// A cloneable, read-only view of a state machine's applied state, for queries
/// (`list-domain`, preflight's `target_reserved`, metrics). Reads see whole applied
/// batches, never half a command.
#[derive(Clone, Debug, Default)]
pub struct StateHandle {
    machine: Arc<RwLock<Machine>>,
}

impl StateHandle {
    pub(crate) fn new(machine: Machine) -> Self {
        Self { machine: Arc::new(RwLock::new(machine)) }
    }

    /// Runs `f` on the current state. Keep `f` short: apply waits for it.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.lock_read().state)
    }

    /// The last log id applied to the state.
    pub fn last_applied(&self) -> Option<LogId> {
        self.lock_read().last_applied
    }

    /// The applied state with its log position and membership, taken under one lock:
    /// what a snapshot of this member holds now (`ternctl cluster snapshot save`).
    pub fn image(&self) -> SnapshotImage {
        self.lock_read().image()
    }

    /// A copy of the whole state.
    pub fn snapshot(&self) -> State {
        self.read(State::clone)
    }

    /// Shows readers rows `rows` of `working` and its log position: the last step of an
    /// apply, once the batch is persisted.
    pub(crate) fn publish(&self, working: &Machine, rows: &BTreeSet<RowKey>) {
        let mut m = self.lock_write();
        m.state.copy_rows(&working.state, rows);
        m.last_applied = working.last_applied;
        m.last_membership = working.last_membership.clone();
        debug_assert!(
            m.state == working.state,
            "apply changed a row it did not mark: readers would miss the change and a restart would lose it"
        );
    }

    /// Shows readers `machine` whole (a snapshot installed, a disk reopened).
    pub(crate) fn replace(&self, machine: Machine) {
        *self.lock_write() = machine;
    }

    pub(crate) fn lock_read(&self) -> RwLockReadGuard<'_, Machine> {
        // A panic while holding the lock cannot leave a half-applied command behind
        // (apply checks before it changes), so a poisoned lock is still consistent.
        self.machine.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn lock_write(&self) -> RwLockWriteGuard<'_, Machine> {
        self.machine.write().unwrap_or_else(PoisonError::into_inner)
    }
}
