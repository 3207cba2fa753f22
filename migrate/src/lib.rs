//! Live migration with reservations (OP-01..OP-09), as the source's agent coordinates it:
//!
//! 1. source: local checks (the domain is here, LM-01/LM-05 through preflight, no
//!    operation running), `BeginOperation` through Raft;
//! 2. target (`Prepare`): authenticates the user (OP-04), runs every LM rule against
//!    its live server minus what other operations reserved, and commits a `Reserve` of
//!    concrete strands, memory ranges and a console port through Raft — the state
//!    machine rejects any overlap, so racing migrations can never double-book; the
//!    target's hypervisor then takes the guest into those resources. A dry run stops
//!    here and releases;
//! 3. source: the hypervisor transfers the guest with progress (OP-06) while the lease
//!    is renewed and the target is watched; `cancel-operation` aborts it (OP-09);
//! 4. success: `CommitMigration` moves the domain in the replicated state (LM-12,
//!    LM-13) and the target activates it; failure: `AbortOperation` releases the
//!    reservation, the target drops its copy and the guest keeps running on the source.
//!
//! If the coordinator dies the lease expires and the leader releases the reservation.
//!
//! [`resize`] runs UC-2's growth where a guest runs (RB-06) through the same
//! reservations, with the guest's host as both source and target.
//!
//! The agent supplies the [`Cluster`] seam (`tern-cluster`: proposals, state,
//! hypervisor, peer calls); nothing here speaks gRPC.

pub mod coordinator;
pub mod hosts;
pub mod rebalance;
pub mod recovery;
pub mod report;
pub mod resize;
pub mod target;

pub use tern_cluster::{Cluster, Error};

/// How long a reservation lives without renewal.
pub const LEASE_MS: u64 = 15_000;
/// The coordinator renews the lease this often (a third of it).
pub const RENEW_EVERY_MS: u64 = LEASE_MS / 3;
/// The target is declared gone after this many failed checks in a row (one a second).
pub const TARGET_MISSES_MAX: u32 = 3;
