//! The run-naming rules: how a student directory's name says which variant
//! it is, with which seed, at which epoch budget and over how many stored
//! views. The Makefile builds these names (`student/<variant>`,
//! `<variant>-seed<N>`, `<method>-ep<N>`, `<method>-k<K>`) and the reports
//! parse them back, so both follow this module; a test reads the Makefile to
//! keep them in step.
//!
//! Vocabulary, outermost first:
//! - a *run name* is a directory under `student/`: `ensemble-ep8-seed2`;
//! - its *variant* is the run name without the seed: `ensemble-ep8` (runs
//!   that differ only by seed are grouped, mean ± sd);
//! - a variant's *method* is the variant without the budget and the views:
//!   `ensemble`;
//! - the *budget tag* is `-ep<N>` (a `make long` run or a patience curve's
//!   point), or empty for the profile's own epoch count;
//! - the *views tag* is `-k<K>` (a views curve's point: a store of K views
//!   per image), or empty for the profile's own store.
//!
//! A run with either tag is off the profile's settings: tabulated and
//! drawn, never a setting a verdict picks.

use std::fmt;

/// The variants the method compares, in its order: no teacher, each single
/// teacher, their ensemble. The Makefile's `SEED_VARIANTS`.
pub const COMPARED: [&str; 4] = ["none", "cnn", "involution", "ensemble"];

/// The ensemble distilled from live teachers: a timing run, not an accuracy
/// comparison.
pub const LIVE: &str = "ensemble-live";

/// The single-teacher methods; a variant is a single-teacher student when it
/// is one of these or one of them with options (`cnn-stems`).
pub const SINGLE_TEACHERS: [&str; 2] = ["cnn", "involution"];

/// The ensemble method; its options are `ensemble-<option>`.
pub const ENSEMBLE: &str = "ensemble";

/// The study's variants in the order of its tables (the Makefile's
/// `STUDY_MAIN` up to the weightings); the others follow by name.
pub const STUDY_ORDER: [&str; 8] = [
    "none",
    "cnn",
    "involution",
    "ensemble",
    "none-stems",
    "cnn-stems",
    "involution-stems",
    "ensemble-stems",
];

const SEED_TAG: &str = "-seed";
const BUDGET_TAG: &str = "-ep";
const VIEWS_TAG: &str = "-k";

/// A parsed run name: `<method>[-k<views>][-ep<epochs>][-seed<seed>]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunName {
    pub method: String,
    /// Another store than the profile's: one of this many views per image.
    pub views: Option<u64>,
    /// A longer budget than the profile's (`make long`).
    pub epochs: Option<u64>,
    /// A seed other than the profile's own.
    pub seed: Option<u64>,
}

impl RunName {
    /// The profile's seed and budget.
    pub fn new(method: impl Into<String>) -> RunName {
        RunName {
            method: method.into(),
            views: None,
            epochs: None,
            seed: None,
        }
    }

    pub fn with_seed(self, seed: u64) -> RunName {
        RunName {
            seed: Some(seed),
            ..self
        }
    }

    pub fn with_epochs(self, epochs: u64) -> RunName {
        RunName {
            epochs: Some(epochs),
            ..self
        }
    }

    pub fn with_views(self, views: u64) -> RunName {
        RunName {
            views: Some(views),
            ..self
        }
    }

    /// Any directory name parses: one without tags is a method by itself.
    pub fn parse(name: &str) -> RunName {
        let (variant, seed) = split_tail(name, SEED_TAG);
        let (rest, epochs) = split_tail(variant, BUDGET_TAG);
        let (method, views) = split_tail(rest, VIEWS_TAG);
        RunName {
            method: method.to_string(),
            views,
            epochs,
            seed,
        }
    }

    /// The name without its seed: what runs are grouped by.
    pub fn variant(&self) -> String {
        let views = self
            .views
            .map_or(String::new(), |k| format!("{VIEWS_TAG}{k}"));
        format!("{}{views}{}", self.method, self.budget_tag())
    }

    /// `-ep<N>`, or "" at the profile's budget.
    pub fn budget_tag(&self) -> String {
        self.epochs
            .map_or(String::new(), |n| format!("{BUDGET_TAG}{n}"))
    }
}

impl fmt::Display for RunName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.variant())?;
        if let Some(s) = self.seed {
            write!(f, "{SEED_TAG}{s}")?;
        }
        Ok(())
    }
}

/// `name` without a trailing `<tag><N>`, and N. Only a canonical number
/// counts (digits, no leading zero), so that printing N back gives the
/// same name.
fn split_tail<'a>(name: &'a str, tag: &str) -> (&'a str, Option<u64>) {
    let Some(i) = name.rfind(tag) else {
        return (name, None);
    };
    let digits = &name[i + tag.len()..];
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    match digits.parse() {
        Ok(n) if canonical => (&name[..i], Some(n)),
        _ => (name, None),
    }
}

/// `ensemble-seed2` -> `ensemble`: the variant a run belongs to.
pub fn variant_of(run: &str) -> &str {
    split_tail(run, SEED_TAG).0
}

/// `cnn-ep8` -> `-ep8`: the budget tag of a variant, or "".
pub fn budget_tag(variant: &str) -> &str {
    &variant[split_tail(variant, BUDGET_TAG).0.len()..]
}

/// `ensemble-k32-ep8` -> `-k32`: the views tag of a variant, or "".
pub fn views_tag(variant: &str) -> &str {
    let rest = split_tail(variant, BUDGET_TAG).0;
    &rest[split_tail(rest, VIEWS_TAG).0.len()..]
}

/// `cnn-ep8`, `cnn-k32` -> `cnn`: the method whatever the budget and store.
pub fn method_of(variant: &str) -> &str {
    split_tail(split_tail(variant, BUDGET_TAG).0, VIEWS_TAG).0
}

/// Whether a variant ran at the profile's budget over the profile's store:
/// the only runs a verdict chooses among.
pub fn at_profile_settings(variant: &str) -> bool {
    budget_tag(variant).is_empty() && views_tag(variant).is_empty()
}

/// Whether `variant` is a compared variant at some budget (`cnn`, `cnn-ep8`).
pub fn is_compared(variant: &str) -> bool {
    COMPARED.contains(&method_of(variant))
}

/// Position of a method in [`COMPARED`]; anything else ranks after them.
pub fn compared_rank(method: &str) -> usize {
    COMPARED
        .iter()
        .position(|c| *c == method)
        .unwrap_or(COMPARED.len())
}

/// `cnn`, `involution-stems`, ...: a student of one teacher. A single
/// teacher with the same options is the fair rival of an ensemble variant.
pub fn is_single_teacher(variant: &str) -> bool {
    SINGLE_TEACHERS.iter().any(|s| has_method(variant, s))
}

/// `ensemble`, `ensemble-stems`, ...: a student of the teacher ensemble
/// (the live timing run included; callers that compare accuracy drop it).
pub fn is_ensemble(variant: &str) -> bool {
    has_method(variant, ENSEMBLE)
}

fn has_method(variant: &str, method: &str) -> bool {
    variant == method
        || variant
            .strip_prefix(method)
            .is_some_and(|r| r.starts_with('-'))
}

/// Position in the study's tables: [`STUDY_ORDER`], then the rest.
pub fn study_rank(variant: &str) -> usize {
    STUDY_ORDER
        .iter()
        .position(|x| *x == variant)
        .unwrap_or(STUDY_ORDER.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (name, run) in [
            ("ensemble", RunName::new("ensemble")),
            ("ensemble-seed2", RunName::new("ensemble").with_seed(2)),
            ("cnn-ep8", RunName::new("cnn").with_epochs(8)),
            (
                "cnn-ep8-seed0",
                RunName::new("cnn").with_epochs(8).with_seed(0),
            ),
            ("ensemble-live", RunName::new("ensemble-live")),
            ("ensemble-tau0.5", RunName::new("ensemble-tau0.5")),
            (
                "ensemble-stems-k32",
                RunName::new("ensemble-stems").with_views(32),
            ),
            (
                "ensemble-k8-ep40-seed1",
                RunName::new("ensemble")
                    .with_views(8)
                    .with_epochs(40)
                    .with_seed(1),
            ),
            (
                "ensemble-stems-crossfit-seed1",
                RunName::new("ensemble-stems-crossfit").with_seed(1),
            ),
        ] {
            assert_eq!(RunName::parse(name), run, "{name}");
            assert_eq!(run.to_string(), name);
        }
    }

    #[test]
    fn only_a_number_is_a_tag() {
        for name in [
            "none-seed",
            "x-ep",
            "a-seedling",
            "b-seed01",
            "c-ep1x",
            "d-k",
            "e-k08",
            "f-keep",
        ] {
            let r = RunName::parse(name);
            assert_eq!(
                (r.method.as_str(), r.views, r.epochs, r.seed),
                (name, None, None, None)
            );
            assert_eq!(r.to_string(), name);
        }
        assert_eq!(RunName::parse("x-seed99999999999999999999").seed, None);
    }

    #[test]
    fn variant_method_and_budget() {
        assert_eq!(variant_of("ensemble-seed2"), "ensemble");
        assert_eq!(variant_of("ensemble-live"), "ensemble-live");
        assert_eq!(variant_of("cnn-ep8-seed1"), "cnn-ep8");
        assert_eq!(budget_tag("involution-ep12"), "-ep12");
        assert_eq!(budget_tag("ensemble-tau0.5"), "");
        assert_eq!(method_of("involution-ep12"), "involution");
        assert_eq!(views_tag("ensemble-stems-k32"), "-k32");
        assert_eq!(views_tag("ensemble-k8-ep40"), "-k8");
        assert_eq!(views_tag("ensemble-ep40"), "");
        assert_eq!(method_of("ensemble-stems-k32"), "ensemble-stems");
        assert_eq!(method_of("ensemble-k8-ep40"), "ensemble");
        assert!(at_profile_settings("ensemble-stems") && at_profile_settings("ensemble-tau0.5"));
        assert!(!at_profile_settings("ensemble-k8") && !at_profile_settings("cnn-ep8"));
        assert_eq!(RunName::parse("cnn-ep8-seed1").variant(), "cnn-ep8");
        assert!(is_compared("cnn-ep8") && is_compared("none"));
        assert!(!is_compared(LIVE) && !is_compared("ensemble-tau3"));
        assert_eq!(compared_rank("ensemble"), 3);
        assert_eq!(compared_rank("ensemble-tau3"), 4);
    }

    #[test]
    fn single_teacher_and_ensemble_variants() {
        assert!(is_single_teacher("cnn") && is_single_teacher("involution-stems-crossfit"));
        assert!(!is_single_teacher("cnnx") && !is_single_teacher("ensemble-stems"));
        assert!(!is_single_teacher("none-stems"));
        assert!(is_ensemble("ensemble") && is_ensemble("ensemble-mixed"));
        assert!(!is_ensemble("ensembles") && !is_ensemble("cnn"));
        assert_eq!(study_rank("none"), 0);
        assert_eq!(study_rank("ensemble-crossfit"), STUDY_ORDER.len());
    }

    /// The Makefile's variable `name`: its value, words split.
    fn make_var(makefile: &str, name: &str) -> Vec<String> {
        let prefix = format!("{name} :=");
        let mut lines = makefile.lines().skip_while(|l| !l.starts_with(&prefix));
        let mut value = lines.next().expect(name)[prefix.len()..].to_string();
        while value.ends_with('\\') {
            value.pop();
            value.push_str(lines.next().unwrap_or(""));
        }
        value.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn the_makefile_builds_these_names() {
        let makefile = include_str!("../../../Makefile");
        assert_eq!(make_var(makefile, "SEED_VARIANTS"), COMPARED);
        // The student list comes from the profile: the default one names the
        // live run, and the profile reader sees it as live.
        let profile = kd_core::profile::Profile::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../data/profiles/demo.toml"
        )))
        .unwrap();
        let plan = kd_core::profile_vars::ProfilePlan::read(&profile).unwrap();
        let live = plan.students.iter().find(|(n, _)| n == LIVE).expect(LIVE);
        assert!(matches!(
            live.1,
            kd_core::profile_vars::StudentTeachers::Live(_)
        ));
        assert!(makefile.contains("include $(PROFILE_DIR)/vars.mk"));
        let study = make_var(makefile, "STUDY_MAIN");
        assert_eq!(study[..STUDY_ORDER.len()], STUDY_ORDER);
        // The seed and budget directories: `$(v)-seed$(n)`, `-ep$(LONG_EPOCHS)`.
        assert!(makefile.contains("$(v)-seed$(n)"));
        assert!(makefile.contains("-seed$(n),--seed $(n)"));
        assert!(makefile.contains("-ep$(LONG_EPOCHS),--epochs $(LONG_EPOCHS)"));
        // The views curve's runs and their stores: `-k$(k)` over `logits-k$(k)`.
        assert!(makefile.contains("-k$(k),,logits-k$(k)"));
        assert!(makefile.contains("kd_report::naming"));
    }
}
