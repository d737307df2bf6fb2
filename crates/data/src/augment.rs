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

/// Write one view of `img` (`[c,h,w]` uint8) into `out` (`[c,oh,ow]` f32,
/// `out_hw = [oh, ow]` the view's size). The padded border is zero pixels
/// (normalised like any black pixel). A box of the image's size in a view
/// of the image's size is a shift (pad-crop); any other box is resized to
/// the view's size by [`resize_box`].
pub fn apply_view(
    img: &[u8],
    chw: [usize; 3],
    pad: usize,
    v: ViewParams,
    lut: &[[f32; 256]],
    out: &mut [f32],
    out_hw: [usize; 2],
) {
    let [c, h, w] = chw;
    if out_hw != [h, w] || !v.is_shift([h, w]) {
        return resize_box(img, chw, pad, v, lut, out, out_hw);
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

/// Coordinate `i` of a box starting at `base` in the image padded by `pad`,
/// in the image of side `len`; `None` in the zero border.
fn unpadded(base: u16, i: usize, pad: usize, len: usize) -> Option<usize> {
    (base as usize + i).checked_sub(pad).filter(|&p| p < len)
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

/// The box `v` of the zero-padded `img`, resized bilinearly to `out_hw`,
/// flipped if `v.flip`. Interpolates the normalised values (the same as
/// normalising interpolated pixels: normalisation is affine), so the cache
/// writer and the student, both calling this, get identical floats. A box
/// of the output's size is copied exactly (every tap weighs 1 and 0).
pub fn resize_box(
    img: &[u8],
    chw: [usize; 3],
    pad: usize,
    v: ViewParams,
    lut: &[[f32; 256]],
    out: &mut [f32],
    out_hw: [usize; 2],
) {
    let [c, h, w] = chw;
    let [oh, ow] = out_hw;
    let [bh, bw] = v.box_hw([h, w]);
    let rows = bilinear_taps(oh, bh);
    let mut cols = bilinear_taps(ow, bw);
    if v.flip != 0 {
        cols.reverse();
    }
    let at = |base, i, len| unpadded(base, i, pad, len);
    let col_at: Vec<(Option<usize>, Option<usize>, f32, f32)> = cols
        .iter()
        .map(|&(a, b, la, lb)| (at(v.x, a, w), at(v.x, b, w), la, lb))
        .collect();
    for ch in 0..c {
        let src = &img[ch * h * w..(ch + 1) * h * w];
        let dst = &mut out[ch * oh * ow..(ch + 1) * oh * ow];
        let t = &lut[ch];
        let px = |y: Option<usize>, x: Option<usize>| match (y, x) {
            (Some(y), Some(x)) => t[src[y * w + x] as usize],
            _ => t[0],
        };
        for (oy, &(y0, y1, ly0, ly1)) in rows.iter().enumerate() {
            let (y0, y1) = (at(v.y, y0, h), at(v.y, y1, h));
            for (ox, &(x0, x1, lx0, lx1)) in col_at.iter().enumerate() {
                dst[oy * ow + ox] = ly0 * (lx0 * px(y0, x0) + lx1 * px(y0, x1))
                    + ly1 * (lx0 * px(y1, x0) + lx1 * px(y1, x1));
            }
        }
    }
}

/// Assemble samples `idx` of `split` under `views` (one per sample) into a
/// flat `[B,C,H,W]` buffer, `[C,H,W]` the views' (`spec.out_chw`).
pub fn assemble(
    split: &Split,
    idx: &[usize],
    views: &[ViewParams],
    spec: &ViewSpec,
    lut: &[[f32; 256]],
) -> Result<Vec<f32>> {
    assert_eq!(idx.len(), views.len(), "one view per sample");
    let [c, oh, ow] = spec.out_chw(split.chw);
    let n = c * oh * ow;
    let g = split.gather(idx)?;
    let mut out = vec![0f32; idx.len() * n];
    out.par_chunks_mut(n)
        .zip(idx.par_iter().zip(views.par_iter()))
        .for_each(|(o, (&i, &v))| {
            apply_view(
                g.image(i),
                split.chw,
                spec.pad as usize,
                v,
                lut,
                o,
                [oh, ow],
            )
        });
    Ok(out)
}

/// [`assemble`] as a tensor on `device`. For a GPU, views that copy stored
/// pixels go as uint8 and are normalised there ([`copy::batch_tensor_u8`]:
/// the same floats, a quarter of the bytes to move).
pub fn batch_tensor(
    split: &Split,
    idx: &[usize],
    views: &[ViewParams],
    spec: &ViewSpec,
    lut: &[[f32; 256]],
    device: Device,
) -> Result<Tensor> {
    if device.is_cuda() && copy::copies(views, spec, split.chw) {
        return copy::batch_tensor_u8(split, idx, views, spec, lut, device);
    }
    let buf = assemble(split, idx, views, spec, lut)?;
    Ok(upload(nchw(&buf, spec.out_chw(split.chw)), device))
}

/// A flat buffer of whole `chw` views as a `[B,C,H,W]` host tensor.
fn nchw<T: tch::kind::Element>(buf: &[T], chw: [usize; 3]) -> Tensor {
    let [c, h, w] = chw.map(|d| d as i64);
    Tensor::from_slice(buf).view([-1, c, h, w])
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
    let out_chw = spec.out_chw(split.chw);
    let [c, oh, ow] = out_chw;
    let n = c * oh * ow;
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
                apply_view(g.image(i), split.chw, pad, v, lut, o, [oh, ow]);
                if m.is_mixed() {
                    let p = g.image(m.partner as usize);
                    apply_view(p, split.chw, pad, pv, lut, scratch, [oh, ow]);
                    mix_into(o, scratch, out_chw, m);
                }
            },
        );
    Ok(out)
}

/// [`assemble_mixed`] as a tensor on `device`: what the cache writer feeds
/// the teachers, and what the student rebuilds from a store's
/// `LogitStore::view_batch`. A batch without mixing is [`batch_tensor`]'s.
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
    if !mixes.iter().any(MixParams::is_mixed) {
        return batch_tensor(split, idx, views, spec, lut, device);
    }
    let buf = assemble_mixed(split, idx, views, partner_views, mixes, spec, lut)?;
    Ok(upload(nchw(&buf, spec.out_chw(split.chw)), device))
}

/// Soft targets `[B, classes]` (float32) of possibly mixed samples: the own
/// label weighs `own_weight` (of a cutmix box in a view of `view_hw`), the
/// partner's label the rest; a plain sample is its one-hot label.
pub fn mixed_label_tensor(
    split: &Split,
    idx: &[usize],
    mixes: &[MixParams],
    view_hw: [usize; 2],
    classes: usize,
    device: Device,
) -> Tensor {
    assert_eq!(idx.len(), mixes.len(), "one mix per sample");
    let [h, w] = view_hw;
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

pub mod copy;
#[cfg(test)]
mod tests;
