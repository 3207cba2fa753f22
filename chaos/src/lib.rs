//! `tern-chaos`: deterministic fault injection on whole tern clusters.
//!
//! Every host of a [turmoil] simulation runs the real agent (`tern_agent::serve`:
//! Raft over gRPC with mutual TLS, inventory reporting, membership, the migration
//! coordinator and its target side) on turmoil sockets through the agent's seams,
//! with a sim hypervisor and an in-memory Raft store kept outside the host, so that a
//! crash loses the process and keeps the disk and the server. A workload client
//! ([`workload`]) and a nemesis ([`nemesis`]) act on the cluster; both, and turmoil's
//! network, draw from one seed. After every step the [`check`]er reads every member
//! and every server; once the faults stop, the cluster must converge within a bound.
//!
//! ```text
//! cargo run -p tern-chaos -- --seeds 0..100
//! cargo run -p tern-chaos -- --seed 17            # replay one seed
//! cargo run -p tern-chaos -- --scenario all       # the named scenarios
//! ```
//!
//! Determinism: the nemesis, the workload, turmoil's network (each link has one
//! fixed, seeded latency, so an extra message never shifts later deliveries),
//! openraft's election timeouts (one value per member: `max = min + 1`) and tokio's
//! scheduler randomness (`select!` fairness; the workspace builds with
//! `--cfg tokio_unstable`, see `.cargo/config.toml`, so turmoil seeds every host's
//! runtime) follow the seed. Password hashing runs inline in the simulation
//! (`Seams::inline_blocking`), so that no step waits on a real thread.
//! `--check-determinism` runs every seed twice and compares digests.
//!
//! Every bug the simulation found has a [`Scenario`] that aims at it (see the list in
//! [`scenario`]), so that it stays fixed.

pub mod check;
pub mod cluster;
pub mod faulty;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod power;
pub mod rng;
pub mod run;
pub mod scenario;
pub mod workload;

pub use cluster::Certs;
use cluster::Options;
pub use run::{Failure, RunReport, run_seed};
pub use scenario::Scenario;

/// Every host name a simulation may use (certificates are made for all of them).
pub const HOST_NAMES: [&str; 9] =
    ["m10-1-1", "m10-1-2", "t4-1", "m10-1-3", "m10-1-fragmented", "race-w", "race-a", "race-b", "race-t"];

/// The default hosts in order (the first founds the cluster).
pub const DEFAULT_HOSTS: [&str; 5] = ["m10-1-1", "m10-1-2", "t4-1", "m10-1-3", "m10-1-fragmented"];

/// The options of a random run with `hosts` hosts (3 to 5) and `faults_ms` of faults.
pub fn options(hosts: usize, faults_ms: u64) -> Options {
    let hosts = hosts.clamp(3, DEFAULT_HOSTS.len());
    Options {
        layouts: DEFAULT_HOSTS[..hosts].iter().map(|n| cluster::seed_layout(n)).collect(),
        faults_ms,
        ..Options::default()
    }
}

/// The command that replays `report`'s run.
pub fn replay_command(report: &RunReport, hosts: usize, faults_ms: u64) -> String {
    let mut cmd = format!("cargo run -p tern-chaos -- --seed {}", report.seed);
    match &report.scenario {
        Some(s) => cmd.push_str(&format!(" --scenario {s}")),
        None => {
            let d = Options::default();
            if hosts != d.layouts.len() {
                cmd.push_str(&format!(" --hosts {hosts}"));
            }
            if faults_ms != d.faults_ms {
                cmd.push_str(&format!(" --faults-ms {faults_ms}"));
            }
        }
    }
    cmd
}

/// A report as the CLI and the tests print it: one line when it passed; the
/// problem, the replay command and the fault log when it failed.
pub fn describe(report: &RunReport, replay: &str) -> String {
    let what = report.scenario.as_deref().map(|s| format!(" [{s}]")).unwrap_or_default();
    let stats = format!(
        "sim {:.1} s, {} steps, {:.1} s real, {} acks, {} migrations",
        report.sim_ms as f64 / 1000.0,
        report.steps,
        report.real.as_secs_f64(),
        report.history.acks.len(),
        report.history.migrations.len()
    );
    match &report.failure {
        None => format!(
            "seed {}{what}: ok (healed in {}, {stats}, digest {:016x})",
            report.seed,
            report.heal_ms.map_or("-".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
            report.digest
        ),
        Some(f) => {
            let mut out =
                format!("seed {}{what}: FAILED {}\n  replay: {replay}\n  ({stats})\n", report.seed, f.headline());
            for line in f.details().iter().take(20) {
                out.push_str(&format!("  | {line}\n"));
            }
            out.push_str("  faults and milestones:\n");
            for (t, w) in &report.nemesis_log {
                out.push_str(&format!("    {t:>7} ms  {w}\n"));
            }
            out
        }
    }
}
