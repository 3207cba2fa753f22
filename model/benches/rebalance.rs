//! Benchmark of the rebalancer (RB-01..RB-03): plan time on large generated clusters,
//! and plan quality against two baselines on the same clusters.
//!
//! Clusters come from `tests/common/cluster.rs`: SPARC M10-4S-like hosts (64 cores x 2
//! threads, 1 TiB) whose guests (1-8 cores, one to three blocks of 4-64G) are laid out
//! with free holes between them, a quarter of the hosts drawing half of the guests.
//!
//! - **time**: `plan` at level 3 on 1,000 hosts x 20,000 guests (goal <= 1 s) and
//!   5,000 x 100,000 (goal <= 10 s); median of 3.
//! - **quality**, on 40 hosts, seeds 0..5, each planner allowed 64 moves, twice: roomy
//!   hosts (2 TiB, 700 guests), fragmented ones (1 TiB, holes up to 32G, 520 guests),
//!   and traps (as fragmented, 400 guests, but on a quarter of the hosts the memory after
//!   the last guest is 8G free ranges between 4G blocks of a cold guest: lightly loaded,
//!   mostly free, no range above 8G):
//!   - tern at levels 3 and 5: full preflight, cost-weighted gains;
//!   - hbal-style greedy (Ganeti): every guest x every host each step, the move that
//!     lowers the same imbalance most, minimum gain 0.01 once the score is below 0.1
//!     (any gain above it), capacity judged by free strand and memory totals, no cost;
//!   - Proxmox-style bruteforce (CRS auto-rebalance): act while its imbalance (the
//!     coefficient of variation of node load over `sqrt(n - 1)`, node load the mean of
//!     CPU and memory) is above 0.3, one move per round, the best over every guest x
//!     host, taken only if it lowers that imbalance by >= 10%.
//!
//!   Each baseline's moves are then applied in order with the real preflight, as a
//!   migration would be: a refused move is counted (LM-09 fragmentation separately) and
//!   skipped. Reported: imbalance before -> after as applied, moves made, refusals, and
//!   the total migration time of the moves made (pre-copy model).
//!
//! Run: `cargo bench -p tern-model --bench rebalance` (only tern-model and its own
//! dependencies build; no RocksDB).

#[path = "../tests/common/mod.rs"]
mod common;

use common::cluster::{Shape, generate, generate_shaped};
use std::collections::BTreeMap;
use std::time::Instant;
use tern_model::precopy::{PrecopyParams, precopy_plan};
use tern_model::rebalance::Level;
use tern_model::rebalance::{HostInput, Input, Settings, imbalance_ppm, plan, ppm_text};
use tern_model::units::GIB;
use tern_model::{Code, DomainKind, DomainState, MigrationQuery, Reserved, Server, preflight};

fn input<'a>(servers: &'a [Server], none: &'a Reserved, settings: Settings) -> Input<'a> {
    Input {
        hosts: servers
            .iter()
            .map(|s| HostInput { server: s, reserved: none, eligible: Ok(()), in_flight: 0 })
            .collect(),
        guests: BTreeMap::new(),
        settings,
    }
}

fn time_plans() {
    println!("plan time (level 3, max_moves 8), median of 3:");
    println!("{:>6} {:>8} {:>10} {:>7} {:>18}", "hosts", "guests", "plan", "moves", "imbalance");
    for (hosts, guests, goal_s) in [(1_000usize, 20_000usize, 1.0f64), (5_000, 100_000, 10.0)] {
        let servers = generate(0x5eed, hosts, guests);
        let placed: usize = servers.iter().map(|s| s.domains.len() - 1).sum();
        let none = Reserved::default();
        let mut times = Vec::new();
        let mut last = None;
        for _ in 0..3 {
            let inp = input(&servers, &none, Settings::default());
            let t = Instant::now();
            let p = plan(&inp);
            times.push(t.elapsed().as_secs_f64());
            last = Some(p);
        }
        times.sort_by(f64::total_cmp);
        let p = last.expect("three runs");
        println!(
            "{hosts:>6} {placed:>8} {:>9.3}s {:>7} {:>8} -> {:<8} (goal <= {goal_s} s: {})",
            times[1],
            p.moves.len(),
            ppm_text(p.imbalance_before_ppm),
            ppm_text(p.imbalance_after_ppm),
            if times[1] <= goal_s { "met" } else { "MISSED" }
        );
    }
}

/// A host as the baselines see it: totals only, no addresses.
#[derive(Clone)]
struct Agg {
    busy: f64,
    strands: f64,
    used: u64,
    total: u64,
    free_strands: usize,
    free_memory: u64,
    guests: Vec<(String, usize, u64, f64, u64)>, // name, strands, memory, busy, migration ms
}

fn aggregate(servers: &[Server]) -> Vec<Agg> {
    let p = PrecopyParams::default();
    servers
        .iter()
        .map(|s| {
            let none = Reserved::default();
            let control = s
                .domains
                .iter()
                .find(|d| d.kind == DomainKind::Control)
                .map_or(1, |d| s.cpu_of(&d.name).cids.len() as u32);
            let mut busy = 0.0;
            let mut guests = Vec::new();
            for d in &s.domains {
                let st = s.cpu_of(&d.name).strands.len();
                let mem: u64 = s.memory_of(&d.name).iter().map(|r| r.size).sum();
                let b = if d.state == DomainState::Active {
                    f64::from(d.workload.cpu_pct) * st as f64 / 100.0
                } else {
                    0.0
                };
                busy += b;
                if d.kind == DomainKind::Guest {
                    let ms = precopy_plan(mem, d.workload.dirty_mib_per_s, control, &p).total_ms;
                    guests.push((d.name.clone(), st, mem, b, ms));
                }
            }
            let free: u64 = s.free_ranges(&none).iter().map(|r| r.size).sum();
            Agg {
                busy,
                strands: s.cores.iter().filter(|c| c.activated).map(|c| c.strands.len()).sum::<usize>() as f64,
                used: s.total_memory() - free,
                total: s.total_memory(),
                free_strands: s.free_strands(&none).len(),
                free_memory: free,
                guests,
            }
        })
        .collect()
}

/// The standard deviation, tern's imbalance per resource (RB-01).
fn sigma(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    (xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt()
}

fn imbalance(hosts: &[Agg]) -> f64 {
    let cpu: Vec<f64> = hosts.iter().map(|h| h.busy / h.strands).collect();
    let mem: Vec<f64> = hosts.iter().map(|h| h.used as f64 / h.total as f64).collect();
    0.5 * sigma(&cpu) + 0.5 * sigma(&mem)
}

fn shift(hosts: &mut [Agg], s: usize, gi: usize, t: usize) {
    let g = hosts[s].guests.remove(gi);
    hosts[s].busy -= g.3;
    hosts[s].used -= g.2;
    hosts[s].free_strands += g.1;
    hosts[s].free_memory += g.2;
    hosts[t].busy += g.3;
    hosts[t].used += g.2;
    hosts[t].free_strands -= g.1;
    hosts[t].free_memory -= g.2;
    hosts[t].guests.push(g);
}

/// The best single move over every guest x host by aggregate capacity: (after, s, gi, t).
fn best_move(hosts: &[Agg]) -> Option<(f64, usize, usize, usize)> {
    let mut cpu: Vec<f64> = hosts.iter().map(|h| h.busy / h.strands).collect();
    let mut mem: Vec<f64> = hosts.iter().map(|h| h.used as f64 / h.total as f64).collect();
    let mut best: Option<(f64, usize, usize, usize)> = None;
    for s in 0..hosts.len() {
        for (gi, g) in hosts[s].guests.iter().enumerate() {
            for t in 0..hosts.len() {
                if t == s || hosts[t].free_strands < g.1 || hosts[t].free_memory < g.2 {
                    continue;
                }
                let saved = (cpu[s], mem[s], cpu[t], mem[t]);
                cpu[s] = (hosts[s].busy - g.3) / hosts[s].strands;
                mem[s] = (hosts[s].used - g.2) as f64 / hosts[s].total as f64;
                cpu[t] = (hosts[t].busy + g.3) / hosts[t].strands;
                mem[t] = (hosts[t].used + g.2) as f64 / hosts[t].total as f64;
                let after = 0.5 * sigma(&cpu) + 0.5 * sigma(&mem);
                (cpu[s], mem[s], cpu[t], mem[t]) = saved;
                if best.is_none_or(|b| after < b.0) {
                    best = Some((after, s, gi, t));
                }
            }
        }
    }
    best
}

/// Ganeti hbal-style: greedy; the minimum gain 0.01 applies only once the score is
/// below 0.1 (hbal's `--min-gain` / `--min-gain-limit` defaults), any gain before;
/// aggregate capacity.
fn hbal(servers: &[Server], max: usize) -> Vec<(String, String, String)> {
    let mut hosts = aggregate(servers);
    let mut moves = Vec::new();
    while moves.len() < max {
        let before = imbalance(&hosts);
        let Some((after, s, gi, t)) = best_move(&hosts) else { break };
        let min_gain = if before < 0.1 { 0.01 } else { 1e-9 };
        if before - after < min_gain {
            break;
        }
        moves.push((hosts[s].guests[gi].0.clone(), servers[s].name.clone(), servers[t].name.clone()));
        shift(&mut hosts, s, gi, t);
    }
    moves
}

/// Proxmox CRS's imbalance: CV of node load (mean of CPU and memory) / sqrt(n - 1).
fn crs(hosts: &[Agg]) -> f64 {
    let load: Vec<f64> =
        hosts.iter().map(|h| 0.5 * h.busy / h.strands + 0.5 * h.used as f64 / h.total as f64).collect();
    let n = load.len() as f64;
    let mean = load.iter().sum::<f64>() / n;
    if n < 2.0 || mean <= 0.0 {
        return 0.0;
    }
    let var = load.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n;
    var.sqrt() / mean / (n - 1.0).sqrt()
}

/// Proxmox CRS-style: while its imbalance > 0.3, the best move if it gains >= 10%.
fn proxmox(servers: &[Server], max: usize) -> Vec<(String, String, String)> {
    let mut hosts = aggregate(servers);
    let mut moves = Vec::new();
    while moves.len() < max {
        let before = crs(&hosts);
        if before <= 0.3 {
            break;
        }
        let Some((_, s, gi, t)) = best_move(&hosts) else { break };
        let mut trial = hosts.clone();
        shift(&mut trial, s, gi, t);
        if crs(&trial) > before * 0.9 {
            break;
        }
        moves.push((hosts[s].guests[gi].0.clone(), servers[s].name.clone(), servers[t].name.clone()));
        shift(&mut hosts, s, gi, t);
    }
    moves
}

struct Applied {
    made: usize,
    refused: usize,
    lm09: usize,
    total_ms: u64,
    after_ppm: u32,
}

/// Runs `moves` in order with the real preflight, as migrations would run.
fn apply(servers: &[Server], moves: &[(String, String, String)]) -> Applied {
    let mut servers = servers.to_vec();
    let none = Reserved::default();
    let mut a = Applied { made: 0, refused: 0, lm09: 0, total_ms: 0, after_ppm: 0 };
    let p = PrecopyParams::default();
    for (guest, from, to) in moves {
        let s = servers.iter().position(|x| &x.name == from).expect("source");
        let t = servers.iter().position(|x| &x.name == to).expect("target");
        let report = preflight(&MigrationQuery {
            source: &servers[s],
            target: &servers[t],
            domain: guest,
            new_name: None,
            target_reserved: &none,
        });
        match report.binding.filter(|_| report.errors.is_empty()) {
            Some(b) => {
                let mem: u64 = servers[s].memory_of(guest).iter().map(|r| r.size).sum();
                let dirty = servers[s].domain(guest).map_or(0, |d| d.workload.dirty_mib_per_s);
                a.total_ms += precopy_plan(mem, dirty, 4, &p).total_ms;
                let (d, _, _) = servers[s].unbind_domain(guest).expect("unbind");
                servers[t].bind_domain(d, &b).expect("a preflight binding binds");
                a.made += 1;
            }
            None => {
                a.refused += 1;
                if report.errors.iter().any(|e| e.code == Code::MemoryBlockFit) {
                    a.lm09 += 1;
                }
            }
        }
    }
    a.after_ppm = imbalance_ppm(&input(&servers, &none, Settings::default()));
    a
}

fn quality(title: &str, shape: Shape, guests: usize) {
    println!();
    println!("plan quality, {title}: 40 hosts x {guests} guests, at most 64 moves, applied with the real preflight:");
    println!(
        "{:>4} {:<10} {:>18} {:>6} {:>8} {:>6} {:>10}",
        "seed", "planner", "imbalance", "moves", "refused", "LM-09", "migration"
    );
    let mut totals: BTreeMap<&str, (f64, usize, usize, usize, u64)> = BTreeMap::new();
    for seed in 0..5u64 {
        let servers = generate_shaped(seed, 40, guests, shape);
        let none = Reserved::default();
        let before = imbalance_ppm(&input(&servers, &none, Settings::default()));
        let tern = |level: u8| -> Vec<(String, String, String)> {
            let settings = Settings { max_moves: 64, level: Level::new(level).expect("level"), ..Settings::default() };
            let p = plan(&input(&servers, &none, settings));
            p.moves.iter().map(|m| (m.domain.clone(), m.source.clone(), m.target.clone())).collect()
        };
        let planners = [
            ("tern-3", tern(3)),
            ("tern-5", tern(5)),
            ("hbal", hbal(&servers, 64)),
            ("proxmox", proxmox(&servers, 64)),
        ];
        for (name, moves) in planners {
            let a = apply(&servers, &moves);
            println!(
                "{seed:>4} {name:<10} {:>8} -> {:<8} {:>6} {:>8} {:>6} {:>9.0}s",
                ppm_text(before),
                ppm_text(a.after_ppm),
                a.made,
                a.refused,
                a.lm09,
                a.total_ms as f64 / 1000.0
            );
            let e = totals.entry(name).or_default();
            e.0 += f64::from(a.after_ppm) / 1e6;
            e.1 += a.made;
            e.2 += a.refused;
            e.3 += a.lm09;
            e.4 += a.total_ms;
        }
    }
    println!("mean over the seeds:");
    for (name, (imb, made, refused, lm09, ms)) in totals {
        println!(
            "     {name:<10} final imbalance {:.4}, moves made {:.1}, refused {:.1} (LM-09 {:.1}), migration {:.0}s",
            imb / 5.0,
            made as f64 / 5.0,
            refused as f64 / 5.0,
            lm09 as f64 / 5.0,
            ms as f64 / 5000.0
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument picks one part.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let want = |part: &str| args.is_empty() || args.iter().any(|a| a == part);
    if want("time") {
        time_plans();
    }
    if want("quality") {
        quality("roomy hosts (2 TiB, holes up to 12G)", Shape::default(), 700);
        quality(
            "fragmented hosts (1 TiB, holes up to 32G)",
            Shape { memory: 1024 * GIB, holes_4g: 8, cold_tails: false },
            520,
        );
        let traps = Shape { memory: 1024 * GIB, holes_4g: 8, cold_tails: true };
        quality("a quarter of the hosts with free memory only in 8G ranges", traps, 400);
    }
}
