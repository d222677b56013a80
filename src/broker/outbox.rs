//! The bounded queue of frames waiting to be written to one connection.
//!
//! Publishers push with [`Outbox::push`], which never waits: when the queue is
//! full the connection is a slow consumer, the outbox is *stopped* and the
//! session is woken to drop the socket at once. The writer side takes
//! everything queued in one go ([`OutboxReader::take`]) so that it can write a
//! whole batch and flush once. Every push checks plain atomics (no token, no
//! second lock), and the queue allocates nothing until used, which keeps idle
//! connections small.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::protocol::Frame;

struct Shared {
    queue: Mutex<VecDeque<Frame>>,
    capacity: usize,
    /// Wakes the writer: frames arrived, or the outbox closed or stopped.
    ready: Notify,
    /// No more frames will be pushed; the writer finishes what is queued.
    closed: AtomicBool,
    /// The connection must end now (slow consumer, dead peer): nothing more is written.
    stopped: AtomicBool,
    /// Wakes the session when `stopped` is set.
    stop: Notify,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Frame>> {
        // A panic while holding this lock cannot leave the queue inconsistent.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn stop(&self) {
        if !self.stopped.swap(true, Ordering::AcqRel) {
            // Permits are stored, so neither side can miss the wake-up.
            self.stop.notify_one();
            self.ready.notify_one();
        }
    }
}

/// The pushing side, cloned into every room the connection is subscribed to.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

/// Why a push did not queue the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue was full: the connection has been stopped as a slow consumer.
    Overflow,
    /// The connection is closing or stopped.
    Closed,
}

impl Outbox {
    /// A new outbox holding at most `capacity` frames, and its reader.
    pub fn new(capacity: usize) -> (Outbox, OutboxReader) {
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            capacity,
            ready: Notify::new(),
            closed: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            stop: Notify::new(),
        });
        (
            Outbox {
                shared: Arc::clone(&shared),
            },
            OutboxReader { shared },
        )
    }

    /// Queues `frame` without waiting.
    pub fn push(&self, frame: Frame) -> Result<(), PushError> {
        let shared = &*self.shared;
        if shared.closed.load(Ordering::Relaxed) || shared.stopped.load(Ordering::Relaxed) {
            return Err(PushError::Closed);
        }
        let mut queue = shared.queue();
        if queue.len() >= shared.capacity {
            drop(queue);
            if !shared.stopped.load(Ordering::Relaxed) {
                crate::metrics::slow_consumer_disconnect();
            }
            shared.stop();
            return Err(PushError::Overflow);
        }
        let was_empty = queue.is_empty();
        queue.push_back(frame);
        drop(queue);
        // The writer only waits when it found the queue empty.
        if was_empty {
            shared.ready.notify_one();
        }
        Ok(())
    }

    /// Stops accepting frames; the writer writes what is queued and ends.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.ready.notify_one();
    }

    /// Ends the connection now: nothing more is queued or written.
    pub fn stop(&self) {
        self.shared.stop();
    }

    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::Acquire)
    }

    /// Resolves once the outbox is stopped.
    pub async fn stopped(&self) {
        while !self.is_stopped() {
            self.shared.stop.notified().await;
        }
    }

    /// Frames currently queued.
    pub fn len(&self) -> usize {
        self.shared.queue().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The draining side, owned by the connection's writer task.
pub struct OutboxReader {
    shared: Arc<Shared>,
}

impl OutboxReader {
    /// Moves every queued frame into `batch` without waiting; returns whether there were any.
    pub fn take(&mut self, batch: &mut Vec<Frame>) -> bool {
        let mut queue = self.shared.queue();
        if queue.is_empty() {
            return false;
        }
        batch.extend(queue.drain(..));
        // Give memory back after a burst so idle connections stay small.
        if queue.capacity() > 64 {
            queue.shrink_to(16);
        }
        true
    }

    /// Resolves when something may have changed: frames arrived, or the outbox closed or stopped.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.shared.ready.notified()
    }

    /// Closed by the session (and so, once drained, finished).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::Acquire)
    }

    /// Ends the connection now (the peer is dead or the socket failed).
    pub fn stop(&self) {
        self.shared.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Frame {
        Frame::from(text.to_owned())
    }

    #[test]
    fn delivers_batches_in_order() {
        let (outbox, mut reader) = Outbox::new(10);
        outbox.push(frame("a")).unwrap();
        outbox.push(frame("b")).unwrap();
        let mut batch = Vec::new();
        assert!(reader.take(&mut batch));
        assert_eq!(batch.iter().map(|f| f.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        batch.clear();
        assert!(!reader.take(&mut batch));
    }

    #[tokio::test]
    async fn overflow_stops_the_connection_without_blocking() {
        let (outbox, reader) = Outbox::new(2);
        outbox.push(frame("a")).unwrap();
        outbox.push(frame("b")).unwrap();
        assert_eq!(outbox.push(frame("c")), Err(PushError::Overflow));
        assert!(outbox.is_stopped() && reader.is_stopped());
        outbox.stopped().await;
        assert_eq!(outbox.push(frame("d")), Err(PushError::Closed));
    }

    #[test]
    fn close_refuses_new_frames_but_keeps_queued_ones() {
        let (outbox, mut reader) = Outbox::new(10);
        outbox.push(frame("last")).unwrap();
        outbox.close();
        assert_eq!(outbox.push(frame("late")), Err(PushError::Closed));
        assert!(reader.is_closed());
        let mut batch = Vec::new();
        assert!(reader.take(&mut batch));
        assert_eq!(batch.len(), 1);
    }

    #[tokio::test]
    async fn a_push_wakes_a_waiting_writer() {
        let (outbox, mut reader) = Outbox::new(10);
        let writer = tokio::spawn(async move {
            let mut batch = Vec::new();
            while !reader.take(&mut batch) {
                reader.changed().await;
            }
            batch.len()
        });
        tokio::task::yield_now().await;
        outbox.push(frame("x")).unwrap();
        assert_eq!(writer.await.unwrap(), 1);
    }

    #[tokio::test]
    async fn stop_wakes_the_session() {
        let (outbox, reader) = Outbox::new(10);
        let watcher = outbox.clone();
        let session = tokio::spawn(async move { watcher.stopped().await });
        tokio::task::yield_now().await;
        reader.stop();
        session.await.unwrap();
    }
}
