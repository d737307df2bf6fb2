//! The plan as a table for people.

use super::*;

pub(super) fn duration(s: f64) -> String {
    let s = s.round() as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

impl PlanReport {
    pub(super) fn table(&self) -> String {
        let i = &self.images;
        let mut s = format!(
            "plan of {}: {} classes, {}x{}x{} images, counted from {}\n",
            self.profile, i.classes, i.chw[0], i.chw[1], i.chw[2], i.source
        );
        if let (Some(rt), Some(rs)) = (i.raw_train, i.raw_test) {
            s += &format!(
                "  (the source holds {rt} train / {rs} test images before limits and the val carve)\n"
            );
        }
        let head = format!(
            "{:<24} {:<30} {:>19} {:>14} {:>10} {:>12} {:>12}",
            "stage", "what", "images train/val/test", "steps", "store", "peak mem", "time"
        );
        s += &head;
        s.push('\n');
        let mark = |measured: bool| if measured { "m" } else { "c" };
        for st in &self.stages {
            let images = format!("{}/{}/{}", st.train, st.val, st.test);
            let steps = if st.epochs > 0 && st.batches_per_epoch > 0 {
                format!("{}x{}={}", st.epochs, st.batches_per_epoch, st.steps)
            } else if st.steps > 0 {
                st.steps.to_string()
            } else {
                "-".into()
            };
            let store = st.store_bytes.map_or("-".into(), kd_report::numbers::bytes);
            let peak = st.peak_bytes.map_or("-".into(), |b| {
                format!(
                    "{} {}",
                    kd_report::numbers::bytes(b),
                    mark(st.peak_measured)
                )
            });
            let time = st.seconds.map_or("-".into(), |t| {
                format!("{} {}", duration(t), mark(st.time_measured))
            });
            let mut what = st.what.clone();
            if what.chars().count() > 30 {
                what = format!("{}…", what.chars().take(29).collect::<String>());
            }
            s += &format!(
                "{:<24} {:<30} {:>19} {:>14} {:>10} {:>12} {:>12}\n",
                st.stage, what, images, steps, store, peak, time
            );
        }
        s += &format!(
            "{:<24} {:<30} {:>19} {:>14} {:>10} {:>12} {:>12}\n",
            "total",
            "",
            "",
            "",
            kd_report::numbers::bytes(self.total_store_bytes),
            kd_report::numbers::bytes(self.max_peak_bytes),
            duration(self.total_seconds)
        );
        let dev = self
            .stages
            .iter()
            .find(|s| s.stage != "data")
            .map_or("cpu".to_string(), |s| s.device.clone());
        s += &if self.measured {
            format!(
                "m: measured. Times are extrapolated from the fastest of {} or more timed steps (after one warm-up) of \
each stage's model on random input of the dataset's shape on {dev}, times the steps, plus evaluation passes; peak memory is the \
measuring process's high-water mark (VmHWM) plus the dataset held in memory (at most the data cache, KD_DATA_CACHE). c: computed (data import from \
an assumed {:.0} MB/s; on CUDA, 16 bytes per parameter plus the dataset, activations not counted). Total peak \
is the largest stage's.",
                self.timed_steps,
                IMPORT_BYTES_PER_SEC / 1e6
            )
        } else {
            "--no-measure: no model built, nothing timed; c: computed.".to_string()
        };
        s.trim_end().to_string()
    }
}
