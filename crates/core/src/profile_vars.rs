//! What `make` needs to know of a profile, written where `make` reads it.
//!
//! The Makefile derives its pipeline from the profile: which teachers to
//! train or import, which students to train and from which teachers, where
//! the raw data is. [`write_make_files`] writes that as make variables
//! (`vars.mk`) and writes every section of the profile to a file of its own
//! (`data.toml`, `cache.toml`, `teachers/<name>.toml`,
//! `students/<name>.toml`). A section file is rewritten only when the
//! section's content changes, so each stage's rule can depend on its own
//! section: editing one student's settings reruns that student alone, and a
//! comment edited anywhere reruns nothing.
//!
//! Teachers: a section with `torchscript = "model.pt"` is imported
//! (`kd teacher import`, with its optional `mean`, `std`,
//! `eval_batch_size`); any other is trained. A trained teacher with `folds`
//! is cross-fitted and fills a store of its own, so it is not one of the
//! main store's teachers.
//!
//! Students: a section says which teachers it learns from with
//! `teachers = ["cnn", "involution"]` (names of this profile's teachers;
//! `[]` for none) and `live = true` for teachers run live instead of read
//! from the store. Without `teachers`, the name decides, as in the demo:
//! `none…` learns from no teacher, `<teacher>…` from that teacher,
//! `ensemble…` from every store teacher, and a name ending in `-live` from
//! them live. A `teachers` string is a full `--teachers` source, passed
//! through as given.

use crate::error::{CoreError, IoContext, Result};
use crate::profile::Profile;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The file of make variables, beside the section files.
pub const VARS_FILE: &str = "vars.mk";

/// Where a student's teacher outputs come from, in the Makefile's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StudentTeachers {
    None,
    /// These teachers' logits from the run's store (`logits`).
    Store(Vec<String>),
    /// These teachers run live on every batch.
    Live(Vec<String>),
    /// A `--teachers` source given in full by the section.
    Source(String),
}

/// The make-relevant reading of a profile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfilePlan {
    /// Every teacher section, by name.
    pub teachers: Vec<TeacherPlan>,
    /// Every student section, by name, with its teachers.
    pub students: Vec<(String, StudentTeachers)>,
    /// `[data] src`, if the profile names its raw data.
    pub data_src: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TeacherPlan {
    pub name: String,
    /// `torchscript`: imported from this file rather than trained.
    pub torchscript: Option<String>,
    /// `kd teacher import` flags from the section (`--mean`, ...).
    pub import_flags: Vec<String>,
    /// Trained k-fold (`folds`): a store of its own.
    pub cross_fitted: bool,
}

impl ProfilePlan {
    /// The teachers of the run's main store: all but the cross-fitted.
    pub fn store_teachers(&self) -> Vec<&str> {
        self.teachers
            .iter()
            .filter(|t| !t.cross_fitted)
            .map(|t| t.name.as_str())
            .collect()
    }

    pub fn read(profile: &Profile) -> Result<ProfilePlan> {
        let bad = |msg: String| CoreError::Profile {
            path: profile.path.clone(),
            msg,
        };
        let mut teachers = vec![];
        for (name, t) in named(profile, "teachers") {
            check_name(name).map_err(|m| bad(format!("[teachers.{name}]: {m}")))?;
            let torchscript = t
                .get("torchscript")
                .and_then(|v| v.as_str())
                .map(String::from);
            let mut import_flags = vec![];
            if torchscript.is_some() {
                for key in ["mean", "std"] {
                    if let Some(v) = t.get(key) {
                        let xs = v
                            .as_array()
                            .and_then(|a| {
                                a.iter()
                                    .map(toml::Value::as_float)
                                    .collect::<Option<Vec<_>>>()
                            })
                            .ok_or_else(|| {
                                bad(format!(
                                    "[teachers.{name}] {key}: expected a list of numbers"
                                ))
                            })?;
                        let joined: Vec<String> = xs.iter().map(|x| x.to_string()).collect();
                        import_flags.push(format!("--{key} {}", joined.join(",")));
                    }
                }
                if let Some(v) = t.get("eval_batch_size") {
                    let n = v.as_integer().filter(|n| *n > 0).ok_or_else(|| {
                        bad(format!(
                            "[teachers.{name}] eval_batch_size: expected a positive integer"
                        ))
                    })?;
                    import_flags.push(format!("--eval-batch-size {n}"));
                }
            }
            teachers.push(TeacherPlan {
                name: name.to_string(),
                cross_fitted: torchscript.is_none() && t.contains_key("folds"),
                torchscript,
                import_flags,
            });
        }
        let mut plan = ProfilePlan {
            teachers,
            students: vec![],
            data_src: profile
                .table_at("data")
                .and_then(|d| d.get("src"))
                .and_then(|v| v.as_str())
                .map(String::from),
        };
        let mut students = vec![];
        for (name, s) in named(profile, "students") {
            check_name(name).map_err(|m| bad(format!("[students.{name}]: {m}")))?;
            let teachers = plan
                .student_teachers(name, s)
                .map_err(|m| bad(format!("[students.{name}]: {m}")))?;
            students.push((name.to_string(), teachers));
        }
        plan.students = students;
        Ok(plan)
    }

    fn student_teachers(
        &self,
        name: &str,
        s: &toml::Table,
    ) -> std::result::Result<StudentTeachers, String> {
        let live = match s.get("live") {
            None => name.ends_with("-live"),
            Some(v) => v.as_bool().ok_or("live: expected true or false")?,
        };
        let known: Vec<&str> = self.teachers.iter().map(|t| t.name.as_str()).collect();
        let names: Vec<String> = match s.get("teachers") {
            Some(toml::Value::String(source)) => {
                return Ok(StudentTeachers::Source(source.clone()));
            }
            Some(toml::Value::Array(a)) => {
                let mut v = vec![];
                for t in a {
                    let t = t
                        .as_str()
                        .ok_or("teachers: expected a list of teacher names")?;
                    if !known.contains(&t) {
                        return Err(format!(
                            "teachers: no [teachers.{t}] in this profile (it has: {})",
                            known.join(", ")
                        ));
                    }
                    v.push(t.to_string());
                }
                v
            }
            Some(_) => {
                return Err(
                    "teachers: expected a list of teacher names, or a --teachers source string"
                        .into(),
                );
            }
            None => self.teachers_by_name(name)?,
        };
        Ok(match (names.is_empty(), live) {
            (true, true) => return Err("live = true with no teachers".into()),
            (true, false) => StudentTeachers::None,
            (false, true) => StudentTeachers::Live(names),
            (false, false) => StudentTeachers::Store(names),
        })
    }

    /// The demo's naming convention, for sections that do not say.
    fn teachers_by_name(&self, name: &str) -> std::result::Result<Vec<String>, String> {
        let starts = |m: &str| name == m || name.starts_with(&format!("{m}-"));
        if starts("none") {
            return Ok(vec![]);
        }
        let store = self.store_teachers();
        // The longest teacher name that starts the student's: `cnn-r18`
        // before `cnn`.
        if let Some(t) = store.iter().filter(|t| starts(t)).max_by_key(|t| t.len()) {
            return Ok(vec![t.to_string()]);
        }
        if starts("ensemble") && !store.is_empty() {
            return Ok(store.iter().map(|t| t.to_string()).collect());
        }
        Err(format!(
            "which teachers does it learn from? Add teachers = [...] (names of [teachers.*] sections: {}), or [] for none",
            store.join(", ")
        ))
    }

    /// The make variables: the teacher and student lists, each student's
    /// `--teachers` source and what it depends on (with `$(RUN)` left for
    /// make to expand), each imported teacher's file and flags.
    pub fn make_vars(&self) -> String {
        let mut s = String::from("# Written by `kd profile vars` from the profile; do not edit.\n");
        let list = |xs: Vec<&str>| xs.join(" ");
        let names = |f: &dyn Fn(&TeacherPlan) -> bool| {
            list(
                self.teachers
                    .iter()
                    .filter(|t| f(t))
                    .map(|t| t.name.as_str())
                    .collect(),
            )
        };
        writeln!(s, "PROFILE_TEACHERS := {}", names(&|_| true)).ok();
        writeln!(s, "STORE_TEACHERS := {}", list(self.store_teachers())).ok();
        writeln!(
            s,
            "IMPORTED_TEACHERS := {}",
            names(&|t| t.torchscript.is_some())
        )
        .ok();
        for t in &self.teachers {
            if let Some(f) = &t.torchscript {
                writeln!(s, "TORCHSCRIPT_{} := {}", t.name, escape(f)).ok();
                writeln!(s, "IMPORT_FLAGS_{} := {}", t.name, t.import_flags.join(" ")).ok();
            }
        }
        let students: Vec<&str> = self.students.iter().map(|(n, _)| n.as_str()).collect();
        writeln!(s, "PROFILE_STUDENTS := {}", list(students)).ok();
        let live: Vec<&str> = self
            .students
            .iter()
            .filter(|(_, t)| matches!(t, StudentTeachers::Live(_)))
            .map(|(n, _)| n.as_str())
            .collect();
        writeln!(s, "LIVE_STUDENTS := {}", list(live)).ok();
        let all = self.store_teachers();
        let dirs = |ts: &[String]| {
            ts.iter()
                .map(|t| format!("$(RUN)/teachers/{t}"))
                .collect::<Vec<_>>()
        };
        for (name, teachers) in &self.students {
            let (source, deps) = match teachers {
                StudentTeachers::None => (
                    "none".to_string(),
                    "$(RUN)/dataset/manifest.json".to_string(),
                ),
                StudentTeachers::Store(ts) => {
                    let subset = if ts.iter().map(String::as_str).eq(all.iter().copied()) {
                        String::new()
                    } else {
                        format!("\\#{}", ts.join(","))
                    };
                    (
                        format!("cache:$(RUN)/logits{subset}"),
                        "$(RUN)/logits/manifest.json".into(),
                    )
                }
                StudentTeachers::Live(ts) => (
                    format!("live:{}", dirs(ts).join(",")),
                    dirs(ts)
                        .iter()
                        .map(|d| format!("{d}/manifest.json"))
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
                StudentTeachers::Source(src) => {
                    (escape(src), "$(RUN)/dataset/manifest.json".into())
                }
            };
            writeln!(s, "SOURCE_{name} = {source}").ok();
            writeln!(s, "DEPS_{name} = {deps}").ok();
        }
        writeln!(
            s,
            "DATA_SRC := {}",
            self.data_src.as_deref().map(escape).unwrap_or_default()
        )
        .ok();
        s
    }
}

/// The sub-tables of a named section (`[teachers.<name>]`), in file order.
fn named<'a>(profile: &'a Profile, section: &str) -> Vec<(&'a str, &'a toml::Table)> {
    profile
        .table_at(section)
        .map(|t| {
            t.iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.as_table()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// Names become directories, make targets and variable names.
fn check_name(name: &str) -> std::result::Result<(), String> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err("a name of letters, digits, '-', '_' or '.' is needed (it names a directory and a make target)".into())
    }
}

/// A value make reads literally: `#` would start a comment, `$` a variable.
fn escape(s: &str) -> String {
    s.replace('$', "$$").replace('#', "\\#")
}

/// Write `profile`'s section files and `vars.mk` into `dir`, each only if
/// its content changed (so its time stamp says when the section last did).
/// Returns the files written.
pub fn write_make_files(profile: &Profile, dir: &Path) -> Result<Vec<PathBuf>> {
    let plan = ProfilePlan::read(profile)?;
    let mut files: Vec<(PathBuf, String)> = vec![];
    for section in ["data", "cache"] {
        let t = profile.table_at(section).cloned().unwrap_or_default();
        files.push((dir.join(format!("{section}.toml")), to_toml(&t)));
    }
    for kind in ["teachers", "students"] {
        for (name, t) in named(profile, kind) {
            files.push((dir.join(kind).join(format!("{name}.toml")), to_toml(t)));
        }
    }
    files.push((dir.join(VARS_FILE), plan.make_vars()));
    let mut written = vec![];
    for (path, text) in files {
        if std::fs::read_to_string(&path).ok().as_deref() == Some(text.as_str()) {
            continue;
        }
        let parent = path.parent().unwrap_or(dir);
        std::fs::create_dir_all(parent).at(parent)?;
        // Through a temporary file: make must never read half a vars.mk.
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &text).at(&tmp)?;
        std::fs::rename(&tmp, &path).at(&path)?;
        written.push(path);
    }
    Ok(written)
}

fn to_toml(t: &toml::Table) -> String {
    toml::to_string(t).expect("a parsed TOML table serialises")
}

#[cfg(test)]
mod tests;
