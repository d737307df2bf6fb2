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
        [3, 3],
    );
    assert_eq!(round(&out), vec![0., 0., 0., 0., 1., 2., 0., 4., 5.]);
    apply_view(
        &img,
        [1, 3, 3],
        1,
        ViewParams::shifted(1, 1, 1),
        &l,
        &mut out,
        [3, 3],
    );
    assert_eq!(round(&out), vec![3., 2., 1., 6., 5., 4., 9., 8., 7.]);
    apply_view(
        &img,
        [1, 3, 3],
        1,
        ViewParams::shifted(2, 1, 0),
        &l,
        &mut out,
        [3, 3],
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
        apply_view(
            &img,
            [c, h, w],
            0,
            ViewParams::shifted(0, 0, 0),
            &l,
            &mut o,
            [h, w],
        );
        o
    })
    .view([1, c as i64, h as i64, w as i64]);
    // Views of the image's size, and of sizes of their own (smaller, larger).
    for (oh, ow) in [(h, w), (8, 8), (7, 5), (16, 16)] {
        for (y, x, bh, bw, flip) in [
            (0, 0, 12, 5, 0),
            (3, 2, 4, 7, 1),
            (1, 1, 11, 9, 0),
            (5, 6, 7, 4, 1),
            (0, 9, 1, 1, 0),
            (2, 1, 8, 8, 1),
        ] {
            let v = ViewParams {
                y,
                x,
                size: Some([bh, bw]),
                flip,
            };
            let mut out = vec![0f32; c * oh * ow];
            apply_view(&img, [c, h, w], 0, v, &l, &mut out, [oh, ow]);
            let crop = full
                .narrow(2, y as i64, bh as i64)
                .narrow(3, x as i64, bw as i64);
            let mut want = crop.upsample_bilinear2d([oh as i64, ow as i64], false, None, None);
            if flip == 1 {
                want = want.flip([3]);
            }
            let want = Vec::<f32>::try_from(&want.contiguous().view(-1)).unwrap();
            let worst = out
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(
                worst < 1e-5,
                "box {v:?} to {oh}x{ow}: max difference {worst}"
            );
        }
    }
    // A box reaching into the zero padding reads zero pixels there.
    let mut out = vec![0f32; c * h * w];
    let v = ViewParams {
        y: 0,
        x: 0,
        size: Some([6, 5]),
        flip: 0,
    };
    apply_view(&img, [c, h, w], 2, v, &l, &mut out, [h, w]);
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
    let labels = mixed_label_tensor(&s, &idx, &none, [4, 4], 3, Device::Cpu);
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
        ..ViewSpec::default()
    };
    // Identity lut: pixel values come out as themselves.
    let l = lut(&[0.0, 0.0], &[1.0 / 255.0, 1.0 / 255.0]);
    let id = spec.plain([4, 4]);
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
    let t = mixed_label_tensor(&s, &[0, 1], &[mixup, cutmix], [4, 4], 3, Device::Cpu);
    let t = Vec::<f32>::try_from(&t.view(-1)).unwrap();
    assert_eq!(t[0], (49151.0 / 65535.0f64) as f32);
    assert_eq!(t[1], 0.0);
    assert!((t[2] - 0.25).abs() < 1e-4);
    assert_eq!(&t[3..], &[0.0, 1.0, 0.0]);
}

#[test]
fn views_of_a_size_of_their_own_crop_the_centre_and_mix_in_view_pixels() {
    use kd_core::{CropRange, MixMode, MixSpec, ViewBatch};
    let s = split4();
    let spec = ViewSpec {
        size: Some(2),
        ..ViewSpec::resized(CropRange::default(), false)
    };
    let l = lut(&[0.0, 0.0], &[1.0 / 255.0, 1.0 / 255.0]);
    // The plain view is the central 2x2 box, copied exactly (no blending).
    let plain = spec.plain([4, 4]);
    assert_eq!(
        plain,
        ViewParams {
            y: 1,
            x: 1,
            size: Some([2, 2]),
            flip: 0
        }
    );
    let out = assemble(&s, &[2], &[plain], &spec, &l).unwrap();
    let want: Vec<f32> = [0usize, 100]
        .iter()
        .flat_map(|&c| [5usize, 6, 9, 10].map(|p| l[0][20 + p + c]))
        .collect();
    assert_eq!(out, want);
    let t = batch_tensor(&s, &[0, 1, 2], &[plain; 3], &spec, &l, Device::Cpu).unwrap();
    assert_eq!(t.size(), [3, 2, 2, 2]);
    // Cutmix boxes are drawn in the view's pixels (3x3 here), not the
    // image's (4x4, where some would reach row or column 3).
    let spec3 = ViewSpec {
        size: Some(3),
        ..spec
    };
    let mix = MixSpec {
        mode: MixMode::Cutmix,
        prob: 1.0,
        ..MixSpec::default()
    };
    let pairs: Vec<(usize, usize)> = (0..4).flat_map(|i| (1..50).map(move |v| (i, v))).collect();
    let b = ViewBatch::draw(&spec3, &mix, 3, 4, [4, 4], &pairs);
    let ends = |m: &MixParams| (m.y0 + m.h).max(m.x0 + m.w);
    assert!(b.mixes.iter().all(|m| ends(m) <= 3));
    assert!(b.mixes.iter().any(|m| m.h > 0));
    let in_image = ViewBatch::draw(&ViewSpec { size: None, ..spec }, &mix, 3, 4, [4, 4], &pairs);
    assert!(in_image.mixes.iter().any(|m| ends(m) == 4));
    let mixed = assemble_mixed(
        &s,
        &[0],
        &b.views[..1],
        &b.partner_views[..1],
        &b.mixes[..1],
        &spec3,
        &l,
    )
    .unwrap();
    assert_eq!(mixed.len(), 2 * 3 * 3);
    // A box of one row of a 2x2 view leaves the own label half the weight.
    let half = MixParams {
        partner: 1,
        kind: MixKind::Cutmix,
        y0: 0,
        x0: 0,
        h: 1,
        w: 2,
        ..MixParams::NONE
    };
    let t = mixed_label_tensor(&s, &[0], &[half], [2, 2], 3, Device::Cpu);
    let t = Vec::<f32>::try_from(&t.view(-1)).unwrap();
    assert_eq!(t, vec![0.5, 0.5, 0.0]);
}

#[test]
fn copying_views_as_uint8_normalise_to_the_host_floats_bit_for_bit() {
    // Two-channel 5x6 images, pad 2: pad-crops at every offset with and
    // without a flip, then centre-style boxes of a 3-pixel view.
    let (n, chw) = (4usize, [2usize, 5, 6]);
    let pixels: Vec<u8> = (0..n * 60).map(|k| ((k * 53 + 7) % 256) as u8).collect();
    let labels: Vec<u16> = (0..n as u16).collect();
    let s = Split::in_memory(pixels, labels, chw);
    let l = lut(&[0.3, 0.55], &[0.21, 0.17]);
    let spec = ViewSpec {
        pad: 2,
        ..ViewSpec::default()
    };
    let mut views = vec![];
    for y in 0..=4u16 {
        for x in 0..=4u16 {
            views.push(ViewParams::shifted(y, x, ((x + y) % 2) as u8));
        }
    }
    let idx: Vec<usize> = (0..views.len()).map(|i| i % n).collect();
    assert!(copy::copies(&views, &spec, chw));
    let host = batch_tensor(&s, &idx, &views, &spec, &l, Device::Cpu).unwrap();
    let u8s = copy::batch_tensor_u8(&s, &idx, &views, &spec, &l, Device::Cpu).unwrap();
    assert_eq!(u8s.size(), host.size());
    assert_eq!(u8s.kind(), tch::Kind::Float);
    assert!(u8s.equal(&host), "pad-crops differ");
    // Boxes of the view's size inside the image (resized-crop views whose
    // box needs no resizing) copy too.
    let spec3 = ViewSpec {
        pad: 0,
        resized_crop: Some(kd_core::CropRange::default()),
        size: Some(3),
        ..ViewSpec::default()
    };
    let boxes: Vec<ViewParams> = (0..6u16)
        .map(|k| ViewParams {
            y: k % 3,
            x: k % 4,
            size: Some([3, 3]),
            flip: (k % 2) as u8,
        })
        .collect();
    let idx: Vec<usize> = (0..boxes.len()).map(|i| i % n).collect();
    assert!(copy::copies(&boxes, &spec3, chw));
    let host = batch_tensor(&s, &idx, &boxes, &spec3, &l, Device::Cpu).unwrap();
    let u8s = copy::batch_tensor_u8(&s, &idx, &boxes, &spec3, &l, Device::Cpu).unwrap();
    assert!(u8s.equal(&host), "centre-style boxes differ");
    // A box that must be resized does not copy.
    let resized = ViewParams {
        size: Some([4, 4]),
        ..boxes[0]
    };
    assert!(!copy::copies(&[boxes[0], resized], &spec3, chw));
}
