//! B5, failover on real processes: three `ternd`s (default `[ha]` timings: heartbeats
//! every 1 s, lost after 8 s), the lost server behind a simulated BMC (`ipmi_sim`)
//! that Debian's `fence_ipmilan` powers off. For 10 and 100 one-core guests on the
//! lost server, the time from `kill -9` of its agent to: the host recorded Lost; the
//! fence confirmed (host Fenced); every guest's restart committed in Raft (its record
//! on another server); every guest running on its new server (the targets' simulated
//! servers show it active). "fenced -> committed" is the re-placement alone: plans,
//! a Raft `Reserve`, the target's start and a Raft `CommitRestart` per guest.
//!
//! Run: `cargo bench -p tern-tests --bench failover` (`TERN_BENCH_GUESTS=10,100`).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use tern_proto::v1 as pb;
use tern_tests::bmc::{Bmc, PASSWORD};
use tern_tests::{Cluster, binary};

struct Times {
    lost: Option<Duration>,
    fenced: Option<Duration>,
    committed: Option<Duration>,
    started: Option<Duration>,
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.2} s", d.as_secs_f64()))
}

async fn run(guests: usize) -> Times {
    let work = tempfile::tempdir().unwrap();
    let pidfile = work.path().join("ternd.pid");
    let state_link = work.path().join("state-file");
    let password_file = work.path().join("bmc.pass");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let power_off = format!(
        "kill -9 \"$(cat {})\" 2>/dev/null; {} sim power-off --state \"$(cat {})\"",
        pidfile.display(),
        binary("ternctl").display(),
        state_link.display()
    );
    let bmc = Bmc::start(&power_off);
    bmc.wait_answering().await;
    let mut c = Cluster::new();
    c.time_scale = 50;
    c.extra_config = format!(
        "[ha]\n[[ha.fence]]\nhost = \"lost\"\nip = \"127.0.0.1\"\nipport = {}\nusername = \"admin\"\n\
password_file = \"{}\"\ncipher = 3\n",
        bmc.port,
        password_file.display()
    );
    let half = guests.div_ceil(2);
    let layouts = [
        ("t1", tern_tests::layouts::synthetic("t1-", 0, half + 8, half as u64 + 17)),
        ("t2", tern_tests::layouts::synthetic("t2-", 0, half + 8, half as u64 + 17)),
        ("lost", tern_tests::layouts::synthetic("g", guests, guests + 4, guests as u64 + 13)),
    ];
    let mut first = None;
    for (name, text) in &layouts {
        let path = work.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        let join: Vec<String> = first.iter().cloned().collect();
        let i = c.add_layout(name, &path, &join);
        let addr = c.start(i);
        first.get_or_insert(addr);
    }
    c.wait_status(0, "3 voters and a leader", |s| {
        s.leader_id != 0 && s.members.iter().filter(|m| m.role == pb::MemberRole::Voter as i32).count() == 3
    })
    .await;
    c.wait_domains(0, guests + 3).await;
    let victim = c.host("lost");
    std::fs::write(&state_link, c.agents[victim].dir.join("data/sim-state.json").display().to_string()).unwrap();
    std::fs::write(&pidfile, c.agents[victim].child.as_ref().unwrap().id().to_string()).unwrap();
    let targets: Vec<_> = ["t1", "t2"].iter().map(|n| c.agents[c.host(n)].dir.join("data/sim-state.json")).collect();
    let mut ha = pb::ha_client::HaClient::new(c.channel(0).await);
    let t0 = Instant::now();
    c.kill(victim);
    let mut t = Times { lost: None, fenced: None, committed: None, started: None };
    while t0.elapsed() < Duration::from_secs(180) && t.started.is_none() {
        let status = ha.status(pb::HaStatusRequest {}).await.map(|r| r.into_inner());
        let host_status = status.ok().and_then(|s| s.hosts.into_iter().find(|h| h.host == "lost")).map(|h| h.status);
        let now = Some(t0.elapsed());
        if t.lost.is_none() && matches!(host_status.as_deref(), Some("lost" | "fenced")) {
            t.lost = now;
        }
        if t.fenced.is_none() && host_status.as_deref() == Some("fenced") {
            t.fenced = now;
        }
        if t.committed.is_none() {
            let domains = c.domains(0).await.unwrap_or_default();
            let moved = domains.iter().filter(|d| d.name.starts_with('g') && d.host != "lost").count();
            if moved == guests {
                t.committed = now;
            }
        }
        if t.committed.is_some() {
            let running: usize =
                targets.iter().map(|f| tern_hypervisor::sim::running_guests(f).map(|g| g.len()).unwrap_or(0)).sum();
            if running == guests {
                t.started = now;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    t
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let sizes: Vec<usize> = std::env::var("TERN_BENCH_GUESTS")
        .unwrap_or_else(|_| "10,100".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    println!("failover of a lost control domain, fenced by fence_ipmilan through ipmi_sim (lost_after_ms 8000):");
    for n in sizes {
        let t = run(n).await;
        let span = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => format!("{:.2} s", b.saturating_sub(a).as_secs_f64()),
            _ => "-".into(),
        };
        println!(
            "  {n:>3} guests: lost {}, fenced {}, all committed {}, all running {}  (fenced -> committed {})",
            ms(t.lost),
            ms(t.fenced),
            ms(t.committed),
            ms(t.started),
            span(t.fenced, t.committed)
        );
        assert!(t.started.is_some(), "{n} guests: not every guest restarted within 180 s");
    }
}
