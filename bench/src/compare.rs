//! `compare`: reads the JSON result lines of one `run.sh` session and prints a Markdown table of
//! Rookery and NATS figures side by side with the Rookery/NATS ratio.

use std::collections::BTreeMap;

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

/// Prints the comparison of the result lines in `runs` (one JSON Lines text per run of the
/// suite; other lines are ignored). With several runs each cell shows the median and the range,
/// and the ratio is the median of the per-run ratios (each ratio from one run).
pub fn print(runs: &[String]) {
    // One map per run: label -> target -> results (the last line wins).
    let mut parsed: Vec<BTreeMap<String, BTreeMap<String, Value>>> = Vec::new();
    let mut order: Vec<String> = Vec::new();
    let mut describe: BTreeMap<String, (String, String)> = BTreeMap::new();
    for text in runs {
        let mut by_label: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with('{')) {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let label = v["label"].as_str().unwrap_or("?").to_owned();
            let target = v["target"].as_str().unwrap_or("?").to_owned();
            if !order.contains(&label) {
                order.push(label.clone());
            }
            describe.insert(
                label.clone(),
                (
                    v["scenario"].as_str().unwrap_or("").to_owned(),
                    v["description"].as_str().unwrap_or("").to_owned(),
                ),
            );
            by_label.entry(label).or_default().insert(target, v["results"].clone());
        }
        parsed.push(by_label);
    }
    if runs.len() > 1 {
        println!(
            "\n{} runs: each cell is the median (min–max); ratios are medians of per-run ratios.",
            runs.len()
        );
    }
    for label in order {
        let (scenario, description) = describe.get(&label).cloned().unwrap_or_default();
        let metrics = match scenario.as_str() {
            "fanout" | "rooms" => MESSAGE_METRICS,
            "conns" => CONN_METRICS,
            "auth" => AUTH_METRICS,
            "floor" => FLOOR_METRICS,
            _ => continue,
        };
        println!("\n### {label}: {description}\n");
        let values = |target: &str, m: &Metric| -> Vec<f64> {
            parsed
                .iter()
                .filter_map(|run| run.get(&label)?.get(target))
                .filter_map(|r| get(r, m.path)?.as_f64())
                .collect()
        };
        if scenario == "floor" {
            println!("| metric | value |\n|---|---:|");
            for m in metrics {
                println!("| {} | {} |", m.name, cell(values("local", m)));
            }
            continue;
        }
        println!("| metric | Rookery | NATS | Rookery/NATS | better |\n|---|---:|---:|---:|---|");
        for m in metrics {
            let ratios: Vec<f64> = parsed
                .iter()
                .filter_map(|run| {
                    let t = run.get(&label)?;
                    let a = get(t.get("rookery")?, m.path)?.as_f64()?;
                    let b = get(t.get("nats")?, m.path)?.as_f64()?;
                    (b != 0.0).then_some(a / b)
                })
                .collect();
            let ratio = if ratios.is_empty() {
                "–".to_owned()
            } else {
                let mut r = ratios;
                format!("{:.2}", median(&mut r))
            };
            let better = if m.higher_is_better { "higher" } else { "lower" };
            println!(
                "| {} | {} | {} | {ratio} | {better} |",
                m.name,
                cell(values("rookery", m)),
                cell(values("nats", m))
            );
        }
    }
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
}
