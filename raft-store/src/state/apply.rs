//! `State::apply`: each command's checks, then its changes.
//!
//! A handler first checks everything that could refuse the command (returning a
//! [`Rejection`] with a stable code and the numbers), and only then changes the state,
//! so a rejected command changes nothing but the clock and the audit log. Leases are
//! judged against the cluster clock (`Meta::clock_ms`), never a local one.

use super::command::{AbortOutcome, Command, HostSpec, Outcome, Progress, RejectCode, Rejection, Request, Response};
use super::records::*;
use super::{RowKey, State, validate};
use crate::limits::*;
use std::collections::BTreeSet;
use tern_model::{Binding, BindingError, DomainKind, GuestShape, Owner, Range, Reserved, Resource, Rule, Server};

type Checked<T> = Result<T, Rejection>;

fn reject<T>(code: RejectCode, message: String) -> Checked<T> {
    Err(Rejection::new(code, message))
}

fn reject_rule<T>(code: RejectCode, rule: Rule, message: String) -> Checked<T> {
    Err(Rejection::with_rule(code, rule, message))
}

/// `s` cut to at most `max` bytes on a character boundary.
fn clip(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

impl State {
    /// Applies the request found at log index `index`. Deterministic: reads only the
    /// state and the request. Every request, accepted or not, advances the cluster
    /// clock and leaves one audit record.
    pub fn apply(&mut self, index: u64, request: &Request) -> Response {
        self.meta.clock_ms = self.meta.clock_ms.max(request.proposed_at_ms);
        self.touch(RowKey::Meta);
        let response = validate::request(request).and_then(|()| self.execute(request));
        self.record(index, request, &response);
        response
    }

    fn execute(&mut self, req: &Request) -> Response {
        let now = self.meta.clock_ms;
        match &req.command {
            Command::RegisterHost { host } => self.register_host(now, host),
            Command::UpdateHost { name, address } => self.update_host(name, address.as_deref()),
            Command::ReportInventory { server } => self.report_inventory(now, server),
            Command::SetHostStatus { host, status } => self.set_host_status(now, host, *status),
            Command::Reserve { operation, target, source, domain, binding, lease_ms } => {
                self.reserve(now, *operation, target, source, domain, binding, *lease_ms)
            }
            Command::Renew { reservation, token, lease_ms } => self.renew(now, *reservation, *token, *lease_ms),
            Command::Release { reservation, token } => {
                self.reservation_checked(*reservation, *token)?;
                self.release(*reservation);
                Ok(Outcome::Released)
            }
            Command::Expire { now_ms } => {
                self.meta.clock_ms = self.meta.clock_ms.max(*now_ms);
                Ok(self.expire())
            }
            Command::BeginOperation { kind } => self.begin_operation(now, &req.actor, kind),
            Command::AdvanceOperation { operation, token, progress } => {
                self.advance_operation(now, *operation, *token, *progress)
            }
            Command::CommitMigration { operation, reservation, token, downtime_ms, total_ms, notes } => {
                self.commit_migration(now, *operation, *reservation, *token, (*downtime_ms, *total_ms), notes)
            }
            Command::AbortOperation { operation, outcome } => {
                self.running_operation_checked(*operation)?;
                let phase = match outcome {
                    AbortOutcome::Cancelled => Phase::Cancelled,
                    AbortOutcome::RolledBack { reason } => Phase::RolledBack { reason: reason.clone() },
                    AbortOutcome::Failed { reason } => Phase::Failed { reason: reason.clone() },
                };
                let released = self.finish_operation(now, *operation, phase, None);
                Ok(Outcome::Aborted { released })
            }
            Command::AddUser { name, password_hash, profiles, replace } => {
                self.add_user(now, name, password_hash, profiles, *replace)
            }
            Command::RemoveUser { name } => {
                if self.users.remove(name).is_none() {
                    return reject(RejectCode::UserUnknown, format!("no user named {name}"));
                }
                self.touch(RowKey::User(name.clone()));
                Ok(Outcome::UserRemoved)
            }
        }
    }

    // ---- lookups that reject --------------------------------------------------

    fn host_checked(&self, name: &str) -> Checked<&Host> {
        match self.hosts.get(name) {
            Some(h) => Ok(h),
            None => reject(RejectCode::HostUnknown, format!("no host named {name} is registered")),
        }
    }

    fn inventory_checked<'a>(&self, host: &'a Host) -> Checked<&'a Server> {
        match &host.inventory {
            Some(i) => Ok(i),
            None => reject(RejectCode::NoInventory, format!("host {} has not reported its inventory yet", host.name)),
        }
    }

    fn running_operation_checked(&self, id: u64) -> Checked<&Operation> {
        match self.operations.get(&id) {
            None => reject(RejectCode::OperationUnknown, format!("no operation {id}")),
            Some(op) if op.phase.is_terminal() => reject(
                RejectCode::OperationFinished,
                format!("operation {id} ({}) has already ended: {}", op.kind.name(), op.phase),
            ),
            Some(op) => Ok(op),
        }
    }

    /// The reservation `id`, if `token` is its fencing token.
    fn reservation_checked(&self, id: u64, token: u64) -> Checked<&Reservation> {
        let Some(r) = self.reservations.get(&id) else {
            return reject(
                RejectCode::ReservationUnknown,
                format!("no reservation {id}: it was never made, or was released, committed or expired"),
            );
        };
        if r.token != token {
            return reject(
                RejectCode::StaleToken,
                format!(
                    "fencing token {token} is not reservation {id}'s (it holds token {}; the last token issued is {})",
                    r.token, self.meta.last_fencing_token
                ),
            );
        }
        Ok(r)
    }

    fn lease_checked(r: &Reservation, now: u64) -> Checked<()> {
        if r.is_active(now) {
            return Ok(());
        }
        reject(
            RejectCode::LeaseExpired,
            format!(
                "reservation {}'s lease ended at {} ms; the cluster clock is {now} ms ({} ms later)",
                r.id,
                r.lease_expires_ms,
                now - r.lease_expires_ms
            ),
        )
    }

    fn lease_ms_checked(lease_ms: u64) -> Checked<()> {
        if lease_ms == 0 || lease_ms > LEASE_MS_MAX {
            return reject(
                RejectCode::InvalidRequest,
                format!("lease of {lease_ms} ms; it must be 1 to {LEASE_MS_MAX} ms"),
            );
        }
        Ok(())
    }

    // ---- writers that mark rows --------------------------------------------------

    fn put_host(&mut self, h: Host) {
        self.touch(RowKey::Host(h.name.clone()));
        self.touch(RowKey::Inventory(h.name.clone()));
        self.hosts.insert(h.name.clone(), h);
    }

    /// A host's own fields (not its inventory, which is a row of its own).
    fn host_mut(&mut self, name: &str) -> Option<&mut Host> {
        self.dirty.insert(RowKey::Host(name.to_string()));
        self.hosts.get_mut(name)
    }

    fn inventory_mut(&mut self, name: &str) -> Option<&mut Option<Server>> {
        self.dirty.insert(RowKey::Inventory(name.to_string()));
        self.hosts.get_mut(name).map(|h| &mut h.inventory)
    }

    fn operation_mut(&mut self, id: u64) -> Option<&mut Operation> {
        self.dirty.insert(RowKey::Operation(id));
        self.operations.get_mut(&id)
    }

    fn set_domain(&mut self, name: &str, rec: Option<DomainRecord>) {
        self.touch(RowKey::Domain(name.to_string()));
        match rec {
            Some(r) => self.domains.insert(name.to_string(), r),
            None => self.domains.remove(name),
        };
    }

    fn record(&mut self, index: u64, req: &Request, response: &Response) {
        let outcome = match response {
            Ok(_) => "ok".to_string(),
            Err(r) => r.code.as_str().to_string(),
        };
        let record = AuditRecord {
            index,
            at_ms: req.proposed_at_ms,
            actor: clip(req.actor.clone(), NAME_BYTES_MAX * 2),
            summary: clip(summarize(&req.command), AUDIT_SUMMARY_BYTES_MAX),
            outcome,
        };
        self.audit.insert(index, record);
        self.touch(RowKey::Audit(index));
        while self.audit.len() > AUDIT_RECORDS_MAX {
            if let Some((old, _)) = self.audit.pop_first() {
                self.touch(RowKey::Audit(old));
            }
        }
    }

    // ---- hosts ---------------------------------------------------------------

    fn register_host(&mut self, now: u64, spec: &HostSpec) -> Response {
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
        });
        Ok(Outcome::HostRegistered)
    }

    fn update_host(&mut self, name: &str, address: Option<&str>) -> Response {
        self.host_checked(name)?;
        if let Some(a) = address
            && let Some(h) = self.host_mut(name)
        {
            a.clone_into(&mut h.address);
        }
        Ok(Outcome::HostUpdated)
    }

    fn set_host_status(&mut self, now: u64, name: &str, status: HostStatus) -> Response {
        let host = self.host_checked(name)?;
        let was = host.status;
        let mut rolled_back = Vec::new();
        let mut released = Vec::new();
        if was != status
            && let Some(h) = self.host_mut(name)
        {
            h.status = status;
            h.status_since_ms = now;
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

    fn report_inventory(&mut self, now: u64, server: &Server) -> Response {
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
        for d in server.domains.iter().filter(|d| d.kind == DomainKind::Guest) {
            if let Some(rec) = self.domains.get(&d.name)
                && rec.host != server.name
                && !active.iter().any(|r| r.binding.domain == d.name)
            {
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
            .filter(|(n, rec)| rec.host == server.name && !reported.contains(n.as_str()))
            .filter(|(n, _)| self.running_operation_for_domain(n).is_none())
            .map(|(n, _)| n.clone())
            .collect();
        for name in &indexed {
            let rec =
                DomainRecord { host: server.name.clone(), ha_priority: HaPriority::default(), affinity_group: None };
            self.set_domain(name, Some(rec));
        }
        for name in &unindexed {
            self.set_domain(name, None);
        }
        if let Some(h) = self.host_mut(&server.name) {
            h.inventory_at_ms = Some(now);
        }
        if let Some(inv) = self.inventory_mut(&server.name) {
            *inv = Some(server.clone());
        }
        Ok(Outcome::InventoryAccepted { indexed, unindexed })
    }

    // ---- reservations ---------------------------------------------------------------

    #[allow(clippy::too_many_arguments)]
    fn reserve(
        &mut self,
        now: u64,
        operation: u64,
        target: &str,
        source: &str,
        domain: &str,
        binding: &Binding,
        lease_ms: u64,
    ) -> Response {
        Self::lease_ms_checked(lease_ms)?;
        let op = self.running_operation_checked(operation)?;
        self.check_reserve_matches(op, now, target, source, domain, binding)?;
        if source == target {
            return reject_rule(
                RejectCode::SameServer,
                Rule::Op(1),
                format!("{domain} is already on {target}; the target must be another server"),
            );
        }
        if self.reservations.len() >= RESERVATIONS_MAX {
            return reject(RejectCode::LimitReached, format!("{RESERVATIONS_MAX} reservations are held already"));
        }
        let target_host = self.host_checked(target)?;
        if target_host.status != HostStatus::Up {
            return reject(
                RejectCode::HostStatus,
                format!("target host {target} is {}; only an up host receives domains", target_host.status),
            );
        }
        let source_host = self.host_checked(source)?;
        let target_inv = self.inventory_checked(target_host)?;
        let source_inv = self.inventory_checked(source_host)?;
        let guest = self.guest_on_source_checked(source_inv, domain)?;
        self.check_name_free(now, target_inv, domain, &binding.domain)?;
        let others: Vec<&Reservation> = self.active_reservations_on(target, now).collect();
        binding_checked(target_inv, &GuestShape::of(source_inv, guest), binding, &others)?;

        let id = self.meta.last_reservation_id + 1;
        let token = self.meta.last_fencing_token + 1;
        self.meta.last_reservation_id = id;
        self.meta.last_fencing_token = token;
        let lease_expires_ms = now.saturating_add(lease_ms);
        self.reservations.insert(
            id,
            Reservation {
                id,
                operation,
                target: target.to_string(),
                source: source.to_string(),
                domain: domain.to_string(),
                binding: binding.clone(),
                created_ms: now,
                lease_expires_ms,
                token,
            },
        );
        self.touch(RowKey::Reservation(id));
        if let Some(h) = self.host_mut(target) {
            h.fencing_token_max = token;
        }
        if let Some(op) = self.operation_mut(operation) {
            op.reservations.insert(id);
            op.updated_ms = now;
            if op.phase == Phase::Preparing {
                op.phase = Phase::Reserved;
            }
        }
        Ok(Outcome::Reserved { reservation: id, token, lease_expires_ms })
    }

    /// The reservation fits its operation: same hosts and domain, the target name the
    /// migration asked for, and at most one reservation per migration.
    fn check_reserve_matches(
        &self,
        op: &Operation,
        now: u64,
        target: &str,
        source: &str,
        domain: &str,
        binding: &Binding,
    ) -> Checked<()> {
        let mismatch = |what: String| {
            reject(RejectCode::OperationMismatch, format!("operation {} ({}) {what}", op.id, op.kind.name()))
        };
        match &op.kind {
            OperationKind::Migration { domain: d, source: s, target: t, new_name, .. } => {
                if d != domain || s != source || t != target {
                    return mismatch(format!("moves {d} from {s} to {t}, not {domain} from {source} to {target}"));
                }
                let want = new_name.as_deref().unwrap_or(d);
                if binding.domain != want {
                    return mismatch(format!("names the domain {want} on {t}, not {}", binding.domain));
                }
                // One reservation per migration. A lapsed one still counts: Expire will
                // roll the migration back, so it must not start over on a new one.
                if let Some(held) = op.reservations.iter().filter_map(|id| self.reservations.get(id)).next() {
                    return mismatch(if held.is_active(now) {
                        format!("already holds reservation {}", held.id)
                    } else {
                        format!(
                            "holds reservation {}, whose lease ended at {} ms; it will be rolled back",
                            held.id, held.lease_expires_ms
                        )
                    });
                }
                Ok(())
            }
            OperationKind::Evacuation { host } | OperationKind::Failover { host } => {
                if host != source {
                    return mismatch(format!("moves guests off {host}, not off {source}"));
                }
                Ok(())
            }
        }
    }

    fn guest_on_source_checked<'a>(&self, source_inv: &'a Server, domain: &str) -> Checked<&'a tern_model::Domain> {
        let Some(guest) = source_inv.domain(domain) else {
            return reject(
                RejectCode::DomainUnknown,
                format!("LDom \"{domain}\" was not found on {}", source_inv.name),
            );
        };
        if guest.kind != DomainKind::Guest {
            return reject_rule(
                RejectCode::NotAGuest,
                Rule::Lm(1),
                format!("{domain} is a {}; only guest domains move", guest.kind),
            );
        }
        match self.domains.get(domain) {
            Some(rec) if rec.host == source_inv.name => Ok(guest),
            Some(rec) => reject(
                RejectCode::DomainUnknown,
                format!("{domain} is recorded on {}, not on {}", rec.host, source_inv.name),
            ),
            None => reject(RejectCode::DomainUnknown, format!("{domain} is not in the domain index")),
        }
    }

    /// OP-05: the name on the target is used by no domain there, no other guest of the
    /// cluster, and no other active reservation on the target.
    fn check_name_free(&self, now: u64, target_inv: &Server, domain: &str, name: &str) -> Checked<()> {
        let taken = |by: String| {
            reject_rule(
                RejectCode::NameTaken,
                Rule::Op(5),
                format!("the name {name} is taken on {} ({by}); give a new name", target_inv.name),
            )
        };
        if target_inv.domain(name).is_some() {
            return taken(format!("{} already has a domain named {name}", target_inv.name));
        }
        if name != domain
            && let Some(rec) = self.domains.get(name)
        {
            return taken(format!("guest {name} runs on {}", rec.host));
        }
        if let Some(r) = self.active_reservations_on(&target_inv.name, now).find(|r| r.binding.domain == name) {
            return taken(format!("reservation {} holds it", r.id));
        }
        Ok(())
    }

    fn renew(&mut self, now: u64, id: u64, token: u64, lease_ms: u64) -> Response {
        Self::lease_ms_checked(lease_ms)?;
        let r = self.reservation_checked(id, token)?;
        Self::lease_checked(r, now)?;
        let expires = r.lease_expires_ms.max(now.saturating_add(lease_ms));
        if let Some(r) = self.reservations.get_mut(&id) {
            r.lease_expires_ms = expires;
        }
        self.touch(RowKey::Reservation(id));
        Ok(Outcome::Renewed { lease_expires_ms: expires })
    }

    /// Removes reservation `id` from the state and its operation; drops the target's
    /// record of the incoming domain it was for, if the target had reported it.
    fn release(&mut self, id: u64) {
        let Some(r) = self.reservations.remove(&id) else { return };
        self.touch(RowKey::Reservation(id));
        if let Some(op) = self.operation_mut(r.operation) {
            op.reservations.remove(&id);
        }
        let name = &r.binding.domain;
        let indexed_here = self.domains.get(name).is_some_and(|rec| rec.host == r.target);
        let reported =
            self.hosts.get(&r.target).and_then(|h| h.inventory.as_ref()).is_some_and(|i| i.domain(name).is_some());
        if reported
            && !indexed_here
            && let Some(Some(inv)) = self.inventory_mut(&r.target)
        {
            inv.unbind_domain(name);
        }
    }

    fn expire(&mut self) -> Outcome {
        let now = self.meta.clock_ms;
        let expired: Vec<(u64, u64)> =
            self.reservations.values().filter(|r| !r.is_active(now)).map(|r| (r.id, r.operation)).collect();
        let mut released = Vec::new();
        let mut rolled_back = Vec::new();
        for (id, operation) in expired {
            if !self.reservations.contains_key(&id) {
                continue; // released with an operation rolled back just before
            }
            self.release(id);
            released.push(id);
            let running = self.operations.get(&operation).is_some_and(|o| !o.phase.is_terminal());
            if running {
                let reason = "lease expired".to_string();
                released.extend(self.finish_operation(now, operation, Phase::RolledBack { reason }, None));
                rolled_back.push(operation);
            }
        }
        Outcome::Expired { released, rolled_back }
    }

    // ---- operations ---------------------------------------------------------------------

    fn begin_operation(&mut self, now: u64, actor: &str, kind: &OperationKind) -> Response {
        let running = self.operations.values().filter(|o| !o.phase.is_terminal()).count();
        if running >= RUNNING_OPERATIONS_MAX {
            return reject(
                RejectCode::LimitReached,
                format!("{running} operations are running; the limit is {RUNNING_OPERATIONS_MAX}"),
            );
        }
        if let Some(other) =
            self.operations.values().find(|o| !o.phase.is_terminal() && o.kind.subject() == kind.subject())
        {
            return reject(
                RejectCode::OperationRunning,
                format!(
                    "operation {} ({}, {}) is already running on {:?}",
                    other.id,
                    other.kind.name(),
                    other.phase,
                    kind.subject()
                ),
            );
        }
        match kind {
            OperationKind::Migration { domain, source, target, new_name, .. } => {
                self.check_migration_start(domain, source, target, new_name.as_deref())?
            }
            OperationKind::Evacuation { host } => {
                let h = self.host_checked(host)?;
                if h.status.is_down() {
                    return reject_rule(
                        RejectCode::HostStatus,
                        Rule::Lm(2),
                        format!("{host} is {}; evacuation migrates from it, so it must be running", h.status),
                    );
                }
            }
            OperationKind::Failover { host } => {
                let h = self.host_checked(host)?;
                if !h.status.is_down() {
                    return reject_rule(
                        RejectCode::HostStatus,
                        Rule::Ha(1),
                        format!("{host} is {}; failover starts only once it is lost or fenced", h.status),
                    );
                }
            }
        }
        let id = self.meta.last_operation_id + 1;
        self.meta.last_operation_id = id;
        self.operations.insert(
            id,
            Operation {
                id,
                kind: kind.clone(),
                phase: Phase::Preparing,
                actor: actor.to_string(),
                started_ms: now,
                updated_ms: now,
                reservations: BTreeSet::new(),
                result: None,
            },
        );
        self.touch(RowKey::Operation(id));
        Ok(Outcome::OperationBegun { operation: id })
    }

    fn check_migration_start(&self, domain: &str, source: &str, target: &str, new_name: Option<&str>) -> Checked<()> {
        if source == target {
            return reject_rule(
                RejectCode::SameServer,
                Rule::Op(1),
                format!("{domain} is already on {target}; the target must be another server"),
            );
        }
        let s = self.host_checked(source)?;
        let t = self.host_checked(target)?;
        if s.status.is_down() {
            return reject_rule(
                RejectCode::HostStatus,
                Rule::Lm(2),
                format!("source {source} is {}: migration needs its control domain; HA failover is the path", s.status),
            );
        }
        if t.status != HostStatus::Up {
            return reject(
                RejectCode::HostStatus,
                format!("target {target} is {}; only an up host receives domains", t.status),
            );
        }
        if let Some(d) = s.inventory.as_ref().and_then(|i| i.domain(domain))
            && d.kind != DomainKind::Guest
        {
            return reject_rule(
                RejectCode::NotAGuest,
                Rule::Lm(1),
                format!("{domain} is a {}; only guest domains migrate", d.kind),
            );
        }
        match self.domains.get(domain) {
            Some(rec) if rec.host == source => {}
            Some(rec) => {
                return reject(RejectCode::DomainUnknown, format!("{domain} runs on {}, not on {source}", rec.host));
            }
            None => {
                return reject_rule(
                    RejectCode::DomainUnknown,
                    Rule::Op(1),
                    format!("LDom \"{domain}\" was not found on {source}"),
                );
            }
        }
        if let Some(n) = new_name
            && n != domain
            && let Some(rec) = self.domains.get(n)
        {
            return reject_rule(
                RejectCode::NameTaken,
                Rule::Op(5),
                format!("the new name {n} is taken by a guest on {}", rec.host),
            );
        }
        Ok(())
    }

    fn advance_operation(&mut self, now: u64, id: u64, token: Option<u64>, progress: Progress) -> Response {
        let op = self.running_operation_checked(id)?;
        match token {
            Some(t) => {
                let Some(r) =
                    op.reservations.iter().filter_map(|rid| self.reservations.get(rid)).find(|r| r.token == t)
                else {
                    let held: Vec<u64> =
                        op.reservations.iter().filter_map(|rid| self.reservations.get(rid)).map(|r| r.token).collect();
                    return reject(
                        RejectCode::StaleToken,
                        format!("fencing token {t} is not held by operation {id} (it holds {held:?})"),
                    );
                };
                Self::lease_checked(r, now)?;
            }
            None if matches!(op.kind, OperationKind::Migration { .. }) => {
                return reject(
                    RejectCode::StaleToken,
                    format!("operation {id} is a migration; it advances only under its reservation's fencing token"),
                );
            }
            None if !op.reservations.is_empty() => {
                return reject(
                    RejectCode::StaleToken,
                    format!("operation {id} holds reservations; advancing it needs one of their fencing tokens"),
                );
            }
            None => {}
        }
        let bare = op.reservations.is_empty();
        let next = match (&op.phase, progress) {
            (_, Progress::Transferring { progress_pct }) if progress_pct > 100 => {
                return reject(RejectCode::InvalidRequest, format!("progress {progress_pct}% is above 100%"));
            }
            (Phase::Reserved, Progress::Transferring { progress_pct }) => Phase::Transferring { progress_pct },
            (Phase::Preparing, Progress::Transferring { progress_pct }) if bare => Phase::Transferring { progress_pct },
            (Phase::Transferring { progress_pct: was }, Progress::Transferring { progress_pct })
                if progress_pct >= *was =>
            {
                Phase::Transferring { progress_pct }
            }
            (Phase::Reserved | Phase::Transferring { .. } | Phase::Committing, Progress::Committing) => {
                Phase::Committing
            }
            (Phase::Preparing, Progress::Committing) if bare => Phase::Committing,
            (phase, progress) => {
                return reject(
                    RejectCode::PhaseInvalid,
                    format!("operation {id} is {phase}; it cannot move to {progress:?}"),
                );
            }
        };
        if let Some(op) = self.operation_mut(id) {
            op.phase = next;
            op.updated_ms = now;
        }
        Ok(Outcome::OperationAdvanced)
    }

    /// Ends operation `id` in `phase` (a terminal one), releasing what it holds.
    /// Returns the released reservation ids.
    fn finish_operation(&mut self, now: u64, id: u64, phase: Phase, result: Option<OperationResult>) -> Vec<u64> {
        let held: Vec<u64> =
            self.operations.get(&id).map(|o| o.reservations.iter().copied().collect()).unwrap_or_default();
        for r in &held {
            self.release(*r);
        }
        let mut subject = None;
        if let Some(op) = self.operation_mut(id) {
            op.phase = phase;
            op.updated_ms = now;
            op.result = result;
            if let OperationKind::Migration { domain, .. } = &op.kind {
                subject = Some(domain.clone());
            }
        }
        if let Some(domain) = subject {
            self.reconcile_index(&domain);
        }
        self.prune_finished();
        held
    }

    /// A report that dropped `domain` while an operation ran on it kept it indexed
    /// (see `report_inventory`); once nothing runs on it, the last report decides.
    fn reconcile_index(&mut self, domain: &str) {
        let Some(rec) = self.domains.get(domain) else { return };
        let reported =
            self.hosts.get(&rec.host).and_then(|h| h.inventory.as_ref()).is_some_and(|i| i.domain(domain).is_some());
        if !reported && self.running_operation_for_domain(domain).is_none() {
            self.set_domain(domain, None);
        }
    }

    /// Keeps at most `FINISHED_OPERATIONS_KEPT_MAX` finished operations, dropping the oldest.
    fn prune_finished(&mut self) {
        let finished: Vec<u64> = self.operations.values().filter(|o| o.phase.is_terminal()).map(|o| o.id).collect();
        let excess = finished.len().saturating_sub(FINISHED_OPERATIONS_KEPT_MAX);
        for id in finished.into_iter().take(excess) {
            self.operations.remove(&id);
            self.touch(RowKey::Operation(id));
        }
    }

    fn commit_migration(
        &mut self,
        now: u64,
        id: u64,
        reservation: u64,
        token: u64,
        (downtime_ms, total_ms): (u64, u64),
        notes: &[String],
    ) -> Response {
        let op = self.running_operation_checked(id)?;
        let OperationKind::Migration { domain, source, target, dry_run, .. } = &op.kind else {
            return reject(
                RejectCode::OperationMismatch,
                format!("operation {id} is a {}, not a migration", op.kind.name()),
            );
        };
        let r = self.reservation_checked(reservation, token)?;
        if r.operation != id {
            return reject(
                RejectCode::OperationMismatch,
                format!("reservation {reservation} belongs to operation {}, not {id}", r.operation),
            );
        }
        Self::lease_checked(r, now)?;
        if !matches!(op.phase, Phase::Reserved | Phase::Transferring { .. } | Phase::Committing) {
            return reject(
                RejectCode::PhaseInvalid,
                format!("operation {id} is {}; only a reserved or transferring migration commits", op.phase),
            );
        }
        let (domain, source, target, dry_run) = (domain.clone(), source.clone(), target.clone(), *dry_run);
        let binding = r.binding.clone();
        let source_host = self.host_checked(&source)?;
        let target_host = self.host_checked(&target)?;
        if target_host.status.is_down() {
            return reject(RejectCode::HostStatus, format!("target {target} is {}", target_host.status));
        }
        let source_inv = self.inventory_checked(source_host)?;
        let target_inv = self.inventory_checked(target_host)?;
        let old_cpu = source_inv.cpu_of(&domain);
        let mut result = OperationResult {
            old_cids: old_cpu.cids.clone(),
            new_cids: binding.cids.clone(),
            old_console_port: source_inv.domain(&domain).and_then(|d| d.console.as_ref()).map(|c| c.port),
            new_console_port: binding.console_port,
            downtime_ms,
            total_ms,
            notes: notes.to_vec(),
        };
        if dry_run {
            result.notes.push("OP-02 dry run: every check passed; nothing moved".into());
            let result = clip_notes(result);
            self.finish_operation(now, id, Phase::Done, Some(result.clone()));
            return Ok(Outcome::Committed { moved: false, result });
        }
        if binding.domain != domain
            && let Some(rec) = self.domains.get(&binding.domain)
        {
            return reject_rule(
                RejectCode::NameTaken,
                Rule::Op(5),
                format!("the name {} was taken by a guest on {} meanwhile", binding.domain, rec.host),
            );
        }
        // Work on copies; nothing changes unless both sides succeed. The guest's shape
        // is the source's, or the incoming copy's once the source no longer shows it.
        let shape = source_inv
            .domain(&domain)
            .map(|g| GuestShape::of(source_inv, g))
            .or_else(|| target_inv.domain(&binding.domain).map(|g| GuestShape::of(target_inv, g)));
        let mut new_source = source_inv.clone();
        let mut new_target = target_inv.clone();
        let moved = new_source.unbind_domain(&domain).map(|(d, _, _)| d);
        let incoming = new_target.unbind_domain(&binding.domain).map(|(d, _, _)| d);
        let (Some(guest), Some(shape)) = (moved.or(incoming), shape) else {
            return reject(
                RejectCode::DomainUnknown,
                format!("{domain} is in neither {source}'s nor {target}'s inventory"),
            );
        };
        // The same check as Reserve's, on the target without the incoming copy.
        let others: Vec<&Reservation> =
            self.active_reservations_on(&target, now).filter(|r| r.id != reservation).collect();
        binding_checked(&new_target, &shape, &binding, &others)?;
        if let Err(e) = new_target.bind_domain(guest, &binding) {
            return reject(
                RejectCode::CommitFailed,
                format!("binding {} on {target} failed: {e}; nothing changed", binding.domain),
            );
        }
        if result.old_cids != result.new_cids {
            result.notes.push(format!(
                "LM-12: core IDs changed from {:?} to {:?}; re-pinning them needs a restart",
                result.old_cids, result.new_cids
            ));
        }
        if result.old_console_port != result.new_console_port
            && let Some(p) = result.new_console_port
        {
            result.notes.push(format!(
                "LM-13: console port is now {p} (was {})",
                result.old_console_port.map_or("none".to_string(), |p| p.to_string())
            ));
        }
        let result = clip_notes(result);
        let record = self.domains.get(&domain).cloned().map(|rec| DomainRecord { host: target.clone(), ..rec });
        if let Some(inv) = self.inventory_mut(&source) {
            *inv = Some(new_source);
        }
        if let Some(inv) = self.inventory_mut(&target) {
            *inv = Some(new_target);
        }
        self.set_domain(&domain, None);
        self.set_domain(
            &binding.domain,
            Some(record.unwrap_or(DomainRecord {
                host: target.clone(),
                ha_priority: HaPriority::default(),
                affinity_group: None,
            })),
        );
        // The reservation is consumed: it became the binding.
        self.reservations.remove(&reservation);
        self.touch(RowKey::Reservation(reservation));
        if let Some(op) = self.operation_mut(id) {
            op.reservations.remove(&reservation);
        }
        self.finish_operation(now, id, Phase::Done, Some(result.clone()));
        Ok(Outcome::Committed { moved: true, result })
    }

    // ---- users ------------------------------------------------------------------

    fn add_user(
        &mut self,
        now: u64,
        name: &str,
        password_hash: &str,
        profiles: &BTreeSet<Profile>,
        replace: bool,
    ) -> Response {
        let exists = self.users.contains_key(name);
        if exists && !replace {
            return reject(RejectCode::UserExists, format!("user {name} exists; set replace to change it"));
        }
        if !exists && self.users.len() >= USERS_MAX {
            return reject(RejectCode::LimitReached, format!("{USERS_MAX} users exist already"));
        }
        crate::auth::check_phc(password_hash)?;
        self.users.insert(
            name.to_string(),
            User {
                name: name.to_string(),
                password_hash: password_hash.to_string(),
                profiles: profiles.clone(),
                created_ms: now,
            },
        );
        self.touch(RowKey::User(name.to_string()));
        Ok(Outcome::UserAdded)
    }
}

fn clip_notes(mut r: OperationResult) -> OperationResult {
    r.notes.truncate(NOTES_MAX);
    r
}

/// The one binding check ([`Server::check_binding`]: LM-06, LM-09, LM-12, LM-13) on
/// `target` with `others` reserved; its refusal mapped to a [`RejectCode`], naming the
/// reservation that holds a contested resource.
fn binding_checked(target: &Server, shape: &GuestShape, binding: &Binding, others: &[&Reservation]) -> Checked<()> {
    let mut reserved = Reserved::default();
    for r in others {
        reserved.add(&r.binding);
    }
    let Err(e) = target.check_binding(shape, binding, &reserved) else {
        return Ok(());
    };
    let code = match e.resource() {
        Resource::Strand => RejectCode::StrandUnavailable,
        Resource::Memory => RejectCode::MemoryUnavailable,
        Resource::ConsolePort => RejectCode::ConsolePortUnavailable,
        Resource::Shape => RejectCode::ShapeMismatch,
        Resource::Form => RejectCode::BindingInvalid,
    };
    let mut message = format!("binding for {} on {}: {e}", binding.domain, target.name);
    if let Some(r) = holder(&e, others) {
        message.push_str(&format!(
            " by reservation {} for {} (operation {}, lease until {} ms)",
            r.id, r.binding.domain, r.operation, r.lease_expires_ms
        ));
    }
    match e.rule() {
        Some(rule) => reject_rule(code, rule, message),
        None => reject(code, message),
    }
}

/// The reservation holding what `e` found reserved.
fn holder<'a>(e: &BindingError, others: &[&'a Reservation]) -> Option<&'a Reservation> {
    others.iter().copied().find(|r| match e {
        BindingError::StrandReserved { strand } => r.binding.strands.contains(strand),
        BindingError::MemoryReserved { held, .. } => r.binding.memory.iter().any(|m| m.overlaps(held)),
        BindingError::ConsolePortReserved { port } => r.binding.console_port == Some(*port),
        _ => false,
    })
}

/// A report must still show everything active reservation `r` holds, free or bound to
/// the reservation's own domain (an incoming migration the target already shows).
fn check_report_keeps(server: &Server, r: &Reservation) -> Checked<()> {
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

/// One line for the audit log.
fn summarize(c: &Command) -> String {
    match c {
        Command::RegisterHost { host } => format!("register host {} at {}", host.name, host.address),
        Command::UpdateHost { name, .. } => format!("update host {name}"),
        Command::ReportInventory { server } => format!(
            "inventory of {}: {} cores, {} memory blocks, {} domains",
            server.name,
            server.cores.len(),
            server.memory.len(),
            server.domains.len()
        ),
        Command::SetHostStatus { host, status } => format!("host {host} is {status}"),
        Command::Reserve { operation, target, binding, lease_ms, .. } => {
            format!("reserve for operation {operation} on {target} for {lease_ms} ms: {binding}")
        }
        Command::Renew { reservation, lease_ms, .. } => format!("renew reservation {reservation} by {lease_ms} ms"),
        Command::Release { reservation, .. } => format!("release reservation {reservation}"),
        Command::Expire { now_ms } => format!("expire leases at {now_ms} ms"),
        Command::BeginOperation { kind } => match kind {
            OperationKind::Migration { domain, source, target, new_name, dry_run } => format!(
                "begin {}migration of {domain} from {source} to {target}{}",
                if *dry_run { "dry-run " } else { "" },
                new_name.as_ref().map(|n| format!(" as {n}")).unwrap_or_default()
            ),
            OperationKind::Evacuation { host } => format!("begin evacuation of {host}"),
            OperationKind::Failover { host } => format!("begin failover of {host}"),
        },
        Command::AdvanceOperation { operation, progress, .. } => format!("advance operation {operation}: {progress:?}"),
        Command::CommitMigration { operation, reservation, downtime_ms, .. } => {
            format!("commit operation {operation} with reservation {reservation}, downtime {downtime_ms} ms")
        }
        Command::AbortOperation { operation, outcome } => format!("abort operation {operation}: {outcome:?}"),
        Command::AddUser { name, profiles, .. } => {
            let p: Vec<&str> = profiles.iter().map(Profile::as_str).collect();
            format!("add user {name} with profiles [{}]", p.join(", "))
        }
        Command::RemoveUser { name } => format!("remove user {name}"),
    }
}
