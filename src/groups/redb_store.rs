//! Groups in the embedded durable store: the same redb database as history
//! and accounts, two tables of their own.
//!
//! - `groups`: `(channel, id)` → the [`GroupRecord`] as JSON.
//! - `group_members`: `(channel, user, id)` → `()`, the per-user index; a
//!   range read gives a user's groups in id order, a point read one membership.
//!
//! Changes are rare and must be durable before they are answered, so each is
//! its own transaction with fsync, like the accounts store's; both tables
//! change in that one transaction, so they always agree.

use std::sync::Arc;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, TableError};

use super::store::{GroupRecord, GroupStore, GroupStoreError};

const GROUPS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("groups");
const GROUP_MEMBERS: TableDefinition<(&str, &str, &str), ()> = TableDefinition::new("group_members");

/// [`GroupStore`] over the embedded redb database.
pub struct RedbGroupStore {
    db: Arc<Database>,
}

fn backend(error: impl std::fmt::Display) -> GroupStoreError {
    GroupStoreError::Backend(error.to_string())
}

fn decode(bytes: &[u8]) -> Result<GroupRecord, GroupStoreError> {
    serde_json::from_slice(bytes).map_err(backend)
}

impl RedbGroupStore {
    pub fn new(db: Arc<Database>) -> RedbGroupStore {
        RedbGroupStore { db }
    }

    /// Runs `change` in one durable write transaction.
    fn write<T>(
        &self,
        change: impl FnOnce(&redb::WriteTransaction) -> Result<T, GroupStoreError>,
    ) -> Result<T, GroupStoreError> {
        let mut txn = self.db.begin_write().map_err(backend)?;
        txn.set_durability(Durability::Immediate).map_err(backend)?;
        let result = change(&txn)?;
        txn.commit().map_err(backend)?;
        Ok(result)
    }

    /// Runs `query` on a read transaction's table; `empty` when the table was never written.
    fn read<K: redb::Key + 'static, V: redb::Value + 'static, T>(
        &self,
        table: TableDefinition<K, V>,
        empty: T,
        query: impl FnOnce(&redb::ReadOnlyTable<K, V>) -> Result<T, GroupStoreError>,
    ) -> Result<T, GroupStoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
        match txn.open_table(table) {
            Ok(table) => query(&table),
            Err(TableError::TableDoesNotExist(_)) => Ok(empty),
            Err(error) => Err(backend(error)),
        }
    }
}

impl GroupStore for RedbGroupStore {
    fn create(&self, channel: &str, group: &GroupRecord) -> Result<(), GroupStoreError> {
        let value = serde_json::to_vec(group).map_err(backend)?;
        self.write(|txn| {
            let mut groups = txn.open_table(GROUPS).map_err(backend)?;
            if groups.get((channel, group.id.as_str())).map_err(backend)?.is_some() {
                return Err(GroupStoreError::Taken);
            }
            groups
                .insert((channel, group.id.as_str()), value.as_slice())
                .map_err(backend)?;
            let mut index = txn.open_table(GROUP_MEMBERS).map_err(backend)?;
            for member in &group.members {
                index
                    .insert((channel, member.as_str(), group.id.as_str()), ())
                    .map_err(backend)?;
            }
            Ok(())
        })
    }

    fn save(&self, channel: &str, previous: &GroupRecord, group: &GroupRecord) -> Result<(), GroupStoreError> {
        let value = serde_json::to_vec(group).map_err(backend)?;
        let id = group.id.as_str();
        self.write(|txn| {
            let mut groups = txn.open_table(GROUPS).map_err(backend)?;
            let stored = groups
                .get((channel, id))
                .map_err(backend)?
                .map(|stored| decode(stored.value()))
                .transpose()?;
            if stored.as_ref() != Some(previous) {
                return Err(GroupStoreError::Changed);
            }
            groups.insert((channel, id), value.as_slice()).map_err(backend)?;
            let mut index = txn.open_table(GROUP_MEMBERS).map_err(backend)?;
            for gone in &previous.members {
                if !group.has_member(gone) {
                    index.remove((channel, gone.as_str(), id)).map_err(backend)?;
                }
            }
            for member in &group.members {
                index.insert((channel, member.as_str(), id), ()).map_err(backend)?;
            }
            Ok(())
        })
    }

    fn group(&self, channel: &str, id: &str) -> Result<Option<GroupRecord>, GroupStoreError> {
        self.read(GROUPS, None, |table| {
            table
                .get((channel, id))
                .map_err(backend)?
                .map(|value| decode(value.value()))
                .transpose()
        })
    }

    fn groups(&self, channel: &str) -> Result<Vec<GroupRecord>, GroupStoreError> {
        self.read(GROUPS, Vec::new(), |table| {
            let mut groups = Vec::new();
            for entry in table.range((channel, "")..).map_err(backend)? {
                let (key, value) = entry.map_err(backend)?;
                if key.value().0 != channel {
                    break;
                }
                groups.push(decode(value.value())?);
            }
            Ok(groups)
        })
    }

    fn groups_of(&self, channel: &str, user: &str) -> Result<Vec<String>, GroupStoreError> {
        self.read(GROUP_MEMBERS, Vec::new(), |table| {
            let mut ids = Vec::new();
            for entry in table.range((channel, user, "")..).map_err(backend)? {
                let (key, _) = entry.map_err(backend)?;
                let (key_channel, key_user, id) = key.value();
                if key_channel != channel || key_user != user {
                    break;
                }
                ids.push(id.to_owned());
            }
            Ok(ids)
        })
    }

    fn is_member(&self, channel: &str, id: &str, user: &str) -> Result<bool, GroupStoreError> {
        self.read(GROUP_MEMBERS, false, |table| {
            Ok(table.get((channel, user, id)).map_err(backend)?.is_some())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::contract;
    use super::*;

    #[test]
    fn the_redb_store_keeps_the_contract() {
        contract::all(|| Box::new(RedbGroupStore::new(crate::test_support::in_memory_database())));
    }
}
