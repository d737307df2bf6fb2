//! `study.md`: the tables, the verdicts and the diagnostics, in markdown.

use super::{
    CHART, MIN_GAIN, SizeResult, Study, VariantResult, cell, choosable, is_taught, verdict,
};
use crate::naming;
use crate::numbers::pct;
use std::fmt::Write as _;

fn opt_pct(x: Option<f64>) -> String {
    x.map_or("-".into(), pct)
}

/// study.md; `cmd` is the command line that made it.
pub fn markdown(study: &Study, cmd: &str) -> String {
    let mut md = String::new();
    writeln!(md, "# Data-efficiency study\n\nMade by `{cmd}`.\n").ok();
    writeln!(
        md,
        "At each size, a stratified training subset and a held-out `val` split from the rest of the training data; test is the full test split. \
         Every variant is trained with the same step budget at a size; cells are test accuracy (%) of the averaged heads, mean ± sample sd (seeds). \
         Settings are chosen on `val`, never on test.\n"
    )
    .ok();
    let sizes = &study.sizes;
    let mut names: Vec<String> = vec![];
    for s in sizes {
        for v in &s.variants {
            if !names.contains(&v.variant) {
                names.push(v.variant.clone());
            }
        }
    }
    names.sort_by(|a, b| {
        naming::study_rank(a)
            .cmp(&naming::study_rank(b))
            .then(a.cmp(b))
    });
    let header = |md: &mut String, what: &str| {
        write!(md, "| {what} |").ok();
        for s in sizes {
            write!(md, " {} |", s.train).ok();
        }
        writeln!(md).ok();
        writeln!(md, "|---|{}", "---|".repeat(sizes.len())).ok();
    };
    let table = |md: &mut String, title: &str, of: fn(&VariantResult) -> &[f64]| {
        writeln!(md, "## {title}\n").ok();
        header(md, "variant \\ train images");
        for n in &names {
            write!(md, "| {n} |").ok();
            for s in sizes {
                let v = s.variants.iter().find(|v| &v.variant == n);
                write!(md, " {} |", v.map_or("-".into(), |v| cell(of(v)))).ok();
            }
            writeln!(md).ok();
        }
    };
    table(&mut md, "Test accuracy (%) by training-set size", |v| {
        &v.test
    });
    writeln!(
        md,
        "\n![test accuracy against training-set size]({CHART})\n"
    )
    .ok();
    table(
        &mut md,
        "Val accuracy (%): what the settings are chosen on",
        |v| &v.val,
    );
    writeln!(
        md,
        "\n## Verdict per size\n\nBest single-teacher student and best ensemble variant by mean val accuracy; their test accuracies compared. \
         Bar: the ensemble at least {:.1} point above, by more than two seed sd's.\n\n\
         \"Picked from\" counts the teacher-taught variants run at that size against those run at any size: \
         a size that ran fewer has a verdict over fewer settings.\n\n\
         | train images | picked from | best single (val) | its test (%) | best ensemble (val) | its test (%) | gain (pts) | bar met |\n|---|---|---|---|---|---|---|---|",
        100.0 * MIN_GAIN
    )
    .ok();
    let all_taught = sizes
        .iter()
        .flat_map(|s| choosable(s, is_taught).map(|v| v.variant.as_str()))
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    for s in sizes {
        let picked_from = format!("{} of {all_taught}", choosable(s, is_taught).count());
        match verdict(s) {
            Some(v) => writeln!(
                md,
                "| {} | {picked_from} | {} | {} | {} | {} | {:+.2} | {} |",
                s.train,
                v.single.variant,
                cell(&v.single.test),
                v.ensemble.variant,
                cell(&v.ensemble.test),
                100.0 * v.gain,
                v.word()
            ),
            None => writeln!(
                md,
                "| {} | {picked_from} | - | - | - | - | - | not enough runs |",
                s.train
            ),
        }
        .ok();
    }
    writeln!(
        md,
        "\n## Teachers\n\n| train images | teacher | arch | epochs | test (%) | held-out train (%) |\n|---|---|---|---|---|---|"
    )
    .ok();
    for s in sizes {
        for t in &s.teachers {
            writeln!(
                md,
                "| {} | {} | {}{} | {} | {} | {} |",
                s.train,
                t.name,
                t.arch,
                t.folds.map_or(String::new(), |k| format!(", {k} folds")),
                t.epochs.map_or("-".into(), |e| e.to_string()),
                pct(t.test_accuracy),
                opt_pct(t.held_out_accuracy)
            )
            .ok();
        }
    }
    writeln!(
        md,
        "\nA cross-fitted teacher's test accuracy is that of its fold models' averaged logits; its held-out accuracy is each training image's own fold model on it (what its stored view-0 logits score).\n\n\
         ## Teacher diversity on the stored training views\n\n\
         | train images | store | teachers | agreement (%) | KL a‖b / b‖a (nats) | only a right / only b right (%) | averaged (%) | each on its training views (%) |\n|---|---|---|---|---|---|---|---|"
    )
    .ok();
    for s in sizes {
        for d in &s.diversity {
            let each: Vec<String> = d
                .train_view_accuracy
                .iter()
                .map(|(n, a)| format!("{n} {}", opt_pct(*a)))
                .collect();
            writeln!(
                md,
                "| {} | {} | {} vs {} | {} | {:.3} / {:.3} | {} / {} | {} | {} |",
                s.train,
                d.store,
                d.a,
                d.b,
                pct(d.agreement),
                d.kl_ab,
                d.kl_ba,
                opt_pct(d.only_a_right),
                opt_pct(d.only_b_right),
                opt_pct(d.averaged_accuracy),
                each.join(", ")
            )
            .ok();
        }
    }
    writeln!(
        md,
        "\n## Heads\n\nTest accuracy (%) of each head alone at the last epoch, mean over seeds (`avg` is the student's prediction).\n\n| train images | variant | heads |\n|---|---|---|"
    )
    .ok();
    for s in sizes {
        for v in &s.variants {
            let h: Vec<String> = v
                .heads
                .iter()
                .map(|(k, x)| format!("{k} {}", pct(*x)))
                .collect();
            writeln!(md, "| {} | {} | {} |", s.train, v.variant, h.join(", ")).ok();
        }
    }
    heads_and_teachers(&mut md, sizes);
    md
}

/// Whether each distillation head learned its own teacher: test agreement
/// with every teacher and the share of its mistakes repeated. Only when some
/// student of the study was evaluated (`kd student eval`).
pub(super) fn heads_and_teachers(md: &mut String, sizes: &[SizeResult]) {
    if sizes
        .iter()
        .all(|s| s.variants.iter().all(|v| v.agreement.is_empty()))
    {
        return;
    }
    writeln!(
        md,
        "\n## Heads against the teachers\n\nOn test, each head's top-1 agreement (%) with each teacher (and, for evaluations with two or more teachers, with their averaged prediction, `averaged`) and, in brackets, the share (%) of that teacher's mistakes it repeats (same wrong class); mean over the seeds evaluated (`kd student eval`, `make study-eval`). A head that learned its own teacher agrees with it more than with the other and repeats more of its mistakes; the no-teacher rows are the control.\n"
    )
    .ok();
    for s in sizes {
        for (pair, a) in &s.teacher_test_agreement {
            writeln!(
                md,
                "- {} images: teachers {pair} agree on {}% of test.",
                s.train,
                pct(*a)
            )
            .ok();
        }
    }
    writeln!(
        md,
        "\n| train images | variant (seeds) | head | against each teacher |\n|---|---|---|---|"
    )
    .ok();
    for s in sizes {
        let mut vs: Vec<&VariantResult> = s
            .variants
            .iter()
            .filter(|v| !v.agreement.is_empty())
            .collect();
        vs.sort_by(|a, b| {
            naming::study_rank(&a.variant)
                .cmp(&naming::study_rank(&b.variant))
                .then(a.variant.cmp(&b.variant))
        });
        for v in vs {
            let mut heads: Vec<&String> = v.agreement.keys().collect();
            // avg, cls, then the distillation heads.
            heads.sort_by_key(|h| (!h.starts_with("avg"), !h.starts_with("cls"), h.to_string()));
            for h in heads {
                let cells: Vec<String> = v.agreement[h]
                    .iter()
                    .map(|(t, a)| {
                        let r = v
                            .repeats_errors
                            .get(h)
                            .and_then(|r| r.get(t))
                            .map_or("-".into(), |r| pct(*r));
                        format!("{t} {} ({r})", pct(*a))
                    })
                    .collect();
                writeln!(
                    md,
                    "| {} | {} ({}) | {h} | {} |",
                    s.train,
                    v.variant,
                    v.evaluated,
                    cells.join(", ")
                )
                .ok();
            }
        }
    }
}
