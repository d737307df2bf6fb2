//! `kd study`: flags to a [`kd_report::StudyConfig`]; the study's report
//! (study.md, study.json, chart) is made by the kd-report library, and one
//! line per size with its verdict is printed here.

use crate::ui::out;
use kd_report::StudyConfig;
use kd_report::study::{CHART, JSON, MARKDOWN, cell, verdict};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// A run directory of the study (data/runs/study-<N>); repeat once per size.
    #[arg(long = "run", required = true)]
    runs: Vec<PathBuf>,
    /// Output directory: study.md, study.json, accuracy-vs-size.png.
    #[arg(long)]
    out: PathBuf,
    /// An earlier study.json: its sizes fill in for run directories that are
    /// absent or unfinished here (results committed by an earlier session).
    #[arg(long)]
    previous: Option<PathBuf>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let cfg = StudyConfig {
        runs: a.runs,
        out: a.out,
        previous: a.previous,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let study = kd_report::write_study(&cfg)?;
    for s in &study.sizes {
        match verdict(s) {
            Some(v) => out(format!(
                "{} train images: best single {} {}, best ensemble {} {}, gain {:+.2} pts: {}",
                s.train,
                v.single.variant,
                cell(&v.single.test),
                v.ensemble.variant,
                cell(&v.ensemble.test),
                100.0 * v.gain,
                v.word().replace("**", "")
            )),
            None => out(format!(
                "{} train images: not enough runs for a verdict",
                s.train
            )),
        }
    }
    out(format!(
        "{}: {MARKDOWN}, {JSON}, {CHART}",
        cfg.out.display()
    ));
    Ok(())
}
