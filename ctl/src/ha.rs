//! `ternctl ha status|check`, `host fence --confirm-off`, `host up` and
//! `set-domain ha-priority=`: HA when a control domain is lost (SPEC HA-*).

use crate::EXIT_NO;
use crate::client::{AgentArgs, status_message};
use anyhow::{anyhow, bail};
use std::fmt::Write as _;
use tern_proto::limits::MessageLimits;
use tern_proto::v1 as pb;

async fn client(agent: &AgentArgs) -> anyhow::Result<pb::ha_client::HaClient<tonic::transport::Channel>> {
    Ok(pb::ha_client::HaClient::new(agent.connect().await?).with_message_limits())
}

fn age(ms: Option<u64>) -> String {
    match ms {
        Some(ms) => format!("{:.1}s", ms as f64 / 1000.0),
        None => "-".into(),
    }
}

/// The guests that wait (each with every candidate's reasons) and those that never
/// restart, indented under their host.
fn waiting_lines(out: &mut String, waiting: &[pb::HaWaiting], never: &[String], verb: &str) {
    for w in waiting {
        let _ = writeln!(out, "    {} (ha-priority {}) {verb}:", w.domain, w.priority);
        for reason in &w.reasons {
            let _ = writeln!(out, "      {reason}");
        }
    }
    if !never.is_empty() {
        let _ = writeln!(out, "    not restarted (ha-priority none): {}", never.join(", "));
    }
}

/// `ternctl ha status`: what the leader sees. Exit 1 when a guest waits (no home, or
/// a fence not confirmed), so scripts can alert on it.
pub async fn status(agent: &AgentArgs, json: bool) -> anyhow::Result<i32> {
    let s = client(agent)
        .await?
        .status(pb::HaStatusRequest {})
        .await
        .map_err(|e| anyhow!(status_message(&e)))?
        .into_inner();
    let stuck = s.hosts.iter().any(|h| {
        !h.waiting.is_empty() || (h.operation_id != 0 && matches!(h.fence.as_str(), "awaiting fence" | "fence failed"))
    });
    if json {
        let hosts: Vec<serde_json::Value> = s
            .hosts
            .iter()
            .map(|h| {
                serde_json::json!({"host": h.host, "status": h.status, "heartbeat_age_ms": h.heartbeat_age_ms,
                    "failover": (h.operation_id != 0).then_some(h.operation_id), "fence": h.fence,
                    "fence_detail": h.fence_detail, "fence_attempts": h.fence_attempts, "restarted": h.restarted,
                    "waiting": h.waiting.iter().map(|w| serde_json::json!({"domain": w.domain,
                        "priority": w.priority, "reasons": w.reasons})).collect::<Vec<_>>(), "never": h.never, "not_stopped": h.not_stopped})
            })
            .collect();
        let v = serde_json::json!({"leader": s.leader, "mode": s.mode, "hosts": hosts});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(if stuck { EXIT_NO } else { 0 });
    }
    let mut out = String::new();
    let _ = writeln!(out, "leader {}, mode {}", s.leader, s.mode);
    let _ = writeln!(out, "{:<18}{:<13}{:<11}{:<10}FENCE", "HOST", "STATUS", "HEARD", "FAILOVER");
    for h in &s.hosts {
        let op = if h.operation_id == 0 { "-".to_string() } else { h.operation_id.to_string() };
        let _ = writeln!(out, "{:<18}{:<13}{:<11}{:<10}{}", h.host, h.status, age(h.heartbeat_age_ms), op, h.fence);
        if !h.fence_detail.is_empty() {
            let _ = writeln!(out, "    fence: {}", h.fence_detail);
        }
        for r in &h.restarted {
            let _ = writeln!(out, "    restarted {r}");
        }
        waiting_lines(&mut out, &h.waiting, &h.never, "waits for a home");
        for line in &h.not_stopped {
            let _ = writeln!(out, "    waits for the fence: {line}");
        }
    }
    print!("{out}");
    Ok(if stuck { EXIT_NO } else { 0 })
}

/// `ternctl ha check`: would every guest with a priority find a home were any one
/// host lost now? Exit 1 when not.
pub async fn check(agent: &AgentArgs, json: bool) -> anyhow::Result<i32> {
    let c =
        client(agent).await?.check(pb::HaCheckRequest {}).await.map_err(|e| anyhow!(status_message(&e)))?.into_inner();
    if json {
        let losses: Vec<serde_json::Value> = c
            .losses
            .iter()
            .map(|l| {
                serde_json::json!({"host": l.host, "placed": l.placed, "never": l.never,
                    "waiting": l.waiting.iter().map(|w| serde_json::json!({"domain": w.domain,
                        "priority": w.priority, "reasons": w.reasons})).collect::<Vec<_>>()})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"ok": c.ok, "losses": losses}))?);
        return Ok(if c.ok { 0 } else { EXIT_NO });
    }
    let mut out = String::new();
    for l in &c.losses {
        let verdict = if l.waiting.is_empty() { "ok" } else { "SHORT" };
        let _ = writeln!(out, "if {} is lost: {verdict}", l.host);
        for p in &l.placed {
            let _ = writeln!(out, "    {p}");
        }
        waiting_lines(&mut out, &l.waiting, &l.never, "would find no home");
    }
    let _ = writeln!(
        out,
        "{}",
        if c.ok {
            "every guest with a priority would restart after any single host loss"
        } else {
            "some guests would wait after a single host loss (HA-05)"
        }
    );
    print!("{out}");
    Ok(if c.ok { 0 } else { EXIT_NO })
}

/// `ternctl host fence --confirm-off HOST` and `ternctl host up HOST`.
pub async fn set_host(agent: &AgentArgs, host: &str, status: &str) -> anyhow::Result<i32> {
    let answer = client(agent)
        .await?
        .set_host(pb::HaSetHostRequest { host: host.to_string(), status: status.to_string() })
        .await
        .map_err(|e| anyhow!(status_message(&e)))?
        .into_inner();
    println!("{host} is {}", answer.status);
    Ok(0)
}

/// `ternctl set-domain ha-priority=high anti-affinity-group=db ldom1` (ldm's
/// `set-domain name=value ... ldom`).
pub async fn set_domain(agent: &AgentArgs, settings: &[String], domain: &str) -> anyhow::Result<i32> {
    let mut req = pb::HaSetDomainRequest { domain: domain.to_string(), ..Default::default() };
    for s in settings {
        match s.split_once('=') {
            Some(("ha-priority", v)) => req.ha_priority = v.to_string(),
            Some(("affinity-group", v)) => req.affinity_group = Some(v.to_string()),
            Some(("anti-affinity-group", v)) => req.anti_affinity_group = Some(v.to_string()),
            Some((k, _)) => bail!(
                "{k} is not a property tern sets; these are ha-priority=high|medium|low|none, \
                 affinity-group=NAME, anti-affinity-group=NAME"
            ),
            None => bail!("{s:?} is not name=value (e.g. ha-priority=high)"),
        }
    }
    client(agent).await?.set_domain(req.clone()).await.map_err(|e| anyhow!(status_message(&e)))?;
    let mut set = Vec::new();
    if !req.ha_priority.is_empty() {
        set.push(format!("ha-priority={}", req.ha_priority));
    }
    for (k, v) in [("affinity-group", &req.affinity_group), ("anti-affinity-group", &req.anti_affinity_group)] {
        if let Some(v) = v {
            set.push(format!("{k}={v}"));
        }
    }
    println!("{domain}: {}", set.join(" "));
    Ok(0)
}

/// `ternctl sim power-off --state FILE`: the simulated server loses power, as its BMC
/// would do it for a fence (what a simulated BMC's chassis-control script runs).
pub fn sim_power_off(state: &std::path::Path) -> anyhow::Result<i32> {
    let stopped = tern_hypervisor::sim::power_off(state).map_err(|e| anyhow!("{e}"))?;
    if stopped.is_empty() {
        println!("powered off; no guest was running");
    } else {
        println!("powered off; stopped {}", stopped.join(", "));
    }
    Ok(0)
}

/// `ternctl sim crash-control-domain --state FILE`: the simulated control domain fails
/// with the server powered on; the hypervisor applies its failure-policy (HA-08).
pub fn sim_crash_control_domain(state: &std::path::Path) -> anyhow::Result<i32> {
    let stopped = tern_hypervisor::sim::crash_control_domain(state).map_err(|e| anyhow!("{e}"))?;
    let running = tern_hypervisor::sim::running_guests(state).map_err(|e| anyhow!("{e}"))?;
    let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
    println!("control domain failed; stopped by failure-policy: {}; still running: {}", list(&stopped), list(&running));
    Ok(0)
}
