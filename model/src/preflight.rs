//! Preflight: every live-migration rule that can be checked before anything moves
//! (LM-01, LM-03..LM-11, and the naming of OP-05), each its own check.
//!
//! All checks run; every violation is reported with its rule id, a stable code and
//! a message that names the numbers. Warnings (LM-10 firmware mismatch, LM-11 unknown
//! guest OS, LM-16 licences) are kept apart from errors and never block. When there
//! are no errors the report carries the [`Binding`] a migration would reserve.

use crate::fit::{FitError, SEARCH_NODES_MAX, fit_memory};
use crate::placement::{Binding, CpuShortfall, choose_console_port, choose_cpus, whole_cores_on};
use crate::server::{CpuHolding, Domain, DomainKind, Reserved, Server};
use crate::units::Size;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A rule id of SPEC.md (`LM-09`, `OP-05`, ...).
///
/// Serialized as its text, `"LM-09"`, as `ternctl` prints it. Deserialize also takes
/// the form written before that (`{"Lm":9}`, serde's externally tagged enum), so Raft
/// responses and rows stored by an older agent still read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    Lm(u8),
    Op(u8),
    Ha(u8),
    Rb(u8),
}

impl std::str::FromStr for Rule {
    type Err = String;

    /// Parses `LM-09` (also `lm-9`, `LM09`): a family of SPEC.md and a number 1..=99.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || format!("rule {text:?} is not a SPEC id such as LM-09, OP-05, HA-02 or RB-01");
        let t = text.trim();
        let split = t.find(|c: char| c.is_ascii_digit() || c == '-').ok_or_else(bad)?;
        let (family, rest) = t.split_at(split);
        let number: u8 = rest.strip_prefix('-').unwrap_or(rest).parse().map_err(|_| bad())?;
        if number == 0 || number > 99 {
            return Err(bad());
        }
        match family.to_ascii_uppercase().as_str() {
            "LM" => Ok(Self::Lm(number)),
            "OP" => Ok(Self::Op(number)),
            "HA" => Ok(Self::Ha(number)),
            "RB" => Ok(Self::Rb(number)),
            _ => Err(bad()),
        }
    }
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// The form serde derived before rules were written as text: `{"Lm":4}`.
        #[derive(Deserialize)]
        enum Tagged {
            Lm(u8),
            Op(u8),
            Ha(u8),
            Rb(u8),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Tagged(Tagged),
        }
        match Either::deserialize(deserializer)? {
            Either::Text(t) => t.parse().map_err(serde::de::Error::custom),
            Either::Tagged(Tagged::Lm(n)) => Ok(Self::Lm(n)),
            Either::Tagged(Tagged::Op(n)) => Ok(Self::Op(n)),
            Either::Tagged(Tagged::Ha(n)) => Ok(Self::Ha(n)),
            Either::Tagged(Tagged::Rb(n)) => Ok(Self::Rb(n)),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Lm(n) => write!(f, "LM-{n:02}"),
            Self::Op(n) => write!(f, "OP-{n:02}"),
            Self::Ha(n) => write!(f, "HA-{n:02}"),
            Self::Rb(n) => write!(f, "RB-{n:02}"),
        }
    }
}

/// Stable machine-readable codes; the text of a message may change, these do not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Code {
    DomainNotFound,
    SameServer,
    NameTaken,
    NotAGuest,
    VdiskNotShared,
    ServiceMissing,
    VolumeMissing,
    VolumeDeviceMismatch,
    TooFewThreads,
    NeedsWholeCore,
    TooFewFreeCpus,
    TooFewFreeCores,
    NotWholeCores,
    CpuArchMismatch,
    TooLittleFreeMemory,
    MemoryBlockFit,
    MemoryFitUndecided,
    NoMemoryBlocks,
    FirmwareUnsupported,
    FirmwareMismatch,
    OsUnsupported,
    OsUnknown,
    NoConsolePort,
    /// The binding placement chose fails the one binding check (a server whose
    /// tables contradict each other): refused rather than proposed.
    BindingRefused,
    LicenceNote,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DomainNotFound => "domain-not-found",
            Self::SameServer => "same-server",
            Self::NameTaken => "name-taken",
            Self::NotAGuest => "not-a-guest",
            Self::VdiskNotShared => "vdisk-not-shared",
            Self::ServiceMissing => "service-missing",
            Self::VolumeMissing => "volume-missing",
            Self::VolumeDeviceMismatch => "volume-device-mismatch",
            Self::TooFewThreads => "too-few-threads",
            Self::NeedsWholeCore => "needs-whole-core",
            Self::TooFewFreeCpus => "too-few-free-cpus",
            Self::TooFewFreeCores => "too-few-free-cores",
            Self::NotWholeCores => "not-whole-cores",
            Self::CpuArchMismatch => "cpu-arch-mismatch",
            Self::TooLittleFreeMemory => "too-little-free-memory",
            Self::MemoryBlockFit => "memory-block-fit",
            Self::MemoryFitUndecided => "memory-fit-undecided",
            Self::NoMemoryBlocks => "no-memory-blocks",
            Self::FirmwareUnsupported => "firmware-unsupported",
            Self::FirmwareMismatch => "firmware-mismatch",
            Self::OsUnsupported => "os-unsupported",
            Self::OsUnknown => "os-unknown",
            Self::NoConsolePort => "no-console-port",
            Self::BindingRefused => "binding-refused",
            Self::LicenceNote => "licence-note",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failed (or warned) condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    pub rule: Rule,
    pub code: Code,
    pub message: String,
}

impl Violation {
    fn new(rule: Rule, code: Code, message: String) -> Self {
        Self { rule, code, message }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.rule, self.message)
    }
}

/// The question: may `domain` move from `source` to `target` (as `new_name`)?
#[derive(Clone, Copy, Debug)]
pub struct MigrationQuery<'a> {
    pub source: &'a Server,
    pub target: &'a Server,
    pub domain: &'a str,
    pub new_name: Option<&'a str>,
    /// Resources on the target already promised to other operations.
    pub target_reserved: &'a Reserved,
}

/// The answer: errors block, warnings inform, the binding is what would be reserved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub errors: Vec<Violation>,
    pub warnings: Vec<Violation>,
    pub binding: Option<Binding>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }

    fn error(&mut self, rule: Rule, code: Code, message: String) {
        self.errors.push(Violation::new(rule, code, message));
    }

    fn warn(&mut self, rule: Rule, code: Code, message: String) {
        self.warnings.push(Violation::new(rule, code, message));
    }
}

/// Runs every check. Pure: reads only its arguments.
pub fn preflight(q: &MigrationQuery<'_>) -> Report {
    let mut r = Report::default();
    let Some(guest) = q.source.domain(q.domain) else {
        r.error(Rule::Op(1), Code::DomainNotFound, format!("LDom \"{}\" was not found on {}", q.domain, q.source.name));
        return r;
    };
    let cpu = q.source.cpu_of(&guest.name);
    let blocks: Vec<u64> = q.source.memory_of(&guest.name).iter().map(|b| b.size).collect();
    check_kind(guest, &mut r); // LM-01
    check_names(q, guest, &mut r); // OP-01, OP-05
    check_storage(q, guest, &mut r); // LM-03, LM-04
    check_network_and_console(q, guest, &mut r); // LM-04
    check_threads(q, guest, &cpu, &mut r); // LM-05
    let cpus = check_free_cpus(q, guest, &cpu, &mut r); // LM-06
    check_cpu_arch(q, guest, &mut r); // LM-07
    let memory = check_memory(q, guest, &blocks, &mut r); // LM-08, LM-09
    check_firmware(q, &mut r); // LM-10
    check_os(q, guest, &mut r); // LM-11
    let port = check_console_port(q, guest, &mut r); // LM-13
    if r.ok() {
        r.warn(
            Rule::Lm(16),
            Code::LicenceNote,
            format!("middleware licences of {} may need extending to {}", guest.name, q.target.name),
        );
    }
    if r.ok()
        && let (Some((cids, strands)), Some(memory)) = (cpus, memory)
    {
        let binding = Binding {
            domain: q.new_name.unwrap_or(&guest.name).to_string(),
            whole_cores: whole_cores_on(q.target, &cpu),
            cids,
            strands,
            memory,
            console_port: port,
        };
        // Postcondition: what preflight proposes passes the one binding check that
        // Reserve, CommitMigration and bind_domain run (LM-06, LM-09, LM-12, LM-13).
        // The servers come from outside (a peer's Prepare), so a failure is a refusal
        // naming the rule, never a panic; the property tests hold it never happens.
        let shape = crate::binding::GuestShape::of(q.source, guest);
        match q.target.check_binding(&shape, &binding, q.target_reserved) {
            Ok(()) => r.binding = Some(binding),
            Err(e) => {
                let rule = e.rule().unwrap_or(Rule::Lm(12));
                let message = format!("{} cannot take {} as placed ({binding}): {e}", q.target.name, guest.name);
                r.warnings.retain(|w| w.code != Code::LicenceNote);
                r.error(rule, Code::BindingRefused, message);
            }
        }
    }
    r
}

fn check_names(q: &MigrationQuery<'_>, guest: &Domain, r: &mut Report) {
    if q.source.name == q.target.name {
        r.error(
            Rule::Op(1),
            Code::SameServer,
            format!("{} is already on {}; the target must be another server", guest.name, q.target.name),
        );
    }
    let name = q.new_name.unwrap_or(&guest.name);
    if q.target.domain(name).is_some() || q.target_reserved.domain_names.contains(name) {
        r.error(
            Rule::Op(5),
            Code::NameTaken,
            format!(
                "{} already has a domain named {name}; give a new name with {}:<newname>",
                q.target.name, q.target.name
            ),
        );
    }
}

/// LM-01: only guest domains migrate.
fn check_kind(guest: &Domain, r: &mut Report) {
    if guest.kind != DomainKind::Guest {
        r.error(
            Rule::Lm(1),
            Code::NotAGuest,
            format!("{} is {}; only guest domains can be migrated", guest.name, with_article(&guest.kind.to_string())),
        );
    }
}

/// `control domain` -> `a control domain`, `I/O root domain` -> `an I/O root domain`:
/// "an" before a vowel sound, which an initialism such as I/O starts with.
fn with_article(noun: &str) -> String {
    let vowel_sound = noun.starts_with(|c: char| "aeiouAEIOU".contains(c))
        || noun.split(|c: char| !c.is_ascii_alphabetic()).next().is_some_and(|w| {
            w.len() <= 3
                && w.chars().all(|c| c.is_ascii_uppercase())
                && w.starts_with(|c: char| "AEFHILMNORSX".contains(c))
        });
    format!("{} {noun}", if vowel_sound { "an" } else { "a" })
}

/// LM-03 (backends shared and visible) and LM-04 (same VDS, volume, device).
fn check_storage(q: &MigrationQuery<'_>, guest: &Domain, r: &mut Report) {
    for disk in &guest.vdisks {
        let src_vol =
            q.source.services.vds(&disk.service).and_then(|v| v.volumes.iter().find(|vol| vol.name == disk.volume));
        let Some(src_vol) = src_vol else { continue }; // a layout error, caught by validate()
        if !src_vol.shared {
            r.error(
                Rule::Lm(3),
                Code::VdiskNotShared,
                format!(
                    "{}'s {} is backed by {} ({}@{}), which is not shared storage: make it visible to {} or remove the vdisk",
                    guest.name, disk.name, src_vol.device, disk.volume, disk.service, q.target.name
                ),
            );
        }
        let Some(vds) = q.target.services.vds(&disk.service) else {
            r.error(
                Rule::Lm(4),
                Code::ServiceMissing,
                format!("{} has no VDS {} (needed by {}'s {})", q.target.name, disk.service, guest.name, disk.name),
            );
            continue;
        };
        match vds.volumes.iter().find(|v| v.name == disk.volume) {
            None => r.error(
                Rule::Lm(4),
                Code::VolumeMissing,
                format!(
                    "{} has no volume {}@{} (needed by {}'s {})",
                    q.target.name, disk.volume, disk.service, guest.name, disk.name
                ),
            ),
            Some(v) if v.device != src_vol.device => r.error(
                Rule::Lm(4),
                Code::VolumeDeviceMismatch,
                format!(
                    "volume {}@{} is {} on {} but {} on {}",
                    disk.volume, disk.service, src_vol.device, q.source.name, v.device, q.target.name
                ),
            ),
            Some(v) if src_vol.shared && !v.shared => r.error(
                Rule::Lm(3),
                Code::VdiskNotShared,
                format!(
                    "{} cannot see {}'s {} backend {}: its volume {}@{} is not on shared storage",
                    q.target.name, guest.name, disk.name, v.device, disk.volume, disk.service
                ),
            ),
            Some(_) => {}
        }
    }
}

/// LM-04 for virtual switches and the console concentrator.
fn check_network_and_console(q: &MigrationQuery<'_>, guest: &Domain, r: &mut Report) {
    for net in &guest.vnets {
        if q.target.services.vsw(&net.service).is_none() {
            r.error(
                Rule::Lm(4),
                Code::ServiceMissing,
                format!("{} has no VSW {} (needed by {}'s {})", q.target.name, net.service, guest.name, net.name),
            );
        }
    }
    if let Some(c) = &guest.console
        && q.target.services.vcc(&c.service).is_none()
    {
        r.error(
            Rule::Lm(4),
            Code::ServiceMissing,
            format!("{} has no VCC {} (needed by {}'s console)", q.target.name, c.service, guest.name),
        );
    }
}

/// LM-05: at least 2 threads; on SPARC64 (SPARC M10) at least one whole core.
fn check_threads(q: &MigrationQuery<'_>, guest: &Domain, cpu: &CpuHolding, r: &mut Report) {
    if cpu.strands.len() < 2 {
        r.error(
            Rule::Lm(5),
            Code::TooFewThreads,
            format!("{} has {} CPU thread(s); a migrating guest needs at least 2", guest.name, cpu.strands.len()),
        );
    } else if q.source.cpu.family.is_sparc64() && !cpu.whole_cores {
        r.error(
            Rule::Lm(5),
            Code::NeedsWholeCore,
            format!(
                "{} holds {} threads but not whole cores; on {} a migrating guest needs at least one whole core",
                guest.name,
                cpu.strands.len(),
                q.source.model
            ),
        );
    }
}

/// LM-06: enough free (activated, unbound, unreserved) CPUs on the target.
fn check_free_cpus(
    q: &MigrationQuery<'_>,
    guest: &Domain,
    cpu: &CpuHolding,
    r: &mut Report,
) -> Option<(Vec<u32>, Vec<u32>)> {
    if cpu.strands.is_empty() {
        return None;
    }
    match choose_cpus(q.target, cpu, q.target_reserved) {
        Ok(c) => Some(c),
        Err(CpuShortfall::Strands { need, free }) => {
            r.error(
                Rule::Lm(6),
                Code::TooFewFreeCpus,
                format!("{} has {free} free CPU thread(s); {} needs {need}", q.target.name, guest.name),
            );
            None
        }
        // A migration keeps the number of threads (LM-12), so a thread count that is
        // not a whole number of the target's cores cannot be whole cores there.
        Err(CpuShortfall::NotWholeCores { threads, per_core }) if q.target.cpu.family.needs_whole_cores() => {
            // LM-05 on the target: a guest on SPARC M10 needs whole cores. Said once:
            // a guest already refused under LM-05 on its source is not refused again.
            if r.errors.iter().any(|e| e.rule == Rule::Lm(5)) {
                return None;
            }
            r.error(
                Rule::Lm(5),
                Code::NeedsWholeCore,
                format!(
                    "{} has {threads} CPU thread(s); on {} ({}) a guest needs whole cores of {per_core} threads, and {threads} is not a multiple of {per_core}",
                    guest.name, q.target.name, q.target.model
                ),
            );
            None
        }
        Err(CpuShortfall::NotWholeCores { threads, per_core }) => {
            // LM-06: the target cannot give the guest its CPUs in the whole cores it holds.
            r.error(
                Rule::Lm(6),
                Code::NotWholeCores,
                format!(
                    "{} holds {threads} threads in whole cores; {}'s cores have {per_core} threads, so the same amount of CPU cannot be whole cores there",
                    guest.name, q.target.name
                ),
            );
            None
        }
        Err(CpuShortfall::WholeCores { need, free }) => {
            let code = if q.target.free_strands(q.target_reserved).len() < cpu.strands.len() {
                Code::TooFewFreeCpus
            } else {
                Code::TooFewFreeCores
            };
            r.error(
                Rule::Lm(6),
                code,
                format!("{} has {free} free whole core(s); {} needs {need}", q.target.name, guest.name),
            );
            None
        }
    }
}

/// LM-07: the guest's cpu-arch must allow the move; migration never changes it.
fn check_cpu_arch(q: &MigrationQuery<'_>, guest: &Domain, r: &mut Report) {
    let (s, t) = (q.source.cpu, q.target.cpu);
    if !guest.cpu_arch.allows(s, t) {
        let needed = crate::cpu::CpuArch::needed(s, t);
        r.error(
            Rule::Lm(7),
            Code::CpuArchMismatch,
            format!(
                "{} has cpu-arch={} but {} is {} and {} is {}; this move needs cpu-arch={needed} (changing it needs a guest restart)",
                guest.name, guest.cpu_arch, q.source.name, s, q.target.name, t
            ),
        );
    }
}

/// LM-08 (enough free memory) and LM-09 (the blocks fit).
fn check_memory(
    q: &MigrationQuery<'_>,
    guest: &Domain,
    blocks: &[u64],
    r: &mut Report,
) -> Option<Vec<crate::units::Range>> {
    if blocks.is_empty() {
        // A guest with no memory is not bound (or its inventory is incomplete): there is
        // no block structure for LM-09 to recreate, and nothing that could run on the target.
        r.error(
            Rule::Lm(9),
            Code::NoMemoryBlocks,
            format!(
                "{} has no memory blocks bound on {}; only a bound guest with memory can be migrated",
                guest.name, q.source.name
            ),
        );
        return None;
    }
    let free = q.target.free_ranges(q.target_reserved);
    let total_free: u64 = free.iter().map(|f| f.size).sum();
    let largest_free = free.iter().map(|f| f.size).max().unwrap_or(0);
    let need: u64 = blocks.iter().sum();
    if total_free < need {
        r.error(
            Rule::Lm(8),
            Code::TooLittleFreeMemory,
            format!("{} has {} free memory; {} needs {}", q.target.name, Size(total_free), guest.name, Size(need)),
        );
    }
    match fit_memory(blocks, &free) {
        Ok(fit) => Some(fit.ranges),
        Err(FitError::NoFit) => {
            let largest_block = blocks.iter().copied().max().unwrap_or(0);
            let what = if largest_block > largest_free {
                format!("{}'s {} block", guest.name, Size(largest_block))
            } else {
                let sizes: Vec<String> = blocks.iter().map(|b| Size(*b).to_string()).collect();
                format!("{}'s blocks {}", guest.name, sizes.join(" + "))
            };
            r.error(
                Rule::Lm(9),
                Code::MemoryBlockFit,
                format!(
                    "{} cannot hold {what}: largest free range {} ({} free in {} range{})",
                    q.target.name,
                    Size(largest_free),
                    Size(total_free),
                    free.len(),
                    if free.len() == 1 { "" } else { "s" }
                ),
            );
            None
        }
        Err(FitError::SearchLimit { nodes }) => {
            r.error(
                Rule::Lm(9),
                Code::MemoryFitUndecided,
                format!(
                    "could not decide within {nodes} search steps (limit {SEARCH_NODES_MAX}) whether {}'s {} blocks fit {}'s {} free ranges",
                    guest.name,
                    blocks.len(),
                    q.target.name,
                    free.len()
                ),
            );
            None
        }
    }
}

/// LM-10: XCP2210 or later except XCP2230 on SPARC M10 servers; versions differing
/// between source and target only warn.
fn check_firmware(q: &MigrationQuery<'_>, r: &mut Report) {
    for server in [q.source, q.target] {
        if !server.cpu.family.is_sparc64() {
            continue; // the XCP rule is about SPARC M10's firmware
        }
        let problem = match server.firmware.xcp() {
            None => Some(format!("firmware {:?} is not an XCP version", server.firmware.0)),
            Some(xcp) => crate::version::xcp_problem(xcp),
        };
        if let Some(p) = problem {
            r.error(
                Rule::Lm(10),
                Code::FirmwareUnsupported,
                format!(
                    "{} runs {}: {p}; live migration needs XCP2210 or later, except XCP2230",
                    server.name, server.firmware
                ),
            );
        }
    }
    if q.source.firmware != q.target.firmware {
        r.warn(
            Rule::Lm(10),
            Code::FirmwareMismatch,
            format!(
                "{} runs {} and {} runs {}; differing firmware may prevent migration",
                q.source.name, q.source.firmware, q.target.name, q.target.firmware
            ),
        );
    }
}

/// LM-11: both control domains and the guest run a release that supports migration.
fn check_os(q: &MigrationQuery<'_>, guest: &Domain, r: &mut Report) {
    let parties = [
        (format!("{}'s control domain", q.source.name), Some(&q.source.os)),
        (format!("{}'s control domain", q.target.name), Some(&q.target.os)),
        (guest.name.clone(), guest.os.as_ref()),
    ];
    for (who, os) in parties {
        match os {
            Some(os) => {
                if let Some(p) = os.migration_problem() {
                    r.error(
                        Rule::Lm(11),
                        Code::OsUnsupported,
                        format!(
                            "{who} runs {os}, {p}; live migration needs Solaris 11.1.17.5.0 or later, or Solaris 10 1/13 with patch 150817-02"
                        ),
                    );
                }
            }
            None => r.warn(Rule::Lm(11), Code::OsUnknown, format!("{who}'s OS version is unknown; not checked")),
        }
    }
}

/// LM-13: a free port in the target's VCC of the same name.
fn check_console_port(q: &MigrationQuery<'_>, guest: &Domain, r: &mut Report) -> Option<u16> {
    let c = guest.console.as_ref()?;
    let vcc = q.target.services.vcc(&c.service)?; // missing VCC: reported under LM-04
    let port = choose_console_port(q.target, &c.service, q.target_reserved);
    if port.is_none() {
        r.error(
            Rule::Lm(13),
            Code::NoConsolePort,
            format!("{} has no free console port in {} {}-{}", q.target.name, vcc.name, vcc.port_min, vcc.port_max),
        );
    }
    port
}
