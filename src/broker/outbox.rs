//! The bounded queue of frames waiting to be written to one connection.
//!
//! Publishers push with [`Outbox::push`], which never waits: when the queue is
//! full the connection is a slow consumer, the outbox is marked overflowed and
//! the session is told to drop the socket at once. The writer side takes
//! everything queued in one go ([`OutboxReader::next_batch`]) so that it can
//! write a whole batch and flush once. The queue allocates nothing until used,
//! which keeps idle connections small.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::protocol::Frame;

struct Shared {
    queue: Mutex<VecDeque<Frame>>,
    capacity: usize,
    ready: Notify,
    /// No more frames will be pushed; the writer finishes what is queued.
    closed: AtomicBool,
    /// Cancelled when the connection must end now (slow consumer, or the session's own stop signal).
    overflow: CancellationToken,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, VecDeque<Frame>> {
        // A panic while holding this lock cannot leave the queue inconsistent.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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
    /// The queue was full: the connection has been marked as a slow consumer.
    Overflow,
    /// The connection is closing.
    Closed,
}

impl Outbox {
    /// A new outbox holding at most `capacity` frames, and its reader.
    /// `overflow` is cancelled when the queue overflows; once it is cancelled
    /// (for any reason) the outbox accepts nothing more.
    pub fn new(capacity: usize, overflow: CancellationToken) -> (Outbox, OutboxReader) {
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            capacity,
            ready: Notify::new(),
            closed: AtomicBool::new(false),
            overflow,
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
        if shared.closed.load(Ordering::Relaxed) || shared.overflow.is_cancelled() {
            return Err(PushError::Closed);
        }
        let mut queue = shared.queue();
        if queue.len() >= shared.capacity {
            drop(queue);
            if !shared.overflow.is_cancelled() {
                shared.overflow.cancel();
                crate::metrics::slow_consumer_disconnect();
            }
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

    /// Stops accepting frames; the writer flushes what is queued and ends.
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        self.shared.ready.notify_one();
    }

    pub fn has_overflowed(&self) -> bool {
        self.shared.overflow.is_cancelled()
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
    /// Moves every queued frame into `batch` without waiting (benchmarks and tests).
    pub fn drain_now(&mut self, batch: &mut Vec<Frame>) {
        batch.extend(self.shared.queue().drain(..));
    }

    /// Waits for frames and moves all queued ones into `batch` (which must be
    /// empty). Returns `false` when the outbox is closed and drained, or overflowed.
    pub async fn next_batch(&mut self, batch: &mut Vec<Frame>) -> bool {
        loop {
            if self.shared.overflow.is_cancelled() {
                return false;
            }
            {
                let mut queue = self.shared.queue();
                if !queue.is_empty() {
                    batch.extend(queue.drain(..));
                    // Give memory back after a burst so idle connections stay small.
                    if queue.capacity() > 64 {
                        queue.shrink_to(16);
                    }
                    return true;
                }
            }
            if self.shared.closed.load(Ordering::Relaxed) {
                return false;
            }
            self.shared.ready.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Frame {
        Frame::from(text.to_owned())
    }

    #[tokio::test]
    async fn delivers_batches_in_order() {
        let (outbox, mut reader) = Outbox::new(10, CancellationToken::new());
        outbox.push(frame("a")).unwrap();
        outbox.push(frame("b")).unwrap();
        let mut batch = Vec::new();
        assert!(reader.next_batch(&mut batch).await);
        assert_eq!(batch.iter().map(|f| f.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    }

    #[tokio::test]
    async fn overflow_marks_the_connection_without_blocking() {
        let (outbox, mut reader) = Outbox::new(2, CancellationToken::new());
        outbox.push(frame("a")).unwrap();
        outbox.push(frame("b")).unwrap();
        assert_eq!(outbox.push(frame("c")), Err(PushError::Overflow));
        assert!(outbox.has_overflowed());
        assert!(outbox.has_overflowed());
        assert!(!reader.next_batch(&mut Vec::new()).await);
        assert_eq!(outbox.push(frame("d")), Err(PushError::Closed));
    }

    #[tokio::test]
    async fn close_drains_then_ends() {
        let (outbox, mut reader) = Outbox::new(10, CancellationToken::new());
        outbox.push(frame("last")).unwrap();
        outbox.close();
        let mut batch = Vec::new();
        assert!(reader.next_batch(&mut batch).await);
        batch.clear();
        assert!(!reader.next_batch(&mut batch).await);
    }

    #[tokio::test]
    async fn wakes_a_waiting_writer() {
        let (outbox, mut reader) = Outbox::new(10, CancellationToken::new());
        let writer = tokio::spawn(async move {
            let mut batch = Vec::new();
            reader.next_batch(&mut batch).await;
            batch.len()
        });
        tokio::task::yield_now().await;
        outbox.push(frame("x")).unwrap();
        assert_eq!(writer.await.unwrap(), 1);
    }
}
