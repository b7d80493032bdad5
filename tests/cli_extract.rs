//! `unreid extract` end to end on a few generated Market-style images with the shipped
//! MobileNetV2 weights: features are unit-norm, ids and cameras parsed, paths recorded.

use std::path::Path;

use clap::Parser;
use unreid::cli::{Cli, Command};
use unreid::nn::weights::{read_metadata, read_tensors};

#[test]
fn extract_writes_normalised_features_ids_and_paths() {
    let dir = std::env::temp_dir().join(format!("unreid-extract-{}", std::process::id()));
    let images = dir.join("imgs");
    std::fs::create_dir_all(&images).unwrap();
    let names = [
        "0002_c1s1_000451_03.jpg",
        "0002_c3s1_000551_01.jpg",
        "-1_c2s1_000001_00.jpg",
        "other.png",
        "0007_c6s2_000001_01.png",
    ];
    for (i, n) in names.iter().enumerate() {
        let img = image::RgbImage::from_fn(40 + i as u32 * 7, 90, |x, y| {
            image::Rgb([(x * 5 + i as u32 * 40) as u8, (y * 3) as u8, 128])
        });
        img.save(images.join(n)).unwrap();
    }
    let weights =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("weights/mobilenet_v2_imagenet.safetensors");
    let out = dir.join("feats.safetensors");
    let cli = Cli::try_parse_from([
        "unreid",
        "extract",
        "--arch",
        "mobilenet_v2",
        "--weights",
        weights.to_str().unwrap(),
        "--images",
        images.to_str().unwrap(),
        "--height",
        "64",
        "--width",
        "32",
        "--batch-size",
        "2",
        "--device",
        "gpu",
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    assert!(matches!(cli.command, Command::Extract(_)));
    unreid::cli::run(cli).unwrap();

    // Also readable as the shared features file.
    let set = unreid::features::FeatureSet::load(&out).unwrap();
    assert_eq!((set.num, set.dim), (5, 1280));
    let t = read_tensors(&out).unwrap();
    let (shape, feats) = &t["features"];
    assert_eq!(shape, &vec![5, 1280]);
    for row in feats.chunks(1280) {
        let n: f32 = row.iter().map(|a| a * a).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-4, "feature norm {n}");
    }
    // Sorted path order: "-1_..." < "0002_c1" < "0002_c3" < "0007" < "other".
    assert_eq!(t["pids"].1, vec![-1.0, 2.0, 2.0, 7.0, -1.0]);
    assert_eq!(t["camids"].1, vec![1.0, 0.0, 2.0, 5.0, -1.0]);
    let meta = read_metadata(&out).unwrap();
    let paths: Vec<String> = serde_json::from_str(&meta["paths"]).unwrap();
    assert_eq!(paths.len(), 5);
    assert!(paths[0].ends_with("-1_c2s1_000001_00.jpg"), "{paths:?}");

    // A Market-1501 layout through the data module: --data ROOT --split query.
    let root = dir.join("market");
    for (sub, files) in [
        (
            "bounding_box_train",
            ["0003_c1s1_000001_01.jpg", "0003_c2s1_000001_01.jpg"],
        ),
        (
            "bounding_box_test",
            ["0004_c1s1_000001_01.jpg", "0005_c2s1_000001_01.jpg"],
        ),
        (
            "query",
            ["0004_c3s1_000001_01.jpg", "0005_c4s1_000001_01.jpg"],
        ),
    ] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
        for f in files {
            image::RgbImage::from_pixel(30, 60, image::Rgb([90, 120, 30]))
                .save(root.join(sub).join(f))
                .unwrap();
        }
    }
    let out2 = dir.join("query.safetensors");
    let cli = Cli::try_parse_from([
        "unreid",
        "extract",
        "--arch",
        "mobilenet_v2",
        "--weights",
        weights.to_str().unwrap(),
        "--data",
        root.to_str().unwrap(),
        "--split",
        "query",
        "--height",
        "32",
        "--width",
        "32",
        "--device",
        "cpu",
        "--out",
        out2.to_str().unwrap(),
    ])
    .unwrap();
    unreid::cli::run(cli).unwrap();
    let set = unreid::features::FeatureSet::load(&out2).unwrap();
    assert_eq!(set.num, 2);
    assert_eq!(set.pids.unwrap(), vec![4, 5]);
    assert_eq!(set.camids.unwrap(), vec![2, 3]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `unreid extract` (the binary, as a user runs it) gives, for every image, the L2-normalised
/// BN-neck output of a direct eval-mode forward pass over the Resize((H, W), bicubic) + ImageNet
/// normalised input. The neck's statistics and affine parameters and GeM's p are set away from
/// their identity initialisation so that using the pooled feature, the wrong interpolation or
/// normalisation, or a default instead of a loaded value changes the numbers.
#[test]
fn extract_features_equal_a_direct_forward_pass() {
    use std::collections::HashMap;
    use unreid::data::transforms::{resize, Interpolation};
    use unreid::nn::{save_safetensors, Ctx, Module, Pooling, ReidConfig, ReidNet};
    use unreid::{Device, Tensor};

    let dir = std::env::temp_dir().join(format!("unreid-extract-values-{}", std::process::id()));
    let images = dir.join("imgs");
    std::fs::create_dir_all(&images).unwrap();
    let names = [
        "0003_c1s1_000101_01.png",
        "0003_c2s1_000201_01.png",
        "0009_c4s2_000301_02.png",
    ];
    for (i, n) in names.iter().enumerate() {
        let i = i as u32;
        image::RgbImage::from_fn(37 + 5 * i, 83 - 4 * i, |x, y| {
            image::Rgb([
                ((x * 7 + y * (3 + i)) % 256) as u8,
                ((x * y + 50 * i) % 256) as u8,
                (((x / 4 + y / 6) % 2) * 200 + 20) as u8,
            ])
        })
        .save(images.join(n))
        .unwrap();
    }

    let device = Device::Cpu;
    let cfg = ReidConfig {
        arch: "resnet18".into(),
        pooling: Pooling::Gem,
        seed: 5,
        ..Default::default()
    };
    let net = ReidNet::new(&device, &cfg).unwrap();
    for (name, p) in net.named() {
        let n = p.shape().iter().product::<usize>();
        let wave = |scale: f64, offset: f64| -> Vec<f64> {
            (0..n)
                .map(|k| offset + scale * ((k as f64 * 0.77 + name.len() as f64).sin()))
                .collect()
        };
        let values = match name.as_str() {
            "gem.p" => vec![2.2],
            "feat_bn.weight" => wave(0.4, 1.0),
            "feat_bn.running_mean" => wave(0.05, 0.1),
            "feat_bn.running_var" => wave(0.3, 0.6),
            _ => continue,
        };
        p.set(Tensor::from_f64(&values, &p.shape(), &device).unwrap());
    }
    let weights = dir.join("net.safetensors");
    save_safetensors(&net, &weights, HashMap::new()).unwrap();

    let (h, w) = (64usize, 32usize);
    let out = dir.join("feats.safetensors");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_unreid"))
        .args(["extract", "--arch", "resnet18", "--weights"])
        .arg(&weights)
        .arg("--images")
        .arg(&images)
        .args(["--height", "64", "--width", "32", "--batch-size", "2"])
        .args(["--device", "cpu", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "unreid extract failed: {status}");
    let set = unreid::features::FeatureSet::load(&out).unwrap();
    assert_eq!((set.num, set.dim), (3, 512));

    // The direct forward pass, with the preprocessing written out here.
    let (mean, std) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]);
    let mut pixels = Vec::new();
    for n in names {
        let img = image::open(images.join(n)).unwrap().to_rgb8();
        let r = resize(&img, h, w, Interpolation::Bicubic);
        for c in 0..3 {
            for p in r.pixels() {
                pixels.push((p[c] as f64 / 255.0 - mean[c]) / std[c]);
            }
        }
    }
    let x = Tensor::from_f64(&pixels, &[3, 3, h, w], &device).unwrap();
    let out = unreid::no_grad(|| net.forward(&x, &Ctx::eval())).unwrap();
    let (bn, pooled) = (
        out.bn.to_vec_f64().unwrap(),
        out.pooled.to_vec_f64().unwrap(),
    );
    for i in 0..3 {
        let row = &bn[i * 512..(i + 1) * 512];
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        let got = set.row(i);
        let worst = row
            .iter()
            .zip(got)
            .map(|(a, &b)| (a / norm - b as f64).abs())
            .fold(0.0, f64::max);
        assert!(
            worst < 1e-5,
            "extract: image {i} ({}) differs from normalised bn(forward(x)) by {worst}",
            names[i]
        );
        // The pooled feature (no neck) is measurably different: the check can tell them apart.
        let p = &pooled[i * 512..(i + 1) * 512];
        let pn = p.iter().map(|v| v * v).sum::<f64>().sqrt();
        let gap = p
            .iter()
            .zip(got)
            .map(|(a, &b)| (a / pn - b as f64).abs())
            .fold(0.0, f64::max);
        assert!(gap > 1e-3, "pooled and BN-neck features agree to {gap}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
