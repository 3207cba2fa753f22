//! Property tests of the whole preflight on random targets: a binding it returns can
//! be bound (never overlapping bound or reserved memory, cores or console ports,
//! matching the guest's block structure, on activated free cores), LM-09 agrees with
//! exhaustive search, and binding then unbinding restores the target.

mod common;

use common::*;
use proptest::prelude::*;
use std::collections::BTreeSet;
use tern_model::fit::ALIGN;
use tern_model::units::MIB;
use tern_model::{Binding, Code, DomainKind, MemoryBlock, Range, Report, Reserved, Rule, Server};

/// What a random case is made of; `build` turns it into servers.
#[derive(Clone, Debug)]
struct World {
    /// SPARC M10-1 (2 threads, 16 cores) or SPARC T4-1 (8 threads, 8 cores).
    t4: bool,
    /// Per target core after the control domain's: 0..=5 free, 6 not activated,
    /// 7 wholly bound to ldom2, 8 one strand bound to ldom2.
    core_states: Vec<u8>,
    /// Target memory after the control domain: (owner 0..=2 free, 3 ldom2, 4 _sys_;
    /// size in 4M granules).
    rows: Vec<(u8, u64)>,
    /// Guest CPU: whole cores, or (T4 only) this many strands of one core.
    guest_cores: u32,
    guest_threads: Option<u32>,
    guest_blocks: Vec<u64>,
    /// Reserved on the target: strands by index, memory as (row, offset MiB, size MiB).
    reserved_strands: Vec<u32>,
    reserved_memory: Vec<(usize, u64, u64)>,
    reserved_ports: Vec<u16>,
    /// ldom2's console port on the target, if any.
    neighbour_port: Option<u16>,
    /// The target lists its cores from the highest CID down.
    reverse_cores: bool,
}

fn world() -> impl Strategy<Value = World> {
    (
        any::<bool>(),
        prop::collection::vec(0u8..=8, 16),
        prop::collection::vec((0u8..=4, 1u64..=2048), 1..=10),
        (1u32..=4, prop::option::weighted(0.3, 2u32..=8)),
        prop::collection::vec(1u64..=1024, 1..=6),
        (
            prop::collection::vec(0u32..128, 0..=8),
            prop::collection::vec((0usize..10, 0u64..4096, 1u64..4096), 0..=3),
            prop::collection::vec(5000u16..=5003, 0..=3),
            prop::option::of(5000u16..=5003),
        ),
        any::<bool>(),
    )
        .prop_map(|(t4, core_states, rows, (guest_cores, threads), guest_blocks, reserved, reverse_cores)| World {
            t4,
            core_states,
            rows,
            guest_cores,
            guest_threads: threads.filter(|_| t4),
            guest_blocks: guest_blocks.iter().map(|g| g * ALIGN).collect(),
            reserved_strands: reserved.0,
            reserved_memory: reserved.1,
            reserved_ports: reserved.2,
            neighbour_port: reserved.3,
            reverse_cores,
        })
}

struct Built {
    source: Server,
    target: Server,
    reserved: Reserved,
}

fn server(t4: bool, name: &str) -> Server {
    if t4 { t4_1(name) } else { m10_1(name) }
}

fn build(w: &World) -> Built {
    // Source: ldom1 on the cores right after the control domain's, its blocks back to back.
    let mut source = server(w.t4, "src");
    add_domain(&mut source, guest_domain("ldom1", 5001));
    let first = source.cores.iter().find(|c| c.is_free()).unwrap().cid;
    match w.guest_threads {
        Some(n) => {
            let base = first * source.threads_per_core;
            set_strands(&mut source, "ldom1", &(base..base + n).collect::<Vec<_>>());
        }
        None => bind_cores(&mut source, "ldom1", &(first..first + w.guest_cores).collect::<Vec<_>>()),
    }
    let rows: Vec<(&str, u64)> = w.guest_blocks.iter().map(|&b| ("ldom1", b)).collect();
    lay_out_after_primary(&mut source, &rows);

    // Target: a neighbour ldom2 holding cores and memory as the world says.
    let mut target = server(w.t4, "dst");
    let mut ldom2 = plain_domain("ldom2", DomainKind::Guest);
    if let Some(p) = w.neighbour_port {
        ldom2 = guest_domain("ldom2", p);
    }
    add_domain(&mut target, ldom2);
    let tpc = target.threads_per_core;
    for (core, &state) in target.cores.iter_mut().filter(|c| c.is_free()).zip(&w.core_states) {
        match state {
            6 => core.activated = false,
            7 => core.strands.iter_mut().for_each(|s| s.bound = Some("ldom2".into())),
            8 => core.strands[0].bound = Some("ldom2".into()),
            _ => {}
        }
    }
    let rows: Vec<(&str, u64)> = w
        .rows
        .iter()
        .map(|&(owner, granules)| {
            let who = match owner {
                0..=2 => "",
                3 => "ldom2",
                _ => "_sys_",
            };
            (who, granules * ALIGN)
        })
        .collect();
    lay_out_after_primary(&mut target, &rows);

    let strand_count = target.cores.len() as u32 * tpc;
    let mut reserved = Reserved {
        strands: w.reserved_strands.iter().map(|s| s % strand_count).collect(),
        console_ports: w.reserved_ports.iter().copied().collect(),
        ..Reserved::default()
    };
    let after: Vec<&MemoryBlock> = target.memory.iter().filter(|b| b.pa >= AFTER_PRIMARY_PA).collect();
    for &(row, offset_mib, size_mib) in &w.reserved_memory {
        let block = after[row % after.len()];
        if block.bound.is_none() {
            let offset = (offset_mib * MIB) % block.size;
            reserved.memory.push(Range::new(block.pa + offset, (size_mib * MIB).min(block.size - offset)));
        }
    }
    if w.reverse_cores {
        target.cores.reverse();
    }
    assert_valid(&source);
    assert_valid(&target);
    Built { source, target, reserved }
}

/// Everything wrong with `binding` as a placement of `ldom1` from `source` on `target`.
fn binding_problems(b: &Built, binding: &Binding) -> Vec<String> {
    let mut bad = Vec::new();
    let (t, r) = (&b.target, &b.reserved);
    // Memory: the guest's block sizes in order, inside free unreserved ranges,
    // overlapping nothing bound, reserved, or another block of the binding.
    let sizes: Vec<u64> = b.source.memory_of("ldom1").iter().map(|m| m.size).collect();
    let got: Vec<u64> = binding.memory.iter().map(|m| m.size).collect();
    if got != sizes {
        bad.push(format!("block sizes {got:?}, guest has {sizes:?}"));
    }
    let free = t.free_ranges(r);
    for (i, m) in binding.memory.iter().enumerate() {
        if !free.iter().any(|f| f.contains(m)) {
            bad.push(format!("{m} is not inside a free unreserved range"));
        }
        if let Some(blk) = t.memory.iter().find(|blk| blk.bound.is_some() && blk.range().overlaps(m)) {
            bad.push(format!("{m} overlaps memory bound to {:?}", blk.bound));
        }
        if let Some(h) = r.memory.iter().find(|h| h.overlaps(m)) {
            bad.push(format!("{m} overlaps reserved {h}"));
        }
        if binding.memory[i + 1..].iter().any(|o| o.overlaps(m)) {
            bad.push(format!("{m} overlaps another block of the binding"));
        }
        if m.pa % ALIGN != 0 {
            bad.push(format!("{m} is not on a 4M boundary"));
        }
    }
    // CPU: activated, unbound, unreserved strands; the same amount; whole cores
    // when the guest has whole cores.
    let guest = b.source.cpu_of("ldom1");
    let strands: BTreeSet<u32> = binding.strands.iter().copied().collect();
    if strands.len() != binding.strands.len() {
        bad.push(format!("strands repeat: {:?}", binding.strands));
    }
    for &id in &binding.strands {
        match t.cores.iter().find(|c| c.strands.iter().any(|s| s.id == id)) {
            None => bad.push(format!("strand {id} does not exist")),
            Some(c) if !c.activated => bad.push(format!("strand {id} is on a core without activation")),
            Some(c) if c.strands.iter().any(|s| s.id == id && s.bound.is_some()) => {
                bad.push(format!("strand {id} is already bound"))
            }
            Some(_) if r.strands.contains(&id) => bad.push(format!("strand {id} is reserved")),
            Some(_) => {}
        }
    }
    let mut touched: Vec<u32> =
        t.cores.iter().filter(|c| c.strands.iter().any(|s| strands.contains(&s.id))).map(|c| c.cid).collect();
    touched.sort_unstable();
    if touched != binding.cids || !binding.strands.is_sorted() {
        bad.push(format!(
            "cids {:?} strands {:?}: want ascending, on cores {touched:?}",
            binding.cids, binding.strands
        ));
    }
    if binding.whole_cores != guest.whole_cores {
        bad.push(format!("whole_cores {} for a guest with {}", binding.whole_cores, guest.whole_cores));
    }
    // LM-12: the amount of CPU (threads) does not change, whatever the core size.
    if binding.strands.len() != guest.strands.len() {
        bad.push(format!("{} strands for a guest of {}", binding.strands.len(), guest.strands.len()));
    }
    if guest.whole_cores {
        for c in t.cores.iter().filter(|c| binding.cids.contains(&c.cid)) {
            if !c.strands.iter().all(|s| strands.contains(&s.id)) {
                bad.push(format!("core {} is only partly bound", c.cid));
            }
        }
    }
    // Console: in the VCC's range, used by no domain and no reservation.
    match binding.console_port {
        None => bad.push("no console port for a guest with a console".into()),
        Some(p) => {
            let vcc = t.services.vcc(VCC).unwrap();
            if p < vcc.port_min || p > vcc.port_max {
                bad.push(format!("port {p} outside {}-{}", vcc.port_min, vcc.port_max));
            }
            if t.used_console_ports(r).contains(&p) {
                bad.push(format!("port {p} is taken"));
            }
        }
    }
    bad
}

/// The memory table as `ldm` shows it once adjacent free rows are merged.
fn merged(memory: &[MemoryBlock]) -> Vec<MemoryBlock> {
    let mut sorted = memory.to_vec();
    sorted.sort_by_key(|b| b.pa);
    let mut out: Vec<MemoryBlock> = Vec::new();
    for b in sorted {
        match out.last_mut() {
            Some(last) if last.bound.is_none() && b.bound.is_none() && last.end_pa() == b.pa => last.size += b.size,
            _ => out.push(b),
        }
    }
    out
}

fn free_total(s: &Server) -> u64 {
    s.free_ranges(&Reserved::default()).iter().map(|r| r.size).sum()
}

fn has(report: &Report, rule: Rule, code: Code) -> bool {
    report.errors.iter().any(|e| e.rule == rule && e.code == code)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn preflight_binding_is_a_valid_placement(w in world()) {
        // Goal: a returned binding never overlaps bound or reserved memory, cores or
        // ports, keeps the block structure, and uses only activated free cores
        // (whole cores for a whole-core guest); no binding means an error says why.
        let b = build(&w);
        let report = check_with(&b.source, &b.target, "ldom1", None, &b.reserved);
        match &report.binding {
            Some(binding) => {
                prop_assert!(report.ok());
                let bad = binding_problems(&b, binding);
                prop_assert!(bad.is_empty(), "{}\nbinding {}", bad.join("\n"), binding);
            }
            None => prop_assert!(!report.ok(), "no binding and no error"),
        }
        // Placement and the one binding check never disagree.
        let refused: Vec<_> = report.errors.iter().filter(|e| e.code == Code::BindingRefused).collect();
        prop_assert!(refused.is_empty(), "{refused:?}");
    }

    #[test]
    fn preflight_memory_verdict_matches_exhaustive_search(w in world()) {
        // Goal: LM-09 fails exactly when no placement of the guest's blocks exists in
        // the target's free, unreserved memory; LM-08 exactly when the total is short.
        let b = build(&w);
        let report = check_with(&b.source, &b.target, "ldom1", None, &b.reserved);
        let blocks: Vec<u64> = b.source.memory_of("ldom1").iter().map(|m| m.size).collect();
        let free = b.target.free_ranges(&b.reserved);
        let fits = brute::fits(&blocks, &free);
        prop_assert_eq!(has(&report, Rule::Lm(9), Code::MemoryBlockFit), !fits);
        prop_assert!(!has(&report, Rule::Lm(9), Code::MemoryFitUndecided));
        let short = free.iter().map(|r| r.size).sum::<u64>() < blocks.iter().sum::<u64>();
        prop_assert_eq!(has(&report, Rule::Lm(8), Code::TooLittleFreeMemory), short);
    }

    #[test]
    fn binding_then_unbinding_restores_the_target(w in world()) {
        // Goal: bind_domain applies a preflight binding exactly; unbind_domain gives
        // everything back: the same free total, cores and domains, and a memory table
        // whose free rows are merged.
        let b = build(&w);
        let report = check_with(&b.source, &b.target, "ldom1", None, &Reserved::default());
        let Some(binding) = report.binding else { return Ok(()) };
        let guest = b.source.domain("ldom1").unwrap().clone();
        let mut target = b.target.clone();
        target.bind_domain(guest.clone(), &binding).expect("a preflight binding binds");
        assert_valid(&target);
        prop_assert_eq!(target.memory_of("ldom1").len(), binding.memory.len());
        let mut want = binding.memory.clone();
        want.sort();
        prop_assert_eq!(target.memory_of("ldom1"), want);
        let cpu = target.cpu_of("ldom1");
        let sorted = |v: &[u32]| { let mut v = v.to_vec(); v.sort_unstable(); v };
        prop_assert_eq!(sorted(&cpu.strands), binding.strands.clone());
        prop_assert_eq!(sorted(&cpu.cids), binding.cids.clone());
        prop_assert_eq!(cpu.whole_cores, binding.whole_cores);
        prop_assert_eq!(target.domain("ldom1").unwrap().console.as_ref().unwrap().port, binding.console_port.unwrap());
        let used: u64 = binding.memory.iter().map(|r| r.size).sum();
        prop_assert_eq!(free_total(&target) + used, free_total(&b.target));

        let (domain, held_cpu, held_memory) = target.unbind_domain("ldom1").expect("ldom1 is bound");
        prop_assert_eq!(domain.name, "ldom1");
        prop_assert_eq!(held_cpu, cpu);
        prop_assert_eq!(held_memory.iter().map(|r| r.size).sum::<u64>(), used);
        prop_assert_eq!(free_total(&target), free_total(&b.target));
        prop_assert_eq!(&target.cores, &b.target.cores);
        prop_assert_eq!(&target.domains, &b.target.domains);
        prop_assert_eq!(&target.memory, &merged(&b.target.memory));
        prop_assert!(
            target.memory.windows(2).all(|p| !(p[0].bound.is_none() && p[1].bound.is_none() && p[0].end_pa() == p[1].pa)),
            "adjacent free rows left unmerged"
        );
    }

    #[test]
    fn bind_domain_refuses_a_bad_binding_and_changes_nothing(w in world(), pick in 0usize..4) {
        // Goal: all or nothing: a binding onto bound memory, a bound strand, a missing
        // strand or a taken name is refused and leaves the server as it was.
        let b = build(&w);
        let report = check_with(&b.source, &b.target, "ldom1", None, &Reserved::default());
        let Some(mut binding) = report.binding else { return Ok(()) };
        let primary_mem = b.target.memory_of("primary")[0];
        match pick {
            0 => *binding.memory.last_mut().unwrap() = Range::new(primary_mem.pa, binding.memory.last().unwrap().size),
            1 => binding.strands.push(0),
            2 => binding.strands.push(9999),
            _ => binding.domain = "ldom2".into(),
        }
        let mut target = b.target.clone();
        let guest = b.source.domain("ldom1").unwrap().clone();
        prop_assert!(target.bind_domain(guest, &binding).is_err());
        prop_assert_eq!(&target, &b.target);
    }
}
