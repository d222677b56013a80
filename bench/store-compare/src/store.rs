//! The two candidate stores behind one small trait, shaped like Rookery's history needs:
//! durable group-committed appends (plus trim deletes), "latest N of a room" reverse scans,
//! a per-room age sweep, and size/compaction probes.
//!
//! Key layout is the same logical key in both: `(room, offset)`, ordered by room then offset.
//! redb gets it as a native tuple key; fjall (bytes only) gets
//! `[room_len: u8][room bytes][offset: u64 big-endian]`, so a room's rows are one contiguous
//! prefix and a shorter room name can never be a prefix of a longer one's rows.
//! Every value starts with an 8-byte big-endian logical timestamp the age sweep reads.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};

/// Cache budget given to both stores (`--cache-mib`), the same for both so neither wins by
/// holding the whole data set in its cache while the other is capped (their defaults differ:
/// redb 1 GiB, fjall 32 MiB). Set once by `main` before any store opens.
static CACHE_BYTES: OnceLock<usize> = OnceLock::new();
const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

pub(crate) fn set_cache_bytes(bytes: usize) {
    // A second call (there is none) would keep the first value: harmless for a benchmark.
    let _ = CACHE_BYTES.set(bytes);
}

pub(crate) fn cache_bytes() -> usize {
    *CACHE_BYTES.get().unwrap_or(&DEFAULT_CACHE_BYTES)
}

/// One row of a batch.
pub(crate) struct Append<'a> {
    pub(crate) room: &'a str,
    pub(crate) offset: u64,
    pub(crate) value: &'a [u8],
}

/// Which store (and which configuration of it) a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Kind {
    /// redb 4.x, one write transaction with `Durability::Immediate` per batch.
    Redb,
    /// redb with `set_quick_repair(true)`: 2-phase commit + saved allocator state,
    /// which trades commit cost for near-instant open after a crash.
    RedbQr,
    /// fjall 3.x, one `WriteBatch` per batch committed with `PersistMode::SyncAll`.
    Fjall,
}

impl Kind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::Redb => "redb",
            Kind::RedbQr => "redb (quick_repair)",
            Kind::Fjall => "fjall",
        }
    }
}

/// The operations the benchmark drives. `&self` everywhere except compaction so the writer
/// and a concurrent reader can share one handle, as they would in the server.
pub(crate) trait Store: Send + Sync {
    /// Writes `rows` and deletes `trims` atomically, with one fsync, before returning.
    fn commit(&self, rows: &[Append<'_>], trims: &[(&str, u64)]) -> Result<()>;
    /// Reads the newest `n` rows of `room` (reverse range scan), copying the values out as a
    /// server would to send them; returns how many rows were found.
    fn latest(&self, room: &str, n: usize) -> Result<usize>;
    /// Deletes every row whose timestamp is below `cutoff`, scanning each room from its oldest
    /// row and stopping at the first young one (rows are appended in time order per room).
    /// One durable commit. Returns the number of rows deleted.
    fn sweep(&self, rooms: &[String], cutoff: u64) -> Result<u64>;
    /// Counts all rows (full scan where the store has no cheaper way).
    fn count(&self) -> Result<u64>;
    /// Runs the store's explicit space-reclaiming step, where it has one.
    fn compact(&mut self) -> Result<()>;
}

/// Opens (or creates) a store of `kind` under directory `dir`.
pub(crate) fn open(kind: Kind, dir: &Path) -> Result<Box<dyn Store>> {
    Ok(match kind {
        Kind::Redb => Box::new(RedbStore::open(dir, false)?),
        Kind::RedbQr => Box::new(RedbStore::open(dir, true)?),
        Kind::Fjall => Box::new(FjallStore::open(dir)?),
    })
}

/// Opens the store without wrapping the error, so the lock test can show the store's own
/// error text for a second open of the same directory.
pub(crate) fn open_error_text(kind: Kind, dir: &Path) -> String {
    match kind {
        Kind::Redb | Kind::RedbQr => match redb::Database::create(redb_file(dir)) {
            Ok(_) => "no error: second open succeeded".to_owned(),
            Err(e) => format!("redb::DatabaseError::{e:?}: \"{e}\""),
        },
        Kind::Fjall => match fjall::Database::builder(dir).open() {
            Ok(_) => "no error: second open succeeded".to_owned(),
            Err(e) => format!("fjall::Error::{e:?}: \"{e}\""),
        },
    }
}

fn redb_file(dir: &Path) -> PathBuf {
    dir.join("history.redb")
}

/// Reads the logical timestamp every value starts with.
pub(crate) fn timestamp(value: &[u8]) -> Result<u64> {
    let Some(head) = value.first_chunk::<8>() else {
        bail!("value shorter than its 8-byte timestamp header");
    };
    Ok(u64::from_be_bytes(*head))
}

// ---------------------------------------------------------------- redb

const HISTORY: redb::TableDefinition<(&str, u64), &[u8]> = redb::TableDefinition::new("history");

struct RedbStore {
    db: redb::Database,
    quick_repair: bool,
}

impl RedbStore {
    fn open(dir: &Path, quick_repair: bool) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        let db = redb::Database::builder()
            .set_cache_size(cache_bytes())
            .create(redb_file(dir))
            .context("redb open")?;
        // Create the table up front so readers never race its creation.
        let store = Self { db, quick_repair };
        let tx = store.begin_write()?;
        tx.open_table(HISTORY)?;
        tx.commit()?;
        Ok(store)
    }

    fn begin_write(&self) -> Result<redb::WriteTransaction> {
        let mut tx = self.db.begin_write()?;
        // Immediate is the default; set it anyway so the benchmark states what it measures.
        tx.set_durability(redb::Durability::Immediate)?;
        tx.set_quick_repair(self.quick_repair);
        Ok(tx)
    }
}

impl Store for RedbStore {
    fn commit(&self, rows: &[Append<'_>], trims: &[(&str, u64)]) -> Result<()> {
        let tx = self.begin_write()?;
        {
            let mut table = tx.open_table(HISTORY)?;
            for row in rows {
                table.insert((row.room, row.offset), row.value)?;
            }
            for &(room, offset) in trims {
                table.remove((room, offset))?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn latest(&self, room: &str, n: usize) -> Result<usize> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let table = tx.open_table(HISTORY)?;
        let mut found = 0;
        for row in table.range((room, 0)..=(room, u64::MAX))?.rev().take(n) {
            let (_key, value) = row?;
            std::hint::black_box(value.value().to_vec());
            found += 1;
        }
        Ok(found)
    }

    fn sweep(&self, rooms: &[String], cutoff: u64) -> Result<u64> {
        use redb::ReadableTable;
        let tx = self.begin_write()?;
        let mut deleted = 0;
        {
            let mut table = tx.open_table(HISTORY)?;
            let mut old = Vec::new();
            for room in rooms {
                old.clear();
                for row in table.range((room.as_str(), 0)..=(room.as_str(), u64::MAX))? {
                    let (key, value) = row?;
                    if timestamp(value.value())? >= cutoff {
                        break;
                    }
                    old.push(key.value().1);
                }
                for &offset in &old {
                    table.remove((room.as_str(), offset))?;
                }
                deleted += old.len() as u64;
            }
        }
        tx.commit()?;
        Ok(deleted)
    }

    fn count(&self) -> Result<u64> {
        use redb::{ReadableDatabase, ReadableTableMetadata};
        let tx = self.db.begin_read()?;
        Ok(tx.open_table(HISTORY)?.len()?)
    }

    fn compact(&mut self) -> Result<()> {
        // redb reuses freed pages but only gives them back to the file system here.
        while self.db.compact()? {}
        Ok(())
    }
}

// ---------------------------------------------------------------- fjall

struct FjallStore {
    db: fjall::Database,
    history: fjall::Keyspace,
}

impl FjallStore {
    fn open(dir: &Path) -> Result<Self> {
        let db = fjall::Database::builder(dir)
            .cache_size(cache_bytes() as u64)
            .open()
            .context("fjall open")?;
        let history = db.keyspace("history", fjall::KeyspaceCreateOptions::default)?;
        Ok(Self { db, history })
    }
}

fn fjall_prefix(room: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + room.len() + 8);
    // Room names are at most 40 bytes in this workload (Rookery caps them well below 255).
    key.push(u8::try_from(room.len()).unwrap_or(u8::MAX));
    key.extend_from_slice(room.as_bytes());
    key
}

fn fjall_key(room: &str, offset: u64) -> Vec<u8> {
    let mut key = fjall_prefix(room);
    key.extend_from_slice(&offset.to_be_bytes());
    key
}

impl Store for FjallStore {
    fn commit(&self, rows: &[Append<'_>], trims: &[(&str, u64)]) -> Result<()> {
        let mut batch = self.db.batch().durability(Some(fjall::PersistMode::SyncAll));
        for row in rows {
            batch.insert(&self.history, fjall_key(row.room, row.offset), row.value);
        }
        for &(room, offset) in trims {
            batch.remove(&self.history, fjall_key(room, offset));
        }
        batch.commit()?;
        Ok(())
    }

    fn latest(&self, room: &str, n: usize) -> Result<usize> {
        let mut found = 0;
        for guard in self.history.prefix(fjall_prefix(room)).rev().take(n) {
            std::hint::black_box(guard.value()?.to_vec());
            found += 1;
        }
        Ok(found)
    }

    fn sweep(&self, rooms: &[String], cutoff: u64) -> Result<u64> {
        let mut batch = self.db.batch().durability(Some(fjall::PersistMode::SyncAll));
        let mut deleted = 0;
        for room in rooms {
            for guard in self.history.prefix(fjall_prefix(room)) {
                let (key, value) = guard.into_inner()?;
                if timestamp(&value)? >= cutoff {
                    break;
                }
                batch.remove(&self.history, key);
                deleted += 1;
            }
        }
        batch.commit()?;
        Ok(deleted)
    }

    fn count(&self) -> Result<u64> {
        Ok(self.history.len()? as u64)
    }

    fn compact(&mut self) -> Result<()> {
        // Without this, tombstones and shadowed rows leave only through background compaction,
        // whenever its size triggers fire. `major_compact` is public but #[doc(hidden)].
        self.history.rotate_memtable_and_wait()?;
        // A major compaction quietly does nothing while a background one holds any table,
        // so let the background work settle first (bounded: this is a benchmark step).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while (self.db.active_compactions() > 0 || self.db.outstanding_flushes() > 0)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        self.history.major_compact()?;
        Ok(())
    }
}

/// Bytes the directory occupies on disk (allocated blocks, as `du` counts them; fjall
/// preallocates sparse journal files, so apparent lengths would overstate it), and how many of
/// them are fjall journal files (`*.jnl`).
pub(crate) fn disk_usage(dir: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut allocated = 0;
    let mut journal = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let (a, j) = disk_usage(&entry.path())?;
            allocated += a;
            journal += j;
        } else {
            let bytes = meta.blocks() * 512;
            allocated += bytes;
            if entry.path().extension().is_some_and(|ext| ext == "jnl") {
                journal += bytes;
            }
        }
    }
    Ok((allocated, journal))
}
