//! Property tests of `fit_memory` (LM-09): every fit it returns is a valid placement
//! of the guest's blocks, and on small instances it answers exactly what an
//! exhaustive search answers.

mod common;

use common::brute;
use proptest::prelude::*;
use tern_model::fit::ALIGN;
use tern_model::units::MIB;
use tern_model::{FitError, Range, fit_memory};

const BASE_PA: u64 = 0x7e00_0000_0000;

/// Free ranges from (gap, size) pairs in granules, laid out upwards from `BASE_PA`;
/// `reverse` hands them over in descending PA order (fit_memory takes any order).
fn ranges_from(layout: &[(u64, u64)], reverse: bool) -> Vec<Range> {
    let mut pa = BASE_PA;
    let mut out: Vec<Range> = layout
        .iter()
        .map(|&(gap, size)| {
            pa += gap * ALIGN;
            let r = Range::new(pa, size * ALIGN);
            pa = r.end();
            r
        })
        .collect();
    if reverse {
        out.reverse();
    }
    out
}

/// Up to 5 ranges of 1..=32 granules (4M..128M), gaps of 0..=8 granules.
fn free_ranges() -> impl Strategy<Value = Vec<Range>> {
    (prop::collection::vec((0u64..=8, 1u64..=32), 1..=5), any::<bool>())
        .prop_map(|(layout, reverse)| ranges_from(&layout, reverse))
}

/// Up to 8 blocks of 1..=16 granules.
fn blocks() -> impl Strategy<Value = Vec<u64>> {
    prop::collection::vec((1u64..=16).prop_map(|g| g * ALIGN), 1..=8)
}

/// Checks a fit against its inputs; returns what is wrong, if anything.
fn placement_problem(blocks: &[u64], free: &[Range], placed: &[Range]) -> Option<String> {
    if placed.len() != blocks.len() {
        return Some(format!("{} ranges for {} blocks", placed.len(), blocks.len()));
    }
    for (i, (r, &b)) in placed.iter().zip(blocks).enumerate() {
        if r.size != b {
            return Some(format!("block {i} is {b} bytes but was given {r}"));
        }
        if r.pa % ALIGN != 0 {
            return Some(format!("block {i} at {r} is not on a 4M boundary"));
        }
        if !free.iter().any(|f| f.contains(r)) {
            return Some(format!("block {i} at {r} is outside every free range"));
        }
        if let Some(j) = placed[i + 1..].iter().position(|o| o.overlaps(r)) {
            return Some(format!("block {i} at {r} overlaps block {}", i + 1 + j));
        }
    }
    None
}

/// fit_memory finds a valid fit exactly when exhaustive search says one exists.
fn agrees_with_exhaustive_search(blocks: &[u64], free: &[Range]) -> Result<(), TestCaseError> {
    let expected = brute::fits(blocks, free);
    match fit_memory(blocks, free) {
        Ok(fit) => {
            prop_assert!(expected, "fit_memory placed what exhaustive search cannot: {:?}", fit.ranges);
            prop_assert_eq!(placement_problem(blocks, free, &fit.ranges), None);
        }
        Err(FitError::NoFit) => prop_assert!(!expected, "a fit exists but fit_memory said NoFit"),
        Err(e) => prop_assert!(false, "small instance gave {:?}", e),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn fit_memory_answers_exactly_as_exhaustive_search(blocks in blocks(), free in free_ranges()) {
        // Goal: exactness: fit_memory finds a fit whenever one exists and only then.
        agrees_with_exhaustive_search(&blocks, &free)?;
    }

    #[test]
    fn fit_memory_keeps_the_largest_range_whole_when_a_fit_allows(
        blocks in blocks(),
        free in free_ranges(),
    ) {
        // Goal: the documented preference: if the blocks fit without the largest free
        // range, the largest free range is still there afterwards.
        let largest = free.iter().map(|r| r.size).max().unwrap();
        let li = free.iter().position(|r| r.size == largest).unwrap();
        let others: Vec<Range> = free.iter().enumerate().filter(|&(i, _)| i != li).map(|(_, r)| *r).collect();
        if let Ok(fit) = fit_memory(&blocks, &free) {
            prop_assert_eq!(fit.largest_free_before, largest);
            let after = tern_model::server::subtract_ranges(&free, &fit.ranges);
            prop_assert_eq!(fit.largest_free_after, after.iter().map(|r| r.size).max().unwrap_or(0));
            if brute::fits(&blocks, &others) {
                prop_assert_eq!(fit.largest_free_after, largest);
            }
        }
    }

    #[test]
    fn fit_memory_trims_unaligned_ranges_and_rounds_blocks_to_the_granule(
        layout in prop::collection::vec((0u64..=40, 1u64..=160, 0u64..4 * MIB), 1..=5),
        sizes_mib in prop::collection::vec(1u64..=64, 1..=6),
    ) {
        // Goal: with PAs and sizes off the 4M granule, every block still starts on a
        // granule, lies inside a free range, and the answer matches exhaustive search
        // over the granule-trimmed ranges.
        let mut pa = BASE_PA + 1;
        let free: Vec<Range> = layout
            .iter()
            .map(|&(gap_mib, size_mib, jitter)| {
                pa += gap_mib * MIB + jitter;
                let r = Range::new(pa, size_mib * MIB);
                pa = r.end();
                r
            })
            .collect();
        let blocks: Vec<u64> = sizes_mib.iter().map(|m| m * MIB).collect();
        let expected = brute::fits(&blocks, &free);
        match fit_memory(&blocks, &free) {
            Ok(fit) => {
                prop_assert!(expected);
                prop_assert_eq!(placement_problem(&blocks, &free, &fit.ranges), None);
                // Rounded-up blocks do not overlap either: each owns whole granules.
                for (i, a) in fit.ranges.iter().enumerate() {
                    let a = Range::new(a.pa, a.size.div_ceil(ALIGN) * ALIGN);
                    prop_assert!(free.iter().any(|f| f.contains(&a)), "granules of block {} leave the free range", i);
                    for b in &fit.ranges[i + 1..] {
                        prop_assert!(!a.overlaps(b));
                    }
                }
            }
            Err(FitError::NoFit) => prop_assert!(!expected),
            Err(e) => prop_assert!(false, "small instance gave {:?}", e),
        }
    }

    #[test]
    fn fit_memory_is_deterministic(blocks in blocks(), free in free_ranges()) {
        // Goal: every Raft member computes the same placement from the same inputs.
        prop_assert_eq!(fit_memory(&blocks, &free), fit_memory(&blocks, &free));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn fit_memory_answers_exactly_as_exhaustive_search_with_more_blocks(
        blocks in prop::collection::vec((1u64..=24).prop_map(|g| g * ALIGN), 9..=brute::BLOCKS_MAX - 1),
        layout in prop::collection::vec((0u64..=8, 1u64..=64), 1..=6),
        reverse in any::<bool>(),
    ) {
        // Goal: exactness past the easy sizes, where sets of several blocks per range
        // and the subset-sum pruning come into play.
        let free = ranges_from(&layout, reverse);
        agrees_with_exhaustive_search(&blocks, &free)?;
    }

    #[test]
    fn fit_memory_never_refuses_a_planted_fit(
        seed in any::<u64>(),
        ranges in 1usize..=16,
        per_range in 1u64..=3,
        spare in 0u64..=16,
        decoys in prop::collection::vec((0u64..=8, 1u64..=64), 0..=4),
    ) {
        // Goal: soundness at sizes brute force cannot reach (up to 48 blocks): when a
        // fit is known to exist, the answer is a valid placement (or, at worst,
        // undecided), never NoFit.
        let (blocks, mut free) = tiling(seed, ranges, per_range, spare);
        let end = free.iter().map(|r| r.end()).max().unwrap_or(BASE_PA);
        let mut pa = end;
        for &(gap, size) in &decoys {
            pa += (1 + gap) * ALIGN;
            free.push(Range::new(pa, size * ALIGN));
            pa += size * ALIGN;
        }
        match fit_memory(&blocks, &free) {
            Ok(fit) => prop_assert_eq!(placement_problem(&blocks, &free, &fit.ranges), None),
            Err(FitError::NoFit) => prop_assert!(false, "a fit exists but fit_memory said NoFit"),
            Err(FitError::SearchLimit { .. }) => {}
        }
    }
}

#[test]
fn exhaustive_search_reference_agrees_with_hand_cases() {
    // Goal: the reference itself is right on cases worked by hand.
    let g = 1024 * MIB;
    let two_tens = [Range::new(0, 10 * g), Range::new(20 * g, 10 * g)];
    assert!(!brute::fits(&[16 * g], &two_tens));
    assert!(brute::fits(&[5 * g, 4 * g, 3 * g, 5 * g, 3 * g], &two_tens));
    assert!(!brute::fits(&[5 * g, 4 * g, 3 * g, 5 * g, 4 * g], &two_tens));
    assert!(brute::fits(&[], &[]));
    // Unaligned: [1M, 9M) offers only [4M, 8M).
    assert!(!brute::fits(&[8 * MIB], &[Range::new(MIB, 8 * MIB)]));
    assert!(brute::fits(&[3 * MIB], &[Range::new(MIB, 8 * MIB)]));
}

/// A tiling from `seed`: `ranges` free ranges of 128M..16G (plus up to `spare`
/// granules each), each exactly the sum of `per_range` of the returned blocks plus
/// its spare, the blocks shuffled. A fit exists; with no spare it uses every byte of
/// free memory, the hardest case for the search.
fn tiling(seed: u64, ranges: usize, per_range: u64, spare: u64) -> (Vec<u64>, Vec<Range>) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut below = |n: u64| {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    };
    // The spare comes from its own stream, so that spare 0 draws the same tilings.
    let mut spare_state = (seed + 1000).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut spare_below = |n: u64| {
        spare_state ^= spare_state >> 12;
        spare_state ^= spare_state << 25;
        spare_state ^= spare_state >> 27;
        spare_state.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    };
    let (mut blocks, mut free) = (Vec::new(), Vec::new());
    let mut pa = BASE_PA;
    for _ in 0..ranges {
        let granules = 32 + below(4096);
        let size = granules + if spare > 0 { spare_below(spare + 1) } else { 0 };
        free.push(Range::new(pa, size * ALIGN));
        pa += (size + 1 + below(64)) * ALIGN;
        let mut left = granules;
        for p in 0..per_range {
            let later = per_range - p - 1;
            let take = if later == 0 { left } else { 1 + below(left - later) };
            blocks.push(take * ALIGN);
            left -= take;
        }
    }
    for i in (1..blocks.len()).rev() {
        blocks.swap(i, below(i as u64 + 1) as usize);
    }
    (blocks, free)
}

/// A perfect tiling: every range exactly the sum of two blocks.
fn perfect_tiling(seed: u64, ranges: usize) -> (Vec<u64>, Vec<Range>) {
    tiling(seed, ranges, 2, 0)
}

#[test]
fn finds_perfect_tilings_of_16_blocks() {
    // Goal: exactness on the tightest inputs: 16 blocks that fill 8 ranges to the
    // last byte are always placed.
    for seed in 1..=5 {
        let (blocks, free) = perfect_tiling(seed, 8);
        let fit = fit_memory(&blocks, &free).unwrap_or_else(|e| panic!("seed {seed}: {e:?}"));
        assert_eq!(placement_problem(&blocks, &free, &fit.ranges), None, "seed {seed}");
        assert_eq!(fit.largest_free_after, 0, "seed {seed}: every byte is used");
    }
}

#[test]
fn decides_perfect_tilings_of_32_and_64_blocks() {
    // Goal: the documented bound: perfect tilings of 32 and 64 blocks (16 and 32
    // ranges filled to the last byte) are placed, not left undecided at
    // SEARCH_NODES_MAX. Seed 4 of 64 blocks is the slowest, ~12 ms in a release build.
    for ranges in [16, 32] {
        for seed in 1..=8 {
            let (blocks, free) = perfect_tiling(seed, ranges);
            let fit = fit_memory(&blocks, &free).unwrap_or_else(|e| panic!("{ranges} ranges, seed {seed}: {e:?}"));
            assert_eq!(placement_problem(&blocks, &free, &fit.ranges), None, "{ranges} ranges, seed {seed}");
            assert_eq!(fit.largest_free_after, 0, "{ranges} ranges, seed {seed}: every byte is used");
        }
    }
}

#[test]
fn decides_tight_packings_of_about_32_blocks_of_every_shape() {
    // Goal: up to 32 blocks the answer does not depend on luck in the shape: 2, 3 or
    // 4 blocks per range, no spare or a few spare granules per range, are all placed.
    for (ranges, per_range) in [(16, 2), (11, 3), (8, 4)] {
        for spare in [0, 1, 4] {
            for seed in 1..=5 {
                let (blocks, free) = tiling(seed, ranges, per_range, spare);
                let case = format!("{ranges} ranges of {per_range} blocks, spare {spare}, seed {seed}");
                let fit = fit_memory(&blocks, &free).unwrap_or_else(|e| panic!("{case}: {e:?}"));
                assert_eq!(placement_problem(&blocks, &free, &fit.ranges), None, "{case}");
            }
        }
    }
}

#[test]
fn proves_no_fit_when_a_tight_range_cannot_be_filled() {
    // Goal: "no fit" is decided on tight inputs too, not only "fits": 64 blocks of an
    // even number of granules cannot fill a range of an odd number, and with no
    // spare every range must be filled exactly.
    let (blocks, free) = perfect_tiling(3, 32);
    let blocks: Vec<u64> = blocks.iter().map(|b| 2 * b).collect();
    let mut layout: Vec<(u64, u64)> = free.iter().map(|r| (1, 2 * r.size / ALIGN)).collect();
    layout[0].1 += 1;
    layout[1].1 -= 1;
    let free = ranges_from(&layout, false);
    assert_eq!(
        free.iter().map(|r| r.size).sum::<u64>(),
        blocks.iter().sum::<u64>(),
        "the total still matches to the byte"
    );
    assert_eq!(fit_memory(&blocks, &free), Err(FitError::NoFit));
}

#[test]
fn never_refuses_a_tight_packing_beyond_the_bound() {
    // Goal: beyond the bound (more than EXACT_BLOCKS_MAX blocks) the answer is
    // "undecided", never a false NoFit: 96 blocks tiling 48 ranges exactly either fit
    // or hit SEARCH_NODES_MAX. (Today this seed hits the limit, so the test runs the
    // item-by-item search to its end: ~3 s in a debug build.)
    let (blocks, free) = perfect_tiling(1, 48);
    assert!(blocks.len() > tern_model::fit::EXACT_BLOCKS_MAX);
    match fit_memory(&blocks, &free) {
        Ok(fit) => assert_eq!(placement_problem(&blocks, &free, &fit.ranges), None),
        Err(FitError::SearchLimit { nodes }) => assert_eq!(nodes, tern_model::fit::SEARCH_NODES_MAX),
        Err(FitError::NoFit) => panic!("a tiling exists but fit_memory said NoFit"),
    }
}
