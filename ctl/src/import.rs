//! `ternctl import-ldm`: captured `ldm ... -p` outputs of a real server -> a layout file,
//! so `ternctl check` answers "could this guest move to that server?" from captures.
//!
//! ldm prints the cores, memory blocks, services and domains; it does not print the
//! server's model, CPU type and frequency, firmware or OS, nor whether a disk backend is
//! shared storage. Those come from flags, and a missing one is reported with the flag
//! to pass, never guessed.

use anyhow::{Context, anyhow, bail};
use std::path::{Path, PathBuf};
use tern_hypervisor::layout::{parse_layout, write_layout};
use tern_hypervisor::ldm::backend::OUTPUT_BYTES_MAX;
use tern_hypervisor::ldm::inventory::{Captures, ServerFacts, SharedStorage, build_server};
use tern_hypervisor::ldm::parse::{ParseError, parse_device_listing, parse_domain_listing, parse_service_listing};
use tern_model::units::parse_id_list;
use tern_model::{CpuFamily, CpuType, Firmware, OsVersion};

/// The flags of `ternctl import-ldm`.
#[derive(clap::Args, Debug, Clone)]
pub struct ImportArgs {
    /// Output of `ldm list-domain -l -p` on the server.
    #[arg(long = "list-domain", value_name = "FILE")]
    pub list_domain: Option<PathBuf>,
    /// Output of `ldm list-devices -a -p` (cores and memory blocks; required).
    #[arg(long = "list-devices", value_name = "FILE")]
    pub list_devices: Option<PathBuf>,
    /// Output of `ldm list-services -p`.
    #[arg(long = "list-services", value_name = "FILE")]
    pub list_services: Option<PathBuf>,
    /// Output of `ldm list-bindings -p`.
    #[arg(long = "list-bindings", value_name = "FILE")]
    pub list_bindings: Option<PathBuf>,
    /// The server's host name; default: the output file's stem (a layout's host name is
    /// its file stem, so the two must agree).
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
    /// The layout file to write.
    #[arg(short = 'o', long = "output", value_name = "LAYOUT")]
    pub output: PathBuf,
    /// Overwrite the layout file if it exists.
    #[arg(long)]
    pub force: bool,
    /// Server model, as `prtdiag` names it (e.g. "SPARC M10-1").
    #[arg(long, value_name = "MODEL")]
    pub model: Option<String>,
    /// CPU type, as `psrinfo -pv` names it (e.g. "SPARC64 X+", "SPARC T4").
    #[arg(long, value_name = "CPU")]
    pub cpu: Option<String>,
    /// CPU frequency in MHz (e.g. 3200).
    #[arg(long = "frequency-mhz", value_name = "MHZ")]
    pub frequency_mhz: Option<u32>,
    /// System firmware (e.g. XCP2210).
    #[arg(long, value_name = "VERSION")]
    pub firmware: Option<String>,
    /// The control domain's OS (e.g. "Solaris 11.1.17.5.0").
    #[arg(long, value_name = "VERSION")]
    pub os: Option<String>,
    /// A device path prefix of shared storage (e.g. /dev/dsk/c0t6000); backends under it
    /// are shared (LM-03). Repeatable.
    #[arg(long = "shared", value_name = "DEVICE_PREFIX")]
    pub shared: Vec<String>,
    /// Every volume backend is shared storage.
    #[arg(long = "all-shared", conflicts_with_all = ["shared", "none_shared"])]
    pub all_shared: bool,
    /// No volume backend is shared storage.
    #[arg(long = "none-shared", conflicts_with = "shared")]
    pub none_shared: bool,
    /// CIDs of cores without a CPU activation licence (e.g. "12-15"); ldm lists them all.
    #[arg(long = "inactive-cores", value_name = "CIDS")]
    pub inactive_cores: Option<String>,
}

const FACT_FLAGS: &str =
    "--model \"SPARC M10-1\" --cpu \"SPARC64 X+\" --frequency-mhz 3200 --firmware XCP2210 --os \"Solaris 11.1.17.5.0\"";

fn read_capture<T>(path: &Option<PathBuf>, parse: fn(&str) -> Result<T, ParseError>) -> anyhow::Result<Option<T>> {
    let Some(path) = path else { return Ok(None) };
    let len = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.len();
    if len > OUTPUT_BYTES_MAX as u64 {
        bail!("{}: {len} bytes is more than the {OUTPUT_BYTES_MAX}-byte limit for one ldm output", path.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text).map(Some).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// The facts ldm does not print, or the flags still to pass.
fn facts(a: &ImportArgs) -> anyhow::Result<ServerFacts> {
    let mut missing = Vec::new();
    if a.model.is_none() {
        missing.push("--model");
    }
    if a.cpu.is_none() {
        missing.push("--cpu");
    }
    if a.frequency_mhz.is_none() {
        missing.push("--frequency-mhz");
    }
    if a.firmware.is_none() {
        missing.push("--firmware");
    }
    if a.os.is_none() {
        missing.push("--os");
    }
    let (Some(model), Some(cpu), Some(mhz), Some(firmware), Some(os)) =
        (&a.model, &a.cpu, a.frequency_mhz, &a.firmware, &a.os)
    else {
        bail!(
            "ldm does not print the server's model, CPU type and frequency, firmware or OS (LM-07, LM-10, LM-11); \
             missing {}. Pass them as in: {FACT_FLAGS}",
            missing.join(", ")
        );
    };
    let family: CpuFamily = cpu.parse().map_err(|e| anyhow!("--cpu: {e}"))?;
    if mhz == 0 {
        bail!("--frequency-mhz: 0 is not a frequency");
    }
    Ok(ServerFacts {
        model: model.clone(),
        cpu: CpuType { family, frequency_mhz: mhz },
        firmware: Firmware(firmware.clone()),
        os: OsVersion::parse(os).map_err(|e| anyhow!("--os: {e}"))?,
    })
}

fn host_name(a: &ImportArgs) -> anyhow::Result<String> {
    let stem = a.output.file_stem().and_then(|s| s.to_str()).filter(|s| !s.is_empty()).map(str::to_string);
    if a.output.extension().is_none_or(|e| e != "toml") {
        bail!("-o {}: a layout file's name ends in .toml", a.output.display());
    }
    match (&a.host, stem) {
        (Some(h), Some(s)) if *h != s => bail!(
            "--host {h} differs from the layout's file stem {s:?}; a layout's host name is its file stem: \
             write it to {h}.toml"
        ),
        (Some(h), _) => Ok(h.clone()),
        (None, Some(s)) => Ok(s),
        (None, None) => bail!("-o {}: cannot tell the host name from this file name", a.output.display()),
    }
}

/// Runs `ternctl import-ldm`; returns the exit code.
pub fn run(a: &ImportArgs, json: bool) -> anyhow::Result<i32> {
    let host = host_name(a)?;
    let facts = facts(a)?;
    let captures = Captures {
        list_domain: read_capture(&a.list_domain, parse_domain_listing)?,
        list_bindings: read_capture(&a.list_bindings, parse_domain_listing)?,
        list_devices: read_capture(&a.list_devices, parse_device_listing)?,
        list_services: read_capture(&a.list_services, parse_service_listing)?,
    };
    let shared = SharedStorage { all: a.all_shared, device_prefixes: a.shared.clone() };
    let inactive = match &a.inactive_cores {
        Some(c) => parse_id_list(c).map_err(|e| anyhow!("--inactive-cores: {e}"))?,
        None => Vec::new(),
    };
    let server = build_server(&host, &facts, &captures, &shared, &inactive).map_err(|e| anyhow!("{e}"))?;
    let volumes = server.services.vds.iter().map(|v| v.volumes.len()).sum::<usize>();
    if volumes > 0 && !a.all_shared && !a.none_shared && a.shared.is_empty() {
        bail!(
            "ldm does not say which of the {volumes} volume backends are shared storage (LM-03); pass \
             --shared DEVICE_PREFIX (repeatable, e.g. --shared /dev/dsk/c0t6000), --all-shared or --none-shared"
        );
    }
    let body = write_layout(&server).map_err(|e| anyhow!("{host}: {e}"))?;
    // The file must read back as the very server we built.
    let again =
        parse_layout(&host, &body).map_err(|e| anyhow!("{host}: the written layout does not read back: {e}"))?;
    if again != server {
        bail!("{host}: the written layout reads back as a different server");
    }
    let text = header(a, &host) + &body;
    if a.output.exists() && !a.force {
        bail!("{} exists; pass --force to overwrite it", a.output.display());
    }
    std::fs::write(&a.output, text).with_context(|| format!("writing {}", a.output.display()))?;
    let domains: Vec<String> = server.domains.iter().map(|d| format!("{} ({})", d.name, d.kind)).collect();
    if json {
        let v = serde_json::json!({
            "layout": a.output.display().to_string(),
            "host": host,
            "cores": server.cores.len(),
            "memory_blocks": server.memory.len(),
            "domains": server.domains.iter().map(|d| d.name.clone()).collect::<Vec<_>>(),
        });
        println!("{v}");
    } else {
        println!(
            "wrote {}: host {host}, {} cores, {} memory blocks, domains {}",
            a.output.display(),
            server.cores.len(),
            server.memory.len(),
            domains.join(", ")
        );
        println!(
            "note: guest OS versions are not in ldm's output; LM-11 warns until `os = \"...\"` is added to each [[domain]]"
        );
    }
    Ok(0)
}

fn header(a: &ImportArgs, host: &str) -> String {
    let files: Vec<String> = [&a.list_domain, &a.list_bindings, &a.list_devices, &a.list_services]
        .into_iter()
        .flatten()
        .map(|p| display_name(p))
        .collect();
    let shared = if a.all_shared {
        "all backends".to_string()
    } else if a.shared.is_empty() {
        "none".to_string()
    } else {
        a.shared.join(", ")
    };
    format!(
        "# {host}: written by `ternctl import-ldm` from {}.\n\
         # Not printed by ldm, taken from flags: model, cpu, frequency_mhz, firmware, os;\n\
         # shared storage: {shared}. Guest OS versions and dirty-page rates are unknown.\n\n",
        files.join(", ")
    )
}

fn display_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| p.display().to_string())
}
