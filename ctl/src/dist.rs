//! What packaging takes from ternctl: `ternctl version`, `ternctl completions SHELL`
//! (clap_complete) and `ternctl man --dir DIR` (clap_mangen): ternctl.1, one page per
//! command as git has them (`ternctl-check.1`, `ternctl-user-add.1`), and ternd.1.

use crate::Cli;
use anyhow::Context;
use clap::CommandFactory;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The shells `ternctl completions` writes a script for.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// `ternctl version`: the version and the git commit built ("unknown" outside git).
pub fn version() -> anyhow::Result<i32> {
    println!("ternctl {}", tern_dist::LONG_VERSION);
    Ok(0)
}

/// `ternctl completions SHELL`: the completion script, on stdout.
pub fn completions(shell: Shell) -> anyhow::Result<i32> {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "ternctl", &mut script);
    std::io::stdout().write_all(&script).context("writing the completion script")?;
    Ok(0)
}

/// `ternctl man --dir DIR`: writes every page into DIR (created if missing) and prints
/// their paths, one a line.
pub fn man(dir: &Path) -> anyhow::Result<i32> {
    for page in write_man_pages(dir)? {
        println!("{}", page.display());
    }
    Ok(0)
}

/// Writes ternctl.1, ternctl-COMMAND[-SUBCOMMAND].1 for every visible command, and
/// ternd.1 into `dir`; returns the paths written.
pub fn write_man_pages(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for root in [Cli::command(), tern_dist::ternd::Args::command()] {
        let mut root = root.disable_help_subcommand(true);
        // Building names every subcommand as its page: ternctl-user-add.
        root.build();
        write_pages(&root, dir, &mut written)?;
    }
    Ok(written)
}

fn write_pages(cmd: &clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let name = cmd.get_display_name().unwrap_or_else(|| cmd.get_name()).to_string();
    let man = clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .date(tern_dist::COMMIT_DATE)
        .source(format!("tern {}", tern_dist::LONG_VERSION))
        .manual("tern");
    let path = dir.join(man.get_filename());
    let mut roff = Vec::new();
    man.render(&mut roff).with_context(|| format!("rendering {name}'s man page"))?;
    std::fs::write(&path, roff).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    Ok(())
}
