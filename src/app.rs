//! The state shared by every connection and request of one running server.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accounts::Accounts;
use crate::accounts::redb_store::RedbAccountStore;
use crate::auth::Credentials;
use crate::broker::{Broker, FanOut};
use crate::config::{Config, HistoryStore};
use crate::engine::{ChannelLimits, Engine, StoreError, StoreOptions};
use crate::groups::Groups;
use crate::groups::redb_store::RedbGroupStore;
use crate::server::IpLimiter;

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
    pub fn new(config: Config, shutdown: CancellationToken) -> Result<Arc<App>, StoreError> {
        let ip_limiter = IpLimiter::new(config.limits.max_connections_per_ip);
        let fanout = FanOut::new(config.channels.iter().map(|c| c.id.clone()));
        let engine = Engine::local(channel_limits(&config), store_options(&config), fanout.clone())?;
        // Accounts and sessions live in the engine's database (in memory too with
        // `history_store = "memory"`: the same code, nothing kept across restarts).
        let Engine::Local(local) = &engine;
        let store = Arc::new(RedbAccountStore::new(local.database()));
        let groups = Groups::new(
            config.groups.clone(),
            Arc::new(RedbGroupStore::new(local.database())),
            store.clone(),
        );
        let accounts = Accounts::new(&config, store).map_err(|e| StoreError::Backend(e.to_string()))?;
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
