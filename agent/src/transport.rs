//! The network seams: how the agent dials peers and how channels are reused.
//!
//! The server takes its connection stream from outside and the client its dialer, so
//! the same agent runs on real TCP (this module's [`TcpDialer`]) and inside turmoil
//! (the chaos crate supplies a dialer over turmoil sockets). Every channel has a
//! connect timeout, a request deadline and HTTP/2 keepalive: keepalive notices a
//! dead connection after a partition and lets the channel reconnect. Message sizes are
//! set per client, not per channel (tonic's design): build every client with
//! [`crate::limits::MessageLimits::with_message_limits`], and every request with
//! [`request_within`] (or [`ClientSettings::request`]), which gives it its deadline and
//! the caller's trace context ([`crate::telemetry`]).
//!
//! TLS identity can change while the agent runs (a renewed certificate, `SIGHUP`):
//! the server side does its own handshakes ([`tls_incoming`]) with the configuration
//! [`ServerTls`] holds now, and [`Channels::set_tls`] makes every channel dialled from
//! then on present the new certificate.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_stream::{Stream, StreamExt};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// HTTP/2 keepalive: ping interval and how long to wait for the answer.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_millis(500);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// Turns an endpoint into a (lazily connecting) channel.
pub trait Dialer: Send + Sync + 'static {
    fn dial(&self, endpoint: Endpoint) -> Channel;
}

/// Real TCP.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpDialer;

impl Dialer for TcpDialer {
    fn dial(&self, endpoint: Endpoint) -> Channel {
        endpoint.connect_lazy()
    }
}

/// How to reach peers: TLS identity, timeouts, dialer.
#[derive(Clone)]
pub struct ClientSettings {
    /// The identity presented to peers ([`Channels::set_tls`] replaces it).
    pub tls: Option<ClientTlsConfig>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub dialer: Arc<dyn Dialer>,
}

/// `msg` as a request to another agent with deadline `timeout`, carrying the current
/// span's trace context (W3C `traceparent` in its metadata, [`crate::telemetry::inject`]).
/// Every call an agent makes to another is built here, so that one operation is one
/// trace across the agents it touches.
pub fn request_within<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    crate::telemetry::inject(r.metadata_mut());
    r
}

impl ClientSettings {
    /// `msg` as a request with the unary deadline ([`request_within`]). Channels carry
    /// no blanket deadline, because migration streams last as long as the migration;
    /// every unary call sets its own.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        request_within(msg, self.request_timeout)
    }

    /// A channel to `addr` (host:port) with our TLS identity and deadlines.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut ep = Endpoint::from_shared(format!("{scheme}://{addr}"))?
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        if let Some(tls) = &self.tls {
            ep = ep.tls_config(tls.clone())?;
        }
        Ok(self.dialer.dial(ep))
    }
}

/// One reused channel per peer address.
#[derive(Clone)]
pub struct Channels {
    settings: Arc<RwLock<ClientSettings>>,
    cache: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Channels {
    pub fn new(settings: ClientSettings) -> Self {
        Self { settings: Arc::new(RwLock::new(settings)), cache: Arc::default() }
    }

    /// `msg` as a request with the unary deadline ([`ClientSettings::request`]).
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        self.settings.read().unwrap_or_else(|p| p.into_inner()).request(msg)
    }

    /// The channel to `addr`, created on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(addr) {
            return Ok(c.clone());
        }
        let c = self.settings.read().unwrap_or_else(|p| p.into_inner()).channel(addr)?;
        cache.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// Presents `tls` from now on: the cached channels are dropped, so every call
    /// after this one dials anew with it (calls under way finish on their channel).
    pub fn set_tls(&self, tls: ClientTlsConfig) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        self.settings.write().unwrap_or_else(|p| p.into_inner()).tls = Some(tls);
        cache.clear();
    }
}

/// The server's TLS configuration, replaceable while it serves: each handshake takes
/// the one held when its connection was accepted.
pub struct ServerTls(RwLock<(Arc<rustls::ServerConfig>, tern_tls::TicketVerifier)>);

impl ServerTls {
    pub fn new(tls: &tern_tls::NodeTls) -> Self {
        Self(RwLock::new((tls.server.clone(), tls.tickets.clone())))
    }

    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).0.clone()
    }

    /// The checker of migration tickets (OP-04), of the CA loaded with the config.
    pub fn tickets(&self) -> tern_tls::TicketVerifier {
        self.0.read().unwrap_or_else(|p| p.into_inner()).1.clone()
    }

    /// Handshakes (and tickets) from now on use `tls`; connections already up keep theirs.
    pub fn set(&self, tls: &tern_tls::NodeTls) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = (tls.server.clone(), tls.tickets.clone());
    }
}

/// The TLS connections of `incoming`: each accepted connection's handshake runs on its
/// own task with [`ServerTls::current`], at most
/// [`crate::limits::HANDSHAKES_IN_FLIGHT_MAX`] at once and each within
/// [`crate::limits::HANDSHAKE_TIMEOUT`]; a failed or slow handshake drops only its
/// connection (logged at debug). Listener errors pass through for the server to judge.
/// The accept loop ends when the returned stream is dropped (the server stopped), and
/// with it `incoming` (which closes the listening socket).
pub fn tls_incoming<I, IO, IE>(
    incoming: I,
    tls: Arc<ServerTls>,
    tasks: &tokio_util::task::TaskTracker,
) -> impl Stream<Item = Result<tokio_rustls::server::TlsStream<IO>, IE>> + Send + 'static
where
    I: Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    IE: Send + 'static,
{
    use crate::limits::{HANDSHAKE_TIMEOUT, HANDSHAKES_IN_FLIGHT_MAX};
    let (tx, rx) = tokio::sync::mpsc::channel(HANDSHAKES_IN_FLIGHT_MAX);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_IN_FLIGHT_MAX));
    let spawner = tasks.clone();
    tasks.spawn(async move {
        let mut incoming = std::pin::pin!(incoming);
        loop {
            let permit = tokio::select! {
                p = handshakes.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                () = tx.closed() => break,
            };
            let accepted = tokio::select! {
                a = incoming.next() => a,
                () = tx.closed() => break,
            };
            let io = match accepted {
                None => break,
                Some(Err(e)) => {
                    if tx.send(Err(e)).await.is_err() {
                        break;
                    }
                    continue;
                }
                Some(Ok(io)) => io,
            };
            let (tx, acceptor) = (tx.clone(), tokio_rustls::TlsAcceptor::from(tls.current()));
            spawner.spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(after = ?HANDSHAKE_TIMEOUT, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    /// Every request the agent sends to a peer is built by `request_within`, so none goes out without the caller's trace context.
    #[test]
    fn every_outgoing_request_is_built_with_the_trace_context() {
        let package = std::env::var_os("CARGO_MANIFEST_DIR")
            .map_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")), std::path::PathBuf::from);
        let src = package.join("src");
        let mut files = vec![];
        let mut dirs = vec![src.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("transport.rs") {
                    files.push(path);
                }
            }
        }
        assert!(files.len() > 10, "read {} files under {}", files.len(), src.display());
        for path in files {
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let built_bare = ["tonic::Request::new(", "GrpcRequest::new("].iter().any(|p| line.contains(p));
                assert!(
                    !built_bare,
                    "{}:{}: build requests to peers with transport::request_within (deadline and trace context): {line}",
                    path.display(),
                    n + 1
                );
            }
        }
    }
}
