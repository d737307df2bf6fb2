#!/usr/bin/env bash
# Run every benchmark in one go and write one markdown page to $1 (default
# data/runs/bench.md). Each ratio is measured side by side within one bench
# binary, never across runs. Run through `make bench` (sets the env).
set -euo pipefail
out="${1:-data/runs/bench.md}"
mkdir -p "$(dirname "$out")"
tmp=$(mktemp)
{
  echo "# Benchmarks"
  echo
  echo "Measured $(date -u +%Y-%m-%d) on $(nproc) CPU cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)), kd $(git rev-parse --short HEAD 2>/dev/null || echo '?'), \`make bench\` (release build, CPU)."
} > "$tmp"
for b in "kd-data views" "kd-teachers teachers" "kd-logit-cache cache" "kd-student student" "kd-student step_profile" "kd-student presets" "kd-student data_parallel"; do
  set -- $b
  echo "== cargo bench -p $1 --bench $2" >&2
  { echo; echo "## $1: $2"; echo; cargo bench -q -p "$1" --bench "$2" 2>/dev/null; } >> "$tmp"
done
mv "$tmp" "$out"
cat "$out"
