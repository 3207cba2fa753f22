//! Puts the git commit this crate is built from into `TERN_COMMIT` for `env!`: the
//! short hash of HEAD, or "unknown" outside a git work tree (a source tarball) or when
//! git is missing; and its date (YYYY-MM-DD, the man pages' date) into
//! `TERN_COMMIT_DATE`, or "unknown". `TERN_COMMIT` (and `TERN_COMMIT_DATE`) set in the
//! build's environment win (a tarball build that knows its commit).
//!
//! The script reruns only when HEAD moves: it watches HEAD, the branch HEAD names (or
//! the folder that branch's file would appear in while it is packed) and packed-refs,
//! so a commit or a checkout rebuilds this crate and its dependents, and nothing else
//! does. A "-dirty" mark is left out on purpose: it would be right only if the script
//! reran on every edit of every file, which would rebuild the agent on every build.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=TERN_COMMIT");
    println!("cargo::rerun-if-env-changed=TERN_COMMIT_DATE");
    let given = |name: &str| std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let (commit, date) = match given("TERN_COMMIT") {
        Some(commit) => (Some(commit), given("TERN_COMMIT_DATE")),
        None => match std::env::var_os("CARGO_MANIFEST_DIR").and_then(|dir| from_git(Path::new(&dir))) {
            Some((commit, date)) => (Some(commit), date),
            None => (None, None),
        },
    };
    println!("cargo::rustc-env=TERN_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
    println!("cargo::rustc-env=TERN_COMMIT_DATE={}", date.as_deref().unwrap_or("unknown"));
}

/// HEAD's short hash and commit date, after asking cargo to watch the files a commit or
/// checkout changes.
fn from_git(dir: &Path) -> Option<(String, Option<String>)> {
    let git_path = |name: &str| git(dir, &["rev-parse", "--git-path", name]).map(|p| dir.join(p));
    let head = git_path("HEAD")?;
    watch(&head);
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        match git_path(&branch) {
            Some(file) if file.exists() => watch(&file),
            // A packed branch: committing on it writes its file into this folder.
            Some(file) => {
                if let Some(folder) = file.parent() {
                    watch(folder);
                }
            }
            None => {}
        }
    }
    if let Some(packed) = git_path("packed-refs") {
        watch(&packed);
    }
    let commit = git(dir, &["rev-parse", "--short", "HEAD"])?;
    Some((commit, git(dir, &["log", "-1", "--format=%cs", "HEAD"])))
}

/// Watching a path that does not exist would rerun the script on every build.
fn watch(path: &Path) {
    if path.exists() {
        println!("cargo::rerun-if-changed={}", path.display());
    }
}

/// `git -C dir ARGS`'s trimmed output, or None when git fails or prints nothing.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}
