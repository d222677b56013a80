//! `auth`: `POST /auth` throughput and latency from concurrent HTTP/1.1 keep-alive clients.

use std::net::SocketAddr;
use std::time::Duration;

use crate::stats::round2;

use super::http;
use super::load::Outcome;

/// Runs `concurrency` clients for `duration` or until `max_requests` in total.
pub async fn run(
    addr: SocketAddr,
    concurrency: usize,
    duration: Duration,
    max_requests: u64,
    server_pid: Option<u32>,
) -> anyhow::Result<Outcome> {
    let run = http::drive(addr, concurrency, duration, max_requests, server_pid, move |w, n| {
        let body = format!("clientID=bench{w}x{n}");
        format!(
            "POST /auth HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    })
    .await?;
    let secs = run.elapsed.as_secs_f64();
    let per_req = run.server_cpu_us_per_ok();
    let json = serde_json::json!({
        "concurrency": concurrency,
        "requests_ok": run.ok,
        "requests_failed": run.failed,
        "first_error": run.first_error,
        "elapsed_s": round2(secs),
        "requests_per_s": round2(run.ok_per_s()),
        "latency_us": run.latency.to_json(),
        "server": run.server.map(|d| d.to_json()),
        "server_cpu_us_per_request": per_req.map(round2),
        "gen_cpu_s": round2(run.gen_cpu.as_secs_f64()),
        "machine": run.machine.to_json(run.elapsed),
    });
    let mut summary = format!(
        "{} requests ok, {} failed in {secs:.2} s: {:.0} requests/s with {concurrency} keep-alive clients\nlatency {}\ngenerator CPU {:.2} s",
        run.ok,
        run.failed,
        run.ok_per_s(),
        run.latency.summary(),
        run.gen_cpu.as_secs_f64()
    );
    if let (Some(d), Some(per)) = (run.server, per_req) {
        summary.push_str(&format!(
            "\nserver CPU {:.2} s, {:.1} µs per request",
            d.cpu().as_secs_f64(),
            per
        ));
    }
    if let Some(e) = &run.first_error {
        summary.push_str(&format!("\nfirst error: {e}"));
    }
    Ok(Outcome { json, summary })
}
