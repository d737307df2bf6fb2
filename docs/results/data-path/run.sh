#!/usr/bin/env bash
# The larger-than-memory run of larger-than-memory.md: generate the images,
# import them, import a tiny teacher, build a slice of a store, bench the
# data path, each under /usr/bin/time -v. About 40 minutes on 2 cores
# (most of it generating the PNGs) and 16 GB of disk.
#   docs/results/data-path/run.sh WORKDIR
set -euo pipefail
w=${1:?usage: docs/results/data-path/run.sh WORKDIR}
KD=${KD:-target/release/kd}
PY=${KD_PYTHON:-python3}
here=$(dirname "$0")
mkdir -p "$w"
t() { local name=$1; shift; /usr/bin/time -v -o "$w/$name.time" "$@" > "$w/$name.out" 2> "$w/$name.err"
      grep -E "Maximum resident|Elapsed" "$w/$name.time" | sed "s/^/$name: /"; }
"$PY" scripts/make-synthetic-images.py --out "$w/images" --train 170000 --val 5000
t import "$KD" data import --format folder --src "$w/images" --out "$w/ds"
"$PY" "$here/tiny_teacher.py" "$w/tiny.pt"
t teacher "$KD" teacher import --torchscript "$w/tiny.pt" --name tiny --dataset "$w/ds" --out "$w/teacher" --device cpu
t cache "$KD" cache build --dataset "$w/ds" --teacher "$w/teacher" --out "$w/logits" --views 4 --crop resized-crop --shard 0/80 --device cpu
t bench "$KD" bench data --dataset "$w/ds" --batches 200
t bench-mix "$KD" bench data --dataset "$w/ds" --batches 100 --mix mixup
cat "$w/bench.out" "$w/bench-mix.out"
