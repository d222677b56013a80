//! The WebSocket plumbing shared by the connection layer ([`crate::client`]) and both protocol
//! adapters ([`crate::rookery`], [`crate::nats`]): the stream type, the per-step timeout, the
//! events a decoder reports, and bounded send and receive.
//!
//! It imports neither side, so `client` can depend on the adapters without the adapters
//! depending back on `client`.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// How long any single setup step may take before the connection counts as failed.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// Something that arrived on a connection.
pub enum Event<'a> {
    /// A delivered message (the whole frame for Rookery, the payload for NATS).
    Delivery(&'a [u8]),
    /// An error reported by the server.
    Error(String),
    /// A NATS PONG.
    Pong,
}

/// Sends one text frame.
pub async fn send_text(ws: &mut Ws, text: String) -> anyhow::Result<()> {
    send(ws, Message::text(text)).await
}

/// Sends one frame under [`STEP_TIMEOUT`].
pub async fn send(ws: &mut Ws, msg: Message) -> anyhow::Result<()> {
    tokio::time::timeout(STEP_TIMEOUT, ws.send(msg)).await??;
    Ok(())
}

/// Receives the next data message, answering nothing, under [`STEP_TIMEOUT`].
pub async fn recv_timeout(ws: &mut Ws) -> anyhow::Result<Message> {
    loop {
        match tokio::time::timeout(STEP_TIMEOUT, ws.next()).await? {
            Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => return Ok(m),
            Some(Ok(Message::Close(c))) => anyhow::bail!("closed by server: {c:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("connection ended"),
        }
    }
}
