//! Optimisers, mean teacher, schedules and clipping: GPU vs the torch-form references.

mod common;
use unreid::autograd::gradcheck::{assert_close, Input};
use unreid::nn::{Module, Param};
use unreid::optim::{
    clip_grad_norm, Adam, LrSchedule, MeanTeacher, MultiTensor, Optimizer, Sgd, Warmup,
};
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

fn train(d: &Device, opt: &mut dyn Optimizer) -> Vec<Vec<f64>> {
    let init = [Input::randn(&[4, 3], 3), Input::randn(&[4], 4)];
    let params: Vec<Param> = init
        .iter()
        .map(|i| Param::new(Tensor::from_f64(&i.values, &i.shape, d).unwrap()))
        .collect();
    let frozen = Tensor::from_slice(&[0.5; 4], &[4], d).unwrap();
    for _ in 0..5 {
        let leaves: Vec<Tensor> = params.iter().map(Param::get).collect();
        loss(&leaves, &frozen, d).unwrap().backward().unwrap();
        opt.step(&[("weight".into(), &params[0]), ("bias".into(), &params[1])])
            .unwrap();
    }
    params
        .iter()
        .map(|p| p.get().to_vec_f64().unwrap())
        .collect()
}

#[test]
fn adam_matches_the_torch_update_on_the_gpu() {
    let mut gpu_opt = Adam::new(0.05, 5e-4);
    let mut ref_opt = Adam::new(0.05, 5e-4);
    let got = train(&common::gpu(), &mut gpu_opt);
    let want = train(&Device::CpuF64, &mut ref_opt);
    for (g, w) in got.iter().zip(&want) {
        assert_close("adam parameters after 5 steps", g, w, 1e-5, 1e-5);
    }
}

/// `train` with nothing but the parameters holding their values at each step (the leaves and the
/// loss dropped first, as the training loop does): the optimiser may then update in place. Returns
/// the final values and, on the GPU, whether every parameter kept its buffer through all steps.
fn train_alone(d: &Device, opt: &mut dyn Optimizer) -> (Vec<Vec<f64>>, bool) {
    let init = [Input::randn(&[4, 3], 3), Input::randn(&[4], 4)];
    let params: Vec<Param> = init
        .iter()
        .map(|i| Param::new(Tensor::from_f64(&i.values, &i.shape, d).unwrap()))
        .collect();
    let ids = |ps: &[Param]| ps.iter().map(|p| p.get().storage_id()).collect::<Vec<_>>();
    let first = ids(&params);
    let frozen = Tensor::from_slice(&[0.5; 4], &[4], d).unwrap();
    for _ in 0..5 {
        {
            let leaves: Vec<Tensor> = params.iter().map(Param::get).collect();
            loss(&leaves, &frozen, d).unwrap().backward().unwrap();
        }
        opt.step(&[("weight".into(), &params[0]), ("bias".into(), &params[1])])
            .unwrap();
    }
    let kept = ids(&params) == first;
    let values = params
        .iter()
        .map(|p| p.get().to_vec_f64().unwrap())
        .collect();
    (values, kept)
}

#[test]
fn optimisers_update_in_place_when_they_hold_the_parameters_alone() {
    let mut adams = (Adam::new(0.05, 5e-4), Adam::new(0.05, 5e-4));
    let mut sgds = (
        Sgd::new(0.1, 0.9, 1e-3, true),
        Sgd::new(0.1, 0.9, 1e-3, true),
    );
    let cases: [(&str, &mut dyn Optimizer, &mut dyn Optimizer); 2] = [
        ("adam", &mut adams.0, &mut adams.1),
        ("sgd", &mut sgds.0, &mut sgds.1),
    ];
    for (name, gpu_opt, ref_opt) in cases {
        let (got, kept) = train_alone(&common::gpu(), gpu_opt);
        let (want, _) = train_alone(&Device::CpuF64, ref_opt);
        assert!(kept, "{name}: the parameters kept their GPU buffers");
        for (g, w) in got.iter().zip(&want) {
            assert_close(&format!("{name} in place after 5 steps"), g, w, 1e-5, 1e-5);
        }
    }
}

#[test]
fn a_snapshot_of_a_parameter_keeps_its_values_through_a_step() {
    // A clone held elsewhere (a best-model snapshot) forbids the in-place update: the step then
    // writes a copy, the snapshot keeps the old values, and the parameter moves to a new buffer.
    let d = common::gpu();
    let p = Param::new(Tensor::from_slice(&[1.0, -2.0, 3.0], &[3], &d).unwrap());
    p.get()
        .square()
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let snapshot = p.get();
    let mut adam = Adam::new(0.1, 0.0);
    adam.step(&[("p".into(), &p)]).unwrap();
    assert_eq!(snapshot.to_vec().unwrap(), vec![1.0, -2.0, 3.0]);
    assert_ne!(p.get().storage_id(), snapshot.storage_id());
    // torch's first Adam step moves each value by lr against its gradient's sign.
    let moved = p.get().to_vec().unwrap();
    for (m, w) in moved.iter().zip([0.9f32, -1.9, 2.9]) {
        assert!((m - w).abs() < 1e-5, "{moved:?}");
    }
}

#[test]
fn adam_first_step_moves_by_lr_in_the_gradient_sign() {
    // With bias correction, step 1 is lr * g / (|g| + eps): exactly lr for any nonzero g.
    let d = common::gpu();
    let p = Param::new(Tensor::from_slice(&[1.0, -2.0], &[2], &d).unwrap());
    p.get()
        .mul(&Tensor::from_slice(&[0.5, -3.0], &[2], &d).unwrap())
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    Adam::new(0.1, 0.0).step(&[("p".into(), &p)]).unwrap();
    let new = p.get();
    let v = new.to_vec().unwrap();
    assert!(
        (v[0] - 0.9).abs() < 1e-6 && (v[1] + 1.9).abs() < 1e-6,
        "{v:?}"
    );
    assert!(new.requires_grad() && new.grad().is_none());
}

#[test]
fn sgd_momentum_and_nesterov_match_the_reference() {
    for nesterov in [false, true] {
        let mut gpu_opt = Sgd::new(0.1, 0.9, 1e-3, nesterov);
        let mut ref_opt = Sgd::new(0.1, 0.9, 1e-3, nesterov);
        let got = train(&common::gpu(), &mut gpu_opt);
        let want = train(&Device::CpuF64, &mut ref_opt);
        for (g, w) in got.iter().zip(&want) {
            assert_close(&format!("sgd nesterov={nesterov}"), g, w, 1e-5, 1e-5);
        }
    }
}

#[test]
fn parameters_without_gradients_do_not_move() {
    let d = common::gpu();
    let used = Param::new(Tensor::ones(&[3], &d).unwrap());
    let unused = Param::new(Tensor::ones(&[3], &d).unwrap());
    let frozen = Param::new(Tensor::ones(&[3], &d).unwrap());
    frozen.set_trainable(false);
    used.get().sum_all().unwrap().backward().unwrap();
    let mut adam = Adam::new(0.1, 0.1);
    adam.step(&[
        ("used".into(), &used),
        ("unused".into(), &unused),
        ("frozen".into(), &frozen),
    ])
    .unwrap();
    assert_ne!(used.get().to_vec().unwrap(), vec![1.0; 3]);
    assert_eq!(unused.get().to_vec().unwrap(), vec![1.0; 3]);
    assert_eq!(frozen.get().to_vec().unwrap(), vec![1.0; 3]);
    assert!(
        !frozen.get().requires_grad(),
        "a frozen tensor stays frozen"
    );
    assert_eq!((adam.steps_of("used"), adam.steps_of("unused")), (1, 0));
}

/// Two tiny modules with the same parameter names (a student and its mean net).
struct Pair {
    weight: Param,
    running: Param,
}

impl Module for Pair {
    fn visit<'a>(&'a self, prefix: &str, f: &mut dyn FnMut(String, &'a Param)) {
        f(format!("{prefix}weight"), &self.weight);
        f(format!("{prefix}running"), &self.running);
    }
    fn visit_bn_mut(&mut self, _: &mut dyn FnMut(&mut unreid::nn::BatchNorm)) {}
}

#[test]
fn mean_teacher_follows_the_mmt_schedule() {
    let teacher = MeanTeacher { alpha: 0.999 };
    assert_eq!(teacher.alpha_at(0), 0.0);
    assert!((teacher.alpha_at(1) - 0.5).abs() < 1e-12);
    assert_eq!(teacher.alpha_at(1_000_000), 0.999);
    let d = common::gpu();
    let t = |v: &[f32]| Tensor::from_slice(v, &[2], &d).unwrap();
    let mean = Pair {
        weight: Param::new(t(&[1.0, 2.0])),
        running: Param::buffer(t(&[7.0, 7.0])),
    };
    let student = Pair {
        weight: Param::new(t(&[3.0, 6.0])),
        running: Param::buffer(t(&[0.0, 0.0])),
    };
    // t = 3: a = 0.75 -> 0.75 * mean + 0.25 * student; buffers are not averaged.
    teacher.update(&mean, &student, 3).unwrap();
    assert_eq!(mean.weight.get().to_vec().unwrap(), vec![1.5, 3.0]);
    assert_eq!(mean.running.get().to_vec().unwrap(), vec![7.0, 7.0]);
    // Several steps by name equal the formula applied step by step (f64 oracle).
    let mut want = [1.5f64, 3.0];
    for step in 4..9u64 {
        teacher.update(&mean, &student, step).unwrap();
        let a = (1.0 - 1.0 / (step as f64 + 1.0)).min(0.999);
        want = [a * want[0] + (1.0 - a) * 3.0, a * want[1] + (1.0 - a) * 6.0];
    }
    let got = mean.weight.get().to_vec().unwrap();
    assert!(
        (got[0] as f64 - want[0]).abs() < 1e-5 && (got[1] as f64 - want[1]).abs() < 1e-5,
        "{got:?} vs {want:?}"
    );
}

#[test]
fn optimiser_state_round_trips_by_name_and_resets_on_a_resized_tensor() {
    let d = common::gpu();
    let w = Param::new(Tensor::from_slice(&[1.0, -1.0, 0.5], &[3], &d).unwrap());
    let grad_step = |opt: &mut Adam| {
        w.get()
            .square()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        opt.step(&[("w".into(), &w)]).unwrap();
    };
    let mut a = Adam::new(0.01, 0.0);
    grad_step(&mut a);
    grad_step(&mut a);
    let saved: std::collections::BTreeMap<String, Tensor> = a.state_tensors().into_iter().collect();
    assert_eq!(saved.len(), 3, "m, v and step of one parameter");
    let mut b = Adam::new(0.01, 0.0);
    b.load_state(&saved).unwrap();
    assert_eq!(b.steps_of("w"), 2);
    let before = w.get().to_vec().unwrap();
    grad_step(&mut a);
    let after_a = w.get().to_vec().unwrap();
    w.set(Tensor::from_slice(&before, &[3], &d).unwrap());
    grad_step(&mut b);
    assert_eq!(
        w.get().to_vec().unwrap(),
        after_a,
        "restored state continues identically"
    );
    // A resized parameter starts over instead of using moments of the wrong shape.
    w.set(Tensor::ones(&[5], &d).unwrap());
    grad_step(&mut b);
    assert_eq!(b.steps_of("w"), 1);
    let mut bad = saved.clone();
    bad.insert("q.w".into(), Tensor::ones(&[1], &d).unwrap());
    assert!(b.load_state(&bad).is_err());
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

/// Multi-tensor Adam (a few dispatches for all tensors) against the per-tensor path on the GPU and
/// the f64 reference: 17 tensors of odd sizes (more than two dispatches' worth of slots, a partly
/// filled last one), weight decay, 4 steps, and one tensor that joins at step 3 (its own bias
/// corrections within a shared dispatch). On an adapter capped to WebGPU's baseline limits, the
/// per-tensor fallback.
#[test]
fn multi_tensor_adam_matches_the_per_tensor_path_and_the_reference() {
    let sizes = [
        1usize, 3, 255, 256, 257, 700, 5, 64, 1000, 2, 17, 513, 9, 31, 128, 300, 7,
    ];
    let run = |d: &Device, multi: bool| -> Vec<Vec<f64>> {
        let params: Vec<Param> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| {
                let i = Input::randn(&[n], 100 + k as u64);
                Param::new(Tensor::from_f64(&i.values, &[n], d).unwrap())
            })
            .collect();
        let weights: Vec<Tensor> = sizes
            .iter()
            .enumerate()
            .map(|(k, &n)| {
                let i = Input::randn(&[n], 200 + k as u64);
                Tensor::from_f64(&i.values, &[n], d).unwrap()
            })
            .collect();
        let mut adam = Adam::new(0.01, 5e-3);
        adam.multi_tensor = if multi {
            MultiTensor::Always
        } else {
            MultiTensor::Never
        };
        for step in 0..4 {
            // Tensor 5 gets no gradient before step 3 (so its state starts later).
            let active: Vec<usize> = (0..sizes.len()).filter(|&k| k != 5 || step >= 2).collect();
            {
                let mut loss = Tensor::zeros(&[], d).unwrap();
                for &k in &active {
                    let p = params[k].get();
                    let term = p
                        .square()
                        .unwrap()
                        .mul(&weights[k])
                        .unwrap()
                        .sum_all()
                        .unwrap();
                    loss = loss.add(&term).unwrap();
                }
                loss.backward().unwrap();
            }
            let named: Vec<(String, &Param)> = params
                .iter()
                .enumerate()
                .map(|(k, p)| (format!("t{k}"), p))
                .collect();
            adam.step(&named).unwrap();
        }
        assert_eq!((adam.steps_of("t5"), adam.steps_of("t0")), (2, 4));
        params
            .iter()
            .map(|p| p.get().to_vec_f64().unwrap())
            .collect()
    };
    let want = run(&Device::CpuF64, false);
    let multi = run(&common::gpu(), true);
    // Per tensor: on a CPU adapter `adam4` for the sizes that are multiples of 4 (256, 700, 64,
    // 1000, 128, 300) and `adam` for the rest; with the GPU shapes `adam` for all.
    let single = run(&common::gpu(), false);
    let single_gpu_shaped = run(&common::gpu_shaped(), false);
    // An adapter that binds at most 8 storage buffers per stage (WebGPU's baseline) cannot take
    // adam_multi's 28: the multi-tensor request falls back to one `adam` dispatch per tensor,
    // bit for bit the per-tensor path.
    let baseline = run(&common::baseline_gpu(), true);
    assert_eq!(baseline, single, "multi-tensor adam on the WebGPU baseline");
    for k in 0..sizes.len() {
        assert_close(
            &format!("per-tensor adam with the GPU shapes t{k}"),
            &single_gpu_shaped[k],
            &want[k],
            1e-5,
            1e-5,
        );
        assert_close(
            &format!("multi-tensor adam t{k}"),
            &multi[k],
            &want[k],
            1e-5,
            1e-5,
        );
        assert_close(
            &format!("multi vs per-tensor t{k}"),
            &multi[k],
            &single[k],
            1e-6,
            1e-7,
        );
    }
}
