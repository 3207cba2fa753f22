//! The reference answer for LM-09: does a list of blocks fit a list of free ranges?
//!
//! It applies the granule of `tern_model::fit` (4 MiB: ranges trimmed inward, blocks
//! rounded up) and then tries every assignment of blocks to ranges, by dynamic
//! programming over subsets of blocks: for each range in turn, every set of blocks
//! placed so far is extended by every subset of the rest whose sizes fit in it. A
//! subset fits in a range exactly when its granules add up to at most the range,
//! because blocks are laid back to back. Cost: ranges x 3^blocks, so keep blocks few.

use tern_model::Range;
use tern_model::fit::ALIGN;

/// The most blocks the reference accepts (3^12 steps per range).
pub const BLOCKS_MAX: usize = 12;

fn usable(r: &Range) -> u64 {
    let start = r.pa.div_ceil(ALIGN) * ALIGN;
    let end = r.end() / ALIGN * ALIGN;
    end.saturating_sub(start)
}

/// Whether `blocks` fit `free`, by exhaustive search.
pub fn fits(blocks: &[u64], free: &[Range]) -> bool {
    assert!(blocks.len() <= BLOCKS_MAX, "the reference is exponential in blocks");
    let n = blocks.len();
    let full = (1usize << n) - 1;
    let items: Vec<u64> = blocks.iter().map(|b| b.div_ceil(ALIGN) * ALIGN).collect();
    let sum: Vec<u64> = (0..=full).map(|mask| (0..n).filter(|i| mask >> i & 1 == 1).map(|i| items[i]).sum()).collect();
    let mut reachable = vec![false; full + 1];
    reachable[0] = true;
    for cap in free.iter().map(usable) {
        let mut next = reachable.clone();
        for mask in (0..=full).filter(|&m| reachable[m]) {
            let rest = full & !mask;
            let mut sub = rest;
            loop {
                if sum[sub] <= cap {
                    next[mask | sub] = true;
                }
                if sub == 0 {
                    break;
                }
                sub = (sub - 1) & rest;
            }
        }
        reachable = next;
        if reachable[full] {
            return true;
        }
    }
    reachable[full]
}
