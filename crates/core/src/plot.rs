//! Minimal PNG line charts (training curves, report plots) with no system
//! dependency: lines are rasterised here and text uses a built-in 5x7 font.

use crate::error::{CoreError, Result};
use image::{Rgb, RgbImage};
use std::path::Path;

/// 5x7 glyphs, one byte per row, low 5 bits, MSB = left column.
fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [14, 17, 19, 21, 25, 17, 14],
        '1' => [4, 12, 4, 4, 4, 4, 14],
        '2' => [14, 17, 1, 2, 4, 8, 31],
        '3' => [31, 2, 4, 2, 1, 17, 14],
        '4' => [2, 6, 10, 18, 31, 2, 2],
        '5' => [31, 16, 30, 1, 1, 17, 14],
        '6' => [6, 8, 16, 30, 17, 17, 14],
        '7' => [31, 1, 2, 4, 8, 8, 8],
        '8' => [14, 17, 17, 14, 17, 17, 14],
        '9' => [14, 17, 17, 15, 1, 2, 12],
        'A' => [14, 17, 17, 31, 17, 17, 17],
        'B' => [30, 17, 17, 30, 17, 17, 30],
        'C' => [14, 17, 16, 16, 16, 17, 14],
        'D' => [28, 18, 17, 17, 17, 18, 28],
        'E' => [31, 16, 16, 30, 16, 16, 31],
        'F' => [31, 16, 16, 30, 16, 16, 16],
        'G' => [14, 17, 16, 23, 17, 17, 15],
        'H' => [17, 17, 17, 31, 17, 17, 17],
        'I' => [14, 4, 4, 4, 4, 4, 14],
        'J' => [7, 2, 2, 2, 2, 18, 12],
        'K' => [17, 18, 20, 24, 20, 18, 17],
        'L' => [16, 16, 16, 16, 16, 16, 31],
        'M' => [17, 27, 21, 21, 17, 17, 17],
        'N' => [17, 17, 25, 21, 19, 17, 17],
        'O' => [14, 17, 17, 17, 17, 17, 14],
        'P' => [30, 17, 17, 30, 16, 16, 16],
        'Q' => [14, 17, 17, 17, 21, 18, 13],
        'R' => [30, 17, 17, 30, 20, 18, 17],
        'S' => [15, 16, 16, 14, 1, 1, 30],
        'T' => [31, 4, 4, 4, 4, 4, 4],
        'U' => [17, 17, 17, 17, 17, 17, 14],
        'V' => [17, 17, 17, 17, 17, 10, 4],
        'W' => [17, 17, 17, 21, 21, 21, 10],
        'X' => [17, 17, 10, 4, 10, 17, 17],
        'Y' => [17, 17, 17, 10, 4, 4, 4],
        'Z' => [31, 1, 2, 4, 8, 16, 31],
        '.' => [0, 0, 0, 0, 0, 12, 12],
        ',' => [0, 0, 0, 0, 12, 4, 8],
        '-' => [0, 0, 0, 31, 0, 0, 0],
        '+' => [0, 4, 4, 31, 4, 4, 0],
        '%' => [24, 25, 2, 4, 8, 19, 3],
        ':' => [0, 12, 12, 0, 12, 12, 0],
        '/' => [0, 1, 2, 4, 8, 16, 0],
        '(' => [2, 4, 8, 8, 8, 4, 2],
        ')' => [8, 4, 2, 2, 2, 4, 8],
        '_' => [0, 0, 0, 0, 0, 0, 31],
        '=' => [0, 0, 31, 0, 31, 0, 0],
        '#' => [10, 10, 31, 10, 31, 10, 10],
        _ => [0; 7],
    }
}

const PALETTE: [[u8; 3]; 8] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
];

struct Canvas(RgbImage);

impl Canvas {
    fn px(&mut self, x: i64, y: i64, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as u32) < self.0.width() && (y as u32) < self.0.height() {
            self.0.put_pixel(x as u32, y as u32, Rgb(c));
        }
    }

    fn text(&mut self, x: i64, y: i64, s: &str, c: [u8; 3]) {
        for (i, ch) in s.chars().enumerate() {
            for (r, bits) in glyph(ch).iter().enumerate() {
                for col in 0..5 {
                    if bits >> (4 - col) & 1 == 1 {
                        self.px(x + i as i64 * 6 + col, y + r as i64, c);
                    }
                }
            }
        }
    }

    fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: [u8; 3], thick: bool) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.px(x, y, c);
            if thick {
                self.px(x + 1, y, c);
                self.px(x, y + 1, c);
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }
}

fn tick_label(v: f64, span: f64) -> String {
    if span >= 20.0 {
        format!("{v:.0}")
    } else if span >= 2.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// Draw `series` (name, points) as lines into a PNG at `path`.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<()> {
    let with_sd: Vec<(String, Vec<(f64, f64, f64)>)> = series
        .iter()
        .map(|(n, pts)| (n.clone(), pts.iter().map(|&(x, y)| (x, y, 0.0)).collect()))
        .collect();
    error_bar_chart(path, title, x_label, y_label, &with_sd)
}

/// [`line_chart`] whose points carry a spread `(x, mean, sd)`, drawn as a
/// vertical bar from `mean - sd` to `mean + sd` (none where sd is 0).
pub fn error_bar_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64, f64)>)],
) -> Result<()> {
    let (w, h) = (800i64, 440i64);
    let (left, right, top, bottom) = (70i64, 230i64, 30i64, 50i64);
    let mut cv = Canvas(RgbImage::from_pixel(
        w as u32,
        h as u32,
        Rgb([255, 255, 255]),
    ));
    let pts = series
        .iter()
        .flat_map(|s| s.1.iter())
        .filter(|p| p.0.is_finite() && p.1.is_finite());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y, sd) in pts {
        let sd = if sd.is_finite() { sd } else { 0.0 };
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y - sd);
        y1 = y1.max(y + sd);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x1 = x0 + 1.0;
    }
    if y1 - y0 < 1e-12 {
        y1 = y0 + 1.0;
    }
    let pad = (y1 - y0) * 0.05;
    let (y0, y1) = (y0 - pad, y1 + pad);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let to_px = |x: f64, y: f64| {
        (
            left + ((x - x0) / (x1 - x0) * pw as f64).round() as i64,
            top + ph - ((y - y0) / (y1 - y0) * ph as f64).round() as i64,
        )
    };
    let axis = [60, 60, 60];
    let grid = [225, 225, 225];
    for i in 0..=5 {
        let fy = y0 + (y1 - y0) * i as f64 / 5.0;
        let (_, py) = to_px(x0, fy);
        cv.line((left, py), (left + pw, py), grid, false);
        let s = tick_label(fy, y1 - y0);
        cv.text(left - 6 - 6 * s.len() as i64, py - 3, &s, axis);
        let fx = x0 + (x1 - x0) * i as f64 / 5.0;
        let (px, _) = to_px(fx, y0);
        cv.line((px, top), (px, top + ph), grid, false);
        let s = tick_label(fx, x1 - x0);
        cv.text(px - 3 * s.len() as i64, top + ph + 8, &s, axis);
    }
    cv.line((left, top), (left, top + ph), axis, false);
    cv.line((left, top + ph), (left + pw, top + ph), axis, false);
    cv.text(left, 10, title, [0, 0, 0]);
    cv.text(
        left + pw / 2 - 3 * x_label.len() as i64,
        h - 20,
        x_label,
        axis,
    );
    cv.text(4, top - 14, y_label, axis);
    for (i, (name, points)) in series.iter().enumerate() {
        let c = PALETTE[i % PALETTE.len()];
        let mut prev = None;
        for &(x, y, sd) in points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()) {
            let p = to_px(x, y);
            if sd.is_finite() && sd > 0.0 {
                let (lo, hi) = (to_px(x, y - sd), to_px(x, y + sd));
                cv.line(lo, hi, c, false);
                cv.line((lo.0 - 3, lo.1), (lo.0 + 3, lo.1), c, false);
                cv.line((hi.0 - 3, hi.1), (hi.0 + 3, hi.1), c, false);
            }
            if let Some(q) = prev {
                cv.line(q, p, c, true);
            }
            for d in -2..=2 {
                cv.px(p.0 + d, p.1, c);
                cv.px(p.0, p.1 + d, c);
            }
            prev = Some(p);
        }
        let ly = top + 10 + 14 * i as i64;
        for d in 0..3 {
            cv.line((left + pw + 10, ly + d), (left + pw + 24, ly + d), c, false);
        }
        cv.text(left + pw + 30, ly - 2, name, [0, 0, 0]);
    }
    cv.0.save(path)
        .map_err(|e| CoreError::Invalid(format!("{}: cannot write PNG: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_series_in_distinct_colours() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("c.png");
        let s = vec![
            ("a".to_string(), vec![(1.0, 0.5), (2.0, 0.7), (3.0, 0.9)]),
            ("b".to_string(), vec![(1.0, 0.2), (3.0, 0.4)]),
        ];
        line_chart(&p, "Test accuracy", "epoch", "acc", &s).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (800, 440));
        let count = |c: [u8; 3]| img.pixels().filter(|px| px.0 == c).count();
        assert!(count(PALETTE[0]) > 100 && count(PALETTE[1]) > 100);
    }

    #[test]
    fn error_bars_span_the_spread() {
        let t = tempfile::tempdir().unwrap();
        let (a, b) = (t.path().join("a.png"), t.path().join("b.png"));
        let pts = |sd: f64| vec![("a".to_string(), vec![(1.0, 0.5, sd), (2.0, 0.6, sd)])];
        error_bar_chart(&a, "t", "x", "y", &pts(0.0)).unwrap();
        error_bar_chart(&b, "t", "x", "y", &pts(0.05)).unwrap();
        let col = |p: &Path| {
            let img = image::open(p).unwrap().to_rgb8();
            // Rows coloured by the series in the column of the first point.
            let x = 70u32;
            (0..img.height())
                .filter(|&y| img.get_pixel(x, y).0 == PALETTE[0])
                .count()
        };
        assert!(col(&b) > col(&a) + 20, "{} vs {}", col(&b), col(&a));
    }
}
