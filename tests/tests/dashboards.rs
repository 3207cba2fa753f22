//! The dashboard and the alerts (issue 16) against real tools and a real cluster:
//! `promtool` checks the scrape config and the rules and runs the rules' unit tests, lints
//! a real scrape of each agent, and a real Prometheus scraping a 3-agent cluster during a
//! migration answers every PromQL expression of `deploy/grafana/tern.json` and of
//! `deploy/prometheus/rules/tern.rules.yml`, whose metric names must all be in the scrape.
//!
//! `prometheus` and `promtool` (Debian's `prometheus` package) are installed by
//! `./dev deps` when missing (the test runs it); if they are still missing the test fails,
//! saying so.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tern_proto::v1::migrate_event::Event;
use tern_tests::{Cluster, WAIT};

const PW: &str = "s3cret-pass";

fn workspace() -> PathBuf {
    tern_tests::workspace()
}

fn deploy(file: &str) -> PathBuf {
    workspace().join("deploy").join(file)
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `name` on PATH.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// The tool `name`, installed with `./dev deps` (once per test process) when missing.
fn tool(name: &str) -> PathBuf {
    if let Some(p) = on_path(name) {
        return p;
    }
    static DEPS: OnceLock<String> = OnceLock::new();
    let deps = DEPS.get_or_init(|| {
        let out = Command::new(workspace().join("dev")).arg("deps").output().expect("running ./dev deps");
        format!("./dev deps exited {}:\n{}", out.status, text(&out))
    });
    on_path(name).unwrap_or_else(|| panic!("{name} is missing and ./dev deps did not install it; {deps}"))
}

/// `promtool ARGS`, with `stdin` on its standard input.
fn promtool(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(tool("promtool"))
        .args(args)
        .current_dir(workspace())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running promtool {args:?}: {e}"));
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_scrape_config_and_its_rule_file_pass_promtool_check_config() {
    // Goal: deploy/prometheus/prometheus.yml is a valid config and loads rules/tern.rules.yml.
    let out = promtool(&["check", "config", "deploy/prometheus/prometheus.yml"], "");
    assert!(out.status.success(), "promtool check config: {}", text(&out));
    assert!(text(&out).contains("1 rule files found"), "{}", text(&out));
}

#[test]
fn the_alert_rules_pass_promtool_check_rules() {
    // Goal: every recording and alerting rule parses and lints clean.
    let out = promtool(&["check", "rules", "deploy/prometheus/rules/tern.rules.yml"], "");
    assert!(out.status.success(), "promtool check rules: {}", text(&out));
}

#[test]
fn every_alert_fires_in_one_unit_test_and_stays_quiet_in_another() {
    // Goal: `promtool test rules` passes, and it has for each alert a case named
    // "<alert> fires ..." and one named "<alert> does not fire ...".
    let rules = std::fs::read_to_string(deploy("prometheus/rules/tern.rules.yml")).unwrap();
    let tests = std::fs::read_to_string(deploy("prometheus/tests/tern.rules.test.yml")).unwrap();
    let alerts: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("- alert: ")).collect();
    assert_eq!(alerts.len(), 10, "{alerts:?}");
    for alert in &alerts {
        for case in ["fires", "does not fire"] {
            assert!(tests.contains(&format!("- name: {alert} {case}")), "no unit test \"{alert} {case} ...\"");
        }
    }
    let out = promtool(&["test", "rules", "deploy/prometheus/tests/tern.rules.test.yml"], "");
    assert!(out.status.success(), "promtool test rules: {}", text(&out));
}

/// What `promtool check metrics` says about an agent's scrape that is not tern's fault.
///
/// prometheus-client writes OpenMetrics, where a counter's `# HELP`/`# TYPE` name the family
/// (`tern_reservations_created`) and its sample carries `_total`; promtool 2.x lints with the
/// classic text-format parser, which looks for the help of `tern_reservations_created_total`
/// and reports "no help text". Exactly those lines are accepted, and only for a family the
/// scrape declares a counter with a help text.
fn real_problems(scrape: &str, lint: &str) -> Vec<String> {
    lint.lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| {
            let Some(family) = l.strip_suffix(" no help text").and_then(|n| n.strip_suffix("_total")) else {
                return true;
            };
            let declared = scrape.lines().any(|s| s == format!("# TYPE {family} counter"));
            let helped = scrape.lines().any(|s| s.starts_with(&format!("# HELP {family} ")));
            !(declared && helped)
        })
        .map(String::from)
        .collect()
}

/// `promtool check metrics` on agent `i`'s /metrics: the problems that are tern's.
async fn lint(c: &Cluster, i: usize) -> Vec<String> {
    let http = c.metrics(i).await;
    let (head, scrape) = http.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(scrape.contains("# TYPE tern_raft_proposal_duration_seconds histogram"), "{scrape}");
    let out = promtool(&["check", "metrics"], scrape);
    // promtool exits 3 for lint problems (the accepted ones too), 1 when it cannot parse.
    assert!(out.status.success() || out.status.code() == Some(3), "promtool check metrics: {}", text(&out));
    real_problems(scrape, &text(&out)).into_iter().map(|p| format!("{}: {p}", c.agents[i].name)).collect()
}

// ---- a real Prometheus ------------------------------------------------------------------

/// A `prometheus` server on loopback, killed when dropped.
struct Prometheus {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Scrapes `targets` (host:port) every second as job "tern" and evaluates the repo's rules.
    async fn start(targets: &[String]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let targets = targets.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(", ");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
rule_files:\n  - '{rules}'\nscrape_configs:\n  - job_name: tern\n    static_configs:\n      - targets: [{targets}]\n",
            rules = deploy("prometheus/rules/tern.rules.yml").display(),
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        // An OS-chosen free port (Prometheus does not say which port it bound).
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = format!("127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        let mut p = Self { child, addr, dir };
        let start = Instant::now();
        loop {
            if let Ok((200, _)) = p.get("/-/ready").await {
                return p;
            }
            if let Some(status) = p.child.try_wait().unwrap() {
                panic!("prometheus exited with {status}: {}", p.log());
            }
            assert!(start.elapsed() < WAIT, "prometheus never became ready: {}", p.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// GET `path` over HTTP/1.0 (so the answer is not chunked): status and body.
    async fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(&self.addr).await?;
        conn.write_all(format!("GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr).as_bytes()).await?;
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await?;
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        Ok((status, body.to_string()))
    }

    /// An API call's JSON answer (error answers too: they say why).
    async fn api(&self, path: &str) -> serde_json::Value {
        let (status, body) = self.get(path).await.unwrap_or_else(|e| panic!("GET {path}: {e}"));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {status} {body:?}: {e}"))
    }

    /// `/api/v1/query` of `expr` at the current time.
    async fn query(&self, expr: &str) -> serde_json::Value {
        self.api(&format!("/api/v1/query?query={}", encode(expr))).await
    }

    /// Waits until `expr` answers a non-empty vector.
    async fn wait_for(&self, expr: &str) {
        let start = Instant::now();
        loop {
            let answer = self.query(expr).await;
            if answer["data"]["result"].as_array().is_some_and(|r| !r.is_empty()) {
                return;
            }
            assert!(start.elapsed() < WAIT, "{expr} never held; last answer {answer}; log:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every target expression of the dashboard, with Grafana's variables as a query sees them
/// with "All" hosts and a 1m rate interval.
fn dashboard_exprs() -> Vec<(String, String)> {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(workspace().join("deploy/grafana/tern.json")).unwrap()).unwrap();
    fn walk(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().expect("every target has an expr");
                let expr = expr
                    .replace("${host}", ".*")
                    .replace("$host", ".*")
                    .replace("$__rate_interval", "1m")
                    .replace("$__interval", "1m");
                out.push((format!("panel \"{}\"", p["title"].as_str().unwrap_or("?")), expr));
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&json["panels"], &mut out);
    assert_eq!(json["uid"], "tern");
    out
}

/// The `tern_*` metric names an expression reads (names of recorded series, `a:b:c`, and
/// everything inside string literals are not).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut bare = String::new();
    let mut quote = None;
    let mut escaped = false;
    for ch in expr.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if ch == '\\' {
                    escaped = true;
                } else if ch == q {
                    quote = None;
                }
                bare.push(' ');
            }
            None if matches!(ch, '"' | '\'' | '`') => {
                quote = Some(ch);
                bare.push(' ');
            }
            None => bare.push(ch),
        }
    }
    bare.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("tern_") && !w.contains(':'))
        .map(String::from)
        .collect()
}

/// `name` without a histogram series suffix: the family the spec names.
fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrating_cluster_lints_clean_and_prometheus_answers_every_dashboard_and_rule_expression() {
    // Goal: a real Prometheus scrapes the 3 agents while ldom1 migrates; afterwards each
    // agent's /metrics passes `promtool check metrics`, every PromQL expression of the
    // dashboard and the rules answers "success", every rule evaluates healthy, the $host
    // variable lists the 3 hosts, and every tern_* name used is in the scraped names.
    let c = Cluster::with_layouts(&["m10-1-1", "m10-1-2", "m10-1-3"], 50).await;
    c.add_user("root", PW, &["System Administrator"]).await;
    let targets: Vec<String> = (0..3)
        .map(|i| std::fs::read_to_string(c.agents[i].dir.join("data/metrics.addr")).unwrap().trim().to_string())
        .collect();
    let prom = Prometheus::start(&targets).await;

    let migration = c.migrate(c.host("m10-1-1"), "ldom1", "m10-1-2", "", false, "root", PW).await.unwrap();
    let (outcome, ()) = tokio::join!(Cluster::outcome(migration), async {
        prom.wait_for(r#"count(up{job="tern"} == 1) == 3"#).await;
        prom.wait_for("sum(tern_migrations_started_total) >= 1").await;
    });
    assert!(matches!(outcome.unwrap(), Event::Report(_)), "the migration did not complete");
    prom.wait_for(r#"sum(tern_migrations_finished_total{result="done"}) >= 1"#).await;
    prom.wait_for("sum(tern_migration_downtime_seconds_count) >= 1").await;

    // The leader's and the followers' scrapes, with the migration's and gRPC's series in them.
    let mut problems = Vec::new();
    let mut declared = BTreeSet::new();
    for i in 0..3 {
        problems.extend(lint(&c, i).await);
        let scrape = c.metrics(i).await;
        declared.extend(scrape.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next().map(String::from)));
    }
    assert!(problems.is_empty(), "promtool check metrics: {problems:#?}");

    // Every rule of the file loaded, evaluated at least once, and healthy.
    let rules_file = std::fs::read_to_string(deploy("prometheus/rules/tern.rules.yml")).unwrap();
    let in_file = rules_file
        .lines()
        .filter(|l| l.trim_start().starts_with("- record: ") || l.trim_start().starts_with("- alert: "))
        .count();
    let start = Instant::now();
    let rules = loop {
        let answer = prom.api("/api/v1/rules").await;
        let rules: Vec<serde_json::Value> = answer["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = rules.iter().all(|r| r["lastEvaluation"].as_str().is_some_and(|t| !t.starts_with("0001")));
        if rules.len() == in_file && evaluated {
            break rules;
        }
        assert!(start.elapsed() < WAIT, "want {in_file} rules evaluated, Prometheus has: {answer}\n{}", prom.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let unhealthy: Vec<String> = rules
        .iter()
        .filter(|r| r["health"] != "ok")
        .map(|r| format!("{}: {} {}", r["name"], r["health"], r["lastError"]))
        .collect();
    assert!(unhealthy.is_empty(), "rules not healthy: {unhealthy:#?}");

    let mut exprs = dashboard_exprs();
    assert!(exprs.len() >= 40, "the dashboard has only {} expressions", exprs.len());
    for r in &rules {
        exprs.push((format!("rule {}", r["name"]), r["query"].as_str().expect("a rule's query").to_string()));
    }
    let mut refused = Vec::new();
    for (what, expr) in &exprs {
        let answer = prom.query(expr).await;
        if answer["status"] != "success" {
            refused.push(format!("{what}: {expr}\n    {}: {}", answer["errorType"], answer["error"]));
        }
    }
    assert!(refused.is_empty(), "Prometheus refused {} expressions:\n{}", refused.len(), refused.join("\n"));

    let hosts = prom.api(&format!("/api/v1/label/host/values?match[]={}", encode("tern_host_free_cores"))).await;
    assert_eq!(hosts["data"], serde_json::json!(["m10-1-1", "m10-1-2", "m10-1-3"]), "the $host variable's values");

    let names = prom.api("/api/v1/label/__name__/values").await;
    let scraped: BTreeSet<&str> = names["data"].as_array().unwrap().iter().filter_map(|n| n.as_str()).collect();
    let used: BTreeSet<String> = exprs.iter().flat_map(|(_, e)| metric_names(e)).collect();
    assert!(used.len() >= 40, "only {} metric names found in the expressions: {used:?}", used.len());
    let missing: BTreeSet<&str> = used.iter().filter(|n| !scraped.contains(n.as_str())).map(|n| family(n)).collect();
    let (empty, unknown): (BTreeSet<&str>, BTreeSet<&str>) =
        missing.iter().partition(|f| declared.contains(**f) || declared.contains(f.trim_end_matches("_total")));
    assert!(
        missing.is_empty(),
        "metric names the dashboard or rules use that Prometheus never scraped a sample of: {missing:?}\n\
         declared by the agents but with no series: {empty:?}; not served at all: {unknown:?}"
    );
    drop(prom);
}

#[test]
fn metric_names_skip_strings_and_recorded_series() {
    // Goal: the name parser of the test above reads only the metric names of an expression.
    let expr = r#"sum by (end) (rate(tern_reservations_ended_total{end="tern_x"}[5m])) > job:tern_raft_is_leader:sum
        and histogram_quantile(0.99, tern_rocksdb_sync_duration_seconds_bucket)"#;
    let names: Vec<String> = metric_names(expr).into_iter().collect();
    assert_eq!(names, ["tern_reservations_ended_total", "tern_rocksdb_sync_duration_seconds_bucket"]);
    assert_eq!(family("tern_rocksdb_sync_duration_seconds_bucket"), "tern_rocksdb_sync_duration_seconds");
}
