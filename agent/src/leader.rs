//! Leader duties: the loops that run only on the Raft leader (lease expiry, voter
//! management; later HA monitoring and rebalancing), started when this member becomes
//! leader and stopped when it loses leadership or the agent shuts down.
//!
//! Each leadership term gets a child of the shutdown token; losing leadership cancels
//! it and ends that term's duties, so a duty never outlives the term it was started in.
//! Every duty task is tracked by the agent's [`TaskTracker`], which shutdown waits on.
//!
//! A new duty is one entry in [`DUTIES`]. Its contract: run until the token is
//! cancelled. The supervisor also drops a duty's future at its next await point once
//! its term ends, so each step must be safe to abandon halfway (a proposal through
//! the log is: it commits or it does not).

use crate::membership;
use crate::node::Node;
use futures_util::future::BoxFuture;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, info, info_span};

/// One loop the leader runs. `run` starts it for one leadership term; it should return
/// once the token is cancelled.
pub struct Duty<C> {
    /// Names the duty in logs (the span `leader_duty{duty=...}`).
    pub name: &'static str,
    pub run: fn(C, CancellationToken) -> BoxFuture<'static, ()>,
}

/// Every duty of this agent's leader. To add one: `Duty { name, run: |n, t| Box::pin(f(n, t)) }`.
pub const DUTIES: &[Duty<Node>] = &[
    Duty { name: "expire-leases", run: |node, term| Box::pin(membership::expire_leases_while_leading(node, term)) },
    Duty { name: "manage-voters", run: |node, term| Box::pin(membership::manage_voters(node, term)) },
    Duty { name: "ha-monitor", run: |node, term| Box::pin(crate::ha::monitor(node, term)) },
    Duty { name: "ha-failover", run: |node, term| Box::pin(crate::ha::failover(node, term)) },
    Duty { name: "rebalance", run: |node, term| Box::pin(crate::rebalance::run(node, term)) },
];

/// Runs this agent's [`DUTIES`] while it leads, until `node.shutdown`.
pub async fn run(node: Node) {
    let id = node.id;
    let (tasks, shutdown) = (node.tasks.clone(), node.shutdown.clone());
    let name = node.name.clone();
    let leading = node.raft.server_metrics();
    supervise(node, DUTIES, leading, move |m| m.current_leader == Some(id), &tasks, &shutdown)
        .instrument(info_span!("leader_duties", node = %name))
        .await;
}

/// Starts `duties` (each with `context`) whenever `is_leader` turns true on `leading`
/// and cancels them when it turns false; returns at `shutdown` (or when `leading`
/// closes), having cancelled the current term. Generic over the context and the
/// leadership signal so that it is tested without Raft.
pub async fn supervise<C, M>(
    context: C,
    duties: &'static [Duty<C>],
    mut leading: watch::Receiver<M>,
    is_leader: impl Fn(&M) -> bool,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) where
    C: Clone + Send + 'static,
{
    let mut term: Option<Term> = None;
    let mut terms = 0u64;
    loop {
        let leader_now = is_leader(&leading.borrow_and_update());
        match (leader_now, term.take()) {
            (true, None) => {
                terms += 1;
                term = Some(Term::start(&context, duties, tasks, shutdown, terms));
                info!(term = terms, duties = duties.len(), "leading: duties started");
            }
            (false, Some(ended)) => {
                ended.stop().await;
                info!(term = terms, "no longer leading: duties stopped");
            }
            (_, current) => term = current,
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            changed = leading.changed() => if changed.is_err() { break },
        }
    }
    if let Some(ended) = term {
        ended.stop().await;
    }
}

/// The duties of one leadership term.
struct Term {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Term {
    fn start<C: Clone + Send + 'static>(
        context: &C,
        duties: &'static [Duty<C>],
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
        number: u64,
    ) -> Self {
        let cancel = shutdown.child_token();
        let tracker = TaskTracker::new();
        for duty in duties {
            let (token, body) = (cancel.clone(), (duty.run)(context.clone(), cancel.clone()));
            let task = async move {
                tokio::select! {
                    () = token.cancelled() => {}
                    () = body => {}
                }
            };
            tasks.spawn(tracker.track_future(task.instrument(info_span!(
                "leader_duty",
                duty = duty.name,
                term = number
            ))));
        }
        tracker.close();
        Self { cancel, tracker }
    }

    /// Cancels the term and waits until its duties ended (at once: their futures are
    /// dropped on cancellation), so that two terms' duties never run together.
    async fn stop(self) {
        self.cancel.cancel();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// How many terms' duties started and ended so far.
    #[derive(Clone)]
    struct Probe {
        started: Arc<watch::Sender<u32>>,
        ended: Arc<watch::Sender<u32>>,
    }

    /// Records its start, waits for its token, and records its end (also when dropped).
    async fn recording_duty(probe: Probe, term: CancellationToken) {
        struct Ended(Arc<watch::Sender<u32>>);
        impl Drop for Ended {
            fn drop(&mut self) {
                self.0.send_modify(|n| *n += 1);
            }
        }
        probe.started.send_modify(|n| *n += 1);
        let _ended = Ended(probe.ended.clone());
        term.cancelled().await;
    }

    const TEST_DUTIES: &[Duty<Probe>] =
        &[Duty { name: "recording", run: |probe, term| Box::pin(recording_duty(probe, term)) }];

    async fn wait_count(rx: &mut watch::Receiver<u32>, n: u32, what: &str) {
        let reached = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|v| *v >= n)).await;
        assert!(reached.is_ok_and(|r| r.is_ok()), "waited for {what}");
    }

    #[tokio::test]
    async fn duties_start_when_leading_stop_when_leadership_moves_and_end_at_shutdown() {
        // Goal: a duty runs exactly while this member leads, once per term, and no task outlives shutdown.
        let (leader_tx, leader_rx) = watch::channel(false);
        let (started_tx, mut started) = watch::channel(0u32);
        let (ended_tx, mut ended) = watch::channel(0u32);
        let probe = Probe { started: Arc::new(started_tx), ended: Arc::new(ended_tx) };
        let (tasks, shutdown) = (TaskTracker::new(), CancellationToken::new());
        let supervisor = tokio::spawn({
            let (tasks, shutdown) = (tasks.clone(), shutdown.clone());
            async move { supervise(probe, TEST_DUTIES, leader_rx, |l| *l, &tasks, &shutdown).await }
        });
        assert_eq!(*started.borrow(), 0, "nothing runs on a follower");

        leader_tx.send(true).unwrap();
        wait_count(&mut started, 1, "the duty to start with the first term").await;
        assert_eq!(tasks.len(), 1);

        leader_tx.send(false).unwrap();
        wait_count(&mut ended, 1, "the duty to end when leadership moved").await;
        assert_eq!(*started.borrow(), 1, "no new term while following");

        leader_tx.send(true).unwrap();
        wait_count(&mut started, 2, "the duty to start again with the next term").await;
        shutdown.cancel();
        supervisor.await.unwrap();
        wait_count(&mut ended, 2, "the duty to end at shutdown").await;
        tasks.close();
        let drained = tokio::time::timeout(Duration::from_secs(10), tasks.wait()).await;
        assert!(drained.is_ok(), "a task outlived shutdown");
    }
}
