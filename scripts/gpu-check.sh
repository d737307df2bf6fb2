#!/usr/bin/env bash
# GPU readiness check: the whole pipeline on CUDA with a prebuilt `kd`
# (data, both teachers, the logit store, checked against a CPU recomputation,
# students without, with cached and with live teachers, under bf16 and
# data-parallel over 2 ranks, and the cached student once more on the CPU for
# the speed ratio), then one markdown table of times, speed and GPU use.
#
# A lent GPU machine has no network and takes at most 64 MiB of ignored files,
# so the binaries and the data are packed here and carried along; the results
# land in $OUT/gpu-check there, which comes back:
#
#   scripts/gpu-pack.sh && <device run, carry gpu-pack, timeout 600 s> scripts/gpu-check.sh
#
#   scripts/gpu-check.sh [--dry-run] [OUT_DIR]      (OUT_DIR: ${OUT:-/tmp}/gpu-check)
#
# --dry-run runs every step with the same commands on the CPU with the tiny
# profile (under a minute on 2 cores), so that the script itself is tested
# before GPU time is spent on it.
#
# Environment:
#   KD        the binary (default gpu-pack/kd if packed, else target/release/kd)
#   FMNIST    the four Fashion-MNIST IDX .gz files (default gpu-pack/fashion-mnist
#             if packed, else data/raw/fashion-mnist)
#   DEVICE    cuda (default), cuda:N or cpu; cpu for --dry-run
#   PROFILE   default data/profiles/demo.toml, data/profiles/tiny.toml for --dry-run
#   KD_TORCH_LIB  torch/lib of PyTorch 2.11; default from the first python of
#             $KD_TORCH_VENV/bin, ~/.cache/kd/torch-2.11.0/bin, /opt/torch/.venv/bin
#             whose torch imports. That python also runs torchrun.
#   SHORT_EPOCHS  epochs of the speed-only students (data-parallel, CPU ratio);
#             default 2, 1 for --dry-run
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "gpu-check: $*" >&2; exit 1; }

dry=0
while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) dry=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; break ;;
    -*) die "unknown option $1 (usage: scripts/gpu-check.sh [--dry-run] [OUT_DIR])" ;;
    *) break ;;
  esac
done
[ $# -le 1 ] || die "too many arguments (usage: scripts/gpu-check.sh [--dry-run] [OUT_DIR])"
out="${1:-${OUT:-/tmp}/gpu-check}"

if [ "$dry" = 1 ]; then
  DEVICE="${DEVICE:-cpu}"
  PROFILE="${PROFILE:-data/profiles/tiny.toml}"
  SHORT_EPOCHS="${SHORT_EPOCHS:-1}"
else
  DEVICE="${DEVICE:-cuda}"
  PROFILE="${PROFILE:-data/profiles/demo.toml}"
  SHORT_EPOCHS="${SHORT_EPOCHS:-2}"
fi
if [ -z "${KD:-}" ]; then
  if [ -x gpu-pack/kd ]; then KD="gpu-pack/kd"; else KD="target/release/kd"; fi
fi
if [ -z "${FMNIST:-}" ]; then
  if [ -d gpu-pack/fashion-mnist ]; then FMNIST="gpu-pack/fashion-mnist"; else FMNIST="data/raw/fashion-mnist"; fi
fi

# Everything that can be missing is checked before the first step, so that a
# lent machine's time is not spent on a run that cannot finish.
case $KD in */*) ;; *) KD=$(command -v "$KD" || true) ;; esac
{ [ -n "$KD" ] && [ -x "$KD" ]; } || die "no kd binary at ${KD:-\$KD} (scripts/gpu-pack.sh or cargo build --release, or set KD)"
# torchrun execs it from its own working directory.
KD="$(cd "$(dirname "$KD")" && pwd)/$(basename "$KD")"
for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  [ -s "$FMNIST/$f" ] || die "Fashion-MNIST missing: $FMNIST lacks $f (scripts/fetch-fashion-mnist.sh, or set FMNIST)"
done
[ -f "$PROFILE" ] || die "no profile $PROFILE"

# The python whose torch kd runs on also launches the data-parallel ranks, so
# both come from one search. The system python3 is left out: its torch, if
# any, need not be the version kd was built against.
PY=
torch_version=
for py in ${KD_TORCH_VENV:+"$KD_TORCH_VENV/bin/python"} "${HOME:-}/.cache/kd/torch-2.11.0/bin/python" /opt/torch/.venv/bin/python; do
  [ -x "$py" ] || continue
  if found=$("$py" -c 'import os, torch; print(torch.__version__); print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null); then
    PY=$py
    torch_version=$(sed -n 1p <<<"$found")
    export KD_TORCH_LIB="${KD_TORCH_LIB:-$(sed -n 2p <<<"$found")}"
    break
  fi
done
[ -n "$PY" ] || die "no python with torch among \$KD_TORCH_VENV/bin/python, ~/.cache/kd/torch-2.11.0/bin/python, /opt/torch/.venv/bin/python (set KD_TORCH_VENV)"
# Today's kd links libtorch directly; the launcher that replaces it reads KD_TORCH_LIB.
export LD_LIBRARY_PATH="$KD_TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
case $torch_version in 2.11.*) ;; *) echo "gpu-check: warning: $PY has torch $torch_version, kd is built for 2.11" >&2 ;; esac

smi=0
command -v nvidia-smi >/dev/null 2>&1 && smi=1

mkdir -p "$out"
run="$out/run"
# Stages skip work whose inputs are unchanged, which would time nothing.
rm -rf "$run"
rows="$out/steps.tsv"
: > "$rows"
smi_pid=
trap 'smi_stop' EXIT

smi_stop() {
  if [ -n "$smi_pid" ]; then
    kill "$smi_pid" 2>/dev/null || true
    wait "$smi_pid" 2>/dev/null || true
    smi_pid=
  fi
}

# A speed from a stage's JSON, or n/a (a stage that did nothing wrote none).
# The cache writes no speed: its views (samples x views, through every
# teacher) per second of the whole step stand in.
metric() { # file, key or views/s, seconds
  "$PY" - "$@" <<'EOF' 2>/dev/null || echo n/a
import json, sys
path, key, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
try:
    m = json.load(open(path))
except (OSError, ValueError):
    m = {}
if key == "views/s":
    c = m.get("metrics", {})
    v = c.get("samples", 0) * c.get("views", 0) / secs if secs > 0 else None
else:
    v = m.get(key)
print(f"{v:.0f}" if isinstance(v, (int, float)) and v > 0 else "n/a")
EOF
}

step() { # name, device, metrics file:key or -, command...
  local name=$1 dev=$2 src=$3 t0 secs ips=n/a gpu="n/a	n/a"
  shift 3
  if [ "$smi" = 1 ] && [[ $dev == cuda* ]]; then
    nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 \
      > "$out/$name.smi" 2>/dev/null &
    smi_pid=$!
  fi
  echo "gpu-check: $name ($dev)" >&2
  t0=$(date +%s.%N)
  if ! "$@" > "$out/$name.log" 2>&1; then
    smi_stop
    printf '%s\t%s\tFAILED\tn/a\tn/a\tn/a\n' "$name" "$dev" >> "$rows"
    render > "$out/gpu-check.md" || true
    echo "FAILED: $name (log: $out/$name.log)"
    tail -20 "$out/$name.log"
    exit 1
  fi
  secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  smi_stop
  if [ -s "$out/$name.smi" ]; then
    # One line per GPU per sample: with several GPUs the peak is the fullest
    # GPU's and the mean is over all of them.
    gpu=$(awk -F', *' '$2 + 0 > m { m = $2 + 0 } { u += $1; n++ }
      END { if (n) printf "%d\t%.0f", m, u / n; else printf "n/a\tn/a" }' "$out/$name.smi")
  fi
  [ "$src" = - ] || ips=$(metric "${src%:*}" "${src##*:}" "$secs")
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$dev" "$secs" "$ips" "$gpu" >> "$rows"
}

kd_env() {
  "$KD" env > "$out/env.txt" && "$KD" env --json > "$out/env.json"
}

# Reads env.json: cuda_devices entries may be names or objects with a name.
env_field() { # devices | count | libtorch
  "$PY" - "$out/env.json" "$1" <<'EOF' 2>/dev/null || echo "?"
import json, sys
e = json.load(open(sys.argv[1]))
devs = e.get("cuda_devices") or []
names = [d.get("name", "?") if isinstance(d, dict) else str(d) for d in devs]
print({"devices": ", ".join(names) or "none", "count": len(names),
       "libtorch": e.get("libtorch", "?")}[sys.argv[2]])
EOF
}

render() {
  local where gpu_names
  where="$DEVICE, libtorch $(env_field libtorch), torch $torch_version"
  if [ "$smi" = 1 ]; then
    gpu_names=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | paste -sd, - || true)
    where="$where, CUDA devices $(env_field devices)${gpu_names:+ ($gpu_names)}"
  else
    where="$where, CUDA devices $(env_field devices)"
  fi
  echo "# gpu-check: $where; $(date -u '+%Y-%m-%d %H:%M UTC'); $( [ "$dry" = 1 ] && echo "dry run" || echo "full run"), $(basename "$PROFILE")"
  echo
  echo "| step | device | seconds | images/s | peak GPU MiB | mean GPU util % |"
  echo "|---|---|---|---|---|---|"
  awk -F'\t' '{ printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6 }' "$rows"
  echo
  echo "images/s: training images per second from the stage's metrics (mean over epochs; data-parallel: both ranks);"
  echo "cache: views per second of the whole step. GPU columns: nvidia-smi every 500 ms during the step."
  local g c
  g=$(awk -F'\t' '$1 == "student-ensemble" { print $4 }' "$rows")
  c=$(awk -F'\t' '$1 == "student-ensemble-cpu" { print $4 }' "$rows")
  if [ -n "$g" ] && [ -n "$c" ]; then
    echo
    awk -v g="$g" -v c="$c" -v d="$DEVICE" 'BEGIN {
      if (g + 0 > 0 && c + 0 > 0) printf "Ensemble student: %s img/s on %s vs %s img/s on cpu: %.1fx\n", g, d, c, g / c
      else printf "Ensemble student: %s img/s on %s vs %s img/s on cpu\n", g, d, c }'
  fi
  if [ -s "$out/cache-verify.out" ]; then
    echo
    echo "Cache verify ($DEVICE store against the CPU):"
    echo
    sed 's/^/    /' "$out/cache-verify.out"
  fi
  if [ -f "$run/report/report.md" ]; then
    echo
    awk '/^## / { on = ($0 ~ /^## Students/) } on' "$run/report/report.md"
  fi
}

step env - - kd_env
if [ "$DEVICE" != cpu ] && [ "$(env_field count)" = 0 ]; then
  die "kd sees no CUDA device (KD_TORCH_LIB=$KD_TORCH_LIB); see $out/env.txt"
fi
# kd gives rank i GPU i modulo the visible GPUs for a plain `cuda`, so both
# ranks share the GPU when only one is visible; it refuses cuda:N with several
# ranks, since that would put them all on one GPU even where there are more.
dp_device=${DEVICE%%:*}
if [ "$dp_device" = cpu ]; then
  dp_threads=1
else
  dp_threads=$(( $(nproc) / 2 > 0 ? $(nproc) / 2 : 1 ))
fi

step data cpu - "$KD" data import --profile "$PROFILE" --src "$FMNIST" --out "$run/dataset"
for t in cnn involution; do
  step "teacher-$t" "$DEVICE" "$run/teachers/$t/metrics.json:train_images_per_sec" \
    "$KD" teacher train --profile "$PROFILE" --name $t --dataset "$run/dataset" --out "$run/teachers/$t" --device "$DEVICE"
done
step cache "$DEVICE" "$run/logits/manifest.json:views/s" "$KD" cache build --profile "$PROFILE" --dataset "$run/dataset" \
  --teacher "$run/teachers/cnn" --teacher "$run/teachers/involution" --out "$run/logits" --device "$DEVICE"
# The store holds the device's logits: recompute a sample on the CPU and compare.
verify() {
  "$KD" cache verify "$run/logits" --samples 512 --device cpu | tee "$out/cache-verify.out"
}
step cache-verify cpu - verify

student() { # name, device, teachers, extra flags...
  local name=$1 dev=$2 src=$3 variant=ensemble
  shift 3
  case $name in none|ensemble-live) variant=$name ;; esac
  "$KD" student train --profile "$PROFILE" --variant "$variant" --dataset "$run/dataset" \
    --teachers "$src" --out "$run/student/$name" --device "$dev" "$@"
}
metrics_of() { echo "$run/student/$1/metrics.json:images_per_sec"; }

step student-none "$DEVICE" "$(metrics_of none)" student none "$DEVICE" none
step student-ensemble "$DEVICE" "$(metrics_of ensemble)" student ensemble "$DEVICE" "cache:$run/logits"
step student-ensemble-live "$DEVICE" "$(metrics_of ensemble-live)" \
  student ensemble-live "$DEVICE" "live:$run/teachers/cnn,$run/teachers/involution"
# bf16 autocast over f32 master weights: speed and accuracy beside f32.
step student-ensemble-bf16 "$DEVICE" "$(metrics_of ensemble-bf16)" \
  student ensemble-bf16 "$DEVICE" "cache:$run/logits" --precision bf16
# Gloo over loopback: a lent machine may have no other interface that resolves.
dp() {
  KD_THREADS=$dp_threads GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-lo}" \
    "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 --no-python \
    "$KD" student train --profile "$PROFILE" --variant ensemble --dataset "$run/dataset" \
    --teachers "cache:$run/logits" --out "$run/student/ensemble-dp2" --device "$dp_device" \
    --epochs "$SHORT_EPOCHS"
}
step student-ensemble-dp2 "$dp_device" "$(metrics_of ensemble-dp2)" dp
# The CPU side of the speed ratio. A dry run runs it too although it repeats
# the CPU student: the ratio line is then exercised before a GPU run needs it.
step student-ensemble-cpu cpu "$(metrics_of ensemble-cpu)" \
  student ensemble-cpu cpu "cache:$run/logits" --epochs "$SHORT_EPOCHS"
step report - - "$KD" report --run "$run" --out "$run/report"

render > "$out/gpu-check.md"
echo
cat "$out/gpu-check.md"
