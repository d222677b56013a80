//! The embedded durable store: every room's recent messages and its epoch and
//! offsets, in one redb database under `data_dir` (or in memory).
//!
//! Reads happen on the caller's thread with redb's MVCC read transactions;
//! every write goes through one **writer thread**, which is what makes group
//! commit possible: it takes the appends queued by all publishers, up to
//! `commit_max_messages` or for at most `commit_wait_ms` after the first, and
//! commits them in one transaction with one fsync. A REST publish is answered
//! only after its commit ([`super::Ack::Durable`]); a WebSocket publish is
//! delivered at once and stored within that bound.
//!
//! The writer also keeps the store bounded: per room it trims to the channel's
//! `history_size`, a periodic sweep prunes messages past `history_max_age`,
//! and per channel it keeps the stored bytes under `history_max_bytes` by
//! dropping the least recently used rooms first (an LRU index by "tick").
//!
//! # Tables
//! - `schema`: `"version"` → [`SCHEMA_VERSION`].
//! - `rooms`: room key → [`RoomMeta`] (JSON): epoch, last offset, the highest
//!   offset no longer stored, stored bytes, LRU tick.
//! - `messages`: (room key, offset) → 8-byte little-endian Unix timestamp + JSON record.
//! - `lru`: (channel, tick, room key) → `()`.
//!
//! A room key is `"{channel}\0{room}"`: neither channel ids nor room names
//! contain control characters.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::ChannelLimits;
use crate::token::unix_now;

const SCHEMA: TableDefinition<&str, u64> = TableDefinition::new("schema");
const ROOMS: TableDefinition<&str, &[u8]> = TableDefinition::new("rooms");
const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
const LRU: TableDefinition<(&str, u64, &str), ()> = TableDefinition::new("lru");

/// Bumped when the layout changes; a store of another version is set aside.
pub const SCHEMA_VERSION: u64 = 1;

/// What a room costs in the byte bound besides its messages, so that many
/// near-empty rooms cannot slip under it.
const ROOM_OVERHEAD_BYTES: u64 = 256;
/// redb's page cache. Its default (1 GiB) would let history reads grow the
/// process far past what its connections need; recent messages of active
/// rooms are cached by the engine anyway.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// What one stored message costs besides its record.
const MESSAGE_OVERHEAD_BYTES: u64 = 32;

/// Why the store failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("the store {0} is in use by another process")]
    Locked(PathBuf),
    #[error("store: {0}")]
    Backend(String),
    #[error("the store's writer has stopped")]
    Stopped,
}

macro_rules! backend_errors {
    ($($ty:ty),*) => {$(
        impl From<$ty> for StoreError {
            fn from(error: $ty) -> Self {
                StoreError::Backend(error.to_string())
            }
        }
    )*};
}
backend_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError,
    serde_json::Error,
    std::io::Error
);

/// Where the store lives and how it commits.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// The database file; `None` keeps the store in memory.
    pub path: Option<PathBuf>,
    pub commit_wait: Duration,
    pub commit_max_messages: usize,
    pub fsync: bool,
    pub sweep_interval: Duration,
}

/// A room's bookkeeping as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomMeta {
    pub epoch: String,
    /// The newest offset assigned.
    pub last: u64,
    /// The highest offset that is no longer stored (trimmed, expired or evicted).
    pub lost: u64,
    /// Bytes this room counts against its channel's bound.
    pub bytes: u64,
    /// When it was last used, in the writer's LRU ticks.
    pub tick: u64,
}

/// One stored message as read back.
#[derive(Debug)]
pub struct StoredMessage {
    pub offset: u64,
    pub timestamp: u64,
    pub message: Box<RawValue>,
    pub client_id: Option<String>,
    pub user: Option<String>,
}

#[derive(Serialize)]
struct RecordOut<'a> {
    m: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    c: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    u: Option<&'a str>,
}

#[derive(Deserialize)]
struct RecordIn {
    m: Box<RawValue>,
    c: Option<String>,
    u: Option<String>,
}

/// Encodes a message's stored value: timestamp, then the JSON record.
pub fn encode_record(timestamp: u64, message: &RawValue, client_id: Option<&str>, user: Option<&str>) -> Vec<u8> {
    let mut value = timestamp.to_le_bytes().to_vec();
    // Serializing borrowed strings and a raw value cannot fail.
    let _ = serde_json::to_writer(
        &mut value,
        &RecordOut {
            m: message,
            c: client_id,
            u: user,
        },
    );
    value
}

fn decode_record(offset: u64, value: &[u8]) -> Result<StoredMessage, StoreError> {
    let (timestamp, json) = value
        .split_first_chunk::<8>()
        .ok_or_else(|| StoreError::Backend("short record".into()))?;
    let record: RecordIn = serde_json::from_slice(json)?;
    Ok(StoredMessage {
        offset,
        timestamp: u64::from_le_bytes(*timestamp),
        message: record.m,
        client_id: record.c,
        user: record.u,
    })
}

fn timestamp_of(value: &[u8]) -> u64 {
    value.first_chunk::<8>().map_or(0, |ts| u64::from_le_bytes(*ts))
}

/// The key of `room` in `channel`.
pub fn room_key(channel: &str, room: &str) -> String {
    format!("{channel}\0{room}")
}

fn channel_of(room_key: &str) -> &str {
    room_key.split_once('\0').map_or(room_key, |(channel, _)| channel)
}

/// One append handed to the writer.
pub struct Append {
    pub room_key: Arc<str>,
    pub epoch: Arc<str>,
    pub offset: u64,
    /// The highest offset the room's log knows to be lost (it may know better than the store).
    pub lost: u64,
    pub value: Vec<u8>,
    pub ack: Option<oneshot::Sender<Result<(), StoreError>>>,
}

enum Op {
    Append(Append),
    /// A room's history was read: it counts as used for the LRU bound.
    Touch(Arc<str>),
    /// Answer once everything queued before is committed.
    Flush(oneshot::Sender<Result<(), StoreError>>),
}

/// What a commit did, for the engine's bookkeeping.
#[derive(Debug, Default)]
pub struct CommitReport {
    /// Appends committed (or failed) per room key.
    pub written: HashMap<Arc<str>, usize>,
    /// Rooms whose whole history was dropped by the byte bound.
    pub evicted: Vec<String>,
}

/// Told about every commit by the writer thread.
pub type CommitListener = Box<dyn Fn(CommitReport) + Send>;

/// The open store: reads on any thread, writes through the writer thread.
pub struct Store {
    db: Arc<Database>,
    writer: Mutex<Option<mpsc::Sender<Op>>>,
    /// Handed to the writer thread when it starts.
    pending: Mutex<Option<(mpsc::Receiver<Op>, WriterConfig)>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct WriterConfig {
    options: StoreOptions,
    channels: HashMap<String, ChannelLimits>,
}

impl Store {
    /// Opens (or creates) the store. A file that cannot be read or is of another
    /// schema version is set aside with a log line and a new store is started;
    /// a file held by another process is an error.
    pub fn open(options: StoreOptions, channels: &[ChannelLimits]) -> Result<Store, StoreError> {
        let db = match &options.path {
            None => {
                let db = Database::builder()
                    .set_cache_size(CACHE_BYTES)
                    .create_with_backend(redb::backends::InMemoryBackend::new())?;
                stamp_schema(&db)?;
                db
            }
            Some(path) => open_file(path)?,
        };
        let (tx, rx) = mpsc::channel();
        let channels = channels.iter().map(|c| (c.id.clone(), c.clone())).collect();
        Ok(Store {
            db: Arc::new(db),
            writer: Mutex::new(Some(tx)),
            pending: Mutex::new(Some((rx, WriterConfig { options, channels }))),
            thread: Mutex::new(None),
        })
    }

    /// The open database, shared with the accounts store.
    pub fn database(&self) -> Arc<Database> {
        Arc::clone(&self.db)
    }

    /// Starts the writer thread; `listener` hears about every commit.
    pub fn start(&self, listener: CommitListener) -> Result<(), StoreError> {
        let Some((rx, config)) = self.pending.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Ok(());
        };
        let mut writer = Writer::new(Arc::clone(&self.db), config, listener)?;
        let thread = std::thread::Builder::new()
            .name("rookery-store".into())
            .spawn(move || writer.run(rx))?;
        *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
        Ok(())
    }

    /// The stored bookkeeping of a room, if it has any.
    pub fn room(&self, room_key: &str) -> Result<Option<RoomMeta>, StoreError> {
        let txn = self.db.begin_read()?;
        let rooms = match txn.open_table(ROOMS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        Ok(match rooms.get(room_key)? {
            Some(meta) => Some(serde_json::from_slice(meta.value())?),
            None => None,
        })
    }

    /// The latest `count` stored messages of a room, oldest first.
    pub fn latest(&self, room_key: &str, count: usize) -> Result<Vec<StoredMessage>, StoreError> {
        if count == 0 {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_read()?;
        let messages = match txn.open_table(MESSAGES) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(error.into()),
        };
        let mut found = Vec::with_capacity(count.min(128));
        for entry in messages.range((room_key, 0)..=(room_key, u64::MAX))?.rev().take(count) {
            let (key, value) = entry?;
            found.push(decode_record(key.value().1, value.value())?);
        }
        found.reverse();
        Ok(found)
    }

    /// Queues an append for the next group commit.
    pub fn append(&self, append: Append) -> Result<(), StoreError> {
        self.send(Op::Append(append))
    }

    /// Marks a room as used for the LRU bound.
    pub fn touch(&self, room_key: Arc<str>) {
        let _ = self.send(Op::Touch(room_key));
    }

    /// Resolves once everything queued so far is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        self.send(Op::Flush(tx))?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    fn send(&self, op: Op) -> Result<(), StoreError> {
        let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        writer
            .as_ref()
            .ok_or(StoreError::Stopped)?
            .send(op)
            .map_err(|_| StoreError::Stopped)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closing the queue lets the writer commit what it holds and exit;
        // waiting for it releases the database file before anyone reopens it.
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        // The writer itself may drop the last handle (through its listener): never join oneself.
        if let Some(thread) = thread.filter(|t| t.thread().id() != std::thread::current().id()) {
            let _ = thread.join();
        }
    }
}

/// Opens the store's database file without starting a writer (the operator commands).
pub fn open_database(path: &std::path::Path) -> Result<Arc<Database>, StoreError> {
    open_file(&path.to_path_buf()).map(Arc::new)
}

/// Opens the database file, setting aside one that cannot be used.
fn open_file(path: &PathBuf) -> Result<Database, StoreError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let problem = match Database::builder().set_cache_size(CACHE_BYTES).create(path) {
        Ok(db) => match schema_of(&db) {
            Ok(None) => {
                stamp_schema(&db)?;
                return Ok(db);
            }
            Ok(Some(SCHEMA_VERSION)) => return Ok(db),
            Ok(Some(other)) => format!("it has schema version {other}, this build uses {SCHEMA_VERSION}"),
            Err(error) => error.to_string(),
        },
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(StoreError::Locked(path.clone())),
        Err(error) => error.to_string(),
    };
    let aside = path.with_extension(format!("redb.unusable-{}", unix_now()));
    warn!(
        store = %path.display(),
        moved_to = %aside.display(),
        %problem,
        "the store cannot be used; it was set aside and a new one started (history starts over, with new epochs)"
    );
    std::fs::rename(path, &aside)?;
    let db = Database::builder().set_cache_size(CACHE_BYTES).create(path)?;
    stamp_schema(&db)?;
    Ok(db)
}

fn schema_of(db: &Database) -> Result<Option<u64>, StoreError> {
    let txn = db.begin_read()?;
    match txn.open_table(SCHEMA) {
        Ok(table) => Ok(table.get("version")?.map(|v| v.value())),
        Err(redb::TableError::TableDoesNotExist(_)) => {
            // A database without a schema table but with data is not ours.
            match txn.open_table(ROOMS) {
                Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
                _ => Ok(Some(0)),
            }
        }
        Err(error) => Err(error.into()),
    }
}

fn stamp_schema(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write()?;
    {
        txn.open_table(SCHEMA)?.insert("version", SCHEMA_VERSION)?;
        txn.open_table(ROOMS)?;
        txn.open_table(MESSAGES)?;
        txn.open_table(LRU)?;
    }
    txn.commit()?;
    Ok(())
}

/// The writer thread's state.
struct Writer {
    db: Arc<Database>,
    options: StoreOptions,
    channels: HashMap<String, ChannelLimits>,
    /// Stored bytes per channel, as counted against its bound.
    bytes: HashMap<String, u64>,
    next_tick: u64,
    listener: CommitListener,
    last_sweep: Instant,
}

impl Writer {
    fn new(db: Arc<Database>, config: WriterConfig, listener: CommitListener) -> Result<Writer, StoreError> {
        let mut bytes: HashMap<String, u64> = HashMap::new();
        let mut next_tick = 1;
        {
            let txn = db.begin_read()?;
            let rooms = txn.open_table(ROOMS)?;
            for entry in rooms.iter()? {
                let (key, meta) = entry?;
                let meta: RoomMeta = serde_json::from_slice(meta.value())?;
                *bytes.entry(channel_of(key.value()).to_owned()).or_default() += meta.bytes;
                next_tick = next_tick.max(meta.tick + 1);
            }
        }
        for (channel, bytes) in &bytes {
            info!(%channel, bytes, "stored history");
        }
        Ok(Writer {
            db,
            options: config.options,
            channels: config.channels,
            bytes,
            next_tick,
            listener,
            last_sweep: Instant::now(),
        })
    }

    fn run(&mut self, rx: mpsc::Receiver<Op>) {
        loop {
            let until_sweep = self.options.sweep_interval.saturating_sub(self.last_sweep.elapsed());
            let first = match rx.recv_timeout(until_sweep) {
                Ok(op) => op,
                Err(RecvTimeoutError::Timeout) => {
                    self.sweep();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            let mut batch = vec![first];
            let deadline = Instant::now() + self.options.commit_wait;
            let mut closed = false;
            while batch.len() < self.options.commit_max_messages {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(op) => batch.push(op),
                    Err(RecvTimeoutError::Timeout) => break,
                    Err(RecvTimeoutError::Disconnected) => {
                        closed = true;
                        break;
                    }
                }
            }
            self.commit(batch);
            if closed {
                return;
            }
        }
    }

    /// Writes one batch in one transaction and tells everyone how it went.
    fn commit(&mut self, batch: Vec<Op>) {
        let started = Instant::now();
        let mut acks = Vec::new();
        let mut report = CommitReport::default();
        let appends = batch.iter().filter(|op| matches!(op, Op::Append(_))).count();
        let bytes_before = self.bytes.clone();
        let result = self.write(batch, &mut acks, &mut report);
        if let Err(error) = &result {
            // The transaction was not committed: its byte counts did not happen.
            self.bytes = bytes_before;
            report.evicted.clear();
            error!(%error, "store commit failed; the batch's messages were delivered but not stored");
            crate::metrics::store_error();
            crate::metrics::store_up(false);
        } else if appends > 0 {
            crate::metrics::store_up(true);
            crate::metrics::store_commit(started.elapsed(), appends);
        }
        if !report.evicted.is_empty() {
            crate::metrics::history_evicted_rooms(report.evicted.len());
        }
        // The engine's bookkeeping first, so that whoever awaits an ack sees it done.
        (self.listener)(report);
        for ack in acks {
            let _ = ack.send(result.clone());
        }
    }

    fn write(
        &mut self,
        batch: Vec<Op>,
        acks: &mut Vec<oneshot::Sender<Result<(), StoreError>>>,
        report: &mut CommitReport,
    ) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if self.options.fsync {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        let mut touched_channels = Vec::new();
        {
            let mut rooms = txn.open_table(ROOMS)?;
            let mut messages = txn.open_table(MESSAGES)?;
            let mut lru = txn.open_table(LRU)?;
            let mut tables = Tables {
                rooms: &mut rooms,
                messages: &mut messages,
                lru: &mut lru,
            };
            for op in batch {
                match op {
                    Op::Append(append) => {
                        let room_key = Arc::clone(&append.room_key);
                        if let Some(ack) = append.ack {
                            acks.push(ack);
                        }
                        let channel = channel_of(&room_key).to_owned();
                        let value = append.value;
                        let appended = Append {
                            value,
                            ack: None,
                            ..append
                        };
                        self.append(&mut tables, &channel, &appended)?;
                        *report.written.entry(room_key).or_default() += 1;
                        if !touched_channels.contains(&channel) {
                            touched_channels.push(channel);
                        }
                    }
                    Op::Touch(room_key) => {
                        self.touch(&mut tables, &room_key)?;
                    }
                    Op::Flush(ack) => acks.push(ack),
                }
            }
            for channel in touched_channels {
                self.enforce_bound(&mut tables, &channel, &mut report.evicted)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    fn tick(&mut self) -> u64 {
        self.next_tick += 1;
        self.next_tick
    }

    fn append(&mut self, t: &mut Tables<'_, '_>, channel: &str, append: &Append) -> Result<(), StoreError> {
        let limits = self.channels.get(channel).cloned();
        let history_size = limits.as_ref().map_or(0, |l| l.history_size) as u64;
        let key: &str = &append.room_key;
        let stored = read_meta(t.rooms, key)?;
        let mut meta = match stored {
            Some(meta) if meta.epoch == *append.epoch => meta,
            other => {
                // A new room, or one whose log started a new epoch: start it over.
                if let Some(old) = other {
                    self.drop_room(t, channel, key, &old)?;
                }
                self.add_bytes(channel, ROOM_OVERHEAD_BYTES as i64);
                RoomMeta {
                    epoch: append.epoch.to_string(),
                    last: 0,
                    lost: 0,
                    bytes: ROOM_OVERHEAD_BYTES,
                    tick: 0,
                }
            }
        };
        if meta.tick != 0 {
            t.lru.remove((channel, meta.tick, key))?;
        }
        meta.tick = self.tick();
        t.lru.insert((channel, meta.tick, key), ())?;
        meta.last = meta.last.max(append.offset);
        meta.lost = meta.lost.max(append.lost);
        if history_size == 0 {
            meta.lost = meta.lost.max(append.offset);
        } else {
            t.messages.insert((key, append.offset), append.value.as_slice())?;
            let cost = append.value.len() as u64 + MESSAGE_OVERHEAD_BYTES;
            meta.bytes += cost;
            self.add_bytes(channel, cost as i64);
            // Keep the latest `history_size`: everything at or below `cut` goes.
            let cut = append.offset.saturating_sub(history_size);
            if cut > meta.lost {
                let freed = delete_range(t.messages, key, 0, cut)?;
                meta.bytes = meta.bytes.saturating_sub(freed);
                self.add_bytes(channel, -(freed as i64));
                meta.lost = cut;
            }
        }
        write_meta(t.rooms, key, &meta)
    }

    fn touch(&mut self, t: &mut Tables<'_, '_>, key: &str) -> Result<(), StoreError> {
        let Some(mut meta) = read_meta(t.rooms, key)? else {
            return Ok(());
        };
        let channel = channel_of(key).to_owned();
        t.lru.remove((channel.as_str(), meta.tick, key))?;
        meta.tick = self.tick();
        t.lru.insert((channel.as_str(), meta.tick, key), ())?;
        write_meta(t.rooms, key, &meta)
    }

    /// Drops least recently used rooms until the channel is under its byte bound.
    fn enforce_bound(
        &mut self,
        t: &mut Tables<'_, '_>,
        channel: &str,
        evicted: &mut Vec<String>,
    ) -> Result<(), StoreError> {
        let Some(bound) = self.channels.get(channel).map(|l| l.history_max_bytes) else {
            return Ok(());
        };
        while self.bytes.get(channel).copied().unwrap_or(0) > bound {
            let oldest = t
                .lru
                .range((channel, 0, "")..)?
                .next()
                .transpose()?
                .map(|(key, _)| key.value().2.to_owned());
            let Some(room_key) = oldest.filter(|key| channel_of(key) == channel) else {
                break;
            };
            if let Some(meta) = read_meta(t.rooms, &room_key)? {
                self.drop_room(t, channel, &room_key, &meta)?;
                t.rooms.remove(room_key.as_str())?;
            } else {
                // An index entry without a room: repair it and go on.
                t.lru.retain_in(
                    (channel, 0, room_key.as_str())..=(channel, u64::MAX, room_key.as_str()),
                    |k, _| k.2 != room_key,
                )?;
            }
            evicted.push(room_key);
        }
        Ok(())
    }

    /// Removes a room's messages and LRU entry and uncounts its bytes (its meta row stays to the caller).
    fn drop_room(
        &mut self,
        t: &mut Tables<'_, '_>,
        channel: &str,
        key: &str,
        meta: &RoomMeta,
    ) -> Result<(), StoreError> {
        delete_range(t.messages, key, 0, u64::MAX)?;
        t.lru.remove((channel, meta.tick, key))?;
        self.add_bytes(channel, -(meta.bytes as i64));
        Ok(())
    }

    fn add_bytes(&mut self, channel: &str, delta: i64) {
        let bytes = self.bytes.entry(channel.to_owned()).or_default();
        *bytes = bytes.saturating_add_signed(delta);
    }

    /// Prunes messages past their channel's age limit; rooms left empty are forgotten.
    fn sweep(&mut self) {
        self.last_sweep = Instant::now();
        let result = (|| -> Result<usize, StoreError> {
            let now = unix_now();
            let txn = self.db.begin_write()?;
            let mut pruned = 0;
            {
                let mut rooms = txn.open_table(ROOMS)?;
                let mut messages = txn.open_table(MESSAGES)?;
                let mut lru = txn.open_table(LRU)?;
                let keys: Vec<String> = rooms
                    .iter()?
                    .map(|entry| entry.map(|(key, _)| key.value().to_owned()))
                    .collect::<Result<_, _>>()?;
                for key in keys {
                    let channel = channel_of(&key).to_owned();
                    let Some(limits) = self.channels.get(&channel) else {
                        continue;
                    };
                    let cutoff = now.saturating_sub(limits.history_max_age_seconds);
                    let Some(mut meta) = read_meta(&rooms, &key)? else {
                        continue;
                    };
                    let mut freed = 0;
                    let mut lost = meta.lost;
                    messages.retain_in((key.as_str(), 0)..=(key.as_str(), u64::MAX), |k, v| {
                        let keep = timestamp_of(v) >= cutoff;
                        if !keep {
                            freed += v.len() as u64 + MESSAGE_OVERHEAD_BYTES;
                            lost = lost.max(k.1);
                            pruned += 1;
                        }
                        keep
                    })?;
                    if freed == 0 {
                        continue;
                    }
                    meta.bytes = meta.bytes.saturating_sub(freed);
                    meta.lost = lost;
                    self.add_bytes(&channel, -(freed as i64));
                    let empty = messages
                        .range((key.as_str(), 0)..=(key.as_str(), u64::MAX))?
                        .next()
                        .is_none();
                    if empty && meta.lost >= meta.last {
                        lru.remove((channel.as_str(), meta.tick, key.as_str()))?;
                        rooms.remove(key.as_str())?;
                        self.add_bytes(&channel, -(meta.bytes as i64));
                    } else {
                        write_meta(&mut rooms, &key, &meta)?;
                    }
                }
            }
            txn.commit()?;
            Ok(pruned)
        })();
        match result {
            Ok(0) => {}
            Ok(pruned) => info!(pruned, "expired messages pruned from the store"),
            Err(error) => {
                error!(%error, "store sweep failed");
                crate::metrics::store_error();
            }
        }
    }
}

struct Tables<'a, 't> {
    rooms: &'a mut redb::Table<'t, &'static str, &'static [u8]>,
    messages: &'a mut redb::Table<'t, (&'static str, u64), &'static [u8]>,
    lru: &'a mut redb::Table<'t, (&'static str, u64, &'static str), ()>,
}

fn read_meta(
    rooms: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Option<RoomMeta>, StoreError> {
    Ok(match rooms.get(key)? {
        Some(meta) => Some(serde_json::from_slice(meta.value())?),
        None => None,
    })
}

fn write_meta(
    rooms: &mut redb::Table<'_, &'static str, &'static [u8]>,
    key: &str,
    meta: &RoomMeta,
) -> Result<(), StoreError> {
    rooms.insert(key, serde_json::to_vec(meta)?.as_slice())?;
    Ok(())
}

/// Deletes a room's messages with offsets in `from..=to`; returns the bytes freed.
fn delete_range(
    messages: &mut redb::Table<'_, (&'static str, u64), &'static [u8]>,
    key: &str,
    from: u64,
    to: u64,
) -> Result<u64, StoreError> {
    let mut freed = 0;
    messages.retain_in((key, from)..=(key, to), |_, v| {
        freed += v.len() as u64 + MESSAGE_OVERHEAD_BYTES;
        false
    })?;
    Ok(freed)
}
