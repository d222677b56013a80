//! `floor`: the kernel cost of one small loopback TCP send, the unavoidable part of every
//! delivery. A sender thread writes `size`-byte messages, one `write` each (TCP_NODELAY), to a
//! receiver thread that drains them. Two figures:
//!
//! - **paced**: one send at a time to a receiver that is asleep in `read` (the sender pauses
//!   between sends). This is what a server pays per delivery at low rates, where every frame
//!   wakes its reader. Only the `write` call itself is timed, with the thread CPU clock (the
//!   clock's own cost, calibrated, is subtracted).
//! - **stream**: back-to-back sends; the receiver falls behind and reads many messages per call,
//!   so this is the cheaper bound reached under load. It depends on scheduling and varies.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::procstat;
use crate::stats::round2;

use super::load::Outcome;

/// Messages sent before measuring.
const WARM_UP: u64 = 1000;

/// Pause between paced sends, long enough for the receiver to go back to sleep.
const PACE: Duration = Duration::from_micros(50);

/// Runs the paced and streamed measurements with `sends` messages each (bounded by `max_time`).
pub fn run(sends: u64, size: usize, max_time: Duration) -> anyhow::Result<Outcome> {
    let msg = vec![b'x'; size.max(1)];
    let paced_n = (sends / 10).max(1);

    // Paced: time each write alone.
    let warm = WARM_UP * msg.len() as u64;
    let (mut s, receiver) = pair(warm)?;
    warm_up(&mut s, &msg)?;
    let overhead = clock_overhead();
    let t0 = Instant::now();
    let (mut timed, mut paced_done) = (Duration::ZERO, 0u64);
    while paced_done < paced_n && t0.elapsed() < max_time {
        std::thread::sleep(PACE);
        let a = procstat::thread_cpu();
        s.write_all(&msg)?;
        timed += procstat::thread_cpu().saturating_sub(a);
        paced_done += 1;
    }
    let paced_us = (timed.as_secs_f64() * 1e6 / paced_done.max(1) as f64 - overhead).max(0.0);
    drop(s);
    let rx = receiver.finish()?;
    let paced_rx_us = rx.cpu.as_secs_f64() * 1e6 / paced_done.max(1) as f64;
    let paced_reads = rx.reads;

    // Stream: back-to-back writes, whole-loop thread CPU.
    let (mut s, receiver) = pair(warm)?;
    warm_up(&mut s, &msg)?;
    let (u0, s0) = procstat::stat_times("/proc/thread-self/stat")?;
    let cpu0 = procstat::thread_cpu();
    let t0 = Instant::now();
    let mut done = 0u64;
    while done < sends && (!done.is_multiple_of(1024) || t0.elapsed() < max_time) {
        s.write_all(&msg)?;
        done += 1;
    }
    let wall = t0.elapsed();
    let cpu = procstat::thread_cpu() - cpu0;
    let (u1, s1) = procstat::stat_times("/proc/thread-self/stat")?;
    drop(s);
    let rx = receiver.finish()?;
    let stream_us = cpu.as_secs_f64() * 1e6 / done.max(1) as f64;
    let sys_share = {
        let (u, s) = ((u1 - u0).as_secs_f64(), (s1 - s0).as_secs_f64());
        if u + s > 0.0 { s / (u + s) } else { 0.0 }
    };
    let stream_rx_us = rx.cpu.as_secs_f64() * 1e6 / done.max(1) as f64;
    let r3 = |x: f64| (x * 1000.0).round() / 1000.0;
    let json = serde_json::json!({
        "bytes_per_send": size,
        "paced_sends": paced_done,
        "paced_receiver_reads": paced_reads,
        "sender_cpu_us_per_send": r3(paced_us),
        "receiver_cpu_us_per_message": r3(paced_rx_us),
        "clock_overhead_us": r3(overhead),
        "stream_sends": done,
        "stream_wall_s": round2(wall.as_secs_f64()),
        "stream_sender_cpu_us_per_send": r3(stream_us),
        "stream_sender_kernel_share": round2(sys_share),
        "stream_receiver_reads": rx.reads,
        "stream_receiver_cpu_us_per_message": r3(stream_rx_us),
    });
    let summary = format!(
        "paced ({paced_done} sends of {size} B, each to a sleeping reader, {paced_reads} reads): \
         sender {paced_us:.2} µs CPU per send, receiver {paced_rx_us:.2} µs per message\n\
         stream ({done} back-to-back sends in {:.2} s, receiver made {} reads): sender {stream_us:.2} µs \
         CPU per send ({:.0}% in the kernel), receiver {stream_rx_us:.2} µs per message",
        wall.as_secs_f64(),
        rx.reads,
        sys_share * 100.0
    );
    Ok(Outcome { json, summary })
}

/// A connected pair: the sending socket and the thread draining the other end. The receiver
/// ignores the first `skip_bytes` (the warm-up) and then times each `read` with its thread CPU
/// clock (the clock does not advance while the thread sleeps in `read`).
fn pair(skip_bytes: u64) -> anyhow::Result<(TcpStream, Receiver)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let handle = std::thread::spawn(move || -> anyhow::Result<ReceiverStats> {
        let (mut s, _) = listener.accept()?;
        let mut buf = vec![0u8; 64 * 1024];
        let (mut reads, mut seen, mut cpu) = (0u64, 0u64, Duration::ZERO);
        loop {
            let a = procstat::thread_cpu();
            let n = s.read(&mut buf)?;
            if n == 0 {
                break;
            }
            if seen >= skip_bytes {
                cpu += procstat::thread_cpu().saturating_sub(a);
                reads += 1;
            }
            seen += n as u64;
        }
        Ok(ReceiverStats { reads, cpu })
    });
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    Ok((s, Receiver { handle }))
}

struct ReceiverStats {
    reads: u64,
    /// CPU time spent in timed reads.
    cpu: Duration,
}

struct Receiver {
    handle: std::thread::JoinHandle<anyhow::Result<ReceiverStats>>,
}

impl Receiver {
    fn finish(self) -> anyhow::Result<ReceiverStats> {
        self.handle
            .join()
            .map_err(|_| anyhow::anyhow!("receiver thread panicked"))?
    }
}

/// Warms the connection and code paths, then waits for the receiver to drain and sleep.
fn warm_up(s: &mut TcpStream, msg: &[u8]) -> anyhow::Result<()> {
    for _ in 0..WARM_UP {
        s.write_all(msg)?;
    }
    std::thread::sleep(Duration::from_millis(50));
    Ok(())
}

/// Cost in µs of one pair of thread-CPU clock reads, to subtract from timed sends.
fn clock_overhead() -> f64 {
    let n = 10_000;
    let mut total = Duration::ZERO;
    for _ in 0..n {
        let a = procstat::thread_cpu();
        total += procstat::thread_cpu().saturating_sub(a);
    }
    total.as_secs_f64() * 1e6 / n as f64
}
