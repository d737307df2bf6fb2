// Shared by every crate's build script: torch-sys adds no
// RPATH, and rustc's `--as-needed` silently drops libtorch_cuda, which would
// leave CUDA unusable. Needs `torch-sys` as a direct dependency so that
// DEP_TCH_LIBTORCH_LIB is visible.
//
// `link_torch()` links every binary, test and bench of the package;
// `link_torch_to(&["-bin=NAME", "-tests"])` only the named kinds of target,
// so that one binary of a package (kd's launcher) stays free of libtorch.
#[allow(dead_code)]
fn link_torch() {
    link_torch_to(&[""]);
}

fn link_torch_to(targets: &[&str]) {
    let mut version = String::from("unknown");
    if let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        let lib = std::path::PathBuf::from(lib);
        for t in targets {
            println!("cargo:rustc-link-arg{t}=-Wl,-rpath,{}", lib.display());
        }
        println!("cargo:rustc-env=KD_BUILT_TORCH_LIB={}", lib.display());
        // A PyTorch install keeps its version beside lib/ (torch/version.py).
        if let Ok(text) = std::fs::read_to_string(lib.join("../version.py"))
            && let Some(v) = text.lines().find_map(|l| l.strip_prefix("__version__ = "))
        {
            version = v.trim_matches(|c| c == '\'' || c == '"').to_string();
        }
    }
    println!("cargo:rustc-env=KD_LIBTORCH_VERSION={version}");
    for t in targets {
        println!("cargo:rustc-link-arg{t}=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg{t}=-ltorch");
    }
}
