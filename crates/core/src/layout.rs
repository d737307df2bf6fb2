//! Memory layout of image activations.
//!
//! libtorch's CPU convolutions (oneDNN) and BatchNorm run fastest on
//! channels-last tensors (`[B, H, W, C]` in memory, still indexed as
//! `[B, C, H, W]`): a planar input is reordered inside every convolution,
//! forward and backward, which at the few channels of small-image networks
//! costs as much as the arithmetic. Layers keep the layout of their input,
//! so converting a network's input once runs the whole network channels-last.
//! Values are those of the planar run up to the order of float additions
//! inside each convolution.
//!
//! Only on the CPU for now: on CUDA the gain depends on the dtype (tensor
//! cores want channels-last under autocast) and no GPU has measured it.

use tch::Tensor;

/// Strides of a dense channels-last tensor of this `[B, C, H, W]` shape.
fn channels_last_strides(size: &[i64]) -> [i64; 4] {
    let [_, c, h, w] = [size[0], size[1], size[2], size[3]];
    [c * h * w, 1, w * c, c]
}

/// `x` (4-d) in the layout convolutional layers run fastest on, on its
/// device: channels-last on the CPU, unchanged elsewhere.
pub fn for_convolutions(x: &Tensor) -> Tensor {
    if x.device() == tch::Device::Cpu {
        channels_last(x)
    } else {
        x.shallow_clone()
    }
}

/// `x` (4-d) copied into the channels-last layout, through autograd; a
/// tensor already in it is returned as is.
pub fn channels_last(x: &Tensor) -> Tensor {
    let size = x.size();
    assert_eq!(size.len(), 4, "channels-last needs a [B, C, H, W] tensor");
    let strides = channels_last_strides(&size);
    if x.stride() == strides {
        return x.shallow_clone();
    }
    let mut out = Tensor::empty_strided(&size, strides, (x.kind(), x.device()));
    out.copy_(x);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn same_values_channels_last_strides_and_gradients_flow() {
        // Its draw would shift another test's seeded sequence.
        let _rng = crate::torch_rng_lock();
        let x = Tensor::randn([2, 3, 4, 5], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let y = channels_last(&x);
        assert_eq!(y.stride(), [60, 1, 15, 3]);
        assert!(y.equal(&x));
        (&y * 2.0).sum(Kind::Float).backward();
        assert!(x.grad().equal(&(x.ones_like() * 2.0)));
        // Already channels-last: no copy.
        let z = channels_last(&y);
        assert_eq!(z.data_ptr(), y.data_ptr());
    }
}
