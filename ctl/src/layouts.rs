//! Reading the layout files named on the command line.

use crate::LayoutArgs;
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::path::PathBuf;
use tern_model::Server;

/// Every layout named by `args`, by host name. Two files for one host are refused.
pub fn load(args: &LayoutArgs) -> anyhow::Result<BTreeMap<String, Server>> {
    let mut files: Vec<PathBuf> = args.files.clone();
    for dir in &args.dirs {
        let entries = std::fs::read_dir(dir).with_context(|| format!("reading layout folder {}", dir.display()))?;
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        found.sort();
        if found.is_empty() {
            bail!("{} holds no *.toml layout files", dir.display());
        }
        files.extend(found);
    }
    if files.is_empty() {
        bail!("no layouts given: name files with --layout FILE or a folder with --layouts DIR");
    }
    let mut servers = BTreeMap::new();
    for f in files {
        let server = tern_hypervisor::layout::load_layout(&f)?;
        if servers.contains_key(&server.name) {
            bail!("{}: a second layout for host {}", f.display(), server.name);
        }
        servers.insert(server.name.clone(), server);
    }
    Ok(servers)
}
