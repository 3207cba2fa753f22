//! Packaging (issue 17): `ternctl completions`, `ternctl man`, the version and commit both
//! programs print (and `dist/build.rs`, which finds the commit), `deploy/install.sh`, and
//! the .deb that `deploy/deb/build` makes from the debug binaries: inspected, then
//! installed for real (as root, with dpkg) and purged, or else extracted.
//!
//! Nothing here builds a release: the package is made from the binaries
//! [`tern_tests::binary`] built for this test run.

use clap::CommandFactory;
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The example configurations every package and install carries (deploy/config).
const EXAMPLES: [&str; 3] = ["m10-1-1.toml", "m10-1-2.toml", "m10-1-3.toml"];

fn workspace() -> PathBuf {
    tern_tests::workspace()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

/// Runs `cmd`, which must succeed; its stdout.
fn ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(out.status.success(), "{cmd:?} failed ({}):\n{}", out.status, text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn ternctl(args: &[&str]) -> String {
    ok(Command::new(tern_tests::binary("ternctl")).args(args))
}

/// The folder holding the ternd and ternctl under test.
fn bin_dir() -> PathBuf {
    tern_tests::binary("ternd").parent().expect("ternd's folder").to_path_buf()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o7777
}

/// The page every command must have, named as git names its pages: the command's path
/// joined by '-' (ternctl-user-add.1), for ternctl's whole tree and for ternd.
fn expected_man_pages() -> BTreeSet<String> {
    fn walk(prefix: &str, cmd: &clap::Command, pages: &mut BTreeSet<String>) {
        let name = if prefix.is_empty() { cmd.get_name().to_string() } else { format!("{prefix}-{}", cmd.get_name()) };
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
            walk(&name, sub, pages);
        }
        pages.insert(format!("{name}.1"));
    }
    let mut pages = BTreeSet::new();
    walk("", &tern_ctl::Cli::command(), &mut pages);
    walk("", &tern_dist::ternd::Args::command(), &mut pages);
    for anchor in [
        "ternctl.1",
        "ternctl-check.1",
        "ternctl-user-add.1",
        "ternctl-rebalance-plan.1",
        "ternctl-version.1",
        "ternd.1",
    ] {
        assert!(pages.contains(anchor), "{anchor} is not among the expected pages {pages:?}");
    }
    pages
}

/// The arguments of a roff request line (`.TH A 1 "x y" z`), quotes honoured.
fn roff_args(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut rest = line.split_once(' ').map_or("", |(_, r)| r).trim_start();
    while !rest.is_empty() {
        let (arg, tail) = match rest.strip_prefix('"') {
            Some(quoted) => quoted.split_once('"').unwrap_or((quoted, "")),
            None => rest.split_once(' ').unwrap_or((rest, "")),
        };
        args.push(arg.to_string());
        rest = tail.trim_start();
    }
    args
}

/// `page` (named NAME.1) is a man page of NAME: a .TH with its name, section 1, a date,
/// the version it documents and the manual; a NAME section that names it; a synopsis.
fn assert_valid_page(file: &str, roff: &str) {
    let name = file.strip_suffix(".1").unwrap_or_else(|| panic!("{file} is not a section-1 page"));
    let th = roff.lines().find(|l| l.starts_with(".TH ")).unwrap_or_else(|| panic!("{file} has no .TH line"));
    let args = roff_args(th);
    assert_eq!(args.len(), 5, "{file}: .TH needs title, section, date, source, manual: {th}");
    assert_eq!((args[0].as_str(), args[1].as_str()), (name.to_uppercase().as_str(), "1"), "{file}: {th}");
    let date = &args[2];
    let is_date = date.len() == 10 && date.chars().enumerate().all(|(i, c)| (i == 4 || i == 7) == (c == '-'));
    assert!(is_date || date == "unknown", "{file}: the date {date:?} is not YYYY-MM-DD");
    assert!(args[3].starts_with(&format!("tern {VERSION} (commit ")), "{file}: source {:?}", args[3]);
    assert_eq!(args[4], "tern", "{file}: manual");
    let lines: Vec<&str> = roff.lines().collect();
    let at = lines.iter().position(|l| *l == ".SH NAME").unwrap_or_else(|| panic!("{file} has no NAME section"));
    let escaped = format!("{} \\- ", name.replace('-', "\\-"));
    assert!(lines.get(at + 1).is_some_and(|l| l.starts_with(&escaped)), "{file}: NAME must read `{escaped}...`");
    assert!(lines.contains(&".SH SYNOPSIS"), "{file} has no SYNOPSIS");
    for line in lines.iter().filter(|l| l.starts_with('.')) {
        let request = line[1..].split([' ', '\\']).next().unwrap_or("");
        assert!(!request.is_empty() && request.len() <= 3, "{file}: {line:?} is not a roff request");
    }
}

/// `ternctl completions bash|zsh|fish` each print a script its shell accepts; bash's completes commands.
#[test]
fn completions_are_scripts_their_shells_accept_and_bash_completes_commands() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, file, check) in [
        ("bash", "ternctl.bash", &["-n"][..]),
        ("zsh", "_ternctl", &["-n"][..]),
        ("fish", "ternctl.fish", &["--no-execute"][..]),
    ] {
        let script = ternctl(&["completions", shell]);
        assert!(script.contains("migrate-domain") && script.contains("rebalance"), "{shell}: no commands in\n{script}");
        let path = dir.path().join(file);
        std::fs::write(&path, &script).unwrap();
        if !have(shell) {
            println!("note: {shell} is not installed; its script was written but not parsed");
            continue;
        }
        ok(Command::new(shell).args(check).arg(&path));
    }
    // Sourced, the bash script registers _ternctl and completes a command and a subcommand.
    let bash = dir.path().join("ternctl.bash");
    let out = ok(Command::new("bash").arg("-c").arg(format!(
        "source {}; complete -p ternctl; \
         COMP_WORDS=(ternctl migrate-d); COMP_CWORD=1; _ternctl ternctl migrate-d ternctl; echo \"one: ${{COMPREPLY[*]}}\"; \
         COMP_WORDS=(ternctl rebalance make-r); COMP_CWORD=2; _ternctl ternctl make-r rebalance; echo \"two: ${{COMPREPLY[*]}}\"",
        bash.display()
    )));
    assert!(out.contains("-F _ternctl") && out.contains("ternctl\n"), "{out}");
    assert!(out.contains("one: migrate-domain\n") && out.contains("two: make-room\n"), "{out}");
}

/// `ternctl man --dir` writes exactly one valid page per command (git style) and ternd.1, and lists them.
#[test]
fn man_writes_one_valid_page_per_command_and_one_for_ternd() {
    let dir = tempfile::tempdir().unwrap();
    let man = dir.path().join("man1");
    let printed = ternctl(&["man", "--dir", man.to_str().unwrap()]);
    let written: BTreeSet<String> =
        std::fs::read_dir(&man).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(written, expected_man_pages(), "the pages written differ from one per command");
    let listed: BTreeSet<String> = printed.lines().map(|l| l.rsplit('/').next().unwrap_or(l).to_string()).collect();
    assert_eq!(listed, written, "ternctl man must print every page it wrote");
    for page in &written {
        assert_valid_page(page, &std::fs::read_to_string(man.join(page)).unwrap());
    }
    let ternd = std::fs::read_to_string(man.join("ternd.1")).unwrap();
    assert!(ternd.contains("\\-\\-config") && ternd.contains("\\-\\-check"), "ternd.1 lacks its options:\n{ternd}");
    let user_add = std::fs::read_to_string(man.join("ternctl-user-add.1")).unwrap();
    assert!(user_add.contains("\\-\\-profile"), "ternctl-user-add.1 lacks --profile:\n{user_add}");
    let top = std::fs::read_to_string(man.join("ternctl.1")).unwrap();
    assert!(top.contains("ternctl\\-migrate\\-domain(1)"), "ternctl.1 must point at the command pages:\n{top}");
    // groff, where installed, formats every page without a warning.
    if !have("groff") {
        println!("note: groff is not installed; the pages were checked for structure only");
        return;
    }
    for page in &written {
        let out = run(Command::new("groff").args(["-man", "-Tutf8", "-ww", "-z"]).arg(man.join(page)));
        assert!(out.status.success() && out.stderr.is_empty(), "groff on {page}: {}", text(&out));
    }
}

/// The commit the binaries must name: `TERN_COMMIT` when the build was given one, HEAD
/// in a git work tree, else "unknown".
fn assert_names_the_built_commit(commit: &str, line: &str) {
    if let Ok(given) = std::env::var("TERN_COMMIT") {
        assert_eq!(commit, given.trim(), "{line}");
        return;
    }
    let git = |args: &[&str]| {
        let out = Command::new("git").arg("-C").arg(workspace()).args(args).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(head) => assert_eq!(git(&["rev-parse", &format!("{commit}^{{commit}}")]), Some(head), "{line}"),
        None => assert_eq!(commit, "unknown", "{line}: built outside git"),
    }
}

/// `ternd --version`, `ternctl version` and `ternctl --version` print the workspace version and the commit built.
#[test]
fn ternd_and_ternctl_print_the_workspace_version_and_the_commit_built() {
    let ternd = ok(Command::new(tern_tests::binary("ternd")).arg("--version"));
    for (program, out) in [("ternd", ternd), ("ternctl", ternctl(&["version"])), ("ternctl", ternctl(&["--version"]))] {
        let line = out.trim();
        let commit = line
            .strip_prefix(&format!("{program} {VERSION} (commit "))
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("{line:?} is not `{program} {VERSION} (commit HASH)`"));
        assert_names_the_built_commit(commit, line);
    }
}

/// What one run of the compiled `dist/build.rs` told cargo.
struct ScriptOutput {
    env: BTreeMap<String, String>,
    watched: Vec<PathBuf>,
}

fn run_build_script(script: &Path, manifest_dir: &Path, ceiling: &Path, commit: Option<&str>) -> ScriptOutput {
    let mut cmd = Command::new(script);
    cmd.env("CARGO_MANIFEST_DIR", manifest_dir).env("GIT_CEILING_DIRECTORIES", ceiling);
    for var in ["TERN_COMMIT", "TERN_COMMIT_DATE", "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"] {
        cmd.env_remove(var);
    }
    if let Some(c) = commit {
        cmd.env("TERN_COMMIT", c);
    }
    let stdout = ok(&mut cmd);
    let mut out = ScriptOutput { env: BTreeMap::new(), watched: Vec::new() };
    for line in stdout.lines() {
        if let Some((k, v)) = line.strip_prefix("cargo::rustc-env=").and_then(|kv| kv.split_once('=')) {
            out.env.insert(k.to_string(), v.to_string());
        } else if let Some(path) = line.strip_prefix("cargo::rerun-if-changed=") {
            if path != "build.rs" {
                out.watched.push(std::fs::canonicalize(path).unwrap_or_else(|e| panic!("watched {path}: {e}")));
            }
        } else if !line.starts_with("cargo::rerun-if-env-changed=") {
            panic!("unexpected build script line {line:?}");
        }
    }
    out
}

/// The contents of the watched files and folders: what cargo compares to rerun the script.
fn watched_state(paths: &[PathBuf]) -> Vec<(PathBuf, Vec<u8>)> {
    let mut state = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(p).unwrap().map(|e| e.unwrap().path()).collect();
            names.sort();
            for n in names.into_iter().filter(|n| n.is_file()) {
                state.push((n.clone(), std::fs::read(&n).unwrap()));
            }
        } else {
            state.push((p.clone(), std::fs::read(p).unwrap()));
        }
    }
    state
}

/// dist/build.rs names HEAD's commit in a clean clone, watches what a commit changes, and says "unknown" outside git.
#[test]
fn the_build_script_reads_the_commit_of_a_clean_clone_and_says_unknown_outside_git() {
    if !have("git") {
        println!("note: git is not installed; the build script's git side is not tested");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let script = root.join("build-script");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    ok(Command::new(rustc).args(["--edition", "2024", "-o"]).arg(&script).arg(workspace().join("dist/build.rs")));
    let git = |dir: &Path, args: &[&str]| {
        ok(Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"])
            .args(args)
            .env("GIT_CEILING_DIRECTORIES", root))
        .trim()
        .to_string()
    };

    // A repository with the crate in dist/, and a clean clone of it.
    let origin = root.join("origin");
    std::fs::create_dir_all(origin.join("dist")).unwrap();
    std::fs::write(origin.join("dist/build.rs"), "fn main() {}\n").unwrap();
    git(&origin, &["init", "-q"]);
    git(&origin, &["add", "."]);
    git(&origin, &["commit", "-q", "-m", "first"]);
    git(root, &["clone", "-q", origin.to_str().unwrap(), "clone"]);
    let clone = root.join("clone");
    let first = run_build_script(&script, &clone.join("dist"), root, None);
    assert_eq!(first.env.get("TERN_COMMIT"), Some(&git(&clone, &["rev-parse", "--short", "HEAD"])));
    assert_eq!(first.env.get("TERN_COMMIT_DATE"), Some(&git(&clone, &["log", "-1", "--format=%cs"])));
    let dot_git = std::fs::canonicalize(clone.join(".git")).unwrap();
    assert!(first.watched.contains(&dot_git.join("HEAD")), "HEAD is not watched: {:?}", first.watched);
    assert!(
        first.watched.iter().any(|p| p.starts_with(dot_git.join("refs/heads"))),
        "the branch is not watched: {:?}",
        first.watched
    );

    // A commit changes something watched (so cargo reruns the script), which then names it.
    let before = watched_state(&first.watched);
    std::fs::write(clone.join("dist/build.rs"), "fn main() { }\n").unwrap();
    git(&clone, &["commit", "-q", "-a", "-m", "second"]);
    assert_ne!(watched_state(&first.watched), before, "a commit changed none of {:?}", first.watched);
    let second = run_build_script(&script, &clone.join("dist"), root, None);
    assert_eq!(second.env.get("TERN_COMMIT"), Some(&git(&clone, &["rev-parse", "--short", "HEAD"])));
    assert_ne!(second.env.get("TERN_COMMIT"), first.env.get("TERN_COMMIT"));

    // Outside git (a source tarball): unknown, and nothing watched that could rerun it.
    let plain = root.join("tarball/dist");
    std::fs::create_dir_all(&plain).unwrap();
    let outside = run_build_script(&script, &plain, root, None);
    assert_eq!(outside.env.get("TERN_COMMIT").map(String::as_str), Some("unknown"));
    assert_eq!(outside.env.get("TERN_COMMIT_DATE").map(String::as_str), Some("unknown"));
    assert!(outside.watched.is_empty(), "{:?}", outside.watched);
    // A build that knows its commit says so.
    let given = run_build_script(&script, &plain, root, Some("1a2b3c4"));
    assert_eq!(given.env.get("TERN_COMMIT").map(String::as_str), Some("1a2b3c4"));
}

/// Every regular file under `root`, relative, with its mode.
fn files_under(root: &Path) -> BTreeMap<String, u32> {
    fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<String, u32>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, files);
            } else {
                files.insert(path.strip_prefix(root).unwrap().to_string_lossy().into_owned(), mode(&path));
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(root, root, &mut files);
    files
}

/// `actual` holds exactly the files of `expected`, each with its mode; the message names
/// what is missing, unexpected or of the wrong mode.
fn assert_same_files(what: &str, actual: &BTreeMap<String, u32>, expected: &BTreeMap<String, u32>) {
    let missing: Vec<&String> = expected.keys().filter(|f| !actual.contains_key(*f)).collect();
    let unexpected: Vec<&String> = actual.keys().filter(|f| !expected.contains_key(*f)).collect();
    let modes: Vec<String> = expected
        .iter()
        .filter_map(|(f, want)| {
            actual.get(f).filter(|got| *got != want).map(|got| format!("{f}: {got:o}, not {want:o}"))
        })
        .collect();
    assert!(
        missing.is_empty() && unexpected.is_empty() && modes.is_empty(),
        "{what}: missing {missing:?}; unexpected {unexpected:?}; wrong modes {modes:?}"
    );
}

/// The example configurations in deploy/config, which must include [`EXAMPLES`].
fn examples() -> BTreeSet<String> {
    let found: BTreeSet<String> = std::fs::read_dir(workspace().join("deploy/config"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    for e in EXAMPLES {
        assert!(found.contains(e), "deploy/config/{e} is missing");
    }
    found
}

/// deploy/install.sh puts programs, pages, completions, unit and examples under PREFIX, the unit running PREFIX/bin/ternd.
#[test]
fn install_sh_puts_everything_under_the_prefix_and_the_unit_runs_the_installed_ternd() {
    let tmp = tempfile::tempdir().unwrap();
    let stage = tmp.path().join("stage");
    let bins = bin_dir();
    let printed = ok(Command::new(workspace().join("deploy/install.sh")).args([
        "--bin-dir",
        bins.to_str().unwrap(),
        "--prefix",
        "/opt/tern",
        "--destdir",
        stage.to_str().unwrap(),
    ]));
    assert!(printed.contains(&format!("installed tern {VERSION} (commit ")), "{printed}");
    let prefix = stage.join("opt/tern");
    let mut expected: BTreeMap<String, u32> = [("bin/ternd", 0o755), ("bin/ternctl", 0o755)]
        .into_iter()
        .chain(
            [
                "share/bash-completion/completions/ternctl",
                "share/zsh/site-functions/_ternctl",
                "share/fish/vendor_completions.d/ternctl.fish",
                "lib/systemd/system/ternd.service",
            ]
            .map(|f| (f, 0o644)),
        )
        .map(|(f, m)| (f.to_string(), m))
        .collect();
    expected.extend(expected_man_pages().into_iter().map(|p| (format!("share/man/man1/{p}"), 0o644)));
    expected.extend(examples().into_iter().map(|e| (format!("share/doc/tern/examples/{e}"), 0o644)));
    assert_same_files("under the prefix", &files_under(&prefix), &expected);
    assert!(files_under(&stage).keys().all(|f| f.starts_with("opt/tern/")), "files outside the prefix");

    for b in ["ternd", "ternctl"] {
        assert_eq!(std::fs::read(prefix.join("bin").join(b)).unwrap(), std::fs::read(bins.join(b)).unwrap(), "{b}");
    }
    let unit = std::fs::read_to_string(prefix.join("lib/systemd/system/ternd.service")).unwrap();
    assert!(unit.contains("/opt/tern/bin/ternd") && !unit.contains("/usr/bin/ternd"), "ExecStart:\n{unit}");
    for e in examples() {
        let installed = std::fs::read(prefix.join("share/doc/tern/examples").join(&e)).unwrap();
        assert_eq!(installed, std::fs::read(workspace().join("deploy/config").join(&e)).unwrap(), "{e}");
    }
    assert_valid_page("ternctl.1", &std::fs::read_to_string(prefix.join("share/man/man1/ternctl.1")).unwrap());
}

/// The package `deploy/deb/build --profile debug` makes from the binaries under test,
/// built once per test process into a folder of its own (those of ended processes are
/// removed first).
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("packaging-")
                && !Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        let out = base.join(format!("packaging-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out);
        let bins = bin_dir();
        let printed = ok(Command::new(workspace().join("deploy/deb/build")).args([
            "--profile",
            "debug",
            "--bin-dir",
            bins.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]));
        let arch = ok(Command::new("dpkg").arg("--print-architecture")).trim().to_string();
        let deb = out.join(format!("tern_{VERSION}_{arch}.deb"));
        assert_eq!(printed.trim(), deb.to_str().unwrap(), "deb/build prints the package it wrote");
        assert!(deb.is_file(), "{} was not written", deb.display());
        deb
    })
}

/// The files (not folders) the package must hold, with their modes.
fn expected_deb_files() -> BTreeMap<String, u32> {
    let mut files: BTreeMap<String, u32> =
        [("usr/bin/ternd", 0o755), ("usr/bin/ternctl", 0o755)].into_iter().map(|(f, m)| (f.to_string(), m)).collect();
    for f in [
        "usr/share/bash-completion/completions/ternctl",
        "usr/share/zsh/vendor-completions/_ternctl",
        "usr/share/fish/vendor_completions.d/ternctl.fish",
        "usr/lib/systemd/system/ternd.service",
        "usr/share/doc/tern/copyright",
    ] {
        files.insert(f.to_string(), 0o644);
    }
    files.extend(expected_man_pages().into_iter().map(|p| (format!("usr/share/man/man1/{p}.gz"), 0o644)));
    files.extend(examples().into_iter().map(|e| (format!("usr/share/doc/tern/examples/{e}"), 0o644)));
    files
}

/// One line of `dpkg-deb -c`: the mode, the owner, and whether it is a folder.
struct Entry {
    mode: u32,
    owner: String,
    dir: bool,
}

fn deb_contents(deb: &Path) -> BTreeMap<String, Entry> {
    let listing = ok(Command::new("dpkg-deb").arg("-c").arg(deb));
    let mut entries = BTreeMap::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert!(fields.len() == 6, "unexpected dpkg-deb -c line {line:?}");
        let perms = fields[0];
        let mode = perms[1..].chars().fold(0, |m, c| (m << 1) | u32::from(c != '-'));
        let path = fields[5].trim_start_matches("./").trim_end_matches('/').to_string();
        if !path.is_empty() {
            entries.insert(path, Entry { mode, owner: fields[1].to_string(), dir: perms.starts_with('d') });
        }
    }
    entries
}

fn have_dpkg_deb() -> bool {
    let here = have("dpkg-deb") && have("dpkg");
    if !here {
        println!("note: dpkg-deb is not installed; the Debian package is not tested");
    }
    here
}

/// The .deb built from the debug binaries holds every file (sane modes, root-owned), a control that Depends on what ternd links, and maintainer scripts.
#[test]
fn the_deb_holds_programs_pages_completions_unit_examples_and_depends_on_the_linked_libraries() {
    if !have_dpkg_deb() {
        return;
    }
    let deb = deb();
    let contents = deb_contents(deb);
    let files: BTreeMap<String, u32> =
        contents.iter().filter(|(_, e)| !e.dir).map(|(p, e)| (p.clone(), e.mode)).collect();
    assert_same_files("the package", &files, &expected_deb_files());
    for (path, e) in &contents {
        assert_eq!(e.owner, "root/root", "{path} must belong to root");
        if e.dir {
            assert_eq!(e.mode, 0o755, "folder {path}");
        }
    }
    assert!(contents.get("etc/tern").is_some_and(|e| e.dir), "/etc/tern, for the admin's ternd.toml");

    let field = |name: &str| ok(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name)).trim().to_string();
    assert_eq!(field("Package"), "tern");
    assert_eq!(field("Version"), VERSION);
    assert_eq!(field("Architecture"), ok(Command::new("dpkg").arg("--print-architecture")).trim());
    let depends = field("Depends");
    let needs: Vec<&str> = depends.split(',').map(|d| d.split_whitespace().next().unwrap_or("")).collect();
    assert!(depends.contains("libc6 (>= "), "Depends: {depends}");
    if have("readelf") {
        let dynamic = ok(Command::new("readelf").arg("-d").arg(tern_tests::binary("ternd")));
        for (lib, package) in [("libstdc++.so.6", "libstdc++6"), ("libgcc_s.so.1", "libgcc-s1")] {
            if dynamic.contains(&format!("[{lib}]")) {
                assert!(needs.contains(&package), "ternd links {lib}, so Depends needs {package}: {depends}");
            }
        }
    }
    let info = ok(Command::new("dpkg-deb").arg("-I").arg(deb));
    assert!(info.contains("Description: "), "{info}");

    let control = tempfile::tempdir().unwrap();
    ok(Command::new("dpkg-deb").arg("-e").arg(deb).arg(control.path()));
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.path().join(script);
        assert_eq!(mode(&path), 0o755, "{script} must be executable");
        ok(Command::new("sh").arg("-n").arg(&path));
    }
    let postinst = std::fs::read_to_string(control.path().join("postinst")).unwrap();
    assert!(postinst.contains("adduser") && postinst.contains("useradd"), "postinst guards both tools");
}

/// Runs the installed (or extracted) ternd's `--check` on every example configuration
/// installed under `root` ("/" for a real install).
fn assert_examples_pass_ternd_check(root: &Path) {
    let ternd = root.join("usr/bin/ternd");
    for e in examples() {
        let config = root.join("usr/share/doc/tern/examples").join(&e);
        let out = ok(Command::new(&ternd).arg("--check").arg("--config").arg(&config));
        assert!(out.contains("configuration is valid"), "{e}: {out}");
    }
    let version = ok(Command::new(root.join("usr/bin/ternctl")).arg("version"));
    assert!(version.starts_with(&format!("ternctl {VERSION} (commit ")), "{version}");
}

/// The files of the package landed under `root` with their modes, and the man pages are gzip.
fn assert_landed(root: &Path) {
    for (file, want) in expected_deb_files() {
        let path = root.join(&file);
        assert!(path.is_file(), "{} did not land", path.display());
        assert_eq!(mode(&path), want, "{}", path.display());
    }
    let page = ok(Command::new("gzip").arg("-dc").arg(root.join("usr/share/man/man1/ternctl-check.1.gz")));
    assert_valid_page("ternctl-check.1", &page);
}

/// Holds a machine-wide lock (flock(1) on a file in the temp folder) while alive, so two
/// test runs never install or purge the package at the same time.
struct MachineLock(Option<Child>);

impl MachineLock {
    fn take() -> Self {
        if !have("flock") {
            println!("note: flock is not installed; the install is not guarded against a concurrent run");
            return Self(None);
        }
        let lock = std::env::temp_dir().join("tern-packaging-test.lock");
        let mut child = Command::new("flock")
            .arg(&lock)
            .args(["-c", "echo locked; exec cat >/dev/null"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("running flock");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "locked", "flock {}", lock.display());
        Self(Some(child))
    }
}

impl Drop for MachineLock {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
    }
}

/// Why the package cannot be installed for real here, if it cannot: not root, no dpkg,
/// dpkg excluding paths, or a tern already on the machine that a test must not touch.
fn cannot_install_for_real() -> Option<String> {
    let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(u32::MAX);
    if uid != 0 {
        return Some("not running as root".into());
    }
    let dpkg_config: String = std::iter::once(PathBuf::from("/etc/dpkg/dpkg.cfg"))
        .chain(std::fs::read_dir("/etc/dpkg/dpkg.cfg.d").into_iter().flatten().flatten().map(|e| e.path()))
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|text| text + "\n")
        .collect();
    if dpkg_config.lines().any(|l| l.trim_start().starts_with("path-exclude")) {
        return Some("dpkg is configured with path-exclude".into());
    }
    let status = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", "tern"]));
    if String::from_utf8_lossy(&status.stdout).contains("installed") {
        return Some("a tern package is installed already".into());
    }
    ["/usr/bin/ternd", "/usr/bin/ternctl", "/var/lib/tern"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .map(|p| format!("{p} exists already"))
}

/// The uid of `user`, if the account exists.
fn uid_of(user: &str) -> Option<u32> {
    let out = Command::new("getent").args(["passwd", user]).output().ok()?;
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    line.split(':').nth(2)?.parse().ok()
}

/// Purges the package however the test ends, and removes the tern user if the test's
/// install created it.
struct Purge {
    remove_user: bool,
}

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--purge", "tern"]).output();
        if self.remove_user && uid_of("tern").is_some() {
            let _ = Command::new("userdel").arg("tern").output();
            let _ = Command::new("groupdel").arg("tern").output();
        }
    }
}

/// As root the .deb installs its files, the tern user and /var/lib/tern, passes ternd --check on its examples, and purges without a trace; else its extracted files pass ternd --check.
#[test]
fn the_deb_installs_creates_the_tern_user_passes_ternd_check_and_purges_cleanly() {
    if !have_dpkg_deb() {
        return;
    }
    let deb = deb();
    if let Some(why) = cannot_install_for_real() {
        println!("note: {why}; extracting the package instead of installing it");
        let root = tempfile::tempdir().unwrap();
        ok(Command::new("dpkg-deb").arg("-x").arg(deb).arg(root.path()));
        assert_landed(root.path());
        assert_examples_pass_ternd_check(root.path());
        return;
    }
    let _lock = MachineLock::take();
    let user_existed = uid_of("tern").is_some();
    let purge = Purge { remove_user: !user_existed };
    ok(Command::new("dpkg").arg("-i").arg(deb));

    let root = Path::new("/");
    assert_landed(root);
    let uid = uid_of("tern").expect("postinst creates the tern user");
    let data = std::fs::metadata("/var/lib/tern").expect("postinst creates /var/lib/tern");
    assert!(data.is_dir() && data.uid() == uid, "/var/lib/tern belongs to tern");
    assert_eq!(data.permissions().mode() & 0o7777, 0o750, "/var/lib/tern");
    assert_examples_pass_ternd_check(root);

    ok(Command::new("dpkg").args(["--purge", "tern"]));
    for file in expected_deb_files().keys() {
        assert!(!root.join(file).exists(), "/{file} is left after the purge");
    }
    for dir in ["/var/lib/tern", "/etc/tern", "/usr/share/doc/tern"] {
        assert!(!Path::new(dir).exists(), "{dir} is left after the purge");
    }
    let status = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", "tern"]));
    assert!(!String::from_utf8_lossy(&status.stdout).contains("installed"), "dpkg still lists tern");
    drop(purge);
    if !user_existed {
        assert_eq!(uid_of("tern"), None, "the test removes the tern user its install created");
    }
}
