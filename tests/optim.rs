//! Optimisers, mean teacher, schedules and clipping: GPU vs the torch-form references.

mod common;
use unreid::autograd::gradcheck::{assert_close, Input};
use unreid::optim::{clip_grad_norm, Adam, LrSchedule, MeanTeacher, Sgd, Warmup};
use unreid::{Device, Result, Tensor};

/// A least-squares problem with a weight, a bias and a frozen (untracked) offset.
fn loss(params: &[Tensor], frozen: &Tensor, d: &Device) -> Result<Tensor> {
    let x = Input::randn(&[6, 3], 1);
    let y = Input::randn(&[6, 4], 2);
    let x = Tensor::from_f64(&x.values, &x.shape, d)?;
    let y = Tensor::from_f64(&y.values, &y.shape, d)?;
    x.matmul_t(&params[0], false, true)?
        .add(&params[1])?
        .add(frozen)?
        .sub(&y)?
        .square()?
        .mean_all()
}

fn train(d: &Device, mut step: impl FnMut(&[Tensor]) -> Result<Vec<Tensor>>) -> Vec<Vec<f64>> {
    let init = [Input::randn(&[4, 3], 3), Input::randn(&[4], 4)];
    let mut params: Vec<Tensor> = init
        .iter()
        .map(|i| {
            Tensor::from_f64(&i.values, &i.shape, d)
                .unwrap()
                .with_requires_grad()
        })
        .collect();
    let frozen = Tensor::from_slice(&[0.5; 4], &[4], d).unwrap();
    for _ in 0..5 {
        loss(&params, &frozen, d).unwrap().backward().unwrap();
        params = step(&params).unwrap();
    }
    params.iter().map(|p| p.to_vec_f64().unwrap()).collect()
}

#[test]
fn adam_matches_the_torch_update_on_the_gpu() {
    let mut gpu_opt = Adam::new(0.05, 5e-4);
    let mut ref_opt = Adam::new(0.05, 5e-4);
    let got = train(&common::gpu(), |p| gpu_opt.step(p));
    let want = train(&Device::CpuF64, |p| ref_opt.step(p));
    for (g, w) in got.iter().zip(&want) {
        assert_close("adam parameters after 5 steps", g, w, 1e-5, 1e-5);
    }
}

#[test]
fn adam_first_step_moves_by_lr_in_the_gradient_sign() {
    // With bias correction, step 1 is lr * g / (|g| + eps): exactly lr for any nonzero g.
    let d = common::gpu();
    let p = Tensor::from_slice(&[1.0, -2.0], &[2], &d)
        .unwrap()
        .with_requires_grad();
    p.mul(&Tensor::from_slice(&[0.5, -3.0], &[2], &d).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let new = Adam::new(0.1, 0.0).step(&[p]).unwrap();
    let v = new[0].to_vec().unwrap();
    assert!(
        (v[0] - 0.9).abs() < 1e-6 && (v[1] + 1.9).abs() < 1e-6,
        "{v:?}"
    );
    assert!(new[0].requires_grad() && new[0].grad().is_none());
}

#[test]
fn sgd_momentum_and_nesterov_match_the_reference() {
    for nesterov in [false, true] {
        let mut gpu_opt = Sgd::new(0.1, 0.9, 1e-3, nesterov);
        let mut ref_opt = Sgd::new(0.1, 0.9, 1e-3, nesterov);
        let got = train(&common::gpu(), |p| gpu_opt.step(p));
        let want = train(&Device::CpuF64, |p| ref_opt.step(p));
        for (g, w) in got.iter().zip(&want) {
            assert_close(&format!("sgd nesterov={nesterov}"), g, w, 1e-5, 1e-5);
        }
    }
}

#[test]
fn parameters_without_gradients_do_not_move() {
    let d = common::gpu();
    let used = Tensor::ones(&[3], &d).unwrap().with_requires_grad();
    let unused = Tensor::ones(&[3], &d).unwrap().with_requires_grad();
    let frozen = Tensor::ones(&[3], &d).unwrap();
    used.sum_all().unwrap().backward().unwrap();
    let out = Adam::new(0.1, 0.1).step(&[used, unused, frozen]).unwrap();
    assert_ne!(out[0].to_vec().unwrap(), vec![1.0; 3]);
    assert_eq!(out[1].to_vec().unwrap(), vec![1.0; 3]);
    assert_eq!(out[2].to_vec().unwrap(), vec![1.0; 3]);
    assert!(!out[2].requires_grad(), "a frozen tensor stays frozen");
}

#[test]
fn mean_teacher_follows_the_mmt_schedule() {
    let teacher = MeanTeacher { alpha: 0.999 };
    assert_eq!(teacher.alpha_at(0), 0.0);
    assert!((teacher.alpha_at(1) - 0.5).abs() < 1e-12);
    assert_eq!(teacher.alpha_at(1_000_000), 0.999);
    let d = common::gpu();
    let mean = Tensor::from_slice(&[1.0, 2.0], &[2], &d).unwrap();
    let student = Tensor::from_slice(&[3.0, 6.0], &[2], &d).unwrap();
    // t = 3: a = 0.75 -> 0.75 * mean + 0.25 * student.
    let out = teacher.update(&[mean], &[student], 3).unwrap();
    assert_eq!(out[0].to_vec().unwrap(), vec![1.5, 3.0]);
    assert!(!out[0].requires_grad());
}

#[test]
fn schedules() {
    let step = LrSchedule::Step {
        milestones: vec![40, 70],
        gamma: 0.1,
    };
    let warm = Some(Warmup {
        epochs: 10,
        factor: 0.01,
    });
    assert!((step.lr(3.5e-4, 0, warm) - 3.5e-6).abs() < 1e-15);
    assert!((step.lr(3.5e-4, 5, warm) - 3.5e-4 * (0.01 * 0.5 + 0.5)).abs() < 1e-15);
    assert_eq!(step.lr(3.5e-4, 10, warm), 3.5e-4);
    assert!((step.lr(3.5e-4, 40, warm) - 3.5e-5).abs() < 1e-15);
    assert!((step.lr(3.5e-4, 79, warm) - 3.5e-6).abs() < 1e-15);
    assert_eq!(
        LrSchedule::every(20, 0.1, 50),
        LrSchedule::Step {
            milestones: vec![20, 40],
            gamma: 0.1
        }
    );
    let cos = LrSchedule::Cosine {
        epochs: 10,
        min_lr: 0.0,
    };
    assert_eq!(cos.lr(1.0, 0, None), 1.0);
    assert!((cos.lr(1.0, 5, None) - 0.5).abs() < 1e-12);
    assert!(cos.lr(1.0, 10, None).abs() < 1e-12);
}

#[test]
fn gradient_clipping_scales_to_the_max_norm() {
    let d = common::gpu();
    let a = Tensor::from_slice(&[3.0, 0.0], &[2], &d).unwrap();
    let b = Tensor::from_slice(&[4.0], &[1], &d).unwrap();
    let (clipped, norm) = clip_grad_norm(&[a.clone(), b.clone()], 1.0).unwrap();
    assert!((norm.item().unwrap() - 5.0).abs() < 1e-6);
    let va = clipped[0].to_vec().unwrap();
    assert!((va[0] - 0.6).abs() < 1e-6 && (clipped[1].item().unwrap() - 0.8).abs() < 1e-6);
    // Under the limit nothing changes.
    let (same, _) = clip_grad_norm(&[a, b], 10.0).unwrap();
    assert_eq!(same[0].to_vec().unwrap(), vec![3.0, 0.0]);
}
