use super::*;

fn profile(text: &str) -> (tempfile::TempDir, Profile) {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("p.toml");
    std::fs::write(&p, text).unwrap();
    let prof = Profile::load(&p).unwrap();
    (d, prof)
}

const DEMO: &str = r#"
[data]
format = "cifar"
src = "data/raw/my#cifar"
[teachers.cnn]
arch = "cnn"
[teachers.involution]
arch = "involution"
[teachers.involution-crossfit]
arch = "involution"
folds = 4
[teachers.resnet]
torchscript = "models/resnet18.pt"
mean = [0.5, 0.5, 0.5]
std = [0.25, 0.25, 0.25]
[students.none]
[students.cnn-stems]
[students.ensemble]
[students.ensemble-live]
[students.pair]
teachers = ["cnn", "resnet"]
[students.plain]
teachers = []
[students.res-live]
teachers = ["resnet"]
live = true
[students.given]
teachers = "cache:/elsewhere/logits"
"#;

#[test]
fn teachers_and_students_follow_the_sections_and_the_names() {
    let (_d, prof) = profile(DEMO);
    let plan = ProfilePlan::read(&prof).unwrap();
    assert_eq!(plan.store_teachers(), ["cnn", "involution", "resnet"]);
    let t = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let by: std::collections::BTreeMap<_, _> = plan.students.iter().cloned().collect();
    assert_eq!(by["none"], StudentTeachers::None);
    assert_eq!(by["cnn-stems"], StudentTeachers::Store(t(&["cnn"])));
    assert_eq!(
        by["ensemble"],
        StudentTeachers::Store(t(&["cnn", "involution", "resnet"]))
    );
    assert_eq!(
        by["ensemble-live"],
        StudentTeachers::Live(t(&["cnn", "involution", "resnet"]))
    );
    assert_eq!(by["pair"], StudentTeachers::Store(t(&["cnn", "resnet"])));
    assert_eq!(by["plain"], StudentTeachers::None);
    assert_eq!(by["res-live"], StudentTeachers::Live(t(&["resnet"])));
    assert_eq!(
        by["given"],
        StudentTeachers::Source("cache:/elsewhere/logits".into())
    );
    let vars = plan.make_vars();
    for line in [
        "PROFILE_TEACHERS := cnn involution involution-crossfit resnet",
        "STORE_TEACHERS := cnn involution resnet",
        "IMPORTED_TEACHERS := resnet",
        "TORCHSCRIPT_resnet := models/resnet18.pt",
        "IMPORT_FLAGS_resnet := --mean 0.5,0.5,0.5 --std 0.25,0.25,0.25",
        "LIVE_STUDENTS := ensemble-live res-live",
        "SOURCE_none = none",
        "SOURCE_cnn-stems = cache:$(RUN)/logits\\#cnn",
        "SOURCE_ensemble = cache:$(RUN)/logits",
        "DEPS_ensemble = $(RUN)/logits/manifest.json",
        "SOURCE_pair = cache:$(RUN)/logits\\#cnn,resnet",
        "SOURCE_res-live = live:$(RUN)/teachers/resnet",
        "DEPS_res-live = $(RUN)/teachers/resnet/manifest.json",
        "SOURCE_given = cache:/elsewhere/logits",
        "DATA_SRC := data/raw/my\\#cifar",
    ] {
        assert!(vars.lines().any(|l| l == line), "{line}\n{vars}");
    }
}

#[test]
fn a_student_with_no_teacher_to_learn_from_is_named_in_the_error() {
    for (body, says) in [
        ("[students.mystery]\n", "[students.mystery]: which teachers"),
        ("[students.x]\nteachers = [\"vgg\"]\n", "no [teachers.vgg]"),
        ("[students.x]\nteachers = 3\n", "teachers: expected"),
        (
            "[students.x]\nteachers = []\nlive = true\n",
            "live = true with no teachers",
        ),
        ("[students.\"a b\"]\n", "[students.a b]: a name of letters"),
    ] {
        let (_d, prof) = profile(&format!("[teachers.cnn]\narch = \"cnn\"\n{body}"));
        let e = ProfilePlan::read(&prof).unwrap_err().to_string();
        assert!(e.contains(says) && e.contains("p.toml"), "{e}");
    }
}

#[test]
fn a_section_file_changes_only_with_its_section() {
    let (d, prof) = profile(DEMO);
    let out = d.path().join("mk");
    let first = write_make_files(&prof, &out).unwrap();
    assert!(
        first.contains(&out.join("students/pair.toml")) && first.contains(&out.join(VARS_FILE))
    );
    // The same profile again, with a comment and one student changed.
    let edited = DEMO.replace(
        "[students.plain]\n",
        "# a comment\n[students.plain]\nepochs = 3\n",
    );
    std::fs::write(&prof.path, edited).unwrap();
    let prof = Profile::load(&prof.path).unwrap();
    let second = write_make_files(&prof, &out).unwrap();
    assert_eq!(second, [out.join("students/plain.toml")]);
    assert_eq!(
        std::fs::read_to_string(out.join("students/plain.toml")).unwrap(),
        "epochs = 3\nteachers = []\n"
    );
    assert!(write_make_files(&prof, &out).unwrap().is_empty());
}
