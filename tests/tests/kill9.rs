//! End to end (issue 15): `ternd` processes killed with kill -9 under a load of
//! reservations. The store flushes its write-ahead log by hand, so a killed process
//! loses whatever it had not synced, as a power loss would; every write a client was
//! told succeeded must be there after the restarts, on every member.
//!
//! The load: dry-run migrations of ldom1 to m10-1-2, one after another (each reserves
//! concrete cores and memory on the target, then releases them: `Reserve`, `Release`
//! and the operation's records), and HA group changes through another agent. Meanwhile
//! the leader, then the reservations' target, then the leader again are killed and
//! restarted; at the end all three are killed at once and restarted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tern_proto::v1 as pb;
use tern_tests::{Cluster, WAIT};
use tonic::transport::{Channel, Endpoint};

const PW: &str = "s3cret-pass";
/// Acknowledged dry runs to wait for before each kill (under load, not idle).
const ACKS_PER_ROUND: usize = 3;

/// What the load was told succeeded.
#[derive(Default)]
struct Acked {
    /// Dry-run operation ids, from their reports.
    dry_runs: Vec<u64>,
    /// HA groups set on ldom5, in order.
    groups: Vec<String>,
    errors: BTreeMap<String, usize>,
}

fn channel(certs: &std::path::Path, addr: &str, timeout: Duration) -> Channel {
    let tls = tern_tls::TlsFiles::in_dir(certs, "ternctl").client_config().unwrap();
    let ep = Endpoint::from_shared(format!("https://{addr}")).unwrap().tls_config(tls).unwrap();
    ep.connect_timeout(Duration::from_secs(2)).timeout(timeout).connect_lazy()
}

/// One dry run of ldom1 to m10-1-2 through the agent at `addr`: its operation id if
/// the report came back.
async fn dry_run(certs: &std::path::Path, addr: &str) -> Result<u64, String> {
    let mut c = pb::migration_client::MigrationClient::new(channel(certs, addr, Duration::from_secs(20)));
    let req = pb::MigrateRequest {
        domain: "ldom1".into(),
        target: "m10-1-2".into(),
        user: "root".into(),
        password: PW.into(),
        dry_run: true,
        ..Default::default()
    };
    let stream = c.migrate(req).await.map_err(|e| format!("{:?}: {}", e.code(), e.message()))?.into_inner();
    match Cluster::outcome(stream).await {
        Ok(pb::migrate_event::Event::Report(r)) if r.dry_run => Ok(r.operation_id),
        Ok(pb::migrate_event::Event::Refused(r)) => Err(format!(
            "refused: {:?}",
            r.errors.iter().map(|v| format!("{}: {}", v.rule, v.message)).collect::<Vec<_>>()
        )),
        Ok(other) => Err(format!("not a report: {other:?}")),
        Err(e) => Err(format!("{:?}: {}", e.code(), e.message())),
    }
}

async fn set_group(certs: &std::path::Path, addr: &str, group: &str) -> Result<(), String> {
    let mut ha = pb::ha_client::HaClient::new(channel(certs, addr, Duration::from_secs(5)));
    let req =
        pb::HaSetDomainRequest { domain: "ldom5".into(), affinity_group: Some(group.into()), ..Default::default() };
    ha.set_domain(req).await.map(drop).map_err(|e| format!("{:?}: {}", e.code(), e.message()))
}

/// Runs the load until `stop`: dry runs through `addrs[source]`, group changes through
/// `addrs[other]` (addresses stay: a restarted agent binds its old port again).
fn start_load(
    certs: PathBuf,
    addrs: Vec<String>,
    source: usize,
    other: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Acked>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let reservations = {
        let (certs, addr, stop, acked) = (certs.clone(), addrs[source].clone(), stop.clone(), acked.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match dry_run(&certs, &addr).await {
                    Ok(id) => acked.lock().unwrap().dry_runs.push(id),
                    Err(e) => {
                        *acked.lock().unwrap().errors.entry(format!("dry run: {e}")).or_default() += 1;
                        // A member is down or electing: try again shortly.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        })
    };
    let groups = tokio::spawn(async move {
        let mut n = 0;
        while !stop.load(Ordering::SeqCst) {
            n += 1;
            let group = format!("g{n}");
            match set_group(&certs, &addrs[other], &group).await {
                Ok(()) => acked.lock().unwrap().groups.push(group),
                Err(e) => *acked.lock().unwrap().errors.entry(format!("set group: {e}")).or_default() += 1,
            }
            // Paced: a few hundred writes in the run, well within the audit's bound.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    vec![reservations, groups]
}

async fn leader_index(c: &Cluster, ask: usize) -> usize {
    let st = c.wait_status(ask, "a leader", |s| s.leader_id != 0).await;
    c.index_of(&st, st.leader_id)
}

async fn wait_whole(c: &Cluster, i: usize) {
    c.wait_status(i, "3 voters and a leader", |s| {
        s.leader_id != 0 && s.members.iter().filter(|m| m.role == pb::MemberRole::Voter as i32).count() == 3
    })
    .await;
}

async fn wait_acks(acked: &Mutex<Acked>, at_least: usize) {
    let start = Instant::now();
    loop {
        {
            let a = acked.lock().unwrap();
            if a.dry_runs.len() >= at_least {
                return;
            }
            let (n, errors) = (a.dry_runs.len(), &a.errors);
            assert!(start.elapsed() < WAIT * 2, "only {n} dry runs acknowledged; errors {errors:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The acknowledged writes member `i` does not show: dry runs not listed as done, group
/// changes not in its replicated audit log as applied.
async fn missing_on(c: &Cluster, i: usize, acked: &Acked) -> (Vec<u64>, Vec<String>) {
    let ops = c.operations(i).await;
    let done: BTreeMap<u64, &pb::OperationInfo> = ops.iter().map(|o| (o.id, o)).collect();
    let runs = acked
        .dry_runs
        .iter()
        .copied()
        .filter(|id| !done.get(id).is_some_and(|o| o.phase == "done" && o.dry_run))
        .collect();
    let mut cluster = pb::cluster_client::ClusterClient::new(c.channel(i).await);
    let audit = cluster.audit(pb::AuditRequest { limit: 0, ..Default::default() }).await.unwrap().into_inner();
    let applied: std::collections::BTreeSet<&str> = audit
        .entries
        .iter()
        .filter(|e| e.outcome == "ok")
        .filter_map(|e| e.summary.strip_prefix("domain ldom5: affinity-group="))
        .collect();
    let groups = acked.groups.iter().filter(|g| !applied.contains(g.as_str())).cloned().collect();
    (runs, groups)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_kill_9_under_reservation_load() {
    // Goal: killing agents (one at a time, then all at once) while reservations are made
    // and released loses no write that was acknowledged, on any member.
    let mut c = Cluster::three().await;
    c.add_user("root", PW, &["System Administrator"]).await;
    let source = c.host("m10-1-1");
    let target = c.host("m10-1-2");
    let other = c.host("m10-1-3");
    let addrs: Vec<String> = (0..3).map(|i| c.addr(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Acked::default()));
    let load = start_load(c.certs.clone(), addrs, source, other, stop.clone(), acked.clone());

    let mut kills = Vec::new();
    for round in 0..3 {
        let before = acked.lock().unwrap().dry_runs.len();
        wait_acks(&acked, before + ACKS_PER_ROUND).await;
        let victim = if round == 1 { target } else { leader_index(&c, other).await };
        c.kill(victim);
        kills.push(c.agents[victim].name.clone());
        c.start(victim);
        wait_whole(&c, victim).await;
    }
    let before = acked.lock().unwrap().dry_runs.len();
    wait_acks(&acked, before + ACKS_PER_ROUND).await;
    // The whole cluster at once, load still running.
    for i in 0..3 {
        c.kill(i);
    }
    kills.push("all three".into());
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    for i in 0..3 {
        c.start(i);
    }
    for i in 0..3 {
        wait_whole(&c, i).await;
    }

    let acked = std::mem::take(&mut *acked.lock().unwrap());
    println!(
        "kills: {kills:?}; acknowledged: {} dry runs, {} group changes; errors: {:?}",
        acked.dry_runs.len(),
        acked.groups.len(),
        acked.errors
    );
    assert!(acked.dry_runs.len() >= 4 * ACKS_PER_ROUND);
    assert!(!acked.groups.is_empty(), "no group change was acknowledged: {:?}", acked.errors);
    for i in 0..3 {
        let start = Instant::now();
        loop {
            let (runs, groups) = missing_on(&c, i, &acked).await;
            if runs.is_empty() && groups.is_empty() {
                break;
            }
            assert!(
                start.elapsed() < WAIT,
                "{} lost acknowledged writes: dry runs {runs:?}, group changes {groups:?}",
                c.agents[i].name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // No reservation outlives the kills: the target's cores are all free again.
    let start = Instant::now();
    while c.free_cores("m10-1-2").await != 12 {
        assert!(start.elapsed() < WAIT * 2, "m10-1-2's cores stay reserved after the kills");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
