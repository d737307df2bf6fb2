// Shared by every crate's build script (see TOOLCHAIN.md): torch-sys adds no
// RPATH, and rustc's `--as-needed` silently drops libtorch_cuda, which would
// leave CUDA unusable. Needs `torch-sys` as a direct dependency so that
// DEP_TCH_LIBTORCH_LIB is visible.
fn link_torch() {
    let mut version = String::from("unknown");
    if let Some(lib) = std::env::var_os("DEP_TCH_LIBTORCH_LIB") {
        let lib = std::path::PathBuf::from(lib);
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
        // A PyTorch install keeps its version beside lib/ (torch/version.py).
        if let Ok(text) = std::fs::read_to_string(lib.join("../version.py"))
            && let Some(v) = text.lines().find_map(|l| l.strip_prefix("__version__ = "))
        {
            version = v.trim_matches(|c| c == '\'' || c == '"').to_string();
        }
    }
    println!("cargo:rustc-env=KD_LIBTORCH_VERSION={version}");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
}
