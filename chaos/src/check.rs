//! The invariant checker. Safety is checked after every step, on every member
//! (running or not: a down member's disk is still read); liveness once the faults
//! have stopped ([`Checker::unhealed`]).
//!
//! Safety, on each member's applied state whenever it changed:
//! - `State::invariant_violations`: no strand, memory byte or console port claimed by
//!   two domains (bindings and active reservations together), every indexed guest on
//!   its host, reservations held by running operations, one operation per subject;
//! - members that applied the same log id hold equal states (the state machine is
//!   deterministic and the log is one log);
//! - every acknowledged write is visible on every member that applied its index, and
//!   never contradicted later (an operation acknowledged Done stays Done; one
//!   acknowledged aborted never becomes Done);
//! - a guest once indexed stays indexed (no committed domain is lost);
//! - no reservation outlives its lease: a leader that has led and committed for
//!   [`LEASE_GRACE_MS`] of simulated time holds no reservation that has been past
//!   its lease (by the leader's applied cluster clock) for that long (it expires
//!   them every second); a reservation past its lease blocks nothing meanwhile
//!   (apply judges it inactive);
//! - the cluster clock never runs ahead of true time by more than the members' clocks
//!   justify (trust rules, item 4): the leader stamps with the median of the clocks it
//!   heard from a majority, so the bound is the worst median a majority of the hosts'
//!   true skews gives, the highest seen so far (the cluster clock only grows), plus
//!   [`CLOCK_SLACK_MS`]; one host's clock pushed minutes ahead moves nothing;
//! - at most one member leads as each leader id (election safety). openraft's leader id
//!   is (term, node id), and in its default mode a term may have more than one leader
//!   (openraft's docs, data/vote.md: a member moves its vote to a greater candidate of
//!   the same term, and a restarted leader reclaims the committed vote it held); log
//!   ids carry the whole leader id, so such leaders never write over each other, which
//!   the equal-states check below confirms. What must never happen is two hosts
//!   leading under one (term, node id): one identity on two disks;
//! - no member votes twice: every vote it saves is at least the greatest it saved
//!   before, counting votes a power loss later took from its disk (a member that forgot
//!   an unsynced vote must not grant a lower or rival one). openraft orders votes by
//!   (term, candidate id), then committed: within a term a member may move to a
//!   greater candidate, never back;
//!
//! and on the servers themselves (the sim hypervisors), every [`PHYSICAL_EVERY`]
//! steps: a guest is active on at most one server, and no guest disappears from
//! every server.

use crate::cluster::Shared;
use crate::history::{Ack, MigrationEnd};
use std::collections::{BTreeMap, BTreeSet};
use tern_model::{DomainKind, DomainState, Server};
use tern_raft_store::{LogId, NodeId, Phase, State};

/// Simulated time a lapsed reservation may linger on a leader able to commit before
/// its `Expire` (the leader's loop probes, reconciles voters, then expires, every
/// second).
pub const LEASE_GRACE_MS: u64 = 6000;
/// The servers are read every this many steps (a copy of each server).
pub const PHYSICAL_EVERY: u64 = 20;

/// How far the cluster clock may run ahead of the hosts' majority clock: heartbeats
/// vote for three HA heartbeat intervals (1 s by default) after they were sent, so a
/// clock that stepped back is outvoted that much later.
pub const CLOCK_SLACK_MS: u64 = 5000;

/// The highest cluster clock the hosts' true skews allow now: the lower median of
/// the `majority` largest skews (the worst set of fresh heartbeats a leader may count).
fn majority_clock(wall_ms: u64, skews: &[i64], majority: usize) -> u64 {
    let mut s = skews.to_vec();
    s.sort_unstable();
    let m = majority.clamp(1, s.len().max(1));
    let skew = s.get(s.len().saturating_sub(m)..).and_then(|top| top.get((m - 1) / 2)).copied().unwrap_or(0);
    wall_ms.saturating_add_signed(skew.max(0))
}

/// A broken safety property.
#[derive(Clone, Debug)]
pub struct Violation {
    pub at_ms: u64,
    pub what: String,
}

#[derive(Default)]
struct MemberSeen {
    applied: Option<LogId>,
    generation: u32,
    /// Guests this disk has seen indexed.
    indexed: BTreeSet<String>,
    /// Votes of this disk already checked, and the greatest of them.
    votes_checked: usize,
    highest_vote: Option<tern_raft_store::Vote>,
}

/// Safety state carried across steps.
pub struct Checker {
    members: Vec<MemberSeen>,
    /// The guest domains of the layouts: the cluster must never lose one.
    guests: BTreeSet<String>,
    /// Who led under each leader id (term, node id) first.
    leaders: BTreeMap<(u64, NodeId), String>,
    steps: u64,
    leases: LeaseWatch,
    /// The highest cluster clock the hosts' clocks have allowed so far.
    clock_allowed_ms: u64,
    /// Every applied-index change (`step host index term`), for comparing two runs
    /// of one seed.
    pub trace: Vec<String>,
}

impl Checker {
    pub fn new(shared: &Shared, initial: &[Server]) -> Self {
        let guests = initial
            .iter()
            .flat_map(|s| s.domains.iter().filter(|d| d.kind == DomainKind::Guest).map(|d| d.name.clone()))
            .collect();
        Self {
            members: shared.hosts.iter().map(|_| MemberSeen::default()).collect(),
            guests,
            leaders: BTreeMap::new(),
            steps: 0,
            leases: LeaseWatch::default(),
            clock_allowed_ms: 0,
            trace: Vec::new(),
        }
    }

    pub fn guests(&self) -> &BTreeSet<String> {
        &self.guests
    }

    /// Every safety property, after one step. Returns the first violations found.
    pub fn after_step(&mut self, shared: &Shared, now_ms: u64) -> Vec<Violation> {
        self.steps += 1;
        let mut out = Vec::new();
        let mut changed = false;
        let skews: Vec<i64> =
            shared.hosts.iter().map(|h| h.skew_ms.load(std::sync::atomic::Ordering::SeqCst)).collect();
        let majority = (shared.opts.voters as usize).min(shared.hosts.len()) / 2 + 1;
        self.clock_allowed_ms = self.clock_allowed_ms.max(majority_clock(shared.wall_ms(), &skews, majority));
        let clock_allowed = self.clock_allowed_ms + CLOCK_SLACK_MS;
        for h in &shared.hosts {
            let disk = h.disk();
            let handle = h.state();
            let applied = handle.last_applied();
            let seen = &mut self.members[h.index];
            if seen.generation != disk.generation {
                *seen = MemberSeen { generation: disk.generation, ..MemberSeen::default() };
            }
            let votes = disk.store.votes_since(seen.votes_checked);
            if !votes.is_empty() {
                let found = votes_never_go_back(&mut seen.highest_vote, &votes);
                seen.votes_checked += votes.len();
                out.extend(
                    found
                        .into_iter()
                        .map(|w| Violation { at_ms: now_ms, what: format!("{} (node {}): {w}", h.name, disk.node_id) }),
                );
            }
            if seen.applied == applied && applied.is_some() {
                continue;
            }
            seen.applied = applied;
            changed = true;
            if let Some(l) = applied {
                self.trace.push(format!("{} {} {} {}", self.steps, h.name, l.index, l.leader_id.term));
            }
            let history = shared.history();
            handle.read(|s| {
                let mut found = check_state(s, applied, &history, &self.guests, &mut seen.indexed);
                if s.clock_ms() > clock_allowed {
                    found.push(format!(
                        "the cluster clock {} ran {} ms ahead of what a majority of clocks allows ({}); skews {skews:?}",
                        s.clock_ms(),
                        s.clock_ms() - clock_allowed + CLOCK_SLACK_MS,
                        clock_allowed - CLOCK_SLACK_MS
                    ));
                }
                found.iter_mut().for_each(|w| *w = format!("{} (node {}): {w}", h.name, disk.node_id));
                out.extend(found.into_iter().map(|what| Violation { at_ms: now_ms, what }));
            });
        }
        if changed {
            out.extend(same_index_same_state(shared, now_ms));
        }
        out.extend(self.election_safety(shared, now_ms));
        if let Some(what) = self.leases.check(shared, now_ms) {
            out.push(Violation { at_ms: now_ms, what });
        }
        if self.steps.is_multiple_of(PHYSICAL_EVERY) {
            let servers: Vec<Server> = shared.hosts.iter().filter_map(|h| h.physical()).collect();
            out.extend(physical(&servers, &self.guests).into_iter().map(|what| Violation { at_ms: now_ms, what }));
        }
        out
    }

    fn election_safety(&mut self, shared: &Shared, now_ms: u64) -> Vec<Violation> {
        let mut out = Vec::new();
        for h in &shared.hosts {
            let Some(raft) = h.raft() else { continue };
            let m = raft.metrics();
            let m = m.borrow();
            if m.state != openraft::ServerState::Leader {
                continue;
            }
            let term = m.current_term;
            let first = self.leaders.entry((term, m.id)).or_insert_with(|| h.name.clone());
            if *first != h.name {
                out.push(Violation {
                    at_ms: now_ms,
                    what: format!("two hosts lead as node {} in term {term}: {first} and {}", m.id, h.name),
                });
            }
        }
        out
    }

    /// Why the cluster has not converged yet (empty when it has): one leader that
    /// every member follows, every member caught up with equal states, the voter set
    /// whole and without departed members, no reservation left, every operation
    /// ended, each server's replicated inventory equal to the server, and every guest
    /// running on exactly one server, the one the domain index names.
    pub fn unhealed(&self, shared: &Shared) -> Vec<String> {
        let mut out = Vec::new();
        let mut metrics = Vec::new();
        for h in &shared.hosts {
            match h.raft() {
                Some(r) => metrics.push((h, r.metrics().borrow().clone())),
                None => out.push(format!("{} is not running", h.name)),
            }
        }
        let leaders: Vec<_> = metrics.iter().filter(|(_, m)| m.state == openraft::ServerState::Leader).collect();
        let [(leader_host, lm)] = leaders.as_slice() else {
            out.push(format!("{} leaders", leaders.len()));
            return out;
        };
        for (h, m) in &metrics {
            if m.current_leader != Some(lm.id) {
                out.push(format!("{} follows {:?}, not {}", h.name, m.current_leader, lm.id));
            }
        }
        let membership = lm.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let members: BTreeSet<NodeId> = membership.nodes().map(|(id, _)| *id).collect();
        let current: BTreeSet<NodeId> = shared.hosts.iter().map(|h| h.disk().node_id).collect();
        let want = (shared.opts.voters as usize).min(shared.hosts.len());
        if voters.len() != want || !voters.is_subset(&current) {
            out.push(format!("voters {voters:?}; want {want} of the current members {current:?}"));
        }
        if members != current {
            out.push(format!("members {members:?}; the current members are {current:?}"));
        }
        let leader_state = leader_host.state();
        let leader_applied = leader_state.last_applied();
        for h in &shared.hosts {
            if h.state().last_applied() != leader_applied {
                out.push(format!(
                    "{} applied {:?}, the leader {:?}",
                    h.name,
                    h.state().last_applied().map(|l| l.index),
                    leader_applied.map(|l| l.index)
                ));
            }
        }
        let servers: BTreeMap<String, Server> =
            shared.hosts.iter().filter_map(|h| h.server().map(|s| (h.name.clone(), s))).collect();
        let physical: BTreeMap<String, Server> =
            shared.hosts.iter().filter_map(|h| h.physical().map(|s| (h.name.clone(), s))).collect();
        leader_state.read(|s| {
            for r in s.reservations().values() {
                out.push(format!("reservation {} (operation {}) on {} is still held", r.id, r.operation, r.target));
            }
            for op in s.operations().values().filter(|o| !o.phase.is_terminal()) {
                out.push(format!(
                    "operation {} ({:?}, begun by {} at {} ms) is still {}",
                    op.id,
                    op.kind,
                    op.actor,
                    op.started_ms.saturating_sub(crate::cluster::EPOCH_MS),
                    op.phase
                ));
            }
            for (name, server) in &servers {
                match s.host(name).and_then(|h| h.inventory.as_ref()) {
                    Some(inv) if inv == server => {}
                    Some(_) => out.push(format!("{name}: the replicated inventory differs from the server")),
                    None => out.push(format!("{name}: no inventory replicated")),
                }
            }
            for g in &self.guests {
                let active: Vec<&str> = physical
                    .values()
                    .filter(|sv| sv.domain(g).is_some_and(|d| d.state == DomainState::Active))
                    .map(|sv| sv.name.as_str())
                    .collect();
                let copies: Vec<&str> =
                    servers.values().filter(|sv| sv.domain(g).is_some()).map(|sv| sv.name.as_str()).collect();
                if active.len() != 1 {
                    out.push(format!("guest {g} is active on {active:?} (present on {copies:?})"));
                } else if copies.len() != 1 {
                    out.push(format!("guest {g} runs on {} but is also bound on {copies:?}", active[0]));
                }
                let indexed = s.domain(g).map(|r| r.host.as_str());
                if active.len() == 1 && indexed != Some(active[0]) {
                    out.push(format!("guest {g} runs on {} but the index says {indexed:?}", active[0]));
                }
            }
        });
        out
    }
}

/// The checks of one member's state; messages for what fails.
fn check_state(
    s: &State,
    applied: Option<LogId>,
    history: &crate::history::History,
    guests: &BTreeSet<String>,
    indexed: &mut BTreeSet<String>,
) -> Vec<String> {
    let mut out = s.invariant_violations();
    let index = applied.map_or(0, |l| l.index);
    for a in history.acks.iter().filter(|a| a.log_index <= index) {
        let op = s.operation(a.ack.operation());
        let problem = match (&a.ack, op) {
            (Ack::Begun { operation }, None) if s.meta().last_operation_id < *operation => {
                Some("is unknown".to_string())
            }
            (Ack::Reserved { reservation, .. }, _) if s.meta().last_reservation_id < *reservation => {
                Some(format!("never made reservation {reservation}"))
            }
            (Ack::Committed { .. }, Some(op)) if op.phase != Phase::Done => Some(format!("is {}", op.phase)),
            (Ack::Aborted { phase, .. }, Some(op)) if op.phase != *phase => Some(format!("is {}", op.phase)),
            _ => None,
        };
        if let Some(p) = problem {
            out.push(format!(
                "acknowledged write lost: {:?} at log index {} (applied {index}), but the operation {p}",
                a.ack, a.log_index
            ));
        }
    }
    for m in &history.migrations {
        let (operation, want_done) = match m.end {
            MigrationEnd::Reported { operation, .. } => (operation, true),
            MigrationEnd::Refused { operation } if operation != 0 => (operation, false),
            _ => continue,
        };
        let Some(op) = s.operation(operation) else { continue };
        if op.phase.is_terminal() && (op.phase == Phase::Done) != want_done {
            out.push(format!(
                "migration of {} ({} -> {}, operation {operation}) was reported {} but is {}",
                m.domain,
                m.source,
                m.target,
                if want_done { "done" } else { "refused" },
                op.phase
            ));
        }
    }
    for g in guests {
        if s.domain(g).is_some() {
            indexed.insert(g.clone());
        } else if indexed.contains(g) {
            out.push(format!("guest {g} vanished from the domain index"));
        }
    }
    out
}

/// Leases as seen on the leader (see the module docs).
#[derive(Default)]
struct LeaseWatch {
    /// The leader being watched: (term, node id), since when (sim ms), and the applied
    /// index it had then.
    leader: Option<((u64, NodeId), u64, u64)>,
    /// Reservation id -> when (sim ms) it was first seen lapsed on this leader.
    lapsed_since: BTreeMap<u64, u64>,
}

impl LeaseWatch {
    fn check(&mut self, shared: &Shared, now_ms: u64) -> Option<String> {
        let leader = shared.hosts.iter().find_map(|h| {
            let raft = h.raft()?;
            let m = raft.metrics().borrow().clone();
            (m.state == openraft::ServerState::Leader).then_some((h, (m.current_term, m.id)))
        });
        let Some((host, who)) = leader else {
            *self = Self::default();
            return None;
        };
        let handle = host.state();
        let applied = handle.last_applied().map_or(0, |l| l.index);
        match self.leader {
            Some((w, _, _)) if w == who => {}
            _ => *self = Self { leader: Some((who, now_ms, applied)), lapsed_since: BTreeMap::new() },
        }
        let (_, since, applied_then) = self.leader.expect("set above");
        let lapsed: Vec<(u64, u64)> = handle.read(|s| {
            s.reservations().values().filter(|r| !r.is_active(s.clock_ms())).map(|r| (r.id, r.operation)).collect()
        });
        self.lapsed_since.retain(|id, _| lapsed.iter().any(|(r, _)| r == id));
        let committing = applied > applied_then;
        for (id, operation) in lapsed {
            let first = *self.lapsed_since.entry(id).or_insert(now_ms);
            let over = now_ms - first.max(since);
            if committing && over > LEASE_GRACE_MS {
                return Some(format!(
                    "{} (node {}, leader of term {}): reservation {id} (operation {operation}) has been past its lease \
                     for {over} ms while this leader commits",
                    host.name, who.1, who.0
                ));
            }
        }
        None
    }
}

/// Members at the same applied log id must hold equal states.
/// Checks `votes` (in the order they were saved) against `highest`, the greatest vote
/// saved before them, and raises it: a vote below it, or beside it (incomparable), is
/// a second vote the member had promised not to give.
fn votes_never_go_back(highest: &mut Option<tern_raft_store::Vote>, votes: &[tern_raft_store::Vote]) -> Vec<String> {
    use std::cmp::Ordering::{Equal, Greater};
    let mut out = Vec::new();
    for v in votes {
        match highest {
            Some(h) if !matches!(v.partial_cmp(h), Some(Greater | Equal)) => {
                out.push(format!("voted twice: saved vote {v} after vote {h} (a vote it had lost, given again)"));
            }
            _ => *highest = Some(*v),
        }
    }
    out
}

fn same_index_same_state(shared: &Shared, now_ms: u64) -> Vec<Violation> {
    let mut by_id: BTreeMap<(u64, u64), Vec<usize>> = BTreeMap::new();
    for h in &shared.hosts {
        if let Some(l) = h.state().last_applied() {
            by_id.entry((l.index, l.leader_id.term)).or_default().push(h.index);
        }
    }
    let mut out = Vec::new();
    for ((index, term), group) in by_id.into_iter().filter(|(_, g)| g.len() > 1) {
        let first = shared.hosts[group[0]].state().snapshot();
        for &i in &group[1..] {
            let equal = shared.hosts[i].state().read(|s| *s == first);
            if !equal {
                out.push(Violation {
                    at_ms: now_ms,
                    what: format!(
                        "{} and {} applied log index {index} (term {term}) but hold different states",
                        shared.hosts[group[0]].name, shared.hosts[i].name
                    ),
                });
            }
        }
    }
    out
}

/// The servers themselves: no guest active twice, none gone from every server.
fn physical(servers: &[Server], guests: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    for g in guests {
        let active: Vec<&str> = servers
            .iter()
            .filter(|s| s.domain(g).is_some_and(|d| d.state == DomainState::Active))
            .map(|s| s.name.as_str())
            .collect();
        if active.len() > 1 {
            out.push(format!("guest {g} is active on {active:?} at once"));
        }
        if !servers.iter().any(|s| s.domain(g).is_some()) && !servers.is_empty() {
            out.push(format!("guest {g} is on no server at all: lost"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_server(name: &str) -> Server {
        tern_hypervisor::layout::load_layout(&crate::cluster::seed_layout(name)).expect("seed layout")
    }

    #[test]
    fn a_guest_active_on_two_servers_or_on_none_is_flagged() {
        // Goal: the physical check catches a guest running twice and a guest gone from every server.
        let source = seed_server("m10-1-1");
        let guests = BTreeSet::from(["ldom1".to_string()]);
        assert!(physical(std::slice::from_ref(&source), &guests).is_empty());
        let mut twin = source.clone();
        twin.name = "m10-1-9".into();
        let found = physical(&[source.clone(), twin], &guests);
        assert!(found.iter().any(|v| v.contains("active on") && v.contains("at once")), "{found:?}");
        let mut emptied = source;
        emptied.unbind_domain("ldom1");
        let found = physical(&[emptied, seed_server("m10-1-2")], &guests);
        assert!(found.iter().any(|v| v.contains("lost")), "{found:?}");
    }

    #[test]
    fn an_incoming_copy_is_not_a_second_running_guest() {
        // Goal: a guest bound (not active) on its target during a migration is not counted as running twice.
        let source = seed_server("m10-1-1");
        let mut target = source.clone();
        target.name = "m10-1-9".into();
        if let Some(d) = target.domain_mut("ldom1") {
            d.state = DomainState::Bound;
        }
        let guests = BTreeSet::from(["ldom1".to_string()]);
        assert!(physical(&[source, target], &guests).is_empty());
    }

    #[test]
    fn a_vote_below_one_given_before_is_a_double_vote() {
        // Goal: the vote check flags a member that forgot its vote and voted again, lower, in that term.
        use tern_raft_store::Vote;
        let mut highest = None;
        let rising = [Vote::new(3, 1), Vote::new_committed(3, 1), Vote::new(4, 2), Vote::new(4, 3)];
        assert!(votes_never_go_back(&mut highest, &rising).is_empty(), "openraft may move to a greater candidate");
        let found = votes_never_go_back(&mut highest, &[Vote::new(4, 1)]);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("voted twice: saved vote T4-N1:uncommitted"), "{found:?}");
    }

    #[test]
    fn one_clock_minutes_ahead_allows_nothing_two_of_three_do() {
        // Goal: the clock bound follows the worst majority of the hosts' skews, never one outlier.
        assert_eq!(majority_clock(1_000, &[120_000, 0, -500], 2), 1_000);
        assert_eq!(majority_clock(1_000, &[120_000, 90_000, 0], 2), 91_000);
        assert_eq!(majority_clock(1_000, &[-5, -9, -1], 2), 1_000);
        assert_eq!(majority_clock(1_000, &[], 2), 1_000);
    }

    #[test]
    fn an_acknowledged_commit_seen_rolled_back_is_a_lost_write() {
        // Goal: a member that applied past an acknowledged commit but shows the operation otherwise is flagged.
        let mut history = crate::history::History::default();
        history.ack(5, 0, Ack::Committed { operation: 1 });
        let state = State::new();
        let applied = Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 9));
        let mut indexed = BTreeSet::new();
        // No operation 1 at all: a Committed ack needs the operation to say Done only
        // where it exists, but `Begun` must exist.
        history.ack(4, 0, Ack::Begun { operation: 1 });
        let found = check_state(&state, applied, &history, &BTreeSet::new(), &mut indexed);
        assert!(found.iter().any(|v| v.contains("acknowledged write lost")), "{found:?}");
        let before = Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 3));
        let found = check_state(&state, before, &history, &BTreeSet::new(), &mut indexed);
        assert!(found.is_empty(), "a member behind the acknowledgement owes nothing yet: {found:?}");
    }
}
