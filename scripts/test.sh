#!/usr/bin/env bash
# The one command that runs every Rookery test, on a developer machine and in CI
# (.ci/run execs this). Works on a fresh Debian machine as root with only the
# package registries reachable (apt, npm, PyPI, crates.io): it installs what is
# missing, then runs, stopping at the first failing stage:
#
#   rustfmt check, clippy (-D warnings), cargo test (with tests/doc_examples.rs, which
#   runs the shell examples of README.md and docs/ with curl), cargo build (target/debug/rookery),
#   the Node tests (tests/js: compat/ with the official scaledrone-node client,
#   browser/ with playwright-core + Debian's chromium), and the Python REST tests
#   (tests/python, official `scaledrone` client, in .venv).
#
# The JS and Python tests always run against the binary built here
# (ROOKERY_BIN is set to target/debug/rookery).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
exec </dev/null
export DEBIAN_FRONTEND=noninteractive

LOGS="$(mktemp -d "${TMPDIR:-/tmp}/rookery-test.XXXXXX")"
STAGE="start-up"
STAGE_NO=0
STAGES=9

stage() {
  STAGE="$1"
  STAGE_NO=$((STAGE_NO + 1))
  printf '\n==== [%d/%d] %s (%s) ====\n' "$STAGE_NO" "$STAGES" "$STAGE" "$(date +%H:%M:%S)"
}

on_exit() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    printf '\n**** scripts/test.sh FAILED at stage [%d/%d] %s (exit %d) ****\n' "$STAGE_NO" "$STAGES" "$STAGE" "$rc" >&2
  fi
  rm -rf "$LOGS"
}
trap on_exit EXIT

die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# Runs a command as root (directly, or through sudo when not root).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    die "need root (or sudo) to run: $*"
  fi
}

APT_UPDATED=0
apt_install() {
  if [ "$APT_UPDATED" -eq 0 ]; then
    as_root apt-get update
    APT_UPDATED=1
  fi
  as_root apt-get install -y "$@"
}

# Runs a test command, keeping a copy of its output to count results at the end.
run_logged() {
  local log="$1"
  shift
  "$@" 2>&1 | tee "$LOGS/$log"
}

# ---------------------------------------------------------------------------
stage "tools and system packages"
for tool in cargo node npm python3; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (expected on the machine image)"
done
cargo fmt --version >/dev/null 2>&1 || die "rustfmt is missing (rustup component add rustfmt)"
cargo clippy --version >/dev/null 2>&1 || die "clippy is missing (rustup component add clippy)"
# tests/doc_examples.rs runs the docs' curl examples.
if ! command -v curl >/dev/null 2>&1; then
  echo "installing curl for the documentation examples"
  apt_install curl
fi
# tests/integration/cluster.rs runs several nodes against a real Redis.
command -v redis-server >/dev/null 2>&1 || apt_install redis-server
if [ ! -x /usr/bin/chromium ]; then
  echo "installing Debian's chromium for the browser tests"
  apt_install chromium
fi
if ! command -v go >/dev/null 2>&1; then
  echo "installing Debian's golang-go for the permission-key differential test (tests/regexp_diff)"
  apt_install golang-go
fi
echo "cargo: $(cargo --version)"
echo "node: $(node --version), npm: $(npm --version)"
echo "python3: $(python3 --version 2>&1)"
echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo '?')"
echo "go: $(go version)"

# ---------------------------------------------------------------------------
stage "JS test dependencies (npm ci in tests/js)"
(cd tests/js && npm ci --no-audit --no-fund)

# ---------------------------------------------------------------------------
stage "Python test dependencies (.venv)"
if [ ! -x .venv/bin/python ]; then
  if ! python3 -m venv .venv; then
    rm -rf .venv
    echo "python3 -m venv failed; installing python3-venv"
    apt_install python3-venv
    python3 -m venv .venv
  fi
fi
.venv/bin/python -m pip install --disable-pip-version-check -q -r tests/python/requirements.txt
.venv/bin/python -m pip --disable-pip-version-check list 2>/dev/null | grep -Ei '^(scaledrone|pytest|websockets|requests) ' || true

# ---------------------------------------------------------------------------
stage "cargo fmt --check"
cargo fmt --all -- --check

# ---------------------------------------------------------------------------
stage "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# ---------------------------------------------------------------------------
stage "cargo test"
run_logged cargo-test.log cargo test --workspace

# ---------------------------------------------------------------------------
stage "cargo build (target/debug/rookery)"
cargo build
export ROOKERY_BIN="$ROOT/target/debug/rookery"
[ -x "$ROOKERY_BIN" ] || die "cargo build did not produce $ROOKERY_BIN"

# ---------------------------------------------------------------------------
stage "Node tests (tests/js: compat/ and browser/)"
(cd tests/js && run_logged node.log node --test --test-concurrency=1 compat/ browser/)

# ---------------------------------------------------------------------------
stage "Python REST tests (tests/python)"
run_logged pytest.log .venv/bin/python -m pytest tests/python -p no:cacheprovider -ra

# ---------------------------------------------------------------------------
# One closing line over all runners: "total: N passed, N failed".
read -r cargo_pass cargo_fail < <(awk '/^test result:/ {
    for (i = 2; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
  END { print p + 0, f + 0 }' "$LOGS/cargo-test.log")
read -r node_pass node_fail < <(awk '/^(# |ℹ )pass [0-9]+$/ { p += $NF } /^(# |ℹ )fail [0-9]+$/ { f += $NF }
  END { print p + 0, f + 0 }' "$LOGS/node.log")
read -r py_pass py_fail < <(grep -E ' in [0-9.]+s' "$LOGS/pytest.log" | tail -n 1 | awk '{
    for (i = 2; i <= NF; i++) { if ($i ~ /^passed,?$/) p += $(i-1); if ($i ~ /^(failed|errors?),?$/) f += $(i-1) } }
  END { print p + 0, f + 0 }')
[ "$node_pass" -gt 0 ] && [ "$py_pass" -gt 0 ] || die "a test runner reported no passing tests"
printf '\n==== all %d stages passed: cargo test %d, node %d, pytest %d ====\n' \
  "$STAGES" "$cargo_pass" "$node_pass" "$py_pass"
printf 'total: %d passed, %d failed\n' "$((cargo_pass + node_pass + py_pass))" "$((cargo_fail + node_fail + py_fail))"
