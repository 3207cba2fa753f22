//! Load-based rebalancing (SPEC RB-01..RB-05), pure: servers, their reservations and
//! the cluster's rules in; a plan of moves out. No clock, no I/O, no randomness; every
//! list is walked in name order, so a plan is a function of its input.
//!
//! **Load.** A host's CPU load is the share of its activated strands kept busy: the sum
//! over its active domains of `cpu_pct x strands`, over `100 x activated strands`. Its
//! memory load is the share of its memory bound to a domain or reserved. A moving guest
//! keeps its number of virtual CPUs (LM-12), so it carries `cpu_pct x strands` along.
//!
//! **Imbalance (RB-01)** is the standard deviation of the hosts' loads (the spread
//! vSphere DRS balances), CPU and memory weighed by [`Settings::cpu_weight`] /
//! [`Settings::memory_weight`]: 0 when every host is as loaded as the others, about
//! 0.29 for loads spread evenly from idle to full, 0.5 at most. Proxmox CRS divides the
//! coefficient of variation by `sqrt(n - 1)`; that figure shrinks as `1/sqrt(n)` for the
//! same spread (0.018 for 1,000 hosts spread evenly), so one threshold could not serve
//! 3 and 1,000 hosts; the plain coefficient of variation explodes on an idle cluster
//! (1.4 for loads of 2%, 0, 0). The standard deviation is in load points, so a
//! threshold means the same thing at any size and any load.
//!
//! A move is judged by how much it lowers the sum of squared deviations from the mean
//! (`n x variance`, what the standard deviation is the root of): that amount depends
//! only on the two hosts and the guest (moving load `d` from a host at `a` to one at
//! `b` lowers it by about `2d(a - b - d)`), so a minimum gain means the same thing in a
//! 3-host and a 1,000-host cluster, unlike a gain in the deviation itself (which
//! shrinks with `n`, the reason Ganeti's `--min-gain` needs tuning per cluster). Soft
//! ("should") group rules add [`SHOULD_PENALTY`] per guest they are broken for, so a
//! move that mends one gains. Only hosts that take guests (Up, not in maintenance)
//! count.
//!
//! **Levels** ([`Level`], as vSphere DRS's 1..5; default 3):
//!
//! | level | acts when imbalance is at least | a move must gain at least |
//! |---|---|---|
//! | 1 | never for load: only mandatory moves (a broken must-rule) | - |
//! | 2 | 0.20 | 0.050 |
//! | 3 | 0.10 | 0.020 |
//! | 4 | 0.05 | 0.010 |
//! | 5 | 0.02 | 0.005 |
//!
//! A gain of 0.02 is, for example, 2% of a host's capacity moved between hosts 50
//! points apart. A broken should-rule makes any level (2 and up) act.
//!
//! **Cost (RB-02).** Each move's migration time and downtime come from
//! [`precopy_plan`] (guest memory, dirty rate, the source control domain's cores). A move
//! must gain `min_gain x (1 + migration time / 10 min)` ([`COST_UNIT_MS`]), so a
//! 10-minute migration (about 350G at 600 MiB/s) needs twice the gain of an instant one, and among the moves that qualify the planner
//! takes the one with the most gain per that cost, then the least downtime, then by name.
//! A move whose downtime would exceed [`Settings::max_downtime_ms`] is not made.
//!
//! **Legality (RB-03).** A move is planned only if the full [`preflight`] passes against
//! the target as the earlier moves of the plan leave it, minus the target's active
//! reservations, so its binding (CIDs, PA ranges, console port) is exactly what the
//! migration would reserve, LM-09 fragmentation included; what a move frees on its
//! source is free for the later moves. Guests frozen by the caller (a cooldown, a running
//! operation) stay; hosts that are not Up, or already run
//! [`Settings::host_concurrency`] migrations, neither give nor take. Affinity groups:
//! `must` members are kept on one host (a member split off is moved back, a mandatory
//! move; a member is never moved away from its mates); anti-affinity `must` members
//! never share a host (a shared host is mended first). `should` rules only weigh.
//! With [`Settings::n_plus_one`], a move is refused if afterwards some host's guests
//! could not all be placed on the others (each by [`choose_target`], the placement HA's
//! restart planner makes, so fragmentation counts); off by default, since it costs
//! `hosts x guests x hosts` preflights per move.
//!
//! **Search.** Greedy, as Ganeti's hbal: each step evaluates moving every movable guest
//! of the [`SOURCES_MAX`] hosts most above the mean to each of the [`TARGETS_MAX`] hosts
//! most below it (every pair in clusters up to that size), scores each by the imbalance
//! it would leave (updated in O(1) from running sums), and checks the best with the
//! preflight until one passes; [`Settings::max_moves`] steps at most.
//!
//! **Make room (RB-05)**, see [`make_room`]: the fewest moves of the target's other
//! guests, each itself legal, after which a guest refused for fragmentation (LM-09) or
//! too few free cores (LM-06) fits.

use crate::placement::Binding;
use crate::planner::choose_target;
use crate::precopy::{PrecopyParams, precopy_plan};
use crate::preflight::{Code, MigrationQuery, Violation, preflight};
use crate::server::{DomainKind, DomainState, Reserved, Server};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// How many of the most loaded hosts a step takes guests from.
pub const SOURCES_MAX: usize = 8;
/// How many of the least loaded hosts a step offers each guest.
pub const TARGETS_MAX: usize = 16;
/// How many qualifying moves a step checks with the full preflight before giving up.
pub const PREFLIGHTS_PER_STEP: usize = 64;
/// A migration this long needs twice the gain of an instant one (RB-02).
pub const COST_UNIT_MS: f64 = 600_000.0;
/// What one guest breaking a `should` rule adds to the score.
pub const SHOULD_PENALTY: f64 = 0.05;
/// The most moves a make-room plan may have.
pub const MAKE_ROOM_MOVES_MAX: usize = 4;
/// The most sets of guests a make-room search tries.
pub const MAKE_ROOM_TRIES_MAX: usize = 20_000;

/// DRS-style aggressiveness, 1 (mandatory moves only) ..= 5 (aggressive).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Level(u8);

impl Level {
    pub const MANDATORY: Level = Level(1);
    pub const DEFAULT: Level = Level(3);

    pub fn new(level: u8) -> Result<Self, String> {
        if (1..=5).contains(&level) {
            Ok(Self(level))
        } else {
            Err(format!("level {level} is not 1 (mandatory moves only) to 5 (aggressive)"))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }

    /// The imbalance at and above which load moves are planned; `None` for level 1.
    pub fn act_above(self) -> Option<f64> {
        match self.0 {
            1 => None,
            2 => Some(0.20),
            3 => Some(0.10),
            4 => Some(0.05),
            _ => Some(0.02),
        }
    }

    /// The least a load move must lower the imbalance (before its cost is weighed).
    pub fn min_gain(self) -> f64 {
        match self.0 {
            1 | 2 => 0.05,
            3 => 0.02,
            4 => 0.01,
            _ => 0.005,
        }
    }
}

impl Default for Level {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<u8> for Level {
    type Error = String;
    fn try_from(v: u8) -> Result<Self, String> {
        Self::new(v)
    }
}

impl From<Level> for u8 {
    fn from(l: Level) -> u8 {
        l.0
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// How hard a group rule binds (RB-03), as DRS's "must" and "should" rules.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strength {
    #[default]
    Must,
    Should,
}

impl Strength {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Must => "must",
            Self::Should => "should",
        }
    }
}

impl std::str::FromStr for Strength {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "must" => Ok(Self::Must),
            "should" => Ok(Self::Should),
            other => Err(format!("rule strength {other:?} is not must or should")),
        }
    }
}

/// A group a guest belongs to, and how hard its rule binds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    #[serde(default)]
    pub strength: Strength,
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name, self.strength.as_str())
    }
}

/// What the rebalancer must respect about one guest.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestRules {
    /// Members of an affinity group run on one host.
    pub affinity: Option<Group>,
    /// Members of an anti-affinity group run on different hosts.
    pub anti_affinity: Option<Group>,
    /// Why the guest may not move now (a cooldown, a running operation), if so.
    pub frozen: Option<String>,
}

/// Tunables of the planner; see the module doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub level: Level,
    /// The most moves one plan holds.
    pub max_moves: usize,
    /// Migrations a host may take part in at once; a host already at it is left out.
    pub host_concurrency: u32,
    /// Keep, in aggregate, room for any one host's guests on the others.
    pub n_plus_one: bool,
    /// Weight of CPU load in the imbalance, in percent with `memory_weight`.
    pub cpu_weight: u32,
    pub memory_weight: u32,
    /// A move whose predicted downtime exceeds this is not planned.
    pub max_downtime_ms: u64,
    pub precopy: PrecopyParams,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            level: Level::DEFAULT,
            max_moves: 8,
            host_concurrency: 1,
            n_plus_one: false,
            cpu_weight: 50,
            memory_weight: 50,
            max_downtime_ms: 5_000,
            precopy: PrecopyParams::default(),
        }
    }
}

/// One server as the planner sees it.
#[derive(Clone, Debug)]
pub struct HostInput<'a> {
    pub server: &'a Server,
    /// Resources its active reservations hold.
    pub reserved: &'a Reserved,
    /// `Err(why)` when it neither gives nor takes guests (not Up, in maintenance).
    pub eligible: Result<(), String>,
    /// Migrations running now with this host as source or target.
    pub in_flight: u32,
}

/// Everything a plan is a function of.
#[derive(Clone, Debug, Default)]
pub struct Input<'a> {
    pub hosts: Vec<HostInput<'a>>,
    /// By guest name; a guest not named has no rules.
    pub guests: BTreeMap<String, GuestRules>,
    pub settings: Settings,
}

/// Why a move is in a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Reason {
    /// It lowers the imbalance (RB-01, RB-02).
    Load,
    /// It mends a broken must-rule of this group (mandatory, every level).
    Rule { group: String },
    /// It makes room for `domain` on its target (RB-05).
    MakeRoom { domain: String },
    /// The guest itself, once room is made.
    Guest,
}

impl fmt::Display for Reason {
    /// `load`, `rule GROUP`, `make-room DOMAIN`, `guest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Load => f.write_str("load"),
            Self::Rule { group } => write!(f, "rule {group}"),
            Self::MakeRoom { domain } => write!(f, "make-room {domain}"),
            Self::Guest => f.write_str("guest"),
        }
    }
}

/// What a move costs (RB-02), from the pre-copy model (LM-17).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cost {
    pub total_ms: u64,
    pub downtime_ms: u64,
    pub converged: bool,
}

/// One migration of a plan, legal in the state the earlier moves leave.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub domain: String,
    pub source: String,
    pub target: String,
    /// What the migration would reserve on the target.
    pub binding: Binding,
    pub cost: Cost,
    pub reason: Reason,
    /// The imbalance after this move, in millionths.
    pub imbalance_after_ppm: u32,
}

/// A plan: the moves in order and the imbalance they lead to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub level: u8,
    /// Imbalance (RB-01) before and after, in millionths.
    pub imbalance_before_ppm: u32,
    pub imbalance_after_ppm: u32,
    /// The level's threshold, in millionths; `None` at level 1.
    pub act_above_ppm: Option<u32>,
    pub moves: Vec<Move>,
    /// What the planner wants the reader to know: why it stopped, what it could not mend.
    pub notes: Vec<String>,
    /// Candidate moves the full preflight refused (what a planner without it would
    /// have tried to run).
    pub preflight_refusals: u32,
}

impl Plan {
    pub fn total_ms(&self) -> u64 {
        self.moves.iter().map(|m| m.cost.total_ms).sum()
    }
}

/// Formats millionths as the 0..1 figure people read (`0.2731`).
pub fn ppm_text(ppm: u32) -> String {
    format!("{}.{:04}", ppm / 1_000_000, (ppm % 1_000_000) / 100)
}

fn to_ppm(x: f64) -> u32 {
    (x.clamp(0.0, 4_000.0) * 1_000_000.0).round() as u32
}

/// A guest's footprint, read once.
#[derive(Clone, Debug)]
struct Guest {
    name: String,
    strands: usize,
    memory: u64,
    /// `cpu_pct x strands / 100`: busy strands it carries along.
    busy: f64,
    cost: Cost,
}

/// A host during planning: its server as the plan so far leaves it.
struct Work<'a> {
    server: std::borrow::Cow<'a, Server>,
    reserved: &'a Reserved,
    eligible: bool,
    in_flight: u32,
    busy: f64,
    strands: f64,
    mem_used: u64,
    mem_total: u64,
    free_strands: usize,
    free_memory: u64,
    /// Guests it may give, with their footprint.
    guests: Vec<Guest>,
}

impl Work<'_> {
    fn cpu(&self) -> f64 {
        if self.strands > 0.0 { self.busy / self.strands } else { 0.0 }
    }
    fn mem(&self) -> f64 {
        if self.mem_total > 0 { self.mem_used as f64 / self.mem_total as f64 } else { 0.0 }
    }
}

fn control_cores(server: &Server) -> u32 {
    server
        .domains
        .iter()
        .find(|d| d.kind == DomainKind::Control)
        .map(|d| server.cpu_of(&d.name).cids.len() as u32)
        .unwrap_or(1)
}

fn guest_of(server: &Server, name: &str, p: &PrecopyParams) -> Option<Guest> {
    let d = server.domain(name)?;
    let cpu = server.cpu_of(name);
    let memory: u64 = server.memory_of(name).iter().map(|r| r.size).sum();
    let busy = if d.state == DomainState::Active {
        f64::from(d.workload.cpu_pct.min(100)) * cpu.strands.len() as f64 / 100.0
    } else {
        0.0
    };
    let plan = precopy_plan(memory, d.workload.dirty_mib_per_s, control_cores(server), p);
    let cost = Cost { total_ms: plan.total_ms, downtime_ms: plan.downtime_ms, converged: plan.converged };
    Some(Guest { name: name.to_string(), strands: cpu.strands.len(), memory, busy, cost })
}

fn work_of<'a>(h: &HostInput<'a>, p: &PrecopyParams) -> Work<'a> {
    let s = h.server;
    let strands = s.cores.iter().filter(|c| c.activated).map(|c| c.strands.len()).sum::<usize>() as f64;
    let mut busy = 0.0;
    let mut guests = Vec::new();
    let mut names: Vec<&str> = s.domains.iter().map(|d| d.name.as_str()).collect();
    names.sort_unstable();
    for name in names {
        let Some(g) = guest_of(s, name, p) else { continue };
        busy += g.busy;
        if s.domain(name).is_some_and(|d| d.kind == DomainKind::Guest) {
            guests.push(g);
        }
    }
    let mem_total = s.total_memory();
    let free_memory: u64 = s.free_ranges(h.reserved).iter().map(|r| r.size).sum();
    Work {
        server: std::borrow::Cow::Borrowed(s),
        reserved: h.reserved,
        eligible: h.eligible.is_ok(),
        in_flight: h.in_flight,
        busy,
        strands,
        mem_used: mem_total.saturating_sub(free_memory),
        mem_total,
        free_strands: s.free_strands(h.reserved).len(),
        free_memory,
        guests,
    }
}

/// Running sums of the eligible hosts' loads, so a move's imbalance is O(1).
#[derive(Clone, Copy, Debug, Default)]
struct Sums {
    n: f64,
    cpu: (f64, f64),
    mem: (f64, f64),
}

impl Sums {
    fn add(&mut self, cpu: f64, mem: f64, sign: f64) {
        self.cpu.0 += sign * cpu;
        self.cpu.1 += sign * cpu * cpu;
        self.mem.0 += sign * mem;
        self.mem.1 += sign * mem * mem;
    }
}

/// The population standard deviation of loads from their running sums.
fn sigma(n: f64, (s1, s2): (f64, f64)) -> f64 {
    if n < 1.0 {
        return 0.0;
    }
    let mean = s1 / n;
    (s2 / n - mean * mean).max(0.0).sqrt()
}

/// The sum of squared deviations from the mean (`n x variance`): what a move lowers.
fn spread(n: f64, (s1, s2): (f64, f64)) -> f64 {
    if n < 1.0 {
        return 0.0;
    }
    (s2 - s1 * s1 / n).max(0.0)
}

struct Planner<'a, 'b> {
    hosts: Vec<Work<'a>>,
    by_name: BTreeMap<&'a str, usize>,
    /// Where each guest is now (host index).
    home: BTreeMap<String, usize>,
    rules: &'b BTreeMap<String, GuestRules>,
    /// Group name -> members, for affinity and anti-affinity.
    affinity: BTreeMap<String, (Strength, BTreeSet<String>)>,
    anti: BTreeMap<String, (Strength, BTreeSet<String>)>,
    settings: Settings,
    sums: Sums,
    refusals: u32,
    n_plus_one_refusals: u32,
}

/// A candidate move, scored.
struct Candidate {
    rank: f64,
    score_after: f64,
    guest: usize,
    source: usize,
    target: usize,
}

impl<'a, 'b> Planner<'a, 'b> {
    fn new(input: &'b Input<'a>) -> Self {
        let p = &input.settings.precopy;
        let mut order: Vec<&HostInput<'a>> = input.hosts.iter().collect();
        order.sort_by(|a, b| a.server.name.cmp(&b.server.name));
        let hosts: Vec<Work<'a>> = order.iter().map(|h| work_of(h, p)).collect();
        let by_name: BTreeMap<&'a str, usize> =
            order.iter().enumerate().map(|(i, h)| (h.server.name.as_str(), i)).collect();
        let mut home = BTreeMap::new();
        let mut sums = Sums::default();
        for (i, h) in hosts.iter().enumerate() {
            for g in &h.guests {
                home.insert(g.name.clone(), i);
            }
            if h.eligible {
                sums.n += 1.0;
                sums.add(h.cpu(), h.mem(), 1.0);
            }
        }
        let mut affinity: BTreeMap<String, (Strength, BTreeSet<String>)> = BTreeMap::new();
        let mut anti: BTreeMap<String, (Strength, BTreeSet<String>)> = BTreeMap::new();
        for (guest, r) in &input.guests {
            if !home.contains_key(guest) {
                continue;
            }
            for (group, map) in [(&r.affinity, &mut affinity), (&r.anti_affinity, &mut anti)] {
                if let Some(g) = group {
                    let e = map.entry(g.name.clone()).or_insert((g.strength, BTreeSet::new()));
                    // A group is as strong as its strongest member says.
                    e.0 = e.0.min(g.strength);
                    e.1.insert(guest.clone());
                }
            }
        }
        Self {
            hosts,
            by_name,
            home,
            rules: &input.guests,
            affinity,
            anti,
            settings: input.settings,
            sums,
            refusals: 0,
            n_plus_one_refusals: 0,
        }
    }

    fn weights(&self) -> (f64, f64) {
        let (c, m) = (f64::from(self.settings.cpu_weight), f64::from(self.settings.memory_weight));
        if c + m <= 0.0 { (0.5, 0.5) } else { (c / (c + m), m / (c + m)) }
    }

    fn imbalance_of(&self, sums: &Sums) -> f64 {
        let (wc, wm) = self.weights();
        wc * sigma(sums.n, sums.cpu) + wm * sigma(sums.n, sums.mem)
    }

    fn spread_of(&self, sums: &Sums) -> f64 {
        let (wc, wm) = self.weights();
        wc * spread(sums.n, sums.cpu) + wm * spread(sums.n, sums.mem)
    }

    fn imbalance(&self) -> f64 {
        self.imbalance_of(&self.sums)
    }

    /// Guests breaking a should-rule, with `moved` (if any) placed on `to`.
    fn should_breaks(&self, moved: Option<(&str, usize)>) -> usize {
        let at = |g: &str| match moved {
            Some((m, to)) if m == g => Some(to),
            _ => self.home.get(g).copied(),
        };
        let mut n = 0;
        for (strength, members) in self.affinity.values() {
            if *strength == Strength::Should {
                n += members.len() - majority_host(members, at).map_or(0, |(_, c)| c);
            }
        }
        for (strength, members) in self.anti.values() {
            if *strength == Strength::Should {
                let mut per: BTreeMap<usize, usize> = BTreeMap::new();
                for m in members {
                    if let Some(h) = at(m) {
                        *per.entry(h).or_default() += 1;
                    }
                }
                n += per.values().map(|c| c - 1).sum::<usize>();
            }
        }
        n
    }

    fn score(&self) -> f64 {
        self.spread_of(&self.sums) + SHOULD_PENALTY * self.should_breaks(None) as f64
    }

    /// The sums after moving `g` from `s` to `t`.
    fn sums_after(&self, g: &Guest, s: usize, t: usize) -> Sums {
        let mut sums = self.sums;
        for (i, sign) in [(s, -1.0), (t, 1.0)] {
            let h = &self.hosts[i];
            if !h.eligible {
                continue;
            }
            sums.add(h.cpu(), h.mem(), -1.0);
            let busy = h.busy + sign * g.busy;
            let used = if sign > 0.0 { h.mem_used + g.memory } else { h.mem_used.saturating_sub(g.memory) };
            let cpu = if h.strands > 0.0 { busy / h.strands } else { 0.0 };
            let mem = if h.mem_total > 0 { used as f64 / h.mem_total as f64 } else { 0.0 };
            sums.add(cpu, mem, 1.0);
        }
        sums
    }

    /// Why moving `guest` to host `t` would break a must-rule, if it would.
    fn breaks_must(&self, guest: &str, t: usize) -> Option<String> {
        let rules = self.rules.get(guest)?;
        if let Some(g) = &rules.anti_affinity
            && let Some((Strength::Must, members)) = self.anti.get(&g.name)
            && let Some(other) = members.iter().find(|m| *m != guest && self.home.get(*m) == Some(&t))
        {
            return Some(format!("anti-affinity group {} (must): {other} runs there", g.name));
        }
        if let Some(g) = &rules.affinity
            && let Some((Strength::Must, members)) = self.affinity.get(&g.name)
        {
            let mates: Vec<&String> = members.iter().filter(|m| *m != guest).collect();
            let (here, _) = majority_host(members, |m| if m == guest { Some(t) } else { self.home.get(m).copied() })?;
            if !mates.is_empty() && here != t {
                return Some(format!("affinity group {} (must): its members run on {}", g.name, self.name(here)));
            }
            let together_now = mates.iter().all(|m| self.home.get(*m) == self.home.get(guest));
            if together_now && !mates.is_empty() {
                return Some(format!("affinity group {} (must) keeps it with {}", g.name, join(&mates)));
            }
        }
        None
    }

    fn name(&self, i: usize) -> &str {
        &self.hosts[i].server.name
    }

    /// N+1 (RB-03), exactly: with `guest` moved from `s` to `t` on `binding`, every
    /// eligible host's guests can still be placed, one by one, on the other eligible
    /// hosts by [`choose_target`] (the same placement HA's restart planner uses), each
    /// placement reserved before the next. Costs hosts x guests x hosts preflights.
    fn n_plus_one_after(&self, guest: &str, s: usize, t: usize, binding: &Binding) -> bool {
        let mut src = self.hosts[s].server.clone().into_owned();
        let mut dst = self.hosts[t].server.clone().into_owned();
        let Some((d, _, _)) = src.unbind_domain(guest) else { return false };
        if dst.bind_domain(d, binding).is_err() {
            return false;
        }
        let server = |i: usize| -> &Server {
            if i == s {
                &src
            } else if i == t {
                &dst
            } else {
                &self.hosts[i].server
            }
        };
        let eligible: Vec<usize> = (0..self.hosts.len()).filter(|i| self.hosts[*i].eligible).collect();
        eligible.iter().all(|&lost| {
            let others: Vec<usize> = eligible.iter().copied().filter(|i| *i != lost).collect();
            let mut reserved: Vec<Reserved> = others.iter().map(|i| self.hosts[*i].reserved.clone()).collect();
            let lost_server = server(lost);
            let mut guests: Vec<&str> =
                lost_server.domains.iter().filter(|d| d.kind == DomainKind::Guest).map(|d| d.name.as_str()).collect();
            guests.sort_unstable();
            guests.iter().all(|g| {
                let candidates: Vec<(&Server, &Reserved)> =
                    others.iter().map(|i| server(*i)).zip(reserved.iter()).collect();
                match choose_target(lost_server, g, &candidates) {
                    Ok(choice) => {
                        if let Some(k) = others.iter().position(|i| server(*i).name == choice.target) {
                            reserved[k].add(&choice.binding);
                        }
                        true
                    }
                    Err(_) => false,
                }
            })
        })
    }

    fn movable(&self, host: usize, g: &Guest) -> bool {
        self.rules.get(&g.name).is_none_or(|r| r.frozen.is_none()) && self.hosts[host].eligible
    }

    fn room(&self, i: usize) -> bool {
        let h = &self.hosts[i];
        h.eligible && h.in_flight < self.settings.host_concurrency.max(1)
    }

    /// Runs the full preflight of `guest` from `s` to `t` on the hosts as they stand.
    fn check(&self, guest: &str, s: usize, t: usize) -> Result<Binding, Vec<Violation>> {
        let (src, dst) = (&self.hosts[s], &self.hosts[t]);
        let report = preflight(&MigrationQuery {
            source: &src.server,
            target: &dst.server,
            domain: guest,
            new_name: None,
            target_reserved: dst.reserved,
        });
        match report.binding {
            Some(b) if report.errors.is_empty() => Ok(b),
            _ => Err(report.errors),
        }
    }

    /// Moves `guest` from `s` to `t` with `binding` in the working copy.
    fn apply(&mut self, guest: &str, s: usize, t: usize, binding: &Binding) -> Result<(), String> {
        let gi = self.hosts[s].guests.iter().position(|g| g.name == guest).ok_or("guest not on its host")?;
        let mut dst = self.hosts[t].server.clone().into_owned();
        let mut src = self.hosts[s].server.clone().into_owned();
        let (domain, _, _) = src.unbind_domain(guest).ok_or("guest not bound on its host")?;
        dst.bind_domain(domain, binding).map_err(|e| e.to_string())?;
        let g = self.hosts[s].guests.remove(gi);
        for (i, sign) in [(s, -1.0), (t, 1.0)] {
            if self.hosts[i].eligible {
                let (c, m) = (self.hosts[i].cpu(), self.hosts[i].mem());
                self.sums.add(c, m, -1.0);
            }
            let h = &mut self.hosts[i];
            h.busy += sign * g.busy;
            if sign > 0.0 {
                h.mem_used += g.memory;
                h.free_memory = h.free_memory.saturating_sub(g.memory);
                h.free_strands = h.free_strands.saturating_sub(g.strands);
            } else {
                h.mem_used = h.mem_used.saturating_sub(g.memory);
                h.free_memory += g.memory;
                h.free_strands += g.strands;
            }
            if self.hosts[i].eligible {
                let (c, m) = (self.hosts[i].cpu(), self.hosts[i].mem());
                self.sums.add(c, m, 1.0);
            }
        }
        self.hosts[s].server = std::borrow::Cow::Owned(src);
        self.hosts[t].server = std::borrow::Cow::Owned(dst);
        // The moved guest's cost is now that of leaving its new host.
        let p = self.settings.precopy;
        let moved = guest_of(&self.hosts[t].server, guest, &p).ok_or("moved guest not on its target")?;
        let at = self.hosts[t].guests.partition_point(|x| x.name.as_str() < guest);
        self.hosts[t].guests.insert(at, moved);
        self.home.insert(guest.to_string(), t);
        Ok(())
    }

    fn record(&mut self, guest: &str, s: usize, t: usize, binding: Binding, reason: Reason) -> Result<Move, String> {
        let cost = self.hosts[s].guests.iter().find(|g| g.name == guest).map(|g| g.cost).unwrap_or_default();
        self.apply(guest, s, t, &binding)?;
        Ok(Move {
            domain: guest.to_string(),
            source: self.name(s).to_string(),
            target: self.name(t).to_string(),
            binding,
            cost,
            reason,
            imbalance_after_ppm: to_ppm(self.imbalance()),
        })
    }

    /// Hosts by how far their load is from the mean (weighted), highest first.
    fn by_deviation(&self) -> Vec<usize> {
        let (wc, wm) = self.weights();
        let n = self.sums.n.max(1.0);
        let (mc, mm) = ((self.sums.cpu.0 / n).max(1e-9), (self.sums.mem.0 / n).max(1e-9));
        let mut v: Vec<(f64, usize)> = (0..self.hosts.len())
            .filter(|i| self.hosts[*i].eligible)
            .map(|i| {
                let h = &self.hosts[i];
                (wc * (h.cpu() - mc) / mc + wm * (h.mem() - mm) / mm, i)
            })
            .collect();
        v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        v.into_iter().map(|(_, i)| i).collect()
    }

    /// Mandatory moves: mend every broken must-rule it can (every level).
    fn mend_rules(&mut self, plan: &mut Plan) {
        // Anti-affinity: on a host with several members, all but the first by name leave.
        let groups: Vec<(String, BTreeSet<String>)> = self
            .anti
            .iter()
            .filter(|(_, (s, _))| *s == Strength::Must)
            .map(|(n, (_, m))| (n.clone(), m.clone()))
            .collect();
        for (group, members) in groups {
            let mut seen: BTreeSet<usize> = BTreeSet::new();
            for m in &members {
                let Some(&h) = self.home.get(m) else { continue };
                if seen.insert(h) {
                    continue;
                }
                self.mend_one(m, h, None, &group, plan);
            }
        }
        // Affinity: members off the group's host (where most of them run) go there.
        let groups: Vec<(String, BTreeSet<String>)> = self
            .affinity
            .iter()
            .filter(|(_, (s, _))| *s == Strength::Must)
            .map(|(n, (_, m))| (n.clone(), m.clone()))
            .collect();
        for (group, members) in groups {
            let Some((to, _)) = majority_host(&members, |m| self.home.get(m).copied()) else { continue };
            for m in &members {
                let Some(&h) = self.home.get(m) else { continue };
                if h != to {
                    self.mend_one(m, h, Some(to), &group, plan);
                }
            }
        }
    }

    fn mend_one(&mut self, guest: &str, s: usize, to: Option<usize>, group: &str, plan: &mut Plan) {
        if plan.moves.len() >= self.settings.max_moves {
            plan.notes.push(format!("{guest} breaks group {group} (must); the plan is full"));
            return;
        }
        if let Some(why) = self.rules.get(guest).and_then(|r| r.frozen.clone()) {
            plan.notes.push(format!("{guest} breaks group {group} (must) but may not move now: {why}"));
            return;
        }
        let targets: Vec<usize> = match to {
            Some(t) => vec![t],
            None => self.by_deviation().into_iter().rev().collect(),
        };
        let mut why = Vec::new();
        for t in targets {
            if t == s || !self.room(t) || !self.room(s) {
                continue;
            }
            if to.is_none()
                && let Some(b) = self.breaks_must(guest, t)
            {
                why.push(format!("{}: {b}", self.name(t)));
                continue;
            }
            match self.check(guest, s, t) {
                Ok(binding) => {
                    match self.record(guest, s, t, binding, Reason::Rule { group: group.to_string() }) {
                        Ok(m) => plan.moves.push(m),
                        Err(e) => plan.notes.push(format!("{guest}: {e}")),
                    }
                    return;
                }
                Err(v) => why.push(format!("{}: {}", self.name(t), first(&v))),
            }
        }
        plan.notes.push(format!("{guest} breaks group {group} (must) and no host can take it: {}", why.join("; ")));
    }

    /// One greedy step: the best legal load move, if one qualifies.
    fn step(&mut self, min_gain: f64) -> Option<Move> {
        let order = self.by_deviation();
        let before = self.score();
        let breaks_before = self.should_breaks(None) as f64;
        let sources: Vec<usize> = order.iter().copied().filter(|i| self.room(*i)).take(SOURCES_MAX).collect();
        let targets: Vec<usize> = order.iter().rev().copied().filter(|i| self.room(*i)).take(TARGETS_MAX).collect();
        let mut cands: Vec<Candidate> = Vec::new();
        for &s in &sources {
            for (gi, g) in self.hosts[s].guests.iter().enumerate() {
                if !self.movable(s, g) || g.cost.downtime_ms > self.settings.max_downtime_ms {
                    continue;
                }
                for &t in &targets {
                    let h = &self.hosts[t];
                    if t == s || h.free_strands < g.strands || h.free_memory < g.memory {
                        continue;
                    }
                    let sums = self.sums_after(g, s, t);
                    let penalty = if self.affinity.is_empty() && self.anti.is_empty() {
                        breaks_before
                    } else {
                        self.should_breaks(Some((&g.name, t))) as f64
                    };
                    let after = self.spread_of(&sums) + SHOULD_PENALTY * penalty;
                    let gain = before - after;
                    let weight = 1.0 + g.cost.total_ms as f64 / COST_UNIT_MS;
                    if gain < min_gain * weight {
                        continue;
                    }
                    cands.push(Candidate { rank: gain / weight, score_after: after, guest: gi, source: s, target: t });
                }
            }
        }
        cands.sort_by(|a, b| {
            b.rank.total_cmp(&a.rank).then_with(|| {
                let (ga, gb) = (&self.hosts[a.source].guests[a.guest], &self.hosts[b.source].guests[b.guest]);
                ga.cost
                    .downtime_ms
                    .cmp(&gb.cost.downtime_ms)
                    .then(ga.name.cmp(&gb.name))
                    .then(self.name(a.target).cmp(self.name(b.target)))
            })
        });
        for c in cands.iter().take(PREFLIGHTS_PER_STEP) {
            let g = &self.hosts[c.source].guests[c.guest];
            let name = g.name.clone();
            if self.breaks_must(&name, c.target).is_some() {
                continue;
            }
            match self.check(&name, c.source, c.target) {
                Ok(binding)
                    if self.settings.n_plus_one && !self.n_plus_one_after(&name, c.source, c.target, &binding) =>
                {
                    self.n_plus_one_refusals += 1;
                }
                Ok(binding) => {
                    debug_assert!(c.score_after <= before);
                    return self.record(&name, c.source, c.target, binding, Reason::Load).ok();
                }
                Err(_) => self.refusals += 1,
            }
        }
        None
    }
}

fn first(v: &[Violation]) -> String {
    v.first().map_or_else(|| "refused".to_string(), ToString::to_string)
}

fn join(names: &[&String]) -> String {
    names.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

/// The host most of `members` run on (ties: lowest index, i.e. host name) and how many.
fn majority_host(members: &BTreeSet<String>, at: impl Fn(&str) -> Option<usize>) -> Option<(usize, usize)> {
    let mut per: BTreeMap<usize, usize> = BTreeMap::new();
    for m in members {
        if let Some(h) = at(m) {
            *per.entry(h).or_default() += 1;
        }
    }
    per.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
}

/// The imbalance (RB-01) of `input`'s hosts as they stand, in millionths.
pub fn imbalance_ppm(input: &Input<'_>) -> u32 {
    to_ppm(Planner::new(input).imbalance())
}

/// Plans the moves that rebalance `input` (see the module doc): mandatory moves first,
/// then, when the imbalance is at least the level's threshold, greedy load moves.
pub fn plan(input: &Input<'_>) -> Plan {
    let mut p = Planner::new(input);
    let level = p.settings.level;
    let mut plan = Plan {
        level: level.get(),
        imbalance_before_ppm: to_ppm(p.imbalance()),
        act_above_ppm: level.act_above().map(to_ppm),
        ..Plan::default()
    };
    p.mend_rules(&mut plan);
    match level.act_above() {
        None => plan.notes.push("level 1 plans only mandatory moves (broken must-rules)".to_string()),
        Some(act) if p.imbalance() < act && p.should_breaks(None) == 0 => plan.notes.push(format!(
            "imbalance {} is below level {level}'s threshold {}: no load moves",
            ppm_text(to_ppm(p.imbalance())),
            ppm_text(to_ppm(act))
        )),
        Some(_) => {
            while plan.moves.len() < p.settings.max_moves {
                match p.step(level.min_gain()) {
                    Some(m) => plan.moves.push(m),
                    None => {
                        plan.notes.push(format!(
                            "no further move gains level {level}'s minimum {} after its cost",
                            ppm_text(to_ppm(level.min_gain()))
                        ));
                        break;
                    }
                }
            }
            if plan.moves.len() >= p.settings.max_moves {
                plan.notes.push(format!("stopped at max_moves = {}", p.settings.max_moves));
            }
        }
    }
    plan.imbalance_after_ppm = to_ppm(p.imbalance());
    plan.preflight_refusals = p.refusals;
    if p.n_plus_one_refusals > 0 {
        plan.notes.push(format!("{} move(s) left out to keep N+1 (RB-03)", p.n_plus_one_refusals));
    }
    plan
}

/// Why [`make_room`] found no plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MakeRoomError {
    /// A name that is not a guest, or a host that is not an eligible target.
    Invalid(String),
    /// The guest is refused for rules no other move can change (LM-07, LM-03, ...).
    NotCapacity(Vec<Violation>),
    /// No sequence of at most [`MAKE_ROOM_MOVES_MAX`] legal moves makes it fit.
    NoSequence { tried: usize, violations: Vec<Violation> },
}

impl fmt::Display for MakeRoomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid(m) => f.write_str(m),
            Self::NotCapacity(v) => {
                let v: Vec<String> = v.iter().map(ToString::to_string).collect();
                write!(f, "moving other guests cannot help: {}", v.join("; "))
            }
            Self::NoSequence { tried, violations } => {
                let v: Vec<String> = violations.iter().map(ToString::to_string).collect();
                write!(
                    f,
                    "no sequence of at most {MAKE_ROOM_MOVES_MAX} legal moves makes room ({tried} sets of guests tried): {}",
                    v.join("; ")
                )
            }
        }
    }
}

/// The refusals moving other guests off the target can cure: CPUs (LM-06), memory
/// (LM-08, LM-09), console ports (LM-13) and names (OP-05).
fn capacity_only(v: &[Violation]) -> bool {
    v.iter().all(|x| {
        matches!(
            x.code,
            Code::TooFewFreeCpus
                | Code::TooFewFreeCores
                | Code::TooLittleFreeMemory
                | Code::MemoryBlockFit
                | Code::NoConsolePort
                | Code::MemoryFitUndecided
        )
    })
}

/// RB-05: the shortest sequence of legal moves of `target`'s other guests after which
/// `domain` fits on `target`, followed by `domain`'s own move. Each move passes the full
/// preflight in the state the earlier ones leave, and no must-rule breaks. Among the
/// sequences of the least length, the one with the least total migration time wins
/// (then by name). Only the target's own guests are moved, each once, to a host where
/// it fits directly; chains through third hosts are not searched.
pub fn make_room(input: &Input<'_>, domain: &str, target: &str) -> Result<Plan, MakeRoomError> {
    let base = Planner::new(input);
    let s =
        *base.home.get(domain).ok_or_else(|| MakeRoomError::Invalid(format!("{domain} is not a guest of any host")))?;
    let t = *base.by_name.get(target).ok_or_else(|| MakeRoomError::Invalid(format!("{target} is not a host")))?;
    if s == t {
        return Err(MakeRoomError::Invalid(format!("{domain} already runs on {target}")));
    }
    if !base.hosts[t].eligible {
        return Err(MakeRoomError::Invalid(format!("{target} takes no guests now (not Up, or in maintenance)")));
    }
    if let Some(why) = base.rules.get(domain).and_then(|r| r.frozen.clone()) {
        return Err(MakeRoomError::Invalid(format!("{domain} may not move now: {why}")));
    }
    let mut plan = Plan {
        level: base.settings.level.get(),
        imbalance_before_ppm: to_ppm(base.imbalance()),
        act_above_ppm: base.settings.level.act_above().map(to_ppm),
        ..Plan::default()
    };
    let violations = match base.check(domain, s, t) {
        Ok(binding) => {
            let mut p = base;
            plan.moves.push(p.record(domain, s, t, binding, Reason::Guest).map_err(MakeRoomError::Invalid)?);
            plan.imbalance_after_ppm = to_ppm(p.imbalance());
            plan.notes.push(format!("{domain} fits on {target} as it is: no other move needed"));
            return Ok(plan);
        }
        Err(v) => v,
    };
    if !capacity_only(&violations) {
        return Err(MakeRoomError::NotCapacity(violations));
    }
    // A must-rule that only a guest moving away breaks is checked once the set is gone.
    let blocking_rule = base.breaks_must(domain, t);
    // Guests of the target that may leave, smallest first.
    let mut movable: Vec<Guest> = base.hosts[t]
        .guests
        .iter()
        .filter(|g| base.rules.get(&g.name).is_none_or(|r| r.frozen.is_none()))
        .cloned()
        .collect();
    movable.sort_by(|a, b| a.cost.total_ms.cmp(&b.cost.total_ms).then(a.name.cmp(&b.name)));
    let mut tried = 0usize;
    for k in 1..=MAKE_ROOM_MOVES_MAX.min(movable.len()) {
        let mut best: Option<(u64, Planner<'_, '_>, Vec<Move>)> = None;
        for set in combinations(movable.len(), k) {
            if tried >= MAKE_ROOM_TRIES_MAX {
                break;
            }
            tried += 1;
            let cost: u64 = set.iter().map(|i| movable[*i].cost.total_ms).sum();
            if best.as_ref().is_some_and(|b| b.0 <= cost) {
                continue;
            }
            // Cheap test first: would the guest fit with this set gone from the target?
            let freed: u64 = set.iter().map(|i| movable[*i].memory).sum();
            let strands: usize = set.iter().map(|i| movable[*i].strands).sum();
            let need = base.hosts[s].guests.iter().find(|g| g.name == domain).map(|g| (g.strands, g.memory));
            if let Some((ns, nm)) = need
                && (base.hosts[t].free_strands + strands < ns || base.hosts[t].free_memory + freed < nm)
            {
                continue;
            }
            let mut without = base.hosts[t].server.clone().into_owned();
            for i in &set {
                without.unbind_domain(&movable[*i].name);
            }
            let fits = preflight(&MigrationQuery {
                source: &base.hosts[s].server,
                target: &without,
                domain,
                new_name: None,
                target_reserved: base.hosts[t].reserved,
            })
            .ok();
            if !fits {
                continue;
            }
            if let Some((p, moves)) =
                place_each(input, &set.iter().map(|i| movable[*i].name.clone()).collect::<Vec<_>>(), t, domain)
                && p.breaks_must(domain, t).is_none()
            {
                best = Some((cost, p, moves));
            }
        }
        if let Some((_, mut p, moves)) = best {
            plan.moves = moves;
            match p.check(domain, s, t) {
                Ok(binding) => {
                    let m = p.record(domain, s, t, binding, Reason::Guest).map_err(MakeRoomError::Invalid)?;
                    plan.moves.push(m);
                }
                Err(v) => return Err(MakeRoomError::NoSequence { tried, violations: v }),
            }
            plan.imbalance_after_ppm = to_ppm(p.imbalance());
            return Ok(plan);
        }
    }
    if let Some(why) = blocking_rule {
        return Err(MakeRoomError::Invalid(format!("{domain} may not go to {target} (RB-03): {why}")));
    }
    Err(MakeRoomError::NoSequence { tried, violations })
}

/// Moves each of `guests` off `from`, in order, each to the eligible host (not `from`)
/// that leaves the lowest score, with the full preflight; `None` if one cannot go.
fn place_each<'a, 'b>(
    input: &'b Input<'a>,
    guests: &[String],
    from: usize,
    for_domain: &str,
) -> Option<(Planner<'a, 'b>, Vec<Move>)> {
    let mut p = Planner::new(input);
    let mut moves = Vec::new();
    for g in guests {
        let guest = p.hosts[from].guests.iter().find(|x| &x.name == g)?.clone();
        let mut options: Vec<(f64, usize)> = (0..p.hosts.len())
            .filter(|t| *t != from && p.hosts[*t].eligible)
            .filter(|t| p.hosts[*t].free_strands >= guest.strands && p.hosts[*t].free_memory >= guest.memory)
            .filter(|t| p.breaks_must(g, *t).is_none())
            .map(|t| (p.spread_of(&p.sums_after(&guest, from, t)), t))
            .collect();
        options.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let (binding, t) = options.iter().find_map(|(_, t)| p.check(g, from, *t).ok().map(|b| (b, *t)))?;
        let reason = Reason::MakeRoom { domain: for_domain.to_string() };
        moves.push(p.record(g, from, t, binding, reason).ok()?);
    }
    Some((p, moves))
}

/// All `k`-element index sets of `0..n`, in lexicographic order.
fn combinations(n: usize, k: usize) -> impl Iterator<Item = Vec<usize>> {
    let mut next: Option<Vec<usize>> = (k <= n).then(|| (0..k).collect());
    std::iter::from_fn(move || {
        let current = next.take()?;
        let mut c = current.clone();
        let mut i = k;
        while i > 0 {
            i -= 1;
            if c[i] < n - k + i {
                c[i] += 1;
                for j in i + 1..k {
                    c[j] = c[j - 1] + 1;
                }
                next = Some(c);
                break;
            }
        }
        Some(current)
    })
}

/// What a guest should grow to (UC-2, RB-06): its cores and memory in all afterwards.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Growth {
    /// Whole cores the guest holds afterwards (as `ldm set-core N`).
    pub cores: Option<u32>,
    /// Memory the guest holds afterwards, in bytes (as `ldm set-memory SIZE`).
    pub memory: Option<u64>,
}

impl fmt::Display for Growth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(c) = self.cores {
            parts.push(format!("cores={c}"));
        }
        if let Some(m) = self.memory {
            parts.push(format!("memory={}", crate::units::Size(m)));
        }
        f.write_str(&parts.join(" "))
    }
}

/// What `domain` needs beyond what it holds on `server` to reach `growth`: (whole cores,
/// bytes). A growth that shrinks or keeps a resource needs none of it.
fn growth_need(server: &Server, domain: &str, growth: &Growth) -> Result<(usize, u64), MakeRoomError> {
    let cpu = server.cpu_of(domain);
    let held_memory: u64 = server.memory_of(domain).iter().map(|r| r.size).sum();
    let cores = match growth.cores {
        None => 0,
        Some(_) if !cpu.whole_cores => {
            return Err(MakeRoomError::Invalid(format!(
                "{domain} holds strands, not whole cores; grow it with vcpus, which tern does not plan yet"
            )));
        }
        Some(n) => (n as usize).saturating_sub(cpu.cids.len()),
    };
    let memory = growth.memory.map_or(0, |m| crate::fit::granules(m).saturating_sub(held_memory));
    Ok((cores, memory))
}

/// Whether `server` (minus `reserved`, plus whatever `freed` gives back) has `need`
/// (whole cores, bytes) free.
fn has_room(server: &Server, reserved: &Reserved, need: (usize, u64), taken: Option<&Binding>) -> bool {
    let mut cores = server.free_cores(reserved).len();
    let mut memory: u64 = server.free_ranges(reserved).iter().map(|r| r.size).sum();
    if let Some(b) = taken {
        cores = cores.saturating_sub(if b.whole_cores { b.cids.len() } else { 0 });
        memory = memory.saturating_sub(b.memory.iter().map(|r| r.size).sum());
    }
    cores >= need.0 && memory >= need.1
}

/// RB-06 / UC-2: the fewest legal moves after which `domain` can grow to `growth`:
/// none if its host has the cores and memory free now; else the guest's own move to a
/// host that takes it and then has the room (preflight and fitting as any move), or
/// moves of its host's other guests away (as [`make_room`] does), whichever needs fewer
/// moves (then less migration time). The growth itself follows the plan (its notes say
/// how); memory added to a running guest may come in several blocks, so only the
/// amount counts.
pub fn grow(input: &Input<'_>, domain: &str, growth: &Growth) -> Result<Plan, MakeRoomError> {
    let base = Planner::new(input);
    let s =
        *base.home.get(domain).ok_or_else(|| MakeRoomError::Invalid(format!("{domain} is not a guest of any host")))?;
    if growth.cores.is_none() && growth.memory.is_none() {
        return Err(MakeRoomError::Invalid("name what to grow: cores=N and/or memory=SIZE".into()));
    }
    let host = base.name(s).to_string();
    let need = growth_need(&base.hosts[s].server, domain, growth)?;
    let mut plan = Plan {
        level: base.settings.level.get(),
        imbalance_before_ppm: to_ppm(base.imbalance()),
        imbalance_after_ppm: to_ppm(base.imbalance()),
        act_above_ppm: base.settings.level.act_above().map(to_ppm),
        ..Plan::default()
    };
    let how = |on: &str| format!("then grow {domain} on {on} to {growth} (ldm set-core / set-memory)");
    if has_room(&base.hosts[s].server, base.hosts[s].reserved, need, None) {
        plan.notes.push(format!("{domain} can grow in place on {host}: no move needed"));
        plan.notes.push(how(&host));
        return Ok(plan);
    }
    let frozen = base.rules.get(domain).and_then(|r| r.frozen.clone());
    // (a) The guest itself moves to a host that then has the room.
    let mut own: Option<(f64, usize, Binding)> = None;
    if frozen.is_none() {
        let guest = base.hosts[s].guests.iter().find(|g| g.name == domain).cloned();
        for t in (0..base.hosts.len()).filter(|t| *t != s && base.room(*t)) {
            if base.breaks_must(domain, t).is_some() {
                continue;
            }
            let Ok(binding) = base.check(domain, s, t) else { continue };
            if !has_room(&base.hosts[t].server, base.hosts[t].reserved, need, Some(&binding)) {
                continue;
            }
            let spread = guest.as_ref().map_or(0.0, |g| base.spread_of(&base.sums_after(g, s, t)));
            if own.as_ref().is_none_or(|(best, ..)| spread < *best) {
                own = Some((spread, t, binding));
            }
        }
    }
    // (b) Other guests leave its host: the smallest such set, cheapest first.
    let mut others: Option<(u64, Planner<'_, '_>, Vec<Move>)> = None;
    let movable: Vec<Guest> = base.hosts[s]
        .guests
        .iter()
        .filter(|g| g.name != domain && base.rules.get(&g.name).is_none_or(|r| r.frozen.is_none()))
        .cloned()
        .collect();
    let mut tried = 0usize;
    'sizes: for k in 1..=MAKE_ROOM_MOVES_MAX.min(movable.len()) {
        for set in combinations(movable.len(), k) {
            if tried >= MAKE_ROOM_TRIES_MAX {
                break 'sizes;
            }
            tried += 1;
            let cost: u64 = set.iter().map(|i| movable[*i].cost.total_ms).sum();
            if others.as_ref().is_some_and(|(best, ..)| *best <= cost) {
                continue;
            }
            let mut without = base.hosts[s].server.clone().into_owned();
            for i in &set {
                without.unbind_domain(&movable[*i].name);
            }
            if !has_room(&without, base.hosts[s].reserved, need, None) {
                continue;
            }
            let names: Vec<String> = set.iter().map(|i| movable[*i].name.clone()).collect();
            if let Some((p, moves)) = place_each(input, &names, s, domain) {
                others = Some((cost, p, moves));
            }
        }
        if others.is_some() {
            break;
        }
    }
    let own_cost = base.hosts[s].guests.iter().find(|g| g.name == domain).map_or(u64::MAX, |g| g.cost.total_ms);
    // The guest's own move wins unless the others' is a single, cheaper move.
    let prefer_own = match (&own, &others) {
        (Some(_), None) => true,
        (Some(_), Some((c, _, m))) => m.len() > 1 || *c > own_cost,
        _ => false,
    };
    match (own.filter(|_| prefer_own), others) {
        (Some((_, t, binding)), _) => {
            let mut p = base;
            let target = p.name(t).to_string();
            plan.moves.push(p.record(domain, s, t, binding, Reason::Guest).map_err(MakeRoomError::Invalid)?);
            plan.imbalance_after_ppm = to_ppm(p.imbalance());
            plan.notes.push(how(&target));
            Ok(plan)
        }
        (_, Some((_, p, moves))) => {
            plan.moves = moves;
            plan.imbalance_after_ppm = to_ppm(p.imbalance());
            plan.notes.push(how(&host));
            Ok(plan)
        }
        (None, None) => {
            let why = match frozen {
                Some(f) => format!("; {domain} itself may not move: {f}"),
                None => String::new(),
            };
            Err(MakeRoomError::NoSequence {
                tried,
                violations: vec![Violation {
                    rule: crate::preflight::Rule::Rb(6),
                    code: Code::TooFewFreeCores,
                    message: format!(
                        "{domain} needs {}; no host takes it with that room, and moving at most \
                         {MAKE_ROOM_MOVES_MAX} of {host}'s other guests frees too little{why}",
                        [
                            (need.0 > 0).then(|| format!("{} more core(s)", need.0)),
                            (need.1 > 0).then(|| format!("{} more memory", crate::units::Size(need.1))),
                        ]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" and ")
                    ),
                }],
            })
        }
    }
}
