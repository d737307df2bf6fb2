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
# The input pipeline at 224 px beside torchvision's DataLoader, on a small
# generated image folder (skipped, with the reason, where torchvision is missing).
{
  echo; echo "## kd bench data: the input pipeline beside torchvision"; echo
  py=${KD_PYTHON:-python3}
  if ! "$py" -c 'import torchvision' 2>/dev/null; then
    echo "skipped: torchvision is not installed next to $py (pip install --no-deps torchvision==0.26.0 pillow)"
  else
    cargo build -q --release -p kd-cli
    d=data/runs/bench-data
    "$py" scripts/make-synthetic-images.py --out "$d/images" --train 4000 --val 200 --classes 10 >&2
    target/release/kd data import --format folder --src "$d/images" --out "$d/dataset" >&2
    echo '```'
    KD_PYTHON="$py" scripts/bench-data.sh "$d/dataset"
    echo '```'
  fi
} >> "$tmp"
mv "$tmp" "$out"
cat "$out"
