//! The accept loop, connection caps and graceful shutdown.
//!
//! [`run`] is what `main` calls and what the integration tests call. Every
//! accepted socket first takes a slot under the connection caps (PROTOCOL.md
//! §10: `503` when the server is full, `429` when its source IP is); the slot
//! travels inside the socket's wrapper ([`DeadlineStream`]), so a WebSocket
//! keeps the slot its HTTP connection took until it closes. Failing `accept`s
//! (out of descriptors) are retried with a capped exponential backoff and
//! logged at most every few seconds.
//!
//! On shutdown it stops accepting, lets in-flight HTTP requests finish, ends
//! every WebSocket session by dropping its TCP connection (so official clients
//! see 1006 and reconnect elsewhere), and waits for all of it under the
//! configured deadline.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::StatusCode;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::app::App;
use crate::config::Config;
use crate::http::deadline::{DeadlineStream, RequestClock};
use crate::net_limits::{ConnectionLimits, Refusal};

/// Pending connections the kernel queues before `accept`; bursts of reconnecting clients need room.
const LISTEN_BACKLOG: u32 = 4096;

/// Refused connections being answered at once; beyond this they are closed
/// without an answer, so that refusing cannot itself exhaust descriptors.
const MAX_REFUSALS_IN_FLIGHT: usize = 256;
/// How long a refused connection may take, request head to answer.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

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
    let request_timeout = Duration::from_secs(config.limits.http_request_timeout_seconds);
    let limits = ConnectionLimits::new(
        config.limits.max_http_connections,
        config.limits.max_http_connections_per_ip,
    );
    let app = App::new(config, shutdown.clone()).map_err(io::Error::other)?;
    let connections = TaskTracker::new();
    let refusals = Arc::new(AtomicUsize::new(0));
    let mut backoff = AcceptBackoff::default();
    let upkeep = tokio::spawn(metrics_upkeep(shutdown.clone()));

    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff.succeeded();
                    accepted
                }
                Err(error) => {
                    crate::metrics::accept_error();
                    let Some(pause) = backoff.failed(&error, Instant::now()) else { continue };
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(pause) => continue,
                    }
                }
            },
        };
        let slot = match limits.acquire(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                refuse(stream, refusal, &refusals);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let clock = RequestClock::new(request_timeout);
        let io = TokioIo::new(DeadlineStream::new(stream, Arc::clone(&clock), slot));
        let app = Arc::clone(&app);
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let service =
                service_fn(|request| crate::http::handle(request, Arc::clone(&app), peer, Arc::clone(&clock)));
            // No hyper header timeout: the request deadline (headers and body,
            // answered with 408) is kept by `DeadlineStream` and the router.
            let connection = http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(None)
                .serve_connection(io, service)
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

/// Answers a connection over a cap with `503` or `429` and closes it, all
/// within [`REFUSAL_LINGER`]. After the answer the rest of the input is
/// drained briefly, so that closing sends FIN rather than a reset that could
/// destroy the answer before the client reads it.
fn refuse(mut stream: TcpStream, refusal: Refusal, in_flight: &Arc<AtomicUsize>) {
    let (status, reason, text) = match refusal {
        Refusal::Overall => (
            StatusCode::SERVICE_UNAVAILABLE,
            crate::metrics::reason::HTTP_CONNECTIONS,
            "Server at its connection limit",
        ),
        Refusal::PerIp => (
            StatusCode::TOO_MANY_REQUESTS,
            crate::metrics::reason::HTTP_CONNECTIONS_PER_IP,
            "Too many connections from this address",
        ),
    };
    crate::metrics::refused(reason);
    crate::metrics::http_response(status.as_u16());
    if in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_REFUSALS_IN_FLIGHT {
        in_flight.fetch_sub(1, Ordering::AcqRel);
        return;
    }
    let in_flight = Arc::clone(in_flight);
    tokio::spawn(async move {
        let _ = tokio::time::timeout(REFUSAL_LINGER, async {
            // Read the request head first (clients may not expect an answer
            // before they have asked), but not for long and not much of it.
            let mut head = Vec::with_capacity(1024);
            let mut chunk = [0u8; 1024];
            let _ = tokio::time::timeout(REFUSAL_LINGER / 2, async {
                while head.len() < 8 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&chunk[..n]),
                    }
                }
            })
            .await;
            stream
                .write_all(&crate::http::raw_closing_response(status, text))
                .await?;
            stream.shutdown().await?;
            while stream.read(&mut chunk).await? > 0 {}
            io::Result::Ok(())
        })
        .await;
        in_flight.fetch_sub(1, Ordering::AcqRel);
    });
}

/// How the accept loop reacts to failing `accept`s: errors about one
/// connection (it was reset before we took it) are retried at once; resource
/// errors (EMFILE, ENFILE, ENOBUFS) pause the loop, doubling from
/// [`AcceptBackoff::FIRST`] up to [`AcceptBackoff::MAX`], and are logged at most
/// once per [`AcceptBackoff::LOG_EVERY`] with the number of errors in between.
#[derive(Debug, Default)]
struct AcceptBackoff {
    pause: Option<Duration>,
    last_log: Option<Instant>,
    unlogged: u64,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);
    const LOG_EVERY: Duration = Duration::from_secs(10);

    fn succeeded(&mut self) {
        self.pause = None;
    }

    /// Records a failed accept; returns how long to pause, if at all.
    fn failed(&mut self, error: &io::Error, now: Instant) -> Option<Duration> {
        use io::ErrorKind::*;
        if matches!(
            error.kind(),
            ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
        ) {
            debug!(%error, "accept failed for one connection");
            return None;
        }
        let pause = self.pause.map_or(Self::FIRST, |pause| (pause * 2).min(Self::MAX));
        self.pause = Some(pause);
        if self
            .last_log
            .is_none_or(|last| now.duration_since(last) >= Self::LOG_EVERY)
        {
            warn!(
                %error,
                similar_errors_since_last_warning = self.unlogged,
                pause_ms = pause.as_millis() as u64,
                "accept failed (out of file descriptors?); backing off"
            );
            self.last_log = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
        }
        Some(pause)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_caps_and_resets() {
        let mut backoff = AcceptBackoff::default();
        let emfile = io::Error::from_raw_os_error(24);
        let now = Instant::now();
        let pauses: Vec<_> = (0..10).map(|_| backoff.failed(&emfile, now).unwrap()).collect();
        assert_eq!(pauses[0], AcceptBackoff::FIRST);
        assert_eq!(pauses[1], AcceptBackoff::FIRST * 2);
        assert_eq!(pauses[9], AcceptBackoff::MAX);
        assert_eq!(backoff.unlogged, 9, "one warning for the burst");
        backoff.succeeded();
        assert_eq!(backoff.failed(&emfile, now), Some(AcceptBackoff::FIRST));
        let later = now + AcceptBackoff::LOG_EVERY;
        backoff.failed(&emfile, later);
        assert_eq!(backoff.unlogged, 0, "logged again after the quiet period");
        let aborted = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(backoff.failed(&aborted, later), None);
    }
}
