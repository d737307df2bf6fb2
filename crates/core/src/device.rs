//! Device names: `auto`, `cpu`, `cuda`, `cuda:N`, how they are written into
//! metrics, and which GPU each of several processes of one job takes.

use crate::error::{CoreError, Result};
use tch::{Device, Tensor};

/// Parse `auto|cpu|cuda|cuda:N`. `auto` picks the first GPU when one is usable.
/// Asking for CUDA where none is usable is an error, never a silent CPU run.
pub fn parse_device(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    let cuda = |i: usize| {
        if !tch::Cuda::is_available() {
            return Err(CoreError::Device(format!(
                "'{spec}': CUDA is not available (no GPU, or libtorch without CUDA; see `kd env`)"
            )));
        }
        let n = tch::Cuda::device_count() as usize;
        if i >= n {
            return Err(CoreError::Device(format!(
                "'{spec}': only {n} CUDA device(s)"
            )));
        }
        Ok(Device::Cuda(i))
    };
    match spec.as_str() {
        "auto" => {
            if tch::Cuda::is_available() {
                return Ok(Device::Cuda(0));
            }
            if let Some(gpu) = nvidia_device_present() {
                tracing::warn!(
                    "--device auto: an NVIDIA GPU is present ({gpu}) but CUDA is unusable: {}; \
                     running on the CPU",
                    cuda_unusable_reason()
                );
            }
            Ok(Device::Cpu)
        }
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => cuda(0),
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => cuda(i),
            _ => Err(CoreError::Device(format!(
                "'{spec}': expected auto, cpu, cuda or cuda:N"
            ))),
        },
    }
}

/// Evidence of an NVIDIA GPU on this machine, whatever libtorch thinks.
fn nvidia_device_present() -> Option<String> {
    ["/proc/driver/nvidia/version", "/dev/nvidia0"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(str::to_string)
}

/// Why libtorch sees no GPU where one is present, as far as can be told
/// without CUDA: a CPU-only build, or a driver older than the build needs.
fn cuda_unusable_reason() -> String {
    let build = env!("KD_LIBTORCH_VERSION");
    let Some(cu) = build.split_once("+cu").map(|(_, c)| c) else {
        return format!("this libtorch ({build}) is not a CUDA build");
    };
    // cu130 -> 13.0; each CUDA major needs a minimum driver branch.
    let major = cu.get(..cu.len().saturating_sub(1)).unwrap_or(cu);
    let needs = match major {
        "13" => "r580 or newer",
        "12" => "r525 or newer",
        _ => "a driver new enough for it",
    };
    let driver = std::fs::read_to_string("/proc/driver/nvidia/version")
        .ok()
        .and_then(|t| {
            t.split_whitespace()
                .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()) && w.contains('.'))
                .map(str::to_string)
        })
        .unwrap_or_else(|| "unknown".into());
    format!(
        "libtorch {build} needs NVIDIA driver {needs} (this machine's: {driver}; \
         `nvidia-smi` shows it), and sees the GPU only when the driver loads"
    )
}

/// The device of process `local_index` of `processes` on this machine (a
/// data-parallel rank, a cache shard worker), `visible` GPUs being visible.
///
/// `cuda` (or `auto` that found CUDA) means GPU `local_index` modulo the
/// visible count: one GPU per process under torchrun on an 8-GPU node, and
/// GPU 0 where the launcher shows each task only its own (Slurm's
/// `--gpus-per-task`). An explicit `cuda:N` would put every process on one
/// GPU, so it is refused when there are several. A single process keeps
/// what it asked for.
pub fn place(
    device: Device,
    spec: &str,
    local_index: usize,
    processes: usize,
    visible: usize,
) -> Result<Device> {
    let Device::Cuda(_) = device else {
        return Ok(device);
    };
    if processes <= 1 {
        return Ok(device);
    }
    if spec.contains(':') {
        return Err(CoreError::Device(format!(
            "'{spec}' with {processes} processes would put all of them on one GPU: use \
             --device cuda, which gives process i GPU i of the visible ones"
        )));
    }
    if visible == 0 {
        return Err(CoreError::Device(format!(
            "'{spec}': no CUDA device is visible to this process"
        )));
    }
    let gpu = local_index % visible;
    if local_index >= visible && visible > 1 {
        tracing::warn!(
            "process {local_index} on this machine shares GPU {gpu} with process {gpu}: \
             only {visible} GPUs are visible"
        );
    }
    Ok(Device::Cuda(gpu))
}

/// Reproducible GPU runs: deterministic algorithms everywhere (an op that
/// has none fails, naming itself), cuDNN's deterministic algorithms without
/// autotuning, and cuBLAS's fixed workspace (`CUBLAS_WORKSPACE_CONFIG`,
/// unless already set). Call before the first CUDA work. On the CPU kd's
/// runs are bit-identical without it.
pub fn set_deterministic(on: bool) -> Result<()> {
    crate::shim::set_deterministic(on).map_err(|e| CoreError::Device(format!("deterministic: {e}")))
}

/// TF32 (float32 matmuls and convolutions at 19-bit precision, on GPUs
/// from Ampere on) on or off. libtorch allows it for convolutions by
/// default; a logit store is built with it off, so that its float32 logits
/// match a CPU recomputation within `kd cache verify`'s tolerance.
pub fn set_tf32(on: bool) -> Result<()> {
    crate::shim::set_tf32(on).map_err(|e| CoreError::Device(format!("tf32: {e}")))
}

/// Whether float32 matmuls may use TF32 now.
pub fn tf32_allowed() -> bool {
    crate::shim::tf32_allowed()
}

/// A host tensor (a batch assembled on the CPU) moved to `device` without
/// making the host wait for the GPU: copied from pinned memory and
/// asynchronously on CUDA (the copy is ordered before any kernel that reads
/// it, on the same stream); unchanged on the CPU.
pub fn upload(t: Tensor, device: Device) -> Tensor {
    match device {
        Device::Cuda(_) if t.device() == Device::Cpu => {
            t.pin_memory(device)
                .to_device_(device, t.kind(), true, false)
        }
        _ => t.to_device(device),
    }
}

/// A short name for a device, as recorded in metrics.
pub fn device_name(d: Device) -> String {
    match d {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_take_the_visible_gpus_in_turn() {
        let cuda = Device::Cuda(0);
        // torchrun on an 8-GPU node: rank i on GPU i.
        for i in 0..8 {
            assert_eq!(place(cuda, "cuda", i, 8, 8).unwrap(), Device::Cuda(i));
        }
        // A launcher that shows each task its own GPU: all on their GPU 0.
        for i in 0..4 {
            assert_eq!(place(cuda, "cuda", i, 4, 1).unwrap(), Device::Cuda(0));
        }
        // More processes than GPUs: they share, in turn.
        assert_eq!(place(cuda, "auto", 5, 6, 4).unwrap(), Device::Cuda(1));
        // One process keeps what it asked for, explicit index included.
        assert_eq!(
            place(Device::Cuda(3), "cuda:3", 0, 1, 8).unwrap(),
            Device::Cuda(3)
        );
        // The CPU is the CPU, however many processes.
        assert_eq!(place(Device::Cpu, "cpu", 3, 8, 8).unwrap(), Device::Cpu);
    }

    #[test]
    fn an_explicit_gpu_for_several_processes_is_refused() {
        let e = place(Device::Cuda(0), "cuda:0", 1, 2, 8).unwrap_err();
        assert!(matches!(e, CoreError::Device(_)));
        assert!(e.to_string().contains("--device cuda"), "{e}");
        assert!(place(Device::Cuda(0), "cuda", 0, 2, 0).is_err());
    }

    #[test]
    fn tf32_and_determinism_switch_and_restore() {
        set_tf32(true).unwrap();
        assert!(tf32_allowed());
        set_tf32(false).unwrap();
        assert!(!tf32_allowed());
        set_deterministic(true).unwrap();
        assert_eq!(
            std::env::var("CUBLAS_WORKSPACE_CONFIG").as_deref(),
            Ok(":4096:8")
        );
        // A CPU computation runs as before under deterministic mode.
        let x = tch::Tensor::arange(6, (tch::Kind::Float, Device::Cpu));
        assert_eq!(f64::try_from(x.sum(tch::Kind::Float)).unwrap(), 15.0);
        set_deterministic(false).unwrap();
    }

    #[test]
    fn parses_cpu_and_rejects_garbage() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert!(parse_device("tpu").is_err());
        assert!(parse_device("cuda:x").is_err());
        if !tch::Cuda::is_available() {
            let e = parse_device("cuda").unwrap_err().to_string();
            assert!(e.contains("not available"), "{e}");
            assert_eq!(parse_device("auto").unwrap(), Device::Cpu);
        }
    }
}
