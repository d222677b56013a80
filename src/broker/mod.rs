//! Rooms, subscribers, presence, history and fan-out, per channel.
//!
//! The API is synchronous and never awaits while holding a lock. Rooms live in
//! a sharded table so that traffic in different rooms never contends on one
//! lock; each [`Room`] has its own short lock (see [`room`]).
//!
//! # Layout
//! - [`room`]: one room's subscribers, presence and publish path.
//! - [`history`]: the history interface and the in-memory store.
//! - [`outbox`]: the bounded per-connection frame queue.

pub mod history;
pub mod outbox;
pub mod room;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::value::RawValue;

use self::history::MemoryHistory;
pub use self::outbox::{Outbox, OutboxReader, PushError};
pub use self::room::{ConnId, HistoryRequest, Room, Subscribed, Subscriber};
use crate::config::{ChannelConfig, Config};
use crate::ids::{ClientId, RoomName, parse_message_id, random_alphanumeric};
use crate::protocol::Message;
use crate::token::{TokenIssuer, TokenVerifier, unix_now};

/// The most history messages one subscribe can return (PROTOCOL.md §5.5).
pub const MAX_HISTORY_PER_SUBSCRIBE: usize = 100;

/// Shards of the room table: enough that unrelated rooms rarely share a lock.
const ROOM_SHARDS: usize = 64;

/// Every channel of this server.
pub struct Broker {
    channels: HashMap<String, Arc<Channel>>,
    next_conn: AtomicU64,
}

impl Broker {
    pub fn new(config: &Config) -> Broker {
        let channels = config
            .channels
            .iter()
            .map(|c| (c.id.clone(), Arc::new(Channel::new(c.clone()))))
            .collect();
        Broker {
            channels,
            next_conn: AtomicU64::new(1),
        }
    }

    pub fn channel(&self, id: &str) -> Option<&Arc<Channel>> {
        self.channels.get(id)
    }

    /// A process-unique handle for a new connection.
    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }
}

/// A channel's shared state: its settings, token checks and rooms.
pub struct Channel {
    pub config: ChannelConfig,
    pub verifier: TokenVerifier,
    pub issuer: TokenIssuer,
    rooms: RoomTable,
    /// Message sequence of the whole channel; per-room ids are taken from it under the room lock.
    sequence: AtomicU64,
    /// Names this incarnation of the history store; ids from another epoch cannot be recovered.
    epoch: String,
    connections: AtomicUsize,
}

/// What a connection asks of a subscribe.
#[derive(Debug, Clone, Copy)]
pub struct SubscribeRequest<'a> {
    pub conn: ConnId,
    /// Echoed in the reply; no reply without it.
    pub callback: Option<i64>,
    /// How many history messages the client asked for.
    pub history_count: u32,
    /// Recover everything after this message id (PROTOCOL.md §7).
    pub history_since: Option<&'a str>,
    /// How many history messages its permission grants.
    pub allowance: u32,
}

/// Receipt for one published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: String,
    pub delivered: usize,
}

impl Channel {
    pub fn new(config: ChannelConfig) -> Channel {
        Channel {
            verifier: TokenVerifier::new(&config.id, config.secret.expose(), config.jwt_leeway_seconds),
            issuer: TokenIssuer::new(&config.id, config.secret.expose()),
            config,
            rooms: RoomTable::new(),
            sequence: AtomicU64::new(0),
            epoch: random_alphanumeric(8),
            connections: AtomicUsize::new(0),
        }
    }

    /// Subscribes a connection, queueing reply, members and history to its outbox.
    pub fn subscribe(
        &self,
        room: &RoomName,
        subscriber: Subscriber,
        request: SubscribeRequest<'_>,
    ) -> (Arc<Room>, Subscribed) {
        let SubscribeRequest {
            conn,
            callback,
            history_count,
            history_since,
            allowance,
        } = request;
        let allowance = (allowance as usize).min(MAX_HISTORY_PER_SUBSCRIBE);
        let request = match history_since {
            None => HistoryRequest::Latest((history_count as usize).min(allowance)),
            Some(since) => HistoryRequest::Since {
                after: parse_message_id(since)
                    .filter(|(epoch, _)| *epoch == self.epoch)
                    .map(|(_, seq)| seq.0),
                limit: if history_count == 0 {
                    allowance
                } else {
                    (history_count as usize).min(allowance)
                },
            },
        };
        let now = unix_now();
        loop {
            let room = self.rooms.get_or_create(room, || self.new_history());
            if let Ok(outcome) = room.subscribe(conn, subscriber.clone(), callback, request, now) {
                return (room, outcome);
            }
        }
    }

    /// Unsubscribes a connection from a room it holds; frees the room when idle.
    pub fn unsubscribe(&self, room: &Arc<Room>, conn: ConnId) -> bool {
        let was = room.unsubscribe(conn);
        self.rooms.release_if_idle(room);
        was
    }

    /// Stores and fans out one message. `client_id` is `None` for REST publishes.
    pub fn publish(&self, room: &RoomName, message: Box<RawValue>, client_id: Option<ClientId>) -> Published {
        let now = unix_now();
        let started = std::time::Instant::now();
        let mut body = message;
        let published = loop {
            let target = self.rooms.get_or_create(room, || self.new_history());
            match target.publish(&self.sequence, &self.epoch, body, client_id.clone(), now) {
                Ok((id, delivered)) => {
                    self.rooms.release_if_idle(&target);
                    break Published { id, delivered };
                }
                // Retired between lookup and lock: the body comes back; look the room up again.
                Err(room::Retired(returned)) => body = returned,
            }
        };
        crate::metrics::fanout(published.delivered, started.elapsed());
        published
    }

    /// The latest `count` stored messages of a room, oldest first.
    pub fn history(&self, room: &RoomName, count: usize) -> Vec<Arc<Message>> {
        self.rooms
            .get(room)
            .map(|r| r.history(count, unix_now()))
            .unwrap_or_default()
    }

    /// Rooms with at least one subscriber, sorted.
    pub fn occupied_rooms(&self) -> Vec<Arc<Room>> {
        let mut rooms: Vec<Arc<Room>> = self
            .rooms
            .all()
            .into_iter()
            .filter(|r| r.subscriber_count() > 0)
            .collect();
        rooms.sort_by(|a, b| a.name().cmp(b.name()));
        rooms
    }

    /// Subscribers of one room.
    pub fn room_members(&self, room: &RoomName) -> Vec<ClientId> {
        self.rooms.get(room).map(|r| r.member_ids()).unwrap_or_default()
    }

    /// Client ids subscribed to at least one room, sorted and unique.
    pub fn members(&self) -> Vec<ClientId> {
        let mut ids: Vec<ClientId> = self.occupied_rooms().iter().flat_map(|r| r.member_ids()).collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Connections currently handshaken on this channel.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Counts a handshaken connection until the returned guard drops.
    pub fn connect(self: &Arc<Self>) -> ConnectionCount {
        self.connections.fetch_add(1, Ordering::Relaxed);
        ConnectionCount(Arc::clone(self))
    }

    fn new_history(&self) -> Box<dyn history::History> {
        Box::new(MemoryHistory::new(
            self.config.history_size,
            self.config.history_max_age_seconds,
            self.sequence.load(Ordering::Relaxed),
        ))
    }
}

/// Holds one unit of a channel's connection count.
pub struct ConnectionCount(Arc<Channel>);

impl Drop for ConnectionCount {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

type Shard = Mutex<HashMap<RoomName, Arc<Room>>>;

/// Rooms by name, sharded by hash.
struct RoomTable {
    shards: Box<[Shard]>,
    hasher: RandomState,
}

impl RoomTable {
    fn new() -> RoomTable {
        RoomTable {
            shards: (0..ROOM_SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, room: &RoomName) -> MutexGuard<'_, HashMap<RoomName, Arc<Room>>> {
        let index = self.hasher.hash_one(room) as usize % self.shards.len();
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn get(&self, room: &RoomName) -> Option<Arc<Room>> {
        self.shard(room).get(room).cloned()
    }

    fn get_or_create(&self, room: &RoomName, history: impl FnOnce() -> Box<dyn history::History>) -> Arc<Room> {
        Arc::clone(self.shard(room).entry(room.clone()).or_insert_with(|| {
            crate::metrics::rooms_changed(1.0);
            Arc::new(Room::new(room.clone(), history()))
        }))
    }

    /// Drops the room from the table when it has no subscribers and no history.
    fn release_if_idle(&self, room: &Arc<Room>) {
        let mut shard = self.shard(room.name());
        let is_current = shard.get(room.name()).is_some_and(|r| Arc::ptr_eq(r, room));
        if is_current && room.retire_if_idle() {
            shard.remove(room.name());
            crate::metrics::rooms_changed(-1.0);
        }
    }

    fn all(&self) -> Vec<Arc<Room>> {
        self.shards
            .iter()
            .flat_map(|shard| {
                shard
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}
