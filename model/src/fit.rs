//! Memory fitting (LM-09): concrete PA ranges on a target for each of a guest's
//! memory blocks, keeping the block structure.
//!
//! # The problem
//! A guest's memory is a list of blocks; after a migration it must be the same list
//! of sizes, each block one contiguous range of the target's free memory. Total free
//! memory is not enough (the seed's 16 GB block cannot go into 10 GB + 10 GB). This
//! is bin packing: free ranges are bins, blocks are items.
//!
//! # Alignment
//! Every block starts on a [`ALIGN`] (4 MiB) boundary and consumes a whole number of
//! granules. 4 MiB is the granule in which Oracle VM Server for SPARC binds memory of
//! bound and inactive domains (the sun4v 4 MiB page), and every PA and size in the
//! seed's `list-devices` tables is a multiple of it. Free ranges are trimmed inward to
//! the granule, so blocks packed one after another from a range's start never need
//! padding: the capacity a range offers is exactly what its blocks use.
//!
//! # Exactness and its bound
//! Both searches below are exact: every pruning they use is proven never to discard
//! a fit, so an answer of "fits" is a valid placement and an answer of "no fit" is a
//! proof. What is bounded is the work: [`SEARCH_NODES_MAX`] search steps per pass. A
//! search that exhausts it answers [`FitError::SearchLimit`]: the caller is told that
//! nothing was proven, never a wrong "fits" or "does not fit".
//!
//! - Up to [`EXACT_BLOCKS_MAX`] (64) blocks: bin completion (Korf), described at
//!   `BinCompletion`: the free ranges are filled one at a time, smallest first, each
//!   with a whole set of blocks, pruned by waste, size-class, subset-sum and
//!   dominance bounds, and memoised exactly on (range, 64-bit mask of blocks left).
//!   Measured (release build; `model/tests/fit_properties.rs` pins the first three):
//!   it agrees with brute force on every random case tried of up to 12 blocks
//!   (property tests, and 20 000 more while it was built); it decides perfect
//!   tilings of 32 and 64 blocks (every range filled to the byte by two of the
//!   guest's blocks; 100 of 100 seeds each, at most 0.06 ms and 20 ms); it decides
//!   tight and near-tight packings of about 32 blocks of every shape tried (2, 3 or
//!   4 blocks per range, 0 to 32 granules of spare per range; at most about 20 ms);
//!   and it decided all of 2600 random instances of 12 to 64 blocks whose free space
//!   exceeds the guest by 0-30% (at most about 40 ms). Not decided within the
//!   budget, answering `SearchLimit` after about 0.1 s: many tight packings of 48 to
//!   64 blocks with three blocks per range, and near-tight ones (a few granules of
//!   spare per range) with two; at 64 blocks, most such seeds.
//! - Beyond 64 blocks: the item-by-item search, a depth-first assignment of blocks
//!   (largest first, best fit) whose failed states (blocks placed, multiset of
//!   remaining range sizes) are memoised under a 128-bit order-independent hash (a
//!   false "already failed" needs a 128-bit collision). It is quick when there is room
//!   to spare (the benchmark's 256 blocks in a fragmented 4 TB server) but answers
//!   `SearchLimit` on tight packings from about 32 blocks on. Guests have 1..32
//!   blocks in practice.
//!
//! # Preference
//! Among fits, one that leaves the largest free range untouched is taken whenever one
//! exists (it is searched first, without that range). Within a search blocks go to
//! small ranges first: bin completion fills the smallest ranges first, each with the
//! largest blocks it can take; the item-by-item search gives each block the smallest
//! range that can take it (best fit). Either way large ranges stay whole for later
//! guests.

use crate::units::{MIB, Range};
use std::collections::HashSet;

/// The memory granule: block starts and sizes are multiples of it.
pub const ALIGN: u64 = 4 * MIB;
/// The most search steps one pass of a fit may take before giving up without an
/// answer (states visited, sets extended, and subset-sum table work in 64-word units).
pub const SEARCH_NODES_MAX: u64 = 2_000_000;
/// Guests with at most this many blocks are fitted by bin completion (see the module
/// documentation); larger ones by the item-by-item search.
pub const EXACT_BLOCKS_MAX: usize = 64;

/// A successful fit: `ranges[i]` is where the guest's block `i` goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryFit {
    pub ranges: Vec<Range>,
    /// The largest contiguous free range before and after the placement.
    pub largest_free_before: u64,
    pub largest_free_after: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FitError {
    /// No placement exists.
    NoFit,
    /// The search took [`SEARCH_NODES_MAX`] steps without an answer.
    SearchLimit { nodes: u64 },
}

fn align_up(x: u64) -> Option<u64> {
    x.checked_add(ALIGN - 1).map(|v| v / ALIGN * ALIGN)
}

fn align_down(x: u64) -> u64 {
    x / ALIGN * ALIGN
}

/// The part of a free range that blocks can use: both ends trimmed to [`ALIGN`].
pub(crate) fn usable(r: &Range) -> Option<Range> {
    let start = align_up(r.pa)?;
    let end = align_down(r.end());
    (end > start).then(|| Range::new(start, end - start))
}

/// The space a block of `size` bytes consumes: whole granules.
pub fn granules(size: u64) -> u64 {
    align_up(size).unwrap_or(u64::MAX)
}

/// Places every block of `blocks` (sizes in bytes, guest order) into `free`
/// (disjoint free ranges, any order). Pure and deterministic.
pub fn fit_memory(blocks: &[u64], free: &[Range]) -> Result<MemoryFit, FitError> {
    let bins: Vec<Range> = free.iter().filter_map(usable).collect();
    let largest_free_before = free.iter().map(|r| r.size).max().unwrap_or(0);
    if blocks.is_empty() {
        return Ok(MemoryFit { ranges: vec![], largest_free_before, largest_free_after: largest_free_before });
    }
    // First choice: a fit that leaves the largest range whole.
    let largest = (0..bins.len()).max_by_key(|&i| (bins[i].size, std::cmp::Reverse(bins[i].pa)));
    let mut result = Err(FitError::NoFit);
    if let Some(li) = largest {
        let without: Vec<Range> = bins.iter().enumerate().filter_map(|(i, b)| (i != li).then_some(*b)).collect();
        result = search(blocks, &without, &mut 0);
    }
    if result.is_err() {
        result = search(blocks, &bins, &mut 0);
    }
    let ranges = result?;
    let after = crate::server::subtract_ranges(free, &ranges);
    let largest_free_after = after.iter().map(|r| r.size).max().unwrap_or(0);
    Ok(MemoryFit { ranges, largest_free_before, largest_free_after })
}

/// The exact search over `bins`: bin completion up to [`EXACT_BLOCKS_MAX`] blocks,
/// the item-by-item search beyond.
fn search(blocks: &[u64], bins: &[Range], nodes: &mut u64) -> Result<Vec<Range>, FitError> {
    // Largest first; the sort is stable, so equal sizes stay in guest order.
    let mut order: Vec<usize> = (0..blocks.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(granules(blocks[i])));
    let items: Vec<u64> = order.iter().map(|&i| granules(blocks[i])).collect();
    let assign = if items.len() <= EXACT_BLOCKS_MAX {
        BinCompletion::run(&items, bins, nodes)?
    } else {
        ItemSearch::run(&items, bins, nodes)?
    };
    let Some(assign) = assign else {
        return Err(FitError::NoFit);
    };
    // Lay the blocks out from each range's start in the guest's own block order, so
    // blocks that share a range keep their relative PA order.
    let mut bin_of = vec![0usize; blocks.len()];
    for (k, &bin) in assign.iter().enumerate() {
        bin_of[order[k]] = bin;
    }
    let mut cursor: Vec<u64> = bins.iter().map(|r| r.pa).collect();
    let mut out = Vec::with_capacity(blocks.len());
    for (i, &size) in blocks.iter().enumerate() {
        let bin = bin_of[i];
        out.push(Range::new(cursor[bin], size));
        cursor[bin] += granules(size);
    }
    Ok(out)
}

/// Counts one search step against [`SEARCH_NODES_MAX`].
fn tick(nodes: &mut u64) -> Result<(), FitError> {
    tick_n(nodes, 1)
}

/// Counts `n` search steps against [`SEARCH_NODES_MAX`].
fn tick_n(nodes: &mut u64, n: u64) -> Result<(), FitError> {
    *nodes = nodes.saturating_add(n);
    if *nodes > SEARCH_NODES_MAX {
        *nodes = SEARCH_NODES_MAX;
        return Err(FitError::SearchLimit { nodes: SEARCH_NODES_MAX });
    }
    Ok(())
}

/// Bin completion (Korf's search, with Martello and Toth's dominance) for up to
/// [`EXACT_BLOCKS_MAX`] blocks. The free ranges are filled one at a time, smallest
/// first; each is given a whole set of the blocks left, and every set it could take
/// is tried, so no fit is missed. Ranges too small for every block left stay empty.
///
/// A range's set is *maximal*: no block left over would still fit beside it. Any fit
/// can be turned into one with maximal sets (move the block into the range; its old
/// range only loses it), so searching maximal sets alone misses no fit. Sets are
/// built largest blocks first; when the subset-sum tables exist they are tried in
/// bands of the room they leave, fullest first (Korf orders completions by fill).
///
/// Prunings that never discard a fit:
/// - waste: space a range leaves empty is lost for good, and the total loss may not
///   exceed the slack (the space of the ranges left minus the blocks left);
/// - size classes: for every block size `s`, the blocks of size `s` or more must fit
///   in total into the ranges left of at least `s`;
/// - subset sums (when the slack is small): each range left can be filled only up to
///   the largest sum of blocks left that it holds, and these least wastes together
///   may not exceed the slack; every block left needs a range whose room beside it
///   can be filled so; a set being built must be completable so (see [`Sums`]);
/// - dominance: a set is skipped when a block left out could replace one or two of
///   its blocks of no greater total and still fit (see [`BinCompletion::dominated`]);
/// - symmetry: equal blocks are interchangeable: a set takes a number of blocks of
///   each size, always the first ones left;
/// - memo: the state is exactly (the next range, the blocks left as a 64-bit mask),
///   and a state that failed is not searched again.
struct BinCompletion<'a> {
    /// Distinct block sizes, descending; `first[g]` is where size class `g` starts in
    /// the sorted items and `count[g]` how many it has.
    sizes: Vec<u64>,
    first: Vec<usize>,
    count: Vec<usize>,
    /// Blocks of each class not placed yet: always the last `left[g]` of the class.
    left: Vec<usize>,
    /// Range capacities ascending (ties by PA); `bin[r]` is the index into the caller's
    /// ranges and `caps_from[r]` the total of `caps[r..]`.
    caps: Vec<u64>,
    bin: Vec<usize>,
    caps_from: Vec<u64>,
    /// The unit of the subset-sum tables: the greatest common divisor of the range
    /// sizes and of the block sizes that fit a range (a multiple of [`ALIGN`]).
    unit: u64,
    failed: HashSet<(usize, u64)>,
    /// The set being built for the current range: `(class, how many)` from
    /// `set[set_base..]` (the entries below belong to earlier ranges on the path).
    set: Vec<(usize, usize)>,
    set_base: usize,
    /// Per sorted item, its range (an index into `caps`) on the current path.
    assign: Vec<usize>,
    nodes: &'a mut u64,
}

/// The most words (64 sums each) of one subset-sum table: 64 KiB. With 65 rows a
/// table reaches 126 x 64 units (about 31 GiB in 4 MiB units); ranges above its top
/// are not pruned by subset sums.
const SUMS_WORDS_MAX: usize = 1 << 13;

/// Subset sums of the blocks left, for every suffix of the size classes: row `g`
/// has bit `x` set when some of the blocks left in classes `g..` add up to `x` units.
struct Sums {
    words: usize,
    /// The largest sum the rows hold, in units.
    top: u64,
    unit: u64,
    rows: Vec<u64>,
}

impl Sums {
    /// The least room the blocks of classes `g..` can leave in `room` bytes, if it is
    /// at most `most` bytes (`None` otherwise); 0 when the table does not reach `room`.
    fn least_room(&self, g: usize, room: u64, most: u64) -> Option<u64> {
        let hi = room / self.unit;
        if hi > self.top {
            return Some(0);
        }
        let lo = room.saturating_sub(most).div_ceil(self.unit);
        if lo > hi {
            return None;
        }
        let row = &self.rows[g * self.words..(g + 1) * self.words];
        let (lo, hi) = (lo as usize, hi as usize);
        for w in (lo / 64..=hi / 64).rev() {
            let mut bits = row[w];
            if w == hi / 64 {
                bits &= u64::MAX >> (63 - hi % 64);
            }
            if w == lo / 64 {
                bits &= u64::MAX << (lo % 64);
            }
            if bits != 0 {
                let sum = (w * 64 + 63 - bits.leading_zeros() as usize) as u64;
                return Some(room - sum * self.unit);
            }
        }
        None
    }

    /// Whether the blocks of classes `g..` can fill `room` bytes to within `most`.
    fn fills(&self, g: usize, room: u64, most: u64) -> bool {
        room <= most || self.reaches(g, room - most, room)
    }

    /// Whether some of the blocks of classes `g..` add up to between `lo` and `hi`
    /// bytes. Conservative: true when the table does not reach `hi`.
    fn reaches(&self, g: usize, lo: u64, hi: u64) -> bool {
        let (lo, hi) = (lo.div_ceil(self.unit), hi / self.unit);
        if hi > self.top {
            return true;
        }
        if lo > hi {
            return false;
        }
        let row = &self.rows[g * self.words..(g + 1) * self.words];
        let (lo, hi) = (lo as usize, hi as usize);
        (lo / 64..=hi / 64).any(|w| {
            let mut bits = row[w];
            if w == hi / 64 {
                bits &= u64::MAX >> (63 - hi % 64);
            }
            if w == lo / 64 {
                bits &= u64::MAX << (lo % 64);
            }
            bits != 0
        })
    }
}

impl BinCompletion<'_> {
    /// The range of each item (`items` sorted descending), `None` when none exists.
    fn run(items: &[u64], bins: &[Range], nodes: &mut u64) -> Result<Option<Vec<usize>>, FitError> {
        debug_assert!(items.len() <= EXACT_BLOCKS_MAX);
        if items.is_empty() {
            return Ok(Some(vec![]));
        }
        let (mut sizes, mut first, mut count) = (Vec::new(), Vec::new(), Vec::<usize>::new());
        for (i, &size) in items.iter().enumerate() {
            if sizes.last() == Some(&size) {
                *count.last_mut().unwrap() += 1;
            } else {
                sizes.push(size);
                first.push(i);
                count.push(1);
            }
        }
        let mut bin: Vec<usize> = (0..bins.len()).collect();
        bin.sort_by_key(|&b| (bins[b].size, bins[b].pa));
        let caps: Vec<u64> = bin.iter().map(|&b| bins[b].size).collect();
        let mut caps_from = vec![0u64; caps.len() + 1];
        for r in (0..caps.len()).rev() {
            caps_from[r] = caps_from[r + 1].saturating_add(caps[r]);
        }
        // Blocks that fit somewhere are whole granules, as are ranges, so the unit is
        // a multiple of ALIGN (blocks too big for every range never enter a table).
        let largest = caps.last().copied().unwrap_or(0);
        let unit = match sizes.iter().filter(|&&b| b <= largest).chain(&caps).fold(0, |a, &b| gcd(a, b)) {
            0 => ALIGN,
            u => u,
        };
        let mut s = BinCompletion {
            left: count.clone(),
            sizes,
            first,
            count,
            caps,
            bin,
            caps_from,
            unit,
            failed: HashSet::new(),
            set: Vec::new(),
            set_base: 0,
            assign: vec![usize::MAX; items.len()],
            nodes,
        };
        if !s.solve(0, u64::MAX >> (64 - items.len()))? {
            return Ok(None);
        }
        Ok(Some(s.assign.iter().map(|&r| s.bin[r]).collect()))
    }

    /// Fills ranges `r..` with the blocks in `mask` (ranges `..r` are closed).
    fn solve(&mut self, r: usize, mask: u64) -> Result<bool, FitError> {
        if mask == 0 {
            return Ok(true);
        }
        // Ranges too small for every block left stay empty.
        let smallest = self.left.iter().rposition(|&n| n > 0).map_or(0, |g| self.sizes[g]);
        let r = r.max(self.caps.partition_point(|&c| c < smallest));
        if r == self.caps.len() {
            return Ok(false);
        }
        tick(self.nodes)?;
        if self.failed.contains(&(r, mask)) {
            return Ok(false);
        }
        let found = self.branch(r, mask)?;
        if !found {
            self.failed.insert((r, mask));
        }
        Ok(found)
    }

    /// Tries every set for range `r`, the smallest that can take a block left.
    fn branch(&mut self, r: usize, mask: u64) -> Result<bool, FitError> {
        let Some(slack) = self.slack(r) else {
            return Ok(false);
        };
        let sums = self.sums(r, slack)?;
        let mut most = slack;
        if let Some(sums) = &sums {
            match self.waste_bound(sums, r, slack) {
                Some(m) => most = m,
                None => return Ok(false),
            }
        }
        // rest[h]: the bytes left in classes h.. (untouched while a set is built from
        // class h - 1 upwards, so valid for the classes after the current one).
        let mut rest = vec![0u64; self.sizes.len() + 1];
        for h in (0..self.sizes.len()).rev() {
            rest[h] = rest[h + 1].saturating_add((self.left[h] as u64).saturating_mul(self.sizes[h]));
        }
        // Sets are tried in bands of the room they leave, fullest first: the best
        // room the blocks left allow, then doubling bands up to `most`. The bands
        // cover every room up to `most`, so every set is still tried once.
        let mut band = (0, most);
        if let Some(sums) = &sums {
            band.1 = sums.least_room(0, self.caps[r], most).unwrap_or(most);
        }
        let base = self.set_base;
        self.set_base = self.set.len();
        let found = loop {
            let ctx = Ctx { r, least: band.0, most: band.1, rest: &rest, sums: sums.as_ref() };
            match self.complete(mask, 0, self.caps[r], u64::MAX, &ctx) {
                Ok(false) if band.1 < most => {
                    band = (band.1 + 1, most.min(band.1.saturating_mul(2).max(band.1.saturating_add(self.unit))))
                }
                done => break done,
            }
        };
        self.set_base = base;
        found
    }

    /// Enumerates the maximal sets for range `ctx.r` that add blocks of classes `g0..`
    /// to those already in it (`room` bytes still empty; `min_excl` the smallest block
    /// left out so far, which the final room must be below), and searches on from
    /// each.
    fn complete(
        &mut self,
        mask: u64,
        g0: usize,
        room: u64,
        mut min_excl: u64,
        ctx: &Ctx<'_>,
    ) -> Result<bool, FitError> {
        for g in g0..self.sizes.len() {
            let size = self.sizes[g];
            let left = self.left[g];
            if left == 0 || size > room {
                // Left out but cannot fit anyway: no constraint on the room.
                continue;
            }
            let fits = room.checked_div(size).map_or(left, |n| left.min(n as usize));
            for k in (1..=fits).rev() {
                let room_k = room - k as u64 * size;
                let excl_k = if k < left { size } else { min_excl };
                // The least room this set can end with; taking fewer only adds room.
                let least = room_k.saturating_sub(ctx.rest[g + 1]);
                if least >= excl_k || least > ctx.most {
                    break;
                }
                if !ctx.completable(g + 1, room_k, excl_k) {
                    continue;
                }
                tick(self.nodes)?;
                let start = self.first[g] + self.count[g] - left;
                for item in &mut self.assign[start..start + k] {
                    *item = ctx.r;
                }
                let taken = (u64::MAX >> (64 - k)) << start;
                self.left[g] -= k;
                self.set.push((g, k));
                let found = self.complete(mask & !taken, g + 1, room_k, excl_k, ctx);
                self.set.pop();
                self.left[g] += k;
                if found? {
                    return Ok(true);
                }
            }
            // From here on class g is left out of this range.
            min_excl = size;
            let least = room.saturating_sub(ctx.rest[g + 1]);
            if least >= min_excl || least > ctx.most || !ctx.completable(g + 1, room, min_excl) {
                return Ok(false);
            }
        }
        if room >= min_excl || room > ctx.most || room < ctx.least || self.dominated(room) {
            return Ok(false);
        }
        let base = self.set_base;
        self.set_base = self.set.len();
        let found = self.solve(ctx.r + 1, mask);
        self.set_base = base;
        found
    }

    /// The slack of ranges `r..`: their space minus the blocks left; `None` when for
    /// some block size `s` the blocks of at least `s` do not fit in total into the
    /// ranges of at least `s`.
    fn slack(&self, r: usize) -> Option<u64> {
        let mut need = 0u64;
        for g in 0..self.sizes.len() {
            if self.left[g] == 0 {
                continue;
            }
            need = need.saturating_add((self.left[g] as u64).saturating_mul(self.sizes[g]));
            let from = r.max(self.caps.partition_point(|&c| c < self.sizes[g]));
            if need > self.caps_from[from] {
                return None;
            }
        }
        Some(self.caps_from[r] - need)
    }

    /// The subset-sum tables of the blocks left, when the slack is small enough for
    /// them to prune: below the largest range left or below half the space left.
    /// Their work is counted as search steps.
    fn sums(&mut self, r: usize, slack: u64) -> Result<Option<Sums>, FitError> {
        let largest = *self.caps.last().unwrap_or(&0);
        if slack >= largest && slack.saturating_mul(2) >= self.caps_from[r] {
            return Ok(None);
        }
        let classes = self.sizes.len();
        let words = (largest / self.unit / 64 + 1).min((SUMS_WORDS_MAX / (classes + 1)) as u64) as usize;
        let top = words as u64 * 64 - 1;
        let mut rows = vec![0u64; (classes + 1) * words];
        rows[classes * words] = 1;
        for g in (0..classes).rev() {
            let (row, next) = rows[g * words..].split_at_mut(words);
            row.copy_from_slice(&next[..words]);
            let shift = self.sizes[g] / self.unit;
            if shift <= top {
                for _ in 0..self.left[g] {
                    shift_or(row, shift as usize);
                }
            }
        }
        // One step per 64 words of table work.
        let work = words * (classes + self.left.iter().sum::<usize>());
        tick_n(self.nodes, (work / 64) as u64)?;
        Ok(Some(Sums { words, top, unit: self.unit, rows }))
    }

    /// The subset-sum bound for ranges `r..`: each range leaves at least its least
    /// room empty, and the total may not exceed `slack`; every block left needs a
    /// range whose room beside it can be filled within what the other ranges leave
    /// of the slack. Returns how much range `r` may leave empty, `None` when the
    /// bound fails.
    fn waste_bound(&self, sums: &Sums, r: usize, slack: u64) -> Option<u64> {
        let mut least = Vec::with_capacity(self.caps.len() - r);
        for &cap in &self.caps[r..] {
            least.push(sums.least_room(0, cap, slack)?);
        }
        let total: u64 = least.iter().sum();
        let spare = slack.checked_sub(total)?;
        // The block itself is among the sums: a relaxation, still never wrong.
        let blocks_fit = (0..self.sizes.len()).filter(|&g| self.left[g] > 0).all(|g| {
            let size = self.sizes[g];
            let from = r.max(self.caps.partition_point(|&c| c < size));
            (from..self.caps.len()).any(|q| sums.fills(0, self.caps[q] - size, spare + least[q - r]))
        });
        blocks_fit.then_some(spare + least[0])
    }

    /// Whether the current set (leaving `room` empty) is dominated: a block left out
    /// could replace one or two blocks of the set whose sizes add up to no more than
    /// it, and still fit. Then the set with the swap is at least as good (in any fit,
    /// put the one or two blocks where the left-out block was) and is searched
    /// instead. A swap strictly raises (fill, -blocks), so no two sets dominate each
    /// other.
    fn dominated(&self, room: u64) -> bool {
        let set = &self.set[self.set_base..];
        for (i, &(g, k)) in set.iter().enumerate() {
            let t = self.sizes[g];
            if t == 0 {
                continue;
            }
            // One block of size t by a bigger one.
            if room > 0 && self.left_in(t + 1, t.saturating_add(room)) {
                return true;
            }
            // Two blocks: the same class twice, or with a later class.
            let pair = t.saturating_mul(2);
            if k >= 2 && self.left_in(pair, pair.saturating_add(room)) {
                return true;
            }
            for &(h, _) in &set[i + 1..] {
                let p = t.saturating_add(self.sizes[h]);
                if self.sizes[h] > 0 && self.left_in(p, p.saturating_add(room)) {
                    return true;
                }
            }
        }
        false
    }

    /// Whether a block of a size in `lo..=hi` is left (not placed, not in the set).
    fn left_in(&self, lo: u64, hi: u64) -> bool {
        // Classes are in descending size: skip those above `hi`.
        let from = self.sizes.partition_point(|&s| s > hi);
        self.sizes[from..].iter().zip(&self.left[from..]).take_while(|&(&s, _)| s >= lo).any(|(_, &n)| n > 0)
    }
}

/// What the sets of one range share.
struct Ctx<'a> {
    /// The range being filled.
    r: usize,
    /// The band of room its set may leave empty: at least `least`, at most `most`.
    least: u64,
    most: u64,
    /// `rest[g]`: the bytes left in classes `g..`.
    rest: &'a [u64],
    sums: Option<&'a Sums>,
}

impl Ctx<'_> {
    /// Whether the blocks of classes `g..` can bring `room` down to below `excl` and
    /// into `self.least..=self.most`.
    fn completable(&self, g: usize, room: u64, excl: u64) -> bool {
        let most = self.most.min(excl.saturating_sub(1));
        if room < self.least || most < self.least {
            return false;
        }
        self.sums.is_none_or(|s| s.reaches(g, room.saturating_sub(most), room - self.least))
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The item-by-item search for more than [`EXACT_BLOCKS_MAX`] blocks.
struct ItemSearch<'a> {
    items: &'a [u64],
    suffix: Vec<u64>,
    caps: Vec<u64>,
    hash: u128,
    failed: HashSet<(usize, u128)>,
    assign: Vec<usize>,
    nodes: &'a mut u64,
}

impl<'a> ItemSearch<'a> {
    /// The range of each item (`items` sorted descending), `None` when none exists.
    fn run(items: &'a [u64], bins: &[Range], nodes: &'a mut u64) -> Result<Option<Vec<usize>>, FitError> {
        let caps: Vec<u64> = bins.iter().map(|r| r.size).collect();
        let mut s = ItemSearch {
            items,
            suffix: suffix_sums(items),
            hash: caps.iter().fold(0u128, |h, &c| h.wrapping_add(mix(c))),
            caps,
            failed: HashSet::new(),
            assign: vec![usize::MAX; items.len()],
            nodes,
        };
        Ok(s.place(0)?.then_some(s.assign))
    }

    fn place(&mut self, k: usize) -> Result<bool, FitError> {
        if k == self.items.len() {
            return Ok(true);
        }
        tick(self.nodes)?;
        if self.failed.contains(&(k, self.hash)) {
            return Ok(false);
        }
        // Space that can still take a block: ranges at least as big as the smallest
        // block left (items are sorted, so the last one is the smallest).
        let smallest = *self.items.last().unwrap_or(&0);
        let usable: u64 = self.caps.iter().filter(|&&c| c >= smallest).fold(0u64, |a, &c| a.saturating_add(c));
        if usable < self.suffix[k] {
            self.failed.insert((k, self.hash));
            return Ok(false);
        }
        let size = self.items[k];
        let mut candidates: Vec<usize> = (0..self.caps.len()).filter(|&b| self.caps[b] >= size).collect();
        // Best fit: smallest remaining first; ties by range order (lowest PA first).
        candidates.sort_by_key(|&b| (self.caps[b], b));
        candidates.dedup_by_key(|b| self.caps[*b]);
        for b in candidates {
            let old = self.caps[b];
            self.set_cap(b, old - size);
            self.assign[k] = b;
            if self.place(k + 1)? {
                return Ok(true);
            }
            self.set_cap(b, old);
        }
        self.failed.insert((k, self.hash));
        Ok(false)
    }

    fn set_cap(&mut self, b: usize, new: u64) {
        self.hash = self.hash.wrapping_sub(mix(self.caps[b])).wrapping_add(mix(new));
        self.caps[b] = new;
    }
}

/// `bits |= bits << by` over the bit set's length.
fn shift_or(bits: &mut [u64], by: usize) {
    let (w, b) = (by / 64, by % 64);
    for i in (w..bits.len()).rev() {
        let mut v = bits[i - w] << b;
        if b > 0 && i > w {
            v |= bits[i - w - 1] >> (64 - b);
        }
        bits[i] |= v;
    }
}

fn suffix_sums(items: &[u64]) -> Vec<u64> {
    let mut v = vec![0u64; items.len() + 1];
    for i in (0..items.len()).rev() {
        v[i] = v[i + 1].saturating_add(items[i]);
    }
    v
}

/// A 128-bit mix of one remaining capacity; the state hash is their wrapping sum,
/// so it does not depend on which range has which size.
fn mix(c: u64) -> u128 {
    let mut z = u128::from(c) ^ 0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C834;
    z = (z ^ (z >> 67)).wrapping_mul(0xBF58_476D_1CE4_E5B9_94D0_49BB_1331_11EB);
    z = (z ^ (z >> 59)).wrapping_mul(0x94D0_49BB_1331_11EB_BF58_476D_1CE4_E5B9);
    z ^ (z >> 61)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::GIB;

    #[test]
    fn refuses_guest_whose_block_needs_contiguous_16g() {
        // Goal: the seed's LM-09 example: 16G does not go into 10G + 10G.
        let free = [Range::new(0x7e00_8000_0000, 10 * GIB), Range::new(0x7e08_2000_0000 + 25088 * MIB, 10 * GIB)];
        assert_eq!(fit_memory(&[16 * GIB], &free), Err(FitError::NoFit));
    }

    #[test]
    fn places_seed_guest_blocks_in_one_free_range() {
        // Goal: the seed's LM-09 success: 248M + 16136M into 55800M free, back to back.
        let free = [Range::new(0x7e00_8000_0000, 55800 * MIB)];
        let fit = fit_memory(&[248 * MIB, 16136 * MIB], &free).unwrap();
        assert_eq!(fit.ranges[0].size, 248 * MIB);
        assert_eq!(fit.ranges[1].size, 16136 * MIB);
        assert!(!fit.ranges[0].overlaps(&fit.ranges[1]));
        assert!(fit.ranges.iter().all(|r| free[0].contains(r)));
        assert_eq!(fit.largest_free_after, (55800 - 248 - 16136) * MIB);
    }

    #[test]
    fn finds_fit_where_first_fit_decreasing_fails() {
        // Goal: exactness: blocks 5,4,3,5,3 (G) fit two 10G ranges only as 5+5 | 4+3+3,
        // which first fit in the guest's order misses.
        let g = GIB;
        let free = [Range::new(0, 10 * g), Range::new(100 * g, 10 * g)];
        let blocks = [5 * g, 4 * g, 3 * g, 5 * g, 3 * g];
        // First fit in guest order: 5->A, 4->A, 3->B, 5->B, 3->? (A has 1, B has 2): fails.
        let fit = fit_memory(&blocks, &free).unwrap();
        let used: u64 = fit.ranges.iter().map(|r| r.size).sum();
        assert_eq!(used, 20 * g);
        for (i, a) in fit.ranges.iter().enumerate() {
            assert!(free.iter().any(|f| f.contains(a)));
            for b in &fit.ranges[i + 1..] {
                assert!(!a.overlaps(b));
            }
        }
    }

    #[test]
    fn keeps_largest_free_range_intact_when_possible() {
        // Goal: a 1G block goes into the 2G range, not the 30G range.
        let free = [Range::new(0, 30 * GIB), Range::new(64 * GIB, 2 * GIB)];
        let fit = fit_memory(&[GIB], &free).unwrap();
        assert_eq!(fit.ranges[0].pa, 64 * GIB);
        assert_eq!(fit.largest_free_after, 30 * GIB);
    }

    #[test]
    fn trims_unaligned_free_ranges_to_the_granule() {
        // Goal: a free range not on a 4M boundary offers only its aligned inside.
        let free = [Range::new(MIB, 8 * MIB)]; // aligned inside: [4M, 8M)
        assert_eq!(fit_memory(&[8 * MIB], &free), Err(FitError::NoFit));
        let fit = fit_memory(&[4 * MIB], &free).unwrap();
        assert_eq!(fit.ranges[0].pa, 4 * MIB);
    }
}
