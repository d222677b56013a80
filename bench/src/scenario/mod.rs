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
    }));
    clients.extend((0..publishers).map(|i| ClientPlan {
        subscribe: None,
        publish: Some((room.to_owned(), rate, i as u64)),
    }));
    common.into_plan(clients)
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
