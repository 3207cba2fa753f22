//! HA in the agent (SPEC HA-01..HA-06): every agent heartbeats the leader over gRPC
//! (not through the Raft log) and applies its isolation response when it cannot
//! (HA-03); the leader feeds its [`tern_ha::Detector`] and, as leader duties, commits
//! the host transitions the detector decides (Up -> Suspect -> Lost, back to Up when
//! heard again before a fence) and runs the [`tern_ha::Failover`] rounds (fence, then
//! restart or hand off). Also the leader's answers to `ternctl ha status|check` and
//! the admin's `host fence --confirm-off` / `host up`.

use crate::config::{HaMode, IsolationResponse};
use crate::convert;
use crate::limits::{JOIN_NAME_BYTES_MAX, MessageLimits};
use crate::node::Node;
use std::collections::BTreeMap;
use std::time::Duration;
use tern_cluster::Error;
use tern_ha::{Effect, Event, Failover, FailoverConfig, HandOff, Mode};
use tern_proto::v1 as pb;
use tern_raft_store::{Command, HostStatus};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The leader takes a heartbeat from `host`'s agent.
pub fn heard(node: &Node, host: &str, sent_at_ms: u64) -> Result<(), Error> {
    if host.is_empty() || host.len() > JOIN_NAME_BYTES_MAX {
        return Err(Error::InvalidInput(format!("a heartbeat names its host in 1 to {JOIN_NAME_BYTES_MAX} bytes")));
    }
    if !node.is_leader() {
        return Err(Error::NotLeader { leader: node.leader().map(|(_, addr)| addr) });
    }
    // HA-03: a leader cut off from its quorum is no cluster to be reachable through:
    // its own agent and those still reaching it count themselves isolated.
    let quorum_ack_ms = node.raft.metrics().borrow().millis_since_quorum_ack;
    if quorum_ack_ms.is_none_or(|ms| ms >= node.config.ha.suspect_after_ms) {
        let since = quorum_ack_ms.map_or("since it was elected".to_string(), |ms| format!("for {ms} ms"));
        return Err(Error::Unavailable(format!("this leader has not heard from a quorum {since}")));
    }
    // Only registered hosts are remembered, so the detector's memory stays bounded by
    // the cluster's hosts whatever callers send.
    if !node.read(|s| s.host(host).is_some()) {
        return Err(Error::NotFound(format!("no host named {host:?} is registered; register before heartbeating")));
    }
    node.detector().step(Event::Heartbeat { host }, node.now_ms());
    node.clock_check.heard(host, sent_at_ms);
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
    let mut isolation = Isolation { reached_ms: node.now_ms(), applied: false };
    loop {
        tokio::select! {
            () = node.shutdown.cancelled() => return,
            _ = ticks.tick() => {}
        }
        node.clock_check.observe(node.read(|s| s.clock_ms()));
        let result = match node.leader() {
            None => Err(Error::Unavailable("no leader is known".into())),
            Some((id, _)) if id == node.id => heard(&node, &node.name, node.now_ms()),
            Some((_, addr)) => send(&node, &addr, deadline).await,
        };
        if result.is_ok() {
            isolation.reached_ms = node.now_ms();
            if isolation.applied {
                warn!(node = %node.name, "HA-03: the leader is reachable again; guests stopped by isolation stay stopped");
                isolation.applied = false;
            }
        } else {
            isolation.check(&node).await;
        }
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

/// HA-03: this agent's view of its own reachability.
struct Isolation {
    /// When a heartbeat last reached the leader (or this member led).
    reached_ms: u64,
    /// The isolation response ran since then.
    applied: bool,
}

impl Isolation {
    /// Cut off from the leader for `ha.isolation_timeout_ms`: apply the isolation
    /// response once (stop every running guest), so that guests the majority may
    /// restart elsewhere do not also run here.
    async fn check(&mut self, node: &Node) {
        let ha = &node.config.ha;
        if ha.isolation_timeout_ms == 0 || self.applied {
            return;
        }
        let cut_off_ms = node.now_ms().saturating_sub(self.reached_ms);
        if cut_off_ms < ha.isolation_timeout_ms {
            return;
        }
        self.applied = true;
        if ha.isolation_response == IsolationResponse::LeaveRunning {
            warn!(node = %node.name, cut_off_ms, "HA-03: isolated; leave-running: guests keep running (a power fence decides)");
            return;
        }
        let running: Vec<String> = match node.hypervisor.inventory().await {
            Ok(inv) => inv
                .domains
                .iter()
                .filter(|d| d.kind == tern_model::DomainKind::Guest && d.state == tern_model::DomainState::Active)
                .map(|d| d.name.clone())
                .collect(),
            Err(e) => {
                warn!(node = %node.name, error = %e, "HA-03: isolated, but the hypervisor cannot be read; retrying");
                self.applied = false;
                return;
            }
        };
        warn!(node = %node.name, cut_off_ms, guests = ?running, "HA-03: isolated from the cluster; stopping guests");
        for guest in running {
            if let Err(e) = node.hypervisor.stop(&guest).await {
                warn!(node = %node.name, %guest, error = %e, "HA-03: stopping a guest failed");
                self.applied = false; // try again next interval
            }
        }
    }
}

async fn send(node: &Node, addr: &str, deadline: Duration) -> Result<(), Error> {
    let mut client = pb::cluster_client::ClusterClient::new(node.channel(addr)?).with_message_limits();
    let request = crate::transport::request_within(
        pb::HeartbeatRequest { host: node.name.clone(), node_id: node.id, sent_at_ms: node.now_ms() },
        deadline,
    );
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
            let expected = hosts.get(&host).copied();
            let command = Command::SetHostStatus { host: host.clone(), status, expected };
            if let Err(e) = node.propose(&format!("agent:{}", node.name), command).await {
                warn!(node = %node.name, %host, error = %e, "recording the host status failed; will retry");
            }
        }
    }
    node.detector().step(Event::NotLeading, node.now_ms());
}

/// The leader duty of HA-02..HA-06: every heartbeat interval, one round of
/// [`tern_ha::Failover`] (fence lost hosts, restart or hand off fenced hosts' guests).
pub(crate) async fn failover(node: Node, term: CancellationToken) {
    let ha = &node.config.ha;
    let mode = match (&ha.mode, &ha.hand_off_command) {
        (HaMode::HandOff, Some(command)) => Mode::HandOff(HandOff {
            command: command.clone(),
            args: ha.hand_off_args.clone(),
            deadline_ms: ha.hand_off_deadline_ms,
        }),
        _ => Mode::Restart,
    };
    let config = FailoverConfig {
        mode,
        fences: (*node.fences).clone(),
        lease_ms: ha.restart_lease_ms,
        fence_retry_ms: ha.fence_retry_ms,
        fence_retry_max_ms: ha.fence_retry_max_ms,
    };
    let mut driver = Failover::new(config, node.failover.clone());
    let mut ticks = interval(&node);
    loop {
        tokio::select! {
            () = term.cancelled() => break,
            _ = ticks.tick() => {}
        }
        tokio::select! {
            () = term.cancelled() => break,
            () = driver.round(&node) => {}
        }
    }
    node.failover.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
}

/// `ternctl ha status`, answered by the leader: every host with its status and
/// heartbeat age, and each failover's fence, restarts and waiting guests.
pub(crate) fn status(node: &Node) -> pb::HaStatusResponse {
    let now = node.now_ms();
    let report = node.failover.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    let detector = node.detector();
    let hosts = node.read(|s| {
        s.hosts()
            .values()
            .map(|h| {
                let operation = tern_ha::failover::running_failover(s, &h.name).unwrap_or(0);
                let mut out = pb::HaHost {
                    host: h.name.clone(),
                    status: h.status.to_string(),
                    heartbeat_age_ms: detector.heard_ago_ms(&h.name, now),
                    operation_id: operation,
                    fence: "none".into(),
                    ..Default::default()
                };
                if h.status == HostStatus::Fenced && operation == 0 {
                    out.fence = "fenced".into();
                    out.fence_detail = format!(
                        "powered off and its failover ended; once the server is back, `ternctl host up {}` returns it",
                        h.name
                    );
                }
                if let Some(r) = report.get(&h.name).filter(|_| operation != 0) {
                    out.fence = r.fence.name().into();
                    out.fence_detail = r.fence.detail();
                    out.fence_attempts = r.fence_attempts;
                    out.restarted = r.restarted.clone();
                    out.waiting = r.waiting.iter().map(waiting_to_pb).collect();
                    out.never = r.never.clone();
                    out.not_stopped = r.not_stopped.iter().map(|(g, why)| format!("{g}: {why}")).collect();
                    if let Some(h) = &r.handed_off {
                        out.fence = "handed off".into();
                        out.fence_detail = h.clone();
                    }
                }
                out
            })
            .collect()
    });
    let mode = match node.config.ha.mode {
        HaMode::Restart => "restart",
        HaMode::HandOff => "hand-off",
    };
    pb::HaStatusResponse { leader: node.name.clone(), mode: mode.into(), hosts }
}

fn waiting_to_pb(w: &tern_ha::restart::Waiting) -> pb::HaWaiting {
    pb::HaWaiting {
        domain: w.domain.clone(),
        priority: w.priority.to_string(),
        reasons: w
            .reasons
            .iter()
            .map(|(host, violations)| {
                let v: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
                format!("{host}: {}", v.join("; "))
            })
            .collect(),
    }
}

/// `ternctl ha check`: for every Up host, whether its guests would restart elsewhere
/// were it lost now (HA admission, like vSphere's and Ganeti's N+1).
pub(crate) fn check(node: &Node) -> pb::HaCheckResponse {
    let now = node.now_ms();
    let plans = node.read(|s| tern_ha::failover::admission(s, now));
    let ok = plans.iter().all(|(_, p)| p.waiting.is_empty());
    let losses = plans
        .into_iter()
        .map(|(host, plan)| pb::HaCheckLoss {
            host,
            placed: plan.restarts.iter().map(|r| format!("{} -> {}", r.domain, r.target)).collect(),
            waiting: plan.waiting.iter().map(waiting_to_pb).collect(),
            never: plan.never,
        })
        .collect();
    pb::HaCheckResponse { ok, losses }
}

/// An admin's word on a host (audited as `actor`): `fenced` confirms a lost host's
/// server is powered off (HA-02's manual fence), `up` returns a fenced or lost host
/// to service (its guests restarted elsewhere stay there, HA-09).
pub(crate) async fn set_host(node: &Node, actor: &str, host: &str, status: &str) -> Result<HostStatus, Error> {
    let now = node.read(|s| s.host(host).map(|h| h.status));
    let Some(now) = now else {
        return Err(Error::NotFound(format!("no host named {host:?} is registered")));
    };
    let (wanted, allowed): (HostStatus, &[HostStatus]) = match status {
        "fenced" => (HostStatus::Fenced, &[HostStatus::Lost]),
        "up" => (HostStatus::Up, &[HostStatus::Lost, HostStatus::Fenced]),
        other => return Err(Error::InvalidInput(format!("host status {other:?} is not fenced or up"))),
    };
    if !allowed.contains(&now) {
        let hint = match wanted {
            HostStatus::Fenced => {
                "only a lost host can be confirmed fenced; to take a running host out of service, evacuate it"
            }
            _ => "only a lost or fenced host is returned this way; a host in maintenance is restored (host restore)",
        };
        return Err(Error::InvalidInput(format!("{host} is {now}: {hint}")));
    }
    let command = Command::SetHostStatus { host: host.to_string(), status: wanted, expected: Some(now) };
    node.propose(actor, command).await?;
    warn!(%host, %actor, from = %now, to = %wanted, "host status set by an admin");
    Ok(wanted)
}
