//! Integration tests: the real server on an ephemeral port, real WebSocket and HTTP clients.

mod util;

mod chat;
mod cluster;
mod durability;
mod hostile;
mod ops;
mod rest;
