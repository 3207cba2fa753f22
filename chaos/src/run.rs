//! One simulation from its seed: build the cluster, let it form, run the workload
//! under the nemesis while checking safety after every step, stop the faults, and
//! demand convergence within a bound.

use crate::check::{Checker, Violation};
use crate::cluster::{CLIENT, Certs, EPOCH_MS, Options, Phase, Shared, boot};
use crate::history::History;
use crate::nemesis::Nemesis;
use crate::scenario::Scenario;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};
use turmoil::Sim;

/// How often convergence is evaluated during the heal phase.
pub const HEAL_POLL_MS: u64 = 500;

/// Simulated time of the run in progress on this process (for log lines).
pub static SIM_MS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Panics raised on this thread while it runs a simulation (tokio catches them in
    /// spawned tasks; the hook records them so that a panic anywhere fails the run).
    /// Per thread, because a simulation runs on one thread and tests run simulations
    /// side by side.
    static PANICS: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Whether this thread is running a simulation now.
    static IN_SIMULATION: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the current thread as running a simulation until dropped.
struct SimulationThread;

impl SimulationThread {
    fn enter() -> Self {
        IN_SIMULATION.with(|f| f.set(true));
        Self
    }
}

impl Drop for SimulationThread {
    fn drop(&mut self) {
        IN_SIMULATION.with(|f| f.set(false));
    }
}

/// Installs the panic hook that records the panics of simulations (once per
/// process). Other panics (a failing test's assertion) go to the default hook, as do
/// a simulation's when `RUST_LOG` is set.
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_SIMULATION.with(std::cell::Cell::get) {
                return default(info);
            }
            let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
            let msg = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            PANICS.with(|p| p.borrow_mut().push(format!("{msg}{at}")));
            if std::env::var_os("RUST_LOG").is_some() {
                default(info);
            } else {
                eprintln!("tern-chaos: panic in the simulation: {msg}{at}");
            }
        }));
    });
}

fn take_panics() -> Vec<String> {
    PANICS.with(|p| std::mem::take(&mut *p.borrow_mut()))
}

/// Why a run failed.
#[derive(Clone, Debug)]
pub enum Failure {
    /// A safety property broke.
    Safety(Vec<Violation>),
    /// The cluster did not form, or did not converge after the faults.
    Liveness { phase: &'static str, at_ms: u64, reasons: Vec<String> },
    /// Host software returned an error or something panicked.
    Crash { at_ms: u64, message: String },
    /// A named scenario's own demand failed.
    Scenario(Vec<String>),
}

impl Failure {
    /// One line naming the kind and the first problem.
    pub fn headline(&self) -> String {
        match self {
            Self::Safety(v) => format!("safety at {} ms: {}", v[0].at_ms, v[0].what),
            Self::Liveness { phase, at_ms, reasons } => {
                format!("liveness ({phase}) at {at_ms} ms: {}", reasons.first().map_or("", String::as_str))
            }
            Self::Crash { at_ms, message } => format!("crash at {at_ms} ms: {message}"),
            Self::Scenario(v) => format!("scenario: {}", v.first().map_or("", String::as_str)),
        }
    }

    /// Every problem, one per line.
    pub fn details(&self) -> Vec<String> {
        match self {
            Self::Safety(v) => v.iter().map(|x| format!("[{} ms] {}", x.at_ms, x.what)).collect(),
            Self::Liveness { reasons, .. } => reasons.clone(),
            Self::Crash { message, .. } => vec![message.clone()],
            Self::Scenario(v) => v.clone(),
        }
    }
}

/// What one seed did.
#[derive(Debug)]
pub struct RunReport {
    pub seed: u64,
    pub scenario: Option<String>,
    pub failure: Option<Failure>,
    /// Simulated time the run covered.
    pub sim_ms: u64,
    /// How long convergence took after the faults stopped.
    pub heal_ms: Option<u64>,
    pub real: Duration,
    pub steps: u64,
    pub nemesis_log: Vec<(u64, String)>,
    pub history: History,
    /// A digest of everything observable (faults, acknowledgements, final state):
    /// two runs of one seed agree on it when the run replayed exactly.
    pub digest: u64,
    /// Every member's applied-index changes by step (see [`Checker::trace`]).
    pub trace: Vec<String>,
    /// Where each guest is active at the end (guest -> servers it is active on).
    pub placement: std::collections::BTreeMap<String, Vec<String>>,
    /// The applied state of the member furthest ahead at the end.
    pub state: Option<tern_raft_store::State>,
    /// Hosts whose agent stopped itself on a fatal Raft error, with how many times.
    pub fatal_stops: std::collections::BTreeMap<String, u64>,
    /// Writes that power losses took from page caches (never synced), all hosts.
    pub writes_lost: u64,
    /// Hypervisor calls refused by a hypervisor fault, by host (hosts with any).
    pub hv_refused: std::collections::BTreeMap<String, u64>,
}

impl RunReport {
    pub fn ok(&self) -> bool {
        self.failure.is_none()
    }
}

struct Driver<'a> {
    sim: Sim<'a>,
    shared: Arc<Shared>,
    checker: Checker,
    nemesis: Nemesis,
    steps: u64,
    heal_ms: Option<u64>,
}

/// Runs one seed (with a named scenario's script instead of random faults, if given).
pub fn run_seed(seed: u64, opts: &Options, certs: Arc<Certs>, scenario: Option<Scenario>) -> RunReport {
    install_panic_hook();
    let _simulation = SimulationThread::enter();
    take_panics();
    let started = Instant::now();
    let mut opts = opts.clone();
    if let Some(s) = scenario {
        s.adjust(&mut opts);
    }
    let shared = match Shared::new(seed, opts.clone(), certs) {
        Ok(s) => s,
        Err(e) => return setup_failure(seed, scenario, started, e),
    };
    let initial: Vec<tern_model::Server> =
        match opts.layouts.iter().map(|p| tern_hypervisor::layout::load_layout(p)).collect::<Result<_, _>>() {
            Ok(s) => s,
            Err(e) => return setup_failure(seed, scenario, started, e.to_string()),
        };
    let epoch = SystemTime::UNIX_EPOCH + Duration::from_millis(EPOCH_MS);
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .tick_duration(Duration::from_millis(opts.tick_ms))
        .simulation_duration(Duration::from_secs(24 * 3600))
        .min_message_latency(Duration::from_millis(opts.link_latency_ms.0))
        .max_message_latency(Duration::from_millis(opts.link_latency_ms.1))
        .epoch(epoch)
        .build();
    for h in &shared.hosts {
        let (s, i) = (shared.clone(), h.index);
        sim.host(h.name.as_str(), move || boot(s.clone(), i));
    }
    sim.client(CLIENT, crate::workload::run(shared.clone()));
    shared.reset_latencies(&mut sim);
    let mut d = Driver {
        checker: Checker::new(&shared, &initial),
        nemesis: Nemesis::new(seed, opts.nemesis.clone()),
        sim,
        shared: shared.clone(),
        steps: 0,
        heal_ms: None,
    };
    let outcome = d.drive(scenario);
    shared.set_phase(Phase::Done);
    let sim_ms = d.now_ms();
    let history = shared.history().clone();
    let digest = digest(&d.nemesis.log, &history, &shared);
    let mut report = RunReport {
        seed,
        scenario: scenario.map(|s| s.name().to_string()),
        failure: outcome.err(),
        sim_ms,
        heal_ms: d.heal_ms,
        real: started.elapsed(),
        steps: d.steps,
        nemesis_log: std::mem::take(&mut d.nemesis.log),
        history,
        digest,
        trace: std::mem::take(&mut d.checker.trace),
        placement: placement(&shared, d.checker.guests()),
        state: shared
            .hosts
            .iter()
            .max_by_key(|h| h.state().last_applied().map(|l| l.index))
            .map(|h| h.state().snapshot()),
        fatal_stops: shared
            .hosts
            .iter()
            .map(|h| (h.name.clone(), h.fatal_stops.load(std::sync::atomic::Ordering::SeqCst)))
            .filter(|(_, n)| *n > 0)
            .collect(),
        writes_lost: shared.hosts.iter().map(|h| h.writes_lost.load(std::sync::atomic::Ordering::SeqCst)).sum(),
        hv_refused: shared
            .hosts
            .iter()
            .map(|h| (h.name.clone(), h.hv_switch.refused.load(std::sync::atomic::Ordering::SeqCst)))
            .filter(|(_, n)| *n > 0)
            .collect(),
    };
    if let Some(s) = scenario
        && report.failure.is_none()
    {
        let problems = s.verify(&report);
        if !problems.is_empty() {
            report.failure = Some(Failure::Scenario(problems));
        }
    }
    report
}

fn setup_failure(seed: u64, scenario: Option<Scenario>, started: Instant, message: String) -> RunReport {
    RunReport {
        seed,
        scenario: scenario.map(|s| s.name().to_string()),
        failure: Some(Failure::Crash { at_ms: 0, message: format!("setup: {message}") }),
        sim_ms: 0,
        heal_ms: None,
        real: started.elapsed(),
        steps: 0,
        nemesis_log: Vec::new(),
        history: History::default(),
        digest: 0,
        trace: Vec::new(),
        placement: Default::default(),
        state: None,
        fatal_stops: Default::default(),
        writes_lost: 0,
        hv_refused: Default::default(),
    }
}

/// Guest -> the servers it is active on, read from the sim hypervisors.
fn placement(
    shared: &Shared,
    guests: &std::collections::BTreeSet<String>,
) -> std::collections::BTreeMap<String, Vec<String>> {
    let servers: Vec<tern_model::Server> = shared.hosts.iter().filter_map(|h| h.physical()).collect();
    guests
        .iter()
        .map(|g| {
            let on = servers
                .iter()
                .filter(|s| s.domain(g).is_some_and(|d| d.state == tern_model::DomainState::Active))
                .map(|s| s.name.clone())
                .collect();
            (g.clone(), on)
        })
        .collect()
}

impl Driver<'_> {
    fn now_ms(&self) -> u64 {
        self.sim.elapsed().as_millis() as u64
    }

    /// One step and every safety check after it.
    fn step(&mut self) -> Result<(), Failure> {
        let now = self.now_ms();
        self.shared.now_ms.store(now, Ordering::SeqCst);
        SIM_MS.store(now, Ordering::Relaxed);
        crate::power::serve_requests(&mut self.sim, &self.shared, &mut self.nemesis, now);
        if let Err(e) = self.sim.step() {
            return Err(Failure::Crash { at_ms: now, message: format!("host software failed: {e}") });
        }
        self.steps += 1;
        let panics = take_panics();
        if !panics.is_empty() {
            return Err(Failure::Crash { at_ms: now, message: format!("panic: {}", panics.join(" | ")) });
        }
        let violations = self.checker.after_step(&self.shared, now);
        if !violations.is_empty() {
            return Err(Failure::Safety(violations));
        }
        Ok(())
    }

    fn drive(&mut self, scenario: Option<Scenario>) -> Result<(), Failure> {
        self.boot()?;
        self.shared.set_phase(Phase::Faults);
        let start = self.now_ms();
        self.nemesis.note(start, "faults begin");
        let end = start + self.shared.opts.faults_ms;
        let mut script = scenario.map(|s| s.script());
        while self.now_ms() < end {
            let now = self.now_ms();
            if let Some(script) = &mut script {
                script.step(&mut self.sim, &self.shared, &mut self.nemesis, now);
            }
            self.nemesis.step(&mut self.sim, &self.shared, now);
            self.step()?;
        }
        let now = self.now_ms();
        self.nemesis.heal(&mut self.sim, &self.shared, now);
        self.shared.set_phase(Phase::Heal);
        self.heal(now)
    }

    /// Steps until the cluster formed: every host a member, the voters in place, a
    /// leader, and every server's inventory replicated.
    fn boot(&mut self) -> Result<(), Failure> {
        let deadline = self.shared.opts.boot_ms_max;
        loop {
            self.step()?;
            if !self.steps.is_multiple_of(100) {
                continue;
            }
            let reasons = self.checker.unhealed(&self.shared);
            if reasons.is_empty() {
                self.nemesis.note(self.now_ms(), "cluster formed");
                return Ok(());
            }
            if self.now_ms() > deadline {
                return Err(Failure::Liveness { phase: "boot", at_ms: self.now_ms(), reasons });
            }
        }
    }

    fn heal(&mut self, from_ms: u64) -> Result<(), Failure> {
        let deadline = from_ms + self.shared.opts.heal_ms_max;
        let mut next_poll = from_ms;
        loop {
            self.step()?;
            let now = self.now_ms();
            if now < next_poll {
                continue;
            }
            next_poll = now + HEAL_POLL_MS;
            let reasons = self.checker.unhealed(&self.shared);
            if reasons.is_empty() {
                self.heal_ms = Some(now - from_ms);
                self.nemesis.note(now, "converged");
                return Ok(());
            }
            if now > deadline {
                return Err(Failure::Liveness { phase: "heal", at_ms: now, reasons });
            }
        }
    }
}

/// FNV-1a over the observable run: fault log, acknowledgements, migration outcomes,
/// and the final state of the first host.
fn digest(log: &[(u64, String)], history: &History, shared: &Shared) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |s: &str| {
        for b in s.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for (t, what) in log {
        eat(&format!("{t}:{what};"));
    }
    for a in &history.acks {
        eat(&format!("{}:{}:{:?};", a.log_index, a.at_ms, a.ack));
    }
    for m in &history.migrations {
        eat(&format!("{}:{}:{}:{}:{:?};", m.domain, m.source, m.target, m.ended_ms, m.end));
    }
    if let Some(h0) = shared.hosts.first() {
        let state = h0.state().snapshot();
        eat(&serde_json::to_string(&state).unwrap_or_default());
    }
    h
}

/// Logs to stderr, filtered by `RUST_LOG`, stamped with simulated time.
pub fn install_tracing() {
    struct SimTime;
    impl tracing_subscriber::fmt::time::FormatTime for SimTime {
        fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
            let ms = SIM_MS.load(Ordering::Relaxed);
            write!(w, "{:>4}.{:03}s", ms / 1000, ms % 1000)
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_timer(SimTime)
        .with_writer(std::io::stderr)
        .try_init();
}
