//! ResNet-style CNN teacher (He et al., "Deep Residual Learning for Image
//! Recognition", CVPR 2016), in the CIFAR layout: a 3x3 stem without pooling,
//! stages of basic blocks (two 3x3 convs + BatchNorm, identity or 1x1
//! projection shortcut), stride 2 at the start of every stage after the first,
//! global average pooling, one linear head.
//!
//! Parameter names follow torchvision's ResNet: `conv1.weight`, `bn1.*`,
//! `layer1.0.conv1.weight`, `layer2.0.downsample.0.weight`,
//! `layer2.0.downsample.1.*`, `fc.weight`, `fc.bias`.

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
    pub const PRESETS: [&'static str; 2] = ["cnn-tiny", "cnn-small"];

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

impl ModuleT for BasicBlock {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let y = x.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        let y = y.apply(&self.conv2).apply_t(&self.bn2, train);
        let short = match &self.downsample {
            Some((c, b)) => x.apply(c).apply_t(b, train),
            None => x.shallow_clone(),
        };
        (y + short).relu()
    }
}

#[derive(Debug)]
pub struct Cnn {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    layers: Vec<Vec<BasicBlock>>,
    fc: nn::Linear,
}

impl Cnn {
    pub fn new(p: &nn::Path, cfg: &CnnConfig, in_channels: i64, num_classes: i64) -> Cnn {
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
            conv1: conv(p / "conv1", in_channels, cfg.stem_width, 3, 1),
            bn1: bn(p / "bn1", cfg.stem_width),
            layers,
            fc: nn::linear(p / "fc", cin, num_classes, Default::default()),
        }
    }
}

impl ModuleT for Cnn {
    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut y = x.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        for blk in self.layers.iter().flatten() {
            y = blk.forward_t(&y, train);
        }
        y.mean_dim([2i64, 3].as_slice(), false, Kind::Float)
            .apply(&self.fc)
    }
}
