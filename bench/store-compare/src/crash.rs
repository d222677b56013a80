//! Crash and locking probes. A child process (this binary, `crash-child`) fills a store with
//! durable batches and reports each acknowledged commit on stdout; the parent SIGKILLs it once
//! the target is reached (so the kill lands mid-write), then times the reopen, checks that
//! every acknowledged row is there, and tries a second open of the same directory from this
//! process and from another process.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::store::{self, Append, Kind};
use crate::workload;

/// Rooms and value size of the crash fill. 40 rooms keeps the fill short on redb, whose
/// random-room inserts are several times slower (see the trim table); the reopen cost depends
/// on the amount of data, not on how it is spread.
const ROOMS: usize = 40;
const VALUE: usize = 200;
const BATCH: usize = 1024;

pub(crate) struct CrashReport {
    pub(crate) entries_acked: u64,
    pub(crate) fill: Duration,
    pub(crate) open_after_kill: Duration,
    pub(crate) rows_after_kill: u64,
    pub(crate) open_clean: Duration,
    pub(crate) size_allocated: u64,
    pub(crate) second_open_same_process: String,
    pub(crate) second_open_other_process: String,
}

/// Child side: appends forever (up to a safety cap), printing `acked N` after each commit.
pub(crate) fn child(kind: Kind, dir: &Path, entries: u64) -> Result<()> {
    let store = store::open(kind, dir)?;
    let rooms = workload::room_names(ROOMS);
    // The same pseudo-random JSON bodies as the other runs, so LZ4 (fjall) gets no free win.
    let value = workload::payloads(VALUE).swap_remove(0);
    let mut next_offset = vec![0u64; ROOMS];
    let mut acked = 0u64;
    let mut stdout = std::io::stdout().lock();
    // The cap only stops a runaway child if the parent died; the parent kills far earlier.
    while acked < entries * 3 {
        let rows: Vec<Append<'_>> = (0..BATCH)
            .map(|i| {
                let room = (acked as usize + i * 7919) % ROOMS;
                let offset = next_offset[room];
                next_offset[room] += 1;
                Append {
                    room: &rooms[room],
                    offset,
                    value: &value,
                }
            })
            .collect();
        store.commit(&rows, &[])?;
        acked += BATCH as u64;
        writeln!(stdout, "acked {acked}")?;
        stdout.flush()?;
    }
    bail!("crash-child was never killed")
}

/// Child side of the cross-process lock test: tries to open and prints the outcome.
pub(crate) fn lock_probe(kind: Kind, dir: &Path) {
    println!("{}", store::open_error_text(kind, dir));
}

/// Parent side: fill via a child, SIGKILL it, reopen and probe.
pub(crate) fn run(kind: Kind, dir: &Path, entries: u64) -> Result<CrashReport> {
    let exe = std::env::current_exe()?;
    let store_arg = store_arg(kind);
    let start = Instant::now();
    let mut child = Command::new(&exe)
        .args(["crash-child", "--store", store_arg, "--entries", &entries.to_string()])
        .args([
            "--cache-mib",
            &(store::cache_bytes() / 1024 / 1024).to_string(),
            "--dir",
        ])
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .context("spawn crash-child")?;
    let stdout = child.stdout.take().context("child stdout")?;
    let mut entries_acked = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(n) = line.strip_prefix("acked ") {
            entries_acked = n.parse()?;
            if entries_acked >= entries {
                break;
            }
        }
    }
    // std's Child::kill is SIGKILL on Unix: no destructors, no final flush.
    child.kill()?;
    child.wait()?;
    let fill = start.elapsed();
    if entries_acked < entries {
        bail!("crash-child stopped after {entries_acked} acked rows");
    }

    let start = Instant::now();
    let reopened = store::open(kind, dir)?;
    let open_after_kill = start.elapsed();
    let rows_after_kill = reopened.count()?;
    if rows_after_kill < entries_acked {
        bail!(
            "{}: {rows_after_kill} rows after kill -9, but {entries_acked} were acknowledged",
            kind.label()
        );
    }

    let second_open_same_process = store::open_error_text(kind, dir);
    let probe = Command::new(&exe)
        .args(["lock-probe", "--store", store_arg, "--dir"])
        .arg(dir)
        .output()?;
    let second_open_other_process = String::from_utf8_lossy(&probe.stdout).trim().to_owned();
    drop(reopened);

    let start = Instant::now();
    let clean = store::open(kind, dir)?;
    let open_clean = start.elapsed();
    drop(clean);
    let (size_allocated, _) = store::disk_usage(dir)?;

    Ok(CrashReport {
        entries_acked,
        fill,
        open_after_kill,
        rows_after_kill,
        open_clean,
        size_allocated,
        second_open_same_process,
        second_open_other_process,
    })
}

fn store_arg(kind: Kind) -> &'static str {
    match kind {
        Kind::Redb => "redb",
        Kind::RedbQr => "redb-qr",
        Kind::Fjall => "fjall",
    }
}
