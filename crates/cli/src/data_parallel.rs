//! The CLI side of data-parallel training: join the group that torchrun's or
//! srun's environment describes, and put each rank on its own GPU.

use kd_core::fit::{GradReduce, check};
use kd_dist::{Backend, BackendChoice, Group};
use std::rc::Rc;
use std::time::Duration;
use tch::Device;

#[derive(clap::Args)]
pub struct DistArgs {
    /// Data-parallel training (ranks launched by torchrun or srun, which set
    /// RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT; see the
    /// README, "More than one machine"): seconds the start-up rendezvous and
    /// each collective may wait for the other ranks before this rank stops
    /// with an error. Rank 0's evaluation and checkpoint count against it.
    /// Does nothing in a single process.
    #[arg(
        long,
        env = "KD_DIST_TIMEOUT",
        default_value_t = 600.0,
        value_name = "SECS"
    )]
    pub dist_timeout: f64,
    /// Data-parallel training: the collectives' library. auto: NCCL (GPU to
    /// GPU) for CUDA devices where this kd was built with it, Gloo
    /// otherwise; gloo: Gloo for any device (CUDA tensors go through the
    /// host); nccl: NCCL, or an error on the CPU or in a build without it.
    #[arg(
        long,
        env = "KD_DIST_BACKEND",
        default_value = "auto",
        value_parser = clap::builder::PossibleValuesParser::new(BackendChoice::NAMES),
        value_name = "BACKEND"
    )]
    pub dist_backend: String,
    /// Data-parallel training: gradients are summed over the ranks in
    /// buckets of about this many MiB, each as soon as the backward pass has
    /// computed it, so the communication overlaps the rest of the backward
    /// pass (PyTorch DDP's scheme and default size); 0 sums them all in one
    /// all-reduce after the backward pass. The sums are the same.
    #[arg(
        long,
        env = "KD_DIST_BUCKET_MB",
        default_value_t = (kd_dist::DEFAULT_BUCKET_BYTES >> 20) as f64,
        value_name = "MIB"
    )]
    pub dist_bucket_mb: f64,
}

impl DistArgs {
    /// The group of this process, or `None` when it trains alone; `device`
    /// is the one asked for (before each rank is put on its own GPU).
    pub fn join(&self, device: Device) -> anyhow::Result<Option<Rc<Group>>> {
        check::positive("dist_timeout", self.dist_timeout)?;
        if self.dist_timeout > 1e9 {
            anyhow::bail!(
                "setting dist_timeout = {}: must be at most 1e9 seconds",
                self.dist_timeout
            );
        }
        let timeout = Duration::from_secs_f64(self.dist_timeout);
        let Some(launch) = kd_dist::Launch::from_env()? else {
            return Ok(None);
        };
        // Refused before the rendezvous, so every rank stops at once.
        let backend = Backend::resolve(self.dist_backend.parse()?, device)?;
        Ok(Some(Rc::new(Group::join(&launch, timeout, backend)?)))
    }
}

impl DistArgs {
    /// How a step sums its gradients over the ranks (checked in a single
    /// process too, so a script's bad setting fails before it scales out).
    pub fn grad_reduce(&self) -> anyhow::Result<GradReduce> {
        Ok(GradReduce::from_mib(self.dist_bucket_mb)?)
    }
}

/// The device of this rank: `kd_core::device::place` with the group's local
/// rank and size and the GPUs this process sees.
pub fn place(device: Device, spec: &str, group: Option<&Group>) -> anyhow::Result<Device> {
    let Some(g) = group else {
        return Ok(device);
    };
    Ok(kd_core::device::place(
        device,
        spec,
        g.local_rank(),
        g.size(),
        visible_gpus(device),
    )?)
}

/// CUDA devices visible to this process (none asked about for the CPU).
pub fn visible_gpus(device: Device) -> usize {
    match device {
        Device::Cuda(_) => usize::try_from(tch::Cuda::device_count()).unwrap_or(0),
        _ => 0,
    }
}
