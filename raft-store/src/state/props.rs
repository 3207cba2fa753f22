//! Property tests: random command sequences through `State::apply`, with the
//! invariants checked after every step, and the stored rows (what the RocksDB state
//! machine writes from the dirty set) checked to rebuild the same state.

#[path = "../../tests/common/mod.rs"]
mod common;

use super::{RowKey, State};
use crate::codec::{self, SnapshotImage};
use crate::{AbortOutcome, Command, HostStatus, OperationKind, Progress, Request, Response};
use common::*;
use proptest::prelude::*;
use std::collections::BTreeMap;
use tern_model::Server;

const HOSTS: [&str; 3] = ["a", "b", "c"];
const GUESTS: [&str; 4] = ["g1", "g2", "g3", "g4"];
const CORES: u32 = 6;
const FREE_GIB: u64 = 6;

/// Raw choices; `interpret` turns them into a command against the current state, so
/// most commands are plausible and many succeed.
#[derive(Clone, Debug)]
enum Step {
    Begin { guest: u8, target: u8, rename: bool, dry_run: bool },
    Reserve { op: u8, first_core: u8, wrong_shape: bool, mem_gib: u8, port: Option<u8>, lease_ms: u16 },
    Renew { res: u8, stale: bool, lease_ms: u16 },
    Release { res: u8, stale: bool },
    Expire { ahead_ms: u16 },
    Advance { op: u8, pct: u8, committing: bool },
    Commit { op: u8, res: u8 },
    Abort { op: u8, how: u8 },
    Status { host: u8, status: u8 },
    Report { host: u8, mutation: u8, pick: u8 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (any::<u8>(), any::<u8>(), any::<bool>(), prop::bool::weighted(0.2))
            .prop_map(|(guest, target, rename, dry_run)| Step::Begin { guest, target, rename, dry_run }),
        5 => (any::<u8>(), 0u8..6, prop::bool::weighted(0.1), 0u8..9, prop::option::of(0u8..5), 1u16..3000)
            .prop_map(|(op, first_core, wrong_shape, mem_gib, port, lease_ms)| Step::Reserve {
                op, first_core, wrong_shape, mem_gib, port, lease_ms
            }),
        2 => (any::<u8>(), prop::bool::weighted(0.2), 1u16..3000)
            .prop_map(|(res, stale, lease_ms)| Step::Renew { res, stale, lease_ms }),
        1 => (any::<u8>(), prop::bool::weighted(0.2)).prop_map(|(res, stale)| Step::Release { res, stale }),
        1 => (0u16..3000).prop_map(|ahead_ms| Step::Expire { ahead_ms }),
        2 => (any::<u8>(), 0u8..=100, any::<bool>())
            .prop_map(|(op, pct, committing)| Step::Advance { op, pct, committing }),
        3 => (any::<u8>(), any::<u8>()).prop_map(|(op, res)| Step::Commit { op, res }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(op, how)| Step::Abort { op, how }),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(host, status)| Step::Status { host, status }),
        3 => (any::<u8>(), 0u8..5, any::<u8>()).prop_map(|(host, mutation, pick)| Step::Report { host, mutation, pick }),
    ]
}

fn pick<T: Clone>(items: &[T], i: u8) -> Option<T> {
    (!items.is_empty()).then(|| items[usize::from(i) % items.len()].clone())
}

fn initial_servers() -> Vec<Server> {
    let a = with_guest(server("a", CORES, FREE_GIB), "g1", &[1], gib(2), Some(5001));
    let a = with_guest(a, "g2", &[2, 3], gib(3), None);
    let b = with_guest(server("b", CORES, FREE_GIB), "g3", &[1], gib(2), Some(5001));
    let c = with_guest(server("c", CORES, FREE_GIB), "g4", &[1], gib(2), None);
    vec![a, b, c]
}

/// Builds the command for `step` against `s`, or `None` when the step makes no sense now.
fn interpret(s: &State, step: &Step, now: u64) -> Option<Command> {
    let all_ops: Vec<u64> = s.operations().keys().copied().collect();
    let running: Vec<u64> = s.operations().values().filter(|o| !o.phase.is_terminal()).map(|o| o.id).collect();
    // Mostly running operations, sometimes any (finished ones must be refused).
    let ops = |i: u8| {
        if i.is_multiple_of(5) || running.is_empty() { pick(&all_ops, i / 5) } else { pick(&running, i) }
    };
    let res: Vec<u64> = s.reservations().keys().copied().collect();
    Some(match step {
        Step::Begin { guest, target, rename, dry_run } => {
            let domain = pick(&GUESTS, *guest)?;
            let source = s.domain(domain).map(|d| d.host.clone()).unwrap_or_else(|| "a".into());
            let target = pick(&HOSTS, *target)?;
            Command::BeginOperation {
                kind: OperationKind::Migration {
                    domain: domain.into(),
                    source,
                    target: target.into(),
                    new_name: rename.then(|| format!("{domain}-new")),
                    dry_run: *dry_run,
                    plan: None,
                },
            }
        }
        Step::Reserve { op, first_core, wrong_shape, mem_gib, port, lease_ms } => {
            let op = s.operation(ops(*op)?)?;
            let OperationKind::Migration { domain, source, target, new_name, .. } = &op.kind else {
                return None;
            };
            let inv = s.host(source)?.inventory.as_ref()?;
            let mut cores = inv.cpu_of(domain).cids.len().max(1) as u32;
            if *wrong_shape {
                cores += 1;
            }
            let first = u32::from(*first_core);
            let cids: Vec<u32> = (first..first + cores).collect();
            let name = new_name.clone().unwrap_or_else(|| domain.clone());
            // A console port exactly when the guest has a console (LM-13), or a wrong shape.
            let has_console = inv.domain(domain).is_some_and(|d| d.console.is_some());
            let port = match port {
                Some(p) if has_console != *wrong_shape => Some(5000 + u16::from(*p)),
                None if has_console != *wrong_shape => Some(5000),
                _ => None,
            };
            Command::Reserve {
                operation: op.id,
                target: target.clone(),
                source: source.clone(),
                domain: domain.clone(),
                binding: binding(&name, &cids, gib(u64::from(*mem_gib)), port),
                lease_ms: u64::from(*lease_ms),
            }
        }
        Step::Renew { res: r, stale, lease_ms } => {
            let r = s.reservation(pick(&res, *r)?)?;
            Command::Renew { reservation: r.id, token: r.token - u64::from(*stale), lease_ms: u64::from(*lease_ms) }
        }
        Step::Release { res: r, stale } => {
            let r = s.reservation(pick(&res, *r)?)?;
            Command::Release { reservation: r.id, token: r.token - u64::from(*stale) }
        }
        Step::Expire { ahead_ms } => Command::Expire { now_ms: now + u64::from(*ahead_ms) },
        Step::Advance { op, pct, committing } => {
            let op = s.operation(ops(*op)?)?;
            let token = op.reservations.iter().next().and_then(|r| s.reservation(*r)).map(|r| r.token);
            let progress =
                if *committing { Progress::Committing } else { Progress::Transferring { progress_pct: *pct } };
            Command::AdvanceOperation { operation: op.id, token, progress }
        }
        Step::Commit { op, res: r } => {
            let r = s.reservation(pick(&res, *r)?)?;
            let op = if op % 4 == 0 { ops(*op)? } else { r.operation };
            Command::CommitMigration {
                operation: op,
                reservation: r.id,
                token: r.token,
                downtime_ms: 10,
                total_ms: 100,
                notes: vec![],
            }
        }
        Step::Abort { op, how } => {
            let outcome = match how % 3 {
                0 => AbortOutcome::Cancelled,
                1 => AbortOutcome::RolledBack { reason: "test".into() },
                _ => AbortOutcome::Failed { reason: "test".into() },
            };
            Command::AbortOperation { operation: ops(*op)?, outcome }
        }
        Step::Status { host, status } => {
            let statuses = [
                HostStatus::Up,
                HostStatus::Up,
                HostStatus::Up,
                HostStatus::Up,
                HostStatus::Suspect,
                HostStatus::Lost,
                HostStatus::Fenced,
                HostStatus::Maintenance,
            ];
            Command::SetHostStatus {
                host: pick(&HOSTS, *host)?.into(),
                status: pick(&statuses, *status)?,
                expected: None,
            }
        }
        Step::Report { host, mutation, pick: p } => {
            let host = pick(&HOSTS, *host)?;
            let server = mutate_report(s, host, *mutation, *p, now)?;
            Command::ReportInventory { server }
        }
    })
}

/// The host's recorded inventory, changed the way a hypervisor might change it.
fn mutate_report(s: &State, host: &str, mutation: u8, p: u8, now: u64) -> Option<Server> {
    let mut inv = s.host(host)?.inventory.clone()?;
    match mutation {
        0 => {}
        1 => {
            // A guest disappears (destroyed, or migrated away).
            let guests: Vec<String> = inv
                .domains
                .iter()
                .filter(|d| d.kind == tern_model::DomainKind::Guest)
                .map(|d| d.name.clone())
                .collect();
            inv.unbind_domain(&pick(&guests, p)?);
        }
        2 | 3 => {
            // A local guest appears on some core and GiB (perhaps reserved ones).
            let core = u32::from(p) % CORES;
            let b = binding(&format!("l{p}"), &[core], gib(u64::from(p) % (FREE_GIB + 2)), None);
            inv.bind_domain(domain(&b.domain, tern_model::DomainKind::Guest, None), &b).ok()?;
        }
        _ => {
            // The target shows an incoming migration on its reservation.
            let incoming: Vec<_> = s.active_reservations_on(host, now).cloned().collect();
            let r = pick(&incoming, p)?;
            let port = r.binding.console_port;
            inv.bind_domain(domain(&r.binding.domain, tern_model::DomainKind::Guest, port), &r.binding).ok()?;
        }
    }
    Some(inv)
}

/// Writes the dirty rows into `rows`, as the RocksDB state machine does.
fn persist(state: &mut State, rows: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
    for key in state.take_dirty() {
        match state.encode_row(&key).expect("row encodes") {
            Some(v) => rows.insert(key.encode(), v),
            None => rows.remove(&key.encode()),
        };
    }
}

fn setup(state: &mut State, log: &mut Vec<Request>, now: u64) {
    for h in HOSTS {
        log.push(req(now, Command::RegisterHost { host: spec(h) }));
    }
    for s in initial_servers() {
        log.push(req(now, Command::ReportInventory { server: s }));
    }
    for (i, r) in log.iter().enumerate() {
        assert!(state.apply(i as u64 + 1, r).is_ok());
    }
}

/// What the state must satisfy after `request` produced `response` from `before`.
fn check_step(before: &State, after: &State, request: &Request, response: &Response) -> Result<(), TestCaseError> {
    let broken = after.invariant_violations();
    prop_assert!(broken.is_empty(), "after {:?}: {:#?}", request.command.name(), broken);
    let now = after.clock_ms();
    prop_assert!(now >= before.clock_ms(), "the clock ran backwards");
    prop_assert!(after.meta().last_fencing_token >= before.meta().last_fencing_token);
    for r in after.reservations().values() {
        if before.reservation(r.id).is_none() {
            prop_assert!(r.token > before.meta().last_fencing_token, "a new token must exceed every old one");
        }
    }
    if response.is_err() {
        prop_assert_eq!(after.hosts(), before.hosts());
        prop_assert_eq!(after.domains(), before.domains());
        prop_assert_eq!(after.reservations(), before.reservations());
        prop_assert_eq!(after.operations(), before.operations());
        prop_assert_eq!(after.users(), before.users());
    }
    // A reservation is active only within its lease: nothing renews or commits it after.
    let touched = match &request.command {
        Command::Renew { reservation, .. } | Command::CommitMigration { reservation, .. } => Some(*reservation),
        _ => None,
    };
    if let Some(r) = touched.and_then(|id| before.reservation(id))
        && r.lease_expires_ms <= now
    {
        prop_assert!(response.is_err(), "an expired reservation was used: {:?}", request.command);
    }
    if matches!(request.command, Command::Expire { .. }) {
        prop_assert!(after.reservations().values().all(|r| r.lease_expires_ms > now));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_commands_keep_every_invariant(
        steps in prop::collection::vec((step(), 0u64..400, prop::bool::weighted(0.1)), 1..80)
    ) {
        // Goal: whatever the command sequence, no strand or memory byte is claimed twice,
        // every guest is on exactly one host, leases bound reservations, rejections change
        // nothing, and the stored rows rebuild the same state (and replaying rebuilds it).
        let mut state = State::new();
        let mut log = Vec::new();
        let mut now = 1_000_000u64;
        setup(&mut state, &mut log, now);
        let mut rows = BTreeMap::new();
        persist(&mut state, &mut rows);
        for (step, tick_ms, skewed) in &steps {
            now += tick_ms;
            let Some(command) = interpret(&state, step, now) else { continue };
            // Sometimes the proposer's clock lags behind the cluster's.
            let at = if *skewed { now.saturating_sub(2_000) } else { now };
            let request = Request { proposed_at_ms: at, actor: "prop".into(), from: String::new(), command };
            let before = state.clone();
            let response = state.apply(log.len() as u64 + 1, &request);
            log.push(request.clone());
            check_step(&before, &state, &request, &response)?;
            persist(&mut state, &mut rows);
            let rebuilt = State::from_rows(rows.clone()).expect("rows decode");
            prop_assert!(rebuilt == state, "rows rebuilt a different state after {:?}", request.command.name());
        }
        // Determinism: replaying the log gives the same state.
        let mut replay = State::new();
        for (i, r) in log.iter().enumerate() {
            replay.apply(i as u64 + 1, r).ok();
        }
        prop_assert!(replay == state);
        // A snapshot round-trips.
        let image = SnapshotImage { last_applied: None, last_membership: Default::default(), state: state.clone() };
        let decoded = codec::decode_snapshot(&codec::encode_snapshot(&image).expect("encodes")).expect("decodes");
        prop_assert!(decoded == image);
        prop_assert!(rows.keys().all(|k| RowKey::decode(k).is_some()));
    }
}
