//! OpenTelemetry traces (issue 16): the OTLP/gRPC exporter `[telemetry]` configures,
//! and the W3C trace context (`traceparent`) carried across every gRPC hop, so that one
//! migration is one trace across its source, the leader and its target.
//!
//! - **Which spans are exported.** The spans of `tern-migrate` (a migration and its
//!   phases, a resize) and the server span of each RPC, opened by
//!   [`crate::call_context::CallContext`]; never
//!   the agent's long-lived task spans (`join`, `inventory`, `heartbeat`, `recovery`,
//!   the leader's duties), which would make every call of the agent's life one trace,
//!   nor openraft's. Events at info and above inside an exported span become its span
//!   events. The log's `RUST_LOG` filter does not apply to traces.
//! - **Outgoing.** [`crate::transport::request_within`], which builds every request an
//!   agent sends to another, writes the current span's context into its metadata
//!   ([`inject`]); nothing is written when no exported span is current.
//! - **Incoming.** [`crate::call_context::CallContext`], the tower layer on the gRPC server, reads the caller's
//!   context from the request headers and runs the handler inside a server span named
//!   after the method (`tern.v1.Migration/Prepare`, attributes `rpc.system`,
//!   `rpc.service`, `rpc.method`, and `rpc.grpc.status_code` when the call fails before
//!   answering), its parent the caller's span. The frequent background calls (every
//!   `tern.v1.Raft` message, the HA heartbeat, the status probes) are traced only when
//!   their caller's trace is sampled, which openraft's own calls never are: heartbeats
//!   stay untraced. So is `Migration.Migrate` from `ternctl`: the migration span is then
//!   the root of its trace.
//! - **Never stalls the agent.** Spans queue in a bounded queue ([`QUEUE_SPANS_MAX`];
//!   full, new spans are dropped) and are sent in batches by the SDK's own thread, each
//!   export with a deadline ([`EXPORT_TIMEOUT`]). Shutdown flushes within
//!   [`SHUTDOWN_DEADLINE`].

use crate::config::TelemetryConfig;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tonic::codegen::http;
use tracing::{Level, Metadata, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{LevelFilter, filter_fn};

/// The target of the spans this module opens (the RPC server spans).
pub const SPAN_TARGET: &str = module_path!();

/// Spans waiting to be exported at most; past this new spans are dropped.
pub const QUEUE_SPANS_MAX: usize = 4096;
/// Spans sent in one export at most.
pub const EXPORT_BATCH_SPANS_MAX: usize = 512;
/// How often queued spans are sent.
pub const EXPORT_EVERY: Duration = Duration::from_secs(2);
/// The deadline of one export call to the collector.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long shutdown waits for the last spans to be sent.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// Whether spans are exported (set once by [`init`]): when not, no server span is
/// opened and no context is written, so an agent without `[telemetry]` pays nothing.
static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether this process exports traces.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The layer that turns the exported spans into OpenTelemetry spans, for
/// [`crate::logging::init`].
pub type TraceLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

/// The running exporter; [`Telemetry::shutdown`] sends what is queued.
pub struct Telemetry {
    provider: SdkTracerProvider,
}

/// Sets up export as `config` says, for the agent named `host`: `None` when
/// `otlp_endpoint` is absent. Must run inside the tokio runtime (the gRPC channel to the
/// collector lives on it); it connects lazily, so a collector that is down does not
/// keep the agent from starting.
pub fn init(config: &TelemetryConfig, host: &str) -> Result<Option<(Telemetry, TraceLayer)>, String> {
    let Some(endpoint) = &config.otlp_endpoint else { return Ok(None) };
    use opentelemetry_otlp::WithExportConfig;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("telemetry.otlp_endpoint: {endpoint}: {e}"))?;
    let batches = BatchConfigBuilder::default()
        .with_max_queue_size(QUEUE_SPANS_MAX)
        .with_max_export_batch_size(EXPORT_BATCH_SPANS_MAX)
        .with_scheduled_delay(EXPORT_EVERY)
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone())
        .with_attributes([
            KeyValue::new("host.name", host.to_string()),
            KeyValue::new("service.version", tern_dist::VERSION),
        ])
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(exporter).with_batch_config(batches).build())
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio))))
        .with_resource(resource)
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("tern"))
        .with_threads(false)
        .with_filter(filter_fn(exported).with_max_level_hint(LevelFilter::INFO));
    EXPORTING.store(true, Ordering::Relaxed);
    Ok(Some((Telemetry { provider }, Box::new(layer))))
}

impl Telemetry {
    /// Sends the spans still queued (within [`SHUTDOWN_DEADLINE`]) and stops the
    /// exporter. The SDK's shutdown blocks, so it runs on the blocking pool.
    pub async fn shutdown(self) {
        let provider = self.provider;
        let stop = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(SHUTDOWN_DEADLINE));
        match tokio::time::timeout(SHUTDOWN_DEADLINE + Duration::from_secs(1), stop).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "sending the last spans"),
            Ok(Err(e)) => tracing::warn!(error = %e, "stopping the trace exporter"),
            Err(_) => tracing::warn!(deadline = ?SHUTDOWN_DEADLINE, "the trace exporter did not stop in time"),
        }
    }
}

/// Whether the trace layer takes `meta`: the spans of migrations and RPCs (see the
/// module doc), and events at info and above (tern's) or warn and above (anyone's).
fn exported(meta: &Metadata<'_>) -> bool {
    if *meta.level() > Level::INFO {
        return false;
    }
    let target = meta.target();
    if meta.is_span() {
        target == SPAN_TARGET || target.starts_with("tern_migrate")
    } else {
        target.starts_with("tern") || *meta.level() <= Level::WARN
    }
}

/// Writes the current span's trace context (W3C `traceparent`, `tracestate`) into
/// `metadata`, for a call to another agent.
pub fn inject(metadata: &mut tonic::metadata::MetadataMap) {
    if !exporting() {
        return;
    }
    let cx = Context::current();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
    }
}

/// The caller's trace context, from a request's headers (empty when it sent none).
pub fn extract(headers: &http::HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// Sets `key` on the current exported span (a no-op when there is none).
pub fn annotate(key: &'static str, value: impl Into<opentelemetry::Value>) {
    if exporting() {
        Span::current().set_attribute(key, value);
    }
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) =
            (tonic::metadata::MetadataKey::from_bytes(key.as_bytes()), tonic::metadata::MetadataValue::try_from(value))
        {
            self.0.insert(k, v);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// The calls traced only inside a sampled trace of their caller: they come every
/// fraction of a second (Raft's appends and heartbeats, HA heartbeats, status probes),
/// or, for `Migrate` from ternctl, the migration span is the better root.
pub fn traced_only_within_caller(path: &str) -> bool {
    path.starts_with("/tern.v1.Raft/")
        || matches!(path, "/tern.v1.Cluster/Heartbeat" | "/tern.v1.Cluster/Status" | "/tern.v1.Migration/Migrate")
}

/// The server span of a call to `path` (`/tern.v1.Migration/Prepare`) with the
/// caller's context from `headers` as its parent; `None` when the call is not traced.
pub fn server_span(path: &str, headers: &http::HeaderMap) -> Option<Span> {
    if !exporting() {
        return None;
    }
    let name = path.strip_prefix('/')?;
    let (service, method) = name.split_once('/')?;
    let parent = extract(headers);
    if traced_only_within_caller(path) && !parent.span().span_context().is_sampled() {
        return None;
    }
    let span = tracing::info_span!(
        "rpc",
        otel.name = name,
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = service,
        rpc.method = method,
        rpc.grpc.status_code = tracing::field::Empty,
        otel.status_code = tracing::field::Empty,
    );
    let _ = span.set_parent(parent);
    Some(span)
}

/// Records on `span` a gRPC status the server answered in the headers (a call that
/// failed before answering; a success's status comes later, in the trailers).
pub(crate) fn record_status(span: &Span, headers: &http::HeaderMap) {
    let code = headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok());
    if let Some(code) = code {
        span.record("rpc.grpc.status_code", code);
        if code != 0 {
            span.record("otel.status_code", "ERROR");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only tern's migration and RPC spans are exported; long-lived task spans, openraft and debug stay out.
    #[test]
    fn the_trace_layer_takes_migration_and_rpc_spans_only() {
        use tracing::callsite::Identifier;
        use tracing::field::FieldSet;
        use tracing::metadata::Kind;
        struct Site;
        impl tracing::callsite::Callsite for Site {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &Metadata<'_> {
                unreachable!()
            }
        }
        static SITE: Site = Site;
        let meta = |target: &'static str, level: Level, kind: Kind| {
            Metadata::new("x", target, level, None, None, None, FieldSet::new(&[], Identifier(&SITE)), kind)
        };
        let span = |t, l| exported(&meta(t, l, Kind::SPAN));
        let event = |t, l| exported(&meta(t, l, Kind::EVENT));
        assert!(span("tern_migrate::coordinator", Level::INFO));
        assert!(span(SPAN_TARGET, Level::INFO));
        assert!(!span("tern_migrate::coordinator", Level::DEBUG));
        assert!(!span("tern_agent", Level::INFO), "the agent's task spans (join, heartbeat, ...) live for ever");
        assert!(!span("openraft::replication", Level::INFO));
        assert!(event("tern_migrate::coordinator", Level::INFO));
        assert!(event("h2::codec", Level::WARN));
        assert!(!event("h2::codec", Level::INFO));
        assert!(!event("tern_agent", Level::DEBUG));
    }

    /// Raft messages, HA heartbeats, status probes and ternctl's Migrate follow their caller; the rest always trace.
    #[test]
    fn frequent_calls_are_traced_only_within_a_sampled_caller() {
        for path in [
            "/tern.v1.Raft/AppendEntries",
            "/tern.v1.Raft/Vote",
            "/tern.v1.Raft/InstallSnapshot",
            "/tern.v1.Cluster/Heartbeat",
            "/tern.v1.Cluster/Status",
            "/tern.v1.Migration/Migrate",
        ] {
            assert!(traced_only_within_caller(path), "{path}");
        }
        for path in ["/tern.v1.Cluster/Propose", "/tern.v1.Migration/Prepare", "/tern.v1.Migration/Finish"] {
            assert!(!traced_only_within_caller(path), "{path}");
        }
    }

    /// A traceparent written into request metadata reads back from the HTTP headers it becomes.
    #[test]
    fn the_trace_context_crosses_metadata_as_a_w3c_traceparent() {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        let sent = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("00f067aa0ba902b7").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::default(),
        );
        let cx = Context::new().with_remote_span_context(sent.clone());
        let mut metadata = tonic::metadata::MetadataMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(&mut metadata));
        let headers = metadata.into_headers();
        assert_eq!(headers["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let got = extract(&headers);
        let got = got.span().span_context().clone();
        assert_eq!((got.trace_id(), got.span_id(), got.is_sampled()), (sent.trace_id(), sent.span_id(), true));
        assert!(!extract(&http::HeaderMap::new()).span().span_context().is_valid());
    }
}
