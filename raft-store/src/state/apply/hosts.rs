//! Hosts: registration, address, status (HA-07 roll-back) and inventory reports.

use super::*;

impl State {
    pub(super) fn register_host(&mut self, now: u64, spec: &HostSpec) -> Response {
        if let Some(m) = self.meta.removed_members.get(&spec.name) {
            return reject(
                RejectCode::MemberRemoved,
                format!(
                    "{} was removed from the cluster by {} at {} ms; `ternctl cluster add-member {}` lets it join again",
                    spec.name, m.by, m.at_ms, spec.name
                ),
            );
        }
        if self.hosts.contains_key(&spec.name) {
            return reject(
                RejectCode::HostExists,
                format!("host {} is already registered; use UpdateHost to change it", spec.name),
            );
        }
        if self.hosts.len() >= HOSTS_MAX {
            return reject(RejectCode::LimitReached, format!("the cluster already has {HOSTS_MAX} hosts"));
        }
        self.put_host(Host {
            name: spec.name.clone(),
            address: spec.address.clone(),
            status: HostStatus::Up,
            status_since_ms: now,
            inventory: None,
            inventory_at_ms: None,
            fencing_token_max: 0,
            self_stop: SelfStop::default(),
        });
        Ok(Outcome::HostRegistered)
    }

    pub(super) fn update_host(&mut self, name: &str, address: Option<&str>, self_stop: Option<SelfStop>) -> Response {
        self.host_checked(name)?;
        if let Some(h) = self.host_mut(name) {
            if let Some(a) = address {
                a.clone_into(&mut h.address);
            }
            if let Some(s) = self_stop {
                h.self_stop = s;
            }
        }
        Ok(Outcome::HostUpdated)
    }

    pub(super) fn set_host_status(
        &mut self,
        now: u64,
        name: &str,
        status: HostStatus,
        expected: Option<HostStatus>,
    ) -> Response {
        let host = self.host_checked(name)?;
        let was = host.status;
        if let Some(want) = expected
            && want != was
        {
            return reject(
                RejectCode::HostStatus,
                format!("{name} is {was}, not {want} as the proposer of {status} expected; nothing changed"),
            );
        }
        let mut rolled_back = Vec::new();
        let mut released = Vec::new();
        if was != status
            && let Some(h) = self.host_mut(name)
        {
            h.status = status;
            h.status_since_ms = now;
        }
        if was.is_down() && !status.is_down() {
            // The host is back (heard again before a fence, or an admin returned it):
            // its failover ends. Guests restarted elsewhere stay where the state
            // records them (HA-09); the others never left it.
            let failover = self
                .operations
                .values()
                .find(|o| !o.phase.is_terminal() && o.kind == OperationKind::Failover { host: name.to_string() })
                .map(|o| o.id);
            if let Some(id) = failover {
                let note = format!("{name} returned ({was} -> {status}); the failover ends here");
                let result = OperationResult { notes: vec![note], ..OperationResult::default() };
                released.extend(self.finish_operation(now, id, Phase::Done, Some(result)));
            }
        }
        if status.is_down() {
            // HA-07: a migration (or evacuation) needs its source control domain
            // (LM-02); one whose target is gone cannot finish either.
            let doomed: Vec<(u64, String)> = self
                .operations
                .values()
                .filter(|o| !o.phase.is_terminal())
                .filter_map(|o| match &o.kind {
                    OperationKind::Migration { source, .. } if source == name => {
                        Some((o.id, format!("HA-07: source host {name} is {status}")))
                    }
                    OperationKind::Migration { target, .. } if target == name => {
                        Some((o.id, format!("HA-07: target host {name} is {status}")))
                    }
                    OperationKind::Evacuation { host } if host == name => {
                        Some((o.id, format!("HA-07: host {name} is {status}; it cannot be evacuated")))
                    }
                    _ => None,
                })
                .collect();
            for (id, reason) in doomed {
                released.extend(self.finish_operation(now, id, Phase::RolledBack { reason }, None));
                rolled_back.push(id);
            }
            let stranded: Vec<u64> = self.reservations.values().filter(|r| r.target == name).map(|r| r.id).collect();
            for id in stranded {
                self.release(id);
                released.push(id);
            }
        }
        Ok(Outcome::HostStatusSet { rolled_back, released })
    }

    /// `SetDomain`: a guest's restart priority (HA-04) and its (anti-)affinity
    /// groups (RB-03); `None` keeps a setting, an empty group name clears it.
    pub(super) fn set_domain_settings(
        &mut self,
        domain: &str,
        ha_priority: Option<HaPriority>,
        affinity: Option<&str>,
        anti_affinity: Option<&str>,
    ) -> Response {
        let Some(rec) = self.domains.get(domain) else {
            return reject(RejectCode::DomainUnknown, format!("LDom \"{domain}\" is not a guest the cluster knows"));
        };
        let group = |new: Option<&str>, old: &Option<String>| match new {
            None => old.clone(),
            Some("") => None,
            Some(g) => Some(g.to_string()),
        };
        let rec = DomainRecord {
            ha_priority: ha_priority.unwrap_or(rec.ha_priority),
            affinity_group: group(affinity, &rec.affinity_group),
            anti_affinity_group: group(anti_affinity, &rec.anti_affinity_group),
            ..rec.clone()
        };
        self.set_domain(domain, Some(rec));
        Ok(Outcome::DomainSet)
    }

    pub(super) fn report_inventory(&mut self, now: u64, server: &Server) -> Response {
        let host = self.host_checked(&server.name)?;
        if let Err(errors) = server.validate() {
            let shown: Vec<&str> = errors.iter().take(5).map(String::as_str).collect();
            return reject(
                RejectCode::InventoryInvalid,
                format!(
                    "inventory of {} is inconsistent ({} problems): {}",
                    server.name,
                    errors.len(),
                    shown.join("; ")
                ),
            );
        }
        let active: Vec<&Reservation> = self.active_reservations_on(&host.name, now).collect();
        for r in &active {
            check_report_keeps(server, r)?;
        }
        // A guest recorded on a fenced host (proven stopped there, HA-02; or counted
        // stopped, HA-08) that this
        // host now runs was started here by someone else: an external HA cluster the
        // failover handed it to (HA-06), or an admin. The state follows the servers.
        let mut adopted = Vec::new();
        for d in server.domains.iter().filter(|d| d.kind == DomainKind::Guest) {
            if let Some(rec) = self.domains.get(&d.name)
                && rec.host != server.name
                && !active.iter().any(|r| r.binding.domain == d.name)
            {
                let stopped = self.counts_stopped(&rec.host, &d.name, now).is_ok();
                let reserved = self.reservations.values().any(|r| r.domain == d.name && r.is_active(now));
                // The hypervisors settled a move the cluster did not commit (ldm: the
                // lease lapsed or the coordinator died while ldmd completed it): the
                // recorded host's own last report no longer shows the guest, so this
                // server holds its only copy. The record follows it, settings kept.
                let settled =
                    !self.reports_guest(&rec.host, &d.name) && self.running_operation_for_domain(&d.name).is_none();
                if (stopped || settled) && !reserved {
                    adopted.push((d.name.clone(), rec.clone()));
                    continue;
                }
                return reject(
                    RejectCode::DomainOnOtherHost,
                    format!(
                        "{} reports guest {} which the cluster records on {}, and no active reservation on {} is for it",
                        server.name, d.name, rec.host, server.name
                    ),
                );
            }
        }
        // Accepted: index new guests, unindex the ones gone (unless an operation runs on them).
        let incoming: BTreeSet<String> = active.iter().map(|r| r.binding.domain.clone()).collect();
        let reported: BTreeSet<&str> =
            server.domains.iter().filter(|d| d.kind == DomainKind::Guest).map(|d| d.name.as_str()).collect();
        let mut indexed = Vec::new();
        for name in &reported {
            if !self.domains.contains_key(*name) && !incoming.contains(*name) {
                indexed.push(name.to_string());
            }
        }
        let unindexed: Vec<String> = self
            .domains
            .iter()
            .filter(|(n, rec)| rec.host == server.name && rec.awaiting.is_none() && !reported.contains(n.as_str()))
            .filter(|(n, _)| self.running_operation_for_domain(n).is_none())
            .map(|(n, _)| n.clone())
            .collect();
        for name in &indexed {
            self.set_domain(name, Some(DomainRecord::new(&server.name)));
        }
        for (name, rec) in &adopted {
            if let Some(Some(inv)) = self.inventory_mut(&rec.host) {
                inv.unbind_domain(name);
            }
            self.note_settled_by_hypervisor(name, &rec.host, &server.name);
            self.set_domain(name, Some(rec.on(&server.name)));
            indexed.push(name.clone());
        }
        // Back here after all (ldm resumed it on this source): no longer awaited.
        let returned: Vec<String> = reported
            .iter()
            .filter(|n| self.domains.get(**n).is_some_and(|r| r.host == server.name && r.awaiting.is_some()))
            .map(|n| n.to_string())
            .collect();
        for name in &returned {
            if let Some(rec) = self.domains.get(name).map(|r| r.on(&server.name)) {
                self.set_domain(name, Some(rec));
            }
        }
        for name in &unindexed {
            self.record_gone_guest(name);
        }
        if let Some(h) = self.host_mut(&server.name) {
            h.inventory_at_ms = Some(now);
        }
        if let Some(inv) = self.inventory_mut(&server.name) {
            *inv = Some(server.clone());
        }
        Ok(Outcome::InventoryAccepted { indexed, unindexed })
    }
}

/// A report must still show everything active reservation `r` holds, free or bound to
/// the reservation's own domain (an incoming migration the target already shows).
pub(super) fn check_report_keeps(server: &Server, r: &Reservation) -> Checked<()> {
    let mine = r.binding.domain.as_str();
    let drops = |what: String| {
        reject(
            RejectCode::InventoryDropsReserved,
            format!(
                "{}'s report {what}, which reservation {} holds for {mine} (operation {}, lease until {} ms)",
                server.name, r.id, r.operation, r.lease_expires_ms
            ),
        )
    };
    for id in &r.binding.strands {
        let found = server.cores.iter().find_map(|c| c.strands.iter().find(|s| s.id == *id).map(|s| (c, s)));
        match found {
            None => return drops(format!("lacks CPU {id}")),
            Some((c, _)) if !c.activated => return drops(format!("shows core {} of CPU {id} deactivated", c.cid)),
            Some((_, s)) => {
                if let Some(d) = &s.bound
                    && d != mine
                {
                    return drops(format!("binds CPU {id} to {d}"));
                }
            }
        }
    }
    for range in &r.binding.memory {
        let mut usable: Vec<Range> = Vec::new();
        for b in server.memory.iter().filter(|b| b.range().overlaps(range)) {
            match &b.bound {
                None => usable.push(b.range()),
                Some(Owner::Domain(d)) if d == mine => usable.push(b.range()),
                Some(other) => return drops(format!("binds memory {} to {other}", b.range())),
            }
        }
        let missing = tern_model::server::subtract_ranges(&[*range], &usable);
        if let Some(m) = missing.first() {
            return drops(format!("lacks memory {m}"));
        }
    }
    if let Some(port) = r.binding.console_port
        && let Some(d) =
            server.domains.iter().find(|d| d.name != mine && d.console.as_ref().is_some_and(|c| c.port == port))
    {
        return drops(format!("gives console port {port} to {}", d.name));
    }
    Ok(())
}

impl State {
    /// `RemoveMember`: the host's record and its domains' records go, and its name is
    /// kept as removed. Refused while the host holds anything the cluster still runs:
    /// a guest (evacuate it first), a reservation, or an operation that is not over.
    pub(super) fn remove_member(&mut self, now: u64, actor: &str, name: &str, node_id: Option<u64>) -> Response {
        if !self.hosts.contains_key(name)
            && let Some(m) = self.meta.removed_members.get_mut(name)
        {
            let learned = m.node_id.is_none() && node_id.is_some();
            if learned {
                m.node_id = node_id;
            }
            let id = m.node_id;
            if learned {
                self.touch(RowKey::Meta);
            }
            return Ok(Outcome::MemberRemoved { node_id: id, already: true });
        }
        let host = self.host_checked(name)?;
        let address = host.address.clone();
        let busy = |what: String| {
            reject(RejectCode::MemberBusy, format!("{name} still {what}; the member stays (nothing changed)"))
        };
        let guests: Vec<&str> = host
            .inventory
            .iter()
            .flat_map(|s| s.domains.iter())
            .filter(|d| d.name != tern_model::server::CONTROL_DOMAIN)
            .map(|d| d.name.as_str())
            .chain(self.domains.iter().filter(|(_, r)| r.host == name).map(|(d, _)| d.as_str()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if !guests.is_empty() {
            return busy(format!(
                "holds guest domain(s) {}: move them away first (`ternctl host evacuate {name}`)",
                guests.join(", ")
            ));
        }
        if let Some(r) = self.reservations.values().find(|r| r.target == name || r.source == name) {
            return busy(format!("takes part in reservation {} (operation {}); wait for it to end", r.id, r.operation));
        }
        let involved = |k: &OperationKind| match k {
            OperationKind::Migration { source, target, .. } => source == name || target == name,
            OperationKind::Evacuation { host }
            | OperationKind::Failover { host }
            | OperationKind::Resize { host, .. } => host == name,
        };
        if let Some(o) = self.operations.values().find(|o| !o.phase.is_terminal() && involved(&o.kind)) {
            return busy(format!("takes part in running {} operation {}; wait for it to end", o.kind.name(), o.id));
        }
        let records: Vec<String> =
            self.domains.iter().filter(|(_, r)| r.host == name).map(|(d, _)| d.clone()).collect();
        for d in records {
            self.set_domain(&d, None);
        }
        self.touch(RowKey::Host(name.to_string()));
        self.touch(RowKey::Inventory(name.to_string()));
        self.hosts.remove(name);
        let removed = RemovedMember { node_id, address, by: actor.to_string(), at_ms: now };
        self.meta.removed_members.insert(name.to_string(), removed);
        self.touch(RowKey::Meta);
        Ok(Outcome::MemberRemoved { node_id, already: false })
    }

    /// `ReadmitMember`: the removed name may register again.
    pub(super) fn readmit_member(&mut self, name: &str) -> Response {
        let was_removed = self.meta.removed_members.remove(name).is_some();
        if was_removed {
            self.touch(RowKey::Meta);
        }
        Ok(Outcome::MemberReadmitted { was_removed })
    }
}
