//! What goes through the log ([`Request`], [`Command`]) and what comes back
//! ([`Response`]: an [`Outcome`] or a [`Rejection`] with a stable code).
//!
//! The proposer stamps the time and the actor; apply never reads a clock. A
//! rejection names the numbers (CPU ids, PAs, tokens, lease times) and, where a SPEC
//! rule decides it, the rule id.

use crate::limits;
use crate::state::records::{
    HaPriority, HostStatus, OperationKind, OperationResult, PlanPurpose, Profile, RebalanceConfig, RebalancePlan,
    SelfStop,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use tern_model::{Binding, Rule, Server};

/// One log entry's payload: a command with who proposed it and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The proposer's clock when it proposed, in ms since the Unix epoch. The state
    /// machine's clock is the largest of these seen so far, so it never runs backwards.
    pub proposed_at_ms: u64,
    /// Who asked (a user, or `agent:<host>` for the agents' own commands): for the audit log.
    pub actor: String,
    /// Where the call that made this write came from: the caller's `ip:port` as the
    /// agent that took the call saw it (a user's `ternctl`, or the member that
    /// forwarded its own write); empty when nothing says (the simulations). For the
    /// audit log; absent from entries written before it existed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub from: String,
    pub command: Command,
}

/// A new host's identity. Its CPU type, firmware and OS are not here: they are its
/// inventory's (`ReportInventory`), stored once. Version 1 entries that still carry
/// `cpu`, `firmware` and `os` decode with those fields ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSpec {
    pub name: String,
    pub address: String,
}

/// How an operation moves forward (`AdvanceOperation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Progress {
    /// Transfer under way; the percentage never goes down (OP-06).
    Transferring { progress_pct: u8 },
    /// The transfer finished; the coordinator is about to commit.
    Committing,
}

/// How an operation ends without committing (`AbortOperation`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AbortOutcome {
    /// A user cancelled it (OP-09).
    Cancelled,
    /// It was undone: the guest keeps running on its source.
    RolledBack { reason: String },
    /// It could not finish.
    Failed { reason: String },
}

/// How an applying plan ends (`EndPlan`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PlanEnd {
    Done {
        notes: Vec<String>,
    },
    Failed {
        reason: String,
    },
    /// `rebalance cancel`: the moves not started yet are not made.
    Cancelled,
}

/// Every change the replicated state accepts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Command {
    /// Adds a host (status Up). Rejected if the name exists.
    RegisterHost {
        host: HostSpec,
    },
    /// Changes a host's address or its declared self-stop (HA-03, HA-08); `None`
    /// keeps the old value. (Version 1 entries may carry `cpu`, `firmware` and `os`:
    /// ignored, the inventory holds them.)
    UpdateHost {
        name: String,
        address: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        self_stop: Option<SelfStop>,
    },
    /// The host's agent reports what its hypervisor shows (`server.name` is the host).
    ReportInventory {
        server: Server,
    },
    /// HA-01 detection results, HA-02 fences and operator maintenance (UC-1).
    /// Entering Lost or Fenced rolls back the host's migrations (HA-07); leaving them
    /// for a live status ends the host's failover. With `expected`, applies only if
    /// the host's status is that one (a compare-and-set: a detector's verdict made
    /// before a fence was recorded cannot undo the fence).
    SetHostStatus {
        host: String,
        status: HostStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected: Option<HostStatus>,
    },
    /// Sets a guest's restart priority on failover (HA-04) and its affinity and
    /// anti-affinity groups (RB-03). `None` keeps a setting; an empty group name clears
    /// it. (Entries written before the groups carry `ha_priority` only.)
    SetDomain {
        domain: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ha_priority: Option<HaPriority>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        affinity_group: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        anti_affinity_group: Option<String>,
    },
    /// Replaces the cluster's rebalancing policy (RB-01..RB-04).
    SetRebalance {
        config: RebalanceConfig,
    },
    /// Keeps a plan made from the state whose [`crate::State::placement_digest`] was
    /// `digest` (RB-04). From an agent only in auto mode.
    RecordPlan {
        purpose: PlanPurpose,
        plan: RebalancePlan,
        digest: u64,
    },
    /// Approves a shown plan, if the state it was made from still holds (RB-04): its
    /// moves may then run as migrations without a user's login on the target.
    ApplyPlan {
        id: u64,
    },
    /// Ends an applying plan.
    EndPlan {
        id: u64,
        end: PlanEnd,
    },
    /// Holds `binding` on `target` for `operation`, which moves `domain` from `source`.
    Reserve {
        operation: u64,
        target: String,
        source: String,
        domain: String,
        binding: Binding,
        lease_ms: u64,
    },
    /// Extends an active reservation's lease to `now + lease_ms` (never shortens it).
    Renew {
        reservation: u64,
        token: u64,
        lease_ms: u64,
    },
    /// Gives a reservation's resources back. Its operation keeps running.
    Release {
        reservation: u64,
        token: u64,
    },
    /// Removes every reservation whose lease passed at `now_ms` (or the cluster clock,
    /// if later); their running operations end RolledBack ("lease expired").
    Expire {
        now_ms: u64,
    },
    /// Starts an operation (phase Preparing). One running operation per domain
    /// (migration) or per host (evacuation, failover).
    BeginOperation {
        kind: OperationKind,
    },
    /// Moves an operation forward. `token` is one of its reservations' tokens; an
    /// operation that holds no reservation passes `None`.
    AdvanceOperation {
        operation: u64,
        token: Option<u64>,
        progress: Progress,
    },
    /// The transfer succeeded: the domain leaves its source and is bound on the target
    /// with the reservation's binding (LM-12, LM-13); the operation is Done. For a dry
    /// run (OP-02) nothing moves: the reservations are released and the operation is Done.
    CommitMigration {
        operation: u64,
        reservation: u64,
        token: u64,
        downtime_ms: u64,
        total_ms: u64,
        notes: Vec<String>,
    },
    /// HA-04: a failover's guest runs on its reservation's target, started there from
    /// shared storage: the domain leaves its fenced host and is bound on the target
    /// with the reservation's binding. Only while the guest is known stopped on its
    /// host: fenced (HA-02) or counted stopped (HA-08, [`crate::State::counts_stopped`]). The failover
    /// keeps running until `CompleteOperation`.
    CommitRestart {
        operation: u64,
        reservation: u64,
        token: u64,
    },
    /// RB-06: a resize's guest now holds its reservation's binding (`reservation` with
    /// its `token`; none for a resize that only gives back) and no longer holds
    /// `removed`, on its host; the reservation is consumed and the operation is Done.
    /// What the host's last report already shows is not applied twice.
    CommitResize {
        operation: u64,
        reservation: Option<u64>,
        token: Option<u64>,
        removed: Binding,
    },
    /// Ends a running operation that moves no domain itself (an evacuation or restore,
    /// UC-1: its guests moved by migrations of their own) as Done, with a summary.
    /// Migrations end only by `CommitMigration` or `AbortOperation`.
    CompleteOperation {
        operation: u64,
        notes: Vec<String>,
    },
    /// Ends a running operation without committing; its reservations are released.
    AbortOperation {
        operation: u64,
        outcome: AbortOutcome,
    },
    /// Adds a user, or replaces one when `replace` is set. `password_hash` is an argon2
    /// PHC string made by [`crate::hash_password`] in the proposer.
    AddUser {
        name: String,
        password_hash: String,
        profiles: BTreeSet<Profile>,
        replace: bool,
    },
    RemoveUser {
        name: String,
    },
    /// Requests the leader took at once, in one log entry (issue 18: one Raft entry,
    /// one replication and one apply for many clients' writes). Applied in order, each
    /// exactly as if it were an entry of its own: its own clock stamp, checks, audit
    /// record and response ([`Outcome::Batch`]), so one refused request changes nothing
    /// for the others. Formed only by the leader's [`crate::Batcher`]; a member never
    /// takes one from outside, and a batch never holds a batch.
    Batch {
        requests: Vec<Request>,
    },
    /// Takes a member out of the cluster for good (`ternctl cluster remove-member`): its
    /// host's record goes, which is refused while a guest, a reservation or a running
    /// operation is on the host; its name may not register again until
    /// [`Command::ReadmitMember`]. `node_id` is its Raft id, which the leader then takes
    /// out of the membership.
    RemoveMember {
        name: String,
        node_id: Option<u64>,
    },
    /// Lets a removed member's name join again (`ternctl cluster add-member`).
    ReadmitMember {
        name: String,
    },
}

impl Command {
    /// The command's name as the audit log and metrics show it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::RegisterHost { .. } => "register-host",
            Self::UpdateHost { .. } => "update-host",
            Self::ReportInventory { .. } => "report-inventory",
            Self::SetHostStatus { .. } => "set-host-status",
            Self::SetDomain { .. } => "set-domain",
            Self::SetRebalance { .. } => "set-rebalance",
            Self::RecordPlan { .. } => "record-plan",
            Self::ApplyPlan { .. } => "apply-plan",
            Self::EndPlan { .. } => "end-plan",
            Self::CommitRestart { .. } => "commit-restart",
            Self::Reserve { .. } => "reserve",
            Self::Renew { .. } => "renew",
            Self::Release { .. } => "release",
            Self::Expire { .. } => "expire",
            Self::BeginOperation { .. } => "begin-operation",
            Self::AdvanceOperation { .. } => "advance-operation",
            Self::CommitMigration { .. } => "commit-migration",
            Self::CommitResize { .. } => "commit-resize",
            Self::CompleteOperation { .. } => "complete-operation",
            Self::AbortOperation { .. } => "abort-operation",
            Self::AddUser { .. } => "add-user",
            Self::RemoveUser { .. } => "remove-user",
            Self::RemoveMember { .. } => "remove-member",
            Self::ReadmitMember { .. } => "readmit-member",
            Self::Batch { .. } => "batch",
        }
    }
}

/// What an accepted command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// A blank or membership entry: nothing for the application.
    Noop,
    HostRegistered,
    HostUpdated,
    /// `indexed`: guest domains newly recorded on this host; `unindexed`: guest domains
    /// recorded on this host that it no longer reports.
    InventoryAccepted {
        indexed: Vec<String>,
        unindexed: Vec<String>,
    },
    /// `rolled_back`: operations ended by HA-07; `released`: reservations given back.
    HostStatusSet {
        rolled_back: Vec<u64>,
        released: Vec<u64>,
    },
    Reserved {
        reservation: u64,
        token: u64,
        lease_expires_ms: u64,
    },
    Renewed {
        lease_expires_ms: u64,
    },
    Released,
    Expired {
        released: Vec<u64>,
        rolled_back: Vec<u64>,
    },
    OperationBegun {
        operation: u64,
    },
    OperationAdvanced,
    /// `moved` is false for a dry run.
    Committed {
        moved: bool,
        result: OperationResult,
    },
    Completed,
    /// A resize is applied: the guest's cores (`old_cids` -> `new_cids`) and notes.
    Resized {
        result: OperationResult,
    },
    /// A failover's guest is now recorded on `target`.
    Restarted {
        domain: String,
        target: String,
    },
    DomainSet,
    RebalanceSet,
    PlanRecorded {
        id: u64,
    },
    PlanApplying,
    PlanEnded,
    Aborted {
        released: Vec<u64>,
    },
    UserAdded,
    UserRemoved,
    /// What each request of a [`Command::Batch`] got, in order.
    Batch {
        responses: Vec<Response>,
    },
    /// `already`: the member had been removed before; nothing changed.
    MemberRemoved {
        node_id: Option<u64>,
        already: bool,
    },
    /// `was_removed`: false when the name had not been removed (nothing changed).
    MemberReadmitted {
        was_removed: bool,
    },
}

/// The result of applying one entry: every member computes the same one.
pub type Response = Result<Outcome, Rejection>;

/// Why apply refused a command. `code` is stable; `message` is for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{}", self.display())]
pub struct Rejection {
    pub code: RejectCode,
    /// The SPEC rule that decides it, when one does.
    pub rule: Option<Rule>,
    pub message: String,
}

impl Rejection {
    pub fn new(code: RejectCode, message: impl Into<String>) -> Self {
        Self { code, rule: None, message: message.into() }
    }

    pub fn with_rule(code: RejectCode, rule: Rule, message: impl Into<String>) -> Self {
        Self { code, rule: Some(rule), message: message.into() }
    }

    fn display(&self) -> String {
        match self.rule {
            Some(rule) => format!("{} [{}] {}", rule, self.code, self.message),
            None => format!("[{}] {}", self.code, self.message),
        }
    }
}

/// Stable machine-readable rejection codes. The strings never change meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectCode {
    /// A field is malformed or over a limit of [`crate::limits`].
    InvalidRequest,
    HostUnknown,
    HostExists,
    /// The host's status forbids the command (LM-02, HA-02, HA-07, UC-1).
    HostStatus,
    NoInventory,
    /// The report fails `Server::validate`.
    InventoryInvalid,
    /// The report would drop or rebind a resource an active reservation holds.
    InventoryDropsReserved,
    /// The report shows a guest the cluster records on another host.
    DomainOnOtherHost,
    DomainUnknown,
    /// LM-01.
    NotAGuest,
    /// OP-01: source and target are the same server.
    SameServer,
    /// OP-05: the name is in use.
    NameTaken,
    /// LM-06: a strand does not exist, is not activated, is bound or is reserved.
    StrandUnavailable,
    /// LM-08/LM-09: a memory range is not inside one free block, or is reserved.
    MemoryUnavailable,
    /// LM-13: the console port is outside the VCC ranges, used or reserved.
    ConsolePortUnavailable,
    /// LM-06/LM-09/LM-12: the binding's amount of CPU or block sizes differ from the guest's.
    ShapeMismatch,
    /// The binding is malformed (duplicates, empty ranges, self-overlap).
    BindingInvalid,
    ReservationUnknown,
    /// The reservation's lease has passed.
    LeaseExpired,
    /// The command's fencing token is not the reservation's.
    StaleToken,
    OperationUnknown,
    /// The operation has already ended.
    OperationFinished,
    /// Another operation on the same domain or host is running.
    OperationRunning,
    /// The command does not match the operation (kind, hosts, domain, reservation).
    OperationMismatch,
    /// The operation's phase does not allow the command.
    PhaseInvalid,
    /// A limit on the number of records is reached.
    LimitReached,
    /// Binding on the target failed although the reservation was checked: a bug or a
    /// report that raced the commit; the commit changed nothing.
    CommitFailed,
    UserUnknown,
    UserExists,
    /// Not an argon2 PHC string.
    PasswordHashInvalid,
    PlanUnknown,
    /// The state a plan was made from no longer holds (RB-04): plan again.
    PlanStale,
    /// Another plan is applying, or this one is not in the status the command needs.
    PlanStatus,
    /// An agent's plan command while auto mode is off (RB-04).
    NotPermitted,
    /// The host's member was removed from the cluster (`RemoveMember`).
    MemberRemoved,
    /// The member still holds guests, reservations or running operations.
    MemberBusy,
}

impl RejectCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid-request",
            Self::HostUnknown => "host-unknown",
            Self::HostExists => "host-exists",
            Self::HostStatus => "host-status",
            Self::NoInventory => "no-inventory",
            Self::InventoryInvalid => "inventory-invalid",
            Self::InventoryDropsReserved => "inventory-drops-reserved",
            Self::DomainOnOtherHost => "domain-on-other-host",
            Self::DomainUnknown => "domain-unknown",
            Self::NotAGuest => "not-a-guest",
            Self::SameServer => "same-server",
            Self::NameTaken => "name-taken",
            Self::StrandUnavailable => "strand-unavailable",
            Self::MemoryUnavailable => "memory-unavailable",
            Self::ConsolePortUnavailable => "console-port-unavailable",
            Self::ShapeMismatch => "shape-mismatch",
            Self::BindingInvalid => "binding-invalid",
            Self::ReservationUnknown => "reservation-unknown",
            Self::LeaseExpired => "lease-expired",
            Self::StaleToken => "stale-token",
            Self::OperationUnknown => "operation-unknown",
            Self::OperationFinished => "operation-finished",
            Self::OperationRunning => "operation-running",
            Self::OperationMismatch => "operation-mismatch",
            Self::PhaseInvalid => "phase-invalid",
            Self::LimitReached => "limit-reached",
            Self::CommitFailed => "commit-failed",
            Self::UserUnknown => "user-unknown",
            Self::UserExists => "user-exists",
            Self::PasswordHashInvalid => "password-hash-invalid",
            Self::PlanUnknown => "plan-unknown",
            Self::PlanStale => "plan-stale",
            Self::PlanStatus => "plan-status",
            Self::NotPermitted => "not-permitted",
            Self::MemberRemoved => "member-removed",
            Self::MemberBusy => "member-busy",
        }
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Request {
    /// Checks every limit of [`crate::limits`] that apply would check, plus the encoded
    /// size, so a proposer can refuse a request before it reaches the log. Apply runs
    /// the same field checks (not the size check) and rejects alike.
    pub fn validate(&self) -> Result<(), Rejection> {
        self.validated_len().map(drop)
    }

    /// [`Request::validate`], returning how many bytes the request encodes to.
    pub fn validated_len(&self) -> Result<usize, Rejection> {
        crate::state::validate::request(self)?;
        let bytes = serde_json::to_vec(self)
            .map_err(|e| Rejection::new(RejectCode::InvalidRequest, format!("request does not encode: {e}")))?;
        if bytes.len() > limits::REQUEST_BYTES_MAX {
            return Err(Rejection::new(
                RejectCode::InvalidRequest,
                format!("request encodes to {} bytes; the limit is {}", bytes.len(), limits::REQUEST_BYTES_MAX),
            ));
        }
        Ok(bytes.len())
    }
}
