//! The target's side: `Prepare` (authenticate, check, reserve, receive) and `Finish`.
//!
//! Prepare runs in an `incoming` span (operation, domain), with a `reserve` span per
//! planning attempt (the preflight against this server and the `Reserve` through Raft)
//! and a `receive` span (the hypervisor takes the guest); in a traced migration they
//! are children of the source's `prepare` (issue 16).

use crate::LEASE_MS;
use tern_cluster::users::authenticate;
use tern_cluster::{Cluster, Error, Finding, PrepareRequest, Prepared, agent_actor};
use tern_hypervisor::Incoming;
use tern_model::{MigrationQuery, preflight};
use tern_raft_store::{Command, OperationKind, Outcome, Phase, RejectCode};
use tracing::{Instrument, info, info_span, instrument, warn};

/// How many times Prepare plans again after losing a race for the same resources.
pub const RESERVE_ATTEMPTS_MAX: u32 = 8;

/// Whether the state machine refused a Reserve because another operation's
/// reservation took the same resources first (plan again), as opposed to a refusal
/// that planning again cannot fix.
pub(crate) fn planning_again_may_win(code: RejectCode) -> bool {
    matches!(code, RejectCode::StrandUnavailable | RejectCode::MemoryUnavailable | RejectCode::ConsolePortUnavailable)
}

/// The pause before planning again after lost race `attempt`: it lets this member's
/// state catch up with the winner's reservation.
pub(crate) async fn before_planning_again(attempt: u32) {
    tokio::time::sleep(std::time::Duration::from_millis(20 * u64::from(attempt))).await;
}

#[instrument(name = "incoming", skip_all, fields(node = %c.host(), domain = %req.domain, operation = req.operation))]
pub async fn prepare(c: &dyn Cluster, req: PrepareRequest) -> Result<Prepared, Error> {
    begun_here(c, req.operation).await?;
    login(c, &req).await?;
    settle(c).await?;
    let source = &req.source_server;
    if source.name != req.source {
        return Err(Error::InvalidInput(format!("source_server is {}, not {}", source.name, req.source)));
    }
    // The plan is made against the replicated reservations, and the state machine
    // arbitrates: when a concurrent operation wins the same resources first, plan again
    // against the new state (a bounded number of times) instead of failing at once.
    let mut attempt = 0;
    let (binding, warnings, reservation, token) = loop {
        attempt += 1;
        let planned = async {
            let target = c.hypervisor().inventory().await.map_err(|e| Error::Unavailable(e.to_string()))?;
            let now = c.now_ms();
            let reserved = c.state().read(|s| s.reserved_on(c.host(), now));
            let report = preflight(&MigrationQuery {
                source,
                target: &target,
                domain: &req.domain,
                new_name: req.new_name.as_deref(),
                target_reserved: &reserved,
            });
            let warnings: Vec<Finding> = report.warnings.iter().map(Finding::from).collect();
            let Some(binding) = report.binding.clone().filter(|_| report.ok()) else {
                let errors = report.errors.iter().map(Finding::from).collect();
                return Ok::<_, Error>(Err(Prepared::Refused { errors, warnings }));
            };
            let reserve = Command::Reserve {
                operation: req.operation,
                target: c.host().to_string(),
                source: req.source.clone(),
                domain: req.domain.clone(),
                binding: binding.clone(),
                lease_ms: req.lease_ms.clamp(1000, 10 * LEASE_MS),
            };
            Ok(Ok((binding, warnings, c.propose(&agent_actor(c), reserve).await)))
        }
        .instrument(info_span!("reserve", attempt))
        .await?;
        let (binding, warnings, reserved) = match planned {
            Ok(planned) => planned,
            Err(refused) => return Ok(refused),
        };
        match reserved {
            Ok(Outcome::Reserved { reservation, token, .. }) => break (binding, warnings, reservation, token),
            Ok(other) => return Err(Error::Internal(format!("Reserve answered {other:?}"))),
            Err(Error::Rejected(r)) if planning_again_may_win(r.code) && attempt < RESERVE_ATTEMPTS_MAX => {
                before_planning_again(attempt).await;
            }
            Err(Error::Rejected(r)) => {
                return Ok(Prepared::Refused { errors: vec![Finding::from(&r)], warnings });
            }
            Err(e) => return Err(e),
        }
    };
    if !req.dry_run {
        let domain = source
            .domain(&req.domain)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("LDom \"{}\" was not found on {}", req.domain, req.source)))?;
        let incoming =
            Incoming { domain, binding: binding.clone(), source: req.source.clone(), operation: req.operation };
        if let Err(e) = c.hypervisor().receive(incoming).instrument(info_span!("receive")).await {
            warn!(error = %e, "the hypervisor refused the incoming domain; releasing");
            let _ = c.propose(&agent_actor(c), Command::Release { reservation, token }).await;
            return Err(Error::Conflict(format!("{} could not take {}: {e}", c.host(), req.domain)));
        }
    }
    info!(reservation, "reserved");
    Ok(Prepared::Reserved { reservation, token, binding, warnings })
}

/// OP-04 on the target: the user's login; or the user's ticket, signed with the key of
/// the certificate it called the source with, for exactly this move to this server;
/// or, for a request with neither, that the operation is a move of a rebalance plan
/// that applies now (RB-04), whose approval (by a user with LDoms Management, or auto
/// mode set by a System Administrator) stands for it ([`begun_here`] has applied the
/// operation).
async fn login(c: &dyn Cluster, req: &PrepareRequest) -> Result<(), Error> {
    if !req.user.is_empty() || !req.password.is_empty() {
        return authenticate(c, &req.user, &req.password).await;
    }
    if let Some(ticket) = &req.ticket {
        let named = crate::coordinator::resolve_target(c, &ticket.target).map(|(host, _)| host).unwrap_or_default();
        if named != c.host() {
            return Err(Error::PermissionDenied(format!(
                "OP-04 the ticket names target {:?}, which is not {}",
                ticket.target,
                c.host()
            )));
        }
        let user = c.ticket_holder(ticket, &req.grant(&ticket.target))?;
        info!(%user, operation = req.operation, "login by the user's certificate (OP-04)");
        return Ok(());
    }
    let verdict = c.state().read(|s| {
        let op = s.operation(req.operation)?;
        let moves_this = matches!(&op.kind, OperationKind::Migration { source, target, domain, .. }
            if *source == req.source && target == c.host() && *domain == req.domain);
        Some(if moves_this { s.approved_plan_move(req.operation) } else { Err("it moves another guest".into()) })
    });
    match verdict {
        Some(Ok(plan)) => {
            info!(plan, operation = req.operation, "move of an applying rebalance plan: no login needed (RB-04)");
            Ok(())
        }
        Some(Err(why)) => Err(Error::PermissionDenied(format!(
            "OP-04 a migration to {} names the user to log in as (user@target); operation {} is no approved rebalance move: {why}",
            c.host(),
            req.operation
        ))),
        None => Err(Error::NotFound(format!("operation {} is not in this member's state", req.operation))),
    }
}

/// How often Prepare looks again for its operation in this member's state.
const BEGUN_POLL_MS: u64 = 2;

/// Waits (at most [`FINISH_APPLY_WAIT_MS`]) until this member has applied the
/// operation's `BeginOperation`, which the source proposed just before its Prepare.
/// Everything the log held before that Begin is then applied here too, so Prepare
/// plans against a state at least as new as the source's when it began: the release
/// of the migration that ended just before (a dry run followed at once by the real
/// move) no longer looks held.
async fn begun_here(c: &dyn Cluster, operation: u64) -> Result<(), Error> {
    let waited_from = c.now_ms();
    while c.state().read(|s| s.operation(operation).is_none()) {
        if c.now_ms().saturating_sub(waited_from) >= FINISH_APPLY_WAIT_MS {
            return Err(Error::Unavailable(format!(
                "operation {operation} is not in this member's state yet; try again"
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(BEGUN_POLL_MS)).await;
    }
    Ok(())
}

/// How long Prepare waits for this server to let go of guests that have left.
pub const SETTLE_WAIT_MS: u64 = 5_000;

/// Waits (at most [`SETTLE_WAIT_MS`]) until this server holds no guest suspended for a
/// migration away whose end this member has applied: its coordinator settles it just
/// after the commit, and until then its cores and memory look taken to the preflight.
/// A rebalance plan's next move onto this server (RB-05) runs right after the commit
/// of the move that made room here. Past the wait the preflight judges the server as
/// it is.
async fn settle(c: &dyn Cluster) -> Result<(), Error> {
    let from = c.now_ms();
    loop {
        let suspended = c.hypervisor().suspended().await.map_err(|e| Error::Unavailable(e.to_string()))?;
        let leaving = c
            .state()
            .read(|s| suspended.iter().any(|p| s.operation(p.operation).is_some_and(|o| o.phase.is_terminal())));
        if !leaving || c.now_ms().saturating_sub(from) >= SETTLE_WAIT_MS {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// How long Finish waits for this member's state to show the commit it is told of.
pub const FINISH_APPLY_WAIT_MS: u64 = 3_000;

/// The source's verdict on an incoming domain: activate it or drop it. Taken only from
/// the operation's coordinator (its source, `caller`), and only as the replicated
/// operation record says: the copy is activated once the state shows the migration
/// committed with the guest recorded here, and a committed migration's copy is never
/// dropped.
pub async fn finish(c: &dyn Cluster, caller: &str, operation: u64, domain: &str, committed: bool) -> Result<(), Error> {
    let me = c.host().to_string();
    let waited_from = c.now_ms();
    loop {
        let verdict = c.state().read(|s| {
            let Some(op) = s.operation(operation) else {
                return Err(Error::NotFound(format!("operation {operation} is not in this member's state")));
            };
            let OperationKind::Migration { source, target, domain: name, new_name, .. } = &op.kind else {
                return Err(Error::InvalidInput(format!("operation {operation} is not a migration")));
            };
            if source != caller || *target != me || new_name.as_deref().unwrap_or(name) != domain {
                return Err(Error::PermissionDenied(format!(
                    "operation {operation} moves {name} from {source} to {target}; {caller} may not finish {domain} here"
                )));
            }
            let recorded_here = s.domain(domain).is_some_and(|d| d.host == me);
            Ok((op.phase == Phase::Done, recorded_here))
        })?;
        match (committed, verdict) {
            (true, (true, true)) | (false, (false, _)) => break,
            (false, (true, true)) => {
                return Err(Error::Conflict(format!(
                    "operation {operation} committed: {domain} runs here now and is not dropped"
                )));
            }
            _ if c.now_ms().saturating_sub(waited_from) < FINISH_APPLY_WAIT_MS => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            _ => {
                return Err(Error::Conflict(format!(
                    "operation {operation} is not recorded as {}; {domain} is left as it is",
                    if committed { "committed here" } else { "ended without a commit" }
                )));
            }
        }
    }
    c.hypervisor().finish_receive(domain, committed).await?;
    info!(node = %c.host(), %domain, committed, "incoming migration finished");
    Ok(())
}
