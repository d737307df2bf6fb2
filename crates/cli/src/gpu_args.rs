//! Flags of the training stages that change how a step runs on a GPU,
//! never what it computes on the CPU.

#[derive(clap::Args)]
pub struct GpuArgs {
    /// Read the training loss and its parts from the device every N steps
    /// (default 10), so that a GPU never waits for the host in between. A
    /// loss that is not finite stops the run at the next read, naming its
    /// step. Progress and metrics are the same figures either way.
    #[arg(long, env = "KD_SYNC_EVERY", value_name = "N")]
    pub sync_every: Option<usize>,
    /// Deterministic GPU kernels (deterministic algorithms and cuDNN,
    /// cuBLAS's fixed workspace): the same run on the same GPU gives the same
    /// weights, somewhat slower; an op without a deterministic kernel stops
    /// the run, naming itself. The CPU is deterministic without it.
    #[arg(long, env = "KD_DETERMINISTIC")]
    pub deterministic: bool,
}

impl GpuArgs {
    /// Apply the process-wide switches (before any CUDA work) and return
    /// `FitOptions::sync_every`.
    pub fn apply(&self) -> anyhow::Result<usize> {
        if self.sync_every == Some(0) {
            anyhow::bail!("setting sync_every = 0: must be at least 1 (steps between reads)");
        }
        if self.deterministic {
            kd_core::device::set_deterministic(true)?;
        }
        Ok(self.sync_every.unwrap_or(0))
    }
}
