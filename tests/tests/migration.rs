//! End to end: live migration through real agents: reservations before anything moves,
//! refusals with their rule ids, cancel and failures that never lose a guest.

use tern_proto::v1 as pb;
use tern_proto::v1::migrate_event::Event;
use tern_tests::Cluster;

const PW: &str = "s3cret-pass";

async fn seed_cluster(layouts: &[&str], time_scale: u32) -> Cluster {
    let c = Cluster::with_layouts(layouts, time_scale).await;
    c.add_user("root", PW, &["System Administrator"]).await;
    c
}

fn rules(event: &Event) -> Vec<String> {
    match event {
        Event::Refused(r) => r.errors.iter().map(|v| v.rule.clone()).collect(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_with_rename_moves_the_guest_and_reports_new_cids_and_port() {
    // Goal: OP-05 rename; the report names old -> new CIDs and console port 5001 -> 5000;
    // the guest is on the target under its new name and gone from the source.
    let c = seed_cluster(&["m10-1-1", "m10-1-2", "m10-1-3"], 50).await;
    let src = c.host("m10-1-1");
    let s = c.migrate(src, "ldom1", "m10-1-2", "ldom9", false, "root", PW).await.unwrap();
    let Event::Report(r) = Cluster::outcome(s).await.unwrap() else { panic!("no report") };
    assert_eq!((r.source.as_str(), r.target.as_str(), r.new_name.as_str()), ("m10-1-1", "m10-1-2", "ldom9"));
    assert_eq!(r.old_cids, vec![4, 5, 6, 7]);
    assert_eq!(r.new_cids.len(), 4);
    assert_eq!((r.old_console_port, r.new_console_port), (5001, 5000));
    assert!(r.downtime_ms > 0 && r.downtime_ms < r.total_ms, "{r:?}");
    assert!(r.notes.iter().any(|n| n.starts_with("LM-14")), "{r:?}");
    let start = std::time::Instant::now();
    loop {
        let d = c.domains(0).await.unwrap();
        let on = |host: &str, name: &str| d.iter().any(|x| x.host == host && x.name == name);
        if on("m10-1-2", "ldom9") && !on("m10-1-1", "ldom1") {
            let moved = d.iter().find(|x| x.name == "ldom9").unwrap();
            assert_eq!(moved.state, "active");
            assert_eq!(moved.console.as_ref().unwrap().port, 5000);
            break;
        }
        assert!(start.elapsed() < tern_tests::WAIT, "domain never moved: {d:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    c.wait_operations(0, "the operation done", |ops| ops.iter().any(|o| o.phase == "done" && !o.dry_run)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_refuses_each_seed_failure_with_its_rule() {
    // Goal: OP-02 dry runs: the 10G+10G target (LM-09), cpu-arch (LM-07), a target
    // without vol1 and too few free cores (LM-04, LM-06), a control domain (LM-01);
    // and a passing dry run leaves nothing reserved.
    let c = seed_cluster(&["m10-1-1", "m10-1-2", "m10-1-3", "m10-1-fragmented", "t4-1"], 50).await;
    let src = c.host("m10-1-1");
    let cases: [(&str, &str, &str, &[&str]); 4] = [
        ("ldom1", "m10-1-fragmented", "", &["LM-09"]),
        ("ldom1", "t4-1", "", &["LM-07"]),
        ("ldom1", "m10-1-3", "", &["LM-04", "LM-06"]),
        ("primary", "m10-1-2", "primary2", &["LM-01"]),
    ];
    for (domain, target, new_name, want) in cases {
        let s = c.migrate(src, domain, target, new_name, true, "root", PW).await.unwrap();
        let got = rules(&Cluster::outcome(s).await.unwrap());
        for w in want {
            assert!(got.iter().any(|g| g == w), "{domain} -> {target}: want {w} in {got:?}");
        }
    }
    let s = c.migrate(src, "ldom1", "m10-1-2", "", true, "root", PW).await.unwrap();
    let Event::Report(r) = Cluster::outcome(s).await.unwrap() else { panic!("dry run refused") };
    assert!(r.dry_run && r.new_cids.len() == 4);
    let free = c.free_cores("m10-1-2").await;
    assert_eq!(free, 12, "a dry run must leave nothing reserved");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_and_missing_profile_are_permission_denied() {
    // Goal: OP-04: a bad password and a user without the profile get PERMISSION_DENIED.
    let c = seed_cluster(&["m10-1-1", "m10-1-2", "m10-1-3"], 50).await;
    c.add_user("guest", "guest-pass", &["Basic Solaris User"]).await;
    let src = c.host("m10-1-1");
    let e = Cluster::outcome(c.migrate(src, "ldom1", "m10-1-2", "", true, "root", "wrong").await.unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert!(e.message().contains("authentication failed for user root"), "{e}");
    let e = Cluster::outcome(c.migrate(src, "ldom1", "m10-1-2", "", true, "guest", "guest-pass").await.unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert!(e.message().contains("LDoms Management"), "{e}");
    // An unknown user is answered as a wrong password is (and costs one argon2 check too), so the answer does
    // not tell which users exist; no user at all is not root.
    let e = Cluster::outcome(c.migrate(src, "ldom1", "m10-1-2", "", true, "mallory", "x").await.unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert_eq!(e.message(), "authentication failed for user mallory on m10-1-2", "{e}");
    let e = Cluster::outcome(c.migrate(src, "ldom1", "m10-1-2", "", true, "", PW).await.unwrap()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");
    assert!(e.message().contains("OP-04 names the user"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_certificate_migrates_without_a_password_by_a_ticket_for_exactly_that_move() {
    // Goal: OP-04 by certificate: alice (LDoms Management in her certificate, no password anywhere) moves ldom1
    // with a ticket signed by her key; a ticket for another move, another signer, a weaker profile or a revoked
    // certificate is PERMISSION_DENIED before anything is begun, saying why.
    let c = Cluster::with_layouts(&["m10-1-1", "m10-1-2", "m10-1-3"], 50).await;
    let user = |profiles: &[&str]| tern_tls::Role::User { profiles: profiles.iter().map(|p| p.to_string()).collect() };
    tern_tls::issue(&c.certs, "alice", &user(&["ldoms-management"]), Some(1)).unwrap();
    tern_tls::issue(&c.certs, "bob", &user(&["ldoms-review"]), Some(1)).unwrap();
    let src = c.host("m10-1-1");
    let denied = |r: Result<tonic::Streaming<pb::MigrateEvent>, tonic::Status>| {
        let e = r.expect_err("refused before the stream");
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
        e.message().to_string()
    };

    // Another move than the one signed: the signature covers domain, target, name and dry run.
    let mut other = c.ticket_request("alice", "ldom1", "m10-1-2", "", true);
    other.domain = "ldom2".into();
    let e = denied(c.migrate_as(src, "alice", other).await);
    assert!(e.contains("signature does not match what it names"), "{e}");
    // Bob's ticket presented by alice: a ticket speaks only for the certificate that calls with it.
    let e = denied(c.migrate_as(src, "alice", c.ticket_request("bob", "ldom1", "m10-1-2", "", true)).await);
    assert!(e.contains("signed with another certificate than the one alice calls with"), "{e}");
    // A member passing bob's ticket on: bob's certificate holds no migrating profile.
    let e = denied(c.migrate_as(src, "m10-1-3", c.ticket_request("bob", "ldom1", "m10-1-2", "", true)).await);
    assert!(e.contains("user bob lacks the \"LDoms Management\" profile"), "{e}");
    // Both ways of logging in at once is a mistake, not a choice.
    let mut both = c.ticket_request("alice", "ldom1", "m10-1-2", "", true);
    (both.user, both.password) = ("root".into(), "x".into());
    let e = c.migrate_as(src, "alice", both).await.expect_err("refused");
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e}");

    let s = c.migrate_as(src, "alice", c.ticket_request("alice", "ldom1", "m10-1-2", "", false)).await.unwrap();
    let Event::Report(r) = Cluster::outcome(s).await.unwrap() else { panic!("no report") };
    assert_eq!((r.source.as_str(), r.target.as_str()), ("m10-1-1", "m10-1-2"));
    let target_log = c.log(c.host("m10-1-2"));
    assert!(
        target_log.contains("login by the user's certificate (OP-04)") && target_log.contains("user=alice"),
        "{target_log}"
    );

    // Revoked: a member passing alice's fresh ticket on is refused once her serial is listed.
    let ticket = c.ticket_request("alice", "ldom2", "m10-1-3", "", true);
    let serial = tern_tls::revoke(&c.certs, "alice").unwrap();
    let e = denied(c.migrate_as(src, "m10-1-3", ticket).await);
    assert!(e.contains(&format!("certificate {serial} is revoked")), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_to_back_dry_runs_never_see_the_previous_ones_reservation() {
    // Goal: OP-02 then OP-02 again at once (no login between to slow it down): the target plans on a state that holds
    // the previous dry run's release, so no run is refused as if ldom1 were already reserved there (OP-05 name-taken).
    let c = Cluster::with_layouts(&["m10-1-1", "m10-1-2", "m10-1-3"], 50).await;
    let src = c.host("m10-1-1");
    for run in 0..30 {
        let s = c.migrate_as(src, "ternctl", c.ticket_request("ternctl", "ldom1", "m10-1-2", "", true)).await.unwrap();
        match Cluster::outcome(s).await.unwrap() {
            Event::Report(r) => assert!(r.dry_run, "{r:?}"),
            other => panic!("dry run {run} refused: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_is_taken_only_from_the_source_and_only_as_the_operation_record_says() {
    // Goal: mid-transfer, Finish(committed) to the target from a bystander's node certificate is refused, and from
    // the source's own certificate it is refused too, because the record does not show the commit: the incoming
    // copy is never activated early, and the migration still ends with ldom1 running once, on the target.
    let c = seed_cluster(&["m10-1-1", "m10-1-2", "m10-1-3"], 2).await;
    let (src, target) = (c.host("m10-1-1"), c.host("m10-1-2"));
    let mut s = c.migrate(src, "ldom1", "m10-1-2", "", false, "root", PW).await.unwrap();
    Cluster::wait_progress(&mut s, 5).await;
    let ops = c.operations(0).await;
    let op = ops.iter().find(|o| o.domain == "ldom1" && o.kind == "migration" && !o.dry_run).expect("running");
    let finish = pb::FinishRequest { operation_id: op.id, domain: "ldom1".into(), committed: true };
    let mut bystander = pb::migration_client::MigrationClient::new(c.channel_as(target, "m10-1-3"));
    let e = bystander.finish(finish.clone()).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert!(e.message().contains("m10-1-3 may not finish ldom1 here"), "{e}");
    let mut source = pb::migration_client::MigrationClient::new(c.channel_as(target, "m10-1-1"));
    let e = source.finish(finish).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e}");
    assert!(e.message().contains("is not recorded as committed here"), "{e}");
    let Event::Report(r) = Cluster::outcome(s).await.unwrap() else { panic!("the migration did not commit") };
    assert_eq!(r.target, "m10-1-2");
    let d = c.domains(0).await.unwrap();
    let copies: Vec<_> = d.iter().filter(|x| x.name == "ldom1").map(|x| x.host.as_str()).collect();
    assert_eq!(copies, vec!["m10-1-2"], "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_mid_transfer_keeps_the_guest_on_the_source_and_records_who_cancelled() {
    // Goal: OP-09: cancel-operation during the transfer, asked of another member, rolls back; ldom1 still runs on
    // m10-1-1, m10-1-2's cores are free again, and the abort is the user's in the audit log. A member's cancel that
    // names no user, or that reaches a host other than the source, is refused.
    let c = seed_cluster(&["m10-1-1", "m10-1-2", "m10-1-3"], 2).await;
    let src = c.host("m10-1-1");
    let mut s = c.migrate(src, "ldom1", "m10-1-2", "", false, "root", PW).await.unwrap();
    Cluster::wait_progress(&mut s, 5).await;
    let cancel = |on_behalf_of: &str| pb::CancelRequest {
        operation: "migration".into(),
        domain: "ldom1".into(),
        on_behalf_of: on_behalf_of.into(),
    };
    let mut as_node = pb::migration_client::MigrationClient::new(c.channel_as(src, "m10-1-3"));
    let e = as_node.cancel(cancel("")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert!(e.message().contains("names no user"), "{e}");
    let mut to_target = pb::migration_client::MigrationClient::new(c.channel_as(c.host("m10-1-2"), "m10-1-3"));
    let e = to_target.cancel(cancel("ternctl")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
    assert!(e.message().contains("not the source m10-1-1"), "{e}");
    let mut m = pb::migration_client::MigrationClient::new(c.channel(c.host("m10-1-3")).await);
    // A user's own call names only itself: what it puts in on_behalf_of is not read.
    m.cancel(cancel("someone-else")).await.unwrap();
    let outcome = Cluster::outcome(s).await.unwrap();
    assert_eq!(rules(&outcome), vec!["OP-09".to_string()]);
    c.wait_operations(0, "the operation cancelled", |ops| ops.iter().any(|o| o.phase == "cancelled")).await;
    let d = c.domains(0).await.unwrap();
    assert!(d.iter().any(|x| x.host == "m10-1-1" && x.name == "ldom1"), "{d:?}");
    assert!(!d.iter().any(|x| x.host == "m10-1-2" && x.name == "ldom1"), "{d:?}");
    let mut admin = pb::cluster_client::ClusterClient::new(c.channel(0).await);
    let audit = admin.audit(pb::AuditRequest::default()).await.unwrap().into_inner().entries;
    let abort = audit.iter().find(|e| e.summary.contains("abort operation") && e.summary.contains("Cancelled"));
    assert_eq!(abort.map(|e| e.actor.as_str()), Some("ternctl"), "{audit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn target_killed_mid_transfer_rolls_back_to_the_source() {
    // Goal: kill -9 of the target during the transfer: the coordinator rolls back, the
    // reservation is released and the guest keeps running on the source.
    let mut c = seed_cluster(&["m10-1-1", "m10-1-3", "m10-1-2"], 2).await;
    let src = c.host("m10-1-1");
    let mut s = c.migrate(src, "ldom1", "m10-1-2", "", false, "root", PW).await.unwrap();
    Cluster::wait_progress(&mut s, 5).await;
    let target = c.host("m10-1-2");
    c.kill(target);
    let outcome = Cluster::outcome(s).await.unwrap();
    let Event::Refused(r) = &outcome else { panic!("expected a rollback, got {outcome:?}") };
    assert!(r.errors[0].message.contains("m10-1-2 stopped answering"), "{r:?}");
    c.wait_operations(0, "rolled back", |ops| ops.iter().any(|o| o.phase == "rolled-back")).await;
    let d = c.domains(0).await.unwrap();
    assert!(d.iter().any(|x| x.host == "m10-1-1" && x.name == "ldom1"), "{d:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_migrations_racing_for_the_last_cores_never_double_book() {
    // Goal: ldom2 (6 cores) and tldom1 (16 threads = 8 M10 cores) both want m10-1-2's 12
    // free cores at once: exactly one wins, the other is refused, nothing is double-booked.
    let c = seed_cluster(&["m10-1-fragmented", "m10-1-2", "t4-1"], 5).await;
    let (a, b) = (c.host("m10-1-fragmented"), c.host("t4-1"));
    let (s1, s2) = tokio::join!(
        c.migrate(a, "ldom2", "m10-1-2", "", false, "root", PW),
        c.migrate(b, "tldom1", "m10-1-2", "", false, "root", PW)
    );
    let (o1, o2) = tokio::join!(Cluster::outcome(s1.unwrap()), Cluster::outcome(s2.unwrap()));
    let (o1, o2) = (o1.unwrap(), o2.unwrap());
    let wins = [&o1, &o2].iter().filter(|o| matches!(o, Event::Report(_))).count();
    assert_eq!(wins, 1, "exactly one migration wins: {o1:?} / {o2:?}");
    let mut inv = pb::inventory_client::InventoryClient::new(c.channel(0).await);
    let dev = inv.list_devices(pb::ListDevicesRequest { host: "m10-1-2".into(), all: true }).await.unwrap();
    let cores = &dev.into_inner().hosts[0].cores;
    assert!(cores.iter().all(|c| c.free_pct == 0 || c.free_pct == 100), "{cores:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_killed_mid_transfer_rolls_back_and_the_guest_survives_its_restart() {
    // Goal: kill -9 of the source (coordinator) mid-transfer: the lease expires, the
    // leader releases the reservation, the target drops its copy; restarted, the source
    // still runs ldom1 and the target's cores are free again.
    let mut c = seed_cluster(&["m10-1-2", "m10-1-3", "m10-1-1"], 2).await;
    let src = c.host("m10-1-1");
    let mut s = c.migrate(src, "ldom1", "m10-1-2", "", false, "root", PW).await.unwrap();
    Cluster::wait_progress(&mut s, 5).await;
    c.kill(src);
    c.wait_operations(0, "the lease expired and the migration rolled back", |ops| {
        ops.iter().any(|o| o.phase == "rolled-back")
    })
    .await;
    c.start(src);
    let start = std::time::Instant::now();
    loop {
        let d = c.domains(0).await.unwrap();
        let free = c.free_cores("m10-1-2").await;
        let on_source = d.iter().any(|x| x.host == "m10-1-1" && x.name == "ldom1" && x.state == "active");
        if on_source && free == 12 && !d.iter().any(|x| x.host == "m10-1-2" && x.name == "ldom1") {
            break;
        }
        assert!(start.elapsed() < tern_tests::WAIT, "never settled: free cores {free}, domains {d:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evacuation_moves_what_fits_reports_the_rest_and_restore_brings_them_back() {
    // Goal: UC-1: evacuating m10-1-3 reports ldom5 (internal disk, LM-03) as staying;
    // evacuating m10-1-1 moves ldom1 and marks it maintenance; restore brings ldom1 home.
    let c = seed_cluster(&["m10-1-1", "m10-1-2", "m10-1-3"], 50).await;
    let host_op = |host: &'static str, restore: bool| {
        let c = &c;
        async move {
            let mut h = pb::hosts_client::HostsClient::new(c.stream_channel(0).await);
            let req = pb::HostRequest { host: host.into(), user: "root".into(), password: PW.into() };
            let mut s = if restore { h.restore(req).await } else { h.evacuate(req).await }.unwrap().into_inner();
            let mut guests = Vec::new();
            while let Some(e) = s.message().await.unwrap() {
                match e.event.unwrap() {
                    pb::host_event::Event::Guest(g) => guests.push(g),
                    pb::host_event::Event::Done(d) => return (guests, d),
                }
            }
            panic!("no summary");
        }
    };
    let (guests, done) = host_op("m10-1-3", false).await;
    assert_eq!(done.stayed, 1, "{guests:?}");
    assert!(guests[0].reasons.iter().any(|v| v.rule == "LM-03"), "{guests:?}");
    let (guests, done) = host_op("m10-1-1", false).await;
    assert_eq!((done.moved, done.stayed, done.status.as_str()), (1, 0, "maintenance"), "{guests:?}");
    assert_eq!(guests[0].target, "m10-1-2");
    let st = c.status(0).await.unwrap();
    let m1 = st.members.iter().find(|m| m.name == "m10-1-1").unwrap();
    assert_eq!(m1.host_status, pb::HostStatus::Maintenance as i32);
    let (guests, done) = host_op("m10-1-1", true).await;
    assert_eq!((done.moved, done.status.as_str()), (1, "up"), "{guests:?}");
    let d = c.domains(0).await.unwrap();
    assert!(d.iter().any(|x| x.host == "m10-1-1" && x.name == "ldom1"), "{d:?}");
    // Each evacuation and the restore is an operation of its own, Done with its summary.
    let mut m = pb::migration_client::MigrationClient::new(c.channel(0).await);
    let ops = m.list_operations(pb::ListOperationsRequest { limit: 0 }).await.unwrap().into_inner().operations;
    let evacuations: Vec<(&str, &str)> =
        ops.iter().filter(|o| o.kind == "evacuation").map(|o| (o.source.as_str(), o.phase.as_str())).collect();
    assert_eq!(evacuations, [("m10-1-1", "done"), ("m10-1-1", "done"), ("m10-1-3", "done")], "{ops:?}");
    let notes: Vec<&str> = ops
        .iter()
        .filter(|o| o.kind == "evacuation")
        .flat_map(|o| o.report.iter().flat_map(|r| &r.notes))
        .map(String::as_str)
        .collect();
    assert!(notes.contains(&"evacuated m10-1-3: 0 guest(s) moved, 1 stayed"), "{notes:?}");
    assert!(notes.contains(&"restored m10-1-1: 1 guest(s) moved, 0 stayed"), "{notes:?}");
    // ternctl list-operations prints an evacuation's summary as its result.
    let out = std::process::Command::new(tern_tests::binary("ternctl"))
        .args(["--agent", &c.addr(0), "--certs-dir", c.certs.to_str().unwrap(), "list-operations"])
        .output()
        .expect("running ternctl");
    let text = String::from_utf8_lossy(&out.stdout);
    let row = text.lines().find(|l| l.contains("evacuation") && l.contains("m10-1-3")).unwrap_or_default();
    assert!(row.ends_with("evacuated m10-1-3: 0 guest(s) moved, 1 stayed"), "{text}");
}
