//! `ternctl demo`, in the spirit of `cockroach demo`: a local 3-agent cluster (real
//! ternd processes, real TLS, the seed's servers), a dry run and a live migration of
//! ldom1 to m10-1-2 with progress, the report; then a failover (m10-1-2's control
//! domain dies, the admin confirms its server off, ldom1 restarts elsewhere), and then
//! it stops (or stays with --keep).

use crate::client::AgentArgs;
use crate::local::{self, Servers, UpArgs};
use crate::{cluster, ha, migrate};
use anyhow::{anyhow, bail};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tern_proto::limits::MessageLimits;
use tern_proto::v1 as pb;

/// Longest the failover act waits for each step.
const ACT_DEADLINE: Duration = Duration::from_secs(60);

#[derive(clap::Args, Debug, Clone)]
pub struct DemoArgs {
    /// Leave the cluster running and print how to reach it.
    #[arg(long)]
    pub keep: bool,
    /// Folder for the cluster (default: a new folder under the system's temp dir).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub servers: Servers,
}

fn say(command: &str) {
    println!("\n$ ternctl {command}");
}

pub async fn run(args: &DemoArgs) -> anyhow::Result<i32> {
    let dir =
        args.dir.clone().unwrap_or_else(|| std::env::temp_dir().join(format!("tern-demo-{}", std::process::id())));
    let up_args = UpArgs { dir: dir.clone(), agents: 3, servers: args.servers.clone() };
    println!("Starting 3 agents (real ternd processes, mutual TLS) in {} ...", dir.display());
    let up = local::start(&up_args).await?;
    println!("cluster up: {}", up.names.join(", "));
    let result = match (script(&up).await, args.servers.backend) {
        (Ok(0), local::Backend::Sim) => failover(&up, &dir).await,
        (Ok(0), local::Backend::Ldm) => ldm_commands(&dir),
        (other, _) => other,
    };
    if args.keep {
        println!("\nThe cluster keeps running. To reach it:");
        println!("export TERN_AGENT={} TERN_CERTS_DIR={}", up.addr, up.certs.display());
        println!("Stop it with: ternctl local-cluster down --dir {}", dir.display());
    } else {
        local::down(&dir).await?;
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn agent_of(up: &local::Up) -> AgentArgs {
    AgentArgs {
        agent: Some(up.addr.clone()),
        certs_dir: Some(up.certs.clone()),
        cert_name: "ternctl".into(),
        timeout_ms: 10_000,
    }
}

async fn script(up: &local::Up) -> anyhow::Result<i32> {
    let agent = agent_of(up);
    let pw = up.password_file.display().to_string();
    say("cluster status");
    cluster::status(&agent, false).await?;
    say("list-domain");
    cluster::list_domain(&agent, None, None, None, false).await?;
    say(&format!("migrate-domain -n -p {pw} ldom1 m10-1-2"));
    let dry = migrate::MigrateArgs {
        domain: "ldom1",
        target: "m10-1-2",
        dry_run: true,
        password_file: Some(&up.password_file),
    };
    let code = migrate::migrate(&agent, &dry, false).await?;
    if code != 0 {
        return Ok(code);
    }
    say(&format!("migrate-domain -p {pw} ldom1 m10-1-2"));
    let live = migrate::MigrateArgs { dry_run: false, ..dry };
    let code = migrate::migrate(&agent, &live, false).await?;
    say("list-domain -o status ldom1   (asked of the source, m10-1-1)");
    cluster::list_domain(&agent, None, Some("ldom1"), Some("status"), false).await?;
    say("list-domain");
    cluster::list_domain(&agent, None, None, None, false).await?;
    say("list-operations");
    migrate::list_operations(&agent, false).await?;
    Ok(code)
}

/// The failover act (SPEC HA-*): ldom1's new server, m10-1-2, loses its control
/// domain (kill -9 of its agent) while ldom1 keeps running there. The leader declares
/// it lost; with no power fence configured here the guest waits until the admin, having
/// made sure the server is off (here: cutting the simulated server's power), confirms
/// it; then ldom1 restarts on another server through a reservation.
async fn failover(up: &local::Up, dir: &Path) -> anyhow::Result<i32> {
    let agent = agent_of(up);
    let lost = "m10-1-2";
    println!("\n# Failover: {lost}'s control domain dies; ldom1 keeps running on its server (HA-02).");
    say("set-domain ha-priority=high ldom1");
    ha::set_domain(&agent, &["ha-priority=high".to_string()], "ldom1").await?;
    let pid = std::fs::read_to_string(dir.join(lost).join("ternd.pid"))?;
    println!("\n$ kill -9 {}   ({lost}'s ternd)", pid.trim());
    let killed = std::process::Command::new("kill").args(["-9", pid.trim()]).status()?;
    if !killed.success() {
        bail!("kill -9 {} failed", pid.trim());
    }
    println!("# waiting for the leader to declare {lost} lost (ha.lost_after_ms) ...");
    wait(&agent, &format!("{lost} awaiting a fence"), |s: &pb::HaStatusResponse| {
        s.hosts.iter().any(|h| h.host == lost && h.fence == "awaiting fence")
    })
    .await?;
    say("ha status");
    ha::status(&agent, false).await?;
    let state = dir.join(lost).join("data").join("sim-state.json");
    println!("\n# The admin makes sure the server is off (here: its simulated power is cut) and confirms it.");
    say(&format!("sim power-off --state {}", state.display()));
    ha::sim_power_off(&state)?;
    say(&format!("host fence --confirm-off {lost}"));
    ha::set_host(&agent, lost, "fenced").await?;
    wait(&agent, "ldom1 restarted", |s: &pb::HaStatusResponse| {
        s.hosts.iter().any(|h| h.host == lost && h.status == "fenced" && h.operation_id == 0)
    })
    .await?;
    say("ha status");
    ha::status(&agent, false).await?;
    say("list-domain");
    cluster::list_domain(&agent, None, None, None, false).await?;
    say("list-operations");
    migrate::list_operations(&agent, false).await?;
    Ok(0)
}

/// With `--backend ldm`: the ldm commands the source's agent ran, as its fake server
/// logged them. The failover act needs the simulated backend: restarting a guest on
/// another server binds it with `ldm add-domain`, `add-core`, ..., which fake-ldm's
/// fleet mode does not model.
fn ldm_commands(dir: &Path) -> anyhow::Result<i32> {
    let log = dir.join("fleet").join("m10-1-1").join("commands.log");
    let text = std::fs::read_to_string(&log).map_err(|e| anyhow!("reading {}: {e}", log.display()))?;
    println!("\n# What m10-1-1's agent asked of ldm for the migration ({}):", log.display());
    // Consecutive repeats (the progress poll) are shown once, with their count.
    let wanted = text.lines().filter(|l| l.starts_with("migrate-domain") || l.starts_with("list-domain -o status"));
    let mut runs: Vec<(&str, usize)> = Vec::new();
    for line in wanted {
        match runs.last_mut() {
            Some((last, n)) if *last == line => *n += 1,
            _ => runs.push((line, 1)),
        }
    }
    for (line, n) in runs {
        match n {
            1 => println!("ldm {line}"),
            n => println!("ldm {line}    (x{n}: the progress poll, OP-06)"),
        }
    }
    println!("\n# (The failover act runs on the simulated backend: `ternctl demo` without --backend ldm.)");
    Ok(0)
}

/// Polls the leader's HA status until `done`, within [`ACT_DEADLINE`].
async fn wait(agent: &AgentArgs, what: &str, done: impl Fn(&pb::HaStatusResponse) -> bool) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut client = pb::ha_client::HaClient::new(agent.connect().await?).with_message_limits();
    let mut last = String::new();
    while start.elapsed() < ACT_DEADLINE {
        match client.status(pb::HaStatusRequest {}).await {
            Ok(s) if done(s.get_ref()) => return Ok(()),
            Ok(s) => last = format!("{:?}", s.into_inner().hosts),
            Err(e) => last = e.message().to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(anyhow!("waited {ACT_DEADLINE:?} for {what}; last: {last}"))
}
