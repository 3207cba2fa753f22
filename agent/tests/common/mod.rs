//! A cluster of real `ternd` processes on loopback for end-to-end tests: certificates
//! and configs in a temp dir, OS-chosen ports, waits on conditions with deadlines.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tern_proto::v1 as pb;
use tonic::transport::{Channel, Endpoint};

/// Longest any condition is waited for.
pub const WAIT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

pub const LAYOUTS: [&str; 5] = ["m10-1-1", "m10-1-2", "m10-1-3", "m10-1-fragmented", "t4-1"];

pub fn layout(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/layouts")
        .join(format!("{name}.toml"))
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

impl Cluster {
    pub fn new() -> Self {
        tern_tls::install_crypto_provider();
        let tmp = tempfile::tempdir().unwrap();
        let certs = tmp.path().join("certs");
        tern_tls::init_ca(&certs, "test").unwrap();
        tern_tls::issue(&certs, "ternctl", &[]).unwrap();
        Self {
            tmp,
            certs,
            agents: Vec::new(),
        }
    }

    /// Writes the config of agent `name` running layout `layout`, joining `join`.
    pub fn add(&mut self, name: &str, layout_name: &str, join: &[String]) -> usize {
        tern_tls::issue(&self.certs, name, &[]).unwrap();
        let dir = self.tmp.path().join(name);
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let join = join.iter().map(|j| format!("\"{j}\"")).collect::<Vec<_>>().join(", ");
        let config = format!(
            "name = \"{name}\"\nlisten_addr = \"127.0.0.1:0\"\nmetrics_addr = \"127.0.0.1:0\"\ndata_dir = \"data\"\n\
join = [{join}]\nvoters = 3\n[tls]\nca = \"{c}/ca.pem\"\ncert = \"{c}/{name}.pem\"\nkey = \"{c}/{name}-key.pem\"\n\
[hypervisor]\nkind = \"sim\"\nlayout = \"{l}\"\ntime_scale = 50\n\
[timeouts]\nheartbeat_interval_ms = 100\nelection_timeout_min_ms = 600\nelection_timeout_max_ms = 1200\n\
rpc_timeout_ms = 1000\nconnect_timeout_ms = 500\nvoter_replace_after_ms = 3000\ninventory_poll_ms = 200\n\
inventory_debounce_ms = 50\nshutdown_deadline_ms = 5000\n",
            c = self.certs.display(),
            l = layout(layout_name).display(),
        );
        std::fs::write(dir.join("ternd.toml"), config).unwrap();
        self.agents.push(Agent {
            name: name.to_string(),
            dir,
            child: None,
            addr: None,
        });
        self.agents.len() - 1
    }

    /// Starts (or restarts) agent `i` and waits until it serves.
    pub fn start(&mut self, i: usize) -> String {
        let a = &mut self.agents[i];
        let file = a.dir.join("data/ternd.addr");
        let before = std::fs::metadata(&file).and_then(|m| m.modified()).ok();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(a.dir.join("ternd.log"))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_ternd"))
            .arg("--config")
            .arg(a.dir.join("ternd.toml"))
            .env("RUST_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        a.child = Some(child);
        let start = Instant::now();
        loop {
            let fresh = std::fs::metadata(&file)
                .and_then(|m| m.modified())
                .ok()
                .is_some_and(|m| Some(m) != before);
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

    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.agents[i].dir.join("ternd.log")).unwrap_or_default()
    }

    pub fn addr(&self, i: usize) -> String {
        self.agents[i].addr.clone().expect("agent started")
    }

    pub async fn channel(&self, i: usize) -> Channel {
        let tls = tern_tls::TlsFiles::in_dir(&self.certs, "ternctl")
            .client_config()
            .unwrap();
        Endpoint::from_shared(format!("https://{}", self.addr(i)))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .connect_lazy()
    }

    pub async fn status(&self, i: usize) -> Result<pb::ClusterStatus, tonic::Status> {
        let mut c = pb::cluster_client::ClusterClient::new(self.channel(i).await);
        c.status(pb::StatusRequest {}).await.map(tonic::Response::into_inner)
    }

    pub async fn domains(&self, i: usize) -> Result<Vec<pb::DomainInfo>, tonic::Status> {
        let mut c = pb::inventory_client::InventoryClient::new(self.channel(i).await);
        c.list_domains(pb::ListDomainsRequest::default())
            .await
            .map(|r| r.into_inner().domains)
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
        panic!(
            "waited {WAIT:?} for {what} on {}; last: {last}\nlog:\n{}",
            self.agents[i].name,
            self.log(i)
        );
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
            s.leader_id != 0
                && s.members
                    .iter()
                    .filter(|m| m.role == pb::MemberRole::Voter as i32)
                    .count()
                    == 3
        })
        .await;
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
            assert!(
                start.elapsed() < WAIT,
                "agent {i} never listed {n} domains: {}",
                self.log(i)
            );
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn index_of(&self, status: &pb::ClusterStatus, id: u64) -> usize {
        let addr = &status.members.iter().find(|m| m.node_id == id).expect("member").address;
        self.agents
            .iter()
            .position(|a| a.addr.as_deref() == Some(addr))
            .expect("agent for member")
    }
}
