//! LM-08 and LM-09 through the whole preflight: the seed's two memory examples,
//! fragmentation, and placements that a naive first fit would miss.

mod common;

use common::*;
use tern_model::units::{GIB, MIB};
use tern_model::{Code, DomainKind, FitError, Range, Rule, Server, fit_memory};

/// The seed's source for its refused example: ldom1 with one 16G block.
fn source_with_one_16g_block() -> Server {
    let mut s = seed_source();
    lay_out_after_primary(&mut s, &[("ldom1", 16 * GIB), ("", 39416 * MIB)]);
    assert_valid(&s);
    s
}

/// A target whose free memory is `rows` after its control domain (`""` free, other
/// names bound to a neighbour `ldom2`).
fn target_with(rows: &[(&str, u64)]) -> Server {
    let mut t = seed_target();
    add_domain(&mut t, plain_domain("ldom2", DomainKind::Guest));
    lay_out_after_primary(&mut t, rows);
    assert_valid(&t);
    t
}

/// A source whose ldom1 has exactly `blocks`, in PA order.
fn source_with_blocks(blocks: &[u64]) -> Server {
    let mut s = seed_source();
    let rows: Vec<(&str, u64)> = blocks.iter().map(|&b| ("ldom1", b)).collect();
    lay_out_after_primary(&mut s, &rows);
    assert_valid(&s);
    s
}

#[test]
fn places_seed_guest_248m_and_16136m_into_55800m_free() {
    // Goal: the seed's possible migration: ldom1's 248M + 16136M fit m10-1-2's single
    // 55800M free range, block structure kept, 39416M left in one piece.
    let report = check(&seed_source(), &seed_target(), "ldom1");
    assert!(report.ok(), "{:#?}", report.errors);
    let b = report.binding.unwrap();
    assert_eq!(b.memory.iter().map(|r| r.size).collect::<Vec<_>>(), vec![248 * MIB, 16136 * MIB]);
    let free = Range::new(AFTER_PRIMARY_PA, 55800 * MIB);
    let fit = fit_memory(&[248 * MIB, 16136 * MIB], &[free]).unwrap();
    assert_eq!(fit.ranges, b.memory);
    assert_eq!(fit.largest_free_before, 55800 * MIB);
    assert_eq!(fit.largest_free_after, 39416 * MIB);
}

#[test]
fn refuses_guest_whose_block_needs_contiguous_16g() {
    // Goal: the seed's impossible migration: one 16G block into 20G free split as
    // 10G + 10G passes LM-08 but fails LM-09 with the exact message.
    let source = source_with_one_16g_block();
    let target = target_with(&[("", 10 * GIB), ("ldom2", 25088 * MIB), ("", 10 * GIB), ("ldom2", 10232 * MIB)]);
    let report = check(&source, &target, "ldom1");
    assert_eq!(error_ids(&report), vec![(Rule::Lm(9), Code::MemoryBlockFit)]);
    assert_eq!(
        report.errors[0].to_string(),
        "LM-09 m10-1-2 cannot hold ldom1's 16G block: largest free range 10G (20G free in 2 ranges)"
    );
    assert!(report.binding.is_none());
}

#[test]
fn refuses_blocks_that_fit_one_by_one_but_not_together() {
    // Goal: fragmentation: 24G free as 8G + 8G + 8G holds each of 6G + 6G + 6G + 6G
    // alone and in total, but not all four (each range takes one 6G block).
    let source = source_with_blocks(&[6 * GIB, 6 * GIB, 6 * GIB, 6 * GIB]);
    let target = target_with(&[
        ("", 8 * GIB),
        ("ldom2", GIB),
        ("", 8 * GIB),
        ("ldom2", GIB),
        ("", 8 * GIB),
        ("ldom2", 29176 * MIB),
    ]);
    let report = check(&source, &target, "ldom1");
    assert_eq!(error_ids(&report), vec![(Rule::Lm(9), Code::MemoryBlockFit)]);
    assert_eq!(
        report.errors[0].to_string(),
        "LM-09 m10-1-2 cannot hold ldom1's blocks 6G + 6G + 6G + 6G: largest free range 8G (24G free in 3 ranges)"
    );
}

#[test]
fn counts_adjacent_free_blocks_as_one_range() {
    // Goal: two free rows back to back (as ldm may list them) hold a block larger
    // than either row, and the binding that spans both rows can be bound.
    let source = source_with_one_16g_block();
    let mut target = target_with(&[("", 8 * GIB), ("", 8 * GIB), ("ldom2", 39416 * MIB)]);
    let report = check(&source, &target, "ldom1");
    assert!(report.ok(), "{:#?}", report.errors);
    let binding = report.binding.unwrap();
    assert_eq!(binding.memory, vec![Range::new(AFTER_PRIMARY_PA, 16 * GIB)]);
    let guest = source.domain("ldom1").unwrap().clone();
    target.bind_domain(guest, &binding).expect("a range over two free rows binds");
    assert_eq!(target.memory_of("ldom1"), binding.memory);
    assert_valid(&target);
}

#[test]
fn finds_a_fit_where_naive_first_fit_fails() {
    // Goal: LM-09 is exact: blocks 5G, 4G, 3G, 5G, 3G fit two 10G ranges only as
    // 5+5 | 4+3+3. First fit in the guest's order puts 5, 4 in the first range, 3, 5 in
    // the second and has no room for the last 3G.
    let blocks = [5 * GIB, 4 * GIB, 3 * GIB, 5 * GIB, 3 * GIB];
    assert!(first_fit(&blocks, &[10 * GIB, 10 * GIB]).is_none(), "the case must defeat first fit");
    let source = source_with_blocks(&blocks);
    let target = target_with(&[("", 10 * GIB), ("ldom2", 4 * GIB), ("", 10 * GIB), ("ldom2", 31224 * MIB)]);
    let report = check(&source, &target, "ldom1");
    assert!(report.ok(), "{:#?}", report.errors);
    let memory = report.binding.unwrap().memory;
    assert_eq!(memory.iter().map(|r| r.size).collect::<Vec<_>>(), blocks.to_vec());
    let free = target.free_ranges(&Default::default());
    assert_disjoint_inside(&memory, &free);
}

#[test]
fn finds_a_fit_where_first_fit_decreasing_fails() {
    // Goal: exact even against the usual heuristic: sorted largest first, 3G, 2G, 2G, 2G
    // go 3->4G range, 2->5G range, 2->5G range and the last 2G has no room; the fit
    // is 2+2 | 3+2.
    let g = GIB;
    let blocks = [2 * g, 3 * g, 2 * g, 2 * g];
    let caps = [4 * g, 5 * g];
    let mut sorted = blocks;
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert!(first_fit(&sorted, &caps).is_none(), "the case must defeat first-fit decreasing");
    let free = [Range::new(0x7e00_0000_0000, caps[0]), Range::new(0x7e00_0000_0000 + 8 * g, caps[1])];
    let fit = fit_memory(&blocks, &free).expect("2+2 | 3+2 fits");
    assert_eq!(fit.ranges.iter().map(|r| r.size).collect::<Vec<_>>(), blocks.to_vec());
    assert_disjoint_inside(&fit.ranges, &free);
}

#[test]
fn keeps_the_largest_free_range_whole_when_it_can() {
    // Goal: the preference: ldom1's 248M + 16136M go into 16G + 4G ranges, not into the
    // 32G range, which stays whole for the next guest.
    let target = target_with(&[
        ("", 32 * GIB),
        ("ldom2", GIB),
        ("", 4 * GIB),
        ("ldom2", GIB),
        ("", 16136 * MIB),
        ("ldom2", 752 * MIB),
    ]);
    let report = check(&seed_source(), &target, "ldom1");
    assert!(report.ok(), "{:#?}", report.errors);
    let memory = report.binding.unwrap().memory;
    let big = Range::new(AFTER_PRIMARY_PA, 32 * GIB);
    assert!(memory.iter().all(|r| !r.overlaps(&big)), "{memory:?}");
}

#[test]
fn does_not_place_blocks_in_reserved_memory() {
    // Goal: memory reserved for another migration is not free: the block goes around it,
    // and when the reservation leaves no room LM-09 fails.
    let source = source_with_one_16g_block();
    let target = seed_target();
    let mut reserved = tern_model::Reserved::default();
    reserved.memory.push(Range::new(AFTER_PRIMARY_PA + 12 * GIB, 4 * GIB));
    let report = check_with(&source, &target, "ldom1", None, &reserved);
    assert!(report.ok(), "{:#?}", report.errors);
    let memory = report.binding.unwrap().memory;
    assert!(!memory[0].overlaps(&reserved.memory[0]));

    // Now every free piece is at most 12G: 0-12G, 16-28G, 32-44G, 48G-54.5G.
    reserved.memory.push(Range::new(AFTER_PRIMARY_PA + 28 * GIB, 4 * GIB));
    reserved.memory.push(Range::new(AFTER_PRIMARY_PA + 44 * GIB, 4 * GIB));
    let report = check_with(&source, &target, "ldom1", None, &reserved);
    assert_eq!(error_ids(&report), vec![(Rule::Lm(9), Code::MemoryBlockFit)]);
}

#[test]
fn empty_free_list_fits_nothing_but_an_empty_guest() {
    // Goal: edge cases: no free memory refuses any block; no block always fits.
    assert_eq!(fit_memory(&[4 * MIB], &[]), Err(FitError::NoFit));
    let fit = fit_memory(&[], &[]).unwrap();
    assert!(fit.ranges.is_empty());
}

/// First fit in the given order over ranges of `caps`: the placement, or `None`.
fn first_fit(blocks: &[u64], caps: &[u64]) -> Option<Vec<usize>> {
    let mut left = caps.to_vec();
    blocks
        .iter()
        .map(|&b| {
            let i = left.iter().position(|&c| c >= b)?;
            left[i] -= b;
            Some(i)
        })
        .collect()
}

fn assert_disjoint_inside(memory: &[Range], free: &[Range]) {
    for (i, a) in memory.iter().enumerate() {
        assert!(free.iter().any(|f| f.contains(a)), "{a} is outside the free ranges {free:?}");
        for b in &memory[i + 1..] {
            assert!(!a.overlaps(b), "{a} overlaps {b}");
        }
    }
}
