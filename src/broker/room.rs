//! One room: its subscribers, their presence and its history, behind one short lock.
//!
//! Every operation on a room happens under its own mutex and never awaits, so
//! frames enter each subscriber's outbox in one total order per room: a new
//! subscriber gets its reply, then the member list, then history, and only
//! then live messages; every subscriber sees messages in publication order.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use indexmap::IndexMap;
use serde_json::value::RawValue;

use super::history::{History, Stored};
use super::outbox::Outbox;
use crate::ids::{ClientId, MessageSeq, RoomName, format_message_id};
use crate::protocol::{self, Frame, Member, Message};

/// A connection's process-local handle, cheaper to hash than its client id.
pub type ConnId = u64;

/// A subscribed connection as the room sees it.
#[derive(Clone)]
pub struct Subscriber {
    pub outbox: Outbox,
    pub member: Arc<Member>,
}

/// Which history a new subscriber asked for, already bounded by its allowance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HistoryRequest {
    /// The latest `n` messages.
    Latest(usize),
    /// Messages after sequence `after` (or, when `None`, after an id this
    /// store cannot place), at most `limit`; the reply says whether complete.
    Since { after: Option<u64>, limit: usize },
}

/// What a subscribe did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribed {
    New,
    /// The connection was already subscribed: success, but nothing else changed.
    Already,
}

/// The room was removed from its channel's table between lookup and locking; look it up again.
#[derive(Debug)]
pub struct RoomRemoved;

/// A publish into a retired room, handing the message back for a retry.
#[derive(Debug)]
pub struct Retired(pub Box<RawValue>);

pub struct Room {
    name: RoomName,
    state: Mutex<RoomState>,
}

struct RoomState {
    subscribers: IndexMap<ConnId, Subscriber>,
    history: Box<dyn History>,
    removed: bool,
}

impl Room {
    pub fn new(name: RoomName, history: Box<dyn History>) -> Room {
        Room {
            name,
            state: Mutex::new(RoomState {
                subscribers: IndexMap::new(),
                history,
                removed: false,
            }),
        }
    }

    pub fn name(&self) -> &RoomName {
        &self.name
    }

    fn state(&self) -> MutexGuard<'_, RoomState> {
        // Room operations leave the state consistent at every step, so a
        // poisoned lock (a panic elsewhere) is safe to keep using.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds `subscriber` and queues, in order: the reply (when `callback` is
    /// set), the member list (observable rooms), then history. Other members
    /// get one join event.
    pub fn subscribe(
        &self,
        conn: ConnId,
        subscriber: Subscriber,
        callback: Option<i64>,
        history: HistoryRequest,
        now: u64,
    ) -> Result<Subscribed, RoomRemoved> {
        let mut state = self.state();
        if state.removed {
            return Err(RoomRemoved);
        }
        if state.subscribers.contains_key(&conn) {
            if let Some(callback) = callback {
                let _ = subscriber.outbox.push(protocol::reply(callback, None));
            }
            return Ok(Subscribed::Already);
        }
        let (reply, messages) = match history {
            HistoryRequest::Latest(count) => (
                callback.map(|cb| protocol::reply(cb, None)),
                state.history.latest(count, now),
            ),
            HistoryRequest::Since { after, limit } => {
                let recovery = match after {
                    Some(seq) => state.history.since(seq, limit, now),
                    None => super::history::Recovery {
                        messages: state.history.latest(limit, now),
                        complete: false,
                    },
                };
                (
                    callback.map(|cb| protocol::subscribe_recovered(cb, recovery.complete)),
                    recovery.messages,
                )
            }
        };
        let outbox = &subscriber.outbox;
        if let Some(reply) = reply {
            let _ = outbox.push(reply);
        }
        if self.name.is_observable() {
            let join = protocol::member_join(&self.name, &subscriber.member);
            for other in state.subscribers.values() {
                let _ = other.outbox.push(join.clone());
            }
            let members = state
                .subscribers
                .values()
                .map(|s| &*s.member)
                .chain(std::iter::once(&*subscriber.member));
            let _ = outbox.push(protocol::observable_members(&self.name, members));
        }
        for (index, stored) in messages.iter().enumerate() {
            let _ = outbox.push(stored.message.history_frame(index));
        }
        state.subscribers.insert(conn, subscriber);
        Ok(Subscribed::New)
    }

    /// Removes `conn`; remaining members of an observable room get a leave event.
    /// Returns whether it was subscribed.
    pub fn unsubscribe(&self, conn: ConnId) -> bool {
        let mut state = self.state();
        let Some(gone) = state.subscribers.swap_remove(&conn) else {
            return false;
        };
        if self.name.is_observable() {
            let leave = protocol::member_leave(&self.name, &gone.member);
            for other in state.subscribers.values() {
                let _ = other.outbox.push(leave.clone());
            }
        }
        true
    }

    /// Stores and delivers one message; returns its id and how many subscribers got it.
    pub fn publish(
        &self,
        sequence: &AtomicU64,
        epoch: &str,
        message: Box<RawValue>,
        client_id: Option<ClientId>,
        now: u64,
    ) -> Result<(String, usize), Retired> {
        let mut state = self.state();
        if state.removed {
            return Err(Retired(message));
        }
        // Taken under the room lock, so ids of one room increase in delivery order.
        let seq = sequence.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format_message_id(epoch, MessageSeq(seq));
        let message = Arc::new(Message {
            room: self.name.clone(),
            message,
            client_id,
            id: id.clone(),
            timestamp: now,
        });
        let frame: Frame = message.publish_frame();
        let mut delivered = 0;
        for subscriber in state.subscribers.values() {
            if subscriber.outbox.push(frame.clone()).is_ok() {
                delivered += 1;
            }
        }
        state.history.append(Stored { seq, message }, now);
        Ok((id, delivered))
    }

    /// Replaces a subscriber's member data after re-authentication (no event is sent).
    pub fn update_member(&self, conn: ConnId, member: Arc<Member>) {
        if let Some(subscriber) = self.state().subscribers.get_mut(&conn) {
            subscriber.member = member;
        }
    }

    /// The latest `count` stored messages, oldest first.
    pub fn history(&self, count: usize, now: u64) -> Vec<Arc<Message>> {
        self.state()
            .history
            .latest(count, now)
            .into_iter()
            .map(|stored| stored.message)
            .collect()
    }

    /// Client ids of the current subscribers, in subscription order.
    pub fn member_ids(&self) -> Vec<ClientId> {
        self.state().subscribers.values().map(|s| s.member.id.clone()).collect()
    }

    pub fn subscriber_count(&self) -> usize {
        self.state().subscribers.len()
    }

    /// Marks the room removed if it holds nothing; returns whether it did.
    /// Called by the channel's room table under its shard lock.
    pub(super) fn retire_if_idle(&self) -> bool {
        let mut state = self.state();
        if state.subscribers.is_empty() && state.history.is_empty() {
            state.removed = true;
        }
        state.removed
    }
}
