//! `ternctl list-devices`: ldm's PA / SIZE / BOUND and CID / CPUSET tables (OP-07).

use crate::{LayoutArgs, layouts};
use serde::Serialize;
use std::fmt::Write as _;
use tern_model::units::{Size, format_cpuset};
use tern_model::{Reserved, Server};

#[derive(Serialize)]
pub struct MemoryRow {
    pub pa: u64,
    pub size: u64,
    pub bound: Option<String>,
}

#[derive(Serialize)]
pub struct CoreRow {
    pub cid: u32,
    pub cpuset: Vec<u32>,
    pub free_pct: u32,
    pub activated: bool,
}

/// One server's devices, from a layout or from the cluster; printed the same way.
#[derive(Serialize)]
pub struct Devices {
    pub host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<Vec<MemoryRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core: Option<Vec<CoreRow>>,
}

pub fn devices(args: &LayoutArgs, all: bool, kinds: &[String], json: bool) -> anyhow::Result<i32> {
    let servers = layouts::load(args)?;
    let want = |k: &str| kinds.is_empty() || kinds.iter().any(|x| x == k);
    let docs: Vec<Devices> = servers
        .values()
        .map(|s| Devices {
            host: s.name.clone(),
            memory: want("memory").then(|| memory_rows(s, all)),
            core: want("core").then(|| core_rows(s, all)),
        })
        .collect();
    print_devices(&docs, json)?;
    Ok(0)
}

/// Prints devices as ldm's tables (a `HOST:` line before each when there are several).
pub fn print_devices(docs: &[Devices], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(docs)?);
        return Ok(());
    }
    let mut out = String::new();
    for d in docs {
        if docs.len() > 1 {
            let _ = writeln!(out, "{}:", d.host);
        }
        render(d, &mut out);
    }
    print!("{out}");
    Ok(())
}

fn memory_rows(s: &Server, all: bool) -> Vec<MemoryRow> {
    if all {
        let mut blocks = s.memory.clone();
        blocks.sort_by_key(|b| b.pa);
        blocks
            .into_iter()
            .map(|b| MemoryRow { pa: b.pa, size: b.size, bound: b.bound.map(|o| o.to_string()) })
            .collect()
    } else {
        s.free_ranges(&Reserved::default())
            .into_iter()
            .map(|r| MemoryRow { pa: r.pa, size: r.size, bound: None })
            .collect()
    }
}

fn core_rows(s: &Server, all: bool) -> Vec<CoreRow> {
    s.cores
        .iter()
        .filter(|c| c.activated || all)
        .map(|c| {
            let free = c.strands.iter().filter(|x| x.bound.is_none()).count();
            CoreRow {
                cid: c.cid,
                cpuset: c.cpuset(),
                free_pct: (free * 100 / c.strands.len().max(1)) as u32,
                activated: c.activated,
            }
        })
        .filter(|r| all || r.free_pct > 0)
        .collect()
}

fn render(d: &Devices, out: &mut String) {
    if let Some(core) = &d.core {
        let _ = writeln!(out, "CORE\n    {:<7}{:<9}CPUSET", "ID", "%FREE");
        for r in core {
            let note = if r.activated { "" } else { "   (not activated)" };
            let _ = writeln!(out, "    {:<7}{:<9}{}{note}", r.cid, r.free_pct, format_cpuset(&r.cpuset));
        }
        let _ = writeln!(out);
    }
    if let Some(mem) = &d.memory {
        let _ = writeln!(out, "MEMORY\n    {:<21}{:<16}BOUND", "PA", "SIZE");
        for r in mem {
            let pa = format!("{:#x}", r.pa);
            let _ = writeln!(out, "    {pa:<21}{:<16}{}", Size(r.size).to_string(), r.bound.as_deref().unwrap_or(""));
        }
    }
}
