//! A server as `ldm` sees it: cores and their strands, memory blocks, virtual
//! services and domains.
//!
//! Bindings live on the devices, as in `ldm list-devices`: a strand or a memory block
//! names the domain it is bound to. A domain's CPUs and memory are therefore derived
//! (`strands_of`, `memory_of`), never stored twice, so they cannot disagree.

use crate::Binding;
use crate::binding::{BindingError, GuestShape};
use crate::cpu::{CpuArch, CpuType};
use crate::units::{Range, Size};
use crate::version::{Firmware, OsVersion};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The name `ldm` gives the control domain.
pub const CONTROL_DOMAIN: &str = "primary";
/// The owner `ldm` prints for memory held by the firmware.
pub const SYS_OWNER: &str = "_sys_";

/// Who holds a memory block.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Owner {
    /// `_sys_`: the hypervisor and firmware.
    System,
    Domain(String),
}

impl Owner {
    pub fn domain(&self) -> Option<&str> {
        match self {
            Self::System => None,
            Self::Domain(d) => Some(d),
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::System => f.write_str(SYS_OWNER),
            Self::Domain(d) => f.write_str(d),
        }
    }
}

/// One row of `ldm list-devices -a memory`: PA, SIZE, BOUND (blank = free).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryBlock {
    pub pa: u64,
    pub size: u64,
    pub bound: Option<Owner>,
}

impl MemoryBlock {
    pub fn range(&self) -> Range {
        Range::new(self.pa, self.size)
    }

    pub fn end_pa(&self) -> u64 {
        self.pa.saturating_add(self.size)
    }
}

/// A hardware thread (a virtual CPU in ldm's words) and the domain it is bound to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Strand {
    pub id: u32,
    pub bound: Option<String>,
}

/// A physical core: its CID, its CPUSET and whether its activation licence is present.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Core {
    pub cid: u32,
    pub activated: bool,
    pub strands: Vec<Strand>,
}

impl Core {
    pub fn cpuset(&self) -> Vec<u32> {
        self.strands.iter().map(|s| s.id).collect()
    }

    /// Usable for a new binding: activated and no strand bound.
    pub fn is_free(&self) -> bool {
        self.activated && self.strands.iter().all(|s| s.bound.is_none())
    }
}

/// A VDS volume: the name guests refer to and the backend device behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    pub device: String,
    /// The backend is on storage every server of the cluster sees (SAN LUN, NFS).
    pub shared: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vds {
    pub name: String,
    pub domain: String,
    pub volumes: Vec<Volume>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vsw {
    pub name: String,
    pub domain: String,
    pub nic: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vcc {
    pub name: String,
    pub domain: String,
    pub port_min: u16,
    pub port_max: u16,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Services {
    pub vds: Vec<Vds>,
    pub vsw: Vec<Vsw>,
    pub vcc: Vec<Vcc>,
}

impl Services {
    pub fn vds(&self, name: &str) -> Option<&Vds> {
        self.vds.iter().find(|v| v.name == name)
    }
    pub fn vsw(&self, name: &str) -> Option<&Vsw> {
        self.vsw.iter().find(|v| v.name == name)
    }
    pub fn vcc(&self, name: &str) -> Option<&Vcc> {
        self.vcc.iter().find(|v| v.name == name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DomainKind {
    Control,
    IoRoot,
    Service,
    Guest,
}

impl fmt::Display for DomainKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Control => "control domain",
            Self::IoRoot => "I/O root domain",
            Self::Service => "service domain",
            Self::Guest => "guest domain",
        })
    }
}

/// `ldm list-domain` STATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DomainState {
    Active,
    Bound,
    Inactive,
}

impl fmt::Display for DomainState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Active => "active",
            Self::Bound => "bound",
            Self::Inactive => "inactive",
        })
    }
}

/// What the hypervisor does to a master domain's slaves when the master fails
/// (ldm `failure-policy=`, HA-08). Set on the master; `ignore` is ldm's default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    #[default]
    Ignore,
    /// The slaves panic (as `ldm panic`); their OS then reboots on this server.
    Panic,
    /// The slaves are stopped and started again (as `ldm stop -f; ldm start`).
    Reset,
    /// The slaves are stopped (as `ldm stop -f`) and stay stopped.
    Stop,
}

impl FailurePolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ignore => "ignore",
            Self::Panic => "panic",
            Self::Reset => "reset",
            Self::Stop => "stop",
        }
    }

    pub fn is_ignore(&self) -> bool {
        *self == Self::Ignore
    }
}

impl fmt::Display for FailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for FailurePolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ignore" => Ok(Self::Ignore),
            "panic" => Ok(Self::Panic),
            "reset" => Ok(Self::Reset),
            "stop" => Ok(Self::Stop),
            other => Err(format!("failure-policy {other:?} is not one of ignore, panic, reset, stop")),
        }
    }
}

/// The most masters ldm lets a domain name (`master=a,b,c,d`).
pub const MASTERS_MAX: usize = 4;

/// A virtual disk: `vdisk0` backed by `vol0@primary-vds0`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VDisk {
    pub name: String,
    pub volume: String,
    pub service: String,
}

/// A virtual network device on a virtual switch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VNet {
    pub name: String,
    pub service: String,
}

/// The domain's console on a VCC (`ldm list-domain -o console`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Console {
    pub service: String,
    pub port: u16,
    pub logging: bool,
}

/// How busy a domain is: what the rebalancer weighs and the pre-copy model needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workload {
    /// Average CPU utilisation of the domain's own CPUs, 0..=100.
    pub cpu_pct: u32,
    /// Rate at which the guest dirties memory, in MiB per second (LM-17).
    pub dirty_mib_per_s: u64,
}

/// A logical domain. Its CPUs and memory are bound on the server's devices.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Domain {
    pub name: String,
    pub kind: DomainKind,
    pub state: DomainState,
    pub cpu_arch: CpuArch,
    /// The domain's own OS (LM-11); the control domain's is the server's `os`.
    pub os: Option<OsVersion>,
    pub vdisks: Vec<VDisk>,
    pub vnets: Vec<VNet>,
    pub console: Option<Console>,
    pub workload: Workload,
    /// ldm `master=`: the domains this one depends on (HA-08), at most [`MASTERS_MAX`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masters: Vec<String>,
    /// ldm `failure-policy=`: what happens to this domain's slaves when it fails (HA-08).
    #[serde(default, skip_serializing_if = "FailurePolicy::is_ignore")]
    pub failure_policy: FailurePolicy,
}

/// The CPU a domain holds, as the rules count it (LM-05, LM-06).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuHolding {
    /// CIDs of the cores the domain touches.
    pub cids: Vec<u32>,
    /// Strand ids bound to the domain.
    pub strands: Vec<u32>,
    /// True when every core the domain touches is wholly bound to it.
    pub whole_cores: bool,
}

/// Resources on one server that are promised but not yet bound (reservations).
/// Every free-resource query subtracts them, so a reservation is never handed out twice.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reserved {
    pub strands: BTreeSet<u32>,
    pub memory: Vec<Range>,
    pub console_ports: BTreeSet<u16>,
    pub domain_names: BTreeSet<String>,
}

impl Reserved {
    /// Adds another reservation's resources.
    pub fn add(&mut self, b: &Binding) {
        self.strands.extend(b.strands.iter().copied());
        self.memory.extend(b.memory.iter().copied());
        self.console_ports.extend(b.console_port);
        self.domain_names.insert(b.domain.clone());
    }

    /// What `others` hold that `binding` contests: those of their strands, memory
    /// ranges, console ports and domain names that `binding` names or overlaps.
    /// [`Server::check_binding`] of `binding` answers the same with this as with every
    /// resource of `others` (each of its checks asks only whether the binding's own
    /// strands, ranges and port are held; a range that overlaps nothing held lies in
    /// one free range exactly when it does with everything held), while this costs no
    /// allocation for what `others` hold elsewhere. The state machine checks each
    /// Reserve with it, so a Reserve does not grow slower with every reservation the
    /// target holds (issue 18: 1,000 held reservations made each Reserve rebuild and
    /// sort 16,000 ranges).
    pub fn contested_by<'a>(binding: &Binding, others: impl IntoIterator<Item = &'a Binding>) -> Reserved {
        let mut strands: Vec<u32> = binding.strands.clone();
        strands.sort_unstable();
        let (first, last) = (strands.first().copied().unwrap_or(1), strands.last().copied().unwrap_or(0));
        // Each other range against all of the binding's cost |others| x 16 x 16 range
        // tests per Reserve, with a thousand reservations on one target (issue 18).
        let memory = SortedRanges::of(&binding.memory);
        let mut out = Reserved::default();
        for b in others {
            let held = |s: &&u32| (first..=last).contains(*s) && strands.binary_search(s).is_ok();
            out.strands.extend(b.strands.iter().filter(held));
            out.memory.extend(b.memory.iter().filter(|m| memory.overlaps(m)));
            out.console_ports.extend(b.console_port.filter(|p| binding.console_port == Some(*p)));
            if b.domain == binding.domain {
                out.domain_names.insert(b.domain.clone());
            }
        }
        out
    }
}

/// Ranges ordered by start, with the furthest end among each prefix: a range overlaps
/// one of them iff, among those that start before its end, the furthest end lies past
/// its start (what [`Range::overlaps`] against each says, in a binary search).
struct SortedRanges {
    starts: Vec<u64>,
    reach: Vec<u64>,
}

impl SortedRanges {
    fn of(ranges: &[Range]) -> Self {
        let mut sorted: Vec<Range> = ranges.iter().copied().filter(|r| r.size > 0).collect();
        sorted.sort_unstable();
        let reach = sorted
            .iter()
            .scan(0u64, |furthest, r| {
                *furthest = (*furthest).max(r.end());
                Some(*furthest)
            })
            .collect();
        Self { starts: sorted.iter().map(|r| r.pa).collect(), reach }
    }

    fn overlaps(&self, m: &Range) -> bool {
        // Most ranges of other reservations lie wholly outside the span: no search.
        let (Some(&first), Some(&furthest)) = (self.starts.first(), self.reach.last()) else { return false };
        if m.end() <= first || m.pa >= furthest {
            return false;
        }
        let before_end = self.starts.partition_point(|&pa| pa < m.end());
        m.size > 0 && before_end > 0 && self.reach[before_end - 1] > m.pa
    }
}

/// A physical server and everything bound on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    /// Host name of the control domain (the cluster's name for the server).
    pub name: String,
    /// Hardware model, e.g. `SPARC M10-1`.
    pub model: String,
    pub cpu: CpuType,
    pub firmware: Firmware,
    /// The control domain's OS (LM-11).
    pub os: OsVersion,
    pub threads_per_core: u32,
    pub cores: Vec<Core>,
    pub memory: Vec<MemoryBlock>,
    pub services: Services,
    pub domains: Vec<Domain>,
}

impl Server {
    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains.iter().find(|d| d.name == name)
    }

    pub fn domain_mut(&mut self, name: &str) -> Option<&mut Domain> {
        self.domains.iter_mut().find(|d| d.name == name)
    }

    /// HA-08: whether the hypervisor stops `guest` and keeps it stopped when this
    /// server's control domain fails (crashes, or is reset by its watchdog): the guest
    /// names the control domain among its masters and the control domain's
    /// failure-policy is `stop`. `reset` and `panic` do not count: both boot the
    /// guest's OS on this server again (at once, or when the control domain's I/O
    /// returns), so it could run beside a copy restarted elsewhere. `Err` says why not.
    pub fn stopped_with_control_domain(&self, guest: &str) -> Result<(), String> {
        let d = self.domain(guest).ok_or_else(|| format!("{} has no domain {guest}", self.name))?;
        let Some(control) = self.domains.iter().find(|d| d.kind == DomainKind::Control) else {
            return Err(format!("{} records no control domain", self.name));
        };
        if !d.masters.contains(&control.name) {
            return Err(format!(
                "{guest} is not a slave of {} (ldm set-domain master={} {guest})",
                control.name, control.name
            ));
        }
        match control.failure_policy {
            FailurePolicy::Stop => Ok(()),
            other => Err(format!(
                "{}'s failure-policy is {other}, not stop (ldm set-domain failure-policy=stop {}){}",
                control.name,
                control.name,
                if other == FailurePolicy::Ignore { "" } else { ": the guest's OS boots again on this server" }
            )),
        }
    }

    /// The CPU bound to `domain`.
    pub fn cpu_of(&self, domain: &str) -> CpuHolding {
        let mut h = CpuHolding { whole_cores: true, ..Default::default() };
        for core in &self.cores {
            let mine: Vec<u32> =
                core.strands.iter().filter(|s| s.bound.as_deref() == Some(domain)).map(|s| s.id).collect();
            if mine.is_empty() {
                continue;
            }
            if mine.len() != core.strands.len() {
                h.whole_cores = false;
            }
            h.cids.push(core.cid);
            h.strands.extend(mine);
        }
        if h.strands.is_empty() {
            h.whole_cores = false;
        }
        h
    }

    /// The memory blocks bound to `domain`, in PA order.
    pub fn memory_of(&self, domain: &str) -> Vec<Range> {
        let mut v: Vec<Range> = self
            .memory
            .iter()
            .filter(|b| b.bound.as_ref().and_then(Owner::domain) == Some(domain))
            .map(MemoryBlock::range)
            .collect();
        v.sort();
        v
    }

    pub fn total_memory(&self) -> u64 {
        self.memory.iter().map(|b| b.size).sum()
    }

    /// Activated strands bound to no domain and not reserved.
    pub fn free_strands(&self, reserved: &Reserved) -> Vec<u32> {
        self.cores
            .iter()
            .filter(|c| c.activated)
            .flat_map(|c| &c.strands)
            .filter(|s| s.bound.is_none() && !reserved.strands.contains(&s.id))
            .map(|s| s.id)
            .collect()
    }

    /// Cores whose strands are all activated, unbound and unreserved, in CID order.
    pub fn free_cores(&self, reserved: &Reserved) -> Vec<&Core> {
        let mut free: Vec<&Core> = self
            .cores
            .iter()
            .filter(|c| c.is_free() && c.strands.iter().all(|s| !reserved.strands.contains(&s.id)))
            .collect();
        free.sort_by_key(|c| c.cid);
        free
    }

    /// Free memory as maximal contiguous ranges (adjacent free blocks merged), minus
    /// anything reserved, in PA order.
    pub fn free_ranges(&self, reserved: &Reserved) -> Vec<Range> {
        let mut blocks: Vec<Range> =
            self.memory.iter().filter(|b| b.bound.is_none() && b.size > 0).map(MemoryBlock::range).collect();
        blocks.sort();
        let mut merged: Vec<Range> = Vec::with_capacity(blocks.len());
        for r in blocks {
            match merged.last_mut() {
                Some(last) if last.end() == r.pa => last.size += r.size,
                _ => merged.push(r),
            }
        }
        subtract_ranges(&merged, &reserved.memory)
    }

    /// Console ports already taken on a VCC: by a domain's console or a reservation.
    pub fn used_console_ports(&self, reserved: &Reserved) -> BTreeSet<u16> {
        let mut used: BTreeSet<u16> = self.domains.iter().filter_map(|d| d.console.as_ref().map(|c| c.port)).collect();
        used.extend(reserved.console_ports.iter().copied());
        used
    }

    /// Checks that the server is self-consistent; every problem is listed.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errs = Vec::new();
        let names: BTreeSet<&str> = self.domains.iter().map(|d| d.name.as_str()).collect();
        if names.len() != self.domains.len() {
            errs.push("two domains share a name".to_string());
        }
        if self.threads_per_core == 0 {
            errs.push("threads_per_core must be at least 1".into());
        }
        let mut cids = BTreeSet::new();
        let mut strand_ids = BTreeSet::new();
        for c in &self.cores {
            if !cids.insert(c.cid) {
                errs.push(format!("CID {} appears twice", c.cid));
            }
            if c.strands.is_empty() || c.strands.len() > self.threads_per_core as usize {
                errs.push(format!(
                    "core {} has {} threads; this server has {} per core",
                    c.cid,
                    c.strands.len(),
                    self.threads_per_core
                ));
            }
            for s in &c.strands {
                if !strand_ids.insert(s.id) {
                    errs.push(format!("CPU {} appears twice", s.id));
                }
                if let Some(d) = &s.bound {
                    if !names.contains(d.as_str()) {
                        errs.push(format!("CPU {} is bound to unknown domain {d:?}", s.id));
                    }
                    if !c.activated {
                        errs.push(format!("CPU {} is bound to {d} but core {} is not activated", s.id, c.cid));
                    }
                }
            }
        }
        let mut sorted: Vec<&MemoryBlock> = self.memory.iter().collect();
        sorted.sort_by_key(|b| b.pa);
        for w in sorted.windows(2) {
            if w[0].range().overlaps(&w[1].range()) {
                errs.push(format!("memory blocks at {:#x} ({}) and {:#x} overlap", w[0].pa, Size(w[0].size), w[1].pa));
            }
        }
        for b in &self.memory {
            if b.size == 0 {
                errs.push(format!("memory block at {:#x} has size 0", b.pa));
            }
            if b.pa.checked_add(b.size).is_none() {
                errs.push(format!("memory block at {:#x} runs past the end of the address space", b.pa));
            }
            if let Some(Owner::Domain(d)) = &b.bound
                && !names.contains(d.as_str())
            {
                errs.push(format!("memory block at {:#x} is bound to unknown domain {d:?}", b.pa));
            }
        }
        self.validate_services(&names, &mut errs);
        self.validate_domains(&mut errs);
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }

    fn validate_services(&self, names: &BTreeSet<&str>, errs: &mut Vec<String>) {
        let s = &self.services;
        let mut svc_names = BTreeSet::new();
        let all = s
            .vds
            .iter()
            .map(|v| (&v.name, &v.domain))
            .chain(s.vsw.iter().map(|v| (&v.name, &v.domain)))
            .chain(s.vcc.iter().map(|v| (&v.name, &v.domain)));
        for (name, dom) in all {
            if !svc_names.insert(name.as_str()) {
                errs.push(format!("service {name:?} is defined twice"));
            }
            if !names.contains(dom.as_str()) {
                errs.push(format!("service {name:?} is provided by unknown domain {dom:?}"));
            }
        }
        for v in &s.vcc {
            if v.port_min > v.port_max {
                errs.push(format!("VCC {} port range {}-{} runs backwards", v.name, v.port_min, v.port_max));
            }
        }
        for v in &s.vds {
            let mut vols = BTreeSet::new();
            for vol in &v.volumes {
                if !vols.insert(&vol.name) {
                    errs.push(format!("volume {}@{} is defined twice", vol.name, v.name));
                }
            }
        }
    }

    fn validate_domains(&self, errs: &mut Vec<String>) {
        let mut ports = BTreeMap::new();
        for d in &self.domains {
            if d.masters.len() > MASTERS_MAX {
                errs.push(format!("domain {} names {} masters; ldm allows {MASTERS_MAX}", d.name, d.masters.len()));
            }
            if d.masters.contains(&d.name) {
                errs.push(format!("domain {} names itself as its master", d.name));
            }
            for disk in &d.vdisks {
                match self.services.vds(&disk.service) {
                    None => {
                        errs.push(format!("domain {} vdisk {} uses unknown VDS {:?}", d.name, disk.name, disk.service))
                    }
                    Some(vds) if !vds.volumes.iter().any(|v| v.name == disk.volume) => errs.push(format!(
                        "domain {} vdisk {} uses unknown volume {}@{}",
                        d.name, disk.name, disk.volume, disk.service
                    )),
                    Some(_) => {}
                }
            }
            for net in &d.vnets {
                if self.services.vsw(&net.service).is_none() {
                    errs.push(format!("domain {} vnet {} uses unknown VSW {:?}", d.name, net.name, net.service));
                }
            }
            if let Some(c) = &d.console {
                match self.services.vcc(&c.service) {
                    None => errs.push(format!("domain {} console uses unknown VCC {:?}", d.name, c.service)),
                    Some(v) if c.port < v.port_min || c.port > v.port_max => errs.push(format!(
                        "domain {} console port {} is outside {}'s range {}-{}",
                        d.name, c.port, v.name, v.port_min, v.port_max
                    )),
                    Some(_) => {}
                }
                if let Some(other) = ports.insert(c.port, &d.name) {
                    errs.push(format!("console port {} is used by both {other} and {}", c.port, d.name));
                }
            }
            if d.workload.cpu_pct > 100 {
                errs.push(format!("domain {} cpu_pct {} is above 100", d.name, d.workload.cpu_pct));
            }
        }
    }
}

/// Why `Server::bind_domain` refuses a binding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindError {
    NameTaken(String),
    /// The binding fails [`Server::check_binding`].
    Binding(BindingError),
}

impl From<BindingError> for BindError {
    fn from(e: BindingError) -> Self {
        Self::Binding(e)
    }
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NameTaken(n) => write!(f, "a domain named {n} already exists"),
            Self::Binding(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for BindError {}

impl Server {
    /// Binds `domain` to the concrete strands, memory ranges and console port of
    /// `binding` (a committed reservation, a received migration, a failover restart).
    /// A binding without a console port keeps the domain's own port. The binding must
    /// pass [`Server::check_binding`] for the shape it has itself
    /// ([`GuestShape::of_binding`]: this server does not know the guest's source) with
    /// nothing reserved: reservations are the replicated state's, which checks them
    /// before it commits. All or nothing: on error the server is unchanged.
    pub fn bind_domain(&mut self, mut domain: Domain, binding: &Binding) -> Result<(), BindError> {
        domain.name.clone_from(&binding.domain);
        if self.domain(&domain.name).is_some() {
            return Err(BindError::NameTaken(domain.name));
        }
        let mut binding = binding.clone();
        if binding.console_port.is_none() {
            binding.console_port = domain.console.as_ref().map(|c| c.port);
        }
        self.check_binding(&GuestShape::of_binding(&domain, &binding), &binding, &Reserved::default())?;
        // Free memory is offered as maximal ranges (`free_ranges` merges adjacent free
        // rows), so a range may span two free rows: merge them before carving.
        let mut memory = merge_free_blocks(self.memory.clone());
        let owner = Some(Owner::Domain(domain.name.clone()));
        for r in &binding.memory {
            carve(&mut memory, *r, &None, &owner).map_err(|range| BindingError::MemoryNotFree { range })?;
        }
        if let (Some(c), Some(p)) = (&mut domain.console, binding.console_port) {
            c.port = p;
        }
        self.memory = memory;
        for core in &mut self.cores {
            for s in &mut core.strands {
                if binding.strands.contains(&s.id) {
                    s.bound = Some(domain.name.clone());
                }
            }
        }
        self.domains.push(domain);
        Ok(())
    }

    /// Removes domain `name` and frees what it held (adjacent free blocks merge, as
    /// `ldm list-devices` shows them). Returns the domain and what it held.
    pub fn unbind_domain(&mut self, name: &str) -> Option<(Domain, CpuHolding, Vec<Range>)> {
        let i = self.domains.iter().position(|d| d.name == name)?;
        let cpu = self.cpu_of(name);
        let memory = self.memory_of(name);
        let domain = self.domains.remove(i);
        for core in &mut self.cores {
            for s in &mut core.strands {
                if s.bound.as_deref() == Some(name) {
                    s.bound = None;
                }
            }
        }
        for b in &mut self.memory {
            if b.bound.as_ref().and_then(Owner::domain) == Some(name) {
                b.bound = None;
            }
        }
        self.memory = merge_free_blocks(std::mem::take(&mut self.memory));
        Some((domain, cpu, memory))
    }
}

/// Gives range `r` of the one row of `blocks` held by `from` that contains it to `to`;
/// the rest of that row stays `from`'s. `Err(r)` when no such row holds all of `r`.
pub(crate) fn carve(
    blocks: &mut Vec<MemoryBlock>,
    r: Range,
    from: &Option<Owner>,
    to: &Option<Owner>,
) -> Result<(), Range> {
    let i = blocks.iter().position(|b| &b.bound == from && b.range().contains(&r)).ok_or(r)?;
    let block = blocks.remove(i);
    let mut pieces = Vec::with_capacity(3);
    if r.pa > block.pa {
        pieces.push(MemoryBlock { pa: block.pa, size: r.pa - block.pa, bound: from.clone() });
    }
    pieces.push(MemoryBlock { pa: r.pa, size: r.size, bound: to.clone() });
    if block.end_pa() > r.end() {
        pieces.push(MemoryBlock { pa: r.end(), size: block.end_pa() - r.end(), bound: from.clone() });
    }
    blocks.splice(i..i, pieces);
    Ok(())
}

/// `blocks` in PA order with adjacent free blocks merged, as `ldm list-devices` shows them.
pub(crate) fn merge_free_blocks(mut blocks: Vec<MemoryBlock>) -> Vec<MemoryBlock> {
    blocks.sort_by_key(|b| b.pa);
    let mut merged: Vec<MemoryBlock> = Vec::with_capacity(blocks.len());
    for b in blocks {
        match merged.last_mut() {
            Some(last) if last.bound.is_none() && b.bound.is_none() && last.end_pa() == b.pa => last.size += b.size,
            _ => merged.push(b),
        }
    }
    merged
}

/// `ranges` minus every byte of `holes`; both in any order, result in PA order.
pub fn subtract_ranges(ranges: &[Range], holes: &[Range]) -> Vec<Range> {
    let mut holes: Vec<Range> = holes.iter().copied().filter(|h| h.size > 0).collect();
    holes.sort();
    let mut out = Vec::with_capacity(ranges.len());
    let mut sorted = ranges.to_vec();
    sorted.sort();
    for r in sorted {
        let mut start = r.pa;
        let end = r.end();
        for h in holes.iter().filter(|h| h.overlaps(&r)) {
            if h.pa > start {
                out.push(Range::new(start, h.pa - start));
            }
            start = start.max(h.end());
        }
        if start < end {
            out.push(Range::new(start, end - start));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::MIB;

    #[test]
    fn subtracting_a_reservation_splits_a_free_range() {
        // Goal: a reserved range in the middle of a free range leaves the two sides free.
        let free = [Range::new(0, 100 * MIB)];
        let holes = [Range::new(10 * MIB, 20 * MIB), Range::new(90 * MIB, 20 * MIB)];
        assert_eq!(subtract_ranges(&free, &holes), vec![Range::new(0, 10 * MIB), Range::new(30 * MIB, 60 * MIB)]);
    }

    #[test]
    fn sorted_ranges_find_an_overlap_exactly_when_a_range_by_range_test_does() {
        // Goal: the binary search contested_by uses answers as testing each range would,
        // for every pair of small ranges (overlapping, nested, empty, touching, past
        // u64::MAX) against every small query.
        let mut ranges: Vec<Range> = (0..6).flat_map(|pa| (0..4).map(move |size| Range::new(pa, size))).collect();
        ranges.push(Range::new(u64::MAX - 1, 5));
        for a in &ranges {
            for b in &ranges {
                let set = [*a, *b];
                let sorted = SortedRanges::of(&set);
                for q in &ranges {
                    let expected = set.iter().any(|r| r.overlaps(q));
                    assert_eq!(sorted.overlaps(q), expected, "{q:?} against {set:?}");
                }
            }
        }
        assert!(!SortedRanges::of(&[]).overlaps(&Range::new(0, 10)));
    }
}
