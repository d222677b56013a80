//! JWT and permission-key hardening end to end (PROTOCOL.md §6): tokens a
//! client presents over a real WebSocket, with headers and claims that
//! `TokenIssuer` would never mint.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{Value, json};

use crate::util::{CHAT, CHAT_SECRET, Client, TestServer, chat_token, now};

const ROOM: &str = "jwt-room";

/// A token over hand-written header and claims text, signed with the chat secret.
fn raw_token(header: &str, claims: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(header);
    let claims = URL_SAFE_NO_PAD.encode(claims);
    let key = EncodingKey::from_secret(CHAT_SECRET.as_bytes());
    let signature = jsonwebtoken::crypto::sign(format!("{header}.{claims}").as_bytes(), &key, Algorithm::HS256)
        .expect("HS256 signing");
    format!("{header}.{claims}.{signature}")
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

fn claims(client: &str, extra: Value) -> Value {
    let mut claims = json!({
        "client": client,
        "channel": CHAT,
        "permissions": {ROOM: {"publish": true, "subscribe": true}},
        "exp": now() + 60,
    });
    for (key, value) in extra.as_object().expect("an object") {
        claims[key] = value.clone();
    }
    claims
}

async fn chat_client(server: &TestServer) -> (Client, String) {
    let client = server.client(CHAT).await;
    let id = client.id().to_owned();
    (client, id)
}

#[tokio::test]
async fn crit_headers_and_future_nbf_are_invalid() {
    let server = TestServer::start().await;
    let (mut client, id) = chat_client(&server).await;
    let body = claims(&id, json!({})).to_string();
    for header in [
        r#"{"alg":"HS256","typ":"JWT","crit":["exp"]}"#,
        r#"{"alg":"HS256","crit":[]}"#,
        r#"{"alg":"HS256","crit":"b64","b64":false}"#,
    ] {
        let reply = client.try_authenticate(&raw_token(header, &body)).await;
        assert_eq!(reply["error"], "Invalid JWT", "{header}");
    }
    for nbf in [
        json!(now() + 120),
        json!((now() + 120) * 1000),
        json!("later"),
        json!(1e300),
    ] {
        let token = raw_token(HEADER, &claims(&id, json!({ "nbf": nbf })).to_string());
        assert_eq!(
            client.try_authenticate(&token).await["error"],
            "Invalid JWT",
            "nbf {nbf}"
        );
    }
    // None of that authenticated the connection.
    assert_eq!(client.subscribe(ROOM).await["error"], "Unauthorized");
    // A past nbf is fine.
    let token = raw_token(HEADER, &claims(&id, json!({ "nbf": now() - 5 })).to_string());
    assert_eq!(client.try_authenticate(&token).await.get("error"), None);
    assert_eq!(client.subscribe(ROOM).await.get("error"), None);
}

#[tokio::test]
async fn an_absurd_exp_neither_panics_nor_ends_the_session() {
    // Enforced expiry arms a timer from `exp`: the path that used to overflow.
    let server = TestServer::start_with("", "expiry = \"enforce\"").await;
    let (mut client, id) = chat_client(&server).await;
    for (i, exp) in ["1e300", "18446744073709551615", "1.7976931348623157e308"]
        .iter()
        .enumerate()
    {
        let text = format!(
            r#"{{"client":"{id}","channel":"{CHAT}","exp":{exp},"permissions":{{"^{ROOM}-":{{"subscribe":true}}}}}}"#
        );
        assert_eq!(
            client.try_authenticate(&raw_token(HEADER, &text)).await.get("error"),
            None,
            "exp {exp}"
        );
        // The connection survived arming its expiry timer from that exp.
        assert_eq!(
            client.subscribe(&format!("{ROOM}-{i}")).await.get("error"),
            None,
            "exp {exp}"
        );
    }
}

#[tokio::test]
async fn a_duplicate_permission_key_counts_at_its_last_position() {
    let server = TestServer::start().await;
    let (mut client, id) = chat_client(&server).await;
    // serde_json cannot hold duplicate keys, so the claims are written as text:
    // ROOM allowed, then ".*" denies, then ROOM again — the last ROOM decides.
    let text = format!(
        r#"{{"client":"{id}","channel":"{CHAT}","exp":{},"permissions":{{"^{ROOM}$":{{"subscribe":false}},".*":{{"subscribe":false}},"^{ROOM}$":{{"subscribe":true}}}}}}"#,
        now() + 60
    );
    assert_eq!(
        client.try_authenticate(&raw_token(HEADER, &text)).await.get("error"),
        None
    );
    assert_eq!(client.subscribe(ROOM).await.get("error"), None);
    assert_eq!(client.subscribe("elsewhere").await["error"], "Unauthorized");

    // The other direction: the repeated key moves behind a broader deny.
    let (mut other, id) = chat_client(&server).await;
    let text = format!(
        r#"{{"client":"{id}","channel":"{CHAT}","exp":{},"permissions":{{"^{ROOM}$":{{"subscribe":true}},".*":{{"subscribe":true}},"^{ROOM}$":{{"subscribe":false}}}}}}"#,
        now() + 60
    );
    assert_eq!(
        other.try_authenticate(&raw_token(HEADER, &text)).await.get("error"),
        None
    );
    assert_eq!(other.subscribe(ROOM).await["error"], "Unauthorized");
    assert_eq!(other.subscribe("elsewhere").await.get("error"), None);
}

#[tokio::test]
async fn keys_go_rejects_match_nothing() {
    let server = TestServer::start().await;
    let (mut client, id) = chat_client(&server).await;
    // Both keys compile in the regex crate; Go refuses them.
    let permissions = json!({
        "(?x) ^ jwt-room $": {"subscribe": true},
        "^jwt-room$\\Z": {"subscribe": true},
        "^jwt-other$": {"subscribe": true},
    });
    let token = chat_token(Some(&id), permissions, now() + 60, None);
    assert_eq!(
        client.try_authenticate(&token).await.get("error"),
        None,
        "bad keys do not fail the token"
    );
    assert_eq!(client.subscribe(ROOM).await["error"], "Unauthorized");
    assert_eq!(client.subscribe("jwt-other").await.get("error"), None);
}
