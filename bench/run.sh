#!/usr/bin/env bash
# Rookery vs nats-server benchmark suite (loopback only, bounded in time).
#
# Installs nats-server (and for `cluster` redis-server) if missing, builds release binaries, then for every scenario starts a
# fresh server for each server set-up (below), runs the load generator against it, stops it, and
# finally prints the tables of all set-ups from the same run. Results: $OUT/run-N/results.jsonl, logs beside them, report: $OUT/report.md.
#
# The server is pinned to CPU $SERVER_CPU and the load generator to CPU $GEN_CPU (on a machine
# with at least two CPUs), so each side gets one core and neither steals the other's. In the
# `cluster` case both nodes and their Redis share CPU $SERVER_CPU: on two CPUs the two-node
# figures measure what a cluster costs, not how it scales.
#
# Environment knobs:
#   QUICK=1             small, short runs (a smoke test of the whole pipeline, ~1 minute)
#   ONLY="fanout conns" run only these scenario groups
#                       (floor latency fanout-light fanout fanout-hot fanout-sat fanout-multi rooms conns auth rest
#                       cluster)
#   ROOKERY_BIN=path    use this rookery binary instead of building one (must be a release build
#                       for meaningful figures)
#   CARGO_TARGET_DIR    where to build (default: target)
#   OUT=dir             where to write results (default: target/bench-results/<timestamp>)
#   SERVER_CPU / GEN_CPU  CPU numbers for pinning (default 0 and 1)
#   DURATION=secs       publishing time of each message scenario (default 10)
#   TARGETS="nats"      server set-ups to run against (default "rookery rookery-memory rookery-fsync1 nats
#                       rookery-cluster"):
#                         rookery         bench/rookery-bench.toml: the durable store on disk (the default)
#                         rookery-memory  bench/rookery-bench-memory.toml: the same store in memory; only
#                                         for the groups in MEMORY_GROUPS, to price the store (disk/memory)
#                         rookery-fsync1  bench/rookery-bench-fsync1.toml: one commit and fsync per message;
#                                         only for `rest`, against group commit
#                         nats            bench/nats-bench.conf (not for `auth` and `rest`, Rookery's HTTP API)
#                         rookery-cluster bench/rookery-bench-cluster.toml: two nodes (A on $ROOKERY_PORT, B on
#                                         $ROOKERY_B_PORT) and a redis-server on $REDIS_PORT; only for `cluster`,
#                                         whose other set-up is `rookery` (one node, the same clients)
#   MEMORY_GROUPS="…"   groups also run against rookery-memory (default "fanout fanout-multi rooms")
#   REST_CONC / REST_ROOMS  clients and rooms of the `rest` group (default 16 and 100)
#   CLUSTER_SUBS / CLUSTER_PUBS / CLUSTER_RATE  the `cluster` load (default 1000 subscribers, 1
#                       publisher at 50/s: the `fanout` case, below saturation)
#   RUNS=3              repeat the whole suite; the report shows medians and ranges (default 1)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
QUICK=${QUICK:-0}
ONLY=${ONLY:-"floor latency fanout-light fanout fanout-hot fanout-sat fanout-multi rooms conns auth rest cluster"}
OUT=${OUT:-$ROOT/target/bench-results/$(date +%Y%m%d-%H%M%S)}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SERVER_CPU=${SERVER_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
DURATION=${DURATION:-10}
TARGETS=${TARGETS:-"rookery rookery-memory rookery-fsync1 nats rookery-cluster"}
MEMORY_GROUPS=${MEMORY_GROUPS:-"fanout fanout-multi rooms"}
REST_CONC=${REST_CONC:-16}
REST_ROOMS=${REST_ROOMS:-100}
RUNS=${RUNS:-1}
ROOKERY_PORT=18080
NATS_WS_PORT=18081
ROOKERY_B_PORT=18082 # node B of `rookery-cluster`
REDIS_PORT=18379     # its Redis (bench/rookery-bench-cluster.toml)
mkdir -p "$OUT"

if [[ $QUICK == 1 ]]; then
  DURATION=2
  FANOUT_SUBS=200 LIGHT_RATE=20 FANOUT_RATE=50 HOT_RATE=200 SAT_RATE=1000 MULTI_SUBS=50 MULTI_PUBS=5 MULTI_RATE=100
  ROOMS=200 ROOMS_RATE=2 CONNS=1000 AUTH_SECS=2
  CLUSTER_SUBS=${CLUSTER_SUBS:-200}
else
  FANOUT_SUBS=1000 LIGHT_RATE=20 FANOUT_RATE=50 HOT_RATE=200 SAT_RATE=1000 MULTI_SUBS=100 MULTI_PUBS=10 MULTI_RATE=100
  ROOMS=2000 ROOMS_RATE=2 CONNS=15000 AUTH_SECS=5
  CLUSTER_SUBS=${CLUSTER_SUBS:-1000}
fi
CLUSTER_PUBS=${CLUSTER_PUBS:-1}
CLUSTER_RATE=${CLUSTER_RATE:-50}

log() { printf '\n### %s\n' "$*" >&2; }
wants() { [[ " $ONLY " == *" $1 "* ]]; }

# --- prerequisites ----------------------------------------------------------------------------
if ! command -v nats-server >/dev/null; then
  log "installing nats-server"
  apt-get install -y nats-server >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y nats-server >/dev/null; }
fi
if wants cluster && [[ " $TARGETS " == *" rookery-cluster "* ]] && ! command -v redis-server >/dev/null; then
  log "installing redis-server"
  apt-get install -y redis-server >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y redis-server >/dev/null; }
fi
command -v taskset >/dev/null || SERVER_CPU="" # util-linux missing: no pinning
if [[ $(nproc) -lt 2 ]]; then SERVER_CPU=""; fi
# Command prefixes that pin a process (taskset execs the command, so $! is the server's pid).
PIN_SERVER=() PIN_GEN=()
if [[ -n $SERVER_CPU ]]; then PIN_SERVER=(taskset -c "$SERVER_CPU") PIN_GEN=(taskset -c "$GEN_CPU"); fi

# The Rookery set-ups differ from rookery-bench.toml only in their own lines; a drifted copy would
# compare two configurations that differ in more than the store.
config_core() { # file [own lines...]: the file without comments, blank lines and its own lines
  grep -v -e '^#' -e '^$' "$1" | grep -v -x -F -f <(printf '%s\n' "${@:2}") || true
}
check_variant() { # file own-lines...
  if ! diff <(config_core bench/rookery-bench.toml) <(config_core "$@") >&2; then
    echo "$1 differs from bench/rookery-bench.toml in more than its own lines (${*:2}); keep them in step" >&2
    exit 1
  fi
}
check_variant bench/rookery-bench-memory.toml 'history_store = "memory"'
check_variant bench/rookery-bench-fsync1.toml '[store]' 'commit_max_messages = 1'
check_variant bench/rookery-bench-cluster.toml '[cluster]' "redis_url = \"redis://127.0.0.1:$REDIS_PORT\""

log "building release binaries"
if [[ -n ${ROOKERY_BIN:-} || " $TARGETS " != *" rookery"* ]]; then
  CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p rookery-bench
else
  CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -p rookery -p rookery-bench
  ROOKERY_BIN=$TARGET_DIR/release/rookery
fi
BENCH=$TARGET_DIR/release/rookery-bench

# Raise the descriptor limit as far as allowed (this sandbox caps it at 20,000 per process).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- server lifecycle -------------------------------------------------------------------------
# SERVER_PID is the server (node A of `rookery-cluster`); NODE_B_PID and REDIS_PID the rest of a
# two-node set-up. EXTRA_ARGS are the generator's arguments for those (empty otherwise).
SERVER_PID="" NODE_B_PID="" REDIS_PID="" EXTRA_ARGS=()
stop_pid() { # pid
  if [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; then
    kill "$1" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
  fi
}
stop_server() {
  # The nodes before their Redis, so that they leave it tidily.
  stop_pid "$SERVER_PID"
  stop_pid "$NODE_B_PID"
  stop_pid "$REDIS_PID"
  SERVER_PID="" NODE_B_PID="" REDIS_PID="" EXTRA_ARGS=()
}
trap stop_server EXIT

wait_for_log() { # file pattern [pid, default $SERVER_PID]
  local pid=${3:-$SERVER_PID}
  for _ in $(seq 100); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$1" >&2; return 1; }
    sleep 0.1
  done
  echo "server did not become ready; log:" >&2; cat "$1" >&2; return 1
}

rookery_config() { # set-up name -> its configuration file
  case $1 in
    rookery) echo bench/rookery-bench.toml ;;
    rookery-memory) echo bench/rookery-bench-memory.toml ;;
    rookery-fsync1) echo bench/rookery-bench-fsync1.toml ;;
    rookery-cluster) echo bench/rookery-bench-cluster.toml ;;
    *) echo "unknown server set-up $1" >&2; return 1 ;;
  esac
}

start_server() { # set-up tag
  local logf=$RUN_DIR/$1-$2.log config
  # Every server starts with an empty store: no history left by an earlier case.
  rm -rf "$ROOT/target/bench-data" "$ROOT/target/bench-data-b"
  case $1 in
    rookery-cluster)
      # A throwaway Redis: loopback, no persistence, the eviction policy docs/cluster.md asks for.
      "${PIN_SERVER[@]}" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
        --maxmemory-policy noeviction >"$RUN_DIR/$1-$2-redis.log" 2>&1 &
      REDIS_PID=$!
      wait_for_log "$RUN_DIR/$1-$2-redis.log" "Ready to accept connections" "$REDIS_PID"
      config=$(rookery_config "$1")
      RUST_LOG=${RUST_LOG:-warn} "${PIN_SERVER[@]}" "$ROOKERY_BIN" serve --config "$config" >"$logf" 2>&1 &
      SERVER_PID=$!
      wait_for_log "$logf" "rookery listening on"
      # Node B: the same file, its own address and (unused for history, but per node) data dir.
      RUST_LOG=${RUST_LOG:-warn} "${PIN_SERVER[@]}" "$ROOKERY_BIN" serve --config "$config" \
        --listen "127.0.0.1:$ROOKERY_B_PORT" --data-dir "$ROOT/target/bench-data-b" >"$RUN_DIR/$1-$2-b.log" 2>&1 &
      NODE_B_PID=$!
      wait_for_log "$RUN_DIR/$1-$2-b.log" "rookery listening on" "$NODE_B_PID"
      ADDR=127.0.0.1:$ROOKERY_PORT
      EXTRA_ARGS=(--addr-b "127.0.0.1:$ROOKERY_B_PORT" --server-pid-b "$NODE_B_PID"
        --redis-addr "127.0.0.1:$REDIS_PORT" --redis-pid "$REDIS_PID") ;;
    rookery*)
      config=$(rookery_config "$1")
      RUST_LOG=${RUST_LOG:-warn} "${PIN_SERVER[@]}" "$ROOKERY_BIN" serve --config "$config" >"$logf" 2>&1 &
      SERVER_PID=$!
      wait_for_log "$logf" "rookery listening on"
      ADDR=127.0.0.1:$ROOKERY_PORT ;;
    nats)
      "${PIN_SERVER[@]}" nats-server -c bench/nats-bench.conf >"$logf" 2>&1 &
      SERVER_PID=$!
      wait_for_log "$logf" "Server is ready"
      ADDR=127.0.0.1:$NATS_WS_PORT ;;
    *) echo "unknown server set-up $1" >&2; return 1 ;;
  esac
}

case_targets() { # label scenario -> the server set-ups (of $TARGETS) this case runs against
  local t out=()
  for t in $TARGETS; do
    # `cluster` runs one node (`rookery`) against two (`rookery-cluster`), nothing else.
    if [[ $2 == cluster ]]; then
      [[ $t == rookery || $t == rookery-cluster ]] || continue
      out+=("$t")
      continue
    fi
    case $t in
      rookery-cluster) continue ;;
      nats) [[ $2 == auth || $2 == rest ]] && continue ;;
      rookery-memory) [[ " $MEMORY_GROUPS " == *" $1 "* ]] || continue ;;
      rookery-fsync1) [[ $2 == rest ]] || continue ;;
    esac
    out+=("$t")
  done
  echo "${out[*]}"
}

run_case() { # label scenario args...   (against each of its set-ups, fresh server each)
  local label=$1 scenario=$2; shift 2
  local target
  for target in $(case_targets "$label" "$scenario"); do
    log "$label against $target"
    start_server "$target" "$label"
    # --target is the protocol (rookery or nats), --name the set-up the results are filed under.
    "${PIN_GEN[@]}" "$BENCH" "$scenario" --target "${target%%-*}" --name "$target" --addr "$ADDR" \
      --server-pid "$SERVER_PID" --label "$label" "${EXTRA_ARGS[@]}" "$@" | tee "$RUN_DIR/$label-$target.out" | grep -v '^{' >&2 || true
    grep '^{' "$RUN_DIR/$label-$target.out" >>"$RESULTS" || echo "($label against $target produced no result)" >&2
    stop_server
  done
}

# --- scenarios --------------------------------------------------------------------------------
ALL_RESULTS=()
for run in $(seq "$RUNS"); do
  RUN_DIR=$OUT/run-$run
  mkdir -p "$RUN_DIR"
  RESULTS=$RUN_DIR/results.jsonl
  : >"$RESULTS"
  ALL_RESULTS+=("$RESULTS")
  log "suite run $run of $RUNS"
  if wants floor; then
    log "floor: one ${FLOOR_SIZE:-110}-byte loopback send"
    "$BENCH" floor --size 110 | tee "$RUN_DIR/floor.out" | grep -v '^{' >&2
    grep '^{' "$RUN_DIR/floor.out" >>"$RESULTS"
  fi
  if wants latency; then run_case latency fanout --subscribers 10 --publishers 1 --rate 100 --duration "$DURATION"; fi
  if wants fanout-light; then run_case fanout-light fanout --subscribers "$FANOUT_SUBS" --publishers 1 --rate "$LIGHT_RATE" --duration "$DURATION"; fi
  if wants fanout; then run_case fanout fanout --subscribers "$FANOUT_SUBS" --publishers 1 --rate "$FANOUT_RATE" --duration "$DURATION"; fi
  if wants fanout-hot; then run_case fanout-hot fanout --subscribers "$FANOUT_SUBS" --publishers 1 --rate "$HOT_RATE" --duration "$DURATION"; fi
  if wants fanout-sat; then run_case fanout-sat fanout --subscribers "$FANOUT_SUBS" --publishers 1 --rate "$SAT_RATE" --duration "$DURATION"; fi
  if wants fanout-multi; then run_case fanout-multi fanout --subscribers "$MULTI_SUBS" --publishers "$MULTI_PUBS" --rate "$MULTI_RATE" --duration "$DURATION"; fi
  if wants rooms; then run_case rooms rooms --rooms "$ROOMS" --rate "$ROOMS_RATE" --duration "$DURATION"; fi
  if wants conns; then run_case conns conns --conns "$CONNS" --connect-concurrency 256; fi
  if wants auth; then run_case auth auth --concurrency 16 --duration "$AUTH_SECS"; fi
  if wants rest; then run_case rest rest --concurrency "$REST_CONC" --rooms "$REST_ROOMS" --size 100 --duration "$DURATION"; fi
  if wants cluster; then
    run_case cluster cluster --subscribers "$CLUSTER_SUBS" --publishers "$CLUSTER_PUBS" --rate "$CLUSTER_RATE" \
      --duration "$DURATION"
  fi
done

# --- report -----------------------------------------------------------------------------------
{
  echo "## Results $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "- CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//') ($(nproc) CPUs available)"
  echo "- memory: $(free -g | awk '/Mem:/{print $2}') GiB; kernel $(uname -r)"
  echo "- rookery: ${ROOKERY_BIN:-not run} (source $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- src Cargo.toml 2>/dev/null || echo ', with uncommitted changes')); $(nats-server --version)"
  if wants cluster && command -v redis-server >/dev/null; then
    echo "- cluster: $(redis-server --version | cut -d' ' -f1-3), no persistence, on 127.0.0.1:$REDIS_PORT"
  fi
  echo "- durable store: target/bench-data on $(stat -f -c %T "$ROOT/target" 2>/dev/null || echo '?') ($(df -P "$ROOT/target" 2>/dev/null | awk 'NR==2{print $1}'))"
  if [[ -n $SERVER_CPU ]]; then
    echo "- server pinned to CPU $SERVER_CPU, load generator to CPU $GEN_CPU"
    if wants cluster; then
      echo "- cluster: both nodes and Redis pinned together to CPU $SERVER_CPU: the two-node figures are a cost measurement, not a scaling one"
    fi
  else
    echo "- no CPU pinning"
  fi
  "$BENCH" compare "${ALL_RESULTS[@]}"
} | tee "$OUT/report.md"
echo >&2
echo "results: ${ALL_RESULTS[*]}; report: $OUT/report.md" >&2
