//! A picture of images in a grid, each with a few caption lines under it
//! (the views two teachers disagree on, labelled with what each says), as
//! one PNG. Small images are scaled up by whole pixels, so each source pixel
//! stays a crisp square.

use crate::error::{ReportError, Result};
use crate::plot::{FONT, register_embedded_font};
use plotters::prelude::*;
use std::error::Error;
use std::path::Path;

/// One image of the grid and its caption.
#[derive(Clone, Debug, PartialEq)]
pub struct Tile {
    /// `[C, H, W]` row-major, 0-255; one channel is grey, three are RGB.
    pub pixels: Vec<u8>,
    pub chw: [usize; 3],
    pub caption: Vec<String>,
}

/// The side an image is scaled up to (at most; never down).
const IMAGE_SIDE: usize = 112;
/// Width of a grid cell: room for a caption line such as
/// "involution: shirt 0.48, coat 0.31".
const CELL_WIDTH: usize = 290;
const LINE_HEIGHT: usize = 17;
const TITLE_HEIGHT: usize = 40;

/// Draw `tiles` in rows of `columns` under `title` into the PNG `path`.
pub fn write_gallery(title: &str, tiles: &[Tile], columns: usize, path: &Path) -> Result<()> {
    register_embedded_font()?;
    draw(title, tiles, columns.max(1), path).map_err(|source| ReportError::Plot {
        path: path.to_path_buf(),
        source,
    })
}

fn draw(
    title: &str,
    tiles: &[Tile],
    columns: usize,
    path: &Path,
) -> std::result::Result<(), Box<dyn Error + Send + Sync>> {
    let lines = tiles.iter().map(|t| t.caption.len()).max().unwrap_or(0);
    let image_h = tiles
        .iter()
        .map(|t| scale(t) * t.chw[1])
        .max()
        .unwrap_or(IMAGE_SIDE);
    let cell_h = image_h + 8 + lines * LINE_HEIGHT + 16;
    let rows = tiles.len().div_ceil(columns);
    let size = (
        (columns * CELL_WIDTH + 16) as u32,
        (TITLE_HEIGHT + rows * cell_h + 8) as u32,
    );
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    root.draw(&Text::new(
        title,
        (12, 10),
        (FONT, 20).into_font().style(FontStyle::Bold),
    ))?;
    let caption_font: TextStyle = (FONT, 13).into();
    for (i, t) in tiles.iter().enumerate() {
        let x0 = 8 + (i % columns) * CELL_WIDTH;
        let y0 = TITLE_HEIGHT + (i / columns) * cell_h;
        let s = scale(t);
        let [c, h, w] = t.chw;
        let image_x = x0 + (CELL_WIDTH - 8 - s * w) / 2;
        for y in 0..h * s {
            for x in 0..w * s {
                let at = |ch: usize| t.pixels[ch * h * w + (y / s) * w + x / s];
                let colour = if c >= 3 {
                    RGBColor(at(0), at(1), at(2))
                } else {
                    RGBColor(at(0), at(0), at(0))
                };
                root.draw_pixel(((image_x + x) as i32, (y0 + y) as i32), &colour)?;
            }
        }
        for (l, line) in t.caption.iter().enumerate() {
            root.draw(&Text::new(
                line.as_str(),
                (x0 as i32, (y0 + image_h + 6 + l * LINE_HEIGHT) as i32),
                caption_font.clone(),
            ))?;
        }
    }
    root.present()?;
    Ok(())
}

/// The whole-pixel factor that brings an image up to about [`IMAGE_SIDE`].
fn scale(t: &Tile) -> usize {
    let side = t.chw[1].max(t.chw[2]).max(1);
    (IMAGE_SIDE / side).clamp(1, (CELL_WIDTH - 8) / t.chw[2].max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_and_colour_tiles_land_in_one_png_of_the_grid_size() {
        let grey = Tile {
            pixels: (0..28 * 28).map(|i| (i % 256) as u8).collect(),
            chw: [1, 28, 28],
            caption: vec!["label: coat".into(), "cnn: coat 0.90, shirt 0.05".into()],
        };
        let colour = Tile {
            pixels: vec![200; 3 * 32 * 32],
            chw: [3, 32, 32],
            caption: vec!["label: cat".into()],
        };
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("g.png");
        write_gallery("disputed views", &[grey.clone(), colour, grey], 2, &p).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        // Two columns, two rows.
        assert_eq!(img.width() as usize, 2 * CELL_WIDTH + 16);
        // The grey tile's first pixel (value 0) scaled 4x: a black 4x4 square
        // at its place.
        let x = 8 + (CELL_WIDTH - 8 - 4 * 28) / 2;
        let y = TITLE_HEIGHT;
        assert_eq!(img.get_pixel(x as u32 + 3, y as u32 + 3).0, [0, 0, 0]);
    }
}
