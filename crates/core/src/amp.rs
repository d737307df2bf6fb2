//! Mixed precision: libtorch autocast computing in bf16 over f32 weights.
//!
//! Under [`Precision::Bf16`] the training forward pass (model, teachers run
//! live, losses) executes inside libtorch's autocast: matmuls, convolutions
//! and attention run in bfloat16, reductions and losses in float32, and the
//! parameters, their gradients and the AdamW moments stay float32 (the
//! "master weights"). bf16 has float32's exponent range, so no loss scaling
//! is needed. `backward` runs outside the autocast scope, as PyTorch
//! recommends. Evaluation and the logit cache stay float32.
//!
//! tch only wraps the legacy switch that turns on CUDA float16 autocast.
//! The device-typed switches that pick bfloat16 (and turn on CPU autocast,
//! which the tests use) are reached through kd-core's C++ shim
//! (`crate::shim::autocast`), compiled against libtorch's public headers, so
//! a libtorch that changed them fails when the shim is built, never at run
//! time.

use serde::{Deserialize, Serialize};
use tch::Device;

/// Numeric precision of the training forward pass.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in float32.
    #[default]
    #[serde(alias = "fp32", alias = "float32")]
    F32,
    /// bf16 compute under autocast, float32 master weights.
    #[serde(alias = "bfloat16")]
    Bf16,
}

impl Precision {
    /// For `skip_serializing_if`: configs that predate the field hash as before.
    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        })
    }
}

use crate::shim::autocast as ac;

/// The shim's device code: 0 for the CPU, 1 for CUDA; `None` for devices
/// without autocast.
fn device_type(device: Device) -> Option<i8> {
    match device {
        Device::Cpu => Some(0),
        Device::Cuda(_) => Some(1),
        _ => None,
    }
}

/// Restores the previous autocast state of one device type when dropped,
/// also when the scope is left by an error or a panic.
struct Scope {
    device: i8,
    enabled: bool,
    dtype: i8,
}

impl Drop for Scope {
    fn drop(&mut self) {
        if ac::decrement_nesting() == 0 {
            // The weight casts autocast cached are only valid for this step.
            ac::clear_cache();
        }
        ac::set_dtype(self.device, self.dtype);
        ac::set_enabled(self.device, self.enabled);
    }
}

/// Run `f` with the given precision on `device`: under bf16 autocast for
/// [`Precision::Bf16`], with autocast off for [`Precision::F32`] (so a float32
/// region can sit inside a bf16 one). Devices without autocast run `f` as is.
pub fn autocast<T>(device: Device, precision: Precision, f: impl FnOnce() -> T) -> T {
    let Some(dev) = device_type(device) else {
        return f();
    };
    let _scope = Scope {
        device: dev,
        enabled: ac::is_enabled(dev),
        dtype: ac::dtype(dev),
    };
    ac::increment_nesting();
    match precision {
        Precision::F32 => ac::set_enabled(dev, false),
        Precision::Bf16 => {
            ac::set_dtype(dev, ac::bfloat16());
            ac::set_enabled(dev, true);
        }
    }
    f()
}

/// Whether autocast is on for `device` in this thread (for tests and logs).
pub fn is_enabled(device: Device) -> bool {
    device_type(device).is_some_and(ac::is_enabled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor, nn, nn::Module};

    #[test]
    fn bf16_computes_in_bf16_with_f32_weights_and_grads() {
        let _rng = crate::torch_rng_lock();
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let lin = nn::linear(vs.root() / "fc", 16, 8, Default::default());
        let x = Tensor::randn([4, 16], (Kind::Float, Device::Cpu));
        let y32 = lin.forward(&x);
        let y16 = autocast(Device::Cpu, Precision::Bf16, || {
            assert!(is_enabled(Device::Cpu));
            // A float32 region nested inside a bf16 one.
            let inner = autocast(Device::Cpu, Precision::F32, || lin.forward(&x));
            assert_eq!(inner.kind(), Kind::Float);
            assert!(is_enabled(Device::Cpu), "inner scope did not restore");
            lin.forward(&x)
        });
        assert!(!is_enabled(Device::Cpu), "outer scope did not restore");
        assert_eq!(y16.kind(), Kind::BFloat16);
        let err = f64::try_from((y16.to_kind(Kind::Float) - &y32).abs().max()).unwrap();
        assert!(err < 0.05, "bf16 linear off by {err}");
        // Backward outside the scope: gradients land in float32 master weights.
        y16.to_kind(Kind::Float).sum(Kind::Float).backward();
        assert_eq!(lin.ws.grad().kind(), Kind::Float);
        let expect = x.sum_dim_intlist(0, false, Kind::Float);
        let g = lin.ws.grad().get(0);
        let gerr = f64::try_from((&g - &expect).abs().max()).unwrap();
        assert!(gerr < 0.1, "bf16 weight gradient off by {gerr}");
    }

    #[test]
    fn f32_is_a_no_op_and_parses() {
        let x = Tensor::ones([2, 3], (Kind::Float, Device::Cpu));
        let y = autocast(Device::Cpu, Precision::F32, || x.matmul(&x.tr()));
        assert_eq!(y.kind(), Kind::Float);
        let parse = crate::profile::parse_setting::<Precision>;
        assert_eq!(parse("bf16").unwrap(), Precision::Bf16);
        assert_eq!(parse("float32").unwrap(), Precision::F32);
        let e = parse("fp8").unwrap_err();
        assert!(e.contains("f32") && e.contains("bf16"), "{e}");
    }
}
