#!/usr/bin/env bash
# Build a logit store with a Slurm job array, one shard group per task, then
# finalize it in a job that runs after every task succeeded. Run from the
# repository root on a shared filesystem:
#   scripts/jobs/cache-slurm.sh data/profiles/full.toml data/runs/full 16
set -euo pipefail
profile=${1:?profile} run=${2:?run directory} tasks=${3:-8}
kd=${KD:-target/release/kd}
array=$(sbatch --parsable --array=0-$((tasks - 1)) --job-name=kd-cache \
  --wrap "$kd cache build --profile $profile --dataset $run/dataset \
          --teacher $run/teachers/cnn --teacher $run/teachers/involution \
          --out $run/logits --shard auto")
# Each task reads its shard from SLURM_ARRAY_TASK_ID / _MIN / _STEP / _COUNT.
sbatch --dependency=afterok:"$array" --job-name=kd-cache-finalize \
  --wrap "$kd cache finalize --out $run/logits"
echo "submitted array $array ($tasks tasks) and its finalize job"
