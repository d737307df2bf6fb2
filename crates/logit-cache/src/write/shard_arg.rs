//! `--shard i/n` and `--shard auto`: which share of the shards this worker
//! fills.

use crate::error::{CacheError, Result};

/// Parse `i/n`.
pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let bad = || {
        CacheError::Invalid(format!(
            "--shard '{s}': expected i/n with 0 <= i < n (e.g. 0/4)"
        ))
    };
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let (i, n): (usize, usize) = (
        i.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if n == 0 || i >= n {
        return Err(CacheError::Invalid(format!(
            "--shard {i}/{n}: out of range (need 0 <= i < n)"
        )));
    }
    Ok((i, n))
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
) -> Result<(usize, usize)> {
    let num = |name: &str| -> Result<Option<usize>> {
        match env(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| {
                CacheError::Invalid(format!("--shard auto: {name}={v:?} is not a number"))
            }),
        }
    };
    let (i, n) = if let Some(id) = num("SLURM_ARRAY_TASK_ID")? {
        let min = num("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let step = num("SLURM_ARRAY_TASK_STEP")?.unwrap_or(1).max(1);
        if id < min || (id - min) % step != 0 {
            return Err(CacheError::Invalid(format!(
                "--shard auto: SLURM_ARRAY_TASK_ID {id} is not MIN {min} + k * STEP {step}"
            )));
        }
        let count = num("SLURM_ARRAY_TASK_COUNT")?;
        let n = match (count, shards) {
            (Some(c), Some(s)) if c != s => {
                return Err(CacheError::Invalid(format!(
                    "--shard auto: --shards {s} but the Slurm array has {c} tasks"
                )));
            }
            (Some(c), _) => c,
            (None, Some(s)) => s,
            (None, None) => {
                return Err(CacheError::Invalid(
                    "--shard auto: SLURM_ARRAY_TASK_COUNT is not set; give --shards N".into(),
                ));
            }
        };
        ((id - min) / step, n)
    } else if let Some(i) = num("JOB_COMPLETION_INDEX")? {
        let n = shards.ok_or_else(|| {
            CacheError::Invalid(
                "--shard auto under a Kubernetes Indexed Job needs --shards N (the Job's completions)".into(),
            )
        })?;
        (i, n)
    } else {
        return Err(CacheError::Invalid(
            "--shard auto: neither SLURM_ARRAY_TASK_ID (Slurm job array) nor JOB_COMPLETION_INDEX \
             (Kubernetes Indexed Job) is set; give --shard i/n"
                .into(),
        ));
    };
    parse_shard(&format!("{i}/{n}"))
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
        assert!(
            shard_from_env(Some(5), &env(&slurm))
                .unwrap_err()
                .to_string()
                .contains("4 tasks")
        );
        let odd = [
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert!(shard_from_env(None, &env(&odd)).is_err());
        let plain = [
            ("SLURM_ARRAY_TASK_ID", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
        ];
        assert_eq!(shard_from_env(None, &env(&plain)).unwrap(), (0, 2));
        let k8s = [("JOB_COMPLETION_INDEX", "2")];
        assert_eq!(shard_from_env(Some(3), &env(&k8s)).unwrap(), (2, 3));
        assert!(
            shard_from_env(None, &env(&k8s))
                .unwrap_err()
                .to_string()
                .contains("--shards N")
        );
        assert!(
            shard_from_env(Some(2), &env(&k8s))
                .unwrap_err()
                .to_string()
                .contains("out of range")
        );
        let e = shard_from_env(Some(2), &env(&[])).unwrap_err().to_string();
        assert!(
            e.contains("SLURM_ARRAY_TASK_ID") && e.contains("JOB_COMPLETION_INDEX"),
            "{e}"
        );
        let junk = [("JOB_COMPLETION_INDEX", "x")];
        assert!(
            shard_from_env(Some(2), &env(&junk))
                .unwrap_err()
                .to_string()
                .contains("not a number")
        );
    }
}
