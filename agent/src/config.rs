//! `ternd`'s configuration file (TOML). Unknown fields are refused; `validate()` names
//! the field at fault; durations carry their unit in the name.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The largest configuration file read.
pub const CONFIG_BYTES_MAX: u64 = 1024 * 1024;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The node's name: the host name of the server whose control domain runs it.
    pub name: String,
    /// Where the agent serves gRPC (peers and ternctl). Port 0 picks a free port.
    pub listen_addr: SocketAddr,
    /// The address peers use to reach this agent; default: the bound listen address.
    #[serde(default)]
    pub advertise_addr: Option<String>,
    /// Raft log, state machine and hypervisor state live here.
    pub data_dir: PathBuf,
    /// Members to join through (host:port). Empty: this agent starts a new cluster
    /// (unless `bootstrap` says otherwise).
    #[serde(default)]
    pub join: Vec<String>,
    /// Whether this agent founds the cluster (`new`, once, on an empty data directory)
    /// or is a member of an existing one (`existing`: it never founds one, so a founder
    /// whose data directory was lost cannot start a second cluster). Absent: founds a
    /// cluster when `join` is empty and the data directory holds none.
    #[serde(default)]
    pub bootstrap: Option<Bootstrap>,
    /// How many voters the cluster keeps; other members are learners.
    #[serde(default = "default_voters")]
    pub voters: u32,
    /// Where /metrics is served (Prometheus text over plain HTTP). Absent: no metrics
    /// endpoint. A loopback address unless `metrics_remote` is set.
    #[serde(default)]
    pub metrics_addr: Option<SocketAddr>,
    /// Allow a non-loopback `metrics_addr`: the endpoint has no authentication, so
    /// only behind a firewall or a TLS proxy that checks client certificates.
    #[serde(default)]
    pub metrics_remote: bool,
    pub tls: TlsConfig,
    pub hypervisor: HypervisorConfig,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub ha: HaConfig,
    #[serde(default)]
    pub rebalance: RebalanceTiming,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub telemetry: TelemetryConfig,
}

/// `bootstrap`, as etcd's `initial-cluster-state`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Bootstrap {
    /// Found a new one-member cluster; refused on a data directory that holds one.
    New,
    /// Be a member of a running cluster: join it through `join`, or rejoin it from the
    /// data directory; never found one.
    Existing,
}

impl Bootstrap {
    /// Whether an agent with this setting and `join` list may start on a data directory
    /// that does (`initialized`) or does not hold a cluster, and whether it founds one.
    /// `Err` is the reason it may not start, for the admin.
    pub fn decide(setting: Option<Self>, join_empty: bool, initialized: bool) -> Result<bool, String> {
        match (setting, initialized) {
            (Some(Self::New), true) => Err("bootstrap = \"new\" but the data directory already holds a cluster: set \
                 bootstrap = \"existing\" to run this member of it, or empty the data directory to found a new one"
                .into()),
            (Some(Self::New), false) => Ok(true),
            (Some(Self::Existing), false) if join_empty => Err("bootstrap = \"existing\" but join is empty and the \
                 data directory holds no cluster: there is nobody to join; list members' addresses in join (or \
                 set bootstrap = \"new\" to found a cluster)"
                .into()),
            (Some(Self::Existing), _) | (None, true) => Ok(false),
            (None, false) => Ok(join_empty),
        }
    }
}

/// When the leader's rebalancer looks (RB-01); the policy itself (auto mode, level,
/// limits) is the cluster's, in the replicated state (`ternctl rebalance set`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RebalanceTiming {
    /// One round every this many milliseconds: measure the imbalance, plan in auto
    /// mode once it held, and drive an applying plan's moves.
    pub interval_ms: u64,
}

impl Default for RebalanceTiming {
    fn default() -> Self {
        Self { interval_ms: 30_000 }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The cluster CA's certificate (PEM).
    pub ca: PathBuf,
    /// This node's certificate (PEM), signed by the CA.
    pub cert: PathBuf,
    /// This node's private key (PEM).
    pub key: PathBuf,
    /// A revocation list (`ternctl certs revoke` writes one): certificates whose serial
    /// it names are refused on every call. Re-read when it changes; absent = none.
    #[serde(default)]
    pub revoked: Option<PathBuf>,
}

impl TlsConfig {
    /// The files of this node's identity (read at start and again on `SIGHUP`).
    pub fn files(&self) -> tern_tls::TlsFiles {
        tern_tls::TlsFiles { ca: self.ca.clone(), cert: self.cert.clone(), key: self.key.clone() }
    }
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum HypervisorConfig {
    /// A simulated server loaded from a layout file.
    Sim {
        layout: PathBuf,
        /// Simulated milliseconds per real millisecond.
        #[serde(default = "default_time_scale")]
        time_scale: u32,
    },
    /// This control domain's Logical Domains Manager (Oracle VM Server for SPARC):
    /// `ldm` is run for every read and change.
    Ldm(Box<LdmConfig>),
}

/// `[hypervisor] kind = "ldm"`: how to run `ldm`, and what it does not print.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LdmConfig {
    /// The `ldm` program (`/opt/SUNWldm/bin/ldm` on old releases).
    #[serde(default = "default_ldm_path")]
    pub ldm_path: PathBuf,
    /// The server's model, e.g. "SPARC M10-1" (`prtdiag`; LM-10 compares families).
    pub model: String,
    /// The CPU type, e.g. "SPARC64 X+" or "SPARC T4" (`psrinfo -pv`; LM-07).
    pub cpu: String,
    /// The CPU frequency in MHz, e.g. 3200 (LM-07 with generic guests).
    pub frequency_mhz: u32,
    /// The system firmware, e.g. "XCP2210" (`version` on the XSCF; LM-10).
    pub firmware: String,
    /// This control domain's OS, e.g. "Solaris 11.1.17.5.0" (`pkg info entire`; LM-11).
    pub os: String,
    /// Device path prefixes of virtual disk backends on storage every server sees
    /// (LM-03), e.g. ["/dev/dsk/c0t6000"]. ldm cannot tell.
    #[serde(default)]
    pub shared_storage: Vec<String>,
    /// Every virtual disk backend is on shared storage (LM-03).
    #[serde(default)]
    pub all_storage_shared: bool,
    /// CIDs of cores without a CPU activation licence (LM-05); ldm lists them as free.
    #[serde(default)]
    pub inactive_cores: Vec<u32>,
    /// The account `ldm migrate-domain` logs in as on the targets (OP-04, `user@target`).
    #[serde(default)]
    pub target_user: Option<String>,
    /// A file (mode 600) with that account's password on the targets (OP-03 `-p`),
    /// read at each migration.
    #[serde(default)]
    pub target_password_file: Option<PathBuf>,
    /// Where each migration's one-use password file is made (root-owned, not world-writable).
    #[serde(default = "default_password_dir")]
    pub password_dir: PathBuf,
    /// Deadline of each ldm command but `migrate-domain`.
    #[serde(default = "default_ldm_command_deadline_ms")]
    pub command_deadline_ms: u64,
    /// Deadline of a whole `migrate-domain` (LM-17: large guests take hours).
    #[serde(default = "default_ldm_migration_deadline_ms")]
    pub migration_deadline_ms: u64,
    /// How often a running migration's progress is read (OP-06).
    #[serde(default = "default_ldm_progress_interval_ms")]
    pub progress_interval_ms: u64,
}

fn default_ldm_path() -> PathBuf {
    PathBuf::from("/usr/sbin/ldm")
}
fn default_password_dir() -> PathBuf {
    PathBuf::from("/var/run/tern")
}
fn default_ldm_command_deadline_ms() -> u64 {
    tern_hypervisor::ldm::backend::COMMAND_DEADLINE.as_millis() as u64
}
fn default_ldm_migration_deadline_ms() -> u64 {
    tern_hypervisor::ldm::backend::MIGRATION_DEADLINE.as_millis() as u64
}
fn default_ldm_progress_interval_ms() -> u64 {
    tern_hypervisor::ldm::backend::PROGRESS_INTERVAL.as_millis() as u64
}

impl LdmConfig {
    /// The backend's options for the server named `host`; the error names the field.
    pub fn options(&self, host: &str) -> Result<tern_hypervisor::ldm::backend::LdmOptions, (&'static str, String)> {
        use tern_hypervisor::ldm::backend::LdmOptions;
        use tern_hypervisor::ldm::inventory::{ServerFacts, SharedStorage};
        use tern_model::{CpuFamily, CpuType, Firmware, OsVersion};
        let nonempty = |field: &'static str, v: &str, example: &str| {
            if v.trim().is_empty() { Err((field, format!("must not be empty, e.g. {example:?}"))) } else { Ok(()) }
        };
        nonempty("hypervisor.model", &self.model, "SPARC M10-1")?;
        nonempty("hypervisor.firmware", &self.firmware, "XCP2210")?;
        let family: CpuFamily = self.cpu.parse().map_err(|e| ("hypervisor.cpu", format!("{:?}: {e}", self.cpu)))?;
        if self.frequency_mhz == 0 || self.frequency_mhz > 100_000 {
            return Err(("hypervisor.frequency_mhz", format!("{} is not a CPU frequency in MHz", self.frequency_mhz)));
        }
        let os = OsVersion::parse(&self.os).map_err(|e| ("hypervisor.os", format!("{:?}: {e}", self.os)))?;
        if let Some(p) = self.shared_storage.iter().find(|p| !p.starts_with('/')) {
            return Err((
                "hypervisor.shared_storage",
                format!("{p:?} is not a device path prefix such as /dev/dsk/c0t6000"),
            ));
        }
        if self.shared_storage.len() > 256 {
            return Err(("hypervisor.shared_storage", format!("{} prefixes; at most 256", self.shared_storage.len())));
        }
        if self.inactive_cores.len() > 4096 {
            return Err(("hypervisor.inactive_cores", format!("{} cores; at most 4096", self.inactive_cores.len())));
        }
        let ms = |field: &'static str, v: u64| {
            if v == 0 {
                Err((field, "must be longer than 0".to_string()))
            } else {
                Ok(std::time::Duration::from_millis(v))
            }
        };
        let facts = ServerFacts {
            model: self.model.trim().to_string(),
            cpu: CpuType { family, frequency_mhz: self.frequency_mhz },
            firmware: Firmware(self.firmware.trim().to_string()),
            os,
        };
        let mut o = LdmOptions::new(host, facts);
        o.ldm_path = self.ldm_path.clone();
        o.command_deadline = ms("hypervisor.command_deadline_ms", self.command_deadline_ms)?;
        o.migration_deadline = ms("hypervisor.migration_deadline_ms", self.migration_deadline_ms)?;
        o.progress_interval = ms("hypervisor.progress_interval_ms", self.progress_interval_ms)?;
        o.password_dir = self.password_dir.clone();
        o.shared_storage = SharedStorage { all: self.all_storage_shared, device_prefixes: self.shared_storage.clone() };
        o.inactive_cids = self.inactive_cores.clone();
        o.target_user = self.target_user.clone();
        o.target_password_file = self.target_password_file.clone();
        o.validate().map_err(|e| ("hypervisor", e))?;
        Ok(o)
    }
}

/// HA when a control domain is lost (SPEC HA-*).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HaConfig {
    /// Each agent heartbeats the leader this often (HA-01; not through the Raft log).
    pub heartbeat_interval_ms: u64,
    /// A host silent this long is Suspect.
    pub suspect_after_ms: u64,
    /// A host silent this long is Lost (a new leader waits this long before it may
    /// declare any host lost). Its migrations are rolled back (HA-07).
    pub lost_after_ms: u64,
    /// What happens to a fenced host's guests: `restart` them on other hosts
    /// (HA-04), or `hand-off` to an external HA cluster's command (HA-06).
    pub mode: HaMode,
    /// HA-06: the command run with the fenced host and its guests as JSON on stdin.
    pub hand_off_command: Option<PathBuf>,
    pub hand_off_args: Vec<String>,
    pub hand_off_deadline_ms: u64,
    /// The lease of each restart's reservation (reserve, start from shared storage, commit).
    pub restart_lease_ms: u64,
    /// A failed fence is tried again after this, doubling up to `fence_retry_max_ms`.
    pub fence_retry_ms: u64,
    pub fence_retry_max_ms: u64,
    /// HA-03: an agent that has not reached the leader for this long applies its
    /// isolation response. 0 turns isolation off (then only a power fence or an
    /// admin's confirmation lets its guests restart elsewhere).
    pub isolation_timeout_ms: u64,
    /// HA-03: `stop-guests` (default) or `leave-running` (allowed only where this
    /// host has a power fence, which proves the server off before any restart).
    pub isolation_response: IsolationResponse,
    /// HA-08: a watchdog resets this control domain within this long once ternd stops
    /// (hangs, crashes, or is stopped), so the hypervisor stops the guests that are
    /// its slaves (`ldm set-domain master=primary GUEST`) when its failure-policy is
    /// `stop`. 0 (default): no watchdog is declared. tern cannot verify it; declare it
    /// only where one is set up. With an isolation timeout it lets a lost host's
    /// slaves restart elsewhere without a power fence (see `self_stop_margin_ms`).
    pub watchdog_timeout_ms: u64,
    /// HA-08: a lost host's slaves count stopped once it has been lost for the longer
    /// of `isolation_timeout_ms` and `watchdog_timeout_ms` plus this (time to stop
    /// guests, clocks that differ).
    pub self_stop_margin_ms: u64,
    /// HA-02: the power fence of each server (its XSCF/ILOM), in every agent's config
    /// since any agent may lead.
    pub fence: Vec<FenceConfig>,
}

/// See [`HaConfig::mode`].
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum HaMode {
    #[default]
    Restart,
    HandOff,
}

/// See [`HaConfig::isolation_response`].
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum IsolationResponse {
    #[default]
    StopGuests,
    LeaveRunning,
}

/// One server's power fence: a standard fence agent (`fence_ipmilan`) and its
/// service processor, spoken to with the fence-agent stdin protocol.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FenceConfig {
    /// The host (node name) this fence powers off.
    pub host: String,
    /// The fence agent's executable.
    #[serde(default = "default_fence_agent")]
    pub agent: PathBuf,
    /// The service processor's address.
    pub ip: String,
    #[serde(default)]
    pub ipport: Option<u16>,
    pub username: String,
    /// A file holding the password (first line); it must not be readable by group or others.
    pub password_file: PathBuf,
    /// IPMI v2.0, as XSCF and ILOM need.
    #[serde(default = "default_true")]
    pub lanplus: bool,
    #[serde(default)]
    pub cipher: Option<u8>,
    /// Deadline of one run of the agent.
    #[serde(default = "default_fence_deadline_ms")]
    pub deadline_ms: u64,
    /// Rounds of off-then-status per fence.
    #[serde(default = "default_fence_attempts")]
    pub attempts: u32,
}

fn default_fence_agent() -> PathBuf {
    PathBuf::from("/usr/sbin/fence_ipmilan")
}
fn default_true() -> bool {
    true
}
fn default_fence_deadline_ms() -> u64 {
    20_000
}
fn default_fence_attempts() -> u32 {
    2
}

impl Default for HaConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 1000,
            suspect_after_ms: 3000,
            lost_after_ms: 8000,
            mode: HaMode::Restart,
            hand_off_command: None,
            hand_off_args: vec![],
            hand_off_deadline_ms: 60_000,
            restart_lease_ms: 60_000,
            fence_retry_ms: 5_000,
            fence_retry_max_ms: 60_000,
            isolation_timeout_ms: 0,
            isolation_response: IsolationResponse::StopGuests,
            watchdog_timeout_ms: 0,
            self_stop_margin_ms: 5_000,
            fence: vec![],
        }
    }
}

impl HaConfig {
    /// The leader's failure detector's settings.
    pub fn detector(&self) -> tern_ha::DetectorConfig {
        tern_ha::DetectorConfig { suspect_after_ms: self.suspect_after_ms, lost_after_ms: self.lost_after_ms }
    }

    /// What this host declares to the cluster it does to its guests when cut off
    /// (HA-03, HA-08): an isolation timeout counts only with `stop-guests`.
    pub fn self_stop(&self) -> tern_raft_store::SelfStop {
        let isolation = match self.isolation_response {
            IsolationResponse::StopGuests => self.isolation_timeout_ms,
            IsolationResponse::LeaveRunning => 0,
        };
        tern_raft_store::SelfStop {
            isolation_timeout_ms: isolation,
            watchdog_timeout_ms: self.watchdog_timeout_ms,
            margin_ms: self.self_stop_margin_ms,
        }
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.heartbeat_interval_ms == 0 {
            return Err(("ha.heartbeat_interval_ms", "must be greater than 0".into()));
        }
        if self.suspect_after_ms <= 2 * self.heartbeat_interval_ms {
            return Err((
                "ha.suspect_after_ms",
                format!(
                    "{} must exceed twice ha.heartbeat_interval_ms ({}), or one late heartbeat makes a host suspect",
                    self.suspect_after_ms, self.heartbeat_interval_ms
                ),
            ));
        }
        self.detector().validate().map_err(|e| ("ha.lost_after_ms", e.to_string()))?;
        match (self.mode, &self.hand_off_command) {
            (HaMode::HandOff, None) => {
                return Err(("ha.hand_off_command", "mode = \"hand-off\" needs the command to hand off to".into()));
            }
            (HaMode::Restart, Some(c)) => {
                return Err((
                    "ha.hand_off_command",
                    format!("{} is set but mode is \"restart\"; set mode = \"hand-off\" or remove it", c.display()),
                ));
            }
            _ => {}
        }
        for (field, v) in [
            ("ha.hand_off_deadline_ms", self.hand_off_deadline_ms),
            ("ha.restart_lease_ms", self.restart_lease_ms),
            ("ha.fence_retry_ms", self.fence_retry_ms),
        ] {
            if v == 0 {
                return Err((field, "must be greater than 0".into()));
            }
        }
        if self.restart_lease_ms > tern_raft_store::limits::LEASE_MS_MAX {
            return Err((
                "ha.restart_lease_ms",
                format!(
                    "{} is above the longest lease, {} ms",
                    self.restart_lease_ms,
                    tern_raft_store::limits::LEASE_MS_MAX
                ),
            ));
        }
        for (field, v) in [
            ("ha.isolation_timeout_ms", self.isolation_timeout_ms),
            ("ha.watchdog_timeout_ms", self.watchdog_timeout_ms),
            ("ha.self_stop_margin_ms", self.self_stop_margin_ms),
        ] {
            if v > tern_raft_store::limits::SELF_STOP_MS_MAX {
                return Err((
                    field,
                    format!("{v} is above {} ms (one hour)", tern_raft_store::limits::SELF_STOP_MS_MAX),
                ));
            }
        }
        if self.fence_retry_max_ms < self.fence_retry_ms {
            return Err((
                "ha.fence_retry_max_ms",
                format!("must be at least ha.fence_retry_ms ({})", self.fence_retry_ms),
            ));
        }
        Ok(())
    }

    /// The checks that need the node's name too.
    fn validate_for(&self, name: &str) -> Result<(), (&'static str, String)> {
        self.validate()?;
        if self.isolation_response == IsolationResponse::LeaveRunning && !self.fence.iter().any(|f| f.host == name) {
            return Err((
                "ha.isolation_response",
                format!(
                    "leave-running needs a power fence for this host ({name}) in ha.fence: without one, an isolated host's guests could run twice"
                ),
            ));
        }
        if self.isolation_timeout_ms != 0 && self.isolation_timeout_ms <= self.heartbeat_interval_ms * 2 {
            return Err((
                "ha.isolation_timeout_ms",
                format!(
                    "{} must exceed twice ha.heartbeat_interval_ms ({}), or 0 to turn isolation off",
                    self.isolation_timeout_ms, self.heartbeat_interval_ms
                ),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.fence {
            if !seen.insert(f.host.as_str()) {
                return Err(("ha.fence.host", format!("{} has two fences; give each host one", f.host)));
            }
            if f.host.is_empty() || f.ip.is_empty() || f.username.is_empty() {
                return Err(("ha.fence", format!("the fence of {:?} needs host, ip and username", f.host)));
            }
            if f.deadline_ms == 0 || f.attempts == 0 {
                return Err((
                    "ha.fence.deadline_ms",
                    format!("the fence of {}: deadline_ms and attempts must be greater than 0", f.host),
                ));
            }
            if [&f.ip, &f.username].iter().any(|v| v.contains('\n') || v.contains('=')) {
                return Err((
                    "ha.fence.ip",
                    format!("the fence of {}: ip and username may not hold newlines or '='", f.host),
                ));
            }
        }
        Ok(())
    }

    /// The fence of `host`'s server, its password read from its file. Checked when
    /// the agent starts, so a bad file is reported before any host is lost.
    pub fn power_fences(&self) -> Result<Vec<(String, tern_ha::PowerFence)>, (&'static str, String)> {
        self.fence
            .iter()
            .map(|f| {
                let password = read_secret(&f.password_file)
                    .map_err(|e| ("ha.fence.password_file", format!("the fence of {}: {e}", f.host)))?;
                let fence = tern_ha::PowerFence {
                    agent: f.agent.clone(),
                    ip: f.ip.clone(),
                    ipport: f.ipport,
                    username: f.username.clone(),
                    password,
                    lanplus: f.lanplus,
                    cipher: f.cipher,
                    deadline_ms: f.deadline_ms,
                    attempts: f.attempts,
                };
                Ok((f.host.clone(), fence))
            })
            .collect()
    }
}

/// The first line of a secret file that only its owner may read.
fn read_secret(path: &Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(format!("{} is readable by group or others; chmod 600 it", path.display()));
    }
    if meta.len() > 4096 {
        return Err(format!("{} is over 4096 bytes; it should hold one password", path.display()));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or("").to_string();
    if line.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(line)
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// How often the Raft leader sends heartbeats; openraft 0.9 also gives each
    /// AppendEntries this long to answer, so it must cover a loaded follower's append
    /// and fsync.
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader starts an election after the leader's lease
    /// (openraft 0.9: `election_timeout_max_ms`) plus a random time between the two
    /// bounds: with the defaults, 1.25 to 1.4 s after the last heartbeat of a dead
    /// leader (a candidate rejected for a shorter log waits 2 x max more). The
    /// benchmark (B2, up to 1,000 clients) elects no leader with them.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Deadline of one RPC to a peer.
    pub rpc_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    /// A voter unreachable this long is replaced by a caught-up learner.
    pub voter_replace_after_ms: u64,
    /// How often the hypervisor's inventory is read.
    pub inventory_poll_ms: u64,
    /// A changed inventory must hold still this long before it is reported.
    pub inventory_debounce_ms: u64,
    /// SIGTERM: everything stops within this.
    pub shutdown_deadline_ms: u64,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 250,
            election_timeout_min_ms: 550,
            election_timeout_max_ms: 700,
            rpc_timeout_ms: 3000,
            connect_timeout_ms: 2000,
            voter_replace_after_ms: 10_000,
            inventory_poll_ms: 1000,
            inventory_debounce_ms: 300,
            shutdown_deadline_ms: 10_000,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// One JSON object per log line instead of text.
    #[serde(default)]
    pub json: bool,
}

/// `[telemetry]`: OpenTelemetry traces (issue 16), sent over OTLP/gRPC to a collector
/// (an OpenTelemetry Collector, Jaeger, Tempo). Off unless `otlp_endpoint` is set.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Where spans are sent: `http://host:port` of an OTLP/gRPC receiver (4317 is
    /// OTLP/gRPC's port). Plain HTTP/2: run the collector on this control domain or
    /// on a trusted network. Absent (the default): no trace is exported.
    pub otlp_endpoint: Option<String>,
    /// The share of traces kept, 0.0 to 1.0: a trace that starts here (a migration, a
    /// call from ternctl) is kept with this probability; a call from another agent
    /// follows its caller's decision (parent-based sampling), so a trace is kept or
    /// dropped whole.
    pub sample_ratio: f64,
    /// The `service.name` of this agent's spans (`host.name` is the agent's `name`).
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { otlp_endpoint: None, sample_ratio: 1.0, service_name: "ternd".into() }
    }
}

impl TelemetryConfig {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err((
                "telemetry.sample_ratio",
                format!("{} must be between 0.0 (keep no trace) and 1.0 (keep every trace)", self.sample_ratio),
            ));
        }
        let name = &self.service_name;
        if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
            return Err(("telemetry.service_name", format!("{name:?} must be 1-255 printable characters")));
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            check_otlp_endpoint(endpoint).map_err(|why| ("telemetry.otlp_endpoint", format!("{endpoint:?} {why}")))?;
        }
        Ok(())
    }
}

/// Why `endpoint` is not `http://host:port` (with an optional trailing `/`).
fn check_otlp_endpoint(endpoint: &str) -> Result<(), String> {
    let example = "e.g. \"http://127.0.0.1:4317\"";
    let uri: tonic::codegen::http::Uri =
        endpoint.parse().map_err(|e| format!("is not a URL ({e}); give http://host:port, {example}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "asks for TLS, which ternd does not speak to a collector; give http:// to a collector on this \
                 host or a trusted network, {example}"
            ));
        }
        _ => return Err(format!("must start with http://, {example}")),
    }
    let authority = uri.authority().ok_or_else(|| format!("names no host; {example}"))?;
    if authority.host().is_empty() || authority.port_u16().is_none_or(|p| p == 0) {
        return Err(format!("must name a host and a non-zero port (4317 is OTLP/gRPC's), {example}"));
    }
    if authority.as_str().contains('@') || !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(format!("must be only http://host:port (no user, path or query), {example}"));
    }
    Ok(())
}

fn default_voters() -> u32 {
    3
}
fn default_time_scale() -> u32 {
    1
}

/// A configuration that cannot be used, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {field}: {message}")]
    Invalid { path: String, field: &'static str, message: String },
}

impl Config {
    /// Reads, parses and validates `path`. Relative paths inside are taken relative to
    /// the file's folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let p = path.display().to_string();
        let len = std::fs::metadata(path).map_err(|source| ConfigError::Io { path: p.clone(), source })?.len();
        if len > CONFIG_BYTES_MAX {
            return Err(ConfigError::Parse { path: p, message: format!("{len} bytes is too large for a config") });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io { path: p.clone(), source })?;
        let mut config: Config =
            toml::from_str(&text).map_err(|e| ConfigError::Parse { path: p.clone(), message: e.to_string() })?;
        if let Some(base) = path.parent() {
            config.resolve_relative(base);
        }
        config.validate().map_err(|(field, message)| ConfigError::Invalid { path: p, field, message })?;
        Ok(config)
    }

    fn resolve_relative(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.data_dir);
        fix(&mut self.tls.ca);
        fix(&mut self.tls.cert);
        fix(&mut self.tls.key);
        if let Some(r) = &mut self.tls.revoked {
            fix(r);
        }
        match &mut self.hypervisor {
            HypervisorConfig::Sim { layout, .. } => fix(layout),
            HypervisorConfig::Ldm(l) => {
                fix(&mut l.ldm_path);
                fix(&mut l.password_dir);
                if let Some(f) = &mut l.target_password_file {
                    fix(f);
                }
            }
        }
        for f in &mut self.ha.fence {
            fix(&mut f.password_file);
        }
        if let Some(c) = &mut self.ha.hand_off_command {
            fix(c);
        }
    }

    /// Checks every field; the error names the first field at fault.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let valid_name = |s: &str| {
            !s.is_empty()
                && s.len() <= 63
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        };
        if !valid_name(&self.name) {
            return Err(("name", format!("{:?} must be 1-63 letters, digits, '-', '_' or '.'", self.name)));
        }
        if !(1..=7).contains(&self.voters) {
            return Err(("voters", format!("{} must be between 1 and 7 (3 or 5 is usual)", self.voters)));
        }
        for j in &self.join {
            if j.rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok()).is_none() {
                return Err(("join", format!("{j:?} is not host:port")));
            }
        }
        if let Some(m) = self.metrics_addr
            && !m.ip().is_loopback()
            && !self.metrics_remote
        {
            return Err((
                "metrics_addr",
                format!(
                    "{m} is not a loopback address and /metrics has no authentication; bind 127.0.0.1, or set \
                     metrics_remote = true behind a firewall or a TLS proxy"
                ),
            ));
        }
        if let Some(a) = &self.advertise_addr
            && a.rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok()).filter(|p| *p != 0).is_none()
        {
            return Err(("advertise_addr", format!("{a:?} is not host:port with a non-zero port")));
        }
        match &self.hypervisor {
            HypervisorConfig::Sim { time_scale, .. } if *time_scale == 0 || *time_scale > 100_000 => {
                return Err(("hypervisor.time_scale", format!("{time_scale} must be between 1 and 100000")));
            }
            HypervisorConfig::Sim { .. } => {}
            HypervisorConfig::Ldm(l) => {
                l.options(&self.name)?;
            }
        }
        self.ha.validate_for(&self.name)?;
        self.telemetry.validate()?;
        if !(100..=3_600_000).contains(&self.rebalance.interval_ms) {
            return Err((
                "rebalance.interval_ms",
                format!("{} must be between 100 and 3600000 (one hour)", self.rebalance.interval_ms),
            ));
        }
        let t = &self.timeouts;
        let positive = [
            ("timeouts.heartbeat_interval_ms", t.heartbeat_interval_ms),
            ("timeouts.rpc_timeout_ms", t.rpc_timeout_ms),
            ("timeouts.connect_timeout_ms", t.connect_timeout_ms),
            ("timeouts.inventory_poll_ms", t.inventory_poll_ms),
            ("timeouts.shutdown_deadline_ms", t.shutdown_deadline_ms),
            ("timeouts.voter_replace_after_ms", t.voter_replace_after_ms),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err((field, "must be greater than 0".into()));
            }
        }
        if t.election_timeout_min_ms <= t.heartbeat_interval_ms * 2 {
            return Err((
                "timeouts.election_timeout_min_ms",
                format!(
                    "{} must exceed twice heartbeat_interval_ms ({})",
                    t.election_timeout_min_ms, t.heartbeat_interval_ms
                ),
            ));
        }
        if t.election_timeout_max_ms <= t.election_timeout_min_ms {
            return Err((
                "timeouts.election_timeout_max_ms",
                format!(
                    "{} must exceed election_timeout_min_ms ({})",
                    t.election_timeout_max_ms, t.election_timeout_min_ms
                ),
            ));
        }
        if t.voter_replace_after_ms <= t.election_timeout_max_ms {
            return Err((
                "timeouts.voter_replace_after_ms",
                format!(
                    "{} must exceed election_timeout_max_ms ({})",
                    t.voter_replace_after_ms, t.election_timeout_max_ms
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "m10-1-1"
listen_addr = "127.0.0.1:0"
data_dir = "data"
[tls]
ca = "certs/ca.pem"
cert = "certs/m10-1-1.pem"
key = "certs/m10-1-1-key.pem"
[hypervisor]
kind = "sim"
layout = "m10-1-1.toml"
"#;

    const FENCE: &str = "[[ha.fence]]\nhost = \"m10-1-1\"\nip = \"10.0.0.5\"\nusername = \"admin\"\n\
password_file = \"bmc.pass\"\nattempts = 2\n";

    fn load(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ternd.toml");
        std::fs::write(&p, text).unwrap();
        Config::load(&p)
    }

    #[test]
    fn minimal_config_gets_defaults_and_resolves_paths() {
        // Goal: the smallest config works: 3 voters, default timeouts, paths beside the file.
        let c = load(GOOD).unwrap();
        assert_eq!(c.voters, 3);
        assert!(c.data_dir.is_absolute());
        assert_eq!(c.timeouts, Timeouts::default());
        assert_eq!(c.ha, HaConfig::default());
    }

    #[test]
    fn unknown_field_is_refused_by_name() {
        // Goal: a typo is an error naming the field, not silently ignored.
        let err = load(&GOOD.replace("data_dir", "datadir")).unwrap_err().to_string();
        assert!(err.contains("datadir"), "{err}");
    }

    #[test]
    fn invalid_values_name_their_field() {
        // Goal: validate() says which field is wrong and why.
        let cases = [
            (GOOD.replace("\"m10-1-1\"\nlisten", "\"bad name\"\nlisten"), "name"),
            (format!("voters = 0\n{GOOD}"), "voters"),
            (format!("join = [\"nohostport\"]\n{GOOD}"), "join"),
            (format!("metrics_addr = \"0.0.0.0:9400\"\n{GOOD}"), "metrics_addr"),
            (format!("{GOOD}time_scale = 0\n"), "hypervisor.time_scale"),
            (format!("{GOOD}[timeouts]\nelection_timeout_min_ms = 100\n"), "timeouts.election_timeout_min_ms"),
            (format!("{GOOD}[ha]\nheartbeat_interval_ms = 0\n"), "ha.heartbeat_interval_ms"),
            (format!("{GOOD}[ha]\nsuspect_after_ms = 1500\n"), "ha.suspect_after_ms"),
            (format!("{GOOD}[ha]\nlost_after_ms = 3000\n"), "ha.lost_after_ms"),
            (format!("{GOOD}[ha]\nmode = \"hand-off\"\n"), "ha.hand_off_command"),
            (format!("{GOOD}[ha]\nhand_off_command = \"/bin/true\"\n"), "ha.hand_off_command"),
            (format!("{GOOD}[ha]\nrestart_lease_ms = 0\n"), "ha.restart_lease_ms"),
            (format!("{GOOD}[ha]\nrestart_lease_ms = 999999999\n"), "ha.restart_lease_ms"),
            (format!("{GOOD}[ha]\nfence_retry_max_ms = 10\n"), "ha.fence_retry_max_ms"),
            (format!("{GOOD}[ha]\nisolation_timeout_ms = 1500\n"), "ha.isolation_timeout_ms"),
            (format!("{GOOD}[ha]\nisolation_response = \"leave-running\"\n"), "ha.isolation_response"),
            (format!("{GOOD}{FENCE}{FENCE}"), "ha.fence.host"),
            (format!("{GOOD}{}", FENCE.replace("attempts = 2", "attempts = 0")), "ha.fence.deadline_ms"),
            (format!("{GOOD}{}", FENCE.replace("\"admin\"", "\"ad=min\"")), "ha.fence.ip"),
            (format!("{GOOD}[telemetry]\nsample_ratio = 1.5\n"), "telemetry.sample_ratio"),
            (format!("{GOOD}[telemetry]\nsample_ratio = -0.1\n"), "telemetry.sample_ratio"),
            (format!("{GOOD}[telemetry]\nsample_ratio = nan\n"), "telemetry.sample_ratio"),
            (format!("{GOOD}[telemetry]\nservice_name = \"\"\n"), "telemetry.service_name"),
            (format!("{GOOD}[telemetry]\notlp_endpoint = \"localhost:4317\"\n"), "telemetry.otlp_endpoint"),
        ];
        for (text, field) in cases {
            let err = load(&text).unwrap_err();
            assert!(matches!(&err, ConfigError::Invalid { field: f, .. } if *f == field), "{field}: {err}");
        }
    }

    const LDM: &str = "[hypervisor]\nkind = \"ldm\"\nmodel = \"SPARC M10-1\"\ncpu = \"SPARC64 X+\"\n\
frequency_mhz = 3200\nfirmware = \"XCP2210\"\nos = \"Solaris 11.1.17.5.0\"\n";

    fn with_ldm(table: &str) -> String {
        let sim = GOOD.find("[hypervisor]").unwrap();
        format!("{}{table}", &GOOD[..sim])
    }

    #[test]
    fn an_ldm_hypervisor_takes_what_ldm_does_not_print_with_defaults_for_the_rest() {
        // Goal: kind = "ldm" needs model, CPU, frequency, firmware and OS; ldm_path, deadlines and password_dir default.
        let c = load(&with_ldm(&format!("{LDM}shared_storage = [\"/dev/dsk/c0t6000\"]\ninactive_cores = [14, 15]\n")))
            .unwrap();
        let HypervisorConfig::Ldm(l) = &c.hypervisor else { panic!("{:?}", c.hypervisor) };
        let o = l.options(&c.name).unwrap();
        assert_eq!(o.ldm_path, PathBuf::from("/usr/sbin/ldm"));
        assert_eq!(o.facts.cpu.frequency_mhz, 3200);
        assert!(
            o.shared_storage.is_shared("/dev/dsk/c0t600000E00D28d0s2")
                && !o.shared_storage.is_shared("/dev/dsk/c0t0d0s2")
        );
        assert_eq!(o.inactive_cids, vec![14, 15]);
        assert_eq!(o.migration_deadline, tern_hypervisor::ldm::backend::MIGRATION_DEADLINE);
        assert_eq!((o.target_user, o.target_password_file), (None, None));
    }

    #[test]
    fn ldm_settings_that_cannot_be_right_name_their_field() {
        // Goal: every ldm fact and limit is checked at load, the error naming the field.
        let cases = [
            (LDM.replace("SPARC64 X+", "Xeon"), "hypervisor.cpu"),
            (LDM.replace("3200", "0"), "hypervisor.frequency_mhz"),
            (LDM.replace("Solaris 11.1.17.5.0", "Linux"), "hypervisor.os"),
            (LDM.replace("\"SPARC M10-1\"", "\" \""), "hypervisor.model"),
            (LDM.replace("\"XCP2210\"", "\"\""), "hypervisor.firmware"),
            (format!("{LDM}shared_storage = [\"c0t6000\"]\n"), "hypervisor.shared_storage"),
            (format!("{LDM}command_deadline_ms = 0\n"), "hypervisor.command_deadline_ms"),
            (format!("{LDM}target_user = \"ro ot\"\n"), "hypervisor"),
        ];
        for (table, field) in cases {
            let err = load(&with_ldm(&table)).unwrap_err();
            assert!(matches!(&err, ConfigError::Invalid { field: f, .. } if *f == field), "{field}: {err}");
        }
        let err = load(&with_ldm(&format!("{LDM}layout = \"x.toml\"\n"))).unwrap_err();
        assert!(err.to_string().contains("unknown field `layout`"), "{err}");
    }

    #[test]
    fn telemetry_is_off_by_default_and_takes_an_http_endpoint_and_a_ratio() {
        // Goal: issue 16: no [telemetry] exports nothing, keeps every trace once on, and names itself "ternd".
        let c = load(GOOD).unwrap();
        assert_eq!(c.telemetry, TelemetryConfig::default());
        assert_eq!((c.telemetry.otlp_endpoint, c.telemetry.sample_ratio), (None, 1.0));
        assert_eq!(c.telemetry.service_name, "ternd");
        let text = format!(
            "{GOOD}[telemetry]\notlp_endpoint = \"http://127.0.0.1:4317\"\nsample_ratio = 0.25\nservice_name = \"tern-lab\"\n"
        );
        let t = load(&text).unwrap().telemetry;
        assert_eq!(t.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
        assert_eq!((t.sample_ratio, t.service_name.as_str()), (0.25, "tern-lab"));
        for ok in ["http://collector.example:4317", "http://[::1]:4317/", "http://10.0.0.9:4317"] {
            assert_eq!(check_otlp_endpoint(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn a_bad_sample_ratio_or_endpoint_is_refused_with_what_to_write_instead() {
        // Goal: ternd refuses to start on a ratio outside 0..1 or an endpoint that is not http://host:port, and says why.
        let message = |text: String| match load(&text).unwrap_err() {
            ConfigError::Invalid { field, message, .. } => format!("{field}: {message}"),
            other => panic!("not refused by field: {other}"),
        };
        let ratio = message(format!("{GOOD}[telemetry]\nsample_ratio = 2.0\n"));
        assert_eq!(ratio, "telemetry.sample_ratio: 2 must be between 0.0 (keep no trace) and 1.0 (keep every trace)");
        let cases = [
            ("localhost:4317", "must start with http://"),
            ("https://collector:4317", "asks for TLS"),
            ("http://collector", "must name a host and a non-zero port"),
            ("http://collector:0", "must name a host and a non-zero port"),
            ("http://collector:4317/v1/traces", "no user, path or query"),
            ("http://a b:4317", "is not a URL"),
        ];
        for (endpoint, why) in cases {
            let got = message(format!("{GOOD}[telemetry]\notlp_endpoint = \"{endpoint}\"\n"));
            assert!(got.starts_with(&format!("telemetry.otlp_endpoint: {endpoint:?} ")), "{got}");
            assert!(got.contains(why) && got.contains("http://127.0.0.1:4317"), "{endpoint}: {got}");
        }
        let typo = load(&format!("{GOOD}[telemetry]\nendpoint = \"http://127.0.0.1:4317\"\n")).unwrap_err();
        assert!(typo.to_string().contains("unknown field `endpoint`"), "{typo}");
    }

    #[test]
    fn a_fence_reads_its_password_file_and_refuses_one_others_can_read() {
        // Goal: HA-02 settings: a fence's password comes from a mode-600 file beside the config; 644 is refused by field.
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ternd.toml");
        std::fs::write(&p, format!("{GOOD}{FENCE}")).unwrap();
        let pass = dir.path().join("bmc.pass");
        std::fs::write(&pass, "s3cret\n").unwrap();
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = Config::load(&p).unwrap();
        let fences = c.ha.power_fences().unwrap();
        assert_eq!(fences.len(), 1);
        let (host, f) = &fences[0];
        assert_eq!((host.as_str(), f.password.as_str(), f.lanplus), ("m10-1-1", "s3cret", true));
        assert_eq!(f.agent, PathBuf::from("/usr/sbin/fence_ipmilan"));
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (field, message) = c.ha.power_fences().unwrap_err();
        assert_eq!(field, "ha.fence.password_file");
        assert!(message.contains("chmod 600"), "{message}");
    }

    #[test]
    fn bootstrap_new_founds_once_and_existing_never_founds() {
        // Goal: etcd's initial-cluster-state, explicit: each setting against an empty and a used data dir.
        use Bootstrap::{Existing, New};
        assert_eq!(Bootstrap::decide(Some(New), true, false), Ok(true));
        assert_eq!(Bootstrap::decide(Some(New), false, false), Ok(true));
        let used = Bootstrap::decide(Some(New), true, true).unwrap_err();
        assert!(used.contains("already holds a cluster") && used.contains("bootstrap = \"existing\""), "{used}");
        let alone = Bootstrap::decide(Some(Existing), true, false).unwrap_err();
        assert!(alone.contains("nobody to join"), "{alone}");
        assert_eq!(Bootstrap::decide(Some(Existing), false, false), Ok(false));
        assert_eq!(Bootstrap::decide(Some(Existing), true, true), Ok(false));
        // Unset: as before the setting existed.
        assert_eq!(Bootstrap::decide(None, true, false), Ok(true));
        assert_eq!(Bootstrap::decide(None, false, false), Ok(false));
        assert_eq!(Bootstrap::decide(None, true, true), Ok(false));
        let c = load(&format!("bootstrap = \"existing\"\njoin = [\"10.0.0.2:7400\"]\n{GOOD}")).unwrap();
        assert_eq!(c.bootstrap, Some(Existing));
        let bad = load(&format!("bootstrap = \"old\"\n{GOOD}")).unwrap_err().to_string();
        assert!(bad.contains("bootstrap") || bad.contains("new"), "{bad}");
    }
}
