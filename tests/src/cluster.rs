//! A cluster of real `ternd` processes on loopback for end-to-end tests: certificates
//! and configs in a temp dir, OS-chosen ports, waits on conditions with deadlines.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tern_proto::v1 as pb;
use tonic::transport::{Channel, Endpoint};

/// Longest any condition is waited for.
pub const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// The `[timeouts]` of test agents: short, so that tests fail over and settle fast.
const TEST_TIMEOUTS: &str = "heartbeat_interval_ms = 100\nelection_timeout_min_ms = 600\nelection_timeout_max_ms = 1200\n\
rpc_timeout_ms = 1000\nconnect_timeout_ms = 500\nvoter_replace_after_ms = 3000\ninventory_poll_ms = 200\n\
inventory_debounce_ms = 50\nshutdown_deadline_ms = 5000\n";

pub const LAYOUTS: [&str; 5] = ["m10-1-1", "m10-1-2", "m10-1-3", "m10-1-fragmented", "t4-1"];

pub fn layout(name: &str) -> PathBuf {
    manifest_dir().join("../deploy/layouts").join(format!("{name}.toml"))
}

pub struct Agent {
    pub name: String,
    pub dir: PathBuf,
    pub child: Option<Child>,
    pub addr: Option<String>,
}

pub struct Cluster {
    pub tmp: tempfile::TempDir,
    pub certs: PathBuf,
    pub agents: Vec<Agent>,
    /// Simulated ms per real ms for agents added from now on.
    pub time_scale: u32,
    /// TOML appended to the config of agents added from now on (e.g. an `[ha]` table).
    pub extra_config: String,
    /// The body of the `[timeouts]` table of agents added from now on; `None`: the
    /// short test timeouts below (`Some("")`: ternd's defaults, as the benchmarks use).
    pub timeouts: Option<String>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for a in &mut self.agents {
            if let Some(mut c) = a.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

impl Default for Cluster {
    fn default() -> Self {
        Self::new()
    }
}

impl Cluster {
    /// An empty cluster: a fresh CA and a `ternctl` client certificate in a temp dir.
    pub fn new() -> Self {
        tern_tls::install_crypto_provider();
        let tmp = tempfile::tempdir().unwrap();
        let certs = tmp.path().join("certs");
        tern_tls::init_ca(&certs, "test").unwrap();
        let admin = tern_tls::Role::User { profiles: vec!["system-administrator".into()] };
        tern_tls::issue(&certs, "ternctl", &admin, None).unwrap();
        Self { tmp, certs, agents: Vec::new(), time_scale: 50, extra_config: String::new(), timeouts: None }
    }

    /// Writes the config of agent `name` running layout `layout`, joining `join`.
    pub fn add(&mut self, name: &str, layout_name: &str, join: &[String]) -> usize {
        self.add_layout(name, &layout(layout_name), join)
    }

    /// Like [`Cluster::add`] with a layout file anywhere.
    pub fn add_layout(&mut self, name: &str, layout_path: &Path, join: &[String]) -> usize {
        let hypervisor = format!(
            "[hypervisor]\nkind = \"sim\"\nlayout = \"{l}\"\ntime_scale = {ts}\n",
            l = layout_path.display(),
            ts = self.time_scale
        );
        self.add_with_hypervisor(name, &hypervisor, join)
    }

    /// Like [`Cluster::add`] with `hypervisor` as the config's whole `[hypervisor]`
    /// table (e.g. `kind = "ldm"` on a fake ldm).
    pub fn add_with_hypervisor(&mut self, name: &str, hypervisor: &str, join: &[String]) -> usize {
        tern_tls::issue(&self.certs, name, &tern_tls::Role::Node { sans: vec![], loopback: true }, None).unwrap();
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let join = join.iter().map(|j| format!("\"{j}\"")).collect::<Vec<_>>().join(", ");
        let config = format!(
            "name = \"{name}\"\nlisten_addr = \"127.0.0.1:0\"\nmetrics_addr = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
join = [{join}]\nvoters = 3\n[tls]\nca = \"{c}/ca.pem\"\ncert = \"{c}/{name}.pem\"\nkey = \"{c}/{name}-key.pem\"\nrevoked = \"{c}/revoked.txt\"\n\
{hypervisor}\
[timeouts]\n{timeouts}{extra}",
            c = self.certs.display(),
            timeouts = self.timeouts.as_deref().unwrap_or(TEST_TIMEOUTS),
            extra = self.extra_config,
        );
        std::fs::write(dir.join("ternd.toml"), config).unwrap();
        self.agents.push(Agent { name: name.to_string(), dir, child: None, addr: None });
        self.agents.len() - 1
    }

    /// Starts (or restarts) agent `i` and waits until it serves.
    pub fn start(&mut self, i: usize) -> String {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.agents[i].dir.join("ternd.log"));
        let log = log.unwrap();
        let mut command = Command::new(crate::binary("ternd"));
        command.stdout(log.try_clone().unwrap()).stderr(log);
        self.start_as(i, command, |_| {})
    }

    /// Starts agent `i` through `bash -c "SHELL; exec ternd ..."` (e.g. `ulimit -f 64`:
    /// the OS then refuses its writes past 64 KiB per file), its output piped to the
    /// returned buffer instead of `ternd.log`; waits until it serves.
    pub fn start_under(&mut self, i: usize, shell: &str) -> (String, std::sync::Arc<std::sync::Mutex<String>>) {
        let mut command = Command::new("bash");
        command
            .arg("-c")
            .arg(format!("{shell}; exec \"$0\" \"$@\""))
            .arg(crate::binary("ternd"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        // The readers start before the wait: a full pipe would stall the agent's start.
        let sink = out.clone();
        let addr = self.start_as(i, command, move |child| {
            let streams: [Option<Box<dyn std::io::Read + Send>>; 2] = [
                child.stdout.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
                child.stderr.take().map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            ];
            for stream in streams.into_iter().flatten() {
                let out = sink.clone();
                std::thread::spawn(move || {
                    use std::io::BufRead;
                    for line in std::io::BufReader::new(stream).lines().map_while(Result::ok) {
                        let mut o = out.lock().unwrap();
                        o.push_str(&line);
                        o.push('\n');
                    }
                });
            }
        });
        (addr, out)
    }

    /// Spawns `command` as agent `i`, runs `spawned` on the child, waits until it serves.
    fn start_as(&mut self, i: usize, mut command: Command, spawned: impl FnOnce(&mut Child)) -> String {
        let a = &mut self.agents[i];
        let file = a.dir.join("data/ternd.addr");
        let before = std::fs::metadata(&file).and_then(|m| m.modified()).ok();
        let mut child = command
            .arg("--config")
            .arg(a.dir.join("ternd.toml"))
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        spawned(&mut child);
        a.child = Some(child);
        let start = Instant::now();
        loop {
            let fresh = std::fs::metadata(&file).and_then(|m| m.modified()).ok().is_some_and(|m| Some(m) != before);
            if fresh
                && let Ok(t) = std::fs::read_to_string(&file)
                && let Some(addr) = t.lines().next()
            {
                a.addr = Some(addr.to_string());
                return addr.to_string();
            }
            let log = || std::fs::read_to_string(a.dir.join("ternd.log")).unwrap_or_default();
            if let Some(status) = a.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{} exited with {status}: {}", a.name, log());
            }
            assert!(start.elapsed() < WAIT, "{} did not start: {}", a.name, log());
            std::thread::sleep(POLL);
        }
    }

    /// kill -9.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.agents[i].child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// How many agents this cluster has (running or not).
    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.agents[i].dir.join("ternd.log")).unwrap_or_default()
    }

    pub fn addr(&self, i: usize) -> String {
        self.agents[i].addr.clone().expect("agent started")
    }

    /// A channel to agent `i` as `ternctl`, the administrator (System Administrator).
    pub async fn channel(&self, i: usize) -> Channel {
        self.channel_as(i, "ternctl")
    }

    /// A channel to agent `i` presenting certificate `cert` of the cluster's folder.
    pub fn channel_as(&self, i: usize, cert: &str) -> Channel {
        let tls = tern_tls::TlsFiles::in_dir(&self.certs, cert).client_config().unwrap();
        Endpoint::from_shared(format!("https://{}", self.addr(i)))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect_lazy()
    }

    /// The serial of the certificate agent `i` presents to a new connection now (a
    /// bare TLS handshake as `ternctl`, checked against the cluster CA).
    pub async fn presented_serial(&self, i: usize) -> String {
        use rustls::pki_types::ServerName;
        let config = tern_tls::TlsFiles::in_dir(&self.certs, "ternctl").rustls_client().unwrap();
        let tcp = tokio::net::TcpStream::connect(self.addr(i)).await.unwrap();
        let connector = tokio_rustls::TlsConnector::from(config);
        let name = ServerName::try_from("localhost").unwrap();
        let tls = tokio::time::timeout(WAIT, connector.connect(name, tcp)).await.unwrap().unwrap();
        let der = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        tern_tls::serial_of(&der).unwrap()
    }

    /// Sends `signal` (e.g. "HUP") to agent `i`'s process.
    pub fn signal(&self, i: usize, signal: &str) {
        let pid = self.agents[i].child.as_ref().expect("agent running").id();
        let ok = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap().success();
        assert!(ok, "kill -{signal} {pid}");
    }

    pub async fn status(&self, i: usize) -> Result<pb::ClusterStatus, tonic::Status> {
        let mut c = pb::cluster_client::ClusterClient::new(self.channel(i).await);
        c.status(pb::StatusRequest {}).await.map(tonic::Response::into_inner)
    }

    pub async fn domains(&self, i: usize) -> Result<Vec<pb::DomainInfo>, tonic::Status> {
        let mut c = pb::inventory_client::InventoryClient::new(self.channel(i).await);
        c.list_domains(pb::ListDomainsRequest::default()).await.map(|r| r.into_inner().domains)
    }

    /// Waits until `cond` holds on agent `i`'s status; returns that status.
    pub async fn wait_status(
        &self,
        i: usize,
        what: &str,
        cond: impl Fn(&pb::ClusterStatus) -> bool,
    ) -> pb::ClusterStatus {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < WAIT {
            match self.status(i).await {
                Ok(st) if cond(&st) => return st,
                Ok(st) => last = format!("{st:?}"),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("waited {WAIT:?} for {what} on {}; last: {last}\nlog:\n{}", self.agents[i].name, self.log(i));
    }

    /// Starts a 3-agent cluster on the seed's first three layouts; waits for it to form
    /// with every host's inventory reported.
    pub async fn three() -> Self {
        let mut c = Self::new();
        c.add("m10-1-1", "m10-1-1", &[]);
        let first = c.start(0);
        for (name, layout_name) in [("m10-1-2", "m10-1-2"), ("m10-1-3", "m10-1-3")] {
            let i = c.add(name, layout_name, std::slice::from_ref(&first));
            c.start(i);
        }
        c.wait_status(0, "3 voters and a leader", |s| {
            s.leader_id != 0 && s.members.iter().filter(|m| m.role == pb::MemberRole::Voter as i32).count() == 3
        })
        .await;
        c.wait_applied(c.metric(0, "tern_raft_last_log_index").await).await;
        c.wait_domains(0, 5).await;
        c
    }

    /// Waits until agent `i` lists at least `n` domains.
    pub async fn wait_domains(&self, i: usize, n: usize) -> Vec<pb::DomainInfo> {
        let start = Instant::now();
        loop {
            if let Ok(d) = self.domains(i).await
                && d.len() >= n
            {
                return d;
            }
            assert!(start.elapsed() < WAIT, "agent {i} never listed {n} domains: {}", self.log(i));
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn index_of(&self, status: &pb::ClusterStatus, id: u64) -> usize {
        let addr = &status.members.iter().find(|m| m.node_id == id).expect("member").address;
        self.agents.iter().position(|a| a.addr.as_deref() == Some(addr)).expect("agent for member")
    }
}

impl Cluster {
    /// Starts one agent per layout (the first bootstraps); waits until every host has
    /// reported its inventory.
    pub async fn with_layouts(names: &[&str], time_scale: u32) -> Self {
        Self::with_layouts_and(names, time_scale, "").await
    }

    /// Like [`Cluster::with_layouts`], each agent's config ending with `extra`.
    pub async fn with_layouts_and(names: &[&str], time_scale: u32, extra: &str) -> Self {
        let servers: Vec<(&str, PathBuf)> = names.iter().map(|n| (*n, layout(n))).collect();
        Self::with_layout_files_and(&servers, time_scale, extra).await
    }

    /// Like [`Cluster::with_layouts_and`] with `(host, layout file)` pairs.
    pub async fn with_layout_files_and(servers: &[(&str, PathBuf)], time_scale: u32, extra: &str) -> Self {
        let names: Vec<&str> = servers.iter().map(|(n, _)| *n).collect();
        let mut c = Self::new();
        c.time_scale = time_scale;
        c.extra_config = extra.to_string();
        c.add_layout(servers[0].0, &servers[0].1, &[]);
        let first = c.start(0);
        for (n, path) in &servers[1..] {
            let i = c.add_layout(n, path, std::slice::from_ref(&first));
            c.start(i);
        }
        // Every member, a leader, and the voters the configs ask for (a cluster of
        // learners would lose its quorum with its founder).
        let want_voters = names.len().min(3);
        c.wait_status(0, "every member, a leader and its voters", |s| {
            let voters = s.members.iter().filter(|m| m.role == pb::MemberRole::Voter as i32).count();
            s.leader_id != 0 && s.members.len() == names.len() && voters == want_voters
        })
        .await;
        c.wait_applied(c.metric(0, "tern_raft_last_log_index").await).await;
        let start = Instant::now();
        loop {
            let hosts: std::collections::BTreeSet<String> =
                c.domains(0).await.unwrap_or_default().into_iter().map(|d| d.host).collect();
            if hosts.len() == names.len() {
                break;
            }
            assert!(start.elapsed() < WAIT, "inventories never all arrived: {hosts:?}");
            tokio::time::sleep(POLL).await;
        }
        c
    }

    pub async fn add_user(&self, name: &str, password: &str, profiles: &[&str]) {
        let mut c = pb::users_client::UsersClient::new(self.channel(0).await);
        let req = pb::AddUserRequest {
            name: name.into(),
            password: password.into(),
            profiles: profiles.iter().map(|p| p.to_string()).collect(),
            replace: true,
        };
        c.add_user(req).await.unwrap();
    }

    /// How many of `host`'s cores have a free (unbound, unreserved) thread, as agent 0 sees it.
    pub async fn free_cores(&self, host: &str) -> usize {
        let mut inv = pb::inventory_client::InventoryClient::new(self.channel(0).await);
        let req = pb::ListDevicesRequest { host: host.into(), all: false };
        inv.list_devices(req).await.unwrap().into_inner().hosts[0].cores.len()
    }

    /// An unlabelled gauge of agent `i`'s own /metrics (0 when absent).
    pub async fn metric(&self, i: usize, name: &str) -> u64 {
        let m = self.metrics(i).await;
        m.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits until every agent has applied the log up to `index`, as its own /metrics
    /// says: the voter change the leader appended (its status lists the new voters as
    /// soon as it appends them) is then known to every member, so a test that kills the
    /// leader next leaves followers that can elect a new one.
    pub async fn wait_applied(&self, index: u64) {
        let start = Instant::now();
        for i in 0..self.agents.len() {
            loop {
                if self.metric(i, "tern_raft_applied_index").await >= index {
                    break;
                }
                assert!(start.elapsed() < WAIT, "agent {i} never applied index {index}: {}", self.log(i));
                tokio::time::sleep(POLL).await;
            }
        }
    }

    /// Agent `i`'s `/metrics` text (plain HTTP/1.1 on its metrics address).
    pub async fn metrics(&self, i: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = std::fs::read_to_string(self.agents[i].dir.join("data/metrics.addr")).unwrap();
        let mut conn = tokio::net::TcpStream::connect(addr.trim()).await.unwrap();
        conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: tern\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut text = String::new();
        conn.read_to_string(&mut text).await.unwrap();
        text
    }

    /// Index of the agent running host `name`.
    pub fn host(&self, name: &str) -> usize {
        self.agents.iter().position(|a| a.name == name).expect("host")
    }

    /// Starts a migration on agent `i`; returns its event stream.
    #[allow(clippy::too_many_arguments)] // mirrors MigrateRequest's fields, in order
    pub async fn migrate(
        &self,
        i: usize,
        domain: &str,
        target: &str,
        new_name: &str,
        dry_run: bool,
        user: &str,
        password: &str,
    ) -> Result<tonic::Streaming<pb::MigrateEvent>, tonic::Status> {
        let req = pb::MigrateRequest {
            domain: domain.into(),
            target: target.into(),
            new_name: new_name.into(),
            user: user.into(),
            password: password.into(),
            dry_run,
            plan_id: 0,
            ticket: None,
        };
        self.migrate_as(i, "ternctl", req).await
    }

    /// Sends `req` to agent `i` presenting certificate `cert`; returns its event stream.
    pub async fn migrate_as(
        &self,
        i: usize,
        cert: &str,
        req: pb::MigrateRequest,
    ) -> Result<tonic::Streaming<pb::MigrateEvent>, tonic::Status> {
        let mut c = pb::migration_client::MigrationClient::new(self.stream_channel_as(i, cert));
        c.migrate(req).await.map(tonic::Response::into_inner)
    }

    /// A migration of `domain` to `target` with no login: certificate `cert` signs a
    /// ticket for it now, as `ternctl migrate-domain` without `user@` does (OP-04).
    pub fn ticket_request(
        &self,
        cert: &str,
        domain: &str,
        target: &str,
        new_name: &str,
        dry_run: bool,
    ) -> pb::MigrateRequest {
        let grant = tern_tls::Grant { domain, target, new_name, dry_run };
        let ticket = tern_tls::TlsFiles::in_dir(&self.certs, cert).sign_ticket(&grant, crate::bench::now_ms()).unwrap();
        pb::MigrateRequest {
            domain: domain.into(),
            target: target.into(),
            new_name: new_name.into(),
            dry_run,
            ticket: Some(ticket.into()),
            ..Default::default()
        }
    }

    /// A channel without a per-request deadline, for long streams.
    pub async fn stream_channel(&self, i: usize) -> Channel {
        self.stream_channel_as(i, "ternctl")
    }

    /// Like [`Cluster::stream_channel`], presenting certificate `cert`.
    pub fn stream_channel_as(&self, i: usize, cert: &str) -> Channel {
        let tls = tern_tls::TlsFiles::in_dir(&self.certs, cert).client_config().unwrap();
        Endpoint::from_shared(format!("https://{}", self.addr(i))).unwrap().tls_config(tls).unwrap().connect_lazy()
    }

    /// Reads progress events until the transfer reaches `pct`; panics if it ends first.
    pub async fn wait_progress(s: &mut tonic::Streaming<pb::MigrateEvent>, pct: u32) {
        loop {
            match s.message().await.unwrap().and_then(|e| e.event) {
                Some(pb::migrate_event::Event::Progress(p)) if p.pct >= pct => return,
                Some(pb::migrate_event::Event::Progress(_)) => {}
                other => panic!("the migration ended before {pct}%: {other:?}"),
            }
        }
    }

    /// Reads a migration's events to its end: the report, or the refusal, or an error.
    pub async fn outcome(mut s: tonic::Streaming<pb::MigrateEvent>) -> Result<pb::migrate_event::Event, tonic::Status> {
        while let Some(e) = s.message().await? {
            match e.event {
                Some(pb::migrate_event::Event::Progress(_)) | None => {}
                Some(other) => return Ok(other),
            }
        }
        Err(tonic::Status::aborted("stream ended without an outcome"))
    }

    pub async fn operations(&self, i: usize) -> Vec<pb::OperationInfo> {
        let mut c = pb::migration_client::MigrationClient::new(self.channel(i).await);
        c.list_operations(pb::ListOperationsRequest { limit: 0 }).await.unwrap().into_inner().operations
    }

    /// Waits until `cond` holds on the operations as agent `i` sees them.
    pub async fn wait_operations(&self, i: usize, what: &str, cond: impl Fn(&[pb::OperationInfo]) -> bool) {
        let start = Instant::now();
        loop {
            let ops = self.operations(i).await;
            if cond(&ops) {
                return;
            }
            assert!(start.elapsed() < WAIT, "waited for {what}; operations: {ops:?}");
            tokio::time::sleep(POLL).await;
        }
    }
}

/// This package's folder, read at run time first: one target folder serves every checkout.
pub(crate) fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}
