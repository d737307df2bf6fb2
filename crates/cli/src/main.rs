//! `kd`: distil inductive bias from an ensemble of light teachers into a ViT.
//!
//! One subcommand per pipeline stage; stages meet only through artifacts on
//! disk (a directory finished by `manifest.json`). This binary is the only
//! place that wires crates together, sets up logging and draws progress bars.

mod cmd_bench;
mod cmd_cache;
mod cmd_data;
mod cmd_env;
mod cmd_gallery;
mod cmd_inspect;
mod cmd_plan;
mod cmd_profile;
mod cmd_report;
mod cmd_student;
mod cmd_study;
mod cmd_teacher;
mod data_parallel;
mod gpu_args;
mod setting_flag;
mod ui;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "kd",
    version,
    about = "Train Vision Transformers on small data by distilling an ensemble of light teachers",
    long_about = "Train Vision Transformers on small data by distilling inductive bias from an \
ensemble of light teachers (a CNN and an involution network), whose logits are computed once \
and stored in a Zarr v3 store.\n\nStages: `data import` -> `teacher train` -> `cache build` -> \
`student train` -> `report`. Each writes a directory finished by manifest.json and does nothing \
when its inputs and config are unchanged (use --force to rerun).\n\nLogs go to stderr; set \
RUST_LOG (e.g. RUST_LOG=debug) to change their level."
)]
struct Cli {
    /// Threads for libtorch and rayon (default: all cores).
    #[arg(long, global = true, env = "KD_THREADS")]
    threads: Option<usize>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show libtorch version, threads and CUDA devices.
    Env(cmd_env::Args),
    /// Benchmarks of one part of the pipeline on your data.
    #[command(subcommand)]
    Bench(cmd_bench::Cmd),
    /// Dataset stage: import a real data set into a dataset artifact.
    #[command(subcommand)]
    Data(cmd_data::Cmd),
    /// Summarise any artifact: its manifest and every Zarr array in it.
    Inspect(cmd_inspect::Args),
    /// Logit cache stage: every teacher's logits on K views in one Zarr store.
    #[command(subcommand)]
    Cache(cmd_cache::Cmd),
    /// Report stage: results table, timings, cache size and curves of a run directory.
    Report(cmd_report::Args),
    /// The data-efficiency study's report: several run directories (one per
    /// training-set size) side by side, with one verdict per size.
    Study(cmd_study::Args),
    /// What `make` needs of a profile: its teachers, students and sections.
    #[command(subcommand)]
    Profile(cmd_profile::Cmd),
    /// Before a run: every stage of a profile with its images, steps, store
    /// bytes, peak memory and a time estimate from a few measured steps.
    Plan(cmd_plan::Args),
    /// Student stage: train the ViT (cached, live or no teachers).
    #[command(subcommand)]
    Student(cmd_student::Cmd),
    /// Teacher stage: train or evaluate a CNN or involution teacher.
    #[command(subcommand)]
    Teacher(cmd_teacher::Cmd),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(t) = cli.threads {
        tch::set_num_threads(t as i32);
        // Ignore the error when a pool already exists (it cannot be resized).
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build_global();
    }
    match cli.cmd {
        Cmd::Env(a) => cmd_env::run(a),
        Cmd::Bench(c) => cmd_bench::run(c),
        Cmd::Data(c) => cmd_data::run(c),
        Cmd::Inspect(a) => cmd_inspect::run(a),
        Cmd::Cache(c) => cmd_cache::run(c),
        Cmd::Report(a) => cmd_report::run(a),
        Cmd::Student(c) => cmd_student::run(c),
        Cmd::Study(a) => cmd_study::run(a),
        Cmd::Profile(c) => cmd_profile::run(c),
        Cmd::Plan(a) => cmd_plan::run(a),
        Cmd::Teacher(c) => cmd_teacher::run(c),
    }
}

fn main() -> ExitCode {
    kd_core::malloc::keep_freed_memory();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A bad flag is one line naming it, like every other error (clap
        // adds usage and a hint on more lines); help and version as clap prints them.
        Err(e) if e.use_stderr() => {
            let text = e.render().to_string();
            let first: Vec<&str> = text
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("{}", first.join(" "));
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    ui::init_logging();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            ui::suspend(|| eprintln!("error: {e:#}"));
            ExitCode::FAILURE
        }
    }
}
