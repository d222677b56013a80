//! Local fan-out: channels → rooms → subscribers → outboxes.
//!
//! The broker owns who is subscribed where on this node and hands each placed
//! message to those subscribers, encoding it once. It does not store, order or
//! number messages — the [`Engine`] does, and calls back through the
//! [`Delivery`] handle that [`FanOut`] implements. It knows nothing of tokens
//! or configuration: callers decide permissions and pass plain values.
//!
//! Rooms live in a sharded table so that traffic in different rooms never
//! contends on one lock; a room exists only while it has subscribers.
//!
//! # Layout
//! - [`room`]: one room's subscribers and the catch-up of new ones.
//! - [`outbox`]: the bounded per-connection frame queue.

pub mod outbox;
pub mod room;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub use self::outbox::{Outbox, OutboxReader, PushError};
pub use self::room::{ConnId, Joined, Room, Subscriber};
use crate::engine::{Ack, Delivery, Draft, Engine, EngineError, HistoryQuery, MessageId, Published};
use crate::ids::{ClientId, RoomName};
use crate::protocol::{self, Message};

/// The most history messages one subscribe can return (PROTOCOL.md §5.5).
pub const MAX_HISTORY_PER_SUBSCRIBE: usize = 100;

/// Shards of a channel's room table: enough that unrelated rooms rarely share a lock.
const ROOM_SHARDS: usize = 64;

/// This node's fan-out and the engine behind it.
pub struct Broker {
    fanout: Arc<FanOut>,
    engine: Engine,
    next_conn: AtomicU64,
}

/// Every channel's rooms on this node; the engine's way back into the broker.
pub struct FanOut {
    channels: HashMap<String, Arc<Channel>>,
}

impl FanOut {
    /// Fan-out tables for the given channel ids.
    pub fn new(channel_ids: impl IntoIterator<Item = String>) -> Arc<FanOut> {
        let channels = channel_ids
            .into_iter()
            .map(|id| (id.clone(), Arc::new(Channel::new(id))))
            .collect();
        Arc::new(FanOut { channels })
    }
}

impl Delivery for FanOut {
    fn deliver(&self, channel: &str, message: &Arc<Message>) -> usize {
        let started = std::time::Instant::now();
        let delivered = self
            .channels
            .get(channel)
            .and_then(|c| c.rooms.get(&message.room))
            .map_or(0, |room| room.deliver(message));
        crate::metrics::fanout(delivered, started.elapsed());
        delivered
    }
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

impl SubscribeRequest<'_> {
    /// The history to read, bounded by the allowance and §5.5's cap; `None` for none.
    fn history_query(&self) -> Option<HistoryQuery> {
        let allowance = (self.allowance as usize).min(MAX_HISTORY_PER_SUBSCRIBE);
        let asked = (self.history_count as usize).min(allowance);
        match self.history_since {
            None if asked == 0 => None,
            None => Some(HistoryQuery::Latest(asked)),
            Some(since) => Some(HistoryQuery::Since {
                after: MessageId::parse(since),
                limit: if self.history_count == 0 { allowance } else { asked },
            }),
        }
    }
}

/// A subscription, as the session keeps it.
pub struct Subscription {
    pub room: Arc<Room>,
    pub joined: Joined,
}

impl Broker {
    /// A broker over `fanout`, storing and ordering through `engine`
    /// (which was handed the same `fanout` as its delivery handle).
    pub fn new(fanout: Arc<FanOut>, engine: Engine) -> Broker {
        Broker {
            fanout,
            engine,
            next_conn: AtomicU64::new(1),
        }
    }

    pub fn channel(&self, id: &str) -> Option<&Arc<Channel>> {
        self.fanout.channels.get(id)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A process-unique handle for a new connection.
    pub fn next_conn_id(&self) -> ConnId {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Subscribes a connection: joins the room, reads the history it asked for,
    /// and queues reply, member list, history and live frames in that order.
    pub async fn subscribe(
        &self,
        channel: &Channel,
        room: &RoomName,
        subscriber: Subscriber,
        request: SubscribeRequest<'_>,
    ) -> Result<Subscription, EngineError> {
        let outbox = subscriber.outbox.clone();
        let handle = loop {
            let handle = channel.rooms.get_or_create(room);
            match handle.join(request.conn, subscriber.clone()) {
                Ok(joined) => break (handle, joined),
                // Retired between lookup and lock: look it up again.
                Err(room::RoomRemoved) => continue,
            }
        };
        let (handle, joined) = handle;
        if joined == Joined::Already {
            if let Some(callback) = request.callback {
                let _ = outbox.push(protocol::reply(callback, None));
            }
            return Ok(Subscription { room: handle, joined });
        }
        self.engine.hold(&channel.id, room);
        let query = request.history_query();
        let (reply, history, head) = match &query {
            None => (
                request.callback.map(|cb| protocol::reply(cb, None)),
                Vec::new(),
                u64::MAX,
            ),
            Some(query) => match self.engine.history(&channel.id, room, query.clone()).await {
                Ok(answer) => {
                    let reply = request.callback.map(|cb| match query {
                        HistoryQuery::Since { .. } => protocol::subscribe_recovered(cb, answer.complete),
                        HistoryQuery::Latest(_) => protocol::reply(cb, None),
                    });
                    (reply, answer.messages, answer.head)
                }
                Err(error) => {
                    self.leave(channel, &handle, request.conn);
                    return Err(error);
                }
            },
        };
        // With no history read, every buffered message is new to the subscriber.
        let head = if query.is_none() { 0 } else { head };
        handle.catch_up(request.conn, reply, &history, head);
        Ok(Subscription { room: handle, joined })
    }

    /// Unsubscribes a connection from a room it holds; frees the room when empty.
    pub fn leave(&self, channel: &Channel, room: &Arc<Room>, conn: ConnId) -> bool {
        let was = room.leave(conn);
        if was {
            self.engine.release(&channel.id, room.name());
        }
        channel.rooms.release_if_empty(room);
        was
    }

    /// Places, delivers and stores one message. `client_id` is `None` for REST publishes.
    pub async fn publish(
        &self,
        channel: &Channel,
        room: &RoomName,
        draft: Draft,
        ack: Ack,
    ) -> Result<Published, EngineError> {
        self.engine.publish(&channel.id, room, draft, ack).await
    }

    /// The latest `count` stored messages of a room, oldest first.
    pub async fn history(
        &self,
        channel: &Channel,
        room: &RoomName,
        count: usize,
    ) -> Result<Vec<Arc<Message>>, EngineError> {
        let answer = self
            .engine
            .history(&channel.id, room, HistoryQuery::Latest(count))
            .await?;
        Ok(answer.messages)
    }
}

/// A channel's rooms on this node and its connection count.
pub struct Channel {
    pub id: String,
    rooms: RoomTable,
    connections: AtomicUsize,
}

impl Channel {
    fn new(id: String) -> Channel {
        Channel {
            id,
            rooms: RoomTable::new(),
            connections: AtomicUsize::new(0),
        }
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

    /// Rooms in this channel's table (each has, or is about to have, a subscriber).
    pub fn room_count(&self) -> usize {
        self.rooms.all().len()
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

    fn get_or_create(&self, room: &RoomName) -> Arc<Room> {
        Arc::clone(self.shard(room).entry(room.clone()).or_insert_with(|| {
            crate::metrics::rooms_changed(1.0);
            Arc::new(Room::new(room.clone()))
        }))
    }

    /// Drops the room from the table when it has no subscribers.
    fn release_if_empty(&self, room: &Arc<Room>) {
        let mut shard = self.shard(room.name());
        let is_current = shard.get(room.name()).is_some_and(|r| Arc::ptr_eq(r, room));
        if is_current && room.retire_if_empty() {
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
