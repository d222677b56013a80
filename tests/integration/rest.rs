//! The REST API under `/api` (PROTOCOL.md §9): publishing observed by real
//! WebSocket subscribers, history, the read-only views, every way to
//! authenticate and every error status with its `{"message"}` body.

use serde_json::{Value, json};

use crate::util::*;

const JSON: (&str, &str) = ("content-type", "application/json");

/// Asserts an error response: the status and a JSON body `{"message": "…"}`
/// whose message contains `needle`.
fn assert_error(response: &HttpResponse, status: u16, needle: &str) {
    assert_eq!(response.status, status, "{}", response.text());
    assert_eq!(
        response.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "error bodies are JSON"
    );
    let body = response.json();
    let object = body.as_object().expect("error body is an object");
    assert_eq!(object.len(), 1, "only a message: {body}");
    let message = object["message"].as_str().expect("message is a string");
    assert!(message.contains(needle), "{message:?} should mention {needle:?}");
}

/// A client handshaken on the open channel and subscribed to `room`.
async fn open_subscriber(server: &TestServer, room: &str) -> Client {
    let mut client = server.client(OPEN).await;
    let reply = client.subscribe(room).await;
    assert_eq!(reply.get("error"), None, "{reply}");
    client
}

fn sorted(value: &Value) -> Vec<String> {
    let mut items: Vec<String> = value
        .as_array()
        .unwrap_or_else(|| panic!("expected an array, got {value}"))
        .iter()
        .map(|v| v.as_str().expect("strings").to_owned())
        .collect();
    items.sort();
    items
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[tokio::test]
async fn publish_json_body_reaches_subscribers_without_client_id() {
    let server = TestServer::start().await;
    let mut sub = open_subscriber(&server, "news").await;

    let response = server
        .http("POST", "/api/open/news/publish", &[JSON], r#"{"text":"hi","n":[1,2]}"#)
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let id = response.json()["id"].as_str().expect("an id").to_owned();
    assert!(!id.is_empty());

    let frame = sub.recv().await;
    assert_eq!(frame["type"], "publish");
    assert_eq!(frame["room"], "news");
    assert_eq!(frame["message"], json!({"text": "hi", "n": [1, 2]}));
    assert_eq!(frame["id"], id.as_str());
    assert!(frame["timestamp"].is_u64(), "{frame}");
    assert_eq!(frame.get("client_id"), None, "REST messages have no client_id: {frame}");

    // A JSON scalar is a message too; a charset parameter does not matter.
    let response = server
        .http(
            "POST",
            "/api/open/news/publish",
            &[("content-type", "application/json; charset=utf-8")],
            "42",
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(sub.recv().await["message"], json!(42));
}

#[tokio::test]
async fn publish_other_or_no_content_type_is_a_raw_string() {
    let server = TestServer::start().await;
    let mut sub = open_subscriber(&server, "raw").await;

    let response = server
        .http(
            "POST",
            "/api/open/raw/publish",
            &[("content-type", "text/plain")],
            "{\"not\":\"parsed\"}",
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let frame = sub.recv().await;
    assert_eq!(frame["message"], json!("{\"not\":\"parsed\"}"));
    assert_eq!(frame.get("client_id"), None);

    let response = server.http("POST", "/api/open/raw/publish", &[], "plain words").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(sub.recv().await["message"], json!("plain words"));

    // An empty body is the empty string.
    let response = server.http("POST", "/api/open/raw/publish", &[], "").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(sub.recv().await["message"], json!(""));
}

#[tokio::test]
async fn rest_publishes_enter_history() {
    let server = TestServer::start().await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        let response = server
            .http("POST", "/api/open/log/publish", &[JSON], json!({"n": n}).to_string())
            .await;
        assert_eq!(response.status, 200, "{}", response.text());
        ids.push(response.json()["id"].as_str().unwrap().to_owned());
    }

    // Over REST: oldest first, the latest `count` of them, no client_id.
    let response = server.http("GET", "/api/open/log/history?count=2", &[], "").await;
    assert_eq!(response.status, 200, "{}", response.text());
    let history = response.json();
    let entries = history.as_array().expect("an array");
    assert_eq!(entries.len(), 2, "{history}");
    for (entry, n) in entries.iter().zip([2, 3]) {
        assert_eq!(entry["message"], json!({"n": n}));
        assert_eq!(entry["room"], "log");
        assert_eq!(entry["id"], ids[n - 1].as_str());
        assert!(entry["timestamp"].is_u64());
        assert_eq!(entry.get("client_id"), None, "{entry}");
    }
    let all = server.http("GET", "/api/open/log/history", &[], "").await.json();
    assert_eq!(all.as_array().unwrap().len(), 3, "{all}");
    let none = server.http("GET", "/api/open/empty/history?count=5", &[], "").await;
    assert_eq!((none.status, none.json()), (200, json!([])));

    // Over a WebSocket: a later subscriber asks for history_count.
    let mut late = server.client(OPEN).await;
    let reply = late
        .request(json!({"type": "subscribe", "room": "log", "history_count": 2}))
        .await;
    assert_eq!(reply.get("error"), None, "{reply}");
    for (index, n) in [(0, 2), (1, 3)] {
        let frame = late.recv().await;
        assert_eq!(frame["type"], "history_message", "{frame}");
        assert_eq!(frame["index"], index);
        assert_eq!(frame["message"], json!({"n": n}));
        assert_eq!(frame["id"], ids[n - 1].as_str());
        assert_eq!(frame.get("client_id"), None, "{frame}");
    }

    let bad = server.http("GET", "/api/open/log/history?count=many", &[], "").await;
    assert_error(&bad, 400, "count");
}

#[tokio::test]
async fn publish_to_several_rooms() {
    let server = TestServer::start().await;
    let mut a = open_subscriber(&server, "a").await;
    let mut b = open_subscriber(&server, "b c").await;

    let response = server
        .http(
            "POST",
            "/api/open/publish/rooms?r=a&r=b%20c",
            &[JSON],
            r#"{"all":true}"#,
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let body = response.json();
    let ids = body["ids"].as_object().expect("ids object");
    assert_eq!(ids.len(), 2, "{body}");

    let frame = a.recv().await;
    assert_eq!(
        (frame["room"].clone(), frame["message"].clone()),
        (json!("a"), json!({"all": true}))
    );
    assert_eq!(frame["id"], ids["a"]);
    assert_eq!(frame.get("client_id"), None);
    let frame = b.recv().await;
    assert_eq!(frame["room"], "b c");
    assert_eq!(frame["id"], ids["b c"]);
    assert_ne!(ids["a"], ids["b c"], "one message id per room");

    // `publish/rooms` is matched before `{room}/publish`, and needs at least one room.
    let response = server.http("POST", "/api/open/publish/rooms", &[JSON], "1").await;
    assert_error(&response, 400, "r=");
    let response = server.http("POST", "/api/open/publish/rooms?r=", &[JSON], "1").await;
    assert_error(&response, 400, "room");
}

#[tokio::test]
async fn read_only_views_of_rooms_and_members() {
    let server = TestServer::start().await;
    let mut a = open_subscriber(&server, "one").await;
    let reply = a.subscribe("observable two").await;
    assert_eq!(reply.get("error"), None, "{reply}");
    let b = open_subscriber(&server, "one").await;
    // Handshaken but in no room: counted as a user, not as a member.
    let idle = server.client(OPEN).await;
    // Another channel's clients are not counted here.
    let _other = server.chat_user("Ann").await;

    let stats = server.http("GET", "/api/open/stats", &[], "").await;
    assert_eq!(stats.status, 200);
    assert_eq!(stats.json(), json!({"users_count": 3}));

    let mut both = vec![a.id().to_owned(), b.id().to_owned()];
    both.sort();
    let members = server.http("GET", "/api/open/members", &[], "").await.json();
    assert_eq!(sorted(&members), both);
    assert!(!sorted(&members).contains(&idle.id().to_owned()));

    let rooms = server.http("GET", "/api/open/rooms", &[], "").await.json();
    assert_eq!(sorted(&rooms), ["observable two", "one"]);

    let one = server.http("GET", "/api/open/one/members", &[], "").await.json();
    assert_eq!(sorted(&one), both);
    // Percent-decoded path segment.
    let two = server.http("GET", "/api/open/observable%20two/members", &[], "").await;
    assert_eq!(two.status, 200);
    assert_eq!(two.json(), json!([a.id()]));
    let empty = server.http("GET", "/api/open/nobody-here/members", &[], "").await;
    assert_eq!((empty.status, empty.json()), (200, json!([])));

    let map = server.http("GET", "/api/open/room-members", &[], "").await.json();
    let map = map.as_object().expect("an object");
    assert_eq!(map.len(), 2, "{map:?}");
    assert_eq!(sorted(&map["one"]), both);
    assert_eq!(map["observable two"], json!([a.id()]));

    // The chat channel sees its own user and no rooms.
    let chat = server
        .http(
            "GET",
            "/api/chat/stats",
            &[("authorization", &basic_auth(CHAT, CHAT_SECRET))],
            "",
        )
        .await;
    assert_eq!(chat.json(), json!({"users_count": 1}));
}

#[tokio::test]
async fn percent_decoded_room_names_in_publish_paths() {
    let server = TestServer::start().await;
    let mut sub = open_subscriber(&server, "observable room/ü").await;
    let response = server
        .http("POST", "/api/open/observable%20room%2F%C3%BC/publish", &[], "encoded")
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let frame = sub.recv().await;
    assert_eq!(frame["room"], "observable room/ü");
    assert_eq!(frame["message"], "encoded");
}

#[tokio::test]
async fn basic_auth_on_a_channel_that_requires_auth() {
    let server = TestServer::start().await;
    let good = basic_auth(CHAT, CHAT_SECRET);
    let response = server
        .http(
            "POST",
            "/api/chat/observable-room/publish",
            &[("authorization", &good)],
            "hello",
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    let response = server
        .http("GET", "/api/chat/rooms", &[("authorization", &good)], "")
        .await;
    assert_eq!((response.status, response.json()), (200, json!([])));

    let cases = [
        (None, "Missing credentials"),
        (Some(basic_auth(CHAT, "wrong-secret")), "Invalid credentials"),
        (Some(basic_auth(OPEN, CHAT_SECRET)), "Invalid credentials"),
        (Some(basic_auth(CHAT, OPEN_SECRET)), "Invalid credentials"),
        (Some("Basic !!!not-base64".to_owned()), "Malformed"),
        (Some("Digest abc".to_owned()), "Unsupported"),
        (Some("garbage".to_owned()), "Malformed"),
    ];
    for (header, needle) in cases {
        let headers: Vec<(&str, &str)> = header.iter().map(|h| ("authorization", h.as_str())).collect();
        for (method, path) in [
            ("POST", "/api/chat/observable-room/publish"),
            ("GET", "/api/chat/stats"),
        ] {
            let response = server.http(method, path, &headers, "x").await;
            assert_error(&response, 401, needle);
            assert!(response.headers.contains_key("www-authenticate"), "{method} {path}");
        }
    }
    // Nothing refused was stored.
    let history = server
        .http(
            "GET",
            "/api/chat/observable-room/history",
            &[("authorization", &good)],
            "",
        )
        .await
        .json();
    assert_eq!(history.as_array().unwrap().len(), 1, "{history}");
}

#[tokio::test]
async fn channel_without_auth_takes_anonymous_and_basic_requests() {
    let server = TestServer::start().await;
    let response = server.http("POST", "/api/open/r/publish", &[], "anon").await;
    assert_eq!(response.status, 200, "{}", response.text());
    let good = basic_auth(OPEN, OPEN_SECRET);
    let response = server
        .http("POST", "/api/open/r/publish", &[("authorization", &good)], "basic")
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    // Credentials that are presented are checked, even where none are needed.
    let bad = basic_auth(OPEN, "nope");
    let response = server
        .http("POST", "/api/open/r/publish", &[("authorization", &bad)], "bad")
        .await;
    assert_error(&response, 401, "Invalid credentials");
    let history = server.http("GET", "/api/open/r/history", &[], "").await.json();
    let messages: Vec<&Value> = history.as_array().unwrap().iter().map(|m| &m["message"]).collect();
    assert_eq!(messages, [&json!("anon"), &json!("basic")]);
}

#[tokio::test]
async fn bearer_tokens_publish_where_their_permissions_allow() {
    let server = TestServer::start().await;
    let permissions = json!({
        "^news-.+$": {"publish": true, "subscribe": false},
        "^news-secret$": {"publish": false, "subscribe": true},
    });
    let token = chat_token(None, permissions.clone(), now() + 60, None);
    let auth = bearer(&token);
    let headers = [("authorization", auth.as_str()), JSON];

    let mut sub = server.chat_user("Ann").await;
    let reply = sub.subscribe("observable-room").await;
    assert_eq!(reply.get("error"), None);
    assert_eq!(sub.recv().await["type"], "observable_members");

    let response = server.http("POST", "/api/chat/news-1/publish", &headers, "1").await;
    assert_eq!(response.status, 200, "{}", response.text());
    let response = server
        .http("POST", "/api/chat/publish/rooms?r=news-1&r=news-2", &headers, "2")
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["ids"].as_object().unwrap().len(), 2);

    // The last matching key decides: news-secret is denied; so is a room no key matches.
    for room in ["news-secret", "observable-room"] {
        let response = server
            .http("POST", &format!("/api/chat/{room}/publish"), &headers, "3")
            .await;
        assert_error(&response, 403, room);
    }
    // One denied room refuses the whole multi-room publish; nothing is stored.
    let response = server
        .http("POST", "/api/chat/publish/rooms?r=news-3&r=news-secret", &headers, "4")
        .await;
    assert_error(&response, 403, "news-secret");
    let basic = basic_auth(CHAT, CHAT_SECRET);
    let history = server
        .http("GET", "/api/chat/news-3/history", &[("authorization", &basic)], "")
        .await;
    assert_eq!(history.json(), json!([]));
    // The subscriber of the denied room saw nothing.
    sub.expect_silence(std::time::Duration::from_millis(100)).await;

    // Bearer tokens may only publish.
    for path in [
        "/api/chat/stats",
        "/api/chat/news-1/members",
        "/api/chat/news-1/history",
    ] {
        let response = server.http("GET", path, &headers, "").await;
        assert_error(&response, 403, "only publish");
    }

    // Refused tokens: a client claim, expired, wrong secret, wrong channel, not a JWT.
    let with_client = chat_token(Some("r3k:someone"), permissions.clone(), now() + 60, None);
    let expired = chat_token(None, permissions.clone(), now() - 10, None);
    let foreign = rookery::token::TokenIssuer::new(CHAT, "other-secret").mint(
        None,
        None,
        permissions.as_object().unwrap(),
        now() + 60,
    );
    let other_channel = rookery::token::TokenIssuer::new(OPEN, CHAT_SECRET).mint(
        None,
        None,
        permissions.as_object().unwrap(),
        now() + 60,
    );
    let cases = [
        (with_client, "JWT client mismatch"),
        (expired, "JWT expired"),
        (foreign, "Invalid JWT signature"),
        (other_channel, "JWT channel mismatch"),
        ("not-a-jwt".to_owned(), "JWT does not have 3 parts"),
    ];
    for (token, needle) in cases {
        let auth = bearer(&token);
        let response = server
            .http("POST", "/api/chat/news-1/publish", &[("authorization", &auth)], "5")
            .await;
        assert_error(&response, 401, needle);
    }
}

#[tokio::test]
async fn unknown_channels_and_paths_are_not_found() {
    let server = TestServer::start().await;
    let response = server.http("POST", "/api/nope/room/publish", &[], "x").await;
    assert_error(&response, 404, "Unknown channel");
    let response = server.http("GET", "/api/nope/stats", &[], "").await;
    assert_error(&response, 404, "Unknown channel");
    for path in [
        "/api",
        "/api/",
        "/api/open",
        "/api/open/",
        "/api/open/nothing",
        "/api/open/room/unknown",
        "/api/open/a/b/c/members",
    ] {
        let response = server.http("GET", path, &[], "").await;
        assert_error(&response, 404, "Not found");
    }
    let response = server.http("DELETE", "/api/open/stats", &[], "").await;
    assert_error(&response, 404, "Not found");
    // A known path with the wrong method.
    for (method, path) in [
        ("GET", "/api/open/room/publish"),
        ("PUT", "/api/open/publish/rooms?r=a"),
    ] {
        let response = server.http(method, path, &[], "").await;
        assert_error(&response, 405, "POST");
        assert_eq!(response.headers.get("allow").unwrap(), "POST");
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    let server = TestServer::start_with("[limits]\nmax_message_bytes = 1024", "").await;
    let mut sub = open_subscriber(&server, "big").await;
    let fits = "x".repeat(1000);
    let response = server.http("POST", "/api/open/big/publish", &[], fits.clone()).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(sub.recv().await["message"], fits.as_str());

    let too_big = format!("\"{}\"", "y".repeat(2000));
    let response = server
        .http("POST", "/api/open/big/publish", &[JSON], too_big.clone())
        .await;
    assert_error(&response, 413, "too large");
    let response = server
        .http("POST", "/api/open/publish/rooms?r=big", &[], too_big.clone())
        .await;
    assert_error(&response, 413, "too large");
    sub.expect_silence(std::time::Duration::from_millis(100)).await;
    let history = server.http("GET", "/api/open/big/history", &[], "").await.json();
    assert_eq!(history.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn malformed_requests_are_bad_requests() {
    let server = TestServer::start().await;
    let mut sub = open_subscriber(&server, "r").await;
    for body in ["{\"a\":", "not json", "", "{} {}"] {
        let response = server.http("POST", "/api/open/r/publish", &[JSON], body).await;
        assert_error(&response, 400, "JSON");
    }
    let response = server
        .http(
            "POST",
            "/api/open/r/publish",
            &[("content-type", "text/plain")],
            vec![0xff, 0xfe],
        )
        .await;
    assert_error(&response, 400, "UTF-8");

    // Invalid room names: empty, control characters, longer than 256 bytes.
    let long = "a".repeat(257);
    for path in [
        "/api/open//publish".to_owned(),
        "/api/open/bad%0Aroom/publish".to_owned(),
        format!("/api/open/{long}/publish"),
        "/api/open/publish/rooms?r=ok&r=%01".to_owned(),
    ] {
        let response = server.http("POST", &path, &[], "x").await;
        assert_error(&response, 400, "Invalid room name");
    }
    let response = server.http("GET", "/api/open/bad%07room/members", &[], "").await;
    assert_error(&response, 400, "Invalid room name");
    let response = server.http("GET", "/api/open/%FF/members", &[], "").await;
    assert_error(&response, 400, "UTF-8");
    // A room name of exactly 256 bytes is fine.
    let ok = "b".repeat(256);
    let response = server.http("POST", &format!("/api/open/{ok}/publish"), &[], "x").await;
    assert_eq!(response.status, 200, "{}", response.text());
    sub.expect_silence(std::time::Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_too_deeply_nested_json_body_is_refused_and_not_stored() {
    let server = TestServer::start().await;
    let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
    let response = server.http("POST", "/api/open/deep/publish", &[JSON], deep).await;
    assert_eq!(response.status, 400);
    assert_eq!(response.json()["message"], "Message too deeply nested");
    let fine = format!("{}{}", "[".repeat(64), "]".repeat(64));
    let response = server.http("POST", "/api/open/deep/publish", &[JSON], fine).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let history = server.http("GET", "/api/open/deep/history", &[], "").await;
    assert_eq!(history.json().as_array().unwrap().len(), 1);
}
