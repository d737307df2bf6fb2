//! The report's rules on hand-made runs: the patience and views curves
//! keep their own points, ablation settings are named, variants come in
//! method order, and the verdict compares seed means.

use super::sections::{ordered, verdict};
use super::*;

fn student(acc: f64) -> Student {
    Student {
        metrics: serde_json::from_value(json!({
            "test_accuracy": acc, "source": "cache", "params": 1,
            "device": "cpu", "images_per_sec": 1.0, "epochs": []
        }))
        .unwrap(),
        settings: DistillSettings::default(),
    }
}

fn groups(runs: &[(&str, f64)]) -> Groups {
    let mut g = Groups::new();
    for (name, acc) in runs {
        g.entry(naming::variant_of(name).to_string())
            .or_default()
            .push(student(*acc));
    }
    g
}

/// A student of `epochs` epochs with test accuracy `acc` and val `val`.
fn trained(epochs: usize, acc: f64, val: f64) -> Student {
    let rec = |e: usize| {
        json!({"epoch": e, "lr": 0.1, "train": {}, "eval": {"val_acc_avg": val},
               "train_seconds": 1.0, "images_per_sec": 1.0})
    };
    Student {
        metrics: serde_json::from_value(json!({
            "test_accuracy": acc, "source": "cache", "params": 1, "device": "cpu",
            "images_per_sec": 1.0, "epochs": (1..=epochs).map(rec).collect::<Vec<_>>()
        }))
        .unwrap(),
        settings: DistillSettings::default(),
    }
}

#[test]
fn patience_lists_each_method_by_budget_and_draws_it() {
    let mut g = Groups::new();
    g.insert(
        "cnn".into(),
        vec![trained(12, 0.80, 0.81), trained(12, 0.82, 0.83)],
    );
    g.insert("cnn-ep4".into(), vec![trained(4, 0.70, 0.72)]);
    g.insert("cnn-ep24".into(), vec![trained(24, 0.85, 0.86)]);
    // One budget only: no patience row for it.
    g.insert("none".into(), vec![trained(12, 0.75, 0.76)]);
    let t = tempfile::tempdir().unwrap();
    let mut md = String::new();
    curve_section(&mut md, &g, t.path(), &PATIENCE).unwrap();
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| cnn")).collect();
    assert_eq!(
        rows,
        [
            "| cnn | 4 | 70.00 | 72.00 | 1 |",
            "| cnn | 12 | 81.00 ± 1.41 | 82.00 ± 1.41 | 2 |",
            "| cnn | 24 | 85.00 | 86.00 | 1 |"
        ]
    );
    assert!(!md.contains("| none |"));
    assert!(t.path().join(PATIENCE_CHART).exists());
    // Nothing trained at a second budget: no section, no chart.
    let t2 = tempfile::tempdir().unwrap();
    let mut md2 = String::new();
    curve_section(&mut md2, &groups(&[("cnn", 0.8)]), t2.path(), &PATIENCE).unwrap();
    assert!(md2.is_empty() && !t2.path().join(PATIENCE_CHART).exists());
}

/// `trained` over a store of `views` views per image.
fn over(views: u64, epochs: usize, acc: f64) -> Student {
    let mut s = trained(epochs, acc, acc + 0.01);
    s.settings.views = Some(views);
    s
}

#[test]
fn views_and_patience_each_keep_their_own_points() {
    let mut g = Groups::new();
    g.insert(
        "ensemble-stems".into(),
        vec![over(128, 12, 0.80), over(128, 12, 0.82)],
    );
    g.insert("ensemble-stems-k8".into(), vec![over(8, 12, 0.70)]);
    g.insert("ensemble-stems-k32".into(), vec![over(32, 12, 0.75)]);
    g.insert("ensemble-stems-ep40".into(), vec![over(128, 40, 0.85)]);
    // No store, so no point on the views curve.
    g.insert("none-stems".into(), vec![trained(12, 0.78, 0.79)]);
    let t = tempfile::tempdir().unwrap();
    let mut md = String::new();
    curve_section(&mut md, &g, t.path(), &VIEWS).unwrap();
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).skip(1).collect();
    assert_eq!(
        rows,
        [
            "| ensemble-stems | 8 | 70.00 | 71.00 | 1 |",
            "| ensemble-stems | 32 | 75.00 | 76.00 | 1 |",
            "| ensemble-stems | 128 | 81.00 ± 1.41 | 82.00 ± 1.41 | 2 |",
        ]
    );
    assert!(md.contains("## Views") && md.contains("(views.png)"));
    assert!(t.path().join(VIEWS_CHART).exists());
    // The patience curve has the profile's store's runs only.
    let mut md = String::new();
    curve_section(&mut md, &g, t.path(), &PATIENCE).unwrap();
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).skip(1).collect();
    assert_eq!(
        rows,
        [
            "| ensemble-stems | 12 | 81.00 ± 1.41 | 82.00 ± 1.41 | 2 |",
            "| ensemble-stems | 40 | 85.00 | 86.00 | 1 |",
        ]
    );
}

#[test]
fn settings_name_what_an_ablation_changes() {
    let parse = |v: serde_json::Value| serde_json::from_value::<DistillSettings>(v).unwrap();
    let soft = parse(json!({"distill": "soft", "tau": 1.0, "alpha": 0.5, "tokens": "per-teacher"}));
    assert_eq!(soft.describe("cache"), "soft, tau 1, alpha 0.5");
    assert_eq!(soft.describe("none"), "labels only");
    let abl = parse(
        json!({"distill": "hard", "alpha": 0.8, "tokens": "averaged", "precision": "bf16", "lr": 0.1}),
    );
    assert_eq!(
        abl.describe("live"),
        "hard, alpha 0.8, one averaged token, bf16"
    );
}

#[test]
fn variants_in_method_order_then_by_name() {
    let g = groups(&[
        ("ensemble-live", 0.1),
        ("ensemble", 0.9),
        ("cnn", 0.8),
        ("none", 0.7),
        ("abl", 0.5),
        ("ensemble-ep8", 0.9),
        ("none-ep8", 0.9),
    ]);
    let names: Vec<&str> = ordered(&g).iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "none",
            "cnn",
            "ensemble",
            "abl",
            "ensemble-live",
            "none-ep8",
            "ensemble-ep8"
        ]
    );
}

#[test]
fn verdict_compares_seed_means() {
    let g = groups(&[
        ("none", 0.80),
        ("none-seed1", 0.82),
        ("cnn", 0.83),
        ("involution", 0.815),
        ("ensemble", 0.84),
        ("ensemble-seed1", 0.85),
    ]);
    assert_eq!(
        verdict(&g, "").unwrap(),
        "Ensemble student: +3.50 pts vs none, +1.50 pts vs cnn, +3.00 pts vs involution."
    );
    assert!(verdict(&groups(&[("none", 0.8)]), "").is_none());
    let long = groups(&[
        ("none-ep8", 0.85),
        ("cnn-ep8", 0.86),
        ("ensemble-ep8", 0.87),
    ]);
    assert_eq!(
        verdict(&long, "-ep8").unwrap(),
        "Ensemble student `ensemble-ep8`: +2.00 pts vs none-ep8, +1.00 pts vs cnn-ep8."
    );
}

#[test]
fn a_teacher_names_the_model_settings_it_sets_over_its_preset() {
    let t: TeacherSummary = serde_json::from_value(json!({
        "name": "involution", "arch": "involution", "preset": "rednet-small",
        "params": 136496, "epochs": 180, "test_accuracy": 0.871, "test_loss": 0.5,
        "inference_images_per_sec": 300.0, "device": "cpu"
    }))
    .unwrap();
    let d = tempfile::tempdir().unwrap();
    // No config.json (an imported teacher, or one trained elsewhere): the preset alone.
    assert_eq!(
        teacher_architecture(d.path(), &t),
        "involution/rednet-small"
    );
    // The resolved model beside the profile's settings must not be listed.
    let model = json!({
        "teacher": { "model": {
            "stem_width": null, "blocks": [2, 2, 2], "kernel": 5,
            "zero_init_residual": true, "widths": null
        }},
        "model": { "stem_width": 32, "blocks": [2, 2, 2], "kernel": 5 }
    });
    std::fs::write(d.path().join("config.json"), model.to_string()).unwrap();
    assert_eq!(
        teacher_architecture(d.path(), &t),
        "involution/rednet-small + blocks [2, 2, 2], kernel 5, zero_init_residual"
    );
    let plain = json!({
        "teacher": { "model": { "blocks": null, "zero_init_residual": false } },
        "model": { "stem_width": 32 }
    });
    std::fs::write(d.path().join("config.json"), plain.to_string()).unwrap();
    assert_eq!(
        teacher_architecture(d.path(), &t),
        "involution/rednet-small"
    );
}
