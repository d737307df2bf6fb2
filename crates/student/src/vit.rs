//! A DeiT-style Vision Transformer with one distillation token per teacher.
//!
//! - DeiT: Touvron et al., "Training data-efficient image transformers &
//!   distillation through attention", ICML 2021 (one distillation token).
//! - Co-advise: Ren et al., "Co-advise: Cross Inductive Bias Distillation",
//!   CVPR 2022 (one token per teacher of a different inductive bias).
//!
//! Token sequence `[cls, dist_1 .. dist_T, patches]`, learned position
//! embeddings for all of them, pre-norm blocks, a linear head per token.
//! Parameter names follow timm's ViT (`cls_token`, `pos_embed`,
//! `patch_embed.proj.*`, `blocks.0.attn.qkv.weight`, `norm.*`, `head.*`)
//! except where kd has one token per teacher: `dist_tokens` `[1, T, dim]`
//! and `head_dist.{t}`, where timm's `VisionTransformerDistilled` has one
//! `dist_token` `[1, 1, dim]` and one `head_dist`. A single-teacher
//! checkpoint therefore loads in timm after renaming those two keys; a
//! multi-teacher one has no timm counterpart.
//!
//! With `stem = conv-involution` the patch embedding is replaced by CivT's
//! two stems ([`crate::stem`]) and each distillation token is the mean of
//! its teacher's stem rather than a free `dist_tokens` parameter.
//!
//! Inference averages the *logits* of all heads (as DeiT's code does; the
//! paper averages softmaxes). Logits keep each head's confidence scale and
//! the average is one op; on the argmax the two rarely differ.

mod config;

pub use config::{Config, ModelOverrides, PRESETS};

use crate::stem::{CivtStems, Stem};
use tch::nn::{self, Init, Module};
use tch::{Kind, Tensor};

/// Initialisation of linear layers and tokens, as timm's `trunc_normal_(std=.02)`
/// (whose cut-off at +-2 is absolute, so at std 0.02 it never truncates).
const TRUNC_NORMAL: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};
const LN_EPS: f64 = 1e-6;

fn linear(p: nn::Path, i: usize, o: usize, bias: bool) -> nn::Linear {
    nn::linear(
        p,
        i as i64,
        o as i64,
        nn::LinearConfig {
            ws_init: TRUNC_NORMAL,
            bs_init: Some(Init::Const(0.0)),
            bias,
        },
    )
}

fn layer_norm(p: nn::Path, dim: usize) -> nn::LayerNorm {
    nn::layer_norm(
        p,
        vec![dim as i64],
        nn::LayerNormConfig {
            eps: LN_EPS,
            ..Default::default()
        },
    )
}

/// Stochastic depth: drop the whole residual branch per sample.
fn drop_path(x: &Tensor, rate: f64, train: bool) -> Tensor {
    if !train || rate <= 0.0 {
        return x.shallow_clone();
    }
    let keep = 1.0 - rate;
    let mask = (Tensor::rand([x.size()[0], 1, 1], (x.kind(), x.device())) + keep).floor();
    x * mask / keep
}

/// Non-overlapping patches by a strided convolution.
#[derive(Debug)]
pub struct PatchEmbed {
    proj: nn::Conv2D,
}

impl PatchEmbed {
    pub fn new(p: nn::Path, cfg: &Config) -> Self {
        // PyTorch's default conv init (timm leaves the patch conv to it).
        let fan_in = (cfg.in_chans * cfg.patch_size * cfg.patch_size) as f64;
        let b = 1.0 / fan_in.sqrt();
        let proj = nn::conv2d(
            p / "proj",
            cfg.in_chans as i64,
            cfg.embed_dim as i64,
            cfg.patch_size as i64,
            nn::ConvConfig {
                stride: cfg.patch_size as i64,
                ws_init: Init::Uniform { lo: -b, up: b },
                bs_init: Init::Uniform { lo: -b, up: b },
                ..Default::default()
            },
        );
        PatchEmbed { proj }
    }

    /// `[B, C, H, W]` -> `[B, N, dim]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.proj.forward(x).flatten(2, -1).transpose(1, 2)
    }
}

#[derive(Debug)]
pub struct Attention {
    qkv: nn::Linear,
    proj: nn::Linear,
    num_heads: i64,
}

impl Attention {
    pub fn new(p: nn::Path, cfg: &Config) -> Self {
        let d = cfg.embed_dim;
        Attention {
            qkv: linear(&p / "qkv", d, 3 * d, cfg.qkv_bias),
            proj: linear(&p / "proj", d, d, true),
            num_heads: cfg.num_heads as i64,
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (b, n, d) = x.size3().expect("[B, N, dim]");
        let h = self.num_heads;
        let qkv = self
            .qkv
            .forward(x)
            .reshape([b, n, 3, h, d / h])
            .permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<&Tensor>,
            0.0,
            false,
            None::<f64>,
            false,
        );
        self.proj.forward(&y.transpose(1, 2).reshape([b, n, d]))
    }
}

#[derive(Debug)]
pub struct Mlp {
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Mlp {
    pub fn new(p: nn::Path, cfg: &Config) -> Self {
        let hidden = (cfg.embed_dim as f64 * cfg.mlp_ratio).round() as usize;
        Mlp {
            fc1: linear(&p / "fc1", cfg.embed_dim, hidden, true),
            fc2: linear(&p / "fc2", hidden, cfg.embed_dim, true),
        }
    }

    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.fc2.forward(&self.fc1.forward(x).gelu("none"))
    }
}

/// Pre-norm transformer block.
#[derive(Debug)]
pub struct Block {
    norm1: nn::LayerNorm,
    attn: Attention,
    norm2: nn::LayerNorm,
    mlp: Mlp,
    drop_path: f64,
}

impl Block {
    pub fn new(p: nn::Path, cfg: &Config, drop_path: f64) -> Self {
        Block {
            norm1: layer_norm(&p / "norm1", cfg.embed_dim),
            attn: Attention::new(&p / "attn", cfg),
            norm2: layer_norm(&p / "norm2", cfg.embed_dim),
            mlp: Mlp::new(&p / "mlp", cfg),
            drop_path,
        }
    }

    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let x = x + drop_path(
            &self.attn.forward(&self.norm1.forward(x)),
            self.drop_path,
            train,
        );
        &x + drop_path(
            &self.mlp.forward(&self.norm2.forward(&x)),
            self.drop_path,
            train,
        )
    }
}

/// Logits of every head for one batch.
#[derive(Debug)]
pub struct VitOutput {
    /// Class head `[B, classes]`.
    pub cls: Tensor,
    /// One `[B, classes]` per distillation token, in teacher order.
    pub dist: Vec<Tensor>,
}

impl VitOutput {
    /// The prediction used at inference: the mean of all heads' logits.
    pub fn averaged(&self) -> Tensor {
        if self.dist.is_empty() {
            return self.cls.shallow_clone();
        }
        let mut all = vec![self.cls.shallow_clone()];
        all.extend(self.dist.iter().map(Tensor::shallow_clone));
        Tensor::stack(&all, 0).mean_dim(0, false, Kind::Float)
    }
}

#[derive(Debug)]
pub struct Vit {
    pub cfg: Config,
    patch_embed: Option<PatchEmbed>,
    stems: Option<CivtStems>,
    cls_token: Tensor,
    dist_tokens: Option<Tensor>,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
    head: nn::Linear,
    head_dist: Vec<nn::Linear>,
}

impl Vit {
    pub fn new(p: &nn::Path, cfg: &Config) -> Self {
        let d = cfg.embed_dim as i64;
        let t = cfg.dist_tokens;
        let civt = cfg.stem == Stem::ConvInvolution;
        let patch_embed = (!civt).then(|| PatchEmbed::new(p / "patch_embed", cfg));
        let stems = civt.then(|| CivtStems::new(p, cfg.in_chans, cfg.patch_size, cfg.embed_dim));
        let cls_token = p.var("cls_token", &[1, 1, d], TRUNC_NORMAL);
        let dist_tokens =
            (t > 0 && !civt).then(|| p.var("dist_tokens", &[1, t as i64, d], TRUNC_NORMAL));
        let n_tok = (1 + t + cfg.num_patches()) as i64;
        let pos_embed = p.var("pos_embed", &[1, n_tok, d], TRUNC_NORMAL);
        let blocks = (0..cfg.depth)
            .map(|i| {
                let rate = if cfg.depth > 1 {
                    cfg.drop_path * i as f64 / (cfg.depth - 1) as f64
                } else {
                    cfg.drop_path
                };
                Block::new(p / "blocks" / i, cfg, rate)
            })
            .collect();
        let norm = layer_norm(p / "norm", cfg.embed_dim);
        let head = linear(p / "head", cfg.embed_dim, cfg.num_classes, true);
        let head_dist = (0..t)
            .map(|i| linear(p / "head_dist" / i, cfg.embed_dim, cfg.num_classes, true))
            .collect();
        Vit {
            cfg: cfg.clone(),
            patch_embed,
            stems,
            cls_token,
            dist_tokens,
            pos_embed,
            blocks,
            norm,
            head,
            head_dist,
        }
    }

    /// Images `[B, C, H, W]` (normalised) -> logits of every head.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> VitOutput {
        let b = x.size()[0];
        let mut seq = vec![self.cls_token.expand([b, -1, -1], false)];
        match (&self.patch_embed, &self.stems) {
            (Some(pe), _) => {
                if let Some(dt) = &self.dist_tokens {
                    seq.push(dt.expand([b, -1, -1], false));
                }
                seq.push(pe.forward(x));
            }
            (None, Some(stems)) => {
                let st = stems.forward_t(x, &self.cfg.token_stems, train);
                seq.extend(st.dist);
                seq.push(st.patches);
            }
            (None, None) => unreachable!("a ViT has a patch embedding or stems"),
        }
        let mut h = Tensor::cat(&seq, 1) + &self.pos_embed;
        for blk in &self.blocks {
            h = blk.forward_t(&h, train);
        }
        let h = self.norm.forward(&h);
        let cls = self.head.forward(&h.select(1, 0));
        let dist = self
            .head_dist
            .iter()
            .enumerate()
            .map(|(t, head)| head.forward(&h.select(1, 1 + t as i64)))
            .collect();
        VitOutput { cls, dist }
    }
}

#[cfg(test)]
mod tests;
