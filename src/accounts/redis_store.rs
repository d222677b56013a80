//! Accounts and sessions in Redis, shared by every node of a deployment
//! (`[cluster] redis_url`, PROTOCOL.md §13), with the semantics of the redb
//! store.
//!
//! Every key carries the hash tag `{accounts}`, so on Redis Cluster they all
//! live in one slot and each script below runs atomically on one node:
//!
//! | key | type | what |
//! |---|---|---|
//! | `rookery:{accounts}:user:<username>` | hash `display_name`, `password_hash`, `created_at`, `name_key` | one user |
//! | `rookery:{accounts}:users` | set | every username |
//! | `rookery:{accounts}:names` | hash name key → count | registered display names, for [`AccountStore::display_name_taken`] |
//! | `rookery:{accounts}:session:<key>` | string, JSON [`SessionRecord`], `EXPIREAT expires_at` | one session, by its hashed key |
//! | `rookery:{accounts}:sessions:<username>` | set of session keys | for `revoke_sessions_of` |
//!
//! A user's `name_key` field is the [`name_key`](super::names::name_key) of
//! their display name at the time it was set: the scripts cannot compute it
//! (it is Unicode case folding in Rust), so they keep it to take the old name
//! out of the index when the name changes or the user goes. Each call is one
//! round trip.

use redis::{Connection, RedisError, Script};

use super::names::name_key;
use super::store::{AccountStore, SessionRecord, StoreError, UserRecord};
use crate::redis_sync::RedisPool;

const PREFIX: &str = "rookery:{accounts}:";
const USERS: &str = "rookery:{accounts}:users";
const NAMES: &str = "rookery:{accounts}:names";

/// A user's session set is swept of expired keys once it is this big.
const SWEEP_SESSIONS_ABOVE: usize = 32;

/// 9999-12-31T23:59:59Z: later expiry times are stored as this one.
const LATEST_EXPIRY: u64 = 253_402_300_799;

/// Field order of a user hash as the scripts return it.
const USER_FIELDS: [&str; 3] = ["display_name", "password_hash", "created_at"];

/// KEYS: users, names, user. ARGV: username, display name, hash, created at, name key.
/// Returns 0 when the username is taken.
const CREATE_USER: &str = r"
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('HSET', KEYS[3], 'display_name', ARGV[2], 'password_hash', ARGV[3],
  'created_at', ARGV[4], 'name_key', ARGV[5])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('HINCRBY', KEYS[2], ARGV[5], 1)
return 1
";

/// KEYS: users, names, user. ARGV: username. Returns 0 when absent.
const REMOVE_USER: &str = r"
local old = redis.call('HGET', KEYS[3], 'name_key')
if redis.call('DEL', KEYS[3]) == 0 then return 0 end
redis.call('SREM', KEYS[1], ARGV[1])
if old and redis.call('HINCRBY', KEYS[2], old, -1) <= 0 then redis.call('HDEL', KEYS[2], old) end
return 1
";

/// KEYS: names, user. ARGV: display name, name key. Returns 0 when absent.
const SET_DISPLAY_NAME: &str = r"
local old = redis.call('HGET', KEYS[2], 'name_key')
if not old then return 0 end
redis.call('HSET', KEYS[2], 'display_name', ARGV[1], 'name_key', ARGV[2])
if old ~= ARGV[2] then
  if redis.call('HINCRBY', KEYS[1], old, -1) <= 0 then redis.call('HDEL', KEYS[1], old) end
  redis.call('HINCRBY', KEYS[1], ARGV[2], 1)
end
return 1
";

/// KEYS: user. ARGV: hash. Returns 0 when absent.
const SET_PASSWORD_HASH: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'password_hash', ARGV[1])
return 1
";

/// KEYS: session, user's session set. ARGV: record JSON, expires at,
/// session key, sweep threshold, session key prefix.
const CREATE_SESSION: &str = r"
redis.call('SET', KEYS[1], ARGV[1])
redis.call('EXPIREAT', KEYS[1], ARGV[2])
if redis.call('SCARD', KEYS[2]) > tonumber(ARGV[4]) then
  for _, key in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    if redis.call('EXISTS', ARGV[5] .. key) == 0 then redis.call('SREM', KEYS[2], key) end
  end
end
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('EXPIREAT', KEYS[2], ARGV[2], 'GT')
if redis.call('TTL', KEYS[2]) < 0 then redis.call('EXPIREAT', KEYS[2], ARGV[2]) end
return 1
";

/// KEYS: session. ARGV: session key, user's session set prefix. Drops the
/// session and its entry in its user's set.
const REVOKE_SESSION: &str = r"
local value = redis.call('GET', KEYS[1])
if not value then return 0 end
redis.call('DEL', KEYS[1])
local record = cjson.decode(value)
redis.call('SREM', ARGV[2] .. record.user, ARGV[1])
return 1
";

/// KEYS: user's session set. ARGV: session key prefix. Returns how many
/// sessions still existed.
const REVOKE_SESSIONS_OF: &str = r"
local count = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  count = count + redis.call('DEL', ARGV[1] .. key)
end
redis.call('DEL', KEYS[1])
return count
";

/// KEYS: users. ARGV: user key prefix. Every user as
/// `[username, display_name, password_hash, created_at]`.
const USERS_SCRIPT: &str = r"
local out = {}
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local fields = redis.call('HMGET', ARGV[1] .. name, 'display_name', 'password_hash', 'created_at')
  if fields[1] then
    table.insert(out, {name, fields[1], fields[2], fields[3]})
  end
end
return out
";

/// The scripts, hashed once.
struct Scripts {
    create_user: Script,
    remove_user: Script,
    set_display_name: Script,
    set_password_hash: Script,
    create_session: Script,
    revoke_session: Script,
    revoke_sessions_of: Script,
    users: Script,
}

/// [`AccountStore`] over Redis.
pub(crate) struct RedisAccountStore {
    pool: RedisPool,
    scripts: Scripts,
}

fn backend(error: RedisError) -> StoreError {
    StoreError::Backend(format!("redis: {error}"))
}

fn user_key(username: &str) -> String {
    format!("{PREFIX}user:{username}")
}

fn session_key(key: &str) -> String {
    format!("{PREFIX}session:{key}")
}

fn sessions_of_key(username: &str) -> String {
    format!("{PREFIX}sessions:{username}")
}

/// A user record from its hash fields in [`USER_FIELDS`] order; `None` when
/// the hash is missing (or was written by something else).
fn user_from(username: &str, fields: [Option<String>; 3]) -> Result<Option<UserRecord>, StoreError> {
    let [Some(display_name), Some(password_hash), Some(created_at)] = fields else {
        return Ok(None);
    };
    let created_at = created_at
        .parse()
        .map_err(|_| StoreError::Backend(format!("redis: user {username:?} has a bad created_at")))?;
    Ok(Some(UserRecord {
        username: username.to_owned(),
        display_name,
        password_hash,
        created_at,
    }))
}

impl RedisAccountStore {
    /// The store at `url`; connects on first use.
    pub(crate) fn new(url: &str) -> Result<RedisAccountStore, StoreError> {
        Ok(RedisAccountStore {
            pool: RedisPool::new(url).map_err(|e| StoreError::Unavailable(format!("redis: {e}")))?,
            scripts: Scripts {
                create_user: Script::new(CREATE_USER),
                remove_user: Script::new(REMOVE_USER),
                set_display_name: Script::new(SET_DISPLAY_NAME),
                set_password_hash: Script::new(SET_PASSWORD_HASH),
                create_session: Script::new(CREATE_SESSION),
                revoke_session: Script::new(REVOKE_SESSION),
                revoke_sessions_of: Script::new(REVOKE_SESSIONS_OF),
                users: Script::new(USERS_SCRIPT),
            },
        })
    }

    fn run<T>(&self, call: impl FnMut(&mut Connection) -> redis::RedisResult<T>) -> Result<T, StoreError> {
        self.pool.run(call).map_err(backend)
    }
}

impl AccountStore for RedisAccountStore {
    fn create_user(&self, user: &UserRecord) -> Result<(), StoreError> {
        let created: i64 = self.run(|c| {
            self.scripts
                .create_user
                .key(USERS)
                .key(NAMES)
                .key(user_key(&user.username))
                .arg(&user.username)
                .arg(&user.display_name)
                .arg(&user.password_hash)
                .arg(user.created_at)
                .arg(name_key(&user.display_name))
                .invoke(c)
        })?;
        if created == 1 { Ok(()) } else { Err(StoreError::Taken) }
    }

    fn user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let fields: [Option<String>; 3] =
            self.run(|c| redis::cmd("HMGET").arg(user_key(username)).arg(&USER_FIELDS).query(c))?;
        user_from(username, fields)
    }

    fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        type Row = (String, Option<String>, Option<String>, Option<String>);
        let rows: Vec<Row> = self.run(|c| self.scripts.users.key(USERS).arg(format!("{PREFIX}user:")).invoke(c))?;
        let mut users = Vec::with_capacity(rows.len());
        for (username, display_name, password_hash, created_at) in rows {
            users.extend(user_from(&username, [display_name, password_hash, created_at])?);
        }
        users.sort_by(|a, b| a.username.cmp(&b.username));
        Ok(users)
    }

    fn remove_user(&self, username: &str) -> Result<bool, StoreError> {
        let removed: i64 = self.run(|c| {
            self.scripts
                .remove_user
                .key(USERS)
                .key(NAMES)
                .key(user_key(username))
                .arg(username)
                .invoke(c)
        })?;
        Ok(removed == 1)
    }

    fn set_password_hash(&self, username: &str, hash: &str) -> Result<bool, StoreError> {
        let set: i64 = self.run(|c| {
            self.scripts
                .set_password_hash
                .key(user_key(username))
                .arg(hash)
                .invoke(c)
        })?;
        Ok(set == 1)
    }

    fn set_display_name(&self, username: &str, name: &str) -> Result<bool, StoreError> {
        let set: i64 = self.run(|c| {
            self.scripts
                .set_display_name
                .key(NAMES)
                .key(user_key(username))
                .arg(name)
                .arg(name_key(name))
                .invoke(c)
        })?;
        Ok(set == 1)
    }

    fn create_session(&self, key: &str, session: &SessionRecord) -> Result<(), StoreError> {
        let value = serde_json::to_string(session).map_err(|e| StoreError::Backend(e.to_string()))?;
        // Redis refuses expiry times past 64-bit milliseconds; "never" is
        // the end of year 9999 then.
        let expires_at = session.expires_at.min(LATEST_EXPIRY);
        self.run(|c| {
            self.scripts
                .create_session
                .key(session_key(key))
                .key(sessions_of_key(&session.user))
                .arg(&value)
                .arg(expires_at)
                .arg(key)
                .arg(SWEEP_SESSIONS_ABOVE)
                .arg(format!("{PREFIX}session:"))
                .invoke::<i64>(c)
        })?;
        Ok(())
    }

    fn session(&self, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        let value: Option<String> = self.run(|c| redis::cmd("GET").arg(session_key(key)).query(c))?;
        value
            .map(|value| serde_json::from_str(&value))
            .transpose()
            .map_err(|e| StoreError::Backend(format!("redis: bad session record: {e}")))
    }

    fn revoke_session(&self, key: &str) -> Result<(), StoreError> {
        self.run(|c| {
            self.scripts
                .revoke_session
                .key(session_key(key))
                .arg(key)
                .arg(format!("{PREFIX}sessions:"))
                .invoke::<i64>(c)
        })?;
        Ok(())
    }

    fn revoke_sessions_of(&self, username: &str) -> Result<usize, StoreError> {
        let count: usize = self.run(|c| {
            self.scripts
                .revoke_sessions_of
                .key(sessions_of_key(username))
                .arg(format!("{PREFIX}session:"))
                .invoke(c)
        })?;
        Ok(count)
    }

    fn display_name_taken(&self, key: &str) -> Result<bool, StoreError> {
        self.run(|c| redis::cmd("HEXISTS").arg(NAMES).arg(key).query(c))
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::contract;
    use super::*;
    use crate::test_support::TestRedis;

    fn flush(redis: &TestRedis) {
        let mut c = redis::Client::open(redis.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        redis::cmd("FLUSHALL").query::<()>(&mut c).unwrap();
    }

    #[test]
    fn the_redis_store_keeps_the_contract() {
        let redis = TestRedis::start();
        contract::all(|| {
            flush(&redis);
            Box::new(RedisAccountStore::new(&redis.url).unwrap())
        });
    }

    #[test]
    fn sessions_expire_in_redis_and_leave_no_keys_behind() {
        let redis = TestRedis::start();
        let store = RedisAccountStore::new(&redis.url).unwrap();
        let mut c = redis::Client::open(redis.url.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let expires_at = crate::token::unix_now() + 600;
        let record = SessionRecord {
            user: "alice".into(),
            expires_at,
        };
        store.create_session("k", &record).unwrap();
        let ttl: i64 = redis::cmd("TTL").arg(session_key("k")).query(&mut c).unwrap();
        assert!((590..=600).contains(&ttl), "TTL {ttl}");
        let set_ttl: i64 = redis::cmd("TTL").arg(sessions_of_key("alice")).query(&mut c).unwrap();
        assert!(
            (590..=600).contains(&set_ttl),
            "the per-user set expires with its last session: {set_ttl}"
        );
        store.revoke_session("k").unwrap();
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
        assert!(keys.is_empty(), "revoking cleans the per-user set too: {keys:?}");

        // An already expired session is gone at once; a user's set is swept
        // of dead entries as it grows.
        for i in 0..=SWEEP_SESSIONS_ABOVE {
            let dead = SessionRecord {
                user: "bob".into(),
                expires_at: 1,
            };
            store.create_session(&format!("dead{i}"), &dead).unwrap();
        }
        assert_eq!(store.session("dead0").unwrap(), None);
        store
            .create_session(
                "live",
                &SessionRecord {
                    user: "bob".into(),
                    expires_at,
                },
            )
            .unwrap();
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(sessions_of_key("bob"))
            .query(&mut c)
            .unwrap();
        assert_eq!(members, ["live"]);
    }

    #[test]
    fn every_key_shares_one_hash_tag() {
        for key in [USERS, NAMES, &user_key("a"), &session_key("k"), &sessions_of_key("a")] {
            assert!(key.starts_with("rookery:{accounts}:"), "{key}");
        }
    }

    #[test]
    fn an_unreachable_redis_is_a_backend_error() {
        let store = RedisAccountStore::new(&crate::test_support::unreachable_redis_url()).unwrap();
        assert!(matches!(store.session("k"), Err(StoreError::Backend(_))));
        assert!(matches!(
            store.create_user(&contract::user("a", "A")),
            Err(StoreError::Backend(_))
        ));
    }
}
