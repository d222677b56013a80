//! Faults of a deployment (docs/cluster.md "Delivery and order" and "Faults",
//! PROTOCOL.md §7 and §13): what a subscriber sees when its node loses Redis's
//! pub/sub while the rest of the deployment keeps publishing, and when Redis
//! restarts empty.
//!
//! Nothing here relies on a message "probably" falling into a gap: node A
//! reaches Redis as its own ACL user, so `ACL SETUSER nodea off` plus
//! `CLIENT KILL USER nodea` cuts exactly that node off (it cannot log in
//! again) while node B publishes; `ACL SETUSER nodea on` lets it back. Every
//! message B publishes meanwhile is certainly missed by A's pub/sub and can
//! only reach A's subscriber through the engine's gap handling.

use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster_util::{Node, OPEN_HISTORY, Redis, publishes, subscribe};
use crate::util::{Client, RECV_TIMEOUT};

const USER: &str = "nodea";
const PASSWORD: &str = "nodea-password";

/// Redis, node A as the ACL user [`USER`], and node B as the default user.
async fn deployment() -> (Redis, Node, Node) {
    let redis = Redis::start().await;
    redis
        .command(&[
            "ACL",
            "SETUSER",
            USER,
            "on",
            &format!(">{PASSWORD}"),
            "~*",
            "&*",
            "+@all",
        ])
        .await;
    let url = redis.url_as(USER, PASSWORD);
    let (a, b) = tokio::join!(Node::start_at(&url, "", ""), Node::start(&redis));
    (redis, a, b)
}

/// Disables node A's user and kills its connections: A can neither receive
/// nor reconnect until [`let_back`].
async fn cut_off(redis: &Redis) {
    redis.command(&["ACL", "SETUSER", USER, "off"]).await;
    let killed = redis.command(&["CLIENT", "KILL", "USER", USER]).await;
    assert_ne!(killed, ":0", "node A had a connection to kill");
}

/// Asserts that node A, cut off, refuses a publish instead of acknowledging
/// it. It also makes the outage outlast A's first reconnect attempts, all
/// refused by Redis: the node must keep trying (it once gave up for good).
async fn refuses_publishes(a: &Node, room: &str) {
    let (status, body) = a.rest_publish(room, json!("refused")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["message"], "Service unavailable");
}

async fn let_back(redis: &Redis) {
    redis.command(&["ACL", "SETUSER", USER, "on"]).await;
}

/// The offset part of a message id (`<epoch>-<offset>`).
fn offset(frame: &Value) -> u64 {
    let id = frame["id"].as_str().unwrap_or_else(|| panic!("no id in {frame}"));
    let (_, offset) = id.rsplit_once('-').unwrap_or_else(|| panic!("not an id: {id}"));
    offset.parse().unwrap_or_else(|_| panic!("not an id: {id}"))
}

/// Publishes `messages` through `node`'s REST API, asserting each is accepted.
async fn rest_publish_all(node: &Node, room: &str, messages: impl IntoIterator<Item = Value>) {
    for message in messages {
        let (status, body) = node.rest_publish(room, message).await;
        assert_eq!(status, 200, "{body}");
    }
}

/// Subscribes `client` to `room` and returns the first live message's frame,
/// published through `via`, so that the subscriber's node has delivered
/// something (gaps are measured from the last delivered offset).
async fn subscribed_with_one_delivery(client: &mut Client, via: &Node, room: &str) -> Value {
    let reply = subscribe(client, json!({"room": room})).await;
    assert_eq!(reply.get("error"), None, "{reply}");
    rest_publish_all(via, room, [json!("first")]).await;
    let first = client.recv().await;
    assert_eq!(first["type"], "publish", "{first}");
    assert_eq!(first["message"], "first");
    first
}

#[tokio::test]
async fn a_gap_in_pub_sub_is_filled_from_the_stream_in_order_once() {
    let (redis, a, b) = deployment().await;
    let room = "gap";
    let mut reader = a.client().await;
    let first = subscribed_with_one_delivery(&mut reader, &b, room).await;

    cut_off(&redis).await;
    let missed = 20;
    assert!(missed < OPEN_HISTORY, "the stream keeps them all");
    rest_publish_all(&b, room, (0..missed).map(|i| json!(i))).await;
    refuses_publishes(&a, room).await;
    let_back(&redis).await;

    // Only A's recovery can deliver these: its pub/sub connection was gone.
    let got = publishes(&mut reader, missed).await;
    let values: Vec<i64> = got.iter().map(|f| f["message"].as_i64().unwrap()).collect();
    assert_eq!(values, (0..missed as i64).collect::<Vec<_>>(), "all, in order");
    let offsets: Vec<u64> = got.iter().map(offset).collect();
    let expected: Vec<u64> = (offset(&first) + 1..=offset(&first) + missed as u64).collect();
    assert_eq!(
        offsets, expected,
        "consecutive offsets right after the last one delivered"
    );
    let epoch = |f: &Value| f["id"].as_str().unwrap().rsplit_once('-').unwrap().0.to_owned();
    assert!(got.iter().all(|f| epoch(f) == epoch(&first)), "the same epoch");

    // Each once: a live message published after them is the very next frame,
    // on the same connection (it was never dropped).
    rest_publish_all(&b, room, [json!("live")]).await;
    let next = reader.recv().await;
    assert_eq!(next["message"], "live", "no duplicate before the live message: {next}");
    assert_eq!(offset(&next), offset(&first) + missed as u64 + 1);
    assert_eq!(a.metric("rookery_cluster_gap_fills_total").await, 1.0);
    assert_eq!(a.metric("rookery_cluster_resyncs_total").await, 0.0);
    // B never lost anything.
    assert_eq!(b.metric("rookery_cluster_gap_fills_total").await, 0.0);
}

#[tokio::test]
async fn a_gap_the_stream_cannot_fill_drops_the_subscribers_who_then_recover_with_recovered_false() {
    let (redis, a, b) = deployment().await;
    let room = "trimmed";
    let mut reader = a.client().await;
    let first = subscribed_with_one_delivery(&mut reader, &b, room).await;
    // A second subscriber of another room on A is not affected.
    let mut bystander = a.client().await;
    subscribe(&mut bystander, json!({"room": "elsewhere"})).await;

    cut_off(&redis).await;
    // More than the stream keeps: the oldest missed ones are trimmed.
    let missed = OPEN_HISTORY + 10;
    rest_publish_all(&b, room, (0..missed).map(|i| json!(i))).await;
    refuses_publishes(&a, room).await;
    let_back(&redis).await;

    // What the client sees: not one of the missed messages (never a later one
    // without the earlier ones), then the connection ends without a close
    // frame, which official clients answer by reconnecting.
    let (frames, close_frame) = reader.drain_until_closed().await;
    assert!(!close_frame, "dropped without a close frame, so clients reconnect");
    assert!(
        frames.iter().all(|f| f["type"] != "publish"),
        "nothing of the gap was delivered: {frames:?}"
    );
    assert_eq!(a.metric("rookery_cluster_resyncs_total").await, 1.0);
    assert_eq!(a.metric("rookery_cluster_gap_fills_total").await, 0.0);

    // The reconnect: history_since the last id it had says what it lost.
    let mut back = a.client().await;
    let reply = subscribe(&mut back, json!({"room": room, "history_since": first["id"]})).await;
    assert_eq!(reply.get("error"), None, "{reply}");
    assert_eq!(reply["recovered"], false, "{reply}");
    let history: Vec<Value> = {
        let mut history = Vec::with_capacity(OPEN_HISTORY);
        for _ in 0..OPEN_HISTORY {
            history.push(back.recv().await);
        }
        history
    };
    assert!(history.iter().all(|f| f["type"] == "history_message"), "{history:?}");
    let values: Vec<i64> = history.iter().map(|f| f["message"].as_i64().unwrap()).collect();
    let retained = (missed - OPEN_HISTORY) as i64..missed as i64;
    assert_eq!(
        values,
        retained.collect::<Vec<_>>(),
        "the retained history, oldest first"
    );
    let indices: Vec<u64> = history.iter().map(|f| f["index"].as_u64().unwrap()).collect();
    assert_eq!(indices, (0..OPEN_HISTORY as u64).collect::<Vec<_>>());
    // And live delivery carries on after it, with nothing in between.
    rest_publish_all(&b, room, [json!("live")]).await;
    let next = back.recv().await;
    assert_eq!(
        (&next["type"], &next["message"]),
        (&json!("publish"), &json!("live")),
        "{next}"
    );

    // The other room on A had no gap: its subscriber is still connected.
    rest_publish_all(&b, "elsewhere", [json!("still here")]).await;
    assert_eq!(bystander.recv().await["message"], "still here");
}

/// Publishes through `node` until Redis accepts again; returns the accepted
/// message (each attempt carries its own text, so a refused one can never be
/// mistaken for it).
async fn publish_once_redis_is_back(node: &Node, room: &str) -> (Value, Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for attempt in 0.. {
        let message = json!(format!("after {attempt}"));
        let (status, body) = node.rest_publish(room, message.clone()).await;
        if status == 200 {
            return (message, body);
        }
        assert_eq!(status, 503, "refused as unavailable meanwhile: {body}");
        assert!(tokio::time::Instant::now() < deadline, "publishing never resumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    unreachable!("the loop returns or fails")
}

/// Reads frames until a publish frame; returns it.
async fn next_publish(client: &mut Client) -> Value {
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    loop {
        let frame = client.recv().await;
        if frame["type"] == "publish" {
            return frame;
        }
        assert!(tokio::time::Instant::now() < deadline, "no publish frame came");
    }
}

#[tokio::test]
async fn redis_restarted_empty_means_new_epochs_recovered_false_and_traffic_across_nodes() {
    let redis = Redis::start().await;
    let (a, b) = tokio::join!(Node::start(&redis), Node::start(&redis));
    let room = "observable-restart";
    let mut on_a = a.client().await;
    subscribe(&mut on_a, json!({"room": room})).await;
    assert_eq!(on_a.recv().await["type"], "observable_members");
    let mut on_b = b.client().await;
    subscribe(&mut on_b, json!({"room": room})).await;
    assert_eq!(on_b.recv().await["type"], "observable_members");
    assert_eq!(on_a.recv().await["type"], "observable_member_join");
    rest_publish_all(&a, room, [json!("before")]).await;
    let before = next_publish(&mut on_b).await;
    assert_eq!(before["message"], "before");
    assert_eq!(next_publish(&mut on_a).await["message"], "before");

    let port = redis.stop().await;
    let _redis = Redis::start_on(port).await;
    let (after, body) = publish_once_redis_is_back(&a, room).await;

    // Both subscribers stayed connected and get traffic from both nodes.
    for reader in [&mut on_a, &mut on_b] {
        let frame = next_publish(reader).await;
        assert_eq!(frame["message"], after, "{frame}");
        assert_eq!(frame["id"], body["id"]);
    }
    rest_publish_all(&b, room, [json!("from b")]).await;
    for reader in [&mut on_a, &mut on_b] {
        assert_eq!(next_publish(reader).await["message"], "from b");
    }
    // The room started a new epoch: the new ids do not continue the old ones.
    let epoch = |id: &Value| id.as_str().unwrap().rsplit_once('-').unwrap().0.to_owned();
    assert_ne!(epoch(&body["id"]), epoch(&before["id"]), "a new epoch after the reset");

    // A client recovering from the last id it had before the reset learns
    // that it cannot be complete, and gets what the new epoch has.
    for node in [&a, &b] {
        let mut back = node.client().await;
        let reply = subscribe(&mut back, json!({"room": room, "history_since": before["id"]})).await;
        assert_eq!(reply["recovered"], false, "{reply}");
        assert_eq!(back.recv().await["type"], "observable_members");
        let history = [back.recv().await, back.recv().await];
        assert!(history.iter().all(|f| f["type"] == "history_message"), "{history:?}");
        assert_eq!(
            (&history[0]["message"], &history[1]["message"]),
            (&after, &json!("from b"))
        );
    }

    // Both nodes registered their members again: the deployment's member list
    // has the two subscribers that stayed (the recovering clients left again).
    for node in [&a, &b] {
        node.eventually(&format!("{room}/members"), |body| {
            let mut ids: Vec<&str> = body
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            ids.sort_unstable();
            let mut expected = vec![on_a.id(), on_b.id()];
            expected.sort_unstable();
            ids == expected
        })
        .await;
    }
}
