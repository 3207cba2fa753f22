//! `tern-chaos`: runs seeded cluster simulations. See the library docs.

use clap::Parser;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;
use tern_chaos::{Certs, HOST_NAMES, Scenario, describe, options, replay_command, run_seed};

/// Seeded fault-injection runs of whole tern clusters (turmoil). A failure prints its
/// seed and the command that replays it.
#[derive(Parser, Debug)]
#[command(name = "tern-chaos")]
struct Args {
    /// A range of seeds, `A..B` (B excluded).
    #[arg(long, value_name = "A..B", conflicts_with = "seed")]
    seeds: Option<String>,
    /// One seed.
    #[arg(long)]
    seed: Option<u64>,
    /// A named scenario instead of random faults, or `all`.
    #[arg(long)]
    scenario: Option<String>,
    /// Hosts in a random run (3 to 5).
    #[arg(long, default_value_t = 4)]
    hosts: usize,
    /// Simulated milliseconds of workload and faults before healing.
    #[arg(long, default_value_t = 40_000)]
    faults_ms: u64,
    /// Run every seed twice and compare the digests of the two runs.
    #[arg(long)]
    check_determinism: bool,
    /// Stop at the first failure.
    #[arg(long)]
    fail_fast: bool,
    /// Write every member's applied-index changes (by step) to this file, to compare
    /// two runs of one seed.
    #[arg(long, value_name = "FILE")]
    trace: Option<std::path::PathBuf>,
    /// Also print the fault log and the workload's counters of passing runs.
    #[arg(long, short)]
    verbose: bool,
}

fn parse_range(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.split_once("..")?;
    Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        tern_chaos::run::install_tracing();
    }
    let (from, to) = match (&args.seeds, args.seed) {
        (Some(r), _) => match parse_range(r) {
            Some(r) if r.0 < r.1 => r,
            _ => {
                eprintln!("tern-chaos: --seeds takes A..B with A < B, e.g. 0..100");
                return ExitCode::from(2);
            }
        },
        (None, Some(s)) => (s, s + 1),
        (None, None) => (0, 1),
    };
    let scenarios: Vec<Option<Scenario>> = match args.scenario.as_deref() {
        None => vec![None],
        Some("all") => Scenario::ALL.into_iter().map(Some).collect(),
        Some(name) => match Scenario::parse(name) {
            Some(s) => vec![Some(s)],
            None => {
                let names: Vec<&str> = Scenario::ALL.iter().map(|s| s.name()).collect();
                eprintln!("tern-chaos: unknown scenario {name:?}; known: all, {}", names.join(", "));
                return ExitCode::from(2);
            }
        },
    };
    let certs = match Certs::new(&HOST_NAMES) {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("tern-chaos: making certificates: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = options(args.hosts, args.faults_ms);
    let started = Instant::now();
    let (mut runs, mut failed) = (0u64, Vec::new());
    'seeds: for seed in from..to {
        for scenario in &scenarios {
            let report = run_seed(seed, &opts, certs.clone(), *scenario);
            runs += 1;
            let replay = replay_command(&report, args.hosts, args.faults_ms);
            println!("{}", describe(&report, &replay));
            if args.verbose {
                for (t, w) in &report.nemesis_log {
                    println!("    {t:>7} ms  {w}");
                }
                for (what, n) in &report.history.counts {
                    println!("    {n:>5} {what}");
                }
                for m in &report.history.migrations {
                    println!(
                        "    migration {} {} -> {}{} at {} ms: {:?}",
                        m.domain,
                        m.source,
                        m.target,
                        if m.dry_run { " (dry run)" } else { "" },
                        m.started_ms - tern_chaos::cluster::EPOCH_MS,
                        m.end
                    );
                }
            }
            if let Some(path) = &args.trace {
                let mut text = report.trace.join("\n");
                text.push('\n');
                if let Err(e) = std::fs::write(path, text) {
                    eprintln!("tern-chaos: {}: {e}", path.display());
                }
            }
            let mut bad = !report.ok();
            if args.check_determinism {
                let again = run_seed(seed, &opts, certs.clone(), *scenario);
                runs += 1;
                if again.digest != report.digest {
                    println!(
                        "seed {seed}: NOT DETERMINISTIC: digests {:016x} and {:016x} ({})",
                        report.digest,
                        again.digest,
                        if again.ok() == report.ok() { "same verdict" } else { "different verdicts" }
                    );
                    bad = true;
                }
            }
            if bad {
                failed.push(replay);
                if args.fail_fast {
                    break 'seeds;
                }
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{runs} runs in {secs:.1} s ({:.2} runs/s), {} failed", runs as f64 / secs.max(1e-9), failed.len());
    for f in &failed {
        println!("  {f}");
    }
    if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
