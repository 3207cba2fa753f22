//! Every size bound of the agent's wire and queues, in one place, with the relations
//! between them checked at compile time. The bounds of the replicated state itself
//! (names, requests, entries, snapshots) live in [`tern_raft_store::limits`], re-exported
//! here as [`state`]; the migration crate's own are referenced below.
//!
//! Every gRPC server and client the agent builds takes [`GRPC_MESSAGE_BYTES_MAX`] both
//! ways through [`MessageLimits::with_message_limits`]: tonic's default (4 MiB to
//! decode) would refuse a forwarded request near [`state::REQUEST_BYTES_MAX`] or a large
//! listing, and the sending and receiving side of every hop must agree.

use tern_proto::v1 as pb;
pub use tern_raft_store::limits as state;
use tonic::transport::Channel;

/// Largest gRPC message any service or client of the agent sends or accepts.
pub const GRPC_MESSAGE_BYTES_MAX: usize = 64 << 20;

/// Largest snapshot chunk openraft sends in one `InstallSnapshot` (openraft's own
/// default). Chunks travel as JSON, where a byte array costs up to 4 bytes per byte.
pub const SNAPSHOT_CHUNK_BYTES_MAX: u64 = 3 << 20;
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

// A forwarded request (`Cluster.Propose` carries one encoded request) and any single
// log entry fit in one message, with room for the envelope.
const _: () = assert!(state::REQUEST_BYTES_MAX < state::ENTRY_BYTES_MAX);
const _: () = assert!(state::ENTRY_BYTES_MAX < GRPC_MESSAGE_BYTES_MAX);
// A snapshot chunk, JSON-encoded in the worst case, fits in one message.
const _: () = assert!((SNAPSHOT_CHUNK_BYTES_MAX as usize) * JSON_BYTES_PER_BYTE_MAX < GRPC_MESSAGE_BYTES_MAX);
// A migration message's embedded value (an inventory, a binding) fits in one message.
const _: () = assert!(EMBEDDED_VALUE_BYTES_MAX < GRPC_MESSAGE_BYTES_MAX);
// What a join admits, the state can record.
const _: () = assert!(JOIN_NAME_BYTES_MAX <= state::NAME_BYTES_MAX);
const _: () = assert!(ADDRESS_BYTES_MAX <= state::TEXT_BYTES_MAX);
const _: () = assert!(MIGRATION_EVENTS_QUEUE_MAX > 0 && REQUESTS_PER_CONNECTION_MAX > 0);

/// The agent's message limits on a generated tonic server or client.
pub trait MessageLimits: Sized {
    /// `self` sending and accepting messages up to [`GRPC_MESSAGE_BYTES_MAX`].
    #[must_use]
    fn with_message_limits(self) -> Self;
}

macro_rules! message_limits {
    ($($server:ident, $client:ident;)*) => {$(
        impl<T> MessageLimits for $server<T> {
            fn with_message_limits(self) -> Self {
                self.max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX).max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            }
        }
        impl MessageLimits for $client<Channel> {
            fn with_message_limits(self) -> Self {
                self.max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX).max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX)
            }
        }
    )*};
}

use pb::cluster_client::ClusterClient;
use pb::cluster_server::ClusterServer;
use pb::hosts_client::HostsClient;
use pb::hosts_server::HostsServer;
use pb::inventory_client::InventoryClient;
use pb::inventory_server::InventoryServer;
use pb::migration_client::MigrationClient;
use pb::migration_server::MigrationServer;
use pb::raft_client::RaftClient;
use pb::raft_server::RaftServer;
use pb::users_client::UsersClient;
use pb::users_server::UsersServer;

message_limits! {
    RaftServer, RaftClient;
    ClusterServer, ClusterClient;
    InventoryServer, InventoryClient;
    MigrationServer, MigrationClient;
    HostsServer, HostsClient;
    UsersServer, UsersClient;
}
