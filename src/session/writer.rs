//! The writing half of a session: drains the outbox in batches and keeps the connection alive.
//!
//! Every socket operation has a deadline of one ping interval: a peer whose
//! receive window stays full leaves `feed`/`flush` pending forever, and while
//! the writer waits there it sends no pings and so never notices the peer is
//! gone. A write that makes no progress for that long marks a slow consumer.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::{FutureExt, SinkExt};
use hyper_tungstenite::HyperWebsocketStream;
use hyper_tungstenite::tungstenite::Message;
use hyper_tungstenite::tungstenite::protocol::CloseFrame;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};

use super::Ending;
use crate::broker::{Outbox, OutboxReader};

pub(super) type Sink = SplitSink<HyperWebsocketStream, Message>;

/// How long a closing session waits for queued frames to be written.
const FLUSH_ON_CLOSE: Duration = Duration::from_secs(2);

/// Handle to a session's writer task.
pub(super) struct Writer {
    task: JoinHandle<Option<Sink>>,
}

impl Writer {
    /// Starts the writer. `alive` is set by the reader whenever the peer sends
    /// anything; a whole ping interval without it marks the peer dead, which
    /// (like a failed write) stops the outbox.
    pub(super) fn spawn(sink: Sink, reader: OutboxReader, alive: Arc<AtomicBool>, ping_interval: Duration) -> Writer {
        let task = tokio::spawn(write_loop(sink, reader, alive, ping_interval));
        Writer { task }
    }

    /// Ends the connection as `ending` says.
    pub(super) async fn finish(self, ending: Ending, outbox: &Outbox) {
        match ending {
            // Never wait on a slow or dead peer: dropping the task drops the socket.
            Ending::Drop | Ending::Gone => self.task.abort(),
            Ending::ClosedByPeer => {
                // tungstenite queued the answering close frame when it read the
                // client's; closing the sink flushes it after the queued frames.
                if let Some(mut sink) = self.drain(outbox).await {
                    let _ = tokio::time::timeout(FLUSH_ON_CLOSE, sink.close()).await;
                }
            }
            Ending::Close(code, reason) => {
                if let Some(mut sink) = self.drain(outbox).await {
                    let frame = CloseFrame {
                        code,
                        reason: reason.into(),
                    };
                    let _ = tokio::time::timeout(FLUSH_ON_CLOSE, sink.send(Message::Close(Some(frame)))).await;
                }
            }
        }
    }

    /// Lets the writer write what is queued, then takes the sink back (or gives up after a while).
    async fn drain(self, outbox: &Outbox) -> Option<Sink> {
        outbox.close();
        let abort = self.task.abort_handle();
        match tokio::time::timeout(FLUSH_ON_CLOSE, self.task).await {
            Ok(Ok(sink)) => sink,
            _ => {
                abort.abort();
                None
            }
        }
    }
}

/// Writes batches until the outbox closes (returning the sink for a close
/// frame) or the connection is stopped or fails (returning `None`).
async fn write_loop(
    mut sink: Sink,
    mut reader: OutboxReader,
    alive: Arc<AtomicBool>,
    ping_interval: Duration,
) -> Option<Sink> {
    let ping = sleep_until(Instant::now() + ping_interval);
    tokio::pin!(ping);
    let mut batch = Vec::new();
    loop {
        if reader.is_stopped() {
            return None;
        }
        // While frames keep coming, write them without touching the timer.
        // Taking the next batch declares the previous one written (flushed).
        if reader.take(&mut batch) {
            for frame in batch.drain(..) {
                if let Err(failure) = within(ping_interval, sink.feed(Message::Text(frame))).await {
                    failure.stop(&reader);
                    return None;
                }
            }
            // A burst should not leave a large batch buffer behind on an idle connection.
            if batch.capacity() > 64 {
                batch.shrink_to(16);
            }
            if let Err(failure) = within(ping_interval, sink.flush()).await {
                failure.stop(&reader);
                return None;
            }
            continue;
        }
        if reader.is_closed() {
            return Some(sink);
        }
        tokio::select! {
            biased;
            _ = reader.changed() => {}
            _ = &mut ping => {
                if !alive.swap(false, Ordering::Relaxed) {
                    reader.stop();
                    return None;
                }
                if let Err(failure) = within(ping_interval, sink.send(Message::Ping(Default::default()))).await {
                    failure.stop(&reader);
                    return None;
                }
                ping.as_mut().reset(Instant::now() + ping_interval);
            }
        }
    }
}

/// Why a socket operation did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteFailure {
    /// The socket failed or is closed.
    Failed,
    /// The peer took no bytes for a whole deadline.
    Stalled,
}

impl WriteFailure {
    /// Ends the connection; a stalled peer is counted as a slow consumer.
    fn stop(self, reader: &OutboxReader) {
        match self {
            WriteFailure::Failed => reader.stop(),
            WriteFailure::Stalled => reader.stop_slow_consumer(),
        }
    }
}

/// Runs one sink operation with a deadline of `stall`.
///
/// An operation waits only when tungstenite's write buffer is full and must go
/// to a socket the peer does not drain, and then it completes as soon as that
/// buffer (at most its size plus one frame) is written. So the deadline is
/// reached only when the peer accepts next to nothing for the whole time. Most
/// operations complete on the first poll; those never set up a timer.
async fn within<E>(stall: Duration, operation: impl Future<Output = Result<(), E>>) -> Result<(), WriteFailure> {
    let mut operation = std::pin::pin!(operation);
    let outcome = match operation.as_mut().now_or_never() {
        Some(outcome) => outcome,
        // Boxed: the timer exists only while a write waits, instead of adding
        // its size to every idle connection's writer task.
        None => Box::pin(tokio::time::timeout(stall, operation))
            .await
            .map_err(|_| WriteFailure::Stalled)?,
    };
    outcome.map_err(|_| WriteFailure::Failed)
}
