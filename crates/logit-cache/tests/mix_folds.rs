//! Mixed views (mixup / cutmix) and cross-fitted teachers in the store: the
//! teachers see exactly the pixels the student rebuilds from the stored
//! parameters, each cross-fitted sample is answered by the fold model that
//! never saw it, and stores without either keep their old metadata.

use kd_core::RunOptions;
use kd_core::manifest::manifest_hash;
use kd_core::profile::Profile;
use kd_core::{Folds, MixKind, MixMode, MixParams, Rng, Silent, Teacher, ViewBatch, ViewSpec};
use kd_data::Dataset;
use kd_data::augment::{batch_tensor, batch_tensor_mixed, lut};
use kd_logit_cache::testing::{ConvTeacher, synthetic_dataset, teacher_artifact};
use kd_logit_cache::{
    BuildOptions, CacheConfig, Dtype, FoldsMeta, LogitStore, StoreMeta, TeacherInput, build,
    inspect, verify,
};
use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use tch::{Device, Kind, Tensor};

const N: usize = 40;
const CLASSES: usize = 4;
const VIEWS: usize = 4;
const CHW: [usize; 3] = [1, 8, 8];

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    dataset: PathBuf,
    hash: String,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let dataset = synthetic_dataset(&root.join("data"), N, CLASSES, CHW, 5);
    let hash = manifest_hash(&dataset).unwrap();
    Fixture {
        _tmp: tmp,
        root,
        dataset,
        hash,
    }
}

fn cfg(mix: MixMode) -> CacheConfig {
    CacheConfig {
        views: VIEWS,
        dtype: Dtype::F32,
        seed: 11,
        shard_samples: 16,
        chunk_samples: 8,
        batch_size: 20,
        device: "cpu".into(),
        mix,
        mix_prob: 0.6,
        mix_alpha: 1.0,
        ..CacheConfig::default()
    }
}

fn conv(f: &Fixture, name: &str, seed: u64) -> ConvTeacher {
    ConvTeacher::new(name, seed, 1, 6, CLASSES, &f.hash, Device::Cpu)
}

fn input(f: &Fixture, teacher: Box<dyn Teacher>) -> TeacherInput {
    let name = teacher.name().to_string();
    TeacherInput {
        dir: teacher_artifact(&f.root.join("teachers").join(&name), &name, 0, &f.hash),
        teacher,
    }
}

fn all_pairs() -> Vec<(usize, usize)> {
    (0..N)
        .flat_map(|i| (0..VIEWS).map(move |v| (i, v)))
        .collect()
}

fn floats(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.to_kind(Kind::Float).contiguous().view(-1)).unwrap()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The batches (train indices, images) the cache writer fed a teacher.
type Seen = Rc<RefCell<Vec<(Vec<usize>, Vec<f32>)>>>;

/// A conv teacher that records what the writer feeds it.
struct Recording {
    inner: ConvTeacher,
    seen: Seen,
}

impl Teacher for Recording {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn arch(&self) -> &str {
        self.inner.arch()
    }
    fn num_classes(&self) -> usize {
        self.inner.num_classes()
    }
    fn checkpoint_hash(&self) -> &str {
        self.inner.checkpoint_hash()
    }
    fn dataset_hash(&self) -> &str {
        self.inner.dataset_hash()
    }
    fn device(&self) -> Device {
        self.inner.device()
    }
    fn logits(&self, images: &Tensor) -> Tensor {
        self.inner.logits(images)
    }
    fn logits_for(&self, samples: &[usize], images: &Tensor) -> Tensor {
        self.seen
            .borrow_mut()
            .push((samples.to_vec(), floats(images)));
        self.inner.logits(images)
    }
}

/// A cross-fitted teacher: two fixed linear models on the flattened image,
/// sample `i` answered by model `assignment[i]`.
struct CrossFit {
    dataset_hash: String,
    folds: Folds,
    w: [Tensor; 2],
    b: [Tensor; 2],
}

impl CrossFit {
    fn new(dataset_hash: &str, assignment: Vec<u8>, hashes: [&str; 2]) -> Self {
        let d = CHW.iter().product::<usize>() as i64;
        let lin = |tag: u64, shape: &[i64]| {
            let mut r = Rng::keyed(77, &[tag]);
            let v: Vec<f32> = (0..shape.iter().product::<i64>())
                .map(|_| (r.unit() * 2.0 - 1.0) as f32 * 0.3)
                .collect();
            Tensor::from_slice(&v).view(shape)
        };
        CrossFit {
            dataset_hash: dataset_hash.into(),
            folds: Folds {
                assignment,
                checkpoint_hashes: hashes.map(String::from).to_vec(),
            },
            w: [lin(1, &[d, CLASSES as i64]), lin(2, &[d, CLASSES as i64])],
            b: [lin(3, &[CLASSES as i64]), lin(4, &[CLASSES as i64])],
        }
    }

    fn model(&self, f: usize, images: &Tensor) -> Tensor {
        images
            .to_kind(Kind::Float)
            .flatten(1, -1)
            .matmul(&self.w[f])
            + &self.b[f]
    }
}

impl Teacher for CrossFit {
    fn name(&self) -> &str {
        "xfit"
    }
    fn arch(&self) -> &str {
        "test-linear/2-fold"
    }
    fn num_classes(&self) -> usize {
        CLASSES
    }
    fn checkpoint_hash(&self) -> &str {
        "xfit-ensemble"
    }
    fn dataset_hash(&self) -> &str {
        &self.dataset_hash
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn logits(&self, images: &Tensor) -> Tensor {
        (self.model(0, images) + self.model(1, images)) / 2.0
    }
    fn logits_for(&self, samples: &[usize], images: &Tensor) -> Tensor {
        let one: Vec<bool> = samples.iter().map(|&s| self.folds.of(s) == 1).collect();
        let mask = Tensor::from_slice(&one).view([-1, 1]);
        self.model(1, images)
            .where_self(&mask, &self.model(0, images))
    }
    fn folds(&self) -> Option<&Folds> {
        Some(&self.folds)
    }
}

fn assignment() -> Vec<u8> {
    (0..N).map(|i| (i * 7 % 3 == 0) as u8).collect()
}

fn root_attrs(out: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(out.join("logits.zarr/zarr.json")).unwrap();
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["attributes"].clone()
}

#[test]
fn mixed_views_are_stored_exactly_and_rebuilt_bit_for_bit() {
    let f = fixture();
    let c = cfg(MixMode::MixupCutmix);
    let seen: Seen = Rc::default();
    let ts = vec![
        input(
            &f,
            Box::new(Recording {
                inner: conv(&f, "cnn", 1),
                seen: seen.clone(),
            }),
        ),
        input(&f, Box::new(conv(&f, "inv", 2))),
    ];
    let out = f.root.join("mixed");
    build(
        &f.dataset,
        &ts,
        &out,
        &c,
        &BuildOptions::default(),
        &RunOptions::default(),
    )
    .unwrap();
    let s = LogitStore::open(&out).unwrap();
    assert_eq!(s.mix_spec(), Some(c.mix_spec()));
    let pairs = all_pairs();
    let vb = s.view_batch(&pairs).unwrap();
    let ds = Dataset::open(&f.dataset).unwrap();
    let train = ds.split("train").unwrap();
    let hw = [CHW[1], CHW[2]];
    assert_eq!(
        vb,
        ViewBatch::draw(&c.view_spec(), &c.mix_spec(), 11, N, hw, &pairs)
    );
    for (&(i, v), m) in pairs.iter().zip(&vb.mixes) {
        assert_eq!(Some(*m), s.mix_params(i, v));
        if v == 0 {
            assert_eq!(*m, MixParams::NONE, "view 0 of sample {i} is mixed");
        }
        if m.is_mixed() {
            assert!(m.partner as usize != i && (m.partner as usize) < N);
        }
    }
    let count = |k: MixKind| vb.mixes.iter().filter(|m| m.kind == k).count();
    let (mixup, cutmix) = (count(MixKind::Mixup), count(MixKind::Cutmix));
    // Expected 0.6 * 3/4 of 160 views = 72, half of each kind.
    assert!(
        (50..95).contains(&(mixup + cutmix)) && mixup > 15 && cutmix > 15,
        "{mixup} {cutmix}"
    );

    // The writer's teacher input, batch by batch, is what the reader-side
    // call rebuilds from the stored parameters: bit for bit.
    let seen = seen.borrow();
    let idx: Vec<usize> = pairs.iter().map(|p| p.0).collect();
    let rebuilt = batch_tensor_mixed(
        train,
        &idx,
        &vb.views,
        &vb.partner_views,
        &vb.mixes,
        &s.view_spec(),
        &lut(&ds.mean, &ds.std),
        Device::Cpu,
    )
    .unwrap();
    let rebuilt = floats(&rebuilt);
    let fed_idx: Vec<usize> = seen.iter().flat_map(|(i, _)| i.clone()).collect();
    let fed: Vec<f32> = seen.iter().flat_map(|(_, x)| x.clone()).collect();
    assert_eq!(
        fed_idx, idx,
        "logits_for gets the own samples' train indices"
    );
    assert_eq!(bits(&fed), bits(&rebuilt));
    // Unmixed views are the plain crops; mixed ones differ from them (all
    // but the few whose box pastes padding onto padding, or lambda 1).
    let plain = floats(
        &batch_tensor(
            train,
            &idx,
            &vb.views,
            &s.view_spec(),
            &lut(&ds.mean, &ds.std),
            Device::Cpu,
        )
        .unwrap(),
    );
    let px = CHW.iter().product::<usize>();
    let mut changed = 0;
    for (r, m) in vb.mixes.iter().enumerate() {
        let same = bits(&plain[r * px..(r + 1) * px]) == bits(&rebuilt[r * px..(r + 1) * px]);
        assert!(same || m.is_mixed(), "row {r}");
        changed += (!same) as usize;
    }
    assert!(
        changed * 10 >= (mixup + cutmix) * 8,
        "{changed} of {} mixed views changed",
        mixup + cutmix
    );

    // The stored logits are the teacher's on those mixed images, in the
    // writer's batches (float32 store: bit for bit).
    let stored = s.logits("cnn", &pairs).unwrap();
    let cnn = conv(&f, "cnn", 1);
    let mut at = 0;
    let mut want = vec![];
    for (i, _) in seen.iter() {
        let n = i.len();
        let x = Tensor::from_slice(&rebuilt[at * px..(at + n) * px]).view([n as i64, 1, 8, 8]);
        want.extend(floats(&cnn.logits(&x)));
        at += n;
    }
    assert_eq!(bits(&stored), bits(&want));

    // Without mixing: same crops, no views/mix, no `mix` in the attributes.
    let plain_out = f.root.join("plain");
    let ts = vec![input(&f, Box::new(conv(&f, "cnn", 1)))];
    build(
        &f.dataset,
        &ts,
        &plain_out,
        &cfg(MixMode::None),
        &BuildOptions::default(),
        &RunOptions::default(),
    )
    .unwrap();
    let p = LogitStore::open(&plain_out).unwrap();
    assert_eq!((p.mix_spec(), p.mix_params(3, 2)), (None, None));
    let pb = p.view_batch(&pairs).unwrap();
    assert_eq!(pb.views, vb.views, "mixing moved a crop");
    assert!(pb.mixes.iter().all(|m| *m == MixParams::NONE));
    assert!(!plain_out.join("logits.zarr/views/mix").exists());
    assert!(out.join("logits.zarr/views/mix/zarr.json").is_file());
    assert!(root_attrs(&plain_out).get("mix").is_none());
    assert_eq!(
        root_attrs(&out)["mix"],
        serde_json::json!({"mode": "mixup-cutmix", "prob": 0.6, "alpha": 1.0})
    );
    assert!(p.view_batch(&[(N, 0)]).is_err());
}

#[test]
fn stores_without_mixing_or_folds_keep_their_identity_and_attributes() {
    // The identity (store key, manifest config) of a plain config is what
    // it was before mixing existed, whatever mix_prob and mix_alpha say.
    let plain = CacheConfig {
        mix_prob: 0.9,
        mix_alpha: 0.2,
        ..CacheConfig::default()
    };
    let want = serde_json::json!({
        "views": 8, "dtype": "f16", "top_k": null, "seed": 0,
        "view_spec": {"pad": 2, "flip": true},
        "shard_samples": 1024, "chunk_samples": 128, "zstd_level": 3,
    });
    assert_eq!(plain.identity(), want);
    assert_eq!(CacheConfig::default().identity(), want);
    let mixed = CacheConfig {
        mix: MixMode::Cutmix,
        ..plain
    };
    assert_eq!(
        mixed.identity()["mix"],
        serde_json::json!({"mode": "cutmix", "prob": 0.9, "alpha": 0.2})
    );

    // A plain store's attributes have neither `mix` nor teachers' `folds`,
    // and attributes written before either existed still read.
    let f = fixture();
    let out = f.root.join("plain");
    let ts = vec![input(&f, Box::new(conv(&f, "cnn", 1)))];
    build(
        &f.dataset,
        &ts,
        &out,
        &cfg(MixMode::None),
        &BuildOptions::default(),
        &RunOptions::default(),
    )
    .unwrap();
    let attrs = root_attrs(&out);
    assert!(attrs.get("mix").is_none());
    let mut keys: Vec<&String> = attrs["teachers"][0].as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["arch", "checkpoint_hash", "dataset_hash", "name"]);
    let meta = StoreMeta::read(&out.join("logits.zarr")).unwrap();
    assert_eq!((meta.mix, meta.teachers[0].folds.clone()), (None, None));
    assert_eq!(serde_json::to_value(&meta).unwrap(), attrs);
    assert_eq!(
        meta.array_paths(),
        ["/views/params", "/teachers/cnn/logits"]
    );
}

#[test]
fn bad_mix_settings_and_mix_arrays_are_refused_with_one_clear_line() {
    let f = fixture();
    let ts = || vec![input(&f, Box::new(conv(&f, "cnn", 1)))];
    let out = f.root.join("bad");
    let err = |c: CacheConfig| {
        build(
            &f.dataset,
            &ts(),
            &out,
            &c,
            &BuildOptions::default(),
            &RunOptions::default(),
        )
        .unwrap_err()
        .to_string()
    };
    for p in [1.5, -0.1, f64::NAN] {
        let e = err(CacheConfig {
            mix_prob: p,
            ..cfg(MixMode::Mixup)
        });
        assert!(e.contains("mix_prob") && e.contains("[0, 1]"), "{e}");
    }
    for a in [0.0, -2.0, f64::INFINITY, f64::NAN] {
        let e = err(CacheConfig {
            mix_alpha: a,
            ..cfg(MixMode::Cutmix)
        });
        assert!(e.contains("mix_alpha"), "{e}");
    }
    assert!(
        !out.join("logits.zarr").exists(),
        "nothing written on refused input"
    );

    // Profiles: an unknown name is one error naming the setting and section.
    let prof = f.root.join("p.toml");
    std::fs::write(&prof, "[cache]\nmix = \"mixupp\"\n").unwrap();
    let e = Profile::load(&prof)
        .unwrap()
        .section::<CacheConfig>("cache")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("p.toml")
            && e.contains("[cache]")
            && e.contains("setting mix: 'mixupp'")
            && e.contains("mixup-cutmix"),
        "{e}"
    );
    std::fs::write(
        &prof,
        "[cache]\nmix = \"mixup-cutmix\"\nmix_prob = 0.25\nmix_alpha = 0.4\n",
    )
    .unwrap();
    let c: CacheConfig = Profile::load(&prof).unwrap().section("cache").unwrap();
    assert_eq!(
        (c.mix, c.mix_prob, c.mix_alpha),
        (MixMode::MixupCutmix, 0.25, 0.4)
    );
    let c: CacheConfig = {
        std::fs::write(&prof, "[cache]\nviews = 2\n").unwrap();
        Profile::load(&prof).unwrap().section("cache").unwrap()
    };
    assert_eq!(c.mix_spec(), kd_core::MixSpec::default());

    // One training sample has no partner to mix with.
    let one = synthetic_dataset(&f.root.join("one"), 1, CLASSES, CHW, 5);
    let h1 = manifest_hash(&one).unwrap();
    let t1 = vec![TeacherInput {
        dir: teacher_artifact(&f.root.join("t1"), "cnn", 1, &h1),
        teacher: Box::new(ConvTeacher::new("cnn", 1, 1, 6, CLASSES, &h1, Device::Cpu)),
    }];
    let e = build(
        &one,
        &t1,
        &f.root.join("one-out"),
        &cfg(MixMode::Mixup),
        &BuildOptions::default(),
        &RunOptions::default(),
    )
    .unwrap_err();
    assert!(
        matches!(e.core().and_then(kd_core::CoreError::as_input), Some(kd_core::InputError::Unsupported { what, limit })
            if what.contains("1 training samples") && limit.contains("mix 'mixup'")),
        "{e}"
    );

    // A views/mix row naming a partner outside the store (valid checksum,
    // wrong content) is refused on open, before anyone indexes with it.
    let out = f.root.join("tampered");
    build(
        &f.dataset,
        &ts(),
        &out,
        &cfg(MixMode::Mixup),
        &BuildOptions::default(),
        &RunOptions::default(),
    )
    .unwrap();
    let store = kd_core::zarr::open_store(&out.join("logits.zarr")).unwrap();
    let a = kd_core::zarr::open_array(&store, "/views/mix").unwrap();
    kd_core::zarr::write_block(&a, &[3, 1, 0], &[1, 1, 7], &[1u32, 999, 5, 0, 0, 0, 0]).unwrap();
    let e = LogitStore::open(&out).unwrap_err().to_string();
    assert!(
        e.contains("views/mix") && e.contains("(sample 3, view 1)") && e.contains("40 samples"),
        "{e}"
    );
}

#[test]
fn mixed_store_verifies_inspects_and_catches_tampered_mixing() {
    let f = fixture();
    let c = CacheConfig {
        dtype: Dtype::F16,
        ..cfg(MixMode::MixupCutmix)
    };
    let out = f.root.join("m");
    let live = || -> Vec<Box<dyn Teacher>> {
        vec![Box::new(conv(&f, "cnn", 1)), Box::new(conv(&f, "inv", 2))]
    };
    let ts: Vec<TeacherInput> = live().into_iter().map(|t| input(&f, t)).collect();
    build(
        &f.dataset,
        &ts,
        &out,
        &c,
        &BuildOptions::default(),
        &RunOptions::default(),
    )
    .unwrap();
    let r = verify(&out, &live(), 300, 1, &Silent).unwrap();
    assert!(r.ok, "{r:?}");

    let s = LogitStore::open(&out).unwrap();
    let mixed: Vec<(usize, usize)> = all_pairs()
        .into_iter()
        .filter(|&(i, v)| s.mix_params(i, v).unwrap().is_mixed())
        .collect();
    let i = inspect(&out).unwrap();
    assert_eq!(i.mix, Some(c.mix_spec()));
    // The size formula counts the 7 uint32 mixing values of every view.
    assert_eq!(i.size.view, 3 + 28);
    assert_eq!(
        i.size
            .bytes(N as u64, VIEWS as u64, i.teachers.len() as u64),
        i.raw_bytes
    );
    assert_eq!(i.mixed_share, mixed.len() as f64 / (N * VIEWS) as f64);
    assert!((i.mixup_share + i.cutmix_share - i.mixed_share).abs() < 1e-12);
    assert!(i.mixup_share > 0.0 && i.cutmix_share > 0.0);
    assert!(i.teachers.iter().all(|t| t.folds.is_none()));
    // Accuracy over "all views" scores unmixed views only.
    let ds = Dataset::open(&f.dataset).unwrap();
    let labels = &ds.split("train").unwrap().labels;
    let unmixed: Vec<(usize, usize)> = all_pairs()
        .into_iter()
        .filter(|p| !mixed.contains(p))
        .collect();
    let rows = s.logits("cnn", &unmixed).unwrap();
    let hits = rows
        .chunks(CLASSES)
        .zip(&unmixed)
        .filter(|(r, (s, _))| {
            (0..CLASSES).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap() == labels[*s] as usize
        })
        .count();
    assert_eq!(
        i.teachers[0].acc_all_views,
        Some(hits as f64 / unmixed.len() as f64)
    );

    // Another mixing weight under a valid checksum: the generator disagrees.
    let (ms, mv) = mixed[0];
    let m = s.mix_params(ms, mv).unwrap();
    let other = MixParams {
        kind: MixKind::Mixup,
        lam_q: 1234,
        y0: 0,
        x0: 0,
        h: 0,
        w: 0,
        ..m
    };
    drop(s);
    let store = kd_core::zarr::open_store(&out.join("logits.zarr")).unwrap();
    let a = kd_core::zarr::open_array(&store, "/views/mix").unwrap();
    kd_core::zarr::write_block(
        &a,
        &[ms as u64, mv as u64, 0],
        &[1, 1, 7],
        &other.to_array(),
    )
    .unwrap();
    let e = verify(&out, &live(), 2000, 1, &Silent)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("views/mix") && e.contains(&format!("(sample {ms}, view {mv})")),
        "{e}"
    );
}

#[test]
fn cross_fitted_teacher_answers_each_sample_with_its_held_out_fold() {
    let f = fixture();
    let hashes = ["hash-fold-0", "hash-fold-1"];
    let c = cfg(MixMode::Cutmix);
    let out = f.root.join("x");
    let live = |assignment: Vec<u8>, hashes: [&str; 2]| -> Vec<Box<dyn Teacher>> {
        vec![
            Box::new(conv(&f, "cnn", 1)),
            Box::new(CrossFit::new(&f.hash, assignment, hashes)),
        ]
    };
    let ts: Vec<TeacherInput> = live(assignment(), hashes)
        .into_iter()
        .map(|t| input(&f, t))
        .collect();
    build(
        &f.dataset,
        &ts,
        &out,
        &c,
        &BuildOptions::default(),
        &RunOptions::default(),
    )
    .unwrap();

    let s = LogitStore::open(&out).unwrap();
    let meta = s.meta();
    assert_eq!(meta.teachers[0].folds, None);
    assert_eq!(
        meta.teachers[1].folds,
        Some(FoldsMeta {
            k: 2,
            checkpoint_hashes: hashes.map(String::from).to_vec()
        })
    );
    assert!(
        meta.array_paths()
            .contains(&"/teachers/xfit/fold".to_string())
    );
    for (i, &a) in assignment().iter().enumerate() {
        assert_eq!(s.fold_of("xfit", i), Some(a));
        assert_eq!(s.fold_of("cnn", i), None);
    }
    assert_eq!(s.fold_of("nope", 0), None);
    assert_eq!(s.fold_of("xfit", N), None);

    // Stored logits: fold model `assignment[i]` on the (possibly mixed) view
    // of sample i, and not the other fold's.
    let ds = Dataset::open(&f.dataset).unwrap();
    let train = ds.split("train").unwrap();
    let pairs = all_pairs();
    let vb = s.view_batch(&pairs).unwrap();
    let idx: Vec<usize> = pairs.iter().map(|p| p.0).collect();
    let x = batch_tensor_mixed(
        train,
        &idx,
        &vb.views,
        &vb.partner_views,
        &vb.mixes,
        &ViewSpec::default(),
        &lut(&ds.mean, &ds.std),
        Device::Cpu,
    )
    .unwrap();
    let xf = CrossFit::new(&f.hash, assignment(), hashes);
    let by_fold = [floats(&xf.model(0, &x)), floats(&xf.model(1, &x))];
    let stored = s.logits("xfit", &pairs).unwrap();
    let (mut own, mut other) = (0f32, 0f32);
    for (r, &i) in idx.iter().enumerate() {
        let fold = assignment()[i] as usize;
        let row = |v: &[f32]| v[r * CLASSES..(r + 1) * CLASSES].to_vec();
        for ((a, b), o) in row(&stored)
            .iter()
            .zip(row(&by_fold[fold]))
            .zip(row(&by_fold[1 - fold]))
        {
            own = own.max((a - b).abs());
            other = other.max((a - o).abs());
        }
    }
    assert!(
        own < 1e-5 && other > 1e-2,
        "own fold {own}, other fold {other}"
    );

    // Verify recomputes per sample and passes; inspect marks the teacher.
    let r = verify(&out, &live(assignment(), hashes), 200, 2, &Silent).unwrap();
    assert!(r.ok, "{r:?}");
    let i = inspect(&out).unwrap();
    assert_eq!(
        i.teachers.iter().map(|t| t.folds).collect::<Vec<_>>(),
        [None, Some(2)]
    );
    assert_eq!(i.size.folds, 1);
    assert_eq!(i.size.bytes(N as u64, VIEWS as u64, 2), i.raw_bytes);
    let group = std::fs::read_to_string(out.join("logits.zarr/teachers/xfit/zarr.json")).unwrap();
    assert!(
        group.contains("\"folds\": 2") || group.contains("\"folds\":2"),
        "{group}"
    );

    // Fold models retrained since: refused, naming the teacher and the hashes.
    let e = verify(
        &out,
        &live(assignment(), ["hash-fold-0", "retrained"]),
        10,
        2,
        &Silent,
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("teacher 'xfit' fold checkpoints are [hash-fold-0, retrained] now")
            && e.contains("[hash-fold-0, hash-fold-1]")
            && e.contains("manifest.json"),
        "{e}"
    );
    // Same models, another assignment: refused, naming the fold array.
    let mut moved = assignment();
    moved[5] = 1 - moved[5];
    let e = verify(&out, &live(moved, hashes), 10, 2, &Silent)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("teachers/xfit/fold") && e.contains("sample 5 is stored in fold"),
        "{e}"
    );
    // A plain teacher under the same name and checkpoint: refused.
    let plain: Vec<Box<dyn Teacher>> = vec![
        Box::new(conv(&f, "cnn", 1)),
        Box::new(
            ConvTeacher::new("xfit", 3, 1, 6, CLASSES, &f.hash, Device::Cpu)
                .with_checkpoint("xfit-ensemble"),
        ),
    ];
    let e = verify(&out, &plain, 10, 2, &Silent)
        .unwrap_err()
        .to_string();
    assert!(e.contains("'xfit' is a plain teacher now"), "{e}");

    // A fold assignment that does not cover the train split is refused at build.
    let short = vec![input(
        &f,
        Box::new(CrossFit::new(&f.hash, vec![0; N - 1], hashes)),
    )];
    let e = build(
        &f.dataset,
        &short,
        &f.root.join("short"),
        &c,
        &BuildOptions::default(),
        &RunOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("teacher 'xfit' assigns folds to 39 samples, the train split has 40"),
        "{e}"
    );
    let bad = vec![input(
        &f,
        Box::new(CrossFit::new(&f.hash, vec![2; N], hashes)),
    )];
    let e = build(
        &f.dataset,
        &bad,
        &f.root.join("bad"),
        &c,
        &BuildOptions::default(),
        &RunOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("puts sample 0 in fold 2, but has 2 folds"),
        "{e}"
    );
}

#[test]
fn zarr_python_reads_the_mix_and_fold_arrays() {
    let py = kd_logit_cache::testing::zarr_python();
    let f = fixture();
    let ts = vec![input(
        &f,
        Box::new(CrossFit::new(&f.hash, assignment(), ["a", "b"])),
    )];
    let out = f.root.join("py");
    build(
        &f.dataset,
        &ts,
        &out,
        &cfg(MixMode::MixupCutmix),
        &BuildOptions::default(),
        &RunOptions::default(),
    )
    .unwrap();
    let script = r#"
import json, sys, zarr
g = zarr.open_group(sys.argv[1], mode="r")
m, fold = g["views/mix"], g["teachers/xfit/fold"]
print(json.dumps({"mix_dtype": str(m.dtype), "fields": m.attrs["fields"], "mix": m[:].tolist(),
                  "fold_dtype": str(fold.dtype), "fold": fold[:].tolist(), "attrs_mix": g.attrs["mix"],
                  "folds": g.attrs["teachers"][0]["folds"]}))
"#;
    let o = std::process::Command::new(&py)
        .args(["-c", script])
        .arg(out.join("logits.zarr"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let s = LogitStore::open(&out).unwrap();
    assert_eq!(
        (v["mix_dtype"].as_str(), v["fold_dtype"].as_str()),
        (Some("uint32"), Some("uint8"))
    );
    assert_eq!(v["fields"], serde_json::json!(MixParams::FIELDS));
    assert_eq!(v["attrs_mix"]["mode"], "mixup-cutmix");
    assert_eq!(
        v["folds"],
        serde_json::json!({"k": 2, "checkpoint_hashes": ["a", "b"]})
    );
    let mix: Vec<Vec<Vec<u32>>> = serde_json::from_value(v["mix"].clone()).unwrap();
    for (i, views) in mix.iter().enumerate() {
        for (vi, row) in views.iter().enumerate() {
            assert_eq!(MixParams::from_slice(row), s.mix_params(i, vi));
        }
    }
    let fold: Vec<u8> = serde_json::from_value(v["fold"].clone()).unwrap();
    assert_eq!(fold, assignment());
}

/// Every file under `dir` (relative path -> bytes).
fn files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, d: &Path, out: &mut std::collections::BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.insert(
                    p.strip_prefix(base).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                );
            }
        }
    }
    let mut m = std::collections::BTreeMap::new();
    walk(dir, dir, &mut m);
    m
}

#[test]
fn killed_and_resumed_mixed_cross_fitted_build_is_byte_identical() {
    let f = fixture();
    let c = cfg(MixMode::MixupCutmix);
    let ts = || {
        vec![
            input(&f, Box::new(conv(&f, "cnn", 1))),
            input(
                &f,
                Box::new(CrossFit::new(&f.hash, assignment(), ["a", "b"])),
            ),
        ]
    };
    let whole = f.root.join("whole");
    build(
        &f.dataset,
        &ts(),
        &whole,
        &c,
        &BuildOptions::default(),
        &RunOptions::default(),
    )
    .unwrap();
    let resumed = f.root.join("resumed");
    let stop = BuildOptions {
        stop_after_shards: Some(1),
        ..Default::default()
    };
    build(
        &f.dataset,
        &ts(),
        &resumed,
        &c,
        &stop,
        &RunOptions::default(),
    )
    .unwrap();
    build(
        &f.dataset,
        &ts(),
        &resumed,
        &c,
        &BuildOptions::default(),
        &RunOptions::default(),
    )
    .unwrap();
    let (a, b) = (
        files(&whole.join("logits.zarr")),
        files(&resumed.join("logits.zarr")),
    );
    assert!(a.contains_key("views/mix/c/2/0/0") && a.contains_key("teachers/xfit/fold/c/2"));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    let differ: Vec<&String> = a.keys().filter(|k| a[*k] != b[*k]).collect();
    assert!(differ.is_empty(), "differ: {differ:?}");
}

#[test]
fn most_disputed_views_are_the_brute_force_ones_with_the_teachers_pixels() {
    let f = fixture();
    let c = CacheConfig {
        dtype: Dtype::F32,
        ..cfg(MixMode::MixupCutmix)
    };
    let out = f.root.join("g");
    let ts: Vec<TeacherInput> = [conv(&f, "cnn", 1), conv(&f, "inv", 2)]
        .into_iter()
        .map(|t| input(&f, Box::new(t)))
        .collect();
    build(
        &f.dataset,
        &ts,
        &out,
        &c,
        &BuildOptions::default(),
        &RunOptions::default(),
    )
    .unwrap();
    let s = LogitStore::open(&out).unwrap();
    let ds = Dataset::open(&f.dataset).unwrap();
    let train = ds.split("train").unwrap();
    let picks = kd_logit_cache::disagreement::most_disputed(&s, train, "cnn", "inv", 5).unwrap();
    // Brute force: every (sample, view)'s total variation distance.
    let soft = |t: &str, p: (usize, usize)| {
        let l = s.logits(t, &[p]).unwrap();
        floats(&Tensor::from_slice(&l).softmax(0, Kind::Double))
    };
    let tv = |p: (usize, usize)| -> f64 {
        let (a, b) = (soft("cnn", p), soft("inv", p));
        0.5 * a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs() as f64)
            .sum::<f64>()
    };
    let mut best: Vec<(f64, usize, usize)> = (0..N)
        .map(|i| {
            (0..VIEWS)
                .map(|v| (tv((i, v)), i, v))
                .fold((f64::MIN, 0, 0), |m, x| if x.0 > m.0 { x } else { m })
        })
        .collect();
    best.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)));
    assert_eq!(picks.len(), 5);
    for (d, (want, i, v)) in picks.iter().zip(&best) {
        assert_eq!((d.sample, d.view), (*i, *v));
        assert!((d.distance - want).abs() < 1e-5, "{} vs {want}", d.distance);
        assert!(d.top2[0][0].1 >= d.top2[0][1].1);
        // The pixels are the view the teachers saw, before normalisation.
        let b = s.view_batch(&[(*i, *v)]).unwrap();
        let raw = lut(&[0.0], &[1.0]);
        let want_px = batch_tensor_mixed(
            train,
            &[*i],
            &b.views,
            &b.partner_views,
            &b.mixes,
            &s.view_spec(),
            &raw,
            Device::Cpu,
        )
        .unwrap();
        let want_px: Vec<u8> = floats(&want_px)
            .iter()
            .map(|x| (x * 255.0).round() as u8)
            .collect();
        assert_eq!(d.pixels, want_px);
        assert_eq!(d.mix.is_some(), d.mixed_with.is_some());
    }
    assert!(picks.windows(2).all(|w| w[0].distance >= w[1].distance));
}

/// `mix_partners = "chunk"`: every partner is of its sample's own stored
/// chunk of the dataset (4096 samples of 1x8x8, then the rest), the store
/// records the rule, and verify redraws it.
#[test]
fn chunk_partners_stay_in_the_stored_chunk_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let n = 4200;
    let dataset = synthetic_dataset(&tmp.path().join("data"), n, CLASSES, CHW, 5);
    let hash = manifest_hash(&dataset).unwrap();
    let live = || -> Vec<Box<dyn Teacher>> {
        vec![Box::new(ConvTeacher::new(
            "cnn",
            1,
            1,
            6,
            CLASSES,
            &hash,
            Device::Cpu,
        ))]
    };
    let ts: Vec<TeacherInput> = live()
        .into_iter()
        .map(|t| TeacherInput {
            dir: teacher_artifact(&tmp.path().join("cnn"), "cnn", 1, &hash),
            teacher: t,
        })
        .collect();
    let c = CacheConfig {
        views: 2,
        shard_samples: 1024,
        chunk_samples: 128,
        batch_size: 512,
        mix_prob: 1.0,
        mix_partners: kd_core::Partners::Chunk,
        ..cfg(MixMode::MixupCutmix)
    };
    let out = tmp.path().join("m");
    build(
        &dataset,
        &ts,
        &out,
        &c,
        &BuildOptions::default(),
        &RunOptions::default(),
    )
    .unwrap();
    assert!(verify(&out, &live(), 200, 1, &Silent).unwrap().ok);
    let s = LogitStore::open(&out).unwrap();
    assert_eq!(s.mix_spec().unwrap().partners, kd_core::Partners::Chunk);
    let mut across_first_chunk = false;
    for i in 0..n {
        let m = s.mix_params(i, 1).unwrap();
        assert!(m.is_mixed());
        let p = m.partner as usize;
        assert_eq!(p / 4096, i / 4096, "sample {i}: partner {p}");
        across_first_chunk |= i < 4096 && p >= 2048 && i < 2048;
    }
    assert!(across_first_chunk, "partners spread over the whole chunk");
}
