//! `ternctl rebalance plan|make-room|apply|cancel|status|auto|set|group` and
//! `set-domain affinity-group=|anti-affinity-group=`: load-based rebalancing (SPEC
//! RB-01..RB-05). With `--layouts`, `plan` and `make-room` answer offline from layout
//! files (nothing is kept); against a cluster, every plan is kept with an id to apply.

use crate::LayoutArgs;
use crate::client::{AgentArgs, status_message};
use anyhow::{anyhow, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use tern_model::rebalance::{self as rb, Level, Settings, ppm_text};
use tern_model::units::Size;
use tern_proto::limits::MessageLimits;
use tern_proto::v1 as pb;

async fn client(agent: &AgentArgs) -> anyhow::Result<pb::rebalance_client::RebalanceClient<tonic::transport::Channel>> {
    Ok(pb::rebalance_client::RebalanceClient::new(agent.connect().await?).with_message_limits())
}

/// One move as shown.
#[derive(Serialize)]
struct MoveView {
    domain: String,
    source: String,
    target: String,
    cids: Vec<u32>,
    /// `0xPA+SIZE` per guest block.
    memory: Vec<String>,
    console_port: Option<u32>,
    total_ms: u64,
    downtime_ms: u64,
    reason: String,
    imbalance_after: String,
    state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    operation: Option<u64>,
}

/// A plan as shown, from the cluster's record or an offline plan.
#[derive(Serialize)]
struct PlanView {
    /// None offline (nothing is kept).
    id: Option<u64>,
    purpose: String,
    status: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    status_detail: String,
    level: u32,
    imbalance_before: String,
    imbalance_after: String,
    threshold: Option<String>,
    total_ms: u64,
    moves: Vec<MoveView>,
    notes: Vec<String>,
    preflight_refusals: u32,
    #[serde(skip_serializing_if = "String::is_empty")]
    made_by: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    applied_by: String,
}

fn range_text(pa: u64, size: u64) -> String {
    format!("{pa:#x}+{}", Size(size))
}

impl From<&pb::RebalancePlan> for PlanView {
    fn from(p: &pb::RebalancePlan) -> Self {
        Self {
            id: Some(p.id),
            purpose: p.purpose.clone(),
            status: p.status.clone(),
            status_detail: p.status_detail.clone(),
            level: p.level,
            imbalance_before: ppm_text(p.imbalance_before_ppm),
            imbalance_after: ppm_text(p.imbalance_after_ppm),
            threshold: p.act_above_ppm.map(ppm_text),
            total_ms: p.total_ms,
            moves: p
                .moves
                .iter()
                .map(|m| MoveView {
                    domain: m.domain.clone(),
                    source: m.source.clone(),
                    target: m.target.clone(),
                    cids: m.cids.clone(),
                    memory: m.memory.iter().map(|r| range_text(r.pa, r.size)).collect(),
                    console_port: (m.console_port != 0).then_some(m.console_port),
                    total_ms: m.total_ms,
                    downtime_ms: m.downtime_ms,
                    reason: m.reason.clone(),
                    imbalance_after: ppm_text(m.imbalance_after_ppm),
                    state: m.state.clone(),
                    operation: (m.operation_id != 0).then_some(m.operation_id),
                })
                .collect(),
            notes: p.notes.clone(),
            preflight_refusals: p.preflight_refusals,
            made_by: p.actor.clone(),
            applied_by: p.applied_by.clone(),
        }
    }
}

impl PlanView {
    fn offline(p: &rb::Plan, purpose: String) -> Self {
        Self {
            id: None,
            purpose,
            status: "offline".into(),
            status_detail: String::new(),
            level: u32::from(p.level),
            imbalance_before: ppm_text(p.imbalance_before_ppm),
            imbalance_after: ppm_text(p.imbalance_after_ppm),
            threshold: p.act_above_ppm.map(ppm_text),
            total_ms: p.total_ms(),
            moves: p
                .moves
                .iter()
                .map(|m| MoveView {
                    domain: m.domain.clone(),
                    source: m.source.clone(),
                    target: m.target.clone(),
                    cids: m.binding.cids.clone(),
                    memory: m.binding.memory.iter().map(|r| range_text(r.pa, r.size)).collect(),
                    console_port: m.binding.console_port.map(u32::from),
                    total_ms: m.cost.total_ms,
                    downtime_ms: m.cost.downtime_ms,
                    reason: m.reason.to_string(),
                    imbalance_after: ppm_text(m.imbalance_after_ppm),
                    state: "-".into(),
                    operation: None,
                })
                .collect(),
            notes: p.notes.clone(),
            preflight_refusals: p.preflight_refusals,
            made_by: String::new(),
            applied_by: String::new(),
        }
    }

    fn text(&self) -> String {
        let mut out = String::new();
        let head = match self.id {
            Some(id) => format!("plan {id} ({}, level {}, {})", self.purpose, self.level, self.status),
            None => format!("plan ({}, level {}, offline: nothing is kept)", self.purpose, self.level),
        };
        let threshold = self.threshold.as_ref().map(|t| format!(", threshold {t}")).unwrap_or_default();
        let _ = writeln!(
            out,
            "{head}: imbalance {} -> {}{threshold}; {} move(s), {} of migration",
            self.imbalance_before,
            self.imbalance_after,
            self.moves.len(),
            duration(self.total_ms)
        );
        if !self.status_detail.is_empty() {
            let _ = writeln!(out, "  {}", self.status_detail);
        }
        for (i, m) in self.moves.iter().enumerate() {
            let port = m.console_port.map(|p| format!(" console {p}")).unwrap_or_default();
            let op = m.operation.map(|o| format!(" (operation {o})")).unwrap_or_default();
            let _ = writeln!(
                out,
                "  {}. {} {} -> {}  [{}]  {}{op}",
                i + 1,
                m.domain,
                m.source,
                m.target,
                m.reason,
                m.state
            );
            let _ = writeln!(out, "     cids {} memory {}{port}", cid_text(&m.cids), m.memory.join(", "));
            let _ = writeln!(
                out,
                "     time {} downtime {} imbalance after {}",
                duration(m.total_ms),
                duration(m.downtime_ms),
                m.imbalance_after
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "  note: {n}");
        }
        if self.preflight_refusals > 0 {
            let _ = writeln!(
                out,
                "  {} candidate move(s) refused by the full preflight (LM-09 fragmentation and others)",
                self.preflight_refusals
            );
        }
        if let (Some(id), "shown", false) = (self.id, self.status.as_str(), self.moves.is_empty()) {
            let _ = writeln!(out, "apply it: ternctl rebalance apply {id}");
        }
        out
    }
}

/// `4-9,12` for sorted CIDs.
fn cid_text(cids: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cids.len() {
        let mut j = i;
        while j + 1 < cids.len() && cids[j + 1] == cids[j] + 1 {
            j += 1;
        }
        parts.push(if i == j { cids[i].to_string() } else { format!("{}-{}", cids[i], cids[j]) });
        i = j + 1;
    }
    if parts.is_empty() { "-".into() } else { parts.join(",") }
}

pub(crate) fn duration(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

fn print_plan(view: &PlanView, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(view)?);
    } else {
        print!("{}", view.text());
    }
    Ok(())
}

fn level_of(level: Option<u8>) -> anyhow::Result<Option<Level>> {
    level.map(|l| Level::new(l).map_err(|e| anyhow!(e))).transpose()
}

/// What an offline plan is for.
enum Offline<'a> {
    Balance,
    MakeRoom(&'a str, &'a str),
    Grow(&'a str, rb::Growth),
}

/// `cores=N memory=SIZE` of `plan --grow`.
fn growth_of(sizes: &[String]) -> anyhow::Result<rb::Growth> {
    let mut g = rb::Growth::default();
    for s in sizes {
        match s.split_once('=') {
            Some(("cores", v)) => {
                g.cores = Some(v.parse().map_err(|_| anyhow!("cores={v}: not a whole number of cores"))?);
            }
            Some(("memory", v)) => {
                g.memory = Some(tern_model::units::parse_size(v).map_err(|e| anyhow!("memory={v}: {e}"))?);
            }
            _ => bail!("{s:?} is not cores=N or memory=SIZE"),
        }
    }
    if g.cores.is_none() && g.memory.is_none() {
        bail!("--grow needs cores=N and/or memory=SIZE (the guest's size afterwards)");
    }
    Ok(g)
}

/// The offline input: every layout eligible, nothing reserved, no groups.
fn offline_plan(layouts: &LayoutArgs, level: Option<u8>, what: Offline<'_>) -> anyhow::Result<(rb::Plan, String)> {
    let servers = crate::layouts::load(layouts)?;
    let none = tern_model::Reserved::default();
    let settings = Settings { level: level_of(level)?.unwrap_or_default(), ..Settings::default() };
    let input = rb::Input {
        hosts: servers
            .values()
            .map(|s| rb::HostInput { server: s, reserved: &none, eligible: Ok(()), in_flight: 0 })
            .collect(),
        guests: BTreeMap::new(),
        settings,
    };
    match what {
        Offline::Balance => Ok((rb::plan(&input), "balance".into())),
        Offline::MakeRoom(domain, target) => {
            let plan = rb::make_room(&input, domain, target).map_err(|e| anyhow!("RB-05 {e}"))?;
            Ok((plan, format!("make-room {domain} on {target}")))
        }
        Offline::Grow(domain, growth) => {
            let plan = rb::grow(&input, domain, &growth).map_err(|e| anyhow!("RB-06 {e}"))?;
            Ok((plan, format!("grow {domain} to {growth}")))
        }
    }
}

/// Prints an offline plan: exit 0, or 1 when no moves can do it, 2 for bad input.
fn offline(layouts: &LayoutArgs, level: Option<u8>, what: Offline<'_>, json: bool) -> anyhow::Result<i32> {
    match offline_plan(layouts, level, what) {
        Ok((p, purpose)) => {
            print_plan(&PlanView::offline(&p, purpose), json)?;
            Ok(0)
        }
        Err(e) if is_no(&e) => {
            eprintln!("ternctl: {e}");
            Ok(crate::EXIT_NO)
        }
        Err(e) => Err(e),
    }
}

/// Asks the agent for a plan and prints it: exit 0, or 1 when no moves can do it
/// (FAILED_PRECONDITION), an error otherwise.
async fn ask(agent: &AgentArgs, req: pb::RebalancePlanRequest, json: bool) -> anyhow::Result<i32> {
    match client(agent).await?.plan(req).await {
        Ok(r) => {
            let p = r.into_inner().plan.ok_or_else(|| anyhow!("the agent answered without a plan"))?;
            print_plan(&PlanView::from(&p), json)?;
            Ok(0)
        }
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            eprintln!("ternctl: {}", status_message(&s));
            Ok(crate::EXIT_NO)
        }
        Err(s) => Err(anyhow!(status_message(&s))),
    }
}

/// Whether `e` is a "no" (no sequence of moves; a rule no move can cure), not bad input.
fn is_no(e: &anyhow::Error) -> bool {
    let t = e.to_string();
    ["moving other guests cannot help", "no sequence of"].iter().any(|m| t.contains(m))
}

/// `ternctl rebalance plan [--level N] [--layouts DIR] [--grow DOMAIN cores=N memory=SIZE]`.
/// Exit 0 (a plan with no move is an answer); with --grow, 1 when no moves allow it.
pub async fn plan(
    agent: &AgentArgs,
    layouts: &LayoutArgs,
    level: Option<u8>,
    grow: Option<&str>,
    sizes: &[String],
    json: bool,
) -> anyhow::Result<i32> {
    let growth = grow.map(|_| growth_of(sizes)).transpose()?;
    if layouts.is_offline() {
        let what = match (grow, growth) {
            (Some(d), Some(g)) => Offline::Grow(d, g),
            _ => Offline::Balance,
        };
        return offline(layouts, level, what, json);
    }
    level_of(level)?;
    let g = growth.unwrap_or_default();
    let req = pb::RebalancePlanRequest {
        level: level.map_or(0, u32::from),
        grow_domain: grow.unwrap_or_default().to_string(),
        grow_cores: g.cores.unwrap_or(0),
        grow_memory_bytes: g.memory.unwrap_or(0),
        ..Default::default()
    };
    ask(agent, req, json).await
}

/// `ternctl rebalance make-room DOMAIN HOST`. Exit 1 when no sequence of moves makes room.
pub async fn make_room(
    agent: &AgentArgs,
    layouts: &LayoutArgs,
    domain: &str,
    target: &str,
    json: bool,
) -> anyhow::Result<i32> {
    if layouts.is_offline() {
        return offline(layouts, None, Offline::MakeRoom(domain, target), json);
    }
    let req = pb::RebalancePlanRequest {
        make_room_domain: domain.into(),
        make_room_target: target.into(),
        ..Default::default()
    };
    ask(agent, req, json).await
}

/// `ternctl rebalance apply ID`: exit 1 when the plan was stale (a new one is shown).
pub async fn apply(agent: &AgentArgs, id: u64, json: bool) -> anyhow::Result<i32> {
    let reply = client(agent)
        .await?
        .apply(pb::RebalanceApplyRequest { id })
        .await
        .map_err(|e| anyhow!(status_message(&e)))?
        .into_inner();
    if !json {
        println!("{}", reply.message);
    }
    if let Some(p) = &reply.plan {
        print_plan(&PlanView::from(p), json)?;
    }
    Ok(if reply.replanned { crate::EXIT_NO } else { 0 })
}

/// `ternctl rebalance cancel ID`.
pub async fn cancel(agent: &AgentArgs, id: u64, json: bool) -> anyhow::Result<i32> {
    let p = client(agent)
        .await?
        .cancel(pb::RebalanceCancelRequest { id })
        .await
        .map_err(|e| anyhow!(status_message(&e)))?
        .into_inner();
    print_plan(&PlanView::from(&p), json)?;
    Ok(0)
}

fn config_lines(c: &pb::RebalanceConfig) -> String {
    let groups: Vec<String> = c.groups.iter().map(|(g, s)| format!("{g}={s}")).collect();
    format!(
        "auto {}, level {}, max-moves {}, host-concurrency {}, cluster-concurrency {}, n-plus-one {}, cooldown {}, \
         hold-rounds {}, cpu-weight {}, memory-weight {}, max-downtime {}{}",
        if c.auto { "on" } else { "off" },
        c.level,
        c.max_moves,
        c.host_concurrency,
        c.cluster_concurrency,
        if c.n_plus_one { "on" } else { "off" },
        duration(c.cooldown_ms),
        c.hold_rounds,
        c.cpu_weight,
        c.memory_weight,
        duration(c.max_downtime_ms),
        if groups.is_empty() { String::new() } else { format!("; groups {}", groups.join(", ")) }
    )
}

/// `ternctl rebalance status [--limit N] [--plan ID]`.
pub async fn status(agent: &AgentArgs, limit: u32, only: Option<u64>, json: bool) -> anyhow::Result<i32> {
    let s = client(agent)
        .await?
        .status(pb::RebalanceStatusRequest { limit: if only.is_some() { 32 } else { limit } })
        .await
        .map_err(|e| anyhow!(status_message(&e)))?
        .into_inner();
    let plans: Vec<PlanView> =
        s.plans.iter().filter(|p| only.is_none_or(|id| p.id == id)).map(PlanView::from).collect();
    if let (Some(id), true) = (only, plans.is_empty()) {
        bail!("no rebalance plan {id} is kept (the 32 most recent are)");
    }
    if json {
        let config = s.config.as_ref().map(config_json);
        let v = serde_json::json!({"leader": s.leader, "config": config, "imbalance": ppm_text(s.imbalance_ppm),
            "threshold": s.act_above_ppm.map(ppm_text), "rounds_held": s.rounds_held,
            "moves_in_flight": s.moves_in_flight, "plans": plans});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    if only.is_none() {
        println!("leader {}", s.leader);
        if let Some(c) = &s.config {
            println!("policy: {}", config_lines(c));
        }
        let threshold = s.act_above_ppm.map(|t| format!(" (threshold {})", ppm_text(t))).unwrap_or_default();
        println!(
            "imbalance {}{threshold}, held {} round(s), {} move(s) in flight",
            ppm_text(s.imbalance_ppm),
            s.rounds_held,
            s.moves_in_flight
        );
        if plans.is_empty() {
            println!("no plans kept");
        }
    }
    for p in &plans {
        print!("{}", p.text());
    }
    Ok(0)
}

fn config_json(c: &pb::RebalanceConfig) -> serde_json::Value {
    serde_json::json!({"auto": c.auto, "level": c.level, "max_moves": c.max_moves,
        "host_concurrency": c.host_concurrency, "cluster_concurrency": c.cluster_concurrency,
        "n_plus_one": c.n_plus_one, "cooldown_ms": c.cooldown_ms, "hold_rounds": c.hold_rounds,
        "cpu_weight": c.cpu_weight, "memory_weight": c.memory_weight, "max_downtime_ms": c.max_downtime_ms,
        "groups": c.groups})
}

async fn current(agent: &AgentArgs) -> anyhow::Result<pb::RebalanceConfig> {
    let s = client(agent)
        .await?
        .status(pb::RebalanceStatusRequest { limit: 1 })
        .await
        .map_err(|e| anyhow!(status_message(&e)))?
        .into_inner();
    s.config.ok_or_else(|| anyhow!("the agent answered without the policy"))
}

async fn configure(agent: &AgentArgs, config: pb::RebalanceConfig, json: bool) -> anyhow::Result<i32> {
    let c = client(agent).await?.configure(config).await.map_err(|e| anyhow!(status_message(&e)))?.into_inner();
    if json {
        println!("{}", serde_json::to_string_pretty(&config_json(&c))?);
    } else {
        println!("rebalance policy: {}", config_lines(&c));
    }
    Ok(0)
}

/// `ternctl rebalance auto on|off [--level N]`.
pub async fn auto(agent: &AgentArgs, on: &str, level: Option<u8>, json: bool) -> anyhow::Result<i32> {
    let mut c = current(agent).await?;
    c.auto = match on {
        "on" => true,
        "off" => false,
        other => bail!("{other:?} is not on or off"),
    };
    if let Some(l) = level_of(level)? {
        c.level = u32::from(l.get());
    }
    configure(agent, c, json).await
}

/// A duration as `30m`, `90s`, `1h` or plain milliseconds.
fn parse_ms(v: &str) -> anyhow::Result<u64> {
    let v = v.trim();
    let (num, unit) = v.find(|c: char| !c.is_ascii_digit()).map_or((v, ""), |i| v.split_at(i));
    let n: u64 = num.parse().map_err(|_| anyhow!("{v:?} is not a duration such as 30m, 90s, 1h or 1500ms"))?;
    let per = match unit {
        "" | "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        other => bail!("unit {other:?} of {v:?} is not ms, s, m or h"),
    };
    Ok(n.saturating_mul(per))
}

fn on_off(k: &str, v: &str) -> anyhow::Result<bool> {
    match v {
        "on" | "true" | "yes" => Ok(true),
        "off" | "false" | "no" => Ok(false),
        _ => bail!("{k}={v}: give on or off"),
    }
}

/// `ternctl rebalance set name=value...`.
pub async fn set(agent: &AgentArgs, pairs: &[String], json: bool) -> anyhow::Result<i32> {
    let mut c = current(agent).await?;
    for p in pairs {
        let (k, v) = p.split_once('=').ok_or_else(|| anyhow!("{p:?} is not name=value (e.g. level=4)"))?;
        let num = |v: &str| v.parse::<u32>().map_err(|_| anyhow!("{k}={v}: not a whole number"));
        match k {
            "level" => c.level = num(v)?,
            "max-moves" => c.max_moves = num(v)?,
            "host-concurrency" => c.host_concurrency = num(v)?,
            "cluster-concurrency" => c.cluster_concurrency = num(v)?,
            "n-plus-one" => c.n_plus_one = on_off(k, v)?,
            "cooldown" => c.cooldown_ms = parse_ms(v)?,
            "hold-rounds" => c.hold_rounds = num(v)?,
            "cpu-weight" => c.cpu_weight = num(v)?,
            "memory-weight" => c.memory_weight = num(v)?,
            "max-downtime" => c.max_downtime_ms = parse_ms(v)?,
            "auto" => c.auto = on_off(k, v)?,
            other => bail!(
                "{other} is not a rebalance setting; these are: auto, level, max-moves, host-concurrency, \
                 cluster-concurrency, n-plus-one, cooldown, hold-rounds, cpu-weight, memory-weight, max-downtime"
            ),
        }
    }
    configure(agent, c, json).await
}

/// `ternctl rebalance group NAME must|should|default`.
pub async fn group(agent: &AgentArgs, name: &str, strength: &str, json: bool) -> anyhow::Result<i32> {
    let mut c = current(agent).await?;
    match strength {
        "must" | "should" => {
            c.groups.insert(name.to_string(), strength.to_string());
        }
        "default" => {
            c.groups.remove(name);
        }
        other => bail!("{other:?} is not must, should or default (must)"),
    }
    configure(agent, c, json).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_cid_ranges_read_as_admins_write_them() {
        // Goal: `cooldown=30m` and friends parse; CIDs print as ldm-style ranges.
        assert_eq!(parse_ms("30m").unwrap(), 1_800_000);
        assert_eq!(parse_ms("1500").unwrap(), 1500);
        assert_eq!(parse_ms("2h").unwrap(), 7_200_000);
        assert!(parse_ms("5 minutes").is_err());
        assert!(parse_ms("-1s").is_err());
        assert_eq!(cid_text(&[4, 5, 6, 7, 12]), "4-7,12");
        assert_eq!(cid_text(&[]), "-");
        assert_eq!(duration(2_500), "2.5s");
        assert_eq!(duration(125_000), "2m05s");
    }
}
