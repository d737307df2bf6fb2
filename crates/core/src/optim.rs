//! AdamW whose moments are plain tensors, so a checkpoint can save and
//! restore them (tch 0.24's optimisers cannot export their state).
//!
//! Decoupled weight decay (Loshchilov & Hutter) applies to weight matrices and
//! convolution kernels only: never to biases, norm parameters, tokens or
//! position embeddings.
//!
//! The update is libtorch's fused AdamW kernel (`torch.optim.AdamW(fused=
//! True)`), called once for the parameters that decay and once for the
//! rest, and the gradients are zeroed in one call: a handful of launches
//! per step instead of about ten per parameter tensor, which is what bounds
//! a small ViT on a GPU.

use crate::error::{CoreError, InputError, Result};
use crate::shim::{self, AdamWStep};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use tch::{Kind, Tensor, nn::VarStore};

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.05,
        }
    }
}

struct Param {
    name: String,
    var: Tensor,
    decay: bool,
    m: Tensor,
    v: Tensor,
}

pub struct AdamW {
    cfg: AdamWConfig,
    params: Vec<Param>,
    /// Number of updates taken (bias correction uses it).
    pub steps: i64,
}

/// Whether a parameter (by its PyTorch-style name and shape) gets weight decay.
pub fn decays(name: &str, dims: usize) -> bool {
    let leaf = name.rsplit('.').next().unwrap_or(name);
    dims >= 2 && !name.contains("token") && !name.contains("pos_embed") && leaf != "bias"
}

impl AdamW {
    pub fn new(vs: &VarStore, cfg: AdamWConfig) -> AdamW {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let params = vars
            .into_iter()
            .map(|(name, var)| Param {
                decay: decays(&name, var.dim()),
                m: var.zeros_like().detach(),
                v: var.zeros_like().detach(),
                name,
                var,
            })
            .collect();
        AdamW {
            cfg,
            params,
            steps: 0,
        }
    }

    /// Zero every gradient the last backward pass wrote.
    pub fn zero_grad(&mut self) -> Result<()> {
        let grads: Vec<Tensor> = self
            .params
            .iter()
            .map(|p| p.var.grad())
            .filter(Tensor::defined)
            .collect();
        shim::zero(&grads).map_err(torch_error)
    }

    /// One update with learning rate `lr` from the gradients now held;
    /// parameters without a gradient (unused in this step) stay as they are.
    pub fn step(&mut self, lr: f64) -> Result<()> {
        let _g = tch::no_grad_guard();
        self.steps += 1;
        let c = self.cfg;
        for decay in [true, false] {
            let (mut vars, mut grads, mut ms, mut vs) = (vec![], vec![], vec![], vec![]);
            for p in self.params.iter().filter(|p| p.decay == decay) {
                let g = p.var.grad();
                if !g.defined() {
                    continue;
                }
                grads.push(if g.kind() == Kind::Float {
                    g
                } else {
                    g.to_kind(Kind::Float)
                });
                vars.push(p.var.shallow_clone());
                ms.push(p.m.shallow_clone());
                vs.push(p.v.shallow_clone());
            }
            let h = AdamWStep {
                step: self.steps,
                lr,
                beta1: c.beta1,
                beta2: c.beta2,
                weight_decay: if decay { c.weight_decay } else { 0.0 },
                eps: c.eps,
            };
            shim::adamw_step(&vars, &grads, &ms, &vs, h).map_err(torch_error)?;
        }
        Ok(())
    }

    /// The trained parameters, in a fixed order (sorted by name, the same on
    /// every data-parallel rank).
    pub fn params(&self) -> Vec<Tensor> {
        self.params.iter().map(|p| p.var.shallow_clone()).collect()
    }

    /// Every moment tensor, in the order of [`AdamW::params`] (m then v of
    /// each); data-parallel ranks receive rank 0's after a resume.
    pub fn moments(&self) -> Vec<Tensor> {
        self.params
            .iter()
            .flat_map(|p| [p.m.shallow_clone(), p.v.shallow_clone()])
            .collect()
    }

    /// Moments as named tensors (`m.<param>`, `v.<param>`) plus the step count.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("steps".to_string(), Tensor::from(self.steps))];
        for p in &self.params {
            out.push((format!("m.{}", p.name), p.m.shallow_clone()));
            out.push((format!("v.{}", p.name), p.v.shallow_clone()));
        }
        out
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        Tensor::write_safetensors(&self.state(), path)?;
        Ok(())
    }

    /// Restore moments saved by [`AdamW::save`] for the same parameters.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let saved: HashMap<String, Tensor> = Tensor::read_safetensors(path)?.into_iter().collect();
        let bad = |what: String| InputError::Malformed {
            at: path.to_path_buf(),
            what,
        };
        let steps = saved
            .get("steps")
            .ok_or_else(|| bad("no 'steps' entry in optimiser state".into()))?;
        let _g = tch::no_grad_guard();
        for p in &mut self.params {
            for (prefix, dst) in [("m", &mut p.m), ("v", &mut p.v)] {
                let key = format!("{prefix}.{}", p.name);
                let src = saved.get(&key).ok_or_else(|| {
                    bad(format!("optimiser state lacks '{key}' (another model?)"))
                })?;
                if src.size() != dst.size() {
                    return Err(bad(format!(
                        "optimiser state '{key}' has shape {:?}, model needs {:?}",
                        src.size(),
                        dst.size()
                    ))
                    .into());
                }
                dst.copy_(src);
            }
        }
        self.steps = i64::try_from(steps)?;
        Ok(())
    }
}

fn torch_error(msg: String) -> CoreError {
    CoreError::Torch(tch::TchError::Torch(format!("AdamW: {msg}")))
}

/// Cosine schedule with linear warm-up, from `base` down to `min` at `total`.
pub fn cosine_lr(step: usize, total: usize, warmup: usize, base: f64, min: f64) -> f64 {
    if step < warmup {
        return base * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let t = ((step - warmup) as f64 / span as f64).min(1.0);
    min + 0.5 * (base - min) * (1.0 + (std::f64::consts::PI * t).cos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, nn};

    #[test]
    fn decay_rules() {
        assert!(decays("blocks.0.attn.qkv.weight", 2));
        assert!(decays("layer1.0.conv1.weight", 4));
        assert!(!decays("blocks.0.attn.qkv.bias", 1));
        assert!(!decays("bn1.weight", 1));
        assert!(!decays("cls_token", 3));
        assert!(!decays("pos_embed", 3));
    }

    #[test]
    fn matches_reference_adamw_and_round_trips() {
        let vs = nn::VarStore::new(Device::Cpu);
        let w = vs
            .root()
            .var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0]).view([1, 2]));
        let cfg = AdamWConfig {
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut opt = AdamW::new(&vs, cfg);
        // Minimise sum(w^2): gradient 2w. Reference computed by hand below.
        let (mut x, mut m, mut v) = ([1.0f64, -2.0], [0.0f64; 2], [0.0f64; 2]);
        for t in 1..=3 {
            opt.zero_grad().unwrap();
            (&w * &w).sum(Kind::Float).backward();
            opt.step(0.1).unwrap();
            for i in 0..2 {
                let g = 2.0 * x[i];
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                x[i] *= 1.0 - 0.1 * 0.1;
                let mh = m[i] / (1.0 - 0.9f64.powi(t));
                let vh = v[i] / (1.0 - 0.999f64.powi(t));
                x[i] -= 0.1 * mh / (vh.sqrt() + 1e-8);
            }
        }
        let got: Vec<f32> = Vec::try_from(w.view([-1])).unwrap();
        for i in 0..2 {
            assert!((got[i] as f64 - x[i]).abs() < 1e-5, "{got:?} vs {x:?}");
        }
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("opt.safetensors");
        opt.save(&p).unwrap();
        let mut opt2 = AdamW::new(&vs, cfg);
        opt2.load(&p).unwrap();
        assert_eq!(opt2.steps, 3);
        for (a, b) in opt.state().iter().zip(opt2.state().iter()) {
            assert_eq!(a.0, b.0);
            assert!(a.1.equal(&b.1));
        }
    }

    /// The per-tensor AdamW this optimiser computed before it used the fused
    /// kernel, in plain libtorch ops: the formula, one parameter at a time.
    fn reference_step(
        c: AdamWConfig,
        t: i32,
        lr: f64,
        x: &Tensor,
        g: &Tensor,
        m: &mut Tensor,
        v: &mut Tensor,
        decay: bool,
    ) -> Tensor {
        *m = &*m * c.beta1 + g * (1.0 - c.beta1);
        *v = &*v * c.beta2 + g * g * (1.0 - c.beta2);
        let x = if decay {
            x * (1.0 - lr * c.weight_decay)
        } else {
            x.shallow_clone()
        };
        let denom = (&*v / (1.0 - c.beta2.powi(t))).sqrt() + c.eps;
        x - (&*m / (1.0 - c.beta1.powi(t))) / denom * lr
    }

    #[test]
    fn fused_step_equals_the_formula_on_many_tensors() {
        let _rng = crate::torch_rng_lock();
        tch::manual_seed(7);
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        // Decaying and non-decaying parameters of several shapes, and one
        // that no loss touches (no gradient: it must not move).
        let shapes: [(&str, &[i64]); 6] = [
            ("blocks.0.fc.weight", &[7, 5]),
            ("blocks.0.fc.bias", &[7]),
            ("conv.weight", &[4, 3, 3, 3]),
            ("norm.weight", &[33]),
            ("cls_token", &[1, 1, 5]),
            ("unused.weight", &[3, 3]),
        ];
        let vars: Vec<Tensor> = shapes
            .iter()
            .map(|(n, s)| {
                let (dirs, leaf) = n.rsplit_once('.').unwrap_or(("", n));
                let path = dirs
                    .split('.')
                    .filter(|d| !d.is_empty())
                    .fold(root.clone(), |p, d| p / d);
                path.var(
                    leaf,
                    s,
                    nn::Init::Randn {
                        mean: 0.0,
                        stdev: 1.0,
                    },
                )
            })
            .collect();
        let cfg = AdamWConfig {
            weight_decay: 0.3,
            ..Default::default()
        };
        let mut opt = AdamW::new(&vs, cfg);
        let mut refs: Vec<(Tensor, Tensor, Tensor)> = vars
            .iter()
            .map(|v| (v.detach().copy(), v.zeros_like(), v.zeros_like()))
            .collect();
        let targets: Vec<Tensor> = vars.iter().map(|v| v.randn_like()).collect();
        for t in 1..=6 {
            let lr = 0.05 / t as f64;
            opt.zero_grad().unwrap();
            let loss = vars[..5]
                .iter()
                .zip(&targets)
                .map(|(v, y)| (v - y).pow_tensor_scalar(2).sum(Kind::Float))
                .fold(Tensor::from(0f32), |a, b| a + b);
            loss.backward();
            for (i, (x, m, v)) in refs.iter_mut().enumerate() {
                if i == 5 {
                    continue;
                }
                let g = (&*x - &targets[i]) * 2.0;
                let decay = decays(shapes[i].0, shapes[i].1.len());
                *x = reference_step(cfg, t, lr, x, &g, m, v, decay);
            }
            opt.step(lr).unwrap();
        }
        for (i, (x, _, _)) in refs.iter().enumerate() {
            let err = f64::try_from((&vars[i] - x).abs().max()).unwrap();
            let scale = f64::try_from(x.abs().max()).unwrap();
            assert!(
                err <= 1e-5 * scale.max(1.0),
                "{}: off by {err}",
                shapes[i].0
            );
        }
        assert_eq!(opt.steps, 6);
    }

    #[test]
    fn schedule_shape() {
        assert!((cosine_lr(0, 100, 10, 1.0, 0.0) - 0.1).abs() < 1e-12);
        assert!((cosine_lr(9, 100, 10, 1.0, 0.0) - 1.0).abs() < 1e-12);
        assert!((cosine_lr(10, 100, 10, 1.0, 0.0) - 1.0).abs() < 1e-12);
        assert!(cosine_lr(55, 100, 10, 1.0, 0.0) < 0.51);
        assert!(cosine_lr(100, 100, 10, 1.0, 0.1) - 0.1 < 1e-12);
    }
}
