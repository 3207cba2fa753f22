//! Frozen encodings: log entries and a snapshot written by format version 1 are kept
//! in `tests/fixtures` and must decode, with the same content, in every later build.
//! A later format version adds its own fixtures beside these and never removes them.
//!
//! `TERN_WRITE_FIXTURES=1 cargo test -p tern-raft-store --test fixtures` writes fixtures
//! that are missing (never overwrites one): do it once when a version is introduced.

mod common;

use common::*;
use openraft::{CommittedLeaderId, EntryPayload, Membership};
use std::collections::BTreeSet;
use std::path::PathBuf;
use tern_raft_store::codec::{self, CodecError, SnapshotImage};
use tern_raft_store::{Command, Entry, LogId, Profile, State, StoredMembership, codec::CURRENT_VERSION};

/// A well-formed argon2id PHC string (made up: no password matches it), so fixtures are
/// reproducible.
const PHC: &str = "$argon2id$v=19$m=19456,t=2,p=1$dGVybi1maXh0dXJlLXNhbHQ$yCH7Ht0k1ZIyqTy8aLi+gQ3yKv6PkYyeqhYuRThlJxM";

fn dir() -> PathBuf {
    manifest_dir().join("tests/fixtures")
}

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

fn membership() -> Membership<u64, openraft::BasicNode> {
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

/// Reads a fixture; writes it first when missing and TERN_WRITE_FIXTURES is set.
fn fixture(name: &str, fresh: impl FnOnce() -> Vec<u8>) -> Vec<u8> {
    let path = dir().join(name);
    if !path.exists() && std::env::var_os("TERN_WRITE_FIXTURES").is_some() {
        std::fs::create_dir_all(dir()).expect("mkdir");
        std::fs::write(&path, fresh()).expect("write fixture");
    }
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
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

/// This package's folder, read at run time first: one target folder serves every checkout.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}
