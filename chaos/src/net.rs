//! The agent's network seams over turmoil's simulated TCP: a connection stream for
//! `serve_with_incoming` and a [`Dialer`] that builds tonic channels whose connector
//! opens turmoil sockets. TLS (mutual, as in production) runs on top of both.

use hyper_util::rt::TokioIo;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tern_agent::transport::Dialer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_stream::Stream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

/// One accepted (or dialled) simulated connection.
pub struct SimStream(pub turmoil::net::TcpStream);

/// The peer of an accepted connection, as tonic's request extensions carry it.
#[derive(Clone, Debug)]
pub struct SimConnectInfo {
    pub peer: Option<SocketAddr>,
}

impl Connected for SimStream {
    type ConnectInfo = SimConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        SimConnectInfo { peer: self.0.peer_addr().ok() }
    }
}

impl AsyncRead for SimStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Binds `port` on the current turmoil host and returns its connection stream.
pub async fn incoming(port: u16) -> io::Result<impl Stream<Item = io::Result<SimStream>> + Send + 'static> {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
    Ok(futures_util::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| SimStream(stream));
        Some((accepted, listener))
    }))
}

/// Dials peers over turmoil sockets. Channels connect lazily and reconnect by
/// themselves, exactly as [`tern_agent::transport::TcpDialer`]'s do.
#[derive(Clone, Copy, Debug, Default)]
pub struct SimDialer;

impl Dialer for SimDialer {
    fn dial(&self, endpoint: Endpoint) -> Channel {
        endpoint.connect_with_connector_lazy(tower::service_fn(connect))
    }
}

async fn connect(uri: Uri) -> io::Result<TokioIo<turmoil::net::TcpStream>> {
    let host = uri
        .host()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri} has no host")))?
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let stream = turmoil::net::TcpStream::connect((host, port)).await?;
    Ok(TokioIo::new(stream))
}
