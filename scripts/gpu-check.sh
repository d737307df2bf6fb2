#!/usr/bin/env bash
# GPU readiness check. On a machine with an NVIDIA GPU and PyTorch 2.11
# installed, run the demo pipeline on CUDA with a prebuilt `kd`, check CUDA
# logits against CPU logits, and print a timing table. Under 8 minutes on
# one H100/H200.
#
#   scripts/gpu-check.sh [OUT_DIR]
#
# Environment: KD (the binary, default target/release/kd), TORCH_LIB (the
# torch/lib folder; default: the first of $KD_TORCH_VENV, kd's own
# ~/.cache/kd/torch-2.11.0, /opt/torch/.venv and the system python3 whose
# torch imports: the libtorch kd was built against comes before any other), FMNIST (Fashion-MNIST IDX folder, default
# data/raw/fashion-mnist), DEVICE (default cuda; cpu runs the same flow).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp}/gpu-check}"
KD="${KD:-target/release/kd}"
DEVICE="${DEVICE:-cuda}"
FMNIST="${FMNIST:-data/raw/fashion-mnist}"
profile=data/profiles/demo.toml
if [ -z "${TORCH_LIB:-}" ]; then
  for py in ${KD_TORCH_VENV:+"$KD_TORCH_VENV/bin/python"} "$HOME/.cache/kd/torch-2.11.0/bin/python" /opt/torch/.venv/bin/python python3; do
    command -v "$py" >/dev/null 2>&1 || continue
    TORCH_LIB=$("$py" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null) && break || true
  done
fi
[ -n "${TORCH_LIB:-}" ] && export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
mkdir -p "$out"
run="$out/run"
times="$out/times.tsv"
: > "$times"

step() { # name, command...
  local name=$1; shift
  local t0=$(date +%s.%N)
  "$@" > "$out/$name.log" 2>&1 || { echo "FAILED: $name (see $out/$name.log)"; tail -20 "$out/$name.log"; exit 1; }
  awk -v n="$name" -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%s\t%.1f\n", n, b - a }' >> "$times"
}

"$KD" env | tee "$out/env.txt"
if [ "$DEVICE" != cpu ] && ! "$KD" env --json | grep -q '"cuda_available": true'; then
  echo "gpu-check: kd sees no CUDA device (TORCH_LIB=${TORCH_LIB:-unset})" >&2
  exit 1
fi

step data "$KD" data import --profile $profile --src "$FMNIST" --out "$run/dataset"
for t in cnn involution; do
  step "teacher-$t" "$KD" teacher train --profile $profile --name $t --dataset "$run/dataset" --out "$run/teachers/$t" --device "$DEVICE"
done
step cache "$KD" cache build --profile $profile --dataset "$run/dataset" \
  --teacher "$run/teachers/cnn" --teacher "$run/teachers/involution" --out "$run/logits" --device "$DEVICE"
# The store holds CUDA logits; recompute a sample on the CPU and compare.
step cuda-vs-cpu "$KD" cache verify "$run/logits" --samples 512 --device cpu
for v in none ensemble ensemble-live; do
  case $v in
    none) src=none ;;
    ensemble) src="cache:$run/logits" ;;
    ensemble-live) src="live:$run/teachers/cnn,$run/teachers/involution" ;;
  esac
  step "student-$v" "$KD" student train --profile $profile --variant $v --dataset "$run/dataset" --teachers "$src" --out "$run/student/$v" --device "$DEVICE"
done
# Same run under bf16 autocast (f32 master weights): epoch time and accuracy beside f32.
step student-ensemble-bf16 "$KD" student train --profile $profile --variant ensemble --dataset "$run/dataset" \
  --teachers "cache:$run/logits" --out "$run/student/ensemble-bf16" --device "$DEVICE" --precision bf16
step report "$KD" report --run "$run" --out "$run/report"

echo
echo "## gpu-check on $("$KD" env --json | grep -o '"cuda:[0-9]*"' | head -1 || echo "$DEVICE")"
echo
echo "| stage | seconds |"
echo "|---|---|"
awk -F'\t' '{printf "| %s | %s |\n", $1, $2}' "$times"
echo
echo "CUDA vs CPU logits:"
tail -3 "$out/cuda-vs-cpu.log"
echo
grep -A12 '^## Students' "$run/report/report.md" || true
