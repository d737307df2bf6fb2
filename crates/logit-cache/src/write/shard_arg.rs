//! `--shard i/n` and `--shard auto`: which share of the shards this worker
//! fills.

use crate::error::Result;

/// A `--shard` that names no share of the store.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ShardError {
    #[error("--shard '{spec}': expected i/n with 0 <= i < n (e.g. 0/4)")]
    Syntax { spec: String },
    #[error("--shard {i}/{n}: out of range (need 0 <= i < n)")]
    OutOfRange { i: usize, n: usize },
    /// A scheduler variable that is not a count.
    #[error("--shard auto: {var}={value:?} is not a number")]
    NotANumber { var: String, value: String },
    #[error("--shard auto: SLURM_ARRAY_TASK_ID {id} is not MIN {min} + k * STEP {step}")]
    OffStep { id: usize, min: usize, step: usize },
    #[error("--shard auto: --shards {shards} but the Slurm array has {tasks} tasks")]
    Disagree { shards: usize, tasks: usize },
    /// The scheduler does not say how many shards there are.
    #[error("--shard auto: {scheduler} does not say how many workers there are; give --shards N")]
    NoCount { scheduler: &'static str },
    #[error(
        "--shard auto: neither SLURM_ARRAY_TASK_ID (Slurm job array) nor JOB_COMPLETION_INDEX (Kubernetes Indexed Job) is set; give --shard i/n"
    )]
    NoScheduler,
    #[error(
        "--force with --shard would let one worker delete the others' shards: remove the store, then start the workers"
    )]
    Force,
}

/// Check `i` of `n`.
pub fn shard(i: usize, n: usize) -> Result<(usize, usize), ShardError> {
    if n == 0 || i >= n {
        return Err(ShardError::OutOfRange { i, n });
    }
    Ok((i, n))
}

/// Parse `i/n`.
pub fn parse_shard(s: &str) -> Result<(usize, usize), ShardError> {
    let bad = || ShardError::Syntax { spec: s.into() };
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    shard(
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    )
}

/// `--shard auto`: this worker's shard from the scheduler's environment.
///
/// - Slurm job array (`sbatch --array=MIN-MAX:STEP`):
///   shard = (`SLURM_ARRAY_TASK_ID` - `SLURM_ARRAY_TASK_MIN`) / `SLURM_ARRAY_TASK_STEP`,
///   of `SLURM_ARRAY_TASK_COUNT` shards (or `shards` when given; they must agree).
/// - Kubernetes Indexed Job: shard = `JOB_COMPLETION_INDEX`, of `shards`
///   (the Job's `completions`; Kubernetes does not export it).
///
/// `env` reads a variable (injected so tests need not touch the process's).
pub fn shard_from_env(
    shards: Option<usize>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(usize, usize), ShardError> {
    let num = |name: &str| -> Result<Option<usize>, ShardError> {
        match env(name) {
            None => Ok(None),
            Some(v) => v
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| ShardError::NotANumber {
                    var: name.into(),
                    value: v,
                }),
        }
    };
    let (i, n) = if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
        let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
        if id < min || (id - min) % step != 0 {
            return Err(ShardError::OffStep { id, min, step });
        }
        let n = match (num("SLURM_ARRAY_TASK_COUNT")?, shards) {
            (Some(tasks), Some(shards)) if tasks != shards => {
                return Err(ShardError::Disagree { shards, tasks });
            }
            (Some(c), _) => c,
            (None, Some(s)) => s,
            (None, None) => {
                return Err(ShardError::NoCount {
                    scheduler: "the Slurm array (no SLURM_ARRAY_TASK_COUNT)",
                });
            }
        };
        ((id - min) / step, n)
    } else if let Some(i) = num("JOB_COMPLETION_INDEX")? {
        let n = shards.ok_or(ShardError::NoCount {
            scheduler: "a Kubernetes Indexed Job (its completions)",
        })?;
        (i, n)
    } else {
        return Err(ShardError::NoScheduler);
    };
    shard(i, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_auto_reads_slurm_arrays_and_indexed_jobs() {
        let env = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            move |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        };
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "7"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert_eq!(shard_from_env(None, &env(&slurm)).unwrap(), (3, 4));
        assert_eq!(
            shard_from_env(Some(5), &env(&slurm)),
            Err(ShardError::Disagree {
                shards: 5,
                tasks: 4
            })
        );
        let odd = [
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert_eq!(
            shard_from_env(None, &env(&odd)),
            Err(ShardError::OffStep {
                id: 2,
                min: 1,
                step: 2
            })
        );
        let plain = [
            ("SLURM_ARRAY_TASK_ID", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ];
        assert_eq!(shard_from_env(None, &env(&plain)).unwrap(), (0, 2));
        let k8s = [("JOB_COMPLETION_INDEX", "2")];
        assert_eq!(shard_from_env(Some(3), &env(&k8s)).unwrap(), (2, 3));
        assert!(matches!(
            shard_from_env(None, &env(&k8s)),
            Err(ShardError::NoCount { .. })
        ));
        assert_eq!(
            shard_from_env(Some(2), &env(&k8s)),
            Err(ShardError::OutOfRange { i: 2, n: 2 })
        );
        let e = shard_from_env(Some(2), &env(&[])).unwrap_err();
        assert_eq!(e, ShardError::NoScheduler);
        let e = e.to_string();
        assert!(
            e.contains("SLURM_ARRAY_TASK_ID") && e.contains("JOB_COMPLETION_INDEX"),
            "{e}"
        );
        let junk = [("JOB_COMPLETION_INDEX", "x")];
        assert!(matches!(
            shard_from_env(Some(2), &env(&junk)),
            Err(ShardError::NotANumber { var, .. }) if var == "JOB_COMPLETION_INDEX"
        ));
        assert_eq!(parse_shard("1/4"), Ok((1, 4)));
        assert!(matches!(parse_shard("1-4"), Err(ShardError::Syntax { .. })));
    }
}
