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
//! The agent supplies the [`Cluster`] seam (proposals, state, hypervisor, channels).

pub mod codec;
pub mod coordinator;
pub mod hosts;
pub mod recovery;
pub mod report;
pub mod service;
pub mod target;
pub mod users;

use async_trait::async_trait;
use std::sync::Arc;
use tern_hypervisor::Hypervisor;
use tern_raft_store::{Command, Outcome, StateHandle};
use tonic::Status;
use tonic::transport::Channel;

/// How long a reservation lives without renewal.
pub const LEASE_MS: u64 = 15_000;
/// The coordinator renews the lease this often (a third of it).
pub const RENEW_EVERY_MS: u64 = LEASE_MS / 3;
/// The target is declared gone after this many failed checks in a row (one a second).
pub const TARGET_MISSES_MAX: u32 = 3;
/// Deadline of the target's Prepare (authentication, preflight, a Raft commit).
pub const PREPARE_TIMEOUT_MS: u64 = 30_000;
/// Deadline of the short agent-to-agent calls (Finish, Cancel).
pub const CALL_TIMEOUT_MS: u64 = 10_000;

/// What the migration code needs from the agent it runs in.
#[async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// This agent's host name.
    fn host(&self) -> &str;
    /// The proposer's clock (ms since the epoch).
    fn now_ms(&self) -> u64;
    fn state(&self) -> &StateHandle;
    fn hypervisor(&self) -> &Arc<dyn Hypervisor>;
    /// A (reused) channel to another agent.
    fn channel(&self, addr: &str) -> Result<Channel, Status>;
    /// Proposes `command` through Raft as `actor`, wherever the leader is.
    async fn propose(&self, actor: &str, command: Command) -> Result<Outcome, Status>;
    /// Whether CPU-heavy work (password hashing) runs inline instead of on tokio's
    /// blocking pool: a simulation needs it to finish within the step that started
    /// it, or a run would depend on how fast the machine is.
    fn inline_blocking(&self) -> bool {
        false
    }
}

/// Runs `work` off the async threads (or inline, see [`Cluster::inline_blocking`]).
pub async fn blocking<T: Send + 'static>(
    c: &dyn Cluster,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Status> {
    if c.inline_blocking() {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work).await.map_err(|e| Status::internal(format!("blocking task failed: {e}")))
}

/// The agent-to-agent actor name written to the audit log.
pub fn agent_actor(c: &dyn Cluster) -> String {
    format!("agent:{}", c.host())
}
