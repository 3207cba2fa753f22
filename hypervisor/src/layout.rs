//! Layout files: a server described in TOML, in the vocabulary of `ldm`.
//!
//! A layout is what `ldm list-devices`, `list-services` and `list-bindings` would show
//! of one server: its CPU (CIDs, CPUSETs, activation), its memory blocks as a
//! PA / SIZE / BOUND table, its virtual services and its domains. The server's host
//! name is the file's stem (`m10-1-2.toml` -> `m10-1-2`). See `deploy/layouts/`.
//!
//! ```toml
//! [server]
//! model = "SPARC M10-1"
//! cpu = "SPARC64 X+"
//! frequency_mhz = 3200
//! firmware = "XCP2210"
//! os = "Solaris 11.1.17.5.0"     # the control domain's
//! threads_per_core = 2
//!
//! [cpu]
//! cids = "0-15"                   # CPUSET of CID c: c*threads_per_core ..
//! activated = "0-15"              # cores with an activation licence (default: all)
//!
//! [memory]                       # ldm list-devices -a memory: PA / SIZE / BOUND
//! blocks = [ { pa = 0x7e0060800000, size = "8G", bound = "primary" }, { pa = ..., size = "39416M" } ]
//!
//! [[vds]]
//! name = "primary-vds0"
//! volumes = [ { name = "vol0", device = "/dev/dsk/c2t0d0s2", shared = true } ]
//!
//! [[domain]]
//! name = "ldom1"
//! kind = "guest"
//! cores = "4-7"                   # whole cores by CID, or threads = "8,9"
//! vdisks = [ { name = "vdisk0", volume = "vol0@primary-vds0" } ]
//! console = { service = "primary-vcc0", port = 5001 }
//! masters = ["primary"]           # ldm master= (HA-08)
//! ```
//!
//! The control domain's `failure_policy = "stop"` (ldm `failure-policy=`; default
//! `ignore`) makes the hypervisor stop its slaves when it fails (HA-08).
//!
//! Errors name the file and the line of the offending entry.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use tern_model::units::{parse_id_list, parse_size};
use tern_model::{
    Console, Core, CpuArch, CpuFamily, CpuType, Domain, DomainKind, DomainState, FailurePolicy, Firmware, MemoryBlock,
    OsVersion, Owner, Server, Services, Strand, VDisk, VNet, Vcc, Vds, Volume, Vsw, Workload,
};
use toml::Spanned;

/// The largest layout file read, to refuse garbage before parsing it.
pub const LAYOUT_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// A layout that could not be read, with where and why.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("{file}: {source}")]
    Io { file: String, source: std::io::Error },
    #[error("{file}: {message}")]
    Invalid { file: String, message: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LayoutFile {
    server: ServerSpec,
    cpu: CpuSpec,
    memory: MemoryTable,
    #[serde(default)]
    vds: Vec<Spanned<VdsSpec>>,
    #[serde(default)]
    vsw: Vec<Spanned<VswSpec>>,
    #[serde(default)]
    vcc: Vec<Spanned<VccSpec>>,
    #[serde(default)]
    domain: Vec<Spanned<DomainSpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerSpec {
    model: String,
    cpu: String,
    frequency_mhz: u32,
    firmware: String,
    os: String,
    threads_per_core: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CpuSpec {
    cids: String,
    activated: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemoryTable {
    blocks: Vec<Spanned<MemorySpec>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MemorySpec {
    pa: u64,
    size: String,
    bound: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeSpec {
    name: String,
    device: String,
    shared: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VdsSpec {
    name: String,
    #[serde(default = "primary")]
    domain: String,
    #[serde(default)]
    volumes: Vec<VolumeSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VswSpec {
    name: String,
    #[serde(default = "primary")]
    domain: String,
    nic: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VccSpec {
    name: String,
    #[serde(default = "primary")]
    domain: String,
    ports: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DomainSpec {
    name: String,
    kind: DomainKind,
    #[serde(default = "active")]
    state: DomainState,
    cores: Option<String>,
    threads: Option<String>,
    cpu_arch: Option<String>,
    os: Option<String>,
    #[serde(default)]
    vdisks: Vec<VDiskSpec>,
    #[serde(default)]
    vnets: Vec<VNetSpec>,
    console: Option<ConsoleSpec>,
    #[serde(default)]
    workload: WorkloadSpec,
    /// ldm `master=` (HA-08).
    #[serde(default)]
    masters: Vec<String>,
    /// ldm `failure-policy=` (HA-08): ignore, panic, reset or stop.
    failure_policy: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VDiskSpec {
    name: String,
    volume: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VNetSpec {
    name: String,
    service: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsoleSpec {
    service: String,
    port: u16,
    #[serde(default = "yes")]
    logging: bool,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WorkloadSpec {
    #[serde(default)]
    cpu_pct: u32,
    #[serde(default)]
    dirty_mib_per_s: u64,
}

fn primary() -> String {
    tern_model::server::CONTROL_DOMAIN.to_string()
}
fn active() -> DomainState {
    DomainState::Active
}
fn yes() -> bool {
    true
}

/// The workspace's `deploy/layouts` (the seed's servers), for tests and examples: found
/// from the package folder cargo names at run time (any member of the workspace; one
/// target folder serves every checkout, so the path compiled in may be another's),
/// else from this crate's.
pub fn shipped_layouts_dir() -> std::path::PathBuf {
    let package = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")), std::path::PathBuf::from);
    package.join("../deploy/layouts")
}

/// Reads and validates the layout at `path`; the host name is the file's stem.
pub fn load_layout(path: &Path) -> Result<Server, LayoutError> {
    let file = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|source| LayoutError::Io { file: file.clone(), source })?;
    if meta.len() > LAYOUT_BYTES_MAX {
        return Err(LayoutError::Invalid {
            file,
            message: format!("{} bytes is larger than the {LAYOUT_BYTES_MAX}-byte limit for a layout", meta.len()),
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| LayoutError::Io { file: file.clone(), source })?;
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
    parse_layout(&name, &text).map_err(|message| LayoutError::Invalid { file, message })
}

/// Parses layout text for host `name`. Errors carry the line of the entry at fault.
pub fn parse_layout(name: &str, text: &str) -> Result<Server, String> {
    if name.is_empty() {
        return Err("a layout's file name (its stem) is the host name and must not be empty".into());
    }
    let spec: LayoutFile = toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())?;
    let line = |span: std::ops::Range<usize>| text[..span.start.min(text.len())].matches('\n').count() + 1;
    let at = |span, what: &str, msg: String| format!("line {}: {what}: {msg}", line(span));

    let s = &spec.server;
    let family: CpuFamily = s.cpu.parse().map_err(|e| format!("[server] cpu: {e}"))?;
    let os = OsVersion::parse(&s.os).map_err(|e| format!("[server] os: {e}"))?;
    if s.threads_per_core == 0 || s.threads_per_core > 64 {
        return Err(format!("[server] threads_per_core: {} is not between 1 and 64", s.threads_per_core));
    }
    let cores = build_cores(&spec, s.threads_per_core)?;
    let mut server = Server {
        name: name.to_string(),
        model: s.model.clone(),
        cpu: CpuType { family, frequency_mhz: s.frequency_mhz },
        firmware: Firmware(s.firmware.clone()),
        os,
        threads_per_core: s.threads_per_core,
        cores,
        memory: Vec::new(),
        services: Services::default(),
        domains: Vec::new(),
    };
    for m in &spec.memory.blocks {
        let span = m.span();
        let m = m.get_ref();
        let size = parse_size(&m.size).map_err(|e| at(span.clone(), "memory size", e.to_string()))?;
        let bound = match m.bound.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(tern_model::server::SYS_OWNER) => Some(Owner::System),
            Some(d) => Some(Owner::Domain(d.to_string())),
        };
        server.memory.push(MemoryBlock { pa: m.pa, size, bound });
    }
    server.memory.sort_by_key(|b| b.pa);
    build_services(&spec, &mut server, &at)?;
    let mut strand_owner: BTreeMap<u32, String> = BTreeMap::new();
    for d in &spec.domain {
        let span = d.span();
        let d = d.get_ref();
        let what = format!("domain {:?}", d.name);
        let strands = domain_strands(d, &server).map_err(|e| at(span.clone(), &what, e))?;
        for st in strands {
            if let Some(prev) = strand_owner.insert(st, d.name.clone()) {
                return Err(at(span, &what, format!("CPU {st} is already bound to {prev}")));
            }
        }
        server.domains.push(build_domain(d).map_err(|e| at(span, &what, e))?);
    }
    for core in &mut server.cores {
        for st in &mut core.strands {
            st.bound = strand_owner.get(&st.id).cloned();
        }
    }
    check_whole_server(&spec, &server, &at)?;
    // What is left for `validate` has no entry of its own to point at; each problem once.
    server.validate().map_err(|errs| {
        let mut seen = std::collections::BTreeSet::new();
        errs.into_iter().filter(|e| seen.insert(e.clone())).collect::<Vec<_>>().join("; ")
    })?;
    Ok(server)
}

/// The checks that need the whole server (every domain known, every block placed),
/// each reported once at the line of the entry at fault.
fn check_whole_server(spec: &LayoutFile, server: &Server, at: &At<'_>) -> Result<(), String> {
    let names: std::collections::BTreeSet<&str> = server.domains.iter().map(|d| d.name.as_str()).collect();
    let mut blocks: Vec<(u64, u64, std::ops::Range<usize>)> = Vec::new();
    for m in &spec.memory.blocks {
        let span = m.span();
        let spec = m.get_ref();
        let size = parse_size(&spec.size).unwrap_or(0); // already checked
        let what = format!("memory block at {:#x}", spec.pa);
        if let Some(d) = spec.bound.as_deref().map(str::trim)
            && !d.is_empty()
            && d != tern_model::server::SYS_OWNER
            && !names.contains(d)
        {
            return Err(at(span, &what, format!("bound to unknown domain {d:?} (no [[domain]] has that name)")));
        }
        blocks.push((spec.pa, size, span));
    }
    blocks.sort_by_key(|b| b.0);
    for w in blocks.windows(2) {
        let ((pa0, size0, _), (pa1, _, span1)) = (&w[0], &w[1]);
        if pa0.saturating_add(*size0) > *pa1 {
            let what = format!("memory block at {pa1:#x}");
            return Err(at(
                span1.clone(),
                &what,
                format!("overlaps the block at {pa0:#x} ({})", tern_model::Size(*size0)),
            ));
        }
    }
    let services = spec
        .vds
        .iter()
        .map(|v| (v.span(), "vds", &v.get_ref().name, &v.get_ref().domain))
        .chain(spec.vsw.iter().map(|v| (v.span(), "vsw", &v.get_ref().name, &v.get_ref().domain)))
        .chain(spec.vcc.iter().map(|v| (v.span(), "vcc", &v.get_ref().name, &v.get_ref().domain)));
    for (span, kind, name, domain) in services {
        if !names.contains(domain.as_str()) {
            return Err(at(span, &format!("{kind} {name:?}"), format!("provided by unknown domain {domain:?}")));
        }
    }
    for d in &spec.domain {
        let span = d.span();
        let d = d.get_ref();
        if d.state == DomainState::Inactive {
            continue; // an inactive domain holds nothing
        }
        let cpu = server.cpu_of(&d.name);
        let memory = server.memory_of(&d.name);
        let what = format!("domain {:?}", d.name);
        match (cpu.strands.is_empty(), memory.is_empty()) {
            (false, true) => {
                return Err(at(
                    span,
                    &what,
                    format!(
                        "is {} with CPUs but no memory block; bind it a block in [memory] (bound = {:?})",
                        d.state, d.name
                    ),
                ));
            }
            (true, false) => {
                return Err(at(
                    span,
                    &what,
                    format!("is {} with memory but no CPUs; give it cores or threads", d.state),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn build_cores(spec: &LayoutFile, tpc: u32) -> Result<Vec<Core>, String> {
    let cids = parse_id_list(&spec.cpu.cids).map_err(|e| format!("[cpu] cids: {e}"))?;
    if cids.is_empty() {
        return Err("[cpu] cids: a server needs at least one core".into());
    }
    let activated = match &spec.cpu.activated {
        Some(a) => parse_id_list(a).map_err(|e| format!("[cpu] activated: {e}"))?,
        None => cids.clone(),
    };
    if let Some(c) = activated.iter().find(|c| !cids.contains(c)) {
        return Err(format!("[cpu] activated: CID {c} is not in cids"));
    }
    cids.iter()
        .map(|&cid| {
            let first = cid.checked_mul(tpc).ok_or_else(|| format!("[cpu] cids: CID {cid} is too large"))?;
            Ok(Core {
                cid,
                activated: activated.contains(&cid),
                strands: (first..first + tpc).map(|id| Strand { id, bound: None }).collect(),
            })
        })
        .collect()
}

type At<'a> = dyn Fn(std::ops::Range<usize>, &str, String) -> String + 'a;

fn build_services(spec: &LayoutFile, server: &mut Server, at: &At<'_>) -> Result<(), String> {
    for v in &spec.vds {
        let v = v.get_ref();
        server.services.vds.push(Vds {
            name: v.name.clone(),
            domain: v.domain.clone(),
            volumes: v
                .volumes
                .iter()
                .map(|x| Volume { name: x.name.clone(), device: x.device.clone(), shared: x.shared })
                .collect(),
        });
    }
    for v in &spec.vsw {
        let v = v.get_ref();
        server.services.vsw.push(Vsw { name: v.name.clone(), domain: v.domain.clone(), nic: v.nic.clone() });
    }
    for v in &spec.vcc {
        let span = v.span();
        let v = v.get_ref();
        let (lo, hi) = v
            .ports
            .split_once('-')
            .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)))
            .ok_or_else(|| at(span, &format!("vcc {:?}", v.name), format!("ports {:?} is not LOW-HIGH", v.ports)))?;
        server.services.vcc.push(Vcc { name: v.name.clone(), domain: v.domain.clone(), port_min: lo, port_max: hi });
    }
    Ok(())
}

fn domain_strands(d: &DomainSpec, server: &Server) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    if let Some(c) = &d.cores {
        for cid in parse_id_list(c).map_err(|e| format!("cores: {e}"))? {
            let core = server
                .cores
                .iter()
                .find(|k| k.cid == cid)
                .ok_or_else(|| format!("cores: CID {cid} is not in [cpu] cids"))?;
            if !core.activated {
                return Err(format!("cores: CID {cid} is not in [cpu] activated (no activation licence)"));
            }
            out.extend(core.cpuset());
        }
    }
    if let Some(t) = &d.threads {
        for id in parse_id_list(t).map_err(|e| format!("threads: {e}"))? {
            match server.cores.iter().find(|k| k.strands.iter().any(|s| s.id == id)) {
                None => return Err(format!("threads: CPU {id} is on no core in [cpu] cids")),
                Some(k) if !k.activated => {
                    return Err(format!("threads: CPU {id} is on CID {}, which is not in [cpu] activated", k.cid));
                }
                Some(_) => {}
            }
            out.push(id);
        }
    }
    Ok(out)
}

fn build_domain(d: &DomainSpec) -> Result<Domain, String> {
    let cpu_arch = match &d.cpu_arch {
        Some(a) => a.parse::<CpuArch>().map_err(|e| format!("cpu_arch: {e}"))?,
        None => CpuArch::Native,
    };
    let os = d.os.as_deref().map(OsVersion::parse).transpose().map_err(|e| format!("os: {e}"))?;
    let vdisks = d
        .vdisks
        .iter()
        .map(|v| {
            let (volume, service) = v
                .volume
                .split_once('@')
                .ok_or_else(|| format!("vdisk {}: volume {:?} is not VOLUME@VDS", v.name, v.volume))?;
            Ok(VDisk { name: v.name.clone(), volume: volume.to_string(), service: service.to_string() })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Domain {
        name: d.name.clone(),
        kind: d.kind,
        state: d.state,
        cpu_arch,
        os,
        vdisks,
        vnets: d.vnets.iter().map(|n| VNet { name: n.name.clone(), service: n.service.clone() }).collect(),
        console: d.console.as_ref().map(|c| Console { service: c.service.clone(), port: c.port, logging: c.logging }),
        workload: Workload { cpu_pct: d.workload.cpu_pct, dirty_mib_per_s: d.workload.dirty_mib_per_s },
        masters: d.masters.clone(),
        failure_policy: match &d.failure_policy {
            Some(p) => p.parse().map_err(|e| format!("failure_policy: {e}"))?,
            None => FailurePolicy::Ignore,
        },
    })
}

/// Writes `server` as layout text that [`parse_layout`] reads back to an equal server
/// (the host name is not written: it is the file's stem). Used by `ternctl import-ldm`.
///
/// Refuses what the format cannot say: a core whose CPUSET is not the `threads_per_core`
/// strands from `cid * threads_per_core` on (the layout derives CPUSETs that way), and a
/// physical address above `i64::MAX` (TOML integers are signed 64-bit).
pub fn write_layout(server: &Server) -> Result<String, String> {
    use std::fmt::Write as _;
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let tpc = server.threads_per_core;
    let mut out = String::new();
    let s = &server;
    let _ = writeln!(out, "[server]");
    let _ = writeln!(out, "model = {}", q(&s.model));
    let _ = writeln!(out, "cpu = {}", q(s.cpu.family.name()));
    let _ = writeln!(out, "frequency_mhz = {}", s.cpu.frequency_mhz);
    let _ = writeln!(out, "firmware = {}", q(&s.firmware.0));
    let _ = writeln!(out, "os = {}", q(&s.os.to_string()));
    let _ = writeln!(out, "threads_per_core = {tpc}");

    for c in &s.cores {
        let first = c.cid.checked_mul(tpc).ok_or_else(|| format!("core {} is too large a CID for a layout", c.cid))?;
        let expected: Vec<u32> = (first..first.saturating_add(tpc)).collect();
        if c.cpuset() != expected {
            return Err(format!(
                "core {}'s CPUSET {:?} is not CPUs {first}..{} ({tpc} per core from CID x {tpc}); a layout cannot describe it",
                c.cid,
                c.cpuset(),
                first.saturating_add(tpc).saturating_sub(1)
            ));
        }
    }
    let cids: Vec<u32> = s.cores.iter().map(|c| c.cid).collect();
    let active: Vec<u32> = s.cores.iter().filter(|c| c.activated).map(|c| c.cid).collect();
    let _ = writeln!(out, "\n[cpu]");
    let _ = writeln!(out, "cids = {}", q(&id_ranges(&cids)));
    let _ = writeln!(out, "activated = {}", q(&id_ranges(&active)));

    let _ = writeln!(out, "\n# ldm list-devices -a memory: PA / SIZE / BOUND (no bound = free)");
    let _ = writeln!(out, "[memory]\nblocks = [");
    for b in &s.memory {
        if i64::try_from(b.pa).is_err() {
            return Err(format!("memory block at {:#x} is above what a TOML integer holds", b.pa));
        }
        let bound = match &b.bound {
            Some(o) => format!(", bound = {}", q(&o.to_string())),
            None => String::new(),
        };
        let _ = writeln!(out, "  {{ pa = {:#x}, size = {}{bound} }},", b.pa, q(&tern_model::Size(b.size).to_string()));
    }
    let _ = writeln!(out, "]");

    for v in &s.services.vds {
        let _ = writeln!(out, "\n[[vds]]\nname = {}\ndomain = {}\nvolumes = [", q(&v.name), q(&v.domain));
        for vol in &v.volumes {
            let _ =
                writeln!(out, "  {{ name = {}, device = {}, shared = {} }},", q(&vol.name), q(&vol.device), vol.shared);
        }
        let _ = writeln!(out, "]");
    }
    for v in &s.services.vsw {
        let _ = writeln!(out, "\n[[vsw]]\nname = {}\ndomain = {}\nnic = {}", q(&v.name), q(&v.domain), q(&v.nic));
    }
    for v in &s.services.vcc {
        let _ = writeln!(
            out,
            "\n[[vcc]]\nname = {}\ndomain = {}\nports = \"{}-{}\"",
            q(&v.name),
            q(&v.domain),
            v.port_min,
            v.port_max
        );
    }

    for d in &s.domains {
        let _ = writeln!(out, "\n[[domain]]\nname = {}", q(&d.name));
        let kind = match d.kind {
            DomainKind::Control => "control",
            DomainKind::IoRoot => "io-root",
            DomainKind::Service => "service",
            DomainKind::Guest => "guest",
        };
        let _ = writeln!(out, "kind = \"{kind}\"\nstate = \"{}\"", d.state);
        let (whole, threads) = cpus_of(server, &d.name);
        if !whole.is_empty() {
            let _ = writeln!(out, "cores = {}", q(&id_ranges(&whole)));
        }
        if !threads.is_empty() {
            let _ = writeln!(out, "threads = {}", q(&id_ranges(&threads)));
        }
        let _ = writeln!(out, "cpu_arch = \"{}\"", d.cpu_arch);
        if let Some(os) = &d.os {
            let _ = writeln!(out, "os = {}", q(&os.to_string()));
        }
        if !d.vdisks.is_empty() {
            let items: Vec<String> = d
                .vdisks
                .iter()
                .map(|v| format!("{{ name = {}, volume = {} }}", q(&v.name), q(&format!("{}@{}", v.volume, v.service))))
                .collect();
            let _ = writeln!(out, "vdisks = [{}]", items.join(", "));
        }
        if !d.vnets.is_empty() {
            let items: Vec<String> =
                d.vnets.iter().map(|v| format!("{{ name = {}, service = {} }}", q(&v.name), q(&v.service))).collect();
            let _ = writeln!(out, "vnets = [{}]", items.join(", "));
        }
        if let Some(c) = &d.console {
            let _ = writeln!(
                out,
                "console = {{ service = {}, port = {}, logging = {} }}",
                q(&c.service),
                c.port,
                c.logging
            );
        }
        let _ = writeln!(
            out,
            "workload = {{ cpu_pct = {}, dirty_mib_per_s = {} }}",
            d.workload.cpu_pct, d.workload.dirty_mib_per_s
        );
        if !d.masters.is_empty() {
            let items: Vec<String> = d.masters.iter().map(|m| q(m)).collect();
            let _ = writeln!(out, "masters = [{}]", items.join(", "));
        }
        if !d.failure_policy.is_ignore() {
            let _ = writeln!(out, "failure_policy = \"{}\"", d.failure_policy);
        }
    }
    Ok(out)
}

/// The CIDs of the cores wholly bound to `domain`, and its strands on other cores.
fn cpus_of(server: &Server, domain: &str) -> (Vec<u32>, Vec<u32>) {
    let mut whole = Vec::new();
    let mut threads = Vec::new();
    for c in &server.cores {
        let mine: Vec<u32> = c.strands.iter().filter(|s| s.bound.as_deref() == Some(domain)).map(|s| s.id).collect();
        if mine.is_empty() {
            continue;
        }
        if mine.len() == c.strands.len() {
            whole.push(c.cid);
        } else {
            threads.extend(mine);
        }
    }
    (whole, threads)
}

/// `0,1,2,3,8,10,11` -> `0-3,8,10-11`.
fn id_ranges(ids: &[u32]) -> String {
    let mut sorted = ids.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        parts.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
        i += 1;
    }
    parts.join(",")
}
