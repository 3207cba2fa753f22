//! Reservations: reserve (with the one binding check), renew, release, expire.

use super::*;

impl State {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn reserve(
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
        let growth = matches!(op.kind, OperationKind::Resize { .. });
        if source == target && !growth {
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
        let others: Vec<&Reservation> = self.active_reservations_on(target, now).collect();
        if growth {
            // RB-06: what a guest gains where it runs, by the one growth check.
            growth_checked(target_inv, binding, &others)?;
        } else {
            self.check_name_free(now, target_inv, domain, &binding.domain)?;
            binding_checked(target_inv, &GuestShape::of(source_inv, guest), binding, &others)?;
        }

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
    pub(super) fn check_reserve_matches(
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
            OperationKind::Resize { domain: d, host, .. } => {
                if d != domain || host != source || host != target {
                    return mismatch(format!("resizes {d} on {host}, not {domain} from {source} to {target}"));
                }
                if binding.domain != *d {
                    return mismatch(format!("gives {d} more, not {}", binding.domain));
                }
                if let Some(held) = op.reservations.iter().filter_map(|id| self.reservations.get(id)).next() {
                    return mismatch(format!("already holds reservation {}", held.id));
                }
                Ok(())
            }
            OperationKind::Evacuation { host } => {
                if host != source {
                    return mismatch(format!("moves guests off {host}, not off {source}"));
                }
                Ok(())
            }
            OperationKind::Failover { host } => {
                if host != source {
                    return mismatch(format!("restarts guests of {host}, not of {source}"));
                }
                if binding.domain != domain {
                    return mismatch(format!("restarts {domain} under its own name, not as {}", binding.domain));
                }
                // HA-02: nothing of a lost host restarts elsewhere before it is fenced,
                // or counts stopped by the host's own means (HA-08).
                if let Err(why) = self.counts_stopped(host, domain, now) {
                    return reject_rule(RejectCode::HostStatus, Rule::Ha(2), why);
                }
                if let Some(held) = op
                    .reservations
                    .iter()
                    .filter_map(|id| self.reservations.get(id))
                    .find(|r| r.domain == domain && r.is_active(now))
                {
                    return mismatch(format!("already holds reservation {} for {domain}", held.id));
                }
                Ok(())
            }
        }
    }

    pub(super) fn guest_on_source_checked<'a>(
        &self,
        source_inv: &'a Server,
        domain: &str,
    ) -> Checked<&'a tern_model::Domain> {
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
    pub(super) fn check_name_free(&self, now: u64, target_inv: &Server, domain: &str, name: &str) -> Checked<()> {
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

    pub(super) fn renew(&mut self, now: u64, id: u64, token: u64, lease_ms: u64) -> Response {
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
    pub(super) fn release(&mut self, id: u64) {
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

    pub(super) fn expire(&mut self) -> Outcome {
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
            // A failover outlives a lapsed reservation: its guest is planned again.
            let running = self
                .operations
                .get(&operation)
                .is_some_and(|o| !o.phase.is_terminal() && !matches!(o.kind, OperationKind::Failover { .. }));
            if running {
                let reason = "lease expired".to_string();
                released.extend(self.finish_operation(now, operation, Phase::RolledBack { reason }, None));
                rolled_back.push(operation);
            }
        }
        Outcome::Expired { released, rolled_back }
    }
}

/// The one growth check ([`Server::check_growth`]: RB-06 with LM-06 and LM-09) on the
/// guest's host with `others` reserved; its refusal mapped like [`binding_checked`]'s.
pub(super) fn growth_checked(host: &Server, add: &Binding, others: &[&Reservation]) -> Checked<()> {
    let mut reserved = Reserved::default();
    others.iter().for_each(|r| reserved.add(&r.binding));
    let Err(e) = host.check_growth(&add.domain, add, &reserved) else {
        return Ok(());
    };
    match e {
        tern_model::ResizeError::Binding(b) => refusal(host, add, others, b),
        e => Err(resize_refusal(&e, &add.domain, &host.name)),
    }
}

/// A resize the model refuses (RB-06), as the state machine's [`Rejection`]: the code
/// says which resource, the rule which check. The agent's planner uses it too, so a
/// user reads one wording whichever side refused.
pub fn resize_refusal(e: &tern_model::ResizeError, domain: &str, host: &str) -> Rejection {
    use tern_model::ResizeError as E;
    let code = match e {
        E::UnknownDomain { .. } => RejectCode::DomainUnknown,
        E::NotAGuest { .. } => RejectCode::NotAGuest,
        E::TooFewCores { .. } => RejectCode::StrandUnavailable,
        E::TooLittleMemory { .. } => RejectCode::MemoryUnavailable,
        E::Binding(b) => match b.resource() {
            Resource::Strand => RejectCode::StrandUnavailable,
            Resource::Memory => RejectCode::MemoryUnavailable,
            _ => RejectCode::BindingInvalid,
        },
        E::NothingLeft { .. } | E::RemovesTooMuch { .. } | E::NotWholeCores { .. } => RejectCode::InvalidRequest,
        E::Unaligned { .. } | E::Foreign { .. } | E::NotHeld { .. } => RejectCode::BindingInvalid,
    };
    Rejection::with_rule(code, e.rule(), format!("resize of {domain} on {host}: {e}"))
}

/// The one binding check ([`Server::check_binding`]: LM-06, LM-09, LM-12, LM-13) on
/// `target` with `others` reserved; its refusal mapped to a [`RejectCode`], naming the
/// reservation that holds a contested resource.
pub(super) fn binding_checked(
    target: &Server,
    shape: &GuestShape,
    binding: &Binding,
    others: &[&Reservation],
) -> Checked<()> {
    let contested = Reserved::contested_by(binding, others.iter().map(|r| &r.binding));
    let Err(e) = target.check_binding(shape, binding, &contested) else {
        return Ok(());
    };
    refusal(target, binding, others, e)
}

/// A refused binding as a [`RejectCode`], naming the reservation that holds a
/// contested resource.
fn refusal(target: &Server, binding: &Binding, others: &[&Reservation], e: BindingError) -> Checked<()> {
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
pub(super) fn holder<'a>(e: &BindingError, others: &[&'a Reservation]) -> Option<&'a Reservation> {
    others.iter().copied().find(|r| match e {
        BindingError::StrandReserved { strand } => r.binding.strands.contains(strand),
        BindingError::MemoryReserved { held, .. } => r.binding.memory.iter().any(|m| m.overlaps(held)),
        BindingError::ConsolePortReserved { port } => r.binding.console_port == Some(*port),
        _ => false,
    })
}
