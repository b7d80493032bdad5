//! The tape as a whole: a small MLP's parameter gradients, accumulation, no_grad, misuse errors.

mod common;
use unreid::autograd::gradcheck::{check_op, Input};
use unreid::{no_grad, Device, Tensor};

/// A two-layer MLP with a label-smoothing-free cross-entropy, through matmul, broadcasting add,
/// relu, log_softmax, gather and mean: every parameter's gradient is checked numerically (f64) and
/// on the GPU against the reference.
#[test]
fn mlp_parameter_gradients() {
    let labels = [2, 0, 4, 4, 1];
    let mlp = |p: &[Tensor], d: &Device| -> unreid::Result<Tensor> {
        let (x, w1, b1, w2, b2) = (&p[0], &p[1], &p[2], &p[3], &p[4]);
        let h = x.matmul(w1)?.add(b1)?.relu()?;
        let logits = h.matmul_t(w2, false, true)?.add(b2)?;
        let y = Tensor::from_i32(&labels, &[5, 1], d)?;
        logits.log_softmax()?.gather(1, &y)?.mean_all()?.neg()
    };
    let inputs = [
        Input::randn(&[5, 7], 1),
        Input::randn(&[7, 6], 2),
        Input::randn(&[6], 3),
        Input::randn(&[5, 6], 4),
        Input::randn(&[5], 5),
    ];
    check_op("mlp", &mlp, &inputs, &common::gpu(), 2e-4, 1e-5).unwrap();
}

#[test]
fn gradients_accumulate_until_cleared_and_shared_inputs_sum() {
    let d = common::gpu();
    let x = Tensor::from_slice(&[1.0, 2.0, 3.0], &[3], &d)
        .unwrap()
        .with_requires_grad();
    // x used twice (a diamond): d/dx sum(x*x + x) = 2x + 1.
    let loss = || x.mul(&x).unwrap().add(&x).unwrap().sum_all().unwrap();
    loss().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec().unwrap(), vec![3.0, 5.0, 7.0]);
    loss().backward().unwrap();
    assert_eq!(x.grad().unwrap().to_vec().unwrap(), vec![6.0, 10.0, 14.0]);
    x.zero_grad();
    assert!(x.grad().is_none());
}

#[test]
fn no_grad_records_nothing_and_detach_cuts_the_graph() {
    let d = Device::Cpu;
    let x = Tensor::ones(&[2], &d).unwrap().with_requires_grad();
    let y = no_grad(|| x.mul_scalar(3.0).unwrap());
    assert!(!y.requires_grad());
    assert!(x.exp().unwrap().requires_grad());
    assert!(!x.exp().unwrap().detach().requires_grad());
    // Untracked inputs produce untracked outputs.
    assert!(!Tensor::ones(&[2], &d)
        .unwrap()
        .exp()
        .unwrap()
        .requires_grad());
}

#[test]
fn misuse_is_an_error_not_a_panic() {
    let d = Device::Cpu;
    let x = Tensor::ones(&[2], &d).unwrap().with_requires_grad();
    let err = x.exp().unwrap().backward().unwrap_err().to_string();
    assert!(err.contains("scalar"), "{err}");
    let err = Tensor::ones(&[1], &d)
        .unwrap()
        .backward()
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not require grad"), "{err}");
    let loss = x.exp().unwrap().sum_all().unwrap();
    loss.backward().unwrap();
    let err = loss.backward().unwrap_err().to_string();
    assert!(err.contains("already back-propagated"), "{err}");
}

#[test]
fn saved_activations_are_freed_by_backward() {
    // Its own device: other tests running in parallel would take buffers from a shared pool.
    let d = Device::gpu_with(&Default::default()).unwrap();
    let gpu = d.as_gpu().unwrap().clone();
    let x = Tensor::randn(&[256, 256], 0.0, 1.0, 1, &d)
        .unwrap()
        .with_requires_grad();
    let loss = x.exp().unwrap().sigmoid().unwrap().sum_all().unwrap();
    let pooled_before = gpu.pooled_bytes();
    loss.backward().unwrap();
    drop(x.grad());
    // exp's and sigmoid's saved outputs went back to the pool once their rules ran.
    assert!(
        gpu.pooled_bytes() > pooled_before,
        "no buffer came back to the pool"
    );
}
