//! `compare`: reads the JSON result lines of one `run.sh` session and prints Markdown tables of
//! Rookery and NATS figures side by side with the Rookery/NATS ratio; where the same case also
//! ran against other Rookery set-ups (store in memory, one fsync per message) their columns and
//! ratios join the table, and a closing summary gathers the durable store's figures. The
//! `cluster` case has a table of its own: two nodes against one, per node and for Redis.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

/// One metric row: its label, where it lives in the result, and whether higher is better.
struct Metric {
    name: &'static str,
    path: &'static [&'static str],
    higher_is_better: bool,
}

const fn m(name: &'static str, path: &'static [&'static str], higher: bool) -> Metric {
    Metric {
        name,
        path,
        higher_is_better: higher,
    }
}

const MESSAGE_METRICS: &[Metric] = &[
    m("deliveries/s", &["deliveries_per_s"], true),
    m("loss %", &["loss_pct"], false),
    m("latency p50 µs", &["latency_us", "p50"], false),
    m("latency p90 µs", &["latency_us", "p90"], false),
    m("latency p99 µs", &["latency_us", "p99"], false),
    m("latency p99.9 µs", &["latency_us", "p999"], false),
    m("latency max µs", &["latency_us", "max"], false),
    m("server CPU µs/delivery", &["server_cpu_us_per_delivery"], false),
    m("server CPU %", &["server_cpu_pct"], false),
    m("generator CPU %", &["gen_cpu_pct"], false),
    m("other processes CPU %", &["machine", "other_cpu_pct"], false),
    m("interrupt/softirq CPU %", &["machine", "irq_cpu_pct"], false),
];

const CONN_METRICS: &[Metric] = &[
    m("connections held", &["conns_ok"], true),
    m("set-ups/s", &["setup_per_s"], true),
    m("set-up p50 µs", &["setup_latency_us", "p50"], false),
    m("set-up p99 µs", &["setup_latency_us", "p99"], false),
    m("server RSS bytes/conn", &["rss_bytes_per_conn"], false),
    m("server CPU µs/set-up", &["server_cpu_us_per_setup"], false),
    m("set-up time s", &["setup_s"], false),
    m("server CPU s during set-up", &["server_setup", "cpu_s"], false),
    m("generator CPU s during set-up", &["gen_setup_cpu_s"], false),
    m("other processes CPU % (set-up)", &["machine", "other_cpu_pct"], false),
    m("interrupt/softirq CPU % (set-up)", &["machine", "irq_cpu_pct"], false),
];

const AUTH_METRICS: &[Metric] = &[
    m("requests/s", &["requests_per_s"], true),
    m("latency p50 µs", &["latency_us", "p50"], false),
    m("latency p99 µs", &["latency_us", "p99"], false),
    m("latency p99.9 µs", &["latency_us", "p999"], false),
    m("server CPU µs/request", &["server_cpu_us_per_request"], false),
    m("elapsed s", &["elapsed_s"], false),
    m("server CPU s", &["server", "cpu_s"], false),
    m("generator CPU s", &["gen_cpu_s"], false),
];

const REST_METRICS: &[Metric] = &[
    m("publishes/s", &["publishes_per_s"], true),
    m("failed publishes", &["publishes_failed"], false),
    m("latency p50 µs", &["latency_us", "p50"], false),
    m("latency p99 µs", &["latency_us", "p99"], false),
    m("latency p99.9 µs", &["latency_us", "p999"], false),
    m("server CPU µs/publish", &["server_cpu_us_per_publish"], false),
    m("server CPU %", &["server_cpu_pct"], false),
    m("generator CPU %", &["gen_cpu_pct"], false),
    m("other processes CPU %", &["machine", "other_cpu_pct"], false),
    m("interrupt/softirq CPU %", &["machine", "irq_cpu_pct"], false),
];

const FLOOR_METRICS: &[Metric] = &[
    m(
        "paced: sender CPU µs per send (reader asleep)",
        &["sender_cpu_us_per_send"],
        false,
    ),
    m(
        "paced: receiver CPU µs per message",
        &["receiver_cpu_us_per_message"],
        false,
    ),
    m(
        "stream: sender CPU µs per send (back-to-back)",
        &["stream_sender_cpu_us_per_send"],
        false,
    ),
    m(
        "stream: receiver CPU µs per message",
        &["stream_receiver_cpu_us_per_message"],
        false,
    ),
];

fn get<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(*k))
}

/// Median of `xs` (which must not be empty).
fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn num(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// One cell: the value of a single run, or the median and range of several.
fn cell(mut xs: Vec<f64>) -> String {
    match xs.len() {
        0 => "–".to_owned(),
        1 => num(xs[0]),
        _ => {
            let (lo, hi) = (
                xs.iter().copied().fold(f64::INFINITY, f64::min),
                xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            );
            format!("{} ({}–{})", num(median(&mut xs)), num(lo), num(hi))
        }
    }
}

/// Server set-ups as `run.sh` names them (the JSON `target`, set with `--name`), in column
/// order, with their column titles. Unknown names get a column of their own after these.
const SETUPS: &[(&str, &str)] = &[
    ("rookery", "Rookery"),
    ("nats", "NATS"),
    ("rookery-memory", "Rookery, memory store"),
    ("rookery-fsync1", "Rookery, fsync per message"),
    ("rookery-cluster", "Rookery, two nodes"),
];

/// Ratio columns, shown when a table has both set-ups: numerator, denominator, title.
const RATIOS: &[(&str, &str, &str)] = &[
    ("rookery", "nats", "Rookery/NATS"),
    ("rookery", "rookery-memory", "disk/memory"),
    ("rookery", "rookery-fsync1", "group/per-message"),
];

/// The bound on server CPU per delivery, store on disk against store in memory.
const STORE_CPU_TARGET: f64 = 1.10;

/// Results of one suite run: label -> set-up -> results (the last line wins).
type RunResults = BTreeMap<String, BTreeMap<String, Value>>;

/// All runs of a suite, with the order and descriptions of their cases.
struct Suite {
    runs: Vec<RunResults>,
    order: Vec<String>,
    /// label -> (scenario, description)
    describe: BTreeMap<String, (String, String)>,
}

impl Suite {
    fn parse(runs: &[String]) -> Suite {
        let mut suite = Suite {
            runs: Vec::new(),
            order: Vec::new(),
            describe: BTreeMap::new(),
        };
        for text in runs {
            let mut by_label = RunResults::new();
            for line in text.lines().filter(|l| l.starts_with('{')) {
                let Ok(v) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                let label = v["label"].as_str().unwrap_or("?").to_owned();
                let target = v["target"].as_str().unwrap_or("?").to_owned();
                if !suite.order.contains(&label) {
                    suite.order.push(label.clone());
                }
                suite.describe.insert(
                    label.clone(),
                    (
                        v["scenario"].as_str().unwrap_or("").to_owned(),
                        v["description"].as_str().unwrap_or("").to_owned(),
                    ),
                );
                by_label.entry(label).or_default().insert(target, v["results"].clone());
            }
            suite.runs.push(by_label);
        }
        suite
    }

    fn scenario(&self, label: &str) -> &str {
        self.describe.get(label).map_or("", |(s, _)| s.as_str())
    }

    /// The values of one metric of one set-up, one per run that has it.
    fn values(&self, label: &str, target: &str, path: &[&str]) -> Vec<f64> {
        self.runs
            .iter()
            .filter_map(|run| run.get(label)?.get(target))
            .filter_map(|r| get(r, path)?.as_f64())
            .collect()
    }

    /// The median over runs of the per-run ratio `a / b` of one metric, if any run has both.
    fn ratio(&self, label: &str, a: &str, b: &str, path: &[&str]) -> Option<f64> {
        self.ratio_of(label, (a, path), (b, path))
    }

    /// Like [`Suite::ratio`], with a metric of its own for each side: (set-up, path).
    fn ratio_of(&self, label: &str, (a, pa): (&str, &[&str]), (b, pb): (&str, &[&str])) -> Option<f64> {
        let mut ratios: Vec<f64> = self
            .runs
            .iter()
            .filter_map(|run| {
                let t = run.get(label)?;
                let x = get(t.get(a)?, pa)?.as_f64()?;
                let y = get(t.get(b)?, pb)?.as_f64()?;
                (y != 0.0).then_some(x / y)
            })
            .collect();
        (!ratios.is_empty()).then(|| median(&mut ratios))
    }

    /// Whether any run has results of `target` for `label`.
    fn has(&self, label: &str, target: &str) -> bool {
        self.runs
            .iter()
            .any(|run| run.get(label).is_some_and(|t| t.contains_key(target)))
    }

    /// The set-ups shown for `label`: `always` first (present or not, as "–"), then every other
    /// set-up that has results, known ones in [`SETUPS`] order.
    fn columns(&self, label: &str, always: &[&str]) -> Vec<String> {
        let mut cols: Vec<String> = always.iter().map(|s| (*s).to_owned()).collect();
        let mut present: Vec<String> = self
            .runs
            .iter()
            .filter_map(|run| run.get(label))
            .flat_map(|t| t.keys().cloned())
            .collect();
        present.sort_by_key(|t| {
            (
                SETUPS.iter().position(|(n, _)| n == t).unwrap_or(SETUPS.len()),
                t.clone(),
            )
        });
        present.dedup();
        for t in present {
            if !cols.contains(&t) {
                cols.push(t);
            }
        }
        cols
    }
}

fn title(target: &str) -> &str {
    SETUPS.iter().find(|(n, _)| *n == target).map_or(target, |(_, t)| t)
}

fn ratio_cell(r: Option<f64>) -> String {
    r.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}"))
}

/// Prints the comparison of the result lines in `runs` (one JSON Lines text per run of the
/// suite; other lines are ignored). With several runs each cell shows the median and the range,
/// and the ratio is the median of the per-run ratios (each ratio from one run).
pub fn print(runs: &[String]) -> anyhow::Result<()> {
    print!("{}", render(runs)?);
    Ok(())
}

/// The tables [`print`] prints.
fn render(runs: &[String]) -> Result<String, std::fmt::Error> {
    let suite = Suite::parse(runs);
    let mut out = String::new();
    if runs.len() > 1 {
        writeln!(
            out,
            "\n{} runs: each cell is the median (min–max); ratios are medians of per-run ratios.",
            runs.len()
        )?;
    }
    for label in &suite.order {
        let (scenario, description) = suite.describe.get(label).cloned().unwrap_or_default();
        let (metrics, always): (&[Metric], &[&str]) = match scenario.as_str() {
            "fanout" | "rooms" => (MESSAGE_METRICS, &["rookery", "nats"]),
            "conns" => (CONN_METRICS, &["rookery", "nats"]),
            "auth" => (AUTH_METRICS, &["rookery", "nats"]),
            "rest" => (REST_METRICS, &["rookery"]),
            "floor" => (FLOOR_METRICS, &["local"]),
            "cluster" => {
                writeln!(out, "\n### {label}: {description}\n")?;
                cluster_table(&suite, label, &mut out)?;
                continue;
            }
            _ => continue,
        };
        writeln!(out, "\n### {label}: {description}\n")?;
        if scenario == "floor" {
            writeln!(out, "| metric | value |\n|---|---:|")?;
            for m in metrics {
                writeln!(out, "| {} | {} |", m.name, cell(suite.values(label, "local", m.path)))?;
            }
            continue;
        }
        let cols = suite.columns(label, always);
        let ratios: Vec<_> = RATIOS
            .iter()
            .filter(|(a, b, _)| cols.iter().any(|c| c == a) && cols.iter().any(|c| c == b))
            .collect();
        write!(out, "| metric |")?;
        for c in &cols {
            write!(out, " {} |", title(c))?;
        }
        for (_, _, t) in &ratios {
            write!(out, " {t} |")?;
        }
        writeln!(out, " better |")?;
        writeln!(out, "|---|{}---|", "---:|".repeat(cols.len() + ratios.len()))?;
        for m in metrics {
            write!(out, "| {} |", m.name)?;
            for c in &cols {
                write!(out, " {} |", cell(suite.values(label, c, m.path)))?;
            }
            for (a, b, _) in &ratios {
                write!(out, " {} |", ratio_cell(suite.ratio(label, a, b, m.path)))?;
            }
            writeln!(out, " {} |", if m.higher_is_better { "higher" } else { "lower" })?;
        }
    }
    store_summary(&suite, &mut out)?;
    Ok(out)
}

/// One row of the `cluster` table: the figure of the two nodes, and the single-node figure it
/// is judged against (`None`: nothing comparable on one node, e.g. Redis).
struct ClusterRow {
    name: &'static str,
    two: &'static [&'static str],
    one: Option<&'static [&'static str]>,
    higher_is_better: bool,
}

const fn row(
    name: &'static str,
    two: &'static [&'static str],
    one: Option<&'static [&'static str]>,
    higher: bool,
) -> ClusterRow {
    ClusterRow {
        name,
        two,
        one,
        higher_is_better: higher,
    }
}

/// The latency of all subscribers of one node is the reference for each node's subscribers.
const ALL_P50: &[&str] = &["latency_us", "p50"];
const ALL_P99: &[&str] = &["latency_us", "p99"];
const ALL_CPU: &[&str] = &["server_cpu_us_per_delivery"];

const CLUSTER_ROWS: &[ClusterRow] = &[
    row("deliveries/s", &["deliveries_per_s"], Some(&["deliveries_per_s"]), true),
    row("loss %", &["loss_pct"], Some(&["loss_pct"]), false),
    row("latency p50 µs, all subscribers", ALL_P50, Some(ALL_P50), false),
    row("latency p99 µs, all subscribers", ALL_P99, Some(ALL_P99), false),
    row(
        "latency p50 µs, subscribers on A (publisher's node)",
        &["nodes", "a", "latency_us", "p50"],
        Some(ALL_P50),
        false,
    ),
    row(
        "latency p99 µs, subscribers on A (publisher's node)",
        &["nodes", "a", "latency_us", "p99"],
        Some(ALL_P99),
        false,
    ),
    row(
        "latency p50 µs, subscribers on B (cross-node)",
        &["nodes", "b", "latency_us", "p50"],
        Some(ALL_P50),
        false,
    ),
    row(
        "latency p99 µs, subscribers on B (cross-node)",
        &["nodes", "b", "latency_us", "p99"],
        Some(ALL_P99),
        false,
    ),
    row("server CPU µs/delivery, all nodes", ALL_CPU, Some(ALL_CPU), false),
    row(
        "server CPU µs/delivery, node A (its deliveries, publishes on it)",
        &["nodes", "a", "server_cpu_us_per_delivery"],
        Some(ALL_CPU),
        false,
    ),
    row(
        "server CPU µs/delivery, node B (its deliveries)",
        &["nodes", "b", "server_cpu_us_per_delivery"],
        Some(ALL_CPU),
        false,
    ),
    row(
        "server CPU %, node A",
        &["nodes", "a", "server_cpu_pct"],
        Some(&["server_cpu_pct"]),
        false,
    ),
    row("server CPU %, node B", &["nodes", "b", "server_cpu_pct"], None, false),
    row("Redis CPU µs/publish", &["redis", "cpu_us_per_publish"], None, false),
    row("Redis CPU %", &["redis", "cpu_pct"], None, false),
    row(
        "Redis client reads/publish (≈ round trips)",
        &["redis", "reads_per_publish"],
        None,
        false,
    ),
    row(
        "Redis script calls (EVALSHA)/publish",
        &["redis", "script_calls_per_publish"],
        None,
        false,
    ),
    row(
        "Redis commands/publish (inside scripts too)",
        &["redis", "commands_per_publish"],
        None,
        false,
    ),
    row(
        "deployment CPU µs/delivery (nodes + Redis)",
        &["deployment_cpu_us_per_delivery"],
        Some(&["deployment_cpu_us_per_delivery"]),
        false,
    ),
    row("generator CPU %", &["gen_cpu_pct"], Some(&["gen_cpu_pct"]), false),
    row(
        "other processes CPU %",
        &["machine", "other_cpu_pct"],
        Some(&["machine", "other_cpu_pct"]),
        false,
    ),
    row(
        "interrupt/softirq CPU %",
        &["machine", "irq_cpu_pct"],
        Some(&["machine", "irq_cpu_pct"]),
        false,
    ),
];

/// The `cluster` case: one node (`rookery`), two nodes (`rookery-cluster`), and their ratio,
/// where each two-node figure is set against the single-node figure of the same kind (the
/// latency of B's subscribers against that of all subscribers of the single node).
fn cluster_table(suite: &Suite, label: &str, out: &mut String) -> std::fmt::Result {
    const ONE: &str = "rookery";
    const TWO: &str = "rookery-cluster";
    writeln!(
        out,
        "| metric | {} | {} | two nodes/one node | better |\n|---|---:|---:|---:|---|",
        title(ONE),
        title(TWO)
    )?;
    for r in CLUSTER_ROWS {
        let one = r.one.map_or_else(Vec::new, |p| suite.values(label, ONE, p));
        let ratio = r.one.and_then(|p| suite.ratio_of(label, (TWO, r.two), (ONE, p)));
        writeln!(
            out,
            "| {} | {} | {} | {} | {} |",
            r.name,
            cell(one),
            cell(suite.values(label, TWO, r.two)),
            ratio_cell(ratio),
            if r.higher_is_better { "higher" } else { "lower" }
        )?;
    }
    Ok(())
}

/// The durable store's two headline figures, gathered over all cases: server CPU per delivery
/// with the store on disk against in memory (the bound is ≤ 1.10), and REST publish
/// throughput with group commit against one fsync per message. Printed, never asserted.
fn store_summary(suite: &Suite, out: &mut String) -> std::fmt::Result {
    const CPU: &[&str] = &["server_cpu_us_per_delivery"];
    const P99: &[&str] = &["latency_us", "p99"];
    let memory: Vec<&String> = suite
        .order
        .iter()
        .filter(|l| matches!(suite.scenario(l), "fanout" | "rooms"))
        .filter(|l| suite.has(l, "rookery") && suite.has(l, "rookery-memory"))
        .collect();
    if !memory.is_empty() {
        writeln!(
            out,
            "\n### Durable store: disk against memory\n\nServer CPU µs per delivery with the store on disk \
             (`rookery`) and in memory (`rookery-memory`); target disk/memory ≤ {STORE_CPU_TARGET:.2}.\n"
        )?;
        writeln!(
            out,
            "| case | CPU µs/delivery, disk | CPU µs/delivery, memory | disk/memory | within {STORE_CPU_TARGET:.2}? | p99 µs, disk | p99 µs, memory |\n|---|---:|---:|---:|---|---:|---:|"
        )?;
        for label in memory {
            let ratio = suite.ratio(label, "rookery", "rookery-memory", CPU);
            let within = match ratio {
                Some(r) if r <= STORE_CPU_TARGET => "yes",
                Some(_) => "no",
                None => "–",
            };
            writeln!(
                out,
                "| {label} | {} | {} | {} | {within} | {} | {} |",
                cell(suite.values(label, "rookery", CPU)),
                cell(suite.values(label, "rookery-memory", CPU)),
                ratio_cell(ratio),
                cell(suite.values(label, "rookery", P99)),
                cell(suite.values(label, "rookery-memory", P99)),
            )?;
        }
    }
    const RATE: &[&str] = &["publishes_per_s"];
    let rest: Vec<&String> = suite
        .order
        .iter()
        .filter(|l| suite.scenario(l) == "rest")
        .filter(|l| suite.has(l, "rookery") && suite.has(l, "rookery-fsync1"))
        .collect();
    if !rest.is_empty() {
        writeln!(
            out,
            "\n### Durable store: REST publish, group commit against one fsync per message\n\n\
             Publishes/s with the default group commit (`rookery`) and with `[store] commit_max_messages = 1` \
             (`rookery-fsync1`).\n"
        )?;
        writeln!(
            out,
            "| case | publishes/s, group commit | publishes/s, fsync per message | group/per-message | p99 µs, group commit | p99 µs, fsync per message |\n|---|---:|---:|---:|---:|---:|"
        )?;
        for label in rest {
            writeln!(
                out,
                "| {label} | {} | {} | {} | {} | {} |",
                cell(suite.values(label, "rookery", RATE)),
                cell(suite.values(label, "rookery-fsync1", RATE)),
                ratio_cell(suite.ratio(label, "rookery", "rookery-fsync1", RATE)),
                cell(suite.values(label, "rookery", P99)),
                cell(suite.values(label, "rookery-fsync1", P99)),
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_cells() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(cell(vec![]), "–");
        assert_eq!(cell(vec![1.5]), "1.50");
        assert_eq!(cell(vec![100.0, 300.0, 200.0]), "200 (100–300)");
    }

    fn line(label: &str, scenario: &str, target: &str, results: Value) -> String {
        serde_json::json!({"label": label, "scenario": scenario, "target": target, "description": "d", "results": results})
            .to_string()
    }

    fn delivery(cpu: f64) -> Value {
        serde_json::json!({"server_cpu_us_per_delivery": cpu, "deliveries_per_s": 1000.0, "latency_us": {"p99": 900}})
    }

    fn rest(rate: f64) -> Value {
        serde_json::json!({"publishes_per_s": rate, "latency_us": {"p99": 100}})
    }

    #[test]
    fn store_setups_get_columns_ratios_and_a_summary() {
        let run = [
            line("rooms", "rooms", "rookery", delivery(11.0)),
            line("rooms", "rooms", "rookery-memory", delivery(10.0)),
            line("rooms", "rooms", "nats", delivery(20.0)),
            line("fanout", "fanout", "rookery", delivery(12.0)),
            line("fanout", "fanout", "rookery-memory", delivery(10.0)),
            line("rest", "rest", "rookery", rest(8000.0)),
            line("rest", "rest", "rookery-fsync1", rest(1000.0)),
        ]
        .join("\n");
        let out = render(&[run]).unwrap();
        assert!(
            out.contains("| metric | Rookery | NATS | Rookery, memory store | Rookery/NATS | disk/memory | better |"),
            "{out}"
        );
        assert!(
            out.contains("| server CPU µs/delivery | 11.00 | 20.00 | 10.00 | 0.55 | 1.10 | lower |"),
            "{out}"
        );
        assert!(
            out.contains("| rooms | 11.00 | 10.00 | 1.10 | yes | 900 | 900 |"),
            "{out}"
        );
        assert!(out.contains("| fanout | 12.00 | 10.00 | 1.20 | no |"), "{out}");
        assert!(
            out.contains("| metric | Rookery | Rookery, fsync per message | group/per-message | better |"),
            "{out}"
        );
        assert!(out.contains("| rest | 8000 | 1000 | 8.00 | 100 | 100 |"), "{out}");
    }

    #[test]
    fn the_cluster_case_sets_each_node_against_one_node() {
        let one = serde_json::json!({
            "deliveries_per_s": 1000.0, "latency_us": {"p50": 100, "p99": 400},
            "server_cpu_us_per_delivery": 10.0, "deployment_cpu_us_per_delivery": 10.0,
            "nodes": {"a": {"latency_us": {"p50": 100}, "server_cpu_us_per_delivery": 10.0}},
        });
        let two = serde_json::json!({
            "deliveries_per_s": 1000.0, "latency_us": {"p50": 150, "p99": 600},
            "server_cpu_us_per_delivery": 12.0, "deployment_cpu_us_per_delivery": 15.0,
            "nodes": {
                "a": {"latency_us": {"p50": 120, "p99": 500}, "server_cpu_us_per_delivery": 13.0},
                "b": {"latency_us": {"p50": 200, "p99": 800}, "server_cpu_us_per_delivery": 11.0},
            },
            "redis": {"cpu_us_per_publish": 40.0, "reads_per_publish": 1.02},
        });
        let run = [
            line("cluster", "cluster", "rookery", one),
            line("cluster", "cluster", "rookery-cluster", two),
        ]
        .join("\n");
        let out = render(&[run]).unwrap();
        assert!(
            out.contains("| metric | Rookery | Rookery, two nodes | two nodes/one node | better |"),
            "{out}"
        );
        // B's subscribers against all subscribers of the single node.
        assert!(
            out.contains("| latency p50 µs, subscribers on B (cross-node) | 100 | 200 | 2.00 | lower |"),
            "{out}"
        );
        assert!(
            out.contains("| latency p99 µs, subscribers on A (publisher's node) | 400 | 500 | 1.25 | lower |"),
            "{out}"
        );
        assert!(
            out.contains("| server CPU µs/delivery, node B (its deliveries) | 10.00 | 11.00 | 1.10 | lower |"),
            "{out}"
        );
        assert!(
            out.contains("| Redis client reads/publish (≈ round trips) | – | 1.02 | – | lower |"),
            "{out}"
        );
        assert!(
            out.contains("| deployment CPU µs/delivery (nodes + Redis) | 10.00 | 15.00 | 1.50 | lower |"),
            "{out}"
        );
    }

    #[test]
    fn without_other_setups_the_tables_keep_their_shape() {
        let run = [
            line("auth", "auth", "rookery", serde_json::json!({"requests_per_s": 5.0})),
            line("rooms", "rooms", "rookery", delivery(11.0)),
            line("rooms", "rooms", "nats", delivery(22.0)),
        ]
        .join("\n");
        let out = render(&[run]).unwrap();
        assert!(
            out.contains("| metric | Rookery | NATS | Rookery/NATS | better |\n|---|---:|---:|---:|---|"),
            "{out}"
        );
        assert!(out.contains("| requests/s | 5.00 | – | – | higher |"), "{out}");
        assert!(
            out.contains("| server CPU µs/delivery | 11.00 | 22.00 | 0.50 | lower |"),
            "{out}"
        );
        assert!(!out.contains("Durable store"), "{out}");
    }
}
