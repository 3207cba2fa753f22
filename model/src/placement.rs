//! Concrete choices on a target: which CIDs or strands (LM-05, LM-06, LM-12), which
//! console port (LM-13). Deterministic: the same server and reservations always
//! give the same answer, so every Raft member and every test agrees.

use crate::server::{CpuHolding, Reserved, Server};
use crate::units::Range;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Everything a migration (or a failover restart) would take on its target: what a
/// reservation holds and what the domain is bound to once it commits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The domain's name on the target (the new name of OP-05, if any).
    pub domain: String,
    pub whole_cores: bool,
    /// CIDs of the cores touched, ascending.
    pub cids: Vec<u32>,
    /// Strand ids, ascending.
    pub strands: Vec<u32>,
    /// One range per guest memory block, in the guest's block order.
    pub memory: Vec<Range>,
    pub console_port: Option<u16>,
}

impl Binding {
    /// Holds no CPU and no memory (a resize's part that changes nothing).
    pub fn is_empty(&self) -> bool {
        self.strands.is_empty() && self.memory.is_empty()
    }
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cids: Vec<String> = self.cids.iter().map(u32::to_string).collect();
        let mem: Vec<String> = self.memory.iter().map(Range::to_string).collect();
        write!(f, "{}: cids [{}] memory [{}]", self.domain, cids.join(","), mem.join(", "))?;
        if let Some(p) = self.console_port {
            write!(f, " console {p}")?;
        }
        Ok(())
    }
}

/// What the target lacks for the guest's CPUs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CpuShortfall {
    Strands {
        need: usize,
        free: usize,
    },
    WholeCores {
        need: usize,
        free: usize,
    },
    /// The guest's thread count is not a whole number of the target's cores.
    NotWholeCores {
        threads: usize,
        per_core: usize,
    },
}

/// Whether the guest gets whole cores on `target`: when it holds whole cores now (a
/// migration keeps that), or when the target is a whole-core server (SPARC M10,
/// LM-05), whatever it held on its source (e.g. 2 threads of a T4 core).
pub fn whole_cores_on(target: &Server, need: &CpuHolding) -> bool {
    need.whole_cores || target.cpu.family.needs_whole_cores()
}

/// Picks concrete CPUs on `target` for a guest holding `need`.
///
/// Guests that get whole cores ([`whole_cores_on`]) get whole free cores holding the
/// same number of threads, lowest CIDs first.
/// Thread guests get the same number of strands, taken first from cores that are
/// already partly bound so that whole cores stay free for whole-core guests.
pub fn choose_cpus(
    target: &Server,
    need: &CpuHolding,
    reserved: &Reserved,
) -> Result<(Vec<u32>, Vec<u32>), CpuShortfall> {
    if whole_cores_on(target, need) {
        // A live guest keeps its number of virtual CPUs, so across CPU types with a
        // different number of threads per core the core count changes, not the threads.
        let per_core = target.threads_per_core.max(1) as usize;
        if !need.strands.len().is_multiple_of(per_core) {
            return Err(CpuShortfall::NotWholeCores { threads: need.strands.len(), per_core });
        }
        let free = target.free_cores(reserved);
        let want = need.strands.len() / per_core;
        if free.len() < want {
            return Err(CpuShortfall::WholeCores { need: want, free: free.len() });
        }
        let chosen = &free[..want];
        let cids = chosen.iter().map(|c| c.cid).collect();
        let mut strands: Vec<u32> = chosen.iter().flat_map(|c| c.cpuset()).collect();
        strands.sort_unstable();
        return Ok((cids, strands));
    }
    let want = need.strands.len();
    let mut candidates: Vec<(bool, u32, u32)> = Vec::new(); // (core wholly free, strand, cid)
    for core in target.cores.iter().filter(|c| c.activated) {
        let whole = core.is_free() && core.strands.iter().all(|s| !reserved.strands.contains(&s.id));
        for s in &core.strands {
            if s.bound.is_none() && !reserved.strands.contains(&s.id) {
                candidates.push((whole, s.id, core.cid));
            }
        }
    }
    if candidates.len() < want {
        return Err(CpuShortfall::Strands { need: want, free: candidates.len() });
    }
    candidates.sort_unstable();
    let chosen = &candidates[..want];
    let mut strands: Vec<u32> = chosen.iter().map(|c| c.1).collect();
    strands.sort_unstable();
    let mut cids: Vec<u32> = chosen.iter().map(|c| c.2).collect();
    cids.sort_unstable();
    cids.dedup();
    Ok((cids, strands))
}

/// The lowest console port of VCC `service` on `target` that no domain and no
/// reservation uses (LM-13). `None` when the service is missing or its range is full.
pub fn choose_console_port(target: &Server, service: &str, reserved: &Reserved) -> Option<u16> {
    let vcc = target.services.vcc(service)?;
    let used = target.used_console_ports(reserved);
    (vcc.port_min..=vcc.port_max).find(|p| !used.contains(p))
}
