//! The writing half of a session: drains the outbox in batches and keeps the connection alive.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::SinkExt;
use futures_util::stream::SplitSink;
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
        if reader.take(&mut batch) {
            for frame in batch.drain(..) {
                if sink.feed(Message::Text(frame)).await.is_err() {
                    reader.stop();
                    return None;
                }
            }
            if sink.flush().await.is_err() {
                reader.stop();
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
                if !alive.swap(false, Ordering::Relaxed) || sink.send(Message::Ping(Default::default())).await.is_err() {
                    reader.stop();
                    return None;
                }
                ping.as_mut().reset(Instant::now() + ping_interval);
            }
        }
    }
}
