//! The calls one agent makes to another, in model terms. The agent carries them over
//! gRPC (mutual TLS); what travels and how it is encoded is the agent's business.

use crate::Error;
use async_trait::async_trait;
use tern_model::{Binding, Range, Rule, Server, Violation};
use tern_raft_store::Rejection;

/// Deadline of the target's Prepare: authentication, the preflight, a Raft commit.
pub const PREPARE_DEADLINE_MS: u64 = 30_000;
/// Deadline of the short agent-to-agent calls (Finish, Cancel).
pub const CALL_DEADLINE_MS: u64 = 10_000;
/// Deadline of a liveness probe of another agent.
pub const PROBE_DEADLINE_MS: u64 = 1_000;
/// A migration run on another agent ([`Peers::migrate`]) that sends no event for this
/// long is given up on (its source still finishes or rolls it back on its own).
pub const MIGRATION_SILENCE_MAX_MS: u64 = 2 * PREPARE_DEADLINE_MS;

/// One line of a refusal: a preflight violation, a state-machine rejection, or what
/// ended a migration (rolled back, cancelled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The SPEC rule that decides it, when one does.
    pub rule: Option<Rule>,
    /// A stable machine-readable code (`memory-block-fit`, `strand-unavailable`).
    pub code: String,
    pub message: String,
}

impl Finding {
    pub fn new(rule: Option<Rule>, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self { rule, code: code.into(), message: message.into() }
    }
}

impl From<&Violation> for Finding {
    fn from(v: &Violation) -> Self {
        Self::new(Some(v.rule), v.code.as_str(), v.message.clone())
    }
}

impl From<&Rejection> for Finding {
    fn from(r: &Rejection) -> Self {
        Self::new(r.rule, r.code.as_str(), r.message.clone())
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.rule {
            Some(rule) => write!(f, "{rule} {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// A migration as a user (or evacuation, or the rebalancer) asks for it (OP-01..OP-05).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrateRequest {
    pub domain: String,
    /// The target's host name or agent address.
    pub target: String,
    /// OP-05: the guest's name on the target.
    pub new_name: Option<String>,
    /// OP-04: the user on the target (root when empty).
    pub user: String,
    pub password: String,
    /// OP-02.
    pub dry_run: bool,
    /// The applying rebalance plan this migration is a move of (RB-04).
    pub plan: Option<u64>,
    /// OP-04 by certificate: the user's signed ticket for this move, instead of
    /// `user` and `password`.
    pub ticket: Option<tern_tls::Ticket>,
}

impl MigrateRequest {
    /// What a ticket for this request must grant (OP-04 by certificate).
    pub fn grant(&self) -> tern_tls::Grant<'_> {
        tern_tls::Grant {
            domain: &self.domain,
            target: &self.target,
            new_name: self.new_name.as_deref().unwrap_or_default(),
            dry_run: self.dry_run,
        }
    }
}

/// The source's request to its target: check, reserve, and take the guest in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrepareRequest {
    pub operation: u64,
    pub domain: String,
    pub new_name: Option<String>,
    /// The source's host name.
    pub source: String,
    /// The source's live server, the guest included.
    pub source_server: Server,
    pub user: String,
    pub password: String,
    pub dry_run: bool,
    pub lease_ms: u64,
    /// The user's ticket, passed on from [`MigrateRequest::ticket`].
    pub ticket: Option<tern_tls::Ticket>,
}

impl PrepareRequest {
    /// What a ticket for this request must grant, with the target as the user named
    /// it (`target`: the ticket's own, once the target has checked that it names it).
    pub fn grant<'a>(&'a self, target: &'a str) -> tern_tls::Grant<'a> {
        tern_tls::Grant {
            domain: &self.domain,
            target,
            new_name: self.new_name.as_deref().unwrap_or_default(),
            dry_run: self.dry_run,
        }
    }
}

/// The target's answer to Prepare.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prepared {
    /// The guest cannot come: every violation found.
    Refused { errors: Vec<Finding>, warnings: Vec<Finding> },
    /// A `Reserve` of `binding` is committed (and, unless a dry run, the target's
    /// hypervisor holds the incoming guest in it).
    Reserved { reservation: u64, token: u64, binding: Binding, warnings: Vec<Finding> },
}

/// Where a migration is (OP-06).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Preparing,
    Transferring,
    /// The guest is stopped for the final copy.
    Suspended,
    Committing,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Preparing => "preparing",
            Self::Transferring => "transferring",
            Self::Suspended => "suspended",
            Self::Committing => "committing",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [Self::Preparing, Self::Transferring, Self::Suspended, Self::Committing]
            .into_iter()
            .find(|s| s.as_str() == text)
    }
}

/// What a finished (or dry-run) migration did (LM-12..LM-15).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigrationReport {
    pub operation: u64,
    pub domain: String,
    pub new_name: String,
    pub source: String,
    pub target: String,
    pub old_cids: Vec<u32>,
    pub new_cids: Vec<u32>,
    pub old_console_port: Option<u16>,
    pub new_console_port: Option<u16>,
    pub downtime_ms: u64,
    pub total_ms: u64,
    pub notes: Vec<String>,
    pub dry_run: bool,
    pub old_memory: Vec<Range>,
    pub new_memory: Vec<Range>,
    pub warnings: Vec<Finding>,
}

/// What a migration tells whoever started it, in order: progress, then one end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MigrationEvent {
    Progress {
        pct: u32,
        stage: Stage,
        round: u32,
    },
    /// It did not happen (or was undone): the guest runs on the source. `operation`
    /// is 0 when the state machine refused to begin it.
    Refused {
        operation: u64,
        errors: Vec<Finding>,
    },
    /// It happened (or, for a dry run, would).
    Report(Box<MigrationReport>),
}

impl MigrationEvent {
    /// Whether this is the migration's last event.
    pub fn is_end(&self) -> bool {
        !matches!(self, Self::Progress { .. })
    }
}

/// HA-04: the leader asks a restart's target to start a fenced host's guest under
/// reservation `reservation` (held for failover `operation`, fencing token `token`).
/// The target reads everything else (the guest, the binding) from its replicated state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestartRequest {
    pub operation: u64,
    pub reservation: u64,
    pub token: u64,
    /// The guest the reservation is for (so a repeated request is recognised once
    /// the commit consumed the reservation).
    pub domain: String,
}

/// Calls to other agents, each with its deadline.
#[async_trait]
pub trait Peers: Send + Sync {
    /// The target's Prepare ([`PREPARE_DEADLINE_MS`]).
    async fn prepare(&self, addr: &str, req: PrepareRequest) -> Result<Prepared, Error>;
    /// Tells the target to activate (`committed`) or drop its incoming copy of
    /// `domain` held for `operation` ([`CALL_DEADLINE_MS`]).
    async fn finish(&self, addr: &str, operation: u64, domain: &str, committed: bool) -> Result<(), Error>;
    /// Cancels, for user `actor`, the migration of `domain` its source at `addr` runs
    /// (OP-09); the operation's id ([`CALL_DEADLINE_MS`]).
    async fn cancel(&self, addr: &str, domain: &str, actor: &str) -> Result<u64, Error>;
    /// Whether the agent at `addr` answers ([`PROBE_DEADLINE_MS`]).
    async fn probe(&self, addr: &str) -> Result<(), Error>;
    /// Runs a migration on the agent at `addr` (its source, LM-02) and waits for its
    /// end: a `Refused` or a `Report`, never `Progress`. Given up after
    /// [`MIGRATION_SILENCE_MAX_MS`] without an event.
    async fn migrate(&self, addr: &str, req: MigrateRequest) -> Result<MigrationEvent, Error>;
    /// Starts a fenced host's guest on the agent at `addr` and has it record the
    /// restart (HA-04); `Ok(false)` when it was already restarted and recorded there
    /// ([`CALL_DEADLINE_MS`]).
    async fn restart(&self, addr: &str, req: RestartRequest) -> Result<bool, Error>;
}
