//! The workload client: a turmoil client that talks to the agents over mutual TLS,
//! as `ternctl` and other agents do, and records every acknowledgement it gets
//! ([`crate::history`]).
//!
//! Actions (weights in [`WorkloadOptions`]):
//! - **migrate** / **dry run**: `Migration.Migrate` on the source's agent: the real
//!   coordinator (Prepare on the target, a Raft reservation, transfer, commit or roll
//!   back) with a stream of progress;
//! - **cancel**: `Migration.Cancel` of a running migration (OP-09), at any agent;
//! - **reservation cycle**: raw reservation traffic through Raft, as the coordinator
//!   proposes it: `BeginOperation`, `Reserve` of a binding chosen by
//!   `tern_model::preflight` against a member's replicated inventory minus
//!   `State::reserved_on` (sometimes deliberately ignoring the reservations, so that
//!   the state machine must arbitrate), `Renew`s, then a commit (dry runs only: a
//!   real move belongs to the hypervisors), an abort, a release, or nothing at all
//!   (the lease must expire).
//!
//! Evacuation (UC-1) is not exposed over gRPC yet; when it is, it becomes one more
//! action here. The client reads "its" member's state directly (a harness shortcut for
//! a `ListDevices` call): it picks a random running member, which may be stale.

use crate::cluster::{CLIENT, Phase, Shared};
use crate::history::{Ack, MigrationEnd, MigrationRecord};
use crate::rng::SimRng;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tern_agent::raft_net::{decode, encode};
use tern_agent::transport::{Channels, ClientSettings};
use tern_model::{MigrationQuery, Reserved, preflight};
use tern_proto::v1 as pb;
use tern_raft_store::{
    AbortOutcome, Command, OperationKind, Outcome, Phase as OpPhase, Profile, Rejection, Request, State,
};
use tonic::Code;

/// The user the workload migrates as (OP-04) and its password.
pub const USER: &str = "chaos";
pub const PASSWORD: &str = "chaos-password";
/// The actor written on the workload's own proposals.
pub const ACTOR: &str = "user:chaos";
/// How often, once the faults stop, the workload looks for its own orphaned operations.
pub const CLEAN_UP_EVERY: Duration = Duration::from_secs(2);
/// How many times an abort is tried before the workload gives up on it.
pub const ABORT_ATTEMPTS_MAX: u32 = 20;
/// The longest wait for the next event of a migration stream.
pub const EVENT_WAIT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug)]
pub struct WorkloadOptions {
    /// Pause between two actions (ms, uniform).
    pub pause_ms: (u64, u64),
    /// Actions running at once, at most.
    pub in_flight_max: usize,
    /// Relative weights: migrate, dry run, cancel, reservation cycle, evacuate and
    /// restore a host, resize a guest where it runs (UC-2, RB-06).
    pub weights: [u64; 6],
    /// Lease of the raw reservations (ms, uniform).
    pub lease_ms: (u64, u64),
    /// Migrations asked for at fixed times (a scenario's workload).
    pub script: Vec<ScriptedMigration>,
    /// Resizes asked for at fixed times (a scenario's workload).
    pub resizes: Vec<ScriptedResize>,
    /// Commands proposed once, as the chaos user, before anything else (a scenario's
    /// policy: the rebalancer's auto mode, a guest's groups).
    pub setup: Vec<Command>,
}

impl Default for WorkloadOptions {
    fn default() -> Self {
        Self {
            pause_ms: (200, 1500),
            in_flight_max: 4,
            weights: [4, 2, 1, 5, 1, 2],
            lease_ms: (2000, 8000),
            script: vec![],
            resizes: vec![],
            setup: vec![],
        }
    }
}

impl WorkloadOptions {
    /// Only the scripted migrations, no random actions.
    pub fn scripted(script: Vec<ScriptedMigration>) -> Self {
        Self { weights: [0; 6], script, ..Self::default() }
    }
}

/// `migrate-domain [-n] domain target`, asked `after_ms` after the faults begin.
#[derive(Clone, Debug)]
pub struct ScriptedMigration {
    pub after_ms: u64,
    pub domain: String,
    pub target: String,
    pub dry_run: bool,
}

/// `add-core N domain` (UC-2, RB-06), asked `after_ms` after the faults begin, of the
/// guest's own host's agent.
#[derive(Clone, Debug)]
pub struct ScriptedResize {
    pub after_ms: u64,
    pub domain: String,
    pub add_cores: u64,
}

/// The argon2 hash of [`PASSWORD`], made once per process (hashing is slow and
/// salted; the salt never changes what the simulation does).
fn password_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| tern_raft_store::hash_password(PASSWORD).expect("hashing a fixed password"))
}

/// Why a proposal got no acknowledgement.
#[derive(Debug)]
#[allow(dead_code)] // the reasons are for debugging (`{:?}`)
enum Failure {
    /// The state machine refused it (it is in the log, refused).
    Rejected(Rejection),
    /// No answer: it may or may not have been applied.
    Unknown(String),
}

struct Client {
    shared: Arc<Shared>,
    /// As a member (node certificate): the writes it proposes.
    channels: Channels,
    /// As the administrator (user certificate): migrations, cancels, evacuations.
    user_channels: Channels,
    leader: Mutex<Option<String>>,
    in_flight: AtomicUsize,
    /// One evacuation at a time.
    evacuating: std::sync::atomic::AtomicBool,
    /// Operations that running reservation cycles own.
    cycles: Mutex<BTreeSet<u64>>,
}

/// The workload client's software.
pub async fn run(shared: Arc<Shared>) -> turmoil::Result {
    let settings = |cert: &str| -> Result<ClientSettings, tern_tls::TlsError> {
        Ok(ClientSettings {
            tls: Some(shared.certs.files(cert).client_config()?),
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_millis(3000),
            dialer: Arc::new(crate::net::SimDialer),
        })
    };
    let channels = Channels::new(settings(CLIENT)?);
    let user_channels = Channels::new(settings(crate::cluster::CLIENT_USER)?);
    let client = Arc::new(Client {
        shared: shared.clone(),
        channels,
        user_channels,
        leader: Mutex::new(None),
        in_flight: 0.into(),
        evacuating: false.into(),
        cycles: Mutex::default(),
    });
    let mut rng = SimRng::derive(shared.seed, "workload");
    while shared.phase() < Phase::Faults {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.add_user(&mut rng).await;
    let opts = shared.opts.workload.clone();
    for command in opts.setup.clone() {
        client.propose_until_taken(&mut rng, command).await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for s in opts.script.clone() {
        let c = client.clone();
        let mut task_rng = SimRng::new(rng.next_u64());
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(s.after_ms)).await;
            c.migrate(&mut task_rng, s.dry_run, Some((s.domain, s.target))).await;
        });
    }
    for r in opts.resizes.clone() {
        let c = client.clone();
        let mut task_rng = SimRng::new(rng.next_u64());
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(r.after_ms)).await;
            let req = pb::ResizeRequest {
                domain: r.domain.clone(),
                cores_verb: "add".into(),
                cores: r.add_cores,
                ..Default::default()
            };
            c.send_resize(&mut task_rng, req, Some(&r.domain)).await;
        });
    }
    let random = opts.weights.iter().sum::<u64>() > 0;
    while random && shared.phase() == Phase::Faults {
        tokio::time::sleep(Duration::from_millis(rng.between(opts.pause_ms.0, opts.pause_ms.1))).await;
        while tasks.try_join_next().is_some() {}
        if client.in_flight.load(Ordering::SeqCst) >= opts.in_flight_max || shared.phase() != Phase::Faults {
            continue;
        }
        let action = rng.weighted(&opts.weights);
        let c = client.clone();
        let task_rng = SimRng::new(rng.next_u64());
        client.in_flight.fetch_add(1, Ordering::SeqCst);
        tasks.spawn(async move {
            let mut rng = task_rng;
            match action {
                0 => c.migrate(&mut rng, false, None).await,
                1 => c.migrate(&mut rng, true, None).await,
                2 => c.cancel(&mut rng).await,
                3 => c.reservation_cycle(&mut rng).await,
                4 => c.evacuate_and_restore(&mut rng).await,
                _ => c.resize(&mut rng).await,
            }
            c.in_flight.fetch_sub(1, Ordering::SeqCst);
        });
    }
    // Heal: let what runs finish (each action bounds its own waits) while ending what
    // lost answers left open.
    loop {
        client.clean_up(&mut rng).await;
        if let Ok(None) = tokio::time::timeout(CLEAN_UP_EVERY, tasks.join_next()).await {
            break;
        }
    }
    for _ in 0..3 {
        client.clean_up(&mut rng).await;
        tokio::time::sleep(CLEAN_UP_EVERY).await;
    }
    Ok(())
}

impl Client {
    fn now_ms(&self) -> u64 {
        self.shared.wall_ms()
    }

    /// The state of a random running member (possibly stale), as the client sees it.
    fn view(&self, rng: &mut SimRng) -> Option<State> {
        let running: Vec<usize> = self.shared.hosts.iter().filter(|h| h.raft().is_some()).map(|h| h.index).collect();
        let i = *rng.pick(&running)?;
        Some(self.shared.hosts[i].state().snapshot())
    }

    fn channel(&self, addr: &str) -> Option<tonic::transport::Channel> {
        self.channels.get(addr).ok()
    }

    fn user_channel(&self, addr: &str) -> Option<tonic::transport::Channel> {
        self.user_channels.get(addr).ok()
    }

    fn count(&self, what: impl Into<String>) {
        self.shared.history().count(what);
    }

    /// Proposes `command` at the leader (following hints), as an agent forwards a
    /// write. Retries only where the request surely was not applied (a hint to go
    /// elsewhere, or no connection), so an ambiguous failure is never written twice.
    async fn propose(&self, rng: &mut SimRng, command: Command) -> Result<(Outcome, u64), Failure> {
        let name = command.name();
        let request = Request { proposed_at_ms: self.now_ms(), actor: ACTOR.into(), from: String::new(), command };
        let bytes = encode(&request).map_err(|e| Failure::Unknown(e.to_string()))?;
        let mut order: Vec<String> = self.shared.hosts.iter().map(|h| h.address()).collect();
        rng.shuffle(&mut order);
        if let Some(l) = self.leader.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            order.insert(0, l);
        }
        let mut last = String::from("no member answered");
        for _ in 0..4 {
            let Some(addr) = (!order.is_empty()).then(|| order.remove(0)) else { break };
            let Some(ch) = self.channel(&addr) else { continue };
            let reply = pb::cluster_client::ClusterClient::new(ch)
                .propose(self.channels.request(pb::ProposeRequest { request: bytes.clone() }))
                .await;
            match reply {
                Ok(r) => {
                    let r = r.into_inner();
                    *self.leader.lock().unwrap_or_else(|p| p.into_inner()) = Some(addr);
                    let answer: Result<Outcome, Rejection> =
                        decode(&r.response).map_err(|e| Failure::Unknown(format!("undecodable answer: {e}")))?;
                    return match answer {
                        Ok(outcome) => {
                            self.count(format!("{name}:ok"));
                            Ok((outcome, r.log_index))
                        }
                        Err(rej) => {
                            self.count(format!("{name}:rejected:{}", rej.code));
                            Err(Failure::Rejected(rej))
                        }
                    };
                }
                Err(s) if s.code() == Code::FailedPrecondition => {
                    last = s.message().to_string();
                    if let Some(hint) = tern_agent::convert::leader_address(&s) {
                        order.retain(|a| *a != hint);
                        order.insert(0, hint);
                    }
                }
                Err(s) if s.code() == Code::Unavailable && never_sent(&s) => {
                    last = s.message().to_string();
                }
                Err(s) => {
                    self.count(format!("{name}:unknown"));
                    return Err(Failure::Unknown(format!("{}: {}", s.code(), s.message())));
                }
            }
        }
        self.count(format!("{name}:unavailable"));
        Err(Failure::Unknown(last))
    }

    fn ack(&self, log_index: u64, ack: Ack) {
        let at = self.now_ms();
        self.shared.history().ack(log_index, at, ack);
    }

    /// Registers the migrating user (OP-04), retrying while the cluster is busy.
    async fn add_user(&self, rng: &mut SimRng) {
        let command = Command::AddUser {
            name: USER.into(),
            password_hash: password_hash().to_string(),
            profiles: BTreeSet::from([Profile::LdomsManagement]),
            replace: true,
        };
        self.propose_until_taken(rng, command).await;
    }

    /// Proposes `command` until it is acknowledged (at most 50 tries, 500 ms apart).
    async fn propose_until_taken(&self, rng: &mut SimRng, command: Command) {
        for _ in 0..50 {
            if self.propose(rng, command.clone()).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A migration (or dry run) of `chosen` (domain, target), or of a random guest to a
    /// random other host, through the source's coordinator; waits for its report.
    async fn migrate(&self, rng: &mut SimRng, dry_run: bool, chosen: Option<(String, String)>) {
        let Some(view) = self.view(rng) else { return };
        let (domain, source, target) = match chosen {
            Some((domain, target)) => {
                let Some(source) = view.domain(&domain).map(|r| r.host.clone()) else { return };
                (domain, source, target)
            }
            None => {
                let guests: Vec<(String, String)> =
                    view.domains().iter().map(|(n, r)| (n.clone(), r.host.clone())).collect();
                let Some((domain, source)) = rng.pick(&guests).cloned() else { return };
                // Mostly a target that should take it (as the view sees it), sometimes any.
                let viable = viable_targets(&view, &domain, &source, self.now_ms());
                let targets: Vec<String> = if !viable.is_empty() && rng.chance(700) {
                    viable
                } else {
                    view.hosts().keys().filter(|h| **h != source).cloned().collect()
                };
                let Some(target) = rng.pick(&targets).cloned() else { return };
                (domain, source, target)
            }
        };
        let Some(addr) = view.host(&source).map(|h| h.address.clone()) else { return };
        let started_ms = self.now_ms();
        let end = match self.user_channel(&addr) {
            None => MigrationEnd::Unknown { error: format!("no channel to {addr}") },
            Some(ch) => {
                let req = pb::MigrateRequest {
                    domain: domain.clone(),
                    target: target.clone(),
                    new_name: String::new(),
                    user: USER.into(),
                    password: PASSWORD.into(),
                    dry_run,
                    plan_id: 0,
                    ticket: None,
                };
                follow_migration(pb::migration_client::MigrationClient::new(ch).migrate(req).await).await
            }
        };
        self.count(format!(
            "migrate{}:{}",
            if dry_run { "-dry-run" } else { "" },
            match &end {
                MigrationEnd::Reported { .. } => "reported",
                MigrationEnd::Refused { .. } => "refused",
                MigrationEnd::Unknown { .. } => "unknown",
            }
        ));
        let record = MigrationRecord { domain, source, target, dry_run, started_ms, ended_ms: self.now_ms(), end };
        self.shared.history().migrations.push(record);
    }

    /// Cancels a running migration (OP-09) through a random agent.
    async fn cancel(&self, rng: &mut SimRng) {
        let Some(view) = self.view(rng) else { return };
        let running: Vec<String> = view
            .operations()
            .values()
            .filter(|o| !o.phase.is_terminal() && o.actor != ACTOR)
            .filter_map(|o| match &o.kind {
                OperationKind::Migration { domain, .. } => Some(domain.clone()),
                _ => None,
            })
            .collect();
        let Some(domain) = rng.pick(&running).cloned() else { return };
        let addrs: Vec<String> = self.shared.hosts.iter().map(|h| h.address()).collect();
        let Some(ch) = rng.pick(&addrs).and_then(|a| self.user_channel(a)) else { return };
        let req = pb::CancelRequest { operation: "migration".into(), domain, ..Default::default() };
        let result = pb::migration_client::MigrationClient::new(ch).cancel(self.channels.request(req)).await;
        self.count(match result {
            Ok(_) => "cancel:ok".to_string(),
            Err(s) => format!("cancel:{:?}", s.code()),
        });
    }

    /// UC-2 (RB-06): a random guest gains or gives back a core or some memory through
    /// a random agent (which passes it on to the guest's host). Whatever the faults,
    /// the gain is reserved before it is bound, so the checker's "nothing
    /// double-booked" covers it.
    async fn resize(&self, rng: &mut SimRng) {
        let Some(view) = self.view(rng) else { return };
        let guests: Vec<String> = view.domains().keys().cloned().collect();
        let Some(domain) = rng.pick(&guests).cloned() else { return };
        let verb = ["add", "set", "remove"][rng.below(3) as usize].to_string();
        let mut req = pb::ResizeRequest { domain, ..Default::default() };
        if rng.chance(500) {
            (req.cores_verb, req.cores) = (verb, rng.between(1, 3));
        } else {
            (req.memory_verb, req.memory_bytes) = (verb, rng.between(1, 8) << 30);
        }
        self.send_resize(rng, req, None).await;
    }

    /// Sends a resize to a random agent, or with `home`, to that guest's host's agent.
    async fn send_resize(&self, rng: &mut SimRng, req: pb::ResizeRequest, home: Option<&str>) {
        let addrs: Vec<String> = match home.and_then(|d| self.view(rng)?.domain(d).map(|r| r.host.clone())) {
            Some(host) => self.shared.hosts.iter().filter(|h| h.name == host).map(|h| h.address()).collect(),
            None => self.shared.hosts.iter().map(|h| h.address()).collect(),
        };
        let Some(ch) = rng.pick(&addrs).and_then(|a| self.user_channel(a)) else { return };
        let result = pb::rebalance_client::RebalanceClient::new(ch).resize(self.channels.request(req)).await;
        self.count(match result {
            Ok(_) => "resize:ok".to_string(),
            Err(s) => format!("resize:{:?}", s.code()),
        });
    }

    /// Raw reservation traffic: begin, reserve, renew, then commit (dry runs),
    /// abort, release, or abandon.
    async fn reservation_cycle(&self, rng: &mut SimRng) {
        let Some(view) = self.view(rng) else { return };
        let Some(plan) = plan_reservation(&view, rng, self.now_ms()) else {
            self.count("reserve:no-plan");
            return;
        };
        let dry_run = rng.chance(500);
        let kind = OperationKind::Migration {
            domain: plan.domain.clone(),
            source: plan.source.clone(),
            target: plan.target.clone(),
            new_name: None,
            dry_run,
            plan: None,
        };
        let operation = match self.propose(rng, Command::BeginOperation { kind }).await {
            Ok((Outcome::OperationBegun { operation }, index)) => {
                self.ack(index, Ack::Begun { operation });
                operation
            }
            _ => return,
        };
        self.cycles.lock().unwrap_or_else(|p| p.into_inner()).insert(operation);
        self.cycle(rng, operation, plan, dry_run).await;
        self.cycles.lock().unwrap_or_else(|p| p.into_inner()).remove(&operation);
    }

    /// The rest of a reservation cycle, once `operation` has begun.
    async fn cycle(&self, rng: &mut SimRng, operation: u64, plan: Plan, dry_run: bool) {
        let lease_ms = rng.between(self.shared.opts.workload.lease_ms.0, self.shared.opts.workload.lease_ms.1);
        let reserve = Command::Reserve {
            operation,
            target: plan.target.clone(),
            source: plan.source.clone(),
            domain: plan.domain.clone(),
            binding: plan.binding.clone(),
            lease_ms,
        };
        let (reservation, token) = match self.propose(rng, reserve).await {
            Ok((Outcome::Reserved { reservation, token, .. }, index)) => {
                self.ack(index, Ack::Reserved { operation, reservation });
                (reservation, token)
            }
            Ok(_) => return,
            Err(_) => {
                let reason = "chaos: reserve refused".to_string();
                self.abort(rng, operation, AbortOutcome::Failed { reason }).await;
                return;
            }
        };
        for _ in 0..rng.below(3) {
            tokio::time::sleep(Duration::from_millis(rng.between(lease_ms / 4, lease_ms))).await;
            let _ = self.propose(rng, Command::Renew { reservation, token, lease_ms }).await;
        }
        match rng.below(10) {
            0..=3 if dry_run => {
                let commit = Command::CommitMigration {
                    operation,
                    reservation,
                    token,
                    downtime_ms: 0,
                    total_ms: 0,
                    notes: vec![],
                };
                if let Ok((_, index)) = self.propose(rng, commit).await {
                    self.ack(index, Ack::Committed { operation });
                }
            }
            0..=3 => {
                let _ = self.propose(rng, Command::Release { reservation, token }).await;
                self.abort(rng, operation, AbortOutcome::Cancelled).await;
            }
            4..=7 => {
                let outcome = match rng.below(3) {
                    0 => AbortOutcome::Cancelled,
                    1 => AbortOutcome::RolledBack { reason: "chaos: rolled back".into() },
                    _ => AbortOutcome::Failed { reason: "chaos: failed".into() },
                };
                self.abort(rng, operation, outcome).await;
            }
            _ => self.count("reserve:abandoned"), // the lease must expire
        }
    }

    /// UC-1: evacuates a random host through a random agent, waits, restores it.
    async fn evacuate_and_restore(&self, rng: &mut SimRng) {
        if self.evacuating.swap(true, Ordering::SeqCst) {
            return;
        }
        let names: Vec<String> = self.shared.hosts.iter().map(|h| h.name.clone()).collect();
        if let Some(host) = rng.pick(&names).cloned() {
            let outcome = self.host_call(rng, &host, true).await;
            self.count(format!("evacuate:{outcome}"));
            tokio::time::sleep(Duration::from_millis(rng.between(1000, 6000))).await;
            for _ in 0..3 {
                let outcome = self.host_call(rng, &host, false).await;
                self.count(format!("restore:{outcome}"));
                if outcome == "done" {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2000)).await;
            }
        }
        self.evacuating.store(false, Ordering::SeqCst);
    }

    /// `Hosts.Evacuate` (or `Restore`) of `host` at a random agent, read to its end:
    /// `done`, or what went wrong.
    async fn host_call(&self, rng: &mut SimRng, host: &str, evacuate: bool) -> String {
        let addrs: Vec<String> = self.shared.hosts.iter().map(|h| h.address()).collect();
        let Some(ch) = rng.pick(&addrs).and_then(|a| self.user_channel(a)) else { return "no-channel".into() };
        let req = pb::HostRequest { host: host.into(), user: USER.into(), password: PASSWORD.into() };
        let mut client = pb::hosts_client::HostsClient::new(ch);
        let call = if evacuate { client.evacuate(req).await } else { client.restore(req).await };
        let mut stream = match call {
            Ok(r) => r.into_inner(),
            Err(s) => return format!("{:?}", s.code()),
        };
        loop {
            match tokio::time::timeout(EVENT_WAIT * 3, stream.message()).await {
                Err(_) => return "silent".into(),
                Ok(Err(s)) => return format!("{:?}", s.code()),
                Ok(Ok(None)) => return "ended".into(),
                Ok(Ok(Some(pb::HostEvent { event: Some(pb::host_event::Event::Done(_)) }))) => return "done".into(),
                Ok(Ok(Some(_))) => {}
            }
        }
    }

    /// Ends `operation` (retrying, as a careful client does, until the cluster answers).
    async fn abort(&self, rng: &mut SimRng, operation: u64, outcome: AbortOutcome) {
        let phase = match &outcome {
            AbortOutcome::Cancelled => OpPhase::Cancelled,
            AbortOutcome::RolledBack { reason } => OpPhase::RolledBack { reason: reason.clone() },
            AbortOutcome::Failed { reason } => OpPhase::Failed { reason: reason.clone() },
        };
        for attempt in 0..ABORT_ATTEMPTS_MAX {
            match self.propose(rng, Command::AbortOperation { operation, outcome: outcome.clone() }).await {
                Ok((_, index)) => {
                    self.ack(index, Ack::Aborted { operation, phase });
                    return;
                }
                Err(Failure::Rejected(_)) => return, // it ended meanwhile
                Err(Failure::Unknown(_)) => {
                    tokio::time::sleep(Duration::from_millis(500 * (1 + u64::from(attempt)))).await;
                }
            }
        }
    }

    /// Ends the workload's own operations left open by an answer that never came
    /// (a `BeginOperation` applied while its reply was lost): they hold no
    /// reservation, so no lease would ever end them. Operations of running
    /// reservation cycles are theirs to end. One pass, over one member's view.
    async fn clean_up(&self, rng: &mut SimRng) {
        let Some(view) = self.view(rng) else { return };
        let live = self.cycles.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let open: Vec<u64> = view
            .operations()
            .values()
            .filter(|o| o.actor == ACTOR && !o.phase.is_terminal() && o.reservations.is_empty())
            .filter(|o| !live.contains(&o.id))
            .map(|o| o.id)
            .collect();
        for operation in open {
            let reason = "chaos: orphaned by a lost answer".to_string();
            self.abort(rng, operation, AbortOutcome::Failed { reason }).await;
        }
    }
}

/// The call failed before the request left: no connection could be made (turmoil
/// refuses a connection across a partition at once).
fn never_sent(s: &tonic::Status) -> bool {
    use std::error::Error;
    s.message().contains("connect") || s.source().is_some_and(|e| format!("{e:?}").contains("ConnectError"))
}

/// A reservation to ask for: a guest, its source, a target and a binding there.
struct Plan {
    domain: String,
    source: String,
    target: String,
    binding: tern_model::Binding,
}

/// Chooses a guest and a target the way a target agent would (preflight against the
/// replicated inventory minus the active reservations). One time in four it ignores
/// the reservations, so that racing claims reach the state machine.
fn plan_reservation(view: &State, rng: &mut SimRng, now_ms: u64) -> Option<Plan> {
    let guests: Vec<(String, String)> = view.domains().iter().map(|(n, r)| (n.clone(), r.host.clone())).collect();
    let (domain, source) = rng.pick(&guests).cloned()?;
    let source_inv = view.host(&source)?.inventory.clone()?;
    let mut targets: Vec<String> = view.hosts().keys().filter(|h| **h != source).cloned().collect();
    rng.shuffle(&mut targets);
    let blind = rng.chance(250);
    for target in targets {
        let Some(target_inv) = view.host(&target).and_then(|h| h.inventory.clone()) else { continue };
        let reserved = if blind { Reserved::default() } else { view.reserved_on(&target, now_ms) };
        let report = preflight(&MigrationQuery {
            source: &source_inv,
            target: &target_inv,
            domain: &domain,
            new_name: None,
            target_reserved: &reserved,
        });
        if let Some(binding) = report.binding.filter(|_| report.errors.is_empty()) {
            return Some(Plan { domain, source, target, binding });
        }
    }
    None
}

/// The hosts that should take `domain` from `source`, as `view` sees them.
fn viable_targets(view: &State, domain: &str, source: &str, now_ms: u64) -> Vec<String> {
    let Some(source_inv) = view.host(source).and_then(|h| h.inventory.as_ref()) else { return vec![] };
    view.hosts()
        .values()
        .filter(|h| h.name != source)
        .filter(|h| {
            h.inventory.as_ref().is_some_and(|target| {
                preflight(&MigrationQuery {
                    source: source_inv,
                    target,
                    domain,
                    new_name: None,
                    target_reserved: &view.reserved_on(&h.name, now_ms),
                })
                .ok()
            })
        })
        .map(|h| h.name.clone())
        .collect()
}

/// Reads a migration's event stream to its answer.
async fn follow_migration(
    call: Result<tonic::Response<tonic::Streaming<pb::MigrateEvent>>, tonic::Status>,
) -> MigrationEnd {
    let mut stream = match call {
        Ok(r) => r.into_inner(),
        Err(s) => return MigrationEnd::Unknown { error: format!("{:?}: {}", s.code(), s.message()) },
    };
    loop {
        match tokio::time::timeout(EVENT_WAIT, stream.message()).await {
            Err(_) => return MigrationEnd::Unknown { error: format!("no event for {EVENT_WAIT:?}") },
            Ok(Err(s)) => return MigrationEnd::Unknown { error: format!("{:?}: {}", s.code(), s.message()) },
            Ok(Ok(None)) => return MigrationEnd::Unknown { error: "the stream ended without an answer".into() },
            Ok(Ok(Some(ev))) => match ev.event {
                Some(pb::migrate_event::Event::Report(r)) => {
                    return MigrationEnd::Reported { operation: r.operation_id, dry_run: r.dry_run };
                }
                Some(pb::migrate_event::Event::Refused(r)) => {
                    return MigrationEnd::Refused { operation: r.operation_id };
                }
                _ => {}
            },
        }
    }
}
