//! `State::apply`: each command's checks, then its changes.
//!
//! Split by concern: [`hosts`] (registration, status, inventory reports),
//! [`reservations`] (reserve, renew, release, expire and the binding check),
//! [`operations`] (begin, advance, commit, finish), [`users`] (users and the audit
//! log). This module dispatches and holds the lookups and row writers they share.
//!
//! A handler first checks everything that could refuse the command (returning a
//! [`Rejection`] with a stable code and the numbers), and only then changes the state,
//! so a rejected command changes nothing but the clock and the audit log. Leases are
//! judged against the cluster clock (`Meta::clock_ms`), never a local one.

use super::command::{AbortOutcome, Command, HostSpec, Outcome, Progress, RejectCode, Rejection, Request, Response};
use super::records::*;
use super::{RemovedMember, RowKey, State, validate};
use crate::limits::*;

mod hosts;
mod operations;
mod rebalance;
mod reservations;
pub use reservations::resize_refusal;
mod users;
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
    /// clock and leaves one audit record; a batch's requests are applied one after the
    /// other, each as such a request (a batch that is itself malformed is refused whole,
    /// with one record).
    pub fn apply(&mut self, index: u64, request: &Request) -> Response {
        if let Command::Batch { requests } = &request.command
            && validate::request(request).is_ok()
        {
            let responses = requests.iter().map(|r| self.apply_one(index, r)).collect();
            return Ok(Outcome::Batch { responses });
        }
        self.apply_one(index, request)
    }

    fn apply_one(&mut self, index: u64, request: &Request) -> Response {
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
            Command::UpdateHost { name, address, self_stop } => self.update_host(name, address.as_deref(), *self_stop),
            Command::ReportInventory { server } => self.report_inventory(now, server),
            Command::SetHostStatus { host, status, expected } => self.set_host_status(now, host, *status, *expected),
            Command::SetDomain { domain, ha_priority, affinity_group, anti_affinity_group } => self
                .set_domain_settings(domain, *ha_priority, affinity_group.as_deref(), anti_affinity_group.as_deref()),
            Command::SetRebalance { config } => {
                self.rebalance = config.clone();
                self.touch(RowKey::Rebalance);
                Ok(Outcome::RebalanceSet)
            }
            Command::RecordPlan { purpose, plan, digest } => self.record_plan(now, &req.actor, purpose, plan, *digest),
            Command::ApplyPlan { id } => self.apply_plan(now, &req.actor, *id),
            Command::EndPlan { id, end } => self.end_plan(now, &req.actor, *id, end),
            Command::CommitRestart { operation, reservation, token } => {
                self.commit_restart(now, *operation, *reservation, *token)
            }
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
            Command::CommitResize { operation, reservation, token, removed } => {
                self.commit_resize(now, *operation, (*reservation, *token), removed)
            }
            Command::CompleteOperation { operation, notes } => self.complete_operation(now, *operation, notes),
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
            Command::RemoveMember { name, node_id } => self.remove_member(now, &req.actor, name, *node_id),
            Command::ReadmitMember { name } => self.readmit_member(name),
            // Only a malformed batch gets here (`apply` takes the others apart), and
            // `validate::request` has refused it already.
            Command::Batch { .. } => reject(RejectCode::InvalidRequest, "a malformed batch".into()),
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
}
