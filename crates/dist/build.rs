// Compile the c10d shim (cpp/kd_dist.cpp) against the headers of the very
// libtorch torch-sys links (the PyTorch wheel of scripts/setup-libtorch.sh,
// or $LIBTORCH), and Gloo's headers, which the wheel does not ship (see
// scripts/setup-libtorch.sh: $VENV/kd-gloo/include, or $KD_GLOO_INCLUDE).
//
// NCCL goes in too where it can: a CUDA build of libtorch, with NCCL's and
// CUDA's headers (the wheel's nvidia/*/include, which setup-libtorch.sh
// completes, or $CUDA_HOME/include). Otherwise the shim is Gloo only, and
// asking for NCCL at run time says why (KD_DIST_NCCL_MISSING).
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

/// The include directories NCCL's process group needs, or why it cannot be
/// compiled here.
fn nccl_includes(lib: &Path, include: &Path) -> Result<Vec<PathBuf>, String> {
    println!("cargo:rerun-if-env-changed=KD_NCCL");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    if env::var("KD_NCCL").as_deref() == Ok("0") {
        return Err("the build was made with KD_NCCL=0".into());
    }
    if !lib.join("libtorch_cuda.so").is_file() {
        return Err(format!(
            "the libtorch in {} is a CPU build (no libtorch_cuda.so)",
            lib.display()
        ));
    }
    if !include
        .join("torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp")
        .is_file()
    {
        return Err(format!(
            "{} lacks torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp",
            include.display()
        ));
    }
    let mut dirs: Vec<PathBuf> = env::var_os("CUDA_HOME")
        .map(|h| PathBuf::from(h).join("include"))
        .into_iter()
        .collect();
    // A PyTorch wheel: torch/lib -> site-packages/nvidia/<package>/include.
    if let Ok(rd) = std::fs::read_dir(lib.join("../../nvidia")) {
        let mut found: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path().join("include"))
            .filter(|p| p.is_dir())
            .collect();
        found.sort();
        dirs.extend(found);
    }
    for header in [
        "cuda_runtime_api.h",
        "crt/host_config.h",
        "nv/target",
        "nccl.h",
    ] {
        if !dirs.iter().any(|d| d.join(header).exists()) {
            return Err(format!(
                "no {header} among CUDA's headers (looked in {}; scripts/setup-libtorch.sh installs them beside a CUDA wheel, or set CUDA_HOME)",
                if dirs.is_empty() {
                    "none: no CUDA_HOME, no nvidia/ beside torch".to_string()
                } else {
                    dirs.iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ));
        }
    }
    Ok(dirs)
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
    let mut shim = torch_cxx_build(&lib);
    shim.file("cpp/kd_dist.cpp")
        .include(&gloo)
        // ProcessGroupGloo.hpp is empty unless the build says Gloo is in.
        .define("USE_C10D_GLOO", None);
    let missing = match nccl_includes(&lib, &include) {
        Ok(dirs) => {
            let mut with_nccl = shim.clone();
            for d in &dirs {
                with_nccl.include(d);
            }
            with_nccl
                .define("USE_C10D_NCCL", None)
                .define("KD_WITH_NCCL", None)
                .flag_if_supported("-Wno-interference-size");
            match with_nccl.try_compile("kd_dist") {
                Ok(()) => None,
                Err(e) => {
                    let why = format!("compiling the shim with NCCL failed ({e})");
                    println!("cargo:warning=kd-dist: {why}; building with Gloo only");
                    Some(why)
                }
            }
        }
        Err(why) => Some(why),
    };
    if missing.is_some() {
        shim.compile("kd_dist");
    } else {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
    // Read by the error that asks for NCCL where it is not compiled in.
    println!(
        "cargo:rustc-env=KD_DIST_NCCL_MISSING={}",
        missing.unwrap_or_default().replace('\n', " ")
    );
    link_shim(&lib);
}
