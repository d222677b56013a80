//! Per-room message history.
//!
//! [`History`] is the small interface the room uses; [`MemoryHistory`] keeps
//! the latest messages in memory. A durable or Redis-backed store implements
//! the same trait later. Besides the messages, a store remembers the highest
//! sequence number it has *lost* (evicted by size or age, or published before
//! the store existed), which is what makes gap-free recovery (PROTOCOL.md §7)
//! decidable: a client is fully recovered when everything after its last seen
//! message is still stored.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::protocol::Message;

/// A message with the sequence number its id was made from.
#[derive(Debug, Clone)]
pub struct Stored {
    pub seq: u64,
    pub message: Arc<Message>,
}

/// What a recovery request found.
#[derive(Debug)]
pub struct Recovery {
    /// Messages after the given one, oldest first.
    pub messages: Vec<Stored>,
    /// True when no message after the given one was lost or left out.
    pub complete: bool,
}

/// The history of one room.
pub trait History: Send {
    /// Appends a message published at `now` (Unix seconds).
    fn append(&mut self, stored: Stored, now: u64);
    /// The latest `count` messages still within the age limit, oldest first.
    fn latest(&mut self, count: usize, now: u64) -> Vec<Stored>;
    /// Messages published after `seq`, at most `limit` (the latest ones).
    fn since(&mut self, seq: u64, limit: usize, now: u64) -> Recovery;
    /// Number of messages held.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The in-memory store: a ring of the latest `capacity` messages no older than `max_age`.
pub struct MemoryHistory {
    messages: VecDeque<Stored>,
    capacity: usize,
    max_age_seconds: u64,
    /// Highest sequence number this store can no longer produce.
    lost_up_to: u64,
}

impl MemoryHistory {
    /// `lost_up_to` is the channel's sequence when the room was created:
    /// anything published before that is unknown to this store.
    pub fn new(capacity: usize, max_age_seconds: u64, lost_up_to: u64) -> Self {
        MemoryHistory {
            messages: VecDeque::new(),
            capacity,
            max_age_seconds,
            lost_up_to,
        }
    }

    fn expire(&mut self, now: u64) {
        let cutoff = now.saturating_sub(self.max_age_seconds);
        while let Some(oldest) = self.messages.front() {
            if oldest.message.timestamp >= cutoff {
                break;
            }
            self.lost_up_to = self.lost_up_to.max(oldest.seq);
            self.messages.pop_front();
        }
    }
}

impl History for MemoryHistory {
    fn append(&mut self, stored: Stored, now: u64) {
        if self.capacity == 0 {
            self.lost_up_to = self.lost_up_to.max(stored.seq);
            return;
        }
        if self.messages.len() == self.capacity
            && let Some(evicted) = self.messages.pop_front()
        {
            self.lost_up_to = self.lost_up_to.max(evicted.seq);
        }
        self.messages.push_back(stored);
        self.expire(now);
    }

    fn latest(&mut self, count: usize, now: u64) -> Vec<Stored> {
        self.expire(now);
        let skip = self.messages.len().saturating_sub(count);
        self.messages.iter().skip(skip).cloned().collect()
    }

    fn since(&mut self, seq: u64, limit: usize, now: u64) -> Recovery {
        self.expire(now);
        let newer: Vec<&Stored> = self.messages.iter().filter(|m| m.seq > seq).collect();
        let skip = newer.len().saturating_sub(limit);
        Recovery {
            complete: seq >= self.lost_up_to && skip == 0,
            messages: newer.into_iter().skip(skip).cloned().collect(),
        }
    }

    fn len(&self) -> usize {
        self.messages.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::RoomName;
    use serde_json::value::RawValue;

    fn stored(seq: u64, timestamp: u64) -> Stored {
        Stored {
            seq,
            message: Arc::new(Message {
                room: RoomName::parse("r", 10).unwrap(),
                message: RawValue::from_string(seq.to_string()).unwrap(),
                client_id: None,
                id: seq.to_string(),
                timestamp,
            }),
        }
    }

    fn seqs(messages: &[Stored]) -> Vec<u64> {
        messages.iter().map(|m| m.seq).collect()
    }

    #[test]
    fn keeps_the_latest_messages_oldest_first() {
        let mut history = MemoryHistory::new(3, 1000, 0);
        for seq in 1..=5 {
            history.append(stored(seq, 100), 100);
        }
        assert_eq!(seqs(&history.latest(10, 100)), [3, 4, 5]);
        assert_eq!(seqs(&history.latest(2, 100)), [4, 5]);
    }

    #[test]
    fn drops_messages_past_the_age_limit() {
        let mut history = MemoryHistory::new(10, 60, 0);
        history.append(stored(1, 100), 100);
        history.append(stored(2, 150), 150);
        assert_eq!(seqs(&history.latest(10, 170)), [2]);
    }

    #[test]
    fn recovery_is_complete_only_when_nothing_was_lost() {
        let mut history = MemoryHistory::new(3, 1000, 0);
        for seq in [2, 4, 6, 8] {
            history.append(stored(seq, 100), 100);
        }
        // 2 was evicted: a client that saw 4 misses nothing.
        let recovery = history.since(4, 100, 100);
        assert_eq!(seqs(&recovery.messages), [6, 8]);
        assert!(recovery.complete);
        // A client that last saw 1 missed 2, which is gone.
        assert!(!history.since(1, 100, 100).complete);
        // A limit that leaves messages out is incomplete too.
        let limited = history.since(4, 1, 100);
        assert_eq!(seqs(&limited.messages), [8]);
        assert!(!limited.complete);
    }

    #[test]
    fn a_store_knows_nothing_from_before_it_existed() {
        let mut history = MemoryHistory::new(3, 1000, 50);
        history.append(stored(51, 100), 100);
        assert!(!history.since(10, 100, 100).complete);
        assert!(history.since(50, 100, 100).complete);
    }

    #[test]
    fn zero_capacity_stores_nothing_and_loses_everything() {
        let mut history = MemoryHistory::new(0, 1000, 0);
        history.append(stored(1, 100), 100);
        assert!(history.is_empty());
        assert!(!history.since(0, 100, 100).complete);
    }
}
