//! The source's side: the whole migration, from `BeginOperation` to commit or rollback.
//!
//! Each migration is a `migration` span (its operation id, domain, target), with a child
//! span per phase: `begin` (BeginOperation), `prepare` (the target's Prepare, under which
//! the target's `reserve` and `receive` run), `transfer` (the copy, with its progress
//! records and lease renewals), `commit` (CommitMigration; `decide` when unconfirmed),
//! `finish` (the target told) or `abort`. They are plain `tracing` spans: the agent
//! carries them across its gRPC calls (issue 16), so one migration is one trace.

use crate::report::standard_notes;
use crate::{LEASE_MS, RENEW_EVERY_MS, TARGET_MISSES_MAX};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tern_cluster::{
    Cluster, Error, Finding, MigrateRequest, MigrationEvent, MigrationReport, PrepareRequest, Prepared, Stage,
    agent_actor,
};
use tern_hypervisor::{HvError, MigrateOut, MigrationOutcome, Progress};
use tern_model::{Binding, Rule, Server};
use tern_raft_store::{AbortOutcome, Command, Outcome, Phase, Progress as Step};
use tokio::sync::mpsc;
use tracing::{Instrument, Span, field, info, info_span, instrument, warn};

/// Where the events of one migration go (the client's stream).
pub type Events = mpsc::Sender<MigrationEvent>;

async fn emit(tx: &Events, event: MigrationEvent) {
    // A client that went away does not stop the migration: it runs to its end.
    let _ = tx.send(event).await;
}

fn progress(pct: u32, stage: Stage, round: u32) -> MigrationEvent {
    MigrationEvent::Progress { pct, stage, round }
}

/// `target` as a host name of the cluster or an agent address: (host, address).
pub(crate) fn resolve_target(c: &dyn Cluster, target: &str) -> Result<(String, String), Error> {
    c.state().read(|s| {
        s.host(target)
            .map(|h| (h.name.clone(), h.address.clone()))
            .or_else(|| s.hosts().values().find(|h| h.address == target).map(|h| (h.name.clone(), h.address.clone())))
            .ok_or_else(|| Error::NotFound(format!("no host or agent {target:?} in the cluster")))
    })
}

/// The operations this process coordinates right now. Recovery leaves them alone and
/// settles every other running operation whose source is this host: its coordinator
/// died with a previous process, or gave up (an abort it could not get through, a
/// `BeginOperation` whose answer was lost).
#[derive(Default)]
pub struct Registry {
    owned: std::sync::Mutex<Owned>,
}

#[derive(Default)]
struct Owned {
    operations: BTreeSet<u64>,
    /// Who asked to cancel each held operation (the actor its abort is recorded as).
    cancelled_by: BTreeMap<u64, String>,
    /// Domains with a `BeginOperation` in flight: the operation may be applied before
    /// its id is known here.
    beginning: BTreeMap<String, usize>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a coordinator of this process holds `operation` (or may be about to: a
    /// `BeginOperation` for `domain` has not been answered yet).
    pub fn owns(&self, operation: u64, domain: &str) -> bool {
        let owned = self.lock();
        owned.operations.contains(&operation) || owned.beginning.contains_key(domain)
    }

    /// Records that `actor` asked to cancel `operation`, if this process holds it.
    fn cancel_asked(&self, operation: u64, actor: &str) {
        let mut owned = self.lock();
        if owned.operations.contains(&operation) {
            owned.cancelled_by.insert(operation, actor.to_string());
        }
    }

    /// Who asked to cancel `operation`, if anyone did.
    fn canceller(&self, operation: u64) -> Option<String> {
        self.lock().cancelled_by.get(&operation).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Owned> {
        self.owned.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks a `BeginOperation` for `domain` in flight until the guard drops.
    pub(crate) fn beginning(&self, domain: &str) -> Held<'_> {
        *self.lock().beginning.entry(domain.to_string()).or_default() += 1;
        Held { registry: self, what: Hold::Beginning(domain.to_string()) }
    }

    /// Holds `operation` for this coordinator until the guard drops.
    pub(crate) fn hold(&self, operation: u64) -> Held<'_> {
        self.lock().operations.insert(operation);
        Held { registry: self, what: Hold::Operation(operation) }
    }
}

enum Hold {
    Beginning(String),
    Operation(u64),
}

/// What a coordinator holds in the [`Registry`]; released on drop, however it returns.
pub(crate) struct Held<'a> {
    registry: &'a Registry,
    what: Hold,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut owned = self.registry.lock();
        match &self.what {
            Hold::Operation(id) => {
                owned.operations.remove(id);
                owned.cancelled_by.remove(id);
            }
            Hold::Beginning(domain) => {
                if let Some(n) = owned.beginning.get_mut(domain) {
                    *n -= 1;
                    if *n == 0 {
                        owned.beginning.remove(domain);
                    }
                }
            }
        }
    }
}

/// Runs one migration (or dry run) of `req.domain` from this host; events go to `tx`.
#[instrument(
    name = "migration",
    skip_all,
    fields(node = %c.host(), domain = %req.domain, target = %req.target, dry_run = req.dry_run, operation = field::Empty)
)]
pub async fn migrate(
    c: Arc<dyn Cluster>,
    registry: Arc<Registry>,
    req: MigrateRequest,
    tx: Events,
) -> Result<(), Error> {
    if req.domain.is_empty() || req.target.is_empty() {
        return Err(Error::InvalidInput("a migration needs a domain and a target".into()));
    }
    let (target, target_addr) = resolve_target(c.as_ref(), &req.target)?;
    let source: Server = c.hypervisor().inventory().await.map_err(|e| Error::Unavailable(e.to_string()))?;
    if source.domain(&req.domain).is_none() {
        return Err(Error::NotFound(format!("LDom \"{}\" was not found", req.domain)));
    }
    if target == c.host() {
        return Err(Error::InvalidInput(format!("OP-01 {} is already on {target}", req.domain)));
    }
    let kind = tern_raft_store::OperationKind::Migration {
        domain: req.domain.clone(),
        source: c.host().to_string(),
        target: target.clone(),
        new_name: req.new_name.clone(),
        dry_run: req.dry_run,
        plan: req.plan,
    };
    let beginning = registry.beginning(&req.domain);
    let begun =
        c.propose(&agent_actor(c.as_ref()), Command::BeginOperation { kind }).instrument(info_span!("begin")).await;
    let operation = match begun {
        Ok(Outcome::OperationBegun { operation }) => operation,
        Ok(other) => return Err(Error::Internal(format!("BeginOperation answered {other:?}"))),
        // The state machine refused (LM-01, OP-01, OP-05, a running operation...): a
        // "no" for the user, printed like the target's refusals.
        Err(Error::Rejected(r)) => {
            emit(&tx, MigrationEvent::Refused { operation: 0, errors: vec![Finding::from(&r)] }).await;
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    let _held = registry.hold(operation);
    drop(beginning);
    Span::current().record("operation", operation);
    run_begun(c, registry.clone(), operation, target, target_addr, source, req, &tx).await
}

#[allow(clippy::too_many_arguments)]
async fn run_begun(
    c: Arc<dyn Cluster>,
    registry: Arc<Registry>,
    operation: u64,
    target: String,
    target_addr: String,
    source: Server,
    req: MigrateRequest,
    tx: &Events,
) -> Result<(), Error> {
    let tx = tx.clone();
    info!(operation, %target, dry_run = req.dry_run, "migration begun");
    emit(&tx, progress(0, Stage::Preparing, 0)).await;
    let prepare = PrepareRequest {
        operation,
        domain: req.domain.clone(),
        new_name: req.new_name.clone(),
        source: c.host().to_string(),
        source_server: source.clone(),
        user: req.user.clone(),
        password: req.password.clone(),
        dry_run: req.dry_run,
        lease_ms: LEASE_MS,
        ticket: req.ticket.clone(),
    };
    let prepared = c.peers().prepare(&target_addr, prepare).instrument(info_span!("prepare")).await;
    let (reservation, token, binding, warnings) = match prepared {
        Ok(Prepared::Reserved { reservation, token, binding, warnings }) => (reservation, token, binding, warnings),
        Ok(Prepared::Refused { errors, .. }) => {
            let reason = errors.first().map_or_else(String::new, Finding::to_string);
            abort(c.as_ref(), operation, AbortOutcome::Failed { reason }).await;
            emit(&tx, MigrationEvent::Refused { operation, errors }).await;
            return Ok(());
        }
        Err(e) => {
            abort(c.as_ref(), operation, AbortOutcome::Failed { reason: e.to_string() }).await;
            return Err(e);
        }
    };
    let plan = Plan {
        operation,
        reservation,
        token,
        domain: req.domain.clone(),
        new_name: binding.domain.clone(),
        target,
        target_addr,
        binding,
        warnings,
        registry,
    };
    if req.dry_run {
        // The hypervisor's own dry run (ldm: `migrate-domain -n`, ldmd's checks on the
        // target), its refusal passed on in its words with the rule they map to.
        let request = MigrateOut {
            domain: plan.domain.clone(),
            target: plan.target.clone(),
            new_name: Some(plan.new_name.clone()),
            binding: plan.binding.clone(),
            operation,
        };
        if let Err(e) = c.hypervisor().check_migrate_out(&request).instrument(info_span!("hypervisor_dry_run")).await {
            let message = e.to_string();
            abort(c.as_ref(), operation, AbortOutcome::Failed { reason: message.clone() }).await;
            let finding = Finding::new(e.rule(), "refused-by-hypervisor", message);
            emit(&tx, MigrationEvent::Refused { operation, errors: vec![finding] }).await;
            return Ok(());
        }
        let commit = commit_command(&plan, 0, 0, vec![]);
        let committed = c.propose(&agent_actor(c.as_ref()), commit).instrument(info_span!("commit")).await;
        if let Err(e) = committed {
            abort(c.as_ref(), operation, AbortOutcome::Failed { reason: e.to_string() }).await;
            return Err(e);
        }
        emit(&tx, MigrationEvent::Report(Box::new(report(&source, &plan, 0, 0, vec![], true)))).await;
        return Ok(());
    }
    transfer(c, source, plan, tx).await
}

struct Plan {
    operation: u64,
    reservation: u64,
    token: u64,
    domain: String,
    new_name: String,
    target: String,
    target_addr: String,
    binding: Binding,
    warnings: Vec<Finding>,
    /// Where a cancel records who asked for it ([`cancel`]).
    registry: Arc<Registry>,
}

/// Ends `operation` without committing, trying a few times. A refusal is final (the
/// operation has already ended: the state machine decided). If every attempt fails
/// the coordinator gives up: its lease expires, and this host's recovery, which
/// settles every running operation no coordinator holds, aborts it later.
#[instrument(name = "abort", skip_all, fields(operation = operation))]
pub(crate) async fn abort(c: &dyn Cluster, operation: u64, outcome: AbortOutcome) {
    abort_as(c, &agent_actor(c), operation, outcome).await
}

/// [`abort`] recorded as `actor`'s (the user who cancelled, OP-09).
async fn abort_as(c: &dyn Cluster, actor: &str, operation: u64, outcome: AbortOutcome) {
    let mut wait = RETRY_FIRST;
    for attempt in 1..=ABORT_ATTEMPTS_MAX {
        let command = Command::AbortOperation { operation, outcome: outcome.clone() };
        match c.propose(actor, command).await {
            Ok(_) => return,
            Err(Error::Rejected(r)) => {
                info!(operation, answer = %r, "the operation had already ended");
                return;
            }
            Err(e) => {
                warn!(operation, attempt, error = %e, "aborting the operation failed");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
    warn!(operation, "giving up the abort; recovery will settle the operation");
}

/// How often [`abort`] tries before leaving the operation to recovery.
pub const ABORT_ATTEMPTS_MAX: u32 = 5;
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// Whether `operation` ended Done, once the log has decided it.
///
/// Called when a `CommitMigration` was not confirmed (refused, or its answer lost on
/// the way back: it may be in the log all the same). The guest stays suspended until
/// the answer is known, because resuming it while the commit stands would run it on
/// two servers. The log decides: this member's applied state is read, and an
/// `AbortOperation` is proposed, which the state machine refuses if the commit (or a
/// lease expiry) got in first. Loops until the answer is known; the reservation's
/// lease bounds how long the operation can stay undecided in the log.
#[instrument(name = "decide", skip_all, fields(operation = operation))]
pub async fn decide(c: &dyn Cluster, operation: u64, why: &str) -> bool {
    let mut wait = RETRY_FIRST;
    loop {
        let phase = c.state().read(|s| s.operations().get(&operation).map(|op| op.phase.clone()));
        if let Some(p) = phase.filter(Phase::is_terminal) {
            info!(operation, phase = %p, "the operation's fate is in the log");
            return p == Phase::Done;
        }
        let outcome = AbortOutcome::RolledBack { reason: format!("commit not confirmed: {why}") };
        match c.propose(&agent_actor(c), Command::AbortOperation { operation, outcome }).await {
            Ok(_) => return false,
            // Already ended: this member will apply how.
            Err(Error::Rejected(_)) => tokio::time::sleep(RETRY_FIRST).await,
            Err(e) => {
                warn!(operation, error = %e, "cannot settle the operation yet; the guest stays suspended");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(RETRY_MAX);
            }
        }
    }
}

fn commit_command(plan: &Plan, downtime_ms: u64, total_ms: u64, notes: Vec<String>) -> Command {
    Command::CommitMigration {
        operation: plan.operation,
        reservation: plan.reservation,
        token: plan.token,
        downtime_ms,
        total_ms,
        notes,
    }
}

fn report(
    source: &Server,
    plan: &Plan,
    downtime_ms: u64,
    total_ms: u64,
    notes: Vec<String>,
    dry_run: bool,
) -> MigrationReport {
    MigrationReport {
        operation: plan.operation,
        domain: plan.domain.clone(),
        new_name: plan.new_name.clone(),
        source: source.name.clone(),
        target: plan.target.clone(),
        old_cids: source.cpu_of(&plan.domain).cids,
        new_cids: plan.binding.cids.clone(),
        old_console_port: source.domain(&plan.domain).and_then(|d| d.console.as_ref()).map(|c| c.port),
        new_console_port: plan.binding.console_port,
        downtime_ms,
        total_ms,
        notes,
        dry_run,
        old_memory: source.memory_of(&plan.domain),
        new_memory: plan.binding.memory.clone(),
        warnings: plan.warnings.clone(),
    }
}

/// The transfer with progress, lease renewal and a watch on the target; then commit
/// or roll back.
async fn transfer(c: Arc<dyn Cluster>, source: Server, plan: Plan, tx: Events) -> Result<(), Error> {
    let target_lost = Arc::new(AtomicBool::new(false));
    let result = match copy(&c, &plan, &tx, &target_lost).await {
        Ok(result) => result,
        Err(e) => {
            abort(c.as_ref(), plan.operation, AbortOutcome::Failed { reason: e.to_string() }).await;
            finish_target(c.as_ref(), &plan, false).await;
            return Err(e);
        }
    };
    match result {
        Ok(outcome) => {
            emit(&tx, progress(100, Stage::Committing, outcome.rounds)).await;
            let notes = standard_notes(outcome.downtime_ms);
            let unconfirmed = commit(c.as_ref(), &plan, &outcome, notes.clone()).await;
            if let Some(NotCommitted { why, settled }) = unconfirmed {
                finish_target(c.as_ref(), &plan, false).await;
                match settled {
                    // Never claim the guest runs on the source when it does not.
                    Some(settled) => {
                        let finding = Finding::new(
                            None,
                            "settled-by-hypervisor",
                            format!(
                                "commit not confirmed ({why}), but {settled}; the cluster's records follow the \
                                 servers' next inventory reports"
                            ),
                        );
                        emit(&tx, MigrationEvent::Refused { operation: plan.operation, errors: vec![finding] }).await;
                    }
                    None => {
                        let why = format!("commit not confirmed ({why}); rolled back");
                        undone(&tx, &plan, &source.name, false, &why).await;
                    }
                }
                return Ok(());
            }
            finish_target(c.as_ref(), &plan, true).await;
            info!(operation = plan.operation, "migration committed");
            let done = report(&source, &plan, outcome.downtime_ms, outcome.total_ms, notes, false);
            emit(&tx, MigrationEvent::Report(Box::new(done))).await;
            Ok(())
        }
        Err(e) => {
            let (outcome, message) = match (&e, target_lost.load(Ordering::SeqCst)) {
                (_, true) => {
                    let reason = format!("target {} stopped answering; rolled back", plan.target);
                    (AbortOutcome::RolledBack { reason: reason.clone() }, reason)
                }
                (HvError::Cancelled(_), false) => (AbortOutcome::Cancelled, e.to_string()),
                _ => (AbortOutcome::RolledBack { reason: e.to_string() }, e.to_string()),
            };
            // A cancel is recorded as the user's who asked for it; the rest as ours.
            let cancelled = matches!(e, HvError::Cancelled(_));
            let actor = plan.registry.canceller(plan.operation).filter(|_| cancelled);
            abort_as(c.as_ref(), &actor.unwrap_or_else(|| agent_actor(c.as_ref())), plan.operation, outcome).await;
            finish_target(c.as_ref(), &plan, false).await;
            undone(&tx, &plan, &source.name, cancelled, &message).await;
            Ok(())
        }
    }
}

/// The copy itself: recorded as Transferring, then the hypervisor's transfer with its
/// progress streamed and recorded, the lease renewed and the target watched. `Err` when
/// the transfer could not even be recorded; else how the copy ended.
#[instrument(name = "transfer", skip_all, fields(rounds = field::Empty, downtime_ms = field::Empty))]
async fn copy(
    c: &Arc<dyn Cluster>,
    plan: &Plan,
    tx: &Events,
    target_lost: &Arc<AtomicBool>,
) -> Result<Result<MigrationOutcome, HvError>, Error> {
    let actor = agent_actor(c.as_ref());
    let advance = |pct: u8| Command::AdvanceOperation {
        operation: plan.operation,
        token: Some(plan.token),
        progress: Step::Transferring { progress_pct: pct },
    };
    c.propose(&actor, advance(0)).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let renewer = tokio::spawn(renew_lease(c.clone(), plan.reservation, plan.token, stop_rx.clone()).in_current_span());
    // The watch's probes (one a second) stay out of the trace: its own task, no span.
    let watcher = tokio::spawn(watch_target(
        c.clone(),
        plan.target_addr.clone(),
        plan.domain.clone(),
        target_lost.clone(),
        stop_rx,
    ));
    let (ptx, mut prx) = mpsc::channel::<Progress>(64);
    let request = MigrateOut {
        domain: plan.domain.clone(),
        target: plan.target.clone(),
        new_name: Some(plan.new_name.clone()),
        binding: plan.binding.clone(),
        operation: plan.operation,
    };
    let hv = c.hypervisor().clone();
    let mut run = tokio::spawn(async move { hv.migrate_out(request, ptx).await });
    let mut recorded: u8 = 0;
    let result = loop {
        tokio::select! {
            done = &mut run => break done.map_err(|e| HvError::Failed(e.to_string())).and_then(|r| r),
            Some(p) = prx.recv() => {
                let stage = if p.suspended { Stage::Suspended } else { Stage::Transferring };
                emit(tx, progress(u32::from(p.pct), stage, p.round)).await;
                if p.pct >= recorded.saturating_add(5) && p.pct < 100 {
                    recorded = p.pct;
                    if let Err(e) = c.propose(&actor, advance(p.pct)).await {
                        warn!(error = %e, "recording progress failed");
                    }
                }
            }
        }
    };
    let _ = stop_tx.send(true);
    let _ = renewer.await;
    let _ = watcher.await;
    if let Ok(outcome) = &result {
        Span::current().record("rounds", outcome.rounds).record("downtime_ms", outcome.downtime_ms);
    }
    Ok(result)
}

/// Why a copied guest's migration did not commit.
struct NotCommitted {
    why: String,
    /// The hypervisors had completed the move anyway (ldm): the guest runs on the
    /// target and could not resume here; what they said.
    settled: Option<String>,
}

/// The commit of a copied guest: the Committing phase recorded, `CommitMigration`
/// proposed (and, unconfirmed, the log's verdict awaited), then the guest removed from
/// this host, or resumed here. `Some` when the migration did not commit.
#[instrument(name = "commit", skip_all, fields(downtime_ms = outcome.downtime_ms))]
async fn commit(c: &dyn Cluster, plan: &Plan, outcome: &MigrationOutcome, notes: Vec<String>) -> Option<NotCommitted> {
    let actor = agent_actor(c);
    // From here the guest is suspended on this host and only the log decides
    // where it runs: no early return may leave it suspended.
    let committing =
        Command::AdvanceOperation { operation: plan.operation, token: Some(plan.token), progress: Step::Committing };
    if let Err(e) = c.propose(&actor, committing).await {
        warn!(operation = plan.operation, error = %e, "recording the commit phase failed; committing anyway");
    }
    let commit = commit_command(plan, outcome.downtime_ms, outcome.total_ms, notes);
    if let Err(e) = c.propose(&actor, commit).await {
        warn!(operation = plan.operation, error = %e, "commit not confirmed; asking the log");
        if !decide(c, plan.operation, &e.to_string()).await {
            warn!(operation = plan.operation, "not committed; resuming the guest on the source");
            match c.hypervisor().finish_migrate_out(&plan.domain, false).await {
                Ok(()) => {}
                Err(HvError::Settled(settled)) => {
                    tracing::error!(operation = plan.operation, %settled, "the hypervisors completed a migration the cluster did not commit");
                    return Some(NotCommitted { why: e.to_string(), settled: Some(settled) });
                }
                Err(e) => {
                    warn!(operation = plan.operation, error = %e, "resuming the guest failed; recovery will retry")
                }
            }
            return Some(NotCommitted { why: e.to_string(), settled: None });
        }
    }
    if let Err(e) = c.hypervisor().finish_migrate_out(&plan.domain, true).await {
        warn!(operation = plan.operation, error = %e, "removing the migrated guest from the source failed; recovery will retry");
    }
    None
}

/// Tells the client that the migration was undone and the guest runs on the source.
async fn undone(tx: &Events, plan: &Plan, source: &str, cancelled: bool, why: &str) {
    let finding = Finding::new(
        cancelled.then_some(Rule::Op(9)),
        if cancelled { "cancelled" } else { "rolled-back" },
        format!("{why}; {} keeps running on {source}", plan.domain),
    );
    emit(tx, MigrationEvent::Refused { operation: plan.operation, errors: vec![finding] }).await;
}

/// Tells the target to activate or drop its copy; a target that is gone is told by
/// its own recovery (the operation record) when it returns.
#[instrument(name = "finish", skip_all, fields(committed = committed))]
async fn finish_target(c: &dyn Cluster, plan: &Plan, committed: bool) {
    let told = c.peers().finish(&plan.target_addr, plan.operation, &plan.new_name, committed).await;
    if let Err(e) = told {
        warn!(target = %plan.target, committed, error = %e, "telling the target failed");
    }
}

pub(crate) async fn renew_lease(
    c: Arc<dyn Cluster>,
    reservation: u64,
    token: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let actor = agent_actor(c.as_ref());
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(Duration::from_millis(RENEW_EVERY_MS)) => {}
        }
        if let Err(e) = c.propose(&actor, Command::Renew { reservation, token, lease_ms: LEASE_MS }).await {
            warn!(reservation, error = %e, "renewing the lease failed");
        }
    }
}

/// Checks the target every second; after [`TARGET_MISSES_MAX`] misses in a row the
/// transfer is cancelled (the guest keeps running on the source).
async fn watch_target(
    c: Arc<dyn Cluster>,
    addr: String,
    domain: String,
    lost: Arc<AtomicBool>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut misses = 0;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let ok = c.peers().probe(&addr).await.is_ok();
        misses = if ok { 0 } else { misses + 1 };
        if misses >= TARGET_MISSES_MAX {
            warn!(%addr, "target stopped answering; cancelling the transfer");
            lost.store(true, Ordering::SeqCst);
            let _ = c.hypervisor().cancel_migration(&domain).await;
            return;
        }
    }
}

/// Who asks to cancel a migration, as the agent that took the call proved it.
pub enum Canceller<'a> {
    /// A user who called this agent.
    User(&'a str),
    /// Member `node` passing on `user`'s cancel: taken only when this agent is the
    /// migration's source, so a cancel is relayed at most once.
    Relayed { node: &'a str, user: &'a str },
}

/// Cancels the running migration of `domain` (OP-09), here or at its coordinator; the
/// abort that follows is recorded as the user's who asked.
pub async fn cancel(c: &dyn Cluster, registry: &Registry, domain: &str, who: Canceller<'_>) -> Result<u64, Error> {
    let running = c.state().read(|s| {
        s.running_operation_for_domain(domain).map(|op| {
            let source = match &op.kind {
                tern_raft_store::OperationKind::Migration { source, .. } => source.clone(),
                _ => String::new(),
            };
            (op.id, source.clone(), s.host(&source).map(|h| h.address.clone()))
        })
    });
    let relayed_refused = |node: &str, why: &str| {
        Error::PermissionDenied(format!(
            "OP-09 a cancel from member {node} {why}: members only pass a user's cancel on to the migration's source"
        ))
    };
    if let Canceller::Relayed { node, user: "" } = who {
        return Err(relayed_refused(node, "names no user it passes on"));
    }
    let Some((id, source, addr)) = running else {
        return Err(Error::NotFound(format!("no migration of {domain} is running")));
    };
    let user = match who {
        Canceller::User(user) => user,
        Canceller::Relayed { node, user } if source == c.host() => {
            info!(operation = id, %node, %user, "cancel passed on by a member");
            user
        }
        Canceller::Relayed { node, .. } => {
            return Err(relayed_refused(node, &format!("reached {}, not the source {source}", c.host())));
        }
    };
    if source == c.host() {
        registry.cancel_asked(id, user);
        c.hypervisor().cancel_migration(domain).await?;
        return Ok(id);
    }
    let addr = addr.ok_or_else(|| Error::Unavailable(format!("source {source} has no known address")))?;
    c.peers().cancel(&addr, domain, user).await
}
