# Shared by the Slurm job scripts, which source it.

# The calling script's header comment, up to its `set -euo` line.
usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

# The final state of job $1 (COMPLETED, FAILED, CANCELLED, ...). `sbatch
# --wait` exits 0 for a job cancelled before it started (a failed array task
# cancels the jobs that depend on it), so the scripts trust this instead.
job_state() {
  local s
  s=$(scontrol show job -o "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | head -n1 | cut -d= -f2 || true)
  [ -z "$s" ] && s=$(sacct -n -X -P -j "$1" -o State 2>/dev/null | head -n1 | cut -d' ' -f1 || true)
  echo "$s"
}
