//! Profiles (`data/profiles/<name>.toml`) fix every knob of a run. Each stage
//! reads its own section; flags given on the command line win.
//!
//! Every subcommand lays its flags over its section the same way
//! ([`Overlay`], [`layered`]): each given flag becomes the section key of
//! the same name before the section is deserialised, so a value from a flag
//! and one from the profile meet one parser (the section's serde types, the
//! same enum spellings) and one set of checks. Keys that say where to run
//! rather than what is made (`device`, the student's `teachers`) are taken
//! out of the section first, so they never enter an artifact's identity;
//! the device is the flag, else the section's `device`, else
//! [`DEFAULT_DEVICE`], for every stage.
//!
//! A stage deserialises only its own section and each section refuses
//! unknown keys, but a misspelt section name (`[cahce]`) would be read by
//! nobody and the run would take defaults without a word. One profile
//! serves several commands, so [`Profile::load`] checks the whole file's
//! top level against [`SECTIONS`].

use crate::error::{CoreError, IoContext, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The device of a stage given neither `--device` nor a `device` key.
pub const DEFAULT_DEVICE: &str = "auto";

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

/// Command-line values to lay over a profile section: each one given sets
/// the key of the same name (dotted for a nested table: `fit.epochs`).
#[derive(Clone, Debug, Default)]
pub struct Overlay(toml::Table);

impl Overlay {
    /// The overlay of a command's setting flags: a struct of `Option`
    /// fields (clap's `Args` and serde's `Serialize`), each serialised under
    /// its profile key (the field's name, or `#[serde(rename = "fit.epochs")]`
    /// for a nested table). A flag not given serialises as nothing, so it
    /// leaves the profile's value. The flag and its key are one definition:
    /// a new setting flag is one field.
    pub fn of(flags: &impl Serialize) -> Overlay {
        let mut o = Overlay::default();
        let value = toml::Value::try_from(flags).expect("setting flags are plain TOML values");
        let toml::Value::Table(t) = value else {
            panic!("setting flags serialise as a struct");
        };
        for (key, v) in t {
            o.set(&key, Some(v));
        }
        o
    }

    /// Set `key` when the flag was given (`Some`).
    pub fn set<T: Serialize>(&mut self, key: &str, value: Option<T>) -> &mut Self {
        if let Some(v) = value {
            let v = toml::Value::try_from(v).expect("flag values are plain TOML values");
            let mut parts: Vec<&str> = key.split('.').collect();
            let last = parts.pop().expect("a key");
            let mut t = &mut self.0;
            for p in parts {
                t = t
                    .entry(p)
                    .or_insert_with(|| toml::Value::Table(Default::default()))
                    .as_table_mut()
                    .expect("overlay keys nest consistently");
            }
            t.insert(last.into(), v);
        }
        self
    }

    fn lay_over(&self, base: &mut toml::Table) {
        fn merge(dst: &mut toml::Table, src: &toml::Table) {
            for (k, v) in src {
                match (dst.get_mut(k), v) {
                    (Some(toml::Value::Table(d)), toml::Value::Table(s)) => merge(d, s),
                    _ => {
                        dst.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        merge(base, &self.0);
    }
}

/// A profile section with the flags laid over it.
#[derive(Clone, Debug)]
pub struct Layered<T> {
    pub config: T,
    /// The run keys ([`layered`]'s `run_keys`) the section had, as given
    /// (a key may take several forms: the student's `teachers` is a source
    /// string, or a list of names that `make` turns into one).
    pub run: BTreeMap<String, toml::Value>,
    /// `device` from the flag, else the section, else [`DEFAULT_DEVICE`].
    pub device: String,
}

/// Section `section` of `profile` (absent profile or section: an empty
/// table, so `#[serde(default)]` configs take their defaults) with `flags`
/// laid over it, then deserialised. `run_keys` (values saying where to run,
/// not what is made) and `device` (a string) are taken out of the section
/// first; `device_flag` wins over the section's `device`.
pub fn layered<T: DeserializeOwned>(
    profile: Option<&Profile>,
    section: &str,
    flags: &Overlay,
    run_keys: &[&str],
    device_flag: Option<&str>,
) -> Result<Layered<T>> {
    let origin = || profile.map_or_else(|| PathBuf::from("command line"), |p| p.path.clone());
    let bad = |msg: String| CoreError::Profile {
        path: origin(),
        msg: format!("[{section}]: {msg}"),
    };
    let mut table = profile
        .and_then(|p| p.table_at(section))
        .cloned()
        .unwrap_or_default();
    let mut run = BTreeMap::new();
    for key in run_keys {
        if let Some(v) = table.remove(*key) {
            run.insert(key.to_string(), v);
        }
    }
    let section_device = match table.remove("device") {
        None => None,
        Some(toml::Value::String(s)) => Some(s),
        Some(_) => return Err(bad("device must be a string".into())),
    };
    flags.lay_over(&mut table);
    let config = T::deserialize(toml::Value::Table(table)).map_err(|e| bad(e.message().into()))?;
    let device = device_flag
        .map(str::to_string)
        .or(section_device)
        .unwrap_or_else(|| DEFAULT_DEVICE.to_string());
    Ok(Layered {
        config,
        run,
        device,
    })
}

/// Parse one flag value with the serde spelling its profile key has (the
/// one enum parser of the command line: `--tokens averaged` and
/// `tokens = "averaged"` are read by the same code).
pub fn parse_setting<T: DeserializeOwned>(s: &str) -> std::result::Result<T, String> {
    T::deserialize(toml::Value::String(s.trim().to_string())).map_err(|e| e.message().to_string())
}

/// The values a setting enum takes, as its profile key spells them (serde's
/// names after `rename_all`, in declaration order), read from the type's own
/// `Deserialize`: the command line lists them without a hand-typed copy.
/// `None` for a type that deserialises from a string (`try_from`).
pub fn setting_names<T: DeserializeOwned>() -> Option<&'static [&'static str]> {
    use serde::de::{self, Visitor};

    /// A deserializer that answers nothing but records the variants an
    /// enum asks for.
    struct Probe(Option<&'static [&'static str]>);
    impl<'de> de::Deserializer<'de> for &mut Probe {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(
            self,
            _: V,
        ) -> std::result::Result<V::Value, Self::Error> {
            Err(de::Error::custom("not an enum"))
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _: &'static str,
            variants: &'static [&'static str],
            _: V,
        ) -> std::result::Result<V::Value, Self::Error> {
            self.0 = Some(variants);
            Err(de::Error::custom("names read"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map struct identifier ignored_any
        }
    }
    let mut p = Probe(None);
    let _ = T::deserialize(&mut p);
    p.0
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
mod tests;
