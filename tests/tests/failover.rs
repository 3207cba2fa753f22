//! HA end to end (SPEC HA-01..HA-09) on real processes: three `ternd`s on simulated
//! servers, the lost one behind a simulated BMC (`ipmi_sim`) that Debian's
//! `fence_ipmilan` powers off; its chassis-control script cuts the simulated server's
//! power (`ternctl sim power-off`), which stops the guests its dead control domain
//! left running.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tern_proto::v1 as pb;
use tern_tests::bmc::{Bmc, PASSWORD};
use tern_tests::{Cluster, WAIT, binary};

/// Polls `check` until it yields a value, within [`WAIT`].
async fn wait_for<T, F, Fut>(what: &str, c: &Cluster, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < WAIT {
        match check().await {
            Ok(v) => return v,
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs: String = (0..c.agents.len()).map(|i| format!("--- {}\n{}\n", c.agents[i].name, c.log(i))).collect();
    panic!("waited {WAIT:?} for {what}; last: {last}\n{logs}");
}

fn ha_section(fences: &str) -> String {
    format!(
        "[ha]\nheartbeat_interval_ms = 200\nsuspect_after_ms = 1000\nlost_after_ms = 2500\nfence_retry_ms = 500\n\
fence_retry_max_ms = 2000\nrestart_lease_ms = 30000\n{fences}"
    )
}

fn fence_entry(host: &str, bmc: &Bmc, password_file: &Path) -> String {
    format!(
        "[[ha.fence]]\nhost = \"{host}\"\nip = \"127.0.0.1\"\nipport = {port}\nusername = \"admin\"\n\
password_file = \"{pw}\"\ncipher = 3\ndeadline_ms = 20000\nattempts = 2\n",
        port = bmc.port,
        pw = password_file.display()
    )
}

async fn ha_status(c: &Cluster, i: usize) -> Result<pb::HaStatusResponse, String> {
    let mut ha = pb::ha_client::HaClient::new(c.channel(i).await);
    ha.status(pb::HaStatusRequest {}).await.map(|r| r.into_inner()).map_err(|e| e.to_string())
}

fn guest<'a>(domains: &'a [pb::DomainInfo], name: &str) -> Option<&'a pb::DomainInfo> {
    domains.iter().find(|d| d.name == name)
}

/// Waits until ldom1 is active on a host other than `lost`, as agent `asker` sees it;
/// returns that host.
async fn restarted_elsewhere(c: &Cluster, asker: usize, lost: &str) -> String {
    wait_for("ldom1 active on another host", c, || async {
        let domains = c.domains(asker).await.map_err(|e| e.to_string())?;
        match guest(&domains, "ldom1") {
            Some(d) if d.host != lost && d.state == "active" => Ok(d.host.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

/// A member other than `host`'s agent, to ask while `host` is down.
fn other(c: &Cluster, host: &str) -> usize {
    (0..c.agents.len()).find(|i| c.agents[*i].name != host).expect("another agent")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_control_domain_is_fenced_by_ipmi_and_its_guest_restarts_elsewhere_once() {
    // Goal: HA-01..HA-04, HA-09: kill -9 m10-1-1's agent (ldom1 keeps running on its server); the leader declares it lost,
    // fence_ipmilan powers it off through the BMC, ldom1 restarts on another server from its reservation, and the
    // returning agent unbinds its old copy and never starts it.
    let lost = "m10-1-1";
    let work = tempfile::tempdir().unwrap();
    let pidfile = work.path().join("ternd.pid");
    let password_file = work.path().join("bmc.pass");
    std::fs::write(&password_file, format!("{PASSWORD}\n")).unwrap();
    std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The agent's folder is known only once the cluster exists: the chassis script reads it from a file.
    let state_link = work.path().join("state-file");
    let power_off = format!(
        "kill -9 \"$(cat {pid})\" 2>/dev/null; {ternctl} sim power-off --state \"$(cat {state})\"",
        pid = pidfile.display(),
        ternctl = binary("ternctl").display(),
        state = state_link.display()
    );
    let bmc = Bmc::start(&power_off);
    bmc.wait_answering().await;
    let extra = ha_section(&fence_entry(lost, &bmc, &password_file));
    let mut c = Cluster::with_layouts_and(&["m10-1-1", "m10-1-2", "m10-1-3"], 50, &extra).await;
    let victim = c.host(lost);
    let state_file = c.agents[victim].dir.join("data/sim-state.json");
    std::fs::write(&state_link, state_file.display().to_string()).unwrap();
    let pid = c.agents[victim].child.as_ref().expect("running").id();
    std::fs::write(&pidfile, pid.to_string()).unwrap();
    let asker = other(&c, lost);
    let mut ha = pb::ha_client::HaClient::new(c.channel(asker).await);
    ha.set_domain(pb::HaSetDomainRequest { domain: "ldom1".into(), ha_priority: "high".into(), ..Default::default() })
        .await
        .unwrap();
    let bad = ha
        .set_domain(pb::HaSetDomainRequest {
            domain: "ldom1".into(),
            ha_priority: "urgent".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(bad.unwrap_err().code(), tonic::Code::InvalidArgument);
    let refused = ha.set_host(pb::HaSetHostRequest { host: lost.into(), status: "fenced".into() }).await.unwrap_err();
    assert!(refused.message().contains("only a lost host"), "{refused:?}");

    // The control domain dies; its guest keeps running on the server (HA-02's premise).
    c.kill(victim);
    let running = tern_hypervisor::sim::running_guests(&state_file).unwrap();
    assert_eq!(running, ["ldom1"]);

    // Lost, fenced by power, restarted elsewhere.
    let target = restarted_elsewhere(&c, asker, lost).await;
    assert!(bmc.file("calls.log").contains("set power 0"), "{}", bmc.file("calls.log"));
    assert!(tern_hypervisor::sim::running_guests(&state_file).unwrap().is_empty(), "{}", bmc.file("power-off.log"));
    let status = wait_for("the failover complete", &c, || async {
        let s = ha_status(&c, asker).await?;
        let h = s.hosts.iter().find(|h| h.host == lost).ok_or("no host")?;
        if h.status == "fenced" && h.operation_id == 0 { Ok(s) } else { Err(format!("{h:?}")) }
    })
    .await;
    assert_eq!(status.mode, "restart");
    let ops = c.operations(asker).await;
    let failover = ops.iter().find(|o| o.kind == "failover").expect("a failover operation");
    assert_eq!(failover.phase, "done", "{failover:?}");
    let notes = failover.report.as_ref().map(|r| r.notes.join("\n")).unwrap_or_default();
    assert!(notes.contains(&format!("HA-04: ldom1 restarted on {target}")), "{notes}");
    let target_state = c.agents[c.host(&target)].dir.join("data/sim-state.json");
    assert_eq!(tern_hypervisor::sim::running_guests(&target_state).unwrap(), ["ldom1"]);

    // The server is powered on again: its agent never starts ldom1 (HA-09) and drops its old copy.
    c.start(victim);
    wait_for("the returned server without ldom1", &c, || async {
        let inv = tern_hypervisor::sim::running_guests(&state_file).map_err(|e| e.to_string())?;
        let text = std::fs::read_to_string(&state_file).map_err(|e| e.to_string())?;
        if inv.is_empty() && !text.contains("\"ldom1\"") { Ok(()) } else { Err(format!("running {inv:?}")) }
    })
    .await;
    let mut ha = pb::ha_client::HaClient::new(c.channel(asker).await);
    let up = ha.set_host(pb::HaSetHostRequest { host: lost.into(), status: "up".into() }).await.unwrap();
    assert_eq!(up.into_inner().status, "up");
    let domains = c.domains(asker).await.unwrap();
    assert_eq!(guest(&domains, "ldom1").map(|d| d.host.as_str()), Some(target.as_str()));
    let restarts = ops.iter().filter(|o| o.kind == "failover").count();
    assert_eq!(restarts, 1, "{ops:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_fence_the_guests_wait_until_an_admin_confirms_the_server_off() {
    // Goal: HA-02: no power fence configured: the lost host's guest stays put, reported "awaiting fence"; the
    // admin's `host fence --confirm-off` lets it restart.
    let lost = "m10-1-1";
    let mut c = Cluster::with_layouts_and(&["m10-1-1", "m10-1-2", "m10-1-3"], 50, &ha_section("")).await;
    let victim = c.host(lost);
    let asker = other(&c, lost);
    c.kill(victim);
    let awaiting = wait_for("the failover awaiting a fence", &c, || async {
        let s = ha_status(&c, asker).await?;
        let h = s.hosts.iter().find(|h| h.host == lost).ok_or("no host")?.clone();
        if h.fence == "awaiting fence" { Ok(h) } else { Err(format!("{h:?}")) }
    })
    .await;
    assert!(awaiting.fence_detail.contains("ternctl host fence --confirm-off m10-1-1"), "{awaiting:?}");
    let metrics = c.metrics(asker).await;
    assert!(metrics.contains("tern_host_status{host=\"m10-1-1\",status=\"lost\"} 1"), "{metrics}");
    assert!(metrics.contains("tern_ha_failovers_running 1"), "{metrics}");
    let domains = c.domains(asker).await.unwrap();
    assert_eq!(guest(&domains, "ldom1").map(|d| d.host.as_str()), Some(lost));
    // The CLI: ha status exits 1 while a guest waits for its fence.
    let ctl = |args: &[&str]| {
        std::process::Command::new(binary("ternctl"))
            .args(["--agent", &c.addr(asker), "--certs-dir"])
            .arg(&c.certs)
            .args(args)
            .output()
            .unwrap()
    };
    let out = ctl(&["ha", "status"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("awaiting fence"));
    let out = ctl(&["host", "fence", "--confirm-off", lost]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    restarted_elsewhere(&c, asker, lost).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_hand_off_mode_the_fenced_host_and_its_guests_go_to_the_command_as_json() {
    // Goal: HA-06: with mode = "hand-off", once the lost host is fenced (here by the admin), the configured command
    // gets the host and its guests as JSON on stdin, nothing restarts, and its exit status ends the failover.
    let lost = "m10-1-1";
    let work = tempfile::tempdir().unwrap();
    let got = work.path().join("handed-off.json");
    let command = work.path().join("hand-off.sh");
    tern_tests::bmc::write_exec(&command, &format!("#!/bin/sh\ncat > {}\necho taken over\n", got.display()));
    let extra = ha_section("").replace(
        "[ha]\n",
        &format!(
            "[ha]\nmode = \"hand-off\"\nhand_off_command = \"{}\"\nhand_off_deadline_ms = 10000\n",
            command.display()
        ),
    );
    let mut c = Cluster::with_layouts_and(&["m10-1-1", "m10-1-2", "m10-1-3"], 50, &extra).await;
    let victim = c.host(lost);
    let asker = other(&c, lost);
    c.kill(victim);
    wait_for("the host lost and awaiting a fence", &c, || async {
        let s = ha_status(&c, asker).await?;
        let h = s.hosts.iter().find(|h| h.host == lost).ok_or("no host")?;
        if h.fence == "awaiting fence" { Ok(()) } else { Err(format!("{h:?}")) }
    })
    .await;
    let mut ha = pb::ha_client::HaClient::new(c.channel(asker).await);
    ha.set_host(pb::HaSetHostRequest { host: lost.into(), status: "fenced".into() }).await.unwrap();
    let json: serde_json::Value = wait_for("the hand-off command's input", &c, || async {
        let text = std::fs::read_to_string(&got).map_err(|e| e.to_string())?;
        serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))
    })
    .await;
    assert_eq!(json["host"], lost);
    assert_eq!(json["status"], "fenced");
    assert_eq!(json["guests"][0]["name"], "ldom1");
    assert_eq!(json["guests"][0]["ha_priority"], "medium");
    assert_eq!(json["guests"][0]["memory_bytes"], 16 * 1024 * 1024 * 1024u64);
    let op = wait_for("the failover ended by the command's exit", &c, || async {
        let ops = c.operations(asker).await;
        match ops.into_iter().find(|o| o.kind == "failover") {
            Some(o) if o.phase == "done" => Ok(o),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let notes = op.report.map(|r| r.notes.join("\n")).unwrap_or_default();
    assert!(notes.contains("HA-06: handed off to") && notes.contains("taken over"), "{notes}");
    let domains = c.domains(asker).await.unwrap();
    assert_eq!(guest(&domains, "ldom1").map(|d| d.host.as_str()), Some(lost), "nothing restarts in hand-off mode");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_cut_off_from_the_cluster_stops_its_guests_after_the_isolation_timeout() {
    // Goal: HA-03: m10-1-1's agent, alone once the other two are gone, stops ldom1 after isolation_timeout_ms.
    let extra = ha_section("").replace("[ha]\n", "[ha]\nisolation_timeout_ms = 1500\n");
    let mut c = Cluster::with_layouts_and(&["m10-1-1", "m10-1-2", "m10-1-3"], 50, &extra).await;
    let alone = c.host("m10-1-1");
    let state_file = c.agents[alone].dir.join("data/sim-state.json");
    assert_eq!(tern_hypervisor::sim::running_guests(&state_file).unwrap(), ["ldom1"]);
    for name in ["m10-1-2", "m10-1-3"] {
        let i = c.host(name);
        c.kill(i);
    }
    wait_for("ldom1 stopped by the isolation response", &c, || async {
        let running = tern_hypervisor::sim::running_guests(&state_file).map_err(|e| e.to_string())?;
        if running.is_empty() { Ok(()) } else { Err(format!("running {running:?}")) }
    })
    .await;
    assert!(c.log(alone).contains("HA-03: isolated from the cluster; stopping guests"), "{}", c.log(alone));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slave_of_a_failed_control_domain_restarts_without_a_fence_once_it_counts_stopped() {
    // Goal: HA-08 (with HA-03): no power fence; the agents declare an isolation response and a watchdog, m10-1-1's
    // primary has failure-policy stop and ldom1 is its slave. Its control domain fails (ternd killed, the hypervisor
    // stops ldom1): ldom1 is reported waiting until lost + max(isolation, watchdog) + margin, then restarts
    // elsewhere while m10-1-1 is still only lost, never fenced.
    let lost = "m10-1-1";
    let work = tempfile::tempdir().unwrap();
    let seed = std::fs::read_to_string(tern_tests::layout(lost)).unwrap();
    let with_dependency = seed
        .replacen("kind = \"control\"\n", "kind = \"control\"\nfailure_policy = \"stop\"\n", 1)
        .replacen("name = \"ldom1\"\n", "name = \"ldom1\"\nmasters = [\"primary\"]\n", 1);
    assert_ne!(seed, with_dependency);
    let path = work.path().join(format!("{lost}.toml"));
    std::fs::write(&path, with_dependency).unwrap();
    let extra = ha_section("").replace(
        "[ha]\n",
        "[ha]\nisolation_timeout_ms = 1500\nwatchdog_timeout_ms = 2000\nself_stop_margin_ms = 500\n",
    );
    let servers =
        [(lost, path), ("m10-1-2", tern_tests::layout("m10-1-2")), ("m10-1-3", tern_tests::layout("m10-1-3"))];
    let mut c = Cluster::with_layout_files_and(&servers, 50, &extra).await;
    let victim = c.host(lost);
    let asker = other(&c, lost);
    let state_file = c.agents[victim].dir.join("data/sim-state.json");
    c.kill(victim);
    let out = std::process::Command::new(binary("ternctl"))
        .args(["sim", "crash-control-domain", "--state"])
        .arg(&state_file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("stopped by failure-policy: ldom1"));
    let waiting = wait_for("ldom1 reported as not yet counted stopped", &c, || async {
        let s = ha_status(&c, asker).await?;
        let h = s.hosts.iter().find(|h| h.host == lost).ok_or("no host")?;
        match h.not_stopped.first() {
            Some(line) => Ok(line.clone()),
            None => Err(format!("{h:?}")),
        }
    })
    .await;
    assert!(waiting.starts_with("ldom1: ") && waiting.contains("counts stopped"), "{waiting}");
    let domains = c.domains(asker).await.unwrap();
    assert_eq!(guest(&domains, "ldom1").map(|d| d.host.as_str()), Some(lost), "not before it counts stopped");
    restarted_elsewhere(&c, asker, lost).await;
    let s = ha_status(&c, asker).await.unwrap();
    let h = s.hosts.iter().find(|h| h.host == lost).expect("host");
    assert_eq!(h.status, "lost", "restarted without a fence: {h:?}");
    assert!(tern_hypervisor::sim::running_guests(&state_file).unwrap().is_empty(), "one copy only");
}
