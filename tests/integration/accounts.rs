//! Members (PROTOCOL.md §11): `/register`, `/login`, `/logout`, `/me`, the
//! session cookie, login throttling, session-aware `POST /auth`, the `{user}`
//! placeholder, guests, and the `chat` policy's decisions.

use rookery::permissions::Permissions;
use serde_json::{Value, json};

use crate::util::*;

const PASSWORD: &str = "correct horse";

/// A server whose chat channel uses the `chat` policy; `extra` goes after the
/// cheap hashing settings (inside `[accounts]`, or a new table).
async fn server_with(top: &str, accounts: &str, chat_extra: &str) -> TestServer {
    let extra = format!("{top}\n{CHEAP_HASHING}{accounts}\n");
    TestServer::start_with(&extra, &format!("policy = \"chat\"\n{chat_extra}")).await
}

async fn server() -> TestServer {
    server_with("", "", "").await
}

fn message(response: &HttpResponse) -> Value {
    response.json()["message"].clone()
}

/// The token of a successful `POST /auth` answer, decoded.
fn claims(response: &HttpResponse) -> Value {
    assert_eq!(response.status, 200, "{}", response.text());
    jwt_claims(&response.text())
}

fn permissions(claims: &Value) -> Permissions {
    Permissions::from_claim(&claims["permissions"]).expect("a valid permissions claim")
}

#[tokio::test]
async fn register_creates_accounts_once_and_names_bad_fields() {
    let server = server().await;
    let response = server
        .post_form(
            "/register",
            &[("username", "Alice"), ("password", PASSWORD), ("name", "Alice")],
            None,
        )
        .await;
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(response.json(), json!({"user": "alice"}), "usernames are lowered");
    assert!(set_cookie(&response).is_none(), "registering does not log in");

    let taken = server
        .post_form("/register", &[("username", "ALICE"), ("password", PASSWORD)], None)
        .await;
    assert_eq!((taken.status, message(&taken)), (409, json!("Username taken")));

    // JSON and multipart bodies work too.
    let json_body = json!({"username": "bob", "password": PASSWORD}).to_string();
    let response = server
        .http("POST", "/register", &[("content-type", "application/json")], json_body)
        .await;
    assert_eq!((response.status, response.json()), (201, json!({"user": "bob"})));
    let multipart = "--B\r\nContent-Disposition: form-data; name=\"username\"\r\n\r\ncarol\r\n\
                     --B\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\ncorrect horse\r\n--B--\r\n";
    let response = server
        .http(
            "POST",
            "/register",
            &[("content-type", "multipart/form-data; boundary=B")],
            multipart,
        )
        .await;
    assert_eq!((response.status, response.json()), (201, json!({"user": "carol"})));

    let long_password = "p".repeat(1025);
    let long_name = "n".repeat(33);
    let cases: [(&[(&str, &str)], &str); 10] = [
        (&[("password", PASSWORD)], "Missing username"),
        (
            &[("username", "al"), ("password", PASSWORD)],
            "Invalid username: use 3 to 32 characters of a-z, 0-9 and _",
        ),
        (
            &[("username", "al-ice"), ("password", PASSWORD)],
            "Invalid username: use 3 to 32 characters of a-z, 0-9 and _",
        ),
        (&[("username", "dave")], "Missing password"),
        (
            &[("username", "dave"), ("password", "1234567")],
            "Invalid password: use 8 to 1024 bytes",
        ),
        (
            &[("username", "dave"), ("password", &long_password)],
            "Invalid password: use 8 to 1024 bytes",
        ),
        (
            &[("username", "dave"), ("password", PASSWORD), ("name", &long_name)],
            "Invalid name: use 1 to 32 characters, no control or invisible characters",
        ),
        (
            &[("username", "dave"), ("password", PASSWORD), ("name", "a\u{7}b")],
            "Invalid name: use 1 to 32 characters, no control or invisible characters",
        ),
        (
            &[
                ("username", "dave"),
                ("password", PASSWORD),
                ("name", "evil\u{202E}gnp.exe"),
            ],
            "Invalid name: use 1 to 32 characters, no control or invisible characters",
        ),
        (
            &[("username", "dave"), ("password", PASSWORD), ("name", "da\u{200B}ve")],
            "Invalid name: use 1 to 32 characters, no control or invisible characters",
        ),
    ];
    for (fields, text) in cases {
        let response = server.post_form("/register", fields, None).await;
        assert_eq!((response.status, message(&response)), (422, json!(text)), "{fields:?}");
    }
    let response = server
        .http("POST", "/register", &[("content-type", "application/json")], "{nope")
        .await;
    assert_eq!(response.status, 400, "{}", response.text());
    let response = server.http("GET", "/register", &[], "").await;
    assert_eq!(response.status, 405);
}

#[tokio::test]
async fn closed_registration_answers_403() {
    let server = server_with("registration = \"closed\"", "", "").await;
    let response = server
        .post_form("/register", &[("username", "alice"), ("password", PASSWORD)], None)
        .await;
    assert_eq!(
        (response.status, message(&response)),
        (403, json!("Registration closed"))
    );
}

#[tokio::test]
async fn login_sets_a_session_cookie_and_me_answers_with_it() {
    let server = server().await;
    server.register("alice", PASSWORD, "Alice").await;
    let response = server
        .post_form("/login", &[("username", "ALICE"), ("password", PASSWORD)], None)
        .await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json(), json!({"user": "alice", "name": "Alice"}));
    let cookie = set_cookie(&response).expect("Set-Cookie");
    let session = session_cookie_value(&response).unwrap();
    assert!(
        session.len() >= 22 && session.chars().all(|c| c.is_ascii_alphanumeric()),
        "{session:?}"
    );
    let attributes: Vec<&str> = cookie.split(';').skip(1).map(str::trim).collect();
    assert_eq!(
        attributes,
        ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=2592000"],
        "{cookie}"
    );

    let me = server
        .http(
            "GET",
            "/me",
            &[("cookie", &format!("theme=dark; rookery_session={session}"))],
            "",
        )
        .await;
    assert_eq!((me.status, me.json()), (200, json!({"user": "alice", "name": "Alice"})));
    let anonymous = server.http("GET", "/me", &[], "").await;
    assert_eq!((anonymous.status, message(&anonymous)), (401, json!("Not logged in")));
    let forged = server
        .http("GET", "/me", &[("cookie", "rookery_session=forged")], "")
        .await;
    assert_eq!((forged.status, message(&forged)), (401, json!("Not logged in")));
}

#[tokio::test]
async fn secure_cookies_and_the_lifetime_are_configurable() {
    let server = server_with("", "secure_cookies = true\nsession_lifetime_seconds = 3600", "").await;
    server.register("alice", PASSWORD, "Alice").await;
    let response = server
        .post_form("/login", &[("username", "alice"), ("password", PASSWORD)], None)
        .await;
    let cookie = set_cookie(&response).expect("Set-Cookie");
    let attributes: Vec<&str> = cookie.split(';').skip(1).map(str::trim).collect();
    assert_eq!(
        attributes,
        ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=3600", "Secure"],
        "{cookie}"
    );
}

#[tokio::test]
async fn unknown_users_and_wrong_passwords_get_the_same_401() {
    let server = server().await;
    server.register("alice", PASSWORD, "Alice").await;
    let unknown = server
        .post_form("/login", &[("username", "nobody"), ("password", PASSWORD)], None)
        .await;
    let wrong = server
        .post_form("/login", &[("username", "alice"), ("password", "wrong horse")], None)
        .await;
    for response in [&unknown, &wrong] {
        assert_eq!(
            (response.status, message(response)),
            (401, json!("Invalid username or password"))
        );
        assert!(set_cookie(response).is_none());
    }
    assert_eq!(unknown.body, wrong.body);
}

#[tokio::test]
async fn failed_logins_per_username_answer_429_with_retry_after() {
    let server = server_with("", "login_failures_per_username = 2", "").await;
    server.register("alice", PASSWORD, "Alice").await;
    for _ in 0..2 {
        let response = server
            .post_form("/login", &[("username", "alice"), ("password", "wrong horse")], None)
            .await;
        assert_eq!(response.status, 401);
    }
    // Locked, even for the right password.
    let locked = server
        .post_form("/login", &[("username", "Alice"), ("password", PASSWORD)], None)
        .await;
    assert_eq!((locked.status, message(&locked)), (429, json!("Too many attempts")));
    let retry: u64 = locked.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry), "{retry}");
    assert!(set_cookie(&locked).is_none());
    // Other users are not affected.
    server.register("bob", PASSWORD, "Bob").await;
    server.login("bob", PASSWORD).await;
}

#[tokio::test]
async fn failed_logins_per_address_answer_429_across_usernames() {
    let server = server_with("", "login_failures_per_ip = 3", "").await;
    server.register("alice", PASSWORD, "Alice").await;
    for username in ["u1", "u2", "alice"] {
        let response = server
            .post_form("/login", &[("username", username), ("password", "wrong horse")], None)
            .await;
        assert_eq!(response.status, 401, "{username}");
    }
    let locked = server
        .post_form("/login", &[("username", "alice"), ("password", PASSWORD)], None)
        .await;
    assert_eq!((locked.status, message(&locked)), (429, json!("Too many attempts")));
    assert!(locked.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn logout_revokes_the_session_on_the_server() {
    let server = server().await;
    server.register("alice", PASSWORD, "Alice").await;
    let session = server.login("alice", PASSWORD).await;
    let copy = session.clone();
    let cookie = format!("rookery_session={session}");
    assert_eq!(server.http("GET", "/me", &[("cookie", &cookie)], "").await.status, 200);

    let response = server.http("POST", "/logout", &[("cookie", &cookie)], "").await;
    assert_eq!(response.status, 204);
    assert!(response.body.is_empty());
    let cleared = set_cookie(&response).expect("the cookie is cleared");
    assert!(
        cleared.starts_with("rookery_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );

    // A copy of the cookie kept elsewhere stops working too.
    let me = server
        .http("GET", "/me", &[("cookie", &format!("rookery_session={copy}"))], "")
        .await;
    assert_eq!((me.status, message(&me)), (401, json!("Not logged in")));
    let token = claims(&server.auth_as("r3k:x", Some(&copy), None).await);
    assert_eq!(token["data"].get("user"), None, "a revoked session mints a guest token");
    // Logging out without a session is fine.
    assert_eq!(server.http("POST", "/logout", &[], "").await.status, 204);
}

#[tokio::test]
async fn auth_with_a_session_mints_a_member_token() {
    let server = server().await;
    server.register("alice", PASSWORD, "Alice Liddell").await;
    let session = server.login("alice", PASSWORD).await;
    let token = claims(&server.auth_as("r3k:a1", Some(&session), Some("Mallory")).await);
    let data = &token["data"];
    assert_eq!(data["user"], "alice");
    assert_eq!(data["name"], "Alice Liddell", "the request's name is ignored");
    let color = data["color"].as_str().unwrap();
    assert_eq!(color, rookery::accounts::names::user_color("alice"));
    assert_eq!(data.as_object().unwrap().len(), 3, "{data}");
    assert_eq!(token["client"], "r3k:a1");
    // Stable: another connection, another token, the same colour.
    let again = claims(&server.auth_as("r3k:a2", Some(&session), None).await);
    assert_eq!(again["data"]["color"], color);

    // `{user}` and `{client}` are rendered (regex-escaped), in policy order.
    let keys: Vec<&str> = token["permissions"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "^observable-room$",
            "^private-room-(?!r3k:a1$).+$",
            "^private-room-r3k:a1$",
            "^dm-alice-[a-z0-9_]+$",
            "^dm-[a-z0-9_]+-alice$",
            "^inbox-(?!alice$)[a-z0-9_]+$",
            "^inbox-alice$",
        ]
    );
}

#[tokio::test]
async fn guests_get_no_user_and_none_of_the_user_rules() {
    let server = server().await;
    let token = claims(&server.auth_as("r3k:g.1", None, Some("Guest")).await);
    assert_eq!(token["data"]["name"], "Guest");
    assert_eq!(token["data"].get("user"), None);
    let keys: Vec<&str> = token["permissions"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "^observable-room$",
            r"^private-room-(?!r3k:g\.1$).+$",
            r"^private-room-r3k:g\.1$"
        ]
    );
    let guest = permissions(&token);
    for room in ["dm-alice-bob", "inbox-bob", "inbox-alice"] {
        let decision = guest.decide(room);
        assert!(!decision.publish && !decision.subscribe, "{room}");
    }
    assert!(guest.decide("observable-room").subscribe);
    // Guest names are checked for invisible characters like members' names.
    let response = server.auth_as("r3k:g2", None, Some("bo\u{202E}b")).await;
    assert_eq!(response.status, 422);
    assert!(response.text().starts_with("Invalid name"), "{}", response.text());
}

#[tokio::test]
async fn a_guest_cannot_take_a_members_display_name() {
    let server = server().await;
    server.register("alice", PASSWORD, "Alice").await;
    for name in ["Alice", "ALICE", " alice "] {
        let response = server.auth_as("r3k:g1", None, Some(name)).await;
        assert_eq!(
            (response.status, message(&response)),
            (409, json!("Name taken")),
            "{name:?}"
        );
    }
    assert_eq!(server.auth_as("r3k:g1", None, Some("Alicia")).await.status, 200);
    // The member herself may send any name: it is ignored.
    let session = server.login("alice", PASSWORD).await;
    assert_eq!(
        server.auth_as("r3k:a1", Some(&session), Some("Alice")).await.status,
        200
    );
}

#[tokio::test]
async fn channels_without_guests_need_a_session() {
    let server = server_with("", "", "guests = false").await;
    let response = server.auth_as("r3k:g1", None, Some("Guest")).await;
    assert_eq!((response.status, message(&response)), (401, json!("Not logged in")));
    server.register("alice", PASSWORD, "Alice").await;
    let session = server.login("alice", PASSWORD).await;
    let token = claims(&server.auth_as("r3k:a1", Some(&session), None).await);
    assert_eq!(token["data"]["user"], "alice");
}

#[tokio::test]
async fn the_chat_policy_gives_conversations_and_inboxes_to_their_users() {
    let server = server().await;
    let mut tokens = std::collections::HashMap::new();
    for (user, name) in [("alice", "Alice"), ("bob", "Bob"), ("carol", "Carol")] {
        server.register(user, PASSWORD, name).await;
        let session = server.login(user, PASSWORD).await;
        let token = claims(&server.auth_as(&format!("r3k:{user}"), Some(&session), None).await);
        tokens.insert(user, permissions(&token));
    }
    let (alice, bob, carol) = (&tokens["alice"], &tokens["bob"], &tokens["carol"]);

    // The conversation of alice and bob: both read and write it with history; carol neither.
    for member in [alice, bob] {
        let decision = member.decide("dm-alice-bob");
        assert!(decision.publish && decision.subscribe && decision.history == 100);
    }
    let decision = carol.decide("dm-alice-bob");
    assert!(!decision.publish && !decision.subscribe);
    // Names are whole: `dm-alice-bobby` is not bob's.
    assert!(!bob.decide("dm-alice-bobby").subscribe);

    // Another user's inbox: write, never read. Your own: read, never write.
    let decision = alice.decide("inbox-bob");
    assert!(decision.publish && !decision.subscribe && decision.history == 0);
    let decision = alice.decide("inbox-alice");
    assert!(decision.subscribe && !decision.publish && decision.history == 100);
    assert!(!carol.decide("inbox-alice").subscribe);

    // The tutorial's rooms stay as they were.
    assert!(carol.decide("observable-room").publish && carol.decide("observable-room").subscribe);
    assert!(alice.decide("private-room-r3k:alice").subscribe);
    assert!(!alice.decide("private-room-r3k:bob").subscribe && alice.decide("private-room-r3k:bob").publish);
}

#[tokio::test]
async fn a_member_token_works_on_the_socket() {
    let server = server().await;
    server.register("alice", PASSWORD, "Alice").await;
    let session = server.login("alice", PASSWORD).await;
    let mut client = server.client(CHAT).await;
    let response = server.auth_as(client.id(), Some(&session), None).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let reply = client.authenticate(&response.text()).await;
    assert_eq!(reply.get("error"), None, "{reply}");
    let reply = client.subscribe("dm-alice-bob").await;
    assert_eq!(reply.get("error"), None, "{reply}");
    let reply = client.subscribe("dm-bob-carol").await;
    assert_eq!(reply["error"], "Unauthorized", "{reply}");
}

#[tokio::test]
async fn a_guest_name_in_use_by_a_live_connection_is_refused_until_it_leaves() {
    let server = server().await;
    let mut zed = server.client(CHAT).await;
    let token = server.auth_token(zed.id(), Some("Zed")).await;
    zed.authenticate(&token).await;
    // Another guest asking for the same name (in any case) while Zed is online: 409.
    let taken = server.auth_as("n:other", None, Some("zed")).await;
    assert_eq!(taken.status, 409, "{}", taken.text());
    assert_eq!(taken.json()["message"], "Name taken");
    drop(zed);
    // Once Zed's connection is gone, the name is free again.
    let deadline = tokio::time::Instant::now() + RECV_TIMEOUT;
    loop {
        let response = server.auth_as("n:other", None, Some("zed")).await;
        if response.status == 200 {
            break;
        }
        assert_eq!(response.status, 409);
        assert!(tokio::time::Instant::now() < deadline, "the name was never released");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_members_messages_and_presence_say_who_they_are_from_the_server() {
    let server = server().await;
    server.register("alice", "correct-horse", "Alice").await;
    let session = server.login("alice", "correct-horse").await;
    let mut alice = server.client(CHAT).await;
    let id = alice.id().to_owned();
    let token = server.auth_as(&id, Some(&session), None).await.text();
    alice.authenticate(&token).await;
    let reply = alice
        .request(json!({"type": "subscribe", "room": "observable-room", "history_count": 10}))
        .await;
    assert_eq!(reply.get("error"), None);
    let members = alice.recv().await;
    assert_eq!(members["data"][0]["authData"]["user"], "alice");
    // The body claims to be someone else; the frame says who really sent it.
    alice
        .publish(
            "observable-room",
            json!({"text": "hi", "name": "Mallory", "user": "mallory"}),
        )
        .await;
    let delivered = alice.recv().await;
    assert_eq!(
        (delivered["user"].as_str(), delivered["client_id"].as_str()),
        (Some("alice"), Some(id.as_str()))
    );

    let mut guest = server.chat_user("Visitor").await;
    guest
        .request(json!({"type": "subscribe", "room": "observable-room", "history_count": 10}))
        .await;
    guest.recv().await; // members
    let history = guest.recv().await;
    assert_eq!(
        (history["type"].as_str(), history["user"].as_str()),
        (Some("history_message"), Some("alice"))
    );
    guest.publish("observable-room", json!({"text": "guest here"})).await;
    let from_guest = guest.recv().await;
    assert_eq!(from_guest["message"]["text"], "guest here");
    assert_eq!(from_guest.get("user"), None, "guests have no user: {from_guest}");
}
