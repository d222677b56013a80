//! The accept loop, per-IP connection limits and graceful shutdown.
//!
//! [`run`] is what `main` calls and what the integration tests call. On
//! shutdown it stops accepting, lets in-flight HTTP requests finish, ends every
//! WebSocket session by dropping its TCP connection (so official clients see
//! 1006 and reconnect elsewhere), and waits for all of it under the configured
//! deadline.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::app::App;
use crate::config::Config;

/// Pending connections the kernel queues before `accept`; bursts of reconnecting clients need room.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the listening socket with a deep backlog.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Serves until `shutdown` is cancelled, then shuts down gracefully.
pub async fn run(listener: TcpListener, config: Config, shutdown: CancellationToken) -> io::Result<()> {
    crate::metrics::install();
    let deadline = Duration::from_secs(config.shutdown_timeout_seconds);
    let app = App::new(config, shutdown.clone()).map_err(io::Error::other)?;
    let connections = TaskTracker::new();
    let upkeep = tokio::spawn(metrics_upkeep(shutdown.clone()));

    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors or similar: back off instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let app = Arc::clone(&app);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let service = service_fn(|request| crate::http::handle(request, Arc::clone(&app), peer));
            let connection = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(error) = result {
                        debug!(%error, %peer, "http connection ended with an error");
                    }
                }
                _ = shutdown.cancelled() => {
                    // Finish the request in flight, then close.
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }

    drop(listener);
    info!("shutting down: no longer accepting connections");
    connections.close();
    app.sessions.close();
    let drained = tokio::time::timeout(deadline, async {
        connections.wait().await;
        app.sessions.wait().await;
    })
    .await;
    if drained.is_err() {
        warn!(
            seconds = deadline.as_secs(),
            "shutdown deadline passed with connections still open"
        );
    }
    upkeep.abort();
    // Everything acknowledged is already durable; this commits the rest.
    if let Err(error) = app.broker.engine().flush().await {
        warn!(%error, "the store could not be flushed on shutdown");
    }
    Ok(())
}

/// Histograms keep raw samples until upkeep folds them in; do it regularly.
async fn metrics_upkeep(shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {
                if let Some(handle) = crate::metrics::install() {
                    handle.run_upkeep();
                }
            }
        }
    }
}

/// Counts WebSocket connections per source IP against a limit (0 = unlimited).
pub struct IpLimiter {
    limit: usize,
    counts: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One counted connection; releases its slot when dropped.
pub struct IpSlot {
    ip: IpAddr,
    counts: Option<Arc<Mutex<HashMap<IpAddr, usize>>>>,
}

impl IpLimiter {
    pub fn new(limit: usize) -> Self {
        IpLimiter {
            limit,
            counts: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Takes a slot for `ip`, or `None` when it already has `limit` connections.
    pub fn acquire(&self, ip: IpAddr) -> Option<IpSlot> {
        if self.limit == 0 {
            return Some(IpSlot { ip, counts: None });
        }
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let count = counts.entry(ip).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(IpSlot {
            ip,
            counts: Some(Arc::clone(&self.counts)),
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some(counts) = &self.counts {
            let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(count) = counts.get_mut(&self.ip) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(&self.ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_limiter_counts_and_releases() {
        let limiter = IpLimiter::new(2);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let a = limiter.acquire(ip).unwrap();
        let _b = limiter.acquire(ip).unwrap();
        assert!(limiter.acquire(ip).is_none());
        assert!(limiter.acquire("127.0.0.2".parse().unwrap()).is_some());
        drop(a);
        assert!(limiter.acquire(ip).is_some());
        assert!(IpLimiter::new(0).acquire(ip).is_some());
    }
}
