//! `ternctl local-cluster`: N real `ternd` processes on loopback, for trying tern out
//! and for end-to-end tests. Ports are chosen by the OS; each agent writes the address
//! it bound to `DIR/<host>/data/ternd.addr`, which is how the others find it.

use crate::client::AgentArgs;
use anyhow::{Context, anyhow, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tern_proto::limits::MessageLimits;
use tern_proto::v1 as pb;

/// How long `up` waits for the agents to form a cluster.
pub const UP_DEADLINE: Duration = Duration::from_secs(120);
/// How long `down` waits for an agent to stop after SIGTERM before SIGKILL.
pub const DOWN_DEADLINE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(100);

#[derive(clap::Args, Debug, Clone)]
pub struct UpArgs {
    /// Folder for certificates, configs, data and logs (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Number of agents, one per simulated server.
    #[arg(long, default_value_t = 3)]
    pub agents: usize,
    #[command(flatten)]
    pub servers: Servers,
}

/// The simulated servers and the agent binary (`local-cluster up`, `demo`).
#[derive(clap::Args, Debug, Clone)]
pub struct Servers {
    /// Folder of layout files; agent i runs the i-th server (the seed's m10-1-1 and
    /// m10-1-2 first, then the rest by name).
    #[arg(long, value_name = "DIR", default_value = "deploy/layouts")]
    pub layouts: PathBuf,
    /// Simulated milliseconds per real millisecond for migrations.
    #[arg(long, default_value_t = 20)]
    pub time_scale: u32,
    /// The ternd binary (default: beside ternctl, else on PATH).
    #[arg(long, value_name = "PATH")]
    pub ternd: Option<PathBuf>,
    /// How the agents drive their servers: `sim`, the simulated hypervisor; or `ldm`,
    /// the real ldm backend running `ldm` commands against fake-ldm servers made from
    /// the layouts (DIR/fleet/<host>/: their state, a `ldm` link, migrations that move
    /// guests between them).
    #[arg(long, value_enum, default_value_t = Backend::Sim)]
    pub backend: Backend,
    /// The fake-ldm binary for `--backend ldm` (default: beside ternctl, else on PATH).
    #[arg(long, value_name = "PATH")]
    pub fake_ldm: Option<PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sim,
    Ldm,
}

/// How long a fake-ldm migration takes in a local cluster (`DIR/fleet/<host>/migration_ms`).
const FAKE_LDM_MIGRATION_MS: u64 = 3000;

/// The `[hypervisor]` table of agent `name` on `layout`. For ldm, its fake server is
/// made first, with what ldm does not print taken from the layout.
fn hypervisor_table(
    servers: &Servers,
    dir: &Path,
    name: &str,
    layout: &Path,
    password: &str,
) -> anyhow::Result<String> {
    let layout = abs(layout)?;
    if servers.backend == Backend::Sim {
        return Ok(format!(
            "[hypervisor]\nkind = \"sim\"\nlayout = \"{}\"\ntime_scale = {}\n",
            layout.display(),
            servers.time_scale
        ));
    }
    let server = tern_hypervisor::layout::load_layout(&layout)
        .with_context(|| format!("reading layout {}", layout.display()))?;
    let fake = sibling_binary(servers.fake_ldm.as_deref(), "fake-ldm");
    if !fake.exists() && servers.fake_ldm.is_some() {
        bail!("--fake-ldm {}: no such file", fake.display());
    }
    let fleet = dir.join("fleet");
    let ldm = tern_hypervisor::ldm::render::write_fleet_server(&fleet, &server, &fake)
        .with_context(|| format!("making the fake ldm server {}", fleet.join(name).display()))?;
    let server_dir = fleet.join(&server.name);
    std::fs::write(server_dir.join("migration_ms"), FAKE_LDM_MIGRATION_MS.to_string())?;
    // ldmd on every target accepts root's password (OP-03, OP-04).
    std::fs::write(server_dir.join("migrate-domain.password"), format!("{password}\n"))?;
    let run = dir.join(name).join("run");
    std::fs::create_dir_all(&run)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o700))?;
    }
    // The account ldm logs in as on the targets, and its password (OP-03 `-p`).
    let target_password = dir.join(name).join("ldm-target.password");
    write_private(&target_password, &format!("{password}\n"))?;
    let (facts, shared, inactive) = tern_hypervisor::ldm::render::unprinted(&server);
    let list = |v: &[String]| v.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>().join(", ");
    Ok(format!(
        "[hypervisor]\nkind = \"ldm\"\nldm_path = \"{ldm}\"\nmodel = {model:?}\ncpu = \"{family}\"\n\
frequency_mhz = {mhz}\nfirmware = \"{firmware}\"\nos = \"{os}\"\nshared_storage = [{shared}]\n\
inactive_cores = {inactive:?}\npassword_dir = \"{run}\"\nprogress_interval_ms = 250\n\
target_user = \"root\"\ntarget_password_file = \"{target_password}\"\n",
        ldm = ldm.display(),
        model = facts.model,
        family = facts.cpu.family,
        mhz = facts.cpu.frequency_mhz,
        firmware = facts.firmware,
        os = facts.os,
        shared = list(&shared.device_prefixes),
        run = run.display(),
        target_password = target_password.display(),
    ))
}

/// `given`, else the program `name` beside ternctl, else `name` on PATH.
fn sibling_binary(given: Option<&Path>, name: &str) -> PathBuf {
    if let Some(p) = given {
        return p.to_path_buf();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .or_else(|| {
            let path = std::env::var_os("PATH")?;
            std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.exists())
        })
        .unwrap_or_else(|| PathBuf::from(name))
}

/// The layouts to run, the seed's source and target first.
fn pick_layouts(dir: &Path, n: usize) -> anyhow::Result<Vec<PathBuf>> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading layouts folder {} (pass --layouts DIR)", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    let rank = |p: &PathBuf| match p.file_stem().and_then(|s| s.to_str()) {
        Some("m10-1-1") => 0,
        Some("m10-1-2") => 1,
        _ => 2,
    };
    all.sort_by_key(|p| (rank(p), p.clone()));
    if n == 0 || n > all.len() {
        bail!("--agents {n}: {} has {} layouts; choose 1..={}", dir.display(), all.len(), all.len());
    }
    all.truncate(n);
    Ok(all)
}

fn abs(p: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("resolving {}", p.display()))
}

/// A started local cluster.
pub struct Up {
    /// The first agent's address (it runs m10-1-1, the seed's source).
    pub addr: String,
    pub certs: PathBuf,
    pub names: Vec<String>,
    pub password_file: PathBuf,
}

/// `local-cluster up`: starts the cluster and prints how to reach it.
pub async fn up(args: &UpArgs) -> anyhow::Result<i32> {
    let up = start(args).await?;
    let dir = abs(&args.dir)?;
    println!("# {} agents up ({}); logs in {}/<host>/ternd.log", up.names.len(), up.names.join(", "), dir.display());
    println!("# user root (System Administrator): ternctl migrate-domain -p {} ...", up.password_file.display());
    println!("export TERN_AGENT={} TERN_CERTS_DIR={}", up.addr, up.certs.display());
    Ok(0)
}

/// Writes certificates and configs, starts the agents, waits for the cluster, and
/// creates the user `root` whose password is in `DIR/root.password` (mode 0600).
pub async fn start(args: &UpArgs) -> anyhow::Result<Up> {
    let dir = abs(&args.dir)?;
    let certs = dir.join("certs");
    if certs.join("ca.pem").exists() {
        bail!(
            "{} already holds a cluster; run `ternctl local-cluster down --dir {}` and remove it first",
            dir.display(),
            dir.display()
        );
    }
    let layouts = pick_layouts(&args.servers.layouts, args.agents)?;
    tern_tls::init_ca(&certs, "local")?;
    tern_tls::issue(&certs, "ternctl", &crate::certs::admin_role(), None)?;
    let ternd = sibling_binary(args.servers.ternd.as_deref(), "ternd");
    let password = random_password()?;
    let mut first_addr: Option<String> = None;
    let mut names = Vec::new();
    for (i, layout) in layouts.iter().enumerate() {
        let name = layout.file_stem().and_then(|s| s.to_str()).unwrap_or("node").to_string();
        tern_tls::issue(&certs, &name, &tern_tls::Role::Node { sans: vec![], loopback: true }, None)?;
        let node = dir.join(&name);
        std::fs::create_dir_all(node.join("data"))?;
        let join = first_addr.iter().map(|a| format!("\"{a}\"")).collect::<Vec<_>>().join(", ");
        let config = format!(
            "# Written by `ternctl local-cluster up`.\n\
name = \"{name}\"\nlisten_addr = \"127.0.0.1:0\"\nmetrics_addr = \"127.0.0.1:0\"\n\
data_dir = \"data\"\njoin = [{join}]\nvoters = 3\n\n\
[tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n\n{hypervisor}",
            ca = certs.join("ca.pem").display(),
            cert = certs.join(format!("{name}.pem")).display(),
            key = certs.join(format!("{name}-key.pem")).display(),
            hypervisor = hypervisor_table(&args.servers, &dir, &name, layout, &password)?,
        );
        let config_path = node.join("ternd.toml");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(node.join("ternd.log"))?;
        let child = spawn_detached(
            Command::new(&ternd)
                .arg("--config")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log),
        )
        .with_context(|| format!("starting {} (pass --ternd PATH)", ternd.display()))?;
        std::fs::write(node.join("ternd.pid"), format!("{child}\n"))?;
        if i == 0 {
            first_addr = Some(wait_for_addr(&node).await?);
        }
        names.push(name);
    }
    let addr = first_addr.ok_or_else(|| anyhow!("no agent started"))?;
    let agent = AgentArgs {
        agent: Some(addr.clone()),
        certs_dir: Some(certs.clone()),
        cert_name: "ternctl".into(),
        timeout_ms: 5000,
    };
    wait_for_cluster(&agent, names.len()).await?;
    // Now that the others have their ports, the founder joins through them when it
    // restarts: should its data directory be lost, it rejoins this cluster instead of
    // founding a new one (join = [] only ever makes sense the very first time).
    let mut others = Vec::new();
    for name in names.iter().skip(1) {
        others.push(format!("\"{}\"", wait_for_addr(&dir.join(name)).await?));
    }
    if let Some(founder) = names.first() {
        let path = dir.join(founder).join("ternd.toml");
        let text = std::fs::read_to_string(&path)?;
        std::fs::write(&path, text.replacen("join = []", &format!("join = [{}]", others.join(", ")), 1))?;
    }
    let password_file = dir.join("root.password");
    write_private(&password_file, &format!("{password}\n"))?;
    let mut users = pb::users_client::UsersClient::new(agent.connect().await?).with_message_limits();
    let req = pb::AddUserRequest {
        name: "root".into(),
        password,
        profiles: vec!["System Administrator".into()],
        replace: true,
    };
    users.add_user(req).await.map_err(|s| anyhow!("creating user root: {}", s.message()))?;
    Ok(Up { addr, certs, names, password_file })
}

/// 128 random bits as hex, from the operating system.
fn random_password() -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(unix)]
fn spawn_detached(cmd: &mut Command) -> std::io::Result<u32> {
    use std::os::unix::process::CommandExt;
    // A process group of its own, so the agents outlive this ternctl and its terminal.
    Ok(cmd.process_group(0).spawn()?.id())
}

async fn wait_for_addr(node: &Path) -> anyhow::Result<String> {
    let file = node.join("data").join("ternd.addr");
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&file)
            && let Some(addr) = text.lines().next().filter(|l| !l.is_empty())
        {
            return Ok(addr.to_string());
        }
        if !pid_alive(node) {
            bail!("the agent in {} exited; see {}", node.display(), node.join("ternd.log").display());
        }
        if start.elapsed() > UP_DEADLINE {
            bail!(
                "{} did not appear within {:?}; see {}",
                file.display(),
                UP_DEADLINE,
                node.join("ternd.log").display()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the cluster has a leader, `members` members of which min(members, 3)
/// are voters, and every host has reported its inventory.
async fn wait_for_cluster(agent: &AgentArgs, members: usize) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut last = String::from("no answer yet");
    let voters_wanted = members.min(3);
    while start.elapsed() < UP_DEADLINE {
        match status(agent).await {
            Ok(st) => {
                let voters = st.members.iter().filter(|m| m.role == pb::MemberRole::Voter as i32).count();
                let reported = st.members.iter().filter(|m| m.host_status == pb::HostStatus::Up as i32).count();
                let hosts = inventories(agent).await.unwrap_or(0);
                if st.leader_id != 0 && st.members.len() >= members && voters >= voters_wanted && hosts >= members {
                    return Ok(());
                }
                last = format!(
                    "{} of {members} members, {voters} voters, {reported} hosts registered, {hosts} inventories",
                    st.members.len()
                );
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(POLL).await;
    }
    bail!("the cluster did not form within {UP_DEADLINE:?}: {last}")
}

/// How many hosts have reported an inventory.
async fn inventories(agent: &AgentArgs) -> anyhow::Result<usize> {
    let mut c = pb::inventory_client::InventoryClient::new(agent.connect().await?).with_message_limits();
    let resp = c.list_devices(pb::ListDevicesRequest { host: String::new(), all: false }).await?;
    Ok(resp.into_inner().hosts.len())
}

async fn status(agent: &AgentArgs) -> anyhow::Result<pb::ClusterStatus> {
    let mut c = pb::cluster_client::ClusterClient::new(agent.connect().await?).with_message_limits();
    Ok(c.status(pb::StatusRequest {}).await?.into_inner())
}

fn read_pid(node: &Path) -> Option<u32> {
    std::fs::read_to_string(node.join("ternd.pid")).ok()?.trim().parse().ok()
}

fn pid_alive(node: &Path) -> bool {
    read_pid(node).is_some_and(alive)
}

/// Whether `pid` runs. A zombie (exited, not yet reaped) counts as stopped.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"),
        Err(_) if Path::new("/proc/self").exists() => false,
        Err(_) => signal(pid, "0"),
    }
}

fn signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Stops every agent under `dir`: SIGTERM, then SIGKILL after [`DOWN_DEADLINE`].
pub async fn down(dir: &Path) -> anyhow::Result<i32> {
    let mut stopped = 0;
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for node in entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.join("ternd.pid").exists()) {
        let Some(pid) = read_pid(&node) else { continue };
        if !alive(pid) {
            continue;
        }
        signal(pid, "TERM");
        let start = Instant::now();
        while alive(pid) && start.elapsed() < DOWN_DEADLINE {
            tokio::time::sleep(POLL).await;
        }
        if alive(pid) {
            signal(pid, "KILL");
            eprintln!("{}: did not stop within {DOWN_DEADLINE:?}; killed", node.display());
        }
        stopped += 1;
    }
    println!("stopped {stopped} agent(s) under {}", dir.display());
    Ok(0)
}
