//! Reserve commands committed per second through a 3-member cluster (RocksDB stores in
//! temporary directories, every append and apply synced), at 1, 16 and 256 concurrent
//! proposers, with p50/p99 latency; and beside it the raw RocksDB synced-write rate on
//! the same disk (the floor under every commit).
//!
//! `cargo bench -p tern-raft-store --bench commit` (release build). Stores go to
//! `$TERN_BENCH_DIR`, else the system temp dir. `TERN_BENCH_SECS` sets the measured
//! seconds per level (default 8, after 1 s of warm-up).
//!
//! Each proposer repeats: Reserve (timed) a fixed slot on the target for its migration,
//! then Release it, so the state stays small and no two proposers ever conflict. Every
//! Reserve is therefore a committed, accepted command; the log carries as many Releases.

#[path = "../tests/support/cluster.rs"]
mod cluster;
#[path = "../tests/common/mod.rs"]
mod common;

use cluster::{Cluster, Storage};
use common::*;
use std::time::{Duration, Instant};
use tern_raft_store::{Command, Error, OperationKind, Outcome, Raft, Request, propose};

const GUESTS: u32 = 256;
const LEASE_MS: u64 = 600_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn request(command: Command) -> Request {
    Request { proposed_at_ms: now_ms(), actor: "bench".into(), from: String::new(), command }
}

struct Level {
    proposers: usize,
    reserves: usize,
    elapsed: Duration,
    p50: Duration,
    p99: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn must(raft: &Raft, command: Command) -> Outcome {
    match propose(raft, request(command)).await {
        Ok(applied) => applied.outcome,
        Err(e) => panic!("setup command failed: {e}"),
    }
}

/// Hosts a (256 guests g0..g255, each on one core and one 1 GiB block) and b (empty,
/// room for all of them), and one running migration a -> b per guest. Returns the
/// operation ids by guest.
async fn setup(raft: &Raft) -> Vec<u64> {
    let mut a = server("a", GUESTS + 4, u64::from(GUESTS) + 8);
    for g in 0..GUESTS {
        a = with_guest(a, &format!("g{g}"), &[g + 1], gib(2 + u64::from(g)), None);
    }
    must(raft, Command::RegisterHost { host: spec("a") }).await;
    must(raft, Command::RegisterHost { host: spec("b") }).await;
    must(raft, Command::ReportInventory { server: a }).await;
    must(raft, Command::ReportInventory { server: server("b", GUESTS + 4, u64::from(GUESTS) + 8) }).await;
    let mut ops = Vec::new();
    for g in 0..GUESTS {
        let kind = OperationKind::Migration {
            domain: format!("g{g}"),
            source: "a".into(),
            target: "b".into(),
            new_name: None,
            dry_run: false,
            plan: None,
        };
        match must(raft, Command::BeginOperation { kind }).await {
            Outcome::OperationBegun { operation } => ops.push(operation),
            other => panic!("unexpected {other:?}"),
        }
    }
    ops
}

/// One proposer: reserve-then-release its guests' slots until `stop`; returns Reserve latencies.
async fn proposer(raft: Raft, ops: Vec<(u32, u64)>, warm_until: Instant, stop: Instant) -> Vec<Duration> {
    let mut latencies = Vec::new();
    let mut i = 0usize;
    while Instant::now() < stop {
        let (g, op) = ops[i % ops.len()];
        i += 1;
        let reserve = Command::Reserve {
            operation: op,
            target: "b".into(),
            source: "a".into(),
            domain: format!("g{g}"),
            binding: binding(&format!("g{g}"), &[g + 1], gib(2 + u64::from(g)), None),
            lease_ms: LEASE_MS,
        };
        let started = Instant::now();
        let (reservation, token) = match propose(&raft, request(reserve)).await {
            Ok(applied) => match applied.outcome {
                Outcome::Reserved { reservation, token, .. } => (reservation, token),
                other => panic!("unexpected {other:?}"),
            },
            Err(Error::Rejected(r)) => panic!("reserve rejected: {r}"),
            Err(e) => panic!("reserve failed: {e}"),
        };
        if started >= warm_until {
            latencies.push(started.elapsed());
        }
        let release = Command::Release { reservation, token };
        if let Err(e) = propose(&raft, request(release)).await {
            panic!("release failed: {e}");
        }
    }
    latencies
}

async fn level(raft: &Raft, ops: &[u64], proposers: usize, measure: Duration) -> Level {
    let warm_until = Instant::now() + Duration::from_secs(1);
    let stop = warm_until + measure;
    let mut tasks = Vec::new();
    for p in 0..proposers {
        let mine: Vec<(u32, u64)> =
            (0..GUESTS).filter(|g| *g as usize % proposers == p).map(|g| (g, ops[g as usize])).collect();
        tasks.push(tokio::spawn(proposer(raft.clone(), mine, warm_until, stop)));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("proposer task"));
    }
    all.sort_unstable();
    Level { proposers, reserves: all.len(), elapsed: measure, p50: percentile(&all, 0.50), p99: percentile(&all, 0.99) }
}

/// Sequential synced single-entry writes straight to RocksDB, entry-sized values.
fn raw_synced_writes(count: usize, value_bytes: usize) -> (f64, Duration, Duration) {
    let dir = tempfile::tempdir_in(cluster::bench_dir()).expect("tempdir");
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    let db = rocksdb::DB::open(&opts, dir.path()).expect("open");
    let mut sync = rocksdb::WriteOptions::default();
    sync.set_sync(true);
    let value = vec![b'x'; value_bytes];
    let mut lat = Vec::with_capacity(count);
    let start = Instant::now();
    for i in 0..count as u64 {
        let t = Instant::now();
        db.put_opt(i.to_be_bytes(), &value, &sync).expect("put");
        lat.push(t.elapsed());
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    lat.sort_unstable();
    (rate, percentile(&lat, 0.5), percentile(&lat, 0.99))
}

fn main() {
    let secs: u64 = std::env::var("TERN_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    println!("stores under {}", cluster::bench_dir().display());
    let raw = |when: &str| {
        let (rate, p50, p99) = raw_synced_writes(2_000, 400);
        println!("raw RocksDB synced put (400 B, sequential), {when}: {rate:.0}/s  p50 {p50:?}  p99 {p99:?}");
    };
    // Before and after: the disk is shared, so this brackets its speed during the run.
    raw("before");
    runtime.block_on(async {
        let c = Cluster::start(&[1, 2, 3], Storage::Rocks, cluster::config(10_000)).await;
        let leader = c.leader(Duration::from_secs(10)).await;
        let raft = c.raft(leader).clone();
        let ops = setup(&raft).await;
        println!("3 members, RocksDB, synced appends and applies; Reserve+Release per iteration, Reserve timed");
        println!("proposers  reserves/s  commands/s  p50        p99");
        for proposers in [1, 16, 256] {
            let l = level(&raft, &ops, proposers, Duration::from_secs(secs)).await;
            let per_s = l.reserves as f64 / l.elapsed.as_secs_f64();
            println!("{:>9}  {:>10.0}  {:>10.0}  {:<9?}  {:?}", l.proposers, per_s, 2.0 * per_s, l.p50, l.p99);
        }
        c.shutdown().await;
    });
    raw("after");
}
