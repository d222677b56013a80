//! Accounts and sessions in the embedded durable store (the same redb
//! database as history, two tables of its own).
//!
//! Writes are rare (registration, login, logout) and must be durable before
//! they are answered, so each one is its own transaction with fsync, taken
//! directly rather than through the history writer's group commit; redb
//! serializes it with the writer's transactions.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::store::{AccountStore, SessionRecord, StoreError, UserRecord};

const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions");

/// Expired sessions are swept once every this many logins.
const SWEEP_EVERY: usize = 256;

/// [`AccountStore`] over the embedded redb database.
pub struct RedbAccountStore {
    db: Arc<Database>,
    logins: AtomicUsize,
}

fn backend(error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(error.to_string())
}

impl RedbAccountStore {
    pub fn new(db: Arc<Database>) -> RedbAccountStore {
        RedbAccountStore {
            db,
            logins: AtomicUsize::new(0),
        }
    }

    /// Runs `change` in one durable write transaction.
    fn write<T>(&self, change: impl FnOnce(&redb::WriteTransaction) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let mut txn = self.db.begin_write().map_err(backend)?;
        txn.set_durability(Durability::Immediate).map_err(backend)?;
        let result = change(&txn)?;
        txn.commit().map_err(backend)?;
        Ok(result)
    }

    fn read<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = match txn.open_table(table) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(backend(error)),
        };
        match table.get(key).map_err(backend)? {
            Some(value) => serde_json::from_slice(value.value()).map(Some).map_err(backend),
            None => Ok(None),
        }
    }

    /// Changes one user record in place; false when there is none.
    fn update_user(&self, username: &str, change: impl FnOnce(&mut UserRecord)) -> Result<bool, StoreError> {
        self.write(|txn| {
            let mut users = txn.open_table(USERS).map_err(backend)?;
            let Some(mut user) = users
                .get(username)
                .map_err(backend)?
                .map(|v| serde_json::from_slice::<UserRecord>(v.value()))
                .transpose()
                .map_err(backend)?
            else {
                return Ok(false);
            };
            change(&mut user);
            let value = serde_json::to_vec(&user).map_err(backend)?;
            users.insert(username, value.as_slice()).map_err(backend)?;
            Ok(true)
        })
    }
}

impl AccountStore for RedbAccountStore {
    fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let value = serde_json::to_vec(user).map_err(backend)?;
        self.write(|txn| {
            let mut users = txn.open_table(USERS).map_err(backend)?;
            if users.get(user.username.as_str()).map_err(backend)?.is_some() {
                return Err(StoreError::Taken);
            }
            users
                .insert(user.username.as_str(), value.as_slice())
                .map_err(backend)?;
            Ok(())
        })
    }

    fn user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        self.read(USERS, username)
    }

    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        let table = match txn.open_table(USERS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(backend(error)),
        };
        // Keys are usernames, so iteration is already in username order.
        table
            .iter()
            .map_err(backend)?
            .map(|entry| {
                let (_, value) = entry.map_err(backend)?;
                serde_json::from_slice(value.value()).map_err(backend)
            })
            .collect()
    }

    fn remove_user(&self, username: &str) -> Result<bool, StoreError> {
        self.write(|txn| {
            let mut users = txn.open_table(USERS).map_err(backend)?;
            Ok(users.remove(username).map_err(backend)?.is_some())
        })
    }

    fn set_password_hash(&self, username: &str, hash: &str) -> Result<bool, StoreError> {
        self.update_user(username, |user| user.password_hash = hash.to_owned())
    }

    fn set_display_name(&self, username: &str, name: &str) -> Result<bool, StoreError> {
        self.update_user(username, |user| user.display_name = name.to_owned())
    }

    fn create_session(&self, key: &str, session: &SessionRecord) -> Result<(), StoreError> {
        let value = serde_json::to_vec(session).map_err(backend)?;
        let sweep = self.logins.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1;
        self.write(|txn| {
            let mut sessions = txn.open_table(SESSIONS).map_err(backend)?;
            if sweep {
                let now = crate::token::unix_now();
                sessions
                    .retain(|_, v| serde_json::from_slice::<SessionRecord>(v).is_ok_and(|s| s.expires_at > now))
                    .map_err(backend)?;
            }
            sessions.insert(key, value.as_slice()).map_err(backend)?;
            Ok(())
        })
    }

    fn session(&self, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        self.read(SESSIONS, key)
    }

    fn revoke_session(&self, key: &str) -> Result<(), StoreError> {
        self.write(|txn| {
            txn.open_table(SESSIONS)
                .map_err(backend)?
                .remove(key)
                .map_err(backend)?;
            Ok(())
        })
    }

    fn revoke_sessions_of(&self, username: &str) -> Result<usize, StoreError> {
        self.write(|txn| {
            let mut sessions = txn.open_table(SESSIONS).map_err(backend)?;
            let before = sessions.len().map_err(backend)?;
            sessions
                .retain(|_, v| serde_json::from_slice::<SessionRecord>(v).is_ok_and(|s| s.user != username))
                .map_err(backend)?;
            let after = sessions.len().map_err(backend)?;
            Ok((before - after) as usize)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::contract;
    use super::*;

    #[test]
    fn the_redb_store_keeps_the_contract() {
        contract::all(|| Box::new(RedbAccountStore::new(crate::test_support::in_memory_database())));
    }
}
