//! Frozen encodings, so that a member upgraded in place, or one that receives an older
//! member's entries and snapshots, reads the data of the releases before it:
//!
//! - format version 1: log entries and a snapshot (`entry-v1-*.bin`, `snapshot-v1.bin`);
//! - format version 2: a whole log holding every [`Command`] variant (`log-v2/`, one
//!   file per entry, the bytes the `log` column family holds at that index), the
//!   snapshot of the state it leads to, which holds every kind of record
//!   (`snapshot-v2.bin`), and a dump of every RocksDB row of a store that wrote that
//!   log, applied it, built a snapshot and purged a prefix (`rocks-v2.json`).
//!
//! - format version 3: the same three for a log that goes on with a [`Command::Batch`]
//!   (`log-v3/`, `snapshot-v3.bin`, `rocks-v3.json`).
//!
//! Each must decode, with the same content, in every later build. A later format version
//! adds its own fixtures beside these and never removes or rewrites them.
//!
//! `TERN_WRITE_FIXTURES=1 cargo test --workspace --test fixtures` writes fixtures that
//! are missing (never overwrites one), and only those of the version this build writes:
//! do it once, when a version is introduced, and commit them.

mod common;

use common::*;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{BasicNode, CommittedLeaderId, EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder};
use rocksdb::{ColumnFamilyDescriptor, DB, IteratorMode, Options};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use tern_model::rebalance::{Cost, Growth, Move, Plan, Reason, Strength};
use tern_model::units::GIB;
use tern_model::{Binding, FailurePolicy};
use tern_raft_store::codec::{
    self, CURRENT_VERSION, CodecError, NEWEST_READABLE_VERSION, OLDEST_READABLE_VERSION, SnapshotImage,
};
use tern_raft_store::mem::MemStore;
use tern_raft_store::{
    AbortOutcome, Command, Entry, HaPriority, HostStatus, LogId, OperationKind, Phase, PlanEnd, PlanPurpose,
    PlanStatus, Profile, Progress, RebalanceConfig, Request, SelfStop, State, StoredMembership, Vote, rocks,
};

/// A well-formed argon2id PHC string (made up: no password matches it), so fixtures are
/// reproducible.
const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$dGVybi1maXh0dXJlLXNhbHQ$yCH7Ht0k1ZIyqTy8aLi+gQ3yKv6PkYyeqhYuRThlJxM";

fn dir() -> PathBuf {
    manifest_dir().join("tests/fixtures")
}

/// Reads fixture `name` (a path under `tests/fixtures`). When it is missing and
/// TERN_WRITE_FIXTURES is set, writes `fresh()` first, but only if this build writes the
/// format version the name carries (`-v<N>`): a later build cannot remake an older
/// version's bytes, so a lost fixture is restored from git, never regenerated.
fn fixture(name: &str, fresh: impl FnOnce() -> Vec<u8>) -> Vec<u8> {
    let path = dir().join(name);
    if !path.exists() && std::env::var_os("TERN_WRITE_FIXTURES").is_some() {
        assert_eq!(
            version_named(name),
            Some(CURRENT_VERSION),
            "fixture {name} is missing, and this build writes format version {CURRENT_VERSION}, not the one it \
             names: restore it from git"
        );
        std::fs::create_dir_all(path.parent().expect("a folder")).expect("mkdir");
        // Tests run in parallel and may write the same fixture: each writes its own
        // file and links it in place, so none reads half a fixture or overwrites one.
        static WRITERS: AtomicU64 = AtomicU64::new(0);
        let own = path.with_extension(format!("writing-{}-{}", std::process::id(), WRITERS.fetch_add(1, SeqCst)));
        std::fs::write(&own, fresh()).expect("write fixture");
        match std::fs::hard_link(&own, &path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => panic!("fixture {}: {e}", path.display()),
            _ => std::fs::remove_file(&own).expect("remove the written copy"),
        }
    }
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// The format version a fixture's name carries: `entry-v1-blank.bin` -> 1.
fn version_named(name: &str) -> Option<u8> {
    let (_, tail) = name.split_once("-v")?;
    let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// This package's folder, read at run time first: one target folder serves every checkout.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// A runtime for the storage traits' async methods.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// Encodes `decoded` again and checks it: it must decode to `expected`; and while the
/// fixture's version is the one this build writes, it must be exactly `frozen`, byte for
/// byte, or what this build writes for today's data changed under an unchanged version
/// number (which the members of the same version that read it were never built for).
fn check_reencoded<T: PartialEq + std::fmt::Debug>(
    name: &str,
    frozen: &[u8],
    again: Vec<u8>,
    expected: &T,
    decode: impl Fn(&[u8]) -> Result<T, CodecError>,
) {
    if frozen[3] == CURRENT_VERSION {
        assert!(
            again == frozen,
            "{name}: this build writes version {CURRENT_VERSION} differently from the frozen bytes; a change to \
             what is written needs a new format version (and its own fixtures), or must keep writing these bytes"
        );
    }
    let decoded = decode(&again).unwrap_or_else(|e| panic!("{name} re-encoded: {e}"));
    assert!(decoded == *expected, "{name} re-encoded decodes to something else");
}

// ---- format version 1 ----------------------------------------------------------------

fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(3, 1), index)
}

fn commands() -> Vec<Command> {
    let mut commands = migration_reserved();
    commands.push(Command::AddUser {
        name: "admin".into(),
        password_hash: PHC.into(),
        profiles: BTreeSet::from([Profile::SystemAdministrator]),
        replace: false,
    });
    commands
}

fn membership() -> Membership<u64, BasicNode> {
    Membership::new(vec![BTreeSet::from([1, 2, 3])], None)
}

/// The values the v1 fixtures hold, by file name.
fn entry_fixtures() -> Vec<(&'static str, Entry)> {
    let cmds = commands();
    vec![
        ("entry-v1-membership.bin", Entry { log_id: log_id(1), payload: EntryPayload::Membership(membership()) }),
        ("entry-v1-blank.bin", Entry { log_id: log_id(2), payload: EntryPayload::Blank }),
        (
            "entry-v1-report-inventory.bin",
            Entry { log_id: log_id(5), payload: EntryPayload::Normal(req(1_700_000_000_000, cmds[2].clone())) },
        ),
        (
            "entry-v1-register-host.bin",
            Entry { log_id: log_id(3), payload: EntryPayload::Normal(req(1_700_000_000_000, cmds[0].clone())) },
        ),
        (
            "entry-v1-reserve.bin",
            Entry { log_id: log_id(8), payload: EntryPayload::Normal(req(1_700_000_000_500, cmds[5].clone())) },
        ),
    ]
}

/// The v1 snapshot's state: `commands()` applied at indices 3 to 9, one millisecond apart.
fn snapshot_fixture() -> SnapshotImage {
    let mut state = State::new();
    for (i, c) in commands().into_iter().enumerate() {
        let r = state.apply(i as u64 + 3, &req(1_700_000_000_000 + i as u64, c));
        assert!(r.is_ok(), "{r:?}");
    }
    SnapshotImage {
        last_applied: Some(log_id(9)),
        last_membership: StoredMembership::new(Some(log_id(1)), membership()),
        state,
    }
}

#[test]
fn version_1_entries_still_decode() {
    // Goal: every frozen v1 log entry decodes to exactly the entry it was made from.
    for (name, expected) in entry_fixtures() {
        let bytes = fixture(name, || codec::encode_entry(&expected).expect("encode"));
        assert_eq!(&bytes[..4], b"TNE\x01", "{name} header");
        let decoded = codec::decode_entry(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decoded, expected, "{name}");
        // What this build writes for it decodes to the same entry again.
        let again = codec::decode_entry(&codec::encode_entry(&decoded).expect("encode")).expect("decode");
        assert_eq!(again, expected, "{name} re-encoded");
    }
}

#[test]
fn a_version_1_snapshot_still_decodes_and_is_usable() {
    // Goal: the frozen v1 snapshot decodes to the same state, and that state still
    // accepts commands (here: the reservation it holds is committed).
    let expected = snapshot_fixture();
    let bytes = fixture("snapshot-v1.bin", || codec::encode_snapshot(&expected).expect("encode"));
    assert_eq!(&bytes[..4], b"TNS\x01");
    let decoded = codec::decode_snapshot(&bytes).expect("decode");
    assert!(decoded == expected, "snapshot content changed");
    let mut state = decoded.state;
    assert_eq!(state.hosts().len(), 2);
    assert_eq!(state.users().len(), 1);
    let r = state.reservation(1).expect("reservation 1").clone();
    assert_eq!((r.token, r.binding.strands.clone()), (1, vec![4, 5]));
    let commit = Command::CommitMigration {
        operation: 1,
        reservation: 1,
        token: r.token,
        downtime_ms: 1,
        total_ms: 2,
        notes: vec![],
    };
    let outcome = state.apply(10, &req(1_700_000_001_000, commit));
    assert!(outcome.is_ok(), "{outcome:?}");
    assert_eq!(state.domain("ldom1").map(|d| d.host.as_str()), Some("b"));
}

#[test]
fn frozen_v1_entries_replayed_today_rebuild_the_v1_snapshot() {
    // Goal: v1's frozen entries (RegisterHost with the facts v2 dropped) replayed today rebuild the v1 snapshot.
    let frozen = |name: &str| {
        codec::decode_entry(&fixture(name, || unreachable!("written by version_1_entries_still_decode")))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let mut log = vec![frozen("entry-v1-membership.bin"), frozen("entry-v1-blank.bin")];
    log.push(frozen("entry-v1-register-host.bin"));
    // The snapshot's other commands, at the indices and times it applied them.
    for (i, c) in commands().into_iter().enumerate().skip(1) {
        log.push(Entry {
            log_id: log_id(i as u64 + 3),
            payload: EntryPayload::Normal(req(1_700_000_000_000 + i as u64, c)),
        });
    }
    let replayed = replay(log);
    let bytes = fixture("snapshot-v1.bin", || unreachable!("written by a_version_1_snapshot_still_decodes"));
    let written = codec::decode_snapshot(&bytes).expect("decode");
    assert_eq!((&replayed.last_applied, &replayed.last_membership), (&written.last_applied, &written.last_membership));
    assert_same_state(&replayed.state, &written.state, "replayed today");
}

#[test]
fn versions_this_build_cannot_read_are_refused_by_number() {
    // Goal: a fixture re-tagged with the next version number is refused with
    // UnknownVersion (a member must be upgraded first), never misread.
    let (name, _) = &entry_fixtures()[0];
    let mut bytes = fixture(name, || unreachable!("written by version_1_entries_still_decode"));
    bytes[3] = CURRENT_VERSION + 1;
    assert!(matches!(
        codec::decode_entry(&bytes),
        Err(CodecError::UnknownVersion { found, .. }) if found == CURRENT_VERSION + 1
    ));
    bytes[3] = 0;
    assert!(matches!(codec::decode_entry(&bytes), Err(CodecError::UnknownVersion { found: 0, .. })));
}

/// Applies `log` in order through the in-memory state machine (the entry-apply path both
/// stores share: blank, membership and normal entries) and returns its snapshot image.
fn replay(log: Vec<Entry>) -> SnapshotImage {
    runtime().block_on(async {
        let (_, mut sm) = MemStore::new().open();
        let responses = sm.apply(log.clone()).await.expect("apply");
        for (entry, response) in log.iter().zip(&responses) {
            if let (EntryPayload::Normal(r), Err(e)) = (&entry.payload, response) {
                panic!("entry {} ({}) replayed today is refused: {e}", entry.log_id.index, r.command.name());
            }
        }
        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.expect("snapshot");
        codec::decode_snapshot(&snapshot.snapshot.into_inner()).expect("decode own snapshot")
    })
}

/// Asserts that `found` (the state `how`) is `written`, naming the first audit record
/// that differs: each entry's outcome is audited, so that is where a divergence shows first.
fn assert_same_state(found: &State, written: &State, how: &str) {
    for (index, record) in written.audit() {
        assert_eq!(found.audit().get(index), Some(record), "audit record {index} differs in the state {how}");
    }
    assert!(found == written, "the state {how} differs from the one written (hosts, rows or meta)");
}

// ---- format version 2 ----------------------------------------------------------------

/// When the v2 log starts; entry `i` is proposed at `T2 + i` seconds.
const T2: u64 = 1_800_000_000_000;

fn at2(index: u64) -> u64 {
    T2 + index * 1_000
}

fn id2(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(4, 1), index)
}

fn vote2() -> Vote {
    Vote::new_committed(4, 1)
}

/// Voters 1 to 3 and learner 4, with their addresses.
fn membership2() -> Membership<u64, BasicNode> {
    let nodes: BTreeMap<u64, BasicNode> = [(1, "a"), (2, "b"), (3, "c"), (4, "d")]
        .map(|(id, h)| (id, BasicNode::new(format!("{h}.example:7400"))))
        .into();
    Membership::new(vec![BTreeSet::from([1, 2, 3])], nodes)
}

const SELF_STOP: SelfStop = SelfStop { isolation_timeout_ms: 4_000, watchdog_timeout_ms: 6_000, margin_ms: 1_000 };

/// The one move the planner made at level 5 from the state at index 18 (ldom1 and ldom2
/// both on a): kept as a literal, so that these values do not follow the planner.
fn balance_plan() -> Plan {
    Plan {
        level: 5,
        imbalance_before_ppm: 47_140,
        imbalance_after_ppm: 23_570,
        act_above_ppm: Some(20_000),
        moves: vec![Move {
            domain: "ldom1".into(),
            source: "a".into(),
            target: "b".into(),
            binding: binding("ldom1", &[1, 2], gib(2), Some(5000)),
            cost: Cost { total_ms: 9_976, downtime_ms: 150, converged: true },
            reason: Reason::Load,
            imbalance_after_ppm: 23_570,
        }],
        notes: vec!["no further move gains level 5's minimum 0.0050 after its cost".into()],
        preflight_refusals: 0,
    }
}

/// `State::placement_digest` of the state that plan was made from.
const PLAN_DIGEST: u64 = 0x1b16_1127_7941_c115;

fn rebalance2() -> RebalanceConfig {
    RebalanceConfig {
        max_moves: 4,
        cooldown_ms: 600_000,
        groups: BTreeMap::from([("db".to_string(), Strength::Should)]),
        ..RebalanceConfig::default()
    }
}

fn add_user(name: &str, profiles: impl IntoIterator<Item = Profile>, replace: bool) -> Command {
    Command::AddUser { name: name.into(), password_hash: PHC.into(), profiles: profiles.into_iter().collect(), replace }
}

fn begin(kind: OperationKind) -> Command {
    Command::BeginOperation { kind }
}

/// `domain`'s reservation of `binding` on `target` for `operation`.
fn reserve(operation: u64, domain: &str, (source, target): (&str, &str), binding: Binding, lease_ms: u64) -> Command {
    Command::Reserve {
        operation,
        target: target.into(),
        source: source.into(),
        domain: domain.into(),
        binding,
        lease_ms,
    }
}

fn set_status(host: &str, status: HostStatus, expected: Option<HostStatus>) -> Command {
    Command::SetHostStatus { host: host.into(), status, expected }
}

fn resize(domain: &str, host: &str, cores: Option<u32>, memory: Option<u64>) -> OperationKind {
    OperationKind::Resize { domain: domain.into(), host: host.into(), growth: Growth { cores, memory } }
}

/// Host a as it first reports: ldom1 on cores 1-2 with [2G, 3G) and console 5001, ldom2
/// on core 3 with [3G, 4G) and console 5002, a slave of primary, whose failure-policy is
/// stop (HA-08).
fn inventory_a() -> tern_model::Server {
    let a = with_guest(server("a", 8, 8), "ldom1", &[1, 2], gib(2), Some(5001));
    let mut a = with_guest(a, "ldom2", &[3], gib(3), Some(5002));
    a.domain_mut("primary").expect("primary").failure_policy = FailurePolicy::Stop;
    a.domain_mut("ldom2").expect("ldom2").masters = vec!["primary".into()];
    a
}

/// The v2 log's commands from index 3 on, each with who proposed it: three hosts join and
/// report; users and the rebalancing policy are set; a rebalance plan is made, approved
/// and carried out (ldom1 to b); a renamed dry run, a released and cancelled migration, a
/// lapsed lease; ldom1 grows on b, a resize of ldom2 fails; b is lost, fenced, ldom1
/// restarted on c, b returned, evacuated and put in maintenance; a migration rolled back;
/// a last migration left transferring under its reservation; hosts d and e join, e is
/// removed, readmitted and registered again, d removed.
fn scenario2() -> Vec<(&'static str, Command)> {
    use HostStatus::*;
    let migration = |domain: &str, target: &str| migration(domain, "a", target);
    let migration_with = |domain: &str, target: &str, new_name: Option<&str>, dry_run: bool, plan: Option<u64>| {
        OperationKind::Migration {
            domain: domain.into(),
            source: "a".into(),
            target: target.into(),
            new_name: new_name.map(Into::into),
            dry_run,
            plan,
        }
    };
    // Comments name every fifth index and the ids an entry creates: "op 2" is operation
    // 2, "r2 t2" reservation 2 with fencing token 2.
    vec![
        ("agent:a", Command::RegisterHost { host: spec("a") }), // 3
        ("agent:b", Command::RegisterHost { host: spec("b") }),
        ("agent:c", Command::RegisterHost { host: spec("c") }), // 5
        ("agent:a", Command::ReportInventory { server: inventory_a() }),
        ("agent:b", Command::ReportInventory { server: server("b", 8, 8) }),
        ("agent:c", Command::ReportInventory { server: server("c", 8, 8) }),
        (
            "agent:a",
            Command::UpdateHost {
                name: "a".into(),
                address: Some("a.example:7401".into()),
                self_stop: Some(SELF_STOP),
            },
        ),
        ("root", add_user("admin", [Profile::SystemAdministrator], false)), // 10
        ("admin", add_user("alice", [Profile::LdomsManagement], false)),
        ("admin", add_user("bob", [Profile::LdomsReview], false)),
        ("admin", add_user("alice", [Profile::LdomsManagement, Profile::Other("Auditor".into())], true)),
        ("admin", Command::RemoveUser { name: "bob".into() }),
        (
            "admin",
            Command::SetDomain {
                domain: "ldom1".into(),
                ha_priority: Some(HaPriority::High),
                affinity_group: Some("web".into()),
                anti_affinity_group: Some("db".into()),
            },
        ), // 15
        (
            "admin",
            Command::SetDomain {
                domain: "ldom2".into(),
                ha_priority: Some(HaPriority::Low),
                affinity_group: None,
                anti_affinity_group: Some("db".into()),
            },
        ),
        ("admin", Command::SetRebalance { config: rebalance2() }),
        ("admin", Command::RecordPlan { purpose: PlanPurpose::Balance, plan: balance_plan(), digest: PLAN_DIGEST }),
        ("admin", Command::ApplyPlan { id: 1 }),
        ("agent:a", begin(migration_with("ldom1", "b", None, false, Some(1)))), // 20: op 1
        ("agent:a", reserve(1, "ldom1", ("a", "b"), binding("ldom1", &[1, 2], gib(2), Some(5000)), 60_000)), // r1 t1
        ("agent:a", Command::Renew { reservation: 1, token: 1, lease_ms: 120_000 }),
        (
            "agent:a",
            Command::AdvanceOperation {
                operation: 1,
                token: Some(1),
                progress: Progress::Transferring { progress_pct: 40 },
            },
        ),
        ("agent:a", Command::AdvanceOperation { operation: 1, token: Some(1), progress: Progress::Committing }),
        (
            "agent:a",
            Command::CommitMigration {
                operation: 1,
                reservation: 1,
                token: 1,
                downtime_ms: 150,
                total_ms: 9_976,
                notes: vec!["memory copied in 3 passes".into()],
            },
        ), // 25
        ("agent:a", Command::EndPlan { id: 1, end: PlanEnd::Done { notes: vec!["1 move(s) made".into()] } }),
        (
            "admin",
            Command::RecordPlan {
                purpose: PlanPurpose::MakeRoom { domain: "ldom2".into(), target: "c".into() },
                plan: Plan { level: 3, notes: vec!["ldom2 fits on c as it is".into()], ..Plan::default() },
                digest: 0x0123_4567_89ab_cdef,
            },
        ),
        (
            "admin",
            Command::RecordPlan {
                purpose: PlanPurpose::Grow { domain: "ldom1".into(), growth: Growth { cores: Some(4), memory: None } },
                plan: Plan { level: 3, ..Plan::default() },
                digest: 0xfedc_ba98_7654_3210,
            },
        ),
        ("alice", begin(migration_with("ldom2", "c", Some("ldom2-c"), true, None))), // op 2
        // 30: r2 t2
        ("agent:a", reserve(2, "ldom2", ("a", "c"), binding("ldom2-c", &[1], gib(2), Some(5001)), 60_000)),
        (
            "agent:a",
            Command::CommitMigration {
                operation: 2,
                reservation: 2,
                token: 2,
                downtime_ms: 0,
                total_ms: 0,
                notes: vec![],
            },
        ),
        ("alice", begin(migration("ldom2", "b"))), // op 3
        ("agent:a", reserve(3, "ldom2", ("a", "b"), binding("ldom2", &[3], gib(3), Some(5001)), 60_000)), // r3 t3
        ("agent:a", Command::Release { reservation: 3, token: 3 }),
        ("alice", Command::AbortOperation { operation: 3, outcome: AbortOutcome::Cancelled }), // 35
        ("alice", begin(migration("ldom2", "c"))),                                             // op 4
        ("agent:a", reserve(4, "ldom2", ("a", "c"), binding("ldom2", &[1], gib(2), Some(5001)), 1_000)), // r4 t4
        ("agent:b", Command::Expire { now_ms: at2(38) }),
        ("admin", begin(resize("ldom1", "b", Some(3), Some(2 * GIB)))), // op 5
        (
            "agent:b",
            reserve(
                5,
                "ldom1",
                ("b", "b"),
                Binding { console_port: None, ..binding("ldom1", &[3], gib(3), None) },
                15_000,
            ),
        ), // 40: r5 t5
        (
            "agent:b",
            Command::CommitResize {
                operation: 5,
                reservation: Some(5),
                token: Some(5),
                removed: Binding { domain: "ldom1".into(), ..Binding::default() },
            },
        ),
        ("admin", begin(resize("ldom2", "a", Some(2), None))), // op 6
        (
            "agent:a",
            Command::AbortOperation {
                operation: 6,
                outcome: AbortOutcome::Failed { reason: "ldm add-core: no free core".into() },
            },
        ),
        ("agent:a", set_status("b", Suspect, Some(Up))),
        ("agent:a", set_status("b", Lost, Some(Suspect))), // 45
        ("agent:a", begin(OperationKind::Failover { host: "b".into() })), // op 7
        ("admin", set_status("b", Fenced, Some(Lost))),
        (
            "agent:a",
            reserve(
                7,
                "ldom1",
                ("b", "c"),
                Binding { memory: vec![gib(2), gib(3)], ..binding("ldom1", &[1, 2, 3], gib(2), Some(5000)) },
                30_000,
            ),
        ), // r6 t6
        ("agent:a", Command::CommitRestart { operation: 7, reservation: 6, token: 6 }),
        ("agent:a", Command::CompleteOperation { operation: 7, notes: vec!["1 guest restarted".into()] }), // 50
        ("admin", set_status("b", Up, Some(Fenced))),
        ("admin", begin(OperationKind::Evacuation { host: "b".into() })), // op 8
        (
            "agent:b",
            Command::AdvanceOperation {
                operation: 8,
                token: None,
                progress: Progress::Transferring { progress_pct: 100 },
            },
        ),
        ("agent:b", Command::CompleteOperation { operation: 8, notes: vec!["no guest left to move".into()] }),
        ("admin", set_status("b", Maintenance, Some(Up))), // 55
        ("alice", begin(migration("ldom2", "c"))),         // op 9
        (
            "alice",
            Command::AbortOperation {
                operation: 9,
                outcome: AbortOutcome::RolledBack { reason: "the target's agent restarted".into() },
            },
        ),
        ("alice", begin(migration("ldom2", "c"))), // op 10
        ("agent:a", reserve(10, "ldom2", ("a", "c"), binding("ldom2", &[4], gib(5), Some(5001)), 600_000)), // r7 t7
        (
            "agent:a",
            Command::AdvanceOperation {
                operation: 10,
                token: Some(7),
                progress: Progress::Transferring { progress_pct: 10 },
            },
        ), // 60
        ("agent:d", Command::RegisterHost { host: spec("d") }),
        ("agent:e", Command::RegisterHost { host: spec("e") }),
        ("admin", Command::RemoveMember { name: "e".into(), node_id: None }),
        ("admin", Command::ReadmitMember { name: "e".into() }),
        ("admin", Command::RemoveMember { name: "d".into(), node_id: Some(4) }), // 65
        ("agent:e", Command::RegisterHost { host: spec("e") }),
    ]
}

/// The log of format version `v` (2 or 3) with each entry's fixture name:
/// `log-v<v>/<index>-<payload>.bin`. Version 3's is version 2's scenario followed by
/// the variant version 3 added: a batch ([`batch3`]).
fn entries(v: u8) -> Vec<(String, Entry)> {
    let name = |index: u64, what: &str| format!("log-v{v}/{index:03}-{what}.bin");
    let mut out = vec![
        (name(1, "membership"), Entry { log_id: id2(1), payload: EntryPayload::Membership(membership2()) }),
        (name(2, "blank"), Entry { log_id: id2(2), payload: EntryPayload::Blank }),
    ];
    let mut scenario = scenario2();
    if v >= 3 {
        scenario.push(("agent:a", batch3()));
    }
    for (i, (actor, command)) in scenario.into_iter().enumerate() {
        let index = i as u64 + 3;
        let name = name(index, command.name());
        let request = Request { proposed_at_ms: at2(index), actor: actor.into(), from: String::new(), command };
        out.push((name, Entry { log_id: id2(index), payload: EntryPayload::Normal(request) }));
    }
    out
}

fn log(v: u8) -> Vec<Entry> {
    entries(v).into_iter().map(|(_, e)| e).collect()
}

fn last(v: u8) -> LogId {
    log(v).last().expect("entries").log_id
}

/// The frozen bytes of entry `name` (written from `entry` when missing).
fn frozen_entry(name: &str, entry: &Entry) -> Vec<u8> {
    fixture(name, || codec::encode_entry(entry).expect("encode"))
}

/// The frozen snapshot of version `v` (written, when missing, from that version's whole
/// log applied by this build).
fn frozen_snapshot(v: u8) -> Vec<u8> {
    fixture(&format!("snapshot-v{v}.bin"), || codec::encode_snapshot(&replay(log(v))).expect("encode"))
}

/// Which `Command` variant `c` is; numbers are only ever added, never reused. A new
/// variant does not compile here: number it, and freeze an entry of it in the log of the
/// next format version (older builds cannot read it), whose test counts it.
fn variant(c: &Command) -> usize {
    match c {
        Command::RegisterHost { .. } => 0,
        Command::UpdateHost { .. } => 1,
        Command::ReportInventory { .. } => 2,
        Command::SetHostStatus { .. } => 3,
        Command::SetDomain { .. } => 4,
        Command::SetRebalance { .. } => 5,
        Command::RecordPlan { .. } => 6,
        Command::ApplyPlan { .. } => 7,
        Command::EndPlan { .. } => 8,
        Command::Reserve { .. } => 9,
        Command::Renew { .. } => 10,
        Command::Release { .. } => 11,
        Command::Expire { .. } => 12,
        Command::BeginOperation { .. } => 13,
        Command::AdvanceOperation { .. } => 14,
        Command::CommitMigration { .. } => 15,
        Command::CommitRestart { .. } => 16,
        Command::CommitResize { .. } => 17,
        Command::CompleteOperation { .. } => 18,
        Command::AbortOperation { .. } => 19,
        Command::AddUser { .. } => 20,
        Command::RemoveUser { .. } => 21,
        Command::RemoveMember { .. } => 22,
        Command::ReadmitMember { .. } => 23,
        Command::Batch { .. } => 24,
    }
}

/// The variants there were when the v2 log was frozen: `variant` numbers 0 to 23.
const COMMAND_VARIANTS_IN_V2: usize = 24;
/// The variants there were when the v3 log was frozen: `variant` numbers 0 to 24.
const COMMAND_VARIANTS_IN_V3: usize = 25;

#[test]
fn v2_entries_decode_to_the_entries_they_were_written_from() {
    // Goal: each frozen v2 entry decodes to the entry it was made from; while v2 is written, re-encodes to its bytes.
    entries_decode_to_what_they_were_written_from(2);
}

#[test]
fn v3_entries_decode_to_the_entries_they_were_written_from() {
    // Goal: the same of the frozen v3 entries, the batch among them.
    entries_decode_to_what_they_were_written_from(3);
}

fn entries_decode_to_what_they_were_written_from(v: u8) {
    for (name, expected) in entries(v) {
        let bytes = frozen_entry(&name, &expected);
        assert_eq!(bytes[..4], [b'T', b'N', b'E', v], "{name} header");
        let decoded = codec::decode_entry(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(decoded, expected, "{name}");
        check_reencoded(&name, &bytes, codec::encode_entry(&decoded).expect("encode"), &expected, codec::decode_entry);
    }
}

#[test]
fn the_v2_log_holds_every_command_variant_and_both_other_payloads() {
    // Goal: the frozen v2 log has an entry of each Command variant, a blank and a membership entry.
    log_holds_every_variant(2, COMMAND_VARIANTS_IN_V2);
}

#[test]
fn the_v3_log_holds_every_command_variant_and_both_other_payloads() {
    // Goal: the frozen v3 log has an entry of each Command variant there is (a batch too), a blank and a membership.
    log_holds_every_variant(3, COMMAND_VARIANTS_IN_V3);
}

fn log_holds_every_variant(v: u8, variants: usize) {
    let (mut commands, mut blank, mut membership) = (BTreeSet::new(), false, false);
    for (name, entry) in entries(v) {
        match codec::decode_entry(&frozen_entry(&name, &entry)).expect("decode").payload {
            EntryPayload::Normal(r) => {
                commands.insert(variant(&r.command));
            }
            EntryPayload::Blank => blank = true,
            EntryPayload::Membership(_) => membership = true,
        }
    }
    let missing: Vec<usize> = (0..variants).filter(|v| !commands.contains(v)).collect();
    assert!(missing.is_empty(), "variants {missing:?} (see `variant`) have no entry in the v{v} log");
    assert!(blank && membership, "blank: {blank}, membership: {membership}");
}

#[test]
fn v2_snapshot_decodes_to_the_state_it_was_written_from() {
    // Goal: the frozen v2 snapshot decodes to what today's apply of the v2 log gives, and holds every kind of record.
    snapshot_decodes_to_the_state_it_was_written_from(2);
}

#[test]
fn v3_snapshot_decodes_to_the_state_it_was_written_from() {
    // Goal: the same of the frozen v3 snapshot, which holds what the batch did, request by request.
    snapshot_decodes_to_the_state_it_was_written_from(3);
}

fn snapshot_decodes_to_the_state_it_was_written_from(v: u8) {
    let expected = replay(log(v));
    let bytes = frozen_snapshot(v);
    assert_eq!(bytes[..4], [b'T', b'N', b'S', v]);
    let decoded = codec::decode_snapshot(&bytes).expect("decode");
    assert_eq!((&decoded.last_applied, &decoded.last_membership), (&expected.last_applied, &expected.last_membership));
    assert_same_state(&expected.state, &decoded.state, &format!("today's apply of the v{v} log gives"));
    let again = codec::encode_snapshot(&decoded).expect("encode");
    check_reencoded(&format!("snapshot-v{v}.bin"), &bytes, again, &expected, codec::decode_snapshot);
    holds_every_kind_of_record(&decoded.state, v);
}

#[test]
fn the_frozen_v2_log_replayed_today_reaches_the_frozen_v2_snapshot() {
    // Goal: today's state machine, fed the frozen v2 entries, reaches exactly the state the frozen v2 snapshot holds.
    frozen_log_replayed_today_reaches_the_frozen_snapshot(2);
}

#[test]
fn the_frozen_v3_log_replayed_today_reaches_the_frozen_v3_snapshot() {
    // Goal: the same of the frozen v3 entries and snapshot.
    frozen_log_replayed_today_reaches_the_frozen_snapshot(3);
}

fn frozen_log_replayed_today_reaches_the_frozen_snapshot(v: u8) {
    let log: Vec<Entry> = entries(v)
        .into_iter()
        .map(|(name, e)| codec::decode_entry(&frozen_entry(&name, &e)).unwrap_or_else(|e| panic!("{name}: {e}")))
        .collect();
    let replayed = replay(log);
    let written = codec::decode_snapshot(&frozen_snapshot(v)).expect("decode");
    assert_eq!((&replayed.last_applied, &replayed.last_membership), (&written.last_applied, &written.last_membership));
    assert_same_state(&replayed.state, &written.state, "replayed today");
}

// ---- format version 3 ----------------------------------------------------------------

/// Where the v3 log's batch is: right after version 2's scenario.
const BATCH3_INDEX: u64 = 67;

/// The command version 3 added, as a leader's batcher forms it (issue 18): several
/// requests in one entry, each applied as its own; here a host registering and a
/// request refused alone.
fn batch3() -> Command {
    let request = |actor: &str, command| Request {
        proposed_at_ms: at2(BATCH3_INDEX),
        actor: actor.into(),
        from: String::new(),
        command,
    };
    let requests = vec![
        request("agent:f", Command::RegisterHost { host: spec("f") }),
        request("alice", Command::RemoveUser { name: "nobody".into() }),
    ];
    Command::Batch { requests }
}

/// The state of version `v`'s log holds a record of every kind, and of each variant
/// that has its own shape; version 3's also what its batch did.
fn holds_every_kind_of_record(s: &State, v: u8) {
    let hosts: Vec<(&str, HostStatus, bool)> =
        s.hosts().values().map(|h| (h.name.as_str(), h.status, h.inventory.is_some())).collect();
    let want = [("a", HostStatus::Up, true), ("b", HostStatus::Maintenance, true), ("c", HostStatus::Up, true)];
    assert_eq!(hosts[..3], want);
    assert_eq!(hosts[3], ("e", HostStatus::Up, false), "e, readmitted, registered again and never reported");
    let batched: &[_] = if v >= 3 { &[("f", HostStatus::Up, false)] } else { &[] };
    assert_eq!(hosts[4..], *batched, "f registered by the v3 batch");
    let removed = s.removed_member("d").expect("d was removed");
    assert_eq!((removed.node_id, removed.address.as_str(), removed.by.as_str()), (Some(4), "d.example:7400", "admin"));
    assert!(s.removed_member("e").is_none(), "e was readmitted");
    assert_eq!(s.host("a").map(|h| (h.address.as_str(), h.self_stop)), Some(("a.example:7401", SELF_STOP)));
    let ldom1 = s.domain("ldom1").expect("ldom1");
    assert_eq!((ldom1.host.as_str(), ldom1.ha_priority), ("c", HaPriority::High));
    assert_eq!((ldom1.affinity_group.as_deref(), ldom1.anti_affinity_group.as_deref()), (Some("web"), Some("db")));
    assert_eq!(s.domain("ldom2").map(|d| d.host.as_str()), Some("a"));
    assert_eq!(s.reservations().keys().copied().collect::<Vec<_>>(), [7]);
    let ops: Vec<(&str, &str)> = s.operations().values().map(|o| (o.kind.name(), o.phase.name())).collect();
    assert_eq!(
        ops,
        [
            ("migration", "done"),
            ("migration", "done"),
            ("migration", "cancelled"),
            ("migration", "rolled-back"),
            ("resize", "done"),
            ("resize", "failed"),
            ("failover", "done"),
            ("evacuation", "done"),
            ("migration", "rolled-back"),
            ("migration", "transferring"),
        ]
    );
    assert!(matches!(s.operation(1).map(|o| &o.kind), Some(OperationKind::Migration { plan: Some(1), .. })));
    assert!(matches!(
        s.operation(2).map(|o| &o.kind),
        Some(OperationKind::Migration { dry_run: true, new_name: Some(_), .. })
    ));
    assert!(s.operation(7).and_then(|o| o.result.as_ref()).is_some_and(|r| r.notes.len() == 2));
    assert_eq!(s.users().keys().map(String::as_str).collect::<Vec<_>>(), ["admin", "alice"]);
    let plans: Vec<(&PlanPurpose, &PlanStatus)> = s.plans().values().map(|p| (&p.purpose, &p.status)).collect();
    assert!(matches!(
        plans[..],
        [
            (PlanPurpose::Balance, PlanStatus::Done),
            (PlanPurpose::MakeRoom { .. }, PlanStatus::Shown),
            (PlanPurpose::Grow { .. }, PlanStatus::Shown)
        ]
    ));
    assert_eq!(s.rebalance(), &rebalance2());
    // One audit record per command; a batch's requests have one each, none the batch.
    let outcomes: Vec<(u64, &str)> = s.audit().values().map(|r| (r.index, r.outcome.as_str())).collect();
    let (scenario, batch) = outcomes.split_at(64);
    assert!(scenario.iter().all(|(_, o)| *o == "ok"), "every command of the v2 scenario was accepted");
    let want: &[_] = if v >= 3 { &[(BATCH3_INDEX, "ok"), (BATCH3_INDEX, "user-unknown")] } else { &[] };
    assert_eq!(batch, want, "the batch's requests, at the batch's index");
    let m = s.meta();
    assert_eq!((m.last_operation_id, m.last_reservation_id, m.last_fencing_token, m.last_plan_id), (10, 7, 7, 3));
    assert_eq!(m.clock_ms, at2(if v >= 3 { BATCH3_INDEX } else { 66 }));
    assert!(s.invariant_violations().is_empty(), "{:?}", s.invariant_violations());
}

// ---- RocksDB rows --------------------------------------------------------------------

/// The column families of `rocks.rs`: their names are part of the on-disk format.
const COLUMN_FAMILIES: [&str; 4] = ["log", "log_meta", "sm", "sm_meta"];

/// The v2 store purged its log up to this index, after it built its snapshot.
const PURGED2: u64 = 40;

/// A RocksDB database as rows: `rocks-v2.json`.
#[derive(Debug, Serialize, Deserialize)]
struct Dump {
    about: String,
    format_version: u8,
    column_families: Vec<String>,
    rows: Vec<Row>,
}

/// One key and value of a column family, both in hex, exactly as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Row {
    cf: String,
    key: String,
    value: String,
}

impl Row {
    fn key(&self) -> Vec<u8> {
        unhex(&self.key)
    }
    fn value(&self) -> Vec<u8> {
        unhex(&self.value)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex")).collect()
}

/// What a member of version `v` holds after: a vote; that version's whole log
/// appended, applied and committed; a snapshot built; the log purged up to index
/// [`PURGED2`].
async fn write_store(v: u8, path: &Path) {
    let (mut store, mut sm) = rocks::open(path).expect("open");
    store.save_vote(&vote2()).await.expect("vote");
    store.blocking_append(log(v)).await.expect("append");
    let responses = sm.apply(log(v)).await.expect("apply");
    assert!(responses.iter().all(Result::is_ok), "{responses:?}");
    store.save_committed(Some(last(v))).await.expect("committed");
    sm.get_snapshot_builder().await.build_snapshot().await.expect("snapshot");
    store.purge(id2(PURGED2)).await.expect("purge");
}

/// Every row of the closed database at `path`, column family by column family.
fn dump(path: &Path) -> Dump {
    let column_families = DB::list_cf(&Options::default(), path).expect("list column families");
    let db = DB::open_cf(&Options::default(), path, &column_families).expect("open");
    let mut rows = Vec::new();
    for cf in &column_families {
        for item in db.iterator_cf(db.cf_handle(cf).expect("cf"), IteratorMode::Start) {
            let (key, value) = item.expect("row");
            rows.push(Row { cf: cf.clone(), key: hex(&key), value: hex(&value) });
        }
    }
    Dump {
        about: format!(
            "Every RocksDB row of a tern-raft-store that wrote format version {CURRENT_VERSION} \
             (tests/fixtures.rs, write_store): column family, key and value in hex, as the store wrote them."
        ),
        format_version: CURRENT_VERSION,
        column_families,
        rows,
    }
}

/// `dump` as JSON with one row a line, so that a diff shows rows.
fn dump_json(d: &Dump) -> Vec<u8> {
    let rows: Vec<String> = d.rows.iter().map(|r| format!("    {}", json(r))).collect();
    format!(
        "{{\n  \"about\": {},\n  \"format_version\": {},\n  \"column_families\": {},\n  \"rows\": [\n{}\n  ]\n}}\n",
        json(&d.about),
        d.format_version,
        json(&d.column_families),
        rows.join(",\n")
    )
    .into_bytes()
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("json")
}

/// The frozen dump of a store of version `v` (written, when missing, from a store
/// `write_store` made).
fn frozen_dump(v: u8, rt: &tokio::runtime::Runtime) -> Dump {
    let name = format!("rocks-v{v}.json");
    let bytes = fixture(&name, || {
        let dir = tempfile::tempdir().expect("tempdir");
        rt.block_on(write_store(v, dir.path()));
        dump_json(&dump(dir.path()))
    });
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Writes `rows` into a new database at `path`, with `dump`'s column families: the files
/// a member of that version left behind.
fn load(dump: &Dump, rows: &[Row], path: &Path) {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let cfs = dump.column_families.iter().map(|n| ColumnFamilyDescriptor::new(n, Options::default()));
    let db = DB::open_cf_descriptors(&opts, path, cfs).expect("create");
    for row in rows {
        db.put_cf(db.cf_handle(&row.cf).expect("cf"), row.key(), row.value()).expect("put");
    }
    db.flush_wal(true).expect("sync");
}

#[test]
fn the_v2_store_dump_holds_every_row_kind_in_version_2() {
    // Goal: the frozen store dump has rocks.rs's column families, each meta key, every row kind, all in version 2.
    store_dump_holds_every_row_kind(2);
}

#[test]
fn the_v3_store_dump_holds_every_row_kind_in_version_3() {
    // Goal: the same of the v3 store, whose log ends with a batch.
    store_dump_holds_every_row_kind(3);
}

fn store_dump_holds_every_row_kind(v: u8) {
    let dump = frozen_dump(v, &runtime());
    assert_eq!(dump.format_version, v);
    for cf in COLUMN_FAMILIES {
        assert!(dump.column_families.iter().any(|c| c == cf), "column family {cf} missing");
    }
    let keys = |cf: &str| -> BTreeSet<Vec<u8>> { dump.rows.iter().filter(|r| r.cf == cf).map(Row::key).collect() };
    let named = |names: &[&str]| -> BTreeSet<Vec<u8>> { names.iter().map(|n| n.as_bytes().to_vec()).collect() };
    assert_eq!(keys("log_meta"), named(&["committed", "last_purged", "vote"]));
    assert_eq!(keys("sm_meta"), named(&["last_applied", "membership", "snapshot_data", "snapshot_meta"]));
    let tags: BTreeSet<u8> = keys("sm").iter().map(|k| k[0]).collect();
    assert_eq!(tags, b"abdhimopru".iter().copied().collect(), "row kinds (state/mod.rs RowKey)");
    // The log after the purge: the frozen v2 entries' bytes, under their big-endian index.
    let log: Vec<Row> = dump.rows.iter().filter(|r| r.cf == "log").cloned().collect();
    let kept: Vec<(String, Entry)> = entries(v).into_iter().skip(PURGED2 as usize).collect();
    assert_eq!(log.len(), kept.len());
    for (row, (name, entry)) in log.iter().zip(&kept) {
        assert_eq!(row.key(), entry.log_id.index.to_be_bytes(), "{name}: key");
        assert!(row.value() == frozen_entry(name, entry), "{name}: the store holds other bytes than the codec's");
    }
    for row in &dump.rows {
        let value = row.value();
        assert!(value.starts_with(b"TN") && value[3] == v, "{} {}: not a version {v} value", row.cf, row.key);
    }
}

#[test]
fn a_v2_store_opened_in_place_has_its_vote_log_applied_state_and_snapshot() {
    // Goal: a member upgraded in place over the frozen v2 rows finds its vote, log, state and snapshot, and goes on.
    store_opened_in_place_goes_on(2);
}

#[test]
fn a_v3_store_opened_in_place_has_its_vote_log_applied_state_and_snapshot() {
    // Goal: the same over the frozen v3 rows, whose log ends with a batch.
    store_opened_in_place_goes_on(3);
}

fn store_opened_in_place_goes_on(v: u8) {
    let rt = runtime();
    let dump = frozen_dump(v, &rt);
    let dir = tempfile::tempdir().expect("tempdir");
    load(&dump, &dump.rows, dir.path());
    let written = codec::decode_snapshot(&frozen_snapshot(v)).expect("decode");
    rt.block_on(async {
        let (mut store, mut sm) = rocks::open(dir.path()).expect("open");
        assert_eq!(store.read_vote().await.expect("vote"), Some(vote2()));
        assert_eq!(store.read_committed().await.expect("committed"), Some(last(v)));
        let state = store.get_log_state().await.expect("log state");
        assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(id2(PURGED2)), Some(last(v))));
        let kept = store.get_log_reader().await.try_get_log_entries(0..u64::MAX).await.expect("entries");
        assert_eq!(kept, log(v)[PURGED2 as usize..]);
        let applied = sm.applied_state().await.expect("applied");
        assert_eq!(applied, (written.last_applied, written.last_membership.clone()));
        assert_same_state(&sm.state().snapshot(), &written.state, "read back from the store's rows");
        let snapshot = sm.get_current_snapshot().await.expect("read snapshot").expect("a snapshot");
        assert_eq!(
            (snapshot.meta.last_log_id, &snapshot.meta.last_membership),
            (written.last_applied, &written.last_membership)
        );
        let image = codec::decode_snapshot(&snapshot.snapshot.into_inner()).expect("decode");
        assert!(image == written, "the stored snapshot is not the state written");
        // It goes on where it stopped: the migration in flight moves to Committing.
        let index = last(v).index + 1;
        let command = Command::AdvanceOperation { operation: 10, token: Some(7), progress: Progress::Committing };
        let request = Request { proposed_at_ms: at2(index), actor: "agent:a".into(), from: String::new(), command };
        let next = Entry { log_id: id2(index), payload: EntryPayload::Normal(request) };
        store.blocking_append([next.clone()]).await.expect("append");
        let responses = sm.apply([next]).await.expect("apply");
        assert!(responses[0].is_ok(), "{responses:?}");
        assert_eq!(sm.state().read(|s| s.operation(10).map(|o| o.phase.clone())), Some(Phase::Committing));
    });
}

#[test]
fn data_of_a_newer_format_version_is_refused_naming_the_versions_this_build_reads() {
    // Goal: an entry, a snapshot, a stored row or log entry of the next version is refused with "upgrade this member".
    let newer = CURRENT_VERSION + 1;
    let why = format!(
        "has format version {newer}; this build reads versions {OLDEST_READABLE_VERSION} to \
         {NEWEST_READABLE_VERSION}: upgrade this member before it reads newer data"
    );
    let retag = |mut bytes: Vec<u8>| {
        bytes[3] = newer;
        bytes
    };
    let (name, first) = &entries(2)[2];
    let entry = retag(frozen_entry(name, first));
    assert_eq!(codec::decode_entry(&entry).map_err(|e| e.to_string()), Err(format!("Entry {why}")));
    let snapshot = retag(frozen_snapshot(2));
    assert_eq!(codec::decode_snapshot(&snapshot).map_err(|e| e.to_string()), Err(format!("Snapshot {why}")));

    let rt = runtime();
    // A snapshot a newer leader sends is refused by the state machine installing it.
    let written = codec::decode_snapshot(&frozen_snapshot(2)).expect("decode");
    let meta = tern_raft_store::SnapshotMeta {
        last_log_id: written.last_applied,
        last_membership: written.last_membership.clone(),
        snapshot_id: "newer".into(),
    };
    let (_, mut sm) = MemStore::new().open();
    let refused = rt.block_on(sm.install_snapshot(&meta, Box::new(std::io::Cursor::new(snapshot))));
    let message = refused.expect_err("a newer snapshot is refused").to_string();
    assert!(message.contains(&why), "{message}");

    // A store holding one newer row refuses to open; one holding a newer last entry, to read its log.
    let dump = frozen_dump(2, &rt);
    let with_newer = |cf: &str, key: &[u8]| -> tempfile::TempDir {
        let rows: Vec<Row> = dump
            .rows
            .iter()
            .map(|r| {
                if r.cf == cf && r.key() == key {
                    Row { value: hex(&retag(r.value())), ..r.clone() }
                } else {
                    r.clone()
                }
            })
            .collect();
        let dir = tempfile::tempdir().expect("tempdir");
        load(&dump, &rows, dir.path());
        dir
    };
    let dir = with_newer("sm", b"h/a");
    let message = rocks::open(dir.path()).expect_err("a newer host row is refused").to_string();
    assert_eq!(message, format!("RocksDB at {}: Row {why}", dir.path().display()));
    let dir = with_newer("log", &last(2).index.to_be_bytes());
    let (mut log, _sm) = rocks::open(dir.path()).expect("the rows are all readable");
    let message = rt.block_on(log.get_log_state()).expect_err("a newer entry is refused").to_string();
    assert!(message.contains(&format!("Entry {why}")), "{message}");
}
