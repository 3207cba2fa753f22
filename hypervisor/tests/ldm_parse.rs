//! The ldm parsers on every fixture (see tests/fixtures/ldm/README.md for their sources):
//! each record type tern reads, with its values.

use std::path::PathBuf;
use tern_hypervisor::ldm::classify;
use tern_hypervisor::ldm::parse::{
    flag_words, parse_device_listing, parse_domain_listing, parse_service_listing, parse_status,
};
use tern_model::Rule;
use tern_model::units::{GIB, MIB};

fn fixture(rel: &str) -> String {
    let p: PathBuf = manifest_dir().join("tests/fixtures/ldm").join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn oracle_long_listing_reads_domains_vcpus_memory_and_io() {
    // Goal: Oracle's Example 18-4 (VERSION 1.6) gives three domains with their strands and blocks.
    let l = parse_domain_listing(&fixture("oracle/list-domain-l-p.v1_6.txt")).unwrap();
    assert_eq!(l.version.as_deref(), Some("1.6"));
    let names: Vec<&str> = l.domains.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["primary", "ldg1", "ldg2"]);
    let p = &l.domains[0];
    assert_eq!(p.state.as_deref(), Some("active"));
    assert_eq!(p.flags, ["normal", "control", "vio-service"]);
    assert_eq!(p.cons.as_deref(), Some("SP"));
    assert_eq!((p.ncpu, p.mem), (Some(4), Some(GIB)));
    assert_eq!(p.vcpus.iter().map(|v| v.pid).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert_eq!(p.io.len(), 2);
    assert_eq!((p.io[0].dev.as_str(), p.io[0].alias.as_deref()), ("pci@780", Some("bus_a")));
    let ldg2 = &l.domains[2];
    assert_eq!(ldg2.vcpus.iter().map(|v| v.pid).collect::<Vec<_>>(), [6, 7, 8]);
    assert_eq!(ldg2.vcpus[1].util, Some(34.0));
    assert_eq!(ldg2.memory.len(), 1);
    assert_eq!((ldg2.memory[0].ra, ldg2.memory[0].pa, ldg2.memory[0].size), (Some(0x800_0000), 0x7800_0000, GIB));
    assert_eq!(l.domains[1].cons.as_deref(), Some("5000"));
    assert_eq!(l.domains[1].util, Some(29.0));
}

#[test]
fn version_header_differences_do_not_matter() {
    // Goal: the same listing under VERSION 1.0 (Logical Domains 1.3) parses to the same domains.
    let old = parse_domain_listing(&fixture("oracle/list-domain-l-p.v1_0.txt")).unwrap();
    let new = parse_domain_listing(&fixture("oracle/list-domain-l-p.v1_6.txt")).unwrap();
    assert_eq!(old.version.as_deref(), Some("1.0"));
    assert_eq!(old.domains, new.domains);
}

#[test]
fn short_listing_reads_letter_flags_and_skips_unknown_fields() {
    // Goal: `ldm list -p` (VERSION 1.11): -n-cv- is a control service domain; norm_util is ignored.
    let l = parse_domain_listing(&fixture("public/list-domain-p.v1_11.txt")).unwrap();
    assert_eq!(l.version.as_deref(), Some("1.11"));
    assert_eq!(l.domains.len(), 4);
    assert_eq!(l.domains[0].flags, ["normal", "control", "vio-service"]);
    assert_eq!(l.domains[0].cons.as_deref(), Some("UART"));
    assert_eq!(l.domains[3].name, "host3");
    assert_eq!(l.domains[3].ncpu, Some(16));
    assert_eq!(l.domains[3].mem, Some(47_272_862_140));
    assert_eq!(l.domains[3].util, Some(1.2));
    assert_eq!(flag_words("-n----"), ["normal"]);
}

#[test]
fn device_listing_reads_vcpus_with_empty_values() {
    // Goal: Oracle's power-managed CPU list: free 0/100, an empty pm= is not an error.
    let d = parse_device_listing(&fixture("oracle/list-devices-a-p-cpu.v1_4.txt")).unwrap();
    assert_eq!(d.version.as_deref(), Some("1.4"));
    assert_eq!(d.vcpus.len(), 11);
    assert_eq!((d.vcpus[0].pid, d.vcpus[0].free_pct), (0, Some(0)));
    assert_eq!((d.vcpus[10].pid, d.vcpus[10].free_pct), (10, Some(100)));
    let d = parse_device_listing(&fixture("public/list-devices-a-p-cpu.v1_6.txt")).unwrap();
    assert_eq!(d.vcpus.len(), 2);
}

#[test]
fn device_listing_reads_memory_blocks_in_bytes() {
    // Goal: UCMDB's sample: _sys_ blocks and a primary block of 127.5 GiB.
    let d = parse_device_listing(&fixture("public/list-devices-a-p-memory.v1_6.txt")).unwrap();
    assert_eq!(d.memory.len(), 4);
    assert_eq!((d.memory[0].pa, d.memory[0].size), (0xa0_0000, 32 * MIB));
    assert_eq!(d.memory[0].bound.as_deref(), Some("_sys_"));
    assert_eq!((d.memory[3].pa, d.memory[3].size), (0x2000_0000, 136_902_082_560));
    assert_eq!(d.memory[3].bound.as_deref(), Some("primary"));
}

#[test]
fn seed_device_listing_reads_cores_and_the_seeds_memory_table() {
    // Goal: the composed M10-1 capture: 16 cores of 2 threads, the seed's PA/SIZE/BOUND rows, MAU/IO skipped.
    let d = parse_device_listing(&fixture("seed/list-devices-a-p.txt")).unwrap();
    assert_eq!(d.cores.len(), 16);
    assert_eq!((d.cores[4].cid, d.cores[4].cpuset.clone()), (4, vec![8, 9]));
    assert_eq!(d.cores[4].free_pct, Some(0));
    assert_eq!(d.cores[15].free_pct, Some(100));
    assert_eq!(d.vcpus.len(), 32);
    let mem: Vec<(u64, u64, Option<&str>)> = d.memory.iter().map(|m| (m.pa, m.size, m.bound.as_deref())).collect();
    assert_eq!(mem[4], (0x7e02_6080_0000, 248 * MIB, Some("ldom1")));
    assert_eq!(mem[5], (0x7e02_7000_0000, 16136 * MIB, Some("ldom1")));
    assert_eq!(mem[6], (0x7e06_6080_0000, 39416 * MIB, None));
}

#[test]
fn seed_service_listing_reads_vds_volumes_vsw_and_vcc() {
    // Goal: list-services -p: three volumes with their devices, the switch's NIC, the console range.
    let s = parse_service_listing(&fixture("seed/list-services-p.txt")).unwrap();
    assert_eq!(s.vcc.len(), 1);
    assert_eq!((s.vcc[0].name.as_str(), s.vcc[0].port_min, s.vcc[0].port_max), ("primary-vcc0", 5000, 6000));
    assert_eq!(s.vcc[0].domain.as_deref(), Some("primary"));
    assert_eq!(s.vsw[0].net_dev.as_deref(), Some("net1"));
    assert_eq!(s.vds[0].name, "primary-vds0");
    let vols: Vec<&str> = s.vds[0].volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(vols, ["vol0", "vol1", "vol2"]);
    assert_eq!(s.vds[0].volumes[1].device, "/dev/dsk/c0t600000E00D28000000280CC600030000d0s2");
    assert_eq!(s.vds[0].volumes[1].mpgroup, None);
}

#[test]
fn seed_long_listing_reads_control_core_vdisk_vnet_and_vcons() {
    // Goal: the 3.x records of list-domain -l -p, with failure-policy and DEPENDENCY; UUID/MAC/HOSTID/VARIABLES are skipped.
    let l = parse_domain_listing(&fixture("seed/list-domain-l-p.txt")).unwrap();
    let [primary, ldom1] = l.domains.as_slice() else { panic!("two domains") };
    assert_eq!(primary.cpu_arch.as_deref(), Some("native"));
    assert_eq!(primary.failure_policy.as_deref(), Some("ignore"));
    assert!(ldom1.masters.is_empty(), "DEPENDENCY|master= (empty) names no master");
    assert_eq!(primary.cores.iter().map(|c| c.cid).collect::<Vec<_>>(), [0, 1, 2, 3]);
    assert_eq!(primary.console.as_ref().unwrap().kind.as_deref(), Some("UART"));
    assert_eq!(ldom1.cores[0].cpuset, [8, 9]);
    assert_eq!(ldom1.vcpus.len(), 8);
    assert_eq!(ldom1.vcpus[0].cid, Some(4));
    let blocks: Vec<u64> = ldom1.memory.iter().map(|m| m.size).collect();
    assert_eq!(blocks, [248 * MIB, 16136 * MIB]);
    assert_eq!(ldom1.vdisks.len(), 2);
    assert_eq!(
        (ldom1.vdisks[1].name.as_str(), ldom1.vdisks[1].volume.as_str(), ldom1.vdisks[1].service.as_str()),
        ("vdisk1", "vol1", "primary-vds0")
    );
    assert_eq!((ldom1.vnets[0].name.as_str(), ldom1.vnets[0].service.as_str()), ("vnet0", "primary-vsw0"));
    let c = ldom1.console.as_ref().unwrap();
    assert_eq!((c.service.as_deref(), c.port, c.logging), (Some("primary-vcc0"), Some(5001), Some(true)));
}

#[test]
fn seed_bindings_put_services_under_their_domain_and_skip_client_rows() {
    // Goal: list-bindings -p: primary provides the VDS (3 volumes, client rows skipped), VSW and VCC.
    let l = parse_domain_listing(&fixture("seed/list-bindings-p.txt")).unwrap();
    let s = &l.domains[0].services;
    assert_eq!(s.vds[0].volumes.len(), 3);
    assert_eq!(s.vds[0].domain.as_deref(), Some("primary"));
    assert_eq!(s.vsw[0].net_dev.as_deref(), Some("net1"));
    assert_eq!((s.vcc[0].port_min, s.vcc[0].port_max), (5000, 6000));
    assert!(l.domains[1].services.vds.is_empty());
}

#[test]
fn status_reads_parseable_and_table_forms() {
    // Goal: OP-06 progress from `-o status -p` rows and from the seed's table.
    let s = parse_status(&fixture("seed/list-domain-o-status-p.2.txt")).unwrap();
    assert_eq!(s.name.as_deref(), Some("ldom1"));
    assert_eq!((s.operation.as_deref(), s.progress_pct), (Some("migration"), Some(31)));
    assert_eq!((s.peer.as_deref(), s.error), (Some("m10-1-1"), Some(false)));
    let t = parse_status(&fixture("seed/list-domain-o-status.table.txt")).unwrap();
    assert_eq!(t.name.as_deref(), Some("ldom1"));
    assert_eq!((t.operation.as_deref(), t.progress_pct), (Some("migration"), Some(31)));
    assert_eq!(t.peer.as_deref(), Some("m10-1-1"));
    let idle = parse_status("VERSION 1.6\nDOMAIN|name=ldom1|\nSTATUS\n").unwrap();
    assert_eq!(idle.operation, None);
}

#[test]
fn documented_migration_failures_map_to_lm_09() {
    // Goal: both of Oracle's memory-layout failures are LM-09; the dry run is recognised as one.
    let f = classify("", &fixture("oracle/migrate-unable-to-bind.stderr.txt"));
    assert_eq!(f.rule, Some(Rule::Lm(9)));
    assert!(!f.dry_run);
    assert!(f.message.starts_with("Unable to bind 2G memory region"), "{}", f.message);
    let f = classify("", &fixture("oracle/migrate-n-congruency.stderr.txt"));
    assert_eq!(f.rule, Some(Rule::Lm(9)));
    assert!(f.dry_run);
    let f = classify("", &fixture("seed/list-domain-o-status.not-found.stderr.txt"));
    assert_eq!(f.not_found.as_deref(), Some("ldom1"));
}

#[test]
fn sizes_with_units_and_cpusets_in_parentheses_are_read() {
    // Goal: releases that print `size=8G` or `cpuset=(0, 1)` parse like those printing bytes and 0,1.
    let d = parse_device_listing("CORE\n|cid=3|free=0|cpuset=(6, 7)\nMEMORY\n|pa=4096|size=8G|bound=\n").unwrap();
    assert_eq!(d.cores[0].cpuset, [6, 7]);
    assert_eq!((d.memory[0].pa, d.memory[0].size, d.memory[0].bound.clone()), (4096, 8 * GIB, None));
}

#[test]
fn malformed_records_name_their_line() {
    // Goal: each kind of damage is an error naming the line, not a panic or a silent skip.
    let cases: &[(&str, usize)] = &[
        ("VERSION 1.6\nVCPU\n|vid=0|pid=0\n", 2),       // VCPU before any DOMAIN
        ("DOMAIN|state=active\n", 1),                   // DOMAIN without name
        ("DOMAIN|name=a\nMEMORY\n|pa=0x10\n", 3),       // MEMORY row without size
        ("DOMAIN|name=a\nVDISK|name=d|vol=novds\n", 2), // vol not VOLUME@VDS
        ("DOMAIN|name=a\nVCPU\n|pid=seven\n", 3),       // not a number
        ("DOMAIN|name=a\nthis is prose\n", 2),          // neither record nor row
        ("DOMAIN|name=a|justaword\n", 1),               // field without =
    ];
    for (text, line) in cases {
        let e = parse_domain_listing(text).expect_err(text);
        assert_eq!(e.line, *line, "{text:?}: {e}");
    }
    let e = parse_service_listing("VCC|name=c|port-range=6000-5000\n").unwrap_err();
    assert!(e.message.contains("backwards"), "{e}");
}

/// This package's folder, read at run time first: one target folder serves every checkout.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

#[test]
fn dependency_records_read_up_to_four_masters() {
    // Goal: HA-08: `DEPENDENCY|master=a,b` lists the masters; more than ldm's four is an error naming the line.
    let text = "DOMAIN|name=pine|state=active|flags=normal\nDEPENDENCY|master=apple, lemon\n";
    let l = parse_domain_listing(text).unwrap();
    assert_eq!(l.domains[0].masters, ["apple", "lemon"]);
    let five = "DOMAIN|name=pine|state=active\nDEPENDENCY|master=a,b,c,d,e\n";
    let e = parse_domain_listing(five).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(e.message.contains("more than 4"), "{e}");
}
