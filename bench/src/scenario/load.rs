//! The shared engine of the message scenarios (`fanout`, `rooms`, `cluster`): set up every
//! client, start them together, publish at fixed rates for a fixed time, then wait (bounded) for
//! the last deliveries and count what arrived.
//!
//! A run drives a [`Deployment`]: one node, or several nodes sharing a Redis (the `cluster`
//! scenario). Each client connects to the node its plan names, deliveries and latency are also
//! kept per node, and every process of the deployment is measured on its own.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Conn, Endpoint};
use crate::payload::{self, Stamp};
use crate::procstat::{self, Delta};
use crate::redis_info;
use crate::stats::{Counters, Latency, LocalLatency, now_ns, round2};
use crate::ws::Event;

/// What one client does.
#[derive(Clone, Debug)]
pub struct ClientPlan {
    /// Room to subscribe to, if any.
    pub subscribe: Option<String>,
    /// Room to publish to, rate in messages per second, publisher index.
    pub publish: Option<(String, f64, u64)>,
    /// The node to connect to, an index into [`Deployment::nodes`] taken modulo their number
    /// (so a plan split over two nodes runs unchanged against one).
    pub node: usize,
}

/// What a run talks to and measures.
pub struct Deployment {
    /// The nodes (at least one).
    pub nodes: Vec<Node>,
    /// The Redis the nodes share, if they do.
    pub redis: Option<Redis>,
}

/// One server process and where its clients connect.
pub struct Node {
    pub endpoint: Endpoint,
    /// Its process id, to read its CPU time and RSS from /proc.
    pub pid: Option<u32>,
}

/// The Redis of a deployment of several nodes.
pub struct Redis {
    /// Where to read `INFO` from.
    pub addr: SocketAddr,
    /// Its process id, to read its CPU time from /proc.
    pub pid: Option<u32>,
}

impl Deployment {
    /// One server alone.
    pub fn single(endpoint: Endpoint, pid: Option<u32>) -> Self {
        Deployment {
            nodes: vec![Node { endpoint, pid }],
            redis: None,
        }
    }

    /// The pids of every process under test (nodes and Redis).
    fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .filter_map(|n| n.pid)
            .chain(self.redis.as_ref().and_then(|r| r.pid))
            .collect()
    }
}

/// The name of node `i` in the JSON line and the summary: "a", "b", ...
fn node_name(i: usize) -> String {
    char::from(b'a' + (i % 26) as u8).to_string()
}

/// A whole run.
pub struct Plan {
    pub clients: Vec<ClientPlan>,
    pub duration: Duration,
    pub drain: Duration,
    pub payload_size: usize,
    pub connect_concurrency: usize,
}

/// Figures of a finished run, ready for JSON.
pub struct Outcome {
    pub json: serde_json::Value,
    pub summary: String,
}

struct Shared {
    endpoints: Vec<Endpoint>,
    counters: Counters,
    /// Deliveries and latency of each node's subscribers.
    per_node: Vec<NodeCounts>,
    first_error: std::sync::Mutex<Option<String>>,
    payload_size: usize,
}

#[derive(Default)]
struct NodeCounts {
    delivered: AtomicU64,
    latency: Latency,
}

impl Shared {
    fn note_error(&self, e: String) {
        Counters::add(&self.counters.errors, 1);
        let mut slot = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
    }
}

/// Runs `plan` against `deployment`, sampling its processes around the measured window.
pub async fn run(deployment: Deployment, plan: Plan) -> anyhow::Result<Outcome> {
    anyhow::ensure!(!deployment.nodes.is_empty(), "a deployment needs a node");
    let node_count = deployment.nodes.len();
    let mut subs_per_room: HashMap<&str, u64> = HashMap::new();
    for c in &plan.clients {
        if let Some(r) = &c.subscribe {
            *subs_per_room.entry(r.as_str()).or_default() += 1;
        }
    }
    let publishers = plan.clients.iter().filter(|c| c.publish.is_some()).count();
    let subscribers = plan.clients.iter().filter(|c| c.subscribe.is_some()).count();
    let mut node_subscribers = vec![0usize; node_count];
    for c in plan.clients.iter().filter(|c| c.subscribe.is_some()) {
        node_subscribers[c.node % node_count] += 1;
    }
    let shared = Arc::new(Shared {
        endpoints: deployment.nodes.iter().map(|n| n.endpoint.clone()).collect(),
        counters: Counters::default(),
        per_node: (0..node_count).map(|_| NodeCounts::default()).collect(),
        first_error: Default::default(),
        payload_size: plan.payload_size,
    });
    let (start_tx, start_rx) = watch::channel(None::<Instant>);
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel::<bool>(1024);
    let gate = Arc::new(Semaphore::new(plan.connect_concurrency.max(1)));
    let setup_start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for plan_c in plan.clients.iter().cloned() {
        let fanout = plan_c
            .publish
            .as_ref()
            .map(|(room, _, _)| subs_per_room.get(room.as_str()).copied().unwrap_or(0))
            .unwrap_or(0);
        let (shared, gate, ready_tx) = (shared.clone(), gate.clone(), ready_tx.clone());
        let (start_rx, stop_rx) = (start_rx.clone(), stop_rx.clone());
        let duration = plan.duration;
        tasks.spawn(async move {
            let permit = gate.acquire_owned().await;
            let endpoint = &shared.endpoints[plan_c.node % shared.endpoints.len()];
            let conn = endpoint.connect(plan_c.subscribe.as_deref()).await;
            drop(permit);
            let conn = match conn {
                Ok(c) => {
                    let _ = ready_tx.send(true).await;
                    c
                }
                Err(e) => {
                    shared.note_error(format!("setup: {e:#}"));
                    let _ = ready_tx.send(false).await;
                    return;
                }
            };
            drop(ready_tx);
            client_loop(conn, plan_c, fanout, duration, &shared, start_rx, stop_rx).await;
        });
    }
    drop(ready_tx);
    let mut ok = 0usize;
    while let Some(r) = ready_rx.recv().await {
        ok += usize::from(r);
    }
    let setup_secs = setup_start.elapsed().as_secs_f64();
    if ok < plan.clients.len() {
        eprintln!(
            "warning: {} of {} clients failed to set up (first error: {:?})",
            plan.clients.len() - ok,
            plan.clients.len(),
            shared.first_error.lock().unwrap_or_else(|p| p.into_inner())
        );
    }

    // Let the set-up traffic settle, then measure.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let under_test = deployment.pids();
    let nodes_before = sample_nodes(&deployment)?;
    let redis_before = sample_redis(deployment.redis.as_ref()).await?;
    let gen_before = procstat::own_cpu();
    let busy_before = procstat::MachineCpu::now(&under_test);
    let start = Instant::now();
    start_tx.send_replace(Some(start));
    tokio::time::sleep(plan.duration).await;
    let deadline = start + plan.duration + plan.drain;
    let c = &shared.counters;
    // The expected count is final once every publisher has passed its end time.
    tokio::time::sleep(Duration::from_millis(5)).await;
    while Instant::now() < deadline && Counters::get(&c.delivered) < Counters::get(&c.expected) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let elapsed = start.elapsed();
    let nodes_after = sample_nodes(&deployment)?;
    let redis_after = sample_redis(deployment.redis.as_ref()).await?;
    let gen_cpu = procstat::own_cpu().saturating_sub(gen_before);
    let busy = procstat::MachineCpu::now(&under_test).since(busy_before);
    stop_tx.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();

    let published = Counters::get(&c.published);
    let expected = Counters::get(&c.expected);
    let delivered = Counters::get(&c.delivered);
    let lost = expected.saturating_sub(delivered);
    let secs = elapsed.as_secs_f64();
    let deliveries_per_s = delivered as f64 / secs;
    // Per node: CPU (if its pid is known) and what its own subscribers received.
    let node_cpu: Vec<Option<Delta>> = nodes_before
        .iter()
        .zip(&nodes_after)
        .map(|(b, a)| Some(Delta::between((*b)?, (*a)?)))
        .collect();
    let server = node_cpu.iter().copied().collect::<Option<Vec<_>>>().map(Delta::sum);
    let cpu_per_delivery_us = server.map(|d| per_unit_us(d.cpu(), delivered));
    let latency = Latency::new();
    for n in &shared.per_node {
        latency.absorb(&n.latency)?;
    }
    let nodes_json: serde_json::Map<String, serde_json::Value> = shared
        .per_node
        .iter()
        .zip(&node_cpu)
        .zip(&node_subscribers)
        .enumerate()
        .map(|(i, ((n, cpu), subs))| {
            let got = Counters::get(&n.delivered);
            let v = serde_json::json!({
                "subscribers": subs,
                "delivered": got,
                "deliveries_per_s": round2(got as f64 / secs),
                "latency_us": n.latency.to_json(),
                "server": cpu.map(|d| d.to_json()),
                "server_cpu_us_per_delivery": cpu.map(|d| round3(per_unit_us(d.cpu(), got))),
                "server_cpu_pct": cpu.map(|d| round2(d.cpu().as_secs_f64() * 100.0 / secs)),
            });
            (node_name(i), v)
        })
        .collect();
    let redis = match (&deployment.redis, redis_before, redis_after) {
        (Some(_), Some(before), Some(after)) => Some(RedisFigures::new(before, after, published, secs)),
        _ => None,
    };
    // What the whole deployment (every node and Redis) spends per delivery.
    let deployment_cpu_per_delivery_us = server.map(|d| {
        let redis_cpu = redis.as_ref().and_then(|r| r.cpu).map_or(Duration::ZERO, |c| c.cpu());
        round3(per_unit_us(d.cpu() + redis_cpu, delivered))
    });
    let first_error = shared.first_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let machine = busy.to_json(elapsed);
    let json = serde_json::json!({
        "clients": plan.clients.len(),
        "clients_ok": ok,
        "publishers": publishers,
        "subscribers": subscribers,
        "payload_bytes": plan.payload_size,
        "duration_s": plan.duration.as_secs_f64(),
        "elapsed_s": round2(secs),
        "setup_s": round2(setup_secs),
        "published": published,
        "publish_per_s": round2(published as f64 / plan.duration.as_secs_f64()),
        "expected": expected,
        "delivered": delivered,
        "lost": lost,
        "loss_pct": if expected > 0 { lost as f64 * 100.0 / expected as f64 } else { 0.0 },
        "out_of_order": Counters::get(&c.out_of_order),
        "errors": Counters::get(&c.errors),
        "first_error": first_error,
        "deliveries_per_s": round2(deliveries_per_s),
        "latency_us": latency.to_json(),
        "server": server.map(|d| d.to_json()),
        "server_cpu_us_per_delivery": cpu_per_delivery_us.map(round3),
        "nodes": nodes_json,
        "redis": redis.as_ref().map(RedisFigures::to_json),
        "deployment_cpu_us_per_delivery": deployment_cpu_per_delivery_us,
        "server_cpu_pct": server.map(|d| round2(d.cpu().as_secs_f64() * 100.0 / secs)),
        "gen_cpu_s": round2(gen_cpu.as_secs_f64()),
        "gen_cpu_pct": round2(gen_cpu.as_secs_f64() * 100.0 / secs),
        "machine": machine,
    });
    let mut summary = format!(
        "{} clients ({} publishers, {} subscribers) set up in {:.2} s\n\
         published {} ({:.0}/s), delivered {} of {} ({:.3}% lost, {} out of order, {} errors) in {:.2} s\n\
         deliveries/s {:.0}\nlatency {}\ngenerator CPU {:.2} s ({:.0}%); other processes {:.0}% of a CPU, interrupts {:.0}%",
        plan.clients.len(),
        publishers,
        subscribers,
        setup_secs,
        published,
        published as f64 / plan.duration.as_secs_f64(),
        delivered,
        expected,
        if expected > 0 {
            lost as f64 * 100.0 / expected as f64
        } else {
            0.0
        },
        Counters::get(&c.out_of_order),
        Counters::get(&c.errors),
        secs,
        deliveries_per_s,
        latency.summary(),
        gen_cpu.as_secs_f64(),
        gen_cpu.as_secs_f64() * 100.0 / secs,
        machine["other_cpu_pct"].as_f64().unwrap_or(0.0),
        machine["irq_cpu_pct"].as_f64().unwrap_or(0.0),
    );
    if let (Some(d), Some(per)) = (server, cpu_per_delivery_us) {
        summary.push_str(&format!(
            "\nserver CPU {:.2} s (user {:.2}, sys {:.2}; {:.0}%), {:.2} µs per delivery, RSS {} → {} KiB",
            d.cpu().as_secs_f64(),
            d.user.as_secs_f64(),
            d.system.as_secs_f64(),
            d.cpu().as_secs_f64() * 100.0 / secs,
            per,
            d.rss_before_kib,
            d.rss_after_kib
        ));
    }
    if node_count > 1 {
        for (i, (n, cpu)) in shared.per_node.iter().zip(&node_cpu).enumerate() {
            let got = Counters::get(&n.delivered);
            summary.push_str(&format!(
                "\nnode {}: {} subscribers, delivered {got}, latency {}",
                node_name(i),
                node_subscribers[i],
                n.latency.summary()
            ));
            if let Some(d) = cpu {
                summary.push_str(&format!(
                    "; CPU {:.2} s, {:.2} µs per delivery",
                    d.cpu().as_secs_f64(),
                    per_unit_us(d.cpu(), got)
                ));
            }
        }
    }
    if let Some(r) = &redis {
        summary.push_str(&format!("\n{}", r.summary()));
    }
    if let Some(e) = first_error {
        summary.push_str(&format!("\nfirst error: {e}"));
    }
    Ok(Outcome { json, summary })
}

/// One client: waits for the start, then reads deliveries and publishes on schedule until stopped.
/// The CPU time and RSS of every node now (`None` where its pid is unknown).
fn sample_nodes(deployment: &Deployment) -> anyhow::Result<Vec<Option<procstat::Sample>>> {
    Ok(deployment
        .nodes
        .iter()
        .map(|n| n.pid.map(|p| procstat::sample(Some(p))).transpose())
        .collect::<Result<_, _>>()?)
}

/// Redis's counters and CPU time now, if the deployment has a Redis.
async fn sample_redis(
    redis: Option<&Redis>,
) -> anyhow::Result<Option<(redis_info::Counters, Option<procstat::Sample>)>> {
    let Some(r) = redis else { return Ok(None) };
    let counters = redis_info::sample(r.addr).await?;
    let cpu = r.pid.map(|p| procstat::sample(Some(p))).transpose()?;
    Ok(Some((counters, cpu)))
}

/// What Redis did during the measured window, and its cost per publish.
struct RedisFigures {
    /// Counter deltas, without the sampler's own `INFO` requests.
    counts: redis_info::Counters,
    cpu: Option<Delta>,
    published: u64,
    secs: f64,
}

impl RedisFigures {
    fn new(
        (before, cpu_before): (redis_info::Counters, Option<procstat::Sample>),
        (after, cpu_after): (redis_info::Counters, Option<procstat::Sample>),
        published: u64,
        secs: f64,
    ) -> Self {
        let cpu = cpu_before.zip(cpu_after).map(|(b, a)| Delta::between(b, a));
        RedisFigures {
            // One INFO (the later sample's) falls between the two samples.
            counts: after.since(&before, 1),
            cpu,
            published,
            secs,
        }
    }

    fn per_publish(&self, n: u64) -> f64 {
        (n as f64 / self.published.max(1) as f64 * 1000.0).round() / 1000.0
    }

    fn to_json(&self) -> serde_json::Value {
        let c = &self.counts;
        serde_json::json!({
            "reads": c.reads,
            "commands": c.commands,
            "script_calls": c.script_calls(),
            "calls": c.calls,
            "reads_per_publish": self.per_publish(c.reads),
            "script_calls_per_publish": self.per_publish(c.script_calls()),
            "commands_per_publish": self.per_publish(c.commands),
            "cpu": self.cpu.map(|d| d.to_json()),
            "cpu_us_per_publish": self.cpu.map(|d| round3(per_unit_us(d.cpu(), self.published))),
            "cpu_pct": self.cpu.map(|d| round2(d.cpu().as_secs_f64() * 100.0 / self.secs)),
        })
    }

    fn summary(&self) -> String {
        let (c, published) = (&self.counts, self.published);
        let mut s = format!(
            "redis: per publish {:.3} client reads, {:.3} script calls, {:.3} commands (inside scripts too) over {published} publishes",
            self.per_publish(c.reads),
            self.per_publish(c.script_calls()),
            self.per_publish(c.commands),
        );
        if let Some(d) = self.cpu {
            s.push_str(&format!(
                "; CPU {:.2} s, {:.2} µs per publish",
                d.cpu().as_secs_f64(),
                per_unit_us(d.cpu(), published)
            ));
        }
        s
    }
}

/// Microseconds of `cpu` per one of `n` units (deliveries, publishes).
fn per_unit_us(cpu: Duration, n: u64) -> f64 {
    cpu.as_secs_f64() * 1e6 / n.max(1) as f64
}

/// Rounds to three decimals for tidy JSON.
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

async fn client_loop(
    conn: Conn,
    plan: ClientPlan,
    fanout: u64,
    duration: Duration,
    shared: &Shared,
    mut start_rx: watch::Receiver<Option<Instant>>,
    mut stop_rx: watch::Receiver<bool>,
) {
    let Conn { mut ws, mut decoder } = conn;
    let start = match start_rx.wait_for(|s| s.is_some()).await {
        Ok(s) => s.unwrap_or_else(Instant::now),
        Err(_) => return,
    };
    let node = &shared.per_node[plan.node % shared.per_node.len()];
    let endpoint = &shared.endpoints[plan.node % shared.endpoints.len()];
    let mut lat = LocalLatency::new(&node.latency);
    let mut last_seq: HashMap<u64, u64> = HashMap::new();
    let c = &shared.counters;
    // Spread publishers over one period so that they do not all fire at the same instant.
    let (room, rate, pub_index) = match &plan.publish {
        Some((room, rate, idx)) => (room.clone(), rate.max(0.001), *idx),
        None => (String::new(), 0.0, 0),
    };
    let publishing = plan.publish.is_some();
    let phase = if publishing {
        let period = 1.0 / rate;
        Duration::from_secs_f64(period * ((pub_index * 7919) % 1000) as f64 / 1000.0)
    } else {
        Duration::ZERO
    };
    let end = start + duration;
    let mut seq: u64 = 0;
    let mut next_due = start + phase;
    let mut active = publishing;
    loop {
        tokio::select! {
            biased;
            _ = stop_rx.changed() => break,
            msg = ws.next() => {
                let msg = match msg {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => { shared.note_error(format!("read: {e}")); break; }
                    None => { shared.note_error("connection ended".into()); break; }
                };
                if let Message::Close(f) = &msg {
                    shared.note_error(format!("closed by server: {f:?}"));
                    break;
                }
                let now = now_ns();
                let mut n = 0u64;
                decoder.feed(&msg, |ev| match ev {
                    Event::Delivery(data) => {
                        if let Some(Stamp { t, s, p }) = payload::decode(data) {
                            n += 1;
                            lat.record(now.saturating_sub(t) / 1000);
                            let last = last_seq.entry(p).or_insert(u64::MAX);
                            if *last != u64::MAX && s <= *last {
                                Counters::add(&c.out_of_order, 1);
                            }
                            *last = s;
                        }
                    }
                    Event::Error(e) => shared.note_error(format!("server: {e}")),
                    Event::Pong => {}
                });
                if n > 0 {
                    Counters::add(&c.delivered, n);
                    Counters::add(&node.delivered, n);
                }
                if let Some(reply) = decoder.reply()
                    && ws.send(reply).await.is_err()
                {
                    break;
                }
            }
            _ = tokio::time::sleep_until(next_due.into()), if active => {
                let now = Instant::now();
                // Send every message whose scheduled time has passed (at most one period late).
                let due_total = ((now.min(end) - (start + phase)).as_secs_f64() * rate) as u64 + 1;
                let mut sent = 0;
                while seq < due_total {
                    let body = payload::encode(Stamp { t: now_ns(), s: seq, p: pub_index }, shared.payload_size);
                    if ws.feed(endpoint.publish(&room, &body)).await.is_err() {
                        break;
                    }
                    seq += 1;
                    sent += 1;
                }
                if ws.flush().await.is_err() {
                    shared.note_error("publish flush failed".into());
                    break;
                }
                Counters::add(&c.published, sent);
                Counters::add(&c.expected, sent * fanout);
                next_due = start + phase + Duration::from_secs_f64(seq as f64 / rate);
                if next_due >= end {
                    active = false;
                }
            }
        }
    }
    lat.flush();
    let _ = ws.close(None).await;
}
