//! Integration tests: the real server on an ephemeral port, real WebSocket and HTTP clients.

mod util;

mod accounts;
mod chat;
mod cluster;
mod cluster_faults;
mod cluster_members;
mod cluster_names;
mod cluster_util;
mod durability;
mod groups;
mod hostile;
mod jwt;
mod ops;
mod rest;
