//! Groups in Redis, shared by every node of a deployment (`[cluster]
//! redis_url`, PROTOCOL.md §13), with the semantics of the redb store.
//!
//! Per channel, every key carries the hash tag `{groups/<channel>}`, so on
//! Redis Cluster a channel's groups live in one slot and the scripts that
//! change a record and its index entries together run atomically:
//!
//! | key | type | what |
//! |---|---|---|
//! | `rookery:{groups/<ch>}:all` | hash id → [`GroupRecord`] JSON | the groups of the channel |
//! | `rookery:{groups/<ch>}:of:<user>` | set of group ids | the per-user index |
//!
//! `is_member` is one `SISMEMBER`, `groups_of` one `SMEMBERS`; changes are one
//! script each. `save` is a compare and set against the record the service
//! read (several nodes change groups concurrently), and reads the old
//! record's members (with Redis's `cjson`) to update the index for the
//! members that changed.

use redis::{Connection, RedisError, Script};

use super::store::{GroupRecord, GroupStore, GroupStoreError};
use crate::redis_sync::RedisPool;

/// KEYS: the channel's group hash. ARGV: id, record JSON, index key prefix,
/// then the members. Returns 0 when the id is taken.
const CREATE: &str = r"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
for i = 4, #ARGV do redis.call('SADD', ARGV[3] .. ARGV[i], ARGV[1]) end
return 1
";

/// KEYS: the channel's group hash. ARGV: id, record JSON, index key prefix,
/// the previous record's JSON, then the new members. Compare and set: returns
/// 0 and writes nothing when the stored record is not the previous one;
/// index entries of members no longer listed go.
const SAVE: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old ~= ARGV[4] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local keep = {}
for i = 5, #ARGV do
  keep[ARGV[i]] = true
  redis.call('SADD', ARGV[3] .. ARGV[i], ARGV[1])
end
for _, member in ipairs(cjson.decode(old).members) do
  if not keep[member] then redis.call('SREM', ARGV[3] .. member, ARGV[1]) end
end
return 1
";

/// [`GroupStore`] over Redis.
pub(crate) struct RedisGroupStore {
    pool: RedisPool,
    create: Script,
    save: Script,
}

fn backend(error: impl std::fmt::Display) -> GroupStoreError {
    GroupStoreError::Backend(format!("redis: {error}"))
}

fn decode(json: &str) -> Result<GroupRecord, GroupStoreError> {
    serde_json::from_str(json).map_err(backend)
}

/// The hash of a channel's groups.
fn groups_key(channel: &str) -> String {
    format!("rookery:{{groups/{channel}}}:all")
}

/// What a user's index key starts with (the username follows).
fn index_prefix(channel: &str) -> String {
    format!("rookery:{{groups/{channel}}}:of:")
}

impl RedisGroupStore {
    /// The store at `url`; connects on first use.
    pub(crate) fn new(url: &str) -> Result<RedisGroupStore, GroupStoreError> {
        Ok(RedisGroupStore {
            pool: RedisPool::new(url).map_err(backend)?,
            create: Script::new(CREATE),
            save: Script::new(SAVE),
        })
    }

    fn run<T>(&self, call: impl FnMut(&mut Connection) -> redis::RedisResult<T>) -> Result<T, GroupStoreError> {
        self.pool.run(call).map_err(|error: RedisError| backend(error))
    }
}

impl GroupStore for RedisGroupStore {
    fn create(&self, channel: &str, group: &GroupRecord) -> Result<(), GroupStoreError> {
        let value = serde_json::to_string(group).map_err(backend)?;
        let created: i64 = self.run(|c| {
            self.create
                .key(groups_key(channel))
                .arg(&group.id)
                .arg(&value)
                .arg(index_prefix(channel))
                .arg(&group.members)
                .invoke(c)
        })?;
        if created == 1 {
            Ok(())
        } else {
            Err(GroupStoreError::Taken)
        }
    }

    /// The stored JSON is compared with `previous` encoded again: records are
    /// only ever written by this encoding, and [`GroupRecord`] has no map
    /// whose order could vary.
    fn save(&self, channel: &str, previous: &GroupRecord, group: &GroupRecord) -> Result<(), GroupStoreError> {
        let value = serde_json::to_string(group).map_err(backend)?;
        let previous = serde_json::to_string(previous).map_err(backend)?;
        let saved: i64 = self.run(|c| {
            self.save
                .key(groups_key(channel))
                .arg(&group.id)
                .arg(&value)
                .arg(index_prefix(channel))
                .arg(&previous)
                .arg(&group.members)
                .invoke(c)
        })?;
        if saved == 1 {
            Ok(())
        } else {
            Err(GroupStoreError::Changed)
        }
    }

    fn group(&self, channel: &str, id: &str) -> Result<Option<GroupRecord>, GroupStoreError> {
        let value: Option<String> = self.run(|c| redis::cmd("HGET").arg(groups_key(channel)).arg(id).query(c))?;
        value.as_deref().map(decode).transpose()
    }

    fn groups(&self, channel: &str) -> Result<Vec<GroupRecord>, GroupStoreError> {
        let values: Vec<String> = self.run(|c| redis::cmd("HVALS").arg(groups_key(channel)).query(c))?;
        let mut groups = values.iter().map(|v| decode(v)).collect::<Result<Vec<_>, _>>()?;
        groups.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(groups)
    }

    fn groups_of(&self, channel: &str, user: &str) -> Result<Vec<String>, GroupStoreError> {
        let key = format!("{}{user}", index_prefix(channel));
        let mut ids: Vec<String> = self.run(|c| redis::cmd("SMEMBERS").arg(&key).query(c))?;
        ids.sort();
        Ok(ids)
    }

    fn is_member(&self, channel: &str, id: &str, user: &str) -> Result<bool, GroupStoreError> {
        let key = format!("{}{user}", index_prefix(channel));
        self.run(|c| redis::cmd("SISMEMBER").arg(&key).arg(id).query(c))
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::contract;
    use super::*;
    use crate::test_support::TestRedis;

    #[test]
    fn the_redis_store_keeps_the_contract() {
        let redis = TestRedis::start();
        contract::all(|| {
            let mut c = redis::Client::open(redis.url.as_str())
                .unwrap()
                .get_connection()
                .unwrap();
            redis::cmd("FLUSHALL").query::<()>(&mut c).unwrap();
            Box::new(RedisGroupStore::new(&redis.url).unwrap())
        });
    }

    #[test]
    fn a_channels_keys_share_one_hash_tag() {
        assert_eq!(groups_key("chat"), "rookery:{groups/chat}:all");
        assert_eq!(index_prefix("chat"), "rookery:{groups/chat}:of:");
    }

    #[test]
    fn an_unreachable_redis_is_a_backend_error() {
        let store = RedisGroupStore::new(&crate::test_support::unreachable_redis_url()).unwrap();
        assert!(matches!(
            store.is_member("c", "g", "u"),
            Err(GroupStoreError::Backend(_))
        ));
    }
}
