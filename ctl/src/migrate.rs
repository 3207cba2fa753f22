//! `ternctl migrate-domain`, `cancel-operation`, `list-operations`: live migration in
//! ldm's words (OP-01..OP-09).

use crate::EXIT_NO;
use crate::check::TargetSpec;
use crate::client::{AgentArgs, status_message};
use anyhow::{Context, anyhow, bail};
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::path::Path;
use tern_model::units::Size;
use tern_proto::limits::MessageLimits;
use tern_proto::v1 as pb;
use tokio_stream::StreamExt;

/// The largest password file read.
pub const PASSWORD_FILE_BYTES_MAX: u64 = 4096;

/// Reads the target password from `file` (OP-03), refusing a file that group or others
/// can read, as ssh does with private keys.
pub fn read_password_file(file: &Path) -> anyhow::Result<String> {
    let meta = std::fs::metadata(file).with_context(|| format!("password file {}", file.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "password file {} is readable by group or others (mode {:o}); run chmod 600 {}",
                file.display(),
                mode & 0o777,
                file.display()
            );
        }
    }
    if meta.len() > PASSWORD_FILE_BYTES_MAX {
        bail!("password file {} is larger than {PASSWORD_FILE_BYTES_MAX} bytes", file.display());
    }
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let password = text.lines().next().unwrap_or_default().to_string();
    if password.is_empty() {
        bail!("password file {} is empty", file.display());
    }
    Ok(password)
}

/// The password from `-p FILE`, or asked for without echo.
pub fn password(file: Option<&Path>, prompt: &str) -> anyhow::Result<String> {
    match file {
        Some(f) => read_password_file(f),
        None if std::io::stdin().is_terminal() => Ok(rpassword::prompt_password(prompt)?),
        None => bail!("no terminal to ask for the password: pass -p FILE"),
    }
}

pub struct MigrateArgs<'a> {
    pub domain: &'a str,
    pub target: &'a str,
    pub dry_run: bool,
    pub password_file: Option<&'a Path>,
}

/// Runs a migration (or dry run) through the source's agent; prints progress and the
/// report. Returns the exit code: 0 done, 1 refused or rolled back.
pub async fn migrate(agent: &AgentArgs, a: &MigrateArgs<'_>, json: bool) -> anyhow::Result<i32> {
    let spec = TargetSpec::parse(a.target)?;
    let new_name = spec.new_name.clone().unwrap_or_default();
    // OP-04: user@target (or -p, as root) logs in with a password; else the client
    // certificate stands for the login, by a ticket signed for exactly this move.
    let (user, password, ticket) = match (&spec.user, a.password_file) {
        (None, None) => {
            let grant =
                tern_tls::Grant { domain: a.domain, target: &spec.host, new_name: &new_name, dry_run: a.dry_run };
            let identity = agent.identity()?;
            let ticket = identity.sign_ticket(&grant, crate::top::now_ms()).context("signing the migration ticket")?;
            (String::new(), String::new(), Some(ticket.into()))
        }
        (user, file) => {
            let user = user.clone().unwrap_or_else(|| "root".into());
            (user, password(file, "Target Password: ")?, None)
        }
    };
    let mut client = pb::migration_client::MigrationClient::new(agent.connect().await?).with_message_limits();
    let req = pb::MigrateRequest {
        domain: a.domain.to_string(),
        target: spec.host.clone(),
        new_name,
        user,
        password,
        dry_run: a.dry_run,
        plan_id: 0,
        ticket,
    };
    // The stream lives as long as the migration: no per-request deadline here.
    let mut stream = client.migrate(req).await.map_err(|s| anyhow!(status_message(&s)))?.into_inner();
    let bar = (!json && !a.dry_run && std::io::stderr().is_terminal()).then(|| {
        let b = indicatif::ProgressBar::new(100);
        b.set_style(
            indicatif::ProgressStyle::with_template("{msg:>14} [{bar:40}] {pos:>3}%")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        b
    });
    let mut last_line = None;
    while let Some(event) = stream.next().await {
        let event = event.map_err(|s| anyhow!(status_message(&s)))?;
        match event.event {
            Some(pb::migrate_event::Event::Progress(p)) => match &bar {
                Some(b) => {
                    b.set_message(p.phase.clone());
                    b.set_position(u64::from(p.pct));
                }
                None if !json && !a.dry_run => {
                    let line = (p.pct / 10, p.phase.clone());
                    if last_line.as_ref() != Some(&line) {
                        eprintln!("{} {}%", p.phase, p.pct);
                        last_line = Some(line);
                    }
                }
                None => {}
            },
            Some(pb::migrate_event::Event::Report(r)) => {
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                if json {
                    println!("{}", serde_json::to_string_pretty(&report_json(&r))?);
                } else {
                    print!("{}", render_report(&r));
                }
                return Ok(0);
            }
            Some(pb::migrate_event::Event::Refused(r)) => {
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                for v in &r.errors {
                    if v.rule.is_empty() {
                        println!("{}", v.message);
                    } else {
                        println!("{} {}", v.rule, v.message);
                    }
                }
                return Ok(EXIT_NO);
            }
            None => {}
        }
    }
    bail!("the agent closed the stream before the migration ended; see `ternctl list-operations`")
}

pub(crate) fn join(ids: &[u32]) -> String {
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// The report after a migration: old -> new CIDs, memory, console port, times, notes.
pub fn render_report(r: &pb::MigrationReport) -> String {
    let mut out = String::new();
    let rename = if r.new_name != r.domain { format!(" as {}", r.new_name) } else { String::new() };
    if r.dry_run {
        let _ = writeln!(
            out,
            "dry run: {} can migrate from {} to {}{rename}; it would take:",
            r.domain, r.source, r.target
        );
    } else {
        let _ = writeln!(
            out,
            "{} migrated from {} to {}{rename} in {:.1} s (downtime {} ms) [operation {}]",
            r.domain,
            r.source,
            r.target,
            r.total_ms as f64 / 1000.0,
            r.downtime_ms,
            r.operation_id
        );
    }
    let _ = writeln!(out, "  CORE     CID {} -> {}   (LM-12)", join(&r.old_cids), join(&r.new_cids));
    for (old, new) in r.old_memory.iter().zip(&r.new_memory) {
        let _ = writeln!(out, "  MEMORY   {:#x} {} -> {:#x} {}", old.pa, Size(old.size), new.pa, Size(new.size));
    }
    if r.new_console_port != 0 {
        let _ = writeln!(out, "  CONSOLE  port {} -> {}   (LM-13)", r.old_console_port, r.new_console_port);
    }
    for n in &r.notes {
        let _ = writeln!(out, "  note: {n}");
    }
    for w in &r.warnings {
        let _ = writeln!(out, "  note: {} {}", w.rule, w.message);
    }
    out
}

fn report_json(r: &pb::MigrationReport) -> serde_json::Value {
    serde_json::json!({
        "operation_id": r.operation_id, "domain": r.domain, "new_name": r.new_name,
        "source": r.source, "target": r.target, "dry_run": r.dry_run,
        "old_cids": r.old_cids, "new_cids": r.new_cids,
        "old_console_port": r.old_console_port, "new_console_port": r.new_console_port,
        "old_memory": r.old_memory.iter().map(|m| serde_json::json!({"pa": m.pa, "size": m.size})).collect::<Vec<_>>(),
        "new_memory": r.new_memory.iter().map(|m| serde_json::json!({"pa": m.pa, "size": m.size})).collect::<Vec<_>>(),
        "downtime_ms": r.downtime_ms, "total_ms": r.total_ms, "notes": r.notes,
    })
}

pub async fn cancel(agent: &AgentArgs, operation: &str, domain: &str) -> anyhow::Result<i32> {
    let mut client = pb::migration_client::MigrationClient::new(agent.connect().await?).with_message_limits();
    let req = pb::CancelRequest { operation: operation.to_string(), domain: domain.to_string(), ..Default::default() };
    let resp = client.cancel(req).await.map_err(|s| anyhow!(status_message(&s)))?.into_inner();
    println!("cancelling operation {} ({operation} of {domain})", resp.operation_id);
    Ok(0)
}

pub async fn list_operations(agent: &AgentArgs, json: bool) -> anyhow::Result<i32> {
    let mut client = pb::migration_client::MigrationClient::new(agent.connect().await?).with_message_limits();
    let ops = client
        .list_operations(pb::ListOperationsRequest { limit: 0 })
        .await
        .map_err(|s| anyhow!(status_message(&s)))?
        .into_inner()
        .operations;
    if json {
        let v: Vec<serde_json::Value> = ops
            .iter()
            .map(|o| {
                serde_json::json!({"id": o.id, "kind": o.kind, "domain": o.domain, "source": o.source,
                    "target": o.target, "phase": o.phase, "progress_pct": o.progress_pct, "reason": o.reason,
                    "dry_run": o.dry_run, "report": o.report.as_ref().map(report_json)})
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(0);
    }
    let mut out = String::new();
    // Columns as wide as their longest value (host names such as m10-1-fragmented).
    let width =
        |min: usize, f: &dyn Fn(&pb::OperationInfo) -> usize| ops.iter().map(f).max().unwrap_or(0).max(min - 2) + 2;
    let (wd, ws, wt) = (width(10, &|o| o.domain.len()), width(12, &|o| o.source.len()), width(12, &|o| o.target.len()));
    let _ = writeln!(
        out,
        "{:<5}{:<15}{:<wd$}{:<ws$}{:<wt$}{:<14}{:<6}RESULT",
        "ID", "OPERATION", "DOMAIN", "SOURCE", "TARGET", "PHASE", "PROG"
    );
    for o in &ops {
        let kind = if o.dry_run { format!("{} -n", o.kind) } else { o.kind.clone() };
        let result = match &o.report {
            // An evacuation or restore: its summary.
            Some(r) if o.kind != "migration" => r.notes.join("; "),
            // A migration that did not commit but that the hypervisor completed: why
            // it ended, then where the guest is.
            Some(r) if o.phase != "done" => format!("{}; {}", o.reason, r.notes.join("; ")),
            Some(r) if !o.dry_run => format!(
                "CID {} -> {}, port {} -> {}, downtime {} ms, total {:.1} s",
                join(&r.old_cids),
                join(&r.new_cids),
                r.old_console_port,
                r.new_console_port,
                r.downtime_ms,
                r.total_ms as f64 / 1000.0
            ),
            _ => o.reason.clone(),
        };
        let _ = writeln!(
            out,
            "{:<5}{:<15}{:<wd$}{:<ws$}{:<wt$}{:<14}{:<6}{result}",
            o.id,
            kind,
            o.domain,
            o.source,
            o.target,
            o.phase,
            format!("{}%", o.progress_pct)
        );
    }
    print!("{out}");
    Ok(0)
}

/// `ternctl user add|remove|list` (OP-04).
pub async fn user_add(
    agent: &AgentArgs,
    name: &str,
    profiles: &[String],
    file: Option<&Path>,
    replace: bool,
) -> anyhow::Result<i32> {
    let password = password(file, &format!("Password for {name}: "))?;
    let mut client = pb::users_client::UsersClient::new(agent.connect().await?).with_message_limits();
    let req = pb::AddUserRequest { name: name.to_string(), password, profiles: profiles.to_vec(), replace };
    client.add_user(req).await.map_err(|s| anyhow!(status_message(&s)))?;
    println!("user {name} {} with profiles: {}", if replace { "replaced" } else { "added" }, profiles.join(", "));
    Ok(0)
}

pub async fn user_remove(agent: &AgentArgs, name: &str) -> anyhow::Result<i32> {
    let mut client = pb::users_client::UsersClient::new(agent.connect().await?).with_message_limits();
    client
        .remove_user(pb::RemoveUserRequest { name: name.to_string() })
        .await
        .map_err(|s| anyhow!(status_message(&s)))?;
    println!("user {name} removed");
    Ok(0)
}

pub async fn user_list(agent: &AgentArgs, json: bool) -> anyhow::Result<i32> {
    let mut client = pb::users_client::UsersClient::new(agent.connect().await?).with_message_limits();
    let users =
        client.list_users(pb::ListUsersRequest {}).await.map_err(|s| anyhow!(status_message(&s)))?.into_inner().users;
    if json {
        let v: Vec<serde_json::Value> =
            users.iter().map(|u| serde_json::json!({"name": u.name, "profiles": u.profiles})).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("{:<16}PROFILES", "NAME");
        for u in &users {
            println!("{:<16}{}", u.name, u.profiles.join(", "));
        }
    }
    Ok(0)
}

/// `ternctl host evacuate|restore HOST` (UC-1): one line per guest, then the summary.
pub async fn host_op(
    agent: &AgentArgs,
    host: &str,
    restore: bool,
    file: Option<&Path>,
    json: bool,
) -> anyhow::Result<i32> {
    let password = password(file, "Target Password: ")?;
    let mut client = pb::hosts_client::HostsClient::new(agent.connect().await?).with_message_limits();
    let req = pb::HostRequest { host: host.to_string(), user: "root".into(), password };
    let mut stream = if restore { client.restore(req).await } else { client.evacuate(req).await }
        .map_err(|s| anyhow!(status_message(&s)))?
        .into_inner();
    let mut rows = Vec::new();
    let mut stayed = 0;
    while let Some(event) = stream.next().await {
        match event.map_err(|s| anyhow!(status_message(&s)))?.event {
            Some(pb::host_event::Event::Guest(g)) => {
                if !g.moved {
                    stayed += 1;
                }
                if json {
                    rows.push(serde_json::json!({"domain": g.domain, "target": g.target, "moved": g.moved,
                        "reasons": g.reasons.iter().map(|v| format!("{} {}", v.rule, v.message).trim().to_string()).collect::<Vec<_>>()}));
                } else if g.moved {
                    let r = g.report.unwrap_or_default();
                    println!(
                        "{:<10} -> {:<16} moved: CID {} -> {}, port {} -> {}, downtime {} ms",
                        g.domain,
                        g.target,
                        join(&r.old_cids),
                        join(&r.new_cids),
                        r.old_console_port,
                        r.new_console_port,
                        r.downtime_ms
                    );
                } else {
                    println!("{:<10} stays on {host}:", g.domain);
                    for v in &g.reasons {
                        println!("    {} {}", v.rule, v.message);
                    }
                }
            }
            Some(pb::host_event::Event::Done(d)) => {
                if json {
                    let doc = serde_json::json!({"host": host, "moved": d.moved, "stayed": d.stayed, "status": d.status, "guests": rows});
                    println!("{}", serde_json::to_string_pretty(&doc)?);
                } else {
                    println!("{host}: {} guest(s) moved, {} stayed; host is now {}", d.moved, d.stayed, d.status);
                }
                return Ok(if stayed == 0 { 0 } else { EXIT_NO });
            }
            None => {}
        }
    }
    bail!("the agent closed the stream before the {} ended", if restore { "restore" } else { "evacuation" })
}
