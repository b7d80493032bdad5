//! Independent oracles for every loss, update rule and schedule (issue 17).
//!
//! Each oracle is host f64 written directly from shared/ALGORITHMS.md and the reference code
//! (MMT, SpCL, Cluster Contrast, ISE, ProDA, torch.optim), never from our kernels or their CPU
//! references, which could share a wrong definition with the kernel. Inputs are asymmetric,
//! momenta are not 0.5, optimisers take several steps, so each plausible mistake (swapped roles,
//! mu <-> 1 - mu, beta1 for beta1^t, a missing factor) changes the answer; the failure message
//! names the rule. The GPU under test computes in f32, hence the relative tolerances ~1e-4.

mod common;
use unreid::autograd::gradcheck::Input;
use unreid::loss::*;
use unreid::memory::{ClusterMemory, HybridMemory, MemoryUpdate, PrototypeBank};
use unreid::nn::{Module, Param};
use unreid::ops::memory::update_memory_rows;
use unreid::ops::optim::{adam_update, AdamHyper};
use unreid::optim::{Adam, LrSchedule, MeanTeacher, Optimizer, Sgd, Warmup};
use unreid::{Device, Tensor};

// ---------------------------------------------------------------------------------------------
// Host helpers (f64, no crate code).

fn values(shape: &[usize], seed: u64) -> Vec<f64> {
    Input::randn(shape, seed).values
}

fn normalise_rows(mut v: Vec<f64>, d: usize) -> Vec<f64> {
    for row in v.chunks_mut(d) {
        let n = row.iter().map(|x| x * x).sum::<f64>().sqrt();
        row.iter_mut().for_each(|x| *x /= n);
    }
    v
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn log_softmax(z: &[f64]) -> Vec<f64> {
    let m = z.iter().copied().fold(f64::MIN, f64::max);
    let lse = m + z.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
    z.iter().map(|x| x - lse).collect()
}

fn softmax(z: &[f64]) -> Vec<f64> {
    log_softmax(z).iter().map(|x| x.exp()).collect()
}

/// Euclidean distance as the reference computes it: `sqrt(clamp(||a||^2 + ||b||^2 - 2ab, 1e-12))`.
fn host_dist(a: &[f64], b: &[f64], d: usize) -> Vec<f64> {
    let (m, n) = (a.len() / d, b.len() / d);
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            let (x, y) = (&a[i * d..(i + 1) * d], &b[j * d..(j + 1) * d]);
            let d2 = dot(x, x) + dot(y, y) - 2.0 * dot(x, y);
            out.push(d2.max(1e-12).sqrt());
        }
    }
    out
}

fn gpu_tensor(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_f64(v, shape, &common::gpu()).unwrap()
}

fn scalar(t: unreid::Result<Tensor>) -> f64 {
    t.unwrap().to_vec_f64().unwrap()[0]
}

#[track_caller]
fn close(rule: &str, got: f64, want: f64, rtol: f64) {
    assert!(
        (got - want).abs() <= rtol * want.abs().max(1.0),
        "{rule}: got {got}, the definition gives {want}"
    );
}

#[track_caller]
fn close_all(rule: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{rule}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * w.abs().max(1.0),
            "{rule}: element {i} is {g}, the definition gives {w}\n got {got:?}\nwant {want:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// MMT triplet losses (ALGORITHMS.md section 3).

/// Batch-hard mining straight from the definition: hardest positive = largest same-label
/// distance (the anchor itself included), hardest negative = smallest different-label distance;
/// ties resolved to the lowest index.
fn host_mine(dist: &[f64], labels: &[i32]) -> Vec<(usize, usize)> {
    let b = labels.len();
    (0..b)
        .map(|i| {
            let row = &dist[i * b..(i + 1) * b];
            let (mut p, mut n) = (None::<usize>, None::<usize>);
            for j in 0..b {
                if labels[j] == labels[i] {
                    if p.is_none_or(|q| row[j] > row[q]) {
                        p = Some(j);
                    }
                } else if n.is_none_or(|q| row[j] < row[q]) {
                    n = Some(j);
                }
            }
            (p.unwrap(), n.unwrap())
        })
        .collect()
}

const TRIPLET_LABELS: [i32; 8] = [0, 0, 0, 1, 1, 2, 2, 3];

fn triplet_features(seed: u64) -> Vec<f64> {
    values(&[8, 5], seed)
}

fn mined(x: &Tensor) -> Mined {
    batch_hard(&euclidean_distance(x, x).unwrap(), &TRIPLET_LABELS).unwrap()
}

#[test]
fn softmax_triplet_is_minus_log_of_the_negative_share() {
    let x = triplet_features(31);
    let dist = host_dist(&x, &x, 5);
    let mine = host_mine(&dist, &TRIPLET_LABELS);
    // T = e^{d_n} / (e^{d_p} + e^{d_n}); loss -log T.
    let want = mine
        .iter()
        .enumerate()
        .map(|(i, &(p, n))| {
            let (dp, dn) = (dist[i * 8 + p], dist[i * 8 + n]);
            -(dn.exp() / (dp.exp() + dn.exp())).ln()
        })
        .sum::<f64>()
        / 8.0;
    let got = scalar(softmax_triplet(&mined(&gpu_tensor(&x, &[8, 5]))));
    close(
        "softmax-triplet -log(e^d_n / (e^d_p + e^d_n))",
        got,
        want,
        1e-4,
    );
}

#[test]
fn margin_triplet_is_the_hinge_of_hardest_pairs() {
    let x = triplet_features(32);
    let dist = host_dist(&x, &x, 5);
    let mine = host_mine(&dist, &TRIPLET_LABELS);
    let margin = 0.3;
    let terms: Vec<f64> = mine
        .iter()
        .enumerate()
        .map(|(i, &(p, n))| dist[i * 8 + p] - dist[i * 8 + n] + margin)
        .collect();
    let active = terms.iter().filter(|&&t| t > 0.0).count();
    assert!(
        0 < active && active < 8,
        "the case must have active and inactive hinges"
    );
    let want = terms.iter().map(|t| t.max(0.0)).sum::<f64>() / 8.0;
    let got = scalar(margin_triplet(
        &mined(&gpu_tensor(&x, &[8, 5])),
        margin as f32,
    ));
    close(
        "margin triplet mean(max(0, d_p - d_n + m))",
        got,
        want,
        1e-4,
    );
}

#[test]
fn soft_softmax_triplet_reads_the_teacher_at_the_students_indices() {
    // Ties as well as no ties: rows 1 and 2 are copies, so anchor 0 has two equally hard positives.
    let mut s = triplet_features(33);
    let (r1, rest) = s.split_at_mut(10);
    r1[5..10].copy_from_slice(&rest[..5]);
    let t = triplet_features(34);
    let (ds, dt) = (host_dist(&s, &s, 5), host_dist(&t, &t, 5));
    let (ms, mt) = (
        host_mine(&ds, &TRIPLET_LABELS),
        host_mine(&dt, &TRIPLET_LABELS),
    );
    assert!(
        ms != mt,
        "the teacher must mine differently for this case to bite"
    );
    let want = ms
        .iter()
        .enumerate()
        .map(|(i, &(p, n))| {
            let (dp, dn) = (ds[i * 8 + p], ds[i * 8 + n]);
            let big_t = dn.exp() / (dp.exp() + dn.exp());
            let (tp, tn) = (dt[i * 8 + p], dt[i * 8 + n]);
            let q = tn.exp() / (tp.exp() + tn.exp());
            -(q * big_t.ln() + (1.0 - q) * (1.0 - big_t).ln())
        })
        .sum::<f64>()
        / 8.0;
    let (xs, xt) = (gpu_tensor(&s, &[8, 5]), gpu_tensor(&t, &[8, 5]));
    let got = scalar(soft_softmax_triplet(
        &mined(&xs),
        &euclidean_distance(&xt, &xt).unwrap(),
    ));
    close(
        "soft softmax-triplet -[q log T + (1-q) log(1-T)], q from the teacher at the student's indices",
        got,
        want,
        1e-4,
    );
}

// ---------------------------------------------------------------------------------------------
// Cross-entropies (sections 2, 3, 7).

#[test]
fn cross_entropy_with_label_smoothing() {
    let (b, c) = (5, 7);
    let z: Vec<f64> = values(&[b, c], 35).iter().map(|v| 3.0 * v).collect();
    let labels = [3, -1, 0, 6, 3];
    for eps in [0.0, 0.1, 0.35] {
        let mut total = 0.0;
        for i in (0..b).filter(|&i| labels[i] >= 0) {
            let logp = log_softmax(&z[i * c..(i + 1) * c]);
            // Target (1 - eps) onehot + eps / C.
            total -= (0..c)
                .map(|k| {
                    let t = (1.0 - eps) * (k == labels[i] as usize) as u8 as f64 + eps / c as f64;
                    t * logp[k]
                })
                .sum::<f64>();
        }
        let want = total / 4.0; // rows labelled -1 are not counted
        let got = scalar(cross_entropy(&gpu_tensor(&z, &[b, c]), &labels, eps as f32));
        close(
            &format!("cross-entropy, target (1-eps) onehot + eps/C, eps {eps}"),
            got,
            want,
            1e-4,
        );
    }
}

#[test]
fn soft_cross_entropy_takes_the_teachers_softmax_as_target() {
    let (b, c) = (4, 6);
    let s: Vec<f64> = values(&[b, c], 36).iter().map(|v| 2.0 * v).collect();
    let t: Vec<f64> = values(&[b, c], 37).iter().map(|v| 2.5 * v).collect();
    let mut want = 0.0;
    let mut want_grad = vec![0.0; b * c];
    for i in 0..b {
        let (ps, pt) = (
            softmax(&s[i * c..(i + 1) * c]),
            softmax(&t[i * c..(i + 1) * c]),
        );
        let logps = log_softmax(&s[i * c..(i + 1) * c]);
        want -= (0..c).map(|k| pt[k] * logps[k]).sum::<f64>() / b as f64;
        for k in 0..c {
            // d/ds of the batch mean; the teacher gets no gradient.
            want_grad[i * c + k] = (ps[k] - pt[k]) / b as f64;
        }
    }
    let xs = gpu_tensor(&s, &[b, c]).with_requires_grad();
    let xt = gpu_tensor(&t, &[b, c]).with_requires_grad();
    let loss = soft_cross_entropy(&xs, &xt).unwrap();
    close(
        "soft CE -sum softmax(teacher) log softmax(student), batch mean",
        loss.to_vec_f64().unwrap()[0],
        want,
        1e-4,
    );
    loss.backward().unwrap();
    close_all(
        "soft CE gradient (softmax(s) - softmax(t)) / B",
        &xs.grad().unwrap().to_vec_f64().unwrap(),
        &want_grad,
        1e-4,
    );
    assert!(xt.grad().is_none(), "soft CE: the teacher must be detached");
}

#[test]
fn symmetric_cross_entropy_is_alpha_ce_plus_beta_rce() {
    let (b, c) = (4, 5);
    let z: Vec<f64> = values(&[b, c], 38).iter().map(|v| 2.0 * v).collect();
    let labels = [0, 4, 2, 2];
    let (alpha, beta) = (0.1, 1.0);
    let mut want = 0.0;
    for i in 0..b {
        let row = &z[i * c..(i + 1) * c];
        let (p, logp) = (softmax(row), log_softmax(row));
        let y = labels[i] as usize;
        let ce = -logp[y];
        // RCE = -sum_k clamp(p_k, 1e-7, 1) log clamp(onehot_k, 1e-4, 1) (microsoft/ProDA `rce`).
        let rce = -(0..c)
            .map(|k| p[k].clamp(1e-7, 1.0) * ((k == y) as u8 as f64).clamp(1e-4, 1.0).ln())
            .sum::<f64>();
        want += (alpha * ce + beta * rce) / b as f64;
    }
    let got = scalar(symmetric_cross_entropy(
        &gpu_tensor(&z, &[b, c]),
        &labels,
        alpha as f32,
        beta as f32,
    ));
    close(
        "symmetric CE alpha CE + beta RCE (log clamp(onehot, 1e-4))",
        got,
        want,
        1e-4,
    );
}

// ---------------------------------------------------------------------------------------------
// Cluster Contrast and ISE (sections 5, 6).

#[test]
fn cluster_contrast_divides_by_the_temperature() {
    let (b, k, d) = (6, 4, 5);
    let f = normalise_rows(values(&[b, d], 39), d);
    let c = normalise_rows(values(&[k, d], 40), d);
    let labels = [0, 1, 1, 3, 2, 0];
    for tau in [0.05, 0.3] {
        let want = (0..b)
            .map(|i| {
                let logits: Vec<f64> = (0..k)
                    .map(|j| dot(&f[i * d..(i + 1) * d], &c[j * d..(j + 1) * d]) / tau)
                    .collect();
                -log_softmax(&logits)[labels[i] as usize]
            })
            .sum::<f64>()
            / b as f64;
        let got = scalar(cluster_contrast(
            &gpu_tensor(&f, &[b, d]),
            &gpu_tensor(&c, &[k, d]),
            &labels,
            tau as f32,
        ));
        close(
            &format!("cluster contrast -log softmax(f.c / tau)_y, tau {tau}"),
            got,
            want,
            1e-4,
        );
    }
}

#[test]
fn ise_support_samples_and_lambda_schedule() {
    let (b, k, d) = (6, 4, 5);
    let f = normalise_rows(values(&[b, d], 41), d);
    let c = normalise_rows(values(&[k, d], 42), d);
    let labels = [0, 1, 1, 3, 2, 0];
    let lambda = 0.7;
    let mut want = Vec::new();
    let mut nearest_is_not_farthest = false;
    for i in 0..b {
        let fi = &f[i * d..(i + 1) * d];
        let y = labels[i] as usize;
        let others: Vec<usize> = (0..k).filter(|&j| j != y).collect();
        let cos = |j: usize| dot(fi, &c[j * d..(j + 1) * d]);
        let n = *others
            .iter()
            .max_by(|&&a, &&b| cos(a).total_cmp(&cos(b)))
            .unwrap();
        let far = *others
            .iter()
            .min_by(|&&a, &&b| cos(a).total_cmp(&cos(b)))
            .unwrap();
        nearest_is_not_farthest |= n != far;
        // s = normalise(f + 0.5 lambda (c_n - c_y)).
        let s: Vec<f64> = (0..d)
            .map(|t| fi[t] + 0.5 * lambda * (c[n * d + t] - c[y * d + t]))
            .collect();
        want.extend(normalise_rows(s, d));
    }
    assert!(nearest_is_not_farthest);
    let got = support_samples(
        &gpu_tensor(&f, &[b, d]),
        &gpu_tensor(&c, &[k, d]),
        &labels,
        lambda as f32,
    )
    .unwrap()
    .to_vec_f64()
    .unwrap();
    close_all(
        "ISE support normalise(f + 0.5 lambda (c_nearest_other - c_own))",
        &got,
        &want,
        1e-5,
    );
    // lambda_t = 0.5 base ln(1 + (e - 1) t / T).
    for (base, t, total) in [(1.0, 30, 120), (0.8, 77, 100), (1.0, 100, 100)] {
        let want = 0.5 * base * (1.0 + (std::f64::consts::E - 1.0) * t as f64 / total as f64).ln();
        close(
            &format!("ISE lambda_t at t {t} of {total}"),
            ise_lambda(base, t, total),
            want,
            1e-12,
        );
    }
}

#[test]
fn ise_label_preserving_loss() {
    let (b, d) = (6, 5);
    let f = normalise_rows(values(&[b, d], 43), d);
    let s = normalise_rows(values(&[b, d], 44), d);
    // Identity 2 has one sample (its own support is its only positive).
    let labels = [0, 1, 1, 0, 2, 1];
    let tau = 0.6;
    let ids = [0, 1, 2];
    let want = (0..b)
        .map(|i| {
            let e = |j: usize| dot(&f[i * d..(i + 1) * d], &s[j * d..(j + 1) * d]) / tau;
            let block = |id: i32| (0..b).filter(move |&j| labels[j] == id);
            // Hardest positive: least similar same-label support.
            let pos = block(labels[i]).map(e).fold(f64::MAX, f64::min);
            // Per other identity, its most similar support.
            let negs: Vec<f64> = ids
                .iter()
                .filter(|&&id| id != labels[i])
                .map(|&id| block(id).map(e).fold(f64::MIN, f64::max))
                .collect();
            -(pos.exp() / (pos.exp() + negs.iter().map(|n| n.exp()).sum::<f64>())).ln()
        })
        .sum::<f64>()
        / b as f64;
    let got = scalar(label_preserving(
        &gpu_tensor(&f, &[b, d]),
        &gpu_tensor(&s, &[b, d]),
        &labels,
        tau as f32,
    ));
    close(
        "ISE label-preserving -log(pos / (pos + sum of per-identity hardest negatives))",
        got,
        want,
        1e-4,
    );
}

// ---------------------------------------------------------------------------------------------
// ProDA (section 7).

#[test]
fn proda_weights_and_rectified_labels() {
    let (b, k, d) = (5, 3, 4);
    let f = values(&[b, d], 45);
    let eta = values(&[k, d], 46);
    let temperature = 0.7;
    let dist = host_dist(&f, &eta, d);
    let mut want_w = Vec::new();
    for i in 0..b {
        let row = &dist[i * k..(i + 1) * k];
        let min = row.iter().copied().fold(f64::MAX, f64::min);
        // microsoft/ProDA multiplies by proto_temperature (ALGORITHMS.md writes a division).
        let shifted: Vec<f64> = row.iter().map(|x| -(x - min) * temperature).collect();
        want_w.extend(softmax(&shifted));
    }
    let w = prototype_weights(
        &gpu_tensor(&f, &[b, d]),
        &gpu_tensor(&eta, &[k, d]),
        temperature as f32,
    )
    .unwrap();
    close_all(
        "ProDA w = softmax(-(d - min d) * T), d Euclidean",
        &w.to_vec_f64().unwrap(),
        &want_w,
        1e-4,
    );
    // Rectified soft label: p * w renormalised; hard label its argmax.
    let logits = values(&[b, k], 47);
    let p: Vec<f64> = logits.chunks(k).flat_map(softmax).collect();
    let mut want_soft = Vec::new();
    let mut want_hard = Vec::new();
    let mut moved = false;
    for i in 0..b {
        let joint: Vec<f64> = (0..k).map(|j| p[i * k + j] * want_w[i * k + j]).collect();
        let z: f64 = joint.iter().sum();
        let soft: Vec<f64> = joint.iter().map(|x| x / z).collect();
        let argmax = |v: &[f64]| (0..k).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap() as i32;
        want_hard.push(argmax(&soft));
        moved |= argmax(&soft) != argmax(&p[i * k..(i + 1) * k]);
        want_soft.extend(soft);
    }
    assert!(
        moved,
        "the weights must change some argmax for the case to bite"
    );
    let (soft, hard) = rectified_labels(&gpu_tensor(&p, &[b, k]), &w).unwrap();
    close_all(
        "ProDA rectified label p*w / sum(p*w)",
        &soft.to_vec_f64().unwrap(),
        &want_soft,
        1e-4,
    );
    assert_eq!(hard, want_hard, "ProDA rectified hard label = argmax(p*w)");
}

// ---------------------------------------------------------------------------------------------
// Optimisers (torch.optim) and the mean teacher.

const P0: [f64; 4] = [0.5, -1.2, 2.0, 0.3];
const CURV: [f64; 4] = [1.0, 3.0, 0.5, -2.0];

/// Gradient of `0.5 * sum(CURV * p^2)`: changes every step, so moments differ from the gradient.
fn host_grad(p: &[f64]) -> Vec<f64> {
    p.iter().zip(CURV).map(|(p, c)| c * p).collect()
}

/// `steps` optimiser steps on `0.5 * sum(CURV * p^2)` with the parameter addressed by name; the
/// parameter after every step.
fn device_step(device: &Device, steps: usize, opt: &mut dyn Optimizer) -> Vec<Vec<f64>> {
    let curv = Tensor::from_f64(&CURV, &[4], device).unwrap();
    let p = Param::new(Tensor::from_f64(&P0, &[4], device).unwrap());
    let mut trace = Vec::new();
    for _ in 0..steps {
        p.get()
            .square()
            .unwrap()
            .mul(&curv)
            .unwrap()
            .sum_all()
            .unwrap()
            .mul_scalar(0.5)
            .unwrap()
            .backward()
            .unwrap();
        opt.step(&[("p".into(), &p)]).unwrap();
        trace.push(p.get().to_vec_f64().unwrap());
    }
    trace
}

/// torch.optim.Adam (L2 weight decay into the gradient), written out step by step.
fn host_adam(lr: f64, b1: f64, b2: f64, eps: f64, wd: f64, steps: usize) -> Vec<Vec<f64>> {
    let mut p = P0.to_vec();
    let (mut m, mut v) = (vec![0.0; 4], vec![0.0; 4]);
    let mut trace = Vec::new();
    for t in 1..=steps as i32 {
        let g = host_grad(&p);
        for i in 0..4 {
            let gi = g[i] + wd * p[i];
            m[i] = b1 * m[i] + (1.0 - b1) * gi;
            v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
            let m_hat = m[i] / (1.0 - b1.powi(t));
            let v_hat = v[i] / (1.0 - b2.powi(t));
            p[i] -= lr * m_hat / (v_hat.sqrt() + eps);
        }
        trace.push(p.clone());
    }
    trace
}

#[test]
fn adam_over_several_steps_matches_torch() {
    let want = host_adam(0.05, 0.9, 0.999, 1e-8, 0.01, 5);
    for device in [common::gpu(), Device::CpuF64] {
        let mut opt = Adam::new(0.05, 0.01);
        let got = device_step(&device, 5, &mut opt);
        for (t, (g, w)) in got.iter().zip(&want).enumerate() {
            close_all(
                &format!(
                    "Adam (bias corrections 1 - beta^t) after step {} on {device}",
                    t + 1
                ),
                g,
                w,
                2e-5,
            );
        }
    }
    // The update kernel alone at step 3 with non-zero moments and other betas.
    let h = AdamHyper {
        lr: 0.02,
        beta1: 0.8,
        beta2: 0.95,
        eps: 1e-6,
        weight_decay: 0.1,
        step: 3,
    };
    let (p, g, m, v) = (
        [0.4, -0.7, 1.5],
        [0.3, 0.2, -1.0],
        [0.05, -0.1, 0.2],
        [0.01, 0.02, 0.3],
    );
    let mut want = (vec![], vec![], vec![]);
    for i in 0..3 {
        let gi = g[i] + h.weight_decay * p[i];
        let mi = h.beta1 * m[i] + (1.0 - h.beta1) * gi;
        let vi = h.beta2 * v[i] + (1.0 - h.beta2) * gi * gi;
        let m_hat = mi / (1.0 - h.beta1.powi(3));
        let v_hat = vi / (1.0 - h.beta2.powi(3));
        want.0.push(p[i] - h.lr * m_hat / (v_hat.sqrt() + h.eps));
        want.1.push(mi);
        want.2.push(vi);
    }
    for device in [common::gpu(), Device::CpuF64] {
        let t = |x: &[f64]| Tensor::from_f64(x, &[3], &device).unwrap();
        let (np, nm, nv) = adam_update(&t(&p), &t(&g), &t(&m), &t(&v), h).unwrap();
        let rule = format!("adam_update at step 3 on {device}");
        close_all(&rule, &np.to_vec_f64().unwrap(), &want.0, 1e-5);
        close_all(&rule, &nm.to_vec_f64().unwrap(), &want.1, 1e-5);
        close_all(&rule, &nv.to_vec_f64().unwrap(), &want.2, 1e-5);
    }
}

/// torch.optim.SGD written out: buffer = grad on the first step, then
/// `momentum * buf + (1 - dampening) * grad`; Nesterov steps along `grad + momentum * buf`.
fn host_sgd(
    lr: f64,
    momentum: f64,
    dampening: f64,
    wd: f64,
    nesterov: bool,
    steps: usize,
) -> Vec<Vec<f64>> {
    let mut p = P0.to_vec();
    let mut buf: Option<Vec<f64>> = None;
    let mut trace = Vec::new();
    for _ in 0..steps {
        let g: Vec<f64> = host_grad(&p)
            .iter()
            .zip(&p)
            .map(|(g, p)| g + wd * p)
            .collect();
        let d_p = if momentum != 0.0 {
            let b: Vec<f64> = match &buf {
                None => g.clone(),
                Some(b) => (0..4)
                    .map(|i| momentum * b[i] + (1.0 - dampening) * g[i])
                    .collect(),
            };
            let d: Vec<f64> = if nesterov {
                (0..4).map(|i| g[i] + momentum * b[i]).collect()
            } else {
                b.clone()
            };
            buf = Some(b);
            d
        } else {
            g
        };
        (0..4).for_each(|i| p[i] -= lr * d_p[i]);
        trace.push(p.clone());
    }
    trace
}

#[test]
fn sgd_momentum_dampening_nesterov_and_weight_decay_match_torch() {
    // (momentum, dampening, nesterov); torch forbids Nesterov with dampening.
    for (momentum, dampening, nesterov) in [(0.9, 0.3, false), (0.8, 0.0, true), (0.0, 0.0, false)]
    {
        let want = host_sgd(0.05, momentum, dampening, 0.02, nesterov, 4);
        for device in [common::gpu(), Device::CpuF64] {
            let mut opt = Sgd::new(0.05, momentum, 0.02, nesterov);
            opt.dampening = dampening;
            let got = device_step(&device, 4, &mut opt);
            for (t, (g, w)) in got.iter().zip(&want).enumerate() {
                close_all(
                    &format!(
                        "SGD momentum {momentum} dampening {dampening} nesterov {nesterov}, step {} on {device}",
                        t + 1
                    ),
                    g,
                    w,
                    2e-5,
                );
            }
        }
    }
}

/// A module with one parameter, named `w`.
struct One {
    w: Param,
}

impl Module for One {
    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(String, &'a Param)) {
        f(format!("{prefix}w"), &self.w);
    }
    fn visit_bn_mut(&mut self, _: &mut dyn FnMut(&mut unreid::nn::BatchNorm)) {}
}

#[test]
fn mean_teacher_ema_over_several_steps() {
    // alpha 0.6 caps a_t from t = 2 on (1 - 1/3 = 0.667 > 0.6).
    let teacher = MeanTeacher { alpha: 0.6 };
    let start = [1.0, 2.0, -1.0];
    let students = [
        [3.0, 6.0, 0.5],
        [-1.0, 0.0, 2.0],
        [0.5, 0.25, -3.0],
        [2.0, -2.0, 1.0],
    ];
    for device in [common::gpu(), Device::CpuF64] {
        let mean = One {
            w: Param::new(Tensor::from_f64(&start, &[3], &device).unwrap()),
        };
        let mut host = start.to_vec();
        for (t, s) in students.iter().enumerate() {
            let a = (1.0 - 1.0 / (t as f64 + 1.0)).min(0.6);
            host = (0..3).map(|i| a * host[i] + (1.0 - a) * s[i]).collect();
            let student = One {
                w: Param::new(Tensor::from_f64(s, &[3], &device).unwrap()),
            };
            teacher.update(&mean, &student, t as u64).unwrap();
            close_all(
                &format!("mean teacher E <- a_t E + (1 - a_t) theta, a_t = min(1 - 1/(t+1), alpha), t {t} on {device}"),
                &mean.w.get().to_vec_f64().unwrap(),
                &host,
                1e-6,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Memory updates (sections 4, 5, 6, 7).

/// The reference loops, sample by sample: SpCL / Cluster Contrast momentum, CM_Hard, ProDA EMA.
fn host_memory(mem: &[f64], f: &[f64], d: usize, rows: &[usize], mu: f64, mode: &str) -> Vec<f64> {
    let mut m = mem.to_vec();
    let mut distinct = rows.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    let fi = |i: usize| &f[i * d..(i + 1) * d];
    match mode {
        "momentum" => {
            for (i, &r) in rows.iter().enumerate() {
                let row: Vec<f64> = (0..d)
                    .map(|t| mu * m[r * d + t] + (1.0 - mu) * fi(i)[t])
                    .collect();
                m[r * d..(r + 1) * d].copy_from_slice(&normalise_rows(row, d));
            }
        }
        "hard" => {
            for &r in &distinct {
                let old = m[r * d..(r + 1) * d].to_vec();
                // argmin over members of the cosine to the old row (np.argmin: the first minimum).
                let mut best: Option<usize> = None;
                for i in (0..rows.len()).filter(|&i| rows[i] == r) {
                    if best.is_none_or(|b| dot(fi(i), &old) < dot(fi(b), &old)) {
                        best = Some(i);
                    }
                }
                let row: Vec<f64> = (0..d)
                    .map(|t| mu * old[t] + (1.0 - mu) * fi(best.unwrap())[t])
                    .collect();
                m[r * d..(r + 1) * d].copy_from_slice(&normalise_rows(row, d));
            }
        }
        "mean-ema" => {
            for &r in &distinct {
                let members: Vec<usize> = (0..rows.len()).filter(|&i| rows[i] == r).collect();
                for t in 0..d {
                    let mean =
                        members.iter().map(|&i| fi(i)[t]).sum::<f64>() / members.len() as f64;
                    m[r * d + t] = (1.0 - mu) * m[r * d + t] + mu * mean;
                }
            }
        }
        _ => unreachable!(),
    }
    m
}

#[test]
fn memory_updates_match_the_reference_loops() {
    let d = 3;
    let mut mem = normalise_rows(values(&[4, d], 48), d);
    let mut f = normalise_rows(values(&[6, d], 49), d);
    // A tie for the hard update, exact in f32: samples 0 and 2 (both row 2) have cosine 0.6 to
    // row 2 and differ, so the first-minimum rule (np.argmin) decides; sample 3 (cosine 0.8) is
    // not the hardest.
    mem[2 * d..3 * d].copy_from_slice(&[1.0, 0.0, 0.0]);
    f[..d].copy_from_slice(&[0.6, 0.8, 0.0]);
    f[2 * d..3 * d].copy_from_slice(&[0.6, 0.0, 0.8]);
    f[3 * d..4 * d].copy_from_slice(&[0.8, 0.0, -0.6]);
    let rows = [2, 0, 2, 2, 1, 0];
    for (mode, name, mu) in [
        (MemoryUpdate::Momentum, "momentum", 0.2),
        (MemoryUpdate::Hard, "hard", 0.1),
        (MemoryUpdate::MeanEma, "mean-ema", 0.3),
    ] {
        let want = host_memory(&mem, &f, d, &rows, mu, name);
        for device in [common::gpu(), Device::CpuF64] {
            let t = |v: &[f64], n: usize| Tensor::from_f64(v, &[n, d], &device).unwrap();
            let got = update_memory_rows(&t(&mem, 4), &t(&f, 6), &rows, mu as f32, mode)
                .unwrap()
                .to_vec_f64()
                .unwrap();
            close_all(
                &format!("memory {name} update, mu {mu}, on {device}"),
                &got,
                &want,
                1e-5,
            );
        }
    }
}

#[test]
fn memory_banks_pass_their_momentum_the_right_way_round() {
    let d = 3;
    let mem = normalise_rows(values(&[4, d], 50), d);
    let f = normalise_rows(values(&[5, d], 51), d);
    let labels = [1, 3, 1, 0, 3];
    let rows: Vec<usize> = labels.iter().map(|&l| l as usize).collect();
    let dev = common::gpu();
    let t = |v: &[f64], n: usize| Tensor::from_f64(v, &[n, d], &dev).unwrap();
    // SpCL: m <- 0.2 m + 0.8 f.
    let mut hybrid = HybridMemory::new(t(&mem, 4), vec![0, 1, 2, 3], 0.2, 0.05).unwrap();
    hybrid.update(&t(&f, 5), &rows).unwrap();
    close_all(
        "SpCL hybrid memory m <- 0.2 m + 0.8 f",
        &hybrid.features.to_vec_f64().unwrap(),
        &host_memory(&mem, &f, d, &rows, 0.2, "momentum"),
        1e-5,
    );
    // Cluster Contrast: c <- 0.1 c + 0.9 f, momentum or hard.
    for (mode, name) in [
        (MemoryUpdate::Momentum, "momentum"),
        (MemoryUpdate::Hard, "hard"),
    ] {
        let mut cm = ClusterMemory {
            centroids: t(&mem, 4),
            momentum: 0.1,
            temperature: 0.05,
            mode,
        };
        cm.update(&t(&f, 5), &labels).unwrap();
        close_all(
            &format!("cluster memory {name} update c <- 0.1 c + 0.9 f"),
            &cm.centroids.to_vec_f64().unwrap(),
            &host_memory(&mem, &f, d, &rows, 0.1, name),
            1e-5,
        );
    }
    // ProDA (microsoft/ProDA update_objective_SingleVector): eta_y <- (1 - m) eta_y + m f for
    // every sample in batch order.
    let mut bank = PrototypeBank {
        prototypes: t(&mem, 4),
        momentum: 0.05,
    };
    bank.update(&t(&f, 5), &labels).unwrap();
    let mut want = mem.clone();
    for (i, &r) in rows.iter().enumerate() {
        for j in 0..d {
            want[r * d + j] = 0.95 * want[r * d + j] + 0.05 * f[i * d + j];
        }
    }
    close_all(
        "ProDA prototypes eta <- (1 - m) eta + m f, sample by sample",
        &bank.prototypes.to_vec_f64().unwrap(),
        &want,
        1e-5,
    );
}

// ---------------------------------------------------------------------------------------------
// Learning-rate schedules (sections 1, 2, 12).

#[test]
fn lr_schedules_with_warmup_match_their_definitions() {
    let base = 3.5e-4;
    let warm = Warmup {
        epochs: 10,
        factor: 0.01,
    };
    // A milestone inside the warm-up: the two factors multiply.
    let step = LrSchedule::Step {
        milestones: vec![6, 40, 70],
        gamma: 0.1,
    };
    for epoch in 0..80 {
        let decays = [6, 40, 70].iter().filter(|&&m| m <= epoch).count() as i32;
        let warmup = if epoch < 10 {
            // Linear from factor * lr at epoch 0 to lr at epoch 10.
            0.01 + (1.0 - 0.01) * epoch as f64 / 10.0
        } else {
            1.0
        };
        let want = base * 0.1f64.powi(decays) * warmup;
        close(
            &format!("step decay x0.1 at 6,40,70 with 10 warm-up epochs from x0.01, epoch {epoch}"),
            step.lr(base, epoch, Some(warm)) / base,
            want / base,
            1e-12,
        );
    }
    // StepLR(20) over 50 epochs, no warm-up.
    let every = LrSchedule::every(20, 0.5, 50);
    for epoch in 0..50 {
        let want = base * 0.5f64.powi((epoch / 20) as i32);
        close(
            &format!("StepLR(20, 0.5) epoch {epoch}"),
            every.lr(base, epoch, None) / base,
            want / base,
            1e-12,
        );
    }
    // Cosine from base to min_lr over 10 epochs.
    let cos = LrSchedule::Cosine {
        epochs: 10,
        min_lr: 1e-5,
    };
    for epoch in 0..12 {
        let t = (epoch as f64 / 10.0).min(1.0);
        let want = 1e-5 + (1e-3 - 1e-5) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
        close(
            &format!("cosine to min_lr, epoch {epoch}"),
            cos.lr(1e-3, epoch, None) / 1e-3,
            want / 1e-3,
            1e-12,
        );
    }
}
