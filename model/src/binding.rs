//! The one check of a [`Binding`] against the server it would bind on (LM-06, LM-09,
//! LM-12, LM-13).
//!
//! Preflight asserts it on the binding it proposes, `Server::bind_domain` refuses a
//! binding that fails it, and the replicated state machine runs it on `Reserve` and
//! `CommitMigration`: one rule, so a binding accepted at one step is never refused at
//! another. Free memory is what [`Server::free_ranges`] says (adjacent free rows
//! merged, reservations subtracted), everywhere.

use crate::placement::Binding;
use crate::preflight::Rule;
use crate::server::{Domain, Owner, Reserved, Server};
use crate::units::{Range, Size};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// What a binding must reproduce of the guest it is for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestShape {
    /// Virtual CPUs (strands) the guest holds; the amount never changes (LM-12).
    pub strands: usize,
    /// The guest holds whole cores, so it must get whole cores (LM-05, LM-12).
    pub whole_cores: bool,
    /// Its memory block sizes, in any order: the block structure stays (LM-09).
    pub blocks: Vec<u64>,
    /// The VCC its console is on, if it has a console (LM-13).
    pub console_service: Option<String>,
}

impl GuestShape {
    /// The shape of `guest` as bound on `server` (its source).
    pub fn of(server: &Server, guest: &Domain) -> Self {
        let cpu = server.cpu_of(&guest.name);
        Self {
            strands: cpu.strands.len(),
            whole_cores: cpu.whole_cores,
            blocks: server.memory_of(&guest.name).iter().map(|r| r.size).collect(),
            console_service: guest.console.as_ref().map(|c| c.service.clone()),
        }
    }

    /// The shape `binding` itself has, for `guest`'s console: what a server checks
    /// when it does not know the guest's source (`Server::bind_domain`).
    pub fn of_binding(guest: &Domain, binding: &Binding) -> Self {
        Self {
            strands: binding.strands.len(),
            whole_cores: binding.whole_cores,
            blocks: binding.memory.iter().map(|r| r.size).collect(),
            console_service: guest.console.as_ref().map(|c| c.service.clone()),
        }
    }
}

/// Which resource a refused binding is about; callers map it to their own codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// A strand is missing, not activated, bound or reserved (LM-06).
    Strand,
    /// A range is not inside free, unreserved memory (LM-09).
    Memory,
    /// The console port is outside the VCC's range, used or reserved (LM-13).
    ConsolePort,
    /// The binding does not have the guest's shape (LM-09, LM-12, LM-13).
    Shape,
    /// The binding contradicts itself: CIDs that are not its strands' cores, a strand
    /// twice, empty or overlapping ranges.
    Form,
}

/// Why `Server::check_binding` refuses a binding. The message names the numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BindingError {
    CpuCount { guest: usize, binding: usize },
    WholeCoresFlag { guest: bool },
    PartialCore { cid: u32, held: usize, threads: usize },
    BlockSizes { guest: Vec<u64>, binding: Vec<u64> },
    ConsoleShape { guest_service: Option<String>, port: Option<u16> },
    DuplicateStrand { strand: u32 },
    CidsMismatch { given: Vec<u32>, derived: Vec<u32> },
    EmptyRange { range: Range },
    RangesOverlap { first: Range, second: Range },
    UnknownStrand { strand: u32 },
    StrandNotActivated { strand: u32, cid: u32 },
    StrandBound { strand: u32, domain: String },
    StrandReserved { strand: u32 },
    MemoryBound { range: Range, block: Range, owner: Owner },
    MemoryReserved { range: Range, held: Range },
    MemoryNotFree { range: Range },
    NoVcc { service: String },
    ConsolePortOutOfRange { port: u16, service: String, min: u16, max: u16 },
    ConsolePortUsed { port: u16, domain: String },
    ConsolePortReserved { port: u16 },
}

impl BindingError {
    pub fn resource(&self) -> Resource {
        match self {
            Self::CpuCount { .. }
            | Self::WholeCoresFlag { .. }
            | Self::PartialCore { .. }
            | Self::BlockSizes { .. }
            | Self::ConsoleShape { .. } => Resource::Shape,
            Self::DuplicateStrand { .. }
            | Self::CidsMismatch { .. }
            | Self::EmptyRange { .. }
            | Self::RangesOverlap { .. } => Resource::Form,
            Self::UnknownStrand { .. }
            | Self::StrandNotActivated { .. }
            | Self::StrandBound { .. }
            | Self::StrandReserved { .. } => Resource::Strand,
            Self::MemoryBound { .. } | Self::MemoryReserved { .. } | Self::MemoryNotFree { .. } => Resource::Memory,
            Self::NoVcc { .. }
            | Self::ConsolePortOutOfRange { .. }
            | Self::ConsolePortUsed { .. }
            | Self::ConsolePortReserved { .. } => Resource::ConsolePort,
        }
    }

    /// The SPEC rule that decides it; `None` for a binding that contradicts itself.
    pub fn rule(&self) -> Option<Rule> {
        match self {
            Self::CpuCount { .. } | Self::WholeCoresFlag { .. } | Self::PartialCore { .. } => Some(Rule::Lm(12)),
            Self::BlockSizes { .. } => Some(Rule::Lm(9)),
            Self::ConsoleShape { .. } => Some(Rule::Lm(13)),
            _ => match self.resource() {
                Resource::Strand => Some(Rule::Lm(6)),
                Resource::Memory => Some(Rule::Lm(9)),
                Resource::ConsolePort => Some(Rule::Lm(13)),
                Resource::Shape | Resource::Form => None,
            },
        }
    }
}

fn sizes(v: &[u64]) -> String {
    let s: Vec<String> = v.iter().map(|b| Size(*b).to_string()).collect();
    format!("[{}]", s.join(", "))
}

impl fmt::Display for BindingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CpuCount { guest, binding } => {
                write!(f, "the guest has {guest} CPUs; the binding holds {binding} (the amount of CPU never changes)")
            }
            Self::WholeCoresFlag { guest: true } => write!(f, "the guest holds whole cores; the binding does not"),
            Self::WholeCoresFlag { guest: false } => {
                write!(f, "the guest holds no whole cores; the binding says it does")
            }
            Self::PartialCore { cid, held, threads } => {
                write!(f, "the guest holds whole cores; the binding takes {held} of core {cid}'s {threads} threads")
            }
            Self::BlockSizes { guest, binding } => write!(
                f,
                "the guest's memory blocks are {}; the binding's ranges are {} (the block structure must stay the same)",
                sizes(guest),
                sizes(binding)
            ),
            Self::ConsoleShape { guest_service: Some(s), .. } => {
                write!(f, "the guest has a console on {s}; the binding must give it a port there")
            }
            Self::ConsoleShape { guest_service: None, port } => {
                write!(f, "the guest has no console; the binding gives it port {}", port.unwrap_or_default())
            }
            Self::DuplicateStrand { strand } => write!(f, "CPU {strand} appears twice in the binding"),
            Self::CidsMismatch { given, derived } => {
                write!(f, "the binding names CIDs {given:?} but its CPUs are on cores {derived:?}")
            }
            Self::EmptyRange { range } => write!(f, "memory range {range} is empty"),
            Self::RangesOverlap { first, second } => {
                write!(f, "the binding's memory ranges {first} and {second} overlap")
            }
            Self::UnknownStrand { strand } => write!(f, "CPU {strand} does not exist"),
            Self::StrandNotActivated { strand, cid } => {
                write!(f, "CPU {strand} is on core {cid}, which has no activation licence")
            }
            Self::StrandBound { strand, domain } => write!(f, "CPU {strand} is bound to {domain}"),
            Self::StrandReserved { strand } => write!(f, "CPU {strand} is reserved"),
            Self::MemoryBound { range, block, owner } => {
                write!(f, "memory {range} overlaps block {block} bound to {owner}")
            }
            Self::MemoryReserved { range, held } => write!(f, "memory {range} overlaps {held}, which is reserved"),
            Self::MemoryNotFree { range } => write!(f, "memory {range} is not inside one free range"),
            Self::NoVcc { service } => write!(f, "the guest's console is on VCC {service}, which is missing here"),
            Self::ConsolePortOutOfRange { port, service, min, max } => {
                write!(f, "console port {port} is outside VCC {service}'s range {min}-{max}")
            }
            Self::ConsolePortUsed { port, domain } => write!(f, "console port {port} is used by {domain}"),
            Self::ConsolePortReserved { port } => write!(f, "console port {port} is reserved"),
        }
    }
}

impl std::error::Error for BindingError {}

type Checked = Result<(), BindingError>;

impl Server {
    /// May `binding` bind a guest of `shape` on this server, given what `reserved`
    /// promises to other operations? Checks, in order: the shape (LM-09, LM-12,
    /// LM-13), the binding's own consistency, strands (LM-06), memory against
    /// [`Server::free_ranges`] (LM-09), the console port (LM-13). Returns the first
    /// refusal.
    pub fn check_binding(&self, shape: &GuestShape, binding: &Binding, reserved: &Reserved) -> Checked {
        check_shape(shape, binding, shape.whole_cores || self.cpu.family.needs_whole_cores())?;
        check_form(binding)?;
        self.check_strands(binding, reserved)?;
        self.check_memory(binding, reserved)?;
        self.check_console(shape, binding, reserved)
    }

    /// LM-06: every strand exists, is on an activated core, bound to no domain and not
    /// reserved; the CIDs are its strands' cores; a whole-core guest gets whole cores.
    pub(crate) fn check_strands(&self, binding: &Binding, reserved: &Reserved) -> Checked {
        // The binding's strand ids -> their cores (the last core listing one, as a map of
        // every strand would say), without a map of every strand of the server: that
        // cost a Reserve on a server of 16,000 strands more than everything else
        // (issue 18).
        let mut wanted = binding.strands.clone();
        wanted.sort_unstable();
        let mut cores: BTreeMap<u32, &crate::server::Core> = BTreeMap::new();
        for c in &self.cores {
            for s in c.strands.iter().filter(|s| wanted.binary_search(&s.id).is_ok()) {
                cores.insert(s.id, c);
            }
        }
        let mut derived = BTreeMap::new(); // cid -> strands of the binding on it
        for &strand in &binding.strands {
            let core = cores.get(&strand).ok_or(BindingError::UnknownStrand { strand })?;
            if !core.activated {
                return Err(BindingError::StrandNotActivated { strand, cid: core.cid });
            }
            if let Some(domain) = core.strands.iter().find(|s| s.id == strand).and_then(|s| s.bound.clone()) {
                return Err(BindingError::StrandBound { strand, domain });
            }
            if reserved.strands.contains(&strand) {
                return Err(BindingError::StrandReserved { strand });
            }
            derived.entry(core.cid).or_insert((0usize, *core)).0 += 1;
        }
        let mut given = binding.cids.clone();
        given.sort_unstable();
        given.dedup();
        let cids: Vec<u32> = derived.keys().copied().collect();
        if given != cids {
            return Err(BindingError::CidsMismatch { given, derived: cids });
        }
        if binding.whole_cores {
            // A CID names one core (`Server::validate`).
            for (cid, (held, core)) in derived {
                let threads = core.strands.len();
                if held != threads {
                    return Err(BindingError::PartialCore { cid, held, threads });
                }
            }
        }
        Ok(())
    }

    /// LM-09: every range lies inside one free range of [`Server::free_ranges`]:
    /// adjacent free rows count as one, bound rows and reserved ranges do not.
    pub(crate) fn check_memory(&self, binding: &Binding, reserved: &Reserved) -> Checked {
        let free = self.free_ranges(reserved);
        for &range in &binding.memory {
            if free.iter().any(|f| f.contains(&range)) {
                continue;
            }
            let mut rows: Vec<_> = self.memory.iter().filter(|b| b.range().overlaps(&range)).collect();
            rows.sort_by_key(|b| b.pa);
            if let Some((block, owner)) = rows.iter().find_map(|b| b.bound.as_ref().map(|o| (b.range(), o.clone()))) {
                return Err(BindingError::MemoryBound { range, block, owner });
            }
            let mut held: Vec<Range> = reserved.memory.iter().copied().filter(|m| m.overlaps(&range)).collect();
            held.sort();
            if let Some(&held) = held.first() {
                return Err(BindingError::MemoryReserved { range, held });
            }
            return Err(BindingError::MemoryNotFree { range });
        }
        Ok(())
    }

    /// LM-13: the port lies in the range of the guest's VCC here, and no domain and no
    /// reservation uses it.
    fn check_console(&self, shape: &GuestShape, binding: &Binding, reserved: &Reserved) -> Checked {
        let (Some(service), Some(port)) = (&shape.console_service, binding.console_port) else {
            return Ok(()); // presence is checked with the shape
        };
        let vcc = self.services.vcc(service).ok_or_else(|| BindingError::NoVcc { service: service.clone() })?;
        if !(vcc.port_min..=vcc.port_max).contains(&port) {
            return Err(BindingError::ConsolePortOutOfRange {
                port,
                service: vcc.name.clone(),
                min: vcc.port_min,
                max: vcc.port_max,
            });
        }
        if let Some(d) = self.domains.iter().find(|d| d.console.as_ref().is_some_and(|c| c.port == port)) {
            return Err(BindingError::ConsolePortUsed { port, domain: d.name.clone() });
        }
        if reserved.console_ports.contains(&port) {
            return Err(BindingError::ConsolePortReserved { port });
        }
        Ok(())
    }
}

/// LM-05, LM-09, LM-12, LM-13: as many strands as the guest has, whole cores if it
/// holds whole cores or the server binds only whole cores (SPARC M10), one range per
/// block with the same sizes, a port iff a console.
fn check_shape(shape: &GuestShape, binding: &Binding, whole_cores: bool) -> Checked {
    if shape.strands != binding.strands.len() {
        return Err(BindingError::CpuCount { guest: shape.strands, binding: binding.strands.len() });
    }
    if whole_cores != binding.whole_cores {
        return Err(BindingError::WholeCoresFlag { guest: whole_cores });
    }
    let mut guest = shape.blocks.clone();
    let mut given: Vec<u64> = binding.memory.iter().map(|r| r.size).collect();
    guest.sort_unstable();
    given.sort_unstable();
    if guest != given {
        return Err(BindingError::BlockSizes { guest, binding: given });
    }
    if shape.console_service.is_some() != binding.console_port.is_some() {
        return Err(BindingError::ConsoleShape {
            guest_service: shape.console_service.clone(),
            port: binding.console_port,
        });
    }
    Ok(())
}

/// The binding agrees with itself: no strand twice, no empty range, no two ranges
/// sharing a byte.
pub(crate) fn check_form(binding: &Binding) -> Checked {
    let mut seen = BTreeSet::new();
    if let Some(&strand) = binding.strands.iter().find(|s| !seen.insert(**s)) {
        return Err(BindingError::DuplicateStrand { strand });
    }
    if let Some(&range) = binding.memory.iter().find(|r| r.size == 0) {
        return Err(BindingError::EmptyRange { range });
    }
    let mut ranges = binding.memory.clone();
    ranges.sort();
    if let Some(w) = ranges.windows(2).find(|w| w[0].overlaps(&w[1])) {
        return Err(BindingError::RangesOverlap { first: w[0], second: w[1] });
    }
    Ok(())
}
