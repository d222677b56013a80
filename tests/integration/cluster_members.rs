//! Accounts, sessions and groups shared by the nodes of a deployment through
//! Redis (issue 11, PROTOCOL.md §11, §11.1, §13): a user registered on one
//! node logs in on another, a session cookie works on every node and dies on
//! every node at logout, groups and their membership checks are the same
//! everywhere, the `rookery user` commands manage the deployment's accounts,
//! and a Redis outage answers `503 Service unavailable` instead of hanging.

use std::time::Duration;

use serde_json::{Value, json};

use crate::cluster_util::{Node, Redis};
use crate::util::{
    CHAT, CHAT_SECRET, CHEAP_HASHING, Client, HttpResponse, RECV_TIMEOUT, TempDir, basic_auth, jwt_claims,
    session_cookie_value,
};

const PASSWORD: &str = "correct horse";
const ROOM: &str = "observable-group-team";

/// A node with open registration, cheap password hashing and the chat policy
/// (which has the `{group}` rules).
async fn node(redis: &Redis) -> Node {
    let extra = format!("registration = \"open\"\n{CHEAP_HASHING}");
    Node::start_configured(redis, &extra, "policy = \"chat\"\n").await
}

fn form(fields: &[(&str, &str)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (key, value) in fields {
        form.append_pair(key, value);
    }
    form.finish()
}

/// `POST path` with an urlencoded form and the session cookie when given.
async fn post_form(node: &Node, path: &str, fields: &[(&str, &str)], session: Option<&str>) -> HttpResponse {
    let cookie = session.map(|s| format!("rookery_session={s}"));
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    if let Some(cookie) = &cookie {
        headers.push(("cookie", cookie));
    }
    node.http("POST", path, &headers, &form(fields)).await
}

async fn register(node: &Node, username: &str) -> HttpResponse {
    post_form(
        node,
        "/register",
        &[("username", username), ("password", PASSWORD)],
        None,
    )
    .await
}

async fn login(node: &Node, username: &str) -> HttpResponse {
    post_form(node, "/login", &[("username", username), ("password", PASSWORD)], None).await
}

/// Logs in on `node` and returns the session cookie's value; asserts 200.
async fn session(node: &Node, username: &str) -> String {
    let response = login(node, username).await;
    assert_eq!(response.status, 200, "{}", response.text());
    session_cookie_value(&response).expect("a session cookie")
}

async fn me(node: &Node, session: &str) -> HttpResponse {
    let cookie = format!("rookery_session={session}");
    node.http("GET", "/me", &[("cookie", &cookie)], "").await
}

async fn auth(node: &Node, client_id: &str, session: &str) -> HttpResponse {
    post_form(node, "/auth", &[("clientID", client_id)], Some(session)).await
}

/// A REST call on the chat channel's groups API, as a member or the operator.
async fn groups_call(
    node: &Node,
    method: &str,
    path: &str,
    session: Option<&str>,
    body: Option<Value>,
) -> HttpResponse {
    let cookie;
    let basic;
    let mut headers = vec![("content-type", "application/json")];
    match session {
        Some(session) => {
            cookie = format!("rookery_session={session}");
            headers.push(("cookie", &cookie));
        }
        None => {
            basic = basic_auth(CHAT, CHAT_SECRET);
            headers.push(("authorization", &basic));
        }
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    node.http(method, &format!("/api/{CHAT}{path}"), &headers, &body).await
}

/// A `chat` connection on `node`, authenticated with a token minted there for `session`.
async fn member_online(node: &Node, session: &str) -> (Client, String) {
    let mut client = Client::connect(&format!("ws://{}/v3/websocket", node.addr)).await;
    client.handshake(CHAT).await;
    let response = auth(node, client.id(), session).await;
    assert_eq!(response.status, 200, "{}", response.text());
    let token = response.text();
    client.authenticate(&token).await;
    (client, token)
}

#[tokio::test]
async fn a_member_registered_on_one_node_logs_in_on_another_and_logs_out_everywhere() {
    let redis = Redis::start().await;
    let (a, b) = tokio::join!(node(&redis), node(&redis));
    let registered = register(&a, "alice").await;
    assert_eq!(registered.status, 201, "{}", registered.text());
    assert_eq!(
        register(&b, "Alice").await.status,
        409,
        "the username is taken on B too"
    );

    let cookie = session(&b, "alice").await;
    // B's cookie on A: a member's token, and /me.
    let response = auth(&a, "c1", &cookie).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(jwt_claims(&response.text())["data"]["user"], "alice");
    let who = me(&a, &cookie).await;
    assert_eq!(who.status, 200, "{}", who.text());
    assert_eq!(who.json()["user"], "alice");

    // Logout on A ends the session on B.
    let cookie_header = format!("rookery_session={cookie}");
    let out = a.http("POST", "/logout", &[("cookie", &cookie_header)], "").await;
    assert_eq!(out.status, 204, "{}", out.text());
    let refused = me(&b, &cookie).await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert_eq!(refused.json()["message"], "Not logged in");
    let guest = auth(&b, "c2", &cookie).await;
    assert_eq!(guest.status, 200, "{}", guest.text());
    assert_eq!(
        jwt_claims(&guest.text())["data"].get("user"),
        None,
        "no member any more"
    );
}

/// Two nodes; alice and bob registered (on A) and logged in (alice on A, bob
/// on B); alice has created group `team` with `members` on A. Returns the
/// nodes and the two session cookies.
async fn team_on_two_nodes(redis: &Redis, members: Value) -> (Node, Node, String, String) {
    let (a, b) = tokio::join!(node(redis), node(redis));
    for user in ["alice", "bob"] {
        assert_eq!(register(&a, user).await.status, 201);
    }
    let alice = session(&a, "alice").await;
    let bob = session(&b, "bob").await;
    let body = json!({"id": "team", "title": "Team", "members": members});
    let created = groups_call(&a, "POST", "/groups", Some(&alice), Some(body)).await;
    assert_eq!(created.status, 201, "{}", created.text());
    (a, b, alice, bob)
}

#[tokio::test]
async fn groups_and_their_membership_checks_are_the_same_on_every_node() {
    let redis = Redis::start().await;
    let (a, b, alice, bob) = team_on_two_nodes(&redis, json!([])).await;
    let added = groups_call(
        &a,
        "POST",
        "/groups/team/members",
        Some(&alice),
        Some(json!({"user": "bob"})),
    )
    .await;
    assert_eq!(added.status, 204, "{}", added.text());

    // Listed on B, for the member and the operator.
    let listed = groups_call(&b, "GET", "/groups", Some(&bob), None).await;
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.json()[0]["id"], "team", "{}", listed.text());
    assert_eq!(listed.json()[0]["members"], json!(["alice", "bob"]));
    let all = groups_call(&b, "GET", "/groups", None, None).await;
    assert_eq!(all.json().as_array().map(Vec::len), Some(1), "{}", all.text());

    // Bob's tokens from B name the room, and B's membership check lets him in.
    let (mut first, token) = member_online(&b, &bob).await;
    assert!(names_room(&token), "{}", jwt_claims(&token));
    let reply = first.subscribe(ROOM).await;
    assert_eq!(reply.get("error"), None, "{reply}");
    let (mut second, token) = member_online(&b, &bob).await;
    assert!(names_room(&token));

    // Removed on A: B refuses his next subscribe, although that connection's
    // token (minted before) still names the room.
    let removed = groups_call(&a, "DELETE", "/groups/team/members/bob", Some(&alice), None).await;
    assert_eq!(removed.status, 204, "{}", removed.text());
    let refused = second.subscribe(ROOM).await;
    assert_eq!(refused["error"], "Unauthorized", "{refused}");
    let fresh = auth(&b, "c3", &bob).await;
    assert!(
        !names_room(&fresh.text()),
        "a token minted after the removal does not name the room"
    );
    let listed = groups_call(&b, "GET", "/groups", Some(&bob), None).await;
    assert_eq!(listed.json(), json!([]), "{}", listed.text());
}

#[tokio::test]
async fn a_removal_on_one_node_evicts_the_member_on_every_node_with_one_leave() {
    let redis = Redis::start().await;
    let (a, b, alice, bob) = team_on_two_nodes(&redis, json!(["bob"])).await;

    // Alice in the room on A, Bob on B: she sees him join.
    let (mut on_a, _) = member_online(&a, &alice).await;
    let reply = on_a.subscribe(ROOM).await;
    assert_eq!(reply.get("error"), None, "{reply}");
    assert_eq!(on_a.recv().await["type"], "observable_members");
    let (mut on_b, _) = member_online(&b, &bob).await;
    let reply = on_b.subscribe(ROOM).await;
    assert_eq!(reply.get("error"), None, "{reply}");
    assert_eq!(on_b.recv().await["type"], "observable_members");
    let joined = on_a.recv().await;
    assert_eq!(joined["type"], "observable_member_join", "{joined}");
    assert_eq!(joined["data"]["id"], on_b.id());

    // Removed through A: Bob's connection on B loses the room at once.
    let removed = groups_call(&a, "DELETE", "/groups/team/members/bob", Some(&alice), None).await;
    assert_eq!(removed.status, 204, "{}", removed.text());
    let evicted = on_b.recv().await;
    assert_eq!(evicted, json!({"error": "Unauthorized", "room": ROOM}), "{evicted}");
    // Alice sees one leave: her own next message comes right after it.
    let left = on_a.recv().await;
    assert_eq!(left["type"], "observable_member_leave", "{left}");
    assert_eq!(left["data"]["id"], on_b.id());
    on_a.publish(ROOM, json!("after")).await;
    let next = on_a.recv().await;
    assert_eq!(next["message"], "after", "no second leave, nothing else: {next}");
    // Bob's connection stays open, out of the room: nothing of it reaches him,
    // and his old token no longer opens it.
    let refused = on_b
        .request(json!({"type": "publish", "room": ROOM, "message": "x"}))
        .await;
    assert_eq!(refused["error"], "Unauthorized", "{refused}");
    // The deployment's member list has only Alice left, asked on either node.
    for node in [&a, &b] {
        let members = groups_call(node, "GET", &format!("/{ROOM}/members"), None, None).await;
        assert_eq!(members.json(), json!([on_a.id()]), "{}", members.text());
    }
}

/// Whether a token's permissions have the group room's rule.
fn names_room(token: &str) -> bool {
    jwt_claims(token)["permissions"].get(format!("^{ROOM}$")).is_some()
}

/// Runs `rookery user …` against the deployment's Redis (`ROOKERY_REDIS_URL`),
/// the password from stdin; returns (success, stdout + stderr).
async fn user_command(redis: &Redis, args: &[&str], stdin: &str) -> (bool, String) {
    use tokio::io::AsyncWriteExt;
    let dir = TempDir::new();
    let config = dir.0.join("rookery.toml");
    std::fs::write(
        &config,
        format!("{CHEAP_HASHING}[[channel]]\nid = \"{CHAT}\"\nsecret = \"{CHAT_SECRET}\"\n"),
    )
    .unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_rookery"))
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.0.join("data"))
        .arg("--policies-dir")
        .arg(repo.join("policies"))
        .arg("user")
        .args(args)
        .env("ROOKERY_REDIS_URL", redis.url())
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("rookery runs");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the command ends")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
async fn the_user_commands_manage_the_accounts_of_the_whole_deployment() {
    let redis = Redis::start().await;
    let a = node(&redis).await;
    let (ok, out) = user_command(
        &redis,
        &["add", "carol", "--name", "Carol C."],
        &format!("{PASSWORD}\n"),
    )
    .await;
    assert!(ok, "{out}");
    let response = login(&a, "carol").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.json()["name"], "Carol C.");
    let (ok, out) = user_command(&redis, &["list"], "").await;
    assert!(ok && out.contains("carol\tCarol C."), "{out}");

    // Remove: the account, its sessions and its group memberships go.
    let carol = session_cookie_value(&response).expect("a session cookie");
    let body = json!({"id": "team", "title": "Team", "members": ["carol"]});
    let created = groups_call(&a, "POST", "/groups", None, Some(body)).await;
    assert_eq!(created.status, 201, "{}", created.text());
    let (ok, out) = user_command(&redis, &["remove", "carol"], "").await;
    assert!(ok && out.contains("from 1 group(s)"), "{out}");
    assert_eq!(me(&a, &carol).await.status, 401);
    assert_eq!(login(&a, "carol").await.status, 401);
    let all = groups_call(&a, "GET", "/groups", None, None).await;
    assert_eq!(all.json()[0]["members"], json!([]), "{}", all.text());
    // A new carol starts in no group.
    assert_eq!(register(&a, "carol").await.status, 201);
    let carol = session(&a, "carol").await;
    let mine = groups_call(&a, "GET", "/groups", Some(&carol), None).await;
    assert_eq!(mine.json(), json!([]), "{}", mine.text());
}

/// The request answers `503 {"message":"Service unavailable"}` well within
/// the client's timeout (the store's requests are bounded by 2 s).
async fn unavailable(request: impl std::future::Future<Output = HttpResponse>) {
    let response = tokio::time::timeout(RECV_TIMEOUT, request)
        .await
        .expect("an answer, not a hang");
    assert_eq!(response.status, 503, "{}", response.text());
    assert_eq!(response.json()["message"], "Service unavailable");
}

#[tokio::test]
async fn redis_down_answers_503_and_accounts_work_again_when_it_is_back() {
    let redis = Redis::start().await;
    let a = node(&redis).await;
    assert_eq!(register(&a, "alice").await.status, 201);
    let cookie = session(&a, "alice").await;

    let port = redis.stop().await;
    unavailable(login(&a, "alice")).await;
    unavailable(register(&a, "bob")).await;
    unavailable(auth(&a, "c1", &cookie)).await;
    unavailable(me(&a, &cookie)).await;
    let cookie_header = format!("rookery_session={cookie}");
    unavailable(a.http("POST", "/logout", &[("cookie", &cookie_header)], "")).await;
    unavailable(groups_call(&a, "GET", "/groups", None, None)).await;

    // Back (empty: this Redis keeps nothing): registering and logging in work again.
    let _redis = Redis::start_on(port).await;
    let registered = register(&a, "alice").await;
    assert_eq!(registered.status, 201, "{}", registered.text());
    let cookie = session(&a, "alice").await;
    let response = auth(&a, "c2", &cookie).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(jwt_claims(&response.text())["data"]["user"], "alice");
}
