//! Profiles (`data/profiles/<name>.toml`) fix every knob of a run. Each stage
//! reads its own section; flags given on the command line win.

use crate::error::{CoreError, IoContext, Result};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

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
        std::fs::write(&p, "[teachers.cnn]\nepochs = 3\n[bad]\nepochs = 'x'\n").unwrap();
        let prof = Profile::load(&p).unwrap();
        let s: S = prof.section("teachers.cnn").unwrap();
        assert_eq!((s.epochs, s.lr), (3, 0.0));
        let s: S = prof.section("missing").unwrap();
        assert_eq!(s.epochs, 0);
        let e = prof.section::<S>("bad").unwrap_err().to_string();
        assert!(e.contains("p.toml") && e.contains("[bad]"), "{e}");
    }
}
