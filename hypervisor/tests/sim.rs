//! The simulated server: migration with progress and cancel, receive, persistence.

use std::path::{Path, PathBuf};
use tern_hypervisor::sim::{SimHypervisor, SimOptions};
use tern_hypervisor::{HvError, Hypervisor, Incoming, MigrateOut, Progress};
use tern_model::precopy::PrecopyParams;
use tern_model::{MigrationQuery, Reserved, preflight};
use tokio::sync::mpsc;

fn layout(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/layouts").join(format!("{name}.toml"))
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
    MigrateOut { domain: "ldom1".into(), target: t.name.clone(), new_name: None, binding: report.binding.unwrap() }
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
    dst.receive(Incoming { domain, binding: req.binding.clone(), source: "m10-1-1".into() }).await.unwrap();
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
