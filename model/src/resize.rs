//! UC-2 growth where a guest runs (RB-06): `ldm add-core|set-core|remove-core` and
//! `add-memory|set-memory|remove-memory` as concrete cores and ranges.
//!
//! A resize is two bindings on the guest's own server: what it gains (`add`, reserved
//! through the replicated state like a migration's binding) and what it gives back
//! (`remove`). The same three checks serve everywhere: [`plan_resize`] proposes it,
//! [`Server::check_growth`] is the one check of the gain (the replicated state runs it
//! on `Reserve` and on the commit, with every other reservation subtracted), and
//! [`Server::resize_domain`] applies it (the sim backend, the replicated inventory).
//!
//! | choice | rule |
//! |---|---|
//! | cores | whole cores only, as `ldm set-core`; cores gained: the lowest free CIDs; cores given back: the guest's highest CIDs |
//! | memory | whole [`ALIGN`] granules; gained: one free range if one holds it all (the smallest such), else free ranges in PA order; given back: from the guest's highest PA down |
//! | limits | at least one core and one granule stay; only guest domains |

use crate::binding::{BindingError, check_form};
use crate::fit::{ALIGN, granules, usable};
use crate::placement::Binding;
use crate::preflight::Rule;
use crate::rebalance::Growth;
use crate::server::{DomainKind, Owner, Reserved, Server, carve, merge_free_blocks};
use crate::units::{Range, Size};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A change of one guest's cores and memory on its own server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resize {
    pub domain: String,
    /// What the guest gains: free cores and ranges of this server.
    pub add: Binding,
    /// What it gives back: cores and ranges it holds now.
    pub remove: Binding,
}

impl Resize {
    /// Nothing changes.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }
}

impl fmt::Display for Resize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        let ranges = |v: &[Range]| v.iter().map(Range::to_string).collect::<Vec<_>>().join(", ");
        if !self.add.cids.is_empty() {
            parts.push(format!("add cores {:?}", self.add.cids));
        }
        if !self.add.memory.is_empty() {
            parts.push(format!("add memory [{}]", ranges(&self.add.memory)));
        }
        if !self.remove.cids.is_empty() {
            parts.push(format!("remove cores {:?}", self.remove.cids));
        }
        if !self.remove.memory.is_empty() {
            parts.push(format!("remove memory [{}]", ranges(&self.remove.memory)));
        }
        if parts.is_empty() {
            return write!(f, "{}: no change", self.domain);
        }
        write!(f, "{}: {}", self.domain, parts.join("; "))
    }
}

/// One resource's change, as ldm's verbs say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Amount {
    /// `add-core N`, `add-memory SIZE`.
    Add(u64),
    /// `set-core N`, `set-memory SIZE`.
    Set(u64),
    /// `remove-core N`, `remove-memory SIZE`.
    Remove(u64),
}

/// Why a resize is refused. The message names the numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResizeError {
    UnknownDomain {
        domain: String,
        server: String,
    },
    NotAGuest {
        domain: String,
        kind: DomainKind,
    },
    /// `ldm set-core` works on whole cores; this guest holds strands.
    NotWholeCores {
        domain: String,
    },
    /// Nothing would be left: a guest keeps at least one core and one granule.
    NothingLeft {
        what: &'static str,
        domain: String,
    },
    /// More would be removed than the guest holds.
    RemovesTooMuch {
        what: &'static str,
        held: u64,
        remove: u64,
    },
    TooFewCores {
        need: usize,
        free: usize,
    },
    TooLittleMemory {
        need: u64,
        free: u64,
    },
    /// A gained range does not start and end on a granule.
    Unaligned {
        range: Range,
    },
    /// The gain is not for this guest, or carries a console port.
    Foreign {
        why: String,
    },
    /// A core or range given back is not the guest's.
    NotHeld {
        why: String,
    },
    /// The gain fails the one binding check (LM-06, LM-09).
    Binding(BindingError),
}

impl ResizeError {
    /// The rule that decides it: RB-06, or the binding rule a gained resource breaks.
    pub fn rule(&self) -> Rule {
        match self {
            Self::Binding(e) => e.rule().unwrap_or(Rule::Rb(6)),
            Self::TooLittleMemory { .. } | Self::Unaligned { .. } => Rule::Lm(9),
            Self::TooFewCores { .. } => Rule::Lm(6),
            _ => Rule::Rb(6),
        }
    }
}

impl From<BindingError> for ResizeError {
    fn from(e: BindingError) -> Self {
        Self::Binding(e)
    }
}

impl fmt::Display for ResizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownDomain { domain, server } => write!(f, "LDom \"{domain}\" was not found on {server}"),
            Self::NotAGuest { domain, kind } => write!(f, "{domain} is a {kind}; tern resizes guest domains only"),
            Self::NotWholeCores { domain } => {
                write!(f, "{domain} holds strands, not whole cores; ldm set-vcpu changes those, and tern does not yet")
            }
            Self::NothingLeft { what, domain } => write!(f, "{domain} would be left without {what}"),
            Self::RemovesTooMuch { what: "memory", held, remove } => {
                write!(f, "the guest holds {} of memory; {} cannot be removed", Size(*held), Size(*remove))
            }
            Self::RemovesTooMuch { what, held, remove } => {
                write!(f, "the guest holds {held} {what}; {remove} cannot be removed")
            }
            Self::TooFewCores { need, free } => {
                write!(f, "{need} more whole core(s) needed; {free} are free and unreserved")
            }
            Self::TooLittleMemory { need, free } => write!(
                f,
                "{} more memory needed; {} is free and unreserved in {}-aligned ranges",
                Size(*need),
                Size(*free),
                Size(ALIGN)
            ),
            Self::Unaligned { range } => {
                write!(f, "memory {range} does not start and end on a {} boundary", Size(ALIGN))
            }
            Self::Foreign { why } | Self::NotHeld { why } => f.write_str(why),
            Self::Binding(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ResizeError {}

/// What `domain` holds on `server`: (whole cores, bytes of memory). Checks that it is
/// a guest.
fn held(server: &Server, domain: &str) -> Result<(u64, u64), ResizeError> {
    let d = server
        .domain(domain)
        .ok_or_else(|| ResizeError::UnknownDomain { domain: domain.into(), server: server.name.clone() })?;
    if d.kind != DomainKind::Guest {
        return Err(ResizeError::NotAGuest { domain: domain.into(), kind: d.kind });
    }
    let cpu = server.cpu_of(domain);
    let memory = server.memory_of(domain).iter().map(|r| r.size).sum();
    Ok((cpu.cids.len() as u64, memory))
}

/// The size `domain` should have afterwards, from ldm's verbs: cores in whole cores,
/// memory rounded up to whole granules ([`granules`]), as ldm rounds it.
pub fn target_of(
    server: &Server,
    domain: &str,
    cores: Option<Amount>,
    memory: Option<Amount>,
) -> Result<Growth, ResizeError> {
    let (held_cores, held_memory) = held(server, domain)?;
    let apply = |what: &'static str, held: u64, a: Amount, round: fn(u64) -> u64| -> Result<u64, ResizeError> {
        let after = match a {
            Amount::Add(n) => held.saturating_add(round(n)),
            Amount::Set(n) => round(n),
            Amount::Remove(n) if round(n) > held => {
                return Err(ResizeError::RemovesTooMuch { what, held, remove: round(n) });
            }
            Amount::Remove(n) => held - round(n),
        };
        if after == 0 {
            return Err(ResizeError::NothingLeft { what, domain: domain.into() });
        }
        Ok(after)
    };
    let cores =
        cores.map(|a| apply("cores", held_cores, a, |n| n)).transpose()?.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
    let memory = memory.map(|a| apply("memory", held_memory, a, granules)).transpose()?;
    Ok(Growth { cores, memory })
}

/// The resize that brings `domain` on `server` to `growth`, with `reserved` promised
/// to other operations. Deterministic (see the module's table). A growth equal to
/// what the guest holds gives an empty resize.
pub fn plan_resize(server: &Server, domain: &str, growth: &Growth, reserved: &Reserved) -> Result<Resize, ResizeError> {
    let (held_cores, held_memory) = held(server, domain)?;
    let mut r = Resize { domain: domain.into(), ..Resize::default() };
    r.add.domain = domain.into();
    r.remove.domain = domain.into();
    if let Some(n) = growth.cores.map(u64::from) {
        if n == 0 {
            return Err(ResizeError::NothingLeft { what: "cores", domain: domain.into() });
        }
        let cpu = server.cpu_of(domain);
        if n != held_cores && !cpu.whole_cores {
            return Err(ResizeError::NotWholeCores { domain: domain.into() });
        }
        if n > held_cores {
            let want = (n - held_cores) as usize;
            let free = server.free_cores(reserved);
            if free.len() < want {
                return Err(ResizeError::TooFewCores { need: want, free: free.len() });
            }
            r.add.whole_cores = true;
            r.add.cids = free[..want].iter().map(|c| c.cid).collect();
            r.add.strands = free[..want].iter().flat_map(|c| c.cpuset()).collect();
            r.add.strands.sort_unstable();
        } else if n < held_cores {
            let mut mine: Vec<&crate::server::Core> =
                server.cores.iter().filter(|c| cpu.cids.contains(&c.cid)).collect();
            mine.sort_by_key(|c| std::cmp::Reverse(c.cid));
            let gone = &mine[..(held_cores - n) as usize];
            r.remove.whole_cores = true;
            r.remove.cids = gone.iter().map(|c| c.cid).collect();
            r.remove.cids.sort_unstable();
            r.remove.strands = gone.iter().flat_map(|c| c.cpuset()).collect();
            r.remove.strands.sort_unstable();
        }
    }
    if let Some(m) = growth.memory {
        if m == 0 {
            return Err(ResizeError::NothingLeft { what: "memory", domain: domain.into() });
        }
        let after = granules(m);
        if after > held_memory {
            r.add.memory = gain_memory(server, after - held_memory, reserved)?;
        } else if after < held_memory {
            let mut left = held_memory - after;
            let mut blocks = server.memory_of(domain);
            blocks.sort_by_key(|b| std::cmp::Reverse(b.pa));
            for b in blocks {
                if left == 0 {
                    break;
                }
                let take = left.min(b.size);
                r.remove.memory.push(Range::new(b.end() - take, take));
                left -= take;
            }
            r.remove.memory.sort();
        }
    }
    Ok(r)
}

/// `need` bytes of free, unreserved, aligned memory: the smallest usable free range
/// that holds it all, else usable ranges in PA order.
fn gain_memory(server: &Server, need: u64, reserved: &Reserved) -> Result<Vec<Range>, ResizeError> {
    let bins: Vec<Range> = server.free_ranges(reserved).iter().filter_map(usable).collect();
    if let Some(b) = bins.iter().filter(|b| b.size >= need).min_by_key(|b| (b.size, b.pa)) {
        return Ok(vec![Range::new(b.pa, need)]);
    }
    let free: u64 = bins.iter().map(|b| b.size).sum();
    if free < need {
        return Err(ResizeError::TooLittleMemory { need, free });
    }
    let mut left = need;
    let mut out = Vec::new();
    for b in bins {
        if left == 0 {
            break;
        }
        let take = left.min(b.size);
        out.push(Range::new(b.pa, take));
        left -= take;
    }
    Ok(out)
}

impl Server {
    /// RB-06: may guest `domain` gain `add` here, given what `reserved` promises to
    /// other operations? The binding's own form, its strands (LM-06: activated, free,
    /// unreserved, whole cores) and its memory (LM-09: inside free, unreserved ranges,
    /// on granule boundaries), by the same checks [`Server::check_binding`] runs.
    pub fn check_growth(&self, domain: &str, add: &Binding, reserved: &Reserved) -> Result<(), ResizeError> {
        let (held_cores, _) = held(self, domain)?;
        if add.domain != domain {
            return Err(ResizeError::Foreign { why: format!("the binding is for {}, not {domain}", add.domain) });
        }
        if let Some(p) = add.console_port {
            return Err(ResizeError::Foreign { why: format!("a growth keeps the console; it gives port {p}") });
        }
        if !add.strands.is_empty() && (!add.whole_cores || (held_cores > 0 && !self.cpu_of(domain).whole_cores)) {
            return Err(ResizeError::NotWholeCores { domain: domain.into() });
        }
        check_form(add)?;
        self.check_strands(add, reserved)?;
        if let Some(range) = add.memory.iter().copied().find(|r| r.pa % ALIGN != 0 || r.size % ALIGN != 0) {
            return Err(ResizeError::Unaligned { range });
        }
        self.check_memory(add, reserved)?;
        Ok(())
    }

    /// What `domain` may give back: whole cores it holds all of, ranges inside its
    /// blocks, and at least one core (if it has cores) and some memory left.
    fn check_shrink(&self, domain: &str, remove: &Binding) -> Result<(), ResizeError> {
        let not_held = |why: String| Err(ResizeError::NotHeld { why });
        if remove.domain != domain {
            return not_held(format!("the cores and memory to give back are {}'s, not {domain}'s", remove.domain));
        }
        check_form(remove)?;
        let cpu = self.cpu_of(domain);
        let mut cids: BTreeMap<u32, usize> = BTreeMap::new();
        for s in &remove.strands {
            if !cpu.strands.contains(s) {
                return not_held(format!("CPU {s} is not bound to {domain}"));
            }
            if let Some(c) = self.cores.iter().find(|c| c.strands.iter().any(|x| x.id == *s)) {
                *cids.entry(c.cid).or_default() += 1;
            }
        }
        let derived: Vec<u32> = cids.keys().copied().collect();
        let mut given = remove.cids.clone();
        given.sort_unstable();
        given.dedup();
        if given != derived {
            return Err(BindingError::CidsMismatch { given, derived }.into());
        }
        if let Some((&cid, &n)) = cids
            .iter()
            .find(|(cid, n)| self.cores.iter().find(|c| c.cid == **cid).is_some_and(|c| c.strands.len() != **n))
        {
            return not_held(format!("only {n} of core {cid}'s threads would be given back; whole cores only"));
        }
        if !cpu.strands.is_empty() && remove.strands.len() >= cpu.strands.len() {
            return Err(ResizeError::NothingLeft { what: "cores", domain: domain.into() });
        }
        let mine = self.memory_of(domain);
        for r in &remove.memory {
            if !mine.iter().any(|b| b.contains(r)) {
                return not_held(format!("memory {r} is not inside a block bound to {domain}"));
            }
        }
        let held: u64 = mine.iter().map(|r| r.size).sum();
        let gone: u64 = remove.memory.iter().map(|r| r.size).sum();
        if gone >= held && held > 0 {
            return Err(ResizeError::NothingLeft { what: "memory", domain: domain.into() });
        }
        Ok(())
    }

    /// The part of `resize` not yet true here: strands and ranges to gain that the
    /// guest does not hold yet, and to give back that it still holds. A report of the
    /// server taken after its hypervisor resized shows nothing pending.
    pub fn pending_of(&self, resize: &Resize) -> Resize {
        let d = resize.domain.as_str();
        let cpu = self.cpu_of(d);
        let mine = self.memory_of(d);
        let held = |r: &Range| mine.iter().any(|b| b.contains(r));
        let cid_of = |s: u32| self.cores.iter().find(|c| c.strands.iter().any(|x| x.id == s)).map(|c| c.cid);
        let part = |b: &Binding, keep_strand: &dyn Fn(u32) -> bool, keep_range: &dyn Fn(&Range) -> bool| {
            let strands: Vec<u32> = b.strands.iter().copied().filter(|s| keep_strand(*s)).collect();
            let mut cids: Vec<u32> = strands.iter().filter_map(|s| cid_of(*s)).collect();
            cids.dedup();
            Binding {
                domain: b.domain.clone(),
                whole_cores: b.whole_cores,
                cids,
                strands,
                memory: b.memory.iter().copied().filter(|r| keep_range(r)).collect(),
                console_port: b.console_port,
            }
        };
        Resize {
            domain: resize.domain.clone(),
            add: part(&resize.add, &|s| !cpu.strands.contains(&s), &|r| !held(r)),
            remove: part(&resize.remove, &|s| cpu.strands.contains(&s), &|r| held(r)),
        }
    }

    /// Applies `resize` (its pending part, [`Server::pending_of`]): the guest gains
    /// `add` (checked by [`Server::check_growth`] with nothing reserved: reservations
    /// are the replicated state's, which checks them first) and gives back `remove`
    /// (adjacent free blocks merge). All or nothing: on error the server is unchanged.
    pub fn resize_domain(&mut self, resize: &Resize) -> Result<(), ResizeError> {
        let d = resize.domain.as_str();
        let r = self.pending_of(resize);
        self.check_growth(d, &r.add, &Reserved::default())?;
        self.check_shrink(d, &r.remove)?;
        let mut memory = merge_free_blocks(self.memory.clone());
        let owner = Some(Owner::Domain(d.to_string()));
        for range in &r.add.memory {
            carve(&mut memory, *range, &None, &owner).map_err(|range| BindingError::MemoryNotFree { range })?;
        }
        for range in &r.remove.memory {
            // A range given back may span two of the guest's blocks: one piece each.
            let mut blocks: Vec<Range> =
                memory.iter().filter(|b| b.bound == owner && b.range().overlaps(range)).map(|b| b.range()).collect();
            blocks.sort();
            for b in blocks {
                let start = b.pa.max(range.pa);
                let piece = Range::new(start, b.end().min(range.end()) - start);
                carve(&mut memory, piece, &owner, &None).map_err(|range| ResizeError::NotHeld {
                    why: format!("memory {range} is not inside a block bound to {d}"),
                })?;
            }
        }
        self.memory = merge_free_blocks(memory);
        for core in &mut self.cores {
            for s in &mut core.strands {
                if r.add.strands.contains(&s.id) {
                    s.bound = Some(d.to_string());
                } else if r.remove.strands.contains(&s.id) {
                    s.bound = None;
                }
            }
        }
        Ok(())
    }
}
