//! Micro-benchmarks of the pieces every published message goes through:
//! decoding the client frame, the permission decision (first time and cached),
//! encoding the delivery frame once, and fanning it out to 1,000 outboxes.
//!
//! Run with `cargo bench --bench message_path`. These print figures; they
//! never fail on speed.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use rookery::broker::{Channel, Outbox, SubscribeRequest, Subscriber};
use rookery::config::{ChannelConfig, ExpiryMode, Secret};
use rookery::ids::{ClientId, RoomName};
use rookery::permissions::{DecisionCache, Permissions};
use rookery::policy::Policy;
use rookery::protocol::{self, Member, Message};
use serde_json::value::RawValue;

const PUBLISH_FRAME: &str =
    r#"{"type":"publish","room":"observable-room","message":{"text":"Hello, how is everyone doing today?","n":42}}"#;

fn tutorial_policy() -> Arc<Policy> {
    let text = include_str!("../policies/default.toml");
    Arc::new(Policy::parse("default", text, Path::new("policies/default.toml")).unwrap())
}

fn decode(c: &mut Criterion) {
    c.bench_function("decode publish frame", |b| {
        b.iter(|| protocol::decode(black_box(PUBLISH_FRAME)).unwrap())
    });
}

fn decide(c: &mut Criterion) {
    let claim = serde_json::Value::Object(tutorial_policy().render("r3k:abcdefghijklmnop"));
    let permissions = Permissions::from_claim(&claim).unwrap();
    // The look-around key is the expensive one: a private room of someone else.
    let room = "private-room-r3k:qrstuvwxyz012345";
    c.bench_function("decide first time (tutorial token, look-around)", |b| {
        b.iter(|| permissions.decide(black_box(room)))
    });
    let mut cache = DecisionCache::new(1024);
    cache.decide(&permissions, room);
    c.bench_function("decide cached", |b| {
        b.iter(|| cache.decide(&permissions, black_box(room)))
    });
}

fn encode(c: &mut Criterion) {
    let message = Message {
        room: RoomName::parse("observable-room", 256).unwrap(),
        message: RawValue::from_string(r#"{"text":"Hello, how is everyone doing today?","n":42}"#.into()).unwrap(),
        client_id: Some(ClientId::generate("r3k")),
        id: "AbCdEfGh-00000000000000000042".into(),
        timestamp: 1_763_772_000,
    };
    c.bench_function("encode delivery frame", |b| {
        b.iter(|| black_box(&message).publish_frame())
    });
}

fn fanout(c: &mut Criterion) {
    const SUBSCRIBERS: usize = 1000;
    let channel = Channel::new(ChannelConfig {
        id: "bench".into(),
        secret: Secret::new("secret"),
        require_auth: false,
        policy: tutorial_policy(),
        token_ttl_seconds: 60,
        history_size: 100,
        history_max_age_seconds: 3600,
        expiry: ExpiryMode::OnAuthenticate,
        expiry_grace_seconds: 0,
        jwt_leeway_seconds: 0,
        guests: true,
    });
    let room = RoomName::parse("bench-room", 256).unwrap();
    let mut readers = Vec::with_capacity(SUBSCRIBERS);
    for conn in 0..SUBSCRIBERS as u64 {
        let (outbox, reader) = Outbox::new(4096);
        let member = Arc::new(Member {
            id: ClientId::generate("r3k"),
            auth_data: None,
            client_data: None,
        });
        let request = SubscribeRequest {
            conn,
            callback: None,
            history_count: 0,
            history_since: None,
            allowance: 0,
        };
        channel.subscribe(&room, Subscriber { outbox, member }, request);
        readers.push(reader);
    }
    let body = RawValue::from_string(r#"{"text":"Hello, how is everyone doing today?","n":42}"#.into()).unwrap();
    let mut drained = Vec::new();
    c.bench_function("publish to 1,000 subscribers", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                // Stay below the outbox capacity, draining outside the timed part.
                let chunk = left.min(1000);
                let start = Instant::now();
                for _ in 0..chunk {
                    let published = channel.publish(&room, body.clone(), None);
                    debug_assert_eq!(published.delivered, SUBSCRIBERS);
                }
                timed += start.elapsed();
                for reader in &mut readers {
                    reader.take(&mut drained);
                    drained.clear();
                }
                left -= chunk;
            }
            timed
        })
    });
}

criterion_group!(message_path, decode, decide, encode, fanout);
criterion_main!(message_path);
