//! Conversions between the model's and the replicated state's records and the
//! `tern.v1` messages of migration.

use tern_model::{Range, Violation};
use tern_proto::v1 as pb;
use tern_raft_store::{Operation, OperationKind, Phase};

pub fn violation(v: &Violation) -> pb::Violation {
    pb::Violation { rule: v.rule.to_string(), code: v.code.to_string(), message: v.message.clone() }
}

/// A rejection from the state machine as a violation line (its rule when it has one).
pub fn rejection(r: &tern_raft_store::Rejection) -> pb::Violation {
    pb::Violation {
        rule: r.rule.map(|x| x.to_string()).unwrap_or_default(),
        code: r.code.as_str().to_string(),
        message: r.message.clone(),
    }
}

pub fn ranges(rs: &[Range]) -> Vec<pb::MemoryRange> {
    rs.iter().map(|r| pb::MemoryRange { pa: r.pa, size: r.size }).collect()
}

/// A row of `ternctl list-operations`.
pub fn operation(op: &Operation) -> pb::OperationInfo {
    let (domain, source, target, dry_run, new_name) = match &op.kind {
        OperationKind::Migration { domain, source, target, dry_run, new_name } => {
            (domain.clone(), source.clone(), target.clone(), *dry_run, new_name.clone())
        }
        OperationKind::Evacuation { host } | OperationKind::Failover { host } => {
            (String::new(), host.clone(), String::new(), false, None)
        }
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

/// The clock note every report carries (LM-14, LM-15).
pub fn standard_notes(downtime_ms: u64) -> Vec<String> {
    vec![
        "LM-14: the guest's clock may lag slightly after migration; keep NTP running in the guest".to_string(),
        format!(
            "LM-15: guest networking was suspended for about {downtime_ms} ms; TCP and NFS retries cover it, static routes are recommended"
        ),
    ]
}
