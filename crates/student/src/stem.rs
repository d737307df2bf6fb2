//! Inductive-bias stems of CivT (Ren et al., "Co-advise: Cross Inductive
//! Bias Distillation", CVPR 2022).
//!
//! With `stem = "conv-involution"` the student's patch tokens are the *sum*
//! of two light stems' outputs on the patch grid: a convolution stem and an
//! involution stem. Each teacher's distillation token is the mean over
//! positions of the stem that shares its inductive bias (the CNN teacher's
//! from the conv stem, the involution teacher's from the involution stem), so
//! what a token learns from its teacher flows back into a stem built with
//! that teacher's bias, instead of into a free parameter.
//!
//! Sized for 28-32 px: one full-resolution 3x3 layer, one stride-2 layer,
//! then a strided projection to `embed_dim` with kernel = stride =
//! `patch_size / 2` (for 224 px and patch 16 that is Co-advise's stride-2
//! stem followed by an 8x8 projection). An odd patch size keeps the second
//! layer at stride 1 and projects by `patch_size`.
//!
//! Parameter names: `conv_stem.{conv1,bn1,conv2,bn2,proj}.*` and
//! `inv_stem.{conv1,bn1}.*`, `inv_stem.inv.conv1.{conv,bn}.*` /
//! `inv_stem.inv.conv2.conv.*` (the involution's kernel generator, named as
//! in the teachers' RedNet), `inv_stem.{bn2,proj}.*`.

use kd_core::layout;
use kd_teachers::rednet::Involution;
use serde::{Deserialize, Serialize};
use tch::Tensor;
use tch::nn::{self, ModuleT};

/// How patch tokens (and, with teachers, distillation tokens) are made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stem {
    /// DeiT: one strided convolution; distillation tokens are free parameters.
    #[default]
    Patch,
    /// CivT: conv stem + involution stem; each distillation token is the mean
    /// of its teacher's stem.
    ConvInvolution,
}

impl Stem {
    pub fn is_patch(&self) -> bool {
        *self == Stem::Patch
    }
    pub fn name(self) -> &'static str {
        match self {
            Stem::Patch => "patch",
            Stem::ConvInvolution => "conv-involution",
        }
    }
}

/// Which stem a distillation token is the mean of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenStem {
    Conv,
    Involution,
    /// The summed patch tokens (one token for an averaged or mixed target).
    Both,
}

impl TokenStem {
    /// The stem of a teacher's bias, from its recorded arch (`cnn/cnn-small`,
    /// `involution/rednet-small`).
    pub fn for_arch(arch: &str) -> Option<TokenStem> {
        match arch.split('/').next().unwrap_or("") {
            "cnn" => Some(TokenStem::Conv),
            "involution" => Some(TokenStem::Involution),
            _ => None,
        }
    }
}

/// Widths of the two stems' layers.
const CONV_WIDTHS: (i64, i64) = (24, 48);
const INV_WIDTH: i64 = 32;
const INV_KERNEL: i64 = 5;
const INV_GROUP_CHANNELS: i64 = 16;
const INV_REDUCTION: i64 = 4;

fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64, bias: bool) -> nn::Conv2D {
    let pad = if k == stride { 0 } else { k / 2 };
    nn::conv2d(
        p,
        cin,
        cout,
        k,
        nn::ConvConfig {
            stride,
            padding: pad,
            bias,
            ws_init: nn::init::DEFAULT_KAIMING_NORMAL,
            ..Default::default()
        },
    )
}

fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(p, c, Default::default())
}

/// Stride of the second layer and of the projection for a patch size.
fn strides(patch_size: usize) -> (i64, i64) {
    let p = patch_size as i64;
    if p % 2 == 0 { (2, p / 2) } else { (1, p) }
}

/// `[B, dim, h, w]` -> `[B, h*w, dim]`.
fn to_tokens(x: Tensor) -> Tensor {
    x.flatten(2, -1).transpose(1, 2)
}

#[derive(Debug)]
pub struct ConvStem {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    proj: nn::Conv2D,
}

impl ConvStem {
    pub fn new(p: nn::Path, in_chans: usize, patch_size: usize, embed_dim: usize) -> Self {
        let (s2, sp) = strides(patch_size);
        let (w1, w2) = CONV_WIDTHS;
        ConvStem {
            conv1: conv(&p / "conv1", in_chans as i64, w1, 3, 1, false),
            bn1: bn(&p / "bn1", w1),
            conv2: conv(&p / "conv2", w1, w2, 3, s2, false),
            bn2: bn(&p / "bn2", w2),
            proj: conv(&p / "proj", w2, embed_dim as i64, sp, sp, true),
        }
    }

    /// `[B, C, H, W]` -> `[B, N, dim]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        // In place: BN's backward needs its input, not its output, so the
        // ReLU can overwrite the output and spare a full-resolution buffer.
        let y = x.apply(&self.conv1).apply_t(&self.bn1, train).relu_();
        let y = y.apply(&self.conv2).apply_t(&self.bn2, train).relu_();
        to_tokens(y.apply(&self.proj))
    }
}

#[derive(Debug)]
pub struct InvolutionStem {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    inv: Involution,
    bn2: nn::BatchNorm,
    proj: nn::Conv2D,
}

impl InvolutionStem {
    pub fn new(p: nn::Path, in_chans: usize, patch_size: usize, embed_dim: usize) -> Self {
        let (s2, sp) = strides(patch_size);
        InvolutionStem {
            conv1: conv(&p / "conv1", in_chans as i64, INV_WIDTH, 3, 1, false),
            bn1: bn(&p / "bn1", INV_WIDTH),
            inv: Involution::new(
                &p / "inv",
                INV_WIDTH,
                INV_KERNEL,
                s2,
                INV_GROUP_CHANNELS,
                INV_REDUCTION,
            ),
            bn2: bn(&p / "bn2", INV_WIDTH),
            proj: conv(&p / "proj", INV_WIDTH, embed_dim as i64, sp, sp, true),
        }
    }

    /// `[B, C, H, W]` -> `[B, N, dim]`.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let y = x.apply(&self.conv1).apply_t(&self.bn1, train).relu_();
        let y = self
            .inv
            .forward_t(&y, train)
            .apply_t(&self.bn2, train)
            .relu_();
        to_tokens(y.apply(&self.proj))
    }
}

/// Both stems and the tokens they give.
#[derive(Debug)]
pub struct CivtStems {
    conv: ConvStem,
    inv: InvolutionStem,
}

/// What the stems produce for one batch.
#[derive(Debug)]
pub struct StemTokens {
    /// Patch tokens `[B, N, dim]`: conv stem + involution stem.
    pub patches: Tensor,
    /// One `[B, 1, dim]` token per distillation head.
    pub dist: Vec<Tensor>,
}

impl CivtStems {
    pub fn new(p: &nn::Path, in_chans: usize, patch_size: usize, embed_dim: usize) -> Self {
        CivtStems {
            conv: ConvStem::new(p / "conv_stem", in_chans, patch_size, embed_dim),
            inv: InvolutionStem::new(p / "inv_stem", in_chans, patch_size, embed_dim),
        }
    }

    pub fn forward_t(&self, x: &Tensor, tokens: &[TokenStem], train: bool) -> StemTokens {
        // On the CPU both stems run channels-last (see kd_core::layout);
        // their tokens then come out contiguous.
        let x = layout::for_convolutions(x);
        let c = self.conv.forward_t(&x, train);
        let i = self.inv.forward_t(&x, train);
        let patches = &c + &i;
        let dist = tokens
            .iter()
            .map(|t| {
                let src = match t {
                    TokenStem::Conv => &c,
                    TokenStem::Involution => &i,
                    TokenStem::Both => &patches,
                };
                src.mean_dim(1, true, src.kind())
            })
            .collect();
        StemTokens { patches, dist }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vit::{Config, Vit};
    use tch::{Device, Kind, nn::VarStore};

    fn civt(tokens: Vec<TokenStem>) -> Config {
        let mut cfg = Config::preset("vit-test", 8, 1, 5, tokens.len()).unwrap();
        cfg.stem = Stem::ConvInvolution;
        cfg.token_stems = tokens;
        cfg
    }

    #[test]
    fn civt_shapes_and_parameter_names() {
        let _rng = kd_core::torch_rng_lock();
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let cfg = civt(vec![TokenStem::Conv, TokenStem::Involution]);
        cfg.validate().unwrap();
        let m = Vit::new(&vs.root(), &cfg);
        let out = m.forward_t(
            &Tensor::randn([3, 1, 8, 8], (Kind::Float, Device::Cpu)),
            true,
        );
        assert_eq!(out.cls.size(), [3, 5]);
        assert_eq!(out.dist.len(), 2);
        let vars = vs.variables();
        // Stem tokens replace the free distillation tokens and the patch conv.
        assert!(!vars.contains_key("dist_tokens"));
        assert!(!vars.contains_key("patch_embed.proj.weight"));
        assert_eq!(vars["pos_embed"].size(), [1, 1 + 2 + 4, 16]);
        for k in [
            "conv_stem.conv1.weight",
            "conv_stem.bn1.weight",
            "conv_stem.conv2.weight",
            "conv_stem.proj.weight",
            "conv_stem.proj.bias",
            "inv_stem.conv1.weight",
            "inv_stem.inv.conv1.conv.weight",
            "inv_stem.inv.conv1.bn.weight",
            "inv_stem.inv.conv2.conv.weight",
            "inv_stem.bn2.weight",
            "inv_stem.proj.weight",
            "head_dist.1.weight",
        ] {
            assert!(vars.contains_key(k), "missing {k}");
        }
    }

    #[test]
    fn each_token_trains_its_own_stem() {
        let _rng = kd_core::torch_rng_lock();
        tch::manual_seed(1);
        let vs = VarStore::new(Device::Cpu);
        let stems = CivtStems::new(&vs.root(), 1, 4, 16);
        let x = Tensor::randn([2, 1, 8, 8], (Kind::Float, Device::Cpu));
        let toks = [TokenStem::Conv, TokenStem::Involution];
        let st = stems.forward_t(&x, &toks, true);
        assert_eq!(st.patches.size(), [2, 4, 16]);
        assert_eq!(st.dist[0].size(), [2, 1, 16]);
        // Different stems, different tokens from the first step on.
        let gap = f64::try_from((&st.dist[0] - &st.dist[1]).abs().max()).unwrap();
        assert!(gap > 1e-3, "tokens equal at initialisation ({gap})");
        let grads = |loss: Tensor| {
            for mut v in vs.trainable_variables() {
                v.zero_grad();
            }
            loss.backward();
            let v = vs.variables();
            let norm = |k: &str| {
                let g = v[k].grad();
                if g.defined() {
                    f64::try_from(g.abs().sum(Kind::Float)).unwrap()
                } else {
                    0.0
                }
            };
            (
                norm("conv_stem.conv1.weight"),
                norm("inv_stem.conv1.weight"),
                norm("inv_stem.inv.conv2.conv.weight"),
            )
        };
        // The conv token's gradient reaches only the conv stem ...
        let (c, i, _) = grads(stems.forward_t(&x, &toks, true).dist[0].sum(Kind::Float));
        assert!(c > 0.0 && i == 0.0, "conv token: conv {c}, involution {i}");
        // ... the involution token's only the involution stem, kernel generator included ...
        let (c, i, g) = grads(stems.forward_t(&x, &toks, true).dist[1].sum(Kind::Float));
        assert!(
            c == 0.0 && i > 0.0 && g > 0.0,
            "involution token: conv {c}, involution {i}, generator {g}"
        );
        // ... and the patch tokens reach both.
        let (c, i, _) = grads(
            stems
                .forward_t(&x, &toks, true)
                .patches
                .pow_tensor_scalar(2)
                .sum(Kind::Float),
        );
        assert!(c > 0.0 && i > 0.0);
    }

    #[test]
    fn one_token_of_both_stems_and_geometry_checks() {
        let _rng = kd_core::torch_rng_lock();
        let vs = VarStore::new(Device::Cpu);
        let cfg = civt(vec![TokenStem::Both]);
        let m = Vit::new(&vs.root(), &cfg);
        let out = m.forward_t(
            &Tensor::randn([2, 1, 8, 8], (Kind::Float, Device::Cpu)),
            false,
        );
        assert_eq!(out.dist.len(), 1);
        let mut bad = civt(vec![TokenStem::Conv]);
        bad.dist_tokens = 2;
        assert!(bad.validate().unwrap_err().contains("token stems"));
        // Odd patch size: the second layer keeps stride 1, the projection strides by p.
        let mut odd = Config::preset("vit-test", 28, 1, 3, 0).unwrap();
        odd.patch_size = 7;
        odd.stem = Stem::ConvInvolution;
        let vs = VarStore::new(Device::Cpu);
        let m = Vit::new(&vs.root(), &odd);
        let out = m.forward_t(
            &Tensor::randn([1, 1, 28, 28], (Kind::Float, Device::Cpu)),
            false,
        );
        assert_eq!(out.cls.size(), [1, 3]);
        assert_eq!(
            TokenStem::for_arch("involution/rednet-small"),
            Some(TokenStem::Involution)
        );
        assert_eq!(TokenStem::for_arch("cnn/cnn-small"), Some(TokenStem::Conv));
        assert_eq!(TokenStem::for_arch("torchscript/x"), None);
    }
}
