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
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Default, Debug, PartialEq)]
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

    #[derive(serde::Deserialize, Default, Debug, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Nested {
        name: String,
        fit: S,
        mode: Mode,
    }

    #[derive(serde::Deserialize, serde::Serialize, Default, Debug, PartialEq, Clone, Copy)]
    #[serde(rename_all = "kebab-case")]
    enum Mode {
        #[default]
        PerTeacher,
        Averaged,
    }

    #[test]
    fn flags_lay_over_the_section_and_run_keys_come_out() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("p.toml");
        std::fs::write(
            &p,
            "[students.x]\nname = 'a'\nteachers = 'none'\ndevice = 'cpu'\nmode = 'averaged'\n[students.x.fit]\nepochs = 3\nlr = 0.5\n",
        )
        .unwrap();
        let prof = Profile::load(&p).unwrap();
        let mut flags = Overlay::default();
        flags.set("fit.epochs", Some(7usize)).set("lr", None::<f64>);
        let l: Layered<Nested> =
            layered(Some(&prof), "students.x", &flags, &["teachers"], None).unwrap();
        // The flag wins, the rest of the nested table stays.
        assert_eq!(l.config.fit, S { epochs: 7, lr: 0.5 });
        assert_eq!(
            (l.config.name.as_str(), l.config.mode),
            ("a", Mode::Averaged)
        );
        assert_eq!(l.run["teachers"].as_str(), Some("none"));
        assert_eq!(l.device, "cpu");
        // The device flag wins over the section; no profile: defaults and auto.
        let l: Layered<Nested> = layered(
            Some(&prof),
            "students.x",
            &flags,
            &["teachers"],
            Some("cuda:1"),
        )
        .unwrap();
        assert_eq!(l.device, "cuda:1");
        let mut flags = Overlay::default();
        flags.set("mode", Some(Mode::Averaged));
        let l: Layered<Nested> = layered(None, "students.x", &flags, &[], None).unwrap();
        assert_eq!(l.config.mode, Mode::Averaged);
        assert_eq!(
            (l.config.fit.epochs, l.device.as_str()),
            (0, DEFAULT_DEVICE)
        );
        // A bad value names the file and section; the device must be a string.
        std::fs::write(&p, "[cache]\nfit = 3\n").unwrap();
        let prof = Profile::load(&p).unwrap();
        let e = layered::<Nested>(Some(&prof), "cache", &Overlay::default(), &[], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("p.toml") && e.contains("[cache]"), "{e}");
        std::fs::write(&p, "[cache]\ndevice = 3\n").unwrap();
        let prof = Profile::load(&p).unwrap();
        let e = layered::<Nested>(Some(&prof), "cache", &Overlay::default(), &[], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("device must be a string"), "{e}");
    }

    #[test]
    fn one_enum_parser_for_flags_and_profiles() {
        assert_eq!(parse_setting::<Mode>("averaged"), Ok(Mode::Averaged));
        assert_eq!(parse_setting::<Mode>(" per-teacher "), Ok(Mode::PerTeacher));
        let e = parse_setting::<Mode>("avg").unwrap_err();
        assert!(e.contains("per-teacher") && e.contains("averaged"), "{e}");
    }

    #[test]
    fn setting_names_are_the_profile_spellings() {
        assert_eq!(
            setting_names::<Mode>(),
            Some(&["per-teacher", "averaged"][..])
        );
        for name in setting_names::<Mode>().unwrap() {
            assert!(parse_setting::<Mode>(name).is_ok(), "{name}");
        }
        // Not an enum, or one that parses from a string: no list.
        assert_eq!(setting_names::<u32>(), None);
        assert_eq!(setting_names::<crate::MixMode>(), None);
    }

    #[test]
    fn overlay_of_a_flags_struct_sets_the_given_flags_only() {
        #[derive(serde::Serialize)]
        struct Flags {
            mode: Option<Mode>,
            #[serde(rename = "fit.epochs")]
            epochs: Option<usize>,
            #[serde(rename = "fit.lr")]
            lr: Option<f64>,
        }
        let given = Flags {
            mode: Some(Mode::Averaged),
            epochs: Some(7),
            lr: None,
        };
        let mut base = toml::Table::new();
        base.insert("mode".into(), "per-teacher".into());
        let mut fit = toml::Table::new();
        fit.insert("lr".into(), 0.5.into());
        fit.insert("epochs".into(), 3.into());
        base.insert("fit".into(), fit.into());
        Overlay::of(&given).lay_over(&mut base);
        assert_eq!(base["mode"].as_str(), Some("averaged"));
        assert_eq!(base["fit"]["epochs"].as_integer(), Some(7));
        assert_eq!(
            base["fit"]["lr"].as_float(),
            Some(0.5),
            "a flag not given leaves the key"
        );
    }
}
