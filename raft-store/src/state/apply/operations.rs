//! Operations: begin, advance, commit a migration, finish (releasing what they hold).

use super::*;

impl State {
    pub(super) fn begin_operation(&mut self, now: u64, actor: &str, kind: &OperationKind) -> Response {
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
                    "operation {} ({}, {}) is already running on {}: wait for it to end, or cancel it \
                     (`ternctl cancel-operation`)",
                    other.id,
                    other.kind.name(),
                    other.phase,
                    kind.subject()
                ),
            );
        }
        match kind {
            OperationKind::Migration { domain, source, target, new_name, plan, .. } => {
                self.check_migration_start(domain, source, target, new_name.as_deref())?;
                if let Some(id) = plan {
                    self.check_plan_move(*id, domain, source, target)?;
                }
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
            OperationKind::Resize { domain, host, growth } => self.check_resize_start(domain, host, growth)?,
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

    pub(super) fn check_migration_start(
        &self,
        domain: &str,
        source: &str,
        target: &str,
        new_name: Option<&str>,
    ) -> Checked<()> {
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

    pub(super) fn advance_operation(&mut self, now: u64, id: u64, token: Option<u64>, progress: Progress) -> Response {
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
    /// `CompleteOperation`: an evacuation (UC-1) ends Done with its summary. A
    /// migration cannot end so: only its commit moves the domain.
    pub(super) fn complete_operation(&mut self, now: u64, id: u64, notes: &[String]) -> Response {
        let op = self.running_operation_checked(id)?;
        match op.kind {
            OperationKind::Migration { .. } => {
                return reject(
                    RejectCode::InvalidRequest,
                    format!("operation {id} is a migration; it ends by CommitMigration or AbortOperation"),
                );
            }
            OperationKind::Resize { .. } => {
                return reject(
                    RejectCode::InvalidRequest,
                    format!("operation {id} is a resize; it ends by CommitResize or AbortOperation"),
                );
            }
            _ => {}
        }
        if !op.reservations.is_empty() {
            return reject(
                RejectCode::InvalidRequest,
                format!("operation {id} holds reservations; release or commit them first"),
            );
        }
        // A failover's restarts left their notes on it already (CommitRestart).
        let mut result = op.result.clone().unwrap_or_default();
        result.notes.extend(notes.iter().cloned());
        let result = clip_notes(result);
        self.finish_operation(now, id, Phase::Done, Some(result));
        Ok(Outcome::Completed)
    }

    pub(super) fn finish_operation(
        &mut self,
        now: u64,
        id: u64,
        phase: Phase,
        result: Option<OperationResult>,
    ) -> Vec<u64> {
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
            if let OperationKind::Migration { domain, .. } | OperationKind::Resize { domain, .. } = &op.kind {
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
    pub(super) fn reconcile_index(&mut self, domain: &str) {
        let Some(rec) = self.domains.get(domain) else { return };
        if !self.reports_guest(&rec.host, domain) && self.running_operation_for_domain(domain).is_none() {
            self.record_gone_guest(domain);
        }
    }

    /// When `domain`'s last operation is a migration `from` -> `to` that did not commit
    /// and the guest now runs on `to` (ldm completed the move), the operation says so.
    pub(super) fn note_settled_by_hypervisor(&mut self, domain: &str, from: &str, to: &str) {
        let Some((id, ..)) = self.uncommitted_migration(domain).filter(|(_, f, t)| *f == from && *t == to) else {
            return;
        };
        let note =
            format!("settled by the hypervisor: {domain} runs on {to}, as its report shows (ldm completed the move)");
        if let Some(op) = self.operation_mut(id) {
            let result = op.result.get_or_insert_with(Default::default);
            if !result.notes.contains(&note) {
                result.notes.push(note);
            }
        }
    }

    /// The one rule for a guest its recorded host's report no longer shows, nothing
    /// running on it: the servers may have moved it. The record follows it to an up
    /// host whose report shows it; else, if its last operation was a migration from
    /// here that did not commit, it awaits the target's report (`DomainRecord::awaiting`);
    /// else the guest is gone and forgotten.
    pub(super) fn record_gone_guest(&mut self, domain: &str) {
        let Some(rec) = self.domains.get(domain).cloned() else { return };
        let rec = if let Some(host) = self.up_host_reporting(domain, &rec.host).map(str::to_string) {
            self.note_settled_by_hypervisor(domain, &rec.host, &host);
            Some(rec.on(&host))
        } else {
            match self.uncommitted_migration(domain) {
                Some((_, from, to)) if from == rec.host => Some(DomainRecord { awaiting: Some(to.to_string()), ..rec }),
                _ => None,
            }
        };
        self.set_domain(domain, rec);
    }

    /// Keeps at most `FINISHED_OPERATIONS_KEPT_MAX` finished operations, dropping the oldest.
    pub(super) fn prune_finished(&mut self) {
        let finished: Vec<u64> = self.operations.values().filter(|o| o.phase.is_terminal()).map(|o| o.id).collect();
        let excess = finished.len().saturating_sub(FINISHED_OPERATIONS_KEPT_MAX);
        for id in finished.into_iter().take(excess) {
            self.operations.remove(&id);
            self.touch(RowKey::Operation(id));
        }
    }

    pub(super) fn commit_migration(
        &mut self,
        now: u64,
        id: u64,
        reservation: u64,
        token: u64,
        (downtime_ms, total_ms): (u64, u64),
        notes: &[String],
    ) -> Response {
        let Migrating { domain, source, target, dry_run, binding } =
            self.commit_checked(now, id, reservation, token)?;
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
        let (new_source, new_target) =
            self.moved_inventories(now, reservation, (&domain, &source, &target), (source_inv, target_inv), &binding)?;
        add_commit_notes(&mut result);
        let result = clip_notes(result);
        self.settle_move(id, reservation, (&domain, &source, &target), &binding.domain, (new_source, new_target));
        self.finish_operation(now, id, Phase::Done, Some(result.clone()));
        Ok(Outcome::Committed { moved: true, result })
    }

    /// RB-06: a resize starts on a guest recorded on `host`, which is up with an
    /// inventory that shows it, and names what to change.
    fn check_resize_start(&self, domain: &str, host: &str, growth: &tern_model::rebalance::Growth) -> Checked<()> {
        if growth.cores.is_none() && growth.memory.is_none() {
            return reject_rule(
                RejectCode::InvalidRequest,
                Rule::Rb(6),
                format!("a resize of {domain} names neither cores nor memory"),
            );
        }
        let h = self.host_checked(host)?;
        if h.status != HostStatus::Up {
            return reject_rule(
                RejectCode::HostStatus,
                Rule::Rb(6),
                format!("{host} is {}; a guest grows only on an up host", h.status),
            );
        }
        let inv = self.inventory_checked(h)?;
        self.guest_on_source_checked(inv, domain)?;
        Ok(())
    }

    /// `CommitResize` (RB-06): the guest gains its reservation's binding and gives
    /// back `removed` in its host's inventory, by [`Server::resize_domain`] after the
    /// one growth check against every other reservation on the host. The reservation
    /// is consumed; the operation is Done with the cores before and after.
    pub(super) fn commit_resize(
        &mut self,
        now: u64,
        id: u64,
        (reservation, token): (Option<u64>, Option<u64>),
        removed: &Binding,
    ) -> Response {
        let op = self.running_operation_checked(id)?;
        let OperationKind::Resize { domain, host, growth } = &op.kind else {
            return reject(
                RejectCode::OperationMismatch,
                format!("operation {id} is a {}, not a resize", op.kind.name()),
            );
        };
        let (domain, host, growth) = (domain.clone(), host.clone(), *growth);
        let held: Vec<u64> = op.reservations.iter().copied().collect();
        let add = match (reservation, token) {
            (Some(r), Some(t)) => self.live_reservation_of(id, r, t, now)?.binding.clone(),
            (None, None) if held.is_empty() => Binding { domain: domain.clone(), ..Binding::default() },
            (None, None) => {
                return reject(
                    RejectCode::OperationMismatch,
                    format!("operation {id} holds reservation(s) {held:?}; its commit must name the one it binds"),
                );
            }
            _ => {
                return reject(
                    RejectCode::InvalidRequest,
                    "a resize commit names a reservation together with its token, or neither".into(),
                );
            }
        };
        let inv = self.inventory_checked(self.host_checked(&host)?)?;
        let resize = tern_model::Resize { domain: domain.clone(), add, remove: removed.clone() };
        let pending = inv.pending_of(&resize);
        let others: Vec<&Reservation> =
            self.active_reservations_on(&host, now).filter(|r| Some(r.id) != reservation).collect();
        reservations::growth_checked(inv, &pending.add, &others)?;
        let mut after = inv.clone();
        if let Err(e) = after.resize_domain(&resize) {
            return reject_rule(
                RejectCode::CommitFailed,
                e.rule(),
                format!("resizing {domain} on {host} failed: {e}; nothing changed"),
            );
        }
        let (old, new) = (inv.cpu_of(&domain), after.cpu_of(&domain));
        let memory = |s: &Server| tern_model::Size(s.memory_of(&domain).iter().map(|r| r.size).sum());
        let result = OperationResult {
            old_cids: old.cids.clone(),
            new_cids: new.cids.clone(),
            notes: vec![format!(
                "RB-06: {domain} on {host} holds {} core(s) and {} of memory (was {} and {}; asked {growth})",
                new.cids.len(),
                memory(&after),
                old.cids.len(),
                memory(inv)
            )],
            ..OperationResult::default()
        };
        if let Some(inv) = self.inventory_mut(&host) {
            *inv = Some(after);
        }
        if let Some(r) = reservation {
            // The reservation is consumed: it became the guest's binding.
            self.reservations.remove(&r);
            self.touch(RowKey::Reservation(r));
            if let Some(op) = self.operation_mut(id) {
                op.reservations.remove(&r);
            }
        }
        self.finish_operation(now, id, Phase::Done, Some(result.clone()));
        Ok(Outcome::Resized { result })
    }

    /// `CommitRestart` (HA-04): the guest of a fenced host (or one counted stopped on
    /// its lost host, HA-08) runs on its reservation's target. The same move as a migration's commit, without a live source.
    pub(super) fn commit_restart(&mut self, now: u64, id: u64, reservation: u64, token: u64) -> Response {
        let op = self.running_operation_checked(id)?;
        let OperationKind::Failover { host } = &op.kind else {
            return reject(
                RejectCode::OperationMismatch,
                format!("operation {id} is a {}, not a failover", op.kind.name()),
            );
        };
        let source = host.clone();
        let r = self.live_reservation_of(id, reservation, token, now)?;
        let (domain, target, binding) = (r.domain.clone(), r.target.clone(), r.binding.clone());
        let source_host = self.host_checked(&source)?;
        if let Err(why) = self.counts_stopped(&source, &domain, now) {
            return reject_rule(RejectCode::HostStatus, Rule::Ha(2), why);
        }
        let target_host = self.host_checked(&target)?;
        if target_host.status.is_down() {
            return reject(RejectCode::HostStatus, format!("target {target} is {}", target_host.status));
        }
        let source_inv = self.inventory_checked(source_host)?;
        let target_inv = self.inventory_checked(target_host)?;
        let moved =
            self.moved_inventories(now, reservation, (&domain, &source, &target), (source_inv, target_inv), &binding)?;
        self.settle_move(id, reservation, (&domain, &source, &target), &binding.domain, moved);
        if let Some(op) = self.operation_mut(id) {
            op.updated_ms = now;
            let result = op.result.get_or_insert_with(OperationResult::default);
            if result.notes.len() < NOTES_MAX {
                result.notes.push(format!("HA-04: {domain} restarted on {target} ({})", binding));
            }
        }
        Ok(Outcome::Restarted { domain, target })
    }

    /// Records a checked move: both inventories, the domain index (under its name on
    /// the target, keeping its settings) and the reservation consumed into the binding.
    fn settle_move(
        &mut self,
        id: u64,
        reservation: u64,
        (domain, source, target): (&str, &str, &str),
        name_on_target: &str,
        (new_source, new_target): (Server, Server),
    ) {
        let record = self.domains.get(domain).map(|rec| rec.on(target));
        if let Some(inv) = self.inventory_mut(source) {
            *inv = Some(new_source);
        }
        if let Some(inv) = self.inventory_mut(target) {
            *inv = Some(new_target);
        }
        self.set_domain(domain, None);
        self.set_domain(name_on_target, Some(record.unwrap_or_else(|| DomainRecord::new(target))));
        // The reservation is consumed: it became the binding.
        self.reservations.remove(&reservation);
        self.touch(RowKey::Reservation(reservation));
        if let Some(op) = self.operation_mut(id) {
            op.reservations.remove(&reservation);
        }
    }

    /// Reservation `reservation` under `token`, held by operation `id`, its lease live.
    fn live_reservation_of(&self, id: u64, reservation: u64, token: u64, now: u64) -> Checked<&Reservation> {
        let r = self.reservation_checked(reservation, token)?;
        if r.operation != id {
            return reject(
                RejectCode::OperationMismatch,
                format!("reservation {reservation} belongs to operation {}, not {id}", r.operation),
            );
        }
        Self::lease_checked(r, now)?;
        Ok(r)
    }

    /// The checks before a commit: a running migration, its reservation under the
    /// right token with its lease live, a phase that may commit.
    fn commit_checked(&self, now: u64, id: u64, reservation: u64, token: u64) -> Checked<Migrating> {
        let op = self.running_operation_checked(id)?;
        let OperationKind::Migration { domain, source, target, dry_run, .. } = &op.kind else {
            return reject(
                RejectCode::OperationMismatch,
                format!("operation {id} is a {}, not a migration", op.kind.name()),
            );
        };
        let r = self.live_reservation_of(id, reservation, token, now)?;
        if !matches!(op.phase, Phase::Reserved | Phase::Transferring { .. } | Phase::Committing) {
            return reject(
                RejectCode::PhaseInvalid,
                format!("operation {id} is {}; only a reserved or transferring migration commits", op.phase),
            );
        }
        Ok(Migrating {
            domain: domain.clone(),
            source: source.clone(),
            target: target.clone(),
            dry_run: *dry_run,
            binding: r.binding.clone(),
        })
    }

    /// Both inventories after the move, built on copies (nothing changes here): the
    /// name still free (OP-05), the guest found, the binding passing the same check as
    /// Reserve's on the target without its incoming copy, then bound.
    fn moved_inventories(
        &self,
        now: u64,
        reservation: u64,
        (domain, source, target): (&str, &str, &str),
        (source_inv, target_inv): (&Server, &Server),
        binding: &Binding,
    ) -> Checked<(Server, Server)> {
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
            .domain(domain)
            .map(|g| GuestShape::of(source_inv, g))
            .or_else(|| target_inv.domain(&binding.domain).map(|g| GuestShape::of(target_inv, g)));
        let mut new_source = source_inv.clone();
        let mut new_target = target_inv.clone();
        let moved = new_source.unbind_domain(domain).map(|(d, _, _)| d);
        let incoming = new_target.unbind_domain(&binding.domain).map(|(d, _, _)| d);
        let (Some(guest), Some(shape)) = (moved.or(incoming), shape) else {
            return reject(
                RejectCode::DomainUnknown,
                format!("{domain} is in neither {source}'s nor {target}'s inventory"),
            );
        };
        // The same check as Reserve's, on the target without the incoming copy.
        let others: Vec<&Reservation> =
            self.active_reservations_on(target, now).filter(|r| r.id != reservation).collect();
        reservations::binding_checked(&new_target, &shape, binding, &others)?;
        if let Err(e) = new_target.bind_domain(guest, binding) {
            return reject(
                RejectCode::CommitFailed,
                format!("binding {} on {target} failed: {e}; nothing changed", binding.domain),
            );
        }
        Ok((new_source, new_target))
    }
}

/// What a commit moves, once `commit_checked` passed.
struct Migrating {
    domain: String,
    source: String,
    target: String,
    dry_run: bool,
    binding: Binding,
}

/// LM-12 and LM-13 notes: core IDs and console port changed.
fn add_commit_notes(result: &mut OperationResult) {
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
}

pub(super) fn clip_notes(mut r: OperationResult) -> OperationResult {
    r.notes.truncate(NOTES_MAX);
    r
}
