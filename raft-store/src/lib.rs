//! tern's replicated cluster state: the openraft 0.9 type configuration, its storage
//! (RocksDB for agents, in memory for simulations), and the state machine that
//! arbitrates every claim on cores, memory and console ports.
//!
//! - [`TypeConfig`]: `NodeId = u64`, `Node = BasicNode`, `D = `[`Request`],
//!   `R = `[`Response`].
//! - [`State`] with [`State::apply`]: the pure, deterministic state machine; its
//!   records (hosts, the guest index, reservations, operations, users, audit log)
//!   and [`Command`]s, each answered by an [`Outcome`] or a [`Rejection`].
//! - [`rocks`]: the durable log store and state machine ([`rocks::open`]).
//! - [`mem`]: the same in memory, shared through an `Arc` so that a simulated crash
//!   can drop the Raft instance and reopen the store.
//! - [`codec`]: versioned encodings of entries, snapshots and rows.
//! - [`restore`]: a new one-member cluster from a snapshot file.
//! - [`network`]: an in-process `RaftNetworkFactory` for tests and benchmarks.
//! - [`hash_password`] / [`verify_password`]: argon2id, run by the proposer.
//! - [`propose`]: validate a request, write it through Raft, unwrap its response;
//!   [`Batcher`] does the same for concurrent requests, several to an entry.

// Lets the shared test builders (tests/common) name this crate from inside it.
#[cfg(test)]
extern crate self as tern_raft_store;

mod auth;
pub mod batch;
pub mod codec;
mod error;
pub mod limits;
pub mod mem;
pub mod network;
pub mod observe;
pub mod restore;
pub mod rocks;
mod sm;
mod state;

use std::io::Cursor;

pub use auth::{hash_password, verify_password};
pub use batch::Batcher;
pub use error::Error;
pub use sm::StateHandle;
pub use state::apply::resize_refusal;
pub use state::command::{
    AbortOutcome, Command, HostSpec, Outcome, PlanEnd, Progress, RejectCode, Rejection, Request, Response,
};
pub use state::records::{
    AuditRecord, DomainRecord, HaPriority, Host, HostStatus, Operation, OperationKind, OperationResult, Phase,
    PlanPurpose, PlanRecord, PlanStatus, Profile, RebalanceConfig, Reservation, SelfStop, Stopped, Subject, User,
};
pub use state::{Meta, PlanningView, RemovedMember, State};

/// A member's id in the Raft group.
pub type NodeId = u64;
/// A member's address as openraft carries it.
pub type Node = openraft::BasicNode;

openraft::declare_raft_types!(
    /// openraft's type configuration for tern.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A running Raft member.
pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Node>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Node>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;

/// An accepted command: where it sits in the log and what it did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Its log id: a member whose state has applied this index has seen the change.
    pub log_id: LogId,
    pub outcome: Outcome,
}

/// Validates `request` ([`Request::validate`]), writes it through `raft` (which must be
/// the leader) and waits for it to be applied; returns the state machine's outcome, or
/// its rejection as [`Error::Rejected`]. One entry per request: [`Batcher`] shares
/// entries between concurrent requests.
pub async fn propose(raft: &Raft, request: Request) -> Result<Applied, Error> {
    batch::propose(raft, request).await
}
