//! A cluster of real agents on turmoil hosts, and everything that outlives a host's
//! crash: its "disk" (a [`MemStore`]), its server (the sim hypervisor's state file)
//! and its identity.
//!
//! Each host's software is [`boot`]: it reopens the server from its state file (a
//! control domain that restarts finds its guests where they were; a migration that
//! was running when it died is gone, as with ldmd), reopens the log store and state
//! machine from the disk, and runs `tern_agent::serve` on turmoil sockets with a
//! clock on simulated time. The harness keeps each member's Raft handle and state
//! handle so that the checker can read every member between steps.

use crate::net::{SimDialer, incoming};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tern_agent::config::{Config, HypervisorConfig, LogConfig, Timeouts, TlsConfig};
use tern_hypervisor::sim::{SimHypervisor, SimOptions};
use tern_model::Server;
use tern_raft_store::mem::MemStore;
use tern_raft_store::{NodeId, Raft, StateHandle};
use tokio_util::sync::CancellationToken;

/// The port every agent listens on inside the simulation.
pub const PORT: u16 = 7400;
/// Proposer time at the start of every simulation (2024-01-01), so that runs of one
/// seed stamp identical times.
pub const EPOCH_MS: u64 = 1_704_067_200_000;
/// The workload client's certificate name and turmoil host name.
pub const CLIENT: &str = "workload";
/// The workload's user certificate (System Administrator) for the users' verbs;
/// [`CLIENT`]'s own is a node certificate, for the writes it proposes as a member would.
pub const CLIENT_USER: &str = "workload-admin";

/// Election timeouts: member of rank r waits `BASE + r * STEP` ms. openraft 0.9 draws
/// the timeout from `min..max` with a thread RNG; `max = min + 1` makes that range one
/// value, so elections are decided by the seed (which orders the ranks), not by chance.
pub const ELECTION_BASE_MS: u64 = 1000;
pub const ELECTION_STEP_MS: u64 = 250;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The cluster CA and one certificate per agent name and for the workload client,
/// made once per process run and shared by every seed.
pub struct Certs {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
}

impl Certs {
    /// Creates the CA and certificates for `names` (plus the workload client).
    pub fn new(names: &[&str]) -> Result<Self, tern_tls::TlsError> {
        tern_tls::install_crypto_provider();
        let dir = scratch_dir("tern-chaos-certs")?;
        let path = dir.path().to_path_buf();
        tern_tls::init_ca(&path, "chaos")?;
        for name in names.iter().copied().chain([CLIENT]) {
            tern_tls::issue(&path, name, &tern_tls::Role::Node { sans: vec![], loopback: false }, None)?;
        }
        let admin = tern_tls::Role::User { profiles: vec!["system-administrator".into()] };
        tern_tls::issue(&path, CLIENT_USER, &admin, None)?;
        Ok(Self { _dir: dir, path })
    }

    pub fn files(&self, name: &str) -> tern_tls::TlsFiles {
        tern_tls::TlsFiles::in_dir(&self.path, name)
    }
}

/// A temporary folder, in memory (/dev/shm) where the machine has one: the sim
/// hypervisor fsyncs its state file on every change.
pub fn scratch_dir(prefix: &str) -> Result<tempfile::TempDir, tern_tls::TlsError> {
    let shm = Path::new("/dev/shm");
    let mut b = tempfile::Builder::new();
    b.prefix(prefix);
    let made = if shm.is_dir() { b.tempdir_in(shm).or_else(|_| b.tempdir()) } else { b.tempdir() };
    made.map_err(|e| tern_tls::TlsError::Io { path: "temporary folder".into(), source: e })
}

/// A member's disk: its Raft storage and the identity kept with it.
#[derive(Clone)]
pub struct Disk {
    pub store: MemStore,
    pub node_id: NodeId,
    /// 0 for the original disk; +1 each time it is lost and replaced.
    pub generation: u32,
}

/// One server of the cluster and its agent.
pub struct HostSlot {
    pub name: String,
    pub index: usize,
    pub layout: PathBuf,
    /// The sim hypervisor's state: the physical server, which no agent fault loses.
    pub server_state: PathBuf,
    /// Rank in election order (see [`ELECTION_BASE_MS`]).
    pub election_rank: u64,
    disk: Mutex<Disk>,
    hypervisor: Mutex<Option<Arc<SimHypervisor>>>,
    raft: Mutex<Option<Raft>>,
    /// How long this server's disk takes to sync appended entries (its page cache
    /// holds them meanwhile; a power loss may take them).
    pub sync_delay: std::time::Duration,
    /// Offset of this agent's clock from simulated time (ms).
    pub skew_ms: AtomicI64,
    /// How many times the software started.
    pub boots: AtomicU64,
    /// A fence asked the BMC to power the server off ([`crate::power`]).
    pub power_off_requested: AtomicBool,
    /// How many power-offs were served (a fence waits for this to grow).
    pub power_offs: AtomicU64,
    /// How many times the agent stopped itself on a fatal Raft error.
    pub fatal_stops: AtomicU64,
    /// Writes power losses took from this server's page cache, in all.
    pub writes_lost: AtomicU64,
    /// Makes this server's hypervisor fail or hang (it outlives the agent).
    pub hv_switch: Arc<crate::faulty::HvSwitch>,
}

impl HostSlot {
    pub fn address(&self) -> String {
        format!("{}:{PORT}", self.name)
    }

    pub fn disk(&self) -> Disk {
        lock(&self.disk).clone()
    }

    /// The applied state on this member's disk (readable while it is down).
    pub fn state(&self) -> StateHandle {
        lock(&self.disk).store.state()
    }

    /// A blank disk with a new member id (the old one is gone for good).
    pub fn replace_disk(&self) -> Disk {
        let mut d = lock(&self.disk);
        let generation = d.generation + 1;
        let store = MemStore::with_sync_delay(self.sync_delay);
        *d = Disk { store, node_id: node_id(self.index, generation), generation };
        *lock(&self.raft) = None;
        d.clone()
    }

    /// The server loses power: its disk keeps what was synced and, of the writes only
    /// in its page cache, the oldest `keep` (see [`MemStore::crash`]). Call it with the
    /// host crashed (its member gone).
    pub fn power_loss(&self, keep: usize) -> tern_raft_store::mem::CrashLoss {
        let loss = lock(&self.disk).store.crash(keep);
        self.writes_lost.fetch_add(loss.lost as u64, Ordering::SeqCst);
        loss
    }

    /// The running member's Raft handle (`None` while down).
    pub fn raft(&self) -> Option<Raft> {
        lock(&self.raft).clone()
    }

    pub fn clear_raft(&self) {
        *lock(&self.raft) = None;
    }

    /// The server as its hypervisor shows it now (what the agent reports).
    pub fn server(&self) -> Option<Server> {
        use futures_util::FutureExt;
        use tern_hypervisor::Hypervisor;
        let hv = lock(&self.hypervisor).clone()?;
        // The sim's inventory never waits, so this completes at once.
        hv.inventory().now_or_never().and_then(Result::ok)
    }

    /// Cuts the server's power (its in-memory hypervisor outlives the agent, as a
    /// server outlives its control domain): every guest stops. The guests that ran.
    pub fn power_off_now(&self) -> Vec<String> {
        let hv = lock(&self.hypervisor).clone();
        match hv {
            Some(hv) => hv.power_off_now().unwrap_or_default(),
            None => tern_hypervisor::sim::power_off(&self.server_state).unwrap_or_default(),
        }
    }

    /// The control domain fails with the server powered on (HA-08): its slaves stop
    /// when its failure-policy is `stop`. The guests stopped.
    pub fn control_domain_fails_now(&self) -> Vec<String> {
        let hv = lock(&self.hypervisor).clone();
        match hv {
            Some(hv) => hv.control_domain_fails_now().unwrap_or_default(),
            None => tern_hypervisor::sim::crash_control_domain(&self.server_state).unwrap_or_default(),
        }
    }

    /// The server as it physically is: like [`HostSlot::server`], except that a guest
    /// suspended for the final copy of an outgoing migration is shown bound, not
    /// active (it does not run, whatever the inventory says).
    pub fn physical(&self) -> Option<Server> {
        let suspended = lock(&self.hypervisor).as_ref()?.suspended_now();
        let mut server = self.server()?;
        for d in server.domains.iter_mut().filter(|d| suspended.contains(&d.name)) {
            d.state = tern_model::DomainState::Bound;
        }
        Some(server)
    }
}

/// The id of host `index`'s member on its `generation`-th disk.
pub fn node_id(index: usize, generation: u32) -> NodeId {
    u64::from(generation) * 100 + index as u64 + 1
}

/// Where the simulation stands; the workload starts and stops by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// The cluster forms; no faults, no workload.
    Boot = 0,
    /// Workload and nemesis run.
    Faults = 1,
    /// Faults are over; in-flight work finishes and the cluster must converge.
    Heal = 2,
    Done = 3,
}

/// Tunables of one simulation (all in simulated time).
#[derive(Clone, Debug)]
pub struct Options {
    /// Layout files, one per host, the first founding the cluster.
    pub layouts: Vec<PathBuf>,
    pub voters: u32,
    /// Simulated ms per turmoil tick.
    pub tick_ms: u64,
    /// Simulated ms a disk takes to sync appended entries: the window in which a power
    /// loss takes writes that were only in the page cache.
    pub sync_ms: u64,
    /// Longest wait for the cluster to form.
    pub boot_ms_max: u64,
    /// How long the workload and the nemesis run.
    pub faults_ms: u64,
    /// The bound on convergence once faults stop.
    pub heal_ms_max: u64,
    /// Sim hypervisor speed-up of migrations (pre-copy model time per sim ms).
    pub time_scale: u32,
    /// Latency of a healthy link: each link gets one fixed value in this range, drawn
    /// from the seed (a per-message random latency would make one extra message
    /// anywhere shift every later delivery of the run).
    pub link_latency_ms: (u64, u64),
    pub nemesis: crate::nemesis::NemesisOptions,
    pub workload: crate::workload::WorkloadOptions,
    /// The servers' fences (HA-02).
    pub fences: crate::power::FenceModel,
    /// HA-08: every agent declares an isolation response and a watchdog.
    pub self_stop: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            layouts: ["m10-1-1", "m10-1-2", "t4-1", "m10-1-3"].iter().map(|n| seed_layout(n)).collect(),
            voters: 3,
            tick_ms: 5,
            sync_ms: 30,
            boot_ms_max: 30_000,
            faults_ms: 40_000,
            heal_ms_max: 60_000,
            time_scale: 5,
            link_latency_ms: (1, 15),
            nemesis: Default::default(),
            workload: Default::default(),
            fences: Default::default(),
            self_stop: false,
        }
    }
}

/// A layout of `deploy/layouts/` (the seed's servers).
pub fn seed_layout(name: &str) -> PathBuf {
    manifest_dir().join("../deploy/layouts").join(format!("{name}.toml"))
}

/// The host name a layout file gives its server (its stem, as `load_layout` does).
pub fn layout_host(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Everything the hosts, the workload client, the nemesis and the checker share.
pub struct Shared {
    pub seed: u64,
    pub opts: Options,
    pub certs: Arc<Certs>,
    pub hosts: Vec<HostSlot>,
    /// Simulated time (ms since the start), set by the driver before every step.
    pub now_ms: AtomicU64,
    phase: AtomicU8,
    pub history: Mutex<crate::history::History>,
    /// Each link's healthy latency (ms), by pair of turmoil host names.
    pub link_latency: BTreeMap<(String, String), u64>,
    _scratch: tempfile::TempDir,
}

impl Shared {
    pub fn new(seed: u64, opts: Options, certs: Arc<Certs>) -> Result<Arc<Self>, String> {
        let scratch = scratch_dir("tern-chaos").map_err(|e| e.to_string())?;
        let mut ranks: Vec<u64> = (0..opts.layouts.len() as u64).collect();
        crate::rng::SimRng::derive(seed, "election-ranks").shuffle(&mut ranks);
        let hosts: Vec<HostSlot> = opts
            .layouts
            .iter()
            .enumerate()
            .map(|(index, layout)| {
                let name = layout_host(layout);
                HostSlot {
                    server_state: scratch.path().join(format!("{name}.json")),
                    name,
                    index,
                    layout: layout.clone(),
                    election_rank: ranks[index],
                    disk: Mutex::new(Disk {
                        store: MemStore::with_sync_delay(std::time::Duration::from_millis(opts.sync_ms)),
                        node_id: node_id(index, 0),
                        generation: 0,
                    }),
                    sync_delay: std::time::Duration::from_millis(opts.sync_ms),
                    hypervisor: Mutex::new(None),
                    raft: Mutex::new(None),
                    skew_ms: AtomicI64::new(0),
                    boots: AtomicU64::new(0),
                    power_off_requested: AtomicBool::new(false),
                    power_offs: AtomicU64::new(0),
                    fatal_stops: AtomicU64::new(0),
                    writes_lost: AtomicU64::new(0),
                    hv_switch: Default::default(),
                }
            })
            .collect();
        let mut names: Vec<String> = hosts.iter().map(|h: &HostSlot| h.name.clone()).collect();
        names.push(CLIENT.to_string());
        let mut rng = crate::rng::SimRng::derive(seed, "links");
        let mut link_latency = BTreeMap::new();
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                let ms = rng.between(opts.link_latency_ms.0, opts.link_latency_ms.1);
                link_latency.insert((a.clone(), b.clone()), ms);
            }
        }
        Ok(Arc::new(Self {
            seed,
            link_latency,
            opts,
            certs,
            hosts,
            now_ms: AtomicU64::new(0),
            phase: AtomicU8::new(Phase::Boot as u8),
            history: Mutex::new(Default::default()),
            _scratch: scratch,
        }))
    }

    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            0 => Phase::Boot,
            1 => Phase::Faults,
            2 => Phase::Heal,
            _ => Phase::Done,
        }
    }

    pub fn set_phase(&self, p: Phase) {
        self.phase.store(p as u8, Ordering::SeqCst);
    }

    /// Simulated wall-clock time (ms since the Unix epoch) without skew.
    pub fn wall_ms(&self) -> u64 {
        EPOCH_MS + self.now_ms.load(Ordering::SeqCst)
    }

    pub fn history(&self) -> MutexGuard<'_, crate::history::History> {
        lock(&self.history)
    }

    /// The healthy latency of the link between `a` and `b`.
    pub fn latency(&self, a: &str, b: &str) -> std::time::Duration {
        let key = if a < b { (a.to_string(), b.to_string()) } else { (b.to_string(), a.to_string()) };
        let ms = self.link_latency.get(&key).copied().unwrap_or(self.opts.link_latency_ms.1);
        std::time::Duration::from_millis(ms)
    }

    /// Gives every link its healthy latency.
    pub fn reset_latencies(&self, sim: &mut turmoil::Sim<'_>) {
        for (a, b) in self.link_latency.keys() {
            sim.set_link_latency(a.as_str(), b.as_str(), self.latency(a, b));
        }
    }

    pub fn host(&self, name: &str) -> Option<&HostSlot> {
        self.hosts.iter().find(|h| h.name == name)
    }

    /// The agent configuration of host `i` on its current disk.
    pub fn config(&self, i: usize, disk: &Disk) -> Config {
        let h = &self.hosts[i];
        let tls = self.certs.files(&h.name);
        // The founder starts the cluster on its first disk; everyone else (and a
        // founder whose disk was replaced) joins through the other members.
        let join = if i == 0 && disk.generation == 0 {
            Vec::new()
        } else {
            self.hosts.iter().filter(|o| o.index != i).map(HostSlot::address).collect()
        };
        let election_min = ELECTION_BASE_MS + h.election_rank * ELECTION_STEP_MS;
        Config {
            name: h.name.clone(),
            listen_addr: SocketAddr::from(([0, 0, 0, 0], PORT)),
            advertise_addr: Some(h.address()),
            // `serve` takes its storage and identity from the seams; nothing is
            // written here.
            data_dir: PathBuf::from("/nonexistent").join(&h.name),
            join,
            // As before the setting existed: the founder founds once, on its empty store.
            bootstrap: None,
            voters: self.opts.voters,
            metrics_addr: None,
            metrics_remote: false,
            tls: TlsConfig { ca: tls.ca, cert: tls.cert, key: tls.key, revoked: None },
            hypervisor: HypervisorConfig::Sim { layout: h.layout.clone(), time_scale: self.opts.time_scale },
            timeouts: Timeouts {
                heartbeat_interval_ms: 150,
                election_timeout_min_ms: election_min,
                election_timeout_max_ms: election_min + 1,
                rpc_timeout_ms: 1000,
                connect_timeout_ms: 500,
                voter_replace_after_ms: 8000,
                inventory_poll_ms: 500,
                inventory_debounce_ms: 100,
                shutdown_deadline_ms: 2000,
            },
            rebalance: tern_agent::config::RebalanceTiming { interval_ms: 1000 },
            telemetry: Default::default(),
            ha: if self.opts.self_stop {
                tern_agent::config::HaConfig {
                    isolation_timeout_ms: 3000,
                    watchdog_timeout_ms: 4000,
                    self_stop_margin_ms: 2000,
                    ..Default::default()
                }
            } else {
                tern_agent::config::HaConfig::default()
            },
            log: LogConfig::default(),
        }
    }

    /// Host `i`'s clock: simulated time plus its skew.
    pub fn clock(self: &Arc<Self>, i: usize) -> tern_agent::node::Clock {
        let shared = Arc::downgrade(self);
        Arc::new(move || {
            let Some(s) = shared.upgrade() else { return EPOCH_MS };
            let skew = s.hosts[i].skew_ms.load(Ordering::SeqCst);
            s.wall_ms().saturating_add_signed(skew)
        })
    }
}

/// Host `i`'s software: reopen the server and the disk, serve until crashed.
pub async fn boot(shared: Arc<Shared>, i: usize) -> turmoil::Result {
    let slot = &shared.hosts[i];
    slot.boots.fetch_add(1, Ordering::SeqCst);
    let disk = slot.disk();
    let hv = Arc::new(SimHypervisor::open(SimOptions {
        layout: slot.layout.clone(),
        state_file: Some(slot.server_state.clone()),
        time_scale: shared.opts.time_scale,
        precopy: Default::default(),
    })?);
    *lock(&slot.hypervisor) = Some(hv.clone());
    let config = shared.config(i, &disk);
    config.validate().map_err(|(field, msg)| format!("{field}: {msg}"))?;
    let (log, sm) = disk.store.open();
    let seams = tern_agent::Seams {
        incoming: incoming(PORT).await?,
        advertise: slot.address(),
        dialer: Arc::new(SimDialer),
        hypervisor: Arc::new(crate::faulty::FaultyHypervisor { inner: hv, switch: slot.hv_switch.clone() }),
        node_id: disk.node_id,
        clock: shared.clock(i),
        inline_blocking: true,
        metrics: Default::default(),
        fences: crate::power::fences(&shared),
    };
    let shutdown = CancellationToken::new();
    let running = tern_agent::serve(config, seams, log, sm, disk.store.state(), shutdown.clone()).await?;
    *lock(&slot.raft) = Some(running.node.raft.clone());
    if running.wait(shutdown).await.is_err() {
        // A fatal Raft error stops the agent as it stops ternd (exit non-zero; the
        // agent logged why); the nemesis's next restart of this host boots it again
        // on the same disk.
        slot.fatal_stops.fetch_add(1, Ordering::SeqCst);
    }
    Ok(())
}

/// tern-chaos's folder, read at run time first: one target folder serves every checkout.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}
