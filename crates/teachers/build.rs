// Link libtorch (as every crate that runs it does) and compile the
// involution op (cpp/involution.cpp) against the same libtorch's headers.
include!("../../scripts/link_torch.rs");
include!("../../scripts/torch_cxx.rs");

fn main() {
    link_torch();
    println!("cargo:rerun-if-changed=cpp/involution.cpp");
    let lib = torch_lib();
    torch_cxx_build(&lib)
        .file("cpp/involution.cpp")
        .opt_level(3)
        // at::parallel_for is an inline template over OpenMP, as libtorch is
        // built: without -fopenmp its pragma is ignored and the op runs on
        // one thread whatever KD_THREADS says.
        .flag("-fopenmp")
        .compile("kd_involution");
    link_shim(&lib);
}
