//! The gRPC message limit every tern server and client (agents and `ternctl` alike)
//! sets both ways: tonic's default (4 MiB to decode) would refuse a forwarded request
//! near the state's request limit or a large listing, and the two ends of every hop
//! must agree.

use crate::v1 as pb;
use tonic::transport::Channel;

/// Largest gRPC message any tern service or client sends or accepts.
pub const GRPC_MESSAGE_BYTES_MAX: usize = 64 << 20;

/// Largest snapshot `Cluster.Snapshot` streams and `ternctl cluster snapshot save`
/// accepts: tern-raft-store's `limits::SNAPSHOT_BYTES_MAX` (a test keeps them equal).
pub const SNAPSHOT_BYTES_MAX: u64 = 1 << 30;

/// The message limits on a generated tonic server or client.
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
use pb::ha_client::HaClient;
use pb::ha_server::HaServer;
use pb::hosts_client::HostsClient;
use pb::hosts_server::HostsServer;
use pb::inventory_client::InventoryClient;
use pb::inventory_server::InventoryServer;
use pb::migration_client::MigrationClient;
use pb::migration_server::MigrationServer;
use pb::raft_client::RaftClient;
use pb::raft_server::RaftServer;
use pb::rebalance_client::RebalanceClient;
use pb::rebalance_server::RebalanceServer;
use pb::users_client::UsersClient;
use pb::users_server::UsersServer;

message_limits! {
    RaftServer, RaftClient;
    ClusterServer, ClusterClient;
    InventoryServer, InventoryClient;
    MigrationServer, MigrationClient;
    HostsServer, HostsClient;
    UsersServer, UsersClient;
    HaServer, HaClient;
    RebalanceServer, RebalanceClient;
}
