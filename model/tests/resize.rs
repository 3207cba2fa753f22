//! UC-2 growth where the guest runs (RB-06): the resize planner, the one growth check
//! and applying a resize, on the seed's `m10-1-1` (ldom1 on cores 4-7 with 16G; cores
//! 8-15 and 39416M after ldom1 free).

mod common;

use common::*;
use tern_model::fit::ALIGN;
use tern_model::rebalance::Growth;
use tern_model::resize::target_of;
use tern_model::units::{GIB, MIB};
use tern_model::{Amount, Binding, BindingError, Range, Reserved, ResizeError, plan_resize};

/// Where m10-1-1's free memory after ldom1 starts.
const FREE_PA: u64 = 0x7e02_7000_0000 + 16136 * MIB;
const FREE_SIZE: u64 = 39416 * MIB;

fn grow(cores: Option<u32>, memory: Option<u64>) -> Growth {
    Growth { cores, memory }
}

fn none() -> Reserved {
    Reserved::default()
}

#[test]
fn grows_by_the_lowest_free_cores_and_one_range_that_holds_the_memory() {
    // Goal: set-core 6 adds cids 8 and 9; set-memory 24G takes 8G from one free range.
    let s = seed_source();
    let r = plan_resize(&s, "ldom1", &grow(Some(6), Some(24 * GIB)), &none()).expect("fits");
    assert_eq!(r.add.cids, vec![8, 9]);
    assert_eq!(r.add.strands, vec![16, 17, 18, 19]);
    assert!(r.add.whole_cores);
    assert_eq!(r.add.memory, vec![Range::new(FREE_PA, 8 * GIB)]);
    assert!(r.remove.strands.is_empty() && r.remove.memory.is_empty());
    s.check_growth("ldom1", &r.add, &none()).expect("the one growth check passes what the planner proposes");
}

#[test]
fn reserved_cores_and_memory_are_never_planned_nor_passed() {
    // Goal: what another operation reserved is not handed out to a growth (RB-06 reserves like LM-06/LM-09).
    let s = seed_source();
    let mut reserved = none();
    reserved.strands.extend([16, 17]);
    reserved.memory.push(Range::new(FREE_PA, 8 * GIB));
    let r = plan_resize(&s, "ldom1", &grow(Some(5), Some(24 * GIB)), &reserved).expect("fits");
    assert_eq!(r.add.cids, vec![9]);
    assert_eq!(r.add.memory, vec![Range::new(FREE_PA + 8 * GIB, 8 * GIB)]);
    assert_eq!(
        plan_resize(&s, "ldom1", &grow(Some(13), None), &reserved),
        Err(ResizeError::TooFewCores { need: 9, free: 7 })
    );
    let taken = Binding { cids: vec![8], strands: vec![16, 17], ..r.add.clone() };
    assert_eq!(
        s.check_growth("ldom1", &taken, &reserved),
        Err(ResizeError::Binding(BindingError::StrandReserved { strand: 16 }))
    );
}

#[test]
fn shrinks_from_the_highest_cores_and_addresses() {
    // Goal: set-core gives back the highest CIDs; set-memory trims the highest block from its top; free rows merge.
    let mut s = seed_source();
    let grown = plan_resize(&s, "ldom1", &grow(Some(6), Some(24 * GIB)), &none()).unwrap();
    s.resize_domain(&grown).unwrap();
    assert_eq!(s.cpu_of("ldom1").cids, vec![4, 5, 6, 7, 8, 9]);
    let r = plan_resize(&s, "ldom1", &grow(Some(5), Some(20 * GIB)), &none()).unwrap();
    assert_eq!(r.remove.cids, vec![9]);
    assert_eq!(r.remove.strands, vec![18, 19]);
    assert_eq!(r.remove.memory, vec![Range::new(FREE_PA + 4 * GIB, 4 * GIB)]);
    s.resize_domain(&r).unwrap();
    assert_eq!(s.cpu_of("ldom1").cids, vec![4, 5, 6, 7, 8]);
    assert_eq!(s.memory_of("ldom1").iter().map(|b| b.size).sum::<u64>(), 20 * GIB);
    assert_eq!(s.free_ranges(&none()), vec![Range::new(FREE_PA + 4 * GIB, FREE_SIZE - 4 * GIB)]);
    assert_valid(&s);
}

#[test]
fn applying_a_resize_already_applied_changes_nothing() {
    // Goal: a commit after a report that already shows the resize is not refused: nothing is pending.
    let mut s = seed_source();
    let r = plan_resize(&s, "ldom1", &grow(Some(6), Some(20 * GIB)), &none()).unwrap();
    s.resize_domain(&r).unwrap();
    let after = s.clone();
    assert!(s.pending_of(&r).is_empty());
    s.resize_domain(&r).unwrap();
    assert_eq!(s, after);
}

#[test]
fn a_resize_that_fails_leaves_the_server_unchanged() {
    // Goal: all or nothing: a gain of a bound core is refused and nothing of the rest is applied.
    let mut s = seed_source();
    let before = s.clone();
    let mut r = plan_resize(&s, "ldom1", &grow(Some(5), Some(20 * GIB)), &none()).unwrap();
    r.add.cids.push(0);
    r.add.strands.extend([0, 1]);
    assert!(matches!(s.resize_domain(&r), Err(ResizeError::Binding(BindingError::StrandBound { .. }))));
    assert_eq!(s, before);
}

#[test]
fn ldm_verbs_become_the_size_afterwards() {
    // Goal: add/set/remove give the size afterwards, memory in whole granules; leaving nothing is refused.
    let s = seed_source();
    let t = target_of(&s, "ldom1", Some(Amount::Add(2)), Some(Amount::Add(GIB + 1))).unwrap();
    assert_eq!(t, grow(Some(6), Some(17 * GIB + ALIGN)));
    let t = target_of(&s, "ldom1", Some(Amount::Set(1)), Some(Amount::Remove(8 * GIB))).unwrap();
    assert_eq!(t, grow(Some(1), Some(8 * GIB)));
    assert_eq!(
        target_of(&s, "ldom1", Some(Amount::Remove(4)), None),
        Err(ResizeError::NothingLeft { what: "cores", domain: "ldom1".into() })
    );
    assert!(matches!(
        target_of(&s, "ldom1", None, Some(Amount::Remove(32 * GIB))),
        Err(ResizeError::RemovesTooMuch { .. })
    ));
    assert!(matches!(target_of(&s, "primary", Some(Amount::Add(1)), None), Err(ResizeError::NotAGuest { .. })));
    assert!(matches!(target_of(&s, "nosuch", Some(Amount::Add(1)), None), Err(ResizeError::UnknownDomain { .. })));
}

#[test]
fn refuses_a_gain_that_is_bound_unaligned_or_not_the_guests() {
    // Goal: check_growth refuses bound strands, unaligned or bound memory, a console port, another guest's name.
    let s = seed_source();
    let base = Binding { domain: "ldom1".into(), whole_cores: true, ..Binding::default() };
    let cases = [
        Binding { cids: vec![0], strands: vec![0, 1], ..base.clone() },
        Binding { memory: vec![Range::new(FREE_PA + 1, ALIGN)], ..base.clone() },
        Binding { memory: vec![Range::new(PRIMARY_PA, ALIGN)], ..base.clone() },
        Binding { console_port: Some(5002), ..base.clone() },
        Binding { domain: "ldom2".into(), ..base.clone() },
        Binding { cids: vec![8], strands: vec![16], ..base.clone() },
    ];
    let got: Vec<String> = cases
        .iter()
        .map(|b| match s.check_growth("ldom1", b, &none()) {
            Err(ResizeError::Binding(BindingError::StrandBound { .. })) => "strand bound".into(),
            Err(ResizeError::Binding(BindingError::MemoryBound { .. })) => "memory bound".into(),
            Err(ResizeError::Binding(BindingError::PartialCore { .. })) => "part of a core".into(),
            Err(ResizeError::Unaligned { .. }) => "unaligned".into(),
            Err(ResizeError::Foreign { .. }) => "foreign".into(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(got, ["strand bound", "unaligned", "memory bound", "foreign", "foreign", "part of a core"]);
}

#[test]
fn memory_spreads_over_free_ranges_in_pa_order_when_none_holds_it_all() {
    // Goal: a gain larger than any free range takes ranges in PA order; more than is free is refused with the numbers.
    let s = seed_source();
    let mut reserved = none();
    reserved.memory.push(Range::new(FREE_PA + 4 * GIB, 4 * GIB));
    let r = plan_resize(&s, "ldom1", &grow(None, Some(50 * GIB)), &reserved).unwrap();
    assert_eq!(r.add.memory, vec![Range::new(FREE_PA, 4 * GIB), Range::new(FREE_PA + 8 * GIB, 30 * GIB)]);
    s.check_growth("ldom1", &r.add, &reserved).expect("both ranges are free and unreserved");
    assert_eq!(
        plan_resize(&s, "ldom1", &grow(None, Some(51 * GIB)), &reserved),
        Err(ResizeError::TooLittleMemory { need: 35 * GIB, free: FREE_SIZE - 4 * GIB })
    );
}

#[test]
fn a_guest_holding_strands_is_not_resized_by_cores() {
    // Goal: set-core on a guest holding part of a core is refused (ldm set-vcpu territory), not half-done.
    let mut s = t4_1("t4-1");
    add_domain(&mut s, guest_domain("ldom2", 5002));
    set_strands(&mut s, "ldom2", &[16, 17]);
    lay_out_after_primary(&mut s, &[("ldom2", 8 * GIB), ("", 55800 * MIB - 8 * GIB)]);
    assert_eq!(
        plan_resize(&s, "ldom2", &grow(Some(2), None), &none()),
        Err(ResizeError::NotWholeCores { domain: "ldom2".into() })
    );
    let memory_only = plan_resize(&s, "ldom2", &grow(None, Some(12 * GIB)), &none()).expect("memory still grows");
    assert_eq!(memory_only.add.memory.len(), 1);
}
