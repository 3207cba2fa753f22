//! `ternctl top` (issue 16) on real agents: one plain frame names the leader, every
//! host with its free resources (the seed's layouts), a running migration with its
//! progress bar and then its end; a dead address and a certificate without a profile
//! end with exit 2 and a message that says why.

use std::process::{Command, Output};
use tern_proto::v1 as pb;
use tern_tests::Cluster;

const PW: &str = "s3cret-pass";

/// `ternctl --agent ADDR --certs-dir CERTS [--cert-name NAME] top ARGS...`, stdout a pipe.
fn top(c: &Cluster, addr: &str, cert: &str, args: &[&str]) -> Output {
    Command::new(tern_tests::binary("ternctl"))
        .args(["--agent", addr, "--certs-dir", c.certs.to_str().unwrap(), "--cert-name", cert, "top"])
        .args(args)
        .env_remove("TERN_AGENT")
        .env_remove("TERN_CERTS_DIR")
        .output()
        .expect("running ternctl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The cells of `host`'s row in the hosts table.
fn host_row(frame: &str, host: &str) -> Vec<String> {
    frame
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect::<Vec<_>>())
        .find(|cells| cells.len() == 7 && cells[0] == host)
        .unwrap_or_else(|| panic!("no row for {host} in:\n{frame}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_once_shows_the_leader_and_every_hosts_free_resources() {
    // Goal: a 3-agent cluster's frame names the leader and term, lists each member, and each host's free cores,
    // free memory, largest range, guests and reservations as the seed's layouts have them; without a terminal
    // `top` prints one frame and exits, and --iterations N prints N.
    let c = Cluster::three().await;
    let st = c.status(0).await.unwrap();
    let leader = st.members.iter().find(|m| m.node_id == st.leader_id).unwrap().name.clone();
    let out = top(&c, &c.addr(0), "ternctl", &["--once"]);
    let frame = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{frame}{}", stderr(&out));
    assert!(frame.lines().any(|l| l.starts_with(&format!("leader {leader}  term "))), "{frame}");
    assert!(frame.contains(&format!("{leader} *")), "the leader is starred among the members:\n{frame}");
    for m in &st.members {
        assert!(frame.lines().any(|l| l.contains(&m.address) && l.contains("voter")), "{}:\n{frame}", m.name);
    }
    assert!(!frame.contains("!!"), "every part was read:\n{frame}");
    // m10-1-2: primary's 4 of 16 cores, 55800M free in one range, no guest (deploy/layouts/m10-1-2.toml).
    assert_eq!(host_row(&frame, "m10-1-2"), ["m10-1-2", "up", "12/16", "55800M", "55800M", "0", "0"]);
    let one = host_row(&frame, "m10-1-1");
    assert_eq!((one[1].as_str(), one[2].as_str(), one[3].as_str(), one[5].as_str()), ("up", "8/16", "39416M", "1"));
    let three = host_row(&frame, "m10-1-3");
    assert_eq!((three[1].as_str(), three[5].as_str()), ("up", "1"), "{frame}");
    assert!(frame.contains("RUNNING  none") && frame.contains("REBALANCE  imbalance "), "{frame}");

    let out = top(&c, &c.addr(1), "ternctl", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).matches("tern top  ").count(), 1, "not a terminal: one frame");
    let out = top(&c, &c.addr(2), "ternctl", &["--iterations", "2", "--interval", "200ms"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).matches("tern top  ").count(), 2, "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_shows_a_running_migration_with_its_bar_and_then_its_end() {
    // Goal: during ldom1's transfer the frame shows it under RUNNING with source -> target, its phase and a bar,
    // and the target holds one reservation; once cancelled (OP-09) it is under RECENT and the reservation gone.
    let c = Cluster::with_layouts(&["m10-1-1", "m10-1-2", "m10-1-3"], 2).await;
    c.add_user("root", PW, &["System Administrator"]).await;
    let src = c.host("m10-1-1");
    let mut s = c.migrate(src, "ldom1", "m10-1-2", "", false, "root", PW).await.unwrap();
    Cluster::wait_progress(&mut s, 5).await;
    // The stream runs ahead of the record: the source emits 5% and then proposes it (OP-06); top shows the record.
    c.wait_operations(src, "5% recorded", |ops| ops.iter().any(|o| o.domain == "ldom1" && o.progress_pct >= 5)).await;
    let out = top(&c, &c.addr(src), "ternctl", &["--once"]);
    let frame = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{frame}{}", stderr(&out));
    let row = frame.lines().find(|l| l.contains("migration") && l.contains("ldom1")).unwrap_or_default();
    assert!(row.contains("m10-1-1 -> m10-1-2") && row.contains("transferring  ["), "{frame}");
    let pct: u32 = row.rsplit(']').next().unwrap().trim().trim_end_matches('%').parse().unwrap();
    assert!((5..=100).contains(&pct), "{row}");
    assert_eq!(host_row(&frame, "m10-1-2")[6], "1", "the target holds ldom1's reservation:\n{frame}");

    let mut m = pb::migration_client::MigrationClient::new(c.channel(src).await);
    m.cancel(pb::CancelRequest { operation: "migration".into(), domain: "ldom1".into(), ..Default::default() })
        .await
        .unwrap();
    Cluster::outcome(s).await.unwrap();
    c.wait_operations(src, "the migration cancelled", |ops| ops.iter().any(|o| o.phase == "cancelled")).await;
    let frame = stdout(&top(&c, &c.addr(src), "ternctl", &["--once"]));
    let recent = frame.split("RECENT").nth(1).unwrap_or_else(|| panic!("no RECENT in:\n{frame}"));
    assert!(recent.lines().any(|l| l.contains("ldom1") && l.contains("cancelled")), "{frame}");
    assert!(frame.contains("RUNNING  none"), "{frame}");
    assert_eq!(host_row(&frame, "m10-1-2")[6], "0", "{frame}");
}

#[test]
fn top_once_against_a_dead_address_exits_2_and_says_it_cannot_reach_the_agent() {
    // Goal: nothing listens at the address: exit 2, no frame, and a message naming the address and the refusal.
    let c = Cluster::new();
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let out = top(&c, &dead, "ternctl", &["--once"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{}{err}", stdout(&out));
    assert!(stdout(&out).is_empty(), "{}", stdout(&out));
    assert!(err.starts_with(&format!("ternctl: cannot reach the agent at {dead}: ")), "{err}");
    assert!(err.to_lowercase().contains("connection refused"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_with_a_certificate_without_a_profile_shows_the_servers_permission_denied() {
    // Goal: a user certificate without any profile is refused by the agent (LDoms Review needed): exit 2 with the
    // server's reason and which profile top needs.
    let c = Cluster::three().await;
    tern_tls::issue(&c.certs, "nobody", &tern_tls::Role::User { profiles: vec![] }, Some(1)).unwrap();
    let out = top(&c, &c.addr(0), "nobody", &["--once"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{}{err}", stdout(&out));
    assert!(err.contains(&format!("permission denied by the agent at {}", c.addr(0))), "{err}");
    assert!(err.contains("user nobody lacks the \"LDoms Review\" profile"), "{err}");
}
