//! Table tests of every preflight rule (LM-01, LM-03..LM-13, OP-05): each rule
//! has cases that pass and cases that fail, and a failing case must report exactly
//! the rule ids and stable codes it breaks, nothing else.

mod common;

use common::*;
use tern_model::units::{GIB, MIB};
use tern_model::{Code, CpuFamily, CpuType, DomainKind, Firmware, Report, Reserved, Rule, Server};

/// One what-if: the seed's pair, changed by a case.
struct Fixture {
    source: Server,
    target: Server,
    domain: &'static str,
    new_name: Option<&'static str>,
    reserved: Reserved,
}

impl Fixture {
    fn seed() -> Self {
        Self {
            source: seed_source(),
            target: seed_target(),
            domain: "ldom1",
            new_name: None,
            reserved: Reserved::default(),
        }
    }

    fn run(&self) -> Report {
        check_with(&self.source, &self.target, self.domain, self.new_name, &self.reserved)
    }
}

struct Case {
    name: &'static str,
    change: fn(&mut Fixture),
    /// Every error the case must produce (rule, code), sorted; empty = passes.
    errors: &'static [(Rule, Code)],
}

const LM01: Rule = Rule::Lm(1);
const LM03: Rule = Rule::Lm(3);
const LM04: Rule = Rule::Lm(4);
const LM05: Rule = Rule::Lm(5);
const LM06: Rule = Rule::Lm(6);
const LM07: Rule = Rule::Lm(7);
const LM08: Rule = Rule::Lm(8);
const LM09: Rule = Rule::Lm(9);
const LM10: Rule = Rule::Lm(10);
const LM11: Rule = Rule::Lm(11);
const LM13: Rule = Rule::Lm(13);
const OP05: Rule = Rule::Op(5);

fn volume_mut<'a>(server: &'a mut Server, name: &str) -> &'a mut tern_model::Volume {
    server.services.vds[0].volumes.iter_mut().find(|v| v.name == name).expect("seed volume")
}

/// A T4 -> T4 pair whose guest holds two strands of one core (not a whole core).
fn t4_thread_guest(f: &mut Fixture) {
    f.source = t4_1("t4-1-a");
    add_domain(&mut f.source, guest_domain("ldom1", 5000));
    set_strands(&mut f.source, "ldom1", &[16, 17]);
    lay_out_after_primary(&mut f.source, &[("ldom1", 8 * GIB), ("", 47608 * MIB)]);
    f.target = t4_1("t4-1-b");
}

/// Occupies ports 5000 and 5001 of a target VCC narrowed to 5000-5001.
fn fill_console_range(f: &mut Fixture) {
    f.target.services.vcc[0].port_max = 5001;
    add_domain(&mut f.target, guest_domain("ldom2", 5000));
    add_domain(&mut f.target, guest_domain("ldom3", 5001));
}

fn cases() -> Vec<Case> {
    vec![
        // The seed's pair passes every rule.
        Case { name: "seed pair", change: |_| {}, errors: &[] },
        // LM-01: only guest domains migrate.
        Case { name: "LM-01 a guest domain", change: |_| {}, errors: &[] },
        Case {
            name: "LM-01 control domain under a new name",
            change: |f| {
                f.domain = "primary";
                f.new_name = Some("primary2");
            },
            errors: &[(LM01, Code::NotAGuest)],
        },
        Case {
            name: "LM-01 I/O root domain",
            change: |f| f.source.domain_mut("ldom1").unwrap().kind = DomainKind::IoRoot,
            errors: &[(LM01, Code::NotAGuest)],
        },
        Case {
            name: "LM-01 service domain",
            change: |f| f.source.domain_mut("ldom1").unwrap().kind = DomainKind::Service,
            errors: &[(LM01, Code::NotAGuest)],
        },
        // LM-03: every backend shared and visible from the target.
        Case {
            name: "LM-03 guest without vdisks",
            change: |f| f.source.domain_mut("ldom1").unwrap().vdisks.clear(),
            errors: &[],
        },
        Case {
            name: "LM-03 source backend on an internal disk",
            change: |f| volume_mut(&mut f.source, "vol0").shared = false,
            errors: &[(LM03, Code::VdiskNotShared)],
        },
        Case {
            name: "LM-03 target does not see the backend as shared",
            change: |f| volume_mut(&mut f.target, "vol1").shared = false,
            errors: &[(LM03, Code::VdiskNotShared)],
        },
        // LM-04: same service names, volume names and backend devices.
        Case {
            name: "LM-04 target has extra services and volumes",
            change: |f| {
                f.target.services.vds[0].volumes.push(tern_model::Volume {
                    name: "vol9".into(),
                    device: "/dev/dsk/c9t0d0s2".into(),
                    shared: true,
                });
                f.target.services.vsw.push(tern_model::Vsw {
                    name: "primary-vsw1".into(),
                    domain: "primary".into(),
                    nic: "net1".into(),
                });
            },
            errors: &[],
        },
        Case {
            name: "LM-04 target has no VDS (both vdisks reported)",
            change: |f| f.target.services.vds.clear(),
            errors: &[(LM04, Code::ServiceMissing), (LM04, Code::ServiceMissing)],
        },
        Case {
            name: "LM-04 target lacks a volume",
            change: |f| f.target.services.vds[0].volumes.retain(|v| v.name != "vol1"),
            errors: &[(LM04, Code::VolumeMissing)],
        },
        Case {
            name: "LM-04 volume backed by another device on the target",
            change: |f| volume_mut(&mut f.target, "vol0").device = "/dev/dsk/c0t9d0s2".into(),
            errors: &[(LM04, Code::VolumeDeviceMismatch)],
        },
        Case {
            name: "LM-04 target has no VSW",
            change: |f| f.target.services.vsw.clear(),
            errors: &[(LM04, Code::ServiceMissing)],
        },
        Case {
            name: "LM-04 target's VCC has another name",
            change: |f| f.target.services.vcc[0].name = "primary-vcc1".into(),
            errors: &[(LM04, Code::ServiceMissing)],
        },
        // LM-05: at least 2 threads; on SPARC M10 at least one whole core.
        Case { name: "LM-05 two threads of a core on SPARC T4", change: t4_thread_guest, errors: &[] },
        Case {
            name: "LM-05 one thread",
            change: |f| set_strands(&mut f.source, "ldom1", &[8]),
            errors: &[(LM05, Code::TooFewThreads)],
        },
        Case {
            name: "LM-05 three threads, not whole cores, on SPARC M10",
            change: |f| set_strands(&mut f.source, "ldom1", &[8, 9, 10]),
            errors: &[(LM05, Code::NeedsWholeCore)],
        },
        // LM-06: enough free (activated, unbound, unreserved) CPUs on the target.
        Case {
            name: "LM-06 exactly enough free cores",
            change: |f| {
                add_domain(&mut f.target, plain_domain("ldom2", DomainKind::Guest));
                bind_cores(&mut f.target, "ldom2", &[8, 9, 10, 11, 12, 13, 14, 15]);
            },
            errors: &[],
        },
        Case {
            name: "LM-06 too few free CPUs",
            change: |f| {
                add_domain(&mut f.target, plain_domain("ldom2", DomainKind::Guest));
                bind_cores(&mut f.target, "ldom2", &[4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
            },
            errors: &[(LM06, Code::TooFewFreeCpus)],
        },
        Case {
            name: "LM-06 cores without an activation licence are not free",
            change: |f| {
                for c in f.target.cores.iter_mut().filter(|c| c.cid >= 7) {
                    c.activated = false;
                }
            },
            errors: &[(LM06, Code::TooFewFreeCpus)],
        },
        Case {
            name: "LM-06 enough free threads but no whole core",
            change: |f| {
                add_domain(&mut f.target, plain_domain("ldom2", DomainKind::Guest));
                let one_per_core: Vec<u32> = (4..16).map(|c| 2 * c).collect();
                set_strands(&mut f.target, "ldom2", &one_per_core);
            },
            errors: &[(LM06, Code::TooFewFreeCores)],
        },
        Case {
            name: "LM-06 reserved cores are not free",
            change: |f| f.reserved.strands = (8..26).collect(),
            errors: &[(LM06, Code::TooFewFreeCpus)],
        },
        Case {
            name: "LM-06 a thread guest needs free threads",
            change: |f| {
                t4_thread_guest(f);
                add_domain(&mut f.target, plain_domain("ldom2", DomainKind::Guest));
                let all_but_one: Vec<u32> = (16..63).collect();
                set_strands(&mut f.target, "ldom2", &all_but_one);
            },
            errors: &[(LM06, Code::TooFewFreeCpus)],
        },
        // LM-12: the amount of CPU stays; whole cores stay whole cores.
        Case {
            name: "LM-12 four 2-thread cores become one 8-thread core",
            change: |f| {
                f.source.domain_mut("ldom1").unwrap().cpu_arch = tern_model::CpuArch::Generic;
                f.target = t4_1("t4-1");
            },
            errors: &[],
        },
        // Whole cores that cannot stay whole block the move under LM-06 (the target
        // cannot give the CPUs as the guest holds them), not the informational LM-12.
        Case {
            name: "LM-06 three 2-thread cores cannot be whole 8-thread cores",
            change: |f| {
                f.source.domain_mut("ldom1").unwrap().cpu_arch = tern_model::CpuArch::Generic;
                set_strands(&mut f.source, "ldom1", &[8, 9, 10, 11, 12, 13]);
                f.target = t4_1("t4-1");
            },
            errors: &[(LM06, Code::NotWholeCores)],
        },
        Case {
            name: "LM-06 a 1-core M10 guest cannot be a whole 8-thread T4 core",
            change: |f| {
                f.source.domain_mut("ldom1").unwrap().cpu_arch = tern_model::CpuArch::Generic;
                set_strands(&mut f.source, "ldom1", &[8, 9]);
                f.target = t4_1("t4-1");
            },
            errors: &[(LM06, Code::NotWholeCores)],
        },
        // LM-05 on the target: on SPARC M10 a guest needs whole cores, whatever it held.
        Case {
            name: "LM-05 a 2-thread T4 guest becomes one whole M10 core",
            change: |f| {
                t4_thread_guest(f);
                f.source.domain_mut("ldom1").unwrap().cpu_arch = tern_model::CpuArch::Generic;
                f.target = seed_target();
            },
            errors: &[],
        },
        Case {
            name: "LM-05 a 3-thread T4 guest cannot be whole M10 cores",
            change: |f| {
                t4_thread_guest(f);
                f.source.domain_mut("ldom1").unwrap().cpu_arch = tern_model::CpuArch::Generic;
                set_strands(&mut f.source, "ldom1", &[16, 17, 18]);
                f.target = seed_target();
            },
            errors: &[(LM05, Code::NeedsWholeCore)],
        },
        // LM-07: cpu-arch against CPU type.
        Case {
            name: "LM-07 sparc64-class1 between SPARC64 X and X+",
            change: |f| {
                f.source.cpu = CpuType { family: CpuFamily::Sparc64X, frequency_mhz: 2800 };
                f.source.domain_mut("ldom1").unwrap().cpu_arch = tern_model::CpuArch::Sparc64Class1;
            },
            errors: &[],
        },
        Case {
            name: "LM-07 generic between SPARC M10 and SPARC T4",
            change: |f| {
                f.source.domain_mut("ldom1").unwrap().cpu_arch = tern_model::CpuArch::Generic;
                f.target = t4_1("t4-1");
            },
            errors: &[],
        },
        Case {
            name: "LM-07 native across frequencies",
            change: |f| f.target.cpu.frequency_mhz = 3700,
            errors: &[(LM07, Code::CpuArchMismatch)],
        },
        Case {
            name: "LM-07 native between SPARC64 X and X+",
            change: |f| f.source.cpu = CpuType { family: CpuFamily::Sparc64X, frequency_mhz: 3200 },
            errors: &[(LM07, Code::CpuArchMismatch)],
        },
        Case {
            name: "LM-07 sparc64-class1 from SPARC M10 to SPARC T4",
            change: |f| {
                f.source.domain_mut("ldom1").unwrap().cpu_arch = tern_model::CpuArch::Sparc64Class1;
                f.target = t4_1("t4-1");
            },
            errors: &[(LM07, Code::CpuArchMismatch)],
        },
        // LM-08 (and LM-09, which cannot hold either): free memory >= guest memory.
        Case {
            name: "LM-08 free memory equal to the guest's",
            change: |f| {
                add_domain(&mut f.target, plain_domain("ldom2", DomainKind::Guest));
                lay_out_after_primary(&mut f.target, &[("", 16 * GIB), ("ldom2", 39416 * MIB)]);
            },
            errors: &[],
        },
        Case {
            name: "LM-08 target with 8G free for a 16G guest",
            change: |f| {
                add_domain(&mut f.target, plain_domain("ldom2", DomainKind::Guest));
                lay_out_after_primary(&mut f.target, &[("", 8 * GIB), ("ldom2", 47608 * MIB)]);
            },
            errors: &[(LM08, Code::TooLittleFreeMemory), (LM09, Code::MemoryBlockFit)],
        },
        Case {
            name: "LM-08 reserved memory is not free",
            change: |f| f.reserved.memory = vec![tern_model::Range::new(AFTER_PRIMARY_PA, 50 * GIB)],
            errors: &[(LM08, Code::TooLittleFreeMemory), (LM09, Code::MemoryBlockFit)],
        },
        // LM-09: every block in one contiguous free range.
        Case {
            name: "LM-09 blocks fit exactly in two ranges",
            change: |f| {
                add_domain(&mut f.target, plain_domain("ldom2", DomainKind::Guest));
                lay_out_after_primary(
                    &mut f.target,
                    &[("", 248 * MIB), ("ldom2", 4 * GIB), ("", 16136 * MIB), ("ldom2", 35320 * MIB)],
                );
            },
            errors: &[],
        },
        Case {
            name: "LM-09 free memory suffices but the 16136M block has no range",
            change: |f| {
                add_domain(&mut f.target, plain_domain("ldom2", DomainKind::Guest));
                lay_out_after_primary(
                    &mut f.target,
                    &[
                        ("", 12 * GIB),
                        ("ldom2", 4 * GIB),
                        ("", 12 * GIB),
                        ("ldom2", 4 * GIB),
                        ("", 12 * GIB),
                        ("ldom2", 10744 * MIB),
                    ],
                );
            },
            errors: &[(LM09, Code::MemoryBlockFit)],
        },
        // LM-10: XCP2210 or later, except XCP2230; a mismatch only warns.
        Case {
            name: "LM-10 XCP2210 to XCP2290",
            change: |f| f.target.firmware = Firmware("XCP2290".into()),
            errors: &[],
        },
        Case {
            name: "LM-10 source older than XCP2210",
            change: |f| f.source.firmware = Firmware("XCP2200".into()),
            errors: &[(LM10, Code::FirmwareUnsupported)],
        },
        Case {
            name: "LM-10 target on the excluded XCP2230",
            change: |f| f.target.firmware = Firmware("XCP2230".into()),
            errors: &[(LM10, Code::FirmwareUnsupported)],
        },
        Case {
            name: "LM-10 firmware that is not an XCP version on SPARC M10",
            change: |f| f.target.firmware = Firmware("unknown".into()),
            errors: &[(LM10, Code::FirmwareUnsupported)],
        },
        // LM-11: both control domains and the guest.
        Case {
            name: "LM-11 Solaris 10 1/13 with 150817-02 and Solaris 11.4",
            change: |f| {
                f.target.os = os("Solaris 10 1/13 150817-02");
                f.source.domain_mut("ldom1").unwrap().os = Some(os("Solaris 11.4"));
            },
            errors: &[],
        },
        Case {
            name: "LM-11 source control domain before SRU 11.1.17.5.0",
            change: |f| f.source.os = os("Solaris 11.1.16.0.0"),
            errors: &[(LM11, Code::OsUnsupported)],
        },
        Case {
            name: "LM-11 target control domain on Solaris 10 without the patch",
            change: |f| f.target.os = os("Solaris 10 1/13"),
            errors: &[(LM11, Code::OsUnsupported)],
        },
        Case {
            name: "LM-11 guest on Solaris 11.1",
            change: |f| f.source.domain_mut("ldom1").unwrap().os = Some(os("Solaris 11.1")),
            errors: &[(LM11, Code::OsUnsupported)],
        },
        // OP-05: the name on the target must be free.
        Case {
            name: "OP-05 new name where the old one is taken",
            change: |f| {
                add_domain(&mut f.target, plain_domain("ldom1", DomainKind::Guest));
                f.new_name = Some("ldom1b");
            },
            errors: &[],
        },
        Case {
            name: "OP-05 target already has ldom1",
            change: |f| add_domain(&mut f.target, plain_domain("ldom1", DomainKind::Guest)),
            errors: &[(OP05, Code::NameTaken)],
        },
        Case {
            name: "OP-05 the name is reserved by another migration",
            change: |f| {
                f.reserved.domain_names.insert("ldom1".into());
            },
            errors: &[(OP05, Code::NameTaken)],
        },
        Case {
            name: "OP-05 the new name is taken",
            change: |f| {
                add_domain(&mut f.target, plain_domain("ldom2", DomainKind::Guest));
                f.new_name = Some("ldom2");
            },
            errors: &[(OP05, Code::NameTaken)],
        },
        // LM-13: a free console port in the target's VCC.
        Case {
            name: "LM-13 last port of the range free",
            change: |f| {
                f.target.services.vcc[0].port_max = 5001;
                add_domain(&mut f.target, guest_domain("ldom2", 5000));
            },
            errors: &[],
        },
        Case {
            name: "LM-13 every port taken by a domain",
            change: fill_console_range,
            errors: &[(LM13, Code::NoConsolePort)],
        },
        Case {
            name: "LM-13 every port taken by a domain or a reservation",
            change: |f| {
                f.target.services.vcc[0].port_max = 5001;
                add_domain(&mut f.target, guest_domain("ldom2", 5001));
                f.reserved.console_ports.insert(5000);
            },
            errors: &[(LM13, Code::NoConsolePort)],
        },
    ]
}

#[test]
fn each_rule_passes_and_fails_with_its_own_id_and_code() {
    // Goal: every rule has a passing and a failing case, and a failing case lists
    // exactly the (rule, code) pairs it breaks; a passing case carries a binding.
    let mut failures = Vec::new();
    for case in cases() {
        let mut f = Fixture::seed();
        (case.change)(&mut f);
        assert_valid(&f.source);
        assert_valid(&f.target);
        let report = f.run();
        let mut want = case.errors.to_vec();
        want.sort();
        let got = error_ids(&report);
        if got != want {
            failures.push(format!("{}: want {want:?}, got {:#?}", case.name, report.errors));
            continue;
        }
        if report.ok() != report.binding.is_some() {
            failures.push(format!("{}: ok={} but binding={:?}", case.name, report.ok(), report.binding));
        }
        for e in &report.errors {
            if !e.to_string().starts_with(&e.rule.to_string()) {
                failures.push(format!("{}: message does not open with its rule: {e}", case.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_checked_rule_has_a_pass_and_a_fail_case() {
    // Goal: the table above covers LM-01, LM-03..LM-11, LM-13 and OP-05 both ways
    // (LM-12 only informs: its cases pass, and what blocks a move is LM-05 or LM-06).
    let table = cases();
    let failing: std::collections::BTreeSet<Rule> = table.iter().flat_map(|c| c.errors.iter().map(|e| e.0)).collect();
    let rules = [LM01, LM03, LM04, LM05, LM06, LM07, LM08, LM09, LM10, LM11, LM13, OP05];
    for rule in rules {
        assert!(failing.contains(&rule), "no failing case for {rule}");
        let prefix = rule.to_string();
        assert!(table.iter().any(|c| c.errors.is_empty() && c.name.starts_with(&prefix)), "no passing case for {rule}");
    }
}

#[test]
fn reports_every_violation_of_a_target_failing_many_rules() {
    // Goal: preflight does not stop at the first problem: each broken rule is listed.
    let source = seed_source();
    let mut target = seed_target();
    target.firmware = Firmware("XCP2230".into());
    target.cpu.frequency_mhz = 3700;
    target.services.vsw.clear();
    volume_mut(&mut target, "vol0").device = "/dev/dsk/c1t0d0s2".into();
    add_domain(&mut target, plain_domain("ldom2", DomainKind::Guest));
    bind_cores(&mut target, "ldom2", &(4..14).collect::<Vec<_>>());
    lay_out_after_primary(
        &mut target,
        &[("", 10 * GIB), ("ldom2", 25088 * MIB), ("", 10 * GIB), ("ldom2", 10232 * MIB)],
    );
    assert_valid(&target);
    let report = check(&source, &target, "ldom1");
    assert_eq!(
        error_ids(&report),
        vec![
            (LM04, Code::ServiceMissing),
            (LM04, Code::VolumeDeviceMismatch),
            (LM06, Code::TooFewFreeCpus),
            (LM07, Code::CpuArchMismatch),
            (LM09, Code::MemoryBlockFit),
            (LM10, Code::FirmwareUnsupported),
        ],
        "{:#?}",
        report.errors
    );
    assert!(report.binding.is_none());
    assert!(!report.ok());
}

#[test]
fn keeps_warnings_apart_from_errors() {
    // Goal: LM-10 firmware mismatch and LM-16 licences inform but never block.
    let source = seed_source();
    let mut target = seed_target();
    target.firmware = Firmware("XCP2290".into());
    let report = check(&source, &target, "ldom1");
    assert!(report.ok(), "{:#?}", report.errors);
    assert!(report.binding.is_some());
    assert_eq!(warning_ids(&report), vec![(LM10, Code::FirmwareMismatch), (Rule::Lm(16), Code::LicenceNote)]);
    let mismatch = report.warnings.iter().find(|w| w.code == Code::FirmwareMismatch).unwrap();
    assert!(mismatch.message.contains("XCP2210") && mismatch.message.contains("XCP2290"));

    let same = check(&source, &seed_target(), "ldom1");
    assert_eq!(warning_ids(&same), vec![(Rule::Lm(16), Code::LicenceNote)]);
    assert!(same.errors.iter().all(|e| e.rule != Rule::Lm(16)));
}

#[test]
fn warns_when_the_guest_os_is_unknown() {
    // Goal: a guest whose OS was never reported is a warning (LM-11), not an error.
    let mut source = seed_source();
    source.domain_mut("ldom1").unwrap().os = None;
    let report = check(&source, &seed_target(), "ldom1");
    assert!(report.ok(), "{:#?}", report.errors);
    assert!(warning_ids(&report).contains(&(LM11, Code::OsUnknown)));
}

#[test]
fn binds_seed_guest_to_concrete_cores_memory_and_console_port() {
    // Goal: the seed's pair gives a binding with the lowest free CIDs, one PA range per
    // block in the guest's order inside the 55800M free range, and console 5000 (the
    // seed's 5001 becomes 5000, LM-13).
    let source = seed_source();
    let target = seed_target();
    let report = check(&source, &target, "ldom1");
    assert!(report.ok(), "{:#?}", report.errors);
    let b = report.binding.expect("binding");
    assert_eq!(b.domain, "ldom1");
    assert!(b.whole_cores);
    assert_eq!(b.cids, vec![4, 5, 6, 7]);
    assert_eq!(b.strands, (8..16).collect::<Vec<u32>>());
    assert_eq!(b.console_port, Some(5000));
    let sizes: Vec<u64> = b.memory.iter().map(|r| r.size).collect();
    assert_eq!(sizes, vec![248 * MIB, 16136 * MIB]);
    let free = tern_model::Range::new(AFTER_PRIMARY_PA, 55800 * MIB);
    assert!(b.memory.iter().all(|r| free.contains(r)), "{b}");
    assert!(!b.memory[0].overlaps(&b.memory[1]));
    assert!(b.memory.iter().all(|r| r.pa % (4 * MIB) == 0));
}

#[test]
fn gives_the_next_free_console_port_and_the_new_name() {
    // Goal: LM-13 skips ports used on the target or reserved; OP-05's new name is the
    // binding's domain.
    let source = seed_source();
    let mut target = seed_target();
    add_domain(&mut target, guest_domain("ldom1", 5000));
    let mut reserved = Reserved::default();
    reserved.console_ports.insert(5001);
    let report = check_with(&source, &target, "ldom1", Some("ldom1b"), &reserved);
    assert!(report.ok(), "{:#?}", report.errors);
    let b = report.binding.unwrap();
    assert_eq!(b.domain, "ldom1b");
    assert_eq!(b.console_port, Some(5002));
}

#[test]
fn gives_thread_guests_threads_from_partly_bound_cores_first() {
    // Goal: a T4 guest of 2 threads gets 2 strands of a core already partly bound,
    // keeping whole cores free (LM-06).
    let mut f = Fixture::seed();
    t4_thread_guest(&mut f);
    add_domain(&mut f.target, plain_domain("ldom2", DomainKind::Guest));
    set_strands(&mut f.target, "ldom2", &[16, 17, 18, 19]);
    let report = f.run();
    assert!(report.ok(), "{:#?}", report.errors);
    let b = report.binding.unwrap();
    assert!(!b.whole_cores);
    assert_eq!(b.strands, vec![20, 21]);
    assert_eq!(b.cids, vec![2]);
}

#[test]
fn refuses_an_unknown_domain() {
    // Goal: a guest that is not on the source is reported by name, and nothing else.
    let report = check(&seed_source(), &seed_target(), "ldom9");
    assert_eq!(error_ids(&report), vec![(Rule::Op(1), Code::DomainNotFound)]);
    assert_eq!(report.errors[0].to_string(), "OP-01 LDom \"ldom9\" was not found on m10-1-1");
}

#[test]
fn refuses_the_control_domain_and_its_name() {
    // Goal: migrating `primary` as is breaks LM-01 and OP-05 together.
    let report = check(&seed_source(), &seed_target(), "primary");
    assert_eq!(error_ids(&report), vec![(LM01, Code::NotAGuest), (OP05, Code::NameTaken)]);
    assert_eq!(
        report.errors.iter().find(|e| e.rule == LM01).unwrap().to_string(),
        "LM-01 primary is a control domain; only guest domains can be migrated"
    );
}

#[test]
fn chooses_lowest_cids_ascending_whatever_the_core_order() {
    // Goal: the binding's CIDs are the lowest free ones, ascending, even when the
    // server lists its cores in another order (the Binding contract).
    let mut target = seed_target();
    target.cores.reverse();
    let report = check(&seed_source(), &target, "ldom1");
    assert!(report.ok(), "{:#?}", report.errors);
    let b = report.binding.unwrap();
    assert_eq!(b.cids, vec![4, 5, 6, 7]);
    assert_eq!(b.strands, (8..16).collect::<Vec<u32>>());
}

#[test]
fn keeps_the_number_of_threads_across_core_sizes() {
    // Goal: LM-12: an M10 guest of 4 whole 2-thread cores gets one whole 8-thread T4
    // core: 8 threads before and after.
    let mut source = seed_source();
    source.domain_mut("ldom1").unwrap().cpu_arch = tern_model::CpuArch::Generic;
    let report = check(&source, &t4_1("t4-1"), "ldom1");
    assert!(report.ok(), "{:#?}", report.errors);
    let b = report.binding.unwrap();
    assert!(b.whole_cores);
    assert_eq!(b.cids, vec![2]);
    assert_eq!(b.strands, (16..24).collect::<Vec<u32>>());
}

#[test]
fn os_refusal_reads_as_one_sentence() {
    // Goal: LM-11 says "<who> runs <release>, which is older than ...", not "runs X is older than".
    let mut source = seed_source();
    source.os = os("Solaris 11.1.16.5.0");
    let report = check(&source, &seed_target(), "ldom1");
    assert_eq!(error_ids(&report), vec![(LM11, Code::OsUnsupported)]);
    assert_eq!(
        report.errors[0].to_string(),
        "LM-11 m10-1-1's control domain runs Solaris 11.1.16.5.0, which is older than Solaris 11.1.17.5.0 \
         (11.1 SRU 17.5); live migration needs Solaris 11.1.17.5.0 or later, or Solaris 10 1/13 with patch 150817-02"
    );
    let mut target = seed_target();
    target.os = os("Solaris 10 1/13");
    let report = check(&seed_source(), &target, "ldom1");
    assert!(
        report.errors[0]
            .message
            .starts_with("m10-1-2's control domain runs Solaris 10 1/13, which lacks patch 150817-02")
    );
}

#[test]
fn accepts_the_os_forms_solaris_reports_in_a_migration() {
    // Goal: a control domain whose OS was read from /etc/release or uname passes LM-11 when recent enough.
    for text in ["Oracle Solaris 11.4 SPARC", "SunOS 5.11 11.4.42.111.0", "0.5.11 (Oracle Solaris 11.1.17.5.0)"] {
        let mut target = seed_target();
        target.os = os(text);
        let report = check(&seed_source(), &target, "ldom1");
        assert!(report.ok(), "{text}: {:#?}", report.errors);
    }
}

#[test]
fn gives_a_t4_thread_guest_whole_cores_on_an_m10_target() {
    // Goal: LM-05 on the target: a 2-thread generic T4 guest gets one whole M10 core,
    // not two threads on two half-used cores.
    let mut f = Fixture::seed();
    t4_thread_guest(&mut f);
    f.source.domain_mut("ldom1").unwrap().cpu_arch = tern_model::CpuArch::Generic;
    f.target = seed_target();
    // A half-used core on the target: a thread guest would be put there first.
    add_domain(&mut f.target, plain_domain("ldom2", DomainKind::Guest));
    set_strands(&mut f.target, "ldom2", &[8]);
    let report = f.run();
    assert!(report.ok(), "{:#?}", report.errors);
    let b = report.binding.unwrap();
    assert!(b.whole_cores);
    assert_eq!((b.cids, b.strands), (vec![5], vec![10, 11]));
}

#[test]
fn names_the_blocking_rule_when_whole_cores_cannot_stay_whole() {
    // Goal: a 1-core M10 guest refused by a T4 is reported under LM-06 with the numbers.
    let mut source = seed_source();
    source.domain_mut("ldom1").unwrap().cpu_arch = tern_model::CpuArch::Generic;
    set_strands(&mut source, "ldom1", &[8, 9]);
    let report = check(&source, &t4_1("t4-1"), "ldom1");
    assert_eq!(error_ids(&report), vec![(LM06, Code::NotWholeCores)]);
    assert!(
        report.errors[0].message.contains("2 threads in whole cores") && report.errors[0].message.contains("8 threads")
    );
}

#[test]
fn refuses_a_guest_with_cores_but_no_memory() {
    // Goal: a guest holding cores and no memory block is refused (LM-09, no-memory-blocks), not passed.
    let mut source = seed_source();
    for b in &mut source.memory {
        if b.bound.as_ref().and_then(tern_model::Owner::domain) == Some("ldom1") {
            b.bound = None;
        }
    }
    let report = check(&source, &seed_target(), "ldom1");
    assert_eq!(error_ids(&report), vec![(LM09, Code::NoMemoryBlocks)]);
    assert_eq!(
        report.errors[0].to_string(),
        "LM-09 ldom1 has no memory blocks bound on m10-1-1; only a bound guest with memory can be migrated"
    );
    assert!(report.binding.is_none());
}

#[test]
fn refusals_use_the_right_article() {
    // Goal: "ldom1 is an I/O root domain", "a service domain": messages read as English.
    let mut source = seed_source();
    source.domain_mut("ldom1").unwrap().kind = DomainKind::IoRoot;
    let report = check(&source, &seed_target(), "ldom1");
    assert_eq!(report.errors[0].message, "ldom1 is an I/O root domain; only guest domains can be migrated");
    source.domain_mut("ldom1").unwrap().kind = DomainKind::Service;
    let report = check(&source, &seed_target(), "ldom1");
    assert_eq!(report.errors[0].message, "ldom1 is a service domain; only guest domains can be migrated");
}
