//! Presence across nodes: member records and events, node leases, and the
//! cleanup of a dead node's members.
//!
//! Every subscriber is registered in its room's `members` hash (with its node)
//! and in its node's `members` set. Observable rooms also get a join or leave
//! event on the room's pub/sub channel; other nodes hand it to their local
//! subscribers. A node renews its lease every third of `node_lease_seconds`;
//! a node whose lease has expired is reaped by whichever live node claims it
//! first ([`scripts::REAP`]), and each of its members leaves exactly once
//! because the leave itself is claimed by an atomic `HDEL` ([`scripts::LEAVE`]).
//!
//! Live display names (PROTOCOL.md §11) are presence too: each node keeps the
//! names its connections carry in its own hash ([`scripts::node_names`]),
//! which goes with its lease ([`scripts::NAME_LIVE`] ignores a node whose lease
//! ran out) and with its reaping.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::scripts::{self, RoomKeys};
use super::{Command, Unavailable, within};
use crate::engine::Delivery;
use crate::ids::{ClientId, RoomName};
use crate::protocol::Member;

/// The value of a member in its room's `members` hash.
pub(super) fn record(node: &str, member: &Member) -> String {
    json!({ "n": node, "m": member }).to_string()
}

/// The pub/sub event announcing `member`'s join.
pub(super) fn join_event(node: &str, member: &Member) -> String {
    json!({ "k": "j", "n": node, "m": member }).to_string()
}

/// The pub/sub event announcing that `client` left.
pub(super) fn leave_event(node: &str, client: &str) -> String {
    json!({ "k": "l", "n": node, "c": client }).to_string()
}

/// An entry of a node's `members` set.
fn node_entry(channel: &str, room: &str, client: &str) -> String {
    json!([channel, room, client]).to_string()
}

/// A member as encoded by [`record`] or [`join_event`] (`m`).
pub(super) fn decode_member(value: &Value) -> Option<Arc<Member>> {
    Some(Arc::new(Member {
        id: ClientId::restore(value.get("id")?.as_str()?),
        auth_data: value.get("authData").cloned(),
        client_data: value.get("clientData").cloned(),
    }))
}

/// Registers `member` of `room` as this node's; returns whether it was new.
pub(super) async fn register(
    conn: &mut ConnectionManager,
    node: &str,
    channel: &str,
    room: &RoomName,
    member: &Member,
) -> Result<bool, Unavailable> {
    let keys = RoomKeys::new(channel, room.as_str());
    let event = if room.is_observable() {
        join_event(node, member)
    } else {
        String::new()
    };
    // The node's entry first: a node that dies between the two steps leaves
    // an entry whose member is not registered, which reaping ignores, never a
    // registered member that no reaper can find.
    within(
        redis::pipe()
            .sadd(
                scripts::node_members(node),
                node_entry(channel, room.as_str(), member.id.as_str()),
            )
            .ignore()
            .sadd(scripts::channel_rooms(channel), room.as_str())
            .ignore()
            .query_async::<()>(conn),
    )
    .await?;
    let new: i64 = within(
        scripts::JOIN
            .key(&keys.members)
            .key(&keys.events)
            .arg(member.id.as_str())
            .arg(record(node, member))
            .arg(event)
            .invoke_async(conn),
    )
    .await?;
    Ok(new == 1)
}

/// Removes a member of `room` that was registered by `node`; sends the leave event if this call removed it.
pub(super) async fn unregister(
    conn: &mut ConnectionManager,
    node: &str,
    channel: &str,
    room: &RoomName,
    client: &str,
) -> Result<bool, Unavailable> {
    let keys = RoomKeys::new(channel, room.as_str());
    let event = if room.is_observable() {
        leave_event(node, client)
    } else {
        String::new()
    };
    let removed: i64 = within(
        scripts::LEAVE
            .key(&keys.members)
            .key(&keys.events)
            .arg(client)
            .arg(event)
            .invoke_async(conn),
    )
    .await?;
    within(
        redis::cmd("SREM")
            .arg(scripts::node_members(node))
            .arg(node_entry(channel, room.as_str(), client))
            .query_async::<()>(conn),
    )
    .await?;
    Ok(removed == 1)
}

/// Claims `dead`'s cleanup (only if its lease is gone) and removes its members.
pub(super) async fn reap(conn: &mut ConnectionManager, dead: &str) -> Result<usize, Unavailable> {
    let entries: Vec<String> = within(
        scripts::REAP
            .key(scripts::NODES)
            .key(scripts::lease(dead))
            .key(scripts::node_members(dead))
            .key(scripts::node_names(dead))
            .arg(dead)
            .invoke_async(conn),
    )
    .await?;
    let mut removed = 0;
    for entry in &entries {
        let Ok((channel, room, client)) = serde_json::from_str::<(String, String, String)>(entry) else {
            continue;
        };
        // It was a valid room name when it was registered; today's length limit does not apply.
        let Ok(room) = RoomName::parse(&room, usize::MAX) else {
            continue;
        };
        if unregister(conn, dead, &channel, &room, &client).await? {
            removed += 1;
        }
    }
    if !entries.is_empty() {
        debug!(node = dead, removed, "reaped the members of a node whose lease expired");
    }
    Ok(removed)
}

/// Makes `node`'s names hash exactly `fields`, atomically: after a reap, a
/// Redis restart, or changes that failed while Redis was away.
pub(super) async fn write_names<'a>(
    conn: &mut ConnectionManager,
    node: &str,
    fields: impl ExactSizeIterator<Item = &'a String>,
) -> Result<(), Unavailable> {
    let key = scripts::node_names(node);
    let mut pipe = redis::pipe();
    pipe.atomic().del(&key).ignore();
    if fields.len() > 0 {
        pipe.hset_multiple(&key, &fields.map(|f| (f.as_str(), 1)).collect::<Vec<_>>())
            .ignore();
    }
    within(pipe.query_async::<()>(conn)).await
}

/// Records one change of `node`'s live names.
pub(super) async fn name_changed(
    conn: &mut ConnectionManager,
    node: &str,
    field: &str,
    live: bool,
) -> Result<(), Unavailable> {
    let key = scripts::node_names(node);
    let mut command = if live { redis::cmd("HSET") } else { redis::cmd("HDEL") };
    command.arg(&key).arg(field);
    if live {
        command.arg(1);
    }
    within(command.query_async::<()>(conn)).await
}

/// Whether a live node has `field` among its names.
pub(super) async fn name_live(conn: &mut ConnectionManager, field: &str) -> Result<bool, Unavailable> {
    let live: i64 = within(
        scripts::NAME_LIVE
            .key(scripts::NODES)
            .arg(scripts::NODE_PREFIX)
            .arg(field)
            .invoke_async(conn),
    )
    .await?;
    Ok(live == 1)
}

/// What the heartbeat task needs.
pub(super) struct Heartbeat {
    pub conn: ConnectionManager,
    pub node: Arc<str>,
    pub lease: Duration,
    pub channels: Vec<String>,
    pub delivery: Arc<dyn Delivery>,
    pub commands: mpsc::UnboundedSender<Command>,
    pub stopping: Arc<AtomicBool>,
}

impl Heartbeat {
    /// Renews this node's lease and reaps dead nodes until the engine stops.
    pub async fn run(mut self) {
        let period = (self.lease / 3).max(Duration::from_millis(200));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut registered = false;
        loop {
            tick.tick().await;
            if self.stopping.load(Ordering::Acquire) || self.commands.is_closed() {
                return;
            }
            match self.beat().await {
                Ok(added) => {
                    // Added again after our first beat: we were reaped (or Redis lost
                    // everything), so our members must be registered again.
                    if added && registered {
                        warn!(node = %self.node, "this node's lease had expired; registering its members again");
                        let _ = self.commands.send(Command::Reregister);
                    }
                    registered = true;
                }
                Err(error) => {
                    debug!(%error, "heartbeat failed");
                    continue;
                }
            }
            if let Err(error) = self.reap_dead().await {
                debug!(%error, "reaping dead nodes failed");
            }
        }
    }

    async fn beat(&mut self) -> Result<bool, Unavailable> {
        let mut invocation = scripts::HEARTBEAT.prepare_invoke();
        invocation
            .key(scripts::NODES)
            .key(scripts::lease(&self.node))
            .key(scripts::node_stats(&self.node))
            .arg(&*self.node)
            .arg(self.lease.as_secs().max(1));
        for channel in &self.channels {
            invocation.arg(channel).arg(self.delivery.connections(channel));
        }
        let added: i64 = within(invocation.invoke_async(&mut self.conn)).await?;
        Ok(added == 1)
    }

    async fn reap_dead(&mut self) -> Result<(), Unavailable> {
        let nodes: Vec<String> = within(redis::cmd("SMEMBERS").arg(scripts::NODES).query_async(&mut self.conn)).await?;
        for node in nodes.iter().filter(|n| **n != *self.node) {
            reap(&mut self.conn, node).await?;
        }
        Ok(())
    }
}
