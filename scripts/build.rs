// Build script of the crates whose tests or binaries link libtorch.
include!("link_torch.rs");

fn main() {
    link_torch();
}
