//! Batch assembly: apply views to uint8 images and normalise to `[B,C,H,W]`
//! floats. Runs on rayon over plain buffers (tensors are not `Sync`); every
//! output pixel is a pure function of (image, view), so the result does not
//! depend on the thread count.

use crate::split::Split;
use kd_core::{ViewParams, ViewSpec};
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
}
