//! The nemesis: faults drawn from the seed and applied between simulation steps.
//!
//! Network faults (one at a time): partitions, isolating the leader, message loss
//! (turmoil breaks a link at random, which kills TCP connections as a lossy network
//! does), long delays, held messages. Process faults (one at a time): crash and
//! restart later, bounce (restart at once), disk loss (the agent comes back on a
//! blank disk as a new member), clock skew. Decisions are taken every
//! [`DECISION_MS`] of simulated time, so the draws do not depend on the tick.
//!
//! Every fault ends by itself; [`Nemesis::heal`] ends them all at once.

use crate::cluster::{CLIENT, Shared};
use crate::rng::SimRng;
use std::sync::atomic::Ordering;
use std::time::Duration;
use turmoil::Sim;

/// How often the nemesis decides.
pub const DECISION_MS: u64 = 500;

/// The kinds of fault, in the order of [`NemesisOptions::weights`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Partition,
    IsolateLeader,
    Loss,
    Delay,
    Hold,
    Crash,
    Bounce,
    DiskLoss,
    Skew,
    /// A host's hypervisor fails or hangs every call ([`crate::faulty`]).
    Hypervisor,
}

pub const KINDS: [Kind; 10] = [
    Kind::Partition,
    Kind::IsolateLeader,
    Kind::Loss,
    Kind::Delay,
    Kind::Hold,
    Kind::Crash,
    Kind::Bounce,
    Kind::DiskLoss,
    Kind::Skew,
    Kind::Hypervisor,
];

impl Kind {
    fn is_network(self) -> bool {
        matches!(self, Self::Partition | Self::IsolateLeader | Self::Loss | Self::Delay | Self::Hold)
    }
}

#[derive(Clone, Debug)]
pub struct NemesisOptions {
    /// Chance (per mille) per decision of starting a fault when a slot is free.
    pub start_per_mille: u64,
    /// Relative weights of [`KINDS`].
    pub weights: [u64; 10],
    /// How long a fault lasts (ms, uniform).
    pub duration_ms: (u64, u64),
    /// Disk losses per run, at most.
    pub disk_losses_max: u32,
}

impl Default for NemesisOptions {
    fn default() -> Self {
        Self {
            start_per_mille: 300,
            weights: [4, 3, 2, 2, 2, 4, 2, 1, 1, 1],
            duration_ms: (1000, 8000),
            disk_losses_max: 1,
        }
    }
}

impl NemesisOptions {
    /// No faults at all (a baseline run).
    pub fn quiet() -> Self {
        Self { start_per_mille: 0, ..Self::default() }
    }
}

/// A fault in force and how to end it.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Links between the two sides are cut.
    Cut {
        a: Vec<String>,
        b: Vec<String>,
    },
    Loss {
        host: String,
        others: Vec<String>,
    },
    Delay {
        host: String,
        others: Vec<String>,
    },
    Hold {
        host: String,
        others: Vec<String>,
    },
    /// The host is down; it restarts when the fault ends (on a blank disk if `wipe`).
    Down {
        host: String,
        wipe: bool,
    },
    Skew {
        host: String,
    },
    /// Every write to the host's disk fails (full, or failing): its agent must stop
    /// itself. When the fault ends the disk works again and the host restarts on it.
    DiskFails {
        host: String,
    },
    /// The host's hypervisor fails every call, or hangs each one until its deadline
    /// (`hang`); the server and its guests go on.
    Hypervisor {
        host: String,
        hang: bool,
    },
}

impl Fault {
    /// The one host a process fault is on.
    fn host(&self) -> Option<&str> {
        match self {
            Fault::Down { host, .. }
            | Fault::Skew { host }
            | Fault::DiskFails { host }
            | Fault::Hypervisor { host, .. } => Some(host),
            Fault::Cut { .. } | Fault::Loss { .. } | Fault::Delay { .. } | Fault::Hold { .. } => None,
        }
    }
}

/// Chance (per mille) that a clock fault is a forward jump rather than a drift, and
/// how far it jumps (ms).
const FORWARD_JUMP_PER_MILLE: u64 = 300;
const FORWARD_JUMP_MS: (u64, u64) = (10_000, 120_000);

/// Chance (per mille) that a process fault drawn while another runs starts anyway, on
/// another host.
const SECOND_FAULT_PER_MILLE: u64 = 250;

struct Active {
    fault: Fault,
    until_ms: u64,
}

/// A power loss that waits for its moment: the first step at which the host's disk has
/// unsynced writes (a crash in the middle of a write), or `deadline_ms`.
struct Armed {
    host: String,
    ms: u64,
    deadline_ms: u64,
}

/// How long an armed crash waits for a write before it strikes anyway.
const ARMED_WAIT_MS: u64 = 3000;

/// The fault injector of one run.
pub struct Nemesis {
    rng: SimRng,
    opts: NemesisOptions,
    network: Option<Active>,
    process: Option<Active>,
    next_decision_ms: u64,
    disk_losses: u32,
    /// A second process fault at once (on another host), started now and then while
    /// the first runs: two crashes, a crash during a hypervisor fault...
    second: Option<Active>,
    /// While a second process fault is being drawn: the first one's host.
    avoid_host: Option<String>,
    /// A crash waiting for its host to have writes only in its page cache.
    armed: Option<Armed>,
    /// The next power loss takes every unsynced write (a scenario that needs a loss).
    pub lose_everything_next: bool,
    /// The next clock skew is exactly this many ms (a scenario that needs a jump).
    pub skew_next: Option<i64>,
    /// What it did, with the simulated time: printed when a run fails.
    pub log: Vec<(u64, String)>,
}

impl Nemesis {
    /// From now on, random faults as `opts` says (a scenario that turns them on once
    /// its subject is under way).
    pub fn set_options(&mut self, opts: NemesisOptions) {
        self.opts = opts;
    }

    pub fn new(seed: u64, opts: NemesisOptions) -> Self {
        Self {
            rng: SimRng::derive(seed, "nemesis"),
            opts,
            network: None,
            process: None,
            next_decision_ms: 0,
            disk_losses: 0,
            second: None,
            avoid_host: None,
            armed: None,
            lose_everything_next: false,
            skew_next: None,
            log: Vec::new(),
        }
    }

    /// `slot`'s server loses power (its host already crashed): a random share of the
    /// writes only in its page cache reached the disk, the rest are lost. What was
    /// lost, for the log.
    pub fn power_loss(&mut self, slot: &crate::cluster::HostSlot) -> String {
        let unsynced = slot.disk().store.unsynced_writes();
        let keep = if std::mem::take(&mut self.lose_everything_next) {
            0
        } else {
            self.rng.between(0, unsynced as u64) as usize
        };
        let loss = slot.power_loss(keep);
        if loss.lost == 0 {
            String::new()
        } else {
            format!(" (its page cache lost {} of {} unsynced writes)", loss.lost, loss.kept + loss.lost)
        }
    }

    pub fn note(&mut self, now_ms: u64, what: impl Into<String>) {
        self.log.push((now_ms, what.into()));
    }

    /// Called before every step of the fault phase.
    pub fn step(&mut self, sim: &mut Sim<'_>, shared: &Shared, now_ms: u64) {
        self.strike_armed(sim, shared, now_ms);
        if now_ms < self.next_decision_ms {
            return;
        }
        self.next_decision_ms = now_ms + DECISION_MS;
        if self.network.as_ref().is_some_and(|a| a.until_ms <= now_ms) {
            let a = self.network.take().expect("checked");
            self.end(sim, shared, now_ms, a.fault);
        }
        if self.second.as_ref().is_some_and(|a| a.until_ms <= now_ms) {
            let a = self.second.take().expect("checked");
            self.end(sim, shared, now_ms, a.fault);
        }
        if self.process.as_ref().is_some_and(|a| a.until_ms <= now_ms) {
            let a = self.process.take().expect("checked");
            self.end(sim, shared, now_ms, a.fault);
        }
        if !self.rng.chance(self.opts.start_per_mille) {
            return;
        }
        let kind = KINDS[self.rng.weighted(&self.opts.weights)];
        let busy =
            if kind.is_network() { self.network.is_some() } else { self.process.is_some() || self.armed.is_some() };
        // A second process fault, on another host, while the first runs.
        let second = busy
            && !kind.is_network()
            && self.second.is_none()
            && self.armed.is_none()
            && kind != Kind::DiskLoss
            && self.rng.chance(SECOND_FAULT_PER_MILLE);
        if (busy && !second) || (kind == Kind::DiskLoss && self.disk_losses >= self.opts.disk_losses_max) {
            return;
        }
        let duration = self.rng.between(self.opts.duration_ms.0, self.opts.duration_ms.1);
        if second {
            self.avoid_host = self.process.as_ref().and_then(|a| a.fault.host()).map(str::to_string);
            let started = self.start(sim, shared, now_ms, kind, duration);
            self.avoid_host = None;
            if let Some(fault) = started {
                self.note(now_ms, "(a second process fault, while the first runs)");
                self.second = Some(Active { fault, until_ms: now_ms + duration });
            }
            return;
        }
        if let Some(fault) = self.start(sim, shared, now_ms, kind, duration) {
            let active = Some(Active { fault, until_ms: now_ms + duration });
            if kind.is_network() {
                self.network = active;
            } else {
                self.process = active;
            }
        }
    }

    /// Crashes the armed host once its page cache holds unsynced writes (or its wait is
    /// over).
    fn strike_armed(&mut self, sim: &mut Sim<'_>, shared: &Shared, now_ms: u64) {
        let Some(armed) = &self.armed else { return };
        let Some(slot) = shared.host(&armed.host) else {
            self.armed = None;
            return;
        };
        let mid_write = slot.disk().store.unsynced_writes() > 0;
        if !mid_write && now_ms < armed.deadline_ms {
            return;
        }
        let Armed { host, ms, .. } = self.armed.take().expect("checked");
        if self.process.is_some() || !sim.is_host_running(host.as_str()) {
            return;
        }
        let fault = Fault::Down { host, wipe: false };
        self.apply(sim, shared, now_ms, &fault, ms);
        self.process = Some(Active { fault, until_ms: now_ms + ms });
    }

    /// Ends every fault: the network is whole, every host runs, clocks agree.
    pub fn heal(&mut self, sim: &mut Sim<'_>, shared: &Shared, now_ms: u64) {
        self.armed = None;
        for a in [self.network.take(), self.second.take(), self.process.take()].into_iter().flatten() {
            self.end(sim, shared, now_ms, a.fault);
        }
        let names: Vec<String> = shared.hosts.iter().map(|h| h.name.clone()).collect();
        for h in &shared.hosts {
            if !sim.is_host_running(h.name.as_str()) {
                sim.bounce(h.name.as_str());
            }
            h.skew_ms.store(0, Ordering::SeqCst);
            h.hv_switch.set(crate::faulty::HvFault::Works);
        }
        for (i, a) in names.iter().enumerate() {
            for b in names[i + 1..].iter().chain([&CLIENT.to_string()]) {
                sim.repair(a.as_str(), b.as_str());
            }
        }
        shared.reset_latencies(sim);
        self.note(now_ms, "heal: network repaired, every host running, clocks agree, hypervisors answering");
    }

    /// Applies `fault` now for `ms` (a scenario's scripted fault); a fault of the same
    /// class already in force ends first.
    pub fn inject(&mut self, sim: &mut Sim<'_>, shared: &Shared, now_ms: u64, fault: Fault, ms: u64) {
        let network = !matches!(
            fault,
            Fault::Down { .. } | Fault::Skew { .. } | Fault::DiskFails { .. } | Fault::Hypervisor { .. }
        );
        let slot = if network { self.network.take() } else { self.process.take() };
        if let Some(a) = slot {
            self.end(sim, shared, now_ms, a.fault);
        }
        self.apply(sim, shared, now_ms, &fault, ms);
        let active = Some(Active { fault, until_ms: now_ms + ms });
        if network {
            self.network = active;
        } else {
            self.process = active;
        }
    }

    fn start(&mut self, sim: &mut Sim<'_>, shared: &Shared, now_ms: u64, kind: Kind, ms: u64) -> Option<Fault> {
        let names: Vec<String> = shared.hosts.iter().map(|h| h.name.clone()).collect();
        let pick = |rng: &mut SimRng| rng.pick(&names).cloned();
        let fault = match kind {
            Kind::Partition => {
                let mut shuffled = names.clone();
                self.rng.shuffle(&mut shuffled);
                let cut = self.rng.between(1, (shuffled.len() as u64 / 2).max(1)) as usize;
                let b = shuffled.split_off(cut);
                let mut a = shuffled;
                if self.rng.chance(300) {
                    a.push(CLIENT.into()); // the client is cut off with the minority
                }
                Fault::Cut { a, b }
            }
            Kind::IsolateLeader => {
                let leader = leader_name(shared).or_else(|| pick(&mut self.rng))?;
                let b = names.iter().filter(|n| **n != leader).cloned().collect();
                Fault::Cut { a: vec![leader], b }
            }
            Kind::Loss | Kind::Delay | Kind::Hold => {
                let host = pick(&mut self.rng)?;
                let others = names.iter().filter(|n| **n != host).cloned().chain([CLIENT.to_string()]).collect();
                match kind {
                    Kind::Loss => Fault::Loss { host, others },
                    Kind::Delay => Fault::Delay { host, others },
                    _ => Fault::Hold { host, others },
                }
            }
            Kind::Crash | Kind::Bounce | Kind::DiskLoss => {
                let host = pick(&mut self.rng)?;
                if !sim.is_host_running(host.as_str()) || self.avoid_host.as_deref() == Some(host.as_str()) {
                    return None;
                }
                if kind == Kind::Bounce {
                    self.note(now_ms, format!("bounce {host}"));
                    shared.host(&host)?.clear_raft();
                    sim.bounce(host.as_str());
                    return None;
                }
                if kind == Kind::Crash && self.avoid_host.is_none() && self.rng.chance(600) {
                    self.note(now_ms, format!("power loss of {host} armed: at its next unsynced write"));
                    self.armed = Some(Armed { host, ms, deadline_ms: now_ms + ARMED_WAIT_MS });
                    return None;
                }
                Fault::Down { host, wipe: kind == Kind::DiskLoss }
            }
            Kind::Skew | Kind::Hypervisor => {
                let host = pick(&mut self.rng)?;
                if self.avoid_host.as_deref() == Some(host.as_str()) {
                    return None;
                }
                if kind == Kind::Skew {
                    Fault::Skew { host }
                } else {
                    Fault::Hypervisor { host, hang: self.rng.chance(500) }
                }
            }
        };
        self.apply(sim, shared, now_ms, &fault, ms);
        Some(fault)
    }

    fn apply(&mut self, sim: &mut Sim<'_>, shared: &Shared, now_ms: u64, fault: &Fault, ms: u64) {
        match fault {
            Fault::Cut { a, b } => {
                for x in a {
                    for y in b {
                        sim.partition(x.as_str(), y.as_str());
                    }
                }
                self.note(now_ms, format!("partition {a:?} | {b:?} for {ms} ms"));
            }
            Fault::Loss { host, others } => {
                let rate = self.rng.between(5, 50) as f64 / 1000.0;
                for o in others {
                    sim.set_link_fail_rate(host.as_str(), o.as_str(), rate);
                }
                self.note(now_ms, format!("message loss {rate} on {host}'s links for {ms} ms"));
            }
            Fault::Delay { host, others } => {
                let delay = self.rng.between(200, 1500);
                for o in others {
                    sim.set_link_latency(host.as_str(), o.as_str(), Duration::from_millis(delay));
                }
                self.note(now_ms, format!("delay of {delay} ms on {host}'s links for {ms} ms"));
            }
            Fault::Hold { host, others } => {
                for o in others {
                    sim.hold(host.as_str(), o.as_str());
                }
                self.note(now_ms, format!("hold {host}'s messages for {ms} ms"));
            }
            Fault::Down { host, wipe } => {
                if let Some(h) = shared.host(host) {
                    h.clear_raft();
                }
                sim.crash(host.as_str());
                let lost = shared.host(host).map(|h| self.power_loss(h)).unwrap_or_default();
                if *wipe {
                    self.disk_losses += 1;
                }
                let what = if *wipe { "crash, losing its disk," } else { "crash" };
                self.note(now_ms, format!("{what} {host} for {ms} ms{lost}"));
            }
            Fault::Skew { host } => {
                // Mostly a drift within NTP's reach; now and then the clock jumps
                // forward (a wrong NTP step, a bad RTC at boot) by up to two minutes.
                let forced = self.skew_next.take();
                let jump =
                    forced.is_some_and(|s| s > 1500) || (forced.is_none() && self.rng.chance(FORWARD_JUMP_PER_MILLE));
                let skew = if let Some(s) = forced {
                    s
                } else if jump {
                    self.rng.between(FORWARD_JUMP_MS.0, FORWARD_JUMP_MS.1) as i64
                } else {
                    self.rng.between(0, 3000) as i64 - 1500
                };
                if let Some(h) = shared.host(host) {
                    h.skew_ms.store(skew, Ordering::SeqCst);
                }
                let what = if jump { "jumps forward" } else { "off" };
                self.note(now_ms, format!("clock of {host} {what} by {skew} ms for {ms} ms"));
            }
            Fault::Hypervisor { host, hang } => {
                let fault = if *hang { crate::faulty::HvFault::Hangs } else { crate::faulty::HvFault::Fails };
                if let Some(h) = shared.host(host) {
                    h.hv_switch.set(fault);
                }
                self.note(
                    now_ms,
                    format!("hypervisor of {host} {} for {ms} ms", if *hang { "hangs" } else { "fails" }),
                );
            }
            Fault::DiskFails { host } => {
                if let Some(h) = shared.host(host) {
                    h.disk().store.fail_writes(true);
                }
                self.note(now_ms, format!("disk of {host} fails: every write refused for {ms} ms"));
            }
        }
    }

    fn end(&mut self, sim: &mut Sim<'_>, shared: &Shared, now_ms: u64, fault: Fault) {
        match fault {
            Fault::Cut { a, b } => {
                for x in &a {
                    for y in &b {
                        sim.repair(x.as_str(), y.as_str());
                    }
                }
                self.note(now_ms, format!("repair {a:?} | {b:?}"));
            }
            Fault::Loss { host, others } => {
                for o in &others {
                    sim.set_link_fail_rate(host.as_str(), o.as_str(), 0.0);
                    sim.repair(host.as_str(), o.as_str());
                }
                self.note(now_ms, format!("no more loss on {host}'s links"));
            }
            Fault::Delay { host, others } => {
                for o in &others {
                    sim.set_link_latency(host.as_str(), o.as_str(), shared.latency(&host, o));
                }
                self.note(now_ms, format!("normal latency on {host}'s links"));
            }
            Fault::Hold { host, others } => {
                for o in &others {
                    sim.release(host.as_str(), o.as_str());
                }
                self.note(now_ms, format!("release {host}'s messages"));
            }
            Fault::Down { host, wipe } => {
                if wipe && let Some(h) = shared.host(&host) {
                    let d = h.replace_disk();
                    self.note(now_ms, format!("{host} gets a blank disk: new member id {}", d.node_id));
                }
                sim.bounce(host.as_str());
                self.note(now_ms, format!("restart {host}"));
            }
            Fault::Skew { host } => {
                if let Some(h) = shared.host(&host) {
                    h.skew_ms.store(0, Ordering::SeqCst);
                }
                self.note(now_ms, format!("clock of {host} correct again"));
            }
            Fault::Hypervisor { host, .. } => {
                if let Some(h) = shared.host(&host) {
                    h.hv_switch.set(crate::faulty::HvFault::Works);
                    let refused = h.hv_switch.refused.load(Ordering::SeqCst);
                    self.note(now_ms, format!("hypervisor of {host} answers again ({refused} call(s) refused so far)"));
                }
            }
            Fault::DiskFails { host } => {
                let Some(h) = shared.host(&host) else { return };
                let stops = h.fatal_stops.load(Ordering::SeqCst);
                self.note(now_ms, format!("{host}'s agent had stopped itself {stops} time(s) on a fatal Raft error"));
                h.disk().store.fail_writes(false);
                h.clear_raft();
                sim.bounce(host.as_str());
                self.note(now_ms, format!("disk of {host} works again; restart {host}"));
            }
        }
    }
}

/// The host whose running member believes it leads (the highest term wins).
pub fn leader_name(shared: &Shared) -> Option<String> {
    shared
        .hosts
        .iter()
        .filter_map(|h| {
            let raft = h.raft()?;
            let m = raft.metrics().borrow().clone();
            (m.state == openraft::ServerState::Leader).then(|| (m.current_term, h.name.clone()))
        })
        .max()
        .map(|(_, n)| n)
}
