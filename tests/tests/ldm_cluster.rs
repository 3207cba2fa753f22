//! `ternctl local-cluster up --backend ldm` (issue 15, item 3): three real ternd
//! processes on the ldm backend, each running `ldm` commands against its own fake-ldm
//! server (fleet mode: `DIR/fleet/<host>/server.json`), where `migrate-domain` really
//! moves the guest from one server's state to the other's.
//!
//! Through that path: a live migration, a dry run refused by ldm's own message mapped
//! to its rule id, a cancel, and kill -9 of the source's agent mid-migration.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tern_tests::{output_text as text, ternctl_with as ternctl_env};

const WAIT: Duration = Duration::from_secs(90);

struct LdmCluster {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    env: Vec<(String, String)>,
}

impl LdmCluster {
    fn up() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("cluster");
        let layouts = tern_tests::layout("m10-1-1").parent().unwrap().to_path_buf();
        // ternctl finds fake-ldm beside itself; make sure it is built.
        let _ = tern_tests::binary("fake-ldm");
        let out = ternctl_env(
            &[
                "local-cluster",
                "up",
                "--backend",
                "ldm",
                "--dir",
                dir.to_str().unwrap(),
                "--layouts",
                layouts.to_str().unwrap(),
            ],
            &[],
        );
        let printed = text(&out);
        let mut c = Self { _tmp: tmp, dir, env: Vec::new() };
        assert!(out.status.success(), "{printed}");
        let export = printed.lines().find_map(|l| l.strip_prefix("export ")).expect("the export line");
        c.env = export.split(' ').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.into(), v.into())).collect();
        c
    }

    fn ternctl(&self, args: &[&str]) -> Output {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ternctl_env(args, &env)
    }

    fn spawn_ternctl(&self, args: &[&str]) -> Child {
        let mut cmd = Command::new(tern_tests::binary("ternctl"));
        cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    }

    fn password(&self) -> String {
        self.dir.join("root.password").display().to_string()
    }

    fn fleet(&self, host: &str) -> PathBuf {
        self.dir.join("fleet").join(host)
    }

    /// The guests ldm itself holds on `host` (its fake server's state), with their state.
    fn ldm_guests(&self, host: &str) -> Vec<String> {
        let text = std::fs::read_to_string(self.fleet(host).join("server.json")).unwrap();
        let server: tern_model::Server = serde_json::from_str(&text).unwrap();
        server
            .domains
            .iter()
            .filter(|d| d.kind == tern_model::DomainKind::Guest)
            .map(|d| format!("{} {}", d.name, d.state))
            .collect()
    }

    /// The host the cluster records `domain` on, per `ternctl list-domain`.
    fn recorded_host(&self, domain: &str) -> Option<String> {
        let out = self.ternctl(&["list-domain"]);
        if !out.status.success() {
            return None;
        }
        text(&out).lines().find_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.first() == Some(&domain)).then(|| w[1].to_string())
        })
    }

    /// The guests `ternctl ha check` says would not restart (ha-priority none) were
    /// `host` lost: the cluster's records of the guests on `host`.
    fn never_restarted_on(&self, host: &str) -> Vec<String> {
        let out = self.ternctl(&["ha", "check"]);
        let header = format!("if {host} is lost:");
        let mut section = false;
        let mut never = Vec::new();
        for line in text(&out).lines() {
            if line.starts_with("if ") {
                section = line.starts_with(&header);
            } else if section && let Some(list) = line.trim().strip_prefix("not restarted (ha-priority none): ") {
                never.extend(list.split(", ").map(str::to_string));
            }
        }
        never
    }

    fn wait_for(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let start = Instant::now();
        while !cond() {
            assert!(start.elapsed() < WAIT, "timed out waiting for {what}; agents' logs under {}", self.dir.display());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the target's fake server shows the migration running.
    fn wait_for_migration_on(&self, target: &str, domain: &str) {
        let op = self.fleet(target).join(format!("op.{domain}"));
        self.wait_for("ldm's migration to start", || op.exists());
    }
}

impl Drop for LdmCluster {
    fn drop(&mut self) {
        let _ = ternctl_env(&["local-cluster", "down", "--dir", self.dir.to_str().unwrap()], &[]);
    }
}

fn finish(child: Child) -> Output {
    child.wait_with_output().unwrap()
}

fn pid_of(node: &Path) -> String {
    std::fs::read_to_string(node.join("ternd.pid")).unwrap().trim().to_string()
}

#[test]
fn on_fake_ldm_a_dry_run_is_refused_in_ldms_words_a_cancel_keeps_the_guest_and_a_migration_moves_it() {
    // Goal: the ldm backend end to end: ldm's refusal carries its rule id, cancel-operation leaves ldom1 home, a live migration moves it on both ldm and the cluster.
    let c = LdmCluster::up();
    let pw = c.password();
    assert_eq!(c.recorded_host("ldom1").as_deref(), Some("m10-1-1"));

    // 1. ldm itself refuses the dry run (the cluster's preflight passed): LM-09 in its words.
    let refusal = "Unable to bind 2G memory region at real address 0x8000000\n\
                   Domain Migration of LDom ldom1 would fail if attempted\n";
    std::fs::write(c.fleet("m10-1-1").join("migrate-domain.fail"), refusal).unwrap();
    let dry = c.ternctl(&["migrate-domain", "-n", "-p", &pw, "ldom1", "m10-1-2"]);
    assert!(!dry.status.success(), "{}", text(&dry));
    assert!(text(&dry).contains("LM-09"), "the rule ldm's message maps to: {}", text(&dry));
    assert!(text(&dry).contains("Unable to bind 2G memory region"), "ldm's own words: {}", text(&dry));
    std::fs::remove_file(c.fleet("m10-1-1").join("migrate-domain.fail")).unwrap();
    let log = std::fs::read_to_string(c.fleet("m10-1-1").join("commands.log")).unwrap();
    assert!(log.lines().any(|l| l.starts_with("migrate-domain -n -p ")), "ldm was asked: {log}");

    // 2. Cancel (OP-09): `ldm cancel-operation migration ldom1`; ldom1 stays on m10-1-1.
    std::fs::write(c.fleet("m10-1-1").join("migration_ms"), "120000").unwrap();
    let running = c.spawn_ternctl(&["migrate-domain", "-p", &pw, "ldom1", "m10-1-2"]);
    c.wait_for_migration_on("m10-1-2", "ldom1");
    let cancel = c.ternctl(&["cancel-operation", "migration", "ldom1"]);
    assert!(cancel.status.success(), "{}", text(&cancel));
    let out = finish(running);
    assert!(text(&out).contains("cancel"), "{}", text(&out));
    assert_eq!(c.ldm_guests("m10-1-1"), ["ldom1 active"]);
    assert!(c.ldm_guests("m10-1-2").iter().all(|g| !g.starts_with("ldom1")));
    assert_eq!(c.recorded_host("ldom1").as_deref(), Some("m10-1-1"));
    let log = std::fs::read_to_string(c.fleet("m10-1-1").join("commands.log")).unwrap();
    assert!(log.lines().any(|l| l == "cancel-operation migration ldom1"), "{log}");

    // 3. A live migration: ldm moves the guest, the cluster records where ldm put it.
    std::fs::write(c.fleet("m10-1-1").join("migration_ms"), "1500").unwrap();
    let live = c.ternctl(&["migrate-domain", "-p", &pw, "ldom1", "m10-1-2"]);
    assert!(live.status.success(), "{}", text(&live));
    assert!(text(&live).contains("ldom1 migrated from m10-1-1 to m10-1-2"), "{}", text(&live));
    assert_eq!(c.ldm_guests("m10-1-2"), ["ldom1 active"]);
    assert!(c.ldm_guests("m10-1-1").is_empty());
    c.wait_for("the cluster to record ldom1 on m10-1-2", || c.recorded_host("ldom1").as_deref() == Some("m10-1-2"));
}

#[test]
fn kill_9_of_the_source_agent_mid_migration_leaves_the_guest_where_ldm_put_it_and_the_cluster_agrees() {
    // Goal: ldm finishes a migration whose coordinating agent was killed; after restart the guest runs once, where ldm put it, and the cluster records it there.
    let c = LdmCluster::up();
    let pw = c.password();
    let set = c.ternctl(&["set-domain", "ha-priority=none", "ldom1"]);
    assert!(set.status.success(), "{}", text(&set));
    assert_eq!(c.never_restarted_on("m10-1-1"), ["ldom1"]);
    std::fs::write(c.fleet("m10-1-1").join("migration_ms"), "4000").unwrap();
    // Asked of the source's agent (OP-01); the client's stream dies with it.
    let running = c.spawn_ternctl(&["migrate-domain", "-p", &pw, "ldom1", "m10-1-2"]);
    c.wait_for_migration_on("m10-1-2", "ldom1");
    let source = c.dir.join("m10-1-1");
    let killed = Command::new("kill").args(["-9", &pid_of(&source)]).status().unwrap();
    assert!(killed.success());
    let _ = finish(running);
    // ldm's migrate-domain outlives the agent that started it (ldmd runs the migration).
    c.wait_for("ldm to finish the move", || c.ldm_guests("m10-1-2") == ["ldom1 active"]);
    assert!(c.ldm_guests("m10-1-1").is_empty());

    // The agent comes back (as its supervisor would restart it).
    let log = std::fs::OpenOptions::new().append(true).open(source.join("ternd.log")).unwrap();
    let mut child = Command::new(tern_tests::binary("ternd"))
        .arg("--config")
        .arg(source.join("ternd.toml"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    std::fs::write(source.join("ternd.pid"), format!("{}\n", child.id())).unwrap();

    c.wait_for("the cluster to record ldom1 where ldm put it", || {
        c.recorded_host("ldom1").as_deref() == Some("m10-1-2")
    });
    c.wait_for("the migration to end", || {
        let ops = c.ternctl(&["list-operations"]);
        let t = text(&ops);
        ops.status.success()
            && t.lines().filter(|l| l.contains(" migration ") && l.contains("ldom1")).all(|l| {
                ["done", "rolled-back", "failed", "cancelled", "aborted", "settled"].iter().any(|p| l.contains(p))
            })
    });
    // The record moved with its HA settings: the guest is the same guest.
    // (A record made anew would have the default, medium, and be placed on a loss.)
    c.wait_for("ldom1's record, ha-priority none, on m10-1-2", || c.never_restarted_on("m10-1-2") == ["ldom1"]);
    assert!(c.never_restarted_on("m10-1-1").is_empty());
    // The migration the cluster rolled back says where ldm put the guest after all.
    let ops = text(&c.ternctl(&["list-operations"]));
    assert!(ops.contains("settled by the hypervisor: ldom1 runs on m10-1-2"), "{ops}");
    // Never destroyed, never two copies: ldm holds ldom1 once, on m10-1-2, running.
    assert_eq!(c.ldm_guests("m10-1-2"), ["ldom1 active"]);
    assert!(c.ldm_guests("m10-1-1").is_empty());
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let _ = child.wait();
}
