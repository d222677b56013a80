//! The history workload: N publisher threads hand appends to one writer thread, which
//! group-commits them (one durable commit per batch), assigns per-room offsets, optionally
//! trims each room to its newest rows, while a reader thread samples "latest 100 of a room".
//! This is the shape Rookery's history writer would have: publishers never touch the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use hdrhistogram::Histogram;

use crate::store::{self, Append, Kind, Store};

/// How many rows "latest" reads ask for.
pub(crate) const LATEST: usize = 100;

/// When a run ends.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Until {
    /// Stop after this long (throughput runs).
    Elapsed(Duration),
    /// Stop after this many appends are committed (trim/space runs).
    Appends(u64),
}

/// One run's parameters.
#[derive(Clone, Debug)]
pub(crate) struct Spec {
    pub(crate) kind: Kind,
    pub(crate) rooms: usize,
    pub(crate) value_size: usize,
    pub(crate) batch: usize,
    pub(crate) publishers: usize,
    pub(crate) until: Until,
    /// Rows written per room before measuring, so reads have history to scan.
    pub(crate) prefill_per_room: usize,
    /// Keep only this many newest rows per room, deleting the oldest at append time.
    pub(crate) keep: Option<u64>,
    /// Pause between two reads of the reader thread (reads are rare next to appends).
    pub(crate) read_every: Duration,
}

/// What a run measured. Latencies are in microseconds.
pub(crate) struct Outcome {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) rooms: Vec<String>,
    pub(crate) appends: u64,
    pub(crate) commits: u64,
    pub(crate) elapsed: Duration,
    /// Duration of the commit call (build + write + fsync) per batch.
    pub(crate) commit_us: Histogram<u64>,
    pub(crate) read_us: Histogram<u64>,
    /// Rows the sampled reads returned, summed (to show how full the "latest 100" was).
    pub(crate) read_rows: u64,
    /// Logical clock after the last append: every value's timestamp is below it.
    pub(crate) clock: u64,
}

impl Outcome {
    pub(crate) fn appends_per_sec(&self) -> f64 {
        self.appends as f64 / self.elapsed.as_secs_f64()
    }
}

/// A message in flight from a publisher to the writer.
struct Msg {
    room: u32,
    /// 8 bytes reserved for the writer's timestamp, then the JSON body.
    value: Vec<u8>,
}

/// Room names as Rookery sees them: a few public rooms, or many private rooms whose names
/// (`private-` + 32 hex digits = 40 bytes) are near the length limit.
pub(crate) fn room_names(count: usize) -> Vec<String> {
    (0..count as u64)
        .map(|i| {
            if count <= 1000 {
                format!("observable-room-{i}")
            } else {
                format!("private-{:016x}{:016x}", splitmix(i), splitmix(!i))
            }
        })
        .collect()
}

/// A pool of distinct JSON message bodies of `size` bytes total (timestamp header included).
/// The text is pseudo-random so that fjall's LZ4 gets no easier a job than real chat text.
pub(crate) fn payloads(size: usize) -> Vec<Vec<u8>> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ";
    (0..32u64)
        .map(|n| {
            let mut rng = Rng(splitmix(n + 1));
            let head = format!(
                r#"{{"id":"{:016x}","clientId":"{:016x}","timestamp":{},"data":{{"text":""#,
                rng.next(),
                rng.next(),
                1_700_000_000 + n
            );
            let body_len = size.saturating_sub(8 + head.len() + 3);
            let mut value = vec![0u8; 8];
            value.extend_from_slice(head.as_bytes());
            value.extend((0..body_len).map(|_| ALPHABET[rng.below(ALPHABET.len())]));
            value.extend_from_slice(br#""}}"#);
            value
        })
        .collect()
}

/// Runs one spec against a fresh store in `dir`.
pub(crate) fn run(spec: &Spec, dir: &std::path::Path) -> Result<Outcome> {
    let store: Arc<dyn Store> = Arc::from(store::open(spec.kind, dir)?);
    let rooms = Arc::new(room_names(spec.rooms));
    let pool = Arc::new(payloads(spec.value_size));
    let mut writer = Writer::new(store.clone(), rooms.clone(), spec.keep);

    writer.prefill(spec.prefill_per_room, &pool)?;

    let stop = Arc::new(AtomicBool::new(false));
    // Room for a couple of full batches so publishers are never the bottleneck.
    let (tx, rx) = mpsc::sync_channel::<Msg>((spec.batch * 2).max(64));
    let publishers: Vec<_> = (0..spec.publishers)
        .map(|p| {
            let (tx, stop, pool) = (tx.clone(), stop.clone(), pool.clone());
            let rooms = spec.rooms;
            thread::spawn(move || {
                let mut rng = Rng(splitmix(1000 + p as u64));
                while !stop.load(Ordering::Relaxed) {
                    let msg = Msg {
                        room: rng.below(rooms) as u32,
                        value: pool[rng.below(pool.len())].clone(),
                    };
                    if tx.send(msg).is_err() {
                        break;
                    }
                }
            })
        })
        .collect();
    drop(tx);

    let reader = {
        let (store, rooms, stop) = (store.clone(), rooms.clone(), stop.clone());
        let every = spec.read_every;
        thread::spawn(move || -> Result<(Histogram<u64>, u64)> {
            let mut hist = histogram();
            let mut rng = Rng(splitmix(77));
            let mut rows = 0;
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(every);
                let room = &rooms[rng.below(rooms.len())];
                let start = Instant::now();
                rows += store.latest(room, LATEST)? as u64;
                record(&mut hist, start.elapsed());
            }
            Ok((hist, rows))
        })
    };

    let measured = writer.drain(rx, spec.batch, spec.until);
    stop.store(true, Ordering::Relaxed);
    for publisher in publishers {
        publisher.join().map_err(|_| anyhow!("publisher panicked"))?;
    }
    let (read_us, read_rows) = reader.join().map_err(|_| anyhow!("reader panicked"))??;
    let (appends, commits, elapsed) = measured?;

    Ok(Outcome {
        store,
        rooms: Arc::try_unwrap(rooms).unwrap_or_else(|shared| (*shared).clone()),
        appends,
        commits,
        elapsed,
        commit_us: writer.commit_us,
        read_us,
        read_rows,
        clock: writer.clock,
    })
}

/// The single writer: owns offsets, the logical clock and the batching.
struct Writer {
    store: Arc<dyn Store>,
    rooms: Arc<Vec<String>>,
    next_offset: Vec<u64>,
    keep: Option<u64>,
    clock: u64,
    commit_us: Histogram<u64>,
}

impl Writer {
    fn new(store: Arc<dyn Store>, rooms: Arc<Vec<String>>, keep: Option<u64>) -> Self {
        let next_offset = vec![0; rooms.len()];
        Self {
            store,
            rooms,
            next_offset,
            keep,
            clock: 0,
            commit_us: histogram(),
        }
    }

    /// Writes `per_room` rows to every room in big unmeasured batches.
    fn prefill(&mut self, per_room: usize, pool: &[Vec<u8>]) -> Result<()> {
        let mut pending = Vec::new();
        for _ in 0..per_room {
            for room in 0..self.rooms.len() as u32 {
                pending.push((room, pool[room as usize % pool.len()].clone()));
                if pending.len() == 1024 {
                    self.commit(&mut pending, false)?;
                }
            }
        }
        self.commit(&mut pending, false)
    }

    /// Receives and commits until `until`; returns (appends, commits, elapsed).
    fn drain(&mut self, rx: mpsc::Receiver<Msg>, batch: usize, until: Until) -> Result<(u64, u64, Duration)> {
        let start = Instant::now();
        let (mut appends, mut commits) = (0u64, 0u64);
        let mut pending = Vec::with_capacity(batch);
        loop {
            let limit = match until {
                Until::Elapsed(d) if start.elapsed() >= d => break,
                Until::Elapsed(_) => batch,
                Until::Appends(n) if appends >= n => break,
                Until::Appends(n) => batch.min((n - appends) as usize),
            };
            // Block for the first message, then take whatever else is already queued: a
            // batch is "up to `batch`", never a wait for stragglers.
            let first = match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(msg) => msg,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            pending.push((first.room, first.value));
            while pending.len() < limit {
                match rx.try_recv() {
                    Ok(msg) => {
                        pending.push((msg.room, msg.value));
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            appends += pending.len() as u64;
            commits += 1;
            self.commit(&mut pending, true)?;
        }
        Ok((appends, commits, start.elapsed()))
    }

    /// Assigns offsets and timestamps, adds trim deletes, and commits `pending` durably.
    fn commit(&mut self, pending: &mut Vec<(u32, Vec<u8>)>, measure: bool) -> Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let mut offsets = Vec::with_capacity(pending.len());
        let mut trims = Vec::new();
        for (room, value) in pending.iter_mut() {
            let room = *room as usize;
            let offset = self.next_offset[room];
            self.next_offset[room] += 1;
            value[..8].copy_from_slice(&self.clock.to_be_bytes());
            self.clock += 1;
            offsets.push(offset);
            if let Some(keep) = self.keep
                && offset >= keep
            {
                trims.push((self.rooms[room].as_str(), offset - keep));
            }
        }
        let rows: Vec<Append<'_>> = pending
            .iter()
            .zip(&offsets)
            .map(|((room, value), &offset)| Append {
                room: &self.rooms[*room as usize],
                offset,
                value,
            })
            .collect();
        let start = Instant::now();
        self.store.commit(&rows, &trims)?;
        let took = start.elapsed();
        drop(rows);
        if measure {
            record(&mut self.commit_us, took);
        }
        pending.clear();
        Ok(())
    }
}

pub(crate) fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 hour at 3 significant digits; `record` saturates above that.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap_or_else(|_| Histogram::new(3).expect("3 sigfig is valid"))
}

pub(crate) fn record(hist: &mut Histogram<u64>, elapsed: Duration) {
    hist.saturating_record(elapsed.as_micros().max(1) as u64);
}

/// splitmix64: a fixed, dependency-free seed scrambler (runs are reproducible).
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// xorshift64*: plenty for picking rooms and payloads.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
