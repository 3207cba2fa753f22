//! `fake-ldm`: a stand-in for Oracle's `ldm`, for end-to-end tests of the ldm backend
//! across a real process boundary. Test tooling only; never installed on a server.
//!
//! It lives in tern-hypervisor (not a crate of its own) because Cargo gives a package's
//! integration tests the path of that package's binaries (`CARGO_BIN_EXE_fake-ldm`),
//! so the backend's tests run it without build scripts or guessed paths. It uses only std.
//!
//! Environment:
//! - `FAKE_LDM_DIR`: the folder of answers and controls (below); when unset, the folder
//!   of the path it was run as, so a symlink `DIR/ldm -> fake-ldm` is a whole fake
//!   server (tests use that: no environment shared between parallel tests, and no
//!   freshly written executable to trip over ETXTBSY);
//! - `FAKE_LDM_LOG`: a file to which every invocation appends one line, its arguments
//!   joined by spaces (plus `#pid N` and, for `migrate-domain -p`, `#password-file ...`);
//!   when unset, `commands.log` in that folder.
//!
//! Each invocation has a *key*: the subcommand with ldm's aliases resolved
//! (`list`/`ls` -> `list-domain`, `migrate` -> `migrate-domain`, ...), and for
//! `list-domain` a variant: `list-domain-status` (`-o status`), `list-domain-l` (`-l`).
//! In `FAKE_LDM_DIR`:
//! - `KEY.out`: printed on stdout; or `KEY.1.out`, `KEY.2.out`, ...: one per call, in
//!   order, the last one repeating (a migration's progress);
//! - `KEY.fail`: fail instead: an optional first line `exit=N` (default 1), the rest
//!   printed on stderr;
//! - `KEY.hang`: never answer (until killed);
//! - `KEY.delay_ms`: wait this long first; `migrate-domain` stops waiting when
//!   `cancel-operation` has been called (it then fails as a cancelled migration does);
//! - `ldm -V` prints the seed release's version banner unless `-V.out` exists;
//! - `migrate-domain.password`: the password the `-p` file must hold (else
//!   "Authentication failed").
//!
//! With no answer file a command succeeds silently, as ldm's action commands do.
//!
//! **Fleet mode.** When the folder holds `server.json` (a [`tern_model::Server`] as
//! JSON), fake-ldm is a stateful server and the folders beside it, one per host name,
//! are the other servers of the fleet. Answer files above still win (tests inject
//! faults with them); otherwise:
//! - `list-domain [-l] [-o status] -p [NAME]`, `list-bindings`, `list-devices -a -p`
//!   and `list-services -p` print the server as ldm would ([`tern_hypervisor::ldm::render`]);
//! - `migrate-domain [-n] [-p FILE] NAME [user@]HOST[:NEW]` checks the move with the
//!   model's preflight against `../HOST/server.json` and refuses in ldm's words; a live
//!   one shows its progress on both servers (`list-domain -o status`) for
//!   `migration_ms` milliseconds (file, default 2000), then, under a fleet-wide lock,
//!   binds the guest on the target where the preflight put it and removes it from the
//!   source; `cancel-operation migration NAME` stops it with the guest still here.
//!   A migrating fake-ldm that is killed leaves the guest where it was;
//! - `start-domain`, `stop-domain`, `unbind-domain`, `remove-domain` change the
//!   domain's state; other commands that would change the server are refused (exit 3)
//!   rather than succeed without effect.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// What `ldm -V` prints first on Oracle VM Server for SPARC 3.1 (the seed's release).
const VERSION: &str =
    "\nLogical Domains Manager (v 3.1.1.0.6)\n\tHypervisor control protocol v 1.9\n\tUsing Hypervisor MD v 1.4\n";

fn key(args: &[String]) -> String {
    let sub = args.first().map(String::as_str).unwrap_or("");
    let sub = match sub {
        "list" | "ls" | "ls-dom" | "list-domain" => "list-domain",
        "ls-bindings" | "list-bindings" => "list-bindings",
        "ls-devices" | "list-devices" => "list-devices",
        "ls-services" | "list-services" => "list-services",
        "migrate" | "migrate-domain" => "migrate-domain",
        "cancel-op" | "cancel-operation" => "cancel-operation",
        other => other,
    };
    if sub == "list-domain" {
        if args.windows(2).any(|w| w[0] == "-o" && w[1] == "status") {
            return "list-domain-status".into();
        }
        if args.iter().any(|a| a == "-l") {
            return "list-domain-l".into();
        }
    }
    sub.to_string()
}

/// `FAKE_LDM_DIR`, else the folder of the path this program was run as.
fn fake_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("FAKE_LDM_DIR") {
        return Some(PathBuf::from(d));
    }
    let argv0 = PathBuf::from(std::env::args_os().next()?);
    argv0.parent().filter(|p| !p.as_os_str().is_empty()).map(Path::to_path_buf)
}

fn log(line: &str) {
    let path = match std::env::var_os("FAKE_LDM_LOG") {
        Some(p) => PathBuf::from(p),
        None => match fake_dir() {
            Some(d) => d.join("commands.log"),
            None => return,
        },
    };
    if let Ok(mut f) = std::fs::OpenOptions::new().create(true).append(true).open(path) {
        // One write of the whole record: parallel invocations append to one file
        // (O_APPEND), and a record written in pieces could interleave with another.
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// Fails like ldm: message on stderr, non-zero exit.
fn fail(spec: &str) -> ExitCode {
    let (code, message) = match spec.split_once('\n') {
        Some((first, rest)) if first.starts_with("exit=") => (first["exit=".len()..].trim().parse().unwrap_or(1), rest),
        _ => (1, spec),
    };
    eprint!("{message}");
    ExitCode::from(code)
}

/// The next answer of a numbered sequence, the last one repeating.
fn next_in_sequence(dir: &Path, key: &str) -> Option<String> {
    let first = dir.join(format!("{key}.1.out"));
    if !first.exists() {
        return None;
    }
    let count_file = dir.join(format!("{key}.count"));
    let n: u32 = read(&count_file).and_then(|s| s.trim().parse().ok()).unwrap_or(0) + 1;
    let _ = std::fs::write(&count_file, n.to_string());
    let mut i = n;
    while i > 1 && !dir.join(format!("{key}.{i}.out")).exists() {
        i -= 1;
    }
    read(&dir.join(format!("{key}.{i}.out")))
}

fn password_check(dir: &Path, args: &[String]) -> Result<(), ExitCode> {
    use std::os::unix::fs::PermissionsExt;
    let Some(i) = args.iter().position(|a| a == "-p") else {
        return Ok(());
    };
    let Some(file) = args.get(i + 1).map(PathBuf::from) else {
        return Err(fail("exit=1\nOption -p requires a file name\n"));
    };
    let Ok(meta) = std::fs::metadata(&file) else {
        return Err(fail(&format!("exit=1\nUnable to read password file {}\n", file.display())));
    };
    let content = read(&file).unwrap_or_default();
    let expected = read(&dir.join("migrate-domain.password"));
    let matches = expected.as_deref().is_none_or(|e| e.trim_end() == content.trim_end());
    log(&format!(
        "#password-file mode={:o} matches={}",
        meta.permissions().mode() & 0o777,
        if matches { "yes" } else { "no" }
    ));
    if matches { Ok(()) } else { Err(fail("exit=1\nAuthentication failed\n")) }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // One append, so the pid is never missing after the command line.
    log(&format!("{}\n#pid {}", args.join(" "), std::process::id()));
    let Some(dir) = fake_dir() else {
        eprintln!("fake-ldm: FAKE_LDM_DIR is not set and the program's folder is unknown");
        return ExitCode::from(2);
    };
    let key = key(&args);
    let fleet = dir.join(fleet::STATE).exists();
    if key == "cancel-operation" && !fleet {
        let _ = std::fs::write(dir.join("cancelled"), "");
    }
    if dir.join(format!("{key}.hang")).exists() {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    if key == "migrate-domain"
        && let Err(code) = password_check(&dir, &args)
    {
        return code;
    }
    if key == "cancel-operation" && fleet && !dir.join("cancel-operation.fail").exists() {
        return fleet::cancel(&dir, &args);
    }
    if let Some(ms) = read(&dir.join(format!("{key}.delay_ms"))).and_then(|s| s.trim().parse::<u64>().ok()) {
        let until = Instant::now() + Duration::from_millis(ms);
        while Instant::now() < until {
            if key == "migrate-domain" && dir.join("cancelled").exists() {
                let domain = args.iter().rev().nth(1).cloned().unwrap_or_default();
                return fail(&format!(
                    "exit=1\nMigration of LDom {domain} was cancelled\nDomain Migration of LDom {domain} failed\n"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    if let Some(spec) = read(&dir.join(format!("{key}.fail"))) {
        return fail(&spec);
    }
    let answer = read(&dir.join(format!("{key}.out"))).or_else(|| next_in_sequence(&dir, &key));
    if fleet && answer.is_none() && key != "-V" {
        return fleet::answer(&dir, &key, &args);
    }
    // `ldm -V` answers as a real one does, unless `-V.out` says otherwise.
    let answer = answer.or_else(|| (key == "-V").then(|| VERSION.to_string()));
    if let Some(text) = answer {
        print!("{text}");
    }
    ExitCode::SUCCESS
}

/// fake-ldm as a stateful server among others (see the module documentation).
mod fleet {
    use super::{fail, read};
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;
    use std::time::{Duration, Instant};
    use tern_hypervisor::ldm::render;
    use tern_model::{DomainState, MigrationQuery, Reserved, Rule, Server, Violation, preflight};

    /// The server this folder is.
    pub const STATE: &str = "server.json";
    const LOCK: &str = ".fake-ldm.lock";
    const LOCK_WAIT: Duration = Duration::from_secs(10);
    const TICK: Duration = Duration::from_millis(50);

    fn load(dir: &Path) -> Result<Server, ExitCode> {
        let text = read(&dir.join(STATE))
            .ok_or_else(|| fail(&format!("exit=2\nfake-ldm: cannot read {}\n", dir.join(STATE).display())))?;
        serde_json::from_str(&text)
            .map_err(|e| fail(&format!("exit=2\nfake-ldm: {} is not a server: {e}\n", dir.join(STATE).display())))
    }

    /// Replaces the state in one rename, so a reader sees the old server or the new one.
    fn save(dir: &Path, server: &Server) -> Result<(), ExitCode> {
        let tmp = dir.join(format!("{STATE}.{}", std::process::id()));
        let text = serde_json::to_string_pretty(server).map_err(|e| fail(&format!("exit=2\nfake-ldm: {e}\n")))?;
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, dir.join(STATE)))
            .map_err(|e| fail(&format!("exit=2\nfake-ldm: writing {}: {e}\n", dir.join(STATE).display())))
    }

    fn pid_alive(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
    }

    /// The fleet-wide lock (a folder, created atomically), held while a command
    /// changes servers; a lock whose holder died is taken over.
    struct Lock(PathBuf);

    impl Lock {
        fn take(fleet: &Path) -> Result<Self, ExitCode> {
            let path = fleet.join(LOCK);
            let start = Instant::now();
            loop {
                if std::fs::create_dir(&path).is_ok() {
                    let _ = std::fs::write(path.join("pid"), std::process::id().to_string());
                    return Ok(Self(path));
                }
                let holder = read(&path.join("pid")).and_then(|p| p.trim().parse::<u32>().ok());
                if holder.is_some_and(|p| !pid_alive(p)) {
                    let _ = std::fs::remove_dir_all(&path);
                    continue;
                }
                if start.elapsed() > LOCK_WAIT {
                    return Err(fail("exit=1\nfake-ldm: the fleet lock is held; ldmd is busy\n"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    impl Drop for Lock {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A running migration as each side records it: `op.NAME` holds
    /// `PID ROLE PEER PROGRESS` (ROLE `target` on the source, `source` on the target).
    fn op_file(dir: &Path, domain: &str) -> PathBuf {
        dir.join(format!("op.{domain}"))
    }

    fn write_op(dir: &Path, domain: &str, role: &str, peer: &str, pct: u8) {
        let path = op_file(dir, domain);
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let line = format!("{} {role} {peer} {pct}\n", std::process::id());
        if std::fs::write(&tmp, line).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
    }

    /// The migration of `domain` this server takes part in, if its fake-ldm still runs.
    fn read_op(dir: &Path, domain: &str) -> Option<render::Operation> {
        let text = read(&op_file(dir, domain))?;
        let mut w = text.split_whitespace();
        let pid: u32 = w.next()?.parse().ok()?;
        let role = match w.next()? {
            "target" => "target",
            _ => "source",
        };
        let peer = w.next()?.to_string();
        let progress_pct = w.next()?.parse().ok()?;
        pid_alive(pid).then_some(render::Operation { progress_pct, peer_role: role, peer })
    }

    fn not_found(domain: &str) -> ExitCode {
        fail(&format!("exit=1\nLDom \"{domain}\" was not found\n"))
    }

    /// The operands of a command: its arguments that are neither flags nor their values.
    fn operands(args: &[String]) -> Vec<&str> {
        let mut out = Vec::new();
        let mut i = 1;
        while i < args.len() {
            let a = args[i].as_str();
            if a == "-o" || a == "-p" && args[0].starts_with("migrate") {
                i += 2;
                continue;
            }
            if !a.starts_with('-') {
                out.push(a);
            }
            i += 1;
        }
        out
    }

    fn print(text: Option<String>, domain: Option<&str>) -> ExitCode {
        match text {
            Some(t) => {
                print!("{t}");
                ExitCode::SUCCESS
            }
            None => not_found(domain.unwrap_or("")),
        }
    }

    /// Every command but `cancel-operation`, answered from the server's state.
    pub fn answer(dir: &Path, key: &str, args: &[String]) -> ExitCode {
        match run(dir, key, args) {
            Ok(code) | Err(code) => code,
        }
    }

    fn run(dir: &Path, key: &str, args: &[String]) -> Result<ExitCode, ExitCode> {
        let ops = operands(args);
        let name = ops.last().copied();
        let server = load(dir)?;
        Ok(match key {
            "list-domain" => print(render::list_domain(&server, name), name),
            "list-domain-l" | "list-bindings" => print(render::list_bindings(&server, name), name),
            "list-domain-status" => {
                let Some(domain) = name else {
                    return Err(fail("exit=1\nfake-ldm: list-domain -o status needs a domain name\n"));
                };
                let op = read_op(dir, domain);
                if op.is_none() && server.domain(domain).is_none() {
                    return Err(not_found(domain));
                }
                print(Some(render::status(domain, op.as_ref())), name)
            }
            "list-devices" => print(Some(render::list_devices(&server)), None),
            "list-services" => print(Some(render::list_services(&server)), None),
            "migrate-domain" => migrate(dir, args)?,
            "start-domain" | "stop-domain" | "unbind-domain" | "remove-domain" => {
                let Some(domain) = name else {
                    return Err(fail(&format!("exit=1\n{key} needs a domain name\n")));
                };
                change_state(dir, key, domain)?
            }
            other => fail(&format!(
                "exit=3\nfake-ldm: `{other}` would change the server, and fleet mode does not model it\n"
            )),
        })
    }

    fn change_state(dir: &Path, key: &str, domain: &str) -> Result<ExitCode, ExitCode> {
        let _lock = Lock::take(dir.parent().unwrap_or(dir))?;
        let mut server = load(dir)?;
        let Some(d) = server.domain(domain).cloned() else {
            return Err(not_found(domain));
        };
        let refuse = |state: &str| fail(&format!("exit=1\nLDom {domain} is {state}\n"));
        match (key, d.state) {
            ("start-domain", DomainState::Bound) => set_state(&mut server, domain, DomainState::Active),
            ("stop-domain", DomainState::Active) => set_state(&mut server, domain, DomainState::Bound),
            ("unbind-domain", DomainState::Bound) => {
                if let Some((mut d, _, _)) = server.unbind_domain(domain) {
                    d.state = DomainState::Inactive;
                    server.domains.push(d);
                }
            }
            ("remove-domain", DomainState::Inactive) => server.domains.retain(|x| x.name != domain),
            (_, s) => return Err(refuse(&s.to_string())),
        }
        save(dir, &server)?;
        Ok(ExitCode::SUCCESS)
    }

    fn set_state(server: &mut Server, domain: &str, state: DomainState) {
        if let Some(d) = server.domain_mut(domain) {
            d.state = state;
        }
    }

    /// What ldm prints for a condition the preflight found; the phrases are those the
    /// ldm backend's failure table maps back to the same rule.
    fn ldm_words(v: &Violation, target: &str) -> String {
        match v.rule {
            Rule::Lm(1) => "Domain has physical I/O devices assigned and cannot be migrated".into(),
            Rule::Lm(6) => format!("Not enough free CPUs on target {target}"),
            Rule::Lm(7) => format!("Invalid cpu-arch for the target machine {target}"),
            Rule::Lm(8) => format!("Not enough free memory on target {target}"),
            Rule::Lm(9) => format!("Unable to bind memory on target {target}: free memory layout and congruency"),
            Rule::Lm(10) => format!("The firmware on target {target} does not support migration of this domain"),
            _ => v.message.clone(),
        }
    }

    struct Request<'a> {
        dry_run: bool,
        domain: &'a str,
        host: &'a str,
        new_name: Option<&'a str>,
    }

    fn request(args: &[String]) -> Result<Request<'_>, ExitCode> {
        let ops = operands(args);
        let [domain, target] = ops.as_slice() else {
            return Err(fail(
                "exit=1\nUsage: ldm migrate-domain [-f] [-n] [-p <password_file>] <source_ldom> [<user>@]<target_host>[:<target_ldom>]\n",
            ));
        };
        let host = target.rsplit_once('@').map_or(*target, |(_, h)| h);
        let (host, new_name) = match host.split_once(':') {
            Some((h, n)) => (h, Some(n)),
            None => (host, None),
        };
        Ok(Request { dry_run: args.iter().any(|a| a == "-n"), domain, host, new_name })
    }

    fn migrate(dir: &Path, args: &[String]) -> Result<ExitCode, ExitCode> {
        let req = request(args)?;
        let domain = req.domain;
        let closing = if req.dry_run {
            format!("Domain Migration of LDom {domain} would fail if attempted")
        } else {
            format!("Domain Migration of LDom {domain} failed")
        };
        let fleet = dir.parent().unwrap_or(dir);
        let target_dir = fleet.join(req.host);
        let (source, target) = (load(dir)?, {
            if !target_dir.join(STATE).exists() {
                return Err(fail(&format!(
                    "exit=1\nFailed to establish connection with ldmd(1m) on target: {}\nCheck that the ldmd service is enabled on the target machine and that it is running\n{closing}\n",
                    req.host
                )));
            }
            load(&target_dir)?
        });
        if source.domain(domain).is_none() {
            return Err(not_found(domain));
        }
        check(&source, &target, &req, &closing)?;
        if req.dry_run {
            return Ok(ExitCode::SUCCESS);
        }
        let arrival = req.new_name.unwrap_or(domain);
        let ms: u64 = read(&dir.join("migration_ms")).and_then(|s| s.trim().parse().ok()).unwrap_or(2000);
        let start = Instant::now();
        let cancel = dir.join(format!("cancel.{domain}"));
        let _ = std::fs::remove_file(&cancel);
        let clear = || {
            let _ = std::fs::remove_file(op_file(dir, domain));
            let _ = std::fs::remove_file(op_file(&target_dir, arrival));
        };
        loop {
            let pct = (start.elapsed().as_millis() * 100 / u128::from(ms.max(1))).min(99) as u8;
            write_op(dir, domain, "target", req.host, pct);
            write_op(&target_dir, arrival, "source", &source.name, pct);
            if cancel.exists() {
                clear();
                let _ = std::fs::remove_file(&cancel);
                return Err(fail(&format!("exit=1\nMigration of LDom {domain} was cancelled\n{closing}\n")));
            }
            if start.elapsed() >= Duration::from_millis(ms) {
                break;
            }
            std::thread::sleep(TICK);
        }
        let result = commit(dir, &target_dir, &req, &closing);
        clear();
        result
    }

    /// The preflight as ldmd on the target would run it, refused in ldm's words.
    fn check(
        source: &Server,
        target: &Server,
        req: &Request<'_>,
        closing: &str,
    ) -> Result<tern_model::Binding, ExitCode> {
        let reserved = Reserved::default();
        let report = preflight(&MigrationQuery {
            source,
            target,
            domain: req.domain,
            new_name: req.new_name,
            target_reserved: &reserved,
        });
        match (report.ok(), report.binding) {
            (true, Some(b)) => Ok(b),
            _ => {
                let mut lines: Vec<String> = report.errors.iter().map(|v| ldm_words(v, req.host)).collect();
                lines.dedup();
                Err(fail(&format!("exit=1\n{}\n{closing}\n", lines.join("\n"))))
            }
        }
    }

    /// The end of a live migration: the guest bound on the target, gone from here.
    fn commit(dir: &Path, target_dir: &Path, req: &Request<'_>, closing: &str) -> Result<ExitCode, ExitCode> {
        let _lock = Lock::take(dir.parent().unwrap_or(dir))?;
        let (mut source, mut target) = (load(dir)?, load(target_dir)?);
        let binding = check(&source, &target, req, closing)?;
        let Some((guest, _, _)) = source.unbind_domain(req.domain) else {
            return Err(not_found(req.domain));
        };
        target
            .bind_domain(guest, &binding)
            .map_err(|e| fail(&format!("exit=1\nUnable to bind LDom {} on target: {e}\n{closing}\n", req.domain)))?;
        // The target resumes the guest before the source lets go of it, as ldmd does.
        save(target_dir, &target)?;
        save(dir, &source)?;
        Ok(ExitCode::SUCCESS)
    }

    /// `cancel-operation migration NAME`: stops the migration of NAME running from here.
    pub fn cancel(dir: &Path, args: &[String]) -> ExitCode {
        let ops = operands(args);
        let (Some(&"migration"), Some(domain)) = (ops.first(), ops.get(1)) else {
            return fail("exit=1\nUsage: ldm cancel-operation (migration | reconf | memdr) <ldom>\n");
        };
        match read_op(dir, domain) {
            Some(op) if op.peer_role == "target" => match std::fs::write(dir.join(format!("cancel.{domain}")), "") {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("exit=2\nfake-ldm: {e}\n")),
            },
            _ => fail(&format!("exit=1\nNo migration of LDom {domain} is in progress on this system\n")),
        }
    }
}
