//! The records the replicated state holds: hosts, the domain index, reservations,
//! operations, users and audit entries (ARCHITECTURE.md "Replicated state").
//!
//! Plain data with serde; every rule about how they change lives in `apply`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
pub use tern_model::Profile;
use tern_model::{Binding, Server};

/// What the cluster believes about a host's control domain (HA-01, HA-02).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostStatus {
    #[default]
    Up,
    /// Missed heartbeats; not yet declared lost.
    Suspect,
    /// Declared lost: its migrations are rolled back (HA-07), its guests wait for a fence.
    Lost,
    /// Power-fenced through its service processor (HA-02): its guests are known stopped.
    Fenced,
    /// Taken out of service by an operator (UC-1): receives nothing.
    Maintenance,
}

impl HostStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Suspect => "suspect",
            Self::Lost => "lost",
            Self::Fenced => "fenced",
            Self::Maintenance => "maintenance",
        }
    }

    /// Lost or fenced: its control domain cannot run a migration (LM-02, HA-07).
    pub fn is_down(self) -> bool {
        matches!(self, Self::Lost | Self::Fenced)
    }
}

impl fmt::Display for HostStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A server of the cluster, named by its control domain's host name.
///
/// Its CPU type, firmware and control-domain OS are its inventory's (`inventory.cpu`,
/// `.firmware`, `.os`), what preflight reads: stored once, so they cannot disagree
/// (format version 2; version 1 host rows carried copies, dropped on upgrade).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub name: String,
    /// Where its agent listens (host:port); opaque to the state machine.
    pub address: String,
    pub status: HostStatus,
    /// When `status` last changed (proposer time).
    pub status_since_ms: u64,
    /// The last inventory report accepted, with the reservations' commits applied to it.
    pub inventory: Option<Server>,
    pub inventory_at_ms: Option<u64>,
    /// The highest fencing token ever issued for a reservation on this host: the
    /// host's agent refuses any bind carrying a lower one.
    pub fencing_token_max: u64,
    /// What this host's agent declares it does to its guests when cut off (HA-03,
    /// HA-08); none until its agent says so.
    #[serde(default, skip_serializing_if = "SelfStop::is_none")]
    pub self_stop: SelfStop,
}

impl Host {
    /// A copy of every field but the inventory (`None`): the host's small row.
    pub(crate) fn clone_without_inventory(&self) -> Host {
        let Host {
            name,
            address,
            status,
            status_since_ms,
            inventory: _,
            inventory_at_ms,
            fencing_token_max,
            self_stop,
        } = self;
        Host {
            name: name.clone(),
            address: address.clone(),
            status: *status,
            status_since_ms: *status_since_ms,
            inventory: None,
            inventory_at_ms: *inventory_at_ms,
            fencing_token_max: *fencing_token_max,
            self_stop: *self_stop,
        }
    }
}

/// How a lost host stops its own guests without a power fence, as its agent's config
/// declares (HA-03, HA-08). Both halves are needed, because the majority cannot tell
/// a partition from a dead agent:
/// - a live agent cut off from the quorum stops every guest after
///   `isolation_timeout_ms` (its isolation response, HA-03);
/// - a dead or hung agent stops feeding its watchdog, which resets the control domain
///   within `watchdog_timeout_ms`, and the hypervisor then stops the control domain's
///   slaves whose master's failure-policy is `stop` (HA-08).
///
/// So a guest of a Lost host counts stopped once the host has been Lost for the longer
/// of the two plus `margin_ms`, and only if it is such a slave
/// ([`State::counts_stopped`](crate::State::counts_stopped)). Like Pacemaker's
/// `stonith-watchdog-timeout`, the watchdog is the admin's declaration: tern cannot
/// verify it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SelfStop {
    /// 0: the agent does not stop its guests when isolated.
    pub isolation_timeout_ms: u64,
    /// 0: no watchdog resets the control domain.
    pub watchdog_timeout_ms: u64,
    /// Time to stop guests and for clocks to differ, added to the longer timeout.
    pub margin_ms: u64,
}

impl SelfStop {
    pub fn is_none(&self) -> bool {
        *self == Self::default()
    }

    /// How long after the host is declared Lost its qualifying guests count stopped;
    /// `Err` names what is missing.
    pub fn delay_ms(&self) -> Result<u64, &'static str> {
        match (self.isolation_timeout_ms, self.watchdog_timeout_ms) {
            (0, 0) => Err("its agent declares neither an isolation response nor a watchdog"),
            (0, _) => Err("its agent does not stop its guests when isolated (ha.isolation_timeout_ms = 0)"),
            (_, 0) => Err("no watchdog resets its control domain (ha.watchdog_timeout_ms = 0)"),
            (i, w) => Ok(i.max(w).saturating_add(self.margin_ms)),
        }
    }
}

/// Why a guest of a down host cannot be running there any more (HA-02, HA-08).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// Its server was power-fenced.
    Fenced,
    /// HA-08: it counts stopped since `since_ms` (see [`SelfStop`]).
    BySelfStop { since_ms: u64 },
}

/// A guest's restart priority on failover (HA-04).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HaPriority {
    High,
    #[default]
    Medium,
    Low,
    /// Never restarted elsewhere (`none` on the command line).
    #[serde(alias = "none")]
    Never,
}

impl HaPriority {
    pub const ALL: [HaPriority; 4] = [Self::High, Self::Medium, Self::Low, Self::Never];

    /// As `ternctl set-domain ha-priority=` takes and shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::High => "high",
            Self::Medium => "medium",
            Self::Low => "low",
            Self::Never => "none",
        }
    }

    /// Restart order: high first, then medium, then low; `none` never restarts.
    pub fn rank(self) -> u8 {
        match self {
            Self::High => 0,
            Self::Medium => 1,
            Self::Low => 2,
            Self::Never => 3,
        }
    }
}

impl fmt::Display for HaPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for HaPriority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "high" => Ok(Self::High),
            "medium" => Ok(Self::Medium),
            "low" => Ok(Self::Low),
            "none" | "never" => Ok(Self::Never),
            other => Err(format!("ha-priority {other:?} is not one of high, medium, low, none")),
        }
    }
}

/// Where a guest domain runs, with the settings HA and the rebalancer read.
///
/// Only guest domains are indexed: control, I/O root and service domains never move
/// (LM-01) and their names repeat from host to host (`primary`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRecord {
    pub host: String,
    pub ha_priority: HaPriority,
    /// Affinity group (RB-03); `None` when the guest belongs to none.
    pub affinity_group: Option<String>,
    /// Anti-affinity group (RB-03); `None` when the guest belongs to none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity_group: Option<String>,
    /// `Some(target)`: `host`'s report no longer shows the guest, which left by a
    /// migration to `target` that the cluster did not commit; with ldm the servers may
    /// have completed it (ldmd runs the move). The record waits, settings kept, for a
    /// report that shows the guest: `target`'s adopts it, `host`'s takes it back. HA
    /// does not restart an awaited guest when `host` is lost (it does not run there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaiting: Option<String>,
}

impl DomainRecord {
    /// A guest first seen on `host`: default HA priority (HA-04), in no group.
    pub fn new(host: &str) -> Self {
        Self {
            host: host.to_string(),
            ha_priority: HaPriority::default(),
            affinity_group: None,
            anti_affinity_group: None,
            awaiting: None,
        }
    }

    /// This record on `host`, where a report shows the guest, settings kept.
    pub fn on(&self, host: &str) -> Self {
        Self { host: host.to_string(), awaiting: None, ..self.clone() }
    }
}

/// Resources on a target held for one operation until its lease passes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub id: u64,
    /// The operation that owns it.
    pub operation: u64,
    /// The host whose strands, memory and console port are held.
    pub target: String,
    /// The host the domain comes from.
    pub source: String,
    /// The domain's name on the source. Its name on the target is `binding.domain`.
    pub domain: String,
    /// The concrete strands (and their CIDs), memory ranges and console port.
    pub binding: Binding,
    pub created_ms: u64,
    /// The reservation is active while the cluster clock is below this.
    pub lease_expires_ms: u64,
    /// Issued from a counter that only grows; commands about this reservation must carry it.
    pub token: u64,
}

impl Reservation {
    /// Active within its lease only: an expired reservation blocks nothing and can be
    /// neither renewed nor committed, even before an `Expire` removes it.
    pub fn is_active(&self, now_ms: u64) -> bool {
        now_ms < self.lease_expires_ms
    }
}

/// What an operation does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OperationKind {
    /// `migrate-domain [-n] <domain> <target>[:<new_name>]` (OP-01, OP-02, OP-05).
    /// `plan`: the rebalance plan this migration is a move of (RB-04), whose approval
    /// stands for the user's login on the target (OP-04).
    Migration {
        domain: String,
        source: String,
        target: String,
        new_name: Option<String>,
        dry_run: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        plan: Option<u64>,
    },
    /// Move every guest off a host (UC-1).
    Evacuation { host: String },
    /// Restart a lost host's guests elsewhere (UC-3, HA-*).
    Failover { host: String },
    /// `ldm add-core|set-core|add-memory|set-memory ... <domain>` where the guest runs
    /// (UC-2, RB-06): `growth` is its size afterwards; what it gains is reserved first.
    Resize { domain: String, host: String, growth: tern_model::rebalance::Growth },
}

impl OperationKind {
    /// What may not have two running operations at once: a domain for a migration, a
    /// host for an evacuation or failover.
    pub fn subject(&self) -> Subject<'_> {
        match self {
            Self::Migration { domain, .. } | Self::Resize { domain, .. } => Subject::Domain(domain),
            Self::Evacuation { host } | Self::Failover { host } => Subject::Host(host),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Migration { .. } => "migration",
            Self::Evacuation { .. } => "evacuation",
            Self::Failover { .. } => "failover",
            Self::Resize { .. } => "resize",
        }
    }
}

/// See [`OperationKind::subject`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject<'a> {
    Domain(&'a str),
    Host(&'a str),
}

impl fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Domain(d) => write!(f, "domain {d}"),
            Self::Host(h) => write!(f, "host {h}"),
        }
    }
}

/// The phase machine of ARCHITECTURE.md:
/// Preparing -> Reserved -> Transferring(progress) -> Committing -> Done | Failed | Cancelled | RolledBack.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Preparing,
    Reserved,
    /// OP-06's PROGRESS column.
    Transferring {
        progress_pct: u8,
    },
    Committing,
    Done,
    Failed {
        reason: String,
    },
    /// Cancelled by a user (OP-09).
    Cancelled,
    RolledBack {
        reason: String,
    },
}

impl Phase {
    pub fn is_terminal(&self) -> bool {
        matches!(self, Self::Done | Self::Failed { .. } | Self::Cancelled | Self::RolledBack { .. })
    }

    pub fn name(&self) -> &'static str {
        match self {
            Self::Preparing => "preparing",
            Self::Reserved => "reserved",
            Self::Transferring { .. } => "transferring",
            Self::Committing => "committing",
            Self::Done => "done",
            Self::Failed { .. } => "failed",
            Self::Cancelled => "cancelled",
            Self::RolledBack { .. } => "rolled-back",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transferring { progress_pct } => write!(f, "transferring {progress_pct}%"),
            Self::Failed { reason } => write!(f, "failed: {reason}"),
            Self::RolledBack { reason } => write!(f, "rolled back: {reason}"),
            other => f.write_str(other.name()),
        }
    }
}

/// What a finished migration reports (LM-12, LM-13, LM-15, LM-17).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationResult {
    pub old_cids: Vec<u32>,
    pub new_cids: Vec<u32>,
    pub old_console_port: Option<u16>,
    pub new_console_port: Option<u16>,
    /// Measured suspension of the guest (LM-15).
    pub downtime_ms: u64,
    /// Whole migration time (LM-17: not downtime).
    pub total_ms: u64,
    pub notes: Vec<String>,
}

/// A migration, evacuation or failover and where it stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub id: u64,
    pub kind: OperationKind,
    pub phase: Phase,
    /// Who began it.
    pub actor: String,
    pub started_ms: u64,
    pub updated_ms: u64,
    /// Reservations it holds now (released or committed ones leave this set).
    pub reservations: BTreeSet<u64>,
    pub result: Option<OperationResult>,
}

/// A user who may authenticate to agents (OP-04). The password is stored only as an
/// argon2 PHC string made by the proposer ([`crate::hash_password`]).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub password_hash: String,
    pub profiles: BTreeSet<Profile>,
    pub created_ms: u64,
}

impl User {
    /// May run `migrate-domain` against a target (OP-04).
    pub fn may_migrate(&self) -> bool {
        self.profiles.contains(&Profile::LdomsManagement) || self.profiles.contains(&Profile::SystemAdministrator)
    }
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("password_hash", &"<redacted>")
            .field("profiles", &self.profiles)
            .field("created_ms", &self.created_ms)
            .finish()
    }
}

/// One line of the audit log: who did what, when, and whether it was accepted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// The Raft log index of the command.
    pub index: u64,
    /// When the proposer stamped it.
    pub at_ms: u64,
    pub actor: String,
    /// The caller's address ([`crate::Request::from`]); empty when unknown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    pub summary: String,
    /// `ok`, or the rejection's code.
    pub outcome: String,
}

pub use tern_model::rebalance::{Level, Plan as RebalancePlan, Strength};

/// The cluster's rebalancing policy (RB-01..RB-04), set by a System Administrator
/// (`ternctl rebalance auto|set|group`). Every leader plans with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RebalanceConfig {
    /// The leader plans and applies on its own once the imbalance held (RB-04).
    pub auto: bool,
    pub level: Level,
    /// Most moves per plan.
    pub max_moves: u32,
    /// Migrations a host may take part in at once (RB-03).
    pub host_concurrency: u32,
    /// A plan's moves running at once in the whole cluster (RB-03).
    pub cluster_concurrency: u32,
    /// Keep room to restart any one host's guests (RB-03).
    pub n_plus_one: bool,
    /// A guest migrated less than this long ago stays (RB-03).
    pub cooldown_ms: u64,
    /// Rounds the imbalance must stay above the level's threshold before auto acts (RB-01).
    pub hold_rounds: u32,
    pub cpu_weight: u32,
    pub memory_weight: u32,
    /// A move predicted to suspend its guest longer than this is not planned (RB-02).
    pub max_downtime_ms: u64,
    /// How hard each (anti-)affinity group binds; a group not listed is `must`.
    pub groups: std::collections::BTreeMap<String, Strength>,
}

impl Default for RebalanceConfig {
    fn default() -> Self {
        let s = tern_model::rebalance::Settings::default();
        Self {
            auto: false,
            level: s.level,
            max_moves: s.max_moves as u32,
            host_concurrency: s.host_concurrency,
            cluster_concurrency: 2,
            n_plus_one: s.n_plus_one,
            cooldown_ms: 30 * 60 * 1000,
            hold_rounds: 3,
            cpu_weight: s.cpu_weight,
            memory_weight: s.memory_weight,
            max_downtime_ms: s.max_downtime_ms,
            groups: Default::default(),
        }
    }
}

impl RebalanceConfig {
    /// The planner's settings.
    pub fn settings(&self) -> tern_model::rebalance::Settings {
        tern_model::rebalance::Settings {
            level: self.level,
            max_moves: self.max_moves as usize,
            host_concurrency: self.host_concurrency,
            n_plus_one: self.n_plus_one,
            cpu_weight: self.cpu_weight,
            memory_weight: self.memory_weight,
            max_downtime_ms: self.max_downtime_ms,
            precopy: Default::default(),
        }
    }

    /// The strength of group `name`.
    pub fn strength(&self, name: &str) -> Strength {
        self.groups.get(name).copied().unwrap_or_default()
    }
}

/// What a plan is for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum PlanPurpose {
    /// Lower the imbalance (RB-01, RB-02).
    #[default]
    Balance,
    /// Make room for `domain` on `target`, then move it there (RB-05).
    MakeRoom { domain: String, target: String },
    /// The moves after which `domain` can grow to `growth` (UC-2, RB-06).
    Grow { domain: String, growth: tern_model::rebalance::Growth },
}

/// Where a plan stands (OpenStack Watcher's RECOMMENDED -> ONGOING -> SUCCEEDED).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "status")]
pub enum PlanStatus {
    /// Made and shown; nothing moved.
    Shown,
    /// Approved (`rebalance apply`, or the leader in auto mode): its moves run.
    Applying,
    Done,
    Failed {
        reason: String,
    },
    Cancelled {
        by: String,
    },
}

impl PlanStatus {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Shown => "shown",
            Self::Applying => "applying",
            Self::Done => "done",
            Self::Failed { .. } => "failed",
            Self::Cancelled { .. } => "cancelled",
        }
    }
}

/// A rebalance plan kept with its id (RB-04), so it can be shown, applied if the state
/// it was made from still holds, and followed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRecord {
    pub id: u64,
    pub purpose: PlanPurpose,
    pub plan: RebalancePlan,
    /// [`crate::State::placement_digest`] of the state it was made from.
    pub digest: u64,
    pub status: PlanStatus,
    /// Who made it and who approved it.
    pub actor: String,
    pub applied_by: Option<String>,
    pub made_ms: u64,
    pub updated_ms: u64,
    pub notes: Vec<String>,
}
