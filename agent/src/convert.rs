//! Conversions from the replicated state and the model to `tern.v1` messages, in one
//! place so the services stay about behaviour.

use tern_model::{Reserved, Server};
use tern_proto::v1 as pb;
use tern_raft_store::{HostStatus, OperationKind, Phase, State};

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
    pb::HostDevices { host: server.name.clone(), memory, cores }
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
