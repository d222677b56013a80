//! Live guest names across nodes (PROTOCOL.md §11, §13): `POST /auth` on any
//! node refuses a guest a display name that a live connection on any node
//! carries, frees it when that connection closes or its node dies, and
//! answers `503` at once when Redis cannot say.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use crate::cluster_util::{Node, Redis};
use crate::util::{CHAT, Client, HttpResponse, http_request};

/// How long a name may take to come free (a close, or a dead node's lease of 2 s).
const RELEASE_DEADLINE: Duration = Duration::from_secs(10);

/// `POST /auth` on `node` as a guest asking for `name`.
async fn auth(node: &Node, client_id: &str, name: &str) -> HttpResponse {
    let body = format!("clientID={client_id}&name={name}");
    http_request(
        node.addr,
        "POST",
        "/auth",
        &[("content-type", "application/x-www-form-urlencoded")],
        Bytes::from(body),
    )
    .await
}

/// A guest connected to `node`'s chat channel and authenticated as `name`.
async fn guest(node: &Node, name: &str) -> Client {
    let mut client = Client::connect(&format!("ws://{}/v3/websocket", node.addr)).await;
    client.handshake(CHAT).await;
    let minted = auth(node, client.id(), name).await;
    assert_eq!(minted.status, 200, "{}", minted.text());
    let reply = client.authenticate(&minted.text()).await;
    assert_eq!(reply.get("error"), None, "{reply}");
    client
}

fn assert_taken(response: &HttpResponse) {
    assert_eq!(
        (response.status, response.json()),
        (409, json!({"message": "Name taken"})),
        "{}",
        response.text()
    );
}

/// Asks `node` for `name` until it is granted; fails if it stays taken past the deadline.
async fn until_free(node: &Node, name: &str) {
    let deadline = tokio::time::Instant::now() + RELEASE_DEADLINE;
    loop {
        let response = auth(node, "n:later", name).await;
        if response.status == 200 {
            return;
        }
        assert_taken(&response);
        assert!(tokio::time::Instant::now() < deadline, "{name} was never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_name_live_on_one_node_is_taken_on_the_others_until_its_connection_closes() {
    let redis = Redis::start().await;
    let (a, b) = tokio::join!(Node::start(&redis), Node::start(&redis));
    let ann = guest(&a, "Ann").await;
    // Refused on B at once (in any case), as it is on A.
    assert_taken(&auth(&b, "n:other", "ann").await);
    assert_taken(&auth(&b, "n:other", "%20ANN%20").await);
    assert_taken(&auth(&a, "n:other", "ann").await);
    // A second tab with the name, on B: the name stays taken until both close.
    let mut second = Client::connect(&format!("ws://{}/v3/websocket", b.addr)).await;
    second.handshake(CHAT).await;
    let token = auth(&a, second.id(), "Bea").await.text();
    second.authenticate(&token).await;
    assert_taken(&auth(&b, "n:other", "bea").await);
    drop(second);
    until_free(&a, "bea").await;
    drop(ann);
    until_free(&b, "ann").await;
    // Free means free on every node.
    assert_eq!(auth(&a, "n:third", "Ann").await.status, 200);
}

#[tokio::test]
async fn a_dead_nodes_names_come_free_within_its_lease() {
    let redis = Redis::start().await;
    let (a, b) = tokio::join!(Node::start(&redis), Node::start(&redis));
    let _ann = guest(&a, "Ann").await;
    assert_taken(&auth(&b, "n:other", "Ann").await);
    a.kill9().await;
    until_free(&b, "Ann").await;
}

#[tokio::test]
async fn without_redis_an_asked_for_name_is_503_at_once_and_a_random_one_is_granted() {
    let redis = Redis::start().await;
    let b = Node::start(&redis).await;
    redis.stop().await;
    let started = tokio::time::Instant::now();
    let refused = auth(&b, "n:other", "Ann").await;
    assert_eq!(
        (refused.status, refused.json()),
        (503, json!({"message": "Service unavailable"})),
        "{}",
        refused.text()
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "answered after {:?}",
        started.elapsed()
    );
    // Without a name, a guest still gets a random one.
    let body = Bytes::from_static(b"clientID=n:another");
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    let granted = http_request(b.addr, "POST", "/auth", &headers, body).await;
    assert_eq!(granted.status, 200, "{}", granted.text());
}
