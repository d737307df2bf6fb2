//! Charts are valid PNGs of the asked size, with ink, and spread over seeds
//! shows as a band or as bars.

use kd_report::plot::{Chart, Series, Spread};
use std::path::Path;

fn coloured_pixels(path: &Path) -> usize {
    image::open(path)
        .unwrap()
        .to_rgb8()
        .pixels()
        .filter(|p| {
            let [r, g, b] = p.0.map(i32::from);
            (r - g).abs() + (g - b).abs() + (r - b).abs() > 30
        })
        .count()
}

#[test]
fn a_line_chart_is_a_png_of_the_asked_size() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("curves.png");
    let series = [
        Series::new(
            "test_acc_avg",
            (1..=12).map(|e| (f64::from(e), 0.5 + 0.02 * f64::from(e))),
        ),
        Series::new("Agreement with CNN", (1..=12).map(|e| (f64::from(e), 0.9))),
    ];
    Chart::new(
        "Student: test accuracy per head",
        "Epoch",
        "Fraction",
        &series,
    )
    .size(640, 360)
    .write_png(&path)
    .unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (640, 360));
    let dark = img
        .pixels()
        .filter(|p| p.0.iter().all(|c| *c < 100))
        .count();
    assert!(dark > 500, "axes and text: {dark} dark pixels");
    assert!(coloured_pixels(&path) > 300);
}

#[test]
fn spread_over_seeds_is_drawn() {
    let tmp = tempfile::tempdir().unwrap();
    let mean = |e: i32| 0.6 + 0.01 * f64::from(e);
    let plain = [Series::new(
        "ensemble",
        (1..=20).map(|e| (f64::from(e), mean(e))),
    )];
    let banded = [Series::with_sd(
        "ensemble (mean of 3 seeds)",
        (1..=20).map(|e| (f64::from(e), mean(e), 0.03)),
    )];
    let (a, b, c) = (
        tmp.path().join("plain.png"),
        tmp.path().join("band.png"),
        tmp.path().join("bars.png"),
    );
    Chart::new("Accuracy", "Epoch", "Accuracy", &plain)
        .write_png(&a)
        .unwrap();
    Chart::new("Accuracy", "Epoch", "Accuracy", &banded)
        .write_png(&b)
        .unwrap();
    Chart::new("Accuracy", "Epoch", "Accuracy", &banded)
        .spread(Spread::Bars)
        .write_png(&c)
        .unwrap();
    let (plain, band, bars) = (
        coloured_pixels(&a),
        coloured_pixels(&b),
        coloured_pixels(&c),
    );
    // The band shades the area a line alone leaves white.
    assert!(band > 5 * plain, "band {band} vs line {plain}");
    assert!(bars > plain, "bars {bars} vs line {plain}");
}

#[test]
fn an_empty_chart_still_draws_its_axes() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("empty.png");
    let series = [Series::new("nothing yet", [(f64::NAN, 1.0)])];
    Chart::new("Empty", "x", "y", &series)
        .write_png(&path)
        .unwrap();
    assert_eq!(
        image::open(&path).unwrap().to_rgb8().dimensions(),
        (960, 540)
    );
}

#[test]
fn the_legend_fits_its_note_when_the_labels_are_short() {
    // Short labels make a narrow legend; the spread note under them is
    // longer, and was cut at the image's edge when only the labels sized it.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bars.png");
    let series = [
        Series::with_sd("cnn", [(80.0, 0.84, 0.003), (480.0, 0.876, 0.001)]),
        Series::with_sd("none", [(80.0, 0.834, 0.003), (480.0, 0.85, 0.0)]),
    ];
    Chart::new("Patience", "Epochs", "Test accuracy", &series)
        .spread(Spread::Bars)
        .write_png(&path)
        .unwrap();
    let img = image::open(&path).unwrap().to_rgb8();
    let (w, h) = img.dimensions();
    let inked = |x: u32| (0..h).any(|y| img.get_pixel(x, y).0.iter().any(|c| *c < 200));
    assert!(
        (w - 4..w).all(|x| !inked(x)),
        "the legend reaches the right edge: its note is cut"
    );
    assert!((w / 2..w - 4).any(inked), "the legend is drawn");
}
