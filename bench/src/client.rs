//! What the scenarios see of a server: connect a WebSocket client, set it up (optionally
//! subscribed to one room), encode publishes and decode deliveries. One WebSocket per client on
//! both servers.
//!
//! This module dispatches to the protocol adapters ([`crate::rookery`], [`crate::nats`]); what
//! the adapters need in turn (the stream type, events, bounded send and receive) lives in
//! [`crate::ws`], so the imports run one way only.

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::ws::{Event, STEP_TIMEOUT, Ws};
use crate::{nats, rookery};

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
