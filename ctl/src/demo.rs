//! `ternctl demo`, in the spirit of `cockroach demo`: a local 3-agent cluster (real
//! ternd processes, real TLS, the seed's servers), a dry run and a live migration of
//! ldom1 to m10-1-2 with progress, the report, and then it stops (or stays with --keep).

use crate::client::AgentArgs;
use crate::local::{self, Servers, UpArgs};
use crate::{cluster, migrate};
use std::path::PathBuf;

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
    let result = script(&up).await;
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

async fn script(up: &local::Up) -> anyhow::Result<i32> {
    let agent = AgentArgs {
        agent: Some(up.addr.clone()),
        certs_dir: Some(up.certs.clone()),
        cert_name: "ternctl".into(),
        timeout_ms: 10_000,
    };
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
