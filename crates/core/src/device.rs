//! Device names: `auto`, `cpu`, `cuda`, `cuda:N`, and how they are written
//! into metrics.

use crate::error::{CoreError, Result};
use tch::Device;

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
        "auto" => Ok(Device::cuda_if_available()),
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
