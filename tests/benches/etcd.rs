//! tern beside etcd on the same disk (issue 18, part 1: measure only).
//!
//! One run starts a 3-member etcd (Debian's etcd-server: peers over mutual TLS, clients
//! on a plain and a mutual-TLS listener) and 3 real `ternd`s at their default timeouts,
//! all on loopback with their data in temp dirs on one filesystem, then:
//! - B2: 1, 16, 256 and 1000 concurrent clients, each for `TERN_BENCH_SECS` (default 3,
//!   after 0.5 s of warm-up): tern Reserve+Release of k=8 cores and m=16 memory ranges
//!   through `Cluster.Propose` over mutual TLS with node certificates (the only way to
//!   reserve without a migration: a user reserves only through Migrate's Prepare, B6);
//!   etcd the equivalent Txn (24 compares version == 0, 24 puts; then a Txn deleting
//!   them), over TLS and plain, and plain single-key puts;
//! - B6: the migration control path (a dry run: Begin, Prepare with the password login,
//!   or with the user certificate's ticket instead, Reserve, Commit),
//!   `TERN_BENCH_DRY_RUNS` runs (default 30) each;
//! - B3: append+fdatasync of 2.3 KB records by 1, 8 and 64 writers;
//! - B4: `TERN_BENCH_KILLS` (default 5) SIGKILLs of each leader under 16 clients of load:
//!   time from the kill to the next committed write started after it; the member is
//!   restarted each time; every acknowledged write is checked afterwards;
//! - one table, with the disk's fdatasync rate at the start and the end.
//!
//! `./dev bench` (or `cargo bench -p tern-tests --bench etcd`). `TERN_BENCH_CLIENTS`
//! (e.g. `1,16`) picks the B2 levels, `TERN_BENCH_ONLY` (e.g. `B2,B4`) the parts,
//! `TERN_BENCH_DIR` the filesystem; `TERN_BENCH_TIMELINE=1` prints, for each B4 kill,
//! the members' log lines about leadership and votes around it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tern_raft_store::{Command, Outcome};
use tern_tests::Cluster;
use tern_tests::bench::{self, Etcd, LEASE_MS, Proposer, SETTLE, Sample, SlotPair, slot_binding, synced_appends};
use tonic::transport::Channel;

const PW: &str = "bench-pass";
const RECORD: usize = 2300;
/// Clients per HTTP/2 connection (ternd takes 256 requests at once per connection).
const PER_CONN: usize = 64;
const WARM: Duration = Duration::from_millis(500);

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

struct Row {
    bench: String,
    clients: String,
    system: String,
    sample: Sample,
    /// tern's figures this row is the comparison for: (ops/s, p50, p99).
    tern: Option<(f64, Duration, Duration)>,
    note: String,
}

impl Row {
    fn new(bench: &str, clients: usize, system: &str, sample: Sample) -> Self {
        Self {
            bench: bench.into(),
            clients: clients.to_string(),
            system: system.into(),
            sample,
            tern: None,
            note: String::new(),
        }
    }
    fn print(&self) {
        let s = &self.sample;
        let ratio = self.tern.map_or_else(
            || "".to_string(),
            |(tps, p50, p99)| {
                let r = |a: f64, b: f64| if b > 0.0 { format!("{:.2}x", a / b) } else { "-".into() };
                format!(
                    "{} | {} | {}",
                    r(tps, s.per_s()),
                    r(p50.as_secs_f64(), s.p50().as_secs_f64()),
                    r(p99.as_secs_f64(), s.p99().as_secs_f64())
                )
            },
        );
        let ratio = if ratio.is_empty() { " | | ".to_string() } else { ratio };
        let errors = match (&s.first_error, s.errors) {
            (_, 0) => String::new(),
            (Some(e), n) => format!("{n} errors, first: {}", e.chars().take(80).collect::<String>()),
            (None, n) => format!("{n} errors"),
        };
        let note = [self.note.as_str(), errors.as_str()].iter().filter(|x| !x.is_empty()).cloned().collect::<Vec<_>>();
        println!(
            "| {} | {} | {} | {:.0} | {} | {} | {} | {} |",
            self.bench,
            self.clients,
            self.system,
            s.per_s(),
            ms(s.p50()),
            ms(s.p99()),
            ratio,
            note.join("; ")
        );
    }
}

/// Runs `clients` copies of `client(j, warm_until, stop)` and merges their samples.
async fn level<F, Fut>(clients: usize, measure: Duration, client: F) -> Sample
where
    F: Fn(usize, Instant, Instant) -> Fut,
    Fut: std::future::Future<Output = Sample> + Send + 'static,
{
    let warm_until = Instant::now() + WARM;
    let stop = warm_until + measure;
    let mut set = tokio::task::JoinSet::new();
    for j in 0..clients {
        set.spawn(client(j, warm_until, stop));
    }
    let mut all = Sample::default();
    while let Some(s) = set.join_next().await {
        all.merge(s.expect("client task"));
    }
    all.elapsed = measure;
    all.sorted()
}

fn failed(s: &mut Sample, e: String) {
    s.errors += 1;
    if s.first_error.is_none() {
        s.first_error = Some(e);
    }
}

/// One tern client of B2: Reserve (timed) then Release of slot `j`, until `stop`.
async fn tern_client(pair: Arc<SlotPair>, ch: Channel, j: u32, warm: Instant, stop: Instant) -> Sample {
    let mut s = Sample::default();
    while Instant::now() < stop {
        let t = Instant::now();
        let (reservation, token) = match pair.src.propose(&ch, pair.reserve(j)).await {
            Ok(Ok(Outcome::Reserved { reservation, token, .. })) => (reservation, token),
            Ok(Ok(other)) => panic!("Reserve answered {other:?}"),
            Ok(Err(r)) => {
                failed(&mut s, format!("Reserve refused: {r}"));
                continue;
            }
            Err(e) => {
                failed(&mut s, format!("Reserve: {e}"));
                continue;
            }
        };
        let took = t.elapsed();
        if let Err(e) = pair.src.propose(&ch, Command::Release { reservation, token }).await.map_err(|e| e.to_string())
        {
            failed(&mut s, format!("Release: {e}"));
        }
        if t >= warm {
            s.ops += 1;
            s.latencies.push(took);
        }
    }
    s
}

/// The keys etcd's equivalent of slot `j`'s reservation on `host` holds: one per strand
/// (k = 8) and one per memory range (m = 16).
fn etcd_keys(prefix: &str, j: u32) -> Vec<String> {
    let b = slot_binding("", j);
    let strands = b.strands.iter().map(|s| format!("{prefix}/strand/{s}"));
    let ranges = b.memory.iter().map(|r| format!("{prefix}/mem/{:#x}", r.pa));
    strands.chain(ranges).collect()
}

/// One etcd client of B2: a Txn claiming the keys if all are free, then one freeing them.
async fn etcd_txn_client(
    mut kv: etcd_client::KvClient,
    prefix: String,
    j: u32,
    warm: Instant,
    stop: Instant,
) -> Sample {
    use etcd_client::{Compare, CompareOp, Txn, TxnOp};
    let keys = etcd_keys(&prefix, j);
    let owner = format!("g{j}");
    let mut s = Sample::default();
    while Instant::now() < stop {
        let claim = Txn::new()
            .when(keys.iter().map(|k| Compare::version(k.as_str(), CompareOp::Equal, 0)).collect::<Vec<_>>())
            .and_then(keys.iter().map(|k| TxnOp::put(k.as_str(), owner.as_str(), None)).collect::<Vec<_>>());
        let t = Instant::now();
        match kv.txn(claim).await {
            Ok(r) if r.succeeded() => {}
            Ok(_) => {
                failed(&mut s, "claim Txn: a key was taken".into());
                continue;
            }
            Err(e) => {
                failed(&mut s, format!("claim Txn: {e}"));
                continue;
            }
        }
        let took = t.elapsed();
        let release = Txn::new()
            .when([Compare::value(keys[0].as_str(), CompareOp::Equal, owner.as_str())])
            .and_then(keys.iter().map(|k| TxnOp::delete(k.as_str(), None)).collect::<Vec<_>>());
        match kv.txn(release).await {
            Ok(r) if r.succeeded() => {}
            Ok(_) => failed(&mut s, "release Txn: not the owner".into()),
            Err(e) => failed(&mut s, format!("release Txn: {e}")),
        }
        if t >= warm {
            s.ops += 1;
            s.latencies.push(took);
        }
    }
    s
}

async fn etcd_put_client(mut kv: etcd_client::KvClient, key: String, warm: Instant, stop: Instant) -> Sample {
    let value = vec![b'v'; 256];
    let mut s = Sample::default();
    while Instant::now() < stop {
        let t = Instant::now();
        match kv.put(key.as_str(), value.clone(), None).await {
            Ok(_) if t >= warm => {
                s.ops += 1;
                s.latencies.push(t.elapsed());
            }
            Ok(_) => {}
            Err(e) => failed(&mut s, format!("put: {e}")),
        }
    }
    s
}

/// `n` etcd connections to `endpoint`.
async fn etcd_clients(etcd: &Etcd, endpoint: &str, n: usize) -> Vec<etcd_client::KvClient> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(etcd.client(&[endpoint.to_string()]).await.expect("etcd client").kv_client());
    }
    out
}

/// Tern's agents' addresses as the benchmark knows them (a restarted agent listens on
/// a new port), shared by the clients that follow the leader.
type Addrs = Arc<RwLock<Vec<String>>>;

/// A client of the whole tern cluster: sends to the member it believes leads, follows
/// the `tern-leader` hint, tries the next member when one does not answer.
#[derive(Clone)]
struct Router {
    who: Proposer,
    addrs: Addrs,
    current: String,
    channels: HashMap<String, Channel>,
    next: usize,
}

impl Router {
    fn new(who: Proposer, addrs: Addrs, leader: String) -> Self {
        Self { who, addrs, current: leader, channels: HashMap::new(), next: 0 }
    }
    fn channel(&mut self) -> Channel {
        let who = &self.who;
        self.channels.entry(self.current.clone()).or_insert_with(|| who.channel(&self.current)).clone()
    }
    fn moved(&mut self, e: &tonic::Status) {
        if let Some(leader) = bench::leader_hint(e) {
            self.current = leader;
        } else {
            let addrs = self.addrs.read().unwrap();
            self.next = (self.next + 1) % addrs.len();
            self.current = addrs[self.next].clone();
        }
    }
    /// Proposes until the cluster answers (accepted or refused) or `deadline` passes.
    async fn propose(&mut self, command: Command, deadline: Instant) -> Result<Result<Outcome, String>, String> {
        loop {
            let ch = self.channel();
            match self.who.propose(&ch, command.clone()).await {
                Ok(Ok(o)) => return Ok(Ok(o)),
                Ok(Err(r)) => return Ok(Err(r.to_string())),
                Err(e) => {
                    if Instant::now() > deadline {
                        return Err(e.to_string());
                    }
                    self.moved(&e);
                }
            }
        }
    }
}

/// Keeps the benchmark's own hosts Up (HA-01): a heartbeat each second to the leader.
fn heartbeats(hosts: Arc<Mutex<Vec<Proposer>>>, addrs: Addrs, leader: String, stop: Arc<AtomicBool>) {
    tokio::spawn(async move {
        let mut routers: HashMap<String, Router> = HashMap::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let list: Vec<Proposer> = hosts.lock().unwrap().clone();
            // All at once: one slow answer under load must not hold the others back
            // past the HA detector's lost_after_ms.
            let beats = list.into_iter().map(|p| {
                let r = routers
                    .entry(p.name.clone())
                    .or_insert_with(|| Router::new(p.clone(), addrs.clone(), leader.clone()))
                    .clone();
                async move {
                    let mut r = r;
                    for _ in 0..3 {
                        let ch = r.channel();
                        match r.who.heartbeat(&ch).await {
                            Ok(()) => break,
                            Err(e) => r.moved(&e),
                        }
                    }
                    r
                }
            });
            for r in futures_util::future::join_all(beats).await {
                routers.insert(r.who.name.clone(), r);
            }
        }
    });
}

/// B4 for tern: `kills` SIGKILLs of the leader under 16 Reserve+Release clients, with a
/// marker client holding every 100 ms one more reservation that is never released;
/// returns the kill-to-next-reservation times and the markers lost.
async fn tern_kills(
    c: &mut Cluster,
    addrs: Addrs,
    hosts: Arc<Mutex<Vec<Proposer>>>,
    kills: usize,
) -> (Sample, usize, usize) {
    let (_, leader) = bench::tern_leader(c).await;
    let (ls, ld) = (Proposer::new(c, "b4s"), Proposer::new(c, "b4d"));
    let (ms_, md) = (Proposer::new(c, "b4ms"), Proposer::new(c, "b4md"));
    hosts.lock().unwrap().extend([ls.clone(), ld.clone(), ms_.clone(), md.clone()]);
    const LOAD: u32 = 16;
    const LOAD_SLOTS: u32 = 8;
    const MARKERS: u32 = 800;
    let load = Arc::new(SlotPair::register(&leader, ls, ld, LOAD * LOAD_SLOTS).await);
    let markers = Arc::new(SlotPair::register(&leader, ms_, md, MARKERS).await);
    let stop = Arc::new(AtomicBool::new(false));
    let done: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let acked = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for j in 0..LOAD {
        let (pair, addrs, leader, stop, done, acked) =
            (load.clone(), addrs.clone(), leader.clone(), stop.clone(), done.clone(), acked.clone());
        tasks.spawn(async move {
            let mut r = Router::new(pair.src.clone(), addrs, leader);
            // Client j's slots: j, j + LOAD, ...; a Reserve whose answer a kill lost may
            // hold its slot until the lease ends, so a refused slot is left for the next.
            let mut slot = j;
            let mut pending: Option<(u64, u64)> = None;
            while !stop.load(Ordering::Relaxed) {
                if let Some((reservation, token)) = pending {
                    match r.propose(Command::Release { reservation, token }, Instant::now() + SETTLE).await {
                        Ok(_) => pending = None,
                        Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                    continue;
                }
                let t = Instant::now();
                match r.propose(pair.reserve(slot), t + SETTLE).await {
                    Ok(Ok(Outcome::Reserved { reservation, token, .. })) => {
                        done.lock().unwrap().push((t, Instant::now()));
                        acked.fetch_add(1, Ordering::Relaxed);
                        pending = Some((reservation, token));
                    }
                    Ok(_) => slot = (slot + LOAD) % (LOAD * LOAD_SLOTS),
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
            Vec::new()
        });
    }
    {
        let (pair, addrs, leader, stop, done) =
            (markers.clone(), addrs.clone(), leader.clone(), stop.clone(), done.clone());
        tasks.spawn(async move {
            let mut r = Router::new(pair.src.clone(), addrs, leader);
            let mut held = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            for j in 0..MARKERS {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                tick.tick().await;
                let t = Instant::now();
                if let Ok(Ok(Outcome::Reserved { reservation, token, .. })) =
                    r.propose(pair.reserve(j), t + SETTLE).await
                {
                    done.lock().unwrap().push((t, Instant::now()));
                    held.push((reservation, token));
                }
            }
            held
        });
    }
    let mut recovery = Sample::default();
    for k in 0..kills {
        // Load first: some reservations acknowledged since the last restart.
        let before = acked.load(Ordering::Relaxed);
        let start = Instant::now();
        while acked.load(Ordering::Relaxed) < before + 50 {
            assert!(start.elapsed() < SETTLE, "tern load made no progress before kill {k}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (i, _) = bench::tern_leader(c).await;
        let t0 = Instant::now();
        c.kill(i);
        let next = loop {
            if let Some(t) = done.lock().unwrap().iter().filter(|(s, _)| *s >= t0).map(|(_, d)| *d).min() {
                break t;
            }
            if t0.elapsed() > SETTLE {
                recovery.errors += 1;
                recovery.first_error = Some(format!("kill {k}: no reservation committed in {SETTLE:?}"));
                break Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        recovery.latencies.push(next - t0);
        recovery.ops += 1;
        if std::env::var_os("TERN_BENCH_TIMELINE").is_some() {
            print_kill_timeline(c, k, std::time::SystemTime::now() - t0.elapsed(), next - t0);
        }
        let addr = tokio::task::block_in_place(|| c.start(i));
        addrs.write().unwrap()[i] = addr;
        c.wait_status(i, "the restarted member back with a leader", |s| s.leader_id != 0).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut held = Vec::new();
    while let Some(r) = tasks.join_next().await {
        held.extend(r.expect("b4 task"));
    }
    // Every acknowledged marker must still be held: Renew refuses an unknown reservation.
    let (_, leader) = bench::tern_leader(c).await;
    let mut r = Router::new(markers.src.clone(), addrs.clone(), leader);
    let mut lost = 0;
    for (reservation, token) in &held {
        let renew = Command::Renew { reservation: *reservation, token: *token, lease_ms: LEASE_MS };
        if !matches!(r.propose(renew, Instant::now() + SETTLE).await, Ok(Ok(Outcome::Renewed { .. }))) {
            lost += 1;
        }
    }
    (recovery.sorted(), held.len(), lost)
}

/// `TERN_BENCH_TIMELINE`: what the members logged about leadership, votes and
/// warnings from 0.3 s before kill `k` (at wall time `killed`) to 8 s after, each line
/// with its offset from the kill, to see where a slow recovery (`took`) went.
fn print_kill_timeline(c: &Cluster, k: usize, killed: std::time::SystemTime, took: Duration) {
    let second_of_day =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64() % 86_400.0);
    let kill_s = second_of_day(killed);
    let wanted = ["leading", "election", "vote", "leader", "WARN"];
    println!("kill {k}: first reservation after {} ms", took.as_millis());
    for m in 0..c.agent_count() {
        for line in c.log(m).lines() {
            // `2026-12-07T23:14:06.952639Z  INFO ...`: the time of day is bytes 11..26.
            let Some(hms) = line.get(11..26) else { continue };
            let parts: Vec<f64> = hms.split(':').filter_map(|x| x.parse().ok()).collect();
            let [h, min, sec] = parts[..] else { continue };
            let at = h * 3600.0 + min * 60.0 + sec;
            if (kill_s - 0.3..=kill_s + 8.0).contains(&at) && wanted.iter().any(|w| line.contains(w)) {
                let text: String = line.get(27..).unwrap_or("").chars().take(200).collect();
                println!("  {:+6.0} ms m{m} {text}", (at - kill_s) * 1000.0);
            }
        }
    }
}

/// B4 for etcd: `kills` SIGKILLs of the leader under 16 put clients (TLS, every
/// endpoint); every acknowledged key is read back at the end.
async fn etcd_kills(etcd: &mut Etcd, kills: usize) -> (Sample, usize, usize) {
    let endpoints: Vec<String> = (0..etcd.members.len()).map(|i| etcd.https(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let done: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let acked = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for j in 0..16 {
        let mut kv = etcd.client(&endpoints).await.expect("etcd client").kv_client();
        let (stop, done, acked) = (stop.clone(), done.clone(), acked.clone());
        tasks.spawn(async move {
            let mut keys = Vec::new();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("/b4/{j}/{seq}");
                seq += 1;
                let t = Instant::now();
                match kv.put(key.as_str(), "x", None).await {
                    Ok(_) => {
                        done.lock().unwrap().push((t, Instant::now()));
                        acked.fetch_add(1, Ordering::Relaxed);
                        keys.push(key);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
            keys
        });
    }
    let mut recovery = Sample::default();
    for k in 0..kills {
        let before = acked.load(Ordering::Relaxed);
        let start = Instant::now();
        while acked.load(Ordering::Relaxed) < before + 50 {
            assert!(start.elapsed() < SETTLE, "etcd load made no progress before kill {k}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let i = etcd.wait_healthy().await.expect("etcd healthy");
        let t0 = Instant::now();
        etcd.kill(i);
        let next = loop {
            if let Some(t) = done.lock().unwrap().iter().filter(|(s, _)| *s >= t0).map(|(_, d)| *d).min() {
                break t;
            }
            if t0.elapsed() > SETTLE {
                recovery.errors += 1;
                recovery.first_error = Some(format!("kill {k}: no put committed in {SETTLE:?}"));
                break Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        recovery.latencies.push(next - t0);
        recovery.ops += 1;
        etcd.restart(i).expect("restart etcd member");
        etcd.wait_healthy().await.expect("etcd healthy after restart");
    }
    stop.store(true, Ordering::Relaxed);
    let mut keys = Vec::new();
    while let Some(r) = tasks.join_next().await {
        keys.extend(r.expect("b4 task"));
    }
    let mut kv = etcd.client(&endpoints).await.expect("etcd client").kv_client();
    let opts = etcd_client::GetOptions::new().with_prefix().with_keys_only();
    let got = kv.get("/b4/", Some(opts)).await.expect("read back");
    let present: std::collections::HashSet<Vec<u8>> = got.kvs().iter().map(|kv| kv.key().to_vec()).collect();
    let lost = keys.iter().filter(|k| !present.contains(k.as_bytes())).count();
    (recovery.sorted(), keys.len(), lost)
}

fn fdatasync_rate(when: &str) -> Sample {
    let dir = bench::bench_tempdir("tern-bench-disk-");
    let s = synced_appends(dir.path(), 1, RECORD, Duration::from_secs(2));
    println!("disk fdatasync ({when}): {:.0}/s, p50 {} ms, p99 {} ms", s.per_s(), ms(s.p50()), ms(s.p99()));
    s
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    tern_tls::install_crypto_provider();
    let secs: f64 = env("TERN_BENCH_SECS", 3.0);
    let measure = Duration::from_secs_f64(secs);
    let kills: usize = env("TERN_BENCH_KILLS", 5);
    let dry_runs: usize = env("TERN_BENCH_DRY_RUNS", 30);
    let levels: Vec<usize> = std::env::var("TERN_BENCH_CLIENTS")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 16, 256, 1000]);
    // `TERN_BENCH_ONLY=B2,B4` runs only those parts (all by default).
    let only: Option<Vec<String>> =
        std::env::var("TERN_BENCH_ONLY").ok().map(|v| v.split(',').map(|x| x.trim().to_ascii_uppercase()).collect());
    let runs = |part: &str| only.as_ref().is_none_or(|o| o.iter().any(|x| x == part));
    if let Err(e) = bench::etcd_binary() {
        eprintln!("bench: {e}");
        std::process::exit(1);
    }
    let mut rows: Vec<Row> = Vec::new();
    let disk_start = fdatasync_rate("start");

    let mut etcd = match Etcd::start(3).await {
        Ok(e) => e,
        Err(e) => {
            eprintln!("bench: etcd did not start: {e}");
            std::process::exit(1);
        }
    };
    let etcd_leader = etcd.wait_healthy().await.expect("etcd leader");
    println!("etcd: 3 members up, leader {}", etcd.members[etcd_leader].name);

    let layouts = tempfile::tempdir().unwrap();
    let mut c = Cluster::new();
    c.time_scale = 100_000;
    c.timeouts = Some(String::new()); // ternd's defaults
    let mut first: Option<String> = None;
    for (i, guests) in [(0, 4), (1, 0), (2, 0)] {
        let name = format!("tern-{i}");
        let path = layouts.path().join(format!("{name}.toml"));
        std::fs::write(&path, tern_tests::layouts::synthetic("g0-", guests, 16, 64)).unwrap();
        let join: Vec<String> = first.iter().cloned().collect();
        let idx = c.add_layout(&name, &path, &join);
        let addr = c.start(idx);
        first.get_or_insert(addr);
    }
    c.wait_status(0, "3 voters and a leader", |s| {
        s.leader_id != 0 && s.members.iter().filter(|m| m.role == tern_proto::v1::MemberRole::Voter as i32).count() == 3
    })
    .await;
    c.wait_domains(0, 3 + 4).await;
    c.add_user("root", PW, &["System Administrator"]).await;
    let addrs: Addrs = Arc::new(RwLock::new((0..3).map(|i| c.addr(i)).collect()));
    let (tern_leader_idx, leader) = bench::tern_leader(&c).await;
    println!("tern: 3 agents up, leader {}", c.agents[tern_leader_idx].name);
    let hosts: Arc<Mutex<Vec<Proposer>>> = Arc::default();
    let stop_hb = Arc::new(AtomicBool::new(false));
    heartbeats(hosts.clone(), addrs.clone(), leader.clone(), stop_hb.clone());

    // B2.
    let etcd_https = etcd.https(etcd_leader);
    let etcd_http = etcd.http(etcd_leader);
    for &n in levels.iter().filter(|_| runs("B2")) {
        let conns = n.div_ceil(PER_CONN);
        let (src, dst) = (Proposer::new(&c, &format!("bs{n}")), Proposer::new(&c, &format!("bd{n}")));
        hosts.lock().unwrap().extend([src.clone(), dst.clone()]);
        let t = Instant::now();
        let pair = Arc::new(SlotPair::register(&leader, src, dst, n as u32).await);
        println!("B2 {n} clients: hosts with {n} slots registered in {:.1} s", t.elapsed().as_secs_f64());
        let channels: Vec<Channel> = (0..conns).map(|_| pair.src.channel(&leader)).collect();
        // Defaults that never elect spuriously under this load (issue 18): the term
        // must not move while the level runs.
        let term_before = c.status(tern_leader_idx).await.map(|s| s.term).unwrap_or_default();
        let tern =
            level(n, measure, |j, w, s| tern_client(pair.clone(), channels[j % conns].clone(), j as u32, w, s)).await;
        let elections = c.status(tern_leader_idx).await.map(|s| s.term).unwrap_or_default().saturating_sub(term_before);
        let tern_fig = (tern.per_s(), tern.p50(), tern.p99());
        println!(
            "  tern Reserve+Release: {:.0}/s p50 {} ms p99 {} ms ({} errors{})",
            tern_fig.0,
            ms(tern_fig.1),
            ms(tern_fig.2),
            tern.errors,
            tern.first_error.as_deref().map(|e| format!(", first: {e}")).unwrap_or_default()
        );
        // Replication errors openraft logged so far (where the profile of a slow level starts).
        let logged = |what: &str| (0..3).map(|i| c.log(i).lines().filter(|l| l.contains(what)).count()).sum::<usize>();
        println!(
            "  tern: {elections} elections; replication errors logged so far: {} (timeouts {})",
            logged("RPCError"),
            logged("timeout after")
        );
        let mut row = Row::new("B2", n, "tern Reserve+Release, mTLS", tern);
        row.note = format!("{elections} elections");
        rows.push(row);
        for (what, endpoint) in [("TLS", &etcd_https), ("plain", &etcd_http)] {
            let kvs = etcd_clients(&etcd, endpoint, conns).await;
            let prefix = format!("/{what}/bd{n}");
            let s =
                level(n, measure, |j, w, st| etcd_txn_client(kvs[j % conns].clone(), prefix.clone(), j as u32, w, st))
                    .await;
            println!("  etcd Txn {what}: {:.0}/s p50 {} ms p99 {} ms", s.per_s(), ms(s.p50()), ms(s.p99()));
            let mut row = Row::new("B2", n, &format!("etcd Txn 24 keys, {what}"), s);
            row.tern = Some(tern_fig);
            rows.push(row);
        }
        for (what, endpoint) in [("TLS", &etcd_https), ("plain", &etcd_http)] {
            let kvs = etcd_clients(&etcd, endpoint, conns).await;
            let s = level(n, measure, |j, w, st| {
                etcd_put_client(kvs[j % conns].clone(), format!("/put/{what}/{j}"), w, st)
            })
            .await;
            println!("  etcd put {what}: {:.0}/s p50 {} ms p99 {} ms", s.per_s(), ms(s.p50()), ms(s.p99()));
            let mut row = Row::new("B2", n, &format!("etcd put 1 key, {what}"), s);
            row.tern = Some(tern_fig);
            rows.push(row);
        }
        etcd.check_running().expect("etcd still running");
    }

    // B6, through the helper migration.rs's loop also fits.
    let src = c.host("tern-0");
    if runs("B6") {
        for (login, what) in [(Some(("root", PW)), "password login"), (None, "certificate ticket")] {
            let lat = bench::dry_run_latencies(&c, src, "g0-0", "tern-1", login, dry_runs).await;
            let n = lat.len();
            let total: Duration = lat.iter().sum();
            let b6 = Sample { ops: n, elapsed: total, latencies: lat, ..Default::default() };
            let mut row = Row::new("B6", 1, &format!("tern dry-run migration, {what}"), b6);
            row.note = format!("{n} runs, sequential");
            rows.push(row);
        }
    }

    // B3.
    let dir = bench::bench_tempdir("tern-bench-appends-");
    for writers in [1, 8, 64].into_iter().filter(|_| runs("B3")) {
        let s = synced_appends(dir.path(), writers, RECORD, measure);
        let mut row = Row::new("B3", writers, "append+fdatasync 2.3 KB, file per writer", s);
        row.note = "writers".into();
        rows.push(row);
    }

    // B4.
    if runs("B4") {
        let (e, e_acked, e_lost) = etcd_kills(&mut etcd, kills).await;
        let mut row = Row::new("B4", 16, "etcd leader SIGKILL -> next put", e);
        row.note = format!("{kills} kills, {e_acked} acknowledged puts, {e_lost} lost");
        let (t, t_acked, t_lost) = tern_kills(&mut c, addrs.clone(), hosts.clone(), kills).await;
        let mut trow = Row::new("B4", 16, "tern leader SIGKILL -> next reservation", t);
        trow.note = format!("{kills} kills, {t_acked} acknowledged held reservations, {t_lost} lost");
        row.tern = Some((0.0, trow.sample.p50(), trow.sample.p99()));
        rows.push(trow);
        rows.push(row);
    }
    stop_hb.store(true, Ordering::Relaxed);

    let disk_end = fdatasync_rate("end");
    println!();
    println!(
        "disk fdatasync of {RECORD} B: {:.0}/s at the start (p50 {} ms), {:.0}/s at the end (p50 {} ms)",
        disk_start.per_s(),
        ms(disk_start.p50()),
        disk_end.per_s(),
        ms(disk_end.p50())
    );
    println!(
        "B2/B6 ops/s: completed reservations (each Reserve+Release, or claim+release Txn) or puts per second; \
         p50/p99: the Reserve / claim Txn / put / dry run; B4 columns: kill to next commit. \
         Ratios: tern / this row (ops/s above 1 = tern faster; latency below 1 = tern faster)."
    );
    println!();
    println!(
        "| bench | clients | system | ops/s | p50 ms | p99 ms | tern/this ops/s | tern/this p50 | tern/this p99 | note |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        r.print();
    }
}
