//! Users (OP-04) and the audit log.

use super::*;

impl State {
    pub(super) fn record(&mut self, index: u64, req: &Request, response: &Response) {
        let outcome = match response {
            Ok(_) => "ok".to_string(),
            Err(r) => r.code.as_str().to_string(),
        };
        let record = AuditRecord {
            index,
            at_ms: req.proposed_at_ms,
            actor: clip(req.actor.clone(), NAME_BYTES_MAX * 2),
            from: clip(req.from.clone(), NAME_BYTES_MAX),
            summary: clip(summarize(&req.command), AUDIT_SUMMARY_BYTES_MAX),
            outcome,
        };
        // Keyed by the log index; the later requests of a batch, which share their
        // entry's index, take the next free keys (the record keeps the true index).
        let key = match self.audit.last_key_value() {
            Some((&last, _)) if last >= index => last + 1,
            _ => index,
        };
        self.audit.insert(key, record);
        self.touch(RowKey::Audit(key));
        while self.audit.len() > AUDIT_RECORDS_MAX {
            if let Some((old, _)) = self.audit.pop_first() {
                self.touch(RowKey::Audit(old));
            }
        }
    }

    pub(super) fn add_user(
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

/// One line for the audit log.
pub(super) fn summarize(c: &Command) -> String {
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
        Command::SetHostStatus { host, status, expected } => match expected {
            Some(was) => format!("host {host} is {status} (was {was})"),
            None => format!("host {host} is {status}"),
        },
        Command::SetDomain { domain, ha_priority, affinity_group, anti_affinity_group } => {
            let mut set = Vec::new();
            if let Some(p) = ha_priority {
                set.push(format!("ha-priority={}", p.as_str()));
            }
            if let Some(g) = affinity_group {
                set.push(format!("affinity-group={g}"));
            }
            if let Some(g) = anti_affinity_group {
                set.push(format!("anti-affinity-group={g}"));
            }
            format!("domain {domain}: {}", set.join(" "))
        }
        Command::SetRebalance { config } => format!(
            "rebalance auto={} level={} max-moves={} cooldown={} ms",
            if config.auto { "on" } else { "off" },
            config.level,
            config.max_moves,
            config.cooldown_ms
        ),
        Command::RecordPlan { purpose, plan, .. } => match purpose {
            crate::state::records::PlanPurpose::Balance => {
                format!("record rebalance plan of {} move(s)", plan.moves.len())
            }
            crate::state::records::PlanPurpose::MakeRoom { domain, target } => {
                format!("record make-room plan for {domain} on {target}: {} move(s)", plan.moves.len())
            }
            crate::state::records::PlanPurpose::Grow { domain, growth } => {
                format!("record plan to grow {domain} to {growth}: {} move(s)", plan.moves.len())
            }
        },
        Command::ApplyPlan { id } => format!("apply rebalance plan {id}"),
        Command::EndPlan { id, end } => format!("end rebalance plan {id}: {end:?}"),
        Command::CommitRestart { operation, reservation, .. } => {
            format!("commit restart of operation {operation} with reservation {reservation}")
        }
        Command::Reserve { operation, target, binding, lease_ms, .. } => {
            format!("reserve for operation {operation} on {target} for {lease_ms} ms: {binding}")
        }
        Command::Renew { reservation, lease_ms, .. } => format!("renew reservation {reservation} by {lease_ms} ms"),
        Command::Release { reservation, .. } => format!("release reservation {reservation}"),
        Command::Expire { now_ms } => format!("expire leases at {now_ms} ms"),
        Command::Batch { requests } => format!("batch of {} request(s)", requests.len()),
        Command::BeginOperation { kind } => match kind {
            OperationKind::Migration { domain, source, target, new_name, dry_run, plan } => format!(
                "begin {}migration of {domain} from {source} to {target}{}{}",
                if *dry_run { "dry-run " } else { "" },
                new_name.as_ref().map(|n| format!(" as {n}")).unwrap_or_default(),
                plan.map(|p| format!(" (move of rebalance plan {p})")).unwrap_or_default()
            ),
            OperationKind::Evacuation { host } => format!("begin evacuation of {host}"),
            OperationKind::Failover { host } => format!("begin failover of {host}"),
            OperationKind::Resize { domain, host, growth } => format!("begin resize of {domain} on {host} to {growth}"),
        },
        Command::AdvanceOperation { operation, progress, .. } => format!("advance operation {operation}: {progress:?}"),
        Command::CommitMigration { operation, reservation, downtime_ms, .. } => {
            format!("commit operation {operation} with reservation {reservation}, downtime {downtime_ms} ms")
        }
        Command::CommitResize { operation, reservation, removed, .. } => format!(
            "commit resize of operation {operation}{}{}",
            reservation.map(|r| format!(" with reservation {r}")).unwrap_or_default(),
            if removed.is_empty() { String::new() } else { format!(", giving back {removed}") }
        ),
        Command::CompleteOperation { operation, .. } => format!("complete operation {operation}"),
        Command::AbortOperation { operation, outcome } => format!("abort operation {operation}: {outcome:?}"),
        Command::AddUser { name, profiles, .. } => {
            let p: Vec<&str> = profiles.iter().map(Profile::as_str).collect();
            format!("add user {name} with profiles [{}]", p.join(", "))
        }
        Command::RemoveUser { name } => format!("remove user {name}"),
        Command::RemoveMember { name, node_id } => format!(
            "remove member {name}{} from the cluster",
            node_id.map(|id| format!(" (raft id {id})")).unwrap_or_default()
        ),
        Command::ReadmitMember { name } => format!("let removed member {name} join again"),
    }
}
