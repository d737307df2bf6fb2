//! ResNet-style CNN teacher (He et al., "Deep Residual Learning for Image
//! Recognition", CVPR 2016), in the CIFAR layout: a 3x3 stem without pooling,
//! stages of basic blocks (two 3x3 convs + BatchNorm, identity or 1x1
//! projection shortcut), stride 2 at the start of every stage after the first,
//! global average pooling, one linear head.
//!
//! The stem strides by the image size ([`ImageStem`]): the CIFAR 3x3 stem
//! below 64 px, a stride-2 3x3 stem from 64 px, and ImageNet's 7x7/2 conv +
//! 3x3/2 max-pool from 128 px, so one preset works from 28 to 224 px
//! (`cnn-r18` at 224 px is torchvision's ResNet-18, parameter for parameter).
//!
//! Parameter names follow torchvision's ResNet: `conv1.weight`, `bn1.*`,
//! `layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`,
//! `layer2.0.downsample.1.*`, `fc.weight`, `fc.bias`.

use kd_core::layout;
use serde::{Deserialize, Serialize};
use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnnConfig {
    pub stem_width: i64,
    /// Output channels of each stage.
    pub widths: Vec<i64>,
    /// Basic blocks per stage.
    pub blocks: Vec<usize>,
}

impl CnnConfig {
    pub const PRESETS: [&'static str; 3] = ["cnn-tiny", "cnn-small", "cnn-r18"];

    pub fn preset(name: &str) -> Option<CnnConfig> {
        Some(match name {
            // For tests: a few thousand parameters.
            "cnn-tiny" => CnnConfig {
                stem_width: 8,
                widths: vec![8, 16],
                blocks: vec![1, 1],
            },
            // The demo/full teacher: ~0.3M parameters, 28x28 -> 7x7.
            "cnn-small" => CnnConfig {
                stem_width: 32,
                widths: vec![32, 64, 128],
                blocks: vec![1, 1, 1],
            },
            // ResNet-18's widths and depths (~11.2M parameters), 32 to 224 px.
            "cnn-r18" => CnnConfig {
                stem_width: 64,
                widths: vec![64, 128, 256, 512],
                blocks: vec![2, 2, 2, 2],
            },
            _ => return None,
        })
    }
}

pub(crate) fn conv(p: nn::Path, cin: i64, cout: i64, k: i64, stride: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding: k / 2,
        bias: false,
        ws_init: nn::init::DEFAULT_KAIMING_NORMAL,
        ..Default::default()
    };
    nn::conv2d(p, cin, cout, k, cfg)
}

pub(crate) fn bn(p: nn::Path, c: i64) -> nn::BatchNorm {
    nn::batch_norm2d(
        p,
        c,
        nn::BatchNormConfig {
            ws_init: nn::Init::Const(1.),
            ..Default::default()
        },
    )
}

/// The first layer, strided by the image size.
#[derive(Debug)]
pub(crate) struct ImageStem {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    max_pool: bool,
}

impl ImageStem {
    /// `conv1` + `bn1` (+ max-pool) for images of side `side`.
    pub(crate) fn new(p: &nn::Path, in_channels: i64, width: i64, side: usize) -> ImageStem {
        let (k, stride, max_pool) = match side {
            0..64 => (3, 1, false),
            64..128 => (3, 2, false),
            _ => (7, 2, true),
        };
        ImageStem {
            conv1: conv(p / "conv1", in_channels, width, k, stride),
            bn1: bn(p / "bn1", width),
            max_pool,
        }
    }
}

impl ModuleT for ImageStem {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        // On the CPU the whole network runs channels-last from here (see
        // kd_core::layout).
        let y = layout::for_convolutions(x)
            .apply(&self.conv1)
            .apply_t(&self.bn1, train)
            .relu_();
        if self.max_pool {
            y.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false)
        } else {
            y
        }
    }
}

#[derive(Debug)]
struct BasicBlock {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl BasicBlock {
    fn new(p: nn::Path, cin: i64, cout: i64, stride: i64) -> BasicBlock {
        let downsample = (stride != 1 || cin != cout).then(|| {
            let d = &p / "downsample";
            (conv(&d / 0, cin, cout, 1, stride), bn(&d / 1, cout))
        });
        BasicBlock {
            conv1: conv(&p / "conv1", cin, cout, 3, stride),
            bn1: bn(&p / "bn1", cout),
            conv2: conv(&p / "conv2", cout, cout, 3, 1),
            bn2: bn(&p / "bn2", cout),
            downsample,
        }
    }
}

// ReLUs run in place: BatchNorm's backward needs its input, not its
// output, and a sum's backward needs neither, so one activation buffer per
// layer is spared.
impl ModuleT for BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let y = x.apply(&self.conv1).apply_t(&self.bn1, train).relu_();
        let y = y.apply(&self.conv2).apply_t(&self.bn2, train);
        let short = match &self.downsample {
            Some((c, b)) => x.apply(c).apply_t(b, train),
            None => x.shallow_clone(),
        };
        (y + short).relu_()
    }
}

#[derive(Debug)]
pub struct Cnn {
    stem: ImageStem,
    layers: Vec<Vec<BasicBlock>>,
    fc: nn::Linear,
}

impl Cnn {
    /// For images of side `side` (the stem's stride depends on it).
    pub fn new(
        p: &nn::Path,
        cfg: &CnnConfig,
        in_channels: i64,
        num_classes: i64,
        side: usize,
    ) -> Cnn {
        assert_eq!(
            cfg.widths.len(),
            cfg.blocks.len(),
            "one block count per stage"
        );
        let mut cin = cfg.stem_width;
        let mut layers = vec![];
        for (s, (&w, &n)) in cfg.widths.iter().zip(&cfg.blocks).enumerate() {
            let lp = p / format!("layer{}", s + 1);
            let blocks = (0..n)
                .map(|b| {
                    let stride = if s > 0 && b == 0 { 2 } else { 1 };
                    let blk = BasicBlock::new(&lp / b, cin, w, stride);
                    cin = w;
                    blk
                })
                .collect();
            layers.push(blocks);
        }
        Cnn {
            stem: ImageStem::new(p, in_channels, cfg.stem_width, side),
            layers,
            fc: nn::linear(p / "fc", cin, num_classes, Default::default()),
        }
    }
}

impl ModuleT for Cnn {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = self.stem.forward_t(x, train);
        for blk in self.layers.iter().flatten() {
            y = blk.forward_t(&y, train);
        }
        y.mean_dim([2i64, 3].as_slice(), false, Kind::Float)
            .apply(&self.fc)
    }
}
