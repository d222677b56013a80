//! The WebSocket protocol end to end: the tutorial flow, presence, history,
//! permissions, re-authentication, expiry, slow consumers and every limit.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::*;

const ROOM: &str = "observable-room";

fn member_ids(frame: &Value) -> Vec<String> {
    frame["data"]
        .as_array()
        .expect("members array")
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Subscribes to the public room and returns the member list it received.
async fn join_public(client: &mut Client) -> Value {
    let reply = client.subscribe(ROOM).await;
    assert_eq!(reply.get("error"), None, "{reply}");
    let members = client.recv().await;
    assert_eq!(members["type"], "observable_members", "{members}");
    members
}

#[tokio::test]
async fn tutorial_flow_for_three_users() {
    let server = TestServer::start().await;
    let mut a = server.chat_user("Ann").await;
    let mut b = server.chat_user("Bob").await;
    let mut c = server.chat_user("Cid").await;

    // Presence: the member list includes the subscriber itself, with authData.
    let members = join_public(&mut a).await;
    assert_eq!(member_ids(&members), [a.id()]);
    assert_eq!(members["data"][0]["authData"]["name"], "Ann");
    assert!(
        members["data"][0]["authData"]["color"]
            .as_str()
            .unwrap()
            .starts_with('#')
    );
    assert_eq!(members["data"][0].get("clientData"), None, "absent keys are omitted");

    let members = join_public(&mut b).await;
    assert_eq!(member_ids(&members), [a.id(), b.id()]);
    let join = a.recv().await;
    assert_eq!(join["type"], "observable_member_join");
    assert_eq!(join["data"]["id"], b.id());
    assert_eq!(join["data"]["authData"]["name"], "Bob");

    join_public(&mut c).await;
    assert_eq!(a.recv().await["data"]["id"], c.id());
    assert_eq!(b.recv().await["data"]["id"], c.id());

    let a_id = a.id().to_owned();
    // A public message reaches everyone, the publisher included.
    a.publish(ROOM, json!({"text": "hello all"})).await;
    for client in [&mut a, &mut b, &mut c] {
        let message = client.recv().await;
        assert_eq!(message["type"], "publish");
        assert_eq!(message["room"], ROOM);
        assert_eq!(message["message"], json!({"text": "hello all"}));
        assert!(message["timestamp"].is_u64());
        assert!(message["id"].is_string());
        assert_eq!(message["client_id"], a_id.as_str());
    }
    // Nobody got a join event about themselves.
    a.expect_silence(Duration::from_millis(100)).await;

    // Private rooms: B reads its own room; A writes to it; C may not read it.
    let b_room = format!("private-room-{}", b.id());
    let reply = b.subscribe(&b_room).await;
    assert_eq!(reply.get("error"), None);
    let reply = c.subscribe(&b_room).await;
    assert_eq!(reply["error"], "Unauthorized");
    let reply = a
        .request(json!({"type": "publish", "room": b_room, "message": "psst"}))
        .await;
    assert_eq!(reply.get("error"), None, "{reply}");
    let dm = b.recv().await;
    assert_eq!(
        (dm["room"].as_str(), dm["message"].as_str()),
        (Some(b_room.as_str()), Some("psst"))
    );
    assert_eq!(dm["client_id"], a_id.as_str());

    // A may not publish to its own private room (read-only for its owner).
    let a_room = format!("private-room-{}", a.id());
    let reply = a
        .request(json!({"type": "publish", "room": a_room, "message": "me"}))
        .await;
    assert_eq!(reply["error"], "Unauthorized");
    // Without a callback the refusal is uncorrelated.
    a.publish(&a_room, json!("me again")).await;
    assert_eq!(a.recv().await, json!({"error": "Unauthorized"}));

    // Only B saw the DM.
    c.expect_silence(Duration::from_millis(150)).await;

    // Leave on unsubscribe, and on disconnect.
    let reply = c.request(json!({"type": "unsubscribe", "room": ROOM})).await;
    assert_eq!(reply.get("error"), None);
    for client in [&mut a, &mut b] {
        let leave = client.recv().await;
        assert_eq!(leave["type"], "observable_member_leave");
        assert_eq!(leave["data"]["id"], c.id());
        assert_eq!(leave["data"]["authData"]["name"], "Cid");
    }
    let b_id = b.id().to_owned();
    drop(b);
    let leave = a.recv().await;
    assert_eq!(leave["type"], "observable_member_leave");
    assert_eq!(leave["data"]["id"], b_id);
}

#[tokio::test]
async fn client_data_appears_in_presence() {
    let server = TestServer::start().await;
    let mut a = server.connect().await;
    let reply = a
        .request(json!({"type": "handshake", "channel": OPEN, "client_data": {"x": 1}, "version": 3}))
        .await;
    assert_eq!(reply["require_auth"], false);
    let id = reply["client_id"].as_str().unwrap().to_owned();
    a.client_id = Some(id.clone());
    let members = join_public(&mut a).await;
    assert_eq!(members["data"], json!([{"id": id, "clientData": {"x": 1}}]));
}

#[tokio::test]
async fn handshake_reply_shape_and_client_ids() {
    let server = TestServer::start().await;
    let mut a = server.connect().await;
    let reply = a.request(json!({"type": "handshake", "channel": CHAT})).await;
    assert_eq!(reply["require_auth"], true);
    let id = reply["client_id"].as_str().unwrap();
    let (node, random) = id.split_once(':').unwrap();
    assert!(node.chars().chain(random.chars()).all(|c| c.is_ascii_alphanumeric()));
    assert!(random.len() >= 11, "at least 64 random bits");
    let other = server.client(CHAT).await;
    assert_ne!(other.id(), id);
}

#[tokio::test]
async fn subscribing_twice_is_idempotent() {
    let server = TestServer::start().await;
    let mut a = server.client(OPEN).await;
    let mut b = server.client(OPEN).await;
    join_public(&mut a).await;
    join_public(&mut b).await;
    a.recv().await; // join of b
    let again = b.subscribe(ROOM).await;
    assert_eq!(again.get("error"), None);
    a.publish(ROOM, json!("once")).await;
    assert_eq!(b.recv().await["message"], "once");
    // No second member list, no duplicate delivery, no second join event.
    b.expect_silence(Duration::from_millis(150)).await;
    assert_eq!(a.recv().await["message"], "once");
    a.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn history_is_oldest_first_and_bounded_by_request() {
    let server = TestServer::start().await;
    let mut publisher = server.client(OPEN).await;
    for n in 1..=5 {
        let reply = publisher
            .request(json!({"type": "publish", "room": "chat", "message": n}))
            .await;
        assert_eq!(reply.get("error"), None);
    }
    let mut late = server.client(OPEN).await;
    let reply = late
        .request(json!({"type": "subscribe", "room": "chat", "history_count": 3}))
        .await;
    assert_eq!(reply.get("error"), None);
    for (index, expected) in [3, 4, 5].into_iter().enumerate() {
        let frame = late.recv().await;
        assert_eq!(frame["type"], "history_message");
        assert_eq!(frame["index"], index);
        assert_eq!(frame["message"], expected);
        assert_eq!(frame["client_id"], publisher.id());
        assert!(frame["timestamp"].is_u64());
    }
    late.expect_silence(Duration::from_millis(100)).await;

    // The legacy `history` field works too; no count means no history.
    let mut legacy = server.client(OPEN).await;
    legacy
        .request(json!({"type": "subscribe", "room": "chat", "history": 1}))
        .await;
    assert_eq!(legacy.recv().await["message"], 5);
    let mut none = server.client(OPEN).await;
    none.subscribe("chat").await;
    none.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn history_in_observable_rooms_follows_the_member_list() {
    let server = TestServer::start().await;
    let mut a = server.chat_user("Ann").await;
    join_public(&mut a).await;
    a.publish(ROOM, json!("earlier")).await;
    a.recv().await;
    let mut late = server.chat_user("Late").await;
    let reply = late
        .request(json!({"type": "subscribe", "room": ROOM, "history_count": 10}))
        .await;
    assert_eq!(reply.get("error"), None);
    assert_eq!(late.recv().await["type"], "observable_members");
    let history = late.recv().await;
    assert_eq!(
        (history["type"].as_str(), history["index"].as_u64()),
        (Some("history_message"), Some(0))
    );
    assert_eq!(history["message"], "earlier");
}

#[tokio::test]
async fn history_is_limited_by_the_permission_allowance() {
    let server = TestServer::start().await;
    let mut publisher = server.client(CHAT).await;
    let everything = json!({".*": {"publish": true, "subscribe": true, "history": 100}});
    publisher
        .authenticate(&chat_token(Some(publisher.id()), everything, now() + 60, None))
        .await;
    for n in 0..4 {
        publisher.publish("news", json!(n)).await;
    }
    publisher
        .request(json!({"type": "publish", "room": "news", "message": "sync"}))
        .await;

    let mut reader = server.client(CHAT).await;
    let two = json!({"^news$": {"subscribe": true, "history": 2}});
    reader
        .authenticate(&chat_token(Some(reader.id()), two, now() + 60, None))
        .await;
    reader
        .request(json!({"type": "subscribe", "room": "news", "history_count": 50}))
        .await;
    assert_eq!(reader.recv().await["message"], 3);
    assert_eq!(reader.recv().await["message"], "sync");
    reader.expect_silence(Duration::from_millis(100)).await;

    let mut no_history = server.client(CHAT).await;
    let zero = json!({"^news$": {"subscribe": true}});
    no_history
        .authenticate(&chat_token(Some(no_history.id()), zero, now() + 60, None))
        .await;
    no_history
        .request(json!({"type": "subscribe", "room": "news", "history_count": 50}))
        .await;
    no_history.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn recovery_with_history_since() {
    let server = TestServer::start().await;
    let mut publisher = server.client(OPEN).await;
    let mut reader = server.client(OPEN).await;
    reader.subscribe("feed").await;
    publisher.publish("feed", json!("seen")).await;
    let seen = reader.recv().await;
    let last_id = seen["id"].as_str().unwrap().to_owned();
    drop(reader);
    publisher.publish("feed", json!("missed 1")).await;
    publisher
        .request(json!({"type": "publish", "room": "feed", "message": "missed 2"}))
        .await;

    let mut back = server.client(OPEN).await;
    let reply = back
        .request(json!({"type": "subscribe", "room": "feed", "history_since": last_id}))
        .await;
    assert_eq!(reply["recovered"], true, "{reply}");
    assert_eq!(back.recv().await["message"], "missed 1");
    assert_eq!(back.recv().await["message"], "missed 2");

    // An id this store cannot place (another server run) is not recovered.
    let mut stranger = server.client(OPEN).await;
    let reply = stranger
        .request(json!({"type": "subscribe", "room": "feed", "history_since": "zzzzzzzz-00000000000000000001"}))
        .await;
    assert_eq!(reply["recovered"], false);
}

#[tokio::test]
async fn recovery_reports_lost_messages() {
    let server = TestServer::start_with("", "").await;
    let mut publisher = server.client(OPEN).await;
    publisher
        .request(json!({"type": "publish", "room": "r", "message": 0}))
        .await;
    let first = {
        let mut sub = server.client(OPEN).await;
        sub.request(json!({"type": "subscribe", "room": "r", "history_count": 1}))
            .await;
        sub.recv().await["id"].as_str().unwrap().to_owned()
    };
    // The default history keeps 100 messages: publish enough to evict the first and its successor.
    let mut fast = server.client(OPEN).await;
    for n in 1..=101 {
        fast.publish("r", json!(n)).await;
        if n % 50 == 0 {
            fast.request(json!({"type": "publish", "room": "r", "message": "tick"}))
                .await;
        }
    }
    fast.request(json!({"type": "publish", "room": "r", "message": "end"}))
        .await;
    let mut back = server.client(OPEN).await;
    let reply = back
        .request(json!({"type": "subscribe", "room": "r", "history_since": first}))
        .await;
    assert_eq!(reply["recovered"], false);
}

#[tokio::test]
async fn authentication_errors_over_the_wire() {
    let server = TestServer::start().await;
    let mut client = server.client(CHAT).await;
    let id = client.id().to_owned();
    let perms = json!({".*": {"publish": true, "subscribe": true}});
    let cases = [
        ("not-a-jwt".to_owned(), "JWT does not have 3 parts"),
        ("a.b.c".to_owned(), "Invalid JWT"),
        (chat_token(Some(&id), perms.clone(), now() - 10, None), "JWT expired"),
        (
            chat_token(Some("someone-else"), perms.clone(), now() + 60, None),
            "JWT client mismatch",
        ),
        (
            rookery::token::TokenIssuer::new(CHAT, "wrong-secret").mint(
                Some(&id),
                None,
                perms.as_object().unwrap(),
                now() + 60,
            ),
            "Invalid JWT signature",
        ),
        (
            rookery::token::TokenIssuer::new(OPEN, CHAT_SECRET).mint(
                Some(&id),
                None,
                perms.as_object().unwrap(),
                now() + 60,
            ),
            "JWT channel mismatch",
        ),
    ];
    for (token, error) in cases {
        let reply = client.try_authenticate(&token).await;
        assert_eq!(reply["error"], error, "{token}");
    }
    // Still unauthenticated: subscribing is refused.
    assert_eq!(client.subscribe(ROOM).await["error"], "Unauthorized");
    // A valid token works; a later bad one leaves it in force.
    assert_eq!(
        client
            .authenticate(&chat_token(Some(&id), perms, now() + 60, None))
            .await
            .get("error"),
        None
    );
    assert_eq!(client.try_authenticate("x").await["error"], "JWT does not have 3 parts");
    assert_eq!(client.subscribe(ROOM).await.get("error"), None);
}

#[tokio::test]
async fn unauthenticated_publish_is_dropped_with_an_error() {
    let server = TestServer::start().await;
    let mut reader = server.chat_user("Reader").await;
    join_public(&mut reader).await;
    let mut anonymous = server.client(CHAT).await;
    anonymous.publish(ROOM, json!("spam")).await;
    assert_eq!(anonymous.recv().await, json!({"error": "Unauthorized"}));
    let reply = anonymous
        .request(json!({"type": "publish", "room": ROOM, "message": "spam"}))
        .await;
    assert_eq!(reply["error"], "Unauthorized");
    reader.expect_silence(Duration::from_millis(150)).await;
    // And it was not stored.
    let history = server
        .http(
            "GET",
            "/api/chat/observable-room/history",
            &[("authorization", &basic_auth(CHAT, CHAT_SECRET))],
            "",
        )
        .await;
    assert_eq!(history.json(), json!([]));
}

#[tokio::test]
async fn reauthentication_drops_rooms_the_new_token_denies() {
    let server = TestServer::start().await;
    let mut watcher = server.chat_user("Watcher").await;
    join_public(&mut watcher).await;
    let mut client = server.client(CHAT).await;
    let id = client.id().to_owned();
    let both = json!({"^observable-room$": {"publish": true, "subscribe": true}, "^other$": {"subscribe": true}});
    client
        .authenticate(&chat_token(Some(&id), both, now() + 60, Some(json!({"name": "v1"}))))
        .await;
    join_public(&mut client).await;
    client.subscribe("other").await;
    assert_eq!(watcher.recv().await["type"], "observable_member_join");

    let only_other = json!({"^other$": {"subscribe": true, "publish": true}});
    let reply_and_error = {
        client.send(json!({"type": "authenticate", "token": chat_token(Some(&id), only_other, now() + 60, None), "callback": 9})).await;
        [client.recv().await, client.recv().await]
    };
    assert!(
        reply_and_error.contains(&json!({"error": "Unauthorized", "room": ROOM})),
        "{reply_and_error:?}"
    );
    assert!(reply_and_error.contains(&json!({"callback": 9})), "{reply_and_error:?}");
    let leave = watcher.recv().await;
    assert_eq!(leave["type"], "observable_member_leave");
    assert_eq!(leave["data"]["id"], id.as_str());
    // The room it kept still delivers.
    client.publish("other", json!("still here")).await;
    assert_eq!(client.recv().await["message"], "still here");
    // Publishing to the dropped room is now refused.
    client.publish(ROOM, json!("x")).await;
    assert_eq!(client.recv().await, json!({"error": "Unauthorized"}));
}

#[tokio::test]
async fn enforced_expiry_ends_subscriptions() {
    let server = TestServer::start_with("", "expiry = \"enforce\"").await;
    let mut watcher = server.client(CHAT).await;
    let all = json!({".*": {"publish": true, "subscribe": true}});
    watcher
        .authenticate(&chat_token(Some(watcher.id()), all.clone(), now() + 120, None))
        .await;
    join_public(&mut watcher).await;

    let mut short = server.client(CHAT).await;
    let id = short.id().to_owned();
    short
        .authenticate(&chat_token(Some(&id), all.clone(), now() + 30, None))
        .await;
    join_public(&mut short).await;
    watcher.recv().await; // join
    short.expect_silence(Duration::from_millis(100)).await;
    // The server's clock passes the short token's `exp` (not the watcher's).
    server.clock.advance(31);
    assert_eq!(short.recv().await, json!({"error": "JWT expired"}));
    let leave = watcher.recv().await;
    assert_eq!(
        (leave["type"].as_str(), leave["data"]["id"].as_str()),
        (Some("observable_member_leave"), Some(id.as_str()))
    );
    assert_eq!(short.subscribe(ROOM).await["error"], "Unauthorized");
    // A fresh token restores access.
    short
        .authenticate(&chat_token(Some(&id), all, server.clock.now() + 120, None))
        .await;
    assert_eq!(short.subscribe(ROOM).await.get("error"), None);
}

#[tokio::test]
async fn on_authenticate_expiry_keeps_the_session() {
    let server = TestServer::start().await;
    let mut client = server.client(CHAT).await;
    let all = json!({".*": {"publish": true, "subscribe": true}});
    let token = chat_token(Some(client.id()), all, now() + 30, None);
    client.authenticate(&token).await;
    client.subscribe("r").await;
    server.clock.advance(31);
    client.publish("r", json!("after exp")).await;
    assert_eq!(client.recv().await["message"], "after exp");
    // The token is past its `exp` now: presenting it again is refused.
    assert_eq!(client.try_authenticate(&token).await["error"], "JWT expired");
}

#[tokio::test]
async fn slow_consumer_is_cut_while_others_keep_receiving() {
    let server = TestServer::start_with(
        "[limits]\noutbox_frames = 32\npublish_rate_per_second = 100000\npublish_burst = 100000\n",
        "",
    )
    .await;
    let mut fast = server.client(OPEN).await;
    fast.subscribe("flood").await;
    let mut slow = server.client(OPEN).await;
    slow.subscribe("flood").await;
    let slow_id = slow.id().to_owned();
    // `slow` never reads again. Enough data to fill its socket buffers and then its outbox.
    let mut publisher = server.client(OPEN).await;
    let payload = "x".repeat(32 * 1024);
    let total = 1500;
    let reader = tokio::spawn(async move {
        for n in 0..total {
            let frame = fast.recv().await;
            assert_eq!(frame["message"]["n"], n, "in order, none lost");
        }
        fast
    });
    for n in 0..total {
        publisher.publish("flood", json!({"n": n, "pad": payload})).await;
    }
    let _fast = reader.await.unwrap();
    // The slow subscriber was dropped from the room (its socket closed).
    let members = server.http("GET", "/api/open/flood/members", &[], "").await.json();
    assert!(
        !members.as_array().unwrap().iter().any(|m| m == &json!(slow_id)),
        "{members}"
    );
    assert!(members.as_array().unwrap().len() == 1);
    drop(slow);
}

#[tokio::test]
async fn frames_before_handshake_close_the_connection() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    client
        .send(json!({"type": "subscribe", "room": "r", "callback": 1}))
        .await;
    assert_eq!(client.recv().await, json!({"error": "Handshake required"}));
    client.expect_closed().await;
}

#[tokio::test]
async fn unknown_channel_is_refused_and_closed() {
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let reply = client.request(json!({"type": "handshake", "channel": "nope"})).await;
    assert_eq!(reply["client_id"], "");
    assert_eq!(reply["error"], "Unknown channel");
    client.expect_closed().await;
}

#[tokio::test]
async fn second_handshake_is_refused() {
    let server = TestServer::start().await;
    let mut client = server.client(OPEN).await;
    let reply = client.request(json!({"type": "handshake", "channel": OPEN})).await;
    assert_eq!(reply["error"], "Handshake already done");
    assert!(
        reply.get("client_id").is_none(),
        "only the handshake reply carries client_id"
    );
    // Still usable.
    assert_eq!(client.subscribe("r").await.get("error"), None);
}

#[tokio::test]
async fn malformed_and_unknown_frames_keep_the_connection() {
    let server = TestServer::start().await;
    let mut client = server.client(OPEN).await;
    client.send_text("not json").await;
    assert_eq!(client.recv().await, json!({"error": "Malformed frame"}));
    client.send_text("[1,2]").await;
    assert_eq!(client.recv().await, json!({"error": "Malformed frame"}));
    client.send(json!({"type": "subscribe", "callback": 5})).await;
    assert_eq!(client.recv().await, json!({"callback": 5, "error": "Malformed frame"}));
    client
        .send(json!({"type": "publish", "room": "r", "callback": 6}))
        .await;
    assert_eq!(client.recv().await, json!({"callback": 6, "error": "Malformed frame"}));
    client.send(json!({"type": "dance", "callback": 7})).await;
    assert_eq!(
        client.recv().await,
        json!({"callback": 7, "error": "Unknown frame type"})
    );
    client.send(json!({"type": "dance"})).await;
    assert_eq!(client.recv().await, json!({"error": "Unknown frame type"}));
    // Falsy messages are valid.
    client.subscribe("r").await;
    for message in [json!(null), json!(0), json!(false), json!("")] {
        client.publish("r", message.clone()).await;
        assert_eq!(client.recv().await["message"], message);
    }
}

#[tokio::test]
async fn binary_frames_are_accepted() {
    use futures_util::SinkExt;
    let server = TestServer::start().await;
    let mut client = server.connect().await;
    let frame = json!({"type": "handshake", "channel": OPEN, "callback": 0}).to_string();
    client
        .ws
        .send(tokio_tungstenite::tungstenite::Message::binary(frame.into_bytes()))
        .await
        .unwrap();
    let reply = client.recv().await;
    assert_eq!(reply["callback"], 0);
    assert!(!reply["client_id"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn room_name_limits() {
    let server = TestServer::start().await;
    let mut client = server.client(OPEN).await;
    for room in [String::new(), "a\u{1}b".to_owned(), "x".repeat(257)] {
        let reply = client.request(json!({"type": "subscribe", "room": room})).await;
        assert_eq!(reply["error"], "Invalid room name");
        let reply = client
            .request(json!({"type": "publish", "room": room, "message": 1}))
            .await;
        assert_eq!(reply["error"], "Invalid room name");
    }
    assert_eq!(client.subscribe(&"x".repeat(256)).await.get("error"), None);
}

#[tokio::test]
async fn subscription_limit() {
    let server = TestServer::start_with("[limits]\nmax_subscriptions = 2\n", "").await;
    let mut client = server.client(OPEN).await;
    client.subscribe("a").await;
    client.subscribe("b").await;
    assert_eq!(client.subscribe("c").await["error"], "Too many subscriptions");
    // Re-subscribing an existing room is fine; leaving frees a slot.
    assert_eq!(client.subscribe("a").await.get("error"), None);
    client.request(json!({"type": "unsubscribe", "room": "a"})).await;
    assert_eq!(client.subscribe("c").await.get("error"), None);
}

#[tokio::test]
async fn publish_rate_limit() {
    let server = TestServer::start_with("[limits]\npublish_rate_per_second = 1\npublish_burst = 3\n", "").await;
    let mut client = server.client(OPEN).await;
    let mut refused = 0;
    for n in 0..5 {
        let reply = client
            .request(json!({"type": "publish", "room": "r", "message": n}))
            .await;
        if reply.get("error") == Some(&json!("Rate limit exceeded")) {
            refused += 1;
        }
    }
    // A burst of 5 against a burst of 3 (refilling at 1/s, far slower than the burst is sent).
    assert_eq!(refused, 2, "exactly the two publishes beyond the burst are refused");
    client.publish("r", json!("x")).await;
    assert_eq!(client.recv().await, json!({"error": "Rate limit exceeded"}));
}

#[tokio::test]
async fn oversized_frames_are_refused_and_the_connection_survives() {
    let server = TestServer::start_with("[limits]\nmax_message_bytes = 1024\n", "").await;
    let mut client = server.client(OPEN).await;
    client.subscribe("r").await;
    client.publish("r", json!("y".repeat(2000))).await;
    assert_eq!(client.recv().await, json!({"error": "Message too large"}));
    client.publish("r", json!("small")).await;
    assert_eq!(client.recv().await["message"], "small");
    // Far beyond the hard cap the frame cannot be skipped: error, then close.
    client.publish("r", json!("z".repeat(2 << 20))).await;
    assert_eq!(client.recv().await, json!({"error": "Message too large"}));
    let close = client.expect_closed().await.expect("a close frame");
    assert!(close.reason.contains("exceeded"), "{close:?}");
}

#[tokio::test]
async fn handshake_deadline_closes_idle_connections() {
    let server = TestServer::start_with("[limits]\nhandshake_timeout_seconds = 1\n", "").await;
    let mut client = server.connect().await;
    let close = client.expect_closed().await.expect("a close frame");
    assert!(close.reason.contains("exceeded"));
}

#[tokio::test]
async fn peers_that_stop_answering_pings_are_dropped() {
    let server = TestServer::start_with("[limits]\nping_interval_seconds = 1\n", "").await;
    let client = server.client(OPEN).await;
    // Never polled again: pings go unanswered.
    let stats = || server.http("GET", "/api/open/stats", &[], "");
    assert_eq!(stats().await.json()["users_count"], 1);
    let mut gone = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if stats().await.json()["users_count"] == 0 {
            gone = true;
            break;
        }
    }
    assert!(gone, "the silent peer was dropped within about two ping intervals");
    drop(client);
}

#[tokio::test]
async fn answering_pings_keeps_connections_alive() {
    let server = TestServer::start_with("[limits]\nping_interval_seconds = 1\n", "").await;
    let mut client = server.client(OPEN).await;
    client.subscribe("r").await;
    // Reading lets tungstenite answer the pings.
    client.expect_silence(Duration::from_millis(3500)).await;
    client.publish("r", json!("alive")).await;
    assert_eq!(client.recv().await["message"], "alive");
}

#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame() {
    use futures_util::StreamExt;
    let server = TestServer::start().await;
    let mut client = server.client(OPEN).await;
    client.ws.close(None).await.unwrap();
    // The server completes the closing handshake: the stream ends cleanly, not with a reset.
    let next = tokio::time::timeout(RECV_TIMEOUT, client.ws.next())
        .await
        .expect("closed in time");
    assert!(
        matches!(next, None | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))),
        "{next:?}"
    );
}
