//! The `kd` launcher: a copy of kd and kd-torch runs on the libtorch that
//! `KD_TORCH_LIB` names, and a missing or wrong libtorch is one line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BUILT_LIB: &str = env!("KD_BUILT_TORCH_LIB");

/// kd and kd-torch copied into a fresh folder, as a user would carry them.
fn copied_pair(dir: &Path) -> PathBuf {
    let from = Path::new(env!("CARGO_BIN_EXE_kd")).parent().unwrap();
    for name in ["kd", "kd-torch"] {
        place(&from.join(name), &dir.join(name));
    }
    dir.join("kd")
}

/// A copy of `from`; a hard link where possible, as kd-torch is hundreds
/// of MB in a debug build.
fn place(from: &Path, to: &Path) {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).unwrap();
    }
}

/// Run `kd` with a clean environment: nothing but what the test sets tells
/// it where libtorch is.
fn run(kd: &Path, torch_lib: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(kd);
    c.args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("RUST_LOG", "warn");
    if let Some(l) = torch_lib {
        c.env("KD_TORCH_LIB", l);
    }
    c.output().expect("kd starts")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A PyTorch install look-alike under `root` (standing for site-packages):
/// links to every entry of the real one, with real folders down to
/// `torch/lib` so that the loader sees its libraries there, and the CUDA
/// libraries that libtorch finds relative to itself (`$ORIGIN/../../nvidia`)
/// where it looks. `version` replaces the install's `torch/version.py`.
fn torch_lib_copy(root: &Path, version: Option<&str>) -> PathBuf {
    let real_lib = Path::new(BUILT_LIB);
    let real_torch = real_lib.parent().unwrap();
    let real_site = real_torch.parent().unwrap();
    let link_all = |from: &Path, to: &Path, except: &[&str]| {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap().flatten() {
            let name = e.file_name();
            if !except.iter().any(|x| name == *x) {
                std::os::unix::fs::symlink(e.path(), to.join(&name)).unwrap();
            }
        }
    };
    link_all(real_site, root, &["torch"]);
    link_all(real_torch, &root.join("torch"), &["lib", "version.py"]);
    link_all(real_lib, &root.join("torch/lib"), &[]);
    let text = match version {
        Some(v) => format!("__version__ = '{v}'\n"),
        None => std::fs::read_to_string(real_torch.join("version.py")).unwrap(),
    };
    std::fs::write(root.join("torch/version.py"), text).unwrap();
    root.join("torch/lib")
}

fn built_version() -> String {
    let text = std::fs::read_to_string(Path::new(BUILT_LIB).join("../version.py")).unwrap();
    let v = text
        .lines()
        .find_map(|l| l.strip_prefix("__version__ = "))
        .unwrap();
    v.trim_matches(|c| c == '\'' || c == '"').to_string()
}

#[test]
fn a_copied_kd_runs_on_the_libtorch_kd_torch_lib_names() {
    let t = tempfile::tempdir().unwrap();
    let bin = t.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let kd = copied_pair(&bin);
    let lib = torch_lib_copy(&t.path().join("site-packages"), None);
    let o = run(&kd, Some(&lib), &["env", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["torch_lib"], lib.display().to_string());
    assert!(v["libtorch"].as_str().unwrap().starts_with("2."), "{v}");
}

#[test]
fn without_kd_torch_lib_the_build_folder_is_used() {
    let t = tempfile::tempdir().unwrap();
    let kd = copied_pair(t.path());
    let o = run(&kd, None, &["env", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["torch_lib"], BUILT_LIB);
}

#[test]
fn a_folder_without_libtorch_is_one_line_naming_the_variable() {
    let t = tempfile::tempdir().unwrap();
    let kd = copied_pair(t.path());
    let o = run(&kd, Some(t.path()), &["env"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains("KD_TORCH_LIB=") && e.contains("libtorch_cpu.so"),
        "{e}"
    );
}

#[test]
fn another_pytorch_version_is_refused_with_both_versions() {
    let t = tempfile::tempdir().unwrap();
    let bin = t.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let kd = copied_pair(&bin);
    let lib = torch_lib_copy(&t.path().join("site-packages"), Some("1.13.1+cpu"));
    let o = run(&kd, Some(&lib), &["env"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("1.13.1") && e.contains(&built_version()), "{e}");
}

#[test]
fn kd_without_kd_torch_beside_it_says_so() {
    let t = tempfile::tempdir().unwrap();
    let kd = t.path().join("kd");
    place(Path::new(env!("CARGO_BIN_EXE_kd")), &kd);
    let o = run(&kd, None, &["env"]);
    assert!(!o.status.success());
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("kd-torch"), "{e}");
}
