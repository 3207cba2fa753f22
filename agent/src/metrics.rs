//! The Prometheus endpoint (`/metrics`, OpenMetrics text).
//!
//! Every value is a gauge read at scrape time from its source of truth: openraft's
//! metrics (term, leader, indexes, replication), the replicated state (free cores,
//! free memory, largest free range per host, HA, rebalance plans and the imbalance)
//! and the leader's own rounds (heartbeat ages, fences, rounds held). Nothing is
//! counted twice or cached.
//! The same `refresh` is the one place an OTLP exporter will read from later.

use crate::membership::commit_index;
use crate::node::Node;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio_util::sync::CancellationToken;

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
            "Fence rounds (off, then status) run for the host's running failover (leader only; HA-02)",
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
        Self { registry, ..m }
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
            if let Some(ms) = detector.heard_ago_ms(&host, now) {
                self.heartbeat_age.get_or_create(&HostLabels { host }).set(ms as f64 / 1000.0);
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

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Serves `/metrics` on `listener` until `shutdown`.
pub async fn serve(listener: tokio::net::TcpListener, node: Node, shutdown: CancellationToken) -> std::io::Result<()> {
    let metrics = Arc::new(Metrics::new());
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
