// Link libtorch into `kd-torch` and the tests only: the `kd` launcher must
// start where libtorch cannot yet be found, to say how to find it.
include!("../../scripts/link_torch.rs");

fn main() {
    link_torch_to(&["-bin=kd-torch", "-tests"]);
}
