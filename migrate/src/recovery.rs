//! Recovery: the operation record is the truth. Every agent, every few seconds,
//! settles what a crash (its own or a peer's) left open:
//!
//! - target side: a received guest whose migration has ended is activated (Done) or
//!   dropped (anything else);
//! - source side: a running migration this host began before this process started
//!   (its coordinator died with the earlier process) is rolled back; a guest whose migration is
//!   Done but which is still here (crash between commit and removal) is removed.

use crate::coordinator::Registry;
use crate::{Cluster, agent_actor};
use std::sync::Arc;
use std::time::Duration;
use tern_raft_store::{AbortOutcome, Command, Operation, OperationKind, Phase};
use tracing::{info, warn};

/// How often recovery looks.
pub const RECOVERY_EVERY: Duration = Duration::from_secs(2);

/// The name a migration's guest has on its target.
fn target_name(op: &Operation) -> Option<(&str, &str, &str)> {
    match &op.kind {
        OperationKind::Migration { domain, source, target, new_name, dry_run: false } => {
            Some((source.as_str(), target.as_str(), new_name.as_deref().unwrap_or(domain)))
        }
        _ => None,
    }
}

/// One pass over this host's open ends.
pub async fn settle(c: &dyn Cluster, registry: &Registry) {
    let me = c.host().to_string();
    let ops: Vec<Operation> = c.state().read(|s| s.operations().values().cloned().collect());
    // Target side.
    if let Ok(incoming) = c.hypervisor().incoming().await {
        for name in incoming {
            let last = ops.iter().rev().find(|op| target_name(op).is_some_and(|(_, t, n)| t == me && n == name));
            let verdict = match last.map(|op| &op.phase) {
                Some(Phase::Done) => Some(true),
                Some(p) if p.is_terminal() => Some(false),
                Some(_) => None, // still running: its coordinator decides
                None => Some(false),
            };
            if let Some(ok) = verdict {
                info!(node = %me, domain = %name, committed = ok, "settling an incoming guest left by a crash");
                if let Err(e) = c.hypervisor().finish_receive(&name, ok).await {
                    warn!(node = %me, domain = %name, error = %e, "settling failed; will retry");
                }
            }
        }
    }
    // Source side.
    let here = match c.hypervisor().inventory().await {
        Ok(s) => s,
        Err(_) => return,
    };
    for op in &ops {
        let OperationKind::Migration { domain, source, .. } = &op.kind else { continue };
        if source != &me || registry.may_own(op) {
            continue;
        }
        if !op.phase.is_terminal() {
            info!(node = %me, operation = op.id, "rolling back a migration whose coordinator is gone");
            let outcome = AbortOutcome::RolledBack { reason: format!("coordinator {me} restarted before the commit") };
            if let Err(e) = c.propose(&agent_actor(c), Command::AbortOperation { operation: op.id, outcome }).await {
                warn!(operation = op.id, error = %e, "rollback failed; will retry");
            } else {
                let _ = c.hypervisor().finish_migrate_out(domain, false).await;
            }
        } else if op.phase == Phase::Done
            && here.domain(domain).is_some()
            && c.state().read(|s| s.domain(domain).is_some_and(|d| d.host != me))
            && target_name(op).is_some()
        {
            info!(node = %me, operation = op.id, %domain, "removing a guest whose migration committed before a crash");
            if let Err(e) = c.hypervisor().finish_migrate_out(domain, true).await {
                warn!(operation = op.id, error = %e, "removal failed; will retry");
            }
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
