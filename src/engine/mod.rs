//! Storage and ordering of every room's messages: the engine seam.
//!
//! The engine owns, per room, its **epoch** and the **offset** of each message
//! (a [`MessageId`] is assigned here, never by the caller), the history
//! (`append`, `latest`, `since`), and the order in which messages reach the
//! broker's fan-out: it calls [`Delivery::deliver`] once per message, in offset
//! order per room. The broker is only fan-out; it never decides ids or order.
//!
//! [`Engine`] is an enum of backends rather than a trait object: the set of
//! backends is closed (the embedded store here, Redis for several nodes), the
//! hot path is statically dispatched, and `async fn`s need no boxed futures.
//! The Redis arms do box theirs: an `async fn` is as large as its largest
//! state, and these futures live inline in every connection's session task,
//! so unboxed the Redis client's ~1 KB states would be carried by every idle
//! connection of a single node too (a Redis round trip dwarfs one allocation).
//!
//! Presence is local today: a room's members are its broker subscribers. A
//! backend shared by several nodes adds remote members through this seam.
//!
//! # Layout
//! - [`local`]: the single-node engine: per-room logs in memory while in use.
//! - [`redis`]: several nodes as one deployment through Redis (PROTOCOL.md §13).
//! - [`store`]: the embedded durable store (redb) with group commit, the
//!   history byte bound and the age sweeper.

pub mod local;
pub mod redis;
pub mod store;

use std::sync::Arc;

use serde_json::value::RawValue;

pub use crate::ids::MessageId;
use crate::ids::{ClientId, RoomName};
use crate::protocol::{Frame, Member, Message};

pub use self::store::{StoreError, StoreOptions};

/// A message before the engine has placed it.
#[derive(Debug)]
pub struct Draft {
    pub message: Box<RawValue>,
    /// The publisher; `None` for REST publishes.
    pub client_id: Option<ClientId>,
    /// The publisher's username when its token says so (PROTOCOL.md §11).
    pub user: Option<Arc<str>>,
}

/// When a publish counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ack {
    /// Delivered live; stored durably within the commit bound (WebSocket publishes).
    Delivered,
    /// Delivered and durably stored (REST publishes answer `200` only then).
    Durable,
}

/// Receipt for one published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub id: MessageId,
    /// Local subscribers it was handed to.
    pub delivered: usize,
}

/// Which history a subscriber asked for, already bounded by its allowance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryQuery {
    /// The latest `n` messages.
    Latest(usize),
    /// Messages after `after`, at most `limit` (the latest ones); the answer
    /// says whether nothing after `after` is missing. An id that is not one of
    /// ours (`None`) is never complete.
    Since { after: Option<MessageId>, limit: usize },
}

/// What a history read found.
#[derive(Debug, Default)]
pub struct HistoryAnswer {
    /// Oldest first.
    pub messages: Vec<Arc<Message>>,
    /// For [`HistoryQuery::Since`]: nothing after the given id is missing.
    pub complete: bool,
    /// The room's newest offset when the history was read: live messages up to
    /// it are covered by this answer (or deliberately left out by its limit).
    pub head: u64,
}

/// Why the engine could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("unknown channel")]
    UnknownChannel,
    /// The store failed; the message was not stored (it may have been delivered).
    #[error("store unavailable: {0}")]
    Store(#[from] StoreError),
    /// The cluster's Redis did not answer; the message was not published.
    #[error("Redis unavailable: {0}")]
    Unavailable(String),
}

/// A change of a room's members on other nodes, as the cluster engine learns it.
#[derive(Debug)]
pub enum Presence {
    /// A member joined on another node.
    Join(Arc<Member>),
    /// A member on another node left (or its node died).
    Leave(ClientId),
    /// Every member on other nodes, as Redis has them now (after a subscribe or a reconnect).
    Snapshot(Vec<Arc<Member>>),
}

/// The broker's side of the seam: hands a placed message to the room's local subscribers.
pub trait Delivery: Send + Sync + 'static {
    /// Delivers `message` to the local subscribers of its room; returns how many got it.
    fn deliver(&self, channel: &str, message: &Arc<Message>) -> usize;

    /// Applies a change of the room's remote members and tells local subscribers
    /// (cluster engine only).
    fn deliver_presence(&self, _channel: &str, _room: &RoomName, _event: Presence) {}

    /// Messages of the room were lost in transit and cannot be read back: makes
    /// its local subscribers resync (cluster engine only); returns how many.
    fn resync(&self, _channel: &str, _room: &RoomName) -> usize {
        0
    }

    /// Connections on this node's channel (cluster engine only, for deployment stats).
    fn connections(&self, _channel: &str) -> usize {
        0
    }

    /// Removes `user`'s local connections from the room at once (a member
    /// removed from a group, on any node): each gets `notice`, the room's other
    /// local subscribers a leave event. Returns the members removed, whose
    /// deployment-wide presence the engine then ends (cluster engine only).
    fn evict_user(&self, _channel: &str, _room: &RoomName, _user: &str, _notice: &Frame) -> Vec<Arc<Member>> {
        Vec::new()
    }
}

/// Hears when a display name comes into use on this node (its first live
/// claim) and when it leaves (its last claim released), so that a cluster
/// engine can tell the other nodes. Called under the claim's lock, so calls for
/// one name arrive in order; it must not block.
pub trait LiveNameSink: Send + Sync + 'static {
    /// `key` (a name key, PROTOCOL.md §11) of `channel` is live on this node (`live`) or no longer.
    fn name_changed(&self, channel: &str, key: &str, live: bool);
}

/// History limits of one channel.
#[derive(Debug, Clone)]
pub struct ChannelLimits {
    pub id: String,
    /// Messages kept per room.
    pub history_size: usize,
    pub history_max_age_seconds: u64,
    /// Stored bytes of the whole channel before least recently used rooms are dropped.
    pub history_max_bytes: u64,
}

/// The storage and ordering backend of this server.
pub enum Engine {
    /// One node, history in the embedded store.
    Local(local::LocalEngine),
    /// Several nodes sharing rooms, history and presence through Redis.
    Redis(redis::RedisEngine),
}

impl Engine {
    /// Opens the single-node engine on the embedded store.
    pub fn local(
        channels: Vec<ChannelLimits>,
        store: StoreOptions,
        delivery: Arc<dyn Delivery>,
    ) -> Result<Engine, StoreError> {
        Ok(Engine::Local(local::LocalEngine::open(channels, store, delivery)?))
    }

    /// Starts the cluster engine on Redis (connecting lazily: Redis may be down).
    pub fn redis(
        channels: Vec<ChannelLimits>,
        options: redis::RedisOptions,
        delivery: Arc<dyn Delivery>,
    ) -> Result<Engine, EngineError> {
        Ok(Engine::Redis(redis::RedisEngine::open(channels, options, delivery)?))
    }

    /// Places, delivers and stores one message.
    pub async fn publish(
        &self,
        channel: &str,
        room: &RoomName,
        draft: Draft,
        ack: Ack,
    ) -> Result<Published, EngineError> {
        match self {
            Engine::Local(engine) => engine.publish(channel, room, draft, ack).await,
            // Both acks wait for the script: it stores and publishes in one step.
            Engine::Redis(engine) => Box::pin(engine.publish(channel, room, draft)).await,
        }
    }

    /// Reads a room's history.
    pub async fn history(
        &self,
        channel: &str,
        room: &RoomName,
        query: HistoryQuery,
    ) -> Result<HistoryAnswer, EngineError> {
        match self {
            Engine::Local(engine) => engine.history(channel, room, query),
            Engine::Redis(engine) => Box::pin(engine.history(channel, room, query)).await,
        }
    }

    /// A subscriber arrives: keep the room's log in memory while it is in use
    /// (cluster: receive the room's traffic and know its remote members).
    pub async fn hold(&self, channel: &str, room: &RoomName) {
        match self {
            Engine::Local(engine) => engine.hold(channel, room),
            Engine::Redis(engine) => Box::pin(engine.hold(channel, room)).await,
        }
    }

    /// A subscriber left: the room's log may leave memory (its history stays stored).
    pub fn release(&self, channel: &str, room: &RoomName) {
        match self {
            Engine::Local(engine) => engine.release(channel, room),
            Engine::Redis(engine) => engine.release(channel, room),
        }
    }

    /// A local subscriber joined a room (after [`Engine::hold`]); other nodes
    /// learn of it before this returns.
    pub async fn member_joined(&self, channel: &str, room: &RoomName, member: &Arc<Member>) {
        match self {
            // Presence is the broker's alone on one node.
            Engine::Local(_) => {}
            Engine::Redis(engine) => Box::pin(engine.member_joined(channel, room, member)).await,
        }
    }

    /// A local subscriber left a room (before [`Engine::release`]).
    pub fn member_left(&self, channel: &str, room: &RoomName, client: &ClientId) {
        match self {
            Engine::Local(_) => {}
            Engine::Redis(engine) => engine.member_left(channel, room, client),
        }
    }

    /// Takes `user`'s connections out of `room` on every node (a member
    /// removed from a group, PROTOCOL.md §11.1). On one node the broker does
    /// it itself (`None`); the cluster engine publishes the eviction, and every
    /// node holding the room — this one included — evicts its own connections
    /// through [`Delivery::evict_user`] (`Some`: whether Redis took it).
    pub async fn evict_user(
        &self,
        channel: &str,
        room: &RoomName,
        user: &str,
        notice: &Frame,
    ) -> Option<Result<(), EngineError>> {
        match self {
            Engine::Local(_) => None,
            Engine::Redis(engine) => Some(Box::pin(engine.evict_user(channel, room, user, notice)).await),
        }
    }

    /// Whether a live connection on any node of the deployment carries the
    /// display name `key` (PROTOCOL.md §11). On one node the accounts' own
    /// counts are the whole truth, so this answers `false` at once.
    pub async fn name_live_in_deployment(&self, channel: &str, key: &str) -> Result<bool, EngineError> {
        match self {
            Engine::Local(_) => Ok(false),
            Engine::Redis(engine) => Box::pin(engine.name_live(channel, key)).await,
        }
    }

    /// Where this node's live names must be reported (`None` on one node, where
    /// the node's own counts are the whole truth).
    pub fn name_sink(&self) -> Option<Arc<dyn LiveNameSink>> {
        match self {
            Engine::Local(_) => None,
            Engine::Redis(engine) => Some(engine.name_sink()),
        }
    }

    /// Returns once the name changes reported to [`Engine::name_sink`] so far
    /// are written (bounded; Redis may be down); at once on one node.
    pub async fn names_written(&self) {
        match self {
            Engine::Local(_) => {}
            Engine::Redis(engine) => Box::pin(engine.settle()).await,
        }
    }

    /// Rooms, members and connections of the whole deployment, when this node
    /// is one of several (`None`: the broker's own tables are the whole truth).
    pub async fn deployment(&self, channel: &str) -> Option<Result<redis::Deployment, EngineError>> {
        match self {
            Engine::Local(_) => None,
            Engine::Redis(engine) => Some(Box::pin(engine.deployment(channel)).await),
        }
    }

    /// Rooms whose logs are in memory (a debug figure, also exported as a metric).
    pub fn rooms_in_memory(&self) -> usize {
        match self {
            Engine::Local(engine) => engine.rooms_in_memory(),
            Engine::Redis(engine) => engine.rooms_in_memory(),
        }
    }

    /// Makes everything appended so far durable; called on shutdown.
    pub async fn flush(&self) -> Result<(), EngineError> {
        match self {
            Engine::Local(engine) => engine.flush().await,
            Engine::Redis(engine) => engine.flush().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    struct Nobody;
    impl Delivery for Nobody {
        fn deliver(&self, _: &str, _: &Arc<Message>) -> usize {
            0
        }
    }

    /// The engine's futures are held inline by every connection's session
    /// task: with the Redis arms unboxed each of these was over 1 KB.
    #[tokio::test]
    async fn engine_futures_stay_small_on_one_node() {
        const SMALL: usize = 256;
        let limits = ChannelLimits {
            id: "c".into(),
            history_size: 10,
            history_max_age_seconds: 3600,
            history_max_bytes: 1 << 20,
        };
        let options = StoreOptions {
            path: None,
            commit_wait: Duration::ZERO,
            commit_max_messages: 16,
            fsync: false,
            sweep_interval: Duration::from_secs(3600),
        };
        let engine = Engine::local(vec![limits], options, Arc::new(Nobody)).unwrap();
        let room = RoomName::parse("r", 16).unwrap();
        let draft = Draft {
            message: RawValue::from_string("1".into()).unwrap(),
            client_id: None,
            user: None,
        };
        let member = Arc::new(Member {
            id: ClientId::restore("n:x"),
            auth_data: None,
            client_data: None,
        });
        let sizes = [
            (
                "publish",
                std::mem::size_of_val(&engine.publish("c", &room, draft, Ack::Delivered)),
            ),
            (
                "history",
                std::mem::size_of_val(&engine.history("c", &room, HistoryQuery::Latest(1))),
            ),
            ("hold", std::mem::size_of_val(&engine.hold("c", &room))),
            ("names_written", std::mem::size_of_val(&engine.names_written())),
            (
                "member_joined",
                std::mem::size_of_val(&engine.member_joined("c", &room, &member)),
            ),
        ];
        for (name, size) in sizes {
            assert!(size <= SMALL, "Engine::{name}'s future is {size} bytes");
        }
    }
}
