//! The Prometheus endpoint (`/metrics`, OpenMetrics text).
//!
//! Two kinds of values, by the Prometheus conventions (base units, `_total`,
//! `_seconds`, histograms):
//! - **Gauges** read at scrape time from their source of truth: openraft's metrics
//!   (term, leader, indexes, replication), the replicated state (free cores, free
//!   memory, largest free range, reservations and operations per host, HA, rebalance
//!   plans and the imbalance) and the leader's own rounds (heartbeat ages, fences,
//!   rounds held). Nothing is cached.
//! - **Counters and histograms** of what happened on this agent: proposals by command
//!   and result, their latency, reservations created / ended / refused, migrations
//!   started and finished with their duration and downtime (all counted on the leader
//!   that committed the command, so summing over agents counts each once), leader
//!   changes seen, the store's sync / apply / snapshot times ([`StoreObserver`]), and
//!   every gRPC call by method and code ([`crate::grpc_metrics`]). They start at zero
//!   when the agent starts, as Prometheus expects of counters.
//!
//! Label values come only from closed sets (command names, reject codes, the API's
//! methods, hosts and followers of the cluster), so no caller can grow the series.

use crate::membership::commit_index;
use crate::node::Node;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tern_raft_store::observe::{StoreObserver, Timing};
use tern_raft_store::{AbortOutcome, Command, Error as StoreError, OperationKind, Outcome, RejectCode, Request, State};
use tokio_util::sync::CancellationToken;

/// Buckets of the store and proposal latencies, in seconds: 0.5 ms .. 5 s.
const FAST_BUCKETS: [f64; 13] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
/// Buckets of a whole migration, in seconds: 0.1 s .. 30 min.
const MIGRATION_BUCKETS: [f64; 12] = [0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0];
/// Buckets of a migration's downtime (the final stop-and-copy), in seconds.
const DOWNTIME_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];

/// Reject codes a reserving command can get, present at 0 from the start.
const RESERVE_CODES: [RejectCode; 10] = [
    RejectCode::StrandUnavailable,
    RejectCode::MemoryUnavailable,
    RejectCode::ConsolePortUnavailable,
    RejectCode::ShapeMismatch,
    RejectCode::BindingInvalid,
    RejectCode::ReservationUnknown,
    RejectCode::LeaseExpired,
    RejectCode::StaleToken,
    RejectCode::HostStatus,
    RejectCode::LimitReached,
];
/// How a reservation ends.
const ENDS: [&str; 3] = ["committed", "released", "expired"];
/// How a migration ends.
const MIGRATION_RESULTS: [&str; 5] = ["done", "cancelled", "rolled_back", "failed", "expired"];
/// Operation kinds counted by `tern_operations_running`.
const OPERATION_KINDS: [&str; 4] = ["migration", "evacuation", "failover", "resize"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostStatusLabels {
    host: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PlanStatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FollowerLabels {
    follower: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProposalLabels {
    command: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabels {
    end: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RpcLabels {
    pub grpc_service: &'static str,
    pub grpc_method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RpcCodeLabels {
    pub grpc_service: &'static str,
    pub grpc_method: &'static str,
    pub grpc_code: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn fast_histogram() -> Histogram {
    Histogram::new(FAST_BUCKETS)
}

/// What one proposal was about, read from the state before it was written (a
/// commit consumes the reservation it names; an abort's operation kind).
#[derive(Clone, Debug, Default)]
pub struct Before {
    /// The operation's kind, for commands that end an operation.
    kind: Option<&'static str>,
    /// Guest memory the named reservation holds (a migration's commit).
    memory_bytes: u64,
}

/// The gauges of one agent.
pub struct Metrics {
    registry: Registry,
    term: Gauge,
    leader_id: Gauge,
    is_leader: Gauge,
    last_log_index: Gauge,
    commit_index: Gauge,
    applied_index: Gauge,
    replication_lag: Family<FollowerLabels, Gauge>,
    free_cores: Family<HostLabels, Gauge>,
    free_memory: Family<HostLabels, Gauge>,
    largest_free_range: Family<HostLabels, Gauge>,
    host_status: Family<HostStatusLabels, Gauge>,
    heartbeat_age: Family<HostLabels, Gauge<f64, AtomicU64>>,
    failovers_running: Gauge,
    fence_attempts: Family<HostLabels, Gauge>,
    guests_restarted: Family<HostLabels, Gauge>,
    guests_waiting: Family<HostLabels, Gauge>,
    imbalance: Gauge<f64, AtomicU64>,
    imbalance_threshold: Gauge<f64, AtomicU64>,
    rounds_held: Gauge,
    plans: Family<PlanStatusLabels, Gauge>,
    plans_recorded: Gauge,
    moves_in_flight: Gauge,
    build_info: Family<BuildLabels, Gauge>,
    reservations_active: Family<HostLabels, Gauge>,
    reservation_oldest_age: Family<HostLabels, Gauge<f64, AtomicU64>>,
    operations_running: Family<KindLabels, Gauge>,
    leader_changes: Counter,
    proposals: Family<ProposalLabels, Counter>,
    proposal_duration: Histogram,
    apply_duration: Histogram,
    snapshot_duration: Histograms<KindLabels>,
    sync_duration: Histograms<KindLabels>,
    reservations_created: Counter,
    reservations_ended: Family<EndLabels, Counter>,
    reservations_rejected: Family<CodeLabels, Counter>,
    migrations_started: Counter,
    migrations_finished: Family<ResultLabels, Counter>,
    migration_duration: Histogram,
    migration_downtime: Histogram,
    migration_memory: Counter,
    pub(crate) rpcs: Family<RpcCodeLabels, Counter>,
    pub(crate) rpc_duration: Histograms<RpcLabels>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tern");
        let m = Self {
            term: Gauge::default(),
            leader_id: Gauge::default(),
            is_leader: Gauge::default(),
            last_log_index: Gauge::default(),
            commit_index: Gauge::default(),
            applied_index: Gauge::default(),
            replication_lag: Family::default(),
            free_cores: Family::default(),
            free_memory: Family::default(),
            largest_free_range: Family::default(),
            host_status: Family::default(),
            heartbeat_age: Family::default(),
            failovers_running: Gauge::default(),
            fence_attempts: Family::default(),
            guests_restarted: Family::default(),
            guests_waiting: Family::default(),
            imbalance: Gauge::default(),
            imbalance_threshold: Gauge::default(),
            rounds_held: Gauge::default(),
            plans: Family::default(),
            plans_recorded: Gauge::default(),
            moves_in_flight: Gauge::default(),
            build_info: Family::default(),
            reservations_active: Family::default(),
            reservation_oldest_age: Family::default(),
            operations_running: Family::default(),
            leader_changes: Counter::default(),
            proposals: Family::default(),
            proposal_duration: fast_histogram(),
            apply_duration: fast_histogram(),
            snapshot_duration: Family::new_with_constructor(fast_histogram),
            sync_duration: Family::new_with_constructor(fast_histogram),
            reservations_created: Counter::default(),
            reservations_ended: Family::default(),
            reservations_rejected: Family::default(),
            migrations_started: Counter::default(),
            migrations_finished: Family::default(),
            migration_duration: Histogram::new(MIGRATION_BUCKETS),
            migration_downtime: Histogram::new(DOWNTIME_BUCKETS),
            migration_memory: Counter::default(),
            rpcs: Family::default(),
            rpc_duration: Family::new_with_constructor(fast_histogram),
            registry: Registry::default(),
        };
        registry.register("raft_term", "Current Raft term", m.term.clone());
        registry.register("raft_leader_id", "Node id of the leader this member knows (0: none)", m.leader_id.clone());
        registry.register("raft_is_leader", "1 when this member is the leader", m.is_leader.clone());
        registry.register("raft_last_log_index", "Index of the last log entry", m.last_log_index.clone());
        registry.register("raft_commit_index", "Highest index known committed", m.commit_index.clone());
        registry.register("raft_applied_index", "Index of the last applied entry", m.applied_index.clone());
        registry.register(
            "raft_replication_lag_entries",
            "Entries the leader has that a follower lacks (leader only)",
            m.replication_lag.clone(),
        );
        registry.register("host_free_cores", "Activated cores with no bound or reserved thread", m.free_cores.clone());
        registry.register("host_free_memory_bytes", "Free memory not reserved", m.free_memory.clone());
        registry.register(
            "host_largest_free_range_bytes",
            "Largest contiguous free memory range (LM-09)",
            m.largest_free_range.clone(),
        );
        registry.register(
            "host_status",
            "1 for each host's replicated status (up, suspect, lost, fenced, maintenance; HA-01)",
            m.host_status.clone(),
        );
        registry.register(
            "ha_heartbeat_age_seconds",
            "Time since the leader last heard the host's heartbeat (leader only; HA-01)",
            m.heartbeat_age.clone(),
        );
        registry.register(
            "ha_failovers_running",
            "Failover operations running (HA-02..HA-06)",
            m.failovers_running.clone(),
        );
        registry.register(
            "ha_fence_attempts",
            "Fence rounds (off, then status) run for the host's running failover (leader only, 0 when none; HA-02)",
            m.fence_attempts.clone(),
        );
        registry.register(
            "ha_guests_restarted",
            "Guests of the host restarted elsewhere by this leader in its running failover (HA-04)",
            m.guests_restarted.clone(),
        );
        registry.register(
            "ha_guests_waiting",
            "Guests of the host that no server can take now (leader only; HA-05)",
            m.guests_waiting.clone(),
        );
        registry.register(
            "rebalance_imbalance",
            "Standard deviation of the Up hosts' load, CPU and memory weighed (RB-01)",
            m.imbalance.clone(),
        );
        registry.register(
            "rebalance_imbalance_threshold",
            "The level's imbalance threshold (0 at level 1: mandatory moves only)",
            m.imbalance_threshold.clone(),
        );
        registry.register(
            "rebalance_rounds_held",
            "Rounds in a row the imbalance stayed at or above the threshold (leader only; RB-01)",
            m.rounds_held.clone(),
        );
        registry.register("rebalance_plans", "Kept rebalance plans by status (RB-04)", m.plans.clone());
        registry.register(
            "rebalance_plans_recorded",
            "Rebalance plans recorded since the cluster began (the last plan id)",
            m.plans_recorded.clone(),
        );
        registry.register(
            "rebalance_moves_in_flight",
            "Moves of applying plans whose migrations run now",
            m.moves_in_flight.clone(),
        );
        m.register_counted(&mut registry);
        Self { registry, ..m }
    }

    fn register_counted(&self, registry: &mut Registry) {
        let m = self;
        registry.register("build_info", "1, labelled with this agent's version and commit", m.build_info.clone());
        m.build_info
            .get_or_create(&BuildLabels { version: tern_dist::VERSION.into(), commit: tern_dist::COMMIT.into() })
            .set(1);
        registry.register(
            "reservations_active",
            "Reservations holding resources on the host now (LM-06/LM-09: promised, not yet bound)",
            m.reservations_active.clone(),
        );
        registry.register(
            "reservation_oldest_age_seconds",
            "Age of the host's oldest active reservation (0 when none)",
            m.reservation_oldest_age.clone(),
        );
        registry.register("operations_running", "Operations not yet ended, by kind", m.operations_running.clone());
        registry.register("raft_leader_changes", "Leader changes this member has seen", m.leader_changes.clone());
        registry.register(
            "raft_proposals",
            "Commands this member wrote as leader, by command and result (committed, rejected, not_leader, failed)",
            m.proposals.clone(),
        );
        registry.register(
            "raft_proposal_duration_seconds",
            "Time from a leader's client write to its applied answer",
            m.proposal_duration.clone(),
        );
        registry.register(
            "raft_apply_duration_seconds",
            "One state-machine apply batch, including its synced write",
            m.apply_duration.clone(),
        );
        registry.register(
            "raft_snapshot_duration_seconds",
            "Building (build) or installing (install) a snapshot",
            m.snapshot_duration.clone(),
        );
        registry.register(
            "rocksdb_sync_duration_seconds",
            "One fsync of the store: a group-commit WAL flush (wal) or a synced write batch (batch)",
            m.sync_duration.clone(),
        );
        registry.register(
            "reservations_created",
            "Reservations this member committed as leader",
            m.reservations_created.clone(),
        );
        registry.register(
            "reservations_ended",
            "Reservations ended, by how: committed (bound), released, expired (lease passed)",
            m.reservations_ended.clone(),
        );
        registry.register(
            "reservations_rejected",
            "Reserving commands the state machine refused, by reject code",
            m.reservations_rejected.clone(),
        );
        registry.register("migrations_started", "Migrations begun (dry runs too; OP-01)", m.migrations_started.clone());
        registry.register(
            "migrations_finished",
            "Migrations ended, by result (done, cancelled, rolled_back, failed, expired)",
            m.migrations_finished.clone(),
        );
        registry.register(
            "migration_duration_seconds",
            "A committed migration from begin to commit (LM-17)",
            m.migration_duration.clone(),
        );
        registry.register(
            "migration_downtime_seconds",
            "A committed migration's final stop-and-copy: the guest's pause (LM-17)",
            m.migration_downtime.clone(),
        );
        registry.register(
            "migration_guest_memory_bytes",
            "Guest memory moved by committed migrations",
            m.migration_memory.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "gRPC calls served, by service, method and status code",
            m.rpcs.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Time to answer a gRPC call (streams: until the first response headers)",
            m.rpc_duration.clone(),
        );
        for end in ENDS {
            let _ = m.reservations_ended.get_or_create(&EndLabels { end });
        }
        for code in RESERVE_CODES {
            let _ = m.reservations_rejected.get_or_create(&CodeLabels { code: code.as_str() });
        }
        for result in MIGRATION_RESULTS {
            let _ = m.migrations_finished.get_or_create(&ResultLabels { result });
        }
        for kind in ["build", "install"] {
            let _ = m.snapshot_duration.get_or_create(&KindLabels { kind });
        }
        for kind in ["wal", "batch"] {
            let _ = m.sync_duration.get_or_create(&KindLabels { kind });
        }
    }

    /// A leader change seen by this member.
    pub fn leader_changed(&self) {
        self.leader_changes.inc();
    }

    /// What `request` is about in `state`, read before it is written.
    pub fn before(request: &Request, state: &State) -> Before {
        let kind_of = |operation: &u64| state.operation(*operation).map(|o| o.kind.name());
        match &request.command {
            Command::CommitMigration { operation, reservation, .. } => Before {
                kind: kind_of(operation),
                memory_bytes: state
                    .reservation(*reservation)
                    .map_or(0, |r| r.binding.memory.iter().map(|m| m.size).sum()),
            },
            Command::AbortOperation { operation, .. } => Before { kind: kind_of(operation), memory_bytes: 0 },
            _ => Before::default(),
        }
    }

    /// Counts one proposal this member wrote through its own Raft (as leader), with
    /// what the state machine answered. `state` is the state after it.
    pub fn proposed(
        &self,
        request: &Request,
        before: &Before,
        result: &Result<tern_raft_store::Applied, StoreError>,
        took: Duration,
        state: &State,
    ) {
        let command = request.command.name();
        let label = match result {
            Ok(_) => "committed",
            Err(StoreError::Rejected(_)) => "rejected",
            Err(StoreError::NotLeader { .. }) => "not_leader",
            Err(_) => "failed",
        };
        self.proposals.get_or_create(&ProposalLabels { command, result: label }).inc();
        if result.is_ok() || matches!(result, Err(StoreError::Rejected(_))) {
            self.proposal_duration.observe(took.as_secs_f64());
        }
        match result {
            Ok(applied) => self.committed(&request.command, before, &applied.outcome, state),
            Err(StoreError::Rejected(r)) if reserves(&request.command) => {
                self.reservations_rejected.get_or_create(&CodeLabels { code: r.code.as_str() }).inc();
            }
            Err(_) => {}
        }
    }

    fn committed(&self, command: &Command, before: &Before, outcome: &Outcome, state: &State) {
        let ended = |end: &'static str, n: usize| {
            self.reservations_ended.get_or_create(&EndLabels { end }).inc_by(n as u64);
        };
        let finished = |result: &'static str| {
            self.migrations_finished.get_or_create(&ResultLabels { result }).inc();
        };
        match (command, outcome) {
            (Command::BeginOperation { kind: OperationKind::Migration { .. } }, Outcome::OperationBegun { .. }) => {
                self.migrations_started.inc();
            }
            (_, Outcome::Reserved { .. }) => {
                self.reservations_created.inc();
            }
            (_, Outcome::Released) => ended("released", 1),
            (_, Outcome::HostStatusSet { released, .. }) | (_, Outcome::Aborted { released }) => {
                ended("released", released.len());
            }
            (_, Outcome::Expired { released, rolled_back }) => {
                ended("expired", released.len());
                let migrations = rolled_back
                    .iter()
                    .filter(|id| state.operation(**id).is_some_and(|o| o.kind.name() == "migration"))
                    .count();
                for _ in 0..migrations {
                    finished("expired");
                }
            }
            _ => {}
        }
        match (command, outcome) {
            // A dry run's commit gives its reservation back and moves nothing.
            (Command::CommitMigration { .. }, Outcome::Committed { moved: false, .. }) => {
                ended("released", 1);
                finished("done");
            }
            (Command::CommitMigration { downtime_ms, total_ms, .. }, _) => {
                ended("committed", 1);
                if before.kind == Some("migration") {
                    finished("done");
                    self.migration_duration.observe(*total_ms as f64 / 1000.0);
                    self.migration_downtime.observe(*downtime_ms as f64 / 1000.0);
                    self.migration_memory.inc_by(before.memory_bytes);
                }
            }
            (Command::CommitRestart { .. }, _) | (Command::CommitResize { reservation: Some(_), .. }, _) => {
                ended("committed", 1);
            }
            (Command::AbortOperation { outcome, .. }, _) if before.kind == Some("migration") => {
                finished(match outcome {
                    AbortOutcome::Cancelled => "cancelled",
                    AbortOutcome::RolledBack { .. } => "rolled_back",
                    AbortOutcome::Failed { .. } => "failed",
                })
            }
            _ => {}
        }
    }

    fn refresh_rebalance(&self, node: &Node, now: u64) {
        self.plans.clear();
        let held = node.rebalancer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).held;
        self.rounds_held.set(if node.is_leader() { i64::from(held) } else { 0 });
        node.read(|s| {
            let view = s.planning_view(now);
            let ppm = tern_model::rebalance::imbalance_ppm(&view.input());
            self.imbalance.set(f64::from(ppm) / 1e6);
            self.imbalance_threshold.set(s.rebalance().level.act_above().unwrap_or(0.0));
            for status in ["shown", "applying", "done", "failed", "cancelled"] {
                let n = s.plans().values().filter(|p| p.status.name() == status).count();
                self.plans.get_or_create(&PlanStatusLabels { status: status.into() }).set(to_i64(n as u64));
            }
            self.plans_recorded.set(to_i64(s.meta().last_plan_id));
            self.moves_in_flight.set(i64::from(tern_migrate::rebalance::moves_in_flight(s)));
        });
    }

    /// Sets every gauge from `node`'s current Raft metrics and replicated state.
    pub fn refresh(&self, node: &Node) {
        let m = node.raft.metrics().borrow().clone();
        let last = m.last_log_index.unwrap_or(0);
        self.term.set(to_i64(m.current_term));
        self.leader_id.set(to_i64(m.current_leader.unwrap_or(0)));
        self.is_leader.set(i64::from(m.current_leader == Some(node.id)));
        self.last_log_index.set(to_i64(last));
        self.commit_index.set(to_i64(commit_index(&m)));
        self.applied_index.set(to_i64(m.last_applied.map_or(0, |l| l.index)));
        self.replication_lag.clear();
        if let Some(repl) = &m.replication {
            for (id, matched) in repl.iter().filter(|(id, _)| **id != node.id) {
                let lag = last.saturating_sub(matched.map_or(0, |l| l.index));
                self.replication_lag.get_or_create(&FollowerLabels { follower: id.to_string() }).set(to_i64(lag));
            }
        }
        self.free_cores.clear();
        self.free_memory.clear();
        self.largest_free_range.clear();
        self.reservations_active.clear();
        self.reservation_oldest_age.clear();
        let now = node.now_ms();
        self.refresh_ha(node, now);
        self.refresh_rebalance(node, now);
        node.read(|state| {
            for host in state.hosts().values() {
                let Some(inv) = &host.inventory else { continue };
                let reserved = state.reserved_on(&host.name, now);
                let free = inv.free_ranges(&reserved);
                let labels = HostLabels { host: host.name.clone() };
                self.free_cores.get_or_create(&labels).set(to_i64(inv.free_cores(&reserved).len() as u64));
                self.free_memory.get_or_create(&labels).set(to_i64(free.iter().map(|r| r.size).sum()));
                self.largest_free_range
                    .get_or_create(&labels)
                    .set(to_i64(free.iter().map(|r| r.size).max().unwrap_or(0)));
            }
            for host in state.hosts().keys() {
                let labels = HostLabels { host: host.clone() };
                let active: Vec<_> = state.active_reservations_on(host, now).collect();
                let oldest = active.iter().map(|r| r.created_ms).min().map_or(0, |c| now.saturating_sub(c));
                self.reservations_active.get_or_create(&labels).set(to_i64(active.len() as u64));
                self.reservation_oldest_age.get_or_create(&labels).set(oldest as f64 / 1000.0);
            }
            for kind in OPERATION_KINDS {
                let n = state.operations().values().filter(|o| !o.phase.is_terminal() && o.kind.name() == kind).count();
                self.operations_running.get_or_create(&KindLabels { kind }).set(to_i64(n as u64));
            }
        });
    }

    fn refresh_ha(&self, node: &Node, now: u64) {
        self.host_status.clear();
        self.heartbeat_age.clear();
        self.fence_attempts.clear();
        self.guests_restarted.clear();
        self.guests_waiting.clear();
        let leading = node.is_leader();
        let report = node.failover.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let hosts: Vec<String> = node.read(|state| {
            let running = state
                .operations()
                .values()
                .filter(|o| !o.phase.is_terminal() && matches!(o.kind, tern_raft_store::OperationKind::Failover { .. }))
                .count();
            self.failovers_running.set(to_i64(running as u64));
            state
                .hosts()
                .values()
                .map(|h| {
                    let labels = HostStatusLabels { host: h.name.clone(), status: h.status.to_string() };
                    self.host_status.get_or_create(&labels).set(1);
                    h.name.clone()
                })
                .collect()
        });
        if !leading {
            return;
        }
        let detector = node.detector();
        for host in hosts {
            let labels = HostLabels { host };
            if let Some(ms) = detector.heard_ago_ms(&labels.host, now) {
                self.heartbeat_age.get_or_create(&labels).set(ms as f64 / 1000.0);
            }
            // The leader serves every host's series, 0 without a running failover, so
            // dashboards and alerts see the metric before the first failure.
            for family in [&self.fence_attempts, &self.guests_restarted, &self.guests_waiting] {
                family.get_or_create(&labels).set(0);
            }
        }
        for (host, r) in &report {
            let labels = HostLabels { host: host.clone() };
            self.fence_attempts.get_or_create(&labels).set(i64::from(r.fence_attempts));
            self.guests_restarted.get_or_create(&labels).set(to_i64(r.restarted.len() as u64));
            self.guests_waiting.get_or_create(&labels).set(to_i64(r.waiting.len() as u64));
        }
    }

    /// The OpenMetrics text of every gauge.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Commands that take or use a reservation: their refusals are counted by code.
fn reserves(command: &Command) -> bool {
    matches!(
        command,
        Command::Reserve { .. }
            | Command::Renew { .. }
            | Command::CommitMigration { .. }
            | Command::CommitRestart { .. }
            | Command::CommitResize { .. }
    )
}

impl StoreObserver for Metrics {
    fn timed(&self, what: Timing, took: Duration) {
        let secs = took.as_secs_f64();
        match what {
            Timing::WalSync => self.sync_duration.get_or_create(&KindLabels { kind: "wal" }).observe(secs),
            Timing::BatchSync => self.sync_duration.get_or_create(&KindLabels { kind: "batch" }).observe(secs),
            Timing::Apply => self.apply_duration.observe(secs),
            Timing::SnapshotBuild => self.snapshot_duration.get_or_create(&KindLabels { kind: "build" }).observe(secs),
            Timing::SnapshotInstall => {
                self.snapshot_duration.get_or_create(&KindLabels { kind: "install" }).observe(secs)
            }
        }
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Counts the leader changes this member sees (a new leader, not the gaps without
/// one), until `shutdown`.
pub async fn watch_leader(node: Node, shutdown: CancellationToken) {
    let mut rx = node.raft.metrics();
    let mut last = None;
    loop {
        let leader = rx.borrow_and_update().current_leader;
        if leader.is_some() && leader != last {
            node.metrics.leader_changed();
            last = leader;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn serve(listener: tokio::net::TcpListener, node: Node, shutdown: CancellationToken) -> std::io::Result<()> {
    let metrics = node.metrics.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (metrics, node) = (metrics.clone(), node.clone());
            async move {
                metrics.refresh(&node);
                (
                    [(axum::http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
                    metrics.encode(),
                )
            }
        }),
    );
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_raft_store::{Applied, LogId, Rejection};

    fn request(command: Command) -> Request {
        Request { proposed_at_ms: 1, actor: "agent:m10-1-1".into(), from: String::new(), command }
    }

    fn committed(outcome: Outcome) -> Result<Applied, StoreError> {
        Ok(Applied { log_id: LogId::default(), outcome })
    }

    /// The value of the one sample of `series` (name with its labels as encoded).
    fn sample(m: &Metrics, series: &str) -> f64 {
        let text = m.encode();
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
            .parse()
            .unwrap()
    }

    #[test]
    fn counts_a_refused_reserve_by_its_code_and_the_proposal_as_rejected() {
        // Goal: a refusal of a reserving command is counted under its reject code.
        let m = Metrics::new();
        let reserve = request(Command::Reserve {
            operation: 1,
            target: "m10-1-2".into(),
            source: "m10-1-1".into(),
            domain: "ldom1".into(),
            binding: Default::default(),
            lease_ms: 30_000,
        });
        let refused = Err(StoreError::Rejected(Rejection::new(RejectCode::MemoryUnavailable, "LM-09")));
        let state = State::default();
        m.proposed(&reserve, &Metrics::before(&reserve, &state), &refused, Duration::from_millis(3), &state);
        assert_eq!(sample(&m, "tern_reservations_rejected_total{code=\"memory-unavailable\"}"), 1.0);
        assert_eq!(sample(&m, "tern_reservations_rejected_total{code=\"lease-expired\"}"), 0.0);
        assert_eq!(sample(&m, "tern_raft_proposals_total{command=\"reserve\",result=\"rejected\"}"), 1.0);
        assert_eq!(sample(&m, "tern_raft_proposal_duration_seconds_count"), 1.0);
    }

    #[test]
    fn counts_expired_and_released_reservations_by_how_they_ended() {
        // Goal: Expire's released leases count as expired; a Release as released.
        let m = Metrics::new();
        let state = State::default();
        let expire = request(Command::Expire { now_ms: 10 });
        let outcome = committed(Outcome::Expired { released: vec![4, 5], rolled_back: vec![] });
        m.proposed(&expire, &Before::default(), &outcome, Duration::ZERO, &state);
        let release = request(Command::Release { reservation: 6, token: 1 });
        m.proposed(&release, &Before::default(), &committed(Outcome::Released), Duration::ZERO, &state);
        assert_eq!(sample(&m, "tern_reservations_ended_total{end=\"expired\"}"), 2.0);
        assert_eq!(sample(&m, "tern_reservations_ended_total{end=\"released\"}"), 1.0);
        assert_eq!(sample(&m, "tern_reservations_ended_total{end=\"committed\"}"), 0.0);
        assert_eq!(sample(&m, "tern_raft_proposals_total{command=\"expire\",result=\"committed\"}"), 1.0);
    }

    #[test]
    fn a_not_leader_answer_is_counted_but_not_timed() {
        // Goal: proposals that never reached the log do not skew the commit latency.
        let m = Metrics::new();
        let state = State::default();
        let expire = request(Command::Expire { now_ms: 10 });
        let not_leader = Err(StoreError::NotLeader { leader: None, address: None });
        m.proposed(&expire, &Before::default(), &not_leader, Duration::from_secs(1), &state);
        assert_eq!(sample(&m, "tern_raft_proposals_total{command=\"expire\",result=\"not_leader\"}"), 1.0);
        assert_eq!(sample(&m, "tern_raft_proposal_duration_seconds_count"), 0.0);
    }

    #[test]
    fn store_timings_land_in_their_histograms() {
        // Goal: the store's WAL syncs, batch syncs and applies are separate series.
        let m = Metrics::new();
        m.timed(Timing::WalSync, Duration::from_millis(3));
        m.timed(Timing::WalSync, Duration::from_millis(2));
        m.timed(Timing::Apply, Duration::from_millis(4));
        assert_eq!(sample(&m, "tern_rocksdb_sync_duration_seconds_count{kind=\"wal\"}"), 2.0);
        assert_eq!(sample(&m, "tern_rocksdb_sync_duration_seconds_count{kind=\"batch\"}"), 0.0);
        assert_eq!(sample(&m, "tern_raft_apply_duration_seconds_count"), 1.0);
    }
}
