//! ternd's command line. It lives here, not in the agent, so that `ternctl man` can
//! write ternd's man page: ternctl does not link the agent (nor RocksDB).
//! `agent/src/bin/ternd.rs` parses it and acts on it.

use clap::Parser;
use std::path::PathBuf;

/// The tern agent. Runs on every control domain: reads the server through its
/// hypervisor backend, joins the Raft group of agents, serves gRPC over mutual TLS.
#[derive(Parser, Debug)]
#[command(
    name = "ternd",
    version = crate::LONG_VERSION,
    after_help = "Configuration (TOML; unknown fields are refused):\n\
  name = \"m10-1-1\"              node name: the server's host name\n\
  listen_addr = \"0.0.0.0:7400\"  gRPC for peers and ternctl (port 0: any free port)\n\
  advertise_addr = \"host:7400\"  how peers reach this agent (default: the bound address)\n\
  data_dir = \"/var/tern\"        Raft log, state machine, sim state, node-id, ternd.addr\n\
  join = [\"host:7400\"]          members to join through; empty: start a new cluster\n\
  bootstrap = \"new\" | \"existing\" new: found the cluster (refused once the data dir holds\n\
                                 one); existing: never found one (refused with an empty join\n\
                                 and data dir); unset: found one iff join is empty\n\
  voters = 3                     voters kept; other members are learners\n\
  metrics_addr = \"127.0.0.1:9400\" Prometheus /metrics (optional; plain HTTP, so loopback\n\
                                 unless metrics_remote = true)\n\
  [tls] ca, cert, key             PEM files from `ternctl certs`\n\
  [hypervisor] kind = \"sim\", layout = \"m10-1-1.toml\", time_scale = 1   (simulated server)\n\
  [hypervisor] kind = \"ldm\", model = \"SPARC M10-1\", cpu = \"SPARC64 X+\",\n\
               frequency_mhz = 3200, firmware = \"XCP2210\", os = \"Solaris 11.3\",\n\
               shared_storage = [\"/dev/dsk/c0t6000\"], inactive_cores = [],\n\
               target_user = \"tern\", target_password_file = \"/etc/tern/target.password\"\n\
               (this control domain's ldm; ldm_path = \"/usr/sbin/ldm\")\n\
  [timeouts] heartbeat_interval_ms, election_timeout_min_ms, election_timeout_max_ms,\n\
             rpc_timeout_ms, connect_timeout_ms, voter_replace_after_ms,\n\
             inventory_poll_ms, inventory_debounce_ms, shutdown_deadline_ms\n\
  [ha] heartbeat_interval_ms = 1000, suspect_after_ms = 3000, lost_after_ms = 8000,\n\
       mode = \"restart\" | \"hand-off\" (with hand_off_command, hand_off_args,\n\
       hand_off_deadline_ms), restart_lease_ms, fence_retry_ms, fence_retry_max_ms,\n\
       isolation_timeout_ms = 0 (off), isolation_response = \"stop-guests\" | \"leave-running\"\n\
       watchdog_timeout_ms = 0 (none declared), self_stop_margin_ms = 5000: with an\n\
       isolation timeout and a watchdog, a lost host's guests that are slaves of its\n\
       primary with failure-policy=stop restart without a fence (HA-08)\n\
  [[ha.fence]] host, ip, ipport, username, password_file (mode 600), lanplus = true,\n\
       cipher, agent = \"/usr/sbin/fence_ipmilan\", deadline_ms = 20000, attempts = 2\n\
       (one per server; the same [ha] on every agent, since any agent may lead)\n\
  [log] json = false\n\n\
Logging: RUST_LOG filters (default info), e.g. RUST_LOG=tern_agent=debug,openraft=warn"
)]
pub struct Args {
    /// The configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Check the configuration, read the hypervisor once (with `kind = "ldm"`: `ldm -V`
    /// and the inventory the agent would report; changes nothing) and exit: 0 valid,
    /// 2 a configuration error, 1 a hypervisor that does not answer.
    #[arg(long)]
    pub check: bool,
    /// Write the snapshot FILE (`ternctl cluster snapshot save`) into the data directory,
    /// which must hold no cluster, as a new cluster with this agent its one voter; then
    /// exit. Start ternd as usual afterwards; the other members join it with empty data
    /// directories.
    #[arg(long, value_name = "FILE", conflicts_with = "check")]
    pub restore: Option<PathBuf>,
}
