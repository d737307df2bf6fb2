//! PNG line charts on `plotters`: training curves, the report's per-variant
//! curves and the study's accuracy against training-set size. Text is set in
//! DejaVu Sans embedded in the binary, so a chart looks the same on a
//! machine without fonts. Axis ticks are round numbers (1, 2 or 5 times a
//! power of ten, whole numbers on an axis of whole numbers such as epochs),
//! and a point's spread over seeds (mean ± sd) is drawn as a band or a bar.

use crate::error::{ReportError, Result};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use std::error::Error;
use std::ops::Range;
use std::path::Path;
use std::sync::OnceLock;

/// The family the embedded font is registered under.
pub(crate) const FONT: &str = "sans-serif";

/// Distinct colours for up to 16 series (the study has 14 variants); more
/// series reuse them in order.
const PALETTE: [(u8, u8, u8); 16] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (0, 0, 128),
    (128, 0, 0),
    (0, 100, 0),
    (255, 195, 0),
    (90, 90, 200),
    (0, 0, 0),
];

/// One point of a series: the mean `y` at `x` and its sd over seeds (0
/// when there is one seed).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub x: f64,
    pub y: f64,
    pub sd: f64,
}

/// One labelled line of a chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub label: String,
    pub points: Vec<Point>,
}

impl Series {
    /// A series without spread.
    pub fn new(label: impl Into<String>, points: impl IntoIterator<Item = (f64, f64)>) -> Series {
        Series {
            label: label.into(),
            points: points
                .into_iter()
                .map(|(x, y)| Point { x, y, sd: 0.0 })
                .collect(),
        }
    }

    /// A series of (x, mean, sd) points.
    pub fn with_sd(
        label: impl Into<String>,
        points: impl IntoIterator<Item = (f64, f64, f64)>,
    ) -> Series {
        Series {
            label: label.into(),
            points: points
                .into_iter()
                .map(|(x, y, sd)| Point { x, y, sd })
                .collect(),
        }
    }

    fn has_spread(&self) -> bool {
        self.points.iter().any(|p| p.sd > 0.0)
    }
}

/// How a point's sd is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Spread {
    /// A shaded band between mean - sd and mean + sd: curves over many x.
    Band,
    /// A bar at each point, with a marker: few x, such as training sizes.
    Bars,
}

/// A line chart: title, axis labels, series, and how spread is drawn.
#[derive(Clone, Debug)]
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: &'a [Series],
    pub spread: Spread,
    /// Width and height in pixels.
    pub size: (u32, u32),
}

impl<'a> Chart<'a> {
    /// A 960 x 540 chart with spread drawn as bands.
    pub fn new(title: &'a str, x_label: &'a str, y_label: &'a str, series: &'a [Series]) -> Self {
        Chart {
            title,
            x_label,
            y_label,
            series,
            spread: Spread::Band,
            size: (960, 540),
        }
    }

    pub fn spread(self, spread: Spread) -> Self {
        Chart { spread, ..self }
    }

    pub fn size(self, width: u32, height: u32) -> Self {
        Chart {
            size: (width, height),
            ..self
        }
    }

    /// Draw the chart into the PNG file `path`.
    pub fn write_png(&self, path: &Path) -> Result<()> {
        register_embedded_font()?;
        self.draw(path).map_err(|source| ReportError::Plot {
            path: path.to_path_buf(),
            source,
        })?;
        tracing::debug!(path = %path.display(), series = self.series.len(), "chart written");
        Ok(())
    }

    fn draw(&self, path: &Path) -> std::result::Result<(), Box<dyn Error + Send + Sync>> {
        let root = BitMapBackend::new(path, self.size).into_drawing_area();
        root.fill(&WHITE)?;
        let label_font: TextStyle = (FONT, 14).into();
        let note_font: TextStyle = (FONT, 13).into();
        let spread_note = self
            .series
            .iter()
            .any(Series::has_spread)
            .then_some(match self.spread {
                Spread::Band => "bands: mean ± sd over seeds",
                Spread::Bars => "bars: mean ± sd over seeds",
            });
        // Wide enough for the longest label beside its swatch and for the
        // spread note under them.
        let mut legend_width = 0;
        for s in self.series {
            legend_width = legend_width.max(root.estimate_text_size(&s.label, &label_font)?.0 + 60);
        }
        if let Some(note) = spread_note {
            legend_width = legend_width.max(root.estimate_text_size(note, &note_font)?.0 + 16);
        }
        let legend_width = legend_width.min(self.size.0 / 2);
        let (plot_area, legend_area) = root.split_horizontally(self.size.0 - legend_width);

        let finite = || {
            self.series
                .iter()
                .flat_map(|s| &s.points)
                .filter(|p| p.x.is_finite() && p.y.is_finite())
        };
        let whole_x = finite().all(|p| p.x.fract() == 0.0);
        let x_axis = Axis::round(finite().map(|p| p.x), 8, whole_x);
        let y_axis = Axis::round(
            finite().flat_map(|p| {
                let sd = if p.sd.is_finite() { p.sd } else { 0.0 };
                [p.y - sd, p.y + sd]
            }),
            6,
            false,
        );

        let mut chart = ChartBuilder::on(&plot_area)
            .caption(self.title, (FONT, 22).into_font().style(FontStyle::Bold))
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(x_axis.coord(), y_axis.coord())?;
        let x_fmt = |v: &f64| x_axis.label(*v);
        let y_fmt = |v: &f64| y_axis.label(*v);
        chart
            .configure_mesh()
            .x_desc(self.x_label)
            .y_desc(self.y_label)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(label_font.clone())
            .axis_desc_style((FONT, 16))
            .bold_line_style(BLACK.mix(0.12))
            .draw()?;

        for (i, s) in self.series.iter().enumerate() {
            let (r, g, b) = PALETTE[i % PALETTE.len()];
            let colour = RGBColor(r, g, b);
            let pts: Vec<Point> = s
                .points
                .iter()
                .copied()
                .filter(|p| p.x.is_finite() && p.y.is_finite())
                .collect();
            let spread: Vec<&Point> = pts
                .iter()
                .filter(|p| p.sd.is_finite() && p.sd > 0.0)
                .collect();
            match self.spread {
                Spread::Band if spread.len() > 1 => {
                    let upper = spread.iter().map(|p| (p.x, p.y + p.sd));
                    let lower = spread.iter().rev().map(|p| (p.x, p.y - p.sd));
                    chart.draw_series(std::iter::once(Polygon::new(
                        upper.chain(lower).collect::<Vec<_>>(),
                        colour.mix(0.18).filled(),
                    )))?;
                }
                // One point with spread has no band to draw: a bar shows it.
                Spread::Band | Spread::Bars => {
                    for p in &spread {
                        chart.draw_series(std::iter::once(PathElement::new(
                            vec![(p.x, p.y - p.sd), (p.x, p.y + p.sd)],
                            colour.stroke_width(2),
                        )))?;
                    }
                }
            }
            chart.draw_series(LineSeries::new(
                pts.iter().map(|p| (p.x, p.y)),
                colour.stroke_width(2),
            ))?;
            if self.spread == Spread::Bars || pts.len() == 1 {
                chart.draw_series(
                    pts.iter()
                        .map(|p| Circle::new((p.x, p.y), 4, colour.filled())),
                )?;
            }
        }

        // The legend beside the plot, so that it never covers a curve.
        let row = 22;
        for (i, s) in self.series.iter().enumerate() {
            let (r, g, b) = PALETTE[i % PALETTE.len()];
            let y = 50 + row * i as i32;
            legend_area.draw(&PathElement::new(
                vec![(4, y), (34, y)],
                RGBColor(r, g, b).stroke_width(3),
            ))?;
            legend_area.draw(&Text::new(
                s.label.as_str(),
                (42, y - 8),
                label_font.clone(),
            ))?;
        }
        if let Some(note) = spread_note {
            let y = 50 + row * self.series.len() as i32 + 8;
            legend_area.draw(&Text::new(note, (4, y), note_font))?;
        }
        root.present()?;
        Ok(())
    }
}

/// Registers DejaVu Sans (regular and bold) as [`FONT`] once per process.
pub(crate) fn register_embedded_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    if ok { Ok(()) } else { Err(ReportError::Font) }
}

/// An axis with round ticks: its range runs from one tick to another, the
/// ticks `step` apart, the step 1, 2 or 5 times a power of ten.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    pub lo: f64,
    pub hi: f64,
    pub step: f64,
    pub ticks: Vec<f64>,
}

impl Axis {
    /// The round axis over `values` with at most about `target` intervals;
    /// `whole` keeps the step at least 1 (epochs, image counts).
    pub fn round(values: impl IntoIterator<Item = f64>, target: usize, whole: bool) -> Axis {
        let (mut min, mut max) = values
            .into_iter()
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
        if min > max {
            (min, max) = (0.0, 1.0);
        }
        if min == max {
            // One value: a unit around it, or a tenth of it when it is large.
            let pad = (min.abs() * 0.1).max(if whole { 1.0 } else { 0.05 });
            (min, max) = (min - pad, max + pad);
        }
        let raw = (max - min) / target.max(1) as f64;
        let magnitude = 10f64.powf(raw.log10().floor());
        let mut step = [1.0, 2.0, 5.0, 10.0]
            .into_iter()
            .map(|m| m * magnitude)
            .find(|s| *s >= raw * (1.0 - 1e-9))
            .unwrap_or(10.0 * magnitude);
        if whole {
            step = step.max(1.0);
        }
        let first = (min / step + 1e-9).floor() as i64;
        let last = (max / step - 1e-9).ceil() as i64;
        // Multiples of the step computed from integers: no drift like 0.30000000000000004.
        let at = |k: i64| round_to(k as f64 * step, step);
        Axis {
            lo: at(first),
            hi: at(last),
            step,
            ticks: (first..=last).map(at).collect(),
        }
    }

    /// The axis as a plotters coordinate whose mesh lines and labels are
    /// exactly these ticks.
    fn coord(&self) -> RoundCoord {
        RoundCoord {
            inner: (self.lo..self.hi).into(),
            ticks: self.ticks.clone(),
        }
    }

    /// A tick's label with as many decimals as the step needs.
    pub fn label(&self, v: f64) -> String {
        format!("{:.*}", decimals(self.step), v)
    }
}

/// A linear f64 coordinate with given ticks. (plotters' own key points
/// wrapper keeps f64's formatter option, which the mesh cannot label.)
struct RoundCoord {
    inner: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ranged for RoundCoord {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // No light lines between the ticks: the bold ones are grid enough.
        if hint.weight().allow_light_points() {
            vec![]
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.inner.range()
    }
}

/// Decimals that show a multiple of `step` exactly (step 0.05: 2).
fn decimals(step: f64) -> usize {
    (-step.log10().floor()).max(0.0) as usize
}

/// `v` rounded to the decimals of `step`, so that a tick is exactly the
/// round number its label shows.
fn round_to(v: f64, step: f64) -> f64 {
    let scale = 10f64.powi(decimals(step) as i32);
    (v * scale).round() / scale
}

#[cfg(test)]
mod tests;
