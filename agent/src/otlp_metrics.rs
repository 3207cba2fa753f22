//! The values of `/metrics`, pushed over OTLP/gRPC when `[telemetry] otlp_endpoint` is
//! set: one export of every family every [`EXPORT_EVERY`].
//!
//! One source of truth: the push encodes the same registry the scrape does
//! ([`Metrics::refresh`] then [`Metrics::encode`]) and converts the OpenMetrics text
//! into OTLP messages, as a collector's Prometheus receiver would: a gauge becomes
//! an OTLP gauge, a counter a cumulative monotonic sum (named without `_total`), a
//! histogram a cumulative explicit-bucket histogram (Prometheus's cumulative `le`
//! buckets turned into per-bucket counts). Every point carries the agent's start as
//! its start time, so a receiver sees counter resets where Prometheus does.
//! An export that fails is logged (once per run of failures) and the next one sends
//! the values again: cumulative values lose nothing when one push is lost.

use crate::metrics::Metrics;
use crate::node::Node;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics,
    ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often the metrics are pushed (a Prometheus scrape interval's usual order).
pub const EXPORT_EVERY: Duration = Duration::from_secs(10);
/// The deadline of one export call.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Families converted at most (far above the agent's own; a bound all the same).
pub const FAMILIES_MAX: usize = 1024;

/// One family of the OpenMetrics text.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    /// The name of the `# TYPE` line (a counter's without `_total`).
    pub name: String,
    pub help: String,
    pub kind: Kind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Gauge(Vec<Point>),
    Counter(Vec<Point>),
    Histogram(Vec<HistogramPoint>),
}

/// One sample: its labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Point {
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// One histogram series: cumulative buckets by upper bound (`+Inf` last), sum, count.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct HistogramPoint {
    pub labels: Vec<(String, String)>,
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

/// Reads the OpenMetrics text [`Metrics::encode`] writes. Families of other types
/// (none today) are skipped; a malformed line is an error naming it.
pub fn parse(text: &str) -> Result<Vec<Family>, String> {
    let mut families: Vec<Family> = Vec::new();
    let mut helps: Vec<(String, String)> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let bad = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        if line.is_empty() || line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            helps.push((name.to_string(), help.to_string()));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(|| bad("a TYPE line without a type"))?;
            let kind = match kind {
                "gauge" => Kind::Gauge(Vec::new()),
                "counter" => Kind::Counter(Vec::new()),
                "histogram" => Kind::Histogram(Vec::new()),
                _ => continue,
            };
            if families.len() >= FAMILIES_MAX {
                return Err(format!("more than {FAMILIES_MAX} metric families"));
            }
            let help = helps.iter().find(|(h, _)| h == name).map(|(_, h)| h.clone()).unwrap_or_default();
            families.push(Family { name: name.to_string(), help, kind });
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, labels, value) = sample(line).map_err(|e| bad(&e))?;
        // OpenMetrics keeps a family's samples together, right after its TYPE line.
        let Some(family) = families.last_mut().filter(|f| series.starts_with(f.name.as_str())) else {
            continue;
        };
        let suffix = &series[family.name.len()..];
        match (&mut family.kind, suffix) {
            (Kind::Gauge(points), "") | (Kind::Counter(points), "_total") => points.push(Point { labels, value }),
            (Kind::Histogram(points), "_bucket" | "_sum" | "_count") => {
                let (le, rest): (Vec<_>, Vec<_>) = labels.into_iter().partition(|(k, _)| k == "le");
                let at = match points.iter().position(|p| p.labels == rest) {
                    Some(i) => i,
                    None => {
                        points.push(HistogramPoint { labels: rest, ..Default::default() });
                        points.len() - 1
                    }
                };
                let p = &mut points[at];
                match suffix {
                    "_bucket" => {
                        let le = le.first().ok_or_else(|| bad("a bucket without le"))?;
                        let bound = if le.1 == "+Inf" { f64::INFINITY } else { le.1.parse().map_err(|_| bad("le"))? };
                        p.buckets.push((bound, value as u64));
                    }
                    "_sum" => p.sum = value,
                    _ => p.count = value as u64,
                }
            }
            _ => {}
        }
    }
    Ok(families)
}

/// `name{a="x",b="y"} value` as (name, labels, value), with OpenMetrics escapes.
/// A sample line read: its series name, labels and value.
type Sample = (String, Vec<(String, String)>, f64);

fn sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = line[..name_end].to_string();
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            body = body.strip_prefix(',').unwrap_or(body);
            if let Some(after) = body.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = body.find("=\"").ok_or("a label without =\"")?;
            let key = body[..eq].to_string();
            let mut value = String::new();
            let mut chars = body[eq + 2..].char_indices();
            let close = loop {
                match chars.next().ok_or("unterminated label value")? {
                    (i, '"') => break eq + 2 + i,
                    (_, '\\') => match chars.next().ok_or("a dangling escape")?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((key, value));
            body = &body[close + 1..];
        }
    }
    let value = rest.split_whitespace().next().ok_or("no value")?;
    Ok((name, labels, parse_value(value)?))
}

fn parse_value(v: &str) -> Result<f64, String> {
    match v {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => v.parse().map_err(|_| format!("value {v:?} is not a number")),
    }
}

fn attributes(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| string_kv(k, v)).collect()
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.to_string())) }),
        ..Default::default()
    }
}

/// Who the values are about, as OTLP resource attributes.
#[derive(Clone, Debug)]
pub struct Origin {
    pub service_name: String,
    pub host: String,
    /// When the agent started (its counters' start), Unix nanoseconds.
    pub start_unix_nano: u64,
}

/// The OTLP export of `families`, observed at `now_unix_nano`.
pub fn to_request(families: &[Family], origin: &Origin, now_unix_nano: u64) -> ExportMetricsServiceRequest {
    let number = |p: &Point| NumberDataPoint {
        attributes: attributes(&p.labels),
        start_time_unix_nano: origin.start_unix_nano,
        time_unix_nano: now_unix_nano,
        value: Some(number_data_point::Value::AsDouble(p.value)),
        ..Default::default()
    };
    let metrics = families
        .iter()
        .map(|f| {
            let data = match &f.kind {
                Kind::Gauge(points) => metric::Data::Gauge(Gauge { data_points: points.iter().map(number).collect() }),
                Kind::Counter(points) => metric::Data::Sum(Sum {
                    data_points: points.iter().map(number).collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
                Kind::Histogram(points) => metric::Data::Histogram(Histogram {
                    data_points: points
                        .iter()
                        .map(|p| {
                            let mut cumulative = 0;
                            let bucket_counts = p
                                .buckets
                                .iter()
                                .map(|(_, c)| {
                                    let n = c.saturating_sub(cumulative);
                                    cumulative = *c;
                                    n
                                })
                                .collect();
                            HistogramDataPoint {
                                attributes: attributes(&p.labels),
                                start_time_unix_nano: origin.start_unix_nano,
                                time_unix_nano: now_unix_nano,
                                count: p.count,
                                sum: Some(p.sum),
                                bucket_counts,
                                explicit_bounds: p.buckets.iter().map(|(b, _)| *b).filter(|b| b.is_finite()).collect(),
                                ..Default::default()
                            }
                        })
                        .collect(),
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                }),
            };
            Metric { name: f.name.clone(), description: f.help.clone(), data: Some(data), ..Default::default() }
        })
        .collect();
    let resource = Resource {
        attributes: vec![
            string_kv("service.name", &origin.service_name),
            string_kv("host.name", &origin.host),
            string_kv("service.version", tern_dist::VERSION),
        ],
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "ternd".into(),
                    version: tern_dist::VERSION.into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

fn unix_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Pushes the agent's metrics to `endpoint` every `every` until `shutdown`, then once
/// more (the last values).
pub async fn run(node: Node, endpoint: String, service_name: String, every: Duration, shutdown: CancellationToken) {
    let channel = match tonic::transport::Endpoint::from_shared(endpoint.clone()) {
        Ok(e) => e.connect_timeout(EXPORT_TIMEOUT).timeout(EXPORT_TIMEOUT).connect_lazy(),
        Err(e) => {
            warn!(%endpoint, error = %e, "OTLP metrics export is off: the endpoint is not a URI");
            return;
        }
    };
    let mut client = MetricsServiceClient::new(channel);
    let origin = Origin { service_name, host: node.name.clone(), start_unix_nano: unix_nanos() };
    let mut failing = false;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let last = tokio::select! {
            () = shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        let request = export(&node.metrics, &node, &origin);
        match request {
            Ok(request) => match client.export(request).await {
                Ok(_) if failing => {
                    info!(%endpoint, "OTLP metrics export works again");
                    failing = false;
                }
                Ok(_) => {}
                Err(status) if !failing => {
                    warn!(%endpoint, code = ?status.code(), error = %status.message(), "OTLP metrics export failed; retrying every interval");
                    failing = true;
                }
                Err(_) => {}
            },
            Err(e) => warn!(error = %e, "the metrics text did not convert to OTLP"),
        }
        if last {
            return;
        }
    }
}

fn export(metrics: &Metrics, node: &Node, origin: &Origin) -> Result<ExportMetricsServiceRequest, String> {
    metrics.refresh(node);
    Ok(to_request(&parse(&metrics.encode())?, origin, unix_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP tern_raft_term Current Raft term.\n# TYPE tern_raft_term gauge\ntern_raft_term 7\n\
# HELP tern_raft_proposals Commands written.\n# TYPE tern_raft_proposals counter\n\
tern_raft_proposals_total{command=\"reserve\",result=\"committed\"} 3\n\
# TYPE tern_x_seconds histogram\ntern_x_seconds_sum{kind=\"wal\"} 0.75\ntern_x_seconds_count{kind=\"wal\"} 4\n\
tern_x_seconds_bucket{le=\"0.1\",kind=\"wal\"} 1\ntern_x_seconds_bucket{le=\"0.5\",kind=\"wal\"} 3\n\
tern_x_seconds_bucket{le=\"+Inf\",kind=\"wal\"} 4\n\
# TYPE tern_host_status gauge\ntern_host_status{host=\"a \\\"b\\\"\\\\c\",status=\"up\"} 1\n# EOF\n";

    #[test]
    fn reads_gauges_counters_histograms_and_escaped_labels() {
        // Goal: every family of the agent's OpenMetrics text is read with its labels.
        let f = parse(TEXT).unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(f[0].kind, Kind::Gauge(vec![Point { labels: vec![], value: 7.0 }]));
        assert_eq!(f[0].help, "Current Raft term.");
        let Kind::Counter(c) = &f[1].kind else { panic!("{f:?}") };
        assert_eq!(c[0].labels, vec![("command".into(), "reserve".into()), ("result".into(), "committed".into())]);
        let Kind::Histogram(h) = &f[2].kind else { panic!("{f:?}") };
        assert_eq!(h.len(), 1);
        assert_eq!((h[0].count, h[0].sum, h[0].buckets.len()), (4, 0.75, 3));
        let Kind::Gauge(g) = &f[3].kind else { panic!("{f:?}") };
        assert_eq!(g[0].labels[0].1, "a \"b\"\\c");
    }

    #[test]
    fn refuses_a_malformed_sample_naming_its_line() {
        // Goal: garbage is an error with its line, never a wrong value.
        let e = parse("# TYPE tern_a gauge\ntern_a{host=\"x} 1\n").unwrap_err();
        assert!(e.starts_with("line 2:"), "{e}");
        let e = parse("# TYPE tern_a gauge\ntern_a seven\n").unwrap_err();
        assert!(e.contains("not a number"), "{e}");
    }

    #[test]
    fn converts_cumulative_prometheus_buckets_into_otlp_bucket_counts() {
        // Goal: OTLP gets per-bucket counts and finite bounds; counters are monotonic sums.
        let origin = Origin { service_name: "ternd".into(), host: "m10-1-1".into(), start_unix_nano: 5 };
        let req = to_request(&parse(TEXT).unwrap(), &origin, 9);
        let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
        let Some(metric::Data::Histogram(h)) = &metrics[2].data else { panic!("{metrics:?}") };
        assert_eq!(h.data_points[0].bucket_counts, vec![1, 2, 1]);
        assert_eq!(h.data_points[0].explicit_bounds, vec![0.1, 0.5]);
        assert_eq!(h.data_points[0].start_time_unix_nano, 5);
        let Some(metric::Data::Sum(s)) = &metrics[1].data else { panic!("{metrics:?}") };
        assert!(s.is_monotonic);
        assert_eq!(metrics[1].name, "tern_raft_proposals");
    }

    #[test]
    fn converts_the_agents_own_registry() {
        // Goal: every family the agent registers converts (none skipped, none malformed).
        let m = Metrics::new();
        let text = m.encode();
        let families = parse(&text).unwrap();
        let types = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
        assert_eq!(families.len(), types, "{text}");
    }
}
