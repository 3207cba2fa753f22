//! Raft between agents over gRPC: openraft's messages as versioned JSON payloads in
//! `tern.v1.Raft`, one reused channel per peer, a deadline on every call.
//!
//! Errors map onto openraft's: a peer that cannot be reached is `Unreachable` (openraft
//! backs off), a call that timed out or failed in flight is a `NetworkError` (retried).

use crate::limits::MessageLimits;
use crate::transport::Channels;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tern_proto::v1 as pb;
use tern_raft_store::{Node, NodeId, TypeConfig};

/// The wire version of Raft payloads; bumped when the encoding changes.
pub const PAYLOAD_VERSION: u8 = 1;

/// Metadata naming the member a Raft message is for. A member restarted on a blank
/// disk gets a new id at the same address; answering messages meant for its old id
/// would vote twice in a term and make the leader see a follower's log go backwards.
pub const TARGET_ID_HEADER: &str = "tern-raft-target";

/// Encodes a Raft message: a version byte, then JSON.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, serde_json::Error> {
    let mut out = vec![PAYLOAD_VERSION];
    serde_json::to_writer(&mut out, msg)?;
    Ok(out)
}

/// Decodes a Raft message, refusing unknown versions.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&PAYLOAD_VERSION, body)) => serde_json::from_slice(body).map_err(|e| format!("bad Raft payload: {e}")),
        Some((v, _)) => Err(format!("Raft payload version {v} is not supported (this agent speaks {PAYLOAD_VERSION})")),
        None => Err("empty Raft payload".into()),
    }
}

/// Builds a client per peer from the shared channel cache.
#[derive(Clone)]
pub struct GrpcNetworkFactory {
    pub channels: Channels,
}

pub struct GrpcNetwork {
    target: NodeId,
    addr: String,
    channels: Channels,
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetworkFactory {
    type Network = GrpcNetwork;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        GrpcNetwork { target, addr: node.addr.clone(), channels: self.channels.clone() }
    }
}

type RpcErr<E = openraft::error::Infallible> = RPCError<NodeId, Node, RaftError<NodeId, E>>;

impl GrpcNetwork {
    async fn call<Req, Resp, E>(&self, method: Method, req: &Req, option: &RPCOption) -> Result<Resp, RpcErr<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data = encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let channel = self.channels.get(&self.addr).map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut client = pb::raft_client::RaftClient::new(channel).with_message_limits();
        let mut request = crate::transport::request_within(pb::RaftPayload { data }, option.hard_ttl());
        // The member this message is for: an agent at this address with another id
        // (a replaced disk) must not answer for it.
        request.metadata_mut().insert(TARGET_ID_HEADER, self.target.into());
        let result = match method {
            Method::Append => client.append_entries(request).await,
            Method::Vote => client.vote(request).await,
            Method::Snapshot => client.install_snapshot(request).await,
        };
        let payload = result.map_err(|s| status_to_error(self.target, &s))?.into_inner();
        let decoded: Result<Resp, RaftError<NodeId, E>> =
            decode(&payload.data).map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        decoded.map_err(|e| RPCError::RemoteError(openraft::error::RemoteError::new(self.target, e)))
    }
}

#[derive(Clone, Copy)]
enum Method {
    Append,
    Vote,
    Snapshot,
}

fn status_to_error<E: std::error::Error>(target: NodeId, s: &tonic::Status) -> RpcErr<E> {
    let err = std::io::Error::other(format!("peer {target}: {}: {}", s.code(), s.message()));
    match s.code() {
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&err)),
        _ => RPCError::Network(NetworkError::new(&err)),
    }
}

impl RaftNetwork<TypeConfig> for GrpcNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RpcErr> {
        self.call(Method::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RpcErr<InstallSnapshotError>> {
        self.call(Method::Snapshot, &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> Result<VoteResponse<NodeId>, RpcErr> {
        self.call(Method::Vote, &rpc, &option).await
    }
}
