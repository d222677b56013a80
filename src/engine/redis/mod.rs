//! The cluster engine: several nodes share rooms, history and presence through Redis.
//!
//! The same seam as [`super::local`], another backend (docs/cluster.md has the
//! whole picture):
//! - **Publish** is one round trip: [`scripts::PUBLISH`] assigns the offset,
//!   appends to the room's capped stream and `PUBLISH`es the message on the
//!   room's channel, atomically. No node delivers its own publishes directly:
//!   every node, the publisher's included, receives each message once from
//!   pub/sub and calls [`Delivery::deliver`] once.
//! - **Order**: Redis runs a room's scripts one after another, so a room's
//!   messages are published in offset order and one connection receives them
//!   in that order. Pub/sub is at-most-once (a reconnect loses what was sent
//!   meanwhile), so the [`Actor`] checks each room's offsets: a jump is filled
//!   from the stream; if the stream no longer has the missing messages, the
//!   room's local subscribers are dropped without a close frame
//!   ([`Delivery::resync`]), so clients reconnect and recover with
//!   `history_since` — never a silent gap.
//! - **Presence**: see [`presence`]; the display names live on this node
//!   (PROTOCOL.md §11) are kept in Redis the same way, so `POST /auth` on any
//!   node refuses a guest a name in use anywhere.
//! - **Eviction** of a member removed from a group (PROTOCOL.md §11.1) is an
//!   event on the room's channel like a message (`"k":"x"`, not in the
//!   history stream): every node holding the room evicts its own connections
//!   of that user ([`Delivery::evict_user`]) and ends their presence with the
//!   usual leave. Evictions are numbered and recorded per room
//!   ([`scripts::EVICT`]), so a node that missed one (a number jump, or an
//!   outage) applies it late rather than never.
//!
//! One task, the [`Actor`], owns this node's subscriptions: pub/sub messages,
//! holds and releases, member changes and the recovery after a reconnect all
//! go through it in one order, so nothing about a room races with itself.
//!
//! # Layout
//! - [`scripts`]: the key layout and the Lua scripts.
//! - [`presence`]: member records, leases and reaping.

mod presence;
pub(crate) mod scripts;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use indexmap::IndexMap;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind, Value};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use self::scripts::RoomKeys;
use super::{
    ChannelLimits, Delivery, Draft, EngineError, HistoryAnswer, HistoryQuery, LiveNameSink, MessageId, Presence,
    Published,
};
use crate::ids::{ClientId, RoomName, random_alphanumeric};
use crate::protocol::{Frame, Member, Message};
use crate::token::unix_now;

/// Longest a single Redis round trip may take before Redis counts as unavailable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the actor checks whether a lost connection is back.
const RECOVERY_INTERVAL: Duration = Duration::from_millis(250);
/// Characters of a new room epoch (as in the local engine).
const EPOCH_CHARS: usize = 8;
/// A room's meta outlives its history by at least this, so that a quiet room
/// keeps its epoch (and recoveries across the quiet stay exact).
const META_EXTRA_SECONDS: u64 = 7 * 24 * 3600;
/// How long a room's eviction record outlives its latest eviction: far longer
/// than any outage a node recovers from by catching up.
const EVICTED_TTL_SECONDS: u64 = 7 * 24 * 3600;

/// Redis did not answer, or answered with an error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unavailable(String);

impl From<redis::RedisError> for Unavailable {
    fn from(error: redis::RedisError) -> Self {
        Unavailable(error.to_string())
    }
}

impl From<Unavailable> for EngineError {
    fn from(error: Unavailable) -> Self {
        EngineError::Unavailable(error.0)
    }
}

/// Notes that Redis is gone (logged once per outage); the actor's next tick
/// starts the recovery.
fn mark_unreachable(unreachable: &AtomicBool, error: &Unavailable) {
    if !unreachable.swap(true, Ordering::AcqRel) {
        warn!(%error, "Redis unavailable; will resubscribe and re-register when it is back");
    }
}

/// Runs one Redis request within [`COMMAND_TIMEOUT`].
pub(crate) async fn within<T>(request: impl Future<Output = redis::RedisResult<T>>) -> Result<T, Unavailable> {
    match tokio::time::timeout(COMMAND_TIMEOUT, request).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(Unavailable("Redis did not answer in time".into())),
    }
}

/// How to reach Redis and who this node is.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    pub url: String,
    /// Unique per process start (the caller makes it so); prefixes client ids.
    pub node_id: String,
    pub lease: Duration,
}

/// The whole deployment's view of one channel, for the REST API.
#[derive(Debug, Default)]
pub struct Deployment {
    /// Occupied rooms → their members' client ids, sorted.
    pub rooms: BTreeMap<String, Vec<ClientId>>,
    /// Connections on every live node.
    pub connections: usize,
}

pub struct RedisEngine {
    conn: ConnectionManager,
    channels: HashMap<String, ChannelLimits>,
    node: Arc<str>,
    commands: mpsc::UnboundedSender<Command>,
    held: Arc<AtomicUsize>,
    stopping: Arc<AtomicBool>,
    /// Set from a failed request (here or in the actor) until the actor's
    /// recovery succeeds, so publishes are refused at once instead of each
    /// waiting out [`COMMAND_TIMEOUT`]. Shared with the actor.
    unreachable: Arc<AtomicBool>,
}

/// What the engine asks of its actor.
pub(crate) enum Command {
    Hold {
        channel: Arc<str>,
        room: RoomName,
        done: oneshot::Sender<()>,
    },
    Release {
        channel: Arc<str>,
        room: RoomName,
    },
    Joined {
        channel: Arc<str>,
        room: RoomName,
        member: Arc<Member>,
        done: oneshot::Sender<()>,
    },
    Left {
        channel: Arc<str>,
        room: RoomName,
        client: ClientId,
    },
    /// A display name came into use on this node (`live`) or left it.
    NameChanged {
        field: String,
        live: bool,
    },
    /// Our lease had expired and our members were reaped: register them again.
    Reregister,
    /// Answers once everything queued before it is done.
    Flush(oneshot::Sender<()>),
}

impl RedisEngine {
    /// Connects lazily (the node starts even while Redis is down) and starts
    /// the actor and the heartbeat. Must be called within a Tokio runtime.
    pub fn open(
        channels: Vec<ChannelLimits>,
        options: RedisOptions,
        delivery: Arc<dyn Delivery>,
    ) -> Result<RedisEngine, EngineError> {
        let bad_url = |e: redis::RedisError| EngineError::Unavailable(format!("redis_url: {e}"));
        let info = options.url.as_str().into_connection_info().map_err(bad_url)?;
        let settings = info.redis_settings().clone().set_protocol(ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings)).map_err(bad_url)?;
        let (push_tx, pushes) = mpsc::unbounded_channel::<PushInfo>();
        let config = ConnectionManagerConfig::new()
            .set_push_sender(push_tx)
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            // Keep trying to connect, every 500 ms at most, however long it takes. The
            // manager starts a new attempt only after an I/O error: an attempt that ends
            // in any other error (`WRONGPASS` while an ACL user is off, `LOADING` while
            // a restarted Redis reads its data) would stay its answer to every request
            // forever, and the node would never come back. Requests keep their
            // [`COMMAND_TIMEOUT`] meanwhile.
            .set_number_of_retries(usize::MAX)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(bad_url)?;
        let node: Arc<str> = options.node_id.into();
        let (commands, inbox) = mpsc::unbounded_channel();
        let held = Arc::new(AtomicUsize::new(0));
        let stopping = Arc::new(AtomicBool::new(false));
        let unreachable = Arc::new(AtomicBool::new(false));
        let channel_ids: Vec<String> = channels.iter().map(|c| c.id.clone()).collect();
        let actor = Actor {
            conn: conn.clone(),
            node: Arc::clone(&node),
            delivery: Arc::clone(&delivery),
            rooms: HashMap::new(),
            names: HashSet::new(),
            held: Arc::clone(&held),
            unreachable: Arc::clone(&unreachable),
        };
        tokio::spawn(actor.run(pushes, inbox));
        let heartbeat = presence::Heartbeat {
            conn: conn.clone(),
            node: Arc::clone(&node),
            lease: options.lease,
            channels: channel_ids,
            delivery,
            commands: commands.clone(),
            stopping: Arc::clone(&stopping),
        };
        tokio::spawn(heartbeat.run());
        info!(node = %node, "cluster engine: sharing rooms through Redis");
        Ok(RedisEngine {
            conn,
            channels: channels.into_iter().map(|c| (c.id.clone(), c)).collect(),
            node,
            commands,
            held,
            stopping,
            unreachable,
        })
    }

    /// Refuses further publishes until the actor has recovered (it checks
    /// whether Redis answers again every [`RECOVERY_INTERVAL`]).
    fn lost(&self, error: &Unavailable) {
        mark_unreachable(&self.unreachable, error);
    }

    fn limits(&self, channel: &str) -> Result<&ChannelLimits, EngineError> {
        self.channels.get(channel).ok_or(EngineError::UnknownChannel)
    }

    pub async fn publish(&self, channel: &str, room: &RoomName, draft: Draft) -> Result<Published, EngineError> {
        let limits = self.limits(channel)?;
        if self.unreachable.load(Ordering::Acquire) {
            return Err(EngineError::Unavailable("Redis is unreachable".into()));
        }
        let keys = RoomKeys::new(channel, room.as_str());
        let timestamp = unix_now();
        let client = draft.client_id.as_ref().map(ClientId::as_str);
        let user = draft.user.as_deref();
        // The envelope after offset and epoch, which only the script knows.
        let tail = format!(
            r#""t":{timestamp},"c":{},"u":{},"m":{}}}"#,
            serde_json::to_string(&client).unwrap_or_else(|_| "null".into()),
            serde_json::to_string(&user).unwrap_or_else(|_| "null".into()),
            draft.message.get(),
        );
        let max_age = limits.history_max_age_seconds.max(1);
        let mut conn = self.conn.clone();
        let (epoch, offset): (String, u64) = within(
            scripts::PUBLISH
                .key(&keys.meta)
                .key(&keys.log)
                .key(&keys.events)
                .arg(random_alphanumeric(EPOCH_CHARS))
                .arg(limits.history_size)
                .arg(max_age)
                .arg(max_age.saturating_add(META_EXTRA_SECONDS))
                .arg(timestamp)
                .arg(draft.message.get())
                .arg(client.unwrap_or_default())
                .arg(user.unwrap_or_default())
                .arg(tail)
                .invoke_async(&mut conn),
        )
        .await
        .inspect_err(|error| self.lost(error))?;
        Ok(Published {
            id: MessageId {
                epoch: epoch.into(),
                offset,
            },
            // Delivery happens when the message comes back through pub/sub.
            delivered: 0,
        })
    }

    pub async fn history(
        &self,
        channel: &str,
        room: &RoomName,
        query: HistoryQuery,
    ) -> Result<HistoryAnswer, EngineError> {
        let limits = self.limits(channel)?;
        let keys = RoomKeys::new(channel, room.as_str());
        let count = match query {
            HistoryQuery::Latest(n) => n.min(limits.history_size),
            // Completeness needs the oldest retained entry too.
            HistoryQuery::Since { .. } => limits.history_size,
        };
        let mut conn = self.conn.clone();
        let (epoch, head, entries): (Option<String>, u64, Value) = within(
            scripts::HISTORY
                .key(&keys.meta)
                .key(&keys.log)
                .arg(count.max(1))
                .invoke_async(&mut conn),
        )
        .await?;
        let Some(epoch) = epoch else {
            return Ok(super::local::answer(&[], 0, 0, &query, None));
        };
        let epoch: Arc<str> = epoch.into();
        let mut messages: Vec<Arc<Message>> = entries_of(&entries)
            .into_iter()
            .filter_map(|entry| decode_entry(room, &epoch, entry))
            .collect();
        messages.reverse();
        if count == 0 {
            messages.clear();
        }
        // Everything before the oldest retained entry was trimmed; with none retained, all was.
        let mut lost = messages.first().map_or(head, |m| m.id.offset.saturating_sub(1));
        let cutoff = unix_now().saturating_sub(limits.history_max_age_seconds);
        if let Some(newest_old) = messages.iter().rev().find(|m| m.timestamp < cutoff) {
            lost = lost.max(newest_old.id.offset);
        }
        messages.retain(|m| m.timestamp >= cutoff);
        Ok(super::local::answer(&messages, head, lost, &query, Some(&epoch)))
    }

    /// Subscribes this node to the room's channel (first local subscriber) and
    /// loads its remote members; returns once they are known.
    pub async fn hold(&self, channel: &str, room: &RoomName) {
        let (done, finished) = oneshot::channel();
        let command = Command::Hold {
            channel: channel.into(),
            room: room.clone(),
            done,
        };
        if self.commands.send(command).is_ok() {
            let _ = tokio::time::timeout(COMMAND_TIMEOUT * 2, finished).await;
        }
    }

    pub fn release(&self, channel: &str, room: &RoomName) {
        let _ = self.commands.send(Command::Release {
            channel: channel.into(),
            room: room.clone(),
        });
    }

    /// Registers a local member; returns once Redis has it (or gave up), so that
    /// a subscribe answered on this node is visible to subscribes on any node.
    pub async fn member_joined(&self, channel: &str, room: &RoomName, member: &Arc<Member>) {
        let (done, registered) = oneshot::channel();
        let command = Command::Joined {
            channel: channel.into(),
            room: room.clone(),
            member: Arc::clone(member),
            done,
        };
        if self.commands.send(command).is_ok() {
            let _ = tokio::time::timeout(COMMAND_TIMEOUT * 2, registered).await;
        }
    }

    pub fn member_left(&self, channel: &str, room: &RoomName, client: &ClientId) {
        let _ = self.commands.send(Command::Left {
            channel: channel.into(),
            room: room.clone(),
            client: client.clone(),
        });
    }

    /// Publishes the eviction of `user`'s connections from `room`; every node
    /// holding the room (this one included) evicts its own when the event
    /// arrives. An error means no node was told.
    pub async fn evict_user(
        &self,
        channel: &str,
        room: &RoomName,
        user: &str,
        notice: &Frame,
    ) -> Result<(), EngineError> {
        self.limits(channel)?;
        let keys = RoomKeys::new(channel, room.as_str());
        let tail = format!(
            r#""u":{},"m":{}}}"#,
            serde_json::to_string(user).unwrap_or_else(|_| "null".into()),
            notice.as_str(),
        );
        let mut conn = self.conn.clone();
        within(
            scripts::EVICT
                .key(&keys.evicted)
                .key(&keys.events)
                .arg(user)
                .arg(EVICTED_TTL_SECONDS)
                .arg(tail)
                .arg(notice.as_str())
                .invoke_async::<u64>(&mut conn),
        )
        .await?;
        Ok(())
    }

    /// Whether a connection on a live node carries the display name `key` of `channel`.
    pub async fn name_live(&self, channel: &str, key: &str) -> Result<bool, EngineError> {
        self.limits(channel)?;
        let mut conn = self.conn.clone();
        Ok(presence::name_live(&mut conn, &scripts::name_field(channel, key)).await?)
    }

    /// Returns once the actor has done everything queued before this call
    /// (bounded, as [`RedisEngine::member_joined`] is).
    pub async fn settle(&self) {
        let (done, settled) = oneshot::channel();
        if self.commands.send(Command::Flush(done)).is_ok() {
            let _ = tokio::time::timeout(COMMAND_TIMEOUT * 2, settled).await;
        }
    }

    /// The handle the accounts' live names report this node's changes to.
    pub fn name_sink(&self) -> Arc<dyn LiveNameSink> {
        Arc::new(NameReporter {
            commands: self.commands.clone(),
        })
    }

    /// Rooms this node is subscribed to.
    pub fn rooms_in_memory(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }

    /// The goodbye on shutdown: finishes queued member changes, gives up the
    /// lease and removes whatever members are still registered, with leave events.
    pub async fn flush(&self) -> Result<(), EngineError> {
        self.stopping.store(true, Ordering::Release);
        let (done, flushed) = oneshot::channel();
        if self.commands.send(Command::Flush(done)).is_ok() {
            let _ = tokio::time::timeout(COMMAND_TIMEOUT * 4, flushed).await;
        }
        let mut conn = self.conn.clone();
        within(
            redis::cmd("DEL")
                .arg(scripts::lease(&self.node))
                .query_async::<()>(&mut conn),
        )
        .await?;
        presence::reap(&mut conn, &self.node).await?;
        Ok(())
    }

    /// Rooms, members and connections of a channel across every node.
    pub async fn deployment(&self, channel: &str) -> Result<Deployment, EngineError> {
        self.limits(channel)?;
        let mut conn = self.conn.clone();
        let registry = scripts::channel_rooms(channel);
        let rooms: Vec<String> = within(redis::cmd("SMEMBERS").arg(&registry).query_async(&mut conn)).await?;
        let mut pipe = redis::pipe();
        for room in &rooms {
            pipe.hkeys(RoomKeys::new(channel, room).members);
        }
        let members: Vec<Vec<String>> = within(pipe.query_async(&mut conn)).await?;
        let mut deployment = Deployment::default();
        let mut empty = Vec::new();
        for (room, mut ids) in rooms.into_iter().zip(members) {
            if ids.is_empty() {
                empty.push(room);
                continue;
            }
            ids.sort();
            deployment
                .rooms
                .insert(room, ids.iter().map(|id| ClientId::restore(id)).collect());
        }
        if !empty.is_empty() {
            // Pruned lazily; a room that fills again is added back by its next join.
            within(
                redis::cmd("SREM")
                    .arg(&registry)
                    .arg(&empty)
                    .query_async::<()>(&mut conn),
            )
            .await?;
        }
        let nodes: Vec<String> = within(redis::cmd("SMEMBERS").arg(scripts::NODES).query_async(&mut conn)).await?;
        let mut pipe = redis::pipe();
        for node in &nodes {
            pipe.hget(scripts::node_stats(node), channel);
        }
        let counts: Vec<Option<usize>> = within(pipe.query_async(&mut conn)).await?;
        deployment.connections = counts.into_iter().flatten().sum();
        Ok(deployment)
    }
}

/// Hands this node's name changes to the actor, which writes them in order.
struct NameReporter {
    commands: mpsc::UnboundedSender<Command>,
}

impl LiveNameSink for NameReporter {
    fn name_changed(&self, channel: &str, key: &str, live: bool) {
        let field = scripts::name_field(channel, key);
        let _ = self.commands.send(Command::NameChanged { field, live });
    }
}

/// One room this node is subscribed to.
struct RoomSub {
    channel: Arc<str>,
    room: RoomName,
    keys: RoomKeys,
    holders: usize,
    /// The epoch of the last delivered message; `None` before the first.
    epoch: Option<Arc<str>>,
    /// The offset of the last delivered message; `None` before the first
    /// (everything published after the subscription arrives, so there is no gap to check).
    last: Option<u64>,
    /// The number of the last eviction applied (or known when the room was
    /// first held); `None` until Redis has said.
    evictions: Option<u64>,
    /// This node's members of the room, registered again after Redis comes back.
    local: IndexMap<ClientId, Arc<Member>>,
}

/// Owns this node's pub/sub subscriptions and delivers what arrives, in order.
struct Actor {
    conn: ConnectionManager,
    node: Arc<str>,
    delivery: Arc<dyn Delivery>,
    /// By pub/sub channel name.
    rooms: HashMap<String, RoomSub>,
    /// This node's live names (fields of its names hash), written again after Redis comes back.
    names: HashSet<String>,
    /// The connection was lost (or a request failed): subscriptions and
    /// registrations must be redone and gaps checked once Redis answers.
    /// Redis is unreachable: the recovery runs on every tick until it
    /// succeeds. Shared with the engine, which refuses publishes meanwhile.
    unreachable: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
}

/// A message or presence event as published on a room's channel.
#[derive(Deserialize)]
struct Envelope {
    k: String,
    #[serde(default)]
    o: u64,
    #[serde(default)]
    e: String,
    #[serde(default)]
    t: u64,
    #[serde(default)]
    c: Option<String>,
    #[serde(default)]
    u: Option<String>,
    #[serde(default)]
    n: String,
    m: Option<Box<RawValue>>,
}

impl Actor {
    async fn run(mut self, mut pushes: mpsc::UnboundedReceiver<PushInfo>, mut inbox: mpsc::UnboundedReceiver<Command>) {
        let mut tick = tokio::time::interval(RECOVERY_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                Some(push) = pushes.recv() => self.on_push(push).await,
                command = inbox.recv() => match command {
                    Some(command) => self.on_command(command).await,
                    // The engine is gone.
                    None => return,
                },
                _ = tick.tick() => if self.unreachable.load(Ordering::Acquire) {
                    self.recover().await;
                },
            }
        }
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Hold { channel, room, done } => {
                let keys = RoomKeys::new(&channel, room.as_str());
                let name = keys.events.clone();
                let sub = self.rooms.entry(name.clone()).or_insert_with(|| RoomSub {
                    channel,
                    room,
                    keys,
                    holders: 0,
                    epoch: None,
                    last: None,
                    evictions: None,
                    local: IndexMap::new(),
                });
                sub.holders += 1;
                if sub.holders == 1 {
                    self.held.fetch_add(1, Ordering::Relaxed);
                    let result = async {
                        self.subscribe(&name).await?;
                        self.snapshot(&name).await?;
                        self.catch_up_evictions(&name).await
                    }
                    .await;
                    if let Err(error) = result {
                        self.lost(&error);
                    }
                }
                let _ = done.send(());
            }
            Command::Release { channel, room } => {
                self.release(&RoomKeys::new(&channel, room.as_str()).events).await;
            }
            Command::Joined {
                channel,
                room,
                member,
                done,
            } => {
                let name = RoomKeys::new(&channel, room.as_str()).events;
                if let Some(sub) = self.rooms.get_mut(&name) {
                    sub.local.insert(member.id.clone(), Arc::clone(&member));
                }
                let result = presence::register(&mut self.conn, &self.node, &channel, &room, &member).await;
                if let Err(error) = result {
                    self.lost(&error);
                }
                let _ = done.send(());
            }
            Command::Left { channel, room, client } => {
                let name = RoomKeys::new(&channel, room.as_str()).events;
                if let Some(sub) = self.rooms.get_mut(&name) {
                    sub.local.shift_remove(&client);
                }
                let result = presence::unregister(&mut self.conn, &self.node, &channel, &room, client.as_str()).await;
                if let Err(error) = result {
                    self.lost(&error);
                }
            }
            Command::NameChanged { field, live } => {
                if live {
                    self.names.insert(field.clone());
                } else {
                    self.names.remove(&field);
                }
                if let Err(error) = presence::name_changed(&mut self.conn, &self.node, &field, live).await {
                    self.lost(&error);
                }
            }
            Command::Reregister => {
                if let Err(error) = self.register_all().await {
                    self.lost(&error);
                }
            }
            Command::Flush(done) => {
                let _ = done.send(());
            }
        }
    }

    /// One holder of the room is gone; the last one unsubscribes.
    async fn release(&mut self, name: &str) {
        let Some(sub) = self.rooms.get_mut(name) else {
            return;
        };
        sub.holders = sub.holders.saturating_sub(1);
        if sub.holders == 0 {
            self.rooms.remove(name);
            self.held.fetch_sub(1, Ordering::Relaxed);
            let mut conn = self.conn.clone();
            if let Err(error) = within(conn.unsubscribe(name)).await {
                debug!(%error, "unsubscribe failed");
            }
        }
    }

    /// A group removal reached this node: evict the user's local connections
    /// and end their presence. Their leave to other nodes is the usual LEAVE,
    /// whose `HDEL` makes it exactly once even if a reaper removes them too.
    async fn evict(&mut self, name: &str, user: &str, notice: &Frame) {
        let Some(sub) = self.rooms.get(name) else {
            return;
        };
        let (channel, room) = (Arc::clone(&sub.channel), sub.room.clone());
        let evicted = self.delivery.evict_user(&channel, &room, user, notice);
        for member in &evicted {
            if let Some(sub) = self.rooms.get_mut(name) {
                sub.local.shift_remove(&member.id);
            }
            let result = presence::unregister(&mut self.conn, &self.node, &channel, &room, member.id.as_str()).await;
            if let Err(error) = result {
                self.lost(&error);
            }
            // Each evicted connection held the room, as a leaving one does.
            self.release(name).await;
        }
        if !evicted.is_empty() {
            debug!(%room, user, evicted = evicted.len(), "evicted a removed member's connections");
        }
    }

    /// Applies the evictions of the room this node has not seen (pub/sub lost
    /// them while it was away); the first time, only learns where they stand.
    async fn catch_up_evictions(&mut self, name: &str) -> Result<(), Unavailable> {
        self.catch_up_evictions_from(name, 0).await
    }

    /// [`Actor::catch_up_evictions`], skipping the one numbered `applied` (just done).
    async fn catch_up_evictions_from(&mut self, name: &str, applied: u64) -> Result<(), Unavailable> {
        let Some(sub) = self.rooms.get(name) else {
            return Ok(());
        };
        let record: HashMap<String, String> =
            within(redis::cmd("HGETALL").arg(&sub.keys.evicted).query_async(&mut self.conn)).await?;
        let Some(sub) = self.rooms.get_mut(name) else {
            return Ok(());
        };
        let newest: u64 = record.get("#").and_then(|n| n.parse().ok()).unwrap_or(0);
        let Some(known) = sub.evictions.replace(newest) else {
            // First hold: earlier evictions were before any of our subscribers came.
            return Ok(());
        };
        // A counter behind ours: Redis lost the record and started again.
        let known = if newest < known { 0 } else { known };
        let mut missed: Vec<(u64, &str)> = record
            .iter()
            .filter_map(|(field, number)| Some((number.parse().ok()?, field.strip_prefix("u:")?)))
            .filter(|&(number, _)| number > known && number != applied)
            .collect();
        let Some(notice) = record.get("n").filter(|_| !missed.is_empty()) else {
            return Ok(());
        };
        missed.sort_unstable();
        let notice = Frame::from(notice.clone());
        let users: Vec<String> = missed.into_iter().map(|(_, user)| user.to_owned()).collect();
        let room = sub.room.clone();
        for user in users {
            warn!(%room, user, "applying an eviction this node missed while away from Redis");
            self.evict(name, &user, &notice).await;
        }
        Ok(())
    }

    fn lost(&mut self, error: &Unavailable) {
        mark_unreachable(&self.unreachable, error);
    }

    async fn subscribe(&mut self, name: &str) -> Result<(), Unavailable> {
        within(self.conn.subscribe(name)).await
    }

    /// Tells the room which members other nodes have (observable rooms only).
    async fn snapshot(&mut self, name: &str) -> Result<(), Unavailable> {
        let Some(sub) = self.rooms.get(name) else {
            return Ok(());
        };
        if !sub.room.is_observable() {
            return Ok(());
        }
        let records: HashMap<String, String> =
            within(redis::cmd("HGETALL").arg(&sub.keys.members).query_async(&mut self.conn)).await?;
        let members: Vec<Arc<Member>> = records
            .values()
            .filter_map(|record| serde_json::from_str::<serde_json::Value>(record).ok())
            .filter(|record| record.get("n").and_then(|n| n.as_str()) != Some(&*self.node))
            .filter_map(|record| presence::decode_member(record.get("m")?))
            .collect();
        self.delivery
            .deliver_presence(&sub.channel, &sub.room, Presence::Snapshot(members));
        Ok(())
    }

    /// Registers this node's members and live names again (after a reap or an outage).
    async fn register_all(&mut self) -> Result<(), Unavailable> {
        let members: Vec<(Arc<str>, RoomName, Arc<Member>)> = self
            .rooms
            .values()
            .flat_map(|sub| {
                sub.local
                    .values()
                    .map(|m| (Arc::clone(&sub.channel), sub.room.clone(), Arc::clone(m)))
            })
            .collect();
        for (channel, room, member) in members {
            presence::register(&mut self.conn, &self.node, &channel, &room, &member).await?;
        }
        presence::write_names(&mut self.conn, &self.node, self.names.iter()).await
    }

    /// Redis answers again: subscribe again, register our members again, take
    /// fresh member lists, and fill whatever pub/sub lost meanwhile.
    async fn recover(&mut self) {
        let mut conn = self.conn.clone();
        if within(redis::cmd("PING").query_async::<()>(&mut conn)).await.is_err() {
            return;
        }
        let names: Vec<String> = self.rooms.keys().cloned().collect();
        let result = async {
            for name in &names {
                self.subscribe(name).await?;
            }
            self.register_all().await?;
            for name in &names {
                self.snapshot(name).await?;
                self.catch_up(name).await?;
                self.catch_up_evictions(name).await?;
            }
            Ok::<(), Unavailable>(())
        }
        .await;
        match result {
            Ok(()) => {
                self.unreachable.store(false, Ordering::Release);
                info!(rooms = names.len(), "Redis is back: resubscribed and caught up");
            }
            Err(error) => debug!(%error, "recovery incomplete; retrying"),
        }
    }

    /// Delivers what the room's stream has beyond the last delivered offset.
    async fn catch_up(&mut self, name: &str) -> Result<(), Unavailable> {
        let Some(sub) = self.rooms.get(name) else {
            return Ok(());
        };
        let (epoch, head): (Option<String>, Option<u64>) = within(
            redis::cmd("HMGET")
                .arg(&sub.keys.meta)
                .arg("epoch")
                .arg("last")
                .query_async(&mut self.conn),
        )
        .await?;
        let head = head.unwrap_or(0);
        let Some(sub) = self.rooms.get_mut(name) else {
            return Ok(());
        };
        let Some(last) = sub.last else {
            // Nothing delivered yet: nothing to compare with.
            return Ok(());
        };
        let same_epoch = epoch.is_some() && sub.epoch.as_deref() == epoch.as_deref();
        let from = if same_epoch { last } else { 0 };
        // A new incarnation (or none yet): what comes next is compared from its start.
        sub.epoch = Some(epoch.unwrap_or_default().into());
        sub.last = Some(from);
        if head > from {
            self.fill(name, from, head).await?;
        }
        Ok(())
    }

    async fn on_push(&mut self, push: PushInfo) {
        match push.kind {
            PushKind::Disconnection => self.lost(&Unavailable("connection to Redis lost".into())),
            PushKind::Message => {
                let (Some(name), Some(payload)) = (push.data.first().and_then(text), push.data.get(1).and_then(text))
                else {
                    return;
                };
                match serde_json::from_str::<Envelope>(&payload) {
                    Ok(envelope) => self.on_event(&name, envelope).await,
                    Err(error) => warn!(%error, "undecodable event on a room channel"),
                }
            }
            _ => {}
        }
    }

    async fn on_event(&mut self, name: &str, envelope: Envelope) {
        let Some(sub) = self.rooms.get_mut(name) else {
            return;
        };
        match envelope.k.as_str() {
            "m" => {
                let Some(message) = envelope.m else {
                    return;
                };
                if sub.epoch.as_deref() != Some(envelope.e.as_str()) {
                    // A new incarnation of the room (Redis lost it): count from its start.
                    if sub.epoch.is_some() {
                        sub.last = Some(0);
                    }
                    sub.epoch = Some(envelope.e.as_str().into());
                }
                let offset = envelope.o;
                match sub.last {
                    Some(last) if offset <= last => return,
                    Some(last) if offset > last + 1 => {
                        if let Err(error) = self.fill(name, last, offset - 1).await {
                            // The gap stays open; recovery fills it once Redis answers.
                            self.lost(&error);
                            return;
                        }
                    }
                    _ => {}
                }
                let Some(sub) = self.rooms.get_mut(name) else {
                    return;
                };
                let message = Arc::new(Message {
                    room: sub.room.clone(),
                    message,
                    client_id: envelope.c.as_deref().map(ClientId::restore),
                    user: envelope.u.map(Into::into),
                    id: MessageId {
                        epoch: envelope.e.into(),
                        offset,
                    },
                    timestamp: envelope.t,
                });
                sub.last = Some(offset);
                self.delivery.deliver(&sub.channel, &message);
            }
            "x" => {
                let (Some(user), Some(notice)) = (envelope.u, envelope.m) else {
                    return;
                };
                // A number jump: pub/sub lost evictions before this one.
                let missed = sub.evictions.is_some_and(|known| envelope.o > known + 1);
                if !missed {
                    sub.evictions = Some(sub.evictions.unwrap_or(0).max(envelope.o));
                }
                self.evict(name, &user, &Frame::from(notice.get().to_owned())).await;
                if missed && let Err(error) = self.catch_up_evictions_from(name, envelope.o).await {
                    self.lost(&error);
                }
            }
            // Our own members' events were delivered locally already.
            _ if envelope.n == *self.node => {}
            "j" => {
                let member = envelope
                    .m
                    .and_then(|m| serde_json::from_str(m.get()).ok())
                    .and_then(|m: serde_json::Value| presence::decode_member(&m));
                if let Some(member) = member {
                    self.delivery
                        .deliver_presence(&sub.channel, &sub.room, Presence::Join(member));
                }
            }
            "l" => {
                if let Some(client) = envelope.c {
                    let event = Presence::Leave(ClientId::restore(&client));
                    self.delivery.deliver_presence(&sub.channel, &sub.room, event);
                }
            }
            _ => {}
        }
    }

    /// Delivers offsets `after + 1 ..= to` from the stream; if it no longer has
    /// all of them, the room's local subscribers are made to resync instead.
    async fn fill(&mut self, name: &str, after: u64, to: u64) -> Result<(), Unavailable> {
        let Some(sub) = self.rooms.get(name) else {
            return Ok(());
        };
        let entries: Value = within(
            redis::cmd("XRANGE")
                .arg(&sub.keys.log)
                .arg(format!("{}-0", after + 1))
                .arg(format!("{to}-0"))
                .query_async(&mut self.conn),
        )
        .await?;
        let Some(sub) = self.rooms.get_mut(name) else {
            return Ok(());
        };
        let epoch = sub.epoch.clone().unwrap_or_else(|| "".into());
        let messages: Vec<Arc<Message>> = entries_of(&entries)
            .into_iter()
            .filter_map(|entry| decode_entry(&sub.room, &epoch, entry))
            .collect();
        let complete =
            messages.len() as u64 == to - after && messages.first().is_some_and(|m| m.id.offset == after + 1);
        sub.last = Some(to);
        if !complete {
            let dropped = self.delivery.resync(&sub.channel, &sub.room);
            crate::metrics::cluster_resync();
            warn!(room = %sub.room, after, to, dropped, "messages lost in transit and trimmed from history; subscribers must resync");
            return Ok(());
        }
        debug!(room = %sub.room, count = messages.len(), "filled a gap from the stream");
        crate::metrics::cluster_gap_filled();
        for message in &messages {
            self.delivery.deliver(&sub.channel, message);
        }
        Ok(())
    }
}

/// A bulk or simple string as text.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// The entries of an `XRANGE`/`XREVRANGE` answer: `[id, [field, value, …]]` each.
fn entries_of(value: &Value) -> Vec<(&Value, Vec<(String, &Value)>)> {
    let Value::Array(entries) = value else {
        return Vec::new();
    };
    entries
        .iter()
        .filter_map(|entry| {
            let Value::Array(parts) = entry else {
                return None;
            };
            let fields = match parts.get(1)? {
                Value::Array(flat) => flat
                    .chunks(2)
                    .filter_map(|pair| Some((text(pair.first()?)?, pair.get(1)?)))
                    .collect(),
                Value::Map(pairs) => pairs.iter().filter_map(|(k, v)| Some((text(k)?, v))).collect(),
                _ => return None,
            };
            Some((parts.first()?, fields))
        })
        .collect()
}

/// A stream entry as a message of `room` in `epoch`.
fn decode_entry(
    room: &RoomName,
    epoch: &Arc<str>,
    (id, fields): (&Value, Vec<(String, &Value)>),
) -> Option<Arc<Message>> {
    let offset: u64 = text(id)?.split_once('-')?.0.parse().ok()?;
    let field = |name: &str| fields.iter().find(|(k, _)| k == name).and_then(|(_, v)| text(v));
    let non_empty = |value: Option<String>| value.filter(|v| !v.is_empty());
    Some(Arc::new(Message {
        room: room.clone(),
        message: RawValue::from_string(field("m")?).ok()?,
        client_id: non_empty(field("c")).as_deref().map(ClientId::restore),
        user: non_empty(field("u")).map(Into::into),
        id: MessageId {
            epoch: Arc::clone(epoch),
            offset,
        },
        timestamp: field("t")?.parse().ok()?,
    }))
}
