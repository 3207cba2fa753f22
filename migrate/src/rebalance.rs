//! Load-based rebalancing (SPEC RB-01..RB-05) over the [`Cluster`] seam: plans made
//! by the pure planner ([`tern_model::rebalance`]) from the replicated state, kept
//! there with ids, approved, and run move by move as ordinary migrations through the
//! reservation protocol (so each can be listed, cancelled and recovered like any).
//!
//! - [`make_plan`] / [`record`]: plan from this member's applied state
//!   ([`tern_raft_store::State::planning_view`]) and keep the plan with the state's
//!   [`placement_digest`](tern_raft_store::State::placement_digest).
//! - [`approve`]: `ApplyPlan`, which the state machine takes only if the digest still
//!   holds; a stale plan is planned again and the new plan returned, not applied.
//! - [`round`]: one round of the leader's `rebalance` duty: measure the imbalance,
//!   count the rounds it held above the level's threshold (hysteresis, RB-01), plan and
//!   approve in auto mode once it held `hold_rounds` rounds, and drive the applying
//!   plan: start each move as a migration on its source's agent (LM-02) marked with the
//!   plan's id, whose approval stands for the user's login on the target (OP-04), at
//!   most `cluster_concurrency` at once, a move waiting for the earlier moves that share
//!   a host with it; end the plan when every move is done, or failed when one fails.
//!
//! A move's state is read from the operations (the latest migration of the plan for
//! that guest), never from memory, so a new leader picks up where the old one was: a
//! running move is followed, a finished one counted, a pending one started.

use crate::Cluster;
use std::collections::BTreeMap;
use tern_cluster::{Error, MigrateRequest, agent_actor};
use tern_model::rebalance::{Level, MakeRoomError, Plan, imbalance_ppm};
use tern_raft_store::{
    Command, HostStatus, OperationKind, Outcome, Phase, PlanEnd, PlanPurpose, PlanRecord, PlanStatus, RejectCode,
};

/// Where one move of a plan stands, from the operations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MoveState {
    Pending,
    Running { operation: u64 },
    Done { operation: u64 },
    Failed { operation: u64, reason: String },
}

impl MoveState {
    pub fn operation(&self) -> u64 {
        match self {
            Self::Pending => 0,
            Self::Running { operation } | Self::Done { operation } | Self::Failed { operation, .. } => *operation,
        }
    }
}

impl std::fmt::Display for MoveState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pending => f.write_str("pending"),
            Self::Running { .. } => f.write_str("running"),
            Self::Done { .. } => f.write_str("done"),
            Self::Failed { reason, .. } => write!(f, "failed: {reason}"),
        }
    }
}

/// Each move's state: the latest migration of `plan` for that guest.
pub fn move_states(s: &tern_raft_store::State, plan: &PlanRecord) -> Vec<MoveState> {
    plan.plan
        .moves
        .iter()
        .map(|m| {
            let op = s.operations().values().rev().find(|o| {
                matches!(&o.kind, OperationKind::Migration { domain, source, plan: Some(p), .. }
                    if *p == plan.id && *domain == m.domain && *source == m.source)
            });
            match op {
                None => MoveState::Pending,
                Some(o) => match &o.phase {
                    Phase::Done => MoveState::Done { operation: o.id },
                    Phase::Failed { reason } | Phase::RolledBack { reason } => {
                        MoveState::Failed { operation: o.id, reason: reason.clone() }
                    }
                    Phase::Cancelled => MoveState::Failed { operation: o.id, reason: "cancelled".into() },
                    _ => MoveState::Running { operation: o.id },
                },
            }
        })
        .collect()
}

/// What a plan is asked for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanRequest {
    /// `None`: the cluster's level.
    pub level: Option<Level>,
    /// Balance (RB-01), room for a guest on a host (RB-05), or a guest's growth (RB-06).
    pub purpose: PlanPurpose,
}

/// Plans from this member's applied state (pure planner, off the async threads).
/// Returns the purpose, the plan and the digest of the state it was made from.
pub async fn make_plan(c: &dyn Cluster, req: &PlanRequest) -> Result<(PlanPurpose, Plan, u64), Error> {
    let now = c.now_ms();
    let (view, digest) = c.state().read(|s| (s.planning_view(now), s.placement_digest(now)));
    let purpose = req.purpose.clone();
    let level = req.level;
    // The planner runs off the async threads, on the view copied out of the state.
    let rule = if matches!(purpose, PlanPurpose::Grow { .. }) { "RB-06" } else { "RB-05" };
    tern_cluster::blocking(c, move || match view.plan(&purpose, level) {
        Ok(mut p) => {
            bound_notes(&mut p.notes);
            Ok((purpose, p, digest))
        }
        Err(MakeRoomError::Invalid(m)) => Err(Error::InvalidInput(format!("{rule} {m}"))),
        Err(e) => Err(Error::Conflict(format!("{rule} {e}"))),
    })
    .await?
}

/// Cuts a plan's notes to what a `RecordPlan` may carry (each note at most
/// `TEXT_BYTES_MAX` bytes, at most `PLAN_NOTES_MAX` of them, the last saying how many
/// were left out), so that a plan with many reasons is still kept. ApplyPlan compares
/// moves only, so the notes may differ from a fresh plan's.
pub fn bound_notes(notes: &mut Vec<String>) {
    use tern_raft_store::limits::PLAN_NOTES_MAX;
    for n in notes.iter_mut() {
        *n = clip(std::mem::take(n));
    }
    if notes.len() > PLAN_NOTES_MAX {
        let left = notes.len() - (PLAN_NOTES_MAX - 1);
        notes.truncate(PLAN_NOTES_MAX - 1);
        notes.push(format!("... and {left} more note(s)"));
    }
}

/// `text` on one line within `TEXT_BYTES_MAX` bytes (what the state takes as a note or
/// a reason), ending in `...` when cut.
fn clip(mut text: String) -> String {
    use tern_raft_store::limits::TEXT_BYTES_MAX;
    text.retain(|c| !c.is_control());
    if text.len() > TEXT_BYTES_MAX {
        let mut end = TEXT_BYTES_MAX - 3;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

/// Keeps `plan` in the replicated state as `actor`; returns its id.
pub async fn record(c: &dyn Cluster, actor: &str, purpose: PlanPurpose, plan: Plan, digest: u64) -> Result<u64, Error> {
    match c.propose(actor, Command::RecordPlan { purpose, plan, digest }).await? {
        Outcome::PlanRecorded { id } => Ok(id),
        other => Err(Error::Internal(format!("RecordPlan answered {other:?}"))),
    }
}

/// What [`approve`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Approval {
    Applying {
        id: u64,
    },
    /// The plan was stale; `id` is a new plan of the same purpose, shown, not applied.
    Replanned {
        stale: u64,
        id: u64,
    },
}

/// Approves plan `id` as `actor` (RB-04); a stale plan is planned again.
pub async fn approve(c: &dyn Cluster, actor: &str, id: u64) -> Result<Approval, Error> {
    match c.propose(actor, Command::ApplyPlan { id }).await {
        Ok(_) => Ok(Approval::Applying { id }),
        Err(Error::Rejected(r)) if r.code == RejectCode::PlanStale => {
            let purpose = c.state().read(|s| s.plan(id).map(|p| p.purpose.clone())).unwrap_or_default();
            let req = PlanRequest { level: None, purpose };
            let (purpose, plan, digest) = make_plan(c, &req).await?;
            let new = record(c, actor, purpose, plan, digest).await?;
            Ok(Approval::Replanned { stale: id, id: new })
        }
        Err(e) => Err(e),
    }
}

/// What the leader's rebalancer knows between rounds (not replicated: a new leader
/// starts counting again, which only delays auto mode).
#[derive(Clone, Debug, Default)]
pub struct Rounds {
    /// Rounds in a row the imbalance was at or above the level's threshold.
    pub held: u32,
    /// Moves of the applying plan this leader started: (plan, move index) -> (when,
    /// how many times), so that one whose migration has not been recorded yet is not
    /// started twice. Entries of other plans are dropped as the driver goes.
    pub started: BTreeMap<(u64, usize), (u64, u32)>,
}

/// A move started but not yet recorded is started again only after this long (a
/// second start of a move whose first is under way is refused by the state machine:
/// one running operation per guest).
pub const MOVE_START_WAIT_MS: u64 = 10_000;
/// Starts of one move without a recorded migration before the plan fails.
pub const MOVE_STARTS_MAX: u32 = 5;

/// One round of the leader's rebalancer (see the module doc). `measure`: a full round
/// (measure the imbalance, count it, plan in auto mode); otherwise only the applying
/// plan is driven (the agent drives every second, measures every interval). `spawn`
/// runs a move's migration call in the background (the agent's task tracker, within
/// the term).
pub async fn round(
    c: &dyn Cluster,
    rounds: &std::sync::Mutex<Rounds>,
    spawn: &(dyn Fn(String, MigrateRequest) + Sync),
    measure: bool,
) -> Result<(), Error> {
    let now = c.now_ms();
    let applying = c.state().read(|s| s.plans().values().find(|p| p.status == PlanStatus::Applying).cloned());
    if !measure {
        let concurrency = c.state().read(|s| s.rebalance().cluster_concurrency);
        return match applying {
            Some(plan) => drive(c, rounds, spawn, &plan, concurrency).await,
            None => Ok(()),
        };
    }
    let (view, config) = c.state().read(|s| (s.planning_view(now), s.rebalance().clone()));
    let ppm = imbalance_ppm(&view.input());
    let above = config.level.act_above().is_some_and(|a| f64::from(ppm) >= a * 1_000_000.0);
    let held = {
        let mut r = rounds.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        r.held = if above { r.held.saturating_add(1) } else { 0 };
        r.held
    };
    if let Some(plan) = applying {
        return drive(c, rounds, spawn, &plan, config.cluster_concurrency).await;
    }
    let busy = c.state().read(|s| s.operations().values().any(|o| !o.phase.is_terminal()));
    if !config.auto || held < config.hold_rounds || busy {
        return Ok(());
    }
    let (purpose, plan, digest) = make_plan(c, &PlanRequest::default()).await?;
    rounds.lock().unwrap_or_else(std::sync::PoisonError::into_inner).held = 0;
    if plan.moves.is_empty() {
        tracing::debug!(imbalance_ppm = ppm, notes = ?plan.notes, "rebalance: the imbalance held, but no move qualifies");
        return Ok(());
    }
    let actor = agent_actor(c);
    let id = record(c, &actor, purpose, plan, digest).await?;
    let approval = approve(c, &actor, id).await?;
    tracing::info!(?approval, imbalance_ppm = ppm, "rebalance: auto mode planned");
    Ok(())
}

/// Drives the applying `plan` one step.
async fn drive(
    c: &dyn Cluster,
    rounds: &std::sync::Mutex<Rounds>,
    spawn: &(dyn Fn(String, MigrateRequest) + Sync),
    plan: &PlanRecord,
    cluster_concurrency: u32,
) -> Result<(), Error> {
    let now = c.now_ms();
    rounds.lock().unwrap_or_else(std::sync::PoisonError::into_inner).started.retain(|(p, _), _| *p == plan.id);
    let states = c.state().read(|s| move_states(s, plan));
    let end = |e: PlanEnd| Command::EndPlan { id: plan.id, end: e };
    let actor = agent_actor(c);
    if let Some((i, MoveState::Failed { reason, .. })) =
        states.iter().enumerate().find(|(_, s)| matches!(s, MoveState::Failed { .. }))
    {
        let m = &plan.plan.moves[i];
        let reason = format!("move {} ({} {} -> {}) failed: {reason}", i + 1, m.domain, m.source, m.target);
        c.propose(&actor, end(PlanEnd::Failed { reason: clip(reason) })).await?;
        return Ok(());
    }
    if states.iter().all(|s| matches!(s, MoveState::Done { .. })) {
        let notes = vec![format!("{} move(s) made", states.len())];
        c.propose(&actor, end(PlanEnd::Done { notes })).await?;
        return Ok(());
    }
    let mut running = states.iter().filter(|s| matches!(s, MoveState::Running { .. })).count() as u32;
    for (i, m) in plan.plan.moves.iter().enumerate() {
        if running >= cluster_concurrency.max(1) {
            break;
        }
        if states[i] != MoveState::Pending {
            continue;
        }
        // An earlier move that shares a host goes first (what it frees may be what this one needs).
        let blocked = plan.plan.moves[..i].iter().zip(&states).any(|(e, st)| {
            !matches!(st, MoveState::Done { .. })
                && [&e.source, &e.target].iter().any(|h| **h == m.source || **h == m.target)
        });
        if blocked {
            continue;
        }
        let started =
            rounds.lock().unwrap_or_else(std::sync::PoisonError::into_inner).started.get(&(plan.id, i)).copied();
        match started {
            Some((at, _)) if now < at.saturating_add(MOVE_START_WAIT_MS) => {
                running += 1;
                continue;
            }
            Some((_, n)) if n >= MOVE_STARTS_MAX => {
                let reason = format!(
                    "move {} ({} {} -> {}) was started {n} times and no migration was recorded",
                    i + 1,
                    m.domain,
                    m.source,
                    m.target
                );
                c.propose(&actor, end(PlanEnd::Failed { reason: clip(reason) })).await?;
                return Ok(());
            }
            _ => {}
        }
        // The state must still be the one the move was planned in.
        let check = c.state().read(|s| {
            let at = s.domain(&m.domain).map(|d| d.host.clone());
            if at.as_deref() != Some(m.source.as_str()) {
                return Err(format!(
                    "{} is on {} now, not {}",
                    m.domain,
                    at.unwrap_or_else(|| "no host".into()),
                    m.source
                ));
            }
            for h in [&m.source, &m.target] {
                match s.host(h).map(|x| x.status) {
                    Some(HostStatus::Up) => {}
                    Some(other) => return Err(format!("{h} is {other}")),
                    None => return Err(format!("{h} left the cluster")),
                }
            }
            Ok(s.host(&m.source).map(|h| h.address.clone()).unwrap_or_default())
        });
        let addr = match check {
            Ok(addr) => addr,
            Err(why) => {
                let reason =
                    format!("move {} ({} {} -> {}) no longer holds: {why}", i + 1, m.domain, m.source, m.target);
                c.propose(&actor, end(PlanEnd::Failed { reason: clip(reason) })).await?;
                return Ok(());
            }
        };
        {
            let mut r = rounds.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let e = r.started.entry((plan.id, i)).or_insert((now, 0));
            *e = (now, e.1 + 1);
        }
        tracing::info!(plan = plan.id, domain = %m.domain, source = %m.source, target = %m.target, "rebalance: move starts");
        spawn(
            addr,
            MigrateRequest {
                domain: m.domain.clone(),
                target: m.target.clone(),
                new_name: None,
                user: String::new(),
                password: String::new(),
                dry_run: false,
                plan: Some(plan.id),
                ticket: None,
            },
        );
        running += 1;
    }
    Ok(())
}

/// `rebalance cancel`: ends an applying plan; moves running go on to their end.
pub async fn cancel(c: &dyn Cluster, actor: &str, id: u64) -> Result<(), Error> {
    c.propose(actor, Command::EndPlan { id, end: PlanEnd::Cancelled }).await.map(|_| ())
}

/// Moves of applying plans whose migrations run now.
pub fn moves_in_flight(s: &tern_raft_store::State) -> u32 {
    s.plans()
        .values()
        .filter(|p| p.status == PlanStatus::Applying)
        .map(|p| move_states(s, p).iter().filter(|m| matches!(m, MoveState::Running { .. })).count() as u32)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tern_raft_store::limits::{PLAN_NOTES_MAX, TEXT_BYTES_MAX};

    #[test]
    fn a_plan_with_long_and_many_notes_still_fits_a_record() {
        // Goal: notes over the record's limits are cut, not refused: each within TEXT_BYTES_MAX, at most
        // PLAN_NOTES_MAX, the last counting what was left out.
        let mut notes: Vec<String> = (0..100).map(|i| format!("{i}: {}", "é".repeat(200))).collect();
        notes[0].push('\n');
        bound_notes(&mut notes);
        assert_eq!(notes.len(), PLAN_NOTES_MAX);
        assert!(notes.iter().all(|n| n.len() <= TEXT_BYTES_MAX && !n.chars().any(char::is_control)));
        assert_eq!(notes.last().map(String::as_str), Some("... and 37 more note(s)"));
        let mut short = vec!["fine".to_string()];
        bound_notes(&mut short);
        assert_eq!(short, ["fine"]);
        // A failed move's reason is cut the same way before EndPlan carries it.
        assert!(clip("x".repeat(1000)).len() <= TEXT_BYTES_MAX);
    }
}
