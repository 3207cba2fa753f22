//! The network seams: how the agent dials peers and how channels are reused.
//!
//! The server takes its connection stream from outside and the client its dialer, so
//! the same agent runs on real TCP (this module's [`TcpDialer`]) and inside turmoil
//! (the chaos crate supplies a dialer over turmoil sockets). Every channel has a
//! connect timeout, a request deadline and HTTP/2 keepalive: keepalive notices a
//! dead connection after a partition and lets the channel reconnect. Message sizes are
//! set per client, not per channel (tonic's design): build every client with
//! [`crate::limits::MessageLimits::with_message_limits`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
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
    pub tls: Option<ClientTlsConfig>,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub dialer: Arc<dyn Dialer>,
}

impl ClientSettings {
    /// `msg` as a request with the unary deadline. Channels carry no blanket deadline,
    /// because migration streams last as long as the migration; every unary call sets
    /// its own.
    pub fn request<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.request_timeout);
        r
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
    settings: ClientSettings,
    cache: Arc<Mutex<HashMap<String, Channel>>>,
}

impl Channels {
    pub fn new(settings: ClientSettings) -> Self {
        Self { settings, cache: Arc::default() }
    }

    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// The channel to `addr`, created on first use.
    pub fn get(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(addr) {
            return Ok(c.clone());
        }
        let c = self.settings.channel(addr)?;
        cache.insert(addr.to_string(), c.clone());
        Ok(c)
    }
}
