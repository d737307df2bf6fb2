//! The augmentation contract between the logit cache and the student.
//!
//! A view of an image is a handful of small integers: the crop offset into
//! the zero-padded image and a horizontal flip. They are drawn from a
//! generator keyed by (seed, sample, view), stored beside the teachers'
//! logits, and the student rebuilds the very pixels the teachers saw from
//! them. View 0 is always the plain image. A view may also be mixed with a
//! partner sample's view of the same index (mixup, cutmix): see
//! [`crate::mix`], whose draws come from a separate stream so the crops here
//! never depend on whether mixing is on.

use crate::rng::Rng;
use serde::{Deserialize, Serialize};

/// How views are drawn: pad by `pad` pixels (zeros), crop back to the original
/// size at a random offset, flip horizontally with probability 1/2 if `flip`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewSpec {
    pub pad: u8,
    pub flip: bool,
}

impl Default for ViewSpec {
    fn default() -> Self {
        ViewSpec { pad: 2, flip: true }
    }
}

/// One view's parameters. `dy, dx` in `0..=2*pad` (identity is `pad, pad`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ViewParams {
    pub dy: u8,
    pub dx: u8,
    pub flip: u8,
}

impl ViewParams {
    /// Names of the stored columns, in order.
    pub const FIELDS: [&'static str; 3] = ["dy", "dx", "flip"];
    pub const LEN: usize = 3;

    pub fn identity(spec: &ViewSpec) -> Self {
        ViewParams {
            dy: spec.pad,
            dx: spec.pad,
            flip: 0,
        }
    }

    pub fn to_array(self) -> [u8; 3] {
        [self.dy, self.dx, self.flip]
    }

    pub fn from_slice(s: &[u8]) -> Self {
        ViewParams {
            dy: s[0],
            dx: s[1],
            flip: s[2],
        }
    }
}

impl ViewSpec {
    /// The parameters of view `view` of sample `sample`. Pure function of its
    /// arguments; view 0 is the identity.
    pub fn draw(&self, seed: u64, sample: u64, view: u64) -> ViewParams {
        if view == 0 {
            return ViewParams::identity(self);
        }
        let mut r = Rng::keyed(seed, &[0x7669_6577, sample, view]);
        let span = 2 * self.pad as u64 + 1;
        ViewParams {
            dy: r.below(span) as u8,
            dx: r.below(span) as u8,
            flip: if self.flip {
                (r.next_u64() >> 63) as u8
            } else {
                0
            },
        }
    }

    /// Whether `p` could have come from this spec.
    pub fn admits(&self, p: &ViewParams) -> bool {
        p.dy <= 2 * self.pad && p.dx <= 2 * self.pad && (p.flip == 0 || (self.flip && p.flip == 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_zero_is_identity_and_draws_are_admitted() {
        let s = ViewSpec { pad: 4, flip: true };
        assert_eq!(
            s.draw(1, 5, 0),
            ViewParams {
                dy: 4,
                dx: 4,
                flip: 0
            }
        );
        let mut flips = 0;
        for i in 0..1000 {
            let p = s.draw(1, i, 1);
            assert!(s.admits(&p));
            flips += p.flip as u32;
            assert_eq!(p, s.draw(1, i, 1));
        }
        assert!((400..600).contains(&flips));
        let noflip = ViewSpec {
            pad: 2,
            flip: false,
        };
        assert!((0..100).all(|i| noflip.draw(3, i, 2).flip == 0));
    }
}
