// Compile the c10d shim (cpp/kd_dist.cpp) against the headers of the very
// libtorch torch-sys links (the PyTorch wheel of scripts/setup-libtorch.sh,
// or $LIBTORCH), and Gloo's headers, which the wheel does not ship (see
// scripts/setup-libtorch.sh: $VENV/kd-gloo/include, or $KD_GLOO_INCLUDE).
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

include!("../../scripts/link_torch.rs");

fn fail(msg: &str) -> ! {
    // A build script's panic message is what cargo shows; keep it one line.
    panic!("kd-dist: {msg}");
}

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

/// `_GLIBCXX_USE_CXX11_ABI` of the libtorch build, found as torch-sys finds it.
fn cxx11_abi() -> String {
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    if let Ok(v) = env::var("LIBTORCH_CXX11_ABI") {
        return v;
    }
    if env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        let python = env::var("KD_PYTHON")
            .or_else(|_| env::var("PYTHON_SYS_EXECUTABLE"))
            .unwrap_or_else(|_| "python".into());
        let out = Command::new(&python)
            .args([
                "-c",
                "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))",
            ])
            .output()
            .unwrap_or_else(|e| {
                fail(&format!(
                    "cannot run {python} to ask torch its C++ ABI: {e}"
                ))
            });
        let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && (v == "0" || v == "1") {
            return v;
        }
        fail(&format!(
            "{python} did not report torch's C++ ABI (got '{v}')"
        ));
    }
    // Every libtorch 2.x download for Linux uses the new ABI.
    "1".into()
}

fn main() {
    link_torch();
    println!("cargo:rerun-if-changed=cpp/kd_dist.cpp");
    let lib =
        PathBuf::from(env::var_os("DEP_TCH_LIBTORCH_LIB").unwrap_or_else(|| {
            fail("torch-sys did not report its libtorch (DEP_TCH_LIBTORCH_LIB)")
        }));
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
    cc::Build::new()
        .cpp(true)
        .file("cpp/kd_dist.cpp")
        .std("c++17")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include(&gloo)
        // ProcessGroupGloo.hpp is empty unless the build says Gloo is in.
        .define("USE_C10D_GLOO", None)
        .define("_GLIBCXX_USE_CXX11_ABI", Some(cxx11_abi().as_str()))
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .warnings(false)
        .compile("kd_dist");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
