//! The bounded queue of frames waiting to be written to one connection.
//!
//! Publishers push with [`Outbox::push`], which never waits: when the queue is
//! over its budget the connection is a slow consumer, the outbox is *stopped*
//! and the session is woken to drop the socket at once. The budget is counted
//! in frames **and** bytes (PROTOCOL.md §10), and frames the writer has taken
//! but not yet written still count: otherwise a peer that stops reading would
//! pin a full queue plus a full batch. The writer side takes everything queued
//! in one go ([`OutboxReader::take`]) so that it can write a whole batch and
//! flush once. Every push checks plain atomics (no token, no second lock), and
//! the queue allocates nothing until used, which keeps idle connections small.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::protocol::Frame;

/// The frames of one connection that are not written yet, and what they weigh.
#[derive(Default)]
struct Queue {
    frames: VecDeque<Frame>,
    /// Bytes of the frames in `frames`.
    queued_bytes: usize,
    /// The batch the writer took last: it counts until the writer takes the next one.
    in_flight_frames: usize,
    in_flight_bytes: usize,
}

impl Queue {
    fn pending_frames(&self) -> usize {
        self.frames.len() + self.in_flight_frames
    }

    fn pending_bytes(&self) -> usize {
        self.queued_bytes + self.in_flight_bytes
    }
}

struct Shared {
    queue: Mutex<Queue>,
    max_frames: usize,
    max_bytes: usize,
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
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue inconsistent.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stops the connection; returns whether this call did (and not an earlier one).
    fn stop(&self) -> bool {
        let first = !self.stopped.swap(true, Ordering::AcqRel);
        if first {
            // Permits are stored, so neither side can miss the wake-up.
            self.stop.notify_one();
            self.ready.notify_one();
        }
        first
    }

    /// Stops a slow consumer, counting it once however many pushes or writes notice.
    fn stop_slow_consumer(&self) {
        if self.stop() {
            crate::metrics::slow_consumer_disconnect();
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
    /// The budget was exceeded: the connection has been stopped as a slow consumer.
    Overflow,
    /// The connection is closing or stopped.
    Closed,
}

impl Outbox {
    /// A new outbox holding at most `max_frames` frames and `max_bytes` bytes
    /// not yet written, and its reader.
    pub fn new(max_frames: usize, max_bytes: usize) -> (Outbox, OutboxReader) {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            max_frames,
            max_bytes,
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
        let bytes = frame.len();
        let mut queue = shared.queue();
        if queue.pending_frames() >= shared.max_frames || queue.pending_bytes().saturating_add(bytes) > shared.max_bytes
        {
            drop(queue);
            shared.stop_slow_consumer();
            return Err(PushError::Overflow);
        }
        let was_empty = queue.frames.is_empty();
        queue.frames.push_back(frame);
        queue.queued_bytes += bytes;
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

    /// Frames not yet written: queued, or in the batch being written.
    pub fn len(&self) -> usize {
        self.shared.queue().pending_frames()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes not yet written: queued, or in the batch being written.
    pub fn pending_bytes(&self) -> usize {
        self.shared.queue().pending_bytes()
    }
}

/// The draining side, owned by the connection's writer task.
pub struct OutboxReader {
    shared: Arc<Shared>,
}

impl OutboxReader {
    /// Moves every queued frame into `batch` without waiting; returns whether there were any.
    ///
    /// Taking declares the previous batch written: its frames count against the
    /// budget until then, so the writer calls this only once it has flushed them.
    pub fn take(&mut self, batch: &mut Vec<Frame>) -> bool {
        let mut queue = self.shared.queue();
        queue.in_flight_frames = queue.frames.len();
        queue.in_flight_bytes = std::mem::take(&mut queue.queued_bytes);
        if queue.frames.is_empty() {
            return false;
        }
        batch.extend(queue.frames.drain(..));
        // Give memory back after a burst so idle connections stay small.
        if queue.frames.capacity() > 64 {
            queue.frames.shrink_to(16);
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

    /// Ends the connection now because the peer stopped taking bytes: a slow
    /// consumer, counted as one (once, even if a push also noticed).
    pub fn stop_slow_consumer(&self) {
        self.shared.stop_slow_consumer();
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
        let (outbox, mut reader) = Outbox::new(10, 1 << 20);
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
        let (outbox, reader) = Outbox::new(2, 1 << 20);
        outbox.push(frame("a")).unwrap();
        outbox.push(frame("b")).unwrap();
        assert_eq!(outbox.push(frame("c")), Err(PushError::Overflow));
        assert!(outbox.is_stopped() && reader.is_stopped());
        outbox.stopped().await;
        assert_eq!(outbox.push(frame("d")), Err(PushError::Closed));
    }

    #[test]
    fn the_byte_budget_is_a_hard_cap() {
        let (outbox, reader) = Outbox::new(100, 10);
        outbox.push(frame("0123")).unwrap();
        outbox.push(frame("456789")).unwrap();
        assert_eq!(outbox.pending_bytes(), 10);
        // One more byte would exceed it, however few frames are queued.
        assert_eq!(outbox.push(frame("x")), Err(PushError::Overflow));
        assert!(reader.is_stopped());
        assert_eq!(outbox.pending_bytes(), 10, "a refused frame is not queued");
    }

    #[test]
    fn frames_being_written_count_until_the_next_take() {
        let (outbox, mut reader) = Outbox::new(3, 10);
        outbox.push(frame("aaaa")).unwrap();
        outbox.push(frame("bbbb")).unwrap();
        let mut batch = Vec::new();
        assert!(reader.take(&mut batch));
        // The taken batch is not written yet: it still weighs on the budget.
        assert_eq!((outbox.len(), outbox.pending_bytes()), (2, 8));
        outbox.push(frame("c")).unwrap();
        assert_eq!(
            outbox.push(frame("dd")),
            Err(PushError::Overflow),
            "8 + 1 + 2 > 10 bytes"
        );

        // Taking again declares the first batch written.
        let (outbox, mut reader) = Outbox::new(3, 10);
        outbox.push(frame("aaaa")).unwrap();
        outbox.push(frame("bbbb")).unwrap();
        assert!(reader.take(&mut batch));
        outbox.push(frame("cc")).unwrap();
        assert_eq!(outbox.push(frame("d")), Err(PushError::Overflow), "3 frames pending");
        let (outbox, mut reader) = Outbox::new(3, 10);
        outbox.push(frame("aaaa")).unwrap();
        assert!(reader.take(&mut batch));
        assert!(!reader.take(&mut batch));
        assert_eq!((outbox.len(), outbox.pending_bytes()), (0, 0));
        outbox.push(frame("0123456789")).unwrap();
    }

    #[test]
    fn close_refuses_new_frames_but_keeps_queued_ones() {
        let (outbox, mut reader) = Outbox::new(10, 1 << 20);
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
        let (outbox, mut reader) = Outbox::new(10, 1 << 20);
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
        let (outbox, reader) = Outbox::new(10, 1 << 20);
        let watcher = outbox.clone();
        let session = tokio::spawn(async move { watcher.stopped().await });
        tokio::task::yield_now().await;
        reader.stop();
        session.await.unwrap();
    }
}
