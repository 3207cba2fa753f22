//! Choosing a target for a guest among several servers, with the same preflight and
//! fitting as a single migration. Evacuation (UC-1) uses it now; HA failover (HA-04)
//! and the rebalancer (RB-03) are meant to plan with it too.

use crate::Binding;
use crate::preflight::{MigrationQuery, Violation, preflight};
use crate::server::{Reserved, Server};

/// A server that could take the guest, with what it would reserve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub target: String,
    pub binding: Binding,
    /// Free memory left on the target after the move.
    pub free_after: u64,
}

/// Why no server could take the guest: each candidate's violations.
pub type Refusals = Vec<(String, Vec<Violation>)>;

/// Picks the target for `domain` of `source` among `candidates` (server, its reserved
/// resources): every LM rule must pass; among those that pass, the one left with the
/// most free memory wins (spreading load), ties broken by host name. Pure.
pub fn choose_target(source: &Server, domain: &str, candidates: &[(&Server, &Reserved)]) -> Result<Choice, Refusals> {
    let mut refusals = Vec::new();
    let mut best: Option<Choice> = None;
    let mut sorted: Vec<&(&Server, &Reserved)> = candidates.iter().filter(|(s, _)| s.name != source.name).collect();
    sorted.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    for (target, reserved) in sorted {
        let report = preflight(&MigrationQuery { source, target, domain, new_name: None, target_reserved: reserved });
        match report.binding.filter(|_| report.errors.is_empty()) {
            Some(binding) => {
                let free: u64 = target.free_ranges(reserved).iter().map(|r| r.size).sum();
                let used: u64 = binding.memory.iter().map(|r| r.size).sum();
                let choice = Choice { target: target.name.clone(), binding, free_after: free.saturating_sub(used) };
                if best.as_ref().is_none_or(|b| choice.free_after > b.free_after) {
                    best = Some(choice);
                }
            }
            None => refusals.push((target.name.clone(), report.errors)),
        }
    }
    best.ok_or(refusals)
}
