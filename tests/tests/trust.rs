//! Trust per call (issue 12) through the real gRPC surface: a caller that holds a
//! cluster certificate gets only what its certificate's identity may do (the agent's
//! authorisation table, `tern_agent::auth`). Each attack uses the certificate an
//! attacker would hold and expects PERMISSION_DENIED; each profile's positive path too.

use tern_proto::v1 as pb;
use tern_raft_store::{Command, Request};
use tern_tests::Cluster;
use tonic::Code;

/// Issues a user certificate `name` with `profiles` (slugs) in the cluster's folder.
fn user(c: &Cluster, name: &str, profiles: &[&str]) {
    let role = tern_tls::Role::User { profiles: profiles.iter().map(|p| p.to_string()).collect() };
    tern_tls::issue(&c.certs, name, &role, Some(1)).unwrap();
}

#[track_caller]
fn denied<T: std::fmt::Debug>(what: &str, r: Result<T, tonic::Status>) -> String {
    match r {
        Err(e) if e.code() == Code::PermissionDenied => e.message().to_string(),
        other => panic!("{what}: expected PERMISSION_DENIED, got {other:?}"),
    }
}

fn propose_request(actor: &str, command: Command) -> pb::ProposeRequest {
    let request = Request { proposed_at_ms: 1, actor: actor.into(), from: String::new(), command };
    pb::ProposeRequest { request: tern_agent::raft_net::encode(&request).unwrap() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_profile_gets_its_verbs_and_nothing_more() {
    // Goal: LDoms Review lists but changes nothing; LDoms Management sets a domain's priority but manages no users
    // or hosts; System Administrator adds users; the refusals name the missing profile.
    let c = Cluster::three().await;
    user(&c, "reader", &["ldoms-review"]);
    user(&c, "operator", &["ldoms-management"]);
    let leader = c.status(0).await.unwrap();
    let i = c.index_of(&leader, leader.leader_id);

    let mut inv = pb::inventory_client::InventoryClient::new(c.channel_as(i, "reader"));
    let listed = inv.list_domains(pb::ListDomainsRequest::default()).await.unwrap().into_inner();
    assert!(listed.domains.iter().any(|d| d.name == "ldom1"), "{listed:?}");
    let mut ha = pb::ha_client::HaClient::new(c.channel_as(i, "reader"));
    let set = pb::HaSetDomainRequest { domain: "ldom1".into(), ha_priority: "high".into(), ..Default::default() };
    let why = denied("review sets a priority", ha.set_domain(set.clone()).await);
    assert!(why.contains("lacks the \"LDoms Management\" profile"), "{why}");
    let mut users = pb::users_client::UsersClient::new(c.channel_as(i, "reader"));
    denied("review lists users", users.list_users(pb::ListUsersRequest {}).await);
    let mut hosts = pb::hosts_client::HostsClient::new(c.channel_as(i, "reader"));
    let evacuate = pb::HostRequest { host: "m10-1-1".into(), user: "root".into(), password: "x".into() };
    denied("review evacuates", hosts.evacuate(evacuate.clone()).await);

    let mut ha = pb::ha_client::HaClient::new(c.channel_as(i, "operator"));
    ha.set_domain(set).await.unwrap();
    let fence = pb::HaSetHostRequest { host: "m10-1-2".into(), status: "fenced".into() };
    let why = denied("management confirms a fence", ha.set_host(fence).await);
    assert!(why.contains("System Administrator"), "{why}");
    let mut users = pb::users_client::UsersClient::new(c.channel_as(i, "operator"));
    let reset_root = pb::AddUserRequest {
        name: "root".into(),
        password: "owned".into(),
        profiles: vec!["System Administrator".into()],
        replace: true,
    };
    denied("management resets root's password", users.add_user(reset_root.clone()).await);
    let mut hosts = pb::hosts_client::HostsClient::new(c.channel_as(i, "operator"));
    denied("management evacuates", hosts.evacuate(evacuate).await);

    let mut users = pb::users_client::UsersClient::new(c.channel(i).await);
    users.add_user(reset_root).await.unwrap();

    // The audit log names the certificate's user, and only an administrator reads it.
    let mut admin = pb::cluster_client::ClusterClient::new(c.channel(i).await);
    let req = pb::AuditRequest { actor: "operator".into(), ..Default::default() };
    let entries = admin.audit(req.clone()).await.unwrap().into_inner().entries;
    assert!(entries.iter().any(|e| e.summary.contains("ha-priority=high") && e.outcome == "ok"), "{entries:?}");
    let mut reader = pb::cluster_client::ClusterClient::new(c.channel_as(i, "reader"));
    denied("review reads the audit log", reader.audit(req).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_certificate_is_refused_from_the_next_call() {
    // Goal: `certs revoke` puts a serial on the agents' list; they re-read it and refuse that certificate, even an
    // administrator's, while the others keep working.
    let c = Cluster::three().await;
    user(&c, "leaver", &["system-administrator"]);
    let mut inv = pb::inventory_client::InventoryClient::new(c.channel_as(0, "leaver"));
    inv.list_domains(pb::ListDomainsRequest::default()).await.unwrap();
    let serial = tern_tls::revoke(&c.certs, "leaver").unwrap();
    let why = denied("a revoked certificate", inv.list_domains(pb::ListDomainsRequest::default()).await);
    assert!(why.contains(&serial) && why.contains("revoked"), "{why}");
    let mut admin = pb::inventory_client::InventoryClient::new(c.channel(0).await);
    admin.list_domains(pb::ListDomainsRequest::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_certificate_makes_no_member_call() {
    // Goal: even System Administrator's certificate cannot speak as a member: no raw Propose (AddUser with a chosen
    // actor), no Raft message, no Finish that activates an incoming copy, no restart, no join.
    let c = Cluster::three().await;
    let admin = c.channel(0).await;
    let mut cluster = pb::cluster_client::ClusterClient::new(admin.clone());
    let add_root = Command::AddUser {
        name: "root".into(),
        password_hash: tern_raft_store::hash_password("owned").unwrap(),
        profiles: [tern_raft_store::Profile::SystemAdministrator].into(),
        replace: true,
    };
    denied("a user's raw Propose", cluster.propose(propose_request("agent:m10-1-1", add_root)).await);
    let join = pb::JoinRequest { node_id: 99, name: "m10-1-1".into(), address: "127.0.0.1:1".into() };
    denied("a user's join", cluster.join(join).await);
    let mut raft = pb::raft_client::RaftClient::new(admin.clone());
    denied("a user's Raft vote", raft.vote(pb::RaftPayload { data: b"{}".to_vec() }).await);
    let mut migration = pb::migration_client::MigrationClient::new(admin.clone());
    let finish = pb::FinishRequest { operation_id: 1, domain: "ldom1".into(), committed: true };
    denied("a user's Finish", migration.finish(finish).await);
    let mut ha = pb::ha_client::HaClient::new(admin);
    let restart = pb::RestartRequest { operation_id: 1, reservation_id: 1, token: 1, domain: "ldom1".into() };
    denied("a user's restart", ha.restart(restart).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_certificate_speaks_only_for_its_own_host() {
    // Goal: m10-1-2's node certificate cannot report m10-1-1's inventory, propose as agent:m10-1-1, propose Expire
    // or a batch, finish a migration it does not coordinate, heartbeat for another host, or use a user's verbs.
    let c = Cluster::three().await;
    let st = c.status(0).await.unwrap();
    let leader = c.index_of(&st, st.leader_id);
    let node = c.channel_as(leader, "m10-1-2");
    let mut cluster = pb::cluster_client::ClusterClient::new(node.clone());
    let update =
        |name: &str| Command::UpdateHost { name: name.into(), address: Some("10.0.0.66:7400".into()), self_stop: None };
    let why =
        denied("another host's update", cluster.propose(propose_request("agent:m10-1-2", update("m10-1-1"))).await);
    assert!(why.contains("speaks only for itself"), "{why}");
    denied("posing as another agent", cluster.propose(propose_request("agent:m10-1-1", update("m10-1-2"))).await);
    let expire = Command::Expire { now_ms: u64::MAX / 2 };
    denied("a forwarded Expire", cluster.propose(propose_request("agent:m10-1-2", expire)).await);
    // Nor a batch, whose requests could speak for anyone (issue 18: the leader forms them).
    let inner =
        Request { proposed_at_ms: 1, actor: "agent:m10-1-1".into(), from: String::new(), command: update("m10-1-1") };
    let batch = Command::Batch { requests: vec![inner] };
    let why = denied("a forwarded batch", cluster.propose(propose_request("agent:m10-1-2", batch)).await);
    assert!(why.contains("batch is formed by the leader only"), "{why}");
    let beat = pb::HeartbeatRequest { host: "m10-1-1".into(), node_id: 1, ..Default::default() };
    denied("another host's heartbeat", cluster.heartbeat(beat).await);
    let mut migration = pb::migration_client::MigrationClient::new(node.clone());
    let finish = pb::FinishRequest { operation_id: 1, domain: "ldom1".into(), committed: true };
    let e = migration.finish(finish).await.unwrap_err();
    assert!(matches!(e.code(), Code::NotFound | Code::PermissionDenied), "{e:?}");
    let mut users = pb::users_client::UsersClient::new(node);
    let add = pb::AddUserRequest { name: "mallory".into(), password: "pw".into(), profiles: vec![], replace: false };
    denied("a node adds a user", users.add_user(add).await);
    // A join only under its own name, and never taking another member's id.
    let m1 = st.members.iter().find(|m| m.name == "m10-1-1").expect("m10-1-1 is a member").node_id;
    let as_other = pb::JoinRequest { node_id: 4242, name: "m10-1-1".into(), address: "127.0.0.1:1".into() };
    denied("a join under another name", cluster.join(as_other).await);
    let take_id = pb::JoinRequest { node_id: m1, name: "m10-1-2".into(), address: "127.0.0.1:1".into() };
    let why = denied("taking another member's id", cluster.join(take_id).await);
    assert!(why.contains("may not take its id"), "{why}");
    // Another host's status: no HA verdict and no maintenance without an evacuation of it.
    for status in [tern_raft_store::HostStatus::Lost, tern_raft_store::HostStatus::Maintenance] {
        let set = Command::SetHostStatus { host: "m10-1-1".into(), status, expected: None };
        let why = denied("another host's status", cluster.propose(propose_request("agent:m10-1-2", set)).await);
        assert!(why.contains("may not set m10-1-1"), "{why}");
    }
    // Its own host's update is taken, stamped with the leader's clock.
    let own = Command::UpdateHost { name: "m10-1-2".into(), address: None, self_stop: None };
    let own = cluster.propose(propose_request("agent:m10-1-2", own)).await.unwrap().into_inner();
    assert!(own.log_index > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_acts_only_on_operations_it_takes_part_in() {
    // Goal: m10-1-3, neither source nor target of ldom1's migration m10-1-1 -> m10-1-2, may not abort it or begin a
    // migration from m10-1-1; the source's own abort passes the check (the state machine then judges it).
    let c = Cluster::three().await;
    c.wait_domains(0, 3).await;
    c.add_user("root", "pw", &["System Administrator"]).await;
    let mut events = c.migrate(0, "ldom1", "m10-1-2", "", true, "root", "pw").await.unwrap();
    while events.message().await.unwrap().is_some() {}
    let op = c.operations(0).await.into_iter().find(|o| o.kind == "migration").expect("the dry run's operation");
    let st = c.status(0).await.unwrap();
    let leader = c.index_of(&st, st.leader_id);
    let abort = || Command::AbortOperation { operation: op.id, outcome: tern_raft_store::AbortOutcome::Cancelled };
    let mut bystander = pb::cluster_client::ClusterClient::new(c.channel_as(leader, "m10-1-3"));
    let why = denied("a bystander's abort", bystander.propose(propose_request("agent:m10-1-3", abort())).await);
    assert!(why.contains("takes no part in this migration"), "{why}");
    let begin = Command::BeginOperation {
        kind: tern_raft_store::OperationKind::Migration {
            domain: "ldom1".into(),
            source: "m10-1-1".into(),
            target: "m10-1-2".into(),
            new_name: None,
            dry_run: false,
            plan: None,
        },
    };
    let why = denied("a bystander's migration", bystander.propose(propose_request("agent:m10-1-3", begin)).await);
    assert!(why.contains("its source coordinates it"), "{why}");
    // RB-06: only the guest's host resizes it.
    let growth = tern_model::rebalance::Growth { cores: Some(6), memory: None };
    let kind = tern_raft_store::OperationKind::Resize { domain: "ldom1".into(), host: "m10-1-1".into(), growth };
    let resize = Command::BeginOperation { kind };
    let why = denied("a bystander's resize", bystander.propose(propose_request("agent:m10-1-3", resize)).await);
    assert!(why.contains("takes no part in this resize"), "{why}");
    let mut source = pb::cluster_client::ClusterClient::new(c.channel_as(leader, "m10-1-1"));
    source.propose(propose_request("agent:m10-1-1", abort())).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_where_each_write_came_from() {
    // Goal: a user's write taken by a follower and forwarded to the leader is recorded
    // with the user's address, not the follower's; a follower's own write with its own.
    let c = Cluster::three().await;
    user(&c, "operator", &["ldoms-management"]);
    let leader = c.status(0).await.unwrap();
    let l = c.index_of(&leader, leader.leader_id);
    let f = (0..3).find(|i| *i != l).unwrap();
    let mut ha = pb::ha_client::HaClient::new(c.channel_as(f, "operator"));
    let set = pb::HaSetDomainRequest { domain: "ldom1".into(), ha_priority: "low".into(), ..Default::default() };
    ha.set_domain(set).await.unwrap();

    let mut admin = pb::cluster_client::ClusterClient::new(c.channel(l).await);
    let req = pb::AuditRequest { agents: true, ..Default::default() };
    let entries = admin.audit(req).await.unwrap().into_inner().entries;
    let agents: Vec<String> = (0..3).map(|i| c.addr(i)).collect();
    let mine = entries
        .iter()
        .find(|e| e.actor == "operator" && e.summary.contains("ha-priority=low"))
        .unwrap_or_else(|| panic!("no audit row for the operator's write: {entries:?}"));
    let from: std::net::SocketAddr = mine.from.parse().unwrap_or_else(|e| panic!("from {:?}: {e}", mine.from));
    assert!(from.ip().is_loopback() && from.port() != 0, "{mine:?}");
    assert!(!agents.contains(&mine.from), "recorded an agent's listening address, not the caller's: {mine:?}");
    let follower = format!("agent:{}", c.agents[f].name);
    let own = entries
        .iter()
        .find(|e| e.actor == follower)
        .unwrap_or_else(|| panic!("no audit row of {follower}'s own writes: {entries:?}"));
    assert!(own.from.parse::<std::net::SocketAddr>().is_ok(), "{follower}'s write has no address: {own:?}");
    assert_ne!(own.from, mine.from, "the follower's own write and the user's came from different places");

    // A call refused for lack of rights is not in the log of changes, but the agent's
    // own log names who was refused, from where, and why.
    user(&c, "reader", &["ldoms-review"]);
    let mut ha = pb::ha_client::HaClient::new(c.channel_as(f, "reader"));
    let set = pb::HaSetDomainRequest { domain: "ldom1".into(), ha_priority: "high".into(), ..Default::default() };
    denied("review sets a priority", ha.set_domain(set).await);
    let log = c.log(f);
    let line = log
        .lines()
        .find(|l| l.contains("call refused") && l.contains("caller=reader"))
        .unwrap_or_else(|| panic!("no refusal line in {}'s log:\n{log}", c.agents[f].name));
    assert!(line.contains("method=/tern.v1.Ha/SetDomain") && line.contains("from=127.0.0.1:"), "{line}");
    // ... and keeps it for `ternctl audit --denied`, which only an administrator reads.
    let mut admin = pb::cluster_client::ClusterClient::new(c.channel(f).await);
    let req = pb::AuditRequest { denied: true, actor: "reader".into(), ..Default::default() };
    let refused = admin.audit(req.clone()).await.unwrap().into_inner().entries;
    let row = refused
        .iter()
        .find(|e| e.summary.contains("/tern.v1.Ha/SetDomain"))
        .unwrap_or_else(|| panic!("no refused-call row for the reader: {refused:?}"));
    assert_eq!((row.actor.as_str(), row.outcome.as_str(), row.index), ("reader", "permission-denied", 0), "{row:?}");
    assert!(row.from.starts_with("127.0.0.1:") && row.summary.contains("LDoms Management"), "{row:?}");
    let mut reader = pb::cluster_client::ClusterClient::new(c.channel_as(f, "reader"));
    denied("review reads the refused calls", reader.audit(req).await);
}

/// The serial of certificate `name` in the cluster's folder.
fn serial_in(c: &Cluster, name: &str) -> String {
    let pem = std::fs::read_to_string(c.certs.join(format!("{name}.pem"))).unwrap();
    let der = rustls::pki_types::pem::PemObject::from_pem_slice(pem.as_bytes())
        .map(|d: rustls::pki_types::CertificateDer| d.to_vec());
    tern_tls::serial_of(&der.unwrap()).unwrap()
}

/// Polls agent `i` until the certificate it presents to a new connection is `serial`.
async fn wait_presented(c: &Cluster, i: usize, serial: &str) {
    let start = std::time::Instant::now();
    loop {
        let now = c.presented_serial(i).await;
        if now == serial {
            return;
        }
        assert!(start.elapsed() < tern_tests::WAIT, "agent {i} still presents {now}, not {serial}: {}", c.log(i));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_node_certificate_is_taken_on_sighup_and_the_old_one_can_then_be_revoked() {
    // Goal: on SIGHUP ternd re-reads its certificate without restarting; new connections both ways present the renewed
    // one, so revoking the old serial leaves the member working; files that do not belong together change nothing.
    let c = Cluster::three().await;
    let leader = c.status(0).await.unwrap();
    let leader = c.index_of(&leader, leader.leader_id);
    let i = (leader + 1) % 3;
    let name = c.agents[i].name.clone();
    let old = serial_in(&c, &name);
    assert_eq!(c.presented_serial(i).await, old);

    // Renewal as an admin does it: a new certificate for the same node from the same CA, moved over the old files.
    let renew = c.tmp.path().join("renew");
    std::fs::create_dir_all(&renew).unwrap();
    for f in ["ca.pem", "ca-key.pem"] {
        std::fs::copy(c.certs.join(f), renew.join(f)).unwrap();
    }
    tern_tls::issue(&renew, &name, &tern_tls::Role::Node { sans: vec![], loopback: true }, None).unwrap();
    for f in [format!("{name}-key.pem"), format!("{name}.pem")] {
        std::fs::rename(renew.join(&f), c.certs.join(&f)).unwrap();
    }
    let new = serial_in(&c, &name);
    assert_ne!(new, old);
    c.signal(i, "HUP");
    wait_presented(&c, i, &new).await;
    assert!(c.log(i).contains("SIGHUP: reloaded the TLS certificate"), "{}", c.log(i));

    // The old certificate revoked everywhere: the member's own calls (this write, forwarded to the leader) now go out
    // with the new one, so they pass.
    let mut list = std::fs::OpenOptions::new().create(true).append(true).open(c.certs.join("revoked.txt")).unwrap();
    std::io::Write::write_all(&mut list, format!("{old} # {name} before renewal\n").as_bytes()).unwrap();
    drop(list);
    let mut ha = pb::ha_client::HaClient::new(c.channel(i).await);
    let set = pb::HaSetDomainRequest { domain: "ldom1".into(), ha_priority: "high".into(), ..Default::default() };
    ha.set_domain(set).await.unwrap();

    // Another node's certificate and key put in its place: refused on SIGHUP, the renewed one stays in use.
    let other = c.agents[leader].name.clone();
    for (from, to) in
        [(format!("{other}-key.pem"), format!("{name}-key.pem")), (format!("{other}.pem"), format!("{name}.pem"))]
    {
        std::fs::copy(c.certs.join(from), c.certs.join(to)).unwrap();
    }
    c.signal(i, "HUP");
    let start = std::time::Instant::now();
    while !c.log(i).contains("SIGHUP: kept the TLS certificate in use") {
        assert!(start.elapsed() < tern_tests::WAIT, "no refusal logged: {}", c.log(i));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(c.log(i).contains(&other) && c.log(i).contains("'s; this agent is"), "{}", c.log(i));
    assert_eq!(c.presented_serial(i).await, new);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raft_message_must_name_the_member_it_is_for() {
    // Goal: a Raft message without the target-id header is refused, and one for another member id is answered as
    // unreachable: an agent that took over an address never answers for the member that was there.
    let c = Cluster::three().await;
    let mut raft = pb::raft_client::RaftClient::new(c.channel_as(0, "m10-1-2"));
    let e = raft.vote(pb::RaftPayload { data: b"{}".to_vec() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("must name its target member"), "{e}");
    let mut req = tonic::Request::new(pb::RaftPayload { data: b"{}".to_vec() });
    req.metadata_mut().insert(tern_agent::raft_net::TARGET_ID_HEADER, 999_u64.into());
    let e = raft.vote(req).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{e}");
    assert!(e.message().contains("member 999 is not here"), "{e}");
}
