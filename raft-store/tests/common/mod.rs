//! Builders shared by the integration tests: small SPARC servers with guests, and
//! requests stamped with a time.
#![allow(dead_code)]

use tern_model::units::GIB;
use tern_model::{
    Binding, Console, Core, CpuArch, CpuFamily, CpuType, Domain, DomainKind, DomainState, Firmware, MemoryBlock,
    OsVersion, Owner, Range, Server, Services, Strand, Vcc, Vds, Volume, Vsw, Workload,
};
use tern_raft_store::{Command, HostSpec, OperationKind, Request};

pub const THREADS: u32 = 2;
pub const VCC_PORT_MIN: u16 = 5000;
pub const VCC_PORT_MAX: u16 = 5015;

pub fn cpu() -> CpuType {
    CpuType { family: CpuFamily::Sparc64XPlus, frequency_mhz: 3700 }
}

pub fn os() -> OsVersion {
    OsVersion::parse("Solaris 11.3").expect("valid OS")
}

pub fn spec(name: &str) -> HostSpec {
    HostSpec { name: name.into(), address: format!("{name}.example:7400") }
}

pub fn req(at_ms: u64, command: Command) -> Request {
    Request { proposed_at_ms: at_ms, actor: "test".into(), from: String::new(), command }
}

/// A server with `cores` activated cores of two strands (core c holds strands 2c and
/// 2c+1), `_sys_` memory at [0, 1G), the control domain on core 0 and [1G, 2G), and
/// `free_gib` GiB free from 2G. Services: VDS, VSW and a VCC with ports 5000-5015.
pub fn server(name: &str, cores: u32, free_gib: u64) -> Server {
    let cores: Vec<Core> = (0..cores)
        .map(|c| Core {
            cid: c,
            activated: true,
            strands: (0..THREADS)
                .map(|t| Strand { id: c * THREADS + t, bound: (c == 0).then(|| "primary".to_string()) })
                .collect(),
        })
        .collect();
    let memory = vec![
        MemoryBlock { pa: 0, size: GIB, bound: Some(Owner::System) },
        MemoryBlock { pa: GIB, size: GIB, bound: Some(Owner::Domain("primary".into())) },
        MemoryBlock { pa: 2 * GIB, size: free_gib * GIB, bound: None },
    ];
    Server {
        name: name.into(),
        model: "SPARC M10-1".into(),
        cpu: cpu(),
        firmware: Firmware("XCP2290".into()),
        os: os(),
        threads_per_core: THREADS,
        cores,
        memory,
        services: Services {
            vds: vec![Vds {
                name: "primary-vds0".into(),
                domain: "primary".into(),
                volumes: vec![Volume { name: "vol0".into(), device: "/dev/dsk/c0t6d0s2".into(), shared: true }],
            }],
            vsw: vec![Vsw { name: "primary-vsw0".into(), domain: "primary".into(), nic: "net0".into() }],
            vcc: vec![Vcc {
                name: "primary-vcc0".into(),
                domain: "primary".into(),
                port_min: VCC_PORT_MIN,
                port_max: VCC_PORT_MAX,
            }],
        },
        domains: vec![domain("primary", DomainKind::Control, None)],
    }
}

/// A domain definition with a console on `port` (guests only).
pub fn domain(name: &str, kind: DomainKind, port: Option<u16>) -> Domain {
    Domain {
        name: name.into(),
        kind,
        state: DomainState::Active,
        cpu_arch: CpuArch::Native,
        os: Some(os()),
        vdisks: vec![],
        vnets: vec![],
        console: port.map(|p| Console { service: "primary-vcc0".into(), port: p, logging: true }),
        workload: Workload::default(),
        masters: vec![],
        failure_policy: Default::default(),
    }
}

/// The binding of a guest on `cores` (whole cores) with one memory block at `mem`.
pub fn binding(name: &str, cores: &[u32], mem: Range, port: Option<u16>) -> Binding {
    Binding {
        domain: name.into(),
        whole_cores: true,
        cids: cores.to_vec(),
        strands: cores.iter().flat_map(|c| [c * THREADS, c * THREADS + 1]).collect(),
        memory: vec![mem],
        console_port: port,
    }
}

/// `server` with guest `name` bound on `cores` and `mem`.
pub fn with_guest(mut server: Server, name: &str, cores: &[u32], mem: Range, port: Option<u16>) -> Server {
    let b = binding(name, cores, mem, port);
    server.bind_domain(domain(name, DomainKind::Guest, port), &b).expect("guest binds");
    server
}

/// The GiB-sized range starting at `gib` GiB.
pub fn gib(gib: u64) -> Range {
    Range::new(gib * GIB, GIB)
}

/// Hosts `a` (with guest ldom1 on core 1) and `b` registered with their inventories,
/// ldom1's migration from a to b begun (operation 1) and its place on b reserved.
pub fn migration_reserved() -> Vec<Command> {
    let a = with_guest(server("a", 4, 4), "ldom1", &[1], gib(2), Some(5001));
    vec![
        Command::RegisterHost { host: spec("a") },
        Command::RegisterHost { host: spec("b") },
        Command::ReportInventory { server: a },
        Command::ReportInventory { server: server("b", 4, 4) },
        Command::BeginOperation { kind: migration("ldom1", "a", "b") },
        Command::Reserve {
            operation: 1,
            target: "b".into(),
            source: "a".into(),
            domain: "ldom1".into(),
            binding: binding("ldom1", &[2], gib(3), Some(5002)),
            lease_ms: 60_000,
        },
    ]
}

/// The live migration of `domain` from `source` to `target`, under its own name.
pub fn migration(domain: &str, source: &str, target: &str) -> OperationKind {
    OperationKind::Migration {
        domain: domain.into(),
        source: source.into(),
        target: target.into(),
        new_name: None,
        dry_run: false,
        plan: None,
    }
}
