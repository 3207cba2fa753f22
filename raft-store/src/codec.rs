//! Versioned encodings of everything this crate writes: log entries, snapshots, state
//! rows and log-store metadata.
//!
//! Every encoded value starts with a 4-byte header, `T N <kind> <version>`, then a
//! JSON body. Decoding checks the magic and the kind, then dispatches on the version:
//!
//! | version | body | read by |
//! |---|---|---|
//! | 1 | serde JSON; hosts (rows, snapshots) and `RegisterHost`/`UpdateHost` carry `cpu`, `firmware`, `os` | this build, upgrading: a host row through `HostRowV1`; elsewhere the dropped fields are ignored |
//! | 2 | serde JSON: a host's CPU, firmware and OS are only its inventory's | this build, as version 3 |
//! | 3 | serde JSON of the current types; an entry may be a `Command::Batch` (issue 18), which no version 2 reader knows | this build |
//!
//! JSON because it is self-describing: a later version may add fields with
//! `#[serde(default)]` and still read every v1 byte, and fixtures stay readable. A
//! change that old bytes cannot express gets a new version number: its decoder is
//! added here, the v1 decoder stays and upgrades what it reads into the new types
//! (`1 => upgrade_v1_to_v2(decode_v1(body)?)`), and the frozen v1 fixtures in
//! `tests/fixtures` must keep decoding. A member that meets a version newer than it
//! knows fails loudly ([`CodecError::UnknownVersion`]) instead of guessing, so during
//! a rolling upgrade the new format is written only once every member reads it.

use crate::limits;
use crate::state::State;
use crate::{Entry, LogId, StoredMembership};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The version this build writes.
pub const CURRENT_VERSION: u8 = 3;
/// The newest version this build reads.
pub const NEWEST_READABLE_VERSION: u8 = 3;
/// The oldest version this build reads.
pub const OLDEST_READABLE_VERSION: u8 = 1;

const MAGIC: [u8; 2] = *b"TN";
const HEADER_BYTES: usize = 4;

/// What an encoded value is; the third header byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A Raft log entry.
    Entry,
    /// A state-machine snapshot ([`SnapshotImage`]).
    Snapshot,
    /// One row of the state (a host, a reservation, ...).
    Row,
    /// Log-store and state-machine metadata (vote, log ids, membership).
    Meta,
}

impl Kind {
    fn byte(self) -> u8 {
        match self {
            Self::Entry => b'E',
            Self::Snapshot => b'S',
            Self::Row => b'R',
            Self::Meta => b'M',
        }
    }
}

/// Why bytes did not decode (or a value did not encode).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("{kind:?} of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { kind: Kind, len: usize, max: usize },
    #[error("not a tern encoding: bad magic or a header shorter than {HEADER_BYTES} bytes")]
    BadHeader,
    #[error("expected a {expected:?}, found kind byte {found:#04x}")]
    WrongKind { expected: Kind, found: u8 },
    #[error(
        "{kind:?} has format version {found}; this build reads versions {OLDEST_READABLE_VERSION} to {NEWEST_READABLE_VERSION}: upgrade this member before it reads newer data"
    )]
    UnknownVersion { kind: Kind, found: u8 },
    #[error("{kind:?} version {version} body: {message}")]
    Body { kind: Kind, version: u8, message: String },
    #[error("bad state row key {0:?}")]
    BadKey(String),
}

/// A snapshot's content: the state and where in the log it stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotImage {
    pub last_applied: Option<LogId>,
    pub last_membership: StoredMembership,
    pub state: State,
}

/// Encodes `value` as `kind` in the current version.
pub(crate) fn encode<T: Serialize>(kind: Kind, value: &T) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(&MAGIC);
    out.push(kind.byte());
    out.push(CURRENT_VERSION);
    serde_json::to_writer(&mut out, value).map_err(|e| CodecError::Body {
        kind,
        version: CURRENT_VERSION,
        message: e.to_string(),
    })?;
    Ok(out)
}

/// Decodes `bytes` as `kind`, refusing anything over `max` bytes. For a type whose
/// version 1 body the current type still reads (fields added with defaults, or
/// dropped and ignored).
pub(crate) fn decode<T: DeserializeOwned>(kind: Kind, bytes: &[u8], max: usize) -> Result<T, CodecError> {
    let (version, body) = header(kind, bytes, max)?;
    json(kind, version, body)
}

/// Decodes `bytes` as `kind` for a type whose layout changed in version 2: a
/// version 1 body is read as `V1` and upgraded.
pub(crate) fn decode_upgrading<V1, T>(kind: Kind, bytes: &[u8], max: usize) -> Result<T, CodecError>
where
    V1: DeserializeOwned + Into<T>,
    T: DeserializeOwned,
{
    let (version, body) = header(kind, bytes, max)?;
    match version {
        1 => json::<V1>(kind, version, body).map(Into::into),
        _ => json(kind, version, body),
    }
}

fn json<T: DeserializeOwned>(kind: Kind, version: u8, body: &[u8]) -> Result<T, CodecError> {
    serde_json::from_slice(body).map_err(|e| CodecError::Body { kind, version, message: e.to_string() })
}

/// Checks size, magic, kind and version; returns the version and the body.
fn header(kind: Kind, bytes: &[u8], max: usize) -> Result<(u8, &[u8]), CodecError> {
    if bytes.len() > max {
        return Err(CodecError::TooLarge { kind, len: bytes.len(), max });
    }
    if bytes.len() < HEADER_BYTES || bytes[..2] != MAGIC {
        return Err(CodecError::BadHeader);
    }
    if bytes[2] != kind.byte() {
        return Err(CodecError::WrongKind { expected: kind, found: bytes[2] });
    }
    match bytes[3] {
        v @ OLDEST_READABLE_VERSION..=NEWEST_READABLE_VERSION => Ok((v, &bytes[HEADER_BYTES..])),
        found => Err(CodecError::UnknownVersion { kind, found }),
    }
}

/// Encodes a log entry.
pub fn encode_entry(entry: &Entry) -> Result<Vec<u8>, CodecError> {
    encode(Kind::Entry, entry)
}

/// Decodes a log entry of any readable version.
pub fn decode_entry(bytes: &[u8]) -> Result<Entry, CodecError> {
    decode(Kind::Entry, bytes, limits::ENTRY_BYTES_MAX)
}

/// Encodes a snapshot.
pub fn encode_snapshot(image: &SnapshotImage) -> Result<Vec<u8>, CodecError> {
    encode(Kind::Snapshot, image)
}

/// Decodes a snapshot of any readable version.
pub fn decode_snapshot(bytes: &[u8]) -> Result<SnapshotImage, CodecError> {
    decode(Kind::Snapshot, bytes, limits::SNAPSHOT_BYTES_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_checks_magic_kind_version_and_size() {
        // Goal: each malformed header gets its own error; the right one decodes.
        let good = encode(Kind::Row, &42u64).unwrap();
        assert_eq!(&good[..4], b"TNR\x03");
        assert_eq!(decode::<u64>(Kind::Row, &good, 100), Ok(42));
        assert_eq!(decode::<u64>(Kind::Row, b"TN", 100), Err(CodecError::BadHeader));
        assert_eq!(decode::<u64>(Kind::Row, b"XXR\x0142", 100), Err(CodecError::BadHeader));
        assert!(matches!(decode::<u64>(Kind::Entry, &good, 100), Err(CodecError::WrongKind { .. })));
        let mut future = good.clone();
        future[3] = 4;
        assert_eq!(
            decode::<u64>(Kind::Row, &future, 100),
            Err(CodecError::UnknownVersion { kind: Kind::Row, found: 4 })
        );
        assert!(matches!(decode::<u64>(Kind::Row, &good, 3), Err(CodecError::TooLarge { .. })));
        assert!(matches!(decode::<u64>(Kind::Row, b"TNR\x01{oops", 100), Err(CodecError::Body { .. })));
        assert_eq!(decode::<u64>(Kind::Row, b"TNR\x0142", 100), Ok(42), "version 1 is still read");
        assert_eq!(decode::<u64>(Kind::Row, b"TNR\x0242", 100), Ok(42), "version 2 is still read");
    }
}
