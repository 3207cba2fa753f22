//! Rebalancing (SPEC RB-01..RB-05) on real `ternd` processes: plans made from the
//! replicated state, kept with ids, applied as ordinary migrations through the
//! reservation protocol, with the trust rules of the profiles.

use std::time::{Duration, Instant};
use tern_proto::v1 as pb;
use tern_tests::{Cluster, WAIT};
use tonic::Code;

/// The seed's source, its refused target (10G + 10G free around ldom2) and its target.
const HOSTS: [&str; 3] = ["m10-1-1", "m10-1-fragmented", "m10-1-2"];
/// Rounds every 200 ms; migrations at 200x.
const FAST: &str = "[rebalance]\ninterval_ms = 200\n";

fn user(c: &Cluster, name: &str, profiles: &[&str]) {
    let role = tern_tls::Role::User { profiles: profiles.iter().map(|p| p.to_string()).collect() };
    tern_tls::issue(&c.certs, name, &role, Some(1)).unwrap();
}

fn rebalance(c: &Cluster, i: usize, cert: &str) -> pb::rebalance_client::RebalanceClient<tonic::transport::Channel> {
    pb::rebalance_client::RebalanceClient::new(c.channel_as(i, cert))
}

async fn plan(c: &Cluster, id: u64) -> pb::RebalancePlan {
    let s = rebalance(c, 0, "ternctl").status(pb::RebalanceStatusRequest { limit: 32 }).await.unwrap().into_inner();
    s.plans.into_iter().find(|p| p.id == id).unwrap_or_else(|| panic!("plan {id} is not listed"))
}

/// Waits until plan `id` is no longer applying; returns it.
async fn settled(c: &Cluster, id: u64) -> pb::RebalancePlan {
    let start = Instant::now();
    loop {
        let p = plan(c, id).await;
        if p.status != "applying" {
            return p;
        }
        assert!(start.elapsed() < WAIT, "plan {id} never finished: {p:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn host_of(c: &Cluster, domain: &str) -> String {
    let d = c.domains(0).await.unwrap();
    d.into_iter().find(|x| x.name == domain).map(|x| x.host).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_room_moves_ldom3_away_then_ldom1_onto_the_fragmented_server_without_a_password() {
    // Goal: RB-05 end to end: ldom1 is refused by m10-1-fragmented (LM-09); the make-room plan moves ldom3 off it,
    // then ldom1 onto it, each an ordinary migration marked with the plan, approved by an LDoms Management user.
    let c = Cluster::with_layouts_and(&HOSTS, 200, FAST).await;
    user(&c, "operator", &["ldoms-management"]);
    let mut rb = rebalance(&c, 1, "operator");
    let req = pb::RebalancePlanRequest {
        make_room_domain: "ldom1".into(),
        make_room_target: "m10-1-fragmented".into(),
        ..Default::default()
    };
    let p = rb.plan(req).await.unwrap().into_inner().plan.unwrap();
    let moves: Vec<(&str, &str, &str)> =
        p.moves.iter().map(|m| (m.domain.as_str(), m.target.as_str(), m.reason.as_str())).collect();
    assert_eq!(moves.len(), 2, "{p:?}");
    assert_eq!((moves[0].0, moves[0].2), ("ldom3", "make-room ldom1"));
    assert_eq!(moves[1], ("ldom1", "m10-1-fragmented", "guest"));
    assert_eq!((p.status.as_str(), p.actor.as_str()), ("shown", "operator"));
    assert!(p.moves.iter().all(|m| !m.cids.is_empty() && !m.memory.is_empty() && m.total_ms > m.downtime_ms));

    let applied = rb.apply(pb::RebalanceApplyRequest { id: p.id }).await.unwrap().into_inner();
    assert!(!applied.replanned, "{applied:?}");
    let done = settled(&c, p.id).await;
    assert_eq!(done.status, "done", "{done:?}");
    assert!(done.moves.iter().all(|m| m.state == "done" && m.operation_id != 0), "{done:?}");
    assert_eq!(host_of(&c, "ldom1").await, "m10-1-fragmented");
    assert_eq!(host_of(&c, "ldom3").await, moves[0].1);
    // Each move is an ordinary migration in the operations list.
    let ops = c.operations(0).await;
    for m in &done.moves {
        let op = ops.iter().find(|o| o.id == m.operation_id).expect("the move's operation");
        assert_eq!((op.kind.as_str(), op.phase.as_str(), op.domain.as_str()), ("migration", "done", m.domain.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_plan_is_replanned_not_applied_and_review_users_only_look() {
    // Goal: RB-04: apply refuses a plan whose state changed and shows a new one; LDoms Review may read the status but
    // neither plan nor apply; only a System Administrator changes the policy.
    let c = Cluster::with_layouts_and(&HOSTS, 200, FAST).await;
    user(&c, "reader", &["ldoms-review"]);
    user(&c, "operator", &["ldoms-management"]);
    let mut reader = rebalance(&c, 0, "reader");
    let status = reader.status(pb::RebalanceStatusRequest { limit: 5 }).await.unwrap().into_inner();
    let config = status.config.clone().expect("policy");
    assert!(!config.auto && config.level == 3, "{config:?}");
    let denied = reader.plan(pb::RebalancePlanRequest::default()).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");
    let denied = reader.apply(pb::RebalanceApplyRequest { id: 1 }).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    let mut operator = rebalance(&c, 0, "operator");
    let p = operator.plan(pb::RebalancePlanRequest { level: 5, ..Default::default() }).await.unwrap().into_inner();
    let p = p.plan.unwrap();
    let denied = operator.configure(pb::RebalanceConfig { level: 4, ..config.clone() }).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "management may not change the policy");
    // The administrator changes the policy: the plan's state no longer holds.
    rebalance(&c, 0, "ternctl").configure(pb::RebalanceConfig { level: 4, ..config }).await.unwrap();
    let applied = operator.apply(pb::RebalanceApplyRequest { id: p.id }).await.unwrap().into_inner();
    assert!(applied.replanned, "{applied:?}");
    let new = applied.plan.expect("a new plan");
    assert!(new.id > p.id && new.status == "shown", "{new:?}");
    assert_eq!(plan(&c, p.id).await.status, "shown", "the stale plan is left as it was");
    let bad = operator.plan(pb::RebalancePlanRequest { level: 9, ..Default::default() }).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);
    let bad = operator
        .plan(pb::RebalancePlanRequest {
            make_room_domain: "nope".into(),
            make_room_target: "m10-1-2".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");
    // UC-2 (RB-06): ldom1 grows to 8 cores in place on m10-1-1; 20 cores fit nowhere (FAILED_PRECONDITION).
    let grow =
        |cores: u32| pb::RebalancePlanRequest { grow_domain: "ldom1".into(), grow_cores: cores, ..Default::default() };
    let p = operator.plan(grow(8)).await.unwrap().into_inner().plan.unwrap();
    assert!(p.moves.is_empty() && p.purpose == "grow ldom1 to cores=8", "{p:?}");
    assert!(p.notes.iter().any(|n| n.contains("grow in place on m10-1-1")), "{p:?}");
    let no = operator.plan(grow(20)).await.unwrap_err();
    assert_eq!(no.code(), Code::FailedPrecondition, "{no:?}");
    assert!(no.message().contains("RB-06"), "{no:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_rebalances_once_the_imbalance_held_and_keeps_the_moved_guest_in_its_cooldown() {
    // Goal: RB-01/RB-04 auto: with auto on, the leader plans after hold_rounds rounds above the threshold, applies the
    // plan itself, and the moved guest is not moved again within its cooldown.
    let c = Cluster::with_layouts_and(&HOSTS, 200, FAST).await;
    let mut admin = rebalance(&c, 0, "ternctl");
    let config = admin.status(pb::RebalanceStatusRequest { limit: 1 }).await.unwrap().into_inner().config.unwrap();
    admin.configure(pb::RebalanceConfig { auto: true, level: 5, hold_rounds: 2, ..config }).await.unwrap();
    let start = Instant::now();
    let done = loop {
        let s = admin.status(pb::RebalanceStatusRequest { limit: 5 }).await.unwrap().into_inner();
        if let Some(p) = s.plans.iter().find(|p| p.status == "done") {
            break p.clone();
        }
        assert!(start.elapsed() < WAIT, "auto mode never finished a plan: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(done.actor.starts_with("agent:") && done.applied_by.starts_with("agent:"), "{done:?}");
    assert!(!done.moves.is_empty() && done.imbalance_after_ppm < done.imbalance_before_ppm, "{done:?}");
    let moved = done.moves[0].domain.clone();
    assert_eq!(host_of(&c, &moved).await, done.moves[0].target);
    // The dashboards see it: the kept plan by status, the plans recorded, the imbalance.
    let metrics = c.metrics(0).await;
    let value = |name: &str| -> f64 {
        let line = metrics.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no {name} in:\n{metrics}"));
        line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line}"))
    };
    assert!(value("tern_rebalance_plans{status=\"done\"}") >= 1.0);
    assert!(value("tern_rebalance_plans_recorded") >= 1.0);
    assert!(value("tern_rebalance_imbalance ") < f64::from(done.imbalance_before_ppm) / 1e6);
    // Within its cooldown, no plan moves that guest again.
    let p = admin.plan(pb::RebalancePlanRequest { level: 5, ..Default::default() }).await.unwrap().into_inner();
    assert!(p.plan.unwrap().moves.iter().all(|m| m.domain != moved));
}

fn resize_req(domain: &str, cores: (&str, u64), memory: (&str, u64)) -> pb::ResizeRequest {
    pb::ResizeRequest {
        domain: domain.into(),
        cores_verb: cores.0.into(),
        cores: cores.1,
        memory_verb: memory.0.into(),
        memory_bytes: memory.1,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_grows_where_it_runs_through_a_reservation_and_its_server_binds_exactly_that() {
    // Goal: UC-2/RB-06 end to end: add-core and add-memory sent to another member reach ldom1's host, reserve the gain in
    // the replicated state, and the simulated server binds exactly those cores and ranges; set-core gives the highest back;
    // too many cores is refused with the numbers; a Review user may not resize.
    let c = Cluster::with_layouts_and(&HOSTS, 200, FAST).await;
    user(&c, "reader", &["ldoms-review"]);
    user(&c, "operator", &["ldoms-management"]);
    let other = c.host("m10-1-2");
    let denied = rebalance(&c, other, "reader").resize(resize_req("ldom1", ("add", 1), ("", 0))).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied:?}");

    let free_before = c.free_cores("m10-1-1").await;
    let mut operator = rebalance(&c, other, "operator");
    let r = operator.resize(resize_req("ldom1", ("add", 2), ("add", 8 << 30))).await.unwrap().into_inner();
    assert_eq!(r.host, "m10-1-1", "the guest's host ran it: {r:?}");
    assert_eq!(r.added_cids.len(), 2, "{r:?}");
    assert_eq!(r.new_cids.len(), r.old_cids.len() + 2);
    assert!(r.added_cids.iter().all(|cid| r.new_cids.contains(cid) && !r.old_cids.contains(cid)));
    assert_eq!(r.new_memory_bytes, r.old_memory_bytes + (8 << 30), "{r:?}");
    assert_eq!(r.added_memory.iter().map(|m| m.size).sum::<u64>(), 8 << 30);
    assert!(r.notes.iter().any(|n| n.starts_with("RB-06")), "{r:?}");
    assert_eq!(c.free_cores("m10-1-1").await, free_before - 2);

    // The simulated server holds exactly what was reserved and committed.
    let state_file = c.agents[c.host("m10-1-1")].dir.join("data/sim-state.json");
    let server = tern_hypervisor::sim::server_in(&state_file).unwrap();
    assert_eq!(server.cpu_of("ldom1").cids, r.new_cids);
    let held = server.memory_of("ldom1");
    for m in &r.added_memory {
        let m = tern_model::Range::new(m.pa, m.size);
        assert!(held.iter().any(|b| b.contains(&m)), "{m} is not ldom1's on the server: {held:?}");
    }
    let ops = c.operations(0).await;
    let op = ops.iter().find(|o| o.id == r.operation_id).expect("the resize's operation");
    assert_eq!((op.kind.as_str(), op.phase.as_str(), op.domain.as_str()), ("resize", "done", "ldom1"));

    // set-core back: the highest CIDs, the ones just added, are given back.
    let back =
        operator.resize(resize_req("ldom1", ("set", r.old_cids.len() as u64), ("", 0))).await.unwrap().into_inner();
    let mut added = r.added_cids.clone();
    added.sort_unstable();
    assert_eq!(back.removed_cids, added, "{back:?}");
    assert_eq!(tern_hypervisor::sim::server_in(&state_file).unwrap().cpu_of("ldom1").cids, r.old_cids);

    // Refusals: too many cores (with the numbers), an unknown guest, a verb ldm does not have.
    let no = operator.resize(resize_req("ldom1", ("add", 40), ("", 0))).await.unwrap_err();
    assert_eq!(no.code(), Code::FailedPrecondition, "{no:?}");
    assert!(no.message().contains("LM-06") && no.message().contains("40 more whole core(s) needed"), "{no:?}");
    let unknown = operator.resize(resize_req("nosuch", ("add", 1), ("", 0))).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let verb = operator.resize(resize_req("ldom1", ("double", 1), ("", 0))).await.unwrap_err();
    assert_eq!(verb.code(), Code::InvalidArgument, "{verb:?}");
}
