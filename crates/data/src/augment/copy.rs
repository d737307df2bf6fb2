//! Views that copy stored pixels unchanged: a box of the view's own size
//! (pad-crops and flips, centre crops, the plain view). Their batch crosses
//! to a GPU as uint8, a quarter of the float32 bytes, and is normalised
//! there through the same per-channel table the host path reads, so the
//! floats are the host path's, bit for bit.

use super::{Result, Split, ViewParams, ViewSpec, nchw, unpadded, upload};
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

/// Whether every view copies pixels: its box (the whole image for a
/// pad-crop) has the view's size, so every bilinear tap weighs 1 or 0.
pub fn copies(views: &[ViewParams], spec: &ViewSpec, chw: [usize; 3]) -> bool {
    let hw = [chw[1], chw[2]];
    let out = spec.out_hw(hw);
    views.iter().all(|v| v.box_hw(hw) == out)
}

/// Write one copying view of `img` (`[c,h,w]` uint8) into `out`
/// (`[c,oh,ow]` uint8): the pixels [`super::apply_view`] reads, before its
/// table; the padded border is 0.
fn copy_view(
    img: &[u8],
    chw: [usize; 3],
    pad: usize,
    v: ViewParams,
    out: &mut [u8],
    out_hw: [usize; 2],
) {
    let [c, h, w] = chw;
    let [oh, ow] = out_hw;
    let at = |base, i, len| unpadded(base, i, pad, len);
    let cols: Vec<Option<usize>> = (0..ow)
        .map(|x| at(v.x, if v.flip != 0 { ow - 1 - x } else { x }, w))
        .collect();
    for ch in 0..c {
        let src = &img[ch * h * w..(ch + 1) * h * w];
        let dst = &mut out[ch * oh * ow..(ch + 1) * oh * ow];
        for (y, row) in dst.chunks_exact_mut(ow).enumerate() {
            let Some(sy) = at(v.y, y, h) else {
                row.fill(0);
                continue;
            };
            let srow = &src[sy * w..(sy + 1) * w];
            for (o, &sx) in row.iter_mut().zip(&cols) {
                *o = sx.map_or(0, |sx| srow[sx]);
            }
        }
    }
}

/// Samples `idx` of `split` under copying `views` as a flat `[B,C,H,W]`
/// uint8 buffer (the caller checked [`copies`]).
pub fn assemble_u8(
    split: &Split,
    idx: &[usize],
    views: &[ViewParams],
    spec: &ViewSpec,
) -> Result<Vec<u8>> {
    assert_eq!(idx.len(), views.len(), "one view per sample");
    debug_assert!(copies(views, spec, split.chw));
    let [c, oh, ow] = spec.out_chw(split.chw);
    let n = c * oh * ow;
    let g = split.gather(idx)?;
    let mut out = vec![0u8; idx.len() * n];
    out.par_chunks_mut(n)
        .zip(idx.par_iter().zip(views.par_iter()))
        .for_each(|(o, (&i, &v))| {
            copy_view(g.image(i), split.chw, spec.pad as usize, v, o, [oh, ow])
        });
    Ok(out)
}

/// `x` (`[B,C,H,W]` uint8) through channel `c`'s table `lut[c]`, on `x`'s
/// device: a lookup, not arithmetic, so the result is the host's floats.
pub fn normalise(x: &Tensor, lut: &[[f32; 256]]) -> Tensor {
    let device = x.device();
    let c = lut.len() as i64;
    let table = upload(Tensor::from_slice(lut.as_flattened()), device);
    let offsets = Tensor::arange(c, (Kind::Int, device)).view([1, c, 1, 1]) * 256;
    let at = x.to_kind(Kind::Int) + offsets;
    table.index_select(0, &at.flatten(0, -1)).view_as(x)
}

/// [`assemble_u8`] moved to `device` as uint8 and normalised there.
pub fn batch_tensor_u8(
    split: &Split,
    idx: &[usize],
    views: &[ViewParams],
    spec: &ViewSpec,
    lut: &[[f32; 256]],
    device: Device,
) -> Result<Tensor> {
    let buf = assemble_u8(split, idx, views, spec)?;
    Ok(normalise(
        &upload(nchw(&buf, spec.out_chw(split.chw)), device),
        lut,
    ))
}
