//! `kd env`: what libtorch this binary runs on (version, threads, CUDA
//! devices), for bug reports and GPU checks.

use crate::ui::out;
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// Machine-readable output.
    #[arg(long)]
    json: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let cuda = tch::Cuda::is_available();
    let n = if cuda { tch::Cuda::device_count() } else { 0 };
    let devices: Vec<String> = (0..n).map(|i| format!("cuda:{i}")).collect();
    let info = json!({
        "kd_version": kd_core::TOOL_VERSION,
        "git_rev": kd_core::GIT_REV,
        "libtorch": env!("KD_LIBTORCH_VERSION"),
        "libtorch_loaded_from": loaded_libtorch(),
        // The folder the `kd` launcher chose (absent when kd-torch was
        // started directly).
        "torch_lib": std::env::var("KD_TORCH_LIB").ok(),
        "threads": tch::get_num_threads(),
        "interop_threads": tch::get_num_interop_threads(),
        "rayon_threads": rayon::current_num_threads(),
        "cuda_available": cuda,
        "cudnn_available": tch::Cuda::cudnn_is_available(),
        "cuda_devices": devices,
    });
    if a.json {
        out(serde_json::to_string_pretty(&info)?);
    } else {
        out(format!(
            "kd        {} ({})",
            kd_core::TOOL_VERSION,
            kd_core::GIT_REV
        ));
        out(format!(
            "libtorch  {} (loaded from {})",
            info["libtorch"].as_str().unwrap_or("?"),
            info["libtorch_loaded_from"].as_str().unwrap_or("?")
        ));
        out(format!(
            "threads   {} intra-op, {} inter-op, {} rayon",
            info["threads"], info["interop_threads"], info["rayon_threads"]
        ));
        out(format!(
            "cuda      {}",
            if cuda {
                format!("available: {}", devices.join(", "))
            } else {
                "not available".into()
            }
        ));
        out(format!(
            "cudnn     {}",
            if tch::Cuda::cudnn_is_available() {
                "available"
            } else {
                "not available"
            }
        ));
    }
    Ok(())
}

/// Where the dynamic loader found libtorch, from this process's memory map.
fn loaded_libtorch() -> String {
    std::fs::read_to_string("/proc/self/maps")
        .ok()
        .and_then(|maps| {
            maps.lines()
                .filter_map(|l| l.split_whitespace().nth(5))
                .find(|p| p.contains("libtorch_cpu"))
                .map(|p| {
                    p.rsplit_once('/')
                        .map(|(d, _)| d.to_string())
                        .unwrap_or_default()
                })
        })
        .unwrap_or_else(|| "unknown".into())
}
