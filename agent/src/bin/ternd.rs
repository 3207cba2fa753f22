//! `ternd`: reads its configuration, sets up logging (and trace export, when
//! `[telemetry]` asks for it), runs the agent until SIGTERM or Ctrl-C, then sends the
//! last spans.
//!
//! Its flags ([`Args`]) are in `dist/src/ternd.rs`, so that `ternctl man` writes ternd's
//! man page without linking the agent.

use clap::Parser;
use tern_dist::ternd::Args;
use tokio_util::sync::CancellationToken;

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
        // The hypervisor is read once: with ldm, `ldm -V` and the inventory the agent
        // will report. A setting found wrong exits 2 (do not restart); a hypervisor that
        // does not answer exits 1 (try again later).
        let checked = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt.block_on(tern_agent::check_hypervisor(&config)),
            Err(e) => Err(tern_agent::AgentError::Io { context: "starting the runtime".into(), source: e }),
        };
        match checked {
            Ok(found) => println!("{found}"),
            Err(tern_agent::AgentError::Config(tern_agent::config::ConfigError::Invalid {
                field, message, ..
            })) => {
                eprintln!("ternd: {}: {field}: {message}", args.config.display());
                return std::process::ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("ternd: {}: {e}", args.config.display());
                return std::process::ExitCode::FAILURE;
            }
        }
        println!("{}: configuration is valid", args.config.display());
        return std::process::ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ternd: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    // The exporter's channel to the collector lives on the runtime. A restore exports nothing.
    let telemetry = match args.restore {
        Some(_) => Ok(None),
        None => runtime.block_on(async { tern_agent::telemetry::init(&config.telemetry, &config.name) }),
    };
    let telemetry = match telemetry {
        Ok(t) => t,
        Err(e) => {
            eprintln!("ternd: {}: {e}", args.config.display());
            return std::process::ExitCode::from(2);
        }
    };
    let (telemetry, traces) = telemetry.unzip();
    init_logging(config.log.json, traces);
    if let Some(endpoint) = &config.telemetry.otlp_endpoint {
        tracing::info!(%endpoint, sample_ratio = config.telemetry.sample_ratio, "exporting traces");
    }
    if let Some(file) = &args.restore {
        return match runtime.block_on(tern_agent::restore(&config, file)) {
            Ok(r) => {
                println!(
                    "restored {} into {}: {} host(s), {} domain(s), {} user(s) as of log index {} (term {}); this \
                     agent is the new cluster's one voter: start ternd with bootstrap = \"existing\" (or unset), \
                     then start the other members with empty data directories and join = [this agent]",
                    file.display(),
                    config.data_dir.display(),
                    r.hosts,
                    r.domains,
                    r.users,
                    r.last_applied.index,
                    r.last_applied.leader_id.term
                );
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ternd: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            signal.cancel();
        });
        let result = tern_agent::run(config, shutdown).await;
        if let Some(t) = telemetry {
            t.shutdown().await;
        }
        result
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

/// JSON when configured; else text, untimed and plain for the journal (`tern_agent::logging`);
/// with the trace layer beside it when traces are exported.
fn init_logging(json: bool, traces: Option<tern_agent::telemetry::TraceLayer>) {
    tern_agent::logging::init(tern_agent::logging::Style::for_stderr(json), traces);
}
