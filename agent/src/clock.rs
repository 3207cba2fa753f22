//! The cluster's time (trust rules, item 4). Leases lapse by the cluster clock, the
//! largest time any applied write was stamped with, so one member whose clock runs
//! minutes ahead could lapse every lease at once. The leader stamps every write
//! (its own and those forwarded to it) and every `Expire` with [`ClockCheck::stamp`]:
//!
//! - the median of the members' clocks, as their HA heartbeats carry them
//!   (`HeartbeatRequest.sent_at_ms`, its own agent's included), each carried forward
//!   by this member's monotonic clock since it was heard, once heartbeats from a
//!   majority of the voters are fresh: a leader whose clock jumped is outvoted (its own
//!   wall clock is one vote, and a jump after the others were heard moves nothing
//!   else), and so is a follower whose clock did;
//! - before that (just elected), never ahead of the cluster clock it last saw applied
//!   plus the time elapsed since on its monotonic clock: a clock that jumped while it
//!   followed cannot carry the cluster clock along.
//!
//! `Expire` waits for the median (a leader that cannot check its clock lapses
//! nothing). This holds while a majority of the members' clocks are right; the chaos
//! checker bounds the cluster clock by the median of the hosts' true skews.

use std::collections::BTreeMap;
use std::sync::Mutex;
use tokio::time::Instant;

/// Heartbeats older than this many heartbeat intervals no longer vote on the time.
pub const FRESH_INTERVALS: u64 = 3;
/// Members remembered at most (a registered host heartbeats; the map is bounded anyway).
const SAMPLES_MAX: usize = 1024;

/// The median of `clocks` when they are at least `majority`, else `None`. The lower
/// median for an even count: with one liar among two, trust the earlier clock (a lease
/// lapses late, never early).
pub fn median(mut clocks: Vec<u64>, majority: usize) -> Option<u64> {
    if clocks.is_empty() || clocks.len() < majority {
        return None;
    }
    clocks.sort_unstable();
    Some(clocks[(clocks.len() - 1) / 2])
}

fn elapsed_ms(at: Instant) -> u64 {
    u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[derive(Default)]
struct Inner {
    /// host -> (its clock as it sent its last heartbeat, when heard on our monotonic clock).
    heard: BTreeMap<String, (u64, Instant)>,
    /// The cluster clock last seen applied, and when (monotonic).
    anchor: Option<(u64, Instant)>,
}

/// What this member knows of the others' clocks.
#[derive(Default)]
pub struct ClockCheck(Mutex<Inner>);

impl ClockCheck {
    /// A heartbeat from `host` stamped `sent_at_ms` by its clock. A heartbeat
    /// without a stamp (an older agent, 0) does not vote.
    pub fn heard(&self, host: &str, sent_at_ms: u64) {
        if sent_at_ms == 0 {
            return;
        }
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.heard.len() >= SAMPLES_MAX && !g.heard.contains_key(host) {
            return;
        }
        g.heard.insert(host.to_string(), (sent_at_ms, Instant::now()));
    }

    /// Records the applied cluster clock when it moved.
    pub fn observe(&self, clock_ms: u64) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if clock_ms > 0 && g.anchor.is_none_or(|(c, _)| c != clock_ms) {
            g.anchor = Some((clock_ms, Instant::now()));
        }
    }

    /// The median of the clocks of the members heard within `fresh_ms`, each carried
    /// forward to now, when they are at least `majority`.
    pub fn median_now(&self, fresh_ms: u64, majority: usize) -> Option<u64> {
        Self::median_of(&self.0.lock().unwrap_or_else(|p| p.into_inner()), fresh_ms, majority)
    }

    fn median_of(g: &Inner, fresh_ms: u64, majority: usize) -> Option<u64> {
        let clocks = g
            .heard
            .values()
            .filter(|(_, at)| elapsed_ms(*at) <= fresh_ms)
            .map(|(sent, at)| sent.saturating_add(elapsed_ms(*at)))
            .collect();
        median(clocks, majority)
    }

    /// The time the leader stamps: the members' median clock, else `now_ms` (its own)
    /// but at most the last applied cluster clock plus the monotonic time since
    /// (`slack_ms` added for the time the anchor was read late); `checked` says which.
    pub fn stamp(&self, now_ms: u64, fresh_ms: u64, majority: usize, slack_ms: u64) -> (u64, bool) {
        let g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = Self::median_of(&g, fresh_ms, majority) {
            return (t, true);
        }
        let bound = g.anchor.map(|(clock, at)| clock.saturating_add(elapsed_ms(at)).saturating_add(slack_ms));
        (bound.map_or(now_ms, |b| now_ms.min(b)), false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_clock_minutes_ahead_is_outvoted_by_the_median() {
        // Goal: with three members, a clock 2 min ahead (the leader's or a follower's) does not move the median.
        assert_eq!(median(vec![1_000, 1_000 + 120_000, 1_003], 2), Some(1_003));
        assert_eq!(median(vec![1_000, 1_000 + 120_000], 2), Some(1_000));
    }

    #[test]
    fn without_a_majority_of_fresh_clocks_there_is_no_median() {
        // Goal: a leader that heard from fewer than a majority of voters has not checked its clock.
        assert_eq!(median(vec![5], 2), None);
        assert_eq!(median(vec![], 1), None);
        assert_eq!(median(vec![5], 1), Some(5));
    }

    #[tokio::test(start_paused = true)]
    async fn the_stamp_follows_the_majority_and_unchecked_never_runs_ahead_of_the_applied_clock() {
        // Goal: a leader whose clock jumped 2 min stamps the members' median; just elected, the applied cluster clock plus monotonic elapsed time.
        let c = ClockCheck::default();
        c.observe(1_000_000);
        tokio::time::advance(std::time::Duration::from_millis(500)).await;
        let jumped = 1_000_500 + 120_000;
        assert_eq!(c.stamp(jumped, 3000, 2, 100), (1_000_600, false));
        // A clock behind the anchor is used as it is (a lease lapses late, never early).
        assert_eq!(c.stamp(999_000, 3000, 2, 100), (999_000, false));
        // Once a majority is heard, the median decides, carried forward by monotonic time.
        c.heard("a", 1_000_500);
        c.heard("leader", jumped);
        c.heard("c", 1_000_500);
        tokio::time::advance(std::time::Duration::from_millis(200)).await;
        assert_eq!(c.stamp(jumped + 200, 3000, 2, 100), (1_000_700, true));
        // Stale heartbeats no longer vote.
        tokio::time::advance(std::time::Duration::from_millis(3001)).await;
        assert!(c.median_now(3000, 2).is_none());
    }
}
