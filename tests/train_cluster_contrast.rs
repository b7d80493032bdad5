//! Cluster Contrast and ISE (USL) end to end on the tiny synthetic benchmark's target domain on
//! `Device::Cpu`: loss terms finite, relabel records with pseudo-label quality, target mAP
//! measured, and a resumed run reproduces an unbroken one (the memory is rebuilt from the restored
//! model at every relabel). Unit rules on tiny tensors against host f64 oracles: memory
//! initialisation, the relabel labels, the hard update's choice, ISE supports in the loss and in
//! the memory update. Presets hold the published values (shared/ALGORITHMS.md sections 5, 6, 12).

#[path = "common/train.rs"]
mod train_common;

use train_common::{benchmark, records, run, run_dir, starting_map, trace};
use unreid::cluster::{camera_centered, pseudo_labels, Backend, ClusterConfig, Features};
use unreid::loss::ise_lambda;
use unreid::memory::{ClusterMemory, MemoryUpdate};
use unreid::train::cluster_contrast::{
    assign, cluster_memory, ClusterContrastConfig, MemorySettings, UpdateRule,
};
use unreid::train::ise::{ise_step, IseConfig};
use unreid::train::run_dir::RunMode;
use unreid::train::run_loop::stage_totals;
use unreid::train::{method_defaults, RunConfig};
use unreid::{Device, Tensor};

fn small_cluster() -> ClusterConfig {
    ClusterConfig {
        k1: 10,
        k2: 3,
        ..ClusterConfig::default()
    }
}

fn config(method: &str) -> RunConfig {
    let root = benchmark();
    let mut cfg = method_defaults(method).unwrap();
    cfg.data.target = Some(root.join("target"));
    cfg.model.arch = "resnet18".into();
    let t = &mut cfg.train;
    t.epochs = 2;
    t.iters = 5;
    // 2 ids x 8: a random model's clusters on 59 images can merge to 3 after one epoch.
    t.batch_size = 16;
    t.num_instances = 8;
    t.bn_group = 8;
    t.height = 32;
    t.width = 16;
    t.eval_every = 1;
    t.log_every = 1;
    t.eval_batch_size = 64;
    t.milestones = vec![];
    t.lr = 1e-3;
    let section = match method {
        "cluster-contrast" => toml::Value::try_from(ClusterContrastConfig {
            cluster: small_cluster(),
            ..Default::default()
        }),
        _ => toml::Value::try_from(IseConfig {
            cluster: ClusterConfig {
                eps: 0.6,
                ..small_cluster()
            },
            ..Default::default()
        }),
    };
    cfg.sections
        .insert(method.into(), section.expect("section"));
    cfg
}

fn end_to_end(method: &str, terms: &[&str]) {
    let cfg = config(method);
    let start = starting_map(&cfg);
    let out = run_dir(method);
    let summary = run(&cfg, &out, RunMode::New, None);
    assert!(summary.finished);
    let relabels = records(&out, "relabel");
    assert_eq!(relabels.len(), 2, "{relabels:?}");
    for r in &relabels {
        for key in [
            "clusters",
            "outliers",
            "kept",
            "eps",
            "nmi",
            "ari",
            "pairwise_precision",
            "pairwise_recall",
        ] {
            let v = r[key].as_f64();
            assert!(
                v.is_some_and(f64::is_finite),
                "relabel record lacks a finite {key}: {r}"
            );
        }
        assert!(r["clusters"].as_u64().unwrap() >= 2, "{r}");
    }
    // Per-stage time: one timing record per epoch; extraction and clustering lie inside the
    // relabelling; summary.json's totals are the sums of the records.
    let timings = records(&out, "timing");
    assert_eq!(timings.len(), 2, "{timings:?}");
    let mut sums: std::collections::BTreeMap<String, f64> = Default::default();
    for r in &timings {
        for key in [
            "relabel",
            "extract",
            "cluster",
            "iterations",
            "eval",
            "checkpoint",
        ] {
            let v = r[key].as_f64();
            assert!(
                v.is_some_and(|v| v.is_finite() && v >= 0.0),
                "timing record lacks {key}: {r}"
            );
            *sums.entry(key.to_string()).or_default() += v.unwrap();
        }
        let (relabel, extract, cluster) = (
            r["relabel"].as_f64().unwrap(),
            r["extract"].as_f64().unwrap(),
            r["cluster"].as_f64().unwrap(),
        );
        assert!(extract > 0.0 && cluster > 0.0, "{r}");
        assert!(extract + cluster <= relabel, "{r}");
    }
    assert_eq!(
        summary.stage_seconds.keys().collect::<Vec<_>>(),
        sums.keys().collect::<Vec<_>>()
    );
    for (k, v) in &sums {
        assert!(
            (summary.stage_seconds[k] - v).abs() < 1e-9,
            "{k}: {summary:?}"
        );
    }

    let steps = records(&out, "step");
    assert_eq!(steps.len(), 10);
    for s in &steps {
        assert!(s["loss"].as_f64().unwrap().is_finite(), "{s}");
        for term in terms {
            assert!(
                s["terms"][term].as_f64().is_some_and(f64::is_finite),
                "{term} missing or not finite: {s}"
            );
        }
    }
    let maps: Vec<f64> = records(&out, "eval")
        .iter()
        .map(|r| r["mAP"].as_f64().unwrap())
        .collect();
    eprintln!(
        "{method}: start mAP {start:.4}, per epoch {maps:?}, NMI {:?}, {:.1}s",
        relabels
            .iter()
            .map(|r| r["nmi"].as_f64().unwrap())
            .collect::<Vec<_>>(),
        summary.wall_seconds
    );
    assert_eq!(maps.len(), 2);
    assert!(
        maps.iter().all(|m| m.is_finite() && *m > 0.0) && start > 0.0,
        "target mAP not measured: {start} -> {maps:?}"
    );

    // Resume: one epoch, then --resume, gives the very same losses and mAPs.
    let split = run_dir(&format!("{method}-split"));
    let first = run(&cfg, &split, RunMode::New, Some(1));
    assert!(!first.finished);
    let second = run(&cfg, &split, RunMode::Resume, None);
    assert!(second.finished);
    // The resumed run's stage totals cover both processes' epochs.
    assert_eq!(records(&split, "timing").len(), 2);
    let split_extract: f64 = records(&split, "timing")
        .iter()
        .map(|r| r["extract"].as_f64().unwrap())
        .sum();
    assert!((second.stage_seconds["extract"] - split_extract).abs() < 1e-9);
    assert_eq!(
        trace(&split),
        trace(&out),
        "a resumed run differs from an unbroken one"
    );
    assert_eq!(
        records(&split, "relabel")
            .iter()
            .map(|r| r["clusters"].clone())
            .collect::<Vec<_>>(),
        relabels
            .iter()
            .map(|r| r["clusters"].clone())
            .collect::<Vec<_>>()
    );
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_dir_all(&split);
}

#[test]
fn stage_totals_sum_the_timing_records_only() {
    let recs: Vec<serde_json::Value> = [
        r#"{"kind":"timing","epoch":0,"step":0,"relabel":2.5,"extract":1.0,"cluster":0.5,"iterations":10.0,"seconds_per_step":1.0}"#,
        r#"{"kind":"relabel","epoch":1,"seconds":99.0,"extract":99.0}"#,
        r#"{"kind":"timing","epoch":1,"step":10,"relabel":1.5,"extract":0.75,"iterations":12.0,"eval":3.0,"seconds_per_step":1.2}"#,
    ]
    .iter()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect();
    let t = stage_totals(&recs);
    let want = [
        ("cluster", 0.5),
        ("eval", 3.0),
        ("extract", 1.75),
        ("iterations", 22.0),
        ("relabel", 4.0),
    ];
    assert_eq!(t.len(), want.len(), "{t:?}");
    for (k, v) in want {
        assert_eq!(t[k], v, "{k}");
    }
}

#[test]
fn cluster_contrast_trains_relabels_and_resumes() {
    end_to_end("cluster-contrast", &["contrast"]);
}

#[test]
fn ise_trains_relabels_and_resumes() {
    end_to_end("ise", &["contrast", "label_preserving"]);
}

fn tensor(v: &[f64], rows: usize, d: usize) -> Tensor {
    let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::from_slice(&v, &[rows, d], &Device::Cpu).unwrap()
}

fn normalised(v: &[f64]) -> Vec<f64> {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter().map(|x| x / n).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn assert_all_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g as f64 - w).abs() <= tol, "{what}[{i}]: {g} vs {w}");
    }
}

fn settings(update: UpdateRule, momentum: f64) -> MemorySettings {
    MemorySettings {
        temperature: 0.05,
        momentum,
        update,
        cluster: ClusterConfig::default(),
        camera_centering: false,
    }
}

/// Camera centring against a host-f64 oracle: each row minus its camera's mean, normalised; a
/// camera with one image keeps its (normalised) row; a camids length mismatch is an error.
#[test]
fn camera_centring_removes_each_cameras_mean() {
    let (n, d) = (6, 3);
    let x: Vec<f32> = vec![
        1.0, 2.0, 0.5, // cam 0
        0.0, 1.0, 1.5, // cam 1
        2.0, 0.0, 1.0, // cam 0
        1.0, 1.0, 1.0, // cam 1
        -1.0, 0.5, 2.0, // cam 2 (alone)
        0.5, 3.0, -0.5, // cam 0
    ];
    let cams = [0u32, 1, 0, 1, 2, 0];
    let got = camera_centered(Features::new(&x, n, d).unwrap(), &cams).unwrap();
    // Hand-computed camera means: cam 0 (1.1667, 1.6667, 0.3333), cam 1 (0.5, 1.0, 1.25).
    let mean = |c: u32| -> Vec<f64> {
        let rows: Vec<usize> = (0..n).filter(|&i| cams[i] == c).collect();
        (0..d)
            .map(|k| rows.iter().map(|&i| x[i * d + k] as f64).sum::<f64>() / rows.len() as f64)
            .collect()
    };
    assert!((mean(0)[0] - 3.5 / 3.0).abs() < 1e-12 && (mean(1)[2] - 1.25).abs() < 1e-12);
    let mut want = Vec::new();
    for i in 0..n {
        let row: Vec<f64> = (0..d).map(|k| x[i * d + k] as f64).collect();
        if cams[i] == 2 {
            want.extend(normalised(&row));
        } else {
            let m = mean(cams[i]);
            want.extend(normalised(
                &row.iter().zip(&m).map(|(a, b)| a - b).collect::<Vec<_>>(),
            ));
        }
    }
    assert_all_close("centred", &got, &want, 1e-6);
    assert!(camera_centered(Features::new(&x, n, d).unwrap(), &cams[..5]).is_err());
}

/// Features dominated by the camera (a large per-camera offset, a small identity signal):
/// clustering them groups each camera's people; the camera-centred features give one cluster
/// per identity spanning the cameras (the ground truth is the oracle).
#[test]
fn camera_centring_turns_camera_clusters_into_identity_clusters() {
    let (ids, cams, d) = (4usize, 3usize, 8usize);
    let mut x = Vec::new();
    let (mut pid, mut cam) = (Vec::new(), Vec::new());
    for c in 0..cams {
        for p in 0..ids {
            for j in 0..2 {
                let mut row = vec![0f32; d];
                row[c] = 3.0; // the camera
                row[cams + p] = 1.0; // the person
                row[d - 1] = 0.01 * j as f32; // two slightly different images
                x.extend(row);
                pid.push(p as i64);
                cam.push(c as u32);
            }
        }
    }
    let n = ids * cams * 2;
    let unit: Vec<f32> = x
        .chunks(d)
        .flat_map(|r| {
            let s = r.iter().map(|v| v * v).sum::<f32>().sqrt();
            r.iter().map(move |v| v / s)
        })
        .collect();
    let cfg = ClusterConfig {
        k1: 6,
        k2: 2,
        eps: 0.5,
        ..ClusterConfig::default()
    };
    let plain = assign(Backend::Cpu, Features::new(&unit, n, d).unwrap(), &cfg).unwrap();
    let centred = camera_centered(Features::new(&unit, n, d).unwrap(), &cam).unwrap();
    let fixed = assign(Backend::Cpu, Features::new(&centred, n, d).unwrap(), &cfg).unwrap();
    // Every plain cluster holds one camera and several people.
    assert!(plain.clusters >= 1, "{plain:?}");
    for k in 0..plain.clusters as i32 {
        let members: Vec<usize> = (0..n).filter(|&i| plain.labels[i] == k).collect();
        assert!(
            members.iter().all(|&i| cam[i] == cam[members[0]]),
            "{plain:?}"
        );
        assert!(
            members.iter().any(|&i| pid[i] != pid[members[0]]),
            "{plain:?}"
        );
    }
    // The centred clusters are the identities.
    assert_eq!(fixed.clusters, ids, "{fixed:?}");
    assert_eq!(fixed.outliers, 0);
    for i in 0..n {
        for j in 0..n {
            assert_eq!(
                fixed.labels[i] == fixed.labels[j],
                pid[i] == pid[j],
                "{i} {j}"
            );
        }
    }
}

/// A fresh memory row is the L2-normalised mean of its cluster's features; outliers add nothing.
#[test]
fn memory_starts_at_the_normalised_cluster_means() {
    let (n, d) = (9, 4);
    let x: Vec<f64> = (0..n * d)
        .map(|i| ((i * 29 % 13) as f64 - 6.0) / 4.0)
        .collect();
    let labels = [2, 0, -1, 1, 0, 2, -1, 1, 0];
    let mem = cluster_memory(
        &tensor(&x, n, d),
        &labels,
        &settings(UpdateRule::Momentum, 0.1),
    )
    .unwrap();
    assert_eq!(mem.centroids.shape(), &[3, d]);
    assert_eq!(mem.mode, MemoryUpdate::Momentum);
    let mut want = Vec::new();
    for c in 0..3 {
        let mut m = vec![0f64; d];
        for i in (0..n).filter(|&i| labels[i] == c) {
            (0..d).for_each(|k| m[k] += x[i * d + k]);
        }
        want.extend(normalised(&m));
    }
    assert_all_close("centroids", &mem.centroids.to_vec().unwrap(), &want, 1e-5);
}

/// The relabel step's labels are `cluster::pseudo_labels`' on the same features, numbered
/// 0..K-1 with the outliers kept at -1.
#[test]
fn relabel_labels_are_the_pseudo_labels() {
    // Three tight groups of 5 on the circle and two far points.
    let mut x = Vec::new();
    for g in 0..3 {
        for i in 0..5 {
            let a = g as f32 * 2.0 + i as f32 * 0.01;
            x.extend([a.cos(), a.sin()]);
        }
    }
    for a in [1.0f32, 3.0] {
        x.extend([a.cos(), a.sin()]);
    }
    let cfg = ClusterConfig {
        k1: 6,
        k2: 2,
        ..ClusterConfig::default()
    };
    let f = Features::new(&x, 17, 2).unwrap();
    let want = pseudo_labels(Backend::Cpu, f, &cfg, None, None).unwrap();
    let got = assign(Backend::Cpu, f, &cfg).unwrap();
    assert_eq!(got.clusters, want.num_clusters);
    assert_eq!(got.outliers, want.num_outliers);
    assert!(got.clusters >= 3, "{want:?}");
    for i in 0..17 {
        assert_eq!(got.labels[i] < 0, want.labels[i] < 0, "{i}");
        assert!(got.labels[i] < got.clusters as i32);
        for j in 0..17 {
            assert_eq!(
                got.labels[i] == got.labels[j],
                want.labels[i] == want.labels[j],
                "{i} {j}"
            );
        }
    }
}

/// Hard update (cm.py `CM_Hard`): per cluster, only the batch member with the lowest cosine to the
/// centroid moves it, `c <- normalise(m c + (1 - m) f_min)`; other clusters are untouched.
#[test]
fn hard_update_moves_each_centroid_towards_its_least_similar_member() {
    let c = [1.0, 0.0, 0.0, 1.0, 0.6, 0.8];
    let deg = |a: f64| [a.cos(), a.sin()];
    // Cluster 0 members at cosines cos(0.3), cos(1.2) (the hardest), cos(0.7); cluster 1 one member.
    let members = [deg(0.3), deg(1.2), deg(0.7), deg(1.0)];
    let f: Vec<f64> = members.iter().flatten().copied().collect();
    let labels = [0, 0, 0, 1];
    let m = 0.2;
    let mut mem = ClusterMemory {
        centroids: tensor(&c, 3, 2),
        momentum: m as f32,
        temperature: 0.05,
        mode: UpdateRule::Hard.memory_update(),
    };
    mem.update(&tensor(&f, 4, 2), &labels).unwrap();
    let row0 = normalised(&[
        m * 1.0 + (1.0 - m) * members[1][0],
        (1.0 - m) * members[1][1],
    ]);
    let row1 = normalised(&[(1.0 - m) * members[3][0], m + (1.0 - m) * members[3][1]]);
    let want = [row0[0], row0[1], row1[0], row1[1], 0.6, 0.8];
    assert_all_close("hard update", &mem.centroids.to_vec().unwrap(), &want, 1e-6);
}

/// ISE: each support is `normalise(f + 0.5 lambda (c_nearest_other - c_own))` with its anchor's
/// label; `[f; s]` with `[y; y]` enters the contrastive loss (host cross-entropy) and then the
/// memory update (momentum: sample by sample over features then supports; hard: the least
/// similar of the features *and* supports).
#[test]
fn ise_supports_keep_their_label_and_join_the_loss_and_the_update() {
    let d = 3;
    let c: Vec<f64> = [
        normalised(&[1.0, 0.1, 0.0]),
        normalised(&[0.0, 1.0, 0.2]),
        normalised(&[0.1, 0.0, 1.0]),
    ]
    .concat();
    let f: Vec<f64> = [
        normalised(&[0.9, 0.3, 0.1]),
        normalised(&[0.8, 0.0, 0.5]),
        normalised(&[0.2, 0.9, 0.1]),
        normalised(&[0.3, 0.2, 0.9]),
    ]
    .concat();
    let labels = [0, 0, 1, 2];
    let b = labels.len();
    let lambda = ise_lambda(1.0, 37, 100);
    let row = |v: &[f64], i: usize| v[i * d..(i + 1) * d].to_vec();
    // Host supports.
    let mut s = Vec::new();
    for i in 0..b {
        let y = labels[i] as usize;
        let n = (0..3)
            .filter(|&k| k != y)
            .max_by(|&a, &k| {
                dot(&row(&f, i), &row(&c, a)).total_cmp(&dot(&row(&f, i), &row(&c, k)))
            })
            .unwrap();
        let v: Vec<f64> = (0..d)
            .map(|t| f[i * d + t] + 0.5 * lambda * (c[n * d + t] - c[y * d + t]))
            .collect();
        s.extend(normalised(&v));
    }
    let all: Vec<f64> = [f.clone(), s.clone()].concat();
    let all_labels: Vec<i32> = [labels, labels].concat();
    // Host contrastive loss over the 2B rows.
    let tau = 0.05;
    let l_cc = (0..2 * b)
        .map(|i| {
            let z: Vec<f64> = (0..3)
                .map(|k| dot(&row(&all, i), &row(&c, k)) / tau)
                .collect();
            let mx = z.iter().cloned().fold(f64::MIN, f64::max);
            let lse = mx + z.iter().map(|v| (v - mx).exp()).sum::<f64>().ln();
            lse - z[all_labels[i] as usize]
        })
        .sum::<f64>()
        / (2 * b) as f64;

    for (rule, m) in [(UpdateRule::Momentum, 0.1), (UpdateRule::Hard, 0.2)] {
        let cfg = IseConfig {
            update: rule,
            momentum: m,
            ..IseConfig::default()
        };
        let mut mem = cluster_memory(&tensor(&c, 3, d), &[0, 1, 2], &cfg.settings()).unwrap();
        // One row per cluster in: the memory starts at c exactly (normalised rows).
        assert_all_close("start", &mem.centroids.to_vec().unwrap(), &c, 1e-6);
        let step = ise_step(&mem, &tensor(&f, b, d), &labels, lambda, &cfg).unwrap();
        assert_all_close("supports", &step.supports.to_vec().unwrap(), &s, 1e-5);
        assert_eq!(step.update_labels, all_labels);
        assert_all_close(
            "update rows",
            &step.update_features.to_vec().unwrap(),
            &all,
            1e-5,
        );
        let got = step.contrast.item().unwrap() as f64;
        assert!((got - l_cc).abs() < 1e-4 * l_cc.max(1.0), "{got} vs {l_cc}");
        assert!(step.label_preserving.item().unwrap().is_finite());

        mem.update(&step.update_features, &step.update_labels)
            .unwrap();
        // Host update over [f; s].
        let mut want = c.clone();
        for k in 0..3 {
            let rows: Vec<usize> = (0..2 * b).filter(|&i| all_labels[i] == k as i32).collect();
            let mut ck = row(&want, k);
            match rule {
                UpdateRule::Momentum => {
                    for &i in &rows {
                        let x = row(&all, i);
                        ck = normalised(
                            &(0..d)
                                .map(|t| m * ck[t] + (1.0 - m) * x[t])
                                .collect::<Vec<_>>(),
                        );
                    }
                }
                UpdateRule::Hard => {
                    let hardest = *rows
                        .iter()
                        .min_by(|&&a, &&bb| {
                            dot(&row(&all, a), &ck).total_cmp(&dot(&row(&all, bb), &ck))
                        })
                        .unwrap();
                    let x = row(&all, hardest);
                    ck = normalised(
                        &(0..d)
                            .map(|t| m * ck[t] + (1.0 - m) * x[t])
                            .collect::<Vec<_>>(),
                    );
                }
            }
            want[k * d..(k + 1) * d].copy_from_slice(&ck);
        }
        assert_all_close(
            &format!("{rule:?} update over features and supports"),
            &mem.centroids.to_vec().unwrap(),
            &want,
            1e-5,
        );
    }

    // Without supports in the contrast, only the features update the memory.
    let cfg = IseConfig {
        supports_in_contrast: false,
        ..IseConfig::default()
    };
    let mem = cluster_memory(&tensor(&c, 3, d), &[0, 1, 2], &cfg.settings()).unwrap();
    let step = ise_step(&mem, &tensor(&f, b, d), &labels, lambda, &cfg).unwrap();
    assert_eq!(step.update_labels, labels.to_vec());
    assert_eq!(step.update_features.shape(), &[b, d]);
}

/// Every Cluster Contrast / ISE preset is a full configuration (it resolves to itself over the
/// method's defaults) and holds the published values of ALGORITHMS.md sections 5, 6 and 12.
#[test]
fn presets_are_full_configs_with_the_published_values() {
    use unreid::train::config::{read_toml_file, resolve};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let method = if name.starts_with("cluster_contrast_") {
            "cluster-contrast"
        } else if name.starts_with("ise_") {
            "ise"
        } else {
            continue;
        };
        seen += 1;
        let file = read_toml_file(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let own = RunConfig::from_toml(&text, &name).unwrap();
        let resolved = resolve(
            &method_defaults(method).unwrap(),
            Some(&file),
            &toml::Table::new(),
            &[],
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(own, resolved, "{name} is not a full configuration");
        let t = &resolved.train;
        let msmt = name.contains("msmt");
        assert_eq!(
            (
                t.batch_size,
                t.num_instances,
                t.bn_group,
                t.lr,
                t.weight_decay
            ),
            (256, 16, 64, 3.5e-4, 5e-4),
            "{name}"
        );
        assert!(resolved.data.source.is_none(), "{name}");
        let sec = resolved.section();
        let eps = sec["cluster"]["eps"].as_float().unwrap();
        let (k1, k2) = (
            sec["cluster"]["k1"].as_integer().unwrap(),
            sec["cluster"]["k2"].as_integer().unwrap(),
        );
        assert_eq!((k1, k2), (30, 6), "{name}");
        let update = sec["update"].as_str().unwrap();
        let momentum = sec["momentum"].as_float().unwrap();
        if method == "cluster-contrast" {
            let cfg: ClusterContrastConfig = resolved.method_config().unwrap();
            assert_eq!(cfg.temperature, 0.05);
            assert_eq!(resolved.model.pooling, "gem", "{name}");
            assert!((eps - 0.6).abs() < 1e-6, "{name}");
            assert_eq!((update, momentum), ("momentum", 0.1), "{name}");
            assert_eq!(
                (t.epochs, t.iters, t.milestones.clone()),
                (50, if msmt { 400 } else { 200 }, vec![20]),
                "{name}"
            );
        } else {
            let cfg: IseConfig = resolved.method_config().unwrap();
            assert_eq!(
                (
                    cfg.lambda_base,
                    cfg.lp_temperature,
                    cfg.supports_in_contrast
                ),
                (1.0, 0.6, true)
            );
            assert_eq!(resolved.model.pooling, "avg", "{name}");
            assert_eq!(t.iters, 400, "{name}");
            if msmt {
                assert!((eps - 0.7).abs() < 1e-6, "{name}");
                assert_eq!((update, momentum, cfg.lp_weight), ("momentum", 0.1, 0.01));
                assert_eq!((t.epochs, t.milestones.clone()), (50, vec![20]));
            } else {
                assert!((eps - 0.4).abs() < 1e-6, "{name}");
                assert_eq!((update, momentum, cfg.lp_weight), ("hard", 0.2, 0.1));
                assert_eq!((t.epochs, t.milestones.clone()), (70, vec![30]));
            }
        }
    }
    assert_eq!(seen, 4, "presets found in {}", dir.display());
}
