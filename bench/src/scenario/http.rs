//! A closed-loop HTTP/1.1 load driver shared by `auth` and `rest`: `concurrency` keep-alive
//! clients, each sending its next request as soon as the previous response has been read, for a
//! fixed time or a fixed number of requests in total, with the server's CPU read around the run.
//!
//! A minimal HTTP/1.1 writer and reader over `TcpStream` keeps the dependency list short: the
//! caller builds each request, and of the response only its status, headers and body length
//! matter.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::payload::find;
use crate::procstat::{self, Delta, MachineCpu};
use crate::stats::{Latency, LocalLatency};

/// How long one request may take before it counts as failed (and its connection is dropped).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a finished run measured.
pub struct Run {
    /// Requests answered `200`.
    pub ok: u64,
    /// Requests answered otherwise, or not at all.
    pub failed: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Latency of the requests answered `200`, in microseconds.
    pub latency: Arc<Latency>,
    /// The server's CPU and RSS over the run, when its pid was given.
    pub server: Option<Delta>,
    /// The load generator's own CPU time over the run.
    pub gen_cpu: Duration,
    pub machine: MachineCpu,
}

impl Run {
    /// Successful requests per second.
    pub fn ok_per_s(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// Server CPU microseconds per successful request.
    pub fn server_cpu_us_per_ok(&self) -> Option<f64> {
        self.server.map(|d| d.cpu().as_secs_f64() * 1e6 / self.ok.max(1) as f64)
    }

    /// Server CPU as a percentage of one core over the run.
    pub fn server_cpu_pct(&self) -> Option<f64> {
        self.server
            .map(|d| d.cpu().as_secs_f64() * 100.0 / self.elapsed.as_secs_f64().max(1e-9))
    }
}

/// Runs `concurrency` clients against `addr` until `duration` has passed or `max_requests` have
/// been issued. `request(worker, n)` builds the `n`th request (from 1) of client `worker`; it
/// is called just before the request is sent, so it may stamp the current time.
pub async fn drive<F>(
    addr: SocketAddr,
    concurrency: usize,
    duration: Duration,
    max_requests: u64,
    server_pid: Option<u32>,
    request: F,
) -> anyhow::Result<Run>
where
    F: Fn(usize, u64) -> Vec<u8> + Send + Sync + 'static,
{
    let request = Arc::new(request);
    let latency = Arc::new(Latency::new());
    let issued = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let before = server_pid.map(|p| procstat::sample(Some(p))).transpose()?;
    let gen_before = procstat::own_cpu();
    let busy_before = MachineCpu::now(server_pid.as_slice());
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let (request, latency, issued, ok, failed, first_error) = (
            request.clone(),
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
                let req = request(worker, n);
                let t0 = Instant::now();
                let res = tokio::time::timeout(REQUEST_TIMEOUT, exchange(&mut conn, addr, &req, &mut buf))
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
                match res {
                    Ok(200) => {
                        lat.record(t0.elapsed().as_micros() as u64);
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        // The connection may be mid-response: start the next request afresh.
                        conn = None;
                        let msg = match other {
                            Ok(status) => format!("HTTP status {status}: {}", body_text(&buf)),
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
    let after = server_pid.map(|p| procstat::sample(Some(p))).transpose()?;
    let gen_cpu = procstat::own_cpu().saturating_sub(gen_before);
    let machine = MachineCpu::now(server_pid.as_slice()).since(busy_before);
    let server = match (before, after) {
        (Some(b), Some(a)) => Some(Delta::between(b, a)),
        _ => None,
    };
    let first_error = first_error.lock().unwrap_or_else(|p| p.into_inner()).take();
    Ok(Run {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        first_error,
        elapsed,
        latency,
        server,
        gen_cpu,
        machine,
    })
}

/// The body of the response in `buf`, shortened, for an error message.
fn body_text(buf: &[u8]) -> String {
    let body = find(buf, b"\r\n\r\n").map_or(&buf[..0], |i| &buf[i + 4..]);
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}

/// Sends one request on the kept-alive connection (opening it if needed) and reads the whole
/// response into `buf`; returns the status code.
async fn exchange(
    conn: &mut Option<TcpStream>,
    addr: SocketAddr,
    req: &[u8],
    buf: &mut Vec<u8>,
) -> anyhow::Result<u16> {
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

/// A loopback HTTP/1.1 server for the tests of the drivers: it answers every request with one
/// fixed response and keeps what it received.
#[cfg(test)]
pub mod fake {
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;

    use crate::payload::find;

    /// What the server saw: every request's head and body, and the connections accepted.
    #[derive(Default)]
    pub struct Seen {
        pub requests: Mutex<Vec<(String, Vec<u8>)>>,
        pub connections: AtomicU64,
    }

    impl Seen {
        pub fn requests(&self) -> Vec<(String, Vec<u8>)> {
            self.requests.lock().unwrap().clone()
        }

        pub fn connections(&self) -> u64 {
            self.connections.load(Ordering::Relaxed)
        }
    }

    /// Serves `response` to every request on a fresh loopback port.
    pub async fn serve(response: &'static [u8]) -> (SocketAddr, Arc<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Seen::default());
        let seen_by_server = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                seen_by_server.connections.fetch_add(1, Ordering::Relaxed);
                let seen = seen_by_server.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        while let Some(i) = find(&buf, b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..i]).into_owned();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("Content-Length: "))
                                .map_or(0, |v| v.parse().unwrap());
                            if buf.len() < i + 4 + len {
                                break;
                            }
                            let body = buf[i + 4..i + 4 + len].to_vec();
                            buf.drain(..i + 4 + len);
                            seen.requests.lock().unwrap().push((head, body));
                            if stream.write_all(response).await.is_err() {
                                return;
                            }
                        }
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                });
            }
        });
        (addr, seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LONG: Duration = Duration::from_secs(60);

    fn get(_: usize, n: u64) -> Vec<u8> {
        format!("GET /{n} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
    }

    #[tokio::test]
    async fn counts_answers_and_keeps_connections_alive() {
        let (addr, seen) = fake::serve(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"id\":\"x1\"}").await;
        let run = drive(addr, 3, LONG, 30, None, get).await.unwrap();
        assert_eq!((run.ok, run.failed), (30, 0), "{:?}", run.first_error);
        assert_eq!(seen.requests().len(), 30);
        assert_eq!(seen.connections(), 3, "one kept-alive connection per client");
        assert_eq!(run.latency.to_json()["count"], 30);
    }

    #[tokio::test]
    async fn reads_chunked_responses_whole() {
        // Were the chunks not consumed, the next response would start mid-body and fail.
        let (addr, _) =
            fake::serve(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n")
                .await;
        let run = drive(addr, 1, LONG, 5, None, get).await.unwrap();
        assert_eq!((run.ok, run.failed), (5, 0), "{:?}", run.first_error);
    }

    #[tokio::test]
    async fn other_statuses_fail_with_the_body_quoted() {
        let (addr, _) = fake::serve(
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 35\r\n\r\n{\"message\":\"Service unavailable\"}\r\n",
        )
        .await;
        let run = drive(addr, 2, LONG, 4, None, get).await.unwrap();
        assert_eq!((run.ok, run.failed), (0, 4));
        let e = run.first_error.unwrap();
        assert!(e.contains("503") && e.contains("Service unavailable"), "{e}");
    }
}
