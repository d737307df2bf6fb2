//! `kd cache gallery`: a picture of the stored views two teachers disagree
//! on most, each labelled with the label and both teachers' top two
//! classes.

use crate::ui::out;
use anyhow::{Context, bail};
use kd_logit_cache::LogitStore;
use kd_report::gallery::{Tile, write_gallery};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct GalleryArgs {
    /// The store's artifact directory.
    dir: PathBuf,
    /// The PNG to write.
    #[arg(long)]
    out: PathBuf,
    /// The two teachers to compare (by their names in the store); default
    /// the store's first two.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    teachers: Option<Vec<String>>,
    /// Views to show: the most disputed view of each of this many images.
    #[arg(long, default_value_t = 24)]
    count: usize,
    /// Images per row.
    #[arg(long, default_value_t = 6)]
    columns: usize,
}

pub fn gallery(a: GalleryArgs) -> anyhow::Result<()> {
    let ctx = || format!("cache gallery {}", a.dir.display());
    if a.count == 0 || a.columns == 0 {
        bail!("--count and --columns must be at least 1");
    }
    let store = LogitStore::open(&a.dir).with_context(ctx)?;
    let names = store.teachers().to_vec();
    let (ta, tb) = match &a.teachers {
        Some(t) => (t[0].clone(), t[1].clone()),
        None if names.len() >= 2 => (names[0].clone(), names[1].clone()),
        None => bail!(
            "{}: one teacher ({}); a gallery compares two",
            a.dir.display(),
            names.join(", ")
        ),
    };
    // The pixels come from the dataset the store recorded, found from here.
    let input = store
        .meta()
        .inputs
        .iter()
        .find(|i| i.role == "dataset")
        .with_context(|| format!("{}: the store records no dataset", a.dir.display()))?;
    let ds_dir = input.verify_at(&a.dir).with_context(ctx)?;
    let ds = kd_data::Dataset::open(&ds_dir).with_context(ctx)?;
    let train = ds.split("train").with_context(ctx)?;
    let picks = kd_logit_cache::disagreement::most_disputed(&store, train, &ta, &tb, a.count)
        .with_context(ctx)?;
    let class = |c: usize| {
        ds.class_names
            .get(c)
            .cloned()
            .unwrap_or_else(|| c.to_string())
    };
    let tiles: Vec<Tile> = picks
        .iter()
        .map(|d| {
            let label = match (d.mixed_with, d.mix) {
                (Some((p, own)), Some(kind)) => format!(
                    "label: {} {:.2} + {} {:.2} ({kind})",
                    class(d.label),
                    own,
                    class(p),
                    1.0 - own
                ),
                _ => format!("label: {}", class(d.label)),
            };
            let mut caption = vec![label];
            for (name, t) in [&ta, &tb].iter().zip(&d.top2) {
                caption.push(format!(
                    "{name}: {} {:.2}, {} {:.2}",
                    class(t[0].0),
                    t[0].1,
                    class(t[1].0),
                    t[1].1
                ));
            }
            caption.push(format!(
                "sample {}, view {}, distance {:.2}",
                d.sample, d.view, d.distance
            ));
            Tile {
                pixels: d.pixels.clone(),
                chw: d.chw,
                caption,
            }
        })
        .collect();
    let title = format!(
        "Stored views where {ta} and {tb} disagree most (total variation distance of their softmaxes)"
    );
    write_gallery(&title, &tiles, a.columns, &a.out).with_context(ctx)?;
    out(format!(
        "wrote {} ({} views; distance {:.2} to {:.2})",
        a.out.display(),
        tiles.len(),
        picks.first().map_or(0.0, |d| d.distance),
        picks.last().map_or(0.0, |d| d.distance)
    ));
    Ok(())
}
