//! Rebalance plans (RB-04): recorded, approved if the state they were made from still
//! holds, followed by their moves' migrations, ended.

use super::*;
use crate::state::command::PlanEnd;

/// Whether `actor` is an agent (its own commands) rather than a user.
fn is_agent(actor: &str) -> bool {
    actor.starts_with("agent:")
}

impl State {
    fn plan_checked(&self, id: u64) -> Checked<&PlanRecord> {
        match self.plans.get(&id) {
            Some(p) => Ok(p),
            None => reject(RejectCode::PlanUnknown, format!("no rebalance plan {id} (plans are kept while recent)")),
        }
    }

    /// An agent plans and approves on its own only in auto mode (RB-04).
    fn agent_allowed(&self, actor: &str, what: &str) -> Checked<()> {
        if is_agent(actor) && !self.rebalance.auto {
            return reject_rule(
                RejectCode::NotPermitted,
                Rule::Rb(4),
                format!("{actor} may not {what} while rebalance auto mode is off"),
            );
        }
        Ok(())
    }

    pub(super) fn record_plan(
        &mut self,
        now: u64,
        actor: &str,
        purpose: &PlanPurpose,
        plan: &RebalancePlan,
        digest: u64,
    ) -> Response {
        self.agent_allowed(actor, "record a rebalance plan")?;
        for m in &plan.moves {
            self.host_checked(&m.source)?;
            self.host_checked(&m.target)?;
        }
        let id = self.meta.last_plan_id + 1;
        self.meta.last_plan_id = id;
        let record = PlanRecord {
            id,
            purpose: purpose.clone(),
            plan: plan.clone(),
            digest,
            status: PlanStatus::Shown,
            actor: actor.to_string(),
            applied_by: None,
            made_ms: now,
            updated_ms: now,
            notes: Vec::new(),
        };
        self.plans.insert(id, record);
        self.touch(RowKey::Plan(id));
        // Keep the newest; never drop one that is applying.
        while self.plans.len() > PLANS_KEPT_MAX {
            let Some(old) = self.plans.values().find(|p| p.status != PlanStatus::Applying).map(|p| p.id) else { break };
            self.plans.remove(&old);
            self.touch(RowKey::Plan(old));
        }
        Ok(Outcome::PlanRecorded { id })
    }

    pub(super) fn apply_plan(&mut self, now: u64, actor: &str, id: u64) -> Response {
        self.agent_allowed(actor, "apply a rebalance plan")?;
        let plan = self.plan_checked(id)?;
        if plan.status != PlanStatus::Shown {
            return reject(
                RejectCode::PlanStatus,
                format!("plan {id} is {}; only a shown plan is applied", plan.status.name()),
            );
        }
        if let Some(other) = self.plans.values().find(|p| p.status == PlanStatus::Applying) {
            return reject_rule(
                RejectCode::PlanStatus,
                Rule::Rb(3),
                format!("plan {} is applying; one plan runs at a time", other.id),
            );
        }
        let digest = self.placement_digest(now);
        if digest != plan.digest {
            return reject_rule(
                RejectCode::PlanStale,
                Rule::Rb(4),
                format!("the cluster changed since plan {id} was made (hosts, guests or reservations); plan again"),
            );
        }
        // Approval stands for the login on the target (OP-04), so only the planner's own
        // moves get it: the plan must be exactly what the planner makes now, here.
        let level = tern_model::rebalance::Level::new(plan.plan.level).ok();
        let fresh = self.planning_view(now).plan(&plan.purpose, level);
        if fresh.as_ref().map(|p| &p.moves) != Ok(&plan.plan.moves) {
            return reject_rule(
                RejectCode::PlanStale,
                Rule::Rb(4),
                format!("plan {id} is not what the planner makes from the replicated state now; plan again"),
            );
        }
        let mut plan = plan.clone();
        plan.status = PlanStatus::Applying;
        plan.applied_by = Some(actor.to_string());
        plan.updated_ms = now;
        self.plans.insert(id, plan);
        self.touch(RowKey::Plan(id));
        Ok(Outcome::PlanApplying)
    }

    pub(super) fn end_plan(&mut self, now: u64, actor: &str, id: u64, end: &PlanEnd) -> Response {
        let plan = self.plan_checked(id)?;
        if plan.status != PlanStatus::Applying {
            return reject(RejectCode::PlanStatus, format!("plan {id} is {}, not applying", plan.status.name()));
        }
        let mut plan = plan.clone();
        plan.status = match end {
            PlanEnd::Done { notes } => {
                plan.notes.extend(notes.iter().cloned());
                PlanStatus::Done
            }
            PlanEnd::Failed { reason } => PlanStatus::Failed { reason: reason.clone() },
            PlanEnd::Cancelled => PlanStatus::Cancelled { by: actor.to_string() },
        };
        plan.updated_ms = now;
        self.plans.insert(id, plan);
        self.touch(RowKey::Plan(id));
        Ok(Outcome::PlanEnded)
    }

    /// A migration begun as a move of plan `id` must be one of its moves, while it
    /// applies (so a plan's approval stands for nothing else).
    pub(in crate::state) fn check_plan_move(&self, id: u64, domain: &str, source: &str, target: &str) -> Checked<()> {
        let plan = self.plan_checked(id)?;
        if plan.status != PlanStatus::Applying {
            return reject_rule(
                RejectCode::PlanStatus,
                Rule::Rb(4),
                format!("plan {id} is {}; its moves run only while it applies", plan.status.name()),
            );
        }
        if !plan.plan.moves.iter().any(|m| m.domain == domain && m.source == source && m.target == target) {
            return reject_rule(
                RejectCode::OperationMismatch,
                Rule::Rb(4),
                format!("plan {id} has no move of {domain} from {source} to {target}"),
            );
        }
        Ok(())
    }
}
