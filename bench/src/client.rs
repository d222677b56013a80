//! What the scenarios see of a server: connect a WebSocket client, set it up (optionally
//! subscribed to one room), encode publishes and decode deliveries. One WebSocket per client on
//! both servers.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::{nats, rookery};

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// How long any single setup step may take before the connection counts as failed.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// Which server is under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    Rookery,
    Nats,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Rookery => "rookery",
            Target::Nats => "nats",
        }
    }
}

/// Something that arrived on a connection.
pub enum Event<'a> {
    /// A delivered message (the whole frame for Rookery, the payload for NATS).
    Delivery(&'a [u8]),
    /// An error reported by the server.
    Error(String),
    /// A NATS PONG.
    Pong,
}

/// Where and how to reach the server under test.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub target: Target,
    pub addr: SocketAddr,
    pub rookery: rookery::Params,
}

/// A set-up connection and its protocol decoder.
pub struct Conn {
    pub ws: Ws,
    pub decoder: Decoder,
}

/// Per-connection decoding state.
pub enum Decoder {
    Rookery,
    Nats(nats::Parser),
}

impl Decoder {
    /// Reports the events in one incoming message.
    pub fn feed(&mut self, msg: &Message, on: impl FnMut(Event<'_>)) {
        match self {
            Decoder::Rookery => rookery::decode(msg, on),
            Decoder::Nats(p) => p.feed(msg, on),
        }
    }

    /// A frame that must be sent in answer to what was fed (NATS PONGs).
    pub fn reply(&mut self) -> Option<Message> {
        match self {
            Decoder::Rookery => None,
            Decoder::Nats(p) => p.take_pongs(),
        }
    }
}

impl Endpoint {
    /// Connects, sets up and optionally subscribes to `room`, all under [`STEP_TIMEOUT`] per step.
    pub async fn connect(&self, room: Option<&str>) -> anyhow::Result<Conn> {
        let tcp = tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(self.addr)).await??;
        tcp.set_nodelay(true)?;
        // A small read buffer keeps thousands of idle client connections cheap.
        let config = WebSocketConfig::default()
            .read_buffer_size(8 * 1024)
            .max_message_size(Some(1 << 20));
        let path = match self.target {
            Target::Rookery => "/v3/websocket",
            Target::Nats => "/",
        };
        let url = format!("ws://{}{path}", self.addr);
        let (mut ws, _) = tokio::time::timeout(
            STEP_TIMEOUT,
            tokio_tungstenite::client_async_with_config(url, tcp, Some(config)),
        )
        .await??;
        let decoder = match self.target {
            Target::Rookery => {
                rookery::setup(&mut ws, &self.rookery, room).await?;
                Decoder::Rookery
            }
            Target::Nats => {
                let mut parser = nats::Parser::default();
                nats::setup(&mut ws, &mut parser, room).await?;
                Decoder::Nats(parser)
            }
        };
        Ok(Conn { ws, decoder })
    }

    /// The frame that publishes `payload` (JSON text) to `room`.
    pub fn publish(&self, room: &str, payload: &str) -> Message {
        match self.target {
            Target::Rookery => rookery::publish(room, payload),
            Target::Nats => nats::publish(room, payload),
        }
    }
}

/// Sends one text frame.
pub async fn send_text(ws: &mut Ws, text: String) -> anyhow::Result<()> {
    tokio::time::timeout(STEP_TIMEOUT, ws.send(Message::text(text))).await??;
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

/// Waits for the JSON reply carrying `callback`, skipping other frames.
pub async fn expect_reply(ws: &mut Ws, callback: u64) -> anyhow::Result<serde_json::Value> {
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
