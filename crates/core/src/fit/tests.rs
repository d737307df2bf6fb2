//! The loop on a small linear model: bf16 master weights, reads between
//! syncs, NaN stops, evaluation cadence, refused settings, resume, and a
//! feed that trains exactly as inline.

use super::*;
use crate::amp::Precision;
use crate::progress::Silent;
use serde_json::json;
use tch::{Device, Kind, nn, nn::Module};

struct Lin {
    vs: VarStore,
    lin: nn::Linear,
    x: Tensor,
    y: Tensor,
    /// Steps until the loss turns NaN (counting down), if ever.
    nan_at: Option<usize>,
    /// Steps trained on a feed's prepared batch.
    prefetched: usize,
}

impl Lin {
    fn new() -> Lin {
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let lin = nn::linear(vs.root() / "fc", 4, 3, Default::default());
        let x = Tensor::randn([32, 4], (Kind::Float, Device::Cpu));
        let y = x.argmax(1, false);
        Lin {
            vs,
            lin,
            x,
            y: y.remainder(3),
            nan_at: None,
            prefetched: 0,
        }
    }
}

impl Learner for Lin {
    fn var_store(&mut self) -> &mut VarStore {
        &mut self.vs
    }
    fn train_len(&self) -> usize {
        32
    }
    fn train_batch(&mut self, idx: &[usize], _e: usize) -> Result<(Tensor, Vec<(String, Tensor)>)> {
        let i = Tensor::from_slice(&idx.iter().map(|&i| i as i64).collect::<Vec<_>>());
        let logits = self.lin.forward(&self.x.index_select(0, &i));
        let loss = logits.cross_entropy_for_logits(&self.y.index_select(0, &i));
        let loss = match self.nan_at.as_mut() {
            Some(0) => loss * f64::NAN,
            Some(k) => {
                *k -= 1;
                loss
            }
            None => loss,
        };
        Ok((loss.shallow_clone(), vec![("loss".into(), loss)]))
    }
    fn train_prepared(
        &mut self,
        prepared: Prepared,
        idx: &[usize],
        e: usize,
    ) -> Result<(Tensor, Vec<(String, Tensor)>)> {
        let made = prepared.downcast::<Vec<usize>>().expect("LinFeed's batch");
        assert_eq!(&made[..], idx, "a prefetched batch for another step");
        self.prefetched += 1;
        self.train_batch(idx, e)
    }
    fn evaluate(&mut self, e: usize) -> Result<Map<String, Value>> {
        Ok(Map::from_iter([("evaluated_after".to_string(), json!(e))]))
    }
}

/// Prepares a batch as its indices (what [`Lin`] checks it got).
struct LinFeed;

impl Feed for LinFeed {
    fn prepare(&self, idx: &[usize], _e: usize) -> Result<Prepared> {
        Ok(Box::new(idx.to_vec()))
    }
}

#[test]
fn a_feed_trains_exactly_as_inline() {
    let _rng = crate::torch_rng_lock();
    let cfg = FitConfig {
        epochs: 3,
        batch_size: 5,
        lr: 0.05,
        ..Default::default()
    };
    let id = json!({"m": "lin"});
    let t = tempfile::tempdir().unwrap();
    let run = |inline: bool, dir: &str| {
        let mut l = Lin::new();
        let opts = FitOptions {
            prefetch: if inline {
                Prefetch::Never
            } else {
                Prefetch::Always
            },
            ..Default::default()
        };
        let h = fit(
            &mut l,
            Some(&LinFeed),
            &cfg,
            &id,
            &t.path().join(dir),
            &opts,
            &Silent,
        )
        .unwrap();
        (l, h)
    };
    let (a, ha) = run(false, "prefetch");
    let (b, hb) = run(true, "inline");
    // Every step of 3 epochs of 7 batches took the feed's batch.
    assert_eq!((a.prefetched, b.prefetched), (21, 0));
    assert!(
        a.lin.ws.equal(&b.lin.ws) && a.lin.bs.as_ref().unwrap().equal(b.lin.bs.as_ref().unwrap())
    );
    let losses = |h: &[EpochRecord]| h.iter().map(|r| r.train["loss"]).collect::<Vec<_>>();
    assert_eq!(losses(&ha), losses(&hb));
}

#[test]
fn bf16_trains_float32_master_weights() {
    let _rng = crate::torch_rng_lock();
    let cfg = FitConfig {
        epochs: 4,
        batch_size: 8,
        lr: 0.05,
        precision: Precision::Bf16,
        ..Default::default()
    };
    let t = tempfile::tempdir().unwrap();
    let mut a = Lin::new();
    let h = fit(
        &mut a,
        None,
        &cfg,
        &json!({"m": "lin"}),
        t.path(),
        &FitOptions::default(),
        &Silent,
    )
    .unwrap();
    assert!(h[3].train["loss"] < 0.8 * h[0].train["loss"], "{h:?}");
    assert_eq!(a.lin.ws.kind(), Kind::Float);
    assert!(!crate::amp::is_enabled(Device::Cpu));
    // f32 configs serialise as before the field existed (artifact hashes).
    let f32_json = serde_json::to_value(FitConfig::default()).unwrap();
    assert!(f32_json.get("precision").is_none());
    assert_eq!(serde_json::to_value(&cfg).unwrap()["precision"], "bf16");
}

/// `learner` for 2 epochs of 8 steps (32 samples, batches of 4), the
/// figures read every `sync_every` steps.
fn fit_synced(learner: &mut Lin, sync_every: usize) -> Result<Vec<EpochRecord>> {
    let cfg = FitConfig {
        epochs: 2,
        batch_size: 4,
        lr: 0.05,
        ..Default::default()
    };
    let opts = FitOptions {
        sync_every,
        ..Default::default()
    };
    let t = tempfile::tempdir().unwrap();
    fit(
        learner,
        None,
        &cfg,
        &json!({"m": "lin"}),
        t.path(),
        &opts,
        &Silent,
    )
}

#[test]
fn a_step_reads_nothing_from_the_device_between_syncs() {
    let _rng = crate::torch_rng_lock();
    // Read after steps 3, 6 and 8 of each epoch (every 3 steps, and the
    // epoch's last).
    let before = crate::figures::host_reads();
    let h = fit_synced(&mut Lin::new(), 3).unwrap();
    assert_eq!(crate::figures::host_reads() - before, 2 * 3);
    // The epoch's loss is the same figure as with a read every step.
    let h1 = fit_synced(&mut Lin::new(), 1).unwrap();
    assert_eq!(h[1].train, h1[1].train);
}

#[test]
fn a_nan_loss_between_syncs_still_stops_the_run_naming_its_step() {
    let _rng = crate::torch_rng_lock();
    let mut a = Lin::new();
    // The 13th step: epoch 2, step 4 (of 0..8), read at step 5.
    a.nan_at = Some(12);
    let e = fit_synced(&mut a, 3).unwrap_err().to_string();
    assert_eq!(
        e,
        "loss became NaN at epoch 2 step 4: lower the learning rate"
    );
}

#[test]
fn eval_every_skips_epochs_but_never_the_last() {
    let _rng = crate::torch_rng_lock();
    let cfg = FitConfig {
        epochs: 5,
        batch_size: 8,
        lr: 0.05,
        eval_every: 2,
        ..Default::default()
    };
    let t = tempfile::tempdir().unwrap();
    let mut a = Lin::new();
    let h = fit(
        &mut a,
        None,
        &cfg,
        &json!({"m": "lin"}),
        t.path(),
        &FitOptions::default(),
        &Silent,
    )
    .unwrap();
    let evaluated: Vec<usize> = h
        .iter()
        .filter(|r| !r.eval.is_empty())
        .map(|r| r.epoch)
        .collect();
    assert_eq!(evaluated, vec![2, 4, 5]);
    // The default serialises as before the field existed (artifact hashes).
    assert!(
        serde_json::to_value(FitConfig::default())
            .unwrap()
            .get("eval_every")
            .is_none()
    );
}

#[test]
fn nonsense_settings_are_refused_by_name() {
    let ok = FitConfig::default();
    ok.validate().unwrap();
    let cases: Vec<(FitConfig, &str)> = vec![
        (
            FitConfig {
                lr: -0.01,
                ..ok.clone()
            },
            "lr = -0.01",
        ),
        (
            FitConfig {
                lr: 0.0,
                ..ok.clone()
            },
            "lr = 0",
        ),
        (
            FitConfig {
                lr: f64::NAN,
                ..ok.clone()
            },
            "lr = NaN",
        ),
        (
            FitConfig {
                lr: f64::INFINITY,
                ..ok.clone()
            },
            "lr = inf",
        ),
        (
            FitConfig {
                epochs: 0,
                ..ok.clone()
            },
            "epochs = 0",
        ),
        (
            FitConfig {
                batch_size: 0,
                ..ok.clone()
            },
            "batch_size = 0",
        ),
        (
            FitConfig {
                eval_every: 0,
                ..ok.clone()
            },
            "eval_every = 0",
        ),
        (
            FitConfig {
                min_lr: 1.0,
                ..ok.clone()
            },
            "min_lr = 1",
        ),
        (
            FitConfig {
                warmup_epochs: -1.0,
                ..ok.clone()
            },
            "warmup_epochs = -1",
        ),
    ];
    for (cfg, want) in cases {
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains(want), "{e} (wanted {want})");
    }
}

#[test]
fn resume_equals_uninterrupted() {
    let _rng = crate::torch_rng_lock();
    let cfg = FitConfig {
        epochs: 4,
        batch_size: 8,
        lr: 0.05,
        ..Default::default()
    };
    let id = json!({"m": "lin"});
    let t = tempfile::tempdir().unwrap();
    let mut a = Lin::new();
    let ha = fit(
        &mut a,
        None,
        &cfg,
        &id,
        &t.path().join("a"),
        &FitOptions::default(),
        &Silent,
    )
    .unwrap();
    assert_eq!(ha.len(), 4);
    assert!(ha[3].train["loss"] < ha[0].train["loss"]);

    let out = t.path().join("b");
    let mut b = Lin::new();
    let stop = FitOptions {
        stop_after: Some(1),
        ..Default::default()
    };
    assert_eq!(
        fit(&mut b, None, &cfg, &id, &out, &stop, &Silent)
            .unwrap()
            .len(),
        1
    );
    let mut b2 = Lin::new();
    let hb = fit(
        &mut b2,
        None,
        &cfg,
        &id,
        &out,
        &FitOptions::default(),
        &Silent,
    )
    .unwrap();
    assert_eq!(hb.len(), 4);
    assert!(a.lin.ws.equal(&b2.lin.ws), "resumed weights differ");
    assert_eq!(ha[3].train, hb[3].train);

    let mut c = Lin::new();
    let e = fit(
        &mut c,
        None,
        &cfg,
        &json!({"m": "other"}),
        &out,
        &FitOptions::default(),
        &Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("another model"), "{e}");
}

#[test]
fn prefetch_by_default_on_a_gpu_only() {
    use tch::Device;
    assert!(!Prefetch::Auto.applies(Device::Cpu));
    assert!(Prefetch::Auto.applies(Device::Cuda(0)));
    assert_eq!(FitOptions::default().prefetch, Prefetch::Auto);
    for d in [Device::Cpu, Device::Cuda(1)] {
        assert!(Prefetch::Always.applies(d));
        assert!(!Prefetch::Never.applies(d));
    }
}
