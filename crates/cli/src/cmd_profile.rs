//! `kd profile vars`: what `make` needs of a profile (the teachers and
//! students it names, each one's source, the raw data), and each section in
//! a file of its own that changes only with the section.

use kd_core::profile::Profile;
use kd_core::profile_vars::{VARS_FILE, write_make_files};
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum Cmd {
    /// Write DIR/vars.mk (make variables: PROFILE_TEACHERS, STORE_TEACHERS,
    /// PROFILE_STUDENTS, each student's SOURCE_<name> and DEPS_<name>, each
    /// imported teacher's TORCHSCRIPT_<name>, DATA_SRC) and one file per
    /// section (DIR/data.toml, DIR/cache.toml, DIR/teachers/<name>.toml,
    /// DIR/students/<name>.toml), each rewritten only when its content
    /// changes, so that make reruns only the stages whose section changed.
    /// The Makefile runs it; a profile's student says its teachers with
    /// `teachers = ["cnn", ...]` (or `[]`) and `live = true`, and an
    /// imported teacher is `[teachers.<name>]` with `torchscript = "model.pt"`.
    Vars(VarsArgs),
}

#[derive(clap::Args)]
pub struct VarsArgs {
    /// Profile TOML.
    #[arg(long)]
    profile: PathBuf,
    /// Output directory (the Makefile uses RUN/profile).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(cmd: Cmd) -> anyhow::Result<()> {
    match cmd {
        Cmd::Vars(a) => {
            let prof = Profile::load(&a.profile)?;
            let written = write_make_files(&prof, &a.out)?;
            tracing::debug!(files = written.len(), out = %a.out.join(VARS_FILE).display(), "profile vars");
            Ok(())
        }
    }
}
