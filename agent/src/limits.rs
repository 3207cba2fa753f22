//! Every size bound of the agent's wire and queues, in one place, with the relations
//! between them checked at compile time. The bounds of the replicated state itself
//! (names, requests, entries, snapshots) live in [`tern_raft_store::limits`], re-exported
//! here as [`state`]; the migration crate's own are referenced below.
//!
//! Every gRPC server and client the agent builds takes [`GRPC_MESSAGE_BYTES_MAX`] both
//! ways through [`MessageLimits::with_message_limits`]: tonic's default (4 MiB to
//! decode) would refuse a forwarded request near [`state::REQUEST_BYTES_MAX`] or a large
//! listing, and the sending and receiving side of every hop must agree.

pub use tern_proto::limits::{GRPC_MESSAGE_BYTES_MAX, MessageLimits};
pub use tern_raft_store::limits as state;

/// Largest snapshot chunk openraft sends in one `InstallSnapshot` (openraft's own
/// default). Chunks travel as JSON, where a byte array costs up to 4 bytes per byte.
pub const SNAPSHOT_CHUNK_BYTES_MAX: u64 = 3 << 20;
/// Most log entries one `AppendEntries` carries (openraft's `max_payload_entries`;
/// its default of 300 batches of [`state::BATCH_BYTES_MAX`] would not fit a message).
pub const APPEND_ENTRIES_MAX: u64 = 64;
/// JSON's worst case for a byte array: `255,` per byte.
const JSON_BYTES_PER_BYTE_MAX: usize = 4;

/// Concurrent requests (HTTP/2 streams) served per connection.
pub const REQUESTS_PER_CONNECTION_MAX: usize = 256;

/// Longest member name a `Cluster.Join` may carry (one DNS label), in bytes.
pub const JOIN_NAME_BYTES_MAX: usize = 63;
/// Longest `host:port` address a `Cluster.Join` may carry, in bytes.
pub const ADDRESS_BYTES_MAX: usize = 255;

/// Largest model value embedded in a migration message (a server, a binding; see
/// `convert::unembed`): a server of thousands of cores fits easily.
pub const EMBEDDED_VALUE_BYTES_MAX: usize = 8 << 20;
/// Events queued per migration or host stream before the work waits for the client.
pub const MIGRATION_EVENTS_QUEUE_MAX: usize = 256;
/// At most this many operations are listed by `ListOperations`.
pub const OPERATIONS_LISTED_MAX: u32 = 1000;
/// Refused calls each agent keeps for `ternctl audit --denied` (the oldest go first).
pub const DENIED_KEPT_MAX: usize = 1000;
/// Most audit entries one `Cluster.Audit` answer holds.
pub const AUDIT_LISTED_MAX: u32 = 1000;
/// TLS handshakes the server runs at once; the next connection waits in the listen
/// backlog until one ends.
pub const HANDSHAKES_IN_FLIGHT_MAX: usize = 256;
/// Longest a connection may take to finish its TLS handshake before it is dropped.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

// A forwarded request (`Cluster.Propose` carries one encoded request) and any single
// log entry fit in one message, with room for the envelope.
const _: () = assert!(state::REQUEST_BYTES_MAX < state::ENTRY_BYTES_MAX);
const _: () = assert!(state::ENTRY_BYTES_MAX < GRPC_MESSAGE_BYTES_MAX);
// An AppendEntries of full batches fits in one message, with room for the envelope.
const _: () = assert!((APPEND_ENTRIES_MAX as usize) * state::BATCH_BYTES_MAX * 2 <= GRPC_MESSAGE_BYTES_MAX);
// A snapshot chunk, JSON-encoded in the worst case, fits in one message.
const _: () = assert!((SNAPSHOT_CHUNK_BYTES_MAX as usize) * JSON_BYTES_PER_BYTE_MAX < GRPC_MESSAGE_BYTES_MAX);
// A migration message's embedded value (an inventory, a binding) fits in one message.
const _: () = assert!(EMBEDDED_VALUE_BYTES_MAX < GRPC_MESSAGE_BYTES_MAX);
// What a join admits, the state can record.
const _: () = assert!(JOIN_NAME_BYTES_MAX <= state::NAME_BYTES_MAX);
const _: () = assert!(ADDRESS_BYTES_MAX <= state::TEXT_BYTES_MAX);
const _: () =
    assert!(MIGRATION_EVENTS_QUEUE_MAX > 0 && REQUESTS_PER_CONNECTION_MAX > 0 && HANDSHAKES_IN_FLIGHT_MAX > 0);
