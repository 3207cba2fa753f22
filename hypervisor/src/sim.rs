//! The simulated server: a layout file brought to life.
//!
//! State (the `Server`, the incoming domains and the outgoing guests suspended after
//! their final copy) is kept in memory and written to a state file after every change
//! (write, fsync, rename), so a restarted agent finds the server as it left it; the
//! layout is read only when no state file exists yet. A migration still copying when
//! the agent dies is gone (the guest keeps running here, as with ldmd), but a guest
//! already suspended stays suspended until its migration's verdict is given
//! (`finish_migrate_out`): resuming it on its own could run it twice.
//!
//! Migration follows the pre-copy model of [`tern_model::precopy`]: its duration
//! grows with the guest's memory and dirty rate and shrinks with the source control
//! domain's cores (LM-17). `time_scale` runs the model faster than real time so tests
//! stay quick. All waiting uses tokio's clock, so the simulator also runs inside
//! turmoil's simulated time.

use crate::layout::load_layout;
use crate::{HvError, Hypervisor, Incoming, MigrateOut, MigrationOutcome, Pending, Progress};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tern_model::precopy::{PrecopyParams, precopy_plan};
use tern_model::server::CONTROL_DOMAIN;
use tern_model::{Binding, Domain, DomainKind, DomainState, Server};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How often a running migration reports progress and looks for a cancel, in real time.
pub const PROGRESS_TICK: Duration = Duration::from_millis(50);
/// The largest state file read back.
pub const STATE_BYTES_MAX: u64 = 16 * 1024 * 1024;
/// Version 2 keeps each pending guest's operation id; version 1 files are read too.
const STATE_VERSION: u32 = 2;

/// How to build a simulated server.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The layout to start from when there is no state file yet.
    pub layout: PathBuf,
    /// Where the server's state persists; `None` keeps it in memory only (tests).
    pub state_file: Option<PathBuf>,
    /// Simulated milliseconds per real millisecond (1 = real time).
    pub time_scale: u32,
    pub precopy: PrecopyParams,
}

#[derive(Serialize, Deserialize)]
struct PersistedState {
    version: u32,
    #[serde(flatten)]
    durable: Durable,
}

/// The first state format: incoming domains by name only, nothing suspended.
#[derive(Deserialize)]
struct PersistedV1 {
    server: Server,
    incoming: BTreeSet<String>,
}

#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

/// A migration copying out; once the guest is suspended it is also in
/// `Durable::suspended`.
struct Flight {
    cancel: bool,
}

/// Everything that survives a restart. Pending guests map to their operation id.
#[derive(Clone, Serialize, Deserialize)]
struct Durable {
    server: Server,
    incoming: BTreeMap<String, u64>,
    /// Outgoing guests suspended for (or after) their final copy, awaiting the verdict.
    suspended: BTreeMap<String, u64>,
}

impl Durable {
    /// Every guest stops; nothing suspended may resume. Returns the guests that ran.
    fn power_cut(&mut self) -> Vec<String> {
        let mut stopped = Vec::new();
        for d in self.server.domains.iter_mut().filter(|d| d.kind != DomainKind::Control) {
            if d.state == DomainState::Active {
                d.state = DomainState::Bound;
                stopped.push(d.name.clone());
            }
        }
        self.suspended.clear();
        stopped
    }

    /// The control domain fails (crashes, or its watchdog resets it) while the server
    /// keeps power: the hypervisor applies the control domain's failure-policy to its
    /// slaves (HA-08). `stop` stops them; `reset` and `panic` boot them again here, so
    /// they still run, as do guests that are no slave of it. Returns the guests stopped.
    fn control_domain_failure(&mut self) -> Vec<String> {
        let stopped: Vec<String> = self
            .server
            .domains
            .iter()
            .filter(|d| d.kind == DomainKind::Guest && d.state == DomainState::Active)
            .filter(|d| self.server.stopped_with_control_domain(&d.name).is_ok())
            .map(|d| d.name.clone())
            .collect();
        for name in &stopped {
            if let Some(d) = self.server.domain_mut(name) {
                d.state = DomainState::Bound;
            }
            self.suspended.remove(name);
        }
        stopped
    }
}

struct Inner {
    durable: Durable,
    outgoing: BTreeMap<String, Flight>,
}

impl Inner {
    /// A migration holds `name`: copying out, or suspended awaiting its verdict.
    fn migrating(&self, name: &str) -> bool {
        self.outgoing.contains_key(name) || self.durable.suspended.contains_key(name)
    }
}

/// A simulated SPARC server.
pub struct SimHypervisor {
    inner: Mutex<Inner>,
    state_file: Option<PathBuf>,
    time_scale: u32,
    precopy: PrecopyParams,
    epoch: Instant,
}

impl SimHypervisor {
    /// Opens the server: from its state file if one exists, else from the layout.
    pub fn open(opts: SimOptions) -> Result<Self, HvError> {
        if opts.time_scale == 0 {
            return Err(HvError::Invalid("time_scale must be at least 1".into()));
        }
        let durable = match &opts.state_file {
            Some(p) if p.exists() => read_state(p)?,
            _ => Durable {
                server: load_layout(&opts.layout).map_err(|e| HvError::Invalid(e.to_string()))?,
                incoming: BTreeMap::new(),
                suspended: BTreeMap::new(),
            },
        };
        let sim = Self {
            inner: Mutex::new(Inner { durable, outgoing: BTreeMap::new() }),
            state_file: opts.state_file,
            time_scale: opts.time_scale,
            precopy: opts.precopy,
            epoch: Instant::now(),
        };
        sim.persist(&sim.lock().durable)?;
        Ok(sim)
    }

    /// A simulated server held in memory only (tests, turmoil).
    pub fn from_server(server: Server, time_scale: u32) -> Self {
        Self {
            inner: Mutex::new(Inner {
                durable: Durable { server, incoming: BTreeMap::new(), suspended: BTreeMap::new() },
                outgoing: BTreeMap::new(),
            }),
            state_file: None,
            time_scale: time_scale.max(1),
            precopy: PrecopyParams::default(),
            epoch: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every change is
        // applied whole), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The server loses power ([`power_off`] on a live handle, for simulations whose
    /// agent is gone): every guest stops, migrations copying out end. Persisted.
    pub fn power_off_now(&self) -> Result<Vec<String>, HvError> {
        self.mutate(|i| {
            for flight in i.outgoing.values_mut() {
                flight.cancel = true;
            }
            Ok(i.durable.power_cut())
        })
    }

    /// The control domain fails ([`crash_control_domain`] on a live handle, for
    /// simulations whose agent is gone). Persisted; returns the guests stopped.
    pub fn control_domain_fails_now(&self) -> Result<Vec<String>, HvError> {
        self.mutate(|i| {
            let stopped = i.durable.control_domain_failure();
            for name in &stopped {
                if let Some(flight) = i.outgoing.get_mut(name) {
                    flight.cancel = true;
                }
            }
            Ok(stopped)
        })
    }

    /// Guests migrating out that are suspended for (or after) the final copy: the
    /// inventory still shows them active here until the migration is finished, but
    /// they do not run. For observers such as the chaos checker.
    pub fn suspended_now(&self) -> BTreeSet<String> {
        self.lock().durable.suspended.keys().cloned().collect()
    }

    fn persist(&self, durable: &Durable) -> Result<(), HvError> {
        let Some(path) = &self.state_file else { return Ok(()) };
        let state = PersistedState { version: STATE_VERSION, durable: durable.clone() };
        let bytes = serde_json::to_vec_pretty(&state).map_err(|e| HvError::Io(format!("encoding sim state: {e}")))?;
        write_durably(path, &bytes).map_err(|e| HvError::Io(format!("{}: {e}", path.display())))
    }

    /// Applies `change` to the server and persists it; on error nothing changes.
    fn mutate<T>(&self, change: impl FnOnce(&mut Inner) -> Result<T, HvError>) -> Result<T, HvError> {
        let mut guard = self.lock();
        let before = guard.durable.clone();
        let out = change(&mut guard)?;
        if let Err(e) = self.persist(&guard.durable) {
            guard.durable = before;
            return Err(e);
        }
        Ok(out)
    }
}

/// The simulated server loses power (what its BMC's chassis control does when a
/// fence powers it off, HA-02): every guest stops at once, left bound where it was,
/// and a guest suspended for a migration's verdict is stopped too (nothing may resume
/// it). The state file is rewritten durably; returns the guests that were running.
/// Its agent must not be running: it would write its own memory back over this.
pub fn power_off(state_file: &Path) -> Result<Vec<String>, HvError> {
    change_state_file(state_file, Durable::power_cut)
}

/// The simulated server's control domain fails while the server keeps power (a
/// crash, or a watchdog reset after its agent stopped): the hypervisor stops the
/// guests that are its slaves when its failure-policy is `stop` (HA-08); every other
/// guest keeps running. Rewritten durably; returns the guests stopped. Its agent must
/// not be running (a failed control domain runs no agent).
pub fn crash_control_domain(state_file: &Path) -> Result<Vec<String>, HvError> {
    change_state_file(state_file, Durable::control_domain_failure)
}

fn change_state_file(
    state_file: &Path,
    change: impl FnOnce(&mut Durable) -> Vec<String>,
) -> Result<Vec<String>, HvError> {
    let mut durable = read_state(state_file)?;
    let stopped = change(&mut durable);
    let state = PersistedState { version: STATE_VERSION, durable };
    let bytes = serde_json::to_vec_pretty(&state).map_err(|e| HvError::Io(format!("encoding sim state: {e}")))?;
    write_durably(state_file, &bytes).map_err(|e| HvError::Io(format!("{}: {e}", state_file.display())))?;
    Ok(stopped)
}

/// The guests a simulated server's state file shows running (for tests and checks).
/// The simulated server as its state file holds it (what its BMC would see; tests
/// compare it with the replicated inventory).
pub fn server_in(state_file: &Path) -> Result<Server, HvError> {
    Ok(read_state(state_file)?.server)
}

pub fn running_guests(state_file: &Path) -> Result<Vec<String>, HvError> {
    let durable = read_state(state_file)?;
    Ok(durable
        .server
        .domains
        .iter()
        .filter(|d| d.kind == DomainKind::Guest && d.state == DomainState::Active)
        .map(|d| d.name.clone())
        .collect())
}

fn read_state(path: &Path) -> Result<Durable, HvError> {
    let io = |e: std::io::Error| HvError::Io(format!("{}: {e}", path.display()));
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > STATE_BYTES_MAX {
        return Err(HvError::Io(format!("{}: {len} bytes exceeds the {STATE_BYTES_MAX}-byte limit", path.display())));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let bad = |e: serde_json::Error| HvError::Io(format!("{}: not a sim state file: {e}", path.display()));
    let durable = match serde_json::from_slice::<VersionOnly>(&bytes).map_err(bad)?.version {
        1 => {
            let v1: PersistedV1 = serde_json::from_slice(&bytes).map_err(bad)?;
            let incoming = v1.incoming.into_iter().map(|name| (name, 0)).collect();
            Durable { server: v1.server, incoming, suspended: BTreeMap::new() }
        }
        STATE_VERSION => serde_json::from_slice::<PersistedState>(&bytes).map_err(bad)?.durable,
        other => {
            return Err(HvError::Io(format!(
                "{}: sim state version {other} is not supported (expected 1 or {STATE_VERSION})",
                path.display()
            )));
        }
    };
    durable.server.validate().map_err(|e| HvError::Io(format!("{}: {}", path.display(), e.join("; "))))?;
    if let Some(name) =
        durable.incoming.keys().chain(durable.suspended.keys()).find(|n| durable.server.domain(n).is_none())
    {
        return Err(HvError::Io(format!("{}: pending guest {name} is not on the server", path.display())));
    }
    Ok(durable)
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file.
fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn not_found(name: &str) -> HvError {
    HvError::NotFound(name.to_string())
}

/// A stable per-name phase so that domains do not all peak at once.
fn phase_of(name: &str) -> f64 {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (h % 1000) as f64 / 1000.0
}

#[async_trait]
impl Hypervisor for SimHypervisor {
    fn kind(&self) -> &'static str {
        "sim"
    }

    async fn inventory(&self) -> Result<Server, HvError> {
        Ok(self.lock().durable.server.clone())
    }

    async fn bind(&self, domain: Domain, binding: &Binding) -> Result<(), HvError> {
        self.mutate(|i| i.durable.server.bind_domain(domain, binding).map_err(|e| HvError::Invalid(e.to_string())))
    }

    async fn unbind(&self, name: &str) -> Result<(), HvError> {
        self.mutate(|i| {
            let d = i.durable.server.domain(name).ok_or_else(|| not_found(name))?;
            if d.state == DomainState::Active {
                return Err(HvError::Busy(format!("LDom {name} must be stopped before it can be unbound")));
            }
            if i.migrating(name) {
                return Err(HvError::Busy(format!("LDom {name} is being migrated")));
            }
            i.durable.server.unbind_domain(name);
            i.durable.incoming.remove(name);
            Ok(())
        })
    }

    async fn resize(&self, resize: &tern_model::Resize) -> Result<(), HvError> {
        self.mutate(|i| {
            let name = resize.domain.as_str();
            i.durable.server.domain(name).ok_or_else(|| not_found(name))?;
            if i.migrating(name) {
                return Err(HvError::Busy(format!("LDom {name} is being migrated")));
            }
            i.durable.server.resize_domain(resize).map_err(|e| HvError::Invalid(e.to_string()))
        })
    }

    async fn start(&self, name: &str) -> Result<(), HvError> {
        self.mutate(|i| {
            if i.migrating(name) {
                return Err(HvError::Busy(format!("LDom {name} is being migrated")));
            }
            let d = i.durable.server.domain_mut(name).ok_or_else(|| not_found(name))?;
            d.state = DomainState::Active;
            Ok(())
        })
    }

    async fn stop(&self, name: &str) -> Result<(), HvError> {
        self.mutate(|i| {
            if i.migrating(name) {
                return Err(HvError::Busy(format!("LDom {name} is being migrated")));
            }
            let d = i.durable.server.domain_mut(name).ok_or_else(|| not_found(name))?;
            if d.kind == DomainKind::Control {
                return Err(HvError::Invalid("the control domain cannot be stopped by tern".into()));
            }
            d.state = DomainState::Bound;
            Ok(())
        })
    }

    async fn receive(&self, incoming: Incoming) -> Result<(), HvError> {
        self.mutate(|i| {
            let mut domain = incoming.domain;
            domain.state = DomainState::Bound;
            i.durable.server.bind_domain(domain, &incoming.binding).map_err(|e| HvError::Invalid(e.to_string()))?;
            i.durable.incoming.insert(incoming.binding.domain.clone(), incoming.operation);
            Ok(())
        })
    }

    async fn finish_receive(&self, name: &str, ok: bool) -> Result<(), HvError> {
        self.mutate(|i| {
            if i.durable.incoming.remove(name).is_none() {
                return Err(HvError::Invalid(format!("no incoming migration of {name}")));
            }
            if ok {
                i.durable.server.domain_mut(name).ok_or_else(|| not_found(name))?.state = DomainState::Active;
            } else {
                i.durable.server.unbind_domain(name);
            }
            Ok(())
        })
    }

    async fn migrate_out(
        &self,
        req: MigrateOut,
        progress: mpsc::Sender<Progress>,
    ) -> Result<MigrationOutcome, HvError> {
        let plan = {
            let mut i = self.lock();
            let d = i.durable.server.domain(&req.domain).ok_or_else(|| not_found(&req.domain))?;
            if d.kind != DomainKind::Guest {
                return Err(HvError::Invalid(format!("LM-01 {} is a {}; only guest domains migrate", d.name, d.kind)));
            }
            if i.durable.incoming.contains_key(&req.domain) {
                return Err(HvError::Busy(format!("{} is still migrating in", req.domain)));
            }
            let dirty = d.workload.dirty_mib_per_s;
            if i.outgoing.contains_key(&req.domain) {
                return Err(HvError::Busy(format!("a migration of {} is already running", req.domain)));
            }
            if i.durable.suspended.contains_key(&req.domain) {
                return Err(HvError::Busy(format!(
                    "{} is suspended awaiting the verdict of its last migration",
                    req.domain
                )));
            }
            let memory: u64 = i.durable.server.memory_of(&req.domain).iter().map(|r| r.size).sum();
            let cores = i.durable.server.cpu_of(CONTROL_DOMAIN).cids.len() as u32;
            i.outgoing.insert(req.domain.clone(), Flight { cancel: false });
            precopy_plan(memory, dirty, cores, &self.precopy)
        };
        let start = Instant::now();
        let scale = u64::from(self.time_scale);
        let mut last_pct = None;
        loop {
            let sim_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_mul(scale);
            let suspended = sim_ms >= plan.suspend_at_ms();
            {
                let mut i = self.lock();
                let Some(flight) = i.outgoing.get(&req.domain) else {
                    return Err(HvError::Failed(format!("the migration of {} was settled while copying", req.domain)));
                };
                let was_suspended = i.durable.suspended.contains_key(&req.domain);
                if flight.cancel && !was_suspended {
                    i.outgoing.remove(&req.domain);
                    return Err(HvError::Cancelled(req.domain));
                }
                if suspended && !was_suspended {
                    // The suspension is durable before the final copy begins.
                    i.durable.suspended.insert(req.domain.clone(), req.operation);
                    if let Err(e) = self.persist(&i.durable) {
                        i.durable.suspended.remove(&req.domain);
                        i.outgoing.remove(&req.domain);
                        return Err(e);
                    }
                }
            }
            if sim_ms >= plan.total_ms {
                break;
            }
            let pct = plan.progress_pct(sim_ms);
            if last_pct != Some(pct) {
                let round = round_at(&plan, sim_ms);
                // A slow reader only misses intermediate updates; the migration goes on.
                let _ = progress.try_send(Progress { pct, round, suspended });
                last_pct = Some(pct);
            }
            tokio::time::sleep(PROGRESS_TICK).await;
        }
        // The copy is done and the guest stays suspended here until the coordinator
        // commits (`finish_migrate_out`): the Raft commit, not the copy, moves it.
        let _ = progress.try_send(Progress { pct: 100, round: plan.rounds.len() as u32, suspended: true });
        Ok(MigrationOutcome {
            total_ms: plan.total_ms,
            downtime_ms: plan.downtime_ms,
            rounds: plan.rounds.len() as u32,
            converged: plan.converged,
        })
    }

    async fn finish_migrate_out(&self, name: &str, committed: bool) -> Result<(), HvError> {
        self.mutate(|i| {
            i.outgoing.remove(name);
            i.durable.suspended.remove(name);
            if committed {
                i.durable.server.unbind_domain(name).ok_or_else(|| not_found(name))?;
            } else if i.durable.server.domain(name).is_none() {
                return Err(not_found(name));
            }
            Ok(())
        })
    }

    async fn incoming(&self) -> Result<Vec<Pending>, HvError> {
        Ok(pending(&self.lock().durable.incoming))
    }

    async fn suspended(&self) -> Result<Vec<Pending>, HvError> {
        Ok(pending(&self.lock().durable.suspended))
    }

    async fn cancel_migration(&self, name: &str) -> Result<(), HvError> {
        let mut i = self.lock();
        if i.durable.suspended.contains_key(name) {
            return Err(HvError::Busy(format!("{name} is suspended for the final copy; too late to cancel")));
        }
        let flight =
            i.outgoing.get_mut(name).ok_or_else(|| HvError::Invalid(format!("no migration of {name} is running")))?;
        flight.cancel = true;
        Ok(())
    }

    async fn utilisation(&self) -> Result<BTreeMap<String, u32>, HvError> {
        let t = self.epoch.elapsed().as_secs_f64() * f64::from(self.time_scale);
        let i = self.lock();
        Ok(i.durable
            .server
            .domains
            .iter()
            .filter(|d| d.state == DomainState::Active)
            .map(|d| {
                let wave = (std::f64::consts::TAU * (t / 600.0 + phase_of(&d.name))).sin();
                let pct = (f64::from(d.workload.cpu_pct) + 10.0 * wave).clamp(0.0, 100.0);
                (d.name.clone(), pct.round() as u32)
            })
            .collect())
    }
}

fn pending(by_name: &BTreeMap<String, u64>) -> Vec<Pending> {
    by_name.iter().map(|(domain, &operation)| Pending { domain: domain.clone(), operation }).collect()
}

fn round_at(plan: &tern_model::PrecopyPlan, sim_ms: u64) -> u32 {
    let mut t = plan.setup_ms;
    if sim_ms < t {
        return 0;
    }
    for (n, r) in plan.rounds.iter().enumerate() {
        t += r.ms;
        if sim_ms < t {
            return n as u32 + 1;
        }
    }
    plan.rounds.len() as u32
}
