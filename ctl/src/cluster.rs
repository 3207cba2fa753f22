//! Commands answered by a running cluster: `cluster status`, `audit`, `list-domain`,
//! `list-devices` (without --layout), `list-services`.

use crate::client::{AgentArgs, status_message};
use crate::list::{CoreRow, Devices, MemoryRow, print_devices};
use anyhow::anyhow;
use std::fmt::Write as _;
use tern_model::units::Size;
use tern_proto::limits::MessageLimits;
use tern_proto::v1 as pb;

fn rpc<T>(r: Result<tonic::Response<T>, tonic::Status>) -> anyhow::Result<T> {
    r.map(tonic::Response::into_inner).map_err(|s| anyhow!(status_message(&s)))
}

pub async fn status(agent: &AgentArgs, json: bool) -> anyhow::Result<i32> {
    let mut c = pb::cluster_client::ClusterClient::new(agent.connect().await?).with_message_limits();
    let st = rpc(c.status(pb::StatusRequest {}).await)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status_json(&st))?);
        return Ok(0);
    }
    let leader = st.members.iter().find(|m| m.node_id == st.leader_id).map(|m| m.name.as_str()).unwrap_or("none");
    let mut out = String::new();
    let _ = writeln!(
        out,
        "leader {leader}  term {}  commit {}  applied {}  (answered by {})",
        st.term, st.commit_index, st.applied_index, st.node_name
    );
    let _ = writeln!(out, "{:<18}{:<10}{:<22}{:<13}{:<10}MATCHED", "NAME", "ROLE", "ADDRESS", "HOST", "LEADER");
    for m in &st.members {
        let role = match pb::MemberRole::try_from(m.role) {
            Ok(pb::MemberRole::Voter) => "voter",
            Ok(pb::MemberRole::Learner) => "learner",
            _ => "?",
        };
        let _ = writeln!(
            out,
            "{:<18}{:<10}{:<22}{:<13}{:<10}{}",
            m.name,
            role,
            m.address,
            host_status(m.host_status),
            if m.node_id == st.leader_id { "*" } else { "" },
            m.matched_index
        );
    }
    print!("{out}");
    Ok(0)
}

fn host_status(s: i32) -> &'static str {
    match pb::HostStatus::try_from(s) {
        Ok(pb::HostStatus::Up) => "up",
        Ok(pb::HostStatus::Suspect) => "suspect",
        Ok(pb::HostStatus::Lost) => "lost",
        Ok(pb::HostStatus::Fenced) => "fenced",
        Ok(pb::HostStatus::Maintenance) => "maintenance",
        _ => "-",
    }
}

fn status_json(st: &pb::ClusterStatus) -> serde_json::Value {
    serde_json::json!({
        "node_id": st.node_id,
        "node_name": st.node_name,
        "leader_id": st.leader_id,
        "term": st.term,
        "commit_index": st.commit_index,
        "applied_index": st.applied_index,
        "members": st.members.iter().map(|m| serde_json::json!({
            "node_id": m.node_id,
            "name": m.name,
            "address": m.address,
            "role": match pb::MemberRole::try_from(m.role) {
                Ok(pb::MemberRole::Voter) => "voter",
                Ok(pb::MemberRole::Learner) => "learner",
                _ => "unknown",
            },
            "host_status": host_status(m.host_status),
            "matched_index": m.matched_index,
        })).collect::<Vec<_>>(),
    })
}

/// `list-domain [-o status|core|console] [DOMAIN]`. With `-o`, like ldm on one server,
/// only the answering agent's host is asked unless `--host` names another: after a
/// migration the source answers that the domain was not found (OP-06).
pub async fn list_domain(
    agent: &AgentArgs,
    host: Option<&str>,
    domain: Option<&str>,
    output: Option<&str>,
    json: bool,
) -> anyhow::Result<i32> {
    let channel = agent.connect().await?;
    let host = match (host, output) {
        (Some(h), _) => h.to_string(),
        (None, Some(_)) => {
            let mut c = pb::cluster_client::ClusterClient::new(channel.clone()).with_message_limits();
            rpc(c.status(pb::StatusRequest {}).await)?.node_name
        }
        (None, None) => String::new(),
    };
    let mut c = pb::inventory_client::InventoryClient::new(channel).with_message_limits();
    let req = pb::ListDomainsRequest { host, domain: domain.unwrap_or_default().to_string() };
    let resp = rpc(c.list_domains(req).await)?;
    if let Some(d) = domain
        && resp.domains.is_empty()
    {
        eprintln!("LDom \"{d}\" was not found");
        return Ok(crate::EXIT_NO);
    }
    if json {
        let v: Vec<serde_json::Value> = resp.domains.iter().map(domain_json).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let out = match output {
        Some("status") => render_status(&resp.domains),
        Some("core") => render_cores(&resp.domains),
        Some("console") => render_consoles(&resp.domains),
        _ => render_domains(&resp.domains),
    };
    print!("{out}");
    Ok(0)
}

fn domain_json(d: &pb::DomainInfo) -> serde_json::Value {
    serde_json::json!({
        "name": d.name, "host": d.host, "kind": d.kind, "state": d.state,
        "vcpus": d.vcpus, "memory_bytes": d.memory_bytes, "cpu_arch": d.cpu_arch,
        "cores": d.cores.iter().map(|c| serde_json::json!({"cid": c.cid, "cpuset": c.cpuset})).collect::<Vec<_>>(),
        "memory": d.memory.iter().map(|m| serde_json::json!({"pa": m.pa, "size": m.size})).collect::<Vec<_>>(),
        "console": d.console.as_ref().map(|c| serde_json::json!({"service": c.service, "port": c.port, "logging": c.logging})),
        "util_pct": d.util_pct,
        "status": d.status.as_ref().map(|s| serde_json::json!({"operation": s.operation, "progress_pct": s.progress_pct, "source": s.source, "target": s.target})),
    })
}

fn render_domains(domains: &[pb::DomainInfo]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<14}{:<18}{:<10}{:<7}{:<6}{:<9}{:<6}KIND",
        "NAME", "HOST", "STATE", "CONS", "VCPU", "MEMORY", "UTIL"
    );
    for d in domains {
        let cons = d.console.as_ref().map_or("UART".to_string(), |c| c.port.to_string());
        let _ = writeln!(
            out,
            "{:<14}{:<18}{:<10}{:<7}{:<6}{:<9}{:<6}{}",
            d.name,
            d.host,
            d.state,
            cons,
            d.vcpus,
            Size(d.memory_bytes).to_string(),
            format!("{}%", d.util_pct),
            d.kind
        );
    }
    out
}

/// OP-06: OPERATION / PROGRESS / SOURCE, as `ldm list-domain -o status`.
fn render_status(domains: &[pb::DomainInfo]) -> String {
    let mut out = String::new();
    for d in domains {
        let _ = writeln!(out, "NAME\n{}\n\nSTATUS\n    {:<12}{:<12}SOURCE", d.name, "OPERATION", "PROGRESS");
        if let Some(s) = &d.status {
            let _ = writeln!(out, "    {:<12}{:<12}{}", s.operation, format!("{}%", s.progress_pct), s.source);
        }
        let _ = writeln!(out);
    }
    out
}

/// OP-08: CID / CPUSET per domain.
fn render_cores(domains: &[pb::DomainInfo]) -> String {
    let mut out = String::new();
    for d in domains {
        let _ = writeln!(out, "NAME\n{}\n\nCORE\n    {:<7}CPUSET", d.name, "CID");
        for c in &d.cores {
            let _ = writeln!(out, "    {:<7}{}", c.cid, tern_model::units::format_cpuset(&c.cpuset));
        }
        let _ = writeln!(out);
    }
    out
}

/// OP-08: NAME / SERVICE / PORT / LOGGING per domain.
fn render_consoles(domains: &[pb::DomainInfo]) -> String {
    let mut out = String::new();
    for d in domains {
        let _ = writeln!(out, "NAME\n{}\n\nVCONS\n    {:<14}{:<26}{:<8}LOGGING", d.name, "NAME", "SERVICE", "PORT");
        match &d.console {
            Some(c) => {
                let service = format!("{}@primary", c.service);
                let logging = if c.logging { "on" } else { "off" };
                let _ = writeln!(out, "    {:<14}{:<26}{:<8}{logging}", d.name, service, c.port);
            }
            None => {
                let _ = writeln!(out, "    {:<14}UART", d.name);
            }
        }
        let _ = writeln!(out);
    }
    out
}

pub async fn list_devices(
    agent: &AgentArgs,
    host: Option<&str>,
    all: bool,
    kinds: &[String],
    json: bool,
) -> anyhow::Result<i32> {
    let mut c = pb::inventory_client::InventoryClient::new(agent.connect().await?).with_message_limits();
    let resp = rpc(c.list_devices(pb::ListDevicesRequest { host: host.unwrap_or_default().to_string(), all }).await)?;
    let want = |k: &str| kinds.is_empty() || kinds.iter().any(|x| x == k);
    let docs: Vec<Devices> = resp
        .hosts
        .into_iter()
        .map(|h| Devices {
            host: h.host,
            memory: want("memory").then(|| {
                h.memory
                    .into_iter()
                    .map(|m| MemoryRow { pa: m.pa, size: m.size, bound: (!m.bound.is_empty()).then_some(m.bound) })
                    .collect()
            }),
            core: want("core").then(|| {
                h.cores
                    .into_iter()
                    .map(|c| CoreRow { cid: c.cid, cpuset: c.cpuset, free_pct: c.free_pct, activated: c.activated })
                    .collect()
            }),
        })
        .collect();
    print_devices(&docs, json)?;
    Ok(0)
}

pub async fn list_services(agent: &AgentArgs, host: Option<&str>, json: bool) -> anyhow::Result<i32> {
    let mut c = pb::inventory_client::InventoryClient::new(agent.connect().await?).with_message_limits();
    let resp = rpc(c.list_services(pb::ListServicesRequest { host: host.unwrap_or_default().to_string() }).await)?;
    if json {
        let v: Vec<serde_json::Value> = resp
            .hosts
            .iter()
            .map(|h| {
                serde_json::json!({
                    "host": h.host,
                    "vds": h.vds.iter().map(|v| serde_json::json!({"name": v.name, "domain": v.domain,
                        "volumes": v.volumes.iter().map(|x| serde_json::json!({"name": x.name, "device": x.device, "shared": x.shared})).collect::<Vec<_>>()})).collect::<Vec<_>>(),
                    "vsw": h.vsw.iter().map(|v| serde_json::json!({"name": v.name, "domain": v.domain, "nic": v.nic})).collect::<Vec<_>>(),
                    "vcc": h.vcc.iter().map(|v| serde_json::json!({"name": v.name, "domain": v.domain, "port_min": v.port_min, "port_max": v.port_max})).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let mut out = String::new();
    for h in &resp.hosts {
        let _ = writeln!(out, "{}:", h.host);
        let _ = writeln!(out, "VCC\n    {:<16}{:<12}PORT-RANGE", "NAME", "LDOM");
        for v in &h.vcc {
            let _ = writeln!(out, "    {:<16}{:<12}{}-{}", v.name, v.domain, v.port_min, v.port_max);
        }
        let _ = writeln!(out, "VSW\n    {:<16}{:<12}NET-DEV", "NAME", "LDOM");
        for v in &h.vsw {
            let _ = writeln!(out, "    {:<16}{:<12}{}", v.name, v.domain, v.nic);
        }
        let _ = writeln!(out, "VDS\n    {:<16}{:<12}{:<10}{:<8}DEVICE", "NAME", "LDOM", "VOLUME", "SHARED");
        for v in &h.vds {
            for x in &v.volumes {
                let _ = writeln!(
                    out,
                    "    {:<16}{:<12}{:<10}{:<8}{}",
                    v.name,
                    v.domain,
                    x.name,
                    if x.shared { "yes" } else { "no" },
                    x.device
                );
            }
        }
        let _ = writeln!(out);
    }
    print!("{out}");
    Ok(0)
}

/// `--since`: `30s`, `30m`, `2h`, `7d` back from `now_ms`, or a time in ms since the epoch.
pub fn since_ms(text: &str, now_ms: u64) -> anyhow::Result<u64> {
    let t = text.trim();
    let unit = |c: char| match c {
        's' => Some(1_000u64),
        'm' => Some(60_000),
        'h' => Some(3_600_000),
        'd' => Some(86_400_000),
        _ => None,
    };
    if let Some(last) = t.chars().last()
        && let Some(ms) = unit(last)
    {
        let n: u64 = t[..t.len() - 1].parse().map_err(|_| anyhow!("--since {t:?}: not a number of {last}"))?;
        return Ok(now_ms.saturating_sub(n.saturating_mul(ms)));
    }
    t.parse().map_err(|_| anyhow!("--since {t:?} is neither a duration (30m, 2h, 7d) nor ms since the epoch"))
}

/// `ms` since the epoch as `YYYY-MM-DD HH:MM:SS` UTC (days to a civil date: Howard
/// Hinnant's algorithm).
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `ternctl audit`.
pub async fn audit(agent: &AgentArgs, args: &crate::AuditArgs, json: bool) -> anyhow::Result<i32> {
    let now = crate::top::now_ms();
    let since_ms = args.since.as_deref().map(|s| since_ms(s, now)).transpose()?.unwrap_or(0);
    let mut c = pb::cluster_client::ClusterClient::new(agent.connect().await?).with_message_limits();
    let req = pb::AuditRequest {
        since_ms,
        actor: args.user.clone().unwrap_or_default(),
        limit: args.limit,
        agents: args.agents,
        denied: args.denied,
    };
    let entries = rpc(c.audit(req).await)?.entries;
    if json {
        let v: Vec<serde_json::Value> = entries
            .iter()
            .map(|e| {
                serde_json::json!({"index": e.index, "at_ms": e.at_ms, "actor": e.actor, "from": e.from,
                    "summary": e.summary, "outcome": e.outcome})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let mut out = String::new();
    let _ = writeln!(out, "{:<21}{:<8}{:<22}{:<22}{:<24}WHAT", "TIME (UTC)", "INDEX", "ACTOR", "FROM", "OUTCOME");
    for e in &entries {
        let from = if e.from.is_empty() { "-" } else { e.from.as_str() };
        let _ = writeln!(
            out,
            "{:<21}{:<8}{:<22}{:<22}{:<24}{}",
            utc(e.at_ms),
            e.index,
            e.actor,
            from,
            e.outcome,
            e.summary
        );
    }
    print!("{out}");
    Ok(0)
}

/// `cluster remove-member NAME`: exit 0 once the member is out (or was), 1 when the
/// cluster refuses (guests, reservations or operations on its host; the only voter).
pub async fn remove_member(agent: &AgentArgs, name: &str, json: bool) -> anyhow::Result<i32> {
    let mut c = pb::cluster_client::ClusterClient::new(agent.connect().await?).with_message_limits();
    // The removal waits for the membership change: give it the agent's own wait.
    let mut req = tonic::Request::new(pb::MemberRequest { name: name.to_string() });
    req.set_timeout(std::time::Duration::from_millis(agent.timeout_ms.max(20_000)));
    let r = match c.remove_member(req).await {
        Ok(r) => r.into_inner(),
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            eprintln!("ternctl: {}", status_message(&s));
            return Ok(1);
        }
        Err(s) => return Err(anyhow!(status_message(&s))),
    };
    if json {
        let v = serde_json::json!({"name": name, "node_id": r.node_id, "already_removed": r.unchanged,
            "out_of_membership": r.out_of_membership});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let id = if r.node_id == 0 { String::new() } else { format!(" (raft id {})", r.node_id) };
    match (r.unchanged, r.out_of_membership) {
        (true, true) => println!("{name}{id} was already removed"),
        (false, true) => println!("removed {name}{id}: out of the Raft membership; its host record is gone"),
        (_, false) => println!(
            "removed {name}{id} from the state; the leader has not yet taken it out of the Raft membership \
             (`ternctl cluster status` shows when)"
        ),
    }
    println!("it may not join again until `ternctl cluster add-member {name}`");
    Ok(0)
}

/// `cluster add-member NAME`.
pub async fn add_member(agent: &AgentArgs, name: &str, json: bool) -> anyhow::Result<i32> {
    let mut c = pb::cluster_client::ClusterClient::new(agent.connect().await?).with_message_limits();
    let r = rpc(c.add_member(pb::MemberRequest { name: name.to_string() }).await)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"name": name, "was_removed": !r.unchanged}))?);
    } else if r.unchanged {
        println!("{name} was not removed: its agent joins with its node certificate as any member does");
    } else {
        println!("{name} may join again: its agent joins through its join list (at once if it is running)");
    }
    Ok(0)
}

/// `cluster snapshot save FILE`: asks the agent, or the leader it names, for the
/// snapshot; writes FILE.part, syncs it, renames it to FILE and syncs the folder.
pub async fn snapshot_save(agent: &AgentArgs, file: &std::path::Path, force: bool, json: bool) -> anyhow::Result<i32> {
    use anyhow::Context as _;
    use std::io::Write as _;
    if file.exists() && !force {
        anyhow::bail!("{} exists; pass --force to replace it", file.display());
    }
    let mut target = agent.clone();
    let mut stream = None;
    for _ in 0..3 {
        let mut c = pb::cluster_client::ClusterClient::new(target.connect().await?).with_message_limits();
        match c.snapshot(pb::SnapshotRequest {}).await {
            Ok(s) => {
                stream = Some(s.into_inner());
                break;
            }
            Err(s) => match s.metadata().get("tern-leader").and_then(|v| v.to_str().ok()) {
                Some(leader) if !leader.is_empty() && Some(leader) != target.agent.as_deref() => {
                    target.agent = Some(leader.to_string());
                }
                _ => return Err(anyhow!(status_message(&s))),
            },
        }
    }
    let mut stream = stream.ok_or_else(|| anyhow!("the leader moved while asking for the snapshot; retry"))?;
    let part = file.with_extension(match file.extension() {
        Some(e) => format!("{}.part", e.to_string_lossy()),
        None => "part".into(),
    });
    let mut out = std::fs::File::create(&part).with_context(|| format!("creating {}", part.display()))?;
    let (mut total, mut expected, mut index, mut term) = (0u64, 0u64, 0u64, 0u64);
    let max = tern_proto::limits::SNAPSHOT_BYTES_MAX;
    let written: anyhow::Result<()> = async {
        while let Some(chunk) = stream.message().await.map_err(|s| anyhow!(status_message(&s)))? {
            if total == 0 {
                (expected, index, term) = (chunk.total_bytes, chunk.last_index, chunk.last_term);
            }
            total += chunk.data.len() as u64;
            if total > max || (expected > 0 && total > expected) {
                anyhow::bail!("the agent sent more than the {expected} bytes it announced (limit {max})");
            }
            out.write_all(&chunk.data)?;
        }
        if total != expected {
            anyhow::bail!("the snapshot ended after {total} of {expected} bytes");
        }
        out.sync_all()?;
        Ok(())
    }
    .await;
    if let Err(e) = written {
        let _ = std::fs::remove_file(&part);
        return Err(e.context(format!("saving the snapshot to {}", file.display())));
    }
    std::fs::rename(&part, file).with_context(|| format!("renaming {} to {}", part.display(), file.display()))?;
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).ok();
    }
    let from = target.agent.unwrap_or_default();
    if json {
        let v = serde_json::json!({"file": file.display().to_string(), "bytes": total, "last_index": index,
            "last_term": term, "from": from});
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "saved {} ({total} bytes): the state as of log index {index} (term {term}), from the leader at {from}",
            file.display()
        );
        println!("restore with: ternd --config NEW.toml --restore {}", file.display());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_back_from_now_or_epoch_ms() {
        // Goal: --since 30m / 2h / 7d count back from now; a plain number is ms since the epoch; junk is refused.
        let now = 10 * 86_400_000;
        assert_eq!(since_ms("30m", now).unwrap(), now - 1_800_000);
        assert_eq!(since_ms("7d", now).unwrap(), 3 * 86_400_000);
        assert_eq!(since_ms("12345", now).unwrap(), 12345);
        assert!(since_ms("soon", now).is_err());
        assert!(since_ms("xh", now).is_err());
    }

    #[test]
    fn utc_prints_the_civil_date() {
        // Goal: epoch ms become a UTC date and time (leap years included).
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(utc(1_796_173_323_000), "2026-12-02 01:02:03");
    }
}
