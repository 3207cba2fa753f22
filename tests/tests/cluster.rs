//! End to end: real `ternd` processes form a Raft cluster over mutual TLS, survive the
//! loss of their leader, admit and promote new members, and refuse strangers.

use std::time::Duration;
use tern_proto::v1 as pb;
use tern_tests::Cluster;
use tonic::transport::Endpoint;

/// The seed's three agents, and t4-1 joined as a learner: the cluster, the learner's
/// id, and the status that showed it.
async fn three_and_a_learner() -> (Cluster, u64, pb::ClusterStatus) {
    let mut c = Cluster::three().await;
    let first = c.addr(0);
    let i = c.add("t4-1", "t4-1", &[first]);
    c.start(i);
    let st = c
        .wait_status(0, "4 members, the new one a learner", |s| {
            s.members.len() == 4 && s.members.iter().any(|m| m.role == pb::MemberRole::Learner as i32)
        })
        .await;
    let learner = st.members.iter().find(|m| m.role == pb::MemberRole::Learner as i32).unwrap().node_id;
    (c, learner, st)
}

fn voters(s: &pb::ClusterStatus) -> Vec<u64> {
    s.members.iter().filter(|m| m.role == pb::MemberRole::Voter as i32).map(|m| m.node_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_form_a_cluster_and_share_inventory() {
    // Goal: 3 agents elect a leader, all are voters, and every host's domains are visible from any member.
    let c = Cluster::three().await;
    let st = c.status(2).await.unwrap();
    assert_eq!(voters(&st).len(), 3, "{st:?}");
    assert!(st.members.iter().all(|m| m.host_status == pb::HostStatus::Up as i32), "{st:?}");
    let domains = c.wait_domains(2, 5).await;
    let names: Vec<(&str, &str)> = domains.iter().map(|d| (d.host.as_str(), d.name.as_str())).collect();
    assert!(names.contains(&("m10-1-1", "ldom1")), "{names:?}");
    assert!(names.contains(&("m10-1-3", "ldom5")), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_then_new_leader_and_nothing_committed_is_lost() {
    // Goal: kill -9 of the leader: the others elect a new leader, committed state
    // survives, and the killed agent restarts from its data directory and catches up.
    let mut c = Cluster::three().await;
    let before = c.status(0).await.unwrap();
    let old_leader = c.index_of(&before, before.leader_id);
    let committed = before.commit_index;
    c.kill(old_leader);
    let survivor = (old_leader + 1) % 3;
    let after = c.wait_status(survivor, "a new leader", |s| s.leader_id != 0 && s.leader_id != before.leader_id).await;
    assert!(after.term > before.term);
    assert!(after.applied_index >= committed, "applied {} < committed {committed}", after.applied_index);
    let domains = c.wait_domains(survivor, 5).await;
    assert!(domains.iter().any(|d| d.name == "ldom1"), "{domains:?}");
    c.start(old_leader);
    let leader_now = after.leader_id;
    let target = c.status(survivor).await.unwrap().applied_index;
    c.wait_status(old_leader, "the restarted agent caught up", |s| {
        s.leader_id == leader_now && s.applied_index >= target
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fourth_agent_joins_as_learner_and_replaces_a_dead_voter() {
    // Goal: a 4th agent enters as learner; when a voter is killed for good it is promoted.
    let (mut c, learner, st) = three_and_a_learner().await;
    let victim = (0..3).find(|&j| c.index_of(&st, st.leader_id) != j).unwrap();
    let victim_id =
        st.members.iter().find(|m| Some(m.address.as_str()) == c.agents[victim].addr.as_deref()).unwrap().node_id;
    c.kill(victim);
    let leader_index = c.index_of(&st, st.leader_id);
    c.wait_status(leader_index, "the learner promoted in place of the dead voter", |s| {
        let v = voters(s);
        v.len() == 3 && v.contains(&learner) && !v.contains(&victim_id)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_duties_follow_leadership_so_a_new_leader_replaces_the_dead_one() {
    // Goal: voter management runs on whoever leads: once the leader is killed, the new leader promotes the learner in its place.
    let (mut c, learner, st) = three_and_a_learner().await;
    let old_leader = st.leader_id;
    c.kill(c.index_of(&st, old_leader));
    let survivor = (0..3).find(|&j| j != c.index_of(&st, old_leader)).unwrap();
    c.wait_status(survivor, "a new leader that promoted the learner in place of the old one", |s| {
        let v = voters(s);
        s.leader_id != 0
            && s.leader_id != old_leader
            && v.len() == 3
            && v.contains(&learner)
            && !v.contains(&old_leader)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_without_a_cluster_certificate_are_refused() {
    // Goal: mutual TLS: no client certificate, or one from another CA, fails the call.
    let mut c = Cluster::new();
    c.add("m10-1-1", "m10-1-1", &[]);
    let addr = c.start(0);
    c.wait_status(0, "a leader", |s| s.leader_id != 0).await;
    let ca = std::fs::read_to_string(c.certs.join("ca.pem")).unwrap();
    let no_cert = tonic::transport::ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(&ca));
    let other = tempfile::tempdir().unwrap();
    tern_tls::init_ca(other.path(), "other").unwrap();
    let foreign = tern_tls::issue(
        other.path(),
        "intruder",
        &tern_tls::Role::User { profiles: vec!["system-administrator".into()] },
        None,
    )
    .unwrap();
    let foreign_identity = tonic::transport::Identity::from_pem(
        std::fs::read_to_string(&foreign.cert).unwrap(),
        std::fs::read_to_string(&foreign.key).unwrap(),
    );
    let foreign_cert = no_cert.clone().identity(foreign_identity);
    for (what, tls) in [("no certificate", no_cert), ("another CA's certificate", foreign_cert)] {
        let ch = Endpoint::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        let result = pb::cluster_client::ClusterClient::new(ch).status(pb::StatusRequest {}).await;
        assert!(result.is_err(), "{what}: the agent answered");
    }
    assert!(c.status(0).await.is_ok(), "a proper client still gets through");
}

#[test]
fn malformed_config_names_the_field() {
    // Goal: ternd refuses a bad config with exit code 2 and the field's name.
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("name = \"x\"\nlisten_addr = \"127.0.0.1:0\"\ndata_dir = \"d\"\nbogus = 1\n", "bogus"),
        (
            "name = \"x\"\nlisten_addr = \"127.0.0.1:0\"\ndata_dir = \"d\"\nvoters = 9\n\
[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\n[hypervisor]\nkind = \"sim\"\nlayout = \"l\"\n",
            "voters",
        ),
        ("name = \"x\"\nlisten_addr = \"nonsense\"\n", "listen_addr"),
    ];
    for (text, field) in cases {
        let p = dir.path().join("bad.toml");
        std::fs::write(&p, text).unwrap();
        let out = std::process::Command::new(tern_tests::binary("ternd")).arg("--config").arg(&p).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(field), "expected {field:?} in: {err}");
    }
}

fn host_status(s: &pb::ClusterStatus, name: &str) -> i32 {
    s.members.iter().find(|m| m.name == name).map_or(-1, |m| m.host_status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_control_domain_is_lost_and_up_again_once_it_heartbeats() {
    // Goal: HA-01: kill -9 of a follower's agent: the leader, hearing no heartbeat, marks
    // its host Suspect then Lost; restarted, it heartbeats and its host is Up again.
    let mut c = Cluster::three().await;
    let st = c.status(0).await.unwrap();
    let leader = c.index_of(&st, st.leader_id);
    let victim = (leader + 1) % 3;
    let name = c.status(victim).await.unwrap().node_name;
    // A follower points heartbeats at the leader (a header, not text); the leader takes
    // them only for registered hosts.
    let beat = |host: &str| pb::HeartbeatRequest { host: host.into(), node_id: 1, ..Default::default() };
    // Heartbeats are a member's call, each for its own host (trust per call).
    let mut follower = pb::cluster_client::ClusterClient::new(c.channel_as(victim, &name));
    let e = follower.heartbeat(beat(&name)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert_eq!(e.metadata().get("tern-leader").and_then(|v| v.to_str().ok()), Some(c.addr(leader).as_str()));
    let mut to_leader = pb::cluster_client::ClusterClient::new(c.channel_as(leader, &name));
    let e = to_leader.heartbeat(beat("nosuch")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let mut as_user = pb::cluster_client::ClusterClient::new(c.channel(leader).await);
    let e = as_user.heartbeat(beat(&name)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    c.kill(victim);
    let lost = pb::HostStatus::Lost as i32;
    c.wait_status(leader, "the killed agent's host lost", |s| host_status(s, &name) == lost).await;
    c.start(victim);
    let up = pb::HostStatus::Up as i32;
    c.wait_status(leader, "the restarted agent's host up", |s| host_status(s, &name) == up).await;
}
