//! Profiles (`data/profiles/<name>.toml`) fix every knob of a run. Each stage
//! reads its own section; flags given on the command line win.
//!
//! A stage deserialises only its own section and each section refuses
//! unknown keys, but a misspelt section name (`[cahce]`) would be read by
//! nobody and the run would take defaults without a word. One profile
//! serves several commands, so [`Profile::load`] checks the whole file's
//! top level against [`SECTIONS`].

use crate::error::{CoreError, IoContext, Result};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Top-level sections a profile may have: `[data]`, `[teachers.<name>]`,
/// `[cache]`, `[students.<variant>]`.
pub const SECTIONS: [&str; 4] = ["data", "teachers", "cache", "students"];

/// Sections made of one sub-table per name (`[teachers.cnn]`).
const NAMED: [&str; 2] = ["teachers", "students"];

#[derive(Clone, Debug)]
pub struct Profile {
    pub path: PathBuf,
    pub table: toml::Table,
}

impl Profile {
    pub fn load(path: &Path) -> Result<Profile> {
        let text = std::fs::read_to_string(path).at(path)?;
        let table = text
            .parse::<toml::Table>()
            .map_err(|e| CoreError::Profile {
                path: path.into(),
                msg: e.message().to_string(),
            })?;
        check_sections(path, &table)?;
        Ok(Profile {
            path: path.into(),
            table,
        })
    }

    /// The table at a dotted path (`teachers.cnn`), if present.
    pub fn table_at(&self, dotted: &str) -> Option<&toml::Table> {
        let mut t = &self.table;
        for part in dotted.split('.') {
            t = t.get(part)?.as_table()?;
        }
        Some(t)
    }

    /// Deserialize the section at `dotted` (an empty table when absent, so
    /// `#[serde(default)]` structs take their defaults).
    pub fn section<T: DeserializeOwned>(&self, dotted: &str) -> Result<T> {
        let t = self.table_at(dotted).cloned().unwrap_or_default();
        T::deserialize(toml::Value::Table(t)).map_err(|e| CoreError::Profile {
            path: self.path.clone(),
            msg: format!("[{dotted}]: {}", e.message()),
        })
    }
}

/// Refuse top-level keys other than [`SECTIONS`], sections that are not
/// tables, and entries of `[teachers]` / `[students]` that are not named
/// sub-tables.
fn check_sections(path: &Path, table: &toml::Table) -> Result<()> {
    let bad = |msg: String| {
        Err(CoreError::Profile {
            path: path.into(),
            msg,
        })
    };
    for (key, value) in table {
        if !SECTIONS.contains(&key.as_str()) {
            return bad(format!(
                "unknown section [{key}] (known: {})",
                SECTIONS.map(|s| format!("[{s}]")).join(", ")
            ));
        }
        let Some(t) = value.as_table() else {
            return bad(format!("'{key}' must be a section ([{key}]), not a value"));
        };
        if NAMED.contains(&key.as_str())
            && let Some((name, _)) = t.iter().find(|(_, v)| !v.is_table())
        {
            return bad(format!(
                "[{key}] holds '{name}', but its entries are sections named after a {} ([{key}.<name>])",
                if key == "teachers" {
                    "teacher"
                } else {
                    "student variant"
                }
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Default, Debug)]
    #[serde(default, deny_unknown_fields)]
    struct S {
        epochs: usize,
        lr: f64,
    }

    #[test]
    fn sections_and_errors() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("p.toml");
        std::fs::write(&p, "[teachers.cnn]\nepochs = 3\n[cache]\nepochs = 'x'\n").unwrap();
        let prof = Profile::load(&p).unwrap();
        let s: S = prof.section("teachers.cnn").unwrap();
        assert_eq!((s.epochs, s.lr), (3, 0.0));
        let s: S = prof.section("students.none").unwrap();
        assert_eq!(s.epochs, 0);
        let e = prof.section::<S>("cache").unwrap_err().to_string();
        assert!(e.contains("p.toml") && e.contains("[cache]"), "{e}");
    }

    #[test]
    fn misspelt_sections_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("p.toml");
        let load = |text: &str| {
            std::fs::write(&p, text).unwrap();
            Profile::load(&p).map(|_| ()).map_err(|e| e.to_string())
        };
        load("[data]\nseed = 1\n[cache]\nviews = 2\n[teachers.cnn]\n[students.none]\n").unwrap();
        let e = load("[cahce]\nviews = 2\n").unwrap_err();
        assert!(
            e.contains("p.toml") && e.contains("unknown section [cahce]"),
            "{e}"
        );
        let e = load("[teacher.cnn]\nepochs = 1\n").unwrap_err();
        assert!(e.contains("unknown section [teacher]"), "{e}");
        let e = load("views = 2\n").unwrap_err();
        assert!(e.contains("unknown section [views]"), "{e}");
        let e = load("cache = 2\n").unwrap_err();
        assert!(e.contains("'cache' must be a section"), "{e}");
        let e = load("[teachers]\nepochs = 2\n").unwrap_err();
        assert!(e.contains("[teachers] holds 'epochs'"), "{e}");
    }
}
