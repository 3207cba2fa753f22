//! An OTLP/gRPC receiver (trace and metrics services, from `opentelemetry-proto`'s
//! service definitions) on an OS-chosen loopback port: what the agents export with
//! `[telemetry] otlp_endpoint` set, kept in memory for tests and benchmarks.

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::Metric;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

/// One span as received, with the `host.name` of the agent that sent it.
#[derive(Clone, Debug)]
pub struct Got {
    pub host: String,
    pub span: Span,
}

/// One metrics push: the `host.name` of the agent, and its metrics.
pub type Push = (String, Vec<Metric>);

/// What the receiver collected: spans, and each agent's metric pushes in order.
#[derive(Clone, Default)]
pub struct Collected {
    pub spans: Arc<Mutex<Vec<Got>>>,
    pub metrics: Arc<Mutex<Vec<Push>>>,
}

fn host_of(resource: Option<&Resource>) -> String {
    resource
        .into_iter()
        .flat_map(|r| r.attributes.iter())
        .find(|kv| kv.key == "host.name")
        .and_then(string)
        .unwrap_or_default()
}

/// A string, integer or boolean attribute's value as text.
pub fn string(kv: &KeyValue) -> Option<String> {
    match kv.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

#[tonic::async_trait]
impl TraceService for Collected {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let host = host_of(rs.resource.as_ref());
            for ss in rs.scope_spans {
                spans.extend(ss.spans.into_iter().map(|span| Got { host: host.clone(), span }));
            }
        }
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collected {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let mut pushes = self.metrics.lock().unwrap();
        for rm in request.into_inner().resource_metrics {
            let host = host_of(rm.resource.as_ref());
            pushes.push((host, rm.scope_metrics.into_iter().flat_map(|s| s.metrics).collect()));
        }
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Serves the OTLP trace and metrics services on an OS-chosen loopback port; returns
/// the collected data and the endpoint for `[telemetry] otlp_endpoint`.
pub async fn receiver() -> (Collected, String) {
    let collected = Collected::default();
    let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let endpoint = format!("http://{}", incoming.local_addr().unwrap());
    let router = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(collected.clone()))
        .add_service(MetricsServiceServer::new(collected.clone()));
    tokio::spawn(router.serve_with_incoming(incoming));
    (collected, endpoint)
}
