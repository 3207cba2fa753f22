//! Every conversion between `tern.v1` messages and the model, the replicated state
//! and the seam's types (`tern-cluster`), and the one mapping of the seam's
//! [`Error`] to a gRPC status and back: in one place, so the services and the peer
//! client stay about behaviour.

use serde::Serialize;
use serde::de::DeserializeOwned;
use tern_cluster::peer::Stage;
use tern_cluster::{Error, Finding, MigrateRequest, MigrationEvent, MigrationReport, PrepareRequest, Prepared};
use tern_migrate::hosts::{HostEvent, HostRequest};
use tern_model::{Range, Reserved, Rule, Server};
use tern_proto::v1 as pb;
use tern_raft_store::{HostStatus, Operation, OperationKind, Phase, RejectCode, Rejection, State};
use tonic::metadata::{AsciiMetadataValue, BinaryMetadataValue};
use tonic::{Code, Status};

pub fn host_status(s: HostStatus) -> pb::HostStatus {
    match s {
        HostStatus::Up => pb::HostStatus::Up,
        HostStatus::Suspect => pb::HostStatus::Suspect,
        HostStatus::Lost => pb::HostStatus::Lost,
        HostStatus::Fenced => pb::HostStatus::Fenced,
        HostStatus::Maintenance => pb::HostStatus::Maintenance,
    }
}

/// Every domain of `server` as `ldm list-domain` would show it, with any operation
/// the replicated state records for it.
pub fn domains(state: &State, server: &Server, only: Option<&str>) -> Vec<pb::DomainInfo> {
    server
        .domains
        .iter()
        .filter(|d| only.is_none_or(|n| n == d.name))
        .map(|d| {
            let cpu = server.cpu_of(&d.name);
            let memory = server.memory_of(&d.name);
            let cores = server
                .cores
                .iter()
                .filter(|c| cpu.cids.contains(&c.cid))
                .map(|c| pb::CoreBinding {
                    cid: c.cid,
                    cpuset: c.strands.iter().filter(|s| s.bound.as_deref() == Some(&d.name)).map(|s| s.id).collect(),
                })
                .collect();
            let status = state.running_operation_for_domain(&d.name).map(|op| operation_status(&op.kind, &op.phase));
            pb::DomainInfo {
                name: d.name.clone(),
                host: server.name.clone(),
                kind: kind_name(d.kind).into(),
                state: d.state.to_string(),
                vcpus: cpu.strands.len() as u32,
                memory_bytes: memory.iter().map(|r| r.size).sum(),
                cpu_arch: d.cpu_arch.to_string(),
                cores,
                memory: memory.iter().map(|r| pb::MemoryRange { pa: r.pa, size: r.size }).collect(),
                console: d.console.as_ref().map(|c| pb::ConsoleInfo {
                    service: c.service.clone(),
                    port: u32::from(c.port),
                    logging: c.logging,
                }),
                util_pct: d.workload.cpu_pct,
                status,
            }
        })
        .collect()
}

/// OP-06's OPERATION / PROGRESS / SOURCE for a running operation.
pub fn operation_status(kind: &OperationKind, phase: &Phase) -> pb::OperationStatus {
    let (source, target) = match kind {
        OperationKind::Migration { source, target, .. } => (source.clone(), target.clone()),
        OperationKind::Evacuation { host } | OperationKind::Failover { host } => (host.clone(), String::new()),
        OperationKind::Resize { host, .. } => (host.clone(), host.clone()),
    };
    let progress_pct = match phase {
        Phase::Transferring { progress_pct } => u32::from(*progress_pct),
        Phase::Committing | Phase::Done => 100,
        _ => 0,
    };
    pb::OperationStatus { operation: kind.name().to_string(), progress_pct, source, target }
}

fn kind_name(k: tern_model::DomainKind) -> &'static str {
    match k {
        tern_model::DomainKind::Control => "control",
        tern_model::DomainKind::IoRoot => "io-root",
        tern_model::DomainKind::Service => "service",
        tern_model::DomainKind::Guest => "guest",
    }
}

/// `ldm list-devices` rows for one server; without `all`, only free resources
/// (reservations count as taken).
pub fn devices(server: &Server, reserved: &Reserved, all: bool) -> pb::HostDevices {
    let memory = if all {
        let mut blocks = server.memory.clone();
        blocks.sort_by_key(|b| b.pa);
        blocks
            .into_iter()
            .map(|b| pb::MemoryRow {
                pa: b.pa,
                size: b.size,
                bound: b.bound.map(|o| o.to_string()).unwrap_or_default(),
            })
            .collect()
    } else {
        server
            .free_ranges(reserved)
            .into_iter()
            .map(|r| pb::MemoryRow { pa: r.pa, size: r.size, bound: String::new() })
            .collect()
    };
    let cores = server
        .cores
        .iter()
        .filter(|c| all || c.activated)
        .map(|c| {
            let free = c.strands.iter().filter(|s| s.bound.is_none() && !reserved.strands.contains(&s.id)).count();
            pb::CoreRow {
                cid: c.cid,
                cpuset: c.cpuset(),
                free_pct: (free * 100 / c.strands.len().max(1)) as u32,
                activated: c.activated,
            }
        })
        .filter(|r| all || r.free_pct > 0)
        .collect();
    // The caller counts the host's reservations (`reserved` merges them).
    pb::HostDevices { host: server.name.clone(), memory, cores, ..Default::default() }
}

pub fn services(server: &Server) -> pb::HostServices {
    let s = &server.services;
    pb::HostServices {
        host: server.name.clone(),
        vds: s
            .vds
            .iter()
            .map(|v| pb::Vds {
                name: v.name.clone(),
                domain: v.domain.clone(),
                volumes: v
                    .volumes
                    .iter()
                    .map(|x| pb::Volume { name: x.name.clone(), device: x.device.clone(), shared: x.shared })
                    .collect(),
            })
            .collect(),
        vsw: s
            .vsw
            .iter()
            .map(|v| pb::Vsw { name: v.name.clone(), domain: v.domain.clone(), nic: v.nic.clone() })
            .collect(),
        vcc: s
            .vcc
            .iter()
            .map(|v| pb::Vcc {
                name: v.name.clone(),
                domain: v.domain.clone(),
                port_min: u32::from(v.port_min),
                port_max: u32::from(v.port_max),
            })
            .collect(),
    }
}

// ---------------------------------------------------------------------------
// Errors: the seam's typed error as a gRPC status and back, with the codes STYLE.md
// names. What a caller decides on travels in metadata, never in the message text.

/// Metadata of a FAILED_PRECONDITION "not the leader": the leader's agent address.
pub const LEADER_HEADER: &str = "tern-leader";
/// Metadata of a state-machine rejection: the [`Rejection`] itself (JSON), so the
/// caller gets back the typed value with its rule and code.
pub const REJECTION_HEADER: &str = "tern-rejection-bin";

/// The gRPC status for `e`: not-leader is FAILED_PRECONDITION with the leader's
/// address in [`LEADER_HEADER`]; a rejection is NOT_FOUND, INVALID_ARGUMENT or
/// FAILED_PRECONDITION by its code, with the rejection in [`REJECTION_HEADER`];
/// overload or partition is UNAVAILABLE; a passed deadline DEADLINE_EXCEEDED.
pub fn status(e: Error) -> Status {
    match e {
        Error::NotLeader { ref leader } => {
            // Present even when the leader is unknown (empty): the header, not the
            // message, says "not the leader".
            let mut s = Status::failed_precondition(e.to_string());
            let value = leader.as_deref().and_then(|a| a.parse::<AsciiMetadataValue>().ok());
            s.metadata_mut().insert(LEADER_HEADER, value.unwrap_or_else(|| AsciiMetadataValue::from_static("")));
            s
        }
        Error::Rejected(r) => {
            let mut s = Status::new(rejection_code(r.code), r.to_string());
            if let Ok(json) = serde_json::to_vec(&r) {
                s.metadata_mut().insert_bin(REJECTION_HEADER, BinaryMetadataValue::from_bytes(&json));
            }
            s
        }
        Error::Conflict(m) => Status::failed_precondition(m),
        Error::Unavailable(m) => Status::unavailable(m),
        Error::Timeout(m) => Status::deadline_exceeded(m),
        Error::NotFound(m) => Status::not_found(m),
        Error::InvalidInput(m) => Status::invalid_argument(m),
        Error::PermissionDenied(m) => Status::permission_denied(m),
        Error::Internal(m) => Status::internal(m),
    }
}

/// The code a state-machine rejection travels with: a missing thing is NOT_FOUND,
/// bad input INVALID_ARGUMENT, a conflict with the current state FAILED_PRECONDITION.
pub fn rejection_code(code: RejectCode) -> Code {
    use RejectCode as C;
    match code {
        C::HostUnknown | C::ReservationUnknown | C::OperationUnknown | C::UserUnknown | C::DomainUnknown => {
            Code::NotFound
        }
        C::InvalidRequest | C::InventoryInvalid | C::BindingInvalid => Code::InvalidArgument,
        _ => Code::FailedPrecondition,
    }
}

/// The seam's error for a status another agent (or the transport) answered.
pub fn error(s: Status) -> Error {
    if let Some(r) = rejection(&s) {
        return Error::Rejected(r);
    }
    let m = s.message().to_string();
    match s.code() {
        Code::FailedPrecondition if s.metadata().contains_key(LEADER_HEADER) => {
            Error::NotLeader { leader: leader_address(&s) }
        }
        Code::FailedPrecondition | Code::Aborted | Code::AlreadyExists => Error::Conflict(m),
        // tonic reports its own request timeout as CANCELLED ("Timeout expired").
        Code::DeadlineExceeded | Code::Cancelled => Error::Timeout(m),
        Code::Unavailable | Code::ResourceExhausted => Error::Unavailable(m),
        Code::NotFound => Error::NotFound(m),
        Code::InvalidArgument | Code::OutOfRange => Error::InvalidInput(m),
        Code::PermissionDenied | Code::Unauthenticated => Error::PermissionDenied(m),
        // tonic's own code for a call whose connection broke before the answer (the
        // peer died or restarted mid-call): its outcome is unknown, as after a deadline.
        Code::Unknown => {
            Error::Timeout(format!("the connection broke before the answer ({m}); it may or may not have taken effect"))
        }
        Code::Internal => Error::Internal(m),
        other => Error::Internal(format!("{other:?}: {m}")),
    }
}

/// The leader's address a not-leader status carries in [`LEADER_HEADER`].
pub fn leader_address(s: &Status) -> Option<String> {
    s.metadata().get(LEADER_HEADER).and_then(|v| v.to_str().ok()).filter(|a| !a.is_empty()).map(str::to_string)
}

/// The state-machine rejection a status carries in [`REJECTION_HEADER`].
pub fn rejection(s: &Status) -> Option<Rejection> {
    let bytes = s.metadata().get_bin(REJECTION_HEADER)?.to_bytes().ok()?;
    serde_json::from_slice(&bytes).ok()
}

// ---------------------------------------------------------------------------
// Model values embedded in messages (a server, a binding): a version byte, then
// JSON. The model is the schema; the version lets a newer agent refuse (or upgrade)
// what it cannot read.

pub const EMBEDDED_VERSION: u8 = 1;
use crate::limits::EMBEDDED_VALUE_BYTES_MAX as EMBEDDED_BYTES_MAX;

pub fn embed<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    let mut out = vec![EMBEDDED_VERSION];
    serde_json::to_writer(&mut out, value).map_err(|e| Error::Internal(format!("encoding: {e}")))?;
    Ok(out)
}

pub fn unembed<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Error> {
    if bytes.len() > EMBEDDED_BYTES_MAX {
        return Err(Error::InvalidInput(format!("{what}: {} bytes exceeds {EMBEDDED_BYTES_MAX}", bytes.len())));
    }
    match bytes.split_first() {
        Some((&EMBEDDED_VERSION, body)) => {
            serde_json::from_slice(body).map_err(|e| Error::InvalidInput(format!("{what}: {e}")))
        }
        Some((v, _)) => Err(Error::InvalidInput(format!("{what}: encoding version {v} is not supported"))),
        None => Err(Error::InvalidInput(format!("{what}: empty"))),
    }
}

// ---------------------------------------------------------------------------
// Migration messages.

fn text(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// A SPEC rule id (`LM-04`) as the model's rule; anything else is no rule.
pub fn rule(text: &str) -> Option<Rule> {
    text.parse().ok()
}

pub fn finding_to_pb(f: &Finding) -> pb::Violation {
    pb::Violation {
        rule: f.rule.map(|r| r.to_string()).unwrap_or_default(),
        code: f.code.clone(),
        message: f.message.clone(),
    }
}

pub fn finding(v: &pb::Violation) -> Finding {
    Finding::new(rule(&v.rule), v.code.clone(), v.message.clone())
}

fn findings_to_pb(fs: &[Finding]) -> Vec<pb::Violation> {
    fs.iter().map(finding_to_pb).collect()
}

fn findings(vs: &[pb::Violation]) -> Vec<Finding> {
    vs.iter().map(finding).collect()
}

/// `Rebalance.Resize`'s request in the model's words: each verb with its amount.
pub fn resize_request(r: pb::ResizeRequest) -> Result<tern_migrate::resize::ResizeRequest, Error> {
    use tern_model::Amount;
    let amount = |what: &str, verb: &str, n: u64| match verb {
        "" => Ok(None),
        "add" => Ok(Some(Amount::Add(n))),
        "set" => Ok(Some(Amount::Set(n))),
        "remove" => Ok(Some(Amount::Remove(n))),
        other => Err(Error::InvalidInput(format!("{what} verb {other:?} is not add, set or remove"))),
    };
    Ok(tern_migrate::resize::ResizeRequest {
        cores: amount("cores", &r.cores_verb, r.cores)?,
        memory: amount("memory", &r.memory_verb, r.memory_bytes)?,
        domain: r.domain,
    })
}

pub fn resize_report_to_pb(r: &tern_migrate::resize::ResizeReport) -> pb::ResizeResponse {
    pb::ResizeResponse {
        operation_id: r.operation,
        domain: r.domain.clone(),
        host: r.host.clone(),
        old_cids: r.old_cids.clone(),
        new_cids: r.new_cids.clone(),
        old_memory_bytes: r.old_memory,
        new_memory_bytes: r.new_memory,
        added_cids: r.added.cids.clone(),
        added_memory: ranges_to_pb(&r.added.memory),
        removed_cids: r.removed.cids.clone(),
        removed_memory: ranges_to_pb(&r.removed.memory),
        notes: r.notes.clone(),
    }
}

fn ranges_to_pb(rs: &[Range]) -> Vec<pb::MemoryRange> {
    rs.iter().map(|r| pb::MemoryRange { pa: r.pa, size: r.size }).collect()
}

fn ranges(rs: &[pb::MemoryRange]) -> Vec<Range> {
    rs.iter().map(|r| Range { pa: r.pa, size: r.size }).collect()
}

fn port_to_pb(p: Option<u16>) -> u32 {
    p.map_or(0, u32::from)
}

fn port(p: u32) -> Option<u16> {
    u16::try_from(p).ok().filter(|&p| p != 0)
}

pub fn migrate_request(r: pb::MigrateRequest) -> MigrateRequest {
    MigrateRequest {
        new_name: text(&r.new_name),
        domain: r.domain,
        target: r.target,
        user: r.user,
        password: r.password,
        dry_run: r.dry_run,
        plan: (r.plan_id != 0).then_some(r.plan_id),
        ticket: r.ticket.map(Into::into),
    }
}

pub fn migrate_request_to_pb(r: MigrateRequest) -> pb::MigrateRequest {
    pb::MigrateRequest {
        domain: r.domain,
        target: r.target,
        new_name: r.new_name.unwrap_or_default(),
        user: r.user,
        password: r.password,
        dry_run: r.dry_run,
        plan_id: r.plan.unwrap_or(0),
        ticket: r.ticket.map(Into::into),
    }
}

pub fn prepare_request(r: pb::PrepareRequest) -> Result<PrepareRequest, Error> {
    Ok(PrepareRequest {
        operation: r.operation_id,
        new_name: text(&r.new_name),
        source_server: unembed(&r.source_server, "source_server")?,
        domain: r.domain,
        source: r.source,
        user: r.user,
        password: r.password,
        dry_run: r.dry_run,
        lease_ms: r.lease_ms,
        ticket: r.ticket.map(Into::into),
    })
}

pub fn prepare_request_to_pb(r: PrepareRequest) -> Result<pb::PrepareRequest, Error> {
    Ok(pb::PrepareRequest {
        operation_id: r.operation,
        source_server: embed(&r.source_server)?,
        domain: r.domain,
        new_name: r.new_name.unwrap_or_default(),
        source: r.source,
        user: r.user,
        password: r.password,
        dry_run: r.dry_run,
        lease_ms: r.lease_ms,
        ticket: r.ticket.map(Into::into),
    })
}

pub fn prepared_to_pb(p: &Prepared) -> Result<pb::PrepareResponse, Error> {
    Ok(match p {
        Prepared::Refused { errors, warnings } => pb::PrepareResponse {
            errors: findings_to_pb(errors),
            warnings: findings_to_pb(warnings),
            ..Default::default()
        },
        Prepared::Reserved { reservation, token, binding, warnings } => pb::PrepareResponse {
            errors: vec![],
            warnings: findings_to_pb(warnings),
            reservation_id: *reservation,
            token: *token,
            binding: embed(binding)?,
        },
    })
}

pub fn prepared(r: pb::PrepareResponse) -> Result<Prepared, Error> {
    if !r.errors.is_empty() {
        return Ok(Prepared::Refused { errors: findings(&r.errors), warnings: findings(&r.warnings) });
    }
    Ok(Prepared::Reserved {
        reservation: r.reservation_id,
        token: r.token,
        binding: unembed(&r.binding, "binding")?,
        warnings: findings(&r.warnings),
    })
}

pub fn report_to_pb(r: &MigrationReport) -> pb::MigrationReport {
    pb::MigrationReport {
        operation_id: r.operation,
        domain: r.domain.clone(),
        new_name: r.new_name.clone(),
        source: r.source.clone(),
        target: r.target.clone(),
        old_cids: r.old_cids.clone(),
        new_cids: r.new_cids.clone(),
        old_console_port: port_to_pb(r.old_console_port),
        new_console_port: port_to_pb(r.new_console_port),
        downtime_ms: r.downtime_ms,
        total_ms: r.total_ms,
        notes: r.notes.clone(),
        dry_run: r.dry_run,
        old_memory: ranges_to_pb(&r.old_memory),
        new_memory: ranges_to_pb(&r.new_memory),
        warnings: findings_to_pb(&r.warnings),
    }
}

pub fn report(r: pb::MigrationReport) -> MigrationReport {
    MigrationReport {
        operation: r.operation_id,
        old_console_port: port(r.old_console_port),
        new_console_port: port(r.new_console_port),
        old_memory: ranges(&r.old_memory),
        new_memory: ranges(&r.new_memory),
        warnings: findings(&r.warnings),
        domain: r.domain,
        new_name: r.new_name,
        source: r.source,
        target: r.target,
        old_cids: r.old_cids,
        new_cids: r.new_cids,
        downtime_ms: r.downtime_ms,
        total_ms: r.total_ms,
        notes: r.notes,
        dry_run: r.dry_run,
    }
}

pub fn event_to_pb(e: &MigrationEvent) -> pb::MigrateEvent {
    use pb::migrate_event::Event;
    let event = match e {
        MigrationEvent::Progress { pct, stage, round } => {
            Event::Progress(pb::MigrationProgress { pct: *pct, phase: stage.as_str().into(), round: *round })
        }
        MigrationEvent::Refused { operation, errors } => {
            Event::Refused(pb::Refusal { operation_id: *operation, errors: findings_to_pb(errors) })
        }
        MigrationEvent::Report(r) => Event::Report(report_to_pb(r)),
    };
    pb::MigrateEvent { event: Some(event) }
}

/// A migration event another agent streamed; `None` for an empty or unknown one.
pub fn event(e: pb::MigrateEvent) -> Option<MigrationEvent> {
    use pb::migrate_event::Event;
    Some(match e.event? {
        Event::Progress(p) => MigrationEvent::Progress { pct: p.pct, stage: Stage::parse(&p.phase)?, round: p.round },
        Event::Refused(r) => MigrationEvent::Refused { operation: r.operation_id, errors: findings(&r.errors) },
        Event::Report(r) => MigrationEvent::Report(Box::new(report(r))),
    })
}

pub fn host_request(r: pb::HostRequest) -> HostRequest {
    HostRequest { host: r.host, user: r.user, password: r.password }
}

pub fn host_event_to_pb(e: &HostEvent) -> pb::HostEvent {
    use pb::host_event::Event;
    let event = match e {
        HostEvent::Guest(g) => Event::Guest(pb::GuestResult {
            domain: g.domain.clone(),
            target: g.target.clone(),
            moved: g.moved,
            reasons: findings_to_pb(&g.reasons),
            report: g.report.as_deref().map(report_to_pb),
        }),
        HostEvent::Done { moved, stayed, status } => {
            Event::Done(pb::HostSummary { moved: *moved, stayed: *stayed, status: status.as_str().into() })
        }
    };
    pb::HostEvent { event: Some(event) }
}

/// A row of `ternctl list-operations`.
pub fn operation(op: &Operation) -> pb::OperationInfo {
    let (domain, source, target, dry_run, new_name) = match &op.kind {
        OperationKind::Migration { domain, source, target, dry_run, new_name, .. } => {
            (domain.clone(), source.clone(), target.clone(), *dry_run, new_name.clone())
        }
        OperationKind::Evacuation { host } | OperationKind::Failover { host } => {
            (String::new(), host.clone(), String::new(), false, None)
        }
        OperationKind::Resize { domain, host, .. } => (domain.clone(), host.clone(), host.clone(), false, None),
    };
    let (progress_pct, reason) = match &op.phase {
        Phase::Transferring { progress_pct } => (u32::from(*progress_pct), String::new()),
        Phase::Committing | Phase::Done => (100, String::new()),
        Phase::Failed { reason } | Phase::RolledBack { reason } => (0, reason.clone()),
        _ => (0, String::new()),
    };
    let report = op.result.as_ref().map(|r| pb::MigrationReport {
        operation_id: op.id,
        domain: domain.clone(),
        new_name: new_name.clone().unwrap_or_else(|| domain.clone()),
        source: source.clone(),
        target: target.clone(),
        old_cids: r.old_cids.clone(),
        new_cids: r.new_cids.clone(),
        old_console_port: r.old_console_port.map_or(0, u32::from),
        new_console_port: r.new_console_port.map_or(0, u32::from),
        downtime_ms: r.downtime_ms,
        total_ms: r.total_ms,
        notes: r.notes.clone(),
        dry_run,
        old_memory: vec![],
        new_memory: vec![],
        warnings: vec![],
    });
    pb::OperationInfo {
        id: op.id,
        kind: op.kind.name().to_string(),
        domain,
        source,
        target,
        phase: op.phase.name().to_string(),
        progress_pct,
        reason,
        report,
        started_ms: op.started_ms,
        updated_ms: op.updated_ms,
        dry_run,
    }
}

// ---- rebalancing (RB-*) -----------------------------------------------------------

/// A kept plan with each move's state (from the operations).
pub fn plan_to_pb(p: &tern_raft_store::PlanRecord, states: &[tern_migrate::rebalance::MoveState]) -> pb::RebalancePlan {
    use tern_raft_store::{PlanPurpose, PlanStatus};
    let moves = p
        .plan
        .moves
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let state = states.get(i);
            pb::RebalanceMove {
                domain: m.domain.clone(),
                source: m.source.clone(),
                target: m.target.clone(),
                cids: m.binding.cids.clone(),
                memory: ranges_to_pb(&m.binding.memory),
                console_port: port_to_pb(m.binding.console_port),
                total_ms: m.cost.total_ms,
                downtime_ms: m.cost.downtime_ms,
                reason: m.reason.to_string(),
                imbalance_after_ppm: m.imbalance_after_ppm,
                state: match (&p.status, state) {
                    (PlanStatus::Shown, _) | (_, None) => "pending".into(),
                    (_, Some(s)) => s.to_string(),
                },
                operation_id: state.map_or(0, tern_migrate::rebalance::MoveState::operation),
            }
        })
        .collect();
    pb::RebalancePlan {
        id: p.id,
        purpose: match &p.purpose {
            PlanPurpose::Balance => "balance".into(),
            PlanPurpose::MakeRoom { domain, target } => format!("make-room {domain} on {target}"),
            PlanPurpose::Grow { domain, growth } => format!("grow {domain} to {growth}"),
        },
        status: p.status.name().into(),
        status_detail: match &p.status {
            PlanStatus::Failed { reason } => reason.clone(),
            PlanStatus::Cancelled { by } => format!("by {by}"),
            _ => p.notes.join("; "),
        },
        level: u32::from(p.plan.level),
        imbalance_before_ppm: p.plan.imbalance_before_ppm,
        imbalance_after_ppm: p.plan.imbalance_after_ppm,
        act_above_ppm: p.plan.act_above_ppm,
        moves,
        notes: p.plan.notes.clone(),
        preflight_refusals: p.plan.preflight_refusals,
        actor: p.actor.clone(),
        applied_by: p.applied_by.clone().unwrap_or_default(),
        made_ms: p.made_ms,
        total_ms: p.plan.total_ms(),
    }
}

pub fn rebalance_config_to_pb(c: &tern_raft_store::RebalanceConfig) -> pb::RebalanceConfig {
    pb::RebalanceConfig {
        auto: c.auto,
        level: u32::from(c.level.get()),
        max_moves: c.max_moves,
        host_concurrency: c.host_concurrency,
        cluster_concurrency: c.cluster_concurrency,
        n_plus_one: c.n_plus_one,
        cooldown_ms: c.cooldown_ms,
        hold_rounds: c.hold_rounds,
        cpu_weight: c.cpu_weight,
        memory_weight: c.memory_weight,
        max_downtime_ms: c.max_downtime_ms,
        groups: c.groups.iter().map(|(g, s)| (g.clone(), s.as_str().to_string())).collect(),
    }
}

pub fn rebalance_config(c: pb::RebalanceConfig) -> Result<tern_raft_store::RebalanceConfig, Error> {
    let level = u8::try_from(c.level)
        .map_err(|_| Error::InvalidInput(format!("level {} is not 1 to 5", c.level)))
        .and_then(|l| tern_model::rebalance::Level::new(l).map_err(Error::InvalidInput))?;
    let groups = c
        .groups
        .into_iter()
        .map(|(g, s)| s.parse().map(|s| (g, s)).map_err(Error::InvalidInput))
        .collect::<Result<_, _>>()?;
    Ok(tern_raft_store::RebalanceConfig {
        auto: c.auto,
        level,
        max_moves: c.max_moves,
        host_concurrency: c.host_concurrency,
        cluster_concurrency: c.cluster_concurrency,
        n_plus_one: c.n_plus_one,
        cooldown_ms: c.cooldown_ms,
        hold_rounds: c.hold_rounds,
        cpu_weight: c.cpu_weight,
        memory_weight: c.memory_weight,
        max_downtime_ms: c.max_downtime_ms,
        groups,
    })
}

#[cfg(test)]
mod tests {
    //! The seam's errors on the wire: each variant's gRPC code (STYLE.md), and the
    //! typed value back on the other side, never parsed from text.
    use super::*;

    fn every_variant() -> Vec<(Error, Code)> {
        let lost_race =
            Rejection::with_rule(RejectCode::StrandUnavailable, Rule::Lm(6), "strand 12 is reserved by operation 3");
        vec![
            (Error::NotLeader { leader: Some("10.0.0.2:7400".into()) }, Code::FailedPrecondition),
            (Error::NotLeader { leader: None }, Code::FailedPrecondition),
            (Error::Rejected(lost_race), Code::FailedPrecondition),
            (Error::Rejected(Rejection::new(RejectCode::DomainUnknown, "no ldom9")), Code::NotFound),
            (Error::Rejected(Rejection::new(RejectCode::InvalidRequest, "name too long")), Code::InvalidArgument),
            (Error::Conflict("ldom1 is busy".into()), Code::FailedPrecondition),
            (Error::Unavailable("no quorum".into()), Code::Unavailable),
            (Error::Timeout("prepare".into()), Code::DeadlineExceeded),
            (Error::NotFound("LDom \"ldom9\" was not found".into()), Code::NotFound),
            (Error::InvalidInput("a migration needs a domain".into()), Code::InvalidArgument),
            (Error::PermissionDenied("OP-04 user x lacks the profile".into()), Code::PermissionDenied),
            (Error::Internal("bug".into()), Code::Internal),
        ]
    }

    #[test]
    fn every_seam_error_travels_with_its_grpc_code() {
        // Goal: not-leader and conflicts are FAILED_PRECONDITION, partitions UNAVAILABLE, bad input INVALID_ARGUMENT...
        for (e, code) in every_variant() {
            assert_eq!(status(e.clone()).code(), code, "{e:?}");
        }
    }

    #[test]
    fn every_seam_error_comes_back_as_the_same_variant() {
        // Goal: a status another agent answered is the caller's typed error again.
        for (e, _) in every_variant() {
            assert_eq!(error(status(e.clone())), e);
        }
    }

    #[test]
    fn a_call_whose_connection_broke_is_an_unknown_outcome_not_a_bug() {
        // Goal: a peer killed mid-call (tonic's UNKNOWN, "transport error") reaches the caller as a timeout, retryable.
        let e = error(Status::unknown("h2 protocol error: error reading a body from connection"));
        assert!(matches!(&e, Error::Timeout(m) if m.contains("may or may not have taken effect")), "{e:?}");
        assert_eq!(status(e).code(), Code::DeadlineExceeded);
    }

    #[test]
    fn a_rejection_keeps_its_rule_and_code_across_the_wire() {
        // Goal: a lost race is recognised by its code (strand-unavailable), not by text in the message.
        let r = Rejection::with_rule(RejectCode::MemoryUnavailable, Rule::Lm(9), "0x1000 16G is reserved");
        let mut s = status(Error::Rejected(r.clone()));
        // Whatever the message says, the metadata decides.
        s = Status::with_metadata(s.code(), "reworded by a proxy", s.metadata().clone());
        assert_eq!(error(s).rejection(), Some(&r));
    }

    #[test]
    fn the_leader_hint_is_metadata_not_text() {
        // Goal: a message that merely mentions "leader=" carries no hint; the header does.
        let fake = Status::failed_precondition("not the leader; leader=10.9.9.9:1");
        assert_eq!(leader_address(&fake), None);
        assert!(matches!(error(fake), Error::Conflict(_)));
        let real = status(Error::NotLeader { leader: Some("127.0.0.1:7400".into()) });
        assert_eq!(leader_address(&real).as_deref(), Some("127.0.0.1:7400"));
    }

    #[test]
    fn tonics_own_timeout_is_a_timeout() {
        // Goal: tonic reports Endpoint::timeout as CANCELLED; the caller sees a timeout it may retry.
        let e = error(Status::cancelled("Timeout expired"));
        assert!(matches!(e, Error::Timeout(_)) && e.is_transient());
    }

    #[test]
    fn an_embedded_value_of_another_version_or_too_large_is_bad_input() {
        // Goal: a newer agent's encoding or an oversized value is refused with a message naming the field.
        let bytes = embed(&Range { pa: 0, size: 4 }).unwrap();
        assert_eq!(unembed::<Range>(&bytes, "binding").unwrap(), Range { pa: 0, size: 4 });
        let mut newer = bytes.clone();
        newer[0] = 2;
        let e = unembed::<Range>(&newer, "binding").unwrap_err();
        assert!(matches!(&e, Error::InvalidInput(m) if m.contains("binding") && m.contains("version 2")), "{e}");
        let huge = vec![EMBEDDED_VERSION; EMBEDDED_BYTES_MAX + 1];
        assert!(matches!(unembed::<Range>(&huge, "source_server"), Err(Error::InvalidInput(_))));
        assert!(matches!(unembed::<Range>(&[], "binding"), Err(Error::InvalidInput(_))));
    }
}
