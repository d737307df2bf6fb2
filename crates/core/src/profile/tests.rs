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
