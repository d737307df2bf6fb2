//! kd-dist: data-parallel collectives for the training loop, over libtorch's
//! own c10d (a TCPStore rendezvous and a Gloo process group).
//!
//! The launch contract is torchrun's: `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//! `MASTER_ADDR`, `MASTER_PORT` (and under torchrun its agent's store,
//! `TORCHELASTIC_USE_AGENT_STORE`), or under `srun` Slurm's `SLURM_PROCID`,
//! `SLURM_NTASKS`, `SLURM_LOCALID` together with `MASTER_ADDR` and
//! `MASTER_PORT`. Without them, or with a world of one, there is no group
//! and training runs exactly as in one process.
//!
//! Gloo carries CPU and CUDA tensors alike; NCCL is not compiled in (see the
//! README, "More than one machine").

mod ffi;

use std::fmt;
use std::time::Duration;
use tch::Tensor;

/// A data-parallel error: one line naming what failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// Where this process sits in a data-parallel job, read from the launcher's
/// environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world_size: usize,
    /// Rank on this machine (which GPU `cuda` means, see [`Launch::device_index`]).
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent already serves the store at MASTER_ADDR:MASTER_PORT,
    /// so every rank is a client; otherwise rank 0 serves it.
    pub agent_store: bool,
    /// Keys live under this prefix: a torchrun restart (or another user of
    /// the agent's store) never reads an earlier attempt's keys.
    pub store_prefix: String,
}

fn parse<T: std::str::FromStr>(name: &str, v: &str, want: &str) -> Result<T> {
    v.trim().parse().map_err(|_| {
        Error(format!(
            "environment variable {name} = '{v}': must be {want}"
        ))
    })
}

impl Launch {
    /// From the process environment; `None` means one process.
    pub fn from_env() -> Result<Option<Launch>> {
        Launch::from_vars(|k| std::env::var(k).ok())
    }

    /// From any variable lookup (tests pass a map).
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
        let (rank_var, size_var, local_var) = if get("WORLD_SIZE").is_some() {
            ("RANK", "WORLD_SIZE", "LOCAL_RANK")
        } else if get("SLURM_NTASKS").is_some() && get("MASTER_PORT").is_some() {
            // Only with MASTER_PORT: a batch script's own environment holds
            // SLURM_NTASKS too, and a single kd there must not wait for peers.
            ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")
        } else {
            return Ok(None);
        };
        let size_s = get(size_var).unwrap_or_default();
        let world_size: usize = parse(size_var, &size_s, "an integer >= 1")?;
        if world_size == 0 {
            return Err(Error(format!(
                "environment variable {size_var} = '{size_s}': must be an integer >= 1"
            )));
        }
        if world_size == 1 {
            return Ok(None);
        }
        let need = |name: &str| {
            get(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| {
                    Error(format!(
                        "environment variable {name} is not set but {size_var} = {world_size} asks for data-parallel training (launch with torchrun or srun, or unset {size_var})"
                    ))
                })
        };
        let rank_s = need(rank_var)?;
        let want = format!("an integer in [0, {world_size})");
        let rank: usize = parse(rank_var, &rank_s, &want)?;
        if rank >= world_size {
            return Err(Error(format!(
                "environment variable {rank_var} = '{rank_s}': must be {want}"
            )));
        }
        let local_rank = match get(local_var) {
            Some(v) => parse(local_var, &v, "an integer >= 0")?,
            None => 0,
        };
        let master_addr = need("MASTER_ADDR")?.trim().to_string();
        let port_s = need("MASTER_PORT")?;
        let master_port: u16 = parse("MASTER_PORT", &port_s, "a port number in [1, 65535]")?;
        if master_port == 0 {
            return Err(Error(format!(
                "environment variable MASTER_PORT = '{port_s}': must be a port number in [1, 65535]"
            )));
        }
        let agent_store = get("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Some("True");
        let attempt = get("TORCHELASTIC_RESTART_COUNT").unwrap_or_else(|| "0".into());
        Ok(Some(Launch {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
            agent_store,
            store_prefix: format!("kd/{attempt}/"),
        }))
    }
}

/// A joined data-parallel group of `size` processes. Every collective blocks
/// until all ranks made the same call, or fails within the timeout.
pub struct Group {
    handle: ffi::Handle,
    rank: usize,
    size: usize,
    local_rank: usize,
    timeout: Duration,
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Group {
    /// Join the group `launch` describes. `timeout` bounds the rendezvous and
    /// every later collective: a peer that died or stalls longer makes the
    /// call fail instead of hanging.
    pub fn join(launch: &Launch, timeout: Duration) -> Result<Group> {
        let ms = i64::try_from(timeout.as_millis())
            .ok()
            .filter(|&ms| ms > 0)
            .ok_or_else(|| Error(format!("collective timeout {timeout:?}: must be > 0")))?;
        tracing::info!(
            rank = launch.rank,
            world_size = launch.world_size,
            master = %format!("{}:{}", launch.master_addr, launch.master_port),
            agent_store = launch.agent_store,
            "joining data-parallel group (Gloo)"
        );
        let handle = ffi::Handle::new(
            &launch.master_addr,
            launch.master_port,
            launch.rank,
            launch.world_size,
            launch.rank == 0 && !launch.agent_store,
            &launch.store_prefix,
            ms,
        )
        .map_err(|e| {
            Error(format!(
                "data-parallel rendezvous at {}:{} failed for rank {} of {} within {}: {e}",
                launch.master_addr,
                launch.master_port,
                launch.rank,
                launch.world_size,
                secs(timeout)
            ))
        })?;
        Ok(Group {
            handle,
            rank: launch.rank,
            size: launch.world_size,
            local_rank: launch.local_rank,
            timeout,
        })
    }

    /// [`Launch::from_env`] then [`Group::join`]; `None` for one process.
    pub fn from_env(timeout: Duration) -> Result<Option<Group>> {
        Launch::from_env()?
            .map(|l| Group::join(&l, timeout))
            .transpose()
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    pub fn is_leader(&self) -> bool {
        self.rank == 0
    }

    fn failed(&self, op: &str, e: String) -> Error {
        Error(format!(
            "data-parallel {op} failed on rank {} of {}: {e} (a peer exited or stalled past the {} collective timeout; rerun every rank to resume from the last checkpoint)",
            self.rank,
            self.size,
            secs(self.timeout)
        ))
    }

    fn contiguous(op: &str, t: &Tensor) -> Result<()> {
        if t.is_contiguous() {
            Ok(())
        } else {
            Err(Error(format!(
                "data-parallel {op}: tensor of shape {:?} is not contiguous",
                t.size()
            )))
        }
    }

    /// In place: `t` becomes the sum over ranks. `t` must be contiguous.
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        Group::contiguous("all-reduce", t)?;
        self.handle
            .all_reduce_sum(t)
            .map_err(|e| self.failed("all-reduce", e))
    }

    /// In place: `t` becomes rank `root`'s. `t` must be contiguous.
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        Group::contiguous("broadcast", t)?;
        self.handle
            .broadcast(t, root)
            .map_err(|e| self.failed("broadcast", e))
    }

    /// Wait until every rank gets here.
    pub fn barrier(&self) -> Result<()> {
        self.handle.barrier().map_err(|e| self.failed("barrier", e))
    }
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Option<Launch>> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Launch::from_vars(|k| m.get(k).cloned())
    }

    const TORCHRUN: [(&str, &str); 5] = [
        ("RANK", "1"),
        ("WORLD_SIZE", "2"),
        ("LOCAL_RANK", "1"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", "29500"),
    ];

    #[test]
    fn no_launcher_or_a_world_of_one_is_one_process() {
        assert_eq!(launch(&[]).unwrap(), None);
        assert_eq!(launch(&[("WORLD_SIZE", "1"), ("RANK", "0")]).unwrap(), None);
        // A Slurm batch script's environment without MASTER_PORT: one process.
        assert_eq!(
            launch(&[("SLURM_NTASKS", "4"), ("SLURM_PROCID", "0")]).unwrap(),
            None
        );
    }

    #[test]
    fn torchrun_and_srun_environments() {
        let l = launch(&TORCHRUN).unwrap().unwrap();
        assert_eq!((l.rank, l.world_size, l.local_rank), (1, 2, 1));
        assert_eq!(
            (l.master_addr.as_str(), l.master_port),
            ("127.0.0.1", 29500)
        );
        assert!(!l.agent_store);
        assert_eq!(l.store_prefix, "kd/0/");
        let mut v = TORCHRUN.to_vec();
        v.push(("TORCHELASTIC_USE_AGENT_STORE", "True"));
        v.push(("TORCHELASTIC_RESTART_COUNT", "3"));
        let l = launch(&v).unwrap().unwrap();
        assert!(l.agent_store);
        assert_eq!(l.store_prefix, "kd/3/");
        let l = launch(&[
            ("SLURM_PROCID", "3"),
            ("SLURM_NTASKS", "4"),
            ("SLURM_LOCALID", "1"),
            ("MASTER_ADDR", "node7"),
            ("MASTER_PORT", "29400"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((l.rank, l.world_size, l.local_rank), (3, 4, 1));
    }

    #[test]
    fn bad_environments_name_the_variable() {
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (vec![("WORLD_SIZE", "two")], "WORLD_SIZE = 'two'"),
            (vec![("WORLD_SIZE", "0")], "WORLD_SIZE = '0'"),
            (vec![("WORLD_SIZE", "2")], "RANK is not set"),
            (
                vec![("WORLD_SIZE", "2"), ("RANK", "2")],
                "RANK = '2': must be an integer in [0, 2)",
            ),
            (
                vec![("WORLD_SIZE", "2"), ("RANK", "0")],
                "MASTER_ADDR is not set",
            ),
            (
                vec![
                    ("WORLD_SIZE", "2"),
                    ("RANK", "0"),
                    ("MASTER_ADDR", "h"),
                    ("MASTER_PORT", "70000"),
                ],
                "MASTER_PORT = '70000'",
            ),
            (
                vec![
                    ("WORLD_SIZE", "2"),
                    ("RANK", "0"),
                    ("LOCAL_RANK", "-1"),
                    ("MASTER_ADDR", "h"),
                    ("MASTER_PORT", "1"),
                ],
                "LOCAL_RANK = '-1'",
            ),
        ];
        for (vars, want) in cases {
            let e = launch(&vars).unwrap_err().to_string();
            assert!(e.contains(want), "{e} (wanted {want})");
        }
    }
}
