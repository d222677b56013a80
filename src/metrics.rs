//! Metric names and the Prometheus recorder behind `GET /metrics`.
//!
//! Everything that counts calls one of the small functions here, so the set of
//! metrics is listed in one place (and in `docs/operations.md`). PROTOCOL.md
//! §10 wants every metric present from startup, zeros included, with `# HELP`
//! and `# TYPE`: [`install`] describes each one and touches every series whose
//! labels are known in advance (each refusal reason, the usual HTTP statuses).
//!
//! The `process_*` metrics (resident memory, CPU seconds, descriptors, start
//! time) are read from `/proc/self` at each scrape and appended by [`render`];
//! they are standard Prometheus names, so the usual dashboards work.
//!
//! The recorder is process-wide; tests that run several servers in one process
//! share it.

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
/// When the recorder was installed; the start time if `/proc` cannot tell.
static INSTALLED_AT: OnceLock<SystemTime> = OnceLock::new();

/// Fan-out time buckets, in seconds: 1 µs to 100 ms.
const FANOUT_BUCKETS: &[f64] = &[1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 1e-1];
/// Store commit time buckets, in seconds: 100 µs to 10 s.
const COMMIT_BUCKETS: &[f64] = &[1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1.0, 10.0];

/// The `limit` label of `rookery_refusals_total`: one value per limit of PROTOCOL.md §10.
pub mod reason {
    /// A WebSocket message or REST/`/auth` body over `max_message_bytes`.
    pub const TOO_LARGE: &str = "too_large";
    /// JSON nested deeper than the limit.
    pub const TOO_DEEP: &str = "too_deep";
    /// Handshake `client_data` over its limit.
    pub const CLIENT_DATA_TOO_LARGE: &str = "client_data_too_large";
    /// Publish or subscribe/authenticate rate exceeded.
    pub const RATE_LIMIT: &str = "rate_limit";
    /// A room name that is empty, too long or has control characters.
    pub const INVALID_ROOM: &str = "invalid_room";
    /// More than `max_subscriptions` rooms on one connection.
    pub const TOO_MANY_SUBSCRIPTIONS: &str = "too_many_subscriptions";
    /// A request the connection's permissions do not allow.
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// A connection closed because its outbound queue was full (also counted
    /// in `rookery_slow_consumer_disconnects_total`).
    pub const SLOW_CONSUMER: &str = "slow_consumer";
    /// A WebSocket connection that did not handshake in time.
    pub const HANDSHAKE_TIMEOUT: &str = "handshake_timeout";
    /// An HTTP request whose headers and body did not arrive in time (`408`).
    pub const HTTP_DEADLINE: &str = "http_deadline";
    /// A connection refused because the server holds `max_http_connections` (`503`).
    pub const HTTP_CONNECTIONS: &str = "http_connections";
    /// A connection refused because its IP holds `max_http_connections_per_ip` (`429`).
    pub const HTTP_CONNECTIONS_PER_IP: &str = "http_connections_per_ip";
    /// A WebSocket upgrade refused by `max_connections_per_ip` (`429`).
    pub const WEBSOCKET_CONNECTIONS_PER_IP: &str = "websocket_connections_per_ip";
    /// A publish or subscribe the engine could not serve (store failure, Redis unreachable).
    pub const UNAVAILABLE: &str = "unavailable";

    /// Every reason, so that each series exists from startup.
    pub(crate) const ALL: &[&str] = &[
        TOO_LARGE,
        TOO_DEEP,
        CLIENT_DATA_TOO_LARGE,
        RATE_LIMIT,
        INVALID_ROOM,
        TOO_MANY_SUBSCRIPTIONS,
        UNAUTHORIZED,
        SLOW_CONSUMER,
        HANDSHAKE_TIMEOUT,
        HTTP_DEADLINE,
        HTTP_CONNECTIONS,
        HTTP_CONNECTIONS_PER_IP,
        WEBSOCKET_CONNECTIONS_PER_IP,
        UNAVAILABLE,
    ];
}

/// HTTP statuses the server answers with, registered at startup; others appear when first sent.
const HTTP_STATUSES: &[u16] = &[101, 200, 400, 401, 403, 404, 405, 408, 413, 415, 422, 429, 500, 503];
const HANDSHAKE_RESULTS: &[&str] = &["ok", "unknown_channel"];
const AUTHENTICATION_RESULTS: &[&str] = &[
    "ok",
    "not_three_parts",
    "invalid",
    "algorithm",
    "signature",
    "expired",
    "channel_mismatch",
    "client_mismatch",
];
const PUBLISH_PATHS: &[&str] = &["websocket", "rest"];

/// Installs the recorder once and registers every metric; later calls return
/// the same handle. `None` when another recorder was installed first (metrics
/// then go there).
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            INSTALLED_AT.get_or_init(SystemTime::now);
            let handle = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full("rookery_fanout_seconds".into()), FANOUT_BUCKETS)
                .ok()?
                .set_buckets_for_metric(Matcher::Full("rookery_store_commit_seconds".into()), COMMIT_BUCKETS)
                .ok()?
                .install_recorder()
                .ok()?;
            register_all();
            Some(handle)
        })
        .as_ref()
}

/// Describes every metric and creates each series with a known label set at zero.
fn register_all() {
    let gauges: &[(&'static str, &'static str)] = &[
        ("rookery_connections", "Open WebSocket sessions (handshaken or not)."),
        (
            "rookery_authenticated_connections",
            "WebSocket sessions with a valid authentication.",
        ),
        (
            "rookery_rooms",
            "Rooms held in memory (with subscribers or stored history).",
        ),
        ("rookery_subscriptions", "(connection, room) subscriptions."),
        (
            "rookery_http_connections",
            "Open TCP connections (HTTP and WebSocket), counted against max_http_connections.",
        ),
        (
            "rookery_store_up",
            "1 while the message store works, 0 after a failed write until one succeeds.",
        ),
        ("rookery_engine_rooms", "Rooms held by the message engine."),
    ];
    for (name, help) in gauges {
        describe_gauge!(*name, *help);
        gauge!(*name).increment(0.0);
    }
    // Without a store there is nothing that can fail: up.
    gauge!("rookery_store_up").set(1.0);

    let counters: &[(&'static str, &'static str)] = &[
        ("rookery_tokens_minted_total", "Tokens issued by POST /auth."),
        (
            "rookery_frames_delivered_total",
            "Messages delivered: publish frames queued to subscribers (fan-out volume).",
        ),
        (
            "rookery_slow_consumer_disconnects_total",
            "Connections dropped because their outbound queue was full.",
        ),
        (
            "rookery_accept_errors_total",
            "Failed accept calls (for example out of file descriptors).",
        ),
        ("rookery_store_commits_total", "Store commits (batches written)."),
        (
            "rookery_store_committed_messages_total",
            "Messages written by store commits.",
        ),
        ("rookery_store_errors_total", "Failed store operations."),
        (
            "rookery_history_evicted_rooms_total",
            "Rooms whose stored history was dropped to keep a channel under its byte bound.",
        ),
        (
            "rookery_cluster_gap_fills_total",
            "Offset gaps in a room's Redis pub/sub delivery filled from the room's stream (cluster mode).",
        ),
        (
            "rookery_cluster_resyncs_total",
            "Offset gaps the room's stream could no longer fill: the room's local subscribers were dropped to resync (cluster mode).",
        ),
    ];
    for (name, help) in counters {
        describe_counter!(*name, *help);
        counter!(*name).increment(0);
    }
    let labelled: &[(&'static str, &'static str, &'static str, &[&'static str])] = &[
        (
            "rookery_handshakes_total",
            "Handshakes answered, by result.",
            "result",
            HANDSHAKE_RESULTS,
        ),
        (
            "rookery_authentications_total",
            "Socket authenticate requests, by result.",
            "result",
            AUTHENTICATION_RESULTS,
        ),
        (
            "rookery_messages_published_total",
            "Messages accepted for delivery (one per room for multi-room REST publishes).",
            "via",
            PUBLISH_PATHS,
        ),
        (
            "rookery_refusals_total",
            "Requests, messages and connections refused, by the limit they hit.",
            "limit",
            reason::ALL,
        ),
    ];
    for (name, help, label, values) in labelled {
        describe_counter!(*name, *help);
        for value in *values {
            counter!(*name, *label => *value).increment(0);
        }
    }
    describe_counter!("rookery_http_responses_total", "HTTP responses sent, by status.");
    for status in HTTP_STATUSES {
        counter!("rookery_http_responses_total", "status" => status.to_string()).increment(0);
    }

    describe_histogram!(
        "rookery_fanout_seconds",
        metrics::Unit::Seconds,
        "Time to hand one message to every subscriber of its room."
    );
    describe_histogram!(
        "rookery_store_commit_seconds",
        metrics::Unit::Seconds,
        "Time one store commit took."
    );
    // Touching a histogram registers it; with no samples it renders zero counts.
    let _ = histogram!("rookery_fanout_seconds");
    let _ = histogram!("rookery_store_commit_seconds");
}

/// The Prometheus text exposition of every metric, process metrics included.
pub fn render() -> String {
    let mut text = install().map(PrometheusHandle::render).unwrap_or_default();
    render_process(&mut text, &ProcessStats::read());
    text
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
/// One refusal; `reason` is one of [`reason`]'s constants.
pub fn refused(reason: &'static str) {
    counter!("rookery_refusals_total", "limit" => reason).increment(1);
}
pub fn slow_consumer_disconnect() {
    counter!("rookery_slow_consumer_disconnects_total").increment(1);
    refused(reason::SLOW_CONSUMER);
}
/// One publish's fan-out: frames queued and the time it took.
pub fn fanout(delivered: usize, elapsed: Duration) {
    counter!("rookery_frames_delivered_total").increment(delivered as u64);
    histogram!("rookery_fanout_seconds").record(elapsed.as_secs_f64());
}
/// One HTTP response sent with `status`.
pub fn http_response(status: u16) {
    counter!("rookery_http_responses_total", "status" => status.to_string()).increment(1);
}
pub(crate) fn http_connection_opened() {
    gauge!("rookery_http_connections").increment(1.0);
}
pub(crate) fn http_connection_closed() {
    gauge!("rookery_http_connections").decrement(1.0);
}
pub(crate) fn accept_error() {
    counter!("rookery_accept_errors_total").increment(1);
}
/// Whether the message store works (`rookery_store_up`).
pub fn store_up(up: bool) {
    gauge!("rookery_store_up").set(if up { 1.0 } else { 0.0 });
}
/// One successful store commit of `messages` messages that took `latency`.
pub fn store_commit(latency: Duration, messages: usize) {
    counter!("rookery_store_commits_total").increment(1);
    counter!("rookery_store_committed_messages_total").increment(messages as u64);
    histogram!("rookery_store_commit_seconds").record(latency.as_secs_f64());
}
/// One failed store operation (does not change `rookery_store_up` by itself).
pub fn store_error() {
    counter!("rookery_store_errors_total").increment(1);
}
/// `rooms` rooms lost their stored history to the per-channel byte bound.
pub fn history_evicted_rooms(rooms: usize) {
    counter!("rookery_history_evicted_rooms_total").increment(rooms as u64);
}
/// The cluster engine filled a gap in a room's pub/sub delivery from its stream.
pub(crate) fn cluster_gap_filled() {
    counter!("rookery_cluster_gap_fills_total").increment(1);
}
/// The cluster engine could not fill a gap and dropped a room's local subscribers.
pub(crate) fn cluster_resync() {
    counter!("rookery_cluster_resyncs_total").increment(1);
}
/// Rooms held by the engine changed by `delta`.
pub fn engine_rooms(delta: f64) {
    gauge!("rookery_engine_rooms").increment(delta);
}

/// What `/proc/self` says about this process; `None` where it cannot be read
/// (not Linux, or a restricted `/proc`), and then the metric is left out.
#[derive(Debug, Default, PartialEq)]
struct ProcessStats {
    resident_bytes: Option<u64>,
    virtual_bytes: Option<u64>,
    cpu_seconds: Option<f64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
    start_time_seconds: Option<f64>,
}

/// Clock ticks per second of `/proc/<pid>/stat` times. It is `sysconf(_SC_CLK_TCK)`,
/// which is 100 on every Linux architecture in use (USER_HZ); reading it would need FFI.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

impl ProcessStats {
    fn read() -> ProcessStats {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let (cpu_seconds, start_ticks) = parse_stat(&stat).unzip();
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| parse_boot_time(&text));
        let start_time_seconds = match (start_ticks, boot_time) {
            (Some(ticks), Some(boot)) => Some(boot as f64 + ticks / CLOCK_TICKS_PER_SECOND),
            _ => INSTALLED_AT
                .get()
                .and_then(|at| at.duration_since(UNIX_EPOCH).ok())
                .map(|since| since.as_secs_f64()),
        };
        ProcessStats {
            resident_bytes: status_kib(&status, "VmRSS:").map(|kib| kib * 1024),
            virtual_bytes: status_kib(&status, "VmSize:").map(|kib| kib * 1024),
            cpu_seconds,
            open_fds: std::fs::read_dir("/proc/self/fd").ok().map(|dir| dir.count() as u64),
            max_fds: std::fs::read_to_string("/proc/self/limits")
                .ok()
                .and_then(|text| parse_max_fds(&text)),
            start_time_seconds,
        }
    }
}

/// A `Name:   123 kB` line of `/proc/self/status`, in KiB.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// CPU seconds (user + system) and the start time in ticks after boot, from
/// `/proc/self/stat`. The command name (field 2) may contain spaces and
/// parentheses, so fields are counted after its closing parenthesis.
fn parse_stat(stat: &str) -> Option<(f64, f64)> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    // After the name, field 3 (state) is index 0: utime is field 14, stime 15, starttime 22.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let cpu = (field(14)? + field(15)?) / CLOCK_TICKS_PER_SECOND;
    Some((cpu, field(22)?))
}

/// `btime` of `/proc/stat`: boot time in Unix seconds.
fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn parse_max_fds(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

fn render_process(out: &mut String, stats: &ProcessStats) {
    let metrics: [(&str, &str, &str, Option<f64>); 6] = [
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            stats.resident_bytes.map(|v| v as f64),
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            stats.virtual_bytes.map(|v| v as f64),
        ),
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            stats.cpu_seconds,
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            stats.open_fds.map(|v| v as f64),
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            stats.max_fds.map(|v| v as f64),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            stats.start_time_seconds,
        ),
    ];
    for (name, kind, help, value) in metrics {
        if let Some(value) = value {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        // A command name with spaces and a parenthesis must not shift the fields.
        let stat = "4242 (rook ery) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 123456 \
                    1000000 2000 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        assert_eq!(parse_stat(stat), Some((3.0, 123456.0)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
        let status = "Name:\trookery\nVmSize:\t  123456 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(2048));
        assert_eq!(status_kib(status, "VmHWM:"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_fds(limits), Some(1024));
    }

    #[test]
    fn this_process_has_stats_and_renders_them() {
        let stats = ProcessStats::read();
        assert!(stats.resident_bytes.unwrap() > 0);
        assert!(stats.open_fds.unwrap() > 0);
        assert!(stats.start_time_seconds.unwrap() > 1_600_000_000.0);
        let mut text = String::from("rookery_x 1");
        render_process(&mut text, &stats);
        assert!(
            text.starts_with("rookery_x 1\n# HELP process_resident_memory_bytes "),
            "{text}"
        );
        assert!(text.contains("# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total "));
    }
}
