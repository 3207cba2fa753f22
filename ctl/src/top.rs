//! `ternctl top`: a live view of the cluster in the terminal, for the admin without
//! Grafana: the leader and members, each host's free resources, the operations that
//! run (with progress bars) and the rebalancer.
//!
//! Every frame is read from one agent with the read RPCs `ternctl` already uses
//! (`Cluster.Status`, `Ha.Status`, `Inventory.ListDevices` / `ListDomains`,
//! `Migration.ListOperations`, `Rebalance.Status`), all of which need LDoms Review.
//! Reading ([`fetch`]), gathering ([`Snapshot::from_parts`]) and drawing ([`render`])
//! are apart: the last two are pure functions, the clock is passed in.

use crate::client::{AgentArgs, status_message};
use crate::cluster::utc;
use crate::rebalance::duration;
use anyhow::{anyhow, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::time::Duration;
use tern_model::rebalance::ppm_text;
use tern_model::units::Size;
use tern_proto::limits::MessageLimits;
use tern_proto::v1 as pb;
use tonic::transport::Channel;

/// The shortest and longest `--interval`.
pub const INTERVAL_MIN: Duration = Duration::from_millis(200);
pub const INTERVAL_MAX: Duration = Duration::from_secs(60);
/// Ended operations shown under RECENT.
pub const RECENT: usize = 3;
/// Plans asked of `Rebalance.Status`: as many as the cluster keeps (32), so an older
/// applying plan is still seen.
const PLANS_ASKED: u32 = 32;
/// Characters inside a progress bar's brackets.
const BAR: usize = 20;

#[derive(clap::Args, Debug, Clone)]
pub struct TopArgs {
    /// Time between frames: 2s, 500ms, 1m, or a number of seconds (0.2s to 60s).
    #[arg(long, default_value = "2s", value_parser = parse_interval, value_name = "DURATION")]
    pub interval: Duration,
    /// Print one frame as plain text and exit (what happens anyway when standard
    /// output is not a terminal). Exit 2 when the agent cannot be reached.
    #[arg(long, conflicts_with = "iterations")]
    pub once: bool,
    /// Print N frames, one every --interval, then exit (for scripts).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub iterations: Option<u32>,
}

/// `--interval`: `2s`, `500ms`, `1m`, `0.5` (seconds), within 0.2s..60s.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, per_ms) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (t, 1000.0)
    };
    let n: f64 = num
        .trim()
        .parse()
        .ok()
        .filter(|n: &f64| n.is_finite() && *n >= 0.0)
        .ok_or_else(|| format!("{t:?} is not a duration such as 2s, 500ms or 1m"))?;
    let d = Duration::from_millis((n * per_ms).round() as u64);
    if d < INTERVAL_MIN || d > INTERVAL_MAX {
        return Err(format!("{t} is outside 0.2s..60s"));
    }
    Ok(d)
}

/// One member of the Raft cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Member {
    pub name: String,
    pub address: String,
    /// voter or learner.
    pub role: String,
    pub leader: bool,
    /// Milliseconds since the leader last heard its heartbeat (HA-01); None: not heard
    /// since it began leading, or the leader could not be asked.
    pub heard_ms: Option<u64>,
    /// Log entries it is behind the commit index; known only when the leader answered.
    pub lag: Option<u64>,
}

/// One host and what is free on it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Host {
    pub name: String,
    /// up, suspect, lost, fenced, maintenance (or - when unknown).
    pub status: String,
    /// False until the host's agent has reported its inventory: no resources then.
    pub inventory: bool,
    /// Activated cores with every strand unbound and unreserved.
    pub free_cores: u32,
    pub activated_cores: u32,
    /// Unbound, unreserved memory, and the largest contiguous range of it (LM-09).
    pub free_memory: u64,
    pub largest_free: u64,
    /// Guest domains (not the control, service or I/O domains).
    pub guests: u32,
    /// Active reservations held on the host.
    pub reservations: u32,
}

impl Host {
    fn unknown(name: &str) -> Self {
        Self { name: name.to_string(), status: "-".into(), ..Default::default() }
    }
}

/// An operation (migration, evacuation, failover, resize).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Operation {
    pub id: u64,
    pub kind: String,
    pub dry_run: bool,
    pub domain: String,
    pub source: String,
    pub target: String,
    pub phase: String,
    /// The transfer's progress (OP-06), 100 once committing.
    pub progress_pct: u32,
    /// An ended operation's outcome in a few words.
    pub result: String,
}

/// A move of an applying plan.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Move {
    pub domain: String,
    pub source: String,
    pub target: String,
    /// pending, running, done, failed: ..., skipped: ...
    pub state: String,
    pub operation: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Plan {
    pub id: u64,
    pub purpose: String,
    pub moves: Vec<Move>,
}

/// The rebalancer as the leader sees it (RB-01..RB-05).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Rebalance {
    pub imbalance_ppm: u32,
    /// The level's threshold; None at level 1 (only mandatory moves).
    pub threshold_ppm: Option<u32>,
    pub level: u32,
    pub auto: bool,
    pub rounds_held: u32,
    pub hold_rounds: u32,
    pub moves_in_flight: u32,
    /// Plans applying now.
    pub applying: Vec<Plan>,
}

/// Everything one frame shows, read from one agent at one time.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Snapshot {
    /// The agent that answered.
    pub answered_by: String,
    pub leader: Option<String>,
    pub term: u64,
    pub commit_index: u64,
    pub members: Vec<Member>,
    pub hosts: Vec<Host>,
    /// Running operations, oldest first.
    pub running: Vec<Operation>,
    /// The last ended operations, newest first.
    pub recent: Vec<Operation>,
    pub rebalance: Option<Rebalance>,
    /// What could not be read for this frame (the rest is shown).
    pub notes: Vec<String>,
}

/// The answers one frame is made of; each part but the cluster status may be missing.
pub struct Parts {
    pub status: pb::ClusterStatus,
    pub ha: Result<pb::HaStatusResponse, String>,
    /// `ListDevices` with `all`: every core, for activated and free cores.
    pub cores: Result<pb::ListDevicesResponse, String>,
    /// `ListDevices` without `all`: the free ranges, reservations subtracted.
    pub free: Result<pb::ListDevicesResponse, String>,
    pub domains: Result<pb::ListDomainsResponse, String>,
    pub operations: Result<pb::ListOperationsResponse, String>,
    pub rebalance: Result<pb::RebalanceStatusResponse, String>,
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

fn is_ended(phase: &str) -> bool {
    matches!(phase, "done" | "failed" | "cancelled" | "rolled-back")
}

fn operation(o: &pb::OperationInfo) -> Operation {
    let result = match (&o.report, o.phase.as_str()) {
        (_, "failed" | "rolled-back") if !o.reason.is_empty() => o.reason.clone(),
        (Some(r), _) if o.kind == "migration" && !o.dry_run => {
            format!("downtime {} ms, total {:.1} s", r.downtime_ms, r.total_ms as f64 / 1000.0)
        }
        (Some(r), _) => r.notes.join("; "),
        (None, _) => String::new(),
    };
    Operation {
        id: o.id,
        kind: o.kind.clone(),
        dry_run: o.dry_run,
        domain: o.domain.clone(),
        source: o.source.clone(),
        target: o.target.clone(),
        phase: o.phase.clone(),
        progress_pct: o.progress_pct.min(100),
        result,
    }
}

impl Snapshot {
    /// Gathers the answers into what a frame shows (pure).
    pub fn from_parts(p: Parts) -> Self {
        let notes: Vec<String> = [
            ("HA status", p.ha.as_ref().err()),
            ("cores", p.cores.as_ref().err()),
            ("memory", p.free.as_ref().err()),
            ("domains", p.domains.as_ref().err()),
            ("operations", p.operations.as_ref().err()),
            ("rebalancer", p.rebalance.as_ref().err()),
        ]
        .into_iter()
        .filter_map(|(what, e)| e.map(|e| format!("{what}: {e}")))
        .collect();

        let st = &p.status;
        let heard: BTreeMap<&str, Option<u64>> =
            p.ha.as_ref()
                .map(|h| h.hosts.iter().map(|x| (x.host.as_str(), x.heartbeat_age_ms)).collect())
                .unwrap_or_default();
        // matched_index is the leader's view: lag is known only when the leader answered.
        let leader_answered = st.leader_id != 0 && st.node_id == st.leader_id;
        let mut members: Vec<Member> = st
            .members
            .iter()
            .map(|m| Member {
                name: m.name.clone(),
                address: m.address.clone(),
                role: match pb::MemberRole::try_from(m.role) {
                    Ok(pb::MemberRole::Voter) => "voter",
                    Ok(pb::MemberRole::Learner) => "learner",
                    _ => "-",
                }
                .into(),
                leader: m.node_id == st.leader_id,
                heard_ms: heard.get(m.name.as_str()).copied().flatten(),
                lag: leader_answered.then(|| st.commit_index.saturating_sub(m.matched_index)),
            })
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));

        let mut hosts: BTreeMap<String, Host> = BTreeMap::new();
        fn host<'h>(hosts: &'h mut BTreeMap<String, Host>, name: &str) -> &'h mut Host {
            hosts.entry(name.to_string()).or_insert_with(|| Host::unknown(name))
        }
        for m in &st.members {
            host(&mut hosts, &m.name).status = host_status(m.host_status).into();
        }
        if let Ok(ha) = &p.ha {
            for h in &ha.hosts {
                let x = host(&mut hosts, &h.host);
                if x.status == "-" {
                    x.status = h.status.clone();
                }
            }
        }
        if let Ok(d) = &p.cores {
            for h in &d.hosts {
                let x = host(&mut hosts, &h.host);
                x.inventory = true;
                x.activated_cores = h.cores.iter().filter(|c| c.activated).count() as u32;
                x.free_cores = h.cores.iter().filter(|c| c.activated && c.free_pct == 100).count() as u32;
                x.reservations = h.reservations;
            }
        }
        if let Ok(d) = &p.free {
            for h in &d.hosts {
                let x = host(&mut hosts, &h.host);
                x.inventory = true;
                x.free_memory = h.memory.iter().map(|m| m.size).sum();
                x.largest_free = h.memory.iter().map(|m| m.size).max().unwrap_or(0);
                x.reservations = x.reservations.max(h.reservations);
            }
        }
        if let Ok(d) = &p.domains {
            for dom in d.domains.iter().filter(|d| d.kind == "guest") {
                host(&mut hosts, &dom.host).guests += 1;
            }
        }

        let (mut running, recent) = match &p.operations {
            Ok(o) => {
                let running: Vec<Operation> =
                    o.operations.iter().filter(|o| !is_ended(&o.phase)).map(operation).collect();
                let mut ended: Vec<Operation> =
                    o.operations.iter().filter(|o| is_ended(&o.phase)).map(operation).collect();
                ended.sort_by_key(|o| std::cmp::Reverse(o.id));
                ended.truncate(RECENT);
                (running, ended)
            }
            Err(_) => (Vec::new(), Vec::new()),
        };
        running.sort_by_key(|o| o.id);

        let rebalance = p.rebalance.as_ref().ok().map(|r| {
            let config = r.config.clone().unwrap_or_default();
            Rebalance {
                imbalance_ppm: r.imbalance_ppm,
                threshold_ppm: r.act_above_ppm,
                level: config.level,
                auto: config.auto,
                rounds_held: r.rounds_held,
                hold_rounds: config.hold_rounds,
                moves_in_flight: r.moves_in_flight,
                applying: r
                    .plans
                    .iter()
                    .filter(|p| p.status == "applying")
                    .map(|p| Plan {
                        id: p.id,
                        purpose: p.purpose.clone(),
                        moves: p
                            .moves
                            .iter()
                            .map(|m| Move {
                                domain: m.domain.clone(),
                                source: m.source.clone(),
                                target: m.target.clone(),
                                state: m.state.clone(),
                                operation: m.operation_id,
                            })
                            .collect(),
                    })
                    .collect(),
            }
        });

        Self {
            answered_by: st.node_name.clone(),
            leader: st.members.iter().find(|m| st.leader_id != 0 && m.node_id == st.leader_id).map(|m| m.name.clone()),
            term: st.term,
            commit_index: st.commit_index,
            members,
            hosts: hosts.into_values().collect(),
            running,
            recent,
            rebalance,
            notes,
        }
    }
}

/// What one frame draws.
pub struct Frame<'a> {
    /// The agent asked (host:port).
    pub agent: &'a str,
    /// Now, in ms since the epoch (the header's time).
    pub now_ms: u64,
    /// Live mode's refresh interval; None for a one-shot frame.
    pub interval: Option<Duration>,
    /// The latest snapshot read, and when it was read.
    pub snapshot: Option<(&'a Snapshot, u64)>,
    /// Why this frame could not be read, a sentence (live mode keeps trying).
    pub error: Option<&'a str>,
}

/// `[#########...........]  45%`.
pub fn bar(pct: u32) -> String {
    let pct = pct.min(100) as usize;
    let filled = pct * BAR / 100;
    format!("[{}{}] {pct:>3}%", "#".repeat(filled), ".".repeat(BAR - filled))
}

/// Rows as columns two spaces apart, each as wide as its widest cell; the last
/// column is not padded.
fn table(out: &mut String, indent: &str, header: &[&str], rows: &[Vec<String>]) {
    let n = header.len();
    let width: Vec<usize> =
        (0..n).map(|i| rows.iter().map(|r| r[i].chars().count()).chain([header[i].len()]).max().unwrap_or(0)).collect();
    let line = |out: &mut String, cells: &[&str]| {
        let mut l = String::from(indent);
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == n {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = width[i]);
            }
        }
        let _ = writeln!(out, "{}", l.trim_end());
    };
    line(out, header);
    for r in rows {
        line(out, &r.iter().map(String::as_str).collect::<Vec<_>>());
    }
}

fn route(o: &Operation) -> String {
    match (o.source.as_str(), o.target.as_str()) {
        (s, "") => s.to_string(),
        (s, t) if s == t => format!("{s} (in place)"),
        (s, t) => format!("{s} -> {t}"),
    }
}

fn kind(o: &Operation) -> String {
    if o.dry_run { format!("{} -n", o.kind) } else { o.kind.clone() }
}

fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.to_string() }
}

/// Draws a frame as plain text (pure: the same frame always gives the same text).
pub fn render(f: &Frame<'_>) -> String {
    let mut out = String::new();
    let every = f.interval.map(|d| format!("  every {}", duration(d.as_millis() as u64))).unwrap_or_default();
    let answered = f.snapshot.map(|(s, _)| format!(" ({})", s.answered_by)).unwrap_or_default();
    let _ = writeln!(out, "tern top  {} UTC  agent {}{answered}{every}", utc(f.now_ms), f.agent);
    if let Some(e) = f.error {
        let _ = writeln!(out, "!! {e}");
        if f.interval.is_some() {
            let _ = writeln!(out, "!! retrying every interval; Ctrl-C to quit");
        }
    }
    let Some((s, taken_ms)) = f.snapshot else {
        return out;
    };
    if f.error.is_some() {
        let _ = writeln!(out, "!! last read at {} UTC:", utc(taken_ms));
    }
    let leader = s.leader.as_deref().unwrap_or("none (no leader known)");
    let _ = writeln!(out, "leader {leader}  term {}  commit {}  members {}", s.term, s.commit_index, s.members.len());
    for n in &s.notes {
        let _ = writeln!(out, "!! {n}");
    }

    let _ = writeln!(out);
    let rows: Vec<Vec<String>> = s
        .members
        .iter()
        .map(|m| {
            vec![
                if m.leader { format!("{} *", m.name) } else { m.name.clone() },
                m.role.clone(),
                m.heard_ms.map_or("-".into(), duration),
                m.lag.map_or("-".into(), |l| l.to_string()),
                m.address.clone(),
            ]
        })
        .collect();
    table(&mut out, "", &["MEMBER", "ROLE", "HEARD", "LAG", "ADDRESS"], &rows);

    let _ = writeln!(out);
    let rows: Vec<Vec<String>> = s
        .hosts
        .iter()
        .map(|h| {
            let (cores, mem, largest) = if h.inventory {
                (
                    format!("{}/{}", h.free_cores, h.activated_cores),
                    Size(h.free_memory).to_string(),
                    Size(h.largest_free).to_string(),
                )
            } else {
                ("-".into(), "-".into(), "-".into())
            };
            vec![
                h.name.clone(),
                h.status.clone(),
                cores,
                mem,
                largest,
                h.guests.to_string(),
                h.reservations.to_string(),
            ]
        })
        .collect();
    table(&mut out, "", &["HOST", "STATUS", "FREE-CORES", "FREE-MEM", "LARGEST", "GUESTS", "RESV"], &rows);

    let _ = writeln!(out);
    if s.running.is_empty() {
        let _ = writeln!(out, "RUNNING  none");
    } else {
        let _ = writeln!(out, "RUNNING");
        let rows: Vec<Vec<String>> = s
            .running
            .iter()
            .map(|o| {
                let progress = if o.kind == "migration" { bar(o.progress_pct) } else { "-".into() };
                vec![o.id.to_string(), kind(o), or_dash(&o.domain), route(o), o.phase.clone(), progress]
            })
            .collect();
        table(&mut out, "  ", &["ID", "KIND", "DOMAIN", "ROUTE", "PHASE", "PROGRESS"], &rows);
    }
    if !s.recent.is_empty() {
        let _ = writeln!(out, "RECENT");
        let rows: Vec<Vec<String>> = s
            .recent
            .iter()
            .map(|o| vec![o.id.to_string(), kind(o), or_dash(&o.domain), route(o), o.phase.clone(), or_dash(&o.result)])
            .collect();
        table(&mut out, "  ", &["ID", "KIND", "DOMAIN", "ROUTE", "PHASE", "RESULT"], &rows);
    }

    let _ = writeln!(out);
    match &s.rebalance {
        None => {
            let _ = writeln!(out, "REBALANCE  unknown");
        }
        Some(r) => {
            let against = match r.threshold_ppm {
                Some(t) => {
                    let side = if r.imbalance_ppm > t { "above" } else { "below" };
                    format!("{side} threshold {} (level {})", ppm_text(t), r.level)
                }
                None => format!("level {}: only mandatory moves", r.level),
            };
            let _ = writeln!(
                out,
                "REBALANCE  imbalance {}, {against}; auto {}, held {}/{} rounds; {} move(s) in flight",
                ppm_text(r.imbalance_ppm),
                if r.auto { "on" } else { "off" },
                r.rounds_held,
                r.hold_rounds,
                r.moves_in_flight
            );
            if r.applying.is_empty() {
                let _ = writeln!(out, "  no plan applying");
            }
            for p in &r.applying {
                let done = p.moves.iter().filter(|m| m.state == "done").count();
                let _ =
                    writeln!(out, "  plan {} ({}) applying: {done} of {} move(s) done", p.id, p.purpose, p.moves.len());
                let rows: Vec<Vec<String>> = p
                    .moves
                    .iter()
                    .map(|m| {
                        let op = if m.operation == 0 { String::new() } else { format!(" (operation {})", m.operation) };
                        vec![m.domain.clone(), format!("{} -> {}", m.source, m.target), format!("{}{op}", m.state)]
                    })
                    .collect();
                table(&mut out, "    ", &["DOMAIN", "ROUTE", "STATE"], &rows);
            }
        }
    }
    out
}

/// Why a frame could not be read.
enum Failure {
    /// The agent refused the caller (PERMISSION_DENIED): retrying cannot help.
    Denied(String),
    /// Unreachable, no answer, an error: live mode retries.
    Failed(String),
}

fn part<T>(what: &str, r: Result<tonic::Response<T>, tonic::Status>) -> Result<Result<T, String>, Failure> {
    match r {
        Ok(r) => Ok(Ok(r.into_inner())),
        Err(s) if s.code() == tonic::Code::PermissionDenied => Err(Failure::Denied(format!("{what}: {}", s.message()))),
        Err(s) => Ok(Err(status_message(&s))),
    }
}

/// Reads one snapshot from the agent (all calls at once).
async fn fetch(addr: &str, channel: Channel) -> Result<Snapshot, Failure> {
    let mut cluster = pb::cluster_client::ClusterClient::new(channel.clone()).with_message_limits();
    let mut ha = pb::ha_client::HaClient::new(channel.clone()).with_message_limits();
    let mut inv = pb::inventory_client::InventoryClient::new(channel.clone()).with_message_limits();
    let mut inv2 = inv.clone();
    let mut inv3 = inv.clone();
    let mut mig = pb::migration_client::MigrationClient::new(channel.clone()).with_message_limits();
    let mut rb = pb::rebalance_client::RebalanceClient::new(channel).with_message_limits();
    let (status, h, cores, free, domains, ops, reb) = tokio::join!(
        cluster.status(pb::StatusRequest {}),
        ha.status(pb::HaStatusRequest {}),
        inv.list_devices(pb::ListDevicesRequest { host: String::new(), all: true }),
        inv2.list_devices(pb::ListDevicesRequest { host: String::new(), all: false }),
        inv3.list_domains(pb::ListDomainsRequest::default()),
        mig.list_operations(pb::ListOperationsRequest { limit: 0 }),
        rb.status(pb::RebalanceStatusRequest { limit: PLANS_ASKED }),
    );
    let status = match part("Cluster.Status", status)? {
        Ok(s) => s,
        Err(e) => return Err(Failure::Failed(format!("cannot read the cluster from the agent at {addr}: {e}"))),
    };
    Ok(Snapshot::from_parts(Parts {
        status,
        ha: part("Ha.Status", h)?,
        cores: part("Inventory.ListDevices", cores)?,
        free: part("Inventory.ListDevices", free)?,
        domains: part("Inventory.ListDomains", domains)?,
        operations: part("Migration.ListOperations", ops)?,
        rebalance: part("Rebalance.Status", reb)?,
    }))
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn denied(agent: &str, why: &str) -> anyhow::Error {
    anyhow!(
        "permission denied by the agent at {agent}: {why}\n`ternctl top` needs a certificate with the \
         LDoms Review profile (or LDoms Management, System Administrator): see `ternctl certs issue --user`"
    )
}

/// `ternctl top`: live on a terminal; otherwise (or with --once, --iterations, --json)
/// plain frames. Exit 0; 2 when a plain frame cannot be read or the caller is refused.
pub async fn run(agent: &AgentArgs, args: &TopArgs, json: bool) -> anyhow::Result<i32> {
    // What no retry can mend is refused at once.
    let addr =
        agent.agent.clone().ok_or_else(|| anyhow!("no agent given: pass --agent HOST:PORT or set TERN_AGENT"))?;
    let dir = agent
        .certs_dir
        .as_ref()
        .ok_or_else(|| anyhow!("no certificates given: pass --certs-dir DIR or set TERN_CERTS_DIR"))?;
    tern_tls::install_crypto_provider();
    tern_tls::TlsFiles::in_dir(dir, &agent.cert_name).client_config()?;

    let live = std::io::stdout().is_terminal() && !args.once && !json;
    let frames = if args.once { Some(1) } else { args.iterations.or(if live { None } else { Some(1) }) };
    let mut channel: Option<Channel> = None;
    let mut last: Option<(Snapshot, u64)> = None;
    let mut shown = 0u32;
    let mut stdout = std::io::stdout();
    if live {
        // Clear the screen once; later frames overwrite in place (no flicker).
        print!("\x1b[2J");
    }
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let read = async {
            let ch = match &channel {
                Some(c) => c.clone(),
                None => agent
                    .connect()
                    .await
                    .map_err(|e| Failure::Failed(format!("cannot reach the agent at {addr}: {}", e.root_cause())))?,
            };
            fetch(&addr, ch.clone()).await.map(|s| (s, ch))
        };
        let result = tokio::select! {
            r = read => r,
            _ = &mut ctrl_c => break,
        };
        let now = now_ms();
        let error = match result {
            Ok((s, ch)) => {
                channel = Some(ch);
                last = Some((s, now));
                None
            }
            Err(Failure::Denied(why)) => {
                if live {
                    println!();
                }
                return Err(denied(&addr, &why));
            }
            Err(Failure::Failed(e)) => {
                channel = None;
                if !live {
                    bail!("{e}");
                }
                Some(e)
            }
        };
        shown += 1;
        if json {
            let s = last.as_ref().map(|(s, _)| s);
            let v = serde_json::json!({"time_ms": now, "agent": addr, "snapshot": s});
            println!("{}", serde_json::to_string(&v)?);
        } else {
            let frame = Frame {
                agent: &addr,
                now_ms: now,
                interval: live.then_some(args.interval),
                snapshot: last.as_ref().map(|(s, t)| (s, *t)),
                error: error.as_deref(),
            };
            let text = render(&frame);
            if live {
                let mut screen = String::from("\x1b[H");
                for line in text.lines() {
                    screen.push_str(line);
                    screen.push_str("\x1b[K\n");
                }
                screen.push_str("\x1b[J");
                print!("{screen}");
            } else {
                if shown > 1 {
                    println!();
                }
                print!("{text}");
            }
        }
        stdout.flush()?;
        if frames.is_some_and(|n| shown >= n) {
            return Ok(if error.is_some() { crate::EXIT_USAGE } else { 0 });
        }
        tokio::select! {
            () = tokio::time::sleep(args.interval) => {}
            _ = &mut ctrl_c => break,
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 1 << 30;
    const M: u64 = 1 << 20;
    /// 2026-12-02 01:02:03 UTC.
    const NOW: u64 = 1_796_173_323_000;

    fn snapshot() -> Snapshot {
        let member = |name: &str, leader, heard, lag| Member {
            name: name.into(),
            address: format!("10.0.0.{}:7100", name.len()),
            role: "voter".into(),
            leader,
            heard_ms: heard,
            lag,
        };
        let host = |name: &str, status: &str, free, act, mem, largest, guests, resv| Host {
            name: name.into(),
            status: status.into(),
            inventory: true,
            free_cores: free,
            activated_cores: act,
            free_memory: mem,
            largest_free: largest,
            guests,
            reservations: resv,
        };
        Snapshot {
            answered_by: "m10-1-1".into(),
            leader: Some("m10-1-1".into()),
            term: 3,
            commit_index: 120,
            members: vec![
                member("m10-1-1", true, Some(100), Some(0)),
                member("m10-1-2", false, Some(400), Some(2)),
                member("m10-1-3", false, None, Some(0)),
            ],
            hosts: vec![
                host("m10-1-1", "up", 8, 16, 40 * G, 32 * G, 2, 0),
                host("m10-1-2", "up", 8, 16, 20992 * M, 16 * G, 1, 1),
                Host { name: "m10-1-3".into(), status: "lost".into(), ..Default::default() },
            ],
            running: vec![Operation {
                id: 7,
                kind: "migration".into(),
                domain: "ldom1".into(),
                source: "m10-1-1".into(),
                target: "m10-1-2".into(),
                phase: "transferring".into(),
                progress_pct: 45,
                ..Default::default()
            }],
            recent: vec![Operation {
                id: 6,
                kind: "migration".into(),
                domain: "ldom2".into(),
                source: "m10-1-2".into(),
                target: "m10-1-1".into(),
                phase: "done".into(),
                progress_pct: 100,
                result: "downtime 120 ms, total 3.4 s".into(),
                ..Default::default()
            }],
            rebalance: Some(Rebalance {
                imbalance_ppm: 62_000,
                threshold_ppm: Some(50_000),
                level: 3,
                auto: false,
                rounds_held: 1,
                hold_rounds: 3,
                moves_in_flight: 1,
                applying: vec![Plan {
                    id: 4,
                    purpose: "balance".into(),
                    moves: vec![
                        Move {
                            domain: "ldom1".into(),
                            source: "m10-1-1".into(),
                            target: "m10-1-2".into(),
                            state: "running".into(),
                            operation: 7,
                        },
                        Move {
                            domain: "ldom3".into(),
                            source: "m10-1-1".into(),
                            target: "m10-1-2".into(),
                            state: "pending".into(),
                            operation: 0,
                        },
                    ],
                }],
            }),
            notes: vec![],
        }
    }

    #[test]
    fn a_frame_shows_leader_members_hosts_operations_and_rebalancer() {
        // Goal: the whole one-shot frame of a fixed snapshot, byte for byte: sizes in ldm's style, a bar at 45%.
        let s = snapshot();
        let f = Frame { agent: "10.0.0.7:7100", now_ms: NOW, interval: None, snapshot: Some((&s, NOW)), error: None };
        let want = "\
tern top  2026-12-02 01:02:03 UTC  agent 10.0.0.7:7100 (m10-1-1)
leader m10-1-1  term 3  commit 120  members 3

MEMBER     ROLE   HEARD  LAG  ADDRESS
m10-1-1 *  voter  0.1s   0    10.0.0.7:7100
m10-1-2    voter  0.4s   2    10.0.0.7:7100
m10-1-3    voter  -      0    10.0.0.7:7100

HOST     STATUS  FREE-CORES  FREE-MEM  LARGEST  GUESTS  RESV
m10-1-1  up      8/16        40G       32G      2       0
m10-1-2  up      8/16        20992M    16G      1       1
m10-1-3  lost    -           -         -        0       0

RUNNING
  ID  KIND       DOMAIN  ROUTE               PHASE         PROGRESS
  7   migration  ldom1   m10-1-1 -> m10-1-2  transferring  [#########...........]  45%
RECENT
  ID  KIND       DOMAIN  ROUTE               PHASE  RESULT
  6   migration  ldom2   m10-1-2 -> m10-1-1  done   downtime 120 ms, total 3.4 s

REBALANCE  imbalance 0.0620, above threshold 0.0500 (level 3); auto off, held 1/3 rounds; 1 move(s) in flight
  plan 4 (balance) applying: 0 of 2 move(s) done
    DOMAIN  ROUTE               STATE
    ldom1   m10-1-1 -> m10-1-2  running (operation 7)
    ldom3   m10-1-1 -> m10-1-2  pending
";
        assert_eq!(render(&f), want);
        assert_eq!(render(&f), render(&f), "deterministic");
    }

    #[test]
    fn an_unreachable_agent_is_shown_with_the_last_snapshot_and_the_retry() {
        // Goal: live mode keeps the last data, says when it was read, why this read failed and that it retries.
        let s = snapshot();
        let f = Frame {
            agent: "10.0.0.7:7100",
            now_ms: NOW + 4_000,
            interval: Some(Duration::from_secs(2)),
            snapshot: Some((&s, NOW)),
            error: Some("cannot reach the agent at 10.0.0.7:7100: Connection refused (os error 111)"),
        };
        let text = render(&f);
        let head: Vec<&str> = text.lines().take(5).collect();
        assert_eq!(
            head,
            [
                "tern top  2026-12-02 01:02:07 UTC  agent 10.0.0.7:7100 (m10-1-1)  every 2.0s",
                "!! cannot reach the agent at 10.0.0.7:7100: Connection refused (os error 111)",
                "!! retrying every interval; Ctrl-C to quit",
                "!! last read at 2026-12-02 01:02:03 UTC:",
                "leader m10-1-1  term 3  commit 120  members 3",
            ]
        );
        let none = Frame { snapshot: None, ..f };
        assert_eq!(render(&none).lines().count(), 3, "{}", render(&none));
    }

    #[test]
    fn an_idle_cluster_without_a_leader_says_so() {
        // Goal: no leader, no operation, level 1 and an unread part each read as words, not blanks.
        let mut s = snapshot();
        s.leader = None;
        s.running.clear();
        s.recent.clear();
        s.notes = vec!["HA status: agent unavailable: no leader is known yet; retry".into()];
        let r = s.rebalance.as_mut().unwrap();
        (r.threshold_ppm, r.level, r.applying) = (None, 1, vec![]);
        let f = Frame { agent: "a:1", now_ms: NOW, interval: None, snapshot: Some((&s, NOW)), error: None };
        let text = render(&f);
        assert!(text.contains("leader none (no leader known)  term 3"), "{text}");
        assert!(text.contains("!! HA status: agent unavailable: no leader is known yet; retry"), "{text}");
        assert!(text.contains("\nRUNNING  none\n") && !text.contains("RECENT"), "{text}");
        assert!(text.contains("imbalance 0.0620, level 1: only mandatory moves;"), "{text}");
        assert!(text.contains("  no plan applying"), "{text}");
    }

    #[test]
    fn bars_fill_by_the_transfer_progress() {
        // Goal: 0%, 45% and 100% (and an out-of-range value clamped) as ASCII bars of fixed width.
        assert_eq!(bar(0), "[....................]   0%");
        assert_eq!(bar(45), "[#########...........]  45%");
        assert_eq!(bar(100), "[####################] 100%");
        assert_eq!(bar(250), bar(100));
    }

    #[test]
    fn intervals_are_read_as_admins_write_them_and_bounded() {
        // Goal: 2s, 500ms, 1m, 0.2 parse; below 0.2s, above 60s and junk are refused with the bounds.
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_interval("0.2"), Ok(Duration::from_millis(200)));
        assert!(parse_interval("100ms").unwrap_err().contains("0.2s..60s"));
        assert!(parse_interval("61s").unwrap_err().contains("0.2s..60s"));
        assert!(parse_interval("soon").is_err());
        assert!(parse_interval("-1s").is_err());
    }

    #[test]
    fn a_snapshot_gathers_the_agents_answers() {
        // Goal: free cores are activated cores wholly free; memory sums the free ranges; guests count kind guest;
        // lag is known only from the leader; running and ended operations part; unread parts become notes.
        let member = |id, name: &str, matched| pb::Member {
            node_id: id,
            name: name.into(),
            address: format!("127.0.0.1:{id}"),
            role: pb::MemberRole::Voter as i32,
            host_status: pb::HostStatus::Up as i32,
            matched_index: matched,
        };
        let status = pb::ClusterStatus {
            node_id: 1,
            node_name: "a".into(),
            leader_id: 1,
            term: 2,
            commit_index: 10,
            applied_index: 10,
            members: vec![member(1, "a", 10), member(2, "b", 7)],
            hypervisor: "sim".into(),
        };
        let core = |cid, free_pct, activated| pb::CoreRow { cid, cpuset: vec![], free_pct, activated };
        let cores = pb::ListDevicesResponse {
            hosts: vec![pb::HostDevices {
                host: "a".into(),
                memory: vec![],
                cores: vec![core(0, 0, true), core(1, 100, true), core(2, 50, true), core(3, 100, false)],
                reservations: 1,
            }],
        };
        let range = |size| pb::MemoryRow { pa: 0, size, bound: String::new() };
        let free = pb::ListDevicesResponse {
            hosts: vec![pb::HostDevices {
                host: "a".into(),
                memory: vec![range(4 * G), range(16 * G)],
                cores: vec![],
                reservations: 1,
            }],
        };
        let dom = |name: &str, kind: &str| pb::DomainInfo {
            name: name.into(),
            host: "a".into(),
            kind: kind.into(),
            ..Default::default()
        };
        let domains = pb::ListDomainsResponse {
            domains: vec![dom("primary", "control"), dom("g1", "guest"), dom("g2", "guest")],
        };
        let op = |id, phase: &str| pb::OperationInfo {
            id,
            kind: "migration".into(),
            domain: "g1".into(),
            source: "a".into(),
            target: "b".into(),
            phase: phase.into(),
            progress_pct: 30,
            ..Default::default()
        };
        let mut done = op(4, "done");
        done.report = Some(pb::MigrationReport { downtime_ms: 158, total_ms: 32_400, ..Default::default() });
        let operations =
            pb::ListOperationsResponse { operations: vec![op(5, "transferring"), done, op(3, "cancelled")] };
        let s = Snapshot::from_parts(Parts {
            status: status.clone(),
            ha: Err("agent unavailable: no leader is known yet; retry".into()),
            cores: Ok(cores),
            free: Ok(free),
            domains: Ok(domains),
            operations: Ok(operations),
            rebalance: Err("agent unavailable: no leader".into()),
        });
        assert_eq!(s.leader.as_deref(), Some("a"));
        assert_eq!(s.members.iter().map(|m| m.lag).collect::<Vec<_>>(), [Some(0), Some(3)]);
        let a = &s.hosts[0];
        assert_eq!((a.free_cores, a.activated_cores, a.free_memory, a.largest_free), (1, 3, 20 * G, 16 * G));
        assert_eq!((a.guests, a.reservations, a.status.as_str()), (2, 1, "up"));
        assert!(!s.hosts[1].inventory, "b reported nothing");
        assert_eq!(s.running.iter().map(|o| o.id).collect::<Vec<_>>(), [5]);
        assert_eq!(s.recent.iter().map(|o| o.id).collect::<Vec<_>>(), [4, 3]);
        assert_eq!(s.recent[0].result, "downtime 158 ms, total 32.4 s");
        assert_eq!(s.rebalance, None);
        assert_eq!(s.notes.len(), 2, "{:?}", s.notes);

        // Asked of a follower, the matched indexes are not its to know.
        let follower = pb::ClusterStatus { node_id: 2, node_name: "b".into(), ..status };
        let s = Snapshot::from_parts(Parts {
            status: follower,
            ha: Ok(pb::HaStatusResponse::default()),
            cores: Ok(Default::default()),
            free: Ok(Default::default()),
            domains: Ok(Default::default()),
            operations: Ok(Default::default()),
            rebalance: Ok(Default::default()),
        });
        assert!(s.members.iter().all(|m| m.lag.is_none()), "{:?}", s.members);
    }
}
