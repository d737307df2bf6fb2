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

use crate::stem::{CivtStems, Stem, TokenStem};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Init, Module};
use tch::{Kind, Tensor};

/// Initialisation of linear layers and tokens, as timm's `trunc_normal_(std=.02)`
/// (whose cut-off at +-2 is absolute, so at std 0.02 it never truncates).
const TRUNC_NORMAL: Init = Init::Randn {
    mean: 0.0,
    stdev: 0.02,
};
const LN_EPS: f64 = 1e-6;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub image_size: usize,
    pub in_chans: usize,
    pub patch_size: usize,
    pub embed_dim: usize,
    pub depth: usize,
    pub num_heads: usize,
    pub mlp_ratio: f64,
    pub qkv_bias: bool,
    pub num_classes: usize,
    /// Distillation tokens (0: plain ViT with only the class token).
    pub dist_tokens: usize,
    /// Stochastic depth rate of the last block (linearly 0 -> rate).
    pub drop_path: f64,
    /// Patch embedding (absent from the serialised config when `patch`, so
    /// artifacts made before stems existed keep their hashes).
    #[serde(default, skip_serializing_if = "Stem::is_patch")]
    pub stem: Stem,
    /// With CivT stems: the stem each distillation token is the mean of.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_stems: Vec<TokenStem>,
}

/// Names of the presets accepted by [`Config::preset`].
pub const PRESETS: [&str; 6] = [
    "vit-test",
    "vit-tiny",
    "vit-small",
    "vit-c32",
    "deit-tiny",
    "deit-small",
];

/// Every architecture knob, each optional: a profile's `[students.<v>.model]`
/// table, applied over the preset (or making a model of its own).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelOverrides {
    pub patch_size: Option<usize>,
    pub embed_dim: Option<usize>,
    pub depth: Option<usize>,
    pub num_heads: Option<usize>,
    pub mlp_ratio: Option<f64>,
    pub qkv_bias: Option<bool>,
    pub drop_path: Option<f64>,
}

impl ModelOverrides {
    pub fn is_empty(&self) -> bool {
        *self == ModelOverrides::default()
    }

    pub fn apply(&self, cfg: &mut Config) {
        macro_rules! set {
            ($($f:ident),*) => {$(if let Some(v) = self.$f { cfg.$f = v; })*};
        }
        set!(
            patch_size, embed_dim, depth, num_heads, mlp_ratio, qkv_bias, drop_path
        );
    }
}

impl Config {
    /// An architecture preset, completed with the data's geometry and the
    /// token count.
    pub fn preset(
        name: &str,
        image_size: usize,
        in_chans: usize,
        num_classes: usize,
        dist_tokens: usize,
    ) -> Option<Config> {
        let (patch_size, embed_dim, depth, num_heads, mlp_ratio, drop_path) = match name {
            // For unit tests: a few thousand parameters.
            "vit-test" => (4, 16, 1, 2, 2.0, 0.0),
            // ~310k parameters at 28 px (MLP ratio 2): the demo student.
            "vit-tiny" => (4, 96, 4, 3, 2.0, 0.1),
            // ~810k parameters: the full-profile student.
            "vit-small" => (4, 128, 6, 4, 2.0, 0.1),
            // 32 px colour (CIFAR): 64 patches of 4x4, ~3.7M parameters.
            "vit-c32" => (4, 256, 7, 4, 2.0, 0.1),
            // DeiT-Ti and DeiT-S (Touvron et al. 2021) for 224 px: patch 16.
            "deit-tiny" => (16, 192, 12, 3, 4.0, 0.1),
            "deit-small" => (16, 384, 12, 6, 4.0, 0.1),
            _ => return None,
        };
        Some(Config {
            image_size,
            in_chans,
            patch_size,
            embed_dim,
            depth,
            num_heads,
            mlp_ratio,
            qkv_bias: true,
            num_classes,
            dist_tokens,
            drop_path,
            stem: Stem::Patch,
            token_stems: vec![],
        })
    }

    pub fn num_patches(&self) -> usize {
        let side = self.image_size / self.patch_size;
        side * side
    }

    /// Check the geometry; a readable reason when it does not fit.
    pub fn validate(&self) -> Result<(), String> {
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            return Err(format!(
                "image size {} is not a multiple of patch size {}",
                self.image_size, self.patch_size
            ));
        }
        if self.depth == 0 || self.embed_dim == 0 {
            return Err("depth and embed dim must be at least 1".into());
        }
        if !(self.mlp_ratio.is_finite() && self.mlp_ratio > 0.0) {
            return Err(format!("mlp ratio {} must be > 0", self.mlp_ratio));
        }
        if !(0.0..1.0).contains(&self.drop_path) {
            return Err(format!("drop path {} must be in [0, 1)", self.drop_path));
        }
        if self.num_heads == 0 || !self.embed_dim.is_multiple_of(self.num_heads) {
            return Err(format!(
                "embed dim {} is not a multiple of {} heads",
                self.embed_dim, self.num_heads
            ));
        }
        if self.num_classes == 0 || self.in_chans == 0 {
            return Err("no classes or no channels".into());
        }
        match self.stem {
            Stem::Patch if !self.token_stems.is_empty() => {
                return Err("token stems given without the conv-involution stem".into());
            }
            Stem::ConvInvolution if self.token_stems.len() != self.dist_tokens => {
                return Err(format!(
                    "{} distillation tokens but {} token stems",
                    self.dist_tokens,
                    self.token_stems.len()
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

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
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn shapes_and_names_for_each_token_count() {
        for t in 0..=2 {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = Config::preset("vit-test", 8, 1, 5, t).unwrap();
            let m = Vit::new(&vs.root(), &cfg);
            let out = m.forward_t(
                &Tensor::randn([3, 1, 8, 8], (Kind::Float, Device::Cpu)),
                true,
            );
            assert_eq!(out.cls.size(), [3, 5]);
            assert_eq!(out.dist.len(), t);
            for d in &out.dist {
                assert_eq!(d.size(), [3, 5]);
            }
            assert_eq!(out.averaged().size(), [3, 5]);
            let vars = vs.variables();
            assert_eq!(vars["pos_embed"].size(), [1, 1 + t as i64 + 4, 16]);
            assert_eq!(vars.contains_key("dist_tokens"), t > 0);
            if t > 0 {
                assert_eq!(vars["dist_tokens"].size(), [1, t as i64, 16]);
                assert!(vars.contains_key(&format!("head_dist.{}.weight", t - 1)));
            }
            for k in [
                "cls_token",
                "patch_embed.proj.weight",
                "blocks.0.attn.qkv.weight",
                "blocks.0.attn.proj.bias",
                "blocks.0.norm1.weight",
                "blocks.0.norm2.bias",
                "blocks.0.mlp.fc1.weight",
                "blocks.0.mlp.fc2.weight",
                "norm.weight",
                "head.weight",
            ] {
                assert!(vars.contains_key(k), "missing {k}");
            }
        }
    }

    #[test]
    fn averaged_is_mean_of_head_logits() {
        let o = VitOutput {
            cls: Tensor::from_slice(&[1.0f32, 4.0]).view([1, 2]),
            dist: vec![
                Tensor::from_slice(&[3.0f32, 0.0]).view([1, 2]),
                Tensor::from_slice(&[2.0f32, 2.0]).view([1, 2]),
            ],
        };
        let a: Vec<f32> = Vec::try_from(o.averaged().view([-1])).unwrap();
        assert_eq!(a, vec![2.0, 2.0]);
    }

    #[test]
    fn bf16_autocast_forward_agrees_with_f32_and_grads_stay_f32() {
        use kd_core::amp::{Precision, autocast};
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Vit::new(&vs.root(), &Config::preset("vit-test", 8, 1, 5, 2).unwrap());
        let x = Tensor::randn([4, 1, 8, 8], (Kind::Float, Device::Cpu));
        let f32_out = m.forward_t(&x, false).averaged();
        let bf16_out = autocast(Device::Cpu, Precision::Bf16, || m.forward_t(&x, false));
        // The heads (linear layers) really ran in bf16.
        assert_eq!(bf16_out.cls.kind(), Kind::BFloat16);
        let avg = bf16_out.averaged().to_kind(Kind::Float);
        let err = f64::try_from((&avg - &f32_out).abs().max()).unwrap();
        let scale = f64::try_from(f32_out.abs().max()).unwrap();
        assert!(
            err < 0.05 * scale.max(1.0),
            "bf16 off by {err} (scale {scale})"
        );
        avg.sum(Kind::Float).backward();
        for (name, v) in vs.variables() {
            assert_eq!(v.kind(), Kind::Float, "{name}");
            assert!(v.grad().defined(), "{name} got no gradient");
            assert_eq!(v.grad().kind(), Kind::Float, "{name}");
        }
    }

    /// DeiT presets against timm's `deit_tiny_distilled_patch16_224` (5,910,800
    /// parameters) and `deit_small_distilled_patch16_224` (22,436,432): one
    /// distillation token, 1000 classes, 224 px RGB. The counts are
    /// `12 D^2 + 13 D` per block, patch conv, cls/dist/pos, final norm and
    /// two heads.
    #[test]
    fn deit_presets_match_timm_parameter_counts() {
        for (preset, want) in [("deit-tiny", 5_910_800i64), ("deit-small", 22_436_432)] {
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = Config::preset(preset, 224, 3, 1000, 1).unwrap();
            cfg.validate().unwrap();
            let _m = Vit::new(&vs.root(), &cfg);
            assert_eq!(kd_core::stage::param_count(&vs), want, "{preset}");
        }
        // Each extra teacher adds one token, its position and one head.
        let vs = nn::VarStore::new(Device::Cpu);
        let _m = Vit::new(
            &vs.root(),
            &Config::preset("deit-tiny", 224, 3, 1000, 2).unwrap(),
        );
        assert_eq!(
            kd_core::stage::param_count(&vs),
            5_910_800 + 2 * 192 + 192 * 1000 + 1000
        );
        let vs = nn::VarStore::new(Device::Cpu);
        let m = Vit::new(
            &vs.root(),
            &Config::preset("vit-c32", 32, 3, 10, 2).unwrap(),
        );
        let n = kd_core::stage::param_count(&vs);
        assert!((3_000_000..5_000_000).contains(&n), "{n}");
        let out = m.forward_t(
            &Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu)),
            false,
        );
        assert_eq!(out.cls.size(), [2, 10]);
    }

    #[test]
    fn overrides_make_any_model_and_impossible_ones_are_refused() {
        let mut cfg = Config::preset("vit-tiny", 32, 3, 10, 1).unwrap();
        let o = ModelOverrides {
            patch_size: Some(8),
            depth: Some(2),
            ..Default::default()
        };
        o.apply(&mut cfg);
        assert_eq!((cfg.patch_size, cfg.depth, cfg.embed_dim), (8, 2, 96));
        cfg.validate().unwrap();
        ModelOverrides {
            patch_size: Some(5),
            ..Default::default()
        }
        .apply(&mut cfg);
        assert!(
            cfg.validate()
                .unwrap_err()
                .contains("not a multiple of patch size 5")
        );
        let mut cfg = Config::preset("vit-tiny", 32, 3, 10, 1).unwrap();
        cfg.num_heads = 5;
        assert!(cfg.validate().unwrap_err().contains("5 heads"));
    }

    #[test]
    fn vit_tiny_is_demo_sized() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _m = Vit::new(
            &vs.root(),
            &Config::preset("vit-tiny", 28, 1, 10, 2).unwrap(),
        );
        let n = kd_core::stage::param_count(&vs);
        assert!((250_000..400_000).contains(&n), "{n}");
    }

    #[test]
    fn eval_is_deterministic_and_train_drops_paths() {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let mut cfg = Config::preset("vit-test", 8, 1, 3, 1).unwrap();
        cfg.depth = 2;
        cfg.drop_path = 0.9;
        let m = Vit::new(&vs.root(), &cfg);
        let x = Tensor::randn([4, 1, 8, 8], (Kind::Float, Device::Cpu));
        assert!(
            m.forward_t(&x, false)
                .cls
                .equal(&m.forward_t(&x, false).cls)
        );
        let a = m.forward_t(&x, true).cls;
        let differs = (0..5).any(|_| !m.forward_t(&x, true).cls.equal(&a));
        assert!(differs, "drop path had no effect in training mode");
    }
}
