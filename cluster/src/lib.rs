//! The seam between `ternd` and the work that runs on it: live migration
//! (`tern-migrate`), and next HA failover and the rebalancer.
//!
//! Everything here is in the model's and the replicated state's terms. No gRPC type
//! crosses it: the agent implements [`Cluster`] and [`Peers`] over tonic and maps
//! [`Error`] to a gRPC status once, in its conversions module. So a state-machine
//! rejection reaches the caller as the typed [`tern_raft_store::Rejection`] it was,
//! and a leader hint as a field, never as text to parse back.
//!
//! - [`Cluster`]: this agent's host, clock, applied state, hypervisor, peers, and
//!   proposals through Raft wherever the leader is.
//! - [`Peers`]: the calls one agent makes to another (Prepare, Finish, Cancel, a
//!   liveness probe, a whole migration run on another host).
//! - [`Error`]: what went wrong, as the decision it asks of the caller.
//! - [`users`]: who may migrate (OP-04): adding, removing, authenticating.

mod error;
pub mod peer;
pub mod users;

pub use error::Error;
pub use peer::{
    Finding, MigrateRequest, MigrationEvent, MigrationReport, Peers, PrepareRequest, Prepared, RestartRequest, Stage,
};

/// A user's signed migration ticket (OP-04 by certificate) and what it grants.
pub use tern_tls::{Grant, Ticket};

use async_trait::async_trait;
use std::sync::Arc;
use tern_hypervisor::Hypervisor;
use tern_raft_store::{Command, Outcome, StateHandle};

/// What the work running in an agent needs from it.
#[async_trait]
pub trait Cluster: Send + Sync + 'static {
    /// This agent's host name.
    fn host(&self) -> &str;
    /// The proposer's clock (ms since the epoch); never read inside apply.
    fn now_ms(&self) -> u64;
    /// The state as this member has applied it.
    fn state(&self) -> &StateHandle;
    fn hypervisor(&self) -> &Arc<dyn Hypervisor>;
    /// Calls to other agents.
    fn peers(&self) -> &dyn Peers;
    /// Proposes `command` through Raft as `actor`, wherever the leader is. A
    /// rejection by the state machine is [`Error::Rejected`].
    async fn propose(&self, actor: &str, command: Command) -> Result<Outcome, Error>;
    /// The user who signed `ticket` for exactly `grant`, if its certificate is this
    /// cluster's, unrevoked and valid, the ticket fresh, and the user holds "LDoms
    /// Management" or "System Administrator" (OP-04); else PERMISSION_DENIED saying why.
    fn ticket_holder(&self, ticket: &Ticket, grant: &Grant<'_>) -> Result<String, Error>;
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
) -> Result<T, Error> {
    if c.inline_blocking() {
        return Ok(work());
    }
    tokio::task::spawn_blocking(work).await.map_err(|e| Error::Internal(format!("blocking task failed: {e}")))
}

/// The agent-to-agent actor name written to the audit log.
pub fn agent_actor(c: &dyn Cluster) -> String {
    format!("agent:{}", c.host())
}
