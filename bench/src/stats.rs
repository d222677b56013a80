//! Latency histograms and the shared counters of one run.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;

/// Microsecond latency histogram shared by all tasks of a run.
///
/// Tasks record into a small local buffer ([`LocalLatency`]) and merge it here in batches, so the
/// lock is taken once per few hundred samples rather than once per delivery.
pub struct Latency {
    hist: Mutex<Histogram<u64>>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// A histogram from 1 µs to 100 s with three significant digits.
    pub fn new() -> Self {
        let hist = Histogram::new_with_bounds(1, 100_000_000, 3).expect("valid histogram bounds");
        Self { hist: Mutex::new(hist) }
    }

    fn merge(&self, samples: &[u64]) {
        let mut h = self.hist.lock().unwrap_or_else(|e| e.into_inner());
        for &s in samples {
            h.saturating_record(s.max(1));
        }
    }

    /// Adds every sample of `other` (a histogram of the same bounds) to this one.
    pub fn absorb(&self, other: &Latency) -> Result<(), hdrhistogram::AdditionError> {
        let o = other.hist.lock().unwrap_or_else(|e| e.into_inner());
        self.hist.lock().unwrap_or_else(|e| e.into_inner()).add(&*o)
    }

    /// Percentiles in microseconds as a JSON object, plus the sample count.
    pub fn to_json(&self) -> serde_json::Value {
        let h = self.hist.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::json!({
            "count": h.len(),
            "p50": h.value_at_quantile(0.50),
            "p90": h.value_at_quantile(0.90),
            "p99": h.value_at_quantile(0.99),
            "p999": h.value_at_quantile(0.999),
            "max": h.max(),
            "mean": (h.mean() * 10.0).round() / 10.0,
        })
    }

    /// One human-readable line of percentiles.
    pub fn summary(&self) -> String {
        let h = self.hist.lock().unwrap_or_else(|e| e.into_inner());
        if h.is_empty() {
            return "no samples".to_owned();
        }
        format!(
            "p50 {} µs, p90 {} µs, p99 {} µs, p99.9 {} µs, max {} µs ({} samples)",
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.90),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            h.len()
        )
    }
}

/// A task-local batch of latency samples that flushes into a shared [`Latency`].
pub struct LocalLatency<'a> {
    shared: &'a Latency,
    buf: Vec<u64>,
}

impl<'a> LocalLatency<'a> {
    pub fn new(shared: &'a Latency) -> Self {
        Self {
            shared,
            buf: Vec::new(),
        }
    }

    /// Records one sample in microseconds.
    pub fn record(&mut self, micros: u64) {
        self.buf.push(micros);
        if self.buf.len() >= 512 {
            self.flush();
        }
    }

    /// Merges buffered samples into the shared histogram.
    pub fn flush(&mut self) {
        if !self.buf.is_empty() {
            self.shared.merge(&self.buf);
            self.buf.clear();
        }
    }
}

impl Drop for LocalLatency<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Counters shared by the tasks of one run.
#[derive(Default)]
pub struct Counters {
    /// Messages handed to the socket by publishers.
    pub published: AtomicU64,
    /// Deliveries the server should make: each publish times the room's subscriber count.
    pub expected: AtomicU64,
    /// Deliveries received.
    pub delivered: AtomicU64,
    /// Deliveries whose sequence number was not above the last one seen from that publisher.
    pub out_of_order: AtomicU64,
    /// Connections that failed to set up or ended early.
    pub errors: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Nanoseconds since the first call in this process: the clock carried in payloads.
pub fn now_ns() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let start = START.get_or_init(Instant::now);
    start.elapsed().as_nanos() as u64
}

/// Rounds to two decimals for tidy JSON.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
