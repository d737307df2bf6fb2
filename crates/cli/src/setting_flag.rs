//! The value parser of every setting flag: it reads a value the way the
//! profile key is read ([`parse_setting`]: `--tokens averaged` and `tokens =
//! "averaged"` meet the same code) and lists the values in `--help` from
//! the setting's type ([`setting_names`]), so no list of names is typed by
//! hand beside the enum that defines them.

use clap::builder::{PossibleValue, TypedValueParser};
use kd_core::profile::{parse_setting, setting_names};
use serde::de::DeserializeOwned;
use std::ffi::OsStr;
use std::marker::PhantomData;

#[derive(Clone)]
pub struct Setting<T> {
    names: Option<&'static [&'static str]>,
    setting: PhantomData<fn() -> T>,
}

/// The parser of a setting flag of type `T`.
pub fn setting<T: DeserializeOwned>() -> Setting<T> {
    Setting {
        names: setting_names::<T>(),
        setting: PhantomData,
    }
}

impl<T> Setting<T> {
    /// For a type that parses from a string (no serde variants to read):
    /// the names it documents.
    pub fn named(self, names: &'static [&'static str]) -> Self {
        Setting {
            names: Some(names),
            ..self
        }
    }
}

impl<T: DeserializeOwned + PartialEq + Clone + Send + Sync + 'static> TypedValueParser
    for Setting<T>
{
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let parse: fn(&str) -> Result<T, String> = parse_setting::<T>;
        parse.parse_ref(cmd, arg, value)
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        // serde lists a variant's aliases after its name: they parse, but
        // only the first name of each value is shown.
        let names = self.names?;
        let mut seen: Vec<T> = vec![];
        let values: Vec<PossibleValue> = names
            .iter()
            .map(|n| {
                let v = parse_setting::<T>(n).ok();
                let alias = v.as_ref().is_some_and(|v| seen.contains(v));
                seen.extend(v);
                PossibleValue::new(*n).hide(alias)
            })
            .collect();
        Some(Box::new(values.into_iter()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use kd_core::MixMode;
    use kd_data::folder::Resize;

    #[derive(Parser, Debug)]
    struct Cli {
        #[arg(long, value_parser = setting::<Resize>())]
        resize: Option<Resize>,
        #[arg(long, value_parser = setting::<MixMode>().named(&MixMode::NAMES))]
        mix: Option<MixMode>,
    }

    #[test]
    fn values_parse_as_the_profile_reads_them_and_help_lists_them() {
        let c = Cli::try_parse_from(["kd", "--resize", "squash", "--mix", "CutMix"]).unwrap();
        assert_eq!(c.resize, Some(Resize::Squash));
        assert_eq!(c.mix, Some(MixMode::Cutmix));
        let e = Cli::try_parse_from(["kd", "--resize", "zoom"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--resize") && e.contains("zoom"), "{e}");
        let mut cmd = <Cli as clap::CommandFactory>::command();
        let help = cmd.render_long_help().to_string();
        assert!(help.contains("crop") && help.contains("squash"), "{help}");
        assert!(help.contains("mixup-cutmix"), "{help}");
        // An alias parses, but the help shows each value once.
        #[derive(Parser, Debug)]
        struct P {
            #[arg(long, value_parser = setting::<kd_core::amp::Precision>())]
            precision: kd_core::amp::Precision,
        }
        let p = P::try_parse_from(["kd", "--precision", "bfloat16"]).unwrap();
        assert_eq!(p.precision, kd_core::amp::Precision::Bf16);
        let help = <P as clap::CommandFactory>::command()
            .render_long_help()
            .to_string();
        assert!(
            help.contains("bf16") && !help.contains("bfloat16"),
            "{help}"
        );
    }
}
