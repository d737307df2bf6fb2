use super::markdown::heads_and_teachers;
use super::*;

fn v(name: &str, test: &[f64], val: &[f64]) -> VariantResult {
    VariantResult {
        variant: name.into(),
        test: test.to_vec(),
        val: val.to_vec(),
        heads: BTreeMap::new(),
        epochs: 1,
        agreement: BTreeMap::new(),
        repeats_errors: BTreeMap::new(),
        evaluated: 0,
    }
}

fn size(variants: Vec<VariantResult>) -> SizeResult {
    SizeResult {
        run: "r".into(),
        train: 1000,
        val: 1000,
        test: 10000,
        teachers: vec![],
        diversity: vec![],
        variants,
        teacher_test_agreement: BTreeMap::new(),
    }
}

#[test]
fn verdict_picks_by_val_and_compares_test() {
    // ensemble-b is best on test but ensemble-a on val: the verdict uses a.
    let s = size(vec![
        v("cnn", &[0.80, 0.81, 0.79], &[0.70, 0.70, 0.70]),
        v("involution", &[0.82, 0.82, 0.82], &[0.69, 0.69, 0.69]),
        v("ensemble-a", &[0.81, 0.81, 0.81], &[0.75, 0.75, 0.75]),
        v("ensemble-b", &[0.90, 0.90, 0.90], &[0.71, 0.71, 0.71]),
    ]);
    let d = verdict(&s).unwrap();
    assert_eq!(d.single.variant, "cnn");
    assert_eq!(d.ensemble.variant, "ensemble-a");
    assert!((d.gain - 0.01).abs() < 1e-9);
    // sd of cnn is 0.01: a 1-point gain is not above two sd's.
    assert_eq!(d.passes, Some(false));
    let s = size(vec![
        v("cnn", &[0.80, 0.80, 0.80], &[0.70; 3]),
        v("ensemble", &[0.81, 0.81, 0.812], &[0.71; 3]),
    ]);
    assert_eq!(verdict(&s).unwrap().passes, Some(true));
    // One seed each: no verdict yet.
    let s = size(vec![
        v("cnn", &[0.80], &[0.70]),
        v("ensemble", &[0.9], &[0.71]),
    ]);
    assert_eq!(verdict(&s).unwrap().passes, None);
    assert!(verdict(&size(vec![v("none", &[0.7], &[0.7])])).is_none());
    // A longer budget or another store (a patience or views curve's
    // point) is never picked, however well it does on val.
    let s = size(vec![
        v("cnn-stems", &[0.80; 3], &[0.70; 3]),
        v("cnn-stems-ep800", &[0.90; 3], &[0.90; 3]),
        v("ensemble-stems", &[0.81; 3], &[0.71; 3]),
        v("ensemble-stems-ep800", &[0.95; 3], &[0.95; 3]),
        v("ensemble-stems-k256", &[0.96; 3], &[0.96; 3]),
    ]);
    let d = verdict(&s).unwrap();
    assert_eq!(
        (d.single.variant.as_str(), d.ensemble.variant.as_str()),
        ("cnn-stems", "ensemble-stems")
    );
}

#[test]
fn verdict_row_says_how_many_settings_it_picked_from() {
    let full = size(vec![
        v("none", &[0.7; 3], &[0.7; 3]),
        v("cnn", &[0.80; 3], &[0.70; 3]),
        v("involution-stems", &[0.81; 3], &[0.72; 3]),
        v("ensemble", &[0.80; 3], &[0.71; 3]),
        v("ensemble-stems", &[0.82; 3], &[0.73; 3]),
    ]);
    let mut part = size(vec![
        v("none", &[0.7; 3], &[0.7; 3]),
        v("involution-stems", &[0.83; 3], &[0.74; 3]),
        v("ensemble-stems", &[0.84; 3], &[0.75; 3]),
    ]);
    part.train = 4000;
    let md = markdown(
        &Study {
            sizes: vec![full, part],
        },
        "kd study",
    );
    let rows: Vec<&str> = md
        .lines()
        .filter(|l| l.starts_with("| 1000 | 4 of 4 |") || l.starts_with("| 4000 | 2 of 4 |"))
        .collect();
    assert_eq!(rows.len(), 2, "{md}");
    assert!(rows[1].contains("| involution-stems |") && rows[1].contains("| ensemble-stems |"));
}

#[test]
fn heads_against_teachers_section() {
    let mut sizes = vec![size(vec![v("none", &[0.7], &[0.7])])];
    let mut md = String::new();
    heads_and_teachers(&mut md, &sizes);
    assert!(md.is_empty(), "no evaluation, no section: {md}");

    let mut e = v("ensemble", &[0.8], &[0.8]);
    let fig =
        |a: f64, b: f64| BTreeMap::from([("cnn".to_string(), a), ("involution".to_string(), b)]);
    e.agreement = BTreeMap::from([
        ("dist_involution".to_string(), fig(0.861, 0.865)),
        ("avg".to_string(), fig(0.8655, 0.8653)),
    ]);
    e.repeats_errors = BTreeMap::from([("dist_involution".to_string(), fig(0.594, 0.5775))]);
    e.evaluated = 3;
    sizes[0].variants.push(e);
    sizes[0]
        .teacher_test_agreement
        .insert("cnn vs involution".into(), 0.8834);
    heads_and_teachers(&mut md, &sizes);
    assert!(
        md.contains("- 1000 images: teachers cnn vs involution agree on 88.34% of test."),
        "{md}"
    );
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| 1000 |")).collect();
    assert_eq!(
        rows,
        [
            "| 1000 | ensemble (3) | avg | cnn 86.55 (-), involution 86.53 (-) |",
            "| 1000 | ensemble (3) | dist_involution | cnn 86.10 (59.40), involution 86.50 (57.75) |",
        ]
    );
}
