//! [`LdmHypervisor`]: the [`Hypervisor`] trait carried out by running `ldm` on the
//! control domain.
//!
//! | trait method | ldm commands |
//! |---|---|
//! | `inventory` | `list-domain -l -p`, `list-bindings -p`, `list-devices -a -p`, `list-services -p` (see [`super::inventory`]) |
//! | `bind` | `add-domain`, `set-domain cpu-arch=`, `add-core cid=`, `add-memory mblock=`, `add-vdisk`, `add-vnet`, `set-vcons`, `bind-domain`; on failure `remove-domain` |
//! | `unbind` | `unbind-domain`, `remove-domain` |
//! | `start` / `stop` | `start-domain` / `stop-domain` |
//! | `receive` / `finish_receive` | nothing: the target's ldmd receives the domain by itself |
//! | `migrate_out` | `migrate-domain -p FILE DOMAIN TARGET[:NEWNAME]`, polling `list-domain -o status -p DOMAIN` |
//! | `finish_migrate_out(false)` | `list-domain -p DOMAIN`: the guest is still here (ldm failed the move), or ldm completed it (`HvError::Settled`) |
//! | `cancel_migration` | `cancel-operation migration DOMAIN` |
//! | `utilisation` | `list-domain -p` (`util=`) |
//!
//! `list-constraints -x` is not used: it describes what a domain asks for, not what it
//! is bound to, and the bindings are what the LM rules check.
//!
//! What ldm does not report, and so this backend cannot: the copy round of a migration
//! and whether the guest is suspended (`Progress::round` is 0, `suspended` false until
//! the end), and the guest's suspension time (`MigrationOutcome::downtime_ms` is 0;
//! LM-15's measurement needs a probe in the guest).
//!
//! Passwords: `ldm migrate-domain` reads the target's password from a file (OP-03). The
//! agent hands the password to [`LdmHypervisor::set_target_password`]; each migration
//! writes it to a fresh file created with mode 0600 in `password_dir` and removes it
//! when `ldm` exits, whatever the outcome (also when the future is dropped).

use crate::ldm::failure::classify;
use crate::ldm::inventory::{Captures, InventoryError, ServerFacts, SharedStorage, build_server};
use crate::ldm::parse::{ParseError, parse_device_listing, parse_domain_listing, parse_service_listing, parse_status};
use crate::ldm::run::{LdmOutput, run_ldm, show};
use crate::{HvError, Hypervisor, Incoming, MigrateOut, MigrationOutcome, Pending, Progress};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tern_model::server::CONTROL_DOMAIN;
use tern_model::units::Size;
use tern_model::{Binding, Domain, Range, Resize, Server};
use tokio::sync::mpsc;

/// Default per-command deadline for everything but `migrate-domain`.
pub const COMMAND_DEADLINE: Duration = Duration::from_secs(60);
/// Default deadline of a whole `migrate-domain` (LM-17: large guests take long).
pub const MIGRATION_DEADLINE: Duration = Duration::from_secs(6 * 3600);
/// Default interval between two progress polls (OP-06).
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);
/// Default limit on what one ldm command may print on each stream.
pub const OUTPUT_BYTES_MAX: usize = 4 * 1024 * 1024;

/// How to drive `ldm` on this control domain.
#[derive(Clone, Debug)]
pub struct LdmOptions {
    /// The server's host name (the cluster's name for it).
    pub host: String,
    /// Path to `ldm` (`/usr/sbin/ldm`; `/opt/SUNWldm/bin/ldm` on old releases).
    pub ldm_path: PathBuf,
    /// Deadline of each ldm command except `migrate-domain`.
    pub command_deadline: Duration,
    /// Deadline of `migrate-domain`; killing it aborts the migration (the guest
    /// resumes on the source, Oracle's "Canceling a Migration in Progress").
    pub migration_deadline: Duration,
    /// Interval between `list-domain -o status` polls during a migration.
    pub progress_interval: Duration,
    /// Folder for the 0600 password files of `migrate-domain -p` (root-owned, not
    /// world-writable, e.g. `/var/run/tern`).
    pub password_dir: PathBuf,
    /// Largest output accepted from one command, per stream.
    pub output_bytes_max: usize,
    /// What ldm does not print: model, CPU type and frequency, firmware, OS.
    pub facts: ServerFacts,
    /// Which virtual disk backends are shared storage (LM-03).
    pub shared_storage: SharedStorage,
    /// CIDs of cores without a CPU activation licence.
    pub inactive_cids: Vec<u32>,
    /// The account `migrate-domain` logs in as on every target (`user@target`, OP-04);
    /// `None`: ldm's default, the caller's own name.
    pub target_user: Option<String>,
    /// A file holding the password of that account on the targets (OP-03), read at
    /// each migration (so it can be rotated): used for any target without a password
    /// given by [`LdmHypervisor::set_target_password`].
    pub target_password_file: Option<PathBuf>,
}

impl LdmOptions {
    /// Options with the defaults above, `ldm` at `/usr/sbin/ldm`, password files in
    /// the system's temporary folder and no shared storage declared.
    pub fn new(host: impl Into<String>, facts: ServerFacts) -> Self {
        Self {
            host: host.into(),
            ldm_path: PathBuf::from("/usr/sbin/ldm"),
            command_deadline: COMMAND_DEADLINE,
            migration_deadline: MIGRATION_DEADLINE,
            progress_interval: PROGRESS_INTERVAL,
            password_dir: std::env::temp_dir(),
            output_bytes_max: OUTPUT_BYTES_MAX,
            facts,
            shared_storage: SharedStorage::default(),
            inactive_cids: Vec::new(),
            target_user: None,
            target_password_file: None,
        }
    }

    /// Checks the options; every message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let mut errs = Vec::new();
        if self.host.is_empty() {
            errs.push("host must not be empty".to_string());
        }
        if self.ldm_path.as_os_str().is_empty() {
            errs.push("ldm_path must not be empty".to_string());
        }
        for (name, d) in [
            ("command_deadline", self.command_deadline),
            ("migration_deadline", self.migration_deadline),
            ("progress_interval", self.progress_interval),
        ] {
            if d.is_zero() {
                errs.push(format!("{name} must be longer than 0"));
            }
        }
        if self.output_bytes_max == 0 {
            errs.push("output_bytes_max must be at least 1".to_string());
        }
        if let Some(u) = &self.target_user
            && (u.is_empty() || u.len() > 32 || !u.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
        {
            errs.push(format!("target_user {u:?} must be 1-32 letters, digits, '.', '_' or '-' (a user name)"));
        }
        if errs.is_empty() { Ok(()) } else { Err(errs.join("; ")) }
    }
}

#[derive(Default)]
struct Flight {
    cancel_requested: bool,
}

/// A real server, driven through `ldm`.
pub struct LdmHypervisor {
    opts: LdmOptions,
    flights: Mutex<BTreeMap<String, Flight>>,
    passwords: Mutex<BTreeMap<String, String>>,
    files_made: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the map whole, so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// ldm's `cid=4,5` for named cores.
fn cid_list(cids: &[u32]) -> String {
    let cids: Vec<String> = cids.iter().map(u32::to_string).collect();
    format!("cid={}", cids.join(","))
}

/// ldm's `mblock=PA:SIZE,...` for named memory ranges.
fn mblock_list(ranges: &[Range]) -> String {
    let blocks: Vec<String> = ranges.iter().map(|r| format!("{:#x}:{}", r.pa, Size(r.size))).collect();
    format!("mblock={}", blocks.join(","))
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

impl LdmHypervisor {
    pub fn new(opts: LdmOptions) -> Result<Self, HvError> {
        opts.validate().map_err(HvError::Invalid)?;
        Ok(Self {
            opts,
            flights: Mutex::new(BTreeMap::new()),
            passwords: Mutex::new(BTreeMap::new()),
            files_made: AtomicU64::new(0),
        })
    }

    pub fn options(&self) -> &LdmOptions {
        &self.opts
    }

    /// The password of the target control domain (OP-01), keyed by the target exactly
    /// as [`MigrateOut::target`] names it (`host` or `user@host`, OP-04).
    pub fn set_target_password(&self, target: &str, password: &str) {
        lock(&self.passwords).insert(target.to_string(), password.to_string());
    }

    pub fn forget_target_password(&self, target: &str) {
        lock(&self.passwords).remove(target);
    }

    async fn run(&self, a: &[String], deadline: Duration) -> Result<LdmOutput, HvError> {
        tracing::debug!(command = %show(a), "running ldm");
        run_ldm(&self.opts.ldm_path, a, deadline, self.opts.output_bytes_max).await
    }

    /// Runs a command that must succeed; its failure becomes a classified error.
    async fn run_ok(&self, a: &[String]) -> Result<LdmOutput, HvError> {
        let out = self.run(a, self.opts.command_deadline).await?;
        if out.success() { Ok(out) } else { Err(classify(&out.stdout, &out.stderr).into_error()) }
    }

    async fn capture<T>(&self, a: &[&str], parse: fn(&str) -> Result<T, ParseError>) -> Result<T, HvError> {
        let a = args(a);
        let out = self.run_ok(&a).await?;
        parse(&out.stdout).map_err(|e| HvError::Io(format!("`{}` printed what tern cannot read: {e}", show(&a))))
    }

    /// Dry run (OP-02): `ldm migrate-domain -n`. `Ok` means ldm found nothing to object to.
    pub async fn check_migration(&self, req: &MigrateOut) -> Result<(), HvError> {
        let file = self.password_file(&req.target)?;
        let a = migrate_args(Some("-n"), &file.path, req, self.opts.target_user.as_deref());
        let out = self.run(&a, self.opts.command_deadline).await?;
        drop(file);
        if out.success() { Ok(()) } else { Err(classify(&out.stdout, &out.stderr).into_error()) }
    }

    fn password_file(&self, target: &str) -> Result<PasswordFile, HvError> {
        let given = lock(&self.passwords).get(target).cloned();
        let password = match (given, &self.opts.target_password_file) {
            (Some(p), _) => p,
            (None, Some(file)) => read_password_file(file)?,
            (None, None) => {
                return Err(HvError::Invalid(format!(
                    "OP-03 no password is known for target {target}: set [hypervisor] target_password_file"
                )));
            }
        };
        let n = self.files_made.fetch_add(1, Ordering::Relaxed);
        PasswordFile::create(&self.opts.password_dir, n, &password)
    }

    /// `ldm -V`: the first line, e.g. `Logical Domains Manager (v 3.1.1.0.6)`.
    pub async fn version(&self) -> Result<String, HvError> {
        let out = self.run_ok(&args(&["-V"])).await?;
        let first = out.stdout.lines().map(str::trim).find(|l| !l.is_empty());
        first.map(str::to_string).ok_or_else(|| HvError::Io("`ldm -V` printed nothing".into()))
    }

    /// The migration's progress, if `list-domain -o status` shows one running.
    async fn poll_progress(&self, domain: &str) -> Option<u8> {
        let a = args(&["list-domain", "-o", "status", "-p", domain]);
        match self.run(&a, self.opts.command_deadline).await {
            Ok(out) if out.success() => match parse_status(&out.stdout) {
                Ok(s) if s.operation.as_deref() == Some("migration") => s.progress_pct,
                Ok(_) => None,
                Err(e) => {
                    tracing::debug!(domain, error = %e, "unreadable migration status");
                    None
                }
            },
            // After the last copy the domain is gone from the source ("was not found").
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(domain, error = %e, "migration status poll failed");
                None
            }
        }
    }

    async fn remove_quietly(&self, name: &str) {
        if let Err(e) = self.run_ok(&args(&["remove-domain", name])).await {
            tracing::warn!(domain = name, error = %e, "could not remove a half-made domain");
        }
    }
}

/// Largest target password file read (a password, maybe a newline).
const PASSWORD_FILE_BYTES_MAX: u64 = 4096;

/// The password in `file`: its first line. The file must be readable by its owner only.
pub fn read_password_file(file: &Path) -> Result<String, HvError> {
    use std::os::unix::fs::MetadataExt;
    let name = file.display();
    let meta =
        std::fs::metadata(file).map_err(|e| HvError::Invalid(format!("OP-03 target_password_file {name}: {e}")))?;
    if meta.mode() & 0o077 != 0 {
        return Err(HvError::Invalid(format!(
            "OP-03 target_password_file {name} is readable by others (mode {:o}); chmod 600 it",
            meta.mode() & 0o777
        )));
    }
    if meta.len() > PASSWORD_FILE_BYTES_MAX {
        return Err(HvError::Invalid(format!(
            "OP-03 target_password_file {name} has {} bytes; a password file holds one line",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(file)
        .map_err(|e| HvError::Invalid(format!("OP-03 target_password_file {name}: {e}")))?;
    let password = text.lines().next().unwrap_or("").to_string();
    if password.is_empty() {
        return Err(HvError::Invalid(format!("OP-03 target_password_file {name} is empty")));
    }
    Ok(password)
}

fn migrate_args(flag: Option<&str>, file: &Path, req: &MigrateOut, user: Option<&str>) -> Vec<String> {
    let mut a = vec!["migrate-domain".to_string()];
    if let Some(f) = flag {
        a.push(f.to_string());
    }
    a.push("-p".to_string());
    a.push(file.display().to_string());
    a.push(req.domain.clone());
    // OP-04: `user@target`, unless the target already names its user.
    let target = match user {
        Some(u) if !req.target.contains('@') => format!("{u}@{}", req.target),
        _ => req.target.clone(),
    };
    a.push(match &req.new_name {
        Some(n) => format!("{target}:{n}"),
        None => target,
    });
    a
}

/// A target password on disk for one `ldm migrate-domain -p`: mode 0600, created anew
/// (never reusing a file an attacker could have prepared), removed on drop.
struct PasswordFile {
    path: PathBuf,
}

impl PasswordFile {
    fn create(dir: &Path, n: u64, password: &str) -> Result<Self, HvError> {
        use std::os::unix::fs::OpenOptionsExt;
        if password.contains('\n') || password.contains('\r') {
            return Err(HvError::Invalid("OP-03 a target password cannot contain a line break".into()));
        }
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path = dir.join(format!(".tern-ldm-password-{}-{n}-{nanos}", std::process::id()));
        let io = |e: std::io::Error| HvError::Io(format!("password file {}: {e}", path.display()));
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).map_err(io)?;
        let file = Self { path: path.clone() };
        f.write_all(password.as_bytes()).and_then(|()| f.write_all(b"\n")).map_err(io)?;
        Ok(file)
    }
}

impl Drop for PasswordFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!(file = %self.path.display(), error = %e, "could not remove a password file");
        }
    }
}

fn inventory_error(e: InventoryError) -> HvError {
    match e {
        InventoryError::Missing(m) => HvError::Invalid(m),
        InventoryError::Inconsistent(m) => HvError::Io(m),
    }
}

#[async_trait]
impl Hypervisor for LdmHypervisor {
    fn kind(&self) -> &'static str {
        "ldm"
    }

    async fn inventory(&self) -> Result<Server, HvError> {
        let (list_domain, list_bindings, list_devices, list_services) = tokio::try_join!(
            self.capture(&["list-domain", "-l", "-p"], parse_domain_listing),
            self.capture(&["list-bindings", "-p"], parse_domain_listing),
            self.capture(&["list-devices", "-a", "-p"], parse_device_listing),
            self.capture(&["list-services", "-p"], parse_service_listing),
        )?;
        let captures = Captures {
            list_domain: Some(list_domain),
            list_bindings: Some(list_bindings),
            list_devices: Some(list_devices),
            list_services: Some(list_services),
        };
        build_server(&self.opts.host, &self.opts.facts, &captures, &self.opts.shared_storage, &self.opts.inactive_cids)
            .map_err(inventory_error)
    }

    async fn bind(&self, domain: Domain, binding: &Binding) -> Result<(), HvError> {
        let name = binding.domain.as_str();
        if !binding.whole_cores && !binding.strands.is_empty() {
            // ldm names CPUs only by core (`add-core cid=`); strands would be its choice.
            return Err(HvError::Invalid(format!(
                "binding for {name} holds part of a core; ldm can only bind named whole cores"
            )));
        }
        self.run_ok(&args(&["add-domain", name])).await?;
        let mut steps: Vec<Vec<String>> = vec![args(&["set-domain", &format!("cpu-arch={}", domain.cpu_arch), name])];
        if !binding.cids.is_empty() {
            steps.push(args(&["add-core", &cid_list(&binding.cids), name]));
        }
        if !binding.memory.is_empty() {
            steps.push(args(&["add-memory", &mblock_list(&binding.memory), name]));
        }
        for v in &domain.vdisks {
            steps.push(args(&["add-vdisk", &v.name, &format!("{}@{}", v.volume, v.service), name]));
        }
        for v in &domain.vnets {
            steps.push(args(&["add-vnet", &v.name, &v.service, name]));
        }
        if let Some(c) = &domain.console {
            let port = binding.console_port.unwrap_or(c.port);
            steps.push(args(&[
                "set-vcons",
                &format!("port={port}"),
                &format!("service={}", c.service),
                &format!("log={}", if c.logging { "on" } else { "off" }),
                name,
            ]));
        }
        steps.push(args(&["bind-domain", name]));
        for step in &steps {
            if let Err(e) = self.run_ok(step).await {
                self.remove_quietly(name).await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// `ldm add-core cid=...`, `add-memory mblock=PA:SIZE,...`, `remove-core cid=...`,
    /// `remove-memory mblock=...` on the guest: named resources, the ones reserved.
    /// A failed step undoes the steps before it (best effort; the next inventory
    /// report shows what ldm holds either way).
    async fn resize(&self, resize: &Resize) -> Result<(), HvError> {
        let name = resize.domain.as_str();
        if lock(&self.flights).contains_key(name) {
            return Err(HvError::Busy(format!("LDom {name} is being migrated")));
        }
        if !resize.add.strands.is_empty() && !resize.add.whole_cores {
            return Err(HvError::Invalid(format!(
                "the growth of {name} holds part of a core; ldm can only add named whole cores"
            )));
        }
        // (step, its undo)
        let mut steps: Vec<(Vec<String>, Vec<String>)> = Vec::new();
        let cores = |verb: &str, cids: &[u32]| args(&[verb, &cid_list(cids), name]);
        let memory = |verb: &str, ranges: &[Range]| args(&[verb, &mblock_list(ranges), name]);
        if !resize.add.cids.is_empty() {
            steps.push((cores("add-core", &resize.add.cids), cores("remove-core", &resize.add.cids)));
        }
        if !resize.add.memory.is_empty() {
            steps.push((memory("add-memory", &resize.add.memory), memory("remove-memory", &resize.add.memory)));
        }
        if !resize.remove.cids.is_empty() {
            steps.push((cores("remove-core", &resize.remove.cids), cores("add-core", &resize.remove.cids)));
        }
        if !resize.remove.memory.is_empty() {
            steps.push((memory("remove-memory", &resize.remove.memory), memory("add-memory", &resize.remove.memory)));
        }
        for (i, (step, _)) in steps.iter().enumerate() {
            if let Err(e) = self.run_ok(step).await {
                for (_, undo) in steps[..i].iter().rev() {
                    if let Err(u) = self.run_ok(undo).await {
                        tracing::warn!(domain = name, error = %u, "undoing a resize step failed");
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }

    async fn unbind(&self, domain: &str) -> Result<(), HvError> {
        if lock(&self.flights).contains_key(domain) {
            return Err(HvError::Busy(format!("LDom {domain} is being migrated")));
        }
        self.run_ok(&args(&["unbind-domain", domain])).await?;
        self.run_ok(&args(&["remove-domain", domain])).await?;
        Ok(())
    }

    async fn start(&self, domain: &str) -> Result<(), HvError> {
        self.run_ok(&args(&["start-domain", domain])).await.map(drop)
    }

    async fn stop(&self, domain: &str) -> Result<(), HvError> {
        if domain == CONTROL_DOMAIN {
            return Err(HvError::Invalid("the control domain cannot be stopped by tern".into()));
        }
        if lock(&self.flights).contains_key(domain) {
            return Err(HvError::Busy(format!("LDom {domain} is being migrated")));
        }
        self.run_ok(&args(&["stop-domain", domain])).await.map(drop)
    }

    /// Nothing to do: the target's ldmd creates and binds the incoming domain itself
    /// when the source runs `migrate-domain`.
    async fn receive(&self, _incoming: Incoming) -> Result<(), HvError> {
        Ok(())
    }

    /// Nothing to do: ldmd on the target resumes the domain (commit) or destroys it
    /// (rollback) as part of the source's `migrate-domain`.
    async fn finish_receive(&self, _domain: &str, _ok: bool) -> Result<(), HvError> {
        Ok(())
    }

    /// `ldm migrate-domain -n`: ldmd on the target checks the move itself.
    async fn check_migrate_out(&self, req: &MigrateOut) -> Result<(), HvError> {
        self.check_migration(req).await
    }

    async fn migrate_out(
        &self,
        req: MigrateOut,
        progress: mpsc::Sender<Progress>,
    ) -> Result<MigrationOutcome, HvError> {
        let file = self.password_file(&req.target)?;
        {
            let mut flights = lock(&self.flights);
            if flights.contains_key(&req.domain) {
                return Err(HvError::Busy(format!("a migration of {} is already running", req.domain)));
            }
            flights.insert(req.domain.clone(), Flight::default());
        }
        let started = Instant::now();
        let a = migrate_args(None, &file.path, &req, self.opts.target_user.as_deref());
        let mut migrate = Box::pin(self.run(&a, self.opts.migration_deadline));
        let mut tick = tokio::time::interval(self.opts.progress_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_pct = None;
        let finished = loop {
            tokio::select! {
                out = &mut migrate => break out,
                pct = async {
                    tick.tick().await;
                    self.poll_progress(&req.domain).await
                } => {
                    if let Some(pct) = pct.filter(|p| last_pct != Some(*p)) {
                        // A slow reader only misses intermediate updates.
                        let _ = progress.try_send(Progress { pct, round: 0, suspended: false });
                        last_pct = Some(pct);
                    }
                }
            }
        };
        drop(migrate);
        drop(file);
        let cancelled = lock(&self.flights).remove(&req.domain).is_some_and(|f| f.cancel_requested);
        let out = finished.map_err(|e| match e {
            HvError::Io(m) => HvError::Io(format!(
                "{m}; killing `ldm migrate-domain` aborts the migration and {} resumes on the source",
                req.domain
            )),
            other => other,
        })?;
        if !out.success() {
            if cancelled {
                return Err(HvError::Cancelled(req.domain));
            }
            return Err(classify(&out.stdout, &out.stderr).into_error());
        }
        let _ = progress.try_send(Progress { pct: 100, round: 0, suspended: true });
        Ok(MigrationOutcome {
            total_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            downtime_ms: 0,
            rounds: 0,
            converged: true,
        })
    }

    async fn finish_migrate_out(&self, domain: &str, committed: bool) -> Result<(), HvError> {
        // ldm's migrate-domain completes (or fails) the move itself; nothing is pending.
        if committed {
            return Ok(());
        }
        // Told to resume: only possible if ldm left the guest here. Ask ldm.
        match self.run_ok(&args(&["list-domain", "-p", domain])).await {
            Ok(_) => Ok(()),
            Err(HvError::NotFound(_)) => Err(HvError::Settled(format!(
                "ldm completed the migration of {domain} before the cluster's commit was refused: {domain} no \
                 longer exists on {} and cannot resume there; it runs on the target",
                self.opts.host
            ))),
            Err(e) => Err(e),
        }
    }

    async fn incoming(&self) -> Result<Vec<Pending>, HvError> {
        // ldmd on the target receives domains itself; tern holds nothing in between.
        Ok(Vec::new())
    }

    async fn suspended(&self) -> Result<Vec<Pending>, HvError> {
        // `ldm migrate-domain` resumes or removes the guest before it returns.
        Ok(Vec::new())
    }

    async fn cancel_migration(&self, domain: &str) -> Result<(), HvError> {
        {
            let mut flights = lock(&self.flights);
            let flight = flights
                .get_mut(domain)
                .ok_or_else(|| HvError::Invalid(format!("no migration of {domain} is running from this agent")))?;
            flight.cancel_requested = true;
        }
        let result = self.run_ok(&args(&["cancel-operation", "migration", domain])).await;
        if result.is_err()
            && let Some(f) = lock(&self.flights).get_mut(domain)
        {
            f.cancel_requested = false;
        }
        result.map(drop)
    }

    async fn utilisation(&self) -> Result<BTreeMap<String, u32>, HvError> {
        let listing = self.capture(&["list-domain", "-p"], parse_domain_listing).await?;
        Ok(listing
            .domains
            .iter()
            .filter(|d| d.state.as_deref() == Some("active"))
            .map(|d| {
                let pct = d.util.map(|u| u.round().clamp(0.0, 100.0) as u32).unwrap_or(0);
                (d.name.clone(), pct)
            })
            .collect())
    }
}
