//! End to end: a disk that refuses writes (issue 15). The OS's file-size limit
//! (`ulimit -f`, EFBIG, as a full disk's ENOSPC) makes RocksDB's next log append fail
//! under a real `ternd`; its Raft stops with a fatal error. The agent must then stop
//! serving and exit non-zero with the reason (for its supervisor), never go on
//! answering with Raft dead; restarted without the limit, it serves every write it
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_whose_disk_refuses_writes_exits_non_zero_and_keeps_every_acknowledged_write() {
    // Goal: past the file-size limit the write fails, ternd exits 1 naming the failed
    // write, and after a restart without the limit every acknowledged change is applied.
    let mut c = Cluster::new();
    c.add("m10-1-1", "m10-1-1", &[]);
    let (_, output) = c.start_under(0, &format!("trap '' XFSZ; ulimit -f {LIMIT_KIB}"));
    c.wait_domains(0, 2).await;

    let mut acknowledged = Vec::new();
    let refusal = loop {
        let group = format!("g-{}", acknowledged.len());
        match set_group(&c, &group).await {
            Ok(()) => acknowledged.push(group),
            Err(e) => break e,
        }
        assert!(acknowledged.len() < 10_000, "{LIMIT_KIB} KiB never filled up");
    };
    assert!(acknowledged.len() >= 3, "only {} writes before the limit: {refusal}", acknowledged.len());

    // The process ends by itself, with status 1 and the reason on its output.
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
    let out = output.lock().unwrap().clone();
    assert_eq!(status.code(), Some(1), "ternd's exit status; its output:\n{out}");
    assert!(out.contains("stopped with a fatal error"), "no fatal reason in the output:\n{out}");
    assert!(out.contains("File too large"), "the failed write is not named:\n{out}");

    // Restarted on the same disk without the limit: every acknowledged change is there.
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
    set_group(&c, "after-restart").await.expect("a write after the restart");
}
