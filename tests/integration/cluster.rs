//! Several nodes as one deployment (PROTOCOL.md §13): a real `redis-server` and
//! two or three `rookery` nodes, all child processes on loopback, killed when
//! the test ends. Without `redis-server` on the PATH these tests fail, loudly.

use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster_util::{Node, Redis, publishes, subscribe};

#[tokio::test]
async fn messages_cross_nodes_in_order_once_and_rest_publishes_too() {
    let redis = Redis::start().await;
    let (a, b, c) = tokio::join!(Node::start(&redis), Node::start(&redis), Node::start(&redis));
    let mut on_b = b.client().await;
    let mut on_c = c.client().await;
    let mut on_a = a.client().await;
    subscribe(&mut on_b, json!({"room": "r"})).await;
    subscribe(&mut on_c, json!({"room": "r"})).await;
    subscribe(&mut on_a, json!({"room": "r"})).await;
    let mut publisher = a.client().await;
    for i in 0..30 {
        publisher.publish("r", json!(i)).await;
    }
    for reader in [&mut on_b, &mut on_c, &mut on_a] {
        let got = publishes(reader, 30).await;
        let values: Vec<i64> = got.iter().map(|f| f["message"].as_i64().unwrap()).collect();
        assert_eq!(values, (0..30).collect::<Vec<_>>());
        let ids: Vec<&str> = got.iter().map(|f| f["id"].as_str().unwrap()).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "ids sort in publication order: {ids:?}"
        );
        assert_eq!(got[0]["client_id"], json!(publisher.id()));
    }
    // A REST publish on C arrives on A (and nothing arrived twice before it).
    let (status, body) = c.rest_publish("r", json!({"from": "rest"})).await;
    assert_eq!(status, 200, "{body}");
    let frame = on_a.recv().await;
    assert_eq!(frame["message"], json!({"from": "rest"}), "{frame}");
    assert_eq!(frame["id"], body["id"]);
    // Client ids of different nodes never share a node prefix.
    let prefix = |id: &str| id.split_once(':').unwrap().0.to_owned();
    assert_ne!(prefix(on_a.id()), prefix(on_b.id()));
    assert_ne!(prefix(on_b.id()), prefix(on_c.id()));
}

#[tokio::test]
async fn members_are_the_whole_deployment_with_one_join_and_one_leave() {
    let redis = Redis::start().await;
    let (a, b) = tokio::join!(Node::start(&redis), Node::start(&redis));
    let room = "observable-room";
    let mut first = a.client().await;
    subscribe(&mut first, json!({"room": room})).await;
    let members = first.recv().await;
    assert_eq!(members["type"], "observable_members");

    let mut second = b.client().await;
    subscribe(&mut second, json!({"room": room})).await;
    let members = second.recv().await;
    assert_eq!(members["type"], "observable_members", "{members}");
    let mut ids: Vec<&str> = members["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    ids.sort();
    let mut expected = vec![first.id(), second.id()];
    expected.sort();
    assert_eq!(ids, expected, "B's member list includes A's member");

    let join = first.recv().await;
    assert_eq!(join["type"], "observable_member_join", "{join}");
    assert_eq!(join["data"]["id"], json!(second.id()));

    // REST on either node answers for the deployment.
    for node in [&a, &b] {
        node.eventually(&format!("{room}/members"), |body| {
            let ids: Vec<&str> = body
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            ids.contains(&first.id()) && ids.contains(&second.id())
        })
        .await;
        let (_, rooms) = node.get("rooms").await;
        assert_eq!(rooms, json!([room]));
        node.eventually("stats", |body| body["users_count"] == json!(2)).await;
    }

    let second_id = second.id().to_owned();
    drop(second);
    let leave = first.recv().await;
    assert_eq!(leave["type"], "observable_member_leave", "{leave}");
    assert_eq!(leave["data"]["id"], json!(second_id));
    // Exactly one join and one leave: nothing more follows.
    first.expect_silence(Duration::from_millis(300)).await;
    a.eventually(&format!("{room}/members"), |body| body == &json!([first.id()]))
        .await;
}

#[tokio::test]
async fn history_and_recovery_span_nodes() {
    let redis = Redis::start().await;
    let (a, b) = tokio::join!(Node::start(&redis), Node::start(&redis));
    let mut publisher = a.client().await;
    for i in 0..3 {
        publisher
            .request(json!({"type": "publish", "room": "feed", "message": i}))
            .await;
    }
    let (status, history) = b.get("feed/history").await;
    assert_eq!(status, 200);
    let values: Vec<&Value> = history.as_array().unwrap().iter().map(|m| &m["message"]).collect();
    assert_eq!(values, [&json!(0), &json!(1), &json!(2)]);

    let mut reader = b.client().await;
    subscribe(&mut reader, json!({"room": "feed", "history_count": 2})).await;
    let old: Vec<Value> = vec![reader.recv().await, reader.recv().await];
    assert_eq!(old[0]["type"], "history_message");
    assert_eq!((&old[0]["message"], &old[1]["message"]), (&json!(1), &json!(2)));
    let last_id = old[1]["id"].as_str().unwrap().to_owned();
    drop(reader);
    publisher.publish("feed", json!("missed 1")).await;
    publisher
        .request(json!({"type": "publish", "room": "feed", "message": "missed 2"}))
        .await;
    let mut back = b.client().await;
    let reply = subscribe(&mut back, json!({"room": "feed", "history_since": last_id})).await;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(back.recv().await["message"], "missed 1");
    assert_eq!(back.recv().await["message"], "missed 2");
    // Live traffic follows the recovery without a duplicate.
    publisher.publish("feed", json!("live")).await;
    assert_eq!(back.recv().await["message"], "live");
}

#[tokio::test]
async fn a_dead_nodes_members_leave_within_the_lease() {
    let redis = Redis::start().await;
    let (a, b) = tokio::join!(Node::start(&redis), Node::start(&redis));
    let room = "observable-lease";
    let mut watcher = a.client().await;
    subscribe(&mut watcher, json!({"room": room})).await;
    assert_eq!(watcher.recv().await["type"], "observable_members");
    let mut doomed = b.client().await;
    subscribe(&mut doomed, json!({"room": room})).await;
    let join = watcher.recv().await;
    assert_eq!(join["type"], "observable_member_join");
    let doomed_id = doomed.id().to_owned();

    let killed = tokio::time::Instant::now();
    b.kill9().await;
    // The lease is 2 s and the survivor checks every 2/3 s: well within RECV_TIMEOUT.
    let leave = watcher.recv().await;
    assert_eq!(leave["type"], "observable_member_leave", "{leave}");
    assert_eq!(leave["data"]["id"], json!(doomed_id));
    assert!(
        killed.elapsed() < Duration::from_secs(4),
        "left after {:?}",
        killed.elapsed()
    );
    watcher.expect_silence(Duration::from_millis(300)).await;
    a.eventually(&format!("{room}/members"), |body| body == &json!([watcher.id()]))
        .await;
}

#[tokio::test]
async fn redis_down_refuses_publishes_and_the_nodes_resume_when_it_is_back() {
    let redis = Redis::start().await;
    let (a, b) = tokio::join!(Node::start(&redis), Node::start(&redis));
    let mut reader = b.client().await;
    subscribe(&mut reader, json!({"room": "r"})).await;
    let mut publisher = a.client().await;
    publisher
        .request(json!({"type": "publish", "room": "r", "message": "before"}))
        .await;
    assert_eq!(reader.recv().await["message"], "before");

    let port = redis.stop().await;
    let refused = publisher
        .request(json!({"type": "publish", "room": "r", "message": "lost"}))
        .await;
    assert_eq!(refused["error"], "Service unavailable", "{refused}");
    let (status, body) = a.rest_publish("r", json!("lost too")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["message"], "Service unavailable");

    // Redis comes back (empty): both nodes carry on by themselves, the
    // subscriber on B is still connected and gets what A publishes.
    let _redis = Redis::start_on(port).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reply = publisher
            .request(json!({"type": "publish", "room": "r", "message": "after"}))
            .await;
        if reply.get("error").is_none() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "publishing never resumed: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let frame = loop {
        let frame = reader.recv().await;
        if frame["type"] == "publish" {
            break frame;
        }
    };
    assert_eq!(frame["message"], "after", "{frame}");
    // A new epoch: the old id is not recovered.
    let mut late = b.client().await;
    let reply = subscribe(
        &mut late,
        json!({"room": "r", "history_since": "zzzz-00000000000000000001"}),
    )
    .await;
    assert_eq!(reply["recovered"], false);
}
