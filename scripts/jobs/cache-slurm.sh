#!/usr/bin/env bash
# Build a logit store with a Slurm job array (one `kd cache build --shard
# auto` per task, each filling the shards s with s % TASKS == task index),
# then `kd cache finalize` in a job that runs once every task succeeded
# (--dependency=afterok on the array; cancelled if a task fails).
#
# Usage (from the repository root, on a filesystem every node sees):
#   scripts/jobs/cache-slurm.sh [OPTIONS] PROFILE RUN [TASKS [TEACHER...]]
#   scripts/jobs/cache-slurm.sh data/profiles/full.toml data/runs/full 16
#   GPUS=1 scripts/jobs/cache-slurm.sh --device cuda data/profiles/full.toml data/runs/full 8 cnn involution
#
#   PROFILE   profile TOML (its [cache] section gives the store's settings)
#   RUN       run directory: RUN/dataset is read, RUN/logits written
#   TASKS     array tasks (default 8; more tasks than shards leaves some idle)
#   TEACHER   a teacher directory, or a name meaning RUN/teachers/NAME
#             (repeat; --teacher DIR too). Default: every RUN/teachers/*/
#             holding a manifest.json, in name order. The order is the
#             store's teacher order; name them when RUN/teachers holds more
#             than the store's teachers (cross-fitted or data-parallel ones).
#
# Options (each also an environment variable, the option wins):
#   --teacher DIR      add a teacher (repeatable)
#   --dataset DIR      dataset artifact (default RUN/dataset)
#   --out DIR          store directory (default RUN/logits)
#   --device D         kd's --device: auto (default), cpu, cuda, cuda:N   [DEVICE]
#   --gpus N           GPUs per task: adds --gres=gpu:N (default none)     [GPUS]
#   --cpus N           --cpus-per-task; also sets KD_THREADS in the task  [CPUS]
#   --partition P      --partition (default: the cluster's)               [PARTITION]
#   --time T           --time per task and for finalize (default: the partition's) [TIME_LIMIT]
#   --log-dir DIR      job logs DIR/cache-JOB_TASK.out (default RUN/slurm-logs) [LOG_DIR]
#   --kd PATH          the kd binary (default target/release/kd)           [KD]
#   --wait             block until the finalize job ends; exit non-zero unless
#                      it COMPLETED (a failed task cancels it)
#   --dry-run          print the two sbatch commands, submit nothing
#   -- ARGS            further `kd cache build` arguments (e.g. -- --views 16 --force)
#   -h, --help         this text
# sbatch itself also reads SBATCH_PARTITION, SBATCH_TIMELIMIT, SBATCH_ACCOUNT,
# SBATCH_QOS, SBATCH_GRES, ... from the environment (see `man sbatch`,
# "INPUT ENVIRONMENT VARIABLES"); options given here take precedence.
# The job inherits the submitting shell's environment (sbatch --export=ALL):
# set KD_TORCH_LIB, LD_LIBRARY_PATH, KD_DETERMINISTIC, ... before submitting.
# Prints "array JOBID (TASKS tasks), finalize JOBID ..." on its last line.
set -euo pipefail

# shellcheck source=scripts/jobs/slurm-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/slurm-lib.sh"
die() { echo "cache-slurm.sh: $*" >&2; exit 2; }

device=${DEVICE:-auto} gpus=${GPUS:-} cpus=${CPUS:-} partition=${PARTITION:-}
time_limit=${TIME_LIMIT:-} log_dir=${LOG_DIR:-} kd=${KD:-target/release/kd}
dataset='' out='' wait=0 dry=0
teachers=() pos=() extra=()
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --teacher) teachers+=("${2:?--teacher DIR}"); shift ;;
    --dataset) dataset=${2:?--dataset DIR}; shift ;;
    --out) out=${2:?--out DIR}; shift ;;
    --device) device=${2:?--device D}; shift ;;
    --gpus) gpus=${2:?--gpus N}; shift ;;
    --cpus) cpus=${2:?--cpus N}; shift ;;
    --partition) partition=${2:?--partition P}; shift ;;
    --time) time_limit=${2:?--time T}; shift ;;
    --log-dir) log_dir=${2:?--log-dir DIR}; shift ;;
    --kd) kd=${2:?--kd PATH}; shift ;;
    --wait) wait=1 ;;
    --dry-run) dry=1 ;;
    --) shift; extra=("$@"); break ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) pos+=("$1") ;;
  esac
  shift
done
[ ${#pos[@]} -ge 2 ] || { usage >&2; exit 2; }
profile=${pos[0]} run=${pos[1]} tasks=${pos[2]:-8}
[[ $tasks =~ ^[1-9][0-9]*$ ]] || die "TASKS must be a positive integer, not '$tasks'"
[ -z "$gpus" ] || [[ $gpus =~ ^[0-9]+$ ]] || die "--gpus must be a number, not '$gpus'"
[ -z "$cpus" ] || [[ $cpus =~ ^[1-9][0-9]*$ ]] || die "--cpus must be a positive number, not '$cpus'"
for t in "${pos[@]:3}"; do
  case $t in */*) teachers+=("$t") ;; *) teachers+=("$run/teachers/$t") ;; esac
done
if [ ${#teachers[@]} -eq 0 ]; then
  for m in "$run"/teachers/*/manifest.json; do
    [ -f "$m" ] && teachers+=("${m%/manifest.json}")
  done
  [ ${#teachers[@]} -gt 0 ] || die "no teacher given and none in $run/teachers/*/manifest.json"
fi
for t in "${teachers[@]}"; do
  [ $dry = 1 ] || [ -f "$t/manifest.json" ] || die "$t: not a finished teacher (no manifest.json)"
done
dataset=${dataset:-$run/dataset} out=${out:-$run/logits} log_dir=${log_dir:-$run/slurm-logs}
[ $dry = 1 ] || [ -x "$kd" ] || die "$kd: no kd binary (build it, or set KD / --kd)"
# An absolute binary path, so the jobs do not depend on their working directory.
if [ -e "$kd" ]; then kd=$(cd "$(dirname "$kd")" && pwd)/$(basename "$kd"); fi

opts=()
[ -n "$partition" ] && opts+=(--partition "$partition")
[ -n "$time_limit" ] && opts+=(--time "$time_limit")
task_opts=(--ntasks 1)
[ -n "$gpus" ] && [ "$gpus" != 0 ] && task_opts+=(--gres "gpu:$gpus")
[ -n "$cpus" ] && task_opts+=(--cpus-per-task "$cpus")

build=("$kd" cache build --profile "$profile" --dataset "$dataset")
for t in "${teachers[@]}"; do build+=(--teacher "$t"); done
build+=(--out "$out" --device "$device" --shard auto "${extra[@]}")
# A task uses the CPUs it was given (kd's default is every core of the node).
threads='[ -n "${SLURM_CPUS_PER_TASK:-}" ] && export KD_THREADS=${KD_THREADS:-$SLURM_CPUS_PER_TASK}; '
build_cmd="$threads$(printf '%q ' "${build[@]}")"
finalize_cmd="$threads$(printf '%q ' "$kd" cache finalize --out "$out")"

array_sbatch=(sbatch --parsable --job-name kd-cache --array "0-$((tasks - 1))"
  --output "$log_dir/cache-%A_%a.out" "${opts[@]}" "${task_opts[@]}" --wrap "$build_cmd")
final_sbatch=(sbatch --parsable --job-name kd-cache-finalize --dependency "afterok:ARRAY"
  --kill-on-invalid-dep yes --output "$log_dir/cache-finalize-%j.out" "${opts[@]}" --ntasks 1)
[ -n "$cpus" ] && final_sbatch+=(--cpus-per-task "$cpus")
[ $wait = 1 ] && final_sbatch+=(--wait)
final_sbatch+=(--wrap "$finalize_cmd")

echo "teachers: ${teachers[*]}" >&2
if [ $dry = 1 ]; then
  printf '%q ' "${array_sbatch[@]}"; echo
  printf '%q ' "${final_sbatch[@]}"; echo
  exit 0
fi
mkdir -p "$log_dir"
array=$("${array_sbatch[@]}")
array=${array%%;*}                       # "ID;cluster" on federated clusters
final_sbatch=("${final_sbatch[@]/afterok:ARRAY/afterok:$array}")
if [ $wait = 1 ]; then
  echo "array $array ($tasks tasks) submitted; waiting for its finalize job (logs: $log_dir)" >&2
  rc=0; final=$("${final_sbatch[@]}") || rc=$?
  final=${final%%;*}
  state=$(job_state "$final")
  [ -n "$state" ] && [ "$state" != COMPLETED ] && [ $rc = 0 ] && rc=1
  echo "array $array ($tasks tasks), finalize $final ended ${state:-(state unknown)}, status $rc"
  exit $rc
fi
final=$("${final_sbatch[@]}")
echo "array $array ($tasks tasks), finalize ${final%%;*} (logs: $log_dir)"
