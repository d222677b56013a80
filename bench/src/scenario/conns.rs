//! `conns`: many idle connections, each set up (authenticated where the server asks) and
//! subscribed to its own room. Measures the set-up rate and the server's memory per connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_tungstenite::tungstenite::Message;

use crate::client::Endpoint;
use crate::procstat;
use crate::stats::{Latency, LocalLatency, round2};

use super::load::Outcome;

/// Opens `conns` connections (at most `concurrency` setting up at once), holds them for
/// `settle`, then closes them all.
pub async fn run(
    endpoint: Endpoint,
    conns: usize,
    concurrency: usize,
    settle: Duration,
    server_pid: Option<u32>,
) -> anyhow::Result<Outcome> {
    let endpoint = Arc::new(endpoint);
    let latency = Arc::new(Latency::new());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = server_pid.map(|p| procstat::sample(Some(p))).transpose()?;
    let gen_before = procstat::own_cpu();
    let busy_before = procstat::MachineCpu::now(server_pid.as_slice());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = mpsc::channel::<Result<(), String>>(1024);
    let gate = Arc::new(Semaphore::new(concurrency.max(1)));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..conns {
        let (endpoint, gate, ready_tx, latency) = (endpoint.clone(), gate.clone(), ready_tx.clone(), latency.clone());
        let mut stop_rx = stop_rx.clone();
        tasks.spawn(async move {
            let room = format!("bench-conn-{i}");
            let permit = gate.acquire_owned().await;
            let t0 = Instant::now();
            let conn = endpoint.connect(Some(&room)).await;
            drop(permit);
            let mut conn = match conn {
                Ok(c) => {
                    LocalLatency::new(&latency).record(t0.elapsed().as_micros() as u64);
                    let _ = ready_tx.send(Ok(())).await;
                    c
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(format!("{e:#}"))).await;
                    return;
                }
            };
            drop(ready_tx);
            // Stay idle, but answer keep-alives, until told to stop.
            loop {
                tokio::select! {
                    _ = stop_rx.changed() => break,
                    msg = conn.ws.next() => match msg {
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                        Some(Ok(m)) => {
                            conn.decoder.feed(&m, |_| {});
                            if let Some(r) = conn.decoder.reply() {
                                let _ = conn.ws.send(r).await;
                            }
                        }
                    },
                }
            }
            let _ = conn.ws.close(None).await;
        });
    }
    drop(ready_tx);
    let (mut ok, mut failed, mut first_error) = (0usize, 0usize, None);
    while let Some(r) = ready_rx.recv().await {
        match r {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    let setup_elapsed = start.elapsed();
    let setup_secs = setup_elapsed.as_secs_f64();
    let after_setup = server_pid.map(|p| procstat::sample(Some(p))).transpose()?;
    let setup_gen_cpu = procstat::own_cpu().saturating_sub(gen_before);
    let busy = procstat::MachineCpu::now(server_pid.as_slice()).since(busy_before);
    tokio::time::sleep(settle).await;
    let held = server_pid.map(|p| procstat::sample(Some(p))).transpose()?;
    let gen_cpu = procstat::own_cpu().saturating_sub(gen_before);
    stop_tx.send_replace(true);
    let _ = tokio::time::timeout(Duration::from_secs(20), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_close = server_pid.map(|p| procstat::sample(Some(p))).transpose()?;

    let rate = ok as f64 / setup_secs;
    let setup_delta = match (before, after_setup) {
        (Some(b), Some(a)) => Some(procstat::Delta::between(b, a)),
        _ => None,
    };
    let rss_per_conn = match (before, held) {
        (Some(b), Some(h)) if ok > 0 => Some((h.rss_kib as f64 - b.rss_kib as f64) * 1024.0 / ok as f64),
        _ => None,
    };
    let cpu_per_setup_us = setup_delta.map(|d| d.cpu().as_secs_f64() * 1e6 / ok.max(1) as f64);
    let json = serde_json::json!({
        "conns": conns,
        "conns_ok": ok,
        "failed": failed,
        "first_error": first_error,
        "concurrency": concurrency,
        "setup_s": round2(setup_secs),
        "setup_per_s": round2(rate),
        "setup_latency_us": latency.to_json(),
        "rss_before_kib": before.map(|s| s.rss_kib),
        "rss_held_kib": held.map(|s| s.rss_kib),
        "rss_after_close_kib": after_close.map(|s| s.rss_kib),
        "rss_bytes_per_conn": rss_per_conn.map(|v| v.round()),
        "server_setup": setup_delta.map(|d| d.to_json()),
        "server_cpu_us_per_setup": cpu_per_setup_us.map(round2),
        "gen_cpu_s": round2(gen_cpu.as_secs_f64()),
        "gen_setup_cpu_s": round2(setup_gen_cpu.as_secs_f64()),
        "machine": busy.to_json(setup_elapsed),
    });
    let mut summary = format!(
        "{ok} of {conns} connections set up in {setup_secs:.2} s ({rate:.0}/s, {concurrency} at a time); \
         set-up latency {}\ngenerator CPU {:.2} s",
        latency.summary(),
        gen_cpu.as_secs_f64()
    );
    if let (Some(b), Some(h), Some(c), Some(per), Some(cpu)) =
        (before, held, after_close, rss_per_conn, cpu_per_setup_us)
    {
        summary.push_str(&format!(
            "\nserver RSS {} KiB → {} KiB held ({:.0} bytes per connection), {} KiB after close; \
             server CPU {:.0} µs per set-up",
            b.rss_kib, h.rss_kib, per, c.rss_kib, cpu
        ));
    }
    if let Some(e) = &first_error {
        summary.push_str(&format!("\nfirst error: {e}"));
    }
    Ok(Outcome { json, summary })
}
