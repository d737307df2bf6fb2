//! `kd`: find the libtorch that the pipeline needs, then start the pipeline
//! itself (`kd-torch`, in the same folder) on it.
//!
//! `kd-torch` links libtorch dynamically. Were it started directly on a
//! machine where the loader cannot find libtorch (a GPU node, a container,
//! another user's account), it would die before `main` with the loader's
//! "libtorch_cpu.so: cannot open shared object file". This launcher links
//! nothing but the standard library, so it can look in the places below and
//! either start `kd-torch` with that folder on `LD_LIBRARY_PATH` or say in
//! one line what is missing:
//!
//! 1. `KD_TORCH_LIB`, when set: the `torch/lib` folder of a PyTorch install.
//!    It must hold libtorch and match the version kd was built against.
//! 2. The folder kd was built against (the build machine's case).
//! 3. `torch/lib` of the active virtualenv (`VIRTUAL_ENV`).
//! 4. Each folder of `LD_LIBRARY_PATH`.
//!
//! The folder found is passed on as `KD_TORCH_LIB`, so a process that kd
//! starts (or a launcher such as torchrun starting kd again) uses the same.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The library whose presence marks a `torch/lib` folder.
const MARKER: &str = "libtorch_cpu.so";
/// The PyTorch version kd was built against (`2.11.0+cu130` and the like).
const BUILT_VERSION: &str = env!("KD_LIBTORCH_VERSION");
const BUILT_LIB: Option<&str> = option_env!("KD_BUILT_TORCH_LIB");

fn main() -> ExitCode {
    match launch() {
        // `launch` only returns on failure: success replaces this process.
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn launch() -> Result<std::convert::Infallible, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate kd itself: {e}"))?;
    let real = exe.with_file_name("kd-torch");
    if !real.is_file() {
        return Err(format!(
            "{} is missing: kd and kd-torch must sit in the same folder",
            real.display()
        ));
    }
    let lib = locate()?;
    let mut path = OsString::from(&lib);
    if let Some(old) = std::env::var_os("LD_LIBRARY_PATH").filter(|v| !v.is_empty()) {
        path.push(":");
        path.push(old);
    }
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| "kd".into());
    let err = Command::new(&real)
        .arg0(arg0)
        .args(args)
        .env("LD_LIBRARY_PATH", path)
        .env("KD_TORCH_LIB", &lib)
        .exec();
    Err(format!("cannot start {}: {err}", real.display()))
}

/// The `torch/lib` folder to use, or the one line that says why none fits.
fn locate() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("KD_TORCH_LIB").filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        if !dir.join(MARKER).is_file() {
            return Err(format!(
                "KD_TORCH_LIB={}: no {MARKER} there; it must be the torch/lib folder of a \
                 PyTorch {BUILT_VERSION} install",
                dir.display()
            ));
        }
        return match version_mismatch(&dir) {
            None => Ok(dir),
            Some(found) => Err(format!(
                "KD_TORCH_LIB={}: PyTorch {found} there, but kd was built against \
                 {BUILT_VERSION}; point KD_TORCH_LIB at a {BUILT_VERSION} install or rebuild kd",
                dir.display()
            )),
        };
    }
    let mut looked = vec![];
    for dir in candidates() {
        if !dir.join(MARKER).is_file() {
            looked.push(dir.display().to_string());
        } else if let Some(found) = version_mismatch(&dir) {
            looked.push(format!("{} (PyTorch {found})", dir.display()));
        } else {
            return Ok(dir);
        }
    }
    Err(format!(
        "cannot find libtorch ({MARKER} of PyTorch {BUILT_VERSION}): set KD_TORCH_LIB to the \
         torch/lib folder of such an install (python -c \"import os, torch; \
         print(os.path.join(os.path.dirname(torch.__file__), 'lib'))\"); looked in: {}",
        if looked.is_empty() {
            "nothing (no build folder, VIRTUAL_ENV or LD_LIBRARY_PATH)".to_string()
        } else {
            looked.join(", ")
        }
    ))
}

/// The folders to try when `KD_TORCH_LIB` is unset, in order.
fn candidates() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = BUILT_LIB.map(PathBuf::from).into_iter().collect();
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV") {
        let lib = Path::new(&venv).join("lib");
        // site-packages sits under lib/pythonX.Y; the minor version is not
        // known here.
        if let Ok(entries) = std::fs::read_dir(&lib) {
            let mut pys: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("python"))
                })
                .collect();
            pys.sort();
            out.extend(pys.into_iter().map(|p| p.join("site-packages/torch/lib")));
        }
    }
    if let Some(paths) = std::env::var_os("LD_LIBRARY_PATH") {
        out.extend(std::env::split_paths(&paths).filter(|p| !p.as_os_str().is_empty()));
    }
    out
}

/// The PyTorch version installed beside `dir` (its `../version.py`) when it
/// differs from the one kd was built against in major or minor; `None` when
/// they agree or the folder does not say (a plain libtorch download).
fn version_mismatch(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("../version.py")).ok()?;
    let found = text
        .lines()
        .find_map(|l| l.strip_prefix("__version__ = "))?;
    let found = found.trim().trim_matches(|c| c == '\'' || c == '"');
    let minor = |v: &str| -> String { v.split(['.', '+']).take(2).collect::<Vec<_>>().join(".") };
    if BUILT_VERSION == "unknown" || minor(found) == minor(BUILT_VERSION) {
        None
    } else {
        Some(found.to_string())
    }
}
