//! Migration benchmark on a loopback cluster of real ternd processes:
//! - the control path of one migration (target Prepare with authentication and
//!   preflight, a Raft-committed Reserve, the commit) measured as dry runs, p50/p99;
//! - migrations per second when 16 run at once, from 4 sources to 4 different targets
//!   (the simulated transfer sped up 100000x, so the control path dominates).
//!
//! Run: `cargo bench -p tern-tests --bench migration` (TERN_BENCH_DRY_RUNS sets the count).
//! `TERN_BENCH_TRACES=1` runs the same with every agent exporting traces (sampling
//! every trace) and metrics over OTLP to an in-process receiver: the cost of the
//! instrumentation on the hot path is the difference between the two runs.

use std::time::{Duration, Instant};
use tern_proto::v1::migrate_event::Event;
use tern_tests::Cluster;

const PW: &str = "bench-pass";

/// A 16-core, 64 GB M10-1 with `guests` one-core, 1 GB guests named `{prefix}{j}`.
fn layout(prefix: &str, guests: usize) -> String {
    tern_tests::layouts::synthetic(prefix, guests, 16, 64)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dry_runs: usize = std::env::var("TERN_BENCH_DRY_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(50);
    let layouts = tempfile::tempdir().unwrap();
    let mut c = Cluster::new();
    c.time_scale = 100_000;
    let traces = std::env::var("TERN_BENCH_TRACES").is_ok_and(|v| v == "1");
    let receiver = if traces { Some(tern_tests::otlp::receiver().await) } else { None };
    if let Some((_, endpoint)) = &receiver {
        c.extra_config = format!("[telemetry]\notlp_endpoint = \"{endpoint}\"\nsample_ratio = 1.0\n");
    }
    println!("traces and OTLP metrics export: {}", if traces { "on (every trace sampled)" } else { "off" });
    let mut first = None;
    for i in 0..4 {
        for (name, guests) in [(format!("src-{i}"), 4), (format!("dst-{i}"), 0)] {
            let path = layouts.path().join(format!("{name}.toml"));
            std::fs::write(&path, layout(&format!("g{i}-"), guests)).unwrap();
            let join: Vec<String> = first.iter().cloned().collect();
            let idx = c.add_layout(&name, &path, &join);
            let addr = c.start(idx);
            first.get_or_insert(addr);
        }
    }
    c.wait_status(0, "8 members", |s| s.leader_id != 0 && s.members.len() == 8).await;
    c.wait_domains(0, 8 + 16).await;
    c.add_user("root", PW, &["System Administrator"]).await;
    let src = c.host("src-0");

    let mut latencies = Vec::with_capacity(dry_runs);
    for _ in 0..dry_runs {
        let t = Instant::now();
        let s = c.migrate(src, "g0-0", "dst-0", "", true, "root", PW).await.unwrap();
        match Cluster::outcome(s).await.unwrap() {
            Event::Report(_) => latencies.push(t.elapsed()),
            other => panic!("dry run refused: {other:?}"),
        }
    }
    latencies.sort();
    println!(
        "control path (dry run: prepare + reserve + commit), {dry_runs} runs: p50 {:.1} ms, p99 {:.1} ms",
        percentile(&latencies, 0.5).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3
    );

    let t = Instant::now();
    let mut runs = Vec::new();
    for i in 0..4 {
        for j in 0..4 {
            let (c, s) = (&c, c.host(&format!("src-{i}")));
            runs.push(async move {
                let stream =
                    c.migrate(s, &format!("g{i}-{j}"), &format!("dst-{j}"), "", false, "root", PW).await.unwrap();
                matches!(Cluster::outcome(stream).await.unwrap(), Event::Report(_))
            });
        }
    }
    let done = futures_util::future::join_all(runs).await;
    let elapsed = t.elapsed();
    let ok = done.iter().filter(|x| **x).count();
    println!(
        "16 concurrent migrations (4 sources -> 4 targets): {ok} committed in {:.2} s = {:.1} migrations/s",
        elapsed.as_secs_f64(),
        ok as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(ok, 16, "every migration commits");
    if let Some((collected, _)) = receiver {
        // Spans leave every EXPORT_EVERY; the count shows the export was really on.
        let spans = collected.spans.lock().unwrap().len();
        println!("spans received so far: {spans}");
    }
}
