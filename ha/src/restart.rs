//! HA-04 / HA-05: where a lost host's guests restart. Pure: the lost host's last
//! replicated inventory, each guest's priority and the candidate servers (each with
//! what active reservations hold on it) in; a plan out.
//!
//! - Guests go in priority order (high, medium, low; ties by name); `never` guests
//!   are listed and never placed (HA-04).
//! - Each guest's target is chosen by [`tern_model::planner::choose_target`], the
//!   same preflight and exact fitting as a live migration, so every LM rule holds.
//!   This is stricter than a restart needs (the rules about the dead source, LM-10
//!   and LM-11, apply too): a guest refused for them waits, it is never misplaced.
//! - What one placement takes is added to that target's reserved resources before the
//!   next guest is planned, so two restarts never share a core, a byte or a console
//!   port; a guest nothing can take waits, reported with every candidate's reasons,
//!   and nothing is over-committed (HA-05).
//!
//! The plan is a proposal: each placement still goes through a `Reserve` in the
//! replicated state, whose check is the arbiter.

use std::collections::BTreeMap;
use tern_model::planner::{Refusals, choose_target};
use tern_model::{Binding, DomainKind, Reserved, Server};
use tern_raft_store::HaPriority;

/// One guest placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restart {
    pub domain: String,
    pub priority: HaPriority,
    pub target: String,
    pub binding: Binding,
}

/// One guest that no candidate can take now (HA-05).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub domain: String,
    pub priority: HaPriority,
    /// Each candidate's violations.
    pub reasons: Refusals,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestartPlan {
    /// In the order they should be reserved and started.
    pub restarts: Vec<Restart>,
    pub waiting: Vec<Waiting>,
    /// Guests whose priority is `never`.
    pub never: Vec<String>,
}

/// Plans the restart of `guests` (each with its priority) of `lost` on `candidates`
/// (see the module doc). A named guest `lost`'s inventory does not hold as a guest is
/// skipped: nothing is known to restart it from.
pub fn plan_restarts(
    lost: &Server,
    guests: &BTreeMap<String, HaPriority>,
    candidates: &[(Server, Reserved)],
) -> RestartPlan {
    let mut guests: Vec<(HaPriority, &str)> = guests
        .iter()
        .filter(|(name, _)| lost.domain(name).is_some_and(|d| d.kind == DomainKind::Guest))
        .map(|(name, p)| (*p, name.as_str()))
        .collect();
    guests.sort_by_key(|(p, name)| (p.rank(), *name));
    let mut reserved: Vec<Reserved> = candidates.iter().map(|(_, r)| r.clone()).collect();
    let mut plan = RestartPlan::default();
    for (priority, domain) in guests {
        if priority == HaPriority::Never {
            plan.never.push(domain.to_string());
            continue;
        }
        let refs: Vec<(&Server, &Reserved)> = candidates.iter().map(|(s, _)| s).zip(reserved.iter()).collect();
        match choose_target(lost, domain, &refs) {
            Ok(choice) => {
                if let Some(i) = candidates.iter().position(|(s, _)| s.name == choice.target) {
                    reserved[i].add(&choice.binding);
                }
                let (target, binding) = (choice.target, choice.binding);
                plan.restarts.push(Restart { domain: domain.to_string(), priority, target, binding });
            }
            Err(reasons) => plan.waiting.push(Waiting { domain: domain.to_string(), priority, reasons }),
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    //! Restart plans on the seed's servers (deploy/layouts), varied in place.
    use super::*;

    fn seed(name: &str) -> String {
        let dir = tern_hypervisor::layout::shipped_layouts_dir();
        std::fs::read_to_string(dir.join(format!("{name}.toml"))).expect("seed layout")
    }

    fn server(name: &str, text: &str) -> Server {
        tern_hypervisor::layout::parse_layout(name, text).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    /// m10-1-1 with a second guest, ldom2: cores 8-11 and 16G of the free block.
    fn lost_with_two_guests() -> Server {
        let text = seed("m10-1-1")
            .replace(
                "  { pa = 0x7e0660800000, size = \"39416M\" },",
                "  { pa = 0x7e0660800000, size = \"16G\", bound = \"ldom2\" },\n  { pa = 0x7e0a60800000, size = \"23032M\" },",
            )
            + "\n[[domain]]\nname = \"ldom2\"\nkind = \"guest\"\ncores = \"8-11\"\ncpu_arch = \"native\"\nos = \"Solaris 11.1.17.5.0\"\nvdisks = [{ name = \"vdisk0\", volume = \"vol2@primary-vds0\" }]\nvnets = [{ name = \"vnet0\", service = \"primary-vsw0\" }]\nconsole = { service = \"primary-vcc0\", port = 5002 }\n";
        server("m10-1-1", &text)
    }

    fn candidates(servers: &[Server]) -> Vec<(Server, Reserved)> {
        servers.iter().map(|s| (s.clone(), Reserved::default())).collect()
    }

    fn priorities(list: &[(&str, HaPriority)]) -> BTreeMap<String, HaPriority> {
        list.iter().map(|(d, p)| (d.to_string(), *p)).collect()
    }

    /// Every guest of `lost`, at the default priority.
    fn all(lost: &Server) -> BTreeMap<String, HaPriority> {
        lost.domains
            .iter()
            .filter(|d| d.kind == DomainKind::Guest)
            .map(|d| (d.name.clone(), HaPriority::default()))
            .collect()
    }

    #[test]
    fn every_guest_restarts_where_the_preflight_passes_without_sharing_a_core() {
        // Goal: HA-04: both guests of a lost M10 restart on m10-1-2, on different cores and memory.
        let lost = lost_with_two_guests();
        let plan = plan_restarts(&lost, &all(&lost), &candidates(&[server("m10-1-2", &seed("m10-1-2"))]));
        assert!(plan.waiting.is_empty(), "{:?}", plan.waiting);
        let placed: Vec<(&str, &str)> = plan.restarts.iter().map(|r| (r.domain.as_str(), r.target.as_str())).collect();
        assert_eq!(placed, [("ldom1", "m10-1-2"), ("ldom2", "m10-1-2")]);
        let (a, b) = (&plan.restarts[0].binding, &plan.restarts[1].binding);
        assert!(a.strands.iter().all(|s| !b.strands.contains(s)), "{a} / {b}");
        assert!(a.memory.iter().all(|m| b.memory.iter().all(|n| !m.overlaps(n))), "{a} / {b}");
        assert_ne!(a.console_port, b.console_port);
    }

    #[test]
    fn short_of_capacity_the_higher_priority_restarts_and_the_rest_waits_with_reasons() {
        // Goal: HA-05: with room for one 4-core guest, the high-priority one goes; the other waits (LM-06), nothing over-committed.
        let small = server("m10-1-2", &seed("m10-1-2").replace("activated = \"0-15\"", "activated = \"0-9\""));
        let p = priorities(&[("ldom1", HaPriority::Low), ("ldom2", HaPriority::High)]);
        let plan = plan_restarts(&lost_with_two_guests(), &p, &candidates(&[small]));
        let placed: Vec<&str> = plan.restarts.iter().map(|r| r.domain.as_str()).collect();
        assert_eq!(placed, ["ldom2"]);
        assert_eq!(plan.waiting.len(), 1);
        let w = &plan.waiting[0];
        assert_eq!((w.domain.as_str(), w.priority), ("ldom1", HaPriority::Low));
        let rules: Vec<String> = w.reasons.iter().flat_map(|(_, vs)| vs.iter().map(|v| v.rule.to_string())).collect();
        assert!(rules.contains(&"LM-06".to_string()), "{rules:?}");
    }

    #[test]
    fn never_guests_are_listed_and_not_placed() {
        // Goal: HA-04: priority none means never restarted elsewhere.
        let p = priorities(&[("ldom1", HaPriority::Never), ("ldom2", HaPriority::Medium)]);
        let plan = plan_restarts(&lost_with_two_guests(), &p, &candidates(&[server("m10-1-2", &seed("m10-1-2"))]));
        assert_eq!(plan.never, ["ldom1"]);
        assert!(plan.restarts.iter().all(|r| r.domain != "ldom1"));
    }

    #[test]
    fn a_guest_nothing_can_take_waits_with_each_candidates_reasons() {
        // Goal: LM-09 on the fragmented server and LM-07 on the T4 are both reported; no restart is planned.
        let lost = server("m10-1-1", &seed("m10-1-1"));
        let others = [server("m10-1-fragmented", &seed("m10-1-fragmented")), server("t4-1", &seed("t4-1"))];
        let plan = plan_restarts(&lost, &all(&lost), &candidates(&others));
        assert!(plan.restarts.is_empty());
        let hosts: Vec<&str> = plan.waiting[0].reasons.iter().map(|(h, _)| h.as_str()).collect();
        assert_eq!(hosts, ["m10-1-fragmented", "t4-1"]);
    }

    #[test]
    fn only_the_named_guests_are_planned() {
        // Goal: a guest already being restarted (not named) is not planned a second time.
        let lost = lost_with_two_guests();
        let p = priorities(&[("ldom2", HaPriority::Low)]);
        let plan = plan_restarts(&lost, &p, &candidates(&[server("m10-1-2", &seed("m10-1-2"))]));
        let placed: Vec<&str> = plan.restarts.iter().map(|r| r.domain.as_str()).collect();
        assert_eq!(placed, ["ldom2"]);
    }

    #[test]
    fn reservations_already_held_on_a_candidate_are_respected() {
        // Goal: a candidate's active reservations count as taken: a restart never takes a reserved core.
        let target = server("m10-1-2", &seed("m10-1-2").replace("activated = \"0-15\"", "activated = \"0-9\""));
        let lost = server("m10-1-1", &seed("m10-1-1"));
        let mut held = Reserved::default();
        held.strands.extend(8..20); // cores 4-9 of a 2-thread M10: all but 0-3 (primary)
        let plan = plan_restarts(&lost, &all(&lost), &[(target, held)]);
        assert!(plan.restarts.is_empty(), "{:?}", plan.restarts);
        assert_eq!(plan.waiting.len(), 1);
    }
}
