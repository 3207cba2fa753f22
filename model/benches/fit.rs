//! Benchmark of LM-09 memory fitting: 16, 64 and 256 guest blocks into a fragmented
//! 4 TB server.
//!
//! The server's memory is laid out from a fixed seed: free ranges of 128M..64G
//! between bound ranges of 128M..16G (log-uniform), until 4 TiB is described. Each guest's blocks
//! are cut from a random selection of those free ranges (one to three blocks per
//! range, using 50-100% of it) and then shuffled, so a fit is known to exist but is
//! not the guest's order. Each case asserts once, outside the timed loop, that
//! `fit_memory` finds it.
//!
//! A second group times the hardest inputs for the search, perfect tilings: 16 and
//! 32 free ranges of 128M..16G, each exactly the sum of two of the guest's 32 or 64
//! blocks (shuffled), so a fit exists and uses every byte of free memory.
//!
//! Run: `cargo bench -p tern-model --bench fit`

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use tern_model::fit::ALIGN;
use tern_model::units::{MIB, Size, TIB};
use tern_model::{Range, fit_memory};

/// The seed every layout and guest is drawn from.
const SEED: u64 = 0x7e06_6080_0000_5001;
const SERVER_BYTES: u64 = 4 * TIB;
const BASE_PA: u64 = 0x7e00_0000_0000;
const BLOCK_COUNTS: [usize; 3] = [16, 64, 256];

/// xorshift64*: small, fast and the same on every machine.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant here.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A size in whole 4M granules, log-uniform from `min_mib` up to 2^`doublings` times it.
    fn size(&mut self, min_mib: u64, doublings: u64) -> u64 {
        let low = min_mib << self.below(doublings + 1);
        let bytes = (low + self.below(low)) * MIB;
        bytes / ALIGN * ALIGN
    }

    fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            v.swap(i, j);
        }
    }
}

/// The free ranges of a fragmented 4 TiB server, in PA order.
fn fragmented_server(rng: &mut XorShift) -> Vec<Range> {
    let end = BASE_PA + SERVER_BYTES;
    let mut free = Vec::new();
    let mut pa = BASE_PA;
    while pa < end {
        pa = (pa + rng.size(128, 6)).min(end); // bound: 128M..16G
        let size = rng.size(128, 8).min(end - pa); // free: 128M..64G
        if size > 0 {
            free.push(Range::new(pa, size));
        }
        pa += size;
    }
    free
}

/// `count` guest blocks cut from distinct free ranges (1..=3 blocks each), shuffled.
fn guest_blocks(rng: &mut XorShift, free: &[Range], count: usize) -> Vec<u64> {
    let mut order: Vec<usize> = (0..free.len()).collect();
    rng.shuffle(&mut order);
    let mut blocks = Vec::with_capacity(count);
    for i in order {
        if blocks.len() == count {
            break;
        }
        let granules = free[i].size / ALIGN;
        let used = granules / 2 + rng.below(granules / 2 + 1); // 50..100% of the range
        let pieces = (1 + rng.below(3)).min(used).min((count - blocks.len()) as u64);
        let mut left = used;
        for p in 0..pieces {
            let take = if p + 1 == pieces { left } else { 1 + rng.below(left - (pieces - p - 1)) };
            blocks.push(take * ALIGN);
            left -= take;
        }
    }
    assert_eq!(blocks.len(), count, "the server has too few free ranges for {count} blocks");
    rng.shuffle(&mut blocks);
    blocks
}

fn bench_fit(c: &mut Criterion) {
    let mut rng = XorShift(SEED);
    let free = fragmented_server(&mut rng);
    let free_bytes: u64 = free.iter().map(|r| r.size).sum();
    let largest = free.iter().map(|r| r.size).max().unwrap_or(0);
    eprintln!(
        "server: {} in {} free ranges of {}, largest {}",
        Size(free_bytes),
        free.len(),
        Size(SERVER_BYTES),
        Size(largest)
    );
    let mut group = c.benchmark_group("fit_memory_4tb");
    for count in BLOCK_COUNTS {
        let blocks = guest_blocks(&mut rng, &free, count);
        let fit = fit_memory(&blocks, &free).unwrap_or_else(|e| panic!("{count} blocks: no fit found: {e:?}"));
        assert_eq!(fit.ranges.len(), count);
        eprintln!(
            "{count} blocks: guest {}, largest free range after {}",
            Size(blocks.iter().sum()),
            Size(fit.largest_free_after)
        );
        group.bench_with_input(BenchmarkId::from_parameter(count), &blocks, |b, blocks| {
            b.iter(|| fit_memory(black_box(blocks), black_box(&free)))
        });
    }
    group.finish();
}

/// A perfect tiling: `ranges` free ranges of 128M..16G, each exactly the sum of two
/// of the returned blocks, the blocks shuffled.
fn perfect_tiling(rng: &mut XorShift, ranges: usize) -> (Vec<u64>, Vec<Range>) {
    let (mut blocks, mut free) = (Vec::new(), Vec::new());
    let mut pa = BASE_PA;
    for _ in 0..ranges {
        let granules = 32 + rng.below(4096);
        free.push(Range::new(pa, granules * ALIGN));
        pa += (granules + 1 + rng.below(64)) * ALIGN;
        let first = 1 + rng.below(granules - 1);
        blocks.push(first * ALIGN);
        blocks.push((granules - first) * ALIGN);
    }
    rng.shuffle(&mut blocks);
    (blocks, free)
}

fn bench_tight(c: &mut Criterion) {
    let mut rng = XorShift(SEED ^ 0x7167_7167);
    let mut group = c.benchmark_group("fit_memory_tight");
    for count in [32, 64] {
        let (blocks, free) = perfect_tiling(&mut rng, count / 2);
        let fit =
            fit_memory(&blocks, &free).unwrap_or_else(|e| panic!("tiling of {count} blocks: no fit found: {e:?}"));
        assert_eq!(fit.largest_free_after, 0);
        group.bench_with_input(BenchmarkId::from_parameter(count), &blocks, |b, blocks| {
            b.iter(|| fit_memory(black_box(blocks), black_box(&free)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_fit, bench_tight);
criterion_main!(benches);
