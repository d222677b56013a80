//! `auth`: `POST /auth` throughput and latency from concurrent HTTP/1.1 keep-alive clients.
//!
//! A minimal HTTP/1.1 writer and reader over `TcpStream` keeps the dependency list short: the
//! request is fixed and the response only needs its status, headers and body length.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::payload::find;
use crate::procstat;
use crate::stats::{Latency, LocalLatency, round2};

use super::load::Outcome;

/// Runs `concurrency` clients for `duration` or until `max_requests` in total.
pub async fn run(
    addr: SocketAddr,
    concurrency: usize,
    duration: Duration,
    max_requests: u64,
    server_pid: Option<u32>,
) -> anyhow::Result<Outcome> {
    let latency = Arc::new(Latency::new());
    let issued = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let before = server_pid.map(|p| procstat::sample(Some(p))).transpose()?;
    let gen_before = procstat::own_cpu();
    let busy_before = procstat::MachineCpu::now(server_pid);
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let (latency, issued, ok, failed, first_error) = (
            latency.clone(),
            issued.clone(),
            ok.clone(),
            failed.clone(),
            first_error.clone(),
        );
        tasks.spawn(async move {
            let mut lat = LocalLatency::new(&latency);
            let mut conn: Option<TcpStream> = None;
            let mut buf = Vec::with_capacity(4096);
            let mut n = 0u64;
            while Instant::now() < end && issued.fetch_add(1, Ordering::Relaxed) < max_requests {
                n += 1;
                let body = format!("clientID=bench{w}x{n}");
                let req = format!(
                    "POST /auth HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let t0 = Instant::now();
                let res = tokio::time::timeout(
                    Duration::from_secs(10),
                    request(&mut conn, addr, req.as_bytes(), &mut buf),
                )
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
                match res {
                    Ok(200) => {
                        lat.record(t0.elapsed().as_micros() as u64);
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                        let msg = match other {
                            Ok(status) => format!("HTTP status {status}"),
                            Err(e) => format!("{e:#}"),
                        };
                        first_error.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert(msg);
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed();
    let secs = elapsed.as_secs_f64();
    let after = server_pid.map(|p| procstat::sample(Some(p))).transpose()?;
    let gen_cpu = procstat::own_cpu().saturating_sub(gen_before);
    let busy = procstat::MachineCpu::now(server_pid).since(busy_before);
    let ok = ok.load(Ordering::Relaxed);
    let failed = failed.load(Ordering::Relaxed);
    let server = match (before, after) {
        (Some(b), Some(a)) => Some(procstat::Delta::between(b, a)),
        _ => None,
    };
    let per_req = server.map(|d| d.cpu().as_secs_f64() * 1e6 / ok.max(1) as f64);
    let first_error = first_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let json = serde_json::json!({
        "concurrency": concurrency,
        "requests_ok": ok,
        "requests_failed": failed,
        "first_error": first_error,
        "elapsed_s": round2(secs),
        "requests_per_s": round2(ok as f64 / secs),
        "latency_us": latency.to_json(),
        "server": server.map(|d| d.to_json()),
        "server_cpu_us_per_request": per_req.map(round2),
        "gen_cpu_s": round2(gen_cpu.as_secs_f64()),
        "machine": busy.to_json(elapsed),
    });
    let mut summary = format!(
        "{ok} requests ok, {failed} failed in {secs:.2} s: {:.0} requests/s with {concurrency} keep-alive clients\nlatency {}\ngenerator CPU {:.2} s",
        ok as f64 / secs,
        latency.summary(),
        gen_cpu.as_secs_f64()
    );
    if let (Some(d), Some(per)) = (server, per_req) {
        summary.push_str(&format!(
            "\nserver CPU {:.2} s, {:.1} µs per request",
            d.cpu().as_secs_f64(),
            per
        ));
    }
    if let Some(e) = first_error {
        summary.push_str(&format!("\nfirst error: {e}"));
    }
    Ok(Outcome { json, summary })
}

/// Sends one request on the kept-alive connection (opening it if needed) and reads the whole
/// response; returns the status code.
async fn request(conn: &mut Option<TcpStream>, addr: SocketAddr, req: &[u8], buf: &mut Vec<u8>) -> anyhow::Result<u16> {
    if conn.is_none() {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        *conn = Some(s);
    }
    let Some(stream) = conn.as_mut() else {
        anyhow::bail!("no connection");
    };
    stream.write_all(req).await?;
    buf.clear();
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        read_more(stream, buf).await?;
    };
    let head = std::str::from_utf8(&buf[..head_end])?.to_owned();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("bad status line"))?;
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    if let Some(len) = header("content-length") {
        let len: usize = len.parse()?;
        while buf.len() < head_end + len {
            read_more(stream, buf).await?;
        }
    } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        // Walk the chunks until the terminating zero-size chunk.
        let mut pos = head_end;
        loop {
            let line_end = loop {
                if let Some(i) = find(&buf[pos..], b"\r\n") {
                    break pos + i;
                }
                read_more(stream, buf).await?;
            };
            let size_text = std::str::from_utf8(&buf[pos..line_end])?;
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
            let need = line_end + 2 + size + 2;
            while buf.len() < need {
                read_more(stream, buf).await?;
            }
            pos = need;
            if size == 0 {
                break;
            }
        }
    }
    if header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close")) {
        *conn = None;
    }
    Ok(status)
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await?;
    if n == 0 {
        anyhow::bail!("connection closed mid-response");
    }
    buf.extend_from_slice(&chunk[..n]);
    Ok(())
}
