//! A new cluster from a snapshot file (`ternd --restore FILE`, etcd's `snapshot
//! restore`): the saved state becomes the state of a one-member cluster whose only
//! voter is the restoring agent. The other members join it afresh (new data
//! directories, new ids), as any new member does.
//!
//! Written through openraft's storage traits, so it is the same for RocksDB and the
//! in-memory store: the state machine installs the snapshot (its membership replaced
//! by the new member alone), the log records the snapshot's position as purged (so
//! openraft starts with the log and the state at the same index), and the vote starts
//! at the snapshot's term. openraft then elects the one voter in the next term.

use crate::codec::{self, SnapshotImage};
use crate::{LogId, Node, NodeId, StoredMembership, TypeConfig, Vote};
use openraft::Membership;
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Cursor;

/// What a restore wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The snapshot's position: the new cluster's log starts after it.
    pub last_applied: LogId,
    pub hosts: usize,
    pub domains: usize,
    pub users: usize,
}

/// Why a restore refused or failed; nothing was written unless the error says so.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("the snapshot file is not a tern snapshot this build reads: {0}")]
    Decode(#[from] codec::CodecError),
    #[error("the snapshot is empty (taken before anything was applied): nothing to restore")]
    Empty,
    #[error("the data directory already holds a cluster ({0}): restore only into an empty one")]
    NotEmpty(String),
    #[error("storage: {0}")]
    Storage(Box<crate::StorageError>),
}

impl From<crate::StorageError> for RestoreError {
    fn from(e: crate::StorageError) -> Self {
        Self::Storage(Box::new(e))
    }
}

/// Decodes a snapshot file's bytes (as `Cluster.Snapshot` streams them).
pub fn read_image(bytes: &[u8]) -> Result<SnapshotImage, RestoreError> {
    Ok(codec::decode_snapshot(bytes)?)
}

/// Makes `log` and `sm`, which must be empty, hold `image` as a cluster of one voter:
/// `me`, reachable at `address`.
pub async fn restore<LS, SM>(
    log: &mut LS,
    sm: &mut SM,
    image: SnapshotImage,
    me: NodeId,
    address: String,
) -> Result<Restored, RestoreError>
where
    LS: RaftLogStorage<TypeConfig>,
    SM: RaftStateMachine<TypeConfig>,
{
    let last = image.last_applied.ok_or(RestoreError::Empty)?;
    let state = log.get_log_state().await?;
    if let Some(l) = state.last_log_id {
        return Err(RestoreError::NotEmpty(format!("its log reaches index {}", l.index)));
    }
    if let Some(v) = log.read_vote().await? {
        return Err(RestoreError::NotEmpty(format!("it voted in term {}", v.leader_id().term)));
    }
    if let (Some(l), _) = sm.applied_state().await? {
        return Err(RestoreError::NotEmpty(format!("its state stands at index {}", l.index)));
    }
    let membership = Membership::new(vec![BTreeSet::from([me])], BTreeMap::from([(me, Node { addr: address })]));
    let image = SnapshotImage {
        last_applied: Some(last),
        last_membership: StoredMembership::new(Some(last), membership),
        state: image.state,
    };
    let counts = (image.state.hosts().len(), image.state.domains().len(), image.state.users().len());
    let (meta, data) = crate::sm::build_snapshot(&image, 0)?;
    // State first, then the log's position, then the vote: a restore cut off part way
    // leaves a vote-less store that the next restore finds not empty and names.
    sm.install_snapshot(&meta, Box::new(Cursor::new(data))).await?;
    log.purge(last).await?;
    log.save_vote(&Vote::new(last.leader_id.term, me)).await?;
    Ok(Restored { last_applied: last, hosts: counts.0, domains: counts.1, users: counts.2 })
}
