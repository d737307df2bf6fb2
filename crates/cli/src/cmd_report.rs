//! `kd report`: flags to a [`kd_report::ReportConfig`]; the report itself
//! (markdown, charts, manifest) is made by the kd-report library.

use crate::ui::out;
use anyhow::Context;
use kd_core::{Outcome, RunOptions};
use kd_report::ReportConfig;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// Run directory (data/runs/<profile>) holding dataset/, teachers/, logits/, student/.
    #[arg(long)]
    run: PathBuf,
    /// Output directory (default RUN/report).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Rewrite even if up to date.
    #[arg(long)]
    force: bool,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut cfg = ReportConfig::new(a.run);
    if let Some(o) = a.out {
        cfg.out = o;
    }
    match kd_report::write_report(&cfg, &RunOptions::default().force(a.force))? {
        Outcome::UpToDate => out(format!("{}: up to date", cfg.out.display())),
        Outcome::Wrote(_) => {
            let md = cfg.out.join(kd_report::report::MARKDOWN);
            out(std::fs::read_to_string(&md).with_context(|| md.display().to_string())?)
        }
        Outcome::Stopped { .. } | Outcome::Follower { .. } => {}
    }
    Ok(())
}
