//! `ternctl`, the command line of tern. Verbs follow `ldm` where one exists
//! (`list-devices`, `migrate-domain`, `list-domain`), so admins keep their habits.
//!
//! Exit codes: 0 success; 1 the answer is "no" (a check found violations);
//! 2 the question could not be asked (unreadable files, unknown names, bad flags).

pub mod check;
pub mod layouts;
pub mod list;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// The exit code for a "no" answer (violations found).
pub const EXIT_NO: i32 = 1;
/// The exit code for a question that could not be asked.
pub const EXIT_USAGE: i32 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "ternctl",
    version,
    about = "Command line of tern: live migration and HA for Oracle VM Server for SPARC, in ldm's verbs",
    long_about = "Command line of tern: live migration and HA for Oracle VM Server for SPARC.\n\n\
Verbs follow ldm. Commands that take --layout read layout files (TOML descriptions of \
servers, see deploy/layouts/) and answer offline, before any agent runs.\n\n\
Exit codes: 0 success, 1 the answer is no (violations found), 2 bad input."
)]
pub struct Cli {
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

/// Where layouts come from: files, a folder of them, or both.
#[derive(clap::Args, Debug, Clone)]
pub struct LayoutArgs {
    /// A layout file; its file name (stem) is the server's host name. Repeatable.
    #[arg(long = "layout", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// A folder whose *.toml files are all layouts (e.g. deploy/layouts).
    #[arg(long = "layouts", value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Offline what-if: could DOMAIN live-migrate to TARGET? Runs every preflight rule
    /// (LM-01, LM-03..LM-11) on layout files and prints the binding a migration would
    /// reserve (CIDs, PA ranges, console port), or one line per violated rule.
    #[command(after_help = "Examples:\n  ternctl check --layouts deploy/layouts ldom1 m10-1-2\n  \
ternctl check --layout a.toml --layout b.toml ldom1 b:ldom9\n\n\
Exit codes: 0 the migration would pass; 1 violations (one line per rule); 2 bad input.")]
    Check {
        #[command(flatten)]
        layouts: LayoutArgs,
        /// The source server's host name; needed only when several layouts hold DOMAIN
        /// (every server has a `primary`).
        #[arg(long, value_name = "HOST")]
        source: Option<String>,
        /// The guest domain to move; the layout that holds it is the source.
        domain: String,
        /// The target's host name (a layout's stem), optionally `:NEWNAME` (OP-05).
        /// A `user@` prefix is accepted and ignored offline.
        target: String,
    },
    /// List a server's resources as `ldm list-devices` does (OP-07).
    ListDevices {
        /// All resources, bound ones too (as ldm's -a); without it only free ones.
        #[arg(short = 'a')]
        all: bool,
        /// Resource kinds: memory, core (default: both).
        #[arg(value_parser = ["memory", "core"])]
        kinds: Vec<String>,
        #[command(flatten)]
        layouts: LayoutArgs,
    },
}

/// Runs one command; returns the process exit code.
pub fn run(cli: Cli) -> i32 {
    let result = match cli.command {
        Command::Check {
            layouts,
            source,
            domain,
            target,
        } => check::run(&layouts, source.as_deref(), &domain, &target, cli.json),
        Command::ListDevices { all, kinds, layouts } => list::devices(&layouts, all, &kinds, cli.json),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ternctl: {e:#}");
            EXIT_USAGE
        }
    }
}
