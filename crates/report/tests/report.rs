//! The report and the study from a hand-made run directory
//! (`tests/fixtures/run`: JSON files only, nothing trained). The expected
//! pages were first written by `kd report` / `kd study` before the report
//! became this library; the markdown changes only when a section is added
//! on purpose (the patience table and its chart came later).

use kd_core::{Outcome, RunOptions};
use kd_report::study::StudyConfig;
use kd_report::{ReportConfig, ReportError};
use std::error::Error;
use std::path::Path;

/// Relative, as in the expected pages' headers (tests run in the crate's directory).
const RUN: &str = "tests/fixtures/run";

/// Decode a PNG and check its size and that it is not blank.
fn assert_chart(path: &Path, size: (u32, u32)) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    assert_eq!(img.dimensions(), size, "{}", path.display());
    let inked = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    let coloured = img
        .pixels()
        .filter(|p| {
            let [r, g, b] = p.0.map(i32::from);
            (r - g).abs() + (g - b).abs() + (r - b).abs() > 60
        })
        .count();
    let total = (size.0 * size.1) as usize;
    assert!(
        inked > total / 100,
        "{}: {inked} inked pixels",
        path.display()
    );
    assert!(
        coloured > 500,
        "{}: {coloured} coloured pixels",
        path.display()
    );
}

#[test]
fn report_markdown_is_unchanged_and_charts_are_drawn() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = ReportConfig::new(RUN);
    cfg.out = tmp.path().join("report");
    let Outcome::Wrote(m) = kd_report::write_report(&cfg, &RunOptions::default()).unwrap() else {
        panic!("a fresh report directory is written");
    };
    assert_eq!(m.stage, "report");
    let expected = include_str!("fixtures/report.md");
    assert_eq!(
        std::fs::read_to_string(cfg.out.join("report.md")).unwrap(),
        expected
    );
    for chart in ["accuracy.png", "loss.png", "patience.png"] {
        assert_chart(&cfg.out.join(chart), (960, 540));
    }
    // Nothing changed: nothing to do, unless forced.
    assert_eq!(
        kd_report::write_report(&cfg, &RunOptions::default()).unwrap(),
        Outcome::UpToDate
    );
    assert!(matches!(
        kd_report::write_report(&cfg, &RunOptions::default().force(true)).unwrap(),
        Outcome::Wrote(_)
    ));
}

#[test]
fn study_markdown_and_json_are_unchanged() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = StudyConfig {
        runs: vec![RUN.into(), "tests/fixtures/absent".into()],
        out: tmp.path().join("study"),
        previous: None,
        command: "kd study --run tests/fixtures/run --out OUT".into(),
    };
    let study = kd_report::write_study(&cfg).unwrap();
    assert_eq!(study.sizes.len(), 1);
    let md = std::fs::read_to_string(cfg.out.join("study.md")).unwrap();
    assert_eq!(md, include_str!("fixtures/study.md"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cfg.out.join("study.json")).unwrap())
            .unwrap();
    let expected: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/study.json")).unwrap();
    assert_eq!(json, expected);
    assert_chart(&cfg.out.join("accuracy-vs-size.png"), (1100, 600));

    // study.json read back as --previous stands in for a missing run directory.
    let again = StudyConfig {
        runs: vec![RUN.into()],
        out: tmp.path().join("again"),
        previous: Some(cfg.out.join("study.json")),
        command: cfg.command.clone(),
    };
    kd_report::write_study(&again).unwrap();
    assert_eq!(
        std::fs::read_to_string(again.out.join("study.md")).unwrap(),
        md
    );
}

#[test]
fn errors_name_the_file_at_fault() {
    let tmp = tempfile::tempdir().unwrap();
    let err = kd_report::write_report(&ReportConfig::new(tmp.path()), &RunOptions::default())
        .unwrap_err();
    assert!(matches!(err, ReportError::NothingToReport { .. }), "{err}");
    assert!(err.to_string().contains(&tmp.path().display().to_string()));

    // A student whose metrics.json lacks a field the report needs.
    let run = tmp.path().join("run");
    let student = run.join("student/none");
    std::fs::create_dir_all(&student).unwrap();
    std::fs::copy(
        Path::new(RUN).join("student/none/manifest.json"),
        student.join("manifest.json"),
    )
    .unwrap();
    std::fs::write(student.join("metrics.json"), r#"{"source": "none"}"#).unwrap();
    let mut cfg = ReportConfig::new(&run);
    cfg.out = tmp.path().join("out");
    let err = kd_report::write_report(&cfg, &RunOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("student/none/metrics.json") && msg.contains("student metrics.json"),
        "{msg}"
    );
    // The cause (the missing field) is in the source chain.
    let mut chain = vec![];
    let mut e: Option<&dyn Error> = Some(&err);
    while let Some(x) = e {
        chain.push(x.to_string());
        e = x.source();
    }
    assert!(
        chain.iter().any(|m| m.contains("test_accuracy")),
        "{chain:?}"
    );
}
