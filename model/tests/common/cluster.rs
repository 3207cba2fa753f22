//! Generated clusters for the rebalancer's tests and benchmark: SPARC M10-4S-like
//! hosts (96 cores x 2 threads, 2 TiB) with guests of 1-4
//! cores and one to three memory blocks laid out with free holes between them, so the
//! free memory is fragmented as on a server that has run for years (LM-09).
//!
//! Deterministic: the same seed gives the same cluster on every machine.

use super::{SOLARIS_MIN, VCC, VSW, os, seed_services, sparc64_x_plus};
use tern_model::units::{GIB, MIB};
use tern_model::{
    Console, Core, CpuArch, Domain, DomainKind, DomainState, Firmware, MemoryBlock, Owner, Server, Strand, VNet,
    Workload,
};

/// splitmix64: small, fast and the same on every machine.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

pub const CORES: u32 = 96;
pub const THREADS: u32 = 2;
pub const PRIMARY_CORES: u32 = 4;
pub const BASE_PA: u64 = 0x7000_0000_0000;
pub const SYS: u64 = 2 * GIB;
pub const PRIMARY_MEMORY: u64 = 16 * GIB;
pub const MEMORY: u64 = 2048 * GIB;

/// A guest with one vnet and a console, no disks (so storage never refuses).
pub fn light_guest(name: &str, port: u16, cpu_pct: u32, dirty: u64) -> Domain {
    Domain {
        name: name.to_string(),
        kind: DomainKind::Guest,
        state: DomainState::Active,
        cpu_arch: CpuArch::Native,
        os: Some(os(SOLARIS_MIN)),
        vdisks: vec![],
        vnets: vec![VNet { name: "vnet0".into(), service: VSW.into() }],
        console: Some(Console { service: VCC.into(), port, logging: false }),
        workload: Workload { cpu_pct, dirty_mib_per_s: dirty },
        masters: vec![],
        failure_policy: Default::default(),
    }
}

/// An empty host: the control domain on cores 0-3 with 16G, everything else free.
pub fn empty_host(name: &str) -> Server {
    empty_host_of(name, MEMORY)
}

/// [`empty_host`] with `memory` bytes in all.
pub fn empty_host_of(name: &str, memory: u64) -> Server {
    let cores = (0..CORES)
        .map(|cid| Core {
            cid,
            activated: true,
            strands: (0..THREADS)
                .map(|t| Strand { id: cid * THREADS + t, bound: (cid < PRIMARY_CORES).then(|| "primary".into()) })
                .collect(),
        })
        .collect();
    let memory = vec![
        MemoryBlock { pa: BASE_PA, size: SYS, bound: Some(Owner::System) },
        MemoryBlock { pa: BASE_PA + SYS, size: PRIMARY_MEMORY, bound: Some(Owner::Domain("primary".into())) },
        MemoryBlock { pa: BASE_PA + SYS + PRIMARY_MEMORY, size: memory - SYS - PRIMARY_MEMORY, bound: None },
    ];
    let mut primary = light_guest("primary", 0, 10, 0);
    primary.kind = DomainKind::Control;
    primary.vnets.clear();
    primary.console = None;
    Server {
        name: name.to_string(),
        model: "SPARC M10-4S".into(),
        cpu: sparc64_x_plus(),
        firmware: Firmware("XCP2210".into()),
        os: os(SOLARIS_MIN),
        threads_per_core: THREADS,
        cores,
        memory,
        services: seed_services(),
        domains: vec![primary],
    }
}

/// A guest to place: cores, block sizes, load.
#[derive(Clone, Debug)]
pub struct GuestSpec {
    pub name: String,
    pub cores: u32,
    pub blocks: Vec<u64>,
    pub cpu_pct: u32,
    pub dirty: u64,
}

/// Lays `guests` out on `name`: cores in order after the control domain, memory blocks
/// in a random order with a random free hole (0-24G) before each, the rest free.
/// Guests that no longer fit are dropped (returned second).
pub fn host_with(name: &str, guests: &[GuestSpec], rng: &mut Rng) -> (Server, Vec<GuestSpec>) {
    host_shaped(name, guests, rng, Shape::default())
}

/// How generated hosts are built.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Each host's memory.
    pub memory: u64,
    /// Free holes before each guest are 0..=this many 4G granules.
    pub holes_4g: u64,
    /// On every fourth host (names ending in 3 or 7), the memory after the last guest
    /// is cut into 8G free ranges between 4G blocks of a cold guest (1 core, 1% CPU):
    /// lightly loaded, two thirds free, no free range above 8G (LM-09's trap for a
    /// planner that counts totals).
    pub cold_tails: bool,
}

impl Default for Shape {
    fn default() -> Self {
        Self { memory: MEMORY, holes_4g: 3, cold_tails: false }
    }
}

/// [`host_with`] with the host's memory and hole sizes of `shape`.
pub fn host_shaped(name: &str, guests: &[GuestSpec], rng: &mut Rng, shape: Shape) -> (Server, Vec<GuestSpec>) {
    let mut s = empty_host_of(name, shape.memory);
    let mut next_core = PRIMARY_CORES;
    let mut pa = BASE_PA + SYS + PRIMARY_MEMORY;
    let end = BASE_PA + shape.memory;
    let mut rows: Vec<MemoryBlock> = s.memory.iter().filter(|b| b.bound.is_some()).cloned().collect();
    let mut dropped = Vec::new();
    let mut port = 5000u16;
    for g in guests {
        let hole = rng.range(0, shape.holes_4g) * 4 * GIB;
        let need: u64 = g.blocks.iter().sum::<u64>() + hole;
        if next_core + g.cores > CORES || pa + need > end {
            dropped.push(g.clone());
            continue;
        }
        if hole > 0 {
            rows.push(MemoryBlock { pa, size: hole, bound: None });
            pa += hole;
        }
        for b in &g.blocks {
            rows.push(MemoryBlock { pa, size: *b, bound: Some(Owner::Domain(g.name.clone())) });
            pa += b;
        }
        for cid in next_core..next_core + g.cores {
            for st in &mut s.cores[cid as usize].strands {
                st.bound = Some(g.name.clone());
            }
        }
        next_core += g.cores;
        s.domains.push(light_guest(&g.name, port, g.cpu_pct, g.dirty));
        port += 1;
    }
    if pa < end && shape.cold_tails && name.ends_with(['3', '7']) && next_core < CORES {
        // 8G free, 4G cold, 8G free, ...: two thirds free, no range above 8G.
        let cold = format!("{name}-cold");
        while pa < end {
            let free = (8 * GIB).min(end - pa);
            rows.push(MemoryBlock { pa, size: free, bound: None });
            pa += free;
            if pa + 4 * GIB <= end {
                rows.push(MemoryBlock { pa, size: 4 * GIB, bound: Some(Owner::Domain(cold.clone())) });
                pa += 4 * GIB;
            }
        }
        for st in &mut s.cores[next_core as usize].strands {
            st.bound = Some(cold.clone());
        }
        s.domains.push(light_guest(&cold, port, 1, 1));
    } else if pa < end {
        rows.push(MemoryBlock { pa, size: end - pa, bound: None });
    }
    s.memory = rows;
    if let Err(e) = s.validate() {
        panic!("generated host {name} is invalid: {e:?}");
    }
    (s, dropped)
}

/// A random guest: 1-4 cores, 1-3 blocks of 4-32G (multiples of 4G, sometimes 256M).
pub fn random_guest(name: String, rng: &mut Rng) -> GuestSpec {
    let cores = rng.range(1, 4) as u32;
    let blocks = (0..rng.range(1, 3)).map(|_| rng.range(1, 8) * 4 * GIB + rng.range(0, 1) * 256 * MIB).collect();
    GuestSpec { name, cores, blocks, cpu_pct: rng.range(5, 95) as u32, dirty: rng.range(5, 200) }
}

/// `hosts` hosts (`h0000`, ...) holding about `guests` guests (`g000000`, ...), unevenly:
/// host i gets a share that falls with i, so the cluster starts imbalanced.
pub fn generate(seed: u64, hosts: usize, guests: usize) -> Vec<Server> {
    generate_shaped(seed, hosts, guests, Shape::default())
}

/// [`generate`] with hosts of `shape`.
pub fn generate_shaped(seed: u64, hosts: usize, guests: usize, shape: Shape) -> Vec<Server> {
    let mut rng = Rng(seed);
    let mut per: Vec<Vec<GuestSpec>> = vec![Vec::new(); hosts];
    for g in 0..guests {
        // Skewed: a quarter of the hosts draw half of the guests.
        let h = if rng.range(0, 1) == 0 {
            rng.range(0, (hosts as u64 / 4).max(1) - 1)
        } else {
            rng.range(0, hosts as u64 - 1)
        };
        per[h as usize].push(random_guest(format!("g{g:06}"), &mut rng));
    }
    // What a full host cannot take goes to the next one.
    let mut carry: Vec<GuestSpec> = Vec::new();
    let mut out = Vec::with_capacity(hosts);
    for (i, gs) in per.into_iter().enumerate() {
        carry.extend(gs);
        let (server, dropped) = host_shaped(&format!("h{i:04}"), &carry, &mut rng, shape);
        carry = dropped;
        out.push(server);
    }
    out
}
