//! Builders of `tern_model::Server` values shared by the integration tests.
//!
//! The reference layouts are the seed's: `m10-1-1` (a SPARC M10-1 running `ldom1`) and
//! `m10-1-2` (the same model with only its control domain, 55800M free). Every builder
//! returns a server that passes `Server::validate`, so a test that mutates one can
//! tell its own mistakes from the model's.

// Each test crate compiles this module and uses a different part of it.
#![allow(dead_code)]

pub mod brute;
pub mod cluster;

use tern_model::units::{GIB, MIB};
use tern_model::{
    Console, Core, CpuArch, CpuFamily, CpuType, Domain, DomainKind, DomainState, Firmware, MemoryBlock, MigrationQuery,
    OsVersion, Owner, Report, Reserved, Rule, Server, Services, Strand, VDisk, VNet, Vcc, Vds, Volume, Vsw, Workload,
};

/// Where the seed's `_sys_` blocks and the control domain's 8G lie, and where the
/// rest of memory starts (`ldm list-devices -a memory` on the seed's M10-1).
pub const SYS_ROWS: [(u64, u64); 3] =
    [(0x7e00_0080_0000, GIB), (0x7e00_4080_0000, 384 * MIB), (0x7e00_5880_0000, 128 * MIB)];
pub const PRIMARY_PA: u64 = 0x7e00_6080_0000;
pub const PRIMARY_SIZE: u64 = 8 * GIB;
/// First PA after the control domain: `0x7e0260800000`.
pub const AFTER_PRIMARY_PA: u64 = PRIMARY_PA + PRIMARY_SIZE;
/// What the seed's M10-1 has after its control domain: 248M + 16136M + 39416M.
pub const AFTER_PRIMARY_SIZE: u64 = 55800 * MIB;

pub const SOLARIS_MIN: &str = "Solaris 11.1.17.5.0";
pub const VDS: &str = "primary-vds0";
pub const VSW: &str = "primary-vsw0";
pub const VCC: &str = "primary-vcc0";

pub fn os(text: &str) -> OsVersion {
    OsVersion::parse(text).expect("test OS version parses")
}

pub fn sparc64_x_plus() -> CpuType {
    CpuType { family: CpuFamily::Sparc64XPlus, frequency_mhz: 3200 }
}

pub fn sparc_t4() -> CpuType {
    CpuType { family: CpuFamily::SparcT4, frequency_mhz: 2850 }
}

/// A domain with no devices: the control domain, or a neighbour that only holds
/// cores, memory or a console port.
pub fn plain_domain(name: &str, kind: DomainKind) -> Domain {
    Domain {
        name: name.to_string(),
        kind,
        state: DomainState::Active,
        cpu_arch: CpuArch::Native,
        os: Some(os(SOLARIS_MIN)),
        vdisks: vec![],
        vnets: vec![],
        console: None,
        workload: Workload::default(),
        masters: vec![],
        failure_policy: Default::default(),
    }
}

/// The seed's guest: two vdisks on shared volumes, one vnet, a console on
/// `primary-vcc0` at `port`, cpu-arch native.
pub fn guest_domain(name: &str, port: u16) -> Domain {
    Domain {
        vdisks: vec![
            VDisk { name: "vdisk0".into(), volume: "vol0".into(), service: VDS.into() },
            VDisk { name: "vdisk1".into(), volume: "vol1".into(), service: VDS.into() },
        ],
        vnets: vec![VNet { name: "vnet0".into(), service: VSW.into() }],
        console: Some(Console { service: VCC.into(), port, logging: true }),
        ..plain_domain(name, DomainKind::Guest)
    }
}

/// The seed's services: `primary-vds0` (vol0, vol1 on shared LUNs), `primary-vsw0` on
/// net0, `primary-vcc0` with ports 5000-6000.
pub fn seed_services() -> Services {
    Services {
        vds: vec![Vds {
            name: VDS.into(),
            domain: "primary".into(),
            volumes: vec![
                Volume { name: "vol0".into(), device: "/dev/dsk/c0t6d0s2".into(), shared: true },
                Volume { name: "vol1".into(), device: "/dev/dsk/c0t7d0s2".into(), shared: true },
            ],
        }],
        vsw: vec![Vsw { name: VSW.into(), domain: "primary".into(), nic: "net0".into() }],
        vcc: vec![Vcc { name: VCC.into(), domain: "primary".into(), port_min: 5000, port_max: 6000 }],
    }
}

/// The hardware every builder starts from: `cores` activated cores of
/// `threads_per_core` strands (CID c holds strands c*t .. c*t+t-1), the seed's
/// `_sys_` blocks, a control domain `primary` on the first `primary_cores` cores with
/// 8G, and 55800M free after it.
pub fn bare_server(
    name: &str,
    model: &str,
    cpu: CpuType,
    firmware: &str,
    threads_per_core: u32,
    cores: u32,
    primary_cores: u32,
) -> Server {
    let cores = (0..cores)
        .map(|cid| Core {
            cid,
            activated: true,
            strands: (0..threads_per_core)
                .map(|t| Strand {
                    id: cid * threads_per_core + t,
                    bound: (cid < primary_cores).then(|| "primary".to_string()),
                })
                .collect(),
        })
        .collect();
    let mut memory: Vec<MemoryBlock> =
        SYS_ROWS.iter().map(|&(pa, size)| MemoryBlock { pa, size, bound: Some(Owner::System) }).collect();
    memory.push(MemoryBlock { pa: PRIMARY_PA, size: PRIMARY_SIZE, bound: Some(Owner::Domain("primary".into())) });
    memory.push(MemoryBlock { pa: AFTER_PRIMARY_PA, size: AFTER_PRIMARY_SIZE, bound: None });
    let server = Server {
        name: name.to_string(),
        model: model.to_string(),
        cpu,
        firmware: Firmware(firmware.to_string()),
        os: os(SOLARIS_MIN),
        threads_per_core,
        cores,
        memory,
        services: seed_services(),
        domains: vec![plain_domain("primary", DomainKind::Control)],
    };
    assert_valid(&server);
    server
}

/// A SPARC M10-1 as the seed shows it: SPARC64 X+ 3.2 GHz, XCP2210, 16 cores x 2
/// threads, 64 GB, primary on cores 0-3 with 8G.
pub fn m10_1(name: &str) -> Server {
    bare_server(name, "SPARC M10-1", sparc64_x_plus(), "XCP2210", 2, 16, 4)
}

/// A SPARC T4-1: SPARC T4 2.85 GHz, 8 cores x 8 threads, primary on cores 0-1.
pub fn t4_1(name: &str) -> Server {
    bare_server(name, "SPARC T4-1", sparc_t4(), "Sun System Firmware 8.9.4", 8, 8, 2)
}

/// The seed's source `m10-1-1`: ldom1 on cores 4-7 (CPUSET (8,9)..(14,15)) with
/// 248M @0x7e0260800000 + 16136M @0x7e0270000000, console 5001; 39416M free.
pub fn seed_source() -> Server {
    let mut s = m10_1("m10-1-1");
    add_domain(&mut s, guest_domain("ldom1", 5001));
    bind_cores(&mut s, "ldom1", &[4, 5, 6, 7]);
    lay_out_after_primary(&mut s, &[("ldom1", 248 * MIB), ("ldom1", 16136 * MIB), ("", 39416 * MIB)]);
    assert_eq!(s.memory_of("ldom1")[1].pa, 0x7e02_7000_0000, "the seed's PA for ldom1's second block");
    assert_eq!(s.memory[6].pa, 0x7e06_6080_0000, "the seed's PA for the free block");
    assert_valid(&s);
    s
}

/// The seed's target `m10-1-2`: only the control domain, 55800M free in one range.
pub fn seed_target() -> Server {
    m10_1("m10-1-2")
}

pub fn add_domain(server: &mut Server, domain: Domain) {
    server.domains.push(domain);
}

/// Binds every strand of the cores `cids` to `domain` (whole cores).
pub fn bind_cores(server: &mut Server, domain: &str, cids: &[u32]) {
    for core in server.cores.iter_mut().filter(|c| cids.contains(&c.cid)) {
        for s in &mut core.strands {
            s.bound = Some(domain.to_string());
        }
    }
}

/// Makes `domain` hold exactly the strands `ids` (releasing any others it held).
pub fn set_strands(server: &mut Server, domain: &str, ids: &[u32]) {
    for s in server.cores.iter_mut().flat_map(|c| &mut c.strands) {
        if ids.contains(&s.id) {
            s.bound = Some(domain.to_string());
        } else if s.bound.as_deref() == Some(domain) {
            s.bound = None;
        }
    }
}

/// Replaces everything after the control domain's 8G with `rows`, laid back to back
/// from `0x7e0260800000`. An owner `""` is free, `"_sys_"` is the firmware.
pub fn lay_out_after_primary(server: &mut Server, rows: &[(&str, u64)]) {
    server.memory.retain(|b| b.pa < AFTER_PRIMARY_PA);
    let mut pa = AFTER_PRIMARY_PA;
    for &(owner, size) in rows {
        let bound = match owner {
            "" => None,
            "_sys_" => Some(Owner::System),
            d => Some(Owner::Domain(d.to_string())),
        };
        server.memory.push(MemoryBlock { pa, size, bound });
        pa += size;
    }
}

pub fn assert_valid(server: &Server) {
    if let Err(errs) = server.validate() {
        panic!("test server {} is invalid: {errs:#?}", server.name);
    }
}

/// The preflight of moving `domain` from `source` to `target` with nothing reserved.
pub fn check(source: &Server, target: &Server, domain: &str) -> Report {
    check_with(source, target, domain, None, &Reserved::default())
}

pub fn check_with(
    source: &Server,
    target: &Server,
    domain: &str,
    new_name: Option<&str>,
    reserved: &Reserved,
) -> Report {
    tern_model::preflight(&MigrationQuery { source, target, domain, new_name, target_reserved: reserved })
}

/// The (rule, code) of each error, sorted, so a test can compare the whole list.
pub fn error_ids(report: &Report) -> Vec<(Rule, tern_model::Code)> {
    let mut v: Vec<_> = report.errors.iter().map(|e| (e.rule, e.code)).collect();
    v.sort();
    v
}

pub fn warning_ids(report: &Report) -> Vec<(Rule, tern_model::Code)> {
    let mut v: Vec<_> = report.warnings.iter().map(|e| (e.rule, e.code)).collect();
    v.sort();
    v
}
