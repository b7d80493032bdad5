use image::{Rgb, RgbImage};
use unreid::data::transforms::{
    augment_batch, augment_into, augment_keyed, draw_params, resample_weights, resize,
    AugmentConfig, AugmentParams, Interpolation, SampleKey, IMAGENET_MEAN, IMAGENET_STD,
};
use unreid::random::Rng;

fn random_image(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut rng = Rng::new(seed);
    RgbImage::from_fn(w, h, |_, _| {
        Rgb([
            rng.below(256) as u8,
            rng.below(256) as u8,
            rng.below(256) as u8,
        ])
    })
}

/// Hand-computed from Pillow's algorithm: a 2 -> 4 bilinear upscale of [0, 255] is [0, 64, 191, 255]
/// (edge outputs see one tap only; inner ones 0.75/0.25 in 22-bit fixed point, rounded at .5 upward).
#[test]
fn bilinear_upscale_matches_pillow_by_hand() {
    let img = RgbImage::from_raw(2, 1, vec![0, 0, 0, 255, 255, 255]).unwrap();
    let out = resize(&img, 1, 4, Interpolation::Bilinear);
    let red: Vec<u8> = out.pixels().map(|p| p[0]).collect();
    assert_eq!(red, vec![0, 64, 191, 255]);
}

/// Pillow's coefficient tables: normalised weights, ksize = 2 * ceil(support) + 1 with the support widened by the
/// scale when downscaling (antialiasing), and Pillow's bicubic constant a = -0.5.
#[test]
fn bicubic_weights_follow_pillow_support_and_normalisation() {
    // Upscaling by 2: 5 taps max, weights sum to one, the centre tap of an integer-aligned position is 1.
    let w = resample_weights(64, 128, Interpolation::Bicubic);
    assert_eq!(w.ksize, 5);
    for (i, &(_, taps)) in w.bounds.iter().enumerate() {
        let s: f64 = w.weights[i * w.ksize..i * w.ksize + taps].iter().sum();
        assert!((s - 1.0).abs() < 1e-12);
    }
    // Downscaling by 2 widens the support to 4 input pixels each side: ksize = 2 * 4 + 1.
    let w = resample_weights(256, 128, Interpolation::Bicubic);
    assert_eq!(w.ksize, 9);
    // a = -0.5 (Pillow), not -0.75 (torch.nn.functional.interpolate): the kernel at 1.5 is a * -0.5 ... = -0.0625.
    assert!((Interpolation::Bicubic.kernel(1.5) - (-0.0625)).abs() < 1e-12);
    assert!((Interpolation::Bicubic.kernel(0.5) - 0.5625).abs() < 1e-12);
}

/// The straightforward definition: separable convolution with the same widened kernel, in f64, no intermediate
/// rounding. Pillow's fixed point and u8 intermediate differ from it by at most one level.
fn reference_resize(img: &RgbImage, out_h: usize, out_w: usize, interp: Interpolation) -> Vec<f64> {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let taps = |in_size: usize, out_size: usize, o: usize| -> Vec<(usize, f64)> {
        let scale = in_size as f64 / out_size as f64;
        let fs = scale.max(1.0);
        let support = if interp == Interpolation::Bicubic {
            2.0
        } else {
            1.0
        } * fs;
        let center = (o as f64 + 0.5) * scale;
        let mut v: Vec<(usize, f64)> = (0..in_size)
            .filter(|&i| ((i as f64 + 0.5) - center).abs() < support + 0.5)
            .map(|i| (i, interp.kernel((i as f64 + 0.5 - center) / fs)))
            .collect();
        let total: f64 = v.iter().map(|t| t.1).sum();
        v.iter_mut().for_each(|t| t.1 /= total);
        v
    };
    let mut out = vec![0.0; out_h * out_w * 3];
    for oy in 0..out_h {
        let ty = taps(in_h, out_h, oy);
        for ox in 0..out_w {
            let tx = taps(in_w, out_w, ox);
            for c in 0..3 {
                let mut acc = 0.0;
                for &(y, wy) in &ty {
                    for &(x, wx) in &tx {
                        acc += wy * wx * img.get_pixel(x as u32, y as u32)[c] as f64;
                    }
                }
                out[(oy * out_w + ox) * 3 + c] = acc.clamp(0.0, 255.0);
            }
        }
    }
    out
}

#[test]
fn resize_agrees_with_the_plain_convolution_up_and_down() {
    for (interp, (w, h), (ow, oh)) in [
        (Interpolation::Bicubic, (16, 24), (32, 48)),
        (Interpolation::Bicubic, (40, 50), (13, 21)),
        (Interpolation::Bilinear, (16, 24), (29, 37)),
        (Interpolation::Bilinear, (40, 50), (10, 17)),
        (Interpolation::Bicubic, (20, 30), (20, 45)),
    ] {
        // Smooth content: on random noise bicubic overshoot clamps at an intermediate u8 in Pillow.
        let img = RgbImage::from_fn(w, h, |x, y| {
            let v = |f: f32| (127.5 + 120.0 * (f).sin()) as u8;
            Rgb([
                v(x as f32 * 0.4),
                v(y as f32 * 0.3),
                v((x + y) as f32 * 0.2),
            ])
        });
        let ours = resize(&img, oh, ow, interp);
        let reference = reference_resize(&img, oh, ow, interp);
        let mut worst = 0.0f64;
        for (a, b) in ours.as_raw().iter().zip(&reference) {
            worst = worst.max((*a as f64 - b).abs());
        }
        assert!(
            worst <= 1.0,
            "{interp:?} {w}x{h} -> {ow}x{oh}: max difference {worst}"
        );
    }
}

#[test]
fn resize_keeps_a_constant_image_constant() {
    let img = RgbImage::from_pixel(33, 70, Rgb([200, 17, 90]));
    for interp in [Interpolation::Bilinear, Interpolation::Bicubic] {
        for (h, w) in [(256, 128), (20, 9)] {
            let out = resize(&img, h, w, interp);
            assert!(
                out.pixels().all(|p| *p == Rgb([200, 17, 90])),
                "{interp:?} {h}x{w}"
            );
        }
    }
}

fn normalised(v: u8, c: usize) -> f32 {
    (v as f32 / 255.0 - IMAGENET_MEAN[c]) / IMAGENET_STD[c]
}

#[test]
fn flip_pad_crop_and_erase_are_exact() {
    let (h, w) = (6usize, 4usize);
    let img = random_image(w as u32, h as u32, 3);
    let cfg = AugmentConfig {
        pad: 2,
        ..AugmentConfig::train(h, w)
    };
    let mut out = vec![0f32; cfg.image_len()];
    let at = |out: &[f32], c: usize, y: usize, x: usize| out[c * h * w + y * w + x];

    // No flip, crop at the pad offset: the identity.
    let p = AugmentParams {
        flip: false,
        crop_top: 2,
        crop_left: 2,
        erase: None,
    };
    augment_into(&cfg, &img, &p, &mut out);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                assert_eq!(
                    at(&out, c, y, x),
                    normalised(img.get_pixel(x as u32, y as u32)[c], c)
                );
            }
        }
    }
    // Flip only.
    let p = AugmentParams { flip: true, ..p };
    augment_into(&cfg, &img, &p, &mut out);
    assert_eq!(at(&out, 1, 3, 0), normalised(img.get_pixel(3, 3)[1], 1));
    // Crop at (0, 0): two rows/cols of black padding at top-left, the image shifted by two.
    let p = AugmentParams {
        flip: false,
        crop_top: 0,
        crop_left: 0,
        erase: None,
    };
    augment_into(&cfg, &img, &p, &mut out);
    assert_eq!(at(&out, 0, 0, 3), normalised(0, 0));
    assert_eq!(at(&out, 2, 5, 1), normalised(0, 2));
    assert_eq!(at(&out, 2, 5, 3), normalised(img.get_pixel(1, 3)[2], 2));
    // Flip then crop at the far corner: padding bottom-right; pixel (0,0) of the output is flipped (2, 2).
    let p = AugmentParams {
        flip: true,
        crop_top: 4,
        crop_left: 4,
        erase: None,
    };
    augment_into(&cfg, &img, &p, &mut out);
    assert_eq!(
        at(&out, 0, 0, 0),
        normalised(img.get_pixel((w - 1 - 2) as u32, 2)[0], 0)
    );
    assert_eq!(at(&out, 0, 5, 3), normalised(0, 0));
    // Erasing writes the raw ImageNet mean into the normalised tensor, exactly the box.
    let p = AugmentParams {
        flip: false,
        crop_top: 2,
        crop_left: 2,
        erase: Some((1, 2, 3, 2)),
    };
    augment_into(&cfg, &img, &p, &mut out);
    for y in 0..h {
        for x in 0..w {
            let inside = (1..4).contains(&y) && (2..4).contains(&x);
            for (c, &mean) in IMAGENET_MEAN.iter().enumerate() {
                let expected = if inside {
                    mean
                } else {
                    normalised(img.get_pixel(x as u32, y as u32)[c], c)
                };
                assert_eq!(at(&out, c, y, x), expected, "({c},{y},{x})");
            }
        }
    }
}

#[test]
fn random_parameters_follow_the_reference_ranges() {
    let cfg = AugmentConfig::train(256, 128);
    let mut rng = Rng::new(11);
    let (mut flips, mut erased, n) = (0, 0, 4000);
    for _ in 0..n {
        let p = draw_params(&cfg, &mut rng);
        flips += p.flip as usize;
        assert!(p.crop_top <= 20 && p.crop_left <= 20);
        if let Some((top, left, eh, ew)) = p.erase {
            erased += 1;
            assert!(eh < 256 && ew < 128 && top + eh <= 256 && left + ew <= 128);
            let area = (eh * ew) as f64 / (256.0 * 128.0);
            // Rounding of h and w moves the area a little around [0.02, 0.4].
            assert!((0.015..0.42).contains(&area), "area {area}");
            let aspect = eh as f64 / ew as f64;
            assert!((0.25..3.6).contains(&aspect), "aspect {aspect}");
        }
    }
    assert!((1800..2200).contains(&flips), "flip rate {flips}/{n}");
    assert!((1800..2200).contains(&erased), "erase rate {erased}/{n}");
    let eval = AugmentConfig::eval(256, 128);
    let p = draw_params(&eval, &mut rng);
    assert_eq!(
        p,
        AugmentParams {
            flip: false,
            crop_top: 0,
            crop_left: 0,
            erase: None
        }
    );
}

#[test]
fn augmentation_is_reproducible_per_key_and_views_differ() {
    let cfg = AugmentConfig::train(32, 16);
    let img = random_image(12, 20, 5);
    let key = SampleKey {
        seed: 1,
        epoch: 2,
        index: 3,
        view: 0,
    };
    let mut a = vec![0f32; cfg.image_len()];
    let mut b = vec![0f32; cfg.image_len()];
    let pa = augment_keyed(&cfg, &img, key, &mut a);
    let pb = augment_keyed(&cfg, &img, key, &mut b);
    assert_eq!(pa, pb);
    assert_eq!(a, b);
    // Different view, epoch or index: different draws (over a few keys at least one parameter differs).
    for other in [
        SampleKey { view: 1, ..key },
        SampleKey { epoch: 3, ..key },
        SampleKey { index: 4, ..key },
    ] {
        let differs = (0..8).any(|i| {
            let k1 = SampleKey {
                seed: key.seed + i,
                ..key
            };
            let k2 = SampleKey {
                seed: other.seed + i,
                ..other
            };
            draw_params(&cfg, &mut k1.rng()) != draw_params(&cfg, &mut k2.rng())
        });
        assert!(differs, "{other:?}");
    }
    // The parallel batch equals the one-by-one results.
    let imgs: Vec<RgbImage> = (0..5).map(|i| random_image(10 + i, 18, i as u64)).collect();
    let refs: Vec<&RgbImage> = imgs.iter().collect();
    let keys: Vec<SampleKey> = (0..5).map(|i| SampleKey { index: i, ..key }).collect();
    let mut batch = vec![0f32; 5 * cfg.image_len()];
    augment_batch(&cfg, &refs, &keys, &mut batch);
    for i in 0..5 {
        let mut one = vec![0f32; cfg.image_len()];
        augment_keyed(&cfg, &imgs[i], keys[i], &mut one);
        assert_eq!(
            &batch[i * cfg.image_len()..(i + 1) * cfg.image_len()],
            &one[..]
        );
    }
}

fn fixture(name: &str) -> RgbImage {
    let path = format!("{}/tests/data/resize/{name}", env!("CARGO_MANIFEST_DIR"));
    image::open(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .to_rgb8()
}

/// (largest |ours - Pillow|, number of differing bytes).
fn diff(ours: &RgbImage, pillow: &RgbImage) -> (u8, usize) {
    assert_eq!(ours.dimensions(), pillow.dimensions());
    ours.as_raw()
        .iter()
        .zip(pillow.as_raw())
        .fold((0, 0), |(m, n), (&a, &b)| {
            (m.max(a.abs_diff(b)), n + (a != b) as usize)
        })
}

/// `resize` against Pillow's own `Image.resize` output (tests/data/resize/make_fixtures.py, Pillow
/// 13.0.0): up and down at odd scale factors, ramps, hard edges that clip, and noise. Pillow's
/// 8-bit path is integer arithmetic, so the port must agree byte for byte; the other filter
/// differs by tens of levels, so a swapped interpolation cannot pass.
#[test]
fn resize_is_byte_exact_against_pillow_fixtures() {
    let cases = [
        ("up_37x23_to_64x128", 128, 64),
        ("down_300x150_to_128x256", 256, 128),
        ("down_300x150_to_256x128", 128, 256),
    ];
    for (name, h, w) in cases {
        let src = fixture(&format!("{name}.in.png"));
        for (filter, interp, other) in [
            ("bilinear", Interpolation::Bilinear, Interpolation::Bicubic),
            ("bicubic", Interpolation::Bicubic, Interpolation::Bilinear),
        ] {
            let pillow = fixture(&format!("{name}.{filter}.png"));
            let (max, count) = diff(&resize(&src, h, w, interp), &pillow);
            assert!(
                max == 0,
                "resize {name} {filter}: {count} bytes differ from Pillow, by up to {max} levels"
            );
            let (wrong, _) = diff(&resize(&src, h, w, other), &pillow);
            assert!(
                wrong >= 20,
                "{name}: the {other:?} filter is only {wrong} levels from Pillow's {filter}: the fixture cannot tell them apart"
            );
        }
    }
}

/// torchvision's ImageNet evaluation `Resize(256)` on a PIL image: shorter side to 256, longer
/// side `int(256 * long / short)`, bilinear with Pillow's antialiasing (333x287 -> 297x256).
#[test]
fn imagenet_shorter_side_resize_is_pillow_bilinear() {
    let src = fixture("imagenet_333x287.in.png");
    let pillow = fixture("imagenet_333x287.bilinear.png");
    let (w, h) = (src.width() as usize, src.height() as usize);
    let nw = (256.0 * w as f64 / h as f64) as usize;
    assert_eq!((pillow.width() as usize, pillow.height()), (nw, 256));
    let (max, count) = diff(&resize(&src, 256, nw, Interpolation::Bilinear), &pillow);
    assert!(
        max == 0,
        "Resize(256) bilinear: {count} bytes differ from Pillow by up to {max} levels"
    );
    let (wrong, _) = diff(&resize(&src, 256, nw, Interpolation::Bicubic), &pillow);
    assert!(wrong >= 20, "bicubic is only {wrong} levels off");
}

/// `imagenet_input` = torchvision's Resize(256) + CenterCrop(224) + ToTensor + Normalize on a PIL
/// image: Pillow's bilinear output (the fixture) cropped at torchvision's offsets
/// `int(round((size - 224) / 2))` (Python rounds half to even), then normalised.
#[test]
fn imagenet_input_is_pillow_resize_then_torchvision_center_crop() {
    use unreid::data::transforms::imagenet_input;
    let path = format!(
        "{}/tests/data/resize/imagenet_333x287.in.png",
        env!("CARGO_MANIFEST_DIR")
    );
    let got = imagenet_input(std::path::Path::new(&path)).unwrap();
    let pillow = fixture("imagenet_333x287.bilinear.png");
    let (w, h) = (pillow.width() as f64, pillow.height() as f64);
    let (top, left) = (
        ((h - 224.0) / 2.0).round_ties_even() as u32,
        ((w - 224.0) / 2.0).round_ties_even() as u32,
    );
    assert_eq!((top, left), (16, 36), "torchvision's CenterCrop offsets");
    let mean = [0.485f64, 0.456, 0.406];
    let std = [0.229f64, 0.224, 0.225];
    let mut worst = 0f64;
    for c in 0..3 {
        for y in 0..224u32 {
            for x in 0..224u32 {
                let v = pillow.get_pixel(left + x, top + y)[c] as f64;
                let want = (v / 255.0 - mean[c]) / std[c];
                let g = got[(c * 224 + y as usize) * 224 + x as usize] as f64;
                worst = worst.max((g - want).abs());
            }
        }
    }
    assert!(
        worst < 1e-5,
        "ImageNet input differs from Pillow Resize(256) bilinear + CenterCrop(224) + Normalize by {worst}"
    );
}
