//! Table tests of the state machine through its public API: each command's checks,
//! its rejections (codes, rules and the numbers in the messages) and its effects.
//! No tokio, no clock: time is the `proposed_at_ms` the test stamps.

mod common;

use common::*;
use std::collections::BTreeSet;
use tern_model::{DomainKind, Range, Reserved, Rule, units::GIB};
use tern_raft_store::limits::AUDIT_RECORDS_MAX;
use tern_raft_store::*;

/// A state and a log position; each command gets the next index and 10 ms later.
struct World {
    state: State,
    index: u64,
    now: u64,
}

impl World {
    fn run_at(&mut self, at_ms: u64, command: Command) -> Response {
        self.index += 1;
        self.now = self.now.max(at_ms);
        let response = self.state.apply(self.index, &req(at_ms, command));
        let broken = self.state.invariant_violations();
        assert!(broken.is_empty(), "invariants broken: {broken:#?}");
        response
    }

    fn run(&mut self, command: Command) -> Response {
        let at = self.now + 10;
        self.run_at(at, command)
    }

    #[track_caller]
    fn ok(&mut self, command: Command) -> Outcome {
        let name = command.name();
        self.run(command).unwrap_or_else(|r| panic!("{name} rejected: {r}"))
    }

    #[track_caller]
    fn rejected(&mut self, command: Command) -> Rejection {
        let name = command.name();
        match self.run(command) {
            Ok(o) => panic!("{name} accepted: {o:?}"),
            Err(r) => r,
        }
    }

    fn begin(&mut self, domain: &str, source: &str, target: &str, new_name: Option<&str>, dry_run: bool) -> u64 {
        let kind = OperationKind::Migration {
            domain: domain.into(),
            source: source.into(),
            target: target.into(),
            new_name: new_name.map(Into::into),
            dry_run,
            plan: None,
        };
        match self.ok(Command::BeginOperation { kind }) {
            Outcome::OperationBegun { operation } => operation,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn reserve_cmd(&self, op: u64, domain: &str, binding: tern_model::Binding, lease_ms: u64) -> Command {
        Command::Reserve {
            operation: op,
            target: "b".into(),
            source: "a".into(),
            domain: domain.into(),
            binding,
            lease_ms,
        }
    }

    /// Reserves and returns (reservation, token, lease_expires_ms).
    fn reserve(&mut self, op: u64, domain: &str, binding: tern_model::Binding, lease_ms: u64) -> (u64, u64, u64) {
        match self.ok(self.reserve_cmd(op, domain, binding, lease_ms)) {
            Outcome::Reserved { reservation, token, lease_expires_ms } => (reservation, token, lease_expires_ms),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn inventory(&self, host: &str) -> tern_model::Server {
        self.state.host(host).and_then(|h| h.inventory.clone()).expect("inventory")
    }
}

/// Hosts a (ldom1 on cores 1-2 and [2G,3G), console 5001; ldom2 on core 3 and
/// [3G,4G), console 5002), b (8 cores, 8 GiB free, no guests) and c (like b).
fn world() -> World {
    let mut w = World { state: State::new(), index: 0, now: 1_000 };
    for h in ["a", "b", "c"] {
        w.ok(Command::RegisterHost { host: spec(h) });
    }
    let a = with_guest(server("a", 8, 8), "ldom1", &[1, 2], gib(2), Some(5001));
    let a = with_guest(a, "ldom2", &[3], gib(3), Some(5002));
    w.ok(Command::ReportInventory { server: a });
    w.ok(Command::ReportInventory { server: server("b", 8, 8) });
    w.ok(Command::ReportInventory { server: server("c", 8, 8) });
    w
}

/// ldom1's shape on b: cores 4-5, [4G, 5G), console 5003.
fn ldom1_on_b() -> tern_model::Binding {
    binding("ldom1", &[4, 5], gib(4), Some(5003))
}

#[test]
fn inventory_reports_index_guests_and_only_guests() {
    // Goal: accepted reports index every guest on its host; control domains are not indexed.
    let w = world();
    let domains: Vec<(&str, &str)> = w.state.domains().iter().map(|(n, r)| (n.as_str(), r.host.as_str())).collect();
    assert_eq!(domains, vec![("ldom1", "a"), ("ldom2", "a")]);
    assert_eq!(w.state.host("a").map(|h| h.status), Some(HostStatus::Up));
}

#[test]
fn reserve_holds_free_resources_and_tokens_only_grow() {
    // Goal: a reservation on free resources is accepted; ids and fencing tokens grow.
    let mut w = world();
    let op1 = w.begin("ldom1", "a", "b", None, false);
    let (r1, t1, exp1) = w.reserve(op1, "ldom1", ldom1_on_b(), 30_000);
    assert_eq!(exp1, w.now + 30_000);
    let op2 = w.begin("ldom2", "a", "b", None, false);
    let (r2, t2, _) = w.reserve(op2, "ldom2", binding("ldom2", &[6], gib(6), Some(5004)), 30_000);
    assert!(r2 > r1 && t2 > t1);
    assert_eq!(w.state.operation(op1).map(|o| o.phase.clone()), Some(Phase::Reserved));
    assert_eq!(w.state.host("b").map(|h| h.fencing_token_max), Some(t2));
    let reserved = w.state.reserved_on("b", w.now);
    assert_eq!(reserved.strands, BTreeSet::from([8, 9, 10, 11, 12, 13]));
    assert_eq!(reserved.console_ports, BTreeSet::from([5003, 5004]));
}

#[test]
fn reserve_rejects_a_strand_bound_in_the_inventory_naming_it() {
    // Goal: LM-06: a strand already bound on the target is refused, with its id and holder.
    let mut w = world();
    let op = w.begin("ldom1", "a", "b", None, false);
    // Core 0 holds primary on b.
    let r = w.rejected(w.reserve_cmd(op, "ldom1", binding("ldom1", &[0, 5], gib(4), Some(5003)), 30_000));
    assert_eq!(r.code, RejectCode::StrandUnavailable);
    assert_eq!(r.rule, Some(Rule::Lm(6)));
    assert!(r.message.contains("CPU 0 is bound to primary"), "{}", r.message);
}

#[test]
fn reserve_rejects_overlap_with_another_active_reservation() {
    // Goal: a second reservation touching a reserved strand, memory byte or console port
    // is refused, naming the reservation that holds it (LM-06, LM-09, LM-13).
    let mut w = world();
    let op1 = w.begin("ldom1", "a", "b", None, false);
    let (r1, _, _) = w.reserve(op1, "ldom1", ldom1_on_b(), 30_000);
    let op2 = w.begin("ldom2", "a", "b", None, false);
    let cases = [
        (binding("ldom2", &[5], gib(6), Some(5004)), RejectCode::StrandUnavailable, Rule::Lm(6), "CPU 10"),
        (
            binding("ldom2", &[6], Range::new(4 * GIB + GIB / 2, GIB), Some(5004)),
            RejectCode::MemoryUnavailable,
            Rule::Lm(9),
            "overlaps 0x100000000+1G",
        ),
        (
            binding("ldom2", &[6], gib(6), Some(5003)),
            RejectCode::ConsolePortUnavailable,
            Rule::Lm(13),
            "console port 5003",
        ),
    ];
    for (b, code, rule, needle) in cases {
        let r = w.rejected(w.reserve_cmd(op2, "ldom2", b, 30_000));
        assert_eq!((r.code, r.rule), (code, Some(rule)), "{r}");
        assert!(r.message.contains(needle), "{}", r.message);
        assert!(r.message.contains(&format!("reservation {r1}")), "{}", r.message);
    }
}

#[test]
fn reserve_rejects_memory_outside_one_free_block_and_wrong_shapes() {
    // Goal: memory must sit in one free range (LM-09); the amount of CPU, the block
    // sizes and having a console must be the guest's (LM-06, LM-09, LM-12, LM-13); CIDs
    // must match the strands.
    let mut w = world();
    let op = w.begin("ldom1", "a", "b", None, false);
    let cases = [
        (binding("ldom1", &[4, 5], gib(1), Some(5003)), RejectCode::MemoryUnavailable, "bound to primary"),
        (binding("ldom1", &[4, 5], gib(10), Some(5003)), RejectCode::MemoryUnavailable, "not inside one free range"),
        (
            binding("ldom1", &[4], gib(4), Some(5003)),
            RejectCode::ShapeMismatch,
            "the guest has 4 CPUs; the binding holds 2",
        ),
        (binding("ldom1", &[4, 5], Range::new(4 * GIB, 2 * GIB), Some(5003)), RejectCode::ShapeMismatch, "[1G]"),
        (
            tern_model::Binding { cids: vec![4], ..binding("ldom1", &[4, 5], gib(4), Some(5003)) },
            RejectCode::BindingInvalid,
            "CIDs [4]",
        ),
        (
            binding("ldom1", &[4, 5], gib(4), Some(6000)),
            RejectCode::ConsolePortUnavailable,
            "outside VCC primary-vcc0's range 5000-5015",
        ),
        (
            binding("ldom1", &[4, 5], gib(4), None),
            RejectCode::ShapeMismatch,
            "has a console on primary-vcc0; the binding must give it a port",
        ),
    ];
    for (b, code, needle) in cases {
        let r = w.rejected(w.reserve_cmd(op, "ldom1", b, 30_000));
        assert_eq!(r.code, code, "{r}");
        assert!(r.message.contains(needle), "{}", r.message);
    }
}

/// `w` with b's free memory reported as two adjacent free rows, [2G, 4G) and [4G, 10G).
fn with_b_in_two_free_rows(w: &mut World) {
    let mut b = server("b", 8, 8);
    b.memory.retain(|m| m.bound.is_some());
    b.memory.push(tern_model::MemoryBlock { pa: 2 * GIB, size: 2 * GIB, bound: None });
    b.memory.push(tern_model::MemoryBlock { pa: 4 * GIB, size: 6 * GIB, bound: None });
    w.ok(Command::ReportInventory { server: b });
}

#[test]
fn reserve_and_commit_accept_a_range_spanning_two_adjacent_free_rows() {
    // Goal: free memory is counted the same way at Reserve, at commit and by
    // free_ranges: adjacent free rows merged, so [3G, 4G) + [4G, 5G) is one free range.
    let mut w = world();
    with_b_in_two_free_rows(&mut w);
    assert_eq!(w.inventory("b").free_ranges(&tern_model::Reserved::default()), vec![Range::new(2 * GIB, 8 * GIB)]);
    let op = w.begin("ldom1", "a", "b", None, false);
    let spanning = Range::new(3 * GIB, GIB);
    let (r, t, _) = w.reserve(op, "ldom1", binding("ldom1", &[4, 5], spanning, Some(5003)), 30_000);
    let outcome = w.ok(Command::CommitMigration {
        operation: op,
        reservation: r,
        token: t,
        downtime_ms: 1,
        total_ms: 2,
        notes: vec![],
    });
    assert!(matches!(outcome, Outcome::Committed { moved: true, .. }), "{outcome:?}");
    assert_eq!(w.inventory("b").memory_of("ldom1"), vec![spanning]);
}

#[test]
fn commit_refuses_a_binding_that_lost_the_guests_shape() {
    // Goal: commit runs the same binding check as Reserve: once the source reports the
    // guest on three cores, the reserved two no longer hold its CPUs (LM-12), and the
    // commit is refused with Reserve's code and nothing moves.
    let mut w = world();
    let op = w.begin("ldom1", "a", "b", None, false);
    let (r, t, _) = w.reserve(op, "ldom1", ldom1_on_b(), 30_000);
    let a = with_guest(server("a", 8, 8), "ldom1", &[1, 2, 4], gib(2), Some(5001));
    w.ok(Command::ReportInventory { server: with_guest(a, "ldom2", &[3], gib(3), Some(5002)) });
    let rejection = w.rejected(Command::CommitMigration {
        operation: op,
        reservation: r,
        token: t,
        downtime_ms: 1,
        total_ms: 2,
        notes: vec![],
    });
    assert_eq!((rejection.code, rejection.rule), (RejectCode::ShapeMismatch, Some(Rule::Lm(12))), "{rejection}");
    assert!(rejection.message.contains("the guest has 6 CPUs; the binding holds 4"), "{rejection}");
    assert_eq!(w.state.domain("ldom1").map(|d| d.host.as_str()), Some("a"));
    assert!(w.inventory("b").domain("ldom1").is_none());
}

#[test]
fn reserve_requires_an_up_target_a_matching_operation_and_a_free_name() {
    // Goal: the target must be Up; the reservation must match its migration; the name
    // on the target must be free (OP-05); a lease must be 1..=10 min.
    let mut w = world();
    let op = w.begin("ldom1", "a", "b", None, false);
    let r = w.rejected(w.reserve_cmd(op, "ldom1", ldom1_on_b(), 0));
    assert_eq!(r.code, RejectCode::InvalidRequest);
    let r = w.rejected(w.reserve_cmd(op, "ldom1", binding("ldom9", &[4, 5], gib(4), None), 30_000));
    assert_eq!(r.code, RejectCode::OperationMismatch);
    let r = w.rejected(Command::Reserve {
        operation: op,
        target: "c".into(),
        source: "a".into(),
        domain: "ldom1".into(),
        binding: ldom1_on_b(),
        lease_ms: 30_000,
    });
    assert_eq!(r.code, RejectCode::OperationMismatch);
    w.ok(Command::SetHostStatus { host: "b".into(), status: HostStatus::Maintenance, expected: None });
    let r = w.rejected(w.reserve_cmd(op, "ldom1", ldom1_on_b(), 30_000));
    assert_eq!(r.code, RejectCode::HostStatus);
    assert!(r.message.contains("maintenance"), "{}", r.message);
    w.ok(Command::SetHostStatus { host: "b".into(), status: HostStatus::Up, expected: None });
    // b reports a domain called ldom1x; a migration renaming ldom2 to it is refused.
    let b = with_guest(server("b", 8, 8), "ldom1x", &[7], gib(9), None);
    w.ok(Command::ReportInventory { server: b });
    let r = w.rejected(Command::BeginOperation {
        kind: OperationKind::Migration {
            domain: "ldom2".into(),
            source: "a".into(),
            target: "b".into(),
            new_name: Some("ldom1x".into()),
            dry_run: false,
            plan: None,
        },
    });
    assert_eq!((r.code, r.rule), (RejectCode::NameTaken, Some(Rule::Op(5))));
}

#[test]
fn an_expired_reservation_blocks_nothing_and_cannot_be_renewed_or_committed() {
    // Goal: once the cluster clock passes a lease, the reservation frees its resources
    // for others and its holder can neither renew nor commit it.
    let mut w = world();
    let op1 = w.begin("ldom1", "a", "b", None, false);
    let (r1, t1, exp1) = w.reserve(op1, "ldom1", ldom1_on_b(), 1_000);
    w.now = exp1; // the lease ends exactly now
    let op2 = w.begin("ldom2", "a", "b", None, false);
    // Same strands as r1 (core 4), other memory: allowed, r1 is no longer active.
    w.reserve(op2, "ldom2", binding("ldom2", &[4], gib(6), Some(5004)), 30_000);
    let r = w.rejected(Command::Renew { reservation: r1, token: t1, lease_ms: 30_000 });
    assert_eq!(r.code, RejectCode::LeaseExpired);
    assert!(r.message.contains(&format!("ended at {exp1} ms")), "{}", r.message);
    let r = w.rejected(Command::CommitMigration {
        operation: op1,
        reservation: r1,
        token: t1,
        downtime_ms: 10,
        total_ms: 100,
        notes: vec![],
    });
    assert_eq!(r.code, RejectCode::LeaseExpired);
}

#[test]
fn a_slow_proposer_clock_cannot_revive_a_lease() {
    // Goal: leases are judged against the largest time applied, so a command stamped
    // earlier (a proposer with a lagging clock) still sees the lease as expired.
    let mut w = world();
    let op = w.begin("ldom1", "a", "b", None, false);
    let (r1, t1, exp1) = w.reserve(op, "ldom1", ldom1_on_b(), 1_000);
    w.run_at(exp1 + 5, Command::Expire { now_ms: 0 }).ok();
    let r = w.run_at(exp1 - 500, Command::Renew { reservation: r1, token: t1, lease_ms: 30_000 });
    assert_eq!(r.map_err(|r| r.code), Err(RejectCode::ReservationUnknown));
    assert_eq!(w.state.clock_ms(), exp1 + 5);
}

#[test]
fn renew_extends_and_never_shortens() {
    // Goal: renew moves the lease to now + lease_ms, but never earlier than it was.
    let mut w = world();
    let op = w.begin("ldom1", "a", "b", None, false);
    let (r1, t1, exp1) = w.reserve(op, "ldom1", ldom1_on_b(), 60_000);
    let short = w.ok(Command::Renew { reservation: r1, token: t1, lease_ms: 1_000 });
    assert_eq!(short, Outcome::Renewed { lease_expires_ms: exp1 });
    let long = w.ok(Command::Renew { reservation: r1, token: t1, lease_ms: 120_000 });
    assert_eq!(long, Outcome::Renewed { lease_expires_ms: w.now + 120_000 });
}

#[test]
fn a_stale_fencing_token_is_rejected() {
    // Goal: renew, release, advance and commit must carry the reservation's own token.
    let mut w = world();
    let op = w.begin("ldom1", "a", "b", None, false);
    let (r1, t1, _) = w.reserve(op, "ldom1", ldom1_on_b(), 30_000);
    let stale = t1 - 1;
    let commands = [
        Command::Renew { reservation: r1, token: stale, lease_ms: 1_000 },
        Command::Release { reservation: r1, token: stale },
        Command::AdvanceOperation {
            operation: op,
            token: Some(stale),
            progress: Progress::Transferring { progress_pct: 10 },
        },
        Command::AdvanceOperation { operation: op, token: None, progress: Progress::Transferring { progress_pct: 10 } },
        Command::CommitMigration {
            operation: op,
            reservation: r1,
            token: stale,
            downtime_ms: 1,
            total_ms: 2,
            notes: vec![],
        },
    ];
    for c in commands {
        let r = w.rejected(c);
        assert_eq!(r.code, RejectCode::StaleToken, "{r}");
    }
    assert!(w.state.reservation(r1).is_some());
}

#[test]
fn commit_moves_the_domain_with_its_new_cids_and_console_port() {
    // Goal: the domain leaves a, is bound on b with the reservation's binding, the index
    // follows, the reservation is consumed and the result reports LM-12/LM-13.
    let mut w = world();
    let op = w.begin("ldom1", "a", "b", None, false);
    let (r1, t1, _) = w.reserve(op, "ldom1", ldom1_on_b(), 30_000);
    for pct in [10, 60, 100] {
        w.ok(Command::AdvanceOperation {
            operation: op,
            token: Some(t1),
            progress: Progress::Transferring { progress_pct: pct },
        });
    }
    let r = w.rejected(Command::AdvanceOperation {
        operation: op,
        token: Some(t1),
        progress: Progress::Transferring { progress_pct: 50 },
    });
    assert_eq!(r.code, RejectCode::PhaseInvalid);
    w.ok(Command::AdvanceOperation { operation: op, token: Some(t1), progress: Progress::Committing });
    let outcome = w.ok(Command::CommitMigration {
        operation: op,
        reservation: r1,
        token: t1,
        downtime_ms: 120,
        total_ms: 9_000,
        notes: vec!["LM-14: guest clock may lag; NTP is recommended".into()],
    });
    let Outcome::Committed { moved: true, result } = outcome else { panic!("unexpected {outcome:?}") };
    assert_eq!((result.old_cids.clone(), result.new_cids.clone()), (vec![1, 2], vec![4, 5]));
    assert_eq!((result.old_console_port, result.new_console_port), (Some(5001), Some(5003)));
    assert_eq!((result.downtime_ms, result.total_ms), (120, 9_000));
    assert!(result.notes.iter().any(|n| n.starts_with("LM-12")));
    assert!(result.notes.iter().any(|n| n.starts_with("LM-13")));
    assert_eq!(w.state.domain("ldom1").map(|d| d.host.as_str()), Some("b"));
    assert!(w.inventory("a").domain("ldom1").is_none());
    let b = w.inventory("b");
    assert_eq!(b.cpu_of("ldom1").cids, vec![4, 5]);
    assert_eq!(b.memory_of("ldom1"), vec![gib(4)]);
    assert_eq!(b.domain("ldom1").and_then(|d| d.console.as_ref()).map(|c| c.port), Some(5003));
    assert!(w.state.reservation(r1).is_none());
    let done = w.state.operation(op).expect("operation kept");
    assert_eq!(done.phase, Phase::Done);
    assert_eq!(done.result.as_ref(), Some(&result));
    // a's old resources are free again: ldom1 can come back to its old cores.
    let back = w.begin("ldom1", "b", "a", None, false);
    let r = w.run(Command::Reserve {
        operation: back,
        target: "a".into(),
        source: "b".into(),
        domain: "ldom1".into(),
        binding: binding("ldom1", &[1, 2], gib(2), Some(5001)),
        lease_ms: 30_000,
    });
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn a_migration_may_rename_the_domain_on_its_target() {
    // Goal: OP-05: with a new name the domain is indexed under it on the target only.
    let mut w = world();
    let op = w.begin("ldom2", "a", "b", Some("web"), false);
    let (r, t, _) = w.reserve(op, "ldom2", binding("web", &[6], gib(6), Some(5004)), 30_000);
    w.ok(Command::CommitMigration {
        operation: op,
        reservation: r,
        token: t,
        downtime_ms: 1,
        total_ms: 2,
        notes: vec![],
    });
    assert!(w.state.domain("ldom2").is_none());
    assert_eq!(w.state.domain("web").map(|d| d.host.as_str()), Some("b"));
    assert!(w.inventory("b").domain("web").is_some());
}

#[test]
fn a_dry_run_commits_without_moving_anything() {
    // Goal: OP-02: committing a dry run ends it Done, releases its reservation, moves nothing.
    let mut w = world();
    let op = w.begin("ldom1", "a", "b", None, true);
    let (r, t, _) = w.reserve(op, "ldom1", ldom1_on_b(), 30_000);
    let outcome = w.ok(Command::CommitMigration {
        operation: op,
        reservation: r,
        token: t,
        downtime_ms: 0,
        total_ms: 0,
        notes: vec![],
    });
    assert!(matches!(outcome, Outcome::Committed { moved: false, .. }));
    assert_eq!(w.state.domain("ldom1").map(|d| d.host.as_str()), Some("a"));
    assert!(w.state.reservations().is_empty());
    assert_eq!(w.state.operation(op).map(|o| o.phase.clone()), Some(Phase::Done));
}

#[test]
fn expire_releases_passed_leases_and_rolls_their_operations_back() {
    // Goal: Expire removes every reservation whose lease passed at now (and only those)
    // and ends their operations RolledBack("lease expired").
    let mut w = world();
    let op1 = w.begin("ldom1", "a", "b", None, false);
    let (r1, _, exp1) = w.reserve(op1, "ldom1", ldom1_on_b(), 1_000);
    let op2 = w.begin("ldom2", "a", "b", None, false);
    let (r2, _, _) = w.reserve(op2, "ldom2", binding("ldom2", &[6], gib(6), Some(5004)), 60_000);
    let outcome = w.ok(Command::Expire { now_ms: exp1 });
    assert_eq!(outcome, Outcome::Expired { released: vec![r1], rolled_back: vec![op1] });
    assert_eq!(
        w.state.operation(op1).map(|o| o.phase.clone()),
        Some(Phase::RolledBack { reason: "lease expired".into() })
    );
    assert!(w.state.reservation(r2).is_some());
    assert!(w.state.reservations().values().all(|r| r.lease_expires_ms > w.state.clock_ms()));
}

#[test]
fn one_running_operation_per_domain_and_abort_releases() {
    // Goal: a second migration of a running domain is refused; aborting (OP-09) ends the
    // first as Cancelled and releases its reservation, after which a new one may start.
    let mut w = world();
    let op = w.begin("ldom1", "a", "b", None, false);
    w.reserve(op, "ldom1", ldom1_on_b(), 30_000);
    let r = w.rejected(Command::BeginOperation { kind: migration("ldom1", "a", "c") });
    assert_eq!(r.code, RejectCode::OperationRunning);
    let outcome = w.ok(Command::AbortOperation { operation: op, outcome: AbortOutcome::Cancelled });
    assert!(matches!(outcome, Outcome::Aborted { released } if released.len() == 1));
    assert_eq!(w.state.operation(op).map(|o| o.phase.clone()), Some(Phase::Cancelled));
    assert!(w.state.reservations().is_empty());
    let r = w.rejected(Command::AbortOperation { operation: op, outcome: AbortOutcome::Cancelled });
    assert_eq!(r.code, RejectCode::OperationFinished);
    w.begin("ldom1", "a", "c", None, false);
}

#[test]
fn migrations_need_a_guest_a_live_source_and_two_servers() {
    // Goal: LM-01 (only guests), LM-02 (source up), OP-01 (target differs), unknown domains.
    let mut w = world();
    let mut begin = |domain: &str, source: &str, target: &str| {
        w.rejected(Command::BeginOperation { kind: migration(domain, source, target) })
    };
    let r = begin("primary", "a", "b");
    assert_eq!((r.code, r.rule), (RejectCode::NotAGuest, Some(Rule::Lm(1))));
    let r = begin("ldom1", "a", "a");
    assert_eq!((r.code, r.rule), (RejectCode::SameServer, Some(Rule::Op(1))));
    let r = begin("nope", "a", "b");
    assert_eq!(r.code, RejectCode::DomainUnknown);
    assert!(r.message.contains("LDom \"nope\" was not found on a"));
    w.ok(Command::SetHostStatus { host: "a".into(), status: HostStatus::Lost, expected: None });
    let r = w.rejected(Command::BeginOperation { kind: migration("ldom1", "a", "b") });
    assert_eq!((r.code, r.rule), (RejectCode::HostStatus, Some(Rule::Lm(2))));
    // Failover of a lost host may start; of a live one it may not.
    w.ok(Command::BeginOperation { kind: OperationKind::Failover { host: "a".into() } });
    let r = w.rejected(Command::BeginOperation { kind: OperationKind::Failover { host: "b".into() } });
    assert_eq!(r.code, RejectCode::HostStatus);
}

#[test]
fn losing_a_host_rolls_back_its_migrations() {
    // Goal: HA-07: when a migration's source (or target) is declared lost, the migration
    // is rolled back and its reservation released.
    let mut w = world();
    let op = w.begin("ldom1", "a", "b", None, false);
    let (r, _, _) = w.reserve(op, "ldom1", ldom1_on_b(), 30_000);
    let outcome = w.ok(Command::SetHostStatus { host: "a".into(), status: HostStatus::Lost, expected: None });
    assert_eq!(outcome, Outcome::HostStatusSet { rolled_back: vec![op], released: vec![r] });
    let phase = w.state.operation(op).map(|o| o.phase.clone());
    assert!(matches!(phase, Some(Phase::RolledBack { reason }) if reason.contains("HA-07")));
}

#[test]
fn a_report_may_not_drop_or_rebind_a_reserved_resource() {
    // Goal: while a reservation is active, a report of its target that lacks a reserved
    // strand, binds one to another domain, or gives reserved memory away is refused.
    let mut w = world();
    let op = w.begin("ldom1", "a", "b", None, false);
    let (r, _, _) = w.reserve(op, "ldom1", ldom1_on_b(), 30_000);
    // A local domain on b bound to reserved core 4.
    let stolen = with_guest(server("b", 8, 8), "local", &[4], gib(8), None);
    let rej = w.rejected(Command::ReportInventory { server: stolen });
    assert_eq!(rej.code, RejectCode::InventoryDropsReserved);
    assert!(rej.message.contains("binds CPU 8 to local"), "{}", rej.message);
    assert!(rej.message.contains(&format!("reservation {r}")), "{}", rej.message);
    // A local domain on reserved memory only.
    let stolen = with_guest(server("b", 8, 8), "local", &[7], Range::new(4 * GIB, GIB / 2), None);
    let rej = w.rejected(Command::ReportInventory { server: stolen });
    assert_eq!(rej.code, RejectCode::InventoryDropsReserved);
    assert!(rej.message.contains("memory"), "{}", rej.message);
    // The reserved core disappeared (a 4-core report).
    let rej = w.rejected(Command::ReportInventory { server: server("b", 4, 8) });
    assert!(rej.message.contains("lacks CPU 8"), "{}", rej.message);
    // Memory shrank below the reserved range.
    let rej = w.rejected(Command::ReportInventory { server: server("b", 8, 2) });
    assert!(rej.message.contains("lacks memory"), "{}", rej.message);
}

#[test]
fn a_guest_recorded_elsewhere_appears_only_as_an_incoming_migration() {
    // Goal: b may report ldom1 (recorded on a) only while an active reservation on b is
    // for it; the report does not move the index; commit then does.
    let mut w = world();
    let incoming = with_guest(server("b", 8, 8), "ldom1", &[4, 5], gib(4), Some(5003));
    let rej = w.rejected(Command::ReportInventory { server: incoming.clone() });
    assert_eq!(rej.code, RejectCode::DomainOnOtherHost);
    assert!(rej.message.contains("records on a"), "{}", rej.message);
    let op = w.begin("ldom1", "a", "b", None, false);
    let (r, t, _) = w.reserve(op, "ldom1", ldom1_on_b(), 30_000);
    w.ok(Command::ReportInventory { server: incoming });
    assert_eq!(w.state.domain("ldom1").map(|d| d.host.as_str()), Some("a"));
    // The source finishes first and reports ldom1 gone: the index keeps it (operation running).
    let a_without = {
        let mut a = w.inventory("a");
        a.unbind_domain("ldom1");
        a
    };
    let outcome = w.ok(Command::ReportInventory { server: a_without });
    assert_eq!(outcome, Outcome::InventoryAccepted { indexed: vec![], unindexed: vec![] });
    w.ok(Command::CommitMigration {
        operation: op,
        reservation: r,
        token: t,
        downtime_ms: 5,
        total_ms: 50,
        notes: vec![],
    });
    assert_eq!(w.state.domain("ldom1").map(|d| d.host.as_str()), Some("b"));
    let b = w.inventory("b");
    assert_eq!(b.domains.iter().filter(|d| d.name == "ldom1").count(), 1);
    assert_eq!(b.cpu_of("ldom1").cids, vec![4, 5]);
}

#[test]
fn releasing_drops_the_incoming_copy_from_the_target() {
    // Goal: when a migration is abandoned after the target reported the incoming domain,
    // the target's recorded inventory no longer holds it (the hypervisor destroys it too).
    let mut w = world();
    let op = w.begin("ldom1", "a", "b", None, false);
    w.reserve(op, "ldom1", ldom1_on_b(), 30_000);
    let incoming = with_guest(server("b", 8, 8), "ldom1", &[4, 5], gib(4), Some(5003));
    w.ok(Command::ReportInventory { server: incoming });
    w.ok(Command::AbortOperation {
        operation: op,
        outcome: AbortOutcome::RolledBack { reason: "transfer failed".into() },
    });
    assert!(w.inventory("b").domain("ldom1").is_none());
    assert!(w.inventory("a").domain("ldom1").is_some());
}

#[test]
fn an_invalid_report_is_refused_with_its_problems() {
    // Goal: a report that fails Server::validate is refused and lists the problems.
    let mut w = world();
    let mut bad = server("b", 8, 8);
    bad.cores[1].strands[0].bound = Some("ghost".into());
    let r = w.rejected(Command::ReportInventory { server: bad });
    assert_eq!(r.code, RejectCode::InventoryInvalid);
    assert!(r.message.contains("ghost"), "{}", r.message);
    let r = w.rejected(Command::ReportInventory { server: server("zz", 2, 2) });
    assert_eq!(r.code, RejectCode::HostUnknown);
}

#[test]
fn a_rejected_command_changes_only_the_clock_and_the_audit_log() {
    // Goal: apply checks everything before it changes anything.
    let mut w = world();
    let op = w.begin("ldom1", "a", "b", None, false);
    w.reserve(op, "ldom1", ldom1_on_b(), 30_000);
    let before = w.state.clone();
    let op2 = 999;
    w.rejected(w.reserve_cmd(op2, "ldom2", binding("ldom2", &[6], gib(6), None), 30_000));
    assert_eq!(w.state.hosts(), before.hosts());
    assert_eq!(w.state.reservations(), before.reservations());
    assert_eq!(w.state.operations(), before.operations());
    assert_eq!(w.state.domains(), before.domains());
    assert_eq!(w.state.meta().last_fencing_token, before.meta().last_fencing_token);
    let last = w.state.audit().values().next_back().expect("audited");
    assert_eq!(last.outcome, "operation-unknown");
    assert_eq!(last.actor, "test");
}

#[test]
fn the_audit_log_keeps_the_last_records_only() {
    // Goal: the audit log is bounded: after more commands than it holds it keeps the newest.
    let mut w = world();
    let total = AUDIT_RECORDS_MAX + 50;
    for _ in 0..total {
        w.run(Command::Expire { now_ms: 0 }).ok();
    }
    assert_eq!(w.state.audit().len(), AUDIT_RECORDS_MAX);
    let first = w.state.audit().keys().next().copied();
    assert_eq!(first, Some(w.index - AUDIT_RECORDS_MAX as u64 + 1));
    let summary = &w.state.audit().values().next_back().expect("record").summary;
    assert_eq!(summary, "expire leases at 0 ms");
}

#[test]
fn users_are_added_replaced_and_removed_with_argon2_hashes_only() {
    // Goal: AddUser takes a PHC argon2 string (hashed by the proposer), refuses others
    // and duplicates unless replacing; profiles decide OP-04 rights.
    let mut w = world();
    let hash = hash_password("secret").expect("hash");
    let profiles = BTreeSet::from([Profile::LdomsManagement, Profile::parse("Operator")]);
    w.ok(Command::AddUser {
        name: "alice".into(),
        password_hash: hash.clone(),
        profiles: profiles.clone(),
        replace: false,
    });
    let user = w.state.user("alice").expect("user").clone();
    assert!(user.may_migrate());
    assert!(verify_password("secret", &user.password_hash));
    assert!(!format!("{user:?}").contains(&hash), "Debug must not print the hash");
    let dup = w.rejected(Command::AddUser {
        name: "alice".into(),
        password_hash: hash.clone(),
        profiles: BTreeSet::new(),
        replace: false,
    });
    assert_eq!(dup.code, RejectCode::UserExists);
    w.ok(Command::AddUser { name: "alice".into(), password_hash: hash, profiles: BTreeSet::new(), replace: true });
    assert!(!w.state.user("alice").expect("user").may_migrate());
    let bad = w.rejected(Command::AddUser {
        name: "bob".into(),
        password_hash: "hunter2".into(),
        profiles: BTreeSet::new(),
        replace: false,
    });
    assert_eq!(bad.code, RejectCode::PasswordHashInvalid);
    w.ok(Command::RemoveUser { name: "alice".into() });
    let gone = w.rejected(Command::RemoveUser { name: "alice".into() });
    assert_eq!(gone.code, RejectCode::UserUnknown);
}

#[test]
fn requests_over_a_limit_are_refused_by_the_proposer_and_by_apply() {
    // Goal: names, text and actor are checked alike by Request::validate and apply.
    let mut w = world();
    let bad = [
        req(1, Command::RegisterHost { host: spec("bad:name") }),
        req(1, Command::RegisterHost { host: spec(&"x".repeat(65)) }),
        Request { actor: String::new(), ..req(1, Command::RemoveUser { name: "u".into() }) },
        req(1, Command::AbortOperation { operation: 1, outcome: AbortOutcome::Failed { reason: "two\nlines".into() } }),
    ];
    for r in bad {
        assert_eq!(r.validate().map_err(|e| e.code), Err(RejectCode::InvalidRequest), "{r:?}");
        w.index += 1;
        let applied = w.state.apply(w.index, &r);
        assert_eq!(applied.map_err(|e| e.code), Err(RejectCode::InvalidRequest));
    }
    assert!(req(1, Command::RegisterHost { host: spec("ok-name.1") }).validate().is_ok());
}

#[test]
fn rejection_codes_are_stable_strings() {
    // Goal: the codes clients match on render as fixed kebab-case strings, also in JSON.
    assert_eq!(RejectCode::StrandUnavailable.as_str(), "strand-unavailable");
    assert_eq!(RejectCode::StaleToken.to_string(), "stale-token");
    assert_eq!(
        serde_json::to_string(&RejectCode::InventoryDropsReserved).expect("json"),
        "\"inventory-drops-reserved\""
    );
    let r = Rejection::with_rule(RejectCode::MemoryUnavailable, Rule::Lm(9), "memory 0x1+1G");
    assert_eq!(r.to_string(), "LM-09 [memory-unavailable] memory 0x1+1G");
    assert_eq!(DomainKind::Guest.to_string(), "guest domain");
}

#[test]
fn an_evacuation_completes_with_its_summary_and_a_migration_cannot() {
    // Goal: UC-1: an Evacuation operation ends Done by CompleteOperation with its summary;
    // a migration ends only by its commit or an abort, and a finished operation stays finished.
    let mut w = world();
    let evacuation = match w.ok(Command::BeginOperation { kind: OperationKind::Evacuation { host: "a".into() } }) {
        Outcome::OperationBegun { operation } => operation,
        other => panic!("unexpected {other:?}"),
    };
    let r = w.rejected(Command::BeginOperation { kind: OperationKind::Evacuation { host: "a".into() } });
    assert_eq!(r.code, RejectCode::OperationRunning, "one evacuation of a host at a time");
    let advance = Command::AdvanceOperation {
        operation: evacuation,
        token: None,
        progress: tern_raft_store::Progress::Transferring { progress_pct: 50 },
    };
    w.ok(advance);
    let notes = vec!["evacuated a: 2 guest(s) moved, 0 stayed".to_string()];
    assert_eq!(w.ok(Command::CompleteOperation { operation: evacuation, notes: notes.clone() }), Outcome::Completed);
    let op = w.state.operation(evacuation).cloned().expect("recorded");
    assert_eq!(op.phase, Phase::Done);
    assert_eq!(op.result.map(|r| r.notes), Some(notes));
    let r = w.rejected(Command::CompleteOperation { operation: evacuation, notes: vec![] });
    assert_eq!(r.code, RejectCode::OperationFinished);
    let migration = w.begin("ldom1", "a", "b", None, false);
    let r = w.rejected(Command::CompleteOperation { operation: migration, notes: vec![] });
    assert_eq!(r.code, RejectCode::InvalidRequest);
    assert!(w.state.operation(migration).is_some_and(|o| !o.phase.is_terminal()));
}

/// Host a lost, a failover of it begun; returns the operation.
fn lost_a_with_failover(w: &mut World) -> u64 {
    w.ok(Command::SetHostStatus { host: "a".into(), status: HostStatus::Lost, expected: Some(HostStatus::Up) });
    match w.ok(Command::BeginOperation { kind: OperationKind::Failover { host: "a".into() } }) {
        Outcome::OperationBegun { operation } => operation,
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn nothing_of_a_lost_host_is_reserved_before_it_is_fenced() {
    // Goal: HA-02 in the state machine: a failover reserves for a lost host's guest only once the host is fenced.
    let mut w = world();
    let op = lost_a_with_failover(&mut w);
    let r = w.rejected(w.reserve_cmd(op, "ldom1", ldom1_on_b(), 30_000));
    assert_eq!((r.code, r.rule), (RejectCode::HostStatus, Some(Rule::Ha(2))));
    assert!(r.message.contains("a is lost, not fenced"), "{}", r.message);
    w.ok(Command::SetHostStatus { host: "a".into(), status: HostStatus::Fenced, expected: Some(HostStatus::Lost) });
    w.reserve(op, "ldom1", ldom1_on_b(), 30_000);
}

/// `world()` where a's primary has failure-policy stop and ldom1 (not ldom2) is its
/// slave, and a declares `self_stop`.
fn self_stopping_world(self_stop: SelfStop) -> World {
    let mut w = world();
    let mut a = w.inventory("a");
    a.domain_mut("primary").expect("primary").failure_policy = tern_model::FailurePolicy::Stop;
    a.domain_mut("ldom1").expect("ldom1").masters = vec!["primary".into()];
    w.ok(Command::ReportInventory { server: a });
    w.ok(Command::UpdateHost { name: "a".into(), address: None, self_stop: Some(self_stop) });
    w
}

const SELF_STOP: SelfStop = SelfStop { isolation_timeout_ms: 4_000, watchdog_timeout_ms: 6_000, margin_ms: 1_000 };

#[test]
fn a_lost_hosts_slave_with_failure_policy_stop_is_reserved_once_it_counts_stopped() {
    // Goal: HA-08: without a fence, ldom1 (slave of primary, failure-policy stop, host
    // declaring isolation and watchdog) is reserved only after lost + max(4 s, 6 s) + 1 s;
    // ldom2, no slave, still waits for the fence.
    let mut w = self_stopping_world(SELF_STOP);
    let op = lost_a_with_failover(&mut w);
    let lost_at = w.state.host("a").expect("a").status_since_ms;
    let early = w.run_at(lost_at + 6_999, w.reserve_cmd(op, "ldom1", ldom1_on_b(), 30_000)).expect_err("too early");
    assert_eq!((early.code, early.rule), (RejectCode::HostStatus, Some(Rule::Ha(2))));
    assert!(early.message.contains("counts stopped 1 ms from now"), "{}", early.message);
    w.now = lost_at + 7_000;
    let (r, token, _) = w.reserve(op, "ldom1", ldom1_on_b(), 30_000);
    assert_eq!(w.state.counts_stopped("a", "ldom1", w.now), Ok(Stopped::BySelfStop { since_ms: lost_at + 7_000 }));
    let ldom2 = w.rejected(w.reserve_cmd(op, "ldom2", binding("ldom2", &[6], gib(6), Some(5004)), 30_000));
    assert!(ldom2.message.contains("ldom2 is not a slave of primary"), "{}", ldom2.message);
    // The restart commits while a is still only lost.
    let outcome = w.ok(Command::CommitRestart { operation: op, reservation: r, token });
    assert_eq!(outcome, Outcome::Restarted { domain: "ldom1".into(), target: "b".into() });
    assert_eq!(w.state.host("a").map(|h| h.status), Some(HostStatus::Lost));
}

#[test]
fn a_guest_does_not_count_stopped_without_both_halves_of_self_stop_or_with_reset() {
    // Goal: HA-08: no watchdog, no isolation, or a failure-policy of reset each keep a lost host's slave waiting, named.
    let cases = [
        (SelfStop { watchdog_timeout_ms: 0, ..SELF_STOP }, None, "no watchdog resets its control domain"),
        (SelfStop { isolation_timeout_ms: 0, ..SELF_STOP }, None, "does not stop its guests when isolated"),
        (SelfStop::default(), None, "neither an isolation response nor a watchdog"),
        (SELF_STOP, Some(tern_model::FailurePolicy::Reset), "failure-policy is reset, not stop"),
    ];
    for (self_stop, policy, want) in cases {
        let mut w = self_stopping_world(self_stop);
        if let Some(p) = policy {
            let mut a = w.inventory("a");
            a.domain_mut("primary").expect("primary").failure_policy = p;
            w.ok(Command::ReportInventory { server: a });
        }
        let op = lost_a_with_failover(&mut w);
        w.now += 3_600_000;
        let r = w.rejected(w.reserve_cmd(op, "ldom1", ldom1_on_b(), 30_000));
        assert!(r.message.contains(want), "{want}: {}", r.message);
    }
}

#[test]
fn a_declared_self_stop_is_bounded() {
    // Goal: UpdateHost refuses a self-stop timeout above one hour, naming the field.
    let mut w = world();
    let r = w.rejected(Command::UpdateHost {
        name: "a".into(),
        address: None,
        self_stop: Some(SelfStop { watchdog_timeout_ms: limits::SELF_STOP_MS_MAX + 1, ..SELF_STOP }),
    });
    assert_eq!(r.code, RejectCode::InvalidRequest);
    assert!(r.message.contains("watchdog_timeout_ms"), "{}", r.message);
    assert_eq!(w.state.host("a").map(|h| h.self_stop), Some(SelfStop::default()));
}

#[test]
fn a_restart_commits_the_guest_onto_its_target_and_the_failover_goes_on() {
    // Goal: HA-04: CommitRestart records ldom1 on b with the reserved binding, frees it on a, keeps the failover running.
    let mut w = world();
    let op = lost_a_with_failover(&mut w);
    w.ok(Command::SetHostStatus { host: "a".into(), status: HostStatus::Fenced, expected: Some(HostStatus::Lost) });
    w.ok(Command::SetDomain {
        domain: "ldom1".into(),
        ha_priority: Some(HaPriority::High),
        affinity_group: None,
        anti_affinity_group: None,
    });
    let (r, token, _) = w.reserve(op, "ldom1", ldom1_on_b(), 30_000);
    let outcome = w.ok(Command::CommitRestart { operation: op, reservation: r, token });
    assert_eq!(outcome, Outcome::Restarted { domain: "ldom1".into(), target: "b".into() });
    let rec = w.state.domain("ldom1").cloned().expect("indexed");
    assert_eq!((rec.host.as_str(), rec.ha_priority), ("b", HaPriority::High));
    assert!(w.inventory("a").domain("ldom1").is_none());
    assert_eq!(w.inventory("b").cpu_of("ldom1").cids, vec![4, 5]);
    let o = w.state.operation(op).expect("op");
    assert!(!o.phase.is_terminal() && o.reservations.is_empty());
    // A second reservation for the same guest is refused while the first is live; a commit replays nothing.
    let again = w.rejected(Command::CommitRestart { operation: op, reservation: r, token });
    assert_eq!(again.code, RejectCode::ReservationUnknown);
    w.ok(Command::CompleteOperation { operation: op, notes: vec!["done".into()] });
    let notes = w.state.operation(op).and_then(|o| o.result.clone()).expect("result").notes;
    assert!(notes[0].starts_with("HA-04: ldom1 restarted on b"), "{notes:?}");
    assert_eq!(notes.last().map(String::as_str), Some("done"));
}

#[test]
fn a_restart_commit_needs_a_live_lease_its_token_and_a_running_failover() {
    // Goal: CommitRestart refuses a lapsed lease and a wrong token; returning the host ends the failover and releases.
    let mut w = world();
    let op = lost_a_with_failover(&mut w);
    w.ok(Command::SetHostStatus { host: "a".into(), status: HostStatus::Fenced, expected: Some(HostStatus::Lost) });
    let (r, token, expires) = w.reserve(op, "ldom1", ldom1_on_b(), 1_000);
    let late = w.run_at(expires, Command::CommitRestart { operation: op, reservation: r, token });
    assert_eq!(late.map_err(|r| r.code), Err(RejectCode::LeaseExpired));
    // Expiry releases the reservation but the failover goes on (its guest is planned again).
    w.ok(Command::Expire { now_ms: expires });
    assert!(w.state.operation(op).is_some_and(|o| !o.phase.is_terminal()));
    let (r2, token2, _) = w.reserve(op, "ldom1", ldom1_on_b(), 30_000);
    let wrong = w.rejected(Command::CommitRestart { operation: op, reservation: r2, token: token2 + 1 });
    assert_eq!(wrong.code, RejectCode::StaleToken);
    // The admin returns a: the failover ends and its reservation is released.
    let out =
        w.ok(Command::SetHostStatus { host: "a".into(), status: HostStatus::Up, expected: Some(HostStatus::Fenced) });
    assert!(matches!(out, Outcome::HostStatusSet { ref released, .. } if released.contains(&r2)), "{out:?}");
    assert!(w.state.operation(op).is_some_and(|o| o.phase == Phase::Done));
    let gone = w.rejected(Command::CommitRestart { operation: op, reservation: r2, token: token2 });
    assert_eq!(gone.code, RejectCode::OperationFinished);
}

#[test]
fn a_status_change_made_from_a_stale_view_is_refused() {
    // Goal: SetHostStatus with `expected` is a compare-and-set: a detector's "up" judged on "lost" cannot undo a fence.
    let mut w = world();
    lost_a_with_failover(&mut w);
    w.ok(Command::SetHostStatus { host: "a".into(), status: HostStatus::Fenced, expected: Some(HostStatus::Lost) });
    let r = w.rejected(Command::SetHostStatus {
        host: "a".into(),
        status: HostStatus::Up,
        expected: Some(HostStatus::Lost),
    });
    assert_eq!(r.code, RejectCode::HostStatus);
    assert!(r.message.contains("a is fenced, not lost"), "{}", r.message);
    assert_eq!(w.state.host("a").map(|h| h.status), Some(HostStatus::Fenced));
}

#[test]
fn a_report_showing_a_fenced_hosts_guest_running_elsewhere_moves_its_record() {
    // Goal: HA-06: a guest an external cluster started on b after a was fenced is re-indexed to b, and a forgets it.
    let mut w = world();
    lost_a_with_failover(&mut w);
    w.ok(Command::SetHostStatus { host: "a".into(), status: HostStatus::Fenced, expected: Some(HostStatus::Lost) });
    let b = with_guest(server("b", 8, 8), "ldom1", &[4, 5], gib(4), Some(5003));
    let out = w.ok(Command::ReportInventory { server: b });
    assert_eq!(out, Outcome::InventoryAccepted { indexed: vec!["ldom1".into()], unindexed: vec![] });
    assert_eq!(w.state.domain("ldom1").map(|d| d.host.as_str()), Some("b"));
    assert!(w.inventory("a").domain("ldom1").is_none());
    // A live host's guest is never taken so: once a is up again, c may not report ldom2.
    w.ok(Command::SetHostStatus { host: "a".into(), status: HostStatus::Up, expected: Some(HostStatus::Fenced) });
    let c = with_guest(server("c", 8, 8), "ldom2", &[4], gib(4), None);
    assert_eq!(w.rejected(Command::ReportInventory { server: c }).code, RejectCode::DomainOnOtherHost);
}

#[test]
fn set_domain_sets_a_known_guests_priority_only() {
    // Goal: SetDomain changes ha-priority of an indexed guest and refuses unknown names.
    let mut w = world();
    w.ok(Command::SetDomain {
        domain: "ldom2".into(),
        ha_priority: Some(HaPriority::Never),
        affinity_group: None,
        anti_affinity_group: None,
    });
    assert_eq!(w.state.domain("ldom2").map(|d| d.ha_priority), Some(HaPriority::Never));
    assert_eq!(
        w.rejected(Command::SetDomain {
            domain: "nope".into(),
            ha_priority: Some(HaPriority::Low),
            affinity_group: None,
            anti_affinity_group: None
        })
        .code,
        RejectCode::DomainUnknown
    );
    assert_eq!("none".parse::<HaPriority>(), Ok(HaPriority::Never));
    assert!("urgent".parse::<HaPriority>().is_err());
}

// ---- rebalance plans (RB-03, RB-04) ------------------------------------------------

/// A one-move plan: ldom1 from a to b on [`ldom1_on_b`].
fn one_move_plan() -> tern_model::rebalance::Plan {
    tern_model::rebalance::Plan {
        level: 3,
        moves: vec![tern_model::rebalance::Move {
            domain: "ldom1".into(),
            source: "a".into(),
            target: "b".into(),
            binding: ldom1_on_b(),
            cost: Default::default(),
            reason: tern_model::rebalance::Reason::Load,
            imbalance_after_ppm: 0,
        }],
        ..Default::default()
    }
}

impl World {
    /// The plan the planner makes now at level 5 (memory alone imbalances the world:
    /// a holds 4 of its 10 GiB, b and c 2 each).
    fn planned(&self) -> tern_model::rebalance::Plan {
        let level = tern_model::rebalance::Level::new(5).ok();
        let p = self.state.planning_view(self.now + 10).plan(&PlanPurpose::Balance, level).expect("a plan");
        assert!(!p.moves.is_empty(), "the world is imbalanced: {p:?}");
        p
    }

    /// Records the planner's plan for the state as it is now; returns its id.
    fn record_plan(&mut self) -> u64 {
        let digest = self.state.placement_digest(self.now + 10);
        let cmd = Command::RecordPlan { purpose: PlanPurpose::Balance, plan: self.planned(), digest };
        match self.ok(cmd) {
            Outcome::PlanRecorded { id } => id,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn as_agent(&mut self, command: Command) -> Response {
        self.index += 1;
        self.now += 10;
        let request = Request { proposed_at_ms: self.now, actor: "agent:a".into(), from: String::new(), command };
        self.state.apply(self.index, &request)
    }
}

fn plan_move(id: u64, domain: &str, target: &str) -> Command {
    Command::BeginOperation {
        kind: OperationKind::Migration {
            domain: domain.into(),
            source: "a".into(),
            target: target.into(),
            new_name: None,
            dry_run: false,
            plan: Some(id),
        },
    }
}

#[test]
fn a_plan_is_kept_applied_while_its_state_holds_and_ended_once() {
    // Goal: RB-04: record -> shown; apply -> applying (one plan at a time); end -> done.
    let mut w = world();
    let id = w.record_plan();
    assert_eq!(w.state.plan(id).map(|p| p.status.clone()), Some(PlanStatus::Shown));
    let other = w.record_plan();
    w.ok(Command::ApplyPlan { id });
    let p = w.state.plan(id).expect("plan");
    assert_eq!((p.status.clone(), p.applied_by.as_deref()), (PlanStatus::Applying, Some("test")));
    let r = w.rejected(Command::ApplyPlan { id: other });
    assert_eq!((r.code, r.rule), (RejectCode::PlanStatus, Some(Rule::Rb(3))));
    assert_eq!(
        w.rejected(Command::ApplyPlan { id }).code,
        RejectCode::PlanStatus,
        "an applying plan is not applied twice"
    );
    w.ok(Command::EndPlan { id, end: PlanEnd::Done { notes: vec!["1 move(s) made".into()] } });
    assert_eq!(w.state.plan(id).map(|p| p.status.clone()), Some(PlanStatus::Done));
    assert_eq!(w.rejected(Command::EndPlan { id, end: PlanEnd::Cancelled }).code, RejectCode::PlanStatus);
    assert_eq!(w.rejected(Command::ApplyPlan { id: 99 }).code, RejectCode::PlanUnknown);
}

#[test]
fn a_plan_the_planner_would_not_make_is_never_approved() {
    // Goal: RB-04 with OP-04: a recorded plan whose moves differ from what the planner makes from the state (a forged
    // move, even with the right digest) is refused, so no forged move runs without a login.
    let mut w = world();
    let digest = w.state.placement_digest(w.now + 10);
    let forged = Command::RecordPlan { purpose: PlanPurpose::Balance, plan: one_move_plan(), digest };
    let Outcome::PlanRecorded { id } = w.ok(forged) else { panic!("recorded") };
    let r = w.rejected(Command::ApplyPlan { id });
    assert_eq!((r.code, r.rule), (RejectCode::PlanStale, Some(Rule::Rb(4))));
    assert!(r.message.contains("not what the planner makes"), "{r}");
    let mut honest = w.planned();
    honest.moves[0].cost.downtime_ms += 1;
    let tampered = Command::RecordPlan { purpose: PlanPurpose::Balance, plan: honest, digest };
    let Outcome::PlanRecorded { id } = w.ok(tampered) else { panic!("recorded") };
    assert_eq!(w.rejected(Command::ApplyPlan { id }).code, RejectCode::PlanStale, "one changed figure is enough");
}

#[test]
fn a_plan_whose_state_changed_is_refused_as_stale() {
    // Goal: RB-04: a reservation taken after the plan was made changes the digest; apply refuses and changes nothing.
    let mut w = world();
    let id = w.record_plan();
    let op = w.begin("ldom2", "a", "b", None, false);
    w.reserve(op, "ldom2", binding("ldom2", &[6], gib(6), Some(5004)), 30_000);
    let r = w.rejected(Command::ApplyPlan { id });
    assert_eq!((r.code, r.rule), (RejectCode::PlanStale, Some(Rule::Rb(4))));
    assert_eq!(w.state.plan(id).map(|p| p.status.clone()), Some(PlanStatus::Shown));
}

#[test]
fn agents_plan_and_approve_only_in_auto_mode() {
    // Goal: RB-04: an agent's RecordPlan/ApplyPlan is refused while auto is off, taken once an admin turns it on.
    let mut w = world();
    let digest = w.state.placement_digest(w.now + 10);
    let record = || Command::RecordPlan { purpose: PlanPurpose::Balance, plan: one_move_plan(), digest };
    let r = w.as_agent(record()).unwrap_err();
    assert_eq!((r.code, r.rule), (RejectCode::NotPermitted, Some(Rule::Rb(4))));
    let id = w.record_plan();
    assert_eq!(w.as_agent(Command::ApplyPlan { id }).unwrap_err().code, RejectCode::NotPermitted);
    let config = RebalanceConfig { auto: true, ..RebalanceConfig::default() };
    w.ok(Command::SetRebalance { config });
    assert!(w.state.rebalance().auto);
    // SetRebalance changed the digest: the old plan is stale, a new agent plan applies.
    assert_eq!(w.as_agent(Command::ApplyPlan { id }).unwrap_err().code, RejectCode::PlanStale);
    let digest = w.state.placement_digest(w.now + 10);
    let Ok(Outcome::PlanRecorded { id }) =
        w.as_agent(Command::RecordPlan { purpose: PlanPurpose::Balance, plan: w.planned(), digest })
    else {
        panic!("an agent records in auto mode")
    };
    w.as_agent(Command::ApplyPlan { id }).expect("an agent applies in auto mode");
    assert_eq!(w.state.plan(id).and_then(|p| p.applied_by.clone()).as_deref(), Some("agent:a"));
}

#[test]
fn a_plan_move_begins_only_while_its_plan_applies_and_only_as_planned() {
    // Goal: RB-04: a migration marked with a plan must be one of that applying plan's moves; then the target may take it without a login.
    let mut w = world();
    let id = w.record_plan();
    let m = w.state.plan(id).expect("plan").plan.moves[0].clone();
    assert_eq!(m.source, "a");
    let elsewhere = if m.target == "b" { "c" } else { "b" };
    let other = if m.domain == "ldom1" { "ldom2" } else { "ldom1" };
    let r = w.rejected(plan_move(id, &m.domain, &m.target));
    assert_eq!((r.code, r.rule), (RejectCode::PlanStatus, Some(Rule::Rb(4))));
    w.ok(Command::ApplyPlan { id });
    let r = w.rejected(plan_move(id, &m.domain, elsewhere));
    assert_eq!((r.code, r.rule), (RejectCode::OperationMismatch, Some(Rule::Rb(4))));
    let Outcome::OperationBegun { operation } = w.ok(plan_move(id, &m.domain, &m.target)) else { panic!("begun") };
    assert_eq!(w.state.approved_plan_move(operation), Ok(id));
    let plain = w.begin(other, "a", elsewhere, None, false);
    assert!(w.state.approved_plan_move(plain).is_err(), "a user's migration is no plan move");
    w.ok(Command::EndPlan { id, end: PlanEnd::Cancelled });
    assert!(w.state.approved_plan_move(operation).is_err(), "a cancelled plan approves nothing more");
}

#[test]
fn set_domain_sets_and_clears_groups_and_keeps_what_it_is_not_given() {
    // Goal: RB-03: affinity and anti-affinity groups are set, kept when not named, cleared by an empty name.
    let mut w = world();
    let set = |ha: Option<HaPriority>, aff: Option<&str>, anti: Option<&str>| Command::SetDomain {
        domain: "ldom1".into(),
        ha_priority: ha,
        affinity_group: aff.map(Into::into),
        anti_affinity_group: anti.map(Into::into),
    };
    w.ok(set(Some(HaPriority::High), Some("web"), Some("db")));
    w.ok(set(None, None, Some("")));
    let d = w.state.domain("ldom1").expect("ldom1").clone();
    assert_eq!(
        (d.ha_priority, d.affinity_group.as_deref(), d.anti_affinity_group),
        (HaPriority::High, Some("web"), None)
    );
    assert_eq!(w.rejected(set(None, Some("bad name"), None)).code, RejectCode::InvalidRequest);
    let view = w.state.planning_view(w.now);
    let rules = &view.guests["ldom1"];
    assert_eq!(
        rules.affinity.as_ref().map(|g| (g.name.as_str(), g.strength)),
        Some(("web", tern_model::rebalance::Strength::Must))
    );
}

#[test]
fn a_rebalance_policy_out_of_bounds_is_refused_naming_the_field() {
    // Goal: SetRebalance validates every bound and names the field; the policy is unchanged.
    let mut w = world();
    for (config, field) in [
        (RebalanceConfig { max_moves: 0, ..Default::default() }, "max_moves"),
        (RebalanceConfig { host_concurrency: 99, ..Default::default() }, "host_concurrency"),
        (RebalanceConfig { cpu_weight: 0, memory_weight: 0, ..Default::default() }, "cpu_weight + memory_weight"),
        (RebalanceConfig { hold_rounds: 0, ..Default::default() }, "hold_rounds"),
    ] {
        let r = w.rejected(Command::SetRebalance { config });
        assert!(r.message.contains(field), "{field}: {r}");
    }
    assert_eq!(w.state.rebalance(), &RebalanceConfig::default());
}

#[test]
fn the_planning_view_freezes_guests_in_their_cooldown_or_an_operation() {
    // Goal: RB-03: a guest migrated within cooldown_ms, or in a running operation, is frozen with the reason; hosts not Up are not eligible.
    let mut w = world();
    let op = w.begin("ldom1", "a", "b", None, false);
    let view = w.state.planning_view(w.now);
    assert!(view.guests["ldom1"].frozen.as_deref().is_some_and(|f| f.contains("is running")), "{:?}", view.guests);
    assert!(view.guests["ldom2"].frozen.is_none());
    let (res, token, _) = w.reserve(op, "ldom1", ldom1_on_b(), 30_000);
    w.ok(Command::CommitMigration {
        operation: op,
        reservation: res,
        token,
        downtime_ms: 1,
        total_ms: 2,
        notes: vec![],
    });
    let view = w.state.planning_view(w.now + 1000);
    assert!(view.guests["ldom1"].frozen.as_deref().is_some_and(|f| f.contains("cooldown")), "{:?}", view.guests);
    let later = w.now + RebalanceConfig::default().cooldown_ms + 1;
    assert!(w.state.planning_view(later).guests["ldom1"].frozen.is_none());
    w.ok(Command::SetHostStatus { host: "c".into(), status: HostStatus::Maintenance, expected: None });
    let view = w.state.planning_view(w.now);
    let c = view.hosts.iter().find(|h| h.0.name == "c").expect("c");
    assert!(c.2.is_err());
}

#[test]
fn a_move_stamped_in_the_future_by_a_fast_clock_freezes_the_guest_without_panicking() {
    // Goal: a commit proposed by a clock that ran ahead lies in a later view's future; the view (apply runs
    // it for ApplyPlan) says "0 s ago" instead of subtracting past zero (seen in chaos with forward clock jumps).
    let mut w = world();
    let op = w.begin("ldom1", "a", "b", None, false);
    let (res, token, _) = w.reserve(op, "ldom1", ldom1_on_b(), 30_000);
    w.ok(Command::CommitMigration {
        operation: op,
        reservation: res,
        token,
        downtime_ms: 1,
        total_ms: 2,
        notes: vec![],
    });
    assert!(w.now > 0);
    let view = w.state.planning_view(w.now / 2);
    let frozen = view.guests["ldom1"].frozen.clone().unwrap_or_default();
    assert!(frozen.starts_with("migrated 0 s ago"), "{frozen}");
}

#[test]
fn the_placement_digest_follows_bindings_and_reservations_not_time_alone() {
    // Goal: RB-04: equal states give equal digests; a reservation changes it, and its lapse changes it back.
    let mut w = world();
    let before = w.state.placement_digest(w.now);
    assert_eq!(before, w.state.clone().placement_digest(w.now));
    let op = w.begin("ldom1", "a", "b", None, false);
    let (_, _, expires) = w.reserve(op, "ldom1", ldom1_on_b(), 30_000);
    assert_ne!(w.state.placement_digest(w.now), before);
    assert_eq!(w.state.placement_digest(expires + 1), before);
}

// ---- UC-2 growth where the guest runs (RB-06) ------------------------------------

impl World {
    fn begin_resize(&mut self, domain: &str, host: &str, cores: Option<u32>, memory: Option<u64>) -> Response {
        let growth = tern_model::rebalance::Growth { cores, memory };
        self.run(Command::BeginOperation {
            kind: OperationKind::Resize { domain: domain.into(), host: host.into(), growth },
        })
    }

    fn reserve_growth(&mut self, op: u64, host: &str, add: tern_model::Binding) -> Response {
        self.run(Command::Reserve {
            operation: op,
            target: host.into(),
            source: host.into(),
            domain: add.domain.clone(),
            binding: add,
            lease_ms: 15_000,
        })
    }

    /// ldom1's resize on a to 3 cores and 2 GiB begun and its gain reserved:
    /// (operation, the planned resize, reservation, token).
    fn ldom1_growth_reserved(&mut self) -> (u64, tern_model::Resize, u64, u64) {
        let Ok(Outcome::OperationBegun { operation }) = self.begin_resize("ldom1", "a", Some(3), Some(2 * GIB)) else {
            panic!("resize not begun")
        };
        let growth = tern_model::rebalance::Growth { cores: Some(3), memory: Some(2 * GIB) };
        let plan =
            tern_model::plan_resize(&self.inventory("a"), "ldom1", &growth, &self.state.reserved_on("a", self.now))
                .expect("a has the room");
        let Ok(Outcome::Reserved { reservation, token, .. }) = self.reserve_growth(operation, "a", plan.add.clone())
        else {
            panic!("gain not reserved")
        };
        (operation, plan, reservation, token)
    }
}

#[test]
fn a_growth_is_reserved_then_committed_into_its_hosts_inventory() {
    // Goal: RB-06: the gain is reserved like a migration's binding; the commit binds it to the guest and ends Done.
    let mut w = world();
    let (op, plan, reservation, token) = w.ldom1_growth_reserved();
    assert_eq!(plan.add.cids, vec![4]);
    assert_eq!(plan.add.memory, vec![gib(4)]);
    let taken = w.state.reserved_on("a", w.now);
    assert!(taken.strands.contains(&8) && taken.memory.contains(&gib(4)), "the gain is held: {taken:?}");
    let commit = Command::CommitResize {
        operation: op,
        reservation: Some(reservation),
        token: Some(token),
        removed: plan.remove,
    };
    let Outcome::Resized { result } = w.ok(commit) else { panic!("not resized") };
    assert_eq!((result.old_cids, result.new_cids.clone()), (vec![1, 2], vec![1, 2, 4]));
    assert!(result.notes[0].starts_with("RB-06: ldom1 on a holds 3 core(s) and 2G"), "{:?}", result.notes);
    let a = w.inventory("a");
    assert_eq!(a.cpu_of("ldom1").cids, vec![1, 2, 4]);
    assert_eq!(a.memory_of("ldom1"), vec![gib(2), gib(4)]);
    assert!(w.state.reservations().is_empty(), "the reservation became the binding");
    assert_eq!(w.state.operation(op).map(|o| o.phase.clone()), Some(Phase::Done));
}

#[test]
fn another_operation_cannot_take_what_a_growth_reserved() {
    // Goal: a second guest's growth on the same host is refused the reserved core, naming the reservation (LM-06).
    let mut w = world();
    let (_, plan, reservation, _) = w.ldom1_growth_reserved();
    let Ok(Outcome::OperationBegun { operation }) = w.begin_resize("ldom2", "a", Some(2), None) else { panic!() };
    let stolen = tern_model::Binding { domain: "ldom2".into(), ..plan.add };
    let r = w.reserve_growth(operation, "a", stolen).unwrap_err();
    assert_eq!((r.code, r.rule), (RejectCode::StrandUnavailable, Some(Rule::Lm(6))));
    assert!(r.message.contains(&format!("reservation {reservation}")), "{}", r.message);
}

#[test]
fn a_report_that_already_shows_the_growth_does_not_refuse_its_commit() {
    // Goal: the host reports its resized guest before the commit lands; the commit settles without applying twice.
    let mut w = world();
    let (op, plan, reservation, token) = w.ldom1_growth_reserved();
    let mut resized = w.inventory("a");
    resized.resize_domain(&plan).expect("resizes");
    w.ok(Command::ReportInventory { server: resized.clone() });
    let commit = Command::CommitResize {
        operation: op,
        reservation: Some(reservation),
        token: Some(token),
        removed: plan.remove,
    };
    w.ok(commit);
    assert_eq!(w.inventory("a"), resized);
}

#[test]
fn a_shrink_commits_without_a_reservation_and_frees_what_it_gives_back() {
    // Goal: set-core 1 reserves nothing; its commit frees the highest core, which a migration may then reserve.
    let mut w = world();
    let Ok(Outcome::OperationBegun { operation }) = w.begin_resize("ldom1", "a", Some(1), None) else { panic!() };
    let growth = tern_model::rebalance::Growth { cores: Some(1), memory: None };
    let plan = tern_model::plan_resize(&w.inventory("a"), "ldom1", &growth, &Reserved::default()).unwrap();
    assert_eq!(plan.remove.cids, vec![2]);
    w.ok(Command::CommitResize { operation, reservation: None, token: None, removed: plan.remove });
    assert_eq!(w.inventory("a").cpu_of("ldom1").cids, vec![1]);
    assert!(w.inventory("a").free_cores(&Reserved::default()).iter().any(|c| c.cid == 2));
}

#[test]
fn a_resize_is_refused_what_does_not_fit_its_operation() {
    // Goal: RB-06 refusals name the rule or the mismatch: wrong host, control domain, nothing named, foreign gains, other ends.
    let mut w = world();
    let wrong_host = w.begin_resize("ldom1", "b", Some(3), None).unwrap_err();
    assert_eq!(wrong_host.code, RejectCode::DomainUnknown);
    let control = w.begin_resize("primary", "a", Some(2), None).unwrap_err();
    assert_eq!(control.code, RejectCode::NotAGuest);
    let nothing = w.begin_resize("ldom1", "a", None, None).unwrap_err();
    assert_eq!((nothing.code, nothing.rule), (RejectCode::InvalidRequest, Some(Rule::Rb(6))));
    let (op, plan, reservation, token) = w.ldom1_growth_reserved();
    let again = w.begin_resize("ldom1", "a", Some(4), None).unwrap_err();
    assert_eq!(again.code, RejectCode::OperationRunning);
    let twice = w.reserve_growth(op, "a", binding("ldom1", &[5], gib(5), None)).unwrap_err();
    assert_eq!(twice.code, RejectCode::OperationMismatch);
    let migrate =
        Command::CommitMigration { operation: op, reservation, token, downtime_ms: 0, total_ms: 0, notes: vec![] };
    assert_eq!(w.rejected(migrate).code, RejectCode::OperationMismatch);
    let complete = Command::CompleteOperation { operation: op, notes: vec![] };
    assert_eq!(w.rejected(complete).code, RejectCode::InvalidRequest);
    let unnamed = Command::CommitResize { operation: op, reservation: None, token: None, removed: plan.remove.clone() };
    assert_eq!(w.rejected(unnamed).code, RejectCode::OperationMismatch);
    let stale = Command::CommitResize {
        operation: op,
        reservation: Some(reservation),
        token: Some(token + 1),
        removed: plan.remove,
    };
    assert_eq!(w.rejected(stale).code, RejectCode::StaleToken);
    let Ok(Outcome::OperationBegun { operation }) = w.begin_resize("ldom2", "a", None, Some(2 * GIB)) else { panic!() };
    let console = tern_model::Binding { console_port: Some(5009), ..binding("ldom2", &[], gib(6), None) };
    let c =
        w.reserve_growth(operation, "a", tern_model::Binding { cids: vec![], strands: vec![], ..console }).unwrap_err();
    assert_eq!((c.code, c.rule), (RejectCode::BindingInvalid, Some(Rule::Rb(6))));
}

#[test]
fn a_growth_whose_lease_lapses_is_rolled_back_and_frees_its_reservation() {
    // Goal: a resize whose coordinator vanished ends RolledBack at Expire; the reserved core is free again.
    let mut w = world();
    let (op, ..) = w.ldom1_growth_reserved();
    let later = w.now + 60_000;
    w.run_at(later, Command::Expire { now_ms: later }).expect("expire");
    assert!(matches!(w.state.operation(op).map(|o| &o.phase), Some(Phase::RolledBack { .. })));
    assert!(w.state.reserved_on("a", later).strands.is_empty());
}

#[test]
fn remove_member_refuses_a_host_with_guests_reservations_or_running_operations() {
    // Goal: a member leaves only once nothing the cluster runs is on its host.
    let mut w = world();
    let r = w.rejected(Command::RemoveMember { name: "a".into(), node_id: Some(7) });
    assert_eq!(r.code, RejectCode::MemberBusy);
    assert!(r.message.contains("ldom1, ldom2") && r.message.contains("host evacuate a"), "{r}");
    let op = w.begin("ldom1", "a", "b", None, false);
    w.reserve(op, "ldom1", ldom1_on_b(), 30_000);
    let r = w.rejected(Command::RemoveMember { name: "b".into(), node_id: Some(8) });
    assert_eq!(r.code, RejectCode::MemberBusy);
    assert!(r.message.contains("reservation"), "{r}");
    let r = w.rejected(Command::RemoveMember { name: "nosuch".into(), node_id: None });
    assert_eq!(r.code, RejectCode::HostUnknown);
    assert!(w.state.host("a").is_some() && w.state.host("b").is_some(), "nothing changed");
    assert!(w.state.removed_member("a").is_none() && w.state.removed_member("b").is_none());
}

#[test]
fn removed_member_cannot_register_again_until_readmitted() {
    // Goal: RemoveMember drops the host and keeps its name out; ReadmitMember lets it back.
    let mut w = world();
    let out = w.ok(Command::RemoveMember { name: "c".into(), node_id: Some(42) });
    assert_eq!(out, Outcome::MemberRemoved { node_id: Some(42), already: false });
    assert!(w.state.host("c").is_none());
    assert_eq!(w.state.removed_node(42), Some("c"));
    let m = w.state.removed_member("c").expect("kept as removed");
    assert_eq!(m.by, "test");
    // Again: idempotent, and says so.
    let again = w.ok(Command::RemoveMember { name: "c".into(), node_id: None });
    assert_eq!(again, Outcome::MemberRemoved { node_id: Some(42), already: true });
    let r = w.rejected(Command::RegisterHost { host: spec("c") });
    assert_eq!(r.code, RejectCode::MemberRemoved);
    assert!(r.message.contains("ternctl cluster add-member c"), "{r}");
    let r = w.rejected(Command::ReportInventory { server: server("c", 8, 8) });
    assert_eq!(r.code, RejectCode::HostUnknown);
    assert_eq!(w.ok(Command::ReadmitMember { name: "c".into() }), Outcome::MemberReadmitted { was_removed: true });
    assert!(w.state.removed_node(42).is_none());
    assert_eq!(w.ok(Command::ReadmitMember { name: "c".into() }), Outcome::MemberReadmitted { was_removed: false });
    w.ok(Command::RegisterHost { host: spec("c") });
    w.ok(Command::ReportInventory { server: server("c", 8, 8) });
}

/// `world()` with ldom1 set never to restart (HA-04) and its migration a -> b
/// reserved; the operation's id.
fn ldom1_never_restarted_and_moving_to_b() -> (World, u64) {
    let mut w = world();
    w.ok(Command::SetDomain {
        domain: "ldom1".into(),
        ha_priority: Some(HaPriority::Never),
        affinity_group: None,
        anti_affinity_group: None,
    });
    let op = w.begin("ldom1", "a", "b", None, false);
    w.reserve(op, "ldom1", ldom1_on_b(), 30_000);
    (w, op)
}

fn roll_back_as_recovery_does(w: &mut World, op: u64) {
    let outcome = AbortOutcome::RolledBack { reason: "its coordinator on a is gone; rolled back".into() };
    w.ok(Command::AbortOperation { operation: op, outcome });
}

/// `a` without ldom1, and `b` with it: what the servers show once ldm moved it.
fn moved_by_ldm(w: &World) -> (tern_model::Server, tern_model::Server) {
    let mut a = w.inventory("a");
    a.unbind_domain("ldom1");
    (a, with_guest(server("b", 8, 8), "ldom1", &[4, 5], gib(4), Some(5003)))
}

/// ldom1's migration rolled back because its coordinator died; ldm completed the
/// move regardless.
fn a_move_ldm_completed_that_the_cluster_rolled_back() -> (World, tern_model::Server, tern_model::Server) {
    let (mut w, op) = ldom1_never_restarted_and_moving_to_b();
    roll_back_as_recovery_does(&mut w, op);
    let (a, b) = moved_by_ldm(&w);
    (w, a, b)
}

fn record(w: &World, domain: &str) -> Option<(String, HaPriority)> {
    w.state.domain(domain).map(|d| (d.host.clone(), d.ha_priority))
}

#[test]
fn a_guest_ldm_moved_keeps_its_record_when_the_source_reports_it_gone_first() {
    // Goal: the target's report is refused while the source's stale report shows the guest; the source's report then leaves the record awaiting the target (settings kept), whose next report adopts it.
    let (mut w, a, b) = a_move_ldm_completed_that_the_cluster_rolled_back();
    assert_eq!(w.rejected(Command::ReportInventory { server: b.clone() }).code, RejectCode::DomainOnOtherHost);
    w.ok(Command::ReportInventory { server: a });
    assert_eq!(record(&w, "ldom1"), Some(("a".into(), HaPriority::Never)));
    assert_eq!(w.state.domain("ldom1").and_then(|d| d.awaiting.as_deref()), Some("b"));
    w.ok(Command::ReportInventory { server: b });
    assert_eq!(record(&w, "ldom1"), Some(("b".into(), HaPriority::Never)));
    assert_eq!(w.state.domain("ldom1").and_then(|d| d.awaiting.as_deref()), None);
    assert!(w.inventory("b").domain("ldom1").is_some());
    // The rolled-back migration says where the guest went after all.
    let op = w.state.operations().values().last().unwrap();
    assert!(matches!(op.phase, Phase::RolledBack { .. }), "{:?}", op.phase);
    let notes = op.result.as_ref().map(|r| r.notes.clone()).unwrap_or_default();
    assert!(notes.iter().any(|n| n.contains("settled by the hypervisor: ldom1 runs on b")), "{notes:?}");
}

#[test]
fn a_guest_ldm_moved_is_adopted_with_its_settings_when_the_source_reported_it_gone_mid_move() {
    // Goal: the source reports the guest gone while its migration runs (kept on the source); after the rollback the target's report adopts the record with its HA priority.
    let (mut w, op) = ldom1_never_restarted_and_moving_to_b();
    let (a, b) = moved_by_ldm(&w);
    w.ok(Command::ReportInventory { server: a });
    assert_eq!(record(&w, "ldom1"), Some(("a".into(), HaPriority::Never)));
    roll_back_as_recovery_does(&mut w, op);
    w.ok(Command::ReportInventory { server: b });
    assert_eq!(record(&w, "ldom1"), Some(("b".into(), HaPriority::Never)));
}

#[test]
fn an_awaited_guest_its_source_shows_again_is_back_on_the_source() {
    // Goal: a guest awaited on the target that its source reports again (ldm resumed it there) is recorded on the source, no longer awaited.
    let (mut w, a, _) = a_move_ldm_completed_that_the_cluster_rolled_back();
    let back = w.inventory("a");
    w.ok(Command::ReportInventory { server: a });
    w.ok(Command::ReportInventory { server: back });
    assert_eq!(record(&w, "ldom1"), Some(("a".into(), HaPriority::Never)));
    assert_eq!(w.state.domain("ldom1").and_then(|d| d.awaiting.as_deref()), None);
}

#[test]
fn a_guest_gone_from_its_host_without_an_uncommitted_move_is_forgotten() {
    // Goal: a guest its host stops showing, that no other host shows and no uncommitted migration took, leaves the domain table.
    let mut w = world();
    let mut a = w.inventory("a");
    a.unbind_domain("ldom2");
    w.ok(Command::ReportInventory { server: a });
    assert_eq!(record(&w, "ldom2"), None);
    assert!(record(&w, "ldom1").is_some());
}

#[test]
fn a_batch_applies_each_request_as_its_own_entry_would() {
    // Goal: issue 18: the requests of one batched entry are applied in order, each with
    // its own clock stamp, checks, response and audit record; a refused one changes
    // nothing for the others, and the same requests one to an entry give the same state.
    let mut batched = world();
    let mut alone = world();
    let op1 = batched.begin("ldom1", "a", "b", None, false);
    assert_eq!(alone.begin("ldom1", "a", "b", None, false), op1);
    let op2 = batched.begin("ldom2", "a", "b", None, false);
    assert_eq!(alone.begin("ldom2", "a", "b", None, false), op2);
    let at = batched.now + 10;
    let requests = vec![
        req(at, batched.reserve_cmd(op1, "ldom1", ldom1_on_b(), 30_000)),
        // Cores 4-5 are held by the first request: refused, naming its reservation.
        req(at + 1, batched.reserve_cmd(op2, "ldom2", binding("ldom2", &[5], gib(6), Some(5004)), 30_000)),
        req(at + 2, batched.reserve_cmd(op2, "ldom2", binding("ldom2", &[6], gib(6), Some(5004)), 30_000)),
    ];
    let index_before = batched.index;
    let outcome = batched.run_at(at, Command::Batch { requests: requests.clone() }).expect("batch accepted");
    let Outcome::Batch { responses } = outcome else { panic!("a batch answers with a batch: {outcome:?}") };
    assert_eq!(responses.len(), 3);
    let one_by_one: Vec<Response> =
        requests.iter().map(|r| alone.run_at(r.proposed_at_ms, r.command.clone())).collect();
    assert_eq!(responses, one_by_one, "a batch answers as its requests would one to an entry");
    assert!(matches!(responses[0], Ok(Outcome::Reserved { .. })), "{:?}", responses[0]);
    let refused = responses[1].clone().expect_err("the second request takes a held core");
    assert_eq!(refused.code, RejectCode::StrandUnavailable);
    assert!(matches!(responses[2], Ok(Outcome::Reserved { .. })), "{:?}", responses[2]);
    assert_eq!(batched.state.reserved_on("b", at + 2), alone.state.reserved_on("b", at + 2));
    assert_eq!(batched.state.meta().clock_ms, at + 2, "the clock is the largest stamp seen");
    // One record for each request (none for the batch), all with the entry's true index.
    let records: Vec<&AuditRecord> = batched.state.audit().values().rev().take(3).collect();
    assert!(records.iter().all(|r| r.index == index_before + 1), "{records:#?}");
    let outcomes: Vec<&str> = records.iter().rev().map(|r| r.outcome.as_str()).collect();
    assert_eq!(outcomes, ["ok", "strand-unavailable", "ok"]);
    // The next entry's record follows them.
    batched.ok(Command::Expire { now_ms: 0 });
    let last = batched.state.audit().iter().next_back().map(|(k, r)| (*k, r.index));
    assert_eq!(last, Some((index_before + 4, index_before + 2)));
}

#[test]
fn a_malformed_batch_is_refused_whole_with_one_record() {
    // Goal: an empty batch or one that holds a batch changes nothing but the clock and
    // leaves one audit record saying so.
    let mut w = world();
    let inner = req(w.now, Command::Expire { now_ms: 0 });
    let nested = Command::Batch { requests: vec![req(w.now, Command::Batch { requests: vec![inner.clone()] })] };
    for batch in [Command::Batch { requests: vec![] }, nested] {
        let before = w.state.audit().len();
        let r = w.rejected(batch);
        assert_eq!(r.code, RejectCode::InvalidRequest, "{r}");
        assert_eq!(w.state.audit().len(), before + 1);
    }
}
