//! `ternd`, the tern agent: one per control domain. It reads its server through a
//! hypervisor backend, joins the Raft group of agents, serves gRPC (mutual TLS) to its
//! peers and to `ternctl`, reports its inventory, and exposes Prometheus metrics.
//!
//! Seams: [`serve`] takes its connection stream, dialer, hypervisor and storage from
//! the caller, so the same code runs on real TCP ([`run`]) and inside turmoil.
//!
//! Shutdown (one cancellation token): stop accepting and end the background tasks,
//! then stop Raft, then release storage, all within `shutdown_deadline_ms`.

pub mod auth;
pub mod call_context;
pub mod clock;
pub mod config;
pub mod convert;
pub mod grpc_metrics;
pub mod ha;
pub mod inventory;
pub mod leader;
pub mod limits;
pub mod logging;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod otlp_metrics;
pub mod peers;
pub mod raft_net;
pub mod rebalance;
pub mod services;
pub mod systemd;
pub mod telemetry;
pub mod transport;

use crate::config::{Config, HypervisorConfig};
use crate::limits::MessageLimits;
use crate::node::{Node, backoff};
use crate::transport::{Channels, ClientSettings, Dialer, TcpDialer};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tern_hypervisor::Hypervisor;
use tern_hypervisor::sim::{SimHypervisor, SimOptions};
use tern_proto::v1 as pb;
use tern_raft_store::{NodeId, Raft, StateHandle, TypeConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tracing::{Instrument, error, info, info_span, warn};

/// Why the agent could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error("TLS: {0}")]
    Tls(#[from] tern_tls::TlsError),
    #[error("raft storage: {0}")]
    Store(#[from] tern_raft_store::Error),
    #[error("hypervisor: {0}")]
    Hypervisor(#[from] tern_hypervisor::HvError),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("raft: {0}")]
    Raft(String),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The `bootstrap` setting does not fit the data directory (see [`config::Bootstrap`]).
    #[error("{0}")]
    Bootstrap(String),
    #[error("restore: {0}")]
    Restore(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let context = context.into();
    move |source| AgentError::Io { context, source }
}

/// The stable id of this member, kept in the data directory. A new data directory
/// (a replaced disk) is a new member.
pub fn node_id(data_dir: &Path, name: &str) -> Result<NodeId, AgentError> {
    let path = data_dir.join("node-id");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return text.trim().parse().map_err(|_| AgentError::Io {
            context: path.display().to_string(),
            source: std::io::Error::other("not a node id"),
        });
    }
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes().chain(nanos.to_le_bytes()).chain(std::process::id().to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    let id = (h >> 1).max(1); // positive and non-zero
    std::fs::write(&path, format!("{id}\n")).map_err(io_err(path.display().to_string()))?;
    Ok(id)
}

/// openraft's configuration from ours.
pub fn raft_config(config: &Config) -> Result<Arc<openraft::Config>, AgentError> {
    let t = &config.timeouts;
    let rc = openraft::Config {
        cluster_name: "tern".into(),
        heartbeat_interval: t.heartbeat_interval_ms,
        election_timeout_min: t.election_timeout_min_ms,
        election_timeout_max: t.election_timeout_max_ms,
        install_snapshot_timeout: t.rpc_timeout_ms.max(10_000),
        snapshot_max_chunk_size: limits::SNAPSHOT_CHUNK_BYTES_MAX,
        // A snapshot encodes the whole state (MBs with thousands of reservations and the
        // audit log), on the blocking pool; it only serves a follower too far behind and
        // lets the log be purged (the state machine persists its rows at each apply, so
        // a restart replays no snapshot). The log between two snapshots is this many
        // entries: a lone write of about 2 KB each, or under load a batch of up to 256
        // of them (`BATCH_BYTES_MAX`), so from ~4 MB up to 2,000 x 256 KiB = 500 MB
        // at worst. Under B2's load (issue 18) that is one snapshot every few seconds.
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(2_000),
        max_in_snapshot_log_to_keep: 200,
        max_payload_entries: limits::APPEND_ENTRIES_MAX,
        ..Default::default()
    };
    Ok(Arc::new(rc.validate().map_err(|e| AgentError::Raft(e.to_string()))?))
}

/// What the agent takes from outside.
pub struct Seams<I> {
    /// Accepted connections (real TCP, or turmoil).
    pub incoming: I,
    /// The address peers reach this agent at.
    pub advertise: String,
    pub dialer: Arc<dyn Dialer>,
    pub hypervisor: Arc<dyn Hypervisor>,
    /// This member's Raft id ([`node_id`] keeps it in the data directory).
    pub node_id: NodeId,
    /// The proposer's clock ([`node::system_clock`] outside simulations).
    pub clock: node::Clock,
    /// Run CPU-heavy work inline instead of on tokio's blocking pool: a simulation
    /// must not depend on how fast the machine is (see `tern_migrate::blocking`).
    pub inline_blocking: bool,
    /// This agent's counters and histograms (`/metrics`), shared with the store it
    /// observes ([`tern_raft_store::rocks::open_observed`]).
    pub metrics: Arc<metrics::Metrics>,
    /// The fences of the servers (HA-02), by host; `None` builds them from the
    /// config's `[[ha.fence]]` (simulations pass models of fences instead).
    pub fences: Option<BTreeMap<String, Arc<dyn tern_ha::Fence>>>,
}

/// A started agent. Its background tasks are tracked by `node.tasks` and end at
/// `node.shutdown` (the token given to [`serve`]).
pub struct Running {
    pub node: Node,
    /// Set when openraft stopped with a fatal error ([`watch_fatal`]).
    fatal: Arc<std::sync::OnceLock<String>>,
}

/// Starts an agent on the given seams and storage; returns once it serves.
pub async fn serve<I, IO, IE, LS, SM>(
    config: Config,
    seams: Seams<I>,
    log: LS,
    sm: SM,
    state: StateHandle,
    shutdown: CancellationToken,
) -> Result<Running, AgentError>
where
    I: Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    LS: RaftLogStorage<TypeConfig>,
    SM: RaftStateMachine<TypeConfig>,
{
    let id = seams.node_id;
    // One read of the identity serves both sides; a certificate that is not this
    // node's is refused here, not by every peer later.
    let tls = config.tls.files().load_node(&config.name)?;
    let t = &config.timeouts;
    let channels = Channels::new(ClientSettings {
        tls: Some(tls.client.clone()),
        connect_timeout: Duration::from_millis(t.connect_timeout_ms),
        request_timeout: Duration::from_millis(t.rpc_timeout_ms),
        dialer: seams.dialer,
    });
    let network = raft_net::GrpcNetworkFactory { channels: channels.clone() };
    let raft =
        Raft::new(id, raft_config(&config)?, network, log, sm).await.map_err(|e| AgentError::Raft(e.to_string()))?;
    let initialized = raft.is_initialized().await.map_err(|e| AgentError::Raft(e.to_string()))?;
    let found = match config::Bootstrap::decide(config.bootstrap, config.join.is_empty(), initialized) {
        Ok(found) => found,
        Err(why) => {
            let _ = raft.shutdown().await;
            return Err(AgentError::Bootstrap(format!("{}: {why}", config.data_dir.display())));
        }
    };
    let config_ha = config.ha.detector();
    let fences = match seams.fences {
        Some(f) => f,
        None => config
            .ha
            .power_fences()
            .map_err(|(field, message)| {
                AgentError::Config(config::ConfigError::Invalid { path: "config".into(), field, message })
            })?
            .into_iter()
            .map(|(host, f)| (host, Arc::new(f) as Arc<dyn tern_ha::Fence>))
            .collect(),
    };
    let revoked = Arc::new(auth::Revoked::load(config.tls.revoked.clone())?);
    let node = Node {
        id,
        name: config.name.clone(),
        address: seams.advertise,
        batcher: tern_raft_store::Batcher::start(raft.clone(), format!("agent:{}", config.name)),
        raft,
        state,
        hypervisor: seams.hypervisor,
        channels,
        config: Arc::new(config),
        clock: seams.clock,
        clock_check: Default::default(),
        denied: Default::default(),
        inline_blocking: seams.inline_blocking,
        tasks: tokio_util::task::TaskTracker::new(),
        shutdown: shutdown.clone(),
        detector: Arc::new(std::sync::Mutex::new(tern_ha::Detector::new(config_ha))),
        fences: Arc::new(fences),
        failover: tern_ha::failover::Report::default(),
        rebalancer: Default::default(),
        peer_cert: auth::peer_cert_of::<IO::ConnectInfo>,
        revoked,
        server_tls: Arc::new(transport::ServerTls::new(&tls)),
        metrics: seams.metrics,
    };
    let tasks = node.tasks.clone();
    let registry = Arc::new(tern_migrate::coordinator::Registry::new());
    let router = tonic::transport::Server::builder()
        .timeout(Duration::from_millis(node.config.timeouts.rpc_timeout_ms.max(30_000)))
        .concurrency_limit_per_connection(limits::REQUESTS_PER_CONNECTION_MAX)
        // The caller's address (for the audit log of each write the call makes) and the
        // call's server span, the caller's trace context its parent (issue 16).
        .layer(call_context::CallContext)
        .layer(grpc_metrics::GrpcMetricsLayer::new(node.metrics.clone()))
        .add_service(pb::raft_server::RaftServer::new(services::RaftService(node.clone())).with_message_limits())
        .add_service(
            pb::cluster_server::ClusterServer::new(services::ClusterService(node.clone())).with_message_limits(),
        )
        .add_service(
            pb::inventory_server::InventoryServer::new(services::InventoryService(node.clone())).with_message_limits(),
        )
        .add_service(
            pb::migration_server::MigrationServer::new(services::MigrationService {
                node: node.clone(),
                registry: registry.clone(),
            })
            .with_message_limits(),
        )
        .add_service(
            pb::hosts_server::HostsServer::new(services::HostsService {
                node: node.clone(),
                registry: registry.clone(),
            })
            .with_message_limits(),
        )
        .add_service(pb::users_server::UsersServer::new(services::UsersService(node.clone())).with_message_limits())
        .add_service(pb::ha_server::HaServer::new(services::HaService(node.clone())).with_message_limits())
        .add_service(
            pb::rebalance_server::RebalanceServer::new(rebalance::RebalanceService {
                node: node.clone(),
                registry: registry.clone(),
            })
            .with_message_limits(),
        );
    let stop = shutdown.clone();
    let incoming = transport::tls_incoming(seams.incoming, node.server_tls.clone(), &tasks);
    tasks.spawn(async move {
        if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop.cancelled()).await {
            error!(error = %e, "gRPC server stopped");
        }
    });
    if found {
        let members = BTreeMap::from([(id, tern_raft_store::Node { addr: node.address.clone() })]);
        node.raft.initialize(members).await.map_err(|e| AgentError::Raft(e.to_string()))?;
        info!(node = %node.name, id, "initialised a new cluster");
    }
    let fatal = Arc::new(std::sync::OnceLock::new());
    tasks.spawn(watch_fatal(node.clone(), fatal.clone(), shutdown.clone()));
    tasks.spawn(join(node.clone(), shutdown.clone()).instrument(info_span!("join", node = %node.name)));
    tasks.spawn(metrics::watch_leader(node.clone(), shutdown.clone()));
    let members = node.raft.metrics().borrow().membership_config.membership().nodes().count();
    if node.config.bootstrap.is_none() && node.config.join.is_empty() && initialized && members > 1 {
        warn!(
            node = %node.name,
            members,
            "join is empty and bootstrap is not set: should this data directory be lost, this agent would \
             found a new, separate cluster; set bootstrap = \"existing\" and list the other members' addresses \
             in join"
        );
    }
    tasks.spawn(inventory::run(node.clone(), shutdown.clone()).instrument(info_span!("inventory", node = %node.name)));
    tasks.spawn(ha::heartbeat(node.clone()).instrument(info_span!("heartbeat", node = %node.name)));
    tasks.spawn(leader::run(node.clone()));
    let stop = shutdown.clone();
    let recovery = tern_migrate::recovery::run(Arc::new(node.clone()), registry, async move { stop.cancelled().await });
    tasks.spawn(recovery.instrument(info_span!("recovery", node = %node.name)));
    info!(node = %node.name, id, address = %node.address, "agent serving");
    Ok(Running { node, fatal })
}

/// Issue 12: on each SIGHUP, reads the node's certificate, key and CA again
/// ([`Node::reload_tls`]); files that do not load leave the identity as it was, and
/// the log says why.
#[cfg(unix)]
async fn reload_on_hangup(node: Node, mut hangup: tokio::signal::unix::Signal, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            got = hangup.recv() => if got.is_none() { return },
            () = shutdown.cancelled() => return,
        }
        match node.reload_tls() {
            Ok(serial) => {
                info!(node = %node.name, serial = %serial, "SIGHUP: reloaded the TLS certificate; new connections present it")
            }
            Err(e) => {
                error!(node = %node.name, error = %e, "SIGHUP: kept the TLS certificate in use; the files on disk were refused")
            }
        }
    }
}

/// Stops the agent when openraft stops with a fatal error (a log or state-machine
/// write that failed, a panic in its core): a member whose Raft is dead must not go on
/// answering calls as if it were one. Keeps the reason in `fatal` and cancels
/// `shutdown`; [`Running::wait`] then returns it, and `ternd` exits non-zero with it, so
/// a supervisor restarts the agent on whatever storage it finds.
async fn watch_fatal(node: Node, fatal: Arc<std::sync::OnceLock<String>>, shutdown: CancellationToken) {
    let mut rx = node.raft.metrics();
    loop {
        let state = rx.borrow_and_update().running_state.clone();
        match state {
            Ok(()) => {}
            // The agent's own shutdown stopped it.
            Err(openraft::error::Fatal::Stopped) => return,
            Err(e) => {
                error!(node = %node.name, error = %e, "Raft stopped with a fatal error; the agent stops serving");
                let _ = fatal.set(e.to_string());
                shutdown.cancel();
                return;
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
    }
}

/// Asks the configured members to admit us (idempotent: also run after a restart so
/// that a member removed meanwhile comes back as a learner), then watches for as long as
/// the agent runs: a member an administrator removed asks again until it is let back.
async fn join(node: Node, shutdown: CancellationToken) {
    let request = pb::JoinRequest { node_id: node.id, name: node.name.clone(), address: node.address.clone() };
    let mut attempt = 0u32;
    let mut answered = false;
    loop {
        // Done once this member has applied a membership that lists it at its address
        // (and, with members to join, once one of them admitted it): an admission whose
        // entry a new leader's log replaced is retried.
        let metrics = node.raft.metrics().borrow().clone();
        let known = metrics.membership_config.clone();
        let listed = known.membership().get_node(&node.id).is_some_and(|n| n.addr == node.address)
            && membership::membership_applied(&metrics);
        // A member an administrator removed learns it from the state it applied, not
        // from its membership (the leader stops replicating to it before it would see
        // itself gone): it asks to join again until `cluster add-member` lets it.
        let removed = node.read(|s| s.removed_member(&node.name).is_some() || s.removed_node(node.id).is_some());
        if listed && !removed && (answered || node.config.join.is_empty()) {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(membership::TICK) => {}
            }
            continue;
        }
        // The leader itself at a new address (a restored or lone member restarted on
        // another port): it records its own address, since nobody else can.
        if !listed && node.is_leader() && known.membership().get_node(&node.id).is_some() {
            match membership::admit(&node, node.id, &node.name, &node.address).await {
                Ok(()) => {
                    info!(node = %node.name, address = %node.address, "recorded this leader's own address");
                    answered = true;
                }
                Err(e) => warn!(node = %node.name, error = %e, "recording this leader's own address; will retry"),
            }
        }
        // The configured members, then every member this agent's log knows of: an
        // agent restarted on a new address reaches the cluster either way.
        let mut targets: Vec<String> = node.config.join.clone();
        for (id, n) in known.membership().nodes() {
            if *id != node.id && !targets.contains(&n.addr) {
                targets.push(n.addr.clone());
            }
        }
        // A member that is not the leader answers with the leader's address: asked
        // next (a join is taken by the leader only, under the joiner's own certificate).
        let mut queue: std::collections::VecDeque<String> = targets.iter().cloned().collect();
        let mut asked = 0;
        while let Some(addr) = queue.pop_front() {
            asked += 1;
            if asked > targets.len() + 3 {
                break;
            }
            let result = match node.channels.get(&addr) {
                Ok(ch) => pb::cluster_client::ClusterClient::new(ch)
                    .with_message_limits()
                    .join(node.channels.request(request.clone()))
                    .await
                    .map_err(|s| (convert::leader_address(&s), s.to_string())),
                Err(e) => Err((None, e.to_string())),
            };
            match result {
                Ok(_) => {
                    info!(node = %node.name, via = %addr, "admitted; waiting to apply the membership");
                    answered = true;
                    break;
                }
                Err((Some(leader), _)) if leader != addr && leader != node.address => queue.push_front(leader),
                Err((_, e)) => warn!(node = %node.name, via = %addr, error = %e, "join failed; will retry"),
            }
        }
        attempt = attempt.saturating_add(1);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff(attempt, node.id)) => {}
        }
    }
}

impl Running {
    /// Waits for `shutdown`, then stops in order within the configured deadline: the
    /// server stops accepting and every tracked task ends, then Raft stops. An error
    /// when the stop came from a fatal Raft error rather than from the caller.
    pub async fn wait(self, shutdown: CancellationToken) -> Result<(), AgentError> {
        shutdown.cancelled().await;
        let deadline = Duration::from_millis(self.node.config.timeouts.shutdown_deadline_ms);
        let name = self.node.name.clone();
        let ordered = async {
            self.node.tasks.close();
            self.node.tasks.wait().await;
            if let Err(e) = self.node.raft.shutdown().await {
                warn!(node = %name, error = %e, "raft shutdown");
            }
        };
        if tokio::time::timeout(deadline, ordered).await.is_err() {
            warn!(node = %name, ?deadline, "shutdown deadline passed; stopping anyway");
        }
        match self.fatal.get() {
            Some(reason) => {
                error!(node = %name, error = %reason, "agent stopped: Raft failed");
                Err(AgentError::Raft(format!("stopped with a fatal error: {reason}")))
            }
            None => {
                info!(node = %name, "agent stopped");
                Ok(())
            }
        }
    }
}

/// The ldm backend's options from `[hypervisor] kind = "ldm"` (validated at load;
/// the error names the field).
fn ldm_options(
    config: &Config,
    l: &config::LdmConfig,
) -> Result<tern_hypervisor::ldm::backend::LdmOptions, AgentError> {
    l.options(&config.name)
        .map_err(|(field, message)| config::ConfigError::Invalid { path: "[hypervisor]".into(), field, message }.into())
}

/// The hypervisor `config` names: the sim on its layout (state kept in the data
/// folder), or this control domain's `ldm`.
fn open_hypervisor(config: &Config) -> Result<Arc<dyn Hypervisor>, AgentError> {
    Ok(match &config.hypervisor {
        HypervisorConfig::Sim { layout, time_scale } => Arc::new(SimHypervisor::open(SimOptions {
            layout: layout.clone(),
            state_file: Some(config.data_dir.join("sim-state.json")),
            time_scale: *time_scale,
            precopy: Default::default(),
        })?),
        HypervisorConfig::Ldm(l) => {
            Arc::new(tern_hypervisor::ldm::backend::LdmHypervisor::new(ldm_options(config, l)?)?)
        }
    })
}

/// `ternd --check` on the hypervisor: with ldm, its password file, `ldm -V` and one
/// inventory read (what the agent will report), summarised; with the sim, nothing is
/// read. Changes nothing. A setting found wrong is an [`AgentError::Config`]; any other
/// error means the hypervisor did not answer.
pub async fn check_hypervisor(config: &Config) -> Result<String, AgentError> {
    match &config.hypervisor {
        HypervisorConfig::Ldm(l) => {
            let options = ldm_options(config, l)?;
            if let Some(file) = &options.target_password_file {
                tern_hypervisor::ldm::backend::read_password_file(file).map_err(|e| config::ConfigError::Invalid {
                    path: "[hypervisor]".into(),
                    field: "hypervisor.target_password_file",
                    message: e.to_string(),
                })?;
            }
            let hv = tern_hypervisor::ldm::backend::LdmHypervisor::new(options)?;
            let version = hv.version().await?;
            let server = hv.inventory().await?;
            Ok(format!("ldm at {}: {version}\n{}", l.ldm_path.display(), describe_server(&server)))
        }
        // The sim's layout is read when the agent starts (a checked config may name
        // a layout installed later, as the examples do).
        HypervisorConfig::Sim { layout, .. } => Ok(format!("simulated server from layout {}", layout.display())),
    }
}

/// One line on a server as its hypervisor reports it (`ternd --check`).
fn describe_server(s: &tern_model::Server) -> String {
    let guests: Vec<&str> =
        s.domains.iter().filter(|d| d.kind == tern_model::DomainKind::Guest).map(|d| d.name.as_str()).collect();
    format!(
        "server {}: {} ({} at {} MHz, firmware {}, {}), {} cores ({} free), {} of memory in {} block(s), guests {:?}",
        s.name,
        s.model,
        s.cpu.family,
        s.cpu.frequency_mhz,
        s.firmware.0,
        s.os,
        s.cores.len(),
        s.free_cores(&Default::default()).len(),
        tern_model::Size(s.memory.iter().map(|b| b.size).sum()),
        s.memory.len(),
        guests
    )
}

/// Runs the agent described by `config` on real TCP until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), AgentError> {
    std::fs::create_dir_all(&config.data_dir).map_err(io_err(config.data_dir.display().to_string()))?;
    let hypervisor = open_hypervisor(&config)?;
    let metrics = Arc::new(metrics::Metrics::new());
    let (log, sm) = tern_raft_store::rocks::open_observed(config.data_dir.join("raft"), metrics.clone())?;
    let state = sm.state();
    let data_dir = config.data_dir.clone();
    let listener = bind_reusing(config.listen_addr, &data_dir.join("ternd.addr")).await?;
    let local = listener.local_addr().map_err(io_err("listener address"))?;
    let advertise = config.advertise_addr.clone().unwrap_or_else(|| local.to_string());
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(bind_reusing(addr, &data_dir.join("metrics.addr")).await?),
        None => None,
    };
    // TCP_NODELAY on every accepted connection: without it a response written in
    // parts (HTTP/2 headers, then data and trailers) waits for the client's delayed
    // ACK, about 40 ms on Linux (a dry-run migration's Prepare answer took 42 ms).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let seams = Seams {
        incoming,
        advertise: advertise.clone(),
        dialer: Arc::new(TcpDialer),
        hypervisor,
        node_id: node_id(&data_dir, &config.name)?,
        clock: node::system_clock(),
        inline_blocking: false,
        metrics,
        fences: None,
    };
    let running = serve(config, seams, log, sm, state, shutdown.clone()).await?;
    if let Some(endpoint) = running.node.config.telemetry.otlp_endpoint.clone() {
        let service = running.node.config.telemetry.service_name.clone();
        let (node, stop) = (running.node.clone(), shutdown.clone());
        running.node.tasks.spawn(otlp_metrics::run(node, endpoint, service, otlp_metrics::EXPORT_EVERY, stop));
    }
    if let Some(l) = metrics_listener {
        let addr = l.local_addr().map_err(io_err("metrics address"))?;
        write_file(&data_dir.join("metrics.addr"), &addr.to_string())?;
        let (node, stop) = (running.node.clone(), shutdown.clone());
        running.node.tasks.spawn(async move {
            if let Err(e) = metrics::serve(l, node, stop).await {
                error!(error = %e, "metrics endpoint stopped");
            }
        });
    }
    // Installed before ternd.addr says the agent serves: from then on a SIGHUP
    // reloads the certificates instead of ending the process (its default action).
    #[cfg(unix)]
    {
        let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(io_err("installing the SIGHUP handler"))?;
        running.node.tasks.spawn(reload_on_hangup(running.node.clone(), hangup, shutdown.clone()));
    }
    write_file(&data_dir.join("ternd.addr"), &advertise)?;
    // Type=notify: started once it serves and ternd.addr says where (systemd.rs).
    systemd::notify_or_warn(&format!("{}\nSTATUS=serving on {advertise}", systemd::READY));
    let stopping = async {
        shutdown.cancelled().await;
        systemd::notify_or_warn(&format!("{}\nSTATUS=shutting down", systemd::STOPPING));
    };
    let ((), stopped) = tokio::join!(stopping, running.wait(shutdown.clone()));
    stopped
}

/// Binds `addr`. When it asks for any port (0) and `previous` records the port of an
/// earlier run, that port is tried first: a restarted agent keeps the address its
/// peers know it by.
async fn bind_reusing(addr: SocketAddr, previous: &Path) -> Result<tokio::net::TcpListener, AgentError> {
    let earlier = std::fs::read_to_string(previous)
        .ok()
        .and_then(|t| t.trim().rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()))
        .filter(|_| addr.port() == 0);
    if let Some(port) = earlier
        && let Ok(l) = tokio::net::TcpListener::bind(SocketAddr::new(addr.ip(), port)).await
    {
        return Ok(l);
    }
    tokio::net::TcpListener::bind(addr).await.map_err(io_err(format!("listening on {addr}")))
}

/// Writes `text` to `path` atomically (readers never see half a file).
fn write_file(path: &Path, text: &str) -> Result<(), AgentError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{text}\n")).map_err(io_err(tmp.display().to_string()))?;
    std::fs::rename(&tmp, path).map_err(io_err(path.display().to_string()))
}

/// `ternd --restore FILE`: writes the snapshot `file` (from `ternctl cluster snapshot
/// save`) into `config`'s data directory, which must hold no cluster, as a new cluster
/// whose one voter is this agent. Start `ternd` afterwards; the other members join it
/// with empty data directories.
pub async fn restore(config: &Config, file: &Path) -> Result<tern_raft_store::restore::Restored, AgentError> {
    let shown = file.display().to_string();
    let len = std::fs::metadata(file).map_err(io_err(shown.clone()))?.len();
    let max = tern_raft_store::limits::SNAPSHOT_BYTES_MAX as u64;
    if len > max {
        return Err(AgentError::Restore(format!("{shown} is {len} bytes; a snapshot is at most {max}")));
    }
    let bytes = std::fs::read(file).map_err(io_err(shown.clone()))?;
    let image =
        tern_raft_store::restore::read_image(&bytes).map_err(|e| AgentError::Restore(format!("{shown}: {e}")))?;
    std::fs::create_dir_all(&config.data_dir).map_err(io_err(config.data_dir.display().to_string()))?;
    let (mut log, mut sm) = tern_raft_store::rocks::open(config.data_dir.join("raft"))?;
    let id = node_id(&config.data_dir, &config.name)?;
    let address = config.advertise_addr.clone().unwrap_or_else(|| config.listen_addr.to_string());
    tern_raft_store::restore::restore(&mut log, &mut sm, image, id, address)
        .await
        .map_err(|e| AgentError::Restore(format!("{}: {e}", config.data_dir.display())))
}
