#!/usr/bin/env bash
# Dependency footprint and clean release build time of each store on its own: a throwaway
# crate per store under /tmp with only that dependency, built from scratch (its own target/).
# Times are wall-clock and move with whatever else the machine is doing; treat them as rough.
set -euo pipefail

work=$(mktemp -d /tmp/store-build-cost.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "| store | \`cargo tree \| wc -l\` | distinct crates | clean release build |"
echo "|---|---:|---:|---:|"
for dep in 'redb = "4.6.0"' 'fjall = "3.1.13"'; do
    name=${dep%% *}
    crate="$work/only-$name"
    mkdir -p "$crate/src"
    cat >"$crate/Cargo.toml" <<TOML
[package]
name = "only-$name"
version = "0.0.0"
edition = "2024"
publish = false

[workspace]

[dependencies]
$dep
TOML
    echo 'fn main() {}' >"$crate/src/main.rs"
    (cd "$crate" && cargo generate-lockfile -q)
    lines=$(cd "$crate" && cargo tree | wc -l)
    # Normal + build dependencies, each crate once, the root excluded.
    distinct=$(cd "$crate" && cargo tree -e normal,build --prefix none | sed 's/ (\*)$//' | sort -u | grep -vc "^only-$name ")
    start=$(date +%s.%N)
    (cd "$crate" && cargo build --release -q)
    end=$(date +%s.%N)
    printf '| %s | %s | %s | %.0f s |\n' "$name" "$lines" "$distinct" "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')"
done
