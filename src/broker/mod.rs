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
use crate::engine::{Ack, Delivery, Draft, Engine, EngineError, HistoryQuery, MessageId, Presence, Published};
use crate::ids::{ClientId, RoomName};
use crate::protocol::{self, Member, Message};

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

    fn deliver_presence(&self, channel: &str, room: &RoomName, event: Presence) {
        if let Some(room) = self.channels.get(channel).and_then(|c| c.rooms.get(room)) {
            room.apply_remote(event);
        }
    }

    fn resync(&self, channel: &str, room: &RoomName) -> usize {
        self.channels
            .get(channel)
            .and_then(|c| c.rooms.get(room))
            .map_or(0, |room| room.resync())
    }

    fn connections(&self, channel: &str) -> usize {
        self.channels.get(channel).map_or(0, |c| c.connection_count())
    }

    fn evict_user(&self, channel: &str, room: &RoomName, user: &str, notice: &protocol::Frame) -> Vec<Arc<Member>> {
        self.channels
            .get(channel)
            .map_or_else(Vec::new, |c| c.evict_user(room, user, notice))
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
        let member = Arc::clone(&subscriber.member);
        let handle = loop {
            let handle = channel.rooms.get_or_create(room);
            // Held before the join: a cluster engine hands the room its remote
            // members first, so the newcomer's member list includes them.
            self.engine.hold(&channel.id, room).await;
            match handle.join(request.conn, subscriber.clone()) {
                Ok(joined) => break (handle, joined),
                // Retired between lookup and lock: look it up again.
                Err(room::RoomRemoved) => self.engine.release(&channel.id, room),
            }
        };
        let (handle, joined) = handle;
        if joined == Joined::Already {
            self.engine.release(&channel.id, room);
            if let Some(callback) = request.callback {
                let _ = outbox.push(protocol::reply(callback, None));
            }
            return Ok(Subscription { room: handle, joined });
        }
        self.engine.member_joined(&channel.id, room, &member).await;
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
        let gone = room.remove(conn);
        if let Some(member) = &gone {
            self.engine.member_left(&channel.id, room.name(), &member.id);
            self.engine.release(&channel.id, room.name());
        }
        channel.rooms.release_if_empty(room);
        gone.is_some()
    }

    /// Removes `user`'s connections from `room` at once (a member removed from
    /// a group, PROTOCOL.md §11.1), on every node of the deployment: each gets
    /// `notice`, the others leave events. Their sessions still hold the room
    /// handle; they find out with [`Room::holds`]. On one node this is done
    /// when it returns; a cluster engine publishes the eviction and each node
    /// evicts its own connections when the event arrives
    /// ([`Delivery::evict_user`]). An error means it reached no node: the
    /// caller may retry.
    pub async fn evict_user(
        &self,
        channel: &Channel,
        room: &RoomName,
        user: &str,
        notice: &protocol::Frame,
    ) -> Result<(), EngineError> {
        if let Some(published) = self.engine.evict_user(&channel.id, room, user, notice).await {
            return published;
        }
        for member in channel.evict_user(room, user, notice) {
            self.engine.member_left(&channel.id, room, &member.id);
            self.engine.release(&channel.id, room);
        }
        Ok(())
    }

    /// Whether a live connection on any node of the deployment carries the
    /// display name `name` (PROTOCOL.md §11, compared by name key). On one node
    /// the accounts' own counts are the whole truth: `false` at once, without
    /// even computing the key.
    pub async fn name_live_in_deployment(&self, channel: &str, name: &str) -> Result<bool, EngineError> {
        match &self.engine {
            Engine::Local(_) => Ok(false),
            Engine::Redis(_) => {
                let key = crate::accounts::names::name_key(name);
                self.engine.name_live_in_deployment(channel, &key).await
            }
        }
    }

    /// Returns once the live-name changes reported so far are in Redis (or it
    /// gave up: Redis is down); at once on one node.
    pub async fn names_written(&self) {
        self.engine.names_written().await;
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

    /// Removes `user`'s connections from this node's `room` (see
    /// [`Broker::evict_user`]); the engine's side is the caller's.
    fn evict_user(&self, room: &RoomName, user: &str, notice: &protocol::Frame) -> Vec<Arc<Member>> {
        let Some(handle) = self.rooms.get(room) else {
            return Vec::new();
        };
        let evicted = handle.evict_user(user, notice);
        crate::metrics::subscriptions_changed(-(evicted.len() as f64));
        self.rooms.release_if_empty(&handle);
        evicted
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::value::RawValue;
    use serde_json::{Value, json};

    use super::*;
    use crate::engine::{ChannelLimits, StoreOptions};
    use crate::protocol::Member;

    const CHANNEL: &str = "c";

    fn broker(history_size: usize) -> Broker {
        let fanout = FanOut::new([CHANNEL.to_owned()]);
        let limits = ChannelLimits {
            id: CHANNEL.into(),
            history_size,
            history_max_age_seconds: 3600,
            history_max_bytes: 1 << 20,
        };
        let options = StoreOptions {
            path: None,
            commit_wait: Duration::ZERO,
            commit_max_messages: 64,
            fsync: false,
            sweep_interval: Duration::from_secs(3600),
        };
        Broker::new(fanout.clone(), Engine::local(vec![limits], options, fanout).unwrap())
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name, 256).unwrap()
    }

    struct Conn {
        id: ConnId,
        outbox: Outbox,
        reader: OutboxReader,
        member: Arc<Member>,
    }

    impl Conn {
        fn new(id: ConnId) -> Conn {
            let (outbox, reader) = Outbox::new(4096, 4 << 20);
            let member = Arc::new(Member {
                id: ClientId::generate("t"),
                auth_data: Some(json!({ "n": id })),
                client_data: None,
            });
            Conn {
                id,
                outbox,
                reader,
                member,
            }
        }

        fn subscriber(&self) -> Subscriber {
            Subscriber {
                outbox: self.outbox.clone(),
                member: Arc::clone(&self.member),
            }
        }

        fn request(&self, callback: i64, history_count: u32, allowance: u32) -> SubscribeRequest<'static> {
            SubscribeRequest {
                conn: self.id,
                callback: Some(callback),
                history_count,
                history_since: None,
                allowance,
            }
        }

        /// Every frame queued so far, parsed.
        fn frames(&mut self) -> Vec<Value> {
            let mut batch = Vec::new();
            self.reader.take(&mut batch);
            batch
                .iter()
                .map(|f| serde_json::from_str(f.as_str()).unwrap())
                .collect()
        }
    }

    fn kinds(frames: &[Value]) -> Vec<String> {
        frames
            .iter()
            .map(|f| match f.get("type") {
                Some(kind) => kind.as_str().unwrap().to_owned(),
                None => format!("reply {}", f["callback"]),
            })
            .collect()
    }

    async fn publish(broker: &Broker, room: &RoomName, text: &str) -> Published {
        let channel = broker.channel(CHANNEL).unwrap();
        let draft = Draft {
            message: RawValue::from_string(format!("{text:?}")).unwrap(),
            client_id: None,
            user: None,
        };
        broker.publish(channel, room, draft, Ack::Durable).await.unwrap()
    }

    #[tokio::test]
    async fn a_new_subscriber_gets_reply_members_history_then_live_and_others_one_join() {
        let broker = broker(100);
        let channel = Arc::clone(broker.channel(CHANNEL).unwrap());
        let room = room("observable-r");
        publish(&broker, &room, "old").await;
        let mut a = Conn::new(1);
        let mut b = Conn::new(2);
        broker
            .subscribe(&channel, &room, a.subscriber(), a.request(1, 0, 100))
            .await
            .unwrap();
        assert_eq!(kinds(&a.frames()), ["reply 1", "observable_members"]);
        broker
            .subscribe(&channel, &room, b.subscriber(), b.request(7, 10, 100))
            .await
            .unwrap();
        publish(&broker, &room, "new").await;
        let frames = b.frames();
        assert_eq!(
            kinds(&frames),
            ["reply 7", "observable_members", "history_message", "publish"]
        );
        assert_eq!(frames[1]["data"].as_array().unwrap().len(), 2);
        assert_eq!(frames[2]["message"], "old");
        assert_eq!(frames[3]["message"], "new");
        // A got one join about B (never about itself), then the live message.
        assert_eq!(kinds(&a.frames()), ["observable_member_join", "publish"]);
    }

    #[tokio::test]
    async fn subscribing_twice_is_idempotent() {
        let broker = broker(100);
        let channel = Arc::clone(broker.channel(CHANNEL).unwrap());
        let room = room("observable-r");
        let mut a = Conn::new(1);
        let first = broker
            .subscribe(&channel, &room, a.subscriber(), a.request(1, 0, 0))
            .await
            .unwrap();
        let again = broker
            .subscribe(&channel, &room, a.subscriber(), a.request(2, 0, 0))
            .await
            .unwrap();
        assert_eq!((first.joined, again.joined), (Joined::New, Joined::Already));
        a.frames();
        let delivered = publish(&broker, &room, "once").await.delivered;
        assert_eq!(delivered, 1);
        assert_eq!(kinds(&a.frames()), ["publish"]);
        assert_eq!(channel.room_members(&room).len(), 1);
    }

    #[tokio::test]
    async fn history_is_clamped_by_request_allowance_and_the_cap() {
        let broker = broker(200);
        let channel = Arc::clone(broker.channel(CHANNEL).unwrap());
        let room = room("r");
        for i in 0..150 {
            publish(&broker, &room, &i.to_string()).await;
        }
        let history = |frames: Vec<Value>| frames.into_iter().filter(|f| f["type"] == "history_message").count();
        let mut c = Conn::new(1);
        // Asked 5, allowed 100: 5.
        broker
            .subscribe(&channel, &room, c.subscriber(), c.request(1, 5, 100))
            .await
            .unwrap();
        assert_eq!(history(c.frames()), 5);
        let mut d = Conn::new(2);
        // Asked 50, allowed 3: 3, the latest, index 0 the oldest of them.
        broker
            .subscribe(&channel, &room, d.subscriber(), d.request(1, 50, 3))
            .await
            .unwrap();
        let frames = d.frames();
        let messages: Vec<&Value> = frames.iter().filter(|f| f["type"] == "history_message").collect();
        assert_eq!(messages.len(), 3);
        assert_eq!(
            (&messages[0]["message"], &messages[0]["index"]),
            (&json!("147"), &json!(0))
        );
        let mut e = Conn::new(3);
        // Asked 150, allowed 150: capped at 100.
        broker
            .subscribe(&channel, &room, e.subscriber(), e.request(1, 150, 150))
            .await
            .unwrap();
        assert_eq!(history(e.frames()), MAX_HISTORY_PER_SUBSCRIBE);
    }

    #[tokio::test]
    async fn ids_count_per_room_and_recovery_is_exact() {
        let broker = broker(100);
        let channel = Arc::clone(broker.channel(CHANNEL).unwrap());
        let (a, b) = (room("a"), room("b"));
        let first = publish(&broker, &a, "1").await.id;
        publish(&broker, &b, "x").await;
        let second = publish(&broker, &a, "2").await.id;
        // Another room's traffic does not show in this room's offsets.
        assert_eq!((first.offset, second.offset), (1, 2));
        publish(&broker, &a, "3").await;
        let mut c = Conn::new(1);
        let since = first.to_string();
        let request = SubscribeRequest {
            history_since: Some(&since),
            ..c.request(4, 0, 100)
        };
        broker.subscribe(&channel, &a, c.subscriber(), request).await.unwrap();
        let frames = c.frames();
        assert_eq!(frames[0], json!({"callback": 4, "recovered": true}));
        let texts: Vec<&Value> = frames[1..].iter().map(|f| &f["message"]).collect();
        assert_eq!(texts, [&json!("2"), &json!("3")]);
        // An id of another epoch is never recovered.
        let mut d = Conn::new(2);
        let foreign = MessageId {
            epoch: "other".into(),
            offset: 1,
        }
        .to_string();
        let request = SubscribeRequest {
            history_since: Some(&foreign),
            ..d.request(5, 0, 100)
        };
        broker.subscribe(&channel, &a, d.subscriber(), request).await.unwrap();
        assert_eq!(d.frames()[0], json!({"callback": 5, "recovered": false}));
    }

    #[tokio::test]
    async fn live_messages_while_catching_up_are_neither_lost_nor_duplicated() {
        let broker = broker(100);
        let channel = Arc::clone(broker.channel(CHANNEL).unwrap());
        let room = room("r");
        publish(&broker, &room, "1").await;
        let mut c = Conn::new(1);
        // Join by hand, publish while catching up, then catch up with a history
        // read that already contains one of the buffered messages.
        let handle = channel.rooms.get_or_create(&room);
        handle.join(c.id, c.subscriber()).unwrap();
        publish(&broker, &room, "2").await;
        let answer = broker
            .engine()
            .history(CHANNEL, &room, HistoryQuery::Latest(10))
            .await
            .unwrap();
        publish(&broker, &room, "3").await;
        handle.catch_up(c.id, Some(protocol::reply(1, None)), &answer.messages, answer.head);
        let frames = c.frames();
        let shown: Vec<(&Value, &Value)> = frames[1..].iter().map(|f| (&f["type"], &f["message"])).collect();
        assert_eq!(
            shown,
            [
                (&json!("history_message"), &json!("1")),
                (&json!("history_message"), &json!("2")),
                (&json!("publish"), &json!("3")),
            ]
        );
    }

    #[tokio::test]
    async fn an_emptied_room_is_retired_and_a_late_lookup_gets_a_fresh_one() {
        let broker = broker(100);
        let channel = Arc::clone(broker.channel(CHANNEL).unwrap());
        let room = room("observable-r");
        let a = Conn::new(1);
        let sub = broker
            .subscribe(&channel, &room, a.subscriber(), a.request(1, 0, 0))
            .await
            .unwrap();
        // A lookup that raced with the last leave still holds the old room.
        let stale = channel.rooms.get(&room).unwrap();
        assert!(broker.leave(&channel, &sub.room, a.id));
        assert_eq!(channel.room_count(), 0);
        let b = Conn::new(2);
        assert!(matches!(stale.join(b.id, b.subscriber()), Err(room::RoomRemoved)));
        // Subscribing again goes to a new room that does receive messages.
        broker
            .subscribe(&channel, &room, b.subscriber(), b.request(1, 0, 0))
            .await
            .unwrap();
        assert_eq!(publish(&broker, &room, "hi").await.delivered, 1);
    }

    #[tokio::test]
    async fn remote_members_are_listed_and_each_change_is_shown_once() {
        let broker = broker(100);
        let channel = Arc::clone(broker.channel(CHANNEL).unwrap());
        let room = room("observable-r");
        let mut a = Conn::new(1);
        broker
            .subscribe(&channel, &room, a.subscriber(), a.request(1, 0, 0))
            .await
            .unwrap();
        a.frames();
        let remote = |n: u64| Conn::new(100 + n).member;
        let (x, y) = (remote(1), remote(2));
        let fanout = &broker.fanout;
        fanout.deliver_presence(CHANNEL, &room, Presence::Join(Arc::clone(&x)));
        // A repeated join and a snapshot that already has `x` change nothing.
        fanout.deliver_presence(CHANNEL, &room, Presence::Join(Arc::clone(&x)));
        fanout.deliver_presence(CHANNEL, &room, Presence::Snapshot(vec![Arc::clone(&x), Arc::clone(&y)]));
        fanout.deliver_presence(CHANNEL, &room, Presence::Leave(x.id.clone()));
        fanout.deliver_presence(CHANNEL, &room, Presence::Leave(x.id.clone()));
        let shown: Vec<(String, Value)> = a
            .frames()
            .into_iter()
            .map(|f| (f["type"].as_str().unwrap().to_owned(), f["data"]["id"].clone()))
            .collect();
        let id = |m: &Arc<Member>| json!(m.id.as_str());
        assert_eq!(
            shown,
            [
                ("observable_member_join".into(), id(&x)),
                ("observable_member_join".into(), id(&y)),
                ("observable_member_leave".into(), id(&x)),
            ]
        );
        // A newcomer's member list includes the remaining remote member.
        let mut b = Conn::new(2);
        broker
            .subscribe(&channel, &room, b.subscriber(), b.request(1, 0, 0))
            .await
            .unwrap();
        let list = &b.frames()[1];
        let ids: Vec<&Value> = list["data"].as_array().unwrap().iter().map(|m| &m["id"]).collect();
        assert_eq!(ids, [&id(&a.member), &id(&b.member), &id(&y)]);
        // A resync drops every local subscriber's connection.
        assert_eq!(fanout.resync(CHANNEL, &room), 2);
        assert!(a.outbox.is_stopped() && b.outbox.is_stopped());
    }

    #[tokio::test]
    async fn engine_logs_follow_subscribers_not_history() {
        let broker = broker(100);
        let channel = Arc::clone(broker.channel(CHANNEL).unwrap());
        for i in 0..50 {
            publish(&broker, &room(&format!("private-room-{i}")), "x").await;
        }
        // Durable publishes are committed, so nothing pins those rooms.
        assert_eq!(broker.engine().rooms_in_memory(), 0);
        let a = Conn::new(1);
        let sub = broker
            .subscribe(&channel, &room("private-room-7"), a.subscriber(), a.request(1, 10, 10))
            .await
            .unwrap();
        assert_eq!(broker.engine().rooms_in_memory(), 1);
        broker.leave(&channel, &sub.room, a.id);
        assert_eq!(broker.engine().rooms_in_memory(), 0);
        // The history stayed in the store.
        let history = broker.history(&channel, &room("private-room-7"), 10).await.unwrap();
        assert_eq!(history.len(), 1);
    }
}
