//! The Lua scripts the Redis engine runs, and the key layout they share.
//!
//! Every key of one room carries the hash tag `{<channel>/<room>}` (channel ids
//! cannot contain `/`, so the tag is unambiguous), so a room's scripts touch one
//! Redis Cluster slot. Node bookkeeping shares the tag `{nodes}`. Scripts are
//! sent with EVALSHA; the `redis` crate loads them again on `NOSCRIPT` (after a
//! Redis restart or `SCRIPT FLUSH`).

use std::sync::LazyLock;

use redis::Script;

/// Prefix of every key Rookery writes.
const PREFIX: &str = "rookery";

/// The keys of one room.
pub(crate) struct RoomKeys {
    /// Hash `epoch`, `last`: the room's incarnation and newest offset.
    pub meta: String,
    /// Stream of the room's history; entry ids are `<offset>-0`.
    pub log: String,
    /// Hash client id → `{"n": node, "m": member}` of every subscriber on every node.
    pub members: String,
    /// Pub/sub channel of the room's messages and presence events.
    pub events: String,
    /// Hash `#` → eviction counter, `u:<user>` → the counter at that user's
    /// latest eviction, `n` → the notice: what a node that missed eviction
    /// events catches up on.
    pub evicted: String,
}

impl RoomKeys {
    pub fn new(channel: &str, room: &str) -> RoomKeys {
        let tag = format!("{PREFIX}:{{{channel}/{room}}}");
        RoomKeys {
            meta: format!("{tag}:meta"),
            log: format!("{tag}:log"),
            members: format!("{tag}:members"),
            events: format!("{tag}:events"),
            evicted: format!("{tag}:evicted"),
        }
    }
}

/// Set of the rooms of a channel that have (or recently had) members; REST reads prune it.
pub(crate) fn channel_rooms(channel: &str) -> String {
    format!("{PREFIX}:rooms:{channel}")
}

/// Set of every registered node id.
pub(crate) const NODES: &str = "rookery:{nodes}:all";

/// A node's lease: exists while the node heartbeats.
pub(crate) fn lease(node: &str) -> String {
    format!("{PREFIX}:{{nodes}}:lease:{node}")
}

/// Set of `[channel, room, client]` JSON entries: the node's members, for cleanup when it dies.
pub(crate) fn node_members(node: &str) -> String {
    format!("{PREFIX}:{{nodes}}:members:{node}")
}

/// Hash channel → connection count of one node, refreshed with its lease.
pub(crate) fn node_stats(node: &str) -> String {
    format!("{PREFIX}:{{nodes}}:stats:{node}")
}

/// Hash `<channel>/<name key>` → `1`: the display names live on one node
/// (PROTOCOL.md §11). Channel ids cannot contain `/`, so the first one splits.
pub(crate) fn node_names(node: &str) -> String {
    format!("{NODE_PREFIX}names:{node}")
}

/// The field of a live name in a node's [`node_names`] hash.
pub(crate) fn name_field(channel: &str, key: &str) -> String {
    format!("{channel}/{key}")
}

/// What every `{nodes}` key starts with; [`NAME_LIVE`] builds per-node keys from it.
pub(crate) const NODE_PREFIX: &str = "rookery:{nodes}:";

/// Places one message: KEYS meta, log, events; ARGV new epoch, history size,
/// stream TTL, meta TTL, timestamp, message, client id, user, envelope tail.
/// Returns `{epoch, offset}`.
///
/// A missing meta starts a new epoch and drops any stream left without it, so
/// offsets never collide with entries of an older incarnation.
pub(crate) static PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  redis.call('DEL', KEYS[2])
end
local offset = redis.call('HINCRBY', KEYS[1], 'last', 1)
local size = tonumber(ARGV[2])
if size > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', size, offset .. '-0',
    't', ARGV[5], 'm', ARGV[6], 'c', ARGV[7], 'u', ARGV[8])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', KEYS[3], '{"k":"m","o":' .. offset .. ',"e":"' .. epoch .. '",' .. ARGV[9])
return {epoch, offset}
"#,
    )
});

/// Reads a room's history: KEYS meta, log; ARGV how many latest entries.
/// Returns `{epoch or false, last, entries newest first}`.
pub(crate) static HISTORY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'last')
local entries = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', ARGV[1])
return {meta[1], tonumber(meta[2] or '0'), entries}
"#,
    )
});

/// Registers a member: KEYS members, events; ARGV client id, stored value,
/// event (empty: no event). Returns 1 if it was not registered yet (an event was sent).
pub(crate) static JOIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  if ARGV[3] ~= '' then redis.call('PUBLISH', KEYS[2], ARGV[3]) end
  return 1
end
return 0
"#,
    )
});

/// Removes a member: KEYS members, events; ARGV client id, event (empty: no
/// event). The HDEL is the claim: of several nodes removing the same member
/// (its own node and reapers), exactly one sends the leave event.
pub(crate) static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  if ARGV[2] ~= '' then redis.call('PUBLISH', KEYS[2], ARGV[2]) end
  return 1
end
return 0
"#,
    )
});

/// Evicts a user from a room on every node: KEYS evicted, events; ARGV user,
/// TTL, envelope tail (`"u":…,"m":…}`), notice. Numbers the eviction, records
/// it (and the notice) for nodes that miss the event, and publishes
/// `{"k":"x","o":number,…}`.
pub(crate) static EVICT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local number = redis.call('HINCRBY', KEYS[1], '#', 1)
redis.call('HSET', KEYS[1], 'u:' .. ARGV[1], number, 'n', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], '{"k":"x","o":' .. number .. ',' .. ARGV[3])
return number
"#,
    )
});

/// Renews a lease: KEYS nodes, lease, stats; ARGV node id, lease seconds, then
/// channel/count pairs. Returns 1 if the node was not registered (first start,
/// or reaped after its lease expired: its members must be registered again).
pub(crate) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('SET', KEYS[2], '1', 'EX', ARGV[2])
redis.call('DEL', KEYS[3])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[3], ARGV[2])
return redis.call('SADD', KEYS[1], ARGV[1])
"#,
    )
});

/// Claims a dead node's cleanup: KEYS nodes, lease, members, names; ARGV node
/// id. Its live names go with the claim; returns its member entries to the one
/// caller that claimed it, else nothing.
pub(crate) static REAP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[2]) == 1 then return {} end
if redis.call('SREM', KEYS[1], ARGV[1]) == 0 then return {} end
local entries = redis.call('SMEMBERS', KEYS[3])
redis.call('DEL', KEYS[3], KEYS[4])
return entries
"#,
    )
});

/// Whether a live node has a display name: KEYS nodes; ARGV the `{nodes}` key
/// prefix, the name's field. Returns 1 if a registered node whose lease still
/// runs has the field, so a dead node's names are free as soon as its lease
/// expires, before any reaper has run. Every key is in the `{nodes}` slot.
pub(crate) static NAME_LIVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if redis.call('HEXISTS', ARGV[1] .. 'names:' .. node, ARGV[2]) == 1
    and redis.call('EXISTS', ARGV[1] .. 'lease:' .. node) == 1 then
    return 1
  end
end
return 0
"#,
    )
});
