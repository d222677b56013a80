//! One room's local subscribers and their outboxes, behind one short lock.
//!
//! A room is fan-out only: it never stores or orders messages (the engine
//! does, and calls [`Room::deliver`] in offset order). What it guarantees is
//! the order of frames per subscriber: a new subscriber gets its reply, the
//! member list, its history, and only then live frames. Between joining and
//! receiving its history (which the engine reads without holding this lock), a
//! subscriber is **catching up**: frames for it are buffered, and when its
//! history arrives the buffered messages already covered by it are dropped, so
//! nothing is duplicated and nothing is skipped.

use std::sync::{Arc, Mutex, MutexGuard};

use indexmap::IndexMap;

use super::outbox::Outbox;
use crate::engine::Presence;
use crate::ids::{ClientId, RoomName};
use crate::protocol::{self, Frame, Member, Message};

/// A connection's process-local handle, cheaper to hash than its client id.
pub type ConnId = u64;

/// A subscribed connection as the room sees it.
#[derive(Clone)]
pub struct Subscriber {
    pub outbox: Outbox,
    pub member: Arc<Member>,
}

/// What a join did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// A new subscriber, catching up until [`Room::catch_up`].
    New,
    /// The connection was already subscribed: nothing changed.
    Already,
}

/// The room was removed from its channel's table between lookup and locking; look it up again.
#[derive(Debug)]
pub struct RoomRemoved;

/// Frames held for a subscriber that is still catching up.
#[derive(Default)]
struct CatchingUp {
    /// The member list as of the join (observable rooms).
    members: Option<Frame>,
    /// Live frames since the join, with the offset of those that are messages.
    frames: Vec<(Option<u64>, Frame)>,
    /// Bytes of `frames`.
    bytes: usize,
}

/// Bounds of a catching-up subscriber's buffer (the outbox's own defaults).
const CATCH_UP_MAX_FRAMES: usize = 4096;
const CATCH_UP_MAX_BYTES: usize = 4 << 20;

struct Entry {
    subscriber: Subscriber,
    catching_up: Option<Box<CatchingUp>>,
}

impl Entry {
    fn send(&mut self, offset: Option<u64>, frame: &Frame) -> bool {
        match &mut self.catching_up {
            Some(buffer) => {
                buffer.bytes += frame.len();
                buffer.frames.push((offset, frame.clone()));
                // A history read that takes long while the room floods must not
                // queue without bound: such a subscriber is a slow consumer.
                if buffer.frames.len() > CATCH_UP_MAX_FRAMES || buffer.bytes > CATCH_UP_MAX_BYTES {
                    buffer.frames.clear();
                    self.subscriber.outbox.stop();
                    return false;
                }
                true
            }
            None => self.subscriber.outbox.push(frame.clone()).is_ok(),
        }
    }
}

pub struct Room {
    name: RoomName,
    state: Mutex<RoomState>,
}

struct RoomState {
    subscribers: IndexMap<ConnId, Entry>,
    /// Members subscribed on other nodes (cluster engine), in arrival order.
    remote: IndexMap<ClientId, Arc<Member>>,
    removed: bool,
}

impl RoomState {
    fn send_all(&mut self, frame: &Frame) {
        for entry in self.subscribers.values_mut() {
            entry.send(None, frame);
        }
    }
}

impl Room {
    pub fn new(name: RoomName) -> Room {
        Room {
            name,
            state: Mutex::new(RoomState {
                subscribers: IndexMap::new(),
                remote: IndexMap::new(),
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

    /// Adds `subscriber`, catching up. Other members of an observable room get
    /// one join event now; the newcomer's member list is taken now too.
    pub fn join(&self, conn: ConnId, subscriber: Subscriber) -> Result<Joined, RoomRemoved> {
        let mut state = self.state();
        if state.removed {
            return Err(RoomRemoved);
        }
        if state.subscribers.contains_key(&conn) {
            return Ok(Joined::Already);
        }
        let mut buffer = CatchingUp::default();
        if self.name.is_observable() {
            let join = protocol::member_join(&self.name, &subscriber.member);
            for other in state.subscribers.values_mut() {
                other.send(None, &join);
            }
            let members = state
                .subscribers
                .values()
                .map(|e| &*e.subscriber.member)
                .chain(std::iter::once(&*subscriber.member))
                .chain(state.remote.values().map(|m| &**m));
            buffer.members = Some(protocol::observable_members(&self.name, members));
        }
        state.subscribers.insert(
            conn,
            Entry {
                subscriber,
                catching_up: Some(Box::new(buffer)),
            },
        );
        Ok(Joined::New)
    }

    /// Ends a subscriber's catching up: queues `reply`, the member list, the
    /// history, then the buffered live frames that `history` does not cover
    /// (messages with offsets above `head`). Returns false if it left meanwhile.
    pub fn catch_up(&self, conn: ConnId, reply: Option<Frame>, history: &[Arc<Message>], head: u64) -> bool {
        let mut state = self.state();
        let Some(entry) = state.subscribers.get_mut(&conn) else {
            return false;
        };
        let Some(buffer) = entry.catching_up.take() else {
            return true;
        };
        let outbox = &entry.subscriber.outbox;
        let frames = reply
            .into_iter()
            .chain(buffer.members)
            .chain(history.iter().enumerate().map(|(i, m)| m.history_frame(i)))
            .chain(
                buffer
                    .frames
                    .into_iter()
                    .filter(|(offset, _)| offset.is_none_or(|o| o > head))
                    .map(|(_, frame)| frame),
            );
        for frame in frames {
            if outbox.push(frame).is_err() {
                break;
            }
        }
        true
    }

    /// Removes `conn`; remaining members of an observable room get a leave event.
    /// Returns whether it was subscribed.
    pub fn leave(&self, conn: ConnId) -> bool {
        self.remove(conn).is_some()
    }

    /// [`Room::leave`], returning the member that left.
    pub fn remove(&self, conn: ConnId) -> Option<Arc<Member>> {
        let mut state = self.state();
        let gone = state.subscribers.swap_remove(&conn)?;
        if self.name.is_observable() {
            state.send_all(&protocol::member_leave(&self.name, &gone.subscriber.member));
        }
        Some(gone.subscriber.member)
    }

    /// Applies a change of the members on other nodes; local subscribers of an
    /// observable room get a join or leave event for each actual change, so an
    /// event repeated (or a snapshot overlapping events) is never shown twice.
    pub fn apply_remote(&self, event: Presence) {
        if !self.name.is_observable() {
            return;
        }
        let mut state = self.state();
        match event {
            Presence::Join(member) => {
                if !state.remote.contains_key(&member.id) {
                    state.send_all(&protocol::member_join(&self.name, &member));
                    state.remote.insert(member.id.clone(), member);
                }
            }
            Presence::Leave(id) => {
                if let Some(member) = state.remote.shift_remove(&id) {
                    state.send_all(&protocol::member_leave(&self.name, &member));
                }
            }
            Presence::Snapshot(members) => {
                let now: IndexMap<ClientId, Arc<Member>> = members.into_iter().map(|m| (m.id.clone(), m)).collect();
                let gone: Vec<Arc<Member>> = state
                    .remote
                    .values()
                    .filter(|m| !now.contains_key(&m.id))
                    .cloned()
                    .collect();
                for member in gone {
                    state.send_all(&protocol::member_leave(&self.name, &member));
                }
                let new: Vec<Arc<Member>> = now
                    .values()
                    .filter(|m| !state.remote.contains_key(&m.id))
                    .cloned()
                    .collect();
                for member in new {
                    state.send_all(&protocol::member_join(&self.name, &member));
                }
                state.remote = now;
            }
        }
    }

    /// Drops every subscriber's connection without a close frame, so that
    /// clients reconnect and recover with `history_since` (a gap the engine
    /// could not fill). Returns how many were dropped.
    pub fn resync(&self) -> usize {
        let state = self.state();
        for entry in state.subscribers.values() {
            entry.subscriber.outbox.stop();
        }
        state.subscribers.len()
    }

    /// Removes every subscriber that is `user`'s connection (its member's
    /// `authData.user`), queueing `notice` to each; the remaining members of an
    /// observable room get one leave event per removed connection. Frames a
    /// removed subscriber was still catching up on are dropped. Returns the
    /// removed connections' members (a group member removed, PROTOCOL.md §11.1).
    pub fn evict_user(&self, user: &str, notice: &Frame) -> Vec<Arc<Member>> {
        let is_users = |entry: &Entry| {
            let data = entry.subscriber.member.auth_data.as_ref();
            data.and_then(|d| d.get("user")).and_then(|u| u.as_str()) == Some(user)
        };
        let mut state = self.state();
        let conns: Vec<ConnId> = state
            .subscribers
            .iter()
            .filter(|(_, entry)| is_users(entry))
            .map(|(conn, _)| *conn)
            .collect();
        // All of them go first, so that none hears of the others leaving.
        let gone: Vec<Entry> = conns
            .iter()
            .filter_map(|conn| state.subscribers.swap_remove(conn))
            .collect();
        for entry in &gone {
            let _ = entry.subscriber.outbox.push(notice.clone());
            if self.name.is_observable() {
                let leave = protocol::member_leave(&self.name, &entry.subscriber.member);
                for other in state.subscribers.values_mut() {
                    other.send(None, &leave);
                }
            }
        }
        gone.into_iter().map(|entry| entry.subscriber.member).collect()
    }

    /// Whether `conn` is subscribed.
    pub fn holds(&self, conn: ConnId) -> bool {
        self.state().subscribers.contains_key(&conn)
    }

    /// Hands one placed message to every subscriber; returns how many took it.
    pub fn deliver(&self, message: &Message) -> usize {
        let frame: Frame = message.publish_frame();
        let mut state = self.state();
        state
            .subscribers
            .values_mut()
            .filter_map(|entry| entry.send(Some(message.id.offset), &frame).then_some(()))
            .count()
    }

    /// Replaces a subscriber's member data after re-authentication (no event is sent).
    pub fn update_member(&self, conn: ConnId, member: Arc<Member>) {
        if let Some(entry) = self.state().subscribers.get_mut(&conn) {
            entry.subscriber.member = member;
        }
    }

    /// Client ids of the current subscribers, in subscription order.
    pub fn member_ids(&self) -> Vec<ClientId> {
        self.state()
            .subscribers
            .values()
            .map(|e| e.subscriber.member.id.clone())
            .collect()
    }

    pub fn subscriber_count(&self) -> usize {
        self.state().subscribers.len()
    }

    /// Marks the room removed if it has no subscribers; returns whether it did.
    /// Called by the channel's room table under its shard lock.
    pub(super) fn retire_if_empty(&self) -> bool {
        let mut state = self.state();
        if state.subscribers.is_empty() {
            state.removed = true;
        }
        state.removed
    }
}
