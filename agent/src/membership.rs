//! Membership: admitting new agents as learners, keeping `voters` voters, replacing a
//! voter that has been unreachable longer than `voter_replace_after_ms` with a caught-up
//! learner, and expiring reservations whose lease passed. The last two are leader
//! duties, started and stopped by [`crate::leader`].
//!
//! Liveness is probed directly (a `Cluster.Status` call per member and tick), not
//! through the Raft log, as HA-01 asks of detection.

use crate::convert;
use crate::limits::MessageLimits;
use crate::node::Node;
use openraft::ChangeMembers;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tern_proto::v1 as pb;
use tern_raft_store::{Command, NodeId};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{info, warn};

/// How often the leader probes members and reconsiders the voter set.
pub const TICK: Duration = Duration::from_secs(1);
/// A learner this many entries behind the leader is not promoted yet.
pub const CATCH_UP_LAG_MAX: u64 = 50;

type Metrics = openraft::RaftMetrics<NodeId, tern_raft_store::Node>;

/// Adds `id` at `address` as a learner (idempotent; a changed address is updated).
pub async fn admit(node: &Node, id: NodeId, name: &str, address: &str) -> Result<(), Status> {
    let metrics = node.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.clone();
    let m = membership.membership();
    match m.get_node(&id) {
        // Only a committed membership counts: an entry still in flight may be replaced
        // by the next leader's log, and the joiner would wait for replication forever.
        Some(n) if n.addr == address && membership_applied(&metrics) => return Ok(()),
        Some(n) if n.addr == address => {
            return Err(Status::unavailable(format!("{name} is in a membership change not committed yet; retry")));
        }
        Some(n) => {
            // Only the node that holds this id moves it to a new address: the host
            // registered at the member's address must be the one joining.
            let owner = node.read(|s| s.hosts().values().find(|h| h.address == n.addr).map(|h| h.name.clone()));
            if let Some(owner) = owner.filter(|o| o != name) {
                return Err(Status::permission_denied(format!(
                    "member {id} at {} is {owner}; {name} may not take its id",
                    n.addr
                )));
            }
            let nodes = BTreeMap::from([(id, tern_raft_store::Node { addr: address.to_string() })]);
            node.raft
                .change_membership(ChangeMembers::SetNodes(nodes), true)
                .await
                .map_err(|e| Status::unavailable(format!("updating {name}'s address: {e}")))?;
            return Ok(());
        }
        None => {}
    }
    node.raft
        .add_learner(id, tern_raft_store::Node { addr: address.to_string() }, false)
        .await
        .map_err(|e| Status::unavailable(format!("adding {name} as learner: {e}")))?;
    Ok(())
}

/// Whether this member's effective membership is committed (it has applied it).
pub fn membership_applied(m: &Metrics) -> bool {
    m.membership_config.log_id() <= &m.last_applied
}

/// The commit index as far as this member can tell: on the leader, the highest index
/// a majority of voters hold; elsewhere, the last applied index (never above commit).
pub fn commit_index(m: &Metrics) -> u64 {
    let applied = m.last_applied.map_or(0, |l| l.index);
    let Some(repl) = &m.replication else { return applied };
    let mut matched: Vec<u64> = m
        .membership_config
        .membership()
        .voter_ids()
        .map(|v| {
            if v == m.id {
                m.last_log_index.unwrap_or(0)
            } else {
                repl.get(&v).copied().flatten().map_or(0, |l| l.index)
            }
        })
        .collect();
    if matched.is_empty() {
        return applied;
    }
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched[matched.len() / 2].max(applied)
}

/// Every member with its role, name (from the host registry) and host status.
pub fn members(node: &Node) -> Vec<pb::Member> {
    let m = node.raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    node.read(|state| {
        membership
            .nodes()
            .map(|(id, n)| {
                let host = state.hosts().values().find(|h| h.address == n.addr);
                let matched = if *id == m.id {
                    m.last_log_index.unwrap_or(0)
                } else {
                    m.replication.as_ref().and_then(|r| r.get(id).copied().flatten()).map_or(0, |l| l.index)
                };
                pb::Member {
                    node_id: *id,
                    name: host.map_or_else(|| format!("node-{id}"), |h| h.name.clone()),
                    address: n.addr.clone(),
                    role: if voters.contains(id) { pb::MemberRole::Voter } else { pb::MemberRole::Learner } as i32,
                    host_status: host.map_or(pb::HostStatus::Unspecified, |h| convert::host_status(h.status)) as i32,
                    matched_index: matched,
                }
            })
            .collect()
    })
}

/// Leader duty (see [`crate::leader`]): every [`TICK`], probe the members, promote
/// caught-up learners and replace voters gone too long. Liveness is judged afresh in
/// each term: a new leader gives every member a full grace period.
pub(crate) async fn manage_voters(node: Node, term: CancellationToken) {
    let replace_after = Duration::from_millis(node.config.timeouts.voter_replace_after_ms);
    let mut last_ok: BTreeMap<NodeId, Instant> = BTreeMap::new();
    let mut ticks = ticker();
    while tick(&mut ticks, &term).await {
        let metrics = node.raft.metrics().borrow().clone();
        probe(&node, &metrics, &mut last_ok).await;
        if let Err(e) = reconcile_voters(&node, &metrics, &last_ok, replace_after).await {
            warn!(node = %node.name, error = %e, "changing the voter set failed; will retry");
        }
    }
}

/// Leader duty: every [`TICK`], propose `Expire` when a lease passed. A duty of its
/// own, so that a slow probe or a membership change waiting for a quorum never delays it.
pub(crate) async fn expire_leases_while_leading(node: Node, term: CancellationToken) {
    let mut ticks = ticker();
    while tick(&mut ticks, &term).await {
        expire_leases(&node).await;
    }
}

/// A [`TICK`] interval whose first tick is at once; a late tick delays the next.
fn ticker() -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}

/// Waits for the next tick; false once `term` ended.
async fn tick(ticks: &mut tokio::time::Interval, term: &CancellationToken) -> bool {
    tokio::select! {
        () = term.cancelled() => false,
        _ = ticks.tick() => true,
    }
}

async fn probe(node: &Node, metrics: &Metrics, last_ok: &mut BTreeMap<NodeId, Instant>) {
    let now = Instant::now();
    let membership = metrics.membership_config.membership().clone();
    let mut calls = Vec::new();
    for (id, n) in membership.nodes() {
        last_ok.entry(*id).or_insert(now); // a member is given a full grace period
        if *id == node.id {
            last_ok.insert(*id, now);
            continue;
        }
        let (id, addr, node) = (*id, n.addr.clone(), node.clone());
        calls.push(async move {
            let ok = match node.channels.get(&addr) {
                Ok(ch) => {
                    let mut c = pb::cluster_client::ClusterClient::new(ch).with_message_limits();
                    let req = crate::transport::request_within(pb::StatusRequest {}, TICK);
                    // The member itself must answer, not an agent that took over its
                    // address with a new id (a replaced disk).
                    c.status(req).await.is_ok_and(|r| r.get_ref().node_id == id)
                }
                Err(_) => false,
            };
            (id, ok)
        });
    }
    // Probes run together, each with its own deadline, so one dead member cannot
    // stretch the tick.
    for (id, ok) in futures_util::future::join_all(calls).await {
        if ok {
            last_ok.insert(id, now);
        }
    }
    last_ok.retain(|id, _| membership.get_node(id).is_some());
}

async fn reconcile_voters(
    node: &Node,
    metrics: &Metrics,
    last_ok: &BTreeMap<NodeId, Instant>,
    replace_after: Duration,
) -> Result<(), openraft::error::RaftError<NodeId, openraft::error::ClientWriteError<NodeId, tern_raft_store::Node>>> {
    let membership = metrics.membership_config.membership();
    if let [_, goal] = membership.get_joint_config().as_slice() {
        // A joint configuration outlives the leader that was changing it (openraft
        // does not finish it): nothing of ours is in flight now, so finish it.
        info!(node = %node.name, to = ?goal, "finishing an interrupted voter change");
        node.raft.change_membership(ChangeMembers::ReplaceAllVoters(goal.clone()), true).await?;
        return Ok(());
    }
    // Members an administrator removed (`RemoveMember`): voters first, dropped from
    // the voter set without being kept as learners, then learners.
    let removed: BTreeSet<NodeId> =
        node.read(|s| membership.nodes().map(|(id, _)| *id).filter(|id| s.removed_node(*id).is_some()).collect());
    if !removed.is_empty() {
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let staying: BTreeSet<NodeId> = voters.difference(&removed).copied().collect();
        if staying.len() < voters.len() && !staying.is_empty() {
            info!(node = %node.name, members = ?removed, to = ?staying, "removing voters an administrator removed");
            node.raft.change_membership(ChangeMembers::ReplaceAllVoters(staying), false).await?;
            return Ok(());
        }
        let learners: BTreeSet<NodeId> = removed.difference(&voters).copied().collect();
        if !learners.is_empty() {
            info!(node = %node.name, members = ?learners, "removing learners an administrator removed");
            node.raft.change_membership(ChangeMembers::RemoveNodes(learners), false).await?;
            return Ok(());
        }
    }
    let now = Instant::now();
    let alive = |id: &NodeId| last_ok.get(id).is_some_and(|t| now.duration_since(*t) < replace_after);
    // A learner whose address another, live member answers for now was a disk that
    // was replaced: it will never come back; stop replicating to it.
    let superseded: BTreeSet<NodeId> = membership
        .learner_ids()
        .filter(|id| !alive(id))
        .filter(|id| {
            let addr = membership.get_node(id).map(|n| n.addr.as_str());
            membership.nodes().any(|(other, n)| other != id && Some(n.addr.as_str()) == addr && alive(other))
        })
        .collect();
    if !superseded.is_empty() {
        info!(node = %node.name, members = ?superseded, "removing members whose disk was replaced");
        node.raft.change_membership(ChangeMembers::RemoveNodes(superseded), false).await?;
        return Ok(());
    }
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let live_voters: BTreeSet<NodeId> = voters.iter().copied().filter(alive).collect();
    let last_log = metrics.last_log_index.unwrap_or(0);
    let mut candidates: Vec<NodeId> = membership
        .learner_ids()
        .filter(alive)
        .filter(|l| {
            let matched = metrics.replication.as_ref().and_then(|r| r.get(l).copied().flatten()).map_or(0, |x| x.index);
            matched + CATCH_UP_LAG_MAX >= last_log
        })
        .collect();
    candidates.sort_unstable();
    let want = node.config.voters as usize;
    let mut next = live_voters.clone();
    for c in candidates {
        if next.len() >= want {
            break;
        }
        next.insert(c);
    }
    // Keep unreachable voters while nobody can replace them: removing them would not
    // help the quorum and would lose their data if they return.
    for v in &voters {
        if next.len() >= want.max(1) {
            break;
        }
        next.insert(*v);
    }
    if next == voters || next.len() < live_voters.len() {
        return Ok(());
    }
    info!(node = %node.name, from = ?voters, to = ?next, "changing voters");
    node.raft.change_membership(ChangeMembers::ReplaceAllVoters(next), true).await?;
    Ok(())
}

/// The leader releases reservations whose lease passed (their coordinator is gone).
/// By the members' median clock only: a leader that cannot check its clock (just
/// elected, or cut off from a majority's heartbeats) lapses nothing.
async fn expire_leases(node: &Node) {
    let (now, checked) = node.stamp_ms();
    if !checked {
        return;
    }
    let expired = node.read(|s| s.reservations().values().any(|r| !r.is_active(now)));
    if expired && let Err(e) = node.propose(&format!("agent:{}", node.name), Command::Expire { now_ms: now }).await {
        warn!(node = %node.name, error = %e, "expiring leases failed; will retry");
    }
}

/// How long `remove_member` waits for the membership to drop the member.
const REMOVAL_WAIT: Duration = Duration::from_secs(15);

/// `Cluster.RemoveMember`: refuses to remove the last voter, then proposes
/// `RemoveMember` (the state machine refuses while the host holds anything) and waits
/// until the leader's [`manage_voters`] duty has taken its id out of the membership.
pub async fn remove_member(node: &Node, actor: &str, name: &str) -> Result<pb::MemberResponse, tern_cluster::Error> {
    use tern_cluster::Error;
    let metrics = node.raft.metrics().borrow().clone();
    let membership = metrics.membership_config.membership().clone();
    let (address, removed_id) =
        node.read(|s| (s.host(name).map(|h| h.address.clone()), s.removed_member(name).and_then(|m| m.node_id)));
    let id = match &address {
        Some(a) => membership.nodes().find(|(_, n)| &n.addr == a).map(|(id, _)| *id),
        None => removed_id,
    };
    if let Some(id) = id {
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        if voters.contains(&id) && voters.len() == 1 {
            return Err(Error::Conflict(format!(
                "{name} is the cluster's only voter: removing it would leave no cluster (nothing changed)"
            )));
        }
    }
    let (node_id, already) =
        match node.propose(actor, Command::RemoveMember { name: name.to_string(), node_id: id }).await? {
            tern_raft_store::Outcome::MemberRemoved { node_id, already } => (node_id, already),
            other => return Err(Error::Internal(format!("remove-member answered {other:?}"))),
        };
    info!(node = %node.name, member = %name, ?node_id, by = %actor, "member removed from the state");
    let out =
        |out_of_membership| pb::MemberResponse { node_id: node_id.unwrap_or(0), unchanged: already, out_of_membership };
    let Some(id) = node_id else { return Ok(out(true)) };
    let mut watch = node.raft.metrics();
    let gone = tokio::time::timeout(REMOVAL_WAIT, async {
        loop {
            let listed = watch.borrow().membership_config.membership().get_node(&id).is_some();
            if !listed || watch.changed().await.is_err() {
                return !listed;
            }
        }
    })
    .await
    .unwrap_or(false);
    Ok(out(gone))
}

/// `Cluster.AddMember`: lets a removed member's name join again.
pub async fn add_member(node: &Node, actor: &str, name: &str) -> Result<pb::MemberResponse, tern_cluster::Error> {
    match node.propose(actor, Command::ReadmitMember { name: name.to_string() }).await? {
        tern_raft_store::Outcome::MemberReadmitted { was_removed } => {
            info!(node = %node.name, member = %name, by = %actor, was_removed, "member may join again");
            Ok(pb::MemberResponse { node_id: 0, unchanged: !was_removed, out_of_membership: false })
        }
        other => Err(tern_cluster::Error::Internal(format!("add-member answered {other:?}"))),
    }
}

/// Why a join from `name` with `id` is refused because an administrator removed it.
pub fn removed_refusal(node: &Node, id: NodeId, name: &str) -> Option<Status> {
    node.read(|s| {
        let by_name = s.removed_member(name).map(|m| (name.to_string(), m.clone()));
        let by_id = s.removed_node(id).and_then(|n| s.removed_member(n).map(|m| (n.to_string(), m.clone())));
        by_name.or(by_id)
    })
    .map(|(n, m)| {
        Status::failed_precondition(format!(
            "member {n} was removed from the cluster by {} at {} ms; `ternctl cluster add-member {n}` lets it join \
             again",
            m.by, m.at_ms
        ))
    })
}
