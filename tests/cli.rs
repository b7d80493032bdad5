//! The `unreid cluster` and `unreid evaluate` commands end to end, and the features file format.

mod synthetic;

use std::path::{Path, PathBuf};
use std::process::Command;
use synthetic::{make, Layout};
use unreid::features::FeatureSet;

fn tmp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("unreid-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn unreid(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_unreid"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn synthetic_set(n: usize, seed: u64, with_paths: bool) -> FeatureSet {
    let lay = Layout {
        n,
        dim: 32,
        clusters: 12,
        spread: 0.3,
        outliers: 0.05,
        duplicates: 0.0,
        quantize: false,
        seed,
    };
    let (x, truth) = make(lay);
    FeatureSet {
        features: x,
        num: n,
        dim: 32,
        pids: Some(
            truth
                .iter()
                .map(|&t| if t < 0 { 1000 + seed as i64 } else { t })
                .collect(),
        ),
        camids: Some((0..n as i64).map(|i| i % 4).collect()),
        paths: if with_paths {
            (0..n).map(|i| format!("img/{seed}_{i}.png")).collect()
        } else {
            Vec::new()
        },
        provenance: Default::default(),
    }
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn features_file_round_trip_and_errors() {
    let dir = tmp_dir("features");
    let set = synthetic_set(50, 1, true);
    let path = dir.join("f.safetensors");
    set.save(&path).unwrap();
    assert_eq!(FeatureSet::load(&path).unwrap(), set);
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);

    let missing = FeatureSet::load(dir.join("nope.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("nope.safetensors"), "{missing}");
    std::fs::write(dir.join("junk.safetensors"), b"not a safetensors file").unwrap();
    let junk = FeatureSet::load(dir.join("junk.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(junk.contains("junk.safetensors"), "{junk}");

    // Wrong dtype and mismatched lengths name the tensor.
    let feats: Vec<u8> = vec![0u8; 4 * 6];
    let pids: Vec<u8> = vec![0u8; 8 * 2];
    let bad = safetensors::serialize(
        [
            (
                "features",
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![3, 2], &feats)
                    .unwrap(),
            ),
            (
                "pids",
                safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![2], &pids)
                    .unwrap(),
            ),
        ],
        None,
    )
    .unwrap();
    std::fs::write(dir.join("bad.safetensors"), bad).unwrap();
    let e = FeatureSet::load(dir.join("bad.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("pids") && e.contains("bad.safetensors"), "{e}");
    let wrong = safetensors::serialize(
        [(
            "features",
            safetensors::tensor::TensorView::new(safetensors::Dtype::I32, vec![3, 2], &feats)
                .unwrap(),
        )],
        None,
    )
    .unwrap();
    std::fs::write(dir.join("wrong.safetensors"), wrong).unwrap();
    let e = FeatureSet::load(dir.join("wrong.safetensors"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("features") && e.contains("I32"), "{e}");
}

#[test]
fn cluster_command_writes_labels() {
    let dir = tmp_dir("cluster");
    let feats = dir.join("train.safetensors");
    synthetic_set(400, 2, false).save(&feats).unwrap();
    for extra in [
        vec!["--algo", "dbscan", "--k1", "20", "--eps-gap", "0.02"],
        vec!["--algo", "dbscan", "--distance", "cosine", "--eps", "0.2"],
        vec!["--algo", "kmeans", "--k", "12", "--seed", "3"],
    ] {
        let out = dir.join("labels.json");
        let mut args = vec!["cluster", "--features", s(&feats), "--out", s(&out)];
        args.extend(extra.iter().copied());
        let (ok, stdout, stderr) = unreid(&args);
        assert!(ok, "{extra:?}: {stderr}");
        assert!(stdout.contains("clusters"), "{stdout}");
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        let labels: Vec<i64> = serde_json::from_value(json["labels"].clone()).unwrap();
        assert_eq!(labels.len(), 400);
        let clusters = labels
            .iter()
            .filter(|&&l| l >= 0)
            .max()
            .map_or(0, |m| m + 1);
        assert_eq!(
            json["num_clusters"].as_i64().unwrap(),
            clusters,
            "{extra:?}"
        );
        assert_eq!(
            json["num_outliers"].as_u64().unwrap() as usize,
            labels.iter().filter(|&&l| l < 0).count()
        );
        assert!(clusters >= 5, "{extra:?}: only {clusters} clusters");
        assert!(json["seconds"]["total"].as_f64().unwrap() >= 0.0);
        if extra.contains(&"--eps-gap") {
            assert_eq!(json["self_paced_labels"].as_array().unwrap().len(), 400);
        }
    }
    // Errors name the file or the flag.
    let (ok, _, stderr) = unreid(&[
        "cluster",
        "--features",
        "/no/such.safetensors",
        "--out",
        "x.json",
    ]);
    assert!(!ok && stderr.contains("/no/such.safetensors"), "{stderr}");
    let (ok, _, stderr) = unreid(&[
        "cluster",
        "--features",
        s(&feats),
        "--k1",
        "500",
        "--out",
        s(&dir.join("y.json")),
    ]);
    assert!(!ok && stderr.contains("--k1"), "{stderr}");
    let (ok, _, stderr) = unreid(&[
        "cluster",
        "--features",
        s(&feats),
        "--algo",
        "kmeans",
        "--distance",
        "jaccard",
        "--out",
        "z.json",
    ]);
    assert!(!ok && stderr.contains("jaccard"), "{stderr}");
}

#[test]
fn evaluate_command_prints_metrics_and_draws_ranked_lists() {
    let dir = tmp_dir("evaluate");
    let (q, g) = (synthetic_set(40, 3, true), synthetic_set(200, 3, true));
    // The two sets share identities (same seed -> same centres), with different noise draws.
    let (qf, gf) = (dir.join("q.safetensors"), dir.join("g.safetensors"));
    let mut q = q;
    q.features = make(Layout {
        n: 40,
        dim: 32,
        clusters: 12,
        spread: 0.3,
        outliers: 0.05,
        duplicates: 0.0,
        quantize: false,
        seed: 3,
    })
    .0;
    q.save(&qf).unwrap();
    g.save(&gf).unwrap();
    // Tiny images for every path.
    std::fs::create_dir_all(dir.join("root/img")).unwrap();
    for p in q.paths.iter().chain(&g.paths) {
        image::RgbImage::from_pixel(16, 32, image::Rgb([90, 90, 200]))
            .save(dir.join("root").join(p))
            .unwrap();
    }
    let json = dir.join("eval.json");
    let pics = dir.join("pics");
    let (ok, stdout, stderr) = unreid(&[
        "evaluate",
        "--query",
        s(&qf),
        "--gallery",
        s(&gf),
        "--json",
        s(&json),
        "--visualize",
        s(&pics),
        "--images",
        s(&dir.join("root")),
        "--num-visualize",
        "3",
    ]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("mAP") && stdout.contains("Rank-1"),
        "{stdout}"
    );
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let map = v["mAP"].as_f64().unwrap();
    assert!(map > 0.0 && map <= 1.0);
    assert_eq!(std::fs::read_dir(&pics).unwrap().count(), 3);
    // Named by query image, in drawing order.
    let png = image::open(pics.join("000_3_0.png")).unwrap();
    assert!(png.width() > 10 * 64);

    // Same numbers as the library.
    let lib = unreid::eval::evaluate(
        unreid::cluster::Backend::Cpu,
        unreid::eval::LabeledFeatures::new(
            unreid::cluster::Features::new(&q.features, 40, 32).unwrap(),
            q.pids.as_deref().unwrap(),
            q.camids.as_deref().unwrap(),
        )
        .unwrap(),
        unreid::eval::LabeledFeatures::new(
            unreid::cluster::Features::new(&g.features, 200, 32).unwrap(),
            g.pids.as_deref().unwrap(),
            g.camids.as_deref().unwrap(),
        )
        .unwrap(),
        50,
    )
    .unwrap();
    assert!((lib.map - map).abs() < 1e-12);
    assert_eq!(
        v["num_skipped_queries"].as_u64().unwrap() as usize,
        lib.num_skipped_queries
    );

    let (ok, stdout, stderr) = unreid(&[
        "evaluate",
        "--query",
        s(&qf),
        "--gallery",
        s(&gf),
        "--rerank",
    ]);
    assert!(ok && stdout.contains("re-ranked"), "{stderr}");

    // A gallery without pids is refused by name.
    let mut nolabels = g.clone();
    nolabels.pids = None;
    let nl = dir.join("nolabels.safetensors");
    // save() writes -1 for missing pids; remove the tensor by writing only features.
    let bytes: Vec<u8> = nolabels
        .features
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let st = safetensors::serialize(
        [(
            "features",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![200, 32], &bytes)
                .unwrap(),
        )],
        None,
    )
    .unwrap();
    std::fs::write(&nl, st).unwrap();
    let (ok, _, stderr) = unreid(&["evaluate", "--query", s(&qf), "--gallery", s(&nl)]);
    assert!(
        !ok && stderr.contains("pids") && stderr.contains("nolabels"),
        "{stderr}"
    );
}
