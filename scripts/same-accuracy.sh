#!/usr/bin/env bash
# Two kd binaries, the same short training runs, accuracies and speeds side
# by side: the check for a change that alters float results on purpose (a
# faster kernel, another memory layout), where scripts/same-artifacts.sh
# would rightly report every weight as different. A 5000-image
# Fashion-MNIST slice, the cnn-small and rednet-small teachers and a stem
# student on labels, 5 epochs each. About 4 minutes on 2 cores.
#
#   scripts/same-accuracy.sh OLD_KD NEW_KD WORKDIR   (after `make`, which fetches Fashion-MNIST)
set -euo pipefail
A=${1:?usage: scripts/same-accuracy.sh OLD_KD NEW_KD WORKDIR}; B=${2:?new kd}; W=${3:?work dir}
RAW=${RAW:-data/raw/fashion-mnist}
fail() { echo "same-accuracy: a stage failed; the end of $1/log:" >&2; tail -3 "$1/log" >&2; exit 2; }
run() {
  local kd=$1 o=$2
  mkdir -p "$o"
  $kd data import --format idx --src "$RAW" --out "$o/ds" --limit-train 5000 --limit-test 2000 --val-fraction 0.1 --seed 1 >>"$o/log" 2>&1 || fail "$o"
  $kd teacher train --arch cnn --preset cnn-small --dataset "$o/ds" --out "$o/cnn" --epochs 5 --device cpu >>"$o/log" 2>&1 || fail "$o"
  $kd teacher train --arch involution --preset rednet-small --dataset "$o/ds" --out "$o/involution" --epochs 5 --device cpu >>"$o/log" 2>&1 || fail "$o"
  $kd student train --dataset "$o/ds" --teachers none --preset vit-tiny --stem conv-involution --epochs 5 --out "$o/student" --device cpu >>"$o/log" 2>&1 || fail "$o"
}
run "$A" "$W/a"
run "$B" "$W/b"
python3 - "$W" <<'PY'
import json, sys
w = sys.argv[1]
print("| run | test accuracy old | new | train images/s old | new |")
print("|---|---:|---:|---:|---:|")
for run in ["cnn", "involution", "student"]:
    m = [json.load(open(f"{w}/{s}/{run}/metrics.json")) for s in "ab"]
    acc = [f"{x['test_accuracy'] * 100:.2f}%" for x in m]
    ips = [f"{x.get('train_images_per_sec', x.get('images_per_sec', float('nan'))):.0f}" for x in m]
    print(f"| {run} | {acc[0]} | {acc[1]} | {ips[0]} | {ips[1]} |")
PY
