//! Day-2 operations on real `ternd` processes (issue 17 item 2): an explicit bootstrap
//! (`bootstrap = "new" | "existing"`, as etcd's initial-cluster-state), members removed
//! for good and let back (`ternctl cluster remove-member | add-member`), and a new
//! cluster from a snapshot (`ternctl cluster snapshot save` / `ternd --restore`).

use std::path::Path;
use std::process::{Command as Process, Output};
use std::time::{Duration, Instant};
use tern_proto::v1 as pb;
use tern_tests::{Cluster, WAIT, binary};
use tonic::Code;

/// Runs `ternctl` against agent `i` as the administrator.
fn ternctl(c: &Cluster, i: usize, args: &[&str]) -> Output {
    Process::new(binary("ternctl"))
        .args(["--agent", &c.addr(i), "--certs-dir"])
        .arg(&c.certs)
        .args(args)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Puts `line` first in agent `i`'s config (top-level keys precede the tables).
fn prepend_config(c: &Cluster, i: usize, line: &str) {
    let path = c.agents[i].dir.join("ternd.toml");
    let old = std::fs::read_to_string(&path).unwrap();
    let kept: String = old.lines().filter(|l| !l.starts_with("bootstrap")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, format!("{line}\n{kept}")).unwrap();
}

/// Runs `ternd --config` of agent `i` (plus `extra` flags) to its exit, within [`WAIT`].
fn ternd_to_exit(c: &Cluster, i: usize, extra: &[&str]) -> Output {
    let mut child = Process::new(binary("ternd"))
        .arg("--config")
        .arg(c.agents[i].dir.join("ternd.toml"))
        .args(extra)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > WAIT {
            let _ = child.kill();
            panic!("ternd {extra:?} did not exit: {}", text(&child.wait_with_output().unwrap()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn member_named<'a>(st: &'a pb::ClusterStatus, name: &str) -> Option<&'a pb::Member> {
    st.members.iter().find(|m| m.name == name)
}

fn voters(st: &pb::ClusterStatus) -> usize {
    st.members.iter().filter(|m| m.role == pb::MemberRole::Voter as i32).count()
}

async fn wait_log(c: &Cluster, i: usize, needle: &str) {
    let start = Instant::now();
    while !c.log(i).contains(needle) {
        assert!(start.elapsed() < WAIT, "{} never logged {needle:?}:\n{}", c.agents[i].name, c.log(i));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_is_explicit_new_founds_once_existing_never_founds() {
    // Goal: `existing` with nobody to join and `new` on a data dir that holds a cluster both refuse to start,
    // naming the fix; `new` founds on an empty dir and `existing` then runs the same member.
    let mut c = Cluster::new();
    let i = c.add("m10-1-2", "m10-1-2", &[]);
    prepend_config(&c, i, "bootstrap = \"existing\"");
    let out = ternd_to_exit(&c, i, &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("nobody to join"), "{}", text(&out));
    assert!(!c.agents[i].dir.join("data/ternd.addr").exists(), "it never served");

    prepend_config(&c, i, "bootstrap = \"new\"");
    c.start(i);
    let first = c.wait_status(i, "a leader", |s| s.leader_id != 0).await;
    c.kill(i);
    let out = ternd_to_exit(&c, i, &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("already holds a cluster"), "{}", text(&out));
    assert!(text(&out).contains("bootstrap = \"existing\""), "{}", text(&out));

    prepend_config(&c, i, "bootstrap = \"existing\"");
    c.start(i);
    let again = c.wait_status(i, "a leader", |s| s.leader_id != 0).await;
    assert_eq!(again.node_id, first.node_id, "the same member, from its data dir");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_member_takes_an_idle_member_out_and_add_member_lets_it_back() {
    // Goal: a member with guests is refused by name; an idle one leaves the membership and the host list, its
    // running agent is kept out, a voter is replaced from the learners, and add-member lets it back.
    let c = Cluster::with_layouts(&["m10-1-1", "m10-1-2", "m10-1-3", "t4-1"], 50).await;
    let asker = c.host("m10-1-3");

    let busy = ternctl(&c, asker, &["cluster", "remove-member", "m10-1-1"]);
    assert_eq!(busy.status.code(), Some(1), "{}", text(&busy));
    assert!(text(&busy).contains("member-busy") && text(&busy).contains("ldom1"), "{}", text(&busy));
    assert!(text(&busy).contains("host evacuate m10-1-1"), "{}", text(&busy));

    tern_tls::issue(&c.certs, "reader", &tern_tls::Role::User { profiles: vec!["ldoms-review".into()] }, Some(1))
        .unwrap();
    let mut reader = pb::cluster_client::ClusterClient::new(c.channel_as(asker, "reader"));
    let denied = reader.remove_member(pb::MemberRequest { name: "m10-1-2".into() }).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    let idle = c.host("m10-1-2");
    let before = c.status(asker).await.unwrap();
    let id = member_named(&before, "m10-1-2").expect("listed").node_id;
    let out = ternctl(&c, asker, &["cluster", "remove-member", "m10-1-2"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("removed m10-1-2") && text(&out).contains("add-member m10-1-2"), "{}", text(&out));
    let after = c
        .wait_status(asker, "m10-1-2 out and 3 voters again", |s| {
            s.members.iter().all(|m| m.node_id != id) && voters(s) == 3 && s.leader_id != 0
        })
        .await;
    assert_eq!(after.members.len(), 3);
    let hosts: Vec<String> = c.domains(asker).await.unwrap().into_iter().map(|d| d.host).collect();
    assert!(!hosts.iter().any(|h| h == "m10-1-2"), "{hosts:?}");
    // Its agent still runs and tries to join: refused, by name.
    wait_log(&c, idle, "was removed from the cluster").await;
    let again = ternctl(&c, asker, &["cluster", "remove-member", "m10-1-2"]);
    assert!(again.status.success() && text(&again).contains("already removed"), "{}", text(&again));

    let out = ternctl(&c, asker, &["cluster", "add-member", "m10-1-2"]);
    assert!(out.status.success() && text(&out).contains("may join again"), "{}", text(&out));
    let start = Instant::now();
    while !c.status(asker).await.is_ok_and(|s| member_named(&s, "m10-1-2").is_some()) {
        assert!(start.elapsed() < WAIT, "m10-1-2 never joined again:\n{}", c.log(idle));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = Instant::now();
    while !c.domains(asker).await.unwrap_or_default().iter().any(|d| d.host == "m10-1-2") {
        assert!(start.elapsed() < WAIT, "m10-1-2 never reported its inventory again:\n{}", c.log(idle));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_save_and_restore_found_a_new_cluster_with_the_same_state() {
    // Goal: a snapshot saved through a follower comes from the leader; `ternd --restore` makes a new one-member
    // cluster holding the same hosts, domains and users; new members join it; a used data dir is refused.
    let mut c = Cluster::three().await;
    c.add_user("alice", "correct horse battery", &["LDoms Management"]).await;
    let st = c.status(0).await.unwrap();
    let follower = (0..3).find(|i| c.index_of(&st, st.leader_id) != *i).unwrap();
    let file = c.tmp.path().join("tern.snap");
    let out = ternctl(&c, follower, &["cluster", "snapshot", "save", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("from the leader"), "{}", text(&out));
    let exists = ternctl(&c, follower, &["cluster", "snapshot", "save", file.to_str().unwrap()]);
    assert!(!exists.status.success() && text(&exists).contains("--force"), "{}", text(&exists));
    let domains_before: Vec<(String, String)> =
        c.domains(0).await.unwrap().into_iter().map(|d| (d.name, d.host)).collect();
    for i in 0..3 {
        c.kill(i);
    }

    let mut r = Cluster::new();
    let first = r.add("m10-1-1", "m10-1-1", &[]);
    prepend_config(&r, first, "bootstrap = \"existing\"");
    let garbage = r.tmp.path().join("garbage.snap");
    std::fs::write(&garbage, b"not a snapshot").unwrap();
    let bad = ternd_to_exit(&r, first, &["--restore", garbage.to_str().unwrap()]);
    assert!(!bad.status.success() && text(&bad).contains("not a tern snapshot"), "{}", text(&bad));
    let out = ternd_to_exit(&r, first, &["--restore", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("3 host(s)") && text(&out).contains("1 user(s)"), "{}", text(&out));
    let twice = ternd_to_exit(&r, first, &["--restore", file.to_str().unwrap()]);
    assert!(!twice.status.success() && text(&twice).contains("already holds a cluster"), "{}", text(&twice));

    r.start(first);
    r.wait_status(first, "the restored member leads", |s| s.leader_id == s.node_id && s.members.len() == 1).await;
    let domains_after: Vec<(String, String)> =
        r.domains(first).await.unwrap().into_iter().map(|d| (d.name, d.host)).collect();
    assert_eq!(domains_after, domains_before);
    let mut users = pb::users_client::UsersClient::new(r.channel(first).await);
    let names: Vec<String> = users
        .list_users(pb::ListUsersRequest {})
        .await
        .unwrap()
        .into_inner()
        .users
        .into_iter()
        .map(|u| u.name)
        .collect();
    assert!(names.contains(&"alice".to_string()), "{names:?}");

    let joiner = r.add("m10-1-2", "m10-1-2", &[r.addr(first)]);
    prepend_config(&r, joiner, "bootstrap = \"existing\"");
    r.start(joiner);
    let st = r.wait_status(first, "m10-1-2 joined", |s| member_named(s, "m10-1-2").is_some()).await;
    assert!(member_named(&st, "m10-1-2").is_some_and(|m| m.address == r.addr(joiner)), "{st:?}");
    assert!(Path::new(&file).exists());
}

#[test]
fn the_snapshot_size_limit_is_the_same_on_both_ends() {
    // Goal: ternctl accepts every snapshot the store may write, and no more.
    assert_eq!(tern_proto::limits::SNAPSHOT_BYTES_MAX, tern_raft_store::limits::SNAPSHOT_BYTES_MAX as u64);
}
