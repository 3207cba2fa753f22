//! The pre-copy live-migration timing model (LM-17, LM-15).
//!
//! Oracle VM copies a running guest's memory in rounds: first all of it, then what
//! the guest dirtied meanwhile, until the dirty set is small enough to stop the guest
//! and copy the rest (the downtime). The control domain encrypts and sends the pages,
//! so bandwidth grows with the source control domain's cores up to the link's limit;
//! time grows with guest memory. Migration time is not downtime.
//!
//! The sim backend replays this plan against a clock; the rebalancer (RB-02) uses the
//! same numbers as the cost of a move. Pure integer arithmetic, no clock.

use crate::units::MIB;
use serde::{Deserialize, Serialize};

/// Tunables of the model. Defaults are of the order Oracle publishes for SPARC M10
/// (a few hundred MiB/s per control-domain core, a 10 GbE link).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrecopyParams {
    pub bandwidth_per_core_mib_per_s: u64,
    pub bandwidth_max_mib_per_s: u64,
    /// Stop and copy once the dirty set is at most this.
    pub stop_threshold_mib: u64,
    pub rounds_max: u32,
    /// Fixed cost before the first byte moves (checks, binding on the target).
    pub setup_ms: u64,
    /// Fixed cost of suspending on the source and resuming on the target.
    pub switchover_ms: u64,
}

impl Default for PrecopyParams {
    fn default() -> Self {
        Self {
            bandwidth_per_core_mib_per_s: 150,
            bandwidth_max_mib_per_s: 1100,
            stop_threshold_mib: 64,
            rounds_max: 30,
            setup_ms: 3000,
            switchover_ms: 150,
        }
    }
}

/// One copy round: bytes sent and how long it took.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyRound {
    pub bytes: u64,
    pub ms: u64,
}

/// The whole timeline of one migration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrecopyPlan {
    pub setup_ms: u64,
    /// Live rounds (the guest keeps running).
    pub rounds: Vec<CopyRound>,
    /// The final stop-and-copy: the guest is suspended for `downtime_ms`.
    pub downtime_ms: u64,
    pub total_ms: u64,
    /// False when the dirty rate kept the dirty set above the threshold until
    /// `rounds_max`; the final copy is then larger and the downtime longer.
    pub converged: bool,
    pub bandwidth_mib_per_s: u64,
}

fn ms_for(bytes: u64, bw_bytes_per_s: u64) -> u64 {
    let ms = u128::from(bytes) * 1000 / u128::from(bw_bytes_per_s.max(1));
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// Plans a migration of `memory_bytes` dirtied at `dirty_mib_per_s`, sent by a
/// control domain with `source_control_cores` cores.
pub fn precopy_plan(
    memory_bytes: u64,
    dirty_mib_per_s: u64,
    source_control_cores: u32,
    p: &PrecopyParams,
) -> PrecopyPlan {
    let bw_mib = (p.bandwidth_per_core_mib_per_s.saturating_mul(u64::from(source_control_cores.max(1))))
        .clamp(1, p.bandwidth_max_mib_per_s.max(1));
    let bw = bw_mib * MIB;
    let dirty_rate = dirty_mib_per_s.saturating_mul(MIB);
    let threshold = p.stop_threshold_mib.saturating_mul(MIB);
    let mut rounds = Vec::new();
    let mut to_send = memory_bytes;
    let mut converged = true;
    loop {
        let ms = ms_for(to_send, bw);
        rounds.push(CopyRound { bytes: to_send, ms });
        let dirtied = u64::try_from(u128::from(dirty_rate) * u128::from(ms) / 1000).unwrap_or(u64::MAX);
        to_send = dirtied.min(memory_bytes);
        if to_send <= threshold {
            break;
        }
        if rounds.len() >= p.rounds_max.max(1) as usize {
            converged = false;
            break;
        }
    }
    let downtime_ms = ms_for(to_send, bw) + p.switchover_ms;
    let live_ms: u64 = rounds.iter().map(|r| r.ms).sum();
    PrecopyPlan {
        setup_ms: p.setup_ms,
        rounds,
        downtime_ms,
        total_ms: p.setup_ms + live_ms + downtime_ms,
        converged,
        bandwidth_mib_per_s: bw_mib,
    }
}

impl PrecopyPlan {
    /// Progress in percent `elapsed_ms` after the start, as `ldm list-domain -o status`
    /// would show it: the share of all bytes to send that have been sent.
    pub fn progress_pct(&self, elapsed_ms: u64) -> u8 {
        if elapsed_ms >= self.total_ms {
            return 100;
        }
        let total_bytes: u128 = self.rounds.iter().map(|r| u128::from(r.bytes)).sum::<u128>().max(1);
        let mut t = elapsed_ms.saturating_sub(self.setup_ms);
        let mut sent: u128 = 0;
        for r in &self.rounds {
            if t >= r.ms {
                sent += u128::from(r.bytes);
                t -= r.ms;
            } else {
                sent += u128::from(r.bytes) * u128::from(t) / u128::from(r.ms.max(1));
                break;
            }
        }
        u8::try_from((sent * 99 / total_bytes).min(99)).unwrap_or(99)
    }

    /// Milliseconds from the start until the guest is suspended for the final copy.
    pub fn suspend_at_ms(&self) -> u64 {
        self.total_ms - self.downtime_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::GIB;

    #[test]
    fn more_control_domain_cores_shorten_migration() {
        // Goal: LM-17, the seed's first measurement: time falls as source cores rise.
        let p = PrecopyParams::default();
        let two = precopy_plan(16 * GIB, 50, 2, &p);
        let four = precopy_plan(16 * GIB, 50, 4, &p);
        assert!(four.total_ms < two.total_ms, "{} !< {}", four.total_ms, two.total_ms);
    }

    #[test]
    fn more_guest_memory_lengthens_migration() {
        // Goal: LM-17, the seed's second measurement: time grows with guest memory.
        let p = PrecopyParams::default();
        let small = precopy_plan(8 * GIB, 50, 4, &p);
        let big = precopy_plan(32 * GIB, 50, 4, &p);
        assert!(big.total_ms > small.total_ms);
        assert!(big.downtime_ms < big.total_ms, "downtime is not migration time");
    }

    #[test]
    fn a_guest_dirtying_faster_than_the_link_never_converges() {
        // Goal: the round limit ends a pre-copy that cannot converge, and says so.
        let p = PrecopyParams::default();
        let plan = precopy_plan(16 * GIB, 5000, 1, &p);
        assert!(!plan.converged);
        assert_eq!(plan.rounds.len(), p.rounds_max as usize);
    }

    #[test]
    fn progress_rises_monotonically_to_100() {
        // Goal: OP-06 progress never goes backwards and ends at 100%.
        let plan = precopy_plan(16 * GIB, 200, 4, &PrecopyParams::default());
        let mut last = 0;
        for t in (0..=plan.total_ms).step_by(97) {
            let pct = plan.progress_pct(t);
            assert!(pct >= last);
            last = pct;
        }
        assert_eq!(plan.progress_pct(plan.total_ms), 100);
    }
}
