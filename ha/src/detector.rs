//! HA-01 failure detection. Every agent heartbeats the leader (not through the Raft
//! log); the leader's detector turns silence into transitions of the host's
//! replicated status, which the leader then commits:
//!
//! | committed status | silent for (see below)        | effect            |
//! |------------------|-------------------------------|-------------------|
//! | Up               | >= `lost_after_ms`            | propose Lost      |
//! | Up               | >= `suspect_after_ms`         | propose Suspect   |
//! | Suspect          | >= `lost_after_ms`            | propose Lost      |
//! | Suspect, Lost    | < `suspect_after_ms`, heard   | propose Up        |
//! | Maintenance      | any                           | none (an admin's state: the server may be off) |
//! | Fenced           | any                           | none (powered off by HA: an admin brings it back) |
//!
//! A Lost host heard again is Up again: nothing of it restarts elsewhere before it
//! is Fenced (HA-02), and the detector never moves a Fenced host, so a host whose
//! guests were restarted elsewhere stays out until an admin returns it (HA-09). Each
//! transition is committed as a compare-and-set on the status it was judged from, so
//! a verdict made just before a fence was recorded cannot undo the fence.
//!
//! *Silent for* is measured from the later of the host's last heartbeat and the
//! moment this member began leading: a new leader has heard nobody yet, so it gives
//! every host a full `lost_after_ms` of grace before it may declare one lost, and a
//! detector that is not leading decides nothing. A transition proposed but not yet
//! seen committed is not proposed again until `suspect_after_ms` has passed.

use std::collections::BTreeMap;
use tern_raft_store::HostStatus;

/// How long silence may last; validated before use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DetectorConfig {
    pub suspect_after_ms: u64,
    pub lost_after_ms: u64,
}

/// Why a [`DetectorConfig`] cannot be used; names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("ha.suspect_after_ms must be at least 1 ms")]
    SuspectZero,
    #[error("ha.lost_after_ms ({lost_ms}) must be greater than ha.suspect_after_ms ({suspect_ms})")]
    LostNotAfterSuspect { suspect_ms: u64, lost_ms: u64 },
}

impl DetectorConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.suspect_after_ms == 0 {
            return Err(ConfigError::SuspectZero);
        }
        if self.lost_after_ms <= self.suspect_after_ms {
            return Err(ConfigError::LostNotAfterSuspect {
                suspect_ms: self.suspect_after_ms,
                lost_ms: self.lost_after_ms,
            });
        }
        Ok(())
    }
}

/// What happened, as the detector sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// This member became the leader (again): everything heard before is forgotten.
    Leading,
    /// This member is no longer the leader.
    NotLeading,
    /// `host`'s agent heartbeated.
    Heartbeat { host: &'a str },
    /// Time to decide, against every host's committed status.
    Tick { hosts: &'a BTreeMap<String, HostStatus> },
}

/// What the leader should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Commit `host`'s new status; `silent_ms` is how long it has been silent.
    SetStatus { host: String, status: HostStatus, silent_ms: u64 },
}

/// The leader's failure detector. See the module's table.
#[derive(Clone, Debug)]
pub struct Detector {
    config: DetectorConfig,
    /// When this member began leading; `None` while it does not lead.
    leading_since_ms: Option<u64>,
    /// The last heartbeat heard from each host while leading.
    heard_ms: BTreeMap<String, u64>,
    /// When each host was first seen registered while leading: a host registered after
    /// this member's first tick as leader is silent from then, not from its election
    /// (the hosts of the first tick are silent from the election).
    first_seen_ms: BTreeMap<String, u64>,
    /// A tick was taken since this member began leading.
    ticked: bool,
    /// Transitions proposed and not yet seen committed, with when.
    proposed: BTreeMap<String, (HostStatus, u64)>,
}

impl Detector {
    /// A detector for `config`, which must have passed [`DetectorConfig::validate`].
    pub fn new(config: DetectorConfig) -> Self {
        debug_assert!(config.validate().is_ok(), "{config:?}");
        Self {
            config,
            leading_since_ms: None,
            heard_ms: BTreeMap::new(),
            first_seen_ms: BTreeMap::new(),
            ticked: false,
            proposed: BTreeMap::new(),
        }
    }

    /// Takes `event` at `now_ms`; returns what to do.
    pub fn step(&mut self, event: Event<'_>, now_ms: u64) -> Vec<Effect> {
        match event {
            Event::Leading => {
                self.leading_since_ms = Some(now_ms);
                self.heard_ms.clear();
                self.first_seen_ms.clear();
                self.ticked = false;
                self.proposed.clear();
                vec![]
            }
            Event::NotLeading => {
                self.leading_since_ms = None;
                self.heard_ms.clear();
                self.first_seen_ms.clear();
                self.ticked = false;
                self.proposed.clear();
                vec![]
            }
            Event::Heartbeat { host } => {
                if self.leading_since_ms.is_some() {
                    let heard = self.heard_ms.entry(host.to_string()).or_insert(now_ms);
                    *heard = (*heard).max(now_ms);
                }
                vec![]
            }
            Event::Tick { hosts } => self.tick(hosts, now_ms),
        }
    }

    /// How long ago `host` was last heard, if at all since this member began leading.
    pub fn heard_ago_ms(&self, host: &str, now_ms: u64) -> Option<u64> {
        self.heard_ms.get(host).map(|at| now_ms.saturating_sub(*at))
    }

    fn tick(&mut self, hosts: &BTreeMap<String, HostStatus>, now_ms: u64) -> Vec<Effect> {
        let Some(since) = self.leading_since_ms else { return vec![] };
        // Forget hosts that left the cluster, and proposals that were committed.
        self.heard_ms.retain(|h, _| hosts.contains_key(h));
        self.first_seen_ms.retain(|h, _| hosts.contains_key(h));
        self.proposed.retain(|h, (status, _)| hosts.get(h).is_some_and(|s| s != status));
        let mut effects = Vec::new();
        for (host, &status) in hosts {
            let heard = self.heard_ms.get(host).copied();
            let seen = *self.first_seen_ms.entry(host.clone()).or_insert(if self.ticked { now_ms } else { since });
            let silent_ms = now_ms.saturating_sub(heard.unwrap_or(seen).max(since));
            let Some(next) = self.next_status(status, silent_ms, heard.is_some()) else { continue };
            if let Some(&(pending, at)) = self.proposed.get(host)
                && pending == next
                && now_ms.saturating_sub(at) < self.config.suspect_after_ms
            {
                continue; // proposed a moment ago; wait for it to commit
            }
            self.proposed.insert(host.clone(), (next, now_ms));
            effects.push(Effect::SetStatus { host: host.clone(), status: next, silent_ms });
        }
        self.ticked = true;
        effects
    }

    /// The module's table.
    fn next_status(&self, status: HostStatus, silent_ms: u64, heard: bool) -> Option<HostStatus> {
        let c = &self.config;
        match status {
            HostStatus::Up | HostStatus::Suspect if silent_ms >= c.lost_after_ms => Some(HostStatus::Lost),
            HostStatus::Up if silent_ms >= c.suspect_after_ms => Some(HostStatus::Suspect),
            HostStatus::Suspect | HostStatus::Lost if heard && silent_ms < c.suspect_after_ms => Some(HostStatus::Up),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The detector's table, step by step, with no clock but the numbers given.
    use super::*;

    const CONFIG: DetectorConfig = DetectorConfig { suspect_after_ms: 3_000, lost_after_ms: 10_000 };

    fn hosts(list: &[(&str, HostStatus)]) -> BTreeMap<String, HostStatus> {
        list.iter().map(|(h, s)| (h.to_string(), *s)).collect()
    }

    fn set(host: &str, status: HostStatus, silent_ms: u64) -> Effect {
        Effect::SetStatus { host: host.into(), status, silent_ms }
    }

    fn leading_at(now: u64) -> Detector {
        let mut d = Detector::new(CONFIG);
        assert_eq!(d.step(Event::Leading, now), vec![]);
        d
    }

    #[test]
    fn a_silent_host_is_suspect_then_lost() {
        // Goal: HA-01: Up -> Suspect after suspect_after_ms of silence, -> Lost after lost_after_ms.
        let mut d = leading_at(0);
        d.step(Event::Heartbeat { host: "a" }, 1_000);
        let up = hosts(&[("a", HostStatus::Up)]);
        assert_eq!(d.step(Event::Tick { hosts: &up }, 3_999), vec![]);
        assert_eq!(d.step(Event::Tick { hosts: &up }, 4_000), vec![set("a", HostStatus::Suspect, 3_000)]);
        let suspect = hosts(&[("a", HostStatus::Suspect)]);
        assert_eq!(d.step(Event::Tick { hosts: &suspect }, 10_999), vec![]);
        assert_eq!(d.step(Event::Tick { hosts: &suspect }, 11_000), vec![set("a", HostStatus::Lost, 10_000)]);
    }

    #[test]
    fn a_host_registered_long_after_the_leader_was_elected_is_silent_only_from_then() {
        // Goal: HA-01 counts a new host's silence from when the leader first saw it registered, not from its election.
        let mut d = leading_at(0);
        assert_eq!(d.step(Event::Tick { hosts: &hosts(&[]) }, 0), vec![]);
        d.step(Event::Heartbeat { host: "a" }, 60_000);
        let both = hosts(&[("a", HostStatus::Up), ("b", HostStatus::Up)]);
        assert_eq!(d.step(Event::Tick { hosts: &both }, 60_000), vec![]);
        d.step(Event::Heartbeat { host: "a" }, 63_000);
        assert_eq!(d.step(Event::Tick { hosts: &both }, 63_000), vec![set("b", HostStatus::Suspect, 3_000)]);
    }

    #[test]
    fn a_suspect_host_that_heartbeats_again_is_up() {
        // Goal: a short silence (a slow network) ends with the host Up, never Lost.
        let mut d = leading_at(0);
        d.step(Event::Heartbeat { host: "a" }, 0);
        let suspect = hosts(&[("a", HostStatus::Suspect)]);
        d.step(Event::Heartbeat { host: "a" }, 5_000);
        assert_eq!(d.step(Event::Tick { hosts: &suspect }, 5_500), vec![set("a", HostStatus::Up, 500)]);
    }

    #[test]
    fn a_new_leader_gives_every_host_a_full_grace() {
        // Goal: a leader that has heard nobody yet declares no host lost before lost_after_ms.
        let mut d = leading_at(50_000);
        let up = hosts(&[("a", HostStatus::Up), ("b", HostStatus::Up)]);
        d.step(Event::Heartbeat { host: "b" }, 50_100);
        let effects = d.step(Event::Tick { hosts: &up }, 59_999);
        assert_eq!(effects, vec![set("a", HostStatus::Suspect, 9_999), set("b", HostStatus::Suspect, 9_899)]);
        let suspect = hosts(&[("a", HostStatus::Suspect), ("b", HostStatus::Suspect)]);
        assert_eq!(d.step(Event::Tick { hosts: &suspect }, 60_000), vec![set("a", HostStatus::Lost, 10_000)]);
    }

    #[test]
    fn heartbeats_heard_under_an_earlier_term_do_not_count() {
        // Goal: leading again forgets what was heard before; the grace starts over.
        let mut d = leading_at(0);
        d.step(Event::Heartbeat { host: "a" }, 9_000);
        d.step(Event::NotLeading, 9_500);
        d.step(Event::Heartbeat { host: "a" }, 9_600); // not leading: not recorded
        d.step(Event::Leading, 20_000);
        let up = hosts(&[("a", HostStatus::Up)]);
        assert_eq!(d.step(Event::Tick { hosts: &up }, 22_999), vec![]);
        assert_eq!(d.step(Event::Tick { hosts: &up }, 23_000), vec![set("a", HostStatus::Suspect, 3_000)]);
    }

    #[test]
    fn a_detector_that_does_not_lead_decides_nothing() {
        // Goal: only the leader turns silence into transitions.
        let mut d = Detector::new(CONFIG);
        let up = hosts(&[("a", HostStatus::Up)]);
        assert_eq!(d.step(Event::Tick { hosts: &up }, 1_000_000), vec![]);
        let mut d = leading_at(0);
        d.step(Event::NotLeading, 1);
        assert_eq!(d.step(Event::Tick { hosts: &up }, 1_000_000), vec![]);
    }

    #[test]
    fn maintenance_and_fenced_hosts_are_left_alone() {
        // Goal: neither silence nor heartbeats move an admin's Maintenance or HA's Fenced.
        let mut d = leading_at(0);
        for h in ["m", "f"] {
            d.step(Event::Heartbeat { host: h }, 100_000);
        }
        let others = hosts(&[("m", HostStatus::Maintenance), ("f", HostStatus::Fenced)]);
        assert_eq!(d.step(Event::Tick { hosts: &others }, 100_001), vec![]);
        assert_eq!(d.step(Event::Tick { hosts: &others }, 1_000_000), vec![]);
    }

    #[test]
    fn a_lost_host_stays_lost_while_silent_and_is_up_once_heard() {
        // Goal: a lost host's agent that comes back is Up again (nothing restarted its guests elsewhere).
        let mut d = leading_at(0);
        let lost = hosts(&[("l", HostStatus::Lost)]);
        assert_eq!(d.step(Event::Tick { hosts: &lost }, 50_000), vec![]);
        d.step(Event::Heartbeat { host: "l" }, 60_000);
        assert_eq!(d.step(Event::Tick { hosts: &lost }, 60_100), vec![set("l", HostStatus::Up, 100)]);
    }

    #[test]
    fn a_pending_transition_is_not_proposed_again_at_once() {
        // Goal: while a proposal commits, ticks do not repeat it; after suspect_after_ms they retry.
        let mut d = leading_at(0);
        let up = hosts(&[("a", HostStatus::Up)]);
        assert_eq!(d.step(Event::Tick { hosts: &up }, 3_000).len(), 1);
        assert_eq!(d.step(Event::Tick { hosts: &up }, 4_000), vec![]);
        assert_eq!(d.step(Event::Tick { hosts: &up }, 6_000), vec![set("a", HostStatus::Suspect, 6_000)]);
    }

    #[test]
    fn a_clock_that_steps_back_counts_as_no_silence() {
        // Goal: a heartbeat stamped after the tick's time never underflows into a huge silence.
        let mut d = leading_at(1_000);
        d.step(Event::Heartbeat { host: "a" }, 9_000);
        let up = hosts(&[("a", HostStatus::Up)]);
        assert_eq!(d.step(Event::Tick { hosts: &up }, 5_000), vec![]);
    }

    #[test]
    fn hosts_that_left_the_cluster_are_forgotten() {
        // Goal: the detector's memory is bounded by the cluster's hosts.
        let mut d = leading_at(0);
        d.step(Event::Heartbeat { host: "gone" }, 10);
        d.step(Event::Tick { hosts: &hosts(&[("a", HostStatus::Up)]) }, 20);
        assert!(!d.heard_ms.contains_key("gone"));
    }

    #[test]
    fn config_needs_lost_after_suspect_and_names_the_fields() {
        // Goal: a config that could never declare a host lost, or at once, is refused by field name.
        let bad = DetectorConfig { suspect_after_ms: 5_000, lost_after_ms: 5_000 };
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("ha.lost_after_ms") && e.contains("ha.suspect_after_ms"), "{e}");
        let zero = DetectorConfig { suspect_after_ms: 0, lost_after_ms: 5_000 };
        assert_eq!(zero.validate(), Err(ConfigError::SuspectZero));
        assert_eq!(CONFIG.validate(), Ok(()));
    }
}
