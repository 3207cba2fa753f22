//! Sizes and address ranges in the vocabulary of `ldm`.
//!
//! `ldm list-devices -a memory` prints sizes as `1G`, `384M` or `16136M`: a whole
//! number of gibibytes is printed in `G`, anything else in `M` (the seed's "1GB is
//! 1024MB"). Everything inside tern is bytes in a `u64`; these helpers convert at the
//! edges and are shared by the layout loader, the CLI and the ldm parsers.

use serde::{Deserialize, Serialize};
use std::fmt;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;
pub const TIB: u64 = 1024 * GIB;

/// A half-open physical address range `[pa, pa + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Range {
    pub pa: u64,
    pub size: u64,
}

impl Range {
    pub const fn new(pa: u64, size: u64) -> Self {
        Self { pa, size }
    }

    /// One past the last byte. Saturates so that a hostile range never wraps.
    pub const fn end(&self) -> u64 {
        self.pa.saturating_add(self.size)
    }

    pub const fn overlaps(&self, other: &Range) -> bool {
        self.pa < other.end() && other.pa < self.end() && self.size > 0 && other.size > 0
    }

    pub const fn contains(&self, other: &Range) -> bool {
        self.pa <= other.pa && other.end() <= self.end()
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}+{}", self.pa, Size(self.size))
    }
}

/// A byte count that prints the way `ldm` prints it (`8G`, `248M`, `512K`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b == 0 {
            write!(f, "0M")
        } else if b.is_multiple_of(TIB) && b >= 16 * TIB {
            write!(f, "{}T", b / TIB)
        } else if b.is_multiple_of(GIB) {
            write!(f, "{}G", b / GIB)
        } else if b.is_multiple_of(MIB) {
            write!(f, "{}M", b / MIB)
        } else if b.is_multiple_of(KIB) {
            write!(f, "{}K", b / KIB)
        } else {
            write!(f, "{b}")
        }
    }
}

/// Why a size string was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SizeError(pub String);

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SizeError {}

/// Parses `16136M`, `1G`, `8g`, `16GB`, `512K`, `4T` or a plain byte count.
/// Units are binary (1G = 1024M), as in ldm.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    let t = text.trim();
    if t.is_empty() {
        return Err(SizeError("empty size".into()));
    }
    let upper = t.to_ascii_uppercase();
    let body = upper.strip_suffix('B').unwrap_or(&upper);
    let (digits, unit) = match body.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => body.split_at(i),
        None => (body, ""),
    };
    if digits.is_empty() {
        return Err(SizeError(format!("size {text:?} does not start with a number")));
    }
    let n: u64 = digits.parse().map_err(|_| SizeError(format!("size {text:?} is too large")))?;
    let mult = match unit.trim() {
        "" => 1,
        "K" => KIB,
        "M" => MIB,
        "G" => GIB,
        "T" => TIB,
        other => {
            return Err(SizeError(format!("size {text:?} has unknown unit {other:?} (use K, M, G or T)")));
        }
    };
    n.checked_mul(mult).ok_or_else(|| SizeError(format!("size {text:?} is too large")))
}

/// Parses an id list such as `0-3,8,10-11` into ascending, de-duplicated ids.
/// Used for CIDs, CPUSETs and console port ranges alike.
pub fn parse_id_list(text: &str) -> Result<Vec<u32>, SizeError> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let lo: u32 = lo.parse().map_err(|_| SizeError(format!("{part:?} is not a number or range")))?;
        let hi: u32 = hi.parse().map_err(|_| SizeError(format!("{part:?} is not a number or range")))?;
        if hi < lo {
            return Err(SizeError(format!("range {part:?} runs backwards")));
        }
        if hi - lo > 1 << 20 {
            return Err(SizeError(format!("range {part:?} is implausibly large")));
        }
        out.extend(lo..=hi);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Prints ids the way ldm prints a CPUSET: `(0, 1)`.
pub fn format_cpuset(ids: &[u32]) -> String {
    let inner: Vec<String> = ids.iter().map(u32::to_string).collect();
    format!("({})", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_sizes_as_ldm_does() {
        // Goal: the seed's list-devices table round-trips through Size.
        assert_eq!(Size(GIB).to_string(), "1G");
        assert_eq!(Size(384 * MIB).to_string(), "384M");
        assert_eq!(Size(16136 * MIB).to_string(), "16136M");
        assert_eq!(Size(8 * GIB).to_string(), "8G");
        assert_eq!(parse_size("39416M").unwrap(), 39416 * MIB);
        assert_eq!(parse_size("16GB").unwrap(), 16 * GIB);
        assert_eq!(parse_size("1g").unwrap(), GIB);
    }

    #[test]
    fn refuses_garbage_sizes() {
        // Goal: a bad size names what is wrong instead of panicking.
        assert!(parse_size("").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
        assert!(parse_size("18446744073709551615G").is_err());
    }

    #[test]
    fn parses_id_lists() {
        // Goal: CID lists in layouts read like ldm's.
        assert_eq!(parse_id_list("0-3, 8,10-11").unwrap(), vec![0, 1, 2, 3, 8, 10, 11]);
        assert!(parse_id_list("3-1").is_err());
        assert!(parse_id_list("x").is_err());
    }

    #[test]
    fn ranges_overlap_only_when_they_share_a_byte() {
        // Goal: adjacent ranges do not overlap; empty ranges overlap nothing.
        let a = Range::new(0, 10);
        assert!(!a.overlaps(&Range::new(10, 5)));
        assert!(a.overlaps(&Range::new(9, 5)));
        assert!(!a.overlaps(&Range::new(5, 0)));
    }
}
