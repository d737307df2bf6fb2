// Shared by the build scripts that compile a C++ shim against libtorch
// (kd-dist's c10d shim, kd-teachers' involution op): the headers and C++ ABI
// of the very libtorch torch-sys links (the PyTorch wheel of
// scripts/setup-libtorch.sh, or $LIBTORCH). Needs `torch-sys` as a direct
// dependency (for DEP_TCH_LIBTORCH_LIB) and `cc` as a build dependency.

/// A build script's panic message is what cargo shows; keep it one line.
fn fail(msg: &str) -> ! {
    panic!("{}: {msg}", std::env::var("CARGO_PKG_NAME").unwrap_or_default());
}

/// libtorch's `lib/` directory, as torch-sys found it.
fn torch_lib() -> std::path::PathBuf {
    std::path::PathBuf::from(std::env::var_os("DEP_TCH_LIBTORCH_LIB").unwrap_or_else(|| {
        fail("torch-sys did not report its libtorch (DEP_TCH_LIBTORCH_LIB)")
    }))
}

/// `_GLIBCXX_USE_CXX11_ABI` of the libtorch build, found as torch-sys finds it.
fn cxx11_abi() -> String {
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    if let Ok(v) = std::env::var("LIBTORCH_CXX11_ABI") {
        return v;
    }
    if std::env::var_os("LIBTORCH_USE_PYTORCH").is_some() {
        let python = std::env::var("KD_PYTHON")
            .or_else(|_| std::env::var("PYTHON_SYS_EXECUTABLE"))
            .unwrap_or_else(|_| "python".into());
        let out = std::process::Command::new(&python)
            .args([
                "-c",
                "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))",
            ])
            .output()
            .unwrap_or_else(|e| {
                fail(&format!("cannot run {python} to ask torch its C++ ABI: {e}"))
            });
        let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if out.status.success() && (v == "0" || v == "1") {
            return v;
        }
        fail(&format!("{python} did not report torch's C++ ABI (got '{v}')"));
    }
    // Every libtorch 2.x download for Linux uses the new ABI.
    "1".into()
}

/// A C++17 build against libtorch's headers and ABI; the caller adds its
/// files (and any other includes), compiles, and links with [`link_shim`].
fn torch_cxx_build(lib: &std::path::Path) -> cc::Build {
    println!("cargo:rerun-if-changed=../../scripts/cpp/kd_guarded.h");
    let include = lib.join("../include");
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++17")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        // kd_guarded.h, the shims' shared exception barrier.
        .include(concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/cpp"))
        .define("_GLIBCXX_USE_CXX11_ABI", Some(cxx11_abi().as_str()))
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .warnings(false);
    b
}

/// Link the shim's libtorch dependencies (after `compile`).
fn link_shim(lib: &std::path::Path) {
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
