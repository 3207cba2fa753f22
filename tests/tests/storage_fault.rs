//! End to end: a disk that refuses writes (issue 15), two ways: the OS's file-size limit
//! (`ulimit -f`, EFBIG), and a real full filesystem (a small tmpfs filled up, ENOSPC)
//! where the machine lets the test mount one. Under a real `ternd`, RocksDB's next write
//! fails and its Raft stops with a fatal error. The agent must then stop serving and
//! exit non-zero with the reason (for its supervisor), never go on answering with Raft
//! dead; restarted once the disk takes writes again, it serves every write it
//! acknowledged.

use std::time::{Duration, Instant};
use tern_proto::v1 as pb;
use tern_tests::{Cluster, WAIT};

/// The file-size limit, in KiB (bash's `ulimit -f` unit): room for the store's files
/// at start (about 11 KiB of log), then a few dozen writes.
const LIMIT_KIB: u32 = 64;

async fn set_group(c: &Cluster, group: &str) -> Result<(), tonic::Status> {
    let mut ha = pb::ha_client::HaClient::new(c.channel(0).await);
    let req =
        pb::HaSetDomainRequest { domain: "ldom1".into(), affinity_group: Some(group.into()), ..Default::default() };
    ha.set_domain(req).await.map(drop)
}

/// Sets ldom1's group until a write is refused: the groups acknowledged, and the refusal.
async fn write_until_refused(c: &Cluster) -> (Vec<String>, tonic::Status) {
    let mut acknowledged = Vec::new();
    loop {
        let group = format!("g-{}", acknowledged.len());
        match set_group(c, &group).await {
            Ok(()) => acknowledged.push(group),
            Err(e) => return (acknowledged, e),
        }
        assert!(acknowledged.len() < 10_000, "the disk never filled up");
    }
}

/// Waits for agent 0 to end by itself; its exit code and output.
async fn wait_exit(
    c: &mut Cluster,
    output: &std::sync::Mutex<String>,
    refusal: &tonic::Status,
) -> (Option<i32>, String) {
    let child = c.agents[0].child.as_mut().unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < WAIT,
            "ternd still runs {WAIT:?} after its Raft failed ({refusal}):\n{}",
            output.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    c.agents[0].child = None;
    (status.code(), output.lock().unwrap().clone())
}

/// Restarts agent 0 on its disk: every acknowledged group change must be applied, and
/// it takes writes again.
async fn restart_keeps(c: &mut Cluster, acknowledged: &[String]) {
    c.start(0);
    c.wait_domains(0, 2).await;
    let mut cluster = pb::cluster_client::ClusterClient::new(c.channel(0).await);
    let audit = cluster.audit(pb::AuditRequest { limit: 0, ..Default::default() }).await.unwrap().into_inner().entries;
    let applied: Vec<&str> = audit
        .iter()
        .filter(|e| e.outcome == "ok")
        .filter_map(|e| e.summary.strip_prefix("domain ldom1: affinity-group="))
        .collect();
    let lost: Vec<&String> = acknowledged.iter().filter(|g| !applied.contains(&g.as_str())).collect();
    assert!(lost.is_empty(), "acknowledged but not applied after the restart: {lost:?}\naudit: {applied:?}");
    set_group(c, "after-restart").await.expect("a write after the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_disk_refuses_writes_exits_non_zero_and_keeps_every_acknowledged_write() {
    // Goal: past the file-size limit the write fails, ternd exits 1 naming the failed
    // write, and after a restart without the limit every acknowledged change is applied.
    let mut c = Cluster::new();
    c.add("m10-1-1", "m10-1-1", &[]);
    let (_, output) = c.start_under(0, &format!("trap '' XFSZ; ulimit -f {LIMIT_KIB}"));
    c.wait_domains(0, 2).await;
    let (acknowledged, refusal) = write_until_refused(&c).await;
    assert!(acknowledged.len() >= 3, "only {} writes before the limit: {refusal}", acknowledged.len());
    let (code, out) = wait_exit(&mut c, &output, &refusal).await;
    assert_eq!(code, Some(1), "ternd's exit status; its output:\n{out}");
    assert!(out.contains("stopped with a fatal error"), "no fatal reason in the output:\n{out}");
    assert!(out.contains("File too large"), "the failed write is not named:\n{out}");
    restart_keeps(&mut c, &acknowledged).await;
}

/// A tmpfs mounted on a folder for the test's life (unmounted on drop).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// `None` where the machine does not let this process mount one (not root, or no
    /// mount namespace rights): the test then says so and checks nothing.
    fn mount(at: &std::path::Path, size_mib: u32) -> Option<Self> {
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(at)
            .output()
            .ok()?;
        if out.status.success() {
            Some(Self(at.to_path_buf()))
        } else {
            eprintln!(
                "cannot mount a tmpfs here ({}); the ENOSPC case is not run",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            None
        }
    }

    /// Fills the filesystem, then frees `leave_kib` of it again.
    fn fill_leaving(&self, leave_kib: u64) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(leave_kib * 1024)).unwrap();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_on_a_full_filesystem_exits_non_zero_and_resumes_once_space_returns() {
    // Goal: on a real ENOSPC the write is refused with the reason, ternd exits 1, and once
    // space is freed it restarts on the same data with every acknowledged change applied.
    let mut c = Cluster::new();
    c.add("m10-1-1", "m10-1-1", &[]);
    let Some(fs) = Tmpfs::mount(&c.agents[0].dir.join("data"), 16) else { return };
    let (_, output) = c.start_under(0, "true");
    c.wait_domains(0, 2).await;
    let filler = fs.fill_leaving(256);
    let (acknowledged, refusal) = write_until_refused(&c).await;
    assert!(acknowledged.len() >= 3, "only {} writes in 256 KiB: {refusal}", acknowledged.len());
    assert!(refusal.message().contains("No space left on device"), "the refusal does not say why: {refusal}");
    let (code, out) = wait_exit(&mut c, &output, &refusal).await;
    assert_eq!(code, Some(1), "ternd's exit status; its output:\n{out}");
    assert!(out.contains("No space left on device"), "the failed write is not named:\n{out}");
    std::fs::remove_file(filler).unwrap();
    restart_keeps(&mut c, &acknowledged).await;
    c.kill(0);
    drop(fs);
}
