//! Every gRPC call the agent serves, counted by service, method and status code, and
//! timed (`tern_grpc_server_handled_total`, `tern_grpc_server_handling_seconds`; the
//! names grpc-prometheus made the convention).
//!
//! A tower layer on the tonic server, so no handler can forget it. The status code
//! is the `grpc-status` of the response headers: tonic sends an error as a
//! trailers-only response, so every refused or failed call shows its code; a
//! successful unary call carries its status in the trailers, after the body, and is
//! counted `OK`. A stream is timed until its first headers, and a stream that fails
//! after it began is counted `OK` (its events carry the failure). Paths outside the
//! API ([`tern_proto::METHODS`]) are counted under `unknown`, so no caller can add
//! series.

use crate::metrics::{Metrics, RpcCodeLabels, RpcLabels};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::codegen::http;

/// The layer: `Server::builder().layer(GrpcMetricsLayer::new(metrics))`.
#[derive(Clone, Debug)]
pub struct GrpcMetricsLayer {
    metrics: Arc<Metrics>,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics { inner, metrics: self.metrics.clone() }
    }
}

/// The service the layer wraps around the router.
#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (grpc_service, grpc_method) = method_of(req.uri().path());
        let started = Instant::now();
        let answer = self.inner.call(req);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let answer = answer.await;
            let grpc_code = match &answer {
                Ok(resp) => code_name(resp.headers().get("grpc-status").and_then(|v| v.to_str().ok())),
                Err(_) => "Unknown",
            };
            metrics
                .rpc_duration
                .get_or_create(&RpcLabels { grpc_service, grpc_method })
                .observe(started.elapsed().as_secs_f64());
            metrics.rpcs.get_or_create(&RpcCodeLabels { grpc_service, grpc_method, grpc_code }).inc();
            answer
        })
    }
}

/// `("tern.v1.Migration", "Prepare")` for `/tern.v1.Migration/Prepare`, as static
/// strings from the API's own list; `("unknown", "unknown")` for any other path.
pub fn method_of(path: &str) -> (&'static str, &'static str) {
    tern_proto::METHODS
        .iter()
        .find(|m| **m == path)
        .and_then(|m| m[1..].split_once('/'))
        .unwrap_or(("unknown", "unknown"))
}

/// The status code's name as grpc-prometheus writes it (`OK`, `FailedPrecondition`).
fn code_name(status: Option<&str>) -> &'static str {
    let Some(n) = status else { return "OK" };
    match n.parse::<i32>().map(tonic::Code::from_i32) {
        Ok(tonic::Code::Ok) => "OK",
        Ok(tonic::Code::Cancelled) => "Canceled",
        Ok(tonic::Code::Unknown) | Err(_) => "Unknown",
        Ok(tonic::Code::InvalidArgument) => "InvalidArgument",
        Ok(tonic::Code::DeadlineExceeded) => "DeadlineExceeded",
        Ok(tonic::Code::NotFound) => "NotFound",
        Ok(tonic::Code::AlreadyExists) => "AlreadyExists",
        Ok(tonic::Code::PermissionDenied) => "PermissionDenied",
        Ok(tonic::Code::ResourceExhausted) => "ResourceExhausted",
        Ok(tonic::Code::FailedPrecondition) => "FailedPrecondition",
        Ok(tonic::Code::Aborted) => "Aborted",
        Ok(tonic::Code::OutOfRange) => "OutOfRange",
        Ok(tonic::Code::Unimplemented) => "Unimplemented",
        Ok(tonic::Code::Internal) => "Internal",
        Ok(tonic::Code::Unavailable) => "Unavailable",
        Ok(tonic::Code::DataLoss) => "DataLoss",
        Ok(tonic::Code::Unauthenticated) => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_api_methods_and_folds_every_other_path_into_unknown() {
        // Goal: label values come only from the API's own list of methods.
        assert_eq!(method_of("/tern.v1.Migration/Prepare"), ("tern.v1.Migration", "Prepare"));
        assert_eq!(method_of("/tern.v1.Migration/NoSuchThing"), ("unknown", "unknown"));
        assert_eq!(method_of("/x"), ("unknown", "unknown"));
        assert!(tern_proto::METHODS.contains(&"/tern.v1.Raft/AppendEntries"), "{:?}", tern_proto::METHODS);
    }

    #[test]
    fn reads_status_codes_as_grpc_prometheus_names_them() {
        // Goal: a trailers-only error shows its code; no header means a unary OK.
        assert_eq!(code_name(None), "OK");
        assert_eq!(code_name(Some("7")), "PermissionDenied");
        assert_eq!(code_name(Some("9")), "FailedPrecondition");
        assert_eq!(code_name(Some("garbage")), "Unknown");
    }
}
