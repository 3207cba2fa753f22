//! The inverse of [`crate::ldm::parse`]: a [`tern_model::Server`] printed as `ldm`'s
//! parseable (`-p`) outputs, in the record layout the seed's captures show.
//!
//! `fake-ldm` answers from these in its fleet mode (a folder per server whose
//! `server.json` it keeps), so the ldm backend's end-to-end tests read outputs that
//! change as domains migrate. The round trip `build_server(parse(render(s)))` gives
//! back `s` except for what ldm does not print (a guest's OS, its dirty-page rate):
//! see the tests below.

use crate::ldm::inventory::{ServerFacts, SharedStorage};
use std::fmt::Write;
use std::path::{Path, PathBuf};
use tern_model::server::{CONTROL_DOMAIN, SYS_OWNER};
use tern_model::{Domain, DomainKind, Owner, Server};

const VERSION: &str = "VERSION 1.6\n";

/// ldm's six-letter flags (`-n-cv-`) of a domain in `list-domain -p`.
fn letter_flags(server: &Server, d: &Domain) -> String {
    let service = provides_services(server, &d.name);
    let mut f = ['-'; 6];
    f[1] = 'n';
    if d.kind == DomainKind::Control {
        f[3] = 'c';
    }
    if service || d.kind == DomainKind::Control {
        f[4] = 'v';
    }
    f.iter().collect()
}

/// The spelled-out flags of `list-domain -l -p` and `list-bindings -p`.
fn word_flags(server: &Server, d: &Domain) -> String {
    let mut words = vec!["normal"];
    if d.kind == DomainKind::Control {
        words.push("control");
    }
    if d.kind == DomainKind::Control || provides_services(server, &d.name) {
        words.push("vio-service");
    }
    words.join(",")
}

fn provides_services(server: &Server, domain: &str) -> bool {
    let s = &server.services;
    s.vds.iter().any(|v| v.domain == domain)
        || s.vsw.iter().any(|v| v.domain == domain)
        || s.vcc.iter().any(|v| v.domain == domain)
}

/// `cons=`: the console port, or `UART` for the control domain's own console.
fn cons(d: &Domain) -> String {
    match &d.console {
        Some(c) => c.port.to_string(),
        None if d.name == CONTROL_DOMAIN => "UART".into(),
        None => String::new(),
    }
}

fn domain_line(server: &Server, d: &Domain, flags: &str) -> String {
    let cpu = server.cpu_of(&d.name);
    let mem: u64 = server.memory_of(&d.name).iter().map(|r| r.size).sum();
    format!(
        "DOMAIN|name={}|state={}|flags={flags}|cons={}|ncpu={}|mem={mem}|util={}|uptime=0|norm_util={}\n",
        d.name,
        d.state,
        cons(d),
        cpu.strands.len(),
        d.workload.cpu_pct,
        d.workload.cpu_pct,
    )
}

/// `ldm list-domain -p [NAME]`: one `DOMAIN` record per domain. `None` when `only`
/// names no domain (ldm then says `LDom "x" was not found`).
pub fn list_domain(server: &Server, only: Option<&str>) -> Option<String> {
    let mut out = String::from(VERSION);
    let mut found = only.is_none();
    for d in server.domains.iter().filter(|d| only.is_none_or(|n| n == d.name)) {
        found = true;
        out.push_str(&domain_line(server, d, &letter_flags(server, d)));
    }
    found.then_some(out)
}

/// `ldm list-bindings -p` (and `list-domain -l -p`, which prints the same records):
/// each domain with its CPUs, memory, devices, and the services it provides.
pub fn list_bindings(server: &Server, only: Option<&str>) -> Option<String> {
    let mut out = String::from(VERSION);
    let mut found = only.is_none();
    for d in server.domains.iter().filter(|d| only.is_none_or(|n| n == d.name)) {
        found = true;
        out.push_str(&domain_line(server, d, &word_flags(server, d)));
        domain_body(server, d, &mut out);
    }
    found.then_some(out)
}

fn domain_body(server: &Server, d: &Domain, out: &mut String) {
    let _ = writeln!(
        out,
        "CONTROL|failure-policy={}|extended-mapin-space=on|cpu-arch={}|rc-add-policy=|shutdown-group=15",
        d.failure_policy, d.cpu_arch
    );
    let _ = writeln!(out, "DEPENDENCY|master={}", d.masters.join(","));
    let held: Vec<(u32, Vec<u32>)> = server
        .cores
        .iter()
        .map(|c| {
            let mine = c.strands.iter().filter(|s| s.bound.as_deref() == Some(d.name.as_str())).map(|s| s.id);
            (c.cid, mine.collect::<Vec<u32>>())
        })
        .filter(|(_, s)| !s.is_empty())
        .collect();
    if !held.is_empty() {
        out.push_str("CORE\n");
        for (cid, strands) in &held {
            let _ = writeln!(out, "|cid={cid}|cpuset={}", join(strands));
        }
        out.push_str("VCPU\n");
        let mut vid = 0;
        for (cid, strands) in &held {
            for pid in strands {
                let _ = writeln!(out, "|vid={vid}|pid={pid}|cid={cid}|util={}|strand=100", d.workload.cpu_pct);
                vid += 1;
            }
        }
    }
    let memory = server.memory_of(&d.name);
    if !memory.is_empty() {
        out.push_str("MEMORY\n");
        // Real addresses as a guest sees them: its blocks laid end to end from 256 MB.
        let mut ra: u64 = 0x1000_0000;
        for r in &memory {
            let _ = writeln!(out, "|ra={ra:#x}|pa={:#x}|size={}", r.pa, r.size);
            ra = ra.saturating_add(r.size);
        }
    }
    if d.kind == DomainKind::IoRoot || d.kind == DomainKind::Control {
        out.push_str("IO\n|dev=pci@8000|alias=PCI0\n");
    }
    for (i, v) in d.vnets.iter().enumerate() {
        let provider = server.services.vsw(&v.service).map(|s| s.domain.as_str()).unwrap_or(CONTROL_DOMAIN);
        let _ = writeln!(
            out,
            "VNET|name={}|dev=network@{i}|service={}@{provider}|mac-addr=|mode=|pvid=1|vid=|mtu=1500|linkprop=|id={i}",
            v.name, v.service
        );
    }
    for (i, v) in d.vdisks.iter().enumerate() {
        let provider = server.services.vds(&v.service).map(|s| s.domain.as_str()).unwrap_or(CONTROL_DOMAIN);
        let _ = writeln!(
            out,
            "VDISK|name={}|vol={}@{}|timeout=|dev=disk@{i}|server={provider}|mpgroup=|id={i}",
            v.name, v.volume, v.service
        );
    }
    services_of(server, Some(&d.name), false, out);
    match &d.console {
        Some(c) => {
            let provider = server.services.vcc(&c.service).map(|s| s.domain.as_str()).unwrap_or(CONTROL_DOMAIN);
            let _ = writeln!(
                out,
                "VCONS|group={}|service={}@{provider}|port={}|log={}",
                d.name,
                c.service,
                c.port,
                if c.logging { "on" } else { "off" }
            );
        }
        None if d.name == CONTROL_DOMAIN => out.push_str("VCONS|type=UART\n"),
        None => {}
    }
}

/// The VCC, VSW and VDS records of `domain`'s services (all, when `None`); with
/// `ldom`, each names its domain (`list-services -p`), else the enclosing `DOMAIN`
/// record does (`list-bindings -p`).
fn services_of(server: &Server, domain: Option<&str>, ldom: bool, out: &mut String) {
    let s = &server.services;
    let mine = |d: &str| domain.is_none_or(|x| x == d);
    let at = |d: &str| if ldom { format!("|ldom={d}") } else { String::new() };
    for v in s.vcc.iter().filter(|v| mine(&v.domain)) {
        let _ = writeln!(out, "VCC|name={}{}|port-range={}-{}", v.name, at(&v.domain), v.port_min, v.port_max);
    }
    for v in s.vsw.iter().filter(|v| mine(&v.domain)) {
        let _ = writeln!(
            out,
            "VSW|name={}{}|mac-addr=|net-dev={}|dev=switch@0|default-vlan-id=1|pvid=1|vid=|mode=|mtu=1500|linkprop=|id=0",
            v.name,
            at(&v.domain),
            v.nic
        );
    }
    for v in s.vds.iter().filter(|v| mine(&v.domain)) {
        let _ = writeln!(out, "VDS|name={}{}|nclients=0", v.name, at(&v.domain));
        for vol in &v.volumes {
            let _ = writeln!(out, "|vol={}|opts=|dev={}|mpgroup=", vol.name, vol.device);
        }
    }
}

/// `ldm list-services -p`.
pub fn list_services(server: &Server) -> String {
    let mut out = String::from(VERSION);
    services_of(server, None, true, &mut out);
    out
}

/// `ldm list-devices -a -p`: every core (with the share of its strands that is free),
/// every strand, every memory block and who holds it.
pub fn list_devices(server: &Server) -> String {
    let mut out = String::from(VERSION);
    out.push_str("CORE\n");
    for c in &server.cores {
        let free = c.strands.iter().filter(|s| s.bound.is_none()).count();
        let pct = if c.strands.is_empty() { 0 } else { free * 100 / c.strands.len() };
        let _ = writeln!(out, "|cid={}|free={pct}|cpuset={}", c.cid, join(&c.cpuset()));
    }
    out.push_str("VCPU\n");
    for s in server.cores.iter().flat_map(|c| &c.strands) {
        let _ = writeln!(out, "|pid={}|free={}|pm=no", s.id, if s.bound.is_none() { 100 } else { 0 });
    }
    out.push_str("MEMORY\n");
    for b in &server.memory {
        let bound = match &b.bound {
            None => String::new(),
            Some(Owner::System) => SYS_OWNER.to_string(),
            Some(Owner::Domain(d)) => d.clone(),
        };
        let _ = writeln!(out, "|pa={:#x}|size={}|bound={bound}", b.pa, b.size);
    }
    out
}

/// An operation on a domain, as `ldm list-domain -o status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    pub progress_pct: u8,
    /// `source` on the target, `target` on the source.
    pub peer_role: &'static str,
    pub peer: String,
}

/// `ldm list-domain -o status -p NAME`.
pub fn status(domain: &str, op: Option<&Operation>) -> String {
    let mut out = format!("{VERSION}DOMAIN|name={domain}|\n");
    if let Some(op) = op {
        let _ =
            writeln!(out, "STATUS\n|op=migration|progress={}|error=no|{}={}", op.progress_pct, op.peer_role, op.peer);
    }
    out
}

/// What ldm does not print about `server`, as its agent's configuration would give it:
/// the facts, the shared backends (each shared volume's device) and the inactive cores.
pub fn unprinted(server: &Server) -> (ServerFacts, SharedStorage, Vec<u32>) {
    let facts = ServerFacts {
        model: server.model.clone(),
        cpu: server.cpu,
        firmware: server.firmware.clone(),
        os: server.os.clone(),
    };
    let shared = SharedStorage {
        all: false,
        device_prefixes: server
            .services
            .vds
            .iter()
            .flat_map(|v| &v.volumes)
            .filter(|v| v.shared)
            .map(|v| v.device.clone())
            .collect(),
    };
    let inactive = server.cores.iter().filter(|c| !c.activated).map(|c| c.cid).collect();
    (facts, shared, inactive)
}

/// Makes `fleet/<server>/` a fake server for fake-ldm's fleet mode: its `server.json`
/// and an `ldm` symlink to `fake_ldm`. Returns the `ldm` path to configure.
pub fn write_fleet_server(fleet: &Path, server: &Server, fake_ldm: &Path) -> std::io::Result<PathBuf> {
    let dir = fleet.join(&server.name);
    std::fs::create_dir_all(&dir)?;
    let json = serde_json::to_string_pretty(server).map_err(std::io::Error::other)?;
    std::fs::write(dir.join("server.json"), json)?;
    let ldm = dir.join("ldm");
    if ldm.symlink_metadata().is_ok() {
        std::fs::remove_file(&ldm)?;
    }
    std::os::unix::fs::symlink(fake_ldm, &ldm)?;
    Ok(ldm)
}

fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ldm::inventory::{Captures, build_server};
    use crate::ldm::parse::{parse_device_listing, parse_domain_listing, parse_service_listing, parse_status};

    /// What ldm prints of `s`, read back the way the ldm backend reads a server.
    pub(crate) fn read_back(s: &Server) -> Server {
        let captures = Captures {
            list_domain: Some(parse_domain_listing(&list_bindings(s, None).unwrap()).unwrap()),
            list_bindings: Some(parse_domain_listing(&list_bindings(s, None).unwrap()).unwrap()),
            list_devices: Some(parse_device_listing(&list_devices(s)).unwrap()),
            list_services: Some(parse_service_listing(&list_services(s)).unwrap()),
        };
        let (facts, shared, inactive) = unprinted(s);
        build_server(&s.name, &facts, &captures, &shared, &inactive).unwrap()
    }

    /// `s` as far as ldm prints it: no guest OS, no dirty-page rate.
    fn printable(s: &Server) -> Server {
        let mut s = s.clone();
        for d in &mut s.domains {
            d.os = None;
            d.workload.dirty_mib_per_s = 0;
        }
        s
    }

    fn layouts() -> Vec<Server> {
        let dir = crate::layout::shipped_layouts_dir();
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "toml") {
                out.push(crate::layout::load_layout(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())));
            }
        }
        assert!(out.len() >= 3, "the shipped layouts are in {}", dir.display());
        out
    }

    #[test]
    fn every_shipped_layout_reads_back_as_itself_through_ldm_outputs() {
        // Goal: what fake-ldm prints of a server is what the ldm backend reads back.
        for s in layouts() {
            assert_eq!(read_back(&s), printable(&s), "{}", s.name);
        }
    }

    #[test]
    fn a_named_listing_holds_only_that_domain_and_an_unknown_name_none() {
        // Goal: `list-domain -p NAME` answers for NAME alone, and refuses a domain it lacks.
        let s = layouts().into_iter().find(|s| s.domain("ldom1").is_some()).unwrap();
        let one = parse_domain_listing(&list_domain(&s, Some("ldom1")).unwrap()).unwrap();
        assert_eq!(one.domains.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["ldom1"]);
        assert!(list_domain(&s, Some("nope")).is_none());
        assert!(list_bindings(&s, Some("nope")).is_none());
    }

    #[test]
    fn a_migration_status_reads_back_with_its_progress_and_peer() {
        // Goal: `list-domain -o status -p` as rendered is what the progress poll parses.
        let op = Operation { progress_pct: 42, peer_role: "target", peer: "m10-1-2".into() };
        let st = parse_status(&status("ldom1", Some(&op))).unwrap();
        assert_eq!(st.operation.as_deref(), Some("migration"));
        assert_eq!(st.progress_pct, Some(42));
        assert_eq!(st.peer.as_deref(), Some("m10-1-2"));
        assert_eq!(parse_status(&status("ldom1", None)).unwrap().operation, None);
    }
}
