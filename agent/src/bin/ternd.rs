//! `ternd`: reads its configuration, sets up logging, runs the agent until SIGTERM or
//! Ctrl-C.

use clap::Parser;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// The tern agent. Runs on every control domain: reads the server through its
/// hypervisor backend, joins the Raft group of agents, serves gRPC over mutual TLS.
#[derive(Parser, Debug)]
#[command(
    name = "ternd",
    version,
    after_help = "Configuration (TOML; unknown fields are refused):\n\
  name = \"m10-1-1\"              node name: the server's host name\n\
  listen_addr = \"0.0.0.0:7400\"  gRPC for peers and ternctl (port 0: any free port)\n\
  advertise_addr = \"host:7400\"  how peers reach this agent (default: the bound address)\n\
  data_dir = \"/var/tern\"        Raft log, state machine, sim state, node-id, ternd.addr\n\
  join = [\"host:7400\"]          members to join through; empty: start a new cluster\n\
  voters = 3                     voters kept; other members are learners\n\
  metrics_addr = \"127.0.0.1:9400\" Prometheus /metrics (optional; plain HTTP, so loopback\n\
                                 unless metrics_remote = true)\n\
  [tls] ca, cert, key             PEM files from `ternctl certs`\n\
  [hypervisor] kind = \"sim\", layout = \"m10-1-1.toml\", time_scale = 1\n\
  [timeouts] heartbeat_interval_ms, election_timeout_min_ms, election_timeout_max_ms,\n\
             rpc_timeout_ms, connect_timeout_ms, voter_replace_after_ms,\n\
             inventory_poll_ms, inventory_debounce_ms, shutdown_deadline_ms\n\
  [ha] heartbeat_interval_ms = 1000, suspect_after_ms = 3000, lost_after_ms = 8000,\n\
       mode = \"restart\" | \"hand-off\" (with hand_off_command, hand_off_args,\n\
       hand_off_deadline_ms), restart_lease_ms, fence_retry_ms, fence_retry_max_ms,\n\
       isolation_timeout_ms = 0 (off), isolation_response = \"stop-guests\" | \"leave-running\"\n\
       watchdog_timeout_ms = 0 (none declared), self_stop_margin_ms = 5000: with an\n\
       isolation timeout and a watchdog, a lost host's guests that are slaves of its\n\
       primary with failure-policy=stop restart without a fence (HA-08)\n\
  [[ha.fence]] host, ip, ipport, username, password_file (mode 600), lanplus = true,\n\
       cipher, agent = \"/usr/sbin/fence_ipmilan\", deadline_ms = 20000, attempts = 2\n\
       (one per server; the same [ha] on every agent, since any agent may lead)\n\
  [log] json = false\n\n\
Logging: RUST_LOG filters (default info), e.g. RUST_LOG=tern_agent=debug,openraft=warn"
)]
struct Args {
    /// The configuration file.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Check the configuration and exit.
    #[arg(long)]
    check: bool,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    tern_tls::install_crypto_provider();
    let config = match tern_agent::config::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ternd: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    if args.check {
        if let Err((field, message)) = config.ha.power_fences() {
            eprintln!("ternd: {}: {field}: {message}", args.config.display());
            return std::process::ExitCode::from(2);
        }
        println!("{}: configuration is valid", args.config.display());
        return std::process::ExitCode::SUCCESS;
    }
    init_logging(config.log.json);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ternd: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            signal.cancel();
        });
        tern_agent::run(config, shutdown).await
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "ternd failed");
            eprintln!("ternd: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
