//! UC-2 growth where the guest runs (RB-06), as the guest's host agent runs it:
//!
//! 1. `BeginOperation(Resize)`: the guest's size afterwards, from ldm's verbs
//!    ([`tern_model::resize::target_of`]);
//! 2. the resize planned from this member's applied state: the host's inventory
//!    minus every active reservation ([`tern_model::plan_resize`]);
//! 3. `Reserve` of the cores and ranges gained (the one growth check in apply), lost
//!    races planned again as a target's Prepare plans them;
//! 4. the hypervisor resizes the guest (named cores and blocks), the lease renewed;
//! 5. `CommitResize`: the gain becomes the guest's binding in the replicated
//!    inventory. A failed step aborts the operation and releases the reservation.
//!
//! A coordinator that dies leaves the operation to [`settle`] (recovery): committed
//! when the hypervisor shows the guest holding all it reserved, else rolled back.

use crate::LEASE_MS;
use crate::coordinator::{Registry, abort, decide, renew_lease};
use crate::target::{RESERVE_ATTEMPTS_MAX, before_planning_again, planning_again_may_win};
use std::sync::Arc;
use tern_cluster::{Cluster, Error, agent_actor};
use tern_model::resize::{Amount, target_of};
use tern_model::{Binding, Resize, plan_resize};
use tern_raft_store::{AbortOutcome, Command, Operation, OperationKind, Outcome, resize_refusal};
use tracing::{info, instrument, warn};

/// `ternctl add-core|set-core|remove-core N` and `add-memory|set-memory|remove-memory SIZE`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResizeRequest {
    pub domain: String,
    pub cores: Option<Amount>,
    pub memory: Option<Amount>,
}

/// What a resize did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResizeReport {
    pub operation: u64,
    pub domain: String,
    pub host: String,
    pub old_cids: Vec<u32>,
    pub new_cids: Vec<u32>,
    pub old_memory: u64,
    pub new_memory: u64,
    pub added: Binding,
    pub removed: Binding,
    pub notes: Vec<String>,
}

/// Runs the resize of `req.domain`, which must run on this host.
#[instrument(skip_all, fields(node = %c.host(), domain = %req.domain))]
pub async fn resize(c: Arc<dyn Cluster>, registry: Arc<Registry>, req: ResizeRequest) -> Result<ResizeReport, Error> {
    if req.domain.is_empty() {
        return Err(Error::InvalidInput("a resize needs a domain".into()));
    }
    if req.cores.is_none() && req.memory.is_none() {
        return Err(Error::InvalidInput("RB-06 name what to change: cores, memory or both".into()));
    }
    let me = c.host().to_string();
    let inventory = c.state().read(|s| match s.domain(&req.domain) {
        Some(d) if d.host != me => {
            Err(Error::InvalidInput(format!("{} runs on {}; its agent resizes it, not {me}'s", req.domain, d.host)))
        }
        None => Err(Error::NotFound(format!("LDom \"{}\" was not found in the cluster", req.domain))),
        Some(_) => s
            .host(&me)
            .and_then(|h| h.inventory.clone())
            .ok_or_else(|| Error::Unavailable(format!("{me} has not reported its inventory yet"))),
    })?;
    let refused = |e: tern_model::ResizeError| Error::from(resize_refusal(&e, &req.domain, &me));
    let growth = target_of(&inventory, &req.domain, req.cores, req.memory).map_err(refused)?;
    // What cannot fit now is refused before an operation begins; the plan is made
    // again once it has, against the state then.
    let reserved = c.state().read(|s| s.reserved_on(&me, c.now_ms()));
    plan_resize(&inventory, &req.domain, &growth, &reserved).map_err(refused)?;
    let kind = OperationKind::Resize { domain: req.domain.clone(), host: me.clone(), growth };
    let beginning = registry.beginning(&req.domain);
    let operation = match c.propose(&agent_actor(c.as_ref()), Command::BeginOperation { kind }).await? {
        Outcome::OperationBegun { operation } => operation,
        other => return Err(Error::Internal(format!("BeginOperation answered {other:?}"))),
    };
    let _held = registry.hold(operation);
    drop(beginning);
    info!(operation, %growth, "resize begun");
    match run_begun(&c, operation, &req.domain, &growth).await {
        Ok(report) => Ok(report),
        Err((e, abort_it)) => {
            if abort_it {
                abort(c.as_ref(), operation, AbortOutcome::Failed { reason: e.to_string() }).await;
            }
            Err(e)
        }
    }
}

/// Steps 2-5 of the module's list. `Err((e, true))`: the operation must be aborted.
async fn run_begun(
    arc: &Arc<dyn Cluster>,
    operation: u64,
    domain: &str,
    growth: &tern_model::rebalance::Growth,
) -> Result<ResizeReport, (Error, bool)> {
    let c = arc.as_ref();
    let me = c.host().to_string();
    let fail = |e: Error| (e, true);
    let mut attempt = 0;
    let (plan, before, held) = loop {
        attempt += 1;
        let now = c.now_ms();
        let (inv, reserved) =
            c.state().read(|s| (s.host(&me).and_then(|h| h.inventory.clone()), s.reserved_on(&me, now)));
        let inv = inv.ok_or_else(|| fail(Error::Unavailable(format!("{me} has no inventory"))))?;
        let plan =
            plan_resize(&inv, domain, growth, &reserved).map_err(|e| fail(resize_refusal(&e, domain, &me).into()))?;
        if plan.add.is_empty() {
            break (plan, inv, None);
        }
        let reserve = Command::Reserve {
            operation,
            target: me.clone(),
            source: me.clone(),
            domain: domain.to_string(),
            binding: plan.add.clone(),
            lease_ms: LEASE_MS,
        };
        match c.propose(&agent_actor(c), reserve).await {
            Ok(Outcome::Reserved { reservation, token, .. }) => break (plan, inv, Some((reservation, token))),
            Ok(other) => return Err(fail(Error::Internal(format!("Reserve answered {other:?}")))),
            Err(Error::Rejected(r)) if planning_again_may_win(r.code) && attempt < RESERVE_ATTEMPTS_MAX => {
                info!(operation, answer = %r, "lost a reservation race; planning again");
                before_planning_again(attempt).await;
            }
            Err(e) => return Err(fail(e)),
        }
    };
    if plan.is_empty() {
        // Already that size: nothing to reserve or change; the operation ends Done.
        info!(operation, "nothing to change");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let renewer = held.map(|(r, t)| tokio::spawn(renew_lease(arc.clone(), r, t, stop_rx)));
    let applied = if plan.is_empty() { Ok(()) } else { c.hypervisor().resize(&plan).await };
    let _ = stop_tx.send(true);
    if let Some(r) = renewer {
        let _ = r.await;
    }
    if let Err(e) = applied {
        warn!(operation, error = %e, "the hypervisor refused the resize");
        return Err(fail(Error::from(e)));
    }
    let commit = Command::CommitResize {
        operation,
        reservation: held.map(|h| h.0),
        token: held.map(|h| h.1),
        removed: plan.remove.clone(),
    };
    let result = match c.propose(&agent_actor(c), commit).await {
        Ok(Outcome::Resized { result }) => result,
        Ok(other) => return Err((Error::Internal(format!("CommitResize answered {other:?}")), false)),
        Err(e) => {
            warn!(operation, error = %e, "resize commit not confirmed; asking the log");
            if !decide(c, operation, &e.to_string()).await {
                undo(c, &plan).await;
                return Err((e, false));
            }
            c.state().read(|s| s.operation(operation).and_then(|o| o.result.clone())).unwrap_or_default()
        }
    };
    // From the plan, not this member's state: the commit was applied at the leader,
    // and this member may not have applied it yet.
    let sum = |v: &[tern_model::Range]| v.iter().map(|r| r.size).sum::<u64>();
    let old_memory = sum(&before.memory_of(domain));
    info!(operation, %plan, "resize committed");
    Ok(ResizeReport {
        operation,
        domain: domain.to_string(),
        host: me,
        old_cids: before.cpu_of(domain).cids,
        new_cids: result.new_cids.clone(),
        old_memory,
        new_memory: (old_memory + sum(&plan.add.memory)).saturating_sub(sum(&plan.remove.memory)),
        added: plan.add,
        removed: plan.remove,
        notes: result.notes,
    })
}

/// Gives back on the hypervisor what a resize the log did not commit applied there.
async fn undo(c: &dyn Cluster, plan: &Resize) {
    let inverse = Resize { domain: plan.domain.clone(), add: plan.remove.clone(), remove: plan.add.clone() };
    if let Err(e) = c.hypervisor().resize(&inverse).await {
        warn!(domain = %plan.domain, error = %e, "undoing the uncommitted resize failed; the next report shows ldm's view");
    }
}

/// Recovery of resizes on this host that no coordinator of this process holds: a
/// hypervisor that shows the guest holding everything its reservation holds is
/// committed (the next inventory report shows what it gave back); anything else is
/// rolled back.
pub async fn settle(c: &dyn Cluster, registry: &Registry, op: &Operation) {
    let OperationKind::Resize { domain, host, .. } = &op.kind else { return };
    if host != c.host() || op.phase.is_terminal() || registry.owns(op.id, domain) {
        return;
    }
    let held = c.state().read(|s| {
        op.reservations.iter().filter_map(|id| s.reservation(*id)).map(|r| (r.id, r.token, r.binding.clone())).next()
    });
    let live = c.hypervisor().inventory().await.ok();
    let command = match (held, live) {
        (Some((reservation, token, add)), Some(server)) => {
            let gained = Resize { domain: domain.clone(), add, remove: Binding::default() };
            if server.pending_of(&gained).add.is_empty() {
                info!(operation = op.id, %domain, "the hypervisor holds the growth; committing it");
                Command::CommitResize {
                    operation: op.id,
                    reservation: Some(reservation),
                    token: Some(token),
                    removed: Binding { domain: domain.clone(), ..Binding::default() },
                }
            } else {
                rolled_back(c, op.id)
            }
        }
        _ => rolled_back(c, op.id),
    };
    if let Err(e) = c.propose(&agent_actor(c), command).await {
        warn!(operation = op.id, error = %e, "settling the resize failed; will retry");
    }
}

fn rolled_back(c: &dyn Cluster, operation: u64) -> Command {
    let reason = format!("its coordinator on {} is gone; rolled back", c.host());
    Command::AbortOperation { operation, outcome: AbortOutcome::RolledBack { reason } }
}
