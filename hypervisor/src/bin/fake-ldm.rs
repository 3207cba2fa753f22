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
    if key == "cancel-operation" {
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
    // `ldm -V` answers as a real one does, unless `-V.out` says otherwise.
    let answer = answer.or_else(|| (key == "-V").then(|| VERSION.to_string()));
    if let Some(text) = answer {
        print!("{text}");
    }
    ExitCode::SUCCESS
}
