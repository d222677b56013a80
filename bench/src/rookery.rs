//! Rookery adapter: the Scaledrone v3 JSON protocol (handshake, authenticate, subscribe,
//! publish) and HS256 token minting with the channel secret.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_tungstenite::tungstenite::Message;

use crate::ws::{Event, Ws, recv_timeout, send_text};

/// Connection parameters for a Rookery channel.
#[derive(Clone, Debug)]
pub struct Params {
    pub channel: String,
    pub secret: String,
}

/// Performs handshake, authentication (when the channel asks for it) and an optional subscribe.
pub async fn setup(ws: &mut Ws, params: &Params, room: Option<&str>) -> anyhow::Result<String> {
    let hello = serde_json::json!({"type": "handshake", "channel": params.channel, "callback": 0});
    send_text(ws, hello.to_string()).await?;
    let reply = expect_reply(ws, 0).await?;
    if let Some(err) = reply.get("error") {
        anyhow::bail!("handshake refused: {err}");
    }
    let client_id = reply
        .get("client_id")
        .and_then(|v| v.as_str())
        .ok_or_else(|| anyhow::anyhow!("handshake reply without client_id: {reply}"))?
        .to_owned();
    // The server handles a connection's frames in order, so authenticate and
    // subscribe are pipelined: one round trip for both instead of two.
    let authenticate = reply.get("require_auth").and_then(|v| v.as_bool()) == Some(true);
    if authenticate {
        let token = mint_token(&params.secret, &params.channel, &client_id, 3600);
        let auth = serde_json::json!({"type": "authenticate", "token": token, "callback": 1});
        send_text(ws, auth.to_string()).await?;
    }
    if let Some(room) = room {
        let sub = serde_json::json!({"type": "subscribe", "room": room, "callback": 2});
        send_text(ws, sub.to_string()).await?;
    }
    if authenticate {
        let reply = expect_reply(ws, 1).await?;
        if let Some(err) = reply.get("error") {
            anyhow::bail!("authenticate refused: {err}");
        }
    }
    if room.is_some() {
        let reply = expect_reply(ws, 2).await?;
        if let Some(err) = reply.get("error") {
            anyhow::bail!("subscribe refused: {err}");
        }
    }
    Ok(client_id)
}

/// Waits for the JSON reply carrying `callback`, skipping other frames; an uncorrelated error
/// (one without a callback) fails the wait.
async fn expect_reply(ws: &mut Ws, callback: u64) -> anyhow::Result<serde_json::Value> {
    loop {
        let msg = recv_timeout(ws).await?;
        let v: serde_json::Value = serde_json::from_slice(&msg.into_data())?;
        if v.get("callback").and_then(|c| c.as_u64()) == Some(callback) {
            return Ok(v);
        }
        if v.get("callback").is_none()
            && let Some(err) = v.get("error")
        {
            anyhow::bail!("server error: {err}");
        }
    }
}

/// The publish frame for `payload` (already JSON text), without a callback as official clients do.
pub fn publish(room: &str, payload: &str) -> Message {
    Message::text(format!(r#"{{"type":"publish","room":"{room}","message":{payload}}}"#))
}

/// Classifies one incoming frame.
pub fn decode(msg: &Message, mut on: impl FnMut(Event<'_>)) {
    let data: &[u8] = match msg {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => b,
        _ => return,
    };
    if data.starts_with(br#"{"type":"publish""#) {
        on(Event::Delivery(data));
    } else if crate::payload::find(data, br#""error""#).is_some() {
        on(Event::Error(String::from_utf8_lossy(data).into_owned()));
    } else if crate::payload::find(data, br#""type":"publish""#).is_some() {
        // Same frame with keys in another order.
        on(Event::Delivery(data));
    }
}

/// Mints an HS256 JWT granting publish and subscribe on `^bench-.*$`.
pub fn mint_token(secret: &str, channel: &str, client: &str, ttl_secs: u64) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + ttl_secs;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "client": client,
        "channel": channel,
        "permissions": {"^bench-.*$": {"publish": true, "subscribe": true}},
        "exp": exp,
    });
    let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{claims}");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_has_three_parts_and_verifies() {
        let t = mint_token("s3cret", "bench", "abc:def", 60);
        let parts: Vec<&str> = t.split('.').collect();
        assert_eq!(parts.len(), 3);
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        mac.verify_slice(&sig).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["client"], "abc:def");
        assert_eq!(claims["channel"], "bench");
    }

    #[test]
    fn publish_frame_is_json() {
        let m = publish("bench-x", r#"{"t":1}"#);
        let v: serde_json::Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        assert_eq!(v["message"]["t"], 1);
    }
}
