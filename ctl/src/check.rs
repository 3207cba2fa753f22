//! `ternctl check`: the whole preflight, offline, from layout files.

use crate::{EXIT_NO, LayoutArgs, layouts};
use anyhow::{anyhow, bail};
use std::fmt::Write as _;
use tern_model::units::{Size, format_cpuset};
use tern_model::{MigrationQuery, Report, Reserved, Server, preflight};

/// `[user@]host[:newname]`, as `ldm migrate-domain` takes its target (OP-01, OP-04, OP-05).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetSpec {
    pub user: Option<String>,
    pub host: String,
    pub new_name: Option<String>,
}

impl TargetSpec {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let (user, rest) = match text.split_once('@') {
            Some((u, r)) if !u.is_empty() => (Some(u.to_string()), r),
            Some(_) => bail!("target {text:?} has an empty user before '@'"),
            None => (None, text),
        };
        // An IPv6 address in brackets may contain ':'; the new name follows the last ']'.
        let split_at = match rest.rfind(']') {
            Some(close) => rest[close..].find(':').map(|i| close + i),
            None => rest.find(':'),
        };
        let (host, new_name) = match split_at {
            Some(i) => (&rest[..i], Some(rest[i + 1..].to_string())),
            None => (rest, None),
        };
        if host.is_empty() {
            bail!("target {text:?} names no host");
        }
        if new_name.as_deref() == Some("") {
            bail!("target {text:?} has an empty new name after ':'");
        }
        Ok(Self { user, host: host.to_string(), new_name })
    }
}

pub fn run(args: &LayoutArgs, source: Option<&str>, domain: &str, target: &str, json: bool) -> anyhow::Result<i32> {
    let spec = TargetSpec::parse(target)?;
    let servers = layouts::load(args)?;
    // A domain that no layout holds is bad input (exit 2), with --source or without:
    // the question cannot be asked, so it is not a "no" (exit 1).
    let source = match source {
        Some(host) => {
            let server = servers
                .get(host)
                .ok_or_else(|| anyhow!("no layout for source host {host:?} (have: {})", names(&servers)))?;
            if server.domain(domain).is_none() {
                bail!("LDom \"{domain}\" was not found on {host} (the --source layout)");
            }
            server
        }
        None => {
            let holders: Vec<&Server> = servers.values().filter(|s| s.domain(domain).is_some()).collect();
            match holders.as_slice() {
                [one] => *one,
                [] => bail!("LDom \"{domain}\" was not found in any layout ({})", names(&servers)),
                many => bail!(
                    "{domain} appears in several layouts ({}); name the source with --source HOST",
                    many.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            }
        }
    };
    let target_server = servers
        .get(&spec.host)
        .ok_or_else(|| anyhow!("no layout for target host {:?} (have: {})", spec.host, names(&servers)))?;
    let reserved = Reserved::default();
    let report = preflight(&MigrationQuery {
        source,
        target: target_server,
        domain,
        new_name: spec.new_name.as_deref(),
        target_reserved: &reserved,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(source, target_server, domain, &report));
    }
    Ok(if report.ok() { 0 } else { EXIT_NO })
}

fn names(servers: &std::collections::BTreeMap<String, Server>) -> String {
    servers.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// The human answer: the binding with old -> new values, or one line per violation.
pub fn render(source: &Server, target: &Server, domain: &str, report: &Report) -> String {
    let mut out = String::new();
    if let Some(b) = &report.binding {
        let cpu = source.cpu_of(domain);
        let _ = writeln!(out, "{domain} can migrate from {} to {} as {}", source.name, target.name, b.domain);
        let _ = writeln!(
            out,
            "  CORE     CID {} -> {}   ({} threads{}; LM-12: CIDs change, the amount does not)",
            join(&cpu.cids),
            join(&b.cids),
            b.strands.len(),
            if b.whole_cores { " in whole cores" } else { "" }
        );
        let _ = writeln!(out, "  CPUSET   {} -> {}", format_cpuset(&cpu.strands), format_cpuset(&b.strands));
        for (old, new) in source.memory_of(domain).iter().zip(&b.memory) {
            let _ = writeln!(out, "  MEMORY   {:#x} {} -> {:#x} {}", old.pa, Size(old.size), new.pa, Size(new.size));
        }
        if let (Some(c), Some(port)) = (source.domain(domain).and_then(|d| d.console.as_ref()), b.console_port) {
            let _ = writeln!(out, "  CONSOLE  {} port {} -> {port}   (LM-13)", c.service, c.port);
        }
    }
    for v in &report.errors {
        let _ = writeln!(out, "{v}");
    }
    for w in &report.warnings {
        let _ = writeln!(out, "note: {w}");
    }
    out
}

fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ldm_target_forms() {
        // Goal: OP-01/04/05 target syntax: host, user@host, host:newname, [v6]:name.
        let t = TargetSpec::parse("ldm_man@m10-1-2:ldom2").unwrap();
        assert_eq!(t.user.as_deref(), Some("ldm_man"));
        assert_eq!(t.host, "m10-1-2");
        assert_eq!(t.new_name.as_deref(), Some("ldom2"));
        assert_eq!(TargetSpec::parse("m10-1-2").unwrap().new_name, None);
        let v6 = TargetSpec::parse("[::1]:9000:ldomx").unwrap();
        assert_eq!((v6.host.as_str(), v6.new_name.as_deref()), ("[::1]", Some("9000:ldomx")));
        assert!(TargetSpec::parse("@host").is_err());
        assert!(TargetSpec::parse("host:").is_err());
        assert!(TargetSpec::parse("").is_err());
    }
}
