//! Operations: health, metrics, `POST /auth`, static files, connection limits,
//! the request deadline, the origin allow-list and graceful shutdown.

use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::util::*;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The claims of a JWT, without checking its signature.
fn claims(token: &str) -> Value {
    let parts: Vec<&str> = token.trim().split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT: {token}");
    let payload = URL_SAFE_NO_PAD.decode(parts[1]).expect("base64url payload");
    serde_json::from_slice(&payload).expect("JSON payload")
}

/// Tries a WebSocket upgrade with an optional `Origin`; the socket, or the HTTP status it was refused with.
async fn upgrade(server: &TestServer, origin: Option<&str>) -> Result<Socket, u16> {
    let mut request = server.ws_url().into_client_request().unwrap();
    if let Some(origin) = origin {
        request.headers_mut().insert("origin", origin.parse().unwrap());
    }
    match tokio::time::timeout(RECV_TIMEOUT, tokio_tungstenite::connect_async(request))
        .await
        .expect("the upgrade is answered in time")
    {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("unexpected upgrade error {other}"),
    }
}

/// Handshakes a raw socket on `channel` and returns the reply.
async fn raw_handshake(socket: &mut Socket, channel: &str) -> Value {
    let frame = json!({"type": "handshake", "channel": channel, "callback": 0});
    socket.send(Message::text(frame.to_string())).await.unwrap();
    loop {
        match tokio::time::timeout(RECV_TIMEOUT, socket.next())
            .await
            .expect("reply in time")
        {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected the handshake reply, got {other:?}"),
        }
    }
}

/// Waits for the server to end the connection and asserts it sent no close
/// frame: the official JS client reconnects only on 1006 (no close frame).
/// Data frames that were already queued (presence leave events) may come first.
async fn expect_dropped_without_close(client: &mut Client) {
    loop {
        match tokio::time::timeout(RECV_TIMEOUT, client.ws.next())
            .await
            .expect("the connection ends within the timeout")
        {
            None | Some(Err(_)) => return,
            Some(Ok(Message::Close(frame))) => panic!("expected no close frame, got {frame:?}"),
            Some(Ok(_)) => continue,
        }
    }
}

/// The value of one sample in a Prometheus text exposition, e.g.
/// `rookery_handshakes_total{result="ok"}`; `None` when absent.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn metrics_text(server: &TestServer) -> String {
    let response = server.http("GET", "/metrics", &[], "").await;
    assert_eq!(response.status, 200);
    let content_type = response.headers["content-type"].to_str().unwrap();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    response.text()
}

#[tokio::test]
async fn healthz_answers_ok() {
    let server = TestServer::start().await;
    let response = server.http("GET", "/healthz", &[], "").await;
    assert_eq!((response.status, response.text().as_str()), (200, "ok"));
}

#[tokio::test]
async fn metrics_count_the_traffic() {
    let server = TestServer::start().await;
    // The recorder is process-wide and other tests run concurrently, so compare
    // before and after: counters only grow, by at least what this test did.
    let before = metrics_text(&server).await;
    let value = |text: &str, series: &str| sample(text, series).unwrap_or(0.0);

    let mut ann = server.chat_user("Ann").await; // a handshake, a minted token, an authentication
    let reply = ann.subscribe("observable-room").await;
    assert_eq!(reply.get("error"), None);
    assert_eq!(ann.recv().await["type"], "observable_members");
    let refused = ann.try_authenticate("not.a.jwt").await;
    assert_eq!(refused["error"], "Invalid JWT");
    let refused = ann.try_authenticate("nonsense").await;
    assert_eq!(refused["error"], "JWT does not have 3 parts");
    ann.publish("observable-room", json!("over the socket")).await;
    assert_eq!(ann.recv().await["message"], "over the socket");
    let basic = basic_auth(CHAT, CHAT_SECRET);
    let response = server
        .http(
            "POST",
            "/api/chat/observable-room/publish",
            &[("authorization", &basic)],
            "over REST",
        )
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(ann.recv().await["message"], "over REST");
    let mut lost = server.connect().await;
    let reply = lost.handshake("no-such-channel").await;
    assert_eq!(reply["error"], "Unknown channel");

    let after = metrics_text(&server).await;
    let grew = |series: &str, by: f64| {
        let (old, new) = (value(&before, series), value(&after, series));
        assert!(new >= old + by, "{series}: {old} -> {new}\n{after}");
    };
    grew("rookery_messages_published_total{via=\"rest\"}", 1.0);
    grew("rookery_messages_published_total{via=\"websocket\"}", 1.0);
    grew("rookery_tokens_minted_total", 1.0);
    grew("rookery_handshakes_total{result=\"ok\"}", 1.0);
    grew("rookery_handshakes_total{result=\"unknown_channel\"}", 1.0);
    grew("rookery_authentications_total{result=\"ok\"}", 1.0);
    grew("rookery_authentications_total{result=\"invalid\"}", 1.0);
    grew("rookery_authentications_total{result=\"not_three_parts\"}", 1.0);
    grew("rookery_frames_delivered_total", 2.0);
    grew("rookery_fanout_seconds_count", 2.0);
    for name in [
        "# TYPE rookery_connections gauge",
        "# TYPE rookery_subscriptions gauge",
        "# TYPE rookery_rooms gauge",
        "# TYPE rookery_authenticated_connections gauge",
        "# TYPE rookery_fanout_seconds histogram",
        "rookery_fanout_seconds_bucket{le=\"0.001\"}",
        "rookery_fanout_seconds_sum",
    ] {
        assert!(after.contains(name), "{name} missing from\n{after}");
    }
    assert!(value(&after, "rookery_connections") >= 1.0, "{after}");
}

fn multipart(boundary: &str, fields: &[(&str, &str)]) -> String {
    let mut body = String::new();
    for (name, value) in fields {
        body.push_str(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n"
        ));
    }
    body.push_str(&format!("--{boundary}--\r\n"));
    body
}

/// Checks a token minted by `/auth` for `client`.
fn assert_minted(token: &str, client: &str, name: Option<&str>) -> Value {
    let claims = claims(token);
    assert_eq!(claims["client"], client);
    assert_eq!(claims["channel"], CHAT);
    let keys: Vec<&String> = claims["permissions"].as_object().expect("permissions").keys().collect();
    let escaped = client.replace('.', "\\.");
    assert_eq!(
        keys,
        [
            "^observable-room$".to_owned(),
            format!("^private-room-(?!{escaped}$).+$"),
            format!("^private-room-{escaped}$"),
        ]
        .iter()
        .collect::<Vec<_>>(),
        "policy order"
    );
    assert_eq!(
        claims["permissions"]["^observable-room$"],
        json!({"publish": true, "subscribe": true, "history": 100})
    );
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(
        (now() + 170..=now() + 190).contains(&exp),
        "the policy's 180 s TTL: {exp}"
    );
    let data = &claims["data"];
    match name {
        Some(name) => assert_eq!(data["name"], name),
        None => {
            let random = data["name"].as_str().expect("a random name");
            assert!(random.contains('_'), "adjective_noun: {random}");
        }
    }
    let color = data["color"].as_str().expect("a color");
    assert!(color.len() == 7 && color.starts_with('#'), "{color}");
    claims
}

#[tokio::test]
async fn auth_mints_tokens_from_every_body_kind() {
    let server = TestServer::start().await;

    // What `fetch` with FormData sends.
    let body = multipart("----formBoundaryX7", &[("clientID", "r3k:multi"), ("name", "Mia")]);
    let response = server
        .http(
            "POST",
            "/auth",
            &[("content-type", "multipart/form-data; boundary=----formBoundaryX7")],
            body,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert!(
        response.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_minted(&response.text(), "r3k:multi", Some("Mia"));

    let response = server
        .http(
            "POST",
            "/auth",
            &[("content-type", "application/x-www-form-urlencoded")],
            "clientID=r3k%3Aform",
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_minted(&response.text(), "r3k:form", None);

    let response = server
        .http(
            "POST",
            "/auth",
            &[("content-type", "application/json")],
            r#"{"clientID":"r3k:json.1","name":"Jo"}"#,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_minted(&response.text(), "r3k:json.1", Some("Jo"));

    // JSON answer on request.
    let response = server
        .http(
            "POST",
            "/auth",
            &[("content-type", "application/json"), ("accept", "application/json")],
            r#"{"clientID":"r3k:acc"}"#,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
    let claims = assert_minted(body["token"].as_str().expect("token"), "r3k:acc", None);
    assert_eq!(body["expires_at"], claims["exp"]);

    // The minted token authenticates a real connection.
    let mut client = server.client(CHAT).await;
    let token = server.auth_token(client.id(), Some("Real")).await;
    let reply = client.authenticate(&token).await;
    assert_eq!(reply.get("error"), None, "{reply}");
}

#[tokio::test]
async fn auth_refuses_bad_requests() {
    let server = TestServer::start_with("[limits]\nmax_message_bytes = 1024", "").await;
    let form = "application/x-www-form-urlencoded";
    let json_type = "application/json";
    // (content type, body, status, text of the answer)
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (form, "name=Ann".into(), 422, "No clientID defined"),
        (form, "clientID=".into(), 422, "No clientID defined"),
        (json_type, "{}".into(), 422, "No clientID defined"),
        (json_type, r#"{"clientID":null}"#.into(), 422, "No clientID defined"),
        (
            "multipart/form-data; boundary=b",
            multipart("b", &[("name", "Ann")]),
            422,
            "No clientID defined",
        ),
        (form, format!("clientID=a&name={}", "x".repeat(33)), 422, "Invalid name"),
        (form, "clientID=a&name=a%07b".into(), 422, "Invalid name"),
        (form, format!("clientID={}", "c".repeat(257)), 422, "clientID"),
        (json_type, "{\"clientID\":".into(), 400, "Malformed body"),
        (json_type, "[1]".into(), 400, "Malformed body"),
        (json_type, r#"{"clientID":5}"#.into(), 400, "Malformed body"),
        ("multipart/form-data", "no boundary".into(), 400, "Malformed body"),
        ("image/png", "x".into(), 400, "Malformed body"),
        (form, format!("clientID=a&pad={}", "p".repeat(2000)), 413, "too large"),
    ];
    for (content_type, body, status, text) in cases {
        let headers = [("content-type", content_type)];
        let response = server.http("POST", "/auth", &headers, body.clone()).await;
        assert_eq!(response.status, status, "{body:?}: {}", response.text());
        assert!(response.text().contains(text), "{body:?}: {}", response.text());
    }
    // Exactly the tutorial's text for the missing id.
    let response = server.http("POST", "/auth", &[("content-type", form)], "").await;
    assert_eq!(
        (response.status, response.text().as_str()),
        (422, "No clientID defined")
    );

    let response = server.http("GET", "/auth", &[], "").await;
    assert_eq!(response.status, 405);
}

#[tokio::test]
async fn static_files_and_client_config() {
    let server = TestServer::start().await;
    let response = server.http("GET", "/config.json", &[], "").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.headers["content-type"], "application/json");
    assert_eq!(response.json(), json!({"channel": CHAT}));

    // `/` falls back to index.html, served with its own type and length.
    let index = Path::new(env!("CARGO_MANIFEST_DIR")).join("static/index.html");
    let expected = std::fs::read(&index).expect("static/index.html is part of the repository");
    let response = server.http("GET", "/", &[], "").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(response.body.as_ref(), expected.as_slice());
    let head = server.http("HEAD", "/index.html", &[], "").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.headers["content-length"], expected.len().to_string().as_str());

    for path in [
        "/no-such-file.js",
        "/../Cargo.toml",
        "/%2e%2e/Cargo.toml",
        "/examples/../../Cargo.toml",
        "/..%2fCargo.toml",
    ] {
        let response = server.http("GET", path, &[], "").await;
        assert_eq!(response.status, 404, "{path}: {}", response.text());
    }
    let response = server.http("POST", "/index.html", &[], "").await;
    assert_eq!(response.status, 405);
}

#[tokio::test]
async fn connections_per_ip_are_limited() {
    let server = TestServer::start_with("[limits]\nmax_connections_per_ip = 2", "").await;
    let mut first = server.client(OPEN).await;
    let _second = server.client(OPEN).await;
    assert_eq!(upgrade(&server, None).await.err(), Some(429));
    // Plain HTTP is not counted.
    assert_eq!(server.http("GET", "/healthz", &[], "").await.status, 200);

    // A slot is freed when a connection ends (the session finishes after the socket closes).
    first.ws.close(None).await.unwrap();
    assert_eq!(first.expect_closed().await, None);
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    let mut third = loop {
        match upgrade(&server, None).await {
            Ok(socket) => break socket,
            Err(429) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("the freed slot was not reused: {status}"),
        }
    };
    assert!(raw_handshake(&mut third, OPEN).await["client_id"].is_string());
}

#[tokio::test]
async fn origin_allow_list() {
    let server = TestServer::start_with("allowed_origins = [\"http://good\"]", "").await;
    assert_eq!(upgrade(&server, Some("http://evil")).await.err(), Some(403));
    assert_eq!(upgrade(&server, Some("http://good.evil")).await.err(), Some(403));
    let mut good = upgrade(&server, Some("http://good")).await.expect("listed origin");
    let reply = raw_handshake(&mut good, OPEN).await;
    assert_eq!(reply["require_auth"], false, "{reply}");
    // Browsers always send Origin; native clients may not, and must not be required to.
    let mut native = upgrade(&server, None).await.expect("no Origin header");
    assert!(raw_handshake(&mut native, OPEN).await["client_id"].is_string());

    // Without a list, any origin (the Node client sends a fixed foreign one).
    let open = TestServer::start().await;
    let mut any = upgrade(&open, Some("http://anything")).await.expect("any origin");
    assert!(raw_handshake(&mut any, OPEN).await["client_id"].is_string());
}

#[tokio::test]
async fn graceful_shutdown_drops_sockets_so_clients_reconnect() {
    let mut server = TestServer::start().await;
    let mut clients = Vec::new();
    for name in ["Ann", "Bob"] {
        let mut client = server.chat_user(name).await;
        let reply = client.subscribe("observable-room").await;
        assert_eq!(reply.get("error"), None);
        clients.push(client);
    }
    let mut open = server.client(OPEN).await;
    assert_eq!(open.subscribe("room").await.get("error"), None);
    clients.push(open);
    // Neither an idle keep-alive HTTP connection, a silent TCP connection nor one
    // stuck in the middle of its request headers holds shutdown up.
    let mut idle_http = TcpStream::connect(server.addr).await.unwrap();
    idle_http
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: rookery\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 512];
    let read = tokio::time::timeout(RECV_TIMEOUT, idle_http.read(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    assert!(
        answer[..read].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer[..read])
    );
    let silent = TcpStream::connect(server.addr).await.unwrap();
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (addr, deadline) = (server.addr, Duration::from_secs(5));

    let started = tokio::time::Instant::now();
    server.stop().await;
    let took = started.elapsed();
    assert!(
        took < deadline,
        "shutdown waited for its whole {deadline:?} deadline ({took:?}): something held it up"
    );

    for client in &mut clients {
        expect_dropped_without_close(client).await;
    }
    drop((idle_http, silent, partial));
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer accepting connections"
    );
}

/// Writes `request` on a fresh connection and reads until the server closes
/// it (or `RECV_TIMEOUT` passes, which fails the test): everything it answered.
async fn raw_exchange(server: &TestServer, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_until_closed(&mut stream).await
}

async fn read_until_closed(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let read = tokio::time::timeout(RECV_TIMEOUT, async {
        let mut chunk = [0u8; 4096];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert!(
        read.is_ok(),
        "the server did not close the connection; it sent {answer:?}"
    );
    answer
}

/// Retries `GET /healthz` until it is answered 200, for a slot that frees
/// asynchronously (the server sees the close a moment after the client).
async fn eventually_healthy(server: &TestServer) {
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    loop {
        let answer = raw_exchange(server, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        if answer.starts_with("HTTP/1.1 200") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the freed slot was not reused: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const DEADLINE_LIMITS: &str = "[limits]\nhttp_request_timeout_seconds = 1";

#[tokio::test]
async fn slow_request_bodies_get_408_and_are_closed() {
    let server = TestServer::start_with(DEADLINE_LIMITS, "").await;
    let before = metrics_text(&server).await;
    // Many clients announce more body than they send (the attack in the finding).
    let started = tokio::time::Instant::now();
    let slow = (0..20).map(|_| {
        raw_exchange(
            &server,
            b"POST /auth HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
              Content-Length: 100\r\n\r\nclientID=a",
        )
    });
    for answer in futures_util::future::join_all(slow).await {
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert!(answer.ends_with("Request timeout"), "{answer}");
        assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    }
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "answered before the deadline"
    );
    let after = metrics_text(&server).await;
    let value = |text: &str, series: &str| sample(text, series).unwrap_or(0.0);
    for series in [
        "rookery_refusals_total{limit=\"http_deadline\"}",
        "rookery_http_responses_total{status=\"408\"}",
    ] {
        assert!(
            value(&after, series) >= value(&before, series) + 20.0,
            "{series}\n{after}"
        );
    }
    // A body that arrives in time is answered normally.
    let response = server
        .http(
            "POST",
            "/auth",
            &[("content-type", "application/x-www-form-urlencoded")],
            "clientID=r3k:ok",
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
}

#[tokio::test]
async fn slow_request_headers_get_408_and_silent_connections_are_closed() {
    let server = TestServer::start_with(DEADLINE_LIMITS, "").await;
    let answer = raw_exchange(&server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.ends_with("Request timeout"), "{answer}");

    // A connection that never sends a byte is closed without an answer.
    let answer = raw_exchange(&server, b"").await;
    assert_eq!(answer, "");

    // The deadline restarts for each request on a keep-alive connection: a
    // first request answered, then an idle wait, then the connection closes.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert!(
        !answer.contains("408"),
        "an idle keep-alive connection gets no 408: {answer}"
    );
}

#[tokio::test]
async fn websockets_outlive_the_request_deadline() {
    let server = TestServer::start_with(DEADLINE_LIMITS, "").await;
    let mut client = server.client(OPEN).await;
    assert_eq!(client.subscribe("room").await.get("error"), None);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client.publish("room", json!("still here")).await;
    assert_eq!(client.recv().await["message"], "still here");
}

#[tokio::test]
async fn http_connections_are_capped_overall() {
    let server = TestServer::start_with("[limits]\nmax_http_connections = 2", "").await;
    let idle = TcpStream::connect(server.addr).await.unwrap();
    let _other = TcpStream::connect(server.addr).await.unwrap();
    let answer = raw_exchange(&server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.ends_with("Server at its connection limit"), "{answer}");
    drop(idle);
    eventually_healthy(&server).await;
}

#[tokio::test]
async fn http_connections_are_capped_per_ip_and_websockets_hold_their_slot() {
    let server = TestServer::start_with("[limits]\nmax_http_connections_per_ip = 2", "").await;
    let mut socket = server.client(OPEN).await;
    let _idle = TcpStream::connect(server.addr).await.unwrap();
    let answer = raw_exchange(&server, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 429 "), "{answer}");
    assert!(answer.ends_with("Too many connections from this address"), "{answer}");
    assert_eq!(
        upgrade(&server, None).await.err(),
        Some(429),
        "upgrades are connections too"
    );
    // Closing the WebSocket frees the slot its HTTP connection took.
    socket.ws.close(None).await.unwrap();
    assert_eq!(socket.expect_closed().await, None);
    eventually_healthy(&server).await;
}
