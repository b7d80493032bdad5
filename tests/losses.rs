//! Losses: GPU vs the f64 reference, numeric gradients, and hand-computed values.

// Test inputs are listed inline as `&[x.clone()]`; clarity over saving a copy of a small vector.
#![allow(clippy::cloned_ref_to_slice_refs)]

mod common;
use common::{check, compare_forward};
use unreid::autograd::gradcheck::Input;
use unreid::loss::*;
use unreid::{Device, Tensor};

#[test]
fn cross_entropy_with_smoothing_and_ignored_rows() {
    let logits = Input::randn(&[5, 7], 1);
    let labels = [3, -1, 0, 6, 3];
    check(
        "ce eps 0.1",
        &|xs, _| cross_entropy(&xs[0], &labels, 0.1),
        &[logits.clone()],
    );
    check(
        "ce eps 0",
        &|xs, _| cross_entropy(&xs[0], &[1, 2, 3, 4, 5], 0.0),
        &[logits],
    );
    // Uniform logits: the loss is ln C whatever the smoothing.
    let d = common::gpu();
    let zeros = Tensor::zeros(&[2, 10], &d).unwrap();
    let v = cross_entropy(&zeros, &[4, 9], 0.1).unwrap().item().unwrap();
    assert!((v - 10f32.ln()).abs() < 1e-5, "{v}");
    assert!(cross_entropy(&zeros, &[4, 10], 0.1)
        .unwrap_err()
        .to_string()
        .contains("label 10"));
}

#[test]
fn soft_and_symmetric_cross_entropy() {
    let (s, t) = (Input::randn(&[4, 6], 2), Input::randn(&[4, 6], 3));
    // The teacher is detached by design: a constant here, not a checked input.
    let teacher = |d: &Device| Tensor::from_f64(&t.values, &t.shape, d);
    check(
        "soft ce",
        &|xs, d| soft_cross_entropy(&xs[0], &teacher(d)?),
        &[s.clone()],
    );
    check(
        "symmetric ce",
        &|xs, _| symmetric_cross_entropy(&xs[0], &[0, 5, 2, 2], 0.1, 1.0),
        &[s],
    );
}

#[test]
fn distances() {
    let (a, b) = (Input::randn(&[5, 8], 4), Input::randn(&[3, 8], 5));
    check(
        "squared euclidean",
        &|xs, _| squared_euclidean_distance(&xs[0], &xs[1]),
        &[a.clone(), b.clone()],
    );
    check(
        "euclidean",
        &|xs, _| euclidean_distance(&xs[0], &xs[1]),
        &[a.clone(), b.clone()],
    );
    check(
        "cosine",
        &|xs, _| cosine_distance(&xs[0], &xs[1]),
        &[a.clone(), b],
    );
    // Self-distances are finite with finite gradients (the clamp before sqrt).
    let d = Device::CpuF64;
    let x = Tensor::from_f64(&a.values, &a.shape, &d)
        .unwrap()
        .with_requires_grad();
    euclidean_distance(&x, &x)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    assert!(x
        .grad()
        .unwrap()
        .to_vec()
        .unwrap()
        .iter()
        .all(|g| g.is_finite()));
}

#[test]
fn batch_hard_triplet_losses() {
    // Two identities of three and one singleton: the singleton's hardest positive is itself.
    let labels = [0, 0, 1, 1, 0, 1, 2];
    let feats = Input::randn(&[7, 6], 6);
    let mined = |xs: &[Tensor]| batch_hard(&euclidean_distance(&xs[0], &xs[0])?, &labels);
    check(
        "margin triplet",
        &|xs, _| margin_triplet(&mined(xs)?, 0.3),
        &[feats.clone()],
    );
    check(
        "softmax triplet",
        &|xs, _| softmax_triplet(&mined(xs)?),
        &[feats.clone()],
    );
    let teacher = Input::randn(&[7, 6], 7);
    let teacher = |d: &Device| Tensor::from_f64(&teacher.values, &teacher.shape, d);
    check(
        "soft softmax triplet",
        &|xs, d| {
            let t = teacher(d)?;
            soft_softmax_triplet(&mined(xs)?, &euclidean_distance(&t, &t)?)
        },
        &[feats.clone()],
    );
    // Mined values against a direct host computation.
    let d = common::gpu();
    let x = Tensor::from_f64(&feats.values, &feats.shape, &d).unwrap();
    let dist = euclidean_distance(&x, &x).unwrap();
    let m = batch_hard(&dist, &labels).unwrap();
    let dv = dist.to_vec().unwrap();
    for i in 0..7 {
        let row = &dv[i * 7..(i + 1) * 7];
        let ap = (0..7)
            .filter(|&j| labels[j] == labels[i])
            .map(|j| row[j])
            .fold(f32::MIN, f32::max);
        let an = (0..7)
            .filter(|&j| labels[j] != labels[i])
            .map(|j| row[j])
            .fold(f32::MAX, f32::min);
        assert_eq!(m.d_ap.to_vec().unwrap()[i], ap);
        assert_eq!(m.d_an.to_vec().unwrap()[i], an);
    }
    assert_eq!(
        m.ap_idx.to_vec_i32().unwrap()[6],
        6,
        "a singleton is its own positive"
    );
}

#[test]
fn batch_hard_ties_take_the_lowest_index() {
    let d = common::gpu();
    // Four identical features: every distance ties.
    let x = Tensor::ones(&[4, 3], &d).unwrap();
    let m = batch_hard(&euclidean_distance(&x, &x).unwrap(), &[0, 0, 1, 1]).unwrap();
    assert_eq!(m.ap_idx.to_vec_i32().unwrap(), vec![0, 0, 2, 2]);
    assert_eq!(m.an_idx.to_vec_i32().unwrap(), vec![2, 2, 0, 0]);
}

/// SpCL's loss computed directly on the host, in f64, from its definition.
fn hybrid_reference(
    f: &[f64],
    mem: &[f64],
    d: usize,
    row_labels: &[i32],
    classes: usize,
    targets: &[i32],
    tau: f64,
) -> f64 {
    let (b, n) = (f.len() / d, mem.len() / d);
    let mut total = 0.0;
    for i in 0..b {
        let mut sum = vec![0.0; classes];
        let mut cnt = vec![0.0; classes];
        for r in 0..n {
            let s: f64 = (0..d).map(|k| f[i * d + k] * mem[r * d + k]).sum::<f64>() / tau;
            sum[row_labels[r] as usize] += s;
            cnt[row_labels[r] as usize] += 1.0;
        }
        let logits: Vec<f64> = (0..classes)
            .filter(|&c| cnt[c] > 0.0)
            .map(|c| sum[c] / cnt[c])
            .collect();
        let m = logits.iter().copied().fold(f64::MIN, f64::max);
        let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
        let present: Vec<usize> = (0..classes).filter(|&c| cnt[c] > 0.0).collect();
        let pos = present
            .iter()
            .position(|&c| c == targets[i] as usize)
            .unwrap();
        total += -((logits[pos] - m).exp() / z + 1e-6).ln();
    }
    total / b as f64
}

#[test]
fn hybrid_memory_contrast() {
    // 9 memory rows in 6 classes, class 4 empty; tau 0.05 on normalised features must not overflow.
    let row_labels = [0, 1, 1, 2, 3, 3, 3, 5, 0];
    let targets = [3, 0, 5, 1];
    let norm = |i: Input| {
        let d = i.shape[1];
        let mut v = i.values.clone();
        for row in v.chunks_mut(d) {
            let n = row.iter().map(|x| x * x).sum::<f64>().sqrt();
            row.iter_mut().for_each(|x| *x /= n);
        }
        Input::new(v, &i.shape)
    };
    let (f, mem) = (
        norm(Input::randn(&[4, 5], 8)),
        norm(Input::randn(&[9, 5], 9)),
    );
    // The memory is detached by design: a constant, not a checked input.
    let loss = |xs: &[Tensor], d: &Device| {
        let rows = ClassRows::new(&row_labels, 6, d)?;
        let memory = Tensor::from_f64(&mem.values, &mem.shape, d)?;
        hybrid_contrast(&xs[0], &memory, &rows, &targets, 0.05)
    };
    check("hybrid contrast", &loss, &[f.clone()]);
    let want = hybrid_reference(&f.values, &mem.values, 5, &row_labels, 6, &targets, 0.05);
    let got = loss(
        &[Tensor::from_f64(&f.values, &f.shape, &common::gpu()).unwrap()],
        &common::gpu(),
    )
    .unwrap()
    .item()
    .unwrap() as f64;
    assert!(
        (got - want).abs() < 1e-4 * want.abs().max(1.0),
        "{got} vs {want}"
    );
    assert!(ClassRows::new(&[0, 7], 3, &Device::Cpu).is_err());
}

#[test]
fn cluster_contrast_and_ise() {
    let (f, c) = (Input::randn(&[6, 5], 10), Input::randn(&[4, 5], 11));
    let labels = [0, 1, 1, 3, 2, 0];
    // Centroids are detached by design: constants, not checked inputs.
    let centroids = |d: &Device| Tensor::from_f64(&c.values, &c.shape, d)?.l2_normalize(1);
    check(
        "cluster contrast",
        &|xs, d| cluster_contrast(&xs[0].l2_normalize(1)?, &centroids(d)?, &labels, 0.05),
        &[f.clone()],
    );
    check(
        "support samples",
        &|xs, d| support_samples(&xs[0].l2_normalize(1)?, &centroids(d)?, &labels, 0.2),
        &[f.clone()],
    );
    let s = Input::randn(&[6, 5], 12);
    check(
        "label preserving",
        &|xs, _| {
            label_preserving(
                &xs[0].l2_normalize(1)?,
                &xs[1].l2_normalize(1)?,
                &labels,
                0.6,
            )
        },
        &[f, s],
    );
    assert_eq!(ise_lambda(1.0, 0, 100), 0.0);
    assert!((ise_lambda(1.0, 100, 100) - 0.5).abs() < 1e-12);
}

#[test]
fn support_samples_move_towards_the_nearest_other_centroid() {
    let d = common::gpu();
    let c = Tensor::from_slice(&[1.0, 0.0, 0.0, 1.0, -1.0, 0.0], &[3, 2], &d).unwrap();
    let f = Tensor::from_slice(&[0.8, 0.6], &[1, 2], &d).unwrap();
    // Own centroid 0; nearest other is centroid 1 (cos 0.6 > -0.8).
    let s = support_samples(&f, &c, &[0], 1.0)
        .unwrap()
        .to_vec()
        .unwrap();
    let (x, y) = (0.8 + 0.5 * (0.0 - 1.0), 0.6 + 0.5 * (1.0 - 0.0));
    let n = ((x * x + y * y) as f32).sqrt();
    assert!(
        (s[0] - x as f32 / n).abs() < 1e-6 && (s[1] - y as f32 / n).abs() < 1e-6,
        "{s:?}"
    );
}

#[test]
fn prototype_weights_are_a_softmax_over_shifted_distances() {
    let (f, p) = (Input::randn(&[5, 4], 13), Input::randn(&[3, 4], 14));
    compare_forward(
        "prototype weights",
        &|xs, _| prototype_weights(&xs[0], &xs[1], 0.5),
        &[f, p],
        1e-4,
        1e-6,
    );
}

#[test]
fn rectified_labels_reweight_and_renormalise() {
    let d = common::gpu();
    let p = Tensor::from_slice(&[0.6, 0.3, 0.1, 0.2, 0.2, 0.6], &[2, 3], &d).unwrap();
    let w = Tensor::from_slice(&[0.1, 0.8, 0.1, 1.0, 0.0, 0.0], &[2, 3], &d).unwrap();
    let (soft, hard) = rectified_labels(&p, &w).unwrap();
    let s = soft.to_vec().unwrap();
    // Row 0: (0.06, 0.24, 0.01) / 0.31; row 1: all mass on class 0.
    assert!(
        (s[1] - 0.24 / 0.31).abs() < 1e-6 && (s[3] - 1.0).abs() < 1e-6,
        "{s:?}"
    );
    assert_eq!(hard, vec![1, 0]);
}
