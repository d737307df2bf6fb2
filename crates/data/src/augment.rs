//! Batch assembly: apply views to uint8 images and normalise to `[B,C,H,W]`
//! floats. Runs on rayon over plain buffers (tensors are not `Sync`); every
//! output pixel is a pure function of (image, view), so the result does not
//! depend on the thread count.
//!
//! Mixed views (mixup, cutmix; `kd_core::mix`) are assembled here too, by the
//! one function both the cache writer and the student call, so the student
//! trains on the very pixels the teachers' stored logits were computed on.

use crate::split::Split;
use kd_core::{MixKind, MixParams, ViewParams, ViewSpec};
use rayon::prelude::*;
use tch::{Device, Tensor};

/// Normalisation as a lookup table per channel: 256 floats each.
pub fn lut(mean: &[f32], std: &[f32]) -> Vec<[f32; 256]> {
    mean.iter()
        .zip(std)
        .map(|(&m, &s)| {
            let mut t = [0f32; 256];
            for (v, x) in t.iter_mut().enumerate() {
                *x = (v as f32 / 255.0 - m) / s;
            }
            t
        })
        .collect()
}

/// Write one view of `img` (`[c,h,w]` uint8) into `out` (`[c,h,w]` f32).
/// The padded border is zero pixels (normalised like any black pixel).
pub fn apply_view(
    img: &[u8],
    chw: [usize; 3],
    pad: usize,
    v: ViewParams,
    lut: &[[f32; 256]],
    out: &mut [f32],
) {
    let [c, h, w] = chw;
    let (dy, dx) = (v.dy as isize - pad as isize, v.dx as isize - pad as isize);
    for ch in 0..c {
        let src = &img[ch * h * w..(ch + 1) * h * w];
        let dst = &mut out[ch * h * w..(ch + 1) * h * w];
        let t = &lut[ch];
        let zero = t[0];
        for y in 0..h {
            let sy = y as isize + dy;
            let row = &mut dst[y * w..(y + 1) * w];
            if sy < 0 || sy >= h as isize {
                row.fill(zero);
                continue;
            }
            let srow = &src[sy as usize * w..(sy as usize + 1) * w];
            for (x, o) in row.iter_mut().enumerate() {
                let xx = if v.flip != 0 { w - 1 - x } else { x };
                let sx = xx as isize + dx;
                *o = if sx < 0 || sx >= w as isize {
                    zero
                } else {
                    t[srow[sx as usize] as usize]
                };
            }
        }
    }
}

/// Assemble samples `idx` of `split` under `views` (one per sample) into a
/// flat `[B,C,H,W]` buffer.
pub fn assemble(
    split: &Split,
    idx: &[usize],
    views: &[ViewParams],
    spec: &ViewSpec,
    lut: &[[f32; 256]],
) -> Vec<f32> {
    assert_eq!(idx.len(), views.len(), "one view per sample");
    let n = split.image_len();
    let mut out = vec![0f32; idx.len() * n];
    out.par_chunks_mut(n)
        .zip(idx.par_iter().zip(views.par_iter()))
        .for_each(|(o, (&i, &v))| {
            apply_view(split.image(i), split.chw, spec.pad as usize, v, lut, o)
        });
    out
}

/// [`assemble`] as a tensor on `device`.
pub fn batch_tensor(
    split: &Split,
    idx: &[usize],
    views: &[ViewParams],
    spec: &ViewSpec,
    lut: &[[f32; 256]],
    device: Device,
) -> Tensor {
    let [c, h, w] = split.chw;
    let buf = assemble(split, idx, views, spec, lut);
    Tensor::from_slice(&buf)
        .view([idx.len() as i64, c as i64, h as i64, w as i64])
        .to_device(device)
}

/// Mix `partner` (the partner's view, already normalised) into `out` (the
/// own view) as `m` says. Mixup blends in float32 with the quantised lambda;
/// cutmix copies the box (clipped to the image) from the partner.
pub fn mix_into(out: &mut [f32], partner: &[f32], chw: [usize; 3], m: &MixParams) {
    let [c, h, w] = chw;
    match m.kind {
        MixKind::None => {}
        MixKind::Mixup => {
            let lam = m.lam_f32();
            let rest = 1.0 - lam;
            for (o, &p) in out.iter_mut().zip(partner) {
                *o = lam * *o + rest * p;
            }
        }
        MixKind::Cutmix => {
            let (y0, y1, x0, x1) = m.clipped_box(h, w);
            for ch in 0..c {
                for y in y0..y1 {
                    let r = ch * h * w + y * w;
                    out[r + x0..r + x1].copy_from_slice(&partner[r + x0..r + x1]);
                }
            }
        }
    }
}

/// [`assemble`] with mixing: sample `idx[i]` under `views[i]`, mixed with
/// sample `mixes[i].partner` under `partner_views[i]` (the partner's view at
/// the same view index) unless `mixes[i]` is [`MixParams::NONE`]. With no
/// mixing it returns exactly what [`assemble`] returns.
pub fn assemble_mixed(
    split: &Split,
    idx: &[usize],
    views: &[ViewParams],
    partner_views: &[ViewParams],
    mixes: &[MixParams],
    spec: &ViewSpec,
    lut: &[[f32; 256]],
) -> Vec<f32> {
    assert_eq!(idx.len(), views.len(), "one view per sample");
    assert_eq!(
        idx.len(),
        partner_views.len(),
        "one partner view per sample"
    );
    assert_eq!(idx.len(), mixes.len(), "one mix per sample");
    let n = split.image_len();
    let pad = spec.pad as usize;
    let mut out = vec![0f32; idx.len() * n];
    out.par_chunks_mut(n)
        .zip(idx.par_iter().zip(views.par_iter()))
        .zip(partner_views.par_iter().zip(mixes.par_iter()))
        .for_each_init(
            || vec![0f32; n],
            |scratch, ((o, (&i, &v)), (&pv, m))| {
                apply_view(split.image(i), split.chw, pad, v, lut, o);
                if m.is_mixed() {
                    let p = split.image(m.partner as usize);
                    apply_view(p, split.chw, pad, pv, lut, scratch);
                    mix_into(o, scratch, split.chw, m);
                }
            },
        );
    out
}

/// [`assemble_mixed`] as a tensor on `device`: what the cache writer feeds
/// the teachers, and what the student rebuilds from a store's
/// `LogitStore::view_batch`.
#[allow(clippy::too_many_arguments)]
pub fn batch_tensor_mixed(
    split: &Split,
    idx: &[usize],
    views: &[ViewParams],
    partner_views: &[ViewParams],
    mixes: &[MixParams],
    spec: &ViewSpec,
    lut: &[[f32; 256]],
    device: Device,
) -> Tensor {
    let [c, h, w] = split.chw;
    let buf = assemble_mixed(split, idx, views, partner_views, mixes, spec, lut);
    Tensor::from_slice(&buf)
        .view([idx.len() as i64, c as i64, h as i64, w as i64])
        .to_device(device)
}

/// Soft targets `[B, classes]` (float32) of possibly mixed samples: the own
/// label weighs `own_weight`, the partner's label the rest; a plain sample
/// is its one-hot label.
pub fn mixed_label_tensor(
    split: &Split,
    idx: &[usize],
    mixes: &[MixParams],
    classes: usize,
    device: Device,
) -> Tensor {
    assert_eq!(idx.len(), mixes.len(), "one mix per sample");
    let [_, h, w] = split.chw;
    let mut t = vec![0f32; idx.len() * classes];
    for (row, (&i, m)) in t.chunks_exact_mut(classes).zip(idx.iter().zip(mixes)) {
        let own = m.own_weight(h, w);
        row[split.labels[i] as usize] += own as f32;
        if m.is_mixed() {
            row[split.labels[m.partner as usize] as usize] += (1.0 - own) as f32;
        }
    }
    Tensor::from_slice(&t)
        .view([idx.len() as i64, classes as i64])
        .to_device(device)
}

/// Labels of samples `idx` as an int64 tensor on `device`.
pub fn label_tensor(split: &Split, idx: &[usize], device: Device) -> Tensor {
    let l: Vec<i64> = idx.iter().map(|&i| split.labels[i] as i64).collect();
    Tensor::from_slice(&l).to_device(device)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_and_flip_by_hand() {
        // One 1x3x3 image 1..9, pad 1, identity lut (mean 0, std 1/255).
        let img: Vec<u8> = (1..=9).collect();
        let l = lut(&[0.0], &[1.0 / 255.0]);
        let mut out = vec![0f32; 9];
        let round = |v: &[f32]| v.iter().map(|x| x.round()).collect::<Vec<_>>();
        // Shift down-right by one: dy=dx=0 means the crop starts one pixel above/left.
        apply_view(
            &img,
            [1, 3, 3],
            1,
            ViewParams {
                dy: 0,
                dx: 0,
                flip: 0,
            },
            &l,
            &mut out,
        );
        assert_eq!(round(&out), vec![0., 0., 0., 0., 1., 2., 0., 4., 5.]);
        apply_view(
            &img,
            [1, 3, 3],
            1,
            ViewParams {
                dy: 1,
                dx: 1,
                flip: 1,
            },
            &l,
            &mut out,
        );
        assert_eq!(round(&out), vec![3., 2., 1., 6., 5., 4., 9., 8., 7.]);
        apply_view(
            &img,
            [1, 3, 3],
            1,
            ViewParams {
                dy: 2,
                dx: 1,
                flip: 0,
            },
            &l,
            &mut out,
        );
        assert_eq!(round(&out), vec![4., 5., 6., 7., 8., 9., 0., 0., 0.]);
    }

    /// Four 2x4x4 images, image i's pixel p = 10 * i + p % 16 (channel 1 adds 100).
    fn split4() -> Split {
        let mut images = vec![];
        for i in 0..4u8 {
            for ch in 0..2u8 {
                images.extend((0..16u8).map(|p| 10 * i + p + 100 * ch));
            }
        }
        Split {
            images,
            labels: vec![0, 1, 2, 1],
            chw: [2, 4, 4],
        }
    }

    fn bits(t: &Tensor) -> Vec<u32> {
        Vec::<f32>::try_from(&t.contiguous().view(-1))
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    }

    #[test]
    fn unmixed_batches_equal_batch_tensor_bit_for_bit() {
        let s = split4();
        let spec = ViewSpec { pad: 1, flip: true };
        let l = lut(&[0.3, 0.6], &[0.2, 0.25]);
        let idx = [0, 3, 1, 2, 3];
        let views: Vec<ViewParams> = (0..5)
            .map(|v| spec.draw(4, idx[v] as u64, v as u64))
            .collect();
        let plain = batch_tensor(&s, &idx, &views, &spec, &l, Device::Cpu);
        let none = vec![MixParams::NONE; 5];
        let mixed = batch_tensor_mixed(&s, &idx, &views, &views, &none, &spec, &l, Device::Cpu);
        assert_eq!(plain.size(), mixed.size());
        assert_eq!(bits(&plain), bits(&mixed));
        let labels = mixed_label_tensor(&s, &idx, &none, 3, Device::Cpu);
        let want: Vec<f32> = [0, 1, 1, 2, 1]
            .iter()
            .flat_map(|&y| (0..3).map(move |c| (c == y) as u8 as f32))
            .collect();
        assert_eq!(Vec::<f32>::try_from(&labels.view(-1)).unwrap(), want);
    }

    #[test]
    fn mixup_and_cutmix_by_hand() {
        let s = split4();
        let spec = ViewSpec {
            pad: 1,
            flip: false,
        };
        // Identity lut: pixel values come out as themselves.
        let l = lut(&[0.0, 0.0], &[1.0 / 255.0, 1.0 / 255.0]);
        let id = ViewParams::identity(&spec);
        let shifted = ViewParams {
            dy: 2,
            dx: 1,
            flip: 0,
        };
        let mixup = MixParams {
            partner: 2,
            kind: MixKind::Mixup,
            lam_q: 49151, // lambda = 0.75 within 1e-5
            ..MixParams::NONE
        };
        let cutmix = MixParams {
            partner: 3,
            kind: MixKind::Cutmix,
            y0: 1,
            x0: 2,
            h: 2,
            w: 9, // runs over the edge: clipped to columns 2..4
            ..MixParams::NONE
        };
        let out = assemble_mixed(
            &s,
            &[0, 1],
            &[id, id],
            &[id, shifted],
            &[mixup, cutmix],
            &spec,
            &l,
        );
        let plain = |i: usize, v: ViewParams| assemble(&s, &[i], &[v], &spec, &l);
        let (a, b) = (plain(0, id), plain(2, id));
        let lam = 49151f32 / 65535.0;
        for p in 0..32 {
            assert_eq!(out[p], lam * a[p] + (1.0 - lam) * b[p]);
            assert!((out[p] - (0.75 * a[p] + 0.25 * b[p])).abs() < 1e-2);
        }
        // Sample 1 with sample 3's shifted view pasted into rows 1..3, columns 2..4.
        let (own, other) = (plain(1, id), plain(3, shifted));
        for ch in 0..2 {
            for y in 0..4 {
                for x in 0..4 {
                    let p = ch * 16 + y * 4 + x;
                    let inside = (1..3).contains(&y) && (2..4).contains(&x);
                    let want = if inside { other[p] } else { own[p] };
                    assert_eq!(out[32 + p], want, "ch {ch} y {y} x {x}");
                }
            }
        }
        // Shifted down by one: row 3 of the partner's view is padding (0).
        assert_eq!(other[3 * 4], 0.0);
        assert_eq!(out[32 + 4 + 2].round(), (10 * 3 + 2 * 4 + 2) as f32);
        // Labels: sample 0 (label 0) with 2 (label 2) at 0.75; sample 1
        // (label 1) with 3 (label 1): all weight on class 1.
        let t = mixed_label_tensor(&s, &[0, 1], &[mixup, cutmix], 3, Device::Cpu);
        let t = Vec::<f32>::try_from(&t.view(-1)).unwrap();
        assert_eq!(t[0], (49151.0 / 65535.0f64) as f32);
        assert_eq!(t[1], 0.0);
        assert!((t[2] - 0.25).abs() < 1e-4);
        assert_eq!(&t[3..], &[0.0, 1.0, 0.0]);
    }
}
