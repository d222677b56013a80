//! Reads CPU time and resident memory from `/proc`, and raises the descriptor limit.
//!
//! The load generator reports the *server's* CPU time and RSS (by pid, read before and after a
//! run) next to its own CPU time, so that every figure can be judged against what limited it.

use std::time::Duration;

/// CPU time and memory of one process at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// User-mode CPU time.
    pub user: Duration,
    /// Kernel-mode CPU time.
    pub system: Duration,
    /// Resident set size in KiB (`VmRSS`).
    pub rss_kib: u64,
}

/// Difference between two samples of the same process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Delta {
    pub user: Duration,
    pub system: Duration,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
}

impl Delta {
    /// Computes `after - before` for the CPU times and keeps both RSS readings.
    pub fn between(before: Sample, after: Sample) -> Self {
        Self {
            user: after.user.saturating_sub(before.user),
            system: after.system.saturating_sub(before.system),
            rss_before_kib: before.rss_kib,
            rss_after_kib: after.rss_kib,
        }
    }

    /// The deltas of several processes added up (their CPU times and their RSS readings), as
    /// if they were one: the nodes of a deployment.
    pub fn sum(deltas: impl IntoIterator<Item = Delta>) -> Self {
        deltas.into_iter().fold(Delta::default(), |a, d| Delta {
            user: a.user + d.user,
            system: a.system + d.system,
            rss_before_kib: a.rss_before_kib + d.rss_before_kib,
            rss_after_kib: a.rss_after_kib + d.rss_after_kib,
        })
    }

    /// User plus system time spent between the samples.
    pub fn cpu(&self) -> Duration {
        self.user + self.system
    }

    /// The deltas as a JSON object (seconds and KiB).
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "user_s": self.user.as_secs_f64(),
            "system_s": self.system.as_secs_f64(),
            "cpu_s": self.cpu().as_secs_f64(),
            "rss_before_kib": self.rss_before_kib,
            "rss_after_kib": self.rss_after_kib,
        })
    }
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`; `None` for "self".
pub fn sample(pid: Option<u32>) -> std::io::Result<Sample> {
    let base = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_owned(),
    };
    let (user, system) = stat_times(&format!("{base}/stat"))?;
    let status = std::fs::read_to_string(format!("{base}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok(Sample { user, system, rss_kib })
}

/// Reads utime and stime (fields 14 and 15) from a `stat` file such as `/proc/thread-self/stat`.
pub fn stat_times(path: &str) -> std::io::Result<(Duration, Duration)> {
    let text = std::fs::read_to_string(path)?;
    // The command name (field 2) is in parentheses and may contain spaces: skip past it.
    let after = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or_else(|| std::io::Error::other("malformed stat"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state), so utime (14) is index 11 and stime (15) index 12.
    let ticks = |i: usize| -> std::io::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| std::io::Error::other("malformed stat"))
    };
    let hz = rustix::param::clock_ticks_per_second().max(1);
    let to_dur = |t: u64| Duration::from_nanos(t.saturating_mul(1_000_000_000) / hz);
    Ok((to_dur(ticks(11)?), to_dur(ticks(12)?)))
}

/// Precise CPU time (user + system) of this whole process.
pub fn own_cpu() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Precise CPU time (user + system) of the calling thread.
pub fn thread_cpu() -> Duration {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Raises the soft open-files limit to the hard limit and returns the new soft limit.
pub fn raise_nofile() -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let lim = getrlimit(Resource::Nofile);
    let wanted = Rlimit {
        current: lim.maximum,
        maximum: lim.maximum,
    };
    if setrlimit(Resource::Nofile, wanted).is_ok() {
        lim.maximum.unwrap_or(u64::MAX)
    } else {
        lim.current.unwrap_or(u64::MAX)
    }
}

/// Machine-wide CPU time since boot, summed over CPUs (from `/proc/stat`).
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineCpu {
    /// CPU time of every other process (user, system and reaped children), from `/proc/PID/stat`.
    pub others: Duration,
    /// Time in interrupt and softirq context. Loopback TCP receive processing often lands here
    /// rather than in the sending process's system time.
    pub irq: Duration,
    /// Time the hypervisor gave to other guests.
    pub steal: Duration,
}

impl MachineCpu {
    /// Reads the aggregate `cpu` line of `/proc/stat`, and sums the CPU time of every process
    /// except those in `exclude` (the processes under test) and this one.
    pub fn now(exclude: &[u32]) -> Self {
        let others = others_cpu(exclude);
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let line = text.lines().find(|l| l.starts_with("cpu ")).unwrap_or("");
        // user nice system idle iowait irq softirq steal ...
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        let at = |i: usize| v.get(i).copied().unwrap_or(0);
        let hz = rustix::param::clock_ticks_per_second().max(1);
        let d = |t: u64| Duration::from_nanos(t.saturating_mul(1_000_000_000) / hz);
        Self {
            others,
            irq: d(at(5) + at(6)),
            steal: d(at(7)),
        }
    }

    /// `self - earlier`.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            others: self.others.saturating_sub(earlier.others),
            irq: self.irq.saturating_sub(earlier.irq),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }

    /// Percent-of-one-CPU figures for a window, as JSON: other processes (everything but the
    /// processes under test and the generator), interrupt/softirq time, and steal.
    pub fn to_json(self, window: Duration) -> serde_json::Value {
        let pct = |d: Duration| (d.as_secs_f64() * 1e4 / window.as_secs_f64().max(1e-9)).round() / 100.0;
        serde_json::json!({
            "other_cpu_pct": pct(self.others),
            "irq_cpu_pct": pct(self.irq),
            "steal_cpu_pct": pct(self.steal),
        })
    }
}

/// Sum of utime, stime, cutime and cstime over all processes but `exclude` and this one.
fn others_cpu(exclude: &[u32]) -> Duration {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    let mut ticks = 0u64;
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me || exclude.contains(&pid) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(after) = text.rfind(')').map(|i| &text[i + 1..]) else {
            continue;
        };
        // Fields 14-17 (utime, stime, cutime, cstime) are indices 11-14 after the name.
        ticks += after
            .split_whitespace()
            .skip(11)
            .take(4)
            .filter_map(|f| f.parse::<u64>().ok())
            .sum::<u64>();
    }
    let hz = rustix::param::clock_ticks_per_second().max(1);
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / hz)
}
