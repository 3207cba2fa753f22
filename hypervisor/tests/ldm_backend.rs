//! LdmHypervisor against `fake-ldm` (src/bin/fake-ldm.rs) across a real process
//! boundary: inventory, migration with progress, cancel, failures mapped to LM rules,
//! a hung ldm killed at its deadline, oversized output refused.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tern_hypervisor::ldm::inventory::{ServerFacts, SharedStorage};
use tern_hypervisor::ldm::{LdmHypervisor, LdmOptions};
use tern_hypervisor::{HvError, Hypervisor, MigrateOut, Progress};
use tern_model::units::MIB;
use tern_model::{Binding, CpuFamily, CpuType, DomainKind, Firmware, OsVersion, Range, Reserved};
use tokio::sync::mpsc;

const SHARED_PREFIX: &str = "/dev/dsk/c0t600000E00D28";

/// A folder of fake-ldm answers (the seed's composed captures) and a `ldm` symlink to
/// fake-ldm in it, so each test has its own fake server.
struct FakeLdm {
    dir: tempfile::TempDir,
}

impl FakeLdm {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let fx = manifest_dir().join("tests/fixtures/ldm/seed");
        for (from, to) in [
            ("list-domain-l-p.txt", "list-domain-l.out"),
            ("list-bindings-p.txt", "list-bindings.out"),
            ("list-devices-a-p.txt", "list-devices.out"),
            ("list-services-p.txt", "list-services.out"),
            ("list-domain-p.txt", "list-domain.out"),
            ("list-domain-o-status-p.1.txt", "list-domain-status.1.out"),
            ("list-domain-o-status-p.2.txt", "list-domain-status.2.out"),
            ("list-domain-o-status-p.3.txt", "list-domain-status.3.out"),
        ] {
            std::fs::copy(fx.join(from), dir.path().join(to)).unwrap();
        }
        // `DIR/ldm -> fake-ldm`: fake-ldm takes its answers and log from the folder it was run from.
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_fake-ldm"), dir.path().join("ldm")).unwrap();
        Self { dir }
    }

    fn set(&self, file: &str, content: &str) {
        std::fs::write(self.dir.path().join(file), content).unwrap();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("commands.log")).unwrap_or_default()
    }

    /// The commands fake-ldm was given, without its `#` notes.
    fn commands(&self) -> Vec<String> {
        self.log().lines().filter(|l| !l.starts_with('#')).map(str::to_string).collect()
    }

    fn options(&self) -> LdmOptions {
        let mut o = LdmOptions::new(
            "m10-1-1",
            ServerFacts {
                model: "SPARC M10-1".into(),
                cpu: CpuType { family: CpuFamily::Sparc64XPlus, frequency_mhz: 3200 },
                firmware: Firmware("XCP2210".into()),
                os: OsVersion::parse("Solaris 11.1.17.5.0").unwrap(),
            },
        );
        o.ldm_path = self.dir.path().join("ldm");
        o.password_dir = self.dir.path().to_path_buf();
        o.command_deadline = Duration::from_secs(10);
        o.progress_interval = Duration::from_millis(40);
        o.shared_storage = SharedStorage { all: false, device_prefixes: vec![SHARED_PREFIX.into()] };
        o
    }

    fn hypervisor(&self) -> LdmHypervisor {
        LdmHypervisor::new(self.options()).unwrap()
    }

    fn password_files(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().contains("password-"))
            .collect()
    }
}

/// Waits until `cond` holds, failing after `limit`.
async fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn ldom1_to(target: &str, new_name: Option<&str>) -> MigrateOut {
    MigrateOut {
        domain: "ldom1".into(),
        target: target.into(),
        new_name: new_name.map(str::to_string),
        binding: Binding::default(),
        operation: 1,
    }
}

#[tokio::test]
async fn inventory_reads_the_seed_server_through_ldm() {
    // Goal: the four list commands, run as processes, give the seed's m10-1-1 server.
    let fake = FakeLdm::new();
    let hv = fake.hypervisor();
    let s = hv.inventory().await.unwrap();
    assert_eq!(s.name, "m10-1-1");
    assert_eq!((s.cores.len(), s.threads_per_core), (16, 2));
    assert_eq!(s.cpu_of("ldom1").cids, [4, 5, 6, 7]);
    assert!(s.cpu_of("ldom1").whole_cores);
    assert_eq!(s.domain("ldom1").unwrap().kind, DomainKind::Guest);
    assert_eq!(s.domain("primary").unwrap().kind, DomainKind::Control);
    assert_eq!(s.free_ranges(&Reserved::default()), [Range::new(0x7e06_6080_0000, 39416 * MIB)]);
    assert_eq!(s.domain("ldom1").unwrap().console.as_ref().unwrap().port, 5001);
    assert!(s.services.vds[0].volumes.iter().all(|v| v.shared));
    let mut cmds = fake.commands();
    cmds.sort();
    assert_eq!(cmds, ["list-bindings -p", "list-devices -a -p", "list-domain -l -p", "list-services -p"]);
}

#[tokio::test]
async fn inventory_reads_domain_dependencies_and_the_failure_policy() {
    // Goal: HA-08: `DEPENDENCY|master=` and `CONTROL|failure-policy=` reach the model, so ldom1 counts as stopped with primary.
    let fake = FakeLdm::new();
    let fx = manifest_dir().join("tests/fixtures/ldm/seed");
    for (from, to) in [("list-domain-l-p.txt", "list-domain-l.out"), ("list-bindings-p.txt", "list-bindings.out")] {
        let text = std::fs::read_to_string(fx.join(from)).unwrap();
        let mut out = String::new();
        let mut domain = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("DOMAIN|name=") {
                domain = if rest.starts_with("primary|") { "primary" } else { "guest" };
            }
            let line = match (domain, line) {
                ("primary", l) if l.starts_with("CONTROL|") => {
                    l.replace("failure-policy=ignore", "failure-policy=stop")
                }
                ("guest", "DEPENDENCY|master=") => "DEPENDENCY|master=primary".to_string(),
                (_, l) => l.to_string(),
            };
            out.push_str(&line);
            out.push('\n');
        }
        fake.set(to, &out);
    }
    let s = fake.hypervisor().inventory().await.unwrap();
    assert_eq!(s.domain("ldom1").unwrap().masters, ["primary"]);
    assert_eq!(s.domain("primary").unwrap().failure_policy, tern_model::FailurePolicy::Stop);
    assert_eq!(s.stopped_with_control_domain("ldom1"), Ok(()));
    // The seed as captured: no dependency, ldm's default policy.
    let seed = FakeLdm::new().hypervisor().inventory().await.unwrap();
    assert!(seed.domain("ldom1").unwrap().masters.is_empty());
    let why = seed.stopped_with_control_domain("ldom1").unwrap_err();
    assert!(why.contains("ldom1 is not a slave of primary"), "{why}");
}

#[tokio::test]
async fn migration_reports_progress_and_removes_its_password_file() {
    // Goal: migrate-domain -p FILE ldom1 m10-1-2:ldom9 runs, progress is polled (OP-06), the 0600 file is gone after.
    let fake = FakeLdm::new();
    fake.set("migrate-domain.delay_ms", "1500");
    fake.set("migrate-domain.password", "s3cret");
    let hv = fake.hypervisor();
    hv.set_target_password("m10-1-2", "s3cret");
    let (tx, mut rx) = mpsc::channel(64);
    let outcome = hv.migrate_out(ldom1_to("m10-1-2", Some("ldom9")), tx).await.unwrap();
    assert!(outcome.total_ms >= 1500, "{outcome:?}");
    let mut seen: Vec<Progress> = Vec::new();
    while let Ok(p) = rx.try_recv() {
        seen.push(p);
    }
    let pcts: Vec<u8> = seen.iter().map(|p| p.pct).collect();
    assert!(pcts.contains(&10) && pcts.contains(&31), "{pcts:?}");
    assert_eq!(seen.last().unwrap().pct, 100);
    let log = fake.log();
    let migrate = log.lines().find(|l| l.starts_with("migrate-domain")).unwrap();
    assert!(migrate.starts_with("migrate-domain -p "), "{migrate}");
    assert!(migrate.ends_with(" ldom1 m10-1-2:ldom9"), "{migrate}");
    assert!(log.contains("#password-file mode=600 matches=yes"), "{log}");
    assert!(log.contains("list-domain -o status -p ldom1"), "{log}");
    assert!(fake.password_files().is_empty(), "{:?}", fake.password_files());
}

#[tokio::test]
async fn a_configured_account_and_password_file_log_in_to_the_target() {
    // Goal: with target_user and target_password_file set (ternd's [hypervisor]), migrate-domain runs as
    // `tern@m10-1-2` (OP-04) with the file's password in a fresh 0600 file (OP-03), no password given per call.
    use std::os::unix::fs::PermissionsExt;
    let fake = FakeLdm::new();
    fake.set("migrate-domain.password", "from-the-file");
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("target.password");
    std::fs::write(&file, "from-the-file\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut o = fake.options();
    o.target_user = Some("tern".into());
    o.target_password_file = Some(file.clone());
    let hv = LdmHypervisor::new(o).unwrap();
    let (tx, _rx) = mpsc::channel(64);
    hv.migrate_out(ldom1_to("m10-1-2", None), tx).await.unwrap();
    let log = fake.log();
    let migrate = log.lines().find(|l| l.starts_with("migrate-domain")).unwrap();
    assert!(migrate.ends_with(" ldom1 tern@m10-1-2"), "{migrate}");
    assert!(log.contains("#password-file mode=600 matches=yes"), "{log}");
    assert!(fake.password_files().is_empty(), "{:?}", fake.password_files());

    // A password file others can read is refused, before ldm runs.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (tx, _rx) = mpsc::channel(64);
    let e = hv.migrate_out(ldom1_to("m10-1-2", None), tx).await.unwrap_err();
    assert!(e.to_string().contains("chmod 600"), "{e}");
}

#[tokio::test]
async fn told_to_resume_a_guest_ldm_already_moved_the_backend_says_the_hypervisors_settled_it() {
    // Goal: issue 15: finish_migrate_out(false) asks ldm; a guest still listed resumes (Ok), one ldm reports
    // gone was moved by ldmd and cannot resume: HvError::Settled, never a silent Ok.
    let fake = FakeLdm::new();
    let hv = fake.hypervisor();
    hv.finish_migrate_out("ldom1", false).await.expect("ldom1 is still listed here");
    assert!(fake.commands().iter().any(|c| c == "list-domain -p ldom1"), "{:?}", fake.commands());
    fake.set("list-domain.fail", "exit=1\nLDom \"ldom1\" was not found\n");
    let err = hv.finish_migrate_out("ldom1", false).await.unwrap_err();
    assert!(matches!(&err, HvError::Settled(m) if m.contains("runs on the target")), "{err:?}");
    hv.finish_migrate_out("ldom1", true).await.expect("a committed migration has nothing left to do with ldm");
}

#[tokio::test]
async fn cancel_stops_a_running_migration() {
    // Goal: cancel-operation migration ldom1 (OP-09) ends migrate_out with Cancelled; the password file is removed.
    let fake = FakeLdm::new();
    fake.set("migrate-domain.delay_ms", "20000");
    let hv = std::sync::Arc::new(fake.hypervisor());
    hv.set_target_password("m10-1-2", "pw");
    let (tx, _rx) = mpsc::channel(64);
    let running = {
        let hv = hv.clone();
        tokio::spawn(async move { hv.migrate_out(ldom1_to("m10-1-2", None), tx).await })
    };
    wait_for(Duration::from_secs(10), "migrate-domain to start", || fake.log().contains("migrate-domain -p")).await;
    hv.cancel_migration("ldom1").await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), running).await.unwrap().unwrap();
    assert!(matches!(result, Err(HvError::Cancelled(ref d)) if d == "ldom1"), "{result:?}");
    assert!(fake.commands().iter().any(|c| c == "cancel-operation migration ldom1"));
    assert!(fake.password_files().is_empty());
    assert!(matches!(hv.cancel_migration("ldom1").await, Err(HvError::Invalid(_))));
}

#[tokio::test]
async fn memory_layout_failure_is_reported_as_lm_09() {
    // Goal: Oracle's "Unable to bind ... memory region" failure comes back as LM-09 with ldm's words.
    let fake = FakeLdm::new();
    let text =
        std::fs::read_to_string(manifest_dir().join("tests/fixtures/ldm/oracle/migrate-unable-to-bind.stderr.txt"))
            .unwrap();
    fake.set("migrate-domain.fail", &format!("exit=1\n{text}"));
    let hv = fake.hypervisor();
    hv.set_target_password("m10-1-2", "pw");
    let (tx, _rx) = mpsc::channel(8);
    match hv.migrate_out(ldom1_to("m10-1-2", None), tx).await {
        Err(HvError::Failed(m)) => {
            assert!(m.starts_with("LM-09 Unable to bind 2G memory region"), "{m}");
            assert!(m.contains("Domain Migration of LDom ldg-src failed"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    assert!(fake.password_files().is_empty());
}

#[tokio::test]
async fn dry_run_failure_is_reported_with_its_rule() {
    // Goal: OP-02's `migrate-domain -n` failure ("would fail if attempted") maps to LM-09.
    let fake = FakeLdm::new();
    let text =
        std::fs::read_to_string(manifest_dir().join("tests/fixtures/ldm/oracle/migrate-n-congruency.stderr.txt"))
            .unwrap();
    fake.set("migrate-domain.fail", &format!("exit=1\n{text}"));
    let hv = fake.hypervisor();
    hv.set_target_password("m10-1-2", "pw");
    let err = hv.check_migration(&ldom1_to("m10-1-2", None)).await.unwrap_err();
    assert!(err.to_string().starts_with("LM-09 Free memory layout"), "{err}");
    assert!(fake.log().contains("migrate-domain -n -p "), "{}", fake.log());
}

#[tokio::test]
async fn a_hung_ldm_is_killed_at_its_deadline() {
    // Goal: list-devices never answers; the command is killed after the deadline and reported.
    let fake = FakeLdm::new();
    fake.set("list-devices.hang", "");
    let mut opts = fake.options();
    opts.command_deadline = Duration::from_millis(2000);
    let hv = LdmHypervisor::new(opts).unwrap();
    let start = Instant::now();
    let err = hv.inventory().await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
    let msg = err.to_string();
    assert!(matches!(err, HvError::Io(_)), "{err:?}");
    assert!(
        msg.contains("`ldm list-devices -a -p`") && msg.contains("did not finish within 2000 ms; killed it"),
        "{msg}"
    );
    // The fake noted its pid (unless a loaded machine had it killed before it could);
    // that process must be gone.
    let log = fake.log();
    let lines: Vec<&str> = log.lines().collect();
    if let Some(i) = lines.iter().position(|l| *l == "list-devices -a -p") {
        let pid = lines[i + 1].strip_prefix("#pid ").unwrap();
        let gone = || !Path::new(&format!("/proc/{pid}")).exists();
        wait_for(Duration::from_secs(5), "the hung fake-ldm to be gone", gone).await;
    }
}

#[tokio::test]
async fn oversized_output_is_refused() {
    // Goal: a command printing more than output_bytes_max is killed and refused, not parsed.
    let fake = FakeLdm::new();
    fake.set("list-services.out", &"VCC|name=x|port-range=1-2\n".repeat(1000));
    let mut opts = fake.options();
    opts.output_bytes_max = 4096;
    let hv = LdmHypervisor::new(opts).unwrap();
    let msg = hv.inventory().await.unwrap_err().to_string();
    assert!(msg.contains("printed more than 4096 bytes on stdout"), "{msg}");
}

#[tokio::test]
async fn migration_without_a_password_is_refused_before_ldm_runs() {
    // Goal: OP-03: no password known for the target -> Invalid, and no migrate-domain was started.
    let fake = FakeLdm::new();
    let hv = fake.hypervisor();
    let (tx, _rx) = mpsc::channel(8);
    let err = hv.migrate_out(ldom1_to("m10-1-2", None), tx).await.unwrap_err();
    assert!(matches!(err, HvError::Invalid(ref m) if m.starts_with("OP-03")), "{err:?}");
    assert!(fake.commands().is_empty());
}

#[tokio::test]
async fn unknown_domain_is_not_found() {
    // Goal: ldm's `LDom "x" was not found` becomes HvError::NotFound.
    let fake = FakeLdm::new();
    fake.set("start-domain.fail", "exit=1\nLDom \"nosuch\" was not found\n");
    let err = fake.hypervisor().start("nosuch").await.unwrap_err();
    assert!(matches!(err, HvError::NotFound(ref d) if d == "nosuch"), "{err:?}");
}

#[tokio::test]
async fn utilisation_comes_from_list_domain() {
    // Goal: util= of each active domain, rounded to a whole percent.
    let fake = FakeLdm::new();
    let u = fake.hypervisor().utilisation().await.unwrap();
    assert_eq!(u.get("primary"), Some(&20));
    assert_eq!(u.get("ldom1"), Some(&35));
}

#[tokio::test]
async fn bind_creates_the_domain_on_named_resources_and_cleans_up_on_failure() {
    // Goal: a failover restart binds exact cores, memory blocks and console port; a failing step removes the domain.
    let fake = FakeLdm::new();
    let hv = fake.hypervisor();
    let server = hv.inventory().await.unwrap();
    let mut domain = server.domain("ldom1").unwrap().clone();
    domain.name = "ldom7".into();
    let binding = Binding {
        domain: "ldom7".into(),
        whole_cores: true,
        cids: vec![8, 9],
        strands: vec![16, 17, 18, 19],
        memory: vec![Range::new(0x7e06_6080_0000, 248 * MIB)],
        console_port: Some(5002),
    };
    hv.bind(domain.clone(), &binding).await.unwrap();
    let cmds: Vec<String> = fake.commands().into_iter().filter(|c| !c.starts_with("list-")).collect();
    assert_eq!(
        cmds,
        [
            "add-domain ldom7",
            "set-domain cpu-arch=native ldom7",
            "add-core cid=8,9 ldom7",
            "add-memory mblock=0x7e0660800000:248M ldom7",
            "add-vdisk vdisk0 vol0@primary-vds0 ldom7",
            "add-vdisk vdisk1 vol1@primary-vds0 ldom7",
            "add-vnet vnet0 primary-vsw0 ldom7",
            "set-vcons port=5002 service=primary-vcc0 log=on ldom7",
            "bind-domain ldom7",
        ]
    );
    fake.set("add-memory.fail", "exit=1\nUnable to bind 248M memory region at real address 0x10000000\n");
    let err = hv.bind(domain, &binding).await.unwrap_err();
    assert!(err.to_string().starts_with("LM-09"), "{err}");
    assert_eq!(fake.commands().last().map(String::as_str), Some("remove-domain ldom7"));
}

#[tokio::test]
async fn resize_names_the_reserved_cores_and_blocks_and_undoes_its_steps_on_failure() {
    // Goal: RB-06 in ldm's verbs: add-core/add-memory/remove-core/remove-memory by name; a failing step undoes the earlier ones.
    let fake = FakeLdm::new();
    let hv = fake.hypervisor();
    let gain = Binding {
        domain: "ldom1".into(),
        whole_cores: true,
        cids: vec![8, 9],
        strands: vec![16, 17, 18, 19],
        memory: vec![Range::new(0x7e06_6080_0000, 4096 * MIB)],
        console_port: None,
    };
    let back = Binding {
        domain: "ldom1".into(),
        whole_cores: true,
        cids: vec![7],
        strands: vec![14, 15],
        memory: vec![],
        console_port: None,
    };
    let resize = tern_model::Resize { domain: "ldom1".into(), add: gain.clone(), remove: back };
    hv.resize(&resize).await.unwrap();
    assert_eq!(
        fake.commands(),
        ["add-core cid=8,9 ldom1", "add-memory mblock=0x7e0660800000:4G ldom1", "remove-core cid=7 ldom1",]
    );
    fake.set("add-memory.fail", "exit=1\nUnable to bind 4G memory region at real address 0x7e0660800000\n");
    let err = hv.resize(&resize).await.unwrap_err();
    assert!(err.to_string().starts_with("LM-09"), "{err}");
    let tail: Vec<String> = fake.commands().into_iter().skip(3).collect();
    assert_eq!(
        tail,
        ["add-core cid=8,9 ldom1", "add-memory mblock=0x7e0660800000:4G ldom1", "remove-core cid=8,9 ldom1"]
    );
    let partial = tern_model::Resize {
        add: Binding { cids: vec![8], strands: vec![16], ..gain },
        ..tern_model::Resize::default()
    };
    assert!(matches!(
        hv.resize(&tern_model::Resize {
            domain: "ldom1".into(),
            add: Binding { whole_cores: false, ..partial.add },
            ..partial
        })
        .await,
        Err(tern_hypervisor::HvError::Invalid(_))
    ));
}

/// This package's folder, read at run time first: one target folder serves every checkout.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}
