//! The replicated state: a pure struct and its deterministic `apply`.
//!
//! Every member applies the same entries in the same order and reaches the same
//! state: apply reads only the state and the request (time comes from
//! `proposed_at_ms`), iterates only ordered maps, and never fails half-way (each
//! command checks everything, then changes everything).
//!
//! The state is also a set of rows (one per host, domain, reservation, operation,
//! user, audit record, plus one meta row). Apply records which rows it touched, so
//! the RocksDB state machine writes only those, in the same batch as the applied log
//! id.

pub(crate) mod apply;
pub(crate) mod command;
#[cfg(test)]
mod props;
pub(crate) mod records;
pub(crate) mod validate;

use crate::codec::{self, CodecError, Kind};
use records::{
    AuditRecord, DomainRecord, Host, HostStatus, Operation, OperationKind, Phase, PlanRecord, RebalanceConfig,
    Reservation, Stopped, User,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use tern_model::{Owner, Range, Reserved};

/// Counters and the cluster clock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The largest `proposed_at_ms` (or `Expire::now_ms`) applied so far: leases are
    /// judged against it, so a proposer with a slow clock cannot revive a lease.
    pub clock_ms: u64,
    pub last_reservation_id: u64,
    pub last_operation_id: u64,
    /// The last fencing token issued; tokens only grow.
    pub last_fencing_token: u64,
    #[serde(default)]
    pub last_plan_id: u64,
    /// Members an administrator removed for good (`RemoveMember`), by host name: their
    /// name may not register again, nor their Raft id stay a member, until
    /// `ReadmitMember`. Kept in this row so that older members, which ignore fields they
    /// do not know, still read it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub removed_members: BTreeMap<String, RemovedMember>,
}

/// A member taken out of the cluster by an administrator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedMember {
    /// Its Raft id when it was removed, if it was a member then; the leader takes this
    /// id out of the membership.
    pub node_id: Option<u64>,
    /// The address its host had.
    pub address: String,
    /// Who removed it, and when (cluster clock).
    pub by: String,
    pub at_ms: u64,
}

/// The whole replicated state. See the module docs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    hosts: BTreeMap<String, Host>,
    domains: BTreeMap<String, DomainRecord>,
    reservations: BTreeMap<u64, Reservation>,
    operations: BTreeMap<u64, Operation>,
    users: BTreeMap<String, User>,
    audit: BTreeMap<u64, AuditRecord>,
    meta: Meta,
    #[serde(default)]
    rebalance: RebalanceConfig,
    #[serde(default)]
    plans: BTreeMap<u64, PlanRecord>,
    /// Rows changed since the last [`State::take_dirty`]; not part of the state.
    #[serde(skip)]
    dirty: BTreeSet<RowKey>,
}

impl PartialEq for State {
    fn eq(&self, other: &Self) -> bool {
        self.hosts == other.hosts
            && self.domains == other.domains
            && self.reservations == other.reservations
            && self.operations == other.operations
            && self.users == other.users
            && self.audit == other.audit
            && self.meta == other.meta
            && self.rebalance == other.rebalance
            && self.plans == other.plans
    }
}

impl Eq for State {}

/// The key of one stored row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum RowKey {
    Meta,
    /// A host without its inventory: a reservation touches this small row only.
    Host(String),
    /// A host's last reported inventory (with commits applied).
    Inventory(String),
    Domain(String),
    Reservation(u64),
    Operation(u64),
    User(String),
    Audit(u64),
    Rebalance,
    Plan(u64),
}

impl RowKey {
    /// `m`, `b`, `h/<name>`, `i/<name>`, `d/<name>`, `r/<u64 BE>`, `o/<u64 BE>`, `u/<name>`, `a/<u64 BE>`, `p/<u64 BE>`:
    /// big-endian numbers so that RocksDB's byte order is numeric order.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let (tag, tail): (u8, Vec<u8>) = match self {
            Self::Meta => return b"m".to_vec(),
            Self::Rebalance => return b"b".to_vec(),
            Self::Plan(id) => (b'p', id.to_be_bytes().to_vec()),
            Self::Host(n) => (b'h', n.as_bytes().to_vec()),
            Self::Inventory(n) => (b'i', n.as_bytes().to_vec()),
            Self::Domain(n) => (b'd', n.as_bytes().to_vec()),
            Self::Reservation(id) => (b'r', id.to_be_bytes().to_vec()),
            Self::Operation(id) => (b'o', id.to_be_bytes().to_vec()),
            Self::User(n) => (b'u', n.as_bytes().to_vec()),
            Self::Audit(i) => (b'a', i.to_be_bytes().to_vec()),
        };
        let mut k = Vec::with_capacity(2 + tail.len());
        k.push(tag);
        k.push(b'/');
        k.extend(tail);
        k
    }

    pub(crate) fn decode(key: &[u8]) -> Option<Self> {
        if key == b"m" {
            return Some(Self::Meta);
        }
        if key == b"b" {
            return Some(Self::Rebalance);
        }
        let (&tag, rest) = key.split_first()?;
        let tail = rest.strip_prefix(b"/")?;
        let text = || String::from_utf8(tail.to_vec()).ok();
        let number = || <[u8; 8]>::try_from(tail).ok().map(u64::from_be_bytes);
        match tag {
            b'h' => text().map(Self::Host),
            b'i' => text().map(Self::Inventory),
            b'd' => text().map(Self::Domain),
            b'r' => number().map(Self::Reservation),
            b'o' => number().map(Self::Operation),
            b'u' => text().map(Self::User),
            b'a' => number().map(Self::Audit),
            b'p' => number().map(Self::Plan),
            _ => None,
        }
    }
}

impl State {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn hosts(&self) -> &BTreeMap<String, Host> {
        &self.hosts
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.hosts.get(name)
    }

    /// Whether `domain`, recorded on the down host `host`, is known not to run there
    /// at `now_ms`, so that it may start elsewhere: the host is Fenced (HA-02), or it
    /// is Lost and the guest counts stopped by the host's own means (HA-03 with
    /// HA-08, see [`SelfStop`](records::SelfStop)): a slave of the control domain whose failure-policy is
    /// `stop`, on a host whose agent declares an isolation response and a watchdog,
    /// Lost for longer than their timeouts plus its margin. `Err` says why not, and
    /// when it will count stopped if only time is missing.
    pub fn counts_stopped(&self, host: &str, domain: &str, now_ms: u64) -> Result<Stopped, String> {
        let h = self.hosts.get(host).ok_or_else(|| format!("host {host} is not registered"))?;
        match h.status {
            HostStatus::Fenced => return Ok(Stopped::Fenced),
            HostStatus::Lost => {}
            other => return Err(format!("{host} is {other}: {domain} may be running there")),
        }
        let not_yet = |why: &str| format!("{host} is lost, not fenced, and {domain} does not count stopped: {why}");
        let delay = h.self_stop.delay_ms().map_err(not_yet)?;
        let inventory = h.inventory.as_ref().ok_or_else(|| not_yet("no inventory of it is recorded"))?;
        inventory.stopped_with_control_domain(domain).map_err(|e| not_yet(&e))?;
        let since_ms = h.status_since_ms.saturating_add(delay);
        if now_ms < since_ms {
            return Err(not_yet(&format!(
                "it counts stopped {} ms from now (HA-08: lost at {} ms + {delay} ms)",
                since_ms - now_ms,
                h.status_since_ms
            )));
        }
        Ok(Stopped::BySelfStop { since_ms })
    }

    /// The guest-domain index: name -> where it runs.
    pub fn domains(&self) -> &BTreeMap<String, DomainRecord> {
        &self.domains
    }

    pub fn domain(&self, name: &str) -> Option<&DomainRecord> {
        self.domains.get(name)
    }

    /// Every reservation not yet released, committed or removed by `Expire`; see
    /// [`Reservation::is_active`] for which of them still hold anything.
    pub fn reservations(&self) -> &BTreeMap<u64, Reservation> {
        &self.reservations
    }

    pub fn reservation(&self, id: u64) -> Option<&Reservation> {
        self.reservations.get(&id)
    }

    pub fn operations(&self) -> &BTreeMap<u64, Operation> {
        &self.operations
    }

    pub fn operation(&self, id: u64) -> Option<&Operation> {
        self.operations.get(&id)
    }

    pub fn users(&self) -> &BTreeMap<String, User> {
        &self.users
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.get(name)
    }

    /// The audit log, oldest first, keyed by log index.
    pub fn audit(&self) -> &BTreeMap<u64, AuditRecord> {
        &self.audit
    }

    /// The member removed under `name`, if it was.
    pub fn removed_member(&self, name: &str) -> Option<&RemovedMember> {
        self.meta.removed_members.get(name)
    }

    /// The name of the removed member whose Raft id is `id`, if one is.
    pub fn removed_node(&self, id: u64) -> Option<&str> {
        self.meta.removed_members.iter().find(|(_, m)| m.node_id == Some(id)).map(|(n, _)| n.as_str())
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The cluster clock: the latest proposer time applied.
    pub fn clock_ms(&self) -> u64 {
        self.meta.clock_ms
    }

    /// Reservations on `host` that are active at `now_ms`.
    pub fn active_reservations_on<'a>(&'a self, host: &'a str, now_ms: u64) -> impl Iterator<Item = &'a Reservation> {
        self.reservations.values().filter(move |r| r.target == host && r.is_active(now_ms))
    }

    /// What is promised on `host` at `now_ms`, in the form `tern_model::preflight` and
    /// `Server::free_*` take, so a target agent never offers a reserved resource.
    pub fn reserved_on(&self, host: &str, now_ms: u64) -> Reserved {
        let mut reserved = Reserved::default();
        for r in self.active_reservations_on(host, now_ms) {
            reserved.add(&r.binding);
        }
        reserved
    }

    /// Whether `operation` is a migration begun as a move of a plan that applies now
    /// (RB-04): `Ok(plan id)`, or why not. The target's Prepare takes it in place of a
    /// user's login (OP-04).
    pub fn approved_plan_move(&self, operation: u64) -> Result<u64, String> {
        let op =
            self.operations.get(&operation).ok_or_else(|| format!("operation {operation} is not in this state"))?;
        match &op.kind {
            records::OperationKind::Migration { domain, source, target, plan: Some(id), .. } => {
                self.check_plan_move(*id, domain, source, target).map(|()| *id).map_err(|r| r.message)
            }
            _ => Err(format!("operation {operation} is not a move of a rebalance plan")),
        }
    }

    /// The rebalancing policy (RB-01..RB-04).
    pub fn rebalance(&self) -> &RebalanceConfig {
        &self.rebalance
    }

    /// The rebalance plans kept, by id.
    pub fn plans(&self) -> &BTreeMap<u64, PlanRecord> {
        &self.plans
    }

    pub fn plan(&self, id: u64) -> Option<&PlanRecord> {
        self.plans.get(&id)
    }

    /// A fingerprint of what a rebalance plan depends on, at `now_ms`: every host's
    /// status and each domain's CPUs and memory as its inventory binds them, the
    /// active reservations, and the rebalancing policy. Utilisation is left out (it
    /// moves all the time, and a plan is re-checked move by move anyway). FNV-1a over
    /// a canonical encoding, so every member computes the same value (RB-04).
    pub fn placement_digest(&self, now_ms: u64) -> u64 {
        let mut h = Fnv::default();
        for host in self.hosts.values() {
            h.text(&host.name);
            h.text(host.status.as_str());
            if let Some(inv) = &host.inventory {
                let mut names: Vec<&str> = inv.domains.iter().map(|d| d.name.as_str()).collect();
                names.sort_unstable();
                for d in names {
                    h.text(d);
                    inv.cpu_of(d).strands.iter().for_each(|s| h.number(u64::from(*s)));
                    inv.memory_of(d).iter().for_each(|r| {
                        h.number(r.pa);
                        h.number(r.size);
                    });
                }
            }
        }
        for r in self.reservations.values().filter(|r| r.is_active(now_ms)) {
            h.number(r.id);
            h.text(&r.target);
        }
        h.text(&serde_json::to_string(&self.rebalance).unwrap_or_default());
        h.0
    }

    /// What the rebalancer plans from at `now_ms` (RB-03): every host with its
    /// inventory, what its active reservations hold, whether it takes part (Up with an
    /// inventory) and how many migrations it runs; every guest's groups and why it may
    /// not move (a running operation, the cooldown after its last migration).
    pub fn planning_view(&self, now_ms: u64) -> PlanningView {
        let in_flight = |host: &str| {
            self.operations
                .values()
                .filter(|o| !o.phase.is_terminal())
                .filter(|o| match &o.kind {
                    records::OperationKind::Migration { source, target, .. } => source == host || target == host,
                    records::OperationKind::Resize { host: h, .. } => h == host,
                    records::OperationKind::Evacuation { host: h } | records::OperationKind::Failover { host: h } => {
                        h == host
                    }
                })
                .count() as u32
        };
        let hosts = self
            .hosts
            .values()
            .filter_map(|h| {
                let inv = h.inventory.clone()?;
                let eligible = match h.status {
                    HostStatus::Up => Ok(()),
                    other => Err(format!("{} is {other}", h.name)),
                };
                Some((inv, self.reserved_on(&h.name, now_ms), eligible, in_flight(&h.name)))
            })
            .collect();
        // The last time each guest (by its current name) finished a migration.
        let mut last_moved: BTreeMap<&str, u64> = BTreeMap::new();
        for op in self.operations.values().filter(|o| o.phase == records::Phase::Done) {
            if let records::OperationKind::Migration { domain, new_name, dry_run: false, .. } = &op.kind {
                let name = new_name.as_deref().unwrap_or(domain);
                let t = last_moved.entry(name).or_default();
                *t = (*t).max(op.updated_ms);
            }
        }
        let cooldown = self.rebalance.cooldown_ms;
        let group = |g: &Option<String>| {
            g.as_ref().map(|name| tern_model::rebalance::Group {
                name: name.clone(),
                strength: self.rebalance.strength(name),
            })
        };
        let guests = self
            .domains
            .iter()
            .map(|(name, rec)| {
                let frozen = if let Some(op) = self.running_operation_for_domain(name) {
                    Some(format!("operation {} ({}) is running for it", op.id, op.kind.name()))
                } else {
                    // A move stamped by a proposer whose clock ran ahead may lie in this
                    // view's future: never subtract past zero (apply runs this too).
                    last_moved.get(name.as_str()).filter(|t| now_ms < t.saturating_add(cooldown)).map(|t| {
                        format!(
                            "migrated {} s ago; its cooldown ends in {} s (RB-03)",
                            now_ms.saturating_sub(*t) / 1000,
                            t.saturating_add(cooldown).saturating_sub(now_ms).div_ceil(1000)
                        )
                    })
                };
                let rules = tern_model::rebalance::GuestRules {
                    affinity: group(&rec.affinity_group),
                    anti_affinity: group(&rec.anti_affinity_group),
                    frozen,
                };
                (name.clone(), rules)
            })
            .collect();
        PlanningView { hosts, guests, settings: self.rebalance.settings() }
    }

    /// Whether `host`'s last inventory report shows guest `domain`.
    pub fn reports_guest(&self, host: &str, domain: &str) -> bool {
        self.host(host)
            .and_then(|h| h.inventory.as_ref())
            .and_then(|inv| inv.domain(domain))
            .is_some_and(|d| d.kind == tern_model::DomainKind::Guest)
    }

    /// The up host other than `except` whose last report shows guest `domain`, if one does.
    pub fn up_host_reporting(&self, domain: &str, except: &str) -> Option<&str> {
        self.hosts
            .values()
            .filter(|h| h.name != except && h.status == HostStatus::Up)
            .find(|h| self.reports_guest(&h.name, domain))
            .map(|h| h.name.as_str())
    }

    /// The id, source and target of `domain`'s latest operation when it is a live migration
    /// that ended without committing: with ldm the servers may have completed it anyway
    /// (ldmd on both control domains runs the move), so a copy of `domain` on the target
    /// may be the only one.
    pub fn uncommitted_migration(&self, domain: &str) -> Option<(u64, &str, &str)> {
        let last = self.operations.values().rev().find(|o| match &o.kind {
            OperationKind::Migration { domain: d, new_name, .. } => d == domain || new_name.as_deref() == Some(domain),
            other => other.subject() == records::Subject::Domain(domain),
        })?;
        let OperationKind::Migration { source, target, dry_run: false, .. } = &last.kind else {
            return None;
        };
        (last.phase.is_terminal() && last.phase != Phase::Done).then_some((last.id, source.as_str(), target.as_str()))
    }

    /// The running operation whose subject is `domain` (a migration of it), if any.
    pub fn running_operation_for_domain(&self, domain: &str) -> Option<&Operation> {
        self.operations
            .values()
            .find(|o| !o.phase.is_terminal() && o.kind.subject() == records::Subject::Domain(domain))
    }

    /// Every broken invariant of ARCHITECTURE.md, as messages (empty when all hold):
    /// no strand, memory byte or console port claimed by two domains on a host
    /// (inventory bindings and active reservations together); every indexed guest on
    /// exactly its host; reservations owned by running operations; tokens below the
    /// counter; at most one running operation per subject. The chaos tests call it
    /// after every step.
    pub fn invariant_violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        let now = self.meta.clock_ms;
        for host in self.hosts.values() {
            self.check_host_claims(host, now, &mut out);
        }
        self.check_domain_placement(&mut out);
        self.check_reservations(&mut out);
        let mut subjects = BTreeSet::new();
        for op in self.operations.values().filter(|o| !o.phase.is_terminal()) {
            if !subjects.insert(format!("{:?}", op.kind.subject())) {
                out.push(format!("two running operations on {:?}", op.kind.subject()));
            }
        }
        out
    }

    fn check_host_claims(&self, host: &Host, now: u64, out: &mut Vec<String>) {
        // Claims: (what, claimant). A binding to X and a reservation for X are one claim
        // (an incoming migration that the target already reports).
        let mut strands: BTreeMap<u32, String> = BTreeMap::new();
        let mut ranges: Vec<(Range, String)> = Vec::new();
        let mut ports: BTreeMap<u16, String> = BTreeMap::new();
        if let Some(inv) = &host.inventory {
            for s in inv.cores.iter().flat_map(|c| &c.strands) {
                if let Some(d) = &s.bound {
                    strands.insert(s.id, d.clone());
                }
            }
            for b in &inv.memory {
                if let Some(owner) = &b.bound {
                    let who = match owner {
                        Owner::System => "_sys_".to_string(),
                        Owner::Domain(d) => d.clone(),
                    };
                    ranges.push((b.range(), who));
                }
            }
            for d in &inv.domains {
                if let Some(c) = &d.console
                    && let Some(other) = ports.insert(c.port, d.name.clone())
                {
                    out.push(format!("{}: console port {} used by {other} and {}", host.name, c.port, d.name));
                }
            }
        }
        for r in self.active_reservations_on(&host.name, now) {
            let who = &r.binding.domain;
            for s in &r.binding.strands {
                match strands.get(s) {
                    Some(holder) if holder != who => out.push(format!(
                        "{}: CPU {s} claimed by {holder} and by reservation {} for {who}",
                        host.name, r.id
                    )),
                    _ => {
                        strands.insert(*s, who.clone());
                    }
                }
            }
            for m in &r.binding.memory {
                ranges.push((*m, who.clone()));
            }
            if let Some(p) = r.binding.console_port {
                match ports.get(&p) {
                    Some(holder) if holder != who => out.push(format!(
                        "{}: console port {p} claimed by {holder} and by reservation {} for {who}",
                        host.name, r.id
                    )),
                    _ => {
                        ports.insert(p, who.clone());
                    }
                }
            }
        }
        ranges.sort();
        for (i, (a, who_a)) in ranges.iter().enumerate() {
            for (b, who_b) in ranges[i + 1..].iter().take_while(|(b, _)| b.pa < a.end()) {
                if a.overlaps(b) && who_a != who_b {
                    out.push(format!("{}: memory {a} ({who_a}) overlaps {b} ({who_b})", host.name));
                }
            }
        }
    }

    fn check_domain_placement(&self, out: &mut Vec<String>) {
        for (name, rec) in &self.domains {
            let Some(host) = self.hosts.get(&rec.host) else {
                out.push(format!("domain {name} is recorded on unknown host {}", rec.host));
                continue;
            };
            let present = host.inventory.as_ref().is_some_and(|i| i.domain(name).is_some());
            if !present && rec.awaiting.is_none() && self.running_operation_for_domain(name).is_none() {
                out.push(format!("domain {name} is recorded on {} but not in its inventory", rec.host));
            }
        }
        for host in self.hosts.values() {
            let Some(inv) = &host.inventory else { continue };
            for d in inv.domains.iter().filter(|d| d.kind == tern_model::DomainKind::Guest) {
                // An incoming migration: a reservation on this host is for it (a lapsed
                // one too, until `Expire` removes it and the incoming copy with it).
                let incoming = self.reservations.values().any(|r| r.target == host.name && r.binding.domain == d.name);
                match self.domains.get(&d.name) {
                    Some(rec) if rec.host == host.name => {}
                    _ if incoming => {}
                    Some(rec) => {
                        out.push(format!("domain {} is on {} and recorded on {}", d.name, host.name, rec.host))
                    }
                    None => out.push(format!("domain {} on {} is not indexed", d.name, host.name)),
                }
            }
        }
    }

    fn check_reservations(&self, out: &mut Vec<String>) {
        let mut tokens = BTreeSet::new();
        for r in self.reservations.values() {
            if r.token > self.meta.last_fencing_token || !tokens.insert(r.token) {
                out.push(format!(
                    "reservation {} has token {} (counter {})",
                    r.id, r.token, self.meta.last_fencing_token
                ));
            }
            match self.operations.get(&r.operation) {
                Some(op) if !op.phase.is_terminal() && op.reservations.contains(&r.id) => {}
                _ => out.push(format!("reservation {} is not held by running operation {}", r.id, r.operation)),
            }
        }
        for op in self.operations.values() {
            for id in &op.reservations {
                if !self.reservations.contains_key(id) {
                    out.push(format!("operation {} lists missing reservation {id}", op.id));
                }
            }
        }
    }

    // ---- rows -------------------------------------------------------------------

    fn touch(&mut self, key: RowKey) {
        self.dirty.insert(key);
    }

    /// The rows changed since the last call; the caller writes them.
    pub(crate) fn take_dirty(&mut self) -> BTreeSet<RowKey> {
        std::mem::take(&mut self.dirty)
    }

    /// Makes rows `keys` of this state what they are in `from` (copied, or removed where
    /// `from` has none): how a state machine publishes a batch it has persisted from its
    /// private working copy to the state readers see. Only the named rows are touched.
    pub(crate) fn copy_rows<'k>(&mut self, from: &State, keys: impl IntoIterator<Item = &'k RowKey>) {
        fn copy<K: Ord + Clone, V: Clone>(to: &mut BTreeMap<K, V>, from: &BTreeMap<K, V>, key: &K) {
            match from.get(key) {
                Some(v) => to.insert(key.clone(), v.clone()),
                None => to.remove(key),
            };
        }
        for key in keys {
            match key {
                RowKey::Meta => self.meta = from.meta.clone(),
                RowKey::Rebalance => self.rebalance = from.rebalance.clone(),
                RowKey::Host(n) => match (self.hosts.get_mut(n), from.hosts.get(n)) {
                    // The small row: every field but the inventory, which has its own.
                    (Some(to), Some(h)) => {
                        let inventory = to.inventory.take();
                        *to = h.clone_without_inventory();
                        to.inventory = inventory;
                    }
                    (None, Some(h)) => {
                        self.hosts.insert(n.clone(), h.clone());
                    }
                    (_, None) => {
                        self.hosts.remove(n);
                    }
                },
                RowKey::Inventory(n) => {
                    if let (Some(to), Some(h)) = (self.hosts.get_mut(n), from.hosts.get(n)) {
                        to.inventory = h.inventory.clone();
                    }
                }
                RowKey::Domain(n) => copy(&mut self.domains, &from.domains, n),
                RowKey::Reservation(id) => copy(&mut self.reservations, &from.reservations, id),
                RowKey::Operation(id) => copy(&mut self.operations, &from.operations, id),
                RowKey::User(n) => copy(&mut self.users, &from.users, n),
                RowKey::Audit(i) => copy(&mut self.audit, &from.audit, i),
                RowKey::Plan(id) => copy(&mut self.plans, &from.plans, id),
            }
        }
    }

    /// The encoded row for `key`, or `None` when the row no longer exists.
    pub(crate) fn encode_row(&self, key: &RowKey) -> Result<Option<Vec<u8>>, CodecError> {
        fn enc<T: Serialize>(v: Option<&T>) -> Result<Option<Vec<u8>>, CodecError> {
            v.map(|v| codec::encode(Kind::Row, v)).transpose()
        }
        match key {
            RowKey::Meta => enc(Some(&self.meta)),
            RowKey::Host(n) => enc(self.hosts.get(n).map(HostRow::from).as_ref()),
            RowKey::Inventory(n) => enc(self.hosts.get(n).and_then(|h| h.inventory.as_ref())),
            RowKey::Domain(n) => enc(self.domains.get(n)),
            RowKey::Reservation(id) => enc(self.reservations.get(id)),
            RowKey::Operation(id) => enc(self.operations.get(id)),
            RowKey::User(n) => enc(self.users.get(n)),
            RowKey::Audit(i) => enc(self.audit.get(i)),
            RowKey::Rebalance => enc(Some(&self.rebalance)),
            RowKey::Plan(id) => enc(self.plans.get(id)),
        }
    }

    /// Every row of the state, for a full rewrite (snapshot install).
    pub(crate) fn all_rows(&self) -> Vec<RowKey> {
        let mut keys = vec![RowKey::Meta, RowKey::Rebalance];
        keys.extend(self.hosts.keys().cloned().map(RowKey::Host));
        keys.extend(self.hosts.keys().cloned().map(RowKey::Inventory));
        keys.extend(self.domains.keys().cloned().map(RowKey::Domain));
        keys.extend(self.reservations.keys().copied().map(RowKey::Reservation));
        keys.extend(self.operations.keys().copied().map(RowKey::Operation));
        keys.extend(self.users.keys().cloned().map(RowKey::User));
        keys.extend(self.audit.keys().copied().map(RowKey::Audit));
        keys.extend(self.plans.keys().copied().map(RowKey::Plan));
        keys
    }

    /// Rebuilds a state from its stored rows (any order).
    pub(crate) fn from_rows<I>(rows: I) -> Result<Self, CodecError>
    where
        I: IntoIterator<Item = (Vec<u8>, Vec<u8>)>,
    {
        let mut s = State::default();
        let mut inventories = BTreeMap::new();
        for (key, value) in rows {
            let key = RowKey::decode(&key).ok_or_else(|| CodecError::BadKey(String::from_utf8_lossy(&key).into()))?;
            let max = crate::limits::ENTRY_BYTES_MAX;
            match key {
                RowKey::Meta => s.meta = codec::decode(Kind::Row, &value, max)?,
                RowKey::Host(n) => {
                    let row: HostRow = codec::decode_upgrading::<HostRowV1, _>(Kind::Row, &value, max)?;
                    s.hosts.insert(n, row.into_host());
                }
                RowKey::Inventory(n) => {
                    inventories.insert(n, codec::decode(Kind::Row, &value, max)?);
                }
                RowKey::Domain(n) => {
                    s.domains.insert(n, codec::decode(Kind::Row, &value, max)?);
                }
                RowKey::Reservation(id) => {
                    s.reservations.insert(id, codec::decode(Kind::Row, &value, max)?);
                }
                RowKey::Operation(id) => {
                    s.operations.insert(id, codec::decode(Kind::Row, &value, max)?);
                }
                RowKey::User(n) => {
                    s.users.insert(n, codec::decode(Kind::Row, &value, max)?);
                }
                RowKey::Audit(i) => {
                    s.audit.insert(i, codec::decode(Kind::Row, &value, max)?);
                }
                RowKey::Rebalance => s.rebalance = codec::decode(Kind::Row, &value, max)?,
                RowKey::Plan(id) => {
                    s.plans.insert(id, codec::decode(Kind::Row, &value, max)?);
                }
            }
        }
        for (name, inventory) in inventories {
            match s.hosts.get_mut(&name) {
                Some(h) => h.inventory = Some(inventory),
                None => return Err(CodecError::BadKey(format!("inventory of unknown host {name}"))),
            }
        }
        Ok(s)
    }
}

/// FNV-1a, 64 bits: a fingerprint every member and every release computes alike.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn bytes(&mut self, b: &[u8]) {
        for x in b {
            self.0 ^= u64::from(*x);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn text(&mut self, t: &str) {
        self.number(t.len() as u64);
        self.bytes(t.as_bytes());
    }
    fn number(&mut self, n: u64) {
        self.bytes(&n.to_le_bytes());
    }
}

/// The rebalancer's input taken from the state ([`State::planning_view`]), owned so
/// that the planner can borrow it after the state's lock is released.
#[derive(Clone, Debug)]
pub struct PlanningView {
    /// (inventory, reserved, eligible, migrations running) per host, by name.
    pub hosts: Vec<(tern_model::Server, Reserved, Result<(), String>, u32)>,
    pub guests: BTreeMap<String, tern_model::rebalance::GuestRules>,
    pub settings: tern_model::rebalance::Settings,
}

impl PlanningView {
    /// The plan the planner makes from this view for `purpose` at `level` (the
    /// cluster's when `None`): the one function both the proposer (`rebalance plan`) and
    /// `ApplyPlan` in apply run, so a plan is approved only if it is exactly what the
    /// planner makes from the replicated state at that point in the log.
    pub fn plan(
        mut self,
        purpose: &records::PlanPurpose,
        level: Option<tern_model::rebalance::Level>,
    ) -> Result<tern_model::rebalance::Plan, tern_model::rebalance::MakeRoomError> {
        if let Some(l) = level {
            self.settings.level = l;
        }
        let input = self.input();
        match purpose {
            records::PlanPurpose::Balance => Ok(tern_model::rebalance::plan(&input)),
            records::PlanPurpose::MakeRoom { domain, target } => {
                tern_model::rebalance::make_room(&input, domain, target)
            }
            records::PlanPurpose::Grow { domain, growth } => tern_model::rebalance::grow(&input, domain, growth),
        }
    }

    /// The planner's input, borrowing this view.
    pub fn input(&self) -> tern_model::rebalance::Input<'_> {
        tern_model::rebalance::Input {
            hosts: self
                .hosts
                .iter()
                .map(|(server, reserved, eligible, in_flight)| tern_model::rebalance::HostInput {
                    server,
                    reserved,
                    eligible: eligible.clone(),
                    in_flight: *in_flight,
                })
                .collect(),
            guests: self.guests.clone(),
            settings: self.settings,
        }
    }
}

/// The stored form of a [`Host`] row: every field but the inventory (format version 2).
#[derive(Serialize, Deserialize)]
struct HostRow {
    name: String,
    address: String,
    status: records::HostStatus,
    status_since_ms: u64,
    inventory_at_ms: Option<u64>,
    fencing_token_max: u64,
    #[serde(default, skip_serializing_if = "records::SelfStop::is_none")]
    self_stop: records::SelfStop,
}

impl From<&Host> for HostRow {
    fn from(h: &Host) -> Self {
        Self {
            name: h.name.clone(),
            address: h.address.clone(),
            status: h.status,
            status_since_ms: h.status_since_ms,
            inventory_at_ms: h.inventory_at_ms,
            fencing_token_max: h.fencing_token_max,
            self_stop: h.self_stop,
        }
    }
}

impl HostRow {
    fn into_host(self) -> Host {
        Host {
            name: self.name,
            address: self.address,
            status: self.status,
            status_since_ms: self.status_since_ms,
            inventory: None,
            inventory_at_ms: self.inventory_at_ms,
            fencing_token_max: self.fencing_token_max,
            self_stop: self.self_stop,
        }
    }
}

/// A host row as format version 1 wrote it: with copies of the inventory's CPU type,
/// firmware and OS, which version 2 keeps only in the inventory.
#[derive(Deserialize)]
struct HostRowV1 {
    name: String,
    address: String,
    #[allow(dead_code)] // read to check the old row is whole; the inventory holds it now
    cpu: tern_model::CpuType,
    #[allow(dead_code)]
    firmware: tern_model::Firmware,
    #[allow(dead_code)]
    os: tern_model::OsVersion,
    status: records::HostStatus,
    status_since_ms: u64,
    inventory_at_ms: Option<u64>,
    fencing_token_max: u64,
}

impl From<HostRowV1> for HostRow {
    /// The upgrade from version 1: the copies of the inventory's facts are dropped.
    fn from(v1: HostRowV1) -> Self {
        Self {
            name: v1.name,
            address: v1.address,
            status: v1.status,
            status_since_ms: v1.status_since_ms,
            inventory_at_ms: v1.inventory_at_ms,
            fencing_token_max: v1.fencing_token_max,
            self_stop: records::SelfStop::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The body of host row `a` exactly as format version 1 wrote it (after `TNR\x01`).
    const HOST_ROW_V1_BODY: &[u8] = br#"{"name":"a","address":"a.example:7400","cpu":{"family":"Sparc64XPlus","frequency_mhz":3700},"firmware":"XCP2290","os":"Solaris 11.3","status":"up","status_since_ms":1700000000000,"inventory_at_ms":null,"fencing_token_max":7}"#;

    #[test]
    fn a_version_1_host_row_upgrades_and_is_written_back_in_the_current_version() {
        // Goal: a host row with the old copies of CPU, firmware and OS still decodes
        // (upgrade step); rewritten, it is the current version and carries them no more.
        let bytes = [b"TNR\x01".as_slice(), HOST_ROW_V1_BODY].concat();
        let rows = vec![(RowKey::Host("a".into()).encode(), bytes)];
        let state = State::from_rows(rows).expect("a v1 host row decodes");
        let host = state.host("a").expect("host a");
        assert_eq!((host.address.as_str(), host.fencing_token_max), ("a.example:7400", 7));
        assert_eq!(host.status, records::HostStatus::Up);
        let again = state.encode_row(&RowKey::Host("a".into())).unwrap().expect("row");
        assert_eq!(&again[..4], [b'T', b'N', b'R', crate::codec::CURRENT_VERSION]);
        let body = std::str::from_utf8(&again[4..]).unwrap();
        assert!(!body.contains("firmware") && !body.contains("cpu"), "{body}");
    }

    #[test]
    fn row_keys_round_trip_and_sort_numerically() {
        // Goal: every row key decodes to itself; numeric keys sort in numeric order.
        let keys = [
            RowKey::Meta,
            RowKey::Host("m10-a".into()),
            RowKey::Inventory("m10-a".into()),
            RowKey::Domain("ldom1".into()),
            RowKey::Reservation(258),
            RowKey::Operation(7),
            RowKey::User("admin".into()),
            RowKey::Audit(u64::MAX),
            RowKey::Rebalance,
            RowKey::Plan(3),
        ];
        for k in &keys {
            assert_eq!(RowKey::decode(&k.encode()).as_ref(), Some(k));
        }
        assert!(RowKey::Audit(255).encode() < RowKey::Audit(256).encode());
        assert_eq!(RowKey::decode(b"r/123"), None);
        assert_eq!(RowKey::decode(b"zz"), None);
    }
}
