//! Hostile and careless clients (PROTOCOL.md §4, §5 and §10): readers that
//! stop reading, request floods, oversized `client_data`, deeply nested JSON,
//! and refusals that must still be correlated with their request.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::util::*;

/// Roughly the 60 KB publishes of the slow-consumer findings, below the 64 KiB frame limit.
const PAYLOAD_BYTES: usize = 60 * 1000;

const SLOW_CONSUMERS: &str = "rookery_slow_consumer_disconnects_total";

fn refused(reason: &str) -> String {
    format!("rookery_refusals_total{{limit=\"{reason}\"}}")
}

/// `[limits]` that let one client publish as fast as the test needs.
const FAST_PUBLISHING: &str = "publish_rate_per_second = 1000000\npublish_burst = 1000000\n";

/// Publishes `total` large messages to `room`, each read back by the publisher
/// itself (a subscriber that keeps up) before the next one goes out, in order.
async fn publish_and_read_back(publisher: &mut Client, room: &str, total: usize) {
    let pad = "p".repeat(PAYLOAD_BYTES);
    for n in 0..total {
        publisher.publish(room, json!({"n": n, "pad": pad})).await;
        let frame = publisher.recv().await;
        assert_eq!(
            frame["message"]["n"], n,
            "the fast subscriber gets every message, in order"
        );
    }
}

/// Counts the publish deliveries among `frames`.
fn deliveries(frames: &[Value]) -> usize {
    frames.iter().filter(|frame| frame["type"] == "publish").count()
}

#[tokio::test]
async fn a_reader_that_stops_is_cut_at_the_byte_budget_while_others_get_everything() {
    // Default outbox budget: 4096 frames and 4 MiB.
    let server = TestServer::start_with(&format!("[limits]\n{FAST_PUBLISHING}"), "").await;
    let mut stalled = server.connect_with_small_receive_buffer().await;
    stalled.handshake(OPEN).await;
    stalled.subscribe("flood").await;
    let stalled_id = stalled.id().to_owned();
    let mut publisher = server.client(OPEN).await;
    publisher.subscribe("flood").await;
    let slow_before = server.metric(SLOW_CONSUMERS).await;

    // More than the kernel can hold for `stalled` plus the 4 MiB budget, with a
    // margin, and yet far fewer frames than the 4096-frame limit: only the byte
    // budget can cut it.
    let total = (kernel_send_buffer_max() + (4 << 20) + (2 << 20)) / PAYLOAD_BYTES;
    assert!(total < 4096 / 2, "the frame limit alone must not be reached");
    publish_and_read_back(&mut publisher, "flood", total).await;

    assert!(
        server.left_open_room("flood", &stalled_id).await,
        "the reader that stopped is cut as a slow consumer"
    );
    let slow_after = server.metric(SLOW_CONSUMERS).await;
    assert!(
        slow_after > slow_before,
        "{SLOW_CONSUMERS}: {slow_before} -> {slow_after}"
    );
    // What it can still read is what the kernel held when it was cut: the
    // server kept no more than its budget, and did not wait on it.
    let (frames, close_frame) = stalled.drain_until_closed().await;
    assert!(
        !close_frame,
        "a slow consumer is dropped without a close frame (clients reconnect)"
    );
    assert!(
        deliveries(&frames) < total,
        "{} of {total} delivered",
        deliveries(&frames)
    );
    // The publisher was never slowed down or cut.
    publisher.publish("flood", json!("still here")).await;
    assert_eq!(publisher.recv().await["message"], "still here");
}

#[tokio::test]
async fn a_write_that_makes_no_progress_for_a_ping_interval_closes_the_connection() {
    // A budget far above what is published: only the write deadline can cut it.
    let server = TestServer::start_with(
        &format!("[limits]\n{FAST_PUBLISHING}ping_interval_seconds = 1\noutbox_bytes = 1073741824\n"),
        "",
    )
    .await;
    let mut stalled = server.connect_with_small_receive_buffer().await;
    stalled.handshake(OPEN).await;
    stalled.subscribe("flood").await;
    let stalled_id = stalled.id().to_owned();
    // It never reads, but keeps sending pings, so it never looks dead: only
    // its full receive window stops the server's writes.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let pinger = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = &mut stopped => return stalled,
                _ = tick.tick() => {
                    // After the server cut it, sending fails; that is expected.
                    let _ = stalled.ws.send(Message::Ping(Default::default())).await;
                }
            }
        }
    });
    let mut publisher = server.client(OPEN).await;
    publisher.subscribe("flood").await;

    // Enough to fill every buffer between the server and `stalled`.
    let total = (kernel_send_buffer_max() + (2 << 20)) / PAYLOAD_BYTES;
    publish_and_read_back(&mut publisher, "flood", total).await;
    assert!(
        server.left_open_room("flood", &stalled_id).await,
        "a writer stuck on a full window gives up after one ping interval"
    );
    stop.send(()).unwrap();
    let mut stalled = pinger.await.unwrap();
    let (frames, close_frame) = stalled.drain_until_closed().await;
    assert!(!close_frame, "dropped without a close frame");
    assert!(
        deliveries(&frames) < total,
        "{} of {total} delivered",
        deliveries(&frames)
    );
}

#[tokio::test]
async fn subscribe_unsubscribe_and_authenticate_share_a_rate_limit() {
    let server = TestServer::start_with("[limits]\ncontrol_rate_per_second = 1\ncontrol_burst = 5\n", "").await;
    let rate_limited_before = server.metric(&refused("rate_limit")).await;

    // Subscribes, all sent at once: the burst passes, then the rate applies.
    let mut client = server.client(OPEN).await;
    let requests = 20;
    for n in 0..requests {
        client
            .send(json!({"type": "subscribe", "room": format!("r{n}"), "callback": n}))
            .await;
    }
    // An unsubscribe after the burst is spent: refused, so not applied.
    client
        .send(json!({"type": "unsubscribe", "room": "r0", "callback": requests}))
        .await;
    let mut refused_rooms = Vec::new();
    for n in 0..=requests {
        let reply = client.recv().await;
        assert_eq!(
            reply["callback"], n,
            "one correlated reply per request, in order: {reply}"
        );
        match reply.get("error") {
            None => assert!(n < requests, "the unsubscribe is refused: {reply}"),
            Some(error) => {
                assert_eq!(error, "Rate limit exceeded", "{reply}");
                refused_rooms.push(n);
            }
        }
    }
    // The burst is 5 and the rate 1/s: all 21 requests cannot pass in the few
    // seconds this takes, and the first 5 always do.
    assert!(refused_rooms.len() >= 2, "{refused_rooms:?}");
    assert!(refused_rooms.iter().all(|&n| n >= 5), "{refused_rooms:?}");
    for n in 0..requests {
        let members = server.open_room_members(&format!("r{n}")).await;
        let subscribed = members.iter().any(|id| id == client.id());
        assert_eq!(subscribed, !refused_rooms.contains(&n), "room r{n}: {members:?}");
    }

    // Authenticate draws from the same kind of bucket, on its own connection.
    let mut chat = server.client(CHAT).await;
    for n in 0..requests {
        chat.send(json!({"type": "authenticate", "token": "not-a-jwt", "callback": n}))
            .await;
    }
    let mut refusals = 0;
    for n in 0..requests {
        let reply = chat.recv().await;
        assert_eq!(reply["callback"], n, "{reply}");
        match reply["error"].as_str() {
            Some("Rate limit exceeded") => refusals += 1,
            Some("JWT does not have 3 parts") => {}
            _ => panic!("unexpected reply {reply}"),
        }
    }
    assert!(refusals >= 1, "20 authenticates beyond a burst of 5");
    let rate_limited_after = server.metric(&refused("rate_limit")).await;
    assert!(rate_limited_after >= rate_limited_before + (refused_rooms.len() + refusals) as f64);
}

#[tokio::test]
async fn a_subscribe_churn_flood_does_not_cut_the_other_members() {
    // The finding: thousands of subscribe/unsubscribe cycles on an observable
    // room by a client with big client_data sent every other member a join and
    // a leave per cycle, until they were cut as slow consumers. Defaults apply.
    let server = TestServer::start().await;
    let started = tokio::time::Instant::now();
    let mut observer = server.connect_with_small_receive_buffer().await;
    observer.handshake(OPEN).await;
    observer.subscribe("observable-room").await;
    assert_eq!(observer.recv().await["type"], "observable_members");
    // `observer` reads nothing until the flood is over.

    let mut churner = server.connect().await;
    let reply = churner.handshake_with(OPEN, json!({"pad": "c".repeat(900)})).await;
    assert_eq!(reply.get("error"), None, "{reply}");
    let churner_id = churner.id().to_owned();
    let (mut requests, mut replies) = churner.ws.split();
    // The churner reads its own replies, so only the observer is at risk.
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = replies.next().await {} });
    // Enough joins and leaves to overflow the observer's 4096 frames even after
    // the kernel took all it can.
    let event_bytes = 1000;
    let cycles = ((kernel_send_buffer_max() / event_bytes + 4096 + 2000) / 2).max(5000);
    for _ in 0..cycles {
        for kind in ["subscribe", "unsubscribe"] {
            let frame = json!({"type": kind, "room": "observable-room"}).to_string();
            requests.feed(Message::text(frame)).await.unwrap();
        }
    }
    requests.flush().await.unwrap();
    // A marker after the flood: the churner's requests are handled in order,
    // so when it arrives every join and leave the flood caused came before it.
    requests
        .send(Message::text(
            json!({"type": "publish", "room": "observable-room", "message": "end of flood"}).to_string(),
        ))
        .await
        .unwrap();

    let mut joins = 0;
    loop {
        let frame = observer.recv().await;
        match frame["type"].as_str() {
            Some("observable_member_join") => {
                assert_eq!(frame["data"]["id"], json!(churner_id));
                joins += 1;
            }
            Some("observable_member_leave") => {}
            Some("publish") => {
                assert_eq!(frame["message"], "end of flood");
                break;
            }
            _ => panic!("unexpected frame {frame}"),
        }
    }
    // Each join took a token: at most the burst plus what refilled meanwhile.
    let elapsed = started.elapsed().as_secs_f64();
    assert!(
        (joins as f64) <= 600.0 + 100.0 * elapsed + 1.0,
        "{joins} joins in {elapsed:.1} s"
    );
    assert!(joins < cycles, "{joins} of {cycles} cycles applied");
    reader.abort();
}

#[tokio::test]
async fn oversized_client_data_fails_the_handshake_and_closes() {
    let server = TestServer::start().await;
    let before = server.metric(&refused("client_data_too_large")).await;
    // `{"pad":"…"}` is 10 bytes around the padding: exactly 1 KiB fits.
    let mut fits = server.connect().await;
    let reply = fits.handshake_with(OPEN, json!({"pad": "a".repeat(1024 - 10)})).await;
    assert_eq!(reply.get("error"), None, "{reply}");
    assert!(!fits.id().is_empty());

    let mut client = server.connect().await;
    let data = json!({"pad": "a".repeat(1024 - 9)});
    client
        .send(json!({"type": "handshake", "channel": OPEN, "client_data": data, "callback": 4}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"callback": 4, "client_id": "", "error": "Client data too large"})
    );
    let close = client.expect_closed().await.expect("a close frame");
    assert!(close.reason.contains("exceeded"), "not retried by clients: {close:?}");
    assert!(server.metric(&refused("client_data_too_large")).await > before);
}

/// `[[…[1]…]]`, `depth` levels deep.
fn nested(depth: usize) -> Value {
    let text = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    // serde_json refuses to parse past 128 levels; beyond that, send the text as is.
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[tokio::test]
async fn deeply_nested_frames_are_refused_before_parsing() {
    let server = TestServer::start().await;
    let before = server.metric(&refused("too_deep")).await;
    let mut client = server.client(OPEN).await;
    client.subscribe("deep").await;

    // 64 levels are fine, and delivered (the delivery comes before the reply).
    client
        .send(json!({"type": "publish", "room": "deep", "message": nested(64), "callback": 1}))
        .await;
    assert_eq!(client.recv().await["message"], nested(64));
    assert_eq!(client.recv().await, json!({"callback": 1}));

    // 65 levels: refused, correlated.
    let reply = client
        .request(json!({"type": "publish", "room": "deep", "message": nested(65)}))
        .await;
    assert_eq!(reply["error"], "Message too deeply nested", "{reply}");

    // 30,000 levels, without a callback: an uncorrelated refusal; never relayed or stored.
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    client
        .send_text(&format!(r#"{{"type":"publish","room":"deep","message":{deep}}}"#))
        .await;
    assert_eq!(client.recv().await, json!({"error": "Message too deeply nested"}));
    // With a callback, even far beyond serde_json's own limit it is correlated.
    client
        .send_text(&format!(
            r#"{{"type":"publish","room":"deep","message":{deep},"callback":9}}"#
        ))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"callback": 9, "error": "Message too deeply nested"})
    );

    // Only the 64-level message reached the room.
    let mut late = server.client(OPEN).await;
    let reply = late
        .request(json!({"type": "subscribe", "room": "deep", "history_count": 10}))
        .await;
    assert_eq!(reply.get("error"), None);
    assert_eq!(late.recv().await["message"], nested(64));
    late.expect_silence(Duration::from_millis(200)).await;

    // Deep client_data is refused the same way; the connection may still handshake.
    let mut fresh = server.connect().await;
    let reply = fresh
        .request(json!({"type": "handshake", "channel": OPEN, "client_data": nested(70)}))
        .await;
    assert_eq!(reply["error"], "Message too deeply nested", "{reply}");
    assert_eq!(fresh.handshake(OPEN).await.get("error"), None);

    assert!(server.metric(&refused("too_deep")).await >= before + 4.0);
}

#[tokio::test]
async fn refusals_are_correlated_when_the_callback_can_be_read() {
    let server = TestServer::start_with("[limits]\nmax_message_bytes = 1024\n", "").await;
    let mut client = server.client(OPEN).await;
    client.subscribe("r").await;

    // Too large, but under the hard cap: the callback is found without parsing the frame.
    client
        .send(json!({"type": "publish", "room": "r", "message": "y".repeat(2000), "callback": 11}))
        .await;
    assert_eq!(
        client.recv().await,
        json!({"callback": 11, "error": "Message too large"})
    );
    // A callback that is not at the top level, or not an integer, is not read.
    client
        .send(json!({"type": "publish", "room": "r", "message": {"callback": 5, "pad": "y".repeat(2000)}}))
        .await;
    assert_eq!(client.recv().await, json!({"error": "Message too large"}));

    // A duplicate key makes the frame malformed, but its callback is readable.
    client
        .send_text(r#"{"type":"publish","room":"r","room":"s","message":1,"callback":12}"#)
        .await;
    assert_eq!(client.recv().await, json!({"callback": 12, "error": "Malformed frame"}));
    // A duplicated callback is not.
    client
        .send_text(r#"{"type":"publish","room":"r","message":1,"callback":1,"callback":2}"#)
        .await;
    assert_eq!(client.recv().await, json!({"error": "Malformed frame"}));

    // None of these reached the room, and the connection is fine.
    client.publish("r", json!("after")).await;
    assert_eq!(client.recv().await["message"], "after");
}
