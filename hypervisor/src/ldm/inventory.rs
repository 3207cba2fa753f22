//! From parsed `ldm` outputs to a [`tern_model::Server`].
//!
//! Where each part of the server comes from:
//!
//! | part | source |
//! |---|---|
//! | cores: CID, CPUSET | `list-devices -a -p` `CORE` rows |
//! | threads per core | the longest CPUSET |
//! | which domain holds a strand | `VCPU` rows (`pid=`) of `list-domain -l -p` / `list-bindings -p`, else their `CORE` rows |
//! | core activation | ldm lists every core; cores without a CPU activation licence are named by the caller ([`build_server`]'s `inactive_cids`) |
//! | memory blocks: PA, SIZE, BOUND | `list-devices -a -p` `MEMORY` rows |
//! | VDS volumes and backends, VSW NIC, VCC port range | `list-services -p`, else the services inside `list-bindings -p` |
//! | whether a backend is shared storage | not in ldm's output: the caller's [`SharedStorage`] |
//! | domains: state, kind, cpu-arch, vdisks, vnets, console | `list-domain -l -p` merged with `list-bindings -p` |
//! | a domain's kind | `flags=` (`control`, `vio-service`) and its `IO` rows (a bare `pci@...` root complex makes an I/O root domain) |
//! | cpu-arch | `CONTROL|cpu-arch=`; absent (releases before 2.0) means ldm's default, `native` |
//! | failure-policy (HA-08) | `CONTROL|failure-policy=`; absent means ldm's default, `ignore` |
//! | masters (HA-08) | `DEPENDENCY|master=a,b`; absent or empty means none |
//! | utilisation | `util=` of the `DOMAIN` record |
//! | guest dirty-page rate | not in ldm's output: 0 |
//! | a guest's OS | not in ldm's output: unknown (LM-11 then warns) |
//! | server model, CPU type and frequency, firmware, control domain OS | not in ldm's output: the caller's [`ServerFacts`] |
//!
//! Nothing missing is guessed: a part the captures lack is an [`InventoryError::Missing`]
//! that names what to capture or pass.

use crate::ldm::parse::{DeviceListing, DomainListing, LdmDomain, ServiceListing};
use std::collections::{BTreeMap, BTreeSet};
use tern_model::server::{CONTROL_DOMAIN, SYS_OWNER};
use tern_model::{
    Console, Core, CpuArch, CpuType, Domain, DomainKind, DomainState, FailurePolicy, Firmware, MemoryBlock, OsVersion,
    Owner, Server, Services, Strand, VDisk, VNet, Vcc, Vds, Volume, Vsw, Workload,
};

/// What a server is that `ldm` does not print (it comes from `prtdiag`, `psrinfo -pv`,
/// the XSCF/ILOM and `uname`; the agent's configuration or `ternctl import-ldm` flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerFacts {
    /// e.g. `SPARC M10-1`.
    pub model: String,
    pub cpu: CpuType,
    /// e.g. `XCP2210`.
    pub firmware: Firmware,
    /// The control domain's OS (LM-11).
    pub os: OsVersion,
}

/// Which virtual disk backends live on storage every server sees (LM-03). ldm cannot
/// know; the administrator says so by device path prefix (`/dev/dsk/c0t6000`) or for all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SharedStorage {
    pub all: bool,
    pub device_prefixes: Vec<String>,
}

impl SharedStorage {
    pub fn is_shared(&self, device: &str) -> bool {
        self.all || self.device_prefixes.iter().any(|p| device.starts_with(p.as_str()))
    }
}

/// The parsed outputs of one server; any may be absent (a partial capture).
#[derive(Clone, Debug, Default)]
pub struct Captures {
    pub list_domain: Option<DomainListing>,
    pub list_bindings: Option<DomainListing>,
    pub list_devices: Option<DeviceListing>,
    pub list_services: Option<ServiceListing>,
}

/// Why the captures do not make a server.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InventoryError {
    /// A part the captures do not hold; the message says what to capture or pass.
    #[error("{0}")]
    Missing(String),
    /// The captures contradict each other or the model's rules.
    #[error("{0}")]
    Inconsistent(String),
}

fn missing<T>(msg: impl Into<String>) -> Result<T, InventoryError> {
    Err(InventoryError::Missing(msg.into()))
}

fn inconsistent<T>(msg: impl Into<String>) -> Result<T, InventoryError> {
    Err(InventoryError::Inconsistent(msg.into()))
}

/// Builds server `name` from the captures, the facts ldm does not print, the shared
/// storage policy and the CIDs of cores without an activation licence.
pub fn build_server(
    name: &str,
    facts: &ServerFacts,
    captures: &Captures,
    shared: &SharedStorage,
    inactive_cids: &[u32],
) -> Result<Server, InventoryError> {
    let domains = merge_domains(captures)?;
    let Some(devices) = &captures.list_devices else {
        return missing(
            "cores and memory blocks come from `ldm list-devices -a -p`, which was not captured (--list-devices FILE)",
        );
    };
    let (cores, threads_per_core) = build_cores(devices, &domains, inactive_cids)?;
    let memory = build_memory(devices)?;
    let services = build_services(captures, &domains, shared)?;
    let domains = domains.iter().map(|d| build_domain(d, &services)).collect::<Result<Vec<_>, _>>()?;
    let server = Server {
        name: name.to_string(),
        model: facts.model.clone(),
        cpu: facts.cpu,
        firmware: facts.firmware.clone(),
        os: facts.os.clone(),
        threads_per_core,
        cores,
        memory,
        services,
        domains,
    };
    server.validate().map_err(|errs| InventoryError::Inconsistent(errs.join("; ")))?;
    Ok(server)
}

/// `list-domain -l -p` and `list-bindings -p` describe the same domains; each fills in
/// what the other lacks. Order: first appearance.
fn merge_domains(c: &Captures) -> Result<Vec<LdmDomain>, InventoryError> {
    let lists: Vec<&DomainListing> = [&c.list_domain, &c.list_bindings].into_iter().flatten().collect();
    if lists.is_empty() {
        return missing(
            "domains come from `ldm list-domain -l -p` or `ldm list-bindings -p`; neither was captured \
             (--list-domain FILE, --list-bindings FILE)",
        );
    }
    let mut out: Vec<LdmDomain> = Vec::new();
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for list in lists {
        let mut seen = BTreeSet::new();
        for d in &list.domains {
            if !seen.insert(d.name.as_str()) {
                return inconsistent(format!("domain {} is listed twice (line {})", d.name, d.line));
            }
            match index.get(&d.name) {
                None => {
                    index.insert(d.name.clone(), out.len());
                    out.push(d.clone());
                }
                Some(&i) => fill_in(&mut out[i], d),
            }
        }
    }
    Ok(out)
}

fn fill_in(o: &mut LdmDomain, d: &LdmDomain) {
    fn take<T: Clone>(a: &mut Option<T>, b: &Option<T>) {
        if a.is_none() {
            a.clone_from(b);
        }
    }
    fn take_vec<T: Clone>(a: &mut Vec<T>, b: &[T]) {
        if a.is_empty() {
            a.extend_from_slice(b);
        }
    }
    take(&mut o.state, &d.state);
    take_vec(&mut o.flags, &d.flags);
    take(&mut o.cons, &d.cons);
    take(&mut o.ncpu, &d.ncpu);
    take(&mut o.mem, &d.mem);
    take(&mut o.util, &d.util);
    take(&mut o.cpu_arch, &d.cpu_arch);
    take(&mut o.failure_policy, &d.failure_policy);
    take_vec(&mut o.masters, &d.masters);
    take_vec(&mut o.cores, &d.cores);
    take_vec(&mut o.vcpus, &d.vcpus);
    take_vec(&mut o.memory, &d.memory);
    take_vec(&mut o.io, &d.io);
    take_vec(&mut o.vdisks, &d.vdisks);
    take_vec(&mut o.vnets, &d.vnets);
    take(&mut o.console, &d.console);
    take_vec(&mut o.services.vds, &d.services.vds);
    take_vec(&mut o.services.vsw, &d.services.vsw);
    take_vec(&mut o.services.vcc, &d.services.vcc);
}

fn build_cores(
    devices: &DeviceListing,
    domains: &[LdmDomain],
    inactive_cids: &[u32],
) -> Result<(Vec<Core>, u32), InventoryError> {
    if devices.cores.is_empty() {
        return missing(
            "`ldm list-devices -a -p` shows no CORE records (CIDs and CPUSETs); capture it with -a from \
             Oracle VM Server for SPARC 2.0 or later",
        );
    }
    let mut owner: BTreeMap<u32, &str> = BTreeMap::new();
    for d in domains {
        let from_vcpus: Vec<u32> = d.vcpus.iter().map(|v| v.pid).collect();
        let strands = if from_vcpus.is_empty() {
            d.cores.iter().flat_map(|c| c.cpuset.iter().copied()).collect()
        } else {
            from_vcpus
        };
        for s in strands {
            if let Some(prev) = owner.insert(s, d.name.as_str()) {
                return inconsistent(format!("CPU {s} is bound to both {prev} and {}", d.name));
            }
        }
    }
    let threads_per_core = devices.cores.iter().map(|c| c.cpuset.len()).max().unwrap_or(0);
    let threads_per_core = u32::try_from(threads_per_core).unwrap_or(u32::MAX);
    if threads_per_core == 0 {
        return inconsistent(format!(
            "line {}: CORE {} has an empty cpuset",
            devices.cores[0].line, devices.cores[0].cid
        ));
    }
    let cids: BTreeSet<u32> = devices.cores.iter().map(|c| c.cid).collect();
    if let Some(c) = inactive_cids.iter().find(|c| !cids.contains(c)) {
        return inconsistent(format!("inactive core {c} is not among the cores ldm lists"));
    }
    let mut cores = Vec::with_capacity(devices.cores.len());
    for c in &devices.cores {
        let strands: Vec<Strand> =
            c.cpuset.iter().map(|&id| Strand { id, bound: owner.get(&id).map(|d| d.to_string()) }).collect();
        cores.push(Core { cid: c.cid, activated: !inactive_cids.contains(&c.cid), strands });
    }
    // A strand ldm calls busy must belong to a domain we know; otherwise the domain
    // listing is incomplete (e.g. captured for one domain only) and free CPU would be
    // overstated (LM-06).
    for v in &devices.vcpus {
        if v.free_pct == Some(0) && !owner.contains_key(&v.pid) {
            return missing(format!(
                "line {}: `ldm list-devices` shows CPU {} in use, but no domain in the domain listing holds it; \
                 capture `ldm list-bindings -p` (all domains)",
                v.line, v.pid
            ));
        }
    }
    Ok((cores, threads_per_core))
}

fn build_memory(devices: &DeviceListing) -> Result<Vec<MemoryBlock>, InventoryError> {
    if devices.memory.is_empty() {
        return missing("`ldm list-devices -a -p` shows no MEMORY records; capture it with -a (all, bound too)");
    }
    let mut memory: Vec<MemoryBlock> = devices
        .memory
        .iter()
        .map(|m| MemoryBlock {
            pa: m.pa,
            size: m.size,
            bound: match m.bound.as_deref() {
                None => None,
                Some(SYS_OWNER) => Some(Owner::System),
                Some(d) => Some(Owner::Domain(d.to_string())),
            },
        })
        .collect();
    memory.sort_by_key(|b| b.pa);
    Ok(memory)
}

fn build_services(c: &Captures, domains: &[LdmDomain], shared: &SharedStorage) -> Result<Services, InventoryError> {
    // Which domain provides a service, as list-bindings shows it (services under their domain).
    let mut provider: BTreeMap<&str, &str> = BTreeMap::new();
    for d in domains {
        let s = &d.services;
        for n in s.vds.iter().map(|v| &v.name).chain(s.vsw.iter().map(|v| &v.name)).chain(s.vcc.iter().map(|v| &v.name))
        {
            provider.insert(n.as_str(), d.name.as_str());
        }
    }
    let merged;
    let listing = match &c.list_services {
        Some(l) => l,
        None => {
            let mut all = ServiceListing::default();
            for d in domains {
                all.vds.extend(d.services.vds.iter().cloned());
                all.vsw.extend(d.services.vsw.iter().cloned());
                all.vcc.extend(d.services.vcc.iter().cloned());
            }
            merged = all;
            &merged
        }
    };
    let owner = |kind: &str, name: &str, given: &Option<String>| -> Result<String, InventoryError> {
        match given.as_deref().or_else(|| provider.get(name).copied()) {
            Some(d) => Ok(d.to_string()),
            None => missing(format!(
                "which domain provides {kind} {name} is not in the captures; capture `ldm list-bindings -p`"
            )),
        }
    };
    let mut out = Services::default();
    for v in &listing.vds {
        out.vds.push(Vds {
            name: v.name.clone(),
            domain: owner("VDS", &v.name, &v.domain)?,
            volumes: v
                .volumes
                .iter()
                .map(|x| Volume { name: x.name.clone(), device: x.device.clone(), shared: shared.is_shared(&x.device) })
                .collect(),
        });
    }
    for v in &listing.vsw {
        out.vsw.push(Vsw {
            name: v.name.clone(),
            domain: owner("VSW", &v.name, &v.domain)?,
            nic: v.net_dev.clone().unwrap_or_default(),
        });
    }
    for v in &listing.vcc {
        out.vcc.push(Vcc {
            name: v.name.clone(),
            domain: owner("VCC", &v.name, &v.domain)?,
            port_min: v.port_min,
            port_max: v.port_max,
        });
    }
    Ok(out)
}

/// The kind of domain ldm describes (LM-01).
pub fn domain_kind(d: &LdmDomain) -> DomainKind {
    let flag = |f: &str| d.flags.iter().any(|x| x == f);
    if flag("control") || d.name == CONTROL_DOMAIN {
        DomainKind::Control
    } else if d.io.iter().any(|io| io.dev.starts_with("pci@") && !io.dev.contains('/')) {
        DomainKind::IoRoot
    } else if flag("vio-service")
        || !d.services.vds.is_empty()
        || !d.services.vsw.is_empty()
        || !d.services.vcc.is_empty()
    {
        DomainKind::Service
    } else {
        DomainKind::Guest
    }
}

fn build_domain(d: &LdmDomain, services: &Services) -> Result<Domain, InventoryError> {
    let state = match d.state.as_deref() {
        Some("active") => DomainState::Active,
        Some("bound") => DomainState::Bound,
        Some("inactive") => DomainState::Inactive,
        Some(other) => {
            return inconsistent(format!(
                "line {}: domain {} is in state {other:?}, not active, bound or inactive",
                d.line, d.name
            ));
        }
        None => return missing(format!("line {}: domain {} has no state=", d.line, d.name)),
    };
    let cpu_arch = match d.cpu_arch.as_deref() {
        Some(a) => a.parse::<CpuArch>().map_err(|e| InventoryError::Inconsistent(format!("domain {}: {e}", d.name)))?,
        None => CpuArch::Native,
    };
    Ok(Domain {
        name: d.name.clone(),
        kind: domain_kind(d),
        state,
        cpu_arch,
        os: None,
        vdisks: d
            .vdisks
            .iter()
            .map(|v| VDisk { name: v.name.clone(), volume: v.volume.clone(), service: v.service.clone() })
            .collect(),
        vnets: d.vnets.iter().map(|v| VNet { name: v.name.clone(), service: v.service.clone() }).collect(),
        console: console_of(d, services)?,
        workload: Workload {
            cpu_pct: d.util.map(|u| u.round().clamp(0.0, 100.0) as u32).unwrap_or(0),
            dirty_mib_per_s: 0,
        },
        masters: d.masters.clone(),
        failure_policy: match d.failure_policy.as_deref() {
            Some(p) => p.parse().map_err(|e| InventoryError::Inconsistent(format!("domain {}: {e}", d.name)))?,
            None => FailurePolicy::Ignore,
        },
    })
}

/// The domain's console on a VCC: from its `VCONS` record, else from `cons=PORT` and
/// the one VCC whose range holds that port.
fn console_of(d: &LdmDomain, services: &Services) -> Result<Option<Console>, InventoryError> {
    if let Some(c) = &d.console
        && let (Some(service), Some(port)) = (&c.service, c.port)
    {
        return Ok(Some(Console { service: service.clone(), port, logging: c.logging.unwrap_or(true) }));
    }
    let Some(port) = d.cons.as_deref().and_then(|c| c.parse::<u16>().ok()) else {
        return Ok(None);
    };
    let holders: Vec<&Vcc> = services.vcc.iter().filter(|v| v.port_min <= port && port <= v.port_max).collect();
    match holders.as_slice() {
        [one] => Ok(Some(Console { service: one.name.clone(), port, logging: true })),
        [] => missing(format!(
            "domain {}: console port {port} is in no VCC's range; capture `ldm list-services -p`",
            d.name
        )),
        _ => missing(format!(
            "domain {}: console port {port} fits several VCCs; capture `ldm list-bindings -p` (its VCONS names the VCC)",
            d.name
        )),
    }
}
