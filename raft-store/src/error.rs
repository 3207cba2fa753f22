//! The crate's error type. Each variant says what the caller must decide.

use crate::NodeId;
use crate::codec::CodecError;
use crate::state::command::Rejection;
use std::path::PathBuf;

#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// RocksDB refused to open, read or write. Give up: the disk or directory is at fault.
    #[error("RocksDB at {path}: {message}")]
    Storage { path: PathBuf, message: String },
    /// Stored bytes do not decode. Give up, or (for `UnknownVersion`) upgrade this member.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// The state machine refused the command. Fix the input or give up; never retry as is.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// This member is not the leader. Send the request to `leader` when it is known.
    #[error("not the leader; the leader is {leader:?} at {address:?}")]
    NotLeader { leader: Option<NodeId>, address: Option<String> },
    /// Raft stopped, its storage failed, or a membership change is in the way. Retry
    /// later or on another member.
    #[error("raft is unavailable: {0}")]
    Unavailable(String),
    /// A password could not be hashed (empty, too long, or the RNG failed).
    #[error("password: {0}")]
    Password(String),
}
