//! Two cluster engines ("nodes") in one process against a real `redis-server`
//! on a free loopback port, with recording [`Delivery`]s: what each node's
//! broker would be handed. Without `redis-server` on the PATH these fail, loudly
//! (`scripts/test.sh` installs it).

use std::sync::Mutex;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::test_support::TestRedis;

const CHANNEL: &str = "c";
/// Long enough that nothing in a test waits for it.
const DEADLINE: Duration = Duration::from_secs(10);

/// What one node's broker was handed.
#[derive(Default)]
struct Recorder {
    /// This node's subscribers of the room, as the broker would hold them.
    local: Mutex<Vec<Arc<Member>>>,
    evictions: Mutex<Vec<(String, String, String)>>,
    leaves: Mutex<Vec<ClientId>>,
    messages: Mutex<Vec<serde_json::Value>>,
}

impl Delivery for Recorder {
    fn deliver(&self, _channel: &str, message: &Arc<Message>) -> usize {
        let value = serde_json::from_str(message.message.get()).unwrap();
        self.messages.lock().unwrap().push(value);
        1
    }

    fn deliver_presence(&self, _channel: &str, _room: &RoomName, event: Presence) {
        if let Presence::Leave(id) = event {
            self.leaves.lock().unwrap().push(id);
        }
    }

    fn evict_user(&self, channel: &str, room: &RoomName, user: &str, notice: &Frame) -> Vec<Arc<Member>> {
        self.evictions
            .lock()
            .unwrap()
            .push((channel.into(), room.to_string(), notice.as_str().to_owned()));
        let mut local = self.local.lock().unwrap();
        let (gone, kept) = local.drain(..).partition(|m| user_of(m) == Some(user));
        *local = kept;
        gone
    }
}

fn user_of(member: &Member) -> Option<&str> {
    member.auth_data.as_ref()?.get("user")?.as_str()
}

fn member(node: &str, user: &str) -> Arc<Member> {
    Arc::new(Member {
        id: ClientId::generate(node),
        auth_data: Some(json!({ "user": user })),
        client_data: None,
    })
}

fn node(redis: &TestRedis, id: &str, lease: Duration) -> (RedisEngine, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let limits = ChannelLimits {
        id: CHANNEL.into(),
        history_size: 10,
        history_max_age_seconds: 3600,
        history_max_bytes: 1 << 20,
    };
    let options = RedisOptions {
        url: redis.url.clone(),
        node_id: id.into(),
        lease,
    };
    let engine = RedisEngine::open(vec![limits], options, recorder.clone()).unwrap();
    (engine, recorder)
}

fn room(name: &str) -> RoomName {
    RoomName::parse(name, 256).unwrap()
}

/// Polls `check` until it holds, failing after [`DEADLINE`].
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let started = tokio::time::Instant::now();
    while !check().await {
        assert!(started.elapsed() < DEADLINE, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Publishes a marker and waits until every recorder has it: whatever was
/// published on the room's channel before it has been handled by then.
async fn barrier(engine: &RedisEngine, room: &RoomName, recorders: &[&Recorder], marker: u64) {
    let draft = Draft {
        message: serde_json::value::RawValue::from_string(json!({ "marker": marker }).to_string()).unwrap(),
        client_id: None,
        user: None,
    };
    engine.publish(CHANNEL, room, draft).await.unwrap();
    for recorder in recorders {
        eventually(&format!("marker {marker} arrives"), async || {
            recorder.messages.lock().unwrap().contains(&json!({ "marker": marker }))
        })
        .await;
    }
}

#[tokio::test]
async fn an_eviction_reaches_every_node_once_and_each_evicted_member_leaves_once() {
    let redis = TestRedis::start();
    let lease = Duration::from_secs(15);
    let ((a, on_a), (b, on_b)) = (node(&redis, "na", lease), node(&redis, "nb", lease));
    let group = room("observable-group-team");
    // Carol has a tab on each node; Erin stays on A, Dave on B. Each local
    // subscriber holds the room, as the broker's subscribe does.
    let (carol_a, erin_a) = (member("na", "carol"), member("na", "erin"));
    let (carol_b, dave_b) = (member("nb", "carol"), member("nb", "dave"));
    on_a.local
        .lock()
        .unwrap()
        .extend([Arc::clone(&carol_a), Arc::clone(&erin_a)]);
    on_b.local
        .lock()
        .unwrap()
        .extend([Arc::clone(&carol_b), Arc::clone(&dave_b)]);
    for (engine, member) in [(&a, &carol_a), (&a, &erin_a), (&b, &carol_b), (&b, &dave_b)] {
        engine.hold(CHANNEL, &group).await;
        engine.member_joined(CHANNEL, &group, member).await;
    }

    let notice = crate::protocol::room_error("Unauthorized", &group);
    a.evict_user(CHANNEL, &group, "carol", &notice).await.unwrap();
    barrier(&a, &group, &[&on_a, &on_b], 1).await;
    let expected = vec![(CHANNEL.to_owned(), group.to_string(), notice.as_str().to_owned())];
    // The sender's node too: both evicted their own connections, once.
    assert_eq!(*on_a.evictions.lock().unwrap(), expected);
    assert_eq!(*on_b.evictions.lock().unwrap(), expected);
    let ids = |recorder: &Recorder| -> Vec<ClientId> {
        recorder.local.lock().unwrap().iter().map(|m| m.id.clone()).collect()
    };
    assert_eq!(ids(&on_a), std::slice::from_ref(&erin_a.id));
    assert_eq!(ids(&on_b), std::slice::from_ref(&dave_b.id));

    // Each node hears the other's evicted member leave; then nothing more.
    eventually("A hears B's Carol leave", async || {
        on_a.leaves.lock().unwrap().contains(&carol_b.id)
    })
    .await;
    eventually("B hears A's Carol leave", async || {
        on_b.leaves.lock().unwrap().contains(&carol_a.id)
    })
    .await;
    barrier(&b, &group, &[&on_a, &on_b], 2).await;
    assert_eq!(*on_a.leaves.lock().unwrap(), vec![carol_b.id.clone()]);
    assert_eq!(*on_b.leaves.lock().unwrap(), vec![carol_a.id.clone()]);
    // Redis's presence agrees: only Erin and Dave are left, and A's cleanup
    // entries (what a reaper would remove) no longer list Carol.
    let mut conn = redis.connection().await;
    let keys = RoomKeys::new(CHANNEL, group.as_str());
    let members: Vec<String> = redis::cmd("HKEYS")
        .arg(&keys.members)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut expected_members = [erin_a.id.as_str(), dave_b.id.as_str()];
    expected_members.sort();
    let mut members = members;
    members.sort();
    assert_eq!(members, expected_members);
    let entries: Vec<String> = redis::cmd("SMEMBERS")
        .arg(scripts::node_members("na"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        entries,
        [json!([CHANNEL, group.as_str(), erin_a.id.as_str()]).to_string()]
    );

    // A node that does not hold the room has nothing to evict and is not told;
    // its eviction still reaches the nodes that do.
    let (c, on_c) = node(&redis, "nc", lease);
    c.evict_user(CHANNEL, &group, "dave", &notice).await.unwrap();
    eventually("B evicts Dave", async || on_b.local.lock().unwrap().is_empty()).await;
    assert_eq!(on_b.evictions.lock().unwrap().len(), 2);
    // B's last holder is gone, so B no longer receives the room; A still does.
    eventually("B releases the room", async || b.rooms_in_memory() == 0).await;
    barrier(&c, &group, &[&on_a], 3).await;
    assert!(on_c.evictions.lock().unwrap().is_empty());
    assert!(!on_b.messages.lock().unwrap().contains(&json!({ "marker": 3 })));
    assert_eq!(on_a.evictions.lock().unwrap().len(), 2, "A was told, had no Dave");
    assert_eq!(ids(&on_a), std::slice::from_ref(&erin_a.id));

    // Redis gone: the eviction is refused promptly, so the caller can say so and retry.
    drop(redis);
    let started = tokio::time::Instant::now();
    let refused = a.evict_user(CHANNEL, &group, "dave", &notice).await;
    assert!(matches!(refused, Err(EngineError::Unavailable(_))), "{refused:?}");
    assert!(started.elapsed() < COMMAND_TIMEOUT * 3, "{:?}", started.elapsed());
}

#[tokio::test]
async fn live_names_are_seen_by_every_node_and_written_again_after_redis_lost_them() {
    let redis = TestRedis::start();
    let lease = Duration::from_secs(1);
    let ((a, _), (b, _)) = (node(&redis, "na", lease), node(&redis, "nb", lease));
    let sink = a.name_sink();
    // Registered once the first heartbeat has run.
    eventually("both nodes are registered", async || {
        let mut conn = redis.connection().await;
        let nodes: Vec<String> = redis::cmd("SMEMBERS")
            .arg(scripts::NODES)
            .query_async(&mut conn)
            .await
            .unwrap();
        nodes.len() == 2
    })
    .await;
    assert!(!b.name_live(CHANNEL, "ann").await.unwrap());
    sink.name_changed(CHANNEL, "ann", true);
    sink.name_changed(CHANNEL, "bo", true);
    eventually("B sees Ann", async || b.name_live(CHANNEL, "ann").await.unwrap()).await;
    sink.name_changed(CHANNEL, "ann", false);
    eventually("Ann is free", async || !b.name_live(CHANNEL, "ann").await.unwrap()).await;

    // Redis loses everything (Bo too): A's heartbeat finds itself
    // unregistered and writes its names again.
    let mut conn = redis.connection().await;
    redis::cmd("FLUSHALL").query_async::<()>(&mut conn).await.unwrap();
    eventually("Bo is live again", async || b.name_live(CHANNEL, "bo").await.unwrap()).await;
    assert!(
        !b.name_live(CHANNEL, "ann").await.unwrap(),
        "a released name stays released"
    );

    // A stops heartbeating (as if killed): its names are free for the others
    // once its lease expires, and the reap that claims A's cleanup deletes them.
    a.stopping.store(true, Ordering::Release);
    eventually("A's names expire with its lease", async || {
        !b.name_live(CHANNEL, "bo").await.unwrap()
    })
    .await;
    eventually("the reaper deletes A's names", async || {
        let exists: bool = redis::cmd("EXISTS")
            .arg(scripts::node_names("na"))
            .query_async(&mut conn)
            .await
            .unwrap();
        !exists
    })
    .await;
}

#[tokio::test]
async fn an_eviction_a_node_missed_while_away_from_redis_is_applied_when_it_is_back() {
    let redis = TestRedis::start();
    let (b, on_b) = node(&redis, "nb", Duration::from_secs(15));
    let group = room("observable-group-team");
    let (carol, dave) = (member("nb", "carol"), member("nb", "dave"));
    on_b.local
        .lock()
        .unwrap()
        .extend([Arc::clone(&carol), Arc::clone(&dave)]);
    for member in [&carol, &dave] {
        b.hold(CHANNEL, &group).await;
        b.member_joined(CHANNEL, &group, member).await;
    }
    // An eviction published while B's connection was down: recorded, but B
    // never got the event.
    let notice = crate::protocol::room_error("Unauthorized", &group);
    let keys = RoomKeys::new(CHANNEL, group.as_str());
    let mut conn = redis.connection().await;
    redis::pipe()
        .hincr(&keys.evicted, "#", 1)
        .hset_multiple(&keys.evicted, &[("u:carol", "1"), ("n", notice.as_str())])
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    assert!(on_b.evictions.lock().unwrap().is_empty());
    // B loses its connection; once back, it catches up on what it missed.
    for kind in ["normal", "pubsub"] {
        redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg(kind)
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }
    eventually("B evicts Carol", async || !on_b.evictions.lock().unwrap().is_empty()).await;
    let expected = vec![(CHANNEL.to_owned(), group.to_string(), notice.as_str().to_owned())];
    assert_eq!(*on_b.evictions.lock().unwrap(), expected);
    let ids: Vec<ClientId> = on_b.local.lock().unwrap().iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids, std::slice::from_ref(&dave.id));
    // Carol's presence ends too; and the next eviction is not mistaken for a missed one.
    eventually("only Dave is registered", async || {
        let members: Vec<String> = redis::cmd("HKEYS")
            .arg(&keys.members)
            .query_async(&mut conn)
            .await
            .unwrap();
        members == [dave.id.as_str()]
    })
    .await;
    b.evict_user(CHANNEL, &group, "dave", &notice).await.unwrap();
    eventually("B evicts Dave", async || on_b.local.lock().unwrap().is_empty()).await;
    assert_eq!(on_b.evictions.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn a_jump_in_eviction_numbers_makes_a_node_apply_the_ones_it_missed() {
    let redis = TestRedis::start();
    let (b, on_b) = node(&redis, "nb", Duration::from_secs(15));
    let group = room("observable-group-team");
    let (carol, dave, erin) = (member("nb", "carol"), member("nb", "dave"), member("nb", "erin"));
    on_b.local
        .lock()
        .unwrap()
        .extend([Arc::clone(&carol), Arc::clone(&dave), Arc::clone(&erin)]);
    for member in [&carol, &dave, &erin] {
        b.hold(CHANNEL, &group).await;
        b.member_joined(CHANNEL, &group, member).await;
    }
    // Eviction 1 (Carol) was recorded but its event lost; eviction 2 (Dave) arrives.
    let notice = crate::protocol::room_error("Unauthorized", &group);
    let keys = RoomKeys::new(CHANNEL, group.as_str());
    let mut conn = redis.connection().await;
    redis::pipe()
        .hincr(&keys.evicted, "#", 1)
        .hset_multiple(&keys.evicted, &[("u:carol", "1"), ("n", notice.as_str())])
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    b.evict_user(CHANNEL, &group, "dave", &notice).await.unwrap();
    eventually("B evicts Dave and Carol", async || {
        on_b.local.lock().unwrap().len() == 1
    })
    .await;
    barrier(&b, &group, &[&on_b], 1).await;
    let ids: Vec<ClientId> = on_b.local.lock().unwrap().iter().map(|m| m.id.clone()).collect();
    assert_eq!(ids, std::slice::from_ref(&erin.id));
    // Once each: Dave's from the event, Carol's from the record.
    assert_eq!(on_b.evictions.lock().unwrap().len(), 2);
}

fn draft(text: &str) -> Draft {
    Draft {
        message: serde_json::value::RawValue::from_string(json!(text).to_string()).unwrap(),
        client_id: None,
        user: None,
    }
}

#[tokio::test]
async fn while_redis_is_known_to_be_gone_publishes_are_refused_without_waiting_for_it() {
    let redis = TestRedis::start();
    let port = redis.port;
    let (a, _) = node(&redis, "na", Duration::from_secs(15));
    let r = room("r");
    a.publish(CHANNEL, &r, draft("before")).await.unwrap();
    drop(redis);
    // The first refusal may be a request that failed; from then on the
    // engine refuses at once, without a round trip (its own text says so).
    eventually("publishes are refused without asking Redis", async || {
        matches!(
            a.publish(CHANNEL, &r, draft("lost")).await,
            Err(EngineError::Unavailable(text)) if text == "Redis is unreachable"
        )
    })
    .await;
    let _back = TestRedis::start_on(port);
    eventually("publishing resumes once Redis is back", async || {
        a.publish(CHANNEL, &r, draft("after")).await.is_ok()
    })
    .await;
}
