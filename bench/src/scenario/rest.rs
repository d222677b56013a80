//! `rest`: REST publish throughput (`POST /api/{channel}/{room}/publish`, PROTOCOL.md §9) from
//! concurrent keep-alive HTTP/1.1 clients, Rookery only.
//!
//! A REST publish is answered only once its message is committed to the durable store, so this
//! measures the store's commit path: with group commit many clients' publishes share one fsync,
//! with `[store] commit_max_messages = 1` every publish waits for its own. `run.sh` runs it
//! against both configurations and reports the throughput ratio.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::payload::{self, Stamp};
use crate::rookery::Params;
use crate::stats::{now_ns, round2};

use super::http;
use super::load::Outcome;

/// What to run.
pub struct RestPlan {
    pub concurrency: usize,
    /// Rooms the publishes are spread over (`bench-rest-0` …): each client takes them in turn.
    pub rooms: usize,
    pub duration: Duration,
    pub max_requests: u64,
    /// Size of the JSON message (the request body).
    pub payload_size: usize,
}

/// Runs `plan` against the Rookery at `addr`, authenticating with the channel's secret.
pub async fn run(
    addr: SocketAddr,
    params: &Params,
    plan: RestPlan,
    server_pid: Option<u32>,
) -> anyhow::Result<Outcome> {
    let authorization = basic_auth(params);
    let channel = params.channel.clone();
    let (concurrency, rooms, size) = (plan.concurrency.max(1), plan.rooms.max(1) as u64, plan.payload_size);
    let run = http::drive(
        addr,
        concurrency,
        plan.duration,
        plan.max_requests,
        server_pid,
        move |w, n| {
            // Each client walks through every room in turn, starting at its own.
            let room = format!("bench-rest-{}", (w as u64 + n) % rooms);
            let body = payload::encode(
                Stamp {
                    t: now_ns(),
                    s: n,
                    p: w as u64,
                },
                size,
            );
            publish_request(addr, &channel, &authorization, &room, &body)
        },
    )
    .await?;
    let secs = run.elapsed.as_secs_f64();
    let per_publish = run.server_cpu_us_per_ok();
    let json = serde_json::json!({
        "concurrency": concurrency,
        "rooms": rooms,
        "payload_bytes": size,
        "publishes_ok": run.ok,
        "publishes_failed": run.failed,
        "first_error": run.first_error,
        "elapsed_s": round2(secs),
        "publishes_per_s": round2(run.ok_per_s()),
        "latency_us": run.latency.to_json(),
        "server": run.server.map(|d| d.to_json()),
        "server_cpu_us_per_publish": per_publish.map(round2),
        "server_cpu_pct": run.server_cpu_pct().map(round2),
        "gen_cpu_s": round2(run.gen_cpu.as_secs_f64()),
        "gen_cpu_pct": round2(run.gen_cpu.as_secs_f64() * 100.0 / secs.max(1e-9)),
        "machine": run.machine.to_json(run.elapsed),
    });
    let mut summary = format!(
        "{} publishes ok, {} failed in {secs:.2} s: {:.0} publishes/s from {concurrency} keep-alive clients over {rooms} rooms\nlatency {}\ngenerator CPU {:.2} s",
        run.ok,
        run.failed,
        run.ok_per_s(),
        run.latency.summary(),
        run.gen_cpu.as_secs_f64()
    );
    if let (Some(d), Some(per), Some(pct)) = (run.server, per_publish, run.server_cpu_pct()) {
        summary.push_str(&format!(
            "\nserver CPU {:.2} s ({pct:.0}%), {per:.1} µs per publish",
            d.cpu().as_secs_f64()
        ));
    }
    if let Some(e) = &run.first_error {
        summary.push_str(&format!("\nfirst error: {e}"));
    }
    Ok(Outcome { json, summary })
}

/// The `Authorization` header value: HTTP Basic with the channel id and secret.
fn basic_auth(params: &Params) -> String {
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", params.channel, params.secret))
    )
}

/// One keep-alive `POST /api/{channel}/{room}/publish` with a JSON body. Channel and room are
/// the generator's own names (`bench`, `bench-rest-N`), which need no percent-encoding.
fn publish_request(addr: SocketAddr, channel: &str, authorization: &str, room: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /api/{channel}/{room}/publish HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {authorization}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::scenario::http::fake;

    fn params() -> Params {
        Params {
            channel: "bench".into(),
            secret: "bench-secret".into(),
        }
    }

    #[tokio::test]
    async fn posts_authenticated_json_round_robin_over_the_rooms() {
        let (addr, seen) = fake::serve(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"id\":\"x1\"}").await;
        let plan = RestPlan {
            concurrency: 2,
            rooms: 4,
            duration: Duration::from_secs(60),
            max_requests: 16,
            payload_size: 100,
        };
        let outcome = run(addr, &params(), plan, None).await.unwrap();
        assert_eq!(outcome.json["publishes_ok"], 16, "{}", outcome.summary);
        assert_eq!(outcome.json["publishes_failed"], 0);
        let requests = seen.requests();
        assert_eq!(requests.len(), 16);
        let mut rooms = BTreeSet::new();
        for (head, body) in &requests {
            let path = head.lines().next().unwrap().strip_prefix("POST ").unwrap();
            let room = path
                .strip_prefix("/api/bench/")
                .and_then(|p| p.strip_suffix("/publish HTTP/1.1"))
                .unwrap_or_else(|| panic!("unexpected request line {path}"));
            rooms.insert(room.to_owned());
            let auth = head
                .lines()
                .find_map(|l| l.strip_prefix("Authorization: Basic "))
                .unwrap();
            assert_eq!(STANDARD.decode(auth).unwrap(), b"bench:bench-secret");
            assert!(head.contains("\r\nContent-Type: application/json"));
            assert_eq!(body.len(), 100);
            let message: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert!(message["t"].is_u64() && message["s"].is_u64());
        }
        let expected: BTreeSet<String> = (0..4).map(|i| format!("bench-rest-{i}")).collect();
        assert_eq!(rooms, expected, "every room gets publishes");
    }
}
