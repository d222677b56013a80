//! Where a deployment keeps its accounts, sessions and groups: the one place
//! that picks their backend, for the server ([`App`](crate::app::App)) and
//! the `rookery user` commands alike, so both always use the same records.
//!
//! - With `[cluster] redis_url` (or `ROOKERY_REDIS_URL`): Redis, shared by
//!   every node (see `accounts::redis_store`, `groups::redis_store`). A user
//!   registered on one node logs in on any other, a session cookie works
//!   everywhere, a group exists everywhere.
//! - Without: the embedded redb database, two tables each beside the
//!   history (the server shares its engine's open database: redb refuses a
//!   second open of one file).

use std::sync::Arc;

use crate::accounts::redb_store::RedbAccountStore;
use crate::accounts::redis_store::RedisAccountStore;
use crate::accounts::{AccountStore, StoreError};
use crate::config::{Config, HistoryStore};
use crate::groups::GroupStore;
use crate::groups::redb_store::RedbGroupStore;
use crate::groups::redis_store::RedisGroupStore;

/// The accounts and groups stores of one configuration.
pub struct Stores {
    pub accounts: Arc<dyn AccountStore>,
    pub groups: Arc<dyn GroupStore>,
}

impl Stores {
    /// The stores for the operator commands (`rookery user …`): Redis when
    /// the configuration has a `redis_url`, else the data directory's file
    /// (refused while a server holds it, and with `history_store = "memory"`,
    /// which keeps nothing between processes).
    pub fn open(config: &Config) -> Result<Stores, StoreError> {
        if let Some(url) = &config.cluster.redis_url {
            return Stores::redis(url.expose());
        }
        if config.store.kind == HistoryStore::Memory {
            return Err(StoreError::Unavailable(
                "history_store = \"memory\" keeps no accounts between processes; use the embedded store (data_dir) \
                 or [cluster] redis_url"
                    .into(),
            ));
        }
        let db = crate::engine::store::open_database(&config.store.path)
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Stores::embedded(db))
    }

    /// Both in the Redis at `url`; nothing is connected before the first call.
    pub(crate) fn redis(url: &str) -> Result<Stores, StoreError> {
        Ok(Stores {
            accounts: Arc::new(RedisAccountStore::new(url)?),
            groups: Arc::new(RedisGroupStore::new(url).map_err(|e| StoreError::Unavailable(e.to_string()))?),
        })
    }

    /// Both in the embedded database `db`.
    pub(crate) fn embedded(db: Arc<redb::Database>) -> Stores {
        Stores {
            accounts: Arc::new(RedbAccountStore::new(db.clone())),
            groups: Arc::new(RedbGroupStore::new(db)),
        }
    }
}
