//! LdmHypervisor on fake-ldm's fleet mode: two stateful fake servers made from the
//! shipped layouts, where `ldm migrate-domain` really moves the guest from one
//! server's state to the other's, refuses in ldm's words, and can be cancelled.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tern_hypervisor::ldm::render::{unprinted, write_fleet_server};
use tern_hypervisor::ldm::{LdmHypervisor, LdmOptions};
use tern_hypervisor::{HvError, Hypervisor, MigrateOut, Progress};
use tern_model::{Binding, DomainState, Server};
use tokio::sync::mpsc;

const PASSWORD: &str = "fleet-pass";

struct Fleet {
    dir: tempfile::TempDir,
}

fn layout(name: &str) -> Server {
    let p = tern_hypervisor::layout::shipped_layouts_dir().join(format!("{name}.toml"));
    tern_hypervisor::layout::load_layout(&p).unwrap()
}

impl Fleet {
    fn new(servers: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for name in servers {
            write_fleet_server(dir.path(), &layout(name), Path::new(env!("CARGO_BIN_EXE_fake-ldm"))).unwrap();
        }
        Self { dir }
    }

    fn server_dir(&self, host: &str) -> PathBuf {
        self.dir.path().join(host)
    }

    fn set(&self, host: &str, file: &str, content: &str) {
        std::fs::write(self.server_dir(host).join(file), content).unwrap();
    }

    /// The agent's view of `host`, through ldm.
    fn hypervisor(&self, host: &str) -> LdmHypervisor {
        let (facts, shared, inactive) = unprinted(&layout(host));
        let mut o = LdmOptions::new(host, facts);
        o.ldm_path = self.server_dir(host).join("ldm");
        o.password_dir = self.server_dir(host);
        o.shared_storage = shared;
        o.inactive_cids = inactive;
        o.progress_interval = Duration::from_millis(40);
        let hv = LdmHypervisor::new(o).unwrap();
        hv.set_target_password("m10-1-2", PASSWORD);
        hv.set_target_password("m10-1-fragmented", PASSWORD);
        hv
    }
}

fn ldom1_to(target: &str) -> MigrateOut {
    MigrateOut {
        domain: "ldom1".into(),
        target: target.into(),
        new_name: None,
        binding: Binding::default(),
        operation: 7,
    }
}

fn state_of(s: &Server, domain: &str) -> Option<DomainState> {
    s.domain(domain).map(|d| d.state)
}

#[tokio::test]
async fn a_live_migration_moves_the_guest_between_the_servers_ldm_reports() {
    // Goal: after migrate-domain, ldm on the source no longer lists ldom1 and ldm on the target lists it active.
    let fleet = Fleet::new(&["m10-1-1", "m10-1-2"]);
    fleet.set("m10-1-1", "migration_ms", "600");
    let (src, dst) = (fleet.hypervisor("m10-1-1"), fleet.hypervisor("m10-1-2"));
    let before = dst.inventory().await.unwrap();
    assert_eq!(state_of(&src.inventory().await.unwrap(), "ldom1"), Some(DomainState::Active));
    src.check_migration(&ldom1_to("m10-1-2")).await.unwrap();
    let (tx, mut rx) = mpsc::channel(64);
    src.migrate_out(ldom1_to("m10-1-2"), tx).await.unwrap();
    let mut seen: Vec<Progress> = Vec::new();
    while let Ok(p) = rx.try_recv() {
        seen.push(p);
    }
    assert!(seen.iter().any(|p| p.pct > 0 && p.pct < 100), "progress between 0 and 100 was polled: {seen:?}");
    let (after_src, after_dst) = (src.inventory().await.unwrap(), dst.inventory().await.unwrap());
    assert_eq!(state_of(&after_src, "ldom1"), None);
    assert_eq!(state_of(&after_dst, "ldom1"), Some(DomainState::Active));
    assert_eq!(after_dst.cpu_of("ldom1").strands.len(), 8, "the guest keeps its 8 CPUs");
    assert!(before.free_cores(&Default::default()).len() > after_dst.free_cores(&Default::default()).len());
    // Told afterwards to resume on the source, the backend finds ldm settled it (item 2).
    assert!(matches!(src.finish_migrate_out("ldom1", false).await, Err(HvError::Settled(_))));
}

#[tokio::test]
async fn a_dry_run_to_a_server_that_cannot_hold_the_guest_is_refused_in_ldms_words_with_its_rule() {
    // Goal: ldm's refusal of an impossible move reaches the caller prefixed with the rule it maps to.
    let fleet = Fleet::new(&["m10-1-1", "m10-1-fragmented"]);
    let src = fleet.hypervisor("m10-1-1");
    let err = src.check_migration(&ldom1_to("m10-1-fragmented")).await.unwrap_err();
    let HvError::Failed(msg) = &err else { panic!("{err:?}") };
    assert!(msg.starts_with("LM-0") || msg.starts_with("LM-1"), "a rule id leads: {msg}");
    assert!(msg.contains("would fail if attempted"), "{msg}");
    assert_eq!(state_of(&src.inventory().await.unwrap(), "ldom1"), Some(DomainState::Active));
}

#[tokio::test]
async fn a_target_without_ldmd_is_refused_and_the_guest_stays() {
    // Goal: migrating to a host with no ldm fails with ldm's connection message; nothing moves.
    let fleet = Fleet::new(&["m10-1-1"]);
    let src = fleet.hypervisor("m10-1-1");
    let (tx, _rx) = mpsc::channel(64);
    let err = src.migrate_out(ldom1_to("m10-1-2"), tx).await.unwrap_err();
    assert!(err.to_string().contains("Failed to establish connection with ldmd"), "{err}");
    assert_eq!(state_of(&src.inventory().await.unwrap(), "ldom1"), Some(DomainState::Active));
}

#[tokio::test]
async fn a_cancelled_migration_leaves_the_guest_on_the_source_and_the_target_unchanged() {
    // Goal: cancel-operation migration (OP-09) stops the move; both servers are as they were.
    let fleet = Fleet::new(&["m10-1-1", "m10-1-2"]);
    fleet.set("m10-1-1", "migration_ms", "60000");
    let src = std::sync::Arc::new(fleet.hypervisor("m10-1-1"));
    let dst = fleet.hypervisor("m10-1-2");
    let target_before = dst.inventory().await.unwrap();
    let (tx, _rx) = mpsc::channel(64);
    let running = {
        let src = src.clone();
        tokio::spawn(async move { src.migrate_out(ldom1_to("m10-1-2"), tx).await })
    };
    let start = Instant::now();
    while !fleet.server_dir("m10-1-2").join("op.ldom1").exists() {
        assert!(start.elapsed() < Duration::from_secs(20), "the migration never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    src.cancel_migration("ldom1").await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(20), running).await.unwrap().unwrap();
    assert!(matches!(result, Err(HvError::Cancelled(_))), "{result:?}");
    assert_eq!(state_of(&src.inventory().await.unwrap(), "ldom1"), Some(DomainState::Active));
    assert_eq!(dst.inventory().await.unwrap(), target_before);
    assert!(!fleet.server_dir("m10-1-2").join("op.ldom1").exists(), "the target forgets the cancelled migration");
}
