//! Bugs the simulation has found that are not fixed yet, by the signature of the
//! failure they cause. A run whose every problem matches one known bug is reported
//! as that bug (with its replay command) instead of as a new failure, so that the CI
//! range keeps looking for new ones; `--strict` counts such runs as failures again.
//! Each bug is reproduced on purpose by a named scenario (see `tests/ci.rs`).
//! Remove an entry when its bug is fixed.

use crate::run::Failure;

/// A known, unfixed bug and how to recognise its failure.
pub struct KnownBug {
    pub id: &'static str,
    /// Where the bug is and what it does.
    pub summary: &'static str,
    matches: fn(&Failure) -> bool,
}

/// The known bugs, most frequent first.
pub const KNOWN_BUGS: &[KnownBug] = &[
    KnownBug {
        id: "orphaned-preparing-operation",
        summary: "tern-migrate: a migration operation is left Preparing forever when the \
                  coordinator's AbortOperation (or the answer to its BeginOperation) is lost: \
                  `abort` is tried once, and recovery skips every operation begun since the \
                  agent started (`Registry::may_own`), while an operation without a reservation \
                  has no lease to expire it; the domain can never migrate again until that \
                  agent restarts (scenario leader-partitioned-during-prepare)",
        matches: |f| heal_reasons_all(f, is_orphan),
    },
    KnownBug {
        id: "guest-left-suspended",
        summary: "tern-migrate: when a proposal after the final copy fails (the `?` on \
                  AdvanceOperation(Committing)), the coordinator returns without resuming the \
                  guest, which stays suspended on its source and runs nowhere \
                  (scenario partition-source-target-from-leader)",
        matches: |f| heal_reasons_all(f, |r| is_orphan(r) || is_not_running(r)) && heal_reasons_any(f, is_not_running),
    },
    KnownBug {
        id: "recovery-removes-incoming-guest",
        summary: "tern-migrate: after its agent restarts, a host's recovery takes the incoming \
                  copy of a guest migrating back to it for the leftover of an old Done \
                  migration from that host and removes it: the guest is lost \
                  (scenario round-trip)",
        matches: |f| match f {
            Failure::Safety(v) => !v.is_empty() && v.iter().all(|x| x.what.ends_with("is on no server at all: lost")),
            _ => false,
        },
    },
];

fn is_orphan(r: &str) -> bool {
    r.starts_with("operation ") && r.contains("begun by agent:") && r.ends_with("is still preparing")
}

fn is_not_running(r: &str) -> bool {
    r.starts_with("guest ") && r.contains(" is active on [] (present on [")
}

fn heal_reasons_all(f: &Failure, each: impl Fn(&str) -> bool) -> bool {
    match f {
        Failure::Liveness { phase: "heal", reasons, .. } => !reasons.is_empty() && reasons.iter().all(|r| each(r)),
        _ => false,
    }
}

fn heal_reasons_any(f: &Failure, one: impl Fn(&str) -> bool) -> bool {
    match f {
        Failure::Liveness { phase: "heal", reasons, .. } => reasons.iter().any(|r| one(r)),
        _ => false,
    }
}

/// The known bug this failure is the signature of, if any.
pub fn known_bug(f: &Failure) -> Option<&'static KnownBug> {
    KNOWN_BUGS.iter().find(|b| (b.matches)(f))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::Violation;

    fn heal(reasons: &[&str]) -> Failure {
        Failure::Liveness { phase: "heal", at_ms: 1, reasons: reasons.iter().map(|r| r.to_string()).collect() }
    }

    const ORPHAN: &str = "operation 3 (Migration { .. }, begun by agent:m10-1-1 at 2660 ms) is still preparing";
    const DOWN: &str = "guest ldom1 is active on [] (present on [\"m10-1-2\"])";

    #[test]
    fn each_signature_matches_its_bug_and_nothing_else() {
        // Goal: the known-bug filter takes exactly the failures of each known bug, never one with another problem.
        let id = |f: &Failure| known_bug(f).map(|b| b.id);
        assert_eq!(id(&heal(&[ORPHAN])), Some("orphaned-preparing-operation"));
        assert_eq!(id(&heal(&[DOWN])), Some("guest-left-suspended"));
        assert_eq!(id(&heal(&[ORPHAN, DOWN])), Some("guest-left-suspended"));
        let lost = Violation { at_ms: 1, what: "guest ldom1 is on no server at all: lost".into() };
        assert_eq!(id(&Failure::Safety(vec![lost.clone()])), Some("recovery-removes-incoming-guest"));
        let twice = Violation { at_ms: 1, what: "guest ldom1 is active on [\"a\", \"b\"] at once".into() };
        assert_eq!(id(&Failure::Safety(vec![lost, twice])), None);
        assert_eq!(id(&heal(&[ORPHAN, "2 leaders"])), None);
        assert_eq!(id(&heal(&[&ORPHAN.replace("agent:m10-1-1", "user:chaos")])), None, "the workload's own leftovers");
        let boot = Failure::Liveness { phase: "boot", at_ms: 1, reasons: vec![ORPHAN.into()] };
        assert_eq!(id(&boot), None);
    }
}
