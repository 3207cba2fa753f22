//! HA in the agent (SPEC HA-01): every agent heartbeats the leader over gRPC (not
//! through the Raft log); the leader feeds its [`tern_ha::Detector`] and, as a leader
//! duty, commits the host transitions the detector decides (Up -> Suspect -> Lost,
//! and back to Up when a suspect or lost host is heard again: nothing restarts a lost
//! host's guests elsewhere yet, so its guests never left it).

use crate::convert;
use crate::limits::{JOIN_NAME_BYTES_MAX, MessageLimits};
use crate::node::Node;
use std::collections::BTreeMap;
use std::time::Duration;
use tern_cluster::Error;
use tern_ha::{Effect, Event};
use tern_proto::v1 as pb;
use tern_raft_store::{Command, HostStatus};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The leader takes a heartbeat from `host`'s agent.
pub fn heard(node: &Node, host: &str) -> Result<(), Error> {
    if host.is_empty() || host.len() > JOIN_NAME_BYTES_MAX {
        return Err(Error::InvalidInput(format!("a heartbeat names its host in 1 to {JOIN_NAME_BYTES_MAX} bytes")));
    }
    if !node.is_leader() {
        return Err(Error::NotLeader { leader: node.leader().map(|(_, addr)| addr) });
    }
    // Only registered hosts are remembered, so the detector's memory stays bounded by
    // the cluster's hosts whatever callers send.
    if !node.read(|s| s.host(host).is_some()) {
        return Err(Error::NotFound(format!("no host named {host:?} is registered; register before heartbeating")));
    }
    node.detector().step(Event::Heartbeat { host }, node.now_ms());
    Ok(())
}

fn interval(node: &Node) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval(Duration::from_millis(node.config.ha.heartbeat_interval_ms));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

/// Heartbeats the leader every `ha.heartbeat_interval_ms` until shutdown; each call's
/// deadline is the interval, so a slow leader never queues them up.
pub async fn heartbeat(node: Node) {
    let mut ticks = interval(&node);
    let deadline = Duration::from_millis(node.config.ha.heartbeat_interval_ms);
    let mut failing = false;
    loop {
        tokio::select! {
            () = node.shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        let result = match node.leader() {
            None => continue, // no leader to tell; it will give every host its grace
            Some((id, _)) if id == node.id => heard(&node, &node.name),
            Some((_, addr)) => send(&node, &addr, deadline).await,
        };
        match result {
            Ok(()) if failing => {
                info!(node = %node.name, "heartbeats reach the leader again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                warn!(node = %node.name, error = %e, "heartbeat to the leader failed; retrying every interval");
                failing = true;
            }
            Err(e) => debug!(node = %node.name, error = %e, "heartbeat failed"),
        }
    }
}

async fn send(node: &Node, addr: &str, deadline: Duration) -> Result<(), Error> {
    let mut client = pb::cluster_client::ClusterClient::new(node.channel(addr)?).with_message_limits();
    let mut request = tonic::Request::new(pb::HeartbeatRequest { host: node.name.clone(), node_id: node.id });
    request.set_timeout(deadline);
    client.heartbeat(request).await.map_err(convert::error)?;
    Ok(())
}

/// The leader duty: every heartbeat interval, the detector judges every host's
/// silence against its committed status and the transitions it decides are committed.
pub(crate) async fn monitor(node: Node, term: CancellationToken) {
    node.detector().step(Event::Leading, node.now_ms());
    let mut ticks = interval(&node);
    loop {
        tokio::select! {
            () = term.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let hosts: BTreeMap<String, HostStatus> =
            node.read(|s| s.hosts().values().map(|h| (h.name.clone(), h.status)).collect());
        let effects = node.detector().step(Event::Tick { hosts: &hosts }, node.now_ms());
        for Effect::SetStatus { host, status, silent_ms } in effects {
            warn!(node = %node.name, %host, %status, silent_ms, "HA-01: host status changes");
            let command = Command::SetHostStatus { host: host.clone(), status };
            if let Err(e) = node.propose(&format!("agent:{}", node.name), command).await {
                warn!(node = %node.name, %host, error = %e, "recording the host status failed; will retry");
            }
        }
    }
    node.detector().step(Event::NotLeading, node.now_ms());
}
