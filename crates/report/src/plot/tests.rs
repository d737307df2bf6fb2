use super::*;

/// Whether every tick is an integer multiple of a 1-2-5 step.
fn is_round(a: &Axis) -> bool {
    let m = a.step / 10f64.powf(a.step.log10().floor());
    [1.0, 2.0, 5.0].iter().any(|r| (m - r).abs() < 1e-9)
        && a.ticks
            .iter()
            .all(|t| ((t / a.step) - (t / a.step).round()).abs() < 1e-9)
}

#[test]
fn epoch_axes_tick_at_whole_epochs() {
    // The old plotter put ticks at 1.0, 2.8, 4.6, ...
    let a = Axis::round((1..=10).map(f64::from), 8, true);
    assert_eq!(a.step, 2.0);
    assert_eq!(a.ticks, [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
    assert_eq!(a.label(4.0), "4");
    let a = Axis::round((1..=3).map(f64::from), 8, true);
    assert_eq!(a.ticks, [1.0, 2.0, 3.0]);
    let a = Axis::round((1..=80).map(f64::from), 8, true);
    assert_eq!((a.lo, a.hi, a.step), (0.0, 80.0, 10.0));
}

#[test]
fn accuracy_axes_tick_at_round_fractions() {
    let a = Axis::round([0.7312, 0.8457], 6, false);
    assert!(is_round(&a), "{a:?}");
    assert_eq!(a.step, 0.02);
    assert_eq!((a.lo, a.hi), (0.72, 0.86));
    assert_eq!(a.ticks[1], 0.74);
    assert_eq!(a.label(0.74), "0.74");
    let a = Axis::round([0.1, 0.84], 6, false);
    assert_eq!((a.lo, a.hi, a.step), (0.0, 1.0, 0.2));
    assert_eq!(a.label(0.6), "0.6");
    let a = Axis::round([1000.0, 8000.0], 8, true);
    assert_eq!((a.lo, a.hi, a.step), (1000.0, 8000.0, 1000.0));
    assert_eq!(a.label(2000.0), "2000");
}

#[test]
fn degenerate_ranges_still_have_ticks() {
    for a in [
        Axis::round([], 6, false),
        Axis::round([0.5], 6, false),
        Axis::round([3.0], 8, true),
        Axis::round([f64::NAN, 2.0, f64::INFINITY], 6, false),
    ] {
        assert!(a.ticks.len() >= 2 && a.lo < a.hi && is_round(&a), "{a:?}");
    }
}
