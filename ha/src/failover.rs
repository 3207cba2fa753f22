//! HA-02..HA-06 on the leader: a lost host's failover, one round at a time.
//!
//! Each round reads the replicated state and moves every lost host one step:
//!
//! 1. A Lost host without a running failover gets one (`BeginOperation Failover`).
//!    A Fenced host never gets a new one: its failover began when it was lost.
//! 2. Lost: its server is fenced (HA-02) by the power fence configured for it; only a
//!    fence whose `status` confirmed the power off counts, and then the host is
//!    recorded Fenced (a compare-and-set on Lost, so a host heard again meanwhile is
//!    never marked fenced by a stale verdict). A failed fence is retried with a
//!    doubling delay. With no fence configured the guests wait for an admin's
//!    `ternctl host fence --confirm-off HOST`. Meanwhile the guests that count
//!    stopped by the host's own means ([`State::counts_stopped`]: its agent's
//!    isolation response and watchdog, and the control domain's failure-policy, HA-08)
//!    restart as in step 3; the others wait for the fence.
//! 3. Fenced, mode `restart` (HA-04/05): the guests still recorded on the host are
//!    planned by [`plan_restarts`] (priority order, the migration's preflight and
//!    exact fitting) against the Up hosts minus their active reservations; each
//!    placement is reserved through Raft, then its target starts it from shared
//!    storage and records it (`CommitRestart`) itself ([`start_here`]). A
//!    reservation the failover already holds is restarted first, so a new leader
//!    finishes what an old one began and nothing starts twice (the restart is
//!    idempotent under its reservation). What fits nowhere waits, planned again every
//!    round; the failover completes once only `none` guests remain.
//! 4. Fenced, mode `hand-off` (HA-06): the configured command gets the host and its
//!    guests as JSON on stdin; its exit status ends the failover (Done or Failed). An
//!    external cluster that then starts a guest elsewhere is followed by the state
//!    (an inventory report showing a fenced host's guest re-indexes it).
//!
//! The host returning (heard before it was fenced, or returned by an admin) ends its
//! failover in the state machine. Everything here is driven by the state and the
//! fence's answers; the round's own memory is only for retry delays and the report
//! `ternctl ha status` shows.

use crate::fence::{FenceOutcome, PowerFence};
use crate::restart::{RestartPlan, Waiting, plan_restarts};
use async_trait::async_trait;
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tern_cluster::{Cluster, Error, RestartRequest, agent_actor};
use tern_model::{DomainKind, DomainState, Reserved, Server};
use tern_raft_store::{Command, HaPriority, HostStatus, OperationKind, Outcome, RejectCode, State};
use tracing::{info, warn};

/// How long the target waits for its state to show the reservation it is asked to
/// start under (the leader committed it; this member may not have applied it yet).
pub const APPLY_WAIT_MS: u64 = 3_000;
/// Restarts of one failover in flight at once (each a Reserve, a start, a commit).
pub const RESTARTS_IN_FLIGHT_MAX: usize = 16;
/// The largest output of a hand-off command kept.
pub const HAND_OFF_OUTPUT_BYTES_MAX: usize = 4 * 1024;

/// Proves a lost host's server off (HA-02).
#[async_trait]
pub trait Fence: Send + Sync {
    /// What it is, for reports: the agent and the service processor it talks to.
    fn describe(&self) -> String;
    async fn fence(&self) -> FenceOutcome;
}

#[async_trait]
impl Fence for PowerFence {
    fn describe(&self) -> String {
        let agent =
            self.agent.file_name().map_or_else(|| self.agent.display().to_string(), |n| n.to_string_lossy().into());
        match self.ipport {
            Some(port) => format!("power fence {agent} at {}:{port}", self.ip),
            None => format!("power fence {agent} at {}", self.ip),
        }
    }

    async fn fence(&self) -> FenceOutcome {
        PowerFence::fence(self).await
    }
}

/// What the cluster does with a fenced host's guests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Restart them on other hosts (HA-04).
    Restart,
    /// Hand them to an external HA cluster (HA-06).
    HandOff(HandOff),
}

/// HA-06: the command that takes over a fenced host's guests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandOff {
    pub command: PathBuf,
    pub args: Vec<String>,
    pub deadline_ms: u64,
}

pub struct FailoverConfig {
    pub mode: Mode,
    /// The power fence of each host that has one.
    pub fences: BTreeMap<String, Arc<dyn Fence>>,
    /// The lease of each restart's reservation: it covers reserve, start and commit.
    pub lease_ms: u64,
    /// The delay before a failed fence is tried again; it doubles up to `fence_retry_max_ms`.
    pub fence_retry_ms: u64,
    pub fence_retry_max_ms: u64,
}

/// Where a host's fence stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum FenceState {
    /// Nothing can fence it: the guests wait for an admin to confirm it off.
    AwaitingFence {
        reason: String,
    },
    Fencing {
        attempt: u32,
    },
    Failed {
        attempts: u32,
        last: String,
        retry_at_ms: u64,
    },
    ConfirmedOff {
        by: String,
    },
    /// The host's status was already Fenced when this leader looked.
    Fenced,
}

impl FenceState {
    pub fn name(&self) -> &'static str {
        match self {
            Self::AwaitingFence { .. } => "awaiting fence",
            Self::Fencing { .. } => "fencing",
            Self::Failed { .. } => "fence failed",
            Self::ConfirmedOff { .. } => "confirmed off",
            Self::Fenced => "fenced",
        }
    }

    pub fn detail(&self) -> String {
        match self {
            Self::AwaitingFence { reason } => reason.clone(),
            Self::Fencing { attempt } => format!("round {attempt} of off then status"),
            Self::Failed { attempts, last, retry_at_ms } => {
                format!("{attempts} failed round(s); next at {retry_at_ms} ms; last: {last}")
            }
            Self::ConfirmedOff { by } => format!("status confirmed the power off ({by})"),
            Self::Fenced => "recorded fenced".into(),
        }
    }
}

/// One host's failover as this leader sees it (`ternctl ha status`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostFailover {
    pub host: String,
    pub operation: u64,
    pub fence: FenceState,
    pub fence_attempts: u32,
    /// `domain -> target`, restarted by this leader.
    pub restarted: Vec<String>,
    #[serde(skip)]
    pub waiting: Vec<Waiting>,
    pub never: Vec<String>,
    /// A lost host's guests that do not count stopped yet (HA-08), each with why: they
    /// wait for the fence.
    pub not_stopped: Vec<(String, String)>,
    /// HA-06: the hand-off command's result.
    pub handed_off: Option<String>,
}

/// The report shared with the status RPC while rounds run.
pub type Report = Arc<Mutex<BTreeMap<String, HostFailover>>>;

/// The leader's failover driver (see the module doc).
pub struct Failover {
    config: FailoverConfig,
    report: Report,
    /// Per host: failed fence rounds and when the next may run.
    retry: BTreeMap<String, (u32, u64)>,
}

/// What a round reads of the state, in one read.
struct Failing {
    host: String,
    status: HostStatus,
    operation: Option<u64>,
}

/// A reservation the failover holds, to start and commit.
#[derive(Clone, Debug)]
struct Held {
    reservation: u64,
    token: u64,
    domain: String,
    target: String,
}

/// What restarting one down host's guests needs, read at once.
struct RestartInput {
    status: HostStatus,
    lost: Server,
    held: Vec<Held>,
    /// The guests known stopped (all of a fenced host's), not yet reserved.
    guests: BTreeMap<String, HaPriority>,
    /// A lost host's guests that do not count stopped yet, each with why.
    not_stopped: Vec<(String, String)>,
    candidates: Vec<(Server, Reserved)>,
    addresses: BTreeMap<String, String>,
}

impl Failover {
    pub fn new(config: FailoverConfig, report: Report) -> Self {
        Self { config, report, retry: BTreeMap::new() }
    }

    fn update(&self, host: &str, operation: u64, change: impl FnOnce(&mut HostFailover)) {
        let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
        let entry = report.entry(host.to_string()).or_insert_with(|| HostFailover {
            host: host.to_string(),
            operation,
            fence: FenceState::Fenced,
            fence_attempts: 0,
            restarted: vec![],
            waiting: vec![],
            never: vec![],
            not_stopped: vec![],
            handed_off: None,
        });
        entry.operation = operation;
        change(entry);
    }

    /// One step for every lost or fenced host.
    pub async fn round(&mut self, c: &dyn Cluster) {
        let failing: Vec<Failing> = c.state().read(|s| {
            s.hosts()
                .values()
                .filter(|h| h.status.is_down())
                .map(|h| Failing { host: h.name.clone(), status: h.status, operation: running_failover(s, &h.name) })
                .collect()
        });
        {
            let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
            report.retain(|h, _| failing.iter().any(|f| &f.host == h && f.operation.is_some()));
        }
        self.retry.retain(|h, _| failing.iter().any(|f| &f.host == h && f.status == HostStatus::Lost));
        for f in failing {
            match (f.status, f.operation) {
                (HostStatus::Lost, None) => self.begin(c, &f.host).await,
                (HostStatus::Lost, Some(op)) => {
                    self.fence(c, &f.host, op).await;
                    // HA-08: guests that count stopped restart while the fence is pending.
                    if self.config.mode == Mode::Restart {
                        self.restart(c, &f.host, op).await;
                    }
                }
                (HostStatus::Fenced, Some(op)) => match self.config.mode.clone() {
                    Mode::Restart => self.restart(c, &f.host, op).await,
                    Mode::HandOff(h) => self.hand_off(c, &f.host, op, &h).await,
                },
                _ => {} // fenced, failover ended: nothing until an admin returns it
            }
        }
    }

    async fn begin(&self, c: &dyn Cluster, host: &str) {
        let kind = OperationKind::Failover { host: host.to_string() };
        match c.propose(&agent_actor(c), Command::BeginOperation { kind }).await {
            Ok(Outcome::OperationBegun { operation }) => {
                warn!(%host, operation, "HA: failover begins");
                self.update(host, operation, |_| {});
            }
            Ok(other) => warn!(%host, ?other, "BeginOperation answered oddly"),
            Err(e) => warn!(%host, error = %e, "beginning the failover failed; next round retries"),
        }
    }

    async fn fence(&mut self, c: &dyn Cluster, host: &str, op: u64) {
        let Some(fence) = self.config.fences.get(host).cloned() else {
            let reason = format!(
                "HA-02: no power fence is configured for {host} (ha.fence); its guests wait, but for those that \
                 count stopped (HA-08). Once its server is checked powered off: ternctl host fence --confirm-off {host}"
            );
            self.update(host, op, |r| r.fence = FenceState::AwaitingFence { reason });
            return;
        };
        let now = c.now_ms();
        let (failed, retry_at) = self.retry.get(host).copied().unwrap_or((0, 0));
        if now < retry_at {
            return;
        }
        self.update(host, op, |r| r.fence = FenceState::Fencing { attempt: failed + 1 });
        info!(%host, by = %fence.describe(), "HA-02: fencing");
        match fence.fence().await {
            FenceOutcome::ConfirmedOff { attempt } => {
                let by = format!("{} (attempt {attempt})", fence.describe());
                warn!(%host, %by, "HA-02: the server is confirmed powered off");
                self.retry.remove(host);
                self.update(host, op, |r| {
                    r.fence = FenceState::ConfirmedOff { by };
                    r.fence_attempts += attempt;
                });
                let command = Command::SetHostStatus {
                    host: host.into(),
                    status: HostStatus::Fenced,
                    expected: Some(HostStatus::Lost),
                };
                if let Err(e) = c.propose(&agent_actor(c), command).await {
                    warn!(%host, error = %e, "recording the fence failed; the next round fences again");
                }
            }
            FenceOutcome::NotConfirmed { attempts, last } => {
                let failed = failed + 1;
                let delay = self
                    .config
                    .fence_retry_ms
                    .saturating_mul(1u64 << (failed - 1).min(16))
                    .min(self.config.fence_retry_max_ms);
                let retry_at_ms = c.now_ms().saturating_add(delay);
                warn!(%host, %last, retry_in_ms = delay, "HA-02: the fence is not confirmed; nothing restarts");
                self.retry.insert(host.to_string(), (failed, retry_at_ms));
                self.update(host, op, |r| {
                    r.fence = FenceState::Failed { attempts: failed, last, retry_at_ms };
                    r.fence_attempts += attempts;
                });
            }
        }
    }

    /// Restarts the guests of `host` that are known stopped: all of them once it is
    /// Fenced; while it is only Lost, those that count stopped by its own means
    /// (HA-08). The failover completes only from Fenced.
    async fn restart(&self, c: &dyn Cluster, host: &str, op: u64) {
        let now = c.now_ms();
        let Some(input) = c.state().read(|s| restart_input(s, host, op, now)) else {
            warn!(%host, "no inventory of the down host is recorded; its guests cannot be planned");
            return;
        };
        let fenced = input.status == HostStatus::Fenced;
        let not_stopped = input.not_stopped.clone();
        self.update(host, op, |r| {
            if fenced && !matches!(r.fence, FenceState::ConfirmedOff { .. }) {
                r.fence = FenceState::Fenced;
            }
            r.not_stopped = not_stopped;
        });
        if !fenced && input.held.is_empty() && input.guests.is_empty() {
            return;
        }
        // What an earlier round (or leader) reserved first. Restarts run side by side,
        // at most RESTARTS_IN_FLIGHT_MAX at once: the plan gave each its own resources.
        stream::iter(&input.held)
            .for_each_concurrent(RESTARTS_IN_FLIGHT_MAX, |held| {
                self.start_and_commit(c, host, op, held, &input.addresses)
            })
            .await;
        let plan = plan_restarts(&input.lost, &input.guests, &input.candidates);
        stream::iter(&plan.restarts)
            .for_each_concurrent(RESTARTS_IN_FLIGHT_MAX, |placed| async {
                let reserve = Command::Reserve {
                    operation: op,
                    target: placed.target.clone(),
                    source: host.to_string(),
                    domain: placed.domain.clone(),
                    binding: placed.binding.clone(),
                    lease_ms: self.config.lease_ms,
                };
                match c.propose(&agent_actor(c), reserve).await {
                    Ok(Outcome::Reserved { reservation, token, .. }) => {
                        let held =
                            Held { reservation, token, domain: placed.domain.clone(), target: placed.target.clone() };
                        self.start_and_commit(c, host, op, &held, &input.addresses).await;
                    }
                    Ok(other) => warn!(%host, ?other, "Reserve answered oddly"),
                    Err(e) => {
                        warn!(%host, domain = %placed.domain, error = %e, "reserving a restart failed; replanning")
                    }
                }
            })
            .await;
        let RestartPlan { restarts, waiting, never } = plan;
        let done = fenced && restarts.is_empty() && input.held.is_empty() && waiting.is_empty();
        self.update(host, op, |r| {
            r.waiting = waiting;
            r.never = never.clone();
        });
        if done {
            let mut notes = Vec::new();
            if !never.is_empty() {
                notes.push(format!("HA-04: ha-priority none, not restarted: {}", never.join(", ")));
            }
            notes.push(format!("HA-04: every guest of {host} with a priority is placed"));
            match c.propose(&agent_actor(c), Command::CompleteOperation { operation: op, notes }).await {
                Ok(_) => info!(%host, operation = op, "HA: failover complete"),
                Err(e) => warn!(%host, error = %e, "completing the failover failed; next round retries"),
            }
        }
    }

    async fn start_and_commit(
        &self,
        c: &dyn Cluster,
        host: &str,
        op: u64,
        held: &Held,
        addresses: &BTreeMap<String, String>,
    ) {
        let req = RestartRequest {
            operation: op,
            reservation: held.reservation,
            token: held.token,
            domain: held.domain.clone(),
        };
        // The target starts the guest and records the restart itself (start_here), on
        // a task of its own there; through the RPC even when the target is this
        // member, so that a leadership change cannot cut it halfway.
        let started = match addresses.get(&held.target) {
            Some(addr) => c.peers().restart(addr, req).await,
            None => Err(Error::NotFound(format!("no address is recorded for {}", held.target))),
        };
        match started {
            Ok(_) => {
                warn!(%host, domain = %held.domain, target = %held.target, "HA-04: guest restarted");
                let line = format!("{} -> {}", held.domain, held.target);
                self.update(host, op, |r| r.restarted.push(line));
            }
            Err(e) => {
                warn!(%host, domain = %held.domain, target = %held.target, error = %e, "restarting failed");
                if matches!(&e, Error::Rejected(_) | Error::Conflict(_) | Error::InvalidInput(_)) {
                    // The target cannot take it: give the reservation back so it is planned again.
                    let release = Command::Release { reservation: held.reservation, token: held.token };
                    let _ = c.propose(&agent_actor(c), release).await;
                }
            }
        }
    }

    async fn hand_off(&self, c: &dyn Cluster, host: &str, op: u64, how: &HandOff) {
        let input = c.state().read(|s| hand_off_input(s, host, op));
        self.update(host, op, |r| r.fence = FenceState::Fenced);
        let result = run_hand_off(how, &input).await;
        let command = match &result {
            Ok(out) => Command::CompleteOperation {
                operation: op,
                notes: vec![clip_line(&format!("HA-06: handed off to {}: exit 0 {out}", how.command.display()))],
            },
            Err(e) => Command::AbortOperation {
                operation: op,
                outcome: tern_raft_store::AbortOutcome::Failed { reason: clip_line(&format!("HA-06: {e}")) },
            },
        };
        let line = match &result {
            Ok(_) => "exit 0".to_string(),
            Err(e) => e.clone(),
        };
        warn!(%host, result = %line, "HA-06: hand-off ran");
        self.update(host, op, |r| r.handed_off = Some(line));
        if let Err(e) = c.propose(&agent_actor(c), command).await {
            warn!(%host, error = %e, "recording the hand-off failed; the next round runs it again");
        }
    }
}

/// The running failover of `host`, if any.
pub fn running_failover(s: &State, host: &str) -> Option<u64> {
    s.operations()
        .values()
        .find(|o| !o.phase.is_terminal() && matches!(&o.kind, OperationKind::Failover { host: h } if h == host))
        .map(|o| o.id)
}

fn restart_input(s: &State, host: &str, op: u64, now: u64) -> Option<RestartInput> {
    let status = s.host(host)?.status;
    let lost = s.host(host)?.inventory.clone()?;
    let operation = s.operation(op)?;
    let held: Vec<Held> = operation
        .reservations
        .iter()
        .filter_map(|id| s.reservation(*id))
        .filter(|r| r.is_active(now))
        .map(|r| Held { reservation: r.id, token: r.token, domain: r.domain.clone(), target: r.target.clone() })
        .collect();
    let mut guests = BTreeMap::new();
    let mut not_stopped = Vec::new();
    for (name, rec) in s.domains() {
        // An awaited guest (`DomainRecord::awaiting`) left `host` by a move ldm may
        // have completed: it does not run there, so it is not restarted.
        if rec.host != host || rec.awaiting.is_some() || held.iter().any(|h| &h.domain == name) {
            continue;
        }
        match s.counts_stopped(host, name, now) {
            Ok(_) => {
                guests.insert(name.clone(), rec.ha_priority);
            }
            Err(why) if rec.ha_priority != HaPriority::Never => not_stopped.push((name.clone(), why)),
            Err(_) => {}
        }
    }
    Some(RestartInput {
        status,
        lost,
        held,
        guests,
        not_stopped,
        candidates: candidates(s, &[host], now),
        addresses: addresses(s),
    })
}

/// The hosts a guest may restart on: Up, with an inventory, not in `except`, each with
/// what its active reservations hold.
pub fn candidates(s: &State, except: &[&str], now: u64) -> Vec<(Server, Reserved)> {
    s.hosts()
        .values()
        .filter(|h| h.status == HostStatus::Up && !except.contains(&h.name.as_str()))
        .filter_map(|h| h.inventory.clone().map(|inv| (inv, s.reserved_on(&h.name, now))))
        .collect()
}

fn addresses(s: &State) -> BTreeMap<String, String> {
    s.hosts().values().map(|h| (h.name.clone(), h.address.clone())).collect()
}

/// The guests of `host` recorded on it, with their priorities.
pub fn guests_of(s: &State, host: &str) -> BTreeMap<String, HaPriority> {
    s.domains()
        .iter()
        .filter(|(_, r)| r.host == host && r.awaiting.is_none())
        .map(|(n, r)| (n.clone(), r.ha_priority))
        .collect()
}

/// HA-04 on the target: start the guest reservation `req.reservation` holds here,
/// bound with its binding, from shared storage, and record it (`CommitRestart`).
/// Everything is read from this member's replicated state, so a caller can name only
/// a reservation that exists: its operation must be a running failover, the guest
/// known stopped on its source (fenced, HA-02, or counted stopped, HA-08), its target
/// this host, its token the one given.
///
/// The target commits, not the leader, so that a guest never runs here unrecorded
/// for longer than it must: a commit the state machine refuses, or one that cannot
/// be made while a quarter of the lease is left, stops and unbinds the guest again
/// (the cluster expires the reservation at the lease's end and plans the guest anew;
/// this holds while members' clocks differ by less than a quarter of the lease).
/// `Ok(false)` when the guest was already restarted and recorded here.
pub async fn start_here(c: &dyn Cluster, req: RestartRequest) -> Result<bool, Error> {
    let mine = |s: &State| s.domain(&req.domain).is_some_and(|d| d.host == c.host());
    if c.state().read(|s| s.reservation(req.reservation).is_none() && mine(s)) {
        return Ok(false); // a repeated request whose answer was lost
    }
    let waited_from = c.now_ms();
    let r = loop {
        let found = c.state().read(|s| restart_checked(s, c.host(), &req, c.now_ms()))?;
        if let Some(found) = found {
            break found;
        }
        if c.now_ms().saturating_sub(waited_from) >= APPLY_WAIT_MS {
            return Err(Error::Unavailable(format!(
                "reservation {} is not in this member's state after {APPLY_WAIT_MS} ms",
                req.reservation
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let hv = c.hypervisor();
    let unavailable = |e: tern_hypervisor::HvError| Error::Unavailable(format!("{}: {e}", c.host()));
    let here = hv.inventory().await.map_err(unavailable)?;
    match here.domain(&r.name) {
        Some(d) if d.state == DomainState::Active => {} // started by an earlier attempt
        Some(_) => hv.start(&r.name).await.map_err(unavailable)?,
        None => {
            let mut guest = r.guest.clone();
            guest.state = DomainState::Bound;
            hv.bind(guest, &r.binding)
                .await
                .map_err(|e| Error::Conflict(format!("{} cannot bind {}: {e}", c.host(), r.name)))?;
            hv.start(&r.name).await.map_err(unavailable)?;
        }
    }
    info!(node = %c.host(), domain = %r.name, reservation = req.reservation, "HA-04: guest started here");
    let commit = Command::CommitRestart { operation: req.operation, reservation: req.reservation, token: req.token };
    loop {
        match c.propose(&agent_actor(c), commit.clone()).await {
            Ok(_) => return Ok(true),
            Err(_) if c.state().read(mine) => return Ok(true), // recorded meanwhile
            Err(Error::Rejected(rejection)) => {
                retract(c, &r.name, &rejection.to_string()).await;
                return Err(Error::Rejected(rejection));
            }
            Err(e) if c.now_ms().saturating_add(r.margin_ms) >= r.lease_expires_ms => {
                let why = format!("the restart could not be recorded before its lease ran short: {e}");
                retract(c, &r.name, &why).await;
                return Err(Error::Unavailable(format!("{}: {why}; the guest is stopped here again", c.host())));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Stops and unbinds a guest this host started but could not record.
async fn retract(c: &dyn Cluster, name: &str, why: &str) {
    warn!(node = %c.host(), domain = %name, %why, "HA-04: stopping the unrecorded restart");
    let hv = c.hypervisor();
    if let Err(e) = hv.stop(name).await {
        warn!(node = %c.host(), domain = %name, error = %e, "stopping it failed");
    }
    if let Err(e) = hv.unbind(name).await {
        warn!(node = %c.host(), domain = %name, error = %e, "unbinding it failed");
    }
}

/// A restart this host may start (see [`restart_checked`]).
struct Restarting {
    name: String,
    binding: tern_model::Binding,
    guest: tern_model::Domain,
    lease_expires_ms: u64,
    /// A quarter of the lease: the commit must be made before less than this is left.
    margin_ms: u64,
}

type Found = Option<Restarting>;

/// The checks of [`start_here`]; `Ok(None)` when the reservation is newer than this
/// member's state.
fn restart_checked(s: &State, me: &str, req: &RestartRequest, now: u64) -> Result<Found, Error> {
    let Some(r) = s.reservation(req.reservation) else {
        if req.reservation > s.meta().last_reservation_id {
            return Ok(None);
        }
        return Err(Error::NotFound(format!("reservation {} is released or expired", req.reservation)));
    };
    let refuse = |m: String| Err(Error::Rejected(tern_raft_store::Rejection::new(RejectCode::OperationMismatch, m)));
    if r.token != req.token {
        return Err(Error::Rejected(tern_raft_store::Rejection::new(
            RejectCode::StaleToken,
            format!("reservation {} has fencing token {}, not {}", r.id, r.token, req.token),
        )));
    }
    if r.operation != req.operation || r.target != me || r.domain != req.domain {
        return refuse(format!("reservation {} is for operation {} on {}", r.id, r.operation, r.target));
    }
    if !r.is_active(now.max(s.clock_ms())) {
        return Err(Error::Rejected(tern_raft_store::Rejection::new(
            RejectCode::LeaseExpired,
            format!("reservation {}'s lease ended at {} ms", r.id, r.lease_expires_ms),
        )));
    }
    let running = s.operation(r.operation).filter(|o| !o.phase.is_terminal());
    if !matches!(running.map(|o| &o.kind), Some(OperationKind::Failover { host }) if *host == r.source) {
        return refuse(format!("operation {} is not a running failover of {}", r.operation, r.source));
    }
    let source = s.host(&r.source).ok_or_else(|| Error::NotFound(format!("host {} is unknown", r.source)))?;
    if let Err(why) = s.counts_stopped(&r.source, &r.domain, now.max(s.clock_ms())) {
        return Err(Error::Rejected(tern_raft_store::Rejection::with_rule(
            RejectCode::HostStatus,
            tern_model::Rule::Ha(2),
            why,
        )));
    }
    if s.domain(&r.domain).map(|d| d.host.as_str()) != Some(r.source.as_str()) {
        return refuse(format!("{} is no longer recorded on {}", r.domain, r.source));
    }
    let guest = source
        .inventory
        .as_ref()
        .and_then(|i| i.domain(&r.domain))
        .filter(|d| d.kind == DomainKind::Guest)
        .cloned()
        .ok_or_else(|| Error::NotFound(format!("{}'s recorded inventory has no guest {}", r.source, r.domain)))?;
    Ok(Some(Restarting {
        name: r.binding.domain.clone(),
        binding: r.binding.clone(),
        guest,
        lease_expires_ms: r.lease_expires_ms,
        margin_ms: r.lease_expires_ms.saturating_sub(r.created_ms) / 4,
    }))
}

/// What the hand-off command reads on stdin.
#[derive(Serialize)]
struct HandOffInput {
    host: String,
    operation: u64,
    status: &'static str,
    guests: Vec<HandOffGuest>,
}

#[derive(Serialize)]
struct HandOffGuest {
    name: String,
    ha_priority: &'static str,
    cores: usize,
    memory_bytes: u64,
    vdisks: Vec<String>,
}

fn hand_off_input(s: &State, host: &str, op: u64) -> HandOffInput {
    let inventory = s.host(host).and_then(|h| h.inventory.as_ref());
    let guests = guests_of(s, host)
        .into_iter()
        .map(|(name, priority)| {
            let d = inventory.and_then(|i| i.domain(&name));
            let cpu = inventory.map(|i| i.cpu_of(&name));
            HandOffGuest {
                ha_priority: priority.as_str(),
                cores: cpu.map_or(0, |c| c.cids.len()),
                memory_bytes: inventory.map_or(0, |i| i.memory_of(&name).iter().map(|r| r.size).sum()),
                vdisks: d.map(|d| d.vdisks.iter().map(|v| v.volume.clone()).collect()).unwrap_or_default(),
                name,
            }
        })
        .collect();
    HandOffInput { host: host.to_string(), operation: op, status: "fenced", guests }
}

/// Runs the hand-off command with `input` as JSON on stdin, within its deadline.
async fn run_hand_off(how: &HandOff, input: &HandOffInput) -> Result<String, String> {
    let json = serde_json::to_vec(input).map_err(|e| format!("encoding the hand-off input: {e}"))?;
    let what = "hand-off command";
    let run =
        crate::process::run(what, &how.command, &how.args, &json, how.deadline_ms, HAND_OFF_OUTPUT_BYTES_MAX).await?;
    match run.code {
        Some(0) => Ok(run.output),
        code => Err(format!("{what} {} exited {code:?}: {}", how.command.display(), run.output)),
    }
}

/// One line within the state's text limit.
fn clip_line(s: &str) -> String {
    let one: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let mut end = one.len().min(tern_raft_store::limits::TEXT_BYTES_MAX);
    while !one.is_char_boundary(end) {
        end -= 1;
    }
    one[..end].to_string()
}

/// HA admission (vSphere's admission control, Ganeti's N+1): for each Up host, where
/// its guests would restart were it lost now, against the other Up hosts.
pub fn admission(s: &State, now: u64) -> Vec<(String, RestartPlan)> {
    s.hosts()
        .values()
        .filter(|h| h.status == HostStatus::Up)
        .filter_map(|h| {
            let inv = h.inventory.as_ref()?;
            let guests = guests_of(s, &h.name);
            if !inv.domains.iter().any(|d| d.kind == DomainKind::Guest) {
                return Some((h.name.clone(), RestartPlan::default()));
            }
            Some((h.name.clone(), plan_restarts(inv, &guests, &candidates(s, &[&h.name], now))))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! Which records a host loss restarts, on states built by applying commands.
    use super::*;
    use tern_raft_store::{AbortOutcome, Command, HostSpec, Outcome, Request};

    fn layout(name: &str) -> tern_model::Server {
        let dir = tern_hypervisor::layout::shipped_layouts_dir();
        tern_hypervisor::layout::load_layout(&dir.join(format!("{name}.toml"))).expect("seed layout")
    }

    fn apply(s: &mut State, index: &mut u64, command: Command) -> Outcome {
        *index += 1;
        let request = Request { proposed_at_ms: 1_000 + *index, actor: "test".into(), from: String::new(), command };
        s.apply(*index, &request).unwrap_or_else(|r| panic!("{r}"))
    }

    #[test]
    fn a_guest_awaiting_the_target_of_an_uncommitted_move_is_not_restarted_when_its_source_is_lost() {
        // Goal: HA-04 restarts only guests that run on the lost host; one whose source reported it gone after a migration the cluster did not commit (ldm may have moved it) is not among them.
        let (mut s, mut i) = (State::new(), 0);
        for server in [layout("m10-1-1"), layout("m10-1-2")] {
            let host = HostSpec { name: server.name.clone(), address: format!("{}:7400", server.name) };
            apply(&mut s, &mut i, Command::RegisterHost { host });
            apply(&mut s, &mut i, Command::ReportInventory { server });
        }
        assert!(guests_of(&s, "m10-1-1").contains_key("ldom1"));
        let kind = OperationKind::Migration {
            domain: "ldom1".into(),
            source: "m10-1-1".into(),
            target: "m10-1-2".into(),
            new_name: None,
            dry_run: false,
            plan: None,
        };
        let Outcome::OperationBegun { operation } = apply(&mut s, &mut i, Command::BeginOperation { kind }) else {
            panic!("not begun")
        };
        let outcome = AbortOutcome::RolledBack { reason: "its coordinator on m10-1-1 is gone; rolled back".into() };
        apply(&mut s, &mut i, Command::AbortOperation { operation, outcome });
        let mut source = layout("m10-1-1");
        source.unbind_domain("ldom1");
        apply(&mut s, &mut i, Command::ReportInventory { server: source });
        assert_eq!(s.domain("ldom1").and_then(|d| d.awaiting.as_deref()), Some("m10-1-2"));
        assert!(!guests_of(&s, "m10-1-1").contains_key("ldom1"));
    }
}
