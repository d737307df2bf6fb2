#!/usr/bin/env bash
# Opt-in test of the Slurm job files (scripts/jobs/cache-slurm.sh and
# scripts/jobs/train-slurm.sh) on a real one-node Slurm cluster started here:
#  1. installs Debian's slurm-wlm and munge when missing (apt-get, root);
#  2. starts munged, slurmctld and slurmd for localhost with everything
#     (key, socket, slurm.conf via SLURM_CONF, state, spool, logs) in a
#     temporary directory, on free ports, and stops them on exit;
#  3. on the tiny profile: imports the data, trains the two teachers, builds
#     the logit store in one process and through a 2-task job array +
#     finalize job, and checks the two are the same byte for byte; a task
#     that fails cancels the finalize job;
#  4. trains the tiny ensemble student in one process and as a 2-task srun
#     job, and checks the weights are those of one process (the conditions
#     of crates/cli/tests/data_parallel.rs: one thread per rank, a batch that
#     splits unevenly, a last batch that leaves rank 1 empty); a teacher
#     trains on 2 srun ranks too.
# One ok/FAIL line per check, a summary, non-zero exit on any failure.
#
# Usage: scripts/test-slurm.sh        (from anywhere; needs root for apt-get
#                                      only when slurm-wlm/munge are missing)
# Environment: KD (default target/debug/kd, built when missing),
#   KD_PYTHON / KD_TORCH_VENV (a Python with torch + safetensors; default the
#   venv of scripts/setup-libtorch.sh), JOB_TIMEOUT (seconds per Slurm job,
#   default 900), KEEP=1 keeps the temporary directory.
# Leaves nothing behind except the installed packages.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
kd=${KD:-target/debug/kd}
venv=${KD_TORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/kd/torch-2.11.0}
py=${KD_PYTHON:-$venv/bin/python}
job_timeout=${JOB_TIMEOUT:-900}
start=$(date +%s)

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  echo "installing slurm-wlm and munge (apt-get)"
  [ "$(id -u)" = 0 ] || { echo "FAIL slurm-wlm/munge missing and not root: apt-get install slurm-wlm munge"; exit 1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurm-wlm munge >/dev/null; } \
    || { echo "FAIL apt-get install slurm-wlm munge"; exit 1; }
fi
if [ ! -x "$kd" ]; then
  echo "building kd"
  cargo build -q -p kd-cli
fi
kd=$(cd "$(dirname "$kd")" && pwd)/$(basename "$kd")
[ -x "$py" ] || { echo "FAIL no Python with torch at $py (set KD_PYTHON)"; exit 1; }

t=$(mktemp -d /tmp/kd-test-slurm.XXXXXX)
chmod 755 "$t"
w=$t/work
mkdir -p "$w" "$t/munge" "$t/state" "$t/spool" "$t/log"
chmod 700 "$t/munge"
export SLURM_CONF=$t/slurm.conf

cleanup() {
  set +e
  if [ -f "$t/slurmctld.pid" ]; then
    # Cancel what is still queued or running, so no job step outlives slurmd.
    scancel --quiet --user "$(id -un)" 2>/dev/null
    for _ in $(seq 20); do [ -z "$(squeue -h 2>/dev/null)" ] && break; sleep 0.5; done
  fi
  for p in slurmd.pid slurmctld.pid munge/munged.pid; do
    [ -f "$t/$p" ] && kill "$(cat "$t/$p")" 2>/dev/null
  done
  for p in slurmd.pid slurmctld.pid munge/munged.pid; do
    [ -f "$t/$p" ] || continue
    pid=$(cat "$t/$p")
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
  done
  if [ "${KEEP:-0}" = 1 ]; then echo "kept $t"; else rm -rf "$t"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass=0 fail=0
check() { if eval "$2"; then pass=$((pass+1)); echo "ok   $1"; else fail=$((fail+1)); echo "FAIL $1"; fi; }
# Run a setup step; on failure show its log's tail and stop.
step() {
  local name=$1; shift
  if ! "$@" >"$t/log/$name.log" 2>&1; then
    tail -25 "$t/log/$name.log"; echo "FAIL $name"; exit 1
  fi
}
free_port() { "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# --- the cluster --------------------------------------------------------
dd if=/dev/urandom of="$t/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "$t/munge/munge.key"
munged --force --socket="$t/munge/munge.sock" --key-file="$t/munge/munge.key" \
  --log-file="$t/munge/munged.log" --pid-file="$t/munge/munged.pid" --seed-file="$t/munge/munged.seed" \
  || { cat "$t/munge/munged.log"; echo "FAIL munged does not start"; exit 1; }

node=$(hostname -s)
cpus=$(nproc)
[ "$cpus" -ge 2 ] || cpus=2   # two tasks at once; config_overrides accepts more CPUs than the host has
cat >"$SLURM_CONF" <<EOF
# A one-node cluster for scripts/test-slurm.sh (no cgroups, no accounting).
ClusterName=kdtest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$t/munge/munge.sock
StateSaveLocation=$t/state
SlurmdSpoolDir=$t/spool
SlurmctldPidFile=$t/slurmctld.pid
SlurmdPidFile=$t/slurmd.pid
SlurmctldLogFile=$t/log/slurmctld.log
SlurmdLogFile=$t/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
MinJobAge=600
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=1000 State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP
EOF
slurmctld -i || { tail -20 "$t/log/slurmctld.log"; echo "FAIL slurmctld does not start"; exit 1; }
slurmd -N "$node" || { tail -20 "$t/log/slurmd.log"; echo "FAIL slurmd does not start"; exit 1; }
up=0
for _ in $(seq 60); do
  [ "$(sinfo -h -N -o %t 2>/dev/null)" = idle ] && { up=1; break; }
  sleep 0.5
done
check "slurm: one idle node ($node, $cpus CPUs) under SLURM_CONF=$SLURM_CONF" "[ $up = 1 ]"
[ $up = 1 ] || { tail -5 "$t/log/slurmctld.log" "$t/log/slurmd.log"; exit 1; }

# --- inputs: the tiny profile's data and teachers ------------------------
profile=data/profiles/tiny.toml
echo "importing the tiny data set and training its two teachers (cpu)"
step data-import "$kd" data import --profile $profile --src data/raw/fashion-mnist --out "$w/dataset"
for name in cnn involution; do
  step "teacher-$name" "$kd" teacher train --profile $profile --name "$name" \
    --dataset "$w/dataset" --out "$w/teachers/$name" --device cpu
done

# --- logit store: one process against a 2-task job array + finalize -----
echo "building the logit store in one process, then as a Slurm job array"
KD_THREADS=1 step cache-one "$kd" cache build --profile $profile --dataset "$w/dataset" \
  --teacher "$w/teachers/cnn" --teacher "$w/teachers/involution" --out "$w/logits-one" --device cpu
check "cache-slurm.sh --dry-run: --gres=gpu:1 with GPUS=1, the teachers of RUN/teachers/*/" \
  "GPUS=1 scripts/jobs/cache-slurm.sh --dry-run --kd '$kd' '$profile' '$w' 2 >'$t/dry.out' 2>'$t/dry.err' && grep -q -- '--gres gpu:1' '$t/dry.out' && grep -q 'teachers: $w/teachers/cnn $w/teachers/involution\$' '$t/dry.err'"
rc=0
timeout "$job_timeout" scripts/jobs/cache-slurm.sh --wait --cpus 1 --device cpu --kd "$kd" \
  --out "$w/logits-slurm" --log-dir "$w/logs" "$profile" "$w" 2 >"$t/log/cache-slurm.log" 2>&1 || rc=$?
cat "$t/log/cache-slurm.log"
check "cache-slurm.sh: the array and its finalize job succeed (within ${job_timeout}s)" "[ $rc = 0 ] && [ -s '$w/logits-slurm/manifest.json' ]"
array=$(sed -n 's/^array \([0-9]*\) .*/\1/p' "$t/log/cache-slurm.log" | tail -1)
check "cache-slurm.sh: two array tasks, each wrote its shards (4 in all)" \
  "[ -n '$array' ] && grep -q '[1-9] shards written' '$w/logs/cache-${array}_0.out' && grep -q '[1-9] shards written' '$w/logs/cache-${array}_1.out' && [ \$(ls '$w/logits-slurm/.shards' | wc -l) = 4 ]"
check "the Slurm store equals the one-process store byte for byte (logits.zarr, shard markers)" \
  "diff -r '$w/logits-one/logits.zarr' '$w/logits-slurm/logits.zarr' >/dev/null && diff -r '$w/logits-one/.shards' '$w/logits-slurm/.shards' >/dev/null"
check "same manifest (but its creation time)" "'$py' - '$w/logits-one/manifest.json' '$w/logits-slurm/manifest.json' <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
for m in (a, b):
    m.pop('created_unix', None)
sys.exit(a != b)
PY"
check "kd cache verify on the Slurm store" "KD_THREADS=2 '$kd' cache verify '$w/logits-slurm' --samples 64 --device cpu >'$t/log/verify.log' 2>&1"
"$py" - "$w/logits-one" "$w/logits-slurm" >"$t/log/zarr.log" 2>&1 <<'PY' || true
import sys, zarr, numpy as np
a, b = (zarr.open_group(f"{d}/logits.zarr", mode="r") for d in sys.argv[1:])
n = 0
for name in ("cnn", "involution"):
    x, y = (g[f"teachers/{name}/logits"][...] for g in (a, b))
    assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), name
    n += x.size
print(f"zarr-python reads the same {n} logits from both stores")
PY
check "zarr-python reads bit-identical logits from both stores" "grep -q 'reads the same' '$t/log/zarr.log'"

# A failing array: the finalize job is cancelled, --wait says so, no manifest.
rc=0
timeout "$job_timeout" scripts/jobs/cache-slurm.sh --wait --cpus 1 --device cpu --kd "$kd" \
  --out "$w/logits-bad" --log-dir "$w/logs" "$w/no-such-profile.toml" "$w" 2 >"$t/log/cache-bad.log" 2>&1 || rc=$?
check "cache-slurm.sh: a failed task cancels the finalize job (exit $rc, no manifest)" \
  "[ $rc != 0 ] && [ $rc != 124 ] && [ ! -e '$w/logits-bad/manifest.json' ]"

# --- student: one process against 2 srun ranks ---------------------------
# 400 images in batches of 57: a batch splits 29 + 28, the last one (1
# image) leaves rank 1 empty; one thread per rank and in the reference.
echo "training the tiny ensemble student in one process, then on 2 srun ranks"
student=(--profile $profile --variant ensemble --dataset "$w/dataset" --teachers "cache:$w/logits-slurm"
  --batch-size 57 --epochs 2 --lr 0.01)
KD_THREADS=1 step student-one "$kd" student train "${student[@]}" --device cpu --out "$w/student-one"
check "train-slurm.sh --dry-run: sbatch --ntasks 2 --gres gpu:1, MASTER_ADDR/MASTER_PORT, srun" \
  "scripts/jobs/train-slurm.sh --dry-run --kd '$kd' --gpus 1 student --out x >'$t/dry.txt' && grep -q -- '--ntasks 2 .*--gres gpu:1' '$t/dry.txt' && grep -q '^export MASTER_ADDR=' '$t/dry.txt' && grep -q '^export MASTER_PORT=' '$t/dry.txt' && grep -q '^exec srun .* student train --out x --device auto' '$t/dry.txt'"
rc=0
KD_DIST_TIMEOUT=120 timeout "$job_timeout" scripts/jobs/train-slurm.sh --wait --ntasks 2 --cpus 1 --device cpu \
  --kd "$kd" --log-dir "$w/logs" student "${student[@]}" --out "$w/student-slurm" >"$t/log/train-slurm.log" 2>&1 || rc=$?
cat "$t/log/train-slurm.log"
job=$(sed -n 's/^job \([0-9]*\) (.*/\1/p' "$t/log/train-slurm.log" | tail -1)
log=$w/logs/train-student-$job.out
check "train-slurm.sh: the 2-rank srun job succeeds (within ${job_timeout}s)" "[ $rc = 0 ] && [ -s '$w/student-slurm/manifest.json' ]"
check "both srun tasks were ranks: 'rank 1 trained its share', data_parallel_ranks 2" \
  "grep -q 'rank 1 trained its share' '$log' && grep -q '\"data_parallel_ranks\": 2' '$w/student-slurm/metrics.json'"
"$py" - "$w/student-one" "$w/student-slurm" >"$t/log/weights.log" 2>&1 <<'PY' || true
import json, sys
import torch
from safetensors.torch import load_file
one, two = sys.argv[1:]
a, b = (load_file(f"{d}/weights.safetensors") for d in (one, two))
assert sorted(a) == sorted(b), "different tensors"
num = sum(float((a[k].double() - b[k].double()).square().sum()) for k in a)
den = sum(float(a[k].double().square().sum()) for k in a)
rel, big = (num / den) ** 0.5, max(float((a[k] - b[k]).abs().max()) for k in a)
ma, mb = (json.load(open(f"{d}/manifest.json")) for d in (one, two))
ha, hb = (json.load(open(f"{d}/metrics.json"))["epochs"] for d in (one, two))
la, lb = ha[-1]["train"]["loss"], hb[-1]["train"]["loss"]
print(f"relative weight difference {rel:.2e}, largest {big:.2e}; last epoch loss {la:.6f} vs {lb:.6f}")
# The bounds of crates/cli/tests/data_parallel.rs.
ok = rel < 1e-3 and big < 4e-3 and abs(la - lb) < 1e-4
ok = ok and ma["config"] == mb["config"] and ha[-1]["eval"] == hb[-1]["eval"]
print("weights of one process" if ok else "DIFFERENT")
PY
cat "$t/log/weights.log"
check "2 srun ranks train the weights of one process (rel < 1e-3, max < 4e-3; same config, loss, eval)" \
  "grep -q '^weights of one process' '$t/log/weights.log'"

# A teacher on 2 ranks: another training than one process (each rank's
# BatchNorm batch statistics), so only that it runs and records its ranks.
rc=0
KD_DIST_TIMEOUT=120 timeout "$job_timeout" scripts/jobs/train-slurm.sh --wait --ntasks 2 --cpus 1 --device cpu \
  --kd "$kd" --log-dir "$w/logs" teacher --profile $profile --name cnn --dataset "$w/dataset" \
  --out "$w/teachers-dp/cnn" >"$t/log/teacher-slurm.log" 2>&1 || rc=$?
check "train-slurm.sh teacher: a 2-rank cnn teacher (data_parallel_ranks 2)" \
  "[ $rc = 0 ] && [ -s '$w/teachers-dp/cnn/manifest.json' ] && grep -qs '\"data_parallel_ranks\": 2' '$w/teachers-dp/cnn/metrics.json' '$w/teachers-dp/cnn/config.json'"

rc=0
timeout "$job_timeout" scripts/jobs/train-slurm.sh --wait --ntasks 2 --cpus 1 --device cpu --kd "$kd" \
  --log-dir "$w/logs" student "${student[@]/$w\/dataset/$w/no-such-dataset}" --out "$w/student-bad" \
  >"$t/log/train-bad.log" 2>&1 || rc=$?
check "train-slurm.sh: a job whose ranks fail exits non-zero (exit $rc)" "[ $rc != 0 ] && [ $rc != 124 ] && [ ! -e '$w/student-bad/manifest.json' ]"

echo "$pass passed, $fail failed ($(( $(date +%s) - start )) s)"
[ "$fail" = 0 ]
