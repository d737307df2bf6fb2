//! The one line a person scans after each epoch, and the running means on
//! the progress bar.

use super::EpochRecord;
use serde_json::Value;
use std::collections::BTreeMap;

/// The line a person scans after each epoch: epoch k/n, the loss and its
/// parts to 4 digits, test accuracy of the prediction and of each head in %,
/// images/s, the time the stage has left. Full precision is in
/// `metrics.json` and the debug log.
pub fn epoch_summary(rec: &EpochRecord, epochs: usize, secs_left: f64) -> String {
    let mut s = format!("epoch {}/{epochs}", rec.epoch);
    let loss = rec.train.get("loss");
    let parts: Vec<String> = rec
        .train
        .iter()
        .filter(|(k, _)| k.as_str() != "loss")
        .map(|(k, v)| format!("{k} {}", four_digits(*v)))
        .collect();
    match (loss, parts.is_empty()) {
        (Some(l), true) => s += &format!("  loss {}", four_digits(*l)),
        (Some(l), false) => s += &format!("  loss {} ({})", four_digits(*l), parts.join(", ")),
        (None, _) => s += &format!("  {}", parts.join(", ")),
    }
    let pct = |k: &str| rec.eval.get(k).and_then(Value::as_f64).map(|v| 100.0 * v);
    // The model's prediction (the student's averaged heads, a teacher's
    // logits), then each head of the student.
    if let Some(main) = pct("test_acc_avg").or_else(|| pct("test_accuracy")) {
        s += &format!("  test {main:.2}%");
        let heads: Vec<String> = rec
            .eval
            .iter()
            .filter_map(|(k, v)| {
                let head = k.strip_prefix("test_acc_").filter(|h| *h != "avg")?;
                Some(format!("{head} {:.2}", 100.0 * v.as_f64()?))
            })
            .collect();
        if !heads.is_empty() {
            s += &format!(" ({})", heads.join(", "));
        }
    }
    s += &format!("  {:.0} img/s", rec.images_per_sec);
    if rec.epoch < epochs {
        s += &format!("  {} left", duration(secs_left));
    }
    s
}

/// Four significant digits, without a trailing exponent for ordinary losses.
fn four_digits(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let decimals = (3 - x.abs().log10().floor() as i32).clamp(0, 8) as usize;
    format!("{x:.decimals$}")
}

/// `1h 02m`, `4m 12s`, `37s`.
fn duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

pub(super) fn running_means(sums: &BTreeMap<String, f64>, n: usize) -> String {
    sums.iter()
        .map(|(k, v)| format!("{k} {:.4}", v / n.max(1) as f64))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, json};

    #[test]
    fn epoch_summary_is_short_and_rounded() {
        let mut train = BTreeMap::new();
        train.insert("loss".to_string(), 0.648_812_345);
        train.insert("ce".to_string(), 1.006_912_3);
        train.insert("kd_cnn".to_string(), 0.293_312_3);
        let mut eval = Map::new();
        eval.insert("test_acc_avg".into(), json!(0.812_34));
        eval.insert("test_acc_cls".into(), json!(0.8091));
        eval.insert("test_acc_dist_cnn".into(), json!(0.805));
        eval.insert("val_acc_avg".into(), json!(0.83));
        let rec = EpochRecord {
            epoch: 3,
            lr: 1e-3,
            train,
            eval,
            train_seconds: 2.0,
            images_per_sec: 663.4,
            allreduce_seconds: None,
        };
        assert_eq!(
            epoch_summary(&rec, 10, 252.4),
            "epoch 3/10  loss 0.6488 (ce 1.007, kd_cnn 0.2933)  test 81.23% (cls 80.91, dist_cnn 80.50)  663 img/s  4m 12s left"
        );
        // A teacher's record, the last epoch (nothing left to say).
        let mut train = BTreeMap::new();
        train.insert("loss".to_string(), 12.345_67);
        let mut eval = Map::new();
        eval.insert("test_accuracy".into(), json!(0.9));
        eval.insert("test_loss".into(), json!(0.31));
        let rec = EpochRecord {
            epoch: 10,
            train,
            eval,
            ..rec
        };
        assert_eq!(
            epoch_summary(&rec, 10, 0.0),
            "epoch 10/10  loss 12.35  test 90.00%  663 img/s"
        );
        assert_eq!(duration(3725.0), "1h 02m");
        assert_eq!(duration(37.4), "37s");
        assert_eq!(four_digits(0.000_123_456), "0.0001235");
    }
}
