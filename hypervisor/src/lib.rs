//! The `Hypervisor` trait: everything a tern agent asks of the server it runs on,
//! and its backends.
//!
//! - [`sim`]: a simulated server loaded from a layout file, persisted across restarts,
//!   migrating with the pre-copy timing model of `tern_model::precopy`.
//! - [`ldm`]: Oracle VM Server for SPARC, the same trait carried out by running `ldm`.
//!
//! The migration steps mirror what `ldm migrate-domain` does across two control
//! domains: the target is told to [`Hypervisor::receive`] a domain into reserved
//! resources, the source runs [`Hypervisor::migrate_out`] (reporting progress), and
//! the target then [`Hypervisor::finish_receive`]s it (commit) or drops it (rollback).
//! With `ldm` the receive steps are done by ldmd itself and are no-ops for tern.

pub mod layout;
pub mod ldm;
pub mod sim;

use async_trait::async_trait;
use std::collections::BTreeMap;
use tern_model::{Binding, Domain, Resize, Server};
use tokio::sync::mpsc;

/// What went wrong, in terms of what the caller must decide.
#[derive(Debug, thiserror::Error)]
pub enum HvError {
    /// The domain does not exist here (ldm: `LDom "x" was not found`).
    #[error("LDom \"{0}\" was not found")]
    NotFound(String),
    /// The request cannot be carried out as asked; fix the input.
    #[error("{0}")]
    Invalid(String),
    /// Another operation holds the domain; retry later or cancel it.
    #[error("{0}")]
    Busy(String),
    /// The migration was cancelled (OP-09); the guest runs on the source.
    #[error("migration of {0} was cancelled; the domain keeps running on the source")]
    Cancelled(String),
    /// The hypervisor refused or failed; the message is its own.
    #[error("{0}")]
    Failed(String),
    /// The backend could not be read or written (state file, ldm process).
    #[error("{0}")]
    Io(String),
    /// The hypervisors settled a migration themselves (ldm: ldmd on both control
    /// domains completed it), so it cannot be undone here: the guest runs on the target.
    #[error("{0}")]
    Settled(String),
}

impl HvError {
    /// The rule a refusal maps to: a backend that maps the hypervisor's message to a
    /// rule writes its id first (`ldm::failure`, "LM-09 ..."), so it is read back here.
    pub fn rule(&self) -> Option<tern_model::Rule> {
        match self {
            Self::Failed(m) => m.split_whitespace().next()?.parse().ok(),
            _ => None,
        }
    }
}

/// A migration as the source's hypervisor carries it out.
#[derive(Clone, Debug)]
pub struct MigrateOut {
    pub domain: String,
    /// The target's host name (or address, for `ldm`).
    pub target: String,
    /// New name on the target (OP-05).
    pub new_name: Option<String>,
    /// The reserved resources on the target (the sim honours them; ldm chooses its own).
    pub binding: Binding,
    /// The replicated operation this migration is. The sim keeps it with a suspended
    /// guest, so that recovery reads that very record (never another migration's).
    pub operation: u64,
}

/// Progress of a running migration (OP-06).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub pct: u8,
    /// The copy round under way (1-based); 0 while setting up.
    pub round: u32,
    /// The guest is suspended for the final copy: cancel is no longer possible.
    pub suspended: bool,
}

/// The measured result of a finished migration (LM-15, LM-17).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigrationOutcome {
    pub total_ms: u64,
    pub downtime_ms: u64,
    pub rounds: u32,
    pub converged: bool,
}

/// An incoming domain: its definition and the resources it was given on the target.
#[derive(Clone, Debug)]
pub struct Incoming {
    pub domain: Domain,
    pub binding: Binding,
    pub source: String,
    /// The replicated operation this migration is (see [`MigrateOut::operation`]).
    pub operation: u64,
}

/// A guest held by an unfinished migration (incoming, or suspended outgoing) and the
/// replicated operation whose verdict settles it. Operation 0: unknown (a state file
/// written before operations were recorded with the guest).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pending {
    pub domain: String,
    pub operation: u64,
}

/// The server an agent manages. Implementations are cheap to share (`Arc`) and safe
/// to call concurrently; every method has its own deadline inside the backend.
#[async_trait]
pub trait Hypervisor: Send + Sync + 'static {
    /// The backend's kind, for logs and `cluster status` (`sim`, `ldm`).
    fn kind(&self) -> &'static str;

    /// The server as it is now: cores, memory blocks, services, domains.
    async fn inventory(&self) -> Result<Server, HvError>;

    /// Binds a new domain to exactly these resources (failover restart, restore).
    async fn bind(&self, domain: Domain, binding: &Binding) -> Result<(), HvError>;

    /// Unbinds and removes a stopped domain, freeing its resources.
    async fn unbind(&self, domain: &str) -> Result<(), HvError>;

    /// UC-2 (RB-06): the guest, running or not, gains `resize.add` and gives back
    /// `resize.remove`: named whole cores and memory ranges, which the replicated state
    /// reserved first. On error nothing of it is left applied, as far as the backend
    /// can undo its own steps.
    async fn resize(&self, resize: &Resize) -> Result<(), HvError>;

    async fn start(&self, domain: &str) -> Result<(), HvError>;

    async fn stop(&self, domain: &str) -> Result<(), HvError>;

    /// Target side: accept an incoming migration into its reserved resources.
    async fn receive(&self, incoming: Incoming) -> Result<(), HvError>;

    /// Target side: the migration committed (`ok`) or was rolled back.
    async fn finish_receive(&self, domain: &str, ok: bool) -> Result<(), HvError>;

    /// Source side: the hypervisor's own dry run of `req` (ldm's `migrate-domain -n`),
    /// after the cluster's preflight passed and the target reserved. A backend whose
    /// checks are the model's (the simulator) has nothing to add.
    async fn check_migrate_out(&self, _req: &MigrateOut) -> Result<(), HvError> {
        Ok(())
    }

    /// Source side: live-migrate `req.domain`, sending progress. On success the guest is
    /// copied and suspended; [`Hypervisor::finish_migrate_out`] settles it.
    async fn migrate_out(&self, req: MigrateOut, progress: mpsc::Sender<Progress>)
    -> Result<MigrationOutcome, HvError>;

    /// Source side, after the migration's fate is committed in the replicated state:
    /// `committed` removes the guest from this server; otherwise it resumes here. The
    /// commit point is the Raft commit, so a crash between copy and commit loses nothing.
    async fn finish_migrate_out(&self, domain: &str, committed: bool) -> Result<(), HvError>;

    /// Target side: domains received but not yet finished (for recovery after a restart).
    async fn incoming(&self) -> Result<Vec<Pending>, HvError>;

    /// Source side: guests suspended after their final copy and waiting for
    /// [`Hypervisor::finish_migrate_out`]. They stay suspended across restarts of the
    /// agent (and of the control domain's software) until the verdict is given, so that
    /// recovery can give it from the operation record.
    async fn suspended(&self) -> Result<Vec<Pending>, HvError>;

    /// Source side: abort a running migration (OP-09). Too late once the guest is suspended.
    async fn cancel_migration(&self, domain: &str) -> Result<(), HvError>;

    /// Current CPU utilisation per domain, 0..=100 (for the rebalancer).
    async fn utilisation(&self) -> Result<BTreeMap<String, u32>, HvError>;
}
