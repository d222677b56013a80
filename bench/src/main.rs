//! `rookery-bench`: a bounded, loopback-only load generator that drives Rookery (Scaledrone v3
//! JSON over WebSocket) and nats-server (NATS protocol over WebSocket) with the same workloads.
//!
//! Every run prints a human summary and then exactly one JSON line of results on stdout.
//! `bench/run.sh` runs all scenarios against both servers and calls `compare` on the lines.
//!
//! # Layout
//! - `client`: the server-neutral connection (connect, set up, publish, decode).
//! - `rookery`, `nats`: the two protocol adapters, which `client` dispatches to.
//! - `ws`: what `client` and both adapters share (stream type, events, bounded send/receive).
//! - `payload`: the timestamped benchmark message.
//! - `scenario`: `fanout`, `cluster`, `rooms` (via the shared `load` engine), `conns`, `auth`
//!   and `rest` (via the shared `http` driver), `floor`.
//! - `stats`, `procstat`, `redis_info`: histograms, counters, `/proc` readings, and Redis's own
//!   counters.
//! - `compare`: the tables of all server set-ups, with their ratios.

mod client;
mod compare;
mod nats;
mod payload;
mod procstat;
mod redis_info;
mod rookery;
mod scenario;
mod stats;
mod ws;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use client::{Endpoint, Target};
use scenario::PlanCommon;
use scenario::load::{Deployment, Node, Outcome, Redis};

#[derive(Parser)]
#[command(version, about = "Load generator comparing Rookery with nats-server (loopback only)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One room, many subscribers, a few publishers at a fixed rate.
    Fanout {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        load: LoadArgs,
        /// Subscribing clients.
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Publishing clients (not subscribed).
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        /// Messages per second per publisher.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        /// The room (NATS subject).
        #[arg(long, default_value = "bench-fanout")]
        room: String,
    },
    /// The `fanout` load over two Rookery nodes sharing a Redis: subscribers split half and half
    /// over node A (`--addr`) and node B (`--addr-b`), publishers on A. Without `--addr-b` the
    /// same clients all go to `--addr`: the single-node peer of the same run.
    Cluster {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        load: LoadArgs,
        /// Node B's address (WebSocket); loopback only.
        #[arg(long, requires = "redis_addr")]
        addr_b: Option<SocketAddr>,
        /// Node B's process id.
        #[arg(long, requires = "addr_b")]
        server_pid_b: Option<u32>,
        /// The nodes' Redis, to read `INFO stats` and `INFO commandstats` around the run.
        #[arg(long, requires = "addr_b")]
        redis_addr: Option<SocketAddr>,
        /// Redis's process id, to read its CPU time.
        #[arg(long, requires = "redis_addr")]
        redis_pid: Option<u32>,
        /// Subscribing clients (split over the nodes).
        #[arg(long, default_value_t = 1000)]
        subscribers: usize,
        /// Publishing clients (not subscribed), all on node A.
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        /// Messages per second per publisher.
        #[arg(long, default_value_t = 50.0)]
        rate: f64,
        /// The room.
        #[arg(long, default_value = "bench-cluster")]
        room: String,
    },
    /// Many two-person rooms; both members subscribe and publish at a low rate.
    Rooms {
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        load: LoadArgs,
        /// Number of rooms (two clients each).
        #[arg(long, default_value_t = 1000)]
        rooms: usize,
        /// Messages per second per client.
        #[arg(long, default_value_t = 2.0)]
        rate: f64,
    },
    /// Idle connections, each set up and subscribed: set-up rate and server RSS per connection.
    Conns {
        #[command(flatten)]
        server: ServerArgs,
        /// Connections to open (each process is capped at 20,000 open files here).
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        /// Seconds to hold the connections before reading the server's RSS.
        #[arg(long, default_value_t = 2.0)]
        settle: f64,
    },
    /// POST /auth throughput and latency (Rookery only).
    Auth {
        #[command(flatten)]
        server: ServerArgs,
        /// Concurrent keep-alive HTTP/1.1 clients.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 5.0)]
        duration: f64,
        /// Upper bound on requests in total.
        #[arg(long, default_value_t = 2_000_000)]
        max_requests: u64,
    },
    /// REST publish throughput and latency: keep-alive HTTP/1.1 clients posting JSON messages
    /// to `POST /api/{channel}/{room}/publish` (Rookery only).
    Rest {
        #[command(flatten)]
        server: ServerArgs,
        /// Concurrent keep-alive HTTP/1.1 clients.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Rooms the publishes are spread over; each client takes them in turn.
        #[arg(long, default_value_t = 100)]
        rooms: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Size of the JSON message in bytes (the request body).
        #[arg(long, default_value_t = 100)]
        size: usize,
        /// Upper bound on publishes in total.
        #[arg(long, default_value_t = 2_000_000)]
        max_requests: u64,
    },
    /// Kernel cost of one small loopback TCP send (no server involved).
    Floor {
        #[arg(long, default_value_t = 200_000)]
        sends: u64,
        #[arg(long, default_value_t = 110)]
        size: usize,
        /// Label written into the JSON line.
        #[arg(long, default_value = "floor")]
        label: String,
    },
    /// Prints Rookery/NATS tables from files of JSON result lines (one file per suite run).
    Compare {
        /// Files with the JSON lines printed by earlier runs.
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
}

#[derive(Args, Clone)]
struct ServerArgs {
    /// Which server speaks at `--addr`.
    #[arg(long, value_enum)]
    target: Target,
    /// WebSocket (and for Rookery, HTTP) address; loopback only.
    #[arg(long)]
    addr: SocketAddr,
    /// Server process id, to read its CPU time and RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Rookery channel id.
    #[arg(long, default_value = "bench")]
    channel: String,
    /// Rookery channel secret (to mint tokens).
    #[arg(long, default_value = "bench-secret")]
    secret: String,
    /// Name of this run in the JSON line (pairs Rookery and NATS runs in `compare`).
    #[arg(long)]
    label: Option<String>,
    /// Name of the server set-up in the JSON line (default: the target). `run.sh` runs the same
    /// Rookery binary under several configurations (`rookery-memory`, `rookery-fsync1`), which
    /// `compare` shows side by side.
    #[arg(long)]
    name: Option<String>,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Tokio worker threads of the load generator (default: available CPUs).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args, Clone)]
struct LoadArgs {
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds to wait for late deliveries after publishing stops.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Payload size in bytes (the JSON message before protocol framing).
    #[arg(long, default_value_t = 110)]
    size: usize,
}

impl ServerArgs {
    /// The server set-up as named in the JSON line.
    fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.target.name().to_owned())
    }

    fn endpoint(&self) -> anyhow::Result<Endpoint> {
        self.endpoint_at(self.addr)
    }

    /// The endpoint of the same server set-up at another address (a second node).
    fn endpoint_at(&self, addr: SocketAddr) -> anyhow::Result<Endpoint> {
        anyhow::ensure!(addr.ip().is_loopback(), "only loopback addresses may be benchmarked");
        Ok(Endpoint {
            target: self.target,
            addr,
            rookery: rookery::Params {
                channel: self.channel.clone(),
                secret: self.secret.clone(),
            },
        })
    }
}

impl LoadArgs {
    fn common(&self, connect_concurrency: usize) -> anyhow::Result<PlanCommon> {
        anyhow::ensure!(
            (0.0..=600.0).contains(&self.duration) && (0.0..=120.0).contains(&self.drain),
            "duration must be at most 600 s and drain at most 120 s"
        );
        Ok(PlanCommon {
            duration: Duration::from_secs_f64(self.duration),
            drain: Duration::from_secs_f64(self.drain),
            payload_size: self.size,
            connect_concurrency,
        })
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    stats::now_ns();
    let nofile = procstat::raise_nofile();
    let (scenario, target, label, description, params, threads) = match &cli.command {
        Command::Fanout {
            server,
            load,
            subscribers,
            publishers,
            rate,
            ..
        } => (
            "fanout",
            server.name(),
            server.label.clone(),
            format!(
                "one room, {subscribers} subscribers, {publishers} publisher(s) at {rate}/s each, {} B payload",
                load.size
            ),
            serde_json::json!({"subscribers": subscribers, "publishers": publishers, "rate": rate, "size": load.size, "duration": load.duration}),
            server.threads,
        ),
        Command::Cluster {
            server,
            load,
            addr_b,
            subscribers,
            publishers,
            rate,
            ..
        } => {
            let nodes = if addr_b.is_some() { 2 } else { 1 };
            let split = if nodes == 2 {
                "split over nodes A and B, publishers on A"
            } else {
                "all on one node"
            };
            (
                "cluster",
                server.name(),
                server.label.clone(),
                format!(
                    "one room, {subscribers} subscribers and {publishers} publisher(s) at {rate}/s each ({split}), {} B payload",
                    load.size
                ),
                serde_json::json!({"subscribers": subscribers, "publishers": publishers, "rate": rate, "size": load.size, "duration": load.duration, "nodes": nodes}),
                server.threads,
            )
        }
        Command::Rooms {
            server,
            load,
            rooms,
            rate,
        } => (
            "rooms",
            server.name(),
            server.label.clone(),
            format!(
                "{rooms} two-person rooms, every client publishing {rate}/s, {} B payload",
                load.size
            ),
            serde_json::json!({"rooms": rooms, "rate": rate, "size": load.size, "duration": load.duration}),
            server.threads,
        ),
        Command::Conns { server, conns, .. } => (
            "conns",
            server.name(),
            server.label.clone(),
            format!(
                "{conns} idle connections, each set up and subscribed to its own room ({} at a time)",
                server.connect_concurrency
            ),
            serde_json::json!({"conns": conns}),
            server.threads,
        ),
        Command::Auth {
            server, concurrency, ..
        } => (
            "auth",
            server.name(),
            server.label.clone(),
            format!("POST /auth from {concurrency} keep-alive HTTP/1.1 clients"),
            serde_json::json!({"concurrency": concurrency}),
            server.threads,
        ),
        Command::Rest {
            server,
            concurrency,
            rooms,
            size,
            duration,
            ..
        } => (
            "rest",
            server.name(),
            server.label.clone(),
            format!("REST publish of {size} B JSON from {concurrency} keep-alive HTTP/1.1 clients over {rooms} rooms"),
            serde_json::json!({"concurrency": concurrency, "rooms": rooms, "size": size, "duration": duration}),
            server.threads,
        ),
        Command::Floor { sends, size, label } => (
            "floor",
            "local".to_owned(),
            Some(label.clone()),
            format!("{sends} loopback TCP sends of {size} bytes, one write each"),
            serde_json::json!({"sends": sends, "size": size}),
            None,
        ),
        Command::Compare { files } => {
            let texts = files
                .iter()
                .map(std::fs::read_to_string)
                .collect::<Result<Vec<_>, _>>()?;
            compare::print(&texts)?;
            return Ok(());
        }
    };
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    if let Some(t) = threads {
        rt.worker_threads(t.max(1));
    }
    let rt = rt.enable_all().build()?;
    let outcome: Outcome = rt.block_on(async {
        match cli.command {
            Command::Fanout {
                server,
                load,
                subscribers,
                publishers,
                rate,
                room,
            } => {
                let plan = scenario::fanout_plan(
                    subscribers,
                    publishers,
                    rate,
                    &room,
                    load.common(server.connect_concurrency)?,
                );
                scenario::load::run(Deployment::single(server.endpoint()?, server.server_pid), plan).await
            }
            Command::Cluster {
                server,
                load,
                addr_b,
                server_pid_b,
                redis_addr,
                redis_pid,
                subscribers,
                publishers,
                rate,
                room,
            } => {
                anyhow::ensure!(
                    server.target == Target::Rookery,
                    "the cluster scenario runs Rookery nodes only"
                );
                let plan = scenario::cluster_plan(
                    subscribers,
                    publishers,
                    rate,
                    &room,
                    load.common(server.connect_concurrency)?,
                );
                let mut deployment = Deployment::single(server.endpoint()?, server.server_pid);
                if let Some(b) = addr_b {
                    deployment.nodes.push(Node {
                        endpoint: server.endpoint_at(b)?,
                        pid: server_pid_b,
                    });
                }
                deployment.redis = redis_addr.map(|addr| Redis { addr, pid: redis_pid });
                scenario::load::run(deployment, plan).await
            }
            Command::Rooms {
                server,
                load,
                rooms,
                rate,
            } => {
                let plan = scenario::rooms_plan(rooms, rate, "bench-room-", load.common(server.connect_concurrency)?);
                scenario::load::run(Deployment::single(server.endpoint()?, server.server_pid), plan).await
            }
            Command::Conns { server, conns, settle } => {
                scenario::conns::run(
                    server.endpoint()?,
                    conns,
                    server.connect_concurrency,
                    Duration::from_secs_f64(settle.clamp(0.0, 60.0)),
                    server.server_pid,
                )
                .await
            }
            Command::Auth {
                server,
                concurrency,
                duration,
                max_requests,
            } => {
                let ep = server.endpoint()?;
                scenario::auth::run(
                    ep.addr,
                    concurrency,
                    Duration::from_secs_f64(duration.clamp(0.0, 600.0)),
                    max_requests,
                    server.server_pid,
                )
                .await
            }
            Command::Rest {
                server,
                concurrency,
                rooms,
                duration,
                size,
                max_requests,
            } => {
                anyhow::ensure!(
                    server.target == Target::Rookery,
                    "the rest scenario speaks Rookery's REST API only"
                );
                let ep = server.endpoint()?;
                let plan = scenario::rest::RestPlan {
                    concurrency,
                    rooms,
                    duration: Duration::from_secs_f64(duration.clamp(0.0, 600.0)),
                    max_requests,
                    payload_size: size,
                };
                scenario::rest::run(ep.addr, &ep.rookery, plan, server.server_pid).await
            }
            Command::Floor { sends, size, .. } => scenario::floor::run(sends, size, Duration::from_secs(30)),
            Command::Compare { .. } => unreachable!("handled above"),
        }
    })?;
    let label = label.unwrap_or_else(|| scenario.to_owned());
    println!("== {scenario} [{label}] against {target}: {description}");
    println!("{}", outcome.summary);
    let line = serde_json::json!({
        "scenario": scenario,
        "target": target,
        "label": label,
        "description": description,
        "params": params,
        "nofile_limit": nofile,
        "results": outcome.json,
    });
    println!("{line}");
    Ok(())
}
