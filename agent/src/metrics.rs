//! The Prometheus endpoint (`/metrics`, OpenMetrics text).
//!
//! Every value is a gauge read at scrape time from its source of truth: openraft's
//! metrics (term, leader, indexes, replication) and the replicated state (free cores,
//! free memory, largest free range per host). Nothing is counted twice or cached.
//! The same `refresh` is the one place an OTLP exporter will read from later.

use crate::membership::commit_index;
use crate::node::Node;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabels {
    host: String,
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
        Self { registry, ..m }
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
