//! The state shared by every connection and request of one running server.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::Accounts;
use crate::auth::Credentials;
use crate::broker::{Broker, FanOut};
use crate::config::{Config, HistoryStore};
use crate::engine::local::LocalEngine;
use crate::engine::redis::RedisOptions;
use crate::engine::{ChannelLimits, Engine, StoreError, StoreOptions};
use crate::groups::Groups;
use crate::ids::random_alphanumeric;
use crate::net_limits::IpLimiter;
use crate::stores::Stores;

/// Random characters appended to a cluster node's id: two nodes configured
/// alike still differ (62^6 ≈ 5.7·10^10 per start).
const NODE_SUFFIX_CHARS: usize = 6;

/// One running server: configuration, credentials, broker and lifecycle handles.
pub struct App {
    pub config: Config,
    /// Each channel's settings, token verifier and issuer.
    pub credentials: Credentials,
    pub broker: Broker,
    /// Cancelled when the server shuts down; sessions end when they see it.
    pub shutdown: CancellationToken,
    /// Tracks WebSocket sessions, which hyper's graceful shutdown does not see.
    pub sessions: TaskTracker,
    pub ip_limiter: IpLimiter,
    /// Members, sessions and live names (PROTOCOL.md §11).
    pub accounts: Arc<Accounts>,
    /// Group rooms and their members (PROTOCOL.md §11.1).
    pub groups: Arc<Groups>,
}

impl App {
    /// Opens the engine's store and builds the server's shared state.
    /// With `[cluster] redis_url` the engine is Redis (and the node id gets a
    /// random suffix, so two nodes never mint the same client ids); else the
    /// embedded store.
    pub fn new(mut config: Config, shutdown: CancellationToken) -> Result<Arc<App>, StoreError> {
        let ip_limiter = IpLimiter::new(config.limits.max_connections_per_ip);
        let fanout = FanOut::new(config.channels.iter().map(|c| c.id.clone()));
        // Accounts, sessions and groups go where the history goes: Redis in a
        // cluster (shared by every node), else the engine's own database (in
        // memory too with `history_store = "memory"`).
        let (engine, stores) = match config.cluster.redis_url.clone() {
            None => {
                let local = LocalEngine::open(channel_limits(&config), store_options(&config), fanout.clone())?;
                let stores = Stores::embedded(local.database());
                (Engine::Local(local), stores)
            }
            Some(url) => {
                config.node_id = format!("{}{}", config.node_id, random_alphanumeric(NODE_SUFFIX_CHARS));
                let options = RedisOptions {
                    url: url.expose().to_owned(),
                    node_id: config.node_id.clone(),
                    lease: Duration::from_secs(config.cluster.node_lease_seconds),
                };
                let engine = Engine::redis(channel_limits(&config), options, fanout.clone())
                    .map_err(|e| StoreError::Backend(e.to_string()))?;
                let stores = Stores::redis(url.expose()).map_err(|e| StoreError::Backend(e.to_string()))?;
                (engine, stores)
            }
        };
        let store = stores.accounts;
        let groups = Groups::new(config.groups.clone(), stores.groups, store.clone());
        let mut accounts = Accounts::new(&config, store).map_err(|e| StoreError::Backend(e.to_string()))?;
        // Live guest names are deployment-wide in a cluster (PROTOCOL.md §11, §13).
        if let Some(sink) = engine.name_sink() {
            accounts = accounts.with_name_sink(sink);
        }
        Ok(Arc::new(App {
            credentials: Credentials::new(&config),
            broker: Broker::new(fanout, engine),
            config,
            shutdown,
            sessions: TaskTracker::new(),
            ip_limiter,
            accounts: Arc::new(accounts),
            groups: Arc::new(groups),
        }))
    }
}

fn channel_limits(config: &Config) -> Vec<ChannelLimits> {
    config
        .channels
        .iter()
        .map(|c| ChannelLimits {
            id: c.id.clone(),
            history_size: c.history_size,
            history_max_age_seconds: c.history_max_age_seconds,
            history_max_bytes: c.history_max_bytes,
        })
        .collect()
}

fn store_options(config: &Config) -> StoreOptions {
    let store = &config.store;
    StoreOptions {
        path: (store.kind == HistoryStore::Disk).then(|| store.path.clone()),
        commit_wait: Duration::from_millis(store.settings.commit_wait_ms),
        commit_max_messages: store.settings.commit_max_messages,
        fsync: store.settings.fsync,
        sweep_interval: Duration::from_secs(store.settings.sweep_interval_seconds),
    }
}
