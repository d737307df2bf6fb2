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
//! The collectives run on Gloo (CPU and CUDA tensors alike, through the
//! host) or, for CUDA devices, on NCCL (GPU to GPU) where the build has it:
//! [`Backend::resolve`] picks one from what was asked and the device.

mod ffi;
mod reducer;

pub use reducer::{DEFAULT_BUCKET_BYTES, Reducer};

use std::fmt;
use std::time::Duration;
use tch::{Device, Tensor};

/// A data-parallel error: one line naming what failed, its parts as fields.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// A launcher variable that does not hold what the launch contract says.
    EnvValue {
        var: String,
        value: String,
        want: String,
    },
    /// A launcher variable missing though `size_var` asks for a group.
    EnvMissing {
        var: String,
        size_var: String,
        world_size: usize,
    },
    /// A collective timeout that is not a positive number of milliseconds.
    Timeout { timeout: Duration },
    /// Joining the group failed (c10d's own message in `cause`).
    Rendezvous {
        addr: String,
        port: u16,
        rank: usize,
        size: usize,
        timeout: Duration,
        cause: String,
    },
    /// A collective failed: a peer exited or stalled past the timeout.
    Collective {
        op: &'static str,
        rank: usize,
        size: usize,
        timeout: Duration,
        cause: String,
    },
    /// Collectives work on contiguous tensors only.
    NotContiguous { op: &'static str, shape: Vec<i64> },
    /// Rank 0 refused to start; the other ranks stop with it.
    LeaderStopped { rank: usize, size: usize },
    /// A backend name that is none of [`BackendChoice::NAMES`].
    BackendName { value: String },
    /// NCCL asked for on a device it cannot serve.
    NcclNeedsCuda { device: String },
    /// NCCL asked for from a build without it.
    NcclMissing { why: &'static str },
    /// A rank holds a different number of `what` than rank 0.
    Disagree {
        rank: usize,
        what: &'static str,
        mine: usize,
        leader: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::EnvValue { var, value, want } => {
                write!(f, "environment variable {var} = '{value}': must be {want}")
            }
            Error::EnvMissing {
                var,
                size_var,
                world_size,
            } => write!(
                f,
                "environment variable {var} is not set but {size_var} = {world_size} asks for data-parallel training (launch with torchrun or srun, or unset {size_var})"
            ),
            Error::Timeout { timeout } => {
                write!(f, "collective timeout {timeout:?}: must be > 0")
            }
            Error::Rendezvous {
                addr,
                port,
                rank,
                size,
                timeout,
                cause,
            } => write!(
                f,
                "data-parallel rendezvous at {addr}:{port} failed for rank {rank} of {size} within {}: {cause}",
                secs(*timeout)
            ),
            Error::Collective {
                op,
                rank,
                size,
                timeout,
                cause,
            } => write!(
                f,
                "data-parallel {op} failed on rank {rank} of {size}: {cause} (a peer exited or stalled past the {} collective timeout; rerun every rank to resume from the last checkpoint)",
                secs(*timeout)
            ),
            Error::NotContiguous { op, shape } => write!(
                f,
                "data-parallel {op}: tensor of shape {shape:?} is not contiguous"
            ),
            Error::LeaderStopped { rank, size } => write!(
                f,
                "rank 0 of {size} stopped before training (its error says why); rank {rank} stops too"
            ),
            Error::BackendName { value } => write!(
                f,
                "setting dist_backend: '{value}' is not one of {}",
                BackendChoice::NAMES.join(", ")
            ),
            Error::NcclNeedsCuda { device } => write!(
                f,
                "setting dist_backend = nccl: NCCL needs CUDA devices, and this run's device is {device} (use gloo, or auto)"
            ),
            Error::NcclMissing { why } => write!(
                f,
                "setting dist_backend = nccl: this kd has no NCCL: {why} (use gloo, or auto)"
            ),
            Error::Disagree {
                rank,
                what,
                mine,
                leader,
            } => write!(
                f,
                "rank {rank} reports {mine} {what}, rank 0 reports {leader}"
            ),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// The library a group's collectives run on; the numbers are the shim's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Gloo = 0,
    Nccl = 1,
}

/// The backend asked for (`--dist-backend`, `KD_DIST_BACKEND`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendChoice {
    /// NCCL for CUDA devices where it is compiled in, Gloo otherwise.
    #[default]
    Auto,
    Gloo,
    Nccl,
}

impl BackendChoice {
    pub const NAMES: [&'static str; 3] = ["auto", "gloo", "nccl"];
}

impl std::str::FromStr for BackendChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(BackendChoice::Auto),
            "gloo" => Ok(BackendChoice::Gloo),
            "nccl" => Ok(BackendChoice::Nccl),
            _ => Err(Error::BackendName { value: s.into() }),
        }
    }
}

/// Why NCCL is not in this build, or `None` when it is.
pub fn nccl_missing() -> Option<&'static str> {
    if ffi::has_nccl() {
        return None;
    }
    Some(match env!("KD_DIST_NCCL_MISSING") {
        "" => "the shim was built without it",
        why => why,
    })
}

impl Backend {
    /// The backend for training on `device`: NCCL needs CUDA tensors and
    /// this build's NCCL; Gloo takes any device.
    pub fn resolve(choice: BackendChoice, device: Device) -> Result<Backend> {
        let cuda = matches!(device, Device::Cuda(_));
        match choice {
            BackendChoice::Gloo => Ok(Backend::Gloo),
            BackendChoice::Nccl if !cuda => Err(Error::NcclNeedsCuda {
                device: format!("{device:?}").to_lowercase(),
            }),
            BackendChoice::Nccl => match nccl_missing() {
                None => Ok(Backend::Nccl),
                Some(why) => Err(Error::NcclMissing { why }),
            },
            BackendChoice::Auto if cuda && nccl_missing().is_none() => Ok(Backend::Nccl),
            BackendChoice::Auto => Ok(Backend::Gloo),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "Gloo",
            Backend::Nccl => "NCCL",
        }
    }
}

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

fn env_value(var: &str, value: &str, want: &str) -> Error {
    Error::EnvValue {
        var: var.into(),
        value: value.into(),
        want: want.into(),
    }
}

fn parse<T: std::str::FromStr>(name: &str, v: &str, want: &str) -> Result<T> {
    v.trim().parse().map_err(|_| env_value(name, v, want))
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
            return Err(env_value(size_var, &size_s, "an integer >= 1"));
        }
        if world_size == 1 {
            return Ok(None);
        }
        let need = |name: &str| {
            get(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| Error::EnvMissing {
                    var: name.into(),
                    size_var: size_var.into(),
                    world_size,
                })
        };
        let rank_s = need(rank_var)?;
        let want = format!("an integer in [0, {world_size})");
        let rank: usize = parse(rank_var, &rank_s, &want)?;
        if rank >= world_size {
            return Err(env_value(rank_var, &rank_s, &want));
        }
        let local_rank = match get(local_var) {
            Some(v) => parse(local_var, &v, "an integer >= 0")?,
            None => 0,
        };
        let master_addr = need("MASTER_ADDR")?.trim().to_string();
        let port_s = need("MASTER_PORT")?;
        let master_port: u16 = parse("MASTER_PORT", &port_s, "a port number in [1, 65535]")?;
        if master_port == 0 {
            return Err(env_value(
                "MASTER_PORT",
                &port_s,
                "a port number in [1, 65535]",
            ));
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
    backend: Backend,
    /// Where NCCL's collectives of host tensors run: this rank's GPU.
    staging: Device,
    rank: usize,
    size: usize,
    local_rank: usize,
    timeout: Duration,
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("backend", &self.backend)
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
    pub fn join(launch: &Launch, timeout: Duration, backend: Backend) -> Result<Group> {
        let ms = i64::try_from(timeout.as_millis())
            .ok()
            .filter(|&ms| ms > 0)
            .ok_or(Error::Timeout { timeout })?;
        tracing::info!(
            rank = launch.rank,
            world_size = launch.world_size,
            master = %format!("{}:{}", launch.master_addr, launch.master_port),
            agent_store = launch.agent_store,
            backend = backend.name(),
            "joining data-parallel group"
        );
        let handle = ffi::Handle::new(
            &launch.master_addr,
            launch.master_port,
            launch.rank,
            launch.world_size,
            launch.rank == 0 && !launch.agent_store,
            &launch.store_prefix,
            ms,
            backend,
        )
        .map_err(|cause| Error::Rendezvous {
            addr: launch.master_addr.clone(),
            port: launch.master_port,
            rank: launch.rank,
            size: launch.world_size,
            timeout,
            cause,
        })?;
        // The GPU this rank trains on, by the rule kd_core::device::place
        // applies: local rank i on visible GPU i (mod their count).
        let gpus = usize::try_from(tch::Cuda::device_count())
            .unwrap_or(0)
            .max(1);
        Ok(Group {
            handle,
            backend,
            staging: Device::Cuda(launch.local_rank % gpus),
            rank: launch.rank,
            size: launch.world_size,
            local_rank: launch.local_rank,
            timeout,
        })
    }

    /// [`Launch::from_env`] then [`Group::join`]; `None` for one process.
    pub fn from_env(timeout: Duration, backend: Backend) -> Result<Option<Group>> {
        Launch::from_env()?
            .map(|l| Group::join(&l, timeout, backend))
            .transpose()
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Run `op` on `t`, or, where NCCL meets a host tensor (the few small
    /// control values the loop exchanges), on a copy on this rank's GPU
    /// whose result is copied back.
    fn on_device(&self, t: &Tensor, op: impl FnOnce(&Tensor) -> Result<()>) -> Result<()> {
        if self.backend == Backend::Nccl && t.device() == Device::Cpu {
            let on_gpu = t.to_device(self.staging);
            op(&on_gpu)?;
            let _ng = tch::no_grad_guard();
            t.shallow_clone().copy_(&on_gpu);
            Ok(())
        } else {
            op(t)
        }
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

    fn failed(&self, op: &'static str, cause: String) -> Error {
        Error::Collective {
            op,
            rank: self.rank,
            size: self.size,
            timeout: self.timeout,
            cause,
        }
    }

    fn contiguous(op: &'static str, t: &Tensor) -> Result<()> {
        if t.is_contiguous() {
            Ok(())
        } else {
            Err(Error::NotContiguous {
                op,
                shape: t.size(),
            })
        }
    }

    /// In place: `t` becomes the sum over ranks. `t` must be contiguous.
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        Group::contiguous("all-reduce", t)?;
        self.on_device(t, |t| {
            self.handle
                .all_reduce_sum(t)
                .map_err(|e| self.failed("all-reduce", e))
        })
    }

    /// In place: `t` becomes rank `root`'s. `t` must be contiguous.
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        Group::contiguous("broadcast", t)?;
        self.on_device(t, |t| {
            self.handle
                .broadcast(t, root)
                .map_err(|e| self.failed("broadcast", e))
        })
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
    fn nccl_is_for_cuda_devices_and_auto_picks_gloo_on_the_cpu() {
        assert_eq!(
            Backend::resolve(BackendChoice::Auto, Device::Cpu),
            Ok(Backend::Gloo)
        );
        assert_eq!(
            Backend::resolve(BackendChoice::Gloo, Device::Cuda(0)),
            Ok(Backend::Gloo)
        );
        let e = Backend::resolve(BackendChoice::Nccl, Device::Cpu).unwrap_err();
        assert_eq!(
            e,
            Error::NcclNeedsCuda {
                device: "cpu".into()
            }
        );
        assert!(e.to_string().contains("NCCL needs CUDA devices"), "{e}");
        // On a CUDA device: NCCL where this build has it, else the reason.
        match (
            nccl_missing(),
            Backend::resolve(BackendChoice::Nccl, Device::Cuda(0)),
        ) {
            (None, r) => assert_eq!(r, Ok(Backend::Nccl)),
            (Some(why), r) => assert_eq!(r, Err(Error::NcclMissing { why })),
        }
        assert_eq!("NCCL".parse::<BackendChoice>(), Ok(BackendChoice::Nccl));
        assert!(matches!(
            "mpi".parse::<BackendChoice>(),
            Err(Error::BackendName { .. })
        ));
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
        assert_eq!(
            launch(&[("WORLD_SIZE", "2"), ("RANK", "0")]),
            Err(Error::EnvMissing {
                var: "MASTER_ADDR".into(),
                size_var: "WORLD_SIZE".into(),
                world_size: 2
            })
        );
    }
}
