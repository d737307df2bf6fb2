#!/usr/bin/env bash
# Train a student or a teacher data-parallel under Slurm: one batch job of
# NTASKS tasks whose script exports MASTER_ADDR (the job's first node) and
# MASTER_PORT, then runs `srun kd STAGE train ARGS --device D`. Each task is a
# rank: kd reads SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID (see
# docs/guide.md, "Data-parallel training"); rank 0 alone writes --out.
#
# Usage (from the repository root, on a filesystem every node sees):
#   scripts/jobs/train-slurm.sh [OPTIONS] student|teacher [--] KD_ARGS...
#   scripts/jobs/train-slurm.sh --ntasks 4 student --profile data/profiles/demo.toml \
#     --variant ensemble --dataset data/runs/demo/dataset \
#     --teachers cache:data/runs/demo/logits --out data/runs/demo/student/ensemble-dp
#   scripts/jobs/train-slurm.sh --nodes 2 --ntasks-per-node 4 --gpus 4 --device cuda teacher \
#     --profile data/profiles/full.toml --name cnn --dataset data/runs/full/dataset \
#     --out data/runs/full/teachers/cnn-dp
#
#   KD_ARGS   the arguments of `kd student train` / `kd teacher train`
#             (`kd student train --help`); every rank must see the inputs at
#             the same paths. A --device among them replaces --device below.
#
# Options (each also an environment variable, the option wins):
#   --ntasks N           ranks (default 2)                                [NTASKS]
#   --nodes N            nodes (default: as Slurm places the tasks)      [NODES]
#   --ntasks-per-node N  ranks per node (one per GPU on GPU nodes)       [TASKS_PER_NODE]
#   --gpus N             GPUs per node: adds --gres=gpu:N; rank i of a node
#                        takes GPU i modulo the GPUs it sees               [GPUS]
#   --cpus N             --cpus-per-task; also the ranks' KD_THREADS     [CPUS]
#   --device D           kd's --device: auto (default), cpu, cuda, cuda:N [DEVICE]
#   --port P             MASTER_PORT (default 29500 + job id % 1000)     [MASTER_PORT]
#   --partition P        --partition (default: the cluster's)            [PARTITION]
#   --time T             --time (default: the partition's)               [TIME_LIMIT]
#   --log-dir DIR        job log DIR/train-STAGE-JOBID.out (default slurm-logs) [LOG_DIR]
#   --kd PATH            the kd binary (default target/release/kd)        [KD]
#   --wait               block until the job ends; exit non-zero unless it COMPLETED
#   --dry-run            print the sbatch command and the job script, submit nothing
#   -h, --help           this text
# sbatch itself also reads SBATCH_PARTITION, SBATCH_TIMELIMIT, SBATCH_ACCOUNT,
# SBATCH_QOS, SBATCH_GRES, ... from the environment (see `man sbatch`); the
# options here take precedence. The job inherits the submitting shell's
# environment (KD_TORCH_LIB, GLOO_SOCKET_IFNAME on hosts with several network
# interfaces, KD_DIST_TIMEOUT, ...). Prints "job JOBID (N ranks)" last.
set -euo pipefail

# shellcheck source=scripts/jobs/slurm-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/slurm-lib.sh"
die() { echo "train-slurm.sh: $*" >&2; exit 2; }

ntasks=${NTASKS:-2} nodes=${NODES:-} per_node=${TASKS_PER_NODE:-} gpus=${GPUS:-}
cpus=${CPUS:-} device=${DEVICE:-auto} port=${MASTER_PORT:-} partition=${PARTITION:-}
time_limit=${TIME_LIMIT:-} log_dir=${LOG_DIR:-slurm-logs} kd=${KD:-target/release/kd}
wait=0 dry=0 stage=''
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage; exit 0 ;;
    --ntasks) ntasks=${2:?--ntasks N}; shift ;;
    --nodes) nodes=${2:?--nodes N}; shift ;;
    --ntasks-per-node) per_node=${2:?--ntasks-per-node N}; shift ;;
    --gpus) gpus=${2:?--gpus N}; shift ;;
    --cpus) cpus=${2:?--cpus N}; shift ;;
    --device) device=${2:?--device D}; shift ;;
    --port) port=${2:?--port P}; shift ;;
    --partition) partition=${2:?--partition P}; shift ;;
    --time) time_limit=${2:?--time T}; shift ;;
    --log-dir) log_dir=${2:?--log-dir DIR}; shift ;;
    --kd) kd=${2:?--kd PATH}; shift ;;
    --wait) wait=1 ;;
    --dry-run) dry=1 ;;
    student|teacher) stage=$1; shift; [ "${1:-}" = -- ] && shift; break ;;
    *) die "expected options, then student or teacher, not '$1' (see --help)" ;;
  esac
  shift
done
[ -n "$stage" ] || { usage >&2; exit 2; }
[ $# -gt 0 ] || die "no arguments for kd $stage train (see kd $stage train --help)"
for n in ntasks nodes per_node gpus cpus port; do
  v=${!n}; [ -z "$v" ] || [[ $v =~ ^[0-9]+$ ]] || die "--${n//_/-} must be a number, not '$v'"
done
[ $dry = 1 ] || [ -x "$kd" ] || die "$kd: no kd binary (build it, or set KD / --kd)"
if [ -e "$kd" ]; then kd=$(cd "$(dirname "$kd")" && pwd)/$(basename "$kd"); fi

args=("$@")
has_device=0
for a in "${args[@]}"; do case $a in --device|--device=*) has_device=1 ;; esac; done
[ $has_device = 1 ] || args+=(--device "$device")

sb=(sbatch --parsable --job-name "kd-$stage" --ntasks "$ntasks" --output "$log_dir/train-$stage-%j.out")
[ -n "$nodes" ] && sb+=(--nodes "$nodes")
[ -n "$per_node" ] && sb+=(--ntasks-per-node "$per_node")
[ -n "$gpus" ] && [ "$gpus" != 0 ] && sb+=(--gres "gpu:$gpus")
[ -n "$cpus" ] && sb+=(--cpus-per-task "$cpus")
[ -n "$partition" ] && sb+=(--partition "$partition")
[ -n "$time_limit" ] && sb+=(--time "$time_limit")
[ $wait = 1 ] && sb+=(--wait)

script="#!/usr/bin/env bash
# kd $stage train on \$SLURM_NTASKS data-parallel ranks (scripts/jobs/train-slurm.sh)
set -euo pipefail
export MASTER_ADDR=\$(scontrol show hostnames \"\$SLURM_JOB_NODELIST\" | head -n1)
export MASTER_PORT=${port:-\$((29500 + SLURM_JOB_ID % 1000))}
# Each rank uses the CPUs it was given (kd's default is every core of the node).
if [ -n \"\${SLURM_CPUS_PER_TASK:-}\" ]; then export KD_THREADS=\${KD_THREADS:-\$SLURM_CPUS_PER_TASK}; fi
echo \"kd $stage train: \$SLURM_NTASKS ranks on \$SLURM_JOB_NODELIST, rendezvous \$MASTER_ADDR:\$MASTER_PORT\"
exec srun --kill-on-bad-exit=1 $(printf '%q ' "$kd" "$stage" train "${args[@]}")
"
if [ $dry = 1 ]; then
  printf '%q ' "${sb[@]}"; echo "<<'SCRIPT'"
  printf '%s' "$script"; echo SCRIPT
  exit 0
fi
mkdir -p "$log_dir"
if [ $wait = 1 ]; then
  rc=0; job=$(printf '%s' "$script" | "${sb[@]}") || rc=$?
  job=${job%%;*}
  state=$(job_state "$job")
  [ -n "$state" ] && [ "$state" != COMPLETED ] && [ $rc = 0 ] && rc=1
  echo "job $job ($ntasks ranks) ended ${state:-(state unknown)}, status $rc (log: $log_dir/train-$stage-$job.out)"
  exit $rc
fi
job=$(printf '%s' "$script" | "${sb[@]}")
echo "job ${job%%;*} ($ntasks ranks; log: $log_dir/train-$stage-${job%%;*}.out)"
