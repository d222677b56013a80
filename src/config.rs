//! Configuration: an optional TOML file plus CLI/env overrides → a validated [`Config`].
//!
//! With no file at all Rookery runs the *embedded default*: one development
//! channel whose id and secret are created once and kept in
//! `<data_dir>/dev-channel.toml`, so they survive restarts. Every limit of
//! PROTOCOL.md §10 is a named field of [`Limits`]. Nothing here does I/O after
//! startup.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ids::random_alphanumeric;
use crate::policy::{Policy, PolicyError, PolicySet};

/// Why the configuration was refused; names the file, the entry and the reason.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {file}: {reason}")]
    Read { file: PathBuf, reason: String },
    #[error("config {file}: {reason}")]
    Invalid { file: PathBuf, reason: String },
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// A channel secret; never printed by `Debug` so that it cannot leak into logs.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// When token expiry is checked (PROTOCOL.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ExpiryMode {
    /// Scaledrone behaviour: `exp` is checked only when the token is presented.
    #[default]
    OnAuthenticate,
    /// When `exp` (plus grace) passes, the connection loses its subscriptions.
    Enforce,
}

/// Limits and protection (PROTOCOL.md §10). All are per server.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest WebSocket message and REST body, in bytes.
    pub max_message_bytes: usize,
    /// Longest room name, in bytes.
    pub max_room_name_bytes: usize,
    /// Rooms one connection may be subscribed to at once.
    pub max_subscriptions: usize,
    /// Sustained publishes per second per connection.
    pub publish_rate_per_second: u32,
    /// Publishes a connection may make in a burst.
    pub publish_burst: u32,
    /// Frames queued for one connection before it counts as a slow consumer and is closed.
    pub outbox_frames: usize,
    /// Bytes queued for one connection (frames being written included) before it
    /// counts as a slow consumer and is closed.
    pub outbox_bytes: usize,
    /// Sustained subscribe, unsubscribe and authenticate requests per second per connection.
    pub control_rate_per_second: u32,
    /// Subscribe, unsubscribe and authenticate requests a connection may make in a burst.
    pub control_burst: u32,
    /// Longest handshake `client_data`, in bytes of compact JSON.
    pub max_client_data_bytes: usize,
    /// Deepest JSON nesting of a message or `client_data`. Checked before parsing;
    /// above about 126 serde_json's own limit refuses frames first (as malformed).
    pub max_json_depth: usize,
    /// Seconds a new connection has to complete its handshake.
    pub handshake_timeout_seconds: u64,
    /// Seconds between keep-alive pings; a connection silent for two intervals is closed.
    pub ping_interval_seconds: u64,
    /// WebSocket connections per source IP; 0 means unlimited.
    pub max_connections_per_ip: usize,
    /// Permission decisions cached per connection before the cache is reset.
    pub decision_cache_entries: usize,
    // HTTP and connection protection (PROTOCOL.md §10), kept together.
    /// Seconds an HTTP request's headers and body have to arrive in full; then 408 and close.
    pub http_request_timeout_seconds: u64,
    /// Open TCP connections (HTTP and WebSocket) the server accepts; more get 503. 0 = unlimited.
    pub max_http_connections: usize,
    /// Open TCP connections from one source IP; more get 429. 0 = unlimited.
    pub max_http_connections_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 * 1024,
            max_room_name_bytes: 256,
            max_subscriptions: 512,
            publish_rate_per_second: 100,
            publish_burst: 200,
            outbox_frames: 4096,
            outbox_bytes: 4 * 1024 * 1024,
            control_rate_per_second: 100,
            control_burst: 600,
            max_client_data_bytes: 1024,
            max_json_depth: 64,
            handshake_timeout_seconds: 10,
            ping_interval_seconds: 30,
            max_connections_per_ip: 0,
            decision_cache_entries: 1024,
            http_request_timeout_seconds: 10,
            max_http_connections: 10_000,
            max_http_connections_per_ip: 1_000,
        }
    }
}

// ---- Members (PROTOCOL.md §11): `registration`, `[accounts]`, and each channel's `guests`. ----

/// Whether `POST /register` creates accounts (`registration = "open" | "closed"`).
/// Operators can always add users with `rookery user add`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Registration {
    #[default]
    Open,
    Closed,
}

/// The `[accounts]` table: sessions, login throttling and password hashing.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountsConfig {
    /// Lifetime of a login session and its cookie, in seconds (30 days).
    pub session_lifetime_seconds: u64,
    /// Mark the session cookie `Secure`: set it when clients reach the server
    /// over HTTPS (behind a TLS-terminating proxy), never for plain HTTP.
    pub secure_cookies: bool,
    /// Failed logins per username within the window before `429`.
    pub login_failures_per_username: u32,
    /// Failed logins per source address (IPv6: per /64) within the window before `429`.
    pub login_failures_per_ip: u32,
    /// The throttling window, in seconds (15 minutes).
    pub login_failure_window_seconds: u64,
    /// Argon2id memory per hash, in KiB (OWASP: 19 MiB).
    pub argon2_memory_kib: u32,
    /// Argon2id passes over the memory (OWASP: 2).
    pub argon2_iterations: u32,
    /// Argon2id lanes (OWASP: 1).
    pub argon2_parallelism: u32,
}

impl Default for AccountsConfig {
    fn default() -> Self {
        let hash = crate::accounts::password::HashParams::default();
        AccountsConfig {
            session_lifetime_seconds: 30 * 24 * 3600,
            secure_cookies: false,
            login_failures_per_username: 5,
            login_failures_per_ip: 50,
            login_failure_window_seconds: 15 * 60,
            argon2_memory_kib: hash.memory_kib,
            argon2_iterations: hash.iterations,
            argon2_parallelism: hash.parallelism,
        }
    }
}

fn validate_accounts(accounts: &AccountsConfig) -> Result<(), String> {
    let positive = [
        ("session_lifetime_seconds", accounts.session_lifetime_seconds),
        (
            "login_failures_per_username",
            u64::from(accounts.login_failures_per_username),
        ),
        ("login_failures_per_ip", u64::from(accounts.login_failures_per_ip)),
        ("login_failure_window_seconds", accounts.login_failure_window_seconds),
    ];
    if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
        return Err(format!("{name} must be at least 1"));
    }
    crate::accounts::password::PasswordHasher::new(crate::accounts::password::HashParams {
        memory_kib: accounts.argon2_memory_kib,
        iterations: accounts.argon2_iterations,
        parallelism: accounts.argon2_parallelism,
    })
    .map(drop)
    .map_err(|e| e.to_string())
}

// ---- end of members settings ----

// ---- Group rooms (PROTOCOL.md §11.1): the `[groups]` table. ----

/// The `[groups]` table: how big groups may get.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupsConfig {
    /// Groups one user may belong to. Each is one rule in every token minted
    /// for the user, so this also bounds the token's size.
    pub max_groups_per_user: usize,
    /// Members of one group, its creator included.
    pub max_members_per_group: usize,
    /// Longest group title, in characters.
    pub max_title_chars: usize,
}

/// Above this many groups per user a token would approach the default
/// message size limit (one `permissions` key of about 100 bytes per group).
const MAX_GROUPS_PER_USER_CAP: usize = 256;

impl Default for GroupsConfig {
    fn default() -> Self {
        GroupsConfig {
            max_groups_per_user: 32,
            max_members_per_group: 100,
            max_title_chars: 64,
        }
    }
}

fn validate_groups(groups: &GroupsConfig) -> Result<(), String> {
    let positive = [
        ("max_groups_per_user", groups.max_groups_per_user),
        ("max_members_per_group", groups.max_members_per_group),
        ("max_title_chars", groups.max_title_chars),
    ];
    if let Some((name, _)) = positive.iter().find(|(_, value)| *value == 0) {
        return Err(format!("{name} must be at least 1"));
    }
    if groups.max_groups_per_user > MAX_GROUPS_PER_USER_CAP {
        return Err(format!(
            "max_groups_per_user must be at most {MAX_GROUPS_PER_USER_CAP}: tokens carry one rule per group"
        ));
    }
    Ok(())
}

// ---- end of group settings ----

/// One channel: an id, its secret and its rules.
#[derive(Debug, Clone)]
pub struct ChannelConfig {
    pub id: String,
    pub secret: Secret,
    pub require_auth: bool,
    pub policy: Arc<Policy>,
    /// Lifetime of tokens minted for this channel (defaults to the policy's).
    pub token_ttl_seconds: u64,
    /// Messages kept per room.
    pub history_size: usize,
    /// Oldest message kept, in seconds.
    pub history_max_age_seconds: u64,
    /// Bound on the bytes of stored history of the whole channel; beyond it the
    /// least recently used rooms' history is dropped first.
    pub history_max_bytes: u64,
    pub expiry: ExpiryMode,
    /// Seconds after `exp` before an enforced expiry takes effect.
    pub expiry_grace_seconds: u64,
    /// Seconds of clock skew tolerated when checking `exp`.
    pub jwt_leeway_seconds: u64,
    /// Whether `POST /auth` mints guest tokens without a login session (§11).
    pub guests: bool,
}

/// The validated configuration the server runs with.
#[derive(Debug, Clone)]
pub struct Config {
    /// The wall clock token checks use; tests replace it to move time.
    pub clock: crate::clock::Clock,
    pub listen: SocketAddr,
    pub static_dir: PathBuf,
    pub data_dir: PathBuf,
    /// Prefix of client ids minted by this node.
    pub node_id: String,
    /// The channel `POST /auth` mints tokens for.
    pub auth_channel: String,
    /// Accepted `Origin` headers for WebSocket upgrades; empty accepts all.
    pub allowed_origins: Vec<String>,
    /// Seconds graceful shutdown waits for sessions and requests to end.
    pub shutdown_timeout_seconds: u64,
    pub limits: Limits,
    /// Where history (and later accounts) is kept, and how it is committed.
    pub store: StoreConfig,
    pub channels: Vec<ChannelConfig>,
    pub policies: PolicySet,
    /// Where the development channel's credentials were written, when the embedded default is in use.
    pub dev_channel_file: Option<PathBuf>,
    pub registration: Registration,
    pub accounts: AccountsConfig,
    /// Several nodes through Redis (PROTOCOL.md §13); off without `redis_url`.
    pub cluster: ClusterConfig,
    pub groups: GroupsConfig,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    listen: Option<SocketAddr>,
    static_dir: Option<PathBuf>,
    policies_dir: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    node_id: Option<String>,
    auth_channel: Option<String>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    shutdown_timeout_seconds: Option<u64>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    history_store: HistoryStore,
    #[serde(default)]
    store: StoreSettings,
    #[serde(default, rename = "channel")]
    channels: Vec<ChannelEntry>,
    #[serde(default)]
    registration: Registration,
    #[serde(default)]
    accounts: AccountsConfig,
    #[serde(default)]
    cluster: ClusterSection,
    #[serde(default)]
    groups: GroupsConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelEntry {
    id: String,
    secret: Option<Secret>,
    /// Name of an environment variable holding the secret.
    secret_env: Option<String>,
    #[serde(default = "yes")]
    require_auth: bool,
    #[serde(default = "default_policy_name")]
    policy: String,
    token_ttl_seconds: Option<u64>,
    #[serde(default = "default_history_size")]
    history_size: usize,
    #[serde(default = "default_history_max_age")]
    history_max_age_seconds: u64,
    #[serde(default = "default_history_max_bytes")]
    history_max_bytes: u64,
    #[serde(default)]
    expiry: ExpiryMode,
    #[serde(default)]
    expiry_grace_seconds: u64,
    #[serde(default)]
    jwt_leeway_seconds: u64,
    #[serde(default = "yes")]
    guests: bool,
}

fn yes() -> bool {
    true
}
fn default_policy_name() -> String {
    "default".into()
}
fn default_history_size() -> usize {
    100
}
fn default_history_max_age() -> u64 {
    30 * 24 * 3600
}
fn default_history_max_bytes() -> u64 {
    64 * 1024 * 1024
}

/// Where message history lives (`history_store` in the config file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryStore {
    /// The embedded durable store, `<data_dir>/store.redb`.
    #[default]
    Disk,
    /// The same store kept in memory: nothing survives a restart.
    Memory,
}

/// The `[store]` section: how appends are committed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// A commit waits at most this long for more appends to share its fsync.
    pub commit_wait_ms: u64,
    /// A commit takes at most this many appends.
    pub commit_max_messages: usize,
    /// `false` skips fsync: faster, but a power cut (not a crash) may lose
    /// acknowledged messages.
    pub fsync: bool,
    /// How often expired messages are pruned from the store.
    pub sweep_interval_seconds: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        StoreSettings {
            commit_wait_ms: 2,
            commit_max_messages: 1024,
            fsync: true,
            sweep_interval_seconds: 60,
        }
    }
}

/// The store as configured: its kind, its file and its commit settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub kind: HistoryStore,
    /// The store's file (unused for [`HistoryStore::Memory`]).
    pub path: PathBuf,
    pub settings: StoreSettings,
}

/// The `[cluster]` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ClusterSection {
    redis_url: Option<Secret>,
    node_lease_seconds: u64,
}

impl Default for ClusterSection {
    fn default() -> Self {
        ClusterSection {
            redis_url: None,
            node_lease_seconds: 15,
        }
    }
}

/// The environment variable that names the cluster's Redis (wins over the file).
pub const REDIS_URL_ENV: &str = "ROOKERY_REDIS_URL";

/// Several nodes as one deployment (docs/cluster.md).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://[user:password@]host:port[/db]`; a secret, since it may carry a password.
    pub redis_url: Option<Secret>,
    /// A node that has not renewed its lease for this long is dead: its members leave.
    pub node_lease_seconds: u64,
}

impl ClusterSection {
    fn resolve(self) -> Result<ClusterConfig, String> {
        let from_env = std::env::var(REDIS_URL_ENV).ok().filter(|url| !url.is_empty());
        let redis_url = from_env.map(Secret::new).or(self.redis_url);
        if let Some(url) = &redis_url
            && !(url.expose().starts_with("redis://") || url.expose().starts_with("rediss://"))
        {
            return Err("[cluster]: redis_url must start with redis://".into());
        }
        if self.node_lease_seconds == 0 {
            return Err("[cluster]: node_lease_seconds must be at least 1".into());
        }
        Ok(ClusterConfig {
            redis_url,
            node_lease_seconds: self.node_lease_seconds,
        })
    }
}

/// The development channel's credentials as kept on disk.
#[derive(Debug, Deserialize, Serialize)]
struct DevChannel {
    id: String,
    secret: Secret,
}

/// Overrides from the command line or environment; they win over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub static_dir: Option<PathBuf>,
    pub policies_dir: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    /// Overrides `history_store` (tests run many servers without disk state).
    pub history_store: Option<HistoryStore>,
    /// Write nothing (`rookery check`): a development channel that does not
    /// exist yet is made up in memory instead of being created on disk.
    pub read_only: bool,
}

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

impl Config {
    /// Loads `file` (or the embedded default when `None`), applies overrides and validates everything.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let (raw, origin) = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                    file: path.to_owned(),
                    reason: e.to_string(),
                })?;
                let raw: ConfigFile = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
                    file: path.to_owned(),
                    reason: e.to_string(),
                })?;
                (raw, path.to_owned())
            }
            None => (ConfigFile::default(), PathBuf::from("<embedded default>")),
        };
        let invalid = |reason: String| ConfigError::Invalid {
            file: origin.clone(),
            reason,
        };

        let policies_dir = overrides
            .policies_dir
            .clone()
            .or(raw.policies_dir)
            .unwrap_or_else(|| "policies".into());
        let policies = PolicySet::load_dir(&policies_dir)?;
        let data_dir = overrides
            .data_dir
            .clone()
            .or(raw.data_dir)
            .unwrap_or_else(|| "data".into());
        let limits = raw.limits;
        validate_limits(&limits).map_err(|reason| invalid(format!("[limits]: {reason}")))?;
        if raw.store.commit_max_messages == 0 || raw.store.sweep_interval_seconds == 0 {
            return Err(invalid(
                "[store]: commit_max_messages and sweep_interval_seconds must be at least 1".into(),
            ));
        }
        let store = StoreConfig {
            kind: overrides.history_store.unwrap_or(raw.history_store),
            path: data_dir.join("store.redb"),
            settings: raw.store,
        };
        validate_accounts(&raw.accounts).map_err(|reason| invalid(format!("[accounts]: {reason}")))?;
        validate_groups(&raw.groups).map_err(|reason| invalid(format!("[groups]: {reason}")))?;

        let cluster = raw.cluster.resolve().map_err(&invalid)?;
        if cluster.redis_url.is_some() && raw.channels.is_empty() {
            // Each node would invent its own development channel: nodes that
            // share no channel id are no deployment.
            return Err(invalid(
                "[cluster] needs [[channel]] tables, the same on every node (the development channel is one node's)"
                    .into(),
            ));
        }
        let mut dev_channel_file = None;
        let mut channels = Vec::with_capacity(raw.channels.len().max(1));
        if raw.channels.is_empty() {
            let (dev, path) = load_or_create_dev_channel(&data_dir, overrides.read_only).map_err(&invalid)?;
            // The chat page's policy (members and guests, PROTOCOL.md §11); a
            // policies directory without it still runs the tutorial's.
            let policy = policies
                .get("chat")
                .or_else(|| policies.get("default"))
                .ok_or_else(|| {
                    invalid(format!(
                        "the development channel needs {0}/chat.toml or {0}/default.toml",
                        policies_dir.display()
                    ))
                })?;
            channels.push(ChannelConfig {
                id: dev.id,
                secret: dev.secret,
                require_auth: true,
                token_ttl_seconds: policy.ttl_seconds,
                policy,
                history_size: default_history_size(),
                history_max_age_seconds: default_history_max_age(),
                history_max_bytes: default_history_max_bytes(),
                expiry: ExpiryMode::OnAuthenticate,
                expiry_grace_seconds: 0,
                jwt_leeway_seconds: 0,
                guests: true,
            });
            dev_channel_file = Some(path);
        }
        for entry in raw.channels {
            let channel = resolve_channel(entry, &policies).map_err(&invalid)?;
            if channels.iter().any(|c: &ChannelConfig| c.id == channel.id) {
                return Err(invalid(format!("channel {:?} is defined twice", channel.id)));
            }
            channels.push(channel);
        }
        let auth_channel = raw.auth_channel.unwrap_or_else(|| channels[0].id.clone());
        if !channels.iter().any(|c| c.id == auth_channel) {
            return Err(invalid(format!(
                "auth_channel {auth_channel:?} is not a configured channel"
            )));
        }
        let node_id = raw.node_id.unwrap_or_else(|| random_alphanumeric(4));
        if node_id.is_empty() || !node_id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(invalid(format!(
                "node_id {node_id:?} must be non-empty and alphanumeric"
            )));
        }
        let listen = match overrides.listen.or(raw.listen) {
            Some(listen) => listen,
            None => DEFAULT_LISTEN
                .parse()
                .map_err(|_| invalid("bad default listen".into()))?,
        };
        Ok(Config {
            listen,
            static_dir: overrides
                .static_dir
                .clone()
                .or(raw.static_dir)
                .unwrap_or_else(|| "static".into()),
            data_dir,
            node_id,
            auth_channel,
            allowed_origins: raw.allowed_origins,
            shutdown_timeout_seconds: raw.shutdown_timeout_seconds.unwrap_or(10),
            limits,
            store,
            channels,
            policies,
            dev_channel_file,
            clock: crate::clock::Clock::default(),
            registration: raw.registration,
            accounts: raw.accounts,
            cluster,
            groups: raw.groups,
        })
    }

    pub fn channel(&self, id: &str) -> Option<&ChannelConfig> {
        self.channels.iter().find(|c| c.id == id)
    }
}

fn validate_limits(limits: &Limits) -> Result<(), String> {
    let positive = [
        ("max_message_bytes", limits.max_message_bytes),
        ("max_room_name_bytes", limits.max_room_name_bytes),
        ("max_subscriptions", limits.max_subscriptions),
        ("publish_rate_per_second", limits.publish_rate_per_second as usize),
        ("publish_burst", limits.publish_burst as usize),
        ("outbox_frames", limits.outbox_frames),
        ("outbox_bytes", limits.outbox_bytes),
        ("control_rate_per_second", limits.control_rate_per_second as usize),
        ("control_burst", limits.control_burst as usize),
        ("max_client_data_bytes", limits.max_client_data_bytes),
        ("max_json_depth", limits.max_json_depth),
        ("handshake_timeout_seconds", limits.handshake_timeout_seconds as usize),
        ("ping_interval_seconds", limits.ping_interval_seconds as usize),
        ("decision_cache_entries", limits.decision_cache_entries),
        (
            "http_request_timeout_seconds",
            limits.http_request_timeout_seconds as usize,
        ),
    ];
    match positive.iter().find(|(_, value)| *value == 0) {
        Some((name, _)) => Err(format!("{name} must be at least 1")),
        None => Ok(()),
    }
}

fn resolve_channel(entry: ChannelEntry, policies: &PolicySet) -> Result<ChannelConfig, String> {
    let name = &entry.id;
    if entry.id.is_empty() || entry.id.chars().any(|c| c.is_control() || c == '/') {
        return Err(format!(
            "channel id {name:?} must be non-empty, without '/' or control characters"
        ));
    }
    let secret = match (entry.secret, entry.secret_env) {
        (Some(secret), None) => secret,
        (None, Some(var)) => Secret::new(
            std::env::var(&var).map_err(|_| format!("channel {name:?}: environment variable {var} is not set"))?,
        ),
        (Some(_), Some(_)) => return Err(format!("channel {name:?}: give either secret or secret_env, not both")),
        (None, None) => return Err(format!("channel {name:?}: secret or secret_env is required")),
    };
    if secret.expose().is_empty() {
        return Err(format!("channel {name:?}: the secret is empty"));
    }
    let policy = policies.get(&entry.policy).ok_or_else(|| {
        format!(
            "channel {name:?}: no policy named {:?} in the policies directory",
            entry.policy
        )
    })?;
    if entry.history_size > 10_000 {
        return Err(format!("channel {name:?}: history_size may be at most 10000"));
    }
    Ok(ChannelConfig {
        token_ttl_seconds: entry.token_ttl_seconds.unwrap_or(policy.ttl_seconds),
        id: entry.id,
        secret,
        require_auth: entry.require_auth,
        policy,
        history_size: entry.history_size,
        history_max_age_seconds: entry.history_max_age_seconds,
        history_max_bytes: entry.history_max_bytes,
        expiry: entry.expiry,
        expiry_grace_seconds: entry.expiry_grace_seconds,
        jwt_leeway_seconds: entry.jwt_leeway_seconds,
        guests: entry.guests,
    })
}

/// The startup log lines that tell a newcomer how to use the development channel:
/// its id, where its secret is kept, and a `curl` that publishes, ready to paste.
///
/// The secret itself is never logged: the `curl` line reads it from `file` with
/// `grep`, so it works from the directory the server was started in.
pub fn dev_channel_hints(channel_id: &str, file: &Path, listening: SocketAddr) -> [String; 3] {
    let mut url = listening;
    // A wildcard address is where the server listens, not where a client connects.
    if url.ip().is_unspecified() {
        url.set_ip(match url.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let file_arg = shell_quote(&file.display().to_string());
    [
        format!(
            "development channel {channel_id}: its id and secret are in {} (configure [[channel]] tables for production)",
            file.display()
        ),
        format!("chat page: open http://{url}/ in two browser windows"),
        format!(
            "try it: curl -u \"{channel_id}:$(grep ^secret {file_arg} | cut -d'\"' -f2)\" \
             -H 'Content-Type: application/json' -d '{{\"text\":\"hello\"}}' \
             http://{url}/api/{channel_id}/observable-room/publish"
        ),
    ]
}

/// Quotes `text` for a POSIX shell: plain paths stay as they are, anything else is single-quoted.
fn shell_quote(text: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:@%".contains(c);
    if !text.is_empty() && text.chars().all(plain) {
        text.to_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// Reads the development channel's credentials, creating them on first start
/// (unless `read_only`, when missing ones are made up and not kept). The file
/// holds a secret: it is created readable by its owner only (0600), in a data
/// directory created 0700.
fn load_or_create_dev_channel(data_dir: &Path, read_only: bool) -> Result<(DevChannel, PathBuf), String> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};

    let path = data_dir.join("dev-channel.toml");
    let read = |path: &Path| -> Result<Option<DevChannel>, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text)
                .map(Some)
                .map_err(|e| format!("{}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    };
    if let Some(dev) = read(&path)? {
        return Ok((dev, path));
    }
    let dev = DevChannel {
        id: format!("dev{}", random_alphanumeric(12)),
        secret: Secret::new(random_alphanumeric(32)),
    };
    if read_only {
        return Ok((dev, path));
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let text = format!(
        "# Rookery's development channel, created on first start and kept across restarts.\n{}",
        toml::to_string(&dev).map_err(|e| e.to_string())?
    );
    let created = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path);
    match created {
        Ok(mut file) => file
            .write_all(text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
        // Another process started at the same moment and won: use its channel.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if let Some(theirs) = read(&path)? {
                return Ok((theirs, path));
            }
        }
        Err(e) => return Err(format!("cannot write {}: {e}", path.display())),
    }
    Ok((dev, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_policies() -> Overrides {
        Overrides {
            policies_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")),
            ..Overrides::default()
        }
    }

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("rookery-config-test-{}", random_alphanumeric(8)));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rookery.toml");
        std::fs::write(&file, text).unwrap();
        let mut overrides = repo_policies();
        overrides.data_dir = Some(dir);
        Config::load(Some(&file), &overrides)
    }

    #[test]
    fn embedded_default_keeps_its_dev_channel_across_restarts() {
        let dir = std::env::temp_dir().join(format!("rookery-dev-{}", random_alphanumeric(8)));
        let mut overrides = repo_policies();
        overrides.data_dir = Some(dir.clone());
        let first = Config::load(None, &overrides).unwrap();
        let second = Config::load(None, &overrides).unwrap();
        assert_eq!(first.channels[0].id, second.channels[0].id);
        assert_eq!(first.channels[0].secret, second.channels[0].secret);
        assert_eq!(first.auth_channel, first.channels[0].id);
        assert_eq!(first.dev_channel_file, Some(dir.join("dev-channel.toml")));
        assert_eq!(first.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(first.channels[0].policy.name, "chat");
        assert!(first.channels[0].guests);
    }

    #[test]
    fn embedded_default_falls_back_to_the_tutorial_policy() {
        let dir = std::env::temp_dir().join(format!("rookery-dev-{}", random_alphanumeric(8)));
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
        std::fs::copy(repo.join("default.toml"), policies.join("default.toml")).unwrap();
        let overrides = Overrides {
            policies_dir: Some(policies),
            data_dir: Some(dir),
            ..Overrides::default()
        };
        let config = Config::load(None, &overrides).unwrap();
        assert_eq!(config.channels[0].policy.name, "default");
    }

    #[test]
    fn dev_channel_hints_name_the_file_and_a_reachable_url() {
        let hints = dev_channel_hints(
            "devAbc",
            Path::new("data/dev-channel.toml"),
            "0.0.0.0:8080".parse().unwrap(),
        );
        assert!(
            hints[0].contains("devAbc") && hints[0].contains("data/dev-channel.toml"),
            "{hints:?}"
        );
        assert!(hints[1].contains("http://127.0.0.1:8080/"), "{hints:?}");
        assert!(
            hints[2].ends_with("http://127.0.0.1:8080/api/devAbc/observable-room/publish"),
            "{hints:?}"
        );
        let quoted = dev_channel_hints("d", Path::new("my data/it's.toml"), "[::]:80".parse().unwrap());
        assert!(quoted[2].contains(r"'my data/it'\''s.toml'"), "{quoted:?}");
        assert!(quoted[2].contains("http://[::1]:80/"), "{quoted:?}");
    }

    #[test]
    fn dev_channel_file_is_private_and_read_only_loads_write_nothing() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("rookery-dev-{}", random_alphanumeric(8)));
        let mut overrides = repo_policies();
        overrides.data_dir = Some(dir.join("data"));
        overrides.read_only = true;
        let peek = Config::load(None, &overrides).unwrap();
        assert!(!dir.exists(), "a read-only load creates nothing");
        overrides.read_only = false;
        let created = Config::load(None, &overrides).unwrap();
        let file = created.dev_channel_file.clone().unwrap();
        assert_ne!(
            peek.channels[0].id, created.channels[0].id,
            "the made-up channel was not kept"
        );
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&dir.join("data")), 0o700);
        overrides.read_only = true;
        assert_eq!(
            Config::load(None, &overrides).unwrap().channels[0].id,
            created.channels[0].id
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let config = load_text("[[channel]]\nid = \"c\"\nsecret = \"hunter2\"\n").unwrap();
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"));
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn channels_read_all_their_settings() {
        let config = load_text(
            "auth_channel = \"b\"\n[limits]\nmax_subscriptions = 3\n\
             [[channel]]\nid = \"a\"\nsecret = \"x\"\nrequire_auth = false\n\
             [[channel]]\nid = \"b\"\nsecret = \"y\"\nexpiry = \"enforce\"\ntoken_ttl_seconds = 60\nhistory_size = 5\n",
        )
        .unwrap();
        assert_eq!(config.limits.max_subscriptions, 3);
        assert_eq!(config.auth_channel, "b");
        let b = config.channel("b").unwrap();
        assert_eq!(
            (b.expiry, b.token_ttl_seconds, b.history_size),
            (ExpiryMode::Enforce, 60, 5)
        );
        assert!(!config.channel("a").unwrap().require_auth);
    }

    #[test]
    fn invalid_configs_name_the_problem() {
        let cases = [
            ("[[channel]]\nid = \"a\"\n", "secret"),
            ("[[channel]]\nid = \"a\"\nsecret = \"x\"\npolicy = \"nope\"\n", "nope"),
            (
                "[[channel]]\nid = \"a\"\nsecret = \"x\"\n[[channel]]\nid = \"a\"\nsecret = \"y\"\n",
                "twice",
            ),
            (
                "auth_channel = \"zz\"\n[[channel]]\nid = \"a\"\nsecret = \"x\"\n",
                "auth_channel",
            ),
            ("[limits]\noutbox_frames = 0\n", "outbox_frames"),
            ("listen = \"nonsense\"\n", "listen"),
            ("bogus = 1\n", "bogus"),
        ];
        for (text, needle) in cases {
            let err = load_text(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?} gave {err:?}");
            assert!(err.contains("rookery.toml"), "{err}");
        }
    }

    #[test]
    fn members_settings_have_defaults_and_are_read() {
        let config = load_text("[[channel]]\nid = \"a\"\nsecret = \"x\"\n").unwrap();
        assert_eq!(config.registration, Registration::Open);
        assert!(config.channel("a").unwrap().guests);
        let accounts = &config.accounts;
        assert_eq!(accounts.session_lifetime_seconds, 30 * 24 * 3600);
        assert!(!accounts.secure_cookies);
        assert_eq!(
            (accounts.login_failures_per_username, accounts.login_failures_per_ip),
            (5, 50)
        );
        assert_eq!(accounts.login_failure_window_seconds, 900);
        assert_eq!(
            (
                accounts.argon2_memory_kib,
                accounts.argon2_iterations,
                accounts.argon2_parallelism
            ),
            (19 * 1024, 2, 1)
        );

        let config = load_text(
            "registration = \"closed\"\n[accounts]\nsecure_cookies = true\nsession_lifetime_seconds = 60\n\
             argon2_memory_kib = 8\n[[channel]]\nid = \"a\"\nsecret = \"x\"\nguests = false\n",
        )
        .unwrap();
        assert_eq!(config.registration, Registration::Closed);
        assert!(!config.channel("a").unwrap().guests);
        assert!(config.accounts.secure_cookies);
        assert_eq!(config.accounts.session_lifetime_seconds, 60);
        assert_eq!(config.accounts.argon2_memory_kib, 8);

        for (text, needle) in [
            ("registration = \"maybe\"\n", "registration"),
            ("[accounts]\nargon2_memory_kib = 1\n", "[accounts]"),
            ("[accounts]\nlogin_failures_per_ip = 0\n", "login_failures_per_ip"),
            ("[accounts]\nsesion_lifetime_seconds = 1\n", "sesion_lifetime_seconds"),
        ] {
            let err = load_text(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn the_cluster_section_is_optional_and_checked() {
        let alone = load_text("").unwrap();
        assert!(alone.cluster.redis_url.is_none());
        assert_eq!(alone.cluster.node_lease_seconds, 15);
        let channel = "[[channel]]\nid = \"chat\"\nsecret = \"x\"\n";
        let cluster = load_text(&format!(
            "[cluster]\nredis_url = \"redis://:pw@127.0.0.1:6379\"\nnode_lease_seconds = 2\n{channel}"
        ))
        .unwrap();
        assert_eq!(cluster.cluster.node_lease_seconds, 2);
        assert!(
            !format!("{cluster:?}").contains("pw@"),
            "the URL's password is redacted"
        );
        let err = load_text("[cluster]\nredis_url = \"http://x\"\n").unwrap_err();
        assert!(err.to_string().contains("redis://"), "{err}");
        // Nodes that each invent a development channel share nothing.
        let err = load_text("[cluster]\nredis_url = \"redis://127.0.0.1:6379\"\n").unwrap_err();
        assert!(err.to_string().contains("[cluster] needs [[channel]] tables"), "{err}");
    }

    #[test]
    fn group_limits_have_defaults_and_are_checked() {
        let config = load_text("[[channel]]\nid = \"a\"\nsecret = \"x\"\n").unwrap();
        let groups = &config.groups;
        assert_eq!(
            (
                groups.max_groups_per_user,
                groups.max_members_per_group,
                groups.max_title_chars
            ),
            (32, 100, 64)
        );
        let config =
            load_text("[groups]\nmax_members_per_group = 3\n[[channel]]\nid = \"a\"\nsecret = \"x\"\n").unwrap();
        assert_eq!(config.groups.max_members_per_group, 3);
        for (text, needle) in [
            ("[groups]\nmax_title_chars = 0\n", "max_title_chars"),
            ("[groups]\nmax_groups_per_user = 1000\n", "max_groups_per_user"),
            ("[groups]\nmax_group = 1\n", "max_group"),
        ] {
            let err = load_text(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn secret_env_reads_the_environment() {
        let err = load_text("[[channel]]\nid = \"a\"\nsecret_env = \"ROOKERY_TEST_UNSET_VAR\"\n").unwrap_err();
        assert!(err.to_string().contains("ROOKERY_TEST_UNSET_VAR"));
    }
}
