#!/usr/bin/env bash
# Memory after load, per allocator (loopback only, bounded in time; BENCHMARKS.md "Memory after load").
#
# Builds the release binary with glibc's malloc and with jemalloc (feature `jemalloc`), then for
# each variant starts a fresh server, runs bench/alloc_churn.py against it (thousands of
# connections with large client_data in observable rooms with history, large messages, then all
# closed; twice), stops the server and prints one table row. Everything it starts is stopped on
# exit, also on error or Ctrl-C.
#
# Environment knobs:
#   VARIANTS="glibc jemalloc"  which rows to run (glibc glibc-arena2 jemalloc jemalloc-decay1s; "" none)
#   ROOKERY_GLIBC=path / ROOKERY_JEMALLOC=path  use these binaries instead of building
#   CHURN_ARGS="--conns 3000"  extra arguments for alloc_churn.py
#   PORT=18090
#   CPU_RUNS=3  afterwards, the hot-path cost per allocator: rookery-bench's fanout (1000
#               subscribers, 200 messages/s, 5 s) against glibc and jemalloc in turn, CPU_RUNS
#               times each, printing server CPU µs per delivery (0 skips it)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
VARIANTS=${VARIANTS-"glibc glibc-arena2 jemalloc jemalloc-decay1s"}
CPU_RUNS=${CPU_RUNS:-3}
PORT=${PORT:-18090}
OUT=$(mktemp -d)
SERVER_PID=""

cleanup() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$OUT"
}
trap cleanup EXIT

mkdir -p target/alloc-churn
if [[ -z ${ROOKERY_GLIBC:-} ]]; then
  cargo build --release -p rookery --bin rookery >&2
  cp target/release/rookery target/alloc-churn/rookery-glibc
  ROOKERY_GLIBC=target/alloc-churn/rookery-glibc
fi
if [[ -z ${ROOKERY_JEMALLOC:-} ]]; then
  cargo build --release -p rookery --bin rookery --features jemalloc >&2
  cp target/release/rookery target/alloc-churn/rookery-jemalloc
  ROOKERY_JEMALLOC=target/alloc-churn/rookery-jemalloc
fi

cat >"$OUT/churn.toml" <<EOF
listen = "127.0.0.1:$PORT"
static_dir = "$ROOT/static"
policies_dir = "$ROOT/policies"
data_dir = "$OUT/data"

[limits]
publish_rate_per_second = 1000000
publish_burst = 1000000
max_connections_per_ip = 0
max_http_connections = 0
max_http_connections_per_ip = 0
ping_interval_seconds = 600

[[channel]]
id = "churn"
secret = "churn-secret"
require_auth = false
history_size = 50
EOF

run_variant() {
  local name=$1 binary=$2
  shift 2
  env "$@" "$binary" --config "$OUT/churn.toml" serve >"$OUT/$name.stdout" 2>"$OUT/$name.stderr" &
  SERVER_PID=$!
  for _ in $(seq 100); do
    grep -q "listening" "$OUT/$name.stdout" 2>/dev/null && break
    sleep 0.1
  done
  grep -q "listening" "$OUT/$name.stdout" || { cat "$OUT/$name.stderr" >&2; exit 1; }
  # shellcheck disable=SC2086
  local result
  result=$(timeout 600 python3 bench/alloc_churn.py --port "$PORT" --pid "$SERVER_PID" ${CHURN_ARGS:-})
  kill -TERM "$SERVER_PID"
  wait "$SERVER_PID" || true
  SERVER_PID=""
  python3 - "$name" "$result" <<'PY'
import json, sys
name, result = sys.argv[1], json.loads(sys.argv[2])
cells = [f"{result['idle_mib']:.0f}"]
for c in result["cycles"]:
    cells += [f"{c['attack_mib']:.0f}", f"{c['closed_2s_mib']:.0f}", f"{c['closed_15s_mib']:.0f}", f"{c['closed_30s_mib']:.0f}"]
cells.append(f"{result['cycles'][-1]['peak_mib']:.0f}")
print(f"| {name} | " + " | ".join(cells) + " |", flush=True)
PY
}

[[ -n $VARIANTS ]] && echo "| allocator | idle | 1: loaded | 1: closed +2 s | +15 s | +30 s | 2: loaded | 2: closed +2 s | +15 s | +30 s | peak |"
[[ -n $VARIANTS ]] && echo "|---|---|---|---|---|---|---|---|---|---|---|"
for variant in $VARIANTS; do
  case $variant in
    glibc) run_variant glibc "$ROOKERY_GLIBC" ;;
    glibc-arena2) run_variant "glibc MALLOC_ARENA_MAX=2" "$ROOKERY_GLIBC" MALLOC_ARENA_MAX=2 ;;
    jemalloc) run_variant jemalloc "$ROOKERY_JEMALLOC" ;;
    jemalloc-decay1s) run_variant "jemalloc dirty_decay_ms:1000" "$ROOKERY_JEMALLOC" _RJEM_MALLOC_CONF=dirty_decay_ms:1000,muzzy_decay_ms:0 ;;
    *) echo "unknown variant $variant" >&2; exit 2 ;;
  esac
done

[[ $CPU_RUNS == 0 ]] && exit 0
cargo build --release -p rookery-bench >&2
PIN_SERVER=() PIN_GEN=()
if command -v taskset >/dev/null && [[ $(nproc) -ge 2 ]]; then PIN_SERVER=(taskset -c 0) PIN_GEN=(taskset -c 1); fi
echo
echo "| allocator | run | server CPU µs/delivery | deliveries |"
echo "|---|---|---|---|"
for run in $(seq "$CPU_RUNS"); do
  for variant in glibc jemalloc; do
    binary=$ROOKERY_GLIBC
    [[ $variant == jemalloc ]] && binary=$ROOKERY_JEMALLOC
    rm -rf target/bench-data
    log=$OUT/cpu-$variant-$run.log
    RUST_LOG=warn "${PIN_SERVER[@]}" "$binary" serve --config bench/rookery-bench.toml >"$log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 100); do grep -q "listening" "$log" 2>/dev/null && break; sleep 0.1; done
    grep -q "listening" "$log" || { cat "$log" >&2; exit 1; }
    line=$("${PIN_GEN[@]}" target/release/rookery-bench fanout --target rookery --addr 127.0.0.1:18080 \
      --server-pid "$SERVER_PID" --subscribers 1000 --rate 200 --duration 5 --drain 2 | grep '^{')
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || true
    SERVER_PID=""
    python3 - "$variant" "$run" "$line" <<'PY'
import json, sys
variant, run, line = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
r = line["results"]
print(f"| {variant} | {run} | {r['server_cpu_us_per_delivery']:.3f} | {r.get('delivered', '?')} |", flush=True)
PY
  done
done
