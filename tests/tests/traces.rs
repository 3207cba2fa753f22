//! End to end: with `[telemetry] otlp_endpoint` set, one migration is one trace across
//! its source, the leader and its target (W3C trace context over every gRPC hop), and
//! each agent pushes its `/metrics` values over OTLP. The collector is an in-test
//! OTLP/gRPC receiver built from `opentelemetry-proto`'s service definitions.

use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::Span;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use tern_proto::v1::migrate_event::Event;
use tern_tests::otlp::{Got, Push, receiver, string};
use tern_tests::{Cluster, WAIT};

const PW: &str = "s3cret-pass";

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(string)
}

/// The trace as an indented tree (host, name, attributes that matter), for failures.
fn tree(spans: &[Got]) -> String {
    let ids: BTreeSet<&[u8]> = spans.iter().map(|g| g.span.span_id.as_slice()).collect();
    let mut out = String::new();
    fn walk(spans: &[Got], parent: &[u8], depth: usize, out: &mut String) {
        for g in spans.iter().filter(|g| g.span.parent_span_id == parent) {
            out.push_str(&format!("{:indent$}{} [{}]\n", "", g.span.name, g.host, indent = depth * 2));
            walk(spans, &g.span.span_id, depth + 1, out);
        }
    }
    for root in spans.iter().filter(|g| !ids.contains(g.span.parent_span_id.as_slice())) {
        out.push_str(&format!("{} [{}] parent={:02x?}\n", root.span.name, root.host, root.span.parent_span_id));
        walk(spans, &root.span.span_id, 1, &mut out);
    }
    out
}

/// The sum over the agents' last pushes of the points of counter `name` (OTLP names a
/// counter without `_total`).
fn last_sum(pushes: &[Push], name: &str) -> f64 {
    let mut last: BTreeMap<&str, &Vec<Metric>> = BTreeMap::new();
    for (host, metrics) in pushes {
        last.insert(host, metrics);
    }
    last.values()
        .flat_map(|m| m.iter().filter(|m| m.name == name))
        .map(|m| match &m.data {
            Some(metric::Data::Sum(s)) => s
                .data_points
                .iter()
                .map(|p| match p.value {
                    Some(number_data_point::Value::AsDouble(v)) => v,
                    Some(number_data_point::Value::AsInt(v)) => v as f64,
                    None => 0.0,
                })
                .sum(),
            Some(metric::Data::Histogram(h)) => h.data_points.iter().map(|p| p.count as f64).sum(),
            _ => 0.0,
        })
        .sum()
}

/// SIGTERM to agent `i`, then waits for its exit (a clean stop flushes both exports).
fn stop(c: &mut Cluster, i: usize) {
    let Some(mut child) = c.agents[i].child.take() else { return };
    let status = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(status.success(), "kill -TERM {}", child.id());
    let start = Instant::now();
    loop {
        if let Some(exit) = child.try_wait().unwrap() {
            assert!(exit.success(), "{} exited {exit} after SIGTERM:\n{}", c.agents[i].name, c.log(i));
            return;
        }
        assert!(start.elapsed() < WAIT, "{} did not stop after SIGTERM", c.agents[i].name);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_migration_is_one_trace_across_source_leader_and_target() {
    // Goal: the spans of ldom1's migration from m10-1-1 to m10-1-2, with m10-1-3 leading,
    // share one trace id and come from all three agents; every span's parent is in the
    // trace but the root's (the source's `migration`); the target's and the leader's
    // server spans hang under the calling agent's spans; each phase has its span; and the
    // agents' last metric pushes count the migration.
    let (collected, endpoint) = receiver().await;
    let extra = format!("[telemetry]\notlp_endpoint = \"{endpoint}\"\nsample_ratio = 1.0\n");
    // The first agent bootstraps and leads: neither the source nor the target.
    let mut c = Cluster::with_layouts_and(&["m10-1-3", "m10-1-1", "m10-1-2"], 50, &extra).await;
    let leader = c.wait_status(0, "a leader", |s| s.leader_id != 0).await;
    assert_eq!(c.index_of(&leader, leader.leader_id), 0, "m10-1-3 leads (it bootstrapped the cluster)");
    c.add_user("root", PW, &["System Administrator"]).await;

    let s = c.migrate(c.host("m10-1-1"), "ldom1", "m10-1-2", "", false, "root", PW).await.unwrap();
    let outcome = Cluster::outcome(s).await.unwrap();
    assert!(matches!(outcome, Event::Report(_)), "the migration did not complete: {outcome:?}");
    let still = c.status(0).await.unwrap();
    assert_eq!(still.leader_id, leader.leader_id, "the leader changed during the migration");

    // A clean stop sends what each exporter still holds.
    for i in [1, 2, 0] {
        stop(&mut c, i);
    }

    let spans = collected.spans.lock().unwrap().clone();
    let roots: Vec<&Got> =
        spans.iter().filter(|g| g.span.name == "migration" && g.span.parent_span_id.is_empty()).collect();
    assert_eq!(roots.len(), 1, "one migration root span, got {}:\n{}", roots.len(), tree(&spans));
    let root = roots[0];
    assert_eq!(root.host, "m10-1-1", "the migration span is the source's");
    assert_eq!(attr(&root.span, "domain").as_deref(), Some("ldom1"));
    let trace: Vec<Got> = spans.iter().filter(|g| g.span.trace_id == root.span.trace_id).cloned().collect();
    let shown = tree(&trace);
    println!("the migration's trace, {} spans:\n{shown}", trace.len());

    let hosts: BTreeSet<&str> = trace.iter().map(|g| g.host.as_str()).collect();
    assert_eq!(hosts, BTreeSet::from(["m10-1-1", "m10-1-2", "m10-1-3"]), "the trace's agents:\n{shown}");

    // No span of the trace points at a parent outside it, and there is a single root.
    let by_id: BTreeMap<&[u8], &Got> = trace.iter().map(|g| (g.span.span_id.as_slice(), g)).collect();
    let orphans: Vec<&str> = trace
        .iter()
        .filter(|g| !g.span.parent_span_id.is_empty() && !by_id.contains_key(g.span.parent_span_id.as_slice()))
        .map(|g| g.span.name.as_str())
        .collect();
    assert!(orphans.is_empty(), "spans whose parent is not in the trace: {orphans:?}\n{shown}");
    assert_eq!(trace.iter().filter(|g| g.span.parent_span_id.is_empty()).count(), 1, "one root:\n{shown}");

    // The source's phases, each a child of the migration.
    let children_of = |parent: &Got| -> BTreeSet<String> {
        trace.iter().filter(|g| g.span.parent_span_id == parent.span.span_id).map(|g| g.span.name.clone()).collect()
    };
    let phases = children_of(root);
    for phase in ["begin", "prepare", "transfer", "commit", "finish"] {
        assert!(phases.contains(phase), "no {phase:?} phase under the migration: {phases:?}\n{shown}");
    }

    // The target's Prepare handler runs under the source's `prepare`, and reserves there.
    let parent = |g: &Got| by_id.get(g.span.parent_span_id.as_slice()).copied();
    let prepare_rpc = trace
        .iter()
        .find(|g| g.span.name == "tern.v1.Migration/Prepare")
        .unwrap_or_else(|| panic!("no Prepare server span:\n{shown}"));
    assert_eq!(prepare_rpc.host, "m10-1-2", "Prepare is served by the target");
    assert_eq!(attr(&prepare_rpc.span, "rpc.method").as_deref(), Some("Prepare"));
    let caller = parent(prepare_rpc).expect("Prepare's parent");
    assert_eq!((caller.host.as_str(), caller.span.name.as_str()), ("m10-1-1", "prepare"), "{shown}");
    let under_target: BTreeSet<String> =
        trace.iter().filter(|g| g.host == "m10-1-2").map(|g| g.span.name.clone()).collect();
    for name in ["incoming", "reserve", "receive"] {
        assert!(under_target.contains(name), "no {name:?} span on the target: {under_target:?}\n{shown}");
    }

    // The leader serves the proposals of both the source (begin, commit) and the target
    // (its reservation), each under the proposing agent's span.
    let proposals: Vec<&Got> = trace.iter().filter(|g| g.span.name == "tern.v1.Cluster/Propose").collect();
    assert!(proposals.iter().all(|g| g.host == "m10-1-3"), "Propose is served by the leader:\n{shown}");
    let proposers: BTreeSet<(String, String)> =
        proposals.iter().filter_map(|g| parent(g)).map(|p| (p.host.clone(), p.span.name.clone())).collect();
    for (host, span) in [("m10-1-1", "begin"), ("m10-1-2", "reserve"), ("m10-1-1", "commit")] {
        let found = proposers.iter().any(|(h, s)| h == host && s == span)
            || proposals.iter().any(|g| {
                // A proposal may sit under a span nested in the phase (a retry, a call).
                let mut at = parent(g);
                while let Some(p) = at {
                    if p.host == host && p.span.name == span {
                        return true;
                    }
                    at = parent(p);
                }
                false
            });
        assert!(found, "no Propose on the leader under {host}'s {span:?}: {proposers:?}\n{shown}");
    }
    let commands: BTreeSet<String> = proposals.iter().filter_map(|g| attr(&g.span, "tern.command")).collect();
    for command in ["begin-operation", "reserve", "commit-migration"] {
        assert!(commands.iter().any(|c| c == command), "no proposal of {command}: {commands:?}\n{shown}");
    }

    // Heartbeats and Raft messages stay out of traces.
    let noise: Vec<&str> = spans
        .iter()
        .map(|g| g.span.name.as_str())
        .filter(|n| n.starts_with("tern.v1.Raft/") || *n == "tern.v1.Cluster/Heartbeat")
        .collect();
    assert!(noise.is_empty(), "untraced calls exported: {noise:?}");

    // Metrics over OTLP: each agent pushed, and the last pushes count the migration.
    let pushes = collected.metrics.lock().unwrap().clone();
    let pushed: BTreeSet<&str> = pushes.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(pushed, BTreeSet::from(["m10-1-1", "m10-1-2", "m10-1-3"]), "agents that pushed metrics");
    assert_eq!(last_sum(&pushes, "tern_migrations_started"), 1.0, "tern_migrations_started over OTLP");
    assert_eq!(last_sum(&pushes, "tern_migration_duration_seconds"), 1.0, "migration duration histogram count");
    let names: BTreeSet<&str> = pushes.iter().flat_map(|(_, m)| m.iter().map(|m| m.name.as_str())).collect();
    for name in ["tern_raft_term", "tern_host_free_cores", "tern_grpc_server_handled", "tern_build_info"] {
        assert!(names.contains(name), "{name} was not pushed: {names:?}");
    }
}
