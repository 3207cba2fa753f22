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
    after_help = "Configuration (TOML; unknown fields are refused):
  name = \"m10-1-1\"              node name: the server's host name
  listen_addr = \"0.0.0.0:7400\"  gRPC for peers and ternctl (port 0: any free port)
  advertise_addr = \"host:7400\"  how peers reach this agent (default: the bound address)
  data_dir = \"/var/tern\"        Raft log, state machine, sim state, node-id, ternd.addr
  join = [\"host:7400\"]          members to join through; empty: start a new cluster
  bootstrap = \"new\" | \"existing\" new: found the cluster (refused once the data dir holds
                                 one); existing: never found one (refused with an empty join
                                 and data dir); unset: found one iff join is empty
  voters = 3                     voters kept; other members are learners
  metrics_addr = \"127.0.0.1:9400\" Prometheus /metrics (optional; plain HTTP, so loopback
                                 unless metrics_remote = true)
  [tls] ca, cert, key             PEM files from `ternctl certs` (key mode 600; the
                                 certificate must name this node); revoked = \"FILE\"
                                 serials refused on every call, re-read when it changes
  [hypervisor] kind = \"sim\", layout = \"m10-1-1.toml\", time_scale = 1   (simulated server)
  [hypervisor] kind = \"ldm\", model = \"SPARC M10-1\", cpu = \"SPARC64 X+\",
               frequency_mhz = 3200, firmware = \"XCP2210\", os = \"Solaris 11.3\",
               shared_storage = [\"/dev/dsk/c0t6000\"], inactive_cores = [],
               target_user = \"tern\", target_password_file = \"/etc/tern/target.password\"
               (this control domain's ldm; ldm_path = \"/usr/sbin/ldm\")
  [timeouts] heartbeat_interval_ms, election_timeout_min_ms, election_timeout_max_ms,
             rpc_timeout_ms, connect_timeout_ms, voter_replace_after_ms,
             inventory_poll_ms, inventory_debounce_ms, shutdown_deadline_ms
  [ha] heartbeat_interval_ms = 1000, suspect_after_ms = 3000, lost_after_ms = 8000,
       mode = \"restart\" | \"hand-off\" (with hand_off_command, hand_off_args,
       hand_off_deadline_ms), restart_lease_ms, fence_retry_ms, fence_retry_max_ms,
       isolation_timeout_ms = 0 (off), isolation_response = \"stop-guests\" | \"leave-running\"
       watchdog_timeout_ms = 0 (none declared), self_stop_margin_ms = 5000: with an
       isolation timeout and a watchdog, a lost host's guests that are slaves of its
       primary with failure-policy=stop restart without a fence (HA-08)
  [[ha.fence]] host, ip, ipport, username, password_file (mode 600), lanplus = true,
       cipher, agent = \"/usr/sbin/fence_ipmilan\", deadline_ms = 20000, attempts = 2
       (one per server; the same [ha] on every agent, since any agent may lead)
  [log] json = false\n
Signals: SIGTERM or Ctrl-C stop in order (within shutdown_deadline_ms); SIGHUP reads
[tls] ca, cert and key again and presents them on new connections (a renewed
certificate without a restart; files that do not load are refused, the log says why)\n
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
