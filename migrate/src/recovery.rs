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
//!   is removed (its migration is Done) or resumed (it ended otherwise);
//! - a resize of a guest here (RB-06) whose coordinator is gone is committed if the
//!   hypervisor holds its growth, else rolled back ([`crate::resize::settle`]).
//!
//! Recovery never touches a guest that is neither incoming nor suspended (a guest that
//! runs here is never taken for a leftover), and it settles a pending guest only by
//! the very operation the hypervisor recorded with it, once this member has applied
//! that operation's end: a member that lags never mistakes an older migration's
//! record for the verdict.

use crate::coordinator::Registry;
use crate::hosts::registry_key;
use std::sync::Arc;
use std::time::Duration;
use tern_cluster::{Cluster, agent_actor};
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
        if let OperationKind::Evacuation { host } = &op.kind {
            settle_evacuation(c, registry, op, host).await;
            continue;
        }
        if let OperationKind::Resize { .. } = &op.kind {
            crate::resize::settle(c, registry, op).await;
            continue;
        }
        let OperationKind::Migration { domain, source, .. } = &op.kind else { continue };
        if source != &me || op.phase.is_terminal() || registry.owns(op.id, domain) {
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
        if registry.owns(p.operation, &p.domain) {
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

/// Ends an evacuation (or restore) this agent ran and no longer holds: it died with
/// an earlier process, or could not record its end. The guests already moved stay
/// where they went; the operation is reported Failed, and running the evacuation
/// again moves the rest.
async fn settle_evacuation(c: &dyn Cluster, registry: &Registry, op: &Operation, host: &str) {
    if op.phase.is_terminal() || op.actor != agent_actor(c) || registry.owns(op.id, &registry_key(host)) {
        return;
    }
    info!(node = %c.host(), operation = op.id, %host, "ending an evacuation no coordinator holds");
    let reason = format!(
        "interrupted: its coordinator on {} is gone; the guests already moved stay where they went, \
         run `ternctl host evacuate {host}` (or restore) again for the rest",
        c.host()
    );
    let command = Command::AbortOperation { operation: op.id, outcome: AbortOutcome::Failed { reason } };
    if let Err(e) = c.propose(&agent_actor(c), command).await {
        warn!(operation = op.id, error = %e, "ending the evacuation failed; will retry");
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

#[cfg(test)]
mod tests {
    //! `verdict`, the rule recovery settles pending guests by, on states built by
    //! applying commands as the log would.
    use super::*;
    use tern_model::{MigrationQuery, Reserved, Server, preflight};
    use tern_raft_store::{HostSpec, Outcome, Request};

    fn layout(name: &str) -> Server {
        let dir = tern_hypervisor::layout::shipped_layouts_dir();
        tern_hypervisor::layout::load_layout(&dir.join(format!("{name}.toml"))).expect("seed layout")
    }

    /// Applies commands in order like a member applying its log.
    struct Log {
        state: State,
        index: u64,
    }

    impl Log {
        fn apply(&mut self, command: Command) -> Outcome {
            self.index += 1;
            let request =
                Request { proposed_at_ms: 1_000 + self.index, actor: "test".into(), from: String::new(), command };
            self.state.apply(self.index, &request).unwrap_or_else(|r| panic!("{r}"))
        }

        /// m10-1-1 and m10-1-2 registered with their inventories, and ldom1's
        /// migration from the first to the second begun; its operation id.
        fn seed_migration() -> (Self, u64) {
            let mut log = Log { state: State::new(), index: 0 };
            for server in [layout("m10-1-1"), layout("m10-1-2")] {
                let spec = HostSpec { name: server.name.clone(), address: format!("{}:7400", server.name) };
                log.apply(Command::RegisterHost { host: spec });
                log.apply(Command::ReportInventory { server });
            }
            let kind = OperationKind::Migration {
                domain: "ldom1".into(),
                source: "m10-1-1".into(),
                target: "m10-1-2".into(),
                new_name: None,
                dry_run: false,
                plan: None,
            };
            let Outcome::OperationBegun { operation } = log.apply(Command::BeginOperation { kind }) else {
                panic!("not begun")
            };
            (log, operation)
        }

        fn commit(&mut self, operation: u64) {
            let (source, target) = (layout("m10-1-1"), layout("m10-1-2"));
            let query = MigrationQuery {
                source: &source,
                target: &target,
                domain: "ldom1",
                new_name: None,
                target_reserved: &Reserved::default(),
            };
            let binding = preflight(&query).binding.expect("ldom1 fits m10-1-2");
            let reserve = Command::Reserve {
                operation,
                target: "m10-1-2".into(),
                source: "m10-1-1".into(),
                domain: "ldom1".into(),
                binding,
                lease_ms: 15_000,
            };
            let Outcome::Reserved { reservation, token, .. } = self.apply(reserve) else { panic!("not reserved") };
            let commit =
                Command::CommitMigration { operation, reservation, token, downtime_ms: 1, total_ms: 2, notes: vec![] };
            self.apply(commit);
        }
    }

    fn nowhere(_: &State) -> bool {
        panic!("the domain table must not be consulted while the record exists")
    }

    #[test]
    fn an_operation_this_member_has_not_applied_yet_is_undecided() {
        // Goal: a lagging member never takes the absence of a record for a verdict (seed 166 dropped a live copy so).
        let (log, operation) = Log::seed_migration();
        assert_eq!(verdict(&log.state, operation + 1, "ldom1", nowhere), None);
    }

    #[test]
    fn a_running_migration_is_left_to_its_coordinator() {
        // Goal: while the operation runs, neither the incoming copy nor the suspended guest is settled.
        let (log, operation) = Log::seed_migration();
        assert_eq!(verdict(&log.state, operation, "ldom1", nowhere), None);
    }

    #[test]
    fn done_means_committed_and_every_other_end_means_undone() {
        // Goal: Done activates the target's copy and removes the source's; an abort does the opposite.
        let (mut log, operation) = Log::seed_migration();
        log.commit(operation);
        assert_eq!(verdict(&log.state, operation, "ldom1", nowhere), Some(true));
        let (mut log, operation) = Log::seed_migration();
        let outcome = AbortOutcome::RolledBack { reason: "test".into() };
        log.apply(Command::AbortOperation { operation, outcome });
        assert_eq!(verdict(&log.state, operation, "ldom1", nowhere), Some(false));
    }

    #[test]
    fn an_unknown_operation_falls_back_to_where_the_domain_table_puts_the_guest() {
        // Goal: a guest of a version-1 state file (operation 0) is settled by the table, unless a migration of it runs.
        let (log, _) = Log::seed_migration();
        assert_eq!(verdict(&log.state, 0, "ldom1", |_| true), None, "ldom1's migration still runs");
        let (mut log, operation) = Log::seed_migration();
        log.commit(operation);
        let on_target = |s: &State| s.domain("ldom1").is_some_and(|d| d.host == "m10-1-2");
        assert_eq!(verdict(&log.state, 0, "ldom1", on_target), Some(true));
    }
}
