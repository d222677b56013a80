//! Durability (PROTOCOL.md §12): the server runs as a child process on a data
//! directory, is killed (`kill -9`) or stopped, and restarted on the same
//! directory; what it acknowledged must still be there, once and in order.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::process::Child;
use tokio::sync::Mutex;

use crate::util::{CHAT, CHAT_SECRET, Client, OPEN, OPEN_SECRET, TempDir, basic_auth, http_request, spawn_rookery};

/// A `rookery serve` child process on a data directory.
pub(crate) struct Node {
    child: Child,
    pub(crate) addr: SocketAddr,
}

impl Node {
    pub(crate) async fn start(dir: &Path, extra: &str) -> Node {
        Node::start_with(dir, extra, "").await
    }

    /// `open_extra` goes into the open channel's table.
    async fn start_with(dir: &Path, extra: &str, open_extra: &str) -> Node {
        let config = dir.join("rookery.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:0\"\nauth_channel = \"{CHAT}\"\n{extra}\n\
                 [[channel]]\nid = \"{CHAT}\"\nsecret = \"{CHAT_SECRET}\"\nrequire_auth = true\n\
                 [[channel]]\nid = \"{OPEN}\"\nsecret = \"{OPEN_SECRET}\"\nrequire_auth = false\n{open_extra}\n"
            ),
        )
        .unwrap();
        let (child, addr) = spawn_rookery(&config, &dir.join("data"), |_| {}).await;
        Node { child, addr }
    }

    pub(crate) async fn kill9(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// SIGTERM: a graceful shutdown, which flushes the store.
    pub(crate) async fn stop(mut self) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        let exited = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await;
        assert!(exited.expect("rookery exits after SIGTERM").unwrap().success());
    }

    async fn client(&self, channel: &str) -> Client {
        let mut client = Client::connect(&format!("ws://{}/v3/websocket", self.addr)).await;
        client.handshake(channel).await;
        client
    }

    async fn history(&self, room: &str) -> Vec<Value> {
        let auth = basic_auth(OPEN, OPEN_SECRET);
        let path = format!("/api/{OPEN}/{room}/history?count=100");
        let response = http_request(self.addr, "GET", &path, &[("authorization", &auth)], Bytes::new()).await;
        assert_eq!(response.status, 200, "{}", response.text());
        response.json().as_array().unwrap().clone()
    }

    async fn metric(&self, name: &str) -> f64 {
        let text = http_request(self.addr, "GET", "/metrics", &[], Bytes::new())
            .await
            .text();
        text.lines()
            .find_map(|line| line.strip_prefix(name).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or(0.0)
    }
}

/// Publishes over one kept-alive connection until the server goes away; returns
/// the (room, n) of every publish that was answered `200`.
async fn flood(addr: SocketAddr, client: usize, rooms: usize) -> Vec<(usize, usize)> {
    let mut acknowledged = Vec::new();
    let Ok(stream) = TcpStream::connect(addr).await else {
        return acknowledged;
    };
    let Ok((mut sender, connection)) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
    else {
        return acknowledged;
    };
    tokio::spawn(connection);
    let auth = crate::util::basic_auth(OPEN, OPEN_SECRET);
    for n in 0.. {
        let room = (client * 5 + n) % rooms;
        let request = hyper::Request::builder()
            .method("POST")
            .uri(format!("/api/{OPEN}/flood-{room}/publish"))
            .header("host", addr.to_string())
            .header("authorization", &auth)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(json!({"client": client, "n": n}).to_string())))
            .unwrap();
        let Ok(response) = sender.send_request(request).await else {
            break;
        };
        let ok = response.status() == 200;
        if response.into_body().collect().await.is_err() {
            break;
        }
        if ok {
            acknowledged.push((room, n));
        }
    }
    acknowledged
}

#[tokio::test]
async fn kill_9_during_a_rest_flood_loses_nothing_that_was_acknowledged() {
    const CLIENTS: usize = 8;
    const ROOMS: usize = 40;
    let dir = TempDir::new();
    let node = Node::start(&dir.0, "").await;
    let addr = node.addr;
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let floods: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let acknowledged = Arc::clone(&acknowledged);
            tokio::spawn(async move {
                let acked = flood(addr, client, ROOMS).await;
                acknowledged.lock().await.push((client, acked));
            })
        })
        .collect();
    // Let the flood run, then kill the server in the middle of it.
    // (Generous: CI machines are small and fsync may be slow; the point is to kill mid-flood.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while node.metric("rookery_messages_published_total{via=\"rest\"}").await < 200.0 {
        assert!(tokio::time::Instant::now() < deadline, "the flood does not get going");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.kill9().await;
    for flood in floods {
        flood.await.unwrap();
    }
    let acknowledged = acknowledged.lock().await.clone();
    let total: usize = acknowledged.iter().map(|(_, acked)| acked.len()).sum();
    assert!(total >= 200, "only {total} publishes were acknowledged");

    let node = Node::start(&dir.0, "").await;
    let mut stored: Vec<Vec<(u64, u64)>> = Vec::new();
    for room in 0..ROOMS {
        let history = node.history(&format!("flood-{room}")).await;
        let entries: Vec<(u64, u64)> = history
            .iter()
            .map(|m| {
                (
                    m["message"]["client"].as_u64().unwrap(),
                    m["message"]["n"].as_u64().unwrap(),
                )
            })
            .collect();
        // Ids are unique and increase in history order.
        let ids: Vec<&str> = history.iter().map(|m| m["id"].as_str().unwrap()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "room {room}: ids out of order");
        stored.push(entries);
    }
    for (client, acked) in &acknowledged {
        // Each client publishes in order, so its messages in one room appear in order, once.
        let mut last_seen: Vec<Option<usize>> = vec![None; ROOMS];
        for &(room, n) in acked {
            let entries = &stored[room];
            let history_len = entries.len();
            let found: Vec<usize> = entries
                .iter()
                .enumerate()
                .filter(|(_, e)| **e == (*client as u64, n as u64))
                .map(|(i, _)| i)
                .collect();
            // History keeps the latest 100 per room: older acknowledged messages may have been trimmed.
            if history_len == 100 && found.is_empty() {
                continue;
            }
            assert_eq!(
                found.len(),
                1,
                "client {client} message {n} in room {room}: found {found:?}"
            );
            if let Some(previous) = last_seen[room] {
                assert!(found[0] > previous, "client {client}: room {room} out of order");
            }
            last_seen[room] = Some(found[0]);
        }
        // And the newest acknowledged message of every room it wrote to is there.
        for (room, entries) in stored.iter().enumerate() {
            if let Some(&(_, n)) = acked.iter().rev().find(|(r, _)| *r == room) {
                assert!(
                    entries.contains(&(*client as u64, n as u64)),
                    "client {client}: the last acknowledged message {n} of room {room} is missing"
                );
            }
        }
    }
    node.kill9().await;
}

#[tokio::test]
async fn history_and_recovery_survive_a_clean_restart_and_not_a_lost_data_dir() {
    let dir = TempDir::new();
    let node = Node::start(&dir.0, "").await;
    let mut publisher = node.client(OPEN).await;
    for i in 0..5 {
        let reply = publisher
            .request(json!({"type": "publish", "room": "room", "message": {"i": i}}))
            .await;
        assert_eq!(reply.get("error"), None);
    }
    let mut reader = node.client(OPEN).await;
    let reply = reader
        .request(json!({"type": "subscribe", "room": "room", "history_count": 100}))
        .await;
    assert_eq!(reply.get("error"), None);
    let mut before = Vec::new();
    for _ in 0..5 {
        before.push(reader.recv().await);
    }
    let last_seen = before[2]["id"].as_str().unwrap().to_owned();
    node.stop().await;

    let node = Node::start(&dir.0, "").await;
    let mut reader = node.client(OPEN).await;
    reader
        .request(json!({"type": "subscribe", "room": "room", "history_count": 100}))
        .await;
    let mut after = Vec::new();
    for _ in 0..5 {
        after.push(reader.recv().await);
    }
    assert_eq!(before, after, "history frames are identical across a restart");
    let mut recovering = node.client(OPEN).await;
    let reply = recovering
        .request(json!({"type": "subscribe", "room": "room", "history_since": last_seen}))
        .await;
    assert_eq!(reply["recovered"], true);
    let recovered = [recovering.recv().await, recovering.recv().await];
    assert_eq!(recovered[0]["message"], json!({"i": 3}));
    assert_eq!(recovered[1]["message"], json!({"i": 4}));
    recovering.expect_silence(Duration::from_millis(200)).await;
    node.stop().await;

    std::fs::remove_dir_all(dir.0.join("data")).unwrap();
    let node = Node::start(&dir.0, "").await;
    let mut recovering = node.client(OPEN).await;
    let reply = recovering
        .request(json!({"type": "subscribe", "room": "room", "history_since": last_seen}))
        .await;
    assert_eq!(reply["recovered"], false);
    node.stop().await;
}

#[tokio::test]
async fn rooms_without_subscribers_leave_memory_and_the_byte_bound_evicts() {
    let dir = TempDir::new();
    // A tight bound for the open channel: far fewer rooms fit than are written.
    // About 500 bytes a room here: 40 rooms fit in the bound, 300 are written.
    let node = Node::start_with(
        &dir.0,
        "[store]\ncommit_wait_ms = 1\n[limits]\npublish_rate_per_second = 10000\npublish_burst = 10000\n",
        "history_max_bytes = 20000",
    )
    .await;
    let mut publisher = node.client(OPEN).await;
    for i in 0..300 {
        publisher
            .publish(&format!("private-room-{i}"), json!("x".repeat(200)))
            .await;
    }
    // A publish with a callback is answered after every earlier frame was handled.
    publisher
        .request(json!({"type": "publish", "room": "private-room-299", "message": "last"}))
        .await;
    let mut subscriber = node.client(OPEN).await;
    subscriber.subscribe("kept").await;
    // Publishes are stored within the commit bound; then only the held room stays in memory.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while node.metric("rookery_engine_rooms").await != 1.0 {
        assert!(tokio::time::Instant::now() < deadline, "engine rooms never fell to 1");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(node.metric("rookery_rooms").await, 1.0);
    // The recently written rooms' history is still stored; the least recently used went first.
    assert_eq!(node.history("private-room-299").await.len(), 2);
    assert_eq!(node.history("private-room-0").await.len(), 0);
    assert!(node.metric("rookery_history_evicted_rooms_total").await >= 200.0);
    node.kill9().await;
}

#[tokio::test]
async fn accounts_and_sessions_survive_a_restart_and_logout_stays_revoked() {
    let dir = TempDir::new();
    let cheap = "[accounts]\nargon2_memory_kib = 8\nargon2_iterations = 1\n";
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let node = Node::start(&dir.0, cheap).await;
    let response = http_request(
        node.addr,
        "POST",
        "/register",
        &form,
        Bytes::from("username=alice&password=correct-horse"),
    )
    .await;
    assert_eq!(response.status, 201, "{}", response.text());
    let login = |addr| async move {
        let response = http_request(
            addr,
            "POST",
            "/login",
            &form,
            Bytes::from("username=alice&password=correct-horse"),
        )
        .await;
        assert_eq!(response.status, 200, "{}", response.text());
        let cookie = response.headers.get("set-cookie").unwrap().to_str().unwrap().to_owned();
        cookie.split(';').next().unwrap().to_owned()
    };
    let kept = login(node.addr).await;
    let revoked = login(node.addr).await;
    let logout = http_request(node.addr, "POST", "/logout", &[("cookie", &revoked)], Bytes::new()).await;
    assert_eq!(logout.status, 204);
    node.kill9().await;

    let node = Node::start(&dir.0, cheap).await;
    let me = |cookie: String| {
        let addr = node.addr;
        async move { http_request(addr, "GET", "/me", &[("cookie", &cookie)], Bytes::new()).await }
    };
    let still = me(kept).await;
    assert_eq!((still.status, still.json()["user"].clone()), (200, json!("alice")));
    assert_eq!(me(revoked).await.status, 401);
    // The username stays taken.
    let again = http_request(
        node.addr,
        "POST",
        "/register",
        &form,
        Bytes::from("username=alice&password=another-one"),
    )
    .await;
    assert_eq!(again.status, 409);
    node.stop().await;
}
