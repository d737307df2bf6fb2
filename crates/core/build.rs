// Record the git revision so every manifest names the code that wrote it,
// link libtorch so tests and binaries find it without LD_LIBRARY_PATH, and
// compile the shim (cpp/ops.cpp: fused AdamW, autocast) against the same
// libtorch's headers.
use std::process::Command;

include!("../../scripts/link_torch.rs");
include!("../../scripts/torch_cxx.rs");

fn main() {
    link_torch();
    println!("cargo:rerun-if-changed=cpp/ops.cpp");
    let lib = torch_lib();
    torch_cxx_build(&lib)
        .file("cpp/ops.cpp")
        .opt_level(2)
        .compile("kd_core_ops");
    link_shim(&lib);
    let rev = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    let rev = if dirty { format!("{rev}-dirty") } else { rev };
    println!("cargo:rustc-env=KD_GIT_REV={rev}");
    println!("cargo:rerun-if-changed=../../.git/HEAD");
    println!("cargo:rerun-if-changed=../../.git/index");
}
