//! End-to-end test support: real `ternd` and `ternctl` processes on loopback.
//!
//! [`binary`] finds (building first if needed) the executables these tests drive.
//! `CARGO_BIN_EXE_*` names only the binaries of a test's own package, so this crate
//! asks cargo for them: `cargo build -p tern-agent --bin ternd -p tern-ctl --bin ternctl`
//! with the profile, target and target folder of the running test, once per test
//! process. That is a no-op when they are up to date and a rebuild when a source
//! changed, so a test never runs a stale agent, on a clean clone or not. Set
//! `TERN_TEST_BIN_DIR` to use binaries from elsewhere instead (nothing is built).

pub mod bench;
pub mod bmc;
pub mod cluster;
pub mod layouts;
pub mod otlp;

pub use cluster::{Cluster, LAYOUTS, WAIT, layout};

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The executables these tests run, each with its package.
const BINARIES: [(&str, &str); 3] = [("tern-agent", "ternd"), ("tern-ctl", "ternctl"), ("tern-hypervisor", "fake-ldm")];

/// The path of `name` (`ternd`, `ternctl` or `fake-ldm`), built and up to date.
///
/// Panics with cargo's output when they cannot be built.
pub fn binary(name: &str) -> PathBuf {
    assert!(BINARIES.iter().any(|(_, b)| *b == name), "{name} is not one of {BINARIES:?}");
    let dir = BIN_DIR.get_or_init(|| match std::env::var_os("TERN_TEST_BIN_DIR") {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => build(),
    });
    let dir = match dir {
        Ok(dir) => dir,
        Err(e) => panic!("{e}"),
    };
    let path = dir.join(name);
    assert!(path.is_file(), "{} does not exist (TERN_TEST_BIN_DIR or the build put nothing there)", path.display());
    path
}

static BIN_DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Runs `ternctl args` with `env` set and nothing inherited of `TERN_AGENT` or
/// `TERN_CERTS_DIR` (a test names the cluster it talks to), waiting for it to end.
pub fn ternctl_with(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(binary("ternctl"));
    cmd.args(args).env_remove("TERN_AGENT").env_remove("TERN_CERTS_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running ternctl")
}

/// A finished command's standard output, then its standard error.
pub fn output_text(out: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Where cargo put this test executable: `<target>/[<triple>/]<profile>/deps/<exe>`.
struct Layout {
    target_dir: PathBuf,
    triple: Option<String>,
    profile_dir: PathBuf,
}

fn layout_of(exe: &Path) -> Result<Layout, String> {
    let not_cargo = || format!("{} is not in a cargo target folder (<target>/<profile>/deps)", exe.display());
    let deps = exe.parent().filter(|d| d.ends_with("deps")).ok_or_else(not_cargo)?;
    let profile_dir = deps.parent().ok_or_else(not_cargo)?.to_path_buf();
    let above = profile_dir.parent().ok_or_else(not_cargo)?;
    // The target folder is tagged by cargo; a folder between it and the profile is a triple.
    if above.join("CACHEDIR.TAG").exists() {
        return Ok(Layout { target_dir: above.to_path_buf(), triple: None, profile_dir });
    }
    let target_dir = above.parent().ok_or_else(not_cargo)?.to_path_buf();
    let triple = above.file_name().map(|t| t.to_string_lossy().into_owned());
    Ok(Layout { target_dir, triple, profile_dir })
}

/// The `cargo build` flag choosing the profile whose output folder is `dir`.
fn profile_args(dir: &Path) -> Vec<String> {
    match dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => vec![],
        Some("release") => vec!["--release".into()],
        Some(other) => vec!["--profile".into(), other.into()],
    }
}

/// The workspace folder (above `tests/`), found at run time as
/// [`cluster::manifest_dir`] is.
pub fn workspace() -> PathBuf {
    cluster::manifest_dir().parent().expect("the workspace above tests/").to_path_buf()
}

fn build() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("locating the test executable: {e}"))?;
    let layout = layout_of(&exe)?;
    // Cargo sets CARGO for the tests it runs; fall back to the cargo that built this crate.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(cluster::manifest_dir()).arg("build").arg("--target-dir").arg(&layout.target_dir);
    for (package, bin) in BINARIES {
        cmd.args(["-p", package, "--bin", bin]);
    }
    cmd.args(profile_args(&layout.profile_dir));
    if let Some(triple) = &layout.triple {
        cmd.args(["--target", triple]);
    }
    let out = cmd.output().map_err(|e| format!("running {}: {e}", Path::new(&cargo).display()))?;
    if !out.status.success() {
        return Err(format!(
            "building the binaries under test failed ({cmd:?}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(layout.profile_dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_layout_is_read_from_the_test_executable_path() {
        // Goal: profile, triple and target folder come from where cargo put the test.
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::create_dir_all(target.join("x86_64-unknown-linux-gnu/release/deps")).unwrap();
        std::fs::create_dir_all(target.join("debug/deps")).unwrap();
        std::fs::write(target.join("CACHEDIR.TAG"), "").unwrap();

        let plain = layout_of(&target.join("debug/deps/cluster-0123")).unwrap();
        assert_eq!((plain.target_dir.as_path(), plain.triple.as_deref()), (target.as_path(), None));
        assert!(profile_args(&plain.profile_dir).is_empty());

        let cross = layout_of(&target.join("x86_64-unknown-linux-gnu/release/deps/cluster-0123")).unwrap();
        assert_eq!(cross.target_dir, target);
        assert_eq!(cross.triple.as_deref(), Some("x86_64-unknown-linux-gnu"));
        assert_eq!(profile_args(&cross.profile_dir), ["--release"]);
        assert_eq!(profile_args(Path::new("/t/bench-fast")), ["--profile", "bench-fast"]);

        assert!(layout_of(Path::new("/usr/bin/cluster")).is_err(), "outside a target folder");
    }
}
