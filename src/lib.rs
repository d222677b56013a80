//! Rookery: a self-hosted, Scaledrone-compatible real-time messaging server.
//!
//! One binary is at once a JWT-issuing auth service (`POST /auth`), a pub/sub
//! broker speaking the Scaledrone v3 protocol at `/v3/websocket` that enforces
//! the tokens' regex permissions, a REST API, and a vanilla-JS chat page.
//!
//! # Layout
//!
//! - [`config`]: config file + env + CLI → validated [`config::Config`].
//! - [`accounts`]: members, passwords, login sessions and live display names.
//! - [`groups`]: group rooms: their members, limits and the membership check.
//! - [`policy`]: `policies/*.toml` → per-client `permissions` claims.
//! - [`permissions`]: a token's claim → ordered matchers; last match decides.
//! - [`token`]: JWT claims, minting and verification with the wire error texts.
//! - [`auth`]: each channel's credentials and the one token-minting path.
//! - [`clock`]: the wall clock claims are checked against (tests move it).
//! - [`ids`]: client ids and room names.
//! - [`protocol`]: every frame of the wire protocol; decode and encode, no I/O.
//! - [`broker`]: local fan-out: rooms, subscribers, presence, catch-up of new subscribers.
//! - [`engine`]: per-room epochs, offsets, history and their order; the embedded durable store.
//! - [`session`]: one WebSocket connection and its single event loop.
//! - [`http`]: routing, `/auth`, the REST API, static files, health and metrics.
//! - [`metrics`]: metric names and the Prometheus recorder.
//! - [`stores`]: where accounts, sessions and groups are kept (redb, or Redis in a cluster).
//! - [`app`]: the state shared by one running server.
//! - [`net_limits`]: connection caps, overall and per source IP.
//! - `redis_sync`: pooled synchronous Redis connections for the accounts and groups stores.
//! - [`server`]: accept loop, connection limits and graceful shutdown.

pub mod accounts;
pub mod app;
pub mod auth;
pub mod broker;
pub mod clock;
pub mod config;
pub mod engine;
pub mod groups;
pub mod http;
pub mod ids;
pub mod metrics;
pub mod net_limits;
pub mod permissions;
pub mod policy;
pub mod protocol;
pub(crate) mod redis_sync;
pub mod server;
pub mod session;
pub mod stores;
#[cfg(test)]
mod test_support;
pub mod token;
