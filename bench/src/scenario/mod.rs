//! The benchmark scenarios. Each returns a human summary and one JSON object of figures.

pub mod auth;
pub mod conns;
pub mod floor;
pub mod http;
pub mod load;
pub mod rest;

use std::time::Duration;

use load::{ClientPlan, Plan};

/// `fanout`: one room, `subscribers` receivers, `publishers` senders (not subscribed) at `rate`
/// messages per second each.
pub fn fanout_plan(subscribers: usize, publishers: usize, rate: f64, room: &str, common: PlanCommon) -> Plan {
    let mut clients = Vec::with_capacity(subscribers + publishers);
    clients.extend((0..subscribers).map(|_| ClientPlan {
        subscribe: Some(room.to_owned()),
        publish: None,
        node: 0,
    }));
    clients.extend((0..publishers).map(|i| ClientPlan {
        subscribe: None,
        publish: Some((room.to_owned(), rate, i as u64)),
        node: 0,
    }));
    common.into_plan(clients)
}

/// `cluster`: the `fanout` load over two nodes: subscribers alternate between node 0 (A) and
/// node 1 (B), publishers are all on A. Against one node everyone lands on it (see
/// [`ClientPlan::node`]), which makes the same plan the single-node peer.
pub fn cluster_plan(subscribers: usize, publishers: usize, rate: f64, room: &str, common: PlanCommon) -> Plan {
    let mut plan = fanout_plan(subscribers, publishers, rate, room, common);
    for (i, c) in plan.clients.iter_mut().take(subscribers).enumerate() {
        c.node = i % 2;
    }
    plan
}

/// `rooms`: `rooms` private chats of two clients, each subscribed to its room and publishing to
/// it at `rate` messages per second (each message reaches both members, the sender included).
pub fn rooms_plan(rooms: usize, rate: f64, prefix: &str, common: PlanCommon) -> Plan {
    let clients = (0..rooms * 2)
        .map(|i| {
            let room = format!("{prefix}{}", i / 2);
            ClientPlan {
                subscribe: Some(room.clone()),
                publish: Some((room, rate, i as u64)),
                node: 0,
            }
        })
        .collect();
    common.into_plan(clients)
}

/// Settings common to the message scenarios.
pub struct PlanCommon {
    pub duration: Duration,
    pub drain: Duration,
    pub payload_size: usize,
    pub connect_concurrency: usize,
}

impl PlanCommon {
    fn into_plan(self, clients: Vec<ClientPlan>) -> Plan {
        Plan {
            clients,
            duration: self.duration,
            drain: self.drain,
            payload_size: self.payload_size,
            connect_concurrency: self.connect_concurrency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_plan_splits_subscribers_and_keeps_publishers_on_a() {
        let common = PlanCommon {
            duration: Duration::from_secs(1),
            drain: Duration::from_secs(1),
            payload_size: 110,
            connect_concurrency: 1,
        };
        let plan = cluster_plan(5, 2, 10.0, "bench-x", common);
        let subs: Vec<usize> = plan
            .clients
            .iter()
            .filter(|c| c.subscribe.is_some())
            .map(|c| c.node)
            .collect();
        let pubs: Vec<usize> = plan
            .clients
            .iter()
            .filter(|c| c.publish.is_some())
            .map(|c| c.node)
            .collect();
        assert_eq!(subs, [0, 1, 0, 1, 0]);
        assert_eq!(pubs, [0, 0]);
    }
}
