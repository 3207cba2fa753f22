//! End to end (issue 15): `ternd` with `[hypervisor] kind = "ldm"`, on `fake-ldm`
//! answering with the seed's published `ldm` outputs: `ternd --check` reports what it
//! found (or why not, with the exit status a supervisor needs), and the agent serves
//! the server ldm describes.

use std::path::{Path, PathBuf};
use std::process::Command;
use tern_tests::{Cluster, binary};

/// The seed's `ldm ... -p` captures, in the hypervisor's test fixtures.
fn fixtures() -> PathBuf {
    let manifest =
        std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest.join("../hypervisor/tests/fixtures/ldm/seed")
}

/// A folder that is a whole fake server: `ldm -> fake-ldm` and its answers.
fn fake_server(dir: &Path) -> PathBuf {
    let fake = dir.join("fake");
    std::fs::create_dir_all(&fake).unwrap();
    for (from, to) in [
        ("list-domain-l-p.txt", "list-domain-l.out"),
        ("list-bindings-p.txt", "list-bindings.out"),
        ("list-devices-a-p.txt", "list-devices.out"),
        ("list-services-p.txt", "list-services.out"),
        ("list-domain-p.txt", "list-domain.out"),
    ] {
        std::fs::copy(fixtures().join(from), fake.join(to)).unwrap();
    }
    std::os::unix::fs::symlink(binary("fake-ldm"), fake.join("ldm")).unwrap();
    fake.join("ldm")
}

/// The `[hypervisor]` table for the seed's m10-1-1 on the fake `ldm`.
fn hypervisor(ldm: &Path, password_file: &Path, extra: &str) -> String {
    format!(
        "[hypervisor]\nkind = \"ldm\"\nldm_path = \"{}\"\nmodel = \"SPARC M10-1\"\ncpu = \"SPARC64 X+\"\n\
         frequency_mhz = 3200\nfirmware = \"XCP2210\"\nos = \"Solaris 11.1.17.5.0\"\n\
         shared_storage = [\"/dev/dsk/c0t6000\"]\ntarget_user = \"tern\"\ntarget_password_file = \"{}\"\n\
         password_dir = \"{}\"\n{extra}",
        ldm.display(),
        password_file.display(),
        password_file.parent().unwrap().display()
    )
}

fn password_file(dir: &Path, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let f = dir.join("target.password");
    std::fs::write(&f, "s3cret\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
    f
}

/// `ternd --check` on agent `i`'s config: exit status and what it printed.
fn check(c: &Cluster, i: usize) -> (Option<i32>, String) {
    let out =
        Command::new(binary("ternd")).arg("--check").arg("--config").arg(c.agents[i].dir.join("ternd.toml")).output();
    let out = out.unwrap();
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn check_runs_ldm_once_and_reports_the_server_it_found() {
    // Goal: `ternd --check` with kind = "ldm" prints ldm's version and the inventory the agent would report.
    let mut c = Cluster::new();
    let dir = c.tmp.path().to_path_buf();
    let ldm = fake_server(&dir);
    c.add_with_hypervisor("m10-1-1", &hypervisor(&ldm, &password_file(&dir, 0o600), ""), &[]);
    let (code, out) = check(&c, 0);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Logical Domains Manager (v 3.1.1.0.6)"), "{out}");
    assert!(out.contains("server m10-1-1: SPARC M10-1 (SPARC64 X+ at 3200 MHz"), "{out}");
    assert!(out.contains("16 cores (8 free)") && out.contains("guests [\"ldom1\"]"), "{out}");
    let log = std::fs::read_to_string(ldm.parent().unwrap().join("commands.log")).unwrap();
    assert!(log.lines().any(|l| l == "-V"), "ldm -V was not run: {log}");
    assert!(!log.lines().any(|l| l.starts_with("migrate") || l.starts_with("bind")), "check changed something: {log}");
}

#[test]
fn check_refuses_bad_ldm_settings_naming_the_field_and_the_exit_status_says_whether_to_retry() {
    // Goal: a wrong fact or an open password file is a configuration error (exit 2, no restart loop);
    // an ldm that cannot be run is exit 1 (a supervisor tries again).
    let mut c = Cluster::new();
    let dir = c.tmp.path().to_path_buf();
    let ldm = fake_server(&dir);
    let good_pw = password_file(&dir, 0o600);
    let cases: [(String, Option<i32>, &str); 4] = [
        (hypervisor(&ldm, &good_pw, "").replace("SPARC64 X+", "Xeon"), Some(2), "hypervisor.cpu"),
        (hypervisor(&ldm, &good_pw, "").replace("Solaris 11.1.17.5.0", "Linux 6.1"), Some(2), "hypervisor.os"),
        (hypervisor(&ldm, &good_pw, "inactive_core = [1]\n"), Some(2), "unknown field `inactive_core`"),
        (hypervisor(&dir.join("no/ldm"), &good_pw, ""), Some(1), "cannot run"),
    ];
    for (n, (table, want, says)) in cases.iter().enumerate() {
        let i = c.add_with_hypervisor(&format!("m{n}"), table, &[]);
        let (code, out) = check(&c, i);
        assert_eq!(code, *want, "case {n}: {out}");
        assert!(out.contains(says), "case {n}: want {says:?} in {out}");
    }
    let open = dir.join("open");
    std::fs::create_dir_all(&open).unwrap();
    let i = c.add_with_hypervisor("m-open", &hypervisor(&ldm, &password_file(&open, 0o644), ""), &[]);
    let (code, out) = check(&c, i);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("hypervisor.target_password_file") && out.contains("chmod 600"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_ldm_serves_the_server_ldm_describes() {
    // Goal: ternd with kind = "ldm" founds a cluster and lists the domains fake-ldm's published outputs show.
    let mut c = Cluster::new();
    let dir = c.tmp.path().to_path_buf();
    let ldm = fake_server(&dir);
    c.add_with_hypervisor("m10-1-1", &hypervisor(&ldm, &password_file(&dir, 0o600), ""), &[]);
    c.start(0);
    let domains = c.wait_domains(0, 2).await;
    let names: Vec<(&str, &str)> = domains.iter().map(|d| (d.name.as_str(), d.host.as_str())).collect();
    assert_eq!(names, [("primary", "m10-1-1"), ("ldom1", "m10-1-1")], "{domains:?}");
    assert_eq!(c.free_cores("m10-1-1").await, 8);
}
