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
//! dropping the least recently used rooms first (an LRU index by "tick", one
//! tick per commit).
//!
//! Within a commit the writer reads each room's row once (from a bounded cache
//! of committed rows, else the table), applies every op of the batch to it and
//! writes it back once, with at most one LRU index move and one trim per room.
//!
//! # Tables
//! - `schema`: `"version"` → [`SCHEMA_VERSION`].
//! - `rooms`: room key → [`RoomMeta`] in a fixed binary layout ([`RoomMeta::encode`]):
//!   LRU tick, last offset, the highest offset no longer stored, stored bytes, epoch.
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
///
/// - 1: room bookkeeping in JSON.
/// - 2: room bookkeeping in [`RoomMeta::encode`]'s binary layout (version 1 is migrated on open).
pub const SCHEMA_VERSION: u64 = 2;

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomMeta {
    pub epoch: Arc<str>,
    /// The newest offset assigned.
    pub last: u64,
    /// The highest offset that is no longer stored (trimmed, expired or evicted).
    pub lost: u64,
    /// Bytes this room counts against its channel's bound.
    pub bytes: u64,
    /// When it was last used, in the writer's LRU ticks.
    pub tick: u64,
}

/// The fixed part of an encoded [`RoomMeta`]: four little-endian `u64`s.
const META_FIXED_BYTES: usize = 32;

impl RoomMeta {
    /// The stored form: `tick`, `last`, `lost`, `bytes` as little-endian
    /// `u64`s, then the epoch's UTF-8. Every append rewrites it, so it is
    /// fixed-size fields rather than JSON (schema version 2).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(META_FIXED_BYTES + self.epoch.len());
        for field in [self.tick, self.last, self.lost, self.bytes] {
            out.extend_from_slice(&field.to_le_bytes());
        }
        out.extend_from_slice(self.epoch.as_bytes());
        out
    }

    pub fn decode(value: &[u8]) -> Result<RoomMeta, StoreError> {
        let bad = || StoreError::Backend("malformed room bookkeeping".into());
        let (fixed, epoch) = value.split_first_chunk::<META_FIXED_BYTES>().ok_or_else(bad)?;
        let field = |i: usize| {
            let mut word = [0; 8];
            word.copy_from_slice(&fixed[i * 8..i * 8 + 8]);
            u64::from_le_bytes(word)
        };
        let epoch = std::str::from_utf8(epoch).map_err(|_| bad())?;
        Ok(RoomMeta {
            tick: field(0),
            last: field(1),
            lost: field(2),
            bytes: field(3),
            epoch: epoch.into(),
        })
    }

    /// Schema version 1 stored it as JSON; read once, by the migration.
    fn decode_v1(value: &[u8]) -> Result<RoomMeta, StoreError> {
        #[derive(Deserialize)]
        struct V1 {
            epoch: String,
            last: u64,
            lost: u64,
            bytes: u64,
            tick: u64,
        }
        let v1: V1 = serde_json::from_slice(value)?;
        Ok(RoomMeta {
            epoch: v1.epoch.into(),
            last: v1.last,
            lost: v1.lost,
            bytes: v1.bytes,
            tick: v1.tick,
        })
    }
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
            Some(meta) => Some(RoomMeta::decode(meta.value())?),
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
            // Accounts and groups live in the same file: version 1 is converted in place, not set aside.
            Ok(Some(1)) => match migrate_v1(&db) {
                Ok(rooms) => {
                    info!(store = %path.display(), rooms, "store migrated from schema version 1");
                    return Ok(db);
                }
                Err(error) => format!("migrating it from schema version 1 failed: {error}"),
            },
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

/// Re-encodes every room's bookkeeping from version 1's JSON, in one
/// transaction with the new version stamp; returns how many rooms.
fn migrate_v1(db: &Database) -> Result<usize, StoreError> {
    let txn = db.begin_write()?;
    let mut count = 0;
    {
        let mut rooms = txn.open_table(ROOMS)?;
        let mut converted = Vec::new();
        for entry in rooms.iter()? {
            let (key, value) = entry?;
            converted.push((key.value().to_owned(), RoomMeta::decode_v1(value.value())?));
        }
        for (key, meta) in &converted {
            rooms.insert(key.as_str(), meta.encode().as_slice())?;
        }
        count += converted.len();
        txn.open_table(SCHEMA)?.insert("version", SCHEMA_VERSION)?;
        txn.open_table(MESSAGES)?;
        txn.open_table(LRU)?;
    }
    txn.commit()?;
    Ok(count)
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

/// Room bookkeeping rows most recently read or written by the writer, as
/// committed: an append to an active room neither reads nor decodes its row.
///
/// Two generations bound it: when the young one holds [`META_CACHE_ROOMS`]
/// rooms it becomes the old one and the old one is dropped, so the rooms used
/// among the last `META_CACHE_ROOMS`..`2 × META_CACHE_ROOMS` distinct rooms
/// stay cached, and memory stays bounded however many rooms are stored.
#[derive(Default)]
struct MetaCache {
    young: HashMap<Arc<str>, RoomMeta>,
    old: HashMap<Arc<str>, RoomMeta>,
}

/// Rooms per generation of the [`MetaCache`] (about 100 bytes each).
const META_CACHE_ROOMS: usize = 8192;

impl MetaCache {
    fn get(&self, key: &str) -> Option<&RoomMeta> {
        self.young.get(key).or_else(|| self.old.get(key))
    }

    fn put(&mut self, key: Arc<str>, meta: RoomMeta) {
        if self.young.len() >= META_CACHE_ROOMS && !self.young.contains_key(&key) {
            self.old = std::mem::take(&mut self.young);
        }
        self.old.remove(&key);
        self.young.insert(key, meta);
    }

    fn remove(&mut self, key: &str) {
        self.young.remove(key);
        self.old.remove(key);
    }

    fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
    }
}

/// A room's bookkeeping while one commit is written: read once (from the
/// [`MetaCache`] or the table), changed by every op of the batch, and written
/// back once, with at most one LRU index move and one trim.
struct Working {
    meta: RoomMeta,
    /// The tick under which the LRU index lists the room now (0: not listed).
    indexed: u64,
    /// Messages at or below this offset go at the end of the batch (0: none).
    trim: u64,
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
    /// Committed room rows, agreeing with the store after every commit.
    metas: MetaCache,
    /// The rooms of the batch being written (empty between commits; kept for its capacity).
    working: HashMap<Arc<str>, Working>,
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
                let meta = RoomMeta::decode(meta.value())?;
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
            metas: MetaCache::default(),
            working: HashMap::new(),
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
        match &result {
            Ok(()) => {
                // Committed: the cache takes the rows as they now are in the store.
                for (key, working) in self.working.drain() {
                    self.metas.put(key, working.meta);
                }
                for key in &report.evicted {
                    self.metas.remove(key);
                }
                if appends > 0 {
                    crate::metrics::store_up(true);
                    crate::metrics::store_commit(started.elapsed(), appends);
                }
            }
            Err(error) => {
                // The transaction was not committed: its byte counts and rows did not happen.
                self.bytes = bytes_before;
                self.working.clear();
                report.evicted.clear();
                error!(%error, "store commit failed; the batch's messages were delivered but not stored");
                crate::metrics::store_error();
                crate::metrics::store_up(false);
            }
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
        // Everything used in one commit was used "at the same time": one tick.
        let tick = self.tick();
        let mut touched_channels: Vec<String> = Vec::new();
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
                    Op::Append(mut append) => {
                        if let Some(ack) = append.ack.take() {
                            acks.push(ack);
                        }
                        self.append(&mut tables, &append, tick)?;
                        let channel = channel_of(&append.room_key);
                        if !touched_channels.iter().any(|c| c == channel) {
                            touched_channels.push(channel.to_owned());
                        }
                        *report.written.entry(append.room_key).or_default() += 1;
                    }
                    Op::Touch(room_key) => self.touch(&mut tables, room_key, tick)?,
                    Op::Flush(ack) => acks.push(ack),
                }
            }
            self.write_rooms(&mut tables)?;
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

    /// The room's bookkeeping for this batch, read once; `None` if it has none.
    fn working(&mut self, t: &Tables<'_, '_>, key: &Arc<str>) -> Result<Option<&mut Working>, StoreError> {
        if !self.working.contains_key(key) {
            let meta = match self.metas.get(key) {
                Some(meta) => meta.clone(),
                None => match read_meta(t.rooms, key)? {
                    Some(meta) => meta,
                    None => return Ok(None),
                },
            };
            let indexed = meta.tick;
            self.working.insert(Arc::clone(key), Working { meta, indexed, trim: 0 });
        }
        Ok(self.working.get_mut(key))
    }

    fn append(&mut self, t: &mut Tables<'_, '_>, append: &Append, tick: u64) -> Result<(), StoreError> {
        let key: &str = &append.room_key;
        let channel = channel_of(key);
        let history_size = self.channels.get(channel).map_or(0, |l| l.history_size) as u64;
        let stale = match self.working(t, &append.room_key)? {
            Some(working) if working.meta.epoch == append.epoch => None,
            Some(working) => Some((working.meta.bytes, working.indexed)),
            None => Some((0, 0)),
        };
        if let Some((old_bytes, indexed)) = stale {
            // A new room, or one whose log started a new epoch: start it over.
            if old_bytes != 0 || indexed != 0 {
                drop_room(t, channel, key, indexed)?;
                self.add_bytes(channel, -(old_bytes as i64));
            }
            self.add_bytes(channel, ROOM_OVERHEAD_BYTES as i64);
            let fresh = Working {
                meta: RoomMeta {
                    epoch: Arc::clone(&append.epoch),
                    last: 0,
                    lost: 0,
                    bytes: ROOM_OVERHEAD_BYTES,
                    tick: 0,
                },
                indexed: 0,
                trim: 0,
            };
            self.working.insert(Arc::clone(&append.room_key), fresh);
        }
        let Some(working) = self.working.get_mut(key) else {
            return Ok(());
        };
        let meta = &mut working.meta;
        meta.tick = tick;
        meta.last = meta.last.max(append.offset);
        meta.lost = meta.lost.max(append.lost);
        let mut cost = 0;
        if history_size == 0 {
            meta.lost = meta.lost.max(append.offset);
        } else {
            t.messages.insert((key, append.offset), append.value.as_slice())?;
            cost = append.value.len() as u64 + MESSAGE_OVERHEAD_BYTES;
            meta.bytes += cost;
            // Keep the latest `history_size`: everything at or below `cut` goes
            // (once, when the batch's rows are written).
            let cut = append.offset.saturating_sub(history_size);
            if cut > meta.lost {
                working.trim = working.trim.max(cut);
                meta.lost = cut;
            }
        }
        self.add_bytes(channel, cost as i64);
        Ok(())
    }

    fn touch(&mut self, t: &mut Tables<'_, '_>, key: Arc<str>, tick: u64) -> Result<(), StoreError> {
        if let Some(working) = self.working(t, &key)? {
            working.meta.tick = tick;
        }
        Ok(())
    }

    /// Writes the batch's rooms back: trims, LRU index moves, rows.
    fn write_rooms(&mut self, t: &mut Tables<'_, '_>) -> Result<(), StoreError> {
        let mut freed_per_channel: Vec<(&str, u64)> = Vec::new();
        for (key, working) in &mut self.working {
            let channel = channel_of(key);
            if working.trim > 0 {
                let freed = delete_range(t.messages, key, 0, working.trim)?;
                working.meta.bytes = working.meta.bytes.saturating_sub(freed);
                working.trim = 0;
                match freed_per_channel.iter_mut().find(|(c, _)| *c == channel) {
                    Some((_, total)) => *total += freed,
                    None => freed_per_channel.push((channel, freed)),
                }
            }
            if working.meta.tick != working.indexed {
                if working.indexed != 0 {
                    t.lru.remove((channel, working.indexed, &**key))?;
                }
                t.lru.insert((channel, working.meta.tick, &**key), ())?;
                working.indexed = working.meta.tick;
            }
            write_meta(t.rooms, key, &working.meta)?;
        }
        let freed: Vec<(String, u64)> = freed_per_channel
            .into_iter()
            .map(|(channel, freed)| (channel.to_owned(), freed))
            .collect();
        for (channel, freed) in freed {
            self.add_bytes(&channel, -(freed as i64));
        }
        Ok(())
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
            // The batch's rooms are written already: the table is current.
            if let Some(meta) = read_meta(t.rooms, &room_key)? {
                drop_room(t, channel, &room_key, meta.tick)?;
                self.add_bytes(channel, -(meta.bytes as i64));
                t.rooms.remove(room_key.as_str())?;
            } else {
                // An index entry without a room: repair it and go on.
                t.lru.retain_in(
                    (channel, 0, room_key.as_str())..=(channel, u64::MAX, room_key.as_str()),
                    |k, _| k.2 != room_key,
                )?;
            }
            self.working.remove(room_key.as_str());
            evicted.push(room_key);
        }
        Ok(())
    }

    fn add_bytes(&mut self, channel: &str, delta: i64) {
        if delta == 0 {
            return;
        }
        match self.bytes.get_mut(channel) {
            Some(bytes) => *bytes = bytes.saturating_add_signed(delta),
            None => {
                self.bytes.insert(channel.to_owned(), 0u64.saturating_add_signed(delta));
            }
        }
    }

    /// Prunes messages past their channel's age limit; rooms left empty are forgotten.
    fn sweep(&mut self) {
        self.last_sweep = Instant::now();
        let bytes_before = self.bytes.clone();
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
            Ok(pruned) => {
                // Rows changed behind the cache; a sweep is rare, so start it over.
                self.metas.clear();
                info!(pruned, "expired messages pruned from the store");
            }
            Err(error) => {
                self.bytes = bytes_before;
                error!(%error, "store sweep failed");
                crate::metrics::store_error();
            }
        }
    }
}

/// Removes a room's messages and its LRU entry at `indexed` (its row stays to the caller).
fn drop_room(t: &mut Tables<'_, '_>, channel: &str, key: &str, indexed: u64) -> Result<(), StoreError> {
    delete_range(t.messages, key, 0, u64::MAX)?;
    if indexed != 0 {
        t.lru.remove((channel, indexed, key))?;
    }
    Ok(())
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
        Some(meta) => Some(RoomMeta::decode(meta.value())?),
        None => None,
    })
}

fn write_meta(
    rooms: &mut redb::Table<'_, &'static str, &'static [u8]>,
    key: &str,
    meta: &RoomMeta,
) -> Result<(), StoreError> {
    rooms.insert(key, meta.encode().as_slice())?;
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

#[cfg(test)]
mod tests {
    use crate::test_support::TempDir;
    use std::sync::mpsc;

    use super::*;

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
            commit_wait: Duration::ZERO,
            commit_max_messages: 1024,
            fsync: false,
            sweep_interval: Duration::from_secs(3600),
        }
    }

    /// A writer driven by hand, on an in-memory database, with the commit reports it sent.
    fn writer(limits: ChannelLimits) -> (Writer, mpsc::Receiver<CommitReport>) {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap();
        stamp_schema(&db).unwrap();
        let (tx, rx) = mpsc::channel();
        let config = WriterConfig {
            options: options(None),
            channels: HashMap::from([(limits.id.clone(), limits)]),
        };
        let listener: CommitListener = Box::new(move |report| {
            let _ = tx.send(report);
        });
        (Writer::new(Arc::new(db), config, listener).unwrap(), rx)
    }

    fn append(room: &str, epoch: &str, offset: u64) -> Op {
        let raw = RawValue::from_string(format!("{offset}")).unwrap();
        Op::Append(Append {
            room_key: room_key("c", room).into(),
            epoch: epoch.into(),
            offset,
            lost: 0,
            value: encode_record(unix_now(), &raw, None, None),
            ack: None,
        })
    }

    /// Every room row and LRU entry as committed.
    fn stored(writer: &Writer) -> (HashMap<String, RoomMeta>, Vec<(u64, String)>) {
        let txn = writer.db.begin_read().unwrap();
        let rooms = txn.open_table(ROOMS).unwrap();
        let rows = rooms
            .iter()
            .unwrap()
            .map(|e| {
                let (k, v) = e.unwrap();
                (k.value().to_owned(), RoomMeta::decode(v.value()).unwrap())
            })
            .collect();
        let lru = txn.open_table(LRU).unwrap();
        let index = lru
            .iter()
            .unwrap()
            .map(|e| {
                let (k, _) = e.unwrap();
                let (_, tick, room) = k.value();
                (tick, room.to_owned())
            })
            .collect();
        (rows, index)
    }

    fn offsets(writer: &Writer, room: &str) -> Vec<u64> {
        let txn = writer.db.begin_read().unwrap();
        let messages = txn.open_table(MESSAGES).unwrap();
        let key = room_key("c", room);
        messages
            .range((key.as_str(), 0)..=(key.as_str(), u64::MAX))
            .unwrap()
            .map(|e| e.unwrap().0.value().1)
            .collect()
    }

    #[test]
    fn room_meta_round_trips_and_rejects_garbage() {
        let meta = RoomMeta {
            epoch: "AbCd1234".into(),
            last: u64::MAX,
            lost: 7,
            bytes: 1 << 40,
            tick: 3,
        };
        assert_eq!(RoomMeta::decode(&meta.encode()).unwrap(), meta);
        assert!(RoomMeta::decode(&[0; 31]).is_err());
        let mut bad_utf8 = meta.encode();
        bad_utf8.push(0xff);
        assert!(RoomMeta::decode(&bad_utf8).is_err());
    }

    #[test]
    fn the_meta_cache_agrees_with_the_store_after_every_commit() {
        let (mut writer, reports) = writer(limits(3, 1 << 20));
        let batches = vec![
            vec![append("a", "e1", 1), append("b", "e1", 1), append("a", "e1", 2)],
            // `a` trims (history 3), `b` is touched, `c` is new.
            vec![
                append("a", "e1", 3),
                append("a", "e1", 4),
                append("a", "e1", 5),
                Op::Touch(room_key("c", "b").into()),
                append("c", "e1", 1),
            ],
            // `b` starts a new epoch: its old history is dropped.
            vec![append("b", "e2", 1), append("a", "e1", 6)],
        ];
        for batch in batches {
            writer.commit(batch);
            reports.recv().unwrap();
            assert!(writer.working.is_empty());
            let (rows, _) = stored(&writer);
            for (key, row) in &rows {
                if let Some(cached) = writer.metas.get(key) {
                    assert_eq!(cached, row, "{key:?}");
                }
            }
            let cached = writer.metas.young.len() + writer.metas.old.len();
            assert_eq!(cached, rows.len(), "every room written is cached");
        }
        let (rows, _) = stored(&writer);
        let a = &rows[&room_key("c", "a")];
        assert_eq!((a.last, a.lost), (6, 3));
        assert_eq!(offsets(&writer, "a"), [4, 5, 6]);
        assert_eq!(&*rows[&room_key("c", "b")].epoch, "e2");
        assert_eq!(offsets(&writer, "b"), [1]);
        // The byte counts of the rows add up to the channel's total.
        let total: u64 = rows.values().map(|m| m.bytes).sum();
        assert_eq!(writer.bytes["c"], total);
    }

    #[test]
    fn a_room_moves_in_the_lru_index_once_per_commit_and_order_holds() {
        let (mut writer, reports) = writer(limits(100, 1 << 20));
        writer.commit(vec![append("a", "e", 1), append("b", "e", 1)]);
        writer.commit(vec![append("c", "e", 1)]);
        // `a` is used three times in one commit: one index entry, at this commit's tick.
        writer.commit(vec![append("a", "e", 2), append("a", "e", 3), append("a", "e", 4)]);
        for _ in 0..3 {
            reports.recv().unwrap();
        }
        let (rows, index) = stored(&writer);
        let names: Vec<&str> = index.iter().map(|(_, key)| channel_room(key)).collect();
        assert_eq!(names, ["b", "c", "a"], "least recently used first");
        assert_eq!(index.len(), rows.len(), "one index entry per room");
        for (tick, key) in &index {
            assert_eq!(rows[key].tick, *tick, "{key:?}");
        }
        // Rooms of one commit share its tick.
        assert_eq!(rows[&room_key("c", "b")].tick, 2);
        assert_eq!(rows[&room_key("c", "a")].tick, 4);
    }

    fn channel_room(key: &str) -> &str {
        key.split_once('\0').map_or(key, |(_, room)| room)
    }

    #[test]
    fn eviction_drops_a_room_of_the_same_commit_from_the_cache() {
        // Room overhead alone exceeds the bound: each commit evicts down to nothing.
        let (mut writer, reports) = writer(limits(100, 100));
        writer.commit(vec![append("a", "e", 1), append("b", "e", 1)]);
        let report = reports.recv().unwrap();
        assert_eq!(report.evicted.len(), 2);
        assert!(writer.metas.get(&room_key("c", "a")).is_none());
        let (rows, index) = stored(&writer);
        assert!(rows.is_empty() && index.is_empty());
        assert_eq!(writer.bytes["c"], 0);
    }

    #[test]
    fn the_meta_cache_stays_bounded() {
        let mut cache = MetaCache::default();
        let meta = RoomMeta {
            epoch: "e".into(),
            last: 1,
            lost: 0,
            bytes: 0,
            tick: 1,
        };
        for i in 0..3 * META_CACHE_ROOMS {
            cache.put(format!("c\0{i}").into(), meta.clone());
        }
        assert!(cache.young.len() + cache.old.len() <= 2 * META_CACHE_ROOMS);
        let newest = format!("c\0{}", 3 * META_CACHE_ROOMS - 1);
        assert!(cache.get(&newest).is_some());
        assert!(cache.get("c\x000").is_none());
    }

    /// Writes a store as schema version 1 did: JSON room rows, plus a table of another module.
    fn write_v1_store(path: &PathBuf) {
        const OTHER: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            txn.open_table(SCHEMA).unwrap().insert("version", 1).unwrap();
            let row = br#"{"epoch":"OldEpoch","last":7,"lost":2,"bytes":400,"tick":9}"#;
            txn.open_table(ROOMS).unwrap().insert("c\0r", row.as_slice()).unwrap();
            let raw = RawValue::from_string("\"hi\"".into()).unwrap();
            let record = encode_record(unix_now(), &raw, Some("n:x"), None);
            let mut messages = txn.open_table(MESSAGES).unwrap();
            messages.insert(("c\0r", 7), record.as_slice()).unwrap();
            txn.open_table(LRU).unwrap().insert(("c", 9, "c\0r"), ()).unwrap();
            txn.open_table(OTHER)
                .unwrap()
                .insert("alice", b"account".as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }

    #[tokio::test]
    async fn a_version_1_store_is_migrated_in_place() {
        let dir = TempDir::new();
        write_v1_store(&dir.store());
        let store = Store::open(options(Some(dir.store())), &[limits(10, 1 << 20)]).unwrap();
        store.start(Box::new(|_| {})).unwrap();
        let meta = store.room("c\0r").unwrap().unwrap();
        assert_eq!(
            (&*meta.epoch, meta.last, meta.lost, meta.bytes, meta.tick),
            ("OldEpoch", 7, 2, 400, 9)
        );
        assert_eq!(store.latest("c\0r", 10).unwrap()[0].offset, 7);
        // The next append continues the room and keeps its byte count.
        let raw = RawValue::from_string("1".into()).unwrap();
        store
            .append(Append {
                room_key: "c\0r".into(),
                epoch: "OldEpoch".into(),
                offset: 8,
                lost: 2,
                value: encode_record(unix_now(), &raw, None, None),
                ack: None,
            })
            .unwrap();
        store.flush().await.unwrap();
        let after = store.room("c\0r").unwrap().unwrap();
        assert_eq!((after.last, &*after.epoch), (8, "OldEpoch"));
        assert!(after.bytes > 400);
        let db = store.database();
        let txn = db.begin_read().unwrap();
        let version = txn.open_table(SCHEMA).unwrap().get("version").unwrap().unwrap().value();
        assert_eq!(version, SCHEMA_VERSION);
        const OTHER: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
        let other = txn.open_table(OTHER).unwrap();
        assert_eq!(
            other.get("alice").unwrap().unwrap().value(),
            b"account",
            "other tables are kept"
        );
        let aside = std::fs::read_dir(&dir.0)
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().contains("unusable"));
        assert!(!aside, "nothing was set aside");
    }

    #[test]
    fn a_store_of_an_unknown_schema_version_is_set_aside() {
        let dir = TempDir::new();
        {
            let db = Database::create(dir.store()).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(SCHEMA).unwrap().insert("version", 99).unwrap();
            txn.commit().unwrap();
        }
        let db = open_database(&dir.store()).unwrap();
        assert_eq!(schema_of(&db).unwrap(), Some(SCHEMA_VERSION));
        let aside = std::fs::read_dir(&dir.0)
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| e.file_name().to_string_lossy().contains("unusable"));
        assert!(aside, "the old file is kept for inspection");
    }
}
