//! Group rooms (PROTOCOL.md §11.1): the `/api/{c}/groups` endpoints and their
//! statuses, limits, `{group}` rules in tokens, the server's membership check,
//! live add on the same socket, live removal, and persistence across restarts
//! (with the child-process harness of `durability.rs`).

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::durability::Node;
use crate::util::*;

const PASSWORD: &str = "correct horse";
const ROOM: &str = "observable-group-team";

async fn server_with(groups: &str) -> TestServer {
    let extra = format!("{CHEAP_HASHING}\n[groups]\n{groups}\n");
    TestServer::start_with(&extra, "policy = \"chat\"\n").await
}

/// Registers and logs in each user; returns their session cookies in order.
async fn members(server: &TestServer, names: &[&str]) -> Vec<String> {
    let mut sessions = Vec::new();
    for name in names {
        server.register(name, PASSWORD, name).await;
        sessions.push(server.login(name, PASSWORD).await);
    }
    sessions
}

/// How a test request authenticates.
#[derive(Clone, Copy)]
enum As<'a> {
    Session(&'a str),
    Operator,
    Nobody,
    Header(&'a str),
}

async fn call(server: &TestServer, method: &str, path: &str, who: As<'_>, body: Option<Value>) -> HttpResponse {
    let cookie;
    let basic;
    let mut headers = vec![("content-type", "application/json")];
    match who {
        As::Session(session) => {
            cookie = format!("rookery_session={session}");
            headers.push(("cookie", &cookie));
        }
        As::Operator => {
            basic = basic_auth(CHAT, CHAT_SECRET);
            headers.push(("authorization", &basic));
        }
        As::Header(value) => headers.push(("authorization", value)),
        As::Nobody => {}
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    server.http(method, &format!("/api/{CHAT}{path}"), &headers, body).await
}

async fn create(server: &TestServer, who: As<'_>, body: Value) -> HttpResponse {
    call(server, "POST", "/groups", who, Some(body)).await
}

async fn add(server: &TestServer, who: As<'_>, group: &str, user: &str) -> HttpResponse {
    let path = format!("/groups/{group}/members");
    call(server, "POST", &path, who, Some(json!({ "user": user }))).await
}

async fn remove(server: &TestServer, who: As<'_>, group: &str, user: &str) -> HttpResponse {
    call(server, "DELETE", &format!("/groups/{group}/members/{user}"), who, None).await
}

async fn list(server: &TestServer, who: As<'_>) -> Value {
    let response = call(server, "GET", "/groups", who, None).await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.json()
}

/// The status and `message` of an error answer.
fn refusal(response: &HttpResponse) -> (u16, Value) {
    (response.status, response.json()["message"].clone())
}

/// A fresh token for `client` from `POST /auth` with the member's session.
async fn token(server: &TestServer, client: &Client, session: &str) -> String {
    let response = server.auth_as(client.id(), Some(session), None).await;
    assert_eq!(response.status, 200, "{}", response.text());
    response.text()
}

/// A connection of the member, handshaken on `chat` and authenticated.
async fn online(server: &TestServer, session: &str) -> Client {
    let mut client = server.client(CHAT).await;
    let token = token(server, &client, session).await;
    client.authenticate(&token).await;
    client
}

/// Subscribes to a group room and reads the member list after the reply.
async fn enter(client: &mut Client, room: &str) -> Value {
    let reply = client.subscribe(room).await;
    assert_eq!(reply.get("error"), None, "subscribe to {room} refused: {reply}");
    let members = client.recv().await;
    assert_eq!(members["type"], "observable_members", "{members}");
    members
}

#[tokio::test]
async fn create_answers_201_with_the_group_and_names_bad_fields() {
    let server = server_with("").await;
    let [alice, bob] = <[String; 2]>::try_from(members(&server, &["alice", "bob"]).await).unwrap();
    let body = json!({"id": "team", "title": " The Team ", "members": ["Bob"]});
    let response = create(&server, As::Session(&alice), body).await;
    assert_eq!(response.status, 201, "{}", response.text());
    assert_eq!(
        response.json(),
        json!({"id": "team", "title": "The Team", "creator": "alice", "members": ["alice", "bob"]}),
        "the creator is a member, names are lowered, the title trimmed"
    );

    let taken = create(&server, As::Session(&bob), json!({"id": "team", "title": "Again"})).await;
    assert_eq!(refusal(&taken), (409, json!("Group id taken")));

    let long_title = "t".repeat(65);
    let cases = [
        (json!({"title": "T"}), 422, "Missing id"),
        (
            json!({"id": "Team", "title": "T"}),
            422,
            "Invalid id: use 1 to 32 characters of a-z, 0-9 and _",
        ),
        (
            json!({"id": "a-b", "title": "T"}),
            422,
            "Invalid id: use 1 to 32 characters of a-z, 0-9 and _",
        ),
        (
            json!({"id": 7, "title": "T"}),
            422,
            "Invalid id: use 1 to 32 characters of a-z, 0-9 and _",
        ),
        (json!({"id": "x", "title": "  "}), 422, "Missing title"),
        (
            json!({"id": "x", "title": long_title}),
            422,
            "Invalid title: use 1 to 64 characters, no control or invisible characters",
        ),
        (
            json!({"id": "x", "title": "a\u{202E}b"}),
            422,
            "Invalid title: use 1 to 64 characters, no control or invisible characters",
        ),
        (
            json!({"id": "x", "title": "T", "members": "bob"}),
            422,
            "Invalid members: give a list of usernames",
        ),
        (
            json!({"id": "x", "title": "T", "members": ["b"]}),
            422,
            "Invalid members: give a list of usernames",
        ),
        (
            json!({"id": "x", "title": "T", "members": ["zed"]}),
            404,
            "Unknown user zed",
        ),
    ];
    for (body, status, message) in cases {
        let response = create(&server, As::Session(&alice), body.clone()).await;
        assert_eq!(refusal(&response), (status, json!(message)), "{body}");
    }
    let response = call(&server, "POST", "/groups", As::Session(&alice), None).await;
    assert_eq!(refusal(&response), (400, json!("Body must be a JSON object")));
    // Nothing of the refused requests was created.
    let all = list(&server, As::Operator).await;
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");

    // The operator creates groups that have no creator.
    let ops = create(
        &server,
        As::Operator,
        json!({"id": "ops", "title": "Ops", "members": ["bob"]}),
    )
    .await;
    assert_eq!(ops.status, 201, "{}", ops.text());
    assert_eq!(ops.json()["members"], json!(["bob"]));
}

#[tokio::test]
async fn requests_without_a_session_or_basic_are_refused() {
    let server = server_with("").await;
    let [alice] = <[String; 1]>::try_from(members(&server, &["alice"]).await).unwrap();
    assert_eq!(
        create(&server, As::Session(&alice), json!({"id": "team", "title": "T"}))
            .await
            .status,
        201
    );

    for (method, path, body) in [
        ("GET", "/groups", None),
        ("POST", "/groups", Some(json!({"id": "x", "title": "T"}))),
        ("POST", "/groups/team/members", Some(json!({"user": "alice"}))),
        ("DELETE", "/groups/team/members/alice", None),
    ] {
        let nobody = call(&server, method, path, As::Nobody, body.clone()).await;
        assert_eq!(refusal(&nobody), (401, json!("Not logged in")), "{method} {path}");
        let stale = call(&server, method, path, As::Session("not-a-session"), body.clone()).await;
        assert_eq!(refusal(&stale), (401, json!("Not logged in")), "{method} {path}");
        let wrong = basic_auth(CHAT, "wrong");
        let response = call(&server, method, path, As::Header(&wrong), body.clone()).await;
        assert_eq!(
            refusal(&response),
            (401, json!("Invalid credentials")),
            "{method} {path}"
        );
        let bearer = format!(
            "Bearer {}",
            chat_token(None, json!({".*": {"publish": true}}), now() + 60, None)
        );
        let response = call(&server, method, path, As::Header(&bearer), body).await;
        assert_eq!(
            refusal(&response),
            (403, json!("Bearer tokens may only publish")),
            "{method} {path}"
        );
    }

    // A logged-out session is no session.
    let logout = server.post_form("/logout", &[], Some(&alice)).await;
    assert_eq!(logout.status, 204);
    assert_eq!(
        call(&server, "GET", "/groups", As::Session(&alice), None).await.status,
        401
    );

    // Wrong methods name the right ones; other paths are not found.
    let response = call(&server, "PUT", "/groups", As::Operator, None).await;
    assert_eq!(response.status, 405);
    assert_eq!(response.headers["allow"], "GET, POST");
    let response = call(&server, "GET", "/groups/team/members/alice", As::Operator, None).await;
    assert_eq!(
        (response.status, &response.headers["allow"]),
        (405, &"DELETE".parse().unwrap())
    );
    assert_eq!(
        call(&server, "GET", "/groups/team/x", As::Operator, None).await.status,
        404
    );
    // A room called `groups` keeps its own REST routes.
    let response = call(&server, "GET", "/groups/history", As::Operator, None).await;
    assert_eq!((response.status, response.json()), (200, json!([])));
}

#[tokio::test]
async fn members_add_the_creator_removes_and_everyone_may_leave() {
    let server = server_with("").await;
    let sessions = members(&server, &["alice", "bob", "carol", "dave"]).await;
    let [alice, bob, carol, dave] = <[String; 4]>::try_from(sessions).unwrap();
    let body = json!({"id": "team", "title": "Team", "members": ["bob"]});
    assert_eq!(create(&server, As::Session(&alice), body).await.status, 201);
    let body = json!({"id": "ops", "title": "Ops", "members": []});
    assert_eq!(create(&server, As::Session(&dave), body).await.status, 201);

    // GET: each member sees their own groups; the operator sees all.
    let team = json!({"id": "team", "title": "Team", "creator": "alice", "members": ["alice", "bob"]});
    assert_eq!(list(&server, As::Session(&bob)).await, json!([team]));
    assert_eq!(list(&server, As::Session(&carol)).await, json!([]));
    let all: Vec<Value> = list(&server, As::Operator).await.as_array().unwrap().clone();
    let ids: Vec<&Value> = all.iter().map(|g| &g["id"]).collect();
    assert_eq!(ids, [&json!("ops"), &json!("team")]);

    // Adding: a member may; a non-member may not; unknown group or user are 404.
    assert_eq!(
        refusal(&add(&server, As::Session(&carol), "team", "carol").await),
        (403, json!("Not a member of this group"))
    );
    assert_eq!(
        refusal(&add(&server, As::Session(&bob), "nope", "carol").await),
        (404, json!("Unknown group"))
    );
    assert_eq!(
        refusal(&add(&server, As::Session(&bob), "team", "zed").await),
        (404, json!("Unknown user zed"))
    );
    assert_eq!(
        refusal(&add(&server, As::Session(&bob), "team", "").await),
        (422, json!("Missing user"))
    );
    assert_eq!(
        refusal(&add(&server, As::Session(&bob), "team", "no such").await),
        (422, json!("Invalid user: use 3 to 32 characters of a-z, 0-9 and _"))
    );
    let response = add(&server, As::Session(&bob), "team", "Carol").await;
    assert_eq!(response.status, 204, "{}", response.text());
    assert!(response.body.is_empty());
    // Adding a member again changes nothing.
    assert_eq!(add(&server, As::Session(&bob), "team", "carol").await.status, 204);
    assert_eq!(add(&server, As::Operator, "team", "dave").await.status, 204);
    let members = &list(&server, As::Session(&alice)).await[0]["members"];
    assert_eq!(members, &json!(["alice", "bob", "carol", "dave"]));

    // Removing: only the creator (or the operator) removes others; anyone leaves.
    assert_eq!(
        refusal(&remove(&server, As::Session(&bob), "team", "carol").await),
        (403, json!("Only the group's creator may remove other members"))
    );
    let outsider = remove(&server, As::Session(&carol), "ops", "dave").await;
    assert_eq!(refusal(&outsider), (403, json!("Not a member of this group")));
    assert_eq!(
        refusal(&remove(&server, As::Session(&alice), "nope", "bob").await),
        (404, json!("Unknown group"))
    );
    assert_eq!(remove(&server, As::Session(&bob), "team", "bob").await.status, 204);
    assert_eq!(remove(&server, As::Session(&alice), "team", "carol").await.status, 204);
    assert_eq!(
        refusal(&remove(&server, As::Session(&alice), "team", "carol").await),
        (404, json!("carol is not a member"))
    );
    assert_eq!(remove(&server, As::Operator, "team", "dave").await.status, 204);
    assert_eq!(list(&server, As::Session(&alice)).await[0]["members"], json!(["alice"]));
    assert_eq!(list(&server, As::Session(&bob)).await, json!([]));
    // Groups are per channel: the open channel has none of them.
    let basic = basic_auth(OPEN, OPEN_SECRET);
    let response = server
        .http("GET", &format!("/api/{OPEN}/groups"), &[("authorization", &basic)], "")
        .await;
    assert_eq!((response.status, response.json()), (200, json!([])));
}

#[tokio::test]
async fn limits_answer_422_with_what_was_exceeded() {
    let server = server_with("max_groups_per_user = 2\nmax_members_per_group = 3\nmax_title_chars = 5\n").await;
    let sessions = members(&server, &["alice", "bob", "carol", "dave"]).await;
    let [alice, bob, ..] = <[String; 4]>::try_from(sessions).unwrap();
    let title = create(&server, As::Session(&alice), json!({"id": "g", "title": "sixsix"})).await;
    assert_eq!(
        refusal(&title),
        (
            422,
            json!("Invalid title: use 1 to 5 characters, no control or invisible characters")
        )
    );
    let big = json!({"id": "g", "title": "Big", "members": ["bob", "carol", "dave"]});
    assert_eq!(
        refusal(&create(&server, As::Session(&alice), big).await),
        (422, json!("Too many members: a group has at most 3"))
    );
    let full = json!({"id": "g1", "title": "One", "members": ["bob", "carol"]});
    assert_eq!(create(&server, As::Session(&alice), full).await.status, 201);
    assert_eq!(
        refusal(&add(&server, As::Session(&alice), "g1", "dave").await),
        (422, json!("Too many members: a group has at most 3"))
    );
    assert_eq!(
        create(&server, As::Session(&alice), json!({"id": "g2", "title": "Two"}))
            .await
            .status,
        201
    );
    let third = create(&server, As::Session(&alice), json!({"id": "g3", "title": "Three"})).await;
    assert_eq!(refusal(&third), (422, json!("Too many groups: alice is already in 2")));
    assert_eq!(
        create(&server, As::Session(&bob), json!({"id": "g3", "title": "Three"}))
            .await
            .status,
        201
    );
    assert_eq!(
        refusal(&add(&server, As::Session(&bob), "g3", "alice").await),
        (422, json!("Too many groups: alice is already in 2"))
    );
    // Leaving makes room again.
    assert_eq!(remove(&server, As::Session(&alice), "g2", "alice").await.status, 204);
    assert_eq!(add(&server, As::Session(&bob), "g3", "alice").await.status, 204);
}

#[tokio::test]
async fn tokens_carry_one_rule_per_group_and_non_members_are_unauthorized_whatever_their_token() {
    let server = server_with("").await;
    let [alice, bob] = <[String; 2]>::try_from(members(&server, &["alice", "bob"]).await).unwrap();
    for id in ["team", "ops"] {
        let response = create(&server, As::Session(&alice), json!({"id": id, "title": id})).await;
        assert_eq!(response.status, 201);
    }
    let claims = jwt_claims(&server.auth_as("r3k:x", Some(&alice), None).await.text());
    let keys: Vec<&String> = claims["permissions"].as_object().unwrap().keys().collect();
    let group_keys: Vec<&&String> = keys.iter().filter(|k| k.contains("observable-group")).collect();
    assert_eq!(group_keys, [&"^observable-group-ops$", &"^observable-group-team$"]);
    assert_eq!(
        claims["permissions"]["^observable-group-team$"],
        json!({"publish": true, "subscribe": true, "history": 100})
    );
    // Bob is in no group, a guest in none either.
    let claims = jwt_claims(&server.auth_as("r3k:y", Some(&bob), None).await.text());
    assert!(
        !claims["permissions"].to_string().contains("observable-group"),
        "{claims}"
    );
    let claims = jwt_claims(&server.auth_as("r3k:z", None, Some("Guest")).await.text());
    assert!(
        !claims["permissions"].to_string().contains("observable-group"),
        "{claims}"
    );

    // Bob's own token does not open the room; nor does a token that names it,
    // signed with the channel's secret: the server checks membership.
    let mut bob_online = online(&server, &bob).await;
    assert_eq!(bob_online.subscribe(ROOM).await["error"], "Unauthorized");
    let mut forged = server.client(CHAT).await;
    let permissions = json!({ "^observable-group-team$": {"publish": true, "subscribe": true, "history": 100} });
    let data = json!({"user": "bob", "name": "bob"});
    forged
        .authenticate(&chat_token(
            Some(forged.id()),
            permissions.clone(),
            now() + 60,
            Some(data),
        ))
        .await;
    assert_eq!(forged.subscribe(ROOM).await["error"], "Unauthorized");
    let reply = forged
        .request(json!({"type": "publish", "room": ROOM, "message": "let me in"}))
        .await;
    assert_eq!(reply["error"], "Unauthorized");
    // Without `data.user` there is nobody to be a member.
    let mut anonymous = server.client(CHAT).await;
    anonymous
        .authenticate(&chat_token(Some(anonymous.id()), permissions, now() + 60, None))
        .await;
    assert_eq!(anonymous.subscribe(ROOM).await["error"], "Unauthorized");
    // On a channel without auth the group names are reserved as well.
    let mut open = server.client(OPEN).await;
    assert_eq!(open.subscribe(ROOM).await["error"], "Unauthorized");

    // A member enters, with presence, and hears the others.
    let mut alice_online = online(&server, &alice).await;
    let members = enter(&mut alice_online, ROOM).await;
    assert_eq!(members["data"][0]["authData"]["user"], "alice");
    alice_online.publish(ROOM, json!("hello team")).await;
    let heard = alice_online.recv().await;
    assert_eq!(
        (&heard["message"], &heard["user"]),
        (&json!("hello team"), &json!("alice"))
    );
    // Nobody else heard it.
    forged.expect_silence(Duration::from_millis(100)).await;
}

#[tokio::test]
async fn a_member_added_while_online_gets_access_on_the_same_socket() {
    let server = server_with("").await;
    let [alice, carol] = <[String; 2]>::try_from(members(&server, &["alice", "carol"]).await).unwrap();
    assert_eq!(
        create(&server, As::Session(&alice), json!({"id": "team", "title": "Team"}))
            .await
            .status,
        201
    );
    let mut alice_online = online(&server, &alice).await;
    enter(&mut alice_online, ROOM).await;

    let mut carol_online = online(&server, &carol).await;
    let reply = carol_online.subscribe("inbox-carol").await;
    assert_eq!(reply.get("error"), None, "{reply}");
    assert_eq!(carol_online.subscribe(ROOM).await["error"], "Unauthorized");

    assert_eq!(add(&server, As::Session(&alice), "team", "carol").await.status, 204);
    // The server tells Carol's connections through her inbox.
    let notice = carol_online.recv().await;
    assert_eq!(notice["type"], "publish", "{notice}");
    assert_eq!(notice["room"], "inbox-carol");
    assert_eq!(
        notice["message"],
        json!({"type": "group_added", "group": "team", "title": "Team"})
    );
    assert_eq!(
        (notice.get("client_id"), notice.get("user")),
        (None, None),
        "a server message"
    );

    // A fresh token, the same socket: the room opens.
    let client_id = carol_online.id().to_owned();
    let fresh = token(&server, &carol_online, &carol).await;
    carol_online.authenticate(&fresh).await;
    let members = enter(&mut carol_online, ROOM).await;
    assert_eq!(members["data"].as_array().unwrap().len(), 2);
    assert_eq!(carol_online.id(), client_id, "no reconnect");
    let joined = alice_online.recv().await;
    assert_eq!(
        (&joined["type"], &joined["data"]["id"]),
        (&json!("observable_member_join"), &json!(client_id))
    );
    carol_online.publish(ROOM, json!("hi all")).await;
    let heard = alice_online.recv().await;
    assert_eq!((&heard["message"], &heard["user"]), (&json!("hi all"), &json!("carol")));
}

#[tokio::test]
async fn a_removed_member_loses_the_room_at_once_and_a_stale_token_cannot_reenter() {
    let server = server_with("").await;
    let [alice, bob] = <[String; 2]>::try_from(members(&server, &["alice", "bob"]).await).unwrap();
    let body = json!({"id": "team", "title": "Team", "members": ["bob"]});
    assert_eq!(create(&server, As::Session(&alice), body).await.status, 201);
    let mut alice_online = online(&server, &alice).await;
    enter(&mut alice_online, ROOM).await;
    // Bob has two tabs; one also listens to his inbox.
    let mut tabs = Vec::new();
    let mut stale_tokens = Vec::new();
    for _ in 0..2 {
        let mut tab = server.client(CHAT).await;
        let stale = token(&server, &tab, &bob).await;
        tab.authenticate(&stale).await;
        enter(&mut tab, ROOM).await;
        assert_eq!(alice_online.recv().await["type"], "observable_member_join");
        stale_tokens.push(stale);
        tabs.push(tab);
    }
    let joined = tabs[0].recv().await;
    assert_eq!(
        (&joined["type"], &joined["data"]["id"]),
        (&json!("observable_member_join"), &json!(tabs[1].id()))
    );
    let subscribe = json!({"type": "subscribe", "room": "inbox-bob", "history_count": 10});
    let reply = tabs[0].request(subscribe).await;
    assert_eq!(reply.get("error"), None, "{reply}");
    // The inbox history holds the `group_added` of the creation.
    let history = tabs[0].recv().await;
    assert_eq!(history["message"]["type"], "group_added", "{history}");
    // A message from the other tab, so that each tab's stream is at a known point.
    tabs[1].publish(ROOM, json!("before")).await;
    assert_eq!(alice_online.recv().await["message"], "before");
    for tab in &mut tabs {
        assert_eq!(tab.recv().await["message"], "before");
    }

    assert_eq!(remove(&server, As::Session(&alice), "team", "bob").await.status, 204);
    for tab in &mut tabs {
        let lost = tokio::time::timeout(Duration::from_secs(1), tab.recv())
            .await
            .expect("the room is taken within a second");
        assert_eq!(lost, json!({"error": "Unauthorized", "room": ROOM}));
    }
    let notice = tabs[0].recv().await;
    assert_eq!(notice["room"], "inbox-bob");
    assert_eq!(notice["message"], json!({"type": "group_removed", "group": "team"}));
    let mut left = Vec::new();
    for _ in 0..2 {
        let leave = alice_online.recv().await;
        assert_eq!(leave["type"], "observable_member_leave", "{leave}");
        assert_eq!(leave["data"]["authData"]["user"], "bob");
        left.push(leave["data"]["id"].as_str().unwrap().to_owned());
    }
    left.sort();
    let mut ids: Vec<String> = tabs.iter().map(|t| t.id().to_owned()).collect();
    ids.sort();
    assert_eq!(left, ids);
    let basic = basic_auth(CHAT, CHAT_SECRET);
    let response = server
        .http(
            "GET",
            &format!("/api/{CHAT}/{ROOM}/members"),
            &[("authorization", &basic)],
            "",
        )
        .await;
    assert_eq!(response.json(), json!([alice_online.id()]));

    // Alice's messages no longer reach Bob.
    alice_online.publish(ROOM, json!("after")).await;
    assert_eq!(alice_online.recv().await["message"], "after");
    // The token minted before the removal still names the room, yet it does not open it.
    let tab = &mut tabs[1];
    assert!(
        jwt_claims(&stale_tokens[1])["permissions"]
            .get("^observable-group-team$")
            .is_some()
    );
    let reply = tab.try_authenticate(&stale_tokens[1]).await;
    assert_eq!(reply.get("error"), None, "the token itself is valid: {reply}");
    assert_eq!(tab.subscribe(ROOM).await["error"], "Unauthorized");
    let reply = tab
        .request(json!({"type": "publish", "room": ROOM, "message": "still here?"}))
        .await;
    assert_eq!(reply["error"], "Unauthorized");
    // A fresh token has no rule for the room any more.
    let fresh = token(&server, tab, &bob).await;
    assert!(
        jwt_claims(&fresh)["permissions"]
            .get("^observable-group-team$")
            .is_none()
    );
    alice_online.expect_silence(Duration::from_millis(100)).await;

    // Leaving yourself works the same way, and re-adding opens the room again.
    assert_eq!(add(&server, As::Session(&alice), "team", "bob").await.status, 204);
    let tab = &mut tabs[1];
    let fresh = token(&server, tab, &bob).await;
    tab.authenticate(&fresh).await;
    enter(tab, ROOM).await;
    assert_eq!(alice_online.recv().await["type"], "observable_member_join");
    assert_eq!(remove(&server, As::Session(&bob), "team", "bob").await.status, 204);
    assert_eq!(tabs[1].recv().await, json!({"error": "Unauthorized", "room": ROOM}));
    assert_eq!(alice_online.recv().await["type"], "observable_member_leave");
    // Unsubscribing from the lost room is harmless and the socket stays usable.
    let reply = tabs[1].request(json!({"type": "unsubscribe", "room": ROOM})).await;
    assert_eq!(reply.get("error"), None);
    let reply = tabs[1].subscribe("observable-room").await;
    assert_eq!(reply.get("error"), None, "{reply}");
}

fn json_as(cookie: &str) -> Vec<(&'static str, &str)> {
    vec![("content-type", "application/json"), ("cookie", cookie)]
}

#[tokio::test]
async fn groups_and_memberships_survive_a_restart() {
    let dir = TempDir::new();
    let extra = "[accounts]\nargon2_memory_kib = 8\nargon2_iterations = 1\n";
    let node = Node::start(&dir.0, extra).await;
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let mut sessions = Vec::new();
    for name in ["alice", "bob"] {
        let body = format!("username={name}&password=correct-horse");
        let response = http_request(node.addr, "POST", "/register", &form, Bytes::from(body.clone())).await;
        assert_eq!(response.status, 201, "{}", response.text());
        let response = http_request(node.addr, "POST", "/login", &form, Bytes::from(body)).await;
        let cookie = response.headers["set-cookie"].to_str().unwrap();
        sessions.push(cookie.split(';').next().unwrap().to_owned());
    }
    let request = |method: &'static str, path: &'static str, cookie: String, body: Value| {
        let addr = node.addr;
        async move {
            let headers: Vec<(&str, &str)> = json_as(&cookie);
            http_request(
                addr,
                method,
                &format!("/api/{CHAT}{path}"),
                &headers,
                Bytes::from(body.to_string()),
            )
            .await
        }
    };
    let body = json!({"id": "team", "title": "Team", "members": ["bob"]});
    assert_eq!(request("POST", "/groups", sessions[0].clone(), body).await.status, 201);
    let body = json!({"id": "ops", "title": "Ops", "members": ["bob"]});
    assert_eq!(request("POST", "/groups", sessions[0].clone(), body).await.status, 201);
    let removed = request("DELETE", "/groups/ops/members/bob", sessions[0].clone(), Value::Null).await;
    assert_eq!(removed.status, 204);
    node.kill9().await;

    let node = Node::start(&dir.0, extra).await;
    let basic = basic_auth(CHAT, CHAT_SECRET);
    let all = http_request(
        node.addr,
        "GET",
        &format!("/api/{CHAT}/groups"),
        &[("authorization", &basic)],
        Bytes::new(),
    )
    .await;
    assert_eq!(
        all.json(),
        json!([
            {"id": "ops", "title": "Ops", "creator": "alice", "members": ["alice"]},
            {"id": "team", "title": "Team", "creator": "alice", "members": ["alice", "bob"]},
        ])
    );
    let headers = [("cookie", sessions[1].as_str())];
    let bobs = http_request(node.addr, "GET", &format!("/api/{CHAT}/groups"), &headers, Bytes::new()).await;
    assert_eq!(
        bobs.json(),
        json!([{"id": "team", "title": "Team", "creator": "alice", "members": ["alice", "bob"]}])
    );
    // The id stays taken, and the creator can still manage the group.
    let again = http_request(
        node.addr,
        "POST",
        &format!("/api/{CHAT}/groups"),
        &json_as(&sessions[1]),
        Bytes::from(json!({"id": "team", "title": "Again"}).to_string()),
    )
    .await;
    assert_eq!(again.status, 409);
    let removed = http_request(
        node.addr,
        "DELETE",
        &format!("/api/{CHAT}/groups/team/members/bob"),
        &[("cookie", sessions[0].as_str())],
        Bytes::new(),
    )
    .await;
    assert_eq!(removed.status, 204);
    node.stop().await;
}
