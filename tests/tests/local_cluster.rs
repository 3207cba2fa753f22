//! `ternctl local-cluster up|down` with real ternd processes (OP-03, OP-04; issue 5):
//! root's password file, a founder that can rejoin, and a clean stop.
//!
//! ternctl starts the ternd built beside it ([`tern_tests::binary`] builds both).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tern_tests::{output_text as text, ternctl_with as ternctl};

/// Stops the cluster however the test ends.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = ternctl(&["local-cluster", "down", "--dir", self.0.to_str().unwrap()], &[]);
    }
}

/// Whether the agent's process still runs (a zombie no init has reaped yet does not).
fn pid_alive(node: &Path) -> bool {
    let pid = std::fs::read_to_string(node.join("ternd.pid")).unwrap();
    std::fs::read_to_string(format!("/proc/{}/stat", pid.trim()))
        .is_ok_and(|stat| stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"))
}

#[test]
fn local_cluster_up_serves_root_by_its_password_file_and_down_stops_every_agent() {
    // Goal: up starts 3 agents, root.password (0600) lets root dry-run a migration, the founder can rejoin, down stops all.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cluster");
    let dir_s = dir.to_str().unwrap();
    let layouts = tern_tests::layout("m10-1-1").parent().unwrap().to_path_buf();
    let out = ternctl(&["local-cluster", "up", "--dir", dir_s, "--layouts", layouts.to_str().unwrap()], &[]);
    let _down = Down(dir.clone());
    assert!(out.status.success(), "{}", text(&out));
    let printed = text(&out);
    let export = printed.lines().find_map(|l| l.strip_prefix("export ")).expect("the export line");
    let env: Vec<(&str, &str)> = export.split(' ').filter_map(|kv| kv.split_once('=')).collect();
    assert_eq!(env.iter().map(|(k, _)| *k).collect::<Vec<_>>(), ["TERN_AGENT", "TERN_CERTS_DIR"], "{printed}");

    let password = dir.join("root.password");
    let mode = std::fs::metadata(&password).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "root.password must be readable by its owner only");

    // The founder (m10-1-1) joins through the two others when it restarts.
    let founder = std::fs::read_to_string(dir.join("m10-1-1/ternd.toml")).unwrap();
    let join = founder.lines().find(|l| l.starts_with("join = ")).unwrap();
    for other in ["m10-1-2", "m10-1-3"] {
        let addr = std::fs::read_to_string(dir.join(other).join("data/ternd.addr")).unwrap();
        assert!(join.contains(&format!("\"{}\"", addr.trim())), "{join} lacks {other}");
    }

    let dry = ternctl(&["migrate-domain", "-n", "-p", password.to_str().unwrap(), "ldom1", "root@m10-1-2"], &env);
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(text(&dry).contains("m10-1-2"), "{}", text(&dry));

    let wrong = tmp.path().join("wrong.password");
    std::fs::write(&wrong, "not-the-password\n").unwrap();
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o600)).unwrap();
    let denied = ternctl(&["migrate-domain", "-n", "-p", wrong.to_str().unwrap(), "ldom1", "m10-1-2"], &env);
    assert!(!denied.status.success());
    assert!(text(&denied).contains("authentication failed for user root"), "{}", text(&denied));

    // Neither user@ nor -p: the client certificate stands for the login, by a ticket signed for this move (OP-04).
    let by_ticket = ternctl(&["migrate-domain", "-n", "ldom1", "m10-1-2"], &env);
    assert!(by_ticket.status.success(), "{}", text(&by_ticket));
    let certs = Path::new(env.iter().find(|(k, _)| *k == "TERN_CERTS_DIR").unwrap().1);
    tern_tls::issue(certs, "reviewer", &tern_tls::Role::User { profiles: vec!["ldoms-review".into()] }, Some(1))
        .unwrap();
    let weak = ternctl(&["migrate-domain", "-n", "--cert-name", "reviewer", "ldom1", "m10-1-2"], &env);
    assert_eq!(weak.status.code(), Some(2), "{}", text(&weak));
    assert!(text(&weak).contains("user reviewer lacks the \"LDoms Management\" profile"), "{}", text(&weak));

    let down = ternctl(&["local-cluster", "down", "--dir", dir_s], &[]);
    assert!(down.status.success(), "{}", text(&down));
    assert!(text(&down).contains("stopped 3 agent(s)"), "{}", text(&down));
    for node in ["m10-1-1", "m10-1-2", "m10-1-3"] {
        assert!(!pid_alive(&dir.join(node)), "{node}'s ternd still runs");
    }
}

#[test]
fn the_demo_migrates_ldom1_then_restarts_it_when_its_new_control_domain_dies() {
    // Goal: the main job (`./dev run`'s `ternctl demo`) end to end: the live migration, then the failover act
    // (lost, awaiting a fence, confirmed off, ldom1 restarted elsewhere), and every agent stopped.
    let dir = tempfile::tempdir().unwrap();
    let layouts = tern_hypervisor::layout::shipped_layouts_dir();
    let out = ternctl(
        &["demo", "--dir", dir.path().join("demo").to_str().unwrap(), "--layouts", layouts.to_str().unwrap()],
        &[],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("ldom1 migrated from m10-1-1 to m10-1-2"), "{t}");
    assert!(t.contains("m10-1-2           lost") && t.contains("awaiting fence"), "{t}");
    assert!(t.contains("m10-1-2 is fenced"), "{t}");
    assert!(t.contains("HA-04: ldom1 restarted on m10-1"), "{t}");
    assert!(t.contains("stopped 2 agent(s)"), "{t}");
}
