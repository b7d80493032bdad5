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
