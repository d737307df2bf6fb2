//! `kd bench data`: the input pipeline alone (reads, views, mixing,
//! normalisation) over a dataset artifact on disk, in the order and through
//! the data cache training would use, with images/s, bytes decoded per
//! image and peak memory. `scripts/bench-data.sh` runs it beside the
//! torchvision `DataLoader` doing the same work on the same pixels.

use crate::cmd_cache::parse_range;
use crate::cmd_plan::probe::vm_hwm;
use crate::setting_flag::setting;
use crate::ui::out;
use anyhow::Context;
use kd_core::sampler::epoch_order;
use kd_core::{Crop, CropRange, MixMode, MixParams, MixSpec, ViewParams, ViewSpec};
use kd_data::Dataset;
use kd_data::augment::{assemble, assemble_mixed, lut};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// The input pipeline alone: batches of views of a dataset artifact's
    /// split, as training assembles them (uint8 reads through the data
    /// cache, views, mixing, normalised float32), without a model.
    Data(DataArgs),
}

#[derive(clap::Args)]
pub struct DataArgs {
    /// Dataset artifact directory.
    #[arg(long)]
    dataset: PathBuf,
    /// Split to read.
    #[arg(long, default_value = "train")]
    split: String,
    /// How each view's box is drawn: resized-crop (default here: torchvision's
    /// RandomResizedCrop) or pad-crop.
    #[arg(long, value_parser = setting::<Crop>(), default_value = "resized-crop")]
    crop: Crop,
    /// Resized-crop: area fraction range LOW,HIGH.
    #[arg(long, value_name = "LOW,HIGH", value_parser = parse_range, default_value = "0.08,1")]
    crop_scale: [f64; 2],
    /// Resized-crop: side of every view in pixels (default: the stored
    /// image's), e.g. 224 from images stored at 256.
    #[arg(long, value_name = "PIXELS")]
    view_size: Option<u16>,
    /// Pad-crop: zero padding.
    #[arg(long, default_value_t = 4)]
    pad: u8,
    /// No horizontal flips.
    #[arg(long)]
    no_flip: bool,
    /// Mix each view with another of its batch: none, mixup, cutmix or
    /// mixup-cutmix (as torchvision's MixUp / CutMix on a batch).
    #[arg(long, value_parser = setting::<MixMode>().named(&MixMode::NAMES), default_value = "none")]
    mix: MixMode,
    /// Images per batch.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Batches timed (after --warmup untimed ones).
    #[arg(long, default_value_t = 20)]
    batches: usize,
    /// Untimed batches first.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Seed of the order and the views.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// One JSON object instead of a line.
    #[arg(long)]
    json: bool,
}

pub fn run(c: Cmd) -> anyhow::Result<()> {
    match c {
        Cmd::Data(a) => data(a),
    }
}

fn data(a: DataArgs) -> anyhow::Result<()> {
    if a.batch == 0 || a.batches == 0 {
        anyhow::bail!("--batch and --batches must be at least 1");
    }
    let ds = Dataset::open(&a.dataset).with_context(|| a.dataset.display().to_string())?;
    let split = ds.split(&a.split)?;
    let n = split.len();
    let hw = [split.chw[1], split.chw[2]];
    let flip = !a.no_flip;
    let spec = match a.crop {
        Crop::ResizedCrop => ViewSpec::resized(
            CropRange {
                scale: a.crop_scale,
                ..CropRange::default()
            },
            flip,
        ),
        Crop::PadCrop => ViewSpec {
            pad: a.pad,
            flip,
            ..ViewSpec::default()
        },
    };
    let spec = ViewSpec {
        size: a.view_size,
        ..spec
    };
    spec.check(hw).map_err(anyhow::Error::msg)?;
    let mix = MixSpec {
        mode: a.mix,
        prob: 1.0,
        ..MixSpec::default()
    };
    mix.validate()?;
    let table = lut(&ds.mean, &ds.std);
    let shuffle = split.shuffle();
    let total = a.warmup + a.batches;
    let mut order = vec![];
    let mut epoch = 0;
    while order.len() < total * a.batch {
        order.extend(epoch_order(n, a.seed, epoch, shuffle));
        epoch += 1;
    }
    let (mut images, mut decoded0, mut t0) = (0usize, 0u64, Instant::now());
    let mut checksum = 0f64;
    for (b, idx) in order.chunks(a.batch).take(total).enumerate() {
        if b == a.warmup {
            (images, decoded0, t0) = (0, split.images.decoded_bytes(), Instant::now());
        }
        let view = 1 + b as u64;
        let views: Vec<ViewParams> = idx
            .iter()
            .map(|&s| spec.draw(hw, a.seed, s as u64, view))
            .collect();
        let buf = if mix.is_none() {
            assemble(split, idx, &views, &spec, &table)?
        } else {
            // Partners within the batch, as torchvision mixes a batch.
            let mut mixes: Vec<MixParams> = idx
                .iter()
                .map(|&s| mix.draw(a.seed, s as u64, view, idx.len() as u64, spec.out_hw(hw)))
                .collect();
            for m in mixes.iter_mut().filter(|m| m.is_mixed()) {
                m.partner = idx[m.partner as usize] as u32;
            }
            let partner_views: Vec<ViewParams> = mixes
                .iter()
                .zip(&views)
                .map(|(m, &v)| {
                    if m.is_mixed() {
                        spec.draw(hw, a.seed, m.partner as u64, view)
                    } else {
                        v
                    }
                })
                .collect();
            assemble_mixed(split, idx, &views, &partner_views, &mixes, &spec, &table)?
        };
        checksum += buf[0] as f64;
        images += idx.len();
    }
    let secs = t0.elapsed().as_secs_f64();
    let decoded = split.images.decoded_bytes() - decoded0;
    let report = json!({
        "tool": "kd",
        "images_per_sec": images as f64 / secs.max(1e-9),
        "images": images,
        "seconds": secs,
        "decoded_bytes_per_image": decoded as f64 / images.max(1) as f64,
        "read_by_chunk": split.images.chunk_len().is_some(),
        "threads": rayon::current_num_threads(),
        "batch": a.batch,
        "size": hw,
        "view_size": spec.out_hw(hw),
        "crop": a.crop,
        "mix": a.mix,
        "peak_rss_bytes": vm_hwm(),
        "checksum": checksum,
    });
    if a.json {
        out(report);
    } else {
        out(format!(
            "{:.0} images/s ({images} views of {}x{} from images of {}x{} in {secs:.1} s, {} threads, batch {}); {:.0} bytes decoded per image{}; peak RSS {}",
            images as f64 / secs.max(1e-9),
            spec.out_hw(hw)[0],
            spec.out_hw(hw)[1],
            hw[0],
            hw[1],
            rayon::current_num_threads(),
            a.batch,
            decoded as f64 / images.max(1) as f64,
            if split.images.chunk_len().is_some() {
                " (read by chunk)"
            } else {
                " (in memory)"
            },
            vm_hwm().map_or("unknown".into(), |b| format!(
                "{:.2} GiB",
                b as f64 / (1u64 << 30) as f64
            )),
        ));
    }
    Ok(())
}
