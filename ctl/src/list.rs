//! `ternctl list-devices`: ldm's PA / SIZE / BOUND and CID / CPUSET tables (OP-07).

use crate::{LayoutArgs, layouts};
use serde::Serialize;
use std::fmt::Write as _;
use tern_model::units::{Size, format_cpuset};
use tern_model::{Reserved, Server};

#[derive(Serialize)]
struct MemoryRow {
    pa: u64,
    size: u64,
    bound: Option<String>,
}

#[derive(Serialize)]
struct CoreRow {
    cid: u32,
    cpuset: Vec<u32>,
    free_pct: u32,
    activated: bool,
}

#[derive(Serialize)]
struct Devices {
    host: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory: Option<Vec<MemoryRow>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    core: Option<Vec<CoreRow>>,
}

pub fn devices(args: &LayoutArgs, all: bool, kinds: &[String], json: bool) -> anyhow::Result<i32> {
    let servers = layouts::load(args)?;
    let want = |k: &str| kinds.is_empty() || kinds.iter().any(|x| x == k);
    let mut out = String::new();
    let mut docs = Vec::new();
    for s in servers.values() {
        let doc = Devices {
            host: s.name.clone(),
            memory: want("memory").then(|| memory_rows(s, all)),
            core: want("core").then(|| core_rows(s, all)),
        };
        if !json {
            if servers.len() > 1 {
                let _ = writeln!(out, "{}:", s.name);
            }
            render(&doc, &mut out);
        }
        docs.push(doc);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&docs)?);
    } else {
        print!("{out}");
    }
    Ok(0)
}

fn memory_rows(s: &Server, all: bool) -> Vec<MemoryRow> {
    if all {
        let mut blocks = s.memory.clone();
        blocks.sort_by_key(|b| b.pa);
        blocks
            .into_iter()
            .map(|b| MemoryRow {
                pa: b.pa,
                size: b.size,
                bound: b.bound.map(|o| o.to_string()),
            })
            .collect()
    } else {
        s.free_ranges(&Reserved::default())
            .into_iter()
            .map(|r| MemoryRow {
                pa: r.pa,
                size: r.size,
                bound: None,
            })
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
            let _ = writeln!(
                out,
                "    {:<7}{:<9}{}{note}",
                r.cid,
                r.free_pct,
                format_cpuset(&r.cpuset)
            );
        }
        let _ = writeln!(out);
    }
    if let Some(mem) = &d.memory {
        let _ = writeln!(out, "MEMORY\n    {:<21}{:<16}BOUND", "PA", "SIZE");
        for r in mem {
            let pa = format!("{:#x}", r.pa);
            let _ = writeln!(
                out,
                "    {pa:<21}{:<16}{}",
                Size(r.size).to_string(),
                r.bound.as_deref().unwrap_or("")
            );
        }
    }
}
