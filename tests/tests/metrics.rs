//! End to end: what `/metrics` counts on real agents: migrations by result with their
//! duration, downtime and memory, reservations by how they end, proposals, the store's
//! fsyncs, leader changes and every gRPC call by method and code.

use std::time::{Duration, Instant};
use tern_proto::v1::migrate_event::Event;
use tern_tests::Cluster;

const PW: &str = "s3cret-pass";

/// The sum over every agent of the samples of `series` (a name with its labels
/// exactly as encoded, e.g. `tern_migrations_finished_total{result="done"}`).
async fn total(c: &Cluster, series: &str) -> f64 {
    let mut sum = 0.0;
    for i in 0..3 {
        sum += value(&c.metrics(i).await, series);
    }
    sum
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum()
}

/// Waits until the cluster-wide sum of `series` is `want`.
async fn wait_total(c: &Cluster, series: &str, want: f64) {
    let start = Instant::now();
    loop {
        let got = total(c, series).await;
        if got == want {
            return;
        }
        assert!(start.elapsed() < tern_tests::WAIT, "{series} is {got}, not {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_a_refusal_and_a_bad_login_are_counted_once_each() {
    // Goal: counters summed over the agents count each migration once, by its result,
    // and the refusals and the denied login show as gRPC codes.
    let c = Cluster::with_layouts(&["m10-1-1", "m10-1-2", "m10-1-fragmented"], 50).await;
    c.add_user("root", PW, &["System Administrator"]).await;
    let src = c.host("m10-1-1");
    let s = c.migrate(src, "ldom1", "m10-1-fragmented", "", true, "root", PW).await.unwrap();
    assert!(matches!(Cluster::outcome(s).await.unwrap(), Event::Refused(_)));
    let s = c.migrate(src, "ldom1", "m10-1-2", "", false, "root", "wrong").await.unwrap();
    assert_eq!(Cluster::outcome(s).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    let s = c.migrate(src, "ldom1", "m10-1-2", "", false, "root", PW).await.unwrap();
    let Event::Report(report) = Cluster::outcome(s).await.unwrap() else { panic!("no report") };

    wait_total(&c, "tern_migrations_started_total", 3.0).await;
    wait_total(&c, "tern_migrations_finished_total{result=\"done\"}", 1.0).await;
    wait_total(&c, "tern_migrations_finished_total{result=\"failed\"}", 2.0).await;
    wait_total(&c, "tern_migrations_finished_total{result=\"expired\"}", 0.0).await;
    wait_total(&c, "tern_reservations_ended_total{end=\"committed\"}", 1.0).await;
    wait_total(&c, "tern_reservations_created_total", 1.0).await;
    wait_total(&c, "tern_migration_duration_seconds_count", 1.0).await;
    wait_total(&c, "tern_migration_downtime_seconds_count", 1.0).await;
    wait_total(&c, "tern_raft_proposals_total{command=\"commit-migration\",result=\"committed\"}", 1.0).await;
    let downtime = total(&c, "tern_migration_downtime_seconds_sum").await;
    assert!((downtime - report.downtime_ms as f64 / 1000.0).abs() < 1e-6, "{downtime} vs {report:?}");
    let moved = total(&c, "tern_migration_guest_memory_bytes_total").await;
    assert!(moved > 0.0 && moved == (moved as u64) as f64, "{moved}");

    let target = c.host("m10-1-2");
    let on_target = c.metrics(target).await;
    let prepare = "tern_grpc_server_handled_total{grpc_service=\"tern.v1.Migration\",grpc_method=\"Prepare\"";
    assert_eq!(value(&on_target, &format!("{prepare},grpc_code=\"PermissionDenied\"}}")), 1.0, "{on_target}");
    assert!(value(&on_target, &format!("{prepare},grpc_code=\"OK\"}}")) >= 1.0, "{on_target}");
    let migrate = "tern_grpc_server_handled_total{grpc_service=\"tern.v1.Migration\",grpc_method=\"Migrate\"";
    assert_eq!(value(&c.metrics(src).await, &format!("{migrate},grpc_code=\"OK\"}}")), 3.0);

    for i in 0..3 {
        let m = c.metrics(i).await;
        assert!(value(&m, "tern_rocksdb_sync_duration_seconds_count{kind=\"wal\"}") >= 1.0, "agent {i}: {m}");
        assert!(value(&m, "tern_raft_apply_duration_seconds_count") >= 1.0, "agent {i}");
        assert!(value(&m, "tern_raft_leader_changes_total") >= 1.0, "agent {i}");
        assert!(m.contains("tern_build_info{version=\""), "agent {i}");
        assert!(m.trim_end().ends_with("# EOF"), "agent {i}: not OpenMetrics");
    }
}
