//! Benchmark support (issue 18): latency summaries, the disk's synced-append rate, a
//! 3-member etcd on loopback, hosts that reserve through `Cluster.Propose` with node
//! certificates, and the migration control path measured as dry runs.
//!
//! Nothing here waits with a fixed sleep: every wait polls a condition with a
//! deadline, every RPC has a deadline.

use crate::Cluster;
use std::path::{Path, PathBuf};
#[cfg(feature = "etcd")]
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tern_model::units::GIB;
use tern_model::{
    Binding, Core, CpuArch, CpuFamily, CpuType, Domain, DomainKind, DomainState, Firmware, MemoryBlock, OsVersion,
    Owner, Range, Server, Services, Strand, Vcc, Vds, Volume, Vsw, Workload,
};
use tern_proto::v1 as pb;
use tern_raft_store::{Command as TernCommand, HostSpec, OperationKind, Outcome, Rejection, Request};
use tonic::transport::{Channel, Endpoint};

/// Every RPC of the benchmark clients has this deadline.
pub const RPC_DEADLINE: Duration = Duration::from_secs(5);
/// Longest a cluster is waited for (start, election, recovery).
pub const SETTLE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(20);

/// The `p` quantile (0..=1) of sorted latencies (zero when empty).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Operations completed in a measured window, with their latencies.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub ops: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
}

impl Sample {
    pub fn merge(&mut self, other: Sample) {
        self.ops += other.ops;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies.extend(other.latencies);
    }
    pub fn per_s(&self) -> f64 {
        if self.elapsed.is_zero() { 0.0 } else { self.ops as f64 / self.elapsed.as_secs_f64() }
    }
    pub fn sorted(mut self) -> Self {
        self.latencies.sort_unstable();
        self
    }
    pub fn p50(&self) -> Duration {
        percentile(&self.latencies, 0.5)
    }
    pub fn p99(&self) -> Duration {
        percentile(&self.latencies, 0.99)
    }
}

/// A temp dir on the filesystem of `TERN_BENCH_DIR`, else of the system temp dir.
pub fn bench_tempdir(prefix: &str) -> tempfile::TempDir {
    let base = std::env::var_os("TERN_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    tempfile::Builder::new().prefix(prefix).tempdir_in(base).expect("bench temp dir")
}

/// `writers` threads each appending `record_bytes` records to its own file in `dir`
/// and calling fdatasync after every record, for `secs`: synced appends per second
/// (all writers) and the p50/p99 of one append+fdatasync.
pub fn synced_appends(dir: &Path, writers: usize, record_bytes: usize, run: Duration) -> Sample {
    use std::io::Write;
    let stop = Instant::now() + run;
    let started = Instant::now();
    let threads: Vec<_> = (0..writers)
        .map(|w| {
            let path = dir.join(format!("append-{w}.log"));
            std::thread::spawn(move || {
                let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path).expect("append file");
                let record = vec![b'r'; record_bytes];
                let mut s = Sample::default();
                while Instant::now() < stop {
                    let t = Instant::now();
                    f.write_all(&record).expect("append");
                    f.sync_data().expect("fdatasync");
                    s.latencies.push(t.elapsed());
                    s.ops += 1;
                }
                drop(f);
                let _ = std::fs::remove_file(&path);
                s
            })
        })
        .collect();
    let mut all = Sample::default();
    for t in threads {
        all.merge(t.join().expect("writer thread"));
    }
    all.elapsed = started.elapsed();
    all.sorted()
}

#[cfg(feature = "etcd")]
/// A port on 127.0.0.1 the OS had free a moment ago (bound to port 0, then released),
/// for servers such as etcd that need their ports on the command line.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0 to find a free port");
    l.local_addr().expect("local addr").port()
}

#[cfg(feature = "etcd")]
/// The path of Debian's `etcd`, or an error saying how to get it.
pub fn etcd_binary() -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join("etcd")).find(|p| p.is_file()).ok_or_else(|| {
        "etcd is not installed: run `./dev bench` (it installs Debian's etcd-server), or \
         `apt-get install -y etcd-server etcd-client`"
            .to_string()
    })
}

#[cfg(feature = "etcd")]
pub struct EtcdMember {
    pub name: String,
    pub dir: PathBuf,
    pub http: u16,
    pub https: u16,
    pub peer: u16,
    pub child: Option<Child>,
}

#[cfg(feature = "etcd")]
/// A 3-member etcd on loopback: peers over mutual TLS, clients on a plain and on a
/// mutual-TLS listener each, every member's data in its own dir.
pub struct Etcd {
    pub tmp: tempfile::TempDir,
    pub certs: PathBuf,
    pub members: Vec<EtcdMember>,
    binary: PathBuf,
    initial_cluster: String,
}

#[cfg(feature = "etcd")]
impl Drop for Etcd {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

#[cfg(feature = "etcd")]
impl Etcd {
    /// Starts the members and waits until they have a leader and all answer.
    pub async fn start(n: usize) -> Result<Self, String> {
        let binary = etcd_binary()?;
        tern_tls::install_crypto_provider();
        let tmp = bench_tempdir("tern-bench-etcd-");
        let certs = tmp.path().join("certs");
        tern_tls::init_ca(&certs, "etcd-bench").map_err(|e| e.to_string())?;
        let node = tern_tls::Role::Node { sans: vec![], loopback: true };
        tern_tls::issue(&certs, "client", &node, None).map_err(|e| e.to_string())?;
        let mut members = Vec::new();
        for i in 0..n {
            let name = format!("etcd-{i}");
            tern_tls::issue(&certs, &name, &node, None).map_err(|e| e.to_string())?;
            let dir = tmp.path().join(&name);
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            members.push(EtcdMember {
                name,
                dir,
                http: free_port(),
                https: free_port(),
                peer: free_port(),
                child: None,
            });
        }
        let initial_cluster =
            members.iter().map(|m| format!("{}=https://127.0.0.1:{}", m.name, m.peer)).collect::<Vec<_>>().join(",");
        let mut etcd = Self { tmp, certs, members, binary, initial_cluster };
        for i in 0..n {
            etcd.spawn(i)?;
        }
        etcd.wait_healthy().await?;
        Ok(etcd)
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let c = self.certs.clone();
        let m = &mut self.members[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.dir.join("etcd.log"))
            .map_err(|e| e.to_string())?;
        let pem = |n: &str| c.join(n).display().to_string();
        let state = if m.dir.join("data/member").exists() { "existing" } else { "new" };
        let child = Command::new(&self.binary)
            .arg(format!("--name={}", m.name))
            .arg(format!("--data-dir={}", m.dir.join("data").display()))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{},https://127.0.0.1:{}", m.http, m.https))
            .arg(format!("--advertise-client-urls=https://127.0.0.1:{}", m.https))
            .arg(format!("--listen-peer-urls=https://127.0.0.1:{}", m.peer))
            .arg(format!("--initial-advertise-peer-urls=https://127.0.0.1:{}", m.peer))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .arg(format!("--initial-cluster-state={state}"))
            .arg("--initial-cluster-token=tern-bench")
            .arg(format!("--cert-file={}", pem(&format!("{}.pem", m.name))))
            .arg(format!("--key-file={}", pem(&format!("{}-key.pem", m.name))))
            .arg(format!("--trusted-ca-file={}", pem("ca.pem")))
            .arg("--client-cert-auth")
            .arg(format!("--peer-cert-file={}", pem(&format!("{}.pem", m.name))))
            .arg(format!("--peer-key-file={}", pem(&format!("{}-key.pem", m.name))))
            .arg(format!("--peer-trusted-ca-file={}", pem("ca.pem")))
            .arg("--peer-client-cert-auth")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.binary.display()))?;
        m.child = Some(child);
        Ok(())
    }

    fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.members[i].dir.join("etcd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// Plain-TCP client endpoint of member `i`.
    pub fn http(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].http)
    }

    /// Mutual-TLS client endpoint of member `i`.
    pub fn https(&self, i: usize) -> String {
        format!("https://127.0.0.1:{}", self.members[i].https)
    }

    /// Connects to `endpoints`, over mutual TLS when they are https.
    pub async fn client(&self, endpoints: &[String]) -> Result<etcd_client::Client, String> {
        let mut opts =
            etcd_client::ConnectOptions::new().with_timeout(RPC_DEADLINE).with_connect_timeout(Duration::from_secs(2));
        if endpoints.iter().any(|e| e.starts_with("https")) {
            let tls = tern_tls::TlsFiles::in_dir(&self.certs, "client").client_config().map_err(|e| e.to_string())?;
            opts = opts.with_tls(tls.domain_name("127.0.0.1"));
        }
        etcd_client::Client::connect(endpoints, Some(opts))
            .await
            .map_err(|e| format!("connecting to {endpoints:?}: {e}"))
    }

    /// The member ids and leader as member `i` reports them.
    async fn status(&self, i: usize) -> Result<(u64, u64), String> {
        let mut c = self.client(&[self.http(i)]).await?;
        let s = tokio::time::timeout(RPC_DEADLINE, c.status()).await.map_err(|_| "status timed out".to_string())?;
        let s = s.map_err(|e| e.to_string())?;
        Ok((s.header().map_or(0, |h| h.member_id()), s.leader()))
    }

    /// Waits until every running member answers and all name the same leader;
    /// returns the leader's index.
    pub async fn wait_healthy(&mut self) -> Result<usize, String> {
        let start = Instant::now();
        let mut last = String::new();
        while start.elapsed() < SETTLE {
            self.check_running()?;
            let mut ids = Vec::new();
            let mut ok = true;
            for i in 0..self.members.len() {
                match self.status(i).await {
                    Ok(st) => ids.push(st),
                    Err(e) => {
                        last = format!("{}: {e}", self.members[i].name);
                        ok = false;
                        break;
                    }
                }
            }
            if ok {
                let leader = ids[0].1;
                if leader != 0
                    && ids.iter().all(|(_, l)| *l == leader)
                    && let Some(i) = ids.iter().position(|(id, _)| *id == leader)
                {
                    return Ok(i);
                }
                last = format!("no agreed leader yet: {ids:?}");
            }
            tokio::time::sleep(POLL * 5).await;
        }
        let tails: Vec<String> = (0..self.members.len()).map(|i| self.log_tail(i)).collect();
        Err(format!("etcd did not become healthy in {SETTLE:?}: {last}\nlogs:\n{}", tails.join("\n---\n")))
    }

    /// Fails when a member exited (a port taken, a bad flag): its log says why.
    pub fn check_running(&mut self) -> Result<(), String> {
        for i in 0..self.members.len() {
            if let Some(c) = self.members[i].child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                let tail = self.log_tail(i);
                return Err(format!("{} exited with {status}:\n{tail}", self.members[i].name));
            }
        }
        Ok(())
    }

    /// SIGKILL member `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts member `i` again on its data dir.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        self.spawn(i)
    }
}

// ---------------------------------------------------------------------------
// tern: hosts whose reservations a benchmark drives through `Cluster.Propose`.

/// Threads per core of the benchmark hosts (SPARC T5): a reservation of `CORES` cores
/// takes one strand of each, so eight reservations share a group of eight cores.
pub const THREADS: u32 = 8;
/// Cores per reservation (k).
pub const CORES: u32 = 8;
/// Memory ranges per reservation (m), of `RANGE_BYTES` each.
pub const RANGES: u64 = 16;
pub const RANGE_BYTES: u64 = 256 << 20;
/// Lease of a benchmark reservation.
pub const LEASE_MS: u64 = 600_000;

/// Slot `j`'s binding (guest `{prefix}g{j}`; a domain's name is unique in the cluster): strand `j % 8` of 8 cores, 16 ranges. The same
/// ids on the source (where the guest runs) and the target (where it is reserved).
pub fn slot_binding(prefix: &str, j: u32) -> Binding {
    let first = 1 + CORES * (j / THREADS);
    let cids: Vec<u32> = (first..first + CORES).collect();
    let strands = cids.iter().map(|c| c * THREADS + j % THREADS).collect();
    let memory =
        (0..RANGES).map(|r| Range::new(2 * GIB + (u64::from(j) * RANGES + r) * RANGE_BYTES, RANGE_BYTES)).collect();
    Binding { domain: format!("{prefix}g{j}"), whole_cores: false, cids, strands, memory, console_port: None }
}

fn os() -> OsVersion {
    OsVersion::parse("Solaris 11.3").expect("valid OS")
}

fn domain(name: &str, kind: DomainKind) -> Domain {
    Domain {
        name: name.into(),
        kind,
        state: DomainState::Active,
        cpu_arch: CpuArch::Native,
        os: Some(os()),
        vdisks: vec![],
        vnets: vec![],
        console: None,
        workload: Workload::default(),
        masters: vec![],
        failure_policy: Default::default(),
    }
}

/// A SPARC T5 server with room for `slots` reservations (core 0 and [1G, 2G) for its
/// control domain), and, when `guests`, guest `g{j}` bound on every slot's binding.
pub fn slot_server(name: &str, slots: u32, guests: bool) -> Server {
    let groups = slots.div_ceil(THREADS);
    let cores: Vec<Core> = (0..1 + groups * CORES)
        .map(|c| Core {
            cid: c,
            activated: true,
            strands: (0..THREADS)
                .map(|t| Strand { id: c * THREADS + t, bound: (c == 0).then(|| "primary".to_string()) })
                .collect(),
        })
        .collect();
    let memory = vec![
        MemoryBlock { pa: 0, size: GIB, bound: Some(Owner::System) },
        MemoryBlock { pa: GIB, size: GIB, bound: Some(Owner::Domain("primary".into())) },
        MemoryBlock { pa: 2 * GIB, size: u64::from(slots) * RANGES * RANGE_BYTES + GIB, bound: None },
    ];
    let mut server = Server {
        name: name.into(),
        model: "SPARC T5-8".into(),
        cpu: CpuType { family: CpuFamily::SparcT5, frequency_mhz: 3600 },
        firmware: Firmware("Sun System Firmware 9.8".into()),
        os: os(),
        threads_per_core: THREADS,
        cores,
        memory,
        services: Services {
            vds: vec![Vds {
                name: "primary-vds0".into(),
                domain: "primary".into(),
                volumes: vec![Volume { name: "vol0".into(), device: "/dev/dsk/c0t6d0s2".into(), shared: true }],
            }],
            vsw: vec![Vsw { name: "primary-vsw0".into(), domain: "primary".into(), nic: "net0".into() }],
            vcc: vec![Vcc { name: "primary-vcc0".into(), domain: "primary".into(), port_min: 5000, port_max: 6000 }],
        },
        domains: vec![domain("primary", DomainKind::Control)],
    };
    if guests {
        for j in 0..slots {
            let b = slot_binding(&format!("{name}-"), j);
            server.bind_domain(domain(&b.domain, DomainKind::Guest), &b).expect("guest binds");
        }
    }
    server
}

/// A reply of `Cluster.Propose`: the state machine's verdict, or the RPC's error.
pub type Proposed = Result<Result<Outcome, Rejection>, tonic::Status>;

/// A node's writes through `Cluster.Propose` over mutual TLS, as `agent:{name}`.
#[derive(Clone)]
pub struct Proposer {
    pub name: String,
    certs: PathBuf,
}

impl Proposer {
    /// Issues node certificate `name` in `cluster`'s CA folder.
    pub fn new(cluster: &Cluster, name: &str) -> Self {
        tern_tls::issue(&cluster.certs, name, &tern_tls::Role::Node { sans: vec![], loopback: true }, None)
            .expect("node certificate");
        Self { name: name.into(), certs: cluster.certs.clone() }
    }

    /// A new HTTP/2 connection (lazy) to the agent at `addr`, with this node's certificate.
    pub fn channel(&self, addr: &str) -> Channel {
        let tls = tern_tls::TlsFiles::in_dir(&self.certs, &self.name).client_config().expect("client tls");
        Endpoint::from_shared(format!("https://{addr}"))
            .expect("endpoint")
            .tls_config(tls)
            .expect("tls config")
            .connect_timeout(Duration::from_secs(2))
            .timeout(RPC_DEADLINE)
            .connect_lazy()
    }

    pub fn request(&self, command: TernCommand) -> Request {
        Request {
            proposed_at_ms: crate::bench::now_ms(),
            actor: format!("agent:{}", self.name),
            from: String::new(),
            command,
        }
    }

    /// Proposes `command` through the agent on `channel` (the leader takes it; a
    /// follower answers FAILED_PRECONDITION with the leader in `tern-leader`).
    pub async fn propose(&self, channel: &Channel, command: TernCommand) -> Proposed {
        let bytes =
            tern_agent::raft_net::encode(&self.request(command)).map_err(|e| tonic::Status::internal(e.to_string()))?;
        let mut c = pb::cluster_client::ClusterClient::new(channel.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let mut req = tonic::Request::new(pb::ProposeRequest { request: bytes });
        req.set_timeout(RPC_DEADLINE);
        let resp = c.propose(req).await?.into_inner();
        tern_agent::raft_net::decode(&resp.response).map_err(tonic::Status::internal)
    }

    /// Proposes a setup command; panics unless it is accepted.
    pub async fn must(&self, channel: &Channel, command: TernCommand) -> Outcome {
        let name = command.name();
        match self.propose(channel, command).await {
            Ok(Ok(o)) => o,
            Ok(Err(r)) => panic!("{name} as agent:{} refused: {r}", self.name),
            Err(e) => panic!("{name} as agent:{} failed: {e}", self.name),
        }
    }

    /// Tells the leader this host is alive (HA-01), so that it stays Up.
    pub async fn heartbeat(&self, channel: &Channel) -> Result<(), tonic::Status> {
        let mut c = pb::cluster_client::ClusterClient::new(channel.clone());
        let mut req =
            tonic::Request::new(pb::HeartbeatRequest { host: self.name.clone(), node_id: 0, sent_at_ms: now_ms() });
        req.set_timeout(RPC_DEADLINE);
        c.heartbeat(req).await.map(|_| ())
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The leader named by a NOT_LEADER refusal (`tern-leader`), if any.
pub fn leader_hint(status: &tonic::Status) -> Option<String> {
    status.metadata().get("tern-leader").and_then(|v| v.to_str().ok()).map(String::from).filter(|s| !s.is_empty())
}

/// A source host `src` with `slots` guests and a target host `dst` with room for all
/// of them, registered through `Cluster.Propose` with their own node certificates, one
/// running migration per guest: `ops[j]` moves `{src}-g{j}` from `src` to `dst`.
pub struct SlotPair {
    pub src: Proposer,
    pub dst: Proposer,
    pub ops: Vec<u64>,
}

impl SlotPair {
    /// Registers `src` and `dst` (see [`Proposer::new`]) through the leader at `leader`.
    pub async fn register(leader: &str, src: Proposer, dst: Proposer, slots: u32) -> Self {
        let (sc, dc) = (src.channel(leader), dst.channel(leader));
        for (p, ch, guests) in [(&src, &sc, true), (&dst, &dc, false)] {
            let host = HostSpec { name: p.name.clone(), address: "127.0.0.1:1".into() };
            p.must(ch, TernCommand::RegisterHost { host }).await;
            p.must(ch, TernCommand::ReportInventory { server: slot_server(&p.name, slots, guests) }).await;
        }
        // 64 at a time: the setup is not what is measured.
        let mut ops = vec![0; slots as usize];
        for chunk in (0..slots).collect::<Vec<_>>().chunks(64) {
            let mut set = tokio::task::JoinSet::new();
            for &j in chunk {
                let (src_p, ch, target) = (src.clone(), sc.clone(), dst.name.clone());
                set.spawn(async move {
                    let kind = OperationKind::Migration {
                        domain: format!("{}-g{j}", src_p.name),
                        source: src_p.name.clone(),
                        target,
                        new_name: None,
                        dry_run: false,
                        plan: None,
                    };
                    match src_p.must(&ch, TernCommand::BeginOperation { kind }).await {
                        Outcome::OperationBegun { operation } => (j, operation),
                        other => panic!("BeginOperation answered {other:?}"),
                    }
                });
            }
            while let Some(r) = set.join_next().await {
                let (j, op) = r.expect("begin task");
                ops[j as usize] = op;
            }
        }
        Self { src, dst, ops }
    }

    /// Slot `j`'s Reserve, as its source proposes it.
    pub fn reserve(&self, j: u32) -> TernCommand {
        TernCommand::Reserve {
            operation: self.ops[j as usize],
            target: self.dst.name.clone(),
            source: self.src.name.clone(),
            domain: format!("{}-g{j}", self.src.name),
            binding: slot_binding(&format!("{}-", self.src.name), j),
            lease_ms: LEASE_MS,
        }
    }
}

/// The leader's address as agent `i` of `cluster` reports it (waits for one).
pub async fn tern_leader(cluster: &Cluster) -> (usize, String) {
    let start = Instant::now();
    loop {
        for i in 0..cluster.agents.len() {
            if cluster.agents[i].child.is_none() {
                continue;
            }
            if let Ok(Ok(s)) = tokio::time::timeout(RPC_DEADLINE, cluster.status(i)).await
                && s.leader_id != 0
                && let Some(m) = s.members.iter().find(|m| m.node_id == s.leader_id)
                && let Some(idx) = cluster.agents.iter().position(|a| a.addr.as_deref() == Some(m.address.as_str()))
                && cluster.agents[idx].child.is_some()
            {
                return (idx, m.address.clone());
            }
        }
        assert!(start.elapsed() < SETTLE, "no tern leader in {SETTLE:?}");
        tokio::time::sleep(POLL * 5).await;
    }
}

/// B6: `runs` dry-run migrations of `domain` from agent `src` to host `target`, with
/// `login` (user, password: the argon2 login on the target's Prepare) or, when `None`,
/// a ticket signed by the `ternctl` certificate (OP-04 by certificate): Begin, Prepare
/// (authentication, preflight), a Raft-committed Reserve and the commit, no transfer.
/// Latencies, sorted.
pub async fn dry_run_latencies(
    cluster: &Cluster,
    src: usize,
    domain: &str,
    target: &str,
    login: Option<(&str, &str)>,
    runs: usize,
) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let s = match login {
            Some((user, password)) => cluster.migrate(src, domain, target, "", true, user, password).await,
            // The ticket is signed inside the timed run, as ternctl signs it per call.
            None => {
                cluster.migrate_as(src, "ternctl", cluster.ticket_request("ternctl", domain, target, "", true)).await
            }
        };
        let s = s.expect("migrate");
        match Cluster::outcome(s).await.expect("outcome") {
            pb::migrate_event::Event::Report(_) => latencies.push(t.elapsed()),
            other => panic!("dry run refused: {other:?}"),
        }
    }
    latencies.sort();
    latencies
}
