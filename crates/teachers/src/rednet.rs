//! RedNet-style involution network (Li et al., "Involution: Inverting the
//! Inherence of Convolution for Visual Recognition", CVPR 2021), sized for
//! 28-32 px inputs.
//!
//! A 3x3 convolution stem (no pooling; RedNet's ImageNet stem would shrink a
//! 28 px image too early), then stages of bottlenecks `1x1 conv -> involution
//! -> 1x1 conv` with a projection shortcut where the shape changes. The
//! involution's kernel is generated per pixel: 1x1 conv `C -> C/r`, BN, ReLU,
//! 1x1 conv `-> K*K*G` with 16 channels per group; a strided involution
//! generates its kernels from the average-pooled input, and the shortcut
//! downsamples by average pooling before its 1x1 conv (no strided 1x1 conv
//! that would drop 3 of 4 pixels).
//!
//! Parameter names follow the authors' mmcls code: `layer1.0.conv1.weight`,
//! `layer1.0.conv2.conv1.conv.weight` (kernel generator, reduce),
//! `layer1.0.conv2.conv1.bn.*`, `layer1.0.conv2.conv2.conv.{weight,bias}`
//! (kernel generator, span), `layer1.0.bn2.*`, `layer1.0.conv3.weight`,
//! `layer1.0.downsample.1.weight` (index 0 is the parameterless pooling),
//! `layer1.0.downsample.2.*`, `fc.*`.

use crate::cnn::{ImageStem, bn, conv};
use crate::involution::Implementation;
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedNetConfig {
    pub stem_width: i64,
    /// Bottleneck (involution) width of each stage; outputs are `mid * expansion`.
    pub mids: Vec<i64>,
    pub blocks: Vec<usize>,
    pub expansion: i64,
    /// Involution kernel size (odd).
    pub kernel: i64,
    /// Channels sharing one generated kernel.
    pub group_channels: i64,
    /// Kernel-generator reduction ratio r (`C -> C/r`).
    pub reduction: i64,
    /// Start each bottleneck's last BN at zero, so every block starts as the
    /// identity (as mmcls trains RedNet): an involution multiplies its input
    /// by kernels generated from it, so a deep untrained stack squares its
    /// activations block after block and overflows in eval mode.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub zero_init_residual: bool,
}

impl RedNetConfig {
    pub const PRESETS: [&'static str; 3] = ["rednet-tiny", "rednet-small", "rednet-26"];

    pub fn preset(name: &str) -> Option<RedNetConfig> {
        Some(match name {
            "rednet-tiny" => RedNetConfig {
                stem_width: 8,
                mids: vec![16, 16],
                blocks: vec![1, 1],
                expansion: 2,
                kernel: 3,
                group_channels: 16,
                reduction: 4,
                zero_init_residual: false,
            },
            "rednet-small" => RedNetConfig {
                stem_width: 32,
                mids: vec![16, 32, 64],
                blocks: vec![1, 1, 1],
                expansion: 4,
                kernel: 7,
                group_channels: 16,
                reduction: 4,
                zero_init_residual: false,
            },
            // RedNet-26's stages (bottlenecks 1-2-4-1, widths 64-512, x4
            // expansion, 7x7 involution), behind the image-sized stem
            // ([`ImageStem`]) instead of RedNet's involution stem: 32 to 224 px.
            "rednet-26" => RedNetConfig {
                stem_width: 64,
                mids: vec![64, 128, 256, 512],
                blocks: vec![1, 2, 4, 1],
                expansion: 4,
                kernel: 7,
                group_channels: 16,
                reduction: 4,
                zero_init_residual: true,
            },
            _ => return None,
        })
    }
}

/// The involution layer with its kernel generator.
#[derive(Debug)]
pub struct Involution {
    kernel: i64,
    stride: i64,
    groups: i64,
    reduce: nn::Conv2D,
    reduce_bn: nn::BatchNorm,
    span: nn::Conv2D,
    /// The op's implementation (benchmarks switch it).
    pub implementation: Implementation,
}

impl Involution {
    pub fn new(
        p: nn::Path,
        channels: i64,
        kernel: i64,
        stride: i64,
        group_channels: i64,
        reduction: i64,
    ) -> Involution {
        let groups = (channels / group_channels).max(1);
        assert!(
            channels % groups == 0,
            "{channels} channels, {group_channels} per group"
        );
        let red = (channels / reduction).max(1);
        let c1 = &p / "conv1";
        let span_cfg = nn::ConvConfig {
            bias: true,
            ..Default::default()
        };
        Involution {
            kernel,
            stride,
            groups,
            reduce: conv(&c1 / "conv", channels, red, 1, 1),
            reduce_bn: bn(&c1 / "bn", red),
            span: nn::conv2d(
                &p / "conv2" / "conv",
                red,
                kernel * kernel * groups,
                1,
                span_cfg,
            ),
            implementation: Implementation::Shim,
        }
    }
}

impl ModuleT for Involution {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let s = self.stride;
        let src = if s > 1 {
            // ceil_mode matches the involution's output size ceil(H / s).
            x.avg_pool2d([s, s], [s, s], [0, 0], true, false, None)
        } else {
            x.shallow_clone()
        };
        let w = src
            .apply(&self.reduce)
            .apply_t(&self.reduce_bn, train)
            .relu_()
            .apply(&self.span);
        let (b, _, ho, wo) = w.size4().expect("4-d kernel");
        let w = w.view([b, self.groups, self.kernel * self.kernel, ho, wo]);
        self.implementation
            .apply(x, &w, self.kernel, s, self.groups)
    }
}

#[derive(Debug)]
struct Bottleneck {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: Involution,
    bn2: nn::BatchNorm,
    conv3: nn::Conv2D,
    bn3: nn::BatchNorm,
    stride: i64,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl Bottleneck {
    fn new(
        p: nn::Path,
        cin: i64,
        mid: i64,
        cout: i64,
        stride: i64,
        cfg: &RedNetConfig,
    ) -> Bottleneck {
        let downsample = (stride != 1 || cin != cout).then(|| {
            let d = &p / "downsample";
            (conv(&d / 1, cin, cout, 1, 1), bn(&d / 2, cout))
        });
        Bottleneck {
            conv1: conv(&p / "conv1", cin, mid, 1, 1),
            bn1: bn(&p / "bn1", mid),
            conv2: Involution::new(
                &p / "conv2",
                mid,
                cfg.kernel,
                stride,
                cfg.group_channels,
                cfg.reduction,
            ),
            bn2: bn(&p / "bn2", mid),
            conv3: conv(&p / "conv3", mid, cout, 1, 1),
            bn3: if cfg.zero_init_residual {
                nn::batch_norm2d(
                    &p / "bn3",
                    cout,
                    nn::BatchNormConfig {
                        ws_init: nn::Init::Const(0.),
                        ..Default::default()
                    },
                )
            } else {
                bn(&p / "bn3", cout)
            },
            stride,
            downsample,
        }
    }
}

// ReLUs run in place: BatchNorm's backward needs its input, not its
// output, and a sum's backward needs neither, so one activation buffer per
// layer is spared.
impl ModuleT for Bottleneck {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let y = x.apply(&self.conv1).apply_t(&self.bn1, train).relu_();
        let y = self
            .conv2
            .forward_t(&y, train)
            .apply_t(&self.bn2, train)
            .relu_();
        let y = y.apply(&self.conv3).apply_t(&self.bn3, train);
        let short = match &self.downsample {
            Some((c, b)) => {
                let s = self.stride;
                let xs = if s > 1 {
                    x.avg_pool2d([s, s], [s, s], [0, 0], true, false, None)
                } else {
                    x.shallow_clone()
                };
                xs.apply(c).apply_t(b, train)
            }
            None => x.shallow_clone(),
        };
        (y + short).relu_()
    }
}

#[derive(Debug)]
pub struct RedNet {
    stem: ImageStem,
    layers: Vec<Vec<Bottleneck>>,
    fc: nn::Linear,
}

impl RedNet {
    /// For images of side `side` (the stem's stride depends on it).
    pub fn new(
        p: &nn::Path,
        cfg: &RedNetConfig,
        in_channels: i64,
        num_classes: i64,
        side: usize,
    ) -> RedNet {
        assert_eq!(
            cfg.mids.len(),
            cfg.blocks.len(),
            "one block count per stage"
        );
        let mut cin = cfg.stem_width;
        let mut layers = vec![];
        for (s, (&mid, &n)) in cfg.mids.iter().zip(&cfg.blocks).enumerate() {
            let lp = p / format!("layer{}", s + 1);
            let cout = mid * cfg.expansion;
            let blocks = (0..n)
                .map(|b| {
                    let stride = if s > 0 && b == 0 { 2 } else { 1 };
                    let blk = Bottleneck::new(&lp / b, cin, mid, cout, stride, cfg);
                    cin = cout;
                    blk
                })
                .collect();
            layers.push(blocks);
        }
        RedNet {
            stem: ImageStem::new(p, in_channels, cfg.stem_width, side),
            layers,
            fc: nn::linear(p / "fc", cin, num_classes, Default::default()),
        }
    }

    /// Switch every involution to another implementation (for benchmarks).
    pub fn set_implementation(&mut self, implementation: Implementation) {
        for blk in self.layers.iter_mut().flatten() {
            blk.conv2.implementation = implementation;
        }
    }
}

impl ModuleT for RedNet {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = self.stem.forward_t(x, train);
        for blk in self.layers.iter().flatten() {
            y = blk.forward_t(&y, train);
        }
        y.mean_dim([2i64, 3].as_slice(), false, Kind::Float)
            .apply(&self.fc)
    }
}
