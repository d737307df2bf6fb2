//! Batch assembly: apply views to uint8 images and normalise to `[B,C,H,W]`
//! floats. Runs on rayon over plain buffers (tensors are not `Sync`); every
//! output pixel is a pure function of (image, view), so the result does not
//! depend on the thread count. A batch's images are gathered first
//! (`Split::gather`: one decode per touched chunk when read by chunk).
//!
//! Mixed views (mixup, cutmix; `kd_core::mix`) are assembled here too, by the
//! one function both the cache writer and the student call, so the student
//! trains on the very pixels the teachers' stored logits were computed on.

use crate::error::Result;
use crate::split::Split;
use kd_core::device::upload;
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
/// The padded border is zero pixels (normalised like any black pixel). A
/// box of the image's size is a shift (pad-crop); any other box is resized
/// to the image size by [`resize_box`].
pub fn apply_view(
    img: &[u8],
    chw: [usize; 3],
    pad: usize,
    v: ViewParams,
    lut: &[[f32; 256]],
    out: &mut [f32],
) {
    let [c, h, w] = chw;
    if !v.is_shift([h, w]) {
        return resize_box(img, chw, pad, v, lut, out);
    }
    let (dy, dx) = (v.y as isize - pad as isize, v.x as isize - pad as isize);
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

/// One output coordinate's two source indices and weights, as
/// `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`
/// computes them (in f32, source clamped at 0, no antialiasing).
fn bilinear_taps(out_len: usize, in_len: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = in_len as f32 / out_len as f32;
    (0..out_len)
        .map(|o| {
            let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src as usize).min(in_len - 1);
            let i1 = if i0 + 1 < in_len { i0 + 1 } else { i0 };
            let l1 = src - i0 as f32;
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// The box `v` of the zero-padded `img`, resized bilinearly to the image
/// size, flipped if `v.flip`. Interpolates the normalised values (the same
/// as normalising interpolated pixels: normalisation is affine), so the
/// cache writer and the student, both calling this, get identical floats.
pub fn resize_box(
    img: &[u8],
    chw: [usize; 3],
    pad: usize,
    v: ViewParams,
    lut: &[[f32; 256]],
    out: &mut [f32],
) {
    let [c, h, w] = chw;
    let [bh, bw] = v.size.map_or([h, w], |[a, b]| [a as usize, b as usize]);
    let rows = bilinear_taps(h, bh);
    let mut cols = bilinear_taps(w, bw);
    if v.flip != 0 {
        cols.reverse();
    }
    // Padded coordinates to image coordinates; None in the zero border.
    let at = |base: u16, i: usize, len: usize| -> Option<usize> {
        (base as usize + i).checked_sub(pad).filter(|&p| p < len)
    };
    let col_at: Vec<(Option<usize>, Option<usize>, f32, f32)> = cols
        .iter()
        .map(|&(a, b, la, lb)| (at(v.x, a, w), at(v.x, b, w), la, lb))
        .collect();
    for ch in 0..c {
        let src = &img[ch * h * w..(ch + 1) * h * w];
        let dst = &mut out[ch * h * w..(ch + 1) * h * w];
        let t = &lut[ch];
        let px = |y: Option<usize>, x: Option<usize>| match (y, x) {
            (Some(y), Some(x)) => t[src[y * w + x] as usize],
            _ => t[0],
        };
        for (oy, &(y0, y1, ly0, ly1)) in rows.iter().enumerate() {
            let (y0, y1) = (at(v.y, y0, h), at(v.y, y1, h));
            for (ox, &(x0, x1, lx0, lx1)) in col_at.iter().enumerate() {
                dst[oy * w + ox] = ly0 * (lx0 * px(y0, x0) + lx1 * px(y0, x1))
                    + ly1 * (lx0 * px(y1, x0) + lx1 * px(y1, x1));
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
) -> Result<Vec<f32>> {
    assert_eq!(idx.len(), views.len(), "one view per sample");
    let n = split.image_len();
    let g = split.gather(idx)?;
    let mut out = vec![0f32; idx.len() * n];
    out.par_chunks_mut(n)
        .zip(idx.par_iter().zip(views.par_iter()))
        .for_each(|(o, (&i, &v))| apply_view(g.image(i), split.chw, spec.pad as usize, v, lut, o));
    Ok(out)
}

/// [`assemble`] as a tensor on `device`.
pub fn batch_tensor(
    split: &Split,
    idx: &[usize],
    views: &[ViewParams],
    spec: &ViewSpec,
    lut: &[[f32; 256]],
    device: Device,
) -> Result<Tensor> {
    let [c, h, w] = split.chw;
    let buf = assemble(split, idx, views, spec, lut)?;
    let t = Tensor::from_slice(&buf).view([idx.len() as i64, c as i64, h as i64, w as i64]);
    Ok(upload(t, device))
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
) -> Result<Vec<f32>> {
    assert_eq!(idx.len(), views.len(), "one view per sample");
    assert_eq!(
        idx.len(),
        partner_views.len(),
        "one partner view per sample"
    );
    assert_eq!(idx.len(), mixes.len(), "one mix per sample");
    let n = split.image_len();
    let pad = spec.pad as usize;
    let mut needed = idx.to_vec();
    needed.extend(
        mixes
            .iter()
            .filter(|m| m.is_mixed())
            .map(|m| m.partner as usize),
    );
    let g = split.gather(&needed)?;
    let mut out = vec![0f32; idx.len() * n];
    out.par_chunks_mut(n)
        .zip(idx.par_iter().zip(views.par_iter()))
        .zip(partner_views.par_iter().zip(mixes.par_iter()))
        .for_each_init(
            || vec![0f32; n],
            |scratch, ((o, (&i, &v)), (&pv, m))| {
                apply_view(g.image(i), split.chw, pad, v, lut, o);
                if m.is_mixed() {
                    let p = g.image(m.partner as usize);
                    apply_view(p, split.chw, pad, pv, lut, scratch);
                    mix_into(o, scratch, split.chw, m);
                }
            },
        );
    Ok(out)
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
) -> Result<Tensor> {
    let [c, h, w] = split.chw;
    let buf = assemble_mixed(split, idx, views, partner_views, mixes, spec, lut)?;
    let t = Tensor::from_slice(&buf).view([idx.len() as i64, c as i64, h as i64, w as i64]);
    Ok(upload(t, device))
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
    upload(
        Tensor::from_slice(&t).view([idx.len() as i64, classes as i64]),
        device,
    )
}

/// Labels of samples `idx` as an int64 tensor on `device`.
pub fn label_tensor(split: &Split, idx: &[usize], device: Device) -> Tensor {
    let l: Vec<i64> = idx.iter().map(|&i| split.labels[i] as i64).collect();
    upload(Tensor::from_slice(&l), device)
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
            ViewParams::shifted(0, 0, 0),
            &l,
            &mut out,
        );
        assert_eq!(round(&out), vec![0., 0., 0., 0., 1., 2., 0., 4., 5.]);
        apply_view(
            &img,
            [1, 3, 3],
            1,
            ViewParams::shifted(1, 1, 1),
            &l,
            &mut out,
        );
        assert_eq!(round(&out), vec![3., 2., 1., 6., 5., 4., 9., 8., 7.]);
        apply_view(
            &img,
            [1, 3, 3],
            1,
            ViewParams::shifted(2, 1, 0),
            &l,
            &mut out,
        );
        assert_eq!(round(&out), vec![4., 5., 6., 7., 8., 9., 0., 0., 0.]);
    }

    #[test]
    fn resized_boxes_agree_with_torch_bilinear_interpolate() {
        // A 3x12x10 image of arbitrary bytes; boxes that shrink, enlarge,
        // stretch and touch the edges, with and without flip.
        let (c, h, w) = (3usize, 12usize, 10usize);
        let img: Vec<u8> = (0..c * h * w).map(|i| (i * 37 % 251) as u8).collect();
        let l = lut(&[0.2, 0.4, 0.6], &[0.3, 0.2, 0.25]);
        let full = Tensor::from_slice(&{
            let mut o = vec![0f32; c * h * w];
            apply_view(&img, [c, h, w], 0, ViewParams::shifted(0, 0, 0), &l, &mut o);
            o
        })
        .view([1, c as i64, h as i64, w as i64]);
        for (y, x, bh, bw, flip) in [
            (0, 0, 12, 5, 0),
            (3, 2, 4, 7, 1),
            (1, 1, 11, 9, 0),
            (5, 6, 7, 4, 1),
            (0, 9, 1, 1, 0),
        ] {
            let v = ViewParams {
                y,
                x,
                size: Some([bh, bw]),
                flip,
            };
            let mut out = vec![0f32; c * h * w];
            apply_view(&img, [c, h, w], 0, v, &l, &mut out);
            let crop = full
                .narrow(2, y as i64, bh as i64)
                .narrow(3, x as i64, bw as i64);
            let mut want = crop.upsample_bilinear2d([h as i64, w as i64], false, None, None);
            if flip == 1 {
                want = want.flip([3]);
            }
            let want = Vec::<f32>::try_from(&want.contiguous().view(-1)).unwrap();
            let worst = out
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "box {v:?}: max difference {worst}");
        }
        // A box reaching into the zero padding reads zero pixels there.
        let mut out = vec![0f32; c * h * w];
        let v = ViewParams {
            y: 0,
            x: 0,
            size: Some([6, 5]),
            flip: 0,
        };
        apply_view(&img, [c, h, w], 2, v, &l, &mut out);
        assert_eq!(out[0], l[0][0]);
    }

    /// Four 2x4x4 images, image i's pixel p = 10 * i + p % 16 (channel 1 adds 100).
    fn split4() -> Split {
        let mut images = vec![];
        for i in 0..4u8 {
            for ch in 0..2u8 {
                images.extend((0..16u8).map(|p| 10 * i + p + 100 * ch));
            }
        }
        Split::in_memory(images, vec![0, 1, 2, 1], [2, 4, 4])
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
        let spec = ViewSpec {
            pad: 1,
            ..ViewSpec::default()
        };
        let l = lut(&[0.3, 0.6], &[0.2, 0.25]);
        let idx = [0, 3, 1, 2, 3];
        let views: Vec<ViewParams> = (0..5)
            .map(|v| spec.draw([4, 4], 4, idx[v] as u64, v as u64))
            .collect();
        let plain = batch_tensor(&s, &idx, &views, &spec, &l, Device::Cpu).unwrap();
        let none = vec![MixParams::NONE; 5];
        let mixed =
            batch_tensor_mixed(&s, &idx, &views, &views, &none, &spec, &l, Device::Cpu).unwrap();
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
            resized_crop: None,
        };
        // Identity lut: pixel values come out as themselves.
        let l = lut(&[0.0, 0.0], &[1.0 / 255.0, 1.0 / 255.0]);
        let id = ViewParams::identity(&spec);
        let shifted = ViewParams::shifted(2, 1, 0);
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
        )
        .unwrap();
        let plain = |i: usize, v: ViewParams| assemble(&s, &[i], &[v], &spec, &l).unwrap();
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
