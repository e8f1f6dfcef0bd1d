//! Connection caps: a listener accepts a new connection only while fewer than its cap are open
//! (the rest wait in the kernel's backlog), and one address may hold only so many of them.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures::Stream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Connections one address may hold open at once; more are closed at once.
pub const PER_ADDRESS: usize = 1024;

/// Open connections per address.
type PerAddress = Arc<Mutex<HashMap<IpAddr, usize>>>;

/// A TCP connection holding one of its listener's permits, and its place in its address's
/// count, until it closes.
pub struct Capped {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
    address: Option<(IpAddr, PerAddress)>,
}

impl Drop for Capped {
    fn drop(&mut self) {
        if let Some((ip, counts)) = self.address.take() {
            let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(open) = counts.get_mut(&ip) {
                *open = open.saturating_sub(1);
                if *open == 0 {
                    counts.remove(&ip);
                }
            }
        }
    }
}

/// The connections of `listener`: at most `max` open at once, [`PER_ADDRESS`] per address.
pub fn incoming(listener: TcpListener, max: usize) -> impl Stream<Item = io::Result<Capped>> {
    let permits = Arc::new(Semaphore::new(max.max(1)));
    let counts = PerAddress::default();
    futures::stream::unfold(
        (listener, permits, counts),
        |(listener, permits, counts)| async move {
            loop {
                let permit = permits.clone().acquire_owned().await.ok()?;
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(err) => return Some((Err(err), (listener, permits, counts))),
                };
                let ip = peer.ip().to_canonical();
                {
                    let mut open = counts.lock().unwrap_or_else(PoisonError::into_inner);
                    let open = open.entry(ip).or_default();
                    if *open >= PER_ADDRESS {
                        tracing::warn!(%ip, limit = PER_ADDRESS, "refusing a connection: the address holds its limit");
                        continue;
                    }
                    *open += 1;
                }
                // Small gRPC replies should not wait for Nagle's algorithm.
                let _ = stream.set_nodelay(true);
                let capped = Capped {
                    stream,
                    _permit: permit,
                    address: Some((ip, counts.clone())),
                };
                return Some((Ok(capped), (listener, permits, counts)));
            }
        },
    )
}

impl Connected for Capped {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Capped {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Capped {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
