//! The simulated server: migration with progress and cancel, receive, persistence.

use std::path::PathBuf;
use tern_hypervisor::sim::{SimHypervisor, SimOptions};
use tern_hypervisor::{HvError, Hypervisor, Incoming, MigrateOut, Pending, Progress};
use tern_model::precopy::PrecopyParams;
use tern_model::{MigrationQuery, Reserved, preflight};
use tokio::sync::mpsc;

fn layout(name: &str) -> PathBuf {
    manifest_dir().join("../deploy/layouts").join(format!("{name}.toml"))
}

fn open(name: &str, state: Option<PathBuf>) -> SimHypervisor {
    SimHypervisor::open(SimOptions {
        layout: layout(name),
        state_file: state,
        time_scale: 1,
        precopy: PrecopyParams::default(),
    })
    .unwrap()
}

async fn plan_ldom1(src: &SimHypervisor, dst: &SimHypervisor) -> MigrateOut {
    let (s, t) = (src.inventory().await.unwrap(), dst.inventory().await.unwrap());
    let report = preflight(&MigrationQuery {
        source: &s,
        target: &t,
        domain: "ldom1",
        new_name: None,
        target_reserved: &Reserved::default(),
    });
    MigrateOut {
        domain: "ldom1".into(),
        target: t.name.clone(),
        new_name: None,
        binding: report.binding.unwrap(),
        operation: 7,
    }
}

#[tokio::test(start_paused = true)]
async fn migration_reports_rising_progress_then_removes_the_domain() {
    // Goal: OP-06 progress climbs to 100% and the source no longer has the guest.
    let src = open("m10-1-1", None);
    let dst = open("m10-1-2", None);
    let req = plan_ldom1(&src, &dst).await;
    let (tx, mut rx) = mpsc::channel::<Progress>(1024);
    let outcome = src.migrate_out(req, tx).await.unwrap();
    let mut seen = Vec::new();
    while let Ok(p) = rx.try_recv() {
        seen.push(p.pct);
    }
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    assert_eq!(seen.last(), Some(&100));
    assert!(outcome.downtime_ms < outcome.total_ms);
    assert!(src.inventory().await.unwrap().domain("ldom1").is_some(), "suspended until the commit");
    src.finish_migrate_out("ldom1", true).await.unwrap();
    assert!(src.inventory().await.unwrap().domain("ldom1").is_none());
}

#[tokio::test(start_paused = true)]
async fn an_uncommitted_migration_resumes_the_guest_on_the_source() {
    // Goal: a copy that was never committed leaves the guest on the source, usable again.
    let src = open("m10-1-1", None);
    let dst = open("m10-1-2", None);
    let req = plan_ldom1(&src, &dst).await;
    let (tx, _rx) = mpsc::channel::<Progress>(1024);
    src.migrate_out(req, tx).await.unwrap();
    assert!(matches!(src.stop("ldom1").await, Err(HvError::Busy(_))), "held while the fate is open");
    src.finish_migrate_out("ldom1", false).await.unwrap();
    assert_eq!(src.inventory().await.unwrap().cpu_of("ldom1").cids.len(), 4);
    src.stop("ldom1").await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn cancel_mid_transfer_keeps_the_guest_on_the_source() {
    // Goal: OP-09: a cancelled migration leaves ldom1 bound and running on the source.
    let src = std::sync::Arc::new(open("m10-1-1", None));
    let dst = open("m10-1-2", None);
    let req = plan_ldom1(&src, &dst).await;
    let (tx, mut rx) = mpsc::channel::<Progress>(1024);
    let task = tokio::spawn({
        let src = src.clone();
        async move { src.migrate_out(req, tx).await }
    });
    while let Some(p) = rx.recv().await {
        if p.pct >= 30 {
            break;
        }
    }
    src.cancel_migration("ldom1").await.unwrap();
    let err = task.await.unwrap().unwrap_err();
    assert!(matches!(err, HvError::Cancelled(_)), "{err}");
    let inv = src.inventory().await.unwrap();
    assert_eq!(inv.cpu_of("ldom1").cids.len(), 4);
    assert!(matches!(src.cancel_migration("ldom1").await, Err(HvError::Invalid(_))));
}

#[tokio::test]
async fn receive_then_rollback_frees_the_reserved_resources() {
    // Goal: a target that drops an incoming guest is left exactly as before.
    let src = open("m10-1-1", None);
    let dst = open("m10-1-2", None);
    let before = dst.inventory().await.unwrap();
    let req = plan_ldom1(&src, &dst).await;
    let domain = src.inventory().await.unwrap().domain("ldom1").unwrap().clone();
    dst.receive(Incoming { domain, binding: req.binding.clone(), source: "m10-1-1".into(), operation: 7 })
        .await
        .unwrap();
    assert_eq!(dst.incoming().await.unwrap(), [Pending { domain: "ldom1".into(), operation: 7 }]);
    let during = dst.inventory().await.unwrap();
    assert_eq!(during.cpu_of("ldom1").strands, req.binding.strands);
    dst.finish_receive("ldom1", false).await.unwrap();
    assert_eq!(dst.inventory().await.unwrap(), before);
}

#[tokio::test]
async fn state_survives_a_restart() {
    // Goal: a restarted agent finds the server as it left it, not as the layout says.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("sim-state.json");
    {
        let src = open("m10-1-1", Some(state.clone()));
        src.stop("ldom1").await.unwrap();
        src.unbind("ldom1").await.unwrap();
    }
    let again = open("m10-1-1", Some(state.clone()));
    assert!(again.inventory().await.unwrap().domain("ldom1").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_guest_suspended_for_its_final_copy_stays_suspended_across_a_restart() {
    // Goal: a restarted agent finds a copied guest still suspended (not running) until the verdict, either way.
    let dir = tempfile::tempdir().unwrap();
    for committed in [true, false] {
        let (state, dst) = (dir.path().join(format!("sim-{committed}.json")), open("m10-1-2", None));
        {
            let src = open("m10-1-1", Some(state.clone()));
            let req = plan_ldom1(&src, &dst).await;
            let (tx, _rx) = mpsc::channel::<Progress>(1024);
            src.migrate_out(req, tx).await.unwrap();
        }
        let again = open("m10-1-1", Some(state.clone()));
        assert_eq!(again.suspended().await.unwrap(), [Pending { domain: "ldom1".into(), operation: 7 }]);
        assert!(matches!(again.start("ldom1").await, Err(HvError::Busy(_))), "not resumed on its own");
        assert!(matches!(again.stop("ldom1").await, Err(HvError::Busy(_))));
        let (tx, _rx) = mpsc::channel::<Progress>(1);
        let req = plan_ldom1(&again, &dst).await;
        assert!(matches!(again.migrate_out(req, tx).await, Err(HvError::Busy(_))), "no second copy before the verdict");
        again.finish_migrate_out("ldom1", committed).await.unwrap();
        assert!(again.suspended().await.unwrap().is_empty());
        let third = open("m10-1-1", Some(state));
        assert_eq!(third.inventory().await.unwrap().domain("ldom1").is_some(), !committed);
        assert!(third.suspended().await.unwrap().is_empty());
    }
}

#[tokio::test(start_paused = true)]
async fn a_migration_still_copying_when_the_agent_dies_leaves_the_guest_running() {
    // Goal: a pre-copy that had not suspended the guest is gone after a restart; the guest runs on the source.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("sim-state.json");
    let dst = open("m10-1-2", None);
    {
        let src = open("m10-1-1", Some(state.clone()));
        let req = plan_ldom1(&src, &dst).await;
        let (tx, mut rx) = mpsc::channel::<Progress>(1024);
        let copy = src.migrate_out(req, tx);
        tokio::pin!(copy);
        loop {
            tokio::select! {
                _ = &mut copy => panic!("the copy finished before it could be interrupted"),
                Some(p) = rx.recv() => if p.pct >= 30 { assert!(!p.suspended); break },
            }
        }
    }
    let again = open("m10-1-1", Some(state));
    assert!(again.suspended().await.unwrap().is_empty());
    again.stop("ldom1").await.unwrap();
}

#[tokio::test]
async fn a_version_1_state_file_is_read_with_its_incoming_guests_of_unknown_operation() {
    // Goal: a state file from before operation ids were kept still opens; its incoming guest is pending on operation 0.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("sim-state.json");
    let (src, dst) = (open("m10-1-1", None), open("m10-1-2", None));
    let req = plan_ldom1(&src, &dst).await;
    let domain = src.inventory().await.unwrap().domain("ldom1").unwrap().clone();
    dst.receive(Incoming { domain, binding: req.binding, source: "m10-1-1".into(), operation: 7 }).await.unwrap();
    let v1 = serde_json::json!({ "version": 1, "server": dst.inventory().await.unwrap(), "incoming": ["ldom1"] });
    std::fs::write(&state, serde_json::to_vec(&v1).unwrap()).unwrap();
    let again = open("m10-1-2", Some(state.clone()));
    assert_eq!(again.incoming().await.unwrap(), [Pending { domain: "ldom1".into(), operation: 0 }]);
    again.finish_receive("ldom1", true).await.unwrap();
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.contains("\"version\": 2"), "rewritten in the current format: {text}");
}

#[tokio::test]
async fn corrupt_state_file_is_a_clear_error() {
    // Goal: garbage in the state file is refused with the file's name, never loaded.
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("sim-state.json");
    std::fs::write(&state, b"{ not json").unwrap();
    let err = SimHypervisor::open(SimOptions {
        layout: layout("m10-1-1"),
        state_file: Some(state),
        time_scale: 1,
        precopy: PrecopyParams::default(),
    })
    .err()
    .expect("corrupt state must not load");
    assert!(err.to_string().contains("sim-state.json"), "{err}");
}

#[tokio::test]
async fn an_active_domain_cannot_be_unbound() {
    // Goal: like ldm, unbinding a running domain is refused until it is stopped.
    let src = open("m10-1-1", None);
    assert!(matches!(src.unbind("ldom1").await, Err(HvError::Busy(_))));
    assert!(matches!(src.unbind("nosuch").await, Err(HvError::NotFound(_))));
}

/// This package's folder, read at run time first: one target folder serves every checkout.
#[test]
fn a_failed_control_domain_stops_only_its_slaves_under_failure_policy_stop() {
    // Goal: HA-08 in the sim: m10-1-3's primary (failure-policy stop) failing stops its
    // slave ldom5; m10-1-1's ldom1 (no master) keeps running; the state file says so.
    let dir = tempfile::tempdir().unwrap();
    for (name, stopped, running) in [("m10-1-3", vec!["ldom5"], vec![]), ("m10-1-1", vec![], vec!["ldom1"])] {
        let state = dir.path().join(format!("{name}.json"));
        drop(open(name, Some(state.clone())));
        assert_eq!(tern_hypervisor::sim::crash_control_domain(&state).unwrap(), stopped, "{name}");
        assert_eq!(tern_hypervisor::sim::running_guests(&state).unwrap(), running, "{name}");
    }
}

#[tokio::test]
async fn a_reset_or_panic_policy_boots_the_slave_again_so_it_keeps_running() {
    // Goal: HA-08: only failure-policy stop keeps a slave stopped; with reset it runs again on the same server.
    let mut server = open("m10-1-3", None).inventory().await.unwrap();
    server.domain_mut("primary").unwrap().failure_policy = tern_model::FailurePolicy::Reset;
    let hv = SimHypervisor::from_server(server, 1);
    assert!(hv.control_domain_fails_now().unwrap().is_empty());
    let inv = hv.inventory().await.unwrap();
    assert_eq!(inv.domain("ldom5").unwrap().state, tern_model::DomainState::Active);
}

fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}
