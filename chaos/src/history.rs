//! What the workload was told: every acknowledged write (with the log index the
//! leader applied it at) and every migration's final answer. The checker holds the
//! cluster to these: an acknowledged write must be visible on every member that has
//! applied that far, forever (ARCHITECTURE.md: "an operation reported Done is durable
//! across any crash of any minority").

use std::collections::BTreeMap;
use tern_raft_store::Phase;

/// An acknowledged outcome of a write the workload proposed itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ack {
    /// `BeginOperation` answered `operation`.
    Begun { operation: u64 },
    /// `Reserve` answered `reservation`.
    Reserved { operation: u64, reservation: u64 },
    /// `CommitMigration` answered: the operation is Done.
    Committed { operation: u64 },
    /// `AbortOperation` answered: the operation ended in `phase`.
    Aborted { operation: u64, phase: Phase },
}

impl Ack {
    pub fn operation(&self) -> u64 {
        match self {
            Self::Begun { operation }
            | Self::Reserved { operation, .. }
            | Self::Committed { operation }
            | Self::Aborted { operation, .. } => *operation,
        }
    }
}

/// One acknowledged write.
#[derive(Clone, Debug)]
pub struct AckRecord {
    /// The log index the leader applied the command at.
    pub log_index: u64,
    pub at_ms: u64,
    pub ack: Ack,
}

/// How a migration the workload asked for ended, as the source agent reported it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MigrationEnd {
    /// The report: the migration committed (or, for a dry run, passed every check).
    Reported { operation: u64, dry_run: bool },
    /// Refused or rolled back: the guest stays on its source.
    Refused { operation: u64 },
    /// The stream failed before an answer: the outcome is unknown.
    Unknown { error: String },
}

/// One migration the workload asked for.
#[derive(Clone, Debug)]
pub struct MigrationRecord {
    pub domain: String,
    pub source: String,
    pub target: String,
    pub dry_run: bool,
    pub started_ms: u64,
    pub ended_ms: u64,
    pub end: MigrationEnd,
}

/// Everything the workload was told, and counters for the run's summary.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub acks: Vec<AckRecord>,
    pub migrations: Vec<MigrationRecord>,
    /// Counters by event name (`propose-ok`, `reserve-rejected:strand-unavailable`...).
    pub counts: BTreeMap<String, u64>,
}

impl History {
    pub fn ack(&mut self, log_index: u64, at_ms: u64, ack: Ack) {
        self.acks.push(AckRecord { log_index, at_ms, ack });
    }

    pub fn count(&mut self, what: impl Into<String>) {
        *self.counts.entry(what.into()).or_default() += 1;
    }

    /// The operations the workload was told are Done.
    pub fn done_operations(&self) -> impl Iterator<Item = u64> + '_ {
        let raw = self.acks.iter().filter_map(|a| match a.ack {
            Ack::Committed { operation } => Some(operation),
            _ => None,
        });
        let migrations = self.migrations.iter().filter_map(|m| match m.end {
            MigrationEnd::Reported { operation, .. } => Some(operation),
            _ => None,
        });
        raw.chain(migrations)
    }
}
