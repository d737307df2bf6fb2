//! AdamW whose moments are plain tensors, so a checkpoint can save and
//! restore them (tch 0.24's optimisers cannot export their state).
//!
//! Decoupled weight decay (Loshchilov & Hutter) applies to weight matrices and
//! convolution kernels only: never to biases, norm parameters, tokens or
//! position embeddings.

use crate::error::{CoreError, Result};
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

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.var.zero_grad();
        }
    }

    /// One update with learning rate `lr` from the gradients now held.
    pub fn step(&mut self, lr: f64) {
        let _g = tch::no_grad_guard();
        self.steps += 1;
        let c = self.cfg;
        let bc1 = 1.0 - c.beta1.powi(self.steps as i32);
        let bc2 = 1.0 - c.beta2.powi(self.steps as i32);
        for p in &mut self.params {
            let g = p.var.grad();
            if !g.defined() {
                continue;
            }
            let g = g.to_kind(Kind::Float);
            let _ = p.m.g_mul_scalar_(c.beta1);
            let _ = p.m.g_add_(&(&g * (1.0 - c.beta1)));
            let _ = p.v.g_mul_scalar_(c.beta2);
            let _ = p.v.addcmul_(&(&g * (1.0 - c.beta2)), &g);
            if p.decay && c.weight_decay > 0.0 {
                let _ = p.var.g_mul_scalar_(1.0 - lr * c.weight_decay);
            }
            let denom = (&p.v / bc2).sqrt() + c.eps;
            let update = (&p.m / bc1) / denom * lr;
            let _ = p.var.g_add_(&(-update));
        }
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
        let bad = |what: String| CoreError::Invalid(format!("{}: {what}", path.display()));
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
                    )));
                }
                dst.copy_(src);
            }
        }
        self.steps = i64::try_from(steps)?;
        Ok(())
    }
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
            opt.zero_grad();
            (&w * &w).sum(Kind::Float).backward();
            opt.step(0.1);
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

    #[test]
    fn schedule_shape() {
        assert!((cosine_lr(0, 100, 10, 1.0, 0.0) - 0.1).abs() < 1e-12);
        assert!((cosine_lr(9, 100, 10, 1.0, 0.0) - 1.0).abs() < 1e-12);
        assert!((cosine_lr(10, 100, 10, 1.0, 0.0) - 1.0).abs() < 1e-12);
        assert!(cosine_lr(55, 100, 10, 1.0, 0.0) < 0.51);
        assert!(cosine_lr(100, 100, 10, 1.0, 0.1) - 0.1 < 1e-12);
    }
}
