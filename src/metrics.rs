//! Metric names and the Prometheus recorder behind `GET /metrics`.
//!
//! Everything that counts calls one of the small functions here, so the set of
//! metrics is listed in one place (and in the README). The recorder is
//! process-wide; tests that run several servers in one process share it.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Fan-out time buckets, in seconds: 1 µs to 100 ms.
const FANOUT_BUCKETS: &[f64] = &[1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 1e-1];

/// Installs the recorder once; later calls return the same handle. `None` when
/// another recorder was installed first (metrics then go there).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full("rookery_fanout_seconds".into()),
                    FANOUT_BUCKETS,
                )
                .ok()?
                .install_recorder()
                .ok()
        })
        .as_ref()
}

/// The Prometheus text exposition of every metric.
pub fn render() -> String {
    install().map(PrometheusHandle::render).unwrap_or_default()
}

pub fn connection_opened() {
    gauge!("rookery_connections").increment(1.0);
}
pub fn connection_closed() {
    gauge!("rookery_connections").decrement(1.0);
}
pub fn authenticated_changed(delta: f64) {
    gauge!("rookery_authenticated_connections").increment(delta);
}
pub fn rooms_changed(delta: f64) {
    gauge!("rookery_rooms").increment(delta);
}
pub fn subscriptions_changed(delta: f64) {
    gauge!("rookery_subscriptions").increment(delta);
}
pub fn handshake(result: &'static str) {
    counter!("rookery_handshakes_total", "result" => result).increment(1);
}
pub fn authentication(result: &'static str) {
    counter!("rookery_authentications_total", "result" => result).increment(1);
}
pub fn token_minted() {
    counter!("rookery_tokens_minted_total").increment(1);
}
pub fn published(via: &'static str) {
    counter!("rookery_messages_published_total", "via" => via).increment(1);
}
pub fn refused(reason: &'static str) {
    counter!("rookery_messages_refused_total", "reason" => reason).increment(1);
}
pub fn slow_consumer_disconnect() {
    counter!("rookery_slow_consumer_disconnects_total").increment(1);
}
/// One publish's fan-out: frames queued and the time it took.
pub fn fanout(delivered: usize, elapsed: Duration) {
    counter!("rookery_frames_delivered_total").increment(delivered as u64);
    histogram!("rookery_fanout_seconds").record(elapsed.as_secs_f64());
}

/// Rooms whose engine logs are in memory (they follow subscribers, not history).
pub fn engine_rooms_changed(delta: f64) {
    metrics::gauge!("rookery_engine_rooms").increment(delta);
}

/// One group commit of `messages` appends took `elapsed`.
pub fn store_committed(messages: usize, elapsed: std::time::Duration) {
    metrics::counter!("rookery_store_commits_total").increment(1);
    metrics::counter!("rookery_store_appends_total").increment(messages as u64);
    metrics::histogram!("rookery_store_commit_seconds").record(elapsed.as_secs_f64());
}

/// A store operation failed.
pub fn store_failed() {
    metrics::counter!("rookery_store_errors_total").increment(1);
}

/// Rooms whose stored history was dropped by the history byte bound.
pub fn history_evicted(rooms: usize) {
    metrics::counter!("rookery_history_evicted_rooms_total").increment(rooms as u64);
}
