// Compile the c10d shim (cpp/kd_dist.cpp) against the headers of the very
// libtorch torch-sys links (the PyTorch wheel of scripts/setup-libtorch.sh,
// or $LIBTORCH), and Gloo's headers, which the wheel does not ship (see
// scripts/setup-libtorch.sh: $VENV/kd-gloo/include, or $KD_GLOO_INCLUDE).
use std::env;
use std::path::{Path, PathBuf};

include!("../../scripts/link_torch.rs");
include!("../../scripts/torch_cxx.rs");

/// The virtualenv above a wheel's `torch/lib` (the directory with pyvenv.cfg).
fn venv_of(lib: &Path) -> Option<PathBuf> {
    lib.ancestors()
        .find(|d| d.join("pyvenv.cfg").is_file())
        .map(Path::to_path_buf)
}

fn gloo_include(lib: &Path) -> PathBuf {
    println!("cargo:rerun-if-env-changed=KD_GLOO_INCLUDE");
    let candidates: Vec<PathBuf> = match env::var_os("KD_GLOO_INCLUDE") {
        Some(p) => {
            let p = PathBuf::from(p);
            if p.join("gloo/rendezvous/store.h").is_file() {
                return p;
            }
            fail(&format!(
                "KD_GLOO_INCLUDE = {}: no gloo/rendezvous/store.h there",
                p.display()
            ))
        }
        None => venv_of(lib)
            .into_iter()
            .map(|v| v.join("kd-gloo/include"))
            // A plain libtorch ($LIBTORCH): beside it.
            .chain(std::iter::once(lib.join("../kd-gloo/include")))
            .collect(),
    };
    for c in &candidates {
        if c.join("gloo/rendezvous/store.h").is_file() {
            return c.clone();
        }
    }
    fail(&format!(
        "Gloo headers not found (looked in {}); run scripts/setup-libtorch.sh, which unpacks Debian's libgloo-dev there, or set KD_GLOO_INCLUDE to a directory holding gloo/context.h",
        candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn main() {
    link_torch();
    println!("cargo:rerun-if-changed=cpp/kd_dist.cpp");
    let lib = torch_lib();
    let include = lib.join("../include");
    if !include
        .join("torch/csrc/distributed/c10d/ProcessGroupGloo.hpp")
        .is_file()
    {
        fail(&format!(
            "{} lacks torch/csrc/distributed/c10d/ProcessGroupGloo.hpp (a libtorch without distributed support?)",
            include.display()
        ));
    }
    let gloo = gloo_include(&lib);
    torch_cxx_build(&lib)
        .file("cpp/kd_dist.cpp")
        .include(&gloo)
        // ProcessGroupGloo.hpp is empty unless the build says Gloo is in.
        .define("USE_C10D_GLOO", None)
        .compile("kd_dist");
    link_shim(&lib);
}
