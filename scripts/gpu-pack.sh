#!/usr/bin/env bash
# What a lent GPU machine needs beyond the tracked files, as one ignored
# folder small enough to carry there (64 MiB at most): the binaries without
# their debug info (over 150 MB with it) and Fashion-MNIST as plain files
# (data/raw may hold symlinks into this machine's system, which do not travel).
# scripts/gpu-check.sh picks the folder up by itself.
#
#   scripts/gpu-pack.sh [DIR]      (default gpu-pack/ at the repository root)
#
# Environment: KD (default target/release/kd), KD_TORCH (default kd-torch
# beside $KD, packed only if present), FMNIST (default data/raw/fashion-mnist).
# KD lets a copy stand in while target/ is being rebuilt.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-gpu-pack}"
KD="${KD:-target/release/kd}"
KD_TORCH="${KD_TORCH:-$(dirname "$KD")/kd-torch}"
FMNIST="${FMNIST:-data/raw/fashion-mnist}"
limit_mib=64
idx=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

die() { echo "gpu-pack: $*" >&2; exit 1; }
[ -x "$KD" ] || die "no kd binary at $KD (cargo build --release, or set KD)"
for f in "${idx[@]}"; do
  # -s follows symlinks, so a dangling one counts as missing.
  [ -s "$FMNIST/$f" ] || die "$FMNIST lacks $f (scripts/fetch-fashion-mnist.sh, or set FMNIST)"
done
command -v strip >/dev/null || die "strip not found (binutils)"

mkdir -p "$dir/fashion-mnist"
# Only what this script writes is replaced: DIR may be any folder.
rm -f "$dir/kd" "$dir/kd-torch"
strip -o "$dir/kd" "$KD"
if [ -e "$KD_TORCH" ]; then
  strip -o "$dir/kd-torch" "$KD_TORCH"
fi
for f in "${idx[@]}"; do
  cp -L "$FMNIST/$f" "$dir/fashion-mnist/$f"
done
chmod +x "$dir"/kd*

bytes=$(du -sb "$dir" | cut -f1)
du -b "$dir"/kd* "$dir"/fashion-mnist/*
awk -v b="$bytes" -v d="$dir" 'BEGIN { printf "gpu-pack: %s holds %.1f MiB\n", d, b / 1048576 }'
if [ "$bytes" -gt $((limit_mib * 1048576)) ]; then
  die "$dir is over the $limit_mib MiB that can be carried to a lent machine"
fi
