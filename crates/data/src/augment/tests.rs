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
