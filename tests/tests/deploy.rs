//! The deploy files (issue 17): the systemd unit (`systemd-analyze verify`, and a real
//! `ternd` speaking `Type=notify`), the Solaris SMF manifest (valid against
//! `deploy/smf/service_bundle.dtd`) and its method script (run with a stand-in `svcprop`
//! and `smf_include.sh`), the example configurations (`ternd --check`, one cluster) and
//! journald-style logs.
//!
//! `systemd-analyze` and `xmllint` are installed by `./dev deps` when missing (the test
//! runs it); if they are still missing the test fails, saying so.

use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tern_agent::config::{Bootstrap, Config, Timeouts};
use tern_tests::WAIT;

const EXAMPLES: [&str; 3] = ["m10-1-1.toml", "m10-1-2.toml", "m10-1-3.toml"];

/// The manifest's DOCTYPE: the DTD's path on Solaris.
const SOLARIS_DTD: &str = "/usr/share/lib/xml/dtd/service_bundle.dtd.1";

/// smf_include.sh's exit statuses (Solaris 11).
const SMF_EXIT_ERR_CONFIG: i32 = 96;
const SMF_EXIT_ERR_NOSMF: i32 = 99;

fn workspace() -> PathBuf {
    tern_tests::workspace()
}

fn deploy(file: &str) -> PathBuf {
    workspace().join("deploy").join(file)
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// The tool `name`, installed with `./dev deps` (once per test process) when missing.
fn tool(name: &str) -> PathBuf {
    if let Some(p) = on_path(name) {
        return p;
    }
    static DEPS: OnceLock<String> = OnceLock::new();
    let deps = DEPS.get_or_init(|| {
        let out = run(Command::new(workspace().join("dev")).arg("deps"));
        format!("./dev deps exited {}:\n{}", out.status, text(&out))
    });
    on_path(name).unwrap_or_else(|| panic!("{name} is missing and ./dev deps did not install it; {deps}"))
}

fn write_executable(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

// ---- systemd -------------------------------------------------------------------------

fn unit_text() -> String {
    std::fs::read_to_string(deploy("systemd/ternd.service")).unwrap()
}

/// The settings of the unit's `[Service]` section, in order (`key`, `value`).
fn service_settings(unit: &str) -> Vec<(String, String)> {
    let mut section = "";
    let mut settings = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = if line == "[Service]" { "service" } else { "" };
            continue;
        }
        if section == "service"
            && let Some((k, v)) = line.split_once('=')
        {
            settings.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    settings
}

fn setting<'a>(settings: &'a [(String, String)], key: &str) -> Option<&'a str> {
    settings.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// What `systemd-analyze verify` says about the unit `text` (ternd's paths replaced by
/// the ternd under test, as installed), with ternd's man pages on MANPATH for its
/// `Documentation=`: the exit status and every line that names the unit.
fn verify_unit(contents: &str) -> (ExitStatus, Vec<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let man1 = dir.path().join("man/man1");
    std::fs::create_dir_all(&man1).unwrap();
    let pages = run(Command::new(tern_tests::binary("ternctl")).arg("man").arg("--dir").arg(&man1));
    assert!(pages.status.success(), "ternctl man: {}", text(&pages));
    assert!(man1.join("ternd.1").is_file(), "ternctl man wrote no ternd.1");
    let ternd = tern_tests::binary("ternd");
    let unit = dir.path().join("ternd.service");
    std::fs::write(&unit, contents.replace("/usr/bin/ternd", ternd.to_str().unwrap())).unwrap();
    let out =
        run(Command::new(tool("systemd-analyze")).arg("verify").arg(&unit).env("MANPATH", dir.path().join("man")));
    let all = text(&out);
    let about_unit = all.lines().filter(|l| l.contains("ternd.service")).map(str::to_string).collect();
    (out.status, about_unit, all)
}

/// systemd-analyze verify finds nothing wrong with the unit: keys, values, commands, man page.
#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let (status, findings, all) = verify_unit(&unit_text());
    assert!(findings.is_empty(), "systemd-analyze verify on the unit:\n{}", findings.join("\n"));
    assert!(status.success(), "systemd-analyze verify exited {status}:\n{all}");
}

/// The verification above can fail: a misspelt key, a bad value and a missing program are each reported.
#[test]
fn systemd_analyze_verify_reports_a_broken_unit() {
    let broken = unit_text()
        .replace("NotifyAccess=main", "NotifyAccess=sometimes\nProtectSystm=strict")
        .replace("ExecStartPre=/usr/bin/ternd", "ExecStartPre=/nonexistent/ternd");
    let (_, findings, all) = verify_unit(&broken);
    for expected in ["notify access", "ProtectSystm", "/nonexistent/ternd"] {
        assert!(findings.iter().any(|l| l.contains(expected)), "no finding about {expected}:\n{all}");
    }
}

/// The unit waits for READY=1, runs ternd as tern with its state dir, and outlasts ternd's shutdown deadline on stop.
#[test]
fn the_unit_is_type_notify_as_tern_and_stops_after_the_shutdown_deadline() {
    let s = service_settings(&unit_text());
    let get = |k: &str| setting(&s, k).unwrap_or_else(|| panic!("[Service] has no {k}="));
    assert_eq!(get("Type"), "notify");
    assert_eq!(get("NotifyAccess"), "main", "only ternd itself may say READY");
    assert_eq!((get("User"), get("Group")), ("tern", "tern"));
    assert_eq!(get("ExecStart"), "/usr/bin/ternd --config /etc/tern/ternd.toml");
    assert_eq!(get("StateDirectory"), "tern", "/var/lib/tern, the examples' data_dir");
    assert_eq!(get("ProtectSystem"), "strict");
    assert_eq!(get("CapabilityBoundingSet"), "", "no capabilities at all");
    assert_eq!(get("RestrictAddressFamilies"), "AF_INET AF_INET6 AF_UNIX");
    assert_eq!(get("Restart"), "on-failure");
    assert_eq!(get("KillSignal"), "SIGTERM");
    assert_eq!(get("ExecReload"), "/bin/kill -HUP $MAINPID", "systemctl reload: ternd re-reads its certificates");
    let seconds = |k: &str| get(k).parse::<u64>().unwrap_or_else(|e| panic!("{k}={}: {e}", get(k)));
    let deadline_s = Timeouts::default().shutdown_deadline_ms.div_ceil(1000);
    assert!(
        seconds("TimeoutStopSec") > deadline_s,
        "TimeoutStopSec={} must exceed ternd's shutdown deadline ({deadline_s} s) so SIGKILL never cuts it short",
        get("TimeoutStopSec")
    );
    assert!(seconds("TimeoutStartSec") >= 60, "a slow start (a large log) must not be killed");
    assert!(seconds("RestartSec") >= 1, "no tight restart loop");
}

/// A ternd that is killed when the test ends.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Agent {
    fn sigterm(&self) {
        let out = run(Command::new("kill").arg("-TERM").arg(self.0.id().to_string()));
        assert!(out.status.success(), "kill -TERM: {}", text(&out));
    }

    /// Waits (up to [`WAIT`]) for it to exit.
    fn exit_status(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(start.elapsed() < WAIT, "ternd did not exit within {WAIT:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A one-agent cluster's config, written by the test support as for every end-to-end test.
fn one_agent() -> (tern_tests::Cluster, PathBuf) {
    let mut c = tern_tests::Cluster::new();
    let i = c.add("m10-1-1", "m10-1-1", &[]);
    let dir = c.agents[i].dir.clone();
    (c, dir)
}

/// Waits (up to [`WAIT`]) for a datagram on `sock` with the line `want`, failing early
/// if `agent` exits without having sent it; the datagram.
fn wait_for_state(sock: &UnixDatagram, agent: &mut Agent, want: &str, log: &Path) -> String {
    sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut buf = vec![0u8; 4096];
    let mut exited = None;
    loop {
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if msg.lines().any(|l| l == want) {
                    return msg;
                }
                seen.push(msg);
                continue;
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => panic!("receiving on NOTIFY_SOCKET: {e}"),
        }
        let log = || std::fs::read_to_string(log).unwrap_or_default();
        // An exit is final once the queue it left behind is read (the loop above).
        if let Some(status) = exited {
            panic!("ternd exited ({status}) without sending {want}; received {seen:?}\n{}", log());
        }
        exited = agent.0.try_wait().unwrap();
        assert!(start.elapsed() < WAIT, "no {want} within {WAIT:?}; received {seen:?}\n{}", log());
    }
}

/// Starts ternd on `dir`'s config with `env`, stderr appended to `dir/ternd.log`.
fn start_ternd(dir: &Path, env: &[(&str, &OsStr)]) -> Agent {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("ternd.log")).unwrap();
    let mut cmd = Command::new(tern_tests::binary("ternd"));
    cmd.arg("--config")
        .arg(dir.join("ternd.toml"))
        .env("RUST_LOG", "info,openraft=warn")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Agent(cmd.spawn().unwrap())
}

/// Type=notify: ternd sends READY=1 on $NOTIFY_SOCKET once it serves (ternd.addr written), STOPPING=1 on SIGTERM, then exits 0.
#[test]
fn ternd_tells_notify_socket_ready_once_serving_and_stopping_on_sigterm() {
    let (_cluster, dir) = one_agent();
    let socket_dir = tempfile::tempdir().unwrap();
    let socket = socket_dir.path().join("notify");
    let sock = UnixDatagram::bind(&socket).unwrap();
    let log = dir.join("ternd.log");
    let mut agent = start_ternd(&dir, &[("NOTIFY_SOCKET", socket.as_os_str())]);

    let ready = wait_for_state(&sock, &mut agent, "READY=1", &log);
    let addr = std::fs::read_to_string(dir.join("data/ternd.addr")).expect("ternd.addr is written before READY=1");
    let addr = addr.trim();
    assert!(ready.lines().any(|l| l == format!("STATUS=serving on {addr}")), "READY names the address: {ready:?}");
    std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("ready, yet {addr} refuses connections: {e}"));
    assert!(agent.0.try_wait().unwrap().is_none(), "ternd keeps running once ready");

    agent.sigterm();
    let stopping = wait_for_state(&sock, &mut agent, "STOPPING=1", &log);
    assert!(stopping.contains("STATUS=shutting down"), "{stopping:?}");
    let status = agent.exit_status();
    assert!(status.success(), "ternd exited {status} after SIGTERM:\n{}", std::fs::read_to_string(&log).unwrap());
}

/// The first word of each log line: a level for journal-style lines, a timestamp otherwise.
fn first_words(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

const LEVELS: [&str; 5] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"];

/// Runs one agent until it serves, with JOURNAL_STREAM set to `journal_stream(log file)`,
/// then stops it; its log.
fn log_of_a_run(journal_stream: impl Fn(&Path) -> String) -> String {
    let (_cluster, dir) = one_agent();
    let log = dir.join("ternd.log");
    std::fs::write(&log, "").unwrap();
    let value = journal_stream(&log);
    let socket_dir = tempfile::tempdir().unwrap();
    let socket = socket_dir.path().join("notify");
    let sock = UnixDatagram::bind(&socket).unwrap();
    let mut agent = start_ternd(&dir, &[("NOTIFY_SOCKET", socket.as_os_str()), ("JOURNAL_STREAM", OsStr::new(&value))]);
    wait_for_state(&sock, &mut agent, "READY=1", &log);
    agent.sigterm();
    assert!(agent.exit_status().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.trim().is_empty(), "ternd logged nothing");
    text
}

/// With stderr on the journal (JOURNAL_STREAM names it), log lines carry their syslog priority, no timestamp and no colour codes.
#[test]
fn ternd_logs_to_the_journal_with_priorities_and_without_timestamps_or_colours() {
    let log = log_of_a_run(|file| {
        let m = std::fs::metadata(file).unwrap();
        format!("{}:{}", m.dev(), m.ino())
    });
    assert!(!log.contains('\u{1b}'), "ANSI escape codes in the journal:\n{log}");
    let priority = |level: &str| match level {
        "ERROR" => "<3>",
        "WARN" => "<4>",
        "INFO" => "<6>",
        _ => "<7>",
    };
    let mut levels = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let (prefix, rest) = line.split_at(line.find('>').map_or(0, |i| i + 1));
        let level = rest.split_whitespace().next().unwrap_or("");
        assert!(LEVELS.contains(&level), "{line:?} does not start with a priority and a level:\n{log}");
        assert_eq!(prefix, priority(level), "{line:?}");
        levels.push(level);
    }
    assert!(levels.contains(&"INFO"), "ternd logs at info when it starts:\n{log}");
}

/// JOURNAL_STREAM inherited but stderr elsewhere (here a file): timestamped lines as before, no colour codes off a terminal.
#[test]
fn ternd_logs_with_timestamps_when_stderr_is_not_the_journal() {
    let log = log_of_a_run(|file| {
        let m = std::fs::metadata(file).unwrap();
        format!("{}:{}", m.dev(), m.ino() + 1)
    });
    assert!(!log.contains('\u{1b}'), "ANSI escape codes in a file:\n{log}");
    for word in first_words(&log) {
        let stamped = word.len() >= 20 && word.as_bytes()[..4].iter().all(u8::is_ascii_digit) && word.contains('T');
        assert!(stamped, "a line starts with {word:?}, not a timestamp:\n{log}");
    }
}

// ---- SMF -----------------------------------------------------------------------------

/// `xmllint --valid` on `manifest`, its DOCTYPE (Solaris's DTD path) mapped by an XML
/// catalog to deploy/smf/service_bundle.dtd, never the network.
fn xmllint_valid(manifest: &Path) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let catalog = dir.path().join("catalog.xml");
    let dtd = deploy("smf/service_bundle.dtd");
    std::fs::write(
        &catalog,
        format!(
            "<?xml version=\"1.0\"?>\n<catalog xmlns=\"urn:oasis:names:tc:entity:xmlns:xml:catalog\">\n  \
             <system systemId=\"{SOLARIS_DTD}\" uri=\"file://{}\"/>\n</catalog>\n",
            dtd.display()
        ),
    )
    .unwrap();
    run(Command::new(tool("xmllint"))
        .args(["--nonet", "--valid", "--noout"])
        .arg(manifest)
        .env("XML_CATALOG_FILES", &catalog))
}

/// The value of `xpath` (a string expression) in the manifest.
fn manifest_value(xpath: &str) -> String {
    let out = run(Command::new(tool("xmllint")).args(["--nonet", "--xpath", xpath]).arg(deploy("smf/ternd.xml")));
    assert!(out.status.success(), "xmllint --xpath {xpath}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The SMF manifest is a valid service_bundle (Solaris's DOCTYPE, validated against deploy/smf/service_bundle.dtd).
#[test]
fn the_smf_manifest_is_valid_against_the_service_bundle_dtd() {
    let manifest = deploy("smf/ternd.xml");
    let source = std::fs::read_to_string(&manifest).unwrap();
    assert!(
        source.contains(&format!("<!DOCTYPE service_bundle SYSTEM \"{SOLARIS_DTD}\">")),
        "svccfg needs the DOCTYPE"
    );
    let out = xmllint_valid(&manifest);
    assert!(out.status.success(), "xmllint --valid on {}:\n{}", manifest.display(), text(&out));
    assert!(text(&out).trim().is_empty(), "xmllint warned:\n{}", text(&out));
}

/// The validation can fail: elements out of the DTD's order, an undeclared element, a missing required attribute.
#[test]
fn the_dtd_rejects_manifests_that_break_its_content_models() {
    let good = std::fs::read_to_string(deploy("smf/ternd.xml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (what, bad) in [
        (
            "instance after stability",
            good.replace("<instance name=\"default\" enabled=\"false\"/>", "").replace(
                "<stability value=\"Evolving\"/>",
                "<stability value=\"Evolving\"/>\n    <instance name=\"default\" enabled=\"false\"/>",
            ),
        ),
        ("an undeclared element", good.replace("<single_instance/>", "<single_instance/><singleton/>")),
        ("exec_method without timeout_seconds", good.replace(" timeout_seconds=\"30\"", "")),
    ] {
        assert_ne!(bad, good, "{what}: the mutation changed nothing");
        let file = dir.path().join("bad.xml");
        std::fs::write(&file, &bad).unwrap();
        let out = xmllint_valid(&file);
        assert!(!out.status.success(), "{what}: xmllint accepted it");
        assert!(text(&out).contains("validity error"), "{what}: {}", text(&out));
    }
}

/// The manifest runs the method as tern with config/file = /etc/tern/ternd.toml, ternd as the child, stop by SIGTERM.
#[test]
fn the_smf_manifest_names_the_method_config_file_user_and_child_model() {
    let value = |x: &str| manifest_value(&format!("string({x})"));
    assert_eq!(value("/service_bundle/@type"), "manifest");
    assert_eq!(value("/service_bundle/service/@name"), "application/tern/ternd");
    assert_eq!(value("//service/instance/@name"), "default");
    assert_eq!(value("//property_group[@name='config']/propval[@name='file']/@value"), "/etc/tern/ternd.toml");
    assert_eq!(value("//property_group[@name='config']/propval[@name='file']/@type"), "astring");
    assert_eq!(value("//property_group[@name='startd']/propval[@name='duration']/@value"), "child");
    assert_eq!(value("//method_context/method_credential/@user"), "tern");
    assert_eq!(value("//exec_method[@name='start']/@exec"), "/lib/svc/method/ternd start");
    assert_eq!(value("//exec_method[@name='stop']/@exec"), ":kill", "SIGTERM to the contract");
    assert_eq!(
        value("//exec_method[@name='refresh']/@exec"),
        ":kill -HUP",
        "svcadm refresh: ternd re-reads its certificates"
    );
    let stop: u64 = value("//exec_method[@name='stop']/@timeout_seconds").parse().unwrap();
    assert!(stop > Timeouts::default().shutdown_deadline_ms.div_ceil(1000), "stop timeout {stop} s");
    for fmri in ["svc:/milestone/network:default", "svc:/system/filesystem/local"] {
        assert_eq!(value(&format!("count(//service/dependency/service_fmri[@value='{fmri}'])")), "1", "{fmri}");
    }
    assert!(!value("//template/common_name/loctext").is_empty(), "a common name");
    assert_eq!(value("//template/documentation/manpage[@title='ternd']/@section"), "1");
}

/// The method script parses as a POSIX shell script, and is executable.
#[test]
fn the_smf_method_script_parses() {
    let script = deploy("smf/ternd");
    let out = run(Command::new("sh").arg("-n").arg(&script));
    assert!(out.status.success(), "sh -n {}: {}", script.display(), text(&out));
    assert_eq!(std::fs::metadata(&script).unwrap().permissions().mode() & 0o111, 0o111, "it is executable");
}

/// A stand-in for Solaris: smf_include.sh's exit codes, and an `svcprop` that answers
/// `-p config/file $SMF_FMRI` with $FAKE_CONFIG_FILE (no property when unset), and a
/// `ternd` that runs the real `--check` but, run for real, prints its pid and arguments.
struct Solaris {
    dir: tempfile::TempDir,
}

impl Solaris {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(
            dir.path().join("smf_include.sh"),
            "SMF_EXIT_OK=0\nSMF_EXIT_ERR_FATAL=95\nSMF_EXIT_ERR_CONFIG=96\nSMF_EXIT_MON_DEGRADE=97\n\
             SMF_EXIT_MON_OFFLINE=98\nSMF_EXIT_ERR_NOSMF=99\nSMF_EXIT_ERR_PERM=100\n",
        )
        .unwrap();
        write_executable(
            &bin.join("svcprop"),
            "#!/bin/sh\n[ \"$#\" = 3 ] && [ \"$1\" = -p ] && [ \"$2\" = config/file ] && [ \"$3\" = \"$SMF_FMRI\" ] || \
             { echo \"svcprop: unexpected arguments: $*\" >&2; exit 2; }\n\
             [ -n \"$FAKE_CONFIG_FILE\" ] || { echo \"svcprop: Couldn't find property config/file\" >&2; exit 1; }\n\
             echo \"$FAKE_CONFIG_FILE\"\n",
        );
        write_executable(
            &bin.join("ternd"),
            &format!(
                "#!/bin/sh\ncase \" $* \" in *\" --check \"*) exec {} \"$@\" ;; esac\necho \"ternd pid=$$ args=$*\"\n",
                tern_tests::binary("ternd").display()
            ),
        );
        Self { dir }
    }

    /// Runs the method script with `args`, `SMF_FMRI` = `fmri` and svcprop answering `config`.
    fn method(&self, args: &[&str], fmri: Option<&str>, config: Option<&Path>) -> (Output, u32) {
        let mut cmd = Command::new("sh");
        cmd.arg(deploy("smf/ternd"))
            .args(args)
            .env("PATH", format!("{}:/usr/bin:/bin", self.dir.path().join("bin").display()))
            .env("TERN_SMF_INCLUDE", self.dir.path().join("smf_include.sh"))
            .env_remove("SMF_FMRI")
            .env_remove("FAKE_CONFIG_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(f) = fmri {
            cmd.env("SMF_FMRI", f);
        }
        if let Some(c) = config {
            cmd.env("FAKE_CONFIG_FILE", c);
        }
        let child = cmd.spawn().unwrap();
        let pid = child.id();
        (child.wait_with_output().unwrap(), pid)
    }
}

const FMRI: &str = "svc:/application/tern/ternd:default";

/// `start` execs ternd (same process: the contract's child) with the file config/file names, once it passes ternd --check.
#[test]
fn the_smf_start_method_execs_ternd_with_the_configured_file() {
    let solaris = Solaris::new();
    let config = deploy("config/m10-1-1.toml");
    let (out, pid) = solaris.method(&["start"], Some(FMRI), Some(&config));
    assert!(out.status.success(), "start: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("configuration is valid"), "ternd --check ran first: {stdout}");
    let ran =
        stdout.lines().find(|l| l.starts_with("ternd pid=")).unwrap_or_else(|| panic!("ternd never ran: {stdout}"));
    assert_eq!(ran, format!("ternd pid={pid} args=--config {}", config.display()), "exec, not a child process");
}

/// `start` refuses with SMF_EXIT_ERR_CONFIG (maintenance, not a restart loop) when config/file is unset, missing or invalid.
#[test]
fn the_smf_start_method_exits_err_config_for_a_missing_or_invalid_configuration() {
    let solaris = Solaris::new();
    let dir = tempfile::tempdir().unwrap();
    let invalid = dir.path().join("invalid.toml");
    std::fs::write(&invalid, "name = \"m10-1-1\"\nlisten_addr = \"not an address\"\n").unwrap();
    let absent = dir.path().join("absent.toml");
    for (what, config, says) in [
        ("no config/file property", None, "no config/file property"),
        ("a file that does not exist", Some(absent.as_path()), "does not exist"),
        ("a file ternd --check refuses", Some(invalid.as_path()), "not a valid configuration"),
    ] {
        let (out, _) = solaris.method(&["start"], Some(FMRI), config);
        assert_eq!(out.status.code(), Some(SMF_EXIT_ERR_CONFIG), "{what}: {}", text(&out));
        assert!(text(&out).contains(says), "{what}: {}", text(&out));
        assert!(!text(&out).contains("ternd pid="), "{what}: ternd was started anyway");
    }
    let (out, _) = solaris.method(&["start"], None, Some(&deploy("config/m10-1-1.toml")));
    assert_eq!(out.status.code(), Some(SMF_EXIT_ERR_NOSMF), "outside SMF: {}", text(&out));
    let (out, _) = solaris.method(&["stop"], Some(FMRI), None);
    assert!(!out.status.success() && text(&out).contains("usage"), "stop is the manifest's :kill: {}", text(&out));
}

// ---- example configurations ------------------------------------------------------------

/// Every example configuration passes `ternd --check`.
#[test]
fn every_example_config_passes_ternd_check() {
    let found: Vec<String> = std::fs::read_dir(deploy("config"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    for e in EXAMPLES {
        assert!(found.iter().any(|f| f == e), "deploy/config/{e} is missing");
    }
    for e in &found {
        let file = deploy("config").join(e);
        let out = run(Command::new(tern_tests::binary("ternd")).arg("--check").arg("--config").arg(&file));
        assert!(out.status.success(), "ternd --check {e}: {}", text(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("configuration is valid"), "{e}: {}", text(&out));
    }
}

/// The examples form one 3-server cluster: one founder, each joining the others, paths where the packages put them.
#[test]
fn the_example_configs_describe_one_three_server_cluster() {
    let configs: Vec<Config> = EXAMPLES.iter().map(|e| Config::load(&deploy("config").join(e)).unwrap()).collect();
    let advertised: Vec<String> = configs
        .iter()
        .map(|c| c.advertise_addr.clone().unwrap_or_else(|| panic!("{} advertises nothing", c.name)))
        .collect();
    for (i, c) in configs.iter().enumerate() {
        assert_eq!(format!("{}.toml", c.name), EXAMPLES[i], "the file is named after its node");
        let mut others: Vec<&String> = advertised.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, a)| a).collect();
        let mut join: Vec<&String> = c.join.iter().collect();
        others.sort();
        join.sort();
        assert_eq!(join, others, "{} joins through the other two", c.name);
        assert_eq!(c.data_dir, Path::new("/var/lib/tern"), "{}: the unit's StateDirectory", c.name);
        assert_eq!(c.tls.ca, Path::new("/etc/tern/tls/ca.pem"), "{}", c.name);
        assert_eq!(c.tls.cert, Path::new(&format!("/etc/tern/tls/{}.pem", c.name)), "{}", c.name);
        assert_eq!(c.tls.key, Path::new(&format!("/etc/tern/tls/{}-key.pem", c.name)), "{}", c.name);
        assert_eq!(c.voters, 3, "{}", c.name);
        let metrics = c.metrics_addr.unwrap_or_else(|| panic!("{} serves no metrics", c.name));
        assert!(metrics.ip().is_loopback() && !c.metrics_remote, "{}: metrics stay on loopback", c.name);
        assert!(!c.log.json, "{}: text logs (the journal's)", c.name);
    }
    let founders: Vec<&str> =
        configs.iter().filter(|c| c.bootstrap == Some(Bootstrap::New)).map(|c| c.name.as_str()).collect();
    assert_eq!(founders, ["m10-1-1"], "exactly one founder");
    assert!(configs[1..].iter().all(|c| c.bootstrap == Some(Bootstrap::Existing)), "the others never found one");
    let mut unique = advertised.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 3, "three distinct addresses: {advertised:?}");
}
