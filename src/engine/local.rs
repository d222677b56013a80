//! The single-node engine: per-room logs that assign offsets, keep the recent
//! messages in memory while the room is in use, and hand every message to the
//! store and to the broker's fan-out in one order.
//!
//! A room's [`RoomLog`] is in memory only while it is **held** (it has local
//! subscribers) or has appends the store has not committed yet; otherwise it
//! lives on disk alone. So memory follows connections, not history: publishes
//! to rooms nobody reads cost memory only until their commit.
//!
//! Logs live in a sharded table. Everything about one publish — the offset, the
//! in-memory history, the delivery to local subscribers, the queueing for the
//! store — happens under the room's shard lock, which is what gives every
//! subscriber the same order and makes offsets increase in delivery order.
//! Nothing under that lock awaits; a cold room's bookkeeping is read from the
//! store under it (a short MVCC read).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::oneshot;
use tracing::warn;

use super::store::{self, Append, CommitReport, Store, StoreError, StoreOptions, StoredMessage};
use super::{Ack, ChannelLimits, Delivery, Draft, EngineError, HistoryAnswer, HistoryQuery, MessageId, Published};
use crate::ids::{ClientId, RoomName, random_alphanumeric};
use crate::protocol::Message;
use crate::token::unix_now;

/// Shards of a channel's log table.
const SHARDS: usize = 64;
/// Characters of a new room epoch.
const EPOCH_CHARS: usize = 8;

pub struct LocalEngine {
    inner: Arc<Inner>,
}

struct Inner {
    channels: HashMap<String, Channel>,
    store: Store,
    delivery: Arc<dyn Delivery>,
    in_memory: AtomicUsize,
}

struct Channel {
    id: Arc<str>,
    limits: ChannelLimits,
    shards: Box<[Mutex<HashMap<RoomName, RoomLog>>]>,
    hasher: RandomState,
}

/// One room's log while it is in memory.
struct RoomLog {
    key: Arc<str>,
    epoch: Arc<str>,
    /// The newest offset assigned.
    last: u64,
    /// The highest offset that can no longer be produced.
    lost: u64,
    /// The latest messages, oldest first: all of the room's history when
    /// `loaded`, else only those appended since the log came into memory.
    recent: VecDeque<Arc<Message>>,
    loaded: bool,
    /// Local subscribers.
    holders: usize,
    /// Appends queued for the store and not yet committed.
    unwritten: usize,
}

impl RoomLog {
    fn idle(&self) -> bool {
        self.holders == 0 && self.unwritten == 0
    }
}

impl LocalEngine {
    pub fn open(
        channels: Vec<ChannelLimits>,
        options: StoreOptions,
        delivery: Arc<dyn Delivery>,
    ) -> Result<Self, StoreError> {
        let store = Store::open(options, &channels)?;
        let channels = channels
            .into_iter()
            .map(|limits| {
                let channel = Channel {
                    id: limits.id.as_str().into(),
                    shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                    hasher: RandomState::new(),
                    limits,
                };
                (channel.limits.id.clone(), channel)
            })
            .collect();
        let inner = Arc::new(Inner {
            channels,
            store,
            delivery,
            in_memory: AtomicUsize::new(0),
        });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        inner.store.start(Box::new(move |report| {
            if let Some(inner) = weak.upgrade() {
                inner.on_commit(report);
            }
        }))?;
        Ok(LocalEngine { inner })
    }

    pub async fn publish(
        &self,
        channel: &str,
        room: &RoomName,
        draft: Draft,
        ack: Ack,
    ) -> Result<Published, EngineError> {
        let (published, committed) = self.inner.publish(channel, room, draft, ack)?;
        if let Some(committed) = committed {
            committed.await.map_err(|_| StoreError::Stopped)??;
        }
        Ok(published)
    }

    pub fn history(&self, channel: &str, room: &RoomName, query: HistoryQuery) -> Result<HistoryAnswer, EngineError> {
        self.inner.history(channel, room, query)
    }

    pub fn hold(&self, channel: &str, room: &RoomName) {
        let Some(channel) = self.inner.channels.get(channel) else {
            return;
        };
        let mut shard = channel.shard(room);
        match self.inner.log(channel, &mut shard, room) {
            Ok(log) => log.holders += 1,
            Err(error) => warn!(%error, room = %room, "cannot read a room's bookkeeping"),
        }
    }

    pub fn release(&self, channel: &str, room: &RoomName) {
        let Some(channel) = self.inner.channels.get(channel) else {
            return;
        };
        let mut shard = channel.shard(room);
        if let Some(log) = shard.get_mut(room) {
            log.holders = log.holders.saturating_sub(1);
            if log.idle() {
                shard.remove(room);
                self.inner.forgot_one();
            }
        }
    }

    pub fn rooms_in_memory(&self) -> usize {
        self.inner.in_memory.load(Ordering::Relaxed)
    }

    /// The embedded database, which also holds accounts and sessions.
    pub fn database(&self) -> Arc<redb::Database> {
        self.inner.store.database()
    }

    pub async fn flush(&self) -> Result<(), EngineError> {
        Ok(self.inner.store.flush().await?)
    }
}

impl Channel {
    fn shard(&self, room: &RoomName) -> MutexGuard<'_, HashMap<RoomName, RoomLog>> {
        let index = self.hasher.hash_one(room) as usize % self.shards.len();
        // Every step leaves a log consistent, so a poisoned lock is safe to keep using.
        self.shards[index].lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn channel(&self, id: &str) -> Result<&Channel, EngineError> {
        self.channels.get(id).ok_or(EngineError::UnknownChannel)
    }

    /// The room's log, brought into memory from its stored bookkeeping (or new) if needed.
    fn log<'s>(
        &self,
        channel: &Channel,
        shard: &'s mut HashMap<RoomName, RoomLog>,
        room: &RoomName,
    ) -> Result<&'s mut RoomLog, StoreError> {
        if !shard.contains_key(room) {
            let key: Arc<str> = store::room_key(&channel.id, room.as_str()).into();
            let log = match self.store.room(&key)? {
                Some(meta) => RoomLog {
                    key,
                    epoch: meta.epoch,
                    last: meta.last,
                    lost: meta.lost,
                    recent: VecDeque::new(),
                    loaded: false,
                    holders: 0,
                    unwritten: 0,
                },
                None => RoomLog {
                    key,
                    epoch: random_alphanumeric(EPOCH_CHARS).into(),
                    last: 0,
                    lost: 0,
                    recent: VecDeque::new(),
                    // Nothing is stored, so memory is the whole history.
                    loaded: true,
                    holders: 0,
                    unwritten: 0,
                },
            };
            shard.insert(room.clone(), log);
            self.in_memory.fetch_add(1, Ordering::Relaxed);
            crate::metrics::engine_rooms(1.0);
        }
        Ok(shard.get_mut(room).expect("inserted above"))
    }

    fn forgot_one(&self) {
        self.in_memory.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::engine_rooms(-1.0);
    }

    #[allow(clippy::type_complexity)]
    fn publish(
        &self,
        channel_id: &str,
        room: &RoomName,
        draft: Draft,
        ack: Ack,
    ) -> Result<(Published, Option<oneshot::Receiver<Result<(), StoreError>>>), EngineError> {
        let channel = self.channel(channel_id)?;
        let history_size = channel.limits.history_size;
        let now = unix_now();
        let mut shard = channel.shard(room);
        let log = self.log(channel, &mut shard, room)?;
        log.last += 1;
        let id = MessageId {
            epoch: Arc::clone(&log.epoch),
            offset: log.last,
        };
        let value = store::encode_record(
            now,
            &draft.message,
            draft.client_id.as_ref().map(ClientId::as_str),
            draft.user.as_deref(),
        );
        let message = Arc::new(Message {
            room: room.clone(),
            message: draft.message,
            client_id: draft.client_id,
            user: draft.user,
            id: id.clone(),
            timestamp: now,
        });
        push_bounded(log, Arc::clone(&message), history_size);
        let delivered = self.delivery.deliver(&channel.id, &message);
        let (tx, rx) = match ack {
            Ack::Durable => {
                let (tx, rx) = oneshot::channel();
                (Some(tx), Some(rx))
            }
            Ack::Delivered => (None, None),
        };
        self.store.append(Append {
            room_key: Arc::clone(&log.key),
            epoch: Arc::clone(&log.epoch),
            offset: id.offset,
            lost: log.lost,
            value,
            ack: tx,
        })?;
        log.unwritten += 1;
        Ok((Published { id, delivered }, rx))
    }

    fn history(&self, channel_id: &str, room: &RoomName, query: HistoryQuery) -> Result<HistoryAnswer, EngineError> {
        let channel = self.channel(channel_id)?;
        let limits = &channel.limits;
        let now = unix_now();
        let mut shard = channel.shard(room);
        if !shard.contains_key(room) {
            // A cold room (a REST read): answer from the store without keeping it in memory.
            let key = store::room_key(&channel.id, room.as_str());
            let Some(meta) = self.store.room(&key)? else {
                return Ok(answer(&[], 0, 0, &query, None));
            };
            let epoch: Arc<str> = meta.epoch;
            let mut lost = meta.lost;
            let messages: Vec<Arc<Message>> = self
                .store
                .latest(&key, limits.history_size)?
                .into_iter()
                .map(|stored| restore(room, &epoch, stored))
                .collect();
            let messages = expire(messages, now, limits.history_max_age_seconds, &mut lost);
            return Ok(answer(&messages, meta.last, lost, &query, Some(&epoch)));
        }
        let log = self.log(channel, &mut shard, room)?;
        if !log.loaded {
            let stored = self.store.latest(&log.key, limits.history_size)?;
            let first_recent = log.recent.front().map_or(u64::MAX, |m| m.id.offset);
            let mut merged: VecDeque<Arc<Message>> = stored
                .into_iter()
                .filter(|s| s.offset < first_recent)
                .map(|s| restore(room, &log.epoch, s))
                .collect();
            merged.extend(log.recent.drain(..));
            while merged.len() > limits.history_size {
                if let Some(gone) = merged.pop_front() {
                    log.lost = log.lost.max(gone.id.offset);
                }
            }
            log.recent = merged;
            log.loaded = true;
            self.store.touch(Arc::clone(&log.key));
        }
        let cutoff = now.saturating_sub(limits.history_max_age_seconds);
        while log.recent.front().is_some_and(|m| m.timestamp < cutoff) {
            if let Some(gone) = log.recent.pop_front() {
                log.lost = log.lost.max(gone.id.offset);
            }
        }
        let messages: Vec<Arc<Message>> = log.recent.iter().cloned().collect();
        Ok(answer(&messages, log.last, log.lost, &query, Some(&log.epoch)))
    }

    /// The writer committed a batch: those appends no longer pin their logs in memory.
    fn on_commit(&self, report: CommitReport) {
        for (key, count) in report.written {
            self.with_log(&key, |log| log.unwritten = log.unwritten.saturating_sub(count));
        }
        for key in report.evicted {
            self.with_log(&key, |log| {
                // Its stored history is gone; what memory holds goes with it.
                log.recent.clear();
                log.loaded = true;
                log.lost = log.last;
            });
        }
    }

    fn with_log(&self, key: &str, change: impl FnOnce(&mut RoomLog)) {
        let Some((channel_id, room)) = key.split_once('\0') else {
            return;
        };
        let (Some(channel), Ok(room)) = (self.channels.get(channel_id), RoomName::parse(room, usize::MAX)) else {
            return;
        };
        let mut shard = channel.shard(&room);
        if let Some(log) = shard.get_mut(&room) {
            change(log);
            if log.idle() {
                shard.remove(&room);
                self.forgot_one();
            }
        }
    }
}

/// Appends to the in-memory history, trimming it to `size` (what is trimmed is lost).
fn push_bounded(log: &mut RoomLog, message: Arc<Message>, size: usize) {
    if size == 0 {
        log.lost = log.lost.max(message.id.offset);
        return;
    }
    log.recent.push_back(message);
    while log.recent.len() > size {
        if let Some(gone) = log.recent.pop_front()
            && log.loaded
        {
            log.lost = log.lost.max(gone.id.offset);
        }
    }
}

fn expire(messages: Vec<Arc<Message>>, now: u64, max_age: u64, lost: &mut u64) -> Vec<Arc<Message>> {
    let cutoff = now.saturating_sub(max_age);
    let (old, fresh): (Vec<_>, Vec<_>) = messages.into_iter().partition(|m| m.timestamp < cutoff);
    if let Some(newest_old) = old.last() {
        *lost = (*lost).max(newest_old.id.offset);
    }
    fresh
}

fn restore(room: &RoomName, epoch: &Arc<str>, stored: StoredMessage) -> Arc<Message> {
    Arc::new(Message {
        room: room.clone(),
        message: stored.message,
        client_id: stored.client_id.as_deref().map(ClientId::restore),
        user: stored.user.map(Into::into),
        id: MessageId {
            epoch: Arc::clone(epoch),
            offset: stored.offset,
        },
        timestamp: stored.timestamp,
    })
}

/// Answers `query` from a room's history (`messages`, oldest first); the
/// cluster engine answers with it too, so both compute `complete` alike.
pub(super) fn answer(
    messages: &[Arc<Message>],
    head: u64,
    lost: u64,
    query: &HistoryQuery,
    epoch: Option<&Arc<str>>,
) -> HistoryAnswer {
    match query {
        HistoryQuery::Latest(count) => {
            let skip = messages.len().saturating_sub(*count);
            HistoryAnswer {
                messages: messages[skip..].to_vec(),
                complete: false,
                head,
            }
        }
        HistoryQuery::Since { after, limit } => {
            let after = after.as_ref().filter(|id| epoch.is_some_and(|e| *e == id.epoch));
            let Some(after) = after else {
                let skip = messages.len().saturating_sub(*limit);
                return HistoryAnswer {
                    messages: messages[skip..].to_vec(),
                    complete: false,
                    head,
                };
            };
            let newer: Vec<&Arc<Message>> = messages.iter().filter(|m| m.id.offset > after.offset).collect();
            let skip = newer.len().saturating_sub(*limit);
            HistoryAnswer {
                complete: after.offset >= lost && skip == 0 && after.offset <= head,
                messages: newer[skip..].iter().map(|m| Arc::clone(m)).collect(),
                head,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::test_support::TempDir;
    use std::path::PathBuf;
    use std::time::Duration;

    use serde_json::value::RawValue;

    use super::*;

    struct Nobody;
    impl Delivery for Nobody {
        fn deliver(&self, _: &str, _: &Arc<Message>) -> usize {
            0
        }
    }

    fn limits(history_size: usize, max_bytes: u64) -> ChannelLimits {
        ChannelLimits {
            id: "c".into(),
            history_size,
            history_max_age_seconds: 3600,
            history_max_bytes: max_bytes,
        }
    }

    fn options(path: Option<PathBuf>) -> StoreOptions {
        StoreOptions {
            path,
            commit_wait: Duration::from_millis(1),
            commit_max_messages: 100,
            fsync: true,
            sweep_interval: Duration::from_secs(3600),
        }
    }

    fn open(path: &TempDir, limits: ChannelLimits) -> LocalEngine {
        LocalEngine::open(vec![limits], options(Some(path.store())), Arc::new(Nobody)).unwrap()
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name, 256).unwrap()
    }

    async fn publish(engine: &LocalEngine, room: &RoomName, text: &str) -> MessageId {
        let draft = Draft {
            message: RawValue::from_string(format!("{text:?}")).unwrap(),
            client_id: Some(ClientId::restore("n:abc")),
            user: Some("alice".into()),
        };
        engine.publish("c", room, draft, Ack::Durable).await.unwrap().id
    }

    fn texts(answer: &HistoryAnswer) -> Vec<String> {
        answer.messages.iter().map(|m| m.message.get().to_owned()).collect()
    }

    #[tokio::test]
    async fn history_epochs_and_offsets_survive_a_restart() {
        let dir = TempDir::new();
        let room = room("r");
        let (first, last) = {
            let engine = open(&dir, limits(3, 1 << 20));
            let first = publish(&engine, &room, "1").await;
            for i in 2..=4 {
                publish(&engine, &room, &i.to_string()).await;
            }
            let last = publish(&engine, &room, "5").await;
            (first, last)
        };
        let engine = open(&dir, limits(3, 1 << 20));
        let latest = engine.history("c", &room, HistoryQuery::Latest(10)).unwrap();
        assert_eq!(texts(&latest), ["\"3\"", "\"4\"", "\"5\""]);
        assert_eq!(latest.messages[0].user.as_deref(), Some("alice"));
        assert_eq!(latest.messages[0].client_id.as_ref().unwrap().as_str(), "n:abc");
        let next = publish(&engine, &room, "6").await;
        assert_eq!((next.epoch.clone(), next.offset), (last.epoch.clone(), 6));
        // Recovery from 4: complete; from 1: 2 was trimmed, so not.
        let after_four = MessageId {
            offset: 4,
            ..last.clone()
        };
        let since = engine
            .history(
                "c",
                &room,
                HistoryQuery::Since {
                    after: Some(after_four),
                    limit: 100,
                },
            )
            .unwrap();
        assert!(since.complete);
        assert_eq!(texts(&since), ["\"5\"", "\"6\""]);
        let since_first = engine
            .history(
                "c",
                &room,
                HistoryQuery::Since {
                    after: Some(first),
                    limit: 100,
                },
            )
            .unwrap();
        assert!(!since_first.complete);
    }

    #[tokio::test]
    async fn the_byte_bound_drops_least_recently_used_rooms_first() {
        let dir = TempDir::new();
        // Each room costs its overhead plus ~45 bytes a message: three rooms fit, four do not.
        let engine = open(&dir, limits(100, 3 * (256 + 2 * 80)));
        let (a, b, c, d) = (room("a"), room("b"), room("c"), room("d"));
        for r in [&a, &b, &c] {
            publish(&engine, r, "x").await;
        }
        // `a` is used again, so `b` is now the least recently used.
        publish(&engine, &a, "y").await;
        publish(&engine, &d, "z").await;
        let stored = |r: &RoomName| engine.history("c", r, HistoryQuery::Latest(10)).unwrap().messages.len();
        assert_eq!(stored(&b), 0, "b was the least recently used");
        assert_eq!((stored(&a), stored(&c), stored(&d)), (2, 1, 1));
    }

    #[tokio::test]
    async fn many_rooms_under_a_byte_bound_keep_the_newest() {
        let dir = TempDir::new();
        let engine = open(&dir, limits(100, 20_000));
        let body = "x".repeat(200);
        for i in 0..300 {
            publish(&engine, &room(&format!("p-{i}")), &body).await;
        }
        let stored = |r: &str| {
            engine
                .history("c", &room(r), HistoryQuery::Latest(10))
                .unwrap()
                .messages
                .len()
        };
        let kept: Vec<usize> = (0..300).filter(|i| stored(&format!("p-{i}")) == 1).collect();
        assert!(kept.contains(&299), "kept {kept:?}");
        assert!(!kept.contains(&0));
    }

    #[tokio::test]
    async fn an_unreadable_store_is_set_aside_and_starts_new_epochs() {
        let dir = TempDir::new();
        std::fs::write(dir.store(), b"this is not a database, it is a shopping list").unwrap();
        let engine = open(&dir, limits(10, 1 << 20));
        let id = publish(&engine, &room("r"), "1").await;
        assert_eq!(id.offset, 1);
        let aside = std::fs::read_dir(&dir.0)
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().contains("unusable"));
        assert!(aside, "the unreadable file is kept for inspection");
    }

    #[tokio::test]
    async fn a_store_held_by_another_engine_is_a_clear_error() {
        let dir = TempDir::new();
        let _first = open(&dir, limits(10, 1 << 20));
        let second = LocalEngine::open(vec![limits(10, 1 << 20)], options(Some(dir.store())), Arc::new(Nobody));
        assert!(matches!(second, Err(StoreError::Locked(_))));
    }

    #[tokio::test]
    async fn the_sweeper_prunes_expired_messages_without_a_read() {
        let dir = TempDir::new();
        let store = Store::open(
            StoreOptions {
                sweep_interval: Duration::from_millis(20),
                ..options(Some(dir.store()))
            },
            &[limits(10, 1 << 20)],
        )
        .unwrap();
        store.start(Box::new(|_| {})).unwrap();
        let key: Arc<str> = store::room_key("c", "r").into();
        let raw = RawValue::from_string("1".into()).unwrap();
        for (offset, timestamp) in [(1, unix_now() - 7200), (2, unix_now())] {
            store
                .append(Append {
                    room_key: Arc::clone(&key),
                    epoch: "e".into(),
                    offset,
                    lost: 0,
                    value: store::encode_record(timestamp, &raw, None, None),
                    ack: None,
                })
                .unwrap();
        }
        store.flush().await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while store.latest(&key, 10).unwrap().len() == 2 {
            assert!(std::time::Instant::now() < deadline, "the sweep never ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left = store.latest(&key, 10).unwrap();
        assert_eq!(left.iter().map(|m| m.offset).collect::<Vec<_>>(), [2]);
        assert_eq!(store.room(&key).unwrap().unwrap().lost, 1);
    }
}
