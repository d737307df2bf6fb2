//! Training one teacher model: the [`Learner`] that `kd_core::fit` drives
//! (plain cross-entropy on the teacher's own random views), and the jobs
//! that train a single model or one fold of a cross-fitted teacher.

use crate::artifact::WEIGHTS;
use crate::config::TeacherConfig;
use crate::error::{Result, TeacherError};
use crate::model::{ModelConfig, Net};
use crate::scoring::{EvalStats, eval_split, eval_split_with};
use kd_core::fit::{EpochRecord, FitOptions, Learner, fit, remove_checkpoint};
use kd_core::manifest::{read_json, write_json};
use kd_core::{Progress, ViewBatch, ViewParams};
use kd_data::Split;
use kd_data::augment::{batch_tensor, batch_tensor_mixed, label_tensor, mixed_label_tensor};
use serde_json::{Map, Value, json};
use std::path::Path;
use tch::nn::{ModuleT, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

pub(crate) struct TeacherLearner<'a> {
    vs: VarStore,
    net: Net,
    /// The split, normalisation and policy of its batches (shared with
    /// the prefetch thread).
    feed: &'a TeacherFeed<'a>,
    test: &'a Split,
    progress: &'a dyn Progress,
}

/// A training batch of a teacher: its views (mixed or not) and targets.
struct TeacherBatch {
    x: Tensor,
    y: Tensor,
    /// Mixed views: the soft targets of each mixed pair.
    soft: Option<Tensor>,
}

/// What a teacher's batch is made of, shared with the prefetch thread:
/// the split, the normalisation and the view and mixing policy.
struct TeacherFeed<'a> {
    train: &'a Split,
    lut: &'a [[f32; 256]],
    cfg: &'a TeacherConfig,
    classes: usize,
    device: Device,
}

impl TeacherFeed<'_> {
    fn batch(&self, idx: &[usize], epoch: usize) -> kd_core::Result<TeacherBatch> {
        let spec = &self.cfg.view;
        let seed = self.cfg.fit.seed;
        let hw = [self.train.chw[1], self.train.chw[2]];
        // View 1 + epoch of each sample: view 0 is the plain image, and a
        // different view index per epoch gives a fresh view every epoch.
        let view = 1 + epoch;
        let y = label_tensor(self.train, idx, self.device);
        if self.cfg.mix.is_none() {
            let views: Vec<ViewParams> = idx
                .iter()
                .map(|&i| spec.draw(hw, seed, i as u64, view as u64))
                .collect();
            let x = batch_tensor(self.train, idx, &views, spec, self.lut, self.device)?;
            return Ok(TeacherBatch { x, y, soft: None });
        }
        let pairs: Vec<(usize, usize)> = idx.iter().map(|&i| (i, view)).collect();
        let mix = self.cfg.mix.in_chunks_of(self.train.stored_chunk());
        let b = ViewBatch::draw(spec, &mix, seed, self.train.len(), hw, &pairs);
        let x = batch_tensor_mixed(
            self.train,
            idx,
            &b.views,
            &b.partner_views,
            &b.mixes,
            spec,
            self.lut,
            self.device,
        )?;
        let soft = mixed_label_tensor(
            self.train,
            idx,
            &b.mixes,
            spec.out_hw(hw),
            self.classes,
            self.device,
        );
        Ok(TeacherBatch {
            x,
            y,
            soft: Some(soft),
        })
    }
}

impl kd_core::fit::Feed for TeacherFeed<'_> {
    fn prepare(&self, idx: &[usize], epoch: usize) -> kd_core::Result<kd_core::fit::Prepared> {
        Ok(Box::new(self.batch(idx, epoch)?))
    }
}

impl TeacherLearner<'_> {
    fn step(&mut self, b: TeacherBatch) -> kd_core::Result<(Tensor, Vec<(String, Tensor)>)> {
        let logits = self.net.forward_t(&b.x, true).to_kind(Kind::Float);
        let loss = match &b.soft {
            None => logits.cross_entropy_loss::<Tensor>(
                &b.y,
                None,
                Reduction::Mean,
                -100,
                self.feed.cfg.label_smoothing,
            ),
            Some(soft) => mixed_cross_entropy(&logits, soft, self.feed.cfg.label_smoothing),
        };
        let acc = logits
            .argmax(1, false)
            .eq_tensor(&b.y)
            .to_kind(Kind::Float)
            .mean(Kind::Float);
        let l = loss.detach();
        Ok((loss, vec![("loss".into(), l), ("acc".into(), acc)]))
    }
}

impl Learner for TeacherLearner<'_> {
    fn var_store(&mut self) -> &mut VarStore {
        &mut self.vs
    }

    fn train_len(&self) -> usize {
        self.feed.train.len()
    }

    fn shuffle(&self) -> kd_core::sampler::Shuffle {
        self.feed.train.shuffle()
    }

    fn train_batch(
        &mut self,
        idx: &[usize],
        epoch: usize,
    ) -> kd_core::Result<(Tensor, Vec<(String, Tensor)>)> {
        let batch = self.feed.batch(idx, epoch)?;
        self.step(batch)
    }

    fn train_prepared(
        &mut self,
        prepared: kd_core::fit::Prepared,
        _idx: &[usize],
        _epoch: usize,
    ) -> kd_core::Result<(Tensor, Vec<(String, Tensor)>)> {
        self.step(kd_core::fit::unpack::<TeacherBatch>(prepared))
    }

    fn evaluate(&mut self, _epoch: usize) -> kd_core::Result<Map<String, Value>> {
        let s = eval_split(
            &self.net,
            self.test,
            &self.feed.cfg.view,
            self.feed.lut,
            self.feed.classes,
            self.feed.cfg.eval_batch_size,
            self.feed.device,
            self.progress,
        )?;
        let mut m = Map::new();
        m.insert("test_accuracy".into(), json!(s.accuracy));
        m.insert("test_loss".into(), json!(s.loss));
        Ok(m)
    }
}

/// Cross-entropy against soft targets (rows summing to 1) with label
/// smoothing `eps`, as libtorch's for hard labels: the target is
/// `(1 - eps) * soft + eps / classes`, averaged over the batch.
pub(crate) fn mixed_cross_entropy(logits: &Tensor, soft: &Tensor, eps: f64) -> Tensor {
    let classes = logits.size()[1] as f64;
    let target = soft * (1.0 - eps) + eps / classes;
    -(target * logits.log_softmax(1, Kind::Float))
        .sum_dim_intlist(1, false, Kind::Float)
        .mean(Kind::Float)
}

/// What training one model needs besides its training split and directory.
pub(crate) struct FitJob<'a> {
    pub(crate) cfg: &'a TeacherConfig,
    pub(crate) model_cfg: &'a ModelConfig,
    pub(crate) test: &'a Split,
    pub(crate) lut: &'a [[f32; 256]],
    pub(crate) classes: usize,
    pub(crate) chw: [usize; 3],
    pub(crate) device: Device,
    pub(crate) opts: &'a FitOptions,
    pub(crate) progress: &'a dyn Progress,
}

pub(crate) type Trained = (VarStore, Net, Vec<EpochRecord>);

impl FitJob<'_> {
    pub(crate) fn new_model(&self) -> (VarStore, Net) {
        // Seeded initialisation: a resumed run's first epoch must have started
        // from the same weights as an uninterrupted one.
        tch::manual_seed(kd_core::rng::key(self.cfg.fit.seed, &[0x696e_6974]) as i64 & i64::MAX);
        let vs = VarStore::new(self.device);
        let net = Net::for_images(&vs.root(), self.model_cfg, self.chw, self.classes as i64);
        (vs, net)
    }

    pub(crate) fn eval(
        &self,
        f: &dyn Fn(&Tensor, &[usize]) -> Tensor,
        split: &Split,
    ) -> Result<EvalStats> {
        Ok(eval_split_with(
            f,
            split,
            &self.cfg.view,
            self.lut,
            self.classes,
            self.cfg.eval_batch_size,
            self.device,
            self.progress,
        )?)
    }

    /// Train one model on `train` with its checkpoint in `dir`; `Err(epochs)`
    /// when stopped early on purpose.
    pub(crate) fn train_one(
        &self,
        train: &Split,
        dir: &Path,
        identity: &Value,
    ) -> Result<std::result::Result<Trained, usize>> {
        let (vs, net) = self.new_model();
        let feed = TeacherFeed {
            train,
            lut: self.lut,
            cfg: self.cfg,
            classes: self.classes,
            device: self.device,
        };
        let mut learner = TeacherLearner {
            vs,
            net,
            feed: &feed,
            test: self.test,
            progress: self.progress,
        };
        let history = fit(
            &mut learner,
            Some(&feed),
            &self.cfg.fit,
            identity,
            dir,
            self.opts,
            self.progress,
        )?;
        if history.len() < self.cfg.fit.epochs {
            return Ok(Err(history.len()));
        }
        Ok(Ok((learner.vs, learner.net, history)))
    }

    /// A fold model: trained into `dir`, or loaded from it when an earlier
    /// run of the same fold finished there (a killed k-fold run resumes
    /// fold by fold).
    pub(crate) fn train_fold(
        &self,
        train: &Split,
        dir: &Path,
        identity: &Value,
    ) -> Result<std::result::Result<Trained, usize>> {
        let id_path = dir.join("fold.json");
        let weights = dir.join(WEIGHTS);
        let finished = || {
            weights.is_file()
                && read_json::<Value>(&id_path).is_ok_and(|done| done["identity"] == *identity)
        };
        // Rank 0 decides (the others may not see its files); a finished fold
        // is skipped by all, and only rank 0 loads it.
        let leader = self.opts.is_leader();
        if kd_core::data_parallel::leader_decides(self.opts.group(), || {
            Ok::<bool, TeacherError>(finished())
        })? && !leader
        {
            // A stand-in the caller never uses: a follower's fold loop moves
            // on to the next fold at once.
            let (vs, net) = self.new_model();
            return Ok(Ok((vs, net, vec![])));
        }
        if leader
            && weights.is_file()
            && let Ok(done) = read_json::<Value>(&id_path)
            && done["identity"] == *identity
        {
            let (mut vs, net) = self.new_model();
            vs.load(&weights).map_err(|source| TeacherError::Weights {
                path: weights.clone(),
                msg: "cannot reload a finished fold",
                source,
            })?;
            let history: Vec<EpochRecord> =
                serde_json::from_value(done["history"].clone()).unwrap_or_default();
            return Ok(Ok((vs, net, history)));
        }
        let trained = self.train_one(train, dir, identity)?;
        if let Ok((vs, _, history)) = &trained
            && self.opts.is_leader()
        {
            vs.save(&weights)?;
            write_json(&id_path, &json!({"identity": identity, "history": history}))?;
            remove_checkpoint(dir)?;
        }
        Ok(trained)
    }
}
