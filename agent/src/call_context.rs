//! What every call's handler runs inside: one tower layer on the gRPC server
//! ([`CallContext`]) that puts the caller's address in scope, for the audit log of each
//! write the call makes ([`caller_addr`]), and opens the call's server span when traces
//! are exported ([`crate::telemetry::server_span`]), the caller's trace context its
//! parent. A call that needs neither (the simulations' transport, with export off) runs
//! as it came.

use futures_util::future::{BoxFuture, Either};
use std::task::{Context as TaskContext, Poll};
use tonic::codegen::http;
use tracing::Instrument;

tokio::task_local! {
    /// The address of the call being served (formatted only when a write reads it).
    static CALLER_ADDR: std::net::SocketAddr;
}

/// The caller's `ip:port` of the call this task serves, for the audit log
/// ([`tern_raft_store::Request::from`]); empty outside a call (background work, a
/// migration's own task) or when the transport does not say (the simulations).
pub fn caller_addr() -> String {
    CALLER_ADDR.try_with(ToString::to_string).unwrap_or_default()
}

/// The remote address of a call over TCP (with or without TLS), from its extensions.
fn remote_addr(ext: &http::Extensions) -> Option<std::net::SocketAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    ext.get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.get_ref().remote_addr())
        .or_else(|| ext.get::<TcpConnectInfo>().and_then(TcpConnectInfo::remote_addr))
}

/// The layer (see the module doc).
#[derive(Clone, Copy, Debug, Default)]
pub struct CallContext;

impl<S> tower::Layer<S> for CallContext {
    type Service = CallContextService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CallContextService { inner }
    }
}

/// See [`CallContext`].
#[derive(Clone, Debug)]
pub struct CallContextService<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for CallContextService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Send + 'static,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<http::Response<R>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let addr = remote_addr(req.extensions());
        let span = crate::telemetry::server_span(req.uri().path(), req.headers());
        let call: BoxFuture<'static, _> = match span {
            None if addr.is_none() => return Either::Left(self.inner.call(req)),
            None => Box::pin(self.inner.call(req)),
            Some(span) => {
                let call = span.in_scope(|| self.inner.call(req));
                let recorded = span.clone();
                Box::pin(
                    async move {
                        let answer = call.await;
                        if let Ok(response) = &answer {
                            crate::telemetry::record_status(&recorded, response.headers());
                        }
                        answer
                    }
                    .instrument(span),
                )
            }
        };
        match addr {
            Some(addr) => Either::Right(Box::pin(CALLER_ADDR.scope(addr, call))),
            None => Either::Right(call),
        }
    }
}
