//! Rookery: a self-hosted, Scaledrone-compatible real-time messaging server.
//!
//! One binary is at once a JWT-issuing auth service (`POST /auth`), a pub/sub
//! broker speaking the Scaledrone v3 protocol at `/v3/websocket` that enforces
//! the tokens' regex permissions, a REST API, and a vanilla-JS chat page.
//!
//! # Layout
//!
//! - [`config`]: config file + env + CLI → validated [`config::Config`].
//! - [`policy`]: `policies/*.toml` → per-client `permissions` claims.
//! - [`permissions`]: a token's claim → ordered matchers; last match decides.
//! - [`token`]: JWT claims, minting and verification with the wire error texts.
//! - [`ids`]: client ids, room names and message ids.
//! - [`protocol`]: every frame of the wire protocol; decode and encode, no I/O.
//! - [`broker`]: rooms, subscribers, presence, history and fan-out; synchronous.
//! - [`session`]: one WebSocket connection and its single event loop.
//! - [`http`]: routing, `/auth`, the REST API, static files, health and metrics.
//! - [`metrics`]: metric names and the Prometheus recorder.
//! - [`app`]: the state shared by one running server.
//! - [`net_limits`]: connection caps, overall and per source IP.
//! - [`server`]: accept loop, connection limits and graceful shutdown.

pub mod app;
pub mod broker;
pub mod config;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod net_limits;
pub mod permissions;
pub mod policy;
pub mod protocol;
pub mod server;
pub mod session;
pub mod token;
