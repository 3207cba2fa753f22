//! Field checks of a request against [`crate::limits`]: names, text lengths, counts.
//!
//! Pure and cheap; run by apply (so every member rejects alike) and by
//! [`crate::Request::validate`] in the proposer.

use crate::limits::*;
use crate::state::command::{AbortOutcome, Command, RejectCode, Rejection, Request};
use crate::state::records::OperationKind;
use tern_model::{Binding, Server};

fn invalid(message: String) -> Rejection {
    Rejection::new(RejectCode::InvalidRequest, message)
}

/// A host, domain, user or group name: 1..=64 bytes of `[A-Za-z0-9._-]`, not starting
/// with `-` or `.` (no `:` or `@`, which the CLI uses as separators).
pub fn name(what: &str, value: &str) -> Result<(), Rejection> {
    if value.is_empty() || value.len() > NAME_BYTES_MAX {
        return Err(invalid(format!(
            "{what} {value:?} must be 1 to {NAME_BYTES_MAX} bytes long (it is {})",
            value.len()
        )));
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !value.chars().all(ok_char) || value.starts_with(['-', '.']) {
        return Err(invalid(format!(
            "{what} {value:?} may hold only letters, digits, '.', '_' and '-', and may not start with '-' or '.'"
        )));
    }
    Ok(())
}

/// Free text kept on one line: at most 256 bytes, no control characters.
pub fn text(what: &str, value: &str) -> Result<(), Rejection> {
    if value.len() > TEXT_BYTES_MAX {
        return Err(invalid(format!("{what} is {} bytes long; the limit is {TEXT_BYTES_MAX}", value.len())));
    }
    if value.chars().any(char::is_control) {
        return Err(invalid(format!("{what} may not hold control characters")));
    }
    Ok(())
}

fn count(what: &str, n: usize, max: usize) -> Result<(), Rejection> {
    if n > max {
        return Err(invalid(format!("{what}: {n} given; the limit is {max}")));
    }
    Ok(())
}

/// Every field of `request`.
pub fn request(request: &Request) -> Result<(), Rejection> {
    if request.actor.is_empty() {
        return Err(invalid("actor is empty; every command names who asked".into()));
    }
    text("actor", &request.actor)?;
    command(&request.command)
}

fn command(command: &Command) -> Result<(), Rejection> {
    match command {
        Command::RegisterHost { host } => {
            name("host name", &host.name)?;
            text("address", &host.address)
        }
        Command::UpdateHost { name: host, address, self_stop } => {
            name("host name", host)?;
            if let Some(a) = address {
                text("address", a)?;
            }
            if let Some(s) = self_stop {
                for (what, v) in [
                    ("isolation_timeout_ms", s.isolation_timeout_ms),
                    ("watchdog_timeout_ms", s.watchdog_timeout_ms),
                    ("margin_ms", s.margin_ms),
                ] {
                    if v > SELF_STOP_MS_MAX {
                        return Err(invalid(format!("self-stop {what} is {v} ms; the limit is {SELF_STOP_MS_MAX}")));
                    }
                }
            }
            Ok(())
        }
        Command::ReportInventory { server } => inventory(server),
        Command::SetHostStatus { host, .. } => name("host name", host),
        Command::SetDomain { domain, affinity_group, anti_affinity_group, .. } => {
            name("domain", domain)?;
            for g in [affinity_group, anti_affinity_group].into_iter().flatten().filter(|g| !g.is_empty()) {
                name("group", g)?;
            }
            Ok(())
        }
        Command::SetRebalance { config } => rebalance_config(config),
        Command::RecordPlan { purpose, plan, .. } => {
            match purpose {
                crate::state::records::PlanPurpose::Balance => {}
                crate::state::records::PlanPurpose::MakeRoom { domain, target } => {
                    name("domain", domain)?;
                    name("target host", target)?;
                }
                crate::state::records::PlanPurpose::Grow { domain, .. } => name("domain", domain)?,
            }
            count("moves in a plan", plan.moves.len(), PLAN_MOVES_MAX)?;
            count("notes", plan.notes.len(), PLAN_NOTES_MAX)?;
            plan.notes.iter().try_for_each(|n| text("note", n))?;
            for m in &plan.moves {
                name("domain", &m.domain)?;
                name("source host", &m.source)?;
                name("target host", &m.target)?;
                binding(&m.binding)?;
            }
            Ok(())
        }
        Command::ApplyPlan { .. } => Ok(()),
        Command::EndPlan { end, .. } => match end {
            crate::state::command::PlanEnd::Done { notes } => {
                count("notes", notes.len(), NOTES_MAX)?;
                notes.iter().try_for_each(|n| text("note", n))
            }
            crate::state::command::PlanEnd::Failed { reason } => text("reason", reason),
            crate::state::command::PlanEnd::Cancelled => Ok(()),
        },
        Command::CommitRestart { .. } => Ok(()),
        Command::CommitResize { removed, .. } => binding_parts(removed),
        Command::Reserve { target, source, domain, binding: b, .. } => {
            name("target host", target)?;
            name("source host", source)?;
            name("domain", domain)?;
            reserved_binding(b)
        }
        Command::Renew { .. } | Command::Release { .. } | Command::Expire { .. } => Ok(()),
        Command::Batch { requests } => {
            count("batched requests", requests.len(), BATCH_REQUESTS_MAX)?;
            if requests.is_empty() {
                return Err(invalid("a batch holds at least one request".into()));
            }
            if requests.iter().any(|r| matches!(r.command, Command::Batch { .. })) {
                return Err(invalid("a batch may not hold a batch".into()));
            }
            // Each request's own fields are checked when it is applied, so that one bad
            // request is refused alone.
            Ok(())
        }
        Command::BeginOperation { kind } => operation_kind(kind),
        Command::AdvanceOperation { .. } => Ok(()),
        Command::CommitMigration { notes, .. } | Command::CompleteOperation { notes, .. } => {
            count("notes", notes.len(), NOTES_MAX)?;
            notes.iter().try_for_each(|n| text("note", n))
        }
        Command::AbortOperation { outcome, .. } => match outcome {
            AbortOutcome::Cancelled => Ok(()),
            AbortOutcome::RolledBack { reason } | AbortOutcome::Failed { reason } => text("reason", reason),
        },
        Command::AddUser { name: user, password_hash, profiles, .. } => {
            name("user name", user)?;
            if password_hash.len() > PASSWORD_HASH_BYTES_MAX {
                return Err(invalid(format!(
                    "password hash is {} bytes long; the limit is {PASSWORD_HASH_BYTES_MAX}",
                    password_hash.len()
                )));
            }
            count("profiles", profiles.len(), PROFILES_MAX)?;
            profiles.iter().try_for_each(|p| {
                if p.as_str().is_empty() {
                    return Err(invalid("a profile name is empty".into()));
                }
                text("profile", p.as_str())
            })
        }
        Command::RemoveUser { name: user } => name("user name", user),
        Command::RemoveMember { name: host, .. } | Command::ReadmitMember { name: host } => name("host name", host),
    }
}

/// The rebalancing policy's bounds.
fn rebalance_config(c: &crate::state::records::RebalanceConfig) -> Result<(), Rejection> {
    let within = |what: &str, v: u64, lo: u64, hi: u64| {
        if (lo..=hi).contains(&v) {
            Ok(())
        } else {
            Err(invalid(format!("rebalance {what} is {v}; it must be {lo} to {hi}")))
        }
    };
    within("max_moves", u64::from(c.max_moves), 1, PLAN_MOVES_MAX as u64)?;
    within("host_concurrency", u64::from(c.host_concurrency), 1, 16)?;
    within("cluster_concurrency", u64::from(c.cluster_concurrency), 1, 64)?;
    within("cooldown_ms", c.cooldown_ms, 0, REBALANCE_MS_MAX)?;
    within("hold_rounds", u64::from(c.hold_rounds), 1, 1000)?;
    within("cpu_weight", u64::from(c.cpu_weight), 0, 100)?;
    within("memory_weight", u64::from(c.memory_weight), 0, 100)?;
    within("cpu_weight + memory_weight", u64::from(c.cpu_weight) + u64::from(c.memory_weight), 1, 200)?;
    within("max_downtime_ms", c.max_downtime_ms, 1, REBALANCE_MS_MAX)?;
    count("groups", c.groups.len(), GROUPS_MAX)?;
    c.groups.keys().try_for_each(|g| name("group", g))
}

fn operation_kind(kind: &OperationKind) -> Result<(), Rejection> {
    match kind {
        OperationKind::Migration { domain, source, target, new_name, .. } => {
            name("domain", domain)?;
            name("source host", source)?;
            name("target host", target)?;
            if let Some(n) = new_name {
                name("new name", n)?;
            }
            Ok(())
        }
        OperationKind::Evacuation { host } | OperationKind::Failover { host } => name("host name", host),
        OperationKind::Resize { domain, host, .. } => {
            name("domain", domain)?;
            name("host name", host)
        }
    }
}

/// A reservation's binding: sizes within limits, no duplicate strand, no empty or
/// overlapping memory range, no range past the end of the address space.
pub fn binding(b: &Binding) -> Result<(), Rejection> {
    let malformed = |m: String| Rejection::new(RejectCode::BindingInvalid, m);
    if b.strands.is_empty() {
        return Err(malformed(format!("binding for {} holds no CPU", b.domain)));
    }
    if b.memory.is_empty() {
        return Err(malformed(format!("binding for {} holds no memory", b.domain)));
    }
    binding_parts(b)
}

/// What a reservation holds: a whole guest's binding, or what a guest gains where it
/// runs (RB-06: cores, memory or both, checked against the guest's shape in apply).
fn reserved_binding(b: &Binding) -> Result<(), Rejection> {
    if b.is_empty() {
        return Err(Rejection::new(RejectCode::BindingInvalid, format!("binding for {} holds nothing", b.domain)));
    }
    binding_parts(b)
}

/// A binding's sizes and form, whatever it holds (a resize gives back a part of one).
fn binding_parts(b: &Binding) -> Result<(), Rejection> {
    let malformed = |m: String| Rejection::new(RejectCode::BindingInvalid, m);
    name("domain name on the target", &b.domain)?;
    count("strands in a binding", b.strands.len(), BINDING_STRANDS_MAX)?;
    count("CIDs in a binding", b.cids.len(), BINDING_STRANDS_MAX)?;
    count("memory ranges in a binding", b.memory.len(), BINDING_RANGES_MAX)?;
    let mut strands = b.strands.clone();
    strands.sort_unstable();
    if let Some(w) = strands.windows(2).find(|w| w[0] == w[1]) {
        return Err(malformed(format!("binding for {} lists CPU {} twice", b.domain, w[0])));
    }
    let mut ranges = b.memory.clone();
    ranges.sort();
    for r in &ranges {
        if r.size == 0 {
            return Err(malformed(format!("binding for {} has an empty memory range at {:#x}", b.domain, r.pa)));
        }
        if r.pa.checked_add(r.size).is_none() {
            return Err(malformed(format!(
                "binding for {} has memory at {:#x} running past the end of the address space",
                b.domain, r.pa
            )));
        }
    }
    if let Some(w) = ranges.windows(2).find(|w| w[0].overlaps(&w[1])) {
        return Err(malformed(format!("binding for {} has overlapping memory ranges {} and {}", b.domain, w[0], w[1])));
    }
    Ok(())
}

/// An inventory report's size and names (its consistency is `Server::validate`'s job).
fn inventory(server: &Server) -> Result<(), Rejection> {
    name("host name", &server.name)?;
    text("model", &server.model)?;
    text("firmware", &server.firmware.0)?;
    count("cores", server.cores.len(), INVENTORY_CORES_MAX)?;
    let strands: usize = server.cores.iter().map(|c| c.strands.len()).sum();
    count("strands", strands, INVENTORY_STRANDS_MAX)?;
    count("memory blocks", server.memory.len(), INVENTORY_MEMORY_BLOCKS_MAX)?;
    count("domains", server.domains.len(), INVENTORY_DOMAINS_MAX)?;
    let s = &server.services;
    count("services", s.vds.len() + s.vsw.len() + s.vcc.len(), INVENTORY_SERVICES_MAX)?;
    for vds in &s.vds {
        count("volumes of one VDS", vds.volumes.len(), INVENTORY_VOLUMES_MAX)?;
    }
    for d in &server.domains {
        name("domain", &d.name)?;
        count("vdisks of one domain", d.vdisks.len(), INVENTORY_VOLUMES_MAX)?;
        count("vnets of one domain", d.vnets.len(), INVENTORY_SERVICES_MAX)?;
    }
    Ok(())
}
