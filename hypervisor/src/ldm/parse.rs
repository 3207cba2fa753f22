//! Parsers for `ldm`'s parseable (`-p`) output: pure functions from text to records.
//!
//! The format, as every Oracle VM Server for SPARC release prints it:
//!
//! ```text
//! VERSION 1.6
//! DOMAIN|name=primary|state=active|flags=normal,control,vio-service|cons=SP|ncpu=4|...
//! VCPU
//! |vid=0|pid=0|util=0.9|strand=100
//! MEMORY
//! |ra=0x8000000|pa=0x8000000|size=1073741824
//! VDS|name=primary-vds0|nclients=1
//! |vol=vol0|opts=|dev=/dev/dsk/c2t1d0s2|mpgroup=
//! ```
//!
//! A line is a *record*: a record type in capitals followed by `|key=value` fields, or
//! a continuation row (`|key=value...`) that belongs to the record above it.
//!
//! What varies across ldm releases, and how each parser copes:
//! - the `VERSION 1.x` header: optional, any version accepted and returned;
//! - empty values (`mpgroup=`, `bound=`): read as "not given";
//! - unknown record types (`MAU`, `CWQ`, `VARIABLES`, `UUID`, ...) and everything under
//!   them, including the multi-line `nvramrc` values of `VARIABLES`: skipped;
//! - unknown fields: skipped;
//! - sizes as bytes (`size=1073741824`) or with units (`size=1G`), addresses in hex or
//!   decimal, CPU sets as `0,1,2` or `(0, 1, 2)`;
//! - `flags` spelled out (`normal,control,vio-service`, with `-l`) or as letters (`-n-cv-`).
//!
//! Malformed input inside a record type a parser knows is an error that names the line.
//! No input makes a parser panic: every index is checked and every number is parsed
//! with overflow checks (see the proptest suite and the `fuzz/` targets).

use std::fmt;
use tern_model::units::{parse_id_list, parse_size};

/// Why a parser refused its input: the 1-based line and what was wrong there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

fn err<T>(line: usize, message: impl Into<String>) -> Result<T, ParseError> {
    Err(ParseError { line, message: message.into() })
}

/// One parsed line: a record (`head` = its type) or a continuation row (`head` = None).
#[derive(Debug)]
struct Line<'a> {
    no: usize,
    head: Option<&'a str>,
    fields: Vec<(&'a str, &'a str)>,
}

impl<'a> Line<'a> {
    /// The field's value; `None` when absent or empty (ldm prints `key=` for "unset").
    fn get(&self, key: &str) -> Option<&'a str> {
        self.fields.iter().find(|(k, _)| *k == key).map(|(_, v)| *v).filter(|v| !v.is_empty())
    }

    fn require(&self, key: &str) -> Result<&'a str, ParseError> {
        match self.get(key) {
            Some(v) => Ok(v),
            None => err(self.no, format!("{} record lacks {key}=", self.head.unwrap_or("continuation"))),
        }
    }
}

/// The text split into lines the caller knows, plus the `VERSION` header.
struct Document<'a> {
    version: Option<String>,
    lines: Vec<Line<'a>>,
}

fn is_record_type(word: &str) -> bool {
    let mut chars = word.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn split_fields(no: usize, rest: &str) -> Result<Vec<(&str, &str)>, ParseError> {
    let mut fields = Vec::new();
    for seg in rest.split('|') {
        let seg = seg.trim();
        if seg.is_empty() {
            continue;
        }
        match seg.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => fields.push((k.trim(), v.trim())),
            _ => return err(no, format!("field {seg:?} is not key=value")),
        }
    }
    Ok(fields)
}

/// Splits `text` into records. Lines under a record type not in `known` (and the
/// unknown records themselves) are skipped whatever they hold; anything else that is
/// neither a record nor a continuation row is an error.
fn tokenize<'a>(text: &'a str, known: &[&str]) -> Result<Document<'a>, ParseError> {
    let mut doc = Document { version: None, lines: Vec::new() };
    // Whether the record type we are under is one the caller reads.
    let mut in_known = true;
    for (i, raw) in text.lines().enumerate() {
        let no = i + 1;
        let t = raw.trim();
        if t.is_empty() {
            continue;
        }
        if let Some(rest) = t.strip_prefix("VERSION")
            && (rest.is_empty() || rest.starts_with(char::is_whitespace))
        {
            if doc.version.is_none() && !rest.trim().is_empty() {
                doc.version = Some(rest.trim().to_string());
            }
            continue;
        }
        if let Some(rest) = t.strip_prefix('|') {
            if !in_known {
                continue;
            }
            let fields = split_fields(no, rest)?;
            doc.lines.push(Line { no, head: None, fields });
            continue;
        }
        let (head, rest) = t.split_once('|').unwrap_or((t, ""));
        let head = head.trim();
        if !is_record_type(head) {
            if in_known {
                return err(no, format!("{:?} is neither a record (TYPE|key=value) nor a |key=value row", clip(t)));
            }
            continue;
        }
        in_known = known.contains(&head);
        if !in_known {
            continue;
        }
        let fields = split_fields(no, rest)?;
        doc.lines.push(Line { no, head: Some(head), fields });
    }
    Ok(doc)
}

/// The first 60 characters of a line, for messages.
fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(60).collect();
    if s.chars().count() > 60 {
        out.push_str("...");
    }
    out
}

fn parse_u32(no: usize, key: &str, v: &str) -> Result<u32, ParseError> {
    v.parse().or_else(|_| err(no, format!("{key}={v:?} is not a whole number")))
}

fn parse_u16(no: usize, key: &str, v: &str) -> Result<u16, ParseError> {
    v.parse().or_else(|_| err(no, format!("{key}={v:?} is not a port number")))
}

/// `0x7e0000800000` or a decimal byte address.
fn parse_address(no: usize, key: &str, v: &str) -> Result<u64, ParseError> {
    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => v.parse().ok(),
    };
    match parsed {
        Some(a) => Ok(a),
        None => err(no, format!("{key}={v:?} is not an address")),
    }
}

/// Bytes (`1073741824`) or with a unit (`1G`, `248M`), as releases differ.
fn parse_bytes(no: usize, key: &str, v: &str) -> Result<u64, ParseError> {
    parse_size(v).or_else(|e| err(no, format!("{key}={v:?}: {e}")))
}

/// Utilisation in percent (`0.6`, `29`, `100`).
fn parse_util(no: usize, key: &str, v: &str) -> Result<f64, ParseError> {
    match v.trim_end_matches('%').parse::<f64>() {
        Ok(u) if u.is_finite() && u >= 0.0 => Ok(u),
        _ => err(no, format!("{key}={v:?} is not a percentage")),
    }
}

/// A percentage as a whole number (`31`, `31%`, `31.5`), clamped to 0..=100.
fn parse_pct(no: usize, key: &str, v: &str) -> Result<u8, ParseError> {
    let u = parse_util(no, key, v)?;
    Ok(u.round().min(100.0) as u8)
}

/// The most strands one CPU set may name: a core has at most 8 threads, a domain's set
/// is listed per core; the bound keeps hostile input from expanding into gigabytes.
pub const CPUSET_IDS_MAX: u64 = 4096;

/// `0,1,2,3`, `(0, 1)` or `0-7`.
fn parse_cpuset(no: usize, key: &str, v: &str) -> Result<Vec<u32>, ParseError> {
    let inner = v.trim().trim_start_matches('(').trim_end_matches(')');
    let mut total: u64 = 0;
    for part in inner.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let (Ok(lo), Ok(hi)) = (lo.trim().parse::<u32>(), hi.trim().parse::<u32>()) else {
            return err(no, format!("{key}={v:?}: {part:?} is not a CPU id or range"));
        };
        total += u64::from(hi.saturating_sub(lo)) + 1;
        if total > CPUSET_IDS_MAX {
            return err(no, format!("{key}={v:?} names more than {CPUSET_IDS_MAX} CPUs"));
        }
    }
    parse_id_list(inner).or_else(|e| err(no, format!("{key}={v:?}: {e}")))
}

fn yes_no(no: usize, key: &str, v: &str) -> Result<bool, ParseError> {
    match v {
        "on" | "yes" | "true" => Ok(true),
        "off" | "no" | "false" => Ok(false),
        _ => err(no, format!("{key}={v:?} is neither on nor off")),
    }
}

/// `name@domain` -> (`name`, Some(`domain`)).
fn split_at_domain(v: &str) -> (String, Option<String>) {
    match v.rsplit_once('@') {
        Some((a, b)) if !b.is_empty() => (a.to_string(), Some(b.to_string())),
        _ => (v.to_string(), None),
    }
}

/// The words of a `flags=` value, spelled out: the letters of `ldm list` (`-n-cv-`)
/// become the words `-l` prints (`normal`, `control`, `vio-service`).
pub fn flag_words(v: &str) -> Vec<String> {
    const LETTERS: &str = "-sntdrcve";
    let letters = v.chars().count() == 6 && !v.contains(',') && v.chars().all(|c| LETTERS.contains(c));
    if !letters {
        return v.split(',').map(str::trim).filter(|w| !w.is_empty()).map(str::to_string).collect();
    }
    let mut out = Vec::new();
    for (pos, c) in v.chars().enumerate() {
        let word = match (pos, c) {
            (0, 's') => "starting-stopping",
            (1, 'n') => "normal",
            (1, 't') => "transition",
            (1, 'd') => "degraded",
            (2, 'd') => "delayed-reconfiguration",
            (2, 'r') => "memory-dr",
            (3, 'c') => "control",
            (4, 'v') => "vio-service",
            (5, 's') => "source",
            (5, 't') => "target",
            (5, 'e') => "error",
            _ => continue,
        };
        out.push(word.to_string());
    }
    out
}

// ---------------------------------------------------------------------------
// ldm list-domain [-l] -p, ldm list-bindings -p
// ---------------------------------------------------------------------------

/// `CORE` row of a domain: `|cid=0|cpuset=0,1,2,3,4,5,6,7`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainCore {
    pub cid: u32,
    pub cpuset: Vec<u32>,
}

/// `VCPU` row of a domain: `|vid=0|pid=0|util=0.9|strand=100` (`cid=` in later releases).
#[derive(Clone, Debug, PartialEq)]
pub struct DomainVcpu {
    pub vid: Option<u32>,
    pub pid: u32,
    pub cid: Option<u32>,
    pub util: Option<f64>,
}

/// `MEMORY` row of a domain: `|ra=0x8000000|pa=0x8000000|size=1073741824`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainMemory {
    pub ra: Option<u64>,
    pub pa: u64,
    pub size: u64,
}

/// `IO` row of a domain: `|dev=pci@780|alias=bus_a`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainIo {
    pub dev: String,
    pub alias: Option<String>,
}

/// `VDISK|name=vdisk0|vol=vol0@primary-vds0|...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainVdisk {
    pub name: String,
    pub volume: String,
    pub service: String,
}

/// `VNET|name=vnet0|service=primary-vsw0@primary|...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainVnet {
    pub name: String,
    pub service: String,
}

/// `VCONS|group=ldom1|service=primary-vcc0@primary|port=5001|log=on`, or `VCONS|type=SP`
/// for a control domain whose console is the service processor's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainConsole {
    pub kind: Option<String>,
    pub service: Option<String>,
    pub port: Option<u16>,
    pub logging: Option<bool>,
}

/// One domain of `ldm list-domain -l -p` or `ldm list-bindings -p`.
#[derive(Clone, Debug, PartialEq)]
pub struct LdmDomain {
    /// Line of its `DOMAIN` record, for messages about it.
    pub line: usize,
    pub name: String,
    pub state: Option<String>,
    /// Spelled-out flags (see [`flag_words`]).
    pub flags: Vec<String>,
    /// `cons=`: `SP`, `UART` or a console port number.
    pub cons: Option<String>,
    pub ncpu: Option<u32>,
    pub mem: Option<u64>,
    pub util: Option<f64>,
    /// `CONTROL|...|cpu-arch=` (releases 2.0 and later).
    pub cpu_arch: Option<String>,
    /// `CONTROL|...|failure-policy=` (HA-08): what its slaves suffer when it fails.
    pub failure_policy: Option<String>,
    /// `DEPENDENCY|master=a,b` (HA-08): the domains it depends on.
    pub masters: Vec<String>,
    pub cores: Vec<DomainCore>,
    pub vcpus: Vec<DomainVcpu>,
    pub memory: Vec<DomainMemory>,
    pub io: Vec<DomainIo>,
    pub vdisks: Vec<DomainVdisk>,
    pub vnets: Vec<DomainVnet>,
    pub console: Option<DomainConsole>,
    /// Services this domain provides (`list-bindings` shows them under their domain).
    pub services: ServiceListing,
}

impl LdmDomain {
    fn new(line: &Line<'_>) -> Result<Self, ParseError> {
        let name = line.require("name")?.to_string();
        let no = line.no;
        Ok(Self {
            line: no,
            name,
            state: line.get("state").map(str::to_string),
            flags: line.get("flags").map(flag_words).unwrap_or_default(),
            cons: line.get("cons").map(str::to_string),
            ncpu: line.get("ncpu").map(|v| parse_u32(no, "ncpu", v)).transpose()?,
            mem: line.get("mem").map(|v| parse_bytes(no, "mem", v)).transpose()?,
            util: line.get("util").map(|v| parse_util(no, "util", v)).transpose()?,
            cpu_arch: None,
            failure_policy: None,
            masters: Vec::new(),
            cores: Vec::new(),
            vcpus: Vec::new(),
            memory: Vec::new(),
            io: Vec::new(),
            vdisks: Vec::new(),
            vnets: Vec::new(),
            console: None,
            services: ServiceListing::default(),
        })
    }
}

/// The domains of one `ldm list-domain -p` / `-l -p` / `list-bindings -p` output.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DomainListing {
    pub version: Option<String>,
    pub domains: Vec<LdmDomain>,
}

const DOMAIN_RECORDS: &[&str] =
    &["DOMAIN", "CONTROL", "DEPENDENCY", "CORE", "VCPU", "MEMORY", "IO", "VDISK", "VNET", "VCONS", "VDS", "VSW", "VCC"];

/// Parses `ldm list-domain -p`, `ldm list-domain -l -p` and `ldm list-bindings -p`.
pub fn parse_domain_listing(text: &str) -> Result<DomainListing, ParseError> {
    let doc = tokenize(text, DOMAIN_RECORDS)?;
    let mut out = DomainListing { version: doc.version, domains: Vec::new() };
    let mut section: Option<&str> = None;
    for line in &doc.lines {
        if line.head == Some("DOMAIN") {
            out.domains.push(LdmDomain::new(line)?);
            section = Some("DOMAIN");
            continue;
        }
        let Some(domain) = out.domains.last_mut() else {
            return err(
                line.no,
                format!("{} record before any DOMAIN record", line.head.unwrap_or("a |key=value row")),
            );
        };
        if let Some(head) = line.head {
            section = Some(head);
        }
        let Some(kind) = section else {
            return err(line.no, "a |key=value row outside any record");
        };
        domain_record(domain, kind, line)?;
    }
    Ok(out)
}

fn domain_record(d: &mut LdmDomain, kind: &str, line: &Line<'_>) -> Result<(), ParseError> {
    let no = line.no;
    let header = line.head.is_some();
    match kind {
        "CONTROL" => {
            if let Some(a) = line.get("cpu-arch") {
                d.cpu_arch = Some(a.to_string());
            }
            if let Some(p) = line.get("failure-policy") {
                d.failure_policy = Some(p.to_string());
            }
        }
        "DEPENDENCY" => {
            if let Some(m) = line.get("master") {
                let masters: Vec<String> =
                    m.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_string).collect();
                if masters.len() > tern_model::server::MASTERS_MAX {
                    return err(
                        no,
                        format!("master={m:?} names more than {} domains", tern_model::server::MASTERS_MAX),
                    );
                }
                d.masters = masters;
            }
        }
        // Rows under these headers; a header that carries the fields itself counts too.
        "CORE" | "VCPU" | "MEMORY" | "IO" if header && line.fields.is_empty() => {}
        "CORE" => d.cores.push(DomainCore {
            cid: parse_u32(no, "cid", line.require("cid")?)?,
            cpuset: match line.get("cpuset") {
                Some(v) => parse_cpuset(no, "cpuset", v)?,
                None => Vec::new(),
            },
        }),
        "VCPU" => d.vcpus.push(DomainVcpu {
            vid: line.get("vid").map(|v| parse_u32(no, "vid", v)).transpose()?,
            pid: parse_u32(no, "pid", line.require("pid")?)?,
            cid: line.get("cid").map(|v| parse_u32(no, "cid", v)).transpose()?,
            util: line.get("util").map(|v| parse_util(no, "util", v)).transpose()?,
        }),
        "MEMORY" => d.memory.push(DomainMemory {
            ra: line.get("ra").map(|v| parse_address(no, "ra", v)).transpose()?,
            pa: parse_address(no, "pa", line.require("pa")?)?,
            size: parse_bytes(no, "size", line.require("size")?)?,
        }),
        "IO" => {
            d.io.push(DomainIo { dev: line.require("dev")?.to_string(), alias: line.get("alias").map(str::to_string) })
        }
        "VDISK" if header => {
            let name = line.require("name")?.to_string();
            let (volume, service) = match split_at_domain(line.require("vol")?) {
                (v, Some(s)) => (v, s),
                (v, None) => return err(no, format!("VDISK {name}: vol={v:?} is not VOLUME@VDS")),
            };
            d.vdisks.push(DomainVdisk { name, volume, service });
        }
        "VNET" if header => {
            let name = line.require("name")?.to_string();
            let (service, _) = split_at_domain(line.require("service")?);
            d.vnets.push(DomainVnet { name, service });
        }
        "VCONS" if header => {
            d.console = Some(DomainConsole {
                kind: line.get("type").map(str::to_string),
                service: line.get("service").map(|s| split_at_domain(s).0),
                port: line.get("port").map(|v| parse_u16(no, "port", v)).transpose()?,
                logging: line.get("log").map(|v| yes_no(no, "log", v)).transpose()?,
            });
        }
        "VDS" | "VSW" | "VCC" => service_record(&mut d.services, kind, line, Some(&d.name))?,
        // Continuation rows under one-line records (VDISK, VNET, VCONS): none are known.
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// ldm list-services -p (and the services inside list-bindings -p)
// ---------------------------------------------------------------------------

/// A volume row of a VDS: `|vol=vol0|opts=|dev=/dev/dsk/c2t1d0s2|mpgroup=`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeRecord {
    pub name: String,
    pub device: String,
    pub mpgroup: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VdsRecord {
    pub line: usize,
    pub name: String,
    /// The providing domain: `ldom=`, else the enclosing `DOMAIN` record.
    pub domain: Option<String>,
    pub volumes: Vec<VolumeRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VswRecord {
    pub line: usize,
    pub name: String,
    pub domain: Option<String>,
    /// `net-dev=`: the physical NIC the switch sits on (empty for a routing-only switch).
    pub net_dev: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VccRecord {
    pub line: usize,
    pub name: String,
    pub domain: Option<String>,
    pub port_min: u16,
    pub port_max: u16,
}

/// The virtual services of `ldm list-services -p`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceListing {
    pub version: Option<String>,
    pub vds: Vec<VdsRecord>,
    pub vsw: Vec<VswRecord>,
    pub vcc: Vec<VccRecord>,
}

const SERVICE_RECORDS: &[&str] = &["DOMAIN", "VDS", "VSW", "VCC"];

/// Parses `ldm list-services -p`. Releases that group services under `DOMAIN|name=`
/// records and releases that print `ldom=` on each service are both read.
pub fn parse_service_listing(text: &str) -> Result<ServiceListing, ParseError> {
    let doc = tokenize(text, SERVICE_RECORDS)?;
    let mut out = ServiceListing { version: doc.version, ..Default::default() };
    let mut domain: Option<String> = None;
    let mut section: Option<&str> = None;
    for line in &doc.lines {
        if let Some(head) = line.head {
            section = Some(head);
        }
        match section {
            Some("DOMAIN") if line.head.is_some() => domain = Some(line.require("name")?.to_string()),
            Some("DOMAIN") => {}
            Some(kind) => service_record(&mut out, kind, line, domain.as_deref())?,
            None => return err(line.no, "a |key=value row outside any record"),
        }
    }
    Ok(out)
}

fn service_record(
    out: &mut ServiceListing,
    kind: &str,
    line: &Line<'_>,
    domain: Option<&str>,
) -> Result<(), ParseError> {
    let no = line.no;
    let owner = || line.get("ldom").or(domain).map(str::to_string);
    match (kind, line.head.is_some()) {
        ("VDS", true) => out.vds.push(VdsRecord {
            line: no,
            name: line.require("name")?.to_string(),
            domain: owner(),
            volumes: Vec::new(),
        }),
        // Volume rows start with `vol=`; other rows (clients, in `list-bindings`) are skipped.
        ("VDS", false) if line.fields.first().is_some_and(|(k, _)| *k == "vol") => {
            let Some(vds) = out.vds.last_mut() else {
                return err(no, "volume row before any VDS record");
            };
            vds.volumes.push(VolumeRecord {
                name: line.require("vol")?.to_string(),
                device: line.require("dev")?.to_string(),
                mpgroup: line.get("mpgroup").map(str::to_string),
            });
        }
        ("VSW", true) => out.vsw.push(VswRecord {
            line: no,
            name: line.require("name")?.to_string(),
            domain: owner(),
            net_dev: line.get("net-dev").map(str::to_string),
        }),
        ("VCC", true) => {
            let name = line.require("name")?.to_string();
            let range = line.require("port-range")?;
            let (lo, hi) = match range.split_once('-') {
                Some((a, b)) => (parse_u16(no, "port-range", a.trim())?, parse_u16(no, "port-range", b.trim())?),
                None => return err(no, format!("VCC {name}: port-range={range:?} is not LOW-HIGH")),
            };
            if lo > hi {
                return err(no, format!("VCC {name}: port-range={range:?} runs backwards"));
            }
            out.vcc.push(VccRecord { line: no, name, domain: owner(), port_min: lo, port_max: hi });
        }
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// ldm list-devices -a -p
// ---------------------------------------------------------------------------

/// `CORE` row: `|cid=0|free=0|cpuset=0,1,2,3,4,5,6,7`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCore {
    pub line: usize,
    pub cid: u32,
    /// Percentage of the core's strands that are free.
    pub free_pct: Option<u8>,
    pub cpuset: Vec<u32>,
}

/// `VCPU` row: `|pid=0|free=0|pm=no`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceVcpu {
    pub line: usize,
    pub pid: u32,
    pub free_pct: Option<u8>,
}

/// `MEMORY` row: `|pa=0xa00000|size=33554432|bound=_sys_` (`bound=` empty: free).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceMemory {
    pub line: usize,
    pub pa: u64,
    pub size: u64,
    pub bound: Option<String>,
}

/// The resources of `ldm list-devices -a -p` that tern reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceListing {
    pub version: Option<String>,
    pub cores: Vec<DeviceCore>,
    pub vcpus: Vec<DeviceVcpu>,
    pub memory: Vec<DeviceMemory>,
}

const DEVICE_RECORDS: &[&str] = &["CORE", "VCPU", "MEMORY"];

/// Parses `ldm list-devices -a -p` (or `-p` alone, which lists only free resources).
/// `MAU`, `CWQ`, `IO` and other resource types are skipped.
pub fn parse_device_listing(text: &str) -> Result<DeviceListing, ParseError> {
    let doc = tokenize(text, DEVICE_RECORDS)?;
    let mut out = DeviceListing { version: doc.version, ..Default::default() };
    let mut section: Option<&str> = None;
    for line in &doc.lines {
        if let Some(head) = line.head {
            section = Some(head);
            if line.fields.is_empty() {
                continue;
            }
        }
        let no = line.no;
        let free = || line.get("free").map(|v| parse_pct(no, "free", v)).transpose();
        match section {
            Some("CORE") => out.cores.push(DeviceCore {
                line: no,
                cid: parse_u32(no, "cid", line.require("cid")?)?,
                free_pct: free()?,
                cpuset: parse_cpuset(no, "cpuset", line.require("cpuset")?)?,
            }),
            Some("VCPU") => out.vcpus.push(DeviceVcpu {
                line: no,
                pid: parse_u32(no, "pid", line.require("pid")?)?,
                free_pct: free()?,
            }),
            Some("MEMORY") => out.memory.push(DeviceMemory {
                line: no,
                pa: parse_address(no, "pa", line.require("pa")?)?,
                size: parse_bytes(no, "size", line.require("size")?)?,
                bound: line.get("bound").map(str::to_string),
            }),
            _ => return err(no, "a |key=value row outside any record"),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// ldm list-domain -o status [-p] DOMAIN
// ---------------------------------------------------------------------------

/// The operation running on a domain (OP-06), from `ldm list-domain -o status`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DomainStatus {
    pub name: Option<String>,
    /// `migration`, or `None` when nothing is running.
    pub operation: Option<String>,
    pub progress_pct: Option<u8>,
    /// The other side: `source=` on the target, `target=` on the source.
    pub peer: Option<String>,
    pub error: Option<bool>,
}

const STATUS_RECORDS: &[&str] = &["DOMAIN", "STATUS"];

/// Parses `ldm list-domain -o status -p DOMAIN` (`STATUS` rows with `op=`, `progress=`,
/// `source=`/`target=`, `error=`) and, for releases or captures without `-p`, the
/// table the seed shows (`OPERATION PROGRESS SOURCE` / `migration 31% m10-1-1`).
pub fn parse_status(text: &str) -> Result<DomainStatus, ParseError> {
    if !text.contains('|') && text.lines().any(|l| l.trim_start().starts_with("OPERATION")) {
        return parse_status_table(text);
    }
    let doc = tokenize(text, STATUS_RECORDS)?;
    let mut out = DomainStatus::default();
    let mut section = None;
    for line in &doc.lines {
        if let Some(head) = line.head {
            section = Some(head);
        }
        let no = line.no;
        match (section, line.head.is_some()) {
            (Some("DOMAIN"), true) => out.name = line.get("name").map(str::to_string),
            (Some("STATUS"), _) if line.get("op").is_some() || line.get("progress").is_some() => {
                out.operation = line.get("op").map(str::to_string);
                out.progress_pct = line.get("progress").map(|v| parse_pct(no, "progress", v)).transpose()?;
                out.peer = line.get("source").or(line.get("target")).map(str::to_string);
                out.error = line.get("error").map(|v| yes_no(no, "error", v)).transpose()?;
            }
            (None, _) => return err(no, "a |key=value row outside any record"),
            _ => {}
        }
    }
    Ok(out)
}

fn parse_status_table(text: &str) -> Result<DomainStatus, ParseError> {
    let mut out = DomainStatus::default();
    let lines: Vec<(usize, &str)> =
        text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty()).collect();
    for (i, (_, l)) in lines.iter().enumerate() {
        if *l == "NAME" {
            out.name = lines.get(i + 1).map(|(_, n)| n.to_string());
        }
        if l.starts_with("OPERATION") {
            let Some((row_no, row)) = lines.get(i + 1) else {
                return Ok(out);
            };
            let words: Vec<&str> = row.split_whitespace().collect();
            match words.as_slice() {
                [op, pct, rest @ ..] => {
                    out.operation = Some(op.to_string());
                    out.progress_pct = Some(parse_pct(*row_no, "PROGRESS", pct)?);
                    out.peer = rest.first().map(|s| s.to_string());
                }
                _ => return err(*row_no, format!("status row {row:?} lacks OPERATION and PROGRESS")),
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letter_flags_spell_out_like_long_flags() {
        // Goal: `-n-cv-` and `normal,control,vio-service` mean the same.
        assert_eq!(flag_words("-n-cv-"), vec!["normal", "control", "vio-service"]);
        assert_eq!(flag_words("normal,control,vio-service"), vec!["normal", "control", "vio-service"]);
        assert_eq!(flag_words("-n----"), vec!["normal"]);
        assert_eq!(flag_words("normal"), vec!["normal"]);
        assert_eq!(flag_words("-t---s"), vec!["transition", "source"]);
    }

    #[test]
    fn garbage_inside_a_known_record_names_its_line() {
        // Goal: malformed input is an error with the line number, never a panic.
        let e = parse_device_listing("VERSION 1.6\nMEMORY\n|pa=0x10|size=1G|bound=\nnot a record\n").unwrap_err();
        assert_eq!(e.line, 4);
        let e = parse_device_listing("MEMORY\n|pa=zz|size=1G\n").unwrap_err();
        assert_eq!(e.line, 2);
        assert!(e.message.contains("pa="), "{e}");
    }

    #[test]
    fn unknown_records_and_their_free_text_are_skipped() {
        // Goal: VARIABLES with a multi-line nvramrc does not upset the domain parser.
        let text = "VERSION 1.20\nDOMAIN|name=p|state=active\nVARIABLES\n|nvramrc=.\" hi \" cr\n.\" more \" cr\nUUID|uuid=1\nVCPU\n|vid=0|pid=3|util=1\n";
        let l = parse_domain_listing(text).unwrap();
        assert_eq!(l.domains[0].vcpus[0].pid, 3);
        assert_eq!(l.version.as_deref(), Some("1.20"));
    }
}
