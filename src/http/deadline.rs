//! The whole-request deadline (PROTOCOL.md §10): a request's headers and body
//! must arrive in full within `http_request_timeout_seconds`, else the server
//! answers `408` and closes the connection.
//!
//! hyper's own `header_read_timeout` closes silently and knows nothing of
//! bodies, so the deadline is kept here, in two halves that share one
//! [`RequestClock`] per connection:
//!
//! - [`DeadlineStream`] wraps the accepted socket. While the connection waits
//!   for a request's headers, its reads race the deadline; when it passes, a
//!   `408` is written (if the client had started a request; an idle keep-alive
//!   connection is just closed) and hyper reads end-of-file, so it closes.
//! - [`read_body`] runs inside [`scope`] (set up by the router for every
//!   request) and bounds the body's collection by the same deadline. When it
//!   passes the router replaces whatever the handler answered with `408` and
//!   `Connection: close`.
//!
//! The clock counts from the moment the connection starts waiting for a
//! request: accept for the first one, the last byte written of the previous
//! response for the next. After a WebSocket upgrade it is switched off for
//! good: the session has deadlines of its own.
//!
//! The stream also carries the connection's [`ConnectionSlot`], so the slot is
//! freed exactly when the socket is closed, upgraded or not.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::net_limits::ConnectionSlot;

/// The text of a `408`.
pub(crate) const REQUEST_TIMEOUT_TEXT: &str = "Request timeout";

/// `state` values besides "waiting since N ns after `base`".
const HANDLING: u64 = u64::MAX - 1;
const OFF: u64 = u64::MAX;

/// One connection's request deadline, shared by its stream and its requests.
pub(crate) struct RequestClock {
    timeout: Duration,
    base: Instant,
    /// Nanoseconds after `base` since which the connection waits for a request, or [`HANDLING`]/[`OFF`].
    state: AtomicU64,
    /// Whether a byte of the awaited request has arrived (decides between 408 and a silent close).
    started: AtomicBool,
}

impl RequestClock {
    pub(crate) fn new(timeout: Duration) -> Arc<RequestClock> {
        Arc::new(RequestClock {
            timeout,
            base: Instant::now(),
            state: AtomicU64::new(0),
            started: AtomicBool::new(false),
        })
    }

    fn since_base(&self, now: Instant) -> u64 {
        // Saturates far below HANDLING: u64 nanoseconds last 584 years.
        u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(HANDLING - 1)
    }

    /// The deadline of the request being waited for, if one is.
    fn waiting_deadline(&self) -> Option<Instant> {
        match self.state.load(Ordering::Acquire) {
            HANDLING | OFF => None,
            since => Some(self.base + Duration::from_nanos(since) + self.timeout),
        }
    }

    /// The router got a request's headers: returns its deadline, until which its body may take.
    pub(crate) fn begin_request(&self) -> Instant {
        let deadline = self.waiting_deadline().unwrap_or_else(|| Instant::now() + self.timeout);
        self.state.store(HANDLING, Ordering::Release);
        deadline
    }

    /// The router answered: the next request's time starts now, or never after an upgrade.
    pub(crate) fn end_request(&self, upgraded: bool) {
        self.started.store(false, Ordering::Release);
        let next = if upgraded { OFF } else { self.since_base(Instant::now()) };
        self.state.store(next, Ordering::Release);
    }

    /// Writing a response is progress: the wait for the next request restarts.
    fn wrote(&self) {
        let state = self.state.load(Ordering::Acquire);
        if state != HANDLING && state != OFF {
            // A lost race with begin/end_request only ever moves the deadline later.
            let _ = self.state.compare_exchange(
                state,
                self.since_base(Instant::now()),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }
}

/// The accepted socket, its connection slot and the header half of the deadline.
pub(crate) struct DeadlineStream {
    inner: TcpStream,
    clock: Arc<RequestClock>,
    sleep: Pin<Box<Sleep>>,
    armed_for: Option<Instant>,
    expired: bool,
    _slot: ConnectionSlot,
}

impl DeadlineStream {
    pub(crate) fn new(inner: TcpStream, clock: Arc<RequestClock>, slot: ConnectionSlot) -> Self {
        DeadlineStream {
            inner,
            clock,
            sleep: Box::pin(tokio::time::sleep(Duration::ZERO)),
            armed_for: None,
            expired: false,
            _slot: slot,
        }
    }

    /// The deadline passed while waiting for headers: answer 408 if a request
    /// had begun, and make every later read end-of-file.
    fn expire(&mut self) {
        self.expired = true;
        self.clock.state.store(OFF, Ordering::Release);
        if self.clock.started.load(Ordering::Acquire) {
            crate::metrics::refused(crate::metrics::reason::HTTP_DEADLINE);
            crate::metrics::http_response(408);
            // The previous response was written in full before hyper read
            // these headers, so the send buffer has room for this one; if it
            // somehow has not, the connection is closed without it.
            let answer = super::raw_closing_response(hyper::StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT_TEXT);
            let _ = self.inner.try_write(&answer);
        }
    }
}

impl AsyncRead for DeadlineStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Ok(()));
        }
        if let Some(deadline) = this.clock.waiting_deadline() {
            if this.armed_for != Some(deadline) {
                this.sleep.as_mut().reset(deadline);
                this.armed_for = Some(deadline);
            }
            if this.sleep.as_mut().poll(cx).is_ready() {
                this.expire();
                return Poll::Ready(Ok(()));
            }
        }
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.clock.started.store(true, Ordering::Release);
        }
        result
    }
}

impl AsyncWrite for DeadlineStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.clock.wrote();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.clock.wrote();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The body half of the deadline, visible to [`read_body`] during one request.
struct BodyDeadline {
    at: Instant,
    expired: Cell<bool>,
}

tokio::task_local! {
    static BODY_DEADLINE: BodyDeadline;
}

/// Runs one request's handler with its body deadline; returns the handler's
/// answer and whether the body missed the deadline.
pub(crate) async fn scope<F: Future>(deadline: Instant, handler: F) -> (F::Output, bool) {
    let state = BodyDeadline {
        at: deadline,
        expired: Cell::new(false),
    };
    BODY_DEADLINE
        .scope(state, async move {
            let output = handler.await;
            (output, BODY_DEADLINE.with(|d| d.expired.get()))
        })
        .await
}

/// Awaits `collect` (a body being read) until the request's deadline. `None`
/// when the deadline passed first; outside [`scope`] there is no deadline.
pub(crate) async fn read_body<F: Future>(collect: F) -> Option<F::Output> {
    let Ok(at) = BODY_DEADLINE.try_with(|d| d.at) else {
        return Some(collect.await);
    };
    match tokio::time::timeout_at(at, collect).await {
        Ok(output) => Some(output),
        Err(_) => {
            BODY_DEADLINE.with(|d| d.expired.set(true));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn clock_counts_from_the_wait_and_stops_after_an_upgrade() {
        let clock = RequestClock::new(Duration::from_secs(10));
        let opened = Instant::now();
        assert_eq!(clock.waiting_deadline(), Some(opened + Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(
            clock.begin_request(),
            opened + Duration::from_secs(10),
            "headers time counts"
        );
        assert_eq!(clock.waiting_deadline(), None, "no header deadline while handling");
        tokio::time::advance(Duration::from_secs(1)).await;
        clock.end_request(false);
        assert_eq!(clock.waiting_deadline(), Some(Instant::now() + Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(2)).await;
        clock.wrote();
        assert_eq!(clock.waiting_deadline(), Some(Instant::now() + Duration::from_secs(10)));
        clock.begin_request();
        clock.end_request(true);
        assert_eq!(clock.waiting_deadline(), None);
        clock.wrote();
        assert_eq!(
            clock.waiting_deadline(),
            None,
            "an upgraded connection has no request deadline"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn body_reads_stop_at_the_deadline() {
        let deadline = Instant::now() + Duration::from_secs(1);
        let (read, expired) = scope(deadline, read_body(std::future::pending::<()>())).await;
        assert_eq!((read, expired), (None, true));
        let (read, expired) = scope(deadline + Duration::from_secs(5), read_body(async { 7 })).await;
        assert_eq!((read, expired), (Some(7), false));
        assert_eq!(read_body(async { 8 }).await, Some(8), "no deadline outside a request");
    }
}
