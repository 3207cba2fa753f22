//! Recovery: the operation record is the truth. Every agent, every few seconds,
//! settles what a crash (its own or a peer's) or a lost message left open:
//!
//! - target side: a received guest whose migration has ended is activated (Done) or
//!   dropped (anything else);
//! - source side: a running migration from this host that no coordinator of this
//!   process holds (it died with an earlier process, or gave up an abort it could not
//!   get through, or never learnt the id of an operation it began) is rolled back:
//!   the state machine refuses the abort if the commit got in first;
//! - source side: a guest suspended after its final copy, whose coordinator is gone,
//!   is removed (its migration is Done) or resumed (it ended otherwise).
//!
//! Recovery never touches a guest that is neither incoming nor suspended (a guest that
//! runs here is never taken for a leftover), and it settles a pending guest only by
//! the very operation the hypervisor recorded with it, once this member has applied
//! that operation's end: a member that lags never mistakes an older migration's
//! record for the verdict.

use crate::coordinator::Registry;
use crate::{Cluster, agent_actor};
use std::sync::Arc;
use std::time::Duration;
use tern_raft_store::{AbortOutcome, Command, Operation, OperationKind, Phase, State};
use tracing::{info, warn};

/// How often recovery looks.
pub const RECOVERY_EVERY: Duration = Duration::from_secs(2);

/// The log's verdict on a guest held by migration `operation` as this member has
/// applied it: `Some(true)` committed, `Some(false)` undone, `None` undecided or not
/// applied here yet (this member may lag the one that answered the coordinator).
/// A record pruned long ago (or unknown, 0) falls back to `placed`: whether the
/// domain table shows the guest where the commit would have put it.
fn verdict(s: &State, operation: u64, domain: &str, placed: impl FnOnce(&State) -> bool) -> Option<bool> {
    match s.operation(operation) {
        Some(op) if op.phase == Phase::Done => Some(true),
        Some(op) if op.phase.is_terminal() => Some(false),
        Some(_) => None,
        None if operation > s.meta().last_operation_id => None,
        None if s.running_operation_for_domain(domain).is_some() => None,
        None => Some(placed(s)),
    }
}

/// One pass over this host's open ends.
pub async fn settle(c: &dyn Cluster, registry: &Registry) {
    let me = c.host().to_string();
    let on_me = |s: &State, name: &str| s.domain(name).is_some_and(|d| d.host == me);
    // Target side.
    if let Ok(incoming) = c.hypervisor().incoming().await {
        for p in incoming {
            let Some(ok) = c.state().read(|s| verdict(s, p.operation, &p.domain, |s| on_me(s, &p.domain))) else {
                continue; // still running (its coordinator decides), or not applied here yet
            };
            info!(node = %me, domain = %p.domain, operation = p.operation, committed = ok, "settling an incoming guest");
            if let Err(e) = c.hypervisor().finish_receive(&p.domain, ok).await {
                warn!(node = %me, domain = %p.domain, error = %e, "settling failed; will retry");
            }
        }
    }
    // Source side: running migrations nobody here coordinates.
    let ops: Vec<Operation> = c.state().read(|s| s.operations().values().cloned().collect());
    for op in &ops {
        let OperationKind::Migration { source, .. } = &op.kind else { continue };
        if source != &me || op.phase.is_terminal() || registry.owns(op) {
            continue;
        }
        info!(node = %me, operation = op.id, phase = %op.phase, "rolling back a migration no coordinator holds");
        let outcome = AbortOutcome::RolledBack { reason: format!("its coordinator on {me} is gone; rolled back") };
        if let Err(e) = c.propose(&agent_actor(c), Command::AbortOperation { operation: op.id, outcome }).await {
            warn!(operation = op.id, error = %e, "rollback failed; will retry");
        }
    }
    // Source side: suspended guests whose coordinator is gone.
    let Ok(suspended) = c.hypervisor().suspended().await else { return };
    for p in suspended {
        if registry.holds(p.operation) {
            continue; // its coordinator decides
        }
        let Some(committed) = c.state().read(|s| verdict(s, p.operation, &p.domain, |s| !on_me(s, &p.domain))) else {
            continue; // the rollback above has not applied here yet
        };
        info!(node = %me, operation = p.operation, domain = %p.domain, committed, "settling a suspended guest");
        if let Err(e) = c.hypervisor().finish_migrate_out(&p.domain, committed).await {
            warn!(operation = p.operation, error = %e, "settling failed; will retry");
        }
    }
}

/// Runs [`settle`] until `stop` resolves.
pub async fn run(c: Arc<dyn Cluster>, registry: Arc<Registry>, stop: impl std::future::Future<Output = ()>) {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(RECOVERY_EVERY) => settle(c.as_ref(), &registry).await,
        }
    }
}
