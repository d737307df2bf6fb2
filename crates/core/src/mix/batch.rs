//! A batch of (sample, view) pairs as the cache writer and the student
//! rebuild them: own views, partners' views and the mixing.

use super::{MixParams, MixSpec};
use crate::view::{ViewParams, ViewSpec};

/// The parameters to rebuild a batch of (sample, view) pairs: each own
/// view, the partner's view at the same view index (the own view again when
/// not mixed; unused then), and the mixing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ViewBatch {
    pub views: Vec<ViewParams>,
    pub partner_views: Vec<ViewParams>,
    pub mixes: Vec<MixParams>,
}

impl ViewBatch {
    /// From the generators, as the cache writer draws them, for images of
    /// `hw` pixels: boxes in the image, cutmix boxes in the view (of the
    /// view's size).
    pub fn draw(
        view: &ViewSpec,
        mix: &MixSpec,
        seed: u64,
        samples: usize,
        hw: [usize; 2],
        pairs: &[(usize, usize)],
    ) -> ViewBatch {
        let mut b = ViewBatch::default();
        for &(s, v) in pairs {
            let own = view.draw(hw, seed, s as u64, v as u64);
            let m = mix.draw(seed, s as u64, v as u64, samples as u64, view.out_hw(hw));
            b.views.push(own);
            b.partner_views.push(if m.is_mixed() {
                view.draw(hw, seed, m.partner as u64, v as u64)
            } else {
                own
            });
            b.mixes.push(m);
        }
        b
    }

    pub fn len(&self) -> usize {
        self.views.len()
    }

    pub fn is_empty(&self) -> bool {
        self.views.is_empty()
    }

    /// Rows `a..b`.
    pub fn slice(&self, a: usize, b: usize) -> ViewBatch {
        ViewBatch {
            views: self.views[a..b].to_vec(),
            partner_views: self.partner_views[a..b].to_vec(),
            mixes: self.mixes[a..b].to_vec(),
        }
    }
}
