//! What `ternd` and `ternctl` share about themselves, in a crate small enough that a
//! commit rebuilds little: the build's version and git commit (`build.rs`), and
//! ternd's command line ([`ternd::Args`]), so that `ternctl man` writes ternd's man
//! page without linking the agent (and RocksDB).

pub mod ternd;

/// The workspace version, e.g. "0.1.0".
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The short hash of the git commit built, or "unknown" outside git (see `build.rs`).
pub const COMMIT: &str = env!("TERN_COMMIT");

/// The date of that commit (YYYY-MM-DD), or "unknown".
pub const COMMIT_DATE: &str = env!("TERN_COMMIT_DATE");

/// What `ternd --version` and `ternctl version` print after the program's name:
/// "0.1.0 (commit 1a2b3c4)".
pub const LONG_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("TERN_COMMIT"), ")");

#[cfg(test)]
mod tests {
    /// The string both programs print is "VERSION (commit HASH|unknown)".
    #[test]
    fn the_long_version_names_the_version_and_the_commit() {
        assert_eq!(super::LONG_VERSION, format!("{} (commit {})", super::VERSION, super::COMMIT));
        assert!(!super::COMMIT.is_empty() && !super::COMMIT.contains(char::is_whitespace));
    }
}
