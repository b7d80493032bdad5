//! ProDA-style denoising (shared/ALGORITHMS.md section 7, microsoft/ProDA): the prototype weights
//! against a host f64 oracle (rows sum to one), rectified labels on hand-computed cases (a label
//! moves only where the prototypes say so), the prototypes' per-sample EMA over several batches,
//! the rectification log's counts, the stored soft labels (eval-mode classifier probabilities
//! of the un-augmented images, against a host f64 softmax of a direct forward pass) and that the
//! training step rectifies with them rather than with the mean net's prediction on the batch,
//! and end to end on a tiny synthetic two-domain set on
//! `Device::Cpu`: two short epochs from a `source` run made here give finite loss terms and a
//! measured mAP, and a run stopped after one epoch and resumed logs exactly what an unbroken run
//! logs.

#[path = "common/train.rs"]
mod train_common;

use train_common::{source_fixture, SourceFixture};

use std::path::Path;
use std::sync::Arc;

use unreid::cluster::EpsFrom;
use unreid::data::datasets::{load, DatasetSpec, Layout};
use unreid::data::transforms::test_input;
use unreid::loss::{prototype_weights, rectified_labels, symmetric_cross_entropy};
use unreid::memory::PrototypeBank;
use unreid::nn::Ctx;
use unreid::train::proda::{majority_ids, ProdaConfig, ProdaMethod, PrototypeSpace, RectifyStats};
use unreid::train::run_dir::RunMode;
use unreid::train::{method_defaults, train, Method, RunConfig, Session, TrainBatch, TrainOptions};
use unreid::{Device, Tensor};

/// Deterministic values in [-1, 1) (a small LCG, independent of the crate's RNG).
fn values(n: usize, seed: u64) -> Vec<f64> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
        })
        .collect()
}

fn cpu(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_f64(v, shape, &Device::CpuF64).unwrap()
}

#[test]
fn prototype_weights_are_the_public_codes_softmax_and_sum_to_one() {
    let (b, k, d) = (6, 5, 7);
    let f = values(b * d, 1);
    let eta = values(k * d, 2);
    for t in [1.0, 0.5, 3.0] {
        let w = prototype_weights(&cpu(&f, &[b, d]), &cpu(&eta, &[k, d]), t as f32)
            .unwrap()
            .to_vec_f64()
            .unwrap();
        for i in 0..b {
            let dist: Vec<f64> = (0..k)
                .map(|j| {
                    (0..d)
                        .map(|c| (f[i * d + c] - eta[j * d + c]).powi(2))
                        .sum::<f64>()
                        .sqrt()
                })
                .collect();
            let min = dist.iter().copied().fold(f64::MAX, f64::min);
            // microsoft/ProDA: softmax(-(d - min d) * proto_temperature).
            let e: Vec<f64> = dist.iter().map(|x| (-(x - min) * t).exp()).collect();
            let z: f64 = e.iter().sum();
            let row = &w[i * k..(i + 1) * k];
            for j in 0..k {
                assert!(
                    (row[j] - e[j] / z).abs() < 1e-9,
                    "T {t} sample {i} class {j}: {} vs {}",
                    row[j],
                    e[j] / z
                );
            }
            let sum: f64 = row.iter().sum();
            assert!(
                (sum - 1.0).abs() < 1e-12,
                "T {t} sample {i}: weights sum to {sum}"
            );
        }
    }
    // A larger T sharpens the weights (the multiplication the public code uses, not a division).
    let w1 = prototype_weights(&cpu(&f, &[b, d]), &cpu(&eta, &[k, d]), 1.0).unwrap();
    let w3 = prototype_weights(&cpu(&f, &[b, d]), &cpu(&eta, &[k, d]), 3.0).unwrap();
    let max = |t: &Tensor| {
        t.to_vec_f64().unwrap()[..k]
            .iter()
            .copied()
            .fold(0.0, f64::max)
    };
    assert!(max(&w3) > max(&w1));
}

#[test]
fn a_rectified_label_moves_only_where_the_prototypes_say_so() {
    // Three prototypes on the unit axes. Sample 0 sits at the origin, equally far from all three
    // (uniform weights); samples 1 and 2 sit at (0, 0.5, 0), nearer prototype 1:
    // d = (sqrt(1.25), 0.5, sqrt(1.25)), w ∝ (e^{-(sqrt(1.25)-0.5)}, 1, e^{-(sqrt(1.25)-0.5)}).
    let eta = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
    let f = [0.0, 0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 0.5, 0.0];
    let w = prototype_weights(&cpu(&f, &[3, 3]), &cpu(&eta, &[3, 3]), 1.0).unwrap();
    let a = (-(1.25f64.sqrt() - 0.5)).exp(); // 0.5390
    let z = 2.0 * a + 1.0;
    let want_w = [
        [1.0 / 3.0; 3],
        [a / z, 1.0 / z, a / z],
        [a / z, 1.0 / z, a / z],
    ];
    let got_w = w.to_vec_f64().unwrap();
    for i in 0..3 {
        for j in 0..3 {
            assert!((got_w[i * 3 + j] - want_w[i][j]).abs() < 1e-9);
        }
    }
    // Classifier probabilities: class 0 ahead of class 1 in all three rows.
    let p = [0.5, 0.4, 0.1, 0.5, 0.4, 0.1, 0.7, 0.2, 0.1];
    let (soft, hard) = rectified_labels(&cpu(&p, &[3, 3]), &w).unwrap();
    // Row 0: uniform evidence, the label stays 0. Row 1: 0.5 a < 0.4 (a = 0.539), the prototype
    // moves it to 1. Row 2: 0.7 a = 0.377 > 0.2, class 0 is too far ahead to move.
    assert_eq!(hard, vec![0, 1, 0]);
    let soft = soft.to_vec_f64().unwrap();
    let row1 = [0.5 * a, 0.4, 0.1 * a];
    let s1: f64 = row1.iter().sum();
    for j in 0..3 {
        assert!((soft[3 + j] - row1[j] / s1).abs() < 1e-9, "row 1 class {j}");
        assert!((soft[j] - p[j]).abs() < 1e-9, "uniform weights keep p");
    }
    // On random cases: a label that moves always moves to a class with more prototype weight.
    let (b, k) = (40, 6);
    let w = prototype_weights(
        &cpu(&values(b * 4, 7), &[b, 4]),
        &cpu(&values(k * 4, 8), &[k, 4]),
        2.0,
    )
    .unwrap();
    let logits: Vec<f64> = values(b * k, 9).iter().map(|v| 2.0 * v).collect();
    let probs = cpu(&logits, &[b, k]).softmax().unwrap();
    let (_, hard) = rectified_labels(&probs, &w).unwrap();
    let (pv, wv) = (probs.to_vec_f64().unwrap(), w.to_vec_f64().unwrap());
    let mut moved = 0;
    for i in 0..b {
        let row = &pv[i * k..(i + 1) * k];
        let y = (0..k).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        let r = hard[i] as usize;
        if r != y {
            moved += 1;
            assert!(
                wv[i * k + r] > wv[i * k + y],
                "sample {i}: moved against the evidence"
            );
        }
    }
    assert!(moved > 0, "the random case must move some labels to bite");
}

#[test]
fn prototypes_follow_the_per_sample_ema_over_several_batches() {
    let d = 3;
    let feats = values(6 * d, 20);
    let labels = [0, 1, 2, 1, 0, 2];
    // Exact in f32 (the bank stores m as f32), so the f64 oracle can be held to 1e-12.
    let m = 0.125;
    let mut bank = PrototypeBank::from_clusters(&cpu(&feats, &[6, d]), &labels, m as f32).unwrap();
    // Initial prototypes: plain means of the members (calc_prototype.py), not normalised.
    let mut want = vec![0.0; 3 * d];
    for c in 0..3 {
        for j in 0..d {
            let members: Vec<f64> = (0..6)
                .filter(|&i| labels[i] == c as i32)
                .map(|i| feats[i * d + j])
                .collect();
            want[c * d + j] = members.iter().sum::<f64>() / members.len() as f64;
        }
    }
    let check = |bank: &PrototypeBank, want: &[f64], what: &str| {
        let got = bank.prototypes.to_vec_f64().unwrap();
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() < 1e-12,
                "{what}: element {i} is {g}, the formula gives {w}"
            );
        }
    };
    check(&bank, &want, "initial class means");
    // Three batches, with repeats of a class inside a batch: each sample moves its prototype
    // once, in batch order (microsoft/ProDA update_objective_SingleVector).
    let batches: [&[i32]; 3] = [&[2, 2, 0, 2], &[1], &[0, 1, 0, 0, 1]];
    for (s, rows) in batches.iter().enumerate() {
        let f = values(rows.len() * d, 30 + s as u64);
        bank.update(&cpu(&f, &[rows.len(), d]), rows).unwrap();
        for (i, &r) in rows.iter().enumerate() {
            for j in 0..d {
                let e = &mut want[r as usize * d + j];
                *e = (1.0 - m) * *e + m * f[i * d + j];
            }
        }
        check(&bank, &want, &format!("after batch {s}"));
    }
    // Outliers have no prototype.
    assert!(bank.update(&cpu(&[0.0; 3], &[1, 3]), &[-1]).is_err());
}

#[test]
fn the_rectification_log_counts_against_the_majority_ids() {
    // Clusters 0: ids (7, 7, 9); 1: ids (9, 9, 7); 2: (5); an outlier.
    let labels = [0, 0, 0, 1, 1, 1, 2, -1];
    let truth = [7, 7, 9, 9, 9, 7, 5, 3];
    let majority = majority_ids(&labels, &truth, 3);
    assert_eq!(majority, vec![7, 9, 5]);
    // Ties go to the smallest id.
    assert_eq!(majority_ids(&[0, 0], &[4, 2], 1), vec![2]);
    let mut s = RectifyStats::default();
    // (cluster, rectified, mean-net argmax, truth)
    s.count(0, 0, 0, 7, &majority); // unchanged
    s.count(0, 1, 0, 9, &majority); // changed by the prototypes, now agrees with 1's majority
    s.count(1, 0, 0, 9, &majority); // changed with the mean net, agreed before, not now
    s.count(1, 2, 1, 3, &majority); // changed, agrees with neither
    assert_eq!(
        s,
        RectifyStats {
            seen: 4,
            changed: 3,
            changed_by_prototypes: 2,
            now_majority: 1,
            before_majority: 1,
        }
    );
}

// ---------------------------------------------------------------------------------------------
// End to end.

fn options(out: &Path, mode: RunMode, max: Option<usize>) -> TrainOptions {
    TrainOptions {
        out: out.to_path_buf(),
        mode,
        device: Device::Cpu,
        max_epochs_this_run: max,
    }
}

/// The source checkpoint shared by the end-to-end tests.
fn fixture() -> &'static SourceFixture {
    source_fixture("proda")
}

fn proda_config(fx: &SourceFixture) -> RunConfig {
    let mut c = method_defaults("proda").unwrap();
    c.data.target = Some(fx.root.join("data/target"));
    c.model.arch = "resnet18".into();
    c.model.init = Some(fx.source_ckpt.clone());
    c.train.epochs = 2;
    c.train.iters = 6;
    c.train.batch_size = 16;
    c.train.num_instances = 4;
    c.train.bn_group = 8;
    c.train.height = 32;
    c.train.width = 16;
    c.train.eval_every = 1;
    c.train.log_every = 1;
    c.train.seed = 5;
    let mut p = ProdaConfig::default();
    p.cluster.k = 8;
    c.sections
        .insert("proda".into(), toml::Value::try_from(p).unwrap());
    c
}

fn session(config: RunConfig) -> Session {
    let mut spec = DatasetSpec::new(config.data.target.clone().unwrap(), Layout::Auto);
    spec.domain = 1;
    Session::new(
        Device::Cpu,
        config,
        None,
        Some(Arc::new(load(&spec).unwrap())),
    )
}

/// Test-transform images of target train items `rows`, [B, 3, H, W].
fn images(sess: &Session, rows: &[usize]) -> Tensor {
    let t = &sess.config.train;
    let items = &sess.target.as_ref().unwrap().train;
    let pixels: Vec<f32> = rows
        .iter()
        .flat_map(|&i| test_input(&items[i].path, t.height, t.width).unwrap())
        .collect();
    Tensor::from_slice(&pixels, &[rows.len(), 3, t.height, t.width], &sess.device).unwrap()
}

fn mean_net(m: &ProdaMethod) -> &unreid::nn::ReidNet {
    m.models().into_iter().find(|(n, _)| n == "mean").unwrap().1
}

/// Host f64 softmax of each row.
fn softmax_rows(v: &[f64], k: usize) -> Vec<f64> {
    v.chunks(k)
        .flat_map(|row| {
            let max = row.iter().copied().fold(f64::MIN, f64::max);
            let e: Vec<f64> = row.iter().map(|x| (x - max).exp()).collect();
            let z: f64 = e.iter().sum();
            e.into_iter().map(move |x| x / z)
        })
        .collect()
}

fn argmax(row: &[f64]) -> i32 {
    (0..row.len()).fold(0, |b, j| if row[j] > row[b] { j } else { b }) as i32
}

#[test]
fn the_stored_soft_labels_are_the_eval_mode_probabilities_of_the_unaugmented_images() {
    let fx = fixture();
    let sess = session(proda_config(fx));
    let mut m = ProdaMethod::build(&sess).unwrap();
    let plan = m.relabel(&sess, 0).unwrap();
    let k = plan.record["clusters"].as_u64().unwrap() as usize;
    let n = sess.target.as_ref().unwrap().train.len();
    let stored = m.soft_labels().to_vec();
    assert_eq!(stored.len(), n * k);
    // Independently: the mean net's full forward pass in eval mode on the test transform, then
    // a host f64 softmax of its logits.
    let mean = mean_net(&m);
    let rows: Vec<usize> = (0..n).collect();
    let mut want = Vec::with_capacity(n * k);
    for chunk in rows.chunks(7) {
        let out = unreid::no_grad(|| mean.forward(&images(&sess, chunk), &Ctx::eval())).unwrap();
        let logits = out.logits.unwrap().to_vec_f64().unwrap();
        assert_eq!(logits.len(), chunk.len() * k);
        want.extend(softmax_rows(&logits, k));
    }
    for (i, (g, w)) in stored.iter().zip(&want).enumerate() {
        assert!(
            (*g as f64 - w).abs() < 1e-5,
            "image {} class {}: stored {g}, eval-mode softmax {w}",
            i / k,
            i % k
        );
    }
    // Off: nothing is stored.
    let mut c = proda_config(fx);
    let mut p: ProdaConfig = c.method_config().unwrap();
    p.rectify = false;
    c.sections
        .insert("proda".into(), toml::Value::try_from(p).unwrap());
    let sess = session(c);
    let mut off = ProdaMethod::build(&sess).unwrap();
    off.relabel(&sess, 0).unwrap();
    assert!(off.soft_labels().is_empty());
}

#[test]
fn the_prototypes_are_cluster_means_of_the_raw_neck_output_or_of_the_normalised_one() {
    let fx = fixture();
    for space in [PrototypeSpace::Neck, PrototypeSpace::Normalized] {
        let mut c = proda_config(fx);
        let mut p: ProdaConfig = c.method_config().unwrap();
        p.prototype_space = space;
        c.sections
            .insert("proda".into(), toml::Value::try_from(p).unwrap());
        let sess = session(c);
        let mut m = ProdaMethod::build(&sess).unwrap();
        let plan = m.relabel(&sess, 0).unwrap();
        let k = plan.record["clusters"].as_u64().unwrap() as usize;
        let labels: Vec<i32> = plan.streams[0].items.iter().map(|i| i.pid).collect();
        // Independently: the mean net's eval-mode BN-neck output on the test transform, in f64
        // (normalised on the host for the normalised space), averaged per cluster.
        let mean = mean_net(&m);
        let d = mean.feature_dim();
        let rows: Vec<usize> = (0..labels.len()).collect();
        let (mut sums, mut counts) = (vec![0f64; k * d], vec![0usize; k]);
        for chunk in rows.chunks(7) {
            let out =
                unreid::no_grad(|| mean.forward(&images(&sess, chunk), &Ctx::eval())).unwrap();
            let f = out.bn.to_vec_f64().unwrap();
            for (r, &i) in chunk.iter().enumerate() {
                let Ok(l) = usize::try_from(labels[i]) else {
                    continue;
                };
                let row = &f[r * d..(r + 1) * d];
                let scale = match space {
                    PrototypeSpace::Neck => 1.0,
                    PrototypeSpace::Normalized => {
                        1.0 / row.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12)
                    }
                };
                for (s, v) in sums[l * d..(l + 1) * d].iter_mut().zip(row) {
                    *s += v * scale;
                }
                counts[l] += 1;
            }
        }
        let got = m.prototypes().unwrap().to_vec_f64().unwrap();
        assert_eq!(got.len(), k * d);
        for (j, (g, s)) in got.iter().zip(&sums).enumerate() {
            let want = s / counts[j / d] as f64;
            assert!(
                (g - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "{space:?}: prototype {} dim {}: {g} vs cluster mean {want}",
                j / d,
                j % d
            );
        }
        // The raw neck output is far from the unit sphere (else the two spaces would coincide).
        if space == PrototypeSpace::Neck {
            let norm0 = got[..d].iter().map(|v| v * v).sum::<f64>().sqrt();
            assert!(norm0 > 2.0, "a raw prototype of norm {norm0}");
        }
    }
}

#[test]
fn the_step_rectifies_with_the_stored_soft_labels_not_the_batchs_prediction() {
    let fx = fixture();
    let sess = session(proda_config(fx));
    let cfg: ProdaConfig = sess.config.method_config().unwrap();
    let mut m = ProdaMethod::build(&sess).unwrap();
    let plan = m.relabel(&sess, 0).unwrap();
    let k = plan.record["clusters"].as_u64().unwrap() as usize;
    let cluster: Vec<i32> = plan.streams[0].items.iter().map(|i| i.pid).collect();
    // A batch of 16 clustered images, in a shuffled order (rows != dataset indices).
    let mut rows: Vec<usize> = (0..cluster.len()).filter(|&i| cluster[i] >= 0).collect();
    rows.reverse();
    rows.truncate(16);
    rows.rotate_left(5);
    let x = images(&sess, &rows);
    let ctx = Ctx::train().parts(&[(0, 8), (0, 8)]).seed(9);
    let batch = TrainBatch {
        images: x.clone(),
        second_view: Some(x.clone()),
        labels: rows.iter().map(|&i| cluster[i]).collect(),
        indices: rows.clone(),
        ranges: std::iter::once(0..rows.len()).collect(),
        ctx: ctx.clone(),
        epoch: 0,
        iter: 0,
        step: 0,
    };
    // The oracle, on copies taken before the step (its forward passes move BN statistics).
    let mean = mean_net(&m).duplicate().unwrap();
    let net = m
        .models()
        .into_iter()
        .find(|(n, _)| n == "net")
        .unwrap()
        .1
        .duplicate()
        .unwrap();
    let om = unreid::no_grad(|| mean.forward(&x, &ctx)).unwrap();
    // The prototypes' space (ProDA's default: the raw BN-neck output).
    let feat = match cfg.prototype_space {
        PrototypeSpace::Neck => om.bn.clone(),
        PrototypeSpace::Normalized => om.bn.l2_normalize(1).unwrap(),
    };
    let w = prototype_weights(&feat, m.prototypes().unwrap(), cfg.temperature as f32)
        .unwrap()
        .to_vec_f64()
        .unwrap();
    let stored = m.soft_labels();
    let step_p = softmax_rows(&om.logits.unwrap().to_vec_f64().unwrap(), k);
    let (mut want, mut from_step, mut want_argmax) = (vec![], vec![], vec![]);
    for (r, &i) in rows.iter().enumerate() {
        let p: Vec<f64> = stored[i * k..(i + 1) * k]
            .iter()
            .map(|&v| v as f64)
            .collect();
        want_argmax.push(argmax(&p));
        let joint: Vec<f64> = (0..k).map(|j| p[j] * w[r * k + j]).collect();
        want.push(argmax(&joint));
        let joint: Vec<f64> = (0..k).map(|j| step_p[r * k + j] * w[r * k + j]).collect();
        from_step.push(argmax(&joint));
    }
    assert_ne!(
        want, from_step,
        "the case must tell stored from step soft labels apart"
    );
    let terms = m.losses(&sess, &batch).unwrap();
    let sce = terms
        .iter()
        .find(|(n, _)| n == "sce")
        .unwrap()
        .1
        .item()
        .unwrap() as f64;
    let logits = net.forward(&x, &ctx).unwrap().logits.unwrap();
    let sce_of = |labels: &[i32]| {
        symmetric_cross_entropy(&logits, labels, cfg.sce_alpha as f32, cfg.sce_beta as f32)
            .unwrap()
            .item()
            .unwrap() as f64
    };
    let (a, b) = (sce_of(&want), sce_of(&from_step));
    assert!(
        (a - b).abs() > 1e-4,
        "the two label sets must give different losses"
    );
    assert!(
        (sce - a).abs() <= 1e-6 * (1.0 + a.abs()),
        "step sce {sce}: with the stored soft labels {a}, with the batch's prediction {b}"
    );
    // The counts: changed against the cluster labels, and of those (RectifyStats' definition),
    // the ones the prototypes moved away from the stored argmax. (Counting every row whose label
    // differs from the stored argmax made this test depend on the last bits of the CPU's
    // arithmetic: a row whose stored soft label is a near tie but whose label is unchanged.)
    let stats: RectifyStats =
        serde_json::from_value(m.state().unwrap().1["stats"].clone()).unwrap();
    let changed = (0..rows.len())
        .filter(|&r| want[r] != batch.labels[r])
        .count();
    let by_proto = (0..rows.len())
        .filter(|&r| want[r] != batch.labels[r] && want[r] != want_argmax[r])
        .count();
    assert_eq!(
        (stats.seen, stats.changed, stats.changed_by_prototypes),
        (16, changed as u64, by_proto as u64)
    );
}

fn records(run: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Records without wall-clock fields (the per-stage `timing` records are nothing else).
fn comparable(recs: &[serde_json::Value]) -> Vec<serde_json::Value> {
    recs.iter()
        .filter(|r| r["kind"] != "timing")
        .map(|r| {
            let mut r = r.clone();
            if let Some(o) = r.as_object_mut() {
                o.remove("seconds");
                o.remove("images_per_s");
            }
            r
        })
        .collect()
}

/// Equal JSON, numbers to 1e-12 relative (the NMI sums its terms in hash order).
fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value::*;
    match (a, b) {
        (Number(x), Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-12 * (1.0 + x.abs())
        }
        (Object(x), Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same(v, w)),
        _ => a == b,
    }
}

#[test]
fn two_epochs_train_with_finite_terms_and_resume_is_exact() {
    let fx = fixture();
    let full = fx.root.join("proda-full");
    let s = train(proda_config(fx), options(&full, RunMode::New, None)).unwrap();
    assert!(s.finished);
    let recs = records(&full);
    let steps: Vec<_> = recs.iter().filter(|r| r["kind"] == "step").collect();
    assert_eq!(steps.len(), 12);
    for r in &steps {
        for term in ["sce", "consistency"] {
            let v = r["terms"][term].as_f64().unwrap();
            assert!(v.is_finite() && v >= 0.0, "{term} = {v}");
        }
    }
    let relabels: Vec<_> = recs.iter().filter(|r| r["kind"] == "relabel").collect();
    assert_eq!(relabels.len(), 2);
    assert!(relabels.iter().all(|r| r["nmi"].as_f64().is_some()));
    // Epoch 0's rectification counts arrive with epoch 1's relabelling: 6 steps x 16 samples.
    let rect = &relabels[1]["rectified_previous_epoch"];
    assert_eq!(rect["epoch"], 0);
    assert_eq!(rect["seen"].as_u64(), Some(96));
    let changed = rect["changed"].as_u64().unwrap();
    assert!(changed <= 96 && rect["now_majority"].as_u64().unwrap() <= changed);
    let evals: Vec<_> = recs.iter().filter(|r| r["kind"] == "eval").collect();
    assert_eq!(evals.len(), 4, "mean net and net every epoch");
    eprintln!(
        "proda: direct transfer mAP {:.4} -> best {:?}; epoch 0 rectification {rect}",
        fx.direct_map, s.best_map
    );
    assert!(
        s.best_map.is_some_and(|m| m.is_finite() && m > 0.0) && fx.direct_map > 0.0,
        "ProDA {:?} vs direct transfer {}",
        s.best_map,
        fx.direct_map
    );
    let state = full.join("checkpoints/state.safetensors");
    assert!(state.is_file());

    // Stopped after one epoch, then resumed: the same records.
    let parts = fx.root.join("proda-resumed");
    let first = train(proda_config(fx), options(&parts, RunMode::New, Some(1))).unwrap();
    assert!(!first.finished);
    let second = train(proda_config(fx), options(&parts, RunMode::Resume, None)).unwrap();
    assert!(second.finished);
    let resumed = comparable(&records(&parts));
    let unbroken = comparable(&recs);
    assert_eq!(resumed.len(), unbroken.len());
    for (a, b) in resumed.iter().zip(&unbroken) {
        assert!(same(a, b), "resumed {a}\nunbroken {b}");
    }
    assert_eq!(second.best_map, s.best_map);
    for dir in [full, parts] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn bad_proda_settings_are_errors_before_training() {
    let fx = fixture();
    for (key, value) in [
        ("temperature", toml::Value::Float(0.0)),
        ("prototype_momentum", toml::Value::Float(1.5)),
        ("sce_beta", toml::Value::Float(-1.0)),
        ("no_such_key", toml::Value::Float(1.0)),
    ] {
        let mut c = proda_config(fx);
        let section = c.sections.get_mut("proda").unwrap().as_table_mut().unwrap();
        section.insert(key.into(), value);
        let out = fx.root.join(format!("bad-{key}"));
        let err = train(c, options(&out, RunMode::New, None))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{key}: {err}");
    }
    // One net: a second init is refused rather than ignored.
    let mut c = proda_config(fx);
    c.model.init2 = Some(fx.source_ckpt.clone());
    let err = train(c, options(&fx.root.join("bad-init2"), RunMode::New, None))
        .unwrap_err()
        .to_string();
    assert!(err.contains("init2"), "{err}");
}

#[test]
fn every_proda_preset_parses_with_the_published_values() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.starts_with("proda_") && name.ends_with(".toml")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let c = RunConfig::from_toml(&text, &name).unwrap();
        assert_eq!(c.method, "proda", "{name}");
        c.train.validate().unwrap();
        let p: ProdaConfig = c.method_config().unwrap();
        let d = ProdaConfig::default();
        assert_eq!(
            (p.temperature, p.prototype_momentum, p.sce_alpha, p.sce_beta),
            (1.0, 1e-4, 0.1, 1.0),
            "{name}"
        );
        assert_eq!(
            (p.rectify, p.consistency_weight, p.ema_alpha),
            (d.rectify, d.consistency_weight, d.ema_alpha),
            "{name}"
        );
        assert_eq!(
            (p.cluster.eps_from, p.cluster.rho),
            (EpsFrom::Rho, 1.6e-3),
            "{name}"
        );
        n += 1;
    }
    assert_eq!(n, 3, "ProDA on the MMT pairs");
}

#[test]
fn prodas_eps_source_defaults_to_rho_and_takes_a_fixed_eps_from_the_config() {
    let resolved = |sets: &[&str]| -> ProdaConfig {
        let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
        unreid::train::config::resolve(
            &method_defaults("proda").unwrap(),
            None,
            &toml::Table::new(),
            &sets,
        )
        .unwrap()
        .method_config()
        .unwrap()
    };
    let d = resolved(&[]);
    assert_eq!((d.cluster.eps_from, d.cluster.rho), (EpsFrom::Rho, 1.6e-3));
    let p = resolved(&[
        "proda.cluster.algo=dbscan",
        "proda.cluster.eps_from=fixed",
        "proda.cluster.eps=0.4",
    ]);
    assert_eq!((p.cluster.eps_from, p.cluster.eps), (EpsFrom::Fixed, 0.4));
}
