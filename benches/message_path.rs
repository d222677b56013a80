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
use rookery::broker::{Broker, FanOut, Outbox, SubscribeRequest, Subscriber};
use rookery::engine::{Ack, ChannelLimits, Draft, Engine, MessageId, StoreOptions};
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
        user: None,
        id: MessageId {
            epoch: "AbCdEfGh".into(),
            offset: 42,
        },
        timestamp: 1_763_772_000,
    };
    c.bench_function("encode delivery frame", |b| {
        b.iter(|| black_box(&message).publish_frame())
    });
}

fn fanout(c: &mut Criterion) {
    const SUBSCRIBERS: usize = 1000;
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    // The in-memory store: the same engine and writer thread as on disk, without fsync.
    let fanout = FanOut::new(["bench".to_owned()]);
    let limits = ChannelLimits {
        id: "bench".into(),
        history_size: 100,
        history_max_age_seconds: 3600,
        history_max_bytes: 64 << 20,
    };
    let options = StoreOptions {
        path: None,
        commit_wait: Duration::from_millis(2),
        commit_max_messages: 1024,
        fsync: false,
        sweep_interval: Duration::from_secs(60),
    };
    let engine = Engine::local(vec![limits], options, fanout.clone()).unwrap();
    let broker = Broker::new(fanout, engine);
    let channel = Arc::clone(broker.channel("bench").unwrap());
    let room = RoomName::parse("bench-room", 256).unwrap();
    let mut readers = Vec::with_capacity(SUBSCRIBERS);
    for conn in 0..SUBSCRIBERS as u64 {
        let (outbox, reader) = Outbox::new(4096, 4 << 20);
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
        runtime
            .block_on(broker.subscribe(&channel, &room, Subscriber { outbox, member }, request))
            .unwrap();
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
                runtime.block_on(async {
                    for _ in 0..chunk {
                        let draft = Draft {
                            message: body.clone(),
                            client_id: None,
                            user: None,
                        };
                        let published = broker.publish(&channel, &room, draft, Ack::Delivered).await.unwrap();
                        debug_assert_eq!(published.delivered, SUBSCRIBERS);
                    }
                });
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
