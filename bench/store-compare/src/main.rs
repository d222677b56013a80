//! redb vs fjall on Rookery's message-history workload (see RESULTS.md for the figures and
//! how they were taken). Prints markdown tables; asserts nothing about speed. The only hard
//! failure is a correctness one: rows acknowledged before a kill -9 missing after reopen.

mod crash;
mod store;
mod workload;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;

use store::Kind;
use workload::{Spec, Until};

#[derive(Parser)]
#[command(about = "Compare redb and fjall on Rookery's history workload")]
struct Cli {
    /// Stores to compare.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Kind::Redb, Kind::RedbQr, Kind::Fjall], global = true)]
    stores: Vec<Kind>,
    /// Scratch directory (created, and removed at the end).
    #[arg(long, global = true)]
    dir: Option<PathBuf>,
    /// Cache size given to each store, MiB (the same for both).
    #[arg(long, default_value_t = 64, global = true)]
    cache_mib: usize,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Every section below, in order (the default).
    All(Sizes),
    /// Group-commit throughput and latency by batch size, room spread and value size,
    /// with "latest 100" reads running alongside.
    GroupCommit(Sizes),
    /// Appends with trim-to-100-per-room, then an age sweep: space on disk.
    Trim(Sizes),
    /// kill -9 during durable appends, reopen time, acknowledged rows present, double open.
    Crash(Sizes),
    #[command(hide = true)]
    CrashChild {
        #[arg(long, value_enum)]
        store: Kind,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        entries: u64,
    },
    #[command(hide = true)]
    LockProbe {
        #[arg(long, value_enum)]
        store: Kind,
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(clap::Args, Clone, Copy)]
struct Sizes {
    /// Seconds per group-commit run.
    #[arg(long, default_value_t = 1.5)]
    secs: f64,
    /// Appends in the 40-room trim run (trimming active: 100 kept of 25,000 per room).
    #[arg(long, default_value_t = 1_000_000)]
    trim_appends: u64,
    /// Appends in the 10,000-room trim run (200,000 = 20 per room: trimming never fires,
    /// this is the space cost of many small rooms; 1,000,000 takes minutes on redb).
    #[arg(long, default_value_t = 200_000)]
    spread_appends: u64,
    /// Rows in the store when the crash child is killed.
    #[arg(long, default_value_t = 1_000_000)]
    crash_entries: u64,
}

impl Default for Sizes {
    fn default() -> Self {
        Self {
            secs: 1.5,
            trim_appends: 1_000_000,
            spread_appends: 200_000,
            crash_entries: 1_000_000,
        }
    }
}

const PUBLISHERS: usize = 8;
const READ_EVERY: Duration = Duration::from_millis(5);

fn main() -> Result<()> {
    let cli = Cli::parse();
    store::set_cache_bytes(cli.cache_mib * 1024 * 1024);
    match cli.command {
        Some(Cmd::CrashChild { store, dir, entries }) => return crash::child(store, &dir, entries),
        Some(Cmd::LockProbe { store, dir }) => {
            crash::lock_probe(store, &dir);
            return Ok(());
        }
        _ => {}
    }
    let base = cli
        .dir
        .clone()
        .unwrap_or_else(|| std::env::temp_dir().join(format!("store-compare-{}", std::process::id())));
    std::fs::create_dir_all(&base)?;
    let result = run(&cli, &base);
    std::fs::remove_dir_all(&base)?;
    result
}

fn run(cli: &Cli, base: &Path) -> Result<()> {
    let started = Instant::now();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "# store-compare: {cpus} CPUs, {} MiB cache per store, scratch dir {}\n",
        cli.cache_mib,
        base.display()
    );
    let mut scratch = Scratch { base, next: 0 };
    match cli.command.as_ref() {
        None => all(&cli.stores, Sizes::default(), &mut scratch)?,
        Some(Cmd::All(sizes)) => all(&cli.stores, *sizes, &mut scratch)?,
        Some(Cmd::GroupCommit(sizes)) => group_commit(&cli.stores, *sizes, &mut scratch)?,
        Some(Cmd::Trim(sizes)) => trim(&cli.stores, *sizes, &mut scratch)?,
        Some(Cmd::Crash(sizes)) => crash(&cli.stores, *sizes, &mut scratch)?,
        Some(Cmd::CrashChild { .. } | Cmd::LockProbe { .. }) => unreachable!("handled in main"),
    }
    println!("\ntotal wall time: {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn all(stores: &[Kind], sizes: Sizes, scratch: &mut Scratch<'_>) -> Result<()> {
    let timed = |name: &str, section: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        let start = Instant::now();
        section()?;
        println!("\n({name}: {:.0} s)", start.elapsed().as_secs_f64());
        Ok(())
    };
    timed("group commit", &mut || group_commit(stores, sizes, scratch))?;
    timed("trim", &mut || trim(stores, sizes, scratch))?;
    timed("crash", &mut || crash(stores, sizes, scratch))
}

/// Hands out one fresh subdirectory per run and removes it afterwards.
struct Scratch<'a> {
    base: &'a Path,
    next: usize,
}

impl Scratch<'_> {
    fn fresh(&mut self) -> PathBuf {
        self.next += 1;
        self.base.join(format!("run-{}", self.next))
    }
}

fn group_commit(stores: &[Kind], sizes: Sizes, scratch: &mut Scratch<'_>) -> Result<()> {
    println!(
        "## Group commit ({PUBLISHERS} publishers -> 1 writer, one fsync per batch, {:.1} s per run)\n",
        sizes.secs
    );
    println!("Latencies in ms. `batch` is the cap; `avg` is what the writer actually took from the queue");
    println!("(publishers saturate it). `commit` = one batch: build + write + fsync. Reads: `latest 100` of a");
    println!(
        "random room every {} ms, alongside the writes; `rows/read` shows how full those reads were.\n",
        READ_EVERY.as_millis()
    );
    println!(
        "| store | rooms | value | batch | avg | appends/s | commit p50 | commit p99 | read p50 | read p99 | rows/read |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let shapes: [(usize, usize, usize); 3] = [(40, 200, 100), (10_000, 200, 2), (40, 60_000, 10)];
    for (rooms, value_size, prefill_per_room) in shapes {
        for batch in [1, 16, 128, 1024] {
            for &kind in stores {
                let dir = scratch.fresh();
                let spec = Spec {
                    kind,
                    rooms,
                    value_size,
                    batch,
                    publishers: PUBLISHERS,
                    until: Until::Elapsed(Duration::from_secs_f64(sizes.secs)),
                    prefill_per_room,
                    keep: None,
                    read_every: READ_EVERY,
                };
                let out = workload::run(&spec, &dir)?;
                let reads = out.read_us.len().max(1);
                println!(
                    "| {} | {rooms} | {} | {batch} | {:.0} | {:.0} | {} | {} | {} | {} | {:.0} |",
                    kind.label(),
                    bytes(value_size as u64),
                    out.appends as f64 / out.commits.max(1) as f64,
                    out.appends_per_sec(),
                    ms(&out.commit_us, 50.0),
                    ms(&out.commit_us, 99.0),
                    ms(&out.read_us, 50.0),
                    ms(&out.read_us, 99.0),
                    out.read_rows as f64 / reads as f64,
                );
                drop(out);
                std::fs::remove_dir_all(&dir)?;
            }
        }
    }
    Ok(())
}

fn trim(stores: &[Kind], sizes: Sizes, scratch: &mut Scratch<'_>) -> Result<()> {
    let keep = workload::LATEST as u64;
    println!("\n## Trim to the newest {keep} per room, then age sweep (200 B values, batch 1024)\n");
    println!(
        "`live` = rows left after trimming; `logical` = their keys + values. The sweep deletes rows older than the"
    );
    println!("median timestamp of the live rows (about half of them). Sizes are bytes allocated on disk (du);");
    println!("`after compact` is measured with the store closed (redb `compact()`, fjall `major_compact()`).");
    println!("`jnl` = part of it in fjall's journal files, which are only dropped when the journal rotates.\n");
    println!(
        "| store | rooms | appends | appends/s | commit p99 ms | read p50 ms | read p99 ms | live | logical | on disk | amplification | sweep deleted | sweep s | after sweep | compact s | after compact |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (rooms, appends) in [(40, sizes.trim_appends), (10_000, sizes.spread_appends)] {
        // redb with quick_repair differs only in commit protocol, not in space: skip it here.
        for &kind in stores.iter().filter(|&&k| k != Kind::RedbQr) {
            let dir = scratch.fresh();
            let spec = Spec {
                kind,
                rooms,
                value_size: 200,
                batch: 1024,
                publishers: PUBLISHERS,
                until: Until::Appends(appends),
                prefill_per_room: 0,
                keep: Some(keep),
                read_every: READ_EVERY,
            };
            let mut out = workload::run(&spec, &dir)?;
            let live = out.store.count()?;
            let key_bytes: usize = out.rooms.iter().map(|r| r.len() + 8).sum::<usize>() / out.rooms.len();
            let logical = live * (200 + key_bytes as u64);
            let on_disk = store::disk_usage(&dir)?;

            let cutoff = out.clock - live / 2;
            let start = Instant::now();
            let deleted = out.store.sweep(&out.rooms, cutoff)?;
            let sweep_time = start.elapsed();
            let after_sweep = store::disk_usage(&dir)?;

            let start = Instant::now();
            match std::sync::Arc::get_mut(&mut out.store) {
                Some(store) => store.compact()?,
                None => anyhow::bail!("store still shared after the run"),
            }
            let compact_time = start.elapsed();
            let (kind, appended, appends_per_sec) = (kind, out.appends, out.appends_per_sec());
            let (commit_p99, read_p50, read_p99) =
                (ms(&out.commit_us, 99.0), ms(&out.read_us, 50.0), ms(&out.read_us, 99.0));
            // Closed, so files a store deletes lazily (fjall's obsolete tables) are gone.
            drop(out);
            let after_compact = store::disk_usage(&dir)?;
            println!(
                "| {} | {rooms} | {appended} | {:.0} | {} | {} | {} | {live} | {} | {} | {:.1}x | {deleted} | {:.2} | {} | {:.2} | {} |",
                kind.label(),
                appends_per_sec,
                commit_p99,
                read_p50,
                read_p99,
                bytes(logical),
                with_journal(on_disk),
                on_disk.0 as f64 / logical.max(1) as f64,
                sweep_time.as_secs_f64(),
                with_journal(after_sweep),
                compact_time.as_secs_f64(),
                with_journal(after_compact),
            );
            std::fs::remove_dir_all(&dir)?;
        }
    }
    Ok(())
}

fn crash(stores: &[Kind], sizes: Sizes, scratch: &mut Scratch<'_>) -> Result<()> {
    println!(
        "\n## kill -9 during durable appends ({} rows, 40 rooms, 200 B, batch 1024)\n",
        sizes.crash_entries
    );
    println!(
        "`acked` = rows whose commit had returned when SIGKILL was sent; `after kill` = rows found on reopen (must be >= acked).\n"
    );
    println!("| store | fill s | acked | after kill | open after kill | clean open | on disk |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut locks = Vec::new();
    for &kind in stores {
        let dir = scratch.fresh();
        let report = crash::run(kind, &dir, sizes.crash_entries)?;
        println!(
            "| {} | {:.1} | {} | {} | {:.0} ms | {:.0} ms | {} |",
            kind.label(),
            report.fill.as_secs_f64(),
            report.entries_acked,
            report.rows_after_kill,
            report.open_after_kill.as_secs_f64() * 1000.0,
            report.open_clean.as_secs_f64() * 1000.0,
            bytes(report.size_allocated),
        );
        locks.push((kind, report.second_open_same_process, report.second_open_other_process));
        std::fs::remove_dir_all(&dir)?;
    }
    println!("\nSecond open of a directory that is already open:\n");
    println!("| store | same process | other process |");
    println!("|---|---|---|");
    for (kind, same, other) in locks {
        println!("| {} | `{same}` | `{other}` |", kind.label());
    }
    Ok(())
}

fn ms(hist: &Histogram<u64>, quantile: f64) -> String {
    if hist.is_empty() {
        return "-".to_owned();
    }
    let value = hist.value_at_quantile(quantile / 100.0) as f64 / 1000.0;
    if value < 10.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.0}")
    }
}

/// Total size, with the journal share when there is one.
fn with_journal((total, journal): (u64, u64)) -> String {
    if journal == 0 {
        bytes(total)
    } else {
        format!("{} (jnl {})", bytes(total), bytes(journal))
    }
}

fn bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let n = n as f64;
    if n < KIB {
        format!("{n:.0} B")
    } else if n < KIB * KIB {
        format!("{:.0} KiB", n / KIB)
    } else if n < KIB * KIB * KIB {
        format!("{:.1} MiB", n / KIB / KIB)
    } else {
        format!("{:.2} GiB", n / KIB / KIB / KIB)
    }
}
