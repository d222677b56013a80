//! Reads Redis's own counters (`INFO stats` and `INFO commandstats`) so that the `cluster`
//! scenario can price a publish in Redis requests, before and after its measured window.
//!
//! One `INFO` request per sample over a fresh loopback connection, spoken in bare RESP: the
//! generator needs nothing else from Redis, so no client library is pulled in for it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// How long one `INFO` may take.
const INFO_TIMEOUT: Duration = Duration::from_secs(5);

/// Redis's cumulative counters at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counters {
    /// `total_reads_processed`: read events on client sockets. A request (or a pipelined batch
    /// of them) that arrives in one segment is one read: the closest figure Redis keeps to
    /// "round trips".
    pub reads: u64,
    /// `total_commands_processed`: every command executed, those run inside scripts included.
    pub commands: u64,
    /// `cmdstat_<name>` `calls=` per command (again counting calls made inside scripts).
    pub calls: BTreeMap<String, u64>,
}

impl Counters {
    /// `self - earlier`, per counter, without the `INFO` requests this module made itself
    /// (`samples_between` of them are counted between two samples: the later one's own read and
    /// command are counted before its answer is written).
    pub fn since(&self, earlier: &Counters, samples_between: u64) -> Counters {
        let mut calls = BTreeMap::new();
        for (name, &n) in &self.calls {
            let mut d = n.saturating_sub(earlier.calls.get(name).copied().unwrap_or(0));
            if name == "info" {
                d = d.saturating_sub(samples_between);
            }
            if d > 0 {
                calls.insert(name.clone(), d);
            }
        }
        Counters {
            reads: self.reads.saturating_sub(earlier.reads).saturating_sub(samples_between),
            commands: self
                .commands
                .saturating_sub(earlier.commands)
                .saturating_sub(samples_between),
            calls,
        }
    }

    /// Calls of the script-running commands (`EVALSHA`, `EVAL` and their read-only forms): each
    /// one is a request a node sent, whatever the script then runs inside Redis.
    pub fn script_calls(&self) -> u64 {
        ["evalsha", "eval", "evalsha_ro", "eval_ro", "fcall", "fcall_ro"]
            .iter()
            .filter_map(|c| self.calls.get(*c))
            .sum()
    }
}

/// Samples the counters of the Redis at `addr`.
pub async fn sample(addr: SocketAddr) -> anyhow::Result<Counters> {
    let text = tokio::time::timeout(INFO_TIMEOUT, info(addr))
        .await
        .context("Redis INFO timed out")??;
    Ok(parse(&text))
}

/// Sends `INFO stats commandstats` and returns the bulk-string answer.
async fn info(addr: SocketAddr) -> anyhow::Result<String> {
    anyhow::ensure!(addr.ip().is_loopback(), "only a loopback Redis may be sampled");
    let mut tcp = BufReader::new(TcpStream::connect(addr).await?);
    tcp.get_mut()
        .write_all(b"*3\r\n$4\r\nINFO\r\n$5\r\nstats\r\n$12\r\ncommandstats\r\n")
        .await?;
    let mut header = String::new();
    tcp.read_line(&mut header).await?;
    let len: usize = header
        .strip_prefix('$')
        .and_then(|n| n.trim_end().parse().ok())
        .with_context(|| format!("unexpected answer to INFO: {:?}", header.trim_end()))?;
    anyhow::ensure!(len <= 1 << 20, "INFO answer of {len} bytes is implausibly large");
    let mut body = vec![0; len];
    tcp.read_exact(&mut body).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Picks the counters out of an `INFO` text (`key:value` lines; unknown lines are skipped).
fn parse(text: &str) -> Counters {
    let mut out = Counters::default();
    for line in text.lines() {
        let Some((key, value)) = line.trim_end().split_once(':') else {
            continue;
        };
        match key {
            "total_reads_processed" => out.reads = value.parse().unwrap_or(0),
            "total_commands_processed" => out.commands = value.parse().unwrap_or(0),
            _ => {
                if let Some(name) = key.strip_prefix("cmdstat_") {
                    let calls = value
                        .split(',')
                        .find_map(|f| f.strip_prefix("calls="))
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    out.calls.insert(name.to_owned(), calls);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BEFORE: &str = "# Stats\r\ntotal_connections_received:3\r\ntotal_commands_processed:10\r\n\
        total_reads_processed:20\r\n\r\n# Commandstats\r\n\
        cmdstat_evalsha:calls=4,usec=40,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=2,usec=9,usec_per_call=4.50,rejected_calls=0,failed_calls=0\r\n";
    const AFTER: &str = "total_commands_processed:31\r\ntotal_reads_processed:33\r\n\
        cmdstat_evalsha:calls=9,usec=90,usec_per_call=10.00,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_info:calls=3,usec=13,usec_per_call=4.33,rejected_calls=0,failed_calls=0\r\n\
        cmdstat_xadd:calls=5,usec=20,usec_per_call=4.00,rejected_calls=0,failed_calls=0\r\n";

    #[test]
    fn parses_counters_and_subtracts_its_own_requests() {
        let (before, after) = (parse(BEFORE), parse(AFTER));
        assert_eq!((before.reads, before.commands, before.calls["evalsha"]), (20, 10, 4));
        let d = after.since(&before, 1);
        assert_eq!((d.reads, d.commands), (12, 20));
        assert_eq!(d.script_calls(), 5);
        assert_eq!(d.calls.get("xadd"), Some(&5));
        assert_eq!(
            d.calls.get("info"),
            None,
            "the sampler's own INFO is not the deployment's"
        );
    }
}
